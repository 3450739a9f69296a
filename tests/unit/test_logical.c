/*
 * Unit tests for the pure parts of logical backups: splitting pg_dumpall's
 * globals into statements (restore/logical.c), the conninfo that carries a
 * database name to pg_dump and pg_restore, and picking a client program's
 * error lines (common/pgtool.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/mem.h"
#include "common/pgtool.h"
#include "restore/logical.h"

/* The statements of sql, joined with "\n" after each, into out. */
static int
split(const char *sql, char *out, size_t outsize)
{
    size_t pos = 0, start = 0, len = 0, used = 0;
    int n = 0;

    out[0] = '\0';
    while (pd_logical_next_statement(sql, strlen(sql), &pos, &start, &len)) {
        assert_true(used + len + 2 < outsize);
        memcpy(out + used, sql + start, len);
        used += len;
        out[used++] = '\n';
        out[used] = '\0';
        n++;
    }
    assert_int_equal(pos, strlen(sql));
    return n;
}

static void
test_logical_split_pg_dumpall_globals(void **state)
{
    // What pg_dumpall 15.14+ writes: \restrict lines, comments, SET, roles.
    const char *sql = "\\restrict AbC123\n"
                      "--\n-- PostgreSQL database cluster dump\n--\n\n"
                      "SET default_transaction_read_only = off;\n"
                      "SET client_encoding = 'UTF8';\n\n"
                      "CREATE ROLE app;\n"
                      "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN;\n"
                      "\\unrestrict AbC123\n";
    char out[1024];

    (void)state;
    assert_int_equal(split(sql, out, sizeof(out)), 4);
    assert_string_equal(out, "SET default_transaction_read_only = off;\n"
                             "SET client_encoding = 'UTF8';\n"
                             "CREATE ROLE app;\n"
                             "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB "
                             "LOGIN;\n");
}

static void
test_logical_split_respects_quotes_and_comments(void **state)
{
    const char *sql = "COMMENT ON ROLE \"we;ird\"\"x\" IS 'a; b''c\n\\not meta';\n"
                      "SELECT E'x\\'; y';\n"
                      "SELECT $$ ; $$, $tag$ $$ ; $tag$;\n"
                      "SELECT /* ; /* nested ; */ ; */ 1; -- trailing ; comment\n"
                      "SELECT a$b, 2;\n"
                      "SELECT 'unterminated ;";
    char out[1024];

    (void)state;
    assert_int_equal(split(sql, out, sizeof(out)), 6);
    assert_string_equal(out, "COMMENT ON ROLE \"we;ird\"\"x\" IS 'a; b''c\n\\not meta';\n"
                             "SELECT E'x\\'; y';\n"
                             "SELECT $$ ; $$, $tag$ $$ ; $tag$;\n"
                             "SELECT /* ; /* nested ; */ ; */ 1;\n"
                             "SELECT a$b, 2;\n"
                             "SELECT 'unterminated ;\n");
}

static void
test_logical_split_empty_and_blank(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(split("", out, sizeof(out)), 0);
    assert_int_equal(split("  \n-- only a comment\n\\connect x\n", out, sizeof(out)), 0);
    assert_int_equal(split("SELECT 1", out, sizeof(out)), 1);
    assert_string_equal(out, "SELECT 1\n");
}

static void
test_logical_conninfo_quotes_names(void **state)
{
    char *c;

    (void)state;
    c = pd_pgtool_conninfo("app");
    assert_string_equal(c, "dbname='app'");
    pd_free(c);
    // A name that looks like conninfo stays one value.
    c = pd_pgtool_conninfo("x host=evil' port=1 \\");
    assert_string_equal(c, "dbname='x host=evil\\' port=1 \\\\'");
    pd_free(c);
}

static void
test_logical_pgtool_errors(void **state)
{
    char buf[256];

    (void)state;
    pd_pgtool_errors("pg_dump: error: query failed: ERROR:  permission denied for table t\n"
                     "pg_dump: detail: Query was: LOCK TABLE public.t IN ACCESS SHARE MODE\n",
                     buf, sizeof(buf));
    assert_string_equal(buf, "pg_dump: error: query failed: ERROR:  permission denied for table t");
    pd_pgtool_errors("pg_restore: while PROCESSING TOC:\n"
                     "pg_restore: error: could not execute query: ERROR:  role \"x\" does not "
                     "exist\n"
                     "pg_restore: error: errors ignored on restore: 1\n",
                     buf, sizeof(buf));
    assert_string_equal(buf, "pg_restore: error: could not execute query: ERROR:  role \"x\" does "
                             "not exist; pg_restore: error: errors ignored on restore: 1");
    pd_pgtool_errors("something odd\nlast words\n", buf, sizeof(buf));
    assert_string_equal(buf, "last words");
    pd_pgtool_errors("", buf, sizeof(buf));
    assert_string_equal(buf, "");
    char small[8];
    pd_pgtool_errors("pg_dump: error: long message\n", small, sizeof(small));
    assert_string_equal(small, "pg_dump");
}

static void
test_logical_pgtool_env(void **state)
{
    pd_pg_opts po = PD_PG_OPTS_INIT;
    pd_pgtool_env e;

    (void)state;
    po.host = "/run/postgresql";
    po.port = 5433;
    po.user = "pgdrill";
    pd_pgtool_env_init(&e, &po);
    assert_string_equal(e.env[0], "PGHOST=/run/postgresql");
    assert_string_equal(e.env[1], "PGPORT=5433");
    assert_string_equal(e.env[2], "PGUSER=pgdrill");
    assert_string_equal(e.env[3], "PGDATABASE"); // removed: the conninfo names the database
    assert_string_equal(e.env[4], "PGAPPNAME=pgdrill");
    assert_null(e.env[5]);
    po = (pd_pg_opts)PD_PG_OPTS_INIT;
    pd_pgtool_env_init(&e, &po);
    assert_string_equal(e.env[0], "PGDATABASE");
    assert_null(e.env[2]);
    // Drills: the restored roles' preload settings do not reach pg_restore's sessions.
    po.options = "-c session_preload_libraries=";
    pd_pgtool_env_init(&e, &po);
    assert_string_equal(e.env[0], "PGOPTIONS=-c session_preload_libraries=");
    assert_string_equal(e.env[1], "PGDATABASE");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logical_split_pg_dumpall_globals),
        cmocka_unit_test(test_logical_split_respects_quotes_and_comments),
        cmocka_unit_test(test_logical_split_empty_and_blank),
        cmocka_unit_test(test_logical_conninfo_quotes_names),
        cmocka_unit_test(test_logical_pgtool_errors),
        cmocka_unit_test(test_logical_pgtool_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
