/*
 * natterload — the load generator of `make bench` (bench/run.sh).
 *
 * One process, one thread, one epoll set, non-blocking sockets, plain HTTP/1.1
 * keep-alive with one request in flight per connection and a tiny response
 * parser (status line, Content-Length, Connection: close). It only ever
 * connects to 127.0.0.1:PORT. Every loop is bounded in count and in time.
 *
 * Subcommands (run.sh drives them; each prints `name  key value …` lines;
 * lines starting with `@` are for run.sh: `@begin NAME` and `@end NAME<TAB>N<TAB>WHAT`
 * bound a CPU-accounting window with N messages in it, `@cpu NAME` asks run.sh
 * to repeat the CPU per message of an earlier window):
 *
 *   users    --prefix P --users N --devices D --out FILE
 *            register N users and log in D devices each (each login is a
 *            device); FILE gets `uidx devno user_id device_id token` lines
 *   pairs    --devices FILE --users N --out FILE
 *            direct chats between users 2k and 2k+1 (`chat_id uidx_a uidx_b`)
 *   mesh     --devices FILE --users U --per-user C [--conns 64] --out FILE
 *            U*C/2 direct chats through the API: user i with i+1 … i+C/2 (mod U),
 *            so every user is in C chats
 *   group    --devices FILE --members N --out FILE
 *            one group created by user 0 with users 1..N-1
 *   idle     --devices FILE --count N [--hold S] [--api-pid PID] [--first K]
 *            [--probe S] [--open-seconds 120] [--sync DIR --loaders L]
 *            hold N idle long-polls (devices K.. of FILE), report held count,
 *            server inflight gauge and natter-api RSS before/after; --probe:
 *            then wait up to S s for every held poll to be answered (its
 *            timeout, --poll-timeout) and report how many were; opening the
 *            polls stops after --open-seconds; --sync: L
 *            idle processes meet twice in DIR (all polls open; all probed) so
 *            that all their polls are held at the same time
 *   renew    --devices FILE --count N [--seconds 95] [--window 90] [--poll-timeout 30]
 *            N idle polls answered empty at their timeout and renewed at once;
 *            the CPU window is the last --window seconds
 *   deliver  --devices FILE --chats MESH [--senders 200] [--rates "500 1000 …"]
 *            [--seconds 10] [--grace 10] [--settle 3] [--stop-below 0.8] [--dump FILE]
 *            every mesh user polls; open-loop 1:1 sends at each rate from the
 *            senders to random chat partners: send -> recipient's poll answered,
 *            lost and duplicated messages, max sustained rate
 *   fanout   --devices FILE --chat ID --members N --sends K
 *            group send -> all N member polls answered (latency of the last)
 *   sends    --devices FILE --chats MESH --conns C --seconds T
 *            closed-loop durable sends, connection i as mesh user i
 *   fill     --devices FILE --chat ID --count N
 *            put N messages into a chat (users 0 and 1 of FILE alternate)
 *   history  --devices FILE --chat ID --conns C --seconds T [--limit 50]
 *            closed-loop history pages
 *
 * Common: --port P (required); --source 127.0.0.X: the client address of
 * every connection (several load processes on several source addresses get
 * past the ~28k ephemeral ports of one). Polls answered 503, or whose connection
 * drops, are retried after 0.5 s (at most 20 times per device) and counted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000ull
#define SEC 1000000000ull
#define PASSWORD "bench password 1"

/* ====================================================================== */
/* small helpers                                                          */
/* ====================================================================== */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "natterload: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s ? s : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static unsigned run_id; /* prefix of every client_msg_id of this process */

static void make_cmid(char *out, uint64_t n)
{
    snprintf(out, 40, "%08x-0000-4000-8000-%012" PRIx64, run_id, (uint64_t)(n & 0xffffffffffffull));
}

/* Finds client_msg_ids of this run in a body; calls fn(n) for each. */
static void scan_cmids(const char *body, size_t len, void (*fn)(uint64_t n, void *ud), void *ud)
{
    static const char key[] = "\"client_msg_id\"";
    char pre[16];
    snprintf(pre, sizeof pre, "%08x-", run_id);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *k = memmem(p, (size_t)(end - p), key, sizeof key - 1);
        if (!k)
            break;
        p = k + sizeof key - 1;
        while (p < end && (*p == ' ' || *p == ':'))
            p++;
        if (p >= end || *p != '"' || end - p < 38)
            continue;
        p++;
        if (memcmp(p, pre, 9) != 0)
            continue;
        /* xxxxxxxx-0000-4000-8000-NNNNNNNNNNNN */
        uint64_t n = strtoull(p + 24, NULL, 16);
        fn(n, ud);
        p += 36;
    }
}

/* The top-level "next" of an events answer (the key appears nowhere else). */
static bool scan_next(const char *body, size_t len, int64_t *next)
{
    static const char key[] = "\"next\"";
    const char *k = memmem(body, len, key, sizeof key - 1);
    if (!k)
        return false;
    const char *p = k + sizeof key - 1, *end = body + len;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    if (p >= end)
        return false;
    char *e;
    long long v = strtoll(p, &e, 10);
    if (e == p)
        return false;
    *next = v;
    return true;
}

/* ---- latency samples ---- */

typedef struct {
    uint64_t *v;
    size_t n, cap;
    bool sorted;
} lat_t;

static void lat_add(lat_t *l, uint64_t ns)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = ns;
    l->sorted = false;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile in ms */
static double lat_pct(lat_t *l, double p)
{
    if (!l->n)
        return NAN;
    if (!l->sorted) {
        qsort(l->v, l->n, sizeof *l->v, cmp_u64);
        l->sorted = true;
    }
    size_t rank = (size_t)ceil(p / 100.0 * (double)l->n);
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return (double)l->v[rank - 1] / 1e6;
}

static double lat_max(lat_t *l)
{
    return lat_pct(l, 100.0);
}

static long vmrss_kb(long pid)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* ====================================================================== */
/* HTTP client connections                                                */
/* ====================================================================== */

typedef struct conn conn;
/* status -1: connection failed or closed before the answer */
typedef void (*resp_fn)(conn *c, int status, const char *body, size_t len, uint64_t t_write);

struct conn {
    int fd; /* -1: closed */
    bool connecting, busy;
    char *w;
    size_t wlen, woff, wcap;
    char *r;
    size_t rlen, rcap;
    size_t hdr_len, clen;
    int status;
    bool close_after;
    resp_fn cb;
    long idx;         /* owner's index */
    uint64_t t_write; /* just before the first byte of the request was written */
};

static int epfd = -1;
static struct sockaddr_in target; /* 127.0.0.1:port, never anything else */
static struct sockaddr_in source; /* --source: a 127.0.0.0/8 client address, or port 0 family 0 */
static long n_open, n_conn_fail, n_reset;
static char *scratch;
static size_t scratch_cap;

static void http_init(int port)
{
    if (port <= 0 || port > 65535)
        die("--port is required (1..65535)");
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void conn_close(conn *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
        n_open--;
    }
    c->connecting = false;
    c->rlen = c->hdr_len = 0;
    c->wlen = c->woff = 0;
}

static void conn_fail(conn *c)
{
    bool was_busy = c->busy;
    uint64_t tw = c->t_write;
    c->busy = false;
    conn_close(c);
    if (was_busy) {
        n_reset++;
        if (c->cb)
            c->cb(c, -1, NULL, 0, tw);
    }
}

static int conn_open(conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source.sin_family == AF_INET) {
        /* the port is chosen at connect, per (source, target): not one of
         * the source's ~28k ephemeral ports per socket */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&source, sizeof source) < 0) {
            close(fd);
            return -1;
        }
    }
    int rc = connect(fd, (struct sockaddr *)&target, sizeof target);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connecting = rc < 0;
    c->rlen = c->hdr_len = 0;
    n_open++;
    return 0;
}

static void conn_flush(conn *c)
{
    if (c->fd < 0 || c->connecting)
        return;
    while (c->woff < c->wlen) {
        if (c->woff == 0)
            c->t_write = now_ns();
        ssize_t n = send(c->fd, c->w + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            conn_fail(c);
            return;
        }
    }
}

/* Queues one request; 0, or -1 when no socket could be opened. */
static int conn_request(conn *c, const char *req, size_t len, resp_fn cb)
{
    if (c->busy)
        die("internal: request on a busy connection");
    if (c->fd < 0 && conn_open(c) < 0) {
        n_conn_fail++;
        return -1;
    }
    if (c->wcap < len) {
        c->wcap = len + 256;
        c->w = xrealloc(c->w, c->wcap);
    }
    memcpy(c->w, req, len);
    c->wlen = len;
    c->woff = 0;
    c->busy = true;
    c->cb = cb;
    c->t_write = now_ns();
    conn_flush(c);
    return 0;
}

