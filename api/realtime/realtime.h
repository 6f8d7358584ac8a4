/*
 * realtime.h — what the realtime layer (hub, bus, presence, typing) is given
 * at start-up. It knows the transport (requests it suspends and resumes,
 * post-commit hooks) and nothing of chats: callers hand it user ids, and the
 * application tells presence who a user's contacts are.
 */
#ifndef NATTER_REALTIME_H
#define NATTER_REALTIME_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct db_pool;
struct redis_pool;

struct rt_env {
    const struct config *cfg;
    struct db_pool *db; /* short borrowed connections (presence announcements) */
    struct redis_pool *redis;
    const char *instance_id; /* tells this process's own pub/sub messages apart */
    /* Who hears of user's presence changes, read on c: an owned array of *n
     * user ids, or NULL when there is nobody (or the query failed). */
    int64_t *(*contacts)(PGconn *c, int64_t user, size_t *n);
};

#endif
