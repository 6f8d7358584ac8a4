/*
 * chats.c — chats and their members: create (direct, deduplicated per pair;
 * group), list by last activity with a keyset cursor, get, rename, member
 * management with roles, read markers and receipts.
 *
 * Every membership change and rename writes a system message and inbox
 * events in the same transaction as the change (see chat.h for lock order).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "auth.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "routes.h"
#include "util.h"

#define LIST_DEFAULT 20
#define LIST_MAX 100

/* Reads a JSON array of positive integers (ids) into a new deduplicated,
 * sorted array; returns the count or -1 when an item is not a positive int. */
static int read_ids(const json_t *arr, int64_t *out, size_t cap)
{
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || n >= cap)
            return -1;
        out[n++] = json_integer_value(v);
    }
    /* insertion sort + dedupe: n <= a few hundred */
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && out[b - 1] > out[b]; b--) {
            int64_t t = out[b];
            out[b] = out[b - 1];
            out[b - 1] = t;
        }
    size_t k = 0;
    for (size_t a = 0; a < n; a++)
        if (k == 0 || out[k - 1] != out[a])
            out[k++] = out[a];
    return (int)k;
}

static json_t *ids_json(const int64_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* ======================================================================
 * The Chat object (one query serves get, create, rename and the list)
 * ====================================================================== */

static const char sql_chats[] =
    "SELECT c.id, c.kind, c.title, " DB_TS("c.created_at") ", " DB_TS("c.last_message_at") ", c.last_seq,"
    "  (SELECT count(*) FROM chat_members x WHERE x.chat_id = c.id),"
    "  cm.role, cm.muted, cm.last_read_seq,"
    "  (SELECT count(*) FROM messages m WHERE m.chat_id = c.id AND m.seq > cm.last_read_seq"
    "     AND m.seq > cm.joined_seq AND m.kind = 'text' AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id),"
    "  (SELECT count(*) FROM messages m WHERE m.chat_id = c.id AND m.seq > cm.last_read_seq"
    "     AND m.seq > cm.joined_seq AND m.kind = 'text' AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id"
    "     AND cm.user_id = ANY (m.mentions)),"
    "  ou.id, ou.username, ou.display_name, " DB_TS("ou.created_at") ","
    "  (extract(epoch FROM c.last_message_at) * 1000000)::bigint,"
    "  lm.*"
    " FROM chat_members cm"
    " JOIN chats c ON c.id = cm.chat_id"
    " LEFT JOIN chat_members om ON c.kind = 'direct' AND om.chat_id = c.id AND om.user_id <> cm.user_id"
    " LEFT JOIN users ou ON ou.id = om.user_id"
    " LEFT JOIN LATERAL (SELECT " MSG_COLS("$1") " FROM messages"
    "     WHERE messages.chat_id = c.id AND messages.seq = c.last_seq AND c.last_seq > cm.joined_seq) lm ON true"
    " WHERE cm.user_id = $1"
    "   AND ($5::bigint IS NULL OR c.id = $5)"
    "   AND ($2::bigint IS NULL OR (c.last_message_at, c.id) <"
    "        ('epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3::bigint))"
    " ORDER BY c.last_message_at DESC, c.id DESC LIMIT $4";

#define CHAT_COL_LM 17

static json_t *chat_json(const PGresult *res, int i)
{
    bool direct = strcmp(PQgetvalue(res, i, 1), "direct") == 0;
    int64_t unread = db_i64(res, i, 10);
    json_t *other = json_null();
    const char *title = PQgetvalue(res, i, 2);
    if (direct && !PQgetisnull(res, i, 12)) {
        other = user_json(PQgetvalue(res, i, 12), PQgetvalue(res, i, 13), PQgetvalue(res, i, 14),
                          PQgetvalue(res, i, 15));
        title = PQgetvalue(res, i, 14);
    }
    json_t *last = PQgetisnull(res, i, CHAT_COL_LM) ? json_null() : msg_json(res, i, CHAT_COL_LM);
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:I,s:I,s:s,s:b,s:I,s:I,s:I,s:b,s:o,s:o}", "id",
                     (json_int_t)db_i64(res, i, 0), "kind", PQgetvalue(res, i, 1), "title", title, "created_at",
                     PQgetvalue(res, i, 3), "last_message_at", PQgetvalue(res, i, 4), "last_seq",
                     (json_int_t)db_i64(res, i, 5), "member_count", (json_int_t)db_i64(res, i, 6), "my_role",
                     PQgetvalue(res, i, 7), "muted", PQgetvalue(res, i, 8)[0] == 't', "last_read_seq",
                     (json_int_t)db_i64(res, i, 9), "unread_count", (json_int_t)unread, "unread_mentions",
                     (json_int_t)db_i64(res, i, 11), "has_unread", unread > 0, "last_message", last,
                     "other_user", other);
}

