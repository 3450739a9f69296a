/*
 * Physical backup (see backup.h).
 *
 * Commit protocol, crash-safe:
 *  1. Objects are written under backups/<ID>/ as they stream in; each is
 *     made durable by its own commit (temp file, fsync, rename, fsync dir).
 *  2. Every object is read back from the repository listing (present, with
 *     the stored size the writer counted) before the manifest is written.
 *  3. manifest.json is written last; its presence is the commit. A crash at
 *     any point before it leaves an incomplete backup that list shows as
 *     such, restore refuses, and expire removes.
 */
#include "backup/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "backup/basebackup.h"
#include "backup/rowcount.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/progress.h"
#include "common/time.h"
#include "common/version.h"
#include "storage/repo.h"

#define MAX_OBJECTS (PD_BB_MAX_TABLESPACES + 2)

typedef struct backup_ctx {
    pd_repo *repo;
    char id[PD_TIME_BUF];
    const pd_secret *key;
    unsigned char key_id[PD_KEY_ID_SIZE];
    pd_objw *current;
    char current_name[64];
    json_t *objects;
    uint64_t bytes_done; /* plaintext of finished objects */
    uint64_t stored_done;
    pd_progress *progress;
    const pd_bb_info *info;
    const pd_pg_opts *po;
    pd_rowcount *counts; /* the drill's row counts, begun once the server started */
} backup_ctx;

static json_t *
hex_json(const unsigned char *d, size_t n)
{
    char hex[65];
    pd_hex(hex, d, n);
    return json_string(hex);
}

static int
on_start(void *payload, const pd_bb_info *info, pd_err *err)
{
    backup_ctx *c = payload;
    char size[PD_FMT_BUF];
    int rc;

    c->info = info;
    // Counting begins beside the stream once the server accepted the backup
    // (a server that is down gets one error, not a warning about counts too).
    c->counts = pd_rowcount_begin(c->po);
    if ((rc = pd_repo_bind_cluster(c->repo, info->system_identifier, info->server_version_num,
                                   err)) < 0)
        return rc;
    pd_log_info("backup %s started: PostgreSQL %s, system identifier %s, start LSN %s on "
                "timeline %lu, %s in %d tablespace%s",
                c->id, info->server_version, info->system_identifier, info->start_lsn,
                info->timeline, pd_fmt_size(size, sizeof(size), info->total_size),
                info->n_tablespaces, info->n_tablespaces == 1 ? "" : "s");
    c->progress = pd_progress_new("backup", info->total_size);
    return 0;
}

static int
on_begin(void *payload, const char *name, const char *location, pd_err *err)
{
    backup_ctx *c = payload;
    char *obj;
    int rc;

    (void)location;
    // Names come from the server; accept only what PostgreSQL sends.
    if (strcmp(name, "backup_manifest") != 0 && strcmp(name, "base.tar") != 0 &&
        strspn(name, "0123456789") + 4 != strlen(name))
        return pd_err_set(err, PD_EPG, "the server sent an unexpected archive name \"%.64s\"",
                          name);
    if (json_array_size(c->objects) >= MAX_OBJECTS)
        return pd_err_set(err, PD_EPG, "the server sent more archives than tablespaces");
    snprintf(c->current_name, sizeof(c->current_name), "%s", name);
    obj = pd_asprintf("backups/%s/%s", c->id, name);
    rc = pd_objw_open(&c->current, c->repo, obj, c->key, c->key_id, true, err);
    pd_free(obj);
    return rc;
}

static int
on_data(void *payload, const void *buf, size_t len, pd_err *err)
{
    backup_ctx *c = payload;
    int rc = pd_stage_write(pd_objw_stage(c->current), buf, len, err);

    if (rc == 0)
        pd_progress_update(c->progress, c->bytes_done + pd_objw_bytes(c->current));
    return rc;
}

static int
on_end(void *payload, pd_err *err)
{
    backup_ctx *c = payload;
    pd_object_info info;
    json_t *o;
    int rc;

    if ((rc = pd_objw_commit(c->current, &info, err)) < 0)
        return rc;
    pd_objw_free(c->current);
    c->current = NULL;
    c->bytes_done += info.size;
    c->stored_done += info.stored_size;
    o = pd_backup_object_json(c->current_name, &info);
    json_array_append_new(c->objects, o);
    pd_log_debug("stored object %s: %llu bytes (%llu stored)", c->current_name,
                 (unsigned long long)info.size, (unsigned long long)info.stored_size);
    return 0;
}

