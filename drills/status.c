/* Cluster health from the repository (see status.h). */
#include "drills/status.h"

#include <string.h>
#include <time.h>

#include "common/json.h"
#include "common/mem.h"
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
} scan;

static int
on_object(void *payload, const pd_storage_entry *e, pd_err *err)
{
    scan *s = payload;

    (void)err;
    s->bytes += e->size;
    s->objects++;
    if (strncmp(e->path, s->wal_prefix, s->wal_prefix_len) == 0) {
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
    json_t *last = NULL;
    for (size_t i = 0; i < n; i++) {
        if (e[i].complete) {
            complete++;
            last = e[i].manifest;
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
        json_object_set(lb, "stop_time", json_object_get(last, "stop_time"));
        json_object_set_new(lb, "stop_timestamp", stop);
        json_object_set_new(lb, "age_seconds",
                            json_is_integer(stop) ? json_integer(now - json_integer_value(stop))
                                                  : json_null());
        json_object_set(lb, "size", json_object_get(last, "size"));
        json_object_set(lb, "stored_size", json_object_get(last, "stored_size"));
        pd_wal_reach reach;
        uint64_t stop_lsn = 0;
        pd_err ignore = PD_ERR_INIT;
        if (pd_target_parse_lsn(&stop_lsn,
                                json_string_value(json_object_get(last, "stop_lsn")) ?: "",
                                &ignore) == 0) {
            pd_wal_index_reach(w, (unsigned)json_integer_value(json_object_get(last, "timeline")),
                               stop_lsn, &reach);
            json_object_set_new(lb, "wal_gap",
                                reach.missing[0] ? json_string(reach.missing) : json_null());
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
    json_decref(success);
    json_decref(gap);
}
