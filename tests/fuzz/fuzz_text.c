/*
 * fuzz_text.c — the small parsers of client text in common/: keyset cursors
 * (cursor_decode), integers of query parameters (parse_i64), comma lists
 * (csv_next), UTF-8 checks and the reaction check (emoji_valid).
 * Properties: a cursor that decodes re-encodes to one that decodes to the
 * same keys; an accepted integer prints back to a string that parses to the
 * same value; csv items lie inside the input and hold no comma; the UTF-8
 * functions agree with each other; an accepted reaction is valid UTF-8
 * without controls or spaces, of 1..32 characters.
 */
#include <inttypes.h>
#include <stdbool.h>

#include "cursor.h"
#include "fuzz.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = fuzz_cstr(data, size);
    size_t len = strlen(s);

    int64_t a, b;
    if (cursor_decode(s, &a, &b)) {
        char again[CURSOR_MAX + 1];
        int64_t a2, b2;
        cursor_encode(a, b, again, sizeof again);
        FUZZ_ASSERT(cursor_decode(again, &a2, &b2) && a2 == a && b2 == b);
    }

    int64_t v;
    if (parse_i64(s, &v)) {
        char buf[32];
        int64_t v2;
        snprintf(buf, sizeof buf, "%" PRId64, v);
        FUZZ_ASSERT(parse_i64(buf, &v2) && v2 == v);
    }

    const char *p = s, *item;
    size_t ilen, items = 0;
    while (csv_next(&p, &item, &ilen)) {
        FUZZ_ASSERT(item >= s && item + ilen <= s + len);
        FUZZ_ASSERT(memchr(item, ',', ilen) == NULL);
        FUZZ_ASSERT(++items <= len + 1);
    }

    if (utf8_valid(s, len))
        FUZZ_ASSERT(utf8_chars(s, len) <= len);
    if (emoji_valid(s, 32)) {
        FUZZ_ASSERT(utf8_valid(s, len) && !utf8_has_control(s, len));
        FUZZ_ASSERT(strchr(s, ' ') == NULL);
        size_t chars = utf8_chars(s, len);
        FUZZ_ASSERT(chars >= 1 && chars <= 32);
    }
    free(s);
    return 0;
}
