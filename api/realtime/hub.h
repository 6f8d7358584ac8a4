/*
 * hub.h — long-poll waiters ("blocked clients", after Redis's blocked.c).
 *
 * API overview
 *   hub_poll(r, w, t)      the fast path of a poll, no database: answers from
 *                          the user's recent events (HUB_EVENTS), or, when this
 *                          instance knows the user's head and the cursor is at
 *                          it, suspends (HUB_SUSPENDED) or says there is
 *                          nothing (HUB_NOTHING, timeout 0); HUB_UNKNOWN sends
 *                          the caller to the database
 *   hub_ticket(user)       read BEFORE querying the inbox (the slow path)
 *   hub_learn(user, h, t)  the database said the head is h (under ticket t)
 *   hub_block(r, …, t)     inside the access handler: register a waiter and
 *                          MHD_suspend_connection() it, unless a wake-up came
 *                          since hub_ticket() (returns HUB_MOVED and the caller
 *                          queries again). No thread is held while suspended.
 *   hub_take(user, …)      a woken poll's events from memory (or -1: database)
 *   hub_wake(wakes, n)     inbox events were committed (each may carry its
 *                          body: wake.h): kept as the users' recent events,
 *                          and their waiting polls are woken
 *   hub_recheck(user,h,t)  the database says the head is h (the re-check):
 *                          raise what we know and wake polls behind it
 *   hub_trust(up)          the bus (re)connected or lost Redis: what this
 *                          instance learned before is no longer proof
 *   hub_routes_take()      the bus subscribes to the channel of every user
 *                          this instance knows (and leaves it when the user
 *                          is forgotten): wake-ups are routed, not broadcast
 *   hub_routed(users)      the bus confirmed those subscriptions
 *   hub_ephemeral(user, e, id) hand a not-stored event (typing, presence) to
 *                          the user's waiting polls; kept ~3 s for devices
 *                          between two polls, then forgotten
 *   hub_revoke(user, dev)  the device was signed out: its poll ends with 401
 *   hub_stop()             shutdown: every waiter answers at once
 * A woken waiter is removed from the hub and its connection resumed; MHD then
 * calls the request's resume_fn (events.c), which reads w->state and answers.
 *
 * What an instance knows of a user's inbox (recent.h): the head and the last
 * few events, learned from the database and moved by every wake-up. Events
 * answered from memory are always right (each came with its commit); only
 * "nothing newer than your cursor" relies on the head being complete, so it
 * is trusted only while the bus has been connected since the head was read
 * from the database and for at most HUB_TRUST_US after that read (the bus's
 * re-check confirms the heads of waiting users every 10 s). Wake-ups reach
 * an instance only on the Redis channels of the users it knows (bus.h), so
 * a head is proof only once that user's subscription is confirmed and the
 * re-check the bus then asks for has read the head again (hub_routed); until
 * then polls wait or read the database. A wake-up lost
 * while the subscription stayed up (a publish that failed) therefore delays
 * the user's events by at most one re-check, never loses them.

 * Every waiter has its own deadline (MHD never times out a suspended
 * connection): a timer thread resumes expired ones, and every 5 s also peeks
 * at each waiter's socket so that a client that went away is freed without
 * waiting for its deadline.
 *
 * Locking: one mutex guards the user table, the deadline heap and the
 * generations. Waiters are suspended while it is held (so a wake can never
 * run before the suspend) and resumed after it is released.
 */
#ifndef NATTER_HUB_H
#define NATTER_HUB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "recent.h"

struct req;
struct wake;
struct evbody;

#define HUB_TRUST_US 60000000u /* a head read from the database is proof for this long */

enum waiter_state {
    W_WAITING = 0,
    W_WOKEN,    /* events committed (or ephemeral events attached) */
    W_TIMEOUT,  /* deadline passed */
    W_REPLACED, /* the same device polled again */
    W_REVOKED,  /* the device was signed out */
    W_GONE,     /* the client closed its connection */
    W_SHUTDOWN, /* the server is stopping */
};

struct waiter {
    struct req *r;
    int64_t user_id, device_id;
    int64_t since; /* events after this seq are wanted */
    int limit;
    uint64_t deadline_us;
    size_t heap_idx;
    struct waiter *next; /* in the user's bucket */
    enum waiter_state state;
    json_t *ephemeral; /* array of not-stored events, or NULL (owned) */
    json_t *eph_ids;   /* their system-wide ids (strings, same order), or NULL (owned) */
};

