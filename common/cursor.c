/*
 * cursor.c — see cursor.h.
 */
#include "cursor.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "util.h"

void cursor_encode(int64_t a, int64_t b, char *out, size_t len)
{
    char raw[64];
    snprintf(raw, sizeof raw, "%lld.%lld", (long long)a, (long long)b);
    sodium_bin2base64(out, len, (const unsigned char *)raw, strlen(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

bool cursor_decode(const char *cur, int64_t *a, int64_t *b)
{
    unsigned char raw[64];
    size_t len = 0, n = strlen(cur);
    if (n > CURSOR_MAX ||
        sodium_base642bin(raw, sizeof raw - 1, cur, n, NULL, &len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    raw[len] = '\0';
    char *dot = strchr((char *)raw, '.');
    if (!dot)
        return false;
    *dot = '\0';
    return parse_i64((char *)raw, a) && parse_i64(dot + 1, b) && *a >= 0 && *b > 0;
}
