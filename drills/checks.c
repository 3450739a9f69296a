/* The checks of a drill (see checks.h). */
#include "drills/checks.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/mem.h"

/* Failures named in one check's detail at most; the count says the rest. */
#define MAX_NAMED 5

/* Appends to the text in buf, "; "-separated, truncating at size. */
static void PD_PRINTF(3, 4) appendf(char *buf, size_t size, const char *fmt, ...)
{
    size_t len = strlen(buf);
    va_list ap;

    if (len > 0 && len + 2 < size) {
        memcpy(buf + len, "; ", 3);
        len += 2;
    }
    va_start(ap, fmt);
    vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
}

void
pd_check_add(json_t *checks, const char *name, const char *result, const char *fmt, ...)
{
    char detail[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    json_t *c = json_object();
    json_object_set_new(c, "name", json_string(name));
    json_object_set_new(c, "result", json_string(result));
    json_object_set_new(c, "detail", json_string(detail));
    json_array_append_new(checks, c);
    if (strcmp(result, "fail") == 0)
        pd_log_error("drill check %s failed: %s", name, detail);
    else
        pd_log_info("drill check %s: %s: %s", name, result, detail);
}

json_t *
pd_checks_first_failure(json_t *checks)
{
    json_t *c;
    size_t i;

    json_array_foreach(checks, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "result")) ?: "", "fail") == 0)
            return c;
    }
    return NULL;
}

bool
pd_checks_passed(json_t *checks)
{
    return pd_checks_first_failure(checks) == NULL;
}

int
pd_check_connect(pd_pg **out, const pd_check_target *t, const char *db, pd_err *err)
{
    pd_pg_opts o = PD_PG_OPTS_INIT;

    o.host = t->socket;
    o.port = t->port;
    o.user = t->user;
    o.dbname = db;
    // The client's settings outrank ALTER ROLE/DATABASE ... SET in the restored catalog.
    o.options = "-c session_preload_libraries= -c local_preload_libraries=";
    return pd_pg_connect(out, &o, err);
}

void
pd_checks_databases(json_t *checks, const pd_check_target *t, json_t **dbs)
{
    pd_err err = PD_ERR_INIT;
    pd_pg *pg = NULL;
    PGresult *res = NULL;
    char failed[1024] = "";
    int bad = 0, n = 0;

    *dbs = json_array();
    if (pd_check_connect(&pg, t, t->db, &err) < 0 ||
        pd_pg_query(pg, &res, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
                    0, NULL, &err) < 0) {
        pd_check_add(checks, "databases", "fail", "%s", err.msg);
        pd_pg_free(pg);
        return;
    }
    pd_pg_free(pg);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *db = PQgetvalue(res, i, 0);
        pd_err e = PD_ERR_INIT;
        pd_pg *c = NULL;
        PGresult *r = NULL;
        n++;
        if (pd_check_connect(&c, t, db, &e) < 0 ||
            pd_pg_query(c, &r, "SELECT 1", 0, NULL, &e) < 0) {
            if (bad++ < MAX_NAMED)
                appendf(failed, sizeof(failed), "%s", e.msg);
        } else {
            json_array_append_new(*dbs, json_string(db));
        }
        PQclear(r);
        pd_pg_free(c);
    }
    PQclear(res);
    if (bad)
        pd_check_add(checks, "databases", "fail", "%d of %d databases refuse connections: %s", bad,
                     n, failed);
    else
        pd_check_add(checks, "databases", "pass", "all %d databases accept connections", n);
}