void hub_init(void);
/* Starts the timer thread. */
int hub_start(void);
/* Resumes every waiter (W_SHUTDOWN) and stops the timer thread. */
void hub_stop(void);

/* The user's bucket generation and the trust epoch, read before a query. */
struct hub_ticket {
    uint64_t gen, epoch;
};
struct hub_ticket hub_ticket(int64_t user_id);

enum hub_block {
    HUB_SUSPENDED, /* the waiter is registered and the connection suspended */
    HUB_MOVED,     /* a wake-up came since hub_ticket(): query again */
    HUB_MISSED,    /* not suspended: ephemeral events the device missed
                    * between polls are in w->ephemeral (answer now) */
    HUB_STOPPING,  /* shutting down: answer empty */
    HUB_EVENTS,    /* hub_poll: the events after w->since are in the hub_events */
    HUB_NOTHING,   /* hub_poll with timeout 0: nothing after w->since */
    HUB_UNKNOWN,   /* hub_poll: not known here, ask the database */
};

/* What a poll's ack newly covers, from memory (chat/acks.h): every message
 * event of the user's inbox in (from, since], `from` being the since of the
 * device's previous poll here; from -1 when memory cannot tell. */
struct ack_hint {
    int64_t seq;        /* the inbox event */
    int64_t chat, mseq; /* its message */
    int64_t sender;     /* 0: a system message */
};
struct ack_hints {
    int64_t from;
    bool repeat; /* this device's previous poll here had the same since: nothing new to ack */
    int n;
    struct ack_hint h[RECENT_MAX];
};

/* Events answered from memory: references the caller gives back with
 * hub_events_release. */
struct hub_events {
    int n;
    struct evbody *ev[RECENT_MAX];
    int64_t seq[RECENT_MAX];
};
void hub_events_release(struct hub_events *e);

/* Also fills *hints for the ack of w->since (from -1 when unknown). */
enum hub_block hub_poll(struct req *r, struct waiter *w, int timeout_s, struct hub_events *out,
                        struct ack_hints *hints);
enum hub_block hub_block(struct req *r, struct waiter *w, struct hub_ticket t, int timeout_s);
void hub_learn(int64_t user_id, int64_t head, struct hub_ticket t);
/* A woken poll's events after since from memory: n >= 1, 0 when nothing
 * newer exists (trusted), -1 when the database must be asked. */
int hub_take(int64_t user_id, int64_t device_id, int64_t since, int limit, struct hub_events *out);
/* The device polled with since and was answered from the database with
 * cursor next (see struct known in hub.c: memory answers only polls at or
 * past its cursor, and hints an ack from its previous since). */
void hub_answered(int64_t user_id, int64_t device_id, int64_t since, int64_t next);
/* Borrowed wakes (hub takes its own references to the bodies it keeps). */
void hub_wake(const struct wake *w, size_t n);
/* The re-check read head from the database under ticket t (only its epoch
 * matters: a head is only ever raised here). */
void hub_recheck(int64_t user_id, int64_t head, struct hub_ticket t);
void hub_trust(bool up);
/* ev is borrowed (each waiter gets a reference); id is its system-wide id
 * (bus.h: the device's answer claims it, so it is delivered once however the
 * device's polls move between instances), copied. */
void hub_ephemeral(int64_t user_id, json_t *ev, const char *id);
void hub_revoke(int64_t user_id, int64_t device_id);
/* The device polls elsewhere (another instance): its poll here answers empty. */
void hub_replace(int64_t user_id, int64_t device_id);
size_t hub_count(void);
/* Routes: subscribe (on) to or leave a user's bus channel. */
struct hub_route {
    int64_t user;
    bool on;
};
/* notify is called (with the hub's lock held: it must not block or call
 * back) whenever a route change is queued. */
void hub_set_route_notify(void (*notify)(void));
/* The route changes queued since the last call, in order: an owned array. */
size_t hub_routes_take(struct hub_route **out);
/* The bus (re)subscribed: every known user is unrouted and queued again. */
void hub_routes_reset(void);
/* The bus confirmed these users' subscriptions: their heads become proof
 * after the next re-check. */
void hub_routed(const int64_t *users, size_t n);
/* Users whose channel this instance is subscribed to. */
size_t hub_routed_count(void);
/* Frees w's ephemeral events and their ids. */
void hub_waiter_clear(struct waiter *w);
/* Users with a waiting poll (each once): an owned array. */
size_t hub_waiting(int64_t **users);
/* Users whose inbox this instance remembers, and bytes of events held. */
size_t hub_known(size_t *bytes);

#endif
