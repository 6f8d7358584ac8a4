/*
 * routes.c — the route table: method, path pattern, handler, flags, body bound.
 *
 * The dispatcher (core/http.c) does method matching, 404/405, content type, body
 * size, JSON parsing and authentication from these flags, so handlers never
 * repeat them. `natter-api --routes` prints this table; an API test checks it
 * against the operations in openapi/openapi.yaml.
 */
#include "auth.h"
#include "http.h"
#include "resources.h"

/* 100,000 characters of text can take 1.2 MB as JSON \uXXXX escapes */
#define MESSAGE_MAX_BODY (2 * 1024 * 1024)

const struct route routes[] = {
    {"GET", "/healthz", health_live, 0, 0},
    {"GET", "/readyz", health_ready, 0, 0},
    {"GET", "/metrics", health_metrics, 0, 0},
    {"GET", "/openapi.yaml", health_openapi, 0, 0},
    {"GET", "/v1/limits", limits_get, 0, 0},

    {"POST", "/v1/auth/register", auth_register, R_JSON | R_OFFLOAD | R_BULK, 0},
    {"POST", "/v1/auth/login", auth_login, R_JSON | R_OFFLOAD, 0},
    {"POST", "/v1/auth/refresh", auth_refresh, R_JSON, 0},
    {"POST", "/v1/auth/logout", auth_logout, R_AUTH, 0},

    {"GET", "/v1/users/me", users_me, R_AUTH, 0},
    {"PATCH", "/v1/users/me", users_update_me, R_AUTH | R_JSON, 0},
    {"GET", "/v1/users/{id}", users_get, R_AUTH, 0},
    {"GET", "/v1/users", users_find, R_AUTH, 0},

    {"GET", "/v1/devices", devices_list, R_AUTH, 0},
    {"DELETE", "/v1/devices/{id}", devices_revoke, R_AUTH, 0},
    {"PUT", "/v1/devices/{id}/push", devices_set_push, R_AUTH | R_JSON, 0},
    {"DELETE", "/v1/devices/{id}/push", devices_clear_push, R_AUTH, 0},
    {"POST", "/v1/devices/{id}/push-ack", devices_push_ack, R_AUTH | R_JSON, 0},

    {"GET", "/v1/chats", chats_list, R_AUTH, 0},
    {"POST", "/v1/chats", chats_create, R_AUTH | R_JSON, 0},
    {"GET", "/v1/chats/{id}", chats_get, R_AUTH, 0},
    {"PATCH", "/v1/chats/{id}", chats_rename, R_AUTH | R_JSON, 0},
    {"GET", "/v1/chats/{id}/members", members_list, R_AUTH, 0},
    {"POST", "/v1/chats/{id}/members", members_add, R_AUTH | R_JSON, 0},
    {"DELETE", "/v1/chats/{id}/members/{user_id}", members_remove, R_AUTH, 0},
    {"PATCH", "/v1/chats/{id}/members/{user_id}", members_set_role, R_AUTH | R_JSON, 0},
    {"GET", "/v1/chats/{id}/messages", messages_list, R_AUTH, 0},
    {"POST", "/v1/chats/{id}/messages", messages_send, R_AUTH | R_JSON, MESSAGE_MAX_BODY},
    {"GET", "/v1/chats/{id}/messages/{seq}", messages_get, R_AUTH, 0},
    {"PATCH", "/v1/chats/{id}/messages/{seq}", messages_edit, R_AUTH | R_JSON, MESSAGE_MAX_BODY},
    {"DELETE", "/v1/chats/{id}/messages/{seq}", messages_delete, R_AUTH, 0},
    {"PUT", "/v1/chats/{id}/messages/{seq}/reactions/{emoji}", reactions_put, R_AUTH, 0},
    {"DELETE", "/v1/chats/{id}/messages/{seq}/reactions/{emoji}", reactions_delete, R_AUTH, 0},
    {"POST", "/v1/chats/{id}/read", chats_read, R_AUTH | R_JSON, 0},
    {"GET", "/v1/chats/{id}/receipts", chats_receipts, R_AUTH, 0},
    {"POST", "/v1/chats/{id}/typing", chats_typing, R_AUTH | R_JSON, 0},
    {"PUT", "/v1/chats/{id}/mute", chats_mute, R_AUTH, 0},
    {"DELETE", "/v1/chats/{id}/mute", chats_unmute, R_AUTH, 0},

    {"POST", "/v1/chats/{id}/attachments", attachments_create, R_AUTH | R_JSON, 0},
    {"POST", "/v1/attachments/{id}/complete", attachments_complete, R_AUTH | R_OFFLOAD, 0},
    {"GET", "/v1/attachments/{id}", attachments_get, R_AUTH, 0},

    {"GET", "/v1/search", search_messages, R_AUTH | R_SLOW, 0},

    {"GET", "/v1/events", events_poll, R_AUTH, 0},
    {"POST", "/v1/presence/heartbeat", presence_heartbeat, R_AUTH, 0},
    {"GET", "/v1/presence", presence_get, R_AUTH, 0},
};

const size_t routes_count = sizeof routes / sizeof routes[0];
