/*
 * zstd compression and decompression stages.
 *
 * Compression cuts the input into chunks and compresses each into an
 * independent zstd frame with its content size in the frame header (one-shot
 * ZSTD_compress2), on a pool of the stage's own threads. Decompression finds
 * the frame boundaries in the stream itself (frame header, 3-byte block
 * headers, optional checksum; RFC 8878) and decompresses each frame whose
 * header gives a small enough content size in one shot on the pool, which is
 * both parallel and cheaper than streaming (no copy through a window
 * buffer). Any other frame, such as the single streamed frame older pgdrill
 * versions wrote, goes through one streaming decoder.
 *
 * Invariants:
 *  1. Memory is fixed at creation: a ring of njobs jobs (workers + 3, and
 *     COMPRESS_SLACK more to compress; one without threads), each with an
 *     input and an output buffer, and one libzstd context per thread.
 *     Nothing is reallocated; every length read from the stream is checked
 *     against these buffers before bytes are copied.
 *  2. Output leaves in input order, from the head of the ring only, and on
 *     one thread only: the caller's without threads, else the emitter
 *     thread's, which alone calls next until finish has joined it (so the
 *     stages below, encryption, hashing and storage, run beside the
 *     caller's own work). A streamed frame's output goes into jobs too, so
 *     it queues behind every frame before it. Workers never call next.
 *  3. A job's buffers belong to the producer (the caller's thread) while it
 *     fills the job, to one worker while it is JOB_RUNNING, and to whoever
 *     emits once it is JOB_DONE; state, head and count change under the
 *     pool mutex.
 *  4. Workers only run libzstd; errors are formatted by whoever emits, from
 *     the job's libzstd result.
 */
#include <pthread.h>
#include <string.h>

#include <zstd.h>

#include "common/mem.h"
#include "pipeline/stage.h"

#define ZSTD_MAGIC      0xFD2FB528u
#define SKIPPABLE_MASK  0xFFFFFFF0u
#define SKIPPABLE_MAGIC 0x184D2A50u
#define BLOCK_MAX       (128 * 1024) /* RFC 8878 Block_Maximum_Size at most */
#define FRAME_HDR_MAX   18           /* magic 4 + descriptor 1 + window 1 + dict 4 + size 8 */

/*
 * Extra compression jobs in the ring, so the producer rarely waits for a
 * free job while one worker is still on an older frame: 4 (8 MiB more
 * memory) made a 2-core backup of the mixed set 5% faster; 8 no faster.
 */
#define COMPRESS_SLACK 4

typedef enum job_state {
    JOB_FREE,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_DONE,
} job_state;

typedef struct job {
    unsigned char *in, *out;
    size_t in_len;
    size_t out_len; /* compression: bytes produced; decompression: the content size */
    size_t result;  /* libzstd's return value */
    job_state state;
} job;

/* Frame parser states (decompression). */
typedef enum parse_state {
    P_MAGIC,      /* collecting a frame's 4-byte magic */
    P_SKIP_SIZE,  /* collecting a skippable frame's 4-byte size */
    P_SKIP_BODY,  /* skipping its body */
    P_FRAME_HDR,  /* collecting a zstd frame header */
    P_BLOCK_HDR,  /* collecting a 3-byte block header */
    P_BLOCK_BODY, /* passing a block's bytes */
    P_CHECKSUM,   /* collecting the 4-byte content checksum */
} parse_state;

typedef struct zstd_stage zstd_stage;

typedef struct worker_arg {
    zstd_stage *z;
    int index; /* into cctxs or dctxs */
} worker_arg;

struct zstd_stage {
    pd_stage base;
    bool decompress;
    char *what; /* object name for messages (decompression) */

    // Streaming: compression with opts.stream (sout its output buffer), and
    // decompression of frames without a usable content size (into jobs).
    ZSTD_CCtx *scctx;
    ZSTD_DCtx *sdctx;
    unsigned char *sout;
    size_t sout_size;
    size_t last_hint; /* streaming decompression: 0 when a frame just ended */

