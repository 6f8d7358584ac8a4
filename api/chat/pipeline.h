/*
 * pipeline.h — the send pipeline: group commit in the application.
 *
 * An HTTP thread validates a send, fills a struct send and hands its request
 * to the pipeline (pipeline_submit), which suspends the connection. One
 * committer thread takes everything that queued while its previous batch was
 * committing (at most PIPELINE_MAX_BATCH sends and PIPELINE_MAX_BYTES of text;
 * an idle pipeline commits a lone send at once) and writes it in ONE
 * transaction: natter_send_batch() (migrations/004_send_batch.sql: chat rows
 * locked in ascending id order, per message in arrival order the idempotency
 * check, membership, next seq, message and outbox rows, each in its own
 * subtransaction; the senders' read markers), the Message objects of the
 * batch in one query, the inbox fan-out of every new message in one statement
 * (users locked in ascending id order), COMMIT. Only then this instance's
 * waiting polls are woken and, for each send, its `done` callback runs on the
 * committer thread and replies (201 after COMMIT: acknowledged means
 * durable); a courier thread then publishes the wake-ups for the other
 * instances and enqueues the push jobs, so Redis never holds up a commit.
 *
 * A retry of one client_msg_id racing its original finds it: inside one batch
 * (the earlier one is already inserted), across batches and instances (the
 * chat row lock orders them; the later one reads the committed row).
 */
#ifndef NATTER_PIPELINE_H
#define NATTER_PIPELINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct redis_pool;
struct req;

#define PIPELINE_MAX_BATCH 32                /* sends per transaction (each is a subtransaction) */
#define PIPELINE_MAX_BYTES (2 * 1024 * 1024) /* text per transaction (a single send may exceed it) */
#define PIPELINE_MAX_QUEUE 4096              /* sends waiting; beyond it pipeline_submit refuses */

enum send_status {
    SEND_NEW,         /* committed: seq and message are set */
    SEND_EXISTING,    /* the client_msg_id was known: seq, message and stored_hash are set */
    SEND_NOT_MEMBER,  /* the sender is not a member (or the chat does not exist) */
    SEND_FAILED,      /* this message failed; the others of its batch did not (sqlstate set) */
    SEND_UNAVAILABLE, /* the batch did not commit (database unreachable, conflict): retry */
};

struct send {
    /* filled by the caller; strings borrowed from the request */
    struct req *r;
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
    struct send *next;
};

/* Starts the committer thread (its own PostgreSQL connection). 0 or -1. */
int pipeline_start(const struct config *cfg, struct redis_pool *redis);
/* Refuses new sends, commits and answers everything queued, stops. */
void pipeline_stop(void);
/* Hands s->r to the pipeline (the connection is suspended; s->done replies
 * later). false when the pipeline is full or stopping: nothing was taken and
 * the caller replies (503). Only inside the access handler. */
bool pipeline_submit(struct send *s);
/* Sends waiting for the committer; batches run and the sends they held. */
size_t pipeline_depth(void);
unsigned long long pipeline_batches(void);
unsigned long long pipeline_sends(void);
/* Batches whose publish and push jobs were dropped because Redis fell behind. */
unsigned long long pipeline_posts_dropped(void);

#endif
