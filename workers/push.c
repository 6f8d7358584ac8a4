/*
 * push.c — the push jobs.
 *
 *   push_message {chat_id, seq}          count the message into each offline
 *                                        recipient's pending push; first one
 *                                        of a window schedules a flush
 *   push_flush {user_id, flush_id}       take the pending counts, send one
 *                                        push per device (push_send inline)
 *   push_send {user_id, device_id, …}    one device's push; its own retries
 *   push_badge {user_id, device_id}      the user read on device: the first
 *                                        of a window schedules a badge flush
 *   push_flush {…, kind: "badge"}        a silent push with the new total
 *                                        unread count to the user's other
 *                                        devices that are not polling and
 *                                        whose last push carried another one
 *
 * What a push covered (per chat the newest seq it counted) is written to
 * push_covers before its first provider call, so that the phone's
 * POST /v1/devices/{id}/push-ack can move the delivered markers.
 *
 * Per-provider isolation: each provider has a budget of calls in flight in
 * this process (NATTER_PUSH_PROVIDER_CONCURRENCY); a push whose provider has
 * none left is deferred (JOB_DEFER) instead of waiting, so a provider that
 * hangs holds at most its budget of threads. Every outcome is counted per
 * provider twice: in natter:metrics:pushes (natter-api's natter_pushes_total,
 * the whole pool) and in this process's counters (push_count: the worker's
 * own /metrics, ops.c). push_run counts every job it runs by type and outcome.
 *
 * Idempotency (a job may run twice: redelivery after a crash, a second
 * enqueue by the reconciler): a message is counted once per recipient
 * (natter:push:seen:*), a flush takes its pending hash atomically by renaming
 * it to natter:push:flushing:<flush id> (a rerun finds it there), and a push
 * is sent once per (device, flush) (natter:push:sent:*, set after the provider
 * said yes). The one remaining window — provider accepted, worker died before
 * the marker — resends with the same X-Natter-Push-Id, which receivers use to
 * de-duplicate.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chat_sql.h"
#include "db.h"
#include "jobs.h"
#include "keys.h"
#include "log.h"
#include "push.h"
#include "util.h"
#include "worker.h"

#define MARKER_TTL_S 86400
#define COVERS_MAX 256 /* chats one push's ack can deliver (push_covers' bound) */
#define DEFER_MS 250   /* a push whose provider's budget is taken waits about this long */

static const struct push_provider *const providers[] = {&push_webhook, &push_log, &push_fcm, &push_apns};
#define NPROVIDERS (sizeof providers / sizeof providers[0])
static atomic_int inflight[NPROVIDERS]; /* provider calls in flight in this process */

int push_providers_init(const struct config *cfg, char **err)
{
    for (size_t i = 0; i < NPROVIDERS; i++)
        if (providers[i]->init && providers[i]->init(cfg, err) < 0)
            return -1;
    return 0;
}

static int budget(const struct config *cfg)
{
    if (cfg->push_provider_concurrency > 0)
        return cfg->push_provider_concurrency;
    return cfg->worker_threads / 2 > 1 ? cfg->worker_threads / 2 : 1;
}

/* Takes one of provider i's slots; false when they are all in use. */
static bool slot_take(const struct config *cfg, size_t i)
{
    int n = atomic_fetch_add(&inflight[i], 1);
    if (n < budget(cfg))
        return true;
    atomic_fetch_sub(&inflight[i], 1);
    return false;
}

static atomic_ullong pushes[NPROVIDERS][PUSH_OUT_N]; /* this process's counts (push_count) */

static const char *const outcome_names[PUSH_OUT_N] = {
    [PUSH_OUT_SENT] = "sent",     [PUSH_OUT_RETRIED] = "retried",   [PUSH_OUT_TOKEN_REMOVED] = "token_removed",
    [PUSH_OUT_FAILED] = "failed", [PUSH_OUT_DEFERRED] = "deferred", [PUSH_OUT_EXPIRED] = "expired",
};

