/* test_util.c — UTF-8 helpers, integer parsing, hashing, randomness. */
#include <stdio.h>
#include <string.h>

#include "unit.h"
#include "util.h"

void suite_util(void)
{
    int64_t v;
    CHECK(parse_i64("42", &v) && v == 42);
    CHECK(parse_i64("-7", &v) && v == -7);
    CHECK(parse_i64("9223372036854775807", &v) && v == INT64_MAX);
    CHECK(!parse_i64("9223372036854775808", &v)); /* overflow */
    CHECK(!parse_i64("", &v));
    CHECK(!parse_i64("12a", &v));
    CHECK(!parse_i64(" 1", &v));
    CHECK(!parse_i64("1-", &v));
    CHECK(!parse_i64(NULL, &v));

    CHECK(utf8_chars("abc", 3) == 3);
    CHECK(utf8_chars("h\xc3\xa9llo", 6) == 5);     /* é */
    CHECK(utf8_chars("\xf0\x9f\x98\x80", 4) == 1); /* 😀 */

    CHECK(utf8_valid("abc", 3));
    CHECK(utf8_valid("\xf0\x9f\x98\x80", 4));
    CHECK(!utf8_valid("\xff", 1));
    CHECK(!utf8_valid("\xc0\xaf", 2)); /* overlong '/' */

    CHECK(emoji_valid("\xf0\x9f\x91\x8d", 32));                             /* thumbs up */
    CHECK(emoji_valid("\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 32));             /* + skin tone */
    CHECK(emoji_valid("\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb", 32)); /* woman ZWJ laptop */
    CHECK(emoji_valid("\xe2\x9d\xa4\xef\xb8\x8f", 32));                     /* heart + VS16 */
    CHECK(emoji_valid("\xf0\x9f\x87\xab\xf0\x9f\x87\xb7", 32));             /* flag FR */
    CHECK(emoji_valid("1\xef\xb8\x8f\xe2\x83\xa3", 32));                    /* keycap 1 */
    CHECK(
        emoji_valid("\xf0\x9f\x8f\xb4\xf3\xa0\x81\xa7\xf3\xa0\x81\xa2\xf3\xa0\x81\xa5\xf3\xa0\x81\xae"
                    "\xf3\xa0\x81\xa7\xf3\xa0\x81\xbf",
                    32)); /* flag England (tags) */
    CHECK(!emoji_valid(":+1:", 32));
    CHECK(!emoji_valid("a", 32));
    CHECK(!emoji_valid("1", 32));
    CHECK(!emoji_valid("\xc2\xa0", 32));                         /* no-break space */
    CHECK(!emoji_valid("\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 32)); /* two emoji */
    CHECK(!emoji_valid("\xf0\x9f\x87\xab", 32));                 /* half a flag */
    CHECK(!emoji_valid("\xe2\x80\x8d\xf0\x9f\x92\xbb", 32));     /* leading ZWJ */
    CHECK(!emoji_valid("\xf0\x9f\x91\xa9\xe2\x80\x8d", 32));     /* trailing ZWJ */
    CHECK(!emoji_valid("", 32));
    CHECK(!emoji_valid("\xff", 32));
    CHECK(!emoji_valid("\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 1)); /* more code points than allowed */
    CHECK(!utf8_valid("\xed\xa0\x80", 3));                      /* surrogate */
    CHECK(!utf8_valid("\xf4\x90\x80\x80", 4));                  /* > U+10FFFF */
    CHECK(!utf8_valid("\xe2\x82", 2));                          /* truncated */
    CHECK(!utf8_valid("a\0b", 3));                              /* NUL */

    CHECK(!utf8_has_control("plain text \xc3\xa9", 13));
    CHECK(utf8_has_control("tab\there", 8));
    CHECK(utf8_has_control("del\x7f", 4));
    CHECK(utf8_has_control("c1\xc2\x85", 4)); /* U+0085 NEL */

    char h[65];
    sha256_hex("abc", 3, h);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);

    char a[33], b[33];
    random_hex(a, 16);
    random_hex(b, 16);
    CHECK(strlen(a) == 32 && strcmp(a, b) != 0);
    char t[64];
    random_b64url(t, sizeof t, 32);
    CHECK(strlen(t) == 43 && !strchr(t, '+') && !strchr(t, '/') && !strchr(t, '='));

    /* comma-separated lists: entries trimmed, empty ones reported as empty */
    const char *p = " image/* , text/plain,,application/pdf ", *it;
    size_t l, n = 0;
    char got[4][32];
    while (csv_next(&p, &it, &l) && n < 4) {
        snprintf(got[n], sizeof got[n], "%.*s", (int)l, it);
        n++;
    }
    CHECK(n == 4 && strcmp(got[0], "image/*") == 0 && strcmp(got[1], "text/plain") == 0 && got[2][0] == '\0' &&
          strcmp(got[3], "application/pdf") == 0);
    p = "";
    CHECK(!csv_next(&p, &it, &l));

    char ts[40];
    rfc3339_now(ts, sizeof ts);
    CHECK(strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z');
}
