/*
 * deadlines.c — a binary min-heap of waiters by deadline (see deadlines.h).
 */
#include "deadlines.h"

#include <stdlib.h>

#include "hub.h"
#include "util.h"

static void heap_set(struct deadlines *h, size_t i, struct waiter *w)
{
    h->v[i] = w;
    w->heap_idx = i;
}

static void heap_up(struct deadlines *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p]->deadline_us <= h->v[i]->deadline_us)
            break;
        struct waiter *t = h->v[p];
        heap_set(h, p, h->v[i]);
        heap_set(h, i, t);
        i = p;
    }
}

static void heap_down(struct deadlines *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && h->v[l]->deadline_us < h->v[m]->deadline_us)
            m = l;
        if (r < h->len && h->v[r]->deadline_us < h->v[m]->deadline_us)
            m = r;
        if (m == i)
            return;
        struct waiter *t = h->v[m];
        heap_set(h, m, h->v[i]);
        heap_set(h, i, t);
        i = m;
    }
}

void deadlines_push(struct deadlines *h, struct waiter *w)
{
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    heap_set(h, h->len++, w);
    heap_up(h, h->len - 1);
}

void deadlines_remove(struct deadlines *h, struct waiter *w)
{
    size_t i = w->heap_idx;
    struct waiter *last = h->v[--h->len];
    if (i < h->len) {
        heap_set(h, i, last);
        heap_up(h, i);
        heap_down(h, last->heap_idx);
    }
}

void deadlines_free(struct deadlines *h)
{
    free(h->v);
    *h = (struct deadlines){0};
}
