/*
 * Configuration loading (see config.h). The invariant: once pd_config_load()
 * returns 0, every value in the config is valid for its key, so the getters
 * never fail and later code never re-checks a value.
 *
 * inih splits "key = value" lines, trims them and drops comments. It reads
 * through our reader function (read_line), which hands it one line at a time
 * from a buffer holding the whole file and on the way:
 *   1. counts lines, so the handler knows the line of each key (Debian's inih
 *      is built without INI_HANDLER_LINENO);
 *   2. refuses a line longer than inih's line buffer, which inih would
 *      silently split into two lines;
 *   3. removes leading whitespace, so an indented line is never taken as the
 *      continuation of the previous value (inih's multi-line mode is on in
 *      the Debian build, and would turn "  pg-port = 1" after "repo = /r"
 *      into a second value of "repo");
 *   4. parses "[section]" lines itself, because inih truncates section names
 *      to 49 bytes and reports nothing for a section that holds no key;
 *   5. reports syntax errors with their cause, where inih gives only a line.
 * Parsing stops at the first error, so the message names the first problem.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mem.h"

#define CLUSTER_NAME_MAX  63
#define CLUSTER_NAME_RULE "1 to 63 letters, digits, \"_\", \".\" and \"-\", not starting with \".\""
#define GLOBAL_SECTION    "global"

typedef enum key_type {
    KT_STRING,
    KT_PATH, /* an absolute path */
    KT_ENUM,
    KT_INT,
    KT_BOOL,
    KT_AGE_LIMITS,  /* WARN[,CRIT] durations, a larger value is worse; or "off" */
    KT_DAYS_LIMITS, /* WARN[,CRIT] days, a smaller value is worse; or "off" */
} key_type;

typedef struct key_def {
    const char *name;
    key_type type;
    const char *def;            /* default as written in a file; NULL when none */
    const char *const *choices; /* KT_ENUM: NULL-terminated */
    long min, max;              /* KT_INT */
    bool repeatable;            /* values accumulate instead of overriding */
    bool required;
    const char *help; /* one line for --help */
} key_def;

static const char *const encryption_choices[] = {"aes-256-gcm", "none", NULL};
static const char *const compression_choices[] = {"zstd", "none", NULL};
static const char *const uri_style_choices[] = {"host", "path", NULL};
static const char *const amcheck_choices[] = {"basic", "full", "off", NULL};
static const char *const notify_on_choices[] = {"always", "failure", NULL};
static const char *const log_level_choices[] = {"error", "warn", "warning", "info", "debug", NULL};

/* The fields of a row of the key table, by type. */
#define STRING_KEY(name, def, help)        name, KT_STRING, def, NULL, 0, 0, false, false, help
#define PATH_KEY(name, def, help)          name, KT_PATH, def, NULL, 0, 0, false, false, help
#define ENUM_KEY(name, def, choices, help) name, KT_ENUM, def, choices, 0, 0, false, false, help
#define INT_KEY(name, def, min, max, help) name, KT_INT, def, NULL, min, max, false, false, help
#define BOOL_KEY(name, def, help)          name, KT_BOOL, def, NULL, 0, 0, false, false, help
#define LIMITS_KEY(name, type, def, help)  name, type, def, NULL, 0, 0, false, false, help

/*
 * The one table of configuration keys (DESIGN.md, "Command line"). The help
 * texts make up "pgdrill --help"; ranges in them must match min and max.
 */