const char *push_outcome_name(enum push_outcome o)
{
    return o < PUSH_OUT_N ? outcome_names[o] : "unknown";
}

size_t push_providers_n(void)
{
    return NPROVIDERS;
}

const char *push_provider_name(size_t i)
{
    return i < NPROVIDERS ? providers[i]->name : "unknown";
}

unsigned long long push_count(size_t i, enum push_outcome o)
{
    return i < NPROVIDERS && o < PUSH_OUT_N ? atomic_load(&pushes[i][o]) : 0;
}

int push_inflight(size_t i)
{
    return i < NPROVIDERS ? atomic_load(&inflight[i]) : 0;
}

/* Counts a push of provider pi: in this process, and in the pool's hash. */
static void count_push(struct wctx *w, size_t pi, enum push_outcome o)
{
    atomic_fetch_add(&pushes[pi][o], 1);
    redisReply *r = wcmd(w, "HINCRBY " KEY_METRIC_PUSHES " %s:%s 1", providers[pi]->name, outcome_names[o]);
    if (r)
        freeReplyObject(r);
}

const char *push_kind_name(enum push_kind k)
{
    return k == PUSH_BADGE ? JOB_KIND_BADGE : JOB_KIND_MESSAGES;
}

const char *push_alert_text(const struct push_msg *m, char *buf, size_t len)
{
    if (m->count == 1)
        snprintf(buf, len, "1 new message");
    else
        snprintf(buf, len, "%lld new messages", (long long)m->count);
    return buf;
}

static void drop(redisReply *r)
{
    if (r)
        freeReplyObject(r);
}

/* PQexecParams that returns NULL (and logs) on failure. Owned result. */
static PGresult *q(struct wctx *w, const char *sql, int n, const char *const *vals)
{
    PGconn *c = wctx_db(w);
    if (!c)
        return NULL;
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    if (!db_res_ok(r)) {
        nlog(LOG_WARN, "worker query failed",
             json_pack("{s:i,s:s}", "thread", w->index, "error", PQresultErrorMessage(r)));
        PQclear(r);
        return NULL;
    }
    return r;
}

char *push_body(const struct push_msg *m)
{
    char ts[40];
    rfc3339_now(ts, sizeof ts);
    json_t *j = json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:s}", "id", m->id, "kind", push_kind_name(m->kind),
                          "user_id", (json_int_t)m->user_id, "device_id", (json_int_t)m->device_id, "token", m->token,
                          "platform", m->platform, "count", (json_int_t)m->count, "chat_id", (json_int_t)m->chat_id,
                          "seq", (json_int_t)m->seq, "badge", (json_int_t)m->badge, "sent_at", ts);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* ======================================================================
 * push_message
 * ====================================================================== */

static const char sql_message[] =
    "SELECT sender_id, kind = 'text' AND deleted_at IS NULL, (extract(epoch FROM created_at) * 1000)::bigint"
    "  FROM messages WHERE chat_id = $1 AND seq = $2";
/* members who could get a push: not the sender, chat not muted, a live device with a
 * token. The members (one shard with Citus) become an array first: devices is
 * distributed by user, and Citus joins it with chat_members only through such an
 * intermediate result (then the devices part visits every shard of devices). */
static const char sql_recipients[] =
    "SELECT DISTINCT d.user_id FROM devices d"
    " WHERE d.user_id = ANY (ARRAY (SELECT cm.user_id FROM chat_members cm"
    "   WHERE cm.chat_id = $1 AND cm.user_id <> $2 AND NOT cm.muted AND cm.joined_seq < $3))"
    "   AND d.revoked_at IS NULL AND d.push_token IS NOT NULL";
static const char sql_outbox_done[] = "DELETE FROM push_outbox WHERE chat_id = $1 AND seq = $2";

