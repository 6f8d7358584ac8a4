/*
 * recent.h — what one instance knows of one user's inbox: its head (the
 * newest seq) and the last few committed events, so that a poll can be
 * answered without PostgreSQL (hub.c keeps one per user it has seen poll).
 *
 * The ring always holds a contiguous range lo..head of real, committed
 * events (each came with its wake-up): a poll whose cursor falls inside it
 * gets exactly those events, never a gap and never a repeat. Anything the
 * ring cannot prove (an id-only wake-up, a jump past head+1, a full budget)
 * empties it and the poll reads the database, which stays the truth.
 *
 * Pure logic, no locking (the hub's mutex guards it); every byte a ring
 * holds is charged to a shared budget.
 */
#ifndef NATTER_RECENT_H
#define NATTER_RECENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbody;

#define RECENT_MAX 8 /* events kept per user */

struct recent_budget {
    size_t used, max; /* bytes of event bodies held by every ring together */
};

struct recent {
    int64_t head;                  /* newest seq known */
    int64_t lo;                    /* the ring holds lo..head; empty when lo > head */
    struct evbody *ev[RECENT_MAX]; /* event seq in slot seq % RECENT_MAX (references) */
};

/* An empty ring whose head is h. */
void recent_init(struct recent *c, int64_t h);
/* Drops every event (head stays). */
void recent_clear(struct recent *c, struct recent_budget *b);
/* The committed event seq arrived (ev borrowed, NULL for an id-only wake).
 * Keeps it when it extends the ring at either end; a jump forward moves the
 * head and restarts the ring there. True when the head moved. */
bool recent_add(struct recent *c, int64_t seq, struct evbody *ev, struct recent_budget *b);
/* The database says the head is h: when it differs, the ring is emptied
 * and the head set to h. */
void recent_learn(struct recent *c, int64_t h, struct recent_budget *b);
/* The events after since, oldest first, at most limit: their bodies (new
 * references) into out[] and seqs into seqs[]. Returns how many (>= 1),
 * 0 when since >= head (nothing newer is known), -1 when the ring does not
 * hold the event after since. */
int recent_take(const struct recent *c, int64_t since, int limit, struct evbody **out, int64_t *seqs);
/* The event seq (borrowed), or NULL when the ring does not hold it. */
const struct evbody *recent_get(const struct recent *c, int64_t seq);

#endif
