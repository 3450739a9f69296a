/* pgdrill drill: restore into a scratch instance, recover, check, report. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "common/json.h"
#include "common/log.h"
#include "common/notify.h"
#include "drills/drill.h"

static double
num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

static const char *
str(json_t *o, const char *key, const char *none)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : none;
}

static void
print_report(json_t *r)
{
    json_t *ph = json_object_get(r, "phases"), *tg = json_object_get(r, "recovery_target");
    json_t *c;
    size_t i;

    printf("drill %s of backup %s: %s\n", str(r, "id", "?"), str(r, "backup_id", "?"),
           strcmp(str(r, "result", ""), "pass") == 0 ? "PASS" : "FAIL");
    printf("  target:    %s%s%s (%s)", str(tg, "type", "?"),
           json_is_string(json_object_get(tg, "value")) ? " " : "", str(tg, "value", ""),
           str(tg, "chosen", "?"));
    if (json_is_string(json_object_get(r, "reached_lsn")))
        printf("; reached LSN %s%s%s", str(r, "reached_lsn", ""),
               json_is_string(json_object_get(r, "reached_time")) && str(r, "reached_time", "")[0]
                   ? ", last transaction at "
                   : "",
               str(r, "reached_time", ""));
    printf("\n  RTO:       %.1f s (restore %.1f s, recovery %.1f s); checks %.1f s; total %.1f s\n",
           num(r, "rto_seconds"), num(ph, "restore"), num(ph, "recovery"), num(ph, "checks"),
           num(r, "total_seconds"));
    if (json_is_integer(json_object_get(r, "rto_objective_seconds")))
        printf("  objective: %lld s: %s\n",
               (long long)json_integer_value(json_object_get(r, "rto_objective_seconds")),
               str(r, "rto_result", "not judged (the drill failed)"));
    printf("  checks:\n");
    json_array_foreach(json_object_get(r, "checks"), i, c)
    {
        printf("    %-5s %-16s %s\n", str(c, "result", "?"), str(c, "name", "?"),
               str(c, "detail", ""));
    }
    json_t *k = json_object_get(r, "kept");
    if (k) {
        printf("  kept:      the instance runs on socket %s port %lld (data %s, log %s)\n",
               str(k, "socket", "?"), (long long)json_integer_value(json_object_get(k, "port")),
               str(k, "data", "?"), str(k, "log", "?"));
        printf("             connect: psql -h %s -p %lld -U %s -d postgres\n",
               str(k, "socket", "?"), (long long)json_integer_value(json_object_get(k, "port")),
               str(k, "user", "postgres"));
        printf("             remove:  kill -INT $(head -1 %s/postmaster.pid); rm -rf %s\n",
               str(k, "data", "?"), str(k, "dir", "?"));
    }
}

static int
write_report_file(const char *path, json_t *r, pd_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int rc;

    if (f == NULL || fchmod(fd, 0600) < 0) {
        if (f)
            fclose(f);
        else if (fd >= 0)
            close(fd);
        return pd_err_sys(err, PD_EIO, "could not write the report to \"%s\"", path);
    }
    rc = pd_json_print(f, r, err);
    if (fclose(f) != 0 && rc == 0)
        rc = pd_err_sys(err, PD_EIO, "could not write the report to \"%s\"", path);
    return rc;
}

/* Tells notify-command the outcome: the report when there is one, else the error. */
static void
notify(const pd_config *cfg, int rc, json_t *report, const pd_err *err)
{
    pd_notify_event ev = {"drill", rc, NULL, NULL, NULL, report};
    char line[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX];

    if (report == NULL) {
        pd_err_format(err, line, sizeof(line));
    } else {
        ev.backup_id = str(report, "backup_id", NULL);
        ev.drill_id = str(report, "id", NULL);
        snprintf(line, sizeof(line), "drill %s of backup %s %s: RTO %.1f s%s%s",
                 str(report, "id", "?"), str(report, "backup_id", "?"),
                 strcmp(str(report, "result", ""), "pass") == 0 ? "passed" : "FAILED",
                 num(report, "rto_seconds"), json_object_get(report, "failure") ? ", " : "",
                 str(report, "failure", ""));
    }
    ev.message = line;
    pd_notify(cfg, &ev);
}

