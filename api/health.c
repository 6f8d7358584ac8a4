/*
 * health.c — operational endpoints: liveness, readiness (PostgreSQL and
 * Redis), Prometheus metrics and the embedded OpenAPI document.
 */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "http.h"
#include "offload.h"
#include "redis.h"
#include "routes.h"
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

int health_metrics(struct req *r)
{
    size_t len = 0, cap = 8192;
    char *buf = xmalloc(cap);
    buf[0] = '\0';
    http_metrics_render(r->app, &buf, &len, &cap);
    int size = 0, in_use = 0;
    db_pool_stats(r->app->db, &size, &in_use);
    char tail[512];
    int n = snprintf(tail, sizeof tail,
                     "# HELP natter_db_pool_size PostgreSQL connections the pool may hold.\n"
                     "# TYPE natter_db_pool_size gauge\nnatter_db_pool_size %d\n"
                     "# HELP natter_db_pool_in_use PostgreSQL connections lent out.\n"
                     "# TYPE natter_db_pool_in_use gauge\nnatter_db_pool_in_use %d\n"
                     "# HELP natter_hash_queue_depth Requests waiting for a hashing thread.\n"
                     "# TYPE natter_hash_queue_depth gauge\nnatter_hash_queue_depth %d\n",
                     size, in_use, r->app->offload ? offload_depth(r->app->offload) : 0);
    if (len + (size_t)n + 1 > cap) {
        cap = len + (size_t)n + 1;
        buf = xrealloc(buf, cap);
    }
    memcpy(buf + len, tail, (size_t)n + 1);
    len += (size_t)n;
    req_own(r, buf);
    return reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len, true);
}

int health_openapi(struct req *r)
{
    return reply_text(r, 200, "application/yaml", r->app->openapi, r->app->openapi_len, false);
}
