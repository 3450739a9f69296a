/* pgdrill expire: apply retention to backups and WAL. */
#include <stdio.h>

#include "backup/expire.h"
#include "cmd/cmd.h"
#include "common/json.h"

static void
print_line(void *payload, const char *line)
{
    (void)payload;
    printf("%s\n", line);
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
    json_decref(report);
    pd_config_free(cfg);
    return rc;
}
