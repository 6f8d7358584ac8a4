/*
 * fuzz.h — shared by the libFuzzer harnesses in tests/fuzz/ (built by
 * `make fuzz-build` with clang, run briefly by `make test` and longer by
 * `make fuzz`). A harness checks properties of what the parser answers, not
 * only that it does not crash: FUZZ_ASSERT aborts, and libFuzzer saves the
 * input that broke it.
 */
#ifndef NATTER_FUZZ_H
#define NATTER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_INPUT 65536 /* longer inputs are not parsed: every harness is bounded */

#define FUZZ_ASSERT(cond)                                                               \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL-terminated copy of data (owned); embedded NULs end the string early,
 * as they would in a header or a query value. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
