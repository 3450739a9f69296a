/*
 * pgdrill archive-push %p and archive-get %f %p: PostgreSQL's
 * archive_command and restore_command. Exit 0 only when the file is stored
 * (push) or restored (get); archive-get of a file the archive does not
 * have exits 1 without an error line, as PostgreSQL asks at every end of
 * recovery.
 */
#include "backup/archive.h"
#include "cmd/cmd.h"
#include "common/log.h"
#include "restore/archive_get.h"

int
pd_cmd_archive_push(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    if (pd_archive_push(cfg, args->positional[0], &err) < 0) {
        // PostgreSQL keeps the segment and retries: nothing is lost. Any
        // failure is exit 1 here, whatever its class, except usage errors.
        rc = pd_cmd_fail(&err);
        if (err.code != PD_EUSAGE)
            rc = PD_EXIT_FAIL;
    }
    pd_config_free(cfg);
    return rc;
}

int
pd_cmd_archive_get(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    rc = pd_archive_get(cfg, args->positional[0], args->positional[1], &err);
    if (rc == PD_ENOTFOUND) {
        pd_log_debug("WAL file %s is not in the archive", args->positional[0]);
        rc = PD_EXIT_FAIL;
    } else if (rc < 0) {
        rc = pd_cmd_fail(&err);
    }
    pd_config_free(cfg);
    return rc;
}
