/*
 * blobstore.c — the embedded object store (see blobstore.h).
 *
 * Layout: <dir>/<sha256(key)>.data and <sha256(key)>.meta (JSON: key,
 * content_type, size, etag, sha256). Hashing the key makes every key a flat, fixed-length
 * file name: no path traversal, no directory trees, no length limits — and
 * keys with "..", empty segments or odd characters are refused anyway.
 * Writes go to a temp file (O_EXCL), are fsynced, then linked into place: a
 * reader sees no object or the whole one, never a torn one.
 *
 * Objects are immutable. Every PUT signs x-amz-checksum-sha256 (the digest the
 * client declared to natter-api) and the store refuses a body with another
 * digest (400 bad_digest), as S3 does. An object, once stored, is never
 * replaced: link() refuses an existing name, a PUT of the same bytes again
 * answers 200 and changes nothing, and a PUT of other bytes onto an existing
 * key is 409 object_exists.
 */
#include "blobstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "http.h"
#include "log.h"
#include "sigv4.h"
#include "store.h"
#include "util.h"

#define KEY_MAX 512
#define MAX_QUERY 32
#define PATH_MAX_LEN 1024 /* blob_init refuses a longer data directory */
/* response-content-disposition + response-content-type, bytes: the answer's
 * head must fit the connection's memory (8 KiB, with the request's head) or
 * libmicrohttpd closes the connection without an answer. natter-api's longest
 * Content-Disposition (a 255-byte filename, every byte escaped) is ~1,060. */
#define OVERRIDES_MAX 1536

struct blob {
    char key[KEY_MAX + 1];
    char base[PATH_MAX_LEN]; /* <dir>/<sha256(key)> */
    char tmp[PATH_MAX_LEN];  /* temp file while a PUT streams in, "" otherwise */
    int fd;
    int64_t expected, received;
    char content_type[256];
    crypto_hash_sha256_state sha;
    unsigned char want[crypto_hash_sha256_BYTES]; /* PUT: the signed x-amz-checksum-sha256 */
    bool failed;
};

static char *data_dir;
static const struct config *cfg; /* set by blob_init */

int blob_init(const struct config *c)
{
    cfg = c;
    free(data_dir);
    data_dir = *cfg->blob_dir ? xstrdup(cfg->blob_dir) : xasprintf("%s/blobs", cfg->state_dir);
    if (strlen(data_dir) > PATH_MAX_LEN - 100) {
        nlog(LOG_ERROR, "blob dir path too long", json_pack("{s:s}", "path", data_dir));
        return -1;
    }
    if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST) {
        nlog(LOG_ERROR, "cannot create state dir", json_pack("{s:s}", "path", cfg->state_dir));
        return -1;
    }
    if (mkdir(data_dir, 0700) < 0 && errno != EEXIST) {
        nlog(LOG_ERROR, "cannot create blob dir", json_pack("{s:s,s:s}", "path", data_dir, "error", strerror(errno)));
        return -1;
    }
    nlog(LOG_INFO, "embedded object store", json_pack("{s:s,s:s}", "dir", data_dir, "bucket", cfg->s3_bucket));
    return 0;
}

static bool blob_claims(const char *path)
{
    if (!data_dir || !config_embedded_store(cfg))
        return false;
    size_t bl = strlen(cfg->s3_bucket);
    return path[0] == '/' && strncmp(path + 1, cfg->s3_bucket, bl) == 0 && path[1 + bl] == '/';
}

/* Keys we accept: 1..512 bytes of [A-Za-z0-9._-/], no empty, "." or ".." segment. */
static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > KEY_MAX || k[0] == '/' || k[n - 1] == '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || c == '/'))
            return false;
    }
    const char *seg = k;
    while (seg) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        seg = end ? end + 1 : NULL;
    }
    return true;
}

/* <dir>/<sha256(key)> into out (PATH_MAX_LEN). */
static void base_of(const char *key, char *out)
{
    char h[65];
    sha256_hex(key, strlen(key), h);
    snprintf(out, PATH_MAX_LEN, "%s/%s", data_dir, h);
}

static json_t *read_meta_at(const char *base)
{
    char path[PATH_MAX_LEN + 8];
    snprintf(path, sizeof path, "%s.meta", base);
    return json_load_file(path, 0, NULL);
}

