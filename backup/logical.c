/*
 * Logical backup (see backup.h): pg_dumpall --globals-only and one pg_dump
 * -Fc per database, each child's stdout streamed through the object chain
 * (hash, zstd, seal, hash) into its repository object with no temporary
 * file; memory stays at one read buffer plus the chain's fixed buffers.
 *
 * Commit protocol, the same as the physical backup's (backup.c):
 *  1. Each object is committed durably on its own, and only when its
 *     program exited 0: an object of a failed pg_dump is discarded, and the
 *     backup stops there.
 *  2. Every object is confirmed in the repository listing with the size
 *     written.
 *  3. manifest.json is written last; its presence is the commit.
 *
 * Row counts for drills: the dump itself is read as it streams past
 * (dumpscan.h), so each table's rows are counted from the COPY data in the
 * object, exactly, at no cost to the server. Should the scanner not know
 * the archive (another pg_dump version), the rows are counted on the
 * server instead, after the dump, inside the transaction whose snapshot the
 * pg_dump used (--snapshot=<exported>): exact as well, but a second scan.
 * Databases are dumped one after another, each at its own moment, as
 * pg_dumpall would.
 *
 * pg_dump runs with -Z0: compression is the repository's (zstd, its
 * worker threads) rather than zlib inside pg_dump, which is single-threaded
 * and would make zstd's work on the dump pointless.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/dumpscan.h"
#include "backup/rowcount.h"
#include "common/child.h"
#include "common/fmt.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/pg.h"
#include "common/pgtool.h"
#include "common/time.h"
#include "common/version.h"

/* Databases one logical backup holds at most. */
#define MAX_DATABASES 4096
/* Tables per database whose row counts are recorded: those with the most data. */
#define PD_LOGICAL_COUNT_TABLES 20

typedef struct logical_ctx {
    const pd_config *cfg;
    pd_repo *repo;
    char id[PD_TIME_BUF];
    const pd_secret *key;
    unsigned char key_id[PD_KEY_ID_SIZE];
    pd_pg_opts po;
    pd_pgtool_env env;
    char pg_bin[512];
    json_t *objects;
    uint64_t bytes, stored;
    unsigned char *buf; /* one read buffer, PD_STAGE_BUF */
} logical_ctx;

/*
 * Runs argv with stdout streamed into object name; commits the object only
 * when the program exited 0. what names the dump in messages.
 */
/* What to do after a failed pg_dump or pg_dumpall, from what it said. */
static const char *
dump_remedy(const char *said)
{
    if (strstr(said, "large object"))
        return "grant SELECT on each large object to the role (see README, \"Least privilege\"); "
               "nothing was committed";
    if (strstr(said, "row-level security") || strstr(said, "row security"))
        return "the role needs BYPASSRLS (see README, \"Least privilege\"); nothing was committed";
    if (strstr(said, "permission denied"))
        return "the role needs pg_read_all_data and BYPASSRLS (see README, \"Least privilege\"); "
               "nothing was committed";
    return "nothing was committed";
}

static int
dump_into(logical_ctx *c, const char *const *argv, const char *name, const char *what,
          json_t *entry_extra, pd_dumpscan *scan, pd_err *err)
{
    pd_child_opts co = PD_CHILD_OPTS_INIT;
    pd_child *ch = NULL;
    pd_objw *w = NULL;
    pd_object_info info;
    char *obj = pd_asprintf("backups/%s/%s", c->id, name);
    char how[PD_CHILD_STATUS_MAX], said[768];
    size_t n;
    int status = 0, rc;

    co.env = c->env.env;
    co.stdin_mode = PD_CHILD_NULL;
    co.stdout_mode = PD_CHILD_PIPE;
    co.stderr_mode = PD_CHILD_PIPE;
    co.die_with_parent = true; // no pg_dump left holding its snapshot after a kill
    if ((rc = pd_objw_open(&w, c->repo, obj, c->key, c->key_id, true, err)) < 0)
        goto cleanup;
    if ((rc = pd_child_start(&ch, argv, &co, err)) < 0) {
        pd_err_hint(err, "check pg-bin");
        goto cleanup;
    }
    for (;;) {
        if ((rc = pd_child_read(ch, c->buf, PD_STAGE_BUF, &n, err)) < 0)
            goto cleanup;
        if (n == 0)
            break;
        if (scan)
            pd_dumpscan_feed(scan, c->buf, n);
        if ((rc = pd_stage_write(pd_objw_stage(w), c->buf, n, err)) < 0)
            goto cleanup; // pd_child_free kills the program
    }
    if ((rc = pd_child_wait(ch, &status, err)) < 0)
        goto cleanup;
    const char *text = pd_child_output(ch, PD_CHILD_STDERR, NULL, NULL);
    if (status != 0) {
        pd_pgtool_errors(text, said, sizeof(said));
        rc =
            pd_err_set(err, PD_EPG, "%s failed (%s)%s%s", what,
                       pd_child_format_status(how, sizeof(how), status), said[0] ? ": " : "", said);
        pd_err_hint(err, "%s", dump_remedy(said));
        goto cleanup;
    }
    if (text[0]) {
        pd_pgtool_errors(text, said, sizeof(said));
        pd_log_warning("%s: %s", what, said);
    }
    if ((rc = pd_objw_commit(w, &info, err)) < 0)
        goto cleanup;
    json_t *o = pd_backup_object_json(name, &info);
    if (entry_extra)
        json_object_update(o, entry_extra);
    json_array_append_new(c->objects, o);
    c->bytes += info.size;
    c->stored += info.stored_size;
    pd_log_debug("stored object %s: %llu bytes (%llu stored)", name, (unsigned long long)info.size,
                 (unsigned long long)info.stored_size);
cleanup:
    pd_child_free(ch);
    pd_objw_free(w);
    pd_free(obj);
    return rc;
}

