/*
 * Object format writer ("seal") and reader ("open"); see object.h and
 * doc/object-format.md, which this file must match byte for byte.
 *
 * Invariants:
 *  1. The reader forwards a frame's plaintext only after its tag verified.
 *  2. Every frame but the last holds exactly frame_size bytes; the last one
 *     carries the last-frame flag in its nonce, so truncation is detected.
 *  3. Each object gets its own key, HKDF(data key, random salt), so nonces
 *     (salt prefix || counter || flag) never repeat under one key.
 *  4. Memory is one frame buffer per stage, allocated once.
 */
#include "pipeline/object.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "common/mem.h"

#define LEN_SIZE   4
#define NONCE_SIZE 12
#define LAST_FLAG  0x80000000u
#define HKDF_INFO  "pgdrill object key v1"

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t
get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* What seal and open share: the per-object key, nonce prefix and AAD. */
typedef struct obj_crypto {
    pd_cipher cipher;
    EVP_CIPHER_CTX *ctx;
    EVP_MD_CTX *md;
    unsigned char key[PD_KEY_SIZE];
    unsigned char prefix[7];
    unsigned char aad[32]; /* SHA-256(header || identity) */
    uint32_t counter;
} obj_crypto;

static int
crypto_fail(pd_err *err, const char *what)
{
    return pd_err_set(err, PD_EFAIL, "could not %s: OpenSSL failed", what);
}

/* Derives the object key and AAD from the header; see doc/object-format.md. */
static int
crypto_setup(obj_crypto *c, const unsigned char *hdr, const char *identity, const pd_secret *dk,
             pd_err *err)
{
    unsigned int n = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, hdr, PD_OBJ_HEADER_SIZE) == 1 &&
             EVP_DigestUpdate(md, identity, strlen(identity)) == 1 &&
             EVP_DigestFinal_ex(md, c->aad, &n) == 1;

    EVP_MD_CTX_free(md);
    if (!ok)
        return crypto_fail(err, "hash an object header");
    memcpy(c->prefix, hdr + 32, sizeof(c->prefix));
    c->md = EVP_MD_CTX_new();
    if (c->md == NULL)
        return crypto_fail(err, "create a digest context");
    if (c->cipher == PD_CIPHER_NONE)
        return 0;

    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[5], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)pd_secret_data(dk),
                                             pd_secret_len(dk));
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(hdr + 32),
                                             PD_OBJ_SALT_SIZE);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)HKDF_INFO,
                                             strlen(HKDF_INFO));
    *p = OSSL_PARAM_construct_end();
    ok = kctx && EVP_KDF_derive(kctx, c->key, sizeof(c->key), params) == 1;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    if (!ok)
        return crypto_fail(err, "derive an object key");
    c->ctx = EVP_CIPHER_CTX_new();
    if (c->ctx == NULL || EVP_CipherInit_ex(c->ctx, EVP_aes_256_gcm(), NULL, c->key, NULL, -1) != 1)
        return crypto_fail(err, "set up AES-256-GCM");
    return 0;
}

static void
crypto_cleanup(obj_crypto *c)
{
    EVP_CIPHER_CTX_free(c->ctx);
    EVP_MD_CTX_free(c->md);
    OPENSSL_cleanse(c->key, sizeof(c->key));
}

static void
make_nonce(const obj_crypto *c, bool last, unsigned char nonce[NONCE_SIZE])
{
    memcpy(nonce, c->prefix, 7);
    put_be32(nonce + 7, c->counter);
    nonce[11] = last ? 1 : 0;
}

/* The checksum tag of cipher "none": SHA-256(aad || nonce || len || data), first 16 bytes. */
static int
checksum_tag(obj_crypto *c, const unsigned char nonce[NONCE_SIZE], const unsigned char *data,
             uint32_t len, unsigned char tag[PD_OBJ_TAG_SIZE])
{
    unsigned char lenbuf[4], digest[32];
    unsigned int n = 0;

    put_be32(lenbuf, len);
    if (EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c->md, c->aad, sizeof(c->aad)) != 1 ||
        EVP_DigestUpdate(c->md, nonce, NONCE_SIZE) != 1 ||
        EVP_DigestUpdate(c->md, lenbuf, 4) != 1 || EVP_DigestUpdate(c->md, data, len) != 1 ||
        EVP_DigestFinal_ex(c->md, digest, &n) != 1)
        return -1;
    memcpy(tag, digest, PD_OBJ_TAG_SIZE);
    return 0;
}

/*
 * Encrypts (enc=1) or decrypts and verifies (enc=0) len bytes in place.
 * For decryption, tag is the expected tag; returns 1 when it does not verify.
 */
