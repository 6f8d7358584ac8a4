/*
 * auth.c — accounts and sessions (see auth.h).
 *
 * Tokens: the access token is a short-lived HS256 JWT naming the user (sub)
 * and the device (did). The refresh token is opaque, "nrt_<user id>_<random>",
 * stored only as a SHA-256 hash keyed by user id (the shard key). Refreshing
 * marks the presented token rotated and issues a new one in one transaction;
 * presenting a rotated token again means it was stolen or replayed, so the
 * whole device is revoked.
 */
#include "auth.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "apilimits.h"
#include "app.h"
#include "bus.h"
#include "config.h"
#include "db.h"
#include "devcache.h"
#include "http.h"
#include "jsonv.h"
#include "keys.h"
#include "log.h"
#include "natjwt.h"
#include "redis.h"
#include "tx.h"
#include "util.h"

static unsigned long long pw_ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
static size_t pw_mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;

/* A hash of a random password, verified against when the username is unknown so
 * that "no such user" costs the same time as "wrong password". */
static char dummy_hash[crypto_pwhash_STRBYTES];

void auth_set_pwhash_cost(const char *preset)
{
    if (strcmp(preset, "min") == 0) {
        pw_ops = crypto_pwhash_OPSLIMIT_MIN;
        pw_mem = crypto_pwhash_MEMLIMIT_MIN;
    } else if (strcmp(preset, "moderate") == 0) {
        pw_ops = crypto_pwhash_OPSLIMIT_MODERATE;
        pw_mem = crypto_pwhash_MEMLIMIT_MODERATE;
    } else if (strcmp(preset, "sensitive") == 0) {
        pw_ops = crypto_pwhash_OPSLIMIT_SENSITIVE;
        pw_mem = crypto_pwhash_MEMLIMIT_SENSITIVE;
    } else {
        pw_ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        pw_mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    }
    char pw[33];
    random_hex(pw, 16);
    auth_hash_password(pw, strlen(pw), dummy_hash);
}

int auth_hash_password(const char *pw, size_t len, char *out)
{
    return crypto_pwhash_str(out, pw, len, pw_ops, pw_mem) == 0 ? 0 : -1;
}

/* A short list of the passwords every credential-stuffing list starts with. */
static const char *const common_passwords[] = {
    "password",  "password1", "password123", "12345678", "123456789", "1234567890", "qwertyuiop", "qwerty123",
    "11111111",  "iloveyou",  "sunshine",    "princess", "football",  "baseball",   "welcome1",   "abc12345",
    "letmein1",  "trustno1",  "passw0rd",    "superman", "starwars",  "whatever",   "dragon12",   "monkey12",
    "asdfghjkl", "zxcvbnm1",  "qwertyui",    "1q2w3e4r", "00000000",  "87654321",   "changeme",
};

const char *auth_password_weakness(const char *pw, const char *username)
{
    size_t bytes = strlen(pw);
    size_t chars = utf8_chars(pw, bytes);
    if (chars < 8)
        return "must be at least 8 characters long";
    bool same = true;
    for (size_t i = 1; i < bytes && same; i++)
        same = pw[i] == pw[0];
    if (same)
        return "must not be one character repeated";
    if (username && strcasecmp(pw, username) == 0)
        return "must not be the username";
    for (size_t i = 0; i < sizeof common_passwords / sizeof common_passwords[0]; i++)
        if (strcasecmp(pw, common_passwords[i]) == 0)
            return "is one of the most common passwords";
    return NULL;
}

int auth_username_valid(const char *u)
{
    size_t n = strlen(u);
    if (n < 3 || n > 32 || !isalnum((unsigned char)u[0]))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-') || c > 127)
            return 0;
    }
    return 1;
}

json_t *user_json(const char *id, const char *username, const char *display_name, const char *created_at)
{
    int64_t n = 0;
    parse_i64(id, &n);
    return json_pack("{s:I,s:s,s:s,s:s}", "id", (json_int_t)n, "username", username, "display_name", display_name,
                     "created_at", created_at);
}

/* ======================================================================
 * Authentication of requests
 * ====================================================================== */

static const char sql_device_live[] =
    "WITH touch AS ("
    "  UPDATE devices SET last_active_at = now()"
    "   WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL"
    "     AND last_active_at < now() - interval '60 seconds')"
    "SELECT revoked_at IS NOT NULL FROM devices WHERE user_id = $1 AND id = $2";

