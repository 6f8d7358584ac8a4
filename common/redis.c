/*
 * redis.c — hiredis context pool (see redis.h).
 */
#include "redis.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"
#include "util.h"

struct redis_pool {
    pthread_mutex_t mu;
    char *host; /* TCP host, or NULL for a unix socket */
    char *path; /* unix socket path */
    int port;
    char *password; /* AUTH, or NULL */
    int db;
    int size; /* max idle contexts kept */
    int nidle;
    redisContext **idle;
    uint64_t last_fail_log_us;
    uint64_t down_until_us; /* connect attempts are skipped until then */
};

static int parse_url(struct redis_pool *p, const char *url, char **err)
{
    if (strncmp(url, "unix://", 7) == 0) {
        if (!url[7]) {
            *err = xasprintf("NATTER_REDIS_URL: empty unix socket path");
            return -1;
        }
        p->path = xstrdup(url + 7);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        *err = xasprintf("NATTER_REDIS_URL: must start with redis:// or unix://");
        return -1;
    }
    const char *s = url + 8;
    const char *at = strrchr(s, '@');
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        const char *pw = colon ? colon + 1 : s;
        p->password = xstrndup(pw, (size_t)(at - pw));
        s = at + 1;
    }
    const char *slash = strchr(s, '/');
    size_t hostport_len = slash ? (size_t)(slash - s) : strlen(s);
    char *hp = xstrndup(s, hostport_len);
    char *colon = strrchr(hp, ':');
    p->port = 6379;
    if (colon) {
        int64_t port;
        *colon = '\0';
        if (!parse_i64(colon + 1, &port) || port < 1 || port > 65535) {
            free(hp);
            *err = xasprintf("NATTER_REDIS_URL: bad port");
            return -1;
        }
        p->port = (int)port;
    }
    if (!*hp) {
        free(hp);
        *err = xasprintf("NATTER_REDIS_URL: missing host");
        return -1;
    }
    p->host = hp;
    if (slash && slash[1]) {
        int64_t db;
        if (!parse_i64(slash + 1, &db) || db < 0 || db > 1000) {
            *err = xasprintf("NATTER_REDIS_URL: bad database number");
            return -1;
        }
        p->db = (int)db;
    }
    return 0;
}

struct redis_pool *redis_pool_new(const char *url, int size, char **err)
{
    struct redis_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    *err = NULL;
    if (parse_url(p, url, err) < 0) {
        redis_pool_free(p);
        return NULL;
    }
    p->size = size;
    p->idle = xcalloc((size_t)size, sizeof *p->idle);
    return p;
}

void redis_pool_free(struct redis_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nidle; i++)
        redisFree(p->idle[i]);
    free(p->idle);
    free(p->host);
    free(p->path);
    free(p->password);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void log_fail(struct redis_pool *p, const char *what, const char *detail)
{
    /* at most one line a second: an outage must not flood the log */
    uint64_t now = now_us();
    pthread_mutex_lock(&p->mu);
    bool log = now - p->last_fail_log_us > 1000000u || p->last_fail_log_us == 0;
    if (log)
        p->last_fail_log_us = now;
    pthread_mutex_unlock(&p->mu);
    if (log)
        nlog(LOG_WARN, "redis unavailable", json_pack("{s:s,s:s}", "op", what, "error", detail ? detail : ""));
}

static redisContext *connect_new(struct redis_pool *p)
{
    /* circuit breaker: after a failed connect, fail fast for a second instead
     * of paying the connect timeout on every request during an outage */
    pthread_mutex_lock(&p->mu);
    bool open = now_us() < p->down_until_us;
    pthread_mutex_unlock(&p->mu);
    if (open)
        return NULL;
    struct timeval tv = {0, 300000};
    redisContext *c = p->path ? redisConnectUnixWithTimeout(p->path, tv)
                              : redisConnectWithTimeout(p->host, p->port, tv);
    if (!c || c->err) {
        log_fail(p, "connect", c ? c->errstr : "alloc");
        pthread_mutex_lock(&p->mu);
        p->down_until_us = now_us() + 1000000u;
        pthread_mutex_unlock(&p->mu);
        if (c)
            redisFree(c);
        return NULL;
    }
    struct timeval cmd_tv = {1, 0};
    redisSetTimeout(c, cmd_tv);
    redisReply *r = NULL;
    if (p->password) {
        r = redisCommand(c, "AUTH %s", p->password);
        if (!r || r->type == REDIS_REPLY_ERROR)
            goto fail;
        freeReplyObject(r);
    }
    if (p->db) {
        r = redisCommand(c, "SELECT %d", p->db);
        if (!r || r->type == REDIS_REPLY_ERROR)
            goto fail;
        freeReplyObject(r);
    }
    return c;
fail:
    log_fail(p, "auth/select", r ? r->str : c->errstr);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

redisContext *redis_connect_new(struct redis_pool *p, bool blocking)
{
    redisContext *c = connect_new(p);
    if (c && blocking) {
        struct timeval none = {0, 0};
        redisSetTimeout(c, none);
    }
    return c;
}

redisContext *redis_acquire(struct redis_pool *p)
{
    redisContext *c = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->nidle > 0)
        c = p->idle[--p->nidle];
    pthread_mutex_unlock(&p->mu);
    return c ? c : connect_new(p);
}

void redis_release(struct redis_pool *p, redisContext *c, bool broken)
{
    if (!c)
        return;
    if (broken || c->err) {
        redisFree(c);
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (p->nidle < p->size) {
        p->idle[p->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (c)
        redisFree(c);
}

redisReply *redis_cmd(struct redis_pool *p, const char *fmt, ...)
{
    redisContext *c = redis_acquire(p);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r)
        log_fail(p, "command", c->errstr);
    redis_release(p, c, r == NULL);
    return r;
}

bool redis_ping(struct redis_pool *p)
{
    redisReply *r = redis_cmd(p, "PING");
    bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (r)
        freeReplyObject(r);
    return ok;
}
