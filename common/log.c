/*
 * Logging (see log.h). Invariant: no byte reaches the log stream without
 * passing through pd_redact(), and each line is written with one write so
 * concurrent processes (archive-push under PostgreSQL) do not interleave.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/secret.h"
#include "common/time.h"

#define LINE_MAX_LEN 4096

static struct {
    pd_log_level level;
    bool quiet;
    FILE *stream; /* NULL: stderr */
    bool tty;
    bool journald;
    bool timestamps;
    // Set by the progress line's thread, read by whichever thread logs
    // (the storage writer may log from a compression thread).
    _Atomic bool progress_shown;
} state = {PD_LOG_INFO, false, NULL, false, false, true, false};

static const char *const level_names[] = {"error", "warning", "info", "debug"};
/* syslog priorities for journald's "<N>" prefix: err, warning, info, debug. */
static const int level_prio[] = {3, 4, 6, 7};

/* True when JOURNAL_STREAM ("dev:ino") names the file behind fd. */
static bool
is_journal_stream(int fd)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(fd, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
pd_log_init(void)
{
    state.stream = NULL;
    state.tty = isatty(STDERR_FILENO) == 1;
    state.journald = !state.tty && is_journal_stream(STDERR_FILENO);
    // A terminal shows its own time; journald stamps every line itself.
    state.timestamps = !state.tty && !state.journald;
    // Someone reads a terminal or the journal; cron mails whatever comes out.
    state.level = state.tty || state.journald ? PD_LOG_INFO : PD_LOG_WARNING;
}

void
pd_log_set_level(pd_log_level level)
{
    state.level = level;
}

pd_log_level
pd_log_get_level(void)
{
    return state.level;
}

bool
pd_log_enabled(pd_log_level level)
{
    if (state.quiet && level > PD_LOG_ERROR)
        return false;
    return level <= state.level;
}

int
pd_log_parse_level(const char *s, pd_log_level *out, pd_err *err)
{
    if (strcmp(s, "error") == 0)
        *out = PD_LOG_ERROR;
    else if (strcmp(s, "warn") == 0 || strcmp(s, "warning") == 0)
        *out = PD_LOG_WARNING;
    else if (strcmp(s, "info") == 0)
        *out = PD_LOG_INFO;
    else if (strcmp(s, "debug") == 0)
        *out = PD_LOG_DEBUG;
    else
        return pd_err_set(err, PD_ECONFIG,
                          "bad log level \"%s\": expected one of error, warn, info, debug", s);
    return 0;
}

void
pd_log_set_quiet(bool quiet)
{
    state.quiet = quiet;
}

bool
pd_log_quiet(void)
{
    return state.quiet;
}

void
pd_log_set_stream(FILE *stream, bool timestamps)
{
    state.stream = stream;
    state.tty = false;
    state.journald = false;
    state.timestamps = timestamps;
}

bool
pd_log_stderr_is_tty(void)
{
    return state.stream == NULL && state.tty;
}

void
pd_log_set_progress_shown(bool shown)
{
    state.progress_shown = shown;
}

#define REDACTED "[redacted]"

/*
 * Replaces buf[start..end) with REDACTED, within bufsize. When the result
 * does not fit, the tail is cut, and when not even the marker fits the line
 * ends at start: a secret is never kept to save the rest of a line.
 * Returns where scanning may go on (the end of buf when it was cut).
 */
static size_t
replace_span(char *buf, size_t bufsize, size_t start, size_t end)
{
    size_t mlen = strlen(REDACTED), len = strlen(buf);
    size_t tail = len - end;

    if (start + mlen + 1 > bufsize) {
        buf[start] = '\0';
        return start;
    }
    if (start + mlen + tail + 1 > bufsize)
        tail = bufsize - 1 - start - mlen;
    memmove(buf + start + mlen, buf + end, tail);
    memcpy(buf + start, REDACTED, mlen);
    buf[start + mlen + tail] = '\0';
    return start + mlen;
}

/* "password = value" (conninfo keyword form, spaces allowed as libpq allows). */
static void
redact_conninfo_password(char *buf, size_t bufsize)
{
    size_t pos = 0;
    char *p;

    while (pos < strlen(buf) && (p = strcasestr(buf + pos, "password")) != NULL) {
        char *v = p + 8;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v != '=') {
            pos = (size_t)(p - buf) + 8;
            continue;
        }
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end = v;
        if (*end == '\'') {
            for (end++; *end && *end != '\''; end++)
                if (*end == '\\' && end[1])
                    end++;
            if (*end == '\'')
                end++;
        } else {
            while (*end && *end != ' ' && *end != '&' && *end != '\t')
                end++;
        }
        pos = replace_span(buf, bufsize, (size_t)(v - buf), (size_t)(end - buf));
    }
}

