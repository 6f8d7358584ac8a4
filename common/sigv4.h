/*
 * sigv4.h — AWS Signature Version 4 for S3: query-string pre-signed URLs (what
 * clients get), header-signed requests (natter's own HEAD/DELETE to the store)
 * and verification of pre-signed URLs (the embedded store), so the same code
 * works with the embedded store and any S3-compatible service.
 *
 * All functions are pure (no I/O, no clock): the caller passes `now`.
 * Keys are object keys as stored (not percent-encoded); encoding follows S3's
 * rules (RFC 3986 unreserved characters kept, everything else %XX uppercase,
 * '/' kept in paths).
 */
#ifndef NATTER_SIGV4_H
#define NATTER_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct s3_target {
    const char *endpoint; /* scheme://host[:port], no trailing slash, no path */
    const char *bucket;
    const char *region; /* e.g. us-east-1 */
    const char *access_key;
    const char *secret_key;
    bool virtual_host; /* true: https://bucket.host/key; false: path style host/bucket/key */
};

struct sigv4_kv {
    const char *name; /* headers: lowercase name; query: parameter name */
    const char *value;
};

/* Pre-signed URL (owned string) for `method` on `key`, valid for `expires`
 * seconds (1..604800) from `now` (unix seconds). `headers` are extra headers
 * the client must send and that are signed besides host (e.g. content-type,
 * content-length); `query` are extra parameters signed into the URL (e.g.
 * response-content-disposition). Payload: UNSIGNED-PAYLOAD. NULL on bad input. */
char *sigv4_presign(const struct s3_target *t, const char *method, const char *key, int64_t now, int expires,
                    const struct sigv4_kv *headers, size_t nheaders, const struct sigv4_kv *query, size_t nquery);

/* For a request natter itself sends with headers (HEAD, DELETE): fills
 * `url` (owned) and the header lines to add, each owned, "Name: value":
 * Authorization, x-amz-date, x-amz-content-sha256 (UNSIGNED-PAYLOAD).
 * Returns 0 or -1. */
int sigv4_sign_request(const struct s3_target *t, const char *method, const char *key, int64_t now, char **url,
                       char **authorization, char **amz_date, char **content_sha256);

/* One request as the embedded store saw it. */
struct sigv4_request {
    const char *method;
    const char *path;             /* decoded path, e.g. /natter/att/1/abc (path style) */
    const struct sigv4_kv *query; /* decoded query parameters, any order */
    size_t nquery;
    const char *(*header)(void *ctx, const char *lowercase_name); /* request header lookup */
    void *header_ctx;
};

enum sigv4_verdict {
    SIGV4_OK = 0,
    SIGV4_MISSING,         /* not a pre-signed request (no X-Amz-Signature / algorithm) */
    SIGV4_MALFORMED,       /* bad date, expires, credential, signed headers list */
    SIGV4_WRONG_KEY,       /* unknown access key, or credential scope not ours */
    SIGV4_EXPIRED,         /* now > X-Amz-Date + X-Amz-Expires, or X-Amz-Date in the future (> 15 min) */
    SIGV4_BAD_SIGNATURE,   /* signature mismatch (constant-time compare) */
    SIGV4_HEADER_UNSIGNED, /* a header the store requires signed (e.g. content-length on PUT) is not */
};

/* Verifies a pre-signed (query-string) request against the target's access
 * key, secret and region at `now`. `required_signed` lists lowercase header
 * names that must be among X-Amz-SignedHeaders (e.g. "content-length",
 * "content-type" for PUT); host is always required. */
enum sigv4_verdict sigv4_verify_presigned(const struct s3_target *t, const struct sigv4_request *rq, int64_t now,
                                          const char *const *required_signed, size_t nrequired);

/* S3 URI encoding of s into a new owned string; keep_slash for paths. */
char *sigv4_uri_encode(const char *s, bool keep_slash);

#endif
