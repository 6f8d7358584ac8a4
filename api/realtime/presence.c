/*
 * presence.c — the online set, its sweeper and the polling marks (see presence.h).
 */
#include "presence.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "db.h"
#include "hub.h"
#include "keys.h"
#include "log.h"
#include "realtime.h"
#include "redis.h"
#include "util.h"

#define PRESENCE_KEY KEY_PRESENCE
#define PRESENCE_LOCK KEY_PRESENCE_LOCK
#define ONLINE_SLACK_MS 1000 /* a sweep runs every 2 s: seen within TTL + this is online */

static const struct rt_env *env;
static uint64_t next_refresh;

void presence_init(const struct rt_env *e)
{
    env = e;
}

static const char sql_last_seen[] =
    "UPDATE users u SET last_seen_at = to_timestamp(v.ms / 1000.0)"
    " FROM unnest($1::bigint[], $2::bigint[]) AS v(id, ms) WHERE u.id = v.id";
/* on Citus naming the users so that only their shards are visited */
static const char sql_last_seen_citus[] =
    "UPDATE users u SET last_seen_at = to_timestamp(v.ms / 1000.0)"
    " FROM unnest($1::bigint[], $2::bigint[]) AS v(id, ms) WHERE u.id = v.id AND u.id = ANY ($1::bigint[])";

/* Tells the contacts of user that they came online / went offline. */
static void announce(PGconn *c, int64_t user, bool online, int64_t seen_ms)
{
    char ts[40];
    size_t n = 0;
    int64_t *to = env->contacts(c, user, &n);
    if (!to)
        return;
    rfc3339_ms(seen_ms, ts, sizeof ts);
    json_t *ev = json_pack("{s:n,s:s,s:n,s:s,s:{s:I,s:b,s:s}}", "seq", "type", "presence", "chat_id", "created_at", ts,
                           "data", "user_id", (json_int_t)user, "online", online, "last_seen_at", ts);
    bus_ephemeral(to, n, ev);
    json_decref(ev);
    free(to);
}

/* Users this instance marked seen lately: a poll within a third of the TTL
 * of the last mark skips the ZADD (the sweeper only removes users not seen
 * for the whole TTL; refresh_waiting marks every user with a waiting poll a
 * quarter TTL apart, so a renewing poll never writes). Direct-mapped: a
 * collision only costs a ZADD. */
#define TOUCH_SLOTS 65536
#define TOUCH_STRIPES 64
static struct {
    int64_t user, ms;
} touched[TOUCH_SLOTS];
static pthread_mutex_t touch_mu[TOUCH_STRIPES];
static pthread_once_t touch_once = PTHREAD_ONCE_INIT;

static void touch_init(void)
{
    for (size_t i = 0; i < TOUCH_STRIPES; i++)
        pthread_mutex_init(&touch_mu[i], NULL);
}

static size_t touch_slot(int64_t user)
{
    return (size_t)(((uint64_t)user * 0x9E3779B97F4A7C15ull) >> 48) & (TOUCH_SLOTS - 1);
}

/* Seen recently enough that the presence set needs no write. */
static bool touched_lately(int64_t user, int64_t now)
{
    int64_t every = (int64_t)env->cfg->presence_ttl * 1000 / 3;
    size_t i = touch_slot(user);
    pthread_mutex_lock(&touch_mu[i % TOUCH_STRIPES]);
    bool lately = touched[i].user == user && now - touched[i].ms < every;
    pthread_mutex_unlock(&touch_mu[i % TOUCH_STRIPES]);
    return lately;
}

static void touched_now(int64_t user, int64_t now)
{
    size_t i = touch_slot(user);
    pthread_mutex_lock(&touch_mu[i % TOUCH_STRIPES]);
    touched[i].user = user;
    touched[i].ms = now;
    pthread_mutex_unlock(&touch_mu[i % TOUCH_STRIPES]);
}

void presence_touch(PGconn *db, int64_t user)
{
    int64_t now = wall_time_ms();
    pthread_once(&touch_once, touch_init);
    if (touched_lately(user, now))
        return;
    redisReply *rep = redis_cmd(env->redis, "ZADD " PRESENCE_KEY " %lld %lld", (long long)now, (long long)user);
    bool came_online = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        touched_now(user, now);
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
    PGconn *c = db_acquire(env->db, 1000);
    if (!c)
        return;
    announce(c, user, true, now);
    db_release(env->db, c);
}

