/*
 * pgdrill check: configuration sanity, the PostgreSQL connection (server
 * version), repository reachability (a directory, or an S3 endpoint), WAL
 * archiving, health against the alert-* thresholds, and the least-privilege
 * checklist. Each failing part is one error line; exit 1 when any part
 * fails. Threshold states and findings change the exit code only with
 * --strict. check --nagios is a Nagios plugin: one line, exit 0-3, and no
 * forced WAL switch (it runs every few minutes).
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/archive.h"
#include "cmd/cmd.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/notify.h"
#include "common/pg.h"
#include "common/time.h"
#include "drills/audit.h"
#include "drills/health.h"
#include "drills/status.h"
#include "storage/repo.h"
#include "storage/s3.h"

/* An error message for --json output: redacted like every log line. */
static json_t *
json_error(const pd_err *err)
{
    char clean[PD_ERR_MSG_MAX + 64];

    pd_redact(err->msg, clean, sizeof(clean));
    json_t *j = json_string(clean);
    return j ? j : json_string("(not valid UTF-8)");
}

static void
raise_exit(int *exit_code, const pd_err *err)
{
    if (pd_err_exit_code(err->code) > *exit_code)
        *exit_code = pd_err_exit_code(err->code);
}

/* The connection check; on success *out keeps the connection for the later parts. */
static json_t *
check_postgresql(const pd_config *cfg, pd_pg **out, char *line, size_t linesize)
{
    pd_pg_opts opts = PD_PG_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    json_t *j = json_object();
    char version[256];
    pd_pg *pg = NULL;

    pd_pg_opts_from_config(&opts, cfg);
    if (pd_pg_connect(&pg, &opts, &err) < 0 ||
        pd_pg_query_value(pg, "SHOW server_version", version, sizeof(version), &err) < 0) {
        pd_log_err(&err);
        json_object_set_new(j, "ok", json_false());
        json_object_set_new(j, "error", json_error(&err));
        snprintf(line, linesize, "postgresql: FAILED");
    } else {
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "server_version", json_string(version));
        json_object_set_new(j, "server_version_num", json_integer(PQserverVersion(pd_pg_conn(pg))));
        json_object_set_new(j, "connection", json_string(pd_pg_describe(pg)));
        snprintf(line, linesize, "postgresql: ok, server version %s, %s", version,
                 pd_pg_describe(pg));
        *out = pg;
        pg = NULL;
    }
    pd_pg_free(pg);
    return j;
}

static const char *
cipher_name(pd_cipher c)
{
    return c == PD_CIPHER_NONE ? "none" : "aes-256-gcm";
}

static json_t *
check_s3(const pd_config *cfg, const char *repo, char *line, size_t linesize, int *exit_code)
{
    pd_s3_probe_opts opts = PD_S3_PROBE_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    json_t *j = json_object();
    char *bucket = NULL, *prefix = NULL, *url = NULL;
    pd_repo *r = NULL;
    long status = 0;

    json_object_set_new(j, "kind", json_string("s3"));
    opts.endpoint = pd_config_get(cfg, "s3-endpoint");
    opts.verify_tls = pd_config_get_bool(cfg, "s3-verify-tls");
    opts.ca_file = pd_config_get(cfg, "s3-ca-file");
    if (pd_s3_parse_repo(&bucket, &prefix, repo, &err) < 0)
        goto failed;
    if (opts.endpoint == NULL) {
        pd_err_set(&err, PD_ECONFIG, "repository \"%s\" is on S3 but s3-endpoint is not set", repo);
        pd_err_hint(&err, "set s3-endpoint, e.g. s3.eu-west-1.amazonaws.com");
        goto failed;
    }
    char endpoint[512];
    json_object_set_new(j, "endpoint",
                        json_string(pd_redact(opts.endpoint, endpoint, sizeof(endpoint))));
    json_object_set_new(j, "bucket", json_string(bucket));
    if (pd_s3_probe(&status, &url, &opts, &err) < 0)
        goto failed;
    json_object_set_new(j, "http_status", json_integer(status));
    // Reachable is not enough: the credentials, the bucket, the cluster's
    // repository and the key are checked by opening it, as for a directory.
    if (pd_repo_open(&r, cfg, &err) < 0)
        goto failed;
    json_object_set_new(j, "ok", json_true());
    json_object_set_new(j, "cipher", json_string(cipher_name(pd_repo_cipher(r))));
    json_object_set_new(j, "key_verified", json_boolean(pd_repo_cipher(r) != PD_CIPHER_NONE));
    snprintf(line, linesize,
             "repository: ok, S3 endpoint %s is reachable (HTTP %ld), bucket %s, encryption %s%s",
             opts.endpoint, status, bucket, cipher_name(pd_repo_cipher(r)),
             pd_repo_cipher(r) != PD_CIPHER_NONE ? ", key verified" : "");
    goto cleanup;
failed:
    pd_log_err(&err);
    raise_exit(exit_code, &err);
    json_object_set_new(j, "ok", json_false());
    json_object_set_new(j, "error", json_error(&err));
    snprintf(line, linesize, "repository: FAILED");
cleanup:
    pd_repo_free(r);
    pd_free(bucket);
    pd_free(prefix);
    pd_free(url);
    return j;
}

