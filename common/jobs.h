/*
 * jobs.h — the job queue's names and the enqueue call natter-api uses.
 *
 * Jobs are JSON objects in the field `job` of entries of the Redis stream
 * natter:jobs, read by the consumer group `workers` (workers/jobs.c). Retries
 * wait in the sorted set natter:jobs:delayed (score = due time, ms); dead
 * letters go to the stream natter:jobs:dead. Counters for /metrics live
 * under natter:metrics:* so one scrape of natter-api covers every worker.
 */
#ifndef NATTER_JOBS_H
#define NATTER_JOBS_H

#include <jansson.h>
#include <stdint.h>

#include "keys.h"
#include "redis.h"

#define JOBS_STREAM KEY_JOBS_STREAM
#define JOBS_GROUP "workers"
#define JOBS_DELAYED KEY_JOBS_DELAYED
#define JOBS_DEAD KEY_JOBS_DEAD
#define JOBS_METRIC_PREFIX KEY_METRIC_PREFIX
#define JOBS_LATENCY_HASH KEY_JOB_LATENCY

/* Latency histogram bucket bounds, seconds (shared by writer and reader). */
#define JOBS_LATENCY_BUCKETS                             \
    {                                                    \
        0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300 \
    }
#define JOBS_LATENCY_NBUCKETS 11

/* Adds one job (JSON text) to the stream. 0, or -1 when Redis is unreachable. */
int jobs_enqueue(struct redis_pool *p, const char *json);

/* The job types (the worker's table in workers/push.c runs them). Every
 * job carries "type" and "enq_ms" (enqueue time, for the latency figures). */
#define JOB_PUSH_MESSAGE "push_message" /* {chat_id, seq}: count a message into its recipients' pushes */
#define JOB_PUSH_FLUSH "push_flush"     /* {user_id, flush_id, kind}: send a user's coalesced pushes */
#define JOB_PUSH_SEND "push_send"       /* {user_id, device_id, flush_id, count, chat_id, seq, badge, first_ms, kind} */
#define JOB_PUSH_BADGE                                                                   \
    "push_badge" /* {user_id, device_id, chat_id}: the user read on device: silent badge \
                    updates to the other devices */
/* push kinds (the "kind" of push_flush and push_send; absent = messages) */
#define JOB_KIND_MESSAGES "messages"
#define JOB_KIND_BADGE "badge"

/* The producers: each builds its job and enqueues it (0 or -1 as jobs_enqueue). */
int jobs_push_message(struct redis_pool *p, int64_t chat_id, int64_t seq);
/* n push_message jobs, (chat_ids[i], seqs[i]), in one round trip. 0 or -1. */
int jobs_push_messages(struct redis_pool *p, const int64_t *chat_ids, const int64_t *seqs, size_t n);
/* n push_badge jobs, (user_ids[i], device_ids[i], chat_ids[i]), in one round trip. 0 or -1. */
int jobs_push_badges(struct redis_pool *p, const int64_t *user_ids, const int64_t *device_ids, const int64_t *chat_ids,
                     size_t n);
/* For the worker, which enqueues or schedules what it builds: new references. */
json_t *job_push_flush_new(int64_t user_id, const char *flush_id, const char *kind);
json_t *job_push_send_new(int64_t user_id, int64_t device_id, const char *flush_id, int64_t count, int64_t chat_id,
                          int64_t seq, int64_t badge, int64_t first_ms, const char *kind);

#endif