static const key_def keys[] = {
    {"repo", KT_STRING, NULL, NULL, 0, 0, false, true,
     "repository: a directory or s3://bucket/prefix"},
    {ENUM_KEY("encryption", "aes-256-gcm", encryption_choices,
              "aes-256-gcm or none, chosen at init")},
    {PATH_KEY("key-file", NULL, "master key file: 32 random bytes, mode 0600")},
    {PATH_KEY("passphrase-file", NULL,
              "passphrase file instead of key-file (or env PGDRILL_PASSPHRASE)")},
    {ENUM_KEY("compression", "zstd", compression_choices, "zstd or none")},
    {INT_KEY("compression-level", "3", 1, 19, "zstd level, 1 to 19")},
    {INT_KEY("compression-threads", "0", 0, 64, "zstd worker threads, 0 to 64, 0 = automatic")},
    {PATH_KEY("pg-bin", "/usr/lib/postgresql/15/bin", "directory of the PostgreSQL binaries")},
    {STRING_KEY("pg-host", NULL, "PostgreSQL host or socket directory (libpq default)")},
    {INT_KEY("pg-port", "5432", 1, 65535, "PostgreSQL port")},
    {STRING_KEY("pg-user", NULL, "PostgreSQL user (the current user)")},
    {STRING_KEY("pg-database", "postgres", "database pgdrill connects to")},
    {PATH_KEY("pg-data", NULL, "the cluster's data directory")},
    {STRING_KEY("s3-endpoint", NULL, "S3 endpoint, host[:port] or URL")},
    {STRING_KEY("s3-region", "us-east-1", "S3 region")},
    {ENUM_KEY("s3-uri-style", "host", uri_style_choices, "S3 addressing: host or path")},
    {PATH_KEY("s3-ca-file", NULL, "CA certificates for the S3 endpoint")},
    {BOOL_KEY("s3-verify-tls", "yes", "verify the S3 server's certificate: yes or no")},
    {PATH_KEY("s3-credentials-file", NULL,
              "S3 credentials (else env AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")},
    {INT_KEY("retention-full", NULL, 1, 10000, "full backups to keep, 1 to 10000")},
    {INT_KEY("retention-days", NULL, 1, 36500, "days to keep backups, 1 to 36500")},
    {BOOL_KEY("retention-keep-drilled", "yes",
              "keep the newest backup whose last drill passed: yes or no")},
    {INT_KEY("retention-incomplete-grace", "12", 0, 8760,
             "hours before an incomplete backup expires, 0 to 8760")},
    {"drill-check", KT_STRING, NULL, NULL, 0, 0, true, false,
     "SQL returning one row whose first column is true; repeatable"},
    {PATH_KEY("drill-check-file", NULL,
              "file of drill check queries, each ending with ; at a line end")},
    {STRING_KEY("drill-check-database", NULL, "database the drill checks run in (pg-database)")},
    {PATH_KEY("drill-dir", NULL, "where drill scratch instances live")},
    {STRING_KEY("drill-user", NULL, "user running scratch instances when pgdrill runs as root")},
    {ENUM_KEY("drill-amcheck", "basic", amcheck_choices,
              "index checks in a drill: basic, full or off")},
    {INT_KEY("drill-rto-objective", NULL, 1, 604800,
             "recovery time objective of a drill, in seconds")},
    {STRING_KEY("notify-command", NULL,
                "program (and arguments) run after each backup, drill, expire or check")},
    {ENUM_KEY("notify-on", "always", notify_on_choices, "always or failure")},
    {INT_KEY("notify-timeout", "60", 1, 3600, "seconds notify-command may run, 1 to 3600")},
    {ENUM_KEY("log-level", NULL, log_level_choices,
              "error, warn, info or debug (unset: info on a terminal or journald, else warn)")},
    {LIMITS_KEY("alert-backup-age", KT_AGE_LIMITS, "26h,50h",
                "age of the newest complete backup that warns[,is critical]")},
    {LIMITS_KEY("alert-archive-lag", KT_AGE_LIMITS, "1h,4h",
                "age of the newest archived WAL file that warns[,is critical]")},
    {LIMITS_KEY("alert-drill-age", KT_AGE_LIMITS, "8d,15d",
                "age of the newest drill that warns[,is critical]")},
    {LIMITS_KEY("alert-repository-days", KT_DAYS_LIMITS, "7,3",
                "days until the repository is full that warn[,are critical]")},
};

#define N_KEYS PD_ARRAY_LEN(keys)

typedef enum source {
    SRC_DEFAULT = 0,
    SRC_FILE,
    SRC_OPTION,
} source;

/* The effective value of one key. */
typedef struct setting {
    char *value;  /* owned; NULL when unset (the default applies) */
    long num;     /* int and bool keys: the value, or the default */
    source src;   /* for a repeatable key, where the last value came from */
    int line;     /* SRC_FILE: line in the file */
    char **items; /* repeatable keys: every value, owned */
    size_t n_items;
} setting;

struct pd_config {
    char *path; /* NULL when no file was read */
    char *cluster;
    setting settings[N_KEYS];
};

/* A section seen in the file; it may appear more than once. */
typedef struct section {
    char *name;       /* "global" or a cluster name */
    int line[N_KEYS]; /* where each single-valued key was set, 0 when not */
} section;

/* One "key = value" line of the file, validated. */
typedef struct entry {
    size_t section;
    size_t key;
    char *value;
    long num;
    int line;
} entry;

typedef struct parser {
    const char *path;
    const char *buf;
    size_t len;
    size_t pos;
    int lineno; /* of the line last handed to inih */
    long cur;   /* index of the current section, -1 before the first header */
    section *sections;
    size_t n_sections;
    entry *entries;
    size_t n_entries;
    size_t cap_entries;
    bool failed; /* err is set; the reader stops */
    pd_err *err;
} parser;

/* Set by tests only; see pd_config_set_default_path_for_tests(). */
static const char *default_path = PD_CONFIG_DEFAULT_PATH;

static int
find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* The key's index; an unknown key is a programming error. */
static size_t
key_index(const char *name)
{
    int k;

    PD_ASSERT(name != NULL);
    k = find_key(name);
    PD_ASSERT(k >= 0);
    return (size_t)k;
}

