/*
 * limits.c — per-user write rates and GET /v1/limits.
 *
 * Each limit is a token bucket (common/ratelimit.h) in this process's memory,
 * keyed by user id (by client address for registrations): a check is a hash
 * and a lock, no SQL and no Redis round trip, so it costs nothing next to a
 * send. The price is that limits are per natter-api instance.
 *
 * GET /v1/limits reports every limit in force from the same sources the
 * handlers enforce: the configuration and apilimits.h.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "apilimits.h"
#include "app.h"
#include "auth.h"
#include "config.h"
#include "http.h"
#include "membership.h"
#include "msgsearch.h"
#include "ratelimit.h"
#include "resources.h"
#include "util.h"

/* One row per limit_kind, in its order. */
static const struct limit_def {
    const char *name;  /* key in GET /v1/limits "rates" */
    const char *scope; /* what one bucket belongs to */
    const char *what;  /* for the 429's detail */
    size_t burst;      /* offsets into struct config */
    size_t per_min;
} defs[LIMIT_COUNT] = {
    [LIMIT_SEND] = {"send", "user", "messages", offsetof(struct config, rate_send_burst),
                    offsetof(struct config, rate_send_per_min)},
    [LIMIT_EDIT] = {"edit", "user", "edits or deletes", offsetof(struct config, rate_edit_burst),
                    offsetof(struct config, rate_edit_per_min)},
    [LIMIT_REACTION] = {"reaction", "user", "reactions", offsetof(struct config, rate_reaction_burst),
                        offsetof(struct config, rate_reaction_per_min)},
    [LIMIT_TYPING] = {"typing", "user", "typing updates", offsetof(struct config, rate_typing_burst),
                      offsetof(struct config, rate_typing_per_min)},
    [LIMIT_CHAT] = {"chat", "user", "chats created or renamed", offsetof(struct config, rate_chat_burst),
                    offsetof(struct config, rate_chat_per_min)},
    [LIMIT_MEMBER] = {"member", "user", "member changes", offsetof(struct config, rate_member_burst),
                      offsetof(struct config, rate_member_per_min)},
    [LIMIT_ATTACHMENT] = {"attachment", "user", "attachment requests", offsetof(struct config, rate_attachment_burst),
                          offsetof(struct config, rate_attachment_per_min)},
    [LIMIT_PUSH_ACK] = {"push_ack", "user", "push acks", offsetof(struct config, rate_push_ack_burst),
                        offsetof(struct config, rate_push_ack_per_min)},
    [LIMIT_SEARCH] = {"search", "user", "searches", offsetof(struct config, rate_search_burst),
                      offsetof(struct config, rate_search_per_min)},
    [LIMIT_REGISTER_IP] = {"register", "address", "registrations from this address",
                           offsetof(struct config, rate_register_ip_burst),
                           offsetof(struct config, rate_register_ip_per_min)},
    [LIMIT_REGISTER_ALL] = {"register_all", "instance", "registrations",
                            offsetof(struct config, rate_register_all_burst),
                            offsetof(struct config, rate_register_all_per_min)},
};

static struct rl_rate rate_of(const struct config *cfg, enum limit_kind k)
{
    const char *base = (const char *)cfg;
    struct rl_rate rt;
    memcpy(&rt.burst, base + defs[k].burst, sizeof rt.burst);
    memcpy(&rt.per_min, base + defs[k].per_min, sizeof rt.per_min);
    return rt;
}

static uint64_t key_of(struct req *r, enum limit_kind k)
{
    struct ratelimit *rl = r->app->limits;
    if (k == LIMIT_REGISTER_IP)
        return rl_key_str(rl, (int)k, r->client_ip);
    return rl_key(rl, (int)k, k == LIMIT_REGISTER_ALL ? 0 : r->user_id);
}

int limit_try(struct req *r, enum limit_kind k)
{
    struct rl_rate rt = rate_of(r->app->cfg, k);
    return rl_take(r->app->limits, key_of(r, k), &rt, rl_now());
}

int limit_take(struct req *r, enum limit_kind k)
{
    int wait = limit_try(r, k);
    return wait ? limit_refuse(r, k, wait) : 0;
}