static const char coalesce_script[] =
    "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then return 0 end "
    "local n = redis.call('HINCRBY', KEYS[2], 'count', 1) "
    "local cf = 'c:' .. ARGV[1] "
    "if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[2], cf) or '0') then "
    "  redis.call('HSET', KEYS[2], cf, ARGV[2]) end "
    "local cur = tonumber(redis.call('HGET', KEYS[2], 'created_ms') or '0') "
    "if tonumber(ARGV[3]) >= cur then "
    "  redis.call('HSET', KEYS[2], 'chat_id', ARGV[1], 'seq', ARGV[2], 'created_ms', ARGV[3]) end "
    "if n == 1 then "
    "  redis.call('HSET', KEYS[2], 'first_ms', ARGV[3], 'flush_id', ARGV[6]) "
    "  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4]) end "
    "redis.call('EXPIRE', KEYS[2], 86400) "
    "return n";

/* A device of user has a poll waiting (or just answered): no push needed. */
static int user_online(struct wctx *w, int64_t user, bool *online)
{
    redisReply *r = wcmd(w, "HVALS " KEY_POLLING_PREFIX "%lld", (long long)user);
    if (!r)
        return -1;
    int64_t now = wall_time_ms();
    *online = false;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (strtoll(r->element[i]->str, NULL, 10) > now)
            *online = true;
    drop(r);
    return 0;
}

static enum job_rc push_message(struct wctx *w, int64_t chat, int64_t seq, char *err, size_t errlen)
{
    char c[24], s[24];
    const char *v2[2] = {i64s(c, chat), i64s(s, seq)};
    enum job_rc rc = JOB_ABANDON;
    PGresult *rcpt = NULL, *m = q(w, sql_message, 2, v2);
    if (!m) {
        snprintf(err, errlen, "database unavailable");
        goto out;
    }
    bool pushable = PQntuples(m) == 1 && PQgetvalue(m, 0, 1)[0] == 't' && !PQgetisnull(m, 0, 0);
    if (pushable) {
        char sender[24], created[24];
        snprintf(sender, sizeof sender, "%s", PQgetvalue(m, 0, 0));
        snprintf(created, sizeof created, "%s", PQgetvalue(m, 0, 2));
        const char *v3[3] = {c, sender, s};
        rcpt = q(w, sql_recipients, 3, v3);
        if (!rcpt) {
            snprintf(err, errlen, "database unavailable");
            goto out;
        }
        for (int i = 0; i < PQntuples(rcpt); i++) {
            int64_t user = db_i64(rcpt, i, 0);
            bool online;
            if (user_online(w, user, &online) < 0) {
                snprintf(err, errlen, "redis unavailable");
                goto out;
            }
            if (online)
                continue;
            char seen[128], pending[64], flush_id[33], due[24];
            snprintf(seen, sizeof seen, KEY_PUSH_SEEN_PREFIX "%lld:%s:%s", (long long)user, c, s);
            snprintf(pending, sizeof pending, KEY_PUSH_PENDING_PREFIX "%lld", (long long)user);
            random_hex(flush_id, 16);
            i64s(due, wall_time_ms() + w->cfg->push_coalesce_ms);
            json_t *fj = job_push_flush_new(user, flush_id, JOB_KIND_MESSAGES);
            char *flush = json_dumps(fj, JSON_COMPACT);
            json_decref(fj);
            redisReply *r = wcmd(w, "EVAL %s 3 %s %s " JOBS_DELAYED " %s %s %s %s %s %s", coalesce_script, seen,
                                 pending, c, s, created, flush, due, flush_id);
            free(flush);
            bool ok = r && r->type == REDIS_REPLY_INTEGER;
            drop(r);
            if (!ok) {
                snprintf(err, errlen, "redis unavailable");
                goto out;
            }
        }
    }
    PGresult *d = q(w, sql_outbox_done, 2, v2);
    if (!d) {
        snprintf(err, errlen, "database unavailable");
        goto out; /* counted already; a rerun finds the seen markers */
    }
    PQclear(d);
    rc = JOB_DONE;
out:
    PQclear(rcpt);
    PQclear(m);
    return rc;
}

/* ======================================================================
 * push_send: one device
 * ====================================================================== */

static const char sql_device[] =
    "SELECT platform, push_provider, push_token FROM devices"
    " WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL AND push_token IS NOT NULL";
