/*
 * Health evaluation for status and check: the growth rates and the capacity
 * forecast behind status's "capacity" section, and the threshold states
 * (OK, WARNING, CRITICAL, UNKNOWN, as Nagios plugins use them) that check
 * derives from a status document and the alert-* keys. Pure code: no I/O,
 * so every rule here is unit-tested.
 */
#ifndef PGDRILL_DRILLS_HEALTH_H
#define PGDRILL_DRILLS_HEALTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"

/*
 * A growth rate over the kept history, last against first: the bytes of
 * every object newer than the oldest one, divided by the time from the
 * oldest object to the newest. Objects are added in any order.
 */
typedef struct pd_health_rate {
    size_t n;
    int64_t t_first, t_last; /* seconds since the epoch */
    uint64_t bytes_first;    /* bytes of the objects at t_first */
    uint64_t bytes;          /* bytes of every object */
} pd_health_rate;

#define PD_HEALTH_RATE_INIT \
    {                       \
        0, 0, 0, 0, 0       \
    }

void pd_health_rate_add(pd_health_rate *r, int64_t t, uint64_t bytes);

/* Bytes per day; false ("unknown") with fewer than two objects or no time between them. */
bool pd_health_rate_per_day(const pd_health_rate *r, double *per_day);

/* Nagios plugin states, in order of severity; also their exit codes. */
typedef enum pd_health_state {
    PD_HEALTH_OK = 0,
    PD_HEALTH_WARNING = 1,
    PD_HEALTH_CRITICAL = 2,
    PD_HEALTH_UNKNOWN = 3,
} pd_health_state;

/* "OK", "WARNING", "CRITICAL", "UNKNOWN". */
const char *pd_health_state_name(pd_health_state s);

/* Thresholds: [0] warning, [1] critical, -1 when not set. */
typedef struct pd_health_limits {
    long backup_age[2];      /* seconds */
    long archive_lag[2];     /* seconds */
    long drill_age[2];       /* seconds */
    long repository_days[2]; /* days; a smaller value is worse */
} pd_health_limits;

/* From alert-backup-age, alert-archive-lag, alert-drill-age, alert-repository-days. */
void pd_health_limits_from_config(pd_health_limits *l, const pd_config *cfg);

/*
 * Evaluates a status document (drills/status.h, with its "database" part)
 * against the thresholds. *items (a new reference) is
 * an array of {name, state, message, perfdata}; returns the worst state.
 * Rules (README, "Health checks"):
 *   - backup: no complete backup is CRITICAL; the newest one's age against
 *     alert-backup-age; a WAL gap after it is CRITICAL;
 *   - archive: the age of the newest archived WAL file against
 *     alert-archive-lag, except that it is OK whatever its age when the
 *     server was reachable and has not written a whole segment since (an
 *     idle server archives nothing); no archived WAL file is WARNING;
 *   - drill: none yet is WARNING; a failed newest drill is CRITICAL; a
 *     passed one over drill-rto-objective is WARNING; its age against
 *     alert-drill-age;
 *   - repository: the forecast days until full against
 *     alert-repository-days; unknown (S3, fewer than two backups, not
 *     growing) is OK and says why.
 * A key set to "off" makes its item OK, "not checked".
 */
pd_health_state pd_health_evaluate(json_t **items, json_t *status, const pd_health_limits *l);

#endif