static void sweep(PGconn **pc)
{
    int64_t cutoff = wall_time_ms() - (int64_t)env->cfg->presence_ttl * 1000;
    redisReply *lock = redis_cmd(env->redis, "SET " PRESENCE_LOCK " %s NX PX %d", env->instance_id,
                                 PRESENCE_SWEEP_EVERY_MS * 2);
    bool mine = lock && lock->type == REDIS_REPLY_STATUS;
    if (lock)
        freeReplyObject(lock);
    if (!mine)
        return;
    redisReply *due = redis_cmd(env->redis, "ZRANGEBYSCORE " PRESENCE_KEY " -inf %lld WITHSCORES LIMIT 0 1000",
                                (long long)cutoff);
    if (!due || due->type != REDIS_REPLY_ARRAY || due->elements == 0)
        goto out;
    if (!*pc)
        *pc = db_connect(env->cfg->database_url);
    size_t n = due->elements / 2, k = 0;
    int64_t *ids = xmalloc((n ? n : 1) * sizeof *ids), *ms = xmalloc((n ? n : 1) * sizeof *ms);
    for (size_t i = 0; i < n; i++) {
        const char *member = due->element[2 * i]->str;
        /* ZREM decides who reports the transition if two sweepers ever overlap */
        redisReply *rm = redis_cmd(env->redis, "ZREM " PRESENCE_KEY " %s", member);
        bool removed = rm && rm->type == REDIS_REPLY_INTEGER && rm->integer == 1;
        if (rm)
            freeReplyObject(rm);
        if (!removed || !parse_i64(member, &ids[k]))
            continue;
        ms[k++] = (int64_t)strtoll(due->element[2 * i + 1]->str, NULL, 10);
    }
    if (k > 0 && *pc) {
        char *a = db_id_array(ids, k), *b = db_id_array(ms, k);
        const char *vals[2] = {a, b};
        PGresult *res = PQexecParams(*pc, db_citus() ? sql_last_seen_citus : sql_last_seen, 2, NULL, vals, NULL, NULL,
                                     0);
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
    int64_t *users = NULL;
    size_t n = hub_waiting(&users);
    char now[24];
    int64_t stamp = wall_time_ms();
    i64s(now, stamp);
    pthread_once(&touch_once, touch_init);
    for (size_t off = 0; off < n; off += 500) {
        size_t k = n - off < 500 ? n - off : 500;
        const char **argv = xcalloc(2 + 2 * k, sizeof *argv);
        char(*ids)[24] = xcalloc(k, 24);
        argv[0] = "ZADD";
        argv[1] = PRESENCE_KEY;
        for (size_t i = 0; i < k; i++) {
            argv[2 + 2 * i] = now;
            argv[3 + 2 * i] = i64s(ids[i], users[off + i]);
        }
        redisContext *c = redis_acquire(env->redis);
        redisReply *r = c ? redisCommandArgv(c, (int)(2 + 2 * k), argv, NULL) : NULL;
        redis_release(env->redis, c, c && !r);
        if (r && r->type == REDIS_REPLY_INTEGER)
            for (size_t i = 0; i < k; i++)
                touched_now(users[off + i], stamp); /* their polls need not write again */
        if (r)
            freeReplyObject(r);
        free(ids);
        free(argv);
    }
    free(users);
}

void presence_tick(PGconn **pc)
{
    if (now_us() >= next_refresh) {
        refresh_waiting();
        next_refresh = now_us() + (uint64_t)env->cfg->presence_ttl * 1000000u / 4u;
    }
    sweep(pc);
}

void presence_seen(const int64_t *users, size_t n, int64_t *seen_ms)
{
    for (size_t i = 0; i < n; i++)
        seen_ms[i] = -1;
    if (n == 0)
        return;
    redisContext *c = redis_acquire(env->redis);
    if (!c)
        return;
    const char **argv = xcalloc(n + 2, sizeof *argv);
    char(*ids)[24] = xcalloc(n, 24);
    argv[0] = "ZMSCORE";
    argv[1] = PRESENCE_KEY;
    for (size_t i = 0; i < n; i++)
        argv[i + 2] = i64s(ids[i], users[i]);
    redisReply *scores = redisCommandArgv(c, (int)n + 2, argv, NULL);
    redis_release(env->redis, c, !scores);
    free(ids);
    free(argv);
    if (!scores)
        return;
    for (size_t i = 0; scores->type == REDIS_REPLY_ARRAY && i < n && i < scores->elements; i++)
        if (scores->element[i]->type == REDIS_REPLY_STRING)
            seen_ms[i] = (int64_t)strtoll(scores->element[i]->str, NULL, 10);
    freeReplyObject(scores);
}

bool presence_online(int64_t seen_ms)
{
    int64_t ttl_ms = (int64_t)env->cfg->presence_ttl * 1000;
    return seen_ms >= 0 && seen_ms >= wall_time_ms() - ttl_ms - ONLINE_SLACK_MS;
}

/* ======================================================================
 * Poll marks: what every poll tells Redis, batched
 *
 * Each poll that waits (and each answer) moves its device's mark in
 * natter:polling:<user>, and each poll that waits asks the other instances
 * to end the device's older poll there. Neither needs to happen before the
 * poll is answered, so they are queued and written every POLL_NOTES_MS by
 * one thread: pipelined HSET + PEXPIRE NX + PEXPIRE GT per mark (the key
 * lives as long as its newest mark) and ONE publish for all the "end your
 * older poll" notes, instead of two round trips per poll on the HTTP thread.
 * Bounded: past POLL_NOTES_MAX queued notes new ones are dropped and counted
 * (a dropped mark can only cause a push to a device that is polling; a
 * dropped "end" leaves an older poll to its timeout).
 * ====================================================================== */

struct note {
    int64_t user, device, until_ms; /* until_ms 0: "end older polls" only */
};

static pthread_mutex_t nmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ncv = PTHREAD_COND_INITIALIZER;
static struct note *notes; /* [POLL_NOTES_MAX], guarded by nmu */
static size_t nnotes;
static bool notes_stop;
static atomic_ullong notes_dropped;

static void note_add(int64_t user, int64_t device, int64_t until_ms)
{
    bool dropped = false;
    pthread_mutex_lock(&nmu);
    if (!notes) {
        dropped = true;
    } else if (nnotes == POLL_NOTES_MAX) {
        dropped = true;
    } else {
        notes[nnotes++] = (struct note){user, device, until_ms};
        if (nnotes == 1)
            pthread_cond_signal(&ncv);
    }
    pthread_mutex_unlock(&nmu);
    if (dropped)
        atomic_fetch_add(&notes_dropped, 1);
}

void presence_mark_polling(int64_t user, int64_t device, int64_t until_ms)
{
    note_add(user, device, until_ms);
}

void presence_polling(int64_t user, int64_t device)
{
    note_add(user, device, 0);
}

unsigned long long presence_notes_dropped(void)
{
    return atomic_load(&notes_dropped);
}

/* Writes one batch: the marks pipelined on one context, then one publish. */
static void notes_write(const struct note *v, size_t n)
{
    redisContext *c = redis_acquire(env->redis);
    if (!c) {
        atomic_fetch_add(&notes_dropped, n);
        return;
    }
    size_t sent = 0;
    int64_t now = wall_time_ms();
    json_t *ends = json_array();
    for (size_t i = 0; i < n; i++) {
        if (v[i].until_ms == 0) {
            json_array_append_new(ends, json_pack("[I,I]", (json_int_t)v[i].user, (json_int_t)v[i].device));
            continue;
        }
        char key[64];
        long long ttl = (long long)(v[i].until_ms - now + 1000);
        snprintf(key, sizeof key, KEY_POLLING_PREFIX "%lld", (long long)v[i].user);
        redisAppendCommand(c, "HSET %s %lld %lld", key, (long long)v[i].device, (long long)v[i].until_ms);
        redisAppendCommand(c, "PEXPIRE %s %lld NX", key, ttl);
        redisAppendCommand(c, "PEXPIRE %s %lld GT", key, ttl);
        sent += 3;
    }
    bool broken = false;
    for (size_t i = 0; i < sent && !broken; i++) {
        void *rep = NULL;
        broken = redisGetReply(c, &rep) != REDIS_OK;
        if (rep)
            freeReplyObject(rep);
    }
    redis_release(env->redis, c, broken);
    if (json_array_size(ends) > 0)
        bus_publish_polling(ends);
    json_decref(ends);
}

static pthread_t notes_thread;
static bool notes_started;

static void *notes_main(void *arg)
{
    (void)arg;
    struct note *v = xmalloc(POLL_NOTES_MAX * sizeof *v);
    for (;;) {
        pthread_mutex_lock(&nmu);
        while (nnotes == 0 && !notes_stop)
            pthread_cond_wait(&ncv, &nmu);
        bool last = notes_stop;
        pthread_mutex_unlock(&nmu);
        if (!last) /* gather what comes in meanwhile */
            usleep(POLL_NOTES_MS * 1000);
        pthread_mutex_lock(&nmu);
        size_t n = nnotes;
        memcpy(v, notes, n * sizeof *v);
        nnotes = 0;
        last = notes_stop;
        pthread_mutex_unlock(&nmu);
        if (n)
            notes_write(v, n);
        if (last)
            break;
    }
    free(v);
    return NULL;
}

int presence_start(void)
{
    pthread_mutex_lock(&nmu);
    notes = xmalloc(POLL_NOTES_MAX * sizeof *notes);
    nnotes = 0;
    notes_stop = false;
    pthread_mutex_unlock(&nmu);
    if (pthread_create(&notes_thread, NULL, notes_main, NULL) != 0)
        return -1;
    notes_started = true;
    return 0;
}

void presence_stop(void)
{
    if (!notes_started)
        return;
    pthread_mutex_lock(&nmu);
    notes_stop = true;
    pthread_cond_signal(&ncv);
    pthread_mutex_unlock(&nmu);
    pthread_join(notes_thread, NULL); /* it writes what is queued first */
    notes_started = false;
    pthread_mutex_lock(&nmu);
    free(notes);
    notes = NULL;
    nnotes = 0;
    pthread_mutex_unlock(&nmu);
}
