/*
 * devices.c — the caller's signed-in devices: list and revoke.
 */
#include <stdio.h>
#include <string.h>

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
    static const char *const providers[] = {"webhook", "log"};
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
                                 "provider must be one of: webhook, log");
    const char *vals[4] = {u, d, provider, json_string_value(json_object_get(r->json, "token"))};
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