/* Replies status with the Chat object of chat_id as seen by the caller. */
static int reply_chat(struct req *r, int status, int64_t chat_id)
{
    char u[24], c[24];
    const char *vals[5] = {i64s(u, r->user_id), NULL, NULL, "1", i64s(c, chat_id)};
    PGresult *res = req_sql(r, NULL, sql_chats, 5, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    return reply_json(r, status, chat_json(res, 0));
}

/* ======================================================================
 * Create
 * ====================================================================== */

static const char sql_users_exist[] = "SELECT count(*) FROM users WHERE id = ANY($1::bigint[])";
static const char sql_direct_insert[] =
    "INSERT INTO chats (kind, creator_id, direct_lo, direct_hi) VALUES ('direct', $1, $2, $3)"
    " ON CONFLICT (direct_lo, direct_hi) WHERE kind = 'direct' DO NOTHING RETURNING id";
static const char sql_direct_find[] =
    "SELECT id FROM chats WHERE kind = 'direct' AND direct_lo = $1 AND direct_hi = $2";
static const char sql_direct_members[] =
    "INSERT INTO chat_members (chat_id, user_id, role) VALUES ($1, $2, 'member'), ($1, $3, 'member')";
static const char sql_group_insert[] =
    "INSERT INTO chats (kind, title, creator_id) VALUES ('group', $1, $2) RETURNING id";
static const char sql_group_members[] =
    "INSERT INTO chat_members (chat_id, user_id, role)"
    " SELECT $1, u, CASE WHEN u = $2 THEN 'owner' ELSE 'member' END FROM unnest($3::bigint[]) u";

/* 0 when every id exists; -1 after replying 422 unknown_user. */
static int check_users_exist(struct req *r, const char *arr, size_t n, const char *field)
{
    const char *vals[1] = {arr};
    PGresult *res = req_sql(r, NULL, sql_users_exist, 1, vals);
    if (!res)
        return -1;
    if ((size_t)db_i64(res, 0, 0) != n)
        return reply_field(r, 422, "unknown_user", field, "a user id does not exist");
    return 0;
}

static int create_direct(struct req *r)
{
    static const struct jfield fields[] = {
        {"kind", JT_STRING, 1, 1, 16, 0},
        {"user_id", JT_INT, 1, 1, INT64_MAX, 0},
    };
    struct jsonv_error e;
    if (jsonv_check(r->json, fields, 2, &e) < 0)
        return reply_invalid(r, &e);
    int64_t other = json_integer_value(json_object_get(r->json, "user_id"));
    if (other == r->user_id)
        return reply_field(r, 422, "validation_failed", "user_id", "%s", "a direct chat needs another user");
    int64_t pair[2] = {other < r->user_id ? other : r->user_id, other < r->user_id ? r->user_id : other};
    if (check_users_exist(r, id_array_literal(r, &other, 1), 1, "user_id") < 0)
        return -1;
    char me[24], lo[24], hi[24];
    const char *v3[3] = {i64s(me, r->user_id), i64s(lo, pair[0]), i64s(hi, pair[1])};
    if (req_begin(r) < 0)
        return -1;
    PGresult *ins = req_sql(r, NULL, sql_direct_insert, 3, v3);
    if (!ins)
        return -1;
    if (PQntuples(ins) == 0) {
        /* it exists (or a concurrent create just committed it): same chat, 200 */
        if (!req_sql(r, NULL, "ROLLBACK", 0, NULL))
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
    const char *vm[3] = {i64s(c, chat_id), lo, hi};
    if (!req_sql(r, NULL, sql_direct_members, 3, vm))
        return -1;
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:[I,I],s:I}", "chat_id", (json_int_t)chat_id, "action",
                                           "joined", "user_ids", (json_int_t)pair[0], (json_int_t)pair[1],
                                           "actor_id", (json_int_t)r->user_id));
    if (inbox_emit(r, chat_id, "membership", true, NULL, ev) < 0 || req_commit(r) < 0)
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
    if (jsonv_check(r->json, fields, 3, &e) < 0)
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
        return reply_problem(r, 409, "member_limit_reached", "a group has at most %d members",
                             GROUP_MAX_MEMBERS);
    if (n > 0 && check_users_exist(r, id_array_literal(r, ids, (size_t)n), (size_t)n, "member_ids") < 0)
        return -1;
    ids[n++] = r->user_id;
    const char *all = id_array_literal(r, ids, (size_t)n);
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
        inbox_emit(r, chat_id, "membership", true, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_chat(r, 201, chat_id);
}