/* Parses one complete response if there is one; true when one was handled. */
static bool conn_parse(conn *c)
{
    if (c->fd < 0 || !c->busy || c->rlen == 0)
        return false;
    if (!c->hdr_len) {
        char *e = memmem(c->r, c->rlen, "\r\n\r\n", 4);
        if (!e) {
            if (c->rlen > 65536)
                die("response header over 64 KiB");
            return false;
        }
        c->hdr_len = (size_t)(e - c->r) + 4;
        if (c->hdr_len < 16 || memcmp(c->r, "HTTP/1.", 7) != 0)
            die("not an HTTP/1.x response");
        c->status = atoi(c->r + 9);
        c->clen = 0;
        c->close_after = false;
        bool have_len = false;
        char *p = memchr(c->r, '\n', c->hdr_len);
        char *hend = c->r + c->hdr_len - 2;
        while (p && ++p < hend) {
            char *eol = memchr(p, '\n', (size_t)(hend - p + 1));
            if (!eol)
                break;
            size_t ll = (size_t)(eol - p);
            if (ll > 15 && strncasecmp(p, "content-length:", 15) == 0) {
                c->clen = strtoul(p + 15, NULL, 10);
                have_len = true;
            } else if (ll > 11 && strncasecmp(p, "connection:", 11) == 0) {
                if (memmem(p, ll, "close", 5) || memmem(p, ll, "Close", 5))
                    c->close_after = true;
            } else if (ll > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
                die("chunked responses are not supported by this client");
            }
            p = eol;
        }
        if (!have_len && c->status != 204 && c->status != 304 && c->status >= 200)
            die("response %d without Content-Length", c->status);
    }
    size_t total = c->hdr_len + c->clen;
    if (c->rlen < total)
        return false;
    if (scratch_cap < c->clen + 1) {
        scratch_cap = c->clen + 4096;
        scratch = xrealloc(scratch, scratch_cap);
    }
    memcpy(scratch, c->r + c->hdr_len, c->clen);
    scratch[c->clen] = '\0';
    size_t blen = c->clen;
    int st = c->status;
    uint64_t tw = c->t_write;
    memmove(c->r, c->r + total, c->rlen - total);
    c->rlen -= total;
    c->hdr_len = 0;
    c->busy = false;
    if (c->close_after)
        conn_close(c);
    if (c->cb)
        c->cb(c, st, scratch, blen, tw);
    return true;
}

static void conn_read(conn *c)
{
    bool eof = false;
    for (;;) {
        if (c->rcap - c->rlen < 2048) {
            size_t want = c->rcap ? c->rcap * 2 : 4096;
            if (c->hdr_len && want < c->hdr_len + c->clen + 2048)
                want = c->hdr_len + c->clen + 2048;
            c->rcap = want;
            c->r = xrealloc(c->r, c->rcap);
        }
        ssize_t n = recv(c->fd, c->r + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            eof = true;
        break;
    }
    int fd = c->fd;
    while (c->fd == fd && conn_parse(c))
        ;
    if (eof && c->fd == fd)
        conn_fail(c);
}

static void on_event(conn *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (c->connecting) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            n_conn_fail++;
            conn_fail(c);
            return;
        }
        c->connecting = false;
        conn_flush(c);
    } else if (ev & EPOLLOUT) {
        conn_flush(c);
    }
    if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        conn_read(c);
}

static void (*tick_hook)(uint64_t now);

static void loop_once(int timeout_ms)
{
    static struct epoll_event evs[1024];
    int n = epoll_wait(epfd, evs, 1024, timeout_ms);
    for (int i = 0; i < n; i++)
        on_event(evs[i].data.ptr, evs[i].events);
    if (tick_hook)
        tick_hook(now_ns());
}

static size_t build_req(char *buf, size_t cap, const char *method, const char *path, const char *token,
                        const char *body)
{
    int n;
    char auth[1200] = "";
    if (token) {
        if (strlen(token) > 1100)
            die("token too long");
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    }
    if (body)
        n = snprintf(buf, cap,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, auth, strlen(body), body);
    else
        n = snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", method, path, auth);
    if (n < 0 || (size_t)n >= cap)
        die("request too long");
    return (size_t)n;
}

/* ====================================================================== */
/* options and data files                                                 */
/* ====================================================================== */

static int g_argc;
static char **g_argv;

static const char *opt_s(const char *name, const char *def)
{
    for (int i = 2; i + 1 < g_argc; i++)
        if (strcmp(g_argv[i], name) == 0)
            return g_argv[i + 1];
    return def;
}

static long opt_l(const char *name, long def)
{
    const char *s = opt_s(name, NULL);
    if (!s)
        return def;
    char *e;
    long v = strtol(s, &e, 10);
    if (*e || e == s)
        die("%s: not an integer: %s", name, s);
    return v;
}

static double opt_d(const char *name, double def)
{
    const char *s = opt_s(name, NULL);
    if (!s)
        return def;
    char *e;
    double v = strtod(s, &e);
    if (*e || e == s)
        die("%s: not a number: %s", name, s);
    return v;
}

static const char *opt_req(const char *name)
{
    const char *s = opt_s(name, NULL);
    if (!s)
        die("missing %s", name);
    return s;
}

typedef struct {
    long uidx, devno;
    long long uid, did;
    char *token;
} device;

static device *devs;
static long ndevs;

static void load_devices(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("%s: %s", path, strerror(errno));
    long cap = 1024;
    devs = xmalloc((size_t)cap * sizeof *devs);
    ndevs = 0;
    char tok[2048];
    device d;
    while (fscanf(f, "%ld %ld %lld %lld %2047s", &d.uidx, &d.devno, &d.uid, &d.did, tok) == 5) {
        if (ndevs == cap) {
            cap *= 2;
            devs = xrealloc(devs, (size_t)cap * sizeof *devs);
        }
        d.token = strdup(tok);
        devs[ndevs++] = d;
    }
    fclose(f);
    if (ndevs == 0)
        die("%s: no devices", path);
}

/* The device of (uidx, devno); the file is sorted by uidx then devno. */
static device *dev_of(long uidx, long devno)
{
    long lo = 0, hi = ndevs - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        device *d = &devs[mid];
        if (d->uidx == uidx && d->devno == devno)
            return d;
        if (d->uidx < uidx || (d->uidx == uidx && d->devno < devno))
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    die("no device %ld/%ld in the devices file", uidx, devno);
    return NULL;
}

/* The chat mesh of deliver and sends: U users, user i with partners i±1 …
 * i±H (mod U), H = chats per user / 2, one direct chat per pair. The chat of
 * (i, i+k mod U), k = 1..H, is mesh_chat[i*H + k-1]. The file (written by
 * `mesh`) starts with `mesh U H` and then has `chat_id i j` lines. */
static long long *mesh_chat;
static long mesh_users, mesh_half;

static void load_mesh(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("%s: %s", path, strerror(errno));
    if (fscanf(f, "mesh %ld %ld", &mesh_users, &mesh_half) != 2 || mesh_users < 3 || mesh_half < 1 ||
        2 * mesh_half >= mesh_users || mesh_users > 100000 || mesh_half > 1000)
        die("%s: not a mesh file", path);
    long n = mesh_users * mesh_half, got = 0;
    mesh_chat = xcalloc((size_t)n, sizeof *mesh_chat);
    long long id;
    long a, b;
    while (got < n && fscanf(f, "%lld %ld %ld", &id, &a, &b) == 3) {
        long k = ((b - a) % mesh_users + mesh_users) % mesh_users;
        if (a < 0 || a >= mesh_users || k < 1 || k > mesh_half || mesh_chat[a * mesh_half + k - 1])
            die("%s: unexpected line %lld %ld %ld", path, id, a, b);
        mesh_chat[a * mesh_half + k - 1] = id;
        got++;
    }
    fclose(f);
    if (got != n)
        die("%s: %ld of %ld chats", path, got, n);
}

/* Chat `slot` (0 .. 2H-1) of user u; *partner gets the other user. */
static long long mesh_chat_of(long u, long slot, long *partner)
{
    long k;
    if (slot < mesh_half) {
        k = slot + 1;
        *partner = (u + k) % mesh_users;
        return mesh_chat[u * mesh_half + k - 1];
    }
    k = slot - mesh_half + 1;
    long j = (u - k + mesh_users) % mesh_users;
    *partner = j;
    return mesh_chat[j * mesh_half + k - 1];
}

/* ====================================================================== */
/* generic job runner: N jobs over C keep-alive connections               */
/* ====================================================================== */

typedef struct runner runner;
struct runner {
    long njobs; /* LONG_MAX: closed loop until the deadline */
    long next_job, done, failed, retries;
    long *retry_job;
    uint64_t *retry_at;
    long nretry, retry_cap;
    long *conn_job;
    uint64_t *conn_rest; /* a connection whose job was told to retry (503, 429, dropped) rests until then */
    conn *conns;
    int nconns;
    uint64_t deadline, window_end;
    size_t (*build)(runner *, long job, char *buf, size_t cap);
    /* 0 done, 1 retry later, -1 failed */
    int (*handle)(runner *, long job, int status, const char *body, size_t len);
    lat_t lat;     /* latency of the answers counted ok */
    int ok_status; /* status whose latency is recorded (0: any 2xx) */
    long ok_in_window, by_status[600], neg;
    long bytes;
    bool stop_issuing;
    int cur_conn; /* the connection the job being built goes out on */
};

static runner *R;

static void runner_cb(conn *c, int status, const char *body, size_t len, uint64_t tw)
{
    runner *r = R;
    long job = r->conn_job[c->idx];
    r->conn_job[c->idx] = -1;
    uint64_t now = now_ns();
    if (status < 0)
        r->neg++;
    else if (status < 600)
        r->by_status[status]++;
    bool ok = r->ok_status ? status == r->ok_status : (status >= 200 && status < 300);
    if (ok) {
        lat_add(&r->lat, now - tw);
        r->bytes += (long)len;
        if (now <= r->window_end)
            r->ok_in_window++;
    }
    int rc = r->handle ? r->handle(r, job, status, body, len) : (ok ? 0 : -1);
    if (rc == 0) {
        r->done++;
    } else if (rc > 0) {
        r->retries++;
        if (r->nretry == r->retry_cap) {
            r->retry_cap = r->retry_cap ? r->retry_cap * 2 : 256;
            r->retry_job = xrealloc(r->retry_job, (size_t)r->retry_cap * sizeof *r->retry_job);
            r->retry_at = xrealloc(r->retry_at, (size_t)r->retry_cap * sizeof *r->retry_at);
        }
        r->retry_job[r->nretry] = job;
        r->retry_at[r->nretry] = now + 200 * MS;
        r->nretry++;
        /* the server is overloaded: this connection backs off too, instead
         * of sending the next job at once (millions of 503s a minute) */
        r->conn_rest[c->idx] = now + 200 * MS;
    } else {
        r->failed++;
    }
}

