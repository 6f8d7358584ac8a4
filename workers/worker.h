/*
 * worker.h — what the worker's modules share: the per-thread context and the
 * job protocol.
 *
 *   jobs.c      queue engine: read (XREADGROUP), reclaim (XAUTOCLAIM), ack,
 *               retry via the delayed set, dead letters, metrics
 *   push.c      the push jobs: push_message, push_flush, push_send
 *   push_*.c    providers (webhook, log, fcm, apns) and what they share (push_http.c)
 *   periodic.c  cleanup tasks and the outbox reconciler, one runner at a time
 *   ops.c       the operator listener: /metrics, /healthz, /readyz
 *   main.c      threads, signals, heartbeat, graceful stop
 */
#ifndef NATTER_WORKER_H
#define NATTER_WORKER_H

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "redis.h"

struct wctx {
    int index;
    const struct config *cfg;
    struct redis_pool *redis; /* shared pool: short commands */
    redisContext *rc;         /* this thread's own context: blocking reads + job commands */
    PGconn *db;               /* this thread's connection */
    CURL *curl;               /* this thread's handle (keeps provider connections alive) */
    char consumer[160];       /* consumer name in the group: host:pid:thread */
    const char *job_id;       /* stream id of the job being run, or NULL */
    uint64_t claimed_us;      /* when the job's claim was last renewed */
    int64_t retry_after_ms;   /* set by a job that returns RETRY or DEFER: the least delay (0 = backoff) */
};

/* Outcome of running a job. */
enum job_rc {
    JOB_DONE,    /* finished (or nothing to do): ack */
    JOB_RETRY,   /* transient failure: retry later with backoff, then dead letter */
    JOB_DEAD,    /* permanent failure: dead letter now */
    JOB_ABANDON, /* our infrastructure failed (DB/Redis): leave it pending for reclaim */
    JOB_DEFER,   /* not now (its provider's concurrency budget is taken): again after
                    retry_after_ms, not counted as an attempt (the push TTL bounds it) */
};

#define JOB_RCS 5 /* count of enum job_rc */

/* Runs one job; err receives a reason for RETRY/DEAD. Counts the run by job
 * type and outcome in this process (job_runs). */
enum job_rc push_run(struct wctx *w, json_t *job, char *err, size_t errlen);

/* This process's job figures since it started (the worker's /metrics).
 * Job types are push_run's table plus a last row, "invalid", for jobs
 * without a known type. Thread-safe. */
size_t job_types_n(void);
const char *job_type_name(size_t i);
/* "done", "retry", "dead", "abandon", "defer" */
const char *job_rc_name(enum job_rc rc);
unsigned long long job_runs(size_t type, enum job_rc rc);
/* Jobs being run by this process's threads now. */
int jobs_running(void);

/* Queue engine (jobs.c). */
void jobs_thread_loop(struct wctx *w, const atomic_bool *stopping);
/* Moves due jobs from the delayed set back to the stream. Any worker may run it. */
void jobs_move_due(struct redis_pool *p);
/* Schedules job (JSON, borrowed) to run after delay_ms. 0 or -1. */
int jobs_schedule(struct wctx *w, json_t *job, int64_t delay_ms);
/* Appends a job (raw JSON text) to the dead-letter stream with its last error. */
void jobs_dead_letter(struct wctx *w, const char *raw, const char *error, int attempts);
/* Renews the claim on the running job (XCLAIM … JUSTID resets its idle time)
 * when a third of the visibility timeout passed, so that a slow but alive
 * worker keeps its job; a dead one stops renewing and loses it. Cheap to call
 * often (a clock read). */
void jobs_keepalive(struct wctx *w);
/* Counts a metric (natter:metrics:<name>). */
void jobs_count(struct wctx *w, const char *name, long long by);
/* Backoff for attempt n (1-based): base * 2^(n-1), capped at 5 min, +/- 20% jitter. */
int64_t jobs_backoff_ms(int base_ms, int attempt);

/* Own connections of a worker thread: (re)connects as needed. */
PGconn *wctx_db(struct wctx *w);
redisContext *wctx_redis(struct wctx *w);
/* A command on the thread's context; NULL (and the context dropped) on failure. */
redisReply *wcmd(struct wctx *w, const char *fmt, ...);

#endif
