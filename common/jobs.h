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

#include <stdint.h>

#include "redis.h"

#define JOBS_STREAM "natter:jobs"
#define JOBS_GROUP "workers"
#define JOBS_DELAYED "natter:jobs:delayed"
#define JOBS_DEAD "natter:jobs:dead"
#define JOBS_METRIC_PREFIX "natter:metrics:"
#define JOBS_LATENCY_HASH "natter:metrics:job_latency"
#define POLLING_PREFIX "natter:polling:" /* + user id: {device: online-until ms} */

/* Latency histogram bucket bounds, seconds (shared by writer and reader). */
#define JOBS_LATENCY_BUCKETS {0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
#define JOBS_LATENCY_NBUCKETS 11

/* Adds one job (JSON text) to the stream. 0, or -1 when Redis is unreachable. */
int jobs_enqueue(struct redis_pool *p, const char *json);

#endif
