/*
 * Tests of common/child: real children (/bin/echo, /bin/cat, /bin/sh -c as
 * the program under test, never as pgdrill's way to run one). The large
 * cases would deadlock a child runner that serviced its pipes one at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/child.h"
#include "common/mem.h"

#define BIG (4 * 1024 * 1024)

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Runs argv with opts and input, asserting that the run itself succeeds. */
static void
run_ok(pd_child_result *res, const char *const *argv, const pd_child_opts *opts, const void *input,
       size_t input_len)
{
    pd_err err = PD_ERR_INIT;
    int rc = pd_child_run(res, argv, opts, input, input_len, &err);

    if (rc != 0)
        fail_msg("pd_child_run: %s", err.msg);
}

static bool
all_bytes(const char *buf, size_t len, char c)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != c)
            return false;
    return true;
}

static char *
pattern(size_t len)
{
    char *buf = pd_malloc(len);

    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    return buf;
}

static size_t
read_whole_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    ssize_t n;

    assert_true(fd >= 0);
    while (len < size && (n = read(fd, buf + len, size - len)) > 0)
        len += (size_t)n;
    close(fd);
    return len;
}

static void
test_child_run_captures_stdout(void **state)
{
    pd_child_result res = {0};

    (void)state;
    run_ok(&res, ARGV("/bin/echo", "hello", "world"), NULL, NULL, 0);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.stdout_data, "hello world\n");
    assert_int_equal(res.stdout_len, 12);
    assert_false(res.stdout_truncated);
    assert_string_equal(res.stderr_data, "");
    assert_int_equal(res.stderr_len, 0);
    pd_child_result_free(&res);
    assert_null(res.stdout_data);
    pd_child_result_free(NULL);
}

static void
test_child_run_feeds_large_stdin_through_cat(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};
    char *input = pattern(BIG);

    (void)state;
    opts.stdout_max = BIG;
    run_ok(&res, ARGV("/bin/cat"), &opts, input, BIG);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.stdout_len, BIG);
    assert_false(res.stdout_truncated);
    assert_memory_equal(res.stdout_data, input, BIG);
    pd_child_result_free(&res);
    pd_free(input);
}

static void
test_child_run_captures_large_stdout_and_stderr(void **state)
{
    static const char *const scripts[] = {
        // stderr first: a runner reading stdout to EOF first would hang
        "head -c 4194304 /dev/zero | tr '\\0' e >&2; head -c 4194304 /dev/zero | tr '\\0' o",
        // stdout first: the other way round
        "head -c 4194304 /dev/zero | tr '\\0' o; head -c 4194304 /dev/zero | tr '\\0' e >&2",
    };
    pd_child_opts opts = PD_CHILD_OPTS_INIT;

    (void)state;
    opts.stdout_max = BIG;
    opts.stderr_max = BIG;
    for (size_t i = 0; i < PD_ARRAY_LEN(scripts); i++) {
        pd_child_result res = {0};

        run_ok(&res, ARGV("/bin/sh", "-c", scripts[i]), &opts, NULL, 0);
        assert_int_equal(res.status, 0);
        assert_int_equal(res.stdout_len, BIG);
        assert_int_equal(res.stderr_len, BIG);
        assert_true(all_bytes(res.stdout_data, BIG, 'o'));
        assert_true(all_bytes(res.stderr_data, BIG, 'e'));
        assert_false(res.stdout_truncated);
        assert_false(res.stderr_truncated);
        pd_child_result_free(&res);
    }
}

static void
test_child_run_feeds_stdin_while_both_outputs_are_large(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};
    char *input = pattern(BIG);

    (void)state;
    opts.stdout_max = BIG;
    opts.stderr_max = BIG;
    // Input echoed to stderr as it arrives: writing all input before
    // reading anything would hang.
    run_ok(&res, ARGV("/bin/sh", "-c", "cat >&2; head -c 4194304 /dev/zero | tr '\\0' o"), &opts,
           input, BIG);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.stderr_len, BIG);
    assert_memory_equal(res.stderr_data, input, BIG);
    assert_int_equal(res.stdout_len, BIG);
    assert_true(all_bytes(res.stdout_data, BIG, 'o'));
    pd_child_result_free(&res);
    pd_free(input);
}

