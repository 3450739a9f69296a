/*
 * Child processes (see child.h), by fork and execve: the child must change
 * user and directory and rearrange descriptors before exec, which
 * posix_spawn cannot do portably.
 *
 * Key invariant: between fork and exec the child calls only
 * async-signal-safe functions (pgdrill may have threads, whose locks the
 * child inherits held), so everything it needs (candidate paths, the
 * environment array) is built before fork, and all signals are blocked
 * across fork so no handler of pgdrill's runs in the child.
 *
 * The child tells pgdrill why it could not exec through a close-on-exec
 * "report" pipe: exec closes it, and EOF means the program is running; a
 * failure writes {step, errno} (atomic, less than PIPE_BUF) before _exit.
 *
 * The child is waited for through a pidfd (Linux 5.3) polled alongside the
 * pipes, so a grandchild holding a pipe open (pg_ctl's postmaster) cannot
 * make a wait hang; without a pidfd the loop polls waitpid every 50 ms.
 */
#include "common/child.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/mem.h"

/* Bytes read from an output pipe per read(): a pipe's default capacity. */
#define READ_CHUNK (64 * 1024)

/* Without a pidfd, how often a wait checks whether the child has exited. */
#define POLL_FALLBACK_MS 50

/*
 * Once the child has exited, reads of what is left in its pipes (at most
 * their capacity, unless a grandchild keeps writing) before giving up.
 */
#define DRAIN_ROUNDS_MAX 64

/* Why the child could not exec, sent over the report pipe. */
enum {
    FAIL_STDIO = 1,
    FAIL_IDS,
    FAIL_CWD,
    FAIL_EXEC,
};

struct child_failure {
    int step;
    int errnum;
};

/* What the child does between fork and exec; built by the parent. */
struct plan {
    char **paths; /* candidates to execve in order, NULL-terminated */
    char *const *argv;
    char *const *envp;
    const char *cwd;
    bool switch_ids;
    uid_t uid;
    gid_t gid;
    int stdio[3];  /* descriptor to become 0, 1, 2, or -1 to inherit */
    int report_fd; /* write end of the report pipe */
    pid_t parent;  /* die_with_parent: pgdrill's pid, else 0 */
};

struct capture {
    char *buf; /* NUL-terminated when not NULL */
    size_t len;
    size_t size;
    size_t max;
    bool truncated;
};

struct pd_child {
    pid_t pid;   /* -1 once the process is gone from us (reaped elsewhere) */
    int pidfd;   /* -1 when the kernel offers none, or after reaping */
    int fd[3];   /* pgdrill's pipe ends; -1 when not a pipe or closed */
    bool reaped; /* status holds the wait status */
    int status;
    char *name;            /* argv[0], for messages */
    struct capture cap[3]; /* by stream; [PD_CHILD_STDIN] is unused */
    pd_child_stdio mode[3];
};

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        // A close of a pipe or /dev/null reports nothing worth acting on.
        (void)close(*fd);
        *fd = -1;
    }
}

/* ---- In the child, between fork and exec: async-signal-safe only ---- */

static __attribute__((noreturn)) void
child_fail(int report_fd, int step, int errnum)
{
    struct child_failure f = {step, errnum};
    ssize_t n;

    do
        n = write(report_fd, &f, sizeof(f));
    while (n < 0 && errno == EINTR);
    _exit(127);
}

/*
 * Closes every descriptor from lowfd up: close_range (Linux 5.9), else each
 * one listed in /proc/self/fd, else each one below the descriptor limit.
 */
