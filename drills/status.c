/* Cluster health from the repository (see status.h). */
#include "drills/status.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/pg.h"
#include "drills/health.h"
#include "drills/report.h"
#include "restore/catalog.h"
#include "restore/target.h"
#include "restore/walindex.h"
#include "storage/repo.h"

typedef struct scan {
    size_t wal_prefix_len;
    const char *wal_prefix;
    uint64_t bytes;
    uint64_t objects;
    char newest[25];
    int64_t newest_mtime;
    uint64_t wal_files;
    pd_health_rate wal_rate; /* every object under wal/ */
} scan;

static int
on_object(void *payload, const pd_storage_entry *e, pd_err *err)
{
    scan *s = payload;

    (void)err;
    s->bytes += e->size;
    s->objects++;
    if (strncmp(e->path, s->wal_prefix, s->wal_prefix_len) == 0) {
        pd_health_rate_add(&s->wal_rate, e->mtime, e->size);
        const char *name = strrchr(e->path, '/') + 1;
        if (strlen(name) == 24 && strspn(name, "0123456789ABCDEF") == 24) {
            s->wal_files++;
            if (strcmp(name, s->newest) > 0) {
                memcpy(s->newest, name, 25);
                s->newest_mtime = e->mtime;
            }
        }
    }
    return 0;
}

static json_t *
epoch_of(json_t *rfc3339)
{
    int64_t secs;
    int32_t usecs;
    bool zone;
    pd_err ignore = PD_ERR_INIT;

    if (!json_is_string(rfc3339) ||
        pd_target_parse_time(&secs, &usecs, &zone, json_string_value(rfc3339), &ignore) < 0)
        return json_null();
    return json_integer(secs);
}

