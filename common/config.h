/*
 * Configuration: the INI contract of DESIGN.md. A file has a [global] section
 * and one section per cluster; a key in the cluster's section overrides the
 * same key in [global]; a command-line override (--<key> VALUE) overrides
 * both. Every key is known in advance (one table in config.c), every value is
 * validated at load, so later code reads typed values and never fails on them.
 * Errors (exit 2) name the file, the line and the key.
 */
#ifndef PGDRILL_COMMON_CONFIG_H
#define PGDRILL_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define PD_CONFIG_DEFAULT_PATH "/etc/pgdrill/pgdrill.conf"
#define PD_CONFIG_ENV          "PGDRILL_CONFIG"
#define PD_CONFIG_MAX_SIZE     (1024 * 1024) /* a larger file is refused */
#define PD_CONFIG_MAX_SECTIONS 1024          /* [global] and cluster sections */

typedef struct pd_config pd_config;

typedef struct pd_config_override {
    const char *key; /* without the leading "--" */
    const char *value;
} pd_config_override;

typedef struct pd_config_opts {
    /*
     * The file: --config, else $PGDRILL_CONFIG (when set and not empty),
     * else PD_CONFIG_DEFAULT_PATH. A file named by --config or the
     * environment must exist; the default file may be missing, then only
     * overrides configure pgdrill and the cluster is --cluster (or "main").
     * Limits: PD_CONFIG_MAX_SIZE bytes, lines of at most 199 characters.
     */
    const char *path;
    /*
     * --cluster; may be NULL when the file has exactly one cluster section.
     * A cluster name (also a section name) has 1 to 63 letters, digits, "_",
     * "." and "-", does not start with "." and is not "global".
     */
    const char *cluster;
    /*
     * Command-line overrides, in order (a later one wins for single keys, a
     * repeatable key collects them all). Key and value must not be NULL.
     */
    const pd_config_override *overrides;
    size_t n_overrides;
} pd_config_opts;

#define PD_CONFIG_OPTS_INIT \
    {                       \
        NULL, NULL, NULL, 0 \
    }

/*
 * Loads and validates the configuration. On success *out owns a config freed
 * with pd_config_free(). Fails with PD_ECONFIG for an unreadable or malformed
 * file, an unknown key, a bad value, a key given twice in one section, an
 * unknown or ambiguous cluster, a missing required key ("repo"). Messages
 * start with where the problem is: 'configuration file "F" line N: ...' or
 * 'option --key: ...'. opts may be NULL (PD_CONFIG_OPTS_INIT).
 */
PD_MUST_CHECK int pd_config_load(pd_config **out, const pd_config_opts *opts, pd_err *err);

void pd_config_free(pd_config *cfg);

/* True when key is a configuration key (so "--<key>" is an override). */
bool pd_config_is_key(const char *key);

/* The cluster name in use, and the file read (NULL when none was read). */
const char *pd_config_cluster(const pd_config *cfg);
const char *pd_config_path(const pd_config *cfg);

/*
 * Effective values, defaults applied. Asking for an unknown key, or with the
 * wrong type, is a programming error (PD_ASSERT). Returned strings are
 * borrowed and live as long as cfg.
 */
/* String, path and enum keys: the value, else the default, else NULL. */
const char *pd_config_get(const pd_config *cfg, const char *key);
/*
 * Int keys: the value, else the default, else 0. Every int key without a
 * default (retention-full, retention-days, drill-rto-objective) has a minimum
 * of 1, so 0 means "not set".
 */
long pd_config_get_int(const pd_config *cfg, const char *key);
/* Yes/no keys (s3-verify-tls); yes/no, true/false, on/off, 1/0 in any case. */
bool pd_config_get_bool(const pd_config *cfg, const char *key);
/*
 * Alert thresholds (alert-backup-age, alert-archive-lag, alert-drill-age:
 * seconds, a larger value is worse; alert-repository-days: days, a smaller
 * value is worse). *warn and *crit are -1 when not set ("off", or no CRIT).
 */
void pd_config_get_limits(const pd_config *cfg, const char *key, long *warn, long *crit);

/*
 * Parses "WARN[,CRIT]" or "off". Durations (days false) are digits with an
 * optional unit s, m, h or d (seconds without one) and CRIT must be at least
 * WARN; days (days true) are plain digits and CRIT must be at most WARN.
 * Values are at most 36500 days. Sets *warn and *crit (-1: not set); false
 * when s is malformed. Pure; exposed for tests.
 */
bool pd_config_parse_limits(const char *s, bool days, long *warn, long *crit);

/*
 * Repeatable keys (drill-check): every value from [global] and the cluster's
 * section in file order, then the overrides. Returns the count; *out is NULL
 * when it is 0.
 */
size_t pd_config_get_list(const pd_config *cfg, const char *key, const char *const **out);

/*
 * Where the effective value came from, for messages: "file F line N",
 * "option --key" or "default" (also for an unset key without a default). For
 * a repeatable key, where its last value came from. Writes into buf
 * (bufsize > 0) and returns it.
 */
const char *pd_config_source(const pd_config *cfg, const char *key, char *buf, size_t bufsize);

/* One line per key for --help: "  key  meaning (default)". Returns a static string. */
const char *pd_config_help(void);

/*
 * Tests only: replaces PD_CONFIG_DEFAULT_PATH (NULL restores it), so that a
 * test does not depend on /etc. path is borrowed and must outlive its use.
 */
void pd_config_set_default_path_for_tests(const char *path);

#endif
