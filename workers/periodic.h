/*
 * periodic.h — cleanup tasks and the outbox reconciler (see periodic.c).
 */
#ifndef NATTER_PERIODIC_H
#define NATTER_PERIODIC_H

#include "config.h"
#include "redis.h"

struct periodic;

struct periodic *periodic_new(const struct config *cfg, struct redis_pool *redis);
void periodic_free(struct periodic *p);
/* Runs every task that is due and whose lock this process gets. */
void periodic_tick(struct periodic *p);

#endif