/*
 * A local repository: the directory must exist, and the cluster's repository
 * must open with the configured key (a wrong key is exit 2). *exit_code is
 * raised to the failure's exit status.
 */
static json_t *
check_directory(const pd_config *cfg, const char *repo, char *line, size_t linesize, int *exit_code)
{
    pd_err err = PD_ERR_INIT;
    json_t *j = json_object();
    pd_repo *r = NULL;
    struct stat st;

    json_object_set_new(j, "kind", json_string("posix"));
    json_object_set_new(j, "path", json_string(repo));
    if (repo[0] != '/') {
        pd_err_set(&err, PD_ECONFIG, "repository \"%s\" is neither an absolute path nor s3://",
                   repo);
    } else if (stat(repo, &st) < 0) {
        pd_err_sys(&err, PD_ECONFIG, "cannot use repository directory \"%s\"", repo);
        pd_err_hint(&err, "run pgdrill init");
    } else if (!S_ISDIR(st.st_mode)) {
        pd_err_set(&err, PD_ECONFIG, "cannot use repository \"%s\": not a directory", repo);
    } else if (pd_repo_open(&r, cfg, &err) == 0) {
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "cipher", json_string(cipher_name(pd_repo_cipher(r))));
        json_object_set_new(j, "key_verified", json_boolean(pd_repo_cipher(r) != PD_CIPHER_NONE));
        snprintf(line, linesize, "repository: ok, directory %s, encryption %s%s", repo,
                 cipher_name(pd_repo_cipher(r)),
                 pd_repo_cipher(r) != PD_CIPHER_NONE ? ", key verified" : "");
        pd_repo_free(r);
        return j;
    }
    pd_log_err(&err);
    raise_exit(exit_code, &err);
    json_object_set_new(j, "ok", json_false());
    json_object_set_new(j, "error", json_error(&err));
    snprintf(line, linesize, "repository: FAILED");
    return j;
}

#define ARCHIVE_WAIT_SECONDS 60

/*
 * WAL archiving: archive_mode and archive_command must call pgdrill
 * archive-push for this cluster; then a forced WAL switch must reach the
 * repository within ARCHIVE_WAIT_SECONDS. Archiving off is a warning: a
 * cluster may take backups without point-in-time recovery.
 */
