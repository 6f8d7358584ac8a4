/*
 * offload.h — a small bounded thread pool that runs whole handlers off the
 * HTTP threads (argon2id hashing costs ~60 ms and 64 MiB; it must not stall
 * an event loop that also serves thousands of long-polls).
 *
 * Protocol (http.c): offload_reserve() a slot (false -> 503), suspend the
 * connection, then offload_submit(). A pool thread runs the handler, whose
 * reply is parked on the request, and resumes the connection; MHD then calls
 * the access handler again, which queues the parked reply. Reserving before
 * suspending means a full queue is answered without ever suspending.
 *
 * Two lanes with a queue each: OFFLOAD_MAIN (logins, attachment checks) is
 * always served first; OFFLOAD_BULK (registrations) holds at most
 * bulk_threads threads at once, and never the last one when there are two or
 * more, so a registration flood cannot starve logins of threads or of queue.
 */
#ifndef NATTER_OFFLOAD_H
#define NATTER_OFFLOAD_H

#include <stdbool.h>

struct req;
struct offload;

enum offload_lane {
    OFFLOAD_MAIN = 0, /* served first */
    OFFLOAD_BULK = 1, /* its own queue and a bounded share of the threads */
};

/* threads run the jobs; queue_max and bulk_queue bound the lanes' queues;
 * bulk_threads (clamped to threads - 1, at least 1) bounds the bulk lane's
 * share. Owned; offload_stop() then offload_free() it. */
struct offload *offload_new(int threads, int queue_max, int bulk_threads, int bulk_queue, void (*run)(struct req *r));
/* A slot in lane's queue: false when it is full or the pool stops. */
bool offload_reserve(struct offload *o, enum offload_lane lane);
/* Queues r in the lane reserved for it; a pool thread runs it. */
void offload_submit(struct offload *o, enum offload_lane lane, struct req *r);
/* Stops taking work (offload_reserve() then fails), finishes every queued
 * job and joins the threads. The object stays valid for late callers. */
void offload_stop(struct offload *o);
/* Frees a stopped pool; call once no thread can reach it (after MHD stops). */
void offload_free(struct offload *o);
/* Requests queued in both lanes. */
int offload_depth(struct offload *o);

#endif
