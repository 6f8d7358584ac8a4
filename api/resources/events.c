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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acks.h"
#include "apilimits.h"
#include "app.h"
#include "bus.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "hub.h"
#include "jsonv.h"
#include "presence.h"
#include "resources.h"
#include "strbuf.h"
#include "tx.h"
#include "util.h"
#include "wake.h"

#define ONLINE_GRACE_MS 10000 /* a device that just got its answer counts as connected */

/* ======================================================================
 * Long-poll
 *
 * The fast path (hub_poll, hub_take) answers from what this instance knows
 * of the user's inbox — the events the wake-ups carried and the head — with
 * no SQL at all: a woken poll whose cursor the events continue, and a
 * renewal that finds nothing new. Anything it cannot prove goes to the
 * database (the slow path below), which stays the truth.
 * ====================================================================== */

static const char sql_head[] =
    "SELECT inbox_seq, (SELECT min(seq) FROM inbox WHERE user_id = $1) FROM users WHERE id = $1";
static const char sql_events[] =
    "SELECT seq, type, chat_id, payload::text, " DB_TS("created_at") " FROM inbox"
    " WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

struct poll {
    struct waiter w;
};

static atomic_ullong from_memory, from_database; /* poll answers by where their events came from */

void events_stats(unsigned long long *memory, unsigned long long *database)
{
    *memory = atomic_load(&from_memory);
    *database = atomic_load(&from_database);
}

/* An answer, {"events": […], "next": N}, built as text: stored events are
 * `{"seq":N,` followed by their body (wake.h), whether the body came with a
 * wake-up or from an inbox row. */
struct answer {
    struct strbuf sb;
    size_t n;
};

static void answer_begin(struct answer *a)
{
    a->sb = (struct strbuf){0};
    a->n = 0;
    strbuf_add(&a->sb, "{\"events\":[");
}

static void answer_event(struct answer *a, int64_t seq, const struct evbody *ev)
{
    strbuf_printf(&a->sb, "%s{\"seq\":%lld,", a->n++ ? "," : "", (long long)seq);
    strbuf_addn(&a->sb, ev->text, ev->len);
}

static void answer_row(struct answer *a, PGresult *res, int i)
{
    strbuf_printf(&a->sb,
                  "%s{\"seq\":%lld,\"type\":\"%s\",\"chat_id\":%s,\"created_at\":\"%s\",\"data\":", a->n++ ? "," : "",
                  (long long)db_i64(res, i, 0), PQgetvalue(res, i, 1),
                  PQgetisnull(res, i, 2) ? "null" : PQgetvalue(res, i, 2), PQgetvalue(res, i, 4));
    strbuf_addn(&a->sb, PQgetvalue(res, i, 3), (size_t)PQgetlength(res, i, 3));
    strbuf_add(&a->sb, "}");
}

/* Ephemeral events (typing, presence) follow the stored ones. */
static void answer_ephemeral(struct answer *a, json_t *arr)
{
    size_t i;
    json_t *ev;
    json_array_foreach(arr, i, ev) {
        char *text = json_dumps(ev, JSON_COMPACT);
        if (!text)
            continue;
        strbuf_add(&a->sb, a->n++ ? "," : "");
        strbuf_add(&a->sb, text);
        free(text);
    }
}

static int answer_send(struct req *r, struct answer *a, int64_t next, bool database)
{
    atomic_fetch_add_explicit(database ? &from_database : &from_memory, 1, memory_order_relaxed);
    strbuf_printf(&a->sb, "],\"next\":%lld}", (long long)next);
    size_t len;
    char *text = strbuf_take(&a->sb, &len);
    return reply_owned(r, 200, "application/json", text, len);
}

/* Answers the events hub_poll/hub_take found (and releases them). */
static int answer_known(struct req *r, struct hub_events *he, json_t *ephemeral)
{
    struct answer a;
    answer_begin(&a);
    for (int i = 0; i < he->n; i++)
        answer_event(&a, he->seq[i], he->ev[i]);
    int64_t next = he->seq[he->n - 1];
    hub_events_release(he);
    if (ephemeral)
        answer_ephemeral(&a, ephemeral);
    return answer_send(r, &a, next, false);
}

/* Only ephemeral events (or none): next stays since. database: whether the
 * database was asked to learn that. */
static int answer_empty(struct req *r, json_t *ephemeral, int64_t since, bool database)
{
    struct answer a;
    answer_begin(&a);
    if (ephemeral)
        answer_ephemeral(&a, ephemeral);
    return answer_send(r, &a, since, database);
}

/* The stored events after since (up to limit) from the database, into a; sets
 * *next. */
static int fetch(struct req *r, int64_t since, int limit, struct answer *a, int64_t *next)
{
    char u[24], s[24], l[24];
    const char *vals[3] = {i64s(u, r->user_id), i64s(s, since), i64s(l, limit)};
    PGresult *res = req_sql(r, NULL, sql_events, 3, vals);
    if (!res)
        return -1;
    *next = since;
    for (int i = 0; i < PQntuples(res); i++) {
        answer_row(a, res, i);
        *next = db_i64(res, i, 0);
    }
    return 0;
}

static void free_poll(void *p)
{
    struct poll *pl = p;
    hub_waiter_clear(&pl->w);
    free(pl);
}

/* The waiter's ephemeral events less those the device already had through
 * another instance (each carries a system-wide id: bus.h); borrowed, NULL
 * when none. */
static json_t *claimed(struct req *r, struct waiter *w)
{
    bus_claim_ephemeral(r->device_id, w->ephemeral, w->eph_ids);
    return w->ephemeral;
}