    // The job pool.
    ZSTD_CCtx **cctxs; /* one per thread, or one for the caller with no threads */
    ZSTD_DCtx **dctxs;
    int nthreads;
    pthread_t *threads;
    worker_arg *args;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv, free_cv;
    bool stopping;
    // With threads: an emitter thread forwards done jobs, in
    // order, and is the only one to call next until finish joins it.
    pthread_t emitter_thread;
    bool emitter_started, draining, emitter_done;
    int emit_rc; /* the emitter's failure, with emit_err */
    pd_err emit_err;
    job *jobs;
    size_t njobs, in_cap, out_cap;
    size_t head;  /* oldest job not yet emitted */
    size_t count; /* jobs from head on that are queued, running or done */
    job *filling; /* the producer's job being filled, or NULL */

    // Compression.
    size_t chunk;

    // Decompression: the frame parser.
    parse_state ps;
    unsigned char field[FRAME_HDR_MAX];
    size_t field_len, field_want;
    uint64_t left;     /* bytes left of a block body or skippable frame */
    bool last_block;   /* the block being passed is the frame's last */
    bool has_checksum; /* the current frame ends with a checksum */
    bool streaming;    /* the current frame goes to sdctx, not to a job */
    bool any_frame;    /* a frame began (decompression) or was submitted (compression) */
};

static int
zstd_fail(pd_err *err, size_t code)
{
    return pd_err_set(err, PD_EFAIL, "could not compress: zstd: %s", ZSTD_getErrorName(code));
}

static int
corrupt(zstd_stage *z, pd_err *err, const char *cause)
{
    return pd_err_set(err, PD_ECORRUPT, "cannot decompress object \"%s\": zstd: %s", z->what,
                      cause);
}

static uint32_t
get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- the job pool ---- */

/* Runs one job with the libzstd context of slot index. */
static void
run_job(zstd_stage *z, int index, job *j)
{
    if (z->decompress) {
        j->result = ZSTD_decompressDCtx(z->dctxs[index], j->out, j->out_len, j->in, j->in_len);
    } else {
        j->result = ZSTD_compress2(z->cctxs[index], j->out, z->out_cap, j->in, j->in_len);
        j->out_len = ZSTD_isError(j->result) ? 0 : j->result;
    }
}

static void *
worker(void *arg)
{
    worker_arg *wa = arg;
    zstd_stage *z = wa->z;

    pthread_mutex_lock(&z->mu);
    while (!z->stopping) {
        job *j = NULL;
        // The oldest queued job first, so the head is done soonest.
        for (size_t i = 0; i < z->count && j == NULL; i++) {
            job *c = &z->jobs[(z->head + i) % z->njobs];
            if (c->state == JOB_QUEUED)
                j = c;
        }
        if (j == NULL) {
            pthread_cond_wait(&z->work_cv, &z->mu);
            continue;
        }
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&z->mu);
        run_job(z, wa->index, j);
        pthread_mutex_lock(&z->mu);
        j->state = JOB_DONE;
        pthread_cond_broadcast(&z->done_cv);
    }
    pthread_mutex_unlock(&z->mu);
    return NULL;
}

/* Checks a finished job's result and forwards its output (producer or emitter). */
static int
emit_job(zstd_stage *z, job *j, pd_err *err)
{
    if (ZSTD_isError(j->result)) {
        if (!z->decompress)
            return zstd_fail(err, j->result);
        return pd_err_set(err, PD_ECORRUPT, "cannot decompress object \"%s\": zstd: %s", z->what,
                          ZSTD_getErrorName(j->result));
    }
    if (z->decompress && j->result != j->out_len)
        return corrupt(z, err, "a frame decompressed to another size than its header gives");
    return j->out_len > 0 ? pd_stage_forward(&z->base, j->out, j->out_len, err) : 0;
}

/* Frees the job at the head of the ring. Locked, or the producer's alone. */
static void
release_head(zstd_stage *z)
{
    job *j = &z->jobs[z->head];

    j->state = JOB_FREE;
    j->in_len = j->out_len = 0;
    z->head = (z->head + 1) % z->njobs;
    z->count--;
}

