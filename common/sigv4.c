/*
 * sigv4.c — AWS Signature Version 4, S3 flavour (see sigv4.h): pre-signed
 * URLs, header-signed requests and verification of pre-signed URLs.
 * SHA-256 and HMAC-SHA256 come from libsodium.
 *
 * Every input string is length-checked before any work (SIGV4_MAX_*), so the
 * growable buffers below stay bounded; every allocation aborts on OOM (xmalloc).
 *
 * What is produced is byte for byte what botocore's S3SigV4QueryAuth /
 * S3SigV4Auth produce for the same inputs (checked by
 * tests/api/test_sigv4_botocore.py):
 *  - URL path = canonical URI: "/" bucket "/" key (path style) or "/" key on
 *    bucket.host (virtual host), the key encoded with S3 rules, '/' kept, no
 *    dot-segment or slash normalisation;
 *  - query: the caller's parameters in the caller's order, then X-Amz-Algorithm,
 *    X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, and last
 *    X-Amz-Signature; names and values encoded with S3 rules ('/' as %2F);
 *  - the signed host is the endpoint's host lowercased, with its port unless it
 *    is the scheme's default (80/443) — what HTTP clients send as Host — while
 *    the URL keeps the endpoint exactly as configured.
 *
 * Verdicts, beyond sigv4.h: MISSING only when neither X-Amz-Algorithm nor
 * X-Amz-Signature is present (one without the other is MALFORMED); host
 * absent from X-Amz-SignedHeaders is HEADER_UNSIGNED; a signed header the
 * request lacks is BAD_SIGNATURE; EXPIRED is only said of a request whose
 * signature is right. Virtual-host style needs a DNS endpoint: an IP literal
 * has no bucket subdomain and is refused.
 */
#include "sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "util.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_SERVICE "s3"
#define SIGV4_TERMINATOR "aws4_request"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_SIGNATURE_PARAM "X-Amz-Signature"

#define SIGV4_MAX_EXPIRES 604800             /* 7 days, S3's limit */
#define SIGV4_MAX_SKEW 900                   /* seconds X-Amz-Date may lie in the future */
#define SIGV4_MAX_ITEMS 64                   /* query parameters, or headers, in one request */
#define SIGV4_MAX_FIELD 8192                 /* bytes of one name, value or path */
#define SIGV4_MAX_KEY 1024                   /* bytes of an object key (S3's limit) */
#define SIGV4_MAX_SECRET 256                 /* bytes of a secret key */
#define SIGV4_MAX_ID 128                     /* bytes of an access key, region or bucket */
#define SIGV4_MAX_AUTHORITY 300              /* bytes of the endpoint's host[:port] */
#define SIGV4_MAX_TIME INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

/* ------------------------------------------------------------ growable string */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len <= n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static void sb_addc(struct sbuf *b, char c)
{
    sb_addn(b, &c, 1);
}

/* The buffer's string, owned by the caller ("" when nothing was added). */
static char *sb_take(struct sbuf *b)
{
    char *s = b->p ? b->p : xstrdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return s;
}

/* ------------------------------------------------------------ characters */

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '~';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_lower_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f');
}

/* Whitespace that canonical header values collapse (botocore: str.split()). */
static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* A lowercase RFC 9110 token (header names). */
static bool lower_token(const char *s, size_t len)
{
    if (len == 0 || len > SIGV4_MAX_ID)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

/* HTTP method: 1..16 uppercase letters. */
static bool method_ok(const char *m)
{
    size_t n = m ? strlen(m) : 0;
    if (n == 0 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return false;
    return true;
}

/* Non-NULL, 1..max bytes, no control characters (HTAB allowed when tab). */
static bool text_ok(const char *s, size_t max, bool allow_empty, bool tab)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n > max || (n == 0 && !allow_empty))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && !(tab && c == '\t')) || c == 0x7f)
            return false;
    }
    return true;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ------------------------------------------------------------ URI encoding */