static int
crypt_frame(obj_crypto *c, int enc, bool last, unsigned char *data, uint32_t len,
            unsigned char *tag)
{
    unsigned char nonce[NONCE_SIZE], want[PD_OBJ_TAG_SIZE];
    int outl = 0;

    make_nonce(c, last, nonce);
    if (c->cipher == PD_CIPHER_NONE) {
        if (checksum_tag(c, nonce, data, len, enc ? tag : want) < 0)
            return -1;
        return enc ? 0 : (CRYPTO_memcmp(want, tag, PD_OBJ_TAG_SIZE) != 0);
    }
    if (EVP_CipherInit_ex(c->ctx, NULL, NULL, NULL, nonce, enc) != 1 ||
        EVP_CipherUpdate(c->ctx, NULL, &outl, c->aad, sizeof(c->aad)) != 1 ||
        (len > 0 && EVP_CipherUpdate(c->ctx, data, &outl, data, (int)len) != 1))
        return -1;
    if (enc) {
        if (EVP_CipherFinal_ex(c->ctx, data + len, &outl) != 1 ||
            EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_GET_TAG, PD_OBJ_TAG_SIZE, tag) != 1)
            return -1;
        return 0;
    }
    if (EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_TAG, PD_OBJ_TAG_SIZE, tag) != 1)
        return -1;
    return EVP_CipherFinal_ex(c->ctx, data + len, &outl) == 1 ? 0 : 1;
}

/* ---- seal ---- */

typedef struct seal_stage {
    pd_stage base;
    obj_crypto c;
    unsigned char header[PD_OBJ_HEADER_SIZE];
    bool header_sent;
    size_t frame_size;
    unsigned char *buf; /* LEN_SIZE + frame_size + TAG */
    size_t fill;
} seal_stage;

static int
seal_emit(seal_stage *s, bool last, pd_err *err)
{
    unsigned char *data = s->buf + LEN_SIZE;
    uint32_t len = (uint32_t)s->fill;
    int rc;

    if (!s->header_sent) {
        if ((rc = pd_stage_forward(&s->base, s->header, sizeof(s->header), err)) < 0)
            return rc;
        s->header_sent = true;
    }
    if (s->c.counter == UINT32_MAX)
        return pd_err_set(err, PD_EFAIL, "cannot store an object of 2^32 frames or more (4 PiB)");
    put_be32(s->buf, len | (last ? LAST_FLAG : 0));
    if (crypt_frame(&s->c, 1, last, data, len, data + len) != 0)
        return crypto_fail(err, "encrypt a frame");
    s->c.counter++;
    s->fill = 0;
    return pd_stage_forward(&s->base, s->buf, LEN_SIZE + len + PD_OBJ_TAG_SIZE, err);
}

static int
seal_write(pd_stage *st, const void *buf, size_t len, pd_err *err)
{
    seal_stage *s = (seal_stage *)st;
    const unsigned char *p = buf;
    int rc;

    while (len > 0) {
        // A full frame is sealed only when more data follows: the last frame
        // must carry the flag, and only finish() knows which one is last.
        if (s->fill == s->frame_size && (rc = seal_emit(s, false, err)) < 0)
            return rc;
        size_t n = s->frame_size - s->fill;
        if (n > len)
            n = len;
        memcpy(s->buf + LEN_SIZE + s->fill, p, n);
        s->fill += n;
        p += n;
        len -= n;
    }
    return 0;
}

static int
seal_finish(pd_stage *st, pd_err *err)
{
    seal_stage *s = (seal_stage *)st;
    int rc;

    if ((rc = seal_emit(s, true, err)) < 0)
        return rc;
    return pd_stage_forward_finish(st, err);
}

static void
seal_free(pd_stage *st)
{
    seal_stage *s = (seal_stage *)st;

    crypto_cleanup(&s->c);
    if (s->buf)
        pd_free_secret(s->buf, LEN_SIZE + s->frame_size + PD_OBJ_TAG_SIZE);
}

static const pd_stage_ops seal_ops = {"seal", seal_write, seal_finish, seal_free};

