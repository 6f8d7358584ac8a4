/*
 * acks.c — the coalescing ack flusher (see acks.h).
 *
 * The pending acks are an array of entries with an open-addressing index of
 * twice its size keyed by (user, device); taking a flush copies the entries
 * out and clears only the slots they used. One flush is three round trips
 * whatever its size: BEGIN, natter_ack_batch($users, $devices, $sinces),
 * COMMIT.
 */
#include "acks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "config.h"
#include "db.h"
#include "log.h"
#include "tx.h"
#include "util.h"
#include "wake.h"

#define SLOTS (2 * ACKS_MAX_PENDING) /* a power of two: the index stays at most half full */
#define STOP_ATTEMPTS 3              /* flushes tried at shutdown before pending acks are given up */

struct ack {
    int64_t user, device, since;
    uint32_t slot;
};

static const char sql_flush[] =
    "SELECT woken_user, woken_seq, woken_chat, woken_data, woken_at"
    " FROM natter_ack_batch($1::bigint[], $2::bigint[], $3::bigint[])";

static const struct config *cfg;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv; /* CLOCK_MONOTONIC */
static struct ack *ents;  /* [ACKS_MAX_PENDING], guarded by mu */
static int32_t *slots;    /* [SLOTS]: index into ents, -1 empty */
static size_t nents;
static bool stopping, started;
static pthread_t thread;
static atomic_ullong flushes, flushed, dropped, failures;
static PGconn *conn; /* the flusher's own; NULL until (re)connected */

unsigned long long acks_flushes(void)
{
    return atomic_load(&flushes);
}

unsigned long long acks_flushed(void)
{
    return atomic_load(&flushed);
}

unsigned long long acks_dropped(void)
{
    return atomic_load(&dropped);
}

unsigned long long acks_flush_failures(void)
{
    return atomic_load(&failures);
}

static uint32_t slot_of(int64_t user, int64_t device)
{
    uint64_t h = (uint64_t)user * 0x9E3779B97F4A7C15ull ^ (uint64_t)device * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    return (uint32_t)(h & (SLOTS - 1));
}

/* mu held. false when the table is full. */
static bool put(int64_t user, int64_t device, int64_t since)
{
    uint32_t s = slot_of(user, device);
    for (;;) {
        int32_t i = slots[s];
        if (i < 0)
            break;
        struct ack *a = &ents[i];
        if (a->user == user && a->device == device) {
            if (since > a->since)
                a->since = since;
            return true;
        }
        s = (s + 1) & (SLOTS - 1);
    }
    if (nents == ACKS_MAX_PENDING)
        return false;
    ents[nents] = (struct ack){user, device, since, s};
    slots[s] = (int32_t)nents++;
    return true;
}

void acks_record(int64_t user_id, int64_t device_id, int64_t since)
{
    if (since <= 0)
        return; /* nothing to ack */
    pthread_mutex_lock(&mu);
    bool ok = started && !stopping;
    if (ok) {
        bool first = nents == 0;
        ok = put(user_id, device_id, since);
        if (ok && first)
            pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    if (!ok)
        atomic_fetch_add(&dropped, 1); /* the device's next poll acks the range again */
}

/* mu held: moves every pending ack into *out (owned, n entries). */
static size_t take(struct ack **out)
{
    size_t n = nents;
    *out = NULL;
    if (n == 0)
        return 0;
    *out = xmalloc(n * sizeof **out);
    memcpy(*out, ents, n * sizeof **out);
    for (size_t i = 0; i < n; i++)
        slots[ents[i].slot] = -1;
    nents = 0;
    return n;
}

/* A flush that failed: its acks go back (merged with newer ones). */
static void give_back(const struct ack *v, size_t n)
{
    size_t lost = 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n; i++)
        if (!put(v[i].user, v[i].device, v[i].since))
            lost++;
    pthread_mutex_unlock(&mu);
    if (lost)
        atomic_fetch_add(&dropped, lost);
}

static bool exec_ok(const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    bool ok = db_res_ok(r);
    PQclear(r);
    return ok;
}

