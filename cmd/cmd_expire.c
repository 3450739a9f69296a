/* pgdrill expire: apply retention to backups and WAL. */
#include <stdio.h>

#include "backup/expire.h"
#include "cmd/cmd.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/notify.h"

static void
print_line(void *payload, const char *line)
{
    (void)payload;
    printf("%s\n", line);
}

/* Tells notify-command the outcome: the plan (when there is one) and a summary or the error. */
static void
notify(const pd_config *cfg, int rc, json_t *report, const pd_err *err, bool dry_run)
{
    pd_notify_event ev = {"expire", rc, NULL, NULL, NULL, report};
    char line[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX], size[PD_FMT_BUF];

    if (rc != 0) {
        pd_err_format(err, line, sizeof(line));
    } else {
        json_t *freed = json_object_get(report, "freed_bytes");
        pd_fmt_size(size, sizeof(size), (uint64_t)json_integer_value(freed));
        snprintf(line, sizeof(line), "expire %s %lld backups and %lld WAL files, %s",
                 dry_run ? "would remove" : "removed",
                 (long long)json_integer_value(json_object_get(report, "removed_backups")),
                 (long long)json_integer_value(json_object_get(report, "removed_wal_files")), size);
    }
    ev.message = line;
    pd_notify(cfg, &ev);
}

int
pd_cmd_expire(const pd_cmd_args *args)
{
    pd_expire_opts opts = PD_EXPIRE_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    json_t *report = NULL;
    int rc;

    opts.dry_run = pd_cmd_flag(args, "dry-run");
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    if (pd_expire(&report, cfg, &opts, &err) < 0)
        rc = pd_cmd_fail(&err);
    // The plan is printed also after a failed removal: the JSON says what
    // was meant to go, the next run finishes it.
    if (report && pd_cmd_flag(args, "json")) {
        pd_err perr = PD_ERR_INIT;
        if (pd_json_print(stdout, report, &perr) < 0 && rc == 0)
            rc = pd_cmd_fail(&perr);
    } else if (report && opts.dry_run) {
        pd_expire_lines(report, true, print_line, NULL);
    }
    notify(cfg, rc, report, &err, opts.dry_run);
    json_decref(report);
    pd_config_free(cfg);
    return rc;
}
