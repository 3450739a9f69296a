/*
 * Restoring a physical backup into a directory (and tablespaces into theirs).
 */
#ifndef PGDRILL_RESTORE_RESTORE_H
#define PGDRILL_RESTORE_RESTORE_H

#include <jansson.h>

#include "common/config.h"
#include "common/err.h"
#include "pipeline/stage.h"

#define PD_RESTORE_MAX_MAPS  64
#define PD_RESTORE_MARKER    "PGDRILL_RESTORE_INCOMPLETE"
#define PD_RESTORE_PGCONTROL "global/pg_control.pgdrill-restoring"

typedef struct pd_restore_opts {
    const char *target_dir;
    const char *backup; /* ID or "latest"; NULL: latest */
    struct {
        const char *oid;
        const char *dir;
    } maps[PD_RESTORE_MAX_MAPS];
    int n_maps;
    /* Recovery: at most one target; NULL/false when not given. */
    const char *target_time, *target_lsn, *target_xid, *target_name;
    bool target_immediate;
    const char *target_action;   /* pause, promote, shutdown; NULL: PostgreSQL's default */
    const char *target_timeline; /* NULL: PostgreSQL's default (latest) */
    bool target_exclusive;
    bool dry_run; /* say what would be done; write nothing */
    /* restore_command for postgresql.auto.conf (built by cmd/): pgdrill archive-get %f %p */
    const char *restore_command;
} pd_restore_opts;

/*
 * Restores; on success *manifest (caller frees) is the restored backup's.
 * Bad input is PD_ECONFIG before anything is written (unknown backup,
 * non-empty target, unknown tablespace in a map); damage is PD_ECORRUPT.
 * A failed restore removes what it wrote; one killed half way leaves the
 * PD_RESTORE_MARKER file and no global/pg_control, so it cannot start.
 */
PD_MUST_CHECK int pd_restore_physical(json_t **manifest, const pd_config *cfg,
                                      const pd_restore_opts *opts, pd_err *err);

/*
 * The extracting sink for one tar stream into dir (which must exist):
 * refuses absolute paths, "..", and links that point outside dir
 * (PD_ECORRUPT naming the entry); holds global/pg_control back under
 * PD_RESTORE_PGCONTROL. what names the archive in messages.
 */
pd_stage *pd_restore_extractor_new(const char *what, const char *dir);

#endif
