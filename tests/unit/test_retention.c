/* Unit tests for backup/retention: which backups expire keeps, and the WAL floor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "backup/retention.h"

#define DAY   86400
#define NOW   ((int64_t)1800000000)
#define SEG   (16ULL * 1024 * 1024)
#define HOURS 3600

/* A complete physical backup that finished days_ago days before NOW, on tli, at segment seg. */
static pd_retention_backup
physical(const char *id, double days_ago, unsigned tli, uint64_t seg)
{
    pd_retention_backup b;

    memset(&b, 0, sizeof(b));
    b.id = id;
    b.complete = true;
    b.stop_time = NOW - (int64_t)(days_ago * DAY);
    b.timeline = tli;
    b.start_lsn = seg * SEG + 0x28;
    return b;
}

static pd_retention_backup
logical(const char *id, double days_ago)
{
    pd_retention_backup b = physical(id, days_ago, 0, 0);
    b.logical = true;
    return b;
}

static pd_retention_backup
incomplete(const char *id, double hours_ago)
{
    pd_retention_backup b;

    memset(&b, 0, sizeof(b));
    b.id = id;
    b.last_write = NOW - (int64_t)(hours_ago * HOURS);
    return b;
}

static pd_retention_policy
policy(long full, long days)
{
    pd_retention_policy p = {full, days, true, 12 * HOURS, NOW};
    return p;
}

/* "KRK" style: one letter per backup, K kept, R removed. */
static void
assert_kept(const pd_retention_backup *b, size_t n, const char *want)
{
    char got[32];

    for (size_t i = 0; i < n; i++)
        got[i] = b[i].keep ? 'K' : 'R';
    got[n] = '\0';
    assert_string_equal(got, want);
}

static void
test_retention_no_policy_keeps_every_complete_backup(void **state)
{
    pd_retention_backup b[] = {physical("a", 400, 1, 2), physical("b", 300, 1, 4),
                               physical("c", 1, 1, 6)};
    pd_retention_policy p = policy(0, 0);

    (void)state;
    pd_retention_apply(b, 3, &p);
    assert_kept(b, 3, "KKK");
    assert_int_equal(b[0].reason, PD_RETENTION_KEEP_NO_POLICY);
    assert_int_equal(b[2].reason, PD_RETENTION_KEEP_NEWEST);
}

static void
test_retention_full_keeps_the_newest_n(void **state)
{
    pd_retention_backup b[] = {physical("a", 4, 1, 2), physical("b", 3, 1, 4),
                               physical("c", 2, 1, 6), physical("d", 1, 1, 8)};
    pd_retention_policy p = policy(2, 0);

    (void)state;
    pd_retention_apply(b, 4, &p);
    assert_kept(b, 4, "RRKK");
    assert_int_equal(b[0].reason, PD_RETENTION_REMOVE_EXPIRED);
    assert_int_equal(b[2].reason, PD_RETENTION_KEEP_FULL);
    assert_string_equal(pd_retention_reason_text(b[0].reason), "beyond retention");
}

static void
test_retention_days_keeps_the_window_and_the_backup_before_it(void **state)
{
    // Window: the last 7 days. "c" (8 days) is the newest before it: the
    // start point for recovery to the window's first moments.
    pd_retention_backup b[] = {physical("a", 20, 1, 2), physical("b", 10, 1, 4),
                               physical("c", 8, 1, 6), physical("d", 6, 1, 8),
                               physical("e", 1, 1, 10)};
    pd_retention_policy p = policy(0, 7);

    (void)state;
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RRKKK");
    assert_int_equal(b[2].reason, PD_RETENTION_KEEP_DAYS);
    assert_int_equal(b[3].reason, PD_RETENTION_KEEP_DAYS);
}

static void
test_retention_days_all_old_keeps_only_the_newest(void **state)
{
    pd_retention_backup b[] = {physical("a", 30, 1, 2), physical("b", 20, 1, 4)};
    pd_retention_policy p = policy(0, 7);

    (void)state;
    pd_retention_apply(b, 2, &p);
    assert_kept(b, 2, "RK");
    assert_int_equal(b[1].reason, PD_RETENTION_KEEP_NEWEST);
}

