/* pgdrill init: create the cluster's repository (and a key file if asked). */
#include <stdio.h>

#include "cmd/cmd.h"
#include "common/log.h"
#include "common/mem.h"
#include "storage/repo.h"

int
pd_cmd_init(const pd_cmd_args *args)
{
    pd_repo_init_opts opts = PD_REPO_INIT_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    char *summary = NULL;
    int rc;

    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    opts.generate_key_file = pd_cmd_opt(args, "generate-key-file");
    if (opts.generate_key_file && opts.generate_key_file[0] != '/') {
        pd_err_set(&err, PD_EUSAGE, "--generate-key-file needs an absolute path, not \"%s\"",
                   opts.generate_key_file);
        rc = pd_cmd_fail(&err);
    } else if (pd_repo_init(&summary, cfg, &opts, &err) < 0) {
        rc = pd_cmd_fail(&err);
    } else {
        pd_log_info("%s", summary);
        if (opts.generate_key_file && pd_config_get(cfg, "key-file") == NULL)
            pd_log_info("set key-file = %s in the configuration; keep a copy of the key file "
                        "apart from the repository: without it no backup can be read",
                        opts.generate_key_file);
        rc = PD_EXIT_OK;
    }
    pd_free(summary);
    pd_config_free(cfg);
    return rc;
}
