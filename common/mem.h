/*
 * Allocation that never returns NULL: on exhaustion pd_malloc and friends
 * print "out of memory" and exit 1, which is safe because nothing
 * uncommitted is ever visible in a repository. PD_ASSERT is for programming
 * errors only (on in every build), never for anything a user can cause.
 */
#ifndef PGDRILL_COMMON_MEM_H
#define PGDRILL_COMMON_MEM_H

#include <stddef.h>

#include "common/err.h"

void *pd_malloc(size_t size);
void *pd_calloc(size_t n, size_t size);
void *pd_realloc(void *p, size_t size);
char *pd_strdup(const char *s);
char *pd_strndup(const char *s, size_t n);
/* Formats into a new string (the caller frees it with pd_free). */
char *pd_asprintf(const char *fmt, ...) PD_PRINTF(1, 2);
void pd_free(void *p);

/* Wipes and frees len bytes at p (key material); p may be NULL. */
void pd_free_secret(void *p, size_t len);

__attribute__((noreturn)) void pd_assert_fail(const char *expr, const char *file, int line);

#define PD_ASSERT(e) ((e) ? (void)0 : pd_assert_fail(#e, __FILE__, __LINE__))

#define PD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
