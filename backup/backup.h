/*
 * pgdrill backup (physical): stream a base backup into the repository and
 * commit it by writing manifest.json last.
 */
#ifndef PGDRILL_BACKUP_BACKUP_H
#define PGDRILL_BACKUP_BACKUP_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"

#define PD_MANIFEST_NAME "manifest.json"
#define PD_MANIFEST_MAX  (64 * 1024 * 1024)

typedef struct pd_backup_opts {
    bool ignore_checksum_failures;
    bool fast_checkpoint;
} pd_backup_opts;

#define PD_BACKUP_OPTS_INIT \
    {                       \
        false, true         \
    }

/*
 * Takes a physical backup. On success *manifest (caller json_decref) is the
 * committed manifest. Fails with nothing committed: PD_EPG (server),
 * PD_EIO (repository), PD_ECONFIG (wrong key, another cluster's repository),
 * PD_EFAIL (another backup of the cluster running).
 */
PD_MUST_CHECK int pd_backup_physical(json_t **manifest, const pd_config *cfg,
                                     const pd_backup_opts *opts, pd_err *err);

#endif
