/*
 * Unit tests of common/config: precedence ([global] < cluster section <
 * option), cluster choice, where the file comes from, and every error, each
 * checked for PD_ECONFIG and a message naming the file, the line and the key.
 * Files are written to a private temporary directory, removed at the end;
 * the default path is pointed there so /etc never matters.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/err.h"
#include "common/mem.h"

#define MAX_FILES 64

static char tmpdir[] = "/tmp/pgdrill-test-config-XXXXXX";
static char missing_path[256]; /* never created */
static char dir_path[256];     /* a directory, so it cannot be read as a file */
static char files[MAX_FILES][256];
static size_t n_files;

static int
group_setup(void **state)
{
    (void)state;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(missing_path, sizeof(missing_path), "%s/absent.conf", tmpdir);
    snprintf(dir_path, sizeof(dir_path), "%s/a-directory.conf", tmpdir);
    if (mkdir(dir_path, 0700) < 0)
        return -1;
    pd_config_set_default_path_for_tests(missing_path);
    unsetenv(PD_CONFIG_ENV);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_files; i++)
        unlink(files[i]);
    rmdir(dir_path);
    rmdir(tmpdir);
    pd_config_set_default_path_for_tests(NULL);
    return 0;
}

/* Writes len bytes of text to a new file in tmpdir; returns its path. */
static const char *
write_bytes(const char *text, size_t len)
{
    char *path;
    int fd;

    assert_true(n_files < MAX_FILES);
    path = files[n_files];
    snprintf(path, sizeof(files[0]), "%s/pgdrill-XXXXXX", tmpdir);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    n_files++;
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return path;
}

static const char *
write_conf(const char *text)
{
    return write_bytes(text, strlen(text));
}

static int
load(pd_config **cfg, const char *path, const char *cluster, const pd_config_override *ov,
     size_t n_ov, pd_err *err)
{
    pd_config_opts opts = PD_CONFIG_OPTS_INIT;

    opts.path = path;
    opts.cluster = cluster;
    opts.overrides = ov;
    opts.n_overrides = n_ov;
    return pd_config_load(cfg, &opts, err);
}

/* Asserts that msg contains "line N" not followed by another digit. */
static void
assert_line(const char *msg, int line)
{
    char want[32];
    const char *at;

    snprintf(want, sizeof(want), "line %d", line);
    for (at = strstr(msg, want); at != NULL; at = strstr(at + 1, want))
        if (at[strlen(want)] < '0' || at[strlen(want)] > '9')
            return;
    fail_msg("\"%s\" not in \"%s\"", want, msg);
}

static void
assert_contains(const char *msg, const char *part)
{
    if (strstr(msg, part) == NULL)
        fail_msg("\"%s\" not in \"%s\"", part, msg);
}

/* Asserts a failed load: PD_ECONFIG, no config, and the message parts. */
static void
assert_config_error(int rc, pd_config *cfg, const pd_err *err, const char *path, int line,
                    const char *key)
{
    char quoted[128];

    assert_int_equal(rc, PD_ECONFIG);
    assert_int_equal(err->code, PD_ECONFIG);
    assert_null(cfg);
    if (path != NULL)
        assert_contains(err->msg, path);
    if (line > 0)
        assert_line(err->msg, line);
    if (key != NULL) {
        snprintf(quoted, sizeof(quoted), "\"%s\"", key);
        assert_contains(err->msg, quoted);
    }
    // One line, no final period.
    assert_null(strchr(err->msg, '\n'));
    assert_true(err->msg[0] != '\0' && err->msg[strlen(err->msg) - 1] != '.');
}

/* Writes text, loads it (cluster may be NULL) and expects an error at line in key. */
static void
expect_file_error(const char *text, const char *cluster, int line, const char *key,
                  const char *part)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *path = write_conf(text);
    int rc = load(&cfg, path, cluster, NULL, 0, &err);

    assert_config_error(rc, cfg, &err, path, line, key);
    if (part != NULL)
        assert_contains(err.msg, part);
}

static void
assert_source(const pd_config *cfg, const char *key, const char *want)
{
    char buf[512];

    assert_string_equal(pd_config_source(cfg, key, buf, sizeof(buf)), want);
}

static void
assert_source_line(const pd_config *cfg, const char *key, const char *path, int line)
{
    char want[512];

    snprintf(want, sizeof(want), "file %s line %d", path, line);
    assert_source(cfg, key, want);
}

