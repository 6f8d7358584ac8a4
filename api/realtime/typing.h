/*
 * typing.h — typing indicators: ephemeral events (seq null, never stored or
 * replayed) handed to the recipients' waiting polls on every instance.
 */
#ifndef NATTER_TYPING_H
#define NATTER_TYPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* user started (typing) or stopped typing in chat_id: tells the n users in to. */
void typing_announce(int64_t chat_id, int64_t user, bool typing, const int64_t *to, size_t n);

#endif