static void
close_from(int lowfd)
{
    struct rlimit rl;
    int dfd;

    if (close_range((unsigned int)lowfd, ~0U, 0) == 0)
        return;
    dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        char buf[4096] __attribute__((aligned(8)));
        ssize_t n;

        while ((n = getdents64(dfd, buf, sizeof(buf))) > 0) {
            for (ssize_t off = 0; off < n;) {
                struct dirent64 *d = (struct dirent64 *)(void *)(buf + off);
                int fd = 0;
                bool digits = d->d_name[0] != '\0';

                for (const char *s = d->d_name; *s != '\0'; s++) {
                    if (*s < '0' || *s > '9' || fd > (INT_MAX - 9) / 10) {
                        digits = false;
                        break;
                    }
                    fd = fd * 10 + (*s - '0');
                }
                if (digits && fd >= lowfd && fd != dfd)
                    (void)close(fd);
                off += d->d_reclen;
            }
        }
        (void)close(dfd);
        if (n == 0)
            return;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX)
        rl.rlim_cur = 65536;
    for (int fd = lowfd; fd < (int)rl.rlim_cur; fd++)
        (void)close(fd);
}

static bool
exec_skippable(int errnum)
{
    // As execvp: these mean "not in this PATH entry", try the next one.
    return errnum == ENOENT || errnum == ENOTDIR || errnum == ESTALE || errnum == ENODEV ||
           errnum == ETIMEDOUT;
}

static __attribute__((noreturn)) void
child_main(const struct plan *p)
{
    int report = p->report_fd;
    int src[3];
    struct sigaction sa;
    sigset_t none;
    bool saw_eacces = false;
    int last = ENOENT;

    // Default dispositions for all: exec resets caught signals but keeps
    // ignored ones ignored (pgdrill may ignore SIGPIPE; PostgreSQL's tools
    // expect the default). SIGKILL, SIGSTOP and libc's own fail harmlessly.
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        (void)sigaction(sig, &sa, NULL);

    // No source descriptor may sit on 0, 1 or 2 (pgdrill may run with one
    // closed), where a dup2 below would overwrite it before its own dup2.
    if (report < 3 && (report = fcntl(report, F_DUPFD_CLOEXEC, 3)) < 0)
        _exit(127); // cannot report; pgdrill sees status 127
    for (int i = 0; i < 3; i++) {
        src[i] = p->stdio[i];
        if (src[i] >= 0 && src[i] < 3 && (src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3)) < 0)
            child_fail(report, FAIL_STDIO, errno);
    }
    for (int i = 0; i < 3; i++)
        if (src[i] >= 0 && dup2(src[i], i) < 0)
            child_fail(report, FAIL_STDIO, errno);

    // Keep 0-2 and the report pipe (moved to 3) only: a pipe end held by
    // the wrong process means its reader never sees EOF, and the program
    // has no business with pgdrill's files, sockets or keys.
    if (report != 3) {
        if (dup3(report, 3, O_CLOEXEC) < 0)
            child_fail(report, FAIL_STDIO, errno);
        report = 3;
    }
    close_from(4);

    // Asked for before the check, so a parent gone in between is seen too.
    if (p->parent != 0 && (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != p->parent))
        _exit(127);

    // Groups first: after setuid the child could no longer change them.
    if (p->switch_ids && (setgroups(1, &p->gid) < 0 || setgid(p->gid) < 0 || setuid(p->uid) < 0))
        child_fail(report, FAIL_IDS, errno);
    if (p->cwd != NULL && chdir(p->cwd) < 0)
        child_fail(report, FAIL_CWD, errno);

    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    for (char **path = p->paths; *path != NULL; path++) {
        execve(*path, p->argv, p->envp);
        last = errno;
        if (last == EACCES)
            saw_eacces = true;
        else if (!exec_skippable(last))
            child_fail(report, FAIL_EXEC, last);
    }
    child_fail(report, FAIL_EXEC, saw_eacces ? EACCES : last);
}

/* ---- In pgdrill ---- */