static void
test_config_global_cluster_override_order(void **state)
{
    // The cluster's section wins over [global] whichever comes first in the file.
    const char *path = write_conf("[main]\n"
                                  "repo = /backup/main\n"
                                  "pg-port = 5434\n"
                                  "\n"
                                  "[global]\n"
                                  "repo = /backup/global\n"
                                  "pg-port = 5433\n"
                                  "compression-level = 7\n"
                                  "log-level = debug\n");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, NULL, NULL, 0, &err), 0);
    assert_string_equal(pd_config_cluster(cfg), "main");
    assert_string_equal(pd_config_path(cfg), path);
    assert_string_equal(pd_config_get(cfg, "repo"), "/backup/main");
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 5434);
    assert_source_line(cfg, "pg-port", path, 3);
    assert_int_equal(pd_config_get_int(cfg, "compression-level"), 7);
    assert_source_line(cfg, "compression-level", path, 8);
    assert_string_equal(pd_config_get(cfg, "log-level"), "debug");
    // Defaults.
    assert_string_equal(pd_config_get(cfg, "encryption"), "aes-256-gcm");
    assert_string_equal(pd_config_get(cfg, "compression"), "zstd");
    assert_int_equal(pd_config_get_int(cfg, "compression-threads"), 0);
    assert_string_equal(pd_config_get(cfg, "pg-bin"), "/usr/lib/postgresql/15/bin");
    assert_string_equal(pd_config_get(cfg, "pg-database"), "postgres");
    assert_string_equal(pd_config_get(cfg, "s3-region"), "us-east-1");
    assert_string_equal(pd_config_get(cfg, "s3-uri-style"), "host");
    assert_true(pd_config_get_bool(cfg, "s3-verify-tls"));
    assert_string_equal(pd_config_get(cfg, "drill-amcheck"), "basic");
    assert_null(pd_config_get(cfg, "pg-host"));
    assert_null(pd_config_get(cfg, "key-file"));
    assert_int_equal(pd_config_get_int(cfg, "retention-full"), 0);
    assert_int_equal(pd_config_get_int(cfg, "drill-rto-objective"), 0);
    assert_source(cfg, "pg-database", "default");
    assert_source(cfg, "retention-days", "default");
    pd_config_free(cfg);
}

static void
test_config_command_line_override_wins(void **state)
{
    const char *path = write_conf("[global]\n"
                                  "pg-port = 5433\n"
                                  "[main]\n"
                                  "repo = /backup/main\n"
                                  "pg-port = 5434\n"
                                  "s3-verify-tls = yes\n");
    const pd_config_override ov[] = {
        {"pg-port", "6000"},      {"repo", "s3://bucket/prefix"},
        {"pg-port", "6001"}, // a later override wins
        {"s3-verify-tls", "off"}, {"retention-full", "4"},
    };
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, NULL, ov, PD_ARRAY_LEN(ov), &err), 0);
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 6001);
    assert_source(cfg, "pg-port", "option --pg-port");
    assert_string_equal(pd_config_get(cfg, "repo"), "s3://bucket/prefix");
    assert_false(pd_config_get_bool(cfg, "s3-verify-tls"));
    assert_int_equal(pd_config_get_int(cfg, "retention-full"), 4);
    assert_source(cfg, "retention-full", "option --retention-full");
    pd_config_free(cfg);
}

static void
test_config_one_cluster_implicit(void **state)
{
    const char *path = write_conf("# a comment\n"
                                  "[global]\n"
                                  "repo = /backup\n"
                                  "[prod-15.a_b]\n"
                                  "pg-port = 5440\n");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, NULL, NULL, 0, &err), 0);
    assert_string_equal(pd_config_cluster(cfg), "prod-15.a_b");
    assert_string_equal(pd_config_get(cfg, "repo"), "/backup");
    assert_source_line(cfg, "repo", path, 3);
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 5440);
    pd_config_free(cfg);
}

static void
test_config_cluster_choice(void **state)
{
    const char *path = write_conf("[global]\n"
                                  "repo = /backup\n"
                                  "[a]\n"
                                  "pg-port = 5441\n"
                                  "[b]\n"
                                  "pg-port = 5442\n"
                                  "pg-data = /srv/b\n");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, "b", NULL, 0, &err), 0);
    assert_string_equal(pd_config_cluster(cfg), "b");
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 5442);
    assert_string_equal(pd_config_get(cfg, "pg-data"), "/srv/b");
    pd_config_free(cfg);
    cfg = NULL;
    assert_int_equal(load(&cfg, path, "a", NULL, 0, &err), 0);
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 5441);
    assert_null(pd_config_get(cfg, "pg-data"));
    pd_config_free(cfg);
}

