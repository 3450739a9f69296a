/*
 * notify-command: see notify.h. The report goes to the command's stdin from
 * a memory file and its output into another, so neither a command that never
 * reads its input nor one that writes a lot can block pgdrill; a command
 * still running at notify-timeout gets SIGTERM, then SIGKILL two seconds on.
 */
#include "common/notify.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/child.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"

#define KILL_GRACE_SECONDS 2.0
#define POLL_NANOSECONDS   (50 * 1000 * 1000)
#define OUTPUT_TAIL_MAX    512
#define ENV_VALUE_MAX      (PD_ERR_MSG_MAX + PD_ERR_HINT_MAX + 64)

/* Secrets pgdrill may hold in its environment; the command never sees them. */
static const char *const secret_env[] = {
    "PGDRILL_PASSPHRASE",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PGPASSWORD",
};

int
pd_notify_split(const char *cmd, char *buf, size_t bufsize, char *argv[PD_NOTIFY_MAX_ARGS + 1],
                pd_err *err)
{
    size_t len = strlen(cmd);
    int n = 0;

    if (len + 1 > bufsize)
        return pd_err_set(err, PD_ECONFIG, "notify-command is longer than %zu bytes", bufsize - 1);
    memcpy(buf, cmd, len + 1);
    for (char *p = buf; *p;) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (*p == '\0')
            break;
        if (n == PD_NOTIFY_MAX_ARGS) {
            pd_err_set(err, PD_ECONFIG, "notify-command has more than %d words",
                       PD_NOTIFY_MAX_ARGS);
            return pd_err_hint(err, "put the command in a script and name the script");
        }
        argv[n++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    argv[n] = NULL;
    if (n == 0)
        return pd_err_set(err, PD_ECONFIG, "notify-command is empty");
    return 0;
}

bool
pd_notify_wanted(const char *notify_on, int exit_code)
{
    if (notify_on && strcmp(notify_on, "failure") == 0)
        return exit_code != PD_EXIT_OK;
    return true;
}

/* A memory file holding text (may be NULL), rewound; -1 with err set on failure. */
static int
memfile(const char *name, const char *text, pd_err *err)
{
    size_t len = text ? strlen(text) : 0, off = 0;
    int fd = memfd_create(name, MFD_CLOEXEC);

    if (fd < 0)
        return pd_err_sys(err, PD_EIO, "could not create a memory file for notify-command"), -1;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            pd_err_sys(err, PD_EIO, "could not write the report for notify-command");
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0) {
        pd_err_sys(err, PD_EIO, "could not rewind the report for notify-command");
        close(fd);
        return -1;
    }
    return fd;
}

