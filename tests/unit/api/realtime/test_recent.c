/* test_recent.c — a user's recent inbox events (recent.c) and event bodies
 * (wake.c): the ring only ever answers a contiguous range of real events;
 * out-of-order, id-only, oversized and over-budget wake-ups fall back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recent.h"
#include "unit.h"
#include "wake.h"

static struct evbody *body(int64_t seq)
{
    char data[64];
    int n = snprintf(data, sizeof data, "{\"n\":%lld}", (long long)seq);
    struct evmeta m = {seq, 100 + seq};
    return evbody_new("message", 7, "2026-12-06T10:00:00.000Z", data, (size_t)n, &m);
}

/* the events take() answers after since: their seqs, or -1 / 0 */
static int take_seqs(struct recent *c, int64_t since, int limit, int64_t *seqs)
{
    struct evbody *out[RECENT_MAX];
    int n = recent_take(c, since, limit, out, seqs);
    for (int i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"data\":{\"n\":%lld}}", (long long)seqs[i]);
        CHECK(strstr(out[i]->text, want) != NULL); /* the body is the event of that seq */
        evbody_unref(out[i]);
    }
    return n;
}

static void add(struct recent *c, int64_t seq, struct recent_budget *b)
{
    struct evbody *e = body(seq);
    recent_add(c, seq, e, b);
    evbody_unref(e);
}

static void test_bodies(void)
{
    evbody_set_max(8192);
    struct evmeta none = {0, 0};
    struct evbody *e = evbody_new("receipt", 0, "2026-12-06T10:00:00.000Z", "{\"a\":1}", 7, &none);
    CHECK(e && e->meta && e->mseq == 0 && e->chat_id == 0);
    CHECK(e && strcmp(e->text,
                      "\"type\":\"receipt\",\"chat_id\":null,\"created_at\":\"2026-12-06T10:00:00.000Z\","
                      "\"data\":{\"a\":1}}") == 0);
    CHECK(e && e->len == strlen(e->text));
    struct evbody *f = evbody_from_text(e->text, e->len, 9, NULL);
    CHECK(f && f->len == e->len && memcmp(f->text, e->text, e->len) == 0);
    CHECK(f && !f->meta && f->chat_id == 9);
    evbody_unref(f);
    CHECK(evbody_ref(e) == e);
    evbody_unref(e);
    evbody_unref(e);
    evbody_unref(NULL);
    /* past the bound: id-only */
    evbody_set_max(40);
    CHECK(evbody_new("message", 1, "2026-12-06T10:00:00.000Z", "{\"a\":1}", 7, NULL) == NULL);
    CHECK(evbody_from_text("0123456789012345678901234567890123456789x", 41, 1, NULL) == NULL);
    evbody_set_max(0);
    CHECK(evbody_new("m", 1, "t", "1", 1, NULL) == NULL);
    evbody_set_max(8192);
    CHECK(evbody_from_text("", 0, 1, NULL) == NULL);
}

void suite_recent(void)
{
    test_bodies();
    struct recent_budget b = {0, 1 << 20};
    struct recent c;
    int64_t s[RECENT_MAX];

    /* in order: each event extends the ring */
    recent_init(&c, 10);
    CHECK(take_seqs(&c, 10, 100, s) == 0); /* nothing after the head */
    CHECK(take_seqs(&c, 9, 100, s) == -1); /* not held */
    add(&c, 11, &b);
    add(&c, 12, &b);
    CHECK(c.head == 12);
    CHECK(take_seqs(&c, 10, 100, s) == 2 && s[0] == 11 && s[1] == 12);
    CHECK(take_seqs(&c, 11, 100, s) == 1 && s[0] == 12);
    CHECK(take_seqs(&c, 10, 1, s) == 1 && s[0] == 11); /* limit */
    CHECK(take_seqs(&c, 12, 100, s) == 0);
    CHECK(take_seqs(&c, 13, 100, s) == 0); /* beyond the head: nothing known */

    /* a repeat changes nothing */
    add(&c, 12, &b);
    add(&c, 11, &b);
    CHECK(c.head == 12 && take_seqs(&c, 10, 100, s) == 2);

    /* a gap: 14 before 13. The ring restarts at 14; 13 arriving late is
     * prepended; nothing is answered across the hole meanwhile */
    add(&c, 14, &b);
    CHECK(c.head == 14);
    CHECK(take_seqs(&c, 12, 100, s) == -1);
    CHECK(take_seqs(&c, 13, 100, s) == 1 && s[0] == 14);
    add(&c, 13, &b);
    CHECK(take_seqs(&c, 12, 100, s) == 2 && s[0] == 13 && s[1] == 14);
    CHECK(take_seqs(&c, 11, 100, s) == -1); /* 12 was dropped with the restart */

    /* an id-only wake (too large): head moves, ring empty, the database answers */
    recent_add(&c, 15, NULL, &b);
    CHECK(c.head == 15);
    CHECK(take_seqs(&c, 14, 100, s) == -1);
    CHECK(take_seqs(&c, 15, 100, s) == 0);
    add(&c, 16, &b);
    CHECK(take_seqs(&c, 15, 100, s) == 1 && s[0] == 16);
    CHECK(take_seqs(&c, 14, 100, s) == -1);

    /* the ring keeps the last RECENT_MAX events */
    for (int64_t q = 17; q < 17 + 2 * RECENT_MAX; q++)
        add(&c, q, &b);
    int64_t top = 16 + 2 * RECENT_MAX;
    CHECK(c.head == top);
    CHECK(take_seqs(&c, top - RECENT_MAX, 100, s) == RECENT_MAX && s[0] == top - RECENT_MAX + 1);
    CHECK(take_seqs(&c, top - RECENT_MAX - 1, 100, s) == -1);

    /* the database says otherwise: everything is forgotten */
    recent_learn(&c, top, &b); /* the same head: kept */
    CHECK(take_seqs(&c, top - 1, 100, s) == 1);
    recent_learn(&c, top + 3, &b);
    CHECK(c.head == top + 3 && take_seqs(&c, top, 100, s) == -1 && take_seqs(&c, top + 3, 100, s) == 0);
    recent_clear(&c, &b);
    CHECK(b.used == 0); /* every byte charged was given back */

    /* the budget: an event that does not fit is treated as id-only */
    struct recent_budget small = {0, 100};
    recent_init(&c, 0);
    add(&c, 1, &small); /* ~80 bytes */
    CHECK(take_seqs(&c, 0, 100, s) == 1);
    add(&c, 2, &small); /* does not fit beside 1: the ring restarts at 2 */
    CHECK(c.head == 2 && take_seqs(&c, 1, 100, s) == 1 && s[0] == 2 && take_seqs(&c, 0, 100, s) == -1);
    CHECK(small.used > 0 && small.used <= small.max);
    struct recent other;
    recent_init(&other, 0);
    add(&other, 1, &small); /* the shared budget is spent: id-only */
    CHECK(other.head == 1 && take_seqs(&other, 0, 100, s) == -1);
    recent_clear(&c, &small);
    recent_clear(&other, &small);
    CHECK(small.used == 0);
}