static void
test_config_env_path(void **state)
{
    const char *path = write_conf("[main]\nrepo = /from/env\n");
    const char *other = write_conf("[main]\nrepo = /from/option\n");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    (void)state;
    assert_int_equal(setenv(PD_CONFIG_ENV, path, 1), 0);
    assert_int_equal(load(&cfg, NULL, NULL, NULL, 0, &err), 0);
    assert_string_equal(pd_config_path(cfg), path);
    assert_string_equal(pd_config_get(cfg, "repo"), "/from/env");
    pd_config_free(cfg);
    cfg = NULL;

    // --config wins over the environment.
    assert_int_equal(load(&cfg, other, NULL, NULL, 0, &err), 0);
    assert_string_equal(pd_config_get(cfg, "repo"), "/from/option");
    pd_config_free(cfg);
    cfg = NULL;

    // A file named by the environment must exist.
    assert_int_equal(setenv(PD_CONFIG_ENV, missing_path, 1), 0);
    rc = load(&cfg, NULL, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, missing_path, 0, NULL);
    assert_contains(err.msg, "could not read configuration file");
    assert_contains(err.msg, "no such file or directory");
    assert_contains(err.hint, PD_CONFIG_ENV);

    // An empty variable counts as unset: the (missing) default path applies.
    assert_int_equal(setenv(PD_CONFIG_ENV, "", 1), 0);
    rc = load(&cfg, NULL, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "repo");
    assert_int_equal(unsetenv(PD_CONFIG_ENV), 0);
}

static void
test_config_default_path_missing(void **state)
{
    const pd_config_override ov[] = {{"repo", "/backup"}};
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, NULL, NULL, ov, 1, &err), 0);
    assert_null(pd_config_path(cfg));
    assert_string_equal(pd_config_cluster(cfg), "main");
    assert_string_equal(pd_config_get(cfg, "repo"), "/backup");
    pd_config_free(cfg);
    cfg = NULL;

    // Any valid --cluster is accepted when no file was read.
    assert_int_equal(load(&cfg, NULL, "db2", ov, 1, &err), 0);
    assert_string_equal(pd_config_cluster(cfg), "db2");
    pd_config_free(cfg);
}

static void
test_config_default_path_used(void **state)
{
    const char *path = write_conf("[main]\nrepo = /from/default\n");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    pd_config_set_default_path_for_tests(path);
    assert_int_equal(pd_config_load(&cfg, NULL, &err), 0);
    assert_string_equal(pd_config_path(cfg), path);
    assert_string_equal(pd_config_get(cfg, "repo"), "/from/default");
    pd_config_free(cfg);
    pd_config_set_default_path_for_tests(missing_path);
}

static void
test_config_default_path_unreadable(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    (void)state;
    pd_config_set_default_path_for_tests(dir_path);
    rc = pd_config_load(&cfg, NULL, &err);
    pd_config_set_default_path_for_tests(missing_path);
    assert_config_error(rc, cfg, &err, dir_path, 0, NULL);
    assert_contains(err.msg, "could not read configuration file");
    assert_contains(err.msg, "is a directory");
}

static void
test_config_repeatable_key(void **state)
{
    const char *path = write_conf("[global]\n"
                                  "repo = /backup\n"
                                  "drill-check = select true\n"
                                  "[a]\n"
                                  "drill-check = select 1 = 1\n"
                                  "drill-check = select count(*) > 0 from t\n"
                                  "[b]\n"
                                  "drill-check = select false\n");
    const pd_config_override ov[] = {{"drill-check", "select 2 > 1"}};
    const char *const *list = NULL;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, "a", ov, 1, &err), 0);
    assert_int_equal(pd_config_get_list(cfg, "drill-check", &list), 4);
    assert_string_equal(list[0], "select true");
    assert_string_equal(list[1], "select 1 = 1");
    assert_string_equal(list[2], "select count(*) > 0 from t");
    assert_string_equal(list[3], "select 2 > 1");
    assert_source(cfg, "drill-check", "option --drill-check");
    pd_config_free(cfg);
    cfg = NULL;

    path = write_conf("[main]\nrepo = /backup\n");
    assert_int_equal(load(&cfg, path, NULL, NULL, 0, &err), 0);
    assert_int_equal(pd_config_get_list(cfg, "drill-check", &list), 0);
    assert_null(list);
    pd_config_free(cfg);
}

