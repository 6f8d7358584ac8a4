/*
 * router.c — route patterns and the table walk (see router.h).
 */
#include "router.h"

#include <stdio.h>
#include <string.h>

bool route_match(const char *pattern, const char *path, struct route_params *out)
{
    struct route_params p = {.n = 0};
    const char *pat = pattern, *u = path;
    while (*pat && *u) {
        if (*pat == '{') {
            const char *pe = strchr(pat, '}');
            const char *ue = strchr(u, '/');
            size_t ul = ue ? (size_t)(ue - u) : strlen(u);
            if (!pe || ul == 0 || p.n == ROUTE_MAX_PARAMS)
                return false;
            p.at[p.n] = u;
            p.len[p.n++] = ul;
            pat = pe + 1;
            u += ul;
            continue;
        }
        if (*pat != *u)
            return false;
        pat++;
        u++;
    }
    if (*pat || *u)
        return false;
    if (out)
        *out = p;
    return true;
}

const struct route *route_find(const struct route *routes, size_t n, const char *method, const char *path,
                               struct route_params *p, char *allow, size_t allow_len)
{
    if (allow_len)
        allow[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!route_match(routes[i].pattern, path, p))
            continue;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
        if (allow_len && !strstr(allow, routes[i].method)) {
            size_t l = strlen(allow);
            snprintf(allow + l, allow_len - l, "%s%s", l ? ", " : "", routes[i].method);
        }
    }
    return NULL;
}
