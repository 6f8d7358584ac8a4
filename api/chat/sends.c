/*
 * sends.c — the send pipeline's batch (see sends.h). One batch is five round
 * trips whatever its size: BEGIN, natter_send_batch_set($batch), the Message
 * rows, the inbox fan-out, COMMIT. Any failure before COMMIT rolls the whole
 * batch back and answers every send of it 503 (Retry-After): a client retry
 * with the same client_msg_id is safe whether or not a lost COMMIT reached
 * the disk.
 */
#include "sends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "message.h"
#include "util.h"
#include "wake.h"

/* the whole batch in a few set-based statements (migrations/007) ... */
static const char sql_batch_set[] = "SELECT i, status, seq, body_sha256 FROM natter_send_batch_set($1::jsonb)";
/* ... and, only when that raised, one message at a time in subtransactions
 * (migrations/004), so that the message the database refuses fails alone */
static const char sql_batch_each[] = "SELECT i, status, seq, body_sha256 FROM natter_send_batch($1::jsonb)";
/* the same two on Citus, one chat (one shard) at a time (migrations/015) */
static const char sql_batch_set_citus[] =
    "SELECT i, status, seq, body_sha256 FROM natter_send_batch_chats($1::jsonb, false)";
static const char sql_batch_each_citus[] =
    "SELECT i, status, seq, body_sha256 FROM natter_send_batch_chats($1::jsonb, true)";
/* the Message objects of the batch, as the sender sees them (reactions[].me) */
static const char sql_messages[] =
    "SELECT b.i, " MSG_COLS("b.sender") " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[])"
    "   AS b(chat, seq, sender, i)"
    " JOIN messages ON messages.chat_id = b.chat AND messages.seq = b.seq";
/* the same on Citus, one chat ($5) at a time: a statement whose subqueries reach
 * the chat only through the outer row runs on every shard */
static const char sql_messages_citus[] =
    "SELECT b.i, " MSG_COLS_CHAT("b.sender", "$5::bigint") " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[],"
    " $4::int[]) AS b(chat, seq, sender, i)"
    " JOIN messages ON messages.chat_id = b.chat AND messages.seq = b.seq WHERE messages.chat_id = $5::bigint";
/* One `message` event per member per new message, each member's events
 * numbered in the batch's order on top of their inbox_seq; users locked in
 * ascending id order (MATERIALIZED keeps the ordered lock a step of its own). */
static const char sql_fanout[] =
    "WITH b AS (SELECT c.chat_id, c.ord, p.payload"
    "             FROM unnest($1::bigint[], $2::int[]) WITH ORDINALITY AS c(chat_id, ord, k)"
    "             JOIN jsonb_array_elements($3::jsonb) WITH ORDINALITY AS p(payload, k) USING (k)),"
    " r AS (SELECT b.ord, b.chat_id, b.payload, cm.user_id FROM b JOIN chat_members cm ON cm.chat_id = b.chat_id),"
    " l AS MATERIALIZED (SELECT u.id, u.inbox_seq FROM users u WHERE u.id IN (SELECT r.user_id FROM r)"
    "                    ORDER BY u.id FOR NO KEY UPDATE),"
    " n AS (SELECT r.user_id, r.chat_id, r.payload,"
    "              l.inbox_seq + row_number() OVER (PARTITION BY r.user_id ORDER BY r.ord) AS seq"
    "         FROM r JOIN l ON l.id = r.user_id),"
    " up AS (UPDATE users u SET inbox_seq = t.top"
    "          FROM (SELECT n.user_id, max(n.seq) AS top FROM n GROUP BY n.user_id) t WHERE u.id = t.user_id)"
    "INSERT INTO inbox (user_id, seq, type, chat_id, payload)"
    " SELECT n.user_id, n.seq, 'message', n.chat_id, n.payload FROM n"
    " RETURNING user_id, seq, chat_id, (payload -> 'message' ->> 'seq')::bigint, " DB_TS_RET("created_at");
/* the same on Citus: users locked one at a time in id order (migrations/015) */
static const char sql_fanout_citus[] =
    "SELECT woken_user, woken_seq, woken_chat, woken_mseq, woken_at"
    " FROM natter_fanout_citus($1::bigint[], $2::integer[], $3::jsonb)";

static struct redis_pool *redis;
static struct pipeline *pipe_sends;

