/*
 * fuzz_url.c — the URLs natter reads from its settings: NATTER_REDIS_URL
 * (redis_url_parse) and the base URLs NATTER_PUBLIC_URL / NATTER_S3_ENDPOINT
 * (config_base_url), both on libcurl's parser. Properties: exactly one of a
 * result and an error message; a Redis address is a TCP host with a port in
 * 1..65535 or a socket path, never both, with a db in 0..1000; a base URL
 * accepted is http(s)://host[:port] with no path, query or user, and is
 * accepted again unchanged (normalising is idempotent).
 */
#include <stdbool.h>

#include "config.h"
#include "fuzz.h"
#include "redis.h"

static void check_redis(const char *s)
{
    struct redis_addr a;
    char *err = NULL;
    if (redis_url_parse(s, &a, &err) == 0) {
        FUZZ_ASSERT(err == NULL);
        FUZZ_ASSERT((a.host != NULL) != (a.path != NULL));
        if (a.host)
            FUZZ_ASSERT(a.port >= 1 && a.port <= 65535);
        FUZZ_ASSERT(a.db >= 0 && a.db <= 1000);
        FUZZ_ASSERT(!a.username || a.password);
        redis_addr_free(&a);
    } else {
        FUZZ_ASSERT(err != NULL);
        free(err);
    }
}

static void check_base(const char *s)
{
    char *err = NULL;
    char *base = config_base_url("NATTER_PUBLIC_URL", s, &err);
    FUZZ_ASSERT((base == NULL) != (err == NULL));
    if (base) {
        FUZZ_ASSERT(strncmp(base, "http://", 7) == 0 || strncmp(base, "https://", 8) == 0);
        const char *rest = strstr(base, "://") + 3;
        FUZZ_ASSERT(*rest && !strpbrk(rest, "/?#@"));
        char *err2 = NULL;
        char *again = config_base_url("NATTER_PUBLIC_URL", base, &err2);
        FUZZ_ASSERT(again && strcmp(again, base) == 0);
        free(again);
        free(base);
    }
    free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2048)
        return 0;
    char *s = fuzz_cstr(data, size);
    check_redis(s);
    check_base(s);
    free(s);
    return 0;
}
