/*
 * reactions.c — emoji reactions on a message: PUT adds, DELETE removes (both
 * idempotent); a change emits a `reaction` event with the new counts.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "apilimits.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

static const char sql_add_reaction[] =
    "INSERT INTO reactions (chat_id, seq, user_id, emoji) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT DO NOTHING RETURNING 1";
static const char sql_del_reaction[] =
    "DELETE FROM reactions WHERE chat_id = $1 AND seq = $2 AND user_id = $3 AND emoji = $4 RETURNING 1";
static const char sql_reaction_summary[] =
    "SELECT coalesce(json_agg(json_build_object('emoji', emoji, 'count', n, 'me', me) ORDER BY emoji), '[]')"
    "  FROM (SELECT emoji, count(*) AS n, bool_or(user_id = $3) AS me FROM reactions"
    "         WHERE chat_id = $1 AND seq = $2 GROUP BY emoji) s";

static int react(struct req *r, bool add)
{
    struct member m;
    struct locked_msg lm;
    int64_t seq;
    if (limit_take(r, LIMIT_REACTION) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0 || parse_seq(r, 1, &seq) < 0)
        return -1;
    const char *emoji = req_param(r, 2);
    if (!emoji_valid(emoji, EMOJI_MAX_CHARS))
        return reply_field(r, 422, "validation_failed", "emoji", "%s",
                           "emoji must be 1 to 32 characters without spaces or control characters");
    if (req_begin(r) < 0 || lock_message(r, &m, seq, &lm) < 0)
        return -1;
    if (lm.deleted)
        return reply_problem(r, 409, "message_deleted", "the message was deleted");
    char c[24], s[24], u[24];
    const char *vals[4] = {i64s(c, m.chat_id), i64s(s, seq), i64s(u, r->user_id), emoji};
    PGresult *ch = req_sql(r, NULL, add ? sql_add_reaction : sql_del_reaction, 4, vals);
    if (!ch)
        return -1;
    PGresult *sum = req_sql(r, NULL, sql_reaction_summary, 3, vals);
    if (!sum)
        return -1;
    json_t *reactions = req_own_json(r, json_loads(PQgetvalue(sum, 0, 0), 0, NULL));
    if (!reactions)
        return reply_problem(r, 500, "internal_error", "bad reaction summary");
    if (PQntuples(ch) == 1) { /* changed: tell everyone; an idempotent repeat is silent */
        /* `me` is per viewer: it has no meaning in an event that many users get */
        json_t *counts = req_own_json(r, json_deep_copy(reactions));
        size_t i;
        json_t *it;
        json_array_foreach(counts, i, it)
            json_object_del(it, "me");
        json_t *ev = req_own_json(r, json_pack("{s:I,s:I,s:I,s:s,s:s,s:O}", "chat_id", (json_int_t)m.chat_id, "seq",
                                               (json_int_t)seq, "user_id", (json_int_t)r->user_id, "emoji", emoji,
                                               "action", add ? "added" : "removed", "reactions", counts));
        if (inbox_emit(r, m.chat_id, "reaction", INBOX_MEMBERS, NULL, ev) < 0)
            return -1;
    }
    if (req_commit(r) < 0)
        return -1;
    return reply_json(r, 200, json_pack("{s:O}", "reactions", reactions));
}

int reactions_put(struct req *r)
{
    return react(r, true);
}

int reactions_delete(struct req *r)
{
    return react(r, false);
}
