/*
 * attachments.c — attachments through pre-signed URLs:
 *
 *   POST /v1/chats/{id}/attachments     {filename, content_type, size, sha256}
 *                                       -> a pending attachment + a PUT URL
 *                                       that signs host, content-length,
 *                                       content-type and x-amz-checksum-sha256
 *                                       (the store refuses any other size,
 *                                       type or bytes: a completed
 *                                       attachment's bytes never change).
 *                                       A user has at most
 *                                       NATTER_ATTACHMENT_PENDING_MAX(_BYTES)
 *                                       pending at once.
 *   POST /v1/attachments/{id}/complete  the uploader says done: natter-api
 *                                       looks at the object (its embedded
 *                                       store directly, S3 with a signed HEAD)
 *                                       and checks its size (and digest),
 *                                       then marks it uploaded
 *   GET  /v1/attachments/{id}           members of its chat: metadata and a
 *                                       short-lived GET URL whose
 *                                       Content-Disposition keeps the original
 *                                       filename safely quoted (?redirect=1: 302)
 *
 * The same code serves the embedded store and any S3-compatible service.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "apilimits.h"
#include "app.h"
#include "blobstore.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "sigv4.h"
#include "store.h"
#include "tx.h"
#include "util.h"

/* Filenames are bounded in bytes, not characters: the download's
 * Content-Disposition carries the name twice (an ASCII fallback and the
 * percent-encoded UTF-8, up to 4 bytes per byte) and must fit, with the
 * request, in the connection's 8 KiB (see blobstore.c OVERRIDES_MAX). */
#define FILENAME_MAX_BYTES 255
/* pg_advisory_xact_lock(class, key) class of the per-user quota lock ("natt") */
#define QUOTA_LOCK_CLASS "1851880564"

#define RETURNING_COLS                                                                                         \
    "id, chat_id, uploader_id, filename, content_type, size, status, " DB_TS_RET("created_at") ", " DB_TS_RET( \
        "uploaded_at") ", object_key, sha256"
#define ATTACHMENT_COLS                                                                                                \
    "a.id, a.chat_id, a.uploader_id, a.filename, a.content_type, a.size, a.status, " DB_TS("a.created_at") ", " DB_TS( \
        "a.uploaded_at") ", a.object_key, a.sha256"

static json_t *nullable(const PGresult *res, int i, int col)
{
    return PQgetisnull(res, i, col) ? json_null() : json_string(PQgetvalue(res, i, col));
}

static json_t *attachment_json(const PGresult *res, int i)
{
    return json_pack("{s:s,s:I,s:I,s:s,s:s,s:I,s:s,s:s,s:o,s:o}", "id", PQgetvalue(res, i, 0), "chat_id",
                     (json_int_t)db_i64(res, i, 1), "uploader_id", (json_int_t)db_i64(res, i, 2), "filename",
                     PQgetvalue(res, i, 3), "content_type", PQgetvalue(res, i, 4), "size",
                     (json_int_t)db_i64(res, i, 5), "status", PQgetvalue(res, i, 6), "created_at",
                     PQgetvalue(res, i, 7), "uploaded_at", nullable(res, i, 8), "sha256", nullable(res, i, 10));
}

static void expiry_text(int64_t now, int ttl, char *buf, size_t len)
{
    rfc3339_ms((now + ttl) * 1000, buf, len);
}

