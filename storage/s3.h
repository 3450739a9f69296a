/*
 * S3 storage driver. For now only the reachability probe used by
 * `pgdrill check`; the driver itself (SigV4, multipart) comes with issue #7.
 */
#ifndef PGDRILL_STORAGE_S3_H
#define PGDRILL_STORAGE_S3_H

#include <stdbool.h>

#include "common/err.h"

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

#endif
