/*
 * apilimits.h — the fixed limits of the HTTP API, in one place: the handlers
 * enforce these and GET /v1/limits reports the same constants, so what a
 * client is told is what is enforced.
 */
#ifndef NATTER_APILIMITS_H
#define NATTER_APILIMITS_H

#define MESSAGE_MAX_CHARS 100000 /* text of a message, characters */
#define MAX_MENTIONS 100         /* mentions of one message */
#define MAX_ATTACHMENTS 10       /* attachments of one message */
#define PAGE_DEFAULT 50          /* history page */
#define PAGE_MAX 100
#define PAGE_BYTES (1024 * 1024) /* a page ends early once its texts pass this */
#define LIST_DEFAULT 20          /* chat list page */
#define LIST_MAX 100
#define POLL_DEFAULT_TIMEOUT 30 /* long-poll, seconds */
#define POLL_DEFAULT_LIMIT 100  /* events per poll */
#define POLL_MAX_LIMIT 500
#define EMOJI_MAX_CHARS 32   /* a reaction */
#define PRESENCE_MAX_IDS 200 /* users per presence query */

/* ---- per-user write rates (token buckets, common/ratelimit.h) ---- */

struct req;

enum limit_kind {
    LIMIT_SEND,         /* POST messages */
    LIMIT_EDIT,         /* PATCH and DELETE a message */
    LIMIT_REACTION,     /* PUT and DELETE a reaction */
    LIMIT_TYPING,       /* POST typing */
    LIMIT_CHAT,         /* POST chats, PATCH a chat (rename) */
    LIMIT_MEMBER,       /* add, remove, change the role of members */
    LIMIT_ATTACHMENT,   /* POST attachments (an upload URL) */
    LIMIT_PUSH_ACK,     /* POST devices/{id}/push-ack */
    LIMIT_SEARCH,       /* GET search (PostgreSQL full-text queries) */
    LIMIT_REGISTER_IP,  /* registrations per client address */
    LIMIT_REGISTER_ALL, /* registrations over all addresses */
    LIMIT_COUNT
};

/* Charges one action of kind k to the caller (r->user_id; the client address
 * for LIMIT_REGISTER_IP; nobody for LIMIT_REGISTER_ALL). 0 when allowed; else
 * replies 429 rate_limited with Retry-After and returns -1. */
int limit_take(struct req *r, enum limit_kind k);
/* limit_take in two steps, for a caller with something to try before it
 * refuses: limit_try charges and returns 0, or returns the seconds to wait
 * (charging nothing); limit_refuse replies that 429 and returns -1. */
int limit_try(struct req *r, enum limit_kind k);
int limit_refuse(struct req *r, enum limit_kind k, int wait);
/* Gives back what limit_take charged for an action that turned out to cost
 * nothing (a retried send that was already stored, a send that failed). */
void limit_refund(struct req *r, enum limit_kind k);

#endif
