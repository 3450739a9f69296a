/*
 * S3 storage driver: the ops of storage.h over the S3 REST API (libcurl,
 * Signature V4 from storage/sigv4.h), plus the reachability probe used by
 * `pgdrill check` and s3:// URL parsing.
 */
#ifndef PGDRILL_STORAGE_S3_H
#define PGDRILL_STORAGE_S3_H

#include <stdbool.h>

#include "common/config.h"
#include "common/err.h"
#include "storage/storage.h"

/*
 * Test-only: when set, every request is signed at this time
 * ("YYYYMMDDTHHMMSSZ") instead of the clock's, so that a test can re-sign a
 * captured request with botocore and compare (tests/integration/
 * test_s3_sigv4.py). A real S3 refuses a time more than 15 minutes off.
 */
#define PD_S3_TEST_TIME_ENV "PGDRILL_TEST_S3_TIME"

/*
 * Opens the S3 repository "s3://bucket/prefix" with the s3-* settings of cfg
 * (cfg may be NULL: defaults, credentials from the environment):
 *   - endpoint: s3-endpoint ("host[:port]" means https), else
 *     s3.<region>.amazonaws.com; addressing by s3-uri-style (host: the
 *     bucket in the host name; path: in the path);
 *   - TLS verified unless s3-verify-tls = no; s3-ca-file adds a CA bundle;
 *   - credentials: s3-credentials-file (mode 0600 and owned by the user, else
 *     PD_ECONFIG; lines aws_access_key_id = ..., aws_secret_access_key = ...,
 *     optional aws_session_token = ..., an optional [default] header and
 *     '#' comments), else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
 *     optional AWS_SESSION_TOKEN; none is PD_ECONFIG. The secret key and the
 *     token are pd_secrets, redacted from every log line.
 * Nothing is sent until the first operation.
 */
PD_MUST_CHECK int pd_storage_s3_open(pd_storage **out, const char *repo, const pd_config *cfg,
                                     pd_err *err);

typedef struct pd_s3_probe_opts {
    const char *endpoint; /* "https://host[:port]", "http://..." or "host[:port]" (https) */
    bool verify_tls;      /* verify the server's certificate and name */
    const char *ca_file;  /* PEM CA bundle for a private CA, or NULL */
    long timeout;         /* seconds for the whole request; 0: 30 */
} pd_s3_probe_opts;

#define PD_S3_PROBE_OPTS_INIT \
    {                         \
        NULL, true, NULL, 0   \
    }

/*
 * Sends one unauthenticated GET to the endpoint and reports the HTTP status:
 * any HTTP answer proves the endpoint reachable (S3 answers 403 without
 * credentials). PD_ENET with libcurl's reason when no answer comes.
 * *url_out (owned by the caller, pd_free) is the URL tried, also on failure.
 */
PD_MUST_CHECK int pd_s3_probe(long *http_status, char **url_out, const pd_s3_probe_opts *opts,
                              pd_err *err);

/* Splits "s3://bucket/prefix": bucket and prefix (may be "") into new strings. */
PD_MUST_CHECK int pd_s3_parse_repo(char **bucket, char **prefix, const char *repo, pd_err *err);

/*
 * The size of multipart part number n (1-based): 8 MiB for parts 1 to 1000,
 * then doubling every 1000 parts up to 1 GiB (parts 7001 on), so the 10,000
 * parts S3 allows hold about 3.9 TiB while a database of a few GiB uses 8 MiB
 * of buffer. Exposed for tests.
 */
size_t pd_s3_part_size(unsigned part_number);

/* Largest number of parts of one object (S3's limit). */
#define PD_S3_MAX_PARTS 10000

#endif
