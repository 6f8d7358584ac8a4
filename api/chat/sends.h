/*
 * sends.h — the send pipeline (pipeline.h): every send that queued while the
 * previous batch committed is written in ONE transaction:
 * natter_send_batch_set() (migrations/007: chat rows locked in ascending id
 * order, then for the whole batch in a few set-based statements the
 * idempotency check, membership, the chats' next seqs in arrival order,
 * message and outbox rows, the senders' read markers; when the database
 * refuses a message, the batch runs again in a new transaction through
 * natter_send_batch(), migrations/004, one message per subtransaction, so
 * that the refused one fails alone), the Message objects of the
 * batch in one query, the inbox fan-out of every new message in one
 * statement (users locked in ascending id order), COMMIT. Then the wake-ups
 * carry the new message events, each send's `done` replies (201 after
 * COMMIT: acknowledged means durable), and the courier enqueues the push
 * jobs.
 *
 * A retry of one client_msg_id racing its original finds it: inside one batch
 * (the earlier one is already inserted), across batches and instances (the
 * chat row lock orders them; the later one reads the committed row).
 */
#ifndef NATTER_SENDS_H
#define NATTER_SENDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "pipeline.h"

struct config;
struct redis_pool;

#define SENDS_MAX_BATCH 256               /* sends per transaction */
#define SENDS_MAX_BYTES (2 * 1024 * 1024) /* text per transaction (a single send may exceed it) */

enum send_status {
    SEND_NEW,         /* committed: seq and message are set */
    SEND_EXISTING,    /* the client_msg_id was known: seq, message and stored_hash are set */
    SEND_NOT_MEMBER,  /* the sender is not a member (or the chat does not exist) */
    SEND_FAILED,      /* this message failed; the others of its batch did not (sqlstate set) */
    SEND_UNAVAILABLE, /* the batch did not commit (database unreachable, conflict): retry */
};

struct send {
    struct pipe_item it; /* it.r: the request; filled by sends_submit */
    /* filled by the caller; strings borrowed from the request */
    int64_t chat_id, sender_id;
    int64_t reply_to;                                          /* 0: none */
    const char *client_msg_id, *text, *mentions, *attachments; /* "{…}" array literals */
    const char *hash;                                          /* content hash (idempotency) */
    /* runs on the committer thread once the outcome is known; must reply */
    void (*done)(struct send *s);
    /* the outcome */
    enum send_status status;
    int64_t seq;
    char stored_hash[65];
    char sqlstate[6];
    json_t *message; /* the Message object; owned by the request */
};

/* Starts the pipeline (its own PostgreSQL connection). 0 or -1. */
int sends_start(const struct config *cfg, struct redis_pool *redis);
/* Refuses new sends, commits and answers everything queued, stops. */
void sends_stop(void);
void sends_free(void);
/* Hands r (s's request) to the pipeline; false when it is full or stopping
 * (nothing was taken: the caller replies 503). Only inside the access handler. */
bool sends_submit(struct req *r, struct send *s);
void sends_stats(struct pipeline_stats *out);

#endif
