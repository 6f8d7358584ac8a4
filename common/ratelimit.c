/*
 * ratelimit.c — token buckets in a set-associative table (see ratelimit.h).
 */
#include "ratelimit.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "util.h"

#define RL_STRIPES 64 /* mutexes; a set's stripe is its index modulo this */

struct bucket {
    uint64_t key;  /* 0 = free */
    double tokens; /* as of `at` */
    double at;     /* last refill, seconds (monotonic): also the LRU age */
};

struct ratelimit {
    struct bucket *b; /* nsets * RL_WAYS */
    size_t nsets;     /* a power of two */
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    pthread_mutex_t mu[RL_STRIPES];
};

struct ratelimit *rl_new(size_t buckets)
{
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    size_t sets = 1;
    while (sets * RL_WAYS < buckets)
        sets <<= 1;
    rl->nsets = sets;
    rl->b = xcalloc(sets * RL_WAYS, sizeof *rl->b);
    crypto_shorthash_keygen(rl->hkey);
    for (int i = 0; i < RL_STRIPES; i++)
        pthread_mutex_init(&rl->mu[i], NULL);
    return rl;
}

void rl_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < RL_STRIPES; i++)
        pthread_mutex_destroy(&rl->mu[i]);
    free(rl->b);
    free(rl);
}

static uint64_t hash_bytes(const struct ratelimit *rl, const unsigned char *p, size_t n)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;
    crypto_shorthash(out, p, n, rl->hkey);
    memcpy(&h, out, sizeof h);
    return h ? h : 1; /* 0 marks a free bucket */
}

uint64_t rl_key(const struct ratelimit *rl, int kind, int64_t id)
{
    unsigned char buf[sizeof(int) + sizeof(int64_t)];
    memcpy(buf, &kind, sizeof kind);
    memcpy(buf + sizeof kind, &id, sizeof id);
    return hash_bytes(rl, buf, sizeof buf);
}

uint64_t rl_key_str(const struct ratelimit *rl, int kind, const char *s)
{
    unsigned char buf[sizeof(int) + 256];
    size_t n = strlen(s);
    if (n > 256)
        n = 256; /* client addresses are far shorter; the bound keeps the buffer */
    memcpy(buf, &kind, sizeof kind);
    memcpy(buf + sizeof kind, s, n);
    return hash_bytes(rl, buf, sizeof kind + n);
}

/* The bucket of key in its (locked) set: the existing one, else a free one,
 * else the least recently used one, reset to full. */
static struct bucket *find(struct ratelimit *rl, uint64_t key, const struct rl_rate *rate, double now, bool create)
{
    struct bucket *set = &rl->b[(key & (rl->nsets - 1)) * RL_WAYS];
    struct bucket *victim = NULL;
    for (int i = 0; i < RL_WAYS; i++) {
        if (set[i].key == key)
            return &set[i];
        if (!victim || (victim->key && (!set[i].key || set[i].at < victim->at)))
            victim = &set[i];
    }
    if (!create)
        return NULL;
    victim->key = key;
    victim->tokens = rate->burst;
    victim->at = now;
    return victim;
}

static void refill(struct bucket *b, const struct rl_rate *rate, double now)
{
    if (now > b->at) {
        b->tokens += (now - b->at) * rate->per_min / 60.0;
        b->at = now;
    }
    if (b->tokens > rate->burst)
        b->tokens = rate->burst;
}

static pthread_mutex_t *stripe(struct ratelimit *rl, uint64_t key)
{
    return &rl->mu[(key & (rl->nsets - 1)) % RL_STRIPES];
}

int rl_take(struct ratelimit *rl, uint64_t key, const struct rl_rate *rate, double now)
{
    if (rate->burst <= 0)
        return 0;
    int wait = 0;
    pthread_mutex_t *mu = stripe(rl, key);
    pthread_mutex_lock(mu);
    struct bucket *b = find(rl, key, rate, now, true);
    refill(b, rate, now);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else if (rate->per_min <= 0) {
        wait = 60;
    } else {
        double secs = (1.0 - b->tokens) * 60.0 / rate->per_min; /* < 60: at most one token short */
        wait = (int)secs;
        if (wait < secs)
            wait++; /* round up: a client that waits Retry-After finds its token */
        if (wait < 1)
            wait = 1;
    }
    pthread_mutex_unlock(mu);
    return wait;
}

void rl_refund(struct ratelimit *rl, uint64_t key, const struct rl_rate *rate, double now)
{
    if (rate->burst <= 0)
        return;
    pthread_mutex_t *mu = stripe(rl, key);
    pthread_mutex_lock(mu);
    struct bucket *b = find(rl, key, rate, now, false);
    if (b) {
        refill(b, rate, now);
        b->tokens = b->tokens + 1.0 > rate->burst ? rate->burst : b->tokens + 1.0;
    }
    pthread_mutex_unlock(mu);
}

double rl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