int chats_create(struct req *r)
{
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

/* Parses an optional integer query parameter in [min,max]; 0 ok (absent:
 * *present=false), -1 after replying 400 invalid_parameter. */
int query_int(struct req *r, const char *name, int64_t min, int64_t max, int64_t *out, bool *present)
{
    const char *v = req_query(r, name);
    *present = v != NULL;
    if (!v)
        return 0;
    if (!parse_i64(v, out) || *out < min || *out > max)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", name),
                                 "%s must be an integer from %lld to %lld", name, (long long)min, (long long)max);
    return 0;
}

/* The list cursor is "<last_message_at µs>.<chat id>" in base64url: opaque to
 * clients, exact for keyset pagination (ties on time are broken by id). */
static int parse_cursor(struct req *r, const char *cur, char *ts, char *id)
{
    unsigned char raw[64];
    size_t len = 0;
    if (strlen(cur) > 80 || sodium_base642bin(raw, sizeof raw - 1, cur, strlen(cur), NULL, &len, NULL,
                                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        goto bad;
    raw[len] = '\0';
    char *dot = strchr((char *)raw, '.');
    int64_t a, b;
    if (!dot)
        goto bad;
    *dot = '\0';
    if (!parse_i64((char *)raw, &a) || !parse_i64(dot + 1, &b) || a < 0 || b <= 0)
        goto bad;
    i64s(ts, a);
    i64s(id, b);
    return 0;
bad:
    return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "cursor"),
                             "cursor is not one this server issued");
}

int chats_list(struct req *r)
{
    int64_t limit = LIST_DEFAULT;
    bool has;
    if (query_int(r, "limit", 1, LIST_MAX, &limit, &has) < 0)
        return -1;
    char u[24], lim[24], cts[24], cid[24];
    const char *cur = req_query(r, "cursor");
    if (cur && parse_cursor(r, cur, cts, cid) < 0)
        return -1;
    /* fetch one more than asked to know whether another page exists */
    const char *vals[5] = {i64s(u, r->user_id), cur ? cts : NULL, cur ? cid : NULL, i64s(lim, limit + 1), NULL};
    PGresult *res = req_sql(r, NULL, sql_chats, 5, vals);
    if (!res)
        return -1;
    int n = PQntuples(res);
    int shown = n > limit ? (int)limit : n;
    json_t *arr = json_array();
    for (int i = 0; i < shown; i++)
        json_array_append_new(arr, chat_json(res, i));
    json_t *next = json_null();
    if (n > limit) {
        char raw[64], enc[96];
        snprintf(raw, sizeof raw, "%s.%s", PQgetvalue(res, shown - 1, 16), PQgetvalue(res, shown - 1, 0));
        sodium_bin2base64(enc, sizeof enc, (unsigned char *)raw, strlen(raw),
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
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
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, 1, &e) < 0)
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
        inbox_emit(r, m.chat_id, "rename", true, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_chat(r, 200, m.chat_id);
}

/* ======================================================================
 * Members
 * ====================================================================== */

#define MEMBER_COLS                                                                                   \
    "u.id, u.username, u.display_name, " DB_TS("u.created_at") ", cm.role, " DB_TS("cm.joined_at") \
    ", cm.last_read_seq, cm.last_delivered_seq"

static const char sql_members[] =
    "SELECT " MEMBER_COLS " FROM chat_members cm JOIN users u ON u.id = cm.user_id"
    " WHERE cm.chat_id = $1 AND ($2::bigint[] IS NULL OR cm.user_id = ANY($2::bigint[])) ORDER BY u.id";

static json_t *member_json(const PGresult *res, int i)
{
    return json_pack("{s:o,s:s,s:s,s:I,s:I}", "user",
                     user_json(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                               PQgetvalue(res, i, 3)),
                     "role", PQgetvalue(res, i, 4), "joined_at", PQgetvalue(res, i, 5), "last_read_seq",
                     (json_int_t)db_i64(res, i, 6), "last_delivered_seq", (json_int_t)db_i64(res, i, 7));
}

/* Replies 200 {"members": [...]} for the given ids (NULL = all members). */
static int reply_members(struct req *r, int64_t chat_id, const char *ids)
{
    char c[24];
    const char *vals[2] = {i64s(c, chat_id), ids};
    PGresult *res = req_sql(r, NULL, sql_members, 2, vals);
    if (!res)
        return -1;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, member_json(res, i));
    return reply_json(r, 200, json_pack("{s:o}", "members", arr));
}

