/*
 * The error model: every fallible function returns 0 or a negative PD_E* code
 * and fills the caller's pd_err with a one-line message (what failed, the
 * cause, what to do) and an optional hint. Buffers are fixed, so reporting an
 * error never allocates. Only cmd/ prints errors and turns codes into exit
 * statuses through pd_err_exit_code(), the one table README mirrors.
 */
#ifndef PGDRILL_COMMON_ERR_H
#define PGDRILL_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define PD_MUST_CHECK   __attribute__((warn_unused_result))
#define PD_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Error codes. Add one only where a caller acts differently on it. */
enum {
    PD_OK = 0,
    PD_EUSAGE = -1,    /* bad command line (exit 2) */
    PD_ECONFIG = -2,   /* bad configuration, wrong key, unknown backup (exit 2) */
    PD_ECORRUPT = -3,  /* hash, tag, format or missing object (exit 3) */
    PD_ECHECK = -4,    /* a drill or verification check failed (exit 3) */
    PD_EIO = -5,       /* local I/O (exit 1) */
    PD_ENET = -6,      /* network, S3 (exit 1) */
    PD_EPG = -7,       /* PostgreSQL connection or query (exit 1) */
    PD_ENOTFOUND = -8, /* object or file does not exist (exit 1 unless mapped) */
    PD_EEXIST = -9,    /* object or file exists already (exit 1 unless mapped) */
    PD_ENOTIMPL = -10, /* not built yet (exit 1) */
    PD_EFAIL = -11,    /* anything else (exit 1) */
};

/* Exit statuses of the pgdrill binary (DESIGN.md, README.md). */
enum {
    PD_EXIT_OK = 0,
    PD_EXIT_FAIL = 1,
    PD_EXIT_USAGE = 2,
    PD_EXIT_CHECK = 3,
};

#define PD_ERR_MSG_MAX  1024
#define PD_ERR_HINT_MAX 512

typedef struct pd_err {
    int code;      /* PD_E*, 0 when clear */
    int sys_errno; /* errno captured by pd_err_sys(), else 0 */
    char msg[PD_ERR_MSG_MAX];
    char hint[PD_ERR_HINT_MAX];
} pd_err;

#define PD_ERR_INIT  \
    {                \
        0, 0, "", "" \
    }

/*
 * Sets err (which may be NULL) and returns code. The message is lowercase,
 * one line, no final period; newlines in it are replaced by spaces.
 */
int pd_err_set(pd_err *err, int code, const char *fmt, ...) PD_PRINTF(3, 4);
int pd_err_vset(pd_err *err, int code, const char *fmt, va_list ap) PD_PRINTF(3, 0);

/* Like pd_err_set(), appending ": <strerror(errno)>" and recording errno. */
int pd_err_sys(pd_err *err, int code, const char *fmt, ...) PD_PRINTF(3, 4);

/* Sets the hint ("what to do next") unless one is set already; returns err->code. */
int pd_err_hint(pd_err *err, const char *fmt, ...) PD_PRINTF(2, 3);

void pd_err_clear(pd_err *err);

/* The whole line: message, then "; hint" when there is one. */
void pd_err_format(const pd_err *err, char *buf, size_t bufsize);

/* The exit status for an error code (0 for PD_OK). */
int pd_err_exit_code(int code);

/* A stable name for a code, e.g. "corrupt", for JSON output. */
const char *pd_err_code_name(int code);

#endif