/* The emitter thread: forwards done jobs from the head, in order, until drained. */
static void *
emitter(void *arg)
{
    zstd_stage *z = arg;
    pd_err err = PD_ERR_INIT;
    int rc;

    pthread_mutex_lock(&z->mu);
    for (;;) {
        while (!z->stopping && !(z->count > 0 && z->jobs[z->head].state == JOB_DONE) &&
               !(z->draining && z->count == 0))
            pthread_cond_wait(&z->done_cv, &z->mu);
        if (z->stopping || z->count == 0)
            break;
        job *j = &z->jobs[z->head];
        pthread_mutex_unlock(&z->mu);
        rc = emit_job(z, j, &err);
        pthread_mutex_lock(&z->mu);
        release_head(z);
        pthread_cond_broadcast(&z->free_cv);
        if (rc < 0) {
            z->emit_rc = rc;
            z->emit_err = err;
            break;
        }
    }
    z->emitter_done = true;
    pthread_cond_broadcast(&z->free_cv);
    pthread_mutex_unlock(&z->mu);
    return NULL;
}

/* The emitter's failure, once it has stopped on one. Locked. */
static int
emitter_failure(zstd_stage *z, pd_err *err)
{
    if (!z->emitter_done || z->emit_rc == 0)
        return 0;
    if (err)
        *err = z->emit_err;
    return z->emit_rc;
}

static int
thread_fail(const zstd_stage *z, int rc, pd_err *err)
{
    if (z->what)
        return pd_err_set(err, PD_EFAIL, "could not start a zstd thread for object \"%s\": %s",
                          z->what, strerror(rc));
    return pd_err_set(err, PD_EFAIL, "could not start a zstd thread: %s", strerror(rc));
}

static int
start_threads(zstd_stage *z, pd_err *err)
{
    for (; z->started < z->nthreads; z->started++) {
        z->args[z->started].z = z;
        z->args[z->started].index = z->started;
        int rc = pthread_create(&z->threads[z->started], NULL, worker, &z->args[z->started]);
        if (rc != 0)
            return thread_fail(z, rc, err);
    }
    if (z->nthreads > 0 && !z->emitter_started) {
        int rc = pthread_create(&z->emitter_thread, NULL, emitter, z);
        if (rc != 0)
            return thread_fail(z, rc, err);
        z->emitter_started = true;
    }
    return 0;
}

