/* The scratch instance of a drill (see scratch.h). */
#include "drills/scratch.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/child.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "restore/fdio.h"

#define MAX_SETTINGS 64

struct pd_scratch {
    char *dir, *data, *wal, *socket, *log;
    char *postgres; /* the postgres binary */
    char *initdb;   /* and initdb, beside it */
    int port;
    uid_t uid; /* 0: run as ourselves */
    gid_t gid;
    bool netns;
    bool kept;
    int major; /* PostgreSQL major version of the binaries */
    pd_child *pm;
    int guard_fd; /* write end of the guardian's pipe */
    pid_t guard_pid;
};

/* For the signal handler: one drill per process. */
static volatile pid_t g_pm_pid = -1;
static volatile pid_t g_guard_pid = -1;
static volatile int g_guard_fd = -1;
static struct sigaction g_saved[3];
static const int g_signals[3] = {SIGINT, SIGTERM, SIGHUP};

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    (void)remove(path);
    return 0;
}

static void
remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* Gone, or a zombie nobody has reaped yet (it holds no resources then). */
static bool
process_gone(pid_t pid)
{
    char path[64], buf[256];
    int fd;
    ssize_t n;

    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return true;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] == 'Z';
}

/* Stops pid: SIGQUIT (immediate shutdown, children first), then SIGKILL after 10 s. */
static void
kill_postmaster(pid_t pid)
{
    if (pid <= 0)
        return;
    (void)kill(pid, SIGQUIT);
    for (int i = 0; i < 200 && !process_gone(pid); i++) {
        if (i == 100)
            (void)kill(pid, SIGKILL);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/*
 * The guardian: reads "P<pid>\n" (the postmaster), "K" (kept: leave all),
 * "D" (done: pgdrill cleaned up itself); on "C" or end of file (pgdrill is
 * gone) it stops the postmaster and removes dir.
 */
static void
guardian(int fd, const char *dir)
{
    pid_t pm = -1;
    char c;

    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || c == 'C')
            break;
        if (c == 'K' || c == 'D')
            _exit(0);
        if (c == 'P') {
            char num[24];
            size_t k = 0;
            while (k + 1 < sizeof(num) && read(fd, &num[k], 1) == 1 && num[k] != '\n')
                k++;
            num[k] = '\0';
            long v = strtol(num, NULL, 10);
            pm = v > 0 && v < INT32_MAX ? (pid_t)v : -1;
        }
    }
    kill_postmaster(pm);
    remove_tree(dir);
    fprintf(stderr,
            "pgdrill: info: drill interrupted: the scratch instance is stopped and %s is "
            "removed\n",
            dir);
    _exit(0);
}

static void
on_signal(int sig)
{
    int saved = errno;

    if (g_pm_pid > 0)
        (void)kill(g_pm_pid, SIGQUIT);
    if (g_guard_fd >= 0)
        (void)!write(g_guard_fd, "C", 1);
    if (g_guard_pid > 0)
        while (waitpid(g_guard_pid, NULL, 0) < 0 && errno == EINTR) {
        }
    signal(sig, SIG_DFL);
    errno = saved;
    raise(sig);
}

static int
free_port(int *port, pd_err *err)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int rc = pd_err_sys(err, PD_EFAIL, "could not find a free port for the drill instance");
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    *port = ntohs(a.sin_port);
    return 0;
}

static int
write_file(const char *path, const char *text, pd_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    size_t len = strlen(text);

    if (fd < 0)
        return pd_err_sys(err, PD_EIO, "could not create \"%s\"", path);
    int rc = pd_fdio_write_all(fd, text, len, path, err);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return close(fd) < 0 ? pd_err_sys(err, PD_EIO, "could not write \"%s\"", path) : 0;
}

