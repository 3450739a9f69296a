/* A restore drill (see drill.h). */
#include "drills/drill.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/child.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/time.h"
#include "common/version.h"
#include "drills/checks.h"
#include "drills/report.h"
#include "drills/scratch.h"
#include "restore/archive_get.h"
#include "restore/catalog.h"
#include "restore/logical.h"
#include "restore/recovery.h"
#include "restore/restore.h"
#include "restore/target.h"
#include "restore/walindex.h"
#include "storage/repo.h"

#define SEG PD_WAL_SEG_SIZE

/* Everything one drill carries from phase to phase. */
typedef struct drill {
    const pd_config *cfg;
    const pd_drill_opts *o;
    pd_repo *repo;
    json_t *manifest; /* the chosen backup's (owned) */
    const char *backup_id;
    uint64_t stop_lsn;
    unsigned tli;
    pd_wal_reach reach;
    /* The target, as decided. */
    const char *target_type; /* latest, immediate, lsn, time */
    char target_value[64];
    const char *target_choice; /* given, random, default */
    pd_scratch *scratch;
    char pg_bin[512];
    char user[128]; /* role the checks connect as */
    char db[128];   /* a database that exists */
    json_t *checks;
    double t_restore, t_recovery, t_checks;
    char reached_lsn[64], reached_time[64]; /* as large as the query's answers */
} drill;

static uint64_t
lsn_of(const char *text)
{
    uint64_t lsn = 0;
    pd_err ignore = PD_ERR_INIT;

    if (text == NULL || pd_target_parse_lsn(&lsn, text, &ignore) < 0)
        return 0;
    return lsn;
}

