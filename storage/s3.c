/*
 * The S3 storage driver (see s3.h and storage.h): objects are S3 objects
 * under "<prefix>/" in one bucket, reached over one reused libcurl handle and
 * signed with Signature V4 (sigv4.c).
 *
 * What each operation guarantees, and what a failure or a crash leaves:
 *
 *  1. Writing buffers one part (pd_s3_part_size(): 8 MiB at first) and
 *     computes its MD5 and SHA-256. An object that fits in one part is sent by
 *     one PUT at commit; a larger one starts a multipart upload at its second
 *     part, and every full part is uploaded as it fills. Each PUT and part
 *     carries Content-MD5 and the signed x-amz-content-sha256 of its bytes,
 *     so the server checks every byte it stores (s3rver does not: pgdrill's
 *     own hashes and tags, checked by verify and every reader, still do).
 *  2. Nothing appears at the path before commit: an unfinished multipart
 *     upload is invisible. A writer freed uncommitted aborts its upload; a
 *     crash leaves an unfinished upload (bucket lifecycle rules remove those;
 *     it is never listed).
 *  3. Commit completes the upload only when every part succeeded, and parses
 *     the completion's body: S3 may answer 200 with an <Error>. It then
 *     confirms the object with HEAD (size equal to the bytes written) and, for
 *     a multipart object, the ETag against the parts' MD5s ("md5(md5s)-N").
 *     Commit fails unless the object is confirmed, so a caller that commits
 *     manifest.json last never commits a backup naming an unconfirmed object.
 *  4. no_overwrite: a HEAD just before the PUT or the completion; an existing
 *     object is PD_EEXIST. Not atomic: two writers racing between HEAD and PUT
 *     can both succeed, the later object winning. pgdrill never has two
 *     writers of one path (archive-push is called once per segment by one
 *     server; the cluster lock serializes backups), so this is accepted.
 *  5. Reading: HEAD for the size and ETag, then GETs of at most READ_CHUNK
 *     bytes with Range and If-Match (the object cannot change under a reader
 *     unnoticed); a connection dropped mid-chunk resumes with a Range from
 *     the byte reached. Memory is the chunk buffer whatever the object size.
 *  6. Retries: connection errors, 5xx, SlowDown and RequestTimeout are
 *     retried with exponential backoff and full jitter, at most MAX_ATTEMPTS
 *     times and RETRY_BUDGET seconds per request. Authentication errors are
 *     not retried and say what to check; RequestTimeTooSkewed says clock.
 *  7. remove_prefix and remove_many delete with DeleteObjects, up to 1000
 *     keys a request (with Content-MD5, which S3 requires); remove_prefix
 *     re-lists after each batch. Not atomic: after a failure or a crash any
 *     of a batch's keys may be gone.
 *
 * Secrets: the secret key and the session token are pd_secrets (redacted
 * from any log line); headers, URLs with signatures and request bodies are
 * never logged.
 */
#include "storage/s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "common/log.h"
#include "common/mem.h"
#include "common/secret.h"
#include "common/time.h"
#include "pipeline/stage.h"
#include "storage/sigv4.h"

#define MIB            (1024 * 1024)
#define READ_CHUNK     (4 * MIB)
#define LIST_BODY_MAX  (8 * MIB) /* a ListObjectsV2 page of 1000 keys is ~300 KiB */
#define LIST_PAGES_MAX 1000000   /* 10^9 keys: far beyond any repository */
#define SMALL_BODY_MAX (1 * MIB) /* other XML answers */
#define ERROR_BODY_MAX (64 * 1024)
#define DELETE_BATCH   1000
#define MAX_ATTEMPTS   8
#define RETRY_BUDGET   120.0 /* seconds per request, all attempts */
#define BACKOFF_BASE   0.2   /* seconds, doubled per attempt ... */
#define BACKOFF_MAX    10.0  /* ... up to this */
#define LOW_SPEED_TIME 20L   /* seconds under 1 byte/s: a hung connection */
#define CONNECT_TIME   10L
#define ATTEMPT_TIME   120 /* seconds per attempt, plus 4 s per MiB moved */
#define CREDS_MAX      8192
#define ETAG_MAX       80

/* ---------------------------------------------------------------- probe */

static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *payload)
{
    (void)ptr;
    (void)payload;
    return size * nmemb;
}

int
pd_s3_probe(long *http_status, char **url_out, const pd_s3_probe_opts *opts, pd_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *curl = NULL;
    CURLcode cc;
    char *url;
    int rc = 0;

    *http_status = 0;
    if (strncmp(opts->endpoint, "http://", 7) == 0 || strncmp(opts->endpoint, "https://", 8) == 0)
        url = pd_asprintf("%s/", opts->endpoint);
    else
        url = pd_asprintf("https://%s/", opts->endpoint);
    *url_out = url;

    curl = curl_easy_init();
    if (curl == NULL)
        return pd_err_set(err, PD_ENET, "could not initialise libcurl");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, opts->timeout ? opts->timeout : 30L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, opts->verify_tls ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, opts->verify_tls ? 2L : 0L);
    if (opts->ca_file)
        curl_easy_setopt(curl, CURLOPT_CAINFO, opts->ca_file);
    cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        rc = pd_err_set(err, PD_ENET, "could not reach S3 endpoint \"%s\": %s", url,
                        errbuf[0] ? errbuf : curl_easy_strerror(cc));
        pd_err_hint(err, "check s3-endpoint and that the server is running");
    } else {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http_status);
    }
    curl_easy_cleanup(curl);
    return rc;
}

int
pd_s3_parse_repo(char **bucket, char **prefix, const char *repo, pd_err *err)
{
    const char *b, *slash;

    *bucket = *prefix = NULL;
    if (strncmp(repo, "s3://", 5) != 0)
        return pd_err_set(err, PD_ECONFIG, "repository \"%s\" is not an s3:// URL", repo);
    b = repo + 5;
    slash = strchr(b, '/');
    size_t blen = slash ? (size_t)(slash - b) : strlen(b);
    if (blen < 3 || blen > 63)
        return pd_err_set(err, PD_ECONFIG,
                          "bad repository \"%s\": a bucket name has 3 to 63 characters", repo);
    for (size_t i = 0; i < blen; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return pd_err_set(err, PD_ECONFIG,
                              "bad repository \"%s\": bucket names use a-z, 0-9, '-' and '.'",
                              repo);
    }
    *bucket = pd_strndup(b, blen);
    const char *p = slash ? slash + 1 : "";
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    *prefix = pd_strndup(p, plen);
    return 0;
}

size_t
pd_s3_part_size(unsigned part_number)
{
    unsigned tier = part_number > 0 ? (part_number - 1) / 1000 : 0;
    if (tier > 7)
        tier = 7;
    return (size_t)8 * MIB << tier;
}

/* ---------------------------------------------------------------- the driver */

typedef struct s3_storage {
    pd_storage base;
    char *bucket;
    char *prefix;   /* "" or "a/b", no slash at either end */
    char *base_url; /* "https://host[:port]", the bucket included for host style */
    char *host;     /* the Host header */
    bool path_style;
    char *region;
    char *ca_file;
    bool verify_tls;
    char *access_key;
    pd_secret *secret_key;
    pd_secret *token; /* NULL without a session token */
    bool creds_file;  /* credentials came from s3-credentials-file */
    CURL *curl;
} s3_storage;

/* A growable response body with a limit. */
typedef struct body {
    char *data;
    size_t len, cap, max;
    bool overflow;
} body;

static void
body_free(body *b)
{
    pd_free(b->data);
    memset(b, 0, sizeof(*b));
}

/* One request. */
typedef struct s3_req {
    const char *method;
    const char *key; /* object key with the repository prefix; NULL: the bucket */
    pd_sigv4_param query[6];
    size_t n_query;
    const unsigned char *data; /* request body (PUT, POST) */
    size_t data_len;
    const char *content_md5; /* base64, or NULL */
    const char *content_type;
    char range[64]; /* "bytes=a-b" or "" */
    const char *if_match;
    size_t body_max; /* 0: the answer's body is discarded unless it is an error */
    /* Streamed GET: 2xx body bytes go here instead of the body. */
    unsigned char *sink;
    size_t sink_cap, sink_len;
} s3_req;

typedef struct s3_resp {
    long status;
    body b; /* 2xx body (when body_max) or the error body */
    char etag[ETAG_MAX];
    char last_modified[64];
    char date[64]; /* the server's clock (Date), for clock-skew errors */
    char content_range[96];
    uint64_t content_length;
    bool have_length;
    size_t upload_pos; /* read callback position */
    const s3_req *req;
    bool sink_overflow;
} s3_resp;

/* --------------------------------------------------------------- helpers */

