/*
 * message.c — message rows as API JSON, and system messages (see message.h).
 */
#include "message.h"

#include <string.h>

#include "db.h"
#include "http.h"
#include "inbox.h"
#include "membership.h"
#include "tx.h"
#include "util.h"

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

/* Three one-shard statements rather than one: a data-modifying CTE feeding an
 * INSERT whose RETURNING holds subqueries and to_char is refused by Citus (system
 * messages are rare: chat creation, member changes). */
static const char sql_system_seq[] =
    "UPDATE chats SET last_seq = last_seq + 1, last_message_at = now() WHERE id = $1 RETURNING last_seq";
static const char sql_system_msg[] =
    "INSERT INTO messages (chat_id, seq, sender_id, kind, body, system)"
    " VALUES ($1, $2, $3, 'system', $4, $5::jsonb)";
static const char sql_system_read[] = "SELECT " MSG_COLS_CHAT("$3",
                                                              "$1") " FROM messages WHERE chat_id = $1 AND seq = $2";

int system_message(struct req *r, int64_t chat_id, const char *text, json_t *system_new, int64_t *seq_out)
{
    char c[24], u[24];
    req_own_json(r, system_new);
    char *sys = req_own(r, json_dumps(system_new, JSON_COMPACT));
    const char *vc[1] = {i64s(c, chat_id)};
    PGresult *sq = req_sql(r, NULL, sql_system_seq, 1, vc);
    if (!sq)
        return -1;
    if (PQntuples(sq) != 1)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    const char *seq = PQgetvalue(sq, 0, 0);
    const char *vals[5] = {c, seq, i64s(u, r->user_id), text, sys};
    if (!req_sql(r, NULL, sql_system_msg, 5, vals))
        return -1;
    const char *vr[3] = {c, seq, u};
    PGresult *res = req_sql(r, NULL, sql_system_read, 3, vr);
    if (!res)
        return -1;
    json_t *msg = req_own_json(r, msg_json(res, 0, 0));
    if (seq_out)
        *seq_out = db_i64(res, 0, 1);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:O}", "chat_id", (json_int_t)chat_id, "message", msg));
    return inbox_emit(r, chat_id, "message", INBOX_MEMBERS, NULL, ev);
}

/* Parses path param i as a message seq; -1 after 404. */
int parse_seq(struct req *r, int i, int64_t *seq)
{
    if (!parse_i64(req_param(r, i), seq) || *seq <= 0)
        return reply_problem(r, 404, "message_not_found", "no such message");
    return 0;
}

static const char sql_lock_msg[] =
    "SELECT sender_id, kind, deleted_at IS NOT NULL FROM messages"
    " WHERE chat_id = $1 AND seq = $2 AND seq > $3 FOR UPDATE";

/* Locks message seq of the chat (visible to the caller); -1 after 404. */
int lock_message(struct req *r, const struct member *m, int64_t seq, struct locked_msg *out)
{
    char c[24], s[24], js[24];
    const char *vals[3] = {i64s(c, m->chat_id), i64s(s, seq), i64s(js, m->joined_seq)};
    PGresult *res = req_sql(r, NULL, sql_lock_msg, 3, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "message_not_found", "no such message");
    out->sender_id = PQgetisnull(res, 0, 0) ? 0 : db_i64(res, 0, 0);
    out->system = strcmp(PQgetvalue(res, 0, 1), "system") == 0;
    out->deleted = PQgetvalue(res, 0, 2)[0] == 't';
    return 0;
}
