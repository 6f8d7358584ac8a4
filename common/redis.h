/*
 * redis.h — a small locked pool of hiredis contexts (hiredis 0.14: a context is
 * not thread-safe and never reconnects by itself).
 *
 * redis_acquire() hands out a connected context or NULL when Redis cannot be
 * reached (callers degrade: see each caller). After a failed command the
 * caller passes broken=true to redis_release() and the context is dropped, so
 * a timed-out (poisoned) context is never reused. Connect and command timeouts
 * are short: Redis is a helper, never a reason to hang a request.
 */
#ifndef NATTER_REDIS_H
#define NATTER_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>

struct redis_pool;

/* Where Redis is and as whom to log in, from NATTER_REDIS_URL. */
struct redis_addr {
    char *host;     /* TCP host (an IPv6 address without brackets), NULL for a unix socket */
    char *path;     /* unix socket path, or NULL */
    int port;       /* 6379 unless given */
    char *username; /* ACL user (AUTH user password), or NULL for the default user */
    char *password; /* percent-decoded, or NULL (no AUTH) */
    int db;         /* SELECT, 0..1000 */
};

/* Parses redis://[[user]:password@]host[:port][/db] (host may be [IPv6];
 * user and password percent-decoded; libcurl's URL parser) or
 * unix:///path/to.sock into *a (owned strings; redis_addr_free). 0, or -1
 * with an owned message in *err naming NATTER_REDIS_URL (a zeroed). */
int redis_url_parse(const char *url, struct redis_addr *a, char **err);
void redis_addr_free(struct redis_addr *a);

/* Parses url (see redis_url_parse). NULL + *err on a bad URL. */
struct redis_pool *redis_pool_new(const char *url, int size, char **err);
void redis_pool_free(struct redis_pool *p);
redisContext *redis_acquire(struct redis_pool *p);
void redis_release(struct redis_pool *p, redisContext *c, bool broken);
/* A new context outside the pool (e.g. a subscriber), with no read timeout
 * when blocking is true. NULL when Redis cannot be reached. */
redisContext *redis_connect_new(struct redis_pool *p, bool blocking);
/* One command on a pooled context; returns an owned reply or NULL on failure. */
redisReply *redis_cmd(struct redis_pool *p, const char *fmt, ...);
/* Redis answered PING. */
bool redis_ping(struct redis_pool *p);

#endif
