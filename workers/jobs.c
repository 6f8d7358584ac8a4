/*
 * jobs.c — the queue engine of natter-worker (see worker.h and common/jobs.h).
 *
 * At-least-once: a job is acked (and deleted from the stream) only after it
 * ran to an outcome. A worker that dies leaves its jobs pending in the
 * consumer group; any worker reclaims jobs idle past the visibility timeout
 * (XAUTOCLAIM) and redoes them, so every job must be idempotent (push.c keeps
 * markers for that). A job that keeps killing its worker is recognised by its
 * delivery count and dead-lettered instead of looping forever.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <sodium.h>

#include "db.h"
#include "jobs.h"
#include "log.h"
#include "util.h"
#include "worker.h"

#define BLOCK_MS 1000

/* ---- connections ---- */

PGconn *wctx_db(struct wctx *w)
{
    if (w->db && PQstatus(w->db) != CONNECTION_OK) {
        PQfinish(w->db);
        w->db = NULL;
    }
    if (!w->db)
        w->db = db_connect(w->cfg->database_url);
    return w->db;
}

redisContext *wctx_redis(struct wctx *w)
{
    if (w->rc && w->rc->err) {
        redisFree(w->rc);
        w->rc = NULL;
    }
    if (!w->rc) {
        w->rc = redis_connect_new(w->redis, false);
        if (w->rc) {
            struct timeval tv = {3, 0}; /* longer than BLOCK: a timeout poisons the context */
            redisSetTimeout(w->rc, tv);
        }
    }
    return w->rc;
}

redisReply *wcmd(struct wctx *w, const char *fmt, ...)
{
    redisContext *c = wctx_redis(w);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r) {
        redisFree(w->rc);
        w->rc = NULL;
    }
    return r;
}

static void drop(redisReply *r)
{
    if (r)
        freeReplyObject(r);
}

void jobs_keepalive(struct wctx *w)
{
    if (!w->job_id || now_us() - w->claimed_us < (uint64_t)w->cfg->job_visibility_ms * 1000u / 3u)
        return;
    drop(wcmd(w, "XCLAIM " JOBS_STREAM " " JOBS_GROUP " %s 0 %s JUSTID", w->consumer, w->job_id));
    w->claimed_us = now_us();
}

/* ---- metrics ---- */

void jobs_count(struct wctx *w, const char *name, long long by)
{
    drop(wcmd(w, "INCRBY " JOBS_METRIC_PREFIX "%s %lld", name, by));
}

static void observe_latency(struct wctx *w, int64_t enq_ms)
{
    static const double bounds[] = JOBS_LATENCY_BUCKETS;
    if (enq_ms <= 0)
        return;
    double secs = (double)(wall_time_ms() - enq_ms) / 1000.0;
    if (secs < 0)
        secs = 0;
    char field[16] = "+Inf";
    for (int i = 0; i < JOBS_LATENCY_NBUCKETS; i++)
        if (secs <= bounds[i]) {
            snprintf(field, sizeof field, "%g", bounds[i]);
            break;
        }
    drop(wcmd(w, "HINCRBY " JOBS_LATENCY_HASH " %s 1", field));
    drop(wcmd(w, "HINCRBYFLOAT " JOBS_LATENCY_HASH " sum %f", secs));
    drop(wcmd(w, "HINCRBY " JOBS_LATENCY_HASH " count 1"));
}

/* ---- delayed jobs ---- */

int64_t jobs_backoff_ms(int base_ms, int attempt)
{
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < 300000; i++)
        d *= 2;
    if (d > 300000)
        d = 300000;
    /* +/- 20% jitter so that a burst of failures does not retry in lockstep */
    int64_t span = d / 5;
    if (span > 0)
        d += (int64_t)randombytes_uniform((uint32_t)(2 * span + 1)) - span;
    return d;
}

