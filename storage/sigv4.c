/*
 * AWS Signature Version 4 (see sigv4.h). The canonical request is built in a
 * growable string bounded by the request (a few headers, a short query), the
 * signing key is derived with HMAC-SHA256 and wiped after use.
 *
 * Invariant: output depends only on the request, never on the order in
 * which query parameters or headers were given (other than the order of
 * repeated header names, which SigV4 keeps).
 */
#include "storage/sigv4.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "common/mem.h"
#include "pipeline/stage.h"

/* More is a programming error: S3 requests sign six headers at most. */
#define MAX_HEADERS 32
#define MAX_QUERY   32

typedef struct sbuf {
    char *data;
    size_t len, cap;
} sbuf;

static void
sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->data = pd_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void
sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static bool
unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

char *
pd_sigv4_uri_encode(const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = pd_malloc(3 * n + 1), *o = out;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

void
pd_sigv4_sha256_hex(char out[65], const void *data, size_t len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    SHA256(data, len, md);
    pd_hex(out, md, sizeof(md));
}

typedef struct qpair {
    char *name, *value; /* encoded */
} qpair;

static int
qpair_cmp(const void *a, const void *b)
{
    const qpair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

typedef struct hdr {
    char *name;  /* lowercase */
    char *value; /* trimmed, spaces collapsed */
    size_t order;
} hdr;

static int
hdr_cmp(const void *a, const void *b)
{
    const hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static char *
lower_dup(const char *s)
{
    char *out = pd_strdup(s);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return out;
}

static char *
trim_dup(const char *s)
{
    size_t n = strlen(s);
    char *out = pd_malloc(n + 1), *o = out;
    bool space = false;

    while (*s == ' ' || *s == '\t')
        s++;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t') {
            space = true;
            continue;
        }
        if (space && o != out)
            *o++ = ' ';
        space = false;
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

static bool
valid_date(const char *d)
{
    if (d == NULL || strlen(d) != PD_SIGV4_DATE_LEN - 1 || d[8] != 'T' || d[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (d[i] < '0' || d[i] > '9'))
            return false;
    return true;
}

static void
hmac(unsigned char out[32], const void *key, size_t keylen, const char *msg)
{
    unsigned int outlen = 32;
    unsigned char *done =
        HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &outlen);
    PD_ASSERT(done != NULL && outlen == 32); // only a broken OpenSSL fails here
}

int
pd_sigv4_sign(char **authorization, const pd_sigv4_request *req, pd_sigv4_debug *debug, pd_err *err)
{
    qpair q[MAX_QUERY];
    hdr h[MAX_HEADERS];
    sbuf creq = {0}, sts = {0}, signed_headers = {0};
    char hash[65], date[9], scope[128], sig[65];
    unsigned char k[32], k2[32];
    int rc = 0;

    *authorization = NULL;
    if (debug)
        debug->canonical_request = debug->string_to_sign = NULL;
    if (!valid_date(req->amz_date))
        return pd_err_set(err, PD_EUSAGE, "bad signing time \"%s\": want YYYYMMDDTHHMMSSZ",
                          req->amz_date ? req->amz_date : "");
    if (req->n_headers > MAX_HEADERS || req->n_query > MAX_QUERY)
        return pd_err_set(err, PD_EUSAGE, "too many headers or query parameters to sign");

    // Canonical request: method, URI, query, headers, signed headers, hash.
    sb_str(&creq, req->method);
    sb_str(&creq, "\n");
    char *uri = pd_sigv4_uri_encode(req->path && req->path[0] ? req->path : "/", 1);
    sb_str(&creq, uri);
    pd_free(uri);
    sb_str(&creq, "\n");

    for (size_t i = 0; i < req->n_query; i++) {
        q[i].name = pd_sigv4_uri_encode(req->query[i].name, 0);
        q[i].value = pd_sigv4_uri_encode(req->query[i].value ? req->query[i].value : "", 0);
    }
    qsort(q, req->n_query, sizeof(q[0]), qpair_cmp);
    for (size_t i = 0; i < req->n_query; i++) {
        if (i)
            sb_str(&creq, "&");
        sb_str(&creq, q[i].name);
        sb_str(&creq, "=");
        sb_str(&creq, q[i].value);
        pd_free(q[i].name);
        pd_free(q[i].value);
    }
    sb_str(&creq, "\n");

    for (size_t i = 0; i < req->n_headers; i++) {
        h[i].name = lower_dup(req->headers[i].name);
        h[i].value = trim_dup(req->headers[i].value);
        h[i].order = i;
    }
    qsort(h, req->n_headers, sizeof(h[0]), hdr_cmp);
    for (size_t i = 0; i < req->n_headers; i++) {
        bool repeat = i > 0 && strcmp(h[i].name, h[i - 1].name) == 0;
        if (repeat) {
            sb_str(&creq, ",");
        } else {
            if (i)
                sb_str(&creq, "\n");
            sb_str(&creq, h[i].name);
            sb_str(&creq, ":");
            if (signed_headers.len)
                sb_str(&signed_headers, ";");
            sb_str(&signed_headers, h[i].name);
        }
        sb_str(&creq, h[i].value);
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        pd_free(h[i].name);
        pd_free(h[i].value);
    }
    sb_str(&creq, "\n\n");
    sb_str(&creq, signed_headers.data ? signed_headers.data : "");
    sb_str(&creq, "\n");
    sb_str(&creq, req->payload_hash);

    // String to sign.
    memcpy(date, req->amz_date, 8);
    date[8] = '\0';
    int n =
        snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, req->region, req->service);
    if (n < 0 || (size_t)n >= sizeof(scope)) {
        rc = pd_err_set(err, PD_ECONFIG, "bad s3-region \"%s\": too long", req->region);
        goto cleanup;
    }
    pd_sigv4_sha256_hex(hash, creq.data, creq.len);
    sb_str(&sts, "AWS4-HMAC-SHA256\n");
    sb_str(&sts, req->amz_date);
    sb_str(&sts, "\n");
    sb_str(&sts, scope);
    sb_str(&sts, "\n");
    sb_str(&sts, hash);

    // Signing key: HMAC chain from "AWS4" + secret.
    size_t slen = pd_secret_len(req->secret_key);
    unsigned char *k0 = pd_malloc(slen + 4);
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, pd_secret_data(req->secret_key), slen);
    hmac(k, k0, slen + 4, date);
    pd_free_secret(k0, slen + 4);
    hmac(k2, k, 32, req->region);
    hmac(k, k2, 32, req->service);
    hmac(k2, k, 32, "aws4_request");
    hmac(k, k2, 32, sts.data);
    pd_hex(sig, k, 32);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(k2, sizeof(k2));

    *authorization =
        pd_asprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                    "Signature=%s",
                    req->access_key, scope, signed_headers.data ? signed_headers.data : "", sig);
    if (debug) {
        debug->canonical_request = creq.data;
        debug->string_to_sign = sts.data;
        creq.data = sts.data = NULL;
    }
cleanup:
    pd_free(creq.data);
    pd_free(sts.data);
    pd_free(signed_headers.data);
    return rc;
}

void
pd_sigv4_debug_free(pd_sigv4_debug *debug)
{
    if (debug == NULL)
        return;
    pd_free(debug->canonical_request);
    pd_free(debug->string_to_sign);
    debug->canonical_request = debug->string_to_sign = NULL;
}