bool
pd_config_is_key(const char *key)
{
    return key != NULL && find_key(key) >= 0;
}

/* Letters, digits, "_", "." and "-", not starting with "." (no "..", no hidden names). */
static bool
valid_cluster_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CLUSTER_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* A decimal integer, optionally negative, nothing else (strtol alone accepts " +1"). */
static bool
parse_long(const char *s, long *out)
{
    const char *digits = s[0] == '-' ? s + 1 : s;
    char *end;
    long v;

    if (!isdigit((unsigned char)digits[0]))
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool
parse_bool(const char *s, long *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < PD_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return true;
        }
    }
    return false;
}

/*
 * Checks value for key k. On success stores the number of an int or bool key
 * in *num (0 for other types). On failure sets err, the message starting
 * with where ("configuration file "F" line N" or "option --key").
 */
static int
check_value(size_t k, const char *value, long *num, const char *where, pd_err *err)
{
    const key_def *key = &keys[k];
    char expected[256];
    size_t used = 0;

    *num = 0;
    if (value[0] == '\0')
        return pd_err_set(err, PD_ECONFIG, "%s: empty value for key \"%s\"", where, key->name);
    switch (key->type) {
    case KT_STRING:
        // The repository is the one string key with a shape to check now.
        if (strcmp(key->name, "repo") == 0 && value[0] != '/' && strncmp(value, "s3://", 5) != 0)
            return pd_err_set(err, PD_ECONFIG,
                              "%s: bad value \"%s\" for key \"repo\": expected an absolute "
                              "directory or s3://bucket/prefix",
                              where, value);
        return 0;
    case KT_PATH:
        if (value[0] == '/')
            return 0;
        return pd_err_set(err, PD_ECONFIG,
                          "%s: bad value \"%s\" for key \"%s\": must be an absolute path", where,
                          value, key->name);
    case KT_ENUM:
        expected[0] = '\0';
        for (size_t i = 0; key->choices[i] != NULL; i++) {
            if (strcmp(value, key->choices[i]) == 0)
                return 0;
            if (used < sizeof(expected)) {
                int n = snprintf(expected + used, sizeof(expected) - used, "%s%s",
                                 i > 0 ? ", " : "", key->choices[i]);
                used += n > 0 ? (size_t)n : 0;
            }
        }
        return pd_err_set(err, PD_ECONFIG,
                          "%s: bad value \"%s\" for key \"%s\": expected one of %s", where, value,
                          key->name, expected);
    case KT_INT:
        if (parse_long(value, num) && *num >= key->min && *num <= key->max)
            return 0;
        *num = 0;
        return pd_err_set(err, PD_ECONFIG,
                          "%s: bad value \"%s\" for key \"%s\": expected an integer from %ld "
                          "to %ld",
                          where, value, key->name, key->min, key->max);
    case KT_BOOL:
        if (parse_bool(value, num))
            return 0;
        return pd_err_set(err, PD_ECONFIG,
                          "%s: bad value \"%s\" for key \"%s\": expected yes or no", where, value,
                          key->name);
    case KT_AGE_LIMITS:
    case KT_DAYS_LIMITS: {
        long warn, crit;
        bool days = key->type == KT_DAYS_LIMITS;
        if (pd_config_parse_limits(value, days, &warn, &crit))
            return 0;
        return pd_err_set(err, PD_ECONFIG,
                          "%s: bad value \"%s\" for key \"%s\": expected %s, or off", where, value,
                          key->name,
                          days ? "WARN[,CRIT] days with CRIT at most WARN, e.g. 7,3"
                               : "WARN[,CRIT] durations (s, m, h or d) with CRIT at least WARN, "
                                 "e.g. 26h,50h");
    }
    }
    pd_assert_fail("key type is known", __FILE__, __LINE__);
}

/* "configuration file "F" line N", the start of every message about a line. */
static const char *
file_where(const parser *p, char *buf, size_t bufsize)
{
    snprintf(buf, bufsize, "configuration file \"%s\" line %d", p->path, p->lineno);
    return buf;
}

static int
parse_fail(parser *p, const char *cause)
{
    char where[PD_ERR_MSG_MAX];

    p->failed = true;
    return pd_err_set(p->err, PD_ECONFIG, "%s: %s", file_where(p, where, sizeof(where)), cause);
}

static size_t
find_or_add_section(parser *p, const char *name)
{
    section *s;

    for (size_t i = 0; i < p->n_sections; i++)
        if (strcmp(p->sections[i].name, name) == 0)
            return i;
    // The caller keeps n_sections under PD_CONFIG_MAX_SECTIONS, so this stays cheap.
    p->sections = pd_realloc(p->sections, (p->n_sections + 1) * sizeof(*p->sections));
    s = &p->sections[p->n_sections];
    memset(s, 0, sizeof(*s));
    s->name = pd_strdup(name);
    return p->n_sections++;
}