static uint64_t
random_below(uint64_t n)
{
    uint64_t r = 0;

    if (n == 0 || RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return 0;
    return r % n;
}

/* ---- choosing the backup and the target ---- */

static int
choose_backup(drill *d, pd_err *err)
{
    const char *pick = d->o->pick ? d->o->pick : "latest";
    pd_backup_entry *e = NULL;
    size_t n = 0, complete = 0;
    int rc;

    if (d->o->backup)
        return pd_catalog_find(&d->manifest, d->repo, d->o->backup, err);
    if ((rc = pd_catalog_list(&e, &n, d->repo, err)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        complete += e[i].complete;
    if (complete == 0) {
        pd_catalog_free(e, n);
        rc = pd_err_set(err, PD_ECONFIG, "cluster \"%s\" has no complete backup to drill",
                        pd_repo_cluster(d->repo));
        pd_err_hint(err, "take one with pgdrill backup");
        return rc;
    }
    size_t want = strcmp(pick, "oldest") == 0   ? 0
                  : strcmp(pick, "random") == 0 ? (size_t)random_below(complete)
                                                : complete - 1;
    for (size_t i = 0, k = 0; i < n; i++) {
        if (!e[i].complete)
            continue;
        if (k++ == want) {
            d->manifest = json_incref(e[i].manifest);
            break;
        }
    }
    pd_catalog_free(e, n);
    return 0;
}

static void
lsn_text(char *buf, size_t size, uint64_t lsn)
{
    snprintf(buf, size, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

/* The recovery target; --target random picks an LSN the archive certainly reaches past. */
static int
choose_target(drill *d, pd_err *err)
{
    pd_wal_index *w = NULL;
    int rc;

    if ((rc = pd_wal_index_load(&w, d->repo, err)) < 0)
        return rc;
    pd_wal_index_reach(w, d->tli, d->stop_lsn, &d->reach);
    pd_wal_index_free(w);
    d->target_choice = "given";
    if (d->o->target_time) {
        d->target_type = "time";
        snprintf(d->target_value, sizeof(d->target_value), "%s", d->o->target_time);
    } else if (d->o->target_lsn) {
        d->target_type = "lsn";
        snprintf(d->target_value, sizeof(d->target_value), "%s", d->o->target_lsn);
    } else if (d->o->target_immediate) {
        d->target_type = "immediate";
    } else if (d->o->target_random) {
        d->target_choice = "random";
        // A record exists past any LSN before the newest segment's start.
        uint64_t end = d->reach.reach_lsn > SEG ? d->reach.reach_lsn - SEG : 0;
        if (end <= d->stop_lsn) {
            d->target_type = "immediate";
        } else {
            d->target_type = "lsn";
            lsn_text(d->target_value, sizeof(d->target_value),
                     d->stop_lsn + random_below(end - d->stop_lsn));
        }
    } else {
        d->target_choice = "default";
        d->target_type = "latest";
    }
    return 0;
}

/* ---- the restore phase ---- */

static int
check_disk(drill *d, const char *parent, unsigned segments, unsigned factor, pd_err *err)
{
    struct statvfs vfs;
    uint64_t need = factor * (uint64_t)json_integer_value(json_object_get(d->manifest, "size")) +
                    (uint64_t)segments * SEG;
    char n1[PD_FMT_BUF], n2[PD_FMT_BUF];

    need += need / 20; // room for the instance's own files
    if (statvfs(parent, &vfs) < 0)
        return pd_err_sys(err, PD_ECONFIG, "cannot use drill-dir \"%s\"", parent);
    uint64_t have = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (have < need) {
        pd_err_set(err, PD_EIO,
                   "not enough disk space for the drill in \"%s\": it needs about %s (backup %s "
                   "and %u WAL files), %s are free",
                   parent, pd_fmt_size(n1, sizeof(n1), need), d->backup_id, segments,
                   pd_fmt_size(n2, sizeof(n2), have));
        return pd_err_hint(err, "free space there, or set drill-dir to a larger file system");
    }
    return 0;
}

/*
 * Fetches the WAL from the backup's last segment to the newest segment of
 * the continuous archive into the scratch directory (recovery stops at the
 * target; a target inside a segment needs the records after it too). The
 * backup carries its last segment only up to its stop LSN: the archived copy
 * has the rest, when it is archived yet.
 */
static int
fetch_wal(drill *d, unsigned *count, pd_err *err)
{
    uint64_t from = d->stop_lsn / SEG * SEG, to = d->reach.reach_lsn;
    char first[25] = "", last[25] = "";

    *count = 0;
    for (uint64_t l = from; l < to; l += SEG) {
        char name[25];
        pd_target_segment_name(name, d->tli, l, SEG);
        char *path = pd_asprintf("%s/%s", pd_scratch_wal(d->scratch), name);
        int rc = pd_archive_get_from(d->repo, name, path, err);
        pd_free(path);
        if (rc == PD_ENOTFOUND && l == from)
            continue;
        if (rc == PD_ENOTFOUND)
            return pd_err_set(err, PD_ECHECK,
                              "WAL file %s, needed to reach the target from backup %s, is missing "
                              "from the archive",
                              name, d->backup_id);
        if (rc < 0)
            return rc;
        if (first[0] == '\0')
            memcpy(first, name, 25);
        memcpy(last, name, 25);
        (*count)++;
    }
    if (*count)
        pd_log_info("fetched %u WAL file%s (%s to %s), every frame's tag checked", *count,
                    *count == 1 ? "" : "s", first, last);
    return 0;
}

/* Records the pg_verifybackup check (a program that cannot run fails it too). */
static void
run_verifybackup(drill *d)
{
    char *prog = pd_asprintf("%s/pg_verifybackup", d->pg_bin);
    const char *argv[] = {prog, "--quiet", pd_scratch_data(d->scratch), NULL};
    pd_child_result res;
    pd_err e = PD_ERR_INIT;
    int rc;

    if ((rc = pd_child_run(&res, argv, NULL, NULL, 0, &e)) < 0) {
        pd_check_add(d->checks, "pg_verifybackup", "fail", "%s", e.msg);
    } else if (res.status != 0) {
        char *nl = strchr(res.stderr_data, '\n');
        if (nl)
            *nl = '\0';
        pd_check_add(d->checks, "pg_verifybackup", "fail", "%s",
                     res.stderr_data[0] ? res.stderr_data : "it failed without a message");
    } else {
        pd_check_add(d->checks, "pg_verifybackup", "pass",
                     "every restored file matches the server's backup_manifest; the WAL "
                     "needed for consistency parses");
    }
    pd_child_result_free(&res);
    pd_free(prog);
}

static int
touch(const char *dir, const char *name, bool keep_existing, pd_err *err)
{
    char *path = pd_asprintf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | (keep_existing ? 0 : O_TRUNC) | O_CLOEXEC, 0600);
    int rc = fd < 0 ? pd_err_sys(err, PD_EIO, "could not create \"%s\"", path) : 0;

    if (fd >= 0)
        close(fd);
    pd_free(path);
    return rc;
}

/* ---- starting and waiting ---- */

/* The role and database the checks use: the bootstrap superuser, found through a role that exists.
 */
static int
find_superuser(drill *d, pd_err *err)
{
    const char *users[4], *dbs[3];
    int nu = 0, nd = 0;
    struct passwd *pw = getpwuid(geteuid());

    if (pd_config_get(d->cfg, "pg-user"))
        users[nu++] = pd_config_get(d->cfg, "pg-user");
    users[nu++] = "postgres";
    if (pd_config_get(d->cfg, "drill-user"))
        users[nu++] = pd_config_get(d->cfg, "drill-user");
    if (pw)
        users[nu++] = pw->pw_name;
    dbs[nd++] = pd_config_get(d->cfg, "pg-database");
    dbs[nd++] = "postgres";
    dbs[nd++] = "template1";
    for (int u = 0; u < nu; u++) {
        for (int k = 0; k < nd; k++) {
            pd_check_target t = {pd_scratch_socket(d->scratch), pd_scratch_port(d->scratch),
                                 users[u], dbs[k]};
            pd_pg *pg = NULL;
            char name[128];
            pd_err e = PD_ERR_INIT;
            if (pd_check_connect(&pg, &t, dbs[k], &e) < 0)
                continue;
            int rc = pd_pg_query_value(pg, "SELECT rolname FROM pg_roles WHERE oid = 10", name,
                                       sizeof(name), &e);
            pd_pg_free(pg);
            if (rc == 0) {
                snprintf(d->user, sizeof(d->user), "%s", name);
                snprintf(d->db, sizeof(d->db), "%s", dbs[k]);
                return 0;
            }
        }
    }
    return pd_err_set(err, PD_ECHECK,
                      "could not connect to the drill instance as any of its roles (pg-user, "
                      "postgres, drill-user)");
}

/*
 * Waits until query returns "t" on the instance. Fails (PD_ECHECK) when the
 * instance exits, with its last FATAL line.
 */
static int
wait_for(drill *d, const char *query, const char *what, pd_err *err)
{
    double t0 = pd_time_mono(), next_note = t0 + 30;
    bool have_user = d->user[0] != '\0';

    for (;;) {
        int rc = pd_scratch_alive(d->scratch, err);
        if (rc < 0)
            return rc;
        pd_err e = PD_ERR_INIT;
        if (!have_user && find_superuser(d, &e) == 0)
            have_user = true;
        if (have_user) {
            pd_check_target t = {pd_scratch_socket(d->scratch), pd_scratch_port(d->scratch),
                                 d->user, d->db};
            pd_pg *pg = NULL;
            char v[64] = "";
            if (pd_check_connect(&pg, &t, d->db, &e) == 0 &&
                pd_pg_query_value(pg, query, v, sizeof(v), &e) == 0 && strcmp(v, "t") == 0) {
                pd_pg_free(pg);
                return 0;
            }
            if (pg && pd_time_mono() > next_note &&
                pd_pg_query_value(pg, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '-')", v,
                                  sizeof(v), &e) == 0) {
                pd_log_info("recovery in progress: replayed up to LSN %s after %.0f s", v,
                            pd_time_mono() - t0);
                next_note += 30;
            }
            pd_pg_free(pg);
        } else if (pd_time_mono() > next_note) {
            pd_log_info("waiting for the drill instance to %s (%.0f s)", what, pd_time_mono() - t0);
            next_note += 30;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Recovery settings for one start. */
static void
settings(drill *d, const char **out, char owned[][160], bool pause_at_backup_end)
{
    int n = 0, k = 0;

    snprintf(owned[k], 160, "restore_command=cp '%s/%%f' '%%p'", pd_scratch_wal(d->scratch));
    out[n++] = owned[k++];
    out[n++] = "recovery_target_timeline=current";
    // Clear whatever the restored files say, then set ours.
    out[n++] = "recovery_target=";
    out[n++] = "recovery_target_lsn=";
    out[n++] = "recovery_target_time=";
    out[n++] = "recovery_target_xid=";
    out[n++] = "recovery_target_name=";
    out[n++] = "recovery_target_inclusive=on";
    if (pause_at_backup_end || strcmp(d->target_type, "immediate") == 0) {
        out[n++] = "recovery_target=immediate";
    } else if (strcmp(d->target_type, "lsn") == 0) {
        snprintf(owned[k], 160, "recovery_target_lsn=%s", d->target_value);
        out[n++] = owned[k++];
    } else if (strcmp(d->target_type, "time") == 0) {
        snprintf(owned[k], 160, "recovery_target_time=%s", d->target_value);
        out[n++] = owned[k++];
    }
    out[n++] =
        pause_at_backup_end ? "recovery_target_action=pause" : "recovery_target_action=promote";
    out[n] = NULL;
}

/* Runs the instance to the end of recovery; stage A pauses at the backup's end for the counts. */
static int
recover(drill *d, pd_err *err)
{
    const char *set[24];
    char owned[4][160];
    json_t *counts = json_object_get(d->manifest, "row_counts");
    bool stage_a = json_array_size(counts) > 0 && strcmp(d->target_type, "immediate") != 0;
    double t0 = pd_time_mono(), counted = 0;
    int rc;

    if (stage_a) {
        settings(d, set, owned, true);
        if ((rc = pd_scratch_start(d->scratch, set, err)) < 0)
            return rc;
        if ((rc = wait_for(d, "SELECT pg_get_wal_replay_pause_state() = 'paused'",
                           "reach the backup's consistent point", err)) < 0)
            return rc;
        double c0 = pd_time_mono();
        pd_check_target t = {pd_scratch_socket(d->scratch), pd_scratch_port(d->scratch), d->user,
                             d->db};
        pd_checks_row_counts(d->checks, &t, counts);
        pd_scratch_stop(d->scratch);
        counted = pd_time_mono() - c0;
        d->t_checks += counted;
    }
    settings(d, set, owned, false);
    if ((rc = pd_scratch_start(d->scratch, set, err)) < 0)
        return rc;
    if ((rc = wait_for(d, "SELECT NOT pg_is_in_recovery()", "finish recovery", err)) < 0)
        return rc;
    d->t_recovery = pd_time_mono() - t0 - counted;
    if (!stage_a) {
        double c0 = pd_time_mono();
        pd_check_target t = {pd_scratch_socket(d->scratch), pd_scratch_port(d->scratch), d->user,
                             d->db};
        if (json_array_size(counts) > 0)
            pd_checks_row_counts(d->checks, &t, counts);
        else
            pd_check_add(d->checks, "row counts", "skip",
                         "the backup recorded no row counts (no user tables, or no access)");
        d->t_checks += pd_time_mono() - c0;
    }
    return 0;
}

/* Where recovery ended, against the target. */
static void
check_target(drill *d)
{
    pd_check_target t = {pd_scratch_socket(d->scratch), pd_scratch_port(d->scratch), d->user,
                         d->db};
    pd_pg *pg = NULL;
    pd_err e = PD_ERR_INIT;
    char lsn[64] = "", when[64] = "", want[32];

    if (pd_check_connect(&pg, &t, d->db, &e) < 0 ||
        pd_pg_query_value(pg, "SELECT pg_last_wal_replay_lsn()", lsn, sizeof(lsn), &e) < 0 ||
        pd_pg_query_value(pg,
                          "SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE "
                          "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')",
                          when, sizeof(when), &e) < 0) {
        pd_check_add(d->checks, "recovery target", "fail", "%s", e.msg);
        pd_pg_free(pg);
        return;
    }
    pd_pg_free(pg);
    snprintf(d->reached_lsn, sizeof(d->reached_lsn), "%s", lsn);
    snprintf(d->reached_time, sizeof(d->reached_time), "%s", when);
    uint64_t got = lsn_of(lsn), need = d->stop_lsn;
    if (strcmp(d->target_type, "lsn") == 0)
        need = lsn_of(d->target_value);
    else if (strcmp(d->target_type, "latest") == 0 &&
             d->reach.reach_lsn > (d->stop_lsn / SEG + 1) * SEG)
        need = d->reach.reach_lsn - SEG; // into the newest archived segment
    lsn_text(want, sizeof(want), need);
    if (got < need && strcmp(d->target_type, "time") != 0)
        pd_check_add(d->checks, "recovery target", "fail",
                     "recovery ended at LSN %s, before the %s target %s", lsn, d->target_type,
                     want);
    else
        pd_check_add(d->checks, "recovery target", "pass",
                     "consistent from backup end %s; reached LSN %s%s%s (target %s%s%s)",
                     json_string_value(json_object_get(d->manifest, "stop_lsn")), lsn,
                     when[0] ? ", last transaction at " : "", when, d->target_type,
                     d->target_value[0] ? " " : "", d->target_value);
}

/* ---- the report ---- */

static json_t *
build_report(drill *d, const char *id, time_t start, double total)
{
    json_t *r = json_object(), *phases = json_object(), *target = json_object();
    long objective = pd_config_get_int(d->cfg, "drill-rto-objective");
    double rto = d->t_restore + d->t_recovery;
    char host[256] = "";
    json_t *failed = pd_checks_first_failure(d->checks);

    gethostname(host, sizeof(host) - 1);
    json_object_set_new(r, "id", json_string(id));
    json_object_set_new(r, "cluster", json_string(pd_config_cluster(d->cfg)));
    json_object_set_new(r, "backup_id", json_string(d->backup_id));
    json_object_set_new(r, "result", json_string(failed ? "fail" : "pass"));
    json_object_set_new(r, "failure",
                        failed ? json_incref(json_object_get(failed, "detail")) : json_null());
    json_object_set_new(r, "rto_seconds", json_real(rto));
    json_object_set_new(phases, "restore", json_real(d->t_restore));
    json_object_set_new(phases, "recovery", json_real(d->t_recovery));
    json_object_set_new(phases, "checks", json_real(d->t_checks));
    json_object_set_new(r, "phases", phases);
    json_object_set_new(r, "total_seconds", json_real(total));
    json_object_set_new(r, "rto_objective_seconds",
                        objective ? json_integer(objective) : json_null());
    json_object_set_new(r, "rto_result",
                        !objective || failed       ? json_null()
                        : rto <= (double)objective ? json_string("met")
                                                   : json_string("exceeded"));
    json_object_set_new(target, "type", json_string(d->target_type));
    json_object_set_new(target, "value",
                        d->target_value[0] ? json_string(d->target_value) : json_null());
    json_object_set_new(target, "chosen", json_string(d->target_choice));
    json_object_set_new(r, "recovery_target", target);
    json_object_set_new(r, "pick",
                        json_string(d->o->backup ? "given"
                                    : d->o->pick ? d->o->pick
                                                 : "latest"));
    json_object_set_new(r, "reached_lsn",
                        d->reached_lsn[0] ? json_string(d->reached_lsn) : json_null());
    json_object_set_new(r, "reached_time",
                        d->reached_time[0] ? json_string(d->reached_time) : json_null());
    json_object_set_new(r, "backup_stop_lsn",
                        json_incref(json_object_get(d->manifest, "stop_lsn")));
    json_object_set_new(r, "backup_stop_time",
                        json_incref(json_object_get(d->manifest, "stop_time")));
    json_object_set_new(r, "start_time", pd_json_time(start));
    json_object_set_new(r, "stop_time", pd_json_time(time(NULL)));
    json_object_set_new(r, "host", json_string(host));
    json_object_set_new(r, "pgdrill_version", json_string(PD_VERSION));
    json_object_set_new(r, "checks", json_incref(d->checks));
    return r;
}

static int
store_report(drill *d, json_t *report, pd_err *err)
{
    char id[64];
    int rc;

    // IDs sort by time; two drills in one second get a suffix.
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(report, "id")));
    for (int k = 2; k < 100; k++) {
        rc = pd_drill_report_store(d->repo, report, err);
        if (rc != PD_EEXIST)
            return rc;
        char next[80];
        snprintf(next, sizeof(next), "%s-%d", id, k);
        json_object_set_new(report, "id", json_string(next));
    }
    return rc;
}

/* ---- logical drills ---- */

/*
 * A logical backup's drill: a fresh instance from initdb (the backup's
 * major version), isolated exactly as a physical drill's (the same scratch
 * instance and settings); the globals, then each database through
 * pg_restore, every object through its hashes and tags. Tablespaces are
 * left out (their locations are the source's paths). rto_seconds is the
 * restore phase: initdb, start, globals and every pg_restore; there is no
 * recovery. Returns 0 with the verdict in d->checks, or an error when the
 * drill could not run.
 */
static int
run_logical(drill *d, const char *parent, pd_err *err)
{
    const char *repo = pd_config_get(d->cfg, "repo");
    json_t *dbs = json_object_get(d->manifest, "databases"), *db;
    double p0;
    size_t i;
    int applied = 0, skipped = 0, rc;

    d->target_type = "immediate";
    d->target_choice = "default";
    pd_scratch_opts so = {
        parent,
        d->backup_id,
        geteuid() == 0 ? pd_config_get(d->cfg, "drill-user") : NULL,
        d->pg_bin,
        (int)(json_integer_value(json_object_get(d->manifest, "pg_version_num")) / 10000),
        {pd_config_get(d->cfg, "key-file"), repo[0] == '/' ? repo : NULL}};
    if ((rc = pd_scratch_create(&d->scratch, &so, err)) < 0)
        return rc;

    // Phase 1: restore (an instance to restore into is part of it).
    p0 = pd_time_mono();
    if ((rc = pd_scratch_hand_over(d->scratch, err)) < 0 ||
        (rc = pd_scratch_initdb(d->scratch, "postgres", err)) < 0 ||
        (rc = pd_scratch_start(d->scratch, NULL, err)) < 0)
        return rc;
    rc = wait_for(d, "SELECT true", "start", err);
    if (rc == PD_ECHECK) {
        pd_check_add(d->checks, "restore", "fail", "%s", err->msg);
        return 0;
    }
    if (rc < 0)
        return rc;
    pd_pg_opts server = PD_PG_OPTS_INIT;
    server.host = pd_scratch_socket(d->scratch);
    server.port = pd_scratch_port(d->scratch);
    server.user = d->user;
    server.dbname = "template1";
    // The restored roles may carry preload settings (ALTER ROLE ... SET): never in our sessions.
    server.options = "-c session_preload_libraries= -c local_preload_libraries=";
    rc = pd_logical_apply_globals(d->repo, d->manifest, &server, true, &applied, &skipped, err);
    if (rc == PD_EPG || rc == PD_ECORRUPT || rc == PD_ECHECK) {
        pd_check_add(d->checks, "globals", "fail", "%s", err->msg);
        return 0;
    }
    if (rc < 0)
        return rc;
    pd_check_add(d->checks, "globals", "pass",
                 "%d statements of pg_dumpall --globals-only applied (%d left out: roles that "
                 "exist, tablespaces)",
                 applied, skipped);
    json_array_foreach(dbs, i, db)
    {
        pd_logical_db_opts lo = {&server, d->pg_bin, NULL, 1, NULL, false, true, true};
        const char *name = json_string_value(json_object_get(db, "name")) ?: "?";
        double t = pd_time_mono();
        rc = pd_logical_restore_database(d->repo, d->manifest, db, &lo, err);
        if (rc == PD_EPG || rc == PD_ECORRUPT || rc == PD_ECHECK || rc == PD_ECONFIG) {
            pd_check_add(d->checks, "restore", "fail", "database \"%s\": %s", name, err->msg);
            return 0;
        }
        if (rc < 0)
            return rc;
        pd_log_info("restored database \"%s\" in %.1f s", name, pd_time_mono() - t);
    }
    d->t_restore = pd_time_mono() - p0;
    pd_check_add(d->checks, "restore", "pass",
                 "globals and %zu database%s restored through pg_restore, every object's hashes "
                 "and tags checked",
                 json_array_size(dbs), json_array_size(dbs) == 1 ? "" : "s");

    // Phase 3: the same checks as a physical drill's, at the dump's snapshot.
    double c0 = pd_time_mono();
    pd_check_target ct = {pd_scratch_socket(d->scratch), pd_scratch_port(d->scratch), d->user,
                          "template1"};
    json_t *found = NULL;
    pd_checks_row_counts(d->checks, &ct, json_object_get(d->manifest, "row_counts"));
    pd_checks_databases(d->checks, &ct, &found);
    pd_checks_amcheck(d->checks, &ct, found, pd_config_get(d->cfg, "drill-amcheck"));
    pd_checks_user(d->checks, &ct, d->cfg);
    json_decref(found);
    d->t_checks += pd_time_mono() - c0;
    return 0;
}

/* ---- the drill ---- */

static const char *
pg_bin_for(drill *d, char *buf, size_t size)
{
    char src[256];
    long num = (long)json_integer_value(json_object_get(d->manifest, "pg_version_num"));

    // The backup's own major version, unless pg-bin is set explicitly.
    if (strcmp(pd_config_source(d->cfg, "pg-bin", src, sizeof(src)), "default") != 0 || num == 0)
        snprintf(buf, size, "%s", pd_config_get(d->cfg, "pg-bin"));
    else
        snprintf(buf, size, "/usr/lib/postgresql/%ld/bin", num / 10000);
    return buf;
}

/* Sets d->pg_bin to the backup's PostgreSQL binaries; exit 2 when its postgres cannot run. */
static int
find_postgres(drill *d, pd_err *err)
{
    char *postgres = pd_asprintf("%s/postgres", pg_bin_for(d, d->pg_bin, sizeof(d->pg_bin)));
    int rc = 0;

    if (access(postgres, X_OK) < 0) {
        rc = pd_err_sys(err, PD_ECONFIG, "cannot run \"%s\" for backup %s (PostgreSQL %s)",
                        postgres, d->backup_id,
                        json_string_value(json_object_get(d->manifest, "pg_version")) ?: "?");
        pd_err_hint(err, "install that major version's server package, or set pg-bin");
    }
    pd_free(postgres);
    return rc;
}

/* Where scratch instances go: drill-dir, else $TMPDIR when absolute, else /var/tmp. */
static const char *
drill_dir(const pd_config *cfg)
{
    const char *dir = pd_config_get(cfg, "drill-dir"), *tmp = getenv("TMPDIR");

    if (dir)
        return dir;
    return tmp && tmp[0] == '/' ? tmp : "/var/tmp";
}

int
pd_drill_run(json_t **report, const pd_config *cfg, const pd_drill_opts *o, pd_err *err)
{
    drill d;
    pd_recovery_plan_t plan = {0};
    pd_restore_opts ro;
    char id[PD_TIME_BUF];
    char maps_dir[PD_RESTORE_MAX_MAPS][64];
    char *cp = NULL;
    double t0 = pd_time_mono();
    time_t start = time(NULL);
    json_t *out = NULL;
    int rc;

    memset(&d, 0, sizeof(d));
    memset(&ro, 0, sizeof(ro));
    *report = NULL;
    d.cfg = cfg;
    d.o = o;
    d.checks = json_array();
    pd_time_id(id, sizeof(id), start);

    // Could the drill run at all? Errors up to the scratch instance are not verdicts.
    if (geteuid() == 0 && pd_config_get(cfg, "drill-user") == NULL) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "pgdrill runs as root and drill-user is not set: PostgreSQL refuses to "
                        "run as root");
        pd_err_hint(err, "set drill-user to a dedicated unprivileged user (e.g. drill-user = "
                         "pgdrill-drill) that does not own the repository or the key");
        goto cleanup;
    }
    if ((rc = pd_repo_open(&d.repo, cfg, err)) < 0 || (rc = choose_backup(&d, err)) < 0)
        goto cleanup;
    d.backup_id = json_string_value(json_object_get(d.manifest, "id"));
    if (strcmp(json_string_value(json_object_get(d.manifest, "type")) ?: "", "logical") == 0) {
        // --target random (the scheduled drill's) has one point to choose
        // from here: the dump's moment. A given time or LSN cannot be met.
        if (o->target_time || o->target_lsn) {
            rc = pd_err_set(err, PD_EUSAGE,
                            "backup %s is a logical backup: it restores to the moment of its "
                            "dump, with no recovery target",
                            d.backup_id);
            pd_err_hint(err, "drill it without --target-time and --target-lsn");
            goto cleanup;
        }
        if (o->target_random)
            pd_log_info("backup %s is a logical backup: --target random means the moment of "
                        "its dump",
                        d.backup_id);
        if ((rc = find_postgres(&d, err)) < 0)
            goto cleanup;
        const char *parent = drill_dir(cfg);
        // The restored databases take about twice the dump (indexes are rebuilt).
        if ((rc = check_disk(&d, parent, 0, 2, err)) < 0)
            goto cleanup;
        pd_log_info("drill %s: logical backup %s (ended %s)", id, d.backup_id,
                    json_string_value(json_object_get(d.manifest, "stop_time")));
        if ((rc = run_logical(&d, parent, err)) < 0)
            goto cleanup;
        goto verdict;
    }
    d.stop_lsn = lsn_of(json_string_value(json_object_get(d.manifest, "stop_lsn")));
    d.tli = (unsigned)json_integer_value(json_object_get(d.manifest, "timeline"));
    if ((rc = choose_target(&d, err)) < 0)
        goto cleanup;
    if ((rc = find_postgres(&d, err)) < 0)
        goto cleanup;
    pd_log_info("drill %s: backup %s (ended %s), target %s%s%s%s", id, d.backup_id,
                json_string_value(json_object_get(d.manifest, "stop_time")), d.target_type,
                d.target_value[0] ? " " : "", d.target_value,
                strcmp(d.target_choice, "random") == 0 ? " (random)" : "");

    // The WAL the target needs: a gap is a verdict (the backup does not reach it).
    ro.backup = d.backup_id;
    ro.target_lsn = strcmp(d.target_type, "lsn") == 0 ? d.target_value : NULL;
    ro.target_time = strcmp(d.target_type, "time") == 0 ? d.target_value : NULL;
    ro.target_immediate = strcmp(d.target_type, "immediate") == 0;
    rc = pd_recovery_plan(&plan, d.repo, &ro, err);
    if (rc == PD_ECORRUPT) {
        pd_check_add(d.checks, "wal archive", "fail", "%s", err->msg);
        rc = 0;
        goto verdict;
    }
    if (rc < 0)
        goto cleanup;
    if (plan.missing_segment[0] && strcmp(d.target_type, "immediate") != 0) {
        char reach[32];
        lsn_text(reach, sizeof(reach), d.reach.reach_lsn);
        pd_check_add(d.checks, "wal archive", "fail",
                     "WAL file %s, needed to reach the newest archived WAL (%s) from backup %s, "
                     "is missing from the archive: recovery would stop at LSN %s",
                     plan.missing_segment, plan.newest_wal, d.backup_id, reach);
        goto verdict;
    }
    // From the backup's last segment to the newest of the continuous archive.
    unsigned segments = 0;
    if (strcmp(d.target_type, "immediate") != 0 && d.reach.reach_lsn > d.stop_lsn / SEG * SEG)
        segments = (unsigned)((d.reach.reach_lsn - d.stop_lsn / SEG * SEG) / SEG);
    if (d.reach.newest[0])
        pd_check_add(d.checks, "wal archive", "pass",
                     "archived WAL is continuous from backup %s to %s, the newest file",
                     d.backup_id, d.reach.newest);
    else
        pd_check_add(d.checks, "wal archive", "pass",
                     "no WAL archived after backup %s: it recovers from the WAL it carries",
                     d.backup_id);

    // The scratch instance.
    const char *parent = drill_dir(cfg);
    if ((rc = check_disk(&d, parent, segments, 1, err)) < 0)
        goto cleanup;
    const char *repo = pd_config_get(cfg, "repo");
    pd_scratch_opts so = {
        parent,
        d.backup_id,
        geteuid() == 0 ? pd_config_get(cfg, "drill-user") : NULL,
        d.pg_bin,
        (int)(json_integer_value(json_object_get(d.manifest, "pg_version_num")) / 10000),
        {pd_config_get(cfg, "key-file"), repo[0] == '/' ? repo : NULL}};
    if ((rc = pd_scratch_create(&d.scratch, &so, err)) < 0)
        goto cleanup;

    // Phase 1: restore, every object through its hashes and tags, then the WAL.
    double p0 = pd_time_mono();
    json_t *ts, *t;
    size_t i;
    ts = json_object_get(d.manifest, "tablespaces");
    json_array_foreach(ts, i, t)
    {
        if (i >= PD_RESTORE_MAX_MAPS)
            break;
        snprintf(maps_dir[i], sizeof(maps_dir[i]), "%s",
                 json_string_value(json_object_get(t, "oid")) ?: "");
        ro.maps[i].oid = maps_dir[i];
        ro.maps[i].dir = pd_asprintf("%s/ts-%s", pd_scratch_dir(d.scratch), maps_dir[i]);
        ro.n_maps++;
    }
    ro.target_lsn = ro.target_time = NULL;
    ro.target_immediate = false;
    ro.target_dir = pd_scratch_data(d.scratch);
    cp = pd_asprintf("cp '%s/%%f' '%%p'", pd_scratch_wal(d.scratch));
    ro.restore_command = cp;
    json_t *restored = NULL;
    rc = pd_restore_physical(&restored, cfg, &ro, err);
    json_decref(restored);
    if (rc == PD_ECORRUPT || rc == PD_ECHECK) {
        pd_check_add(d.checks, "restore", "fail", "%s", err->msg);
        rc = 0;
        goto verdict;
    }
    if (rc < 0)
        goto cleanup;
    unsigned fetched = 0;
    if (strcmp(d.target_type, "immediate") != 0) {
        rc = fetch_wal(&d, &fetched, err);
        if (rc == PD_ECORRUPT || rc == PD_ECHECK) {
            pd_check_add(d.checks, "restore", "fail", "%s", err->msg);
            rc = 0;
            goto verdict;
        }
        if (rc < 0)
            goto cleanup;
    }
    d.t_restore = pd_time_mono() - p0;
    pd_check_add(d.checks, "restore", "pass",
                 "%zu objects and %u WAL files read back with every hash and tag checked",
                 json_array_size(json_object_get(d.manifest, "objects")), fetched);

    // Before the start: the server's own manifest against the restored files.
    double c0 = pd_time_mono();
    run_verifybackup(&d);
    d.t_checks += pd_time_mono() - c0;
    if (!pd_checks_passed(d.checks))
        goto verdict;
    // Debian keeps postgresql.conf in /etc: the instance needs one, empty is fine.
    if ((rc = touch(pd_scratch_data(d.scratch), "postgresql.conf", true, err)) < 0 ||
        (rc = touch(pd_scratch_data(d.scratch), "recovery.signal", true, err)) < 0 ||
        (rc = pd_scratch_hand_over(d.scratch, err)) < 0)
        goto cleanup;

    // Phase 2: recovery (and the row counts at the backup's consistent point).
    rc = recover(&d, err);
    if (rc == PD_ECHECK) {
        pd_check_add(d.checks, "recovery", "fail", "%s", err->msg);
        rc = 0;
        goto verdict;
    }
    if (rc < 0)
        goto cleanup;
    pd_log_info("recovery finished in %.1f s", d.t_recovery);

    // Phase 3: checks at the target.
    c0 = pd_time_mono();
    pd_check_target ct = {pd_scratch_socket(d.scratch), pd_scratch_port(d.scratch), d.user, d.db};
    json_t *dbs = NULL;
    check_target(&d);
    pd_checks_databases(d.checks, &ct, &dbs);
    pd_checks_amcheck(d.checks, &ct, dbs, pd_config_get(cfg, "drill-amcheck"));
    pd_checks_user(d.checks, &ct, cfg);
    json_decref(dbs);
    d.t_checks += pd_time_mono() - c0;

verdict:
    if (o->keep && d.scratch)
        pd_scratch_keep(d.scratch);
    else if (d.scratch) {
        pd_scratch_free(d.scratch);
        d.scratch = NULL;
    }
    out = build_report(&d, id, start, pd_time_mono() - t0);
    if (o->keep && d.scratch) {
        json_t *k = json_object();
        json_object_set_new(k, "dir", json_string(pd_scratch_dir(d.scratch)));
        json_object_set_new(k, "data", json_string(pd_scratch_data(d.scratch)));
        json_object_set_new(k, "socket", json_string(pd_scratch_socket(d.scratch)));
        json_object_set_new(k, "port", json_integer(pd_scratch_port(d.scratch)));
        json_object_set_new(k, "user", d.user[0] ? json_string(d.user) : json_null());
        json_object_set_new(k, "log", json_string(pd_scratch_log(d.scratch)));
        json_object_set_new(out, "kept", k);
    }
    if ((rc = store_report(&d, out, err)) < 0) {
        json_decref(out);
        out = NULL;
        goto cleanup;
    }
    *report = out;
    rc = 0;
cleanup:
    pd_scratch_free(d.scratch);
    for (int k = 0; k < ro.n_maps; k++)
        pd_free((char *)ro.maps[k].dir);
    json_decref(plan.manifest);
    json_decref(d.manifest);
    json_decref(d.checks);
    pd_repo_free(d.repo);
    pd_free(cp);
    return rc;
}
