/*
 * libFuzzer target for configuration loading (common/config.h). Whatever the
 * file holds, pd_config_load() must either fail with PD_ECONFIG and a
 * one-line message starting with where the problem is, or succeed with every
 * value valid for its key (config.c's invariant: the getters never see a bad
 * value); never crash, leak or hang.
 *
 * Input: byte 0 holds flags, then optional lines, then the file:
 *   bit 0: the next line (up to "\n") is --cluster;
 *   bit 1: the next 1 to 4 lines (bits 2-3, plus one) are overrides "key=value";
 *   the rest is the configuration file, in a memfd read as /proc/self/fd/N
 *   (so no disk I/O), or a file in $TMPDIR where memfds are missing.
 *
 * Seeds and dictionary: PGDRILL_FUZZ_SEEDS=DIR ./fuzz_config writes sample
 * files into DIR, PGDRILL_FUZZ_DICT=FILE writes a libFuzzer dictionary of the
 * keys (from pd_config_help()) and the syntax, then it exits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/config.h"
#include "common/mem.h"

#define MAX_OVERRIDES 4
#define MAX_LINE      256

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef enum key_kind {
    K_STRING,
    K_PATH,
    K_ENUM,
    K_INT,
    K_BOOL,
    K_LIST,
} key_kind;

/*
 * What DESIGN.md and config.h promise about each key; the harness checks a
 * loaded config against it. A key config.c no longer knows is skipped.
 */
static const struct {
    const char *name;
    key_kind kind;
    long min, max;       /* K_INT; min 0 when a default exists */
    const char *choices; /* K_ENUM: "|a|b|" */
} keys[] = {
    {"repo", K_STRING, 0, 0, NULL},
    {"encryption", K_ENUM, 0, 0, "|aes-256-gcm|none|"},
    {"key-file", K_PATH, 0, 0, NULL},
    {"passphrase-file", K_PATH, 0, 0, NULL},
    {"compression", K_ENUM, 0, 0, "|zstd|none|"},
    {"compression-level", K_INT, 1, 19, NULL},
    {"compression-threads", K_INT, 0, 64, NULL},
    {"pg-bin", K_PATH, 0, 0, NULL},
    {"pg-host", K_STRING, 0, 0, NULL},
    {"pg-port", K_INT, 1, 65535, NULL},
    {"pg-user", K_STRING, 0, 0, NULL},
    {"pg-database", K_STRING, 0, 0, NULL},
    {"pg-data", K_PATH, 0, 0, NULL},
    {"s3-endpoint", K_STRING, 0, 0, NULL},
    {"s3-region", K_STRING, 0, 0, NULL},
    {"s3-uri-style", K_ENUM, 0, 0, "|host|path|"},
    {"s3-ca-file", K_PATH, 0, 0, NULL},
    {"s3-verify-tls", K_BOOL, 0, 0, NULL},
    {"s3-credentials-file", K_PATH, 0, 0, NULL},
    {"retention-full", K_INT, 0, 10000, NULL}, /* 0: unset */
    {"retention-days", K_INT, 0, 36500, NULL},
    {"drill-check", K_LIST, 0, 0, NULL},
    {"drill-check-file", K_PATH, 0, 0, NULL},
    {"drill-dir", K_PATH, 0, 0, NULL},
    {"drill-user", K_STRING, 0, 0, NULL},
    {"drill-amcheck", K_ENUM, 0, 0, "|basic|full|off|"},
    {"drill-rto-objective", K_INT, 0, 604800, NULL},
    {"log-level", K_ENUM, 0, 0, "|error|warn|warning|info|debug|"},
};

static int conf_fd = -1;
static char conf_path[64];

static void
die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static void
put_file(const uint8_t *data, size_t len)
{
    if (ftruncate(conf_fd, 0) < 0 || (len > 0 && pwrite(conf_fd, data, len, 0) != (ssize_t)len))
        die("cannot write the configuration file", conf_path);
}

/* Takes the next line of *data into buf (NUL-terminated, cut at MAX_LINE - 1). */
static void
take_line(const uint8_t **data, size_t *size, char buf[MAX_LINE])
{
    const uint8_t *nl = memchr(*data, '\n', *size);
    size_t n = nl ? (size_t)(nl - *data) : *size;

    memcpy(buf, *data, n < MAX_LINE - 1 ? n : MAX_LINE - 1);
    buf[n < MAX_LINE - 1 ? n : MAX_LINE - 1] = '\0';
    *data += nl ? n + 1 : n;
    *size -= nl ? n + 1 : n;
}

