/* S3 driver (see s3.h): the endpoint probe and repository URL parsing. */
#include "storage/s3.h"

#include <string.h>

#include <curl/curl.h>

#include "common/mem.h"

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
