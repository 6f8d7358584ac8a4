/*
 * pipeline.c — the group-commit engine (see pipeline.h): a bounded queue,
 * committer threads each with its own PostgreSQL connection, one courier
 * thread for what a committed batch owes Redis.
 */
#include "pipeline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "bus.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "util.h"
#include "wake.h"

/* What a committed batch still owes Redis: the publish of its wake-ups for
 * the other instances and its post (push jobs). When PIPELINE_MAX_POSTS are
 * waiting the oldest is dropped and counted (the other instances' re-check
 * and the worker's outbox reconciler cover what it held). */
struct post {
    struct wake *wakes;
    size_t nwakes;
    void *extra;
    struct post *next;
};

struct pipeline {
    const struct pipe_ops *ops;
    const struct config *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv, post_cv;
    struct pipe_item *head, *tail; /* the queue, guarded by mu */
    size_t queued;
    bool stopping, courier_stop;
    size_t ncommitters;
    pthread_t *threads; /* [ncommitters] */
    pthread_t courier_thread;
    struct post *post_head, *post_tail; /* guarded by mu */
    size_t nposts;
    atomic_ullong batches, items, posts_dropped;
};

bool pipeline_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = db_res_ok(r);
    PQclear(r);
    return ok;
}

bool pipeline_submit(struct pipeline *p, struct pipe_item *it)
{
    pthread_mutex_lock(&p->mu);
    bool ok = !p->stopping && p->queued < PIPELINE_MAX_QUEUE;
    if (ok) {
        req_hand_off(it->r); /* under mu: the committer cannot reply before the suspend */
        it->next = NULL;
        if (p->tail)
            p->tail->next = it;
        else
            p->head = it;
        p->tail = it;
        p->queued++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void pipeline_stats(struct pipeline *p, struct pipeline_stats *out)
{
    *out = (struct pipeline_stats){0};
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    out->depth = p->queued;
    pthread_mutex_unlock(&p->mu);
    out->batches = atomic_load(&p->batches);
    out->items = atomic_load(&p->items);
    out->posts_dropped = atomic_load(&p->posts_dropped);
}

static void post_free(struct pipeline *p, struct post *po, bool dropped)
{
    wakes_unref(po->wakes, po->nwakes);
    free(po->wakes);
    if (dropped && po->extra && p->ops->post_free)
        p->ops->post_free(po->extra);
    free(po);
}

static void post_queue(struct pipeline *p, struct post *po)
{
    struct post *dropped = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->nposts == PIPELINE_MAX_POSTS) {
        dropped = p->post_head;
        p->post_head = dropped->next;
        if (!p->post_head)
            p->post_tail = NULL;
        p->nposts--;
    }
    po->next = NULL;
    if (p->post_tail)
        p->post_tail->next = po;
    else
        p->post_head = po;
    p->post_tail = po;
    p->nposts++;
    pthread_cond_signal(&p->post_cv);
    pthread_mutex_unlock(&p->mu);
    if (dropped) {
        atomic_fetch_add(&p->posts_dropped, 1);
        post_free(p, dropped, true);
    }
}

static void *courier(void *arg)
{
    struct pipeline *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->post_head && !p->courier_stop)
            pthread_cond_wait(&p->post_cv, &p->mu);
        struct post *po = p->post_head;
        if (po) {
            p->post_head = po->next;
            if (!p->post_head)
                p->post_tail = NULL;
            p->nposts--;
        }
        pthread_mutex_unlock(&p->mu);
        if (!po)
            break; /* stopping, and nothing is owed */
        if (po->nwakes)
            bus_publish_wakes(po->wakes, po->nwakes);
        if (po->extra && p->ops->post)
            p->ops->post(po->extra); /* frees extra */
        po->extra = NULL;
        post_free(p, po, false);
    }
    return NULL;
}

/* Takes the next batch off the queue (mu held): bounded in items and bytes,
 * but never empty when the queue is not. */
