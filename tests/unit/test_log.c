/*
 * Unit tests for common/log and common/secret: levels, format, and the
 * invariant that no registered secret (nor a conninfo or URI password) comes
 * out of any logging path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/secret.h"
#include "common/time.h"

static char *captured;
static size_t captured_len;
static FILE *stream;

static int
setup(void **state)
{
    (void)state;
    stream = open_memstream(&captured, &captured_len);
    pd_log_set_stream(stream, false);
    pd_log_set_level(PD_LOG_DEBUG);
    pd_log_set_quiet(false);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    pd_log_set_stream(NULL, false);
    fclose(stream);
    free(captured);
    captured = NULL;
    return 0;
}

static const char *
output(void)
{
    fflush(stream);
    return captured ? captured : "";
}

static void
test_log_format_and_levels(void **state)
{
    (void)state;
    pd_log_set_level(PD_LOG_INFO);
    pd_log_info("backed up %d files", 3);
    pd_log_debug("hidden");
    assert_string_equal(output(), "pgdrill: info: backed up 3 files\n");
}

static void
test_log_quiet_keeps_errors(void **state)
{
    (void)state;
    pd_log_set_quiet(true);
    pd_log_info("hidden");
    pd_log_warning("hidden");
    pd_log_error("shown");
    assert_string_equal(output(), "pgdrill: error: shown\n");
}

static void
test_log_parse_level(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_log_level level;
    (void)state;

    assert_int_equal(pd_log_parse_level("warn", &level, &err), 0);
    assert_int_equal(level, PD_LOG_WARNING);
    assert_int_equal(pd_log_parse_level("loud", &level, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "\"loud\""));
}

static void
test_log_timestamps_when_asked(void **state)
{
    (void)state;
    pd_log_set_stream(stream, true);
    pd_log_info("x");
    // "2026-11-24T02:00:00Z pgdrill: info: x\n"
    const char *o = output();
    assert_int_equal(strlen(o), 21 + strlen("pgdrill: info: x\n"));
    assert_int_equal(o[10], 'T');
    assert_int_equal(o[19], 'Z');
}

static void
test_log_one_line_per_message(void **state)
{
    (void)state;
    pd_log_error("a\nb");
    assert_string_equal(output(), "pgdrill: error: a b\n");
}

/* The secret pushed through every logging path never appears in the output. */
static void
test_log_secret_never_printed(void **state)
{
    static const char secret_text[] = "s3cr3t-K3Y-material";
    pd_secret *s = pd_secret_new(secret_text, strlen(secret_text));
    pd_err err = PD_ERR_INIT;
    char buf[256];
    (void)state;

    pd_log_error("key %s", secret_text);
    pd_log_warning("key %s", secret_text);
    pd_log_info("key %s", secret_text);
    pd_log_debug("key %s", secret_text);
    pd_log_msg(PD_LOG_INFO, "key=%s;", secret_text);
    pd_err_set(&err, PD_ECONFIG, "bad key %s", secret_text);
    pd_err_hint(&err, "was %s", secret_text);
    pd_log_err(&err);
    pd_log_info("%s", pd_redact(secret_text, buf, sizeof(buf)));

    const char *o = output();
    assert_null(strstr(o, secret_text));
    assert_null(strstr(o, "s3cr3t"));
    assert_non_null(strstr(o, "[redacted]"));
    // Every call above produced a line.
    int lines = 0;
    for (const char *c = o; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 7);

    // Once freed, the bytes are no longer a secret and are no longer scrubbed.
    pd_secret_free(s);
}

static void
test_log_conninfo_password_redacted(void **state)
{
    (void)state;
    pd_log_info("connecting with host=db password=hunter22 user=x");
    pd_log_info("connecting with password='a b\\'c' user=y");
    pd_log_info("url postgresql://alice:hunter33@db/x");
    const char *o = output();
    assert_null(strstr(o, "hunter22"));
    assert_null(strstr(o, "a b"));
    assert_null(strstr(o, "hunter33"));
    assert_non_null(strstr(o, "user=x"));
    assert_non_null(strstr(o, "user=y"));
    assert_non_null(strstr(o, "alice:[redacted]@db"));
}

/* Near the end of a full line the marker does not fit: the secret is cut, never kept. */
static void
test_log_redaction_at_buffer_end(void **state)
{
    char line[5000], out[4096];
    (void)state;

    for (size_t pad = 4060; pad < 4096; pad++) {
        memset(line, 'a', pad);
        snprintf(line + pad, sizeof(line) - pad, " password=hunter22 https://k:pw77pw@h");
        pd_redact(line, out, sizeof(out));
        assert_true(strlen(out) < sizeof(out));
        assert_null(strstr(out, "hunter22"));
        assert_null(strstr(out, "hunter"));
        assert_null(strstr(out, "pw77"));
    }
    pd_redact("password = spaced1 x", out, sizeof(out));
    assert_null(strstr(out, "spaced1"));
}

static void
test_log_progress_format(void **state)
{
    pd_progress *p = pd_progress_new("backup", 1024 * 1024);
    char buf[256];
    (void)state;

    pd_progress_update(p, 512 * 1024);
    pd_progress_format(p, pd_time_mono() + 1.0, buf, sizeof(buf));
    assert_non_null(strstr(buf, "backup: 512 KiB of 1.0 MiB (50%)"));
    assert_non_null(strstr(buf, "left"));
    pd_progress_free(p);
    // Not a terminal: progress writes nothing.
    assert_string_equal(output(), "");
}

/*
 * The default level: warnings only when stderr is neither a terminal nor
 * journald (cron mails whatever comes out), info under journald, whose
 * JOURNAL_STREAM names stderr's device and inode.
 */
static void
test_log_default_level_quiet_unless_read(void **state)
{
    char path[] = "/tmp/pgdrill-test-log-XXXXXX", js[64];
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    struct stat st;

    (void)state;
    assert_true(fd >= 0 && saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    assert_int_equal(fstat(fd, &st), 0);

    unsetenv("JOURNAL_STREAM");
    pd_log_set_level(PD_LOG_DEBUG);
    pd_log_init();
    assert_int_equal(pd_log_get_level(), PD_LOG_WARNING);
    assert_false(pd_log_enabled(PD_LOG_INFO));
    assert_true(pd_log_enabled(PD_LOG_WARNING));

    // Another file's JOURNAL_STREAM is not ours: still cron-quiet.
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    pd_log_init();
    assert_int_equal(pd_log_get_level(), PD_LOG_WARNING);

    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    pd_log_init();
    assert_int_equal(pd_log_get_level(), PD_LOG_INFO);

    unsetenv("JOURNAL_STREAM");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(fd);
    unlink(path);
    pd_log_set_stream(stream, false);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_log_format_and_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_quiet_keeps_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_default_level_quiet_unless_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_parse_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_timestamps_when_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_one_line_per_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_secret_never_printed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_conninfo_password_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_progress_format, setup, teardown),
        cmocka_unit_test(test_log_redaction_at_buffer_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