static void runner_issue(runner *r, int ci, long job)
{
    char buf[8192];
    r->cur_conn = ci;
    size_t n = r->build(r, job, buf, sizeof buf);
    r->conn_job[ci] = job;
    if (conn_request(&r->conns[ci], buf, n, runner_cb) < 0) {
        r->conn_job[ci] = -1;
        r->failed++;
    }
}

/* Runs until all jobs are done or the deadline; true when all succeeded. */
static bool runner_run(runner *r, int nconns, double max_seconds)
{
    R = r;
    r->nconns = nconns;
    r->conns = xcalloc((size_t)nconns, sizeof *r->conns);
    r->conn_job = xmalloc((size_t)nconns * sizeof *r->conn_job);
    r->conn_rest = xcalloc((size_t)nconns, sizeof *r->conn_rest);
    for (int i = 0; i < nconns; i++) {
        r->conns[i].fd = -1;
        r->conns[i].idx = i;
        r->conn_job[i] = -1;
    }
    uint64_t start = now_ns();
    r->deadline = start + (uint64_t)(max_seconds * 1e9);
    if (!r->window_end)
        r->window_end = r->deadline;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= r->window_end)
            r->stop_issuing = true;
        int busy = 0;
        for (int i = 0; i < nconns; i++) {
            if (r->conn_job[i] >= 0) {
                busy++;
                continue;
            }
            if (r->stop_issuing || r->conn_rest[i] > now)
                continue;
            long job = -1;
            for (long k = 0; k < r->nretry; k++)
                if (r->retry_at[k] <= now) {
                    job = r->retry_job[k];
                    r->retry_job[k] = r->retry_job[r->nretry - 1];
                    r->retry_at[k] = r->retry_at[r->nretry - 1];
                    r->nretry--;
                    break;
                }
            if (job < 0 && r->next_job < r->njobs)
                job = r->next_job++;
            if (job < 0)
                continue;
            runner_issue(r, i, job);
            if (r->conn_job[i] >= 0)
                busy++;
        }
        if (busy == 0 && (r->stop_issuing || (r->next_job >= r->njobs && r->nretry == 0)))
            break;
        if (now >= r->deadline)
            break;
        loop_once(r->stop_issuing ? 10 : 5);
    }
    for (int i = 0; i < nconns; i++)
        conn_close(&r->conns[i]);
    free(r->conn_rest);
    r->conn_rest = NULL;
    return r->done == r->njobs && r->failed == 0;
}

static void print_statuses(const runner *r, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int s = 0; s < 600; s++)
        if (r->by_status[s])
            n += (size_t)snprintf(out + n, cap - n, "%s%d:%ld", n ? "," : "", s, r->by_status[s]);
    if (r->neg)
        snprintf(out + n, cap - n, "%sconn-errors:%ld", n ? "," : "", r->neg);
}

/* ====================================================================== */
/* users: register + login devices                                        */
/* ====================================================================== */

static const char *u_prefix;
static long u_users, u_devices;
static device *u_out;
static bool u_login_phase;
static int u_fail_printed;

static size_t users_build(runner *r, long job, char *buf, size_t cap)
{
    (void)r;
    char body[256];
    if (!u_login_phase) {
        snprintf(body, sizeof body, "{\"username\":\"%s%05ld\",\"password\":\"" PASSWORD "\"}", u_prefix, job);
        return build_req(buf, cap, "POST", "/v1/auth/register", NULL, body);
    }
    long u = job / u_devices, d = job % u_devices;
    snprintf(body, sizeof body,
             "{\"username\":\"%s%05ld\",\"password\":\"" PASSWORD
             "\",\"device_name\":\"bench %ld\","
             "\"platform\":\"other\"}",
             u_prefix, u, d);
    return build_req(buf, cap, "POST", "/v1/auth/login", NULL, body);
}

static int users_handle(runner *r, long job, int status, const char *body, size_t len)
{
    (void)r;
    if (status == 429 || status == 503 || status < 0)
        return 1;
    if (!u_login_phase) {
        if (status == 201 || status == 409)
            return 0;
    } else if (status == 200) {
        json_error_t e;
        json_t *j = json_loadb(body, len, 0, &e);
        json_int_t did = 0, uid = 0;
        const char *tok = NULL;
        if (j &&
            json_unpack(j, "{s:s,s:I,s:{s:I}}", "access_token", &tok, "device_id", &did, "user", "id", &uid) == 0) {
            device *d = &u_out[job];
            d->uidx = job / u_devices;
            d->devno = job % u_devices;
            d->uid = uid;
            d->did = did;
            d->token = strdup(tok);
            json_decref(j);
            return 0;
        }
        json_decref(j);
    }
    if (u_fail_printed++ < 3)
        fprintf(stderr, "natterload: %s answered %d: %.*s\n", u_login_phase ? "login" : "register", status,
                (int)(len > 300 ? 300 : len), body ? body : "");
    return -1;
}

static int cmd_users(void)
{
    u_prefix = opt_req("--prefix");
    u_users = opt_l("--users", 0);
    u_devices = opt_l("--devices", 1);
    const char *out = opt_req("--out");
    int conns = (int)opt_l("--conns", 32);
    double limit = opt_d("--max-seconds", 900);
    if (u_users <= 0 || u_users > 100000 || u_devices <= 0 || u_devices > 100)
        die("users: --users 1..100000, --devices 1..100");
    uint64_t t0 = now_ns();
    runner reg = {.njobs = u_users, .build = users_build, .handle = users_handle};
    if (!runner_run(&reg, conns, limit))
        die("users: registration incomplete (%ld of %ld done, %ld failed)", reg.done, reg.njobs, reg.failed);
    uint64_t t1 = now_ns();
    u_login_phase = true;
    u_out = xcalloc((size_t)(u_users * u_devices), sizeof *u_out);
    runner login = {.njobs = u_users * u_devices, .build = users_build, .handle = users_handle};
    bool ok = runner_run(&login, conns, limit);
    uint64_t t2 = now_ns();
    if (!ok)
        die("users: logins incomplete (%ld of %ld done, %ld failed)", login.done, login.njobs, login.failed);
    FILE *f = fopen(out, "w");
    if (!f)
        die("%s: %s", out, strerror(errno));
    for (long i = 0; i < login.njobs; i++)
        fprintf(f, "%ld %ld %lld %lld %s\n", u_out[i].uidx, u_out[i].devno, u_out[i].uid, u_out[i].did, u_out[i].token);
    fclose(f);
    printf(
        "setup_%-10s %ld users registered in %.1f s (%.0f/s), %ld devices logged in in %.1f s (%.0f/s), "
        "%ld retries (429/503)\n",
        u_prefix, u_users, (double)(t1 - t0) / 1e9, (double)u_users / ((double)(t1 - t0) / 1e9), login.njobs,
        (double)(t2 - t1) / 1e9, (double)login.njobs / ((double)(t2 - t1) / 1e9), reg.retries + login.retries);
    return 0;
}

/* ====================================================================== */
/* pairs / group: chat creation                                           */
/* ====================================================================== */

static long long *c_ids;
static long c_members;

static size_t pairs_build(runner *r, long job, char *buf, size_t cap)
{
    (void)r;
    char body[128];
    snprintf(body, sizeof body, "{\"kind\":\"direct\",\"user_id\":%lld}", dev_of(2 * job + 1, 0)->uid);
    return build_req(buf, cap, "POST", "/v1/chats", dev_of(2 * job, 0)->token, body);
}

static size_t group_build(runner *r, long job, char *buf, size_t cap)
{
    (void)r;
    (void)job;
    char body[4096];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"kind\":\"group\",\"title\":\"bench group\",\"member_ids\":[");
    for (long i = 1; i < c_members; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "%s%lld", i > 1 ? "," : "", dev_of(i, 0)->uid);
    snprintf(body + n, sizeof body - n, "]}");
    return build_req(buf, cap, "POST", "/v1/chats", dev_of(0, 0)->token, body);
}

static int chat_handle(runner *r, long job, int status, const char *body, size_t len)
{
    (void)r;
    if (status == 503 || status < 0)
        return 1;
    if (status == 200 || status == 201) {
        json_t *j = json_loadb(body, len, 0, NULL);
        json_int_t id = 0;
        if (j && json_unpack(j, "{s:I}", "id", &id) == 0) {
            c_ids[job] = id;
            json_decref(j);
            return 0;
        }
        json_decref(j);
    }
    fprintf(stderr, "natterload: chat creation answered %d: %.*s\n", status, (int)(len > 300 ? 300 : len),
            body ? body : "");
    return -1;
}

static int cmd_pairs(void)
{
    load_devices(opt_req("--devices"));
    long users = opt_l("--users", 0);
    const char *out = opt_req("--out");
    if (users < 2 || users % 2)
        die("pairs: --users must be even and >= 2");
    long n = users / 2;
    c_ids = xcalloc((size_t)n, sizeof *c_ids);
    uint64_t t0 = now_ns();
    runner r = {.njobs = n, .build = pairs_build, .handle = chat_handle};
    if (!runner_run(&r, (int)opt_l("--conns", 32), opt_d("--max-seconds", 300)))
        die("pairs: incomplete (%ld of %ld)", r.done, n);
    FILE *f = fopen(out, "w");
    if (!f)
        die("%s: %s", out, strerror(errno));
    for (long k = 0; k < n; k++)
        fprintf(f, "%lld %ld %ld\n", c_ids[k], 2 * k, 2 * k + 1);
    fclose(f);
    printf("setup_pairs  %ld direct chats created in %.1f s\n", n, (double)(now_ns() - t0) / 1e9);
    return 0;
}

