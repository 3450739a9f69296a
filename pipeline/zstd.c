/*
 * zstd compression and decompression stages. Output is drained in pieces of
 * a fixed buffer (ZSTD_CStreamOutSize), so memory does not depend on input.
 * With workers > 0 libzstd compresses on its own threads, leaving the
 * caller's thread free for hashing and encryption.
 */
#include <string.h>

#include <zstd.h>

#include "common/mem.h"
#include "pipeline/stage.h"

typedef struct zstd_stage {
    pd_stage base;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    char *what; /* object name for messages (decompression) */
    unsigned char *out;
    size_t out_size;
    size_t last_hint; /* decompression: 0 when a frame just ended */
    bool any_input;
} zstd_stage;

static int
zstd_fail(pd_err *err, size_t code)
{
    return pd_err_set(err, PD_EFAIL, "could not compress: zstd: %s", ZSTD_getErrorName(code));
}

/* Compresses in with mode, forwarding all output; loops until zstd is done. */
static int
compress_some(zstd_stage *z, ZSTD_inBuffer *in, ZSTD_EndDirective mode, pd_err *err)
{
    for (;;) {
        ZSTD_outBuffer out = {z->out, z->out_size, 0};
        size_t left = ZSTD_compressStream2(z->cctx, &out, in, mode);
        int rc;

        if (ZSTD_isError(left))
            return zstd_fail(err, left);
        if (out.pos > 0 && (rc = pd_stage_forward(&z->base, z->out, out.pos, err)) < 0)
            return rc;
        if (mode == ZSTD_e_continue ? in->pos == in->size : left == 0)
            return 0;
    }
}

static int
zstd_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    ZSTD_inBuffer in = {buf, len, 0};
    return compress_some((zstd_stage *)s, &in, ZSTD_e_continue, err);
}

static int
zstd_finish(pd_stage *s, pd_err *err)
{
    ZSTD_inBuffer in = {NULL, 0, 0};
    int rc;

    if ((rc = compress_some((zstd_stage *)s, &in, ZSTD_e_end, err)) < 0)
        return rc;
    return pd_stage_forward_finish(s, err);
}

static void
zstd_free(pd_stage *s)
{
    zstd_stage *z = (zstd_stage *)s;

    ZSTD_freeCCtx(z->cctx);
    ZSTD_freeDCtx(z->dctx);
    pd_free(z->out);
    pd_free(z->what);
}

static const pd_stage_ops zstd_ops = {"zstd", zstd_write, zstd_finish, zstd_free};

int
pd_stage_zstd_new(pd_stage **out, const pd_zstd_opts *opts, pd_stage *next, pd_err *err)
{
    zstd_stage *z = pd_calloc(1, sizeof(*z));
    size_t r;

    pd_stage_init(&z->base, &zstd_ops, next);
    *out = &z->base;
    // Above 19 the window outgrows what readers accept (PD_ZSTD_MAX_WINDOW_LOG).
    if (opts->level < 1 || opts->level > 19) {
        pd_err_set(err, PD_EFAIL, "cannot compress at zstd level %d: use 1 to 19", opts->level);
        pd_stage_free(*out);
        *out = NULL;
        return PD_EFAIL;
    }
    z->cctx = ZSTD_createCCtx();
    z->out_size = ZSTD_CStreamOutSize();
    z->out = pd_malloc(z->out_size);
    if (z->cctx == NULL) {
        r = 0;
        goto fail;
    }
    r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, opts->level);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 0);
    if (!ZSTD_isError(r) && opts->workers > 0)
        r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_nbWorkers, opts->workers);
    // From level 3 up, zstd's default jobs (8 MiB and more) make two workers
    // need about 64 MiB of RSS; 4 MiB jobs need 44 MiB. Levels 1-2 default to
    // 2 MiB jobs, which use less still.
    if (!ZSTD_isError(r) && opts->workers > 0 && opts->level >= 3)
        r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_jobSize, 4 * 1024 * 1024);
    if (ZSTD_isError(r))
        goto fail;
    return 0;
fail:
    pd_err_set(err, PD_EFAIL, "could not set up zstd (level %d, %d workers): %s", opts->level,
               opts->workers, r ? ZSTD_getErrorName(r) : "out of memory");
    pd_stage_free(*out);
    *out = NULL;
    return PD_EFAIL;
}

/* ---- decompression ---- */

static int
unzstd_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    zstd_stage *z = (zstd_stage *)s;
    ZSTD_inBuffer in = {buf, len, 0};
    bool full = false;

    z->any_input = true;
    // Loop while input remains, or while the last call filled the output
    // buffer (zstd may hold more output back).
    while (in.pos < in.size || full) {
        void *direct = NULL;
        size_t room = 0;
        // Decompress straight into the next async stage's slot when there is
        // one: the copy would otherwise sit on the slowest thread of a restore.
        bool zero_copy = pd_stage_async_reserve(s->next, &direct, &room) && room > 0;
        ZSTD_outBuffer out = {zero_copy ? direct : z->out, zero_copy ? room : z->out_size, 0};
        size_t before = in.pos;
        size_t hint = ZSTD_decompressStream(z->dctx, &out, &in);
        int rc;

        if (ZSTD_isError(hint))
            return pd_err_set(err, PD_ECORRUPT, "cannot decompress object \"%s\": zstd: %s",
                              z->what, ZSTD_getErrorName(hint));
        // A call that moved nothing says nothing about where the frame is.
        if (in.pos > before || out.pos > 0)
            z->last_hint = hint;
        full = out.pos == out.size;
        if (zero_copy && out.pos > 0 && (rc = pd_stage_async_commit(s->next, out.pos, err)) < 0)
            return rc;
        if (!zero_copy && out.pos > 0 && (rc = pd_stage_forward(s, z->out, out.pos, err)) < 0)
            return rc;
        if (!full && in.pos == before && out.pos == 0)
            break;
    }
    return 0;
}

static int
unzstd_finish(pd_stage *s, pd_err *err)
{
    zstd_stage *z = (zstd_stage *)s;

    // A nonzero hint means zstd expects more input: the stream was cut short.
    if (!z->any_input || z->last_hint != 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "cannot decompress object \"%s\": the zstd stream is truncated", z->what);
    return pd_stage_forward_finish(s, err);
}

static const pd_stage_ops unzstd_ops = {"unzstd", unzstd_write, unzstd_finish, zstd_free};

int
pd_stage_unzstd_new(pd_stage **out, const char *what, pd_stage *next, pd_err *err)
{
    zstd_stage *z = pd_calloc(1, sizeof(*z));
    size_t r;

    pd_stage_init(&z->base, &unzstd_ops, next);
    *out = &z->base;
    z->what = pd_strdup(what);
    z->dctx = ZSTD_createDCtx();
    z->out_size = ZSTD_DStreamOutSize();
    z->out = pd_malloc(z->out_size);
    z->last_hint = 1;
    r = z->dctx ? ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, PD_ZSTD_MAX_WINDOW_LOG) : 0;
    if (z->dctx == NULL || ZSTD_isError(r)) {
        pd_err_set(err, PD_EFAIL, "could not set up zstd decompression: %s",
                   z->dctx ? ZSTD_getErrorName(r) : "out of memory");
        pd_stage_free(*out);
        *out = NULL;
        return PD_EFAIL;
    }
    return 0;
}
