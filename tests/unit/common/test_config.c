/* test_config.c — configuration table: defaults, validation, production rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* NATTER_PUBLIC_URL as natter-api ends up with it, for this environment ("" = refused). */
static bool public_url_is(const char *const kv[][2], int n, const char *want, const char *err_has)
{
    struct config c;
    char *err = NULL;
    set_env(kv, n);
    int rc = load(ROLE_API, &err, &c);
    bool ok = *want ? rc == 0 && strcmp(c.public_url, want) == 0 && c.embedded_url == c.public_url
                    : rc == -1 && err && strstr(err, err_has) != NULL;
    if (!ok)
        fprintf(stderr, "  public url: got %s / %s, want %s\n", rc == 0 ? c.public_url : "-", err ? err : "-",
                *want ? want : err_has);
    if (rc == 0)
        config_free(&c);
    free(err);
    return ok;
}

/* Issue 11 item 14: the public URL's default follows the listen address and
 * port; the URL is normalised or refused at start. */
static void public_url(void)
{
    const char *const port[][2] = {{"NATTER_PORT", "9090"}};
    CHECK(public_url_is(port, 1, "http://127.0.0.1:9090", NULL));
    const char *const any4[][2] = {{"NATTER_LISTEN_ADDR", "0.0.0.0"}, {"NATTER_PORT", "7000"}};
    CHECK(public_url_is(any4, 2, "http://127.0.0.1:7000", NULL));
    const char *const any6[][2] = {{"NATTER_LISTEN_ADDR", "::"}};
    CHECK(public_url_is(any6, 1, "http://[::1]:8080", NULL));
    const char *const v6[][2] = {{"NATTER_LISTEN_ADDR", "::1"}, {"NATTER_PORT", "81"}};
    CHECK(public_url_is(v6, 2, "http://[::1]:81", NULL));
    const char *const host[][2] = {{"NATTER_LISTEN_ADDR", "10.1.2.3"}};
    CHECK(public_url_is(host, 1, "http://10.1.2.3:8080", NULL));
    const char *const given[][2] = {{"NATTER_PUBLIC_URL", "https://chat.example.com"}, {"NATTER_PORT", "9090"}};
    CHECK(public_url_is(given, 2, "https://chat.example.com", NULL));
    const char *const slash[][2] = {{"NATTER_PUBLIC_URL", "http://127.0.0.1:8080/"}};
    CHECK(public_url_is(slash, 1, "http://127.0.0.1:8080", NULL));
    const char *const prefix[][2] = {{"NATTER_PUBLIC_URL", "https://example.com/natter/"}};
    CHECK(public_url_is(prefix, 1, "", "path prefix"));
    const char *const query[][2] = {{"NATTER_PUBLIC_URL", "http://example.com/?x=1"}};
    CHECK(public_url_is(query, 1, "", "NATTER_PUBLIC_URL"));
    const char *const scheme[][2] = {{"NATTER_PUBLIC_URL", "ftp://example.com"}};
    CHECK(public_url_is(scheme, 1, "", "NATTER_PUBLIC_URL"));
    const char *const junk[][2] = {{"NATTER_PUBLIC_URL", "not a url"}};
    CHECK(public_url_is(junk, 1, "", "NATTER_PUBLIC_URL"));
    /* found by fuzz_url: libcurl decodes the host "%39" to "9" and reads that next time as
     * 0.0.0.9; the URL kept is the stable one */
    const char *const pct[][2] = {{"NATTER_PUBLIC_URL", "http:/%39"}};
    CHECK(public_url_is(pct, 1, "http://0.0.0.9", NULL));
    const char *const s3[][2] = {{"NATTER_S3_ENDPOINT", "https://s3.example.com/"},
                                 {"NATTER_S3_SECRET_KEY", "0123456789abcdef0123456789abcdef"}};
    CHECK(public_url_is(s3, 2, "http://127.0.0.1:8080", NULL));
    const char *const s3bad[][2] = {{"NATTER_S3_ENDPOINT", "https://s3.example.com/bucket"}};
    CHECK(public_url_is(s3bad, 1, "", "NATTER_S3_ENDPOINT"));

    /* the worker reaches the embedded store at NATTER_STORE_URL, not at the public URL */
    struct config c;
    char *err = NULL;
    const char *const w[][2] = {{"NATTER_STORE_URL", "http://api:8080/"}, {"NATTER_PUBLIC_URL", "http://x:1"}};
    set_env(w, 2);
    CHECK(load(ROLE_WORKER, &err, &c) == 0 && strcmp(c.embedded_url, "http://api:8080") == 0);
    config_free(&c);
}

/* natter-api and natter-worker start together on a fresh state dir: each
 * generates or reads the development secret. Many processes racing on it all
 * get the same complete secret, never a half-written file. */
