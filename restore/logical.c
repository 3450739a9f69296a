/* Restoring a logical backup (see logical.h). */
#include "restore/logical.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/child.h"
#include "common/fmt.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/pgtool.h"
#include "common/time.h"
#include "restore/catalog.h"
#include "restore/fdio.h"
#include "restore/verify.h"

/* ---- splitting globals.sql ---- */

/* Length of a dollar-quote tag ($tag$ or $$) at s, 0 when there is none. */
static size_t
dollar_tag(const char *s, size_t n)
{
    size_t i = 1;

    if (n < 2 || s[0] != '$')
        return 0;
    while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_'))
        i++;
    if (i < n && s[i] == '$' && !(i > 1 && isdigit((unsigned char)s[1])))
        return i + 1;
    return 0;
}

int
pd_logical_next_statement(const char *sql, size_t n, size_t *pos, size_t *start, size_t *len)
{
    size_t i = *pos;

    // Blanks, comments and meta-command lines between statements.
    for (;;) {
        while (i < n && isspace((unsigned char)sql[i]))
            i++;
        if (i + 1 < n && sql[i] == '-' && sql[i + 1] == '-') {
            while (i < n && sql[i] != '\n')
                i++;
        } else if (i < n && sql[i] == '\\') {
            while (i < n && sql[i] != '\n')
                i++;
        } else {
            break;
        }
    }
    if (i >= n) {
        *pos = n;
        return 0;
    }
    *start = i;
    while (i < n) {
        char ch = sql[i];
        if (ch == ';') {
            i++;
            break;
        }
        if (ch == '\'') {
            // E'...' allows backslash escapes; '' is a quote either way.
            bool esc = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e');
            for (i++; i < n; i++) {
                if (esc && sql[i] == '\\' && i + 1 < n) {
                    i++;
                } else if (sql[i] == '\'') {
                    if (i + 1 < n && sql[i + 1] == '\'')
                        i++;
                    else
                        break;
                }
            }
            i++;
        } else if (ch == '"') {
            for (i++; i < n; i++) {
                if (sql[i] == '"') {
                    if (i + 1 < n && sql[i + 1] == '"')
                        i++;
                    else
                        break;
                }
            }
            i++;
        } else if (ch == '-' && i + 1 < n && sql[i + 1] == '-') {
            while (i < n && sql[i] != '\n')
                i++;
        } else if (ch == '/' && i + 1 < n && sql[i + 1] == '*') {
            int depth = 0;
            for (; i + 1 < n; i++) {
                if (sql[i] == '/' && sql[i + 1] == '*') {
                    depth++;
                    i++;
                } else if (sql[i] == '*' && sql[i + 1] == '/') {
                    i++;
                    if (--depth == 0)
                        break;
                }
            }
            i++;
        } else if (ch == '$' &&
                   !(i > 0 && (isalnum((unsigned char)sql[i - 1]) || sql[i - 1] == '_'))) {
            size_t t = dollar_tag(sql + i, n - i);
            if (t == 0) {
                i++;
                continue;
            }
            const char *tag = sql + i;
            for (i += t; i < n; i++) {
                if (sql[i] == '$' && n - i >= t && memcmp(sql + i, tag, t) == 0) {
                    i += t;
                    break;
                }
            }
        } else {
            i++;
        }
    }
    if (i > n)
        i = n;
    *len = i - *start;
    *pos = i;
    return 1;
}

/* Whether a statement of globals.sql is about a tablespace. */
static bool
about_tablespace(const char *s, size_t len)
{
    static const char *const heads[] = {"CREATE TABLESPACE ", "ALTER TABLESPACE ",
                                        "COMMENT ON TABLESPACE ", NULL};

    for (int k = 0; heads[k]; k++)
        if (len >= strlen(heads[k]) && strncasecmp(s, heads[k], strlen(heads[k])) == 0)
            return true;
    // GRANT ... ON TABLESPACE x TO y; REVOKE ... ON TABLESPACE ...
    if ((len >= 6 && strncasecmp(s, "GRANT ", 6) == 0) ||
        (len >= 7 && strncasecmp(s, "REVOKE ", 7) == 0)) {
        for (size_t i = 0; i + 15 <= len; i++)
            if (strncasecmp(s + i, " ON TABLESPACE ", 15) == 0)
                return true;
    }
    return false;
}

