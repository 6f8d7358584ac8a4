/*
 * events.c — long-poll receive: GET /v1/events?since=N&timeout=S&limit=L
 *
 * A poll with `since` first acks N for the calling device: the ack is noted
 * in memory and flushed with every other device's in one transaction a few
 * ms later (acks.h), which moves delivered markers and sends `receipt`
 * (delivered) events to the senders, one per (chat, sender). Then it
 * answers at once with the events after N, or suspends in the hub (hub.c)
 * until an event is committed for the user, an ephemeral event arrives, the
 * timeout passes, the device polls again or is revoked.
 *
 * Events on the wire: {seq, type, chat_id, created_at, data}. Stored events
 * have a seq (the user's gap-free inbox seq); ephemeral ones (typing,
 * presence) have seq null and are never replayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acks.h"
#include "app.h"
#include "bus.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "hub.h"
#include "jsonv.h"
#include "presence.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

#define POLL_DEFAULT_TIMEOUT 30
#define POLL_DEFAULT_LIMIT 100
#define POLL_MAX_LIMIT 500
#define ONLINE_GRACE_MS 10000 /* a device that just got its answer counts as connected */

/* ======================================================================
 * Long-poll
 * ====================================================================== */

static const char sql_head[] =
    "SELECT inbox_seq, (SELECT min(seq) FROM inbox WHERE user_id = $1) FROM users WHERE id = $1";
static const char sql_events[] =
    "SELECT seq, type, chat_id, payload::text, " DB_TS("created_at") " FROM inbox"
    " WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

struct poll {
    struct waiter w;
};

/* Appends the stored events after since (up to limit) to arr; sets *next. */
static int fetch(struct req *r, int64_t since, int limit, json_t *arr, int64_t *next)
{
    char u[24], s[24], l[24];
    const char *vals[3] = {i64s(u, r->user_id), i64s(s, since), i64s(l, limit)};
    PGresult *res = req_sql(r, NULL, sql_events, 3, vals);
    if (!res)
        return -1;
    *next = since;
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *data = json_loads(PQgetvalue(res, i, 3), 0, NULL);
        json_array_append_new(arr, json_pack("{s:I,s:s,s:o,s:s,s:o}", "seq", (json_int_t)db_i64(res, i, 0), "type",
                                             PQgetvalue(res, i, 1), "chat_id",
                                             PQgetisnull(res, i, 2) ? json_null() : json_integer(db_i64(res, i, 2)),
                                             "created_at", PQgetvalue(res, i, 4), "data", data ? data : json_object()));
        *next = db_i64(res, i, 0);
    }
    return 0;
}

static int reply_events(struct req *r, json_t *arr, int64_t next)
{
    return reply_json(r, 200, json_pack("{s:o,s:I}", "events", arr, "next", (json_int_t)next));
}

static void free_poll(void *p)
{
    struct poll *pl = p;
    json_decref(pl->w.ephemeral);
    free(pl);
}

static int events_resume(struct req *r)
{
    struct poll *pl = r->ctx;
    struct waiter *w = &pl->w;
    if (w->state != W_REVOKED)
        presence_mark_polling(r->user_id, r->device_id,
                              wall_time_ms() + ONLINE_GRACE_MS); /* re-polls within the grace */
    json_t *arr = json_array();
    int64_t next = w->since;
    switch (w->state) {
    case W_REVOKED:
        json_decref(arr);
        return reply_problem(r, 401, "device_revoked", "this device was signed out; log in again");
    case W_WOKEN:
        if (fetch(r, w->since, w->limit, arr, &next) < 0) {
            json_decref(arr);
            return -1;
        }
        break;
    default: /* timeout, replaced by a newer poll, client gone, shutdown: empty */
        break;
    }
    if (w->ephemeral)
        json_array_extend(arr, w->ephemeral);
    return reply_events(r, arr, next);
}

int events_poll(struct req *r)
{
    int64_t since = 0, timeout = POLL_DEFAULT_TIMEOUT, limit = POLL_DEFAULT_LIMIT;
    bool has_since, has;
    if (req_query_int(r, "since", 0, INT64_MAX, &since, &has_since) < 0 ||
        req_query_int(r, "timeout", 0, r->app->cfg->poll_timeout_max, &timeout, &has) < 0 ||
        req_query_int(r, "limit", 1, POLL_MAX_LIMIT, &limit, &has) < 0)
        return -1;
    presence_touch(r->db, r->user_id);
    char u[24];
    const char *vals[1] = {i64s(u, r->user_id)};
    PGresult *h = req_sql(r, NULL, sql_head, 1, vals);
    if (!h)
        return -1;
    if (PQntuples(h) != 1)
        return reply_problem(r, 401, "invalid_token", "the access token is not valid");
    int64_t head = db_i64(h, 0, 0);
    int64_t first = PQgetisnull(h, 0, 1) ? head + 1 : db_i64(h, 0, 1);
    if (!has_since)
        return reply_events(r, json_array(), head);
    if (since > head)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "since"),
                                 "since is beyond the newest event (%lld)", (long long)head);
    if (since + 1 < first)
        return reply_problem_ext(r, 410, "cursor_expired", json_pack("{s:I}", "oldest_seq", (json_int_t)first),
                                 "events after %lld are no longer kept; reload state and poll without since",
                                 (long long)since);
    acks_record(r->user_id, r->device_id, since); /* flushed in batches: acks.h */

    struct poll *pl = xcalloc(1, sizeof *pl);
    req_defer(r, free_poll, pl);
    pl->w.user_id = r->user_id;
    pl->w.device_id = r->device_id;
    pl->w.since = since;
    pl->w.limit = (int)limit;
    r->ctx = pl;
    r->resume_fn = events_resume;
    for (int attempt = 0; attempt < 5; attempt++) {
        uint64_t gen = hub_gen(r->user_id); /* before the query: see hub.h */
        json_t *arr = json_array();
        int64_t next;
        if (fetch(r, since, (int)limit, arr, &next) < 0) {
            json_decref(arr);
            return -1;
        }
        if (json_array_size(arr) > 0 || timeout == 0) {
            if (timeout == 0) { /* still "the same device polls again": end its older poll */
                hub_replace(r->user_id, r->device_id);
                bus_polling(r->user_id, r->device_id);
            }
            return reply_events(r, arr, next);
        }
        json_decref(arr);
        enum hub_block rc = hub_block(r, &pl->w, gen, (int)timeout);
        if (rc == HUB_SUSPENDED) {
            /* suspended: events_resume answers. Other instances end this
             * device's older poll, and the worker sees the device online. */
            bus_polling(r->user_id, r->device_id);
            presence_mark_polling(r->user_id, r->device_id, wall_time_ms() + timeout * 1000 + ONLINE_GRACE_MS);
            return 0;
        }
        if (rc == HUB_MISSED) { /* ephemeral events it missed between polls: answer with them now */
            json_t *eph = json_array();
            json_array_extend(eph, pl->w.ephemeral);
            return reply_events(r, eph, since);
        }
        if (rc == HUB_STOPPING)
            break;
    }
    return reply_events(r, json_array(), since);
}
