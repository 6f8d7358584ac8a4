/*
 * pipeline.c — the send pipeline's committer (see pipeline.h).
 *
 * One batch is five round trips whatever its size: BEGIN,
 * natter_send_batch($batch), the Message rows, the inbox fan-out, COMMIT.
 * Any failure before COMMIT rolls the whole batch back and answers every
 * send of it 503 (Retry-After): a client retry with the same client_msg_id
 * is safe whether or not a lost COMMIT reached the disk.
 */
#include "pipeline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "message.h"
#include "tx.h"
#include "util.h"
#include "wake.h"

#define PIPELINE_MAX_POSTS 1024 /* committed batches whose Redis work waits */

static const char sql_batch[] = "SELECT i, status, seq, body_sha256 FROM natter_send_batch($1::jsonb)";
/* the Message objects of the batch, as the sender sees them (reactions[].me) */
static const char sql_messages[] =
    "SELECT b.i, " MSG_COLS("b.sender") " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[])"
    "   AS b(chat, seq, sender, i)"
    " JOIN messages ON messages.chat_id = b.chat AND messages.seq = b.seq";
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
    " RETURNING user_id, seq, chat_id, (payload -> 'message' ->> 'seq')::bigint, " DB_TS("created_at");

static const struct config *cfg;
static struct redis_pool *redis;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct send *head, *tail; /* the queue, guarded by mu */
static size_t queued;
static bool stopping, started;
static pthread_t thread;
static atomic_ullong batches, sends;
static PGconn *conn; /* the committer's own; NULL until (re)connected */

/* What a committed batch still owes Redis: the publish of its wake-ups for
 * the other instances and its push jobs. A courier thread does it, so that a
 * slow or hung Redis never holds up commits or replies; when PIPELINE_MAX_POSTS
 * batches are waiting the oldest is dropped and counted (the other instances'
 * re-check and the worker's outbox reconciler cover what it held). */
struct post {
    struct wake *wakes; /* owns the references to their bodies */
    size_t nwakes;
    int64_t *chats, *seqs; /* the new messages, for their push jobs */
    size_t npush;
    struct post *next;
};
static pthread_cond_t post_cv = PTHREAD_COND_INITIALIZER;
static struct post *post_head, *post_tail; /* guarded by mu */
static size_t nposts;
static bool courier_stop;
static pthread_t courier_thread;
static atomic_ullong posts_dropped;

bool pipeline_submit(struct send *s)
{
    pthread_mutex_lock(&mu);
    bool ok = started && !stopping && queued < PIPELINE_MAX_QUEUE;
    if (ok) {
        req_hand_off(s->r); /* under mu: the committer cannot reply before the suspend */
        s->next = NULL;
        if (tail)
            tail->next = s;
        else
            head = s;
        tail = s;
        queued++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

size_t pipeline_depth(void)
{
    pthread_mutex_lock(&mu);
    size_t n = queued;
    pthread_mutex_unlock(&mu);
    return n;
}

unsigned long long pipeline_batches(void)
{
    return atomic_load(&batches);
}

unsigned long long pipeline_sends(void)
{
    return atomic_load(&sends);
}

unsigned long long pipeline_posts_dropped(void)
{
    return atomic_load(&posts_dropped);
}

static void post_free(struct post *p)
{
    wakes_unref(p->wakes, p->nwakes);
    free(p->wakes);
    free(p->chats);
    free(p->seqs);
    free(p);
}

static void post_queue(struct post *p)
{
    struct post *dropped = NULL;
    pthread_mutex_lock(&mu);
    if (nposts == PIPELINE_MAX_POSTS) {
        dropped = post_head;
        post_head = dropped->next;
        if (!post_head)
            post_tail = NULL;
        nposts--;
    }
    p->next = NULL;
    if (post_tail)
        post_tail->next = p;
    else
        post_head = p;
    post_tail = p;
    nposts++;
    pthread_cond_signal(&post_cv);
    pthread_mutex_unlock(&mu);
    if (dropped) {
        atomic_fetch_add(&posts_dropped, 1);
        post_free(dropped);
    }
}

static void *courier(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!post_head && !courier_stop)
            pthread_cond_wait(&post_cv, &mu);
        struct post *p = post_head;
        if (p) {
            post_head = p->next;
            if (!post_head)
                post_tail = NULL;
            nposts--;
        }
        pthread_mutex_unlock(&mu);
        if (!p)
            break; /* stopping, and nothing is owed */
        if (p->nwakes)
            bus_publish_wakes(p->wakes, p->nwakes);
        /* Redis down: the outbox rows stay and the worker enqueues them later */
        jobs_push_messages(redis, p->chats, p->seqs, p->npush);
        post_free(p);
    }
    return NULL;
}

