/*
 * Retention: which backups expire keeps and why, and which archived WAL no
 * kept backup needs. Pure code (no I/O, the time comes in as a value), so
 * every rule has a unit test (tests/unit/test_retention.c).
 *
 * Key invariant: the WAL floor of a timeline is never above the start
 * segment of a kept physical backup on that timeline or an earlier one, so
 * every kept backup keeps all the WAL its point-in-time recovery needs.
 */
#ifndef PGDRILL_BACKUP_RETENTION_H
#define PGDRILL_BACKUP_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Why a backup is kept or removed. */
typedef enum pd_retention_reason {
    PD_RETENTION_KEEP_NO_POLICY,    /* neither retention-full nor retention-days is set */
    PD_RETENTION_KEEP_NEWEST,       /* the newest complete backup of its type */
    PD_RETENTION_KEEP_FULL,         /* among the newest retention-full of its type */
    PD_RETENTION_KEEP_DAYS,         /* needed to recover any point of the last retention-days */
    PD_RETENTION_KEEP_DRILLED,      /* the newest backup whose last drill passed */
    PD_RETENTION_KEEP_RUNNING,      /* incomplete, younger than the grace period */
    PD_RETENTION_REMOVE_EXPIRED,    /* beyond every retention rule that is set */
    PD_RETENTION_REMOVE_INCOMPLETE, /* incomplete, older than the grace period */
    PD_RETENTION_REMOVE_RESUMED,    /* an earlier expire began removing it */
} pd_retention_reason;

/* One backup as retention sees it; the caller fills the inputs. */
typedef struct pd_retention_backup {
    const char *id; /* borrowed */
    bool complete;  /* manifest.json present */
    bool logical;   /* type "logical": counted on its own, needs no WAL */
    /* logical: the names of the databases it holds (borrowed) */
    const char *const *databases;
    size_t n_databases;
    bool expiring; /* an earlier expire wrote its marker */
    bool drill_passed;
    int64_t stop_time;  /* complete: when the backup finished (seconds since the epoch) */
    int64_t last_write; /* incomplete: the newest of its objects' times and its ID's time */
    unsigned timeline;  /* complete physical backups */
    uint64_t start_lsn;
    /* set by pd_retention_apply() */
    bool keep;
    pd_retention_reason reason;
} pd_retention_backup;

typedef struct pd_retention_policy {
    long full; /* retention-full, 0 when unset */
    long days; /* retention-days, 0 when unset */
    bool keep_drilled;
    int64_t incomplete_grace; /* seconds */
    int64_t now;
} pd_retention_policy;

/*
 * Decides keep and reason of each of the n backups, which are sorted oldest
 * first (by ID). Rules, for physical backups, and for the logical backups
 * of each database on their own (a logical backup taken with --database
 * holds some databases only: it is kept while any rule keeps it for one of
 * them, so the newest backup of every database survives):
 *  - no retention key set: every complete backup is kept;
 *  - retention-full N keeps the newest N complete backups;
 *  - retention-days D keeps every complete backup that finished after
 *    now - D days and the newest one that finished before, so every point of
 *    the last D days stays recoverable;
 *  - both set: a backup goes only when neither keeps it;
 *  - the newest complete backup is always kept, and with keep_drilled the
 *    newest backup whose last drill passed.
 * An incomplete backup is removed when an earlier expire marked it, or,
 * with a retention key set, when its last write is at least
 * incomplete_grace old; otherwise it may still be running and is kept.
 * Without a retention key nothing else goes (and the caller keeps all WAL).
 */
void pd_retention_apply(pd_retention_backup *b, size_t n, const pd_retention_policy *p);

/* A short phrase for a reason ("beyond retention"), for logs and --json. */
const char *pd_retention_reason_text(pd_retention_reason r);

/*
 * The first WAL segment number (LSN / 16 MiB) kept on timeline tli: the
 * lowest start segment of the kept complete physical backups on tli or an
 * earlier timeline, or, when none is, of every kept physical backup. False
 * when no physical backup is kept: then all WAL is kept.
 */
bool pd_retention_wal_floor(const pd_retention_backup *b, size_t n, unsigned tli, uint64_t *segno);

/*
 * Parses an archived WAL file name: a segment, a ".partial" segment or a
 * ".backup" file ("000000010000000000000003.00000028.backup"). Fills tli and
 * segno and returns true; false for anything else (".history" files
 * included, which expire never removes).
 */
bool pd_retention_wal_parse(const char *name, unsigned *tli, uint64_t *segno);

#endif
