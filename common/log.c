/*
 * log.c — asynchronous JSON line logger (the contract is in log.h).
 *
 * Callers format a line with jansson (so every string is escaped) and copy it
 * into one ring of bytes under `lw.mu`; one writer thread hands everything
 * queued to writev(2) with the mutex released, then gives the space back. The
 * ring holds whole lines only, and only the writer writes them, which keeps
 * lines from different threads whole and in the order they were accepted.
 *
 * States of the writer (under lw.mu):
 *   W_STOPPED   not started, could not start, stopped at exit, or in the child
 *               of a fork: nlog() writes synchronously
 *   W_RUNNING   nlog() appends to the ring
 *   W_STOPPING  the atexit handler asked it to drain; nlog() still appends
 *               and the writer drains that too before it stops
 */
#include "log.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* How long the writer waits for more lines after a batch before it goes idle:
 * the bound on the delay a line sees, and the batching window under load. */
#define LINGER_US 1000

/* A line up to this size (with its newline) is formatted on the stack; an
 * access-log line is about 250 bytes. */
#define LINE_STACK_BYTES 2048

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Read by every thread, set at start-up: atomic so that a late
 * log_set_level() is not a data race. */
static _Atomic int min_level = LOG_INFO;
static _Atomic(const char *) service = "natter";

static atomic_ullong dropped_total; /* lines dropped because the ring was full */
static atomic_ullong written_total; /* lines written (writer and synchronous) */

enum writer_state { W_STOPPED, W_RUNNING, W_STOPPING };

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work;           /* the writer waits here while idle */
    bool idle;                     /* it does: the next producer signals work */
    pthread_cond_t progress;       /* log_flush waits here; broadcast after each batch and at stop */
    char *ring;                    /* owned; LOG_BUFFER_BYTES allocated, NULL when stopped */
    size_t cap;                    /* bound in use (<= LOG_BUFFER_BYTES; smaller only in tests) */
    size_t head;                   /* offset of the oldest queued byte */
    size_t len;                    /* bytes queued, including the batch being written */
    size_t lines;                  /* whole lines in those len bytes */
    unsigned long long accepted;   /* bytes ever queued */
    unsigned long long consumed;   /* bytes ever taken off by the writer (written or failed) */
    unsigned long long unreported; /* lines dropped since the last drop notice */
    enum writer_state state;       /* see the top of the file */
    pthread_t thread;              /* the writer, joined by stop_writer */
} lw = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER,
    .progress = PTHREAD_COND_INITIALIZER,
    .state = W_STOPPED,
};

static pthread_once_t start_once = PTHREAD_ONCE_INIT;

bool log_enabled(enum log_level lvl)
{
    return (int)lvl >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

void log_set_level(enum log_level lvl)
{
    atomic_store(&min_level, (int)lvl);
}

void log_set_service(const char *s)
{
    atomic_store(&service, s);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

unsigned long long log_dropped(void)
{
    return atomic_load(&dropped_total);
}

unsigned long long log_written(void)
{
    return atomic_load(&written_total);
}

/*
 * Formats one line, newline included: into buf (size bytes) when it fits,
 * else into a new heap buffer. Returns buf, an owned pointer (free it when it
 * is not buf) or NULL when jansson fails; *n gets the length. Consumes
 * fields_new.
 */
static char *format_line(char *buf, size_t size, enum log_level lvl, const char *msg, json_t *fields_new, size_t *n)
{
    const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6);
    char ts[40];
    rfc3339_now(ts, sizeof ts);
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[lvl]));
    json_object_set_new(line, "service", json_string(atomic_load(&service)));
    json_object_set_new(line, "msg", json_string(msg ? msg : ""));
    if (fields_new && json_is_object(fields_new))
        json_object_update_missing(line, fields_new);
    json_decref(fields_new);
    char *out = NULL;
    size_t need = json_dumpb(line, buf, size, flags); /* 0 on error; no NUL written */
    if (need > 0 && need < size) {
        out = buf;
    } else if (need > 0) {
        out = xmalloc(need + 1);
        if (json_dumpb(line, out, need, flags) != need) {
            free(out);
            out = NULL;
        }
    }
    json_decref(line);
    if (out) {
        out[need] = '\n';
        *n = need + 1;
    }
    return out;
}