typedef struct membuf {
    char *data;
    size_t len, max;
} membuf;

static int
mem_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    membuf *m = payload;

    if (len > m->max - m->len)
        return pd_err_set(err, PD_ECORRUPT, "the globals are larger than their manifest says");
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

int
pd_logical_apply_globals(pd_repo *r, json_t *manifest, const pd_pg_opts *server,
                         bool skip_tablespaces, int *applied, int *skipped, pd_err *err)
{
    const char *id = json_string_value(json_object_get(manifest, "id"));
    const char *object = json_string_value(json_object_get(manifest, "globals"));
    char *name = NULL, *buf = NULL, *stmt = NULL;
    size_t len = 0, pos = 0, start = 0, slen = 0;
    pd_pg *pg = NULL;
    json_t *o = NULL, *x;
    pd_object_info info;
    char first[PD_ERR_MSG_MAX] = "";
    int failed = 0, rc;
    size_t i;

    *applied = *skipped = 0;
    json_array_foreach(json_object_get(manifest, "objects"), i, x)
    {
        if (object && strcmp(json_string_value(json_object_get(x, "name")) ?: "", object) == 0)
            o = x;
    }
    if (o == NULL || pd_verify_object_info(&info, o) < 0)
        return pd_err_set(err, PD_ECORRUPT, "manifest of backup %s lists no globals object", id);
    if (info.size > PD_LOGICAL_GLOBALS_MAX)
        return pd_err_set(err, PD_ECORRUPT, "globals of backup %s are larger than %d bytes", id,
                          PD_LOGICAL_GLOBALS_MAX);
    name = pd_asprintf("backups/%s/%s", id, object);
    // Read whole (bounded by the manifest's size), every hash and tag checked.
    membuf mb = {pd_malloc((size_t)info.size + 1), 0, (size_t)info.size};
    pd_stage *sink = pd_stage_sink_new(mem_write, NULL, &mb);
    rc = pd_objr_read(r, name, &info, sink, NULL, err);
    pd_stage_free(sink);
    buf = mb.data;
    len = mb.len;
    if (rc < 0)
        goto cleanup;
    if ((rc = pd_pg_connect(&pg, server, err)) < 0)
        goto cleanup;
    while (pd_logical_next_statement(buf, len, &pos, &start, &slen)) {
        if (skip_tablespaces && about_tablespace(buf + start, slen)) {
            (*skipped)++;
            continue;
        }
        pd_free(stmt);
        stmt = pd_malloc(slen + 1);
        memcpy(stmt, buf + start, slen);
        stmt[slen] = '\0';
        PGresult *res = PQexec(pd_pg_conn(pg), stmt);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            (*applied)++;
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            // CREATE ROLE of a role that exists: its ALTER ROLE follows.
            if (state && strcmp(state, "42710") == 0 && strncasecmp(stmt, "CREATE ROLE", 11) == 0) {
                (*skipped)++;
            } else if (failed++ == 0) {
                const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
                // The statement's start names it; never a password (hash) behind it.
                size_t shown = slen < 80 ? slen : 80;
                const char *pw = strcasestr(stmt, " PASSWORD");
                if (pw && (size_t)(pw - stmt) < shown)
                    shown = (size_t)(pw - stmt);
                snprintf(first, sizeof(first), "\"%.*s%s\": %s", (int)shown, stmt,
                         shown < slen ? "..." : "", msg ? msg : PQerrorMessage(pd_pg_conn(pg)));
            }
        }
        PQclear(res);
    }
    if (failed) {
        rc = pd_err_set(err, PD_EPG, "%d statement%s of the globals of backup %s failed, first %s",
                        failed, failed == 1 ? "" : "s", id, first);
        goto cleanup;
    }
    rc = 0;
cleanup:
    pd_pg_free(pg);
    pd_free(stmt);
    pd_free(buf);
    pd_free(name);
    return rc;
}

/* ---- one database ---- */

