/*
 * pgdrill expire: applies retention (backup/retention.h) to the backups and
 * the archived WAL of a cluster, on any storage driver.
 */
#ifndef PGDRILL_BACKUP_EXPIRE_H
#define PGDRILL_BACKUP_EXPIRE_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"

/* The marker an expire writes into a backup before it removes its manifest.json. */
#define PD_EXPIRE_MARKER "expiring"

typedef struct pd_expire_opts {
    bool dry_run; /* plan and report only; remove nothing, take no lock */
} pd_expire_opts;

#define PD_EXPIRE_OPTS_INIT \
    {                       \
        false               \
    }

/*
 * Plans what retention removes and, unless dry_run, removes it, logging one
 * line per removed backup and per timeline of WAL (pd_expire_lines() gives
 * the same lines). *report (caller json_decref) is the plan as --json prints
 * it; it is set whenever planning succeeded, also when a removal failed
 * afterwards. Errors: PD_EFAIL when another backup, key rotation or expire
 * holds the cluster's lock; storage errors (a partial removal is safe and
 * the next run completes it); PD_ECORRUPT when a manifest does not read.
 */
PD_MUST_CHECK int pd_expire(json_t **report, const pd_config *cfg, const pd_expire_opts *opts,
                            pd_err *err);

/*
 * The human lines of a report, in order: one per backup (kept backups too
 * when with_kept), one per timeline of WAL, and a total. Calls fn for each
 * line (without a newline).
 */
void pd_expire_lines(const json_t *report, bool with_kept,
                     void (*fn)(void *payload, const char *line), void *payload);

#endif
