/*
 * Unit tests for drills/health: the growth rate (last against first, in any
 * order, unknown below two points) and the threshold states check and
 * check --nagios report, with their perfdata.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "drills/health.h"

#define NOW 1800000000

static const pd_health_limits limits = {
    {26 * 3600, 50 * 3600}, {3600, 4 * 3600}, {8 * 86400, 15 * 86400}, {7, 3}};

static void
test_health_rate(void **state)
{
    pd_health_rate r = PD_HEALTH_RATE_INIT, shuffled = PD_HEALTH_RATE_INIT;
    double v;

    (void)state;
    assert_false(pd_health_rate_per_day(&r, &v));
    pd_health_rate_add(&r, 1000, 500);
    assert_false(pd_health_rate_per_day(&r, &v)); // one point: unknown, not 0
    pd_health_rate_add(&r, 1000, 700);
    assert_false(pd_health_rate_per_day(&r, &v)); // no time between the points
    pd_health_rate_add(&r, 1000 + 43200, 100);
    pd_health_rate_add(&r, 1000 + 86400, 300);
    assert_true(pd_health_rate_per_day(&r, &v));
    // Everything after the first moment (100 + 300 bytes) over one day.
    assert_true(v == 400.0);
    pd_health_rate_add(&shuffled, 1000 + 86400, 300);
    pd_health_rate_add(&shuffled, 1000, 700);
    pd_health_rate_add(&shuffled, 1000 + 43200, 100);
    pd_health_rate_add(&shuffled, 1000, 500);
    assert_true(pd_health_rate_per_day(&shuffled, &v));
    assert_true(v == 400.0);
}

static json_t *
status(json_int_t backup_age, const char *gap, json_int_t wal_age, json_t *lag, const char *result,
       const char *rto_result, json_int_t drill_age, json_t *days)
{
    json_t *st = json_pack("{s:I, s:I, s:{s:s, s:I}, s:{s:s, s:I, s:O?, s:I}, s:{s:O?, s:I}}",
                           "timestamp", (json_int_t)NOW, "repository_size_bytes", (json_int_t)1000,
                           "last_backup", "id", "B1", "age_seconds", backup_age, "wal",
                           "last_archived", "000000010000000000000003", "age_seconds", wal_age,
                           "lag_bytes", lag, "segment_size", (json_int_t)16777216, "capacity",
                           "repository_full_days", days, "repository_free_bytes", (json_int_t)5000);
    json_object_set_new(json_object_get(st, "last_backup"), "wal_gap",
                        gap ? json_string(gap) : json_null());
    if (result)
        json_object_set_new(st, "last_drill",
                            json_pack("{s:s, s:s, s:s?, s:f, s:I}", "id", "D1", "result", result,
                                      "rto_result", rto_result, "rto_seconds", 12.5,
                                      "stop_timestamp", (json_int_t)(NOW - drill_age)));
    assert_non_null(st);
    json_decref(lag);
    json_decref(days);
    return st;
}

/* The state of the named item, and its message and perfdata. */
static const char *
item(json_t *items, const char *name, const char **message, const char **perf)
{
    size_t i;
    json_t *it;

    json_array_foreach(items, i, it)
    {
        if (strcmp(json_string_value(json_object_get(it, "name")), name) == 0) {
            if (message)
                *message = json_string_value(json_object_get(it, "message"));
            if (perf)
                *perf = json_string_value(json_object_get(it, "perfdata"));
            return json_string_value(json_object_get(it, "state"));
        }
    }
    fail_msg("no item %s", name);
    return NULL;
}

static void
test_health_all_ok(void **state)
{
    json_t *items = NULL;
    const char *msg, *perf;

    (void)state;
    json_t *st = status(3600, NULL, 60, json_integer(1000), "pass", "met", 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_OK);
    assert_string_equal(item(items, "backup", &msg, &perf), "OK");
    assert_string_equal(perf, "'backup_age'=3600s;93600;180000;0;");
    assert_string_equal(item(items, "archive", NULL, &perf), "OK");
    assert_string_equal(perf, "'archive_age'=60s;3600;14400;0; 'archive_lag'=1000B;;;0;");
    assert_string_equal(item(items, "drill", NULL, &perf), "OK");
    assert_string_equal(perf, "'drill_age'=86400s;691200;1296000;0; 'drill_rto'=12.5s;;;0;");
    assert_string_equal(item(items, "repository", &msg, &perf), "OK");
    assert_string_equal(perf, "'repository_size'=1000B;;;0; 'repository_free'=5000B;;;0; "
                              "'repository_days'=30.0;7;3;0;");
    json_decref(items);
    json_decref(st);
}

