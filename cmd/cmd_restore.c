/* pgdrill restore: a physical backup into an empty directory. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "common/log.h"
#include "restore/restore.h"

int
pd_cmd_restore(const pd_cmd_args *args)
{
    static const char *const later[] = {"target-time",   "target-lsn", "target-xid", "target-name",
                                        "target-action", "target",     "dry-run"};
    pd_restore_opts opts;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *maps[PD_RESTORE_MAX_MAPS];
    json_t *m = NULL;
    int rc;

    memset(&opts, 0, sizeof(opts));
    for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++) {
        if (pd_cmd_opt(args, later[i])) {
            pd_err_set(&err, PD_ENOTIMPL,
                       "restore --%s is not implemented yet (point-in-time recovery comes with "
                       "WAL archiving)",
                       later[i]);
            return pd_cmd_fail(&err);
        }
    }
    opts.target_dir = pd_cmd_opt(args, "target-dir");
    opts.backup = pd_cmd_opt(args, "backup");
    if (opts.target_dir == NULL) {
        pd_err_set(&err, PD_EUSAGE, "restore needs --target-dir DIR");
        pd_err_hint(&err, "see \"pgdrill restore --help\"");
        return pd_cmd_fail(&err);
    }
    opts.n_maps = pd_cmd_opt_all(args, "tablespace-map", maps, PD_RESTORE_MAX_MAPS);
    for (int i = 0; i < opts.n_maps; i++) {
        const char *eq = strchr(maps[i], '=');
        static char oids[PD_RESTORE_MAX_MAPS][16];
        if (eq == NULL || eq == maps[i] || (size_t)(eq - maps[i]) >= sizeof(oids[0]) ||
            eq[1] != '/') {
            pd_err_set(&err, PD_EUSAGE, "bad --tablespace-map \"%s\": expected OID=/absolute/dir",
                       maps[i]);
            return pd_cmd_fail(&err);
        }
        memcpy(oids[i], maps[i], (size_t)(eq - maps[i]));
        oids[i][eq - maps[i]] = '\0';
        opts.maps[i].oid = oids[i];
        opts.maps[i].dir = eq + 1;
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    if (pd_restore_physical(&m, cfg, &opts, &err) < 0) {
        rc = pd_cmd_fail(&err);
    } else {
        printf("restored backup %s into %s\n", json_string_value(json_object_get(m, "id")),
               opts.target_dir);
        if (geteuid() == 0)
            printf("the files belong to root: chown -R postgres:postgres %s (and the tablespace "
                   "directories) before starting\n",
                   opts.target_dir);
        printf("start it with: pg_ctl -D %s start   (check port and archive settings first)\n",
               opts.target_dir);
        json_decref(m);
    }
    pd_config_free(cfg);
    return rc;
}
