/*
 * main.c — natter-api: load configuration, start, wait for a signal, stop.
 *
 *   natter-api            serve (refuses when the schema is behind)
 *   natter-api migrate    apply pending migrations and exit
 *   natter-api --routes   print the route table
 *   natter-api --help     print usage and configuration
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "acks.h"
#include "app.h"
#include "auth.h"
#include "blobstore.h"
#include "bus.h"
#include "chat.h"
#include "config.h"
#include "db.h"
#include "devcache.h"
#include "http.h"
#include "hub.h"
#include "log.h"
#include "migrate.h"
#include "ratelimit.h"
#include "readmarks.h"
#include "realtime.h"
#include "redis.h"
#include "resources.h"
#include "sends.h"
#include "util.h"
#include "webapp.h"

extern const struct embedded_file natter_openapi[];

static const char *env_get(const char *k)
{
    return getenv(k);
}

static int cmd_migrate(struct config *cfg)
{
    PGconn *c = db_connect(cfg->database_url);
    if (!c)
        return 1;
    int rc = migrate_apply(c);
    PQfinish(c);
    if (rc == 0)
        nlog(LOG_INFO, "migrations up to date", json_pack("{s:i}", "count", (int)natter_migrations_count));
    return rc == 0 ? 0 : 1;
}

static int check_schema(struct config *cfg)
{
    PGconn *c = db_connect(cfg->database_url);
    if (!c)
        return -1;
    int have = 0, want = 0;
    int st = migrate_check(c, &have, &want);
    if (st == 0 && db_detect_citus(c) < 0)
        st = -1;
    PQfinish(c);
    if (db_citus())
        nlog(LOG_INFO, "the database is a Citus coordinator: Citus statement shapes in use", NULL);
    if (st < 0) {
        nlog(LOG_ERROR, "cannot read schema_migrations", NULL);
        return -1;
    }
    if (st > 0) {
        nlog(LOG_ERROR, "schema is behind: run `natter-api migrate` first",
             json_pack("{s:i,s:i}", "database_version", have, "required_version", want));
        return -1;
    }
    return 0;
}

/* http_stop's hook, once new requests are refused: every queued send is
 * committed and answered, the pending acks are flushed, then every waiting
 * poll answers */
static void before_stop(void)
{
    sends_stop();
    readmarks_stop();
    acks_stop();
    hub_stop();
}

static int serve(struct config *cfg)
{
    int rc = 1;
    char *err = NULL;
    struct app app = {0};
    app.cfg = cfg;
    app.openapi = natter_openapi[0].data;
    app.openapi_len = natter_openapi[0].len;

    if (!cfg->production) {
        if (config_dev_secret(cfg, &err) < 0) {
            nlog(LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
            goto out;
        }
    }
    if (config_s3_secret(cfg, &err) < 0) {
        nlog(LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
        goto out;
    }
    if (check_schema(cfg) < 0)
        goto out;
    if (config_embedded_store(cfg) && blob_init(cfg) < 0)
        goto out;
    app.db = db_pool_new(cfg->database_url, cfg->db_pool_size);
    app.redis = redis_pool_new(cfg->redis_url, cfg->http_threads + cfg->hash_threads + 4, &err);
    if (!app.redis) {
        nlog(LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err));
        goto out;
    }
    auth_set_pwhash_cost(cfg->pwhash_cost);
    app.limits = rl_new((size_t)cfg->rate_table_buckets);

    /* signals are taken by sigwait in this thread only: block them before any
     * thread starts so every thread inherits the mask */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    random_hex(app.instance_id, 8);
    /* the layers, bottom up: the transport gets the routes and the hooks of
     * the layers above it; realtime registers its post-commit hook first */
    struct rt_env rt = {cfg, app.db, app.redis, app.instance_id, chat_contacts};
    struct server srv = {
        .cfg = cfg,
        .db = app.db,
        .app = &app,
        .routes = routes,
        .nroutes = routes_count,
        .authenticate = auth_authenticate,
        .admit = limits_admit,
        .slow_threads = cfg->search_max_concurrent,
        .slow_queue = cfg->search_max_concurrent,
        .raw = config_embedded_store(cfg) ? &blob_handler : NULL,
        .before_stop = before_stop,
        .fallback = webapp_serve,
    };
    webapp_init(natter_web, natter_web_count);
    hub_init();
    devcache_init(cfg->auth_cache_ttl);
    if (bus_init(&rt) < 0 || hub_start() < 0 || sends_start(cfg, app.redis) < 0)
        goto out;
    if (readmarks_start(cfg, app.redis) < 0) {
        sends_stop();
        goto out;
    }
    if (acks_start(cfg) < 0) {
        sends_stop();
        readmarks_stop();
        goto out;
    }
    if (http_start(&srv) < 0) {
        sends_stop();
        readmarks_stop();
        acks_stop();
        goto out;
    }
    if (bus_start() < 0) {
        http_stop(&srv);
        goto out;
    }
    config_log(cfg, ROLE_API);
    nlog(LOG_INFO, "instance", json_pack("{s:s}", "instance_id", app.instance_id));
    int sig = 0;
    sigwait(&set, &sig);
    nlog(LOG_INFO, "shutting down", json_pack("{s:s}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    http_stop(&srv); /* answers every waiting poll first (before_stop) */
    bus_stop();
    nlog(LOG_INFO, "stopped", NULL);
    rc = 0;
out:
    sends_free(); /* stopped by before_stop, or on the way out above */
    readmarks_free();
    devcache_free();
    free(err);
    redis_pool_free(app.redis);
    db_pool_free(app.db);
    rl_free(app.limits);
    return rc;
}

static void print_routes(void)
{
    for (size_t i = 0; i < routes_count; i++)
        printf("%s %s\n", routes[i].method, routes[i].pattern);
}

int main(int argc, char **argv)
{
    struct config cfg;
    char *err = NULL;
    const char *cmd = argc > 1 ? argv[1] : "serve";
    log_set_service("natter-api");
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        config_print_help("natter-api", ROLE_API);
        return 0;
    }
    if (strcmp(cmd, "--routes") == 0) {
        print_routes();
        return 0;
    }
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0) {
        nlog(LOG_ERROR, "unknown command (try --help)", json_pack("{s:s}", "command", cmd));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        nlog(LOG_ERROR, "libsodium failed to initialise", NULL);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (config_load(&cfg, ROLE_API, env_get, &err) < 0) {
        nlog(LOG_ERROR, "bad configuration", json_pack("{s:s}", "error", err));
        free(err);
        curl_global_cleanup();
        return 1;
    }
    log_set_level((enum log_level)log_level_parse(cfg.log_level));
    int rc = strcmp(cmd, "migrate") == 0 ? cmd_migrate(&cfg) : serve(&cfg);
    config_free(&cfg);
    curl_global_cleanup();
    return rc;
}