static const char sql_drop_token[] =
    "UPDATE devices SET push_provider = NULL, push_token = NULL, push_updated_at = now()"
    " WHERE user_id = $1 AND id = $2 AND push_token = $3";

static enum push_kind kind_of(json_t *job)
{
    const char *k = json_string_value(json_object_get(job, "kind"));
    return k && strcmp(k, JOB_KIND_BADGE) == 0 ? PUSH_BADGE : PUSH_MESSAGES;
}

/* Sends the push described by job (a push_send job object). */
static enum job_rc push_send(struct wctx *w, json_t *job, char *err, size_t errlen)
{
    int64_t user = json_integer_value(json_object_get(job, "user_id"));
    int64_t device = json_integer_value(json_object_get(job, "device_id"));
    const char *flush_id = json_string_value(json_object_get(job, "flush_id"));
    int64_t first_ms = json_integer_value(json_object_get(job, "first_ms"));
    enum push_kind kind = kind_of(job);
    if (user <= 0 || device <= 0 || !flush_id || strlen(flush_id) > 64) {
        snprintf(err, errlen, "invalid push_send job: user_id, device_id and flush_id are required");
        return JOB_DEAD;
    }
    char marker[160];
    snprintf(marker, sizeof marker, KEY_PUSH_SENT_PREFIX "%lld:%s", (long long)device, flush_id);
    redisReply *ex = wcmd(w, "EXISTS %s", marker);
    if (!ex) {
        snprintf(err, errlen, "redis unavailable");
        return JOB_ABANDON;
    }
    bool sent = ex->type == REDIS_REPLY_INTEGER && ex->integer == 1;
    drop(ex);
    if (sent)
        return JOB_DONE;
    char u[24], d[24];
    const char *v2[2] = {i64s(u, user), i64s(d, device)};
    PGresult *dev = q(w, sql_device, 2, v2);
    if (!dev) {
        snprintf(err, errlen, "database unavailable");
        return JOB_ABANDON;
    }
    if (PQntuples(dev) != 1) { /* revoked, or the token was removed meanwhile */
        PQclear(dev);
        return JOB_DONE;
    }
    enum job_rc rc = JOB_DONE;
    size_t pi = NPROVIDERS;
    for (size_t i = 0; i < NPROVIDERS; i++)
        if (strcmp(providers[i]->name, PQgetvalue(dev, 0, 1)) == 0)
            pi = i;
    if (pi == NPROVIDERS) {
        snprintf(err, errlen, "unknown push provider '%s'", PQgetvalue(dev, 0, 1));
        rc = JOB_DEAD;
        goto out;
    }
    const struct push_provider *prov = providers[pi];
    if (first_ms > 0 && wall_time_ms() - first_ms > (int64_t)w->cfg->push_ttl * 1000) {
        nlog(LOG_INFO, "push dropped: older than NATTER_PUSH_TTL",
             json_pack("{s:I,s:I,s:s}", "user_id", (json_int_t)user, "device_id", (json_int_t)device, "flush_id",
                       flush_id));
        count_push(w, pi, PUSH_OUT_EXPIRED);
        goto out;
    }
    int64_t badge = json_integer_value(json_object_get(job, "badge"));
    char lastkey[64];
    snprintf(lastkey, sizeof lastkey, KEY_PUSH_LASTBADGE_PREFIX "%lld", (long long)device);
    if (kind == PUSH_BADGE) { /* the device shows this badge already: nothing to update */
        redisReply *lb = wcmd(w, "GET %s", lastkey);
        bool same = lb && lb->type == REDIS_REPLY_STRING && strtoll(lb->str, NULL, 10) == badge;
        drop(lb);
        if (same)
            goto out;
    }
    if (!slot_take(w->cfg, pi)) {
        w->retry_after_ms = DEFER_MS + (int64_t)randombytes_uniform(DEFER_MS);
        count_push(w, pi, PUSH_OUT_DEFERRED);
        rc = JOB_DEFER;
        goto out;
    }
    char pid[128];
    snprintf(pid, sizeof pid, "%s-%lld", flush_id, (long long)device);
    int64_t born = first_ms > 0 ? first_ms : wall_time_ms();
    struct push_msg msg = {
        .id = pid,
        .kind = kind,
        .user_id = user,
        .device_id = device,
        .token = PQgetvalue(dev, 0, 2),
        .platform = PQgetvalue(dev, 0, 0),
        .count = json_integer_value(json_object_get(job, "count")),
        .chat_id = json_integer_value(json_object_get(job, "chat_id")),
        .seq = json_integer_value(json_object_get(job, "seq")),
        .badge = badge,
        .expires_at = born / 1000 + w->cfg->push_ttl,
    };
    struct push_out po = {err, errlen, 0};
    enum push_result pr = prov->send(w, &msg, &po);
    atomic_fetch_sub(&inflight[pi], 1);
    switch (pr) {
    case PUSH_OK:
        drop(wcmd(w, "SET %s 1 EX %d", marker, MARKER_TTL_S));
        drop(wcmd(w, "SET %s %lld EX %d", lastkey, (long long)badge, MARKER_TTL_S * 30));
        jobs_count(w, "pushes_sent_total", 1);
        count_push(w, pi, PUSH_OUT_SENT);
        nlog(LOG_INFO, "push sent",
             json_pack("{s:i,s:s,s:s,s:s,s:I}", "thread", w->index, "push_id", pid, "provider", prov->name, "kind",
                       push_kind_name(kind), "count", (json_int_t)msg.count));
        break;
    case PUSH_INVALID_TOKEN: {
        const char *v3[3] = {u, d, msg.token};
        PGresult *x = q(w, sql_drop_token, 3, v3);
        PQclear(x);
        count_push(w, pi, PUSH_OUT_TOKEN_REMOVED);
        nlog(LOG_INFO, "push token removed: provider says it is gone",
             json_pack("{s:I,s:I,s:s,s:s}", "user_id", (json_int_t)user, "device_id", (json_int_t)device, "provider",
                       prov->name, "error", err));
        break;
    }
    case PUSH_RETRY:
        w->retry_after_ms = po.retry_after_ms;
        count_push(w, pi, PUSH_OUT_RETRIED);
        rc = JOB_RETRY;
        break;
    case PUSH_FAILED:
        count_push(w, pi, PUSH_OUT_FAILED);
        rc = JOB_DEAD;
        break;
    }
out:
    PQclear(dev);
    return rc;
}