/* The last non-empty line of what the command wrote (for the warning), into buf. */
static void
output_tail(int fd, char *buf, size_t bufsize)
{
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > (off_t)(bufsize - 1) ? end - (off_t)(bufsize - 1) : 0;
    ssize_t n = end > 0 ? pread(fd, buf, (size_t)(end - start), start) : 0;
    char *line;

    buf[n > 0 ? n : 0] = '\0';
    for (size_t len = strlen(buf); len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r');)
        buf[--len] = '\0';
    line = strrchr(buf, '\n');
    if (line)
        memmove(buf, line + 1, strlen(line + 1) + 1);
}

/* Waits for the command until timeout seconds; kills it then. *status valid when true. */
static bool
wait_or_kill(pd_child *c, double timeout, int *status, pd_err *err)
{
    double deadline = pd_time_mono() + timeout;
    bool exited = false, killed = false;
    const struct timespec tick = {0, POLL_NANOSECONDS};

    for (;;) {
        if (pd_child_poll(c, &exited, status, err) < 0)
            return false;
        if (exited)
            return !killed;
        if (pd_time_mono() >= deadline) {
            if (killed)
                return false; /* pd_child_free() sends SIGKILL */
            pd_child_kill(c, SIGTERM);
            killed = true;
            deadline = pd_time_mono() + KILL_GRACE_SECONDS;
            pd_err_set(err, PD_EFAIL, "did not finish within %.0f s and was killed", timeout);
        }
        nanosleep(&tick, NULL);
    }
}

/* "NAME=value" into slot (value cut at ENV_VALUE_MAX), or a bare NAME to remove it. */
static const char *
env_entry(char slot[ENV_VALUE_MAX + 64], const char *name, const char *value)
{
    if (value)
        snprintf(slot, ENV_VALUE_MAX + 64, "%s=%s", name, value);
    else
        snprintf(slot, ENV_VALUE_MAX + 64, "%s", name);
    return slot;
}

static void
run(const pd_config *cfg, const pd_notify_event *ev, char *const *argv)
{
    enum {
        N_OWN = 8
    };
    char own[N_OWN][ENV_VALUE_MAX + 64], code[16], host[256] = "", tail[OUTPUT_TAIL_MAX];
    const char *env[N_OWN + PD_ARRAY_LEN(secret_env) + 1];
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_child *c = NULL;
    char *text = ev->report ? json_dumps(ev->report, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int in = -1, out = -1, status = 0;
    size_t n = 0;

    snprintf(code, sizeof(code), "%d", ev->exit_code);
    if (gethostname(host, sizeof(host) - 1) < 0)
        host[0] = '\0';
    env[n++] = env_entry(own[0], "PGDRILL_EVENT", ev->event);
    env[n++] = env_entry(own[1], "PGDRILL_RESULT", ev->exit_code == 0 ? "success" : "failure");
    env[n++] = env_entry(own[2], "PGDRILL_EXIT_CODE", code);
    env[n++] = env_entry(own[3], "PGDRILL_CLUSTER", pd_config_cluster(cfg));
    env[n++] = env_entry(own[4], "PGDRILL_BACKUP_ID", ev->backup_id);
    env[n++] = env_entry(own[5], "PGDRILL_DRILL_ID", ev->drill_id);
    env[n++] = env_entry(own[6], "PGDRILL_MESSAGE", ev->message ? ev->message : "");
    env[n++] = env_entry(own[7], "PGDRILL_HOSTNAME", host);
    for (size_t i = 0; i < PD_ARRAY_LEN(secret_env); i++)
        env[n++] = secret_env[i];
    env[n] = NULL;

    if ((in = memfile("pgdrill-notify-report", text, &err)) < 0 ||
        (out = memfile("pgdrill-notify-output", NULL, &err)) < 0)
        goto fail;
    opts.env = env;
    opts.stdin_mode = opts.stdout_mode = opts.stderr_mode = PD_CHILD_FILE;
    opts.files[PD_CHILD_STDIN] = in;
    opts.files[PD_CHILD_STDOUT] = opts.files[PD_CHILD_STDERR] = out;
    if (pd_child_start(&c, (const char *const *)argv, &opts, &err) < 0)
        goto fail;
    if (!wait_or_kill(c, (double)pd_config_get_int(cfg, "notify-timeout"), &status, &err))
        goto fail;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[PD_CHILD_STATUS_MAX];
        pd_err_set(&err, PD_EFAIL, "%s", pd_child_format_status(how, sizeof(how), status));
        goto fail;
    }
    pd_log_debug("notify-command \"%s\" ran for the %s outcome", argv[0], ev->event);
    goto done;
fail:
    tail[0] = '\0';
    if (out >= 0)
        output_tail(out, tail, sizeof(tail));
    pd_log_warning("notify-command \"%s\" failed for the %s outcome: %s%s%s; pgdrill's own "
                   "result (exit %d) stands",
                   argv[0], ev->event, err.msg, tail[0] ? ": " : "", tail, ev->exit_code);
done:
    pd_child_free(c);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    pd_free(text);
}

void
pd_notify(const pd_config *cfg, const pd_notify_event *ev)
{
    const char *cmd = pd_config_get(cfg, "notify-command");
    char *argv[PD_NOTIFY_MAX_ARGS + 1], *buf;
    pd_err err = PD_ERR_INIT;

    if (cmd == NULL || !pd_notify_wanted(pd_config_get(cfg, "notify-on"), ev->exit_code))
        return;
    buf = pd_malloc(strlen(cmd) + 1);
    if (pd_notify_split(cmd, buf, strlen(cmd) + 1, argv, &err) < 0)
        pd_log_warning("notify-command not run: %s", err.msg);
    else
        run(cfg, ev, argv);
    pd_free(buf);
}