static void
test_config_lexical_forms(void **state)
{
    // BOM, CRLF, indentation (never a continuation line), comments, ":" and
    // no final newline.
    static const char text[] = "\xEF\xBB\xBF"
                               "; comment\r\n"
                               "  [main]  ; trailing comment\r\n"
                               "    repo = /backup ; inline comment\r\n"
                               "    pg-port = 5439\r\n"
                               "\t# another comment\n"
                               "\tpg-host: /run/postgresql\n"
                               "s3-endpoint = http://127.0.0.1:9000\n"
                               "pg-user = drill;user";
    const char *path = write_conf(text);
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, NULL, NULL, 0, &err), 0);
    assert_string_equal(pd_config_get(cfg, "repo"), "/backup");
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 5439);
    assert_source_line(cfg, "pg-port", path, 4);
    assert_string_equal(pd_config_get(cfg, "pg-host"), "/run/postgresql");
    assert_string_equal(pd_config_get(cfg, "s3-endpoint"), "http://127.0.0.1:9000");
    assert_string_equal(pd_config_get(cfg, "pg-user"), "drill;user");
    pd_config_free(cfg);
}

static void
test_config_bool_spellings(void **state)
{
    static const struct {
        const char *text;
        bool value;
    } cases[] = {{"yes", true},  {"no", false}, {"true", true}, {"false", false}, {"on", true},
                 {"off", false}, {"1", true},   {"0", false},   {"YES", true},    {"False", false}};

    (void)state;
    for (size_t i = 0; i < PD_ARRAY_LEN(cases); i++) {
        const pd_config_override ov[] = {{"repo", "/r"}, {"s3-verify-tls", cases[i].text}};
        pd_err err = PD_ERR_INIT;
        pd_config *cfg = NULL;

        assert_int_equal(load(&cfg, NULL, NULL, ov, 2, &err), 0);
        assert_int_equal(pd_config_get_bool(cfg, "s3-verify-tls"), cases[i].value);
        pd_config_free(cfg);
    }
}

static void
test_config_int_limits(void **state)
{
    const char *path = write_conf("[main]\n"
                                  "repo = /r\n"
                                  "pg-port = 65535\n"
                                  "compression-level = 1\n"
                                  "compression-threads = 64\n"
                                  "drill-rto-objective = 604800\n"
                                  "retention-days = 0036500\n");
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    (void)state;
    assert_int_equal(load(&cfg, path, NULL, NULL, 0, &err), 0);
    assert_int_equal(pd_config_get_int(cfg, "pg-port"), 65535);
    assert_int_equal(pd_config_get_int(cfg, "compression-level"), 1);
    assert_int_equal(pd_config_get_int(cfg, "compression-threads"), 64);
    assert_int_equal(pd_config_get_int(cfg, "drill-rto-objective"), 604800);
    assert_int_equal(pd_config_get_int(cfg, "retention-days"), 36500);
    pd_config_free(cfg);
}

static void
test_config_is_key_and_help(void **state)
{
    const char *help = pd_config_help();

    (void)state;
    assert_true(pd_config_is_key("repo"));
    assert_true(pd_config_is_key("drill-check"));
    assert_false(pd_config_is_key("rep"));
    assert_false(pd_config_is_key("cluster"));
    assert_false(pd_config_is_key(NULL));
    assert_contains(help, "  repo ");
    assert_contains(help, "(required)");
    assert_contains(help, "pg-port");
    assert_contains(help, "(default 5432)");
    assert_contains(help, "log-level");
    assert_ptr_equal(help, pd_config_help());
    // One line per key, none wider than 100 columns.
    for (const char *line = help; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl);
        assert_true(nl - line <= 100);
        line = nl + 1;
    }
}

static void
test_config_unknown_key(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *path = write_conf("[global]\n"
                                  "repo = /r\n"
                                  "[main]\n"
                                  "pg-port = 5432\n"
                                  "\n"
                                  "\n"
                                  "rep = /x\n");
    int rc = load(&cfg, path, NULL, NULL, 0, &err);

    (void)state;
    assert_config_error(rc, cfg, &err, path, 7, "rep");
    assert_contains(err.msg, "unknown key");
    assert_string_equal(err.hint, "check the spelling; \"pgdrill --help\" lists the keys");
}

