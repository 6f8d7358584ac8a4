/* test_devcache.c — devices known live without a query (devcache.c): hits,
 * expiry, revocation now and a put racing a revocation. */
#include <unistd.h>

#include "devcache.h"
#include "unit.h"

void suite_devcache(void)
{
    devcache_init(1);
    CHECK(devcache_get(1, 100) == DEV_UNKNOWN);
    uint64_t t = devcache_ticket(100);
    devcache_put(1, 100, t, false);
    CHECK(devcache_get(1, 100) == DEV_LIVE);
    CHECK(devcache_get(2, 100) == DEV_UNKNOWN); /* another user's token naming that device */
    CHECK(devcache_get(1, 101) == DEV_UNKNOWN);

    /* a revocation is immediate, and a put that read the database before it is refused */
    uint64_t stale = devcache_ticket(100);
    devcache_revoke(1, 100);
    CHECK(devcache_get(1, 100) == DEV_REVOKED);
    devcache_put(1, 100, stale, false);
    CHECK(devcache_get(1, 100) == DEV_REVOKED);
    /* a fresh read that says revoked is kept */
    devcache_put(1, 100, devcache_ticket(100), true);
    CHECK(devcache_get(1, 100) == DEV_REVOKED);

    /* clear: nothing is known, and puts from before it are refused */
    t = devcache_ticket(200);
    devcache_put(3, 200, t, false);
    CHECK(devcache_get(3, 200) == DEV_LIVE);
    uint64_t before = devcache_ticket(200);
    devcache_clear();
    CHECK(devcache_get(3, 200) == DEV_UNKNOWN);
    devcache_put(3, 200, before, false);
    CHECK(devcache_get(3, 200) == DEV_UNKNOWN);

    /* entries expire (ttl 1 s) */
    devcache_put(4, 300, devcache_ticket(300), false);
    CHECK(devcache_get(4, 300) == DEV_LIVE);
    usleep(1100 * 1000);
    CHECK(devcache_get(4, 300) == DEV_UNKNOWN);
    devcache_free();

    /* ttl 0: disabled */
    devcache_init(0);
    devcache_put(5, 400, devcache_ticket(400), false);
    CHECK(devcache_get(5, 400) == DEV_UNKNOWN);
    devcache_free();
}
