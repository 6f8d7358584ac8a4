/*
 * chats.c — the Chat resource: create (direct, deduplicated per pair; group),
 * list by last activity with a keyset cursor, get, rename, mute.
 *
 * Every membership change and rename writes a system message and inbox
 * events in the same transaction as the change (see membership.h for the
 * lock order).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apilimits.h"
#include "auth.h"
#include "chat.h"
#include "cursor.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

/* ======================================================================
 * The Chat object (one column list serves get, create, rename and the list)
 * ====================================================================== */

/* OTHER: the direct chat's other user (4 columns), JOIN_OTHER: its join, WHERE: which
 * chats (CHATS_LIST or CHATS_ONE), CHAT: how the subqueries name the chat (c.id, or
 * the parameter of CHATS_ONE, so that with Citus the statement is one shard's) */
#define SQL_CHATS(OTHER, JOIN_OTHER, WHERE, CHAT) \
    "SELECT c.id, c.kind, c.title, " DB_TS("c.created_at") ", " DB_TS("c.last_message_at") ", c.last_seq,"      \
    "  (SELECT count(*) FROM chat_members x WHERE x.chat_id = " CHAT "),"                                        \
    "  cm.role, cm.muted, cm.last_read_seq,"                                                                     \
    "  " CHAT_SQL_UNREAD_IN(CHAT) ", " CHAT_SQL_UNREAD_MENTIONS_IN(CHAT) ","                                      \
    "  " OTHER ","                                                                                               \
    "  (extract(epoch FROM c.last_message_at) * 1000000)::bigint,"                                               \
    "  lm.*"                                                                                                     \
    " FROM chat_members cm"                                                                                      \
    " JOIN chats c ON c.id = cm.chat_id"                                                                         \
    " LEFT JOIN chat_members om ON c.kind = 'direct' AND om.chat_id = c.id AND om.user_id <> cm.user_id"       \
    JOIN_OTHER " LEFT JOIN LATERAL (SELECT " MSG_COLS_CHAT("$1", CHAT) " FROM messages"                          \
    "     WHERE messages.chat_id = " CHAT " AND messages.seq = c.last_seq AND c.last_seq > cm.joined_seq) lm ON true" \
    WHERE
/* the caller's chats by last activity: $2 $3 the keyset cursor (or NULL), $4 the count */
#define CHATS_LIST                                                                        \
    " WHERE cm.user_id = $1"                                                              \
    "   AND ($2::bigint IS NULL OR (c.last_message_at, c.id) <"                           \
    "        ('epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3::bigint))" \
    " ORDER BY c.last_message_at DESC, c.id DESC LIMIT $4"
/* chat $2 as the caller sees it: the chat id named for every table, so that with Citus
 * the statement is one shard's */
#define CHATS_ONE " WHERE cm.user_id = $1 AND cm.chat_id = $2 AND c.id = $2"
#define OTHER_USER "ou.id, ou.username, ou.display_name, " DB_TS("ou.created_at")
#define JOIN_OTHER_USER " LEFT JOIN users ou ON ou.id = om.user_id"
/* Citus: users is another co-location group, joined in a second query (other_users) */
#define OTHER_USER_CITUS "om.user_id, NULL::text, NULL::text, NULL::text"

static const char sql_chats[] = SQL_CHATS(OTHER_USER, JOIN_OTHER_USER, CHATS_LIST, "c.id");
static const char sql_chats_citus[] = SQL_CHATS(OTHER_USER_CITUS, "", CHATS_LIST, "c.id");
static const char sql_chat[] = SQL_CHATS(OTHER_USER, JOIN_OTHER_USER, CHATS_ONE, "$2");
static const char sql_chat_citus[] = SQL_CHATS(OTHER_USER_CITUS, "", CHATS_ONE, "$2");
static const char sql_other_users[] =
    "SELECT id, username, display_name, " DB_TS("created_at") " FROM users WHERE id = ANY($1::bigint[])";

#define CHAT_COL_LM 17
/* at most this many direct chats' other users per page (the list's page bound) */
#define OTHERS_MAX (LIST_MAX + 1)

/* The chats of res as sql_chats, which on Citus lack the other users' rows:
 * those are read here (NULL after replying; res itself when nothing to add). */
static PGresult *other_users(struct req *r, PGresult *res)
{
    if (!db_citus())
        return res;
    int64_t ids[OTHERS_MAX];
    size_t n = 0;
    for (int i = 0; i < PQntuples(res) && n < OTHERS_MAX; i++)
        if (!PQgetisnull(res, i, 12))
            ids[n++] = db_i64(res, i, 12);
    if (n == 0)
        return res;
    const char *vals[1] = {req_id_array(r, ids, n)};
    return req_sql(r, NULL, sql_other_users, 1, vals);
}

