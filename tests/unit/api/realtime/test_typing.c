/* test_typing.c — typing coalescing (typing_due): one event per state change,
 * repeats of a state only once per window, members and chats apart. */
#include "typing.h"
#include "unit.h"

void suite_typing(void)
{
    const int w = 2500;
    int64_t t = 1000000;
    CHECK(typing_due(7, 1, true, t, w));         /* first: sent */
    CHECK(!typing_due(7, 1, true, t + 10, w));   /* a repeat inside the window: not */
    CHECK(!typing_due(7, 1, true, t + 2499, w)); /* ... nor at its end */
    CHECK(typing_due(7, 2, true, t + 10, w));    /* another member */
    CHECK(typing_due(8, 1, true, t + 10, w));    /* another chat */
    CHECK(typing_due(7, 1, false, t + 20, w));   /* a change of state always goes */
    CHECK(typing_due(7, 1, true, t + 30, w));    /* and back */
    CHECK(!typing_due(7, 1, true, t + 40, w));
    CHECK(typing_due(7, 1, true, t + 30 + w, w)); /* the window has passed: a refresh goes */

    /* a flood of repeats: one event per window */
    int sent = 0;
    for (int i = 0; i < 1000; i++) /* 10 s, a request every 10 ms */
        sent += typing_due(9, 3, true, t + 100000 + (int64_t)i * 10, w);
    CHECK(sent == 4);
    CHECK(typing_due(9, 4, true, t, 0)); /* window 0: everything goes */
    CHECK(typing_due(9, 4, true, t, 0));
}
