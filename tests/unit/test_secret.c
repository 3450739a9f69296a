/* Unit tests for common/secret: reading secret files and their modes. */
#include <fcntl.h>
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
#include "common/secret.h"

static char dir[64];

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/pd-secret-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "%s/f", dir);
    unlink(cmd);
    rmdir(dir);
    return 0;
}

static const char *
write_file(const char *content, size_t len, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/f", dir);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void
test_secret_file_private_ok(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *s = NULL;
    (void)state;

    const char *p = write_file("passphrase\n", 11, 0600);
    assert_int_equal(pd_secret_read_file(&s, p, 1024, 1, 1, &err), 0);
    assert_int_equal(pd_secret_len(s), 10);
    assert_memory_equal(pd_secret_data(s), "passphrase", 10);
    pd_secret_free(s);
}

static void
test_secret_file_loose_mode_refused(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *s = NULL;
    (void)state;

    const char *p = write_file("0123456789abcdef0123456789abcdef", 32, 0644);
    assert_int_equal(pd_secret_read_file(&s, p, 32, 0, 1, &err), PD_ECONFIG);
    assert_null(s);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "0644"));
    assert_non_null(strstr(err.msg, "chmod 600"));
    // The content is never part of the message.
    assert_null(strstr(err.msg, "0123456789abcdef"));
}

static void
test_secret_file_too_large_refused(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *s = NULL;
    (void)state;

    const char *p = write_file("0123456789", 10, 0600);
    assert_int_equal(pd_secret_read_file(&s, p, 8, 0, 1, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "8"));
}

static void
test_secret_file_missing(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *s = NULL;
    (void)state;

    assert_int_equal(pd_secret_read_file(&s, "/nonexistent/key", 32, 0, 1, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "\"/nonexistent/key\""));
    assert_non_null(strstr(err.msg, "no such file"));
}

static void
test_secret_redact_only_while_alive(void **state)
{
    char out[128];
    (void)state;

    pd_secret *s = pd_secret_new("abcd1234", 8);
    pd_secret_redact("x abcd1234 y", out, sizeof(out));
    assert_string_equal(out, "x [redacted] y");
    pd_secret_free(s);
    pd_secret_redact("x abcd1234 y", out, sizeof(out));
    assert_string_equal(out, "x abcd1234 y");
}

static void
test_secret_redact_truncates_safely(void **state)
{
    char out[8];
    (void)state;

    pd_secret *s = pd_secret_new("abcd1234", 8);
    pd_secret_redact("xyabcd1234", out, sizeof(out));
    // Too small for the marker: cut before it, never showing the secret.
    assert_string_equal(out, "xy");
    pd_secret_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_secret_file_private_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file_loose_mode_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file_too_large_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file_missing, setup, teardown),
        cmocka_unit_test(test_secret_redact_only_while_alive),
        cmocka_unit_test(test_secret_redact_truncates_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
