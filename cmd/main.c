/*
 * pgdrill's entry point: global options, the command table, dispatch.
 * A command that is not built yet says so and exits 1, never a silent 0.
 */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cmd/cmd.h"
#include "common/json.h"
#include "common/log.h"
#include "common/version.h"

static const pd_cmd_def commands[] = {
    {"init",
     pd_cmd_init,
     "init [--generate-key-file PATH]",
     "create the repository for a cluster",
     "Creates <repo>/<cluster>/repo.json with the repository's cipher, compression and key\n"
     "check value. Refuses an existing repository.",
     "pgdrill --cluster main init --generate-key-file /etc/pgdrill/main.key",
     0,
     0,
     {{"generate-key-file", "PATH", "create a new 32-byte key file (mode 0600) and use it"}}},
    {"backup",
     pd_cmd_backup,
     "backup [--type physical|logical] [--database DB ...] [--with-role-passwords]",
     "take a backup and commit it",
     "Streams a base backup (physical), or each database's pg_dump -Fc and the globals of\n"
     "pg_dumpall --globals-only (logical; every non-template database unless --database is\n"
     "given), through compression and encryption into the repository with no temporary file.\n"
     "The backup is committed only when every object is stored and verified; a failing\n"
     "pg_dump fails the backup (exit 1) with its own message and commits nothing. Both\n"
     "record row counts of each database's largest tables for drills: a logical backup\n"
     "exact ones read from its dump, a physical one counts 5 tables beside the stream, with\n"
     "the rows written meanwhile as the tolerance (a locked table is waited for 30 s).",
     "pgdrill --cluster main backup --type physical\n"
     "  pgdrill --cluster main backup --type logical --database app --database billing",
     0,
     0,
     {{"type", "TYPE", "physical (default) or logical"},
      {"database", "DB", "logical: dump this database (repeatable; default: every one)"},
      {"with-role-passwords", NULL, "logical: keep role passwords in the globals (default: not)"},
      {"ignore-checksum-failures", NULL, "do not have the server verify page checksums"},
      {"json", NULL, "print the committed manifest as JSON on stdout"}}},
    {"list",
     pd_cmd_list,
     "list [--json]",
     "list backups with state, times, LSNs, sizes, last drill",
     "Lists the cluster's backups, complete and incomplete, oldest first.",
     "pgdrill --cluster main list --json",
     0,
     0,
     {{"json", NULL, "one JSON document on stdout"}}},
    {"restore",
     pd_cmd_restore,
     "restore --target-dir DIR [--backup ID|latest] [TARGET OPTIONS]\n"
     "       restore --type logical --database DB [--target-database NEW] [--jobs N] [--clean]",
     "restore a backup into a directory, optionally to a point in time; or one database",
     "Restores a physical backup into an empty directory. With a recovery target (or when\n"
     "WAL is archived) it writes restore_command and the target into postgresql.auto.conf and\n"
     "creates recovery.signal; without --backup it picks the newest backup that ended before\n"
     "the target. Run it with --dry-run first: it says which backup and WAL it would use and\n"
     "whether all of it is there, and writes nothing.\n"
     "With --type logical it restores one database of a logical backup (the newest unless\n"
     "--backup) into the running server of the configuration through pg_restore: it creates\n"
     "the target database with the dumped encoding and collation, refuses an existing one\n"
     "that is not empty unless --clean, streams the dump into pg_restore's stdin in one\n"
     "transaction, and drops a database it created when the restore fails. --jobs N decrypts\n"
     "the dump first into a temporary file (mode 0600, in --temp-dir, the dump's size on disk,\n"
     "removed afterwards) for a parallel pg_restore. Roles are not restored: they must exist.",
     "pgdrill --cluster main restore --target-dir /srv/restore --target-time '2026-11-24 "
     "02:00:00+00'\n"
     "  pgdrill --cluster main restore --type logical --database app --target-database app_copy",
     0,
     0,
     {{"target-dir", "DIR", "empty directory to restore into"},
      {"tablespace-map", "OID=DIR", "restore tablespace OID into DIR (repeatable)"},
      {"backup", "ID", "backup ID or \"latest\" (default)"},
      {"target-time", "TIME", "recover up to this time"},
      {"target-lsn", "LSN", "recover up to this LSN"},
      {"target-xid", "XID", "recover up to this transaction"},
      {"target-name", "NAME", "recover up to this restore point"},
      {"target", "immediate", "stop as soon as the backup is consistent"},
      {"target-action", "ACTION", "pause, promote or shutdown (PostgreSQL's default: pause)"},
      {"target-timeline", "TLI", "latest (default), current or a timeline number"},
      {"target-exclusive", NULL, "stop just before the target, not after it"},
      {"dry-run", NULL, "say what would be done, write nothing"},
      {"type", "TYPE", "physical (default) or logical"},
      {"database", "DB", "logical: the database of the backup to restore"},
      {"target-database", "NEW", "logical: restore into this database (default: DB)"},
      {"jobs", "N", "logical: parallel pg_restore jobs, through a temporary file (1)"},
      {"clean", NULL, "logical: restore into a non-empty database, dropping its objects first"},
      {"temp-dir", "DIR", "logical --jobs: where the temporary file goes ($TMPDIR, /var/tmp)"}}},
    {"verify",
     pd_cmd_verify,
     "verify [--backup ID|latest|all]",
     "read every object back and check hashes and tags",
     "Reads every object of a backup back through decryption and decompression and checks\n"
     "its hashes and authentication tags without restoring.",
     "pgdrill --cluster main verify --backup all",
     0,
     0,
     {{"backup", "ID", "backup ID, \"latest\" (default) or \"all\""},
      {"json", NULL, "one JSON document on stdout"}}},
    {"drill",
     pd_cmd_drill,
     "drill [--backup ID|--pick latest|oldest|random] [--target-time T|--target-lsn L|\n"
     "       --target immediate|random] [--keep] [--json] [--report-file F] [--enforce-rto]",
     "restore into a scratch instance, recover, run checks, report",
     "Restores a backup into an isolated scratch instance (Unix socket only, archiving off,\n"
     "no replication, no preloaded libraries; its own network namespace when run as root,\n"
     "as drill-user), replays WAL to the target (default: the newest point the archive\n"
     "reaches), runs the checks (pg_verifybackup, row counts at the backup's end, every\n"
     "database, amcheck, drill-check queries), measures restore, recovery and checks, stores\n"
     "the report in the repository (drills/ID.json) and removes the instance, also on\n"
     "SIGINT and SIGTERM. A logical backup is drilled on a fresh instance from initdb (the\n"
     "same isolation): the globals, then each database through pg_restore, then the same\n"
     "checks (exact row counts from dump time); it takes no --target-time or --target-lsn,\n"
     "and --target random means the moment of its dump.\n"
     "Exit 3 when a check fails (the backup is not proven recoverable),\n"
     "or with --enforce-rto when the recovery took longer than drill-rto-objective; exit 1\n"
     "when the drill could not run (for example not enough disk in drill-dir).",
     "pgdrill --cluster main drill --pick random --target random --json",
     0,
     0,
     {{"backup", "ID", "backup ID or \"latest\""},
      {"pick", "HOW", "latest (default), oldest or random complete backup"},
      {"target-time", "T", "recover to this time (RFC 3339; UTC when no zone)"},
      {"target-lsn", "LSN", "recover to this LSN"},
      {"target", "WHAT", "immediate (the backup's end) or random (a random recoverable LSN)"},
      {"keep", NULL, "keep the scratch instance running and print how to connect"},
      {"json", NULL, "the report as one JSON document on stdout"},
      {"report-file", "FILE", "also write the JSON report to FILE (mode 0600)"},
      {"enforce-rto", NULL, "exit 3 when the RTO exceeds drill-rto-objective"}}},
    {"archive-push",
     pd_cmd_archive_push,
     "archive-push PATH",
     "archive one WAL file (archive_command)",
     "Compresses, encrypts and stores one WAL file; returns 0 only once it is durably stored.",
     "archive_command = 'pgdrill --cluster main archive-push %p'",
     1,
     1,
     {{NULL, NULL, NULL}}},
    {"archive-get",
     pd_cmd_archive_get,
     "archive-get NAME PATH",
     "fetch one WAL file (restore_command)",
     "Fetches, verifies and decrypts one archived WAL file to PATH; exits 1 quietly when the\n"
     "file is not in the archive.",
     "restore_command = 'pgdrill --cluster main archive-get %f %p'",
     2,
     2,
     {{NULL, NULL, NULL}}},
    {"expire",
     pd_cmd_expire,
     "expire [--dry-run] [--json]",
     "apply retention to backups and WAL",
     "Removes backups beyond retention-full (count) and retention-days (age), kept when either\n"
     "rule keeps them, counted apart for physical backups and for each database's logical\n"
     "backups; never the newest complete backup, nor (retention-keep-drilled = yes) the\n"
     "newest whose last drill passed.\n"
     "Incomplete backups go after retention-incomplete-grace hours. Then the WAL below the\n"
     "start of the oldest kept physical backup, per timeline; .history files stay. With no\n"
     "retention key set nothing is removed. Each removal is logged; a killed run\n"
     "leaves a consistent repository and the next run finishes it. A running restore,\n"
     "drill or verify is waited for: expire never removes a backup being read.",
     "pgdrill --cluster main expire --dry-run\n"
     "  pgdrill --cluster main --quiet expire      # nightly, after the backup",
     0,
     0,
     {{"dry-run", NULL, "print what would be removed and the space freed, remove nothing"},
      {"json", NULL, "the plan as one JSON document on stdout"}}},
    {"key",
     pd_cmd_key,
     "key rotate --new-key-file FILE",
     "rewrap every data key under a new master key",
     "Rewraps every data key under a new master key; only metadata is rewritten.",
     "pgdrill --cluster main key rotate --new-key-file /etc/pgdrill/main.key.new",
     1,
     1,
     {{"new-key-file", "FILE", "the new master key file (mode 0600)"}}},
    {"status",
     pd_cmd_status,
     "status [--json|--prometheus]",
     "health from the repository: backup age, archive lag, last drill",
     "Reports the last backup's age, WAL archive lag, the last drill, the repository size and\n"
     "capacity: free space of a local repository and of drill-dir, the stored bytes backups and\n"
     "WAL add per day, and the days until the repository is full at that rate. Works from the\n"
     "repository alone; when the database is reachable it adds the WAL archive lag in bytes\n"
     "(else that value is absent and the output says why).",
     "pgdrill --cluster main status --prometheus > /var/lib/node_exporter/pgdrill.prom",
     0,
     0,
     {{"json", NULL, "one JSON document on stdout"},
      {"prometheus", NULL, "Prometheus text exposition format"}}},
    {"check",
     pd_cmd_check,
     "check [--json] [--strict] | check --nagios",
     "check configuration, connection, repository, archiving, health, least privilege",
     "Loads the configuration, connects to PostgreSQL and reports its version, checks that\n"
     "the repository (directory or S3 endpoint) is reachable, opens it and verifies the key,\n"
     "and that a forced WAL switch reaches it; then evaluates health against alert-backup-age, "
     "alert-archive-lag,\n"
     "alert-drill-age and alert-repository-days (OK, WARNING, CRITICAL) and lists\n"
     "least-privilege findings (critical, warning, info: role attributes, memberships and\n"
     "write grants, pg_hba.conf trust for replication, file modes, encryption), each naming\n"
     "the fix. Health states and findings do not change the exit code unless --strict.\n"
     "--nagios is a Nagios plugin: no WAL switch, one line \"PGDRILL STATE - ...\" with\n"
     "perfdata ('label'=value[UOM];warn;crit;min;max, ages in s, sizes in B) and the\n"
     "plugin exit codes 0 OK, 1 WARNING, 2 CRITICAL (also: database or repository down),\n"
     "3 UNKNOWN (pgdrill cannot evaluate: a configuration error).",
     "pgdrill --cluster main check --nagios",
     0,
     0,
     {{"json", NULL, "one JSON document on stdout (health items and findings included)"},
      {"strict", NULL, "exit 1 when a health state is not OK or a finding is a warning or worse"},
      {"nagios", NULL, "Nagios plugin output and exit codes (0 OK ... 3 UNKNOWN)"}}},
};

