/*
 * pgdrill expire (see expire.h).
 *
 * Removal order, crash-safe: a kill -9 at any point leaves a repository that
 * verify passes and list shows consistently, and the next expire finishes
 * the job.
 *  1. The cluster's lock (the one backup and key rotation take) is held for
 *     the whole run, so no backup of this host runs beside it; a backup from
 *     another host is protected by retention-incomplete-grace.
 *  2. A backup goes first: the marker "expiring" is committed into it, then
 *     its manifest.json is removed. From then on it is incomplete (never
 *     restored, skipped by verify) and the marker tells the next expire to
 *     finish it whatever its age.
 *  3. Then its other objects one by one, then the marker with the
 *     directory. A kill inside that last step can leave an empty directory
 *     on a local repository, which no command sees (listings show objects)
 *     and a backup of the same ID would reuse.
 *  4. WAL goes after every backup: while a removed backup was still
 *     complete, its WAL was still there, so verify never sees a gap. Only
 *     files below the floor of their timeline go (retention.h), which lies
 *     at or below the start of every kept backup, and .history files never:
 *     an archive-push running now only adds files above the floor. So they
 *     go in batches, in no particular order (a kill midway leaves some of
 *     them, below every backup, for the next run).
 */
#include "backup/expire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/retention.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "drills/report.h"
#include "restore/catalog.h"
#include "restore/target.h"
#include "storage/repo.h"

#define SEG_SIZE (16ULL * 1024 * 1024)

/* WAL files removed per storage call (S3 DeleteObjects takes 1000 keys). */
#define WAL_BATCH 1000

/* What the backups/ listing says of one backup beyond the catalog. */
typedef struct seen {
    char id[64];
    bool marker;
    int64_t mtime; /* newest object */
} seen;

typedef struct seen_list {
    seen *s;
    size_t n, cap;
    size_t prefix_len;
} seen_list;

/* WAL of one timeline that goes. */
typedef struct wal_tli {
    unsigned tli;
    uint64_t floor;
    size_t files;
    uint64_t bytes;
    char first[48], last[48];
} wal_tli;

typedef struct wal_plan {
    const pd_retention_backup *b;
    size_t nb;
    bool have_floor;
    char **paths; /* to remove */
    size_t n, cap;
    wal_tli *t;
    size_t nt;
} wal_plan;

/*
 * Test hook: PGDRILL_TEST_EXPIRE_CRASH=N exits as a crash would after N
 * changes (and WAL files then go one per change).
 */
static void
crash_point(void)
{
    static long changes;
    const char *n = getenv("PGDRILL_TEST_EXPIRE_CRASH");

    if (n && ++changes >= strtol(n, NULL, 10))
        _exit(137);
}

static int
on_backup_object(void *payload, const pd_storage_entry *e, pd_err *err)
{
    seen_list *l = payload;
    const char *rest = e->path + l->prefix_len;
    const char *slash = strchr(rest, '/');
    size_t idlen, i;

    (void)err;
    if (slash == NULL || (idlen = (size_t)(slash - rest)) == 0 || idlen >= sizeof(l->s[0].id))
        return 0;
    for (i = 0; i < l->n; i++)
        if (strlen(l->s[i].id) == idlen && strncmp(l->s[i].id, rest, idlen) == 0)
            break;
    if (i == l->n) {
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 16;
            l->s = pd_realloc(l->s, l->cap * sizeof(*l->s));
        }
        memset(&l->s[i], 0, sizeof(l->s[i]));
        memcpy(l->s[i].id, rest, idlen);
        l->n++;
    }
    if (strcmp(slash + 1, PD_EXPIRE_MARKER) == 0)
        l->s[i].marker = true;
    if (e->mtime > l->s[i].mtime)
        l->s[i].mtime = e->mtime;
    return 0;
}

static const seen *
find_seen(const seen_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->s[i].id, id) == 0)
            return &l->s[i];
    return NULL;
}

