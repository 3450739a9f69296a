/* Tar streams through libarchive on a pull consumer (see tar.h). */
#include "restore/tar.h"

#include <errno.h>

#include "common/mem.h"

typedef struct tar_ctx {
    char *what;
    pd_tar_entry_fn fn;
    void *payload;
    pd_pull *pull;
} tar_ctx;

static la_ssize_t
la_read(struct archive *a, void *client, const void **buf)
{
    tar_ctx *t = client;
    size_t len = 0;
    int more = pd_pull_next(t->pull, buf, &len);

    if (more < 0) {
        archive_set_error(a, ECANCELED, "stopped");
        return -1;
    }
    return more == 0 ? 0 : (la_ssize_t)len;
}

static int
consume(void *payload, pd_pull *p, pd_err *err)
{
    tar_ctx *t = payload;
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    int r, rc = 0;

    t->pull = p;
    archive_read_support_format_tar(a);
    if (archive_read_open(a, t, NULL, la_read, NULL) != ARCHIVE_OK) {
        rc = pd_err_set(err, PD_ECORRUPT, "cannot read tar archive \"%s\": %s", t->what,
                        archive_error_string(a));
        goto cleanup;
    }
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        if ((rc = t->fn(t->payload, a, e, err)) < 0)
            goto cleanup;
    }
    if (r != ARCHIVE_EOF)
        rc = pd_err_set(err, PD_ECORRUPT, "tar archive \"%s\" is damaged: %s", t->what,
                        archive_error_string(a) ? archive_error_string(a) : "unexpected end");
cleanup:
    archive_read_free(a);
    return rc;
}

static void
ctx_free(void *payload)
{
    tar_ctx *t = payload;
    pd_free(t->what);
    pd_free(t);
}

pd_stage *
pd_tar_reader_new(const char *what, pd_tar_entry_fn fn, void *payload)
{
    tar_ctx *t = pd_calloc(1, sizeof(*t));

    t->what = pd_strdup(what);
    t->fn = fn;
    t->payload = payload;
    return pd_stage_pull_new_owned(consume, t, ctx_free, PD_ASYNC_SLOT, PD_ASYNC_SLOTS);
}