/* Without threads: forwards the jobs at the head, each done already (producer). */
static int
emit(zstd_stage *z, pd_err *err)
{
    int rc;

    PD_ASSERT(z->nthreads == 0);
    while (z->count > 0) {
        rc = emit_job(z, &z->jobs[z->head], err);
        release_head(z);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The downstream failure the emitter stopped on, if any (producer). */
static int
downstream_failure(zstd_stage *z, pd_err *err)
{
    int rc;

    if (z->nthreads == 0)
        return 0;
    pthread_mutex_lock(&z->mu);
    rc = emitter_failure(z, err);
    pthread_mutex_unlock(&z->mu);
    return rc;
}

/* The job to fill next; waits for (and emits) the oldest when all are busy. */
static int
take_job(zstd_stage *z, pd_err *err)
{
    int rc;

    if (z->filling != NULL)
        return 0;
    if (z->nthreads > 0) {
        if ((rc = start_threads(z, err)) < 0)
            return rc;
        pthread_mutex_lock(&z->mu);
        while (z->count == z->njobs && !z->emitter_done)
            pthread_cond_wait(&z->free_cv, &z->mu);
        rc = emitter_failure(z, err);
        if (rc == 0)
            z->filling = &z->jobs[(z->head + z->count) % z->njobs];
        pthread_mutex_unlock(&z->mu);
        if (rc < 0)
            return rc;
    } else {
        z->filling = &z->jobs[(z->head + z->count) % z->njobs];
    }
    PD_ASSERT(z->filling->state == JOB_FREE && z->filling->in_len == 0);
    return 0;
}

/*
 * Puts the filled job into the ring as state: JOB_QUEUED for a worker to
 * run, or JOB_DONE when its output is in place already (a streamed frame's).
 * Without threads it runs (if queued) and is forwarded here, in order.
 */
static int
hand_on(zstd_stage *z, job_state state, pd_err *err)
{
    job *j = z->filling;
    int rc;

    z->filling = NULL;
    if (z->nthreads == 0) {
        if (state == JOB_QUEUED)
            run_job(z, 0, j);
        j->state = JOB_DONE;
        z->count++;
        return emit(z, err);
    }
    if ((rc = start_threads(z, err)) < 0)
        return rc;
    pthread_mutex_lock(&z->mu);
    j->state = state;
    z->count++;
    if (state == JOB_QUEUED)
        pthread_cond_signal(&z->work_cv);
    else
        pthread_cond_broadcast(&z->done_cv);
    rc = emitter_failure(z, err);
    pthread_mutex_unlock(&z->mu);
    return rc;
}

/* Hands the filled job to a worker (or runs it here). */
static int
submit(zstd_stage *z, pd_err *err)
{
    z->any_frame = true;
    return hand_on(z, JOB_QUEUED, err);
}

/* Queues the filled job, whose output is in place, as done. */
static int
submit_done(zstd_stage *z, pd_err *err)
{
    z->filling->result = z->filling->out_len;
    return hand_on(z, JOB_DONE, err);
}

/* Waits until every job has been forwarded (emitter or here), then stops the emitter. */
static int
drain(zstd_stage *z, pd_err *err)
{
    int rc;

    if (z->nthreads == 0)
        return emit(z, err);
    if (!z->emitter_started)
        return 0;
    pthread_mutex_lock(&z->mu);
    z->draining = true;
    pthread_cond_broadcast(&z->done_cv);
    while (!z->emitter_done)
        pthread_cond_wait(&z->free_cv, &z->mu);
    rc = emitter_failure(z, err);
    pthread_mutex_unlock(&z->mu);
    pthread_join(z->emitter_thread, NULL);
    z->emitter_started = false;
    return rc;
}

static void
stop_threads(zstd_stage *z)
{
    pthread_mutex_lock(&z->mu);
    z->stopping = true;
    pthread_cond_broadcast(&z->work_cv);
    pthread_cond_broadcast(&z->done_cv);
    pthread_mutex_unlock(&z->mu);
    for (int i = 0; i < z->started; i++)
        pthread_join(z->threads[i], NULL);
    z->started = 0;
    if (z->emitter_started)
        pthread_join(z->emitter_thread, NULL);
    z->emitter_started = false;
}

static void
zstd_free(pd_stage *s)
{
    zstd_stage *z = (zstd_stage *)s;

    if (z->jobs) {
        stop_threads(z);
        pthread_cond_destroy(&z->work_cv);
        pthread_cond_destroy(&z->done_cv);
        pthread_cond_destroy(&z->free_cv);
        pthread_mutex_destroy(&z->mu);
    }
    for (size_t i = 0; i < z->njobs; i++) {
        pd_free(z->jobs[i].in);
        pd_free(z->jobs[i].out);
    }
    pd_free(z->jobs);
    for (int i = 0; z->cctxs && i < (z->nthreads ? z->nthreads : 1); i++)
        ZSTD_freeCCtx(z->cctxs[i]);
    for (int i = 0; z->dctxs && i < (z->nthreads ? z->nthreads : 1); i++)
        ZSTD_freeDCtx(z->dctxs[i]);
    pd_free(z->cctxs);
    pd_free(z->dctxs);
    pd_free(z->threads);
    pd_free(z->args);
    ZSTD_freeCCtx(z->scctx);
    ZSTD_freeDCtx(z->sdctx);
    pd_free(z->sout);
    pd_free(z->what);
}

/*
 * Sets up the pool: nthreads workers and an emitter, and nthreads + 3 jobs
 * (the producer fills one, the emitter holds one while forwarding it), plus
 * COMPRESS_SLACK to compress; or,
 * with no threads, one job run on the caller's thread.
 */
static void
pool_init(zstd_stage *z, int nthreads, size_t in_cap, size_t out_cap)
{
    int nctx = nthreads ? nthreads : 1;

    z->nthreads = nthreads;
    z->njobs = nthreads ? (size_t)nthreads + 3 + (z->decompress ? 0 : COMPRESS_SLACK) : 1;
    z->in_cap = in_cap;
    z->out_cap = out_cap;
    z->jobs = pd_calloc(z->njobs, sizeof(job));
    for (size_t i = 0; i < z->njobs; i++) {
        z->jobs[i].in = pd_malloc(in_cap);
        z->jobs[i].out = pd_malloc(out_cap);
    }
    if (z->decompress)
        z->dctxs = pd_calloc((size_t)nctx, sizeof(ZSTD_DCtx *));
    else
        z->cctxs = pd_calloc((size_t)nctx, sizeof(ZSTD_CCtx *));
    if (nthreads > 0) {
        z->threads = pd_calloc((size_t)nthreads, sizeof(pthread_t));
        z->args = pd_calloc((size_t)nthreads, sizeof(worker_arg));
    }
    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->work_cv, NULL);
    pthread_cond_init(&z->done_cv, NULL);
    pthread_cond_init(&z->free_cv, NULL);
}

/* ---- compression ---- */

/* Streamed compression (opts.stream): compresses in with mode, forwarding all output. */
static int
compress_some(zstd_stage *z, ZSTD_inBuffer *in, ZSTD_EndDirective mode, pd_err *err)
{
    for (;;) {
        ZSTD_outBuffer out = {z->sout, z->sout_size, 0};
        size_t left = ZSTD_compressStream2(z->scctx, &out, in, mode);
        int rc;

        if (ZSTD_isError(left))
            return zstd_fail(err, left);
        if (out.pos > 0 && (rc = pd_stage_forward(&z->base, z->sout, out.pos, err)) < 0)
            return rc;
        if (mode == ZSTD_e_continue ? in->pos == in->size : left == 0)
            return 0;
    }
}

static int
zstd_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    zstd_stage *z = (zstd_stage *)s;
    const unsigned char *p = buf;
    int rc;

    if (z->scctx) {
        ZSTD_inBuffer in = {buf, len, 0};
        return compress_some(z, &in, ZSTD_e_continue, err);
    }
    // A failure downstream (the emitter's) comes first, as in unzstd_write.
    if ((rc = downstream_failure(z, err)) < 0)
        return rc;
    while (len > 0) {
        if ((rc = take_job(z, err)) < 0)
            return rc;
        job *j = z->filling;
        size_t n = z->chunk - j->in_len;
        if (n > len)
            n = len;
        memcpy(j->in + j->in_len, p, n);
        j->in_len += n;
        p += n;
        len -= n;
        if (j->in_len == z->chunk && (rc = submit(z, err)) < 0)
            return rc;
    }
    return 0;
}

