/*
 * A restore drill: restore a backup into a scratch instance (scratch.h),
 * replay WAL to a target, run the checks (checks.h), measure each phase,
 * store the report (report.h).
 *
 * The phases, timed:
 *   restore   choose the backup and target; every object read back through
 *             its hashes and tags into the scratch directory; the WAL the
 *             recovery needs fetched (through archive-get's code) into it;
 *   recovery  the instance started until it accepts connections with
 *             recovery finished (promoted);
 *   checks    pg_verifybackup before the start, row counts at the backup's
 *             consistent point, then databases, target reached, amcheck and
 *             the user's checks at the target.
 * rto_seconds is restore + recovery: how long a real restore of this backup
 * to this point took until the database was usable.
 *
 * The instance never sees the repository or its key: recovery reads WAL
 * only from the scratch directory (restore_command copies from there).
 */
#ifndef PGDRILL_DRILLS_DRILL_H
#define PGDRILL_DRILLS_DRILL_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"

typedef struct pd_drill_opts {
    const char *backup; /* an ID or "latest"; NULL: by pick */
    const char *pick;   /* "latest" (NULL), "oldest" or "random" */
    /* At most one target; none: the newest point the archive reaches. */
    const char *target_time, *target_lsn;
    bool target_immediate, target_random;
    bool keep; /* leave the instance running */
} pd_drill_opts;

/*
 * Runs a drill. Returns 0 when it ran to a verdict: *report (the caller's)
 * says pass or fail and is stored in the repository. An error means the
 * drill could not run (no such backup, not enough disk, no drill-user when
 * root, ...): nothing is stored.
 */
PD_MUST_CHECK int pd_drill_run(json_t **report, const pd_config *cfg, const pd_drill_opts *o,
                               pd_err *err);

#endif
