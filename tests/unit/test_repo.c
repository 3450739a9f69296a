/*
 * Unit tests for storage/repo: init, key checks, the keyring, and key
 * rotation's crash safety (invariants 1-3 of repo.c), proven by letting a
 * forked process die at every write of a rotation and opening the result.
 */
#include <dirent.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/mem.h"
#include "pipeline/keys.h"
#include "storage/repo.h"

static char dir[64], repo[128], k1[128], k2[128], k3[128];

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* True when any file in directory d contains needle. */
static bool
dir_contains(const char *d, const char *needle)
{
    DIR *dp = opendir(d);
    struct dirent *e;
    bool found = false;

    assert_non_null(dp);
    while (!found && (e = readdir(dp)) != NULL) {
        char path[512], buf[8192];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", d, e->d_name);
        FILE *f = fopen(path, "r");
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        fclose(f);
        found = strstr(buf, needle) != NULL;
    }
    closedir(dp);
    return found;
}

static int
setup(void **state)
{
    pd_err err = PD_ERR_INIT;
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/pd-repo-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(repo, sizeof(repo), "%s/repo", dir);
    snprintf(k1, sizeof(k1), "%s/k1", dir);
    snprintf(k2, sizeof(k2), "%s/k2", dir);
    snprintf(k3, sizeof(k3), "%s/k3", dir);
    pd_config_set_default_path_for_tests("/nonexistent/pgdrill.conf");
    unsetenv("PGDRILL_PASSPHRASE");
    if (pd_key_file_create(k1, &err) < 0 || pd_key_file_create(k2, &err) < 0 ||
        pd_key_file_create(k3, &err) < 0)
        return -1;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    rm_rf(dir);
    return 0;
}

static pd_config *
config_with(const char *key_file, const char *encryption)
{
    pd_config_override ov[3] = {{"repo", repo}, {"encryption", encryption}, {"key-file", key_file}};
    pd_config_opts opts = PD_CONFIG_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_config *cfg = NULL;

    opts.cluster = "main";
    opts.overrides = ov;
    opts.n_overrides = key_file ? 3 : 2;
    if (pd_config_load(&cfg, &opts, &err) < 0)
        fail_msg("config: %s", err.msg);
    return cfg;
}

static void
init_repo(const char *key_file)
{
    pd_repo_init_opts io = PD_REPO_INIT_OPTS_INIT;
    pd_config *cfg = config_with(key_file, "aes-256-gcm");
    pd_err err = PD_ERR_INIT;
    char *summary = NULL;

    if (pd_repo_init(&summary, cfg, &io, &err) < 0)
        fail_msg("init: %s", err.msg);
    assert_non_null(strstr(summary, "aes-256-gcm"));
    pd_free(summary);
    pd_config_free(cfg);
}

static int
open_with(pd_repo **r, const char *key_file, pd_err *err)
{
    pd_config *cfg = config_with(key_file, "aes-256-gcm");
    int rc = pd_repo_open(r, cfg, err);
    pd_config_free(cfg);
    return rc;
}

static void
test_repo_init_modes_and_refuses_existing(void **state)
{
    char path[256];
    struct stat st;
    pd_err err = PD_ERR_INIT;
    char *summary = NULL;
    (void)state;

    mode_t old = umask(0);
    init_repo(k1);
    umask(old);
    snprintf(path, sizeof(path), "%s/main/repo.json", repo);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/main", repo);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    pd_repo_init_opts io = PD_REPO_INIT_OPTS_INIT;
    pd_config *cfg = config_with(k1, "aes-256-gcm");
    assert_int_equal(pd_repo_init(&summary, cfg, &io, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "already initialised"));
    pd_config_free(cfg);
}

static void
test_repo_wrong_key_fails_at_once(void **state)
{
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;
    (void)state;

    init_repo(k1);
    assert_int_equal(open_with(&r, k1, &err), 0);
    pd_repo_free(r);
    r = NULL;
    assert_int_equal(open_with(&r, k2, &err), PD_ECONFIG);
    assert_null(r);
    assert_non_null(strstr(err.msg, "wrong key for repository"));
    assert_int_equal(pd_err_exit_code(err.code), 2);
}

