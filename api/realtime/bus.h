/*
 * bus.h — how events reach waiting long-polls, on this instance and on every
 * other natter-api instance.
 *
 *   bus_note_wake     inside a transaction: user's inbox got seq (and the
 *                     event, wake.h). Once the transaction commits (a tx.h
 *                     post-commit hook) local waiters are woken and a frame
 *                     of (user, seq, event) is published on the Redis
 *                     channel natter:bus, so that other instances answer
 *                     their polls from it too
 *   bus_ephemeral     typing / presence: give it a system-wide id (<instance
 *                     id>.<counter>), hand to local waiters, publish {"e": …}
 *   bus_claim_ephemeral  before a poll answers with ephemeral events: each is
 *                     claimed for the device in Redis (SET NX with a TTL), and
 *                     those the device already had through another instance
 *                     are dropped, so a device never gets one twice however
 *                     its polls move
 *   bus_revoke        a device was signed out: its poll ends 401, publish {"r": …}
 *
 * Every instance subscribes to natter:bus (one subscriber thread) and applies
 * what other instances publish. Redis down: a re-check thread asks PostgreSQL
 * once a second for the inbox heads of every user with a waiting poll and
 * wakes those that moved (every 10 s while Redis is up, to cover a lost
 * publish). Once the subscriber reconnects it re-checks at once. Ephemeral
 * events are best-effort and are dropped while Redis is down.
 *
 * Presence (presence.h) rides on the same channel and threads.
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

#endif
