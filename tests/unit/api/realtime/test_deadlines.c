/* test_deadlines.c — the hub's deadline heap: order, early removal, index bookkeeping. */
#include <stdlib.h>

#include "deadlines.h"
#include "hub.h"
#include "unit.h"

#define NW 500

/* every waiter's heap_idx points at itself, and no child is earlier than its parent */
static bool heap_ok(const struct deadlines *h)
{
    for (size_t i = 0; i < h->len; i++) {
        if (h->v[i]->heap_idx != i)
            return false;
        if (i > 0 && h->v[(i - 1) / 2]->deadline_us > h->v[i]->deadline_us)
            return false;
    }
    return true;
}

void suite_deadlines(void)
{
    static struct waiter w[NW];
    struct deadlines h = {0};
    unsigned seed = 12345;
    bool ok = true;

    for (size_t i = 0; i < NW; i++) {
        seed = seed * 1103515245u + 12345u;
        w[i].deadline_us = (seed >> 8) % 1000; /* many equal deadlines */
        deadlines_push(&h, &w[i]);
        ok = ok && heap_ok(&h);
    }
    CHECK(ok && h.len == NW);

    /* waiters woken early leave from anywhere in the heap (every third one) */
    for (size_t i = 0; i < NW; i += 3) {
        deadlines_remove(&h, &w[i]);
        ok = ok && heap_ok(&h);
    }
    CHECK(ok && h.len == NW - (NW + 2) / 3);

    /* the rest expire in deadline order (what the timer thread relies on) */
    uint64_t last = 0;
    size_t popped = 0;
    bool ordered = true, removed_absent = true;
    while (h.len > 0) {
        struct waiter *min = h.v[0];
        ordered = ordered && min->deadline_us >= last;
        removed_absent = removed_absent && (size_t)(min - w) % 3 != 0;
        last = min->deadline_us;
        deadlines_remove(&h, min);
        ok = ok && heap_ok(&h);
        popped++;
    }
    CHECK(ordered && removed_absent && ok);
    CHECK(popped == NW - (NW + 2) / 3);

    /* removing the last element, and the only one */
    deadlines_push(&h, &w[0]);
    deadlines_push(&h, &w[1]);
    deadlines_remove(&h, h.v[h.len - 1]);
    CHECK(h.len == 1 && heap_ok(&h));
    deadlines_remove(&h, h.v[0]);
    CHECK(h.len == 0);
    deadlines_free(&h);
    CHECK(h.v == NULL && h.len == 0 && h.cap == 0);
}