/* The meta of an object's data file that exists, NULL when there is none. */
static json_t *existing_meta(const char *base)
{
    char data[PATH_MAX_LEN + 8];
    snprintf(data, sizeof data, "%s.data", base);
    if (access(data, F_OK) != 0)
        return NULL;
    json_t *m = read_meta_at(base);
    return m ? m : json_object(); /* data without readable meta: still an object */
}

/* Does the stored meta carry this digest (hex)? */
static bool meta_digest_is(const json_t *meta, const unsigned char want[crypto_hash_sha256_BYTES])
{
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, want, crypto_hash_sha256_BYTES);
    const char *stored = json_string_value(json_object_get(meta, "sha256"));
    return stored && strcmp(stored, hex) == 0;
}

int blob_stat(const char *key, int64_t *size, char sha256[65])
{
    if (!data_dir || !key_ok(key))
        return -1;
    char base[PATH_MAX_LEN], data[PATH_MAX_LEN + 8];
    base_of(key, base);
    snprintf(data, sizeof data, "%s.data", base);
    struct stat st;
    if (stat(data, &st) != 0)
        return errno == ENOENT ? 1 : -1;
    json_t *meta = read_meta_at(base);
    const char *h = json_string_value(json_object_get(meta, "sha256"));
    snprintf(sha256, 65, "%s", h ? h : "");
    json_decref(meta);
    *size = (int64_t)st.st_size;
    return 0;
}

static const char *header_of(void *ctx, const char *name)
{
    return req_header(ctx, name);
}

struct qcollect {
    struct sigv4_kv kv[MAX_QUERY];
    size_t n;
    bool overflow;
};

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct qcollect *q = cls;
    if (q->n == MAX_QUERY) {
        q->overflow = true;
        return MHD_NO;
    }
    q->kv[q->n].name = key;
    q->kv[q->n].value = value ? value : "";
    q->n++;
    return MHD_YES;
}

static void free_blob(void *p)
{
    struct blob *b = p;
    if (b->fd >= 0)
        close(b->fd);
    if (b->tmp[0])
        unlink(b->tmp);
    free(b);
}