int auth_authenticate(struct req *r)
{
    const char *h = req_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7])
        return reply_problem(r, 401, "unauthorized", "send Authorization: Bearer <access token>");
    int64_t uid = 0, did = 0;
    switch (natter_jwt_verify(r->app->cfg->jwt_secret, h + 7, wall_time_s(), &uid, &did)) {
    case JWT_OK:
        break;
    case JWT_EXPIRED:
        return reply_problem(r, 401, "token_expired", "the access token has expired; refresh it");
    default:
        return reply_problem(r, 401, "invalid_token", "the access token is not valid");
    }
    enum dev_state st = devcache_get(uid, did); /* no query while the device is known live */
    if (st == DEV_UNKNOWN) {
        char u[24], d[24];
        uint64_t ticket = devcache_ticket(did);
        const char *vals[2] = {i64s(u, uid), i64s(d, did)};
        PGresult *res = req_sql(r, NULL, sql_device_live, 2, vals);
        if (!res)
            return -1;
        if (PQntuples(res) == 0)
            return reply_problem(r, 401, "invalid_token", "the access token is not valid");
        st = PQgetvalue(res, 0, 0)[0] == 't' ? DEV_REVOKED : DEV_LIVE;
        devcache_put(uid, did, ticket, st == DEV_REVOKED);
    }
    if (st == DEV_REVOKED)
        return reply_problem(r, 401, "device_revoked", "this device was signed out; log in again");
    r->user_id = uid;
    r->device_id = did;
    return 0;
}

/* ======================================================================
 * Login throttling: failures only, keyed by address (Redis fixed windows)
 *
 * Only failed logins count, per client address and per (username, client
 * address). An address past either bound gets 429 until its window ends; the
 * owner of an account, logging in from an address that did not fail, is
 * never refused — however many addresses guess at the account (argon2id
 * bounds how fast each of them can). A successful login clears its
 * (username, address) count. Counters live in Redis, so they hold across
 * instances.
 * ====================================================================== */

/* {count, ttl} of both keys, without counting. */
static const char fail_peek_script[] =
    "return {tonumber(redis.call('GET', KEYS[1]) or 0), redis.call('TTL', KEYS[1]),"
    " tonumber(redis.call('GET', KEYS[2]) or 0), redis.call('TTL', KEYS[2])}";
/* INCR + EXPIRE of each key in one atomic step (the window starts at the first failure). */
static const char fail_count_script[] =
    "for i = 1, 2 do local c = redis.call('INCR', KEYS[i]) "
    "if c == 1 or redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end end "
    "return 1";

static void login_keys(struct req *r, const char *username, char *ip_key, char *user_key, size_t len)
{
    char lower[40];
    size_t n = strlen(username);
    if (n > 32)
        n = 32; /* longer names are invalid anyway; bound the key */
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)username[i]);
    lower[n] = '\0';
    snprintf(ip_key, len, KEY_RL_LOGIN_IP_PREFIX "%s", r->client_ip);
    snprintf(user_key, len, KEY_RL_LOGIN_USER_PREFIX "%s:%s", lower, r->client_ip);
}

/* 0 when this address may try this username; else replies 429 with the
 * window's rest as Retry-After and returns -1. Redis down: allowed (logged
 * by the pool) — login must keep working through a Redis outage. */
static int login_throttle(struct req *r, const char *ip_key, const char *user_key)
{
    const struct config *cfg = r->app->cfg;
    redisReply *rep = redis_cmd(r->app->redis, "EVAL %s 2 %s %s", fail_peek_script, ip_key, user_key);
    int wait = 0;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 4) {
        long long ip_n = rep->element[0]->integer, ip_ttl = rep->element[1]->integer;
        long long us_n = rep->element[2]->integer, us_ttl = rep->element[3]->integer;
        if (ip_n >= cfg->login_max_per_ip)
            wait = ip_ttl > 0 ? (int)ip_ttl : 1;
        if (us_n >= cfg->login_max_per_user && (us_ttl > 0 ? (int)us_ttl : 1) > wait)
            wait = us_ttl > 0 ? (int)us_ttl : 1;
    }
    if (rep)
        freeReplyObject(rep);
    if (!wait)
        return 0;
    char ra[16];
    snprintf(ra, sizeof ra, "%d", wait);
    req_add_header(r, "Retry-After", ra);
    return reply_problem(r, 429, "rate_limited", "too many failed logins from this address; retry in %d seconds", wait);
}

