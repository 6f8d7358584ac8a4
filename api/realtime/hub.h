/*
 * hub.h — long-poll waiters ("blocked clients", after Redis's blocked.c).
 *
 * API overview
 *   hub_gen(user)          read the user's wake generation BEFORE querying the inbox
 *   hub_block(r, …, gen)   inside the access handler: register a waiter and
 *                          MHD_suspend_connection() it, unless the generation moved
 *                          since hub_gen() (an event was committed meanwhile:
 *                          returns HUB_MOVED and the caller queries again). No thread is
 *                          held while suspended.
 *   hub_wake(user, seq)    an inbox event up to seq was committed for user
 *   hub_ephemeral(user, e) hand a not-stored event (typing, presence) to the
 *                          user's waiting polls; kept ~3 s for devices between
 *                          two polls, then forgotten
 *   hub_revoke(user, dev)  the device was signed out: its poll ends with 401
 *   hub_stop()             shutdown: every waiter answers at once
 * A woken waiter is removed from the hub and its connection resumed; MHD then
 * calls the request's resume_fn (events.c), which reads w->state and answers.
 *
 * Every waiter has its own deadline (MHD never times out a suspended
 * connection): a timer thread resumes expired ones, and every 2 s also peeks
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
#include <stddef.h>
#include <stdint.h>

struct req;

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
};

void hub_init(void);
/* Starts the timer thread. */
int hub_start(void);
/* Resumes every waiter (W_SHUTDOWN) and stops the timer thread. */
void hub_stop(void);

uint64_t hub_gen(int64_t user_id);
enum hub_block {
    HUB_SUSPENDED, /* the waiter is registered and the connection suspended */
    HUB_MOVED,     /* the generation moved since hub_gen(): query again */
    HUB_MISSED,    /* not suspended: ephemeral events the device missed
                    * between polls are in w->ephemeral (answer now) */
    HUB_STOPPING,  /* shutting down: answer empty */
};
enum hub_block hub_block(struct req *r, struct waiter *w, uint64_t gen, int timeout_s);
void hub_wake(int64_t user_id, int64_t seq);
/* ev is borrowed (each waiter gets a reference). */
void hub_ephemeral(int64_t user_id, json_t *ev);
void hub_revoke(int64_t user_id, int64_t device_id);
/* The device polls elsewhere (another instance): its poll here answers empty. */
void hub_replace(int64_t user_id, int64_t device_id);
size_t hub_count(void);
/* Snapshot of (user id, smallest since) of waiting users: owned arrays. */
size_t hub_waiting(int64_t **users, int64_t **since);

#endif