int
pd_scratch_create(pd_scratch **out, const pd_scratch_opts *o, pd_err *err)
{
    pd_scratch *s = pd_calloc(1, sizeof(*s));
    const char *parent = o->parent;
    char *path = NULL;
    int pfd[2];
    int rc;

    *out = NULL;
    s->guard_fd = -1;
    s->guard_pid = -1;
    if (o->user) {
        struct passwd *pw = getpwnam(o->user);
        if (pw == NULL) {
            rc = pd_err_set(err, PD_ECONFIG, "drill-user \"%s\" does not exist", o->user);
            pd_err_hint(err, "create an unprivileged user for drills, or name another one");
            goto fail;
        }
        if (pw->pw_uid == 0) {
            rc = pd_err_set(err, PD_ECONFIG,
                            "drill-user \"%s\" is root: PostgreSQL refuses to run "
                            "as root",
                            o->user);
            pd_err_hint(err, "name a dedicated unprivileged user, e.g. drill-user = pgdrill-drill");
            goto fail;
        }
        s->uid = pw->pw_uid;
        s->gid = pw->pw_gid;
        // The restored instance runs arbitrary SQL as superuser: it must not
        // be able to read the key or write the repository.
        for (int i = 0; i < 2; i++) {
            struct stat st;
            const char *p = o->protect[i];
            if (p != NULL && stat(p, &st) == 0 && st.st_uid == s->uid) {
                rc = pd_err_set(err, PD_ECONFIG,
                                "drill-user \"%s\" owns \"%s\": the drill instance could read "
                                "the repository's key or change the repository",
                                o->user, p);
                pd_err_hint(err, "make a dedicated unprivileged user for drills, e.g. useradd "
                                 "--system pgdrill-drill, and set drill-user to it");
                goto fail;
            }
        }
    }
    s->netns = geteuid() == 0;
    s->major = o->major;
    if (parent == NULL)
        parent = getenv("TMPDIR") && getenv("TMPDIR")[0] == '/' ? getenv("TMPDIR") : "/var/tmp";
    if (strchr(parent, '\'')) {
        rc = pd_err_set(err, PD_ECONFIG, "drill-dir \"%s\" contains a quote", parent);
        goto fail;
    }
    // The socket's path must fit sockaddr_un (107 bytes): keep names short.
    if (strlen(parent) + sizeof("/pgdrill-drill-XXXXXX/run/.s.PGSQL.65535") > 107) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "drill-dir \"%s\" is too long a path for the drill instance's Unix "
                        "socket",
                        parent);
        pd_err_hint(err, "use a drill-dir of at most 66 characters");
        goto fail;
    }
    s->dir = pd_asprintf("%s/pgdrill-drill-XXXXXX", parent);
    if (mkdtemp(s->dir) == NULL) {
        rc = pd_err_sys(err, errno == ENOENT ? PD_ECONFIG : PD_EIO,
                        "could not create a scratch directory in \"%s\"", parent);
        pd_err_hint(err, "set drill-dir to an existing directory with room for a restore");
        pd_free(s->dir);
        s->dir = NULL;
        goto fail;
    }
    s->data = pd_asprintf("%s/data", s->dir);
    s->wal = pd_asprintf("%s/wal", s->dir);
    s->socket = pd_asprintf("%s/run", s->dir);
    s->log = pd_asprintf("%s/postgres.log", s->dir);
    s->postgres = pd_asprintf("%s/postgres", o->pg_bin);
    s->initdb = pd_asprintf("%s/initdb", o->pg_bin);

    // The guardian first: from here on the directory never outlives us.
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        rc = pd_err_sys(err, PD_EFAIL, "could not create a pipe for the drill guardian");
        remove_tree(s->dir);
        goto fail;
    }
    fflush(NULL);
    s->guard_pid = fork();
    if (s->guard_pid < 0) {
        rc = pd_err_sys(err, PD_EFAIL, "could not start the drill guardian");
        close(pfd[0]);
        close(pfd[1]);
        remove_tree(s->dir);
        goto fail;
    }
    if (s->guard_pid == 0) {
        // Hold nothing of pgdrill's (locks, files) but the pipe.
        close(pfd[1]);
        if (pfd[0] != 3 && dup2(pfd[0], 3) < 0)
            _exit(1);
        close_range(4, ~0U, 0);
        guardian(3, s->dir);
    }
    close(pfd[0]);
    s->guard_fd = pfd[1];
    g_guard_fd = s->guard_fd;
    g_guard_pid = s->guard_pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++) {
        sigaction(g_signals[i], NULL, &g_saved[i]);
        // A signal ignored by whoever started us (nohup) stays ignored.
        if (g_saved[i].sa_handler != SIG_IGN)
            sigaction(g_signals[i], &sa, NULL);
    }

    if (mkdir(s->wal, 0700) < 0 || mkdir(s->socket, 0700) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not create directories in \"%s\"", s->dir);
        goto fail;
    }
    path = pd_asprintf("%s/pg_hba.conf", s->dir);
    // The socket directory is 0700: only the drill user (and root) can reach it.
    if ((rc = write_file(path,
                         "# pgdrill drill instance: Unix socket only, in a 0700 directory\n"
                         "local all all trust\n",
                         err)) < 0)
        goto fail;
    pd_free(path);
    path = pd_asprintf("%s/pg_ident.conf", s->dir);
    if ((rc = write_file(path, "", err)) < 0)
        goto fail;
    if ((rc = free_port(&s->port, err)) < 0)
        goto fail;
    pd_free(path);
    *out = s;
    return 0;
