/*
 * typing.c — see typing.h.
 */
#include "typing.h"

#include <jansson.h>

#include "bus.h"
#include "util.h"

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