static bool
valid_cluster(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 63 || s[0] == '.' || strcmp(s, "global") == 0)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

/* Checks the invariant: every effective value is valid for its key. */
static void
check_config(const pd_config *cfg, const char *cluster)
{
    char src[512];

    if (pd_config_path(cfg) == NULL || strcmp(pd_config_path(cfg), conf_path) != 0)
        die("the config names another file", pd_config_path(cfg));
    if (!valid_cluster(pd_config_cluster(cfg)))
        die("bad cluster name in a loaded config", pd_config_cluster(cfg));
    if (cluster != NULL && strcmp(cluster, pd_config_cluster(cfg)) != 0)
        die("the config is for another cluster than --cluster", pd_config_cluster(cfg));
    for (size_t i = 0; i < PD_ARRAY_LEN(keys); i++) {
        const char *name = keys[i].name, *v;
        const char *const *items;
        char quoted[MAX_LINE + 2];
        long num;

        if (!pd_config_is_key(name))
            continue;
        pd_config_source(cfg, name, src, sizeof(src));
        switch (keys[i].kind) {
        case K_STRING:
        case K_PATH:
        case K_ENUM:
            v = pd_config_get(cfg, name);
            if (v == NULL) {
                if (strcmp(name, "repo") == 0)
                    die("a loaded config has no repo", NULL);
                break;
            }
            if (v[0] == '\0' || strchr(v, '\n') != NULL)
                die("empty or multi-line value", name);
            if (keys[i].kind == K_PATH && v[0] != '/')
                die("path value is not absolute", name);
            snprintf(quoted, sizeof(quoted), "|%s|", v);
            if (keys[i].kind == K_ENUM && strstr(keys[i].choices, quoted) == NULL)
                die("enum value is not one of the choices", name);
            break;
        case K_INT:
            num = pd_config_get_int(cfg, name);
            if (num < keys[i].min || num > keys[i].max)
                die("int value out of range", name);
            break;
        case K_BOOL:
            (void)pd_config_get_bool(cfg, name);
            break;
        case K_LIST:
            for (size_t j = pd_config_get_list(cfg, name, &items); j-- > 0;)
                if (items[j] == NULL || items[j][0] == '\0')
                    die("empty item in a repeatable key", name);
            break;
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pd_config_opts opts = PD_CONFIG_OPTS_INIT;
    pd_config_override ov[MAX_OVERRIDES];
    char cluster[MAX_LINE], lines[MAX_OVERRIDES][MAX_LINE];
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    unsigned flags;
    int rc;

    if (size < 1)
        return -1;
    flags = data[0];
    data++;
    size--;
    if (flags & 1) {
        take_line(&data, &size, cluster);
        opts.cluster = cluster;
    }
    if (flags & 2) {
        for (size_t i = 0; i <= ((flags >> 2) & 3); i++) {
            char *eq;
            take_line(&data, &size, lines[i]);
            eq = strchr(lines[i], '=');
            if (eq != NULL)
                *eq++ = '\0';
            ov[i].key = lines[i];
            ov[i].value = eq != NULL ? eq : "";
            opts.n_overrides++;
        }
        opts.overrides = ov;
    }
    put_file(data, size);
    opts.path = conf_path;

    rc = pd_config_load(&cfg, &opts, &err);
    if (rc == 0) {
        if (cfg == NULL)
            die("success without a config", NULL);
        check_config(cfg, opts.cluster);
    } else {
        if (rc != PD_ECONFIG || err.code != rc || cfg != NULL)
            die("failure must be PD_ECONFIG without a config", err.msg);
        if (strncmp(err.msg, "configuration file \"", 20) != 0 &&
            strncmp(err.msg, "option --", 9) != 0)
            die("the message must start with where the problem is", err.msg);
        if (strpbrk(err.msg, "\r\n") != NULL || strpbrk(err.hint, "\r\n") != NULL)
            die("the message must be one line", err.msg);
    }
    pd_config_free(cfg);
    return 0;
}

/* ---- seeds and dictionary ---- */

static const char *const seeds[] = {
    "\0[global]\nrepo = /var/lib/pgdrill\n\n[main]\npg-data = /var/lib/postgresql/15/main\n",
    "\0; pgdrill.conf\n[global]\nrepo = s3://bucket/prefix\nencryption = aes-256-gcm\n"
    "key-file = /etc/pgdrill/master.key\ncompression = zstd\ncompression-level = 3\n"
    "compression-threads = 2\ns3-endpoint = 127.0.0.1:9000\ns3-region = us-east-1\n"
    "s3-uri-style = path\ns3-verify-tls = no\ns3-ca-file = /etc/ssl/ca.pem\n"
    "s3-credentials-file = /etc/pgdrill/s3.cred\nlog-level = debug\n\n"
    "[main]\npg-bin = /usr/lib/postgresql/15/bin\npg-host = /run/postgresql\npg-port = 5432\n"
    "pg-user = postgres\npg-database = postgres\npg-data = /srv/pg/main\n"
    "retention-full = 2\nretention-days = 30\n"
    "drill-check = select count(*) > 0 from pg_class\ndrill-check = select true\n"
    "drill-check-file = /etc/pgdrill/checks.sql\ndrill-dir = /var/tmp/drills\n"
    "drill-user = pgdrill\ndrill-amcheck = full\ndrill-rto-objective = 3600\n",
    "\0\xEF\xBB\xBF# windows file\r\n[prod-1.eu]\r\nrepo : /r ; inline\r\n  pg-port=6543\r\n",
    "\x01main\n[global]\nrepo = /r\n[main]\n[other]\nrepo = /o\n",
    "\x03main\nrepo=/from/option\n[global]\ndrill-check = a\n[main]\ndrill-check = b\n",
    "\x0erepo=/x\ndrill-check=select 1\npg-port=1\nlog-level=warn\n[global]\n[x]\n",
    "\0[global]\npassphrase-file = /p\nencryption = none\n[a]\nrepo = /a\n[b]\nrepo = /b\n",
};

static void
make_seeds(const char *dir)
{
    for (size_t i = 0; i < PD_ARRAY_LEN(seeds); i++) {
        char path[4096];
        // A seed starts with its flags byte, which may be NUL.
        size_t len = 1 + strlen(seeds[i] + 1);
        FILE *f;

        snprintf(path, sizeof(path), "%s/seed-%02zu", dir, i);
        f = fopen(path, "wb");
        if (f == NULL || fwrite(seeds[i], 1, len, f) != len || fclose(f) != 0)
            die("cannot write a seed file", path);
    }
}

static void
make_dict(const char *path)
{
    static const char *const syntax[] = {
        "[global]", "[main]",  "\\x0a[", "]\\x0a", " = ",         "=",
        ":",        " ; ",     "\\x0a#", "\\x0a;", "\\x0d\\x0a",  "\\xef\\xbb\\xbf",
        "yes",      "no",      "true",   "off",    "aes-256-gcm", "zstd",
        "none",     "host",    "path",   "basic",  "full",        "warning",
        "debug",    "s3://",   "/",      "-1",     "65535",       "9223372036854775808",
        "\\x00",    "\\x0a  ", "\\x09",
    };
    const char *help = pd_config_help();
    FILE *f = fopen(path, "w");

    if (f == NULL)
        die("cannot write the dictionary", path);
    for (size_t i = 0; i < PD_ARRAY_LEN(syntax); i++)
        fprintf(f, "\"%s\"\n", syntax[i]);
    // One key per help line: "  key  meaning".
    for (const char *p = help; *p != '\0';) {
        const char *eol = strchr(p, '\n');
        size_t n;

        p += strspn(p, " ");
        n = strcspn(p, " \n");
        fprintf(f, "\"%.*s\"\n\"\\x0a%.*s = \"\n", (int)n, p, (int)n, p);
        if (eol == NULL)
            break;
        p = eol + 1;
    }
    if (fclose(f) != 0)
        die("cannot write the dictionary", path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seed_dir = getenv("PGDRILL_FUZZ_SEEDS");
    const char *dict = getenv("PGDRILL_FUZZ_DICT");

    (void)argc;
    (void)argv;
    if (seed_dir != NULL || dict != NULL) {
        if (seed_dir != NULL)
            make_seeds(seed_dir);
        if (dict != NULL)
            make_dict(dict);
        exit(0);
    }
    // Only a file we name is read: never /etc/pgdrill or $PGDRILL_CONFIG.
    pd_config_set_default_path_for_tests("/nonexistent/pgdrill-fuzz.conf");
    unsetenv(PD_CONFIG_ENV);
    conf_fd = memfd_create("pgdrill-fuzz-config", MFD_CLOEXEC);
    if (conf_fd >= 0) {
        snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
        if (access(conf_path, R_OK) == 0)
            return 0;
        close(conf_fd);
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(conf_path, sizeof(conf_path), "%s/pgdrill-fuzz-XXXXXX", tmp ? tmp : "/tmp");
    conf_fd = mkstemp(conf_path);
    if (conf_fd < 0)
        die("cannot create a temporary file", conf_path);
    return 0;
}
