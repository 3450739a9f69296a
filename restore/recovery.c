/*
 * Point-in-time recovery for restore (see restore.h): which backup a target
 * needs, whether the archive reaches the target, and the recovery settings
 * PostgreSQL reads (postgresql.auto.conf, recovery.signal). Everything that
 * can be wrong with a target is found before anything is written.
 */
#include "restore/recovery.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "backup/archive.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "restore/catalog.h"
#include "restore/fdio.h"
#include "restore/target.h"

#define SEG_SIZE (16ULL * 1024 * 1024)

/* The time of a manifest field ("2026-11-24T02:00:00Z") in seconds, or -1. */
static int64_t
manifest_time(json_t *m, const char *key)
{
    int64_t s;
    int32_t us;
    bool zone;
    pd_err ignore = PD_ERR_INIT;

    if (pd_target_parse_time(&s, &us, &zone, json_string_value(json_object_get(m, key)) ?: "",
                             &ignore) < 0)
        return -1;
    return s;
}

static uint64_t
manifest_lsn(json_t *m, const char *key)
{
    uint64_t lsn = 0;
    pd_err ignore = PD_ERR_INIT;

    if (pd_target_parse_lsn(&lsn, json_string_value(json_object_get(m, key)) ?: "", &ignore) < 0)
        return 0;
    return lsn;
}

typedef struct wal_scan {
    char newest[25]; /* newest segment name on any timeline */
    int64_t newest_mtime;
    json_t *segments; /* set of segment names */
} wal_scan;

static int
on_wal(void *payload, const pd_storage_entry *e, pd_err *err)
{
    wal_scan *w = payload;
    const char *name = strrchr(e->path, '/');

    (void)err;
    name = name ? name + 1 : e->path;
    if (strlen(name) != 24)
        return 0;
    json_object_set_new(w->segments, name, json_true());
    // Names sort by timeline, then by position.
    if (strcmp(name, w->newest) > 0) {
        memcpy(w->newest, name, 25);
        w->newest_mtime = e->mtime;
    }
    return 0;
}