static void
test_repo_missing_is_config_error(void **state)
{
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;
    (void)state;

    // No repository directory at all, then a directory without the cluster.
    assert_int_equal(open_with(&r, k1, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, repo));
    assert_int_equal(mkdir(repo, 0700), 0);
    assert_int_equal(open_with(&r, k1, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "has no cluster \"main\""));
    assert_non_null(strstr(err.hint, "pgdrill init"));
}

static void
test_repo_tampered_repo_json_detected(void **state)
{
    char path[256];
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;
    (void)state;

    init_repo(k1);
    snprintf(path, sizeof(path), "%s/main/repo.json", repo);
    FILE *f = fopen(path, "r+");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    char *z = strstr(buf, "\"zstd\"");
    assert_non_null(z);
    memcpy(z, "\"none\"", 6);
    rewind(f);
    fwrite(buf, 1, n, f);
    fclose(f);
    assert_int_equal(open_with(&r, k1, &err), PD_ECORRUPT);
    assert_non_null(strstr(err.msg, "MAC"));
}

/* repo.json switched to "cipher none" without the key: refused, never used in plaintext. */
static void
test_repo_downgrade_to_none_refused(void **state)
{
    char path[256];
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;
    (void)state;

    init_repo(k1);
    snprintf(path, sizeof(path), "%s/main/repo.json", repo);
    FILE *f = fopen(path, "w");
    fputs("{\"format\": 1, \"cluster\": \"main\", \"cipher\": \"none\", \"compression\": "
          "\"zstd\", \"compression_level\": 3, \"system_identifier\": null}",
          f);
    fclose(f);
    assert_int_equal(open_with(&r, k1, &err), PD_ECONFIG);
    assert_null(r);
    assert_non_null(strstr(err.msg, "is not encrypted"));
}

static void
test_repo_passphrase(void **state)
{
    pd_scrypt_params fast = {1024, 8, 1, {0}};
    pd_repo_init_opts io = PD_REPO_INIT_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_repo *r = NULL;
    char *summary = NULL;
    (void)state;

    io.scrypt = &fast;
    pd_config *cfg = config_with(NULL, "aes-256-gcm");
    setenv("PGDRILL_PASSPHRASE", "correct horse battery", 1);
    if (pd_repo_init(&summary, cfg, &io, &err) < 0)
        fail_msg("init: %s", err.msg);
    // Read once, then removed from the environment so children never see it.
    assert_null(getenv("PGDRILL_PASSPHRASE"));
    pd_free(summary);
    setenv("PGDRILL_PASSPHRASE", "correct horse battery", 1);
    assert_int_equal(pd_repo_open(&r, cfg, &err), 0);
    pd_repo_free(r);
    r = NULL;
    setenv("PGDRILL_PASSPHRASE", "correct horse batterx", 1);
    assert_int_equal(pd_repo_open(&r, cfg, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "wrong key"));
    assert_non_null(strstr(err.hint, "passphrase"));
    unsetenv("PGDRILL_PASSPHRASE");
    pd_config_free(cfg);
}

/* Creates n data keys; returns them copied (caller frees) with their ids. */
static void
make_keys(size_t n, unsigned char ids[][PD_KEY_ID_SIZE], unsigned char keys[][PD_KEY_SIZE])
{
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;

    assert_int_equal(open_with(&r, k1, &err), 0);
    for (size_t i = 0; i < n; i++) {
        const pd_secret *dk = NULL;
        if (pd_repo_new_data_key(r, &dk, ids[i], &err) < 0)
            fail_msg("new key: %s", err.msg);
        memcpy(keys[i], pd_secret_data(dk), PD_KEY_SIZE);
    }
    pd_repo_free(r);
}

/* Every data key unwraps under whichever master key the repository opens with. */
static void
assert_keys_readable(const char *key_file, size_t n, unsigned char ids[][PD_KEY_ID_SIZE],
                     unsigned char keys[][PD_KEY_SIZE])
{
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;

    if (open_with(&r, key_file, &err) < 0)
        fail_msg("open with %s: %s", key_file, err.msg);
    for (size_t i = 0; i < n; i++) {
        const pd_secret *dk = NULL;
        if (pd_repo_key_lookup(r, ids[i], &dk, &err) < 0)
            fail_msg("lookup %zu with %s: %s", i, key_file, err.msg);
        assert_memory_equal(pd_secret_data(dk), keys[i], PD_KEY_SIZE);
    }
    pd_repo_free(r);
}