static void
xml_unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p;) {
        if (*p == '&') {
            static const struct {
                const char *ent;
                char c;
            } ents[] = {
                {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
            bool done = false;
            for (size_t i = 0; i < PD_ARRAY_LEN(ents); i++) {
                size_t n = strlen(ents[i].ent);
                if (strncmp(p, ents[i].ent, n) == 0) {
                    *o++ = ents[i].c;
                    p += n;
                    done = true;
                    break;
                }
            }
            if (!done && p[1] == '#') {
                char *end;
                long v = p[2] == 'x' ? strtol(p + 3, &end, 16) : strtol(p + 2, &end, 10);
                if (*end == ';' && v > 0 && v < 128) {
                    *o++ = (char)v;
                    p = end + 1;
                    done = true;
                }
            }
            if (!done)
                *o++ = *p++;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
}

/*
 * Finds <tag>value</tag> in xml[0..end) (end NULL: the whole string) and
 * copies the unescaped value into out. Returns a pointer after the closing
 * tag, or NULL when absent or longer than outsize - 1.
 */
static const char *
xml_get(const char *xml, const char *end, const char *tag, char *out, size_t outsize)
{
    char open[64], close[64];
    const char *s, *e;

    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    s = strstr(xml, open);
    if (s == NULL || (end && s >= end))
        return NULL;
    s += strlen(open);
    e = strstr(s, close);
    if (e == NULL || (end && e > end) || (size_t)(e - s) >= outsize)
        return NULL;
    memcpy(out, s, (size_t)(e - s));
    out[e - s] = '\0';
    xml_unescape(out);
    return e + strlen(close);
}

static void
xml_escape_add(char **buf, size_t *len, size_t *cap, const char *s)
{
    for (; *s; s++) {
        const char *rep = NULL;
        char one[2] = {*s, 0};
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        default:
            rep = one;
        }
        size_t n = strlen(rep);
        if (*len + n + 1 > *cap) {
            *cap = (*cap + n + 1) * 2;
            *buf = pd_realloc(*buf, *cap);
        }
        memcpy(*buf + *len, rep, n + 1);
        *len += n;
    }
}

static void
md5(unsigned char out[16], const void *data, size_t len)
{
    if (EVP_Digest(data, len, out, NULL, EVP_md5(), NULL) != 1)
        pd_assert_fail("EVP_Digest(md5)", __FILE__, __LINE__);
}

static void
base64(char *out, size_t outsize, const unsigned char *in, size_t len)
{
    PD_ASSERT(outsize >= 4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static int
parse_http_date(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm) == NULL)
        return -1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static int
parse_iso_date(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
        return -1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

/* The signing time: now, or PD_S3_TEST_TIME_ENV (tests). */
static time_t
sign_time(void)
{
    const char *fixed = getenv(PD_S3_TEST_TIME_ENV);
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (fixed && strlen(fixed) == PD_SIGV4_DATE_LEN - 1 &&
        strptime(fixed, "%Y%m%dT%H%M%SZ", &tm) != NULL)
        return timegm(&tm);
    return time(NULL);
}

static void
amz_now(char out[PD_SIGV4_DATE_LEN])
{
    time_t t = sign_time();
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, PD_SIGV4_DATE_LEN, "%Y%m%dT%H%M%SZ", &tm);
}

/*
 * True when the server's Date and our signing time differ by more than the
 * 15 minutes S3 allows: an answer without a body (HEAD) cannot say
 * RequestTimeTooSkewed, so its 403 is read this way.
 */
static bool
clock_skewed(const char *server_date)
{
    int64_t server;

    if (server_date[0] == '\0' || parse_http_date(server_date, &server) < 0)
        return false;
    int64_t diff = server - (int64_t)sign_time();
    return diff > 15 * 60 || diff < -15 * 60;
}

/* The full key of a repository path ("" path: the prefix itself). */
static char *
full_key(const s3_storage *s, const char *path)
{
    if (s->prefix[0] == '\0')
        return pd_strdup(path);
    if (path[0] == '\0')
        return pd_strdup(s->prefix);
    return pd_asprintf("%s/%s", s->prefix, path);
}

/* ---------------------------------------------------------------- libcurl */

static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *payload)
{
    s3_resp *r = payload;
    size_t n = size * nmemb, vlen;
    char line[256];
    const char *v;

    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        // A new response (after a 100 Continue): forget the previous headers.
        const char *sp = memchr(ptr, ' ', n);
        r->etag[0] = r->last_modified[0] = r->content_range[0] = '\0';
        r->have_length = false;
        r->status = sp && (size_t)(sp - ptr) + 4 <= n ? strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    if (n >= sizeof(line))
        return n;
    memcpy(line, ptr, n);
    line[n] = '\0';
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        line[--n] = '\0';
    char *colon = strchr(line, ':');
    if (colon == NULL)
        return size * nmemb;
    *colon = '\0';
    v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    vlen = strlen(v);
    if (strcasecmp(line, "etag") == 0 && vlen < sizeof(r->etag))
        memcpy(r->etag, v, vlen + 1);
    else if (strcasecmp(line, "last-modified") == 0 && vlen < sizeof(r->last_modified))
        memcpy(r->last_modified, v, vlen + 1);
    else if (strcasecmp(line, "date") == 0 && vlen < sizeof(r->date))
        memcpy(r->date, v, vlen + 1);
    else if (strcasecmp(line, "content-range") == 0 && vlen < sizeof(r->content_range))
        memcpy(r->content_range, v, vlen + 1);
    else if (strcasecmp(line, "content-length") == 0) {
        char *end;
        errno = 0;
        unsigned long long len = strtoull(v, &end, 10);
        if (errno == 0 && end != v) {
            r->content_length = len;
            r->have_length = true;
        }
    }
    return size * nmemb;
}

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *payload)
{
    s3_resp *r = payload;
    const s3_req *q = r->req;
    size_t n = size * nmemb;
    long status = 0;

    // on_header saw the status line before any body byte.
    status = r->status;
    if (status >= 200 && status < 300 && q->sink) {
        s3_req *mq = (s3_req *)q;
        if (mq->sink_len + n > mq->sink_cap) {
            r->sink_overflow = true;
            return 0; // more than asked for: fail the transfer
        }
        memcpy(mq->sink + mq->sink_len, ptr, n);
        mq->sink_len += n;
        return n;
    }
    size_t max = (status >= 200 && status < 300) ? q->body_max : ERROR_BODY_MAX;
    body *b = &r->b;
    if (max == 0)
        return n;
    if (b->len + n > max) {
        b->overflow = true;
        if (status >= 200 && status < 300)
            return 0;
        n = max > b->len ? max - b->len : 0; // keep the start of an error body
        if (n == 0)
            return size * nmemb;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->data = pd_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return size * nmemb;
}

static size_t
on_upload(char *buf, size_t size, size_t nitems, void *payload)
{
    s3_resp *r = payload;
    size_t n = size * nitems, left = r->req->data_len - r->upload_pos;

    if (n > left)
        n = left;
    memcpy(buf, r->req->data + r->upload_pos, n);
    r->upload_pos += n;
    return n;
}

/* Rewinds the request body when libcurl must send it again (a redirect, auth). */
static int
on_seek(void *payload, curl_off_t offset, int origin)
{
    s3_resp *r = payload;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > r->req->data_len)
        return CURL_SEEKFUNC_FAIL;
    r->upload_pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/*
 * Sends q once. Returns the curl code; resp->status is the HTTP status (0
 * without an answer). errbuf gets libcurl's message.
 */
static CURLcode
perform(s3_storage *s, const s3_req *q, s3_resp *resp, char errbuf[CURL_ERROR_SIZE])
{
    char amz_date[PD_SIGV4_DATE_LEN], payload_hash[65];
    pd_sigv4_param h[10];
    size_t nh = 0;
    struct curl_slist *hl = NULL;
    char *auth = NULL, *path, *enc_path, *url, *line;
    pd_err serr = PD_ERR_INIT;
    CURLcode cc;
    CURL *c = s->curl;

    body_free(&resp->b);
    resp->b.max = q->body_max;
    resp->status = 0;
    resp->upload_pos = 0;
    resp->req = q;
    resp->sink_overflow = false;
    resp->etag[0] = resp->last_modified[0] = resp->content_range[0] = '\0';
    resp->have_length = false;
    errbuf[0] = '\0';

    // The path as signed: "/bucket/key" (path style) or "/key" (host style).
    if (s->path_style)
        path = q->key ? pd_asprintf("/%s/%s", s->bucket, q->key) : pd_asprintf("/%s", s->bucket);
    else
        path = pd_asprintf("/%s", q->key ? q->key : "");
    enc_path = pd_sigv4_uri_encode(path, 1);
    // The query as sent: the same encoding the signer uses, in any order.
    size_t ulen = strlen(s->base_url) + strlen(enc_path) + 2;
    for (size_t i = 0; i < q->n_query; i++)
        ulen += 3 * (strlen(q->query[i].name) + strlen(q->query[i].value)) + 2;
    url = pd_malloc(ulen);
    snprintf(url, ulen, "%s%s", s->base_url, enc_path);
    for (size_t i = 0; i < q->n_query; i++) {
        char *n = pd_sigv4_uri_encode(q->query[i].name, 0);
        char *v = pd_sigv4_uri_encode(q->query[i].value, 0);
        size_t used = strlen(url);
        snprintf(url + used, ulen - used, "%s%s=%s", i ? "&" : "?", n, v);
        pd_free(n);
        pd_free(v);
    }

    amz_now(amz_date);
    if (q->data_len)
        pd_sigv4_sha256_hex(payload_hash, q->data, q->data_len);
    else
        memcpy(payload_hash, PD_SIGV4_EMPTY_SHA256, 65);
    h[nh++] = (pd_sigv4_param){"host", s->host};
    h[nh++] = (pd_sigv4_param){"x-amz-date", amz_date};
    h[nh++] = (pd_sigv4_param){"x-amz-content-sha256", payload_hash};
    if (s->token)
        h[nh++] = (pd_sigv4_param){"x-amz-security-token", (const char *)pd_secret_data(s->token)};
    if (q->content_md5)
        h[nh++] = (pd_sigv4_param){"content-md5", q->content_md5};
    if (q->content_type)
        h[nh++] = (pd_sigv4_param){"content-type", q->content_type};
    if (q->range[0])
        h[nh++] = (pd_sigv4_param){"range", q->range};
    if (q->if_match)
        h[nh++] = (pd_sigv4_param){"if-match", q->if_match};
    pd_sigv4_request sr = {
        .method = q->method,
        .path = path,
        .query = q->query,
        .n_query = q->n_query,
        .headers = h,
        .n_headers = nh,
        .payload_hash = payload_hash,
        .amz_date = amz_date,
        .region = s->region,
        .service = "s3",
        .access_key = s->access_key,
        .secret_key = s->secret_key,
    };
    if (pd_sigv4_sign(&auth, &sr, NULL, &serr) < 0) {
        snprintf(errbuf, CURL_ERROR_SIZE, "%.200s", serr.msg);
        pd_free(path);
        pd_free(enc_path);
        pd_free(url);
        return CURLE_BAD_FUNCTION_ARGUMENT;
    }
    for (size_t i = 0; i < nh; i++) {
        line = pd_asprintf("%s: %s", h[i].name, h[i].value);
        hl = curl_slist_append(hl, line);
        pd_free_secret(line, strlen(line));
    }
    line = pd_asprintf("Authorization: %s", auth);
    hl = curl_slist_append(hl, line);
    pd_free_secret(line, strlen(line));
    pd_free_secret(auth, strlen(auth));
    hl = curl_slist_append(hl, "Expect:"); // no 100-continue round trip
    if (!q->content_type)
        hl = curl_slist_append(hl, "Content-Type:");
    hl = curl_slist_append(hl, "Accept:");

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIME);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME);
    // A whole attempt is bounded too: a server that trickles a byte now and
    // then passes the low-speed check forever. 120 s, plus 4 s per MiB moved.
    size_t moved = q->data_len > q->sink_cap ? q->data_len : q->sink_cap;
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)(ATTEMPT_TIME + moved / (256 * 1024)));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, s->verify_tls ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, s->verify_tls ? 2L : 0L);
    if (s->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    if (strcmp(q->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(q->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(c, CURLOPT_READDATA, resp);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, resp);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->data_len);
    } else if (strcmp(q->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->data ? (const char *)q->data : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->data_len);
    } else if (strcmp(q->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    }

    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_slist_free_all(hl);
    pd_free(path);
    pd_free(enc_path);
    pd_free(url);
    return cc;
}

/* The S3 error code and message of an error body (either may be empty). */
static void
error_code(const s3_resp *r, char *code, size_t codesize, char *msg, size_t msgsize)
{
    code[0] = msg[0] = '\0';
    if (r->b.data == NULL)
        return;
    xml_get(r->b.data, NULL, "Code", code, codesize);
    xml_get(r->b.data, NULL, "Message", msg, msgsize);
}

static bool
retryable(CURLcode cc, long status, const char *code)
{
    if (cc != CURLE_OK)
        return cc != CURLE_SSL_CACERT && cc != CURLE_PEER_FAILED_VERIFICATION &&
               cc != CURLE_SSL_CACERT_BADFILE && cc != CURLE_UNSUPPORTED_PROTOCOL &&
               cc != CURLE_URL_MALFORMAT && cc != CURLE_BAD_FUNCTION_ARGUMENT &&
               cc != CURLE_SSL_CERTPROBLEM && cc != CURLE_COULDNT_RESOLVE_HOST &&
               cc != CURLE_SSL_CONNECT_ERROR;
    if (status >= 500)
        return true;
    return strcmp(code, "RequestTimeout") == 0 || strcmp(code, "SlowDown") == 0 ||
           strcmp(code, "InternalError") == 0 || status == 408 || status == 429;
}

/* Full jitter: a random sleep in [0, min(max, base * 2^attempt)). */
static void
backoff(int attempt)
{
    double cap = BACKOFF_BASE * (double)(1u << (attempt < 16 ? attempt : 16));
    unsigned int rnd = 0;

    if (cap > BACKOFF_MAX)
        cap = BACKOFF_MAX;
    if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
        rnd = 0x7fffffffu;
    double t = cap * ((double)rnd / 4294967296.0);
    struct timespec ts = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/*
 * The message for a failed request: what (e.g. "could not write"), the path
 * and the cause from libcurl or S3, with a remedy for the causes a user can
 * fix.
 */
static int
request_error(pd_err *err, s3_storage *s, const char *what, const char *path, CURLcode cc,
              const s3_resp *r, const char *errbuf, int attempts)
{
    char code[128], msg[256], tries[48] = "";

    if (attempts > 1)
        snprintf(tries, sizeof(tries), " (after %d attempts)", attempts);
    if (cc != CURLE_OK) {
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
        pd_err_set(err, PD_ENET, "%s \"%s\" in repository \"%s\": %s%s", what, path, s->base.repo,
                   why, tries);
        switch (cc) {
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
            return pd_err_hint(err, "the server's certificate is not trusted: set s3-ca-file to "
                                    "its CA (or check s3-endpoint)");
        case CURLE_SSL_CONNECT_ERROR:
            return pd_err_hint(err, "check that s3-endpoint speaks HTTPS (write http:// before "
                                    "the host for a plain-HTTP server)");
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_OPERATION_TIMEDOUT:
            return pd_err_hint(err, "check s3-endpoint and that the server is reachable");
        default:
            return PD_ENET;
        }
    }
    error_code(r, code, sizeof(code), msg, sizeof(msg));
    if (strcmp(code, "RequestTimeTooSkewed") == 0 ||
        ((r->status == 401 || r->status == 403) && clock_skewed(r->date))) {
        pd_err_set(err, PD_ENET,
                   "%s \"%s\" in repository \"%s\": S3 refused the request because this "
                   "machine's clock differs from the server's by more than 15 minutes (clock "
                   "skew)",
                   what, path, s->base.repo);
        return pd_err_hint(err, "fix the system clock (NTP) and try again");
    }
    if (r->status == 401 || r->status == 403 || strcmp(code, "InvalidAccessKeyId") == 0 ||
        strcmp(code, "SignatureDoesNotMatch") == 0) {
        pd_err_set(err, PD_ECONFIG,
                   "S3 refused the credentials for bucket \"%s\" (%s%s%ld) when trying to %s "
                   "\"%s\"",
                   s->bucket, code[0] ? code : "", code[0] ? ", HTTP " : "HTTP ", r->status,
                   what + (strncmp(what, "could not ", 10) == 0 ? 10 : 0), path);
        const char *what_to_check =
            s->creds_file ? "check the keys in s3-credentials-file (and its session token if it "
                            "expired), s3-region and the bucket's policy"
                          : "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN "
                            "if it expired, s3-region and the bucket's policy";
        return pd_err_hint(err, "%s", what_to_check);
    }
    if (strcmp(code, "NoSuchBucket") == 0) {
        pd_err_set(err, PD_ECONFIG, "%s \"%s\" in repository \"%s\": bucket \"%s\" does not exist",
                   what, path, s->base.repo, s->bucket);
        return pd_err_hint(err, "create the bucket or correct repo");
    }
    return pd_err_set(err, PD_ENET,
                      "%s \"%s\" in repository \"%s\": S3 answered HTTP %ld%s%s%s%s%s", what, path,
                      s->base.repo, r->status, code[0] ? " " : "", code, msg[0] ? " (" : "", msg,
                      msg[0] ? ")" : "");
}

/*
 * Sends q with retries (6). Returns 0 for a 2xx answer without an <Error>
 * (when check_200 is false, a 200 body is not inspected), PD_ENOTFOUND for
 * 404 with no message set, else the error of request_error.
 */
static int
call(s3_storage *s, s3_req *q, s3_resp *r, const char *what, const char *path, bool check_200,
     pd_err *err)
{
    char errbuf[CURL_ERROR_SIZE], code[128], msg[256];
    double t0 = pd_time_mono();
    CURLcode cc;
    int attempt;

    for (attempt = 1;; attempt++) {
        double t = pd_time_mono();
        q->sink_len = 0;
        cc = perform(s, q, r, errbuf);
        code[0] = '\0';
        if (cc == CURLE_OK && r->status >= 200 && r->status < 300) {
            if (!check_200 || r->b.data == NULL || strstr(r->b.data, "<Error>") == NULL) {
                pd_log_debug("s3: %s %s: HTTP %ld in %.3fs", q->method, path, r->status,
                             pd_time_mono() - t);
                return 0;
            }
            // 200 with an <Error> body (CompleteMultipartUpload, CopyObject).
            xml_get(r->b.data, NULL, "Code", code, sizeof(code));
            xml_get(r->b.data, NULL, "Message", msg, sizeof(msg));
            pd_log_debug("s3: %s %s: HTTP 200 with error %s", q->method, path, code);
            if (retryable(CURLE_OK, 0, code)) {
                if (attempt < MAX_ATTEMPTS && pd_time_mono() - t0 < RETRY_BUDGET) {
                    backoff(attempt);
                    continue;
                }
            }
            return pd_err_set(err, PD_ENET,
                              "%s \"%s\" in repository \"%s\": S3 answered 200 with error %s%s%s%s",
                              what, path, s->base.repo, code[0] ? code : "(no code)",
                              msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
        }
        if (cc == CURLE_OK)
            error_code(r, code, sizeof(code), msg, sizeof(msg));
        pd_log_debug("s3: %s %s: %s%s%ld %s in %.3fs", q->method, path,
                     cc != CURLE_OK ? curl_easy_strerror(cc) : "",
                     cc != CURLE_OK ? ", HTTP " : "HTTP ", r->status, code, pd_time_mono() - t);
        if (cc == CURLE_OK && r->status == 404 && strcmp(code, "NoSuchBucket") != 0)
            return PD_ENOTFOUND;
        if (!retryable(cc, r->status, code) || attempt >= MAX_ATTEMPTS ||
            pd_time_mono() - t0 >= RETRY_BUDGET)
            return request_error(err, s, what, path, cc, r, errbuf, attempt);
        pd_log_warning("S3 request %s \"%s\" failed (%s%s), retrying", q->method, path,
                       cc != CURLE_OK ? (errbuf[0] ? errbuf : curl_easy_strerror(cc)) : "HTTP ",
                       cc != CURLE_OK ? ""
                       : code[0]      ? code
                                      : "5xx");
        backoff(attempt);
    }
}

static s3_storage *
s3_of(pd_storage *st)
{
    return (s3_storage *)st;
}

/* ---------------------------------------------------------------- stat */

/* HEAD of a full key: size, mtime and ETag. PD_ENOTFOUND with the message. */
static int
head(s3_storage *s, const char *path, uint64_t *size, int64_t *mtime, char *etag, pd_err *err)
{
    s3_req q = {.method = "HEAD"};
    s3_resp r = {0};
    char *key = full_key(s, path);
    int rc;

    q.key = key;
    rc = call(s, &q, &r, "could not read", path, false, err);
    if (rc == PD_ENOTFOUND)
        rc = pd_storage_err_notfound(err, &s->base, path);
    else if (rc == 0 && !r.have_length)
        rc = pd_err_set(err, PD_ENET,
                        "could not read \"%s\" in repository \"%s\": S3 answered without "
                        "Content-Length",
                        path, s->base.repo);
    if (rc == 0) {
        *size = r.content_length;
        if (mtime && parse_http_date(r.last_modified, mtime) < 0)
            *mtime = 0;
        if (etag)
            snprintf(etag, ETAG_MAX, "%s", r.etag);
    }
    body_free(&r.b);
    pd_free(key);
    return rc;
}

static int
s3_stat(pd_storage *st, const char *path, pd_storage_entry *out, pd_err *err)
{
    return head(s3_of(st), path, &out->size, &out->mtime, NULL, err);
}

/* ---------------------------------------------------------------- reading */

typedef struct s3_reader {
    pd_reader base;
    char *key;
    uint64_t size, off; /* object size, bytes fetched so far */
    char etag[ETAG_MAX];
    unsigned char *buf;
    size_t len, pos;
} s3_reader;

/* Fetches the next chunk into the buffer, resuming a dropped transfer (5). */
static int
fetch_chunk(s3_reader *sr, pd_err *err)
{
    s3_storage *s = s3_of(sr->base.st);
    uint64_t want = sr->size - sr->off;
    char errbuf[CURL_ERROR_SIZE], code[128], msg[256];
    s3_req q = {.method = "GET"};
    s3_resp r = {0};
    double t0 = pd_time_mono();
    size_t got = 0;
    int rc = 0;

    if (want > READ_CHUNK)
        want = READ_CHUNK;
    q.key = sr->key;
    q.if_match = sr->etag[0] ? sr->etag : NULL;
    q.sink = sr->buf;
    for (int attempt = 1;; attempt++) {
        uint64_t from = sr->off + got, to = sr->off + want - 1;
        snprintf(q.range, sizeof(q.range), "bytes=%llu-%llu", (unsigned long long)from,
                 (unsigned long long)to);
        q.sink = sr->buf + got;
        q.sink_cap = (size_t)want - got;
        q.sink_len = 0;
        CURLcode cc = perform(s, &q, &r, errbuf);
        got += q.sink_len; // whatever arrived counts: the next Range starts after it
        unsigned long long first;
        if (cc == CURLE_OK && r.status == 206 &&
            (sscanf(r.content_range, "bytes %llu-", &first) != 1 || first != from)) {
            rc = pd_err_set(err, PD_ENET,
                            "could not read \"%s\" in repository \"%s\": asked for bytes from "
                            "%llu, the server sent \"%s\"",
                            sr->base.path, s->base.repo, (unsigned long long)from, r.content_range);
            goto cleanup;
        }
        if (cc == CURLE_OK && (r.status == 206 || r.status == 200) && got == want)
            break;
        if (cc == CURLE_OK && r.status == 200 && from != 0) {
            rc = pd_err_set(err, PD_ENET,
                            "could not read \"%s\" in repository \"%s\": the server ignored the "
                            "Range header",
                            sr->base.path, s->base.repo);
            goto cleanup;
        }
        code[0] = '\0';
        if (cc == CURLE_OK)
            error_code(&r, code, sizeof(code), msg, sizeof(msg));
        if (cc == CURLE_OK && (r.status == 412 || r.status == 404)) {
            rc = pd_err_set(err, PD_ECORRUPT,
                            "object \"%s\" in repository \"%s\" changed or vanished while it was "
                            "read",
                            sr->base.path, s->base.repo);
            pd_err_hint(err, "is another pgdrill writing the repository? try again");
            goto cleanup;
        }
        if (r.sink_overflow || (cc == CURLE_OK && r.status >= 200 && r.status < 300)) {
            // A short or long body with a success status: retry the rest.
            if (r.sink_overflow)
                got -= q.sink_len;
            cc = CURLE_PARTIAL_FILE;
        }
        pd_log_debug("s3: GET %s %s: %s HTTP %ld %s, %zu of %llu bytes", sr->base.path, q.range,
                     curl_easy_strerror(cc), r.status, code, got, (unsigned long long)want);
        if (!retryable(cc, r.status, code) || attempt >= MAX_ATTEMPTS ||
            pd_time_mono() - t0 >= RETRY_BUDGET) {
            rc = request_error(err, s, "could not read", sr->base.path, cc, &r, errbuf, attempt);
            goto cleanup;
        }
        pd_log_warning("S3 read of \"%s\" interrupted at byte %llu (%s), resuming", sr->base.path,
                       (unsigned long long)(sr->off + got),
                       cc != CURLE_OK ? (errbuf[0] ? errbuf : curl_easy_strerror(cc)) : code);
        backoff(attempt);
    }
    sr->off += want;
    sr->len = (size_t)want;
    sr->pos = 0;
cleanup:
    body_free(&r.b);
    return rc;
}

static int
s3_read(pd_reader *r, void *buf, size_t len, size_t *nread, pd_err *err)
{
    s3_reader *sr = (s3_reader *)r;
    int rc;

    if (sr->pos == sr->len) {
        if (sr->off == sr->size)
            return 0; // *nread is 0: the end
        if ((rc = fetch_chunk(sr, err)) < 0)
            return rc;
    }
    size_t n = sr->len - sr->pos;
    if (n > len)
        n = len;
    memcpy(buf, sr->buf + sr->pos, n);
    sr->pos += n;
    *nread = n;
    return 0;
}

static void
s3_reader_free(pd_reader *r)
{
    s3_reader *sr = (s3_reader *)r;
    pd_free(sr->key);
    pd_free(sr->buf);
}

static const pd_reader_ops s3_reader_ops = {s3_read, s3_reader_free};

static int
s3_open_read(pd_reader **out, pd_storage *st, const char *path, pd_err *err)
{
    s3_storage *s = s3_of(st);
    uint64_t size;
    int64_t mtime;
    char etag[ETAG_MAX];
    int rc;

    if ((rc = head(s, path, &size, &mtime, etag, err)) < 0)
        return rc;
    s3_reader *sr = pd_calloc(1, sizeof(*sr));
    pd_reader_init(&sr->base, &s3_reader_ops, st, path);
    sr->key = full_key(s, path);
    sr->size = size;
    memcpy(sr->etag, etag, sizeof(etag));
    sr->buf = pd_malloc(size < READ_CHUNK ? (size_t)size + 1 : READ_CHUNK);
    *out = &sr->base;
    return 0;
}

/* ---------------------------------------------------------------- writing */

typedef struct batch {
    char *xml;
    size_t len, cap;
    size_t n;
    char first[PD_STORAGE_PATH_MAX * 2];
} batch;

static void
batch_add(batch *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->cap + n + 1) * 2;
        b->xml = pd_realloc(b->xml, b->cap);
    }
    memcpy(b->xml + b->len, s, n + 1);
    b->len += n;
}

typedef struct part_etag {
    char etag[ETAG_MAX];
} part_etag;

typedef struct s3_writer {
    pd_writer base;
    char *key;
    unsigned char *buf;
    size_t len, cap; /* cap: the size of the part being filled */
    char *upload_id; /* NULL until a multipart upload starts */
    unsigned parts;  /* parts uploaded */
    part_etag *etags;
    size_t etags_cap;
    EVP_MD_CTX *md5s; /* MD5 over the parts' binary MD5s, for the final ETag */
    uint64_t total;
    bool sent; /* the PUT or completion was sent: the object may exist */
} s3_writer;

static int
check_absent(s3_writer *w, pd_err *err)
{
    s3_storage *s = s3_of(w->base.st);
    uint64_t size;
    pd_err tmp = PD_ERR_INIT;
    int rc = head(s, w->base.path, &size, NULL, NULL, &tmp);

    if (rc == PD_ENOTFOUND)
        return 0;
    if (rc < 0) {
        if (err)
            *err = tmp;
        return rc;
    }
    return pd_err_set(err, PD_EEXIST,
                      "cannot store \"%s\" in repository \"%s\": the object exists already",
                      w->base.path, s->base.repo);
}

/* MD5 (binary and base64) of the buffer. */
static void
buf_md5(const s3_writer *w, unsigned char md[16], char b64[32])
{
    md5(md, w->buf, w->len);
    base64(b64, 32, md, 16);
}

static int
start_upload(s3_writer *w, pd_err *err)
{
    s3_storage *s = s3_of(w->base.st);
    s3_req q = {.method = "POST", .key = w->key, .body_max = SMALL_BODY_MAX};
    s3_resp r = {0};
    char id[1024];
    int rc;

    q.query[q.n_query++] = (pd_sigv4_param){"uploads", ""};
    rc = call(s, &q, &r, "could not write", w->base.path, true, err);
    if (rc == PD_ENOTFOUND)
        rc = request_error(err, s, "could not write", w->base.path, CURLE_OK, &r, "", 1);
    if (rc == 0) {
        if (r.b.data && xml_get(r.b.data, NULL, "UploadId", id, sizeof(id)))
            w->upload_id = pd_strdup(id);
        else
            rc = pd_err_set(err, PD_ENET,
                            "could not write \"%s\" in repository \"%s\": S3's answer to "
                            "CreateMultipartUpload has no UploadId",
                            w->base.path, s->base.repo);
    }
    body_free(&r.b);
    return rc;
}

/* Uploads the buffer as the next part (1). */
static int
upload_part(s3_writer *w, pd_err *err)
{
    s3_storage *s = s3_of(w->base.st);
    s3_req q = {.method = "PUT", .key = w->key};
    s3_resp r = {0};
    unsigned char md[16];
    char b64[32], num[16], want[40];
    int rc;

    if (w->parts >= PD_S3_MAX_PARTS)
        return pd_err_set(err, PD_EIO,
                          "cannot write \"%s\" in repository \"%s\": the object needs more than "
                          "%d parts of S3's multipart upload",
                          w->base.path, s->base.repo, PD_S3_MAX_PARTS);
    buf_md5(w, md, b64);
    snprintf(num, sizeof(num), "%u", w->parts + 1);
    q.query[q.n_query++] = (pd_sigv4_param){"partNumber", num};
    q.query[q.n_query++] = (pd_sigv4_param){"uploadId", w->upload_id};
    q.data = w->buf;
    q.data_len = w->len;
    q.content_md5 = b64;
    rc = call(s, &q, &r, "could not write", w->base.path, false, err);
    if (rc == PD_ENOTFOUND)
        rc = request_error(err, s, "could not write", w->base.path, CURLE_OK, &r, "", 1);
    if (rc < 0)
        goto cleanup;
    // The part's ETag is its MD5 (without SSE-KMS): a mismatch means the
    // server stored other bytes than we sent.
    want[0] = '"';
    pd_hex(want + 1, md, 16);
    want[33] = '"';
    want[34] = '\0';
    if (r.etag[0] == '\0') {
        rc = pd_err_set(err, PD_ENET,
                        "could not write \"%s\" in repository \"%s\": S3 answered part %u without "
                        "an ETag",
                        w->base.path, s->base.repo, w->parts + 1);
        goto cleanup;
    }
    if (strlen(r.etag) == 34 && strcasecmp(r.etag, want) != 0) {
        rc = pd_err_set(err, PD_ECORRUPT,
                        "could not write \"%s\" in repository \"%s\": S3 stored part %u with "
                        "ETag %s, not the MD5 of the bytes sent %s",
                        w->base.path, s->base.repo, w->parts + 1, r.etag, want);
        goto cleanup;
    }
    if (w->parts == w->etags_cap) {
        w->etags_cap = w->etags_cap ? w->etags_cap * 2 : 64;
        w->etags = pd_realloc(w->etags, w->etags_cap * sizeof(*w->etags));
    }
    snprintf(w->etags[w->parts].etag, ETAG_MAX, "%s", r.etag);
    EVP_DigestUpdate(w->md5s, md, 16);
    w->parts++;
    w->len = 0;
    // The next part may be larger (pd_s3_part_size); grow the buffer then.
    size_t next = pd_s3_part_size(w->parts + 1);
    if (next > w->cap) {
        pd_free(w->buf);
        w->buf = pd_malloc(next);
        w->cap = next;
    }
cleanup:
    body_free(&r.b);
    return rc;
}

static int
s3_write(pd_writer *pw, const void *data, size_t len, pd_err *err)
{
    s3_writer *w = (s3_writer *)pw;
    const unsigned char *p = data;
    int rc;

    while (len > 0) {
        if (w->len == w->cap) {
            // A full buffer with more to come: this object is multipart. A
            // name that must not be overwritten is checked before any part
            // goes up (and again at commit).
            if (w->upload_id == NULL && pw->opts.no_overwrite && (rc = check_absent(w, err)) < 0)
                return rc;
            if (w->upload_id == NULL && (rc = start_upload(w, err)) < 0)
                return rc;
            if ((rc = upload_part(w, err)) < 0)
                return rc;
        }
        size_t n = w->cap - w->len;
        if (n > len)
            n = len;
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        w->total += n;
        p += n;
        len -= n;
    }
    return 0;
}

/* Confirms the committed object (3): its size, and for multipart its ETag. */
static int
confirm(s3_writer *w, const char *want_etag, pd_err *err)
{
    s3_storage *s = s3_of(w->base.st);
    char etag[ETAG_MAX];
    uint64_t size;
    int rc;

    // A server whose PUT shows the object before it is whole (s3rver writes in
    // place) may answer a short or missing object at first: look again, for up
    // to 2 s, before calling it lost. Amazon S3 is read-after-write consistent.
    for (int tries = 0;; tries++) {
        rc = head(s, w->base.path, &size, NULL, etag, err);
        bool settling = rc == PD_ENOTFOUND || (rc == 0 && size < w->total);
        if (!settling || tries == 10)
            break;
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc < 0) {
        if (rc == PD_ENOTFOUND)
            pd_err_set(err, PD_ENET,
                       "could not confirm \"%s\" in repository \"%s\": S3 accepted it but it is "
                       "not there",
                       w->base.path, s->base.repo);
        return rc == PD_ENOTFOUND ? PD_ENET : rc;
    }
    if (size != w->total)
        return pd_err_set(err, PD_ECORRUPT,
                          "could not confirm \"%s\" in repository \"%s\": S3 holds %llu bytes, "
                          "%llu were written",
                          w->base.path, s->base.repo, (unsigned long long)size,
                          (unsigned long long)w->total);
    // Only when the server uses the usual ETag forms (not SSE-KMS ones).
    if (want_etag && strlen(etag) == strlen(want_etag) && strcasecmp(etag, want_etag) != 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "could not confirm \"%s\" in repository \"%s\": ETag %s, expected %s "
                          "from the parts sent",
                          w->base.path, s->base.repo, etag, want_etag);
    return 0;
}

static int
commit_single(s3_writer *w, pd_err *err)
{
    s3_storage *s = s3_of(w->base.st);
    s3_req q = {.method = "PUT", .key = w->key};
    s3_resp r = {0};
    unsigned char md[16];
    char b64[32], want[40];
    int rc;

    buf_md5(w, md, b64);
    q.data = w->buf;
    q.data_len = w->len;
    q.content_md5 = b64;
    w->sent = true;
    rc = call(s, &q, &r, "could not write", w->base.path, false, err);
    if (rc == PD_ENOTFOUND)
        rc = request_error(err, s, "could not write", w->base.path, CURLE_OK, &r, "", 1);
    body_free(&r.b);
    if (rc < 0)
        return rc;
    want[0] = '"';
    pd_hex(want + 1, md, 16);
    want[33] = '"';
    want[34] = '\0';
    return confirm(w, want, err);
}

static int
commit_multipart(s3_writer *w, pd_err *err)
{
    s3_storage *s = s3_of(w->base.st);
    s3_req q = {.method = "POST", .key = w->key, .body_max = SMALL_BODY_MAX};
    s3_resp r = {0};
    unsigned char md[16];
    unsigned int mdlen = 16;
    char *xml = NULL, want[64];
    size_t len = 0;
    int rc;

    // The last part may be short (even empty when the data ended on a part
    // boundary: then there is nothing more to send).
    if (w->len > 0 && (rc = upload_part(w, err)) < 0)
        return rc;
    batch x = {0};
    batch_add(&x, "<CompleteMultipartUpload>");
    for (unsigned i = 0; i < w->parts; i++) {
        char item[64];
        snprintf(item, sizeof(item), "<Part><PartNumber>%u</PartNumber><ETag>", i + 1);
        batch_add(&x, item);
        xml_escape_add(&x.xml, &x.len, &x.cap, w->etags[i].etag);
        batch_add(&x, "</ETag></Part>");
    }
    batch_add(&x, "</CompleteMultipartUpload>");
    xml = x.xml;
    len = x.len;

    q.query[q.n_query++] = (pd_sigv4_param){"uploadId", w->upload_id};
    q.data = (const unsigned char *)xml;
    q.data_len = len;
    q.content_type = "application/xml";
    w->sent = true;
    rc = call(s, &q, &r, "could not complete", w->base.path, true, err);
    if (rc == PD_ENOTFOUND && r.status == 404) {
        // NoSuchUpload: when a retry follows a completion whose answer was
        // lost, the upload is gone because it completed; confirm() decides.
        char code[64], msg[8];
        error_code(&r, code, sizeof(code), msg, sizeof(msg));
        if (strcmp(code, "NoSuchUpload") == 0) {
            pd_log_debug("s3: %s: the upload is gone; confirming the object", w->base.path);
            rc = 0;
        }
    }
    if (rc == PD_ENOTFOUND)
        rc = request_error(err, s, "could not complete", w->base.path, CURLE_OK, &r, "", 1);
    pd_free(xml);
    body_free(&r.b);
    if (rc < 0)
        return rc;
    // Completed: nothing to abort any more.
    pd_free(w->upload_id);
    w->upload_id = NULL;
    EVP_DigestFinal_ex(w->md5s, md, &mdlen);
    want[0] = '"';
    pd_hex(want + 1, md, 16);
    snprintf(want + 33, sizeof(want) - 33, "-%u\"", w->parts);
    return confirm(w, want, err);
}

static int s3_remove(pd_storage *st, const char *path, pd_err *err);

/*
 * An object S3 took but that could not be confirmed is removed again
 * (best effort), so that nothing stays visible after a failed commit: a
 * manifest.json left behind would make a failed backup look complete.
 */
static int
s3_commit(pd_writer *pw, pd_err *err)
{
    s3_writer *w = (s3_writer *)pw;
    pd_err rm_err = PD_ERR_INIT;
    int rc;

    if (pw->opts.no_overwrite && (rc = check_absent(w, err)) < 0)
        return rc;
    rc = w->upload_id == NULL ? commit_single(w, err) : commit_multipart(w, err);
    if (rc < 0 && w->sent && s3_remove(w->base.st, w->base.path, &rm_err) < 0)
        pd_log_warning("%s; it was not confirmed, remove it by hand", rm_err.msg);
    return rc;
}

static void
abort_upload(s3_writer *w)
{
    s3_storage *s = s3_of(w->base.st);
    s3_req q = {.method = "DELETE", .key = w->key};
    s3_resp r = {0};
    pd_err err = PD_ERR_INIT;

    q.query[q.n_query++] = (pd_sigv4_param){"uploadId", w->upload_id};
    int rc = call(s, &q, &r, "could not abort the upload of", w->base.path, false, &err);
    if (rc < 0 && rc != PD_ENOTFOUND)
        pd_log_warning("%s; the unfinished upload stays invisible until the bucket's lifecycle "
                       "rules remove it",
                       err.msg);
    body_free(&r.b);
}

static void
s3_writer_free(pd_writer *pw)
{
    s3_writer *w = (s3_writer *)pw;

    if (w->upload_id && !pw->committed)
        abort_upload(w);
    pd_free(w->upload_id);
    pd_free(w->key);
    pd_free(w->buf);
    pd_free(w->etags);
    EVP_MD_CTX_free(w->md5s);
}

static const pd_writer_ops s3_writer_ops = {s3_write, s3_commit, s3_writer_free};

static int
s3_open_write(pd_writer **out, pd_storage *st, const char *path, const pd_writer_opts *opts,
              pd_err *err)
{
    s3_writer *w = pd_calloc(1, sizeof(*w));

    (void)err;
    pd_writer_init(&w->base, &s3_writer_ops, st, path, opts);
    w->key = full_key(s3_of(st), path);
    w->cap = pd_s3_part_size(1);
    w->buf = pd_malloc(w->cap);
    w->md5s = EVP_MD_CTX_new();
    if (w->md5s == NULL || EVP_DigestInit_ex(w->md5s, EVP_md5(), NULL) != 1)
        pd_assert_fail("EVP_DigestInit_ex(md5)", __FILE__, __LINE__);
    *out = &w->base;
    return 0;
}

/* ---------------------------------------------------------------- listing */

/* Called with each full key of a page; returns 0 or an error. */
typedef int (*page_fn)(void *payload, const char *key, uint64_t size, int64_t mtime, pd_err *err);

/*
 * Lists keys under key_prefix, one ListObjectsV2 page after the other
 * (continuation tokens). With one_page, stops after the first.
 */
static int
list_keys(s3_storage *s, const char *key_prefix, const char *shown, bool one_page, page_fn fn,
          void *payload, pd_err *err)
{
    char *token = NULL;
    int rc = 0, pages = 0;

    for (;;) {
        s3_req q = {.method = "GET", .body_max = LIST_BODY_MAX};
        s3_resp r = {0};
        char tbuf[2048], trunc[16];

        q.query[q.n_query++] = (pd_sigv4_param){"list-type", "2"};
        q.query[q.n_query++] = (pd_sigv4_param){"prefix", key_prefix};
        if (token)
            q.query[q.n_query++] = (pd_sigv4_param){"continuation-token", token};
        rc = call(s, &q, &r, "could not list", shown, true, err);
        if (rc == PD_ENOTFOUND)
            rc = request_error(err, s, "could not list", shown, CURLE_OK, &r, "", 1);
        if (rc < 0) {
            body_free(&r.b);
            break;
        }
        const char *p = r.b.data ? r.b.data : "";
        for (;;) {
            const char *cs = strstr(p, "<Contents>"), *ce;
            char key[PD_STORAGE_PATH_MAX * 2], num[32], date[64];
            uint64_t size = 0;
            int64_t mtime = 0;

            if (cs == NULL || (ce = strstr(cs, "</Contents>")) == NULL)
                break;
            if (xml_get(cs, ce, "Key", key, sizeof(key)) != NULL) {
                if (xml_get(cs, ce, "Size", num, sizeof(num)))
                    size = strtoull(num, NULL, 10);
                if (xml_get(cs, ce, "LastModified", date, sizeof(date)))
                    (void)parse_iso_date(date, &mtime);
                if ((rc = fn(payload, key, size, mtime, err)) < 0)
                    break;
            }
            p = ce + 11;
        }
        bool more = r.b.data && xml_get(r.b.data, NULL, "IsTruncated", trunc, sizeof(trunc)) &&
                    strcmp(trunc, "true") == 0;
        char *prev = token;
        token = NULL;
        if (more && rc == 0 && !one_page) {
            // A server that repeats its token, or never ends, must not keep
            // a listing going forever.
            bool got = xml_get(r.b.data, NULL, "NextContinuationToken", tbuf, sizeof(tbuf));
            if (got && ((prev && strcmp(prev, tbuf) == 0) || ++pages >= LIST_PAGES_MAX))
                rc = pd_err_set(err, PD_ENET,
                                "could not list \"%s\" in repository \"%s\": S3 repeated a "
                                "continuation token or sent more than %d pages",
                                shown, s->base.repo, LIST_PAGES_MAX);
            else if (got)
                token = pd_strdup(tbuf);
            else
                rc = pd_err_set(err, PD_ENET,
                                "could not list \"%s\" in repository \"%s\": S3 said the listing "
                                "is truncated but gave no continuation token",
                                shown, s->base.repo);
        }
        pd_free(prev);
        body_free(&r.b);
        if (rc < 0 || token == NULL)
            break;
    }
    pd_free(token);
    return rc;
}

typedef struct list_ctx {
    s3_storage *s;
    size_t strip; /* length of "<repo prefix>/" */
    pd_storage_list_fn fn;
    void *payload;
} list_ctx;

static int
list_one(void *payload, const char *key, uint64_t size, int64_t mtime, pd_err *err)
{
    list_ctx *c = payload;
    if (strlen(key) <= c->strip)
        return 0;
    const char *path = key + c->strip;
    if (pd_storage_check_path(path, NULL) < 0)
        return 0; // not a name this repository could hold
    pd_storage_entry e = {path, size, mtime};
    return c->fn(c->payload, &e, err);
}

/* "<prefix>/<path>/" as a key prefix; path may be "". */
static char *
dir_key(const s3_storage *s, const char *path)
{
    if (path[0] == '\0')
        return s->prefix[0] ? pd_asprintf("%s/", s->prefix) : pd_strdup("");
    return s->prefix[0] ? pd_asprintf("%s/%s/", s->prefix, path) : pd_asprintf("%s/", path);
}

static int
s3_list(pd_storage *st, const char *prefix, pd_storage_list_fn fn, void *payload, pd_err *err)
{
    s3_storage *s = s3_of(st);
    char *kp = dir_key(s, prefix);
    list_ctx c = {s, s->prefix[0] ? strlen(s->prefix) + 1 : 0, fn, payload};
    int rc = list_keys(s, kp, prefix[0] ? prefix : "/", false, list_one, &c, err);
    pd_free(kp);
    return rc;
}

/* ---------------------------------------------------------------- removing */

static int
s3_remove(pd_storage *st, const char *path, pd_err *err)
{
    s3_storage *s = s3_of(st);
    s3_req q = {.method = "DELETE"};
    s3_resp r = {0};
    char *key = full_key(s, path);

    q.key = key;
    int rc = call(s, &q, &r, "could not remove", path, false, err);
    if (rc == PD_ENOTFOUND)
        rc = 0;
    body_free(&r.b);
    pd_free(key);
    return rc;
}

static int
batch_key(void *payload, const char *key, uint64_t size, int64_t mtime, pd_err *err)
{
    batch *b = payload;
    (void)size;
    (void)mtime;
    (void)err;
    if (b->n >= DELETE_BATCH)
        return 0;
    if (b->n == 0)
        snprintf(b->first, sizeof(b->first), "%s", key);
    batch_add(b, "<Object><Key>");
    xml_escape_add(&b->xml, &b->len, &b->cap, key);
    batch_add(b, "</Key></Object>");
    b->n++;
    return 0;
}

/*
 * Sends the DeleteObjects request b holds (keys added, "</Delete>" not yet);
 * what names the objects in messages. Any key S3 refused fails it.
 */
static int
delete_batch(s3_storage *s, batch *b, const char *what, pd_err *err)
{
    unsigned char md[16];
    char b64[32], errkey[PD_STORAGE_PATH_MAX * 2], code[128];
    s3_req q = {.method = "POST", .body_max = SMALL_BODY_MAX};
    s3_resp r = {0};
    int rc;

    batch_add(b, "</Delete>");
    md5(md, b->xml, b->len);
    base64(b64, sizeof(b64), md, 16);
    q.query[q.n_query++] = (pd_sigv4_param){"delete", ""};
    q.data = (const unsigned char *)b->xml;
    q.data_len = b->len;
    q.content_md5 = b64;
    q.content_type = "application/xml";
    // Not check_200: the answer lists per-key <Error>s, parsed here.
    rc = call(s, &q, &r, "could not remove", what, false, err);
    if (rc == PD_ENOTFOUND)
        rc = request_error(err, s, "could not remove", what, CURLE_OK, &r, "", 1);
    if (rc == 0 && r.b.data) {
        const char *e = strstr(r.b.data, "<Error>");
        if (e) {
            const char *ee = strstr(e, "</Error>");
            if (xml_get(e, ee, "Key", errkey, sizeof(errkey)) == NULL)
                snprintf(errkey, sizeof(errkey), "?");
            if (xml_get(e, ee, "Code", code, sizeof(code)) == NULL)
                snprintf(code, sizeof(code), "?");
            rc = pd_err_set(err, PD_ENET,
                            "could not remove \"%s\" in repository \"%s\": S3 refused to delete "
                            "\"%s\" (%s)",
                            what, s->base.repo, errkey, code);
        }
    }
    body_free(&r.b);
    if (rc == 0)
        pd_log_debug("s3: deleted %zu objects (%s)", b->n, what);
    return rc;
}

static int
s3_remove_many(pd_storage *st, const char *const *paths, size_t n, pd_err *err)
{
    s3_storage *s = s3_of(st);
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0;) {
        batch b = {0};
        const char *first = paths[i];
        batch_add(&b, "<Delete><Quiet>true</Quiet>");
        for (; i < n && b.n < DELETE_BATCH; i++) {
            char *key = full_key(s, paths[i]);
            (void)batch_key(&b, key, 0, 0, NULL);
            pd_free(key);
        }
        char *what = b.n > 1 ? pd_asprintf("%s (and %zu more)", first, b.n - 1) : pd_strdup(first);
        rc = delete_batch(s, &b, what, err);
        pd_free(what);
        pd_free(b.xml);
    }
    return rc;
}

