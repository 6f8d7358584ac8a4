/*
 * message.h — message rows <-> API JSON (one column list, one mapping), and
 * system messages.
 */
#ifndef NATTER_MESSAGE_H
#define NATTER_MESSAGE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"

struct member;
struct req;

/* Column list selecting a message as msg_json() expects; $ME is the caller's
 * user id parameter (for reactions[].me). Use FROM messages (no alias). */
#define MSG_COLS(ME) MSG_COLS_CHAT(ME, "messages.chat_id")
/* The same for a statement about one chat, CHAT (a parameter, "$1"): its subqueries
 * over reactions and attachments name the chat by that parameter, not through the
 * outer row, so that with Citus the whole statement is one shard's (a correlated
 * subquery that reaches the distribution column only through the outer row makes
 * Citus run the statement on every shard). */
/* one SQL line per source line, wider than the column limit: */
/* clang-format off */
#define MSG_COLS_CHAT(ME, CHAT)                                                                             \
    "messages.chat_id, messages.seq, messages.sender_id, messages.client_msg_id, messages.kind, "            \
    "messages.body, to_json(messages.mentions), messages.reply_to_seq, to_json(messages.attachment_ids), "  \
    "(SELECT coalesce(json_agg(json_build_object('emoji', s.emoji, 'count', s.n, 'me', s.me) ORDER BY "    \
    "s.emoji), '[]') FROM (SELECT emoji, count(*) AS n, bool_or(user_id = " ME ") AS me FROM reactions rx " \
    "WHERE rx.chat_id = " CHAT " AND rx.seq = messages.seq GROUP BY emoji) s), "                            \
    "messages.system, " DB_TS("messages.created_at") ", " DB_TS("messages.edited_at") ", "                  \
    DB_TS("messages.deleted_at") ", "                                                                       \
    "(SELECT coalesce(json_agg(json_build_object('id', a.id, 'filename', a.filename, 'content_type', "      \
    "a.content_type, 'size', a.size) ORDER BY array_position(messages.attachment_ids, a.id)), '[]') "      \
    "FROM attachments a WHERE a.chat_id = " CHAT " AND a.id = ANY (messages.attachment_ids)), "           \
    "octet_length(messages.body)"
/* clang-format on */
#define MSG_NCOLS 16
#define MSG_COL_BYTES 15

/* Builds a Message object from row i of res (columns as MSG_COLS). New reference. */
json_t *msg_json(const PGresult *res, int row, int col0);

/* Appends a system message (kind=system, sender=actor) to a chat whose row
 * the caller's transaction has locked, and emits its `message` event to the
 * members. system_new is stolen. On success *seq_out is its seq. 0 or -1. */
int system_message(struct req *r, int64_t chat_id, const char *text, json_t *system_new, int64_t *seq_out);

/* Parses path param i as a message seq; 0, or -1 after 404 message_not_found. */
int parse_seq(struct req *r, int i, int64_t *seq);

struct locked_msg {
    int64_t sender_id;
    bool system;
    bool deleted;
};

/* Locks message seq of the chat (FOR UPDATE; visible to the member m): 0, or
 * -1 after replying 404 message_not_found. */
int lock_message(struct req *r, const struct member *m, int64_t seq, struct locked_msg *out);

#endif
