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
#define EMOJI_MAX_CHARS 32    /* a reaction */
#define PRESENCE_MAX_IDS 200  /* users per presence query */

#endif