static int
zstd_finish(pd_stage *s, pd_err *err)
{
    zstd_stage *z = (zstd_stage *)s;
    int rc;

    if (z->scctx) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        if ((rc = compress_some(z, &in, ZSTD_e_end, err)) < 0)
            return rc;
        return pd_stage_forward_finish(s, err);
    }
    // A partial last chunk, or one empty frame when there was no input at
    // all (an empty zstd stream is not valid).
    if (z->filling != NULL || !z->any_frame) {
        if ((rc = take_job(z, err)) < 0 || (rc = submit(z, err)) < 0)
            return rc;
    }
    if ((rc = drain(z, err)) < 0)
        return rc;
    return pd_stage_forward_finish(s, err);
}

static const pd_stage_ops zstd_ops = {"zstd", zstd_write, zstd_finish, zstd_free};

/* Applies level, no checksum and, for a streamed frame, libzstd's workers. */
static size_t
setup_cctx(ZSTD_CCtx *c, const pd_zstd_opts *opts)
{
    size_t r = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, opts->level);

    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
    if (!ZSTD_isError(r) && opts->stream && opts->workers > 0)
        r = ZSTD_CCtx_setParameter(c, ZSTD_c_nbWorkers, opts->workers);
    // From level 3 up, zstd's default jobs (8 MiB and more) make two workers
    // need about 64 MiB of RSS; 4 MiB jobs need 44 MiB.
    if (!ZSTD_isError(r) && opts->stream && opts->workers > 0 && opts->level >= 3)
        r = ZSTD_CCtx_setParameter(c, ZSTD_c_jobSize, 4 * 1024 * 1024);
    return r;
}