/* Writes the iovecs to stderr whole, through partial writes, EINTR and a
 * non-blocking stderr. Modifies iov. False on any other error. */
static bool write_all(struct iovec *iov, int cnt)
{
    while (cnt > 0 && iov->iov_len == 0) {
        iov++;
        cnt--;
    }
    while (cnt > 0) {
        ssize_t w = writev(STDERR_FILENO, iov, cnt);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) { /* == EWOULDBLOCK on Linux */
                struct pollfd p = {.fd = STDERR_FILENO, .events = POLLOUT};
                (void)poll(&p, 1, 100);
                continue;
            }
            return false; /* nowhere left to report a failed log write */
        }
        size_t left = (size_t)w;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return true;
}

/*
 * The writer: takes everything queued (and the count of drops to report),
 * writes it with the mutex released, gives the space back. The bytes being
 * written stay counted in lw.len until then, so their space is not reused
 * under the write.
 *
 * When a batch leaves the ring empty, the writer lingers LINGER_US before it
 * looks again, and only then, if still nothing came, goes idle on lw.work.
 * Producers signal only an idle writer: under load the lines of a millisecond
 * go out in one writev and nobody pays a futex wake per line; an idle server
 * pays one wake-up for its next line.
 */
static void *writer_main(void *arg)
{
    (void)arg;
    bool wrote = false; /* the previous batch wrote something: linger */
    pthread_mutex_lock(&lw.mu);
    for (;;) {
        if (wrote && lw.len == 0 && lw.unreported == 0 && lw.state == W_RUNNING) {
            pthread_mutex_unlock(&lw.mu);
            struct timespec linger = {.tv_sec = 0, .tv_nsec = LINGER_US * 1000L};
            while (nanosleep(&linger, &linger) < 0 && errno == EINTR)
                ;
            pthread_mutex_lock(&lw.mu);
        }
        while (lw.len == 0 && lw.unreported == 0 && lw.state == W_RUNNING) {
            lw.idle = true;
            pthread_cond_wait(&lw.work, &lw.mu);
        }
        lw.idle = false;
        if (lw.len == 0 && lw.unreported == 0)
            break; /* W_STOPPING and drained */
        char *ring = lw.ring;
        size_t cap = lw.cap, head = lw.head, n = lw.len, lines = lw.lines;
        unsigned long long drops = lw.unreported;
        lw.unreported = 0;
        pthread_mutex_unlock(&lw.mu);

        struct iovec iov[3];
        int cnt = 0;
        size_t first = n < cap - head ? n : cap - head;
        iov[cnt++] = (struct iovec){.iov_base = ring + head, .iov_len = first};
        if (n > first)
            iov[cnt++] = (struct iovec){.iov_base = ring, .iov_len = n - first};
        char notice_buf[512], *notice = NULL;
        size_t notice_len = 0;
        if (drops > 0) {
            json_t *f = json_pack("{s:I,s:I}", "dropped", (json_int_t)drops, "dropped_total",
                                  (json_int_t)atomic_load(&dropped_total));
            notice = format_line(notice_buf, sizeof notice_buf, LOG_WARN, "log lines dropped", f, &notice_len);
            if (notice)
                iov[cnt++] = (struct iovec){.iov_base = notice, .iov_len = notice_len};
        }
        if (write_all(iov, cnt))
            atomic_fetch_add(&written_total, lines + (notice ? 1 : 0));
        if (notice != notice_buf)
            free(notice);
        wrote = true;

        pthread_mutex_lock(&lw.mu);
        if (n > 0) {
            lw.head = (head + n) % cap;
            lw.len -= n;
            lw.lines -= lines;
            lw.consumed += n;
        }
        pthread_cond_broadcast(&lw.progress);
    }
    lw.state = W_STOPPED;
    pthread_cond_broadcast(&lw.progress);
    pthread_mutex_unlock(&lw.mu);
    return NULL;
}

/* atexit: drain, stop and join the writer, free the ring. Lines logged from
 * now on (later atexit handlers) are written synchronously. */
