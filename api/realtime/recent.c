/*
 * recent.c — a user's recent inbox events (see recent.h).
 */
#include "recent.h"

#include "wake.h"

#define SLOT(seq) ((size_t)((uint64_t)(seq) % RECENT_MAX))

void recent_init(struct recent *c, int64_t h)
{
    for (size_t i = 0; i < RECENT_MAX; i++)
        c->ev[i] = NULL;
    c->head = h;
    c->lo = h + 1;
}

static void drop(struct recent *c, int64_t seq, struct recent_budget *b)
{
    struct evbody *e = c->ev[SLOT(seq)];
    if (e) {
        b->used -= e->len;
        evbody_unref(e);
        c->ev[SLOT(seq)] = NULL;
    }
}

void recent_clear(struct recent *c, struct recent_budget *b)
{
    for (int64_t s = c->lo; s <= c->head; s++)
        drop(c, s, b);
    c->lo = c->head + 1;
}

static bool fits(const struct evbody *ev, const struct recent_budget *b)
{
    return ev && b->used + ev->len <= b->max;
}

static void put(struct recent *c, int64_t seq, struct evbody *ev, struct recent_budget *b)
{
    c->ev[SLOT(seq)] = evbody_ref(ev);
    b->used += ev->len;
}

bool recent_add(struct recent *c, int64_t seq, struct evbody *ev, struct recent_budget *b)
{
    if (seq <= c->head) {
        /* an older event arriving late (wake-ups from two committers or two
         * instances may cross): it can only extend the ring downwards */
        if (seq == c->lo - 1 && c->head - seq < RECENT_MAX && fits(ev, b)) {
            put(c, seq, ev, b);
            c->lo = seq;
        }
        return false;
    }
    if (seq == c->head + 1 && fits(ev, b)) {
        if (c->head - c->lo + 1 == RECENT_MAX) /* full: forget the oldest */
            drop(c, c->lo++, b);
        put(c, seq, ev, b); /* an empty ring has lo == head + 1 == seq already */
        c->head = seq;
        return true;
    }
    /* a gap (events we never saw), an id-only wake or no budget left: the
     * ring restarts at seq */
    recent_clear(c, b);
    c->head = seq;
    c->lo = seq + 1;
    if (fits(ev, b)) {
        put(c, seq, ev, b);
        c->lo = seq;
    }
    return true;
}

void recent_learn(struct recent *c, int64_t h, struct recent_budget *b)
{
    if (h == c->head)
        return;
    recent_clear(c, b);
    c->head = h;
    c->lo = h + 1;
}

int recent_take(const struct recent *c, int64_t since, int limit, struct evbody **out, int64_t *seqs)
{
    if (since >= c->head)
        return 0;
    if (since + 1 < c->lo || limit <= 0)
        return -1;
    int n = 0;
    for (int64_t s = since + 1; s <= c->head && n < limit; s++) {
        out[n] = evbody_ref(c->ev[SLOT(s)]);
        seqs[n++] = s;
    }
    return n;
}

const struct evbody *recent_get(const struct recent *c, int64_t seq)
{
    return seq >= c->lo && seq <= c->head ? c->ev[SLOT(seq)] : NULL;
}
