/*
 * Time: monotonic clocks for durations (never the wall clock, which may jump),
 * and RFC 3339 UTC for every time pgdrill prints or stores.
 */
#ifndef PGDRILL_COMMON_TIME_H
#define PGDRILL_COMMON_TIME_H

#include <stddef.h>
#include <time.h>

#define PD_TIME_BUF 32

/* Seconds on CLOCK_MONOTONIC, for measuring durations. */
double pd_time_mono(void);

/* "2026-11-24T02:00:00Z" into buf (at least PD_TIME_BUF bytes); returns buf. */
char *pd_time_rfc3339(char *buf, size_t bufsize, time_t t);

/* A backup or drill ID for time t: "20261124T020000Z" (sorts by time). */
char *pd_time_id(char *buf, size_t bufsize, time_t t);

#endif