static void
test_retention_full_and_days_remove_only_when_both_allow(void **state)
{
    pd_retention_backup b[] = {physical("a", 30, 1, 2), physical("b", 9, 1, 4),
                               physical("c", 5, 1, 6), physical("d", 3, 1, 8),
                               physical("e", 1, 1, 10)};
    pd_retention_policy p = policy(2, 7);

    (void)state;
    // full keeps d, e; days keeps c, d, e and b (newest before the window).
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RKKKK");
    p = policy(4, 2);
    // full keeps b..e; days keeps e and d (newest before the window).
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RKKKK");
    p = policy(1, 2);
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RRRKK");
}

static void
test_retention_logical_counted_apart(void **state)
{
    pd_retention_backup b[] = {physical("a", 5, 1, 2), logical("b", 4), physical("c", 3, 1, 4),
                               logical("d", 2), logical("e", 1)};
    pd_retention_policy p = policy(1, 0);

    (void)state;
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RRKRK");
    // Logical backups need no WAL: the floor is the kept physical backup's start.
    uint64_t floor;
    assert_true(pd_retention_wal_floor(b, 5, 1, &floor));
    assert_int_equal(floor, 4);
}

/*
 * A logical backup of some databases (--database) does not push out the
 * only backups of the others: each database keeps its own newest N.
 */
static void
test_retention_logical_counted_per_database(void **state)
{
    static const char *const both[] = {"app", "postgres"}, *const pg_only[] = {"postgres"};
    pd_retention_backup b[] = {logical("a", 4), logical("b", 3), logical("c", 2), logical("d", 1)};
    pd_retention_policy p = policy(1, 0);

    (void)state;
    for (int i = 0; i < 2; i++) {
        b[i].databases = both;
        b[i].n_databases = 2;
    }
    b[2].databases = b[3].databases = pg_only;
    b[2].n_databases = b[3].n_databases = 1;
    pd_retention_apply(b, 4, &p);
    // b is the newest holding "app", d the newest holding "postgres".
    assert_kept(b, 4, "RKRK");
    assert_int_equal(b[1].reason, PD_RETENTION_KEEP_NEWEST); // of its database
}

static void
test_retention_keep_drilled(void **state)
{
    pd_retention_backup b[] = {physical("a", 5, 1, 2), physical("b", 4, 1, 4),
                               physical("c", 3, 1, 6), physical("d", 2, 1, 8)};
    pd_retention_policy p = policy(1, 0);

    (void)state;
    b[0].drill_passed = true;
    b[1].drill_passed = true;
    pd_retention_apply(b, 4, &p);
    // Only the newest drilled backup, not every drilled one.
    assert_kept(b, 4, "RKRK");
    assert_int_equal(b[1].reason, PD_RETENTION_KEEP_DRILLED);
    uint64_t floor;
    assert_true(pd_retention_wal_floor(b, 4, 1, &floor));
    assert_int_equal(floor, 4);

    p.keep_drilled = false;
    pd_retention_apply(b, 4, &p);
    assert_kept(b, 4, "RRRK");
}

static void
test_retention_incomplete_grace(void **state)
{
    pd_retention_backup b[] = {incomplete("a", 30), physical("b", 1, 1, 4), incomplete("c", 13),
                               incomplete("d", 11), incomplete("e", 0.1)};
    pd_retention_policy p = policy(1, 0);

    (void)state;
    b[4].expiring = true; // an earlier expire began removing it: no grace
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RKRKR");
    assert_int_equal(b[0].reason, PD_RETENTION_REMOVE_INCOMPLETE);
    assert_int_equal(b[3].reason, PD_RETENTION_KEEP_RUNNING);
    assert_int_equal(b[4].reason, PD_RETENTION_REMOVE_RESUMED);
    // Incomplete backups never count toward retention-full.
    assert_int_equal(b[1].reason, PD_RETENTION_KEEP_NEWEST);

    p.incomplete_grace = 0;
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "RKRRR");
    // Without a retention key nothing goes but what an earlier expire began.
    p = policy(0, 0);
    pd_retention_apply(b, 5, &p);
    assert_kept(b, 5, "KKKKR");
    assert_int_equal(b[0].reason, PD_RETENTION_KEEP_NO_POLICY);
}