static int cmd_group(void)
{
    load_devices(opt_req("--devices"));
    c_members = opt_l("--members", 100);
    const char *out = opt_req("--out");
    if (c_members < 2 || c_members > 100)
        die("group: --members 2..100");
    c_ids = xcalloc(1, sizeof *c_ids);
    runner r = {.njobs = 1, .build = group_build, .handle = chat_handle};
    if (!runner_run(&r, 1, 60))
        die("group: creation failed");
    FILE *f = fopen(out, "w");
    if (!f)
        die("%s: %s", out, strerror(errno));
    fprintf(f, "%lld\n", c_ids[0]);
    fclose(f);
    printf("setup_group  group chat %lld with %ld members\n", c_ids[0], c_members);
    return 0;
}

/* mesh: job j creates the chat of user i = j mod U with user i+k, k = j / U + 1
 * (consecutive jobs touch different users, so concurrent creates rarely wait
 * on each other's locks). */
static long m_users, m_half;

static size_t mesh_build(runner *r, long job, char *buf, size_t cap)
{
    (void)r;
    long i = job % m_users, k = job / m_users + 1;
    char body[128];
    snprintf(body, sizeof body, "{\"kind\":\"direct\",\"user_id\":%lld}", dev_of((i + k) % m_users, 0)->uid);
    return build_req(buf, cap, "POST", "/v1/chats", dev_of(i, 0)->token, body);
}

static int cmd_mesh(void)
{
    load_devices(opt_req("--devices"));
    m_users = opt_l("--users", 1000);
    long per_user = opt_l("--per-user", 200);
    const char *out = opt_req("--out");
    int conns = (int)opt_l("--conns", 64);
    if (per_user < 2 || per_user % 2 || per_user >= m_users || m_users > 100000 || per_user > 2000 || conns < 1 ||
        conns > 1024)
        die("mesh: --per-user must be even, >= 2 and < --users (<= 100000)");
    m_half = per_user / 2;
    long n = m_users * m_half;
    c_ids = xcalloc((size_t)n, sizeof *c_ids);
    uint64_t t0 = now_ns();
    runner r = {.njobs = n, .build = mesh_build, .handle = chat_handle};
    if (!runner_run(&r, conns, opt_d("--max-seconds", 900)))
        die("mesh: incomplete (%ld of %ld done, %ld failed) after %.0f s", r.done, n, r.failed,
            (double)(now_ns() - t0) / 1e9);
    double s = (double)(now_ns() - t0) / 1e9;
    FILE *f = fopen(out, "w");
    if (!f)
        die("%s: %s", out, strerror(errno));
    fprintf(f, "mesh %ld %ld\n", m_users, m_half);
    for (long j = 0; j < n; j++) {
        long i = j % m_users, k = j / m_users + 1;
        fprintf(f, "%lld %ld %ld\n", c_ids[j], i, (i + k) % m_users);
    }
    fclose(f);
    long created = r.by_status[201], existed = r.by_status[200];
    printf(
        "setup_mesh       %ld direct chats (%ld users x %ld chats each) created through the API in %.1f s (%.0f/s) "
        "over %d connections: 201 %ld, 200 (already there) %ld, %ld retries (503/dropped)\n",
        n, m_users, per_user, s, (double)n / s, conns, created, existed, r.retries);
    return 0;
}

/* ====================================================================== */
/* long-poll fleet shared by idle / deliver / fanout                      */
/* ====================================================================== */

enum { P_NEW, P_HEAD, P_POLL, P_RETRY, P_FAILED };

typedef struct {
    conn c;
    device *d;
    int state;
    int64_t since;
    uint64_t poll_sent; /* when the current poll was queued */
    long answers, errors;
    int retry_state; /* P_HEAD or P_POLL: what to send again after a 503 */
    uint64_t retry_at;
} poller;

static poller *P;
static long nP;
static int poll_timeout = 30;
static long p_answers, p_errors, p_empty, p_retry_by[600];
static long *retryq, nretryq;
#define POLL_RETRY_NS (500 * MS)
#define POLL_MAX_ERRORS 20
static void (*on_poll_body)(poller *p, const char *body, size_t len, uint64_t now);

static void poll_cb(conn *c, int status, const char *body, size_t len, uint64_t tw);

static void poll_send(poller *p)
{
    char path[128], buf[2048];
    if (p->state == P_HEAD)
        snprintf(path, sizeof path, "/v1/events");
    else
        snprintf(path, sizeof path, "/v1/events?since=%" PRId64 "&timeout=%d", p->since, poll_timeout);
    size_t n = build_req(buf, sizeof buf, "GET", path, p->d->token, NULL);
    p->poll_sent = now_ns();
    if (conn_request(&p->c, buf, n, poll_cb) < 0) {
        p->state = P_FAILED;
        p_errors++;
    }
}

static void poll_cb(conn *c, int status, const char *body, size_t len, uint64_t tw)
{
    (void)tw;
    poller *p = &P[c->idx];
    uint64_t now = now_ns();
    if (status != 200) {
        /* a real client backs off and retries 503s and dropped connections */
        p->errors++;
        p_errors++;
        if (status < 600)
            p_retry_by[status < 0 ? 0 : status]++;
        if ((status == 503 || status < 0) && p->errors <= POLL_MAX_ERRORS) {
            p->retry_state = p->state;
            p->state = P_RETRY;
            p->retry_at = now + POLL_RETRY_NS;
            retryq[nretryq++] = c->idx;
            return;
        }
        if (p_errors - p_retry_by[503] - p_retry_by[0] <= 3)
            fprintf(stderr, "natterload: poll answered %d: %.*s\n", status, (int)(len > 200 ? 200 : len),
                    body ? body : "");
        p->state = P_FAILED;
        return;
    }
    int64_t next;
    if (!scan_next(body, len, &next))
        die("poll answer without next: %.*s", (int)(len > 200 ? 200 : len), body);
    if (p->state == P_POLL) {
        p->answers++;
        p_answers++;
        if (next == p->since)
            p_empty++;
        if (on_poll_body)
            on_poll_body(p, body, len, now);
    }
    p->since = next;
    p->state = P_POLL;
    poll_send(p);
}

/* "0" or e.g. "12 (503:10,conn:2; 503s and dropped connections retried after 0.5 s)" */
static const char *poll_errors_str(void)
{
    static char out[256];
    size_t n = (size_t)snprintf(out, sizeof out, "%ld", p_errors);
    if (!p_errors)
        return out;
    const char *sep = " (";
    for (int s = 0; s < 600; s++)
        if (p_retry_by[s]) {
            if (s)
                n += (size_t)snprintf(out + n, sizeof out - n, "%s%d:%ld", sep, s, p_retry_by[s]);
            else
                n += (size_t)snprintf(out + n, sizeof out - n, "%sconn:%ld", sep, p_retry_by[s]);
            sep = ",";
        }
    snprintf(out + n, sizeof out - n, "; 503s and dropped connections retried after 0.5 s)");
    return out;
}

/* re-sends the polls whose back-off has passed; called by loop_once */
static void pollers_tick(uint64_t now)
{
    for (long k = 0; k < nretryq;) {
        poller *p = &P[retryq[k]];
        if (p->retry_at > now) {
            k++;
            continue;
        }
        retryq[k] = retryq[--nretryq];
        p->state = p->retry_state;
        poll_send(p);
    }
}

static void pollers_init(long n)
{
    nP = n;
    retryq = xmalloc((size_t)n * sizeof *retryq);
    tick_hook = pollers_tick;
    P = xcalloc((size_t)n, sizeof *P);
    for (long i = 0; i < n; i++) {
        P[i].c.fd = -1;
        P[i].c.idx = i;
    }
}

/* Starts every poller (head request, then the poll) with at most `conc`
 * head requests in flight; bounded by max_s. Returns the seconds taken. */
static double pollers_start(long conc, double max_s)
{
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(max_s * 1e9);
    long started = 0;
    for (;;) {
        long in_head = 0;
        for (long i = 0; i < started; i++)
            if (P[i].state == P_HEAD || (P[i].state == P_RETRY && P[i].retry_state == P_HEAD))
                in_head++;
        while (started < nP && in_head < conc) {
            P[started].state = P_HEAD;
            poll_send(&P[started]);
            started++;
            in_head++;
        }
        if (started == nP && in_head == 0)
            break;
        if (now_ns() >= deadline)
            break;
        loop_once(5);
    }
    return (double)(now_ns() - t0) / 1e9;
}

static long pollers_in(int state)
{
    long n = 0;
    for (long i = 0; i < nP; i++)
        n += P[i].state == state;
    return n;
}

static void run_for(double seconds)
{
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end)
        loop_once(5);
}

/* GET /metrics on its own connection; returns natter_http_inflight_requests or -1 */
static long metrics_inflight;
static void metrics_cb(conn *c, int status, const char *body, size_t len, uint64_t tw)
{
    (void)c;
    (void)tw;
    (void)len;
    if (status != 200)
        return;
    const char *k = strstr(body, "\nnatter_http_inflight_requests ");
    if (k)
        metrics_inflight = strtol(k + 31, NULL, 10);
}

