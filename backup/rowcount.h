/*
 * Row counts of each database's largest tables, recorded with a physical
 * backup so that a drill can compare the restored tables against them.
 *
 * A physical backup is not a snapshot: it spans from its start LSN to its
 * stop LSN while the server keeps writing. The counts are taken on a thread
 * of their own while the backup streams (each table in its own read-only
 * transaction), so on a large database they are done before it ends. So
 * each table also records how many rows were inserted or deleted from just
 * before counting began until after the backup ended ("changes", from the
 * statistics counters): the count and the backup's consistent point both
 * lie in that span, so a drill recovered to that point must find a count
 * within that many rows of the recorded one. A table nobody wrote to
 * must match exactly. Limit: PostgreSQL publishes a session's counters up to
 * about a second after its commits, so rows written in the last second of
 * the backup may be missing from "changes" (a drill would then report a
 * count outside the tolerance for a table written at that moment).
 *
 * A logical backup counts inside the snapshot its pg_dump uses
 * (pd_rowcount_in_snapshot), so its counts are exact.
 *
 * Counting never fails a backup: a database or table that cannot be read is
 * logged (as a warning) and left out.
 */
#ifndef PGDRILL_BACKUP_ROWCOUNT_H
#define PGDRILL_BACKUP_ROWCOUNT_H

#include <jansson.h>

#include "common/pg.h"

/* Largest tables counted per database, and databases at most. */
#define PD_ROWCOUNT_TABLES    5
#define PD_ROWCOUNT_DATABASES 64

typedef struct pd_rowcount pd_rowcount;

/*
 * Once the backup has begun: picks the tables, reads their change counters
 * and starts counting them on a thread of its own.
 */
pd_rowcount *pd_rowcount_begin(const pd_pg_opts *po);

/*
 * After the backup ended: waits for the counts and reads the change counters
 * again. Returns the manifest's "row_counts" array, [{database, table, rows,
 * changes}], a new reference.
 */
json_t *pd_rowcount_finish(pd_rowcount *rc);

/* Cancels counting that is still running (a failed backup), and frees. */
void pd_rowcount_free(pd_rowcount *rc);

/*
 * Logical backups: counts the largest tables of the database pg is connected
 * to, database db, inside pg's open transaction, whose snapshot pg_dump
 * shares (--snapshot). The counts are exact for the dump, so "changes" is 0.
 * Appends {database, table, rows, changes} to out; a table that cannot be
 * counted is logged as a warning and left out.
 */
void pd_rowcount_in_snapshot(json_t *out, pd_pg *pg, const char *db);

#endif
