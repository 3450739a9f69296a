/*
 * The error model (see err.h). Messages live in fixed buffers in pd_err so
 * that reporting never allocates and never fails.
 */
#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void
flatten(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
}

int
pd_err_vset(pd_err *err, int code, const char *fmt, va_list ap)
{
    if (err == NULL)
        return code;
    err->code = code;
    err->sys_errno = 0;
    err->hint[0] = '\0';
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    flatten(err->msg);
    return code;
}

int
pd_err_set(pd_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    pd_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int
pd_err_sys(pd_err *err, int code, const char *fmt, ...)
{
    int saved = errno;
    char cause[128];
    size_t len;
    va_list ap;

    if (err == NULL)
        return code;
    va_start(ap, fmt);
    pd_err_vset(err, code, fmt, ap);
    va_end(ap);
    // strerror_r (GNU) may return a static string rather than fill cause.
    const char *s = strerror_r(saved, cause, sizeof(cause));
    len = strlen(err->msg);
    if (len < sizeof(err->msg))
        snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", s);
    // strerror's "No such file" reads better lowercase inside a message.
    if (len + 2 < sizeof(err->msg) && err->msg[len + 2] >= 'A' && err->msg[len + 2] <= 'Z')
        err->msg[len + 2] = (char)(err->msg[len + 2] - 'A' + 'a');
    err->sys_errno = saved;
    return code;
}

int
pd_err_hint(pd_err *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return PD_EFAIL;
    if (err->hint[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(err->hint, sizeof(err->hint), fmt, ap);
        va_end(ap);
        flatten(err->hint);
    }
    return err->code;
}

void
pd_err_clear(pd_err *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->sys_errno = 0;
    err->msg[0] = '\0';
    err->hint[0] = '\0';
}

void
pd_err_format(const pd_err *err, char *buf, size_t bufsize)
{
    if (bufsize == 0)
        return;
    if (err->hint[0] != '\0')
        snprintf(buf, bufsize, "%s; %s", err->msg[0] ? err->msg : "unknown error", err->hint);
    else
        snprintf(buf, bufsize, "%s", err->msg[0] ? err->msg : "unknown error");
}

/* The one table of exit statuses; README's "Exit codes" mirrors it. */
static const struct {
    int code;
    int exit_code;
    const char *name;
} codes[] = {
    {PD_OK, PD_EXIT_OK, "ok"},
    {PD_EUSAGE, PD_EXIT_USAGE, "usage"},
    {PD_ECONFIG, PD_EXIT_USAGE, "config"},
    {PD_ECORRUPT, PD_EXIT_CHECK, "corrupt"},
    {PD_ECHECK, PD_EXIT_CHECK, "check"},
    {PD_EIO, PD_EXIT_FAIL, "io"},
    {PD_ENET, PD_EXIT_FAIL, "network"},
    {PD_EPG, PD_EXIT_FAIL, "postgresql"},
    {PD_ENOTFOUND, PD_EXIT_FAIL, "not-found"},
    {PD_EEXIST, PD_EXIT_FAIL, "exists"},
    {PD_ENOTIMPL, PD_EXIT_FAIL, "not-implemented"},
    {PD_EFAIL, PD_EXIT_FAIL, "failed"},
};

int
pd_err_exit_code(int code)
{
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].code == code)
            return codes[i].exit_code;
    return PD_EXIT_FAIL;
}

const char *
pd_err_code_name(int code)
{
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].code == code)
            return codes[i].name;
    return "failed";
}