static void
test_config_bad_int(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\n\n\n\n\n\n\npg-port = abc\n", NULL, 9, "pg-port",
                      "bad value \"abc\" for key \"pg-port\": expected an integer from 1 to 65535");
    expect_file_error("[main]\nrepo = /r\npg-port = 5432x\n", NULL, 3, "pg-port", NULL);
    expect_file_error("[main]\nrepo = /r\npg-port = +5432\n", NULL, 3, "pg-port", NULL);
    expect_file_error("[main]\nrepo = /r\npg-port = 0x10\n", NULL, 3, "pg-port", NULL);
    expect_file_error("[main]\nrepo = /r\ncompression-level = 3.5\n", NULL, 3, "compression-level",
                      NULL);
}

static void
test_config_int_out_of_range(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\npg-port = 65536\n", NULL, 3, "pg-port",
                      "expected an integer from 1 to 65535");
    expect_file_error("[main]\nrepo = /r\npg-port = 0\n", NULL, 3, "pg-port", NULL);
    expect_file_error("[main]\nrepo = /r\npg-port = -1\n", NULL, 3, "pg-port", NULL);
    expect_file_error("[main]\nrepo = /r\ncompression-level = 20\n", NULL, 3, "compression-level",
                      "from 1 to 19");
    expect_file_error("[main]\nrepo = /r\ncompression-threads = 65\n", NULL, 3,
                      "compression-threads", "from 0 to 64");
    expect_file_error("[main]\nrepo = /r\nretention-days = 99999999999999999999999\n", NULL, 3,
                      "retention-days", "from 1 to 36500");
    expect_file_error("[main]\nrepo = /r\ndrill-rto-objective = 604801\n", NULL, 3,
                      "drill-rto-objective", NULL);
}

static void
test_config_bad_enum(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\n\ncompression = gzip\n", NULL, 4, "compression",
                      "bad value \"gzip\" for key \"compression\": expected one of zstd, none");
    expect_file_error("[main]\nrepo = /r\nencryption = aes\n", NULL, 3, "encryption",
                      "expected one of aes-256-gcm, none");
    expect_file_error("[main]\nrepo = /r\nlog-level = verbose\n", NULL, 3, "log-level",
                      "expected one of error, warn, warning, info, debug");
    expect_file_error("[main]\nrepo = /r\ns3-uri-style = virtual\n", NULL, 3, "s3-uri-style", NULL);
    expect_file_error("[main]\nrepo = /r\ndrill-amcheck = Full\n", NULL, 3, "drill-amcheck",
                      "expected one of basic, full, off");
}

static void
test_config_bad_bool(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\ns3-verify-tls = maybe\n", NULL, 3, "s3-verify-tls",
                      "bad value \"maybe\" for key \"s3-verify-tls\": expected yes or no");
}

static void
test_config_relative_path(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\nkey-file = keys/master.key\n", NULL, 3, "key-file",
                      "bad value \"keys/master.key\" for key \"key-file\": must be an absolute "
                      "path");
    expect_file_error("[main]\nrepo = /r\npg-bin = ./bin\n", NULL, 3, "pg-bin", "absolute path");
    expect_file_error("[main]\nrepo = /r\ndrill-dir = ~/drills\n", NULL, 3, "drill-dir", NULL);
}

static void
test_config_empty_value(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\npg-host =\n", NULL, 3, "pg-host", "empty value");
    expect_file_error("[main]\nrepo =   ; nothing\n", NULL, 2, "repo", "empty value");
    expect_file_error("[main]\nrepo = /r\ndrill-check = \n", NULL, 3, "drill-check", "empty value");
}

static void
test_config_duplicate_key(void **state)
{
    (void)state;
    expect_file_error("[main]\n"
                      "repo = /r\n"
                      "pg-port = 5432\n"
                      "[global]\n"
                      "pg-port = 5433\n" // another section: fine
                      "[main]\n"
                      "pg-port = 5434\n",
                      NULL, 7, "pg-port", "line 3");
    expect_file_error("[main]\nrepo = /r\nrepo = /s\n", NULL, 3, "repo",
                      "duplicate key \"repo\" in section [main], already set at line 2");
}

static void
test_config_key_outside_section(void **state)
{
    (void)state;
    expect_file_error("# leading comment\nrepo = /r\n[main]\n", NULL, 2, "repo",
                      "outside any section");
}

