/*
 * periodic.c — tasks that must run regularly but by one worker at a time
 * across every natter-worker process:
 *
 *   inbox_cleanup        acked rows (≤ the smallest ack of the user's live
 *                        devices) and rows past NATTER_INBOX_RETENTION
 *   tokens_cleanup       expired refresh tokens
 *   attachments_cleanup  pending attachments older than
 *                        NATTER_ATTACHMENT_PENDING_TTL: object, then row
 *   outbox_reconcile     push_outbox rows past due: enqueue again
 *   push_covers_cleanup  what old pushes covered (push_covers, kept for
 *                        POST /v1/devices/{id}/push-ack) past
 *                        NATTER_PUSH_TTL plus a day
 *
 * Coordination through Redis: `natter:lock:<task>` (SET NX with a long
 * safety expiry) is held while a run lasts, and `natter:next:<task>` (expiry
 * = the interval) is set when it ends, so a task runs at most once per
 * interval and never twice at once, whichever worker gets there first.
 * Deletes go in batches of at most 5,000 rows, each its own statement, so no
 * run holds locks for long.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "jobs.h"
#include "log.h"
#include "periodic.h"
#include "redis.h"
#include "store.h"
#include "util.h"

#define BATCH "5000"
#define BATCH_N 5000
#define RUN_BUDGET_US (10u * 1000000u) /* a run stops early after this and continues next time */
#define LOCK_SAFETY_MS 300000          /* a run that dies holding the lock frees it after this */

struct task {
    const char *name;
    int interval_ms;                      /* 0 = NATTER_CLEANUP_INTERVAL */
    long long (*run)(struct periodic *p); /* returns rows affected, -1 on failure */
};

struct periodic {
    const struct config *cfg;
    struct redis_pool *redis;
    PGconn *db;
    CURL *curl; /* object store requests */
    char owner[64];
};

static PGconn *pdb(struct periodic *p)
{
    if (p->db && PQstatus(p->db) != CONNECTION_OK) {
        PQfinish(p->db);
        p->db = NULL;
    }
    if (!p->db)
        p->db = db_connect(p->cfg->database_url);
    return p->db;
}

/* Runs a DELETE/UPDATE until it affects fewer than a batch; returns the total or -1. */
static long long batched(struct periodic *p, const char *sql, int n, const char *const *vals)
{
    long long total = 0;
    uint64_t until = now_us() + RUN_BUDGET_US;
    for (;;) {
        PGconn *c = pdb(p);
        if (!c)
            return -1;
        PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
        if (!db_res_ok(r)) {
            nlog(LOG_WARN, "periodic task query failed", json_pack("{s:s}", "error", PQresultErrorMessage(r)));
            PQclear(r);
            return -1;
        }
        long long k = atoll(PQcmdTuples(r));
        PQclear(r);
        total += k;
        if (k < BATCH_N || now_us() > until)
            return total;
    }
}

/* acked by every live device of the user (users without one keep theirs until retention) */
static const char sql_inbox_acked[] =
    "WITH acked AS (SELECT user_id, min(acked_seq) AS upto FROM devices WHERE revoked_at IS NULL GROUP BY user_id),"
    " doomed AS (SELECT i.user_id, i.seq FROM inbox i JOIN acked a ON a.user_id = i.user_id"
    "            WHERE i.seq <= a.upto LIMIT " BATCH
    ")"
    "DELETE FROM inbox i USING doomed d WHERE i.user_id = d.user_id AND i.seq = d.seq";
static const char sql_inbox_expired[] =
    "WITH doomed AS (SELECT user_id, seq FROM inbox WHERE created_at < now() - make_interval(secs => $1)"
    "                LIMIT " BATCH
    ")"
    "DELETE FROM inbox i USING doomed d WHERE i.user_id = d.user_id AND i.seq = d.seq";

static long long inbox_cleanup(struct periodic *p)
{
    char ret[24];
    snprintf(ret, sizeof ret, "%d", p->cfg->inbox_retention);
    const char *vals[1] = {ret};
    long long a = batched(p, sql_inbox_acked, 0, NULL);
    long long b = a < 0 ? -1 : batched(p, sql_inbox_expired, 1, vals);
    return a < 0 || b < 0 ? -1 : a + b;
}

static const char sql_tokens[] =
    "WITH doomed AS (SELECT user_id, token_hash FROM refresh_tokens WHERE expires_at < now() LIMIT " BATCH
    ")"
    "DELETE FROM refresh_tokens t USING doomed d WHERE t.user_id = d.user_id AND t.token_hash = d.token_hash";

static long long tokens_cleanup(struct periodic *p)
{
    return batched(p, sql_tokens, 0, NULL);
}

static const char sql_stale_attachments[] =
    "SELECT chat_id, id, object_key FROM attachments WHERE status = 'pending'"
    " AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 500";
static const char sql_drop_attachment[] = "DELETE FROM attachments WHERE chat_id = $1 AND id = $2::uuid";

/* Pending attachments past NATTER_ATTACHMENT_PENDING_TTL (their upload URL
 * expired long ago): the object (if it was ever PUT), then the row. The
 * quota of natter-api stops counting them at the same age. */
