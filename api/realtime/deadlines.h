/*
 * deadlines.h — the hub's waiters ordered by deadline: a binary min-heap in
 * which each waiter knows its own index (waiter.heap_idx), so that a waiter
 * woken early leaves in O(log n). The timer thread answers v[0] once its
 * deadline passes. Not locked: the hub's mutex guards it.
 */
#ifndef NATTER_DEADLINES_H
#define NATTER_DEADLINES_H

#include <stddef.h>

struct waiter;

struct deadlines {
    struct waiter **v; /* v[0] has the earliest deadline_us */
    size_t len, cap;
};

void deadlines_push(struct deadlines *h, struct waiter *w);
/* w must be in h. */
void deadlines_remove(struct deadlines *h, struct waiter *w);
void deadlines_free(struct deadlines *h);

#endif