/* Takes the next batch off the queue (mu held): bounded in sends and bytes,
 * but never empty when the queue is not. */
static struct send *take_batch(size_t *n_out)
{
    struct send *first = head, *last = NULL;
    size_t n = 0, bytes = 0;
    *n_out = 0;
    if (!head)
        return NULL;
    for (struct send *s = head; s && n < PIPELINE_MAX_BATCH; s = s->next) {
        size_t b = strlen(s->text);
        if (n > 0 && bytes + b > PIPELINE_MAX_BYTES)
            break;
        bytes += b;
        last = s;
        n++;
    }
    head = last->next; /* last is set: the first send is always taken */
    if (!head)
        tail = NULL;
    last->next = NULL;
    queued -= n;
    *n_out = n;
    return first;
}

static bool exec_ok(const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    bool ok = db_res_ok(r);
    PQclear(r);
    return ok;
}

static void drop_conn(void)
{
    if (conn)
        PQfinish(conn);
    conn = NULL;
}

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

/* The Message objects of the new and existing sends, into v[i]->message. */
static bool load_messages(struct send **v, size_t n)
{
    size_t k = 0;
    int64_t *chat = xmalloc(n * sizeof *chat), *seq = xmalloc(n * sizeof *seq), *snd = xmalloc(n * sizeof *snd);
    int64_t *idx = xmalloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        if (v[i]->status == SEND_NEW || v[i]->status == SEND_EXISTING) {
            chat[k] = v[i]->chat_id;
            seq[k] = v[i]->seq;
            snd[k] = v[i]->sender_id;
            idx[k++] = (int64_t)i;
        }
    bool ok = true;
    if (k > 0) {
        char *a = db_id_array(chat, k), *b = db_id_array(seq, k), *c = db_id_array(snd, k), *d = db_id_array(idx, k);
        const char *vals[4] = {a, b, c, d};
        PGresult *res = PQexecParams(conn, sql_messages, 4, NULL, vals, NULL, NULL, 0);
        ok = db_res_ok(res) && (size_t)PQntuples(res) == k;
        for (int row = 0; ok && row < PQntuples(res); row++) {
            int64_t i = db_i64(res, row, 0);
            if (i >= 0 && (size_t)i < n)
                v[i]->message = req_own_json(v[i]->r, msg_json(res, row, 1));
        }
        if (!ok)
            nlog(LOG_ERROR, "pipeline: loading the batch's messages failed",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(conn)));
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
static bool fan_out(struct send **v, size_t n, struct wake **wakes, size_t *nwakes)
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
        PGresult *res = PQexecParams(conn, sql_fanout, 3, NULL, vals, NULL, NULL, 0);
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
                    if (!bodies[at] && texts[at])
                        bodies[at] = evbody_new("message", v[at]->chat_id, PQgetvalue(res, row, 4), texts[at],
                                                strlen(texts[at]));
                    ev = evbody_ref(bodies[at]);
                }
                (*wakes)[i] = (struct wake){db_i64(res, row, 0), db_i64(res, row, 1), ev};
            }
            for (size_t i = 0; i < n; i++)
                evbody_unref(bodies[i]);
            free(bodies);
        } else {
            nlog(LOG_ERROR, "pipeline: inbox fan-out failed",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(conn)));
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

/* BEGIN … COMMIT of one batch; false (rolled back, or the connection lost)
 * when nothing of it can be reported as committed. */
