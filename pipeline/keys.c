/*
 * Key material (see keys.h). Invariant: no key byte is ever outside a
 * pd_secret or a buffer wiped with OPENSSL_cleanse before it is freed.
 */
#include "pipeline/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "common/mem.h"

int
pd_key_generate(pd_secret **out, pd_err *err)
{
    unsigned char k[PD_KEY_SIZE];

    *out = NULL;
    if (RAND_bytes(k, sizeof(k)) != 1)
        return pd_err_set(err, PD_EFAIL, "could not get random bytes from OpenSSL");
    *out = pd_secret_new(k, sizeof(k));
    OPENSSL_cleanse(k, sizeof(k));
    return 0;
}

int
pd_key_file_create(const char *path, pd_err *err)
{
    unsigned char k[PD_KEY_SIZE];
    int fd, rc = 0;

    if (RAND_bytes(k, sizeof(k)) != 1)
        return pd_err_set(err, PD_EFAIL, "could not get random bytes from OpenSSL");
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        rc = pd_err_sys(err, e == EEXIST ? PD_EEXIST : PD_EIO, "could not create key file \"%s\"",
                        path);
        if (e == EEXIST)
            pd_err_hint(err, "pgdrill never overwrites a key file; choose another path");
        goto cleanup;
    }
    // The umask may have cleared nothing we need, but make 0600 certain.
    if (fchmod(fd, 0600) < 0 || write(fd, k, sizeof(k)) != (ssize_t)sizeof(k) || fsync(fd) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not write key file \"%s\"", path);
        close(fd);
        unlink(path);
        goto cleanup;
    }
    if (close(fd) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not write key file \"%s\"", path);
        unlink(path);
        goto cleanup;
    }
    // The file's name must survive a crash as surely as its bytes.
    char *dir = pd_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        rc = pd_err_sys(err, PD_EIO, "could not fsync the directory of key file \"%s\"", path);
        unlink(path);
    }
    if (dfd >= 0)
        close(dfd);
    pd_free(dir);
cleanup:
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

int
pd_key_file_read(pd_secret **out, const char *path, pd_err *err)
{
    int rc = pd_secret_read_file(out, path, PD_KEY_SIZE, 0, 1, err);

    if (rc < 0) {
        if (access(path, F_OK) < 0 && errno == ENOENT)
            pd_err_hint(err, "check key-file in the configuration (a new repository gets its key "
                             "from pgdrill init --generate-key-file)");
        return rc;
    }
    if (pd_secret_len(*out) != PD_KEY_SIZE) {
        rc = pd_err_set(err, PD_ECONFIG, "cannot use key file \"%s\": %zu bytes, expected %d", path,
                        pd_secret_len(*out), PD_KEY_SIZE);
        pd_err_hint(err, "a pgdrill key file holds exactly 32 bytes: is this the right file?");
        pd_secret_free(*out);
        *out = NULL;
    }
    return rc;
}

int
pd_key_from_passphrase(pd_secret **out, const pd_secret *passphrase, const pd_scrypt_params *params,
                       pd_err *err)
{
    unsigned char k[PD_KEY_SIZE];
    OSSL_PARAM ps[6], *p = ps;
    uint64_t n = params->n;
    uint32_t r = params->r, pp = params->p;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int ok;

    *out = NULL;
    *p++ = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_PASSWORD, (void *)pd_secret_data(passphrase), pd_secret_len(passphrase));
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)params->salt,
                                             sizeof(params->salt));
    *p++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
    *p++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
    *p++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &pp);
    *p = OSSL_PARAM_construct_end();
    ok = ctx && EVP_KDF_derive(ctx, k, sizeof(k), ps) == 1;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    if (!ok) {
        OPENSSL_cleanse(k, sizeof(k));
        return pd_err_set(err, PD_EFAIL,
                          "could not derive a key from the passphrase (scrypt N=%llu r=%u p=%u)",
                          (unsigned long long)params->n, params->r, params->p);
    }
    *out = pd_secret_new(k, sizeof(k));
    OPENSSL_cleanse(k, sizeof(k));
    return 0;
}

