/*
 * cors.c — see cors.h.
 */
#include "cors.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "util.h"

struct cors {
    bool any;
    char **origins; /* NULL-terminated, owned */
};

struct cors *cors_new(const char *s)
{
    struct cors *c = xcalloc(1, sizeof *c);
    const char *p, *it;
    size_t n = 0, l, k = 0;
    if (strcmp(s, "*") == 0) {
        c->any = true;
        return c;
    }
    for (p = s; csv_next(&p, &it, &l);)
        n++;
    c->origins = xcalloc(n + 1, sizeof *c->origins);
    for (p = s; csv_next(&p, &it, &l);)
        if (l)
            c->origins[k++] = xstrndup(it, l);
    return c;
}

void cors_free(struct cors *c)
{
    if (!c)
        return;
    for (char **o = c->origins; o && *o; o++)
        free(*o);
    free(c->origins);
    free(c);
}

const char *cors_allowed(const struct cors *c, const char *origin)
{
    if (!c || !origin || !*origin)
        return NULL;
    if (c->any)
        return origin;
    for (char **o = c->origins; o && *o; o++)
        if (strcmp(*o, origin) == 0)
            return origin;
    return NULL;
}

int cors_preflight(struct req *r)
{
    if (!r->cors_origin)
        return reply_problem(r, 403, "cors_origin_denied", "origin is not allowed");
    req_add_header(r, "Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
    req_add_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id");
    req_add_header(r, "Access-Control-Max-Age", "600");
    return reply_empty(r, 204);
}
