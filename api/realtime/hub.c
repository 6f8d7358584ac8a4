/*
 * hub.c — long-poll waiters (see hub.h for the API and the locking rules).
 */
#include "hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
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
#include "wake.h"

#define NBUCKETS 16384           /* users hash into these; each has a wake generation */
#define KNOWN_MAX 262144         /* users whose inbox head and recent events are kept */
#define KNOWN_IDLE_US 120000000u /* ... forgotten after this long without a poll */
#define KNOWN_BYTES (64u << 20)  /* event bodies kept by all users together */
#define KNOWN_DEVICES 4          /* devices per user whose cursor is remembered */
#define PEEK_EVERY_US 5000000u   /* how often suspended sockets are checked for EOF (a recv each) */
#define EPH_KEEP 32              /* recent ephemeral events kept per user ... */
#define EPH_KEEP_US 3000000u     /* ... for this long, for devices between two polls */
#define EPH_ID_MAX 48            /* bytes of a system-wide ephemeral id, with its NUL */
#define EPH_DEVICES 8            /* devices per user whose last delivered event is tracked */

/* Ephemeral events are not stored, but a device that is between two polls
 * (its previous poll just answered) must not miss one: the user's recent
 * events wait here briefly, and each device's next poll takes those it has
 * not had yet. */