/* The time a backup ID names ("20261124T020000Z"), or 0. */
static int64_t
id_time(const char *id)
{
    struct tm tm;
    char rest[8] = "";

    memset(&tm, 0, sizeof(tm));
    if (sscanf(id, "%4d%2d%2dT%2d%2d%2d%7s", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, rest) != 7 ||
        strcmp(rest, "Z") != 0)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static int64_t
manifest_time(json_t *m, const char *key)
{
    int64_t secs = 0;
    int32_t usecs;
    bool zone;
    pd_err ignore = PD_ERR_INIT;

    if (pd_target_parse_time(&secs, &usecs, &zone, json_string_value(json_object_get(m, key)) ?: "",
                             &ignore) < 0)
        return 0;
    return secs;
}

static wal_tli *
tli_of(wal_plan *p, unsigned tli, uint64_t floor)
{
    for (size_t i = 0; i < p->nt; i++)
        if (p->t[i].tli == tli)
            return &p->t[i];
    p->t = pd_realloc(p->t, (p->nt + 1) * sizeof(*p->t));
    memset(&p->t[p->nt], 0, sizeof(*p->t));
    p->t[p->nt].tli = tli;
    p->t[p->nt].floor = floor;
    return &p->t[p->nt++];
}

static int
on_wal_file(void *payload, const pd_storage_entry *e, pd_err *err)
{
    wal_plan *p = payload;
    const char *name = strrchr(e->path, '/');
    unsigned tli;
    uint64_t segno, floor;

    (void)err;
    name = name ? name + 1 : e->path;
    if (!pd_retention_wal_parse(name, &tli, &segno) ||
        !pd_retention_wal_floor(p->b, p->nb, tli, &floor) || segno >= floor)
        return 0;
    wal_tli *t = tli_of(p, tli, floor);
    t->files++;
    t->bytes += e->size;
    if (t->first[0] == '\0' || strcmp(name, t->first) < 0)
        snprintf(t->first, sizeof(t->first), "%s", name);
    if (strcmp(name, t->last) > 0)
        snprintf(t->last, sizeof(t->last), "%s", name);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->paths = pd_realloc(p->paths, p->cap * sizeof(*p->paths));
    }
    p->paths[p->n++] = pd_strdup(e->path);
    return 0;
}

static int
by_tli(const void *a, const void *b)
{
    const wal_tli *x = a, *y = b;
    return x->tli < y->tli ? -1 : x->tli > y->tli;
}

static void
wal_plan_free(wal_plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        pd_free(p->paths[i]);
    pd_free(p->paths);
    pd_free(p->t);
}

/* ---- removal ---- */

typedef struct paths {
    char **p;
    size_t n, cap;
    const char *skip; /* the marker's path: removed last */
} paths;

static int
on_object(void *payload, const pd_storage_entry *e, pd_err *err)
{
    paths *l = payload;

    (void)err;
    if (strcmp(e->path, l->skip) == 0)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->p = pd_realloc(l->p, l->cap * sizeof(*l->p));
    }
    l->p[l->n++] = pd_strdup(e->path);
    return 0;
}

static int
write_marker(pd_storage *st, const char *path, pd_err *err)
{
    pd_writer *w = NULL;
    char text[64], now[PD_TIME_BUF];
    int rc;

    snprintf(text, sizeof(text), "expire began %s\n",
             pd_time_rfc3339(now, sizeof(now), time(NULL)));
    if ((rc = pd_storage_open_write(&w, st, path, NULL, err)) < 0)
        goto cleanup;
    if ((rc = pd_writer_write(w, text, strlen(text), err)) < 0)
        goto cleanup;
    rc = pd_writer_commit(w, err);
cleanup:
    pd_writer_free(w);
    return rc;
}

/* Invariants 2 and 3. */
static int
remove_backup(pd_repo *r, const char *id, bool complete, pd_err *err)
{
    pd_storage *st = pd_repo_storage(r);
    char *name = pd_asprintf("backups/%s", id);
    char *prefix = pd_repo_path(r, name);
    char *marker = pd_asprintf("%s/%s", prefix, PD_EXPIRE_MARKER);
    char *manifest = pd_asprintf("%s/%s", prefix, PD_MANIFEST_NAME);
    paths l = {NULL, 0, 0, marker};
    int rc;

    if (complete) {
        if ((rc = write_marker(st, marker, err)) < 0)
            goto cleanup;
        crash_point();
        if ((rc = pd_storage_remove(st, manifest, err)) < 0)
            goto cleanup;
        crash_point();
    }
    if ((rc = pd_storage_list(st, prefix, on_object, &l, err)) < 0)
        goto cleanup;
    for (size_t i = 0; i < l.n; i++) {
        if ((rc = pd_storage_remove(st, l.p[i], err)) < 0)
            goto cleanup;
        crash_point();
    }
    // The marker goes with the directory, last.
    rc = pd_storage_remove_prefix(st, prefix, err);
cleanup:
    for (size_t i = 0; i < l.n; i++)
        pd_free(l.p[i]);
    pd_free(l.p);
    pd_free(manifest);
    pd_free(marker);
    pd_free(prefix);
    pd_free(name);
    return rc;
}

/* ---- report ---- */

