/*
 * devices.c — the caller's signed-in devices: list and revoke, where their
 * pushes go, and the acks of pushes they got (push-ack: delivered receipts
 * for a phone that never opened the app, through chat/acks.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acks.h"
#include "apilimits.h"
#include "bus.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

#define DEVICE_COLS "id, name, platform, " DB_TS("created_at") ", " DB_TS("last_active_at") ", push_provider"
#define DEVICE_COLS_RET \
    "id, name, platform, " DB_TS_RET("created_at") ", " DB_TS_RET("last_active_at") ", push_provider"

static const char sql_list[] = "SELECT " DEVICE_COLS
                               " FROM devices WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT 1000";
static const char sql_set_push[] =
    "UPDATE devices SET push_provider = $3, push_token = $4, push_updated_at = now()"
    " WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING " DEVICE_COLS_RET;
static const char sql_clear_push[] =
    "UPDATE devices SET push_provider = NULL, push_token = NULL, push_updated_at = now()"
    " WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING id";

static json_t *device_json(const PGresult *res, int i, int64_t current)
{
    int64_t id = 0;
    parse_i64(PQgetvalue(res, i, 0), &id);
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:b,s:o}", "id", (json_int_t)id, "name", PQgetvalue(res, i, 1), "platform",
                     PQgetvalue(res, i, 2), "created_at", PQgetvalue(res, i, 3), "last_active_at",
                     PQgetvalue(res, i, 4), "current", id == current, "push_provider",
                     PQgetisnull(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5)));
}
static const char sql_revoke[] =
    "UPDATE devices SET revoked_at = now(), push_provider = NULL, push_token = NULL"
    " WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING id";
static const char sql_drop_tokens[] = "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2";

/* Path param 0 as one of the caller's device ids: fills the (user, device)
 * query values; -1 after 404 device_not_found. */
static int device_param(struct req *r, int64_t *id, char u[24], char d[24])
{
    if (!parse_i64(req_param(r, 0), id) || *id <= 0)
        return reply_problem(r, 404, "device_not_found", "no such device");
    i64s(u, r->user_id);
    i64s(d, *id);
    return 0;
}

int devices_list(struct req *r)
{
    char u[24];
    snprintf(u, sizeof u, "%lld", (long long)r->user_id);
    const char *vals[1] = {u};
    PGresult *res = req_sql(r, NULL, sql_list, 1, vals);
    if (!res)
        return -1;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, device_json(res, i, r->device_id));
    return reply_json(r, 200, json_pack("{s:o}", "devices", arr));
}

int devices_revoke(struct req *r)
{
    int64_t id;
    char u[24], d[24];
    if (device_param(r, &id, u, d) < 0)
        return -1;
    const char *vals[2] = {u, d};
    if (req_begin(r) < 0)
        return -1;
    PGresult *res = req_sql(r, NULL, sql_revoke, 2, vals);
    if (!res)
        return -1;
    if (PQntuples(res) == 0)
        return reply_problem(r, 404, "device_not_found", "no such device");
    if (!req_sql(r, NULL, sql_drop_tokens, 2, vals) || req_commit(r) < 0)
        return -1;
    bus_revoke(r->user_id, id);
    return reply_empty(r, 204);
}

/* PUT /v1/devices/{id}/push {"provider", "token"}: where this device's pushes go. */
int devices_set_push(struct req *r)
{
    static const struct jfield fields[] = {
        {"provider", JT_STRING, 1, 1, 32, 0},
        {"token", JT_STRING, 1, 1, 4096, JF_NO_CONTROL},
    };
    static const char *const providers[] = {"webhook", "log", "fcm", "apns"};
    struct jsonv_error e;
    int64_t id;
    char u[24], d[24];
    if (device_param(r, &id, u, d) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    const char *provider = json_string_value(json_object_get(r->json, "provider"));
    bool known = false;
    for (size_t i = 0; i < sizeof providers / sizeof providers[0]; i++)
        known = known || strcmp(provider, providers[i]) == 0;
    if (!known)
        return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", "provider"),
                                 "provider must be one of: webhook, log, fcm, apns");
    const char *token = json_string_value(json_object_get(r->json, "token"));
    if (strcmp(provider, "apns") == 0 && !apns_token_valid(token))
        return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", "token"),
                                 "an apns token is the device token in hex (16 to 200 hex digits)");
    const char *vals[4] = {u, d, provider, token};
    PGresult *res = req_sql(r, NULL, sql_set_push, 4, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "device_not_found", "no such device");
    return reply_json(r, 200, device_json(res, 0, r->device_id));
}