static void blob_begin(struct req *r)
{
    struct blob *b = xcalloc(1, sizeof *b);
    b->fd = -1;
    req_defer(r, free_blob, b);
    r->raw_state = b;
    const char *key = r->path + 2 + strlen(cfg->s3_bucket);
    if (!key_ok(key))
        return (void)reply_problem(r, 400, "invalid_key",
                                   "object keys are 1-512 characters of A-Z a-z 0-9 . _ - /"
                                   " without empty, '.' or '..' segments");
    snprintf(b->key, sizeof b->key, "%s", key);
    base_of(key, b->base);

    bool put = strcmp(r->method, "PUT") == 0;
    if (!put && strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0 && strcmp(r->method, "DELETE") != 0) {
        req_add_header(r, "Allow", "GET, HEAD, PUT, DELETE");
        return (void)reply_problem(r, 405, "method_not_allowed", "%s is not allowed here", r->method);
    }
    struct qcollect q = {0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect, &q);
    if (q.overflow)
        return (void)reply_problem(r, 400, "invalid_parameter", "too many query parameters");
    struct s3_target t;
    store_target(cfg, &t);
    struct sigv4_request rq = {r->method, r->path, q.kv, q.n, header_of, r};
    /* the store insists that uploads sign their size, type and digest, so a
     * client cannot store something other than what natter-api agreed to */
    static const char *const put_signed[] = {"content-length", "content-type", "x-amz-checksum-sha256"};
    enum sigv4_verdict v = sigv4_verify_presigned(&t, &rq, wall_time_s(), put_signed, put ? 3 : 0);
    switch (v) {
    case SIGV4_OK:
        break;
    case SIGV4_EXPIRED:
        return (void)reply_problem(r, 403, "url_expired", "the pre-signed URL has expired");
    case SIGV4_MISSING:
        return (void)reply_problem(r, 403, "access_denied", "a pre-signed URL is required");
    case SIGV4_HEADER_UNSIGNED:
        return (void)reply_problem(r, 403, "access_denied",
                                   "uploads must sign content-length, content-type and x-amz-checksum-sha256");
    case SIGV4_WRONG_KEY:
        return (void)reply_problem(r, 403, "access_denied", "unknown access key or credential scope");
    case SIGV4_MALFORMED:
        return (void)reply_problem(r, 400, "invalid_parameter", "malformed pre-signed URL");
    case SIGV4_BAD_SIGNATURE:
        return (void)reply_problem(r, 403, "signature_mismatch", "the request signature does not match");
    }
    if (!put) {
        const char *cd = req_query(r, "response-content-disposition");
        const char *ct = req_query(r, "response-content-type");
        if ((cd ? strlen(cd) : 0) + (ct ? strlen(ct) : 0) > OVERRIDES_MAX)
            return (void)reply_problem(r, 400, "invalid_parameter",
                                       "response-content-disposition and response-content-type are at most %d bytes"
                                       " together",
                                       OVERRIDES_MAX);
        return;
    }
    /* signed, so present: its value is what the signature covers */
    const char *digest = req_header(r, "x-amz-checksum-sha256");
    size_t dlen = 0;
    if (!digest || strlen(digest) != 44 ||
        sodium_base642bin(b->want, sizeof b->want, digest, 44, NULL, &dlen, NULL, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        dlen != sizeof b->want)
        return (void)reply_problem(r, 400, "invalid_digest",
                                   "x-amz-checksum-sha256 must be the base64 of a SHA-256 digest");
    json_t *old = existing_meta(b->base);
    bool exists = old != NULL, same = exists && meta_digest_is(old, b->want);
    json_decref(old);
    if (exists && !same)
        return (void)reply_problem(r, 409, "object_exists", "the object exists and objects are never replaced");
    const char *cl = req_header(r, "Content-Length");
    if (!cl || !parse_i64(cl, &b->expected) || b->expected < 0)
        return (void)reply_problem(r, 411, "length_required", "uploads need a Content-Length");
    if (b->expected > cfg->attachment_max_bytes)
        return (void)reply_problem(r, 413, "payload_too_large", "objects are at most %d bytes",
                                   cfg->attachment_max_bytes);
    const char *ct = req_header(r, "Content-Type");
    snprintf(b->content_type, sizeof b->content_type, "%s", ct ? ct : "application/octet-stream");
    char rnd[17];
    random_hex(rnd, 8);
    snprintf(b->tmp, sizeof b->tmp, "%s/.tmp-%s", data_dir, rnd);
    b->fd = open(b->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (b->fd < 0) {
        b->tmp[0] = '\0';
        return (void)reply_problem(r, 500, "internal_error", "cannot store the object");
    }
    crypto_hash_sha256_init(&b->sha);
    r->body_limit = (size_t)b->expected;
}

static int blob_write(struct req *r, const char *data, size_t n)
{
    struct blob *b = r->raw_state;
    if (b->failed || b->fd < 0)
        return -1;
    if (b->received + (int64_t)n > b->expected) {
        b->failed = true;
        return -1;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(b->fd, data + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            b->failed = true;
            nlog(LOG_ERROR, "blob write failed",
                 json_pack("{s:s,s:s}", "request_id", r->request_id, "error", strerror(errno)));
            return -1;
        }
        off += (size_t)w;
    }
    crypto_hash_sha256_update(&b->sha, (const unsigned char *)data, n);
    b->received += (int64_t)n;
    return 0;
}

static int write_meta(struct blob *b, const char *etag, const char *sha_hex)
{
    char path[PATH_MAX_LEN + 8];
    snprintf(path, sizeof path, "%s.meta", b->base);
    json_t *m = json_pack("{s:s,s:s,s:I,s:s,s:s}", "key", b->key, "content_type", b->content_type, "size",
                          (json_int_t)b->expected, "etag", etag, "sha256", sha_hex);
    char tmp[PATH_MAX_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s.meta-tmp", b->tmp);
    int rc = json_dump_file(m, tmp, JSON_COMPACT);
    json_decref(m);
    if (rc == 0 && rename(tmp, path) == 0)
        return 0;
    unlink(tmp);
    return -1;
}

static json_t *read_meta(const struct blob *b)
{
    return read_meta_at(b->base);
}

/* Adds x-amz-checksum-sha256 (base64, as S3 answers it) from the meta's hex digest. */
static void add_checksum_header(struct MHD_Response *resp, const json_t *meta)
{
    const char *hex = json_string_value(json_object_get(meta, "sha256"));
    unsigned char bin[crypto_hash_sha256_BYTES];
    size_t n = 0;
    char b64[64];
    if (!hex || sodium_hex2bin(bin, sizeof bin, hex, strlen(hex), NULL, &n, NULL) != 0 || n != sizeof bin)
        return;
    sodium_bin2base64(b64, sizeof b64, bin, sizeof bin, sodium_base64_VARIANT_ORIGINAL);
    MHD_add_response_header(resp, "x-amz-checksum-sha256", b64);
}

static void blob_finish(struct req *r)
{
    struct blob *b = r->raw_state;
    char data[PATH_MAX_LEN + 8];
    snprintf(data, sizeof data, "%s.data", b->base);
    if (strcmp(r->method, "PUT") == 0) {
        if (b->failed || b->received != b->expected)
            return (void)reply_problem(r, 400, "incomplete_body", "the body does not match the signed Content-Length");
        unsigned char h[crypto_hash_sha256_BYTES];
        char etag[70], sha_hex[65];
        crypto_hash_sha256_final(&b->sha, h);
        if (sodium_memcmp(h, b->want, sizeof h) != 0)
            return (void)reply_problem(r, 400, "bad_digest",
                                       "the body's SHA-256 does not match the signed x-amz-checksum-sha256");
        sodium_bin2hex(sha_hex, sizeof sha_hex, h, sizeof h);
        etag[0] = '"';
        sodium_bin2hex(etag + 1, 65, h, 16);
        strcat(etag, "\"");
        json_t *old = existing_meta(b->base);
        if (old) { /* stored before (a retry, or a PUT that raced ours): never replaced */
            bool same = meta_digest_is(old, h);
            json_decref(old);
            if (!same)
                return (void)reply_problem(r, 409, "object_exists", "the object exists and objects are never replaced");
            req_add_header(r, "ETag", etag);
            return (void)reply_empty(r, 200);
        }
        if (fsync(b->fd) != 0 || close(b->fd) != 0) {
            b->fd = -1;
            return (void)reply_problem(r, 500, "internal_error", "cannot store the object");
        }
        b->fd = -1;
        /* meta first, then data: a reader that finds the data finds its meta.
         * link() never replaces an existing name (the temp file goes in the
         * request's cleanup) */
        if (write_meta(b, etag, sha_hex) < 0)
            return (void)reply_problem(r, 500, "internal_error", "cannot store the object");
        if (link(b->tmp, data) != 0) {
            bool exists = errno == EEXIST; /* saved: read_meta may change errno */
            json_t *raced = exists ? read_meta(b) : NULL;
            bool same = raced && meta_digest_is(raced, h);
            json_decref(raced);
            if (!same)
                return (void)reply_problem(r, exists ? 409 : 500, exists ? "object_exists" : "internal_error",
                                           "cannot store the object");
        }
        req_add_header(r, "ETag", etag);
        return (void)reply_empty(r, 200);
    }
    if (strcmp(r->method, "DELETE") == 0) {
        char meta[PATH_MAX_LEN + 8];
        snprintf(meta, sizeof meta, "%s.meta", b->base);
        unlink(data);
        unlink(meta);
        return (void)reply_empty(r, 204);
    }
    json_t *meta = read_meta(b);
    int fd = meta ? open(data, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        json_decref(meta);
        return (void)reply_problem(r, 404, "no_such_key", "no such object");
    }
    req_own_json(r, meta);
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* MHD closes fd */
    const char *ct = req_query(r, "response-content-type");
    const char *cd = req_query(r, "response-content-disposition");
    const char *stored_ct = json_string_value(json_object_get(meta, "content_type"));
    MHD_add_response_header(resp, "Content-Type", ct ? ct : stored_ct ? stored_ct : "application/octet-stream");
    if (cd)
        MHD_add_response_header(resp, "Content-Disposition", cd);
    const char *etag = json_string_value(json_object_get(meta, "etag"));
    if (etag)
        MHD_add_response_header(resp, "ETag", etag);
    add_checksum_header(resp, meta);
    req_send_response(r, 200, resp);
}

const struct raw_handler blob_handler = {
    .label = "/{bucket}/{key}",
    .claims = blob_claims,
    .begin = blob_begin,
    .write = blob_write,
    .finish = blob_finish,
};