static json_t *
check_archive(const pd_config *cfg, char *line, size_t linesize, int *exit_code)
{
    pd_pg_opts opts = PD_PG_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    json_t *j = json_object();
    char mode[64], command[1024], seg[64];
    pd_repo *r = NULL;
    pd_pg *pg = NULL;

    pd_pg_opts_from_config(&opts, cfg);
    if (pd_pg_connect(&pg, &opts, &err) < 0 ||
        pd_pg_query_value(pg, "SELECT current_setting('archive_mode')", mode, sizeof(mode), &err) <
            0 ||
        pd_pg_query_value(pg, "SELECT current_setting('archive_command')", command, sizeof(command),
                          &err) < 0) {
        snprintf(line, linesize, "archiving: not checked (no connection)");
        goto done_quiet;
    }
    json_object_set_new(j, "archive_mode", json_string(mode));
    if (strcmp(mode, "off") == 0) {
        pd_log_warning("WAL archiving is off on the server: backups restore, but point-in-time "
                       "recovery is not possible; set archive_mode = on and archive_command = "
                       "'pgdrill --cluster %s archive-push %%p'",
                       pd_config_cluster(cfg));
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "enabled", json_false());
        snprintf(line, linesize, "archiving: off (warning: no point-in-time recovery)");
        goto done_quiet;
    }
    json_object_set_new(j, "enabled", json_true());
    if (strstr(command, "archive-push") == NULL || strstr(command, "pgdrill") == NULL) {
        pd_err_set(&err, PD_ECONFIG, "archive_command \"%s\" does not call pgdrill archive-push",
                   command);
        pd_err_hint(&err, "set archive_command = 'pgdrill --cluster %s archive-push %%p'",
                    pd_config_cluster(cfg));
        goto failed;
    }
    if (pd_pg_query_value(pg, "SELECT pg_walfile_name(pg_switch_wal())", seg, sizeof(seg), &err) <
        0) {
        pd_log_warning("could not force a WAL switch (%s); grant EXECUTE on pg_switch_wal() to "
                       "check that WAL reaches the repository",
                       err.msg);
        pd_err_clear(&err);
        json_object_set_new(j, "ok", json_true());
        snprintf(line, linesize, "archiving: archive_command calls pgdrill (arrival not checked)");
        goto done_quiet;
    }
    if (pd_repo_open(&r, cfg, &err) < 0)
        goto failed;
    char *name = pd_wal_object_name(seg);
    char *path = name ? pd_repo_path(r, name) : NULL;
    bool arrived = false;
    double t0 = pd_time_mono();
    while (path && pd_time_mono() - t0 < ARCHIVE_WAIT_SECONDS) {
        pd_storage_entry e;
        if (pd_storage_stat(pd_repo_storage(r), path, &e, &err) == 0) {
            arrived = true;
            break;
        }
        usleep(200 * 1000);
    }
    pd_free(name);
    pd_free(path);
    json_object_set_new(j, "segment", json_string(seg));
    if (!arrived) {
        pd_err_set(&err, PD_EFAIL,
                   "WAL file %s did not reach the repository within %d seconds of a WAL switch",
                   seg, ARCHIVE_WAIT_SECONDS);
        pd_err_hint(&err, "look for archive_command errors in the server log and in "
                          "pg_stat_archiver");
        goto failed;
    }
    json_object_set_new(j, "ok", json_true());
    snprintf(line, linesize, "archiving: ok, WAL file %s reached the repository in %.1fs", seg,
             pd_time_mono() - t0);
    goto done_quiet;
failed:
    pd_log_err(&err);
    raise_exit(exit_code, &err);
    json_object_set_new(j, "ok", json_false());
    json_object_set_new(j, "error", json_error(&err));
    snprintf(line, linesize, "archiving: FAILED");
done_quiet:
    pd_repo_free(r);
    pd_pg_free(pg);
    return j;
}

/*
 * The health part, shared by check and check --nagios: the status document
 * (repository alone, then the server's WAL position through pg when
 * connected), evaluated against the alert-* thresholds. When the status
 * cannot be collected the state is CRITICAL, or UNKNOWN for a configuration
 * problem (pgdrill cannot evaluate), with the reason as the one item; that
 * never changes check's exit code (the repository check reports failures).
 */
static json_t *
check_health(const pd_config *cfg, pd_pg *pg, const char *unreachable, json_t **status,
             pd_health_state *state)
{
    pd_health_limits limits;
    pd_err err = PD_ERR_INIT;
    json_t *h = json_object(), *items = NULL;

    *status = NULL;
    pd_health_limits_from_config(&limits, cfg);
    if (pd_status_collect(status, cfg, &err) < 0) {
        char clean[PD_ERR_MSG_MAX + 64];
        // Reported as the health state, not as an error: the repository check owns that.
        *state =
            pd_err_exit_code(err.code) == PD_EXIT_USAGE ? PD_HEALTH_UNKNOWN : PD_HEALTH_CRITICAL;
        items = json_pack("[{s:s, s:s, s:s, s:s}]", "name", "repository", "state",
                          pd_health_state_name(*state), "message",
                          pd_redact(err.msg, clean, sizeof(clean)), "perfdata", "");
    } else {
        pd_status_add_server(*status, cfg, pg, pg ? NULL : unreachable);
        *state = pd_health_evaluate(&items, *status, &limits);
    }
    json_object_set_new(h, "state", json_string(pd_health_state_name(*state)));
    json_object_set_new(h, "items", items);
    return h;
}

