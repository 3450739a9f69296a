/*
 * The stage chain machinery (see stage.h), and the simple stages: sinks,
 * count+hash (OpenSSL EVP SHA-256, SHA-NI where the CPU has it).
 */
#include "pipeline/stage.h"

#include <string.h>

#include <openssl/evp.h>

#include "common/mem.h"

void
pd_stage_init(pd_stage *s, const pd_stage_ops *ops, pd_stage *next)
{
    s->ops = ops;
    s->next = next;
    s->rc = 0;
    s->finished = false;
    s->cleanup = NULL;
    s->cleanup_payload = NULL;
    pd_err_clear(&s->failure);
}

/* Records a failure so that later calls repeat it. */
static int
stick(pd_stage *s, int rc, pd_err *err)
{
    s->rc = rc;
    if (err)
        s->failure = *err;
    else
        pd_err_set(&s->failure, rc, "%s stage failed", s->ops->name);
    return rc;
}

static int
repeat(const pd_stage *s, pd_err *err)
{
    if (err)
        *err = s->failure;
    return s->rc;
}

void
pd_stage_set_cleanup(pd_stage *s, void (*fn)(void *), void *payload)
{
    s->cleanup = fn;
    s->cleanup_payload = payload;
}

int
pd_stage_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    int rc;

    if (s->rc)
        return repeat(s, err);
    PD_ASSERT(!s->finished);
    if (len == 0)
        return 0;
    if ((rc = s->ops->write(s, buf, len, err)) < 0)
        return stick(s, rc, err);
    return 0;
}

int
pd_stage_finish(pd_stage *s, pd_err *err)
{
    int rc;

    if (s->rc)
        return repeat(s, err);
    PD_ASSERT(!s->finished);
    s->finished = true;
    if ((rc = s->ops->finish(s, err)) < 0)
        return stick(s, rc, err);
    return 0;
}

void
pd_stage_free(pd_stage *s)
{
    while (s) {
        pd_stage *next = s->next;
        if (s->ops->free)
            s->ops->free(s);
        if (s->cleanup)
            s->cleanup(s->cleanup_payload);
        pd_free(s);
        s = next;
    }
}

int
pd_stage_forward(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    return s->next ? pd_stage_write(s->next, buf, len, err) : 0;
}

int
pd_stage_forward_finish(pd_stage *s, pd_err *err)
{
    return s->next ? pd_stage_finish(s->next, err) : 0;
}

/* ---- sink ---- */

typedef struct sink_stage {
    pd_stage base;
    pd_sink_write_fn write_fn;
    pd_sink_finish_fn finish_fn;
    void *payload;
} sink_stage;

static int
sink_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    sink_stage *k = (sink_stage *)s;
    return k->write_fn ? k->write_fn(k->payload, buf, len, err) : 0;
}

static int
sink_finish(pd_stage *s, pd_err *err)
{
    sink_stage *k = (sink_stage *)s;
    return k->finish_fn ? k->finish_fn(k->payload, err) : 0;
}

static const pd_stage_ops sink_ops = {"sink", sink_write, sink_finish, NULL};

pd_stage *
pd_stage_sink_new(pd_sink_write_fn write_fn, pd_sink_finish_fn finish_fn, void *payload)
{
    sink_stage *k = pd_calloc(1, sizeof(*k));

    pd_stage_init(&k->base, &sink_ops, NULL);
    k->write_fn = write_fn;
    k->finish_fn = finish_fn;
    k->payload = payload;
    return &k->base;
}

pd_stage *
pd_stage_null_new(void)
{
    return pd_stage_sink_new(NULL, NULL, NULL);
}

/* ---- count + SHA-256 ---- */

typedef struct hash_stage {
    pd_stage base;
    EVP_MD_CTX *md;
    uint64_t bytes;
    unsigned char digest[32];
} hash_stage;

static int
hash_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    hash_stage *h = (hash_stage *)s;

    if (EVP_DigestUpdate(h->md, buf, len) != 1)
        return pd_err_set(err, PD_EFAIL, "could not compute SHA-256: OpenSSL failed");
    h->bytes += len;
    return pd_stage_forward(s, buf, len, err);
}

static int
hash_finish(pd_stage *s, pd_err *err)
{
    hash_stage *h = (hash_stage *)s;
    unsigned int n = 0;

    if (EVP_DigestFinal_ex(h->md, h->digest, &n) != 1 || n != 32)
        return pd_err_set(err, PD_EFAIL, "could not compute SHA-256: OpenSSL failed");
    return pd_stage_forward_finish(s, err);
}

static void
hash_free(pd_stage *s)
{
    EVP_MD_CTX_free(((hash_stage *)s)->md);
}

static const pd_stage_ops hash_ops = {"sha256", hash_write, hash_finish, hash_free};

pd_stage *
pd_stage_hash_new(pd_stage *next)
{
    hash_stage *h = pd_calloc(1, sizeof(*h));

    pd_stage_init(&h->base, &hash_ops, next);
    h->md = EVP_MD_CTX_new();
    PD_ASSERT(h->md != NULL);
    // Cannot fail for a built-in digest short of memory exhaustion.
    PD_ASSERT(EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) == 1);
    return &h->base;
}

void
pd_stage_hash_result(const pd_stage *s, unsigned char sha256[32], uint64_t *bytes)
{
    const hash_stage *h = (const hash_stage *)s;

    PD_ASSERT(s->ops == &hash_ops && s->finished && s->rc == 0);
    memcpy(sha256, h->digest, 32);
    *bytes = h->bytes;
}

uint64_t
pd_stage_hash_bytes(const pd_stage *s)
{
    PD_ASSERT(s->ops == &hash_ops);
    return ((const hash_stage *)s)->bytes;
}

void
pd_hex(char *out, const unsigned char *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}
