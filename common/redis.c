/*
 * redis.c — hiredis context pool (see redis.h).
 */
#include "redis.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <curl/curl.h>

#include "log.h"
#include "util.h"

struct redis_pool {
    pthread_mutex_t mu;
    struct redis_addr addr; /* where and as whom */
    int size;               /* max idle contexts kept */
    int nidle;
    redisContext **idle;
    uint64_t last_fail_log_us;
    uint64_t down_until_us; /* connect attempts are skipped until then */
};

/* One URL component (owned, NULL when absent), percent-decoded when decode. */
static char *url_part(CURLU *u, CURLUPart what, bool decode)
{
    char *v = NULL;
    if (curl_url_get(u, what, &v, decode ? CURLU_URLDECODE : 0) != CURLUE_OK)
        return NULL;
    char *out = xstrdup(v);
    curl_free(v);
    return out;
}

void redis_addr_free(struct redis_addr *a)
{
    free(a->host);
    free(a->path);
    free(a->username);
    if (a->password)
        memset(a->password, 0, strlen(a->password));
    free(a->password);
    memset(a, 0, sizeof *a);
}

int redis_url_parse(const char *url, struct redis_addr *a, char **err)
{
    memset(a, 0, sizeof *a);
    *err = NULL;
    a->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        if (!url[7]) {
            *err = xasprintf("NATTER_REDIS_URL: empty unix socket path");
            return -1;
        }
        a->path = xstrdup(url + 7);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        *err = xasprintf("NATTER_REDIS_URL: must start with redis:// or unix://");
        return -1;
    }
    /* libcurl parses the authority (IPv6 literals, user:password, port) and
     * percent-decodes the credentials: no hand-written parser */
    CURLU *u = curl_url();
    char *port = NULL, *path = NULL, *extra = NULL;
    int rc = -1;
    if (!u) {
        *err = xasprintf("NATTER_REDIS_URL: out of memory");
        goto out;
    }
    CURLUcode cc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (cc != CURLUE_OK) {
        *err = xasprintf("NATTER_REDIS_URL: %s", curl_url_strerror(cc));
        goto out;
    }
    if ((extra = url_part(u, CURLUPART_QUERY, false)) || (extra = url_part(u, CURLUPART_FRAGMENT, false))) {
        *err = xasprintf("NATTER_REDIS_URL: no query or fragment allowed");
        goto out;
    }
    a->host = url_part(u, CURLUPART_HOST, false);
    if (!a->host || !*a->host) {
        *err = xasprintf("NATTER_REDIS_URL: missing host");
        goto out;
    }
    if (a->host[0] == '[') { /* hiredis wants the bare IPv6 address */
        size_t n = strlen(a->host);
        memmove(a->host, a->host + 1, n - 2);
        a->host[n - 2] = '\0';
    }
    if ((port = url_part(u, CURLUPART_PORT, false))) {
        int64_t v;
        if (!parse_i64(port, &v) || v < 1 || v > 65535) {
            *err = xasprintf("NATTER_REDIS_URL: bad port");
            goto out;
        }
        a->port = (int)v;
    }
    a->username = url_part(u, CURLUPART_USER, true);
    a->password = url_part(u, CURLUPART_PASSWORD, true);
    if (a->username && !*a->username) { /* redis://:password@host: the default user */
        free(a->username);
        a->username = NULL;
    }
    if (a->username && !a->password) { /* redis://password@host (redis-py reads it so too) */
        a->password = a->username;
        a->username = NULL;
    }
    path = url_part(u, CURLUPART_PATH, true);
    if (path && path[0] == '/' && path[1]) {
        int64_t db;
        if (!parse_i64(path + 1, &db) || db < 0 || db > 1000) {
            *err = xasprintf("NATTER_REDIS_URL: bad database number");
            goto out;
        }
        a->db = (int)db;
    }
    rc = 0;
out:
    free(extra);
    free(port);
    free(path);
    if (u)
        curl_url_cleanup(u);
    if (rc < 0)
        redis_addr_free(a);
    return rc;
}

struct redis_pool *redis_pool_new(const char *url, int size, char **err)
{
    struct redis_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    *err = NULL;
    if (redis_url_parse(url, &p->addr, err) < 0) {
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
    redis_addr_free(&p->addr);
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
    redisContext *c = p->addr.path ? redisConnectUnixWithTimeout(p->addr.path, tv)
                                   : redisConnectWithTimeout(p->addr.host, p->addr.port, tv);
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
    if (p->addr.password && p->addr.username) /* an ACL user (Redis 6+) */
        r = redisCommand(c, "AUTH %s %s", p->addr.username, p->addr.password);
    else if (p->addr.password)
        r = redisCommand(c, "AUTH %s", p->addr.password);
    if (p->addr.password) {
        if (!r || r->type == REDIS_REPLY_ERROR)
            goto fail;
        freeReplyObject(r);
    }
    if (p->addr.db) {
        r = redisCommand(c, "SELECT %d", p->addr.db);
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
