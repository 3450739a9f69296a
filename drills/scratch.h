/*
 * The scratch instance of a drill: a private directory, a PostgreSQL
 * postmaster started on it with every isolation setting forced on its
 * command line, and a guardian process that removes both whatever happens
 * to pgdrill.
 *
 * Layout of the scratch directory (0700, owned by the user the instance
 * runs as):
 *   data/          the restored data directory
 *   ts-<oid>/      restored tablespaces
 *   wal/           WAL fetched from the repository for this drill
 *   run/           the instance's Unix socket (its only listener)
 *   pg_hba.conf    local connections of the drill user only
 *   postgres.log   the instance's log
 *
 * Key invariant: from pd_scratch_create() on, a guardian process (forked
 * then) holds the read end of a pipe whose write end only pgdrill holds.
 * When pgdrill exits in any way (returns, is killed by a signal, even by
 * SIGKILL) without handing over with pd_scratch_keep(), the guardian stops
 * the postmaster (SIGQUIT, then SIGKILL) and removes the directory. SIGINT,
 * SIGTERM and SIGHUP to pgdrill wait for the guardian to finish before
 * pgdrill dies, so no postgres process and no scratch directory outlive it.
 */
#ifndef PGDRILL_DRILLS_SCRATCH_H
#define PGDRILL_DRILLS_SCRATCH_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/err.h"

typedef struct pd_scratch pd_scratch;

typedef struct pd_scratch_opts {
    const char *parent; /* where to make the directory; NULL: $TMPDIR or /var/tmp */
    const char *label;  /* the backup ID, for messages */
    const char *user;   /* run the instance as this user (pgdrill runs as root); NULL: ourselves */
    const char *pg_bin; /* directory of postgres, pg_verifybackup */
    int major;          /* their PostgreSQL major version (15, 16, ...) */
    /* Files drill-user must not own: the key file and the repository (NULL: none). */
    const char *protect[2];
} pd_scratch_opts;

/*
 * Makes the directory and starts the guardian. A user that does not exist,
 * root, or one owning a protected file, is PD_ECONFIG. When pgdrill runs as root the instance will
 * also get its own network namespace.
 */
PD_MUST_CHECK int pd_scratch_create(pd_scratch **out, const pd_scratch_opts *o, pd_err *err);

/* Paths inside the directory; borrowed from s. */
const char *pd_scratch_dir(const pd_scratch *s);
const char *pd_scratch_data(const pd_scratch *s);
const char *pd_scratch_wal(const pd_scratch *s);
const char *pd_scratch_socket(const pd_scratch *s);
const char *pd_scratch_log(const pd_scratch *s);
int pd_scratch_port(const pd_scratch *s);
bool pd_scratch_netns(const pd_scratch *s);

/* Gives the whole directory to the instance's user (after the restore wrote it). */
PD_MUST_CHECK int pd_scratch_hand_over(pd_scratch *s, pd_err *err);

/*
 * Logical drills: makes an empty data directory with initdb (the same
 * major version, from pg_bin of the options) as the instance's user, with
 * superuser as its bootstrap superuser, encoding UTF8 and locale C (each
 * database is then created with its own dumped collation). Call after
 * pd_scratch_hand_over. PD_EFAIL with initdb's error when it fails.
 */
PD_MUST_CHECK int pd_scratch_initdb(pd_scratch *s, const char *superuser, pd_err *err);

/*
 * Starts the postmaster with the isolation settings and then settings
 * ("name=value", NULL-terminated: recovery targets and restore_command),
 * which override the restored postgresql.conf and postgresql.auto.conf.
 */
PD_MUST_CHECK int pd_scratch_start(pd_scratch *s, const char *const *settings, pd_err *err);

/*
 * Whether the postmaster still runs. When it has exited: PD_ECHECK naming
 * how, with the last FATAL or PANIC line of its log.
 */
PD_MUST_CHECK int pd_scratch_alive(pd_scratch *s, pd_err *err);

/* Fast shutdown; waits for the postmaster to exit (SIGQUIT, then SIGKILL, when slow). */
void pd_scratch_stop(pd_scratch *s);

/*
 * The last line of the log containing FATAL or PANIC (or the last line)
 * into buf; "" when none.
 */
void pd_scratch_log_tail(const pd_scratch *s, char *buf, size_t bufsize);

/* Leaves the instance running and the directory in place when s is freed (--keep). */
void pd_scratch_keep(pd_scratch *s);

/* Stops the instance and removes the directory (unless kept); NULL is fine. */
void pd_scratch_free(pd_scratch *s);

#endif