const pd_cmd_def *
pd_cmd_find(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Pseudo-command for the options before the command: globals and config keys only. */
static const pd_cmd_def global_def = {"", NULL, "", "", "", "", 0, 0, {{NULL, NULL, NULL}}};

static void
print_main_help(void)
{
    printf(
        "pgdrill %s: PostgreSQL backups that are proven to restore\n\n"
        "Usage: pgdrill [--config FILE] [--cluster NAME] [--quiet|--verbose] COMMAND [OPTIONS]\n\n"
        "Commands:\n",
        PD_VERSION);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        printf("  %-13s %s%s\n", commands[i].name, commands[i].summary,
               commands[i].run ? "" : " (not built yet)");
    printf("\nGlobal options:\n"
           "  --config FILE    configuration file (default $PGDRILL_CONFIG, then %s)\n"
           "  --cluster NAME   the cluster section to use (optional with one cluster)\n"
           "  --quiet, -q      errors only, no progress\n"
           "  --verbose, -v    info lines also when stderr is not a terminal (cron); without\n"
           "                   it and without log-level, only warnings and errors go there\n"
           "  --version        print the version\n"
           "  --help, -h       this help; \"pgdrill COMMAND --help\" for a command\n"
           "\nConfiguration keys (in [global] or a cluster's section; --KEY VALUE overrides):\n"
           "%s\n"
           "Example:\n  pgdrill --config /etc/pgdrill/pgdrill.conf --cluster main check\n\n%s",
           PD_CONFIG_DEFAULT_PATH, pd_config_help(), pd_cmd_exit_codes_help);
}

static int
not_built(const pd_cmd_def *def)
{
    pd_err err = PD_ERR_INIT;

    pd_err_set(&err, PD_ENOTIMPL, "command \"%s\" is not implemented yet in pgdrill %s", def->name,
               PD_VERSION);
    pd_err_hint(&err, "see README.md, \"What works today\"");
    return pd_cmd_fail(&err);
}

int
main(int argc, char **argv)
{
    pd_cmd_args args;
    pd_err err = PD_ERR_INIT;
    const pd_cmd_def *def;
    int i = 1;
    int rc;

    memset(&args, 0, sizeof(args));
    pd_log_init();
    pd_json_init();

    // Global options before the command: the same parser as after it.
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_main_help();
            return PD_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("pgdrill %s\n", PD_VERSION);
            return PD_EXIT_OK;
        }
        // A global option with a separate value takes the next word too.
        int n = 1;
        if (strchr(argv[i], '=') == NULL && strcmp(argv[i], "--quiet") != 0 &&
            strcmp(argv[i], "-q") != 0 && strcmp(argv[i], "--verbose") != 0 &&
            strcmp(argv[i], "-v") != 0)
            n = i + 1 < argc ? 2 : 1;
        if (pd_cmd_parse(&args, &global_def, n, argv + i, &err) < 0)
            return pd_cmd_fail(&err);
        i += n - 1;
    }
    if (i >= argc) {
        pd_err_set(&err, PD_EUSAGE, "no command given");
        pd_err_hint(&err, "see \"pgdrill --help\"");
        return pd_cmd_fail(&err);
    }
    def = pd_cmd_find(argv[i]);
    if (def == NULL) {
        pd_err_set(&err, PD_EUSAGE, "unknown command \"%s\"", argv[i]);
        pd_err_hint(&err, "see \"pgdrill --help\" for the commands");
        return pd_cmd_fail(&err);
    }
    if (pd_cmd_parse(&args, def, argc - i - 1, argv + i + 1, &err) < 0)
        return pd_cmd_fail(&err);
    if (args.help) {
        pd_cmd_print_help(def);
        return PD_EXIT_OK;
    }
    if (def->run == NULL)
        return not_built(def);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = def->run(&args);
    curl_global_cleanup();
    return rc;
}