fail:
    pd_free(path);
    pd_scratch_free(s);
    return rc;
}

const char *
pd_scratch_dir(const pd_scratch *s)
{
    return s->dir;
}

const char *
pd_scratch_data(const pd_scratch *s)
{
    return s->data;
}

const char *
pd_scratch_wal(const pd_scratch *s)
{
    return s->wal;
}

const char *
pd_scratch_socket(const pd_scratch *s)
{
    return s->socket;
}

const char *
pd_scratch_log(const pd_scratch *s)
{
    return s->log;
}

int
pd_scratch_port(const pd_scratch *s)
{
    return s->port;
}

bool
pd_scratch_netns(const pd_scratch *s)
{
    return s->netns;
}

static uid_t g_chown_uid;
static gid_t g_chown_gid;
static int g_chown_errno;

static int
chown_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (lchown(path, g_chown_uid, g_chown_gid) < 0 && g_chown_errno == 0)
        g_chown_errno = errno;
    return 0;
}

int
pd_scratch_hand_over(pd_scratch *s, pd_err *err)
{
    if (s->uid == 0)
        return 0;
    g_chown_uid = s->uid;
    g_chown_gid = s->gid;
    g_chown_errno = 0;
    nftw(s->dir, chown_entry, 32, FTW_PHYS);
    if (g_chown_errno != 0) {
        errno = g_chown_errno;
        return pd_err_sys(err, PD_EIO, "could not give \"%s\" to the drill user", s->dir);
    }
    return 0;
}

int
pd_scratch_initdb(pd_scratch *s, const char *superuser, pd_err *err)
{
    char *user = pd_asprintf("--username=%s", superuser);
    const char *argv[] = {s->initdb,    "-D",           s->data,
                          user,         "--auth=trust", "--encoding=UTF8",
                          "--locale=C", "--no-sync",    "--no-instructions",
                          NULL};
    pd_child_opts co = PD_CHILD_OPTS_INIT;
    pd_child_result res;
    char how[PD_CHILD_STATUS_MAX];
    int rc;

    memset(&res, 0, sizeof(res));
    co.cwd = s->dir;
    co.uid = s->uid;
    co.gid = s->gid;
    if ((rc = pd_child_run(&res, argv, &co, NULL, 0, err)) < 0) {
        pd_err_hint(err, "check pg-bin");
    } else if (res.status != 0) {
        char *nl = strchr(res.stderr_data, '\n');
        if (nl)
            *nl = '\0';
        rc = pd_err_set(err, PD_EFAIL, "initdb for the drill instance %s: %s",
                        pd_child_format_status(how, sizeof(how), res.status), res.stderr_data);
    }
    pd_child_result_free(&res);
    pd_free(user);
    return rc;
}

