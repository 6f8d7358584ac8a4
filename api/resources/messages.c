/*
 * messages.c — sending (ordered, idempotent, durable before 201), history
 * with keyset pagination bounded by count and bytes, edit, delete
 * (tombstones). Reactions are in reactions.c.
 *
 * Send protocol (invariants 1–3 of DESIGN.md): the handler validates the
 * body at the edge; a message that mentions, replies or attaches has those
 * checked here against the member's view of the chat (a retry of a stored
 * message is answered first). Then the send goes to the commit pipeline
 * (chat/pipeline.h), which writes it with everything else that queued in one
 * transaction — idempotency, membership, the chat's next seq, the message,
 * outbox and inbox rows, the read marker — and answers after COMMIT: 201, 200
 * for a retry (409 if the content differs), 404 for a non-member.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apilimits.h"
#include "app.h"
#include "chat.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "log.h"
#include "resources.h"
#include "sends.h"
#include "tx.h"
#include "util.h"

/* ======================================================================
 * Send
 * ====================================================================== */

static const char sql_existing[] =
    "SELECT body_sha256, " MSG_COLS_CHAT("$3", "$1") " FROM messages"
    " WHERE chat_id = $1 AND sender_id = $3 AND client_msg_id = $2";
static const char sql_mentions_members[] =
    "SELECT count(*) FROM chat_members WHERE chat_id = $1 AND user_id = ANY($2::bigint[])";
static const char sql_reply_visible[] = "SELECT 1 FROM messages WHERE chat_id = $1 AND seq = $2 AND seq > $3";
static const char sql_attachments_ok[] =
    "SELECT count(*) FROM attachments WHERE chat_id = $1 AND id = ANY($2::uuid[]) AND uploader_id = $3"
    " AND status = 'uploaded'";

/* Canonical content of a send, for idempotency: same id + same content = retry. */
static void content_hash(const char *text, json_t *reply, const char *mentions, const char *atts, char out[65])
{
    json_t *c = json_pack("{s:s,s:O,s:s,s:s}", "t", text, "r", reply ? reply : json_null(), "m", mentions, "a", atts);
    char *s = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    sha256_hex(s, strlen(s), out);
    free(s);
    json_decref(c);
}

/* Answers a send whose client_msg_id is already stored: 200 + the original,
 * or 409 when the content differs. */
static int reply_existing(struct req *r, PGresult *ex, const char *hash)
{
    if (strcmp(PQgetvalue(ex, 0, 0), hash) != 0)
        return reply_problem(r, 409, "idempotency_conflict",
                             "this client_msg_id was already used for a different message");
    return reply_json(r, 200, msg_json(ex, 0, 1));
}

/* "{a,b}" literal of the uuids (validated, lowercased), duplicates dropped,
 * in the client's order: the order of a message's attachments is content. */
static const char *uuid_array(struct req *r, json_t *arr, int *n_out)
{
    size_t n = json_array_size(arr), i;
    char *out = xmalloc(n * 38 + 3);
    size_t len = 0;
    int m = 0;
    json_t *it;
    out[len++] = '{';
    json_array_foreach(arr, i, it) {
        const char *s = json_string_value(it);
        if (!s || !uuid_valid(s)) {
            free(out);
            return NULL;
        }
        char v[37];
        for (int c = 0; c < 36; c++)
            v[c] = (char)((s[c] >= 'A' && s[c] <= 'F') ? s[c] + 32 : s[c]);
        v[36] = '\0';
        out[len] = '\0';
        if (strstr(out, v)) /* at most 10 ids: a scan is fine */
            continue;
        len += (size_t)sprintf(out + len, "%s%s", m ? "," : "", v);
        m++;
    }
    out[len++] = '}';
    out[len] = '\0';
    *n_out = m;
    return req_own(r, out);
}

