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

/* The status document (a new reference in *out). */
PD_MUST_CHECK int pd_status_collect(json_t **out, const pd_config *cfg, pd_err *err);

/* The document in the Prometheus text exposition format, metrics named pgdrill_*. */
void pd_status_prometheus(FILE *f, json_t *status);

#endif