int
pd_obj_writer_new(pd_stage **out, const pd_obj_write_opts *opts, pd_stage *next, pd_err *err)
{
    seal_stage *s = pd_calloc(1, sizeof(*s));
    pd_stage *head = &s->base;
    unsigned char *h = s->header;
    int rc;

    *out = NULL;
    pd_stage_init(&s->base, &seal_ops, next);
    s->frame_size = opts->frame_size ? opts->frame_size : PD_OBJ_FRAME_SIZE;
    s->c.cipher = opts->cipher;
    PD_ASSERT(s->frame_size <= PD_OBJ_MAX_FRAME_SIZE && opts->identity != NULL);
    PD_ASSERT(opts->cipher == PD_CIPHER_NONE ||
              (opts->data_key && pd_secret_len(opts->data_key) == PD_KEY_SIZE && opts->key_id));

    memcpy(h, PD_OBJ_MAGIC, 8); // with its NUL
    h[8] = PD_OBJ_VERSION;
    h[9] = (unsigned char)opts->compression;
    h[10] = (unsigned char)opts->cipher;
    h[11] = 0;
    put_be32(h + 12, (uint32_t)s->frame_size);
    if (opts->cipher != PD_CIPHER_NONE)
        memcpy(h + 16, opts->key_id, PD_KEY_ID_SIZE);
    if (RAND_bytes(h + 32, PD_OBJ_SALT_SIZE) != 1) {
        rc = pd_err_set(err, PD_EFAIL, "could not get random bytes from OpenSSL");
        goto fail;
    }
    if ((rc = crypto_setup(&s->c, h, opts->identity, opts->data_key, err)) < 0)
        goto fail;
    s->buf = pd_malloc(LEN_SIZE + s->frame_size + PD_OBJ_TAG_SIZE);
    if (opts->compression == PD_COMPRESSION_ZSTD) {
        rc = pd_stage_zstd_new(&head, &opts->zstd, &s->base, err);
        if (rc < 0)
            return rc; // head (with s below it) was freed by pd_stage_zstd_new
    }
    *out = head;
    return 0;
fail:
    pd_stage_free(&s->base);
    return rc;
}

/* ---- open ---- */

typedef enum open_state {
    WANT_HEADER,
    WANT_LEN,
    WANT_BODY,
    DONE,
} open_state;

typedef struct open_stage {
    pd_stage base;
    obj_crypto c;
    pd_obj_read_opts opts;
    char *identity;
    open_state state;
    unsigned char header[PD_OBJ_HEADER_SIZE];
    size_t frame_size;
    unsigned char *buf; /* LEN_SIZE + frame_size + TAG */
    size_t have, want;
    uint32_t body_len;
    bool body_last;
} open_stage;

static int corrupt(open_stage *o, pd_err *err, const char *fmt, ...) PD_PRINTF(3, 4);

/* Fails with PD_ECORRUPT: "object "<identity>" is corrupt: <cause>". */
static int
corrupt(open_stage *o, pd_err *err, const char *fmt, ...)
{
    char cause[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cause, sizeof(cause), fmt, ap);
    va_end(ap);
    return pd_err_set(err, PD_ECORRUPT, "object \"%s\" is corrupt: %s", o->identity, cause);
}

static int
open_header(open_stage *o, pd_err *err)
{
    static const char *const cipher_names[] = {"none", "aes-256-gcm"};
    const unsigned char *h = o->header;
    const pd_secret *key = NULL;
    int rc;

    if (memcmp(h, PD_OBJ_MAGIC, 8) != 0)
        return corrupt(o, err, "not a pgdrill object (bad magic)");
    if (h[8] != PD_OBJ_VERSION)
        return pd_err_set(err, PD_ECORRUPT,
                          "cannot read object \"%s\": format version %u is not supported by this "
                          "pgdrill (reads version %d); upgrade pgdrill",
                          o->identity, h[8], PD_OBJ_VERSION);
    if (h[9] > PD_COMPRESSION_ZSTD || h[10] > PD_CIPHER_AES_256_GCM || h[11] != 0)
        return corrupt(o, err, "the header names an unknown compression or cipher");
    o->frame_size = get_be32(h + 12);
    if (o->frame_size == 0 || o->frame_size > PD_OBJ_MAX_FRAME_SIZE)
        return corrupt(o, err, "the header gives a bad frame size");
    if (h[10] != o->opts.expect_cipher)
        return pd_err_set(err, PD_ECORRUPT,
                          "object \"%s\" is corrupt: it is stored with cipher %s but the "
                          "repository uses %s",
                          o->identity, cipher_names[h[10]], cipher_names[o->opts.expect_cipher]);
    o->c.cipher = (pd_cipher)h[10];
    if (o->c.cipher != PD_CIPHER_NONE &&
        (rc = o->opts.lookup(o->opts.payload, h + 16, &key, err)) < 0) {
        // Name the object, keeping the lookup's cause, hint and errno.
        char cause[PD_ERR_MSG_MAX], hint[PD_ERR_HINT_MAX];
        int sys_errno = err ? err->sys_errno : 0;
        snprintf(cause, sizeof(cause), "%s", err ? err->msg : "");
        snprintf(hint, sizeof(hint), "%s", err ? err->hint : "");
        pd_err_set(err, rc, "cannot read object \"%s\": %s", o->identity, cause);
        if (err != NULL && hint[0] != '\0')
            pd_err_hint(err, "%s", hint);
        if (err != NULL)
            err->sys_errno = sys_errno;
        return rc;
    }
    if ((rc = crypto_setup(&o->c, h, o->identity, key, err)) < 0)
        return rc;
    o->buf = pd_malloc(LEN_SIZE + o->frame_size + PD_OBJ_TAG_SIZE);
    // Compression is known only now: put a decompressor in front of next.
    // When parallel, open, the decompressor (which finds frame boundaries,
    // and streams frames without a content size), its threads running whole
    // zstd frames, and next with everything after it (on the decompressor's
    // emitter thread) all run on threads of their own:
    // open -> async -> unzstd -> next. Without compression, open -> async -> next.
    pd_stage *next = o->base.next;
    o->base.next = NULL;
    if (h[9] == PD_COMPRESSION_ZSTD) {
        int workers = o->opts.parallel ? PD_OBJ_DECODE_THREADS : 0;
        if ((rc = pd_stage_unzstd_new(&next, o->identity, workers, next, err)) < 0)
            return rc; // next was freed with the failed stage
    }
    if (o->opts.parallel)
        next = pd_stage_async_new(next, PD_ASYNC_SLOT, PD_ASYNC_SLOTS);
    o->base.next = next;
    return 0;
}