/* {"i", "chat_id", …} per send: the argument of natter_send_batch. Owned text. */
static char *batch_json(struct send **v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        struct send *s = v[i];
        json_t *e = json_pack("{s:i,s:I,s:I,s:s,s:s,s:s}", "i", (int)i, "chat_id", (json_int_t)s->chat_id, "sender_id",
                              (json_int_t)s->sender_id, "client_msg_id", s->client_msg_id, "body", s->text, "hash",
                              s->hash);
        json_t *m = json_array(), *a = json_array();
        const char *p, *it;
        size_t len;
        char tmp[64];
        /* "{1,2}" / "{uuid,uuid}": strip the braces, split on commas */
        char *ms = xstrndup(s->mentions + 1, strlen(s->mentions) - 2);
        for (p = ms; csv_next(&p, &it, &len);)
            if (len) {
                snprintf(tmp, sizeof tmp, "%.*s", (int)len, it);
                int64_t id = 0;
                parse_i64(tmp, &id);
                json_array_append_new(m, json_integer(id));
            }
        free(ms);
        char *as = xstrndup(s->attachments + 1, strlen(s->attachments) - 2);
        for (p = as; csv_next(&p, &it, &len);)
            if (len)
                json_array_append_new(a, json_stringn(it, len));
        free(as);
        json_object_set_new(e, "mentions", m);
        json_object_set_new(e, "attachment_ids", a);
        json_object_set_new(e, "reply_to_seq", s->reply_to ? json_integer(s->reply_to) : json_null());
        json_array_append_new(arr, e);
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return text;
}

static enum send_status status_of(const char *s)
{
    if (strcmp(s, "new") == 0)
        return SEND_NEW;
    if (strcmp(s, "existing") == 0)
        return SEND_EXISTING;
    if (strcmp(s, "not_member") == 0)
        return SEND_NOT_MEMBER;
    return SEND_FAILED;
}

/* The Message objects of the new and existing sends of chat `only` (0: of every
 * chat), into v[i]->message. */
static bool load_messages_of(struct db_session *db, struct send **v, size_t n, int64_t only)
{
    size_t k = 0;
    int64_t *chat = xmalloc(n * sizeof *chat), *seq = xmalloc(n * sizeof *seq), *snd = xmalloc(n * sizeof *snd);
    int64_t *idx = xmalloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        if ((v[i]->status == SEND_NEW || v[i]->status == SEND_EXISTING) && (only == 0 || v[i]->chat_id == only)) {
            chat[k] = v[i]->chat_id;
            seq[k] = v[i]->seq;
            snd[k] = v[i]->sender_id;
            idx[k++] = (int64_t)i;
        }
    bool ok = true;
    if (k > 0) {
        char *a = db_id_array(chat, k), *b = db_id_array(seq, k), *c = db_id_array(snd, k), *d = db_id_array(idx, k);
        char one[24];
        const char *vals[5] = {a, b, c, d, i64s(one, only)};
        PGresult *res = db_session_exec(db, only ? sql_messages_citus : sql_messages, only ? 5 : 4, vals);
        ok = db_res_ok(res) && (size_t)PQntuples(res) == k;
        for (int row = 0; ok && row < PQntuples(res); row++) {
            int64_t i = db_i64(res, row, 0);
            if (i >= 0 && (size_t)i < n)
                v[i]->message = req_own_json(v[i]->it.r, msg_json(res, row, 1));
        }
        if (!ok)
            nlog(LOG_ERROR, "sends: loading the batch's messages failed",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn)));
        PQclear(res);
        free(a);
        free(b);
        free(c);
        free(d);
    }
    free(chat);
    free(seq);
    free(snd);
    free(idx);
    return ok;
}

/* The Message objects of the batch's new and existing sends; on Citus one chat at a
 * time (each statement one shard's). */
static bool load_messages(struct db_session *db, struct send **v, size_t n)
{
    if (!db_citus())
        return load_messages_of(db, v, n, 0);
    for (size_t i = 0; i < n; i++) {
        bool first = true; /* the first send of its chat in the batch */
        for (size_t j = 0; j < i && first; j++)
            first = v[j]->chat_id != v[i]->chat_id;
        if (first && !load_messages_of(db, v, n, v[i]->chat_id))
            return false;
    }
    return true;
}