/* The pipeline's answer, on its committer thread (see pipeline.h). */
static void send_done(struct send *s)
{
    struct req *r = s->it.r;
    char loc[80];
    if (s->status != SEND_NEW)
        limit_refund(r, LIMIT_SEND); /* only a new message costs: retries and failures are free */
    switch (s->status) {
    case SEND_NEW:
        snprintf(loc, sizeof loc, "/v1/chats/%lld/messages/%lld", (long long)s->chat_id, (long long)s->seq);
        req_add_header(r, "Location", loc);
        reply_json(r, 201, json_incref(s->message));
        return;
    case SEND_EXISTING:
        if (strcmp(s->stored_hash, s->hash) != 0)
            reply_problem(r, 409, "idempotency_conflict",
                          "this client_msg_id was already used for a different message");
        else
            reply_json(r, 200, json_incref(s->message));
        return;
    case SEND_NOT_MEMBER:
        reply_problem(r, 404, "chat_not_found", "no such chat");
        return;
    case SEND_FAILED:
        nlog(LOG_ERROR, "send failed in its batch",
             json_pack("{s:s,s:s}", "request_id", r->request_id, "sqlstate", s->sqlstate));
        if (strncmp(s->sqlstate, "40", 2) == 0 || strncmp(s->sqlstate, "55", 2) == 0) {
            req_add_header(r, "Retry-After", "1");
            reply_problem(r, 503, "service_unavailable", "a concurrent update conflicted; retry");
        } else {
            reply_problem(r, 500, "internal_error", "the message could not be stored");
        }
        return;
    case SEND_UNAVAILABLE:
        req_add_header(r, "Retry-After", "1");
        reply_problem(r, 503, "service_unavailable", "the database is unavailable; retry shortly");
        return;
    }
}

/* Before an input error is answered: a non-member gets 404, as for anything
 * about a chat they are not in. 0 when the caller may answer its error. */
static int member_first(struct req *r)
{
    struct member m;
    return load_member(r, 0, &m);
}

