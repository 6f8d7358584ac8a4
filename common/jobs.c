/*
 * jobs.c — enqueue side of the job queue (see jobs.h).
 */
#include "jobs.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int jobs_enqueue(struct redis_pool *p, const char *json)
{
    /* MAXLEN ~ bounds the stream if every worker is gone for a long time;
     * acked entries are deleted by the workers, so this is a safety net */
    redisReply *r = redis_cmd(p, "XADD " JOBS_STREAM " MAXLEN ~ 1000000 * job %b", json, strlen(json));
    int ok = r && r->type == REDIS_REPLY_STRING;
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

static char *push_message_json(int64_t chat_id, int64_t seq)
{
    json_t *j = json_pack("{s:s,s:I,s:I,s:I}", "type", JOB_PUSH_MESSAGE, "chat_id", (json_int_t)chat_id, "seq",
                          (json_int_t)seq, "enq_ms", (json_int_t)wall_time_ms());
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

int jobs_push_message(struct redis_pool *p, int64_t chat_id, int64_t seq)
{
    char *text = push_message_json(chat_id, seq);
    int rc = text ? jobs_enqueue(p, text) : -1;
    free(text);
    return rc;
}

/* Appends n jobs (built by make(i), owned text) in one pipelined round trip. */
static int enqueue_many(struct redis_pool *p, size_t n, char *(*make)(const void *ctx, size_t i), const void *ctx)
{
    if (n == 0)
        return 0;
    redisContext *c = redis_acquire(p);
    if (!c)
        return -1;
    size_t sent = 0;
    for (; sent < n; sent++) {
        char *text = make(ctx, sent);
        int rc = text ? redisAppendCommand(c, "XADD " JOBS_STREAM " MAXLEN ~ 1000000 * job %b", text, strlen(text))
                      : REDIS_ERR;
        free(text);
        if (rc != REDIS_OK)
            break;
    }
    bool ok = sent == n;
    for (size_t i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            ok = false;
            break; /* the connection is unusable: the rest cannot be read */
        }
        ok = ok && r->type == REDIS_REPLY_STRING;
        freeReplyObject(r);
    }
    redis_release(p, c, !ok);
    return ok ? 0 : -1;
}

struct message_jobs {
    const int64_t *chats, *seqs;
};

static char *make_message(const void *ctx, size_t i)
{
    const struct message_jobs *m = ctx;
    return push_message_json(m->chats[i], m->seqs[i]);
}

int jobs_push_messages(struct redis_pool *p, const int64_t *chat_ids, const int64_t *seqs, size_t n)
{
    struct message_jobs m = {chat_ids, seqs};
    return enqueue_many(p, n, make_message, &m);
}

struct badge_jobs {
    const int64_t *users, *devices, *chats;
};

static char *make_badge(const void *ctx, size_t i)
{
    const struct badge_jobs *b = ctx;
    json_t *j = json_pack("{s:s,s:I,s:I,s:I,s:I}", "type", JOB_PUSH_BADGE, "user_id", (json_int_t)b->users[i],
                          "device_id", (json_int_t)b->devices[i], "chat_id", (json_int_t)b->chats[i], "enq_ms",
                          (json_int_t)wall_time_ms());
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

int jobs_push_badges(struct redis_pool *p, const int64_t *user_ids, const int64_t *device_ids, const int64_t *chat_ids,
                     size_t n)
{
    struct badge_jobs b = {user_ids, device_ids, chat_ids};
    return enqueue_many(p, n, make_badge, &b);
}

json_t *job_push_flush_new(int64_t user_id, const char *flush_id, const char *kind)
{
    return json_pack("{s:s,s:I,s:s,s:s,s:I}", "type", JOB_PUSH_FLUSH, "user_id", (json_int_t)user_id, "flush_id",
                     flush_id, "kind", kind, "enq_ms", (json_int_t)wall_time_ms());
}

json_t *job_push_send_new(int64_t user_id, int64_t device_id, const char *flush_id, int64_t count, int64_t chat_id,
                          int64_t seq, int64_t badge, int64_t first_ms, const char *kind)
{
    return json_pack("{s:s,s:I,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:s,s:I}", "type", JOB_PUSH_SEND, "user_id",
                     (json_int_t)user_id, "device_id", (json_int_t)device_id, "flush_id", flush_id, "count",
                     (json_int_t)count, "chat_id", (json_int_t)chat_id, "seq", (json_int_t)seq, "badge",
                     (json_int_t)badge, "first_ms", (json_int_t)first_ms, "kind", kind, "enq_ms",
                     (json_int_t)wall_time_ms());
}