static void
test_child_run_caps_output(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};

    (void)state;
    opts.stdout_max = 1000;
    opts.stderr_max = 0;
    run_ok(&res,
           ARGV("/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' o; echo oops >&2; exit 4"),
           &opts, NULL, 0);
    // The excess was read and discarded, not left to block the child.
    assert_true(WIFEXITED(res.status));
    assert_int_equal(WEXITSTATUS(res.status), 4);
    assert_int_equal(res.stdout_len, 1000);
    assert_true(res.stdout_truncated);
    assert_true(all_bytes(res.stdout_data, 1000, 'o'));
    assert_int_equal(res.stdout_data[1000], '\0');
    assert_int_equal(res.stderr_len, 0);
    assert_true(res.stderr_truncated);
    assert_string_equal(res.stderr_data, "");
    pd_child_result_free(&res);

    // Exactly the cap is not truncated.
    opts.stdout_max = 6;
    run_ok(&res, ARGV("/bin/echo", "hello"), &opts, NULL, 0);
    assert_string_equal(res.stdout_data, "hello\n");
    assert_false(res.stdout_truncated);
    pd_child_result_free(&res);
}

static void
test_child_run_drops_input_the_child_does_not_read(void **state)
{
    pd_child_result res = {0};
    char *input = pattern(BIG);

    (void)state;
    run_ok(&res, ARGV("/bin/true"), NULL, input, BIG);
    assert_int_equal(res.status, 0);
    pd_child_result_free(&res);
    pd_free(input);
}

static void
test_child_status_words_for_exit(void **state)
{
    pd_child_result res = {0};
    pd_err err = PD_ERR_INIT;
    char words[PD_CHILD_STATUS_MAX];

    (void)state;
    run_ok(&res, ARGV("/bin/sh", "-c", "exit 3"), NULL, NULL, 0);
    assert_string_equal(pd_child_format_status(words, sizeof(words), res.status),
                        "exited with status 3");
    assert_int_equal(pd_child_check_status(res.status, "/bin/sh", &err), PD_EFAIL);
    assert_string_equal(err.msg, "program \"/bin/sh\" exited with status 3");
    pd_child_result_free(&res);

    assert_string_equal(pd_child_format_status(words, sizeof(words), 0), "exited with status 0");
    assert_int_equal(pd_child_check_status(0, "/bin/sh", &err), 0);
}

static void
test_child_status_words_for_signal(void **state)
{
    pd_child_result res = {0};
    pd_err err = PD_ERR_INIT;
    char words[PD_CHILD_STATUS_MAX];

    (void)state;
    run_ok(&res, ARGV("/bin/sh", "-c", "kill -9 $$"), NULL, NULL, 0);
    assert_string_equal(pd_child_format_status(words, sizeof(words), res.status),
                        "was terminated by signal 9 (Killed)");
    assert_int_equal(pd_child_check_status(res.status, "pg_dump", &err), PD_EFAIL);
    assert_string_equal(err.msg, "program \"pg_dump\" was terminated by signal 9 (Killed)");
    pd_child_result_free(&res);

    // SIGABRT with a core dump, and a status no wait of ours returns (stopped).
    assert_string_equal(pd_child_format_status(words, sizeof(words), SIGABRT | 0x80),
                        "was terminated by signal 6 (Aborted) (core dumped)");
    assert_string_equal(pd_child_format_status(words, sizeof(words), 0x137f),
                        "ended with unrecognized wait status 0x137f");
}