/*
 * Finds the end of what inih reads from s: the first of chars, or an inline
 * comment (";" after whitespace), or the end of the string. It mirrors inih's
 * own scan so that we and inih agree on every line.
 */
static const char *
scan_like_inih(const char *s, const char *chars)
{
    bool was_space = false;

    while (*s && strchr(chars, *s) == NULL && !(was_space && *s == ';')) {
        was_space = isspace((unsigned char)*s) != 0;
        s++;
    }
    return s;
}

/* A "[name]" line (leading whitespace already removed): sets the current section. */
static int
section_line(parser *p, const char *line)
{
    const char *end = scan_like_inih(line + 1, "]");
    const char *rest;
    char name[CLUSTER_NAME_MAX + 2];
    size_t n;
    bool bad;

    if (*end != ']')
        return parse_fail(p, "syntax error: missing \"]\" after the section name");
    for (rest = end + 1; isspace((unsigned char)*rest); rest++)
        ;
    if (*rest != '\0' && *rest != ';' && *rest != '#')
        return parse_fail(p, "syntax error: unexpected text after \"]\"");
    n = (size_t)(end - (line + 1));
    bad = n >= sizeof(name);
    if (!bad) {
        memcpy(name, line + 1, n);
        name[n] = '\0';
        bad = strcmp(name, GLOBAL_SECTION) != 0 && !valid_cluster_name(name);
    }
    if (bad) {
        char where[PD_ERR_MSG_MAX];
        p->failed = true;
        return pd_err_set(p->err, PD_ECONFIG,
                          "%s: bad section name \"%.*s\": expected [global] or a cluster name "
                          "of " CLUSTER_NAME_RULE,
                          file_where(p, where, sizeof(where)), (int)n, line + 1);
    }
    // A stated limit keeps section lookup cheap on any input.
    if (p->n_sections >= PD_CONFIG_MAX_SECTIONS) {
        char where[PD_ERR_MSG_MAX];
        p->failed = true;
        return pd_err_set(p->err, PD_ECONFIG, "%s: too many sections (more than %d)",
                          file_where(p, where, sizeof(where)), PD_CONFIG_MAX_SECTIONS);
    }
    p->cur = (long)find_or_add_section(p, name);
    return 0;
}

/*
 * inih's reader: copies the next line of the buffer into str (num bytes,
 * inih's line buffer) and returns it, or NULL at the end or after an error.
 */
static char *
read_line(char *str, int num, void *stream)
{
    parser *p = stream;
    const char *start;
    const char *nl;
    size_t n;
    char stop;

    if (p->failed || p->pos >= p->len)
        return NULL;
    start = p->buf + p->pos;
    nl = memchr(start, '\n', p->len - p->pos);
    n = nl != NULL ? (size_t)(nl - start) : p->len - p->pos;
    p->pos += nl != NULL ? n + 1 : n;
    p->lineno++;
    if (n > 0 && start[n - 1] == '\r')
        n--;
    if (memchr(start, '\0', n) != NULL) {
        // inih would see only the text before it.
        parse_fail(p, "syntax error: NUL byte; is this a text file?");
        return NULL;
    }
    PD_ASSERT(num > 1);
    if (n > (size_t)num - 1) {
        char where[PD_ERR_MSG_MAX];
        p->failed = true;
        pd_err_set(p->err, PD_ECONFIG, "%s is too long: more than %d characters",
                   file_where(p, where, sizeof(where)), num - 1);
        return NULL;
    }
    if (p->lineno == 1 && n >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
        start += 3; // UTF-8 byte order mark
        n -= 3;
    }
    while (n > 0 && isspace((unsigned char)*start)) {
        start++;
        n--;
    }
    memcpy(str, start, n);
    str[n] = '\0';

    if (str[0] == '\0' || str[0] == ';' || str[0] == '#')
        return str; // blank or comment
    if (str[0] == '[')
        return section_line(p, str) < 0 ? NULL : str;
    stop = *scan_like_inih(str, "=:");
    if (stop != '=' && stop != ':') {
        parse_fail(p, "syntax error: expected \"[section]\" or \"key = value\"");
        return NULL;
    }
    return str;
}

