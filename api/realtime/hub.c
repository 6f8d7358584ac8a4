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

#include "deadlines.h"
#include "http.h"
#include "log.h"
#include "util.h"

#define NBUCKETS 4096          /* users hash into these; each has a wake generation */
#define PEEK_EVERY_US 2000000u /* how often suspended sockets are checked for EOF */
#define EPH_KEEP 32            /* recent ephemeral events kept per user ... */
#define EPH_KEEP_US 3000000u   /* ... for this long, for devices between two polls */
#define EPH_DEVICES 8          /* devices per user whose last delivered event is tracked */

/* Ephemeral events are not stored, but a device that is between two polls
 * (its previous poll just answered) must not miss one: the user's recent
 * events wait here briefly, and each device's next poll takes those it has
 * not had yet. */
struct eph_event {
    uint64_t id;
    uint64_t at_us;
    json_t *ev;
};

struct eph_user {
    int64_t user_id;
    struct eph_event ring[EPH_KEEP];
    size_t n, head; /* ring: oldest at head */
    struct {
        int64_t device_id;
        uint64_t last_id; /* newest event id this device received */
    } dev[EPH_DEVICES];
    size_t ndev_next; /* round-robin slot to reuse */
    struct eph_user *next;
};

struct bucket {
    struct waiter *head;
    struct eph_user *eph;
    uint64_t gen;
};

static uint64_t eph_next_id = 1;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_cv;
static struct bucket buckets[NBUCKETS];
static struct deadlines heap; /* waiters by deadline (deadlines.h) */
static bool stopping, timer_running;
static pthread_t timer_thread;

static struct bucket *bucket_of(int64_t user)
{
    return &buckets[(uint64_t)user % NBUCKETS];
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
    deadlines_remove(&heap, w);
    w->state = st;
}

/* ---- recent ephemeral events (mu held) ---- */

static struct eph_user *eph_find(struct bucket *b, int64_t user, bool create)
{
    for (struct eph_user *e = b->eph; e; e = e->next)
        if (e->user_id == user)
            return e;
    if (!create)
        return NULL;
    struct eph_user *e = xcalloc(1, sizeof *e);
    e->user_id = user;
    e->next = b->eph;
    b->eph = e;
    return e;
}

static void eph_expire(struct eph_user *e, uint64_t now)
{
    while (e->n > 0 && (now - e->ring[e->head].at_us > EPH_KEEP_US)) {
        json_decref(e->ring[e->head].ev);
        e->ring[e->head].ev = NULL;
        e->head = (e->head + 1) % EPH_KEEP;
        e->n--;
    }
}

static void eph_push(struct eph_user *e, json_t *ev, uint64_t now)
{
    eph_expire(e, now);
    if (e->n == EPH_KEEP) { /* full: drop the oldest */
        json_decref(e->ring[e->head].ev);
        e->head = (e->head + 1) % EPH_KEEP;
        e->n--;
    }
    struct eph_event *slot = &e->ring[(e->head + e->n) % EPH_KEEP];
    slot->id = eph_next_id++;
    slot->at_us = now;
    slot->ev = json_incref(ev);
    e->n++;
}

static uint64_t *eph_last(struct eph_user *e, int64_t device)
{
    for (size_t i = 0; i < EPH_DEVICES; i++)
        if (e->dev[i].device_id == device)
            return &e->dev[i].last_id;
    size_t i = e->ndev_next++ % EPH_DEVICES;
    e->dev[i].device_id = device;
    e->dev[i].last_id = 0; /* unknown device: it gets what is still recent */
    return &e->dev[i].last_id;
}

/* Appends to w->ephemeral every recent event the device has not had. */
static size_t eph_take(struct eph_user *e, struct waiter *w, uint64_t now)
{
    eph_expire(e, now);
    uint64_t *last = eph_last(e, w->device_id);
    size_t taken = 0;
    for (size_t i = 0; i < e->n; i++) {
        struct eph_event *x = &e->ring[(e->head + i) % EPH_KEEP];
        if (x->id <= *last)
            continue;
        if (!w->ephemeral)
            w->ephemeral = json_array();
        json_array_append(w->ephemeral, x->ev);
        *last = x->id;
        taken++;
    }
    return taken;
}