int jobs_schedule(struct wctx *w, json_t *job, int64_t delay_ms)
{
    /* a unique member: two identical retries must not collapse into one */
    char nonce[17];
    random_hex(nonce, 8);
    json_object_set_new(job, "nonce", json_string(nonce));
    char *text = json_dumps(job, JSON_COMPACT);
    if (!text)
        return -1;
    redisReply *r = wcmd(w, "ZADD " JOBS_DELAYED " %lld %s", (long long)(wall_time_ms() + delay_ms), text);
    free(text);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    drop(r);
    return ok ? 0 : -1;
}

/* Atomically moves every due member of the delayed set into the stream. */
static const char move_script[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500) "
    "for _, j in ipairs(due) do "
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000000, '*', 'job', j) "
    "  redis.call('ZREM', KEYS[1], j) "
    "end "
    "return #due";

void jobs_move_due(struct redis_pool *p)
{
    redisReply *r = redis_cmd(p, "EVAL %s 2 " JOBS_DELAYED " " JOBS_STREAM " %lld", move_script,
                              (long long)wall_time_ms());
    drop(r);
}

/* ---- outcomes ---- */

void jobs_dead_letter(struct wctx *w, const char *raw, const char *error, int attempts)
{
    char at[16];
    snprintf(at, sizeof at, "%d", attempts);
    drop(wcmd(w, "XADD " JOBS_DEAD " MAXLEN ~ 100000 * job %s error %s attempts %s", raw, error, at));
    jobs_count(w, "jobs_dead_total", 1);
    nlog(LOG_WARN, "job dead-lettered",
         json_pack("{s:i,s:s,s:s,s:i}", "thread", w->index, "job", raw, "error", error, "attempts", attempts));
}

static void ack(struct wctx *w, const char *id)
{
    drop(wcmd(w, "XACK " JOBS_STREAM " " JOBS_GROUP " %s", id));
    drop(wcmd(w, "XDEL " JOBS_STREAM " %s", id));
}

/* Runs the job of stream entry id (raw JSON) delivered `deliveries` times. */
static void handle(struct wctx *w, const char *id, const char *raw, long long deliveries)
{
    char err[256] = "";
    json_error_t jerr;
    json_t *job = json_loads(raw, 0, &jerr);
    if (!job || !json_is_object(job)) {
        snprintf(err, sizeof err, "invalid job: not a JSON object (%s)", job ? "wrong type" : jerr.text);
        jobs_dead_letter(w, raw, err, 1);
        ack(w, id);
        json_decref(job);
        return;
    }
    int attempts = (int)json_integer_value(json_object_get(job, "attempts"));
    if (deliveries > w->cfg->job_max_attempts) {
        /* delivered again and again without an outcome: it kills its workers */
        snprintf(err, sizeof err, "delivered %lld times without finishing (worker crashes?)", deliveries);
        jobs_dead_letter(w, raw, err, attempts + (int)deliveries);
        ack(w, id);
        json_decref(job);
        return;
    }
    int64_t enq_ms = json_integer_value(json_object_get(job, "enq_ms"));
    w->job_id = id;
    w->claimed_us = now_us();
    w->retry_after_ms = 0;
    enum job_rc rc = push_run(w, job, err, sizeof err);
    w->job_id = NULL;
    switch (rc) {
    case JOB_DONE:
        ack(w, id);
        jobs_count(w, "jobs_done_total", 1);
        observe_latency(w, enq_ms);
        break;
    case JOB_RETRY:
        attempts++;
        if (attempts >= w->cfg->job_max_attempts) {
            jobs_dead_letter(w, raw, err, attempts);
        } else {
            json_object_set_new(job, "attempts", json_integer(attempts));
            int64_t delay = jobs_backoff_ms(w->cfg->job_retry_base_ms, attempts);
            if (w->retry_after_ms > delay)
                delay = w->retry_after_ms; /* the provider's Retry-After */
            if (jobs_schedule(w, job, delay) < 0) {
                json_decref(job);
                return; /* leave it pending: it will be reclaimed */
            }
            jobs_count(w, "jobs_retried_total", 1);
            nlog(LOG_INFO, "job retry scheduled",
                 json_pack("{s:i,s:s,s:i,s:I}", "thread", w->index, "error", err, "attempt", attempts, "delay_ms",
                           (json_int_t)delay));
        }
        ack(w, id);
        break;
    case JOB_DEAD:
        jobs_dead_letter(w, raw, err, attempts + 1);
        ack(w, id);
        break;
    case JOB_DEFER:
        if (jobs_schedule(w, job, w->retry_after_ms) < 0) {
            json_decref(job);
            return; /* leave it pending: it will be reclaimed */
        }
        ack(w, id);
        break;
    case JOB_ABANDON:
        nlog(LOG_WARN, "job abandoned for now (dependency down); it will be reclaimed",
             json_pack("{s:i,s:s,s:s}", "thread", w->index, "id", id, "error", err));
        break;
    }
    json_decref(job);
}

