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
    int64_t hint_from; /* the hints list every message event in (hint_from, since]; -1: none */
    uint32_t slot;
    uint32_t nh;
    struct ack_hint h[ACKS_MAX_HINTS];
};

static const char sql_flush[] =
    "SELECT woken_user, woken_seq, woken_chat, woken_data, woken_at FROM natter_ack_batch($1::bigint[], $2::bigint[],"
    " $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])";

static const char sql_push_flush[] =
    "SELECT woken_user, woken_seq, woken_chat, woken_data, woken_at FROM natter_push_ack_batch($1::bigint[],"
    " $2::bigint[], $3::bigint[])";
/* the same on Citus (migrations/015: row locks one shard at a time) */
static const char sql_flush_citus[] =
    "SELECT woken_user, woken_seq, woken_chat, woken_data, woken_at FROM natter_ack_batch_citus($1::bigint[],"
    " $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])";
static const char sql_push_flush_citus[] =
    "SELECT woken_user, woken_seq, woken_chat, woken_data, woken_at FROM natter_push_ack_batch_citus($1::bigint[],"
    " $2::bigint[], $3::bigint[])";

struct push_ack {
    int64_t user, chat, seq;
};

static const struct config *cfg;
static const struct evmeta no_message = {0, 0}; /* receipts carry no message */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv; /* CLOCK_MONOTONIC */
static struct ack *ents;  /* [ACKS_MAX_PENDING], guarded by mu */
static int32_t *slots;    /* [SLOTS]: index into ents, -1 empty */
static size_t nents;
static struct push_ack *pushes; /* [ACKS_MAX_PUSH], guarded by mu */
static size_t npushes;
static bool stopping, started;
static pthread_t thread;
static atomic_ullong flushes, flushed, dropped, failures, hinted;
static struct db_session db; /* the flusher's own */

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