struct eph_event {
    uint64_t id; /* local order */
    uint64_t at_us;
    json_t *ev;
    char sysid[EPH_ID_MAX]; /* system-wide id (bus.h), "" when the publisher sent none */
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

/* What this instance knows of one user's inbox (recent.h). */
struct known {
    int64_t user_id;
    struct recent rc;
    uint64_t epoch;      /* trust epoch in which the head was read from the database */
    uint64_t learned_us; /* when (or when a re-check last confirmed it) */
    uint64_t used_us;    /* the user's last poll here */
    /* The furthest cursor each device was answered with here. Events from
     * memory go only to a poll at or past it: the rows after it cannot have
     * been cleaned up (the device never acknowledged them), so memory never
     * answers where the database would say 410 cursor_expired. */
    struct {
        int64_t device_id, next;
        int64_t acked; /* since of its last poll here, -1 unknown */
    } dev[KNOWN_DEVICES];
    unsigned ndev_next; /* round-robin slot to reuse */
    bool routed;        /* the bus confirmed this instance's subscription to the user's channel */
    struct known *next;
};

struct bucket {
    struct waiter *head;
    struct eph_user *eph;
    struct known *known;
    uint64_t gen;
};

/* Route changes for the bus (subscribe to / leave a user's channel), in
 * order; the bus's subscriber thread takes them (hub_routes_take). */
struct route_ops {
    struct hub_route *v;
    size_t n, cap;
};

static uint64_t eph_next_id = 1;
static struct route_ops routes;
static void (*route_notify)(void); /* tells the bus that routes changed (non-blocking) */
static uint64_t epoch = 1;         /* moves whenever the bus connects or disconnects */
static bool trusted;               /* the bus is subscribed: every commit's wake-up reaches us */
static size_t nknown;
static struct recent_budget budget = {0, KNOWN_BYTES};

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

static void eph_push(struct eph_user *e, json_t *ev, const char *sysid, uint64_t now)
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
    snprintf(slot->sysid, sizeof slot->sysid, "%s", sysid ? sysid : "");
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
        if (!w->ephemeral) {
            w->ephemeral = json_array();
            w->eph_ids = json_array();
        }
        json_array_append(w->ephemeral, x->ev);
        json_array_append_new(w->eph_ids, json_string(x->sysid));
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

/* ---- routes (mu held) ---- */

/* Only while the bus is up: a reconnect re-subscribes every known user
 * (hub_routes_reset), so changes made while it was down need not wait. */
static void route_queue(int64_t user, bool on)
{
    if (!trusted)
        return;
    if (routes.n == routes.cap) {
        routes.cap = routes.cap ? routes.cap * 2 : 256;
        routes.v = xrealloc(routes.v, routes.cap * sizeof *routes.v);
    }
    routes.v[routes.n++] = (struct hub_route){user, on};
    if (route_notify)
        route_notify();
}

/* ---- what is known of users' inboxes (mu held) ---- */

static struct known *known_find(struct bucket *b, int64_t user)
{
    for (struct known *k = b->known; k; k = k->next)
        if (k->user_id == user)
            return k;
    return NULL;
}

/* The head may answer "nothing newer": read from the database in the
 * current epoch while the bus was subscribed, and not too long ago. */
static bool known_trusted(const struct known *k, uint64_t now)
{
    return trusted && k->routed && k->epoch == epoch && now - k->learned_us < HUB_TRUST_US;
}

/* The device's slot, or -1 (created when asked). */
static int known_dev(struct known *k, int64_t device, bool create)
{
    for (int i = 0; i < KNOWN_DEVICES; i++)
        if (k->dev[i].device_id == device)
            return i;
    if (!create)
        return -1;
    int i = (int)(k->ndev_next++ % KNOWN_DEVICES);
    k->dev[i].device_id = device;
    k->dev[i].next = 0;
    k->dev[i].acked = -1;
    return i;
}

/* The device's remembered cursor, or NULL. */
static int64_t *known_cursor(struct known *k, int64_t device, bool create)
{
    int i = known_dev(k, device, create);
    return i < 0 ? NULL : &k->dev[i].next;
}

static void known_answered(struct known *k, int64_t device, int64_t next)
{
    int64_t *c = known_cursor(k, device, true);
    if (next > *c)
        *c = next;
}

/* The device polls with since: what its ack newly covers, from the ring
 * (from -1 when some event of the range is not held or its message is not
 * known); remembers since for the next ack. */
static void known_acked(struct known *k, int64_t device, int64_t since, struct ack_hints *hints)
{
    int i = known_dev(k, device, true);
    int64_t prev = k->dev[i].acked;
    hints->from = -1;
    hints->n = 0;
    hints->repeat = prev >= 0 && since <= prev;
    if (prev >= 0 && since > prev && since - prev <= RECENT_MAX) {
        bool ok = true;
        for (int64_t s = prev + 1; ok && s <= since; s++) {
            const struct evbody *ev = recent_get(&k->rc, s);
            ok = ev && ev->meta;
            if (ok && ev->mseq > 0)
                hints->h[hints->n++] = (struct ack_hint){s, ev->chat_id, ev->mseq, ev->sender};
        }
        if (ok)
            hints->from = prev;
        else
            hints->n = 0;
    }
    if (since > k->dev[i].acked)
        k->dev[i].acked = since;
}

static bool has_waiter(const struct bucket *b, int64_t user)
{
    for (const struct waiter *w = b->head; w; w = w->next)
        if (w->user_id == user)
            return true;
    return false;
}

/* Forgets users that have not polled here for a while (timer thread). */
static void known_gc(uint64_t now, bool all)
{
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct known **p = &buckets[i].known; *p;) {
            struct known *k = *p;
            if (all || (now - k->used_us > KNOWN_IDLE_US && !has_waiter(&buckets[i], k->user_id))) {
                *p = k->next;
                if (!all)
                    route_queue(k->user_id, false);
                recent_clear(&k->rc, &budget);
                free(k);
                nknown--;
            } else {
                p = &k->next;
            }
        }
}

void hub_events_release(struct hub_events *e)
{
    for (int i = 0; i < e->n; i++)
        evbody_unref(e->ev[i]);
    e->n = 0;
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
            known_gc(now, false);
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
    known_gc(0, true);
    free(routes.v);
    routes = (struct route_ops){0};
    pthread_mutex_unlock(&mu);
}

struct hub_ticket hub_ticket(int64_t user)
{
    pthread_mutex_lock(&mu);
    struct hub_ticket t = {bucket_of(user)->gen, epoch};
    pthread_mutex_unlock(&mu);
    return t;
}

/* Registers w and suspends its connection (mu held), unless ephemeral events
 * wait for the device. Older polls of the device go to rl. */
