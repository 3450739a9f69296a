/*
 * Streaming stages. A stage is a small object that takes bytes with
 * write(), transforms them, and pushes the result to its next stage; finish()
 * flushes and finishes next, exactly once. Stages do no I/O of their own: the
 * last stage is a sink the caller supplies (a storage writer, an extractor, a
 * child's stdin) through pd_stage_sink_new(). Memory is fixed at creation
 * (PD_STAGE_BUF per buffering stage), so it does not grow with the input, and
 * output never depends on how the input was split into write() calls.
 *
 * Errors are sticky: once a stage fails, every later write() or finish()
 * returns the same code and message. pd_stage_free() frees a stage and every
 * stage downstream of it; it never fails and is safe after an error or
 * without finish().
 */
#ifndef PGDRILL_PIPELINE_STAGE_H
#define PGDRILL_PIPELINE_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PD_STAGE_BUF (128 * 1024)

typedef struct pd_stage pd_stage;

typedef struct pd_stage_ops {
    const char *name;
    int (*write)(pd_stage *s, const void *buf, size_t len, pd_err *err);
    /* Flushes, writes trailers, finishes next. */
    int (*finish)(pd_stage *s, pd_err *err);
    /* Frees the stage's own resources (not next, not the struct). */
    void (*free)(pd_stage *s);
} pd_stage_ops;

/* Implementers embed this first in their struct. */
struct pd_stage {
    const pd_stage_ops *ops;
    pd_stage *next;
    int rc;                  /* sticky failure code, 0 while healthy */
    bool finished;           /* finish() ran (successfully or not) */
    void (*cleanup)(void *); /* pd_stage_set_cleanup */
    void *cleanup_payload;
    pd_err failure; /* the message of the sticky failure */
};

/* Initialises the embedded base; next is owned by s from now on. */
void pd_stage_init(pd_stage *s, const pd_stage_ops *ops, pd_stage *next);

/* Writes len bytes into s (len may be 0). */
PD_MUST_CHECK int pd_stage_write(pd_stage *s, const void *buf, size_t len, pd_err *err);

/* Finishes s and, through it, the whole chain below. Once. */
PD_MUST_CHECK int pd_stage_finish(pd_stage *s, pd_err *err);

/* Frees s and every stage downstream of it; NULL is fine. */
void pd_stage_free(pd_stage *s);

/* For implementers: forward to next (no-op success when next is NULL). */
PD_MUST_CHECK int pd_stage_forward(pd_stage *s, const void *buf, size_t len, pd_err *err);
PD_MUST_CHECK int pd_stage_forward_finish(pd_stage *s, pd_err *err);

/*
 * A sink: calls write_fn for every buffer and finish_fn (may be NULL) once.
 * The callbacks return 0 or a PD_E* code with err filled. payload is
 * borrowed: its owner commits or discards what it wraps after finish.
 */
typedef int (*pd_sink_write_fn)(void *payload, const void *buf, size_t len, pd_err *err);
typedef int (*pd_sink_finish_fn)(void *payload, pd_err *err);
pd_stage *pd_stage_sink_new(pd_sink_write_fn write_fn, pd_sink_finish_fn finish_fn, void *payload);

/* A sink that discards everything (verify reads to nowhere). */
pd_stage *pd_stage_null_new(void);

/* Counts bytes and computes SHA-256 of everything passing through. */
pd_stage *pd_stage_hash_new(pd_stage *next);
/* After a successful finish: the SHA-256 (32 bytes) and the byte count. */
void pd_stage_hash_result(const pd_stage *s, unsigned char sha256[32], uint64_t *bytes);
/*
 * Bytes seen so far (for progress), from the thread that writes into the
 * stage (or any thread once its chain finished).
 */
uint64_t pd_stage_hash_bytes(const pd_stage *s);

typedef struct pd_zstd_opts {
    int level;   /* 1..19 */
    int workers; /* compression threads: 0 none (compress on the caller's thread) */
    /*
     * Plaintext bytes per zstd frame: 0 is PD_ZSTD_CHUNK, at most
     * PD_ZSTD_MAX_CHUNK. Ignored with stream.
     */
    size_t chunk_size;
    /*
     * Write one streamed zstd frame without a content size (libzstd's own
     * worker threads), as pgdrill did before it wrote independent frames.
     * Only for tests that readers still read such objects.
     */
    bool stream;
} pd_zstd_opts;

