/*
 * bus.c — wake-ups across instances and the Redis-down fallback (see bus.h
 * for the design). Its sweep thread runs presence.c's sweeper.
 */
#include "bus.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "devcache.h"
#include "http.h"
#include "hub.h"
#include "keys.h"
#include "log.h"
#include "presence.h"
#include "realtime.h"
#include "redis.h"
#include "tx.h"
#include "util.h"
#include "wake.h"

#define CHANNEL KEY_BUS
#define PUBLISH_MAX_BODIES (512u * 1024u) /* event bytes in one publish; the rest go id-only */
#define RECHECK_DOWN_MS 1000
#define RECHECK_UP_MS 10000
#define RECHECK_BATCH 5000 /* user ids per heads query */
#define EPH_SEEN_MS 30000  /* a claim outlives every instance's ~3 s memory of the event */

static const struct rt_env *env;
static int wake_kind = -1; /* tx note kind of a wake-up (bus_init) */
static atomic_bool stop_flag, sub_up;
static pthread_t sub_thread, recheck_thread, sweep_thread;
static bool started;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static redisContext *sub_ctx;          /* guarded by mu: bus_stop shuts its socket down */
static atomic_ullong eph_counter;      /* this instance's ephemeral events (their ids) */
static bool recheck_now, recheck_full; /* guarded by mu */
static int64_t *fresh;                 /* users to re-check at once (mu) */
static size_t nfresh, fresh_cap;
static int wake_fd = -1; /* eventfd: the hub queued route changes */
static atomic_ullong n_published, n_received;

bool bus_connected(void)
{
    return atomic_load(&sub_up);
}

void bus_stats(unsigned long long *published, unsigned long long *received)
{
    *published = atomic_load(&n_published);
    *received = atomic_load(&n_received);
}

/* Sleeps up to ms or until bus_stop (or a recheck request, when asked). */
static void nap(int ms, bool wake_on_recheck)
{
    struct timespec ts;
    timespec_after(CLOCK_MONOTONIC, (uint64_t)ms * 1000u, &ts);
    pthread_mutex_lock(&mu);
    if (!atomic_load(&stop_flag) && !(wake_on_recheck && recheck_now))
        pthread_cond_timedwait(&cv, &mu, &ts);
    pthread_mutex_unlock(&mu);
}

/* One message to every instance (revocations). */
static void publish(json_t *msg_new)
{
    json_object_set_new(msg_new, "i", json_string(env->instance_id));
    char *text = json_dumps(msg_new, JSON_COMPACT);
    json_decref(msg_new);
    if (!text)
        return;
    redisReply *rep = redis_cmd(env->redis, "PUBLISH " CHANNEL " %b", text, strlen(text));
    if (rep) {
        freeReplyObject(rep);
        atomic_fetch_add(&n_published, 1);
    }
    free(text);
}

/* Messages for users' channels (KEY_BUS_USER_PREFIX), sent pipelined on
 * one pooled connection: queue with out_add, send with out_flush. */
struct outbox {
    int64_t *user;
    char **text;
    size_t *len;
    size_t n, cap;
};

/* Takes ownership of text_new. */
static void out_add(struct outbox *o, int64_t user, char *text_new, size_t len)
{
    if (!text_new)
        return;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->user = xrealloc(o->user, o->cap * sizeof *o->user);
        o->text = xrealloc(o->text, o->cap * sizeof *o->text);
        o->len = xrealloc(o->len, o->cap * sizeof *o->len);
    }
    o->user[o->n] = user;
    o->text[o->n] = text_new;
    o->len[o->n] = len;
    o->n++;
}

/* Sends and frees everything queued. Redis down: dropped (the re-check
 * covers wake-ups; ephemeral events are best-effort). */