/* Delivery count of one pending entry (1 when unknown). */
static long long deliveries_of(struct wctx *w, const char *id)
{
    redisReply *r = wcmd(w, "XPENDING " JOBS_STREAM " " JOBS_GROUP " %s %s 1", id, id);
    long long n = 1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 4)
        n = r->element[0]->element[3]->integer;
    drop(r);
    return n;
}

/* Handles the entries of an XREADGROUP / XAUTOCLAIM entry list. */
static void handle_entries(struct wctx *w, redisReply *entries, bool reclaimed)
{
    for (size_t i = 0; entries && i < entries->elements; i++) {
        redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const char *id = e->element[0]->str;
        redisReply *fields = e->element[1];
        const char *raw = NULL;
        for (size_t f = 0; fields && fields->type == REDIS_REPLY_ARRAY && f + 1 < fields->elements; f += 2)
            if (strcmp(fields->element[f]->str, "job") == 0)
                raw = fields->element[f + 1]->str;
        if (!fields || fields->type != REDIS_REPLY_ARRAY) {
            ack(w, id); /* entry deleted while pending: nothing left to do */
            continue;
        }
        if (!raw) {
            jobs_dead_letter(w, "", "invalid job: stream entry has no `job` field", 1);
            ack(w, id);
            continue;
        }
        handle(w, id, raw, reclaimed ? deliveries_of(w, id) : 1);
    }
}

static void ensure_group(struct wctx *w)
{
    /* from 0: jobs added before the group existed (or after Redis lost it) are read too */
    drop(wcmd(w, "XGROUP CREATE " JOBS_STREAM " " JOBS_GROUP " 0 MKSTREAM"));
}

void jobs_thread_loop(struct wctx *w, const atomic_bool *stopping)
{
    uint64_t next_claim = 0;
    int backoff_ms = 100;
    bool group_ok = false;
    while (!atomic_load(stopping)) {
        if (!wctx_redis(w)) {
            usleep((useconds_t)backoff_ms * 1000);
            backoff_ms = backoff_ms < 2000 ? backoff_ms * 2 : 2000;
            group_ok = false;
            continue;
        }
        backoff_ms = 100;
        if (!group_ok) {
            ensure_group(w);
            group_ok = true;
        }
        if (now_us() >= next_claim) {
            char idle[24];
            snprintf(idle, sizeof idle, "%d", w->cfg->job_visibility_ms);
            redisReply *c = wcmd(w, "XAUTOCLAIM " JOBS_STREAM " " JOBS_GROUP " %s %s 0-0 COUNT 10", w->consumer, idle);
            if (c && c->type == REDIS_REPLY_ARRAY && c->elements >= 2)
                handle_entries(w, c->element[1], true);
            drop(c);
            next_claim = now_us() + (uint64_t)w->cfg->job_visibility_ms * 1000u / 4u;
        }
        redisReply *r = wcmd(w, "XREADGROUP GROUP " JOBS_GROUP " %s COUNT 1 BLOCK %d STREAMS " JOBS_STREAM " >",
                             w->consumer, BLOCK_MS);
        if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP"))
            group_ok = false; /* Redis restarted without our group */
        else if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2)
            handle_entries(w, r->element[0]->element[1], false);
        drop(r);
    }
}