#define PD_ZSTD_OPTS_INIT \
    {                     \
        3, 0, 0, false    \
    }

/*
 * zstd compression; PD_EFAIL on a libzstd failure. The output is a sequence
 * of independent zstd frames, one per chunk_size bytes of input (the last
 * one shorter; one empty frame for no input), each with its content size in
 * its frame header and no checksum, so that a reader can decompress frames
 * in parallel. With workers > 0 the frames are compressed on that many
 * threads of the stage's own, and next (and everything after it) runs on one
 * more thread of the stage's, which forwards the frames in order, from the
 * first write until finish; with 0, everything runs on the caller's thread.
 * Memory is workers + 7 jobs of two chunk-sized buffers (1 with no workers),
 * allocated at creation.
 */
#define PD_ZSTD_CHUNK     (1024 * 1024)
#define PD_ZSTD_MAX_CHUNK (4 * 1024 * 1024)
PD_MUST_CHECK int pd_stage_zstd_new(pd_stage **out, const pd_zstd_opts *opts, pd_stage *next,
                                    pd_err *err);

/*
 * zstd decompression of a sequence of zstd frames (and skippable frames).
 * what names the object in messages. A damaged or truncated zstd stream is
 * PD_ECORRUPT. The window is capped (PD_ZSTD_MAX_WINDOW_LOG) so a hostile
 * object cannot make us allocate more. Frames whose header gives a content
 * size of at most PD_ZSTD_MAX_CHUNK are decompressed whole, on workers
 * threads of the stage's own; other frames are streamed through one decoder
 * on the caller's thread. With workers > 0, next (and everything after it)
 * runs on one more thread of the stage's, which forwards the output in
 * order, until finish; with 0, everything runs on the caller's thread.
 * Memory is workers + 3 frame buffers (1 with no workers), allocated at
 * creation.
 */
#define PD_ZSTD_MAX_WINDOW_LOG 24
PD_MUST_CHECK int pd_stage_unzstd_new(pd_stage **out, const char *what, int workers, pd_stage *next,
                                      pd_err *err);

/*
 * Runs next (and everything after it) on a worker thread, fed through
 * nslots buffers of slot_size bytes (memory fixed at creation). Errors
 * downstream come back at the next write or at finish.
 */
#define PD_ASYNC_SLOT  (1024 * 1024)
#define PD_ASYNC_SLOTS 8
pd_stage *pd_stage_async_new(pd_stage *next, size_t slot_size, size_t nslots);

/*
 * A sink for pull-style consumers (libarchive reads, a child's stdin):
 * consume runs on a worker thread and takes the chain's output chunk by
 * chunk with pd_pull_next(), in the same fixed slots as the async stage.
 * pd_pull_next returns 1 with a chunk (valid until the next call), 0 at the
 * end of the stream, -1 when the chain is being freed. consume's result is
 * what finish returns; a consumer that stops early makes later writes fail
 * with its error.
 */
typedef struct pd_pull pd_pull;
typedef int (*pd_pull_fn)(void *payload, pd_pull *p, pd_err *err);
pd_stage *pd_stage_pull_new(pd_pull_fn consume, void *payload, size_t slot_size, size_t nslots);
/* The same, owning payload: free_payload(payload) runs when the stage is freed. */
pd_stage *pd_stage_pull_new_owned(pd_pull_fn consume, void *payload, void (*free_payload)(void *),
                                  size_t slot_size, size_t nslots);
int pd_pull_next(pd_pull *p, const void **buf, size_t *len);

/* Runs fn(payload) when the stage s is freed (resources a sink's payload holds). */
void pd_stage_set_cleanup(pd_stage *s, void (*fn)(void *), void *payload);

/* Helper for hex output of digests: writes 2*len+1 bytes. */
void pd_hex(char *out, const unsigned char *in, size_t len);

#endif