int
pd_stage_zstd_new(pd_stage **out, const pd_zstd_opts *opts, pd_stage *next, pd_err *err)
{
    zstd_stage *z = pd_calloc(1, sizeof(*z));
    size_t r = 0;

    pd_stage_init(&z->base, &zstd_ops, next);
    *out = &z->base;
    // Above 19 the window outgrows what readers accept (PD_ZSTD_MAX_WINDOW_LOG).
    if (opts->level < 1 || opts->level > 19) {
        pd_err_set(err, PD_EFAIL, "cannot compress at zstd level %d: use 1 to 19", opts->level);
        pd_stage_free(*out);
        *out = NULL;
        return PD_EFAIL;
    }
    PD_ASSERT(opts->workers >= 0 && opts->chunk_size <= PD_ZSTD_MAX_CHUNK);
    if (opts->stream) {
        z->scctx = ZSTD_createCCtx();
        z->sout_size = ZSTD_CStreamOutSize();
        z->sout = pd_malloc(z->sout_size);
        if (z->scctx == NULL)
            goto fail;
        if (ZSTD_isError(r = setup_cctx(z->scctx, opts)))
            goto fail;
        return 0;
    }
    z->chunk = opts->chunk_size ? opts->chunk_size : PD_ZSTD_CHUNK;
    pool_init(z, opts->workers, z->chunk, ZSTD_compressBound(z->chunk));
    for (int i = 0; i < (z->nthreads ? z->nthreads : 1); i++) {
        r = 0;
        if ((z->cctxs[i] = ZSTD_createCCtx()) == NULL)
            goto fail;
        if (ZSTD_isError(r = setup_cctx(z->cctxs[i], opts)))
            goto fail;
    }
    return 0;
fail:
    pd_err_set(err, PD_EFAIL, "could not set up zstd (level %d, %d workers): %s", opts->level,
               opts->workers, r ? ZSTD_getErrorName(r) : "out of memory");
    pd_stage_free(*out);
    *out = NULL;
    return PD_EFAIL;
}

/* ---- decompression ---- */

/*
 * Streams len bytes of a frame through sdctx, into the output buffers of
 * jobs that are queued as done when full (and at the frame's end), so a
 * streamed frame's output goes out in order with everything else.
 */
static int
stream_some(zstd_stage *z, const void *buf, size_t len, pd_err *err)
{
    ZSTD_inBuffer in = {buf, len, 0};
    bool full = false;
    int rc;

    // Loop while input remains, or while the last call filled the output
    // buffer (zstd may hold more output back).
    while (in.pos < in.size || full) {
        if ((rc = take_job(z, err)) < 0)
            return rc;
        job *j = z->filling;
        ZSTD_outBuffer out = {j->out, z->out_cap, j->out_len};
        size_t before = in.pos;
        size_t hint = ZSTD_decompressStream(z->sdctx, &out, &in);
        bool moved = out.pos > j->out_len;

        if (ZSTD_isError(hint))
            return pd_err_set(err, PD_ECORRUPT, "cannot decompress object \"%s\": zstd: %s",
                              z->what, ZSTD_getErrorName(hint));
        // A call that moved nothing says nothing about where the frame is.
        if (in.pos > before || moved)
            z->last_hint = hint;
        j->out_len = out.pos;
        full = out.pos == out.size;
        if (full && (rc = submit_done(z, err)) < 0)
            return rc;
        if (!full && in.pos == before && !moved)
            break;
    }
    return 0;
}

/* Passes bytes of the current zstd frame to its job or to the streaming decoder. */
static int
frame_put(zstd_stage *z, const unsigned char *p, size_t n, pd_err *err)
{
    if (z->streaming)
        return stream_some(z, p, n, err);
    job *j = z->filling;
    if (n > z->in_cap - j->in_len)
        return corrupt(z, err, "a frame is longer than its content size allows");
    memcpy(j->in + j->in_len, p, n);
    j->in_len += n;
    return 0;
}

/*
 * The frame header in z->field is complete (z->field_len bytes): checks the
 * window, and starts the frame as a job (content size known and small) or
 * streamed, after everything before it.
 */
static int
frame_begin(zstd_stage *z, pd_err *err)
{
    const unsigned char *h = z->field;
    unsigned fhd = h[4];
    bool single = (fhd & 0x20) != 0;
    size_t did_size = (size_t[]){0, 1, 2, 4}[fhd & 3];
    size_t fcs_size = (size_t[]){single ? 1 : 0, 2, 4, 8}[fhd >> 6];
    const unsigned char *q = h + 5;
    uint64_t window = 0, content = ZSTD_CONTENTSIZE_UNKNOWN;
    int rc;

    if (!single) {
        unsigned exponent = q[0] >> 3, mantissa = q[0] & 7;
        if (exponent + 10 > PD_ZSTD_MAX_WINDOW_LOG)
            return corrupt(z, err, "a frame needs a window larger than 16 MiB");
        window = (uint64_t)1 << (exponent + 10);
        window += window / 8 * mantissa;
        q++;
    }
    q += did_size;
    if (fcs_size > 0) {
        content = 0;
        for (size_t i = 0; i < fcs_size; i++)
            content |= (uint64_t)q[i] << (8 * i);
        if (fcs_size == 2)
            content += 256;
    }
    if (single)
        window = content;
    if (window > (uint64_t)1 << PD_ZSTD_MAX_WINDOW_LOG)
        return corrupt(z, err, "a frame needs a window larger than 16 MiB");
    z->has_checksum = (fhd & 0x04) != 0;
    z->streaming = content > PD_ZSTD_MAX_CHUNK || did_size > 0;
    if (z->streaming) {
        z->last_hint = 1;
        return stream_some(z, h, z->field_len, err);
    }
    if ((rc = take_job(z, err)) < 0)
        return rc;
    z->filling->out_len = (size_t)content;
    return frame_put(z, h, z->field_len, err);
}

