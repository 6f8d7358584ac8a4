/*
 * devcache.h — devices this instance recently found live, so that
 * authenticating a request needs no query (a JWT names the user and device;
 * the device may have been signed out since the token was issued).
 *
 *   devcache_ticket(dev)        read BEFORE asking the database
 *   devcache_put(u, d, t, rev)  the database said the device is live/revoked
 *   devcache_get(u, d)          DEV_LIVE / DEV_REVOKED, or DEV_UNKNOWN: ask
 *   devcache_revoke(u, d)       a revocation committed (here, or published by
 *                               another instance): refused from now on
 *   devcache_clear()            the bus reconnected: revocations may have
 *                               been missed meanwhile
 *
 * An entry lives NATTER_AUTH_CACHE_TTL seconds: a revocation on this instance
 * is immediate, one elsewhere arrives through Redis at once, and a missed
 * publish or a Redis outage is covered by that lifetime. A put racing a
 * revocation (the database read before the revocation committed, the put
 * after it) is refused by the ticket: every revocation moves its slot's
 * generation. Direct-mapped and fixed in size: a collision only costs a query.
 */
#ifndef NATTER_DEVCACHE_H
#define NATTER_DEVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#define DEVCACHE_SLOTS (1u << 17)

enum dev_state {
    DEV_UNKNOWN, /* ask the database */
    DEV_LIVE,
    DEV_REVOKED,
};

/* ttl_s 0 disables the cache (every get answers DEV_UNKNOWN). */
void devcache_init(int ttl_s);
void devcache_free(void);
uint64_t devcache_ticket(int64_t device);
void devcache_put(int64_t user, int64_t device, uint64_t ticket, bool revoked);
enum dev_state devcache_get(int64_t user, int64_t device);
void devcache_revoke(int64_t user, int64_t device);
void devcache_clear(void);
/* Lookups answered from the cache / that needed the database. */
void devcache_stats(unsigned long long *hits, unsigned long long *misses);

#endif