static void login_failed(struct req *r, const char *ip_key, const char *user_key)
{
    char window[16];
    snprintf(window, sizeof window, "%d", r->app->cfg->login_window);
    redisReply *rep = redis_cmd(r->app->redis, "EVAL %s 2 %s %s %s", fail_count_script, ip_key, user_key, window);
    if (rep)
        freeReplyObject(rep);
}

static void login_succeeded(struct req *r, const char *user_key)
{
    redisReply *rep = redis_cmd(r->app->redis, "DEL %s", user_key);
    if (rep)
        freeReplyObject(rep);
}

/* ======================================================================
 * Registration admission (in-process token buckets, resources/limits.c)
 * ====================================================================== */

int auth_admit(struct req *r)
{
    if (r->route->handler != auth_register)
        return 0;
    /* per address first: a flooding address must not spend everyone's share */
    if (limit_take(r, LIMIT_REGISTER_IP) < 0 || limit_take(r, LIMIT_REGISTER_ALL) < 0)
        return -1;
    return 0;
}

/* ======================================================================
 * Register
 * ====================================================================== */

/* The name's uniqueness is usernames' primary key (migration 014): in one
 * transaction, the user, then the name (23505 when taken). Two statements of one
 * row each, so that with Citus each goes to one shard and a taken name is still
 * 23505 (an INSERT ... SELECT would be a multi-shard copy reporting XX000). */
static const char sql_register[] =
    "INSERT INTO users (username, display_name, password_hash) VALUES ($1, $2, $3)"
    " RETURNING id, username, display_name, " DB_TS_RET("created_at");
static const char sql_register_name[] = "INSERT INTO usernames (name_lower, user_id) VALUES (lower($1), $2)";

int auth_register(struct req *r)
{
    static const struct jfield fields[] = {
        {"username", JT_STRING, 1, 0, 1000, 0},
        {"password", JT_STRING, 1, 0, 256, 0},
        {"display_name", JT_STRING, 0, 1, 64, JF_NO_CONTROL},
    };
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    const char *username = json_string_value(json_object_get(r->json, "username"));
    const char *password = json_string_value(json_object_get(r->json, "password"));
    json_t *dn = json_object_get(r->json, "display_name");
    if (!auth_username_valid(username)) {
        e.field = "username";
        snprintf(e.reason, sizeof e.reason, "must be 3 to 32 of A-Z a-z 0-9 _ . - starting with a letter or digit");
        return reply_invalid(r, &e);
    }
    const char *weak = auth_password_weakness(password, username);
    if (weak)
        return reply_problem_ext(r, 422, "weak_password", json_pack("{s:s}", "field", "password"), "password %s", weak);
    char hash[crypto_pwhash_STRBYTES];
    if (auth_hash_password(password, strlen(password), hash) < 0)
        return reply_problem(r, 500, "internal_error", "password hashing failed");
    const char *vals[3] = {username, dn ? json_string_value(dn) : username, hash};
    if (req_begin(r) < 0)
        return -1;
    PGresult *res = req_sql(r, NULL, sql_register, 3, vals);
    if (!res)
        return -1;
    const char *name[2] = {username, PQgetvalue(res, 0, 0)};
    PGresult *taken = req_sql(r, "23505", sql_register_name, 2, name);
    if (!taken)
        return -1;
    if (!db_res_ok(taken)) {
        if (req_rollback(r) < 0)
            return -1;
        return reply_problem_ext(r, 409, "username_taken", json_pack("{s:s}", "field", "username"),
                                 "the username is taken");
    }
    if (req_commit(r) < 0)
        return -1;
    char loc[48];
    snprintf(loc, sizeof loc, "/v1/users/%s", PQgetvalue(res, 0, 0));
    req_add_header(r, "Location", loc);
    return reply_json(r, 201,
                      user_json(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                                PQgetvalue(res, 0, 3)));
}

/* ======================================================================
 * Sessions: login, refresh, logout
 * ====================================================================== */