int members_list(struct req *r)
{
    struct member m;
    if (load_member(r, 0, &m) < 0)
        return -1;
    return reply_members(r, m.chat_id, NULL);
}

static const char sql_new_members[] =
    "SELECT u FROM unnest($2::bigint[]) u"
    " WHERE NOT EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = u) ORDER BY u";
static const char sql_member_count[] = "SELECT count(*) FROM chat_members WHERE chat_id = $1";
/* joined_seq = the seq the join message will take - 1: new members see their
 * own join message and everything after it */
static const char sql_add_members[] =
    "INSERT INTO chat_members (chat_id, user_id, role, joined_seq, last_read_seq, last_delivered_seq)"
    " SELECT $1, u, 'member', $3, $3, $3 FROM unnest($2::bigint[]) u";

int members_add(struct req *r)
{
    static const struct jfield fields[] = {{"user_ids", JT_ARRAY, 1, 1, 99, 0}};
    struct member m;
    struct jsonv_error e;
    int64_t ids[100];
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, 1, &e) < 0)
        return reply_invalid(r, &e);
    int n = read_ids(json_object_get(r->json, "user_ids"), ids, 99);
    if (n < 0)
        return reply_field(r, 422, "validation_failed", "user_ids", "%s", "user_ids must be positive user ids");
    if (m.direct)
        return reply_problem(r, 409, "not_a_group", "members of a direct chat cannot change");
    if (!member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can add members");
    if (check_users_exist(r, id_array_literal(r, ids, (size_t)n), (size_t)n, "user_ids") < 0)
        return -1;
    if (req_begin(r) < 0 || lock_chat(r, &m) < 0)
        return -1;
    /* under the chat lock: the role may have changed, and two admins adding
     * at once are serialised here, so the limit holds */
    if (!member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can add members");
    char c[24], js[24];
    const char *v2[3] = {i64s(c, m.chat_id), id_array_literal(r, ids, (size_t)n), NULL};
    PGresult *fresh = req_sql(r, NULL, sql_new_members, 2, v2);
    PGresult *cnt = fresh ? req_sql(r, NULL, sql_member_count, 1, v2) : NULL;
    if (!cnt)
        return -1;
    int nf = PQntuples(fresh);
    if (nf == 0) {
        if (req_commit(r) < 0)
            return -1;
        return reply_json(r, 200, json_pack("{s:[]}", "members"));
    }
    if (db_i64(cnt, 0, 0) + nf > GROUP_MAX_MEMBERS)
        return reply_problem(r, 409, "member_limit_reached", "a group has at most %d members (it has %lld)",
                             GROUP_MAX_MEMBERS, (long long)db_i64(cnt, 0, 0));
    int64_t added[100];
    for (int i = 0; i < nf; i++)
        added[i] = db_i64(fresh, i, 0);
    const char *arr = id_array_literal(r, added, (size_t)nf);
    const char *v3[3] = {c, arr, i64s(js, m.last_seq)};
    if (!req_sql(r, NULL, sql_add_members, 3, v3))
        return -1;
    json_t *uids = ids_json(added, (size_t)nf);
    json_t *sys = json_pack("{s:s,s:I,s:O}", "event", "members_added", "actor_id", (json_int_t)r->user_id,
                            "user_ids", uids);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:O,s:I}", "chat_id", (json_int_t)m.chat_id, "action", "added",
                                           "user_ids", uids, "actor_id", (json_int_t)r->user_id));
    json_decref(uids);
    if (system_message(r, m.chat_id, "added members", sys, NULL) < 0 ||
        inbox_emit(r, m.chat_id, "membership", true, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_members(r, m.chat_id, arr);
}

static const char sql_target[] = "SELECT role FROM chat_members WHERE chat_id = $1 AND user_id = $2";
static const char sql_remove[] = "DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2";
/* the last owner left: the longest-standing admin, else member, takes over */
static const char sql_hand_over[] =
    "UPDATE chat_members SET role = 'owner' WHERE chat_id = $1 AND user_id = ("
    "  SELECT user_id FROM chat_members WHERE chat_id = $1"
    "   AND NOT EXISTS (SELECT 1 FROM chat_members o WHERE o.chat_id = $1 AND o.role = 'owner')"
    "   ORDER BY role = 'admin' DESC, joined_at, user_id LIMIT 1)"
    " RETURNING user_id";
static const char sql_set_role[] = "UPDATE chat_members SET role = $3 WHERE chat_id = $1 AND user_id = $2";
static const char sql_owner_count[] = "SELECT count(*) FROM chat_members WHERE chat_id = $1 AND role = 'owner'";

/* Loads the target member's role under the chat lock; -1 after 404. */
static int load_target(struct req *r, int64_t chat_id, int64_t target, char *role, size_t rlen)
{
    char c[24], t[24];
    const char *vals[2] = {i64s(c, chat_id), i64s(t, target)};
    PGresult *res = req_sql(r, NULL, sql_target, 2, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "member_not_found", "that user is not a member of this chat");
    snprintf(role, rlen, "%s", PQgetvalue(res, 0, 0));
    return 0;
}

/* System message + membership event for a role change (also used for the
 * automatic hand-over when the last owner leaves). */
static int announce_role(struct req *r, int64_t chat_id, int64_t target, const char *role)
{
    json_t *sys = json_pack("{s:s,s:I,s:[I],s:s}", "event", "role_changed", "actor_id", (json_int_t)r->user_id,
                            "user_ids", (json_int_t)target, "role", role);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:[I],s:I,s:s}", "chat_id", (json_int_t)chat_id, "action",
                                           "role_changed", "user_ids", (json_int_t)target, "actor_id",
                                           (json_int_t)r->user_id, "role", role));
    if (system_message(r, chat_id, "changed a role", sys, NULL) < 0)
        return -1;
    return inbox_emit(r, chat_id, "membership", true, NULL, ev);
}

