/*
 * presence.c — the Presence resource:
 *
 *   POST /v1/presence/heartbeat   the caller is online (as every poll does)
 *   GET  /v1/presence?user_ids=1,2,3
 *
 * Online means seen within NATTER_PRESENCE_TTL (realtime/presence.h); the
 * last_seen_at of an offline user comes from PostgreSQL.
 *
 * Visibility: the caller sees the presence of people who share a chat with
 * them (and their own). Anyone else reads as offline with no last_seen_at,
 * exactly like someone never seen, so the answer tells a stranger nothing.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "apilimits.h"
#include "db.h"
#include "http.h"
#include "presence.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

int presence_heartbeat(struct req *r)
{
    presence_touch(r->db, r->user_id);
    return reply_empty(r, 204);
}

/* The asked-for users who share a chat with the caller ($2) are found first (a
 * materialized CTE: chat_members is distributed by chat, so with Citus that is a
 * query over every shard, the caller's chats being anywhere) and users are
 * joined to that intermediate result: Citus refuses a join (or a correlated
 * EXISTS) between the two co-location groups any other way. */
static const char sql_last_seen[] =
    "WITH c AS MATERIALIZED (SELECT DISTINCT o.user_id FROM chat_members mine"
    "   JOIN chat_members o ON o.chat_id = mine.chat_id WHERE mine.user_id = $2 AND o.user_id = ANY($1::bigint[]))"
    " SELECT u.id, " DB_TS("u.last_seen_at") ", u.id = $2 OR c.user_id IS NOT NULL"
    "  FROM users u LEFT JOIN c ON c.user_id = u.id WHERE u.id = ANY($1::bigint[]) ORDER BY u.id";

int presence_get(struct req *r)
{
    const char *q = req_query(r, "user_ids");
    int64_t ids[PRESENCE_MAX_IDS];
    size_t n = 0;
    if (!q || !*q || strlen(q) > PRESENCE_MAX_IDS * 21)
        goto bad;
    for (const char *p = q; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char tok[24];
        if (len == 0 || len >= sizeof tok || n == PRESENCE_MAX_IDS)
            goto bad;
        memcpy(tok, p, len);
        tok[len] = '\0';
        if (!parse_i64(tok, &ids[n]) || ids[n] <= 0)
            goto bad;
        n++;
        p = comma ? comma + 1 : p + len;
        if (comma && !*p)
            goto bad;
    }
    char me[24];
    const char *vals[2] = {req_id_array(r, ids, n), i64s(me, r->user_id)};
    PGresult *res = req_sql(r, NULL, sql_last_seen, 2, vals);
    if (!res)
        return -1;
    /* one round trip for the scores of the visible ones; Redis down: everyone
     * reads as offline */
    size_t found = (size_t)PQntuples(res), nvis = 0;
    int64_t seen_ms[PRESENCE_MAX_IDS];
    for (size_t i = 0; i < found; i++)
        if (PQgetvalue(res, (int)i, 2)[0] == 't')
            ids[nvis++] = db_i64(res, (int)i, 0);
    presence_seen(ids, nvis, seen_ms);
    json_t *arr = json_array();
    for (int i = 0, v = 0; i < PQntuples(res); i++) {
        bool visible = PQgetvalue(res, i, 2)[0] == 't';
        int64_t seen = visible ? seen_ms[v++] : -1;
        bool online = visible && presence_online(seen);
        json_t *last = !visible || PQgetisnull(res, i, 1) ? json_null() : json_string(PQgetvalue(res, i, 1));
        if (seen >= 0) {
            char ts[40];
            rfc3339_ms(seen, ts, sizeof ts);
            json_decref(last);
            last = json_string(ts);
        }
        json_array_append_new(arr, json_pack("{s:I,s:b,s:o}", "user_id", (json_int_t)db_i64(res, i, 0), "online",
                                             online, "last_seen_at", last));
    }
    return reply_json(r, 200, json_pack("{s:o}", "presence", arr));
bad:
    return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "user_ids"),
                             "user_ids must be 1 to %d comma-separated user ids", PRESENCE_MAX_IDS);
}