static const char nonempty_sql[] =
    "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%') "
    "OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname NOT IN ('public', 'pg_catalog', "
    "  'information_schema') AND nspname NOT LIKE 'pg\\_%') "
    "OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) "
    "OR EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "  AND n.nspname NOT LIKE 'pg\\_toast%') "
    "OR EXISTS (SELECT 1 FROM pg_extension WHERE extname <> 'plpgsql') "
    "OR EXISTS (SELECT 1 FROM pg_largeobject_metadata) "
    // Objects outside any schema checked above: anything a user made has an
    // oid from FirstNormalObjectId (16384) on; initdb's own are below.
    "OR EXISTS (SELECT 1 FROM pg_collation WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_operator WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_opclass WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_opfamily WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_conversion WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_ts_config WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_ts_dict WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_cast WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_publication) "
    "OR EXISTS (SELECT 1 FROM pg_event_trigger) "
    "OR EXISTS (SELECT 1 FROM pg_foreign_data_wrapper WHERE oid >= 16384) "
    "OR EXISTS (SELECT 1 FROM pg_foreign_server) "
    "OR EXISTS (SELECT 1 FROM pg_default_acl) "
    "OR EXISTS (SELECT 1 FROM pg_language WHERE oid >= 16384)";

/* The SQL that makes the database as it was dumped (encoding, collation, provider). */
static char *
create_sql(PGconn *conn, const char *target, json_t *db)
{
    const char *keys[] = {"encoding", "collate", "ctype"};
    const char *words[] = {"ENCODING", "LC_COLLATE", "LC_CTYPE"};
    char *ident = PQescapeIdentifier(conn, target, strlen(target));
    char *sql = pd_asprintf("CREATE DATABASE %s TEMPLATE template0", ident);

    PQfreemem(ident);
    for (int k = 0; k < 3; k++) {
        const char *v = json_string_value(json_object_get(db, keys[k]));
        if (v == NULL || v[0] == '\0')
            continue;
        char *lit = PQescapeLiteral(conn, v, strlen(v));
        char *next = pd_asprintf("%s %s %s", sql, words[k], lit);
        PQfreemem(lit);
        pd_free(sql);
        sql = next;
    }
    const char *prov = json_string_value(json_object_get(db, "locale_provider"));
    const char *icu = json_string_value(json_object_get(db, "icu_locale"));
    if (prov && strcmp(prov, "icu") == 0 && icu && icu[0]) {
        char *lit = PQescapeLiteral(conn, icu, strlen(icu));
        char *next = pd_asprintf("%s LOCALE_PROVIDER icu ICU_LOCALE %s", sql, lit);
        PQfreemem(lit);
        pd_free(sql);
        sql = next;
    }
    return sql;
}

/*
 * Makes the target ready: *created when this restore created it. An
 * existing database is used when empty, with clean, or (recreate) dropped
 * and made again.
 */
static int
prepare_target(pd_pg *admin, const pd_logical_db_opts *o, const char *target, json_t *db,
               bool *created, pd_err *err)
{
    PGresult *res = NULL;
    const char *params[1] = {target};
    char *sql = NULL;
    int rc;

    *created = false;
    if ((rc = pd_pg_query(admin, &res, "SELECT 1 FROM pg_database WHERE datname = $1", 1, params,
                          err)) < 0)
        return rc;
    bool exists = PQntuples(res) > 0;
    PQclear(res);
    res = NULL;
    if (exists && o->recreate) {
        char *ident = PQescapeIdentifier(pd_pg_conn(admin), target, strlen(target));
        sql = pd_asprintf("DROP DATABASE %s WITH (FORCE)", ident);
        PQfreemem(ident);
        rc = pd_pg_query(admin, &res, sql, 0, NULL, err);
        PQclear(res);
        res = NULL;
        pd_free(sql);
        sql = NULL;
        if (rc < 0)
            return rc;
        exists = false;
    }
    if (exists) {
        pd_pg_opts t = *o->server;
        pd_pg *pg = NULL;
        char v[8] = "";
        t.dbname = target;
        if ((rc = pd_pg_connect(&pg, &t, err)) < 0)
            return rc;
        rc = pd_pg_query_value(pg, nonempty_sql, v, sizeof(v), err);
        pd_pg_free(pg);
        if (rc < 0)
            return rc;
        if (strcmp(v, "t") == 0 && !o->clean) {
            rc = pd_err_set(err, PD_ECONFIG, "database \"%s\" exists and is not empty", target);
            return pd_err_hint(err, "restore into a new one with --target-database, or replace "
                                    "its contents with --clean");
        }
        return 0;
    }
    sql = create_sql(pd_pg_conn(admin), target, db);
    rc = pd_pg_query(admin, &res, sql, 0, NULL, err);
    PQclear(res);
    pd_free(sql);
    if (rc == 0)
        *created = true;
    else if (strstr(err->msg, "permission denied"))
        pd_err_hint(err, "a logical restore creates the database and its objects' owners must "
                         "exist: run it as a superuser (e.g. --pg-user postgres)");
    return rc;
}

