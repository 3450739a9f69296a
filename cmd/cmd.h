/*
 * The command line: a table of commands (main.c), one shared option parser
 * (args.c) and one function per command (cmd_<name>.c). Commands parse, load
 * the configuration, call the library, print, and return an exit status;
 * they are the only place that prints errors.
 */
#ifndef PGDRILL_CMD_CMD_H
#define PGDRILL_CMD_CMD_H

#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"

#define PD_CMD_MAX_OPTS      24
#define PD_CMD_MAX_OVERRIDES 64
#define PD_CMD_MAX_POS       8
/* --database options of one command (each is also one of the 32 "seen" slots). */
#define PD_CMD_MAX_DATABASES 24

/* An option of one command. */
typedef struct pd_cmd_optdef {
    const char *name;    /* without "--" */
    const char *metavar; /* NULL: a flag without value */
    const char *help;
} pd_cmd_optdef;

typedef struct pd_cmd_def pd_cmd_def;

/* What the parser found: global options, overrides, the command's own options. */
typedef struct pd_cmd_args {
    const pd_cmd_def *def;
    const char *config_path;
    const char *cluster;
    bool quiet;
    bool verbose;
    bool help;
    pd_config_override overrides[PD_CMD_MAX_OVERRIDES];
    char override_keys[PD_CMD_MAX_OVERRIDES][64]; /* storage for overrides[].key */
    size_t n_overrides;
    const char *values[PD_CMD_MAX_OPTS]; /* by index in def->opts; flags: "" */
    struct {
        int opt;
        const char *value;
    } seen[32]; /* every occurrence, for repeatable options */
    int n_seen;
    const char *positional[PD_CMD_MAX_POS];
    int n_positional;
} pd_cmd_args;

struct pd_cmd_def {
    const char *name;
    int (*run)(const pd_cmd_args *args); /* NULL: not built yet */
    const char *usage;                   /* after "pgdrill [GLOBAL OPTIONS] " */
    const char *summary;                 /* one line for the command list */
    const char *description;
    const char *example;
    int min_positional, max_positional;
    pd_cmd_optdef opts[PD_CMD_MAX_OPTS];
};

/* The command table (main.c). */
const pd_cmd_def *pd_cmd_find(const char *name);

/*
 * Parses argv (after the command name) into args, starting from the global
 * options main() found before the command. PD_EUSAGE for an unknown option,
 * a missing value, or the wrong number of arguments.
 */
PD_MUST_CHECK int pd_cmd_parse(pd_cmd_args *args, const pd_cmd_def *def, int argc, char **argv,
                               pd_err *err);

/* The value of the command's option name, NULL when not given. */
const char *pd_cmd_opt(const pd_cmd_args *args, const char *name);
bool pd_cmd_flag(const pd_cmd_args *args, const char *name);
/* Every value given for a repeatable option, in order; returns how many (at most max). */
int pd_cmd_opt_all(const pd_cmd_args *args, const char *name, const char **out, int max);

/*
 * Loads the configuration the arguments describe and sets the log level:
 * log-level when set (in the file or as --log-level), else pd_log_init()'s
 * default (info on a terminal or journald, warning elsewhere); --verbose
 * raises it to at least info, --quiet keeps only errors (both: PD_EUSAGE).
 * On failure logs the error and returns its exit status (> 0).
 */
int pd_cmd_load_config(pd_config **out, const pd_cmd_args *args);
/* The same without logging: the error is left in err (for check --nagios). */
PD_MUST_CHECK int pd_cmd_load_config_err(pd_config **out, const pd_cmd_args *args, pd_err *err);

/*
 * Takes the cluster's readers' lock (pd_repo_read_lock, shared) for a
 * command that reads backups, so expire waits; returns the fd to close, or
 * -1 when it could not be taken (logged at debug level; the command goes on).
 */
int pd_cmd_read_lock(const pd_config *cfg);

/* Logs err and returns its exit status. */
int pd_cmd_fail(const pd_err *err);

/* Prints a command's --help to stdout. */
void pd_cmd_print_help(const pd_cmd_def *def);

/* Shared exit-code text for every --help. */
extern const char pd_cmd_exit_codes_help[];

int pd_cmd_check(const pd_cmd_args *args);
int pd_cmd_init(const pd_cmd_args *args);
int pd_cmd_backup(const pd_cmd_args *args);
int pd_cmd_list(const pd_cmd_args *args);
int pd_cmd_verify(const pd_cmd_args *args);
int pd_cmd_restore(const pd_cmd_args *args);
int pd_cmd_archive_push(const pd_cmd_args *args);
int pd_cmd_archive_get(const pd_cmd_args *args);
int pd_cmd_key(const pd_cmd_args *args);
int pd_cmd_drill(const pd_cmd_args *args);
int pd_cmd_status(const pd_cmd_args *args);
int pd_cmd_expire(const pd_cmd_args *args);

#endif