static void stop_writer(void)
{
    pthread_mutex_lock(&lw.mu);
    if (lw.state != W_RUNNING) {
        pthread_mutex_unlock(&lw.mu);
        return;
    }
    lw.state = W_STOPPING;
    pthread_cond_signal(&lw.work);
    pthread_mutex_unlock(&lw.mu);
    pthread_join(lw.thread, NULL);
    pthread_mutex_lock(&lw.mu);
    free(lw.ring);
    lw.ring = NULL;
    lw.cap = lw.head = lw.len = lw.lines = 0;
    pthread_mutex_unlock(&lw.mu);
}

/* fork: the child has no writer thread, so it logs synchronously and leaves
 * the queued lines to the parent (which writes them). Holding the mutex across
 * fork() keeps the child's copy of the ring consistent. */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&lw.mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&lw.mu);
}

static void atfork_child(void)
{
    free(lw.ring);
    lw.ring = NULL;
    lw.cap = lw.head = lw.len = lw.lines = 0;
    lw.unreported = 0;
    lw.state = W_STOPPED;
    pthread_mutex_unlock(&lw.mu);
}

/* Once, on the first nlog(): the ring, the writer (with every signal blocked,
 * so that signals meant for main's sigwait() never land on it), the atexit and
 * fork handlers. If the thread cannot start, logging stays synchronous. */
static void start_writer(void)
{
    pthread_mutex_lock(&lw.mu);
    lw.ring = xmalloc(LOG_BUFFER_BYTES);
    lw.cap = LOG_BUFFER_BYTES;
    lw.state = W_RUNNING;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&lw.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(lw.ring);
        lw.ring = NULL;
        lw.cap = 0;
        lw.state = W_STOPPED;
    }
    pthread_mutex_unlock(&lw.mu);
    if (rc == 0) {
        atexit(stop_writer);
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    }
}

/* Hands one formatted line (n bytes, newline included) to the writer, or
 * writes it at once when the writer is not running. */
static void enqueue(const char *text, size_t n)
{
    bool sync = false, wake = false;
    pthread_mutex_lock(&lw.mu);
    if (lw.state == W_STOPPED) {
        sync = true;
    } else {
        wake = lw.idle; /* on the way out; there is news either way */
        lw.idle = false;
        if (n <= lw.cap - lw.len) {
            size_t tail = (lw.head + lw.len) % lw.cap;
            size_t first = n < lw.cap - tail ? n : lw.cap - tail;
            memcpy(lw.ring + tail, text, first);
            memcpy(lw.ring, text + first, n - first);
            lw.len += n;
            lw.lines++;
            lw.accepted += n;
        } else {
            lw.unreported++;
            atomic_fetch_add(&dropped_total, 1);
        }
    }
    pthread_mutex_unlock(&lw.mu);
    if (wake)
        pthread_cond_signal(&lw.work);
    if (sync) {
        struct iovec iov = {.iov_base = (void *)text, .iov_len = n};
        if (write_all(&iov, 1))
            atomic_fetch_add(&written_total, 1);
    }
}

void nlog(enum log_level lvl, const char *msg, json_t *fields_new)
{
    if ((int)lvl < atomic_load_explicit(&min_level, memory_order_relaxed)) {
        json_decref(fields_new);
        return;
    }
    pthread_once(&start_once, start_writer);
    char buf[LINE_STACK_BYTES];
    size_t n = 0;
    char *text = format_line(buf, sizeof buf, lvl, msg, fields_new, &n);
    if (!text)
        return;
    enqueue(text, n);
    if (text != buf)
        free(text);
}

/* A bounded text builder over a caller's buffer: what does not fit is cut. */
struct lbuf {
    char *p;
    size_t len, cap;
    bool cut;
};

static void lb_add(struct lbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        n = b->cap - b->len;
        b->cut = true;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* s as a JSON string: quotes, backslashes and control characters escaped,
 * bytes that are not valid UTF-8 replaced by U+FFFD, so that the line is
 * always valid JSON whatever a client sent. */
static void lb_str(struct lbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    lb_add(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            lb_add(b, e, 2);
            p++;
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            lb_add(b, e, 6);
            p++;
        } else if (c < 0x80) {
            lb_add(b, (const char *)p, 1);
            p++;
        } else {
            /* the length of a well-formed UTF-8 sequence starting here, or 0 */
            size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            for (size_t k = 1; k < len; k++)
                if ((p[k] & 0xc0) != 0x80)
                    len = 0;
            if (len == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)))
                len = 0; /* overlong, surrogate */
            if (len == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f)))
                len = 0; /* overlong, past U+10FFFF */
            if (len) {
                lb_add(b, (const char *)p, len);
                p += len;
            } else {
                lb_add(b, "\\ufffd", 6);
                p++;
            }
        }
    }
    lb_add(b, "\"", 1);
}