static int
open_body(open_stage *o, pd_err *err)
{
    unsigned char *data = o->buf;
    int r = crypt_frame(&o->c, 0, o->body_last, data, o->body_len, data + o->body_len);

    if (r < 0)
        return crypto_fail(err, "decrypt a frame");
    if (r > 0)
        return corrupt(o, err,
                       "frame %u failed verification (damaged, reordered, dropped, or not this "
                       "object's)",
                       o->c.counter);
    o->c.counter++;
    return pd_stage_forward(&o->base, data, o->body_len, err);
}

static int
open_write(pd_stage *st, const void *buf, size_t len, pd_err *err)
{
    open_stage *o = (open_stage *)st;
    const unsigned char *p = buf;
    int rc;

    while (len > 0) {
        unsigned char *dst;
        switch (o->state) {
        case WANT_HEADER:
            dst = o->header;
            o->want = PD_OBJ_HEADER_SIZE;
            break;
        case WANT_LEN:
            dst = o->buf;
            o->want = LEN_SIZE;
            break;
        case WANT_BODY:
            dst = o->buf;
            o->want = o->body_len + PD_OBJ_TAG_SIZE;
            break;
        default:
            return corrupt(o, err, "data follows the final frame");
        }
        size_t n = o->want - o->have;
        if (n > len)
            n = len;
        memcpy(dst + o->have, p, n);
        o->have += n;
        p += n;
        len -= n;
        if (o->have < o->want)
            break;
        o->have = 0;
        if (o->state == WANT_HEADER) {
            if ((rc = open_header(o, err)) < 0)
                return rc;
            o->state = WANT_LEN;
        } else if (o->state == WANT_LEN) {
            uint32_t v = get_be32(o->buf);
            o->body_last = (v & LAST_FLAG) != 0;
            o->body_len = v & ~LAST_FLAG;
            // Invariant 2: only the last frame may be short.
            if (o->body_len > o->frame_size || (!o->body_last && o->body_len != o->frame_size))
                return corrupt(o, err, "frame %u has a bad length", o->c.counter);
            o->state = WANT_BODY;
        } else {
            if ((rc = open_body(o, err)) < 0)
                return rc;
            o->state = o->body_last ? DONE : WANT_LEN;
        }
    }
    return 0;
}

static int
open_finish(pd_stage *st, pd_err *err)
{
    open_stage *o = (open_stage *)st;

    if (o->state == WANT_HEADER)
        return corrupt(o, err, "shorter than its header");
    if (o->state != DONE)
        return corrupt(o, err, "truncated: no final frame after %u frames", o->c.counter);
    return pd_stage_forward_finish(st, err);
}

static void
open_free(pd_stage *st)
{
    open_stage *o = (open_stage *)st;

    crypto_cleanup(&o->c);
    if (o->buf)
        pd_free_secret(o->buf, LEN_SIZE + o->frame_size + PD_OBJ_TAG_SIZE);
    pd_free(o->identity);
}

static const pd_stage_ops open_ops = {"open", open_write, open_finish, open_free};

int
pd_obj_reader_new(pd_stage **out, const pd_obj_read_opts *opts, pd_stage *next, pd_err *err)
{
    open_stage *o = pd_calloc(1, sizeof(*o));

    (void)err;
    PD_ASSERT(opts->identity != NULL);
    PD_ASSERT(opts->expect_cipher == PD_CIPHER_NONE || opts->lookup != NULL);
    pd_stage_init(&o->base, &open_ops, next);
    o->opts = *opts;
    o->identity = pd_strdup(opts->identity);
    *out = &o->base;
    return 0;
}
