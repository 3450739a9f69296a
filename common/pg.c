/* libpq connections (see pg.h). */
#include "common/pg.h"

#include <stdio.h>
#include <string.h>

#include "common/mem.h"

struct pd_pg {
    PGconn *conn;
    char desc[512];
};

void
pd_pg_opts_from_config(pd_pg_opts *opts, const pd_config *cfg)
{
    opts->host = pd_config_get(cfg, "pg-host");
    opts->port = pd_config_get_int(cfg, "pg-port");
    opts->user = pd_config_get(cfg, "pg-user");
    opts->dbname = pd_config_get(cfg, "pg-database");
}

/* The first line of libpq's error message, which may span several. */
static void
first_line(const char *s, char *buf, size_t bufsize)
{
    size_t n = strcspn(s, "\n");

    if (n >= bufsize)
        n = bufsize - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
}

int
pd_pg_connect(pd_pg **out, const pd_pg_opts *opts, pd_err *err)
{
    const char *keys[10], *vals[10];
    char port[16], timeout[16], cause[512];
    pd_pg *pg = pd_calloc(1, sizeof(*pg));
    int n = 0;

    *out = NULL;
    snprintf(timeout, sizeof(timeout), "%d", opts->connect_timeout ? opts->connect_timeout : 10);
    if (opts->host) {
        keys[n] = "host";
        vals[n++] = opts->host;
    }
    if (opts->port) {
        snprintf(port, sizeof(port), "%ld", opts->port);
        keys[n] = "port";
        vals[n++] = port;
    }
    if (opts->user) {
        keys[n] = "user";
        vals[n++] = opts->user;
    }
    if (opts->dbname && !opts->replication) {
        keys[n] = "dbname";
        vals[n++] = opts->dbname;
    }
    if (opts->replication) {
        keys[n] = "replication";
        vals[n++] = "true";
    }
    if (opts->options) {
        keys[n] = "options";
        vals[n++] = opts->options;
    }
    keys[n] = "application_name";
    vals[n++] = "pgdrill";
    keys[n] = "connect_timeout";
    vals[n++] = timeout;
    keys[n] = NULL;
    vals[n] = NULL;

    pg->conn = PQconnectdbParams(keys, vals, 0);
    snprintf(pg->desc, sizeof(pg->desc), "host=%s port=%s user=%s",
             opts->host ? opts->host : (PQhost(pg->conn) ? PQhost(pg->conn) : "default"),
             PQport(pg->conn) ? PQport(pg->conn) : "default",
             PQuser(pg->conn) ? PQuser(pg->conn) : "default");
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        first_line(PQerrorMessage(pg->conn), cause, sizeof(cause));
        pd_err_set(err, PD_EPG, "could not connect to PostgreSQL server \"%s\": %s", pg->desc,
                   cause);
        pd_err_hint(err, "check pg-host, pg-port and pg-user and that the server is running");
        pd_pg_free(pg);
        return PD_EPG;
    }
    *out = pg;
    return 0;
}

void
pd_pg_free(pd_pg *pg)
{
    if (pg == NULL)
        return;
    PQfinish(pg->conn);
    pd_free(pg);
}

PGconn *
pd_pg_conn(pd_pg *pg)
{
    return pg->conn;
}

const char *
pd_pg_describe(const pd_pg *pg)
{
    return pg->desc;
}

int
pd_pg_query_value(pd_pg *pg, const char *sql, char *buf, size_t bufsize, pd_err *err)
{
    char cause[512];
    PGresult *res = PQexec(pg->conn, sql);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        first_line(PQerrorMessage(pg->conn), cause, sizeof(cause));
        rc = pd_err_set(err, PD_EPG, "query on PostgreSQL server \"%s\" failed: %s", pg->desc,
                        cause);
    } else if (PQntuples(res) != 1 || PQnfields(res) != 1) {
        rc = pd_err_set(err, PD_EPG,
                        "query on PostgreSQL server \"%s\" returned %d rows of %d columns, "
                        "expected one value",
                        pg->desc, PQntuples(res), PQnfields(res));
    } else {
        snprintf(buf, bufsize, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

int
pd_pg_query(pd_pg *pg, PGresult **res, const char *sql, int nparams, const char *const *params,
            pd_err *err)
{
    char cause[512];
    PGresult *r = PQexecParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);

    *res = NULL;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        first_line(PQerrorMessage(pg->conn), cause, sizeof(cause));
        PQclear(r);
        return pd_err_set(err, PD_EPG, "query on PostgreSQL server \"%s\" failed: %s", pg->desc,
                          cause);
    }
    *res = r;
    return 0;
}