/* The execve candidates for program, as execvp would try them. */
static char **
candidate_paths(const char *program)
{
    const char *path = getenv("PATH");
    char **paths;
    size_t n = 1;
    size_t i = 0;

    if (strchr(program, '/') != NULL) {
        paths = pd_malloc(2 * sizeof(*paths));
        paths[0] = pd_strdup(program);
        paths[1] = NULL;
        return paths;
    }
    if (path == NULL)
        path = "/bin:/usr/bin"; // glibc's default
    for (const char *s = path; *s != '\0'; s++)
        if (*s == ':')
            n++;
    paths = pd_malloc((n + 1) * sizeof(*paths));
    for (const char *s = path;; s++) {
        const char *end = strchrnul(s, ':');

        // An empty entry means the current directory.
        if (end == s)
            paths[i++] = pd_asprintf("./%s", program);
        else
            paths[i++] = pd_asprintf("%.*s/%s", (int)(end - s), s, program);
        if (*end == '\0')
            break;
        s = end;
    }
    paths[i] = NULL;
    return paths;
}

static void
free_paths(char **paths)
{
    if (paths == NULL)
        return;
    for (char **p = paths; *p != NULL; p++)
        pd_free(*p);
    pd_free(paths);
}

static size_t
env_name_len(const char *entry)
{
    const char *eq = strchr(entry, '=');

    return eq != NULL ? (size_t)(eq - entry) : strlen(entry);
}

static bool
env_same_name(const char *a, const char *b)
{
    size_t n = env_name_len(a);

    return n == env_name_len(b) && memcmp(a, b, n) == 0;
}

/*
 * pgdrill's environment without the names in changes, then the settings of
 * changes whose name no later change overrides. Only pointers are copied.
 */
static char **
build_env(const char *const *changes)
{
    size_t n = 0;
    size_t k = 0;
    char **envp;

    for (char **e = environ; *e != NULL; e++)
        n++;
    for (const char *const *ch = changes; *ch != NULL; ch++)
        n++;
    envp = pd_malloc((n + 1) * sizeof(*envp));
    for (char **e = environ; *e != NULL; e++) {
        bool changed = false;

        for (const char *const *ch = changes; *ch != NULL && !changed; ch++)
            changed = env_same_name(*e, *ch);
        if (!changed)
            envp[k++] = *e;
    }
    for (size_t i = 0; changes[i] != NULL; i++) {
        bool overridden = false;

        if (strchr(changes[i], '=') == NULL)
            continue; // a removal
        for (size_t j = i + 1; changes[j] != NULL && !overridden; j++)
            overridden = env_same_name(changes[i], changes[j]);
        if (!overridden)
            envp[k++] = (char *)changes[i];
    }
    envp[k] = NULL;
    return envp;
}

/* Appends n bytes of output to cap, keeping the first cap->max in all. */
static void
capture_add(struct capture *cap, const char *data, size_t n)
{
    size_t keep = cap->max - cap->len;

    if (n > keep)
        cap->truncated = true;
    else
        keep = n;
    if (keep == 0)
        return;
    // cap->max is at most SIZE_MAX / 4 (pd_child_start), so nothing overflows.
    if (cap->len + keep + 1 > cap->size) {
        size_t size = cap->size * 2;

        if (size < cap->len + keep + 1)
            size = cap->len + keep + 1;
        if (size < 1024)
            size = 1024;
        if (size > cap->max + 1)
            size = cap->max + 1;
        cap->buf = pd_realloc(cap->buf, size);
        cap->size = size;
    }
    memcpy(cap->buf + cap->len, data, keep);
    cap->len += keep;
    cap->buf[cap->len] = '\0';
}

/* Hands the captured bytes (never NULL) to the caller and empties cap. */
static char *
capture_take(struct capture *cap, size_t *len, bool *truncated)
{
    char *buf = cap->buf != NULL ? cap->buf : pd_strdup("");

    *len = cap->len;
    *truncated = cap->truncated;
    cap->buf = NULL;
    cap->len = 0;
    cap->size = 0;
    return buf;
}