/* type/subtype of RFC 6838 restricted-name characters, lowercased into out. */
static bool content_type_ok(const char *ct, char *out, size_t outlen)
{
    size_t n = strlen(ct);
    if (n < 3 || n >= outlen || n > 100)
        return false;
    int slashes = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = ct[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        out[i] = c;
        if (c == '/')
            slashes++;
        else if (c && !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$&^_.+-", c)))
            return false;
    }
    const char *slash = strchr(out, '/');
    return slashes == 1 && slash != out && slash[1] != '\0';
}

/* Is ct (lowercase) in the comma-separated allow-list? A subtype of * is a wildcard. */
static bool content_type_allowed(const char *list, const char *ct)
{
    size_t tl = (size_t)(strchr(ct, '/') - ct), l;
    const char *p = list, *it;
    while (csv_next(&p, &it, &l)) {
        if (l == strlen(ct) && strncasecmp(it, ct, l) == 0)
            return true;
        if (l == tl + 2 && strncasecmp(it, ct, tl + 1) == 0 && it[tl + 1] == '*')
            return true;
    }
    return false;
}

static bool filename_ok(const char *f)
{
    size_t n = strlen(f);
    if (n == 0 || n > FILENAME_MAX_BYTES || utf8_has_control(f, n) || strchr(f, '/') || strchr(f, '\\') ||
        strcmp(f, ".") == 0 || strcmp(f, "..") == 0)
        return false;
    return true;
}

/* 64 lowercase hex digits into the base64 S3 wants in x-amz-checksum-sha256 (out[45]). */
static bool sha256_hex_to_b64(const char *hex, char out[45])
{
    unsigned char bin[crypto_hash_sha256_BYTES];
    size_t n = 0;
    if (strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64 ||
        sodium_hex2bin(bin, sizeof bin, hex, 64, NULL, &n, NULL) != 0 || n != sizeof bin)
        return false;
    sodium_bin2base64(out, 45, bin, sizeof bin, sodium_base64_VARIANT_ORIGINAL);
    return true;
}

/* ======================================================================
 * Create
 * ====================================================================== */

/* One user's quota checks serialise on this lock (taken in the transaction
 * that inserts), so concurrent requests cannot all pass the count. */
static const char sql_quota_lock[] = "SELECT pg_advisory_xact_lock(" QUOTA_LOCK_CLASS ", hashint8($1::bigint))";
/* The pending attachments that count: younger than NATTER_ATTACHMENT_PENDING_TTL
 * (older ones are the worker's to reclaim). Index attachments_pending_by_uploader. */
static const char sql_pending[] =
    "SELECT count(*), coalesce(sum(size), 0) FROM attachments"
    " WHERE uploader_id = $1::bigint AND status = 'pending'"
    " AND created_at > now() - make_interval(secs => $2::int)";
static const char sql_create[] =
    "WITH g AS (SELECT gen_random_uuid() AS id)"
    "INSERT INTO attachments (chat_id, id, uploader_id, object_key, filename, content_type, size, sha256)"
    " SELECT $1::bigint, g.id, $2::bigint, 'att/' || $1::bigint || '/' || g.id, $3, $4, $5::bigint, $6 FROM g"
    " RETURNING " RETURNING_COLS;

/* In the open transaction: 0 when the user may have one more pending
 * attachment of `size` bytes, else -1 after replying (409 or the database's error). */
static int check_pending_quota(struct req *r, int64_t size)
{
    const struct config *cfg = r->app->cfg;
    char u[24], ttl[24];
    const char *vals[2] = {i64s(u, r->user_id), i64s(ttl, cfg->pending_ttl)};
    if (!req_sql(r, NULL, sql_quota_lock, 1, vals))
        return -1;
    PGresult *p = req_sql(r, NULL, sql_pending, 2, vals);
    if (!p)
        return -1;
    int64_t n = db_i64(p, 0, 0), bytes = db_i64(p, 0, 1);
    if (n < cfg->pending_max && bytes + size <= cfg->pending_max_bytes)
        return 0;
    return reply_problem_ext(r, 409, "too_many_pending_attachments",
                             json_pack("{s:I,s:I,s:i,s:i,s:i}", "pending", (json_int_t)n, "pending_bytes",
                                       (json_int_t)bytes, "max_pending", cfg->pending_max, "max_pending_bytes",
                                       cfg->pending_max_bytes, "pending_ttl_seconds", cfg->pending_ttl),
                             "%lld pending attachments of %lld bytes: at most %d (%d bytes) may wait for their upload;"
                             " complete or abandon some first (abandoned ones stop counting after %d s)",
                             (long long)n, (long long)bytes, cfg->pending_max, cfg->pending_max_bytes,
                             cfg->pending_ttl);
}

int attachments_create(struct req *r)
{
    static const struct jfield fields[] = {
        {"filename", JT_STRING, 1, 1, 255, JF_NO_CONTROL},
        {"content_type", JT_STRING, 1, 3, 100, 0},
        {"size", JT_INT, 1, 0, INT64_MAX, 0},
        {"sha256", JT_STRING, 1, 64, 64, 0},
    };
    struct member m;
    struct jsonv_error e;
    if (limit_take(r, LIMIT_ATTACHMENT) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    const char *filename = json_string_value(json_object_get(r->json, "filename"));
    int64_t size = json_integer_value(json_object_get(r->json, "size"));
    const char *sha_hex = json_string_value(json_object_get(r->json, "sha256"));
    char ct[128], sha_b64[45];
    if (strlen(filename) > FILENAME_MAX_BYTES)
        return reply_problem_ext(r, 422, "validation_failed",
                                 json_pack("{s:s,s:i}", "field", "filename", "max_bytes", FILENAME_MAX_BYTES),
                                 "filename is at most %d bytes of UTF-8", FILENAME_MAX_BYTES);
    if (!filename_ok(filename))
        return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", "filename"),
                                 "filename must not contain '/', '\\\\' or control characters");
    if (!sha256_hex_to_b64(sha_hex, sha_b64))
        return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", "sha256"),
                                 "sha256 is the file's SHA-256 digest as 64 lowercase hex digits");
    if (!content_type_ok(json_string_value(json_object_get(r->json, "content_type")), ct, sizeof ct))
        return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", "content_type"),
                                 "content_type must be a media type like image/png");
    if (!content_type_allowed(r->app->cfg->attachment_types, ct))
        return reply_problem_ext(r, 422, "content_type_not_allowed", json_pack("{s:s}", "field", "content_type"),
                                 "%s is not an allowed attachment type", ct);
    if (size > r->app->cfg->attachment_max_bytes)
        return reply_problem_ext(r, 422, "attachment_too_large",
                                 json_pack("{s:s,s:i}", "field", "size", "max_bytes",
                                           r->app->cfg->attachment_max_bytes),
                                 "attachments are at most %d bytes", r->app->cfg->attachment_max_bytes);
    char c[24], u[24], sz[24];
    const char *vals[6] = {i64s(c, m.chat_id), i64s(u, r->user_id), filename, ct, i64s(sz, size), sha_hex};
    if (req_begin(r) < 0 || check_pending_quota(r, size) < 0)
        return -1;
    PGresult *res = req_sql(r, NULL, sql_create, 6, vals);
    if (!res || req_commit(r) < 0)
        return -1;
    struct s3_target t;
    store_target(r->app->cfg, &t);
    int64_t now = wall_time_s();
    int ttl = r->app->cfg->upload_url_ttl;
    struct sigv4_kv hdr[3] = {{"content-length", sz}, {"content-type", ct}, {"x-amz-checksum-sha256", sha_b64}};
    char *url = req_own(r, sigv4_presign(&t, "PUT", PQgetvalue(res, 0, 9), now, ttl, hdr, 3, NULL, 0));
    if (!url)
        return reply_problem(r, 500, "internal_error", "cannot sign the upload URL");
    char exp[40], loc[96];
    expiry_text(now, ttl, exp, sizeof exp);
    snprintf(loc, sizeof loc, "/v1/attachments/%s", PQgetvalue(res, 0, 0));
    req_add_header(r, "Location", loc);
    return reply_json(r, 201,
                      json_pack("{s:o,s:{s:s,s:s,s:{s:s,s:s,s:s},s:s}}", "attachment", attachment_json(res, 0),
                                "upload", "method", "PUT", "url", url, "headers", "Content-Type", ct, "Content-Length",
                                sz, "x-amz-checksum-sha256", sha_b64, "expires_at", exp));
}

