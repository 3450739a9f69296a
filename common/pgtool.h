/*
 * Running PostgreSQL's client programs (pg_dump, pg_dumpall, pg_restore,
 * initdb) as children: how they connect and what they said.
 *
 * Key invariant: nothing secret and nothing that could be read as another
 * connection parameter reaches their argv. The connection's host, port and
 * user go through the environment (PGHOST, PGPORT, PGUSER); a password
 * only through pgdrill's own environment (PGPASSWORD, PGPASSFILE), which
 * the child inherits; the database name as a quoted conninfo value, so a
 * name such as "host=elsewhere" stays a name.
 */
#ifndef PGDRILL_COMMON_PGTOOL_H
#define PGDRILL_COMMON_PGTOOL_H

#include <stddef.h>

#include "common/pg.h"

#define PD_PGTOOL_ENV_MAX 8

/* The environment changes for a child (pd_child_opts.env). */
typedef struct pd_pgtool_env {
    const char *env[PD_PGTOOL_ENV_MAX]; /* NULL-terminated, pointing into the buffers below */
    char host[512], port[32], user[160], options[256];
} pd_pgtool_env;

/*
 * Fills e from po: PGHOST, PGPORT, PGUSER and PGOPTIONS (po->options) when
 * set there, PGDATABASE removed (the conninfo names the database),
 * PGAPPNAME=pgdrill.
 */
void pd_pgtool_env_init(pd_pgtool_env *e, const pd_pg_opts *po);

/* "dbname='name'" with ' and \ escaped: the -d argument of the programs. A new string. */
char *pd_pgtool_conninfo(const char *dbname);

/*
 * What a client program said on stderr, for one error line: its lines that
 * carry "error:" (or, when none does, its last line), joined with "; ",
 * newlines removed, into buf; "" when it wrote nothing.
 */
void pd_pgtool_errors(const char *text, char *buf, size_t bufsize);

#endif
