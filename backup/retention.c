/* Retention rules (see retention.h). */
#include "backup/retention.h"

#include <stdio.h>
#include <string.h>

#include "backup/archive.h"
#include "common/mem.h"

#define SEG_SIZE     (16ULL * 1024 * 1024)
#define SEGS_PER_LOG (0x100000000ULL / SEG_SIZE)

/* Keeps b with reason r unless an earlier rule kept it already. */
static void
keep(pd_retention_backup *b, pd_retention_reason r)
{
    if (!b->keep) {
        b->keep = true;
        b->reason = r;
    }
}

/*
 * Whether b is in the set the rules run over: complete physical backups
 * (db NULL), or the complete logical backups holding database db ("" for
 * the logical backups whose manifest names none).
 */
static bool
in_set(const pd_retention_backup *b, bool logical, const char *db)
{
    if (!b->complete || b->logical != logical)
        return false;
    if (!logical)
        return true;
    if (b->n_databases == 0)
        return db[0] == '\0';
    for (size_t k = 0; k < b->n_databases; k++)
        if (strcmp(b->databases[k], db) == 0)
            return true;
    return false;
}

/* The rules over one set of complete backups (in_set). */
static void
apply_set(pd_retention_backup *b, size_t n, const pd_retention_policy *p, bool logical,
          const char *db)
{
    size_t i, count = 0;
    bool older_kept = false;
    int64_t window = p->now - (int64_t)p->days * 86400;

    for (i = n; i-- > 0;) {
        if (!in_set(&b[i], logical, db))
            continue;
        count++;
        if (count == 1)
            keep(&b[i], PD_RETENTION_KEEP_NEWEST);
        if (p->full == 0 && p->days == 0)
            keep(&b[i], PD_RETENTION_KEEP_NO_POLICY);
        if (p->full > 0 && count <= (size_t)p->full)
            keep(&b[i], PD_RETENTION_KEEP_FULL);
        if (p->days > 0) {
            if (b[i].stop_time > window) {
                keep(&b[i], PD_RETENTION_KEEP_DAYS);
            } else if (!older_kept) {
                // The newest backup that finished before the window starts:
                // recovery to the window's first moments begins from it.
                older_kept = true;
                keep(&b[i], PD_RETENTION_KEEP_DAYS);
            }
        }
    }
}

void
pd_retention_apply(pd_retention_backup *b, size_t n, const pd_retention_policy *p)
{
    size_t i;

    for (i = 0; i < n; i++) {
        b[i].keep = false;
        b[i].reason = PD_RETENTION_REMOVE_EXPIRED;
    }
    apply_set(b, n, p, false, NULL);
    // Each database of each logical backup: a set per database (keeping is
    // idempotent, so a database met again changes nothing).
    for (i = 0; i < n; i++) {
        if (!b[i].complete || !b[i].logical)
            continue;
        if (b[i].n_databases == 0)
            apply_set(b, n, p, true, "");
        for (size_t k = 0; k < b[i].n_databases; k++)
            apply_set(b, n, p, true, b[i].databases[k]);
    }
    if (p->keep_drilled) {
        for (i = n; i-- > 0;) {
            if (b[i].complete && b[i].drill_passed) {
                keep(&b[i], PD_RETENTION_KEEP_DRILLED);
                break;
            }
        }
    }
    for (i = 0; i < n; i++) {
        if (b[i].complete)
            continue;
        if (b[i].expiring)
            b[i].reason = PD_RETENTION_REMOVE_RESUMED;
        else if (p->full == 0 && p->days == 0)
            keep(&b[i], PD_RETENTION_KEEP_NO_POLICY);
        else if (p->now - b[i].last_write >= p->incomplete_grace)
            b[i].reason = PD_RETENTION_REMOVE_INCOMPLETE;
        else
            keep(&b[i], PD_RETENTION_KEEP_RUNNING);
    }
}

const char *
pd_retention_reason_text(pd_retention_reason r)
{
    switch (r) {
    case PD_RETENTION_KEEP_NO_POLICY:
        return "no retention set";
    case PD_RETENTION_KEEP_NEWEST:
        return "newest complete backup";
    case PD_RETENTION_KEEP_FULL:
        return "within retention-full";
    case PD_RETENTION_KEEP_DAYS:
        return "within retention-days";
    case PD_RETENTION_KEEP_DRILLED:
        return "newest backup whose last drill passed";
    case PD_RETENTION_KEEP_RUNNING:
        return "incomplete, may still be running";
    case PD_RETENTION_REMOVE_EXPIRED:
        return "beyond retention";
    case PD_RETENTION_REMOVE_INCOMPLETE:
        return "incomplete, older than retention-incomplete-grace";
    case PD_RETENTION_REMOVE_RESUMED:
        return "removal begun by an earlier expire";
    }
    return "?";
}

bool
pd_retention_wal_floor(const pd_retention_backup *b, size_t n, unsigned tli, uint64_t *segno)
{
    bool any = false, own = false;
    uint64_t all = UINT64_MAX, mine = UINT64_MAX;

    for (size_t i = 0; i < n; i++) {
        if (!b[i].keep || !b[i].complete || b[i].logical)
            continue;
        uint64_t s = b[i].start_lsn / SEG_SIZE;
        any = true;
        if (s < all)
            all = s;
        if (b[i].timeline <= tli) {
            own = true;
            if (s < mine)
                mine = s;
        }
    }
    // A timeline older than every kept backup is cut at the oldest kept
    // start, never higher: a server still writing it (an archive-push
    // running now) only ever adds segments above that.
    *segno = own ? mine : all;
    return any;
}

bool
pd_retention_wal_parse(const char *name, unsigned *tli, uint64_t *segno)
{
    size_t len = strlen(name);
    unsigned t, log, seg;

    // The archive's own grammar of names: a segment, .partial or .backup
    // file goes to wal/<timeline+log>/, a .history file to wal/ itself.
    char *object = pd_wal_object_name(name);
    bool segment = object && strchr(object + 4, '/') != NULL;
    pd_free(object);
    if (len < 24 || !segment)
        return false;
    if (sscanf(name, "%8X%8X%8X", &t, &log, &seg) != 3 || seg >= SEGS_PER_LOG)
        return false;
    *tli = t;
    *segno = (uint64_t)log * SEGS_PER_LOG + seg;
    return true;
}