/*
 * Blocks SIGPIPE in this thread for the writes to come, as libpq does
 * (pq_block_sigpipe): the process-wide disposition belongs to main and the
 * other threads, and a SIGPIPE raised by a write goes to the writing thread,
 * which can then consume it.
 */
struct sigpipe_guard {
    sigset_t old;
    bool was_pending;
};

static void
sigpipe_block(struct sigpipe_guard *g)
{
    sigset_t pipe_set;
    sigset_t pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    (void)sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    (void)pthread_sigmask(SIG_BLOCK, &pipe_set, &g->old);
}

/* Consumes the SIGPIPE a write raised (when one did), then restores the mask. */
static void
sigpipe_unblock(struct sigpipe_guard *g, bool raised)
{
    if (raised && !g->was_pending) {
        static const struct timespec zero = {0, 0};
        sigset_t pipe_set;
        int saved = errno;

        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
        errno = saved;
    }
    (void)pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Reaps the child if it has exited (or, when block, once it has). */
static int
reap(pd_child *c, bool block, pd_err *err)
{
    pid_t r;
    int st = 0;

    if (c->reaped)
        return 0;
    if (c->pid < 0) {
        errno = ECHILD;
        return pd_err_sys(err, PD_EFAIL, "could not wait for program \"%s\"", c->name);
    }
    do
        r = waitpid(c->pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0) {
        // ECHILD: reaped elsewhere (SIGCHLD ignored, a waitpid(-1)); the pid
        // may be reused now, so never signal or wait for it again.
        if (errno == ECHILD)
            c->pid = -1;
        return pd_err_sys(err, PD_EFAIL, "could not wait for program \"%s\"", c->name);
    }
    c->reaped = true;
    c->status = st;
    close_fd(&c->pidfd);
    return 0;
}

int
pd_child_poll(pd_child *c, bool *exited, int *status, pd_err *err)
{
    int rc = reap(c, false, err);

    *exited = rc == 0 && c->reaped;
    *status = c->reaped ? c->status : 0;
    return rc;
}

/* One read of stream which into its capture; closes the pipe at EOF. */
static int
drain_stream(pd_child *c, int which, pd_err *err)
{
    char buf[READ_CHUNK];
    ssize_t n;

    do
        n = read(c->fd[which], buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return pd_err_sys(err, PD_EIO, "could not read %s of program \"%s\"",
                          which == PD_CHILD_STDOUT ? "output" : "error output", c->name);
    if (n == 0)
        close_fd(&c->fd[which]);
    else
        capture_add(&c->cap[which], buf, (size_t)n);
    return 0;
}

/*
 * One write of what remains of buf to the non-blocking stdin pipe; *off
 * advances. Returns 1 when the child has closed its stdin (EPIPE).
 */
static int
feed_stdin(pd_child *c, const unsigned char *buf, size_t len, size_t *off, pd_err *err)
{
    ssize_t n = write(c->fd[PD_CHILD_STDIN], buf + *off, len - *off);

    if (n >= 0) {
        *off += (size_t)n;
        return 0;
    }
    if (errno == EINTR || errno == EAGAIN)
        return 0;
    if (errno == EPIPE)
        return 1;
    return pd_err_sys(err, PD_EIO, "could not write to program \"%s\"", c->name);
}

/*
 * Feeds input (when not NULL) to stdin, captures stdout and stderr and
 * reaps the child, servicing all pipes and the pidfd from one poll() so no
 * direction can stall another. Closes every pipe before returning.
 */
static int
finish(pd_child *c, const unsigned char *input, size_t input_len, pd_err *err)
{
    struct sigpipe_guard guard;
    size_t in_off = 0;
    bool epipe = false;
    int rounds_after_exit = 0;
    int rc = 0;

    if (input == NULL || input_len == 0)
        close_fd(&c->fd[PD_CHILD_STDIN]);
    sigpipe_block(&guard);
    for (;;) {
        struct pollfd pfd[4];
        int stream[4]; // which stream each pfd is; -1 for the pidfd
        nfds_t n = 0;
        int timeout;
        int ready;

        if (c->reaped)
            close_fd(&c->fd[PD_CHILD_STDIN]); // no one left to read it
        for (int s = 0; s < 3; s++) {
            if (c->fd[s] < 0)
                continue;
            pfd[n].fd = c->fd[s];
            pfd[n].events = s == PD_CHILD_STDIN ? POLLOUT : POLLIN;
            stream[n++] = s;
        }
        if (c->reaped && n == 0)
            break;
        if (!c->reaped && c->pidfd >= 0) {
            pfd[n].fd = c->pidfd;
            pfd[n].events = POLLIN;
            stream[n++] = -1;
        }
        if (n == 0) {
            rc = reap(c, true, err);
            break;
        }
        timeout = c->reaped ? 0 : c->pidfd >= 0 ? -1 : POLL_FALLBACK_MS;
        ready = poll(pfd, n, timeout);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            rc = pd_err_sys(err, PD_EIO, "could not wait for output of program \"%s\"", c->name);
            break;
        }
        if (c->reaped && (ready == 0 || ++rounds_after_exit > DRAIN_ROUNDS_MAX))
            break;
        for (nfds_t i = 0; i < n && rc == 0; i++) {
            if (pfd[i].revents == 0)
                continue;
            if (stream[i] == PD_CHILD_STDIN) {
                if ((rc = feed_stdin(c, input, input_len, &in_off, err)) == 1) {
                    // The child stopped reading; its status tells whether
                    // that was a failure.
                    epipe = true;
                    rc = 0;
                    close_fd(&c->fd[PD_CHILD_STDIN]);
                } else if (in_off == input_len) {
                    close_fd(&c->fd[PD_CHILD_STDIN]);
                }
            } else if (stream[i] > 0) {
                rc = drain_stream(c, stream[i], err);
            } else {
                rc = reap(c, false, err);
            }
        }
        if (rc == 0 && !c->reaped && c->pidfd < 0)
            rc = reap(c, false, err);
        if (rc < 0)
            break;
    }
    sigpipe_unblock(&guard, epipe);
    for (int s = 0; s < 3; s++)
        close_fd(&c->fd[s]);
    return rc;
}

/* Sets err from the child's report of why it could not exec. */
static int
report_failure(const pd_child *c, const struct child_failure *f, const pd_child_opts *opts,
               pd_err *err)
{
    errno = f->errnum;
    switch (f->step) {
    case FAIL_STDIO:
        return pd_err_sys(err, PD_EFAIL, "could not set up standard streams of program \"%s\"",
                          c->name);
    case FAIL_IDS:
        return pd_err_sys(err, PD_EFAIL,
                          "could not switch program \"%s\" to user id %u and group id %u", c->name,
                          (unsigned int)opts->uid, (unsigned int)opts->gid);
    case FAIL_CWD:
        return pd_err_sys(err, PD_EFAIL, "could not change to directory \"%s\" for program \"%s\"",
                          opts->cwd, c->name);
    default:
        return pd_err_sys(err, PD_EFAIL, "could not run program \"%s\"", c->name);
    }
}

int
pd_child_start(pd_child **out, const char *const *argv, const pd_child_opts *opts, pd_err *err)
{
    static const pd_child_opts defaults = PD_CHILD_OPTS_INIT;
    const pd_child_stdio *modes;
    pd_child *c = NULL;
    struct plan plan;
    char **built_env = NULL;
    int child_end[3] = {-1, -1, -1};
    int null_fd = -1;
    int report[2] = {-1, -1};
    struct child_failure failure;
    sigset_t all;
    sigset_t old;
    ssize_t n;
    pid_t pid;
    int rc = 0;

    PD_ASSERT(out != NULL && argv != NULL && argv[0] != NULL);
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;

    c = pd_calloc(1, sizeof(*c));
    c->pid = -1;
    c->pidfd = -1;
    c->name = pd_strdup(argv[0]);
    c->mode[PD_CHILD_STDIN] = opts->stdin_mode;
    c->mode[PD_CHILD_STDOUT] = opts->stdout_mode;
    c->mode[PD_CHILD_STDERR] = opts->stderr_mode;
    c->cap[PD_CHILD_STDOUT].max = opts->stdout_max < SIZE_MAX / 4 ? opts->stdout_max : SIZE_MAX / 4;
    c->cap[PD_CHILD_STDERR].max = opts->stderr_max < SIZE_MAX / 4 ? opts->stderr_max : SIZE_MAX / 4;
    for (int s = 0; s < 3; s++)
        c->fd[s] = -1;
    modes = c->mode;

    memset(&plan, 0, sizeof(plan));
    plan.paths = candidate_paths(argv[0]);
    plan.argv = (char *const *)argv;
    if (opts->env != NULL)
        built_env = build_env(opts->env);
    plan.envp = built_env != NULL ? built_env : environ;
    plan.cwd = opts->cwd;
    plan.switch_ids = opts->uid != 0 && opts->uid != geteuid();
    plan.uid = opts->uid;
    plan.gid = opts->gid;
    plan.parent = opts->die_with_parent ? getpid() : 0;

    for (int s = 0; s < 3; s++) {
        int pfd[2];

        PD_ASSERT(modes[s] == PD_CHILD_INHERIT || modes[s] == PD_CHILD_NULL ||
                  modes[s] == PD_CHILD_PIPE || modes[s] == PD_CHILD_FILE);
        plan.stdio[s] = -1;
        if (modes[s] == PD_CHILD_FILE) {
            PD_ASSERT(opts->files[s] >= 0);
            plan.stdio[s] = opts->files[s];
        } else if (modes[s] == PD_CHILD_NULL) {
            if (null_fd < 0 && (null_fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
                rc = pd_err_sys(err, PD_EIO, "could not open \"/dev/null\" for program \"%s\"",
                                c->name);
                goto cleanup;
            }
            plan.stdio[s] = null_fd;
        } else if (modes[s] == PD_CHILD_PIPE) {
            if (pipe2(pfd, O_CLOEXEC) < 0) {
                rc = pd_err_sys(err, PD_EIO, "could not create pipe for program \"%s\"", c->name);
                goto cleanup;
            }
            // stdin: the child reads pfd[0]; stdout, stderr: it writes pfd[1].
            child_end[s] = s == PD_CHILD_STDIN ? pfd[0] : pfd[1];
            c->fd[s] = s == PD_CHILD_STDIN ? pfd[1] : pfd[0];
            plan.stdio[s] = child_end[s];
            if (s == PD_CHILD_STDIN && fcntl(c->fd[s], F_SETFL, O_NONBLOCK) < 0) {
                rc = pd_err_sys(err, PD_EIO, "could not set up pipe for program \"%s\"", c->name);
                goto cleanup;
            }
        }
    }
    if (pipe2(report, O_CLOEXEC) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not create pipe for program \"%s\"", c->name);
        goto cleanup;
    }
    plan.report_fd = report[1];

    sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        child_main(&plan);
    rc = errno;
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        errno = rc;
        rc = pd_err_sys(err, PD_EFAIL, "could not start program \"%s\"", c->name);
        goto cleanup;
    }
    rc = 0;
    c->pid = pid;
#ifdef SYS_pidfd_open
    // Not reaped yet, so the pid is still ours; ENOSYS before Linux 5.3.
    c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif

    // Only the child may hold its ends, or EOF would never come.
    close_fd(&report[1]);
    for (int s = 0; s < 3; s++)
        close_fd(&child_end[s]);
    close_fd(&null_fd);

    do
        n = read(report[0], &failure, sizeof(failure));
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        rc = pd_err_sys(err, PD_EFAIL, "could not start program \"%s\"", c->name);
        goto cleanup; // pd_child_free below kills and reaps it
    }
    if (n > 0) {
        if (n != (ssize_t)sizeof(failure)) {
            failure.step = FAIL_EXEC;
            failure.errnum = EIO;
        }
        (void)reap(c, true, NULL);
        rc = report_failure(c, &failure, opts, err);
        goto cleanup;
    }
    *out = c;
    c = NULL;