static int
s3_remove_prefix(pd_storage *st, const char *prefix, pd_err *err)
{
    s3_storage *s = s3_of(st);
    char *kp = dir_key(s, prefix);
    char last_first[PD_STORAGE_PATH_MAX * 2] = "";
    int rc = 0;

    // An object named exactly like the prefix goes too (as on posix).
    if ((rc = s3_remove(st, prefix, err)) < 0)
        goto cleanup;
    for (;;) {
        batch b = {0};
        batch_add(&b, "<Delete><Quiet>true</Quiet>");
        rc = list_keys(s, kp, prefix, true, batch_key, &b, err);
        if (rc < 0 || b.n == 0) {
            pd_free(b.xml);
            break;
        }
        if (strcmp(b.first, last_first) == 0) {
            rc = pd_err_set(err, PD_ENET,
                            "could not remove \"%s\" in repository \"%s\": S3 reported \"%s\" "
                            "deleted but still lists it",
                            prefix, s->base.repo, b.first);
            pd_free(b.xml);
            break;
        }
        snprintf(last_first, sizeof(last_first), "%s", b.first);
        rc = delete_batch(s, &b, prefix, err);
        pd_free(b.xml);
        if (rc < 0)
            break;
    }
cleanup:
    pd_free(kp);
    return rc;
}