#define LOGIN_COLS "SELECT id, username, display_name, " DB_TS("created_at") ", password_hash FROM users"
static const char sql_login_user[] = LOGIN_COLS
    " WHERE id = (SELECT user_id FROM usernames WHERE name_lower = lower($1))";
static const char sql_login_user_id[] = LOGIN_COLS " WHERE id = $1";
static const char sql_name_id[] = "SELECT user_id FROM usernames WHERE name_lower = lower($1)";

PGresult *user_by_name(struct req *r, const char *name, const char *by_name, const char *by_id)
{
    const char *v[1] = {name};
    if (!db_citus())
        return req_sql(r, NULL, by_name, 1, v);
    PGresult *id = req_sql(r, NULL, sql_name_id, 1, v);
    if (!id || PQntuples(id) != 1)
        return id; /* no such name: no rows */
    v[0] = PQgetvalue(id, 0, 0);
    return req_sql(r, NULL, by_id, 1, v);
}
static const char sql_new_device[] = "INSERT INTO devices (user_id, name, platform) VALUES ($1, $2, $3) RETURNING id";
static const char sql_new_refresh[] =
    "INSERT INTO refresh_tokens (user_id, token_hash, device_id, expires_at)"
    " VALUES ($1, $2, $3, now() + make_interval(secs => $4))";

/* The refresh token that replaces `old`: derived, not random, so that a
 * request racing the rotation with the same token (two tabs, a retry) can be
 * given the very same successor without storing it: HMAC-SHA256 under the
 * server's secret of the old token, in the refresh token format. */
static void successor_token(const struct config *cfg, const char *uid, const char *old, char out[96])
{
    static const char domain[] = "natter refresh successor";
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)cfg->jwt_secret, strlen(cfg->jwt_secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)domain, sizeof domain); /* with its NUL */
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)old, strlen(old));
    crypto_auth_hmacsha256_final(&st, mac);
    char b64[48];
    sodium_bin2base64(b64, sizeof b64, mac, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, 96, "nrt_%s_%s", uid, b64);
}

/* Replies 200 with the TokenResponse: a new access JWT for (uid, did) and
 * the refresh token `token` (already stored). */
static int reply_tokens(struct req *r, const char *uid, const char *did, const char *token, json_t *user_new)
{
    req_own_json(r, user_new);
    int64_t u = 0, d = 0;
    parse_i64(uid, &u);
    parse_i64(did, &d);
    char *jwt = natter_jwt_sign(r->app->cfg->jwt_secret, u, d, wall_time_s(), r->app->cfg->access_token_ttl);
    if (!jwt)
        return reply_problem(r, 500, "internal_error", "token signing failed");
    req_own(r, jwt);
    return reply_json(r, 200,
                      json_pack("{s:s,s:s,s:i,s:s,s:I,s:O}", "access_token", jwt, "token_type", "Bearer", "expires_in",
                                r->app->cfg->access_token_ttl, "refresh_token", token, "device_id", (json_int_t)d,
                                "user", user_new));
}

/* Stores the refresh token `given` (NULL: a fresh random one) for (uid, did)
 * inside the caller's transaction, commits, and replies 200 with the
 * TokenResponse. */
static int issue_tokens(struct req *r, const char *uid, const char *did, const char *given, json_t *user_new)
{
    char rand[48], token[96], hash[65], ttl[16];
    if (given) {
        snprintf(token, sizeof token, "%s", given);
    } else {
        random_b64url(rand, sizeof rand, 32);
        snprintf(token, sizeof token, "nrt_%s_%s", uid, rand);
    }
    sha256_hex(token, strlen(token), hash);
    snprintf(ttl, sizeof ttl, "%d", r->app->cfg->refresh_token_ttl);
    const char *vals[4] = {uid, hash, did, ttl};
    if (!req_sql(r, NULL, sql_new_refresh, 4, vals) || req_commit(r) < 0) {
        json_decref(user_new);
        return -1;
    }
    return reply_tokens(r, uid, did, token, user_new);
}