/* The current zstd frame's last byte has been passed. */
static int
frame_end(zstd_stage *z, pd_err *err)
{
    if (!z->streaming)
        return submit(z, err);
    // The decoder has seen the whole frame: it must say the frame is complete.
    if (z->last_hint != 0)
        return corrupt(z, err, "a frame ends before its content does");
    // Its last output goes out now; an empty job stays for the next frame.
    if (z->filling != NULL && z->filling->out_len > 0)
        return submit_done(z, err);
    return 0;
}

/* Collects up to field_want bytes of a small field; true when it is complete. */
static bool
collect(zstd_stage *z, const unsigned char **p, size_t *len)
{
    size_t n = z->field_want - z->field_len;

    if (n > *len)
        n = *len;
    memcpy(z->field + z->field_len, *p, n);
    z->field_len += n;
    *p += n;
    *len -= n;
    return z->field_len == z->field_want;
}

static void
expect(zstd_stage *z, parse_state ps, size_t want)
{
    z->ps = ps;
    z->field_len = 0;
    z->field_want = want;
}

/* After a block's header or body: the next block, the checksum, or the next frame. */
static int
after_block(zstd_stage *z, pd_err *err)
{
    if (!z->last_block) {
        expect(z, P_BLOCK_HDR, 3);
        return 0;
    }
    if (z->has_checksum) {
        expect(z, P_CHECKSUM, 4);
        return 0;
    }
    expect(z, P_MAGIC, 4);
    return frame_end(z, err);
}

static int
unzstd_write(pd_stage *s, const void *buf, size_t len, pd_err *err)
{
    zstd_stage *z = (zstd_stage *)s;
    const unsigned char *p = buf;
    int rc;

    // A failure downstream (the emitter's) comes first: the same stream
    // fails the same way whatever the timing.
    if ((rc = downstream_failure(z, err)) < 0)
        return rc;
    while (len > 0) {
        switch (z->ps) {
        case P_MAGIC:
            if (!collect(z, &p, &len))
                break;
            z->any_frame = true;
            if ((get_le32(z->field) & SKIPPABLE_MASK) == SKIPPABLE_MAGIC) {
                z->ps = P_SKIP_SIZE;
                z->field_want = 8;
            } else if (get_le32(z->field) == ZSTD_MAGIC) {
                z->ps = P_FRAME_HDR;
                z->field_want = 5;
            } else {
                return corrupt(z, err, "not a zstd frame (unknown magic number)");
            }
            break;
        case P_SKIP_SIZE:
            if (!collect(z, &p, &len))
                break;
            z->left = get_le32(z->field + 4);
            expect(z, P_SKIP_BODY, 0);
            break;
        case P_SKIP_BODY: {
            size_t n = z->left < len ? (size_t)z->left : len;
            p += n;
            len -= n;
            z->left -= n;
            break;
        }
        case P_FRAME_HDR:
            if (!collect(z, &p, &len))
                break;
            if (z->field_want == 5) {
                // The descriptor gives the header's size.
                unsigned fhd = z->field[4];
                if (fhd & 0x08)
                    return corrupt(z, err, "a frame header has its reserved bit set");
                z->field_want = 5 + ((fhd & 0x20) ? 0 : 1) + (size_t[]){0, 1, 2, 4}[fhd & 3] +
                                (size_t[]){(fhd & 0x20) ? 1 : 0, 2, 4, 8}[fhd >> 6];
                if (z->field_want > 5)
                    break;
            }
            if ((rc = frame_begin(z, err)) < 0)
                return rc;
            expect(z, P_BLOCK_HDR, 3);
            break;
        case P_BLOCK_HDR: {
            if (!collect(z, &p, &len))
                break;
            uint32_t bh =
                (uint32_t)z->field[0] | (uint32_t)z->field[1] << 8 | (uint32_t)z->field[2] << 16;
            unsigned type = (bh >> 1) & 3;
            uint32_t size = bh >> 3;
            if (type == 3)
                return corrupt(z, err, "a block has the reserved block type");
            if (size > BLOCK_MAX)
                return corrupt(z, err, "a block is larger than 128 KiB");
            if ((rc = frame_put(z, z->field, 3, err)) < 0)
                return rc;
            z->last_block = (bh & 1) != 0;
            z->left = type == 1 ? 1 : size; // an RLE block stores its one byte
            expect(z, P_BLOCK_BODY, 0);
            if (z->left == 0 && (rc = after_block(z, err)) < 0)
                return rc;
            break;
        }
        case P_BLOCK_BODY: {
            size_t n = z->left < len ? (size_t)z->left : len;
            if ((rc = frame_put(z, p, n, err)) < 0)
                return rc;
            p += n;
            len -= n;
            z->left -= n;
            if (z->left == 0 && (rc = after_block(z, err)) < 0)
                return rc;
            break;
        }
        case P_CHECKSUM:
            if (!collect(z, &p, &len))
                break;
            if ((rc = frame_put(z, z->field, 4, err)) < 0)
                return rc;
            expect(z, P_MAGIC, 4);
            if ((rc = frame_end(z, err)) < 0)
                return rc;
            break;
        }
        if (z->ps == P_SKIP_BODY && z->left == 0)
            expect(z, P_MAGIC, 4);
    }
    return 0;
}