int
pd_recovery_plan(pd_recovery_plan_t *plan, pd_repo *r, const pd_restore_opts *o, pd_err *err)
{
    pd_backup_entry *e = NULL;
    size_t n = 0;
    wal_scan w = {"", 0, NULL};
    char *prefix = NULL;
    char when[PD_TIME_BUF];
    int rc;

    memset(plan, 0, sizeof(*plan));
    plan->target_lsn = UINT64_MAX;
    int given = (o->target_time != NULL) + (o->target_lsn != NULL) + (o->target_xid != NULL) +
                (o->target_name != NULL) + o->target_immediate;
    if (given > 1)
        return pd_err_set(err, PD_EUSAGE,
                          "give at most one recovery target (time, lsn, xid, "
                          "name or immediate)");
    if (o->target_time) {
        bool zone;
        if ((rc = pd_target_parse_time(&plan->target_time, &plan->target_usecs, &zone,
                                       o->target_time, err)) < 0)
            return rc;
        if (!zone)
            pd_log_info("target time \"%s\" has no time zone: taken as UTC", o->target_time);
        plan->has_time = true;
    }
    if (o->target_lsn && (rc = pd_target_parse_lsn(&plan->target_lsn, o->target_lsn, err)) < 0)
        return rc;
    if (o->target_xid && strspn(o->target_xid, "0123456789") != strlen(o->target_xid))
        return pd_err_set(err, PD_ECONFIG, "bad target xid \"%s\": expected a number",
                          o->target_xid);

    // From here every exit goes through cleanup.
    w.segments = json_object();
    if ((rc = pd_catalog_list(&e, &n, r, err)) < 0)
        goto cleanup;
    prefix = pd_repo_path(r, "wal");
    if ((rc = pd_storage_list(pd_repo_storage(r), prefix, on_wal, &w, err)) < 0)
        goto cleanup;

    // The backup: the one named, or the newest that ended before the target.
    json_t *chosen = NULL, *oldest = NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *m = e[i].manifest;
        if (!e[i].complete)
            continue;
        // Logical backups restore through pg_restore (restore --type logical), never here.
        if (strcmp(json_string_value(json_object_get(m, "type")) ?: "", "physical") != 0) {
            if (o->backup && strcmp(e[i].id, o->backup) == 0) {
                rc = pd_err_set(err, PD_ECONFIG, "backup %s is a logical backup", e[i].id);
                pd_err_hint(err, "restore a database of it with restore --type logical --database "
                                 "DB, or choose a physical backup from pgdrill list");
                goto cleanup;
            }
            continue;
        }
        if (oldest == NULL)
            oldest = m;
        if (o->backup && strcmp(o->backup, "latest") != 0) {
            if (strcmp(e[i].id, o->backup) == 0)
                chosen = m;
            continue;
        }
        if (plan->has_time && manifest_time(m, "stop_time") > plan->target_time)
            continue;
        if (o->target_lsn && manifest_lsn(m, "stop_lsn") > plan->target_lsn)
            continue;
        chosen = m;
    }
    if (o->backup && strcmp(o->backup, "latest") != 0 && chosen == NULL) {
        rc = pd_catalog_find(&plan->manifest, r, o->backup, err); // its message
        goto cleanup;
    }
    if (oldest == NULL) {
        rc = pd_err_set(err, PD_ECONFIG, "cluster \"%s\" has no complete physical backup",
                        pd_repo_cluster(r));
        pd_err_hint(err, "take one with pgdrill backup");
        goto cleanup;
    }
    if (chosen == NULL) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "target %s is before the end of the oldest backup %s (it ends at %s, "
                        "LSN %s)",
                        o->target_time ? o->target_time : o->target_lsn,
                        json_string_value(json_object_get(oldest, "id")),
                        json_string_value(json_object_get(oldest, "stop_time")),
                        json_string_value(json_object_get(oldest, "stop_lsn")));
        goto cleanup;
    }
    if (plan->has_time && manifest_time(chosen, "stop_time") > plan->target_time) {
        rc = pd_err_set(err, PD_ECONFIG, "target time %s is before the end of backup %s (%s)",
                        o->target_time, json_string_value(json_object_get(chosen, "id")),
                        json_string_value(json_object_get(chosen, "stop_time")));
        goto cleanup;
    }
    plan->manifest = json_incref(chosen);

    // The archive must reach the target.
    plan->recover = given > 0 || w.newest[0] != '\0';
    snprintf(plan->newest_wal, sizeof(plan->newest_wal), "%s", w.newest);
    plan->newest_wal_time = w.newest_mtime;
    if (plan->has_time && (w.newest[0] == '\0' || w.newest_mtime < plan->target_time)) {
        rc = pd_err_set(err, PD_ECONFIG, "target time %s is beyond the end of the archive: %s",
                        o->target_time, w.newest[0] ? "" : "no WAL is archived");
        if (w.newest[0])
            pd_err_set(err, PD_ECONFIG,
                       "target time %s is beyond the end of the archive: the newest archived "
                       "WAL file %s was stored at %s",
                       o->target_time, w.newest,
                       pd_time_rfc3339(when, sizeof(when), (time_t)w.newest_mtime));
        pd_err_hint(err, "run SELECT pg_switch_wal() on the server to archive the current WAL, "
                         "or choose an earlier target");
        goto cleanup;
    }
    if (o->target_lsn) {
        uint64_t end = 0;
        if (w.newest[0]) {
            unsigned int tli, log, seg;
            sscanf(w.newest, "%8X%8X%8X", &tli, &log, &seg);
            end = ((uint64_t)log << 32) + ((uint64_t)seg + 1) * SEG_SIZE;
        }
        if (plan->target_lsn > end && plan->target_lsn > manifest_lsn(chosen, "stop_lsn")) {
            rc = pd_err_set(err, PD_ECONFIG,
                            "target LSN %s is beyond the end of the archive, which reaches LSN "
                            "%X/%X",
                            o->target_lsn, (unsigned)(end >> 32), (unsigned)end);
            goto cleanup;
        }
    }
    // The WAL from the backup's start to the target (or the newest) must all be there.
    {
        uint64_t from = manifest_lsn(chosen, "start_lsn");
        uint64_t to = plan->target_lsn != UINT64_MAX ? plan->target_lsn : 0;
        unsigned tli = (unsigned)json_integer_value(json_object_get(chosen, "timeline"));
        if (to == 0 && w.newest[0]) {
            unsigned int t2, log, seg;
            sscanf(w.newest, "%8X%8X%8X", &t2, &log, &seg);
            if (t2 == tli)
                to = ((uint64_t)log << 32) + (uint64_t)seg * SEG_SIZE;
        }
        plan->first_segment[0] = plan->last_segment[0] = plan->missing_segment[0] = '\0';
        if (to >= from && w.newest[0]) {
            pd_target_segment_name(plan->first_segment, tli, from, SEG_SIZE);
            pd_target_segment_name(plan->last_segment, tli, to, SEG_SIZE);
            // The backup carries the WAL up to its stop LSN itself.
            uint64_t stop = manifest_lsn(chosen, "stop_lsn");
            for (uint64_t l = (stop / SEG_SIZE + 1) * SEG_SIZE; l <= to; l += SEG_SIZE) {
                char name[25];
                pd_target_segment_name(name, tli, l, SEG_SIZE);
                plan->segments_needed++;
                if (json_object_get(w.segments, name) == NULL && plan->missing_segment[0] == '\0')
                    memcpy(plan->missing_segment, name, 25);
            }
        }
    }
    if (plan->missing_segment[0] && (given > 0)) {
        rc = pd_err_set(err, PD_ECORRUPT,
                        "WAL file %s, needed to reach the target from backup %s, is missing from "
                        "the archive",
                        plan->missing_segment, json_string_value(json_object_get(chosen, "id")));
        goto cleanup;
    }
    rc = 0;
cleanup:
    json_decref(w.segments);
    pd_catalog_free(e, n);
    pd_free(prefix);
    if (rc < 0) {
        json_decref(plan->manifest);
        plan->manifest = NULL;
    }
    return rc;
}

