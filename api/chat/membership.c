/*
 * membership.c — the caller's membership of a chat, chat row locks, and who
 * shares a chat with a user (see membership.h).
 */
#include "membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "http.h"
#include "tx.h"
#include "util.h"

static const char sql_member[] =
    "SELECT cm.role, cm.joined_seq, cm.last_read_seq, c.last_seq, c.kind = 'direct'"
    "  FROM chat_members cm JOIN chats c ON c.id = cm.chat_id"
    " WHERE cm.chat_id = $1 AND cm.user_id = $2";
static const char sql_member_locked[] =
    "SELECT cm.role, cm.joined_seq, cm.last_read_seq, c.last_seq, c.kind = 'direct'"
    "  FROM chats c JOIN chat_members cm ON cm.chat_id = c.id AND cm.user_id = $2"
    " WHERE c.id = $1 FOR NO KEY UPDATE OF c";

static int fill_member(struct req *r, PGresult *res, struct member *m)
{
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    snprintf(m->role, sizeof m->role, "%s", PQgetvalue(res, 0, 0));
    m->joined_seq = db_i64(res, 0, 1);
    m->last_read_seq = db_i64(res, 0, 2);
    m->last_seq = db_i64(res, 0, 3);
    m->direct = PQgetvalue(res, 0, 4)[0] == 't';
    return 0;
}

int load_member(struct req *r, int pi, struct member *m)
{
    memset(m, 0, sizeof *m);
    if (!parse_i64(req_param(r, pi), &m->chat_id) || m->chat_id <= 0)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    char c[24], u[24];
    const char *vals[2] = {i64s(c, m->chat_id), i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, sql_member, 2, vals);
    return res ? fill_member(r, res, m) : -1;
}

int lock_chat(struct req *r, struct member *m)
{
    char c[24], u[24];
    const char *vals[2] = {i64s(c, m->chat_id), i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, sql_member_locked, 2, vals);
    return res ? fill_member(r, res, m) : -1;
}

bool member_is_admin(const struct member *m)
{
    return strcmp(m->role, "owner") == 0 || strcmp(m->role, "admin") == 0;
}

static const char sql_contacts[] =
    "SELECT DISTINCT o.user_id FROM chat_members mine JOIN chat_members o ON o.chat_id = mine.chat_id"
    " WHERE mine.user_id = $1 AND o.user_id <> $1 LIMIT " CONTACTS_MAX_S;

int64_t *chat_contacts(PGconn *c, int64_t user, size_t *n)
{
    char u[24];
    const char *vals[1] = {i64s(u, user)};
    PGresult *res = PQexecParams(c, sql_contacts, 1, NULL, vals, NULL, NULL, 0);
    *n = db_res_ok(res) ? (size_t)PQntuples(res) : 0;
    int64_t *to = *n ? xmalloc(*n * sizeof *to) : NULL;
    for (size_t i = 0; i < *n; i++)
        to[i] = db_i64(res, (int)i, 0);
    PQclear(res);
    return to;
}

/* Reads a JSON array of positive integers (ids) into a new deduplicated,
 * sorted array; returns the count or -1 when an item is not a positive int. */
int read_ids(const json_t *arr, int64_t *out, size_t cap)
{
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || n >= cap)
            return -1;
        out[n++] = json_integer_value(v);
    }
    /* insertion sort + dedupe: n <= a few hundred */
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && out[b - 1] > out[b]; b--) {
            int64_t t = out[b];
            out[b] = out[b - 1];
            out[b - 1] = t;
        }
    size_t k = 0;
    for (size_t a = 0; a < n; a++)
        if (k == 0 || out[k - 1] != out[a])
            out[k++] = out[a];
    return (int)k;
}

json_t *ids_json(const int64_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static const char sql_users_exist[] = "SELECT count(*) FROM users WHERE id = ANY($1::bigint[])";

/* 0 when every id exists; -1 after replying 422 unknown_user. */
int check_users_exist(struct req *r, const char *arr, size_t n, const char *field)
{
    const char *vals[1] = {arr};
    PGresult *res = req_sql(r, NULL, sql_users_exist, 1, vals);
    if (!res)
        return -1;
    if ((size_t)db_i64(res, 0, 0) != n)
        return reply_field(r, 422, "unknown_user", field, "a user id does not exist");
    return 0;
}
