/*
 * The async stage: hands its input to a worker thread that drives the rest
 * of the chain, so two parts of a chain run on two cores (decryption and
 * decompression on one, hashing and the sink on the other).
 *
 * Invariants:
 *  1. Memory is nslots fixed slots allocated at creation; the producer
 *     blocks when all are full, so memory does not grow with the input.
 *  2. Bytes reach next in order, and next is used by the worker only, from
 *     the first write until finish returns (or free joins the thread).
 *  3. A failure downstream is seen by the producer at its next write or at
 *     finish, with the worker's code and message.
 */
#include <pthread.h>
#include <string.h>

#include "common/mem.h"
#include "pipeline/stage.h"

typedef struct slot {
    unsigned char *data;
    size_t len;
} slot;

typedef struct async_stage {
    pd_stage base;
    pd_pull_fn consume; /* pull mode: the worker runs this instead of forwarding */
    void *payload;
    void (*free_payload)(void *);
    bool holding; /* pull mode: the consumer holds the slot at head */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot *slots;
    size_t nslots, slot_size;
    size_t head;  /* next slot the worker takes */
    size_t count; /* filled slots waiting for the worker */
    size_t fill;  /* producer's current slot: (head + count) % nslots */
    bool finishing, done, aborting;
    int worker_rc;
    pd_err worker_err;
} async_stage;

/* Pull mode: the next chunk for the consumer (see pd_pull_next). */
int
pd_pull_next(pd_pull *p, const void **buf, size_t *len)
{
    async_stage *a = (async_stage *)p;
    int more;

    pthread_mutex_lock(&a->mu);
    if (a->holding) {
        // Release the slot handed out last time.
        a->slots[a->head].len = 0;
        a->head = (a->head + 1) % a->nslots;
        a->count--;
        a->holding = false;
        pthread_cond_broadcast(&a->cv);
    }
    while (a->count == 0 && !a->finishing && !a->aborting)
        pthread_cond_wait(&a->cv, &a->mu);
    if (a->count > 0 && !a->aborting) {
        *buf = a->slots[a->head].data;
        *len = a->slots[a->head].len;
        a->holding = true;
        more = 1;
    } else {
        *buf = NULL;
        *len = 0;
        more = a->aborting ? -1 : 0;
    }
    pthread_mutex_unlock(&a->mu);
    return more;
}

static void *
pull_worker(void *arg)
{
    async_stage *a = arg;
    pd_err err = PD_ERR_INIT;
    int rc = a->consume(a->payload, (pd_pull *)a, &err);

    pthread_mutex_lock(&a->mu);
    if (rc < 0) {
        a->worker_rc = rc;
        a->worker_err = err;
    }
    a->done = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void *
worker(void *arg)
{
    async_stage *a = arg;
    pd_err err = PD_ERR_INIT;
    int rc = 0;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->count == 0 && !a->finishing && !a->aborting)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->aborting)
            break;
        if (a->count == 0 && a->finishing) {
            pthread_mutex_unlock(&a->mu);
            rc = pd_stage_forward_finish(&a->base, &err);
            pthread_mutex_lock(&a->mu);
            if (rc < 0) {
                a->worker_rc = rc;
                a->worker_err = err;
            }
            break;
        }
        slot *s = &a->slots[a->head];
        pthread_mutex_unlock(&a->mu);
        rc = pd_stage_forward(&a->base, s->data, s->len, &err);
        pthread_mutex_lock(&a->mu);
        if (rc < 0) {
            a->worker_rc = rc;
            a->worker_err = err;
            break;
        }
        s->len = 0;
        a->head = (a->head + 1) % a->nslots;
        a->count--;
        pthread_cond_broadcast(&a->cv);
    }
    a->done = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static int
worker_failure(async_stage *a, pd_err *err)
{
    if (err)
        *err = a->worker_err;
    return a->worker_rc;
}