int messages_send(struct req *r)
{
    static const struct jfield fields[] = {
        {"client_msg_id", JT_STRING, 1, 36, 36, 0},
        {"text", JT_STRING, 1, 1, MESSAGE_MAX_CHARS, 0},
        {"reply_to_seq", JT_INT, 0, 1, INT64_MAX, JF_NULLABLE},
        {"mentions", JT_ARRAY, 0, 0, MAX_MENTIONS, 0},
        {"attachment_ids", JT_ARRAY, 0, 0, MAX_ATTACHMENTS, 0},
    };
    struct member m = {0};
    struct jsonv_error e;
    if (!parse_i64(req_param(r, 0), &m.chat_id) || m.chat_id <= 0)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return member_first(r) < 0 ? -1 : reply_invalid(r, &e);
    const char *cmid = json_string_value(json_object_get(r->json, "client_msg_id"));
    if (!uuid_valid(cmid))
        return member_first(r) < 0
                   ? -1
                   : reply_field(r, 422, "validation_failed", "client_msg_id", "%s", "client_msg_id must be a UUID");
    const char *text = json_string_value(json_object_get(r->json, "text"));
    json_t *reply = json_object_get(r->json, "reply_to_seq");
    if (json_is_null(reply))
        reply = NULL;
    /* mentions: positive ids, sorted and de-duplicated */
    int64_t ment[MAX_MENTIONS];
    size_t nm = 0, i;
    json_t *it, *jm = json_object_get(r->json, "mentions");
    json_array_foreach(jm, i, it) {
        if (!json_is_integer(it) || json_integer_value(it) <= 0)
            return member_first(r) < 0
                       ? -1
                       : reply_field(r, 422, "validation_failed", "mentions", "%s", "mentions must be user ids");
        int64_t v = json_integer_value(it);
        size_t k = 0;
        while (k < nm && ment[k] < v)
            k++;
        if (k < nm && ment[k] == v)
            continue;
        memmove(ment + k + 1, ment + k, (nm - k) * sizeof *ment);
        ment[k] = v;
        nm++;
    }
    const char *mentions = req_id_array(r, ment, nm);
    int na = 0;
    json_t *ja = json_object_get(r->json, "attachment_ids");
    const char *atts = ja ? uuid_array(r, ja, &na) : "{}";
    if (!atts)
        return member_first(r) < 0
                   ? -1
                   : reply_field(r, 422, "validation_failed", "attachment_ids", "%s", "attachment_ids must be UUIDs");
    char *hash = req_own(r, xmalloc(65));
    content_hash(text, reply, mentions, atts, hash);

    if (nm > 0 || reply || na > 0) {
        /* what the message refers to is checked here, as the member sees the
         * chat; a retry of a stored message is answered first, as always */
        char c[24], u[24], rt[24], js[24];
        if (load_member(r, 0, &m) < 0)
            return -1;
        i64s(c, m.chat_id);
        i64s(u, r->user_id);
        const char *ve[3] = {c, cmid, u};
        PGresult *ex = req_sql(r, NULL, sql_existing, 3, ve);
        if (!ex)
            return -1;
        if (PQntuples(ex) == 1)
            return reply_existing(r, ex, hash);
        if (nm > 0) {
            const char *vm[2] = {c, mentions};
            PGresult *mm = req_sql(r, NULL, sql_mentions_members, 2, vm);
            if (!mm)
                return -1;
            if ((size_t)db_i64(mm, 0, 0) != nm)
                return reply_field(r, 422, "validation_failed", "mentions", "%s",
                                   "every mentioned user must be a member of the chat");
        }
        if (reply) {
            const char *vr[3] = {c, i64s(rt, json_integer_value(reply)), i64s(js, m.joined_seq)};
            PGresult *rr = req_sql(r, NULL, sql_reply_visible, 3, vr);
            if (!rr)
                return -1;
            if (PQntuples(rr) != 1)
                return reply_field(r, 422, "validation_failed", "reply_to_seq", "%s",
                                   "reply_to_seq must name a message of this chat you can see");
        }
        if (na > 0) {
            const char *va[3] = {c, atts, u};
            PGresult *ar = req_sql(r, NULL, sql_attachments_ok, 3, va);
            if (!ar)
                return -1;
            if (db_i64(ar, 0, 0) != na)
                return reply_field(r, 422, "validation_failed", "attachment_ids", "%s",
                                   "attachments must be uploaded by you to this chat");
        }
    }

    /* the rate limit, in memory: a hash and a lock. A retry of a message that
     * is already stored is answered rather than refused (the refs check
     * above has looked for one already); one that reaches the pipeline is
     * refunded in send_done. */
    int wait = limit_try(r, LIMIT_SEND);
    if (wait) {
        if (!(nm > 0 || reply || na > 0)) {
            char c[24], u[24];
            if (load_member(r, 0, &m) < 0)
                return -1;
            const char *ve[3] = {i64s(c, m.chat_id), cmid, i64s(u, r->user_id)};
            PGresult *ex = req_sql(r, NULL, sql_existing, 3, ve);
            if (!ex)
                return -1;
            if (PQntuples(ex) == 1)
                return reply_existing(r, ex, hash);
        }
        return limit_refuse(r, LIMIT_SEND, wait);
    }
    struct send *s = xcalloc(1, sizeof *s);
    req_defer(r, free, s);
    *s = (struct send){
        .chat_id = m.chat_id,
        .sender_id = r->user_id,
        .reply_to = reply ? json_integer_value(reply) : 0,
        .client_msg_id = cmid,
        .text = text,
        .mentions = mentions,
        .attachments = atts,
        .hash = hash,
        .done = send_done,
    };
    if (!sends_submit(r, s)) {
        limit_refund(r, LIMIT_SEND);
        req_add_header(r, "Retry-After", "1");
        return reply_problem(r, 503, "service_unavailable", "the server is busy; retry shortly");
    }
    return 0; /* handed off: send_done answers */
}

/* ======================================================================
 * History
 * ====================================================================== */