/* others: res itself, or the rows of sql_other_users (Citus) */
static json_t *chat_json(const PGresult *res, int i, const PGresult *others)
{
    bool direct = strcmp(PQgetvalue(res, i, 1), "direct") == 0;
    int64_t unread = db_i64(res, i, 10);
    json_t *other = json_null();
    const char *title = PQgetvalue(res, i, 2);
    if (direct && !PQgetisnull(res, i, 12)) {
        const PGresult *o = res;
        int row = i, col = 12;
        if (others != res) {
            o = NULL;
            for (int k = 0; others && k < PQntuples(others); k++)
                if (strcmp(PQgetvalue(others, k, 0), PQgetvalue(res, i, 12)) == 0) {
                    o = others;
                    row = k;
                    col = 0;
                    break;
                }
        }
        if (o) {
            other = user_json(PQgetvalue(o, row, col), PQgetvalue(o, row, col + 1), PQgetvalue(o, row, col + 2),
                              PQgetvalue(o, row, col + 3));
            title = PQgetvalue(o, row, col + 2);
        }
    }
    json_t *last = PQgetisnull(res, i, CHAT_COL_LM) ? json_null() : msg_json(res, i, CHAT_COL_LM);
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:I,s:I,s:s,s:b,s:I,s:I,s:I,s:b,s:o,s:o}", "id",
                     (json_int_t)db_i64(res, i, 0), "kind", PQgetvalue(res, i, 1), "title", title, "created_at",
                     PQgetvalue(res, i, 3), "last_message_at", PQgetvalue(res, i, 4), "last_seq",
                     (json_int_t)db_i64(res, i, 5), "member_count", (json_int_t)db_i64(res, i, 6), "my_role",
                     PQgetvalue(res, i, 7), "muted", PQgetvalue(res, i, 8)[0] == 't', "last_read_seq",
                     (json_int_t)db_i64(res, i, 9), "unread_count", (json_int_t)unread, "unread_mentions",
                     (json_int_t)db_i64(res, i, 11), "has_unread", unread > 0, "last_message", last, "other_user",
                     other);
}

