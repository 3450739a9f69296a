/*
 * Child processes: pgdrill runs pg_basebackup, pg_dump, pg_restore, pg_ctl
 * and psql as children, never through a shell. A child gets an argv array,
 * optional changes to the environment, a working directory and a user to run
 * as; each of its standard streams is inherited, /dev/null, or a pipe to
 * pgdrill. The child holds no other descriptor of pgdrill's and starts with
 * default signal dispositions and an empty signal mask.
 *
 * Key invariant: a child never outlives its pd_child. pd_child_free() kills
 * (SIGKILL) and reaps a child still running, so no zombie or orphan is left
 * whichever way the caller's error handling goes.
 *
 * Secrets reach a child through its environment or its stdin, never argv,
 * which every local user can read in /proc/<pid>/cmdline.
 *
 * SIGPIPE: the helpers that write to a child's stdin block SIGPIPE in the
 * calling thread while they write and consume the one a write raised, so a
 * child that exits early gives an EPIPE error, never kills pgdrill, and the
 * process-wide disposition (main's choice) is left alone.
 */
#ifndef PGDRILL_COMMON_CHILD_H
#define PGDRILL_COMMON_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

typedef struct pd_child pd_child;

/* What one standard stream of a child is connected to. */
typedef enum pd_child_stdio {
    PD_CHILD_INHERIT = 0, /* pgdrill's own stream */
    PD_CHILD_NULL,        /* /dev/null */
    PD_CHILD_PIPE,        /* a pipe to pgdrill, see pd_child_fd() */
    PD_CHILD_FILE,        /* the descriptor in pd_child_opts.files[stream] (a log file) */
} pd_child_stdio;

/* Stream numbers for pd_child_fd() and pd_child_output(). */
enum {
    PD_CHILD_STDIN = 0,
    PD_CHILD_STDOUT = 1,
    PD_CHILD_STDERR = 2,
};

/* Default cap on the captured bytes of stdout and of stderr. */
#define PD_CHILD_CAPTURE_MAX (64 * 1024)

/* Room for any text of pd_child_format_status(), NUL included. */
#define PD_CHILD_STATUS_MAX 128

typedef struct pd_child_opts {
    /*
     * Changes to pgdrill's environment, NULL-terminated, or NULL for none:
     * "NAME=value" sets NAME, a bare "NAME" removes it, a later entry for the
     * same name wins. Only the pointers are copied: the strings (a secret,
     * say) are not duplicated and need only outlive pd_child_start().
     */
    const char *const *env;
    /* Working directory of the child; NULL keeps pgdrill's. */
    const char *cwd;
    /*
     * When uid is nonzero and not pgdrill's effective uid, the child drops
     * its supplementary groups and takes gid, then uid, before it changes to
     * cwd and execs (so cwd and the program are checked as that user). This
     * needs pgdrill to run as root. HOME, USER etc. are not changed: set them
     * in env.
     */
    uid_t uid;
    gid_t gid;
    pd_child_stdio stdin_mode;
    pd_child_stdio stdout_mode;
    pd_child_stdio stderr_mode;
    /*
     * Caps on the bytes of stdout and stderr that pd_child_run() and
     * pd_child_wait() capture from pipes, and, for stderr, that
     * pd_child_read() and pd_child_write() capture while they drain it: the
     * first max bytes are kept, the rest is read and discarded, and the
     * capture is marked truncated. 0 keeps nothing.
     */
    size_t stdout_max;
    size_t stderr_max;
    /*
     * For streams in mode PD_CHILD_FILE: a descriptor of pgdrill's (borrowed,
     * left open) that the child gets as that stream.
     */
    int files[3];
    /*
     * The child gets SIGTERM when pgdrill dies (PR_SET_PDEATHSIG), so that a
     * pg_restore or pg_dump never goes on alone after pgdrill was killed.
     * Not for a program meant to outlive pgdrill (a kept drill instance).
     */
    bool die_with_parent;
} pd_child_opts;

