/*
 * Secrets (keys, passphrases, S3 secret keys) live in pd_secret, an opaque
 * type: passing one to a printf-style logger is a compile error under
 * -Wformat -Werror, and while a secret exists its bytes are registered so the
 * logger redacts them should they reach a message some other way. Freeing
 * wipes the bytes (OPENSSL_cleanse) and unregisters them.
 */
#ifndef PGDRILL_COMMON_SECRET_H
#define PGDRILL_COMMON_SECRET_H

#include <stddef.h>

#include "common/err.h"

typedef struct pd_secret pd_secret;

/* Copies len bytes of data into a new secret (len may be 0). */
pd_secret *pd_secret_new(const void *data, size_t len);

/*
 * Reads a secret from a file of at most max bytes; a final newline is
 * dropped when strip_newline. When require_private, the file must be owned
 * by the running user with no group or other permissions, else PD_ECONFIG.
 */
PD_MUST_CHECK int pd_secret_read_file(pd_secret **out, const char *path, size_t max,
                                      int strip_newline, int require_private, pd_err *err);

const unsigned char *pd_secret_data(const pd_secret *s);
size_t pd_secret_len(const pd_secret *s);

/* Wipes and frees; NULL is fine. */
void pd_secret_free(pd_secret *s);

/*
 * Replaces every registered secret (of at least 4 bytes) occurring in
 * text[0..len) with "[redacted]", writing at most outsize-1 bytes plus NUL.
 */
void pd_secret_redact(const char *text, char *out, size_t outsize);

#endif