/* Frees users whose recent events all expired (timer thread). */
static void eph_gc(uint64_t now)
{
    for (size_t b = 0; b < NBUCKETS; b++)
        for (struct eph_user **p = &buckets[b].eph; *p;) {
            eph_expire(*p, now);
            if ((*p)->n == 0) {
                struct eph_user *dead = *p;
                *p = dead->next;
                free(dead);
            } else {
                p = &(*p)->next;
            }
        }
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
        while (heap.len > 0 && heap.v[0]->deadline_us <= now) {
            struct waiter *w = heap.v[0];
            detach(w, W_TIMEOUT);
            rl_add(&rl, w);
        }
        if (now >= next_peek) {
            for (size_t i = 0; i < heap.len;) {
                if (socket_closed(heap.v[i])) {
                    struct waiter *w = heap.v[i];
                    detach(w, W_GONE); /* moves another waiter into slot i */
                    rl_add(&rl, w);
                } else {
                    i++;
                }
            }
            next_peek = now + PEEK_EVERY_US;
            eph_gc(now);
        }
        if (rl.n) {
            pthread_mutex_unlock(&mu);
            rl_resume(&rl);
            pthread_mutex_lock(&mu);
            continue;
        }
        uint64_t until = next_peek;
        if (heap.len > 0 && heap.v[0]->deadline_us < until)
            until = heap.v[0]->deadline_us;
        uint64_t wait = until > now ? until - now : 0;
        struct timespec ts;
        timespec_after(CLOCK_MONOTONIC, wait, &ts);
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
    while (heap.len > 0) {
        struct waiter *w = heap.v[0];
        detach(w, W_SHUTDOWN);
        rl_add(&rl, w);
    }
    pthread_cond_broadcast(&timer_cv);
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
    if (timer_running)
        pthread_join(timer_thread, NULL);
    timer_running = false;
    deadlines_free(&heap);
    pthread_mutex_lock(&mu);
    eph_gc(UINT64_MAX / 2); /* everything is expired now */
    pthread_mutex_unlock(&mu);
}

uint64_t hub_gen(int64_t user)
{
    pthread_mutex_lock(&mu);
    uint64_t g = bucket_of(user)->gen;
    pthread_mutex_unlock(&mu);
    return g;
}

enum hub_block hub_block(struct req *r, struct waiter *w, uint64_t gen, int timeout_s)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    if (stopping) {
        pthread_mutex_unlock(&mu);
        return HUB_STOPPING;
    }
    struct bucket *b = bucket_of(w->user_id);
    if (b->gen != gen) {
        pthread_mutex_unlock(&mu);
        return HUB_MOVED;
    }
    struct eph_user *e = eph_find(b, w->user_id, false);
    if (e && eph_take(e, w, now_us()) > 0) {
        pthread_mutex_unlock(&mu);
        return HUB_MISSED; /* ephemeral events arrived while the device was between polls */
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
    deadlines_push(&heap, w);
    if (w->heap_idx == 0)
        pthread_cond_signal(&timer_cv);
    req_suspend(r); /* under mu: no wake can come before the suspend */
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
    return HUB_SUSPENDED;
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
    uint64_t now = now_us();
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    struct eph_user *e = eph_find(b, user, true);
    eph_push(e, ev, now);
    for (struct waiter *w = b->head; w;) {
        struct waiter *next = w->next;
        if (w->user_id == user) {
            eph_take(e, w, now);
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
    size_t n = heap.len;
    pthread_mutex_unlock(&mu);
    return n;
}

size_t hub_waiting(int64_t **users, int64_t **since)
{
    pthread_mutex_lock(&mu);
    size_t n = heap.len;
    *users = xmalloc((n ? n : 1) * sizeof **users);
    *since = xmalloc((n ? n : 1) * sizeof **since);
    for (size_t i = 0; i < n; i++) {
        (*users)[i] = heap.v[i]->user_id;
        (*since)[i] = heap.v[i]->since;
    }
    pthread_mutex_unlock(&mu);
    return n;
}