/* One transaction for v[0..n); the wake-ups are done after COMMIT. */
static bool flush(const struct ack *v, size_t n)
{
    if (!conn) {
        conn = db_connect(cfg->database_url);
        if (!conn)
            return false;
    }
    int64_t *u = xmalloc(n * sizeof *u), *d = xmalloc(n * sizeof *d), *s = xmalloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++) {
        u[i] = v[i].user;
        d[i] = v[i].device;
        s[i] = v[i].since;
    }
    char *au = db_id_array(u, n), *ad = db_id_array(d, n), *as = db_id_array(s, n);
    free(u);
    free(d);
    free(s);
    struct wake *wakes = NULL;
    size_t nwakes = 0;
    bool ok = exec_ok("BEGIN");
    if (ok) {
        const char *vals[3] = {au, ad, as};
        PGresult *res = PQexecParams(conn, sql_flush, 3, NULL, vals, NULL, NULL, 0);
        ok = db_res_ok(res);
        if (ok) {
            nwakes = (size_t)PQntuples(res);
            wakes = xmalloc((nwakes ? nwakes : 1) * sizeof *wakes);
            for (size_t i = 0; i < nwakes; i++)
                wakes[i] = (struct wake){db_i64(res, (int)i, 0), db_i64(res, (int)i, 1),
                                         evbody_new("receipt", db_i64(res, (int)i, 2), PQgetvalue(res, (int)i, 4),
                                                    PQgetvalue(res, (int)i, 3), (size_t)PQgetlength(res, (int)i, 3))};
        } else {
            nlog(LOG_WARN, "ack flush failed (kept for the next one)",
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(conn)));
        }
        PQclear(res);
    }
    ok = ok && exec_ok("COMMIT");
    free(au);
    free(ad);
    free(as);
    if (!ok) {
        if (PQstatus(conn) != CONNECTION_OK || !exec_ok("ROLLBACK"))
            PQfinish(conn), conn = NULL;
        wakes_unref(wakes, nwakes);
        free(wakes);
        return false;
    }
    if (nwakes) {
        bus_wake_local(wakes, nwakes);
        bus_publish_wakes(wakes, nwakes);
    }
    wakes_unref(wakes, nwakes);
    free(wakes);
    return true;
}

/* Takes and flushes what is pending; false when it failed (given back). */
static bool flush_pending(void)
{
    struct ack *v;
    pthread_mutex_lock(&mu);
    size_t n = take(&v);
    pthread_mutex_unlock(&mu);
    if (n == 0)
        return true;
    bool ok = flush(v, n);
    if (ok) {
        atomic_fetch_add(&flushes, 1);
        atomic_fetch_add(&flushed, n);
    } else {
        atomic_fetch_add(&failures, 1);
        give_back(v, n);
    }
    free(v);
    return ok;
}

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *flusher(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (nents == 0 && !stopping)
            pthread_cond_wait(&cv, &mu);
        /* gather for ack_flush_ms (a failed flush waits as long before its retry) */
        struct timespec until;
        deadline_in(&until, cfg->ack_flush_ms);
        while (!stopping && pthread_cond_timedwait(&cv, &mu, &until) == 0) {
        }
        bool stop = stopping;
        pthread_mutex_unlock(&mu);
        if (stop)
            break;
        flush_pending();
    }
    for (int i = 0; i < STOP_ATTEMPTS && !flush_pending(); i++) {
    }
    pthread_mutex_lock(&mu);
    if (nents) {
        nlog(LOG_WARN, "acks not flushed at shutdown (the devices ack again on their next poll)",
             json_pack("{s:I}", "devices", (json_int_t)nents));
        nents = 0;
    }
    pthread_mutex_unlock(&mu);
    if (conn)
        PQfinish(conn);
    conn = NULL;
    return NULL;
}

int acks_start(const struct config *c)
{
    cfg = c;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    ents = xmalloc(ACKS_MAX_PENDING * sizeof *ents);
    slots = xmalloc(SLOTS * sizeof *slots);
    memset(slots, 0xff, SLOTS * sizeof *slots); /* -1 */
    nents = 0;
    stopping = false;
    if (pthread_create(&thread, NULL, flusher, NULL) != 0) {
        nlog(LOG_ERROR, "cannot start the ack flusher", NULL);
        free(ents);
        free(slots);
        ents = NULL;
        slots = NULL;
        pthread_cond_destroy(&cv);
        return -1;
    }
    pthread_mutex_lock(&mu);
    started = true;
    pthread_mutex_unlock(&mu);
    return 0;
}

void acks_stop(void)
{
    pthread_mutex_lock(&mu);
    bool was = started;
    stopping = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (!was)
        return;
    pthread_join(thread, NULL);
    pthread_mutex_lock(&mu);
    started = false;
    pthread_mutex_unlock(&mu);
    free(ents);
    free(slots);
    ents = NULL;
    slots = NULL;
    pthread_cond_destroy(&cv);
}