cleanup:
    close_fd(&report[0]);
    close_fd(&report[1]);
    for (int s = 0; s < 3; s++)
        close_fd(&child_end[s]);
    close_fd(&null_fd);
    free_paths(plan.paths);
    pd_free(built_env);
    pd_child_free(c);
    return rc;
}

pid_t
pd_child_pid(const pd_child *c)
{
    return c->pid;
}

int
pd_child_fd(const pd_child *c, int which)
{
    PD_ASSERT(which >= PD_CHILD_STDIN && which <= PD_CHILD_STDERR);
    return c->fd[which];
}

int
pd_child_read(pd_child *c, void *buf, size_t len, size_t *nread, pd_err *err)
{
    PD_ASSERT(c->mode[PD_CHILD_STDOUT] == PD_CHILD_PIPE && len > 0);
    *nread = 0;
    while (c->fd[PD_CHILD_STDOUT] >= 0) {
        struct pollfd pfd[2];
        nfds_t n = 1;
        ssize_t got;

        pfd[0].fd = c->fd[PD_CHILD_STDOUT];
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        if (c->fd[PD_CHILD_STDERR] >= 0) {
            pfd[1].fd = c->fd[PD_CHILD_STDERR];
            pfd[1].events = POLLIN;
            pfd[1].revents = 0;
            n = 2;
        }
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            return pd_err_sys(err, PD_EIO, "could not wait for output of program \"%s\"", c->name);
        }
        if (n == 2 && pfd[1].revents != 0) {
            int rc = drain_stream(c, PD_CHILD_STDERR, err);

            if (rc < 0)
                return rc;
        }
        if (pfd[0].revents == 0)
            continue;
        do
            got = read(c->fd[PD_CHILD_STDOUT], buf, len);
        while (got < 0 && errno == EINTR);
        if (got < 0)
            return pd_err_sys(err, PD_EIO, "could not read output of program \"%s\"", c->name);
        if (got == 0)
            close_fd(&c->fd[PD_CHILD_STDOUT]);
        *nread = (size_t)got;
        return 0;
    }
    return 0;
}

