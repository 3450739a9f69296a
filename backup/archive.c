/*
 * archive-push (see archive.h).
 *
 * Invariants (PostgreSQL's rule for archive_command):
 *  1. Exit 0 only when the object is committed (durable) or an identical
 *     one is; PostgreSQL may then recycle the segment.
 *  2. Never overwrite: the object is committed with no_overwrite, so of
 *     two pushes of one name exactly one stores it; the other compares.
 *  3. A kill at any point leaves no visible partial object (storage commit
 *     is atomic); PostgreSQL retries the segment.
 */
#include "backup/archive.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "storage/repo.h"

#define READ_BUF (1024 * 1024)

static bool
is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

char *
pd_wal_object_name(const char *name)
{
    size_t len = strlen(name);

    // 00000002.history
    if (len == 16 && is_hex(name, 8) && strcmp(name + 8, ".history") == 0)
        return pd_asprintf("wal/%s", name);
    if (len < 24 || !is_hex(name, 24))
        return NULL;
    // A segment, a .partial segment, or SEGMENT.XXXXXXXX.backup.
    if (len == 24 || strcmp(name + 24, ".partial") == 0 ||
        (len == 40 && name[24] == '.' && is_hex(name + 25, 8) && strcmp(name + 33, ".backup") == 0))
        return pd_asprintf("wal/%.16s/%s", name, name);
    return NULL;
}

/* The system identifier in a segment's first (long) page header, or 0. */
static unsigned long long
segment_sysid(const unsigned char *page, size_t len)
{
    unsigned long long id = 0;

    // XLogLongPageHeaderData: xlp_info (offset 2) has XLP_LONG_HEADER (0x0002);
    // xlp_sysid is a little-endian uint64 at offset 24 on every platform
    // PostgreSQL 15 builds for (8-byte alignment after a 20-byte header).
    if (len < 32 || (page[2] & 0x02) == 0)
        return 0;
    for (int i = 7; i >= 0; i--)
        id = id << 8 | page[24 + i];
    return id;
}

typedef struct push {
    pd_repo *repo;
    const char *name; /* file name */
    char *object;
    int fd;
    uint64_t size;
    unsigned char sha256[32];
} push;

/* Streams the file into stage s; fills the plaintext's size. */
static int
stream_file(push *p, pd_stage *s, pd_err *err)
{
    unsigned char *buf = pd_malloc(READ_BUF);
    int rc = 0;

    if (lseek(p->fd, 0, SEEK_SET) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not read WAL file \"%s\"", p->name);
        goto cleanup;
    }
    p->size = 0;
    for (;;) {
        ssize_t n = read(p->fd, buf, READ_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pd_err_sys(err, PD_EIO, "could not read WAL file \"%s\"", p->name);
            goto cleanup;
        }
        if (n == 0)
            break;
        if ((rc = pd_stage_write(s, buf, (size_t)n, err)) < 0)
            goto cleanup;
        p->size += (uint64_t)n;
    }
cleanup:
    pd_free(buf);
    return rc;
}

/* The local file's SHA-256, to compare with an archived object. */
static int
local_sha256(push *p, unsigned char out[32], uint64_t *size, pd_err *err)
{
    pd_stage *h = pd_stage_hash_new(pd_stage_null_new());
    int rc = stream_file(p, h, err);

    if (rc == 0 && (rc = pd_stage_finish(h, err)) == 0)
        pd_stage_hash_result(h, out, size);
    pd_stage_free(h);
    return rc;
}

/* Invariant 2: the name is taken; same content is success, other content PD_EEXIST. */
static int
compare_existing(push *p, pd_err *err)
{
    pd_object_info got;
    unsigned char mine[32];
    uint64_t size;
    pd_stage *null = pd_stage_null_new();
    int rc;

    pd_err_clear(err);
    if ((rc = local_sha256(p, mine, &size, err)) < 0)
        goto cleanup;
    if ((rc = pd_objr_read(p->repo, p->object, NULL, null, &got, err)) < 0)
        goto cleanup;
    if (got.size == size && CRYPTO_memcmp(got.sha256, mine, 32) == 0) {
        pd_log_info("WAL file %s was archived already with the same content", p->name);
        rc = 0;
    } else {
        rc = pd_err_set(err, PD_EEXIST,
                        "WAL file %s is archived already with different content; not "
                        "overwriting it",
                        p->name);
        pd_err_hint(err, "is another cluster archiving into this repository? check repo and "
                         "--cluster");
    }
cleanup:
    pd_stage_free(null);
    return rc;
}

int
pd_archive_push(const pd_config *cfg, const char *path, pd_err *err)
{
    push p = {NULL, NULL, NULL, -1, 0, {0}};
    const pd_secret *key = NULL;
    unsigned char key_id[PD_KEY_ID_SIZE], page[64];
    char size[PD_FMT_BUF], dur[PD_FMT_BUF];
    pd_object_info info;
    pd_objw *w = NULL;
    struct stat st;
    double t0 = pd_time_mono();
    const char *slash = strrchr(path, '/');
    ssize_t n;
    int rc;

    p.name = slash ? slash + 1 : path;
    if ((p.object = pd_wal_object_name(p.name)) == NULL) {
        rc = pd_err_set(err, PD_EUSAGE, "\"%s\" is not a WAL file name", p.name);
        pd_err_hint(err, "archive_command must pass %%p: archive-push %%p");
        goto cleanup;
    }
    p.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (p.fd < 0 || fstat(p.fd, &st) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not open WAL file \"%s\"", path);
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > PD_WAL_SEGMENT_MAX) {
        rc = pd_err_set(err, PD_EIO, "cannot archive \"%s\": not a regular WAL file", path);
        goto cleanup;
    }
    if ((rc = pd_repo_open(&p.repo, cfg, err)) < 0)
        goto cleanup;
    // A segment of another cluster is refused; PostgreSQL keeps it and retries.
    n = pread(p.fd, page, sizeof(page), 0);
    const char *want = pd_repo_system_identifier(p.repo);
    unsigned long long sysid = n > 0 ? segment_sysid(page, (size_t)n) : 0;
    if (want && sysid && strlen(p.name) >= 24 && strtoull(want, NULL, 10) != sysid) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "WAL file %s belongs to system identifier %llu, but the repository of "
                        "cluster \"%s\" holds system identifier %s",
                        p.name, sysid, pd_config_cluster(cfg), want);
        pd_err_hint(err, "check repo and --cluster in archive_command");
        goto cleanup;
    }
    if ((rc = pd_repo_new_data_key(p.repo, &key, key_id, err)) < 0)
        goto cleanup;
    if ((rc = pd_objw_open(&w, p.repo, p.object, key, key_id, true, err)) < 0)
        goto cleanup;
    if ((rc = stream_file(&p, pd_objw_stage(w), err)) < 0)
        goto cleanup;
    rc = pd_objw_commit(w, &info, err);
    if (rc == PD_EEXIST) {
        pd_objw_free(w);
        w = NULL;
        rc = compare_existing(&p, err);
        goto cleanup;
    }
    if (rc < 0)
        goto cleanup;
    pd_log_info("archived WAL file %s (%s) in %s", p.name,
                pd_fmt_size(size, sizeof(size), info.size),
                pd_fmt_duration(dur, sizeof(dur), pd_time_mono() - t0));
cleanup:
    pd_objw_free(w);
    if (p.fd >= 0)
        close(p.fd);
    pd_repo_free(p.repo);
    pd_free(p.object);
    return rc;
}
