/* test_search.c — message search's query split, cursor and snippet (msgsearch.h). */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "msgsearch.h"
#include "unit.h"

/* parses q and checks the two texts handed to PostgreSQL */
static bool split_is(const char *q, const char *web, const char *prefix)
{
    struct search_query sq;
    if (search_query_parse(q, &sq) != SQ_OK)
        return false;
    bool ok = strcmp(sq.web, web) == 0 && strcmp(sq.prefix, prefix) == 0;
    if (!ok)
        fprintf(stderr, "  q=[%s] web=[%s] prefix=[%s]\n", q, sq.web, sq.prefix);
    search_query_free(&sq);
    return ok;
}

static enum sq_status status_of(const char *q)
{
    struct search_query sq;
    enum sq_status st = search_query_parse(q, &sq);
    CHECK(st == SQ_OK || (sq.web == NULL && sq.prefix == NULL));
    search_query_free(&sq);
    return st;
}

static bool cursor_round_trip(struct search_cursor c)
{
    char out[SEARCH_CURSOR_MAX + 1];
    struct search_cursor d;
    search_cursor_encode(&c, out, sizeof out);
    if (strlen(out) > SEARCH_CURSOR_MAX || !search_cursor_decode(out, c.relevance, &d))
        return false;
    return d.rank == (c.relevance ? c.rank : 0) && d.ts_us == c.ts_us && d.chat_id == c.chat_id && d.seq == c.seq &&
           !search_cursor_decode(out, !c.relevance, &d);
}

/* the snippet's parts as "text|match;..." */
static bool snippet_is(const char *headline, const char *want)
{
    json_t *parts = search_snippet(headline);
    char got[512] = "";
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p) {
        strcat(got, json_string_value(json_object_get(p, "text")));
        strcat(got, json_is_true(json_object_get(p, "match")) ? "|1;" : "|0;");
    }
    json_decref(parts);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "  snippet got [%s] want [%s]\n", got, want);
    return strcmp(got, want) == 0;
}

#define S SEARCH_MARK_START
#define E SEARCH_MARK_STOP

void suite_search(void)
{
    /* words and operators go to websearch_to_tsquery unchanged */
    CHECK(split_is("hello world", "hello world", ""));
    CHECK(split_is("  a   b  ", "a b", ""));
    CHECK(split_is("\"quick brown\" or -fox", "\"quick brown\" or -fox", ""));
    /* a trailing * makes a prefix term for to_tsquery, outside the websearch text */
    CHECK(split_is("meet* today", "today", "'meet':*"));
    CHECK(split_is("a* b** c", "c", "'a':* & 'b':*"));
    /* quotes and backslashes cannot break out of the quoted lexeme */
    CHECK(split_is("it's*", "", "'its':*"));
    CHECK(split_is("x\\'y*", "", "'xy':*"));
    CHECK(split_is("'\\*", "", ""));
    /* stars alone, an excluded prefix and a star inside a phrase are not prefix terms */
    CHECK(split_is("* **", "", ""));
    CHECK(split_is("-foo*", "-foo*", ""));
    CHECK(split_is("\"foo bar*\"", "\"foo bar*\"", ""));
    CHECK(split_is("\"a b\"*", "\"a b\"*", ""));
    CHECK(split_is("caf\xc3\xa9*", "", "'caf\xc3\xa9':*"));

    CHECK(status_of("") == SQ_EMPTY);
    CHECK(status_of("   ") == SQ_EMPTY);
    CHECK(status_of("a\tb") == SQ_CONTROL);
    CHECK(status_of("a\nb") == SQ_CONTROL);
    CHECK(status_of("a\xc2\x85"
                    "b") == SQ_CONTROL); /* C1 NEL */
    CHECK(status_of("\xff\xfe") == SQ_ENCODING);
    CHECK(status_of("caf\xc3") == SQ_ENCODING);
    CHECK(status_of("\"open") == SQ_UNBALANCED_QUOTES);
    CHECK(status_of("\"a\" \"b\" \"") == SQ_UNBALANCED_QUOTES);
    CHECK(status_of("\"a\" \"b\"") == SQ_OK);
    char q[2 * SEARCH_QUERY_MAX_CHARS + 3];
    memset(q, 'x', SEARCH_QUERY_MAX_CHARS);
    q[SEARCH_QUERY_MAX_CHARS] = '\0';
    CHECK(status_of(q) == SQ_OK);
    q[SEARCH_QUERY_MAX_CHARS] = 'x';
    q[SEARCH_QUERY_MAX_CHARS + 1] = '\0';
    CHECK(status_of(q) == SQ_TOO_LONG);
    for (int i = 0; i < SEARCH_QUERY_MAX_CHARS; i++) /* characters, not bytes */
        memcpy(q + 2 * i, "\xc3\xa9", 2);
    q[2 * SEARCH_QUERY_MAX_CHARS] = '\0';
    CHECK(status_of(q) == SQ_OK);
    CHECK(strcmp(search_query_reason(SQ_UNBALANCED_QUOTES), "unbalanced_quotes") == 0);

    /* cursors: exact round trip of every key, the float rank included; bound to their order */
    CHECK(cursor_round_trip((struct search_cursor){false, 0, 1764000000123456, 12, 481}));
    CHECK(cursor_round_trip((struct search_cursor){true, 0.0607927f, 1764000000123456, 12, 481}));
    CHECK(cursor_round_trip((struct search_cursor){true, 1e-30f, 0, 1, 1}));
    CHECK(cursor_round_trip((struct search_cursor){true, 0.1f / 3.0f, INT64_MAX, INT64_MAX, INT64_MAX}));
    struct search_cursor c;
    CHECK(!search_cursor_decode("", false, &c));
    CHECK(!search_cursor_decode("!!", false, &c));
    CHECK(!search_cursor_decode("bjox", false, &c));      /* "n:1" */
    CHECK(!search_cursor_decode("bjoxOjI6Mw", true, &c)); /* "n:1:2:3" as relevance */
    CHECK(search_cursor_decode("bjoxOjI6Mw", false, &c) && c.seq == 3);
    CHECK(!search_cursor_decode("bjoxOjA6Mw", false, &c));     /* "n:1:0:3": chat 0 */
    CHECK(!search_cursor_decode("bjoxOjI6Mzo0", false, &c));   /* "n:1:2:3:4" */
    CHECK(!search_cursor_decode("cjpuYW46MToyOjM", true, &c)); /* "r:nan:1:2:3" */
    CHECK(!search_cursor_decode("cjotMToxOjI6Mw", true, &c));  /* "r:-1:1:2:3" */

    /* snippets: marked matches become parts with match true; markers never leak */
    CHECK(snippet_is("the " S "quick" E " fox", "the |0;quick|1; fox|0;"));
    CHECK(snippet_is(S "a" E S "b" E, "a|1;b|1;"));
    CHECK(snippet_is("plain", "plain|0;"));
    CHECK(snippet_is("", ""));
    CHECK(snippet_is("x " S "caf\xc3\xa9" E, "x |0;caf\xc3\xa9|1;"));
}
