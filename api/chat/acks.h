/*
 * acks.h — poll acks and delivered receipts, coalesced.
 *
 * A poll with since=N acks N for its device. acks_record() only notes the
 * newest N per device in memory (a bounded table); a flusher thread wakes
 * when the first ack arrives, waits NATTER_ACK_FLUSH_MS for more to gather
 * and writes all of them in ONE transaction (natter_ack_batch(),
 * migrations/005_ack_batch.sql): acked_seq per device, delivered markers per
 * (chat, member), and one `receipt` per (chat, sender) for the whole flush.
 * Then the senders' polls are woken (here and, through Redis, elsewhere).
 *
 * A crash loses only the acks not yet flushed: receipts and inbox cleanup
 * wait until the device polls again (its next since covers the same range),
 * nothing is ever wrong. A flush that fails keeps its acks for the next one.
 */
#ifndef NATTER_ACKS_H
#define NATTER_ACKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub.h"

struct config;

#define ACKS_MAX_PENDING 65536 /* devices with an unflushed ack; more are dropped (and counted) */
#define ACKS_MAX_HINTS 16      /* message events a pending ack may describe (else the flush reads them) */
#define ACKS_MAX_PUSH 16384    /* pending (user, chat, seq) entries of push acks; more are refused */

/* Starts the flusher (its own PostgreSQL connection). 0 or -1. */
int acks_start(const struct config *cfg);
/* Flushes what is pending (a bounded number of attempts) and stops. */
void acks_stop(void);
/* The device's poll acked since (a no-op unless newer than what is
 * pending). hints (may be NULL) describe the message events the ack newly
 * covers, from memory (hub.h): with them the flush reads neither the inbox
 * nor the messages for this device. */
void acks_record(int64_t user_id, int64_t device_id, int64_t since, const struct ack_hints *hints);

/* A phone acknowledged a push (POST /v1/devices/{id}/push-ack) that covered,
 * per chat chats[i], the messages up to seqs[i]: the next flush moves the
 * user's delivered markers there and writes the `delivered` receipts, as a
 * poll ack does (natter_push_ack_batch, migrations/013, in a transaction of
 * its own after the poll acks'). false when the table has no room for n more
 * (the caller answers 503: the phone acks again). */
bool acks_record_push(int64_t user_id, const int64_t *chats, const int64_t *seqs, size_t n);

unsigned long long acks_flushes(void);        /* transactions that committed */
unsigned long long acks_flushed(void);        /* device acks they carried */
unsigned long long acks_dropped(void);        /* acks refused: the table was full */
unsigned long long acks_flush_failures(void); /* flushes that did not commit (retried) */
unsigned long long acks_hinted(void);         /* flushed acks whose events came from memory */

#endif
