/*
 * bus.c — wake-ups across instances, the Redis-down fallback, and presence
 * (see bus.h for the design).
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
#include "log.h"
#include "redis.h"
#include "util.h"

#define CHANNEL "natter:bus"
#define PRESENCE_KEY "natter:presence"
#define PRESENCE_LOCK "natter:lock:presence"
#define RECHECK_DOWN_MS 1000
#define RECHECK_UP_MS 10000
#define SWEEP_EVERY_MS 2000

static struct app *app;
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
    json_object_set_new(msg_new, "i", json_string(app->instance_id));
    char *text = json_dumps(msg_new, JSON_COMPACT);
    json_decref(msg_new);
    if (!text)
        return;
    redisReply *rep = redis_cmd(app->redis, "PUBLISH " CHANNEL " %b", text, strlen(text));
    if (rep)
        freeReplyObject(rep);
    free(text);
}

void bus_after_commit(struct app *a, const int64_t *wakes, size_t n)
{
    (void)a;
    json_t *w = json_array();
    for (size_t i = 0; i < n; i++) {
        hub_wake(wakes[2 * i], wakes[2 * i + 1]);
        json_array_append_new(w, json_pack("[I,I]", (json_int_t)wakes[2 * i], (json_int_t)wakes[2 * i + 1]));
    }
    publish(json_pack("{s:o}", "w", w));
}

void bus_ephemeral(struct app *a, const int64_t *users, size_t n, json_t *ev)
{
    (void)a;
    json_t *u = json_array();
    for (size_t i = 0; i < n; i++) {
        hub_ephemeral(users[i], ev);
        json_array_append_new(u, json_integer(users[i]));
    }
    publish(json_pack("{s:{s:o,s:O}}", "e", "u", u, "ev", ev));
}

void bus_revoke(struct app *a, int64_t user, int64_t device)
{
    (void)a;
    hub_revoke(user, device);
    publish(json_pack("{s:[I,I]}", "r", (json_int_t)user, (json_int_t)device));
}

void bus_polling(struct app *a, int64_t user, int64_t device)
{
    (void)a;
    publish(json_pack("{s:[I,I]}", "p", (json_int_t)user, (json_int_t)device));
}

/* Applies a message another instance published. */
static void apply(const char *text, size_t len)
{
    json_t *m = json_loadb(text, len, 0, NULL);
    if (!m)
        return;
    const char *from = json_string_value(json_object_get(m, "i"));
    if (from && strcmp(from, app->instance_id) == 0)
        goto out; /* our own: local waiters were handled directly */
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(m, "w"), i, it)
        hub_wake(json_integer_value(json_array_get(it, 0)), json_integer_value(json_array_get(it, 1)));
    json_t *e = json_object_get(m, "e");
    if (e) {
        json_t *ev = json_object_get(e, "ev");
        json_array_foreach(json_object_get(e, "u"), i, it) hub_ephemeral(json_integer_value(it), ev);
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
        redisContext *c = redis_connect_new(app->redis, true);
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
        *pc = db_connect(app->cfg->database_url);
    if (!*pc)
        goto out;
    char *lit = xmalloc(n * 21 + 3), *p = lit;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s%lld", i ? "," : "", (long long)users[i]);
    *p++ = '}';
    *p = '\0';
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

/* ---- presence ---- */

static const char sql_contacts[] =
    "SELECT DISTINCT o.user_id FROM chat_members mine JOIN chat_members o ON o.chat_id = mine.chat_id"
    " WHERE mine.user_id = $1 AND o.user_id <> $1 LIMIT 10000";
static const char sql_last_seen[] =
    "UPDATE users u SET last_seen_at = to_timestamp(v.ms / 1000.0)"
    " FROM unnest($1::bigint[], $2::bigint[]) AS v(id, ms) WHERE u.id = v.id";

/* Tells everyone who shares a chat with user that they came online / went offline. */
static void announce(PGconn *c, int64_t user, bool online, int64_t seen_ms)
{
    char u[24], ts[40];
    snprintf(u, sizeof u, "%lld", (long long)user);
    const char *vals[1] = {u};
    PGresult *res = PQexecParams(c, sql_contacts, 1, NULL, vals, NULL, NULL, 0);
    if (!db_res_ok(res) || PQntuples(res) == 0) {
        PQclear(res);
        return;
    }
    size_t n = (size_t)PQntuples(res);
    int64_t *to = xmalloc(n * sizeof *to);
    for (size_t i = 0; i < n; i++)
        parse_i64(PQgetvalue(res, (int)i, 0), &to[i]);
    PQclear(res);
    rfc3339_ms(seen_ms, ts, sizeof ts);
    json_t *ev = json_pack("{s:n,s:s,s:n,s:s,s:{s:I,s:b,s:s}}", "seq", "type", "presence", "chat_id", "created_at",
                           ts, "data", "user_id", (json_int_t)user, "online", online, "last_seen_at", ts);
    bus_ephemeral(app, to, n, ev);
    json_decref(ev);
    free(to);
}

void presence_touch(struct app *a, PGconn *db, int64_t user)
{
    int64_t now = wall_time_ms();
    redisReply *rep = redis_cmd(a->redis, "ZADD " PRESENCE_KEY " %lld %lld", (long long)now, (long long)user);
    bool came_online = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    if (rep)
        freeReplyObject(rep);
    if (!came_online)
        return;
    /* never a second pooled connection while the caller holds one: with every
     * HTTP thread doing that at once the pool deadlocks */
    if (db) {
        announce(db, user, true, now);
        return;
    }
    PGconn *c = db_acquire(a->db, 1000);
    if (!c)
        return;
    announce(c, user, true, now);
    db_release(a->db, c);
}

static void sweep(PGconn **pc)
{
    int64_t cutoff = wall_time_ms() - (int64_t)app->cfg->presence_ttl * 1000;
    redisReply *lock = redis_cmd(app->redis, "SET " PRESENCE_LOCK " %s NX PX %d", app->instance_id,
                                 SWEEP_EVERY_MS * 2);
    bool mine = lock && lock->type == REDIS_REPLY_STATUS;
    if (lock)
        freeReplyObject(lock);
    if (!mine)
        return;
    redisReply *due = redis_cmd(app->redis, "ZRANGEBYSCORE " PRESENCE_KEY " -inf %lld WITHSCORES LIMIT 0 1000",
                                (long long)cutoff);
    if (!due || due->type != REDIS_REPLY_ARRAY || due->elements == 0)
        goto out;
    if (!*pc)
        *pc = db_connect(app->cfg->database_url);
    size_t n = due->elements / 2, k = 0;
    int64_t *ids = xmalloc((n ? n : 1) * sizeof *ids), *ms = xmalloc((n ? n : 1) * sizeof *ms);
    for (size_t i = 0; i < n; i++) {
        const char *member = due->element[2 * i]->str;
        /* ZREM decides who reports the transition if two sweepers ever overlap */
        redisReply *rm = redis_cmd(app->redis, "ZREM " PRESENCE_KEY " %s", member);
        bool removed = rm && rm->type == REDIS_REPLY_INTEGER && rm->integer == 1;
        if (rm)
            freeReplyObject(rm);
        if (!removed || !parse_i64(member, &ids[k]))
            continue;
        ms[k++] = (int64_t)strtoll(due->element[2 * i + 1]->str, NULL, 10);
    }
    if (k > 0 && *pc) {
        size_t cap = k * 21 + 3;
        char *a = xmalloc(cap), *b = xmalloc(cap), *pa = a, *pb = b;
        *pa++ = '{';
        *pb++ = '{';
        for (size_t i = 0; i < k; i++) {
            pa += sprintf(pa, "%s%lld", i ? "," : "", (long long)ids[i]);
            pb += sprintf(pb, "%s%lld", i ? "," : "", (long long)ms[i]);
        }
        strcpy(pa, "}");
        strcpy(pb, "}");
        const char *vals[2] = {a, b};
        PGresult *res = PQexecParams(*pc, sql_last_seen, 2, NULL, vals, NULL, NULL, 0);
        if (!db_res_ok(res)) {
            nlog(LOG_WARN, "presence: last_seen_at update failed", json_pack("{s:s}", "error", PQerrorMessage(*pc)));
            PQfinish(*pc);
            *pc = NULL;
        }
        PQclear(res);
        free(a);
        free(b);
        for (size_t i = 0; i < k && *pc; i++)
            announce(*pc, ids[i], false, ms[i]);
    }
    free(ids);
    free(ms);
out:
    if (due)
        freeReplyObject(due);
}

/* A poll may wait longer than the presence TTL: keep everyone with a poll
 * waiting here marked as seen, so the sweeper never takes them for gone. */
static void refresh_waiting(void)
{
    int64_t *users = NULL, *since = NULL;
    size_t n = hub_waiting(&users, &since);
    char now[24];
    i64s(now, wall_time_ms());
    for (size_t off = 0; off < n; off += 500) {
        size_t k = n - off < 500 ? n - off : 500;
        const char **argv = xcalloc(2 + 2 * k, sizeof *argv);
        char (*ids)[24] = xcalloc(k, 24);
        argv[0] = "ZADD";
        argv[1] = PRESENCE_KEY;
        for (size_t i = 0; i < k; i++) {
            argv[2 + 2 * i] = now;
            argv[3 + 2 * i] = i64s(ids[i], users[off + i]);
        }
        redisContext *c = redis_acquire(app->redis);
        redisReply *r = c ? redisCommandArgv(c, (int)(2 + 2 * k), argv, NULL) : NULL;
        redis_release(app->redis, c, c && !r);
        if (r)
            freeReplyObject(r);
        free(ids);
        free(argv);
    }
    free(users);
    free(since);
}

static void *sweep_main(void *arg)
{
    (void)arg;
    PGconn *pc = NULL;
    uint64_t next_refresh = 0;
    while (!atomic_load(&stop_flag)) {
        nap(SWEEP_EVERY_MS, false);
        if (atomic_load(&stop_flag))
            break;
        if (now_us() >= next_refresh) {
            refresh_waiting();
            next_refresh = now_us() + (uint64_t)app->cfg->presence_ttl * 1000000u / 3u;
        }
        sweep(&pc);
    }
    if (pc)
        PQfinish(pc);
    return NULL;
}

int bus_start(struct app *a)
{
    app = a;
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