/* ======================================================================
 * push_badge
 * ====================================================================== */

/* KEYS: pending badge hash, delayed set. ARGV: device, chat, flush job, due,
 * flush id, now. The first read of a window schedules the flush; reads from
 * two devices in one window update all of them (reader 0). */
static const char badge_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then "
    "  redis.call('HSET', KEYS[1], 'reader', ARGV[1], 'chat_id', ARGV[2], 'flush_id', ARGV[5], 'first_ms', ARGV[6]) "
    "  redis.call('EXPIRE', KEYS[1], 86400) "
    "  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) "
    "  return 1 end "
    "if redis.call('HGET', KEYS[1], 'reader') ~= ARGV[1] then redis.call('HSET', KEYS[1], 'reader', '0') end "
    "redis.call('HSET', KEYS[1], 'chat_id', ARGV[2]) "
    "return 0";

static enum job_rc push_badge(struct wctx *w, int64_t user, int64_t device, int64_t chat, char *err, size_t errlen)
{
    char pending[64], flush_id[33], due[24], dv[24], ch[24], now[24];
    snprintf(pending, sizeof pending, KEY_PUSH_BADGE_PREFIX "%lld", (long long)user);
    random_hex(flush_id, 16);
    i64s(due, wall_time_ms() + w->cfg->push_coalesce_ms);
    i64s(now, wall_time_ms());
    json_t *fj = job_push_flush_new(user, flush_id, JOB_KIND_BADGE);
    char *flush = json_dumps(fj, JSON_COMPACT);
    json_decref(fj);
    redisReply *r = wcmd(w, "EVAL %s 2 %s " JOBS_DELAYED " %s %s %s %s %s %s", badge_script, pending, i64s(dv, device),
                         i64s(ch, chat), flush, due, flush_id, now);
    free(flush);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    drop(r);
    if (!ok) {
        snprintf(err, errlen, "redis unavailable");
        return JOB_ABANDON;
    }
    return JOB_DONE;
}

