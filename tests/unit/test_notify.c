/* Unit tests for common/notify: splitting notify-command and the notify-on rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/notify.h"

static void
test_split_words(void **state)
{
    char buf[128], *argv[PD_NOTIFY_MAX_ARGS + 1];
    pd_err err = PD_ERR_INIT;
    (void)state;
    assert_int_equal(
        pd_notify_split("  /usr/bin/hook\t--to  ops@example.org ", buf, sizeof(buf), argv, &err),
        0);
    assert_string_equal(argv[0], "/usr/bin/hook");
    assert_string_equal(argv[1], "--to");
    assert_string_equal(argv[2], "ops@example.org");
    assert_null(argv[3]);
    assert_int_equal(pd_notify_split("hook", buf, sizeof(buf), argv, &err), 0);
    assert_string_equal(argv[0], "hook");
    assert_null(argv[1]);
}

static void
test_split_refuses(void **state)
{
    char buf[256], *argv[PD_NOTIFY_MAX_ARGS + 1], many[256] = "";
    pd_err err = PD_ERR_INIT;
    (void)state;
    assert_int_equal(pd_notify_split(" \t ", buf, sizeof(buf), argv, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "empty"));
    for (int i = 0; i <= PD_NOTIFY_MAX_ARGS; i++)
        strcat(many, "a ");
    pd_err_clear(&err);
    assert_int_equal(pd_notify_split(many, buf, sizeof(buf), argv, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "more than 32 words"));
    pd_err_clear(&err);
    assert_int_equal(pd_notify_split("/a/long/program", buf, 8, argv, &err), PD_ECONFIG);
    // Exactly the maximum is fine.
    many[2 * PD_NOTIFY_MAX_ARGS] = '\0';
    assert_int_equal(pd_notify_split(many, buf, sizeof(buf), argv, &err), 0);
    assert_non_null(argv[PD_NOTIFY_MAX_ARGS - 1]);
    assert_null(argv[PD_NOTIFY_MAX_ARGS]);
}

static void
test_wanted(void **state)
{
    (void)state;
    assert_true(pd_notify_wanted("always", 0));
    assert_true(pd_notify_wanted("always", 3));
    assert_true(pd_notify_wanted(NULL, 0));
    assert_false(pd_notify_wanted("failure", 0));
    assert_true(pd_notify_wanted("failure", 1));
    assert_true(pd_notify_wanted("failure", 2));
    assert_true(pd_notify_wanted("failure", 3));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_words),
        cmocka_unit_test(test_split_refuses),
        cmocka_unit_test(test_wanted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