/* the bus frame (wake.c): a round trip keeps every wake, shares a fan-out's
 * body, sends bodies past the budget id-only, and a damaged frame is refused
 * whole */
void suite_wake_frame(void)
{
    evbody_set_max(8192);
    struct evbody *a = body(1), *big = evbody_new("edit", 8, "2026-12-06T10:00:00.000Z", "{\"b\":2}", 7, NULL);
    struct wake in[5] = {{10, 1, a}, {11, 7, a}, {12, 3, a}, {13, 4, NULL}, {14, 9, big}};
    size_t len;
    char *text = wakes_encode("inst-1", in, 5, 200, &len);
    const char *inst;
    size_t ilen;
    struct wake *out;
    long n = wakes_decode(text, len, &inst, &ilen, &out);
    CHECK(n == 5);
    CHECK(ilen == 6 && memcmp(inst, "inst-1", 6) == 0);
    for (long i = 0; n == 5 && i < 5; i++)
        CHECK(out[i].user == in[i].user && out[i].seq == in[i].seq);
    if (n == 5) {
        CHECK(out[0].ev && out[0].ev->len == a->len && memcmp(out[0].ev->text, a->text, a->len) == 0);
        CHECK(out[0].ev && out[0].ev->meta && out[0].ev->chat_id == 7 && out[0].ev->mseq == 1 &&
              out[0].ev->sender == 101);
        CHECK(out[4].ev && !out[4].ev->meta && out[4].ev->chat_id == 8);
        CHECK(out[1].ev == out[0].ev && out[2].ev == out[0].ev); /* one body for the fan-out */
        CHECK(out[3].ev == NULL);
        CHECK(out[4].ev && strcmp(out[4].ev->text, big->text) == 0);
        wakes_unref(out, 5);
        free(out);
    }
    /* only one body fits the budget: the other goes id-only */
    char *tight = wakes_encode("i", in, 5, a->len, &len);
    n = wakes_decode(tight, len, &inst, &ilen, &out);
    CHECK(n == 5 && out[0].ev && out[4].ev == NULL);
    if (n > 0) {
        wakes_unref(out, (size_t)n);
        free(out);
    }
    /* damaged frames: truncated anywhere, a wrong count, a bad index */
    size_t full;
    char *t2 = wakes_encode("inst-1", in, 5, 200, &full);
    for (size_t cut = 0; cut < full; cut++)
        CHECK(wakes_decode(t2, cut, &inst, &ilen, &out) == -1 && out == NULL);
    static const char *bad[] = {
        "W x\n1 1\n5\nabcde\n1 2 1\n",      /* index past the bodies */
        "W x\n0 2\n1 2 -1\n",               /* fewer wakes than announced */
        "W x\n0 1\n1 2 -1\n3 4 -1\n",       /* trailing garbage */
        "W x\n0 1\n1 2 -2\n",               /* bad index */
        "W x\n1 1\n9 1 -1 0\nabc\n1 2 0\n", /* body longer than the frame */
        "W x\n1 1\n3\nabc\n1 2 0\n",        /* a body without its metadata */
        "W x\n1 1\n3 1 -2 0\nabc\n1 2 0\n", /* bad mseq */
        "X x\n0 1\n1 2 -1\n",               /* not a wake frame */
        "W x\n0 1\n0 2 -1\n",               /* no such user */
        "W x\n-1 1\n1 2 -1\n",              /* negative count */
        "W x\n0 99999999999\n1 2 -1\n"      /* absurd count */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(wakes_decode(bad[i], strlen(bad[i]), &inst, &ilen, &out) == -1);
    static const char good[] = "W x\n0 1\n1 2 -1\n";
    CHECK(wakes_decode(good, sizeof good - 1, &inst, &ilen, &out) == 1 && out[0].ev == NULL);
    free(out);
    free(text);
    free(tight);
    free(t2);
    evbody_unref(a);
    evbody_unref(big);
}
