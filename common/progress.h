/*
 * A live progress line on a terminal for long work: bytes done, rate, and
 * ETA when the total is known. Nothing at all when stderr is not a terminal
 * (cron, systemd) or with --quiet. Updates are rate-limited, so calling
 * pd_progress_update() per buffer is cheap.
 */
#ifndef PGDRILL_COMMON_PROGRESS_H
#define PGDRILL_COMMON_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct pd_progress pd_progress;

/* label is copied; total 0 means unknown. Never returns NULL. */
pd_progress *pd_progress_new(const char *label, uint64_t total);

/* Sets the bytes done so far (absolute, not a delta). */
void pd_progress_update(pd_progress *p, uint64_t done);

/* Clears the line; NULL is fine. */
void pd_progress_free(pd_progress *p);

/* The text of the line (for tests): label, done, rate, ETA. Returns buf. */
char *pd_progress_format(const pd_progress *p, double now, char *buf, size_t bufsize);

#endif
