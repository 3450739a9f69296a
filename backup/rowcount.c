/*
 * Row counts recorded with a backup (see rowcount.h).
 *
 * Threads: begin starts one counting thread, which owns tables until it is
 * joined (finish or free); it logs nothing and records "rows" or "error" in
 * each table, which the caller's thread logs after the join. cancel, sock
 * and stopping are shared, only under mu; the counting thread clears cancel
 * and sock before it closes the connection they belong to.
 */
#include "backup/rowcount.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "common/mem.h"

/* A failed backup's wait for the counting thread: cancel every so often... */
#define CANCEL_EVERY_MS 200
/* ...and after this long, shut its connection down under it. */
#define CANCEL_SHUTDOWN_MS 1000

struct pd_rowcount {
    pd_pg_opts po;  /* strings borrowed from the configuration */
    json_t *tables; /* [{database, table, changes_before[, rows | error]}] */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    PGcancel *cancel; /* the counting connection's, or NULL */
    int sock;         /* its socket, or -1 */
    bool stopping;    /* a failed backup wants the thread to end */
};

/* Inserted plus deleted rows since the statistics were reset: what can change a count. */
#define CHANGES_SQL                                                         \
    "SELECT coalesce(pg_stat_get_tuples_inserted(c.oid), 0) + "             \
    "coalesce(pg_stat_get_tuples_deleted(c.oid), 0) FROM pg_class c WHERE " \
    "c.oid = $1::regclass"

/* Whether an index-only scan counts the table cheaply (see count_rows). */
#define INDEX_COUNT_SQL                                                                    \
    "SELECT c.relpages > 0 AND c.relallvisible >= 0.9 * c.relpages AND EXISTS ("           \
    "SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "                  \
    "JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = c.oid AND am.amname = 'btree' " \
    "AND i.indisvalid AND i.indpred IS NULL) FROM pg_class c WHERE c.oid = $1::regclass"

/*
 * The largest tables by rows, from the catalog and the statistics
 * (reltuples from the last VACUUM or ANALYZE, or the live rows counted
 * since, whichever is more), not by pg_relation_size, which waits for a lock
 * an ALTER TABLE or VACUUM FULL holds: choosing takes no lock at all.
 */
static const char largest_sql[] =
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
    "coalesce(pg_stat_get_tuples_inserted(c.oid), 0) + "
    "coalesce(pg_stat_get_tuples_deleted(c.oid), 0) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND c.relpersistence = 'p' "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
    "AND has_table_privilege(c.oid, 'SELECT') "
    "ORDER BY greatest(c.reltuples, coalesce(pg_stat_get_live_tuples(c.oid), 0)) DESC, c.oid "
    "LIMIT 5";

static int
connect_db(pd_pg **pg, const pd_rowcount *rc, const char *db, pd_err *err)
{
    pd_pg_opts o = rc->po;

    o.dbname = db;
    return pd_pg_connect(pg, &o, err);
}

static void *count_all(void *arg);