int limit_refuse(struct req *r, enum limit_kind k, int wait)
{
    struct rl_rate rt = rate_of(r->app->cfg, k);
    char ra[16];
    snprintf(ra, sizeof ra, "%d", wait);
    req_add_header(r, "Retry-After", ra);
    return reply_problem_ext(r, 429, "rate_limited", json_pack("{s:s}", "limit", defs[k].name),
                             "too many %s (at most %d at once, %d a minute); retry in %d seconds", defs[k].what,
                             rt.burst, rt.per_min, wait);
}

void limit_refund(struct req *r, enum limit_kind k)
{
    struct rl_rate rt = rate_of(r->app->cfg, k);
    rl_refund(r->app->limits, key_of(r, k), &rt, rl_now());
}

int limits_admit(struct req *r)
{
    if (r->route->handler == search_messages)
        return limit_take(r, LIMIT_SEARCH);
    return auth_admit(r);
}

/* ======================================================================
 * GET /v1/limits
 * ====================================================================== */

static json_t *content_types(const char *csv)
{
    json_t *arr = json_array();
    const char *p = csv, *item;
    size_t len;
    while (csv_next(&p, &item, &len))
        if (len > 0)
            json_array_append_new(arr, json_stringn(item, len));
    return arr;
}

int limits_get(struct req *r)
{
    const struct config *cfg = r->app->cfg;
    json_t *rates = json_object();
    for (int k = 0; k < LIMIT_COUNT; k++) {
        struct rl_rate rt = rate_of(cfg, (enum limit_kind)k);
        if (rt.burst <= 0)
            continue; /* no limit in force */
        json_object_set_new(rates, defs[k].name,
                            json_pack("{s:i,s:i,s:s}", "burst", rt.burst, "per_minute", rt.per_min, "scope",
                                      defs[k].scope));
    }
    json_t *body = json_pack(
        "{s:{s:i,s:i,s:i},s:{s:i},s:{s:{s:i,s:i,s:i},s:{s:i,s:i},s:{s:i,s:i,s:i,s:i},s:i},"
        "s:{s:I,s:o,s:i,s:i,s:i,s:I,s:i},s:{s:i},s:{s:i},"
        "s:{s:i,s:i,s:i,s:s},s:o}",
        "message", "max_chars", MESSAGE_MAX_CHARS, "max_mentions", MAX_MENTIONS, "max_attachments", MAX_ATTACHMENTS,
        "group", "max_members", GROUP_MAX_MEMBERS, "pages", "messages", "default", PAGE_DEFAULT, "max", PAGE_MAX,
        "max_bytes", PAGE_BYTES, "chats", "default", LIST_DEFAULT, "max", LIST_MAX, "events", "default",
        POLL_DEFAULT_LIMIT, "max", POLL_MAX_LIMIT, "default_timeout", POLL_DEFAULT_TIMEOUT, "max_timeout",
        cfg->poll_timeout_max, "presence_user_ids", PRESENCE_MAX_IDS, "attachments", "max_bytes",
        (json_int_t)cfg->attachment_max_bytes, "content_types", content_types(cfg->attachment_types), "upload_url_ttl",
        cfg->upload_url_ttl, "download_url_ttl", cfg->download_url_ttl, "max_pending", cfg->pending_max,
        "max_pending_bytes", (json_int_t)cfg->pending_max_bytes, "pending_ttl", cfg->pending_ttl, "reaction",
        "max_emoji_chars", EMOJI_MAX_CHARS, "typing", "coalesce_ms", cfg->typing_coalesce_ms, "login", "window_seconds",
        cfg->login_window, "max_failures_per_username_address", cfg->login_max_per_user, "max_failures_per_address",
        cfg->login_max_per_ip, "scope", "all instances", "rates", rates);
    json_object_set_new(json_object_get(body, "pages"), "search",
                        json_pack("{s:i,s:i}", "default", SEARCH_PAGE_DEFAULT, "max", SEARCH_PAGE_MAX));
    json_object_set_new(body, "search",
                        json_pack("{s:i,s:i,s:i}", "max_query_chars", SEARCH_QUERY_MAX_CHARS, "timeout_ms",
                                  cfg->search_timeout_ms, "max_concurrent", cfg->search_max_concurrent));
    return reply_json(r, 200, body);
}
