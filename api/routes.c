/*
 * routes.c — the route table: method, path pattern, handler, flags, body bound.
 *
 * The dispatcher (http.c) does method matching, 404/405, content type, body
 * size, JSON parsing and authentication from these flags, so handlers never
 * repeat them. `natter-api --routes` prints this table; an API test checks it
 * against the operations in openapi/openapi.yaml.
 */
#include "auth.h"
#include "http.h"
#include "routes.h"

const struct route routes[] = {
    {"GET", "/healthz", health_live, 0, 0},
    {"GET", "/readyz", health_ready, 0, 0},
    {"GET", "/metrics", health_metrics, 0, 0},
    {"GET", "/openapi.yaml", health_openapi, 0, 0},

    {"POST", "/v1/auth/register", auth_register, R_JSON | R_SLOW, 0},
    {"POST", "/v1/auth/login", auth_login, R_JSON | R_SLOW, 0},
    {"POST", "/v1/auth/refresh", auth_refresh, R_JSON, 0},
    {"POST", "/v1/auth/logout", auth_logout, R_AUTH, 0},

    {"GET", "/v1/users/me", users_me, R_AUTH, 0},
    {"PATCH", "/v1/users/me", users_update_me, R_AUTH | R_JSON, 0},
    {"GET", "/v1/users/{id}", users_get, R_AUTH, 0},
    {"GET", "/v1/users", users_find, R_AUTH, 0},

    {"GET", "/v1/devices", devices_list, R_AUTH, 0},
    {"DELETE", "/v1/devices/{id}", devices_revoke, R_AUTH, 0},
};

const size_t routes_count = sizeof routes / sizeof routes[0];
