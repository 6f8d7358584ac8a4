/*
 * keys.h — every Redis key and channel Natter uses, in one place. Names
 * ending in ':' are prefixes: the rest of the key follows (shown after "+").
 * Nothing in Redis is the truth: PostgreSQL is (DESIGN.md); everything here
 * is a queue, a cache, a marker or a lock that can be lost and rebuilt.
 */
#ifndef NATTER_KEYS_H
#define NATTER_KEYS_H

/* natter-api: pub/sub of revocations, to every instance (realtime/bus.c) */
#define KEY_BUS "natter:bus"
/* + user id: pub/sub of that user's wake-ups, ephemeral events and poll
 * take-overs; only instances that know the user subscribe (realtime/bus.c) */
#define KEY_BUS_USER_PREFIX "natter:bus:u:"
/* + device id ":" ephemeral event id: the device had that typing/presence
 * event (SET NX, expires): delivered once across instances (realtime/bus.c) */
#define KEY_EPH_SEEN_PREFIX "natter:eph:"
/* sorted set user id → last seen, ms (realtime/presence.c) */
#define KEY_PRESENCE "natter:presence"
/* the presence sweeper's lock: one instance at a time */
#define KEY_PRESENCE_LOCK "natter:lock:presence"
/* + user id: hash device id → online-until ms; the worker sends no push to such a user */
#define KEY_POLLING_PREFIX "natter:polling:"
/* failed-login counters, fixed windows (resources/auth.c) */
#define KEY_RL_LOGIN_IP_PREFIX "natter:rl:loginfail:ip:"     /* + client address */
#define KEY_RL_LOGIN_USER_PREFIX "natter:rl:loginfail:user:" /* + lower-cased username ":" client address */

/* the job queue (common/jobs.c, workers/jobs.c) */
#define KEY_JOBS_STREAM "natter:jobs"                /* stream; field `job` holds the JSON */
#define KEY_JOBS_DELAYED "natter:jobs:delayed"       /* sorted set: retries by due time, ms */
#define KEY_JOBS_DEAD "natter:jobs:dead"             /* stream of dead letters */
#define KEY_METRIC_PREFIX "natter:metrics:"          /* + counter name: totals for /metrics */
#define KEY_JOB_LATENCY "natter:metrics:job_latency" /* hash: latency histogram */
#define KEY_WORKERS_PREFIX "natter:workers:"         /* + pid@host: a live worker's heartbeat */

/* push coalescing (workers/push.c) */
#define KEY_PUSH_SEEN_PREFIX "natter:push:seen:"           /* + user:chat:seq: counted once */
#define KEY_PUSH_PENDING_PREFIX "natter:push:pending:"     /* + user: counts waiting for a flush */
#define KEY_PUSH_FLUSHING_PREFIX "natter:push:flushing:"   /* + flush id: a flush taken, in progress */
#define KEY_PUSH_SENT_PREFIX "natter:push:sent:"           /* + device:flush id: sent once */
#define KEY_PUSH_BADGE_PREFIX "natter:push:badge:"         /* + user: a badge update waiting for its flush */
#define KEY_PUSH_LASTBADGE_PREFIX "natter:push:lastbadge:" /* + device: the badge its last push carried */
#define KEY_METRIC_PUSHES "natter:metrics:pushes"          /* hash "<provider>:<outcome>" -> pushes */

#endif