static void out_flush(struct outbox *o)
{
    redisContext *c = o->n ? redis_acquire(env->redis) : NULL;
    size_t sent = 0;
    bool broken = false;
    if (c) {
        for (size_t i = 0; i < o->n; i++)
            redisAppendCommand(c, "PUBLISH " KEY_BUS_USER_PREFIX "%lld %b", (long long)o->user[i], o->text[i],
                               o->len[i]);
        for (size_t i = 0; i < o->n; i++) {
            void *rv = NULL;
            if (redisGetReply(c, &rv) != REDIS_OK || !rv) {
                broken = true;
                break;
            }
            freeReplyObject(rv);
            sent++;
        }
        redis_release(env->redis, c, broken);
    }
    atomic_fetch_add(&n_published, sent);
    for (size_t i = 0; i < o->n; i++)
        free(o->text[i]);
    free(o->user);
    free(o->text);
    free(o->len);
    *o = (struct outbox){0};
}

/* A JSON message (with our instance id) for user's channel. */
static void out_json(struct outbox *o, int64_t user, json_t *msg_new)
{
    json_object_set_new(msg_new, "i", json_string(env->instance_id));
    char *text = json_dumps(msg_new, JSON_COMPACT);
    json_decref(msg_new);
    out_add(o, user, text, text ? strlen(text) : 0);
}

void bus_wake_local(const struct wake *wakes, size_t n)
{
    hub_wake(wakes, n);
}

/* A user's wakes in seq order (gap-free, ascending): (user, seq) is unique. */
static int by_user_seq(const void *a, const void *b)
{
    const struct wake *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void bus_publish_wakes(const struct wake *wakes, size_t n)
{
    if (n == 0)
        return;
    /* one frame per user (the bodies' references stay with the caller's wakes) */
    struct wake *w = xmalloc(n * sizeof *w);
    memcpy(w, wakes, n * sizeof *w);
    qsort(w, n, sizeof *w, by_user_seq);
    struct outbox o = {0};
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && w[j].user == w[i].user;)
            j++;
        size_t len;
        char *text = wakes_encode(env->instance_id, w + i, j - i, PUBLISH_MAX_BODIES, &len);
        out_add(&o, w[i].user, text, len);
    }
    out_flush(&o);
    free(w);
}

/* Applies a wake-up frame another instance published (wakes_encode). A
 * malformed one is dropped whole: the re-check covers what it held. */
static void apply_wakes(const char *text, size_t len)
{
    const char *from;
    size_t flen;
    struct wake *w;
    long n = wakes_decode(text, len, &from, &flen, &w);
    if (n < 0)
        return;
    if (flen != strlen(env->instance_id) || memcmp(from, env->instance_id, flen) != 0)
        hub_wake(w, (size_t)n); /* not our own: local waiters were woken directly */
    wakes_unref(w, (size_t)n);
    free(w);
}

/* The post-commit hook (tx.h): each note is (user, inbox seq, event body). */
static void wake_committed(const struct tx_note *notes, size_t n)
{
    struct wake *w = xmalloc(n * sizeof *w);
    for (size_t i = 0; i < n; i++)
        w[i] = (struct wake){notes[i].a, notes[i].b, notes[i].p};
    bus_wake_local(w, n);
    bus_publish_wakes(w, n);
    free(w); /* the references stay with the notes */
}

static void release_body(void *p)
{
    evbody_unref(p);
}

void bus_note_wake(struct req *r, int64_t user_id, int64_t seq, struct evbody *ev)
{
    tx_note(r, wake_kind, user_id, seq, ev);
}

void bus_ephemeral(const int64_t *users, size_t n, json_t *ev)
{
    char id[48];
    snprintf(id, sizeof id, "%s.%llu", env->instance_id, (unsigned long long)atomic_fetch_add(&eph_counter, 1) + 1);
    struct outbox o = {0};
    for (size_t i = 0; i < n; i++) {
        hub_ephemeral(users[i], ev, id);
        out_json(&o, users[i], json_pack("{s:{s:[I],s:O,s:s}}", "e", "u", (json_int_t)users[i], "ev", ev, "id", id));
    }
    out_flush(&o);
}

