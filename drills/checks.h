/*
 * The checks a drill runs on its scratch instance once it is up. Each check
 * appends {name, result, detail} to a JSON array: result is "pass", "fail"
 * or "skip"; detail says what was seen, in words. A check never stops the
 * others: every failure is recorded.
 */
#ifndef PGDRILL_DRILLS_CHECKS_H
#define PGDRILL_DRILLS_CHECKS_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/pg.h"

/* How to reach the scratch instance. */
typedef struct pd_check_target {
    const char *socket; /* socket directory */
    int port;
    const char *user; /* role to connect as (the bootstrap superuser) */
    const char *db;   /* a database that exists, for catalog queries */
} pd_check_target;

/* Appends a check; detail is printf-style. */
void pd_check_add(json_t *checks, const char *name, const char *result, const char *fmt, ...)
    PD_PRINTF(4, 5);

/* True when no check in checks failed. */
bool pd_checks_passed(json_t *checks);

/* The first failed check, borrowed; NULL when none. */
json_t *pd_checks_first_failure(json_t *checks);

/* Connects to database db of the scratch instance. */
PD_MUST_CHECK int pd_check_connect(pd_pg **out, const pd_check_target *t, const char *db,
                                   pd_err *err);

/*
 * Every database that allows connections accepts one. *dbs (caller's) is
 * the JSON array of their names, for the checks below.
 */
void pd_checks_databases(json_t *checks, const pd_check_target *t, json_t **dbs);

/*
 * Row counts of the tables recorded with the backup (the manifest's
 * "row_counts") against the restored ones: each must be within the table's
 * recorded "changes" of its recorded count. Call at the backup's
 * consistent point.
 */
void pd_checks_row_counts(json_t *checks, const pd_check_target *t, json_t *row_counts);

/*
 * amcheck's bt_index_check on every btree index of every database in dbs
 * (heapallindexed when mode is "full"); skipped with mode "off" or when the
 * extension is not available. Needs a writable instance (CREATE EXTENSION).
 */
void pd_checks_amcheck(json_t *checks, const pd_check_target *t, json_t *dbs, const char *mode);

/* The user's checks: drill-check and drill-check-file, in drill-check-database. */
void pd_checks_user(json_t *checks, const pd_check_target *t, const pd_config *cfg);

#endif
