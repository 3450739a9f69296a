/* Backup verification (see verify.h). */
#include "restore/verify.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "restore/tar.h"

#define BACKUP_MANIFEST_MAX (256 * 1024 * 1024)

static int
hex32(unsigned char *out, const char *hex)
{
    if (hex == NULL || strlen(hex) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

int
pd_verify_object_info(pd_object_info *info, json_t *o)
{
    json_t *size = json_object_get(o, "size"), *stored = json_object_get(o, "stored_size");

    if (!json_is_integer(size) || !json_is_integer(stored) ||
        hex32(info->sha256, json_string_value(json_object_get(o, "sha256"))) < 0 ||
        hex32(info->stored_sha256, json_string_value(json_object_get(o, "stored_sha256"))) < 0)
        return -1;
    info->size = (uint64_t)json_integer_value(size);
    info->stored_size = (uint64_t)json_integer_value(stored);
    return 0;
}

typedef struct verify_ctx {
    const char *id;
    const char *object;
    const char *prefix; /* "" or "pg_tblspc/<oid>/" */
    json_t *files;      /* path -> {"Size", "Checksum", "seen"} from backup_manifest */
    json_t *failed;     /* prefixes of objects that failed: their files are not "missing" */
    pd_verify_result *res;
} verify_ctx;

static void problem(verify_ctx *c, const char *fmt, ...) PD_PRINTF(2, 3);

static void
problem(verify_ctx *c, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pd_log_error("backup %s: %s", c->id, msg);
    c->res->problems++;
}

#define MISSING_SHOWN 10

/* True when path belongs to an object that failed (reported once, as the object). */
static bool
in_failed_object(verify_ctx *c, const char *path)
{
    json_t *p;
    size_t i;

    json_array_foreach(c->failed, i, p)
    {
        const char *prefix = json_string_value(p);
        if (prefix[0] == '\0' ? strncmp(path, "pg_tblspc/", 10) != 0
                              : strncmp(path, prefix, strlen(prefix)) == 0)
            return true;
    }
    return false;
}

/* Files a backup carries that backup_manifest does not list. */
static bool
unlisted_ok(const char *path)
{
    return strncmp(path, "pg_wal/", 7) == 0 || strcmp(path, "pg_wal") == 0;
}

static int
check_entry(void *payload, struct archive *a, struct archive_entry *e, pd_err *err)
{
    verify_ctx *c = payload;
    const char *name = archive_entry_pathname(e);
    char path[4096];
    const void *buf;
    size_t len;
    la_int64_t off;
    uint32_t crc = PD_CRC32C_INIT;
    uint64_t size = 0;
    int r;

    (void)err;
    if (archive_entry_filetype(e) != AE_IFREG)
        return 0;
    snprintf(path, sizeof(path), "%s%s", c->prefix, name);
    json_t *f = json_object_get(c->files, path);
    if (f == NULL) {
        if (!unlisted_ok(path))
            problem(c, "file \"%s\" in object %s is not in backup_manifest", path, c->object);
        return 0;
    }
    while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
        crc = pd_crc32c_update(crc, buf, len);
        size += len;
    }
    if (r != ARCHIVE_EOF) {
        // Cancelled: the object itself failed and says so; no second report.
        if (archive_errno(a) != ECANCELED)
            problem(c, "file \"%s\" in object %s cannot be read: %s", path, c->object,
                    archive_error_string(a));
        return 0;
    }
    crc = pd_crc32c_final(crc);
    unsigned char b[4];
    char hex[9];
    memcpy(b, &crc, 4); // PostgreSQL writes the CRC's bytes in host order
    snprintf(hex, sizeof(hex), "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
    json_object_set_new(f, "seen", json_true());
    c->res->files++;
    if ((json_int_t)size != json_integer_value(json_object_get(f, "Size")))
        problem(c, "file \"%s\" in object %s has %llu bytes, backup_manifest says %lld", path,
                c->object, (unsigned long long)size,
                (long long)json_integer_value(json_object_get(f, "Size")));
    else if (strcmp(json_string_value(json_object_get(f, "Checksum-Algorithm")) ?: "", "CRC32C") ==
                 0 &&
             strcmp(json_string_value(json_object_get(f, "Checksum")) ?: "", hex) != 0)
        problem(c, "file \"%s\" in object %s does not match its checksum in backup_manifest", path,
                c->object);
    return 0;
}

/* A bounded growing memory sink for backup_manifest (one line per file). */
typedef struct membuf {
    char *data;
    size_t len, cap;
} membuf;

static int
mem_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    membuf *m = payload;

    if (m->len + len > BACKUP_MANIFEST_MAX)
        return pd_err_set(err, PD_ECORRUPT, "backup_manifest is larger than %d bytes",
                          BACKUP_MANIFEST_MAX);
    if (m->len + len + 1 > m->cap) {
        m->cap = (m->len + len + 1) * 2;
        m->data = pd_realloc(m->data, m->cap);
    }
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

/* Reads backup_manifest into a path -> entry map. */
static int
load_files(json_t **files, pd_repo *r, const char *id, json_t *o, pd_err *err)
{
    membuf m = {NULL, 0, 0};
    pd_object_info info;
    json_t *doc = NULL, *f;
    char *name = pd_asprintf("backups/%s/backup_manifest", id);
    pd_stage *sink = pd_stage_sink_new(mem_write, NULL, &m);
    size_t i;
    int rc;

    *files = NULL;
    if (pd_verify_object_info(&info, o) < 0) {
        rc = pd_err_set(err, PD_ECORRUPT,
                        "manifest of backup %s has a bad entry for "
                        "backup_manifest",
                        id);
        goto cleanup;
    }
    if ((rc = pd_objr_read(r, name, &info, sink, NULL, err)) < 0)
        goto cleanup;
    if ((rc = pd_json_parse(&doc, m.data ? m.data : "", m.len, BACKUP_MANIFEST_MAX,
                            "backup_manifest", err)) < 0)
        goto cleanup;
    *files = json_object();
    json_array_foreach(json_object_get(doc, "Files"), i, f)
    {
        const char *path = json_string_value(json_object_get(f, "Path"));
        if (path)
            json_object_set(*files, path, f);
    }
cleanup:
    json_decref(doc);
    pd_stage_free(sink);
    pd_free(m.data);
    pd_free(name);
    return rc;
}

/* A logical dump's sink: discards, but checks pg_dump's custom-format magic first. */
typedef struct magic_ctx {
    char head[5];
    size_t have;
} magic_ctx;

static int
magic_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    magic_ctx *m = payload;
    size_t take = len < sizeof(m->head) - m->have ? len : sizeof(m->head) - m->have;

    (void)err;
    memcpy(m->head + m->have, buf, take);
    m->have += take;
    return 0;
}

/* Logical backups: every object's hashes and tags, and each dump is pg_dump's custom format. */
static int
verify_logical(pd_verify_result *res, pd_repo *r, json_t *manifest, pd_err *err)
{
    const char *id = json_string_value(json_object_get(manifest, "id"));
    verify_ctx c = {id, NULL, "", NULL, NULL, res};
    json_t *o;
    size_t i;
    int rc = 0;

    if (json_array_size(json_object_get(manifest, "objects")) == 0)
        problem(&c, "its manifest lists no objects");
    json_array_foreach(json_object_get(manifest, "objects"), i, o)
    {
        const char *name = json_string_value(json_object_get(o, "name"));
        pd_object_info info;
        magic_ctx mc = {"", 0};

        if (name == NULL || pd_verify_object_info(&info, o) < 0) {
            problem(&c, "its manifest has a bad entry for object %s", name ? name : "?");
            continue;
        }
        char *obj = pd_asprintf("backups/%s/%s", id, name);
        pd_stage *sink = pd_stage_sink_new(magic_write, NULL, &mc);
        rc = pd_objr_read(r, obj, &info, sink, NULL, err);
        pd_stage_free(sink);
        if (rc < 0 && rc != PD_ECORRUPT) {
            pd_free(obj);
            return rc;
        }
        if (rc < 0) {
            problem(&c, "%s", err->msg);
        } else if (json_object_get(o, "database") &&
                   (mc.have < 5 || memcmp(mc.head, "PGDMP", 5) != 0)) {
            problem(&c, "object %s is not a pg_dump custom-format archive", obj);
        } else {
            res->objects++;
            res->bytes += info.size;
        }
        pd_free(obj);
        rc = 0;
    }
    if (res->problems > 0)
        rc = pd_err_set(err, PD_ECORRUPT, "backup %s failed verification: %u problem%s", id,
                        res->problems, res->problems == 1 ? "" : "s");
    return rc;
}

int
pd_verify_backup(pd_verify_result *res, pd_repo *r, json_t *manifest, pd_err *err)
{
    const char *id = json_string_value(json_object_get(manifest, "id"));
    json_t *objects = json_object_get(manifest, "objects"), *o, *files = NULL, *bm = NULL;
    verify_ctx c = {id, NULL, "", NULL, json_array(), res};
    unsigned missing = 0;
    const char *key;
    json_t *f;
    size_t i;
    int rc = 0;

    memset(res, 0, sizeof(*res));
    if (strcmp(json_string_value(json_object_get(manifest, "type")) ?: "", "logical") == 0) {
        json_decref(c.failed);
        return verify_logical(res, r, manifest, err);
    }
    json_array_foreach(objects, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "name")) ?: "", "backup_manifest") == 0)
            bm = o;
    }
    if (bm == NULL)
        problem(&c, "its manifest lists no backup_manifest object");
    else if ((rc = load_files(&files, r, id, bm, err)) < 0) {
        if (rc != PD_ECORRUPT)
            return rc;
        problem(&c, "%s", err->msg);
    } else {
        res->objects++;
    }
    c.files = files ? files : json_object();
    json_array_foreach(objects, i, o)
    {
        const char *name = json_string_value(json_object_get(o, "name"));
        char prefix[64] = "", what[256];
        pd_object_info info;

        if (name == NULL || strcmp(name, "backup_manifest") == 0)
            continue;
        if (pd_verify_object_info(&info, o) < 0) {
            problem(&c, "its manifest has a bad entry for object %s", name);
            continue;
        }
        if (strcmp(name, "base.tar") != 0)
            snprintf(prefix, sizeof(prefix), "pg_tblspc/%.*s/", (int)(strlen(name) - 4), name);
        char *obj = pd_asprintf("backups/%s/%s", id, name);
        snprintf(what, sizeof(what), "%s", obj);
        c.object = name;
        c.prefix = prefix;
        pd_stage *sink = pd_tar_reader_new(what, check_entry, &c);
        rc = pd_objr_read(r, obj, &info, sink, NULL, err);
        pd_stage_free(sink);
        pd_free(obj);
        if (rc < 0 && rc != PD_ECORRUPT)
            goto cleanup;
        if (rc < 0) {
            problem(&c, "%s", err->msg);
            json_array_append_new(c.failed, json_string(prefix));
        } else {
            res->objects++;
            res->bytes += info.size;
        }
        rc = 0;
    }
    // Every file of backup_manifest must have been seen in some tar.
    if (files) {
        json_object_foreach(files, key, f)
        {
            if (json_is_true(json_object_get(f, "seen")) || in_failed_object(&c, key))
                continue;
            if (++missing <= MISSING_SHOWN)
                problem(&c, "file \"%s\" listed in backup_manifest is missing from the backup",
                        key);
            else
                res->problems++;
        }
        if (missing > MISSING_SHOWN)
            pd_log_error("backup %s: %u more files listed in backup_manifest are missing", id,
                         missing - MISSING_SHOWN);
    }
    if (res->problems > 0)
        rc = pd_err_set(err, PD_ECORRUPT, "backup %s failed verification: %u problem%s", id,
                        res->problems, res->problems == 1 ? "" : "s");
cleanup:
    json_decref(c.failed);
    if (c.files != files)
        json_decref(c.files);
    json_decref(files);
    return rc;
}
