/* pgdrill list: backups with state, times, LSNs, sizes and last drill. */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "drills/report.h"
#include "restore/catalog.h"
#include "restore/target.h"
#include "restore/walindex.h"

static const char *
str(json_t *m, const char *key)
{
    const char *s = json_string_value(json_object_get(m, key));
    return s ? s : "-";
}

static void
reach_of(const pd_backup_entry *e, const pd_wal_index *w, pd_wal_reach *reach)
{
    uint64_t stop = 0;
    pd_err ignore = PD_ERR_INIT;

    memset(reach, 0, sizeof(*reach));
    // Logical backups have no LSNs: nothing to recover them to.
    if (e->manifest == NULL || strcmp(str(e->manifest, "type"), "physical") != 0 ||
        pd_target_parse_lsn(&stop, str(e->manifest, "stop_lsn"), &ignore) < 0)
        return;
    pd_wal_index_reach(w, (unsigned)json_integer_value(json_object_get(e->manifest, "timeline")),
                       stop, reach);
}

static json_t *
entry_json(const pd_backup_entry *e, const pd_wal_index *w, json_t *drills)
{
    pd_wal_reach reach;
    char lsn[32];
    json_t *j = json_object(), *m = e->manifest;
    static const char *const copy[] = {"start_time", "stop_time", "start_lsn", "stop_lsn"};

    json_object_set_new(j, "id", json_string(e->id));
    json_object_set_new(j, "type", m ? json_incref(json_object_get(m, "type")) : json_null());
    json_object_set_new(j, "state", json_string(e->complete ? "complete" : "incomplete"));
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
        json_t *v = m ? json_object_get(m, copy[i]) : NULL;
        json_object_set_new(j, copy[i], v ? json_incref(v) : json_null());
    }
    json_t *tl = m ? json_object_get(m, "timeline") : NULL;
    json_object_set_new(j, "timeline", tl ? json_incref(tl) : json_null());
    json_t *size = m ? json_object_get(m, "size") : NULL;
    json_object_set_new(j, "size", size ? json_incref(size) : json_null());
    json_object_set_new(j, "stored_size", json_integer((json_int_t)e->stored_size));
    json_object_set_new(j, "pg_version",
                        m ? json_incref(json_object_get(m, "pg_version")) : json_null());
    json_object_set_new(j, "last_drill",
                        pd_drill_report_brief(pd_drill_report_last_of(drills, e->id)));
    if (m && strcmp(str(m, "type"), "logical") == 0) {
        // Which databases it holds (a backup taken with --database holds some).
        json_t *names = json_array(), *db;
        size_t k;
        json_array_foreach(json_object_get(m, "databases"), k, db)
        {
            json_array_append(names, json_object_get(db, "name"));
        }
        json_object_set_new(j, "databases", names);
    }
    reach_of(e, w, &reach);
    if (e->manifest && strcmp(str(m, "type"), "physical") == 0) {
        snprintf(lsn, sizeof(lsn), "%X/%X", (unsigned)(reach.reach_lsn >> 32),
                 (unsigned)reach.reach_lsn);
        json_object_set_new(j, "recoverable_to_lsn", json_string(lsn));
        json_object_set_new(j, "wal_gap",
                            reach.missing[0] ? json_string(reach.missing) : json_null());
    }
    return j;
}

int
pd_cmd_list(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    pd_repo *r = NULL;
    pd_backup_entry *e = NULL;
    pd_wal_index *w = NULL;
    json_t *drills = NULL;
    size_t n = 0;
    int rc;

    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    if (pd_repo_open(&r, cfg, &err) < 0 || pd_catalog_list(&e, &n, r, &err) < 0 ||
        pd_wal_index_load(&w, r, &err) < 0 || pd_drill_reports_load(&drills, r, &err) < 0) {
        rc = pd_cmd_fail(&err);
        goto cleanup;
    }
    if (pd_cmd_flag(args, "json")) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, entry_json(&e[i], w, drills));
        if (pd_json_print(stdout, arr, &err) < 0)
            rc = pd_cmd_fail(&err);
        json_decref(arr);
        goto cleanup;
    }
    if (n == 0) {
        printf("cluster %s has no backups yet\n", pd_config_cluster(cfg));
        goto cleanup;
    }
    printf("%-18s %-9s %-11s %-21s %-10s %-10s %-12s %-12s %-16s %s\n", "ID", "TYPE", "STATE",
           "STARTED (UTC)", "SIZE", "STORED", "START LSN", "STOP LSN", "RECOVERABLE TO",
           "LAST DRILL");
    for (size_t i = 0; i < n; i++) {
        json_t *m = e[i].manifest;
        char size[PD_FMT_BUF] = "-", stored[PD_FMT_BUF];
        char started[32] = "-";
        if (m) {
            pd_fmt_size(size, sizeof(size),
                        (uint64_t)json_integer_value(json_object_get(m, "size")));
            snprintf(started, sizeof(started), "%s", str(m, "start_time"));
            started[10] = ' ';
            started[19] = '\0';
        }
        pd_fmt_size(stored, sizeof(stored), e[i].stored_size);
        pd_wal_reach reach;
        char to[40] = "-";
        reach_of(&e[i], w, &reach);
        if (m && strcmp(str(m, "type"), "physical") == 0)
            snprintf(to, sizeof(to), "%X/%X%s", (unsigned)(reach.reach_lsn >> 32),
                     (unsigned)reach.reach_lsn, reach.missing[0] ? " (gap)" : "");
        json_t *d = pd_drill_report_last_of(drills, e[i].id);
        char drill[96] = "-";
        if (d)
            snprintf(drill, sizeof(drill), "%s %s (RTO %.1f s)", str(d, "result"), str(d, "id"),
                     json_number_value(json_object_get(d, "rto_seconds")));
        printf("%-18s %-9s %-11s %-21s %-10s %-10s %-12s %-12s %-16s %s\n", e[i].id,
               m ? str(m, "type") : "-", e[i].complete ? "complete" : "incomplete", started, size,
               stored, m ? str(m, "start_lsn") : "-", m ? str(m, "stop_lsn") : "-", to, drill);
        if (reach.missing[0])
            pd_log_warning("backup %s: WAL file %s is missing from the archive; the backup can "
                           "be recovered only up to LSN %s",
                           e[i].id, reach.missing, to);
    }
cleanup:
    json_decref(drills);
    pd_catalog_free(e, n);
    pd_wal_index_free(w);
    pd_repo_free(r);
    pd_config_free(cfg);
    return rc;
}
