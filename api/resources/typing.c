/*
 * typing.c — POST /v1/chats/{id}/typing {"typing": true|false}: the other
 * members get an ephemeral `typing` event (realtime/typing.h), never stored.
 * Per-user rate limit (LIMIT_TYPING), then coalescing: a repeat of the state
 * sent on within NATTER_TYPING_COALESCE_MS is answered 204 and not sent again.
 */
#include <stdlib.h>

#include "apilimits.h"
#include "app.h"
#include "chat.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "jsonv.h"
#include "resources.h"
#include "tx.h"
#include "typing.h"
#include "util.h"

static const char sql_others[] = "SELECT user_id FROM chat_members WHERE chat_id = $1 AND user_id <> $2";

int chats_typing(struct req *r)
{
    static const struct jfield fields[] = {{"typing", JT_BOOL, 1, 0, 0, 0}};
    struct member m;
    struct jsonv_error e;
    if (limit_take(r, LIMIT_TYPING) < 0)
        return -1;
    if (load_member(r, 0, &m) < 0)
        return -1;
    if (jsonv_check(r->json, fields, JSONV_COUNT(fields), &e) < 0)
        return reply_invalid(r, &e);
    bool typing = json_is_true(json_object_get(r->json, "typing"));
    if (!typing_due(m.chat_id, r->user_id, typing, (int64_t)(now_us() / 1000), r->app->cfg->typing_coalesce_ms))
        return reply_empty(r, 204); /* the others were told this state moments ago */
    char c[24], u[24];
    const char *vals[2] = {i64s(c, m.chat_id), i64s(u, r->user_id)};
    PGresult *res = req_sql(r, NULL, sql_others, 2, vals);
    if (!res)
        return -1;
    size_t n = (size_t)PQntuples(res);
    int64_t *to = xmalloc((n ? n : 1) * sizeof *to);
    for (size_t i = 0; i < n; i++)
        to[i] = db_i64(res, (int)i, 0);
    typing_announce(m.chat_id, r->user_id, typing, to, n);
    free(to);
    return reply_empty(r, 204);
}