static void
test_health_levels(void **state)
{
    json_t *items = NULL, *st;
    const char *msg;

    (void)state;
    // Backup age: over the warning level, then over the critical one.
    st = status(27 * 3600, NULL, 60, NULL, "pass", NULL, 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_WARNING);
    assert_string_equal(item(items, "backup", &msg, NULL), "WARNING");
    assert_non_null(strstr(msg, "last backup B1 27h00m ago (warning over 26h00m)"));
    json_decref(items);
    json_decref(st);
    st = status(51 * 3600, NULL, 60, NULL, "pass", NULL, 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    assert_string_equal(item(items, "backup", NULL, NULL), "CRITICAL");
    json_decref(items);
    json_decref(st);
    // A WAL gap after the newest backup is critical whatever its age.
    st = status(60, "000000010000000000000002", 60, NULL, "pass", NULL, 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    assert_string_equal(item(items, "backup", &msg, NULL), "CRITICAL");
    assert_non_null(strstr(msg, "gap at 000000010000000000000002"));
    json_decref(items);
    json_decref(st);
    // A logical backup is newer: the gap is named after the physical backup it concerns.
    st = status(60, "000000010000000000000002", 60, NULL, "pass", NULL, 86400, json_real(30));
    json_object_set_new(json_object_get(st, "last_backup"), "wal_gap_backup", json_string("B0"));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    assert_string_equal(item(items, "backup", &msg, NULL), "CRITICAL");
    assert_non_null(strstr(msg, "last backup B1"));
    assert_non_null(
        strstr(msg, "WAL after physical backup B0 has a gap at 0000000100000000000000"));
    json_decref(items);
    json_decref(st);
    // An old archive is lag, unless the server has not finished a segment since.
    st = status(60, NULL, 2 * 3600, NULL, "pass", NULL, 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_WARNING);
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 5 * 3600, json_integer(16777216), "pass", NULL, 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 5 * 3600, json_integer(4096), "pass", NULL, 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_OK);
    assert_string_equal(item(items, "archive", &msg, NULL), "OK");
    assert_non_null(strstr(msg, "(current)"));
    json_decref(items);
    json_decref(st);
    // Drills: failed is critical, an exceeded RTO a warning, none yet a warning, old ones by age.
    st = status(60, NULL, 60, NULL, "fail", NULL, 60, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 60, NULL, "pass", "exceeded", 60, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_WARNING);
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 60, NULL, NULL, NULL, 0, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_WARNING);
    assert_string_equal(item(items, "drill", &msg, NULL), "WARNING");
    assert_non_null(strstr(msg, "no drill yet"));
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 60, NULL, "pass", NULL, 16 * 86400, json_real(30));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    json_decref(items);
    json_decref(st);
    // Days until full: fewer is worse; unknown is OK and says why.
    st = status(60, NULL, 60, NULL, "pass", NULL, 60, json_real(5));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_WARNING);
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 60, NULL, "pass", NULL, 60, json_real(2.5));
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    assert_string_equal(item(items, "repository", &msg, NULL), "CRITICAL");
    assert_non_null(strstr(msg, "full in 2.5 days"));
    json_decref(items);
    json_decref(st);
    st = status(60, NULL, 60, NULL, "pass", NULL, 60, NULL);
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_OK);
    json_decref(items);
    json_decref(st);
}

static void
test_health_off_and_missing(void **state)
{
    pd_health_limits off = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
    json_t *items = NULL;
    const char *msg, *perf;

    (void)state;
    json_t *st =
        json_pack("{s:I, s:n, s:{}, s:n, s:{}, s:I}", "timestamp", (json_int_t)NOW, "last_backup",
                  "wal", "last_drill", "capacity", "repository_size_bytes", (json_int_t)0);
    assert_int_equal(pd_health_evaluate(&items, st, &limits), PD_HEALTH_CRITICAL);
    assert_string_equal(item(items, "backup", &msg, &perf), "CRITICAL");
    assert_non_null(strstr(msg, "no complete backup"));
    assert_string_equal(perf, ""); // nothing known, nothing made up
    assert_string_equal(item(items, "archive", NULL, NULL), "WARNING");
    json_decref(items);
    assert_int_equal(pd_health_evaluate(&items, st, &off), PD_HEALTH_OK);
    assert_string_equal(item(items, "backup", &msg, NULL), "OK");
    assert_string_equal(msg, "not checked (alert-backup-age = off)");
    json_decref(items);
    json_decref(st);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_rate),
        cmocka_unit_test(test_health_all_ok),
        cmocka_unit_test(test_health_levels),
        cmocka_unit_test(test_health_off_and_missing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
