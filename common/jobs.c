/*
 * jobs.c — enqueue side of the job queue (see jobs.h).
 */
#include "jobs.h"

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

int jobs_push_message(struct redis_pool *p, int64_t chat_id, int64_t seq)
{
    json_t *j = json_pack("{s:s,s:I,s:I,s:I}", "type", JOB_PUSH_MESSAGE, "chat_id", (json_int_t)chat_id, "seq",
                          (json_int_t)seq, "enq_ms", (json_int_t)wall_time_ms());
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    int rc = text ? jobs_enqueue(p, text) : -1;
    free(text);
    return rc;
}

json_t *job_push_flush_new(int64_t user_id, const char *flush_id)
{
    return json_pack("{s:s,s:I,s:s,s:I}", "type", JOB_PUSH_FLUSH, "user_id", (json_int_t)user_id, "flush_id", flush_id,
                     "enq_ms", (json_int_t)wall_time_ms());
}

json_t *job_push_send_new(int64_t user_id, int64_t device_id, const char *flush_id, int64_t count, int64_t chat_id,
                          int64_t seq, int64_t badge, int64_t first_ms)
{
    return json_pack("{s:s,s:I,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "type", JOB_PUSH_SEND, "user_id", (json_int_t)user_id,
                     "device_id", (json_int_t)device_id, "flush_id", flush_id, "count", (json_int_t)count, "chat_id",
                     (json_int_t)chat_id, "seq", (json_int_t)seq, "badge", (json_int_t)badge, "first_ms",
                     (json_int_t)first_ms, "enq_ms", (json_int_t)wall_time_ms());
}
