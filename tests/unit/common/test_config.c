/* test_config.c — configuration table: defaults, validation, production rules. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "unit.h"

static const char *fake_env[32][2];

static const char *fake_getenv(const char *k)
{
    for (int i = 0; i < 32 && fake_env[i][0]; i++)
        if (strcmp(fake_env[i][0], k) == 0)
            return fake_env[i][1];
    return NULL;
}

static void set_env(const char *const kv[][2], int n)
{
    memset(fake_env, 0, sizeof fake_env);
    for (int i = 0; i < n; i++) {
        fake_env[i][0] = kv[i][0];
        fake_env[i][1] = kv[i][1];
    }
}

static int load(enum config_role role, char **err, struct config *c)
{
    return config_load(c, role, fake_getenv, err);
}

void suite_config(void)
{
    struct config c;
    char *err = NULL;

    set_env(NULL, 0);
    CHECK(load(ROLE_API, &err, &c) == 0);
    CHECK(c.port == 8080 && strcmp(c.listen_addr, "127.0.0.1") == 0 && !c.production);
    CHECK(c.jwt_secret == NULL && c.access_token_ttl == 900);
    config_free(&c);

    const char *const e1[][2] = {{"NATTER_PORT", "abc"}};
    set_env(e1, 1);
    CHECK(load(ROLE_API, &err, &c) == -1 && err && strstr(err, "NATTER_PORT"));
    free(err);

    const char *const e2[][2] = {{"NATTER_PORT", "70000"}};
    set_env(e2, 1);
    CHECK(load(ROLE_API, &err, &c) == -1 && strstr(err, "NATTER_PORT"));
    free(err);

    const char *const e3[][2] = {{"NATTER_ENV", "production"}};
    set_env(e3, 1);
    CHECK(load(ROLE_API, &err, &c) == -1 && strstr(err, "NATTER_JWT_SECRET"));
    free(err);
    /* the worker signs nothing: production without a JWT secret is fine there */
    CHECK(load(ROLE_WORKER, &err, &c) == 0 && c.production);
    config_free(&c);

    const char *const e4[][2] = {{"NATTER_ENV", "production"}, {"NATTER_JWT_SECRET", "short"}};
    set_env(e4, 2);
    CHECK(load(ROLE_API, &err, &c) == -1 && strstr(err, "32 bytes"));
    free(err);

    const char *const e5[][2] = {{"NATTER_ENV", "production"},
                                 {"NATTER_JWT_SECRET", "0123456789abcdef0123456789abcdef"},
                                 {"NATTER_HTTP_THREADS", "3"}};
    set_env(e5, 3);
    CHECK(load(ROLE_API, &err, &c) == 0 && c.production && c.http_threads == 3);
    config_free(&c);

    const char *const e6[][2] = {{"NATTER_ENV", "staging"}};
    set_env(e6, 1);
    CHECK(load(ROLE_API, &err, &c) == -1 && strstr(err, "NATTER_ENV"));
    free(err);

    const char *const e7[][2] = {{"NATTER_WORKER_THREADS", "0"}};
    set_env(e7, 1);
    CHECK(load(ROLE_WORKER, &err, &c) == -1 && strstr(err, "NATTER_WORKER_THREADS"));
    free(err);

    const char *const e8[][2] = {{"NATTER_ENV", "production"},
                                 {"NATTER_JWT_SECRET", "0123456789abcdef0123456789abcdef"},
                                 {"NATTER_PWHASH_COST", "min"}};
    set_env(e8, 3);
    CHECK(load(ROLE_API, &err, &c) == -1 && strstr(err, "NATTER_PWHASH_COST"));
    free(err);
}
