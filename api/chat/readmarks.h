/*
 * readmarks.h — the read-marker pipeline (pipeline.h): every
 * POST /v1/chats/{id}/read that queued while the previous batch committed is
 * written in ONE transaction: natter_read_batch() (migrations/006: each
 * request's membership and bounds, the markers moved forward, one read
 * `receipt` per moved marker to the reader and to the senders it covers,
 * member rows then users locked in the global order), the unread counts of
 * the batch in one query, COMMIT. Then the wake-ups carry the receipts and
 * each request's `done` replies; after them the courier enqueues one
 * push_badge job per read (common/jobs.h): the reader's other devices that
 * are not polling get a silent badge update (workers/push.c).
 */
#ifndef NATTER_READMARKS_H
#define NATTER_READMARKS_H

#include <stdbool.h>
#include <stdint.h>

#include "pipeline.h"

struct config;
struct redis_pool;

#define READMARKS_MAX_BATCH 256 /* read markers per transaction */

enum read_status {
    READ_OK,          /* last_read_seq, unread and mentions are set */
    READ_NOT_MEMBER,  /* not a member (or no such chat) */
    READ_BEYOND,      /* seq is past the chat's newest message */
    READ_UNAVAILABLE, /* the batch did not commit: retry */
};

struct read_op {
    struct pipe_item it; /* it.r: the request; filled by readmarks_submit */
    int64_t chat_id, user_id, seq;
    int64_t device_id; /* the reader's device (its other devices get the badge update) */
    /* runs on the committer thread once the outcome is known; must reply */
    void (*done)(struct read_op *op);
    /* the outcome */
    enum read_status status;
    int64_t last_read_seq, unread, unread_mentions;
};

/* rp: where the push_badge jobs go (borrowed for the pipeline's life). */
int readmarks_start(const struct config *cfg, struct redis_pool *rp);
void readmarks_stop(void);
void readmarks_free(void);
/* Hands r to the pipeline; false when it is full or stopping (the caller
 * replies 503). Only inside the access handler. */
bool readmarks_submit(struct req *r, struct read_op *op);
void readmarks_stats(struct pipeline_stats *out);

#endif