static void sb_add_encoded(struct sbuf *b, const char *s, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_unreserved(*p) || (keep_slash && *p == '/')) {
            sb_addc(b, (char)*p);
        } else {
            char enc[3] = {'%', digits[*p >> 4], digits[*p & 15]};
            sb_addn(b, enc, 3);
        }
    }
}

char *sigv4_uri_encode(const char *s, bool keep_slash)
{
    if (!s)
        return NULL;
    struct sbuf b = {0};
    sb_add_encoded(&b, s, keep_slash);
    return sb_take(&b);
}

/* ------------------------------------------------------------ time */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* YYYYMMDDTHHMMSSZ of unix time `t` into out[17]; false outside 1970..9999. */
static bool format_amz_date(int64_t t, char out[17])
{
    if (t < 0 || t > SIGV4_MAX_TIME)
        return false;
    int y, m, d;
    civil_from_days(t / 86400, &y, &m, &d);
    int64_t s = t % 86400;
    char buf[48]; /* the compiler cannot see y <= 9999 */
    snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02dZ", y, m, d, (int)(s / 3600), (int)(s / 60 % 60),
             (int)(s % 60));
    memcpy(out, buf, 17);
    return true;
}

static int digits_value(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* Strict YYYYMMDDTHHMMSSZ (a real calendar date) into unix time. */
static bool parse_amz_date(const char *s, int64_t *out)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s || strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !is_digit(s[i]))
            return false;
    int y = digits_value(s, 4), mo = digits_value(s + 4, 2), d = digits_value(s + 6, 2);
    int h = digits_value(s + 9, 2), mi = digits_value(s + 11, 2), se = digits_value(s + 13, 2);
    if (y < 1970 || mo < 1 || mo > 12 || h > 23 || mi > 59 || se > 59)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int dim = mdays[mo - 1] + (mo == 2 && leap);
    if (d < 1 || d > dim)
        return false;
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    return true;
}

/* ------------------------------------------------------------ crypto */

static void hmac_sha256(unsigned char out[32], const void *key, size_t keylen, const char *msg)
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, strlen(msg));
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date8), region), service),
 * "aws4_request"). `steps`, when not NULL, receives kDate, kRegion, kService
 * (for the tests). False when the secret is empty or too long. */
static bool signing_key(unsigned char out[32], const char *secret, const char *date8, const char *region,
                        const char *service, unsigned char (*steps)[32])
{
    unsigned char ksecret[4 + SIGV4_MAX_SECRET];
    unsigned char k[3][32];
    size_t n = secret ? strnlen(secret, SIGV4_MAX_SECRET + 1) : 0;
    if (n == 0 || n > SIGV4_MAX_SECRET)
        return false;
    memcpy(ksecret, "AWS4", 4);
    memcpy(ksecret + 4, secret, n);
    hmac_sha256(k[0], ksecret, 4 + n, date8);
    hmac_sha256(k[1], k[0], 32, region);
    hmac_sha256(k[2], k[1], 32, service);
    hmac_sha256(out, k[2], 32, SIGV4_TERMINATOR);
    if (steps)
        memcpy(steps, k, sizeof k);
    sodium_memzero(ksecret, sizeof ksecret);
    sodium_memzero(k, sizeof k);
    return true;
}

/* ------------------------------------------------------------ canonical request */

/* One encoded query parameter, for sorting. */
struct qpair {
    char *name;
    char *value;
};

static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* Canonical query string (owned): every parameter but those named `skip`,
 * name and value encoded with S3 rules, sorted by encoded name then encoded
 * value, joined as name=value with '&'. Callers bound n and the lengths. */
static char *canonical_query(const struct sigv4_kv *q, size_t n, const char *skip)
{
    struct qpair *p = xcalloc(n, sizeof *p);
    struct sbuf b = {0};
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip && strcmp(q[i].name, skip) == 0)
            continue;
        p[m].name = sigv4_uri_encode(q[i].name, false);
        p[m].value = sigv4_uri_encode(q[i].value, false);
        m++;
    }
    qsort(p, m, sizeof *p, qpair_cmp);
    for (size_t i = 0; i < m; i++) {
        if (i)
            sb_addc(&b, '&');
        sb_add(&b, p[i].name);
        sb_addc(&b, '=');
        sb_add(&b, p[i].value);
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
    return sb_take(&b);
}

