/*
 * test_log.c — the asynchronous logger: the format of a line, log_flush()
 * writing everything accepted, lines from many threads whole and in each
 * thread's order, drops counted (and reported in the log) when the buffer is
 * full, synchronous logging in the child of a fork.
 *
 * stderr is redirected (dup2) to a temporary file or a pipe while a test logs,
 * and restored before any CHECK, so failures still reach the terminal.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"
#include "util.h"

/* Points fd 2 at fd; returns the saved stderr for capture_end. */
static int capture_begin(int fd)
{
    log_flush(); /* earlier lines belong to the real stderr */
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    return saved;
}

static void capture_end(int saved)
{
    log_flush();
    dup2(saved, STDERR_FILENO);
    close(saved);
}

/* A fresh, already unlinked temporary file. */
static int temp_fd(void)
{
    char path[] = "/tmp/natter-test-log-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
}

/* Whole content of fd from its start; owned, NUL-terminated. */
static char *slurp(int fd)
{
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap);
    ssize_t r;
    while ((r = pread(fd, buf + len, cap - len - 1, (off_t)len)) > 0) {
        len += (size_t)r;
        if (cap - len < 4096) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    buf[len] = '\0';
    return buf;
}

/* Calls fn for each line of text (without its newline); counts lines that do
 * not end with a newline (a torn last line) in *partial. */
static void each_line(const char *text, void (*fn)(const char *line, size_t len, void *ctx), void *ctx, int *partial)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) {
            (*partial)++;
            return;
        }
        fn(p, (size_t)(nl - p), ctx);
        p = nl + 1;
    }
}

/* ---- the format of one line ---- */

static void test_format(void)
{
    int fd = temp_fd();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    unsigned long long written0 = log_written();
    int saved = capture_begin(fd);
    nlog(LOG_DEBUG, "below the level", json_pack("{s:i}", "n", 1)); /* not written */
    nlog(LOG_WARN, "unit \"line\"\n",
         json_pack("{s:s,s:s,s:i,s:s,s:f}", "rid", "r-1", "method", "GET", "status", 200, "msg", "ignored", "ms", 1.5));
    nlog(LOG_INFO, NULL, NULL);
    capture_end(saved);
    char *text = slurp(fd);
    close(fd);

    CHECK(log_written() - written0 == 2);
    char *second = strchr(text, '\n');
    CHECK(second != NULL);
    if (!second) {
        free(text);
        return;
    }
    *second++ = '\0';
    /* the exact layout after the timestamp: fixed fields first, then the
     * caller's in their order, the caller's "msg" ignored */
    CHECK(strncmp(text, "{\"ts\":\"", 7) == 0);
    const char *rest = strstr(text, "\",\"level\"");
    CHECK(rest && strcmp(rest,
                         "\",\"level\":\"warn\",\"service\":\"natter-unit\",\"msg\":\"unit \\\"line\\\"\\n\","
                         "\"rid\":\"r-1\",\"method\":\"GET\",\"status\":200,\"ms\":1.5}") == 0);
    json_error_t err;
    json_t *o = json_loads(text, 0, &err);
    CHECK(o != NULL);
    const char *order[] = {"ts", "level", "service", "msg", "rid", "method", "status", "ms"};
    size_t i = 0;
    for (void *it = json_object_iter(o); it && i < 8; it = json_object_iter_next(o, it), i++)
        CHECK(strcmp(json_object_iter_key(it), order[i]) == 0);
    CHECK(i == 8 && json_object_size(o) == 8);
    const char *ts = json_string_value(json_object_get(o, "ts"));
    CHECK(ts && strlen(ts) == 24 && ts[4] == '-' && ts[10] == 'T' && ts[23] == 'Z'); /* 2026-11-21T09:10:31.123Z */
    json_decref(o);
    CHECK(strcmp(second, "\n") != 0 &&
          strstr(second, "\"level\":\"info\",\"service\":\"natter-unit\",\"msg\":\"\"}\n"));
    CHECK(strchr(second, '\n') == second + strlen(second) - 1); /* exactly two lines */
    free(text);
}

/* ---- nlog_fields: the same line as nlog, without jansson; hostile strings stay JSON ---- */

