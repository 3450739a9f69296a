/*
 * The archived WAL of a cluster, indexed from one listing: per timeline,
 * which segments are present. Answers until where each backup can be
 * recovered, and where the archive has a gap.
 */
#ifndef PGDRILL_RESTORE_WALINDEX_H
#define PGDRILL_RESTORE_WALINDEX_H

#include <stdint.h>

#include "common/err.h"
#include "storage/repo.h"

#define PD_WAL_SEG_SIZE (16ULL * 1024 * 1024)

typedef struct pd_wal_index pd_wal_index;

typedef struct pd_wal_reach {
    uint64_t reach_lsn; /* WAL is continuous from the backup up to here */
    char missing[25];   /* the first missing segment before the newest one, or "" */
    char newest[25];    /* the newest archived segment of the timeline, or "" */
} pd_wal_reach;

PD_MUST_CHECK int pd_wal_index_load(pd_wal_index **out, pd_repo *r, pd_err *err);
void pd_wal_index_free(pd_wal_index *w);

/* For a backup on timeline tli that ended at stop_lsn (its own WAL reaches that far). */
void pd_wal_index_reach(const pd_wal_index *w, unsigned tli, uint64_t stop_lsn, pd_wal_reach *out);

#endif
