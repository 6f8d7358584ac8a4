/*
 * membership.h — the membership check every chat route starts with, the chat
 * row lock, and a user's contacts (for presence).
 *
 * Lock order (deadlock freedom): a transaction takes at most one chat row
 * (SELECT … FOR NO KEY UPDATE / UPDATE chats), then devices and chat_members
 * rows, then message rows, then users rows in ascending id order (inbox_emit).
 * Every writer follows it, so concurrent sends into overlapping groups cannot
 * deadlock. Row locks are NO KEY UPDATE: inserts that reference users or
 * chats take KEY SHARE locks on them (foreign keys), which FOR UPDATE would
 * conflict with, outside the order above.
 */
#ifndef NATTER_MEMBERSHIP_H
#define NATTER_MEMBERSHIP_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct req;

#define GROUP_MAX_MEMBERS 100
#define CONTACTS_MAX_S "10000" /* users told of one presence change, at most */

/* The caller's membership of one chat. */
struct member {
    int64_t chat_id;
    char role[8];       /* owner | admin | member */
    int64_t joined_seq; /* sees messages with seq > joined_seq */
    int64_t last_read_seq;
    int64_t last_seq; /* the chat's newest seq when loaded */
    bool direct;      /* kind == direct */
};

/* Parses path param i as a chat id and loads the caller's membership.
 * 0, or -1 after replying 404 chat_not_found (also for non-members, so a
 * non-member cannot learn that the chat exists) or 503. */
int load_member(struct req *r, int pi, struct member *m);
bool member_is_admin(const struct member *m); /* owner or admin */

/* Locks the chat row (FOR UPDATE) and re-reads the caller's membership into m
 * under that lock. 0, or -1 after replying (404 if no longer a member). */
int lock_chat(struct req *r, struct member *m);

/* Everyone who shares a chat with user (rt_env.contacts, read on c): owned
 * array of *n ids, NULL when there is nobody or the query failed. */
int64_t *chat_contacts(PGconn *c, int64_t user, size_t *n);

/* Reads a JSON array of positive integers (ids) into out (at most cap),
 * sorted and deduplicated; returns the count or -1 when an item is not a
 * positive integer or there are too many. */
int read_ids(const json_t *arr, int64_t *out, size_t cap);
json_t *ids_json(const int64_t *ids, size_t n); /* new reference */
/* 0 when every one of the n ids in arr ("{1,2}") is a user; -1 after
 * replying 422 unknown_user naming field. */
int check_users_exist(struct req *r, const char *arr, size_t n, const char *field);

#endif