static void
hmac_label(unsigned char out[32], const pd_secret *key, const char *label)
{
    unsigned int n = 32;

    PD_ASSERT(HMAC(EVP_sha256(), pd_secret_data(key), (int)pd_secret_len(key),
                   (const unsigned char *)label, strlen(label), out, &n) != NULL);
}

void
pd_key_id(unsigned char id[PD_KEY_ID_SIZE], const pd_secret *key)
{
    unsigned char mac[32];

    hmac_label(mac, key, "pgdrill key id v1");
    memcpy(id, mac, PD_KEY_ID_SIZE);
}

void
pd_key_check_value(unsigned char kcv[PD_KEY_CHECK_SIZE], const pd_secret *key)
{
    hmac_label(kcv, key, "pgdrill key check v1");
}

/* AAD of a wrapped key: a label and the data key's id. */
static void
wrap_aad(unsigned char aad[32], const unsigned char id[PD_KEY_ID_SIZE])
{
    memcpy(aad, "pgdrill wrap v1\0", 16);
    memcpy(aad + 16, id, PD_KEY_ID_SIZE);
}

int
pd_key_wrap(unsigned char out[PD_WRAPPED_KEY_SIZE], const pd_secret *master,
            const pd_secret *data_key, pd_err *err)
{
    unsigned char id[PD_KEY_ID_SIZE], aad[32];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl = 0, ok;

    pd_key_id(id, data_key);
    wrap_aad(aad, id);
    ok = ctx && RAND_bytes(out, 12) == 1 &&
         EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, pd_secret_data(master), out) == 1 &&
         EVP_EncryptUpdate(ctx, NULL, &outl, aad, sizeof(aad)) == 1 &&
         EVP_EncryptUpdate(ctx, out + 12, &outl, pd_secret_data(data_key), PD_KEY_SIZE) == 1 &&
         EVP_EncryptFinal_ex(ctx, out + 12 + PD_KEY_SIZE, &outl) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 12 + PD_KEY_SIZE) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : pd_err_set(err, PD_EFAIL, "could not wrap a data key: OpenSSL failed");
}

int
pd_key_unwrap(pd_secret **out, const pd_secret *master,
              const unsigned char wrapped[PD_WRAPPED_KEY_SIZE], pd_err *err)
{
    unsigned char k[PD_KEY_SIZE], tag[16], id[PD_KEY_ID_SIZE], aad[32], fin[16];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    pd_secret *candidate = NULL;
    int outl = 0, ok;

    *out = NULL;
    memcpy(tag, wrapped + 12 + PD_KEY_SIZE, 16);
    // The id inside the AAD is the unwrapped key's own; decrypt first, then
    // verify the tag over the AAD computed from the result.
    ok = ctx &&
         EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, pd_secret_data(master), wrapped) == 1;
    if (ok) {
        // GCM is CTR mode: decrypt with the tag unverified, then recompute.
        ok = EVP_DecryptUpdate(ctx, k, &outl, wrapped + 12, PD_KEY_SIZE) == 1;
    }
    EVP_CIPHER_CTX_free(ctx);
    ctx = NULL;
    if (ok) {
        candidate = pd_secret_new(k, sizeof(k));
        pd_key_id(id, candidate);
        wrap_aad(aad, id);
        ctx = EVP_CIPHER_CTX_new();
        ok = ctx &&
             EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, pd_secret_data(master), wrapped) ==
                 1 &&
             EVP_DecryptUpdate(ctx, NULL, &outl, aad, sizeof(aad)) == 1 &&
             EVP_DecryptUpdate(ctx, k, &outl, wrapped + 12, PD_KEY_SIZE) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
             EVP_DecryptFinal_ex(ctx, fin, &outl) == 1;
        EVP_CIPHER_CTX_free(ctx);
    }
    OPENSSL_cleanse(k, sizeof(k));
    if (!ok) {
        pd_secret_free(candidate);
        return pd_err_set(err, PD_ECORRUPT,
                          "a wrapped data key does not verify under the master key");
    }
    *out = candidate;
    return 0;
}
