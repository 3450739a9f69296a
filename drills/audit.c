/*
 * Least-privilege findings (see audit.h). The role is inspected through the
 * catalogs any role may read (pg_roles, pg_has_role, has_*_privilege) in the
 * database pgdrill connects to; pg_hba_file_rules needs a superuser (or an
 * explicit grant), so without it the finding is "could not inspect", info.
 */
#include "drills/audit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"

static void finding(json_t *findings, const char *severity, const char *check, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
finding(json_t *findings, const char *severity, const char *check, const char *fmt, ...)
{
    char msg[1024], clean[1100];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *f = json_object();
    json_object_set_new(f, "severity", json_string(severity));
    json_object_set_new(f, "check", json_string(check));
    json_object_set_new(f, "message", json_string(pd_redact(msg, clean, sizeof(clean))));
    json_array_append_new(findings, f);
}

/* Attributes, memberships and write grants of the current role. */
static void
audit_role(json_t *findings, pd_pg *pg)
{
    static const char sql[] =
        "SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, "
        "r.rolbypassrls, "
        // Memberships, direct or inherited, other than pg_read_all_data.
        "(SELECT string_agg(quote_ident(g.rolname), ', ' ORDER BY g.rolname) FROM pg_roles g "
        "  WHERE g.oid <> r.oid AND g.rolname <> 'pg_read_all_data' "
        "  AND pg_has_role(r.oid, g.oid, 'MEMBER')), "
        // Tables it may change, outside the system schemas.
        "(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "  AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "  AND n.nspname NOT LIKE 'pg\\_toast%' "
        "  AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')), "
        "(SELECT string_agg(quote_ident(n.nspname), ', ' ORDER BY n.nspname) FROM pg_namespace n "
        "  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "  AND n.nspname NOT LIKE 'pg\\_%' AND has_schema_privilege(n.oid, 'CREATE')), "
        "has_database_privilege(current_database(), 'CREATE'), current_database() "
        "FROM pg_roles r WHERE r.rolname = current_user";
    pd_err err = PD_ERR_INIT;
    PGresult *res = NULL;

    if (pd_pg_query(pg, &res, sql, 0, NULL, &err) < 0 || PQntuples(res) != 1) {
        finding(findings, "info", "role", "could not inspect the role pgdrill connects as: %s",
                err.msg[0] ? err.msg : "no row for current_user");
        PQclear(res);
        return;
    }
    const char *role = PQgetvalue(res, 0, 0);
    const char *db = PQgetvalue(res, 0, 10);
    bool super = PQgetvalue(res, 0, 1)[0] == 't';
    const char *fix = "a role with only LOGIN and REPLICATION is enough (README, \"Least "
                      "privilege\")";

    if (super) {
        finding(findings, "warning", "role",
                "role \"%s\" is a superuser: it can read and change everything, far more than "
                "backups need; CREATE ROLE pgdrill LOGIN REPLICATION and set pg-user = pgdrill",
                role);
        PQclear(res);
        return; // a superuser holds every other privilege too
    }
    if (PQgetvalue(res, 0, 2)[0] == 't')
        finding(findings, "warning", "role",
                "role \"%s\" has CREATEROLE, which backups do not need; ALTER ROLE \"%s\" "
                "NOCREATEROLE (%s)",
                role, role, fix);
    if (PQgetvalue(res, 0, 3)[0] == 't')
        finding(findings, "warning", "role",
                "role \"%s\" has CREATEDB, which backups do not need; ALTER ROLE \"%s\" NOCREATEDB",
                role, role);
    // Logical backups need BYPASSRLS (pg_dump refuses tables with row-level
    // security without it), physical ones do not: said, not warned.
    if (PQgetvalue(res, 0, 5)[0] == 't')
        finding(findings, "info", "role",
                "role \"%s\" has BYPASSRLS, which only logical backups of tables with "
                "row-level security need; with physical backups only, ALTER ROLE \"%s\" "
                "NOBYPASSRLS",
                role, role);
    if (PQgetvalue(res, 0, 4)[0] != 't')
        finding(findings, "warning", "role",
                "role \"%s\" lacks REPLICATION: physical backups will fail; ALTER ROLE \"%s\" "
                "REPLICATION",
                role, role);
    if (!PQgetisnull(res, 0, 6))
        finding(findings, "warning", "role",
                "role \"%s\" is a member of %s, beyond what backups need (REPLICATION, "
                "pg_read_all_data for logical backups); REVOKE %s FROM \"%s\"",
                role, PQgetvalue(res, 0, 6), PQgetvalue(res, 0, 6), role);
    if (strcmp(PQgetvalue(res, 0, 7), "0") != 0)
        finding(findings, "warning", "grants",
                "role \"%s\" may write to %s table(s) in database \"%s\"; backups only read: "
                "REVOKE INSERT, UPDATE, DELETE, TRUNCATE on them FROM \"%s\" (or use a role "
                "that owns nothing)",
                role, PQgetvalue(res, 0, 7), db, role);
    if (!PQgetisnull(res, 0, 8))
        finding(findings, "warning", "grants",
                "role \"%s\" may create objects in schema(s) %s of database \"%s\"; REVOKE "
                "CREATE ON SCHEMA ... FROM \"%s\"",
                role, PQgetvalue(res, 0, 8), db, role);
    if (PQgetvalue(res, 0, 9)[0] == 't')
        finding(findings, "warning", "grants",
                "role \"%s\" may create schemas in database \"%s\"; REVOKE CREATE ON DATABASE "
                "\"%s\" FROM \"%s\" (and from PUBLIC)",
                role, db, db, role);
    PQclear(res);
}

