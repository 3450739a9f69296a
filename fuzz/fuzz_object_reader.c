/*
 * libFuzzer target for the object reader (pipeline/object.h). Whatever bytes
 * arrive, the reading chain must end in success or in PD_ECORRUPT (PD_ECONFIG
 * when the key lookup refuses) with a message naming the object, the same
 * code on every later call, and never crash, leak or hang.
 *
 * Input: byte 0 picks the mode, byte 1 seeds the chunking, the rest is the
 * object, written to the reader in chunks whose sizes derive from byte 1
 * (0: one write) and then finished.
 *   bit 0 of byte 0: expect_cipher, 0 none, 1 aes-256-gcm; the lookup
 *                    callback knows one fixed test key under one fixed id.
 *   bit 1 of byte 0: reseal. Before reading, the harness makes every complete
 *                    frame authentic as a writer holding the key would: it
 *                    recomputes the checksum, or with aes-256-gcm encrypts the
 *                    frame body (which the input then holds as plaintext) and
 *                    sets the tag. Without it nearly every mutation stops at
 *                    the first tag; with it the fuzzer reaches the framing
 *                    and zstd paths behind verification. The reseal is
 *                    written from doc/object-format.md (sections 4 and 5),
 *                    separately from object.c.
 *
 * Seeds: PGDRILL_FUZZ_SEEDS=DIR ./fuzz_object_reader writes valid objects
 * made by the library's writer (zstd/none x aes-256-gcm/none, small sizes,
 * small and default frames, both modes) into DIR and exits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "common/mem.h"
#include "common/secret.h"
#include "pipeline/object.h"
#include "pipeline/stage.h"

#define IDENTITY   "backups/20240101T000000F/pg_data/base/5/16384"
#define MODE_AES   0x01
#define MODE_SEAL  0x02
#define LAST_FLAG  0x80000000u
#define NONCE_SIZE 12
#define HKDF_INFO  "pgdrill object key v1"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char test_key[PD_KEY_SIZE] = "pgdrill fuzz test key, 32 bytes";
static const unsigned char test_key_id[PD_KEY_ID_SIZE] = "fuzz key id 0001";
static pd_secret *key;

static void
die(const char *what)
{
    fprintf(stderr, "fuzz_object_reader: %s\n", what);
    abort();
}

static int
lookup(void *payload, const unsigned char id[PD_KEY_ID_SIZE], const pd_secret **out, pd_err *err)
{
    (void)payload;
    if (memcmp(id, test_key_id, PD_KEY_ID_SIZE) != 0)
        return pd_err_set(err, PD_ECONFIG, "the object names a data key not in the keyring");
    *out = key;
    return 0;
}

static uint32_t
get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ---- reseal ---- */

static void
sha256(unsigned char out[32], const void *a, size_t alen, const void *b, size_t blen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;

    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, a, alen) != 1 || EVP_DigestUpdate(md, b, blen) != 1 ||
        EVP_DigestFinal_ex(md, out, &n) != 1)
        die("SHA-256 failed");
    EVP_MD_CTX_free(md);
}

/* The object key: HKDF-SHA256(data key, salt = header[32..56), info). */
static void
object_key(unsigned char out[PD_KEY_SIZE], const unsigned char *hdr)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[5];

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)test_key, PD_KEY_SIZE);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(hdr + 32),
                                                  PD_OBJ_SALT_SIZE);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)HKDF_INFO,
                                                  strlen(HKDF_INFO));
    params[4] = OSSL_PARAM_construct_end();
    if (kctx == NULL || EVP_KDF_derive(kctx, out, PD_KEY_SIZE, params) != 1)
        die("HKDF failed");
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
}

/* Encrypts body in place under AES-256-GCM and writes its tag. */
static void
gcm_seal(const unsigned char *okey, const unsigned char nonce[NONCE_SIZE],
         const unsigned char aad[32], unsigned char *body, uint32_t len, unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl = 0;

    if (ctx == NULL || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, okey, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &outl, aad, 32) != 1 ||
        (len > 0 && EVP_EncryptUpdate(ctx, body, &outl, body, (int)len) != 1) ||
        EVP_EncryptFinal_ex(ctx, body + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PD_OBJ_TAG_SIZE, tag) != 1)
        die("AES-256-GCM failed");
    EVP_CIPHER_CTX_free(ctx);
}