static json_t *
backup_json(const pd_backup_entry *e, const pd_retention_backup *b)
{
    json_t *j = json_object(), *m = e->manifest;
    json_t *type = m ? json_object_get(m, "type") : NULL;
    json_t *stop = m ? json_object_get(m, "stop_time") : NULL;

    json_object_set_new(j, "id", json_string(e->id));
    json_object_set_new(j, "type", type ? json_incref(type) : json_null());
    json_object_set_new(j, "state", json_string(e->complete ? "complete" : "incomplete"));
    json_object_set_new(j, "stop_time", stop ? json_incref(stop) : json_null());
    json_object_set_new(j, "stored_size", json_integer((json_int_t)e->stored_size));
    json_object_set_new(j, "action", json_string(b->keep ? "keep" : "remove"));
    json_object_set_new(j, "reason", json_string(pd_retention_reason_text(b->reason)));
    return j;
}

static json_t *
wal_json(const wal_tli *t)
{
    json_t *j = json_object();
    char from[25];

    pd_target_segment_name(from, t->tli, t->floor * SEG_SIZE, SEG_SIZE);
    json_object_set_new(j, "timeline", json_integer(t->tli));
    json_object_set_new(j, "files", json_integer((json_int_t)t->files));
    json_object_set_new(j, "first", json_string(t->first));
    json_object_set_new(j, "last", json_string(t->last));
    json_object_set_new(j, "bytes", json_integer((json_int_t)t->bytes));
    json_object_set_new(j, "kept_from", json_string(from));
    return j;
}

static const char *
jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key)) ?: "";
}

static uint64_t
jint(const json_t *o, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(o, key));
}

static void
backup_line(char *line, size_t len, const json_t *b)
{
    char size[PD_FMT_BUF];
    const char *action = jstr(b, "action");

    pd_fmt_size(size, sizeof(size), jint(b, "stored_size"));
    if (strcmp(jstr(b, "state"), "complete") == 0)
        snprintf(line, len, "%s backup %s (%s, finished %s, %s): %s", action, jstr(b, "id"),
                 jstr(b, "type"), jstr(b, "stop_time"), size, jstr(b, "reason"));
    else
        snprintf(line, len, "%s backup %s (incomplete, %s): %s", action, jstr(b, "id"), size,
                 jstr(b, "reason"));
}

static void
wal_line(char *line, size_t len, const json_t *w)
{
    char size[PD_FMT_BUF];

    pd_fmt_size(size, sizeof(size), jint(w, "bytes"));
    snprintf(
        line, len, "remove WAL of timeline %u: %u file%s from %s to %s (%s), keeping from %s on",
        (unsigned)jint(w, "timeline"), (unsigned)jint(w, "files"), jint(w, "files") == 1 ? "" : "s",
        jstr(w, "first"), jstr(w, "last"), size, jstr(w, "kept_from"));
}

static void
total_line(char *line, size_t len, const json_t *report)
{
    char size[PD_FMT_BUF];
    bool dry = json_is_true(json_object_get(report, "dry_run"));
    uint64_t nb = jint(report, "removed_backups"), nw = jint(report, "removed_wal_files");

    pd_fmt_size(size, sizeof(size), jint(report, "freed_bytes"));
    if (nb == 0 && nw == 0)
        snprintf(line, len, "nothing to expire%s", dry ? " (dry run)" : "");
    else
        snprintf(line, len, "%s %s: %u backup%s and %u WAL file%s%s", dry ? "would free" : "freed",
                 size, (unsigned)nb, nb == 1 ? "" : "s", (unsigned)nw, nw == 1 ? "" : "s",
                 dry ? " (dry run: nothing removed)" : "");
}

void
pd_expire_lines(const json_t *report, bool with_kept, void (*fn)(void *payload, const char *line),
                void *payload)
{
    char line[512];
    const json_t *b;
    size_t i;

    json_array_foreach(json_object_get(report, "backups"), i, b)
    {
        if (!with_kept && strcmp(jstr(b, "action"), "keep") == 0)
            continue;
        backup_line(line, sizeof(line), b);
        fn(payload, line);
    }
    json_array_foreach(json_object_get(report, "wal"), i, b)
    {
        wal_line(line, sizeof(line), b);
        fn(payload, line);
    }
    if (json_is_string(json_object_get(report, "wal_kept_all"))) {
        snprintf(line, sizeof(line), "all WAL is kept: %s", jstr(report, "wal_kept_all"));
        fn(payload, line);
    }
    total_line(line, sizeof(line), report);
    fn(payload, line);
}

/* ---- the run ---- */

