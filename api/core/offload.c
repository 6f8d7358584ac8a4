/*
 * offload.c — bounded FIFO of requests served by a fixed set of threads
 * (see offload.h).
 */
#include "offload.h"

#include <pthread.h>
#include <stdlib.h>

#include "util.h"

struct offload {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    int nthreads;
    struct req **q; /* ring buffer of queue_max entries */
    int qmax, head, len;
    int reserved; /* slots promised to callers that have not submitted yet */
    bool stopping;
    void (*run)(struct req *r);
};

static void *loop(void *arg)
{
    struct offload *o = arg;
    for (;;) {
        pthread_mutex_lock(&o->mu);
        while (o->len == 0 && !(o->stopping && o->reserved == 0))
            pthread_cond_wait(&o->cv, &o->mu);
        if (o->len == 0) {
            pthread_mutex_unlock(&o->mu);
            return NULL;
        }
        struct req *r = o->q[o->head];
        o->head = (o->head + 1) % o->qmax;
        o->len--;
        pthread_mutex_unlock(&o->mu);
        o->run(r);
    }
}

struct offload *offload_new(int threads, int queue_max, void (*run)(struct req *r))
{
    struct offload *o = xcalloc(1, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->qmax = queue_max;
    o->q = xcalloc((size_t)queue_max, sizeof *o->q);
    o->run = run;
    o->threads = xcalloc((size_t)threads, sizeof *o->threads);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&o->threads[o->nthreads], NULL, loop, o) == 0)
            o->nthreads++;
    return o;
}

bool offload_reserve(struct offload *o)
{
    pthread_mutex_lock(&o->mu);
    bool ok = !o->stopping && o->nthreads > 0 && o->len + o->reserved < o->qmax;
    if (ok)
        o->reserved++;
    pthread_mutex_unlock(&o->mu);
    return ok;
}

void offload_submit(struct offload *o, struct req *r)
{
    pthread_mutex_lock(&o->mu);
    o->reserved--;
    o->q[(o->head + o->len) % o->qmax] = r;
    o->len++;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

void offload_stop(struct offload *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->mu);
    o->stopping = true;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    for (int i = 0; i < o->nthreads; i++)
        pthread_join(o->threads[i], NULL);
    o->nthreads = 0; /* offload_reserve() now refuses */
}

void offload_free(struct offload *o)
{
    if (!o)
        return;
    free(o->threads);
    free(o->q);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

int offload_depth(struct offload *o)
{
    pthread_mutex_lock(&o->mu);
    int n = o->len;
    pthread_mutex_unlock(&o->mu);
    return n;
}
