/*
 * ops.h — natter-worker's operator HTTP listener (NATTER_WORKER_LISTEN).
 *
 *   GET /metrics   Prometheus text 0.0.4: this process's figures since it
 *                  started (pushes per provider and outcome, job runs per
 *                  type and outcome, jobs running, provider calls in flight)
 *   GET /healthz   200 {"status":"ok"} while the process runs
 *   GET /readyz    200 when PostgreSQL and Redis answer, else 503 not_ready
 *
 * HEAD is answered like GET without the body; any other method is 405
 * method_not_allowed, any other path 404 not_found (problem+json, the codes
 * natter-api uses). One libmicrohttpd thread of its own, a bounded number of
 * connections and an idle timeout: an operator's tool, never in a job's way.
 */
#ifndef NATTER_OPS_H
#define NATTER_OPS_H

#include "config.h"
#include "redis.h"

struct ops;

struct ops_env {
    const struct config *cfg; /* borrowed for the listener's life: address, database URL */
    struct redis_pool *redis; /* borrowed: /readyz pings Redis through it */
    int threads;              /* job threads started (natter_worker_threads) */
};

/* Starts the listener on cfg->worker_listen; nothing when that is empty (0,
 * *out NULL). 0, or -1 (logged: the address cannot be bound). *env is copied. */
int ops_start(const struct ops_env *env, struct ops **out);

/* Stops the listener (its thread is joined, its connections closed) and frees
 * it. NULL-safe. */
void ops_stop(struct ops *o);

#endif
