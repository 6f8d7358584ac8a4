/*
 * unit.h — a tiny test harness: CHECK() records a failure and goes on;
 * main.c runs every suite and prints "N passed, N failed".
 */
#ifndef NATTER_UNIT_H
#define NATTER_UNIT_H

#include <stdbool.h>
#include <stdio.h>

extern int unit_passed, unit_failed;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (cond) {                                                         \
            unit_passed++;                                                  \
        } else {                                                            \
            unit_failed++;                                                  \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                   \
    } while (0)

void suite_util(void);
void suite_jsonv(void);
void suite_jwt(void);
void suite_config(void);
void suite_auth(void);
void suite_sigv4(void);
void suite_cursor(void);
void suite_router(void);
void suite_deadlines(void);
void suite_recent(void);
void suite_wake_frame(void);
void suite_devcache(void);
void suite_log(void);
void suite_ratelimit(void);
void suite_typing(void);
void suite_redis(void);
void suite_search(void);

#endif
