/* test_redis.c — NATTER_REDIS_URL parsing (redis_url_parse): IPv6 hosts, ACL
 * users, percent-encoded passwords, defaults and refusals. */
#include <stdlib.h>
#include <string.h>

#include "redis.h"
#include "unit.h"

static bool str_is(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

/* Parses url and checks every field of the result. */
static void parses(const char *url, const char *host, int port, const char *user, const char *pw, int db)
{
    struct redis_addr a;
    char *err = NULL;
    int rc = redis_url_parse(url, &a, &err);
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "  %s: %s\n", url, err ? err : "?");
        free(err);
        return;
    }
    CHECK(str_is(a.host, host));
    CHECK(a.path == NULL);
    CHECK(a.port == port);
    CHECK(str_is(a.username, user));
    CHECK(str_is(a.password, pw));
    CHECK(a.db == db);
    redis_addr_free(&a);
}

static void refused(const char *url)
{
    struct redis_addr a;
    char *err = NULL;
    CHECK(redis_url_parse(url, &a, &err) == -1);
    CHECK(err && strstr(err, "NATTER_REDIS_URL") != NULL);
    CHECK(a.host == NULL && a.password == NULL);
    free(err);
}

void suite_redis(void)
{
    parses("redis://127.0.0.1:6379/0", "127.0.0.1", 6379, NULL, NULL, 0);
    parses("redis://localhost", "localhost", 6379, NULL, NULL, 0);
    parses("redis://[::1]:6380/2", "::1", 6380, NULL, NULL, 2);
    parses("redis://[::1]", "::1", 6379, NULL, NULL, 0);
    parses("redis://natter:s3cret@10.0.0.5:7000/1", "10.0.0.5", 7000, "natter", "s3cret", 1);
    parses("redis://user:p%40ss%3Aw%2Fo%25rd@[::1]:6379/2", "::1", 6379, "user", "p@ss:w/o%rd", 2);
    parses("redis://:only%20pw@host:1", "host", 1, NULL, "only pw", 0);
    parses("redis://legacy@host", "host", 6379, NULL, "legacy", 0); /* old form: the password alone */
    parses("redis://host:6379/", "host", 6379, NULL, NULL, 0);

    struct redis_addr a;
    char *err = NULL;
    CHECK(redis_url_parse("unix:///tmp/r.sock", &a, &err) == 0);
    CHECK(str_is(a.path, "/tmp/r.sock") && a.host == NULL);
    redis_addr_free(&a);

    refused("unix://");
    refused("http://host:6379");
    refused("redis://");
    refused("redis://host:0");
    refused("redis://host:70000");
    refused("redis://host/abc");
    refused("redis://host/2000");
    refused("redis://host/1?x=1");
    refused("redis://[::1");
}