static long long attachments_cleanup(struct periodic *p)
{
    PGconn *c = pdb(p);
    if (!c)
        return -1;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", p->cfg->pending_ttl);
    const char *params[1] = {ttl};
    PGresult *res = PQexecParams(c, sql_stale_attachments, 1, NULL, params, NULL, NULL, 0);
    if (!db_res_ok(res)) {
        PQclear(res);
        return -1;
    }
    struct s3_target t;
    store_target(p->cfg, &t);
    long long n = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        char err[256] = "";
        if (store_delete(p->curl, &t, PQgetvalue(res, i, 2), err, sizeof err) < 0) {
            nlog(LOG_WARN, "attachments cleanup: object not deleted, row kept",
                 json_pack("{s:s,s:s}", "key", PQgetvalue(res, i, 2), "error", err));
            continue;
        }
        const char *vals[2] = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)};
        PGresult *d = PQexecParams(c, sql_drop_attachment, 2, NULL, vals, NULL, NULL, 0);
        if (db_res_ok(d))
            n++;
        PQclear(d);
    }
    PQclear(res);
    return n;
}

static const char sql_due[] = "SELECT chat_id, seq FROM push_outbox WHERE due_at < now() ORDER BY due_at LIMIT 1000";
static const char sql_postpone[] =
    "UPDATE push_outbox SET due_at = now() + interval '60 seconds' WHERE chat_id = $1 AND seq = $2";

static long long outbox_reconcile(struct periodic *p)
{
    PGconn *c = pdb(p);
    if (!c)
        return -1;
    PGresult *due = PQexecParams(c, sql_due, 0, NULL, NULL, NULL, NULL, 0);
    if (!db_res_ok(due)) {
        PQclear(due);
        return -1;
    }
    long long n = 0;
    for (int i = 0; i < PQntuples(due); i++) {
        if (jobs_push_message(p->redis, db_i64(due, i, 0), db_i64(due, i, 1)) < 0)
            break; /* Redis down: they stay due */
        const char *vals[2] = {PQgetvalue(due, i, 0), PQgetvalue(due, i, 1)};
        PGresult *u = PQexecParams(c, sql_postpone, 2, NULL, vals, NULL, NULL, 0);
        PQclear(u);
        n++;
    }
    PQclear(due);
    if (n > 0)
        nlog(LOG_INFO, "outbox: re-enqueued push jobs", json_pack("{s:I}", "count", (json_int_t)n));
    return n;
}

/* a push is worthless after NATTER_PUSH_TTL; its ack may come a little later (a phone that was off) */
static const char sql_covers_expired[] =
    "WITH doomed AS (SELECT user_id, flush_id FROM push_covers"
    "                WHERE created_at < now() - make_interval(secs => $1) LIMIT " BATCH
    ")"
    "DELETE FROM push_covers c USING doomed d WHERE c.user_id = d.user_id AND c.flush_id = d.flush_id";

static long long push_covers_cleanup(struct periodic *p)
{
    char keep[24];
    snprintf(keep, sizeof keep, "%d", p->cfg->push_ttl + 86400);
    const char *vals[1] = {keep};
    return batched(p, sql_covers_expired, 1, vals);
}

static const struct task tasks[] = {
    {"inbox_cleanup", 0, inbox_cleanup},
    {"tokens_cleanup", 0, tokens_cleanup},
    {"attachments_cleanup", 0, attachments_cleanup},
    {"outbox_reconcile", 2000, outbox_reconcile},
    {"push_covers_cleanup", 0, push_covers_cleanup},
};

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

struct periodic *periodic_new(const struct config *cfg, struct redis_pool *redis)
{
    struct periodic *p = xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->redis = redis;
    p->curl = curl_easy_init();
    char host[32] = "host";
    gethostname(host, sizeof host - 1);
    char nonce[9];
    random_hex(nonce, 4);
    snprintf(p->owner, sizeof p->owner, "%s:%d:%s", host, (int)getpid(), nonce);
    return p;
}

void periodic_free(struct periodic *p)
{
    if (!p)
        return;
    if (p->db)
        PQfinish(p->db);
    if (p->curl)
        curl_easy_cleanup(p->curl);
    free(p);
}

void periodic_tick(struct periodic *p)
{
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++) {
        const struct task *t = &tasks[i];
        int interval = t->interval_ms ? t->interval_ms : p->cfg->cleanup_interval * 1000;
        redisReply *nx = redis_cmd(p->redis, "EXISTS natter:next:%s", t->name);
        bool wait = !nx || nx->type != REDIS_REPLY_INTEGER || nx->integer == 1;
        if (nx)
            freeReplyObject(nx);
        if (wait)
            continue; /* not due yet, or Redis down: no coordination, no run */
        redisReply *lk = redis_cmd(p->redis, "SET natter:lock:%s %s NX PX %d", t->name, p->owner, LOCK_SAFETY_MS);
        bool mine = lk && lk->type == REDIS_REPLY_STATUS;
        if (lk)
            freeReplyObject(lk);
        if (!mine)
            continue;
        char started[40], finished[40];
        rfc3339_now(started, sizeof started);
        uint64_t t0 = now_us();
        long long n = t->run(p);
        rfc3339_now(finished, sizeof finished);
        if (n >= 0)
            nlog(LOG_INFO, "periodic task done",
                 json_pack("{s:s,s:I,s:s,s:s,s:f,s:s}", "task", t->name, "deleted", (json_int_t)n, "started_at",
                           started, "finished_at", finished, "duration_ms", (double)(now_us() - t0) / 1000.0, "owner",
                           p->owner));
        else
            nlog(LOG_WARN, "periodic task failed; retrying next interval", json_pack("{s:s}", "task", t->name));
        redisReply *nr = redis_cmd(p->redis, "SET natter:next:%s 1 PX %d", t->name, interval);
        if (nr)
            freeReplyObject(nr);
        redisReply *rel = redis_cmd(p->redis, "EVAL %s 1 natter:lock:%s %s", release_script, t->name, p->owner);
        if (rel)
            freeReplyObject(rel);
    }
}
