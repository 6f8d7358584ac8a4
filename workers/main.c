/*
 * main.c — natter-worker: the worker pool process.
 *
 * NATTER_WORKER_THREADS job threads, each with its own PostgreSQL connection,
 * Redis context and curl handle (none of them is shareable across threads),
 * run jobs from the stream natter:jobs (jobs.c, push.c). The main thread
 * handles signals and, every 100 ms, moves due retries back to the stream and
 * runs the periodic tasks that are due (periodic.c); every 10 s it refreshes
 * the liveness key natter:workers:<pid>@<host> (TTL 30 s, deleted on a clean
 * stop). The operator listener (ops.c, NATTER_WORKER_LISTEN) serves this
 * process's /metrics, /healthz and /readyz from a thread of its own.
 * SIGINT/SIGTERM: the listener stops, threads finish the job in hand (bounded
 * by the push timeout) and the process exits 0. Any number of worker
 * processes may run (each with its own listener port).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "config.h"
#include "db.h"
#include "keys.h"
#include "log.h"
#include "migrate.h"
#include "ops.h"
#include "periodic.h"
#include "push.h"
#include "redis.h"
#include "util.h"
#include "worker.h"

#define HEARTBEAT_TTL_S 30
#define HEARTBEAT_EVERY_MS 10000
#define TICK_MS 100

static atomic_bool stopping;

struct worker {
    pthread_t thread;
    struct wctx ctx;
};

static const char *env_get(const char *k)
{
    return getenv(k);
}

static void *worker_main(void *arg)
{
    struct wctx *w = arg;
    /* connect both before saying ready; the loop reconnects by itself later */
    while (!atomic_load(&stopping) && (!wctx_db(w) || !wctx_redis(w)))
        usleep(500000);
    if (!atomic_load(&stopping))
        nlog(LOG_INFO, "worker thread ready", json_pack("{s:i,s:s}", "thread", w->index, "consumer", w->consumer));
    jobs_thread_loop(w, &stopping);
    if (w->db)
        PQfinish(w->db);
    if (w->rc)
        redisFree(w->rc);
    w->db = NULL;
    w->rc = NULL;
    return NULL;
}

static void heartbeat(struct redis_pool *rp, const char *key, const char *value)
{
    redisReply *r = redis_cmd(rp, "SET %s %s EX %d", key, value, HEARTBEAT_TTL_S);
    if (r)
        freeReplyObject(r);
}

int main(int argc, char **argv)
{
    struct config cfg;
    char *err = NULL;
    int rc = 1;
    struct worker *workers = NULL;
    struct redis_pool *main_redis = NULL;
    struct periodic *periodic = NULL;
    struct ops *ops = NULL;
    int started = 0;
    log_set_service("natter-worker");

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        config_print_help("natter-worker", ROLE_WORKER);
        return 0;
    }
    if (argc > 1) {
        nlog(LOG_ERROR, "unknown argument (try --help)", json_pack("{s:s}", "argument", argv[1]));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        nlog(LOG_ERROR, "libsodium failed to initialise", NULL);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (config_load(&cfg, ROLE_WORKER, env_get, &err) < 0) {
        nlog(LOG_ERROR, "bad configuration", json_pack("{s:s}", "error", err));
        free(err);
        curl_global_cleanup();
        return 1;
    }
    log_set_level((enum log_level)log_level_parse(cfg.log_level));

    if (push_providers_init(&cfg, &err) < 0) {
        nlog(LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
        goto out;
    }
    if (config_s3_secret(&cfg, &err) < 0) {
        nlog(LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
        goto out;
    }
    main_redis = redis_pool_new(cfg.redis_url, 4, &err);
    if (!main_redis) {
        nlog(LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
        goto out;
    }
    {
        PGconn *c = db_connect(cfg.database_url);
        int have = 0, want = 0;
        int st = c ? migrate_check(c, &have, &want) : -1;
        if (c)
            PQfinish(c);
        if (st != 0) {
            nlog(LOG_ERROR, st > 0 ? "schema is behind: run `natter-api migrate` first" : "cannot check schema",
                 json_pack("{s:i,s:i}", "database_version", have, "required_version", want));
            goto out;
        }
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* after the mask: the listener's thread must not take SIGINT/SIGTERM either */
    struct ops_env oenv = {.cfg = &cfg, .redis = main_redis, .threads = cfg.worker_threads};
    if (ops_start(&oenv, &ops) < 0)
        goto out;

    char host[128] = "unknown", key[200], value[256], ts[40];
    gethostname(host, sizeof host - 1);
    workers = xcalloc((size_t)cfg.worker_threads, sizeof *workers);
    for (int i = 0; i < cfg.worker_threads; i++) {
        struct wctx *w = &workers[i].ctx;
        w->index = i;
        w->cfg = &cfg;
        w->redis = main_redis;
        w->curl = curl_easy_init();
        snprintf(w->consumer, sizeof w->consumer, "%s:%d:%d", host, (int)getpid(), i);
        if (!w->curl || pthread_create(&workers[i].thread, NULL, worker_main, w) != 0) {
            nlog(LOG_ERROR, "cannot start worker thread", json_pack("{s:i}", "thread", i));
            if (w->curl)
                curl_easy_cleanup(w->curl);
            break;
        }
        started++;
    }
    periodic = periodic_new(&cfg, main_redis);
    config_log(&cfg, ROLE_WORKER);

    snprintf(key, sizeof key, KEY_WORKERS_PREFIX "%d@%s", (int)getpid(), host);
    rfc3339_now(ts, sizeof ts);
    snprintf(value, sizeof value, "{\"pid\":%d,\"threads\":%d,\"started_at\":\"%s\"}", (int)getpid(), started, ts);
    nlog(LOG_INFO, "worker started", json_pack("{s:i,s:s}", "threads", started, "key", key));

    int sig = 0;
    uint64_t next_beat = 0;
    while (started == cfg.worker_threads) {
        if (now_us() >= next_beat) {
            heartbeat(main_redis, key, value);
            next_beat = now_us() + HEARTBEAT_EVERY_MS * 1000u;
        }
        jobs_move_due(main_redis);
        periodic_tick(periodic);
        struct timespec t = {0, TICK_MS * 1000000L};
        sig = sigtimedwait(&set, NULL, &t);
        if (sig == SIGINT || sig == SIGTERM)
            break;
    }
    nlog(LOG_INFO, "worker stopping", json_pack("{s:s}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    ops_stop(ops);
    ops = NULL;
    atomic_store(&stopping, true);
    for (int i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        curl_easy_cleanup(workers[i].ctx.curl);
    }
    redisReply *r = redis_cmd(main_redis, "DEL %s", key);
    if (r)
        freeReplyObject(r);
    rc = started == cfg.worker_threads ? 0 : 1;
    nlog(LOG_INFO, "worker stopped", NULL);
out:
    ops_stop(ops);
    periodic_free(periodic);
    free(err);
    free(workers);
    redis_pool_free(main_redis);
    config_free(&cfg);
    curl_global_cleanup();
    return rc;
}
