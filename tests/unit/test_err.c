/* Unit tests for common/err: messages, hints, the exit-code table. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"

static void
test_err_set_returns_code_and_message(void **state)
{
    pd_err err = PD_ERR_INIT;
    (void)state;

    assert_int_equal(pd_err_set(&err, PD_ECORRUPT, "object \"%s\" is damaged", "base.tar"),
                     PD_ECORRUPT);
    assert_int_equal(err.code, PD_ECORRUPT);
    assert_string_equal(err.msg, "object \"base.tar\" is damaged");
}

static void
test_err_sys_appends_cause(void **state)
{
    pd_err err = PD_ERR_INIT;
    (void)state;

    errno = ENOSPC;
    pd_err_sys(&err, PD_EIO, "could not write file \"%s\"", "/r/x");
    assert_string_equal(err.msg, "could not write file \"/r/x\": no space left on device");
    assert_int_equal(err.sys_errno, ENOSPC);
}

static void
test_err_hint_keeps_first(void **state)
{
    pd_err err = PD_ERR_INIT;
    char line[2048];
    (void)state;

    pd_err_set(&err, PD_EIO, "could not write");
    pd_err_hint(&err, "free space or expire");
    pd_err_hint(&err, "ignored");
    pd_err_format(&err, line, sizeof(line));
    assert_string_equal(line, "could not write; free space or expire");
}

static void
test_err_message_is_one_line(void **state)
{
    pd_err err = PD_ERR_INIT;
    (void)state;

    pd_err_set(&err, PD_EPG, "server said: %s", "FATAL: x\nDETAIL: y");
    assert_null(strchr(err.msg, '\n'));
}

static void
test_err_exit_codes_match_design(void **state)
{
    (void)state;
    assert_int_equal(pd_err_exit_code(PD_OK), 0);
    assert_int_equal(pd_err_exit_code(PD_EUSAGE), 2);
    assert_int_equal(pd_err_exit_code(PD_ECONFIG), 2);
    assert_int_equal(pd_err_exit_code(PD_ECORRUPT), 3);
    assert_int_equal(pd_err_exit_code(PD_ECHECK), 3);
    assert_int_equal(pd_err_exit_code(PD_EIO), 1);
    assert_int_equal(pd_err_exit_code(PD_ENET), 1);
    assert_int_equal(pd_err_exit_code(PD_EPG), 1);
    assert_int_equal(pd_err_exit_code(PD_ENOTIMPL), 1);
    assert_int_equal(pd_err_exit_code(-999), 1);
    assert_string_equal(pd_err_code_name(PD_ECORRUPT), "corrupt");
}

static void
test_err_null_err_is_allowed(void **state)
{
    (void)state;
    assert_int_equal(pd_err_set(NULL, PD_EIO, "x"), PD_EIO);
    assert_int_equal(pd_err_sys(NULL, PD_EIO, "x"), PD_EIO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_returns_code_and_message),
        cmocka_unit_test(test_err_sys_appends_cause),
        cmocka_unit_test(test_err_hint_keeps_first),
        cmocka_unit_test(test_err_message_is_one_line),
        cmocka_unit_test(test_err_exit_codes_match_design),
        cmocka_unit_test(test_err_null_err_is_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
