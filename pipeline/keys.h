/*
 * Key material: the repository master key (from a key file or a passphrase
 * stretched with scrypt), its key id and check value (stored in repo.json so
 * a wrong key fails at once), and data keys wrapped by the master key with
 * AES-256-GCM, so that rotating the master key rewrites only wrapped keys.
 * Every key lives in a pd_secret (wiped on free, never logged).
 */
#ifndef PGDRILL_PIPELINE_KEYS_H
#define PGDRILL_PIPELINE_KEYS_H

#include <stdint.h>

#include "common/secret.h"
#include "pipeline/object.h"

#define PD_KEY_CHECK_SIZE   32
#define PD_WRAPPED_KEY_SIZE (12 + PD_KEY_SIZE + 16) /* nonce || ciphertext || tag */
#define PD_SCRYPT_SALT_SIZE 16

/* A new random key of PD_KEY_SIZE bytes (OpenSSL RAND_bytes). */
PD_MUST_CHECK int pd_key_generate(pd_secret **out, pd_err *err);

/*
 * Writes a new key file: 32 random bytes, mode 0600, created with O_EXCL so
 * an existing file is never overwritten (PD_EEXIST).
 */
PD_MUST_CHECK int pd_key_file_create(const char *path, pd_err *err);

/* Reads a key file: exactly 32 bytes, mode 0600 or stricter, owned by us (else PD_ECONFIG). */
PD_MUST_CHECK int pd_key_file_read(pd_secret **out, const char *path, pd_err *err);

typedef struct pd_scrypt_params {
    uint64_t n;
    uint32_t r, p;
    unsigned char salt[PD_SCRYPT_SALT_SIZE];
} pd_scrypt_params;

/* N = 2^17, r = 8, p = 1 (128 MiB, about half a second): OWASP's floor. */
#define PD_SCRYPT_N 131072
#define PD_SCRYPT_R 8
#define PD_SCRYPT_P 1

/* Stretches a passphrase into a master key with scrypt (EVP_KDF). */
PD_MUST_CHECK int pd_key_from_passphrase(pd_secret **out, const pd_secret *passphrase,
                                         const pd_scrypt_params *params, pd_err *err);

/* The key id (first 16 bytes of HMAC-SHA256(key, "pgdrill key id v1")). */
void pd_key_id(unsigned char id[PD_KEY_ID_SIZE], const pd_secret *key);

/* The check value stored in repo.json: HMAC-SHA256(key, "pgdrill key check v1"). */
void pd_key_check_value(unsigned char kcv[PD_KEY_CHECK_SIZE], const pd_secret *key);

/* Wraps a data key under the master key; the data key's id is authenticated too. */
PD_MUST_CHECK int pd_key_wrap(unsigned char out[PD_WRAPPED_KEY_SIZE], const pd_secret *master,
                              const pd_secret *data_key, pd_err *err);

/* Unwraps; PD_ECORRUPT when the wrapped key does not verify under master. */
PD_MUST_CHECK int pd_key_unwrap(pd_secret **out, const pd_secret *master,
                                const unsigned char wrapped[PD_WRAPPED_KEY_SIZE], pd_err *err);

#endif