static void
test_child_start_program_not_found(void **state)
{
    pd_child *c = (pd_child *)&c; // must be reset to NULL
    pd_child_result res = {0};
    pd_err err = PD_ERR_INIT;

    (void)state;
    assert_int_equal(pd_child_start(&c, ARGV("/nonexistent/pg_basebackup"), NULL, &err), PD_EFAIL);
    assert_null(c);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_string_equal(err.msg,
                        "could not run program \"/nonexistent/pg_basebackup\": no such file or "
                        "directory");

    // Searched in PATH.
    pd_err_clear(&err);
    assert_int_equal(pd_child_run(&res, ARGV("pgdrill-no-such-program", "x"), NULL, NULL, 0, &err),
                     PD_EFAIL);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_string_equal(err.msg,
                        "could not run program \"pgdrill-no-such-program\": no such file or "
                        "directory");
    assert_null(res.stdout_data);
    pd_child_result_free(&res);
}

static void
test_child_start_program_found_in_path(void **state)
{
    pd_child_result res = {0};

    (void)state;
    run_ok(&res, ARGV("echo", "from", "path"), NULL, NULL, 0);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.stdout_data, "from path\n");
    pd_child_result_free(&res);
}

static void
test_child_start_program_not_executable(void **state)
{
    char path[] = "/tmp/pgdrill-test-child-XXXXXX";
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char expect[256];
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(pd_child_start(&c, ARGV(path), NULL, &err), PD_EFAIL);
    assert_null(c);
    assert_int_equal(err.sys_errno, EACCES);
    snprintf(expect, sizeof(expect), "could not run program \"%s\": permission denied", path);
    assert_string_equal(err.msg, expect);
    unlink(path);
}

static void
test_child_env_reaches_child_not_argv(void **state)
{
    static const char secret[] = "s3cr3t-passphrase";
    const char *const env[] = {"PGDRILL_TEST_SECRET=s3cr3t-passphrase", NULL};
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char line[64];
    char proc[64];
    char buf[65536];
    size_t len = 0;
    size_t n;
    int status;

    (void)state;
    opts.env = env;
    opts.stdin_mode = PD_CHILD_PIPE;
    opts.stdout_mode = PD_CHILD_PIPE;
    assert_int_equal(pd_child_start(&c,
                                    ARGV("/bin/sh", "-c",
                                         "printf '%s\\n' \"$PGDRILL_TEST_SECRET\"; read line || :"),
                                    &opts, &err),
                     0);
    // The child has the secret in its environment...
    while (len == 0 || line[len - 1] != '\n') {
        assert_int_equal(pd_child_read(c, line + len, sizeof(line) - 1 - len, &n, &err), 0);
        assert_true(n > 0);
        len += n;
    }
    line[len] = '\0';
    assert_string_equal(line, "s3cr3t-passphrase\n");
    // ...and not in its command line, which any user can read.
    snprintf(proc, sizeof(proc), "/proc/%d/cmdline", (int)pd_child_pid(c));
    len = read_whole_file(proc, buf, sizeof(buf));
    assert_true(len > 0);
    assert_null(memmem(buf, len, secret, strlen(secret)));
    pd_child_close_stdin(c);
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_int_equal(status, 0);
    pd_child_free(c);
}

