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
#include "http.h"
#include "hub.h"
#include "keys.h"
#include "log.h"
#include "presence.h"
#include "realtime.h"
#include "redis.h"
#include "tx.h"
#include "util.h"

#define CHANNEL KEY_BUS
#define RECHECK_DOWN_MS 1000
#define RECHECK_UP_MS 10000

static const struct rt_env *env;
static int wake_kind = -1; /* tx note kind of a wake-up (bus_init) */
static atomic_bool stop_flag, sub_up;
static pthread_t sub_thread, recheck_thread, sweep_thread;
static bool started;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static redisContext *sub_ctx; /* guarded by mu: bus_stop shuts its socket down */
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

void bus_wake_local(const struct tx_note *wakes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        hub_wake(wakes[i].a, wakes[i].b);
}

void bus_publish_wakes(const struct tx_note *wakes, size_t n)
{
    json_t *w = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(w, json_pack("[I,I]", (json_int_t)wakes[i].a, (json_int_t)wakes[i].b));
    publish(json_pack("{s:o}", "w", w));
}

/* The post-commit hook (tx.h): each note is (user, inbox seq). */
void bus_wake_committed(const struct tx_note *wakes, size_t n)
{
    bus_wake_local(wakes, n);
    bus_publish_wakes(wakes, n);
}

void bus_note_wake(struct req *r, int64_t user_id, int64_t seq)
{
    tx_note(r, wake_kind, user_id, seq);
}

void bus_ephemeral(const int64_t *users, size_t n, json_t *ev)
{
    json_t *u = json_array();
    for (size_t i = 0; i < n; i++) {
        hub_ephemeral(users[i], ev);
        json_array_append_new(u, json_integer(users[i]));
    }
    publish(json_pack("{s:{s:o,s:O}}", "e", "u", u, "ev", ev));
}

void bus_revoke(int64_t user, int64_t device)
{
    hub_revoke(user, device);
    publish(json_pack("{s:[I,I]}", "r", (json_int_t)user, (json_int_t)device));
}

void bus_polling(int64_t user, int64_t device)
{
    publish(json_pack("{s:[I,I]}", "p", (json_int_t)user, (json_int_t)device));
}

/* Applies a message another instance published. */
static void apply(const char *text, size_t len)
{
    json_t *m = json_loadb(text, len, 0, NULL);
    if (!m)
        return;
    const char *from = json_string_value(json_object_get(m, "i"));
    if (from && strcmp(from, env->instance_id) == 0)
        goto out; /* our own: local waiters were handled directly */
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(m, "w"), i, it)
        hub_wake(json_integer_value(json_array_get(it, 0)), json_integer_value(json_array_get(it, 1)));
    json_t *e = json_object_get(m, "e");
    if (e) {
        json_t *ev = json_object_get(e, "ev");
        json_array_foreach(json_object_get(e, "u"), i, it)
            hub_ephemeral(json_integer_value(it), ev);
    }
    json_t *r = json_object_get(m, "r");
    if (json_is_array(r))
        hub_revoke(json_integer_value(json_array_get(r, 0)), json_integer_value(json_array_get(r, 1)));
    json_t *pl = json_object_get(m, "p");
    if (json_is_array(pl))
        hub_replace(json_integer_value(json_array_get(pl, 0)), json_integer_value(json_array_get(pl, 1)));
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
    int64_t *users = NULL, *since = NULL;
    size_t n = hub_waiting(&users, &since);
    if (n == 0)
        goto out;
    if (!*pc)
        *pc = db_connect(env->cfg->database_url);
    if (!*pc)
        goto out;
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
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t u = 0, head = 0;
        parse_i64(PQgetvalue(res, i, 0), &u);
        parse_i64(PQgetvalue(res, i, 1), &head);
        for (size_t k = 0; k < n; k++)
            if (users[k] == u && since[k] < head) {
                hub_wake(u, head);
                break;
            }
    }
    PQclear(res);
out:
    free(users);
    free(since);
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
    wake_kind = tx_on_commit(bus_wake_committed);
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
    if (pthread_create(&sub_thread, NULL, sub_main, NULL) != 0)
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
    started = false;
}