static conn mconn = {.fd = -1, .idx = -1}; /* keep-alive connection for /metrics */

static long server_inflight(void)
{
    char buf[256];
    size_t n = build_req(buf, sizeof buf, "GET", "/metrics", NULL, NULL);
    metrics_inflight = -1;
    if (mconn.busy || conn_request(&mconn, buf, n, metrics_cb) < 0)
        return -1;
    uint64_t end = now_ns() + 10 * SEC;
    while (mconn.busy && now_ns() < end)
        loop_once(1);
    if (mconn.busy) {
        mconn.cb = NULL;
        conn_close(&mconn);
        mconn.busy = false;
    }
    return metrics_inflight < 0 ? -1 : metrics_inflight - 1; /* minus the /metrics request itself */
}

/* Polls /metrics every 0.5 s until the server holds no request or `limit`
 * passes; returns the last count (-1 when unknown). */
static long wait_server_drained(uint64_t limit)
{
    uint64_t end = now_ns() + limit;
    long left = -1;
    while (now_ns() < end) {
        usleep(500000);
        left = server_inflight();
        if (left == 0)
            break;
    }
    return left;
}

/* ====================================================================== */
/* idle: hold N idle long-polls                                           */
/* ====================================================================== */

/* --sync DIR --loaders L: several idle processes meet at a named point.
 * This process creates DIR/NAME.PID, then keeps serving its connections
 * (polls renew) until L files DIR/NAME.* exist or max_s passes. Returns
 * how many had arrived (L when everyone did). */
static long sync_point(const char *dir, const char *name, long loaders, double max_s)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%ld", dir, name, (long)getpid());
    FILE *f = fopen(path, "w");
    if (!f)
        die("--sync: cannot create %s: %s", path, strerror(errno));
    fclose(f);
    size_t nlen = strlen(name);
    uint64_t end = now_ns() + (uint64_t)(max_s * 1e9);
    long seen = 0;
    for (;;) {
        seen = 0;
        DIR *d = opendir(dir);
        if (!d)
            die("--sync: cannot read %s: %s", dir, strerror(errno));
        struct dirent *e;
        for (long k = 0; k < 100000 && (e = readdir(d)); k++)
            seen += strncmp(e->d_name, name, nlen) == 0 && e->d_name[nlen] == '.';
        closedir(d);
        if (seen >= loaders || now_ns() >= end)
            break;
        for (int k = 0; k < 4; k++)
            loop_once(50);
    }
    return seen;
}

static int cmd_idle(void)
{
    load_devices(opt_req("--devices"));
    long count = opt_l("--count", 19000);
    double hold = opt_d("--hold", 10);
    long pid = opt_l("--api-pid", 0);
    long conc = opt_l("--open-concurrency", 256);
    long first = opt_l("--first", 0);
    double probe = opt_d("--probe", 0);
    double open_max = opt_d("--open-seconds", 120);
    poll_timeout = (int)opt_l("--poll-timeout", 60);
    if (first < 0 || count > ndevs - first)
        die("idle: --first %ld --count %ld but only %ld devices", first, count, ndevs);
    if (count > 19500)
        die("idle: --count above 19500 would pass the per-process descriptor limit");
    pollers_init(count);
    for (long i = 0; i < count; i++)
        P[i].d = &devs[first + i];

    const char *sync_dir = opt_s("--sync", NULL);
    long loaders = opt_l("--loaders", 1);
    if (sync_dir && (loaders < 1 || loaders > 1000))
        die("idle: --loaders must be 1..1000");

    long rss0 = vmrss_kb(pid);
    if (open_max < 1 || open_max > 3600)
        die("idle: --open-seconds 1..3600");
    double open_s = pollers_start(conc, open_max);
    long polling = pollers_in(P_POLL);
    long unstarted = pollers_in(P_NEW);
    if (unstarted > 0)
        printf("natterload: only %ld of %ld polls started within --open-seconds %.0f\n", count - unstarted, count,
               open_max);
    if (sync_dir) {
        /* the others may still be opening theirs (each has open_max) */
        long met = sync_point(sync_dir, "open", loaders, open_max + 30);
        if (met < loaders)
            printf("natterload: only %ld of %ld load processes had opened their polls after %.0f s\n", met, loaders,
                   open_max + 30);
    }
    run_for(hold);
    long held = pollers_in(P_POLL);
    long inflight = server_inflight();
    long rss1 = vmrss_kb(pid);
    printf(
        "idle_polls       target %ld  held %ld  (client: %ld polls outstanding; server natter_http_inflight_requests "
        "%ld)  opened in %.1f s (%.0f/s)  answered early %ld (empty %ld)  failed %ld  poll errors %s  sockets %ld\n",
        count, held < inflight || inflight < 0 ? held : inflight, held, inflight, open_s, (double)polling / open_s,
        p_answers, p_empty, pollers_in(P_FAILED), poll_errors_str(), n_open);
    if (pid > 0 && rss0 > 0 && rss1 > 0) {
        long h = held < inflight || inflight < 0 ? held : inflight;
        printf(
            "idle_polls_rss   natter-api VmRSS before %.1f MB  with polls %.1f MB  per held poll %.2f KB "
            "(target <= 10 KB)\n",
            rss0 / 1024.0, rss1 / 1024.0, h > 0 ? (double)(rss1 - rss0) / (double)h : NAN);
    }
    if (probe > 0) {
        /* every held poll must answer (at its timeout) and be renewed */
        long *before = xmalloc((size_t)nP * sizeof *before);
        for (long i = 0; i < nP; i++)
            before[i] = P[i].state == P_POLL ? P[i].answers : -1;
        uint64_t end = now_ns() + (uint64_t)(probe * 1e9);
        long answered = 0, asked = 0;
        for (long i = 0; i < nP; i++)
            asked += before[i] >= 0;
        while (now_ns() < end) {
            loop_once(50);
            answered = 0;
            for (long i = 0; i < nP; i++)
                answered += before[i] >= 0 && P[i].answers > before[i];
            if (answered == asked)
                break;
        }
        printf("idle_probe       %ld of %ld held polls answered within %.0f s (their %d s timeout)  poll errors %s\n",
               answered, asked, probe, poll_timeout, poll_errors_str());
        free(before);
    }
    if (sync_dir) {
        /* keep holding until every process has probed */
        long met = sync_point(sync_dir, "done", loaders, probe + hold + 60);
        if (met < loaders)
            printf("natterload: only %ld of %ld load processes had probed when this one hung up\n", met, loaders);
    }
    /* hang up and see what the server gives back */
    for (long i = 0; i < nP; i++) {
        P[i].c.cb = NULL;
        conn_close(&P[i].c);
    }
    if (pid > 0) {
        long left = wait_server_drained(15 * SEC);
        long rss2 = vmrss_kb(pid);
        printf("idle_polls_after natter-api VmRSS %.1f MB after the clients hung up (server inflight %ld)\n",
               rss2 / 1024.0, left);
    }
    return 0;
}

/* ====================================================================== */
/* renew: idle polls answered empty at their timeout and renewed at once  */
/* ====================================================================== */

static int cmd_renew(void)
{
    load_devices(opt_req("--devices"));
    long count = opt_l("--count", 19000);
    double secs = opt_d("--seconds", 95), window = opt_d("--window", 90);
    long conc = opt_l("--open-concurrency", 256);
    poll_timeout = (int)opt_l("--poll-timeout", 30);
    if (count < 1 || count > ndevs)
        die("renew: --count 1..%ld (devices in the file)", ndevs);
    if (count > 19500)
        die("renew: --count above 19500 would pass the per-process descriptor limit");
    if (secs <= 0 || secs > 600 || window <= 0 || window > secs)
        die("renew: --seconds 1..600, --window 1..seconds");
    pollers_init(count);
    for (long i = 0; i < count; i++)
        P[i].d = &devs[i];
    on_poll_body = NULL;
    double open_s = pollers_start(conc, 180);
    long polling = pollers_in(P_POLL);
    printf("renew_open       %ld of %ld polls open (timeout=%d) in %.1f s (%.0f/s); poll errors %s\n", polling, count,
           poll_timeout, open_s, (double)polling / open_s, poll_errors_str());
    run_for(secs - window);
    long a0 = p_answers, e0 = p_empty, err0 = p_errors;
    printf("@begin renew\n");
    uint64_t w0 = now_ns();
    run_for(window);
    double w = (double)(now_ns() - w0) / 1e9;
    long ans = p_answers - a0, empty = p_empty - e0, errs = p_errors - err0;
    long running = pollers_in(P_POLL);
    printf(
        "renew_polls      %ld polls renewing for %.0f s after all were open; over the last %.0f s: %.0f renewals/s "
        "(%ld answers: %ld empty at the timeout, %ld with events), errors %ld; polls running at the end %ld, failed "
        "%ld (all poll errors: %s)\n",
        count, secs, w, (double)ans / w, ans, empty, ans - empty, errs, running, pollers_in(P_FAILED),
        poll_errors_str());
    printf("@end renew\t%ld\trenewal\n", ans);
    for (long i = 0; i < nP; i++) {
        P[i].c.cb = NULL;
        conn_close(&P[i].c);
    }
    /* let the server drop them before the next scenario (bounded) */
    long left = wait_server_drained(20 * SEC);
    printf("renew_after      server inflight %ld after the clients hung up\n", left);
    return 0;
}

/* ====================================================================== */
/* deliver: 1:1 send -> recipient's poll answered, a ramp of fixed rates  */
/* ====================================================================== */

