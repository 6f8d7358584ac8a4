/*
 * strbuf.c — see strbuf.h.
 */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static void reserve(struct strbuf *sb, size_t more)
{
    if (sb->len + more + 1 <= sb->cap)
        return;
    sb->cap = (sb->len + more + 1) * 2;
    sb->buf = xrealloc(sb->buf, sb->cap);
}

void strbuf_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    reserve(sb, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void strbuf_add(struct strbuf *sb, const char *text)
{
    strbuf_addn(sb, text, strlen(text));
}

void strbuf_addn(struct strbuf *sb, const char *text, size_t n)
{
    reserve(sb, n);
    memcpy(sb->buf + sb->len, text, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

char *strbuf_take(struct strbuf *sb, size_t *len)
{
    char *s = sb->buf ? sb->buf : xstrdup("");
    if (len)
        *len = sb->len;
    *sb = (struct strbuf){0};
    return s;
}