/* Text in the status line: "|" starts perfdata and a newline ends the line, so neither may appear.
 */
static void
nagios_text(const char *s)
{
    for (; s && *s; s++)
        putchar(*s == '|' ? '/' : *s == '\n' ? ' ' : *s);
}

/* Nagios: one status line with perfdata, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. */
static int
check_nagios(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    pd_pg_opts opts = PD_PG_OPTS_INIT;
    pd_pg *pg = NULL;
    json_t *status = NULL, *health;
    pd_health_state state, worst;
    char clean[PD_ERR_MSG_MAX + 64];

    if (pd_cmd_load_config_err(&cfg, args, &err) < 0) {
        pd_log_err(&err);
        printf("PGDRILL UNKNOWN - ");
        nagios_text(pd_redact(err.msg, clean, sizeof(clean)));
        printf("\n");
        return PD_HEALTH_UNKNOWN;
    }
    pd_pg_opts_from_config(&opts, cfg);
    opts.connect_timeout = 5;
    bool connected = pd_pg_connect(&pg, &opts, &err) == 0;
    health = check_health(cfg, connected ? pg : NULL, connected ? NULL : err.msg, &status, &state);
    // The database down is certain, so it outranks an UNKNOWN from the repository part.
    worst = connected ? state : PD_HEALTH_CRITICAL;
    printf("PGDRILL %s - cluster %s: ", pd_health_state_name(worst), pd_config_cluster(cfg));
    // Problems first, worst first: the part of the line a pager shows.
    json_t *items = json_object_get(health, "items");
    bool first = true;
    if (!connected) {
        printf("CRITICAL postgresql: ");
        nagios_text(pd_redact(err.msg, clean, sizeof(clean)));
        first = false;
    }
    for (int want = PD_HEALTH_UNKNOWN; want >= PD_HEALTH_OK; want--) {
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            const char *st = json_string_value(json_object_get(it, "state"));
            if (strcmp(st, pd_health_state_name((pd_health_state)want)) != 0)
                continue;
            printf("%s%s%s", first ? "" : "; ", want == PD_HEALTH_OK ? "" : st,
                   want == PD_HEALTH_OK ? "" : " ");
            nagios_text(json_string_value(json_object_get(it, "message")));
            first = false;
        }
    }
    printf(" |");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        const char *perf = json_string_value(json_object_get(it, "perfdata"));
        if (perf && perf[0])
            printf(" %s", perf);
    }
    printf("\n");
    json_decref(health);
    json_decref(status);
    pd_pg_free(pg);
    pd_config_free(cfg);
    return (int)worst;
}

/* The first error of the sections that failed, for notify-command's message. */
static const char *
first_error(json_t *doc)
{
    static const char *const sections[] = {"postgresql", "repository", "archiving"};

    for (size_t i = 0; i < PD_ARRAY_LEN(sections); i++) {
        const char *msg =
            json_string_value(json_object_get(json_object_get(doc, sections[i]), "error"));
        if (msg)
            return msg;
    }
    return NULL;
}

/* Tells notify-command the outcome, with the check document on stdin. */
static void
notify(const pd_config *cfg, int rc, json_t *doc, size_t n_problems)
{
    pd_notify_event ev = {"check", rc, NULL, NULL, NULL, doc};
    const char *error = first_error(doc);
    char line[PD_ERR_MSG_MAX];

    snprintf(line, sizeof(line), "check of cluster %s: %s%s%s; health %s; %zu least-privilege %s",
             pd_config_cluster(cfg), rc == 0 ? "passed" : "FAILED", error ? ": " : "",
             error ? error : "",
             json_string_value(json_object_get(json_object_get(doc, "health"), "state")),
             n_problems, n_problems == 1 ? "finding" : "findings");
    ev.message = line;
    pd_notify(cfg, &ev);
}

