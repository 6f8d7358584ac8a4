/*
 * msgsearch.h — the pure parts of message search (GET /v1/search, search.c):
 * the query text split for PostgreSQL, the opaque page cursor, and the
 * highlighted snippet. No server, no database: tests/unit covers them.
 * (Not "search.h": that name is the C library's <search.h>.)
 *
 * Query syntax (websearch_to_tsquery's, plus prefixes): words (all must
 * match), "a quoted phrase", `or` between alternatives, `-word` to exclude,
 * and `word*` for a prefix ("meet*" finds "meeting"; prefix terms are always
 * and-ed with the rest). Every other punctuation separates words.
 */
#ifndef NATTER_MSGSEARCH_H
#define NATTER_MSGSEARCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEARCH_QUERY_MAX_CHARS 200 /* q, Unicode code points */
#define SEARCH_QUERY_MAX_CHARS_S "200"
#define SEARCH_PAGE_DEFAULT 20
#define SEARCH_PAGE_MAX 50
#define SEARCH_CURSOR_MAX 120 /* longest cursor accepted (and produced) */

/* Why a q was refused (search_query_parse). */
enum sq_status {
    SQ_OK,
    SQ_EMPTY,             /* nothing but white space */
    SQ_TOO_LONG,          /* past SEARCH_QUERY_MAX_CHARS */
    SQ_ENCODING,          /* not UTF-8 */
    SQ_CONTROL,           /* a control character (tab, newline, ...) */
    SQ_UNBALANCED_QUOTES, /* an odd number of '"' */
};

/* q split for PostgreSQL: web for websearch_to_tsquery('simple', web), prefix
 * for to_tsquery('simple', prefix) ("'stem':* & 'stem2':*", or "" for none).
 * Both are parameters of the query, never SQL text. Owned: search_query_free. */
struct search_query {
    char *web;
    char *prefix;
};

/* Checks q and splits it. On SQ_OK out holds two owned strings; on anything
 * else out is left empty (both NULL). */
enum sq_status search_query_parse(const char *q, struct search_query *out);
void search_query_free(struct search_query *q);
/* The stable `reason` member of a 400 invalid_query for st (not SQ_OK). */
const char *search_query_reason(enum sq_status st);

/* Where a page ended: the last result's sort key. rank is used (and encoded)
 * only for relevance order. */
struct search_cursor {
    bool relevance;
    float rank;    /* ts_rank of the last result, >= 0 */
    int64_t ts_us; /* its created_at, microseconds since the epoch */
    int64_t chat_id;
    int64_t seq;
};

/* Writes c as an opaque cursor into out (>= SEARCH_CURSOR_MAX + 1 bytes). */
void search_cursor_encode(const struct search_cursor *c, char *out, size_t len);
/* true when s is a cursor search_cursor_encode made for the same order
 * (relevance); c is filled then. */
bool search_cursor_decode(const char *s, bool relevance, struct search_cursor *c);

/* The snippet of a result from ts_headline's output, whose matches are
 * delimited by SEARCH_MARK_START / SEARCH_MARK_STOP: an array of
 * {"text", "match"} parts whose texts, concatenated, are the snippet. New
 * reference. */
#define SEARCH_MARK_START "\xee\x80\x80" /* U+E000 (private use) */
#define SEARCH_MARK_STOP "\xee\x80\x81"  /* U+E001 */
json_t *search_snippet(const char *headline);

#endif