static void dev_secret_race(void)
{
    enum { ROUNDS = 10, PROCS = 12 };
    for (int round = 0; round < ROUNDS; round++) {
        char dir[] = "/tmp/natter-unit-secret.XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        int go[2], res[2];
        CHECK(pipe(go) == 0 && pipe(res) == 0);
        for (int i = 0; i < PROCS; i++) {
            if (fork() == 0) {
                char b;
                close(go[1]);
                (void)!read(go[0], &b, 1); /* all start at once */
                struct config c;
                char *err = NULL;
                set_env(NULL, 0);
                int ok = load(ROLE_WORKER, &err, &c) == 0;
                free(c.state_dir);
                c.state_dir = strdup(dir);
                free(c.s3_secret_key);
                c.s3_secret_key = NULL;
                char line[80] = "error\n";
                if (ok && config_s3_secret(&c, &err) == 0 && strlen(c.s3_secret_key) == 64)
                    snprintf(line, sizeof line, "%.64s\n", c.s3_secret_key);
                (void)!write(res[1], line, strlen(line)); /* < PIPE_BUF: atomic */
                _exit(0);
            }
        }
        close(go[0]);
        close(res[1]);
        close(go[1]); /* EOF: go */
        char buf[PROCS * 80 + 1];
        size_t n = 0;
        ssize_t k;
        while (n < sizeof buf - 1 && (k = read(res[0], buf + n, sizeof buf - 1 - n)) > 0)
            n += (size_t)k;
        buf[n] = '\0';
        close(res[0]);
        for (int i = 0; i < PROCS; i++)
            wait(NULL);
        int lines = 0, same = 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            lines++;
            same += strlen(l) == 64 && strncmp(l, buf, 64) == 0;
        }
        CHECK(lines == PROCS && same == PROCS);
        char cmd[80];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
    }
}

/* NATTER_WORKER_LISTEN: address:port, an IPv6 address in brackets. */
static void host_port(void)
{
    static const struct {
        const char *in, *host;
        int port; /* 0 = refused */
    } cases[] = {
        {"127.0.0.1:8081", "127.0.0.1", 8081},
        {"0.0.0.0:1", "0.0.0.0", 1},
        {"[::1]:65535", "::1", 65535},
        {"[::]:9100", "::", 9100},
        {"8081", NULL, 0},
        {"127.0.0.1", NULL, 0},
        {"127.0.0.1:", NULL, 0},
        {":8081", NULL, 0},
        {"127.0.0.1:0", NULL, 0},
        {"127.0.0.1:65536", NULL, 0},
        {"127.0.0.1:80x", NULL, 0},
        {"127.0.0.1:-1", NULL, 0},
        {"localhost:8081", NULL, 0},
        {"::1:8081", NULL, 0},
        {"[::1]8081", NULL, 0},
        {"[::1:8081", NULL, 0},
        {"[127.0.0.1]:8081", NULL, 0},
        {"[]:8081", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char host[64] = "", *err = NULL;
        int port = -1;
        int rc = config_host_port("NATTER_WORKER_LISTEN", cases[i].in, host, sizeof host, &port, &err);
        if (cases[i].port) {
            CHECK(rc == 0 && !err && strcmp(host, cases[i].host) == 0 && port == cases[i].port);
        } else {
            CHECK(rc == -1 && err && strstr(err, "NATTER_WORKER_LISTEN"));
            if (rc != -1 || !err)
                fprintf(stderr, "  accepted %s\n", cases[i].in);
        }
        free(err);
    }
    char tiny[4], *err = NULL; /* an address longer than the buffer is refused, not cut */
    int port;
    CHECK(config_host_port("X", "127.0.0.1:80", tiny, sizeof tiny, &port, &err) == -1 && err);
    free(err);

    struct config c;
    const char *const bad[][2] = {{"NATTER_WORKER_LISTEN", "127.0.0.1:99999"}};
    set_env(bad, 1);
    CHECK(load(ROLE_WORKER, &err, &c) == -1 && err && strstr(err, "NATTER_WORKER_LISTEN"));
    free(err);
    CHECK(load(ROLE_API, &err, &c) == 0); /* not natter-api's setting */
    config_free(&c);
    const char *const off[][2] = {{"NATTER_WORKER_LISTEN", ""}};
    set_env(off, 1);
    CHECK(load(ROLE_WORKER, &err, &c) == 0 && strcmp(c.worker_listen, "") == 0);
    config_free(&c);
    set_env(NULL, 0);
    CHECK(load(ROLE_WORKER, &err, &c) == 0 && strcmp(c.worker_listen, "127.0.0.1:8081") == 0);
    config_free(&c);
}

void suite_config(void)
{
    public_url();
    dev_secret_race();
    host_port();

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
