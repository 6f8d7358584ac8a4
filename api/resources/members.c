/*
 * members.c — a group's members and their roles: list, add, remove (or
 * leave), change role. Each change writes a system message and a
 * `membership` event in the same transaction (membership.h: lock order).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apilimits.h"
#include "auth.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

#define MEMBER_COLS                                                                 \
    "u.id, u.username, u.display_name, " DB_TS("u.created_at") ", cm.role, " DB_TS( \
        "cm.joined_at") ", cm.last_read_seq, cm.last_delivered_seq"

/* The chat's member rows (one shard with Citus) are read first, as a materialized
 * CTE, and users joined to them: users is distributed by its id, another
 * co-location group, and Citus joins it with chat_members only through such an
 * intermediate result. Plain PostgreSQL plans the same nested loop either way. */
static const char sql_members[] =
    "WITH cm AS MATERIALIZED (SELECT user_id, role, joined_at, last_read_seq, last_delivered_seq"
    "   FROM chat_members WHERE chat_id = $1 AND ($2::bigint[] IS NULL OR user_id = ANY($2::bigint[])))"
    " SELECT " MEMBER_COLS " FROM cm JOIN users u ON u.id = cm.user_id ORDER BY u.id";

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
    if (limit_take(r, LIMIT_MEMBER) < 0)
        return -1;
    int64_t ids[100];
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    int n = read_ids(json_object_get(r->json, "user_ids"), ids, 99);
    if (n < 0)
        return reply_field(r, 422, "validation_failed", "user_ids", "%s", "user_ids must be positive user ids");
    if (m.direct)
        return reply_problem(r, 409, "not_a_group", "members of a direct chat cannot change");
    if (!member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can add members");
    if (check_users_exist(r, req_id_array(r, ids, (size_t)n), (size_t)n, "user_ids") < 0)
        return -1;
    if (req_begin(r) < 0 || lock_chat(r, &m) < 0)
        return -1;
    /* under the chat lock: the role may have changed, and two admins adding
     * at once are serialised here, so the limit holds */
    if (!member_is_admin(&m))
        return reply_problem(r, 403, "forbidden", "only owners and admins can add members");
    char c[24], js[24];
    const char *v2[3] = {i64s(c, m.chat_id), req_id_array(r, ids, (size_t)n), NULL};
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
    const char *arr = req_id_array(r, added, (size_t)nf);
    const char *v3[3] = {c, arr, i64s(js, m.last_seq)};
    if (!req_sql(r, NULL, sql_add_members, 3, v3))
        return -1;
    json_t *uids = ids_json(added, (size_t)nf);
    json_t *sys = json_pack("{s:s,s:I,s:O}", "event", "members_added", "actor_id", (json_int_t)r->user_id, "user_ids",
                            uids);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:O,s:I}", "chat_id", (json_int_t)m.chat_id, "action", "added",
                                           "user_ids", uids, "actor_id", (json_int_t)r->user_id));
    json_decref(uids);
    if (system_message(r, m.chat_id, "added members", sys, NULL) < 0 ||
        inbox_emit(r, m.chat_id, "membership", INBOX_MEMBERS, NULL, ev) < 0 || req_commit(r) < 0)
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
    return inbox_emit(r, chat_id, "membership", INBOX_MEMBERS, NULL, ev);
}

int members_remove(struct req *r)
{
    struct member m;
    int64_t target;
    char role[16];
    if (limit_take(r, LIMIT_MEMBER) < 0)
        return -1;
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
    const char *removed = req_id_array(r, &target, 1);
    /* the removed user gets the membership event after the members got the
     * system message: lock everyone in id order first */
    if (lock_users(r, m.chat_id, INBOX_MEMBERS, removed) < 0)
        return -1;
    json_t *sys = json_pack("{s:s,s:I,s:[I]}", "event", self ? "member_left" : "member_removed", "actor_id",
                            (json_int_t)r->user_id, "user_ids", (json_int_t)target);
    json_t *ev = req_own_json(r, json_pack("{s:I,s:s,s:[I],s:I}", "chat_id", (json_int_t)m.chat_id, "action",
                                           self ? "left" : "removed", "user_ids", (json_int_t)target, "actor_id",
                                           (json_int_t)r->user_id));
    if (system_message(r, m.chat_id, self ? "left the group" : "removed a member", sys, NULL) < 0 ||
        inbox_emit(r, m.chat_id, "membership", INBOX_MEMBERS, removed, ev) < 0)
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
    if (limit_take(r, LIMIT_MEMBER) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (!parse_i64(req_param(r, 1), &target) || target <= 0)
        return reply_problem(r, 404, "member_not_found", "that user is not a member of this chat");
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
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
    const char *only = req_id_array(r, &target, 1);
    const char *mv[2] = {c, only};
    PGresult *res = req_sql(r, NULL, sql_members, 2, mv);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "member_not_found", "that user is not a member of this chat");
    return reply_json(r, 200, member_json(res, 0));
}