static bool
has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; *p != '\0'; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : "")
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static void
test_child_env_sets_overrides_and_removes(void **state)
{
    const char *const env[] = {"PGDRILL_TEST_OVERRIDE=first", "PGDRILL_TEST_UNSET",
                               "PGDRILL_TEST_NEW=new", "PGDRILL_TEST_OVERRIDE=last", NULL};
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};

    (void)state;
    setenv("PGDRILL_TEST_KEEP", "kept", 1);
    setenv("PGDRILL_TEST_UNSET", "gone", 1);
    setenv("PGDRILL_TEST_OVERRIDE", "old", 1);
    opts.env = env;
    opts.stdout_max = 1024 * 1024;
    run_ok(&res, ARGV("/usr/bin/env"), &opts, NULL, 0);
    assert_int_equal(res.status, 0);
    assert_false(res.stdout_truncated);
    assert_true(has_line(res.stdout_data, "PGDRILL_TEST_KEEP=kept"));
    assert_true(has_line(res.stdout_data, "PGDRILL_TEST_NEW=new"));
    assert_true(has_line(res.stdout_data, "PGDRILL_TEST_OVERRIDE=last"));
    assert_false(has_line(res.stdout_data, "PGDRILL_TEST_OVERRIDE=first"));
    assert_false(has_line(res.stdout_data, "PGDRILL_TEST_OVERRIDE=old"));
    assert_null(strstr(res.stdout_data, "PGDRILL_TEST_UNSET"));
    pd_child_result_free(&res);
    // pgdrill's own environment is untouched.
    assert_string_equal(getenv("PGDRILL_TEST_OVERRIDE"), "old");
    assert_string_equal(getenv("PGDRILL_TEST_UNSET"), "gone");
    unsetenv("PGDRILL_TEST_KEEP");
    unsetenv("PGDRILL_TEST_UNSET");
    unsetenv("PGDRILL_TEST_OVERRIDE");
}

static void
test_child_cwd(void **state)
{
    char dir[] = "/tmp/pgdrill-test-child-XXXXXX";
    char real[PATH_MAX + 1];
    char expect[PATH_MAX + 64];
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};
    pd_err err = PD_ERR_INIT;

    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_non_null(realpath(dir, real));
    opts.cwd = dir;
    run_ok(&res, ARGV("/bin/pwd"), &opts, NULL, 0);
    snprintf(expect, sizeof(expect), "%s\n", real);
    assert_string_equal(res.stdout_data, expect);
    pd_child_result_free(&res);
    assert_int_equal(rmdir(dir), 0);

    // The directory is gone now.
    assert_int_equal(pd_child_run(&res, ARGV("/bin/pwd"), &opts, NULL, 0, &err), PD_EFAIL);
    assert_int_equal(err.sys_errno, ENOENT);
    snprintf(expect, sizeof(expect),
             "could not change to directory \"%s\" for program \"/bin/pwd\": no such file or "
             "directory",
             dir);
    assert_string_equal(err.msg, expect);
}

static void
test_child_switches_user(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};
    pd_err err = PD_ERR_INIT;

    (void)state;
    opts.uid = 65534;
    opts.gid = 65534;
    if (geteuid() != 0) {
        assert_int_equal(pd_child_run(&res, ARGV("/usr/bin/id"), &opts, NULL, 0, &err), PD_EFAIL);
        assert_int_equal(err.sys_errno, EPERM);
        assert_string_equal(err.msg, "could not switch program \"/usr/bin/id\" to user id 65534 "
                                     "and group id 65534: operation not permitted");
        return;
    }
    // As root: real and effective ids change, supplementary groups go.
    run_ok(&res, ARGV("/bin/sh", "-c", "id -u; id -ru; id -g; id -G"), &opts, NULL, 0);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.stdout_data, "65534\n65534\n65534\n65534\n");
    pd_child_result_free(&res);
}

static void
test_child_free_kills_and_reaps_running_child(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    pid_t pid;

    (void)state;
    opts.stdin_mode = PD_CHILD_PIPE;
    opts.stdout_mode = PD_CHILD_PIPE;
    assert_int_equal(pd_child_start(&c, ARGV("/bin/sleep", "100"), &opts, &err), 0);
    pid = pd_child_pid(c);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, 0), 0);
    pd_child_free(c);
    // Neither running nor a zombie: the pid is gone altogether.
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    pd_child_free(NULL);
}

static void
test_child_kill_then_wait(void **state)
{
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char words[PD_CHILD_STATUS_MAX];
    int status = 0;

    (void)state;
    assert_int_equal(pd_child_start(&c, ARGV("/bin/sleep", "100"), NULL, &err), 0);
    pd_child_kill(c, SIGTERM);
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_string_equal(pd_child_format_status(words, sizeof(words), status),
                        "was terminated by signal 15 (Terminated)");
    // Reaped: waiting again gives the same status; signalling is a no-op.
    status = 0;
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    pd_child_kill(c, SIGKILL);
    pd_child_free(c);
}