pd_rowcount *
pd_rowcount_begin(const pd_pg_opts *po)
{
    pd_rowcount *rc = pd_calloc(1, sizeof(*rc));
    pd_err err = PD_ERR_INIT;
    PGresult *dbs = NULL, *res = NULL;
    pd_pg *pg = NULL;
    int prc;

    rc->po = *po;
    rc->tables = json_array();
    rc->sock = -1;
    pthread_mutex_init(&rc->mu, NULL);
    if (pd_pg_connect(&pg, po, &err) < 0 ||
        pd_pg_query(pg, &dbs,
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                    "AND has_database_privilege(datname, 'CONNECT') ORDER BY datname LIMIT 64",
                    0, NULL, &err) < 0) {
        pd_log_warning("row counts will not be recorded with this backup: %s", err.msg);
        pd_pg_free(pg);
        return rc;
    }
    pd_pg_free(pg);
    pg = NULL;
    for (int i = 0; i < PQntuples(dbs); i++) {
        const char *db = PQgetvalue(dbs, i, 0);
        pd_err e = PD_ERR_INIT;
        if (connect_db(&pg, rc, db, &e) < 0 ||
            pd_pg_query(pg, &res, largest_sql, 0, NULL, &e) < 0) {
            pd_log_warning("row counts of database \"%s\" will not be recorded: %s", db, e.msg);
        } else {
            for (int k = 0; k < PQntuples(res); k++) {
                json_t *t = json_object();
                json_object_set_new(t, "database", json_string(db));
                json_object_set_new(t, "table", json_string(PQgetvalue(res, k, 0)));
                json_object_set_new(t, "changes_before",
                                    json_integer(strtoll(PQgetvalue(res, k, 1), NULL, 10)));
                json_array_append_new(rc->tables, t);
            }
        }
        PQclear(res);
        res = NULL;
        pd_pg_free(pg);
        pg = NULL;
    }
    PQclear(dbs);
    if (json_array_size(rc->tables) == 0)
        return rc;
    if ((prc = pthread_create(&rc->thread, NULL, count_all, rc)) != 0)
        pd_log_warning("row counts will not be recorded with this backup: could not start a "
                       "thread: %s",
                       strerror(prc));
    else
        rc->started = true;
    return rc;
}

/* Counts one table in its own read-only transaction; -1 when it cannot. */
static long long
count_rows(pd_pg *pg, const char *table, pd_err *err)
{
    PGresult *res = NULL;
    const char *params[1] = {table};
    long long rows = -1;
    char *sql = pd_asprintf("SELECT count(*) FROM %s", table); // quote_ident'ed above

    if (pd_pg_query(pg, &res, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err) < 0)
        goto cleanup;
    PQclear(res);
    // For this transaction: a lock held elsewhere (ALTER TABLE, VACUUM FULL)
    // is waited for 30 s at most, which is then all it can add to the
    // backup's end; no parallel workers, as the count runs beside the backup
    // and the server's own queries may need them; no JIT for one count.
    if (pd_pg_query(pg, &res,
                    "SELECT set_config('statement_timeout', '10min', true), "
                    "set_config('lock_timeout', '30s', true), "
                    "set_config('max_parallel_workers_per_gather', '0', true), "
                    "set_config('jit', 'off', true)",
                    0, NULL, err) < 0)
        goto cleanup;
    PQclear(res);
    // A table whose visibility map says nearly every page is all-visible
    // and that has a btree index is counted from the index (an index-only
    // scan reads the index, often a tenth of the table, and few heap pages).
    if (pd_pg_query(pg, &res, INDEX_COUNT_SQL, 1, params, err) < 0)
        goto cleanup;
    bool by_index = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    res = NULL;
    if (by_index && pd_pg_query(pg, &res,
                                "SELECT set_config('enable_seqscan', 'off', true), "
                                "set_config('enable_bitmapscan', 'off', true)",
                                0, NULL, err) < 0)
        goto cleanup;
    PQclear(res);
    if (pd_pg_query(pg, &res, sql, 0, NULL, err) < 0)
        goto cleanup;
    rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (pd_pg_query(pg, &res, "COMMIT", 0, NULL, err) < 0)
        rows = -1;
cleanup:
    PQclear(res);
    pd_free(sql);
    return rows;
}

/* Makes pg the connection a failed backup cancels (NULL: none); false when stopping. */
static bool
set_cancel(pd_rowcount *rc, pd_pg *pg)
{
    bool go;

    pthread_mutex_lock(&rc->mu);
    PQfreeCancel(rc->cancel);
    rc->cancel = pg ? PQgetCancel(pd_pg_conn(pg)) : NULL;
    rc->sock = pg ? PQsocket(pd_pg_conn(pg)) : -1;
    go = !rc->stopping;
    pthread_mutex_unlock(&rc->mu);
    return go;
}

static void
set_error(json_t *t, const char *msg)
{
    // Server messages come in the server's encoding: no UTF-8 check.
    json_object_set_new(t, "error", json_stringn_nocheck(msg, strlen(msg)));
}