static int
dump_globals(logical_ctx *c, bool passwords, pd_err *err)
{
    char *prog = pd_asprintf("%s/pg_dumpall", c->pg_bin);
    char *conn = pd_pgtool_conninfo(c->po.dbname ? c->po.dbname : "postgres");
    const char *argv[] = {
        prog, "--globals-only", "-d", conn, passwords ? NULL : "--no-role-passwords", NULL};
    json_t *extra = json_object();
    int rc;

    json_object_set_new(extra, "role_passwords", json_boolean(passwords));
    rc = dump_into(c, argv, "globals.sql", "pg_dumpall --globals-only", extra, NULL, err);
    json_decref(extra);
    pd_free(prog);
    pd_free(conn);
    return rc;
}

/* One database: its snapshot, pg_dump streamed into db-<oid>.dump, the counts. */
static int
dump_database(logical_ctx *c, json_t *db, json_t *counts, pd_err *err)
{
    const char *name = json_string_value(json_object_get(db, "name"));
    const char *oid = json_string_value(json_object_get(db, "oid"));
    pd_pg_opts o = c->po;
    pd_pg *pg = NULL;
    PGresult *res = NULL;
    char snapshot[128] = "", snaparg[160];
    char *prog = pd_asprintf("%s/pg_dump", c->pg_bin);
    char *conn = pd_pgtool_conninfo(name);
    char *what = pd_asprintf("pg_dump of database \"%s\"", name);
    char *object = pd_asprintf("db-%s.dump", oid);
    json_t *extra = json_object();
    pd_dumpscan *scan = NULL;
    uint64_t before = c->bytes;
    double t0 = pd_time_mono();
    int rc;

    // The snapshot pg_dump shares, so the counts below are those of the dump.
    o.dbname = name;
    if ((rc = pd_pg_connect(&pg, &o, err)) < 0)
        goto cleanup;
    if ((rc = pd_pg_query(pg, &res, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
                          err)) < 0)
        goto cleanup;
    PQclear(res);
    res = NULL;
    pd_err e = PD_ERR_INIT;
    if (pd_pg_query_value(pg, "SELECT pg_export_snapshot()", snapshot, sizeof(snapshot), &e) < 0) {
        pd_log_warning("database \"%s\": no snapshot to share with pg_dump (%s): row counts "
                       "come from the dump alone",
                       name, e.msg);
        snapshot[0] = '\0';
    }
    snprintf(snaparg, sizeof(snaparg), "--snapshot=%s", snapshot);
    const char *argv[] = {
        prog, "--format=custom", "--compress=0", "-d", conn, snapshot[0] ? snaparg : NULL, NULL};
    json_object_set_new(extra, "database", json_string(name));
    scan = pd_dumpscan_new();
    if ((rc = dump_into(c, argv, object, what, extra, scan, err)) < 0)
        goto cleanup;
    char why[160];
    if (pd_dumpscan_ok(scan, why, sizeof(why))) {
        json_t *found = pd_dumpscan_counts(scan, name, PD_LOGICAL_COUNT_TABLES);
        json_array_extend(counts, found);
        json_decref(found);
    } else if (snapshot[0]) {
        pd_log_info("database \"%s\": counting rows on the server (the dump could not be read "
                    "for them: %s)",
                    name, why);
        pd_rowcount_in_snapshot(counts, pg, name);
    }
    json_object_set_new(db, "object", json_string(object));
    char size[PD_FMT_BUF], dur[PD_FMT_BUF];
    pd_log_info("dumped database \"%s\": %s in %s", name,
                pd_fmt_size(size, sizeof(size), c->bytes - before),
                pd_fmt_duration(dur, sizeof(dur), pd_time_mono() - t0));
cleanup:
    PQclear(res);
    pd_pg_free(pg);
    pd_dumpscan_free(scan);
    json_decref(extra);
    pd_free(prog);
    pd_free(conn);
    pd_free(what);
    pd_free(object);
    return rc;
}

