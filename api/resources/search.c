/*
 * search.c — GET /v1/search: full-text search over the messages the caller
 * can see, with PostgreSQL's text search (migrations/012_message_search.sql).
 *
 * Visibility is history's (messages.c, invariant 5): messages of chats the
 * caller is a member of now, with seq > their joined_seq; live text messages
 * only (a tombstone's body is gone, and the index's predicate leaves it out).
 *
 * Bounds: q is at most SEARCH_QUERY_MAX_CHARS, a page at most SEARCH_PAGE_MAX
 * results, each search one read-only transaction whose statements stop at
 * NATTER_SEARCH_TIMEOUT_MS (503 search_timeout past it, the connection goes
 * back to the pool), and a per-user rate (LIMIT_SEARCH, charged by
 * limits_admit before the search takes a thread). The route is R_SLOW: it
 * runs on the transport's slow-query pool, NATTER_SEARCH_MAX_CONCURRENT
 * threads with as many waiting at most (then 503), never on an HTTP thread,
 * whose other connections (long-polls among them) it would stall. ts_headline
 * runs only on the page's rows and over at most SNIPPET_SOURCE_CHARS of each
 * body.
 *
 * Order: newest first (created_at, then chat_id and seq as tie-breakers) or
 * by relevance (ts_rank, then the same). Keyset pagination on those keys,
 * carried in an opaque cursor, so pages neither repeat nor skip results while
 * new messages arrive (they sort before the cursor).
 *
 * Citus: messages and chat_members are distributed by chat_id and the query
 * joins them on it; with chat_id given, `m.chat_id = $N` and
 * `cm.chat_id = $N` name one shard (a router query). Without it the search
 * is multi-shard by nature (all the caller's chats).
 */
#include "msgsearch.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "apilimits.h"
#include "app.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "resources.h"
#include "strbuf.h"
#include "tx.h"
#include "util.h"

/* ======================================================================
 * The query text
 * ====================================================================== */

const char *search_query_reason(enum sq_status st)
{
    switch (st) {
    case SQ_EMPTY:
        return "empty";
    case SQ_TOO_LONG:
        return "too_long";
    case SQ_ENCODING:
        return "invalid_utf8";
    case SQ_CONTROL:
        return "control_character";
    case SQ_UNBALANCED_QUOTES:
        return "unbalanced_quotes";
    case SQ_OK:
        break;
    }
    return "ok";
}

void search_query_free(struct search_query *q)
{
    free(q->web);
    free(q->prefix);
    q->web = q->prefix = NULL;
}

/* Appends an unquoted token tok[0..n) ending in '*' as a prefix term of to_tsquery:
 * 'stem':* with the two characters that are special inside a quoted lexeme (' and
 * \) dropped; the text search parser splits the rest as it splits documents. */
static void add_prefix(struct strbuf *pre, const char *tok, size_t n)
{
    while (n > 0 && tok[n - 1] == '*')
        n--;
    size_t stem = 0;
    for (size_t i = 0; i < n; i++)
        stem += tok[i] != '\'' && tok[i] != '\\';
    if (stem == 0) /* nothing left of it: no term */
        return;
    strbuf_add(pre, pre->len ? " & '" : "'");
    for (size_t i = 0; i < n; i++)
        if (tok[i] != '\'' && tok[i] != '\\')
            strbuf_addn(pre, tok + i, 1);
    strbuf_add(pre, "':*");
}

enum sq_status search_query_parse(const char *q, struct search_query *out)
{
    out->web = out->prefix = NULL;
    size_t len = strlen(q);
    if (!utf8_valid(q, len))
        return SQ_ENCODING;
    if (utf8_chars(q, len) > SEARCH_QUERY_MAX_CHARS)
        return SQ_TOO_LONG;
    if (utf8_has_control(q, len))
        return SQ_CONTROL;
    size_t quotes = 0, blank = 0;
    for (size_t i = 0; i < len; i++) {
        quotes += q[i] == '"';
        blank += q[i] == ' ';
    }
    if (blank == len)
        return SQ_EMPTY;
    if (quotes % 2)
        return SQ_UNBALANCED_QUOTES;

