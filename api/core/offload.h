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
 */
#ifndef NATTER_OFFLOAD_H
#define NATTER_OFFLOAD_H

#include <stdbool.h>

struct req;
struct offload;

struct offload *offload_new(int threads, int queue_max, void (*run)(struct req *r));
bool offload_reserve(struct offload *o);
void offload_submit(struct offload *o, struct req *r);
/* Stops taking work (offload_reserve() then fails), finishes every queued
 * job and joins the threads. The object stays valid for late callers. */
void offload_stop(struct offload *o);
/* Frees a stopped pool; call once no thread can reach it (after MHD stops). */
void offload_free(struct offload *o);
int offload_depth(struct offload *o);

#endif