/* inih's handler, called for each "key = value" line; returns 0 to fail. */
static int
handle_key(void *user, const char *inih_section, const char *name, const char *value)
{
    parser *p = user;
    char where[PD_ERR_MSG_MAX];
    long num;
    int k;
    section *s;
    entry *e;

    (void)inih_section; // truncated by inih; read_line tracks the section
    if (p->failed)
        return 0;
    file_where(p, where, sizeof(where));
    if (name[0] == '\0') {
        parse_fail(p, "syntax error: missing key name before \"=\"");
        return 0;
    }
    if (p->cur < 0) {
        p->failed = true;
        pd_err_set(p->err, PD_ECONFIG, "%s: key \"%s\" is outside any section", where, name);
        pd_err_hint(p->err, "put it under [global] or under a cluster section such as [main]");
        return 0;
    }
    if ((k = find_key(name)) < 0) {
        p->failed = true;
        pd_err_set(p->err, PD_ECONFIG, "%s: unknown key \"%s\"", where, name);
        pd_err_hint(p->err, "check the spelling; \"pgdrill --help\" lists the keys");
        return 0;
    }
    if (check_value((size_t)k, value, &num, where, p->err) < 0) {
        p->failed = true;
        return 0;
    }
    s = &p->sections[p->cur];
    if (!keys[k].repeatable) {
        if (s->line[k] != 0) {
            p->failed = true;
            pd_err_set(p->err, PD_ECONFIG,
                       "%s: duplicate key \"%s\" in section [%s], already set at line %d", where,
                       name, s->name, s->line[k]);
            pd_err_hint(p->err, "keep one of the two lines");
            return 0;
        }
        s->line[k] = p->lineno;
    }
    if (p->n_entries == p->cap_entries) {
        p->cap_entries = p->cap_entries ? 2 * p->cap_entries : 32;
        p->entries = pd_realloc(p->entries, p->cap_entries * sizeof(*p->entries));
    }
    e = &p->entries[p->n_entries++];
    e->section = (size_t)p->cur;
    e->key = (size_t)k;
    e->value = pd_strdup(value);
    e->num = num;
    e->line = p->lineno;
    return 1;
}

static void
parser_free(parser *p)
{
    for (size_t i = 0; i < p->n_sections; i++)
        pd_free(p->sections[i].name);
    pd_free(p->sections);
    for (size_t i = 0; i < p->n_entries; i++)
        pd_free(p->entries[i].value);
    pd_free(p->entries);
}

static int
parse_text(parser *p, const char *path, const char *text, size_t len, pd_err *err)
{
    int rc;

    p->path = path;
    p->buf = text;
    p->len = len;
    p->cur = -1;
    p->err = err;
    rc = ini_parse_stream(read_line, p, handle_key, p);
    if (p->failed)
        return PD_ECONFIG;
    // read_line and handle_key catch every error; this is a safety net.
    if (rc > 0)
        return pd_err_set(err, PD_ECONFIG, "configuration file \"%s\" line %d: syntax error", path,
                          rc);
    if (rc < 0)
        return pd_err_set(err, PD_ECONFIG, "could not parse configuration file \"%s\"", path);
    return 0;
}

/*
 * Reads the whole file into *out (NUL-terminated, *out_len bytes). A missing
 * file sets *found = false and succeeds when may_be_missing.
 */
static int
read_file(const char *path, bool may_be_missing, char **out, size_t *out_len, bool *found,
          pd_err *err)
{
    struct stat st;
    char *buf = NULL;
    size_t cap, len = 0;
    int fd, rc = 0;

    *out = NULL;
    *out_len = 0;
    *found = false;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && may_be_missing)
            return 0;
        return pd_err_sys(err, PD_ECONFIG, "could not read configuration file \"%s\"", path);
    }
    if (fstat(fd, &st) < 0) {
        rc = pd_err_sys(err, PD_ECONFIG, "could not read configuration file \"%s\"", path);
        goto cleanup;
    }
    if (S_ISREG(st.st_mode) && st.st_size > PD_CONFIG_MAX_SIZE)
        goto too_large;
    // Sized from fstat with room for the NUL and one more byte, so that EOF is
    // seen without growing; grown only if the file is not regular or grows as
    // we read, and never beyond one byte more than the limit.
    cap = (S_ISREG(st.st_mode) ? (size_t)st.st_size : 4096) + 2;
    buf = pd_malloc(cap);
    for (;;) {
        ssize_t n;

        if (len + 1 == cap) {
            if (len > PD_CONFIG_MAX_SIZE)
                goto too_large;
            cap = 2 * cap < PD_CONFIG_MAX_SIZE + 2 ? 2 * cap : PD_CONFIG_MAX_SIZE + 2;
            buf = pd_realloc(buf, cap);
        }
        n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pd_err_sys(err, PD_ECONFIG, "could not read configuration file \"%s\"", path);
            goto cleanup;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > PD_CONFIG_MAX_SIZE)
        goto too_large;
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    *found = true;
    buf = NULL;
    goto cleanup;
too_large:
    rc = pd_err_set(err, PD_ECONFIG, "configuration file \"%s\" is too large: more than %d bytes",
                    path, PD_CONFIG_MAX_SIZE);
cleanup:
    pd_free(buf);
    close(fd);
    return rc;
}