/* ======================================================================
 * Load (members only), complete, download
 * ====================================================================== */

static const char sql_load[] =
    "SELECT " ATTACHMENT_COLS
    " FROM attachments a"
    " JOIN chat_members cm ON cm.chat_id = a.chat_id AND cm.user_id = $2 WHERE a.id = $1::uuid";

/* The attachment of path param 0 if the caller is a member of its chat; -1 after 404. */
static PGresult *load(struct req *r)
{
    const char *id = req_param(r, 0);
    if (!uuid_valid(id)) {
        reply_problem(r, 404, "attachment_not_found", "no such attachment");
        return NULL;
    }
    char u[24];
    const char *vals[2] = {id, i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, sql_load, 2, vals);
    if (res && PQntuples(res) != 1) {
        reply_problem(r, 404, "attachment_not_found", "no such attachment");
        return NULL;
    }
    return res;
}

static const char sql_uploaded[] =
    "UPDATE attachments SET status = 'uploaded', uploaded_at = now() WHERE chat_id = $1 AND id = $2::uuid"
    " RETURNING " RETURNING_COLS;

/* Runs on the offload pool: it waits for the store's answer. */
int attachments_complete(struct req *r)
{
    PGresult *a = load(r);
    if (!a)
        return -1;
    if (db_i64(a, 0, 2) != r->user_id)
        return reply_problem(r, 404, "attachment_not_found", "no such attachment");
    if (strcmp(PQgetvalue(a, 0, 6), "uploaded") == 0)
        return reply_json(r, 200, attachment_json(a, 0)); /* completing twice is fine */
    int64_t size = -1;
    char err[256] = "", stored_sha[65] = "";
    int st;
    if (config_embedded_store(r->app->cfg)) {
        /* our own store: looked at directly, never through NATTER_PUBLIC_URL
         * (which is how clients reach us, not necessarily how we reach ourselves) */
        st = blob_stat(PQgetvalue(a, 0, 9), &size, stored_sha);
        if (st < 0)
            return reply_problem(r, 500, "internal_error", "cannot read the stored object");
    } else {
        /* S3 verified the signed x-amz-checksum-sha256 when it accepted the bytes */
        struct s3_target t;
        store_target(r->app->cfg, &t);
        CURL *curl = curl_easy_init();
        if (!curl)
            return reply_problem(r, 500, "internal_error", "cannot reach the object store");
        st = store_head(curl, &t, PQgetvalue(a, 0, 9), &size, err, sizeof err);
        curl_easy_cleanup(curl);
    }
    if (st < 0) {
        req_add_header(r, "Retry-After", "2");
        return reply_problem(r, 503, "service_unavailable", "the object store is unavailable (%s)", err);
    }
    if (st == 1)
        return reply_problem(r, 409, "upload_missing", "nothing was uploaded yet: PUT the file first");
    if (size != db_i64(a, 0, 5))
        return reply_problem(r, 409, "upload_size_mismatch", "the stored object has %lld bytes, not %lld",
                             (long long)size, (long long)db_i64(a, 0, 5));
    if (*stored_sha && !PQgetisnull(a, 0, 10) && strcmp(stored_sha, PQgetvalue(a, 0, 10)) != 0)
        return reply_problem(r, 409, "upload_digest_mismatch", "the stored object's SHA-256 is not the declared one");
    const char *vals[2] = {PQgetvalue(a, 0, 1), PQgetvalue(a, 0, 0)};
    PGresult *u = req_sql(r, NULL, sql_uploaded, 2, vals);
    if (!u)
        return -1;
    return reply_json(r, 200, attachment_json(u, 0));
}

/* attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded> (RFC 6266).
 * A name stored before names were bounded in bytes is cut to FILENAME_MAX_BYTES
 * at a character boundary, so that every attachment can be served. */
static char *content_disposition(const char *full)
{
    size_t n = strlen(full);
    if (n > FILENAME_MAX_BYTES) {
        n = FILENAME_MAX_BYTES;
        while (n > 0 && ((unsigned char)full[n] & 0xC0) == 0x80)
            n--;
    }
    char *filename = xstrndup(full, n);
    char *ascii = xmalloc(n + 1);
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)filename[i];
        ascii[i] = (c == 0)                                                                   ? 0
                   : (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == ';' || c == '%') ? '_'
                                                                                              : (char)c;
    }
    char *enc = sigv4_uri_encode(filename, false);
    char *out = xasprintf("attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, enc ? enc : "");
    free(ascii);
    free(enc);
    free(filename);
    return out;
}

int attachments_get(struct req *r)
{
    /* `redirect` takes only its documented value: a typo such as redirect=true must not
     * silently turn a link into a JSON answer. Checked before anything is read. */
    const char *redirect = req_query(r, "redirect");
    if (redirect && strcmp(redirect, "1") != 0)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "redirect"),
                                 "redirect must be 1 (or absent)");
    PGresult *a = load(r);
    if (!a)
        return -1;
    if (strcmp(PQgetvalue(a, 0, 6), "uploaded") != 0)
        return reply_problem(r, 409, "attachment_not_uploaded", "the attachment has not been uploaded yet");
    struct s3_target t;
    store_target(r->app->cfg, &t);
    int64_t now = wall_time_s();
    int ttl = r->app->cfg->download_url_ttl;
    char *cd = req_own(r, content_disposition(PQgetvalue(a, 0, 3)));
    struct sigv4_kv q[2] = {{"response-content-disposition", cd}, {"response-content-type", PQgetvalue(a, 0, 4)}};
    char *url = req_own(r, sigv4_presign(&t, "GET", PQgetvalue(a, 0, 9), now, ttl, NULL, 0, q, 2));
    if (!url)
        return reply_problem(r, 500, "internal_error", "cannot sign the download URL");
    if (redirect) {
        req_add_header(r, "Location", url);
        return reply_empty(r, 302);
    }
    char exp[40];
    expiry_text(now, ttl, exp, sizeof exp);
    return reply_json(r, 200,
                      json_pack("{s:o,s:{s:s,s:s}}", "attachment", attachment_json(a, 0), "download", "url", url,
                                "expires_at", exp));
}
