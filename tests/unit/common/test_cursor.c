/* test_cursor.c — keyset cursors: round trips, and refusal of anything the server did not issue. */
#include <string.h>

#include <sodium.h>

#include "cursor.h"
#include "unit.h"

static void b64(const char *raw, char *out, size_t len)
{
    sodium_bin2base64(out, len, (const unsigned char *)raw, strlen(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void suite_cursor(void)
{
    char c[CURSOR_MAX + 1], raw[CURSOR_MAX + 1];
    int64_t a = -1, b = -1;

    cursor_encode(1764000000123456, 42, c, sizeof c);
    CHECK(cursor_decode(c, &a, &b));
    CHECK(a == 1764000000123456 && b == 42);
    CHECK(strchr(c, '=') == NULL && strchr(c, '+') == NULL && strchr(c, '/') == NULL); /* URL-safe, unpadded */

    cursor_encode(INT64_MAX, INT64_MAX, c, sizeof c); /* the longest one fits */
    CHECK(strlen(c) <= CURSOR_MAX);
    CHECK(cursor_decode(c, &a, &b) && a == INT64_MAX && b == INT64_MAX);

    cursor_encode(0, 1, c, sizeof c); /* time 0 is a valid key, id 0 is not */
    CHECK(cursor_decode(c, &a, &b) && a == 0 && b == 1);
    cursor_encode(5, 0, c, sizeof c);
    CHECK(!cursor_decode(c, &a, &b));
    cursor_encode(-1, 5, c, sizeof c);
    CHECK(!cursor_decode(c, &a, &b));

    CHECK(!cursor_decode("", &a, &b));
    CHECK(!cursor_decode("not base64!", &a, &b));
    CHECK(!cursor_decode("MTIz", &a, &b)); /* "123": no dot */
    b64("12.x", raw, sizeof raw);
    CHECK(!cursor_decode(raw, &a, &b));
    b64("12.", raw, sizeof raw);
    CHECK(!cursor_decode(raw, &a, &b));
    b64(".12", raw, sizeof raw);
    CHECK(!cursor_decode(raw, &a, &b));
    b64("1.2.3", raw, sizeof raw);
    CHECK(!cursor_decode(raw, &a, &b));
    b64("99999999999999999999.1", raw, sizeof raw); /* overflows int64 */
    CHECK(!cursor_decode(raw, &a, &b));
    b64(" 1.2", raw, sizeof raw);
    CHECK(!cursor_decode(raw, &a, &b));
    b64("1.2", raw, sizeof raw);
    CHECK(cursor_decode(raw, &a, &b) && a == 1 && b == 2);
    strcat(raw, "="); /* padding is not our variant */
    CHECK(!cursor_decode(raw, &a, &b));

    char longc[CURSOR_MAX + 8];
    memset(longc, 'A', sizeof longc - 1);
    longc[sizeof longc - 1] = '\0';
    CHECK(!cursor_decode(longc, &a, &b));
}