/* Every mesh user polls (one device each); senders are users 0..S-1, one
 * keep-alive connection each with at most one message in flight. A message
 * goes from its sender to a random one of the sender's chat partners, so the
 * recipient is any poller. client_msg_id numbers are (run << 32) | index. */

typedef struct {
    int recip; /* poller index = user index */
    int status;
    unsigned ndeliv; /* times the recipient's polls returned it */
    uint64_t t_write, t_post, t_deliv;
} dmsg;

typedef struct {
    double rate;
    dmsg *M;
    long nM, capM;
    lat_t lat, post;
    long post_by[600], post_neg, dups, late;
    /* results */
    double achieved, delivered_s, p50, p99, max;
    long ok, delivered, lost, unanswered, not_sent;
    bool ran, sustained;
} drun;

static drun *DR;
static int nDR, curDR = -1, latDR = -1; /* run being sent; run whose latencies count */

static conn *S;
static long nS;
static long *S_free, nS_free;
static int *S_run;
static long *S_mi;

static void deliver_seen(uint64_t n, void *ud)
{
    poller *p = ud;
    long r = (long)(n >> 32), mi = (long)(n & 0xffffffffu);
    if (r < 0 || r >= nDR || mi >= DR[r].nM)
        return;
    dmsg *m = &DR[r].M[mi];
    if (&P[m->recip] != p)
        return; /* the sender's own copy */
    if (m->ndeliv++) {
        DR[r].dups++;
        return;
    }
    m->t_deliv = now_ns();
    if (r == latDR)
        lat_add(&DR[r].lat, m->t_deliv - m->t_write);
    else
        DR[r].late++; /* after its run's grace: it was counted lost */
}

static void deliver_body(poller *p, const char *body, size_t len, uint64_t now)
{
    (void)now;
    scan_cmids(body, len, deliver_seen, p);
}

static void send_cb(conn *c, int status, const char *body, size_t len, uint64_t tw)
{
    (void)tw;
    long si = c->idx;
    drun *d = &DR[S_run[si]];
    dmsg *m = &d->M[S_mi[si]];
    m->status = status;
    m->t_post = now_ns();
    if (status == 201)
        lat_add(&d->post, m->t_post - m->t_write);
    if (status < 0)
        d->post_neg++;
    else if (status < 600)
        d->post_by[status]++;
    if (status != 201 && (status < 0 || status >= 600 || d->post_by[status] <= 3) && d->post_neg <= 3)
        fprintf(stderr, "natterload: send answered %d: %.*s\n", status, (int)(len > 200 ? 200 : len), body ? body : "");
    S_free[nS_free++] = si;
}

/* One message from a random free sender to a random partner of it. */
static bool deliver_dispatch(drun *d)
{
    if (d->nM == d->capM || nS_free == 0)
        return false;
    long k = (long)(rnd() % (uint64_t)nS_free);
    long si = S_free[k];
    S_free[k] = S_free[--nS_free];
    long partner;
    long long chat = mesh_chat_of(si, (long)(rnd() % (uint64_t)(2 * mesh_half)), &partner);
    long mi = d->nM++;
    dmsg *m = &d->M[mi];
    memset(m, 0, sizeof *m);
    m->recip = (int)partner;
    char path[96], body[256], cmid[40], buf[2048];
    snprintf(path, sizeof path, "/v1/chats/%lld/messages", chat);
    make_cmid(cmid, ((uint64_t)curDR << 32) | (uint64_t)mi);
    snprintf(body, sizeof body,
             "{\"client_msg_id\":\"%s\",\"text\":\"bench 1:1 message %ld: lorem ipsum dolor sit amet, consectetur\"}",
             cmid, mi);
    size_t n = build_req(buf, sizeof buf, "POST", path, dev_of(si, 0)->token, body);
    S_run[si] = curDR;
    S_mi[si] = mi;
    conn *c = &S[si];
    if (conn_request(c, buf, n, send_cb) < 0) {
        m->status = -1;
        d->post_neg++;
        S_free[nS_free++] = si;
        return true;
    }
    m->t_write = c->t_write;
    return true;
}

static void warm_cb(conn *c, int status, const char *body, size_t len, uint64_t tw)
{
    (void)body;
    (void)len;
    (void)tw;
    (void)status;
    S_free[nS_free++] = c->idx;
}

static void senders_init(long n)
{
    nS = n;
    S = xcalloc((size_t)n, sizeof *S);
    S_free = xmalloc((size_t)n * sizeof *S_free);
    S_run = xcalloc((size_t)n, sizeof *S_run);
    S_mi = xcalloc((size_t)n, sizeof *S_mi);
    nS_free = 0;
    char buf[256];
    size_t len = build_req(buf, sizeof buf, "GET", "/healthz", NULL, NULL);
    for (long i = 0; i < n; i++) {
        S[i].fd = -1;
        S[i].idx = i;
        if (conn_request(&S[i], buf, len, warm_cb) < 0)
            die("cannot open sender connections");
    }
    uint64_t end = now_ns() + 10 * SEC;
    while (nS_free < n && now_ns() < end)
        loop_once(5);
    if (nS_free < n)
        die("sender connections did not warm up (%ld of %ld)", nS_free, n);
}

static void statuses_str(char *st, size_t cap, const long *by, long neg)
{
    size_t sn = 0;
    st[0] = '\0';
    for (int s = 0; s < 600; s++)
        if (by[s])
            sn += (size_t)snprintf(st + sn, cap - sn, "%s%d:%ld", sn ? "," : "", s, by[s]);
    if (neg)
        snprintf(st + sn, cap - sn, "%sconn-errors:%ld", sn ? "," : "", neg);
    if (!st[0])
        snprintf(st, cap, "none");
}

/* One rate of the ramp: offer for secs, then wait (bounded) for stragglers. */
static void deliver_run(int ri, double secs, double grace_s)
{
    drun *d = &DR[ri];
    curDR = latDR = ri;
    d->ran = true;
    d->capM = (long)(d->rate * secs) + 16;
    d->M = xcalloc((size_t)d->capM, sizeof *d->M);
    long ans0 = p_answers, err0 = p_errors;
    printf("@begin deliver at %.0f msg/s\n", d->rate);
    run_for(0.2); /* run.sh takes its CPU snapshot now */

    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
    uint64_t period = (uint64_t)(1e9 / d->rate), next_due = t0;
    long due = 0, backlog_max = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end)
            break;
        while (next_due <= now) {
            due++;
            next_due += period;
        }
        while (due > 0 && nS_free > 0 && deliver_dispatch(d))
            due--;
        if (due > backlog_max)
            backlog_max = due;
        uint64_t wait = next_due > now ? next_due - now : 0;
        int ms = (int)((wait + MS - 1) / MS);
        loop_once(ms < 1 ? 1 : ms);
    }
    uint64_t t_end = now_ns();
    d->not_sent = due;
    /* stragglers: every POST answered and every 201 delivered, at most grace_s */
    uint64_t grace_end = t_end + (uint64_t)(grace_s * 1e9);
    long pending = 1;
    while (now_ns() < grace_end) {
        pending = nS - nS_free;
        for (long i = 0; i < d->nM && !pending; i++)
            if (d->M[i].status == 201 && !d->M[i].ndeliv)
                pending = 1;
        if (!pending)
            break;
        loop_once(5);
    }
    double wait_s = (double)(now_ns() - t_end) / 1e9;
    d->ok = d->delivered = d->lost = d->unanswered = 0;
    for (long i = 0; i < d->nM; i++) {
        dmsg *m = &d->M[i];
        d->ok += m->status == 201;
        d->delivered += m->ndeliv > 0;
        d->lost += m->status == 201 && !m->ndeliv;
        d->unanswered += m->status == 0;
    }
    double dur = (double)(t_end - t0) / 1e9;
    d->achieved = (double)d->ok / dur;
    d->delivered_s = (double)d->delivered / dur;
    d->p50 = lat_pct(&d->lat, 50);
    d->p99 = lat_pct(&d->lat, 99);
    d->max = lat_max(&d->lat);
    d->sustained = d->achieved >= 0.97 * d->rate && d->p99 <= 1000.0 && d->lost == 0 && d->dups == 0 &&
                   d->unanswered == 0;
    char st[256];
    statuses_str(st, sizeof st, d->post_by, d->post_neg);
    printf(
        "deliver_rate     offered %.0f msg/s for %.0f s: achieved %.0f msg/s (201s; %ld sent, %ld left in the "
        "backlog, backlog max %ld), delivered %.0f msg/s  latency p50 %.2f ms  p99 %.2f ms  max %.2f ms  lost %ld  "
        "duplicates %ld  POST statuses %s%s\n",
        d->rate, secs, d->achieved, d->nM, d->not_sent, backlog_max, d->delivered_s, d->p50, d->p99, d->max, d->lost,
        d->dups, st, d->sustained ? "  [sustained]" : "");
    printf(
        "deliver_detail   at %.0f msg/s: POST 201 latency p50 %.2f ms p99 %.2f ms; stragglers waited %.1f s (max "
        "%.0f), POSTs unanswered %ld; poll answers %.0f/s, poll errors %ld (all runs: %s)\n",
        d->rate, lat_pct(&d->post, 50), lat_pct(&d->post, 99), wait_s, grace_s, d->unanswered,
        (double)(p_answers - ans0) / dur, p_errors - err0, poll_errors_str());
    printf("@end deliver at %.0f msg/s\t%ld\tdelivered message\n", d->rate, d->delivered);
    latDR = -1;
}