static const char sql_page_before[] =
    "SELECT " MSG_COLS_CHAT("$5", "$1") " FROM messages WHERE chat_id = $1 AND seq > $2 AND seq < $3"
    " ORDER BY seq DESC LIMIT $4";
static const char sql_page_after[] =
    "SELECT " MSG_COLS_CHAT("$5", "$1") " FROM messages WHERE chat_id = $1 AND seq > GREATEST($2::bigint, $3::bigint)"
    " ORDER BY seq ASC LIMIT $4";

int messages_list(struct req *r)
{
    struct member m;
    int64_t before = 0, after = 0, limit = PAGE_DEFAULT;
    bool has_before, has_after, has_limit;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (req_query_int(r, "before", 1, INT64_MAX, &before, &has_before) < 0 ||
        req_query_int(r, "after", 0, INT64_MAX, &after, &has_after) < 0 ||
        req_query_int(r, "limit", 1, PAGE_MAX, &limit, &has_limit) < 0)
        return -1;
    if (has_before && has_after)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "before"),
                                 "use before or after, not both");
    bool desc = !has_after;
    if (!has_before)
        before = INT64_MAX;
    char c[24], js[24], cur[24], lim[24], u[24];
    const char *vals[5] = {i64s(c, m.chat_id), i64s(js, m.joined_seq), desc ? i64s(cur, before) : i64s(cur, after),
                           i64s(lim, limit), i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, desc ? sql_page_before : sql_page_after, 5, vals);
    if (!res)
        return -1;
    int n = PQntuples(res);
    /* keep rows (newest-first for `before`) until the byte budget is spent;
     * always at least one, so a page always makes progress */
    int take = 0;
    int64_t bytes = 0;
    while (take < n) {
        int64_t b = db_i64(res, take, MSG_COL_BYTES);
        if (take > 0 && bytes + b > PAGE_BYTES)
            break;
        bytes += b;
        take++;
    }
    json_t *arr = json_array();
    int64_t lo = 0, hi = 0;
    for (int k = 0; k < take; k++) {
        int row = desc ? take - 1 - k : k; /* ascending seq in the reply */
        json_array_append_new(arr, msg_json(res, row, 0));
        int64_t s = db_i64(res, row, 1);
        if (k == 0)
            lo = s;
        hi = s;
    }
    /* seqs are gap-free and rows are never removed (deletes leave tombstones),
     * so what lies beyond the page follows from the numbers alone */
    int64_t head = m.last_seq > hi ? m.last_seq : hi;
    json_t *prev = take > 0 && lo > m.joined_seq + 1 ? json_integer(lo) : json_null();
    json_t *next = take > 0 && hi < head ? json_integer(hi) : json_null();
    return reply_json(r, 200, json_pack("{s:o,s:o,s:o}", "messages", arr, "prev_cursor", prev, "next_cursor", next));
}

static const char sql_one[] =
    "SELECT " MSG_COLS_CHAT("$4", "$1") " FROM messages WHERE chat_id = $1 AND seq = $2 AND seq > $3";

int messages_get(struct req *r)
{
    struct member m;
    int64_t seq;
    if (load_member(r, 0, &m) < 0 || parse_seq(r, 1, &seq) < 0)
        return -1;
    char c[24], s[24], js[24], u[24];
    const char *vals[4] = {i64s(c, m.chat_id), i64s(s, seq), i64s(js, m.joined_seq), i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, sql_one, 4, vals);
    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        return reply_problem(r, 404, "message_not_found", "no such message");
    return reply_json(r, 200, msg_json(res, 0, 0));
}

/* ======================================================================
 * Edit, delete
 * ====================================================================== */

static const char sql_edit[] =
    "UPDATE messages SET body = $3, edited_at = now() WHERE chat_id = $1 AND seq = $2 RETURNING " MSG_COLS("$4");
/* Citus allows only IMMUTABLE functions in RETURNING, and MSG_COLS has STABLE ones
 * (to_char, to_json, json_build_object): there the edited row is read again (sql_one) in the
 * same transaction */