/* Replies status with the Chat object of chat_id as seen by the caller. */
static int reply_chat(struct req *r, int status, int64_t chat_id)
{
    char u[24], c[24];
    const char *vals[2] = {i64s(u, r->user_id), i64s(c, chat_id)};
    PGresult *res = req_sql(r, NULL, db_citus() ? sql_chat_citus : sql_chat, 2, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    PGresult *others = other_users(r, res);
    if (!others)
        return -1;
    return reply_json(r, status, chat_json(res, 0, others));
}

/* ======================================================================
 * Create
 * ====================================================================== */

/* The pair is unique in direct_chats (migration 014): its insert comes first and,
 * when a concurrent create holds the pair, waits for it and inserts nothing; then
 * the chat under the id it took. One row per statement: one shard each with Citus. */
static const char sql_direct_pair[] =
    "INSERT INTO direct_chats (user_lo, user_hi, chat_id)"
    " VALUES ($1, $2, nextval(pg_get_serial_sequence('chats', 'id'))) ON CONFLICT DO NOTHING RETURNING chat_id";
static const char sql_direct_insert[] =
    "INSERT INTO chats (id, kind, creator_id, direct_lo, direct_hi) OVERRIDING SYSTEM VALUE"
    " VALUES ($1, 'direct', $2, $3, $4)";
static const char sql_direct_find[] = "SELECT chat_id FROM direct_chats WHERE user_lo = $1 AND user_hi = $2";
static const char sql_direct_members[] =
    "INSERT INTO chat_members (chat_id, user_id, role) VALUES ($1, $2, 'member'), ($1, $3, 'member')";
static const char sql_group_insert[] =
    "INSERT INTO chats (kind, title, creator_id) VALUES ('group', $1, $2) RETURNING id";
static const char sql_group_members[] =
    "INSERT INTO chat_members (chat_id, user_id, role)"
    " SELECT $1, u, CASE WHEN u = $2 THEN 'owner' ELSE 'member' END FROM unnest($3::bigint[]) u";

static int create_direct(struct req *r)
{
    static const struct jfield fields[] = {
        {"kind", JT_STRING, 1, 1, 16, 0},
        {"user_id", JT_INT, 1, 1, INT64_MAX, 0},
    };
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    int64_t other = json_integer_value(json_object_get(r->json, "user_id"));
    if (other == r->user_id)
        return reply_field(r, 422, "validation_failed", "user_id", "%s", "a direct chat needs another user");
    int64_t pair[2] = {other < r->user_id ? other : r->user_id, other < r->user_id ? r->user_id : other};
    if (check_users_exist(r, req_id_array(r, &other, 1), 1, "user_id") < 0)
        return -1;
    char me[24], lo[24], hi[24];
    const char *v3[3] = {i64s(me, r->user_id), i64s(lo, pair[0]), i64s(hi, pair[1])};
    if (req_begin(r) < 0)
        return -1;
    PGresult *ins = req_sql(r, NULL, sql_direct_pair, 2, v3 + 1);
    if (!ins)
        return -1;
    if (PQntuples(ins) == 0) {
        /* it exists (or a concurrent create just committed it): same chat, 200 */
        if (req_rollback(r) < 0)
            return -1;
        PGresult *f = req_sql(r, NULL, sql_direct_find, 2, v3 + 1);
        if (!f)
            return -1;
        if (PQntuples(f) != 1)
            return reply_problem(r, 500, "internal_error", "direct chat vanished");
        return reply_chat(r, 200, db_i64(f, 0, 0));
    }
    int64_t chat_id = db_i64(ins, 0, 0);
    char c[24];
    const char *vc[4] = {i64s(c, chat_id), me, lo, hi};
    if (!req_sql(r, NULL, sql_direct_insert, 4, vc))
        return -1;
    const char *vm[3] = {c, lo, hi};
    if (!req_sql(r, NULL, sql_direct_members, 3, vm))
        return -1;
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:[I,I],s:I}", "chat_id", (json_int_t)chat_id, "action", "joined",
                                           "user_ids", (json_int_t)pair[0], (json_int_t)pair[1], "actor_id",
                                           (json_int_t)r->user_id));
    if (inbox_emit(r, chat_id, "membership", INBOX_MEMBERS, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_chat(r, 201, chat_id);
}

static int create_group(struct req *r)
{
    static const struct jfield fields[] = {
        {"kind", JT_STRING, 1, 1, 16, 0},
        {"title", JT_STRING, 1, 1, 200, JF_NO_CONTROL},
        {"member_ids", JT_ARRAY, 0, 0, 1000, 0},
    };
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    int64_t ids[1001];
    json_t *arr = json_object_get(r->json, "member_ids");
    int n = arr ? read_ids(arr, ids, 1000) : 0;
    if (n < 0)
        return reply_field(r, 422, "validation_failed", "member_ids", "%s", "member_ids must be positive user ids");
    /* the creator is a member whether listed or not */
    int k = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] != r->user_id)
            ids[k++] = ids[i];
    n = k;
    if (n + 1 > GROUP_MAX_MEMBERS)
        return reply_problem(r, 409, "member_limit_reached", "a group has at most %d members", GROUP_MAX_MEMBERS);
    if (n > 0 && check_users_exist(r, req_id_array(r, ids, (size_t)n), (size_t)n, "member_ids") < 0)
        return -1;
    ids[n++] = r->user_id;
    const char *all = req_id_array(r, ids, (size_t)n);
    char me[24], c[24];
    const char *vg[2] = {json_string_value(json_object_get(r->json, "title")), i64s(me, r->user_id)};
    if (req_begin(r) < 0)
        return -1;
    PGresult *ins = req_sql(r, NULL, sql_group_insert, 2, vg);
    if (!ins)
        return -1;
    int64_t chat_id = db_i64(ins, 0, 0);
    const char *vm[3] = {i64s(c, chat_id), me, all};
    if (!req_sql(r, NULL, sql_group_members, 3, vm))
        return -1;
    json_t *uids = ids_json(ids, (size_t)n);
    json_t *sys = json_pack("{s:s,s:I,s:O,s:s}", "event", "created", "actor_id", (json_int_t)r->user_id, "user_ids",
                            uids, "title", vg[0]);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:O,s:I}", "chat_id", (json_int_t)chat_id, "action", "joined",
                                           "user_ids", uids, "actor_id", (json_int_t)r->user_id));
    json_decref(uids);
    if (system_message(r, chat_id, "created the group", sys, NULL) < 0 ||
        inbox_emit(r, chat_id, "membership", INBOX_MEMBERS, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_chat(r, 201, chat_id);
}

int chats_create(struct req *r)
{
    if (limit_take(r, LIMIT_CHAT) < 0)
        return -1;
    json_t *kind = json_object_get(r->json, "kind");
    if (!json_is_string(kind))
        return reply_field(r, 422, "validation_failed", "kind", "%s", "kind must be \"direct\" or \"group\"");
    if (strcmp(json_string_value(kind), "direct") == 0)
        return create_direct(r);
    if (strcmp(json_string_value(kind), "group") == 0)
        return create_group(r);
    return reply_field(r, 422, "validation_failed", "kind", "%s", "kind must be \"direct\" or \"group\"");
}

/* ======================================================================
 * List, get, rename
 * ====================================================================== */

/* The list cursor (cursor.h) is (last_message_at in µs, chat id): exact for
 * keyset pagination, ties on time broken by id. */
static int parse_cursor(struct req *r, const char *cur, char *ts, char *id)
{
    int64_t a, b;
    if (!cursor_decode(cur, &a, &b))
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "cursor"),
                                 "cursor is not one this server issued");
    i64s(ts, a);
    i64s(id, b);
    return 0;
}