int members_remove(struct req *r)
{
    struct member m;
    int64_t target;
    char role[16];
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (!parse_i64(req_param(r, 1), &target) || target <= 0)
        return reply_problem(r, 404, "member_not_found", "that user is not a member of this chat");
    if (m.direct)
        return reply_problem(r, 409, "not_a_group", "members of a direct chat cannot change");
    if (req_begin(r) < 0 || lock_chat(r, &m) < 0 || load_target(r, m.chat_id, target, role, sizeof role) < 0)
        return -1;
    bool self = target == r->user_id;
    if (!self && !member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can remove members");
    if (!self && strcmp(role, "owner") == 0 && strcmp(m.role, "owner") != 0)
        return reply_problem(r, 403, "forbidden", "admins cannot remove an owner");
    char c[24], t[24];
    const char *vals[2] = {i64s(c, m.chat_id), i64s(t, target)};
    if (!req_sql(r, NULL, sql_remove, 2, vals))
        return -1;
    const char *removed = id_array_literal(r, &target, 1);
    /* the removed user gets the membership event after the members got the
     * system message: lock everyone in id order first */
    if (lock_users(r, m.chat_id, true, removed) < 0)
        return -1;
    json_t *sys = json_pack("{s:s,s:I,s:[I]}", "event", self ? "member_left" : "member_removed", "actor_id",
                            (json_int_t)r->user_id, "user_ids", (json_int_t)target);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:[I],s:I}", "chat_id", (json_int_t)m.chat_id, "action",
                                           self ? "left" : "removed", "user_ids", (json_int_t)target, "actor_id",
                                           (json_int_t)r->user_id));
    if (system_message(r, m.chat_id, self ? "left the group" : "removed a member", sys, NULL) < 0 ||
        inbox_emit(r, m.chat_id, "membership", true, removed, ev) < 0)
        return -1;
    if (strcmp(role, "owner") == 0) {
        PGresult *h = req_sql(r, NULL, sql_hand_over, 1, vals);
        if (!h)
            return -1;
        if (PQntuples(h) == 1 && announce_role(r, m.chat_id, db_i64(h, 0, 0), "owner") < 0)
            return -1;
    }
    if (req_commit(r) < 0)
        return -1;
    return reply_empty(r, 204);
}

