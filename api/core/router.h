/*
 * router.h — the route table's shape and pattern matching (pure: no request,
 * no I/O, so the unit tests drive it directly).
 *
 * A pattern is a literal path in which "{name}" matches one non-empty segment:
 * "/v1/chats/{id}/messages/{seq}". The first route, in table order, whose
 * pattern and method both match wins; when only the method differs, the
 * methods that would match are collected for the 405's Allow header.
 */
#ifndef NATTER_ROUTER_H
#define NATTER_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

struct req;

typedef int (*handler_fn)(struct req *r);

/* route flags */
#define R_AUTH 0x1u     /* credentials of a live device required (server.authenticate) */
#define R_JSON 0x2u     /* application/json object body required */
#define R_OFFLOAD 0x4u  /* runs on the offload pool, off the HTTP threads (password hashing) */
#define R_JSON_OPT 0x8u /* JSON body allowed but optional */
#define R_BULK 0x10u    /* with R_OFFLOAD: the pool's bulk lane (bounded share, served after the rest) */
#define R_SLOW 0x20u    /* runs on the slow-query pool, off the HTTP threads (a search may take seconds) */

struct route {
    const char *method;
    const char *pattern; /* "/v1/users/{id}": {x} matches one non-empty segment */
    handler_fn handler;
    unsigned flags;  /* R_* */
    size_t max_body; /* bytes; 0 = HTTP_DEFAULT_MAX_BODY */
};

#define ROUTE_MAX_PARAMS 4

/* The {x} segments of a match: pointers into the matched path, not terminated. */
struct route_params {
    const char *at[ROUTE_MAX_PARAMS];
    size_t len[ROUTE_MAX_PARAMS];
    int n;
};

/* Does path match pattern? On success fills p (when not NULL). A pattern with
 * more than ROUTE_MAX_PARAMS segments never matches. */
bool route_match(const char *pattern, const char *path, struct route_params *p);

/* The first of the n routes matching method and path, with its params in p;
 * NULL when none does, and then allow holds the methods the path does match
 * ("GET, POST"; empty for an unknown path), truncated to allow_len. */
const struct route *route_find(const struct route *routes, size_t n, const char *method, const char *path,
                               struct route_params *p, char *allow, size_t allow_len);

#endif