static int
unzstd_finish(pd_stage *s, pd_err *err)
{
    zstd_stage *z = (zstd_stage *)s;
    int rc;

    // The stream must end exactly between frames, after at least one.
    if (!z->any_frame || z->ps != P_MAGIC || z->field_len != 0)
        return pd_err_set(err, PD_ECORRUPT,
                          "cannot decompress object \"%s\": the zstd stream is truncated", z->what);
    if ((rc = drain(z, err)) < 0)
        return rc;
    return pd_stage_forward_finish(s, err);
}

static const pd_stage_ops unzstd_ops = {"unzstd", unzstd_write, unzstd_finish, zstd_free};

int
pd_stage_unzstd_new(pd_stage **out, const char *what, int workers, pd_stage *next, pd_err *err)
{
    zstd_stage *z = pd_calloc(1, sizeof(*z));
    size_t r = 0;

    PD_ASSERT(workers >= 0);
    pd_stage_init(&z->base, &unzstd_ops, next);
    *out = &z->base;
    z->decompress = true;
    z->what = pd_strdup(what);
    expect(z, P_MAGIC, 4);
    z->sdctx = ZSTD_createDCtx();
    z->last_hint = 1;
    // A frame of content size c is at most ZSTD_compressBound(c) long as
    // libzstd writes it; longer ones are refused as corrupt.
    pool_init(z, workers, ZSTD_compressBound(PD_ZSTD_MAX_CHUNK), PD_ZSTD_MAX_CHUNK);
    if (z->sdctx == NULL)
        goto fail;
    r = ZSTD_DCtx_setParameter(z->sdctx, ZSTD_d_windowLogMax, PD_ZSTD_MAX_WINDOW_LOG);
    for (int i = 0; !ZSTD_isError(r) && i < (z->nthreads ? z->nthreads : 1); i++) {
        r = 0;
        if ((z->dctxs[i] = ZSTD_createDCtx()) == NULL)
            goto fail;
        r = ZSTD_DCtx_setParameter(z->dctxs[i], ZSTD_d_windowLogMax, PD_ZSTD_MAX_WINDOW_LOG);
    }
    if (ZSTD_isError(r))
        goto fail;
    return 0;
fail:
    pd_err_set(err, PD_EFAIL, "could not set up zstd decompression: %s",
               r ? ZSTD_getErrorName(r) : "out of memory");
    pd_stage_free(*out);
    *out = NULL;
    return PD_EFAIL;
}