static void
test_child_read_streams_stdout_while_draining_stderr(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char buf[8192];
    size_t total = 0;
    size_t n;
    size_t errlen;
    bool truncated;
    const char *errout;
    int status;

    (void)state;
    opts.stdout_mode = PD_CHILD_PIPE;
    opts.stderr_mode = PD_CHILD_PIPE;
    opts.stderr_max = 100;
    // 1 MiB of stderr before any stdout: the reader must drain it.
    assert_int_equal(pd_child_start(&c,
                                    ARGV("/bin/sh", "-c",
                                         "head -c 1048576 /dev/zero | tr '\\0' e >&2; "
                                         "head -c 4194304 /dev/zero | tr '\\0' o"),
                                    &opts, &err),
                     0);
    assert_true(pd_child_fd(c, PD_CHILD_STDOUT) >= 0);
    assert_true(pd_child_fd(c, PD_CHILD_STDERR) >= 0);
    assert_int_equal(pd_child_fd(c, PD_CHILD_STDIN), -1);
    do {
        assert_int_equal(pd_child_read(c, buf, sizeof(buf), &n, &err), 0);
        assert_true(all_bytes(buf, n, 'o'));
        total += n;
    } while (n > 0);
    assert_int_equal(total, BIG);
    assert_int_equal(pd_child_fd(c, PD_CHILD_STDOUT), -1);
    // At EOF reads keep returning 0.
    assert_int_equal(pd_child_read(c, buf, sizeof(buf), &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_int_equal(status, 0);
    errout = pd_child_output(c, PD_CHILD_STDERR, &errlen, &truncated);
    assert_int_equal(errlen, 100);
    assert_true(truncated);
    assert_true(all_bytes(errout, 100, 'e'));
    assert_int_equal(pd_child_fd(c, PD_CHILD_STDERR), -1);
    pd_child_free(c);
}

static void
test_child_write_feeds_stdin_while_draining_stderr(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char *input = pattern(BIG);
    size_t errlen;
    bool truncated;
    const char *errout;
    int status;

    (void)state;
    opts.stdin_mode = PD_CHILD_PIPE;
    opts.stderr_mode = PD_CHILD_PIPE;
    opts.stderr_max = 1000;
    // The child copies stdin to stderr: undrained, it would stall the writer.
    assert_int_equal(pd_child_start(&c, ARGV("/bin/sh", "-c", "cat >&2"), &opts, &err), 0);
    for (size_t off = 0; off < BIG; off += 100000) {
        size_t len = BIG - off < 100000 ? BIG - off : 100000;

        assert_int_equal(pd_child_write(c, input + off, len, &err), 0);
    }
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_int_equal(status, 0);
    errout = pd_child_output(c, PD_CHILD_STDERR, &errlen, &truncated);
    assert_int_equal(errlen, 1000);
    assert_true(truncated);
    assert_memory_equal(errout, input, 1000);
    pd_child_free(c);
    pd_free(input);
}

static void
test_child_wait_captures_stdout_and_closes_stdin(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    size_t len;
    bool truncated;
    int status;

    (void)state;
    opts.stdin_mode = PD_CHILD_PIPE;
    opts.stdout_mode = PD_CHILD_PIPE;
    assert_int_equal(pd_child_start(&c, ARGV("/bin/cat"), &opts, &err), 0);
    assert_int_equal(pd_child_write(c, "hello", 5, &err), 0);
    // cat exits only once stdin is closed, which wait does.
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_int_equal(status, 0);
    assert_string_equal(pd_child_output(c, PD_CHILD_STDOUT, &len, &truncated), "hello");
    assert_int_equal(len, 5);
    assert_false(truncated);
    pd_child_free(c);
}

static void
test_child_write_broken_pipe_does_not_kill_parent(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char *input = pattern(BIG);
    sigset_t pending;
    sigset_t mask;
    int status;

    (void)state;
    // SIGPIPE's default action would end this test program.
    signal(SIGPIPE, SIG_DFL);
    opts.stdin_mode = PD_CHILD_PIPE;
    assert_int_equal(pd_child_start(&c, ARGV("/bin/true"), &opts, &err), 0);
    assert_int_equal(pd_child_write(c, input, BIG, &err), PD_EIO);
    assert_int_equal(err.sys_errno, EPIPE);
    assert_string_equal(err.msg, "could not write to program \"/bin/true\": broken pipe");
    // The SIGPIPE was consumed and the mask restored.
    sigemptyset(&pending);
    assert_int_equal(sigpending(&pending), 0);
    assert_int_equal(sigismember(&pending, SIGPIPE), 0);
    assert_int_equal(sigprocmask(SIG_BLOCK, NULL, &mask), 0);
    assert_int_equal(sigismember(&mask, SIGPIPE), 0);
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_int_equal(status, 0);
    pd_child_free(c);
    pd_free(input);
}

static void
test_child_closes_inherited_fds(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};
    int leak = open("/dev/null", O_RDONLY); // deliberately not close-on-exec
    int high = fcntl(leak, F_DUPFD, 100);

    (void)state;
    assert_true(leak >= 3 && high >= 100);
    opts.stdout_max = 4096;
    // ls lists its own descriptors: 0-2 and the one it reads the list from.
    run_ok(&res, ARGV("/bin/ls", "-1", "/proc/self/fd"), &opts, NULL, 0);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.stdout_data, "0\n1\n2\n3\n");
    pd_child_result_free(&res);
    close(leak);
    close(high);
}

