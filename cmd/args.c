/*
 * The shared option parser. Accepts "--opt value" and "--opt=value", the
 * global options anywhere (--config, --cluster, --quiet, --verbose, --help), and any
 * configuration key as "--<key> VALUE", which overrides the file.
 */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/log.h"
#include "storage/repo.h"

const char pd_cmd_exit_codes_help[] =
    "Exit codes:\n"
    "  0  success\n"
    "  1  the operation failed (I/O, network, PostgreSQL, not built yet)\n"
    "  2  usage or configuration error (also: wrong key, loose key-file mode, unknown backup)\n"
    "  3  verification or drill check failed: the backup is not proven recoverable\n";

static int
find_opt(const pd_cmd_def *def, const char *name, size_t len)
{
    for (int i = 0; i < PD_CMD_MAX_OPTS && def->opts[i].name; i++)
        if (strlen(def->opts[i].name) == len && strncmp(def->opts[i].name, name, len) == 0)
            return i;
    return -1;
}

static int
usage_error(pd_err *err, const pd_cmd_def *def, const char *what)
{
    pd_err_set(err, PD_EUSAGE, "%s", what);
    if (def->name[0] == '\0')
        return pd_err_hint(err, "see \"pgdrill --help\"");
    return pd_err_hint(err, "see \"pgdrill %s --help\"", def->name);
}

int
pd_cmd_parse(pd_cmd_args *args, const pd_cmd_def *def, int argc, char **argv, pd_err *err)
{
    char msg[256];
    bool only_positional = false;

    args->def = def;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || strcmp(a, "-") == 0) {
            if (args->n_positional >= PD_CMD_MAX_POS || args->n_positional >= def->max_positional) {
                snprintf(msg, sizeof(msg), "unexpected argument \"%s\" for command \"%s\"", a,
                         def->name);
                return usage_error(err, def, msg);
            }
            args->positional[args->n_positional++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args->help = true;
            continue;
        }
        if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            args->quiet = true;
            continue;
        }
        if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            args->verbose = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(msg, sizeof(msg), "unknown option \"%s\" for command \"%s\"", a, def->name);
            return usage_error(err, def, msg);
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        int idx = find_opt(def, name, nlen);
        bool is_global = (nlen == 6 && strncmp(name, "config", 6) == 0) ||
                         (nlen == 7 && strncmp(name, "cluster", 7) == 0);
        char key[64];
        bool is_key = false;

        if (nlen < sizeof(key)) {
            memcpy(key, name, nlen);
            key[nlen] = '\0';
            is_key = pd_config_is_key(key);
        }
        if (idx < 0 && !is_global && !is_key) {
            if (def->name[0] == '\0')
                snprintf(msg, sizeof(msg), "unknown option \"--%.*s\"", (int)nlen, name);
            else
                snprintf(msg, sizeof(msg), "unknown option \"--%.*s\" for command \"%s\"",
                         (int)nlen, name, def->name);
            return usage_error(err, def, msg);
        }
        bool takes_value = idx < 0 || def->opts[idx].metavar != NULL;
        if (!takes_value) {
            if (value) {
                snprintf(msg, sizeof(msg), "option \"--%.*s\" takes no value", (int)nlen, name);
                return usage_error(err, def, msg);
            }
            args->values[idx] = "";
            continue;
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                snprintf(msg, sizeof(msg), "option \"--%.*s\" needs a value", (int)nlen, name);
                return usage_error(err, def, msg);
            }
            value = argv[++i];
        }
        if (idx >= 0) {
            args->values[idx] = value;
            // A repeatable option given more often than we keep is an error, never a silent drop.
            if (args->n_seen >= (int)(sizeof(args->seen) / sizeof(args->seen[0])))
                return usage_error(err, def, "too many options");
            args->seen[args->n_seen].opt = idx;
            args->seen[args->n_seen++].value = value;
        } else if (nlen == 6 && strncmp(name, "config", 6) == 0) {
            args->config_path = value;
        } else if (nlen == 7 && strncmp(name, "cluster", 7) == 0) {
            args->cluster = value;
        } else {
            if (args->n_overrides >= PD_CMD_MAX_OVERRIDES)
                return usage_error(err, def, "too many options");
            memcpy(args->override_keys[args->n_overrides], key, nlen + 1);
            args->overrides[args->n_overrides].key = args->override_keys[args->n_overrides];
            args->overrides[args->n_overrides].value = value;
            args->n_overrides++;
        }
    }
    if (!args->help && args->n_positional < def->min_positional) {
        snprintf(msg, sizeof(msg), "command \"%s\" needs %d argument%s: pgdrill %s", def->name,
                 def->min_positional, def->min_positional == 1 ? "" : "s", def->usage);
        return usage_error(err, def, msg);
    }
    return 0;
}