/*
 * Makes every complete frame of obj authentic for the given cipher: the AAD
 * is SHA-256(header || identity); the nonce is header[32..39) || counter ||
 * last flag; cipher none tags with the first 16 bytes of
 * SHA-256(aad || nonce || length || body). Stops at the final frame.
 */
static void
reseal(unsigned char *obj, size_t len, bool aes)
{
    unsigned char aad[32], okey[PD_KEY_SIZE];
    size_t pos = PD_OBJ_HEADER_SIZE;
    uint32_t counter = 0;

    if (len < PD_OBJ_HEADER_SIZE)
        return;
    sha256(aad, obj, PD_OBJ_HEADER_SIZE, IDENTITY, strlen(IDENTITY));
    if (aes)
        object_key(okey, obj);
    while (len - pos >= 4) {
        uint32_t v = get_be32(obj + pos);
        uint32_t blen = v & ~LAST_FLAG;
        bool last = (v & LAST_FLAG) != 0;
        unsigned char nonce[NONCE_SIZE], *body = obj + pos + 4;

        if (blen > len - pos - 4 || len - pos - 4 - blen < PD_OBJ_TAG_SIZE)
            break;
        memcpy(nonce, obj + 32, 7);
        put_be32(nonce + 7, counter);
        nonce[11] = last ? 1 : 0;
        if (aes) {
            gcm_seal(okey, nonce, aad, body, blen, body + blen);
        } else {
            unsigned char pre[32 + NONCE_SIZE + 4], digest[32];
            memcpy(pre, aad, 32);
            memcpy(pre + 32, nonce, NONCE_SIZE);
            put_be32(pre + 32 + NONCE_SIZE, blen);
            sha256(digest, pre, sizeof(pre), body, blen);
            memcpy(body + blen, digest, PD_OBJ_TAG_SIZE);
        }
        counter++;
        pos += 4 + (size_t)blen + PD_OBJ_TAG_SIZE;
        if (last)
            break;
    }
}

/* ---- reading ---- */