static void
test_child_resets_signal_dispositions_and_mask(void **state)
{
    pd_child_result res = {0};
    sigset_t usr1;
    sigset_t old;

    (void)state;
    signal(SIGTERM, SIG_IGN);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);

    // Inherited, these would let the shell survive and print "alive".
    run_ok(&res, ARGV("/bin/sh", "-c", "kill -TERM $$; echo alive"), NULL, NULL, 0);
    assert_true(WIFSIGNALED(res.status));
    assert_int_equal(WTERMSIG(res.status), SIGTERM);
    assert_string_equal(res.stdout_data, "");
    pd_child_result_free(&res);
    run_ok(&res, ARGV("/bin/sh", "-c", "kill -USR1 $$; echo alive"), NULL, NULL, 0);
    assert_true(WIFSIGNALED(res.status));
    assert_int_equal(WTERMSIG(res.status), SIGUSR1);
    pd_child_result_free(&res);

    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGTERM, SIG_DFL);
}

static void
test_child_stdio_null(void **state)
{
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child *c = NULL;
    pd_err err = PD_ERR_INIT;
    char buf[64];
    size_t n;
    int status;

    (void)state;
    opts.stdin_mode = PD_CHILD_NULL;
    opts.stdout_mode = PD_CHILD_PIPE;
    opts.stderr_mode = PD_CHILD_NULL;
    // cat reads /dev/null (end of input at once); its complaint goes nowhere.
    assert_int_equal(
        pd_child_start(&c, ARGV("/bin/sh", "-c", "cat; echo discarded >&2"), &opts, &err), 0);
    assert_int_equal(pd_child_read(c, buf, sizeof(buf), &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pd_child_wait(c, &status, &err), 0);
    assert_int_equal(status, 0);
    assert_string_equal(pd_child_output(c, PD_CHILD_STDERR, NULL, NULL), "");
    pd_child_free(c);
}

static void
test_child_run_with_parent_stdin_closed(void **state)
{
    pd_child_result res = {0};
    int saved = dup(0);

    (void)state;
    assert_true(saved >= 0);
    // The pipes now land on descriptor 0, which the child must not clobber.
    close(0);
    run_ok(&res, ARGV("/bin/cat"), NULL, "abc", 3);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.stdout_data, "abc");
    pd_child_result_free(&res);
    run_ok(&res, ARGV("/bin/sh", "-c", "cat; echo err >&2"), NULL, NULL, 0);
    assert_int_equal(res.status, 0);
    assert_string_equal(res.stdout_data, "");
    assert_string_equal(res.stderr_data, "err\n");
    pd_child_result_free(&res);
    assert_int_equal(dup2(saved, 0), 0);
    close(saved);
}

