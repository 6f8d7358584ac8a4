/*
 * sigv4_tool.c — command-line front end to common/sigv4.c, so other SigV4
 * implementations can be compared with it (tests/api/test_sigv4_botocore.py).
 *
 *   sigv4-tool presign METHOD KEY NOW EXPIRES [--header name=value]... [--query name=value]...
 *       prints the pre-signed URL (sigv4_presign; --query in the order given)
 *   sigv4-tool sign METHOD KEY NOW
 *       prints the URL, then the Authorization, x-amz-date and
 *       x-amz-content-sha256 header lines (sigv4_sign_request)
 *   sigv4-tool verify METHOD URL NOW [--header name=value]... [--require name]...
 *       prints the verdict of sigv4_verify_presigned for URL as a server would
 *       receive it (path and parameters percent-decoded); the host header is
 *       the URL's host[:port] unless --header host=... is given
 *
 * NOW is unix seconds. The target comes from NATTER_S3_ENDPOINT,
 * NATTER_S3_BUCKET, NATTER_S3_REGION, NATTER_S3_ACCESS_KEY,
 * NATTER_S3_SECRET_KEY and NATTER_S3_ADDRESSING=path|virtual (default path).
 * Exit status: 0 done (verify: verdict OK), 1 refused or another verdict,
 * 2 usage error.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "sigv4.h"
#include "util.h"

#define MAX_ARGS 64

static const char *const verdict_names[] = {"OK",      "MISSING",       "MALFORMED",      "WRONG_KEY",
                                            "EXPIRED", "BAD_SIGNATURE", "HEADER_UNSIGNED"};

static int usage(const char *why)
{
    fprintf(stderr,
            "sigv4-tool: %s\n"
            "usage: sigv4-tool presign METHOD KEY NOW EXPIRES [--header name=value]... [--query name=value]...\n"
            "       sigv4-tool sign METHOD KEY NOW\n"
            "       sigv4-tool verify METHOD URL NOW [--header name=value]... [--require name]...\n"
            "target: NATTER_S3_ENDPOINT, NATTER_S3_BUCKET, NATTER_S3_REGION, NATTER_S3_ACCESS_KEY,\n"
            "        NATTER_S3_SECRET_KEY, NATTER_S3_ADDRESSING=path|virtual\n",
            why);
    return 2;
}

/* Everything the options and the parsed URL own. */
struct args {
    struct sigv4_kv headers[MAX_ARGS], query[MAX_ARGS];
    size_t nheaders, nquery;
    const char *required[MAX_ARGS];
    size_t nrequired;
    char *owned[4 * MAX_ARGS + 4];
    size_t nowned;
};

static char *own(struct args *a, char *s)
{
    a->owned[a->nowned++] = s; /* callers check the room first */
    return s;
}

static void args_free(struct args *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
}

/* "name=value" into kv (owned copies); false without '='. */
static bool split_kv(struct args *a, const char *arg, struct sigv4_kv *kv)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        return false;
    kv->name = own(a, xstrndup(arg, (size_t)(eq - arg)));
    kv->value = own(a, xstrdup(eq + 1));
    return true;
}

