/*
 * chat.h — what chats.c and messages.c share: the membership check every chat
 * route starts with, the message row <-> JSON mapping, inbox fan-out and
 * system messages.
 *
 * Lock order (deadlock freedom): a transaction takes at most one chat row
 * (SELECT … FOR NO KEY UPDATE / UPDATE chats), then devices and chat_members
 * rows, then message rows, then users rows in ascending id order (inbox_emit).
 * Every writer follows it, so concurrent sends into overlapping groups cannot
 * deadlock. Row locks are NO KEY UPDATE: inserts that reference users or
 * chats take KEY SHARE locks on them (foreign keys), which FOR UPDATE would
 * conflict with, outside the order above.
 */
#ifndef NATTER_CHAT_H
#define NATTER_CHAT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"

struct req;

#define GROUP_MAX_MEMBERS 100

/* The caller's membership of one chat. */
struct member {
    int64_t chat_id;
    char role[8];         /* owner | admin | member */
    int64_t joined_seq;   /* sees messages with seq > joined_seq */
    int64_t last_read_seq;
    int64_t last_seq;     /* the chat's newest seq when loaded */
    bool direct;          /* kind == direct */
};

/* Parses path param i as a chat id and loads the caller's membership.
 * 0, or -1 after replying 404 chat_not_found (also for non-members, so a
 * non-member cannot learn that the chat exists) or 503. */
int load_member(struct req *r, int pi, struct member *m);
bool member_is_admin(const struct member *m); /* owner or admin */

/* Column list selecting a message as msg_json() expects; $ME is the caller's
 * user id parameter (for reactions[].me). Use FROM messages (no alias). */
#define MSG_COLS(ME)                                                                                        \
    "messages.chat_id, messages.seq, messages.sender_id, messages.client_msg_id, messages.kind, "            \
    "messages.body, to_json(messages.mentions), messages.reply_to_seq, to_json(messages.attachment_ids), "  \
    "(SELECT coalesce(json_agg(json_build_object('emoji', s.emoji, 'count', s.n, 'me', s.me) ORDER BY "    \
    "s.emoji), '[]') FROM (SELECT emoji, count(*) AS n, bool_or(user_id = " ME ") AS me FROM reactions rx " \
    "WHERE rx.chat_id = messages.chat_id AND rx.seq = messages.seq GROUP BY emoji) s), "                    \
    "messages.system, " DB_TS("messages.created_at") ", " DB_TS("messages.edited_at") ", "                  \
    DB_TS("messages.deleted_at") ", "                                                                       \
    "(SELECT coalesce(json_agg(json_build_object('id', a.id, 'filename', a.filename, 'content_type', "      \
    "a.content_type, 'size', a.size) ORDER BY array_position(messages.attachment_ids, a.id)), '[]') "      \
    "FROM attachments a WHERE a.chat_id = messages.chat_id AND a.id = ANY (messages.attachment_ids)), "   \
    "octet_length(messages.body)"
#define MSG_NCOLS 16
#define MSG_COL_BYTES 15

/* Builds a Message object from row i of res (columns as MSG_COLS). New reference. */
json_t *msg_json(const PGresult *res, int row, int col0);

/* Writes one event into the inbox of every member of chat_id (when
 * to_members) plus the users in extra (a "{1,2}" array literal or NULL),
 * each with the next gap-free inbox seq of that user. payload is the event
 * body (borrowed). Must run inside the caller's transaction. 0 or -1. */
int inbox_emit(struct req *r, int64_t chat_id, const char *type, bool to_members, const char *extra,
               json_t *payload);

/* Locks, in ascending id order, every user that the transaction's following
 * inbox_emit calls will write to: the members of chat_id (when to_members)
 * plus extra. Needed before a second inbox_emit that could add a user with a
 * lower id than one already locked. 0 or -1. */
int lock_users(struct req *r, int64_t chat_id, bool to_members, const char *extra);

/* Appends a system message (kind=system, sender=actor) to a chat whose row
 * the caller's transaction has locked, and emits its `message` event to the
 * members. system_new is stolen. On success *seq_out is its seq. 0 or -1. */
int system_message(struct req *r, int64_t chat_id, const char *text, json_t *system_new, int64_t *seq_out);

/* Locks the chat row (FOR UPDATE) and re-reads the caller's membership into m
 * under that lock. 0, or -1 after replying (404 if no longer a member). */
int lock_chat(struct req *r, struct member *m);

/* Optional integer query parameter in [min,max]: 0 (absent: *present=false)
 * or -1 after replying 400 invalid_parameter naming it. */
int query_int(struct req *r, const char *name, int64_t min, int64_t max, int64_t *out, bool *present);

/* "{1,2,3}" from an array of ids; owned by the request. */
const char *id_array_literal(struct req *r, const int64_t *ids, size_t n);

#endif