/* The index of the new send of the batch whose message is (chat, seq), or -1. */
static long send_of(struct send **v, size_t n, int64_t chat, int64_t seq)
{
    for (size_t i = 0; i < n; i++)
        if (v[i]->status == SEND_NEW && v[i]->chat_id == chat && v[i]->seq == seq)
            return (long)i;
    return -1;
}

/* The inbox rows of the new messages; on success *wakes holds (user, seq,
 * event) per row, each event one reference. */
static bool fan_out(struct db_session *db, struct send **v, size_t n, struct wake **wakes, size_t *nwakes)
{
    json_t *payloads = json_array();
    size_t k = 0;
    int64_t *chat = xmalloc(n * sizeof *chat), *ord = xmalloc(n * sizeof *ord);
    char **texts = xcalloc(n, sizeof *texts);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->status != SEND_NEW)
            continue;
        json_t *p = json_pack("{s:I,s:O}", "chat_id", (json_int_t)v[i]->chat_id, "message", v[i]->message);
        texts[i] = json_dumps(p, JSON_COMPACT); /* the event's data, for the wake-ups */
        json_array_append_new(payloads, p);
        chat[k] = v[i]->chat_id;
        ord[k++] = (int64_t)i;
    }
    bool ok = true;
    *wakes = NULL;
    *nwakes = 0;
    char *pj = k > 0 ? json_dumps(payloads, JSON_COMPACT) : NULL;
    if (k > 0 && !pj)
        ok = false;
    if (k > 0 && pj) {
        char *a = db_id_array(chat, k), *b = db_id_array(ord, k);
        const char *vals[3] = {a, b, pj};
        PGresult *res = db_session_exec(db, db_citus() ? sql_fanout_citus : sql_fanout, 3, vals);
        ok = db_res_ok(res);
        if (ok) {
            /* one body per message, shared by its recipients */
            struct evbody **bodies = xcalloc(n, sizeof *bodies);
            *nwakes = (size_t)PQntuples(res);
            *wakes = xmalloc((*nwakes ? *nwakes : 1) * sizeof **wakes);
            for (size_t i = 0; i < *nwakes; i++) {
                int row = (int)i;
                long at = send_of(v, n, db_i64(res, row, 2), db_i64(res, row, 3));
                struct evbody *ev = NULL;
                if (at >= 0) {
                    struct evmeta meta = {v[at]->seq, v[at]->sender_id};
                    if (!bodies[at] && texts[at])
                        bodies[at] = evbody_new("message", v[at]->chat_id, PQgetvalue(res, row, 4), texts[at],
                                                strlen(texts[at]), &meta);
                    ev = evbody_ref(bodies[at]);
                }
                (*wakes)[i] = (struct wake){db_i64(res, row, 0), db_i64(res, row, 1), ev};
            }
            for (size_t i = 0; i < n; i++)
                evbody_unref(bodies[i]);
            free(bodies);
        } else {
            nlog(LOG_ERROR, "sends: inbox fan-out failed",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn)));
        }
        PQclear(res);
        free(a);
        free(b);
    }
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(pj);
    json_decref(payloads);
    free(chat);
    free(ord);
    return ok;
}

/* "natter_send_batch_set" of "SELECT … FROM natter_send_batch_set(…)", for the log */
static const char *fn_name(const char *sql)
{
    static _Thread_local char name[48];
    const char *p = strstr(sql, "FROM ");
    p = p ? p + 5 : sql;
    size_t len = strcspn(p, "(");
    snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
    return name;
}

/* Runs a batch function (the set-based one, or with each the one message at a
 * time) and records each send's outcome. false when it failed (logged). */
static bool run_batch_fn(struct db_session *db, bool each, const char *batch, struct send **v, size_t n)
{
    const char *sql = db_citus() ? (each ? sql_batch_each_citus : sql_batch_set_citus)
                                 : (each ? sql_batch_each : sql_batch_set);
    const char *vals[1] = {batch};
    PGresult *res = db_session_exec(db, sql, 1, vals);
    bool ok = db_res_ok(res) && (size_t)PQntuples(res) == n;
    for (int row = 0; ok && row < PQntuples(res); row++) {
        int64_t i = db_i64(res, row, 0);
        if (i < 0 || (size_t)i >= n) {
            ok = false;
            break;
        }
        struct send *s = v[i];
        s->status = status_of(PQgetvalue(res, row, 1));
        s->seq = db_i64(res, row, 2);
        snprintf(s->stored_hash, sizeof s->stored_hash, "%s", PQgetvalue(res, row, 3));
        if (s->status == SEND_FAILED)
            snprintf(s->sqlstate, sizeof s->sqlstate, "%s", PQgetvalue(res, row, 3));
    }
    if (!ok)
        nlog(each ? LOG_ERROR : LOG_WARN, "sends: the batch function failed",
             json_pack("{s:s,s:s}", "function", fn_name(sql), "error",
                       res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn)));
    PQclear(res);
    return ok;
}

