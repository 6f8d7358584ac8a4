/*
 * inbox.h — every stored event goes through here: one row per recipient in
 * the inbox table, each with the next gap-free inbox seq of that user, and a
 * wake-up noted for after the commit (bus_note_wake).
 */
#ifndef NATTER_INBOX_H
#define NATTER_INBOX_H

#include <jansson.h>
#include <stdint.h>

struct req;

/* recipients (flags of `to`) */
#define INBOX_EXTRA_ONLY 0x0u /* only the users in extra */
#define INBOX_MEMBERS 0x1u    /* every member of the chat, plus extra */

/* Writes one event into the inbox of every member of chat_id (when to has
 * INBOX_MEMBERS) plus the users in extra (a "{1,2}" array literal or NULL),
 * each with the next gap-free inbox seq of that user. payload is the event
 * body (borrowed). Must run inside the caller's transaction. 0 or -1. */
int inbox_emit(struct req *r, int64_t chat_id, const char *type, unsigned to, const char *extra, json_t *payload);

/* Locks, in ascending id order, every user that the transaction's following
 * inbox_emit calls will write to: the members of chat_id (when to has
 * INBOX_MEMBERS) plus extra. Needed before a second inbox_emit that could add a user with a
 * lower id than one already locked. 0 or -1. */
int lock_users(struct req *r, int64_t chat_id, unsigned to, const char *extra);

#endif
