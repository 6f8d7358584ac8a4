/*
 * hub.c — long-poll waiters (see hub.h for the API and the locking rules).
 */
#include "hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <microhttpd.h>

#include "http.h"
#include "log.h"
#include "util.h"

#define NBUCKETS 4096           /* users hash into these; each has a wake generation */
#define PEEK_EVERY_US 2000000u  /* how often suspended sockets are checked for EOF */

struct bucket {
    struct waiter *head;
    uint64_t gen;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_cv;
static struct bucket buckets[NBUCKETS];
static struct waiter **heap;    /* min-heap by deadline */
static size_t heap_len, heap_cap;
static bool stopping, timer_running;
static pthread_t timer_thread;

static struct bucket *bucket_of(int64_t user)
{
    return &buckets[(uint64_t)user % NBUCKETS];
}

/* ---- deadline heap (mu held) ---- */

static void heap_set(size_t i, struct waiter *w)
{
    heap[i] = w;
    w->heap_idx = i;
}

static void heap_up(size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p]->deadline_us <= heap[i]->deadline_us)
            break;
        struct waiter *t = heap[p];
        heap_set(p, heap[i]);
        heap_set(i, t);
        i = p;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_len && heap[l]->deadline_us < heap[m]->deadline_us)
            m = l;
        if (r < heap_len && heap[r]->deadline_us < heap[m]->deadline_us)
            m = r;
        if (m == i)
            return;
        struct waiter *t = heap[m];
        heap_set(m, heap[i]);
        heap_set(i, t);
        i = m;
    }
}

static void heap_push(struct waiter *w)
{
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = xrealloc(heap, heap_cap * sizeof *heap);
    }
    heap_set(heap_len++, w);
    heap_up(heap_len - 1);
}

static void heap_remove(struct waiter *w)
{
    size_t i = w->heap_idx;
    struct waiter *last = heap[--heap_len];
    if (i < heap_len) {
        heap_set(i, last);
        heap_up(i);
        heap_down(last->heap_idx);
    }
}

/* Unlinks w from its bucket and the heap, sets its state (mu held). */
static void detach(struct waiter *w, enum waiter_state st)
{
    struct bucket *b = bucket_of(w->user_id);
    for (struct waiter **p = &b->head; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    w->next = NULL;
    heap_remove(w);
    w->state = st;
}

/* A list of waiters to resume once mu is released. */
struct resume_list {
    struct waiter *small[64];
    struct waiter **items;
    size_t n, cap;
};

static void rl_add(struct resume_list *l, struct waiter *w)
{
    if (!l->items) {
        l->items = l->small;
        l->cap = 64;
    }
    if (l->n == l->cap) {
        struct waiter **bigger = xmalloc(l->cap * 2 * sizeof *bigger);
        memcpy(bigger, l->items, l->n * sizeof *bigger);
        if (l->items != l->small)
            free(l->items);
        l->items = bigger;
        l->cap *= 2;
    }
    l->items[l->n++] = w;
}

static void rl_resume(struct resume_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        req_resume(l->items[i]->r);
    if (l->items && l->items != l->small)
        free(l->items);
}

/* ---- timer thread ---- */

static bool socket_closed(struct waiter *w)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(w->r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *timer_main(void *arg)
{
    (void)arg;
    uint64_t next_peek = now_us() + PEEK_EVERY_US;
    pthread_mutex_lock(&mu);
    while (!stopping) {
        struct resume_list rl = {0};
        uint64_t now = now_us();
        while (heap_len > 0 && heap[0]->deadline_us <= now) {
            struct waiter *w = heap[0];
            detach(w, W_TIMEOUT);
            rl_add(&rl, w);
        }
        if (now >= next_peek) {
            for (size_t i = 0; i < heap_len;) {
                if (socket_closed(heap[i])) {
                    struct waiter *w = heap[i];
                    detach(w, W_GONE); /* moves another waiter into slot i */
                    rl_add(&rl, w);
                } else {
                    i++;
                }
            }
            next_peek = now + PEEK_EVERY_US;
        }
        if (rl.n) {
            pthread_mutex_unlock(&mu);
            rl_resume(&rl);
            pthread_mutex_lock(&mu);
            continue;
        }
        uint64_t until = next_peek;
        if (heap_len > 0 && heap[0]->deadline_us < until)
            until = heap[0]->deadline_us;
        uint64_t wait = until > now ? until - now : 0;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(wait / 1000000u);
        ts.tv_nsec += (long)(wait % 1000000u) * 1000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&timer_cv, &mu, &ts);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

void hub_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&timer_cv, &ca);
    pthread_condattr_destroy(&ca);
}

int hub_start(void)
{
    stopping = false;
    if (pthread_create(&timer_thread, NULL, timer_main, NULL) != 0)
        return -1;
    timer_running = true;
    return 0;
}

void hub_stop(void)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    stopping = true;
    while (heap_len > 0) {
        struct waiter *w = heap[0];
        detach(w, W_SHUTDOWN);
        rl_add(&rl, w);
    }
    pthread_cond_broadcast(&timer_cv);
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
    if (timer_running)
        pthread_join(timer_thread, NULL);
    timer_running = false;
    free(heap);
    heap = NULL;
    heap_len = heap_cap = 0;
}