static int kv_name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sigv4_kv *)a)->name, ((const struct sigv4_kv *)b)->name);
}

/* Leading/trailing whitespace dropped, inner runs made one space (Trimall). */
static void sb_add_trimmed(struct sbuf *b, const char *v)
{
    bool pending = false, any = false;
    for (; *v; v++) {
        if (is_space(*v)) {
            pending = any;
            continue;
        }
        if (pending)
            sb_addc(b, ' ');
        sb_addc(b, *v);
        any = true;
        pending = false;
    }
}

/* Canonical headers (owned): "name:trimmed value\n" per header, sorted by
 * name; *signed_headers (owned) gets the names joined by ';'. Names must be
 * lowercase and unique (callers check); n and lengths bounded by callers. */
static char *canonical_headers(const struct sigv4_kv *h, size_t n, char **signed_headers)
{
    struct sigv4_kv *s = xcalloc(n, sizeof *s);
    struct sbuf b = {0}, names = {0};
    memcpy(s, h, n * sizeof *s);
    qsort(s, n, sizeof *s, kv_name_cmp);
    for (size_t i = 0; i < n; i++) {
        sb_add(&b, s[i].name);
        sb_addc(&b, ':');
        sb_add_trimmed(&b, s[i].value);
        sb_addc(&b, '\n');
        if (i)
            sb_addc(&names, ';');
        sb_add(&names, s[i].name);
    }
    free(s);
    *signed_headers = sb_take(&names);
    return sb_take(&b);
}

static char *canonical_request(const char *method, const char *uri, const char *query, const char *headers,
                               const char *signed_headers, const char *payload)
{
    return xasprintf("%s\n%s\n%s\n%s\n%s\n%s", method, uri, query, headers, signed_headers, payload);
}

/* "AWS4-HMAC-SHA256\n" amz_date "\n" scope "\n" hex(SHA-256(creq)), owned. */
static char *string_to_sign(const char *amz_date, const char *scope, const char *creq)
{
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(h, (const unsigned char *)creq, strlen(creq));
    to_hex(h, sizeof h, hex);
    return xasprintf(SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, hex);
}

/* Lowercase hex signature of sts into out[65] with the key of (date8, region, s3). */
static bool sign_hex(char out[65], const char *secret, const char *date8, const char *region, const char *sts)
{
    unsigned char key[32], mac[32];
    if (!signing_key(key, secret, date8, region, SIGV4_SERVICE, NULL))
        return false;
    hmac_sha256(mac, key, sizeof key, sts);
    to_hex(mac, sizeof mac, out);
    sodium_memzero(key, sizeof key);
    return true;
}

/* ------------------------------------------------------------ target */

/* Where a request on a key goes: URL = base + uri; host = signed Host value. */
struct s3_loc {
    char *base; /* scheme://[bucket.]host[:port] as configured */
    char *uri;  /* canonical URI = URL path */
    char *host; /* lowercase [bucket.]host[:port unless default] */
};

static void loc_free(struct s3_loc *loc)
{
    free(loc->base);
    free(loc->uri);
    free(loc->host);
    loc->base = loc->uri = loc->host = NULL;
}

/* Access key: 1..128 printable ASCII bytes without '/', ',', space. */
static bool access_key_ok(const char *k)
{
    if (!text_ok(k, SIGV4_MAX_ID, false, false))
        return false;
    for (const char *p = k; *p; p++)
        if (*p == '/' || *p == ',' || *p == ' ' || (unsigned char)*p > 0x7e)
            return false;
    return true;
}

/* Region: 1..128 bytes of [A-Za-z0-9_-]. */
static bool region_ok(const char *r)
{
    size_t n = r ? strnlen(r, SIGV4_MAX_ID + 1) : 0;
    if (n == 0 || n > SIGV4_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(is_unreserved((unsigned char)r[i]) && r[i] != '.' && r[i] != '~'))
            return false;
    return true;
}