/* xorshift32: chunk sizes from the input's seed byte, no libc state. */
static uint32_t
next_rand(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* Fails the run unless rc and err obey the reader's error contract. */
static void
check_error(int rc, const pd_err *err)
{
    if (rc == 0)
        return;
    if (rc != PD_ECORRUPT && rc != PD_ECONFIG) {
        fprintf(stderr, "unexpected code %d: %s\n", rc, err->msg);
        die("damage must be PD_ECORRUPT (or PD_ECONFIG from the key lookup)");
    }
    // The name only: whether it is quoted is for the unit tests to check.
    if (err->code != rc || strstr(err->msg, IDENTITY) == NULL) {
        fprintf(stderr, "code %d, err.code %d: %s\n", rc, err->code, err->msg);
        die("the message must name the object");
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pd_obj_read_opts ro = PD_OBJ_READ_OPTS_INIT;
    pd_err err = PD_ERR_INIT, again = PD_ERR_INIT;
    pd_stage *r = NULL;
    unsigned char *obj;
    size_t len, pos = 0;
    uint32_t state, limit;
    int rc;

    if (size < 2)
        return -1; // not in the corpus
    obj = pd_malloc(size);
    len = size - 2;
    memcpy(obj, data + 2, len);
    ro.identity = IDENTITY;
    ro.expect_cipher = (data[0] & MODE_AES) ? PD_CIPHER_AES_256_GCM : PD_CIPHER_NONE;
    ro.lookup = lookup;
    if (data[0] & MODE_SEAL)
        reseal(obj, len, (data[0] & MODE_AES) != 0);
    // Chunks up to 2, 16, 512 or 8192 bytes, by the top bits of the seed byte.
    limit = (uint32_t[]){2, 16, 512, 8192}[data[1] >> 6];
    state = data[1] * 0x9E3779B9u + 1;
    if (state == 0)
        state = 1; // xorshift would stay at 0 and write nothing forever

    if (pd_obj_reader_new(&r, &ro, pd_stage_null_new(), &err) != 0)
        die("pd_obj_reader_new failed");
    rc = 0;
    while (pos < len && rc == 0) {
        size_t n = data[1] == 0 ? len : next_rand(&state) % limit; // 0 is a valid write
        if (n > len - pos)
            n = len - pos;
        rc = pd_stage_write(r, obj + pos, n, &err);
        pos += n;
    }
    if (rc == 0) {
        rc = pd_stage_finish(r, &err);
    } else {
        // Sticky errors: finish repeats the write's failure.
        if (pd_stage_finish(r, &again) != rc || strcmp(again.msg, err.msg) != 0)
            die("finish after a failed write must repeat its code and message");
    }
    check_error(rc, &err);
    pd_stage_free(r);
    pd_free(obj);
    return 0;
}

/* ---- seeds ---- */

typedef struct membuf {
    unsigned char *data;
    size_t len, cap;
} membuf;

static int
mem_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    membuf *m = payload;

    (void)err;
    if (m->len + len > m->cap) {
        m->cap = 2 * (m->len + len);
        m->data = pd_realloc(m->data, m->cap);
    }
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

static void
write_seed(const char *dir, int n, unsigned char mode, unsigned char chunks, const membuf *obj)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/seed-%03d", dir, n);
    f = fopen(path, "wb");
    if (f == NULL || fputc(mode, f) == EOF || fputc(chunks, f) == EOF ||
        fwrite(obj->data, 1, obj->len, f) != obj->len || fclose(f) != 0)
        die("cannot write a seed file");
}

static void
make_seeds(const char *dir)
{
    static const size_t sizes[] = {0, 1, 100, 3000};
    static const size_t frames[] = {0, 64, 1000};
    int n = 0;

    for (int comp = 0; comp < 2; comp++) {
        for (int aes = 0; aes < 2; aes++) {
            for (size_t s = 0; s < PD_ARRAY_LEN(sizes); s++) {
                for (size_t f = 0; f < PD_ARRAY_LEN(frames); f++) {
                    pd_obj_write_opts wo = PD_OBJ_WRITE_OPTS_INIT;
                    pd_err err = PD_ERR_INIT;
                    membuf m = {NULL, 0, 0};
                    pd_stage *w = NULL;
                    unsigned char *plain;

                    if (frames[f] != 0 && frames[f] > sizes[s] * 2)
                        continue; // one frame either way: the default covers it
                    plain = pd_malloc(sizes[s] + 1);
                    for (size_t i = 0; i < sizes[s]; i++)
                        plain[i] = (unsigned char)("pgbench_accounts "[i % 17] + (i / 500) % 3);
                    wo.identity = IDENTITY;
                    wo.compression = comp ? PD_COMPRESSION_ZSTD : PD_COMPRESSION_NONE;
                    wo.zstd.level = 1;
                    wo.cipher = aes ? PD_CIPHER_AES_256_GCM : PD_CIPHER_NONE;
                    wo.data_key = aes ? key : NULL;
                    wo.key_id = test_key_id;
                    wo.frame_size = frames[f];
                    if (pd_obj_writer_new(&w, &wo, pd_stage_sink_new(mem_write, NULL, &m), &err) <
                            0 ||
                        pd_stage_write(w, plain, sizes[s], &err) < 0 ||
                        pd_stage_finish(w, &err) < 0) {
                        fprintf(stderr, "%s\n", err.msg);
                        die("cannot write a seed object");
                    }
                    pd_stage_free(w);
                    write_seed(dir, n, (unsigned char)aes, (unsigned char)(n * 37), &m);
                    n++;
                    // The same object for reseal mode: with aes-256-gcm the
                    // bodies must be plaintext, and GCM's keystream XOR
                    // applied once more turns ciphertext back into it.
                    if (aes)
                        reseal(m.data, m.len, true);
                    write_seed(dir, n, (unsigned char)(aes | MODE_SEAL), (unsigned char)(n * 37),
                               &m);
                    n++;
                    pd_free(m.data);
                    pd_free(plain);
                }
            }
        }
    }
    fprintf(stderr, "fuzz_object_reader: wrote %d seeds to %s\n", n, dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("PGDRILL_FUZZ_SEEDS");

    (void)argc;
    (void)argv;
    key = pd_secret_new(test_key, sizeof(test_key));
    if (dir != NULL) {
        make_seeds(dir);
        exit(0);
    }
    return 0;
}
