/*
 * health.c — operational endpoints: liveness, readiness (PostgreSQL and
 * Redis), Prometheus metrics (behind a bearer token when NATTER_METRICS_TOKEN
 * is set) and the embedded OpenAPI document.
 */
#include <stdlib.h>
#include <string.h>

#include "acks.h"
#include "app.h"
#include "bus.h"
#include "db.h"
#include "devcache.h"
#include "http.h"
#include "hub.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "presence.h"
#include "readmarks.h"
#include "redis.h"
#include "resources.h"
#include "sends.h"
#include "strbuf.h"
#include "tx.h"
#include "util.h"

int health_live(struct req *r)
{
    return reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

int health_ready(struct req *r)
{
    /* a direct pool check, not req_db(): readiness must report, not 503 early */
    bool pg_ok = false;
    PGconn *c = db_acquire(r->app->db, 1000);
    if (c) {
        PGresult *res = PQexec(c, "SELECT 1");
        pg_ok = db_res_ok(res);
        PQclear(res);
        db_release(r->app->db, c);
    }
    bool redis_ok = redis_ping(r->app->redis);
    json_t *checks = json_pack("{s:s,s:s}", "postgres", pg_ok ? "ok" : "fail", "redis", redis_ok ? "ok" : "fail");
    if (pg_ok && redis_ok)
        return reply_json(r, 200, json_pack("{s:s,s:o}", "status", "ready", "checks", checks));
    req_add_header(r, "Retry-After", "5");
    return reply_problem_ext(r, 503, "not_ready", json_pack("{s:o}", "checks", checks), "a dependency is down");
}

/* natter_pushes_total{provider, outcome} from the hash "<provider>:<outcome>"
 * -> count the workers keep (workers/push.c); names are ours, but only
 * [a-z_] ones are written out, so a stray field cannot break the format. */
static void push_outcomes(struct strbuf *sb, const redisReply *h)
{
    strbuf_printf(sb,
                  "# HELP natter_pushes_total Pushes by provider and outcome (sent, retried, token_removed,"
                  " failed, deferred, expired).\n# TYPE natter_pushes_total counter\n");
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
        const char *f = h->element[i]->str, *colon = f ? strchr(f, ':') : NULL;
        if (!colon || colon == f || colon - f > 32 || strlen(colon + 1) > 32 || !colon[1])
            continue;
        bool clean = true;
        for (const char *p = f; *p; p++)
            clean = clean && (p == colon || (*p >= 'a' && *p <= 'z') || *p == '_');
        if (clean)
            strbuf_printf(sb, "natter_pushes_total{provider=\"%.*s\",outcome=\"%s\"} %lld\n", (int)(colon - f), f,
                          colon + 1, atoll(h->element[i + 1]->str));
    }
}

/* The job queue's figures, written to Redis by every worker process, so one
 * scrape here covers the whole pool. Redis down: the section is left out. */