static void
drop_created(pd_pg *admin, const char *target)
{
    char *ident = PQescapeIdentifier(pd_pg_conn(admin), target, strlen(target));
    char *sql = pd_asprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    PGresult *res = NULL;
    pd_err e = PD_ERR_INIT;

    PQfreemem(ident);
    if (pd_pg_query(admin, &res, sql, 0, NULL, &e) < 0)
        pd_log_warning("could not drop database \"%s\" after the failed restore: %s; drop it by "
                       "hand",
                       target, e.msg);
    else
        pd_log_info("dropped database \"%s\", which the failed restore had created", target);
    PQclear(res);
    pd_free(sql);
}

/*
 * The sink into pg_restore's stdin holds the stream's last HOLD_BACK bytes
 * back until the whole object has verified (every tag, the final frame, both
 * hashes): pg_restore needs the dump's last bytes (the end of its last data
 * block, or of its table of contents) to finish, so it cannot commit a
 * restore from an object that turns out damaged at its very end.
 */
#define HOLD_BACK (64 * 1024)

typedef struct hold_sink {
    pd_child *ch;
    unsigned char *held;
    size_t n;
} hold_sink;

static int
hold_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    hold_sink *h = payload;
    const unsigned char *p = buf;
    int rc;

    if (h->n + len > HOLD_BACK) {
        size_t emit = h->n + len - HOLD_BACK;
        size_t from_held = emit < h->n ? emit : h->n;
        if (from_held > 0 && (rc = pd_child_write(h->ch, h->held, from_held, err)) < 0)
            return rc;
        memmove(h->held, h->held + from_held, h->n - from_held);
        h->n -= from_held;
        emit -= from_held;
        if (emit > 0 && (rc = pd_child_write(h->ch, p, emit, err)) < 0)
            return rc;
        p += emit;
        len -= emit;
    }
    memcpy(h->held + h->n, p, len);
    h->n += len;
    return 0;
}

/* pg_restore's verdict: PD_EPG with its error lines unless it exited 0. */
static int
restore_status(pd_child *ch, int status, const char *target, pd_err *err)
{
    char how[PD_CHILD_STATUS_MAX], said[900];

    if (status == 0)
        return 0;
    pd_pgtool_errors(pd_child_output(ch, PD_CHILD_STDERR, NULL, NULL), said, sizeof(said));
    return pd_err_set(err, PD_EPG, "pg_restore into database \"%s\" failed (%s)%s%s", target,
                      pd_child_format_status(how, sizeof(how), status), said[0] ? ": " : "", said);
}

/*
 * Signals during `restore --type logical` (the guard is the restore
 * command's; a drill has its own): the handler records the signal and ends
 * the running pg_restore, so the restore fails the ordinary way and a
 * database it created is dropped before pgdrill exits.
 */
static volatile sig_atomic_t g_signal;
static volatile sig_atomic_t g_restore_pid; /* the running pg_restore, or 0 */
static const int g_guarded[3] = {SIGINT, SIGTERM, SIGHUP};

static void
on_signal(int sig)
{
    g_signal = sig;
    if (g_restore_pid > 0)
        kill((pid_t)g_restore_pid, SIGTERM);
}

/* PD_EFAIL once a guarded signal came. */
static int
interrupted(pd_err *err)
{
    if (g_signal == 0)
        return 0;
    return pd_err_set(err, PD_EFAIL, "restore interrupted by signal %d (%s)", (int)g_signal,
                      strsignal((int)g_signal));
}

/* A pg_restore that just started: ended at once if a signal came first. */
static void
track_child(const pd_child *ch)
{
    g_restore_pid = (sig_atomic_t)pd_child_pid(ch);
    if (g_signal != 0)
        kill(pd_child_pid(ch), SIGTERM);
}