int
pd_scratch_start(pd_scratch *s, const char *const *settings, pd_err *err)
{
    // Every isolation setting, after which nothing in the restored
    // configuration files counts: the command line overrides both.
    char port[32], uid[32], gid[32];
    char *owned[MAX_SETTINGS];
    const char *argv[2 * MAX_SETTINGS + 16];
    int n = 0, no = 0, fd, rc;

    snprintf(port, sizeof(port), "port=%d", s->port);
    const char *fixed[] = {
        "listen_addresses=",
        port,
        "unix_socket_permissions=0700",
        "unix_socket_group=",
        "archive_mode=off",
        "archive_command=",

        "archive_cleanup_command=",
        "recovery_end_command=",
        "primary_conninfo=",
        "primary_slot_name=",

        "recovery_min_apply_delay=0",
        "shared_preload_libraries=",
        "session_preload_libraries=",
        "local_preload_libraries=",
        "max_logical_replication_workers=0",
        "max_sync_workers_per_subscription=0",
        "synchronous_standby_names=",
        "ssl=off",
        "ssl_passphrase_command=",
        "logging_collector=off",
        "log_destination=stderr",
        "huge_pages=try",
        "restart_after_crash=off",
        "external_pid_file=",
        "hot_standby=on",
        "cluster_name=pgdrill-drill",
        NULL,
    };
    owned[no++] = pd_asprintf("unix_socket_directories=%s", s->socket);
    owned[no++] = pd_asprintf("hba_file=%s/pg_hba.conf", s->dir);
    owned[no++] = pd_asprintf("ident_file=%s/pg_ident.conf", s->dir);
    owned[no++] = pd_asprintf("data_directory=%s", s->data);
    // Settings that exist in some major versions only (postgres refuses unknown ones).
    if (s->major >= 15)
        owned[no++] = pd_strdup("archive_library=");
    if (s->major <= 15)
        owned[no++] = pd_strdup("promote_trigger_file=");

    if (s->netns) {
        // Its own network namespace: no extension can reach any host.
        snprintf(uid, sizeof(uid), "--reuid=%u", (unsigned)s->uid);
        snprintf(gid, sizeof(gid), "--regid=%u", (unsigned)s->gid);
        argv[n++] = "unshare";
        argv[n++] = "--net";
        argv[n++] = "--";
        argv[n++] = "setpriv";
        argv[n++] = uid;
        argv[n++] = gid;
        argv[n++] = "--clear-groups";
        argv[n++] = "--";
    }
    argv[n++] = s->postgres;
    argv[n++] = "-D";
    argv[n++] = s->data;
    for (int i = 0; fixed[i]; i++) {
        argv[n++] = "-c";
        argv[n++] = fixed[i];
    }
    for (int i = 0; i < no; i++) {
        argv[n++] = "-c";
        argv[n++] = owned[i];
    }
    for (int i = 0; settings && settings[i] && n < (int)PD_ARRAY_LEN(argv) - 3; i++) {
        argv[n++] = "-c";
        argv[n++] = settings[i];
    }
    argv[n] = NULL;

    fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not create \"%s\"", s->log);
        goto cleanup;
    }
    if (s->uid != 0 && fchown(fd, s->uid, s->gid) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not give \"%s\" to the drill user", s->log);
        goto cleanup;
    }
    pd_child_opts co = PD_CHILD_OPTS_INIT;
    co.stdin_mode = PD_CHILD_NULL;
    co.stdout_mode = PD_CHILD_FILE;
    co.stderr_mode = PD_CHILD_FILE;
    co.files[1] = co.files[2] = fd;
    co.cwd = s->dir;
    if (!s->netns) {
        co.uid = s->uid;
        co.gid = s->gid;
    }
    if ((rc = pd_child_start(&s->pm, argv, &co, err)) < 0) {
        pd_err_hint(err, "check pg-bin");
        goto cleanup;
    }
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "P%d\n", (int)pd_child_pid(s->pm));
    g_pm_pid = pd_child_pid(s->pm);
    if (write(s->guard_fd, msg, (size_t)len) != len)
        pd_log_warning("could not tell the drill guardian about the instance: %s", strerror(errno));
    pd_log_debug("started the drill instance (pid %d) on socket %s port %d%s",
                 (int)pd_child_pid(s->pm), s->socket, s->port,
                 s->netns ? " in its own network namespace" : "");