static void jobs_metrics(struct app *a, struct strbuf *sb)
{
    static const double bounds[] = JOBS_LATENCY_BUCKETS;
    redisContext *c = redis_acquire(a->redis);
    if (!c)
        return;
    redisAppendCommand(c, "XLEN " JOBS_STREAM);
    redisAppendCommand(c, "XPENDING " JOBS_STREAM " " JOBS_GROUP);
    redisAppendCommand(c, "ZCARD " JOBS_DELAYED);
    redisAppendCommand(c, "XLEN " JOBS_DEAD);
    redisAppendCommand(c, "MGET " JOBS_METRIC_PREFIX "jobs_done_total " JOBS_METRIC_PREFIX
                          "jobs_retried_total " JOBS_METRIC_PREFIX "jobs_dead_total " JOBS_METRIC_PREFIX
                          "pushes_sent_total");
    redisAppendCommand(c, "HGETALL " JOBS_LATENCY_HASH);
    redisAppendCommand(c, "HGETALL " KEY_METRIC_PUSHES);
    redisReply *rep[7] = {0};
    bool ok = true;
    for (int i = 0; i < 7; i++)
        if (redisGetReply(c, (void **)&rep[i]) != REDIS_OK || !rep[i])
            ok = false;
    redis_release(a->redis, c, !ok);
    if (ok) {
        long long xlen = rep[0]->type == REDIS_REPLY_INTEGER ? rep[0]->integer : 0;
        long long pending = rep[1]->type == REDIS_REPLY_ARRAY && rep[1]->elements > 0 &&
                                    rep[1]->element[0]->type == REDIS_REPLY_INTEGER
                                ? rep[1]->element[0]->integer
                                : 0;
        long long delayed = rep[2]->type == REDIS_REPLY_INTEGER ? rep[2]->integer : 0;
        long long dead = rep[3]->type == REDIS_REPLY_INTEGER ? rep[3]->integer : 0;
        long long counters[4] = {0};
        for (size_t i = 0; i < 4 && rep[4]->type == REDIS_REPLY_ARRAY && i < rep[4]->elements; i++)
            if (rep[4]->element[i]->type == REDIS_REPLY_STRING)
                counters[i] = atoll(rep[4]->element[i]->str);
        strbuf_printf(sb,
                      "# HELP natter_jobs_queue_depth Jobs in the stream not yet delivered to a worker.\n"
                      "# TYPE natter_jobs_queue_depth gauge\nnatter_jobs_queue_depth %lld\n"
                      "# HELP natter_jobs_pending Jobs delivered to a worker and not yet acknowledged.\n"
                      "# TYPE natter_jobs_pending gauge\nnatter_jobs_pending %lld\n"
                      "# HELP natter_jobs_delayed Jobs waiting for a retry.\n"
                      "# TYPE natter_jobs_delayed gauge\nnatter_jobs_delayed %lld\n"
                      "# HELP natter_jobs_dead Jobs in the dead-letter stream.\n"
                      "# TYPE natter_jobs_dead gauge\nnatter_jobs_dead %lld\n"
                      "# HELP natter_jobs_done_total Jobs the worker pool completed.\n"
                      "# TYPE natter_jobs_done_total counter\nnatter_jobs_done_total %lld\n"
                      "# HELP natter_jobs_retried_total Failed job attempts scheduled for another try.\n"
                      "# TYPE natter_jobs_retried_total counter\nnatter_jobs_retried_total %lld\n"
                      "# HELP natter_jobs_dead_total Jobs moved to the dead-letter stream.\n"
                      "# TYPE natter_jobs_dead_total counter\nnatter_jobs_dead_total %lld\n"
                      "# HELP natter_pushes_sent_total Pushes a push provider accepted.\n"
                      "# TYPE natter_pushes_sent_total counter\nnatter_pushes_sent_total %lld\n"
                      "# HELP natter_job_latency_seconds Time from enqueue to a job's outcome.\n"
                      "# TYPE natter_job_latency_seconds histogram\n",
                      xlen - pending > 0 ? xlen - pending : 0, pending, delayed, dead, counters[0], counters[1],
                      counters[2], counters[3]);
        long long cum = 0, count = 0;
        double sum = 0;
        redisReply *h = rep[5];
        for (int b = 0; b <= JOBS_LATENCY_NBUCKETS; b++) {
            char field[16];
            if (b < JOBS_LATENCY_NBUCKETS)
                snprintf(field, sizeof field, "%g", bounds[b]);
            else
                snprintf(field, sizeof field, "+Inf");
            for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
                if (strcmp(h->element[i]->str, field) == 0)
                    cum += atoll(h->element[i + 1]->str);
            strbuf_printf(sb, "natter_job_latency_seconds_bucket{le=\"%s\"} %lld\n", field, cum);
        }
        for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
            if (strcmp(h->element[i]->str, "sum") == 0)
                sum = atof(h->element[i + 1]->str);
            else if (strcmp(h->element[i]->str, "count") == 0)
                count = atoll(h->element[i + 1]->str);
        }
        strbuf_printf(sb, "natter_job_latency_seconds_sum %.6f\nnatter_job_latency_seconds_count %lld\n", sum, count);
        push_outcomes(sb, rep[6]);
    }
    for (int i = 0; i < 7; i++)
        if (rep[i])
            freeReplyObject(rep[i]);
}

/* NATTER_METRICS_TOKEN set: the scrape must carry `Authorization: Bearer
 * <token>` (bearer_check). 0, or -1 after a 401. */