static void test_fields(void)
{
    int fd = temp_fd();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    int saved = capture_begin(fd);
    struct log_field f[] = {
        {"rid", LF_STR, "r-1", 0, 0},
        {"status", LF_INT, NULL, -200, 0},
        {"ms", LF_REAL, NULL, 0, 1.5},
        {"whole", LF_REAL, NULL, 0, 2.0},
        {"null", LF_STR, NULL, 0, 0},
        /* quote, backslash, control characters, valid UTF-8, then broken UTF-8
         * (a lone continuation byte, a truncated sequence, an overlong "/", a surrogate) */
        {"path", LF_STR, "/a\"b\\c\x01\n\xc3\xa9\xf0\x9f\x98\x80|\x80|\xe2\x82|\xc0\xaf|\xed\xa0\x80|", 0, 0},
    };
    nlog_fields(LOG_WARN, "fields", f, sizeof f / sizeof *f);
    nlog_fields(LOG_DEBUG, "below the level", f, 1);
    nlog(LOG_WARN, "fields",
         json_pack("{s:s,s:I,s:f,s:f,s:s}", "rid", "r-1", "status", (json_int_t)-200, "ms", 1.5, "whole", 2.0, "null",
                   ""));
    log_flush();
    capture_end(saved);
    char *text = slurp(fd);
    close(fd);
    char *second = text ? strchr(text, '\n') : NULL;
    CHECK(second != NULL);
    if (!second) {
        free(text);
        return;
    }
    *second++ = '\0';
    json_error_t err;
    json_t *a = json_loads(text, 0, &err), *b = json_loads(second, 0, &err);
    CHECK(a != NULL && b != NULL);
    if (a && b) {
        /* every field nlog writes, nlog_fields writes the same (ts aside) */
        const char *key;
        json_t *v;
        json_object_foreach(b, key, v) {
            if (strcmp(key, "ts") != 0)
                CHECK(json_equal(v, json_object_get(a, key)));
        }
        CHECK(strcmp(json_string_value(json_object_get(a, "path")),
                     "/a\"b\\c\x01\n\xc3\xa9\xf0\x9f\x98\x80|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
                     "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|") == 0);
        CHECK(json_object_size(a) == json_object_size(b) + 1); /* path */
    }
    CHECK(strstr(text, "\"ms\":1.5,\"whole\":2.0,") != NULL); /* reals as jansson writes them */
    CHECK(strstr(second, "below the level") == NULL);
    json_decref(a);
    json_decref(b);
    free(text);
}

/* A line past the stack buffer (a long path of bytes that are not UTF-8, as
 * a client may send) is still whole and valid JSON, every field kept. */
static void test_fields_long(void)
{
    int fd = temp_fd();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    char path[3001];
    for (size_t i = 0; i < sizeof path - 1; i++)
        path[i] = i % 3 == 0 ? '/' : (char)0xff;
    path[sizeof path - 1] = '\0';
    int saved = capture_begin(fd);
    struct log_field f[] = {
        {"request_id", LF_STR, "r-long", 0, 0},
        {"path", LF_STR, path, 0, 0},
        {"status", LF_INT, NULL, 404, 0},
        {"ip", LF_STR, "127.0.0.1", 0, 0},
    };
    nlog_fields(LOG_WARN, "long", f, sizeof f / sizeof *f);
    log_flush();
    capture_end(saved);
    char *text = slurp(fd);
    close(fd);
    json_error_t err;
    json_t *a = text ? json_loads(text, JSON_DISABLE_EOF_CHECK, &err) : NULL;
    CHECK(a != NULL);
    if (a) {
        CHECK(strcmp(json_string_value(json_object_get(a, "request_id")), "r-long") == 0);
        CHECK(json_integer_value(json_object_get(a, "status")) == 404);
        CHECK(json_string_value(json_object_get(a, "ip")) != NULL);
        const char *p = json_string_value(json_object_get(a, "path"));
        CHECK(p != NULL && strlen(p) == 1000 + 2000 * 3); /* each 0xff became U+FFFD (3 bytes) */
    }
    CHECK(text && strchr(text, '\n') == text + strlen(text) - 1); /* one line */
    json_decref(a);
    free(text);
}

/* ---- log_flush() writes everything accepted, in order ---- */

