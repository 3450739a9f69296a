/*
 * PostgreSQL connections through libpq, configured from pg-host, pg-port,
 * pg-user and pg-database. Parameters go to PQconnectdbParams as keyword
 * arrays, never as a built conninfo string, so no value can inject another;
 * passwords come from libpq's own sources (PGPASSWORD, ~/.pgpass), never from
 * pgdrill's argv or logs.
 */
#ifndef PGDRILL_COMMON_PG_H
#define PGDRILL_COMMON_PG_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "common/config.h"
#include "common/err.h"

typedef struct pd_pg pd_pg;

typedef struct pd_pg_opts {
    const char *host;    /* socket directory or host name; NULL: libpq default */
    long port;           /* 0: libpq default */
    const char *user;    /* NULL: libpq default */
    const char *dbname;  /* NULL: libpq default */
    bool replication;    /* a physical replication connection */
    int connect_timeout; /* seconds; 0: 10 */
    const char *options; /* libpq "options" (server settings for the session); NULL: none */
} pd_pg_opts;

#define PD_PG_OPTS_INIT                     \
    {                                       \
        NULL, 0, NULL, NULL, false, 0, NULL \
    }

/* Fills opts from the cluster's configuration (borrowed strings from cfg). */
void pd_pg_opts_from_config(pd_pg_opts *opts, const pd_config *cfg);

/* Connects; PD_EPG with the server's first error line on failure. */
PD_MUST_CHECK int pd_pg_connect(pd_pg **out, const pd_pg_opts *opts, pd_err *err);

void pd_pg_free(pd_pg *pg);

/* The underlying connection, borrowed. */
PGconn *pd_pg_conn(pd_pg *pg);

/* "host=/run/postgresql port=5432 user=postgres dbname=postgres" for messages. */
const char *pd_pg_describe(const pd_pg *pg);

/*
 * Runs a query returning one row and one column and copies the value into
 * buf. PD_EPG when it fails or returns another shape.
 */
PD_MUST_CHECK int pd_pg_query_value(pd_pg *pg, const char *sql, char *buf, size_t bufsize,
                                    pd_err *err);

/*
 * Runs sql with nparams text parameters ($1...; params may be NULL when 0).
 * On success *res (PQclear it) holds the result, which returned rows or
 * completed; on failure *res is NULL and err names the server and the
 * server's first error line.
 */
PD_MUST_CHECK int pd_pg_query(pd_pg *pg, PGresult **res, const char *sql, int nparams,
                              const char *const *params, pd_err *err);

#endif