static void
test_retention_wal_floor_per_timeline(void **state)
{
    // a (tl 1, seg 2) removed; b (tl 1, seg 0x10) and c (tl 2, seg 0x30) kept.
    pd_retention_backup b[] = {physical("a", 5, 1, 2), physical("b", 4, 1, 0x10),
                               physical("c", 3, 2, 0x30)};
    pd_retention_policy p = policy(2, 0);
    uint64_t floor;

    (void)state;
    pd_retention_apply(b, 3, &p);
    assert_kept(b, 3, "RKK");
    assert_true(pd_retention_wal_floor(b, 3, 1, &floor));
    assert_int_equal(floor, 0x10);
    // Timeline 2 keeps what recovery from b across the switch needs.
    assert_true(pd_retention_wal_floor(b, 3, 2, &floor));
    assert_int_equal(floor, 0x10);

    // Only c kept: timeline 1 (older than every kept backup) is cut at c's start.
    p = policy(1, 0);
    pd_retention_apply(b, 3, &p);
    assert_kept(b, 3, "RRK");
    assert_true(pd_retention_wal_floor(b, 3, 1, &floor));
    assert_int_equal(floor, 0x30);
    assert_true(pd_retention_wal_floor(b, 3, 2, &floor));
    assert_int_equal(floor, 0x30);
    assert_true(pd_retention_wal_floor(b, 3, 3, &floor));
    assert_int_equal(floor, 0x30);
}

static void
test_retention_wal_floor_without_physical_backup(void **state)
{
    pd_retention_backup b[] = {logical("a", 1), incomplete("b", 0.1)};
    pd_retention_policy p = policy(1, 0);
    uint64_t floor;

    (void)state;
    pd_retention_apply(b, 2, &p);
    assert_false(pd_retention_wal_floor(b, 2, 1, &floor));
    assert_false(pd_retention_wal_floor(NULL, 0, 1, &floor));
}

static void
test_retention_wal_parse(void **state)
{
    unsigned tli;
    uint64_t segno;

    (void)state;
    assert_true(pd_retention_wal_parse("000000010000000000000003", &tli, &segno));
    assert_int_equal(tli, 1);
    assert_int_equal(segno, 3);
    assert_true(pd_retention_wal_parse("0000000A00000002000000FF", &tli, &segno));
    assert_int_equal(tli, 10);
    assert_int_equal(segno, 2 * 256 + 255);
    assert_true(pd_retention_wal_parse("000000020000000000000005.partial", &tli, &segno));
    assert_int_equal(segno, 5);
    assert_true(pd_retention_wal_parse("000000010000000000000003.00000028.backup", &tli, &segno));
    assert_int_equal(segno, 3);
    // Never a .history file, nor anything unknown.
    assert_false(pd_retention_wal_parse("00000002.history", &tli, &segno));
    assert_false(pd_retention_wal_parse("00000001000000000000000", &tli, &segno));
    assert_false(pd_retention_wal_parse("0000000100000000000000g3", &tli, &segno));
    assert_false(pd_retention_wal_parse("000000010000000000000003.tmp", &tli, &segno));
    assert_false(pd_retention_wal_parse("000000010000000000000003.0000002.backup", &tli, &segno));
    assert_false(pd_retention_wal_parse("000000010000000000000100", &tli, &segno));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retention_no_policy_keeps_every_complete_backup),
        cmocka_unit_test(test_retention_full_keeps_the_newest_n),
        cmocka_unit_test(test_retention_days_keeps_the_window_and_the_backup_before_it),
        cmocka_unit_test(test_retention_days_all_old_keeps_only_the_newest),
        cmocka_unit_test(test_retention_full_and_days_remove_only_when_both_allow),
        cmocka_unit_test(test_retention_logical_counted_apart),
        cmocka_unit_test(test_retention_logical_counted_per_database),
        cmocka_unit_test(test_retention_keep_drilled),
        cmocka_unit_test(test_retention_incomplete_grace),
        cmocka_unit_test(test_retention_wal_floor_per_timeline),
        cmocka_unit_test(test_retention_wal_floor_without_physical_backup),
        cmocka_unit_test(test_retention_wal_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
