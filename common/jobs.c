/*
 * jobs.c — enqueue side of the job queue (see jobs.h).
 */
#include "jobs.h"

#include <string.h>

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
