/*
 * bus.c — wake-ups across instances and the Redis-down fallback (see bus.h
 * for the design). Its sweep thread runs presence.c's sweeper.
 */
#include "bus.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

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
#define EPH_SEEN_MS 30000 /* a claim outlives every instance's ~3 s memory of the event */

static const struct rt_env *env;
static int wake_kind = -1; /* tx note kind of a wake-up (bus_init) */
static atomic_bool stop_flag, sub_up;
static pthread_t sub_thread, recheck_thread, sweep_thread;
static bool started;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static redisContext *sub_ctx;     /* guarded by mu: bus_stop shuts its socket down */
static atomic_ullong eph_counter; /* this instance's ephemeral events (their ids) */
static bool recheck_now;

bool bus_connected(void)
{
    return atomic_load(&sub_up);
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

static void publish(json_t *msg_new)
{
    json_object_set_new(msg_new, "i", json_string(env->instance_id));
    char *text = json_dumps(msg_new, JSON_COMPACT);
    json_decref(msg_new);
    if (!text)
        return;
    redisReply *rep = redis_cmd(env->redis, "PUBLISH " CHANNEL " %b", text, strlen(text));
    if (rep)
        freeReplyObject(rep);
    free(text);
}

void bus_wake_local(const struct wake *wakes, size_t n)
{
    hub_wake(wakes, n);
}

void bus_publish_wakes(const struct wake *wakes, size_t n)
{
    if (n == 0)
        return;
    size_t len;
    char *text = wakes_encode(env->instance_id, wakes, n, PUBLISH_MAX_BODIES, &len);
    redisReply *rep = redis_cmd(env->redis, "PUBLISH " CHANNEL " %b", text, len);
    if (rep)
        freeReplyObject(rep);
    free(text);
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
    json_t *u = json_array();
    for (size_t i = 0; i < n; i++) {
        hub_ephemeral(users[i], ev, id);
        json_array_append_new(u, json_integer(users[i]));
    }
    publish(json_pack("{s:{s:o,s:O,s:s}}", "e", "u", u, "ev", ev, "id", id));
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

void bus_publish_polling(json_t *ends)
{
    publish(json_pack("{s:O}", "p", ends));
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
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
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
        hub_trust(true);  /* every commit's wake-up reaches us from here on */
        devcache_clear(); /* revocations published while we were away */
        nlog(LOG_INFO, "bus subscribed", json_pack("{s:s}", "channel", CHANNEL));
        request_recheck(); /* anything published while we were away */
        backoff = 100;
        void *r = NULL;
        while (!atomic_load(&stop_flag) && redisGetReply(c, &r) == REDIS_OK && r) {
            redisReply *msg = r;
            if (msg->type == REDIS_REPLY_ARRAY && msg->elements == 3 && msg->element[2]->type == REDIS_REPLY_STRING)
                apply(msg->element[2]->str, msg->element[2]->len);
            freeReplyObject(msg);
            r = NULL;
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

static void recheck(PGconn **pc)
{
    int64_t *users = NULL;
    size_t n = hub_waiting(&users);
    if (n == 0)
        goto out;
    if (!*pc)
        *pc = db_connect(env->cfg->database_url);
    if (!*pc)
        goto out;
    struct hub_ticket t = hub_ticket(0); /* the epoch in which the heads are read */
    char *lit = db_id_array(users, n);
    const char *vals[1] = {lit};
    PGresult *res = PQexecParams(*pc, sql_heads, 1, NULL, vals, NULL, NULL, 0);
    free(lit);
    if (!db_res_ok(res)) {
        PQclear(res);
        PQfinish(*pc);
        *pc = NULL;
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++)
        hub_recheck(db_i64(res, i, 0), db_i64(res, i, 1), t);
    PQclear(res);
out:
    free(users);
}

static void *recheck_main(void *arg)
{
    (void)arg;
    PGconn *pc = NULL;
    while (!atomic_load(&stop_flag)) {
        nap(atomic_load(&sub_up) ? RECHECK_UP_MS : RECHECK_DOWN_MS, true);
        pthread_mutex_lock(&mu);
        recheck_now = false;
        pthread_mutex_unlock(&mu);
        if (!atomic_load(&stop_flag))
            recheck(&pc);
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
        shutdown(sub_ctx->fd, SHUT_RDWR); /* wakes the blocked subscriber read */
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(sub_thread, NULL);
    pthread_join(recheck_thread, NULL);
    pthread_join(sweep_thread, NULL);
    presence_stop();
    started = false;
}