/* ======================================================================
 * push_flush
 * ====================================================================== */

static const char take_script[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then "
    "  if redis.call('HGET', KEYS[1], 'flush_id') ~= ARGV[1] then return {} end "
    "  redis.call('RENAME', KEYS[1], KEYS[2]) "
    "  redis.call('EXPIRE', KEYS[2], 86400) end "
    "return redis.call('HGETALL', KEYS[2])";
static const char sql_badge[] = "SELECT coalesce(sum(" CHAT_SQL_UNREAD
                                "), 0) FROM chat_members cm WHERE cm.user_id = $1";
static const char sql_devices[] =
    "SELECT id FROM devices WHERE user_id = $1 AND revoked_at IS NULL AND push_token IS NOT NULL ORDER BY id";
static const char sql_covers[] =
    "INSERT INTO push_covers (user_id, flush_id, chat_ids, seqs) VALUES ($1, $2, $3::bigint[], $4::bigint[])"
    " ON CONFLICT (user_id, flush_id) DO NOTHING";

static int64_t field_i64(redisReply *h, const char *name)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (strcmp(h->element[i]->str, name) == 0)
            return strtoll(h->element[i + 1]->str, NULL, 10);
    return 0;
}

/* Records what the push of this flush covers (the "c:<chat>" fields: newest
 * seq per chat). 0 or -1. */
static int write_covers(struct wctx *w, int64_t user, const char *flush_id, redisReply *h)
{
    int64_t chats[COVERS_MAX], seqs[COVERS_MAX];
    size_t n = 0;
    for (size_t i = 0; i + 1 < h->elements && n < COVERS_MAX; i += 2)
        if (strncmp(h->element[i]->str, "c:", 2) == 0) {
            chats[n] = strtoll(h->element[i]->str + 2, NULL, 10);
            seqs[n++] = strtoll(h->element[i + 1]->str, NULL, 10);
        }
    char u[24];
    char *ca = db_id_array(chats, n), *sa = db_id_array(seqs, n);
    const char *v4[4] = {i64s(u, user), flush_id, ca, sa};
    PGresult *r = q(w, sql_covers, 4, v4);
    free(ca);
    free(sa);
    PQclear(r);
    return r ? 0 : -1;
}

/* Devices of user with a poll waiting now (a badge update goes to the others). */
static bool polling(redisReply *p, int64_t device, int64_t now)
{
    char d[24];
    i64s(d, device);
    for (size_t i = 0; p && p->type == REDIS_REPLY_ARRAY && i + 1 < p->elements; i += 2)
        if (strcmp(p->element[i]->str, d) == 0 && strtoll(p->element[i + 1]->str, NULL, 10) > now)
            return true;
    return false;
}

