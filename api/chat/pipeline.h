/*
 * pipeline.h — group commit in the application: a queue of writes and one
 * committer thread that writes everything that queued while its previous
 * batch was committing in ONE transaction.
 *
 * An HTTP thread validates a request, fills an operation that embeds a
 * struct pipe_item and submits it (the connection is suspended; the handler
 * returns without replying). The committer takes a batch — at most
 * ops->max_batch items and ops->max_bytes bytes, never empty, and a lone item
 * at once when the pipeline is idle (no timer) — and calls ops->commit on its
 * own PostgreSQL connection (a pipeline may run several committers, each
 * with its batch), which writes the whole batch with set-based
 * statements between BEGIN and COMMIT. Only then this instance's waiting
 * polls are woken, and each item's ops->done replies on the committer thread
 * (acknowledged means durable); a courier thread then publishes the
 * wake-ups for the other instances and runs ops->post (e.g. push jobs), so
 * Redis never holds up a commit. A batch that does not commit answers every
 * item through ops->unavailable + ops->done (503: the client retries, which
 * every user of the pipeline makes safe).
 *
 * Two pipelines run in natter-api: sends (sends.h) and read markers
 * (readmarks.h), each with its thread and connection.
 */
#ifndef NATTER_PIPELINE_H
#define NATTER_PIPELINE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct config;
struct db_session;
struct req;
struct wake;

#define PIPELINE_MAX_QUEUE 4096 /* items waiting; beyond it pipeline_submit refuses */
#define PIPELINE_MAX_POSTS 1024 /* committed batches whose Redis work waits for the courier */

/* The first member of every operation a pipeline carries. */
struct pipe_item {
    struct req *r;
    size_t bytes; /* counted against ops->max_bytes (a single item may exceed it) */
    struct pipe_item *next;
};

/* What a committed batch leaves for after COMMIT. */
struct pipe_result {
    struct wake *wakes; /* owned, each with its body reference */
    size_t nwakes;
    void *post; /* for ops->post on the courier thread, or NULL */
};

struct pipe_ops {
    const char *name; /* in logs */
    size_t max_batch, max_bytes;
    /* BEGIN … COMMIT of v[0..n) on the committer's session (db.h). true when
     * committed, with *res filled; false when nothing can be reported as
     * committed (the engine rolls back and reconnects as needed). Sets each
     * item's outcome. */
    bool (*commit)(struct db_session *db, struct pipe_item **v, size_t n, struct pipe_result *res);
    /* the batch of it did not commit */
    void (*unavailable)(struct pipe_item *it);
    /* replies (committer thread); the request is handed back right after */
    void (*done)(struct pipe_item *it);
    /* courier thread, after the wake-ups are published; frees post */
    void (*post)(void *post);
    /* frees a post that is dropped (the courier fell PIPELINE_MAX_POSTS behind) */
    void (*post_free)(void *post);
};

struct pipeline;

/* Starts the courier and `committers` committer threads (at least one).
 * With several, a batch commits while the next one is being written: two
 * batches that touch the same chat or user serialise on its row lock, and
 * the global lock order (chat/membership.h) keeps them free of deadlocks.
 * NULL on failure (logged). */
struct pipeline *pipeline_start(const struct pipe_ops *ops, const struct config *cfg, int committers);
/* Refuses new items, commits and answers everything queued, stops the
 * threads (a second call does nothing). NULL-safe. */
void pipeline_stop(struct pipeline *p);
/* Frees a stopped pipeline, once nothing can submit to it any more. */
void pipeline_free(struct pipeline *p);
/* Hands it->r to the pipeline (its connection is suspended; ops->done
 * replies later). false when the pipeline is full or stopping: nothing was
 * taken and the caller replies (503). Only inside the access handler. */
bool pipeline_submit(struct pipeline *p, struct pipe_item *it);

struct pipeline_stats {
    size_t depth;                     /* items waiting for the committer */
    unsigned long long batches;       /* transactions run */
    unsigned long long items;         /* items they held */
    unsigned long long posts_dropped; /* batches whose publish and post were dropped */
};
void pipeline_stats(struct pipeline *p, struct pipeline_stats *out);

/* Runs sql (no parameters) on c; true when it succeeded. */
bool pipeline_exec(PGconn *c, const char *sql);

#endif