int
pd_child_write(pd_child *c, const void *buf, size_t len, pd_err *err)
{
    struct sigpipe_guard guard;
    size_t off = 0;
    bool epipe = false;
    int rc = 0;

    PD_ASSERT(c->fd[PD_CHILD_STDIN] >= 0);
    sigpipe_block(&guard);
    while (off < len) {
        struct pollfd pfd[2];
        nfds_t n = 1;

        pfd[0].fd = c->fd[PD_CHILD_STDIN];
        pfd[0].events = POLLOUT;
        pfd[0].revents = 0;
        if (c->fd[PD_CHILD_STDERR] >= 0) {
            pfd[1].fd = c->fd[PD_CHILD_STDERR];
            pfd[1].events = POLLIN;
            pfd[1].revents = 0;
            n = 2;
        }
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = pd_err_sys(err, PD_EIO, "could not wait for program \"%s\"", c->name);
            break;
        }
        if (n == 2 && pfd[1].revents != 0 && (rc = drain_stream(c, PD_CHILD_STDERR, err)) < 0)
            break;
        if (pfd[0].revents == 0)
            continue;
        if ((rc = feed_stdin(c, buf, len, &off, err)) == 1) {
            epipe = true;
            errno = EPIPE;
            rc = pd_err_sys(err, PD_EIO, "could not write to program \"%s\"", c->name);
        }
        if (rc < 0)
            break;
    }
    sigpipe_unblock(&guard, epipe);
    return rc;
}

