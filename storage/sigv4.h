/*
 * AWS Signature Version 4 (the "Authorization" header of an S3 request),
 * computed over OpenSSL. Pure code: no I/O, no clock (the caller passes the
 * signing time), so it is tested against the AWS SigV4 test suite vectors.
 *
 * Why not libcurl's CURLOPT_AWS_SIGV4: Debian 12's libcurl 7.88 signs with
 * UNSIGNED-PAYLOAD unless the caller sets x-amz-content-sha256 itself, does
 * not canonicalise query strings (ListObjectsV2's continuation tokens need
 * sorting and encoding), and cannot be tested against the vectors without a
 * server. An own signer is small, checked against the vectors and against
 * botocore (tests/integration/test_s3_sigv4.py).
 *
 * Invariant: the secret key is read only through pd_secret and never copied
 * into anything but the HMAC key schedule; nothing here logs.
 */
#ifndef PGDRILL_STORAGE_SIGV4_H
#define PGDRILL_STORAGE_SIGV4_H

#include <stddef.h>

#include "common/err.h"
#include "common/secret.h"

/* "YYYYMMDDTHHMMSSZ" and NUL. */
#define PD_SIGV4_DATE_LEN 17

/* SHA-256 of the empty string, the payload hash of a request without a body. */
#define PD_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct pd_sigv4_param {
    const char *name;
    const char *value; /* may be "" (a query key without value) */
} pd_sigv4_param;

typedef struct pd_sigv4_request {
    const char *method; /* "GET", "PUT", ... */
    /*
     * The path, not percent-encoded ("/bucket/main/backups/x/base.tar"); it
     * is encoded once (RFC 3986 unreserved characters and '/' kept), as S3
     * expects. The caller sends the request with pd_sigv4_uri_encode() of
     * the same path.
     */
    const char *path;
    const pd_sigv4_param *query; /* decoded names and values, any order */
    size_t n_query;
    /*
     * Every header to sign, any case and order; host and x-amz-date must be
     * among them. Values are trimmed and inner runs of spaces collapsed;
     * repeated names are joined with ',' in the order given.
     */
    const pd_sigv4_param *headers;
    size_t n_headers;
    const char *payload_hash; /* lowercase hex SHA-256 of the body */
    const char *amz_date;     /* "YYYYMMDDTHHMMSSZ", equal to the x-amz-date header */
    const char *region;       /* "us-east-1" */
    const char *service;      /* "s3" */
    const char *access_key;
    const pd_secret *secret_key; /* borrowed */
} pd_sigv4_request;

/* Intermediate results, for tests (each owned by the caller, pd_free). */
typedef struct pd_sigv4_debug {
    char *canonical_request;
    char *string_to_sign;
} pd_sigv4_debug;

/*
 * Signs req. On success *authorization (owned by the caller, pd_free) is the
 * value of the Authorization header. PD_EUSAGE for a malformed amz_date or
 * too many headers (programming errors that tests can provoke). debug may be
 * NULL; otherwise it is filled on success.
 */
PD_MUST_CHECK int pd_sigv4_sign(char **authorization, const pd_sigv4_request *req,
                                pd_sigv4_debug *debug, pd_err *err);

/* Frees what pd_sigv4_sign() put in debug; NULL is fine. */
void pd_sigv4_debug_free(pd_sigv4_debug *debug);

/*
 * Percent-encodes s as SigV4 wants it (uppercase hex, unreserved characters
 * A-Z a-z 0-9 - . _ ~ kept, and '/' kept when keep_slash). Returns a new
 * string (pd_free).
 */
char *pd_sigv4_uri_encode(const char *s, int keep_slash);

/* Lowercase hex SHA-256 of data into out (65 bytes with the NUL). */
void pd_sigv4_sha256_hex(char out[65], const void *data, size_t len);

#endif
