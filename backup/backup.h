/*
 * pgdrill backup: stream a base backup (physical) or pg_dump output (logical)
 * into the repository and commit it by writing manifest.json last.
 */
#ifndef PGDRILL_BACKUP_BACKUP_H
#define PGDRILL_BACKUP_BACKUP_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"
#include "storage/repo.h"

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

/*
 * Logical backup: pg_dumpall --globals-only into globals.sql, then each
 * database's pg_dump -Fc into db-<oid>.dump, streamed with no temporary
 * file; committed like a physical backup. A failing pg_dump or pg_dumpall
 * is PD_EPG with its own message and commits nothing.
 */
typedef struct pd_backup_logical_opts {
    const char *const *databases; /* NULL-terminated; NULL: every non-template database */
    bool with_role_passwords;     /* pg_dumpall without --no-role-passwords */
} pd_backup_logical_opts;

PD_MUST_CHECK int pd_backup_logical(json_t **manifest, const pd_config *cfg,
                                    const pd_backup_logical_opts *opts, pd_err *err);

/* Shared by both kinds of backup (backup.c). */

/* A new backup ID (PD_TIME_BUF bytes) that names no object in the repository yet. */
PD_MUST_CHECK int pd_backup_new_id(char *id, size_t size, pd_repo *r, pd_err *err);

/* The manifest's entry for one committed object, a new reference. */
json_t *pd_backup_object_json(const char *name, const pd_object_info *info);

/* Every object of the array is in the repository with the stored size written (PD_EIO if not). */
PD_MUST_CHECK int pd_backup_confirm_objects(pd_repo *r, const char *id, json_t *objects,
                                            pd_err *err);

/* Says, after a failure, that backup id was not committed and what becomes of it. */
void pd_backup_log_uncommitted(const char *id);

/* Writes backups/<id>/manifest.json: the commit. */
PD_MUST_CHECK int pd_backup_commit_manifest(pd_repo *r, const char *id, const pd_secret *key,
                                            const unsigned char *key_id, json_t *m, pd_err *err);

#endif
