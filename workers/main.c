/*
 * main.c — natter-worker: the worker pool process.
 *
 * Starts NATTER_WORKER_THREADS threads, each with its own PostgreSQL
 * connection and Redis context (neither is shareable across threads), and
 * keeps a liveness key natter:workers:<pid>@<host> (TTL 30 s, refreshed every
 * 10 s, deleted on a clean stop) so operators and tests can see the pool.
 * Jobs (push notifications, inbox cleanup, sweepers) plug into worker_loop();
 * until then each thread keeps its connections healthy, reconnecting after
 * failures with a bounded backoff. SIGINT/SIGTERM: threads finish, exit 0.
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
#include "log.h"
#include "migrate.h"
#include "redis.h"
#include "util.h"

#define HEARTBEAT_TTL_S 30
#define HEARTBEAT_EVERY_S 10
#define CHECK_EVERY_S 10

static atomic_bool stopping;
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv = PTHREAD_COND_INITIALIZER;

struct worker {
    int index;
    pthread_t thread;
    const struct config *cfg;
    struct redis_pool *redis;  /* this thread's own pool of one context */
    PGconn *db;
    bool ready_logged;
};

static const char *env_get(const char *k)
{
    return getenv(k);
}

/* Sleeps up to secs, waking early when stopping. */
static void nap(int secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += secs;
    pthread_mutex_lock(&stop_mu);
    while (!atomic_load(&stopping))
        if (pthread_cond_timedwait(&stop_cv, &stop_mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&stop_mu);
}

/* Ensures both connections are up; 0 when healthy. */
static int worker_check(struct worker *w)
{
    if (w->db) {
        PGresult *r = PQexec(w->db, "SELECT 1");
        bool ok = db_res_ok(r);
        PQclear(r);
        if (!ok) {
            nlog(LOG_WARN, "worker lost postgres; reconnecting", json_pack("{s:i}", "thread", w->index));
            PQfinish(w->db);
            w->db = NULL;
        }
    }
    if (!w->db)
        w->db = db_connect(w->cfg->database_url);
    bool redis_ok = redis_ping(w->redis);
    if (w->db && redis_ok && !w->ready_logged) {
        nlog(LOG_INFO, "worker thread ready", json_pack("{s:i}", "thread", w->index));
        w->ready_logged = true;
    }
    return w->db && redis_ok ? 0 : -1;
}

static void *worker_loop(void *arg)
{
    struct worker *w = arg;
    int backoff = 1;
    while (!atomic_load(&stopping)) {
        if (worker_check(w) == 0) {
            backoff = 1;
            nap(CHECK_EVERY_S);
        } else {
            nap(backoff);
            backoff = backoff < 8 ? backoff * 2 : 8;
        }
    }
    if (w->db)
        PQfinish(w->db);
    w->db = NULL;
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
    int started = 0;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        config_print_help("natter-worker", ROLE_WORKER);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "natter-worker: unknown argument '%s' (try --help)\n", argv[1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    log_set_service("natter-worker");
    if (sodium_init() < 0)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (config_load(&cfg, ROLE_WORKER, env_get, &err) < 0) {
        nlog(LOG_ERROR, "bad configuration", json_pack("{s:s}", "error", err));
        fprintf(stderr, "natter-worker: %s\n", err);
        free(err);
        curl_global_cleanup();
        return 1;
    }
    log_set_level((enum log_level)log_level_parse(cfg.log_level));

    main_redis = redis_pool_new(cfg.redis_url, 1, &err);
    if (!main_redis) {
        fprintf(stderr, "natter-worker: %s\n", err);
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

    workers = xcalloc((size_t)cfg.worker_threads, sizeof *workers);
    for (int i = 0; i < cfg.worker_threads; i++) {
        struct worker *w = &workers[i];
        w->index = i;
        w->cfg = &cfg;
        w->redis = redis_pool_new(cfg.redis_url, 1, &err);
        if (pthread_create(&w->thread, NULL, worker_loop, w) != 0) {
            nlog(LOG_ERROR, "cannot start worker thread", json_pack("{s:i}", "thread", i));
            redis_pool_free(w->redis);
            break;
        }
        started++;
    }
    config_log(&cfg, ROLE_WORKER);

    char host[128] = "unknown", key[200], value[256], ts[40];
    gethostname(host, sizeof host - 1);
    snprintf(key, sizeof key, "natter:workers:%d@%s", (int)getpid(), host);
    rfc3339_now(ts, sizeof ts);
    snprintf(value, sizeof value, "{\"pid\":%d,\"threads\":%d,\"started_at\":\"%s\"}", (int)getpid(), started, ts);
    nlog(LOG_INFO, "worker started", json_pack("{s:i,s:s}", "threads", started, "key", key));

    int sig = 0;
    while (started == cfg.worker_threads) {
        heartbeat(main_redis, key, value);
        struct timespec t = {HEARTBEAT_EVERY_S, 0};
        sig = sigtimedwait(&set, NULL, &t);
        if (sig == SIGINT || sig == SIGTERM)
            break;
    }
    nlog(LOG_INFO, "worker stopping", json_pack("{s:s}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    pthread_mutex_lock(&stop_mu);
    atomic_store(&stopping, true);
    pthread_cond_broadcast(&stop_cv);
    pthread_mutex_unlock(&stop_mu);
    for (int i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        redis_pool_free(workers[i].redis);
    }
    redisReply *r = redis_cmd(main_redis, "DEL %s", key);
    if (r)
        freeReplyObject(r);
    rc = started == cfg.worker_threads ? 0 : 1;
    nlog(LOG_INFO, "worker stopped", NULL);
out:
    free(err);
    free(workers);
    redis_pool_free(main_redis);
    config_free(&cfg);
    curl_global_cleanup();
    return rc;
}
