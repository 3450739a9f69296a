/* pgdrill restore: a physical backup into an empty directory, or one database of a logical backup
 * into a running server. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "common/log.h"
#include "common/mem.h"
#include "restore/logical.h"
#include "restore/restore.h"

/* Quotes a word for the shell PostgreSQL runs restore_command with. */
static char *
shell_quote(const char *s)
{
    size_t n = 2;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *out = pd_malloc(n + 1), *q = out;
    *q++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(q, "'\\''", 4);
            q += 4;
        } else {
            *q++ = *p;
        }
    }
    *q++ = '\'';
    *q = '\0';
    return out;
}

/*
 * restore_command: this very binary, by absolute path, with the same
 * configuration, so the restored server fetches WAL as this restore did.
 */
static char *
restore_command(const pd_config *cfg)
{
    char exe[PATH_MAX], conf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    const char *path = pd_config_path(cfg);
    char *q_exe, *q_conf = NULL, *q_cluster, *q_repo = NULL, *q_key = NULL, *cmd;

    exe[n > 0 ? n : 0] = '\0';
    q_exe = shell_quote(n > 0 ? exe : "pgdrill");
    q_cluster = shell_quote(pd_config_cluster(cfg));
    if (path && realpath(path, conf))
        q_conf = shell_quote(conf);
    if (q_conf) {
        cmd = pd_asprintf("%s --config %s --cluster %s archive-get %%f %%p", q_exe, q_conf,
                          q_cluster);
    } else {
        q_repo = shell_quote(pd_config_get(cfg, "repo"));
        q_key = pd_config_get(cfg, "key-file") ? shell_quote(pd_config_get(cfg, "key-file")) : NULL;
        cmd = pd_asprintf("%s --cluster %s --repo %s%s%s archive-get %%f %%p", q_exe, q_cluster,
                          q_repo, q_key ? " --key-file " : "", q_key ? q_key : "");
    }
    pd_free(q_exe);
    pd_free(q_conf);
    pd_free(q_cluster);
    pd_free(q_repo);
    pd_free(q_key);
    return cmd;
}

static bool
one_of(const char *v, const char *const *choices)
{
    for (; *choices; choices++)
        if (strcmp(v, *choices) == 0)
            return true;
    return false;
}