/* Bucket: path style 1..128 bytes of [A-Za-z0-9._-]; virtual host 3..63 of [a-z0-9.-]. */
static bool bucket_ok(const char *b, bool virtual_host)
{
    size_t n = b ? strnlen(b, SIGV4_MAX_ID + 1) : 0;
    if (n == 0 || n > SIGV4_MAX_ID || (virtual_host && (n < 3 || n > 63)))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!is_unreserved(c) || c == '~' || (virtual_host && (c == '_' || (c >= 'A' && c <= 'Z'))))
            return false;
    }
    return true;
}

/* Checks the target, splits t->endpoint and builds the parts of a request on
 * `key` (1..1024 bytes, no control characters). False on bad input. */
static bool locate(const struct s3_target *t, const char *key, struct s3_loc *loc)
{
    loc->base = loc->uri = loc->host = NULL;
    if (!t || !t->endpoint || !bucket_ok(t->bucket, t->virtual_host) || !region_ok(t->region) ||
        !access_key_ok(t->access_key) || !text_ok(t->secret_key, SIGV4_MAX_SECRET, false, false))
        return false;
    if (!text_ok(key, SIGV4_MAX_KEY, false, false)) /* legal in S3 keys, never in ours */
        return false;

    const char *ep = t->endpoint, *default_port;
    if (strncmp(ep, "http://", 7) == 0) {
        default_port = "80";
        ep += 7;
    } else if (strncmp(ep, "https://", 8) == 0) {
        default_port = "443";
        ep += 8;
    } else {
        return false;
    }
    size_t alen = strnlen(ep, SIGV4_MAX_AUTHORITY + 1);
    if (alen == 0 || alen > SIGV4_MAX_AUTHORITY)
        return false;

    /* host part [hs, he) and optional port after ':' */
    const char *hs = ep, *he, *port = NULL;
    bool ipv6 = ep[0] == '[';
    if (ipv6) {
        const char *close = strchr(ep, ']');
        if (!close || close == ep + 1)
            return false;
        for (const char *p = ep + 1; p < close; p++)
            if (!(is_digit(*p) || (ascii_lower(*p) >= 'a' && ascii_lower(*p) <= 'f') || *p == ':' || *p == '.'))
                return false;
        he = close + 1;
    } else {
        he = ep;
        while (*he && *he != ':')
            he++;
        if (he == hs)
            return false;
        for (const char *p = hs; p < he; p++)
            if (!is_unreserved((unsigned char)*p) || *p == '~')
                return false;
    }
    if (*he == ':') {
        port = he + 1;
        size_t plen = strlen(port);
        if (plen == 0 || plen > 5)
            return false;
        for (size_t i = 0; i < plen; i++)
            if (!is_digit(port[i]))
                return false;
        long pv = strtol(port, NULL, 10);
        if (pv < 1 || pv > 65535)
            return false;
        if (strcmp(port, default_port) == 0)
            port = NULL; /* not signed: clients do not send the default port */
    } else if (*he != '\0') {
        return false;
    }
    if (t->virtual_host) {
        /* bucket.host needs a DNS name: an IP literal has no subdomains */
        bool all_ip = true;
        for (const char *p = hs; p < he; p++)
            if (!is_digit(*p) && *p != '.')
                all_ip = false;
        if (ipv6 || all_ip)
            return false;
    }

    struct sbuf host = {0}, uri = {0};
    if (t->virtual_host) {
        sb_add(&host, t->bucket);
        sb_addc(&host, '.');
    }
    for (const char *p = hs; p < he; p++)
        sb_addc(&host, ascii_lower(*p));
    if (port) {
        sb_addc(&host, ':');
        sb_add(&host, port);
    }
    sb_addc(&uri, '/');
    if (!t->virtual_host) {
        sb_add(&uri, t->bucket);
        sb_addc(&uri, '/');
    }
    sb_add_encoded(&uri, key, true);
    if (t->virtual_host)
        loc->base = xasprintf("%.*s%s.%s", (int)(ep - t->endpoint), t->endpoint, t->bucket, ep);
    else
        loc->base = xstrdup(t->endpoint);
    loc->host = sb_take(&host);
    loc->uri = sb_take(&uri);
    return true;
}

