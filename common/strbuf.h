/*
 * strbuf.h — a growing, NUL-terminated text buffer (metrics pages and other
 * text built piece by piece). Allocation aborts on out-of-memory (util.h).
 */
#ifndef NATTER_STRBUF_H
#define NATTER_STRBUF_H

#include <stddef.h>

struct strbuf {
    char *buf; /* owned; NULL until the first append */
    size_t len, cap;
};

void strbuf_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_add(struct strbuf *sb, const char *text);
/* n bytes of text (which may hold NULs). */
void strbuf_addn(struct strbuf *sb, const char *text, size_t n);
/* Hands the text over (never NULL: "" when nothing was appended); sb is empty again. */
char *strbuf_take(struct strbuf *sb, size_t *len);

#endif