/* Appends a setting to postgresql.auto.conf text, quoting the value. */
static char *
add_setting(char *text, const char *key, const char *value)
{
    size_t len = strlen(value);
    char *quoted = pd_malloc(2 * len + 3), *q = quoted;

    *q++ = '\'';
    for (size_t i = 0; i < len; i++) {
        if (value[i] == '\'')
            *q++ = '\'';
        *q++ = value[i];
    }
    *q++ = '\'';
    *q = '\0';
    char *out = pd_asprintf("%s%s = %s\n", text, key, quoted);
    pd_free(quoted);
    pd_free(text);
    return out;
}

static int
append_file(const char *path, const char *text, pd_err *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    size_t len = strlen(text);

    if (fd < 0)
        return pd_err_sys(err, PD_EIO, "could not open \"%s\"", path);
    int rc = pd_fdio_write_all(fd, text, len, path, err);
    if (rc == 0 && fsync(fd) < 0)
        rc = pd_err_sys(err, PD_EIO, "could not fsync \"%s\"", path);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return close(fd) < 0 ? pd_err_sys(err, PD_EIO, "could not write \"%s\"", path) : 0;
}

int
pd_recovery_write(const char *dir, const pd_recovery_plan_t *plan, const pd_restore_opts *o,
                  pd_err *err)
{
    char stamp[PD_TIME_BUF], when[64];
    char *text, *path;
    int rc;

    text = pd_asprintf("\n# Recovery settings written by pgdrill restore of backup %s at %s\n",
                       json_string_value(json_object_get(plan->manifest, "id")),
                       pd_time_rfc3339(stamp, sizeof(stamp), time(NULL)));
    text = add_setting(text, "restore_command", o->restore_command);
    if (o->target_time) {
        struct tm tm;
        time_t t = (time_t)plan->target_time;
        gmtime_r(&t, &tm);
        char base[32];
        strftime(base, sizeof(base), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(when, sizeof(when), "%s.%06d+00", base, (int)plan->target_usecs);
        text = add_setting(text, "recovery_target_time", when);
    }
    if (o->target_lsn)
        text = add_setting(text, "recovery_target_lsn", o->target_lsn);
    if (o->target_xid)
        text = add_setting(text, "recovery_target_xid", o->target_xid);
    if (o->target_name)
        text = add_setting(text, "recovery_target_name", o->target_name);
    if (o->target_immediate)
        text = add_setting(text, "recovery_target", "immediate");
    if (o->target_action)
        text = add_setting(text, "recovery_target_action", o->target_action);
    if (o->target_timeline)
        text = add_setting(text, "recovery_target_timeline", o->target_timeline);
    if (o->target_exclusive)
        text = add_setting(text, "recovery_target_inclusive", "false");
    path = pd_asprintf("%s/postgresql.auto.conf", dir);
    rc = append_file(path, text, err);
    pd_free(path);
    pd_free(text);
    if (rc < 0)
        return rc;
    path = pd_asprintf("%s/recovery.signal", dir);
    rc = append_file(path, "", err);
    pd_free(path);
    return rc;
}

void
pd_recovery_print_dry_run(const pd_recovery_plan_t *plan, const char *target_dir)
{
    json_t *m = plan->manifest;
    uint64_t size = (uint64_t)json_integer_value(json_object_get(m, "size"));
    char need[PD_FMT_BUF], have[PD_FMT_BUF], when[PD_TIME_BUF];
    struct statvfs vfs;
    char *dir = pd_strdup(target_dir);

    // The free space where the target will be: the directory, or its parent.
    while (statvfs(dir, &vfs) < 0 && strrchr(dir, '/') && strrchr(dir, '/') != dir)
        *strrchr(dir, '/') = '\0';
    printf("backup:       %s (ended %s at LSN %s, timeline %lld)\n",
           json_string_value(json_object_get(m, "id")),
           json_string_value(json_object_get(m, "stop_time")),
           json_string_value(json_object_get(m, "stop_lsn")),
           (long long)json_integer_value(json_object_get(m, "timeline")));
    if (plan->first_segment[0])
        printf("WAL needed:   %s to %s (%u file%s from the archive)%s%s\n", plan->first_segment,
               plan->last_segment, plan->segments_needed, plan->segments_needed == 1 ? "" : "s",
               plan->missing_segment[0] ? "; MISSING: " : "; all present", plan->missing_segment);
    else
        printf("WAL needed:   only what the backup carries\n");
    if (plan->newest_wal[0])
        printf("archive ends: %s, stored %s\n", plan->newest_wal,
               pd_time_rfc3339(when, sizeof(when), (time_t)plan->newest_wal_time));
    printf("disk:         %s needed, %s free at %s\n", pd_fmt_size(need, sizeof(need), size),
           pd_fmt_size(have, sizeof(have), (uint64_t)vfs.f_bavail * vfs.f_frsize), dir);
    printf("time:         no drill has measured this repository yet (pgdrill drill gives an "
           "estimate)\n");
    printf("nothing was written (--dry-run)\n");
    pd_free(dir);
}