cleanup:
    if (fd >= 0)
        close(fd);
    for (int i = 0; i < no; i++)
        pd_free(owned[i]);
    return rc;
}

void
pd_scratch_log_tail(const pd_scratch *s, char *buf, size_t bufsize)
{
    FILE *f = fopen(s->log, "re");
    char line[1024];

    buf[0] = '\0';
    if (f == NULL)
        return;
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        bool bad = strstr(line, "FATAL:") || strstr(line, "PANIC:");
        if (line[0] && (bad || !found)) {
            snprintf(buf, bufsize, "%s", line);
            found |= bad;
        }
    }
    fclose(f);
}

int
pd_scratch_alive(pd_scratch *s, pd_err *err)
{
    bool exited = false;
    int status = 0;
    char how[PD_CHILD_STATUS_MAX], tail[512];

    if (s->pm == NULL)
        return pd_err_set(err, PD_ECHECK, "the drill instance is not running");
    if (pd_child_poll(s->pm, &exited, &status, err) < 0)
        return PD_EFAIL;
    if (!exited)
        return 0;
    g_pm_pid = -1;
    pd_scratch_log_tail(s, tail, sizeof(tail));
    return pd_err_set(err, PD_ECHECK, "the drill instance %s%s%s",
                      pd_child_format_status(how, sizeof(how), status), tail[0] ? ": " : "", tail);
}

void
pd_scratch_stop(pd_scratch *s)
{
    bool exited = false;
    int status;
    pd_err ignore = PD_ERR_INIT;

    if (s->pm == NULL)
        return;
    pd_child_kill(s->pm, SIGINT); // fast shutdown
    for (int i = 0; i < 1200; i++) {
        if (pd_child_poll(s->pm, &exited, &status, &ignore) < 0 || exited)
            break;
        if (i == 600) {
            pd_log_warning("the drill instance did not stop in 60 s: immediate shutdown");
            pd_child_kill(s->pm, SIGQUIT);
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pd_child_free(s->pm); // SIGKILL if still there
    s->pm = NULL;
    g_pm_pid = -1;
}

void
pd_scratch_keep(pd_scratch *s)
{
    s->kept = true;
}

void
pd_scratch_free(pd_scratch *s)
{
    if (s == NULL)
        return;
    if (s->kept) {
        pd_child_release(s->pm);
    } else {
        pd_scratch_stop(s);
        if (s->dir)
            remove_tree(s->dir);
    }
    if (s->guard_pid > 0)
        for (int i = 0; i < 3; i++)
            sigaction(g_signals[i], &g_saved[i], NULL);
    if (s->guard_fd >= 0) {
        g_guard_fd = -1;
        (void)!write(s->guard_fd, s->kept ? "K" : "D", 1);
        close(s->guard_fd);
    }
    if (s->guard_pid > 0) {
        while (waitpid(s->guard_pid, NULL, 0) < 0 && errno == EINTR) {
        }
        g_guard_pid = -1;
    }
    g_pm_pid = -1;
    pd_free(s->dir);
    pd_free(s->data);
    pd_free(s->wal);
    pd_free(s->socket);
    pd_free(s->log);
    pd_free(s->postgres);
    pd_free(s->initdb);
    pd_free(s);
}