int auth_login(struct req *r)
{
    static const struct jfield fields[] = {
        {"username", JT_STRING, 1, 1, 1000, 0},
        {"password", JT_STRING, 1, 1, 256, 0},
        {"device_name", JT_STRING, 0, 1, 64, JF_NO_CONTROL},
        {"platform", JT_STRING, 0, 1, 16, 0},
    };
    static const char *const platforms[] = {"ios", "android", "web", "desktop", "other"};
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    const char *username = json_string_value(json_object_get(r->json, "username"));
    const char *password = json_string_value(json_object_get(r->json, "password"));
    json_t *jdn = json_object_get(r->json, "device_name");
    json_t *jpl = json_object_get(r->json, "platform");
    const char *platform = jpl ? json_string_value(jpl) : "other";
    bool known = false;
    for (size_t i = 0; i < 5; i++)
        known = known || strcmp(platform, platforms[i]) == 0;
    if (!known) {
        e.field = "platform";
        snprintf(e.reason, sizeof e.reason, "must be one of ios, android, web, desktop, other");
        return reply_invalid(r, &e);
    }
    char ip_key[160], user_key[160];
    login_keys(r, username, ip_key, user_key, sizeof ip_key);
    if (login_throttle(r, ip_key, user_key) < 0)
        return -1;

    PGresult *u = user_by_name(r, username, sql_login_user, sql_login_user_id);
    if (!u)
        return -1;
    bool found = PQntuples(u) == 1;
    const char *stored = found ? PQgetvalue(u, 0, 4) : dummy_hash;
    bool ok = crypto_pwhash_str_verify(stored, password, strlen(password)) == 0 && found;
    if (!ok) {
        login_failed(r, ip_key, user_key);
        return reply_problem(r, 401, "invalid_credentials", "wrong username or password");
    }
    login_succeeded(r, user_key);

    const char *uid = PQgetvalue(u, 0, 0);
    if (req_begin(r) < 0)
        return -1;
    const char *v2[3] = {uid, jdn ? json_string_value(jdn) : "unnamed device", platform};
    PGresult *d = req_sql(r, NULL, sql_new_device, 3, v2);
    if (!d)
        return -1;
    nlog(LOG_INFO, "login",
         json_pack("{s:s,s:I,s:I}", "request_id", r->request_id, "user_id", (json_int_t)atoll(uid), "device_id",
                   (json_int_t)atoll(PQgetvalue(d, 0, 0))));
    return issue_tokens(r, uid, PQgetvalue(d, 0, 0), NULL,
                        user_json(uid, PQgetvalue(u, 0, 1), PQgetvalue(u, 0, 2), PQgetvalue(u, 0, 3)));
}

/* Rotates atomically: only one of two racing refreshes can flip rotated_at. */
static const char sql_rotate[] =
    "UPDATE refresh_tokens t SET rotated_at = now()"
    "  FROM devices d"
    " WHERE t.user_id = $1 AND t.token_hash = $2 AND t.rotated_at IS NULL AND t.expires_at > now()"
    "   AND d.user_id = t.user_id AND d.id = t.device_id AND d.revoked_at IS NULL"
    " RETURNING t.device_id";
static const char sql_token_state[] =
    "SELECT device_id, rotated_at IS NOT NULL, rotated_at > now() - make_interval(secs => $3)"
    "  FROM refresh_tokens WHERE user_id = $1 AND token_hash = $2";
/* the successor of a token rotated moments ago, if it is still the device's live one */
static const char sql_successor_live[] =
    "SELECT t.device_id FROM refresh_tokens t JOIN devices d ON d.user_id = t.user_id AND d.id = t.device_id"
    " WHERE t.user_id = $1 AND t.token_hash = $2 AND t.rotated_at IS NULL AND t.expires_at > now()"
    "   AND d.revoked_at IS NULL";
static const char sql_revoke_device[] =
    "UPDATE devices SET revoked_at = now(), push_provider = NULL, push_token = NULL"
    " WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL";
static const char sql_drop_tokens[] = "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2";
static const char sql_user_by_id[] =
    "SELECT id, username, display_name, " DB_TS("created_at") " FROM users WHERE id = $1";