/* ------------------------------------------------------------ presign */

/* The query parameters sigv4 sets itself; callers may not pass them. */
static bool reserved_param(const char *name)
{
    static const char *const names[] = {"X-Amz-Algorithm",     "X-Amz-Credential",    "X-Amz-Date",
                                        "X-Amz-Expires",       "X-Amz-SignedHeaders", SIGV4_SIGNATURE_PARAM,
                                        "X-Amz-Security-Token"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Extra headers: lowercase unique tokens other than host, values without CR/LF/controls. */
static bool headers_ok(const struct sigv4_kv *h, size_t n)
{
    if (n > SIGV4_MAX_ITEMS - 1 || (n && !h))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name || !lower_token(h[i].name, strnlen(h[i].name, SIGV4_MAX_ID + 1)) ||
            strcmp(h[i].name, "host") == 0 || !text_ok(h[i].value, SIGV4_MAX_FIELD, true, true))
            return false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(h[i].name, h[j].name) == 0)
                return false;
    }
    return true;
}

static bool query_ok(const struct sigv4_kv *q, size_t n)
{
    if (n > SIGV4_MAX_ITEMS || (n && !q))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!q[i].name || !q[i].value || !*q[i].name || strnlen(q[i].name, SIGV4_MAX_FIELD + 1) > SIGV4_MAX_FIELD ||
            strnlen(q[i].value, SIGV4_MAX_FIELD + 1) > SIGV4_MAX_FIELD || reserved_param(q[i].name))
            return false;
    }
    return true;
}

/* The whole presign computation; `creq_out`/`sts_out` (owned, may be NULL)
 * receive the intermediate canonical request and string to sign (tests). */
static char *presign(const struct s3_target *t, const char *method, const char *key, int64_t now, int expires,
                     const struct sigv4_kv *headers, size_t nheaders, const struct sigv4_kv *query, size_t nquery,
                     char **creq_out, char **sts_out)
{
    struct s3_loc loc = {0};
    struct sigv4_kv *hv = NULL, *qv = NULL;
    char *out = NULL, *signed_headers = NULL, *canon_headers = NULL, *canon_query = NULL;
    char *credential = NULL, *scope = NULL, *creq = NULL, *sts = NULL;
    char amz_date[17], date8[9], expires_s[16], sig[65];
    struct sbuf url = {0};

    if (!method_ok(method) || expires < 1 || expires > SIGV4_MAX_EXPIRES || !format_amz_date(now, amz_date) ||
        !headers_ok(headers, nheaders) || !query_ok(query, nquery) || !locate(t, key, &loc))
        goto out;
    memcpy(date8, amz_date, 8);
    date8[8] = '\0';
    snprintf(expires_s, sizeof expires_s, "%d", expires);
    scope = xasprintf("%s/%s/" SIGV4_SERVICE "/" SIGV4_TERMINATOR, date8, t->region);
    credential = xasprintf("%s/%s", t->access_key, scope);

    hv = xcalloc(nheaders + 1, sizeof *hv);
    if (nheaders)
        memcpy(hv, headers, nheaders * sizeof *hv);
    hv[nheaders] = (struct sigv4_kv){"host", loc.host};
    canon_headers = canonical_headers(hv, nheaders + 1, &signed_headers);

    const struct sigv4_kv auth[] = {
        {"X-Amz-Algorithm", SIGV4_ALGORITHM}, {"X-Amz-Credential", credential},        {"X-Amz-Date", amz_date},
        {"X-Amz-Expires", expires_s},         {"X-Amz-SignedHeaders", signed_headers},
    };
    size_t nauth = sizeof auth / sizeof auth[0];
    qv = xcalloc(nquery + nauth, sizeof *qv);
    if (nquery)
        memcpy(qv, query, nquery * sizeof *qv);
    memcpy(qv + nquery, auth, sizeof auth);
    canon_query = canonical_query(qv, nquery + nauth, NULL);

    creq = canonical_request(method, loc.uri, canon_query, canon_headers, signed_headers, SIGV4_UNSIGNED_PAYLOAD);
    sts = string_to_sign(amz_date, scope, creq);
    if (!sign_hex(sig, t->secret_key, date8, t->region, sts))
        goto out;

    /* the caller's parameters in their order, then ours (botocore's layout) */
    sb_add(&url, loc.base);
    sb_add(&url, loc.uri);
    for (size_t i = 0; i < nquery + nauth; i++) {
        sb_addc(&url, i ? '&' : '?');
        sb_add_encoded(&url, qv[i].name, false);
        sb_addc(&url, '=');
        sb_add_encoded(&url, qv[i].value, false);
    }
    sb_add(&url, "&" SIGV4_SIGNATURE_PARAM "=");
    sb_add(&url, sig);
    out = sb_take(&url);
    if (creq_out) {
        *creq_out = creq;
        creq = NULL;
    }
    if (sts_out) {
        *sts_out = sts;
        sts = NULL;
    }
out:
    free(url.p);
    free(sts);
    free(creq);
    free(canon_query);
    free(qv);
    free(canon_headers);
    free(signed_headers);
    free(hv);
    free(credential);
    free(scope);
    loc_free(&loc);
    return out;
}