static int cmd_deliver(void)
{
    load_devices(opt_req("--devices"));
    load_mesh(opt_req("--chats"));
    long np = mesh_users;
    long nsend = opt_l("--senders", 200);
    double secs = opt_d("--seconds", 10), warm = opt_d("--warmup", 3), grace = opt_d("--grace", 10);
    double settle = opt_d("--settle", 3), stop_below = opt_d("--stop-below", 0.8);
    poll_timeout = (int)opt_l("--poll-timeout", 30);
    const char *rates = opt_s("--rates", "500 1000 2000 4000 6000 8000");
    if (nsend < 1 || nsend > np)
        die("deliver: --senders 1..%ld (the mesh's users)", np);
    if (secs <= 0 || secs > 120 || grace < 0 || grace > 60 || settle < 0 || settle > 60)
        die("deliver: --seconds 1..120, --grace 0..60, --settle 0..60");
    DR = xcalloc(16, sizeof *DR);
    for (const char *p = rates; *p && nDR < 16;) {
        char *e;
        double v = strtod(p, &e);
        if (e == p)
            break;
        if (v < 1 || v > 50000)
            die("deliver: rates 1..50000 msg/s");
        DR[nDR++].rate = v;
        p = e;
    }
    if (!nDR)
        die("deliver: --rates \"R1 R2 …\"");
    pollers_init(np);
    for (long i = 0; i < np; i++)
        P[i].d = dev_of(i, 0);
    on_poll_body = deliver_body;

    double open_s = pollers_start(256, 120);
    if (pollers_in(P_POLL) != np)
        die("deliver: only %ld of %ld polls running after %.1f s (head %ld, retry %ld, failed %ld, new %ld; poll "
            "errors %s)",
            pollers_in(P_POLL), np, open_s, pollers_in(P_HEAD), pollers_in(P_RETRY), pollers_in(P_FAILED),
            pollers_in(P_NEW), poll_errors_str());
    senders_init(nsend);
    run_for(warm);
    printf(
        "deliver_setup    %ld users polling (one device each, timeout=%d), each in %ld direct chats; %ld sender "
        "connections (users 0..%ld, one message in flight each); polls opened in %.1f s\n",
        np, poll_timeout, 2 * mesh_half, nsend, nsend - 1, open_s);

    int best = -1, stopped = -1;
    for (int ri = 0; ri < nDR; ri++) {
        deliver_run(ri, secs, grace);
        if (DR[ri].sustained && (best < 0 || DR[ri].rate > DR[best].rate))
            best = ri;
        if (DR[ri].achieved < stop_below * DR[ri].rate) {
            stopped = ri;
            break;
        }
        if (ri + 1 < nDR)
            run_for(settle); /* let the server finish what this run left behind */
    }
    curDR = -1;
    run_for(1);
    long late = 0, dups = 0;
    for (int ri = 0; ri < nDR; ri++) {
        late += DR[ri].late;
        dups += DR[ri].dups;
    }
    if (stopped >= 0 && stopped + 1 < nDR)
        printf("deliver_stop     saturated at %.0f msg/s (achieved %.0f < %.0f%% of offered): higher rates skipped\n",
               DR[stopped].rate, DR[stopped].achieved, stop_below * 100);
    if (best >= 0) {
        printf(
            "deliver_max      max sustained %.0f msg/s (achieved %.0f msg/s, p99 %.2f ms, lost 0, duplicates 0)  "
            "(target >= 6000 msg/s: achieved >= 97%% of offered, p99 <= 1 s, nothing lost)\n",
            DR[best].rate, DR[best].achieved, DR[best].p99);
        printf("@cpu deliver at %.0f msg/s\n", DR[best].rate);
    } else {
        printf(
            "deliver_max      no offered rate was sustained (achieved >= 97%% of offered, p99 <= 1 s, nothing lost)  "
            "(target >= 6000 msg/s)\n");
    }
    int r2k = -1;
    for (int ri = 0; ri < nDR; ri++)
        if (DR[ri].ran && DR[ri].rate == 2000)
            r2k = ri;
    if (r2k >= 0)
        printf(
            "deliver_p99_2000 send -> recipient's poll answered at 2000 msg/s: p50 %.2f ms  p99 %.2f ms  max %.2f "
            "ms  (target p99 <= 5 ms)%s\n",
            DR[r2k].p50, DR[r2k].p99, DR[r2k].max, DR[r2k].achieved < 0.97 * 2000 ? "  [2000 msg/s not achieved]" : "");
    else
        printf("deliver_p99_2000 not measured (2000 is not among the rates run)\n");
    printf(
        "deliver_after    deliveries after their run's grace (counted lost there): %ld; duplicates in all runs: %ld\n",
        late, dups);
    const char *dump = opt_s("--dump", NULL); /* per-message timings, for digging into outliers */
    if (dump) {
        FILE *f = fopen(dump, "w");
        if (f) {
            fprintf(f, "# rate msg t_write_ns post_ms deliver_ms status ndeliv recipient\n");
            for (int ri = 0; ri < nDR; ri++)
                for (long i = 0; i < DR[ri].nM; i++) {
                    dmsg *m = &DR[ri].M[i];
                    fprintf(f, "%.0f %ld %" PRIu64 " %.3f %.3f %d %u %d\n", DR[ri].rate, i, m->t_write,
                            m->t_post ? (double)(m->t_post - m->t_write) / 1e6 : -1.0,
                            m->t_deliv ? (double)(m->t_deliv - m->t_write) / 1e6 : -1.0, m->status, m->ndeliv,
                            m->recip);
                }
            fclose(f);
        }
    }
    for (long i = 0; i < nP; i++) {
        P[i].c.cb = NULL;
        conn_close(&P[i].c);
    }
    for (long i = 0; i < nS; i++)
        conn_close(&S[i]);
    return 0;
}

/* ====================================================================== */
/* fanout: group send -> all member polls answered                        */
/* ====================================================================== */

static long f_cur = -1;
static uint64_t *f_got;
static long f_count;
static uint64_t f_last;

static void fanout_seen(uint64_t n, void *ud)
{
    poller *p = ud;
    if ((long)n != f_cur)
        return;
    long i = p - P;
    if (f_got[i])
        return;
    f_got[i] = now_ns();
    f_count++;
    f_last = f_got[i];
}

static void fanout_body(poller *p, const char *body, size_t len, uint64_t now)
{
    (void)now;
    scan_cmids(body, len, fanout_seen, p);
}

static int f_status;
static uint64_t f_post_done;
static void fanout_send_cb(conn *c, int status, const char *body, size_t len, uint64_t tw)
{
    (void)c;
    (void)tw;
    f_status = status;
    f_post_done = now_ns();
    if (status != 201)
        fprintf(stderr, "natterload: group send answered %d: %.*s\n", status, (int)(len > 200 ? 200 : len),
                body ? body : "");
}

static int cmd_fanout(void)
{
    load_devices(opt_req("--devices"));
    long long chat = opt_l("--chat", 0);
    long members = opt_l("--members", 100), sends = opt_l("--sends", 200);
    uint64_t min_age = (uint64_t)opt_l("--min-age-ms", 20) * MS;
    uint64_t settle_max = (uint64_t)opt_l("--settle-max-ms", 5000) * MS;
    double max_s = opt_d("--max-seconds", 300);
    poll_timeout = (int)opt_l("--poll-timeout", 30);
    if (members < 2 || members > 100 || sends < 1 || sends > 100000 || chat <= 0)
        die("fanout: --chat ID, --members 2..100, --sends 1..100000");
    pollers_init(members);
    for (long i = 0; i < members; i++)
        P[i].d = dev_of(i, 0);
    device *sd = dev_of(0, 1);
    on_poll_body = fanout_body;
    f_got = xcalloc((size_t)members, sizeof *f_got);
    pollers_start(64, 60);
    if (pollers_in(P_POLL) != members)
        die("fanout: only %ld of %ld polls running", pollers_in(P_POLL), members);
    run_for(1);
    printf("@begin group\n");
    run_for(0.2); /* run.sh takes its CPU snapshot now */

    conn sc = {.fd = -1};
    lat_t last = {0}, first = {0}, post = {0}, settle = {0};
    uint64_t prev_done = 0;
    long incomplete = 0, unsettled = 0, bad = 0;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(max_s * 1e9);
    long k;
    for (k = 0; k < sends && now_ns() < deadline; k++) {
        /* Wait until the server is quiet: every member's poll has been out
         * for min_age and the server holds nothing but those suspended polls
         * (natter_http_inflight_requests == members), so that each send is
         * timed alone and not behind the acks/receipts of the previous one. */
        uint64_t ws = now_ns();
        for (;;) {
            uint64_t now = now_ns();
            long ready = 0;
            for (long i = 0; i < members; i++)
                ready += P[i].state == P_POLL && P[i].c.busy && now - P[i].poll_sent >= min_age;
            if (ready == members && server_inflight() == members) {
                if (k > 0)
                    lat_add(&settle, now_ns() - prev_done);
                break;
            }
            if (now - ws >= settle_max) {
                unsettled++;
                break;
            }
            loop_once(2);
        }
        char path[96], body[256], cmid[40], buf[2048];
        f_cur = 1000000 + k;
        memset(f_got, 0, (size_t)members * sizeof *f_got);
        f_count = 0;
        f_status = 0;
        snprintf(path, sizeof path, "/v1/chats/%lld/messages", chat);
        make_cmid(cmid, (uint64_t)f_cur);
        snprintf(body, sizeof body,
                 "{\"client_msg_id\":\"%s\",\"text\":\"bench group message %ld: lorem ipsum dolor sit amet\"}", cmid,
                 k);
        size_t n = build_req(buf, sizeof buf, "POST", path, sd->token, body);
        if (conn_request(&sc, buf, n, fanout_send_cb) < 0)
            die("fanout: cannot connect");
        uint64_t tw = sc.t_write, wait_end = now_ns() + 5 * SEC;
        while ((f_count < members || f_status == 0) && now_ns() < wait_end)
            loop_once(2);
        if (f_status == 201)
            lat_add(&post, f_post_done - tw);
        else
            bad++;
        if (f_count == members) {
            lat_add(&last, f_last - tw);
            uint64_t mn = UINT64_MAX;
            for (long i = 0; i < members; i++)
                if (f_got[i] < mn)
                    mn = f_got[i];
            lat_add(&first, mn - tw);
        } else {
            incomplete++;
        }
        prev_done = now_ns();
        if (sc.busy) {
            sc.cb = NULL;
            conn_close(&sc);
            sc.busy = false;
        }
    }
    double dur = (double)(now_ns() - t0) / 1e9;
    printf(
        "group_fanout     %ld sends to a group of %ld (all polling), %.1f sends/s: all %ld polls answered  p50 "
        "%.2f ms  p99 %.2f ms  max %.2f ms  (target p99 <= 8 ms)\n",
        k, members, (double)k / dur, members, lat_pct(&last, 50), lat_pct(&last, 99), lat_max(&last));
    printf(
        "group_detail     first poll answered p50 %.2f ms p99 %.2f ms; POST 201 p50 %.2f ms p99 %.2f ms; "
        "incomplete %ld, non-201 %ld, poll errors %s\n",
        lat_pct(&first, 50), lat_pct(&first, 99), lat_pct(&post, 50), lat_pct(&post, 99), incomplete, bad,
        poll_errors_str());
    printf(
        "group_settle     after each send the server stays busy with its acks/receipts for p50 %.0f ms p99 %.0f ms "
        "max %.0f ms before it is quiet again; sends made before it was quiet (waited %.0f s): %ld\n",
        lat_pct(&settle, 50), lat_pct(&settle, 99), lat_max(&settle), (double)settle_max / 1e9, unsettled);
    printf("@end group\t%ld\tgroup send (to %ld polls)\n", k - bad, members);
    for (long i = 0; i < nP; i++) {
        P[i].c.cb = NULL;
        conn_close(&P[i].c);
    }
    conn_close(&sc);
    return 0;
}

