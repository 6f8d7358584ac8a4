/*
 * chat_common.c — membership checks, message JSON, inbox fan-out and system
 * messages shared by chats.c and messages.c (see chat.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "db.h"
#include "http.h"
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

static json_t *json_col(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    json_t *j = json_loads(PQgetvalue(res, row, col), JSON_DECODE_ANY, NULL);
    return j ? j : json_null();
}

static json_t *int_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_integer(db_i64(res, row, col));
}

static json_t *str_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

json_t *msg_json(const PGresult *res, int row, int c)
{
    json_t *m = json_object();
    json_object_set_new(m, "chat_id", json_integer(db_i64(res, row, c + 0)));
    json_object_set_new(m, "seq", json_integer(db_i64(res, row, c + 1)));
    json_object_set_new(m, "sender_id", int_or_null(res, row, c + 2));
    json_object_set_new(m, "client_msg_id", str_or_null(res, row, c + 3));
    json_object_set_new(m, "kind", json_string(PQgetvalue(res, row, c + 4)));
    json_object_set_new(m, "text", str_or_null(res, row, c + 5));
    json_object_set_new(m, "mentions", json_col(res, row, c + 6));
    json_object_set_new(m, "reply_to_seq", int_or_null(res, row, c + 7));
    json_object_set_new(m, "attachment_ids", json_col(res, row, c + 8));
    json_object_set_new(m, "reactions", json_col(res, row, c + 9));
    json_object_set_new(m, "system", json_col(res, row, c + 10));
    json_object_set_new(m, "created_at", json_string(PQgetvalue(res, row, c + 11)));
    json_object_set_new(m, "edited_at", str_or_null(res, row, c + 12));
    json_object_set_new(m, "deleted_at", str_or_null(res, row, c + 13));
    json_object_set_new(m, "attachments", json_col(res, row, c + 14));
    return m;
}

/* Users are locked in ascending id order (MATERIALIZED keeps the ordered
 * FOR NO KEY UPDATE a separate step) before their inbox_seq is bumped. The
 * recipients are one array so that the primary key index is used: an
 * `… OR id = ANY(…)` form made PostgreSQL scan all users on every send. */
static const char sql_inbox_emit[] =
    "WITH r AS MATERIALIZED ("
    "  SELECT id FROM users"
    "   WHERE id = ANY (CASE WHEN $4 THEN ARRAY(SELECT user_id FROM chat_members WHERE chat_id = $1)"
    "                   ELSE '{}'::bigint[] END || $5::bigint[])"
    "   ORDER BY id FOR NO KEY UPDATE),"
    " u AS (UPDATE users SET inbox_seq = users.inbox_seq + 1 FROM r WHERE users.id = r.id"
    "       RETURNING users.id, users.inbox_seq)"
    "INSERT INTO inbox (user_id, seq, type, chat_id, payload)"
    " SELECT id, inbox_seq, $2, $1, $3::jsonb FROM u RETURNING user_id, seq";

int inbox_emit(struct req *r, int64_t chat_id, const char *type, bool to_members, const char *extra,
               json_t *payload)
{
    char c[24];
    char *text = json_dumps(payload, JSON_COMPACT);
    if (!text)
        return reply_problem(r, 500, "internal_error", "event encoding failed");
    req_own(r, text);
    const char *vals[5] = {i64s(c, chat_id), type, text, to_members ? "true" : "false", extra ? extra : "{}"};
    PGresult *res = req_sql(r, NULL, sql_inbox_emit, 5, vals);
    if (!res)
        return -1;
    for (int i = 0; i < PQntuples(res); i++)
        req_note_wake(r, db_i64(res, i, 0), db_i64(res, i, 1));
    return 0;
}

static const char sql_lock_users[] =
    "SELECT id FROM users"
    " WHERE id = ANY (CASE WHEN $2 THEN ARRAY(SELECT user_id FROM chat_members WHERE chat_id = $1)"
    "                 ELSE '{}'::bigint[] END || $3::bigint[])"
    " ORDER BY id FOR NO KEY UPDATE";

int lock_users(struct req *r, int64_t chat_id, bool to_members, const char *extra)
{
    char c[24];
    const char *vals[3] = {i64s(c, chat_id), to_members ? "true" : "false", extra ? extra : "{}"};
    return req_sql(r, NULL, sql_lock_users, 3, vals) ? 0 : -1;
}

static const char sql_system_msg[] =
    "WITH c AS (UPDATE chats SET last_seq = last_seq + 1, last_message_at = now() WHERE id = $1"
    "           RETURNING last_seq)"
    "INSERT INTO messages (chat_id, seq, sender_id, kind, body, system)"
    " SELECT $1, c.last_seq, $2, 'system', $3, $4::jsonb FROM c"
    " RETURNING " MSG_COLS("$2");

int system_message(struct req *r, int64_t chat_id, const char *text, json_t *system_new, int64_t *seq_out)
{
    char c[24], u[24];
    req_own_json(r, system_new);
    char *sys = req_own(r, json_dumps(system_new, JSON_COMPACT));
    const char *vals[4] = {i64s(c, chat_id), i64s(u, r->user_id), text, sys};
    PGresult *res = req_sql(r, NULL, sql_system_msg, 4, vals);
    if (!res)
        return -1;
    json_t *msg = req_own_json(r, msg_json(res, 0, 0));
    if (seq_out)
        *seq_out = db_i64(res, 0, 1);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:O}", "chat_id", (json_int_t)chat_id, "message", msg));
    return inbox_emit(r, chat_id, "message", true, NULL, ev);
}

const char *id_array_literal(struct req *r, const int64_t *ids, size_t n)
{
    char *s = xmalloc(n * 21 + 3);
    size_t len = 0;
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(s + len, "%s%lld", i ? "," : "", (long long)ids[i]);
    s[len++] = '}';
    s[len] = '\0';
    return req_own(r, s);
}