static struct pipe_item *take_batch(struct pipeline *p, size_t *n_out)
{
    struct pipe_item *first = p->head, *last = NULL;
    size_t n = 0, bytes = 0;
    *n_out = 0;
    if (!first)
        return NULL;
    for (struct pipe_item *it = first; it && n < p->ops->max_batch; it = it->next) {
        if (n > 0 && bytes + it->bytes > p->ops->max_bytes)
            break;
        bytes += it->bytes;
        last = it;
        n++;
    }
    p->head = last->next; /* last is set: the first item is always taken */
    if (!p->head)
        p->tail = NULL;
    last->next = NULL;
    p->queued -= n;
    *n_out = n;
    return first;
}

/* One batch on the committer's session (opened or closed here). */
static void run_batch(struct pipeline *p, struct db_session *db, struct pipe_item *list, size_t n)
{
    struct pipe_item **v = xmalloc(n * sizeof *v);
    size_t k = 0;
    for (struct pipe_item *it = list; it; it = it->next)
        v[k++] = it;
    struct pipe_result res = {0};
    bool ok = db_session_open(db, p->cfg->database_url) && p->ops->commit(db, v, n, &res);
    if (!ok && db->conn && (PQstatus(db->conn) != CONNECTION_OK || !pipeline_exec(db->conn, "ROLLBACK")))
        db_session_close(db);
    atomic_fetch_add(&p->batches, 1);
    atomic_fetch_add(&p->items, n);
    struct post *po = NULL;
    if (ok) {
        /* committed: wake this instance's polls now; what is owed to Redis
         * goes to the courier */
        bus_wake_local(res.wakes, res.nwakes);
        po = xcalloc(1, sizeof *po);
        po->wakes = res.wakes;
        po->nwakes = res.nwakes;
        po->extra = res.post;
    } else {
        for (size_t i = 0; i < n; i++)
            p->ops->unavailable(v[i]);
    }
    for (size_t i = 0; i < n; i++) {
        struct req *r = v[i]->r; /* the item may die with its request once handed back */
        p->ops->done(v[i]);
        req_hand_back(r);
    }
    if (po)
        post_queue(p, po);
    free(v);
}

static void *committer(void *arg)
{
    struct pipeline *p = arg;
    struct db_session db = {0}; /* this committer's own */
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head) { /* stopping, and everything is answered */
            pthread_mutex_unlock(&p->mu);
            break;
        }
        size_t n;
        struct pipe_item *batch = take_batch(p, &n);
        pthread_mutex_unlock(&p->mu);
        run_batch(p, &db, batch, n);
    }
    db_session_close(&db);
    return NULL;
}

/* Stops the courier (and the committers [0, started)) after a failed start. */
static void stop_threads(struct pipeline *p, size_t started)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    p->courier_stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_cond_broadcast(&p->post_cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_join(p->courier_thread, NULL);
}

struct pipeline *pipeline_start(const struct pipe_ops *ops, const struct config *cfg, int committers)
{
    struct pipeline *p = xcalloc(1, sizeof *p);
    p->ops = ops;
    p->cfg = cfg;
    p->ncommitters = committers > 0 ? (size_t)committers : 1;
    p->threads = xcalloc(p->ncommitters, sizeof *p->threads);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->post_cv, NULL);
    if (pthread_create(&p->courier_thread, NULL, courier, p) != 0) {
        nlog(LOG_ERROR, "cannot start a pipeline", json_pack("{s:s}", "pipeline", ops->name));
        pipeline_free(p);
        return NULL;
    }
    for (size_t i = 0; i < p->ncommitters; i++)
        if (pthread_create(&p->threads[i], NULL, committer, p) != 0) {
            nlog(LOG_ERROR, "cannot start a pipeline", json_pack("{s:s}", "pipeline", ops->name));
            stop_threads(p, i);
            pipeline_free(p);
            return NULL;
        }
    return p;
}

void pipeline_stop(struct pipeline *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    bool was = !p->stopping;
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (!was)
        return;
    for (size_t i = 0; i < p->ncommitters; i++)
        pthread_join(p->threads[i], NULL);
    /* the courier finishes what the last batches owe Redis, then ends */
    pthread_mutex_lock(&p->mu);
    p->courier_stop = true;
    pthread_cond_broadcast(&p->post_cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->courier_thread, NULL);
}

void pipeline_free(struct pipeline *p)
{
    if (!p)
        return;
    pthread_cond_destroy(&p->post_cv);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
