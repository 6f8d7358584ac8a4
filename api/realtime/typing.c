/*
 * typing.c — see typing.h.
 */
#include "typing.h"

#include <jansson.h>
#include <pthread.h>

#include "bus.h"
#include "util.h"

/* ---- coalescing: the last state sent on per (chat, member) ----
 * A fixed table, direct-mapped: a slot taken over by another (chat, member)
 * forgets the previous one, which can only let one extra event through. */
#define TYPING_SLOTS 16384 /* a power of two */
#define TYPING_STRIPES 64

struct typing_slot {
    int64_t chat_id, user_id; /* 0, 0 = free */
    int64_t sent_ms;          /* when the last event went out */
    bool typing;              /* its state */
};

static struct typing_slot slots[TYPING_SLOTS];
static pthread_mutex_t stripes[TYPING_STRIPES] = {
#define M4 PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER
    M4, M4, M4, M4, M4, M4, M4, M4, M4, M4, M4, M4, M4, M4, M4, M4,
#undef M4
};

bool typing_due(int64_t chat_id, int64_t user, bool typing, int64_t now_ms, int window_ms)
{
    uint64_t h = (uint64_t)chat_id * 0x9E3779B97F4A7C15ull ^ (uint64_t)user * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    size_t i = (size_t)(h & (TYPING_SLOTS - 1));
    pthread_mutex_t *mu = &stripes[i % TYPING_STRIPES];
    pthread_mutex_lock(mu);
    struct typing_slot *s = &slots[i];
    bool same = s->chat_id == chat_id && s->user_id == user;
    bool due = !same || s->typing != typing || now_ms - s->sent_ms >= window_ms || now_ms < s->sent_ms;
    if (due)
        *s = (struct typing_slot){chat_id, user, now_ms, typing};
    pthread_mutex_unlock(mu);
    return due;
}

void typing_announce(int64_t chat_id, int64_t user, bool typing, const int64_t *to, size_t n)
{
    char ts[40];
    rfc3339_now(ts, sizeof ts);
    json_t *ev = json_pack("{s:n,s:s,s:I,s:s,s:{s:I,s:I,s:b}}", "seq", "type", "typing", "chat_id", (json_int_t)chat_id,
                           "created_at", ts, "data", "chat_id", (json_int_t)chat_id, "user_id", (json_int_t)user,
                           "typing", typing);
    bus_ephemeral(to, n, ev);
    json_decref(ev);
}
