/*
 * Restoring a logical backup: the globals (roles, tablespaces) through
 * libpq, statement by statement, and each database's custom-format dump
 * through pg_restore, never through psql.
 *
 * One job: the object streams from the repository through the pipeline into
 * pg_restore's stdin (--single-transaction), in constant memory and with no
 * temporary file; its last 64 KiB are held back until the whole object has
 * verified, so pg_restore, which needs the dump's end to finish, never
 * commits a restore from a damaged object. --jobs N: pg_restore needs a seekable file for parallel
 * workers, so the dump is first decrypted (every hash and tag checked) into
 * a temporary file (mode 0600, O_EXCL, in temp_dir) that is removed when
 * pg_restore ends, whatever happens; it costs the dump's plaintext size on
 * disk, which is checked before it is written.
 *
 * Key invariant: a target database that exists and holds anything is
 * refused unless clean; one the restore created is dropped again when the
 * restore fails, so a failure leaves the server as it was.
 */
#ifndef PGDRILL_RESTORE_LOGICAL_H
#define PGDRILL_RESTORE_LOGICAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"
#include "common/err.h"
#include "common/pg.h"
#include "storage/repo.h"

/* Bytes of globals.sql a restore reads at most (roles and tablespaces). */
#define PD_LOGICAL_GLOBALS_MAX (64 * 1024 * 1024)

typedef struct pd_logical_db_opts {
    /* The server: host, port, user; dbname is the maintenance database (postgres). */
    const pd_pg_opts *server;
    const char *pg_bin;   /* directory of pg_restore */
    const char *target;   /* database to restore into; NULL: the dumped database's name */
    int jobs;             /* pg_restore --jobs; 1 streams into its stdin */
    const char *temp_dir; /* for jobs > 1 */
    bool clean;           /* restore into a non-empty database (pg_restore --clean --if-exists) */
    bool recreate;        /* drills: drop an existing target and create it from the manifest */
    bool no_tablespaces;  /* drills: pg_restore --no-tablespaces */
} pd_logical_db_opts;

/*
 * Restores database entry db (an element of the manifest's "databases") of
 * the logical backup manifest from r. PD_ECONFIG: the target exists and is
 * not empty (without clean); PD_ECORRUPT: the object is damaged (pg_restore
 * is killed before it commits); PD_EPG: pg_restore reported errors (its own
 * lines in the message) or the server refused.
 */
PD_MUST_CHECK int pd_logical_restore_database(pd_repo *r, json_t *manifest, json_t *db,
                                              const pd_logical_db_opts *o, pd_err *err);

/*
 * Runs the backup's globals.sql on the server (o->server, connected to its
 * maintenance database), statement by statement; a CREATE ROLE for a role
 * that exists already is not an error (the ALTER ROLE after it sets its
 * attributes). skip_tablespaces leaves out every statement about a
 * tablespace (drills: their locations are the source's paths). *applied and
 * *skipped count statements. A statement that fails is PD_EPG naming it and
 * the server's error; the others still run.
 */
PD_MUST_CHECK int pd_logical_apply_globals(pd_repo *r, json_t *manifest, const pd_pg_opts *server,
                                           bool skip_tablespaces, int *applied, int *skipped,
                                           pd_err *err);

/*
 * Splits SQL text as pg_dumpall writes it into statements: from *pos, skips
 * blanks, comments and psql meta-command lines (\connect, \restrict), and
 * sets [*start, *start + *len) to the next statement, its ';' included.
 * Quotes ('...', E'...', "...", $tag$...$tag$) and comments are respected.
 * Returns 1 with a statement, 0 at the end; *pos moves past it.
 */
int pd_logical_next_statement(const char *sql, size_t sqllen, size_t *pos, size_t *start,
                              size_t *len);

/* The restore command's options. */
typedef struct pd_restore_logical_opts {
    const char *backup;          /* ID or "latest"; NULL: the newest logical backup */
    const char *database;        /* the database in the backup */
    const char *target_database; /* NULL: the same name */
    int jobs;                    /* 1 (stdin) or more (temporary file) */
    const char *temp_dir;        /* NULL: $TMPDIR, else /var/tmp */
    bool clean;
} pd_restore_logical_opts;

/*
 * pgdrill restore --type logical. *manifest (caller's) is the restored
 * backup's. PD_ECONFIG: no such backup, not a logical backup, no such
 * database in it, the target is not empty.
 */
PD_MUST_CHECK int pd_restore_logical(json_t **manifest, const pd_config *cfg,
                                     const pd_restore_logical_opts *o, pd_err *err);

#endif