static int
rotate(const char *to, pd_err *err)
{
    pd_config *cfg = config_with(k1, "aes-256-gcm");
    char *summary = NULL;
    int rc = pd_repo_rotate(&summary, cfg, to, err);
    pd_free(summary);
    pd_config_free(cfg);
    return rc;
}

static void
test_repo_rotate_rewraps_every_key(void **state)
{
    unsigned char ids[3][PD_KEY_ID_SIZE], keys[3][PD_KEY_SIZE];
    pd_repo *r = NULL;
    pd_err err = PD_ERR_INIT;
    (void)state;

    init_repo(k1);
    make_keys(3, ids, keys);
    if (rotate(k2, &err) < 0)
        fail_msg("rotate: %s", err.msg);
    assert_keys_readable(k2, 3, ids, keys);
    assert_int_equal(open_with(&r, k1, &err), PD_ECONFIG);
    // The old wrappings are gone: no file names the old master key any more.
    char keys_dir[256];
    unsigned char old_id[PD_KEY_ID_SIZE];
    char hex[2 * PD_KEY_ID_SIZE + 1];
    pd_secret *old = NULL;
    assert_int_equal(pd_key_file_read(&old, k1, &err), 0);
    pd_key_id(old_id, old);
    pd_secret_free(old);
    pd_hex(hex, old_id, PD_KEY_ID_SIZE);
    snprintf(keys_dir, sizeof(keys_dir), "%s/main/keys", repo);
    assert_true(dir_contains(keys_dir, "wrapped_key"));
    assert_false(dir_contains(keys_dir, hex));
}

/* Invariants 1-3: a crash after any write leaves a repository readable with one key. */
static void
test_repo_rotate_crash_at_every_write(void **state)
{
    enum {
        NKEYS = 3,
        WRITES = NKEYS + 1 + NKEYS
    };
    unsigned char ids[NKEYS][PD_KEY_ID_SIZE], keys[NKEYS][PD_KEY_SIZE];
    (void)state;

    for (int crash_after = 1; crash_after <= WRITES; crash_after++) {
        rm_rf(repo);
        init_repo(k1);
        make_keys(NKEYS, ids, keys);

        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            char n[16];
            pd_err cerr = PD_ERR_INIT;
            snprintf(n, sizeof(n), "%d", crash_after);
            setenv("PGDRILL_TEST_ROTATE_CRASH", n, 1);
            _exit(rotate(k2, &cerr) == 0 ? 0 : 1);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 137);

        // Old key before the switch (write NKEYS+1), new key from it on.
        const char *current = crash_after <= NKEYS ? k1 : k2;
        assert_keys_readable(current, NKEYS, ids, keys);

        // Running the rotation again completes it.
        pd_err err = PD_ERR_INIT;
        if (rotate(k2, &err) < 0)
            fail_msg("rerun after crash %d: %s", crash_after, err.msg);
        assert_keys_readable(k2, NKEYS, ids, keys);
    }
}

static void
test_repo_rotate_wrong_current_key(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_config *cfg;
    char *summary = NULL;
    (void)state;

    init_repo(k1);
    cfg = config_with(k3, "aes-256-gcm");
    assert_int_equal(pd_repo_rotate(&summary, cfg, k2, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "wrong key"));
    pd_config_free(cfg);
}

static void
test_repo_unencrypted_has_no_keys(void **state)
{
    pd_repo_init_opts io = PD_REPO_INIT_OPTS_INIT;
    pd_err err = PD_ERR_INIT;
    pd_repo *r = NULL;
    const pd_secret *dk = (const pd_secret *)1;
    unsigned char id[PD_KEY_ID_SIZE];
    char *summary = NULL;
    (void)state;

    pd_config *cfg = config_with(NULL, "none");
    assert_int_equal(pd_repo_init(&summary, cfg, &io, &err), 0);
    pd_free(summary);
    assert_int_equal(pd_repo_open(&r, cfg, &err), 0);
    assert_int_equal(pd_repo_cipher(r), PD_CIPHER_NONE);
    assert_int_equal(pd_repo_new_data_key(r, &dk, id, &err), 0);
    assert_null(dk);
    pd_repo_free(r);
    pd_config_free(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_repo_init_modes_and_refuses_existing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_wrong_key_fails_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_missing_is_config_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_tampered_repo_json_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_passphrase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_downgrade_to_none_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_rotate_rewraps_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_rotate_crash_at_every_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_rotate_wrong_current_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_unencrypted_has_no_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
