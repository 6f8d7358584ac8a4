/*
 * routes.h — every handler of natter-api, one family per resource module.
 * The table itself is in routes.c.
 */
#ifndef NATTER_ROUTES_H
#define NATTER_ROUTES_H

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

#endif