/* Appends "a", "b", ... (the cluster sections, in file order) to buf. */
static const char *
list_clusters(const parser *p, char *buf, size_t bufsize)
{
    size_t used = 0;
    bool first = true;

    buf[0] = '\0';
    for (size_t i = 0; i < p->n_sections && used < bufsize; i++) {
        int n;

        if (strcmp(p->sections[i].name, GLOBAL_SECTION) == 0)
            continue;
        n = snprintf(buf + used, bufsize - used, "%s\"%s\"", first ? "" : ", ",
                     p->sections[i].name);
        used += n > 0 ? (size_t)n : 0;
        first = false;
    }
    return buf;
}

/*
 * Chooses the cluster: *index is its section, or -1 when there is none (no
 * file, or only [global] and overrides). *name is borrowed.
 */
static int
choose_cluster(const parser *p, bool have_file, const char *wanted, long *index, const char **name,
               pd_err *err)
{
    char list[512];
    size_t n_clusters = 0;
    long only = -1;

    *index = -1;
    *name = wanted != NULL ? wanted : "main";
    if (!have_file)
        return 0;
    for (size_t i = 0; i < p->n_sections; i++) {
        if (strcmp(p->sections[i].name, GLOBAL_SECTION) == 0)
            continue;
        n_clusters++;
        only = (long)i;
        if (wanted != NULL && strcmp(p->sections[i].name, wanted) == 0) {
            *index = (long)i;
            return 0;
        }
    }
    if (wanted != NULL && n_clusters == 0) {
        pd_err_set(err, PD_ECONFIG,
                   "configuration file \"%s\" has no cluster \"%s\": it has no cluster sections",
                   p->path, wanted);
        return pd_err_hint(err, "add a section [%s]", wanted);
    }
    if (wanted != NULL) {
        pd_err_set(err, PD_ECONFIG,
                   "configuration file \"%s\" has no cluster \"%s\": its clusters are %s", p->path,
                   wanted, list_clusters(p, list, sizeof(list)));
        return pd_err_hint(err, "choose one of them with --cluster, or add a section [%s]", wanted);
    }
    if (n_clusters == 0) {
        pd_err_set(err, PD_ECONFIG, "configuration file \"%s\" has no cluster section", p->path);
        return pd_err_hint(err, "add one, such as [main], with the cluster's settings");
    }
    if (n_clusters > 1)
        return pd_err_set(err, PD_ECONFIG,
                          "configuration file \"%s\" has clusters %s: choose one with --cluster",
                          p->path, list_clusters(p, list, sizeof(list)));
    *index = only;
    *name = p->sections[only].name;
    return 0;
}

static void
set_value(setting *s, const key_def *key, const char *value, long num, source src, int line)
{
    if (key->repeatable) {
        s->items = pd_realloc(s->items, (s->n_items + 1) * sizeof(*s->items));
        s->items[s->n_items++] = pd_strdup(value);
    } else {
        pd_free(s->value);
        s->value = pd_strdup(value);
        s->num = num;
    }
    s->src = src;
    s->line = line;
}

/* Applies [global], then the cluster's section, then the overrides. */
static void
resolve(pd_config *cfg, const parser *p, long cluster, const pd_config_opts *opts)
{
    long global = -1;

    for (size_t i = 0; i < p->n_sections; i++)
        if (strcmp(p->sections[i].name, GLOBAL_SECTION) == 0)
            global = (long)i;
    for (size_t k = 0; k < N_KEYS; k++) {
        long num = 0;
        if (keys[k].def != NULL && (keys[k].type == KT_INT || keys[k].type == KT_BOOL)) {
            bool ok = keys[k].type == KT_INT ? parse_long(keys[k].def, &num)
                                             : parse_bool(keys[k].def, &num);
            PD_ASSERT(ok);
        }
        cfg->settings[k].num = num;
    }
    // Single keys: the cluster's section wins over [global], whatever the order in the file.
    for (int pass = 0; pass < 2; pass++) {
        long want = pass == 0 ? global : cluster;
        for (size_t i = 0; want >= 0 && i < p->n_entries; i++) {
            const entry *e = &p->entries[i];
            if ((long)e->section == want && !keys[e->key].repeatable)
                set_value(&cfg->settings[e->key], &keys[e->key], e->value, e->num, SRC_FILE,
                          e->line);
        }
    }
    // Repeatable keys accumulate in file order.
    for (size_t i = 0; i < p->n_entries; i++) {
        const entry *e = &p->entries[i];
        if (((long)e->section == global || (long)e->section == cluster) && keys[e->key].repeatable)
            set_value(&cfg->settings[e->key], &keys[e->key], e->value, e->num, SRC_FILE, e->line);
    }
    for (size_t i = 0; i < opts->n_overrides; i++) {
        const pd_config_override *o = &opts->overrides[i];
        size_t k = (size_t)find_key(o->key); // checked by check_overrides()
        long num;
        int rc = check_value(k, o->value, &num, "", NULL);
        PD_ASSERT(rc == 0);
        set_value(&cfg->settings[k], &keys[k], o->value, num, SRC_OPTION, 0);
    }
}