static void
test_child_wait_ignores_grandchild_holding_pipes(void **state)
{
    pd_child_result res = {0};
    long grandchild;

    (void)state;
    // The backgrounded sleep keeps stdout and stderr open after sh exits,
    // as a postmaster started by pg_ctl would.
    run_ok(&res, ARGV("/bin/sh", "-c", "sleep 100 & echo $!"), NULL, NULL, 0);
    assert_int_equal(res.status, 0);
    grandchild = strtol(res.stdout_data, NULL, 10);
    assert_true(grandchild > 1);
    assert_int_equal(kill((pid_t)grandchild, SIGKILL), 0);
    pd_child_result_free(&res);
}

static volatile sig_atomic_t alarms;

static void
on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static void
test_child_run_survives_eintr(void **state)
{
    struct sigaction sa;
    struct itimerval every_ms = {{0, 1000}, {0, 1000}};
    struct itimerval off = {{0, 0}, {0, 0}};
    pd_child_opts opts = PD_CHILD_OPTS_INIT;
    pd_child_result res = {0};
    char *input = pattern(BIG);

    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm; // no SA_RESTART: poll, read, write fail with EINTR
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &every_ms, NULL);
    opts.stdout_max = BIG;
    for (int i = 0; i < 5; i++) {
        run_ok(&res, ARGV("/bin/cat"), &opts, input, BIG);
        assert_int_equal(res.status, 0);
        assert_int_equal(res.stdout_len, BIG);
        assert_memory_equal(res.stdout_data, input, BIG);
        pd_child_result_free(&res);
    }
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    signal(SIGALRM, SIG_DFL);
    assert_true(alarms > 0);
    pd_free(input);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_run_captures_stdout),
        cmocka_unit_test(test_child_run_feeds_large_stdin_through_cat),
        cmocka_unit_test(test_child_run_captures_large_stdout_and_stderr),
        cmocka_unit_test(test_child_run_feeds_stdin_while_both_outputs_are_large),
        cmocka_unit_test(test_child_run_caps_output),
        cmocka_unit_test(test_child_run_drops_input_the_child_does_not_read),
        cmocka_unit_test(test_child_status_words_for_exit),
        cmocka_unit_test(test_child_status_words_for_signal),
        cmocka_unit_test(test_child_start_program_not_found),
        cmocka_unit_test(test_child_start_program_found_in_path),
        cmocka_unit_test(test_child_start_program_not_executable),
        cmocka_unit_test(test_child_env_reaches_child_not_argv),
        cmocka_unit_test(test_child_env_sets_overrides_and_removes),
        cmocka_unit_test(test_child_cwd),
        cmocka_unit_test(test_child_switches_user),
        cmocka_unit_test(test_child_free_kills_and_reaps_running_child),
        cmocka_unit_test(test_child_kill_then_wait),
        cmocka_unit_test(test_child_read_streams_stdout_while_draining_stderr),
        cmocka_unit_test(test_child_write_feeds_stdin_while_draining_stderr),
        cmocka_unit_test(test_child_wait_captures_stdout_and_closes_stdin),
        cmocka_unit_test(test_child_write_broken_pipe_does_not_kill_parent),
        cmocka_unit_test(test_child_closes_inherited_fds),
        cmocka_unit_test(test_child_resets_signal_dispositions_and_mask),
        cmocka_unit_test(test_child_stdio_null),
        cmocka_unit_test(test_child_run_with_parent_stdin_closed),
        cmocka_unit_test(test_child_wait_ignores_grandchild_holding_pipes),
        cmocka_unit_test(test_child_run_survives_eintr),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