/* Invariant 2: each object is in the repository with the size we wrote. */
int
pd_backup_confirm_objects(pd_repo *r, const char *id, json_t *objects, pd_err *err)
{
    json_t *o;
    size_t i;

    json_array_foreach(objects, i, o)
    {
        char *path = pd_asprintf("%s/backups/%s/%s", pd_repo_cluster(r), id,
                                 json_string_value(json_object_get(o, "name")));
        pd_storage_entry e;
        int rc = pd_storage_stat(pd_repo_storage(r), path, &e, err);
        if (rc == 0 && e.size != (uint64_t)json_integer_value(json_object_get(o, "stored_size")))
            rc = pd_err_set(err, PD_EIO,
                            "object \"%s\" has %llu bytes in the repository, %lld were written; "
                            "the backup is not committed",
                            path, (unsigned long long)e.size,
                            (long long)json_integer_value(json_object_get(o, "stored_size")));
        pd_free(path);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void
pd_backup_log_uncommitted(const char *id)
{
    pd_log_info("backup %s was not committed: it will never be restored, and expire removes what "
                "it left",
                id);
}

json_t *
pd_backup_object_json(const char *name, const pd_object_info *info)
{
    json_t *o = json_object();

    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "size", json_integer((json_int_t)info->size));
    json_object_set_new(o, "sha256", hex_json(info->sha256, 32));
    json_object_set_new(o, "stored_size", json_integer((json_int_t)info->stored_size));
    json_object_set_new(o, "stored_sha256", hex_json(info->stored_sha256, 32));
    return o;
}

static json_t *
build_manifest(backup_ctx *c, const pd_bb_info *info, time_t start, time_t stop, json_t *counts)
{
    json_t *m = json_object(), *ts = json_array();

    json_object_set_new(m, "format", json_integer(1));
    json_object_set_new(m, "id", json_string(c->id));
    json_object_set_new(m, "type", json_string("physical"));
    json_object_set_new(m, "label", json_string(c->id));
    json_object_set_new(m, "start_time", pd_json_time(start));
    json_object_set_new(m, "stop_time", pd_json_time(stop));
    json_object_set_new(m, "start_lsn", json_string(info->start_lsn));
    json_object_set_new(m, "stop_lsn", json_string(info->stop_lsn));
    json_object_set_new(m, "timeline", json_integer((json_int_t)info->timeline));
    json_object_set_new(m, "system_identifier", json_string(info->system_identifier));
    json_object_set_new(m, "pg_version", json_string(info->server_version));
    json_object_set_new(m, "pg_version_num", json_integer(info->server_version_num));
    for (int i = 0; i < info->n_tablespaces; i++) {
        if (info->tablespaces[i].oid[0] == '\0')
            continue;
        json_t *t = json_object();
        json_object_set_new(t, "oid", json_string(info->tablespaces[i].oid));
        json_object_set_new(t, "location", json_string(info->tablespaces[i].location));
        json_array_append_new(ts, t);
    }
    json_object_set_new(m, "tablespaces", ts);
    json_object_set_new(m, "database_size", json_integer((json_int_t)info->total_size));
    json_object_set_new(m, "size", json_integer((json_int_t)c->bytes_done));
    json_object_set_new(m, "stored_size", json_integer((json_int_t)c->stored_done));
    json_object_set_new(m, "checksum_failures", json_integer(info->checksum_failures));
    json_object_set_new(m, "pgdrill_version", json_string(PD_VERSION));
    json_object_set_new(m, "objects", json_incref(c->objects));
    json_object_set_new(m, "row_counts", counts);
    return m;
}

/* Writes manifest.json, the commit (invariant 3). */
int
pd_backup_commit_manifest(pd_repo *r, const char *id, const pd_secret *key,
                          const unsigned char *key_id, json_t *m, pd_err *err)
{
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *name = pd_asprintf("backups/%s/%s", id, PD_MANIFEST_NAME);
    int rc = pd_objw_put(r, name, key, key_id, true, text, strlen(text), err);

    pd_free(name);
    pd_free(text);
    return rc;
}

static int
count_entry(void *payload, const pd_storage_entry *e, pd_err *err)
{
    (void)e;
    (void)err;
    (*(int *)payload)++;
    return 0;
}

/* A new ID that sorts by time and names no object yet (not even a crashed run's). */
int
pd_backup_new_id(char *id, size_t size, pd_repo *r, pd_err *err)
{
    for (int tries = 0; tries < 3; tries++) {
        int n = 0;
        pd_time_id(id, size, time(NULL));
        char *prefix = pd_asprintf("%s/backups/%s", pd_repo_cluster(r), id);
        int rc = pd_storage_list(pd_repo_storage(r), prefix, count_entry, &n, err);
        pd_free(prefix);
        if (rc < 0)
            return rc;
        if (n == 0)
            return 0;
        sleep(1);
    }
    return pd_err_set(err, PD_EFAIL, "could not choose a new backup ID");
}

int
pd_backup_physical(json_t **manifest, const pd_config *cfg, const pd_backup_opts *opts, pd_err *err)
{
    backup_ctx c;
    pd_bb_info *info = pd_calloc(1, sizeof(*info));
    pd_bb_opts bo = {NULL, opts->fast_checkpoint, !opts->ignore_checksum_failures};
    pd_bb_callbacks cb = {&c, on_start, on_begin, on_data, on_end, NULL};
    pd_pg_opts po = PD_PG_OPTS_INIT;
    char size[PD_FMT_BUF], stored[PD_FMT_BUF], dur[PD_FMT_BUF], rate[PD_FMT_BUF];
    json_t *m = NULL;
    double t0 = pd_time_mono();
    time_t start = time(NULL);
    int lock = -1;
    int rc;

    memset(&c, 0, sizeof(c));
    *manifest = NULL;
    c.objects = json_array();
    if ((rc = pd_repo_open(&c.repo, cfg, err)) < 0)
        goto cleanup;
    if ((lock = pd_repo_lock(cfg, err)) < 0) {
        rc = lock;
        goto cleanup;
    }
    if ((rc = pd_backup_new_id(c.id, sizeof(c.id), c.repo, err)) < 0)
        goto cleanup;
    if ((rc = pd_repo_new_data_key(c.repo, &c.key, c.key_id, err)) < 0)
        goto cleanup;
    pd_pg_opts_from_config(&po, cfg);
    c.po = &po;
    bo.label = c.id;
    if ((rc = pd_basebackup_run(info, &po, &bo, &cb, err)) < 0)
        goto cleanup;
    if (opts->ignore_checksum_failures)
        pd_log_warning("page checksums were not verified (--ignore-checksum-failures)");
    pd_progress_free(c.progress);
    c.progress = NULL;
    if ((rc = pd_backup_confirm_objects(c.repo, c.id, c.objects, err)) < 0)
        goto cleanup;
    time_t stop = time(NULL);
    double streamed = pd_time_mono() - t0;
    m = build_manifest(&c, info, start, stop, pd_rowcount_finish(c.counts));
    if ((rc = pd_backup_commit_manifest(c.repo, c.id, c.key, c.key_id, m, err)) < 0)
        goto cleanup;

    // The rate is the data's: a wait for the row counts is said apart.
    double secs = pd_time_mono() - t0;
    char waited[PD_FMT_BUF + 40] = "";
    if (secs - streamed >= 1.0)
        snprintf(waited, sizeof(waited), ", then %s for the row counts",
                 pd_fmt_duration(dur, sizeof(dur), secs - streamed));
    pd_log_info("backup %s complete: %s, stored %s (ratio %.1fx) in %s, %s%s; stop LSN %s", c.id,
                pd_fmt_size(size, sizeof(size), c.bytes_done),
                pd_fmt_size(stored, sizeof(stored), c.stored_done),
                c.stored_done ? (double)c.bytes_done / (double)c.stored_done : 0.0,
                pd_fmt_duration(dur, sizeof(dur), streamed),
                pd_fmt_rate(rate, sizeof(rate), c.bytes_done, streamed), waited, info->stop_lsn);
    *manifest = m;
    m = NULL;
cleanup:
    if (rc < 0 && c.id[0])
        pd_backup_log_uncommitted(c.id);
    pd_progress_free(c.progress);
    pd_objw_free(c.current);
    json_decref(m);
    json_decref(c.objects);
    pd_repo_free(c.repo);
    if (lock >= 0)
        close(lock);
    pd_rowcount_free(c.counts);
    pd_free(info);
    return rc;
}
