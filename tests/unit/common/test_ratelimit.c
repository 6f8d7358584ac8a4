/* test_ratelimit.c — token buckets: burst, refill, Retry-After, refunds, independence of keys, bounded eviction. */
#include "ratelimit.h"
#include "unit.h"

void suite_ratelimit(void)
{
    struct ratelimit *rl = rl_new(1024);
    const struct rl_rate r = {3, 60}; /* 3 at once, then one a second */
    uint64_t a = rl_key(rl, 1, 42), b = rl_key(rl, 1, 43), a2 = rl_key(rl, 2, 42);
    CHECK(a != 0 && a != b && a != a2);
    CHECK(rl_key(rl, 1, 42) == a); /* stable */
    CHECK(rl_key_str(rl, 1, "127.0.0.1") == rl_key_str(rl, 1, "127.0.0.1"));
    CHECK(rl_key_str(rl, 1, "127.0.0.1") != rl_key_str(rl, 1, "127.0.0.2"));

    double t = 1000.0;
    for (int i = 0; i < 3; i++)
        CHECK(rl_take(rl, a, &r, t) == 0);
    CHECK(rl_take(rl, a, &r, t) == 1); /* the burst is spent: one second to the next token */
    CHECK(rl_take(rl, a, &r, t) == 1); /* a refusal takes nothing */
    CHECK(rl_take(rl, b, &r, t) == 0); /* other users, other limits keep their own */
    CHECK(rl_take(rl, a2, &r, t) == 0);
    CHECK(rl_take(rl, a, &r, t + 0.5) == 1);
    CHECK(rl_take(rl, a, &r, t + 1.0) == 0); /* refilled one */
    CHECK(rl_take(rl, a, &r, t + 1.0) == 1);
    CHECK(rl_take(rl, a, &r, t + 100.0) == 0); /* long idle: full, but no more than the burst */
    CHECK(rl_take(rl, a, &r, t + 100.0) == 0);
    CHECK(rl_take(rl, a, &r, t + 100.0) == 0);
    CHECK(rl_take(rl, a, &r, t + 100.0) > 0);

    /* a refund gives back what an action turned out not to cost */
    rl_refund(rl, a, &r, t + 100.0);
    CHECK(rl_take(rl, a, &r, t + 100.0) == 0);
    CHECK(rl_take(rl, a, &r, t + 100.0) > 0);
    for (int i = 0; i < 10; i++) /* never past the burst */
        rl_refund(rl, b, &r, t + 500.0);
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += rl_take(rl, b, &r, t + 500.0) == 0;
    CHECK(ok == 3);

    /* slow rates: Retry-After in whole seconds, rounded up */
    const struct rl_rate slow = {1, 2}; /* one per 30 s */
    uint64_t s = rl_key(rl, 3, 1);
    CHECK(rl_take(rl, s, &slow, t) == 0);
    CHECK(rl_take(rl, s, &slow, t) == 30);
    CHECK(rl_take(rl, s, &slow, t + 10.2) == 20);
    CHECK(rl_take(rl, s, &slow, t + 30.0) == 0);

    /* burst 0: no limit */
    const struct rl_rate off = {0, 0};
    for (int i = 0; i < 100; i++)
        CHECK(rl_take(rl, a, &off, t) == 0);
    rl_free(rl);

    /* the table never grows: far more keys than buckets all get an answer,
     * and a key that was evicted comes back with a full bucket */
    struct ratelimit *tiny = rl_new(8); /* one set */
    const struct rl_rate one = {1, 1};
    for (int64_t id = 1; id <= 1000; id++)
        CHECK(rl_take(tiny, rl_key(tiny, 1, id), &one, t + (double)id) == 0);
    CHECK(rl_take(tiny, rl_key(tiny, 1, 1000), &one, t + 1000.0) > 0); /* still held: recent */
    CHECK(rl_take(tiny, rl_key(tiny, 1, 1), &one, t + 1000.0) == 0);   /* evicted long ago */
    rl_free(tiny);
}
