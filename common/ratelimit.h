/*
 * ratelimit.h — per-key token buckets in a fixed-size table in process
 * memory: no SQL and no Redis round trip per check, so a send running at
 * thousands per second pays a hash, a lock and a few multiplications.
 *
 * A bucket holds at most `burst` tokens and refills at `per_min` tokens a
 * minute; each allowed action takes one. Keys are 64-bit: rl_key() mixes a
 * kind (which limit) with a user id, rl_key_str() with a string (a client
 * address), both through SipHash with a key drawn at start-up, so nobody can
 * aim many keys at one set of the table.
 *
 * Bounds: the table has a fixed number of sets of RL_WAYS buckets, chosen at
 * rl_new() and never grown. A key that finds its set full takes over the
 * bucket used least recently. A bucket idle for burst/rate is full again, so
 * evicting it forgets nothing; evicting a busier one can only hand its owner
 * a fresh (full) bucket — which needs more than RL_WAYS keys active in one
 * set at once, something the keyed hash keeps an attacker from arranging.
 *
 * Limits are per process: N natter-api instances behind a balancer allow up
 * to N times the rate to a client whose requests they share.
 *
 * Thread-safe: one mutex per stripe of sets.
 */
#ifndef NATTER_RATELIMIT_H
#define NATTER_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_WAYS 8 /* buckets per set */

struct ratelimit;

/* A limit: burst tokens at most, refilled at per_min a minute. burst == 0
 * means no limit (every take succeeds). */
struct rl_rate {
    int burst;   /* bucket size: actions allowed at once */
    int per_min; /* refill: sustained actions per minute */
};

/* A table of at least `buckets` buckets (rounded up to a power-of-two number
 * of sets). Owned by the caller; rl_free() it. */
struct ratelimit *rl_new(size_t buckets);
void rl_free(struct ratelimit *rl);

/* The key of (kind, id) and of (kind, string): never 0. */
uint64_t rl_key(const struct ratelimit *rl, int kind, int64_t id);
uint64_t rl_key_str(const struct ratelimit *rl, int kind, const char *s);

/* Takes one token from key's bucket at time now (seconds on a monotonic
 * clock). Returns 0 when allowed, else the whole seconds (>= 1) until a
 * token will be there: the Retry-After. Nothing is taken when refused. */
int rl_take(struct ratelimit *rl, uint64_t key, const struct rl_rate *rate, double now);

/* Gives one token back to key's bucket (an action charged in advance that
 * turned out free, such as a retried send already stored); never past the
 * burst. A bucket evicted meanwhile is left alone. */
void rl_refund(struct ratelimit *rl, uint64_t key, const struct rl_rate *rate, double now);

/* Seconds on the monotonic clock, for `now`. */
double rl_now(void);

#endif
