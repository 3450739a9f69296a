/* pgdrill key rotate: rewrap every data key under a new master key. */
#include <string.h>

#include "cmd/cmd.h"
#include "common/log.h"
#include "common/mem.h"
#include "storage/repo.h"

int
pd_cmd_key(const pd_cmd_args *args)
{
    const char *new_key = pd_cmd_opt(args, "new-key-file");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    char *summary = NULL;
    int rc;

    if (strcmp(args->positional[0], "rotate") != 0) {
        pd_err_set(&err, PD_EUSAGE, "unknown key action \"%s\"", args->positional[0]);
        pd_err_hint(&err, "the only action is \"rotate\"; see \"pgdrill key --help\"");
        return pd_cmd_fail(&err);
    }
    if (new_key == NULL || new_key[0] != '/') {
        pd_err_set(&err, PD_EUSAGE, "key rotate needs --new-key-file with an absolute path");
        pd_err_hint(&err, "make one with: (umask 077; head -c 32 /dev/urandom > FILE)");
        return pd_cmd_fail(&err);
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    if (pd_repo_rotate(&summary, cfg, new_key, &err) < 0) {
        rc = pd_cmd_fail(&err);
    } else {
        pd_log_info("%s", summary);
        rc = PD_EXIT_OK;
    }
    pd_free(summary);
    pd_config_free(cfg);
    return rc;
}
