/*
 * devices.c — the caller's signed-in devices: list and revoke.
 */
#include <stdio.h>

#include "db.h"
#include "bus.h"
#include "http.h"
#include "routes.h"
#include "util.h"

static const char sql_list[] =
    "SELECT id, name, platform, " DB_TS("created_at") ", " DB_TS("last_active_at") " FROM devices"
    " WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT 1000";
static const char sql_revoke[] =
    "UPDATE devices SET revoked_at = now(), push_provider = NULL, push_token = NULL"
    " WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING id";
static const char sql_drop_tokens[] = "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2";

int devices_list(struct req *r)
{
    char u[24];
    snprintf(u, sizeof u, "%lld", (long long)r->user_id);
    const char *vals[1] = {u};
    PGresult *res = req_sql(r, NULL, sql_list, 1, vals);
    if (!res)
        return -1;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t id = 0;
        parse_i64(PQgetvalue(res, i, 0), &id);
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:s,s:s,s:b}", "id", (json_int_t)id, "name",
                                             PQgetvalue(res, i, 1), "platform", PQgetvalue(res, i, 2), "created_at",
                                             PQgetvalue(res, i, 3), "last_active_at", PQgetvalue(res, i, 4),
                                             "current", id == r->device_id));
    }
    return reply_json(r, 200, json_pack("{s:o}", "devices", arr));
}

int devices_revoke(struct req *r)
{
    int64_t id;
    if (!parse_i64(req_param(r, 0), &id) || id <= 0)
        return reply_problem(r, 404, "device_not_found", "no such device");
    char u[24], d[24];
    snprintf(u, sizeof u, "%lld", (long long)r->user_id);
    snprintf(d, sizeof d, "%lld", (long long)id);
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
    bus_revoke(r->app, r->user_id, id);
    return reply_empty(r, 204);
}