static int
check_overrides(const pd_config_opts *opts, pd_err *err)
{
    for (size_t i = 0; i < opts->n_overrides; i++) {
        const pd_config_override *o = &opts->overrides[i];
        char where[128];
        long num;
        int k;

        PD_ASSERT(o->key != NULL && o->value != NULL);
        snprintf(where, sizeof(where), "option --%s", o->key);
        if ((k = find_key(o->key)) < 0) {
            pd_err_set(err, PD_ECONFIG, "%s: unknown key \"%s\"", where, o->key);
            return pd_err_hint(err, "check the spelling; \"pgdrill --help\" lists the keys");
        }
        if (check_value((size_t)k, o->value, &num, where, err) < 0)
            return PD_ECONFIG;
    }
    return 0;
}

static int
check_required(const pd_config *cfg, pd_err *err)
{
    for (size_t k = 0; k < N_KEYS; k++) {
        if (!keys[k].required || cfg->settings[k].value != NULL)
            continue;
        if (cfg->path != NULL)
            return pd_err_set(err, PD_ECONFIG,
                              "configuration file \"%s\": missing required key \"%s\" for cluster "
                              "\"%s\"; add it to section [%s] or [global]",
                              cfg->path, keys[k].name, cfg->cluster, cfg->cluster);
        pd_err_set(err, PD_ECONFIG,
                   "missing required setting \"%s\": pass --%s or use a configuration file",
                   keys[k].name, keys[k].name);
        return pd_err_hint(err, "no configuration file was found at \"%s\"", default_path);
    }
    return 0;
}

int
pd_config_load(pd_config **out, const pd_config_opts *opts, pd_err *err)
{
    static const pd_config_opts no_opts = PD_CONFIG_OPTS_INIT;
    pd_err scratch = PD_ERR_INIT;
    parser p;
    pd_config *cfg = NULL;
    char *text = NULL;
    size_t len = 0;
    const char *path;
    const char *env;
    const char *cluster_name;
    bool found = false;
    bool from_env = false;
    long cluster;
    int rc;

    PD_ASSERT(out != NULL);
    *out = NULL;
    memset(&p, 0, sizeof(p));
    if (err == NULL)
        err = &scratch;
    if (opts == NULL)
        opts = &no_opts;

    if (opts->cluster != NULL &&
        (strcmp(opts->cluster, GLOBAL_SECTION) == 0 || !valid_cluster_name(opts->cluster))) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "option --cluster: bad cluster name \"%s\": expected " CLUSTER_NAME_RULE
                        ", other than \"global\"",
                        opts->cluster);
        goto cleanup;
    }
    if ((rc = check_overrides(opts, err)) < 0)
        goto cleanup;

    path = opts->path;
    if (path == NULL && (env = getenv(PD_CONFIG_ENV)) != NULL && env[0] != '\0') {
        path = env;
        from_env = true;
    }
    if ((rc = read_file(path != NULL ? path : default_path, path == NULL, &text, &len, &found,
                        err)) < 0) {
        if (from_env)
            pd_err_hint(err, "the file is named by the environment variable %s", PD_CONFIG_ENV);
        goto cleanup;
    }
    if (path == NULL)
        path = default_path;
    if (found && (rc = parse_text(&p, path, text, len, err)) < 0)
        goto cleanup;
    p.path = path;
    if ((rc = choose_cluster(&p, found, opts->cluster, &cluster, &cluster_name, err)) < 0)
        goto cleanup;

    cfg = pd_calloc(1, sizeof(*cfg));
    cfg->path = found ? pd_strdup(path) : NULL;
    cfg->cluster = pd_strdup(cluster_name);
    resolve(cfg, &p, cluster, opts);
    if ((rc = check_required(cfg, err)) < 0)
        goto cleanup;
    *out = cfg;
    cfg = NULL;
    rc = 0;
cleanup:
    pd_config_free(cfg);
    parser_free(&p);
    pd_free(text);
    return rc;
}

void
pd_config_free(pd_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t k = 0; k < N_KEYS; k++) {
        pd_free(cfg->settings[k].value);
        for (size_t i = 0; i < cfg->settings[k].n_items; i++)
            pd_free(cfg->settings[k].items[i]);
        pd_free(cfg->settings[k].items);
    }
    pd_free(cfg->path);
    pd_free(cfg->cluster);
    pd_free(cfg);
}

const char *
pd_config_cluster(const pd_config *cfg)
{
    PD_ASSERT(cfg != NULL);
    return cfg->cluster;
}

const char *
pd_config_path(const pd_config *cfg)
{
    PD_ASSERT(cfg != NULL);
    return cfg->path;
}

