/*
 * The BASE_BACKUP client (see basebackup.h). Message formats follow the
 * protocol documentation for PostgreSQL 15: after two ordinary result sets
 * (start position; tablespaces, sizes in KiB) comes one COPY OUT stream whose
 * CopyData messages start with a type byte: 'n' new archive (name, location),
 * 'd' data, 'p' progress (int64), 'm' manifest follows; then a final result
 * set with the end position.
 */
#include "backup/basebackup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/mem.h"

/* Two zero blocks end a tar archive; the server leaves them to the client. */
#define TAR_TRAILER 1024

typedef struct notice_ctx {
    unsigned checksum_failures;
} notice_ctx;

static void
on_notice(void *arg, const PGresult *res)
{
    notice_ctx *n = arg;
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (msg == NULL)
        return;
    if (strstr(msg, "checksum verification failed in file") != NULL)
        n->checksum_failures++;
    // The backup carries its own WAL (WAL true), so this advice does not apply.
    if (strstr(msg, "WAL archiving is not enabled") != NULL) {
        pd_log_debug("server: %s", msg);
        return;
    }
    // NOTICE is news, WARNING a problem: keep the server's own severity.
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev != NULL && strcmp(sev, "NOTICE") == 0)
        pd_log_info("server: %s", msg);
    else
        pd_log_warning("server: %s", msg);
}

static void
first_line(char *buf, size_t size, const char *s)
{
    size_t n = strcspn(s, "\n");
    if (n >= size)
        n = size - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
}

static int
pg_fail(PGconn *conn, pd_err *err, const char *what)
{
    static const char *const prefixes[] = {"ERROR:  ", "FATAL:  ", "PANIC:  "};
    const char *msg = PQerrorMessage(conn);
    char cause[512];

    // The severity is in our own words already ("failed").
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
            msg += strlen(prefixes[i]);
    first_line(cause, sizeof(cause), msg);
    return pd_err_set(err, PD_EPG, "%s failed: %s", what, cause);
}

/* The end of the backup failed: say so, and what to do about checksum failures. */
static int
finish_fail(PGconn *conn, const notice_ctx *notices, pd_err *err)
{
    int rc = pg_fail(conn, err, "finishing the base backup");

    if (notices->checksum_failures > 0)
        pd_err_hint(err,
                    "the server found page checksum failures in %u block%s (see the warnings); "
                    "repair them, or back up anyway with --ignore-checksum-failures",
                    notices->checksum_failures, notices->checksum_failures == 1 ? "" : "s");
    return rc;
}

static uint64_t
get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int
identify(PGconn *conn, pd_bb_info *info, pd_err *err)
{
    PGresult *res = PQexec(conn, "IDENTIFY_SYSTEM");
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 2)
        rc = pg_fail(conn, err, "IDENTIFY_SYSTEM");
    else
        snprintf(info->system_identifier, sizeof(info->system_identifier), "%s",
                 PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

static int
read_start(PGconn *conn, pd_bb_info *info, pd_err *err)
{
    PGresult *res = PQgetResult(conn);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 2) {
        rc = pg_fail(conn, err, "starting the base backup");
        goto cleanup;
    }
    snprintf(info->start_lsn, sizeof(info->start_lsn), "%s", PQgetvalue(res, 0, 0));
    info->timeline = strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);

    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) < 3) {
        rc = pg_fail(conn, err, "reading the tablespace list of the base backup");
        goto cleanup;
    }
    if (PQntuples(res) > PD_BB_MAX_TABLESPACES) {
        rc = pd_err_set(err, PD_EPG, "cannot back up %d tablespaces: at most %d are supported",
                        PQntuples(res), PD_BB_MAX_TABLESPACES);
        goto cleanup;
    }
    info->n_tablespaces = PQntuples(res);
    info->total_size = 0;
    for (int i = 0; i < info->n_tablespaces; i++) {
        pd_bb_tablespace *t = &info->tablespaces[i];
        snprintf(t->oid, sizeof(t->oid), "%s", PQgetisnull(res, i, 0) ? "" : PQgetvalue(res, i, 0));
        snprintf(t->location, sizeof(t->location), "%s",
                 PQgetisnull(res, i, 1) ? "" : PQgetvalue(res, i, 1));
        t->size = PQgetisnull(res, i, 2) ? 0 : strtoull(PQgetvalue(res, i, 2), NULL, 10) * 1024;
        info->total_size += t->size;
    }
cleanup:
    PQclear(res);
    return rc;
}

typedef struct stream_state {
    const pd_bb_callbacks *cb;
    bool open;
    bool is_tar;
} stream_state;

static int
close_current(stream_state *s, pd_err *err)
{
    static const unsigned char zeros[TAR_TRAILER];
    int rc;

    if (!s->open)
        return 0;
    s->open = false;
    // Make each tar archive a complete one, as pg_basebackup does.
    if (s->is_tar && (rc = s->cb->data(s->cb->payload, zeros, sizeof(zeros), err)) < 0)
        return rc;
    return s->cb->end(s->cb->payload, err);
}

