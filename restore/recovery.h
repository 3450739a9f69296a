/* Point-in-time recovery planning and settings for restore (see recovery.c). */
#ifndef PGDRILL_RESTORE_RECOVERY_H
#define PGDRILL_RESTORE_RECOVERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "restore/restore.h"
#include "storage/repo.h"

typedef struct pd_recovery_plan_t {
    json_t *manifest; /* the chosen backup (owned) */
    bool recover;     /* write restore_command and recovery.signal */
    bool has_time;
    int64_t target_time;
    int32_t target_usecs;
    uint64_t target_lsn; /* UINT64_MAX when none */
    char first_segment[25], last_segment[25], missing_segment[25];
    unsigned segments_needed;
    char newest_wal[25];
    int64_t newest_wal_time;
} pd_recovery_plan_t;

/*
 * Chooses the backup for the options' target and checks the target against
 * the backups and the archive: PD_ECONFIG for a target before the oldest
 * backup or beyond the archive, PD_ECORRUPT for a WAL file missing on the
 * way, PD_EUSAGE for two targets. Nothing is written.
 */
PD_MUST_CHECK int pd_recovery_plan(pd_recovery_plan_t *plan, pd_repo *r, const pd_restore_opts *o,
                                   pd_err *err);

/* Appends restore_command and the target to postgresql.auto.conf; creates recovery.signal. */
PD_MUST_CHECK int pd_recovery_write(const char *dir, const pd_recovery_plan_t *plan,
                                    const pd_restore_opts *o, pd_err *err);

/* The --dry-run report on stdout. */
void pd_recovery_print_dry_run(const pd_recovery_plan_t *plan, const char *target_dir);

#endif