static enum job_rc push_flush(struct wctx *w, int64_t user, const char *flush_id, enum push_kind kind, char *err,
                              size_t errlen)
{
    char pending[64], flushing[128];
    snprintf(pending, sizeof pending, "%s%lld", kind == PUSH_BADGE ? KEY_PUSH_BADGE_PREFIX : KEY_PUSH_PENDING_PREFIX,
             (long long)user);
    snprintf(flushing, sizeof flushing, KEY_PUSH_FLUSHING_PREFIX "%s", flush_id);
    redisReply *h = wcmd(w, "EVAL %s 2 %s %s %s", take_script, pending, flushing, flush_id);
    if (!h || h->type != REDIS_REPLY_ARRAY) {
        drop(h);
        snprintf(err, errlen, "redis unavailable");
        return JOB_ABANDON;
    }
    if (h->elements == 0) { /* already flushed (a rerun after completion) */
        drop(h);
        return JOB_DONE;
    }
    int64_t count = field_i64(h, "count"), chat = field_i64(h, "chat_id"), seq = field_i64(h, "seq");
    int64_t first_ms = field_i64(h, "first_ms"), reader = field_i64(h, "reader");
    redisReply *poll = NULL;
    if (kind == PUSH_BADGE) {
        poll = wcmd(w, "HGETALL " KEY_POLLING_PREFIX "%lld", (long long)user);
        if (!poll) {
            drop(h);
            snprintf(err, errlen, "redis unavailable");
            return JOB_ABANDON;
        }
    }
    char u[24];
    const char *v1[1] = {i64s(u, user)};
    /* no device with a token (most badge flushes of users without a phone): nothing to
     * send, nothing to record */
    PGresult *ds = q(w, sql_devices, 1, v1);
    int covered = ds && PQntuples(ds) > 0 ? write_covers(w, user, flush_id, h) : 0;
    drop(h);
    PGresult *b = ds && PQntuples(ds) > 0 && covered == 0 ? q(w, sql_badge, 1, v1) : NULL;
    if (!ds || (PQntuples(ds) > 0 && !b)) {
        PQclear(b);
        PQclear(ds);
        drop(poll);
        snprintf(err, errlen, "database unavailable");
        return JOB_ABANDON;
    }
    enum job_rc out = JOB_DONE;
    int64_t now = wall_time_ms();
    for (int i = 0; i < PQntuples(ds); i++) {
        int64_t device = db_i64(ds, i, 0);
        if (kind == PUSH_BADGE && (device == reader || polling(poll, device, now)))
            continue; /* it knows: it read, or its poll got the receipt */
        jobs_keepalive(w);
        json_t *send = job_push_send_new(user, device, flush_id, count, chat, seq, db_i64(b, 0, 0), first_ms,
                                         push_kind_name(kind));
        char derr[256] = "";
        w->retry_after_ms = 0;
        enum job_rc rc = push_send(w, send, derr, sizeof derr);
        if (rc == JOB_RETRY || rc == JOB_DEFER) {
            /* this device continues as a job of its own; the others are done */
            int64_t delay = w->retry_after_ms;
            if (rc == JOB_RETRY) {
                int64_t backoff = jobs_backoff_ms(w->cfg->job_retry_base_ms, 1);
                delay = delay > backoff ? delay : backoff;
                json_object_set_new(send, "attempts", json_integer(1));
            }
            if (rc == JOB_RETRY && w->cfg->job_max_attempts <= 1) {
                char *raw = json_dumps(send, JSON_COMPACT);
                jobs_dead_letter(w, raw, derr, 1);
                free(raw);
            } else if (jobs_schedule(w, send, delay) == 0) {
                if (rc == JOB_RETRY) {
                    jobs_count(w, "jobs_retried_total", 1);
                    nlog(LOG_INFO, "push retry scheduled", json_pack("{s:i,s:s}", "attempt", 1, "error", derr));
                }
            } else {
                out = JOB_ABANDON;
            }
        } else if (rc == JOB_DEAD) {
            char *raw = json_dumps(send, JSON_COMPACT);
            jobs_dead_letter(w, raw, derr, 1);
            free(raw);
        } else if (rc == JOB_ABANDON) {
            snprintf(err, errlen, "%s", derr);
            out = JOB_ABANDON;
        }
        json_decref(send);
        if (out == JOB_ABANDON)
            break;
    }
    PQclear(b);
    PQclear(ds);
    drop(poll);
    if (out == JOB_DONE)
        drop(wcmd(w, "DEL %s", flushing));
    return out;
}

/* ======================================================================
 * Dispatch
 * ====================================================================== */

/* Each job type reads its own fields; a malformed job is dead at once. */
static enum job_rc run_push_message(struct wctx *w, json_t *job, char *err, size_t errlen)
{
    json_t *c = json_object_get(job, "chat_id"), *s = json_object_get(job, "seq");
    if (!json_is_integer(c) || !json_is_integer(s) || json_integer_value(c) <= 0 || json_integer_value(s) <= 0) {
        snprintf(err, errlen, "invalid push_message job: chat_id and seq must be positive integers");
        return JOB_DEAD;
    }
    return push_message(w, json_integer_value(c), json_integer_value(s), err, errlen);
}

