/*
 * pgdrill check: configuration sanity, the PostgreSQL connection (server
 * version) and repository reachability (a directory, or an S3 endpoint).
 * Each failing part is one error line; exit 1 when any part fails.
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
#include "common/pg.h"
#include "common/time.h"
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

static json_t *
check_postgresql(const pd_config *cfg, char *line, size_t linesize)
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
    }
    pd_pg_free(pg);
    return j;
}

static json_t *
check_s3(const pd_config *cfg, const char *repo, char *line, size_t linesize, int *exit_code)
{
    pd_s3_probe_opts opts = PD_S3_PROBE_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    json_t *j = json_object();
    char *bucket = NULL, *prefix = NULL, *url = NULL;
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
    json_object_set_new(j, "ok", json_true());
    json_object_set_new(j, "http_status", json_integer(status));
    snprintf(line, linesize, "repository: ok, S3 endpoint %s is reachable (HTTP %ld), bucket %s",
             opts.endpoint, status, bucket);
    goto cleanup;
failed:
    pd_log_err(&err);
    raise_exit(exit_code, &err);
    json_object_set_new(j, "ok", json_false());
    json_object_set_new(j, "error", json_error(&err));
    snprintf(line, linesize, "repository: FAILED");
cleanup:
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
    static const char *const ciphers[] = {"none", "aes-256-gcm"};
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
        json_object_set_new(j, "cipher", json_string(ciphers[pd_repo_cipher(r)]));
        json_object_set_new(j, "key_verified", json_boolean(pd_repo_cipher(r) != PD_CIPHER_NONE));
        snprintf(line, linesize, "repository: ok, directory %s, encryption %s%s", repo,
                 ciphers[pd_repo_cipher(r)],
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

int
pd_cmd_check(const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    char pg_line[512], repo_line[512], archive_line[512] = "";
    json_t *doc = NULL, *pg, *repo, *archive = NULL;
    const char *repo_path;
    int exit_code = PD_EXIT_OK;
    int rc;

    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    repo_path = pd_config_get(cfg, "repo");
    pg = check_postgresql(cfg, pg_line, sizeof(pg_line));
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

    if (pd_cmd_flag(args, "json")) {
        doc = json_object();
        json_object_set_new(doc, "cluster", json_string(pd_config_cluster(cfg)));
        json_object_set_new(doc, "ok", json_boolean(ok));
        json_object_set_new(doc, "postgresql", pg);
        json_object_set_new(doc, "repository", repo);
        json_object_set_new(doc, "archiving", archive ? archive : json_null());
        if (pd_json_print(stdout, doc, &err) < 0)
            ok = (pd_cmd_fail(&err), false);
        json_decref(doc);
    } else {
        printf("cluster %s\n  %s\n  %s\n", pd_config_cluster(cfg), pg_line, repo_line);
        if (archive_line[0])
            printf("  %s\n", archive_line);
        json_decref(pg);
        json_decref(repo);
        json_decref(archive);
    }
    pd_config_free(cfg);
    if (!ok && exit_code == PD_EXIT_OK)
        exit_code = PD_EXIT_FAIL;
    return exit_code;
}