const char *
pd_config_get(const pd_config *cfg, const char *key)
{
    size_t k = key_index(key);

    PD_ASSERT(cfg != NULL);
    PD_ASSERT(keys[k].type == KT_STRING || keys[k].type == KT_PATH || keys[k].type == KT_ENUM);
    PD_ASSERT(!keys[k].repeatable);
    return cfg->settings[k].value != NULL ? cfg->settings[k].value : keys[k].def;
}

long
pd_config_get_int(const pd_config *cfg, const char *key)
{
    size_t k = key_index(key);

    PD_ASSERT(cfg != NULL);
    PD_ASSERT(keys[k].type == KT_INT);
    return cfg->settings[k].num;
}

bool
pd_config_get_bool(const pd_config *cfg, const char *key)
{
    size_t k = key_index(key);

    PD_ASSERT(cfg != NULL);
    PD_ASSERT(keys[k].type == KT_BOOL);
    return cfg->settings[k].num != 0;
}

/* One duration: digits and an optional unit s, m, h or d (seconds without one). */
static bool
parse_duration(const char *s, size_t len, bool days, long *out)
{
    char buf[32];
    long mult = 1;

    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!days && strchr("smhd", buf[len - 1]) != NULL) {
        mult = buf[len - 1] == 's'   ? 1
               : buf[len - 1] == 'm' ? 60
               : buf[len - 1] == 'h' ? 3600
                                     : 86400;
        buf[--len] = '\0';
    }
    if (!parse_long(buf, out) || *out < 0 || *out > 36500L * 86400 / mult)
        return false;
    *out *= mult;
    return true;
}

bool
pd_config_parse_limits(const char *s, bool days, long *warn, long *crit)
{
    const char *comma = strchr(s, ',');

    *warn = *crit = -1;
    if (strcmp(s, "off") == 0)
        return true;
    if (!parse_duration(s, comma ? (size_t)(comma - s) : strlen(s), days, warn))
        return false;
    if (comma && !parse_duration(comma + 1, strlen(comma + 1), days, crit)) {
        *warn = *crit = -1;
        return false;
    }
    // The critical level lies beyond the warning level in the direction that is worse.
    if (*crit >= 0 && (days ? *crit > *warn : *crit < *warn)) {
        *warn = *crit = -1;
        return false;
    }
    return true;
}

void
pd_config_get_limits(const pd_config *cfg, const char *key, long *warn, long *crit)
{
    size_t k = key_index(key);
    const char *v;
    bool ok;

    PD_ASSERT(cfg != NULL);
    PD_ASSERT(keys[k].type == KT_AGE_LIMITS || keys[k].type == KT_DAYS_LIMITS);
    v = cfg->settings[k].value != NULL ? cfg->settings[k].value : keys[k].def;
    ok = pd_config_parse_limits(v, keys[k].type == KT_DAYS_LIMITS, warn, crit);
    PD_ASSERT(ok); // validated at load
}

size_t
pd_config_get_list(const pd_config *cfg, const char *key, const char *const **out)
{
    size_t k = key_index(key);

    PD_ASSERT(cfg != NULL && out != NULL);
    PD_ASSERT(keys[k].repeatable);
    *out = (const char *const *)cfg->settings[k].items;
    return cfg->settings[k].n_items;
}

const char *
pd_config_source(const pd_config *cfg, const char *key, char *buf, size_t bufsize)
{
    size_t k = key_index(key);
    const setting *s;

    PD_ASSERT(cfg != NULL && buf != NULL && bufsize > 0);
    s = &cfg->settings[k];
    switch (s->src) {
    case SRC_FILE:
        snprintf(buf, bufsize, "file %s line %d", cfg->path, s->line);
        break;
    case SRC_OPTION:
        snprintf(buf, bufsize, "option --%s", keys[k].name);
        break;
    case SRC_DEFAULT:
        snprintf(buf, bufsize, "default");
        break;
    }
    return buf;
}

const char *
pd_config_help(void)
{
    // Built from the table on first use, so it cannot drift from it; --help
    // runs single-threaded.
    static char help[8192];
    size_t used = 0;

    if (help[0] != '\0')
        return help;
    for (size_t k = 0; k < N_KEYS; k++) {
        int n;

        if (keys[k].required)
            n = snprintf(help + used, sizeof(help) - used, "  %-20s %s (required)\n", keys[k].name,
                         keys[k].help);
        else if (keys[k].def != NULL)
            n = snprintf(help + used, sizeof(help) - used, "  %-20s %s (default %s)\n",
                         keys[k].name, keys[k].help, keys[k].def);
        else
            n = snprintf(help + used, sizeof(help) - used, "  %-20s %s\n", keys[k].name,
                         keys[k].help);
        PD_ASSERT(n > 0 && (size_t)n < sizeof(help) - used);
        used += (size_t)n;
    }
    return help;
}

void
pd_config_set_default_path_for_tests(const char *path)
{
    default_path = path != NULL ? path : PD_CONFIG_DEFAULT_PATH;
}