void
pd_child_close_stdin(pd_child *c)
{
    close_fd(&c->fd[PD_CHILD_STDIN]);
}

int
pd_child_wait(pd_child *c, int *status, pd_err *err)
{
    int rc = finish(c, NULL, 0, err);

    if (rc == 0)
        *status = c->status;
    return rc;
}

void
pd_child_kill(pd_child *c, int sig)
{
    if (c->reaped || c->pid < 0)
        return;
    // EPERM cannot happen for our own child; EINVAL is a caller's bug.
    if (kill(c->pid, sig) < 0)
        PD_ASSERT(errno != EINVAL);
}

const char *
pd_child_output(const pd_child *c, int which, size_t *len, bool *truncated)
{
    PD_ASSERT(which == PD_CHILD_STDOUT || which == PD_CHILD_STDERR);
    if (len != NULL)
        *len = c->cap[which].len;
    if (truncated != NULL)
        *truncated = c->cap[which].truncated;
    return c->cap[which].buf != NULL ? c->cap[which].buf : "";
}

void
pd_child_free(pd_child *c)
{
    if (c == NULL)
        return;
    for (int s = 0; s < 3; s++)
        close_fd(&c->fd[s]);
    if (!c->reaped && c->pid > 0) {
        (void)kill(c->pid, SIGKILL);
        (void)reap(c, true, NULL);
    }
    close_fd(&c->pidfd);
    pd_free(c->cap[PD_CHILD_STDOUT].buf);
    pd_free(c->cap[PD_CHILD_STDERR].buf);
    pd_free(c->name);
    pd_free(c);
}

