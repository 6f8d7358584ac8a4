/*
 * resources.h — every handler of natter-api, one file per resource. The
 * route table is in api/routes.c; handlers reach the application's state
 * through r->app (app.h).
 */
#ifndef NATTER_RESOURCES_H
#define NATTER_RESOURCES_H

#include <stddef.h>

#include "router.h"

struct req;

/* health.c */
int health_live(struct req *r);
int health_ready(struct req *r);
int health_metrics(struct req *r);
int health_openapi(struct req *r);
/* users.c */
int users_me(struct req *r);
int users_update_me(struct req *r);
int users_get(struct req *r);
int users_find(struct req *r);
/* devices.c */
int devices_list(struct req *r);
int devices_revoke(struct req *r);
int devices_set_push(struct req *r);
int devices_clear_push(struct req *r);
int devices_push_ack(struct req *r);

/* chats.c */
int chats_create(struct req *r);
int chats_list(struct req *r);
int chats_get(struct req *r);
int chats_rename(struct req *r);
int chats_mute(struct req *r);
int chats_unmute(struct req *r);
/* members.c */
int members_list(struct req *r);
int members_add(struct req *r);
int members_remove(struct req *r);
int members_set_role(struct req *r);
/* reads.c */
int chats_read(struct req *r);
int chats_receipts(struct req *r);
/* messages.c */
int messages_send(struct req *r);
int messages_list(struct req *r);
int messages_get(struct req *r);
int messages_edit(struct req *r);
int messages_delete(struct req *r);
/* search.c */
int search_messages(struct req *r);
/* reactions.c */
int reactions_put(struct req *r);
int reactions_delete(struct req *r);
/* attachments.c */
int attachments_create(struct req *r);
int attachments_complete(struct req *r);
int attachments_get(struct req *r);
/* events.c */
int events_poll(struct req *r);
/* Poll answers so far whose events came from memory / from the database. */
void events_stats(unsigned long long *memory, unsigned long long *database);
/* presence.c */
int presence_heartbeat(struct req *r);
int presence_get(struct req *r);
/* typing.c */
int chats_typing(struct req *r);
/* limits.c */
int limits_get(struct req *r);
/* server.admit: the rate limits charged before a request takes a slot of the
 * offload or slow-query pool (registrations, searches); 0 or -1 after a 429 */
int limits_admit(struct req *r);

/* the route table (api/routes.c) */
extern const struct route routes[];
extern const size_t routes_count;

#endif