int members_set_role(struct req *r)
{
    static const struct jfield fields[] = {{"role", JT_STRING, 1, 1, 16, 0}};
    struct member m;
    struct jsonv_error e;
    int64_t target;
    char cur[16];
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (!parse_i64(req_param(r, 1), &target) || target <= 0)
        return reply_problem(r, 404, "member_not_found", "that user is not a member of this chat");
    if (jsonv_check(r->json, fields, 1, &e) < 0)
        return reply_invalid(r, &e);
    const char *role = json_string_value(json_object_get(r->json, "role"));
    if (strcmp(role, "owner") != 0 && strcmp(role, "admin") != 0 && strcmp(role, "member") != 0)
        return reply_field(r, 422, "validation_failed", "role", "%s", "role must be owner, admin or member");
    if (m.direct)
        return reply_problem(r, 409, "not_a_group", "members of a direct chat have no roles");
    if (req_begin(r) < 0 || lock_chat(r, &m) < 0 || load_target(r, m.chat_id, target, cur, sizeof cur) < 0)
        return -1;
    bool owner = strcmp(m.role, "owner") == 0;
    if (!member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can change roles");
    if (!owner && (strcmp(cur, "owner") == 0 || strcmp(role, "owner") == 0))
        return reply_problem(r, 403, "forbidden", "only owners can make or change owners");
    char c[24], t[24];
    const char *vals[3] = {i64s(c, m.chat_id), i64s(t, target), role};
    if (strcmp(cur, role) != 0) {
        if (strcmp(cur, "owner") == 0) {
            PGresult *oc = req_sql(r, NULL, sql_owner_count, 1, vals);
            if (!oc)
                return -1;
            if (db_i64(oc, 0, 0) <= 1)
                return reply_problem(r, 409, "last_owner", "a group needs an owner: promote someone first");
        }
        if (!req_sql(r, NULL, sql_set_role, 3, vals) || announce_role(r, m.chat_id, target, role) < 0)
            return -1;
    }
    if (req_commit(r) < 0)
        return -1;
    const char *only = id_array_literal(r, &target, 1);
    const char *mv[2] = {c, only};
    PGresult *res = req_sql(r, NULL, sql_members, 2, mv);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "member_not_found", "that user is not a member of this chat");
    return reply_json(r, 200, member_json(res, 0));
}

/* ======================================================================
 * Read markers and receipts
 * ====================================================================== */

/* Moves the marker forward only; returns the previous value (NULL row = not moved). */
static const char sql_mark_read[] =
    "WITH old AS (SELECT last_read_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2 FOR UPDATE)"
    "UPDATE chat_members cm SET last_read_seq = $3, last_delivered_seq = GREATEST(cm.last_delivered_seq, $3)"
    "  FROM old WHERE cm.chat_id = $1 AND cm.user_id = $2 AND old.last_read_seq < $3"
    " RETURNING old.last_read_seq";