struct seq_check {
    const char *msg; /* lines with another msg are ignored */
    int threads;
    int *next;   /* next expected i per thread (contiguous) or last seen + 1 */
    int lines;   /* lines with msg */
    int bad;     /* lines that are not JSON objects, or out of order */
    bool gaps;   /* allow gaps in i (drops), still strictly increasing */
    long notice; /* sum of "dropped" over drop notices */
};

static void seq_line(const char *line, size_t len, void *ctx)
{
    struct seq_check *c = ctx;
    json_error_t err;
    json_t *o = json_loadb(line, len, 0, &err);
    if (!json_is_object(o)) {
        c->bad++;
        json_decref(o);
        return;
    }
    const char *msg = json_string_value(json_object_get(o, "msg"));
    if (msg && strcmp(msg, "log lines dropped") == 0) {
        c->notice += (long)json_integer_value(json_object_get(o, "dropped"));
    } else if (msg && strcmp(msg, c->msg) == 0) {
        int t = (int)json_integer_value(json_object_get(o, "t"));
        int i = (int)json_integer_value(json_object_get(o, "i"));
        if (t < 0 || t >= c->threads || (c->gaps ? i < c->next[t] : i != c->next[t]))
            c->bad++;
        else
            c->next[t] = i + 1;
        c->lines++;
    }
    json_decref(o);
}

static void test_flush(void)
{
    int fd = temp_fd();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    int saved = capture_begin(fd);
    unsigned long long written0 = log_written();
    for (int i = 0; i < 5000; i++)
        nlog(LOG_INFO, "flush test", json_pack("{s:i,s:i}", "t", 0, "i", i));
    log_flush();
    unsigned long long written = log_written() - written0; /* at once: the last lines were queued µs ago */
    char *text = slurp(fd);                                /* read before capture_end: log_flush alone must suffice */
    capture_end(saved);
    close(fd);

    int next = 0, partial = 0;
    struct seq_check c = {.msg = "flush test", .threads = 1, .next = &next};
    each_line(text, seq_line, &c, &partial);
    CHECK(written == 5000);
    CHECK(c.lines == 5000 && next == 5000);
    CHECK(c.bad == 0 && partial == 0);
    free(text);
}

/* ---- many threads at once: lines whole, each thread's in its order ---- */

#define THREADS 8
#define PER_THREAD 2000

static void *log_many(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        nlog(LOG_INFO, "thread test",
             json_pack("{s:i,s:i,s:s,s:s}", "t", t, "i", i, "rid", "0123456789abcdef", "path",
                       "/v1/chats/00000000-0000-0000-0000-000000000000/messages"));
    return NULL;
}

static void test_threads(void)
{
    int fd = temp_fd();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    unsigned long long dropped0 = log_dropped();
    int saved = capture_begin(fd);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, log_many, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    capture_end(saved);
    char *text = slurp(fd);
    close(fd);

    int next[THREADS] = {0}, partial = 0;
    struct seq_check c = {.msg = "thread test", .threads = THREADS, .next = next};
    each_line(text, seq_line, &c, &partial);
    CHECK(log_dropped() == dropped0); /* 2 MB fit in the 4 MiB buffer */
    CHECK(c.lines == THREADS * PER_THREAD);
    CHECK(c.bad == 0 && partial == 0);
    for (int t = 0; t < THREADS; t++)
        CHECK(next[t] == PER_THREAD);
    free(text);
}

/* ---- a full buffer drops lines, counts them and says so in the log ---- */

struct reader {
    int fd;
    pthread_mutex_t mu;
    char *buf; /* owned, NUL-terminated */
    size_t len, cap;
};

static void *read_pipe(void *arg)
{
    struct reader *rd = arg;
    char chunk[8192];
    ssize_t r;
    while ((r = read(rd->fd, chunk, sizeof chunk)) > 0) {
        pthread_mutex_lock(&rd->mu);
        if (rd->cap - rd->len <= (size_t)r) {
            rd->cap = (rd->cap + (size_t)r) * 2;
            rd->buf = xrealloc(rd->buf, rd->cap);
        }
        memcpy(rd->buf + rd->len, chunk, (size_t)r);
        rd->len += (size_t)r;
        rd->buf[rd->len] = '\0';
        pthread_mutex_unlock(&rd->mu);
    }
    return NULL;
}