/* restore --type logical: one database into the running server. */
static int
restore_logical(const pd_cmd_args *args)
{
    static const char *const physical_only[] = {
        "target-dir",      "tablespace-map",   "target-time", "target-lsn",
        "target-xid",      "target-name",      "target",      "target-action",
        "target-timeline", "target-exclusive", "dry-run",     NULL};
    pd_restore_logical_opts o;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    json_t *m = NULL;
    int rc;

    memset(&o, 0, sizeof(o));
    for (int i = 0; physical_only[i]; i++) {
        if (pd_cmd_opt(args, physical_only[i])) {
            pd_err_set(&err, PD_EUSAGE, "--%s is for physical restores, not --type logical",
                       physical_only[i]);
            pd_err_hint(&err, "see \"pgdrill restore --help\"");
            return pd_cmd_fail(&err);
        }
    }
    o.backup = pd_cmd_opt(args, "backup");
    o.database = pd_cmd_opt(args, "database");
    o.target_database = pd_cmd_opt(args, "target-database");
    o.temp_dir = pd_cmd_opt(args, "temp-dir");
    o.clean = pd_cmd_flag(args, "clean");
    o.jobs = 1;
    if (o.database == NULL) {
        pd_err_set(&err, PD_EUSAGE, "restore --type logical needs --database DB");
        pd_err_hint(&err, "pgdrill list --json shows each backup; see \"pgdrill restore --help\"");
        return pd_cmd_fail(&err);
    }
    if (pd_cmd_opt(args, "jobs")) {
        const char *j = pd_cmd_opt(args, "jobs");
        char *end = NULL;
        long v = strtol(j, &end, 10);
        if (end == j || *end != '\0' || v < 1 || v > 64) {
            pd_err_set(&err, PD_EUSAGE, "bad --jobs \"%s\": use a number from 1 to 64", j);
            return pd_cmd_fail(&err);
        }
        o.jobs = (int)v;
    }
    if (o.temp_dir && o.temp_dir[0] != '/') {
        pd_err_set(&err, PD_EUSAGE, "bad --temp-dir \"%s\": use an absolute path", o.temp_dir);
        return pd_cmd_fail(&err);
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    int read_lock = pd_cmd_read_lock(cfg);
    if (pd_restore_logical(&m, cfg, &o, &err) < 0) {
        rc = pd_cmd_fail(&err);
    } else {
        rc = PD_EXIT_OK;
        printf("restored database \"%s\" of backup %s into database \"%s\"\n", o.database,
               json_string_value(json_object_get(m, "id")),
               o.target_database ? o.target_database : o.database);
    }
    json_decref(m);
    if (read_lock >= 0)
        close(read_lock);
    pd_config_free(cfg);
    return rc;
}

int
pd_cmd_restore(const pd_cmd_args *args)
{
    static const char *const actions[] = {"pause", "promote", "shutdown", NULL};
    pd_restore_opts opts;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *maps[PD_RESTORE_MAX_MAPS];
    json_t *m = NULL;
    int rc;

    const char *type = pd_cmd_opt(args, "type");
    if (type && strcmp(type, "physical") != 0 && strcmp(type, "logical") != 0) {
        pd_err_set(&err, PD_EUSAGE, "unknown restore type \"%s\": use physical or logical", type);
        return pd_cmd_fail(&err);
    }
    if (type && strcmp(type, "logical") == 0)
        return restore_logical(args);
    static const char *const logical_only[] = {"database", "target-database", "jobs",
                                               "clean",    "temp-dir",        NULL};
    for (int i = 0; logical_only[i]; i++) {
        if (pd_cmd_opt(args, logical_only[i])) {
            pd_err_set(&err, PD_EUSAGE, "--%s needs --type logical", logical_only[i]);
            return pd_cmd_fail(&err);
        }
    }
    memset(&opts, 0, sizeof(opts));
    opts.target_dir = pd_cmd_opt(args, "target-dir");
    opts.backup = pd_cmd_opt(args, "backup");
    if (opts.target_dir == NULL) {
        pd_err_set(&err, PD_EUSAGE, "restore needs --target-dir DIR");
        pd_err_hint(&err, "see \"pgdrill restore --help\"");
        return pd_cmd_fail(&err);
    }
    opts.n_maps = pd_cmd_opt_all(args, "tablespace-map", maps, PD_RESTORE_MAX_MAPS);
    for (int i = 0; i < opts.n_maps; i++) {
        const char *eq = strchr(maps[i], '=');
        static char oids[PD_RESTORE_MAX_MAPS][16];
        if (eq == NULL || eq == maps[i] || (size_t)(eq - maps[i]) >= sizeof(oids[0]) ||
            eq[1] != '/') {
            pd_err_set(&err, PD_EUSAGE, "bad --tablespace-map \"%s\": expected OID=/absolute/dir",
                       maps[i]);
            return pd_cmd_fail(&err);
        }
        memcpy(oids[i], maps[i], (size_t)(eq - maps[i]));
        oids[i][eq - maps[i]] = '\0';
        opts.maps[i].oid = oids[i];
        opts.maps[i].dir = eq + 1;
    }
    opts.target_time = pd_cmd_opt(args, "target-time");
    opts.target_lsn = pd_cmd_opt(args, "target-lsn");
    opts.target_xid = pd_cmd_opt(args, "target-xid");
    opts.target_name = pd_cmd_opt(args, "target-name");
    opts.target_action = pd_cmd_opt(args, "target-action");
    opts.target_timeline = pd_cmd_opt(args, "target-timeline");
    opts.target_exclusive = pd_cmd_flag(args, "target-exclusive");
    opts.dry_run = pd_cmd_flag(args, "dry-run");
    if (pd_cmd_opt(args, "target")) {
        if (strcmp(pd_cmd_opt(args, "target"), "immediate") != 0) {
            pd_err_set(&err, PD_EUSAGE, "bad --target \"%s\": the only value is immediate",
                       pd_cmd_opt(args, "target"));
            return pd_cmd_fail(&err);
        }
        opts.target_immediate = true;
    }
    if (opts.target_action && !one_of(opts.target_action, actions)) {
        pd_err_set(&err, PD_EUSAGE, "bad --target-action \"%s\": use pause, promote or shutdown",
                   opts.target_action);
        return pd_cmd_fail(&err);
    }
    if (opts.target_timeline && strcmp(opts.target_timeline, "latest") != 0 &&
        strcmp(opts.target_timeline, "current") != 0 &&
        strspn(opts.target_timeline, "0123456789") != strlen(opts.target_timeline)) {
        pd_err_set(&err, PD_EUSAGE,
                   "bad --target-timeline \"%s\": use latest, current or a timeline number",
                   opts.target_timeline);
        return pd_cmd_fail(&err);
    }
    if ((rc = pd_cmd_load_config(&cfg, args)) != 0)
        return rc;
    int read_lock = pd_cmd_read_lock(cfg);
    char *command = restore_command(cfg);
    opts.restore_command = command;
    rc = pd_restore_physical(&m, cfg, &opts, &err);
    pd_free(command);
    if (rc < 0) {
        rc = pd_cmd_fail(&err);
    } else if (opts.dry_run) {
        rc = PD_EXIT_OK;
        json_decref(m);
    } else {
        rc = PD_EXIT_OK;
        printf("restored backup %s into %s\n", json_string_value(json_object_get(m, "id")),
               opts.target_dir);
        if (geteuid() == 0)
            printf("the files belong to root: chown -R postgres:postgres %s (and the tablespace "
                   "directories) before starting\n",
                   opts.target_dir);
        printf("start it with: pg_ctl -D %s start   (check port and archive settings first)\n",
               opts.target_dir);
        json_decref(m);
    }
    if (read_lock >= 0)
        close(read_lock);
    pd_config_free(cfg);
    return rc;
}
