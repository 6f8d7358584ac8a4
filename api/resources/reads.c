/*
 * reads.c — read markers (POST /v1/chats/{id}/read: forward only, with
 * `receipt` events to the senders; written in batches by readmarks.h) and the
 * receipts of a chat.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "readmarks.h"
#include "resources.h"
#include "tx.h"
#include "util.h"

/* The pipeline's answer, on its committer thread (see readmarks.h). */
static void read_done(struct read_op *op)
{
    struct req *r = op->it.r;
    switch (op->status) {
    case READ_OK:
        reply_json(r, 200,
                   json_pack("{s:I,s:I,s:I,s:I}", "chat_id", (json_int_t)op->chat_id, "last_read_seq",
                             (json_int_t)op->last_read_seq, "unread_count", (json_int_t)op->unread, "unread_mentions",
                             (json_int_t)op->unread_mentions));
        return;
    case READ_NOT_MEMBER:
        reply_problem(r, 404, "chat_not_found", "no such chat");
        return;
    case READ_BEYOND:
        reply_field(r, 422, "validation_failed", "seq", "%s", "seq is beyond the newest message of the chat");
        return;
    case READ_UNAVAILABLE:
        req_add_header(r, "Retry-After", "1");
        reply_problem(r, 503, "service_unavailable", "the database is unavailable; retry shortly");
        return;
    }
}

/* Read markers go through their pipeline (readmarks.h): membership, the
 * bound and the move are decided in the batch. */
int chats_read(struct req *r)
{
    static const struct jfield fields[] = {{"seq", JT_INT, 1, 0, INT64_MAX, 0}};
    struct jsonv_error e;
    int64_t chat_id = 0;
    if (!parse_i64(req_param(r, 0), &chat_id) || chat_id <= 0)
        return reply_problem(r, 404, "chat_not_found", "no such chat");
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0) {
        struct member m; /* a non-member gets 404 before any input error */
        return load_member(r, 0, &m) < 0 ? -1 : reply_invalid(r, &e);
    }
    struct read_op *op = xcalloc(1, sizeof *op);
    req_defer(r, free, op);
    *op = (struct read_op){
        .chat_id = chat_id,
        .user_id = r->user_id,
        .device_id = r->device_id,
        .seq = json_integer_value(json_object_get(r->json, "seq")),
        .done = read_done,
    };
    if (!readmarks_submit(r, op)) {
        req_add_header(r, "Retry-After", "1");
        return reply_problem(r, 503, "service_unavailable", "the server is busy; retry shortly");
    }
    return 0; /* handed off: read_done answers */
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
        json_array_append_new(arr,
                              json_pack("{s:I,s:I,s:I}", "user_id", (json_int_t)db_i64(res, i, 0), "last_delivered_seq",
                                        (json_int_t)db_i64(res, i, 1), "last_read_seq", (json_int_t)db_i64(res, i, 2)));
    return reply_json(r, 200, json_pack("{s:o}", "receipts", arr));
}
