/*
 * typing.h — typing indicators: ephemeral events (seq null, never stored or
 * replayed) handed to the recipients' waiting polls on every instance.
 */
#ifndef NATTER_TYPING_H
#define NATTER_TYPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Coalescing: should user's typing state in chat_id be sent on now? True
 * when it differs from the last one sent, or that was window_ms or more ago
 * (now_ms: any clock that does not jump); it is then recorded as sent. Repeats
 * of one state inside the window are not sent: at most one event per member
 * per chat per window, whatever the client sends. Per process; thread-safe. */
bool typing_due(int64_t chat_id, int64_t user, bool typing, int64_t now_ms, int window_ms);

/* user started (typing) or stopped typing in chat_id: tells the n users in to. */
void typing_announce(int64_t chat_id, int64_t user, bool typing, const int64_t *to, size_t n);

#endif