unsigned long long acks_hinted(void)
{
    return atomic_load(&hinted);
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

/* Hints covering (from, since]: nh of them at h (from -1: none). */
struct hints_in {
    int64_t from;
    uint32_t nh;
    const struct ack_hint *h;
};

/* a covers (a->hint_from, a->since] with its hints; in covers (in.from,
 * since]. When in starts where a ends, the two join (or, if a had none, the
 * hints start at in.from: the flush uses them only for a device whose stored
 * ack reached in.from); otherwise, or when they do not fit, a has none. */
static void merge_hints(struct ack *a, struct hints_in in)
{
    if (in.from < 0 || in.from != a->since || a->nh + in.nh > ACKS_MAX_HINTS) {
        a->hint_from = -1;
        a->nh = 0;
        return;
    }
    if (a->hint_from < 0) {
        a->hint_from = in.from;
        a->nh = 0;
    }
    memcpy(a->h + a->nh, in.h, in.nh * sizeof *in.h);
    a->nh += in.nh;
}

/* mu held. false when the table is full. */
static bool put(int64_t user, int64_t device, int64_t since, struct hints_in in)
{
    uint32_t s = slot_of(user, device);
    for (;;) {
        int32_t i = slots[s];
        if (i < 0)
            break;
        struct ack *a = &ents[i];
        if (a->user == user && a->device == device) {
            if (since > a->since) {
                merge_hints(a, in);
                a->since = since;
            }
            return true;
        }
        s = (s + 1) & (SLOTS - 1);
    }
    if (nents == ACKS_MAX_PENDING)
        return false;
    struct ack *a = &ents[nents];
    a->user = user;
    a->device = device;
    a->since = since;
    a->slot = s;
    a->hint_from = -1;
    a->nh = 0;
    if (in.from >= 0 && in.from < since && in.nh <= ACKS_MAX_HINTS) {
        a->hint_from = in.from;
        memcpy(a->h, in.h, in.nh * sizeof *in.h);
        a->nh = in.nh;
    }
    slots[s] = (int32_t)nents++;
    return true;
}

void acks_record(int64_t user_id, int64_t device_id, int64_t since, const struct ack_hints *hints)
{
    if (since <= 0)
        return; /* nothing to ack */
    pthread_mutex_lock(&mu);
    bool ok = started && !stopping;
    if (ok) {
        bool first = nents == 0;
        struct hints_in in = {-1, 0, NULL};
        if (hints && hints->from >= 0 && hints->n >= 0)
            in = (struct hints_in){hints->from, (uint32_t)hints->n, hints->h};
        ok = put(user_id, device_id, since, in);
        if (ok && first)
            pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    if (!ok)
        atomic_fetch_add(&dropped, 1); /* the device's next poll acks the range again */
}

bool acks_record_push(int64_t user_id, const int64_t *chats, const int64_t *seqs, size_t n)
{
    pthread_mutex_lock(&mu);
    bool ok = started && !stopping && n <= ACKS_MAX_PUSH - npushes;
    if (ok && n) {
        bool first = nents == 0 && npushes == 0;
        for (size_t i = 0; i < n; i++)
            pushes[npushes++] = (struct push_ack){user_id, chats[i], seqs[i]};
        if (first)
            pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    if (!ok)
        atomic_fetch_add(&dropped, n);
    return ok;
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
        if (!put(v[i].user, v[i].device, v[i].since, (struct hints_in){v[i].hint_from, v[i].nh, v[i].h}))
            lost++;
    pthread_mutex_unlock(&mu);
    if (lost)
        atomic_fetch_add(&dropped, lost);
}

static bool exec_ok(const char *sql)
{
    PGresult *r = PQexec(db.conn, sql);
    bool ok = db_res_ok(r);
    PQclear(r);
    return ok;
}

/* Runs sql (one of the flush functions, whose rows are the receipts to wake:
 * user, inbox seq, chat, body, created_at) in a transaction of its own; the
 * wake-ups after COMMIT. false (logged as failed, the transaction rolled back
 * or the session closed) when it did not commit. */
static bool flush_tx(const char *sql, int n, const char *const *vals, const char *failed)
{
    struct wake *wakes = NULL;
    size_t nwakes = 0;
    bool ok = exec_ok("BEGIN");
    if (ok) {
        PGresult *res = db_session_exec(&db, sql, n, vals);
        ok = db_res_ok(res);
        if (ok) {
            nwakes = (size_t)PQntuples(res);
            wakes = xmalloc((nwakes ? nwakes : 1) * sizeof *wakes);
            for (size_t i = 0; i < nwakes; i++)
                wakes[i] = (struct wake){db_i64(res, (int)i, 0), db_i64(res, (int)i, 1),
                                         evbody_new("receipt", db_i64(res, (int)i, 2), PQgetvalue(res, (int)i, 4),
                                                    PQgetvalue(res, (int)i, 3), (size_t)PQgetlength(res, (int)i, 3),
                                                    &no_message)};
        } else {
            nlog(LOG_WARN, failed,
                 json_pack("{s:s}", "error", res ? PQresultErrorMessage(res) : PQerrorMessage(db.conn)));
        }
        PQclear(res);
    }
    ok = ok && exec_ok("COMMIT");
    if (!ok) {
        if (PQstatus(db.conn) != CONNECTION_OK || !exec_ok("ROLLBACK"))
            db_session_close(&db);
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

/* One transaction for v[0..n); the wake-ups are done after COMMIT. */
static bool flush(const struct ack *v, size_t n)
{
    if (!db_session_open(&db, cfg->database_url))
        return false;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++)
        nh += v[i].nh;
    int64_t *u = xmalloc(n * sizeof *u), *d = xmalloc(n * sizeof *d), *s = xmalloc(n * sizeof *s);
    int64_t *hf = xmalloc(n * sizeof *hf);
    int64_t *hu = xmalloc((nh + 1) * sizeof *hu), *hs = xmalloc((nh + 1) * sizeof *hs);
    int64_t *hc = xmalloc((nh + 1) * sizeof *hc), *hm = xmalloc((nh + 1) * sizeof *hm);
    int64_t *hx = xmalloc((nh + 1) * sizeof *hx);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        u[i] = v[i].user;
        d[i] = v[i].device;
        s[i] = v[i].since;
        hf[i] = v[i].hint_from;
        for (uint32_t j = 0; j < v[i].nh; j++, k++) {
            hu[k] = v[i].user;
            hs[k] = v[i].h[j].seq;
            hc[k] = v[i].h[j].chat;
            hm[k] = v[i].h[j].mseq;
            hx[k] = v[i].h[j].sender;
        }
    }
    char *arrays[9] = {db_id_array(u, n),  db_id_array(d, n),  db_id_array(s, n),
                       db_id_array(hf, n), db_id_array(hu, k), db_id_array(hs, k),
                       db_id_array(hc, k), db_id_array(hm, k), db_id_array(hx, k)};
    free(u);
    free(d);
    free(s);
    free(hf);
    free(hu);
    free(hs);
    free(hc);
    free(hm);
    free(hx);
    const char *vals[9];
    for (int i = 0; i < 9; i++)
        vals[i] = arrays[i];
    bool ok = flush_tx(db_citus() ? sql_flush_citus : sql_flush, 9, vals, "ack flush failed (kept for the next one)");
    for (int i = 0; i < 9; i++)
        free(arrays[i]);
    return ok;
}

/* One transaction for the push acks p[0..n); wake-ups after COMMIT. */
static bool flush_pushes(const struct push_ack *p, size_t n)
{
    if (!db_session_open(&db, cfg->database_url))
        return false;
    int64_t *u = xmalloc(n * sizeof *u), *c = xmalloc(n * sizeof *c), *s = xmalloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++) {
        u[i] = p[i].user;
        c[i] = p[i].chat;
        s[i] = p[i].seq;
    }
    char *arrays[3] = {db_id_array(u, n), db_id_array(c, n), db_id_array(s, n)};
    free(u);
    free(c);
    free(s);
    const char *vals[3] = {arrays[0], arrays[1], arrays[2]};
    bool ok = flush_tx(db_citus() ? sql_push_flush_citus : sql_push_flush, 3, vals,
                       "push ack flush failed (kept for the next one)");
    for (int i = 0; i < 3; i++)
        free(arrays[i]);
    return ok;
}

/* Takes and flushes the pending push acks; false when it failed (given back
 * as far as there is room). */
static bool flush_pending_pushes(void)
{
    pthread_mutex_lock(&mu);
    size_t n = npushes;
    struct push_ack *p = n ? xmalloc(n * sizeof *p) : NULL;
    if (n)
        memcpy(p, pushes, n * sizeof *p);
    npushes = 0;
    pthread_mutex_unlock(&mu);
    if (n == 0)
        return true;
    bool ok = flush_pushes(p, n);
    if (ok) {
        atomic_fetch_add(&flushes, 1);
        atomic_fetch_add(&flushed, n);
    } else {
        atomic_fetch_add(&failures, 1);
        pthread_mutex_lock(&mu);
        size_t room = ACKS_MAX_PUSH - npushes, back = n < room ? n : room;
        memcpy(pushes + npushes, p, back * sizeof *p);
        npushes += back;
        pthread_mutex_unlock(&mu);
        if (back < n)
            atomic_fetch_add(&dropped, n - back);
    }
    free(p);
    return ok;
}

/* Takes and flushes what is pending; false when it failed (given back). */
static bool flush_pending(void)
{
    struct ack *v;
    pthread_mutex_lock(&mu);
    size_t n = take(&v);
    pthread_mutex_unlock(&mu);
    bool pushed = flush_pending_pushes();
    if (n == 0)
        return pushed;
    bool ok = flush(v, n);
    if (ok) {
        size_t h = 0;
        for (size_t i = 0; i < n; i++)
            h += v[i].hint_from >= 0;
        atomic_fetch_add(&flushes, 1);
        atomic_fetch_add(&flushed, n);
        atomic_fetch_add(&hinted, h);
    } else {
        atomic_fetch_add(&failures, 1);
        give_back(v, n);
    }
    free(v);
    return ok && pushed;
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
        while (nents == 0 && npushes == 0 && !stopping)
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
    if (nents || npushes) {
        nlog(LOG_WARN, "acks not flushed at shutdown (the devices ack again on their next poll)",
             json_pack("{s:I,s:I}", "devices", (json_int_t)nents, "push_acks", (json_int_t)npushes));
        nents = 0;
        npushes = 0;
    }
    pthread_mutex_unlock(&mu);
    db_session_close(&db);
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
    pushes = xmalloc(ACKS_MAX_PUSH * sizeof *pushes);
    npushes = 0;
    stopping = false;
    if (pthread_create(&thread, NULL, flusher, NULL) != 0) {
        nlog(LOG_ERROR, "cannot start the ack flusher", NULL);
        free(ents);
        free(slots);
        free(pushes);
        ents = NULL;
        slots = NULL;
        pushes = NULL;
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
    free(pushes);
    ents = NULL;
    slots = NULL;
    pushes = NULL;
    pthread_cond_destroy(&cv);
}