int
pd_cmd_drill(const pd_cmd_args *args)
{
    static const char *const picks[] = {"latest", "oldest", "random", NULL};
    pd_drill_opts o;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    json_t *report = NULL;
    const char *target = pd_cmd_opt(args, "target");
    const char *file = pd_cmd_opt(args, "report-file");
    int rc, read_lock = -1;

    memset(&o, 0, sizeof(o));
    o.backup = pd_cmd_opt(args, "backup");
    o.pick = pd_cmd_opt(args, "pick");
    o.target_time = pd_cmd_opt(args, "target-time");
    o.target_lsn = pd_cmd_opt(args, "target-lsn");
    o.keep = pd_cmd_flag(args, "keep");
    if (target && strcmp(target, "immediate") == 0)
        o.target_immediate = true;
    else if (target && strcmp(target, "random") == 0)
        o.target_random = true;
    else if (target) {
        pd_err_set(&err, PD_EUSAGE, "bad --target \"%s\": use immediate or random", target);
        return pd_cmd_fail(&err);
    }
    if ((o.target_time != NULL) + (o.target_lsn != NULL) + (target != NULL) > 1) {
        pd_err_set(&err, PD_EUSAGE, "give at most one of --target-time, --target-lsn, --target");
        return pd_cmd_fail(&err);
    }
    if (o.pick) {
        bool ok = false;
        for (int i = 0; picks[i]; i++)
            ok |= strcmp(o.pick, picks[i]) == 0;
        if (!ok || o.backup) {
            pd_err_set(&err, PD_EUSAGE,
                       ok ? "give --backup or --pick, not both"
                          : "bad --pick \"%s\": use latest, oldest or random",
                       o.pick);
            return pd_cmd_fail(&err);
        }
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    read_lock = pd_cmd_read_lock(cfg);
    if (pd_drill_run(&report, cfg, &o, &err) < 0) {
        rc = pd_cmd_fail(&err);
        notify(cfg, rc, NULL, &err);
        goto cleanup;
    }
    bool passed = strcmp(str(report, "result", ""), "pass") == 0;
    bool late = passed && strcmp(str(report, "rto_result", ""), "exceeded") == 0;
    if (!passed)
        pd_log_error("drill of backup %s FAILED: %s", str(report, "backup_id", "?"),
                     str(report, "failure", "a check failed"));
    else if (late)
        pd_log_warning(
            "drill of backup %s passed but took %.1f s to recover, beyond "
            "drill-rto-objective (%lld s)",
            str(report, "backup_id", "?"), num(report, "rto_seconds"),
            (long long)json_integer_value(json_object_get(report, "rto_objective_seconds")));
    rc = !passed || (late && pd_cmd_flag(args, "enforce-rto")) ? PD_EXIT_CHECK : PD_EXIT_OK;
    // A report that cannot be written is a failure of its own, unless the verdict is worse.
    if (file && write_report_file(file, report, &err) < 0) {
        int frc = pd_cmd_fail(&err);
        rc = rc == PD_EXIT_OK ? frc : rc;
        file = NULL;
    }
    if (pd_cmd_flag(args, "json")) {
        if (pd_json_print(stdout, report, &err) < 0) {
            int frc = pd_cmd_fail(&err);
            rc = rc == PD_EXIT_OK ? frc : rc;
        }
    } else {
        print_report(report);
        printf("  report:    stored in the repository as drills/%s.json%s%s\n",
               str(report, "id", "?"), file ? "; JSON copy in " : "", file ? file : "");
    }
    notify(cfg, rc, report, &err);
cleanup:
    if (read_lock >= 0)
        close(read_lock);
    json_decref(report);
    pd_config_free(cfg);
    return rc;
}