#define PD_CHILD_OPTS_INIT                                                                 \
    {                                                                                      \
        .env = NULL, .cwd = NULL, .uid = 0, .gid = 0, .stdin_mode = PD_CHILD_INHERIT,      \
        .stdout_mode = PD_CHILD_INHERIT, .stderr_mode = PD_CHILD_INHERIT,                  \
        .stdout_max = PD_CHILD_CAPTURE_MAX, .stderr_max = PD_CHILD_CAPTURE_MAX, .files = { \
            -1,                                                                            \
            -1,                                                                            \
            -1                                                                             \
        }                                                                                  \
    }

/*
 * Starts argv[0] with arguments argv (NULL-terminated) and opts (NULL for
 * PD_CHILD_OPTS_INIT). argv[0] is the program: a path when it contains a
 * slash (relative to the child's working directory), else it is searched for
 * in pgdrill's PATH (not one set in opts->env), as execvp does.
 *
 * Returns once the program has been executed; *out is then the caller's, to
 * be freed with pd_child_free(). When the child cannot get that far the
 * child is reaped, *out is NULL and the error is PD_EFAIL with the child's
 * errno in err->sys_errno, e.g.
 *   could not run program "pg_basebackup": no such file or directory
 * (the caller adds a hint such as "check pg-bin"); likewise "could not
 * switch program ... to user id ..." and "could not change to directory ...
 * for program ...". Failing to create a pipe or fork is PD_EIO or PD_EFAIL.
 */
PD_MUST_CHECK int pd_child_start(pd_child **out, const char *const *argv, const pd_child_opts *opts,
                                 pd_err *err);

/* The child's process id (still valid for reporting after it is reaped). */
pid_t pd_child_pid(const pd_child *c);

/*
 * pgdrill's end of the pipe of stream which (PD_CHILD_STDIN/STDOUT/STDERR),
 * or -1 when that stream is not a pipe or has been closed. The descriptor is
 * borrowed: c closes it (pd_child_close_stdin(), at EOF in pd_child_read(),
 * pd_child_wait(), pd_child_free()); never close it yourself. It is
 * close-on-exec. The stdin end is non-blocking (O_NONBLOCK) so the helpers
 * can write what fits: write with pd_child_write(), or poll before writing
 * and handle EAGAIN and SIGPIPE yourself.
 */
int pd_child_fd(const pd_child *c, int which);

/*
 * Reads up to len (> 0) bytes of the child's stdout, which must be a pipe,
 * into buf, blocking until some are there; *nread is 0 at end of file (the
 * pipe is then closed). While it waits it drains stderr, when that is a
 * pipe, into the stderr capture (pd_child_output()), so a child writing much
 * to stderr cannot stall its stdout. A read error is PD_EIO.
 */
PD_MUST_CHECK int pd_child_read(pd_child *c, void *buf, size_t len, size_t *nread, pd_err *err);

/*
 * Writes all len bytes of buf to the child's stdin, which must be an open
 * pipe, draining stderr meanwhile like pd_child_read(). stdout is not
 * drained: a caller piping stdout too must read it in step (poll the fds, or
 * use pd_child_run()). A child that has closed its stdin or exited gives
 * PD_EIO "could not write to program ...: broken pipe"; pd_child_wait() then
 * tells why.
 */
PD_MUST_CHECK int pd_child_write(pd_child *c, const void *buf, size_t len, pd_err *err);

/* Closes pgdrill's end of the stdin pipe (end of input for the child); no-op if none. */
void pd_child_close_stdin(pd_child *c);