static const char databases_sql[] =
    "SELECT d.datname, d.oid::text, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
    "d.datlocprovider::text, coalesce(d.daticulocale, ''), d.datistemplate "
    "FROM pg_database d WHERE d.datallowconn ORDER BY d.datname";

/*
 * The databases to dump, with what CREATE DATABASE needs to make them again
 * (encoding, collation, ctype, locale provider). Without a list: every
 * database but the templates. A named one that does not exist, or does not
 * allow connections, is PD_ECONFIG.
 */
static int
choose_databases(logical_ctx *c, const char *const *wanted, json_t *out, char *version,
                 size_t vsize, int *version_num, char *sysid, size_t ssize, pd_err *err)
{
    pd_pg *pg = NULL;
    PGresult *res = NULL;
    char num[32];
    int rc;

    if ((rc = pd_pg_connect(&pg, &c->po, err)) < 0)
        return rc;
    if ((rc = pd_pg_query_value(pg, "SELECT current_setting('server_version')", version, vsize,
                                err)) < 0 ||
        (rc = pd_pg_query_value(pg, "SELECT current_setting('server_version_num')", num,
                                sizeof(num), err)) < 0)
        goto cleanup;
    *version_num = (int)strtol(num, NULL, 10);
    pd_err e = PD_ERR_INIT;
    if (pd_pg_query_value(pg, "SELECT system_identifier::text FROM pg_control_system()", sysid,
                          ssize, &e) < 0)
        sysid[0] = '\0';
    if ((rc = pd_pg_query(pg, &res, databases_sql, 0, NULL, err)) < 0)
        goto cleanup;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 0);
        bool chosen = wanted == NULL && strcmp(PQgetvalue(res, i, 7), "t") != 0;
        for (size_t k = 0; wanted && wanted[k]; k++)
            chosen |= strcmp(wanted[k], name) == 0;
        if (!chosen)
            continue;
        json_t *d = json_object();
        json_object_set_new(d, "name", json_string(name));
        json_object_set_new(d, "oid", json_string(PQgetvalue(res, i, 1)));
        json_object_set_new(d, "encoding", json_string(PQgetvalue(res, i, 2)));
        json_object_set_new(d, "collate", json_string(PQgetvalue(res, i, 3)));
        json_object_set_new(d, "ctype", json_string(PQgetvalue(res, i, 4)));
        json_object_set_new(d, "locale_provider",
                            json_string(strcmp(PQgetvalue(res, i, 5), "i") == 0 ? "icu" : "libc"));
        json_object_set_new(d, "icu_locale", json_string(PQgetvalue(res, i, 6)));
        json_array_append_new(out, d);
    }
    for (size_t k = 0; wanted && wanted[k]; k++) {
        bool found = false;
        size_t i;
        json_t *d;
        json_array_foreach(out, i, d)
        {
            found |= strcmp(json_string_value(json_object_get(d, "name")), wanted[k]) == 0;
        }
        if (!found) {
            rc = pd_err_set(err, PD_ECONFIG,
                            "database \"%s\" does not exist on %s or does not allow connections",
                            wanted[k], pd_pg_describe(pg));
            pd_err_hint(err, "check --database; psql -l lists the databases");
            goto cleanup;
        }
    }
    if (json_array_size(out) == 0) {
        rc = pd_err_set(err, PD_ECONFIG, "no database to dump on %s", pd_pg_describe(pg));
        goto cleanup;
    }
    if (json_array_size(out) > MAX_DATABASES) {
        rc = pd_err_set(err, PD_ECONFIG, "more than %d databases to dump", MAX_DATABASES);
        pd_err_hint(err, "name them with --database in several backups");
        goto cleanup;
    }
cleanup:
    PQclear(res);
    pd_pg_free(pg);
    return rc;
}

