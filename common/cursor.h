/*
 * cursor.h — opaque keyset-pagination cursors: a pair of integers (a sort
 * key and a tie-breaking id) as "<a>.<b>" in unpadded base64url. Clients
 * treat them as opaque; the server decodes them exactly.
 */
#ifndef NATTER_CURSOR_H
#define NATTER_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CURSOR_MAX 80 /* longest cursor accepted (and produced) */

/* Writes the cursor of (a, b) into out (>= CURSOR_MAX + 1 bytes). */
void cursor_encode(int64_t a, int64_t b, char *out, size_t len);
/* true when cur is a cursor with a >= 0 and b > 0 (what the server issues). */
bool cursor_decode(const char *cur, int64_t *a, int64_t *b);

#endif