/* ---------------------------------------------------------------- open, free */

static void
s3_free(pd_storage *st)
{
    s3_storage *s = s3_of(st);
    if (s->curl)
        curl_easy_cleanup(s->curl);
    pd_free(s->bucket);
    pd_free(s->prefix);
    pd_free(s->base_url);
    pd_free(s->host);
    pd_free(s->region);
    pd_free(s->ca_file);
    pd_free(s->access_key);
    pd_secret_free(s->secret_key);
    pd_secret_free(s->token);
}

static const pd_storage_ops s3_ops = {
    .name = "s3",
    .open_read = s3_open_read,
    .open_write = s3_open_write,
    .list = s3_list,
    .stat = s3_stat,
    .remove = s3_remove,
    .remove_many = s3_remove_many,
    .remove_prefix = s3_remove_prefix,
    .free_space = NULL,
    .free = s3_free,
};

/* Trims spaces and tabs at both ends of s[0..*len) in place; returns the start. */
static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/*
 * What would only fail at the first request is refused here, at open, as a
 * configuration error: no host, a path after the host (pgdrill addresses the
 * bucket itself), host-style addressing on an IP address (no DNS name
 * "bucket.10.0.0.1" exists), an s3-ca-file that cannot be read.
 */
static int
check_endpoint(const s3_storage *s, const char *endpoint, const char *hostport, const char *ca,
               pd_err *err)
{
    if (hostport[0] == '\0') {
        pd_err_set(err, PD_ECONFIG, "bad s3-endpoint \"%s\": no host", endpoint);
        return pd_err_hint(err, "write s3-endpoint as host[:port] or https://host[:port]");
    }
    if (endpoint) {
        const char *h = strstr(endpoint, "://");
        const char *path = (h ? h + 3 : endpoint) + strlen(hostport);
        if (path[0] != '\0' && strcmp(path, "/") != 0) {
            pd_err_set(err, PD_ECONFIG, "bad s3-endpoint \"%s\": it has a path", endpoint);
            return pd_err_hint(err, "write s3-endpoint as [https://]host[:port]; the bucket and "
                                    "prefix go in repo");
        }
    }
    size_t hl = strcspn(hostport, ":");
    bool ip = hostport[0] == '[' || strspn(hostport, "0123456789.") == hl;
    if (!s->path_style && ip) {
        pd_err_set(err, PD_ECONFIG,
                   "cannot address bucket \"%s\" host-style on endpoint \"%s\": it is an IP "
                   "address",
                   s->bucket, hostport);
        return pd_err_hint(err, "set s3-uri-style = path");
    }
    if (ca && access(ca, R_OK) < 0) {
        pd_err_sys(err, PD_ECONFIG, "cannot read s3-ca-file \"%s\"", ca);
        return pd_err_hint(err, "set s3-ca-file to the PEM file of the CA that signed the "
                                "server's certificate");
    }
    return 0;
}

