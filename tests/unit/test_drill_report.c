/*
 * Unit tests for drills/status and drills/report: the Prometheus exposition
 * (label escaping, absent values, the success flag) and picking a backup's
 * newest drill report.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drills/report.h"
#include "drills/status.h"

static char *
exposition(json_t *st)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    pd_status_prometheus(f, st);
    fclose(f);
    return buf;
}

static void
test_prometheus_values_and_escaping(void **state)
{
    (void)state;
    json_t *st =
        json_pack("{s:s, s:{s:i, s:i}, s:{s:I, s:I, s:n}, s:{s:I}, s:{s:s, s:I, s:f},"
                  " s:I}",
                  "cluster", "ma\"in\\x", "backups", "complete", 2, "incomplete", 1, "last_backup",
                  "stop_timestamp", (json_int_t)1764000000, "size", (json_int_t)4096, "wal_gap",
                  "wal", "last_archived_timestamp", (json_int_t)1764000100, "last_drill", "result",
                  "fail", "stop_timestamp", (json_int_t)1764000200, "rto_seconds", 12.5,
                  "repository_size_bytes", (json_int_t)123456);
    char *text = exposition(st);
    assert_non_null(strstr(text, "pgdrill_last_backup_timestamp_seconds{cluster=\"ma\\\"in\\\\x\"} "
                                 "1764000000\n"));
    assert_non_null(strstr(text, "pgdrill_last_drill_success{cluster=\"ma\\\"in\\\\x\"} 0\n"));
    assert_non_null(strstr(text, "pgdrill_last_drill_rto_seconds{cluster=\"ma\\\"in\\\\x\"} "
                                 "12.500\n"));
    assert_non_null(strstr(text, "pgdrill_wal_gap{cluster=\"ma\\\"in\\\\x\"} 0\n"));
    assert_non_null(strstr(text, "pgdrill_repository_size_bytes{cluster=\"ma\\\"in\\\\x\"} "
                                 "123456\n"));
    assert_non_null(strstr(text, "# TYPE pgdrill_backups gauge\n"));
    free(text);
    json_decref(st);
}

static void
test_prometheus_unknown_values_have_no_sample(void **state)
{
    (void)state;
    json_t *st =
        json_pack("{s:s, s:n, s:n, s:{s:n}, s:I}", "cluster", "main", "last_backup", "last_drill",
                  "wal", "last_archived_timestamp", "repository_size_bytes", (json_int_t)0);
    char *text = exposition(st);
    // Declared, but without a sample: an alert sees the metric absent, not 0.
    assert_non_null(strstr(text, "# TYPE pgdrill_last_drill_success gauge\n"));
    assert_null(strstr(text, "pgdrill_last_drill_success{"));
    assert_null(strstr(text, "pgdrill_last_backup_timestamp_seconds{"));
    assert_non_null(strstr(text, "pgdrill_repository_size_bytes{cluster=\"main\"} 0\n"));
    free(text);
    json_decref(st);
}

static void
test_last_report_of_a_backup(void **state)
{
    (void)state;
    json_t *reports =
        json_pack("[{s:s, s:s, s:s, s:f}, {s:s, s:s, s:s, s:f}, {s:s, s:s, s:s, s:f}]", "id", "D1",
                  "backup_id", "B1", "result", "pass", "rto_seconds", 1.0, "id", "D2", "backup_id",
                  "B2", "result", "pass", "rto_seconds", 2.0, "id", "D3", "backup_id", "B1",
                  "result", "fail", "rto_seconds", 3.0);
    json_t *d = pd_drill_report_last_of(reports, "B1");
    assert_string_equal(json_string_value(json_object_get(d, "id")), "D3");
    assert_null(pd_drill_report_last_of(reports, "B9"));
    json_t *brief = pd_drill_report_brief(d);
    assert_string_equal(json_string_value(json_object_get(brief, "result")), "fail");
    assert_true(json_number_value(json_object_get(brief, "rto_seconds")) == 3.0);
    assert_int_equal(json_object_size(brief), 3);
    json_decref(brief);
    brief = pd_drill_report_brief(NULL);
    assert_true(json_is_null(brief));
    json_decref(brief);
    json_decref(reports);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus_values_and_escaping),
        cmocka_unit_test(test_prometheus_unknown_values_have_no_sample),
        cmocka_unit_test(test_last_report_of_a_backup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
