/* Unit tests for pipeline/keys: key files, scrypt, key check values, wrapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline/keys.h"

static char dir[64];
static char path[128];

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/pd-keys-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/key", dir);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

static void
test_keys_file_create_mode_and_no_overwrite(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *k = NULL;
    struct stat st;
    (void)state;

    umask(0); // the file must still be 0600
    assert_int_equal(pd_key_file_create(path, &err), 0);
    umask(022);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, PD_KEY_SIZE);
    assert_int_equal(pd_key_file_read(&k, path, &err), 0);
    assert_int_equal(pd_secret_len(k), PD_KEY_SIZE);
    pd_secret_free(k);
    assert_int_equal(pd_key_file_create(path, &err), PD_EEXIST);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.hint, "never overwrites"));
}

static void
test_keys_file_loose_mode_refused(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *k = NULL;
    (void)state;

    assert_int_equal(pd_key_file_create(path, &err), 0);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(pd_key_file_read(&k, path, &err), PD_ECONFIG);
    assert_null(k);
    assert_non_null(strstr(err.msg, "0644"));
}

static void
test_keys_file_wrong_size_refused(void **state)
{
    pd_err err = PD_ERR_INIT;
    pd_secret *k = NULL;
    FILE *f = fopen(path, "w");
    (void)state;

    fputs("short", f);
    fclose(f);
    chmod(path, 0600);
    assert_int_equal(pd_key_file_read(&k, path, &err), PD_ECONFIG);
    assert_non_null(strstr(err.msg, "expected 32"));
}

static void
test_keys_wrap_round_trip_and_wrong_master(void **state)
{
    pd_secret *master = NULL, *other = NULL, *dk = NULL, *back = NULL;
    unsigned char wrapped[PD_WRAPPED_KEY_SIZE];
    pd_err err = PD_ERR_INIT;
    (void)state;

    assert_int_equal(pd_key_generate(&master, &err), 0);
    assert_int_equal(pd_key_generate(&other, &err), 0);
    assert_int_equal(pd_key_generate(&dk, &err), 0);
    assert_int_equal(pd_key_wrap(wrapped, master, dk, &err), 0);
    assert_null(memmem(wrapped, sizeof(wrapped), pd_secret_data(dk), 8));
    assert_int_equal(pd_key_unwrap(&back, master, wrapped, &err), 0);
    assert_memory_equal(pd_secret_data(back), pd_secret_data(dk), PD_KEY_SIZE);
    pd_secret_free(back);
    back = NULL;
    assert_int_equal(pd_key_unwrap(&back, other, wrapped, &err), PD_ECORRUPT);
    assert_null(back);
    wrapped[20] ^= 1;
    assert_int_equal(pd_key_unwrap(&back, master, wrapped, &err), PD_ECORRUPT);
    pd_secret_free(master);
    pd_secret_free(other);
    pd_secret_free(dk);
}

static void
test_keys_check_value_tells_keys_apart(void **state)
{
    pd_secret *a = NULL, *b = NULL;
    unsigned char ka[PD_KEY_CHECK_SIZE], kb[PD_KEY_CHECK_SIZE], ida[PD_KEY_ID_SIZE];
    pd_err err = PD_ERR_INIT;
    (void)state;

    assert_int_equal(pd_key_generate(&a, &err), 0);
    assert_int_equal(pd_key_generate(&b, &err), 0);
    pd_key_check_value(ka, a);
    pd_key_check_value(kb, b);
    pd_key_id(ida, a);
    assert_memory_not_equal(ka, kb, sizeof(ka));
    assert_memory_not_equal(ka, ida, sizeof(ida));
    pd_key_check_value(kb, a);
    assert_memory_equal(ka, kb, sizeof(ka));
    pd_secret_free(a);
    pd_secret_free(b);
}

static void
test_keys_scrypt_passphrase(void **state)
{
    pd_scrypt_params p = {1024, 8, 1, "0123456789abcde"};
    pd_secret *pass = pd_secret_new("correct horse", 13);
    pd_secret *wrong = pd_secret_new("correct horsf", 13);
    pd_secret *k1 = NULL, *k2 = NULL, *k3 = NULL;
    pd_err err = PD_ERR_INIT;
    (void)state;

    assert_int_equal(pd_key_from_passphrase(&k1, pass, &p, &err), 0);
    assert_int_equal(pd_key_from_passphrase(&k2, pass, &p, &err), 0);
    assert_int_equal(pd_key_from_passphrase(&k3, wrong, &p, &err), 0);
    assert_memory_equal(pd_secret_data(k1), pd_secret_data(k2), PD_KEY_SIZE);
    assert_memory_not_equal(pd_secret_data(k1), pd_secret_data(k3), PD_KEY_SIZE);
    // Salt matters.
    p.salt[0] ^= 1;
    pd_secret_free(k2);
    assert_int_equal(pd_key_from_passphrase(&k2, pass, &p, &err), 0);
    assert_memory_not_equal(pd_secret_data(k1), pd_secret_data(k2), PD_KEY_SIZE);
    // A bad parameter (N not a power of two) is an error, not a crash.
    p.n = 1000;
    pd_secret_free(k3);
    k3 = NULL;
    assert_int_equal(pd_key_from_passphrase(&k3, pass, &p, &err), PD_EFAIL);
    assert_null(k3);
    pd_secret_free(k1);
    pd_secret_free(k2);
    pd_secret_free(pass);
    pd_secret_free(wrong);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keys_file_create_mode_and_no_overwrite, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keys_file_loose_mode_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_file_wrong_size_refused, setup, teardown),
        cmocka_unit_test(test_keys_wrap_round_trip_and_wrong_master),
        cmocka_unit_test(test_keys_check_value_tells_keys_apart),
        cmocka_unit_test(test_keys_scrypt_passphrase),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