uint64_t hub_gen(int64_t user)
{
    pthread_mutex_lock(&mu);
    uint64_t g = bucket_of(user)->gen;
    pthread_mutex_unlock(&mu);
    return g;
}

int hub_block(struct req *r, struct waiter *w, uint64_t gen, int timeout_s)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    if (stopping) {
        pthread_mutex_unlock(&mu);
        return -1;
    }
    struct bucket *b = bucket_of(w->user_id);
    if (b->gen != gen) {
        pthread_mutex_unlock(&mu);
        return 1;
    }
    /* one poll per device: an older one answers now, empty */
    for (struct waiter *o = b->head; o;) {
        struct waiter *next = o->next;
        if (o->user_id == w->user_id && o->device_id == w->device_id) {
            detach(o, W_REPLACED);
            rl_add(&rl, o);
        }
        o = next;
    }
    w->r = r;
    w->state = W_WAITING;
    w->deadline_us = now_us() + (uint64_t)timeout_s * 1000000u;
    w->next = b->head;
    b->head = w;
    heap_push(w);
    if (w->heap_idx == 0)
        pthread_cond_signal(&timer_cv);
    req_suspend(r); /* under mu: no wake can come before the suspend */
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
    return 0;
}

void hub_wake(int64_t user, int64_t seq)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    b->gen++;
    for (struct waiter *w = b->head; w;) {
        struct waiter *next = w->next;
        if (w->user_id == user && w->since < seq) {
            detach(w, W_WOKEN);
            rl_add(&rl, w);
        }
        w = next;
    }
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
}

void hub_ephemeral(int64_t user, json_t *ev)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    for (struct waiter *w = b->head; w;) {
        struct waiter *next = w->next;
        if (w->user_id == user) {
            if (!w->ephemeral)
                w->ephemeral = json_array();
            json_array_append(w->ephemeral, ev);
            detach(w, W_WOKEN);
            rl_add(&rl, w);
        }
        w = next;
    }
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
}

static void end_device(int64_t user, int64_t device, enum waiter_state st)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    for (struct waiter *w = b->head; w;) {
        struct waiter *next = w->next;
        if (w->user_id == user && (device == 0 || w->device_id == device)) {
            detach(w, st);
            rl_add(&rl, w);
        }
        w = next;
    }
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
}

void hub_revoke(int64_t user, int64_t device)
{
    end_device(user, device, W_REVOKED);
}

void hub_replace(int64_t user, int64_t device)
{
    end_device(user, device, W_REPLACED);
}

size_t hub_count(void)
{
    pthread_mutex_lock(&mu);
    size_t n = heap_len;
    pthread_mutex_unlock(&mu);
    return n;
}

size_t hub_waiting(int64_t **users, int64_t **since)
{
    pthread_mutex_lock(&mu);
    size_t n = heap_len;
    *users = xmalloc((n ? n : 1) * sizeof **users);
    *since = xmalloc((n ? n : 1) * sizeof **since);
    for (size_t i = 0; i < n; i++) {
        (*users)[i] = heap[i]->user_id;
        (*since)[i] = heap[i]->since;
    }
    pthread_mutex_unlock(&mu);
    return n;
}