/* Reads s3-credentials-file (see s3.h). */
static int
read_credentials(s3_storage *s, const char *path, pd_err *err)
{
    pd_secret *file = NULL;
    char *text = NULL, *line, *next;
    size_t len;
    int rc;

    if ((rc = pd_secret_read_file(&file, path, CREDS_MAX, 0, 1, err)) < 0) {
        pd_err_hint(err, "s3-credentials-file must be a regular file of mode 0600 owned by the "
                         "user running pgdrill");
        return rc;
    }
    // Like the AWS tools: the profile AWS_PROFILE names, else [default];
    // lines before any section count too. Other profiles' keys are never
    // mixed in.
    const char *profile = getenv("AWS_PROFILE");
    if (profile == NULL || profile[0] == '\0')
        profile = "default";
    bool in_profile = true;
    len = pd_secret_len(file);
    text = pd_malloc(len + 1);
    memcpy(text, pd_secret_data(file), len);
    text[len] = '\0';
    for (line = text; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *l = trim(line);
        if (l[0] == '[') {
            char *end = strchr(l, ']');
            size_t n = end ? (size_t)(end - l - 1) : 0;
            in_profile = end && strlen(profile) == n && strncmp(l + 1, profile, n) == 0;
            continue;
        }
        if (l[0] == '\0' || l[0] == '#' || l[0] == ';' || !in_profile)
            continue;
        char *eq = strchr(l, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        char *k = trim(l), *v = trim(eq + 1);
        if (strcmp(k, "aws_access_key_id") == 0) {
            pd_free(s->access_key);
            s->access_key = pd_strdup(v);
        } else if (strcmp(k, "aws_secret_access_key") == 0) {
            pd_secret_free(s->secret_key);
            s->secret_key = pd_secret_new(v, strlen(v));
        } else if (strcmp(k, "aws_session_token") == 0) {
            pd_secret_free(s->token);
            s->token = pd_secret_new(v, strlen(v));
        }
    }
    pd_free_secret(text, len + 1);
    pd_secret_free(file);
    if (s->access_key == NULL || s->access_key[0] == '\0' || s->secret_key == NULL ||
        pd_secret_len(s->secret_key) == 0) {
        pd_err_set(err, PD_ECONFIG,
                   "cannot use s3-credentials-file \"%s\": it lacks aws_access_key_id or "
                   "aws_secret_access_key in profile [%s]",
                   path, profile);
        return pd_err_hint(err,
                           "write lines \"aws_access_key_id = ...\" and "
                           "\"aws_secret_access_key = ...\" under [%s] (AWS_PROFILE chooses "
                           "the profile)",
                           profile);
    }
    return 0;
}

static int
read_env_credentials(s3_storage *s, pd_err *err)
{
    const char *id = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY"),
               *token = getenv("AWS_SESSION_TOKEN");

    if (id == NULL || id[0] == '\0' || secret == NULL || secret[0] == '\0') {
        pd_err_set(err, PD_ECONFIG, "no S3 credentials for repository \"%s\"", s->base.repo);
        return pd_err_hint(err, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                                "AWS_SESSION_TOKEN for temporary credentials), or "
                                "s3-credentials-file");
    }
    s->access_key = pd_strdup(id);
    s->secret_key = pd_secret_new(secret, strlen(secret));
    if (token && token[0])
        s->token = pd_secret_new(token, strlen(token));
    return 0;
}

int
pd_storage_s3_open(pd_storage **out, const char *repo, const pd_config *cfg, pd_err *err)
{
    const char *endpoint = cfg ? pd_config_get(cfg, "s3-endpoint") : NULL;
    const char *region = cfg ? pd_config_get(cfg, "s3-region") : NULL;
    const char *style = cfg ? pd_config_get(cfg, "s3-uri-style") : NULL;
    const char *ca = cfg ? pd_config_get(cfg, "s3-ca-file") : NULL;
    const char *creds = cfg ? pd_config_get(cfg, "s3-credentials-file") : NULL;
    s3_storage *s;
    char *bucket, *prefix, *scheme, *hostport;
    int rc;

    *out = NULL;
    if ((rc = pd_s3_parse_repo(&bucket, &prefix, repo, err)) < 0) {
        pd_err_hint(err, "write repo as s3://bucket/prefix");
        return rc;
    }
    s = pd_calloc(1, sizeof(*s));
    pd_storage_init(&s->base, &s3_ops, repo);
    s->bucket = bucket;
    s->prefix = prefix;
    s->region = pd_strdup(region ? region : "us-east-1");
    s->verify_tls = cfg ? pd_config_get_bool(cfg, "s3-verify-tls") : true;
    s->ca_file = ca ? pd_strdup(ca) : NULL;
    s->path_style = style && strcmp(style, "path") == 0;
    if (endpoint == NULL || endpoint[0] == '\0') {
        scheme = pd_strdup("https");
        hostport = pd_asprintf("s3.%s.amazonaws.com", s->region);
    } else if (strncmp(endpoint, "http://", 7) == 0 || strncmp(endpoint, "https://", 8) == 0) {
        const char *h = strstr(endpoint, "://") + 3;
        scheme = pd_strndup(endpoint, (size_t)(h - 3 - endpoint));
        size_t hl = strcspn(h, "/");
        hostport = pd_strndup(h, hl);
    } else {
        scheme = pd_strdup("https");
        hostport = pd_strndup(endpoint, strcspn(endpoint, "/"));
    }
    if ((rc = check_endpoint(s, endpoint, hostport, ca, err)) < 0) {
        pd_free(scheme);
        pd_free(hostport);
        pd_storage_free(&s->base);
        return rc;
    }
    if (s->path_style)
        s->host = pd_strdup(hostport);
    else
        s->host = pd_asprintf("%s.%s", s->bucket, hostport);
    s->base_url = pd_asprintf("%s://%s", scheme, s->host);
    pd_free(scheme);
    pd_free(hostport);

    s->creds_file = creds != NULL;
    rc = creds ? read_credentials(s, creds, err) : read_env_credentials(s, err);
    if (rc < 0) {
        pd_storage_free(&s->base);
        return rc;
    }
    s->curl = curl_easy_init();
    if (s->curl == NULL) {
        pd_storage_free(&s->base);
        return pd_err_set(err, PD_ENET, "could not initialise libcurl");
    }
    pd_log_debug("s3: repository \"%s\": %s, region %s, %s-style addressing%s", repo, s->base_url,
                 s->region, s->path_style ? "path" : "host",
                 s->verify_tls ? "" : ", TLS verification off");
    *out = &s->base;
    return 0;
}