/* the people who care that their messages were read */
static const char sql_read_senders[] =
    "SELECT coalesce(array_agg(DISTINCT sender_id), '{}') FROM messages"
    " WHERE chat_id = $1 AND seq > $2 AND seq <= $3 AND kind = 'text' AND sender_id IS NOT NULL AND sender_id <> $4";
static const char sql_unread[] =
    "SELECT cm.last_read_seq,"
    "  (SELECT count(*) FROM messages m WHERE m.chat_id = cm.chat_id AND m.seq > cm.last_read_seq"
    "     AND m.seq > cm.joined_seq AND m.kind = 'text' AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id),"
    "  (SELECT count(*) FROM messages m WHERE m.chat_id = cm.chat_id AND m.seq > cm.last_read_seq"
    "     AND m.seq > cm.joined_seq AND m.kind = 'text' AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id"
    "     AND cm.user_id = ANY (m.mentions))"
    " FROM chat_members cm WHERE cm.chat_id = $1 AND cm.user_id = $2";

int chats_read(struct req *r)
{
    static const struct jfield fields[] = {{"seq", JT_INT, 1, 0, INT64_MAX, 0}};
    struct member m;
    struct jsonv_error e;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, 1, &e) < 0)
        return reply_invalid(r, &e);
    int64_t seq = json_integer_value(json_object_get(r->json, "seq"));
    if (seq > m.last_seq)
        return reply_field(r, 422, "validation_failed", "seq", "%s", "seq is beyond the newest message of the chat");
    char c[24], u[24], s[24];
    const char *vals[4] = {i64s(c, m.chat_id), i64s(u, r->user_id), i64s(s, seq), NULL};
    if (req_begin(r) < 0)
        return -1;
    PGresult *mv = req_sql(r, NULL, sql_mark_read, 3, vals);
    if (!mv)
        return -1;
    if (PQntuples(mv) == 1) {
        const char *sv[4] = {c, PQgetvalue(mv, 0, 0), s, u};
        PGresult *snd = req_sql(r, NULL, sql_read_senders, 4, sv);
        if (!snd)
            return -1;
        /* the reader's other devices and the senders of what was just read */
        char *to = req_own(r, xasprintf("{%s%s%s", u, strlen(PQgetvalue(snd, 0, 0)) > 2 ? "," : "",
                                        PQgetvalue(snd, 0, 0) + 1));
        json_t *ev = req_own_json(r, json_pack("{s:I,s:I,s:s,s:I}", "chat_id", (json_int_t)m.chat_id, "user_id",
                                               (json_int_t)r->user_id, "kind", "read", "seq", (json_int_t)seq));
        if (inbox_emit(r, m.chat_id, "receipt", false, to, ev) < 0)
            return -1;
    }
    if (req_commit(r) < 0)
        return -1;
    PGresult *un = req_sql(r, NULL, sql_unread, 2, vals);
    if (!un)
        return -1;
    if (PQntuples(un) != 1)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    return reply_json(r, 200, json_pack("{s:I,s:I,s:I,s:I}", "chat_id", (json_int_t)m.chat_id, "last_read_seq",
                                        (json_int_t)db_i64(un, 0, 0), "unread_count", (json_int_t)db_i64(un, 0, 1),
                                        "unread_mentions", (json_int_t)db_i64(un, 0, 2)));
}

static const char sql_receipts[] =
    "SELECT user_id, last_delivered_seq, last_read_seq FROM chat_members WHERE chat_id = $1 ORDER BY user_id";

int chats_receipts(struct req *r)
{
    struct member m;
    if (load_member(r, 0, &m) < 0)
        return -1;
    char c[24];
    const char *vals[1] = {i64s(c, m.chat_id)};
    PGresult *res = req_sql(r, NULL, sql_receipts, 1, vals);
    if (!res)
        return -1;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, json_pack("{s:I,s:I,s:I}", "user_id", (json_int_t)db_i64(res, i, 0),
                                             "last_delivered_seq", (json_int_t)db_i64(res, i, 1), "last_read_seq",
                                             (json_int_t)db_i64(res, i, 2)));
    return reply_json(r, 200, json_pack("{s:o}", "receipts", arr));
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