/* The counting thread: counts every table while the backup streams. */
static void *
count_all(void *arg)
{
    pd_rowcount *rc = arg;
    const char *open_db = NULL;
    pd_pg *pg = NULL;
    json_t *t;
    size_t i;

    json_array_foreach(rc->tables, i, t)
    {
        const char *db = json_string_value(json_object_get(t, "database"));
        const char *table = json_string_value(json_object_get(t, "table"));
        pd_err e = PD_ERR_INIT;
        long long rows;

        if (open_db == NULL || strcmp(open_db, db) != 0) {
            if (!set_cancel(rc, NULL))
                break;
            pd_pg_free(pg);
            pg = NULL;
            open_db = db;
            if (connect_db(&pg, rc, db, &e) < 0) {
                set_error(t, e.msg);
                continue;
            }
        }
        if (pg == NULL) {
            set_error(t, "no connection to its database");
            continue;
        }
        if (!set_cancel(rc, pg))
            break;
        if ((rows = count_rows(pg, table, &e)) < 0) {
            set_error(t, e.msg);
            PGTransactionStatusType ts = PQtransactionStatus(pd_pg_conn(pg));
            if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
                PQclear(PQexec(pd_pg_conn(pg), "ROLLBACK"));
            continue;
        }
        json_object_set_new(t, "rows", json_integer(rows));
    }
    set_cancel(rc, NULL);
    pd_pg_free(pg);
    return NULL;
}

/* Asks the server to cancel the counting thread's query, without holding mu. */
static void
cancel_query(pd_rowcount *rc)
{
    PGcancel *c;
    char buf[256];

    // Taken out of rc while in use: set_cancel then neither frees nor reuses it.
    pthread_mutex_lock(&rc->mu);
    c = rc->cancel;
    rc->cancel = NULL;
    pthread_mutex_unlock(&rc->mu);
    if (c == NULL)
        return;
    (void)PQcancel(c, buf, sizeof(buf));
    pthread_mutex_lock(&rc->mu);
    if (rc->cancel == NULL && rc->sock >= 0)
        rc->cancel = c; // still that connection's: keep it for the next try
    else
        PQfreeCancel(c);
    pthread_mutex_unlock(&rc->mu);
}

static bool
timed_join(pthread_t thread, long ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000 * 1000;
    if (until.tv_nsec >= 1000 * 1000 * 1000) {
        until.tv_sec++;
        until.tv_nsec -= 1000 * 1000 * 1000;
    }
    return pthread_timedjoin_np(thread, NULL, &until) == 0;
}

/*
 * Joins the counting thread. With stop (a failed backup): cancels its query,
 * again every CANCEL_EVERY_MS (a cancel that arrives between two queries does
 * nothing), and after CANCEL_SHUTDOWN_MS shuts its connection down, so a
 * libpq call blocked on a server that does not answer returns too.
 */
static void
join_counter(pd_rowcount *rc, bool stop)
{
    if (!rc->started)
        return;
    rc->started = false;
    if (!stop) {
        if (pthread_tryjoin_np(rc->thread, NULL) != 0) {
            pd_log_info("the backup's data is stored; waiting for the drill's row counts (a "
                        "table another session holds locked is waited for 30 s at most)");
            pthread_join(rc->thread, NULL);
        }
        return;
    }
    pthread_mutex_lock(&rc->mu);
    rc->stopping = true;
    pthread_mutex_unlock(&rc->mu);
    for (long waited = 0; waited < CANCEL_SHUTDOWN_MS; waited += CANCEL_EVERY_MS) {
        cancel_query(rc);
        if (timed_join(rc->thread, CANCEL_EVERY_MS))
            return;
    }
    pthread_mutex_lock(&rc->mu);
    if (rc->sock >= 0)
        shutdown(rc->sock, SHUT_RDWR);
    pthread_mutex_unlock(&rc->mu);
    pthread_join(rc->thread, NULL);
}