int
pd_expire(json_t **report, const pd_config *cfg, const pd_expire_opts *opts, pd_err *err)
{
    pd_retention_policy pol = {0, 0, true, 0, 0};
    pd_repo *r = NULL;
    pd_backup_entry *e = NULL;
    pd_retention_backup *b = NULL;
    const char ***names = NULL; /* per backup: its databases (logical) */
    seen_list sl = {NULL, 0, 0, 0};
    wal_plan wp;
    json_t *drills = NULL, *rep = NULL, *arr;
    char *prefix = NULL;
    size_t n = 0, removed = 0;
    uint64_t freed = 0;
    double t0 = pd_time_mono();
    int lock = -1, read_lock = -1, rc;

    *report = NULL;
    memset(&wp, 0, sizeof(wp));
    pol.full = pd_config_get_int(cfg, "retention-full");
    pol.days = pd_config_get_int(cfg, "retention-days");
    pol.keep_drilled = pd_config_get_bool(cfg, "retention-keep-drilled");
    pol.incomplete_grace = (int64_t)pd_config_get_int(cfg, "retention-incomplete-grace") * 3600;
    pol.now = (int64_t)time(NULL);
    // Test hook: PGDRILL_TEST_NOW=<seconds since the epoch> ages every backup.
    const char *test_now = getenv("PGDRILL_TEST_NOW");
    if (test_now)
        pol.now = (int64_t)strtoll(test_now, NULL, 10);

    // (1) Planned under the lock, so what is planned is what is removed.
    if ((rc = pd_repo_open(&r, cfg, err)) < 0)
        goto cleanup;
    // Readers first: expire waits for a running restore, drill or verify
    // (a drill may take hours) without holding the cluster's lock, so a
    // backup can still start meanwhile.
    if (!opts->dry_run && (read_lock = pd_repo_read_lock(cfg, true, err)) < 0) {
        rc = err->code;
        goto cleanup;
    }
    if (!opts->dry_run && (rc = lock = pd_repo_lock(cfg, err)) < 0)
        goto cleanup;
    prefix = pd_repo_path(r, "backups");
    sl.prefix_len = strlen(prefix) + 1;
    if ((rc = pd_storage_list(pd_repo_storage(r), prefix, on_backup_object, &sl, err)) < 0)
        goto cleanup;
    if ((rc = pd_catalog_list(&e, &n, r, err)) < 0)
        goto cleanup;
    if ((rc = pd_drill_reports_load(&drills, r, err)) < 0)
        goto cleanup;
    b = pd_calloc(n ? n : 1, sizeof(*b));
    names = pd_calloc(n ? n : 1, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        const seen *s = find_seen(&sl, e[i].id);
        json_t *m = e[i].manifest;
        json_t *d = pd_drill_report_last_of(drills, e[i].id);
        int64_t idt = id_time(e[i].id);
        uint64_t lsn = 0;
        pd_err ignore = PD_ERR_INIT;

        b[i].id = e[i].id;
        b[i].complete = e[i].complete;
        b[i].expiring = s && s->marker;
        b[i].last_write = s && s->mtime > idt ? s->mtime : idt;
        b[i].drill_passed = d && strcmp(jstr(d, "result"), "pass") == 0;
        if (m) {
            b[i].logical = strcmp(jstr(m, "type"), "logical") == 0;
            json_t *dbs = json_object_get(m, "databases");
            if (b[i].logical && json_array_size(dbs) > 0) {
                size_t k;
                json_t *db;
                names[i] = pd_calloc(json_array_size(dbs), sizeof(char *));
                json_array_foreach(dbs, k, db)
                {
                    const char *name = json_string_value(json_object_get(db, "name"));
                    if (name)
                        names[i][b[i].n_databases++] = name; // borrowed from the manifest
                }
                b[i].databases = (const char *const *)names[i];
            }
            b[i].stop_time = manifest_time(m, "stop_time");
            b[i].timeline = (unsigned)json_integer_value(json_object_get(m, "timeline"));
            if (pd_target_parse_lsn(&lsn, jstr(m, "start_lsn"), &ignore) == 0)
                b[i].start_lsn = lsn;
            else if (!b[i].logical) {
                rc = pd_err_set(err, PD_ECORRUPT, "manifest of backup %s has no valid start_lsn",
                                e[i].id);
                pd_err_hint(err, "run pgdrill verify --backup %s", e[i].id);
                goto cleanup;
            }
        }
    }
    pd_retention_apply(b, n, &pol);
    if (pol.full == 0 && pol.days == 0)
        pd_log_warning("no retention-full or retention-days is set: every backup and all WAL are "
                       "kept (only removals an earlier expire began are finished); set one to "
                       "expire backups");

    // The WAL plan, from the decisions above.
    wp.b = b;
    wp.nb = n;
    uint64_t ignore_floor;
    const char *wal_kept = NULL;
    wp.have_floor = pd_retention_wal_floor(b, n, 1, &ignore_floor);
    if (pol.full == 0 && pol.days == 0) {
        wp.have_floor = false;
        wal_kept = "no retention key is set";
    } else if (!wp.have_floor) {
        wal_kept = "no physical backup is kept";
    }
    if (wp.have_floor) {
        pd_free(prefix);
        prefix = pd_repo_path(r, "wal");
        if ((rc = pd_storage_list(pd_repo_storage(r), prefix, on_wal_file, &wp, err)) < 0)
            goto cleanup;
        if (wp.nt > 1)
            qsort(wp.t, wp.nt, sizeof(*wp.t), by_tli);
    }

    rep = json_object();
    json_object_set_new(rep, "dry_run", json_boolean(opts->dry_run));
    arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, backup_json(&e[i], &b[i]));
        if (!b[i].keep) {
            removed++;
            freed += e[i].stored_size;
        }
    }
    json_object_set_new(rep, "backups", arr);
    arr = json_array();
    for (size_t i = 0; i < wp.nt; i++) {
        json_array_append_new(arr, wal_json(&wp.t[i]));
        freed += wp.t[i].bytes;
    }
    json_object_set_new(rep, "wal", arr);
    json_object_set_new(rep, "wal_kept_all", wal_kept ? json_string(wal_kept) : json_null());
    json_object_set_new(rep, "removed_backups", json_integer((json_int_t)removed));
    json_object_set_new(rep, "removed_wal_files", json_integer((json_int_t)wp.n));
    json_object_set_new(rep, "freed_bytes", json_integer((json_int_t)freed));
    *report = rep;
    if (opts->dry_run) {
        rc = 0;
        goto cleanup;
    }

    // (2), (3): backups, oldest first.
    char line[512];
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(rep, "backups"), i, item)
    {
        if (b[i].keep) {
            // A marker left on a backup that is kept now (the policy changed
            // since a run was killed) must not outlive its meaning.
            if (b[i].complete && b[i].expiring) {
                char *name = pd_asprintf("backups/%s/%s", e[i].id, PD_EXPIRE_MARKER);
                char *path = pd_repo_path(r, name);
                rc = pd_storage_remove(pd_repo_storage(r), path, err);
                pd_free(path);
                pd_free(name);
                if (rc < 0)
                    goto cleanup;
            }
            pd_log_debug("%s", (backup_line(line, sizeof(line), item), line));
            continue;
        }
        backup_line(line, sizeof(line), item);
        pd_log_info("%s", line);
        if ((rc = remove_backup(r, e[i].id, e[i].complete, err)) < 0)
            goto cleanup;
    }

    // (4) WAL, timeline by timeline.
    json_array_foreach(json_object_get(rep, "wal"), i, item)
    {
        wal_line(line, sizeof(line), item);
        pd_log_info("%s", line);
    }
    // In batches (one S3 request, or one directory fsync, for many files):
    // all of them lie below every kept backup, so the order does not matter.
    // Under the crash hook one file at a time, so a kill can fall among them.
    size_t batch = getenv("PGDRILL_TEST_EXPIRE_CRASH") ? 1 : WAL_BATCH;
    for (size_t k = 0; k < wp.n; k += batch) {
        size_t m = wp.n - k < batch ? wp.n - k : batch;
        if ((rc = pd_storage_remove_many(pd_repo_storage(r), (const char *const *)wp.paths + k, m,
                                         err)) < 0)
            goto cleanup;
        crash_point();
    }
    if (wal_kept)
        pd_log_info("all WAL is kept: %s", wal_kept);
    char dur[PD_FMT_BUF];
    if (removed == 0 && wp.n == 0) {
        pd_log_info("nothing to expire: %zu backup%s kept", n, n == 1 ? "" : "s");
    } else {
        total_line(line, sizeof(line), rep);
        pd_log_info("%s in %s", line, pd_fmt_duration(dur, sizeof(dur), pd_time_mono() - t0));
    }
    rc = 0;
cleanup:
    if (read_lock >= 0)
        close(read_lock);
    if (lock >= 0)
        close(lock);
    wal_plan_free(&wp);
    pd_free(sl.s);
    pd_free(prefix);
    for (size_t k = 0; names && k < n; k++)
        pd_free((void *)names[k]);
    pd_free(names);
    pd_free(b);
    json_decref(drills);
    pd_catalog_free(e, n);
    pd_repo_free(r);
    return rc;
}
