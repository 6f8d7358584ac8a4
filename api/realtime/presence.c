/*
 * presence.c — the online set, its sweeper and the polling marks (see presence.h).
 */
#include "presence.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void presence_touch(PGconn *db, int64_t user)
{
    int64_t now = wall_time_ms();
    redisReply *rep = redis_cmd(env->redis, "ZADD " PRESENCE_KEY " %lld %lld", (long long)now, (long long)user);
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
        if (r)
            freeReplyObject(r);
        free(ids);
        free(argv);
    }
    free(users);
    free(since);
}

void presence_tick(PGconn **pc)
{
    if (now_us() >= next_refresh) {
        refresh_waiting();
        next_refresh = now_us() + (uint64_t)env->cfg->presence_ttl * 1000000u / 3u;
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

/* HSET the device's until-time; the key lives as long as its newest mark */
static const char polling_script[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end "
    "return 1";

void presence_mark_polling(int64_t user, int64_t device, int64_t until_ms)
{
    char key[64], dev[24], until[24], ttl[24];
    snprintf(key, sizeof key, KEY_POLLING_PREFIX "%lld", (long long)user);
    i64s(dev, device);
    i64s(until, until_ms);
    i64s(ttl, until_ms - wall_time_ms() + 1000);
    redisReply *rep = redis_cmd(env->redis, "EVAL %s 1 %s %s %s %s", polling_script, key, dev, until, ttl);
    if (rep)
        freeReplyObject(rep);
}