/* Free bytes for an unprivileged writer at path, or -1 (logged at debug level). */
static int64_t
free_bytes(const char *path)
{
    struct statvfs vfs;

    if (statvfs(path, &vfs) < 0) {
        pd_log_debug("could not measure free space in \"%s\": %m", path);
        return -1;
    }
    return (int64_t)((uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize);
}

static json_t *
rate_json(const pd_health_rate *r)
{
    double v;

    return pd_health_rate_per_day(r, &v) ? json_real(v) : json_null();
}

/*
 * The capacity section: free space of the repository and of drill-dir, the
 * rates at which backups and WAL arrive, and the forecast: free bytes
 * divided by the sum of both rates (README, "Capacity"). A value that is not
 * known is null and "forecast_unknown" says why.
 */
static json_t *
capacity(const pd_config *cfg, pd_storage *storage, const pd_health_rate *backups,
         const pd_health_rate *wal)
{
    json_t *c = json_object();
    pd_err ignore = PD_ERR_INIT;
    uint64_t repo_free = 0;
    bool repo_free_known = pd_storage_free_space(storage, &repo_free, &ignore) == 0;
    const char *drill_dir = pd_config_get(cfg, "drill-dir");
    double b_rate = 0, w_rate = 0;
    bool b_known = pd_health_rate_per_day(backups, &b_rate);
    bool w_known = pd_health_rate_per_day(wal, &w_rate);
    const char *unknown = NULL;

    if (drill_dir == NULL)
        drill_dir = getenv("TMPDIR") && getenv("TMPDIR")[0] == '/' ? getenv("TMPDIR") : "/var/tmp";
    json_object_set_new(c, "repository_free_bytes",
                        repo_free_known ? json_integer((json_int_t)repo_free) : json_null());
    json_object_set_new(c, "drill_dir", json_string(drill_dir));
    int64_t dfree = free_bytes(drill_dir);
    json_object_set_new(c, "drill_dir_free_bytes", dfree >= 0 ? json_integer(dfree) : json_null());
    json_object_set_new(c, "backup_growth_bytes_per_day", rate_json(backups));
    json_object_set_new(c, "wal_bytes_per_day", rate_json(wal));
    // An archive without any WAL adds nothing; with one file its rate is not known yet.
    if (!repo_free_known)
        unknown = "the repository's free space is not known (S3 has no such notion)";
    else if (!b_known)
        unknown = "fewer than two complete backups at different times";
    else if (!w_known && wal->n > 0)
        unknown = "fewer than two archived WAL files at different times";
    else if (b_rate + w_rate <= 0)
        unknown = "the repository is not growing";
    json_object_set_new(c, "growth_bytes_per_day",
                        b_known && (w_known || wal->n == 0) ? json_real(b_rate + w_rate)
                                                            : json_null());
    json_object_set_new(c, "repository_full_days",
                        unknown ? json_null() : json_real((double)repo_free / (b_rate + w_rate)));
    json_object_set_new(c, "forecast_unknown", unknown ? json_string(unknown) : json_null());
    return c;
}

int
pd_status_collect(json_t **out, const pd_config *cfg, pd_err *err)
{
    pd_repo *r = NULL;
    pd_backup_entry *e = NULL;
    pd_wal_index *w = NULL;
    json_t *reports = NULL, *st = json_object();
    size_t n = 0, complete = 0;
    scan s;
    char *cluster = NULL;
    time_t now = time(NULL);
    int rc;

    *out = NULL;
    memset(&s, 0, sizeof(s));
    if ((rc = pd_repo_open(&r, cfg, err)) < 0 || (rc = pd_catalog_list(&e, &n, r, err)) < 0 ||
        (rc = pd_wal_index_load(&w, r, err)) < 0 ||
        (rc = pd_drill_reports_load(&reports, r, err)) < 0)
        goto cleanup;
    cluster = pd_repo_path(r, "");
    char *wal = pd_repo_path(r, "wal/");
    s.wal_prefix = wal;
    s.wal_prefix_len = strlen(wal);
    cluster[strlen(cluster) - 1] = '\0'; // "<cluster>/" without the slash
    rc = pd_storage_list(pd_repo_storage(r), cluster, on_object, &s, err);
    pd_free(wal);
    if (rc < 0)
        goto cleanup;

    json_object_set_new(st, "cluster", json_string(pd_config_cluster(cfg)));
    json_object_set_new(st, "time", pd_json_time(now));
    json_object_set_new(st, "timestamp", json_integer(now));
    json_object_set_new(st, "encryption",
                        json_string(pd_repo_cipher(r) == PD_CIPHER_NONE ? "none" : "aes-256-gcm"));
    json_t *last = NULL, *last_physical = NULL;
    for (size_t i = 0; i < n; i++) {
        if (e[i].complete) {
            complete++;
            last = e[i].manifest;
            if (strcmp(json_string_value(json_object_get(last, "type")) ?: "", "physical") == 0)
                last_physical = last;
        }
    }
    json_t *b = json_object();
    json_object_set_new(b, "complete", json_integer((json_int_t)complete));
    json_object_set_new(b, "incomplete", json_integer((json_int_t)(n - complete)));
    json_object_set_new(st, "backups", b);
    if (last) {
        json_t *lb = json_object();
        json_t *stop = epoch_of(json_object_get(last, "stop_time"));
        json_object_set(lb, "id", json_object_get(last, "id"));
        json_object_set(lb, "type", json_object_get(last, "type"));
        json_object_set(lb, "stop_time", json_object_get(last, "stop_time"));
        json_object_set_new(lb, "stop_timestamp", stop);
        json_object_set_new(lb, "age_seconds",
                            json_is_integer(stop) ? json_integer(now - json_integer_value(stop))
                                                  : json_null());
        json_object_set(lb, "size", json_object_get(last, "size"));
        json_object_set(lb, "stored_size", json_object_get(last, "stored_size"));
        // The WAL gap concerns point-in-time recovery: from the newest
        // physical backup on, also when a logical backup is newer.
        pd_wal_reach reach;
        uint64_t stop_lsn = 0;
        pd_err ignore = PD_ERR_INIT;
        if (last_physical &&
            pd_target_parse_lsn(&stop_lsn,
                                json_string_value(json_object_get(last_physical, "stop_lsn")) ?: "",
                                &ignore) == 0) {
            pd_wal_index_reach(
                w, (unsigned)json_integer_value(json_object_get(last_physical, "timeline")),
                stop_lsn, &reach);
            json_object_set_new(lb, "wal_gap",
                                reach.missing[0] ? json_string(reach.missing) : json_null());
            json_object_set(lb, "wal_gap_backup", json_object_get(last_physical, "id"));
        }
        json_object_set_new(st, "last_backup", lb);
    } else {
        json_object_set_new(st, "last_backup", json_null());
    }
    json_t *wj = json_object();
    json_object_set_new(wj, "files", json_integer((json_int_t)s.wal_files));
    json_object_set_new(wj, "last_archived", s.newest[0] ? json_string(s.newest) : json_null());
    json_object_set_new(wj, "last_archived_time",
                        s.newest[0] ? pd_json_time((time_t)s.newest_mtime) : json_null());
    json_object_set_new(wj, "last_archived_timestamp",
                        s.newest[0] ? json_integer(s.newest_mtime) : json_null());
    json_object_set_new(wj, "age_seconds",
                        s.newest[0] ? json_integer(now - s.newest_mtime) : json_null());
    json_object_set_new(st, "wal", wj);
    json_t *d =
        json_array_size(reports) ? json_array_get(reports, json_array_size(reports) - 1) : NULL;
    if (d) {
        json_t *ld = json_object();
        json_object_set(ld, "id", json_object_get(d, "id"));
        json_object_set(ld, "backup_id", json_object_get(d, "backup_id"));
        json_object_set(ld, "result", json_object_get(d, "result"));
        json_object_set(ld, "failure", json_object_get(d, "failure"));
        json_object_set(ld, "stop_time", json_object_get(d, "stop_time"));
        json_object_set_new(ld, "stop_timestamp", epoch_of(json_object_get(d, "stop_time")));
        json_object_set(ld, "rto_seconds", json_object_get(d, "rto_seconds"));
        json_object_set(ld, "rto_result", json_object_get(d, "rto_result"));
        json_object_set_new(st, "last_drill", ld);
    } else {
        json_object_set_new(st, "last_drill", json_null());
    }
    json_object_set_new(st, "drills", json_integer((json_int_t)json_array_size(reports)));
    pd_health_rate backup_rate = PD_HEALTH_RATE_INIT;
    for (size_t i = 0; i < n; i++) {
        json_t *stop = e[i].complete ? epoch_of(json_object_get(e[i].manifest, "stop_time")) : NULL;
        if (json_is_integer(stop))
            pd_health_rate_add(&backup_rate, json_integer_value(stop), e[i].stored_size);
        json_decref(stop);
    }
    json_object_set_new(wj, "bytes", json_integer((json_int_t)s.wal_rate.bytes));
    json_object_set_new(st, "capacity",
                        capacity(cfg, pd_repo_storage(r), &backup_rate, &s.wal_rate));
    json_object_set_new(st, "repository_size_bytes", json_integer((json_int_t)s.bytes));
    json_object_set_new(st, "repository_objects", json_integer((json_int_t)s.objects));
    *out = st;
    st = NULL;
cleanup:
    json_decref(st);
    json_decref(reports);
    pd_free(cluster);
    pd_wal_index_free(w);
    pd_catalog_free(e, n);
    pd_repo_free(r);
    return rc;
}

/* The end LSN of a WAL segment named TTTTTTTTXXXXXXXXYYYYYYYY; false when the name is not one. */
static bool
segment_end(const char *name, uint64_t segsize, uint64_t *end)
{
    char log[9], seg[9];

    if (name == NULL || strlen(name) != 24 || segsize == 0 || segsize > 0x100000000ULL)
        return false;
    memcpy(log, name + 8, 8);
    memcpy(seg, name + 16, 8);
    log[8] = seg[8] = '\0';
    uint64_t segno = strtoull(log, NULL, 16) * (0x100000000ULL / segsize) + strtoull(seg, NULL, 16);
    *end = (segno + 1) * segsize;
    return true;
}

void
pd_status_add_server(json_t *st, const pd_config *cfg, pd_pg *pg_in, const char *unreachable)
{
    pd_pg_opts opts = PD_PG_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    json_t *db = json_object(), *wal = json_object_get(st, "wal");
    PGresult *res = NULL;
    pd_pg *own = NULL, *pg = pg_in;
    const char *unknown = NULL;
    char clean[PD_ERR_MSG_MAX + 64];

    json_object_set_new(st, "database", db);
    if (pg == NULL && unreachable != NULL) {
        pd_err_set(&err, PD_EPG, "%s", unreachable);
        goto failed;
    }
    if (pg == NULL) {
        pd_pg_opts_from_config(&opts, cfg);
        opts.connect_timeout = 5;
        if (pd_pg_connect(&own, &opts, &err) < 0)
            goto failed;
        pg = own;
    }
    if (pd_pg_query(pg, &res,
                    "SELECT pg_is_in_recovery(), current_setting('archive_mode'), "
                    "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), "
                    "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END",
                    0, NULL, &err) < 0)
        goto failed;
    json_object_set_new(db, "reachable", json_true());
    json_object_set_new(db, "error", json_null());
    json_object_set_new(db, "archive_mode", json_string(PQgetvalue(res, 0, 1)));
    uint64_t segsize = strtoull(PQgetvalue(res, 0, 2), NULL, 10), lsn = 0, end = 0;
    json_object_set_new(wal, "segment_size", json_integer((json_int_t)segsize));
    if (PQgetisnull(res, 0, 3)) {
        unknown = "the server is a standby";
    } else if (pd_target_parse_lsn(&lsn, PQgetvalue(res, 0, 3), &err) < 0) {
        unknown = "the server's WAL position did not parse";
    } else {
        json_object_set_new(db, "current_lsn", json_string(PQgetvalue(res, 0, 3)));
        if (!segment_end(json_string_value(json_object_get(wal, "last_archived")), segsize, &end))
            unknown = "no WAL file is archived";
    }
    json_object_set_new(wal, "lag_bytes",
                        unknown ? json_null()
                                : json_integer(lsn > end ? (json_int_t)(lsn - end) : 0));
    json_object_set_new(wal, "lag_unknown", unknown ? json_string(unknown) : json_null());
    goto cleanup;
failed:
    pd_log_debug("status without the database: %s", err.msg);
    json_object_set_new(db, "reachable", json_false());
    json_object_set_new(db, "error", json_string(pd_redact(err.msg, clean, sizeof(clean))));
    json_object_set_new(wal, "segment_size", json_null());
    json_object_set_new(wal, "lag_bytes", json_null());
    json_object_set_new(wal, "lag_unknown", json_string("the database is not reachable"));
cleanup:
    PQclear(res);
    pd_pg_free(own);
}

/* A label value in the exposition format: backslash, quote and newline escaped. */
static void
label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void
metric(FILE *f, const char *name, const char *help, const char *cluster, json_t *value)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    if (!json_is_number(value))
        return; // unknown: no sample, so alerts see "absent" rather than a made-up 0
    fprintf(f, "%s{cluster=\"", name);
    label(f, cluster);
    if (json_is_integer(value))
        fprintf(f, "\"} %lld\n", (long long)json_integer_value(value));
    else
        fprintf(f, "\"} %.3f\n", json_real_value(value));
}

