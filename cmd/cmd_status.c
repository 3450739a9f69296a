/* pgdrill status: health from the repository alone. */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fmt.h"
#include "common/json.h"
#include "drills/status.h"

static const char *
str(json_t *o, const char *key, const char *none)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : none;
}

static void
age(char *buf, size_t size, json_t *seconds)
{
    if (!json_is_integer(seconds))
        snprintf(buf, size, "-");
    else
        pd_fmt_duration(buf, size, (double)json_integer_value(seconds));
}

/* "12.3 GiB" or "unknown" for a size that may be null. */
static const char *
size_or(char *buf, size_t size, json_t *v, const char *none)
{
    if (!json_is_number(v))
        return none;
    return pd_fmt_size(buf, size, (uint64_t)json_number_value(v));
}

static void
print_capacity(json_t *st)
{
    json_t *cap = json_object_get(st, "capacity"), *wal = json_object_get(st, "wal");
    json_t *db = json_object_get(st, "database");
    char s1[PD_FMT_BUF], s2[PD_FMT_BUF], s3[PD_FMT_BUF];

    if (json_is_integer(json_object_get(wal, "lag_bytes")))
        printf("  WAL lag:      %s written by the server after the newest archived segment\n",
               size_or(s1, sizeof(s1), json_object_get(wal, "lag_bytes"), ""));
    else
        printf("  WAL lag:      unknown in bytes: %s%s%s\n", str(wal, "lag_unknown", "?"),
               json_is_string(json_object_get(db, "error")) ? ": " : "", str(db, "error", ""));
    printf("  free space:   repository %s, drill-dir %s (%s)\n",
           size_or(s1, sizeof(s1), json_object_get(cap, "repository_free_bytes"), "unknown (S3)"),
           size_or(s2, sizeof(s2), json_object_get(cap, "drill_dir_free_bytes"), "unknown"),
           str(cap, "drill_dir", "?"));
    json_t *bg = json_object_get(cap, "backup_growth_bytes_per_day");
    json_t *wg = json_object_get(cap, "wal_bytes_per_day");
    printf("  growth:       backups %s%s, WAL %s%s\n", size_or(s1, sizeof(s1), bg, "unknown"),
           json_is_number(bg) ? "/day" : "", size_or(s3, sizeof(s3), wg, "unknown"),
           json_is_number(wg) ? "/day" : "");
    if (json_is_number(json_object_get(cap, "repository_full_days")))
        printf("  forecast:     repository full in %.1f days\n",
               json_number_value(json_object_get(cap, "repository_full_days")));
    else
        printf("  forecast:     unknown: %s\n", str(cap, "forecast_unknown", "?"));
}

static void
print_human(json_t *st)
{
    json_t *lb = json_object_get(st, "last_backup"), *ld = json_object_get(st, "last_drill");
    json_t *wal = json_object_get(st, "wal"), *b = json_object_get(st, "backups");
    char a[PD_FMT_BUF], s1[PD_FMT_BUF], s2[PD_FMT_BUF];

    printf("cluster %s\n", str(st, "cluster", "?"));
    if (json_is_object(lb)) {
        age(a, sizeof(a), json_object_get(lb, "age_seconds"));
        printf(
            "  last backup:  %s, ended %s (%s ago), %s stored as %s%s%s\n", str(lb, "id", "?"),
            str(lb, "stop_time", "?"), a,
            pd_fmt_size(s1, sizeof(s1), (uint64_t)json_integer_value(json_object_get(lb, "size"))),
            pd_fmt_size(s2, sizeof(s2),
                        (uint64_t)json_integer_value(json_object_get(lb, "stored_size"))),
            json_is_string(json_object_get(lb, "wal_gap")) ? "; WAL GAP at " : "",
            str(lb, "wal_gap", ""));
    } else {
        printf("  last backup:  none\n");
    }
    printf("  backups:      %lld complete, %lld incomplete\n",
           (long long)json_integer_value(json_object_get(b, "complete")),
           (long long)json_integer_value(json_object_get(b, "incomplete")));
    if (json_is_string(json_object_get(wal, "last_archived"))) {
        age(a, sizeof(a), json_object_get(wal, "age_seconds"));
        printf("  WAL archive:  %lld files, newest %s stored %s (%s ago)\n",
               (long long)json_integer_value(json_object_get(wal, "files")),
               str(wal, "last_archived", "?"), str(wal, "last_archived_time", "?"), a);
    } else {
        printf("  WAL archive:  empty\n");
    }
    if (json_is_object(ld)) {
        printf("  last drill:   %s of backup %s: %s, RTO %.1f s%s%s, ended %s\n",
               str(ld, "id", "?"), str(ld, "backup_id", "?"),
               strcmp(str(ld, "result", ""), "pass") == 0 ? "PASS" : "FAIL",
               json_number_value(json_object_get(ld, "rto_seconds")),
               json_is_string(json_object_get(ld, "rto_result")) ? ", objective " : "",
               str(ld, "rto_result", ""), str(ld, "stop_time", "?"));
        if (json_is_string(json_object_get(ld, "failure")))
            printf("                %s\n", str(ld, "failure", ""));
    } else {
        printf("  last drill:   none: run pgdrill drill\n");
    }
    printf("  repository:   %s in %lld objects\n",
           pd_fmt_size(s1, sizeof(s1),
                       (uint64_t)json_integer_value(json_object_get(st, "repository_size_bytes"))),
           (long long)json_integer_value(json_object_get(st, "repository_objects")));
    print_capacity(st);
}

int
pd_cmd_status(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    json_t *st = NULL;
    int rc;

    if (pd_cmd_flag(args, "json") && pd_cmd_flag(args, "prometheus")) {
        pd_err_set(&err, PD_EUSAGE, "give --json or --prometheus, not both");
        return pd_cmd_fail(&err);
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    if (pd_status_collect(&st, cfg, &err) < 0) {
        rc = pd_cmd_fail(&err);
        goto cleanup;
    }
    pd_status_add_server(st, cfg, NULL, NULL);
    if (pd_cmd_flag(args, "json")) {
        if (pd_json_print(stdout, st, &err) < 0)
            rc = pd_cmd_fail(&err);
    } else if (pd_cmd_flag(args, "prometheus")) {
        pd_status_prometheus(stdout, st);
    } else {
        print_human(st);
    }
cleanup:
    json_decref(st);
    pd_config_free(cfg);
    return rc;
}