static void
test_config_syntax_error(void **state)
{
    (void)state;
    expect_file_error("[main]\nrepo = /r\njust some words\n", NULL, 3, NULL, "syntax error");
    expect_file_error("[main\nrepo = /r\n", NULL, 1, NULL, "syntax error: missing \"]\"");
    expect_file_error("[main] extra\nrepo = /r\n", NULL, 1, NULL, "syntax error");
    expect_file_error("[main]\nrepo = /r\n = value\n", NULL, 3, NULL, "syntax error");
    expect_file_error("[main]\nrepo ; comment = /r\n", NULL, 2, NULL, "syntax error");
    // Only the first error is reported.
    expect_file_error("[main]\nbad line\nrep = /x\n", NULL, 2, NULL, "syntax error");
    // A NUL byte would hide the rest of the line from inih.
    {
        static const char text[] = "[main]\nrepo = /r\0/s\n";
        pd_err err = PD_ERR_INIT;
        pd_config *cfg = NULL;
        const char *path = write_bytes(text, sizeof(text) - 1);
        int rc = load(&cfg, path, NULL, NULL, 0, &err);

        assert_config_error(rc, cfg, &err, path, 2, NULL);
        assert_contains(err.msg, "NUL");
    }
}

static void
test_config_bad_section_name(void **state)
{
    char text[256];

    (void)state;
    expect_file_error("[main]\nrepo = /r\n[my cluster]\n", NULL, 3, NULL,
                      "bad section name \"my cluster\"");
    expect_file_error("[.hidden]\nrepo = /r\n", NULL, 1, NULL, "bad section name");
    expect_file_error("[../etc]\nrepo = /r\n", NULL, 1, NULL, "bad section name");
    expect_file_error("[]\nrepo = /r\n", NULL, 1, NULL, "bad section name");
    // 63 characters is the longest name (inih alone would cut it to 49).
    snprintf(text, sizeof(text), "[%.63s]\nrepo = /r\n",
             "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnop");
    {
        pd_err err = PD_ERR_INIT;
        pd_config *cfg = NULL;

        assert_int_equal(load(&cfg, write_conf(text), NULL, NULL, 0, &err), 0);
        assert_int_equal(strlen(pd_config_cluster(cfg)), 63);
        pd_config_free(cfg);
    }
    snprintf(text, sizeof(text), "[%.64s]\nrepo = /r\n",
             "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnop");
    expect_file_error(text, NULL, 1, NULL, "1 to 63 letters");
}

