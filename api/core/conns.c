/*
 * conns.c — per-connection deadlines against slow clients (see conns.h).
 *
 * The open connections are a doubly linked list under one mutex (an insert
 * on open, a removal on close, a walk per watchdog tick: a few tens of
 * microseconds for 20,000 connections). A deadline is an atomic that the
 * HTTP threads move without the mutex.
 */
#include "conns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "util.h"

/* How often the watchdog looks: a late connection lives at most this much
 * past its deadline. */
#define TICK_MS 250

enum phase { PH_HEAD, PH_BODY, PH_APP };

struct conn {
    int fd;                       /* MHD's socket: shut down, never closed here */
    _Atomic uint64_t deadline_us; /* now_us() clock; 0 = none */
    _Atomic int phase;            /* enum phase the deadline is for */
    uint64_t opened_us;
    struct conn *prev, *next; /* in `all`, under mu */
    char ip[INET6_ADDRSTRLEN];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the watchdog sleeps here; signalled by conns_stop */
    struct conn *all;  /* open connections, under mu */
    unsigned long long open;
    bool running, stop; /* under mu */
    pthread_t thread;
    uint64_t head_us, body_us, idle_us;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static atomic_ullong head_cut, body_cut;

static void set_deadline(struct conn *k, enum phase ph, uint64_t after_us)
{
    atomic_store(&k->phase, (int)ph);
    atomic_store(&k->deadline_us, after_us ? now_us() + after_us : 0);
}

static struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void client_ip(struct MHD_Connection *c, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, len, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)len);
}

void conns_notify(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn *k = xcalloc(1, sizeof *k);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        k->opened_us = now_us();
        client_ip(c, k->ip, sizeof k->ip);
        set_deadline(k, PH_HEAD, g.head_us);
        pthread_mutex_lock(&g.mu);
        k->next = g.all;
        if (g.all)
            g.all->prev = k;
        g.all = k;
        g.open++;
        pthread_mutex_unlock(&g.mu);
        *socket_context = k;
        return;
    }
    /* MHD_CONNECTION_NOTIFY_CLOSED: before MHD closes the descriptor */
    struct conn *k = *socket_context;
    if (!k)
        return;
    pthread_mutex_lock(&g.mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        g.all = k->next;
    if (k->next)
        k->next->prev = k->prev;
    g.open--;
    pthread_mutex_unlock(&g.mu);
    *socket_context = NULL;
    free(k);
}

void conns_head_done(struct MHD_Connection *c, int64_t body_len)
{
    struct conn *k = conn_of(c);
    if (!k)
        return;
    if (body_len == 0) {
        set_deadline(k, PH_APP, 0); /* dispatched at once */
        return;
    }
    uint64_t extra = body_len > 0 ? (uint64_t)body_len / CONNS_BODY_MIN_RATE * 1000000u : 0;
    set_deadline(k, PH_BODY, g.body_us + extra);
}

void conns_dispatched(struct MHD_Connection *c)
{
    struct conn *k = conn_of(c);
    if (k)
        set_deadline(k, PH_APP, 0);
}

void conns_request_done(struct MHD_Connection *c)
{
    struct conn *k = conn_of(c);
    if (k)
        set_deadline(k, PH_HEAD, g.idle_us + g.head_us);
}

void conns_stats(unsigned long long *hc, unsigned long long *bc, unsigned long long *open)
{
    *hc = atomic_load(&head_cut);
    *bc = atomic_load(&body_cut);
    pthread_mutex_lock(&g.mu);
    *open = g.open;
    pthread_mutex_unlock(&g.mu);
}

/* One pass: shut down every connection past its deadline (under mu, see
 * conns.h). Returns how many. */
static unsigned sweep(void)
{
    unsigned n = 0;
    uint64_t now = now_us();
    for (struct conn *k = g.all; k; k = k->next) {
        uint64_t d = atomic_load(&k->deadline_us);
        if (!d || d > now)
            continue;
        atomic_store(&k->deadline_us, 0); /* once */
        int ph = atomic_load(&k->phase);
        if (k->fd >= 0 && shutdown(k->fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
            continue;
        atomic_fetch_add(ph == PH_BODY ? &body_cut : &head_cut, 1);
        nlog(LOG_WARN,
             ph == PH_BODY ? "connection closed: request body too slow" : "connection closed: request head too slow",
             json_pack("{s:s,s:s,s:I}", "ip", k->ip, "phase", ph == PH_BODY ? "body" : "head", "open_ms",
                       (json_int_t)((now - k->opened_us) / 1000u)));
        n++;
    }
    return n;
}

static void *watchdog(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g.mu);
    while (!g.stop) {
        struct timespec ts;
        timespec_after(CLOCK_MONOTONIC, TICK_MS * 1000u, &ts);
        pthread_cond_timedwait(&g.cv, &g.mu, &ts);
        if (!g.stop)
            sweep();
    }
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

int conns_start(unsigned head_s, unsigned body_s, unsigned idle_s)
{
    g.head_us = (uint64_t)head_s * 1000000u;
    g.body_us = (uint64_t)body_s * 1000000u;
    g.idle_us = (uint64_t)idle_s * 1000000u;
    g.stop = false;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&g.cv);
    pthread_cond_init(&g.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&g.thread, NULL, watchdog, NULL) != 0) {
        nlog(LOG_ERROR, "cannot start the connection watchdog", NULL);
        return -1;
    }
    g.running = true;
    return 0;
}

void conns_stop(void)
{
    if (!g.running)
        return;
    pthread_mutex_lock(&g.mu);
    g.stop = true;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    g.running = false;
}
