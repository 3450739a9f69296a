/* Unit tests for storage/s3: part sizes, s3:// parsing, credentials files. */
#include <fcntl.h>
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
#include "storage/s3.h"

/* 10,000 parts hold a multi-terabyte object; early parts stay 8 MiB. */
static void
test_s3_part_size_grows_to_cover_terabytes(void **state)
{
    uint64_t total = 0;

    (void)state;
    assert_int_equal(pd_s3_part_size(1), 8 * 1024 * 1024);
    assert_int_equal(pd_s3_part_size(1000), 8 * 1024 * 1024);
    assert_int_equal(pd_s3_part_size(1001), 16 * 1024 * 1024);
    for (unsigned n = 1; n <= PD_S3_MAX_PARTS; n++) {
        assert_true(pd_s3_part_size(n) >= pd_s3_part_size(n > 1 ? n - 1 : 1));
        assert_true(pd_s3_part_size(n) <= (size_t)1024 * 1024 * 1024); // S3: parts up to 5 GiB
        total += pd_s3_part_size(n);
    }
    assert_true(total > (uint64_t)3800 * 1024 * 1024 * 1024);
}

static void
test_s3_parse_repo(void **state)
{
    pd_err err = PD_ERR_INIT;
    char *b, *p;

    (void)state;
    assert_int_equal(pd_s3_parse_repo(&b, &p, "s3://my-bucket/a/b/", &err), 0);
    assert_string_equal(b, "my-bucket");
    assert_string_equal(p, "a/b");
    pd_free(b);
    pd_free(p);
    assert_int_equal(pd_s3_parse_repo(&b, &p, "s3://my-bucket", &err), 0);
    assert_string_equal(p, "");
    pd_free(b);
    pd_free(p);
    assert_int_equal(pd_s3_parse_repo(&b, &p, "s3://My_Bucket/x", &err), PD_ECONFIG);
    assert_string_equal(
        err.msg, "bad repository \"s3://My_Bucket/x\": bucket names use a-z, 0-9, '-' and '.'");
}

static pd_config *
config_with(const char *dir, const char *extra)
{
    char path[256], text[1024];
    pd_config_opts opts = PD_CONFIG_OPTS_INIT;
    pd_config *cfg = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "%s/pgdrill.conf", dir);
    snprintf(text, sizeof(text), "[main]\nrepo = s3://bucket/p\n%s%s%s", extra,
             strstr(extra, "s3-endpoint") ? "" : "s3-endpoint = http://127.0.0.1:9\n",
             strstr(extra, "s3-uri-style") ? "" : "s3-uri-style = path\n");
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
    opts.path = path;
    assert_int_equal(pd_config_load(&cfg, &opts, NULL), 0);
    return cfg;
}

static void
test_s3_credentials_file_rules(void **state)
{
    char dir[] = "/tmp/pd-s3-XXXXXX", cred[256], line[512];
    pd_storage *st = NULL;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(cred, sizeof(cred), "%s/s3.cred", dir);
    f = fopen(cred, "w");
    fputs("[default]\n# comment\naws_access_key_id = AKID\naws_secret_access_key = sekrit\n", f);
    fclose(f);
    snprintf(line, sizeof(line), "s3-credentials-file = %s\n", cred);

    chmod(cred, 0644);
    cfg = config_with(dir, line);
    assert_int_equal(pd_storage_open_config(&st, cfg, &err), PD_ECONFIG);
    assert_null(st);
    assert_non_null(strstr(err.msg, "mode 0644 lets others read it"));

    chmod(cred, 0600);
    assert_int_equal(pd_storage_open_config(&st, cfg, &err), 0);
    assert_non_null(st);
    uint64_t bytes;
    assert_int_equal(pd_storage_free_space(st, &bytes, &err), PD_ENOTIMPL); // no such notion
    pd_storage_free(st);

    f = fopen(cred, "w");
    fputs("aws_access_key_id = AKID\n", f);
    fclose(f);
    assert_int_equal(pd_storage_open_config(&st, cfg, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "lacks aws_access_key_id or aws_secret_access_key"));

    // Only [default] counts (or AWS_PROFILE's): another profile's keys never do.
    f = fopen(cred, "w");
    fputs("[prod]\naws_access_key_id = AKID\naws_secret_access_key = sekrit\n", f);
    fclose(f);
    unsetenv("AWS_PROFILE");
    assert_int_equal(pd_storage_open_config(&st, cfg, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "in profile [default]"));
    setenv("AWS_PROFILE", "prod", 1);
    assert_int_equal(pd_storage_open_config(&st, cfg, &err), 0);
    pd_storage_free(st);
    unsetenv("AWS_PROFILE");

    pd_config_free(cfg);
    unlink(cred);
    snprintf(line, sizeof(line), "%s/pgdrill.conf", dir);
    unlink(line);
    rmdir(dir);
}

/* Endpoints that could never work are refused at open, as configuration errors. */
static void
test_s3_endpoint_mistakes_refused_at_open(void **state)
{
    static const struct {
        const char *lines, *want;
    } cases[] = {
        {"s3-uri-style = host\n", "host-style on endpoint \"127.0.0.1:9\""},
        {"s3-uri-style = path\ns3-endpoint = http://h:9/x\n", "it has a path"},
        {"s3-uri-style = path\ns3-ca-file = /nonexistent/ca.pem\n", "cannot read s3-ca-file"},
    };
    char dir[] = "/tmp/pd-s3-XXXXXX", path[256];
    pd_storage *st = NULL;

    (void)state;
    assert_non_null(mkdtemp(dir));
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "sekrit", 1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pd_err err = PD_ERR_INIT;
        pd_config *cfg = config_with(dir, cases[i].lines);
        assert_int_equal(pd_storage_open_config(&st, cfg, &err), PD_ECONFIG);
        assert_null(st);
        assert_non_null(strstr(err.msg, cases[i].want));
        pd_config_free(cfg);
    }
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    snprintf(path, sizeof(path), "%s/pgdrill.conf", dir);
    unlink(path);
    rmdir(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s3_part_size_grows_to_cover_terabytes),
        cmocka_unit_test(test_s3_parse_repo),
        cmocka_unit_test(test_s3_credentials_file_rules),
        cmocka_unit_test(test_s3_endpoint_mistakes_refused_at_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
