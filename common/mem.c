/*
 * Allocation wrappers (see mem.h). Exiting on exhaustion keeps every caller
 * free of NULL checks; the repository stays consistent because a commit is
 * always the last, atomic step.
 */
#include "common/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

static __attribute__((noreturn)) void
oom(void)
{
    static const char msg[] = "pgdrill: error: out of memory\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(PD_EXIT_FAIL);
}

void *
pd_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        oom();
    return p;
}

void *
pd_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom();
    return p;
}

void *
pd_realloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL)
        oom();
    return q;
}

char *
pd_strdup(const char *s)
{
    return pd_strndup(s, strlen(s));
}

char *
pd_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = pd_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *
pd_asprintf(const char *fmt, ...)
{
    char probe[1];
    va_list ap;
    int len;
    char *p;

    va_start(ap, fmt);
    len = vsnprintf(probe, sizeof(probe), fmt, ap);
    va_end(ap);
    PD_ASSERT(len >= 0);
    p = pd_malloc((size_t)len + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return p;
}

void
pd_free(void *p)
{
    free(p);
}

void
pd_free_secret(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

void
pd_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "pgdrill: internal error: assertion \"%s\" failed at %s:%d; please report\n",
            expr, file, line);
    abort();
}