static enum hub_block block_locked(struct req *r, struct waiter *w, struct bucket *b, int timeout_s,
                                   struct resume_list *rl)
{
    struct eph_user *e = eph_find(b, w->user_id, false);
    if (e && eph_take(e, w, now_us()) > 0)
        return HUB_MISSED; /* ephemeral events arrived while the device was between polls */
    /* one poll per device: an older one answers now, empty */
    for (struct waiter *o = b->head; o;) {
        struct waiter *next = o->next;
        if (o->user_id == w->user_id && o->device_id == w->device_id) {
            detach(o, W_REPLACED);
            rl_add(rl, o);
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
    return HUB_SUSPENDED;
}

enum hub_block hub_block(struct req *r, struct waiter *w, struct hub_ticket t, int timeout_s)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    if (stopping) {
        pthread_mutex_unlock(&mu);
        return HUB_STOPPING;
    }
    struct bucket *b = bucket_of(w->user_id);
    enum hub_block rc = b->gen != t.gen ? HUB_MOVED : block_locked(r, w, b, timeout_s, &rl);
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
    return rc;
}

enum hub_block hub_poll(struct req *r, struct waiter *w, int timeout_s, struct hub_events *out, struct ack_hints *hints)
{
    struct resume_list rl = {0};
    uint64_t now = now_us();
    enum hub_block rc = HUB_UNKNOWN;
    out->n = 0;
    hints->from = -1;
    hints->repeat = false;
    hints->n = 0;
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(w->user_id);
    struct known *k = stopping ? NULL : known_find(b, w->user_id);
    if (stopping) {
        rc = HUB_STOPPING;
    } else if (k) {
        k->used_us = now;
        known_acked(k, w->device_id, w->since, hints);
        int limit = w->limit < RECENT_MAX ? w->limit : RECENT_MAX;
        const int64_t *cursor = known_cursor(k, w->device_id, false);
        int n = cursor && w->since >= *cursor ? recent_take(&k->rc, w->since, limit, out->ev, out->seq) : -1;
        if (n > 0) {
            out->n = n;
            rc = HUB_EVENTS;
            known_answered(k, w->device_id, out->seq[n - 1]);
        } else if (w->since == k->rc.head && known_trusted(k, now)) {
            rc = timeout_s == 0 ? HUB_NOTHING : block_locked(r, w, b, timeout_s, &rl);
            known_answered(k, w->device_id, w->since);
        }
    }
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
    return rc;
}

void hub_answered(int64_t user, int64_t device, int64_t since, int64_t next)
{
    pthread_mutex_lock(&mu);
    struct known *k = known_find(bucket_of(user), user);
    if (k) {
        struct ack_hints unused;
        known_answered(k, device, next);
        known_acked(k, device, since, &unused);
    }
    pthread_mutex_unlock(&mu);
}

void hub_learn(int64_t user, int64_t head, struct hub_ticket t)
{
    uint64_t now = now_us();
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    /* a wake-up since the ticket: the head read may already be behind */
    if (!stopping && b->gen == t.gen) {
        struct known *k = known_find(b, user);
        if (!k && nknown < KNOWN_MAX) {
            k = xcalloc(1, sizeof *k);
            k->user_id = user;
            recent_init(&k->rc, head);
            k->next = b->known;
            b->known = k;
            nknown++;
            route_queue(user, true); /* trusted once routed and re-checked (hub_routed) */
        }
        if (k) {
            recent_learn(&k->rc, head, &budget);
            k->epoch = t.epoch;
            k->learned_us = now;
            k->used_us = now;
        }
    }
    pthread_mutex_unlock(&mu);
}

int hub_take(int64_t user, int64_t device, int64_t since, int limit, struct hub_events *out)
{
    int rc = -1;
    uint64_t now = now_us();
    out->n = 0;
    if (limit > RECENT_MAX)
        limit = RECENT_MAX;
    pthread_mutex_lock(&mu);
    struct known *k = known_find(bucket_of(user), user);
    if (k) {
        struct ack_hints unused;
        known_acked(k, device, since, &unused); /* its ack was recorded when it arrived */
        int n = recent_take(&k->rc, since, limit, out->ev, out->seq);
        if (n > 0) {
            out->n = n;
            rc = n;
            known_answered(k, device, out->seq[n - 1]);
        } else if (n == 0 && since == k->rc.head && known_trusted(k, now)) {
            rc = 0;
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

/* Wakes user's polls that are behind seq (mu held). */
static void wake_behind(struct bucket *b, int64_t user, int64_t seq, struct resume_list *rl)
{
    for (struct waiter *w = b->head; w;) {
        struct waiter *next = w->next;
        if (w->user_id == user && w->since < seq) {
            detach(w, W_WOKEN);
            rl_add(rl, w);
        }
        w = next;
    }
}

void hub_wake(const struct wake *wk, size_t n)
{
    struct resume_list rl = {0};
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n; i++) {
        struct bucket *b = bucket_of(wk[i].user);
        b->gen++;
        struct known *k = known_find(b, wk[i].user);
        if (k)
            recent_add(&k->rc, wk[i].seq, wk[i].ev, &budget);
        wake_behind(b, wk[i].user, wk[i].seq, &rl);
    }
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
}

void hub_recheck(int64_t user, int64_t head, struct hub_ticket t)
{
    struct resume_list rl = {0};
    uint64_t now = now_us();
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    struct known *k = known_find(b, user);
    if (k && head >= k->rc.head) {
        /* only ever raised: a wake-up applied after the read is newer */
        if (head > k->rc.head) {
            b->gen++;
            recent_learn(&k->rc, head, &budget);
        }
        k->epoch = t.epoch;
        k->learned_us = now;
    }
    wake_behind(b, user, head, &rl);
    pthread_mutex_unlock(&mu);
    rl_resume(&rl);
}

void hub_set_route_notify(void (*notify)(void))
{
    pthread_mutex_lock(&mu);
    route_notify = notify;
    pthread_mutex_unlock(&mu);
}

size_t hub_routes_take(struct hub_route **out)
{
    pthread_mutex_lock(&mu);
    size_t n = routes.n;
    *out = routes.v;
    routes = (struct route_ops){0};
    pthread_mutex_unlock(&mu);
    return n;
}

void hub_routes_reset(void)
{
    pthread_mutex_lock(&mu);
    routes.n = 0;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct known *k = buckets[i].known; k; k = k->next) {
            k->routed = false;
            route_queue(k->user_id, true);
        }
    pthread_mutex_unlock(&mu);
}

void hub_routed(const int64_t *users, size_t n)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n; i++) {
        struct known *k = known_find(bucket_of(users[i]), users[i]);
        if (k) {
            k->routed = true;
            k->epoch = 0; /* read before the route existed: proof only after a re-check */
        }
    }
    pthread_mutex_unlock(&mu);
}