int auth_refresh(struct req *r)
{
    static const struct jfield fields[] = {{"refresh_token", JT_STRING, 1, 1, 200, 0}};
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    const char *token = json_string_value(json_object_get(r->json, "refresh_token"));
    /* nrt_<user id>_<random>: the user id routes the lookup to its shard */
    char uid[24];
    const char *p = token + 4, *us = NULL;
    int64_t n;
    if (strncmp(token, "nrt_", 4) != 0 || !(us = strchr(p, '_')) || (size_t)(us - p) >= sizeof uid)
        return reply_problem(r, 401, "invalid_refresh_token", "the refresh token is not valid");
    memcpy(uid, p, (size_t)(us - p));
    uid[us - p] = '\0';
    if (!parse_i64(uid, &n) || n <= 0)
        return reply_problem(r, 401, "invalid_refresh_token", "the refresh token is not valid");
    char hash[65];
    sha256_hex(token, strlen(token), hash);
    const char *vals[2] = {uid, hash};

    if (req_begin(r) < 0)
        return -1;
    PGresult *rot = req_sql(r, NULL, sql_rotate, 2, vals);
    if (!rot)
        return -1;
    char next[96];
    successor_token(r->app->cfg, uid, token, next);
    const char *v1[1] = {uid};
    if (PQntuples(rot) == 1) {
        const char *did = PQgetvalue(rot, 0, 0);
        PGresult *u = req_sql(r, NULL, sql_user_by_id, 1, v1);
        if (!u)
            return -1;
        return issue_tokens(r, uid, did, next,
                            user_json(PQgetvalue(u, 0, 0), PQgetvalue(u, 0, 1), PQgetvalue(u, 0, 2),
                                      PQgetvalue(u, 0, 3)));
    }
    char grace[16];
    snprintf(grace, sizeof grace, "%d", r->app->cfg->refresh_reuse_grace);
    const char *v3[3] = {uid, hash, grace};
    PGresult *st = req_sql(r, NULL, sql_token_state, 3, v3);
    if (!st)
        return -1;
    if (PQntuples(st) == 1 && PQgetvalue(st, 0, 2)[0] == 't') {
        /* rotated within the grace window: the same successor, if it is still live */
        char next_hash[65];
        sha256_hex(next, strlen(next), next_hash);
        const char *v2[2] = {uid, next_hash};
        PGresult *live = req_sql(r, NULL, sql_successor_live, 2, v2);
        PGresult *u = live && PQntuples(live) == 1 ? req_sql(r, NULL, sql_user_by_id, 1, v1) : NULL;
        if (!live || (PQntuples(live) == 1 && !u))
            return -1;
        if (u) {
            const char *did = PQgetvalue(live, 0, 0);
            if (req_commit(r) < 0)
                return -1;
            return reply_tokens(r, uid, did, next,
                                user_json(PQgetvalue(u, 0, 0), PQgetvalue(u, 0, 1), PQgetvalue(u, 0, 2),
                                          PQgetvalue(u, 0, 3)));
        }
        /* its successor was used already (or the device is gone): reuse after all */
    }
    if (PQntuples(st) == 1 && PQgetvalue(st, 0, 1)[0] == 't') {
        /* a rotated token came back: someone holds a copy. Revoke the device. */
        const char *v2[2] = {uid, PQgetvalue(st, 0, 0)};
        if (!req_sql(r, NULL, sql_revoke_device, 2, v2) || !req_sql(r, NULL, sql_drop_tokens, 2, v2) ||
            req_commit(r) < 0)
            return -1;
        int64_t dev = 0;
        parse_i64(v2[1], &dev);
        bus_revoke(n, dev);
        nlog(LOG_WARN, "refresh token reuse: device revoked",
             json_pack("{s:s,s:I,s:I}", "request_id", r->request_id, "user_id", (json_int_t)atoll(uid), "device_id",
                       (json_int_t)dev));
        return reply_problem(r, 401, "refresh_token_reused",
                             "this refresh token was already used; the device has been signed out");
    }
    return reply_problem(r, 401, "invalid_refresh_token", "the refresh token is not valid or has expired");
}

int auth_logout(struct req *r)
{
    char u[24], d[24];
    snprintf(u, sizeof u, "%lld", (long long)r->user_id);
    snprintf(d, sizeof d, "%lld", (long long)r->device_id);
    const char *vals[2] = {u, d};
    if (req_begin(r) < 0 || !req_sql(r, NULL, sql_revoke_device, 2, vals) ||
        !req_sql(r, NULL, sql_drop_tokens, 2, vals) || req_commit(r) < 0)
        return -1;
    bus_revoke(r->user_id, r->device_id);
    return reply_empty(r, 204);
}
