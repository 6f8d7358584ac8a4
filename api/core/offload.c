/*
 * offload.c — bounded FIFOs of requests served by a fixed set of threads
 * (see offload.h). Two lanes: the main lane is always served first; the bulk
 * lane has its own queue and never holds more than bulk_threads threads, so a
 * flood of bulk work (registrations) can neither fill the main lane's queue
 * nor take every thread from it (logins).
 */
#include "offload.h"

#include <pthread.h>
#include <stdlib.h>

#include "util.h"

struct lane {
    struct req **q; /* ring buffer of qmax entries */
    int qmax, head, len;
    int reserved; /* slots promised to callers that have not submitted yet */
};

struct offload {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    int nthreads;
    struct lane lane[2]; /* OFFLOAD_MAIN, OFFLOAD_BULK */
    int bulk_max;        /* threads the bulk lane may hold at once */
    int bulk_running;    /* threads running bulk work now */
    bool stopping;
    void (*run)(struct req *r);
};

static bool bulk_ready(const struct offload *o)
{
    return o->lane[OFFLOAD_BULK].len > 0 && o->bulk_running < o->bulk_max;
}

static struct req *pop(struct lane *l)
{
    struct req *r = l->q[l->head];
    l->head = (l->head + 1) % l->qmax;
    l->len--;
    return r;
}

static void *loop(void *arg)
{
    struct offload *o = arg;
    for (;;) {
        pthread_mutex_lock(&o->mu);
        for (;;) {
            if (o->lane[OFFLOAD_MAIN].len > 0 || bulk_ready(o))
                break;
            bool idle = o->lane[OFFLOAD_MAIN].reserved == 0 && o->lane[OFFLOAD_BULK].reserved == 0 &&
                        o->lane[OFFLOAD_BULK].len == 0;
            if (o->stopping && idle) {
                pthread_mutex_unlock(&o->mu);
                return NULL;
            }
            pthread_cond_wait(&o->cv, &o->mu);
        }
        bool bulk = o->lane[OFFLOAD_MAIN].len == 0;
        struct req *r = pop(&o->lane[bulk ? OFFLOAD_BULK : OFFLOAD_MAIN]);
        if (bulk)
            o->bulk_running++;
        pthread_mutex_unlock(&o->mu);
        o->run(r);
        if (bulk) {
            pthread_mutex_lock(&o->mu);
            o->bulk_running--;
            pthread_cond_broadcast(&o->cv); /* queued bulk work may go now */
            pthread_mutex_unlock(&o->mu);
        }
    }
}

struct offload *offload_new(int threads, int queue_max, int bulk_threads, int bulk_queue, void (*run)(struct req *r))
{
    struct offload *o = xcalloc(1, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->lane[OFFLOAD_MAIN].qmax = queue_max;
    o->lane[OFFLOAD_BULK].qmax = bulk_queue;
    for (int i = 0; i < 2; i++)
        o->lane[i].q = xcalloc((size_t)o->lane[i].qmax, sizeof *o->lane[i].q);
    o->bulk_max = bulk_threads < threads ? bulk_threads : threads - 1;
    if (o->bulk_max < 1)
        o->bulk_max = 1; /* one thread in all: bulk work still runs, the main lane goes first */
    o->run = run;
    o->threads = xcalloc((size_t)threads, sizeof *o->threads);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&o->threads[o->nthreads], NULL, loop, o) == 0)
            o->nthreads++;
    return o;
}

bool offload_reserve(struct offload *o, enum offload_lane lane)
{
    struct lane *l = &o->lane[lane];
    pthread_mutex_lock(&o->mu);
    bool ok = !o->stopping && o->nthreads > 0 && l->len + l->reserved < l->qmax;
    if (ok)
        l->reserved++;
    pthread_mutex_unlock(&o->mu);
    return ok;
}

void offload_submit(struct offload *o, enum offload_lane lane, struct req *r)
{
    struct lane *l = &o->lane[lane];
    pthread_mutex_lock(&o->mu);
    l->reserved--;
    l->q[(l->head + l->len) % l->qmax] = r;
    l->len++;
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
    for (int i = 0; i < 2; i++)
        free(o->lane[i].q);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

int offload_depth(struct offload *o)
{
    pthread_mutex_lock(&o->mu);
    int n = o->lane[OFFLOAD_MAIN].len + o->lane[OFFLOAD_BULK].len;
    pthread_mutex_unlock(&o->mu);
    return n;
}