/* ====================================================================== */
/* sends / fill / history: closed loops                                   */
/* ====================================================================== */

static long long s_chat;
static long s_limit;
static uint64_t s_base;

/* connection i acts for mesh user i, into a random one of its direct chats */
static size_t sends_build(runner *r, long job, char *buf, size_t cap)
{
    long u = r->cur_conn % mesh_users, partner;
    long long chat = mesh_chat_of(u, (long)(rnd() % (uint64_t)(2 * mesh_half)), &partner);
    char path[96], body[256], cmid[40];
    snprintf(path, sizeof path, "/v1/chats/%lld/messages", chat);
    make_cmid(cmid, s_base + (uint64_t)job);
    snprintf(body, sizeof body,
             "{\"client_msg_id\":\"%s\",\"text\":\"bench durable send %ld: lorem ipsum dolor sit amet, consectetur\"}",
             cmid, job);
    return build_req(buf, cap, "POST", path, dev_of(u, 0)->token, body);
}

static size_t fill_build(runner *r, long job, char *buf, size_t cap)
{
    (void)r;
    char path[96], body[512], cmid[40];
    snprintf(path, sizeof path, "/v1/chats/%lld/messages", s_chat);
    make_cmid(cmid, s_base + (uint64_t)job);
    snprintf(body, sizeof body,
             "{\"client_msg_id\":\"%s\",\"text\":\"history message %ld: Lorem ipsum dolor sit amet, consectetur "
             "adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.\"}",
             cmid, job);
    return build_req(buf, cap, "POST", path, dev_of(job % 2, 0)->token, body);
}

static int fill_handle(runner *r, long job, int status, const char *body, size_t len)
{
    (void)r;
    (void)job;
    if (status == 201 || status == 200)
        return 0;
    if (status == 503 || status < 0)
        return 1;
    fprintf(stderr, "natterload: fill send answered %d: %.*s\n", status, (int)(len > 200 ? 200 : len),
            body ? body : "");
    return -1;
}

static size_t history_build(runner *r, long job, char *buf, size_t cap)
{
    (void)r;
    char path[128];
    snprintf(path, sizeof path, "/v1/chats/%lld/messages?limit=%ld", s_chat, s_limit);
    return build_req(buf, cap, "GET", path, dev_of(job % 2, 0)->token, NULL);
}

static void closed_loop_report(const char *name, runner *r, double secs, const char *unit, const char *target)
{
    char st[256];
    print_statuses(r, st, sizeof st);
    printf(
        "%-16s %.0f %s (%ld ok in %.0f s over %d connections)  p50 %.2f ms  p99 %.2f ms  max %.2f ms  %s  "
        "statuses %s\n",
        name, (double)r->ok_in_window / secs, unit, r->ok_in_window, secs, r->nconns, lat_pct(&r->lat, 50),
        lat_pct(&r->lat, 99), lat_max(&r->lat), target, st);
}

static int cmd_sends(void)
{
    load_devices(opt_req("--devices"));
    load_mesh(opt_req("--chats"));
    int conns = (int)opt_l("--conns", 200);
    double secs = opt_d("--seconds", 10);
    if (secs <= 0 || secs > 120 || conns < 1 || conns > 1024 || conns > mesh_users)
        die("sends: --seconds 1..120, --conns 1..1024 and <= the mesh's users (%ld)", mesh_users);
    s_base = 50000000;
    runner r = {.njobs = LONG_MAX, .build = sends_build, .ok_status = 201};
    r.handle = NULL;
    printf("@begin sends\n");
    uint64_t t0 = now_ns();
    r.window_end = t0 + (uint64_t)(secs * 1e9);
    runner_run(&r, conns, secs + 10);
    closed_loop_report("durable_sends", &r, secs, "msg/s", "(target >= 10000 msg/s, 201s only)");
    printf("@end sends\t%ld\t201 (message sent)\n", r.by_status[201]);
    return 0;
}

static int cmd_fill(void)
{
    load_devices(opt_req("--devices"));
    s_chat = opt_l("--chat", 0);
    long count = opt_l("--count", 3000);
    if (s_chat <= 0 || count < 1 || count > 1000000)
        die("fill: --chat ID --count 1..1000000");
    s_base = 90000000;
    uint64_t t0 = now_ns();
    runner r = {.njobs = count, .build = fill_build, .handle = fill_handle};
    if (!runner_run(&r, (int)opt_l("--conns", 8), opt_d("--max-seconds", 300)))
        die("fill: incomplete (%ld of %ld)", r.done, count);
    printf("setup_history    %ld messages put into chat %lld in %.1f s\n", count, s_chat,
           (double)(now_ns() - t0) / 1e9);
    return 0;
}

static int cmd_history(void)
{
    load_devices(opt_req("--devices"));
    s_chat = opt_l("--chat", 0);
    s_limit = opt_l("--limit", 50);
    int conns = (int)opt_l("--conns", 32);
    double secs = opt_d("--seconds", 10);
    if (s_chat <= 0 || secs <= 0 || secs > 120 || conns < 1 || conns > 1024)
        die("history: bad --chat/--seconds/--conns");
    runner r = {.njobs = LONG_MAX, .build = history_build, .ok_status = 200};
    r.window_end = now_ns() + (uint64_t)(secs * 1e9);
    runner_run(&r, conns, secs + 10);
    char name[32];
    snprintf(name, sizeof name, "history_page_%ld", s_limit);
    closed_loop_report(name, &r, secs, "req/s", "(target p99 <= 5 ms at 8 connections)");
    printf("history_detail   %.1f KB per page\n", r.lat.n ? (double)r.bytes / (double)r.lat.n / 1024.0 : 0.0);
    return 0;
}

/* ====================================================================== */

int main(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    if (argc < 2)
        die("usage: natterload users|pairs|mesh|group|idle|renew|deliver|fanout|sends|fill|history --port P …");
    setvbuf(stdout, NULL, _IOLBF, 0);
    run_id = (unsigned)(getpid() * 2654435761u) ^ (unsigned)time(NULL);
    rng_state ^= (uint64_t)run_id * 0x9E3779B97F4A7C15ull;
    if (!rng_state)
        rng_state = 1;
    http_init((int)opt_l("--port", 0));
    const char *src = opt_s("--source", NULL);
    if (src) {
        memset(&source, 0, sizeof source);
        source.sin_family = AF_INET;
        if (inet_pton(AF_INET, src, &source.sin_addr) != 1 || (ntohl(source.sin_addr.s_addr) >> 24) != 127)
            die("--source must be an address in 127.0.0.0/8");
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "users") == 0)
        return cmd_users();
    if (strcmp(cmd, "pairs") == 0)
        return cmd_pairs();
    if (strcmp(cmd, "mesh") == 0)
        return cmd_mesh();
    if (strcmp(cmd, "group") == 0)
        return cmd_group();
    if (strcmp(cmd, "renew") == 0)
        return cmd_renew();
    if (strcmp(cmd, "idle") == 0)
        return cmd_idle();
    if (strcmp(cmd, "deliver") == 0)
        return cmd_deliver();
    if (strcmp(cmd, "fanout") == 0)
        return cmd_fanout();
    if (strcmp(cmd, "sends") == 0)
        return cmd_sends();
    if (strcmp(cmd, "fill") == 0)
        return cmd_fill();
    if (strcmp(cmd, "history") == 0)
        return cmd_history();
    die("unknown subcommand %s", cmd);
    return 2;
}
