/*
 * Drill reports in the repository: drills/<ID>.json, stored through the
 * object format like every object (encrypted, tamper-evident), committed
 * atomically, never overwritten. Fields as DESIGN.md says ("Machine-readable
 * output").
 */
#ifndef PGDRILL_DRILLS_REPORT_H
#define PGDRILL_DRILLS_REPORT_H

#include <jansson.h>

#include "common/err.h"
#include "storage/repo.h"

/* Largest drill report read back. */
#define PD_DRILL_REPORT_MAX (1024 * 1024)

/* Stores report under its "id"; PD_EEXIST when a report of that ID exists. */
PD_MUST_CHECK int pd_drill_report_store(pd_repo *r, json_t *report, pd_err *err);

/*
 * Every drill report of the cluster, oldest first, as a new JSON array. A
 * report that does not read (damaged, wrong key) is PD_ECORRUPT.
 */
PD_MUST_CHECK int pd_drill_reports_load(json_t **out, pd_repo *r, pd_err *err);

/* The newest report in reports (as loaded) about backup_id, borrowed; NULL when none. */
json_t *pd_drill_report_last_of(json_t *reports, const char *backup_id);

/* {id, result, rto_seconds} of a report, for list; a new reference (null for NULL). */
json_t *pd_drill_report_brief(json_t *report);

#endif