bool
pd_audit_address_is_local(const char *address, const char *netmask)
{
    struct in_addr a4, m4;
    struct in6_addr a6, m6;

    if (address == NULL || address[0] == '\0')
        return false;
    if (strcmp(address, "localhost") == 0 || strcmp(address, "samehost") == 0)
        return true;
    if (netmask && inet_pton(AF_INET, address, &a4) == 1 && inet_pton(AF_INET, netmask, &m4) == 1) {
        uint32_t a = ntohl(a4.s_addr), m = ntohl(m4.s_addr);
        return ((a & m) >> 24) == 127 && ((a | ~m) >> 24) == 127;
    }
    if (netmask && inet_pton(AF_INET6, address, &a6) == 1 &&
        inet_pton(AF_INET6, netmask, &m6) == 1) {
        static const unsigned char ones[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                               0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        return IN6_IS_ADDR_LOOPBACK(&a6) && memcmp(&m6, ones, 16) == 0;
    }
    return false;
}

static void
audit_hba(json_t *findings, pd_pg *pg)
{
    pd_err err = PD_ERR_INIT;
    PGresult *res = NULL;

    if (pd_pg_query(pg, &res,
                    "SELECT line_number, type, address, netmask, "
                    "current_setting('hba_file') FROM pg_hba_file_rules "
                    "WHERE error IS NULL AND auth_method = 'trust' AND type <> 'local' "
                    "AND 'replication' = ANY(database) ORDER BY line_number",
                    0, NULL, &err) < 0) {
        finding(findings, "info", "hba",
                "could not inspect pg_hba.conf (%s): reading pg_hba_file_rules needs a superuser; "
                "check by hand that no \"host replication ... trust\" line admits a non-local "
                "address, or run pgdrill check once with --pg-user set to a superuser",
                err.msg);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *address = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
        const char *netmask = PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3);
        if (pd_audit_address_is_local(address, netmask))
            continue;
        finding(findings, "critical", "hba",
                "pg_hba.conf \"%s\" line %s lets replication connections from %s%s%s in with "
                "trust: anyone there can copy the whole database; use scram-sha-256 (or peer "
                "over the local socket) and reload",
                PQgetvalue(res, i, 4), PQgetvalue(res, i, 0), address ? address : "any address",
                netmask ? "/" : "", netmask ? netmask : "");
    }
    PQclear(res);
}

/* A file or directory others may read: world-readable, or for a secret any access but the owner's.
 */
static void
audit_mode(json_t *findings, const char *what, const char *path, bool secret)
{
    struct stat st;

    if (path == NULL)
        return;
    if (stat(path, &st) < 0) {
        finding(findings, "info", "file-mode", "could not inspect %s \"%s\": %s", what, path,
                strerror(errno));
        return;
    }
    mode_t loose = secret                ? (S_IRWXG | S_IRWXO)
                   : S_ISDIR(st.st_mode) ? (S_IROTH | S_IXOTH)
                                         : S_IROTH;
    if ((st.st_mode & loose) == 0)
        return;
    finding(findings, secret ? "critical" : "warning", "file-mode",
            "%s \"%s\" has mode %04o: %s; chmod %s %s", what, path, (unsigned)(st.st_mode & 07777),
            secret ? "others than its owner may read a secret"
                   : "every user on this machine may read it",
            S_ISDIR(st.st_mode) ? (secret ? "0700" : "o-rx") : (secret ? "0600" : "o-r"), path);
}

void
pd_audit_run(json_t *findings, const pd_config *cfg, pd_pg *pg, int cipher)
{
    const char *repo = pd_config_get(cfg, "repo");

    if (pg) {
        audit_role(findings, pg);
        audit_hba(findings, pg);
    } else {
        finding(findings, "info", "role",
                "could not inspect the role pgdrill connects as or pg_hba.conf: no connection");
    }
    audit_mode(findings, "key file", pd_config_get(cfg, "key-file"), true);
    audit_mode(findings, "passphrase file", pd_config_get(cfg, "passphrase-file"), true);
    audit_mode(findings, "S3 credentials file", pd_config_get(cfg, "s3-credentials-file"), true);
    audit_mode(findings, "configuration file", pd_config_path(cfg), false);
    if (repo[0] == '/') {
        char cluster_dir[4096];
        snprintf(cluster_dir, sizeof(cluster_dir), "%s/%s", repo, pd_config_cluster(cfg));
        audit_mode(findings, "repository directory", repo, false);
        audit_mode(findings, "repository directory", cluster_dir, false);
    }
    bool off = cipher >= 0 ? cipher == 0 : strcmp(pd_config_get(cfg, "encryption"), "none") == 0;
    if (off)
        finding(findings, "warning", "encryption",
                "encryption is off: whoever reads the repository (or its copies) reads the "
                "database; create a new repository with encryption = aes-256-gcm and a key-file");
}