/* Formats the line of nlog_fields into b (newline not included). */
static void format_fields(struct lbuf *b, enum log_level lvl, const char *msg, const struct log_field *f, size_t n)
{
    char ts[40], num[64];
    rfc3339_now(ts, sizeof ts);
    lb_add(b, "{\"ts\":", 6);
    lb_str(b, ts);
    lb_add(b, ",\"level\":", 9);
    lb_str(b, level_names[lvl]);
    lb_add(b, ",\"service\":", 11);
    lb_str(b, atomic_load(&service));
    lb_add(b, ",\"msg\":", 7);
    lb_str(b, msg ? msg : "");
    for (size_t i = 0; i < n; i++) {
        lb_add(b, ",", 1);
        lb_str(b, f[i].key);
        lb_add(b, ":", 1);
        int k = 0;
        switch (f[i].type) {
        case LF_STR:
            lb_str(b, f[i].s ? f[i].s : "");
            break;
        case LF_INT:
            k = snprintf(num, sizeof num, "%lld", f[i].i);
            lb_add(b, num, (size_t)k);
            break;
        case LF_REAL:
            /* as jansson writes it with JSON_REAL_PRECISION(6) */
            k = snprintf(num, sizeof num, "%.6g", f[i].d);
            lb_add(b, num, (size_t)k);
            if (!strpbrk(num, ".eE") && isfinite(f[i].d))
                lb_add(b, ".0", 2);
            break;
        }
    }
    lb_add(b, "}", 1);
}

void nlog_fields(enum log_level lvl, const char *msg, const struct log_field *f, size_t n)
{
    if ((int)lvl < atomic_load_explicit(&min_level, memory_order_relaxed))
        return;
    pthread_once(&start_once, start_writer);
    char buf[LINE_STACK_BYTES];
    struct lbuf b = {buf, 0, sizeof buf - 1, false}; /* room for the newline */
    format_fields(&b, lvl, msg, f, n);
    if (!b.cut) {
        buf[b.len++] = '\n';
        enqueue(buf, b.len);
        return;
    }
    /* A line past the stack buffer (a long path): rare, so a heap buffer
     * sized for the worst case, every byte escaped as \uXXXX. Not jansson:
     * it refuses strings that are not UTF-8, which would lose the field. */
    size_t worst = 256 + 6 * strlen(msg ? msg : "") + 6 * strlen(atomic_load(&service));
    for (size_t i = 0; i < n; i++)
        worst += 80 + 6 * strlen(f[i].key) + (f[i].type == LF_STR && f[i].s ? 6 * strlen(f[i].s) : 0);
    char *big = xmalloc(worst + 1);
    b = (struct lbuf){big, 0, worst, false};
    format_fields(&b, lvl, msg, f, n);
    big[b.len++] = '\n';
    if (!b.cut) /* cannot be cut: the bound above is the worst case */
        enqueue(big, b.len);
    free(big);
}

void log_flush(void)
{
    pthread_mutex_lock(&lw.mu);
    unsigned long long target = lw.accepted;
    while (lw.consumed < target && lw.state != W_STOPPED)
        pthread_cond_wait(&lw.progress, &lw.mu);
    pthread_mutex_unlock(&lw.mu);
}

void log_test_set_capacity(size_t bytes)
{
    pthread_once(&start_once, start_writer);
    pthread_mutex_lock(&lw.mu);
    while ((lw.len > 0 || lw.unreported > 0) && lw.state != W_STOPPED)
        pthread_cond_wait(&lw.progress, &lw.mu);
    if (lw.ring) {
        lw.cap = bytes == 0 || bytes > LOG_BUFFER_BYTES ? LOG_BUFFER_BYTES : bytes;
        lw.head = 0;
    }
    pthread_mutex_unlock(&lw.mu);
}

void log_printable(char *text)
{
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] > 0x7e)
            text[i] = '?';
}