char *sigv4_presign(const struct s3_target *t, const char *method, const char *key, int64_t now, int expires,
                    const struct sigv4_kv *headers, size_t nheaders, const struct sigv4_kv *query, size_t nquery)
{
    return presign(t, method, key, now, expires, headers, nheaders, query, nquery, NULL, NULL);
}

/* ------------------------------------------------------------ header signing */

int sigv4_sign_request(const struct s3_target *t, const char *method, const char *key, int64_t now, char **url,
                       char **authorization, char **amz_date, char **content_sha256)
{
    struct s3_loc loc = {0};
    char *signed_headers = NULL, *canon_headers = NULL, *scope = NULL, *creq = NULL, *sts = NULL;
    char date[17], date8[9], sig[65];
    int rc = -1;

    if (url)
        *url = NULL;
    if (authorization)
        *authorization = NULL;
    if (amz_date)
        *amz_date = NULL;
    if (content_sha256)
        *content_sha256 = NULL;
    if (!url || !authorization || !amz_date || !content_sha256 || !method_ok(method) || !format_amz_date(now, date) ||
        !locate(t, key, &loc))
        goto out;
    memcpy(date8, date, 8);
    date8[8] = '\0';
    scope = xasprintf("%s/%s/" SIGV4_SERVICE "/" SIGV4_TERMINATOR, date8, t->region);
    const struct sigv4_kv hv[] = {{"host", loc.host},
                                  {"x-amz-content-sha256", SIGV4_UNSIGNED_PAYLOAD},
                                  {"x-amz-date", date}};
    canon_headers = canonical_headers(hv, sizeof hv / sizeof hv[0], &signed_headers);
    creq = canonical_request(method, loc.uri, "", canon_headers, signed_headers, SIGV4_UNSIGNED_PAYLOAD);
    sts = string_to_sign(date, scope, creq);
    if (!sign_hex(sig, t->secret_key, date8, t->region, sts))
        goto out;
    *url = xasprintf("%s%s", loc.base, loc.uri);
    *authorization = xasprintf("Authorization: " SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                               t->access_key, scope, signed_headers, sig);
    *amz_date = xasprintf("x-amz-date: %s", date);
    *content_sha256 = xstrdup("x-amz-content-sha256: " SIGV4_UNSIGNED_PAYLOAD);
    rc = 0;
out:
    free(sts);
    free(creq);
    free(canon_headers);
    free(signed_headers);
    free(scope);
    loc_free(&loc);
    return rc;
}