/* DELETE /v1/devices/{id}/push: no more pushes to this device (idempotent). */
int devices_clear_push(struct req *r)
{
    int64_t id;
    char u[24], d[24];
    if (device_param(r, &id, u, d) < 0)
        return -1;
    const char *vals[2] = {u, d};
    PGresult *res = req_sql(r, NULL, sql_clear_push, 2, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "device_not_found", "no such device");
    return reply_empty(r, 204);
}

/* What a push covered (workers/push.c writes it before sending). */
static const char sql_covers[] =
    "SELECT c.chat_ids, c.seqs FROM push_covers c"
    " WHERE c.user_id = $1 AND c.flush_id = $3"
    "   AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.id = $2 AND d.revoked_at IS NULL)";
static const char sql_device_live[] = "SELECT 1 FROM devices WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL";

/* A push id is "<flush id: 1..64 lower-case hex>-<device id>": the flush id
 * into flush (at least 65 bytes), false when it is not one. */
static bool parse_push_id(const char *pid, char *flush, int64_t *device)
{
    const char *dash = strrchr(pid, '-');
    if (!dash || dash == pid || dash - pid > 64 || !parse_i64(dash + 1, device) || *device <= 0)
        return false;
    for (const char *p = pid; p < dash; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    memcpy(flush, pid, (size_t)(dash - pid));
    flush[dash - pid] = '\0';
    return true;
}

/* Parses a '{1,2,3}' bigint[] into at most max values; the count. */
static size_t id_array(const char *s, int64_t *out, size_t max)
{
    size_t n = 0;
    for (const char *p = s; *p && n < max;) {
        if (*p == '{' || *p == ',' || *p == '}') {
            p++;
            continue;
        }
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p)
            break;
        out[n++] = v;
        p = end;
    }
    return n;
}

/* POST /v1/devices/{id}/push-ack {"push_id"}: the device got that push. The
 * messages it covered count as delivered to the user: the ack goes to the
 * ack flusher like a poll's (acks_record_push). Idempotent (markers only move
 * forward); only the device's own pushes (the id names the device). */
int devices_push_ack(struct req *r)
{
    static const struct jfield fields[] = {{"push_id", JT_STRING, 1, 1, 96, JF_NO_CONTROL}};
    struct jsonv_error e;
    int64_t id, named;
    char u[24], d[24], flush[65];
    if (limit_take(r, LIMIT_PUSH_ACK) < 0)
        return -1;
    if (device_param(r, &id, u, d) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    const char *pid = json_string_value(json_object_get(r->json, "push_id"));
    if (!parse_push_id(pid, flush, &named))
        return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", "push_id"),
                                 "push_id is not a push id (\"<hex>-<device id>\", as the push carried it)");
    const char *vals[3] = {u, d, flush};
    PGresult *res = req_sql(r, NULL, sql_covers, 3, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1 || named != id) {
        PGresult *dev = req_sql(r, NULL, sql_device_live, 2, vals);
        if (!dev)
            return -1;
        if (PQntuples(dev) != 1)
            return reply_problem(r, 404, "device_not_found", "no such device");
        return reply_problem(r, 404, "push_not_found",
                             "no push with this id was sent to this device (or it is older than the push TTL)");
    }
    int64_t chats[256], seqs[256];
    size_t nc = id_array(PQgetvalue(res, 0, 0), chats, 256), ns = id_array(PQgetvalue(res, 0, 1), seqs, 256);
    size_t n = nc < ns ? nc : ns;
    if (!acks_record_push(r->user_id, chats, seqs, n)) {
        req_add_header(r, "Retry-After", "1");
        return reply_problem(r, 503, "service_unavailable", "too many acks are waiting to be written; retry shortly");
    }
    return reply_empty(r, 204);
}
