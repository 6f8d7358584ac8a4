/*
 * cors.h — the allowed browser origins (NATTER_CORS_ORIGINS) and preflights.
 */
#ifndef NATTER_CORS_H
#define NATTER_CORS_H

struct cors;
struct req;

/* From a comma-separated list of origins, or "*" for any. Owned. */
struct cors *cors_new(const char *origins);
void cors_free(struct cors *c);
/* origin when it may read our replies (echoed in Access-Control-Allow-Origin), else NULL. */
const char *cors_allowed(const struct cors *c, const char *origin);
/* Answers an OPTIONS preflight: 204 with the allowed methods and headers, or
 * 403 cors_origin_denied. Returns 0 or -1 like every reply. */
int cors_preflight(struct req *r);

#endif
