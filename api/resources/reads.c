/*
 * reads.c — read markers (POST /v1/chats/{id}/read: forward only, with
 * `receipt` events to the senders) and the receipts of a chat.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

/* Moves the marker forward only; returns the previous value (NULL row = not moved). */
static const char sql_mark_read[] =
    "WITH old AS (SELECT last_read_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2 FOR UPDATE)"
    "UPDATE chat_members cm SET last_read_seq = $3, last_delivered_seq = GREATEST(cm.last_delivered_seq, $3)"
    "  FROM old WHERE cm.chat_id = $1 AND cm.user_id = $2 AND old.last_read_seq < $3"
    " RETURNING old.last_read_seq";
/* the people who care that their messages were read */
static const char sql_read_senders[] =
    "SELECT coalesce(array_agg(DISTINCT sender_id), '{}') FROM messages"
    " WHERE chat_id = $1 AND seq > $2 AND seq <= $3 AND kind = 'text' AND sender_id IS NOT NULL AND sender_id <> $4";
static const char sql_unread[] = "SELECT cm.last_read_seq, " CHAT_SQL_UNREAD ", " CHAT_SQL_UNREAD_MENTIONS
                                 " FROM chat_members cm WHERE cm.chat_id = $1 AND cm.user_id = $2";

int chats_read(struct req *r)
{
    static const struct jfield fields[] = {{"seq", JT_INT, 1, 0, INT64_MAX, 0}};
    struct member m;
    struct jsonv_error e;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    int64_t seq = json_integer_value(json_object_get(r->json, "seq"));
    if (seq > m.last_seq)
        return reply_field(r, 422, "validation_failed", "seq", "%s", "seq is beyond the newest message of the chat");
    char c[24], u[24], s[24];
    const char *vals[4] = {i64s(c, m.chat_id), i64s(u, r->user_id), i64s(s, seq), NULL};
    if (req_begin(r) < 0)
        return -1;
    PGresult *mv = req_sql(r, NULL, sql_mark_read, 3, vals);
    if (!mv)
        return -1;
    if (PQntuples(mv) == 1) {
        const char *sv[4] = {c, PQgetvalue(mv, 0, 0), s, u};
        PGresult *snd = req_sql(r, NULL, sql_read_senders, 4, sv);
        if (!snd)
            return -1;
        /* the reader's other devices and the senders of what was just read */
        char *to = req_own(r, xasprintf("{%s%s%s", u, strlen(PQgetvalue(snd, 0, 0)) > 2 ? "," : "",
                                        PQgetvalue(snd, 0, 0) + 1));
        json_t *ev = req_own_json(r, json_pack("{s:I,s:I,s:s,s:I}", "chat_id", (json_int_t)m.chat_id, "user_id",
                                               (json_int_t)r->user_id, "kind", "read", "seq", (json_int_t)seq));
        if (inbox_emit(r, m.chat_id, "receipt", INBOX_EXTRA_ONLY, to, ev) < 0)
            return -1;
    }
    if (req_commit(r) < 0)
        return -1;
    PGresult *un = req_sql(r, NULL, sql_unread, 2, vals);
    if (!un)
        return -1;
    if (PQntuples(un) != 1)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    return reply_json(r, 200,
                      json_pack("{s:I,s:I,s:I,s:I}", "chat_id", (json_int_t)m.chat_id, "last_read_seq",
                                (json_int_t)db_i64(un, 0, 0), "unread_count", (json_int_t)db_i64(un, 0, 1),
                                "unread_mentions", (json_int_t)db_i64(un, 0, 2)));
}

static const char sql_receipts[] =
    "SELECT user_id, last_delivered_seq, last_read_seq FROM chat_members WHERE chat_id = $1 ORDER BY user_id";

int chats_receipts(struct req *r)
{
    struct member m;
    if (load_member(r, 0, &m) < 0)
        return -1;
    char c[24];
    const char *vals[1] = {i64s(c, m.chat_id)};
    PGresult *res = req_sql(r, NULL, sql_receipts, 1, vals);
    if (!res)
        return -1;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr,
                              json_pack("{s:I,s:I,s:I}", "user_id", (json_int_t)db_i64(res, i, 0), "last_delivered_seq",
                                        (json_int_t)db_i64(res, i, 1), "last_read_seq", (json_int_t)db_i64(res, i, 2)));
    return reply_json(r, 200, json_pack("{s:o}", "receipts", arr));
}
