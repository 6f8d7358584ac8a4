/*
 * readmarks.c — the read-marker pipeline's batch (see readmarks.h). Four
 * round trips whatever the batch's size: BEGIN, natter_read_batch(…), the
 * unread counts, COMMIT. Any failure before COMMIT answers the whole batch
 * 503: moving a marker again is harmless (it only moves forward).
 */
#include "readmarks.h"

#include <stdlib.h>
#include <string.h>

#include "chat_sql.h"
#include "db.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "util.h"
#include "wake.h"

static const char sql_batch[] =
    "SELECT i, status, w_user, w_seq, w_chat, w_data, w_at"
    " FROM natter_read_batch($1::bigint[], $2::bigint[], $3::bigint[])";
/* the same on Citus (migrations/015: row locks one shard at a time) */
static const char sql_batch_citus[] =
    "SELECT i, status, w_user, w_seq, w_chat, w_data, w_at"
    " FROM natter_read_batch_citus($1::bigint[], $2::bigint[], $3::bigint[])";
/* the answer of each request: the marker and the unread counts after the batch */
static const char sql_unread[] = "SELECT b.i, cm.last_read_seq, " CHAT_SQL_UNREAD ", " CHAT_SQL_UNREAD_MENTIONS
                                 " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS b(i, chat, usr)"
                                 " JOIN chat_members cm ON cm.chat_id = b.chat AND cm.user_id = b.usr";
/* the same on Citus, one chat ($4) at a time: a subquery that reaches the chat only
 * through the outer row makes the statement run on every shard */
static const char sql_unread_citus[] =
    "SELECT b.i, cm.last_read_seq, " CHAT_SQL_UNREAD_IN("$4::bigint") ", " CHAT_SQL_UNREAD_MENTIONS_IN("$4::bigint")
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS b(i, chat, usr)"
    " JOIN chat_members cm ON cm.chat_id = b.chat AND cm.user_id = b.usr WHERE cm.chat_id = $4::bigint";

static struct pipeline *pipe_reads;
static struct redis_pool *redis;

/* What the courier enqueues after a batch: one push_badge job per read. */
struct badge_post {
    int64_t *users, *devices, *chats;
    size_t n;
};
static const struct evmeta no_message = {0, 0}; /* receipts carry no message */

static enum read_status status_of(const char *s)
{
    if (strcmp(s, "ok") == 0)
        return READ_OK;
    if (strcmp(s, "beyond") == 0)
        return READ_BEYOND;
    return READ_NOT_MEMBER;
}

/* The batch's statuses and receipts; on success *wakes holds the receipts. */
static bool mark(struct db_session *db, struct read_op **v, size_t n, struct wake **wakes, size_t *nwakes)
{
    int64_t *c = xmalloc(n * sizeof *c), *u = xmalloc(n * sizeof *u), *s = xmalloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++) {
        c[i] = v[i]->chat_id;
        u[i] = v[i]->user_id;
        s[i] = v[i]->seq;
    }
    char *ac = db_id_array(c, n), *au = db_id_array(u, n), *as = db_id_array(s, n);
    const char *vals[3] = {ac, au, as};
    PGresult *res = db_session_exec(db, db_citus() ? sql_batch_citus : sql_batch, 3, vals);
    bool ok = db_res_ok(res);
    size_t statuses = 0;
    *nwakes = 0;
    *wakes = xmalloc(((size_t)(ok ? PQntuples(res) : 0) + 1) * sizeof **wakes);
    for (int row = 0; ok && row < PQntuples(res); row++) {
        if (!PQgetisnull(res, row, 0)) {
            int64_t i = db_i64(res, row, 0) - 1; /* WITH ORDINALITY counts from 1 */
            ok = i >= 0 && (size_t)i < n;
            if (ok) {
                v[i]->status = status_of(PQgetvalue(res, row, 1));
                statuses++;
            }
            continue;
        }
        (*wakes)[(*nwakes)++] = (struct wake){db_i64(res, row, 2), db_i64(res, row, 3),
                                              evbody_new("receipt", db_i64(res, row, 4), PQgetvalue(res, row, 6),
                                                         PQgetvalue(res, row, 5), (size_t)PQgetlength(res, row, 5),
                                                         &no_message)};
    }
    ok = ok && statuses == n;
    if (!ok)
        nlog(LOG_ERROR, "readmarks: natter_read_batch failed",
             json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn)));
    PQclear(res);
    free(ac);
    free(au);
    free(as);
    free(c);
    free(u);
    free(s);
    return ok;
}

/* The marker and unread counts of every request that was ok (of chat `only`; 0:
 * of every chat). */