static void
test_config_overlong_line(void **state)
{
    char text[512];
    char value[301];

    (void)state;
    memset(value, 'x', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    snprintf(text, sizeof(text), "[main]\nrepo = /r\ndrill-check = select '%s'\n", value);
    expect_file_error(text, NULL, 3, NULL, "line 3 is too long");

    // The longest line that fits: 199 characters.
    memset(value, 'x', sizeof(value));
    snprintf(text, sizeof(text), "[main]\nrepo = /%.*s\n", 199 - 8, value);
    {
        pd_err err = PD_ERR_INIT;
        pd_config *cfg = NULL;

        assert_int_equal(load(&cfg, write_conf(text), NULL, NULL, 0, &err), 0);
        assert_int_equal(strlen(pd_config_get(cfg, "repo")), 199 - 7);
        pd_config_free(cfg);
    }
    snprintf(text, sizeof(text), "[main]\nrepo = /%.*s\n", 200 - 8, value);
    expect_file_error(text, NULL, 2, NULL, "too long");
}

static void
test_config_too_large(void **state)
{
    size_t len = PD_CONFIG_MAX_SIZE + 1;
    char *text = malloc(len);
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *path;
    int rc;

    (void)state;
    assert_non_null(text);
    memset(text, '\n', len);
    memcpy(text, "[main]\nrepo = /r\n", 17);
    path = write_bytes(text, len);
    free(text);
    rc = load(&cfg, path, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, path, 0, NULL);
    assert_contains(err.msg, "too large");
}

static void
test_config_unreadable_file(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    (void)state;
    rc = load(&cfg, dir_path, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, dir_path, 0, NULL);
    assert_contains(err.msg, "could not read configuration file");
    assert_contains(err.msg, ": is a directory");

    rc = load(&cfg, missing_path, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, missing_path, 0, NULL);
    assert_contains(err.msg, ": no such file or directory");
}

static void
test_config_two_clusters_without_choice(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *path = write_conf("[global]\nrepo = /r\n[a]\n[b]\npg-port = 1\n");
    char want[512];
    int rc = load(&cfg, path, NULL, NULL, 0, &err);

    (void)state;
    assert_config_error(rc, cfg, &err, path, 0, NULL);
    snprintf(want, sizeof(want),
             "configuration file \"%s\" has clusters \"a\", \"b\": choose one with --cluster",
             path);
    assert_string_equal(err.msg, want);
}

static void
test_config_unknown_cluster(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *path = write_conf("[global]\nrepo = /r\n[a]\n[b]\n");
    int rc = load(&cfg, path, "c", NULL, 0, &err);

    (void)state;
    assert_config_error(rc, cfg, &err, path, 0, "c");
    assert_contains(err.msg, "\"a\", \"b\"");
    // "global" is not a cluster.
    rc = load(&cfg, path, "global", NULL, 0, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "global");
    assert_contains(err.msg, "option --cluster");
    rc = load(&cfg, path, "../x", NULL, 0, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "../x");
    // No cluster sections at all.
    path = write_conf("[global]\nrepo = /r\n");
    rc = load(&cfg, path, "c", NULL, 0, &err);
    assert_config_error(rc, cfg, &err, path, 0, "c");
    rc = load(&cfg, path, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, path, 0, NULL);
    assert_contains(err.msg, "has no cluster section");
}

static void
test_config_missing_repo(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    const char *path = write_conf("[global]\npg-port = 5433\n[db1]\npg-port = 5434\n");
    char want[512];
    int rc = load(&cfg, path, NULL, NULL, 0, &err);

    (void)state;
    assert_config_error(rc, cfg, &err, path, 0, "repo");
    snprintf(want, sizeof(want),
             "configuration file \"%s\": missing required key \"repo\" for cluster \"db1\"; add "
             "it to section [db1] or [global]",
             path);
    assert_string_equal(err.msg, want);

    // No file at all.
    rc = load(&cfg, NULL, NULL, NULL, 0, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "repo");
    assert_string_equal(err.msg,
                        "missing required setting \"repo\": pass --repo or use a configuration "
                        "file");
}

static void
test_config_bad_override_value(void **state)
{
    const char *path = write_conf("[main]\nrepo = /r\n");
    const pd_config_override port[] = {{"pg-port", "abc"}};
    const pd_config_override path_ov[] = {{"key-file", "master.key"}};
    const pd_config_override empty[] = {{"repo", ""}};
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    (void)state;
    rc = load(&cfg, path, NULL, port, 1, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "pg-port");
    assert_string_equal(err.msg, "option --pg-port: bad value \"abc\" for key \"pg-port\": "
                                 "expected an integer from 1 to 65535");
    rc = load(&cfg, path, NULL, path_ov, 1, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "key-file");
    assert_contains(err.msg, "option --key-file: ");
    assert_contains(err.msg, "absolute path");
    rc = load(&cfg, NULL, NULL, empty, 1, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "repo");
    assert_contains(err.msg, "option --repo: empty value");
}

static void
test_config_unknown_override_key(void **state)
{
    const pd_config_override ov[] = {{"repo", "/r"}, {"pg-prot", "5432"}};
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    int rc;

    (void)state;
    rc = load(&cfg, NULL, NULL, ov, 2, &err);
    assert_config_error(rc, cfg, &err, NULL, 0, "pg-prot");
    assert_contains(err.msg, "option --pg-prot: unknown key");
    assert_contains(err.hint, "pgdrill --help");
}

static void
test_config_error_in_other_cluster(void **state)
{
    // Every section is validated, not only the chosen one.
    (void)state;
    expect_file_error("[a]\nrepo = /r\n[b]\npg-port = none\n", "a", 4, "pg-port", NULL);
}

/* Alert thresholds: "WARN[,CRIT]" durations or days, "off", defaults. */
static void
test_config_alert_limits(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;
    long warn, crit;

    (void)state;
    assert_true(pd_config_parse_limits("26h,50h", false, &warn, &crit));
    assert_int_equal(warn, 26 * 3600);
    assert_int_equal(crit, 50 * 3600);
    assert_true(pd_config_parse_limits("90", false, &warn, &crit));
    assert_int_equal(warn, 90);
    assert_int_equal(crit, -1);
    assert_true(pd_config_parse_limits("15m,8d", false, &warn, &crit));
    assert_int_equal(warn, 900);
    assert_int_equal(crit, 8 * 86400);
    assert_true(pd_config_parse_limits("30s,30s", false, &warn, &crit));
    assert_int_equal(crit, 30);
    assert_true(pd_config_parse_limits("off", false, &warn, &crit));
    assert_int_equal(warn, -1);
    assert_int_equal(crit, -1);
    assert_true(pd_config_parse_limits("14,3", true, &warn, &crit));
    assert_int_equal(warn, 14);
    assert_int_equal(crit, 3);
    // Critical must be worse than warning: later for ages, sooner for days.
    assert_false(pd_config_parse_limits("50h,26h", false, &warn, &crit));
    assert_int_equal(warn, -1);
    assert_false(pd_config_parse_limits("3,14", true, &warn, &crit));
    // Units are for durations only; no signs, blanks, empty parts or other units.
    assert_false(pd_config_parse_limits("7d,3d", true, &warn, &crit));
    assert_false(pd_config_parse_limits("-1h", false, &warn, &crit));
    assert_false(pd_config_parse_limits("1h,", false, &warn, &crit));
    assert_false(pd_config_parse_limits(",1h", false, &warn, &crit));
    assert_false(pd_config_parse_limits("1w", false, &warn, &crit));
    assert_false(pd_config_parse_limits("1h, 2h", false, &warn, &crit));
    assert_false(pd_config_parse_limits("1h,2h,3h", false, &warn, &crit));
    assert_false(pd_config_parse_limits("h", false, &warn, &crit));
    assert_false(pd_config_parse_limits("99999999999999999999d", false, &warn, &crit));

    assert_int_equal(
        load(&cfg, write_conf("[main]\nrepo = /r\nalert-drill-age = 2d\n"), NULL, NULL, 0, &err),
        0);
    pd_config_get_limits(cfg, "alert-drill-age", &warn, &crit);
    assert_int_equal(warn, 2 * 86400);
    assert_int_equal(crit, -1);
    pd_config_get_limits(cfg, "alert-backup-age", &warn, &crit);
    assert_int_equal(warn, 26 * 3600);
    assert_int_equal(crit, 50 * 3600);
    pd_config_get_limits(cfg, "alert-repository-days", &warn, &crit);
    assert_int_equal(warn, 7);
    assert_int_equal(crit, 3);
    pd_config_free(cfg);
    cfg = NULL;

    int rc = load(&cfg, write_conf("[main]\nrepo = /r\n\nalert-backup-age = 2h,1h\n"), NULL, NULL,
                  0, &err);
    assert_config_error(rc, cfg, &err, NULL, 4, "alert-backup-age");
    assert_contains(err.msg, "CRIT at least WARN");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_global_cluster_override_order),
        cmocka_unit_test(test_config_command_line_override_wins),
        cmocka_unit_test(test_config_one_cluster_implicit),
        cmocka_unit_test(test_config_cluster_choice),
        cmocka_unit_test(test_config_env_path),
        cmocka_unit_test(test_config_default_path_missing),
        cmocka_unit_test(test_config_default_path_used),
        cmocka_unit_test(test_config_default_path_unreadable),
        cmocka_unit_test(test_config_repeatable_key),
        cmocka_unit_test(test_config_lexical_forms),
        cmocka_unit_test(test_config_bool_spellings),
        cmocka_unit_test(test_config_int_limits),
        cmocka_unit_test(test_config_is_key_and_help),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_bad_int),
        cmocka_unit_test(test_config_int_out_of_range),
        cmocka_unit_test(test_config_bad_enum),
        cmocka_unit_test(test_config_bad_bool),
        cmocka_unit_test(test_config_relative_path),
        cmocka_unit_test(test_config_empty_value),
        cmocka_unit_test(test_config_duplicate_key),
        cmocka_unit_test(test_config_key_outside_section),
        cmocka_unit_test(test_config_syntax_error),
        cmocka_unit_test(test_config_bad_section_name),
        cmocka_unit_test(test_config_overlong_line),
        cmocka_unit_test(test_config_too_large),
        cmocka_unit_test(test_config_unreadable_file),
        cmocka_unit_test(test_config_two_clusters_without_choice),
        cmocka_unit_test(test_config_unknown_cluster),
        cmocka_unit_test(test_config_missing_repo),
        cmocka_unit_test(test_config_bad_override_value),
        cmocka_unit_test(test_config_unknown_override_key),
        cmocka_unit_test(test_config_error_in_other_cluster),
        cmocka_unit_test(test_config_alert_limits),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