size_t hub_routed_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < NBUCKETS; i++)
        for (const struct known *k = buckets[i].known; k; k = k->next)
            n += k->routed;
    pthread_mutex_unlock(&mu);
    return n;
}

void hub_waiter_clear(struct waiter *w)
{
    json_decref(w->ephemeral);
    json_decref(w->eph_ids);
    w->ephemeral = w->eph_ids = NULL;
}

void hub_trust(bool up)
{
    pthread_mutex_lock(&mu);
    epoch++;
    trusted = up;
    pthread_mutex_unlock(&mu);
}

void hub_ephemeral(int64_t user, json_t *ev, const char *id)
{
    struct resume_list rl = {0};
    uint64_t now = now_us();
    pthread_mutex_lock(&mu);
    struct bucket *b = bucket_of(user);
    struct eph_user *e = eph_find(b, user, true);
    eph_push(e, ev, id, now);
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

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

size_t hub_waiting(int64_t **users)
{
    pthread_mutex_lock(&mu);
    size_t n = heap.len;
    *users = xmalloc((n ? n : 1) * sizeof **users);
    for (size_t i = 0; i < n; i++)
        (*users)[i] = heap.v[i]->user_id;
    pthread_mutex_unlock(&mu);
    qsort(*users, n, sizeof **users, cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || (*users)[k - 1] != (*users)[i])
            (*users)[k++] = (*users)[i];
    return k;
}

size_t hub_known(size_t *bytes)
{
    pthread_mutex_lock(&mu);
    size_t n = nknown;
    *bytes = budget.used;
    pthread_mutex_unlock(&mu);
    return n;
}
