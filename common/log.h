/*
 * Logging to stderr as "pgdrill: <level>: <message>". stdout belongs to
 * command output. Under journald (JOURNAL_STREAM names our stderr) lines carry
 * a syslog priority prefix ("<3>") and no timestamp of our own; elsewhere, when
 * stderr is not a terminal (cron, a log file), lines start with an RFC 3339
 * UTC timestamp. Every line, and every progress line, passes through
 * pd_redact() first, so no registered secret (common/secret.h) can come out.
 */
#ifndef PGDRILL_COMMON_LOG_H
#define PGDRILL_COMMON_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "common/err.h"

typedef enum pd_log_level {
    PD_LOG_ERROR = 0,
    PD_LOG_WARNING = 1,
    PD_LOG_INFO = 2,
    PD_LOG_DEBUG = 3,
} pd_log_level;

/*
 * Reads the environment (JOURNAL_STREAM) and whether stderr is a terminal,
 * and sets the default level from them: info on a terminal or under
 * journald, warning elsewhere (cron, a pipe, a file), so that an unattended
 * run that goes well prints nothing. log-level and --verbose override it.
 */
void pd_log_init(void);

void pd_log_set_level(pd_log_level level);
pd_log_level pd_log_get_level(void);
bool pd_log_enabled(pd_log_level level);

/* "error", "warn"/"warning", "info", "debug"; PD_ECONFIG otherwise. */
PD_MUST_CHECK int pd_log_parse_level(const char *s, pd_log_level *out, pd_err *err);

/* --quiet: only errors are logged, no progress. */
void pd_log_set_quiet(bool quiet);
bool pd_log_quiet(void);

/*
 * Redirects log output (tests). NULL restores stderr. The stream is treated
 * as "not a terminal, not journald" unless set otherwise by the flags.
 */
void pd_log_set_stream(FILE *stream, bool timestamps);

void pd_log_error(const char *fmt, ...) PD_PRINTF(1, 2);
void pd_log_warning(const char *fmt, ...) PD_PRINTF(1, 2);
void pd_log_info(const char *fmt, ...) PD_PRINTF(1, 2);
void pd_log_debug(const char *fmt, ...) PD_PRINTF(1, 2);
void pd_log_msg(pd_log_level level, const char *fmt, ...) PD_PRINTF(2, 3);

/* Logs an error report (message and hint) at error level. */
void pd_log_err(const pd_err *err);

/*
 * Writes the redacted form of s into buf: every registered secret becomes
 * "[redacted]", and "password=..." in a conninfo string becomes
 * "password=[redacted]". Returns buf.
 */
char *pd_redact(const char *s, char *buf, size_t bufsize);

/* Progress output support (common/progress.c): true when stderr is a terminal. */
bool pd_log_stderr_is_tty(void);

/*
 * Progress writes its line to stderr without a newline; while one is shown,
 * a log line first clears it. Called by common/progress.c only.
 */
void pd_log_set_progress_shown(bool shown);

#endif