static enum job_rc run_push_flush(struct wctx *w, json_t *job, char *err, size_t errlen)
{
    json_t *u = json_object_get(job, "user_id");
    const char *fid = json_string_value(json_object_get(job, "flush_id"));
    if (!json_is_integer(u) || json_integer_value(u) <= 0 || !fid || strlen(fid) > 64) {
        snprintf(err, errlen, "invalid push_flush job: user_id and flush_id are required");
        return JOB_DEAD;
    }
    return push_flush(w, json_integer_value(u), fid, kind_of(job), err, errlen);
}

static enum job_rc run_push_badge(struct wctx *w, json_t *job, char *err, size_t errlen)
{
    json_t *u = json_object_get(job, "user_id"), *d = json_object_get(job, "device_id");
    json_t *c = json_object_get(job, "chat_id");
    if (!json_is_integer(u) || !json_is_integer(d) || !json_is_integer(c) || json_integer_value(u) <= 0 ||
        json_integer_value(d) <= 0 || json_integer_value(c) <= 0) {
        snprintf(err, errlen, "invalid push_badge job: user_id, device_id and chat_id must be positive integers");
        return JOB_DEAD;
    }
    return push_badge(w, json_integer_value(u), json_integer_value(d), json_integer_value(c), err, errlen);
}

static const struct job_type {
    const char *type;
    enum job_rc (*run)(struct wctx *w, json_t *job, char *err, size_t errlen);
} job_types[] = {
    {JOB_PUSH_MESSAGE, run_push_message},
    {JOB_PUSH_FLUSH, run_push_flush},
    {JOB_PUSH_SEND, push_send},
    {JOB_PUSH_BADGE, run_push_badge},
};

#define NJOBTYPES (sizeof job_types / sizeof job_types[0])
_Static_assert(JOB_DEFER + 1 == JOB_RCS, "JOB_RCS counts enum job_rc");
static atomic_ullong runs[NJOBTYPES + 1][JOB_RCS]; /* by type (last row: invalid) and outcome */
static atomic_int running;                         /* jobs in push_run now */

size_t job_types_n(void)
{
    return NJOBTYPES + 1;
}

const char *job_type_name(size_t i)
{
    return i < NJOBTYPES ? job_types[i].type : "invalid";
}

const char *job_rc_name(enum job_rc rc)
{
    static const char *const names[JOB_RCS] = {
        [JOB_DONE] = "done",       [JOB_RETRY] = "retry", [JOB_DEAD] = "dead",
        [JOB_ABANDON] = "abandon", [JOB_DEFER] = "defer",
    };
    return (unsigned)rc < JOB_RCS ? names[rc] : "unknown";
}

unsigned long long job_runs(size_t type, enum job_rc rc)
{
    return type <= NJOBTYPES && (unsigned)rc < JOB_RCS ? atomic_load(&runs[type][rc]) : 0;
}

int jobs_running(void)
{
    return atomic_load(&running);
}

enum job_rc push_run(struct wctx *w, json_t *job, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(job, "type"));
    size_t t = NJOBTYPES; /* invalid until found */
    enum job_rc rc = JOB_DEAD;
    atomic_fetch_add(&running, 1);
    for (size_t i = 0; type && i < NJOBTYPES; i++)
        if (strcmp(job_types[i].type, type) == 0)
            t = i;
    if (!type)
        snprintf(err, errlen, "invalid job: missing string field `type`");
    else if (t == NJOBTYPES)
        snprintf(err, errlen, "invalid job: unknown type '%.64s'", type);
    else
        rc = job_types[t].run(w, job, err, errlen);
    if ((unsigned)rc < JOB_RCS)
        atomic_fetch_add(&runs[t][rc], 1);
    atomic_fetch_sub(&running, 1);
    return rc;
}