void
pd_checks_row_counts(json_t *checks, const pd_check_target *t, json_t *row_counts)
{
    json_t *rc;
    size_t i;
    char failed[1536] = "", names[512] = "";
    int bad = 0, n = 0, exact = 0;

    if (json_array_size(row_counts) == 0) {
        pd_check_add(checks, "row counts", "skip",
                     "the backup recorded no row counts (no user tables, or no access)");
        return;
    }
    json_array_foreach(row_counts, i, rc)
    {
        const char *db = json_string_value(json_object_get(rc, "database"));
        const char *table = json_string_value(json_object_get(rc, "table"));
        long long want = json_integer_value(json_object_get(rc, "rows"));
        json_t *ch = json_object_get(rc, "changes");
        long long slack = json_is_integer(ch) ? json_integer_value(ch) : -1;
        pd_err e = PD_ERR_INIT;
        pd_pg *pg = NULL;
        PGresult *res = NULL;
        char line[1200] = "";
        if (db == NULL || table == NULL)
            continue;
        // Named, as the backup may have counted fewer than the largest (a
        // table locked for 30 s, or one it could not read, is left out).
        if (n < MAX_NAMED)
            appendf(names, sizeof(names), "%s in %s", table, db);
        n++;
        char *sql = pd_asprintf("SELECT count(*) FROM %s", table); // quote_ident'ed at backup
        if (pd_check_connect(&pg, t, db, &e) < 0 || pd_pg_query(pg, &res, sql, 0, NULL, &e) < 0) {
            appendf(line, sizeof(line), "%s in database %s: %s", table, db, e.msg);
        } else {
            long long got = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            long long diff = got > want ? got - want : want - got;
            if (slack >= 0 && diff > slack)
                appendf(line, sizeof(line),
                        "%s in database %s has %lld rows, %lld at backup time (%lld changed "
                        "while it ran)",
                        table, db, got, want, slack);
            else if (diff == 0)
                exact++;
        }
        if (line[0] && bad++ < MAX_NAMED)
            appendf(failed, sizeof(failed), "%s", line);
        PQclear(res);
        pd_pg_free(pg);
        pd_free(sql);
    }
    if (bad)
        pd_check_add(checks, "row counts", "fail", "%d of %d tables differ: %s", bad, n, failed);
    else if (exact == n)
        pd_check_add(checks, "row counts", "pass",
                     "%d table%s (%s%s) match the counts recorded with the backup exactly", n,
                     n == 1 ? "" : "s", names, n > MAX_NAMED ? ", ..." : "");
    else
        pd_check_add(checks, "row counts", "pass",
                     "%d tables (%s%s) match the counts recorded with the backup (%d exactly, the "
                     "others within the rows written while the backup ran)",
                     n, names, n > MAX_NAMED ? ", ..." : "", exact);
}

static const char amcheck_sql[] =
    "SELECT c.oid::regclass::text, bt_index_check(c.oid, $1::boolean) FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
    "WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready AND i.indisvalid "
    "AND c.oid = $2::oid";

static const char indexes_sql[] =
    "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't' "
    "AND i.indisready AND i.indisvalid ORDER BY c.oid";

void
pd_checks_amcheck(json_t *checks, const pd_check_target *t, json_t *dbs, const char *mode)
{
    const char *heap = strcmp(mode, "full") == 0 ? "true" : "false";
    char failed[1536] = "";
    int bad = 0, indexes = 0, dbn = 0;
    json_t *d;
    size_t i;

    if (strcmp(mode, "off") == 0) {
        pd_check_add(checks, "amcheck", "skip", "drill-amcheck = off");
        return;
    }
    json_array_foreach(dbs, i, d)
    {
        const char *db = json_string_value(d);
        pd_err e = PD_ERR_INIT;
        pd_pg *pg = NULL;
        PGresult *res = NULL, *list = NULL;
        if (pd_check_connect(&pg, t, db, &e) < 0 ||
            pd_pg_query(pg, &res,
                        "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'", 0,
                        NULL, &e) < 0) {
            if (bad++ < MAX_NAMED)
                appendf(failed, sizeof(failed), "%s", e.msg);
            goto next;
        }
        if (strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
            pd_check_add(checks, "amcheck", "skip",
                         "the amcheck extension is not installed with these PostgreSQL "
                         "binaries (package postgresql-contrib)");
            PQclear(res);
            pd_pg_free(pg);
            return;
        }
        PQclear(res);
        res = NULL;
        // The scratch instance is thrown away: creating the extension there is harmless.
        if (pd_pg_query(pg, &res, "CREATE EXTENSION IF NOT EXISTS amcheck", 0, NULL, &e) < 0 ||
            pd_pg_query(pg, &list, indexes_sql, 0, NULL, &e) < 0) {
            if (bad++ < MAX_NAMED)
                appendf(failed, sizeof(failed), "database %s: %s", db, e.msg);
            goto next;
        }
        dbn++;
        for (int k = 0; k < PQntuples(list); k++) {
            const char *params[2] = {heap, PQgetvalue(list, k, 0)};
            PGresult *r = NULL;
            pd_err ie = PD_ERR_INIT;
            indexes++;
            if (pd_pg_query(pg, &r, amcheck_sql, 2, params, &ie) < 0 && bad++ < MAX_NAMED) {
                const char *msg = strstr(ie.msg, "failed: ");
                appendf(failed, sizeof(failed), "database %s: %s", db, msg ? msg + 8 : ie.msg);
            }
            PQclear(r);
        }
next:
        PQclear(res);
        PQclear(list);
        pd_pg_free(pg);
    }
    if (bad)
        pd_check_add(checks, "amcheck", "fail", "%d problem%s in %d btree indexes: %s", bad,
                     bad == 1 ? "" : "s", indexes, failed);
    else
        pd_check_add(checks, "amcheck", "pass",
                     "%d btree indexes in %d databases are consistent (bt_index_check%s)", indexes,
                     dbn, heap[0] == 't' ? " with heapallindexed" : "");
}