int
pd_cmd_check(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    char pg_line[512], repo_line[512], archive_line[512] = "";
    json_t *doc = NULL, *pg, *repo, *archive = NULL, *health, *status = NULL;
    json_t *findings = json_array();
    const char *repo_path;
    pd_health_state state;
    int exit_code = PD_EXIT_OK;
    int rc;

    if (pd_cmd_flag(args, "nagios") && (pd_cmd_flag(args, "json") || pd_cmd_flag(args, "strict"))) {
        json_decref(findings);
        pd_err_set(&err, PD_EUSAGE, "--nagios goes alone, without --json or --strict");
        pd_err_hint(&err, "see \"pgdrill check --help\"");
        return pd_cmd_fail(&err);
    }
    if (pd_cmd_flag(args, "nagios")) {
        json_decref(findings);
        return check_nagios(args);
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0) {
        json_decref(findings);
        return rc;
    }
    repo_path = pd_config_get(cfg, "repo");
    pd_pg *conn = NULL;
    pg = check_postgresql(cfg, &conn, pg_line, sizeof(pg_line));
    if (strncmp(repo_path, "s3://", 5) == 0)
        repo = check_s3(cfg, repo_path, repo_line, sizeof(repo_line), &exit_code);
    else
        repo = check_directory(cfg, repo_path, repo_line, sizeof(repo_line), &exit_code);
    bool ok = json_is_true(json_object_get(pg, "ok")) && json_is_true(json_object_get(repo, "ok"));
    // Archiving is checked only when the server and the repository are.
    if (ok) {
        archive = check_archive(cfg, archive_line, sizeof(archive_line), &exit_code);
        ok = json_is_true(json_object_get(archive, "ok"));
    }
    // Health and the least-privilege checklist only when the repository opened.
    if (json_is_true(json_object_get(repo, "ok"))) {
        health = check_health(cfg, conn, json_string_value(json_object_get(pg, "error")), &status,
                              &state);
    } else {
        state = PD_HEALTH_UNKNOWN;
        health = json_pack("{s:s, s:[]}", "state", "UNKNOWN", "items");
    }
    const char *enc = json_string_value(json_object_get(status, "encryption"));
    pd_audit_run(findings, cfg, conn, enc ? strcmp(enc, "none") != 0 : -1);
    size_t n_problems = 0, i;
    json_t *f;
    json_array_foreach(findings, i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "severity")), "info") != 0)
            n_problems++;
    }
    bool strict_failed = pd_cmd_flag(args, "strict") && (state != PD_HEALTH_OK || n_problems > 0);

    doc = json_object();
    json_object_set_new(doc, "cluster", json_string(pd_config_cluster(cfg)));
    json_object_set_new(doc, "ok", json_boolean(ok && !strict_failed));
    json_object_set_new(doc, "postgresql", pg);
    json_object_set_new(doc, "repository", repo);
    json_object_set_new(doc, "archiving", archive ? archive : json_null());
    json_object_set_new(doc, "health", health);
    json_object_set_new(doc, "findings", findings);
    json_object_set_new(doc, "status", status ? status : json_null());
    if (pd_cmd_flag(args, "json")) {
        if (pd_json_print(stdout, doc, &err) < 0)
            ok = (pd_cmd_fail(&err), false);
    } else {
        printf("cluster %s\n  %s\n  %s\n", pd_config_cluster(cfg), pg_line, repo_line);
        if (archive_line[0])
            printf("  %s\n", archive_line);
        json_t *it;
        printf("  health: %s\n", json_string_value(json_object_get(health, "state")));
        json_array_foreach(json_object_get(health, "items"), i, it)
        {
            printf("    %-10s %-8s %s\n", json_string_value(json_object_get(it, "name")),
                   json_string_value(json_object_get(it, "state")),
                   json_string_value(json_object_get(it, "message")));
        }
        printf("  least privilege:%s\n", json_array_size(findings) ? "" : " nothing to report");
        json_array_foreach(findings, i, it)
        {
            printf("    %-8s %s\n", json_string_value(json_object_get(it, "severity")),
                   json_string_value(json_object_get(it, "message")));
        }
    }
    pd_pg_free(conn);
    if (!ok && exit_code == PD_EXIT_OK)
        exit_code = PD_EXIT_FAIL;
    if (strict_failed && exit_code == PD_EXIT_OK)
        exit_code = PD_EXIT_FAIL;
    notify(cfg, exit_code, doc, n_problems);
    json_decref(doc);
    pd_config_free(cfg);
    return exit_code;
}