void bus_claim_ephemeral(int64_t device, json_t *events, json_t *ids)
{
    size_t n = json_array_size(ids);
    if (n == 0 || n != json_array_size(events))
        return;
    redisContext *c = redis_acquire(env->redis);
    if (!c)
        return;
    bool broken = false;
    size_t asked = 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        if (!id || !*id)
            continue; /* sent without an id: cannot be claimed, delivered */
        redisAppendCommand(c, "SET " KEY_EPH_SEEN_PREFIX "%lld:%s 1 NX PX %d", (long long)device, id, EPH_SEEN_MS);
        asked++;
    }
    /* replies in order; walking backwards would misalign them, so mark first */
    bool *drop = xcalloc(n, sizeof *drop);
    for (size_t i = 0; i < n && !broken; i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        if (!id || !*id)
            continue;
        void *rv = NULL;
        if (redisGetReply(c, &rv) != REDIS_OK || !rv) {
            broken = true;
            break;
        }
        redisReply *rep = rv;
        drop[i] = rep->type == REDIS_REPLY_NIL; /* NX refused: the device had it */
        freeReplyObject(rep);
        asked--;
    }
    redis_release(env->redis, c, broken || asked != 0);
    for (size_t i = n; i > 0; i--)
        if (drop[i - 1]) {
            json_array_remove(events, i - 1);
            json_array_remove(ids, i - 1);
        }
    free(drop);
}

void bus_revoke(int64_t user, int64_t device)
{
    devcache_revoke(user, device);
    hub_revoke(user, device);
    publish(json_pack("{s:[I,I]}", "r", (json_int_t)user, (json_int_t)device));
}

static int by_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

void bus_publish_polling(json_t *ends)
{
    /* to each user's channel, the devices of that user */
    size_t n = json_array_size(ends);
    if (n == 0)
        return;
    int64_t(*v)[2] = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(ends, i);
        v[i][0] = json_integer_value(json_array_get(it, 0));
        v[i][1] = json_integer_value(json_array_get(it, 1));
    }
    qsort(v, n, sizeof *v, by_pair);
    struct outbox o = {0};
    for (size_t i = 0, j; i < n; i = j) {
        json_t *mine = json_array();
        for (j = i; j < n && v[j][0] == v[i][0]; j++)
            json_array_append_new(mine, json_pack("[I,I]", (json_int_t)v[j][0], (json_int_t)v[j][1]));
        out_json(&o, v[i][0], json_pack("{s:o}", "p", mine));
    }
    free(v);
    out_flush(&o);
}

/* Applies a message another instance published. */
static void apply(const char *text, size_t len)
{
    if (len > 0 && text[0] == 'W') {
        apply_wakes(text, len);
        return;
    }
    json_t *m = json_loadb(text, len, 0, NULL);
    if (!m)
        return;
    const char *from = json_string_value(json_object_get(m, "i"));
    if (from && strcmp(from, env->instance_id) == 0)
        goto out; /* our own: local waiters were handled directly */
    size_t i;
    json_t *it;
    json_t *e = json_object_get(m, "e");
    if (e) {
        json_t *ev = json_object_get(e, "ev");
        const char *id = json_string_value(json_object_get(e, "id"));
        json_array_foreach(json_object_get(e, "u"), i, it)
            hub_ephemeral(json_integer_value(it), ev, id);
    }
    json_t *r = json_object_get(m, "r");
    if (json_is_array(r)) {
        devcache_revoke(json_integer_value(json_array_get(r, 0)), json_integer_value(json_array_get(r, 1)));
        hub_revoke(json_integer_value(json_array_get(r, 0)), json_integer_value(json_array_get(r, 1)));
    }
    json_array_foreach(json_object_get(m, "p"), i, it)
        hub_replace(json_integer_value(json_array_get(it, 0)), json_integer_value(json_array_get(it, 1)));
out:
    json_decref(m);
}