const char *
pd_cmd_opt(const pd_cmd_args *args, const char *name)
{
    int idx = find_opt(args->def, name, strlen(name));

    return idx < 0 ? NULL : args->values[idx];
}

int
pd_cmd_opt_all(const pd_cmd_args *args, const char *name, const char **out, int max)
{
    int idx = find_opt(args->def, name, strlen(name));
    int n = 0;

    for (int i = 0; i < args->n_seen && n < max; i++)
        if (args->seen[i].opt == idx)
            out[n++] = args->seen[i].value;
    return n;
}

bool
pd_cmd_flag(const pd_cmd_args *args, const char *name)
{
    return pd_cmd_opt(args, name) != NULL;
}

int
pd_cmd_fail(const pd_err *err)
{
    pd_log_err(err);
    return pd_err_exit_code(err->code);
}

int
pd_cmd_load_config_err(pd_config **out, const pd_cmd_args *args, pd_err *err)
{
    pd_config_opts opts = PD_CONFIG_OPTS_INIT;
    const char *set;
    pd_log_level level;
    int rc;

    if (args->quiet && args->verbose) {
        pd_err_set(err, PD_EUSAGE, "--quiet and --verbose contradict each other");
        return pd_err_hint(err, "give one of them");
    }
    opts.path = args->config_path;
    opts.cluster = args->cluster;
    opts.overrides = args->overrides;
    opts.n_overrides = args->n_overrides;
    if ((rc = pd_config_load(out, &opts, err)) < 0)
        return rc;
    // Unset, the level stays pd_log_init()'s: info where someone reads the
    // log as it comes (terminal, journald), warnings only under cron.
    // Validated at load, so parsing cannot fail here.
    set = pd_config_get(*out, "log-level");
    if (set != NULL && pd_log_parse_level(set, &level, err) == 0)
        pd_log_set_level(level);
    if (args->verbose && pd_log_get_level() < PD_LOG_INFO)
        pd_log_set_level(PD_LOG_INFO);
    pd_log_set_quiet(args->quiet);
    return 0;
}

int
pd_cmd_load_config(pd_config **out, const pd_cmd_args *args)
{
    pd_err err = PD_ERR_INIT;

    if (pd_cmd_load_config_err(out, args, &err) < 0)
        return pd_cmd_fail(&err);
    return 0;
}

int
pd_cmd_read_lock(const pd_config *cfg)
{
    pd_err err = PD_ERR_INIT;
    int fd = pd_repo_read_lock(cfg, false, &err);

    // Reading goes on without it (a missing repository gets its own error
    // from the command); only an expire running beside it is unprotected.
    if (fd < 0)
        pd_log_debug("reading without the readers' lock: %s", err.msg);
    return fd;
}

void
pd_cmd_print_help(const pd_cmd_def *def)
{
    printf("Usage: pgdrill [--config FILE] [--cluster NAME] %s\n\n%s\n", def->usage,
           def->description);
    if (def->run == NULL)
        printf("\nNot built yet in this version: running it exits 1 and says so.\n");
    if (def->opts[0].name) {
        printf("\nOptions:\n");
        for (int i = 0; i < PD_CMD_MAX_OPTS && def->opts[i].name; i++) {
            char left[64];
            snprintf(left, sizeof(left), "--%s%s%s", def->opts[i].name,
                     def->opts[i].metavar ? " " : "",
                     def->opts[i].metavar ? def->opts[i].metavar : "");
            printf("  %-26s %s\n", left, def->opts[i].help);
        }
    }
    printf("\nCommon options:\n"
           "  --config FILE              configuration file (default $PGDRILL_CONFIG, then %s)\n"
           "  --cluster NAME             the cluster section to use (optional with one cluster)\n"
           "  --quiet, -q                errors only, no progress\n"
           "  --verbose, -v              info lines also when stderr is not a terminal (cron)\n"
           "  --KEY VALUE                any configuration key, overriding the file (see pgdrill "
           "--help)\n"
           "  --help, -h                 this help\n",
           PD_CONFIG_DEFAULT_PATH);
    printf("\nExample:\n  %s\n\n%s", def->example, pd_cmd_exit_codes_help);
}
