/*
 * util.c — allocation, clocks, randomness and text helpers (see util.h).
 * Randomness and hashing come from libsodium; sodium_init() must have run.
 */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

static void oom(void)
{
    fputs("{\"level\":\"fatal\",\"msg\":\"out of memory\"}\n", stderr);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom();
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom();
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void timespec_after(clockid_t clock, uint64_t us, struct timespec *ts)
{
    clock_gettime(clock, ts);
    ts->tv_sec += (time_t)(us / 1000000u);
    ts->tv_nsec += (long)(us % 1000000u) * 1000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

const char *i64s(char *buf, int64_t v)
{
    snprintf(buf, 24, "%lld", (long long)v);
    return buf;
}

int64_t wall_time_s(void)
{
    return (int64_t)time(NULL);
}

int64_t wall_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rfc3339_ms(int64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)(ms % 1000));
}

void rfc3339_now(char *buf, size_t len)
{
    rfc3339_ms(wall_time_ms(), buf, len);
}

void random_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        nbytes = sizeof raw;
    randombytes_buf(raw, nbytes);
    sodium_bin2hex(out, nbytes * 2 + 1, raw, nbytes);
}

void id_hex16(char out[17])
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        randombytes_buf(&state, sizeof state);
        state |= 1;
    }
    /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, z >>= 4)
        out[i] = hex[z & 15];
    out[16] = '\0';
}

void random_b64url(char *out, size_t outlen, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        nbytes = sizeof raw;
    randombytes_buf(raw, nbytes);
    sodium_bin2base64(out, outlen, raw, nbytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, data, len);
    sodium_bin2hex(out, 65, h, sizeof h);
}

bool csv_next(const char **p, const char **item, size_t *len)
{
    if (!*p || !**p)
        return false;
    const char *s = *p, *e = strchr(s, ',');
    size_t l = e ? (size_t)(e - s) : strlen(s);
    *p = e ? e + 1 : s + l;
    while (l && *s == ' ')
        s++, l--;
    while (l && s[l - 1] == ' ')
        l--;
    *item = s;
    *len = l;
    return true;
}

bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s || strlen(s) > 20)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (p == s && *p == '-')))
            return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end)
        return false;
    *out = v;
    return true;
}

size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

bool utf8_has_control(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        if (u[i] < 0x20 || u[i] == 0x7F)
            return true;
        /* C1 controls U+0080..U+009F are encoded as C2 80..C2 9F */
        if (u[i] == 0xC2 && i + 1 < len && u[i + 1] >= 0x80 && u[i + 1] <= 0x9F)
            return true;
    }
    return false;
}

bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        size_t n;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n >= len - i) /* not enough continuation bytes left */
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        /* reject overlongs, surrogates and values past U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += n + 1;
    }
    return true;
}

bool ct_equal(const void *a, const void *b, size_t len)
{
    return sodium_memcmp(a, b, len) == 0;
}

enum bearer_check bearer_check(const char *authorization, const char *want)
{
    const char *h = authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7])
        return BEARER_MISSING;
    unsigned char a[crypto_generichash_BYTES], b[crypto_generichash_BYTES];
    crypto_generichash(a, sizeof a, (const unsigned char *)h + 7, strlen(h + 7), NULL, 0);
    crypto_generichash(b, sizeof b, (const unsigned char *)want, strlen(want), NULL, 0);
    return ct_equal(a, b, sizeof a) ? BEARER_OK : BEARER_WRONG;
}

bool uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

/* Code points of valid UTF-8 (emoji_valid checks validity first). */
static uint32_t next_cp(const unsigned char **p)
{
    const unsigned char *u = *p;
    uint32_t c;
    if (u[0] < 0x80) {
        c = u[0];
        *p += 1;
    } else if (u[0] < 0xE0) {
        c = (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
        *p += 2;
    } else if (u[0] < 0xF0) {
        c = (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
        *p += 3;
    } else {
        c = (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 | (uint32_t)(u[2] & 0x3F) << 6 |
            (u[3] & 0x3F);
        *p += 4;
    }
    return c;
}

#define CP_ZWJ 0x200Du
#define CP_VS15 0xFE0Eu
#define CP_VS16 0xFE0Fu
#define CP_KEYCAP 0x20E3u
#define CP_TAG_END 0xE007Fu

static bool is_regional(uint32_t c)
{
    return c >= 0x1F1E6 && c <= 0x1F1FF;
}

static bool is_modifier(uint32_t c)
{
    return c >= 0x1F3FB && c <= 0x1F3FF;
}

static bool is_tag(uint32_t c)
{
    return c >= 0xE0020 && c <= 0xE007E;
}

/* Extended_Pictographic of Unicode's emoji data, in the blocks that hold
 * emoji (a superset by block for U+2600..U+27BF and U+1F000..U+1FAFF). */
static bool is_pictographic(uint32_t c)
{
    static const uint32_t r[][2] = {
        {0x00A9, 0x00A9},   {0x00AE, 0x00AE}, {0x203C, 0x203C}, {0x2049, 0x2049},   {0x2122, 0x2122},
        {0x2139, 0x2139},   {0x2194, 0x2199}, {0x21A9, 0x21AA}, {0x231A, 0x231B},   {0x2328, 0x2328},
        {0x23CF, 0x23CF},   {0x23E9, 0x23F3}, {0x23F8, 0x23FA}, {0x24C2, 0x24C2},   {0x25AA, 0x25AB},
        {0x25B6, 0x25B6},   {0x25C0, 0x25C0}, {0x25FB, 0x25FE}, {0x2600, 0x27BF},   {0x2934, 0x2935},
        {0x2B05, 0x2B07},   {0x2B1B, 0x2B1C}, {0x2B50, 0x2B50}, {0x2B55, 0x2B55},   {0x3030, 0x3030},
        {0x303D, 0x303D},   {0x3297, 0x3297}, {0x3299, 0x3299}, {0x1F000, 0x1F1E5}, {0x1F200, 0x1F3FA},
        {0x1F400, 0x1FAFF},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (c >= r[i][0] && c <= r[i][1])
            return true;
    return false;
}

/* One element of an emoji sequence at *i of cp[0, n): a keycap ([0-9#*]
 * FE0F? 20E3), a flag (two regional indicators), or a pictograph with an
 * optional variation selector, skin-tone modifier and tag sequence. */
static bool emoji_element(const uint32_t *cp, size_t n, size_t *i)
{
    uint32_t c = cp[*i];
    if ((c >= '0' && c <= '9') || c == '#' || c == '*') {
        size_t k = *i + 1;
        if (k < n && cp[k] == CP_VS16)
            k++;
        if (k >= n || cp[k] != CP_KEYCAP)
            return false;
        *i = k + 1;
        return true;
    }
    if (is_regional(c)) {
        if (*i + 1 >= n || !is_regional(cp[*i + 1]))
            return false;
        *i += 2;
        return true;
    }
    if (!is_pictographic(c))
        return false;
    size_t k = *i + 1;
    if (k < n && (cp[k] == CP_VS16 || cp[k] == CP_VS15))
        k++;
    if (k < n && is_modifier(cp[k]))
        k++;
    if (k < n && is_tag(cp[k])) {
        while (k < n && is_tag(cp[k]))
            k++;
        if (k >= n || cp[k] != CP_TAG_END)
            return false;
        k++;
    }
    *i = k;
    return true;
}

bool emoji_valid(const char *s, size_t max_chars)
{
    size_t len = strlen(s);
    if (len == 0 || len > max_chars * 4 || !utf8_valid(s, len))
        return false;
    uint32_t cp[64];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        if (n == max_chars || n == sizeof cp / sizeof cp[0])
            return false;
        cp[n++] = next_cp(&p);
    }
    /* element (ZWJ element)* */
    size_t i = 0;
    for (;;) {
        if (!emoji_element(cp, n, &i))
            return false;
        if (i == n)
            return true;
        if (cp[i] != CP_ZWJ || i + 1 >= n)
            return false;
        i++;
    }
}

bool apns_token_valid(const char *t)
{
    size_t n = strlen(t);
    if (n < 16 || n > 200)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f') || (t[i] >= 'A' && t[i] <= 'F')))
            return false;
    return true;
}
