/*
 * Writing and reading whole objects (see repo.h): the one place that puts
 * storage, the object format and both SHA-256s together, for backup,
 * verify, restore, archive-push and archive-get alike.
 *
 * Invariant: an object becomes visible only through pd_writer_commit, after
 * the chain finished (every byte sealed and written) and the storage driver
 * made it durable.
 */
#include <string.h>

#include "common/mem.h"
#include "storage/repo.h"

struct pd_objw {
    pd_writer *writer;
    pd_stage *head;   /* plaintext hash: the chain's head, owns all below */
    pd_stage *stored; /* stored-bytes hash, inside the chain */
    char *name;
};

char *
pd_repo_path(const pd_repo *r, const char *name)
{
    return pd_asprintf("%s/%s", pd_repo_cluster(r), name);
}

int
pd_objw_open(pd_objw **out, pd_repo *r, const char *name, const pd_secret *key,
             const unsigned char *key_id, bool no_overwrite, pd_err *err)
{
    pd_obj_write_opts wo = PD_OBJ_WRITE_OPTS_INIT;
    pd_writer_opts sto = PD_WRITER_OPTS_INIT;
    pd_objw *w = pd_calloc(1, sizeof(*w));
    pd_stage *seal = NULL;
    char *path = pd_repo_path(r, name);
    int rc;

    *out = NULL;
    w->name = pd_strdup(name);
    sto.no_overwrite = no_overwrite;
    if ((rc = pd_storage_open_write(&w->writer, pd_repo_storage(r), path, &sto, err)) < 0)
        goto fail;
    w->stored = pd_stage_hash_new(pd_storage_writer_stage(w->writer));
    wo.identity = name;
    wo.compression = pd_repo_compression(r);
    wo.zstd.level = pd_repo_compression_level(r);
    wo.zstd.workers = pd_repo_compression_workers(r);
    wo.cipher = pd_repo_cipher(r);
    wo.data_key = key;
    wo.key_id = key_id;
    if ((rc = pd_obj_writer_new(&seal, &wo, w->stored, err)) < 0) {
        w->stored = NULL; // freed with the failed writer chain
        goto fail;
    }
    w->head = pd_stage_hash_new(seal);
    pd_free(path);
    *out = w;
    return 0;
fail:
    pd_free(path);
    pd_objw_free(w);
    return rc;
}

pd_stage *
pd_objw_stage(pd_objw *w)
{
    return w->head;
}

uint64_t
pd_objw_bytes(const pd_objw *w)
{
    return pd_stage_hash_bytes(w->head);
}

int
pd_objw_commit(pd_objw *w, pd_object_info *info, pd_err *err)
{
    int rc;

    if ((rc = pd_stage_finish(w->head, err)) < 0)
        return rc;
    pd_stage_hash_result(w->head, info->sha256, &info->size);
    pd_stage_hash_result(w->stored, info->stored_sha256, &info->stored_size);
    return pd_writer_commit(w->writer, err);
}

void
pd_objw_free(pd_objw *w)
{
    if (w == NULL)
        return;
    // The chain first: its sink writes into the writer.
    if (w->head)
        pd_stage_free(w->head);
    else
        pd_stage_free(w->stored);
    pd_writer_free(w->writer);
    pd_free(w->name);
    pd_free(w);
}

/* A sink stage that forwards into a borrowed chain without owning it. */
typedef struct borrow {
    pd_stage *target;
} borrow;

static int
borrow_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    return pd_stage_write(((borrow *)payload)->target, buf, len, err);
}

static int
borrow_finish(void *payload, pd_err *err)
{
    return pd_stage_finish(((borrow *)payload)->target, err);
}

static int
mismatch(const char *name, const char *what, pd_err *err)
{
    return pd_err_set(err, PD_ECORRUPT,
                      "object \"%s\" is corrupt: its %s does not match the "
                      "manifest",
                      name, what);
}

/*
 * pd_objr_read; parallel: decode on the reader's threads (large objects).
 * A small object (manifest, key, report) is decoded on the caller's thread:
 * no threads to start nor job buffers to reserve for a few KiB.
 */
static int
read_object(pd_repo *r, const char *name, const pd_object_info *expect, pd_stage *sink,
            pd_object_info *got, bool parallel, pd_err *err)
{
    pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
    borrow b = {sink};
    pd_object_info info;
    pd_stage *plain, *open = NULL, *stored;
    char *path = pd_repo_path(r, name);
    int rc;

    plain = pd_stage_hash_new(pd_stage_sink_new(borrow_write, borrow_finish, &b));
    ro.parallel = parallel;
    ro.identity = name;
    ro.expect_cipher = pd_repo_cipher(r);
    ro.lookup = pd_repo_key_lookup;
    ro.payload = r;
    if ((rc = pd_obj_reader_new(&open, &ro, plain, err)) < 0) {
        pd_free(path);
        return rc;
    }
    stored = pd_stage_hash_new(open);
    rc = pd_storage_read_to_stage(pd_repo_storage(r), path, stored, err);
    if (rc == PD_ENOTFOUND && expect)
        rc = pd_err_set(err, PD_ECORRUPT, "object \"%s\" listed in the manifest is missing", name);
    if (rc == 0) {
        pd_stage_hash_result(plain, info.sha256, &info.size);
        pd_stage_hash_result(stored, info.stored_sha256, &info.stored_size);
        if (got)
            *got = info;
        if (expect && (info.stored_size != expect->stored_size ||
                       memcmp(info.stored_sha256, expect->stored_sha256, 32) != 0))
            rc = mismatch(name, "stored SHA-256", err);
        else if (expect &&
                 (info.size != expect->size || memcmp(info.sha256, expect->sha256, 32) != 0))
            rc = mismatch(name, "SHA-256", err);
    }
    pd_stage_free(stored);
    pd_free(path);
    return rc;
}

int
pd_objr_read(pd_repo *r, const char *name, const pd_object_info *expect, pd_stage *sink,
             pd_object_info *got, pd_err *err)
{
    return read_object(r, name, expect, sink, got, true, err);
}

/* A bounded memory sink for small objects. */
typedef struct membuf {
    char *data;
    size_t len, max;
    const char *name;
} membuf;

static int
mem_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    membuf *m = payload;

    if (m->len + len > m->max)
        return pd_err_set(err, PD_ECORRUPT, "object \"%s\" is larger than the %zu bytes allowed",
                          m->name, m->max);
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

int
pd_objr_read_all(pd_repo *r, const char *name, size_t max, char **buf, size_t *len, pd_err *err)
{
    membuf m = {pd_malloc(max + 1), 0, max, name};
    pd_stage *sink = pd_stage_sink_new(mem_write, NULL, &m);
    int rc = read_object(r, name, NULL, sink, NULL, false, err);

    pd_stage_free(sink);
    if (rc < 0) {
        pd_free(m.data);
        *buf = NULL;
        return rc;
    }
    m.data[m.len] = '\0';
    *buf = m.data;
    *len = m.len;
    return 0;
}

int
pd_objw_put(pd_repo *r, const char *name, const pd_secret *key, const unsigned char *key_id,
            bool no_overwrite, const void *buf, size_t len, pd_err *err)
{
    pd_object_info info;
    pd_objw *w = NULL;
    int rc;

    if ((rc = pd_objw_open(&w, r, name, key, key_id, no_overwrite, err)) == 0 &&
        (rc = pd_stage_write(pd_objw_stage(w), buf, len, err)) == 0)
        rc = pd_objw_commit(w, &info, err);
    pd_objw_free(w);
    return rc;
}