/* Parses what the reader has so far into a fresh *c. */
static void reader_check(struct reader *rd, struct seq_check *c, int *next, int *partial)
{
    *next = 0;
    *partial = 0;
    *c = (struct seq_check){.msg = "drop test", .threads = 1, .next = next, .gaps = true};
    pthread_mutex_lock(&rd->mu);
    each_line(rd->buf, seq_line, c, partial);
    pthread_mutex_unlock(&rd->mu);
}

static void test_drops(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096); /* best effort: the test holds with 64 KiB too */
    struct reader rd = {.fd = p[0], .mu = PTHREAD_MUTEX_INITIALIZER, .buf = xcalloc(1, 1), .cap = 1};
    unsigned long long dropped0 = log_dropped();
    log_test_set_capacity(1024);
    int saved = capture_begin(p[1]);
    close(p[1]);
    /* nobody reads yet: the writer blocks on the full pipe, the ring fills, the
     * rest is dropped (300 KB of lines against at most 64 KiB + 1 KiB) */
    const int total = 3000;
    for (int i = 0; i < total; i++)
        nlog(LOG_INFO, "drop test",
             json_pack("{s:i,s:i,s:s}", "t", 0, "i", i, "pad", "................................"));
    unsigned long long burst_drops = log_dropped() - dropped0;
    /* a line bigger than the whole buffer is dropped even when it is empty */
    pthread_t th;
    pthread_create(&th, NULL, read_pipe, &rd);
    log_flush();
    char big[1500];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    nlog(LOG_INFO, "drop test", json_pack("{s:i,s:i,s:s}", "t", 0, "i", total, "big", big));
    unsigned long long drops = log_dropped() - dropped0;
    /* the notices follow the batches asynchronously: wait for them to add up */
    struct seq_check c;
    int next, partial;
    for (int waited = 0; waited < 5000; waited += 10) {
        log_flush();
        reader_check(&rd, &c, &next, &partial);
        if (c.notice >= (long)drops)
            break;
        usleep(10000);
    }
    capture_end(saved); /* the last write end goes: the reader sees EOF */
    pthread_join(th, NULL);
    close(p[0]);
    log_test_set_capacity(0);
    reader_check(&rd, &c, &next, &partial);

    CHECK(burst_drops > 0 && burst_drops < (unsigned long long)total);
    CHECK(drops == burst_drops + 1);
    CHECK(c.lines == total - (int)burst_drops); /* everything accepted arrived */
    CHECK(c.notice == (long)drops);             /* every drop reported */
    CHECK(c.bad == 0 && partial == 0);
    CHECK(strstr(rd.buf, "\"level\":\"warn\",\"service\":\"natter-unit\",\"msg\":\"log lines dropped\",\"dropped\":"));
    free(rd.buf);
}

/* ---- the child of a fork has no writer thread: it logs synchronously ---- */

static void test_fork(void)
{
    int fd = temp_fd();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    int saved = capture_begin(fd);
    nlog(LOG_INFO, "before fork", NULL);
    pid_t pid = fork();
    if (pid == 0) {
        nlog(LOG_INFO, "in the child", NULL);
        _exit(0); /* no atexit: the line must already be out */
    }
    int status = -1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    capture_end(saved);
    char *text = slurp(fd);
    close(fd);
    CHECK(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strstr(text, "\"msg\":\"in the child\"") != NULL);
    const char *first = strstr(text, "\"msg\":\"before fork\"");
    CHECK(first && !strstr(first + 1, "\"msg\":\"before fork\"")); /* the child did not write the parent's lines */
    free(text);
}

/* log_printable: a library's message cut of trailing blanks, non-printable bytes replaced. */
static void test_printable(void)
{
    char a[] = "Error: \x1b[31mbad\x7f\xc3\xa9 head\r\n \n";
    log_printable(a);
    CHECK(strcmp(a, "Error: ?[31mbad??? head?") == 0);
    char b[] = "\n\n";
    log_printable(b);
    CHECK(b[0] == '\0');
}

void suite_log(void)
{
    log_set_service("natter-unit");
    log_set_level(LOG_INFO);
    test_format();
    test_fields();
    test_fields_long();
    test_flush();
    test_threads();
    test_drops();
    test_fork();
    test_printable();
    log_set_service("natter");
}
