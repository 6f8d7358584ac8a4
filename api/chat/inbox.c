/*
 * inbox.c — fan-out of one event into the gap-free inboxes of its recipients
 * (see inbox.h).
 */
#include "inbox.h"

#include <string.h>

#include "bus.h"
#include "db.h"
#include "http.h"
#include "tx.h"
#include "util.h"
#include "wake.h"

/* Users are locked in ascending id order (MATERIALIZED keeps the ordered
 * FOR NO KEY UPDATE a separate step) before their inbox_seq is bumped. The
 * recipients are one array so that the primary key index is used: an
 * `… OR id = ANY(…)` form made PostgreSQL scan all users on every send. */
static const char sql_inbox_emit[] =
    "WITH r AS MATERIALIZED ("
    "  SELECT id FROM users"
    "   WHERE id = ANY (CASE WHEN $4 THEN ARRAY(SELECT user_id FROM chat_members WHERE chat_id = $1)"
    "                   ELSE '{}'::bigint[] END || $5::bigint[])"
    "   ORDER BY id FOR NO KEY UPDATE),"
    " u AS (UPDATE users SET inbox_seq = users.inbox_seq + 1 FROM r WHERE users.id = r.id"
    "       RETURNING users.id, users.inbox_seq)"
    "INSERT INTO inbox (user_id, seq, type, chat_id, payload)"
    " SELECT id, inbox_seq, $2, $1, $3::jsonb FROM u RETURNING user_id, seq, " DB_TS_RET("created_at");

/* With Citus (db_citus()): users and chat_members are distributed by different
 * keys and Citus refuses row locks across shards, so the members are read first
 * (one chat: one shard), the users locked one at a time in ascending id order
 * (natter_lock_users, migrations/015: each lock a one-shard statement, the
 * global lock order), then updated in one multi-shard UPDATE. A two-phase
 * commit on the workers touched. */
static const char sql_citus_members[] =
    "SELECT CASE WHEN $2 THEN (SELECT coalesce(array_agg(user_id), '{}') FROM chat_members WHERE chat_id = $1)"
    " ELSE '{}'::bigint[] END";
static const char sql_citus_inbox_emit[] =
    "WITH u AS (UPDATE users SET inbox_seq = inbox_seq + 1 WHERE id = ANY ($4::bigint[] || $5::bigint[])"
    "           RETURNING id, inbox_seq)"
    "INSERT INTO inbox (user_id, seq, type, chat_id, payload)"
    " SELECT id, inbox_seq, $2::text, $1::bigint, $3::jsonb FROM u RETURNING user_id, seq, " DB_TS_RET("created_at");
static const char sql_citus_lock_users[] = "SELECT natter_lock_users($1::bigint[] || $2::bigint[])";

/* Citus: the chat's members as an array literal (or "{}" when to has no
 * INBOX_MEMBERS), locked with the users of extra; NULL after replying. */
static const char *citus_recipients(struct req *r, const char *chat, unsigned to, const char *extra)
{
    const char *vals[2] = {chat, (to & INBOX_MEMBERS) ? "true" : "false"};
    PGresult *m = req_sql(r, NULL, sql_citus_members, 2, vals);
    if (!m)
        return NULL;
    const char *vl[2] = {PQgetvalue(m, 0, 0), extra ? extra : "{}"};
    return req_sql(r, NULL, sql_citus_lock_users, 2, vl) ? vl[0] : NULL;
}

int inbox_emit(struct req *r, int64_t chat_id, const char *type, unsigned to, const char *extra, json_t *payload)
{
    char c[24];
    char *text = json_dumps(payload, JSON_COMPACT);
    if (!text)
        return reply_problem(r, 500, "internal_error", "event encoding failed");
    req_own(r, text);
    const char *vals[5] = {i64s(c, chat_id), type, text, (to & INBOX_MEMBERS) ? "true" : "false", extra ? extra : "{}"};
    const char *sql = sql_inbox_emit;
    if (db_citus()) {
        if (!(vals[3] = citus_recipients(r, c, to, extra)))
            return -1;
        sql = sql_citus_inbox_emit;
    }
    PGresult *res = req_sql(r, NULL, sql, 5, vals);
    if (!res)
        return -1;
    /* one body for every recipient (the rows share created_at: now() of the transaction) */
    /* a `message` event written here is a system message: which one is not
     * known at this level (the acks then read the inbox) */
    static const struct evmeta no_message = {0, 0};
    const struct evmeta *meta = strcmp(type, "message") == 0 ? NULL : &no_message;
    struct evbody *ev = PQntuples(res) ? evbody_new(type, chat_id, PQgetvalue(res, 0, 2), text, strlen(text), meta)
                                       : NULL;
    for (int i = 0; i < PQntuples(res); i++)
        bus_note_wake(r, db_i64(res, i, 0), db_i64(res, i, 1), evbody_ref(ev));
    evbody_unref(ev);
    return 0;
}

static const char sql_lock_users[] =
    "SELECT id FROM users"
    " WHERE id = ANY (CASE WHEN $2 THEN ARRAY(SELECT user_id FROM chat_members WHERE chat_id = $1)"
    "                 ELSE '{}'::bigint[] END || $3::bigint[])"
    " ORDER BY id FOR NO KEY UPDATE";

int lock_users(struct req *r, int64_t chat_id, unsigned to, const char *extra)
{
    char c[24];
    const char *vals[3] = {i64s(c, chat_id), (to & INBOX_MEMBERS) ? "true" : "false", extra ? extra : "{}"};
    if (db_citus()) {
        return citus_recipients(r, vals[0], to, extra) ? 0 : -1;
    }
    return req_sql(r, NULL, sql_lock_users, 3, vals) ? 0 : -1;
}
