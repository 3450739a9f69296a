/*
 * Health of a cluster from its repository alone (no database needed): the
 * last backup, the WAL archive, the last drill, the repository's size. For
 * status, status --json and status --prometheus.
 */
#ifndef PGDRILL_DRILLS_STATUS_H
#define PGDRILL_DRILLS_STATUS_H

#include <jansson.h>
#include <stdio.h>

#include "common/config.h"
#include "common/err.h"
#include "common/pg.h"

/* The status document (a new reference in *out). */
PD_MUST_CHECK int pd_status_collect(json_t **out, const pd_config *cfg, pd_err *err);

/*
 * Adds what only the server knows: "database" {reachable, error,
 * archive_mode, current_lsn} and, in "wal", segment_size and lag_bytes (WAL
 * written after the end of the newest archived segment) or lag_unknown
 * saying why not. Uses pg when given (borrowed); else, when unreachable
 * (the caller's connection error) is NULL, connects with a 5 s timeout, and
 * when it is not, records it as the reason. Never fails: without the database the status stays
 * whole, the lag absent and the reason recorded.
 */
void pd_status_add_server(json_t *status, const pd_config *cfg, pd_pg *pg, const char *unreachable);

/* The document in the Prometheus text exposition format, metrics named pgdrill_*. */
void pd_status_prometheus(FILE *f, json_t *status);

#endif
