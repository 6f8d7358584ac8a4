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

/* Parses url (redis://[:pw@]host:port[/db] or unix:///path). NULL + *err on a bad URL. */
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