/*
 * Waits for the child to exit and reaps it; *status is its wait status
 * (pd_child_format_status(), pd_child_check_status()). First closes the stdin
 * pipe, then until the child exits captures whatever arrives on the stdout
 * and stderr pipes (capped; the caller has usually read stdout to EOF
 * already), so the child cannot block on a full pipe. Once the child has
 * exited, output already in the pipes is captured but a grandchild holding
 * them open is not waited for. The pipes are closed on return. After the
 * child is reaped, calling again gives the same status. A failure of poll,
 * read or waitpid is PD_EIO or PD_EFAIL.
 */
PD_MUST_CHECK int pd_child_wait(pd_child *c, int *status, pd_err *err);

/*
 * Reaps the child if it has exited, without waiting: *exited says whether it
 * has, and then *status is its wait status. Pipes are left alone. A failure
 * of waitpid is PD_EFAIL.
 */
PD_MUST_CHECK int pd_child_poll(pd_child *c, bool *exited, int *status, pd_err *err);

/*
 * Sends signal sig to the child unless it has been reaped already (its pid
 * may be another process's by then). It cannot fail otherwise: a child of
 * ours may always be signalled, and sig must be a valid signal.
 */
void pd_child_kill(pd_child *c, int sig);

/*
 * The captured bytes of stream which (PD_CHILD_STDOUT or PD_CHILD_STDERR),
 * NUL-terminated ("" when none), their count in *len and in *truncated
 * whether the child wrote more than the cap; len and truncated may be NULL.
 * Borrowed: valid until the next call on c or its free.
 */
const char *pd_child_output(const pd_child *c, int which, size_t *len, bool *truncated);

/*
 * Kills (SIGKILL) and reaps the child if it has not been reaped, closes the
 * pipes and frees c. NULL is fine.
 */
void pd_child_free(pd_child *c);

/*
 * The one exception to the invariant above: frees c and closes the pipes but
 * leaves the child running, on purpose (a drill instance kept for
 * debugging). NULL is fine.
 */
void pd_child_release(pd_child *c);

/* What pd_child_run() collected; free the buffers with pd_child_result_free(). */
typedef struct pd_child_result {
    int status;            /* wait status of the child */
    char *stdout_data;     /* the first stdout_max bytes of stdout, NUL-terminated */
    size_t stdout_len;     /* bytes in stdout_data, NUL excluded */
    bool stdout_truncated; /* the child wrote more than stdout_max bytes */
    char *stderr_data;     /* likewise for stderr */
    size_t stderr_len;
    bool stderr_truncated;
} pd_child_result;

/*
 * Runs argv to completion (see pd_child_start()) and collects its stdout and
 * stderr through pipes, each capped by opts->stdout_max / stderr_max; opts'
 * stdio modes are ignored. stdin is fed input_len bytes of input, then
 * closed, or is /dev/null when input is NULL; input the child does not read
 * before it exits is dropped (not an error: its status says whether it
 * failed). All pipes are serviced by one poll() loop, so no size of input or
 * output can deadlock.
 *
 * Returns 0 once the child has been reaped, whatever its exit status: check
 * res->status (pd_child_check_status()). On success *res owns its buffers
 * (never NULL); on failure it holds none. Either way pd_child_result_free()
 * is safe.
 */
PD_MUST_CHECK int pd_child_run(pd_child_result *res, const char *const *argv,
                               const pd_child_opts *opts, const void *input, size_t input_len,
                               pd_err *err);

/* Frees the buffers of res and zeroes it; NULL is fine. */
void pd_child_result_free(pd_child_result *res);

/*
 * Writes a wait status in words into buf and returns buf: "exited with
 * status 1", "was terminated by signal 9 (Killed)", with " (core dumped)"
 * when so. PD_CHILD_STATUS_MAX bytes always suffice.
 */
char *pd_child_format_status(char *buf, size_t bufsize, int status);

/*
 * 0 when status is an exit with status 0; else PD_EFAIL with
 *   program "pg_dump" exited with status 1
 * program is the name to show (argv[0], say).
 */
PD_MUST_CHECK int pd_child_check_status(int status, const char *program, pd_err *err);

#endif
