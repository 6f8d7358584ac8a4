/*
 * main.c — runs every unit suite (pure logic: no database, no network). The
 * suites mirror the source tree: tests/unit/api/core/test_router.c tests
 * api/core/router.c, and so on.
 */
#include <sodium.h>

#include "unit.h"

int unit_passed, unit_failed;

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    suite_util();
    suite_jsonv();
    suite_jwt();
    suite_config();
    suite_auth();
    suite_sigv4();
    suite_cursor();
    suite_router();
    suite_deadlines();
    suite_recent();
    suite_wake_frame();
    suite_devcache();
    suite_log();
    suite_ratelimit();
    suite_typing();
    suite_redis();
    suite_search();
    printf("unit: %d passed, %d failed\n", unit_passed, unit_failed);
    return unit_failed ? 1 : 0;
}
