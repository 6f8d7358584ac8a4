/* test_router.c — route patterns, table order, 405 Allow lists. */
#include <string.h>

#include "router.h"
#include "unit.h"

static int h_any(struct req *r)
{
    (void)r;
    return 0;
}

static const struct route table[] = {
    {"GET", "/v1/users/me", h_any, 0, 0},
    {"GET", "/v1/users/{id}", h_any, 0, 0},
    {"PATCH", "/v1/users/me", h_any, 0, 0},
    {"GET", "/v1/chats/{id}/messages/{seq}", h_any, 0, 0},
    {"PATCH", "/v1/chats/{id}/messages/{seq}", h_any, 0, 0},
    {"DELETE", "/v1/chats/{id}/messages/{seq}", h_any, 0, 0},
    {"PUT", "/v1/chats/{id}/messages/{seq}/reactions/{emoji}", h_any, 0, 0},
    {"POST", "/v1/a/{p1}/{p2}/{p3}/{p4}/{p5}", h_any, 0, 0}, /* too many params: never matches */
};
#define NT (sizeof table / sizeof table[0])

static bool param_is(const struct route_params *p, int i, const char *want)
{
    return i < p->n && p->len[i] == strlen(want) && memcmp(p->at[i], want, p->len[i]) == 0;
}

void suite_router(void)
{
    struct route_params p;
    char allow[64];

    /* literals */
    CHECK(route_match("/healthz", "/healthz", &p) && p.n == 0);
    CHECK(!route_match("/healthz", "/healthz/", &p));
    CHECK(!route_match("/healthz", "/health", &p));
    CHECK(!route_match("/healthz", "", &p));
    CHECK(route_match("/healthz", "/healthz", NULL));

    /* {x} takes exactly one non-empty segment */
    CHECK(route_match("/v1/users/{id}", "/v1/users/42", &p) && param_is(&p, 0, "42"));
    CHECK(!route_match("/v1/users/{id}", "/v1/users/", &p));
    CHECK(!route_match("/v1/users/{id}", "/v1/users/42/x", &p));
    CHECK(!route_match("/v1/users/{id}", "/v1/users//", &p));
    CHECK(route_match("/v1/chats/{id}/messages/{seq}", "/v1/chats/7/messages/99", &p) && p.n == 2 &&
          param_is(&p, 0, "7") && param_is(&p, 1, "99"));
    CHECK(!route_match("/v1/chats/{id}/messages/{seq}", "/v1/chats//messages/99", &p));
    /* a segment may hold anything but '/' (emoji arrive decoded) */
    CHECK(route_match("/r/{emoji}", "/r/\xf0\x9f\x91\x8d", &p) && param_is(&p, 0, "\xf0\x9f\x91\x8d"));
    /* no match leaves p alone */
    p.n = 3;
    CHECK(!route_match("/v1/users/{id}", "/v1/chats/1", &p) && p.n == 3);

    /* table walk: first match in table order wins (literal before {id}) */
    const struct route *rt = route_find(table, NT, "GET", "/v1/users/me", &p, allow, sizeof allow);
    CHECK(rt == &table[0] && p.n == 0);
    rt = route_find(table, NT, "GET", "/v1/users/5", &p, allow, sizeof allow);
    CHECK(rt == &table[1] && param_is(&p, 0, "5"));
    rt = route_find(table, NT, "PATCH", "/v1/users/me", &p, allow, sizeof allow);
    CHECK(rt == &table[2]);
    rt = route_find(table, NT, "DELETE", "/v1/chats/1/messages/2", &p, allow, sizeof allow);
    CHECK(rt == &table[5] && param_is(&p, 0, "1") && param_is(&p, 1, "2"));
    rt = route_find(table, NT, "PUT", "/v1/chats/1/messages/2/reactions/x", &p, allow, sizeof allow);
    CHECK(rt == &table[6] && p.n == 3 && param_is(&p, 2, "x"));

    /* wrong method: NULL and the Allow list, each method once, in table order */
    rt = route_find(table, NT, "POST", "/v1/chats/1/messages/2", &p, allow, sizeof allow);
    CHECK(rt == NULL && strcmp(allow, "GET, PATCH, DELETE") == 0);
    rt = route_find(table, NT, "DELETE", "/v1/users/me", &p, allow, sizeof allow);
    CHECK(rt == NULL && strcmp(allow, "GET, PATCH") == 0); /* GET from both /me and /{id}: once */
    /* unknown path: empty Allow (404) */
    rt = route_find(table, NT, "GET", "/v1/nothing", &p, allow, sizeof allow);
    CHECK(rt == NULL && allow[0] == '\0');
    /* a short Allow buffer truncates, never overflows */
    char tiny[6];
    rt = route_find(table, NT, "POST", "/v1/chats/1/messages/2", &p, tiny, sizeof tiny);
    CHECK(rt == NULL && strlen(tiny) < sizeof tiny);
    /* more {x} than ROUTE_MAX_PARAMS never matches */
    rt = route_find(table, NT, "POST", "/v1/a/1/2/3/4/5", &p, allow, sizeof allow);
    CHECK(rt == NULL && allow[0] == '\0');
}
