/*
 * Unit tests for backup/dumpscan: row counts read from a pg_dump custom-format
 * archive (version 1.14, uncompressed) as it streams past, built here byte by
 * byte the way pg_dump 15 writes it; fed whole, in 1-byte and in odd pieces;
 * and everything it must not guess at (another version, compression, a
 * truncated archive, a missing end marker, data of an unknown table).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "backup/dumpscan.h"
#include "common/mem.h"

typedef struct buf {
    unsigned char d[8192];
    size_t n;
} buf;

static void
put(buf *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof(b->d));
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void
put_byte(buf *b, int v)
{
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}

/* pg_dump's WriteInt with intSize 4: a sign byte, then 4 bytes, least significant first. */
static void
put_int(buf *b, long v)
{
    unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
    put_byte(b, v < 0);
    for (int i = 0; i < 4; i++)
        put_byte(b, (int)((u >> (8 * i)) & 0xff));
}

static void
put_str(buf *b, const char *s)
{
    if (s == NULL) {
        put_int(b, -1);
        return;
    }
    put_int(b, (long)strlen(s));
    put(b, s, strlen(s));
}

static void
header(buf *b, int vmin, long compression)
{
    put(b, "PGDMP", 5);
    put_byte(b, 1);
    put_byte(b, vmin);
    put_byte(b, 0);
    put_byte(b, 4); // intSize
    put_byte(b, 8); // offSize
    put_byte(b, 1); // custom
    put_int(b, compression);
    for (int i = 0; i < 7; i++)
        put_int(b, i);
    put_str(b, "app");
    put_str(b, "15.20");
    put_str(b, "15.20");
}

static void
entry(buf *b, int id, const char *desc, const char *copy, const char *defn)
{
    put_int(b, id);
    put_int(b, copy != NULL);
    put_str(b, "1259");
    put_str(b, "16400");
    put_str(b, "orders");
    put_str(b, desc);
    put_int(b, 2);
    put_str(b, defn);
    put_str(b, "");
    put_str(b, copy);
    put_str(b, "public");
    put_str(b, NULL);
    put_str(b, "heap");
    put_str(b, "app");
    put_str(b, "false");
    put_str(b, "214");
    put_str(b, "215");
    put_str(b, NULL);
    put_byte(b, 1);
    for (int i = 0; i < 8; i++)
        put_byte(b, 0);
}

static void
data(buf *b, int id, const char *const *chunks)
{
    put_byte(b, 1);
    put_int(b, id);
    for (; *chunks; chunks++)
        put_str(b, *chunks);
    put_int(b, 0);
}

/* An archive of three tables (one with a quoted name) and two large objects. */
static void
archive(buf *b)
{
    static const char *const orders[] = {"1\tone\n2\ttwo\n", "3\tthree\\nwith newline\n",
                                         "\\.\n\n\n", NULL};
    static const char *const empty[] = {"\\.\n\n\n", NULL};
    static const char *const odd[] = {"a\n", "b\n", "c\n", "d\n", "\\.\n", "\n\n", NULL};

    memset(b, 0, sizeof(*b));
    header(b, 14, 0);
    put_int(b, 5);
    entry(b, 1, "SCHEMA", NULL, "CREATE SCHEMA s;\n");
    entry(b, 2, "TABLE DATA", "COPY public.orders (id, note) FROM stdin;\n", "");
    entry(b, 3, "TABLE DATA", "COPY public.empty (x) FROM stdin;\n", "");
    entry(b, 4, "TABLE DATA", "COPY \"My Schema\".\"odd (t)\" (v) FROM stdin;\n", "");
    entry(b, 5, "BLOBS", NULL, "");
    data(b, 2, orders);
    data(b, 3, empty);
    data(b, 4, odd);
    put_byte(b, 3); // large objects
    put_int(b, 5);
    put_int(b, 16500);
    put_str(b, "lo data\n\n\n");
    put_int(b, 0);
    put_int(b, 16501);
    put_int(b, 0);
    put_int(b, 0);
}

/* Feeds b in pieces of step bytes (0: whole). */
static pd_dumpscan *
scan(const buf *b, size_t step)
{
    pd_dumpscan *s = pd_dumpscan_new();

    if (step == 0)
        step = b->n;
    for (size_t off = 0; off < b->n; off += step)
        pd_dumpscan_feed(s, b->d + off, b->n - off < step ? b->n - off : step);
    return s;
}