void
pd_status_prometheus(FILE *f, json_t *st)
{
    const char *cluster = json_string_value(json_object_get(st, "cluster")) ?: "";
    json_t *lb = json_object_get(st, "last_backup"), *ld = json_object_get(st, "last_drill");
    json_t *wal = json_object_get(st, "wal"), *b = json_object_get(st, "backups");
    json_t *success = NULL, *gap = NULL;

    if (json_is_object(ld))
        success = json_integer(
            strcmp(json_string_value(json_object_get(ld, "result")) ?: "", "pass") == 0);
    if (json_is_object(lb))
        gap = json_integer(json_is_string(json_object_get(lb, "wal_gap")));
    metric(f, "pgdrill_last_backup_timestamp_seconds", "End of the newest complete backup.",
           cluster, json_object_get(lb, "stop_timestamp"));
    metric(f, "pgdrill_last_backup_size_bytes", "Plaintext size of the newest complete backup.",
           cluster, json_object_get(lb, "size"));
    metric(f, "pgdrill_backups", "Complete backups in the repository.", cluster,
           json_object_get(b, "complete"));
    metric(f, "pgdrill_backups_incomplete", "Backups never committed (expire removes them).",
           cluster, json_object_get(b, "incomplete"));
    metric(f, "pgdrill_wal_last_archived_timestamp_seconds",
           "When the newest WAL file reached the repository.", cluster,
           json_object_get(wal, "last_archived_timestamp"));
    metric(f, "pgdrill_wal_gap", "1 when WAL after the newest backup has a gap.", cluster, gap);
    metric(f, "pgdrill_last_drill_timestamp_seconds", "End of the newest drill.", cluster,
           json_object_get(ld, "stop_timestamp"));
    metric(f, "pgdrill_last_drill_success", "1 when the newest drill passed, else 0.", cluster,
           success);
    metric(f, "pgdrill_last_drill_rto_seconds",
           "Measured recovery time (restore and recovery) of the newest drill.", cluster,
           json_object_get(ld, "rto_seconds"));
    metric(f, "pgdrill_repository_size_bytes", "Bytes stored for the cluster.", cluster,
           json_object_get(st, "repository_size_bytes"));
    json_t *cap = json_object_get(st, "capacity");
    metric(f, "pgdrill_wal_archive_lag_bytes",
           "WAL the server wrote after the newest archived segment (when it was reachable).",
           cluster, json_object_get(wal, "lag_bytes"));
    metric(f, "pgdrill_repository_free_bytes", "Free bytes in a local repository's file system.",
           cluster, json_object_get(cap, "repository_free_bytes"));
    metric(f, "pgdrill_drill_dir_free_bytes", "Free bytes in drill-dir's file system.", cluster,
           json_object_get(cap, "drill_dir_free_bytes"));
    metric(f, "pgdrill_backup_growth_bytes_per_day",
           "Stored bytes complete backups add per day over the kept history.", cluster,
           json_object_get(cap, "backup_growth_bytes_per_day"));
    metric(f, "pgdrill_wal_bytes_per_day",
           "Stored bytes of WAL archived per day over the kept "
           "history.",
           cluster, json_object_get(cap, "wal_bytes_per_day"));
    metric(f, "pgdrill_repository_full_days",
           "Days until the repository is full at the current growth.", cluster,
           json_object_get(cap, "repository_full_days"));
    json_decref(success);
    json_decref(gap);
}
