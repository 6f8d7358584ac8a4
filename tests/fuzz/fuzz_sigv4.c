/*
 * fuzz_sigv4.c — the embedded store's check of pre-signed URLs
 * (sigv4_verify_presigned), on requests as libmicrohttpd hands them over:
 * decoded path, decoded query parameters, headers. Input lines: the method,
 * the path, then "name=value" query parameters up to a line "-", then
 * "name: value" headers. Properties: the verdict is one of the enum's; a
 * request that carries no signature is never OK; and sigv4_uri_encode of
 * any input yields only unreserved characters, '/' and %XX.
 */
#include <ctype.h>
#include <stdbool.h>

#include "fuzz.h"
#include "sigv4.h"

#define MAX_KV 24

static const struct s3_target target = {
    "http://127.0.0.1:8080", "natter", "us-east-1", "natter-dev", "secret-of-the-fuzz-harness", false,
};

struct hdrs {
    struct sigv4_kv kv[MAX_KV];
    size_t n;
};

static const char *header_of(void *ctx, const char *name)
{
    const struct hdrs *h = ctx;
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->kv[i].name, name) == 0)
            return h->kv[i].value;
    return NULL;
}

static void check_encoding(const char *s)
{
    char *e = sigv4_uri_encode(s, true);
    if (!e)
        return;
    for (const char *p = e; *p; p++) {
        if (*p == '%') {
            FUZZ_ASSERT(isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]));
            p += 2;
        } else {
            FUZZ_ASSERT(isalnum((unsigned char)*p) || strchr("-._~/", *p));
        }
    }
    free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *in = fuzz_cstr(data, size);
    char *save = NULL;
    char *method = strtok_r(in, "\n", &save);
    char *path = method ? strtok_r(NULL, "\n", &save) : NULL;
    if (!path) {
        free(in);
        return 0;
    }
    struct sigv4_kv q[MAX_KV];
    size_t nq = 0;
    struct hdrs h = {.n = 0};
    bool headers = false, signature = false;
    for (char *line = strtok_r(NULL, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strcmp(line, "-") == 0) { /* strtok_r skips empty lines: "-" ends the query */
            headers = true;
            continue;
        }
        char *sep = strchr(line, headers ? ':' : '=');
        if (!sep)
            continue;
        *sep = '\0';
        const char *value = sep + 1 + (headers && sep[1] == ' ');
        if (!headers && nq < MAX_KV) {
            signature |= strcmp(line, "X-Amz-Signature") == 0;
            q[nq++] = (struct sigv4_kv){line, value};
        } else if (headers && h.n < MAX_KV) {
            h.kv[h.n++] = (struct sigv4_kv){line, value};
        }
    }
    static const char *const required[] = {"content-length"};
    struct sigv4_request rq = {method, path, q, nq, header_of, &h};
    enum sigv4_verdict v = sigv4_verify_presigned(&target, &rq, 1764000000, required, 1);
    FUZZ_ASSERT(v >= SIGV4_OK && v <= SIGV4_HEADER_UNSIGNED);
    if (!signature)
        FUZZ_ASSERT(v != SIGV4_OK);
    check_encoding(path);
    free(in);
    return 0;
}