/* What a committed batch owes the push workers: its new messages. */
struct push_post {
    int64_t *chats, *seqs;
    size_t n;
};

/* pipe_ops.commit: BEGIN … COMMIT of one batch of sends. */
static bool commit_sends(struct db_session *db, struct pipe_item **items, size_t n, struct pipe_result *out)
{
    struct send **v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (struct send *)items[i]; /* it is the first member of struct send */
    struct wake *wakes = NULL;
    size_t nwakes = 0;
    char *batch = batch_json(v, n);
    PGconn *conn = db->conn;
    bool ok = batch && pipeline_exec(conn, "BEGIN") && run_batch_fn(db, false, batch, v, n);
    if (!ok && batch && PQstatus(conn) == CONNECTION_OK) {
        /* a message the database refuses (or any other error): again, in a
         * new transaction, one message at a time */
        ok = pipeline_exec(conn, "ROLLBACK") && pipeline_exec(conn, "BEGIN") && run_batch_fn(db, true, batch, v, n);
    }
    ok = ok && load_messages(db, v, n) && fan_out(db, v, n, &wakes, &nwakes) && pipeline_exec(conn, "COMMIT");
    free(batch);
    if (!ok) {
        wakes_unref(wakes, nwakes);
        free(wakes);
        free(v);
        return false;
    }
    struct push_post *pp = xcalloc(1, sizeof *pp);
    pp->chats = xmalloc(n * sizeof *pp->chats);
    pp->seqs = xmalloc(n * sizeof *pp->seqs);
    for (size_t i = 0; i < n; i++)
        if (v[i]->status == SEND_NEW) {
            pp->chats[pp->n] = v[i]->chat_id;
            pp->seqs[pp->n++] = v[i]->seq;
        }
    *out = (struct pipe_result){wakes, nwakes, pp};
    free(v);
    return true;
}

static void push_post_free(void *p)
{
    struct push_post *pp = p;
    free(pp->chats);
    free(pp->seqs);
    free(pp);
}

/* pipe_ops.post: the push jobs (Redis down: the outbox rows stay and the
 * worker's reconciler enqueues them later). */
static void push_post_run(void *p)
{
    struct push_post *pp = p;
    jobs_push_messages(redis, pp->chats, pp->seqs, pp->n);
    push_post_free(pp);
}

static void send_unavailable(struct pipe_item *it)
{
    struct send *s = (struct send *)it;
    s->status = SEND_UNAVAILABLE;
    s->message = NULL;
}

static void send_done(struct pipe_item *it)
{
    struct send *s = (struct send *)it;
    s->done(s);
}

static const struct pipe_ops ops = {
    .name = "sends",
    .max_batch = SENDS_MAX_BATCH,
    .max_bytes = SENDS_MAX_BYTES,
    .commit = commit_sends,
    .unavailable = send_unavailable,
    .done = send_done,
    .post = push_post_run,
    .post_free = push_post_free,
};

int sends_start(const struct config *cfg, struct redis_pool *rp)
{
    redis = rp;
    pipe_sends = pipeline_start(&ops, cfg, cfg->send_committers);
    return pipe_sends ? 0 : -1;
}

void sends_stop(void)
{
    pipeline_stop(pipe_sends);
}

void sends_free(void)
{
    pipeline_free(pipe_sends);
    pipe_sends = NULL;
}

bool sends_submit(struct req *r, struct send *s)
{
    s->it.r = r;
    s->it.bytes = strlen(s->text);
    return pipe_sends && pipeline_submit(pipe_sends, &s->it);
}

void sends_stats(struct pipeline_stats *out)
{
    pipeline_stats(pipe_sends, out);
}