int chats_list(struct req *r)
{
    int64_t limit = LIST_DEFAULT;
    bool has;
    if (req_query_int(r, "limit", 1, LIST_MAX, &limit, &has) < 0)
        return -1;
    char u[24], lim[24], cts[24], cid[24];
    const char *cur = req_query(r, "cursor");
    if (cur && parse_cursor(r, cur, cts, cid) < 0)
        return -1;
    /* fetch one more than asked to know whether another page exists */
    const char *vals[4] = {i64s(u, r->user_id), cur ? cts : NULL, cur ? cid : NULL, i64s(lim, limit + 1)};
    PGresult *res = req_sql(r, NULL, db_citus() ? sql_chats_citus : sql_chats, 4, vals);
    if (!res)
        return -1;
    PGresult *others = other_users(r, res);
    if (!others)
        return -1;
    int n = PQntuples(res);
    int shown = n > limit ? (int)limit : n;
    json_t *arr = json_array();
    for (int i = 0; i < shown; i++)
        json_array_append_new(arr, chat_json(res, i, others));
    json_t *next = json_null();
    if (n > limit) {
        char enc[CURSOR_MAX + 1];
        cursor_encode(db_i64(res, shown - 1, 16), db_i64(res, shown - 1, 0), enc, sizeof enc);
        next = json_string(enc);
    }
    return reply_json(r, 200, json_pack("{s:o,s:o}", "chats", arr, "next_cursor", next));
}

int chats_get(struct req *r)
{
    struct member m;
    if (load_member(r, 0, &m) < 0)
        return -1;
    return reply_chat(r, 200, m.chat_id);
}

static const char sql_rename[] = "UPDATE chats SET title = $2 WHERE id = $1";

int chats_rename(struct req *r)
{
    static const struct jfield fields[] = {{"title", JT_STRING, 1, 1, 200, JF_NO_CONTROL}};
    struct member m;
    struct jsonv_error e;
    if (limit_take(r, LIMIT_CHAT) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    if (m.direct)
        return reply_problem(r, 409, "not_a_group", "direct chats have no title of their own");
    const char *title = json_string_value(json_object_get(r->json, "title"));
    if (req_begin(r) < 0 || lock_chat(r, &m) < 0)
        return -1;
    if (!member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can rename the group");
    char c[24];
    const char *vals[2] = {i64s(c, m.chat_id), title};
    if (!req_sql(r, NULL, sql_rename, 2, vals))
        return -1;
    json_t *sys = json_pack("{s:s,s:I,s:s}", "event", "renamed", "actor_id", (json_int_t)r->user_id, "title", title);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:I}", "chat_id", (json_int_t)m.chat_id, "title", title,
                                           "actor_id", (json_int_t)r->user_id));
    if (system_message(r, m.chat_id, "renamed the group", sys, NULL) < 0 ||
        inbox_emit(r, m.chat_id, "rename", INBOX_MEMBERS, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_chat(r, 200, m.chat_id);
}

/* ======================================================================
 * Mute
 * ====================================================================== */

static const char sql_mute[] = "UPDATE chat_members SET muted = $3 WHERE chat_id = $1 AND user_id = $2";

static int set_muted(struct req *r, bool muted)
{
    struct member m;
    if (load_member(r, 0, &m) < 0)
        return -1;
    char c[24], u[24];
    const char *vals[3] = {i64s(c, m.chat_id), i64s(u, r->user_id), muted ? "true" : "false"};
    if (!req_sql(r, NULL, sql_mute, 3, vals))
        return -1;
    return reply_chat(r, 200, m.chat_id);
}

int chats_mute(struct req *r)
{
    return set_muted(r, true);
}

int chats_unmute(struct req *r)
{
    return set_muted(r, false);
}