static const char sql_edit_citus[] = "UPDATE messages SET body = $3, edited_at = now() WHERE chat_id = $1 AND seq = $2";
static const char sql_tombstone[] =
    "UPDATE messages SET body = NULL, mentions = '{}', attachment_ids = '{}', deleted_at = now()"
    " WHERE chat_id = $1 AND seq = $2";
static const char sql_drop_reactions[] = "DELETE FROM reactions WHERE chat_id = $1 AND seq = $2";

int messages_edit(struct req *r)
{
    static const struct jfield fields[] = {{"text", JT_STRING, 1, 1, MESSAGE_MAX_CHARS, 0}};
    struct member m;
    struct jsonv_error e;
    struct locked_msg lm;
    int64_t seq;
    if (limit_take(r, LIMIT_EDIT) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0 || parse_seq(r, 1, &seq) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    if (req_begin(r) < 0 || lock_message(r, &m, seq, &lm) < 0)
        return -1;
    if (lm.system || lm.sender_id != r->user_id)
        return reply_problem(r, 403, "forbidden", "only the sender can edit a message");
    if (lm.deleted)
        return reply_problem(r, 409, "message_deleted", "the message was deleted");
    char c[24], s[24], u[24], js[24];
    const char *vals[4] = {i64s(c, m.chat_id), i64s(s, seq), json_string_value(json_object_get(r->json, "text")),
                           i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, db_citus() ? sql_edit_citus : sql_edit, db_citus() ? 3 : 4, vals);
    if (res && db_citus()) {
        const char *one[4] = {c, s, i64s(js, m.joined_seq), u};
        res = req_sql(r, NULL, sql_one, 4, one);
    }
    if (!res)
        return -1;
    if (PQntuples(res) != 1) /* lock_message found it, under the lock: cannot happen */
        return reply_problem(r, 404, "message_not_found", "no such message");
    json_t *msg = req_own_json(r, msg_json(res, 0, 0));
    /* reactions[].me is the editor's view: not for an event every member gets */
    json_t *shared = req_own_json(r, json_deep_copy(msg));
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(shared, "reactions"), i, it)
        json_object_del(it, "me");
    json_t *ev = req_own_json(r, json_pack("{s:I,s:O}", "chat_id", (json_int_t)m.chat_id, "message", shared));
    if (inbox_emit(r, m.chat_id, "edit", INBOX_MEMBERS, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_json(r, 200, json_incref(msg));
}

int messages_delete(struct req *r)
{
    struct member m;
    struct locked_msg lm;
    int64_t seq;
    if (limit_take(r, LIMIT_EDIT) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0 || parse_seq(r, 1, &seq) < 0)
        return -1;
    if (req_begin(r) < 0 || lock_message(r, &m, seq, &lm) < 0)
        return -1;
    bool mine = !lm.system && lm.sender_id == r->user_id;
    if (!mine && !(!m.direct && member_is_admin(&m)))
        return reply_problem(r, 403, "forbidden", "only the sender or a group admin can delete a message");
    if (lm.deleted) { /* deleting a tombstone again changes nothing */
        if (req_commit(r) < 0)
            return -1;
        return reply_empty(r, 204);
    }
    char c[24], s[24];
    const char *vals[2] = {i64s(c, m.chat_id), i64s(s, seq)};
    if (!req_sql(r, NULL, sql_tombstone, 2, vals) || !req_sql(r, NULL, sql_drop_reactions, 2, vals))
        return -1;
    json_t *ev = req_own_json(r, json_pack("{s:I,s:I,s:I}", "chat_id", (json_int_t)m.chat_id, "seq", (json_int_t)seq,
                                           "actor_id", (json_int_t)r->user_id));
    if (inbox_emit(r, m.chat_id, "delete", INBOX_MEMBERS, NULL, ev) < 0 || req_commit(r) < 0)
        return -1;
    return reply_empty(r, 204);
}