/* Publishes the producer's current slot; waits for a free one. Locked. */
static int
publish(async_stage *a, pd_err *err)
{
    a->count++;
    pthread_cond_broadcast(&a->cv);
    while (a->count == a->nslots && !a->done)
        pthread_cond_wait(&a->cv, &a->mu);
    if (a->done && a->worker_rc < 0)
        return worker_failure(a, err);
    if (a->done) {
        // A pull consumer that stopped early wants no more: discard.
        a->count = 0;
        a->slots[a->head].len = 0;
    }
    a->fill = (a->head + a->count) % a->nslots;
    return 0;
}

static int
start(async_stage *a, pd_err *err)
{
    if (pthread_create(&a->thread, NULL, a->consume ? pull_worker : worker, a) != 0)
        return pd_err_set(err, PD_EFAIL, "could not start a pipeline thread");
    a->started = true;
    return 0;
}

static int
async_write(pd_stage *st, const void *buf, size_t len, pd_err *err)
{
    async_stage *a = (async_stage *)st;
    const unsigned char *p = buf;
    int rc = 0;

    if (!a->started && (rc = start(a, err)) < 0)
        return rc;
    pthread_mutex_lock(&a->mu);
    if (a->done && a->worker_rc < 0) {
        rc = worker_failure(a, err);
        goto out;
    }
    while (len > 0) {
        slot *s = &a->slots[a->fill];
        size_t n = a->slot_size - s->len;
        if (n > len)
            n = len;
        // The slot at fill belongs to the producer until published.
        pthread_mutex_unlock(&a->mu);
        memcpy(s->data + s->len, p, n);
        pthread_mutex_lock(&a->mu);
        s->len += n;
        p += n;
        len -= n;
        if (s->len == a->slot_size && (rc = publish(a, err)) < 0)
            goto out;
    }
out:
    pthread_mutex_unlock(&a->mu);
    return rc;
}

static int
async_finish(pd_stage *st, pd_err *err)
{
    async_stage *a = (async_stage *)st;
    int rc = 0;

    if (!a->started && (rc = start(a, err)) < 0)
        return rc;
    pthread_mutex_lock(&a->mu);
    if (a->slots[a->fill].len > 0 && !a->done) {
        a->count++;
        a->fill = (a->head + a->count) % a->nslots;
    }
    a->finishing = true;
    pthread_cond_broadcast(&a->cv);
    while (!a->done)
        pthread_cond_wait(&a->cv, &a->mu);
    if (a->worker_rc < 0)
        rc = worker_failure(a, err);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = false;
    return rc;
}

static void
async_free(pd_stage *st)
{
    async_stage *a = (async_stage *)st;

    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->aborting = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    if (a->free_payload)
        a->free_payload(a->payload);
    for (size_t i = 0; i < a->nslots; i++)
        pd_free(a->slots[i].data);
    pd_free(a->slots);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
}

static const pd_stage_ops async_ops = {"async", async_write, async_finish, async_free};

pd_stage *
pd_stage_pull_new(pd_pull_fn consume, void *payload, size_t slot_size, size_t nslots)
{
    async_stage *a = (async_stage *)pd_stage_async_new(NULL, slot_size, nslots);

    a->consume = consume;
    a->payload = payload;
    return &a->base;
}

pd_stage *
pd_stage_pull_new_owned(pd_pull_fn consume, void *payload, void (*free_payload)(void *),
                        size_t slot_size, size_t nslots)
{
    pd_stage *s = pd_stage_pull_new(consume, payload, slot_size, nslots);

    ((async_stage *)s)->free_payload = free_payload;
    return s;
}

pd_stage *
pd_stage_async_new(pd_stage *next, size_t slot_size, size_t nslots)
{
    async_stage *a = pd_calloc(1, sizeof(*a));

    PD_ASSERT(slot_size > 0 && nslots >= 2);
    pd_stage_init(&a->base, &async_ops, next);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->nslots = nslots;
    a->slot_size = slot_size;
    a->slots = pd_calloc(nslots, sizeof(slot));
    for (size_t i = 0; i < nslots; i++)
        a->slots[i].data = pd_malloc(slot_size);
    return &a->base;
}
