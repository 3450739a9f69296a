/*
 * Notifications: after a backup, drill, expire or check, pgdrill runs the
 * configured notify-command with the outcome in PGDRILL_* environment
 * variables and the JSON report on stdin. The command runs without a shell,
 * with pgdrill's environment minus its secrets, and is killed after
 * notify-timeout seconds. Its failure is logged as a warning and never
 * changes pgdrill's own exit status.
 */
#ifndef PGDRILL_COMMON_NOTIFY_H
#define PGDRILL_COMMON_NOTIFY_H

#include <jansson.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"

/* Most words (program and arguments) notify-command may have. */
#define PD_NOTIFY_MAX_ARGS 32

/* One outcome to report. */
typedef struct pd_notify_event {
    const char *event;     /* "backup", "drill", "expire" or "check" */
    int exit_code;         /* pgdrill's exit status for this outcome */
    const char *backup_id; /* NULL when there is none */
    const char *drill_id;  /* NULL when there is none */
    const char *message;   /* one line: what happened */
    json_t *report;        /* the JSON report for stdin; NULL: stdin is empty */
} pd_notify_event;

/*
 * Splits notify-command at spaces and tabs into argv (at most
 * PD_NOTIFY_MAX_ARGS words, then a NULL), writing the words into buf
 * (bufsize >= strlen(cmd) + 1). No quoting: a command that needs it belongs
 * in a script. PD_ECONFIG when it is empty or has too many words.
 */
PD_MUST_CHECK int pd_notify_split(const char *cmd, char *buf, size_t bufsize,
                                  char *argv[PD_NOTIFY_MAX_ARGS + 1], pd_err *err);

/* Whether an outcome with this exit status is reported under notify-on (always or failure). */
bool pd_notify_wanted(const char *notify_on, int exit_code);

/* Runs notify-command for ev when it is configured and notify-on wants ev; only logs. */
void pd_notify(const pd_config *cfg, const pd_notify_event *ev);

#endif