static bool answers_of(struct db_session *db, struct read_op **v, size_t n, int64_t only)
{
    int64_t *idx = xmalloc(n * sizeof *idx), *c = xmalloc(n * sizeof *c), *u = xmalloc(n * sizeof *u);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i]->status == READ_OK && (only == 0 || v[i]->chat_id == only)) {
            idx[k] = (int64_t)i;
            c[k] = v[i]->chat_id;
            u[k++] = v[i]->user_id;
        }
    bool ok = true;
    if (k > 0) {
        char *ai = db_id_array(idx, k), *ac = db_id_array(c, k), *au = db_id_array(u, k);
        char one[24];
        const char *vals[4] = {ai, ac, au, i64s(one, only)};
        PGresult *res = db_session_exec(db, only ? sql_unread_citus : sql_unread, only ? 4 : 3, vals);
        ok = db_res_ok(res) && (size_t)PQntuples(res) == k;
        for (int row = 0; ok && row < PQntuples(res); row++) {
            int64_t i = db_i64(res, row, 0);
            ok = i >= 0 && (size_t)i < n;
            if (ok) {
                v[i]->last_read_seq = db_i64(res, row, 1);
                v[i]->unread = db_i64(res, row, 2);
                v[i]->unread_mentions = db_i64(res, row, 3);
            }
        }
        if (!ok)
            nlog(LOG_ERROR, "readmarks: unread counts failed",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn)));
        PQclear(res);
        free(ai);
        free(ac);
        free(au);
    }
    free(idx);
    free(c);
    free(u);
    return ok;
}

/* The answers of the batch; on Citus one chat at a time (each statement one shard's). */
static bool answers(struct db_session *db, struct read_op **v, size_t n)
{
    if (!db_citus())
        return answers_of(db, v, n, 0);
    for (size_t i = 0; i < n; i++) {
        bool first = v[i]->status == READ_OK; /* the first ok request of its chat */
        for (size_t j = 0; j < i && first; j++)
            first = !(v[j]->status == READ_OK && v[j]->chat_id == v[i]->chat_id);
        if (first && !answers_of(db, v, n, v[i]->chat_id))
            return false;
    }
    return true;
}

/* pipe_ops.commit: BEGIN … COMMIT of one batch of read markers. */
static bool commit_reads(struct db_session *db, struct pipe_item **items, size_t n, struct pipe_result *out)
{
    struct read_op **v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (struct read_op *)items[i]; /* it is the first member of struct read_op */
    struct wake *wakes = NULL;
    size_t nwakes = 0;
    bool ok = pipeline_exec(db->conn, "BEGIN") && mark(db, v, n, &wakes, &nwakes) && answers(db, v, n) &&
              pipeline_exec(db->conn, "COMMIT");
    free(v);
    if (!ok) {
        wakes_unref(wakes, nwakes);
        free(wakes);
        return false;
    }
    struct badge_post *bp = xcalloc(1, sizeof *bp);
    bp->users = xmalloc(n * sizeof *bp->users);
    bp->devices = xmalloc(n * sizeof *bp->devices);
    bp->chats = xmalloc(n * sizeof *bp->chats);
    for (size_t i = 0; i < n; i++) {
        struct read_op *op = (struct read_op *)items[i];
        if (op->status == READ_OK && op->device_id > 0) {
            bp->users[bp->n] = op->user_id;
            bp->devices[bp->n] = op->device_id;
            bp->chats[bp->n++] = op->chat_id;
        }
    }
    *out = (struct pipe_result){wakes, nwakes, bp};
    return true;
}

static void badge_post_free(void *p)
{
    struct badge_post *bp = p;
    free(bp->users);
    free(bp->devices);
    free(bp->chats);
    free(bp);
}

/* pipe_ops.post: the badge updates (Redis down: they are skipped; the next
 * message push carries the badge anyway). */
static void badge_post_run(void *p)
{
    struct badge_post *bp = p;
    if (redis)
        jobs_push_badges(redis, bp->users, bp->devices, bp->chats, bp->n);
    badge_post_free(bp);
}

static void read_unavailable(struct pipe_item *it)
{
    ((struct read_op *)it)->status = READ_UNAVAILABLE;
}

static void read_done(struct pipe_item *it)
{
    struct read_op *op = (struct read_op *)it;
    op->done(op);
}

static const struct pipe_ops ops = {
    .name = "readmarks",
    .max_batch = READMARKS_MAX_BATCH,
    .max_bytes = READMARKS_MAX_BATCH,
    .commit = commit_reads,
    .unavailable = read_unavailable,
    .done = read_done,
    .post = badge_post_run,
    .post_free = badge_post_free,
};

int readmarks_start(const struct config *cfg, struct redis_pool *rp)
{
    redis = rp;
    pipe_reads = pipeline_start(&ops, cfg, 1);
    return pipe_reads ? 0 : -1;
}

void readmarks_stop(void)
{
    pipeline_stop(pipe_reads);
}

void readmarks_free(void)
{
    pipeline_free(pipe_reads);
    pipe_reads = NULL;
}

bool readmarks_submit(struct req *r, struct read_op *op)
{
    op->it.r = r;
    op->it.bytes = 1;
    return pipe_reads && pipeline_submit(pipe_reads, &op->it);
}

void readmarks_stats(struct pipeline_stats *out)
{
    pipeline_stats(pipe_reads, out);
}