/* One job: repository -> pipeline -> pg_restore's stdin, in one transaction. */
static int
restore_stream(pd_repo *r, const char *obj, const pd_object_info *info, const char *const *argv,
               const pd_pgtool_env *env, const char *target, pd_err *err)
{
    pd_child_opts co = PD_CHILD_OPTS_INIT;
    pd_child *ch = NULL;
    pd_stage *sink = NULL;
    hold_sink hold = {NULL, pd_malloc(HOLD_BACK), 0};
    int status = 0, rc;

    co.env = env->env;
    co.stdin_mode = PD_CHILD_PIPE;
    co.stdout_mode = PD_CHILD_NULL;
    co.stderr_mode = PD_CHILD_PIPE;
    co.die_with_parent = true;
    if ((rc = interrupted(err)) < 0 || (rc = pd_child_start(&ch, argv, &co, err)) < 0) {
        pd_err_hint(err, "check pg-bin");
        pd_free(hold.held);
        return rc;
    }
    track_child(ch);
    hold.ch = ch;
    sink = pd_stage_sink_new(hold_write, NULL, &hold);
    rc = pd_objr_read(r, obj, info, sink, NULL, err);
    // Verified whole: now the held-back end, and pg_restore may finish.
    if (rc == 0)
        rc = pd_child_write(ch, hold.held, hold.n, err);
    if (rc < 0) {
        // pg_restore stopped reading (it failed): it says why better than the
        // broken pipe. Any other failure kills it (pd_child_free) before it can
        // commit: its stdin is never closed on a stream that did not verify.
        if (rc != PD_ECORRUPT && err->sys_errno == EPIPE) {
            pd_err e2 = PD_ERR_INIT;
            if (pd_child_wait(ch, &status, &e2) == 0 &&
                restore_status(ch, status, target, &e2) < 0) {
                *err = e2;
                rc = e2.code;
            }
        }
        goto cleanup;
    }
    if ((rc = pd_child_wait(ch, &status, err)) < 0)
        goto cleanup;
    rc = restore_status(ch, status, target, err);
cleanup:
    g_restore_pid = 0;
    pd_stage_free(sink);
    pd_child_free(ch);
    pd_free(hold.held);
    return rc;
}

/*
 * --jobs N: decrypt into a private temporary file, then a parallel
 * pg_restore from it. The file is unlinked as soon as it exists and reaches
 * pg_restore as its stdin, named "/dev/stdin" (each worker reopens that
 * name, which on Linux opens the file itself): so the plaintext dump is
 * gone from the directory at once and its space returns whenever the
 * processes end, even on kill -9.
 */
static int
restore_parallel(pd_repo *r, const char *obj, const pd_object_info *info, const char **argv,
                 int file_arg, const pd_pgtool_env *env, const char *temp_dir, const char *target,
                 pd_err *err)
{
    char *path = pd_asprintf("%s/pgdrill-restore-XXXXXX", temp_dir);
    char need[PD_FMT_BUF], have[PD_FMT_BUF];
    struct statvfs vfs;
    pd_child_opts co = PD_CHILD_OPTS_INIT;
    pd_child *ch = NULL;
    pd_stage *sink = NULL;
    int fd = -1, status = 0, rc;

    if (statvfs(temp_dir, &vfs) < 0) {
        rc = pd_err_sys(err, PD_ECONFIG, "cannot use temporary directory \"%s\"", temp_dir);
        pd_err_hint(err, "set --temp-dir to a directory with room for the dump");
        goto cleanup;
    }
    if ((uint64_t)vfs.f_bavail * vfs.f_frsize < info->size + info->size / 20) {
        rc = pd_err_set(err, PD_EIO,
                        "not enough space in \"%s\" for a parallel restore: it needs %s for the "
                        "dump, %s are free",
                        temp_dir, pd_fmt_size(need, sizeof(need), info->size),
                        pd_fmt_size(have, sizeof(have), (uint64_t)vfs.f_bavail * vfs.f_frsize));
        pd_err_hint(err, "set --temp-dir elsewhere, or restore with one job (no temporary file)");
        goto cleanup;
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not create a temporary file in \"%s\"", temp_dir);
        goto cleanup;
    }
    if (unlink(path) < 0 || fchmod(fd, 0600) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not prepare temporary file \"%s\"", path);
        goto cleanup;
    }
    // The sink writes through fd and leaves it open (it borrows &fd).
    sink = pd_fdio_sink_new(&fd, path);
    if ((rc = pd_objr_read(r, obj, info, sink, NULL, err)) < 0 || (rc = interrupted(err)) < 0)
        goto cleanup;
    if (fsync(fd) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not write \"%s\"", path);
        goto cleanup;
    }
    argv[file_arg] = "/dev/stdin";
    co.env = env->env;
    co.stdin_mode = PD_CHILD_FILE;
    co.files[PD_CHILD_STDIN] = fd;
    co.stdout_mode = PD_CHILD_NULL;
    co.stderr_mode = PD_CHILD_PIPE;
    co.stderr_max = PD_CHILD_CAPTURE_MAX;
    co.die_with_parent = true;
    if ((rc = pd_child_start(&ch, argv, &co, err)) < 0) {
        pd_err_hint(err, "check pg-bin");
        goto cleanup;
    }
    track_child(ch);
    if ((rc = pd_child_wait(ch, &status, err)) < 0)
        goto cleanup;
    rc = restore_status(ch, status, target, err);