static void
check_counts(pd_dumpscan *s)
{
    char why[160] = "";
    json_t *c;

    assert_true(pd_dumpscan_ok(s, why, sizeof(why)));
    c = pd_dumpscan_counts(s, "app", 10);
    assert_int_equal(json_array_size(c), 3);
    // Largest first (by data bytes).
    json_t *first = json_array_get(c, 0), *second = json_array_get(c, 1);
    json_t *third = json_array_get(c, 2);
    assert_string_equal(json_string_value(json_object_get(first, "table")), "public.orders");
    assert_int_equal(json_integer_value(json_object_get(first, "rows")), 3);
    assert_string_equal(json_string_value(json_object_get(first, "database")), "app");
    assert_int_equal(json_integer_value(json_object_get(first, "changes")), 0);
    assert_string_equal(json_string_value(json_object_get(second, "table")),
                        "\"My Schema\".\"odd (t)\"");
    assert_int_equal(json_integer_value(json_object_get(second, "rows")), 4);
    assert_string_equal(json_string_value(json_object_get(third, "table")), "public.empty");
    assert_int_equal(json_integer_value(json_object_get(third, "rows")), 0);
    json_decref(c);
    c = pd_dumpscan_counts(s, "app", 1);
    assert_int_equal(json_array_size(c), 1);
    json_decref(c);
}

static void
test_dumpscan_counts_rows_in_any_pieces(void **state)
{
    static const size_t steps[] = {0, 1, 2, 3, 7, 13, 64, 4096};
    buf b;

    (void)state;
    archive(&b);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        pd_dumpscan *s = scan(&b, steps[i]);
        check_counts(s);
        pd_dumpscan_free(s);
    }
}

static void
expect_not_ok(const buf *b, const char *needle)
{
    char why[160] = "";
    pd_dumpscan *s = scan(b, 5);

    assert_false(pd_dumpscan_ok(s, why, sizeof(why)));
    assert_non_null(strstr(why, needle));
    pd_dumpscan_free(s);
}

static void
test_dumpscan_refuses_what_it_does_not_know(void **state)
{
    buf b;

    (void)state;
    memset(&b, 0, sizeof(b));
    header(&b, 15, 0); // pg_dump 16
    expect_not_ok(&b, "version other than 1.14");
    memset(&b, 0, sizeof(b));
    header(&b, 14, -1); // compressed (the default)
    expect_not_ok(&b, "compressed");
    memset(&b, 0, sizeof(b));
    put(&b, "PGDMQ", 5);
    put(&b, "xxxxxx", 6);
    expect_not_ok(&b, "not a pg_dump archive");
    memset(&b, 0, sizeof(b));
    put(&b, "PGD", 3);
    expect_not_ok(&b, "ended early");
}

static void
test_dumpscan_refuses_damaged_archives(void **state)
{
    static const char *const no_marker[] = {"1\n2\n", NULL};
    static const char *const rows[] = {"1\n\\.\n\n\n", NULL};
    buf b, whole;

    (void)state;
    // Truncated anywhere before the end of the data.
    archive(&whole);
    for (size_t cut = 1; cut < whole.n; cut += 97) {
        memcpy(&b, &whole, sizeof(b));
        b.n = cut;
        char why[160];
        pd_dumpscan *s = scan(&b, 0);
        assert_false(pd_dumpscan_ok(s, why, sizeof(why)));
        pd_dumpscan_free(s);
    }
    // A table's data without pg_dump's end-of-copy marker.
    memset(&b, 0, sizeof(b));
    header(&b, 14, 0);
    put_int(&b, 1);
    entry(&b, 1, "TABLE DATA", "COPY public.t (x) FROM stdin;\n", "");
    data(&b, 1, no_marker);
    expect_not_ok(&b, "end-of-copy marker");
    // Data of a table the table of contents does not name.
    memset(&b, 0, sizeof(b));
    header(&b, 14, 0);
    put_int(&b, 1);
    entry(&b, 1, "TABLE DATA", "COPY public.t (x) FROM stdin;\n", "");
    data(&b, 9, rows);
    expect_not_ok(&b, "not in the table of contents");
    // A TABLE DATA entry whose COPY statement it cannot read.
    memset(&b, 0, sizeof(b));
    header(&b, 14, 0);
    put_int(&b, 1);
    entry(&b, 1, "TABLE DATA", "INSERT INTO t", "");
    expect_not_ok(&b, "COPY statement");
    // An impossible string length.
    memset(&b, 0, sizeof(b));
    header(&b, 14, 0);
    put_int(&b, 1);
    put_int(&b, 1);
    put_int(&b, 0);
    put_int(&b, -5);
    expect_not_ok(&b, "impossible length");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dumpscan_counts_rows_in_any_pieces),
        cmocka_unit_test(test_dumpscan_refuses_what_it_does_not_know),
        cmocka_unit_test(test_dumpscan_refuses_damaged_archives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
