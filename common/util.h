/*
 * util.h — small helpers both binaries use: allocation that aborts on
 * out-of-memory, clocks, RFC 3339 time, random tokens, hashing, UTF-8 counting.
 */
#ifndef NATTER_UTIL_H
#define NATTER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* xmalloc and friends abort on out-of-memory, so callers need no NULL checks. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new, owned string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t now_us(void); /* monotonic clock, microseconds */
/* *ts = the clock's now + us (for pthread_cond_timedwait with that clock). */
void timespec_after(clockid_t clock, uint64_t us, struct timespec *ts);
int64_t wall_time_s(void);  /* realtime clock, seconds since the epoch */
int64_t wall_time_ms(void); /* realtime clock, milliseconds since the epoch */
/* Writes epoch milliseconds ms as 2026-11-21T09:10:31.123Z into buf (>= 32 bytes). */
void rfc3339_ms(int64_t ms, char *buf, size_t len);
/* Writes the current UTC time as 2026-11-21T09:10:31.123Z into buf (>= 32 bytes). */
void rfc3339_now(char *buf, size_t len);

/* Fills out with 2*nbytes lowercase hex chars of fresh randomness + NUL. */
void random_hex(char *out, size_t nbytes);
/* 16 hex digits from a per-thread generator seeded from the system's random
 * source: unique enough for correlation ids, no system call per id. Never
 * for secrets (random_hex is for those). */
void id_hex16(char out[17]);
/* base64url (no padding) of nbytes random bytes; out needs 4*nbytes/3+2 bytes. */
void random_b64url(char *out, size_t outlen, size_t nbytes);
/* Lowercase hex SHA-256 of data into out[65]. */
void sha256_hex(const void *data, size_t len, char out[65]);

/* Formats v into buf (>= 24 bytes) and returns buf: for text query parameters. */
const char *i64s(char *buf, int64_t v);
/* Iterates a comma-separated list: sets *item and *len to the next entry with
 * surrounding spaces trimmed (possibly empty) and advances *p; false at the
 * end (see cors_new in api/core/cors.c for the loop). */
bool csv_next(const char **p, const char **item, size_t *len);
/* Strict decimal int64 parse of the whole string; false on junk/overflow. */
bool parse_i64(const char *s, int64_t *out);
/* Number of Unicode code points in valid UTF-8 s of len bytes. */
size_t utf8_chars(const char *s, size_t len);
/* True when s (valid UTF-8) contains a C0 control, DEL or a C1 control. */
bool utf8_has_control(const char *s, size_t len);
/* True when s is a well-formed UTF-8 string of len bytes without NUL. */
bool utf8_valid(const char *s, size_t len);
/* A reaction: exactly one emoji — a pictograph (with an optional variation
 * selector, skin-tone modifier and tag sequence), a flag or a keycap, or such
 * elements joined by ZWJ — of at most max_chars code points. */
bool emoji_valid(const char *s, size_t max_chars);
/* An APNs device token: 16 to 200 hex digits (32 bytes today; Apple says not to
 * rely on the length). natter-api checks it on registration, the worker again. */
bool apns_token_valid(const char *t);

/* True for a canonical textual UUID: 8-4-4-4-12 hex digits. */
bool uuid_valid(const char *s);

/* Constant-time comparison of two equal-length buffers. */
bool ct_equal(const void *a, const void *b, size_t len);

/* An Authorization header against a required bearer token (the metrics
 * tokens): BEARER_OK, BEARER_MISSING (no header, or not "Bearer <token>") or
 * BEARER_WRONG. Compared in constant time over fixed-size digests, so neither
 * the token's bytes nor its length leak through timing. */
enum bearer_check { BEARER_OK, BEARER_MISSING, BEARER_WRONG };
enum bearer_check bearer_check(const char *authorization, const char *want);

#endif