static int metrics_authorize(struct req *r)
{
    const char *want = r->app->cfg->metrics_token;
    if (!want || !*want)
        return 0;
    switch (bearer_check(req_header(r, "Authorization"), want)) {
    case BEARER_OK:
        return 0;
    case BEARER_MISSING:
        req_add_header(r, "WWW-Authenticate", "Bearer realm=\"metrics\"");
        return reply_problem(r, 401, "unauthorized", "GET /metrics needs Authorization: Bearer <NATTER_METRICS_TOKEN>");
    case BEARER_WRONG:
        break;
    }
    req_add_header(r, "WWW-Authenticate", "Bearer realm=\"metrics\", error=\"invalid_token\"");
    return reply_problem(r, 401, "invalid_token", "wrong metrics token");
}

int health_metrics(struct req *r)
{
    if (metrics_authorize(r) < 0)
        return -1;
    struct strbuf sb = {0};
    http_metrics_render(&sb);
    int size = 0, in_use = 0;
    db_pool_stats(r->app->db, &size, &in_use);
    strbuf_printf(&sb,
                  "# HELP natter_db_pool_size PostgreSQL connections the pool may hold.\n"
                  "# TYPE natter_db_pool_size gauge\nnatter_db_pool_size %d\n"
                  "# HELP natter_db_pool_in_use PostgreSQL connections lent out.\n"
                  "# TYPE natter_db_pool_in_use gauge\nnatter_db_pool_in_use %d\n"
                  "# HELP natter_hash_queue_depth Requests waiting for a hashing thread.\n"
                  "# TYPE natter_hash_queue_depth gauge\nnatter_hash_queue_depth %d\n",
                  size, in_use, http_offload_depth(r->srv));
    strbuf_printf(&sb,
                  "# HELP natter_longpoll_waiting Long-polls suspended in this process.\n"
                  "# TYPE natter_longpoll_waiting gauge\nnatter_longpoll_waiting %zu\n",
                  hub_count());
    struct pipeline_stats sp, rp;
    sends_stats(&sp);
    readmarks_stats(&rp);
    strbuf_printf(&sb,
                  "# HELP natter_send_batches_total Transactions of the send pipeline.\n"
                  "# TYPE natter_send_batches_total counter\nnatter_send_batches_total %llu\n"
                  "# HELP natter_send_batched_total Sends those transactions held.\n"
                  "# TYPE natter_send_batched_total counter\nnatter_send_batched_total %llu\n"
                  "# HELP natter_send_queue_depth Sends waiting for the pipeline's committer.\n"
                  "# TYPE natter_send_queue_depth gauge\nnatter_send_queue_depth %zu\n"
                  "# HELP natter_send_posts_dropped_total Committed batches whose publish and push jobs were"
                  " dropped (Redis fell behind).\n"
                  "# TYPE natter_send_posts_dropped_total counter\nnatter_send_posts_dropped_total %llu\n",
                  sp.batches, sp.items, sp.depth, sp.posts_dropped);
    strbuf_printf(&sb,
                  "# HELP natter_read_batches_total Transactions of the read-marker pipeline.\n"
                  "# TYPE natter_read_batches_total counter\nnatter_read_batches_total %llu\n"
                  "# HELP natter_read_batched_total Read markers those transactions held.\n"
                  "# TYPE natter_read_batched_total counter\nnatter_read_batched_total %llu\n"
                  "# HELP natter_read_queue_depth Read markers waiting for their pipeline's committer.\n"
                  "# TYPE natter_read_queue_depth gauge\nnatter_read_queue_depth %zu\n",
                  rp.batches, rp.items, rp.depth);
    strbuf_printf(&sb,
                  "# HELP natter_ack_flushes_total Transactions that flushed coalesced poll acks.\n"
                  "# TYPE natter_ack_flushes_total counter\nnatter_ack_flushes_total %llu\n"
                  "# HELP natter_acks_flushed_total Device acks those transactions carried.\n"
                  "# TYPE natter_acks_flushed_total counter\nnatter_acks_flushed_total %llu\n"
                  "# HELP natter_acks_dropped_total Acks not kept (table full or shutting down); the device"
                  " acks again on its next poll.\n"
                  "# TYPE natter_acks_dropped_total counter\nnatter_acks_dropped_total %llu\n"
                  "# HELP natter_acks_hinted_total Flushed acks whose newly covered events came from memory"
                  " (the flush read neither inbox nor messages for them).\n"
                  "# TYPE natter_acks_hinted_total counter\nnatter_acks_hinted_total %llu\n"
                  "# HELP natter_ack_flush_failures_total Ack flushes that did not commit (kept and retried).\n"
                  "# TYPE natter_ack_flush_failures_total counter\nnatter_ack_flush_failures_total %llu\n",
                  acks_flushes(), acks_flushed(), acks_dropped(), acks_hinted(), acks_flush_failures());
    unsigned long long mem, dbq, hits, misses;
    size_t known_bytes, known = hub_known(&known_bytes);
    events_stats(&mem, &dbq);
    devcache_stats(&hits, &misses);
    strbuf_printf(&sb,
                  "# HELP natter_poll_answers_total Long-poll answers, by where their events came from"
                  " (memory: the wake-ups' events and the known inbox head, no SQL).\n"
                  "# TYPE natter_poll_answers_total counter\n"
                  "natter_poll_answers_total{source=\"memory\"} %llu\n"
                  "natter_poll_answers_total{source=\"database\"} %llu\n"
                  "# HELP natter_inbox_known_users Users whose inbox head and recent events this process keeps.\n"
                  "# TYPE natter_inbox_known_users gauge\nnatter_inbox_known_users %zu\n"
                  "# HELP natter_inbox_known_bytes Bytes of recent events kept for them.\n"
                  "# TYPE natter_inbox_known_bytes gauge\nnatter_inbox_known_bytes %zu\n"
                  "# HELP natter_auth_device_checks_total Device checks of authenticated requests, by whether"
                  " the cache answered.\n"
                  "# TYPE natter_auth_device_checks_total counter\n"
                  "natter_auth_device_checks_total{result=\"cached\"} %llu\n"
                  "natter_auth_device_checks_total{result=\"queried\"} %llu\n"
                  "# HELP natter_db_statements_total SQL statements run for requests (pooled connections).\n"
                  "# TYPE natter_db_statements_total counter\nnatter_db_statements_total %llu\n"
                  "# HELP natter_poll_notes_dropped_total Poll marks for Redis dropped (queue full or Redis"
                  " down).\n"
                  "# TYPE natter_poll_notes_dropped_total counter\nnatter_poll_notes_dropped_total %llu\n"
                  "# HELP natter_bus_subscribed 1 while this process is subscribed to the Redis bus (wake-ups"
                  " from other instances arrive).\n"
                  "# TYPE natter_bus_subscribed gauge\nnatter_bus_subscribed %d\n"
                  "# HELP natter_log_lines_written_total Log lines the asynchronous writer wrote.\n"
                  "# TYPE natter_log_lines_written_total counter\nnatter_log_lines_written_total %llu\n"
                  "# HELP natter_log_lines_dropped_total Log lines dropped because the log buffer was full.\n"
                  "# TYPE natter_log_lines_dropped_total counter\nnatter_log_lines_dropped_total %llu\n",
                  mem, dbq, known, known_bytes, hits, misses, db_statements(), presence_notes_dropped(),
                  bus_connected() ? 1 : 0, log_written(), log_dropped());
    unsigned long long bus_pub, bus_recv;
    bus_stats(&bus_pub, &bus_recv);
    strbuf_printf(&sb,
                  "# HELP natter_bus_messages_total Redis pub/sub messages of the wake-up bus, published by"
                  " this process and received by it (its own included: routed to the users it knows).\n"
                  "# TYPE natter_bus_messages_total counter\n"
                  "natter_bus_messages_total{direction=\"published\"} %llu\n"
                  "natter_bus_messages_total{direction=\"received\"} %llu\n"
                  "# HELP natter_bus_routed_users Users whose bus channel this process is subscribed to.\n"
                  "# TYPE natter_bus_routed_users gauge\nnatter_bus_routed_users %zu\n",
                  bus_pub, bus_recv, hub_routed_count());
    jobs_metrics(r->app, &sb);
    size_t len;
    char *buf = req_own(r, strbuf_take(&sb, &len));
    return reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len, true);
}

int health_openapi(struct req *r)
{
    return reply_text(r, 200, "application/yaml", r->app->openapi, r->app->openapi_len, false);
}