static void request_recheck(void)
{
    pthread_mutex_lock(&mu);
    recheck_now = true;
    recheck_full = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Users whose route was just confirmed: the re-check thread reads their
 * heads at once (hub_routed: their heads are proof only after that). */
static void request_recheck_users(const int64_t *users, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&mu);
    if (nfresh + n > fresh_cap) {
        fresh_cap = (nfresh + n) * 2;
        fresh = xrealloc(fresh, fresh_cap * sizeof *fresh);
    }
    memcpy(fresh + nfresh, users, n * sizeof *users);
    nfresh += n;
    recheck_now = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* hub's route notifier: wakes the subscriber (non-blocking, any thread) */
static void routes_changed(void)
{
    uint64_t one = 1;
    if (wake_fd >= 0 && write(wake_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is already non-zero, the subscriber will look */
    }
}

#define SUB_CHUNK 512 /* channels per SUBSCRIBE / UNSUBSCRIBE command */

/* Sends the hub's queued route changes on the subscribed context, in
 * order, as SUBSCRIBE / UNSUBSCRIBE commands of up to SUB_CHUNK channels.
 * 0, or -1 when the connection failed. */
static int send_routes(redisContext *c)
{
    struct hub_route *v = NULL;
    size_t n = hub_routes_take(&v);
    int rc = 0;
    char(*names)[40] = n ? xmalloc(SUB_CHUNK * sizeof *names) : NULL;
    const char *argv[SUB_CHUNK + 1];
    size_t argl[SUB_CHUNK + 1];
    for (size_t i = 0, j; i < n; i = j) {
        argv[0] = v[i].on ? "SUBSCRIBE" : "UNSUBSCRIBE";
        argl[0] = strlen(argv[0]);
        int argc = 1;
        for (j = i; j < n && v[j].on == v[i].on && argc <= SUB_CHUNK; j++) {
            int len = snprintf(names[argc - 1], sizeof names[0], KEY_BUS_USER_PREFIX "%lld", (long long)v[j].user);
            argv[argc] = names[argc - 1];
            argl[argc] = (size_t)len;
            argc++;
        }
        redisAppendCommandArgv(c, argc, argv, argl);
        int done = 0;
        while (!done)
            if (redisBufferWrite(c, &done) != REDIS_OK) {
                rc = -1;
                goto out;
            }
    }
out:
    free(names);
    free(v);
    return rc;
}

/* The user id of a user channel's name, or 0. */
static int64_t channel_user(const redisReply *ch)
{
    size_t plen = strlen(KEY_BUS_USER_PREFIX);
    if (ch->type != REDIS_REPLY_STRING || ch->len <= plen || ch->len > plen + 20 ||
        memcmp(ch->str, KEY_BUS_USER_PREFIX, plen) != 0)
        return 0;
    char digits[24];
    memcpy(digits, ch->str + plen, ch->len - plen);
    digits[ch->len - plen] = '\0';
    int64_t u;
    return parse_i64(digits, &u) && u > 0 ? u : 0;
}

/* Handles every reply the context has buffered: messages are applied,
 * subscription confirmations collected and handed to the hub. 0, or -1
 * when the stream is broken. */
static int drain_replies(redisContext *c)
{
    int64_t confirmed[256];
    size_t nc = 0;
    int rc = 0;
    for (;;) {
        void *rv = NULL;
        if (redisGetReplyFromReader(c, &rv) != REDIS_OK) {
            rc = -1;
            break;
        }
        if (!rv)
            break;
        redisReply *m = rv;
        if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 && m->element[0]->type == REDIS_REPLY_STRING) {
            const char *kind = m->element[0]->str;
            if (strcmp(kind, "message") == 0 && m->element[2]->type == REDIS_REPLY_STRING) {
                atomic_fetch_add(&n_received, 1);
                apply(m->element[2]->str, m->element[2]->len);
            } else if (strcmp(kind, "subscribe") == 0) {
                int64_t u = channel_user(m->element[1]);
                if (u)
                    confirmed[nc++] = u;
                if (nc == sizeof confirmed / sizeof *confirmed) {
                    hub_routed(confirmed, nc);
                    request_recheck_users(confirmed, nc);
                    nc = 0;
                }
            }
        }
        freeReplyObject(m);
    }
    hub_routed(confirmed, nc);
    request_recheck_users(confirmed, nc);
    return rc;
}

static void *sub_main(void *arg)
{
    (void)arg;
    int backoff = 100;
    while (!atomic_load(&stop_flag)) {
        redisContext *c = redis_connect_new(env->redis, true);
        redisReply *rep = c ? redisCommand(c, "SUBSCRIBE " CHANNEL) : NULL;
        if (!rep) {
            if (c)
                redisFree(c);
            nap(backoff, false);
            backoff = backoff < 1000 ? backoff * 2 : 1000;
            continue;
        }
        freeReplyObject(rep);
        /* publishing sub_ctx and reading the stop flag under one lock: either
         * bus_stop sees the context (and shuts its socket) or we see the flag */
        pthread_mutex_lock(&mu);
        sub_ctx = c;
        bool stop_now = atomic_load(&stop_flag);
        pthread_mutex_unlock(&mu);
        if (stop_now) {
            pthread_mutex_lock(&mu);
            sub_ctx = NULL;
            pthread_mutex_unlock(&mu);
            redisFree(c);
            break;
        }
        atomic_store(&sub_up, true);
        hub_trust(true);    /* route changes are queued from here on */
        hub_routes_reset(); /* every known user's channel, again */
        devcache_clear();   /* revocations published while we were away */
        nlog(LOG_INFO, "bus subscribed", json_pack("{s:s}", "channel", CHANNEL));
        request_recheck(); /* anything published while we were away */
        backoff = 100;
        while (!atomic_load(&stop_flag)) {
            if (send_routes(c) < 0 || drain_replies(c) < 0)
                break;
            struct pollfd pf[2] = {{c->fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
            int n = poll(pf, 2, 1000);
            if (n < 0 && errno != EINTR)
                break;
            if (n <= 0)
                continue;
            if (pf[1].revents & POLLIN) {
                uint64_t v;
                if (read(wake_fd, &v, sizeof v) < 0) {
                    /* EAGAIN: another read took it */
                }
            }
            if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (redisBufferRead(c) != REDIS_OK || drain_replies(c) < 0)
                    break;
            }
        }
        atomic_store(&sub_up, false);
        hub_trust(false); /* publishes may be missed: what we know is no proof */
        pthread_mutex_lock(&mu);
        sub_ctx = NULL;
        pthread_mutex_unlock(&mu);
        redisFree(c);
        if (!atomic_load(&stop_flag)) {
            nlog(LOG_WARN, "bus subscriber lost redis; polls fall back to database re-checks", NULL);
            /* the re-check thread may be half-way through its long "Redis is up"
             * sleep: start the 1 s cadence now, not in up to 10 s */
            request_recheck();
        }
    }
    return NULL;
}

/* ---- re-check: PostgreSQL is the truth when pub/sub may have missed something ---- */

static const char sql_heads[] = "SELECT id, inbox_seq FROM users WHERE id = ANY($1::bigint[])";

/* Reads the heads of users (n of them, at most RECHECK_BATCH at a time). */
static void recheck_users(PGconn **pc, const int64_t *users, size_t n)
{
    for (size_t off = 0; off < n; off += RECHECK_BATCH) {
        size_t m = n - off < RECHECK_BATCH ? n - off : RECHECK_BATCH;
        if (!*pc)
            *pc = db_connect(env->cfg->database_url);
        if (!*pc)
            return;
        struct hub_ticket t = hub_ticket(0); /* the epoch in which the heads are read */
        char *lit = db_id_array(users + off, m);
        const char *vals[1] = {lit};
        PGresult *res = PQexecParams(*pc, sql_heads, 1, NULL, vals, NULL, NULL, 0);
        free(lit);
        if (!db_res_ok(res)) {
            PQclear(res);
            PQfinish(*pc);
            *pc = NULL;
            return;
        }
        for (int i = 0; i < PQntuples(res); i++)
            hub_recheck(db_i64(res, i, 0), db_i64(res, i, 1), t);
        PQclear(res);
    }
}

static void *recheck_main(void *arg)
{
    (void)arg;
    PGconn *pc = NULL;
    uint64_t next_full = 0;
    while (!atomic_load(&stop_flag)) {
        nap(atomic_load(&sub_up) ? RECHECK_UP_MS : RECHECK_DOWN_MS, true);
        pthread_mutex_lock(&mu);
        bool full = recheck_full || now_us() >= next_full;
        recheck_now = false;
        recheck_full = false;
        int64_t *users = fresh;
        size_t n = nfresh;
        fresh = NULL;
        nfresh = fresh_cap = 0;
        pthread_mutex_unlock(&mu);
        if (atomic_load(&stop_flag)) {
            free(users);
            break;
        }
        recheck_users(&pc, users, n);
        free(users);
        if (full) {
            users = NULL;
            n = hub_waiting(&users);
            recheck_users(&pc, users, n);
            free(users);
            next_full = now_us() + (uint64_t)(atomic_load(&sub_up) ? RECHECK_UP_MS : RECHECK_DOWN_MS) * 1000u;
        }
    }
    if (pc)
        PQfinish(pc);
    return NULL;
}

/* presence's sweeper (presence.h) runs on this thread, on the bus's clock */
static void *sweep_main(void *arg)
{
    (void)arg;
    PGconn *pc = NULL;
    while (!atomic_load(&stop_flag)) {
        nap(PRESENCE_SWEEP_EVERY_MS, false);
        if (atomic_load(&stop_flag))
            break;
        presence_tick(&pc);
    }
    if (pc)
        PQfinish(pc);
    return NULL;
}

int bus_init(const struct rt_env *e)
{
    env = e;
    presence_init(e);
    evbody_set_max((size_t)e->cfg->wake_event_max);
    wake_kind = tx_on_commit(wake_committed, release_body);
    return wake_kind < 0 ? -1 : 0;
}

int bus_start(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_store(&stop_flag, false);
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0) {
        nlog(LOG_ERROR, "cannot create the bus's eventfd", json_pack("{s:s}", "error", strerror(errno)));
        return -1;
    }
    hub_set_route_notify(routes_changed);
    if (presence_start() < 0 || pthread_create(&sub_thread, NULL, sub_main, NULL) != 0)
        return -1;
    if (pthread_create(&recheck_thread, NULL, recheck_main, NULL) != 0 ||
        pthread_create(&sweep_thread, NULL, sweep_main, NULL) != 0) {
        nlog(LOG_ERROR, "cannot start bus threads", NULL);
        return -1;
    }
    started = true;
    return 0;
}

void bus_stop(void)
{
    if (!started)
        return;
    pthread_mutex_lock(&mu);
    atomic_store(&stop_flag, true);
    if (sub_ctx)
        shutdown(sub_ctx->fd, SHUT_RDWR); /* wakes the subscriber's poll */
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    routes_changed(); /* and this, should it be between two polls */
    pthread_join(sub_thread, NULL);
    pthread_join(recheck_thread, NULL);
    pthread_join(sweep_thread, NULL);
    presence_stop();
    hub_set_route_notify(NULL);
    close(wake_fd);
    wake_fd = -1;
    free(fresh);
    fresh = NULL;
    nfresh = fresh_cap = 0;
    started = false;
}