int
pd_backup_logical(json_t **manifest, const pd_config *cfg, const pd_backup_logical_opts *opts,
                  pd_err *err)
{
    logical_ctx c;
    json_t *dbs = json_array(), *counts = json_array(), *m = NULL, *d;
    char version[64] = "", sysid[64] = "";
    char size[PD_FMT_BUF], stored[PD_FMT_BUF], dur[PD_FMT_BUF], rate[PD_FMT_BUF];
    int version_num = 0, lock = -1, rc;
    time_t start = time(NULL);
    double t0 = pd_time_mono();
    size_t i;

    memset(&c, 0, sizeof(c));
    *manifest = NULL;
    c.cfg = cfg;
    c.objects = json_array();
    c.buf = pd_malloc(PD_STAGE_BUF);
    pd_pg_opts_from_config(&c.po, cfg);
    pd_pgtool_env_init(&c.env, &c.po);
    snprintf(c.pg_bin, sizeof(c.pg_bin), "%s", pd_config_get(cfg, "pg-bin"));
    if ((rc = pd_repo_open(&c.repo, cfg, err)) < 0)
        goto cleanup;
    if ((lock = pd_repo_lock(cfg, err)) < 0) {
        rc = lock;
        goto cleanup;
    }
    if ((rc = choose_databases(&c, opts->databases, dbs, version, sizeof(version), &version_num,
                               sysid, sizeof(sysid), err)) < 0)
        goto cleanup;
    // The repository belongs to one cluster; a role that cannot read
    // pg_control_system() (it is not granted to PUBLIC everywhere) leaves it unchecked.
    if (sysid[0] && (rc = pd_repo_bind_cluster(c.repo, sysid, version_num, err)) < 0)
        goto cleanup;
    if ((rc = pd_backup_new_id(c.id, sizeof(c.id), c.repo, err)) < 0)
        goto cleanup;
    if ((rc = pd_repo_new_data_key(c.repo, &c.key, c.key_id, err)) < 0)
        goto cleanup;
    pd_log_info("logical backup %s started: PostgreSQL %s, %zu database%s", c.id, version,
                json_array_size(dbs), json_array_size(dbs) == 1 ? "" : "s");
    if ((rc = dump_globals(&c, opts->with_role_passwords, err)) < 0)
        goto cleanup;
    json_array_foreach(dbs, i, d)
    {
        if ((rc = dump_database(&c, d, counts, err)) < 0)
            goto cleanup;
    }
    if ((rc = pd_backup_confirm_objects(c.repo, c.id, c.objects, err)) < 0)
        goto cleanup;

    m = json_object();
    json_object_set_new(m, "format", json_integer(1));
    json_object_set_new(m, "id", json_string(c.id));
    json_object_set_new(m, "type", json_string("logical"));
    json_object_set_new(m, "label", json_string(c.id));
    json_object_set_new(m, "start_time", pd_json_time(start));
    json_object_set_new(m, "stop_time", pd_json_time(time(NULL)));
    json_object_set_new(m, "start_lsn", json_null());
    json_object_set_new(m, "stop_lsn", json_null());
    json_object_set_new(m, "timeline", json_null());
    json_object_set_new(m, "system_identifier", sysid[0] ? json_string(sysid) : json_null());
    json_object_set_new(m, "pg_version", json_string(version));
    json_object_set_new(m, "pg_version_num", json_integer(version_num));
    json_object_set_new(m, "databases", json_incref(dbs));
    json_object_set_new(m, "globals", json_string("globals.sql"));
    json_object_set_new(m, "role_passwords", json_boolean(opts->with_role_passwords));
    json_object_set_new(m, "size", json_integer((json_int_t)c.bytes));
    json_object_set_new(m, "stored_size", json_integer((json_int_t)c.stored));
    json_object_set_new(m, "pgdrill_version", json_string(PD_VERSION));
    json_object_set_new(m, "objects", json_incref(c.objects));
    json_object_set_new(m, "row_counts", json_incref(counts));
    if ((rc = pd_backup_commit_manifest(c.repo, c.id, c.key, c.key_id, m, err)) < 0)
        goto cleanup;

    double secs = pd_time_mono() - t0;
    pd_log_info(
        "logical backup %s complete: %zu database%s, %s, stored %s in %s, %s", c.id,
        json_array_size(dbs), json_array_size(dbs) == 1 ? "" : "s",
        pd_fmt_size(size, sizeof(size), c.bytes), pd_fmt_size(stored, sizeof(stored), c.stored),
        pd_fmt_duration(dur, sizeof(dur), secs), pd_fmt_rate(rate, sizeof(rate), c.bytes, secs));
    *manifest = m;
    m = NULL;
cleanup:
    if (rc < 0 && c.id[0])
        pd_backup_log_uncommitted(c.id);
    json_decref(m);
    json_decref(dbs);
    json_decref(counts);
    json_decref(c.objects);
    pd_repo_free(c.repo);
    if (lock >= 0)
        close(lock);
    pd_free(c.buf);
    return rc;
}
