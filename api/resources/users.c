/*
 * users.c — profiles: me, update me, look up by id or by username.
 */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

static const char sql_user_by_id[] =
    "SELECT id, username, display_name, " DB_TS("created_at") " FROM users WHERE id = $1";
static const char sql_user_by_name[] =
    "SELECT id, username, display_name, " DB_TS("created_at") " FROM users"
    " WHERE id = (SELECT user_id FROM usernames WHERE name_lower = lower($1))";
static const char sql_update_me[] =
    "UPDATE users SET display_name = $2 WHERE id = $1"
    " RETURNING id, username, display_name, " DB_TS_RET("created_at");

static int reply_user_row(struct req *r, PGresult *res)
{
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "user_not_found", "no such user");
    return reply_json(r, 200,
                      user_json(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                                PQgetvalue(res, 0, 3)));
}

static int load_user(struct req *r, int64_t id)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)id);
    const char *vals[1] = {s};
    PGresult *res = req_sql(r, NULL, sql_user_by_id, 1, vals);
    return res ? reply_user_row(r, res) : -1;
}

int users_me(struct req *r)
{
    return load_user(r, r->user_id);
}

int users_update_me(struct req *r)
{
    static const struct jfield fields[] = {{"display_name", JT_STRING, 1, 1, 64, JF_NO_CONTROL}};
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)r->user_id);
    const char *vals[2] = {s, json_string_value(json_object_get(r->json, "display_name"))};
    PGresult *res = req_sql(r, NULL, sql_update_me, 2, vals);
    return res ? reply_user_row(r, res) : -1;
}

int users_get(struct req *r)
{
    int64_t id;
    if (!parse_i64(req_param(r, 0), &id) || id <= 0)
        return reply_problem(r, 404, "user_not_found", "no such user");
    return load_user(r, id);
}

int users_find(struct req *r)
{
    const char *name = req_query(r, "username");
    if (!name || !*name)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "username"),
                                 "the username query parameter is required");
    if (strlen(name) > 64)
        return reply_problem(r, 404, "user_not_found", "no such user");
    PGresult *res = user_by_name(r, name, sql_user_by_name, sql_user_by_id);
    return res ? reply_user_row(r, res) : -1;
}