/* "scheme://user:secret@host": the userinfo password. */
static void
redact_uri_password(char *buf, size_t bufsize)
{
    size_t pos = 0;
    char *p;

    while (pos < strlen(buf) && (p = strstr(buf + pos, "://")) != NULL) {
        char *user = p + 3;
        char *at = user;
        while (*at && *at != '@' && *at != '/' && *at != ' ' && *at != '"')
            at++;
        char *colon = memchr(user, ':', (size_t)(at - user));
        // A line cut short inside "user:secret" may hold part of the secret.
        bool cut = *at == '\0' && strlen(buf) + 1 >= bufsize;
        if (colon != NULL && (*at == '@' || cut))
            pos = replace_span(buf, bufsize, (size_t)(colon + 1 - buf), (size_t)(at - buf));
        else
            pos = (size_t)(user - buf);
    }
}

char *
pd_redact(const char *s, char *buf, size_t bufsize)
{
    pd_secret_redact(s, buf, bufsize);
    redact_conninfo_password(buf, bufsize);
    redact_uri_password(buf, bufsize);
    return buf;
}

static void
vlog(pd_log_level level, const char *fmt, va_list ap)
{
    char msg[LINE_MAX_LEN], clean[LINE_MAX_LEN], line[LINE_MAX_LEN + 128];
    char ts[PD_TIME_BUF];
    FILE *out = state.stream ? state.stream : stderr;
    int n;

    if (!pd_log_enabled(level))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    for (char *c = msg; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    pd_redact(msg, clean, sizeof(clean));

    if (state.journald)
        n = snprintf(line, sizeof(line), "<%d>pgdrill: %s: %s\n", level_prio[level],
                     level_names[level], clean);
    else if (state.timestamps)
        n = snprintf(line, sizeof(line), "%s pgdrill: %s: %s\n",
                     pd_time_rfc3339(ts, sizeof(ts), time(NULL)), level_names[level], clean);
    else
        n = snprintf(line, sizeof(line), "%spgdrill: %s: %s\n",
                     state.progress_shown ? "\r\033[K" : "", level_names[level], clean);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    fwrite(line, 1, (size_t)n, out);
    fflush(out);
}

void
pd_log_msg(pd_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

#define DEFINE_LOG_FN(fn, lvl)    \
    void fn(const char *fmt, ...) \
    {                             \
        va_list ap;               \
        va_start(ap, fmt);        \
        vlog(lvl, fmt, ap);       \
        va_end(ap);               \
    }

DEFINE_LOG_FN(pd_log_error, PD_LOG_ERROR)
DEFINE_LOG_FN(pd_log_warning, PD_LOG_WARNING)
DEFINE_LOG_FN(pd_log_info, PD_LOG_INFO)
DEFINE_LOG_FN(pd_log_debug, PD_LOG_DEBUG)

void
pd_log_err(const pd_err *err)
{
    char buf[PD_ERR_MSG_MAX + PD_ERR_HINT_MAX + 8];

    pd_err_format(err, buf, sizeof(buf));
    pd_log_error("%s", buf);
}