void
pd_child_release(pd_child *c)
{
    if (c == NULL)
        return;
    // Forget the process: pd_child_free() then neither kills nor waits.
    c->reaped = true;
    pd_child_free(c);
}

int
pd_child_run(pd_child_result *res, const char *const *argv, const pd_child_opts *opts,
             const void *input, size_t input_len, pd_err *err)
{
    pd_child_opts o = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    int rc;

    memset(res, 0, sizeof(*res));
    if (opts != NULL)
        o = *opts;
    o.stdin_mode = input != NULL ? PD_CHILD_PIPE : PD_CHILD_NULL;
    o.stdout_mode = PD_CHILD_PIPE;
    o.stderr_mode = PD_CHILD_PIPE;
    if ((rc = pd_child_start(&c, argv, &o, err)) < 0)
        goto cleanup;
    if ((rc = finish(c, input, input_len, err)) < 0)
        goto cleanup;
    res->status = c->status;
    res->stdout_data =
        capture_take(&c->cap[PD_CHILD_STDOUT], &res->stdout_len, &res->stdout_truncated);
    res->stderr_data =
        capture_take(&c->cap[PD_CHILD_STDERR], &res->stderr_len, &res->stderr_truncated);
cleanup:
    pd_child_free(c);
    return rc;
}

void
pd_child_result_free(pd_child_result *res)
{
    if (res == NULL)
        return;
    pd_free(res->stdout_data);
    pd_free(res->stderr_data);
    memset(res, 0, sizeof(*res));
}

char *
pd_child_format_status(char *buf, size_t bufsize, int status)
{
    if (WIFEXITED(status))
        snprintf(buf, bufsize, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, bufsize, "was terminated by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(buf, bufsize, "ended with unrecognized wait status %#x", (unsigned int)status);
    return buf;
}

int
pd_child_check_status(int status, const char *program, pd_err *err)
{
    char words[PD_CHILD_STATUS_MAX];

    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    return pd_err_set(err, PD_EFAIL, "program \"%s\" %s", program,
                      pd_child_format_status(words, sizeof(words), status));
}
