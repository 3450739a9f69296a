/* pgdrill backup: take a backup and commit it. */
#include <stdio.h>
#include <string.h>

#include "backup/backup.h"
#include "cmd/cmd.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/notify.h"

/* Tells notify-command the outcome: the manifest on success, the error otherwise. */
static void
notify(const pd_config *cfg, int rc, json_t *m, const pd_err *err)
{
    pd_notify_event ev = {"backup", rc, NULL, NULL, NULL, m};
    char line[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX], size[PD_FMT_BUF];

    ev.backup_id = m ? json_string_value(json_object_get(m, "id")) : NULL;
    if (rc != 0) {
        pd_err_format(err, line, sizeof(line));
    } else {
        pd_fmt_size(size, sizeof(size), (uint64_t)json_integer_value(json_object_get(m, "size")));
        snprintf(line, sizeof(line), "backup %s committed, %s", ev.backup_id ? ev.backup_id : "?",
                 size);
    }
    ev.message = line;
    pd_notify(cfg, &ev);
}

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
    bool logical = type && strcmp(type, "logical") == 0;
    const char *dbs[PD_CMD_MAX_DATABASES + 1];
    int ndb = pd_cmd_opt_all(args, "database", dbs, PD_CMD_MAX_DATABASES + 1);
    if (!logical && (ndb > 0 || pd_cmd_flag(args, "with-role-passwords"))) {
        pd_err_set(&err, PD_EUSAGE, "--database and --with-role-passwords need --type logical");
        return pd_cmd_fail(&err);
    }
    if (logical && pd_cmd_flag(args, "ignore-checksum-failures")) {
        pd_err_set(&err, PD_EUSAGE, "--ignore-checksum-failures is for physical backups only");
        return pd_cmd_fail(&err);
    }
    if (ndb > PD_CMD_MAX_DATABASES) {
        pd_err_set(&err, PD_EUSAGE, "at most %d --database options", PD_CMD_MAX_DATABASES);
        pd_err_hint(&err, "leave --database out to dump every database");
        return pd_cmd_fail(&err);
    }
    dbs[ndb] = NULL;
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    opts.ignore_checksum_failures = pd_cmd_flag(args, "ignore-checksum-failures");
    if (logical) {
        pd_backup_logical_opts lo = {ndb > 0 ? dbs : NULL,
                                     pd_cmd_flag(args, "with-role-passwords")};
        rc = pd_backup_logical(&m, cfg, &lo, &err);
    } else {
        rc = pd_backup_physical(&m, cfg, &opts, &err);
    }
    if (rc < 0) {
        rc = pd_cmd_fail(&err);
    } else if (pd_cmd_flag(args, "json") && pd_json_print(stdout, m, &err) < 0) {
        rc = pd_cmd_fail(&err);
    }
    notify(cfg, rc, m, &err);
    json_decref(m);
    pd_config_free(cfg);
    return rc;
}
