/*
 * bus.h — how events reach waiting long-polls, on this instance and on every
 * other natter-api instance.
 *
 *   bus_after_commit  inbox rows were committed: wake local waiters, publish
 *                     {"w": [[user, seq], …]} on the Redis channel natter:bus
 *   bus_ephemeral     typing / presence: hand to local waiters, publish {"e": …}
 *   bus_revoke        a device was signed out: its poll ends 401, publish {"r": …}
 *
 * Every instance subscribes to natter:bus (one subscriber thread) and applies
 * what other instances publish. Redis down: a re-check thread asks PostgreSQL
 * once a second for the inbox heads of every user with a waiting poll and
 * wakes those that moved (every 10 s while Redis is up, to cover a lost
 * publish). Once the subscriber reconnects it re-checks at once. Ephemeral
 * events are best-effort and are dropped while Redis is down.
 *
 * Presence: every poll and heartbeat touches a Redis sorted set (user → last
 * seen, ms). A user entering the set came online; a sweeper (one instance at a
 * time, by a Redis lock) removes users not seen for NATTER_PRESENCE_TTL
 * seconds, writes their last_seen_at to PostgreSQL in one batch and announces
 * them offline. A reconnect inside the TTL therefore causes no offline/online
 * pair, and the database is written once per offline transition, not per poll.
 */
#ifndef NATTER_BUS_H
#define NATTER_BUS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct app;

int bus_start(struct app *a);
void bus_stop(void);

/* wakes: user/seq pairs, 2*n elements */
void bus_after_commit(struct app *a, const int64_t *wakes, size_t n);
/* ev is borrowed */
void bus_ephemeral(struct app *a, const int64_t *users, size_t n, json_t *ev);
void bus_revoke(struct app *a, int64_t user, int64_t device);
/* A poll of this device is now waiting here: end its older poll on other instances. */
void bus_polling(struct app *a, int64_t user, int64_t device);
/* false while the subscriber is disconnected (polls then rely on re-checks) */
bool bus_connected(void);

/* Marks user online now; announces the transition when they were offline,
 * using db (the caller's connection; a pooled one is taken when NULL). */
void presence_touch(struct app *a, PGconn *db, int64_t user);

#endif