cleanup:
    g_restore_pid = 0;
    pd_stage_free(sink);
    pd_child_free(ch);
    if (fd >= 0)
        close(fd);
    pd_free(path);
    return rc;
}

int
pd_logical_restore_database(pd_repo *r, json_t *manifest, json_t *db, const pd_logical_db_opts *o,
                            pd_err *err)
{
    const char *id = json_string_value(json_object_get(manifest, "id"));
    const char *name = json_string_value(json_object_get(db, "name"));
    const char *object = json_string_value(json_object_get(db, "object"));
    const char *target = o->target ? o->target : name;
    json_t *entry = NULL, *x;
    pd_object_info info;
    pd_pgtool_env env;
    pd_pg *admin = NULL;
    bool created = false;
    char jobs[32];
    char *prog = NULL, *conn = NULL, *obj = NULL;
    const char *argv[16];
    int n = 0, rc;
    size_t i;

    json_array_foreach(json_object_get(manifest, "objects"), i, x)
    {
        if (object && strcmp(json_string_value(json_object_get(x, "name")) ?: "", object) == 0)
            entry = x;
    }
    if (name == NULL || entry == NULL || pd_verify_object_info(&info, entry) < 0)
        return pd_err_set(err, PD_ECORRUPT, "manifest of backup %s has a bad entry for database %s",
                          id, name ? name : "?");
    if ((rc = pd_pg_connect(&admin, o->server, err)) < 0)
        return rc;
    if ((rc = prepare_target(admin, o, target, db, &created, err)) < 0)
        goto cleanup;
    pd_pgtool_env_init(&env, o->server);
    prog = pd_asprintf("%s/pg_restore", o->pg_bin);
    conn = pd_pgtool_conninfo(target);
    obj = pd_asprintf("backups/%s/%s", id, object);
    argv[n++] = prog;
    argv[n++] = "--exit-on-error";
    argv[n++] = "--no-password";
    if (o->clean) {
        argv[n++] = "--clean";
        argv[n++] = "--if-exists";
    }
    if (o->no_tablespaces)
        argv[n++] = "--no-tablespaces";
    argv[n++] = "-d";
    argv[n++] = conn;
    if (o->jobs > 1) {
        snprintf(jobs, sizeof(jobs), "--jobs=%d", o->jobs);
        argv[n++] = jobs;
        argv[n] = NULL; // the file, once written
        argv[n + 1] = NULL;
        rc = restore_parallel(r, obj, &info, argv, n, &env, o->temp_dir, target, err);
    } else {
        argv[n++] = "--single-transaction";
        argv[n] = NULL;
        rc = restore_stream(r, obj, &info, argv, &env, target, err);
    }
cleanup:
    if (rc < 0 && created)
        drop_created(admin, target);
    pd_pg_free(admin);
    pd_free(prog);
    pd_free(conn);
    pd_free(obj);
    return rc;
}

/* ---- the restore command ---- */

/* Whether a logical backup's manifest lists database. */
static bool
holds(json_t *manifest, const char *database)
{
    size_t k;
    json_t *db;

    json_array_foreach(json_object_get(manifest, "databases"), k, db)
    {
        if (strcmp(json_string_value(json_object_get(db, "name")) ?: "", database) == 0)
            return true;
    }
    return false;
}

