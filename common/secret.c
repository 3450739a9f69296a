/*
 * Secrets (see secret.h). Invariant: while a pd_secret exists, its bytes are
 * in the registry and every log line is scrubbed of them; after
 * pd_secret_free the bytes are wiped. The registry is a fixed array: pgdrill
 * holds a handful of secrets at a time (master key, data key, S3 secret).
 */
#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/mem.h"

struct pd_secret {
    size_t len;
    unsigned char *data;
};

#define REGISTRY_MAX   64
#define REDACT_MIN_LEN 4
#define REDACTED       "[redacted]"

static const pd_secret *registry[REGISTRY_MAX];

static void
registry_add(const pd_secret *s)
{
    for (size_t i = 0; i < REGISTRY_MAX; i++) {
        if (registry[i] == NULL) {
            registry[i] = s;
            return;
        }
    }
    // More live secrets than slots is a programming error: refusing beats
    // holding a secret the logger cannot scrub.
    pd_assert_fail("too many live secrets", __FILE__, __LINE__);
}

static void
registry_remove(const pd_secret *s)
{
    for (size_t i = 0; i < REGISTRY_MAX; i++)
        if (registry[i] == s)
            registry[i] = NULL;
}

pd_secret *
pd_secret_new(const void *data, size_t len)
{
    pd_secret *s = pd_malloc(sizeof(*s));

    s->len = len;
    s->data = pd_malloc(len + 1);
    if (len)
        memcpy(s->data, data, len);
    s->data[len] = 0;
    registry_add(s);
    return s;
}

int
pd_secret_read_file(pd_secret **out, const char *path, size_t max, int strip_newline,
                    int require_private, pd_err *err)
{
    unsigned char *buf = NULL;
    struct stat st;
    size_t len = 0;
    int fd = -1;
    int rc = 0;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = pd_err_sys(err, PD_ECONFIG, "could not open secret file \"%s\"", path);
        goto cleanup;
    }
    if (fstat(fd, &st) < 0) {
        rc = pd_err_sys(err, PD_ECONFIG, "could not stat secret file \"%s\"", path);
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = pd_err_set(err, PD_ECONFIG, "cannot use secret file \"%s\": not a regular file", path);
        goto cleanup;
    }
    if (require_private && (st.st_mode & 077) != 0) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "cannot use secret file \"%s\": mode %04o lets others read it; "
                        "run chmod 600 \"%s\"",
                        path, (unsigned)(st.st_mode & 07777), path);
        goto cleanup;
    }
    if (require_private && st.st_uid != geteuid()) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "cannot use secret file \"%s\": owned by uid %u, not by the user running "
                        "pgdrill (uid %u); chown it",
                        path, (unsigned)st.st_uid, (unsigned)geteuid());
        goto cleanup;
    }
    if ((size_t)st.st_size > max) {
        rc = pd_err_set(err, PD_ECONFIG,
                        "cannot use secret file \"%s\": %lld bytes, more than the %zu allowed",
                        path, (long long)st.st_size, max);
        goto cleanup;
    }
    buf = pd_malloc(max + 1);
    while (len <= max) {
        ssize_t n = read(fd, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pd_err_sys(err, PD_ECONFIG, "could not read secret file \"%s\"", path);
            goto cleanup;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > max) {
        rc = pd_err_set(err, PD_ECONFIG, "cannot use secret file \"%s\": larger than %zu bytes",
                        path, max);
        goto cleanup;
    }
    if (strip_newline && len > 0 && buf[len - 1] == '\n')
        len--;
    if (strip_newline && len > 0 && buf[len - 1] == '\r')
        len--;
    *out = pd_secret_new(buf, len);
cleanup:
    if (buf)
        pd_free_secret(buf, max + 1);
    if (fd >= 0)
        close(fd);
    return rc;
}

const unsigned char *
pd_secret_data(const pd_secret *s)
{
    return s->data;
}

size_t
pd_secret_len(const pd_secret *s)
{
    return s->len;
}

void
pd_secret_free(pd_secret *s)
{
    if (s == NULL)
        return;
    registry_remove(s);
    pd_free_secret(s->data, s->len + 1);
    OPENSSL_cleanse(s, sizeof(*s));
    pd_free(s);
}

/* The registered secret that starts at text, or NULL. */
static const pd_secret *
match_at(const char *text, size_t avail)
{
    for (size_t i = 0; i < REGISTRY_MAX; i++) {
        const pd_secret *s = registry[i];
        if (s && s->len >= REDACT_MIN_LEN && s->len <= avail && memcmp(text, s->data, s->len) == 0)
            return s;
    }
    return NULL;
}

void
pd_secret_redact(const char *text, char *out, size_t outsize)
{
    size_t len = strlen(text);
    size_t o = 0;

    if (outsize == 0)
        return;
    for (size_t i = 0; i < len && o + 1 < outsize;) {
        const pd_secret *s = match_at(text + i, len - i);
        if (s) {
            size_t rl = strlen(REDACTED);
            if (o + rl >= outsize)
                break;
            memcpy(out + o, REDACTED, rl);
            o += rl;
            i += s->len;
        } else {
            out[o++] = text[i++];
        }
    }
    out[o] = '\0';
}
