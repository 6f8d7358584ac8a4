/*
 * fuzz_router.c — the router over natter-api's real route table
 * (api/routes.c): input is "METHOD\npath". Properties: a route found has
 * that method and its pattern matches the path; its parameters point into
 * the path, are non-empty and hold no '/'; when none is found the Allow list
 * is terminated and within its buffer, and lists only methods whose route
 * matches the path.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "resources.h"
#include "router.h"

static void check_params(const char *path, const struct route_params *p)
{
    FUZZ_ASSERT(p->n >= 0 && p->n <= ROUTE_MAX_PARAMS);
    size_t plen = strlen(path);
    for (int i = 0; i < p->n; i++) {
        FUZZ_ASSERT(p->at[i] >= path && p->at[i] + p->len[i] <= path + plen);
        FUZZ_ASSERT(p->len[i] > 0);
        FUZZ_ASSERT(memchr(p->at[i], '/', p->len[i]) == NULL);
    }
}

static void check_allow(const char *path, const char *allow)
{
    char copy[128];
    snprintf(copy, sizeof copy, "%s", allow);
    for (char *save = NULL, *m = strtok_r(copy, ", ", &save); m; m = strtok_r(NULL, ", ", &save)) {
        bool any = false;
        for (size_t i = 0; i < routes_count && !any; i++)
            any = strcmp(routes[i].method, m) == 0 && route_match(routes[i].pattern, path, NULL);
        FUZZ_ASSERT(any);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *in = fuzz_cstr(data, size);
    char *nl = strchr(in, '\n');
    const char *method = "GET", *path = in;
    if (nl) {
        *nl = '\0';
        method = in;
        path = nl + 1;
    }
    struct route_params p = {0};
    char allow[128];
    memset(allow, 'x', sizeof allow);
    const struct route *rt = route_find(routes, routes_count, method, path, &p, allow, sizeof allow);
    if (rt) {
        FUZZ_ASSERT(strcmp(rt->method, method) == 0);
        struct route_params q = {0};
        FUZZ_ASSERT(route_match(rt->pattern, path, &q));
        check_params(path, &p);
        FUZZ_ASSERT(q.n == p.n);
    } else {
        FUZZ_ASSERT(memchr(allow, '\0', sizeof allow) != NULL);
        check_allow(path, allow);
    }
    free(in);
    return 0;
}