static void
run_user_check(json_t *checks, pd_pg *pg, const char *sql, int n)
{
    PGresult *res = NULL;
    pd_err e = PD_ERR_INIT;
    char name[32], shown[128];

    snprintf(name, sizeof(name), "user check %d", n);
    snprintf(shown, sizeof(shown), "%s", sql);
    if (strlen(sql) >= sizeof(shown))
        memcpy(shown + sizeof(shown) - 4, "...", 4);
    for (char *p = shown; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    if (pd_pg_query(pg, &res, sql, 0, NULL, &e) < 0) {
        const char *msg = strstr(e.msg, "failed: ");
        pd_check_add(checks, name, "fail", "%s: %s", shown, msg ? msg + 8 : e.msg);
    } else if (PQntuples(res) != 1 || PQnfields(res) < 1) {
        pd_check_add(checks, name, "fail",
                     "%s: returned %d rows, expected one row whose first "
                     "column is true",
                     shown, PQntuples(res));
    } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        pd_check_add(checks, name, "fail", "%s: returned %s, expected true", shown,
                     PQgetisnull(res, 0, 0) ? "NULL" : PQgetvalue(res, 0, 0));
    } else {
        pd_check_add(checks, name, "pass", "%s: true", shown);
    }
    PQclear(res);
}

/* Reads drill-check-file: statements that end with ';' at the end of a line. */
static char *
read_check_file(const char *path, pd_err *err)
{
    FILE *f = fopen(path, "re");
    char *buf;
    long len;

    if (f == NULL) {
        pd_err_sys(err, PD_ECONFIG, "could not read drill-check-file \"%s\"", path);
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || len > 1024 * 1024 ||
        fseek(f, 0, SEEK_SET) < 0) {
        fclose(f);
        pd_err_set(err, PD_ECONFIG, "drill-check-file \"%s\" is not a text file of at most 1 MiB",
                   path);
        return NULL;
    }
    buf = pd_malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

void
pd_checks_user(json_t *checks, const pd_check_target *t, const pd_config *cfg)
{
    const char *const *list = NULL;
    size_t n = pd_config_get_list(cfg, "drill-check", &list);
    const char *file = pd_config_get(cfg, "drill-check-file");
    const char *db = pd_config_get(cfg, "drill-check-database");
    pd_err e = PD_ERR_INIT;
    pd_pg *pg = NULL;
    int k = 0;

    if (n == 0 && file == NULL)
        return;
    if (db == NULL)
        db = pd_config_get(cfg, "pg-database");
    if (pd_check_connect(&pg, t, db, &e) < 0) {
        pd_check_add(checks, "user checks", "fail", "%s", e.msg);
        return;
    }
    for (size_t i = 0; i < n; i++)
        run_user_check(checks, pg, list[i], ++k);
    if (file) {
        char *text = read_check_file(file, &e);
        if (text == NULL) {
            pd_check_add(checks, "user checks", "fail", "%s", e.msg);
        } else {
            // A statement ends with ';' at the end of a line.
            char *start = text;
            for (char *p = text;; p++) {
                bool end = *p == '\0' || (*p == ';' && (p[1] == '\n' || p[1] == '\0'));
                if (!end)
                    continue;
                bool last = *p == '\0';
                *p = '\0';
                start += strspn(start, " \t\r\n");
                if (*start && strncmp(start, "--", 2) != 0)
                    run_user_check(checks, pg, start, ++k);
                else if (*start) {
                    // A comment line then a statement: skip whole comment lines.
                    char *s = start;
                    while (strncmp(s, "--", 2) == 0 && strchr(s, '\n'))
                        s = strchr(s, '\n') + 1;
                    s += strspn(s, " \t\r\n");
                    if (*s && strncmp(s, "--", 2) != 0)
                        run_user_check(checks, pg, s, ++k);
                }
                if (last)
                    break;
                start = p + 1;
            }
            pd_free(text);
        }
    }
    pd_pg_free(pg);
}