static int
find_logical(json_t **manifest, pd_repo *r, const char *spec, const char *database, pd_err *err)
{
    pd_backup_entry *e = NULL;
    size_t n = 0;
    int rc;

    if (spec && strcmp(spec, "latest") != 0) {
        if ((rc = pd_catalog_find(manifest, r, spec, err)) < 0)
            return rc;
        if (strcmp(json_string_value(json_object_get(*manifest, "type")) ?: "", "logical") != 0) {
            json_decref(*manifest);
            *manifest = NULL;
            rc = pd_err_set(err, PD_ECONFIG, "backup %s is not a logical backup", spec);
            return pd_err_hint(err, "restore it with --target-dir (physical), or choose a "
                                    "logical backup from pgdrill list");
        }
        return 0;
    }
    if ((rc = pd_catalog_list(&e, &n, r, err)) < 0)
        return rc;
    *manifest = NULL;
    // The newest that holds the database: a backup taken with --database
    // may hold others only.
    for (size_t i = n; i-- > 0;) {
        if (e[i].complete &&
            strcmp(json_string_value(json_object_get(e[i].manifest, "type")) ?: "", "logical") ==
                0 &&
            holds(e[i].manifest, database)) {
            *manifest = json_incref(e[i].manifest);
            break;
        }
    }
    pd_catalog_free(e, n);
    if (*manifest == NULL) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "cluster \"%s\" has no complete logical backup of database \"%s\"",
                        pd_repo_cluster(r), database);
        return pd_err_hint(err, "pgdrill list --json shows the databases of each logical backup; "
                                "take one with pgdrill backup --type logical");
    }
    return 0;
}

int
pd_restore_logical(json_t **manifest, const pd_config *cfg, const pd_restore_logical_opts *o,
                   pd_err *err)
{
    pd_repo *r = NULL;
    json_t *m = NULL, *db = NULL, *x;
    pd_pg_opts po = PD_PG_OPTS_INIT;
    pd_logical_db_opts lo;
    char names[512] = "", dur[PD_FMT_BUF];
    double t0 = pd_time_mono();
    size_t i;
    int rc;

    *manifest = NULL;
    if ((rc = pd_repo_open(&r, cfg, err)) < 0)
        goto cleanup;
    if ((rc = find_logical(&m, r, o->backup, o->database, err)) < 0)
        goto cleanup;
    json_array_foreach(json_object_get(m, "databases"), i, x)
    {
        const char *name = json_string_value(json_object_get(x, "name")) ?: "";
        if (strcmp(name, o->database) == 0)
            db = x;
        size_t have = strlen(names);
        snprintf(names + have, sizeof(names) - have, "%s\"%s\"", have ? ", " : "", name);
    }
    if (db == NULL) {
        rc = pd_err_set(err, PD_ECONFIG, "backup %s has no database \"%s\"; it has %s",
                        json_string_value(json_object_get(m, "id")), o->database, names);
        goto cleanup;
    }
    pd_pg_opts_from_config(&po, cfg);
    memset(&lo, 0, sizeof(lo));
    lo.server = &po;
    lo.pg_bin = pd_config_get(cfg, "pg-bin");
    lo.target = o->target_database ? o->target_database : o->database;
    lo.jobs = o->jobs > 0 ? o->jobs : 1;
    lo.temp_dir = o->temp_dir;
    if (lo.temp_dir == NULL)
        lo.temp_dir =
            getenv("TMPDIR") && getenv("TMPDIR")[0] == '/' ? getenv("TMPDIR") : "/var/tmp";
    lo.clean = o->clean;
    pd_log_info("restoring database \"%s\" of backup %s into database \"%s\"%s", o->database,
                json_string_value(json_object_get(m, "id")), lo.target,
                lo.jobs > 1 ? ", through a temporary file for --jobs" : "");
    struct sigaction sa, saved[3];
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_signal = 0;
    for (int k = 0; k < 3; k++)
        sigaction(g_guarded[k], &sa, &saved[k]);
    rc = pd_logical_restore_database(r, m, db, &lo, err);
    for (int k = 0; k < 3; k++)
        sigaction(g_guarded[k], &saved[k], NULL);
    if (rc < 0 && g_signal != 0) {
        pd_err_clear(err);
        rc = interrupted(err);
        pd_err_hint(err, "run the restore again; a database it had created was dropped");
    }
    if (rc < 0)
        goto cleanup;
    pd_log_info("restored database \"%s\" into \"%s\" in %s", o->database, lo.target,
                pd_fmt_duration(dur, sizeof(dur), pd_time_mono() - t0));
    *manifest = m;
    m = NULL;
cleanup:
    json_decref(m);
    pd_repo_free(r);
    return rc;
}
