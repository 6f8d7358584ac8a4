/*
 * presence.h — who is online, across every natter-api instance.
 *
 * Every poll and heartbeat touches a Redis sorted set (user → last seen, ms).
 * A user entering the set came online; a sweeper (one instance at a time, by
 * a Redis lock; it runs on the bus's sweep thread) removes users not seen for
 * NATTER_PRESENCE_TTL seconds, writes their last_seen_at to PostgreSQL in one
 * batch and announces them offline. A reconnect inside the TTL therefore
 * causes no offline/online pair, and the database is written once per
 * offline transition, not per poll. Announcements are ephemeral events (see
 * bus.h) to the user's contacts, which the application names (rt_env.contacts).
 *
 * Separately, natter:polling:<user> maps each device with a poll waiting (or
 * that just got its answer) to the time until which it counts as connected;
 * the worker sends no push to a user with any such device.
 */
#ifndef NATTER_PRESENCE_H
#define NATTER_PRESENCE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rt_env;

#define PRESENCE_SWEEP_EVERY_MS 2000

void presence_init(const struct rt_env *env);
/* Marks user online now; announces the transition when they were offline,
 * using db (the caller's connection; a pooled one is taken when NULL). */
void presence_touch(PGconn *db, int64_t user);
/* Last-seen times (epoch ms) of n users in one round trip: seen_ms[i] is -1
 * for a user not in the set, and for everyone while Redis is down. */
void presence_seen(const int64_t *users, size_t n, int64_t *seen_ms);
/* Is a user last seen at seen_ms (presence_seen) online now? */
bool presence_online(int64_t seen_ms);
#define POLL_NOTES_MS 5      /* poll marks gather this long before one batch writes them */
#define POLL_NOTES_MAX 65536 /* queued poll marks; more are dropped (and counted) */

/* Starts / stops the thread that writes poll marks (stop writes what is queued). */
int presence_start(void);
void presence_stop(void);
/* The device of user counts as connected until until_ms (natter:polling).
 * Queued: written within POLL_NOTES_MS. */
void presence_mark_polling(int64_t user, int64_t device, int64_t until_ms);
/* A poll of this device now waits here: other instances end its older poll
 * (queued like the marks; one publish per batch). */
void presence_polling(int64_t user, int64_t device);
/* Poll marks dropped (queue full or Redis down). */
unsigned long long presence_notes_dropped(void);
/* One turn of the sweeper (every PRESENCE_SWEEP_EVERY_MS); *pc is the
 * sweeper's own connection, opened on demand. */
void presence_tick(PGconn **pc);

#endif
