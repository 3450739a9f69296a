/* Unit tests for common/fmt and common/time: human units and time formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "common/fmt.h"
#include "common/time.h"

static void
test_fmt_size(void **state)
{
    char b[PD_FMT_BUF];
    (void)state;
    assert_string_equal(pd_fmt_size(b, sizeof(b), 0), "0 B");
    assert_string_equal(pd_fmt_size(b, sizeof(b), 1023), "1023 B");
    assert_string_equal(pd_fmt_size(b, sizeof(b), 1024), "1.0 KiB");
    assert_string_equal(pd_fmt_size(b, sizeof(b), 840ULL << 20), "840 MiB");
    assert_string_equal(pd_fmt_size(b, sizeof(b), (uint64_t)(12.3 * (1ULL << 30))), "12.3 GiB");
    assert_string_equal(pd_fmt_size(b, sizeof(b), UINT64_MAX), "16.0 EiB");
}

static void
test_fmt_duration(void **state)
{
    char b[PD_FMT_BUF];
    (void)state;
    assert_string_equal(pd_fmt_duration(b, sizeof(b), 0.35), "350ms");
    assert_string_equal(pd_fmt_duration(b, sizeof(b), 4.24), "4.2s");
    assert_string_equal(pd_fmt_duration(b, sizeof(b), 252), "4m12s");
    assert_string_equal(pd_fmt_duration(b, sizeof(b), 7500), "2h05m");
    assert_string_equal(pd_fmt_duration(b, sizeof(b), -1), "0ms");
}

static void
test_fmt_rate(void **state)
{
    char b[PD_FMT_BUF];
    (void)state;
    assert_string_equal(pd_fmt_rate(b, sizeof(b), 840ULL << 20, 1.0), "840 MiB/s");
    assert_string_equal(pd_fmt_rate(b, sizeof(b), 1ULL << 30, 2.0), "512 MiB/s");
}

static void
test_fmt_time_rfc3339_and_id(void **state)
{
    char b[PD_TIME_BUF];
    (void)state;
    assert_string_equal(pd_time_rfc3339(b, sizeof(b), 1795485600), "2026-11-24T02:00:00Z");
    assert_string_equal(pd_time_id(b, sizeof(b), 1795485600), "20261124T020000Z");
}

static void
test_fmt_time_mono_advances(void **state)
{
    (void)state;
    double a = pd_time_mono();
    double b = pd_time_mono();
    assert_true(b >= a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_size),
        cmocka_unit_test(test_fmt_duration),
        cmocka_unit_test(test_fmt_rate),
        cmocka_unit_test(test_fmt_time_rfc3339_and_id),
        cmocka_unit_test(test_fmt_time_mono_advances),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