static bool commit_batch(struct send **v, size_t n, struct wake **wakes, size_t *nwakes)
{
    *wakes = NULL;
    *nwakes = 0;
    if (!conn) {
        conn = db_connect(cfg->database_url);
        if (!conn)
            return false;
    }
    char *batch = batch_json(v, n);
    if (!batch)
        return false;
    bool ok = exec_ok("BEGIN");
    if (ok) {
        const char *vals[1] = {batch};
        PGresult *res = PQexecParams(conn, sql_batch, 1, NULL, vals, NULL, NULL, 0);
        ok = db_res_ok(res) && (size_t)PQntuples(res) == n;
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
            nlog(LOG_ERROR, "pipeline: natter_send_batch failed",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(conn)));
        PQclear(res);
    }
    ok = ok && load_messages(v, n) && fan_out(v, n, wakes, nwakes) && exec_ok("COMMIT");
    free(batch);
    if (!ok) {
        wakes_unref(*wakes, *nwakes);
        free(*wakes);
        *wakes = NULL;
        *nwakes = 0;
        if (PQstatus(conn) != CONNECTION_OK || !exec_ok("ROLLBACK"))
            drop_conn();
    }
    return ok;
}

static void run_batch(struct send *list, size_t n)
{
    struct send **v = xmalloc(n * sizeof *v);
    size_t k = 0;
    for (struct send *s = list; s; s = s->next)
        v[k++] = s;
    struct wake *wakes;
    size_t nwakes;
    bool ok = commit_batch(v, n, &wakes, &nwakes);
    atomic_fetch_add(&batches, 1);
    atomic_fetch_add(&sends, n);
    struct post *p = NULL;
    if (ok) {
        /* committed: wake this instance's polls now; what is owed to Redis
         * goes to the courier */
        bus_wake_local(wakes, nwakes);
        p = xcalloc(1, sizeof *p);
        p->wakes = wakes;
        p->nwakes = nwakes;
        p->chats = xmalloc(n * sizeof *p->chats);
        p->seqs = xmalloc(n * sizeof *p->seqs);
        for (size_t i = 0; i < n; i++)
            if (v[i]->status == SEND_NEW) {
                p->chats[p->npush] = v[i]->chat_id;
                p->seqs[p->npush++] = v[i]->seq;
            }
    } else {
        free(wakes); /* commit_batch released what it held */
        for (size_t i = 0; i < n; i++) {
            v[i]->status = SEND_UNAVAILABLE;
            v[i]->message = NULL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct req *r = v[i]->r;
        v[i]->done(v[i]);
        req_hand_back(r);
    }
    if (p)
        post_queue(p);
    free(v);
}

static void *committer(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!head && !stopping)
            pthread_cond_wait(&cv, &mu);
        if (!head) { /* stopping, and everything is answered */
            pthread_mutex_unlock(&mu);
            break;
        }
        size_t n;
        struct send *batch = take_batch(&n);
        pthread_mutex_unlock(&mu);
        run_batch(batch, n);
    }
    drop_conn();
    return NULL;
}

int pipeline_start(const struct config *c, struct redis_pool *rp)
{
    cfg = c;
    redis = rp;
    stopping = false;
    courier_stop = false;
    if (pthread_create(&courier_thread, NULL, courier, NULL) != 0) {
        nlog(LOG_ERROR, "cannot start the send pipeline", NULL);
        return -1;
    }
    if (pthread_create(&thread, NULL, committer, NULL) != 0) {
        nlog(LOG_ERROR, "cannot start the send pipeline", NULL);
        pthread_mutex_lock(&mu);
        courier_stop = true;
        pthread_cond_broadcast(&post_cv);
        pthread_mutex_unlock(&mu);
        pthread_join(courier_thread, NULL);
        return -1;
    }
    pthread_mutex_lock(&mu);
    started = true;
    pthread_mutex_unlock(&mu);
    return 0;
}

void pipeline_stop(void)
{
    pthread_mutex_lock(&mu);
    bool was = started;
    stopping = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (!was)
        return;
    pthread_join(thread, NULL);
    /* the courier finishes what the last batches owe Redis, then ends */
    pthread_mutex_lock(&mu);
    courier_stop = true;
    pthread_cond_broadcast(&post_cv);
    pthread_mutex_unlock(&mu);
    pthread_join(courier_thread, NULL);
    pthread_mutex_lock(&mu);
    started = false;
    pthread_mutex_unlock(&mu);
}