json_t *
pd_rowcount_finish(pd_rowcount *rc)
{
    json_t *out = json_array(), *t;
    const char *open_db = NULL;
    pd_pg *pg = NULL;
    size_t i;

    join_counter(rc, false);
    json_array_foreach(rc->tables, i, t)
    {
        const char *db = json_string_value(json_object_get(t, "database"));
        const char *table = json_string_value(json_object_get(t, "table"));
        const char *params[1] = {table};
        json_t *rows = json_object_get(t, "rows");
        PGresult *res = NULL;
        pd_err e = PD_ERR_INIT;

        if (json_object_get(t, "error")) {
            pd_log_warning("row count of table %s in database \"%s\" will not be recorded (drills "
                           "of this backup will not compare it): %s",
                           table, db, json_string_value(json_object_get(t, "error")));
            continue;
        }
        if (rows == NULL)
            continue;
        if (open_db == NULL || strcmp(open_db, db) != 0) {
            pd_pg_free(pg);
            pg = NULL;
            open_db = db;
            if (connect_db(&pg, rc, db, &e) < 0) {
                pd_log_warning("row counts of database \"%s\" will not be recorded: %s", db, e.msg);
                continue;
            }
        }
        if (pg == NULL)
            continue;
        // Read after the backup ended (each query a new statistics snapshot),
        // so the changes span the whole backup and the count, wherever it fell.
        if (pd_pg_query(pg, &res, CHANGES_SQL, 1, params, &e) < 0 || PQntuples(res) != 1) {
            pd_log_warning("row count of table %s in database \"%s\" will not be recorded: %s",
                           table, db, e.msg[0] ? e.msg : "no statistics row");
            PQclear(res);
            continue;
        }
        long long changes = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        long long before = json_integer_value(json_object_get(t, "changes_before"));
        PQclear(res);
        json_t *o = json_object();
        json_object_set_new(o, "database", json_string(db));
        json_object_set_new(o, "table", json_string(table));
        json_object_set_new(o, "rows", json_incref(rows));
        // A statistics reset in between makes the counter smaller: then nothing is known.
        json_object_set_new(o, "changes",
                            changes >= before ? json_integer(changes - before) : json_null());
        json_array_append_new(out, o);
    }
    pd_pg_free(pg);
    return out;
}

void
pd_rowcount_free(pd_rowcount *rc)
{
    if (rc == NULL)
        return;
    join_counter(rc, true);
    PQfreeCancel(rc->cancel);
    pthread_mutex_destroy(&rc->mu);
    json_decref(rc->tables);
    pd_free(rc);
}

void
pd_rowcount_in_snapshot(json_t *out, pd_pg *pg, const char *db)
{
    PGresult *tables = NULL, *res = NULL;
    pd_err e = PD_ERR_INIT;

    if (pd_pg_query(pg, &tables, largest_sql, 0, NULL, &e) < 0) {
        pd_log_warning("row counts of database \"%s\" will not be recorded: %s", db, e.msg);
        return;
    }
    for (int k = 0; k < PQntuples(tables); k++) {
        const char *table = PQgetvalue(tables, k, 0);
        char *sql = pd_asprintf("SELECT count(*) FROM %s", table); // quote_ident'ed
        // A savepoint: one table that fails leaves the snapshot usable for the others.
        if (pd_pg_query(pg, &res, "SAVEPOINT pgdrill_count", 0, NULL, &e) == 0) {
            PQclear(res);
            res = NULL;
            if (pd_pg_query(pg, &res, sql, 0, NULL, &e) == 0) {
                json_t *o = json_object();
                json_object_set_new(o, "database", json_string(db));
                json_object_set_new(o, "table", json_string(table));
                json_object_set_new(o, "rows",
                                    json_integer(strtoll(PQgetvalue(res, 0, 0), NULL, 10)));
                json_object_set_new(o, "changes", json_integer(0));
                json_array_append_new(out, o);
            } else {
                pd_log_warning("row count of table %s in database \"%s\" will not be recorded: %s",
                               table, db, e.msg);
                PQclear(PQexec(pd_pg_conn(pg), "ROLLBACK TO SAVEPOINT pgdrill_count"));
            }
            PQclear(res);
            res = NULL;
        }
        pd_free(sql);
    }
    PQclear(tables);
}
