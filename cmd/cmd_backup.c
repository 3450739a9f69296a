/* pgdrill backup: take a backup and commit it. */
#include <stdio.h>
#include <string.h>

#include "backup/backup.h"
#include "cmd/cmd.h"
#include "common/json.h"

int
pd_cmd_backup(const pd_cmd_args *args)
{
    pd_backup_opts opts = PD_BACKUP_OPTS_INIT;
    const char *type = pd_cmd_opt(args, "type");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    json_t *m = NULL;
    int rc;

    if (type && strcmp(type, "physical") != 0 && strcmp(type, "logical") != 0) {
        pd_err_set(&err, PD_EUSAGE, "unknown backup type \"%s\": use physical or logical", type);
        return pd_cmd_fail(&err);
    }
    if (type && strcmp(type, "logical") == 0) {
        pd_err_set(&err, PD_ENOTIMPL, "logical backups are not implemented yet");
        pd_err_hint(&err, "see README.md, \"What works today\"");
        return pd_cmd_fail(&err);
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    opts.ignore_checksum_failures = pd_cmd_flag(args, "ignore-checksum-failures");
    if (pd_backup_physical(&m, cfg, &opts, &err) < 0) {
        rc = pd_cmd_fail(&err);
    } else {
        if (pd_cmd_flag(args, "json") && pd_json_print(stdout, m, &err) < 0)
            rc = pd_cmd_fail(&err);
        json_decref(m);
    }
    pd_config_free(cfg);
    return rc;
}
