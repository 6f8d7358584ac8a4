/*
 * devcache.c — see devcache.h.
 */
#include "devcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "util.h"

#define STRIPES 64 /* locks, each guarding every STRIPES-th slot */

struct slot {
    int64_t user, device; /* device 0: empty */
    uint64_t expires_us;
    uint64_t gen; /* moved by every revocation that lands here */
    bool revoked;
};

static struct slot *slots;
static atomic_ullong hits, misses;
static pthread_mutex_t locks[STRIPES];
static uint64_t ttl_us;

static size_t slot_of(int64_t device)
{
    uint64_t h = (uint64_t)device * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (DEVCACHE_SLOTS - 1);
}

void devcache_init(int ttl_s)
{
    ttl_us = ttl_s > 0 ? (uint64_t)ttl_s * 1000000u : 0;
    slots = xcalloc(DEVCACHE_SLOTS, sizeof *slots);
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&locks[i], NULL);
}

void devcache_free(void)
{
    if (!slots)
        return;
    free(slots);
    slots = NULL;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&locks[i]);
}

uint64_t devcache_ticket(int64_t device)
{
    if (!slots)
        return 0;
    size_t i = slot_of(device);
    pthread_mutex_lock(&locks[i % STRIPES]);
    uint64_t g = slots[i].gen;
    pthread_mutex_unlock(&locks[i % STRIPES]);
    return g;
}

void devcache_put(int64_t user, int64_t device, uint64_t ticket, bool revoked)
{
    if (!slots || ttl_us == 0)
        return;
    size_t i = slot_of(device);
    pthread_mutex_lock(&locks[i % STRIPES]);
    struct slot *s = &slots[i];
    /* a revocation landed here since the caller read the database */
    if (s->gen == ticket || revoked) {
        s->user = user;
        s->device = device;
        s->revoked = revoked;
        s->expires_us = now_us() + ttl_us;
    }
    pthread_mutex_unlock(&locks[i % STRIPES]);
}

enum dev_state devcache_get(int64_t user, int64_t device)
{
    if (!slots || ttl_us == 0)
        return DEV_UNKNOWN;
    enum dev_state st = DEV_UNKNOWN;
    size_t i = slot_of(device);
    pthread_mutex_lock(&locks[i % STRIPES]);
    const struct slot *s = &slots[i];
    if (s->device == device && s->user == user && now_us() < s->expires_us)
        st = s->revoked ? DEV_REVOKED : DEV_LIVE;
    pthread_mutex_unlock(&locks[i % STRIPES]);
    atomic_fetch_add_explicit(st == DEV_UNKNOWN ? &misses : &hits, 1, memory_order_relaxed);
    return st;
}

void devcache_revoke(int64_t user, int64_t device)
{
    if (!slots)
        return;
    size_t i = slot_of(device);
    pthread_mutex_lock(&locks[i % STRIPES]);
    struct slot *s = &slots[i];
    s->gen++;
    s->user = user;
    s->device = device;
    s->revoked = true;
    s->expires_us = now_us() + ttl_us;
    pthread_mutex_unlock(&locks[i % STRIPES]);
}

void devcache_stats(unsigned long long *h, unsigned long long *m)
{
    *h = atomic_load(&hits);
    *m = atomic_load(&misses);
}

void devcache_clear(void)
{
    if (!slots)
        return;
    for (size_t i = 0; i < DEVCACHE_SLOTS; i++) {
        pthread_mutex_lock(&locks[i % STRIPES]);
        slots[i].device = 0;
        slots[i].gen++;
        pthread_mutex_unlock(&locks[i % STRIPES]);
    }
}