/* --header/--query/--require options from argv[i..argc). */
static bool parse_options(struct args *a, int argc, char **argv, int i, bool verify)
{
    for (; i < argc; i += 2) {
        if (i + 1 >= argc || a->nowned + 2 > sizeof a->owned / sizeof a->owned[0] - 4)
            return false;
        if (strcmp(argv[i], "--header") == 0 && a->nheaders < MAX_ARGS) {
            if (!split_kv(a, argv[i + 1], &a->headers[a->nheaders++]))
                return false;
        } else if (strcmp(argv[i], "--query") == 0 && !verify && a->nquery < MAX_ARGS) {
            if (!split_kv(a, argv[i + 1], &a->query[a->nquery++]))
                return false;
        } else if (strcmp(argv[i], "--require") == 0 && verify && a->nrequired < MAX_ARGS) {
            a->required[a->nrequired++] = argv[i + 1];
        } else {
            return false;
        }
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL on a bad escape or %00. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

static const char *lookup(void *ctx, const char *name)
{
    const struct args *a = ctx;
    for (size_t i = 0; i < a->nheaders; i++)
        if (strcasecmp(a->headers[i].name, name) == 0)
            return a->headers[i].value;
    return NULL;
}

static int do_verify(const struct s3_target *t, const char *method, const char *url, int64_t now, struct args *a)
{
    const char *auth = strstr(url, "://");
    const char *path = auth ? strchr(auth + 3, '/') : NULL;
    if (!path)
        return usage("URL must be scheme://host[:port]/path[?query]");
    if (!lookup(a, "host")) {
        if (a->nheaders == MAX_ARGS)
            return usage("too many headers");
        a->headers[a->nheaders].name = "host";
        a->headers[a->nheaders++].value = own(a, xstrndup(auth + 3, (size_t)(path - auth - 3)));
    }
    const char *qm = strchr(path, '?');
    char *dpath = own(a, pct_decode(path, qm ? (size_t)(qm - path) : strlen(path)));
    if (!dpath)
        return usage("bad percent-encoding in the path");
    for (const char *q = qm ? qm + 1 : NULL; q && *q;) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t nlen = eq ? (size_t)(eq - q) : len;
        if (a->nquery == MAX_ARGS || a->nowned + 2 > sizeof a->owned / sizeof a->owned[0])
            return usage("too many query parameters");
        struct sigv4_kv *kv = &a->query[a->nquery++];
        kv->name = own(a, pct_decode(q, nlen));
        kv->value = own(a, eq ? pct_decode(eq + 1, len - nlen - 1) : xstrdup(""));
        if (!kv->name || !kv->value)
            return usage("bad percent-encoding in the query");
        q = amp ? amp + 1 : NULL;
    }
    struct sigv4_request rq = {method, dpath, a->query, a->nquery, lookup, a};
    enum sigv4_verdict v = sigv4_verify_presigned(t, &rq, now, a->required, a->nrequired);
    printf("%s\n", (size_t)v < sizeof verdict_names / sizeof verdict_names[0] ? verdict_names[v] : "?");
    return v == SIGV4_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct args a = {0};
    int rc = 2;
    int64_t now;

    if (sodium_init() < 0)
        return 1;
    if (argc < 5)
        return usage("missing arguments");
    const char *addressing = getenv("NATTER_S3_ADDRESSING");
    struct s3_target t = {
        .endpoint = getenv("NATTER_S3_ENDPOINT"),
        .bucket = getenv("NATTER_S3_BUCKET"),
        .region = getenv("NATTER_S3_REGION"),
        .access_key = getenv("NATTER_S3_ACCESS_KEY"),
        .secret_key = getenv("NATTER_S3_SECRET_KEY"),
        .virtual_host = addressing && strcmp(addressing, "virtual") == 0,
    };
    if (!t.endpoint || !t.bucket || !t.region || !t.access_key || !t.secret_key)
        return usage("the NATTER_S3_* target variables are not all set");
    if (addressing && *addressing && strcmp(addressing, "path") != 0 && strcmp(addressing, "virtual") != 0)
        return usage("NATTER_S3_ADDRESSING must be path or virtual");
    if (!parse_i64(argv[4], &now))
        return usage("NOW must be unix seconds");

    if (strcmp(argv[1], "presign") == 0) {
        int64_t expires;
        if (argc < 6 || !parse_i64(argv[5], &expires) || expires < INT_MIN || expires > INT_MAX)
            return usage("EXPIRES must be seconds");
        if (!parse_options(&a, argc, argv, 6, false)) {
            rc = usage("bad option");
            goto out;
        }
        char *url = sigv4_presign(&t, argv[2], argv[3], now, (int)expires, a.headers, a.nheaders, a.query, a.nquery);
        if (url) {
            printf("%s\n", url);
            rc = 0;
        } else {
            fprintf(stderr, "sigv4-tool: sigv4_presign refused the input\n");
            rc = 1;
        }
        free(url);
    } else if (strcmp(argv[1], "sign") == 0) {
        char *url = NULL, *auth = NULL, *date = NULL, *sha = NULL;
        if (argc != 5)
            return usage("sign takes no options");
        if (sigv4_sign_request(&t, argv[2], argv[3], now, &url, &auth, &date, &sha) == 0) {
            printf("%s\n%s\n%s\n%s\n", url, auth, date, sha);
            rc = 0;
        } else {
            fprintf(stderr, "sigv4-tool: sigv4_sign_request refused the input\n");
            rc = 1;
        }
        free(url);
        free(auth);
        free(date);
        free(sha);
    } else if (strcmp(argv[1], "verify") == 0) {
        if (!parse_options(&a, argc, argv, 5, true)) {
            rc = usage("bad option");
            goto out;
        }
        rc = do_verify(&t, argv[2], argv[3], now, &a);
    } else {
        rc = usage("unknown command");
    }
out:
    args_free(&a);
    return rc;
}