static int
handle_message(stream_state *s, const unsigned char *msg, size_t len, pd_err *err)
{
    const char *name, *location;
    int rc;

    if (len < 1)
        return pd_err_set(err, PD_EPG, "the server sent an empty base backup message");
    switch (msg[0]) {
    case 'n':
        name = (const char *)msg + 1;
        location = memchr(name, '\0', len - 1) ? name + strlen(name) + 1 : NULL;
        if (location == NULL || (size_t)(location - (const char *)msg) >= len ||
            memchr(location, '\0', len - (size_t)(location - (const char *)msg)) == NULL)
            return pd_err_set(err, PD_EPG, "the server sent a malformed new-archive message");
        if ((rc = close_current(s, err)) < 0)
            return rc;
        s->open = true;
        s->is_tar = true;
        return s->cb->begin(s->cb->payload, name, location, err);
    case 'm':
        if ((rc = close_current(s, err)) < 0)
            return rc;
        s->open = true;
        s->is_tar = false;
        return s->cb->begin(s->cb->payload, "backup_manifest", "", err);
    case 'd':
        if (!s->open)
            return pd_err_set(err, PD_EPG, "the server sent data before naming an archive");
        return s->cb->data(s->cb->payload, msg + 1, len - 1, err);
    case 'p':
        if (len >= 9 && s->cb->progress)
            s->cb->progress(s->cb->payload, get_be64(msg + 1));
        return 0;
    default:
        return pd_err_set(err, PD_EPG, "the server sent an unknown base backup message '%c'",
                          msg[0]);
    }
}

int
pd_basebackup_run(pd_bb_info *info, const pd_pg_opts *pgopts, const pd_bb_opts *opts,
                  const pd_bb_callbacks *cb, pd_err *err)
{
    pd_pg_opts po = *pgopts;
    notice_ctx notices = {0};
    stream_state s = {cb, false, false};
    PGresult *res = NULL;
    PGconn *conn;
    pd_pg *pg = NULL;
    char *cmd = NULL;
    char *label = NULL;
    int rc;

    memset(info, 0, sizeof(*info));
    po.replication = true;
    if ((rc = pd_pg_connect(&pg, &po, err)) < 0)
        return rc;
    conn = pd_pg_conn(pg);
    PQsetNoticeReceiver(conn, on_notice, &notices);
    info->server_version_num = PQserverVersion(conn);
    snprintf(info->server_version, sizeof(info->server_version), "%s",
             PQparameterStatus(conn, "server_version") ?: "");
    if (info->server_version_num < 150000) {
        rc = pd_err_set(err, PD_EPG,
                        "cannot back up PostgreSQL %s: pgdrill needs PostgreSQL 15 or later",
                        info->server_version);
        goto cleanup;
    }
    if ((rc = identify(conn, info, err)) < 0)
        goto cleanup;

    label = PQescapeLiteral(conn, opts->label, strlen(opts->label));
    cmd = pd_asprintf("BASE_BACKUP (LABEL %s, PROGRESS, CHECKPOINT '%s', WAIT true, WAL true, "
                      "MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', "
                      "VERIFY_CHECKSUMS %s, TARGET 'client')",
                      label ? label : "'pgdrill'", opts->fast_checkpoint ? "fast" : "spread",
                      opts->verify_checksums ? "true" : "false");
    if (PQsendQuery(conn, cmd) != 1) {
        rc = pg_fail(conn, err, "BASE_BACKUP");
        goto cleanup;
    }
    if ((rc = read_start(conn, info, err)) < 0)
        goto cleanup;
    if ((rc = cb->start(cb->payload, info, err)) < 0)
        goto cleanup;
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        rc = pg_fail(conn, err, "the base backup stream");
        goto cleanup;
    }
    PQclear(res);
    res = NULL;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(conn, &buf, 0);
        if (n == -1)
            break;
        if (n < 0) {
            rc = pg_fail(conn, err, "receiving the base backup");
            goto cleanup;
        }
        rc = handle_message(&s, (const unsigned char *)buf, (size_t)n, err);
        PQfreemem(buf);
        if (rc < 0)
            goto cleanup;
    }
    if ((rc = close_current(&s, err)) < 0)
        goto cleanup;
    // After the COPY: the end position, then the command's completion.
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = finish_fail(conn, &notices, err);
        goto cleanup;
    }
    snprintf(info->stop_lsn, sizeof(info->stop_lsn), "%s", PQgetvalue(res, 0, 0));
    info->stop_timeline = strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = finish_fail(conn, &notices, err);
            goto cleanup;
        }
        PQclear(res);
    }
    info->checksum_failures = notices.checksum_failures;
cleanup:
    PQclear(res);
    PQfreemem(label);
    pd_free(cmd);
    pd_pg_free(pg);
    return rc;
}