    struct strbuf web = {0}, pre = {0};
    size_t i = 0;
    while (i < len) { /* bounded: every round consumes at least one byte */
        if (q[i] == ' ') {
            i++;
            continue;
        }
        size_t start = i;
        bool quoted = false;
        while (i < len && (quoted || q[i] != ' ')) {
            if (q[i] == '"')
                quoted = !quoted;
            i++;
        }
        const char *tok = q + start;
        size_t n = i - start;
        bool has_quote = memchr(tok, '"', n) != NULL;
        if (!has_quote && n > 0 && tok[n - 1] == '*' && tok[0] != '-') {
            add_prefix(&pre, tok, n);
        } else {
            if (web.len)
                strbuf_add(&web, " ");
            strbuf_addn(&web, tok, n);
        }
    }
    out->web = strbuf_take(&web, NULL);
    out->prefix = strbuf_take(&pre, NULL);
    return SQ_OK;
}

/* ======================================================================
 * The cursor: base64url of "n:<ts>:<chat>:<seq>" or "r:<rank>:<ts>:<chat>:<seq>"
 * ====================================================================== */

void search_cursor_encode(const struct search_cursor *c, char *out, size_t len)
{
    char raw[SEARCH_CURSOR_MAX];
    if (c->relevance) /* %.9g: a float's exact value, back through strtof */
        snprintf(raw, sizeof raw, "r:%.9g:%lld:%lld:%lld", (double)c->rank, (long long)c->ts_us, (long long)c->chat_id,
                 (long long)c->seq);
    else
        snprintf(raw, sizeof raw, "n:%lld:%lld:%lld", (long long)c->ts_us, (long long)c->chat_id, (long long)c->seq);
    sodium_bin2base64(out, len, (const unsigned char *)raw, strlen(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* The next ':'-separated field of *p (NUL-terminated in place), or NULL. */
static char *field(char **p)
{
    if (!*p)
        return NULL;
    char *f = *p, *colon = strchr(f, ':');
    if (colon) {
        *colon = '\0';
        *p = colon + 1;
    } else {
        *p = NULL;
    }
    return f;
}

bool search_cursor_decode(const char *s, bool relevance, struct search_cursor *c)
{
    unsigned char raw[SEARCH_CURSOR_MAX + 1];
    size_t len = 0, n = strlen(s);
    if (n == 0 || n > SEARCH_CURSOR_MAX ||
        sodium_base642bin(raw, sizeof raw - 1, s, n, NULL, &len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    raw[len] = '\0';
    if (memchr(raw, '\0', len))
        return false;
    char *p = (char *)raw, *kind = field(&p);
    if (!kind || strcmp(kind, relevance ? "r" : "n") != 0)
        return false;
    *c = (struct search_cursor){.relevance = relevance};
    if (relevance) {
        char *f = field(&p), *end = NULL;
        if (!f || !*f)
            return false;
        c->rank = strtof(f, &end);
        if (*end || !isfinite(c->rank) || c->rank < 0)
            return false;
    }
    char *ts = field(&p), *chat = field(&p), *seq = field(&p);
    return ts && chat && seq && !p && parse_i64(ts, &c->ts_us) && parse_i64(chat, &c->chat_id) &&
           parse_i64(seq, &c->seq) && c->chat_id > 0 && c->seq > 0;
}

/* ======================================================================
 * The snippet
 * ====================================================================== */

static void add_part(json_t *parts, const char *s, size_t n, bool match)
{
    if (n > 0)
        json_array_append_new(parts, json_pack("{s:s%,s:b}", "text", s, n, "match", match));
}

json_t *search_snippet(const char *h)
{
    json_t *parts = json_array();
    const size_t ml = sizeof SEARCH_MARK_START - 1;
    bool match = false;
    const char *seg = h;
    for (const char *p = h; *p;) { /* bounded by the string */
        bool start = strncmp(p, SEARCH_MARK_START, ml) == 0, stop = strncmp(p, SEARCH_MARK_STOP, ml) == 0;
        if (!start && !stop) {
            p++;
            continue;
        }
        add_part(parts, seg, (size_t)(p - seg), match);
        match = start;
        p += ml;
        seg = p;
    }
    add_part(parts, seg, strlen(seg), match);
    return parts;
}

/* ======================================================================
 * GET /v1/search
 * ====================================================================== */

/* A snippet is cut from at most this many characters of a body (ts_headline
 * parses all it is given): a match past it gets a snippet without highlight. */
#define SNIPPET_SOURCE_CHARS "20000"

/* The two tsquery parameters, $2 (websearch syntax) and $3 (prefix terms). */
#define TSQ "(websearch_to_tsquery('simple', $2) && to_tsquery('simple', $3))"
/* The indexed expression and predicate of messages_search_idx, word for word. */
#define DOC "to_tsvector('simple'::regconfig, m.body)"
#define LIVE "m.kind = 'text' AND m.deleted_at IS NULL"
#define TS_US "(EXTRACT(EPOCH FROM m.created_at) * 1000000)::bigint"

/* $1 caller, $2 $3 query, $4 sender or NULL, $5 $6 $7 cursor (ts, chat, seq),
 * $8 rows to fetch, $9 rank of the cursor (relevance), $9/$10 one chat.
 *
 * Two levels: `k` finds the page's keys among the matches (sorting only keys:
 * a common word matches thousands of messages, and their bodies are up to
 * 100,000 characters); the outer level reads those rows again by primary key
 * and computes what costs a tokenization of the body — ts_rank (in newest
 * order) and ts_headline — for the page's rows only. */
#define HITS(RANK, CHAT)                                                                  \
    "SELECT m.chat_id, m.seq, " TS_US " AS ts" RANK                                       \
    " FROM messages m JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id = $1" \
    " WHERE " DOC " @@ " TSQ " AND " LIVE                                                 \
    " AND m.seq > cm.joined_seq AND ($4::bigint IS NULL OR m.sender_id = $4)" CHAT
#define PAGE(HITS_SQL, KEYSET, ORDER, RANK_OUT, OUTER) \
    "SELECT m.chat_id, m.seq, m.sender_id, " DB_TS("m.created_at") ", " DB_TS("m.edited_at") ", " RANK_OUT \
    ", k.ts, ts_headline('simple', left(translate(m.body, '" SEARCH_MARK_START SEARCH_MARK_STOP "', ''), "   \
    SNIPPET_SOURCE_CHARS "), " TSQ ", 'StartSel=" SEARCH_MARK_START ", StopSel=" SEARCH_MARK_STOP ","         \
    " MaxWords=24, MinWords=8, ShortWord=2, MaxFragments=2, FragmentDelimiter=\" … \"')"                     \
    " FROM (SELECT * FROM (" HITS_SQL ") hits WHERE " KEYSET " ORDER BY " ORDER("") " LIMIT $8) k"           \
    " JOIN messages m ON m.chat_id = k.chat_id AND m.seq = k.seq" OUTER " ORDER BY " ORDER("k.")

#define NEWEST_KEYSET "(hits.ts, hits.chat_id, hits.seq) < ($5::bigint, $6::bigint, $7::bigint)"
#define NEWEST_ORDER(P) P "ts DESC, " P "chat_id DESC, " P "seq DESC"
#define NEWEST_RANK "ts_rank(" DOC ", " TSQ ", 1)"
#define RELEVANT_KEYSET "(hits.rank, hits.ts, hits.chat_id, hits.seq) < ($9::real, $5::bigint, $6::bigint, $7::bigint)"
#define RELEVANT_ORDER(P) P "rank DESC, " NEWEST_ORDER(P)
#define RELEVANT_RANK ", ts_rank(" DOC ", " TSQ ", 1) AS rank"

/* The chat filter names the distribution column of every table at both levels, so
 * that with Citus the whole statement is one shard's (a router query). Without it
 * in the outer level, Citus plans `k` alone (one shard) and joins its rows back to
 * messages on every shard. */
#define ONE_CHAT(N) " AND m.chat_id = $" N " AND cm.chat_id = $" N
#define OUTER_CHAT(N) " AND m.chat_id = $" N
static const char sql_newest_all[] = PAGE(HITS("", ""), NEWEST_KEYSET, NEWEST_ORDER, NEWEST_RANK, "");
static const char sql_newest_chat[] = PAGE(HITS("", ONE_CHAT("9")), NEWEST_KEYSET, NEWEST_ORDER, NEWEST_RANK,
                                           OUTER_CHAT("9"));
static const char sql_relevant_all[] = PAGE(HITS(RELEVANT_RANK, ""), RELEVANT_KEYSET, RELEVANT_ORDER, "k.rank", "");
static const char sql_relevant_chat[] = PAGE(HITS(RELEVANT_RANK, ONE_CHAT("10")), RELEVANT_KEYSET, RELEVANT_ORDER,
                                             "k.rank", OUTER_CHAT("10"));

/* Sets the transaction's bounds and tells whether the query can be searched:
 * numnode 0 = no words at all; querytree 'T' = nothing an index can look up
 * (only exclusions, "-word"). client_min_messages keeps PostgreSQL's notice
 * about such queries out of the log. */
static const char sql_prepare[] =
    "SELECT numnode(q), querytree(q) = 'T', set_config('statement_timeout', $1, true),"
    " set_config('client_min_messages', 'warning', true)"
    " FROM (SELECT websearch_to_tsquery('simple', $2) && to_tsquery('simple', $3) AS q) s";
static const char sql_member[] = "SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2";

/* Ends the read-only transaction: 0, or -1 after replying (the connection is
 * gone). Even ROLLBACK runs under the transaction's statement_timeout, and a
 * very short one can cancel it too: that is no error here, since the pool
 * rolls back a connection that comes back inside a transaction. */
static int end_read(struct req *r)
{
    return req_sql(r, "57014", "ROLLBACK", 0, NULL) ? 0 : -1;
}

/* Reads an optional positive id parameter: 0 when absent, -1 after a 400. */
static int query_id(struct req *r, const char *name, int64_t *out)
{
    bool present;
    *out = 0;
    return req_query_int(r, name, 1, INT64_MAX, out, &present);
}

static int reply_query(struct req *r, int status, const char *code, const char *reason, const char *detail)
{
    return reply_problem_ext(r, status, code, json_pack("{s:s,s:s}", "field", "q", "reason", reason), "%s", detail);
}

static const char *query_detail(enum sq_status st)
{
    switch (st) {
    case SQ_EMPTY:
        return "q must contain something to search for";
    case SQ_TOO_LONG:
        return "q is longer than " SEARCH_QUERY_MAX_CHARS_S " characters";
    case SQ_ENCODING:
        return "q must be UTF-8";
    case SQ_CONTROL:
        return "q must not contain control characters";
    case SQ_UNBALANCED_QUOTES:
        return "q has a '\"' that opens a phrase and none that closes it";
    case SQ_OK:
        break;
    }
    return "bad query";
}

/* The search proper, on the request's connection, with the concurrency slot
 * taken: replies and returns 0 or -1. */
static int run_search(struct req *r, const struct search_query *sq, bool relevance, int64_t chat_id, int64_t sender_id,
                      const struct search_cursor *after, int64_t limit)
{
    char me[24], to[24], snd[24], ts[24], ch[24], sq_[24], lim[24], rk[32], cf[24];
    i64s(me, r->user_id);
    if (chat_id) {
        const char *vm[2] = {i64s(cf, chat_id), me};
        PGresult *mr = req_sql(r, NULL, sql_member, 2, vm);
        if (!mr)
            return -1;
        if (PQntuples(mr) != 1)
            return reply_problem(r, 404, "chat_not_found", "no such chat");
    }
    if (req_begin(r) < 0)
        return -1;
    const char *vp[3] = {i64s(to, r->app->cfg->search_timeout_ms), sq->web, sq->prefix};
    PGresult *pr = req_sql(r, NULL, sql_prepare, 3, vp);
    if (!pr)
        return -1;
    if (db_i64(pr, 0, 0) == 0 || PQgetvalue(pr, 0, 1)[0] == 't') {
        bool none = db_i64(pr, 0, 0) == 0;
        if (end_read(r) < 0)
            return -1;
        return reply_query(r, 422, "query_without_terms", none ? "no_terms" : "exclusions_only",
                           none ? "q has no words to search for (only punctuation or operators)"
                                : "q only excludes words (-word); say what to look for");
    }
    snprintf(rk, sizeof rk, "%.9g", (double)after->rank);
    const char *v[10] = {me,
                         sq->web,
                         sq->prefix,
                         sender_id ? i64s(snd, sender_id) : NULL,
                         i64s(ts, after->ts_us),
                         i64s(ch, after->chat_id),
                         i64s(sq_, after->seq),
                         i64s(lim, limit + 1),
                         relevance ? rk : cf,
                         cf};
    const char *sql = relevance ? (chat_id ? sql_relevant_chat : sql_relevant_all)
                                : (chat_id ? sql_newest_chat : sql_newest_all);
    int n = 8 + (relevance ? 1 : 0) + (chat_id ? 1 : 0);
    PGresult *res = req_sql(r, "57014", sql, n, v);
    if (!res)
        return -1;
    if (!db_res_ok(res)) { /* 57014: the statement timeout cancelled it */
        nlog(LOG_WARN, "search timed out",
             json_pack("{s:s,s:I,s:i}", "request_id", r->request_id, "user", (json_int_t)r->user_id, "timeout_ms",
                       r->app->cfg->search_timeout_ms));
        if (end_read(r) < 0)
            return -1;
        req_add_header(r, "Retry-After", "5");
        return reply_problem(r, 503, "search_timeout",
                             "the search took longer than the server allows; narrow it (chat_id, more words) "
                             "or retry later");
    }
    if (end_read(r) < 0) /* read only: nothing to commit */
        return -1;
    int rows = PQntuples(res);
    int take = rows > limit ? (int)limit : rows;
    json_t *results = json_array();
    for (int i = 0; i < take; i++) {
        json_array_append_new(results,
                              json_pack("{s:I,s:I,s:o,s:s,s:o,s:f,s:o}", "chat_id", (json_int_t)db_i64(res, i, 0),
                                        "seq", (json_int_t)db_i64(res, i, 1), "sender_id",
                                        PQgetisnull(res, i, 2) ? json_null() : json_integer(db_i64(res, i, 2)),
                                        "created_at", PQgetvalue(res, i, 3), "edited_at",
                                        PQgetisnull(res, i, 4) ? json_null() : json_string(PQgetvalue(res, i, 4)),
                                        "rank", strtod(PQgetvalue(res, i, 5), NULL), "snippet",
                                        search_snippet(PQgetvalue(res, i, 7))));
    }
    json_t *next = json_null();
    if (rows > limit && take > 0) {
        struct search_cursor c = {.relevance = relevance,
                                  .rank = strtof(PQgetvalue(res, take - 1, 5), NULL),
                                  .ts_us = db_i64(res, take - 1, 6),
                                  .chat_id = db_i64(res, take - 1, 0),
                                  .seq = db_i64(res, take - 1, 1)};
        char cur[SEARCH_CURSOR_MAX + 1];
        search_cursor_encode(&c, cur, sizeof cur);
        next = json_string(cur);
    }
    return reply_json(r, 200,
                      json_pack("{s:o,s:s,s:o}", "results", results, "order", relevance ? "relevance" : "newest",
                                "next_cursor", next));
}

int search_messages(struct req *r)
{
    const char *q = req_query(r, "q");
    const char *order = req_query(r, "order");
    const char *cursor = req_query(r, "cursor");
    int64_t limit = SEARCH_PAGE_DEFAULT, chat_id, sender_id;
    bool has_limit;
    bool relevance = false;
    if (order && strcmp(order, "relevance") == 0)
        relevance = true;
    else if (order && strcmp(order, "newest") != 0)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "order"),
                                 "order must be newest or relevance");
    if (req_query_int(r, "limit", 1, SEARCH_PAGE_MAX, &limit, &has_limit) < 0 || query_id(r, "chat_id", &chat_id) < 0 ||
        query_id(r, "sender_id", &sender_id) < 0)
        return -1;
    /* the first page starts above every key */
    struct search_cursor after = {
        .relevance = relevance, .rank = INFINITY, .ts_us = INT64_MAX, .chat_id = INT64_MAX, .seq = INT64_MAX};
    if (cursor && !search_cursor_decode(cursor, relevance, &after))
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "cursor"),
                                 "cursor is not a next_cursor of a search in this order");
    if (!q)
        return reply_query(r, 400, "invalid_query", "empty", "q is required");
    struct search_query sq;
    enum sq_status st = search_query_parse(q, &sq);
    if (st != SQ_OK)
        return reply_query(r, 400, "invalid_query", search_query_reason(st), query_detail(st));
    int rc = run_search(r, &sq, relevance, chat_id, sender_id, &after, limit);
    search_query_free(&sq);
    return rc;
}
