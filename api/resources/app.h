/*
 * app.h — natter-api's own state, filled by main.c (api/) and read by the
 * resources through r->app. The transport only carries the pointer (http.h); the
 * realtime layer gets what it needs in struct rt_env.
 */
#ifndef NATTER_APP_H
#define NATTER_APP_H

#include <stddef.h>

struct config;
struct db_pool;
struct ratelimit;
struct redis_pool;

struct app {
    struct config *cfg;
    struct db_pool *db;
    struct redis_pool *redis;
    struct ratelimit *limits; /* the per-user token buckets (resources/limits.c) */
    const char *openapi;      /* embedded spec */
    size_t openapi_len;
    char instance_id[17]; /* random per process: tells our own pub/sub messages apart */
};

#endif
