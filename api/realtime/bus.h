/*
 * bus.h — how events reach waiting long-polls, on this instance and on every
 * other natter-api instance.
 *
 *   bus_note_wake     inside a transaction: user's inbox got seq (and the
 *                     event, wake.h). Once the transaction commits (a tx.h
 *                     post-commit hook) local waiters are woken and a frame
 *                     of (user, seq, event) is published on the user's Redis
 *                     channel natter:bus:u:<user>, so that other instances
 *                     holding the user's polls answer them from it too
 *   bus_ephemeral     typing / presence: give it a system-wide id (<instance
 *                     id>.<counter>), hand to local waiters, publish {"e": …}
 *                     on each recipient's channel
 *   bus_claim_ephemeral  before a poll answers with ephemeral events: each is
 *                     claimed for the device in Redis (SET NX with a TTL), and
 *                     those the device already had through another instance
 *                     are dropped, so a device never gets one twice however
 *                     its polls move
 *   bus_revoke        a device was signed out: its poll ends 401, publish
 *                     {"r": …} on natter:bus, the one channel every instance
 *                     hears (each may have the device in its auth cache)
 *
 * Routed, not broadcast: an instance subscribes to the channel of each user
 * it knows (hub.h: a user whose poll it answered from the database, kept
 * while the user polls here and 120 s after), and leaves it when it forgets
 * the user. One subscriber thread holds the subscriptions and applies what
 * arrives; the hub queues route changes and wakes it (an eventfd). Redis is
 * the registry: a dead instance's subscriptions vanish with its connection,
 * so nothing goes stale, and the cost per instance follows the users it
 * serves, not the number of instances.
 *
 * Nothing is lost while a route is missing: a user's head is proof ("nothing
 * newer", hub.h) only after the subscription was confirmed AND the re-check
 * read the head again (asked for at once on each confirmation). Redis down:
 * the re-check thread asks PostgreSQL once a second for the inbox heads of
 * every user with a waiting poll and wakes those that moved (every 10 s
 * while Redis is up, to cover a lost publish). Once the subscriber
 * reconnects it re-subscribes every known user and re-checks. Ephemeral
 * events are best-effort and are dropped while Redis is down.
 *
 * Presence (presence.h) rides on the same channels and threads.
 */
#ifndef NATTER_BUS_H
#define NATTER_BUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct req;
struct rt_env;

/* Registers the post-commit hook (before http_start); env must outlive the bus. 0 or -1. */
int bus_init(const struct rt_env *env);
/* Starts the subscriber, re-check and sweep threads. 0 or -1. */
int bus_start(void);
void bus_stop(void);

/* In r's open transaction: user_id's inbox got seq, whose event is ev (one
 * reference, taken over; NULL for an id-only wake). Woken after COMMIT. */
struct evbody;
void bus_note_wake(struct req *r, int64_t user_id, int64_t seq, struct evbody *ev);
/* After a COMMIT made outside a request (the send pipeline, the ack
 * flusher): wake this instance's polls, and publish for the other
 * instances. Two calls, so that the local wake-up need not wait for Redis.
 * The wakes are borrowed. */
struct wake;
void bus_wake_local(const struct wake *wakes, size_t n);
void bus_publish_wakes(const struct wake *wakes, size_t n);
/* ev is borrowed */
void bus_ephemeral(const int64_t *users, size_t n, json_t *ev);
void bus_revoke(int64_t user, int64_t device);
/* Drops from events (and ids, the parallel array of their system-wide ids;
 * both of a waiter, hub.h) those device was already given, by any instance,
 * and claims the rest for it: one pipelined round trip. Redis unreachable:
 * nothing is dropped (ephemeral events are best-effort, and without Redis
 * none travel between instances). NULL-safe. */
void bus_claim_ephemeral(int64_t device, json_t *events, json_t *ids);
/* Devices whose poll now waits here ([[user, device], …], borrowed): the
 * other instances end their older polls (presence.c batches them). */
void bus_publish_polling(json_t *ends);
/* false while the subscriber is disconnected (polls then rely on re-checks) */
bool bus_connected(void);
/* Messages this instance published on the bus (PUBLISH commands) and
 * received from it (its own included), since start. */
void bus_stats(unsigned long long *published, unsigned long long *received);

#endif