/* ------------------------------------------------------------ verification */

/* X-Amz-SignedHeaders: 1..64 lowercase tokens, ';'-separated, strictly
 * ascending (the canonical form). Fills names[] with owned copies. */
static bool parse_signed_headers(const char *s, char **names, size_t *n)
{
    *n = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (*n == SIGV4_MAX_ITEMS || !lower_token(p, len))
            return false;
        names[*n] = xstrndup(p, len);
        if (*n && strcmp(names[*n - 1], names[*n]) >= 0) {
            (*n)++;
            return false;
        }
        (*n)++;
        if (!end)
            return true;
        p = end + 1;
    }
}

static bool has_name(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* The verification, `creq_out` (owned, may be NULL) gets the rebuilt
 * canonical request when it got that far (tests). Check order: presence,
 * syntax, scope, required headers, signature, and time last, so EXPIRED
 * is only ever said of an authentic request. */
static enum sigv4_verdict verify(const struct s3_target *t, const struct sigv4_request *rq, int64_t now,
                                 const char *const *required_signed, size_t nrequired, char **creq_out)
{
    enum sigv4_verdict v = SIGV4_MALFORMED;
    const char *alg = NULL, *cred = NULL, *date = NULL, *exp = NULL, *sh = NULL, *sig = NULL;
    char *names[SIGV4_MAX_ITEMS];
    size_t nnames = 0;
    struct sigv4_kv *hv = NULL;
    char *uri = NULL, *canon_query = NULL, *canon_headers = NULL, *signed_headers = NULL, *creq = NULL;
    char *sts = NULL, *host = NULL, *scope = NULL;
    char expect[65];
    int64_t ts = 0, expires = 0;

    if (!t || !rq || !method_ok(rq->method) || !rq->path || rq->path[0] != '/' ||
        strnlen(rq->path, SIGV4_MAX_FIELD + 1) > SIGV4_MAX_FIELD || rq->nquery > SIGV4_MAX_ITEMS ||
        (rq->nquery && !rq->query) || (nrequired && !required_signed))
        goto out;
    struct {
        const char *name;
        const char **slot;
    } wanted[] = {{"X-Amz-Algorithm", &alg}, {"X-Amz-Credential", &cred},  {"X-Amz-Date", &date},
                  {"X-Amz-Expires", &exp},   {"X-Amz-SignedHeaders", &sh}, {SIGV4_SIGNATURE_PARAM, &sig}};
    for (size_t i = 0; i < rq->nquery; i++) {
        const struct sigv4_kv *q = &rq->query[i];
        if (!q->name || !q->value || strnlen(q->name, SIGV4_MAX_FIELD + 1) > SIGV4_MAX_FIELD ||
            strnlen(q->value, SIGV4_MAX_FIELD + 1) > SIGV4_MAX_FIELD)
            goto out;
        for (size_t w = 0; w < sizeof wanted / sizeof wanted[0]; w++) {
            if (strcmp(q->name, wanted[w].name) != 0)
                continue;
            if (*wanted[w].slot)
                goto out; /* repeated */
            *wanted[w].slot = q->value;
        }
    }
    if (!alg && !sig) {
        v = SIGV4_MISSING;
        goto out;
    }
    if (!alg || !cred || !date || !exp || !sh || !sig || strcmp(alg, SIGV4_ALGORITHM) != 0 ||
        !parse_amz_date(date, &ts))
        goto out;
    size_t elen = strlen(exp);
    if (elen == 0 || elen > 7)
        goto out;
    for (size_t i = 0; i < elen; i++)
        if (!is_digit(exp[i]))
            goto out;
    expires = strtol(exp, NULL, 10);
    if (expires < 1 || expires > SIGV4_MAX_EXPIRES)
        goto out;
    if (strlen(sig) != 64)
        goto out;
    for (size_t i = 0; i < 64; i++)
        if (!is_lower_hex(sig[i]))
            goto out;

    /* access_key/YYYYMMDD/region/service/aws4_request */
    const char *part[5];
    size_t plen[5], np = 0;
    for (const char *p = cred; np < 5; np++) {
        const char *slash = strchr(p, '/');
        part[np] = p;
        plen[np] = slash ? (size_t)(slash - p) : strlen(p);
        if (plen[np] == 0 || (np < 4) != (slash != NULL))
            goto out; /* an empty part, or not exactly five */
        p = slash ? slash + 1 : p + plen[np];
    }
    if (plen[4] != strlen(SIGV4_TERMINATOR) || memcmp(part[4], SIGV4_TERMINATOR, plen[4]) != 0 || plen[1] != 8 ||
        memcmp(part[1], date, 8) != 0)
        goto out;
    if (!parse_signed_headers(sh, names, &nnames))
        goto out;
    for (size_t i = 0; i < nrequired; i++)
        if (!required_signed[i])
            goto out;

    v = SIGV4_WRONG_KEY;
    if (!t->access_key || !t->region || plen[0] != strlen(t->access_key) ||
        memcmp(part[0], t->access_key, plen[0]) != 0 || plen[2] != strlen(t->region) ||
        memcmp(part[2], t->region, plen[2]) != 0 || plen[3] != strlen(SIGV4_SERVICE) ||
        memcmp(part[3], SIGV4_SERVICE, plen[3]) != 0)
        goto out;

    v = SIGV4_HEADER_UNSIGNED;
    if (!has_name(names, nnames, "host"))
        goto out;
    for (size_t i = 0; i < nrequired; i++)
        if (!has_name(names, nnames, required_signed[i]))
            goto out;

    /* rebuild the canonical request from the request as received; a signed
       header the request lacks cannot have been what was signed */
    v = SIGV4_BAD_SIGNATURE;
    hv = xcalloc(nnames, sizeof *hv);
    for (size_t i = 0; i < nnames; i++) {
        const char *value = rq->header ? rq->header(rq->header_ctx, names[i]) : NULL;
        if (!value || strnlen(value, SIGV4_MAX_FIELD + 1) > SIGV4_MAX_FIELD)
            goto out;
        if (strcmp(names[i], "host") == 0) {
            /* host names are case-insensitive; the signer lowercases */
            host = xstrdup(value);
            for (char *p = host; *p; p++)
                *p = ascii_lower(*p);
            value = host;
        }
        hv[i] = (struct sigv4_kv){names[i], value};
    }
    uri = sigv4_uri_encode(rq->path, true);
    canon_query = canonical_query(rq->query, rq->nquery, SIGV4_SIGNATURE_PARAM);
    canon_headers = canonical_headers(hv, nnames, &signed_headers);
    creq = canonical_request(rq->method, uri, canon_query, canon_headers, signed_headers, SIGV4_UNSIGNED_PAYLOAD);
    scope = xstrdup(cred + plen[0] + 1); /* date/region/s3/aws4_request, checked above */
    sts = string_to_sign(date, scope, creq);
    char date8[9];
    memcpy(date8, date, 8);
    date8[8] = '\0';
    if (!sign_hex(expect, t->secret_key, date8, t->region, sts) || sodium_memcmp(expect, sig, 64) != 0)
        goto out;

    /* ts is within 1970..9999, so neither side can overflow */
    v = SIGV4_EXPIRED;
    if (ts - SIGV4_MAX_SKEW > now || now > ts + expires)
        goto out;
    v = SIGV4_OK;
out:
    if (creq_out && creq) {
        *creq_out = creq;
        creq = NULL;
    }
    sodium_memzero(expect, sizeof expect);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(hv);
    free(host);
    free(uri);
    free(canon_query);
    free(canon_headers);
    free(signed_headers);
    free(creq);
    free(sts);
    free(scope);
    return v;
}

enum sigv4_verdict sigv4_verify_presigned(const struct s3_target *t, const struct sigv4_request *rq, int64_t now,
                                          const char *const *required_signed, size_t nrequired)
{
    return verify(t, rq, now, required_signed, nrequired, NULL);
}