static int events_resume(struct req *r)
{
    struct poll *pl = r->ctx;
    struct waiter *w = &pl->w;
    if (w->state != W_REVOKED)
        presence_mark_polling(r->user_id, r->device_id,
                              wall_time_ms() + ONLINE_GRACE_MS); /* re-polls within the grace */
    if (w->state == W_REVOKED)
        return reply_problem(r, 401, "device_revoked", "this device was signed out; log in again");
    if (w->state != W_WOKEN) /* timeout, replaced by a newer poll, client gone, shutdown: empty */
        return answer_empty(r, claimed(r, w), w->since, false);
    struct hub_events he;
    int n = hub_take(r->user_id, r->device_id, w->since, w->limit, &he);
    if (n > 0)
        return answer_known(r, &he, claimed(r, w));
    if (n == 0) /* woken by ephemeral events only */
        return answer_empty(r, claimed(r, w), w->since, false);
    struct answer a;
    answer_begin(&a);
    int64_t next = w->since;
    if (fetch(r, w->since, w->limit, &a, &next) < 0) {
        free(a.sb.buf);
        return -1;
    }
    if (w->ephemeral)
        answer_ephemeral(&a, claimed(r, w));
    hub_answered(r->user_id, r->device_id, w->since, next);
    return answer_send(r, &a, next, true);
}

/* A poll that will wait here: other instances end this device's older poll,
 * and the worker sees the device online. */
static void note_waiting(struct req *r, int64_t timeout)
{
    presence_polling(r->user_id, r->device_id);
    presence_mark_polling(r->user_id, r->device_id, wall_time_ms() + timeout * 1000 + ONLINE_GRACE_MS);
}

/* The poll acks since (flushed in batches: acks.h), unless this device's
 * previous poll here acked the same: a renewal that moves nothing costs
 * nothing. */
static void note_ack(struct req *r, int64_t since, const struct ack_hints *hints)
{
    if (!hints->repeat)
        acks_record(r->user_id, r->device_id, since, hints);
}

/* timeout=0 is still "the same device polls again": end its older poll. */
static void note_renewed(struct req *r)
{
    hub_replace(r->user_id, r->device_id);
    presence_polling(r->user_id, r->device_id);
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

    struct poll *pl = xcalloc(1, sizeof *pl);
    req_defer(r, free_poll, pl);
    pl->w.user_id = r->user_id;
    pl->w.device_id = r->device_id;
    pl->w.since = since;
    pl->w.limit = (int)limit;
    r->ctx = pl;
    r->resume_fn = events_resume;

    struct ack_hints hints = {-1, false, 0, {{0, 0, 0, 0}}};
    if (has_since) { /* the fast path: no SQL */
        struct hub_events he;
        switch (hub_poll(r, &pl->w, (int)timeout, &he, &hints)) {
        case HUB_EVENTS:
            note_ack(r, since, &hints);
            if (timeout == 0)
                note_renewed(r);
            return answer_known(r, &he, NULL);
        case HUB_NOTHING:
            note_ack(r, since, &hints);
            note_renewed(r);
            return answer_empty(r, NULL, since, false);
        case HUB_SUSPENDED:
            note_ack(r, since, &hints);
            note_waiting(r, timeout);
            return 0;
        case HUB_MISSED: /* ephemeral events it missed between polls: answer with them now */
            note_ack(r, since, &hints);
            return answer_empty(r, claimed(r, &pl->w), since, false);
        case HUB_STOPPING:
            return answer_empty(r, NULL, since, false);
        default: /* not known here: ask the database */
            break;
        }
    }

    struct hub_ticket t = hub_ticket(r->user_id); /* before the query: see hub.h */
    char u[24];
    const char *vals[1] = {i64s(u, r->user_id)};
    PGresult *h = req_sql(r, NULL, sql_head, 1, vals);
    if (!h)
        return -1;
    if (PQntuples(h) != 1)
        return reply_problem(r, 401, "invalid_token", "the access token is not valid");
    int64_t head = db_i64(h, 0, 0);
    int64_t first = PQgetisnull(h, 0, 1) ? head + 1 : db_i64(h, 0, 1);
    hub_learn(r->user_id, head, t);
    if (!has_since) {
        hub_answered(r->user_id, r->device_id, -1, head);
        return answer_empty(r, NULL, head, true);
    }
    if (since > head)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "since"),
                                 "since is beyond the newest event (%lld)", (long long)head);
    if (since + 1 < first)
        return reply_problem_ext(r, 410, "cursor_expired", json_pack("{s:I}", "oldest_seq", (json_int_t)first),
                                 "events after %lld are no longer kept; reload state and poll without since",
                                 (long long)since);
    acks_record(r->user_id, r->device_id, since, &hints); /* flushed in batches: acks.h */

    for (int attempt = 0; attempt < 5; attempt++) {
        if (attempt > 0)
            t = hub_ticket(r->user_id);
        struct answer a;
        answer_begin(&a);
        int64_t next;
        if (fetch(r, since, (int)limit, &a, &next) < 0) {
            free(a.sb.buf);
            return -1;
        }
        if (a.n > 0 || timeout == 0) {
            if (timeout == 0)
                note_renewed(r);
            hub_answered(r->user_id, r->device_id, since, next);
            return answer_send(r, &a, next, true);
        }
        free(a.sb.buf);
        enum hub_block rc = hub_block(r, &pl->w, t, (int)timeout);
        if (rc == HUB_SUSPENDED) {
            note_waiting(r, timeout);
            return 0;
        }
        if (rc == HUB_MISSED)
            return answer_empty(r, claimed(r, &pl->w), since, true);
        if (rc == HUB_STOPPING)
            break;
    }
    return answer_empty(r, NULL, since, true);
}
