/* Unit tests for restore/target: times, LSNs, segment names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "restore/target.h"

static void
ok_time(const char *text, int64_t secs, int32_t usecs, bool zone)
{
    int64_t s;
    int32_t us;
    bool z;
    pd_err err = PD_ERR_INIT;

    if (pd_target_parse_time(&s, &us, &z, text, &err) != 0)
        fail_msg("\"%s\": %s", text, err.msg);
    assert_int_equal(s, secs);
    assert_int_equal(us, usecs);
    assert_int_equal(z, zone);
}

static void
test_target_time_forms(void **state)
{
    (void)state;
    // 2026-11-24 02:00:00 UTC = 1795485600
    ok_time("2026-11-24T02:00:00Z", 1795485600, 0, true);
    ok_time("2026-11-24 02:00:00+00", 1795485600, 0, true);
    ok_time("2026-11-24 02:00:00 UTC", 1795485600, 0, true);
    ok_time("2026-11-24 03:00:00+01", 1795485600, 0, true);
    ok_time("2026-11-24 07:30:00+05:30", 1795485600, 0, true);
    ok_time("2026-11-23 21:00:00-0500", 1795485600, 0, true);
    ok_time("2026-11-24 02:00:00.25+00", 1795485600, 250000, true);
    ok_time("2026-11-24T02:00:00.123456789Z", 1795485600, 123456, true);
    ok_time("2026-11-24 02:00:00", 1795485600, 0, false);
}

static void
test_target_time_refused(void **state)
{
    static const char *const bad[] = {"yesterday",
                                      "2026-11-24",
                                      "2026-13-01 00:00:00",
                                      "2026-02-30 00:00:00",
                                      "2026-11-24 25:00:00",
                                      "2026-11-24 02:00:00+",
                                      "2026-11-24 02:00:00 CET",
                                      "2026-11-24 02:00:00.Z"};
    pd_err err = PD_ERR_INIT;
    int64_t s;
    int32_t us;
    bool z;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(pd_target_parse_time(&s, &us, &z, bad[i], &err), PD_ECONFIG);
        assert_non_null(strstr(err.msg, bad[i]));
    }
}

static void
test_target_lsn(void **state)
{
    uint64_t lsn;
    pd_err err = PD_ERR_INIT;
    char seg[25];
    (void)state;

    assert_int_equal(pd_target_parse_lsn(&lsn, "16/B374D848", &err), 0);
    assert_true(lsn == 0x16B374D848ULL);
    assert_int_equal(pd_target_parse_lsn(&lsn, "16B374D848", &err), PD_ECONFIG);
    assert_int_equal(pd_target_parse_lsn(&lsn, "0/3000028x", &err), PD_ECONFIG);
    pd_target_segment_name(seg, 1, 0x3000028, 16 * 1024 * 1024);
    assert_string_equal(seg, "000000010000000000000003");
    pd_target_segment_name(seg, 2, 0x16B374D848ULL, 16 * 1024 * 1024);
    assert_string_equal(seg, "0000000200000016000000B3");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_time_forms),
        cmocka_unit_test(test_target_time_refused),
        cmocka_unit_test(test_target_lsn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
