/*
 * metrics.c — request count and latency histogram per (route, method,
 * status), in a bounded table (unknown methods x statuses cannot grow it).
 */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conns.h"
#include "strbuf.h"

#define METRIC_SLOTS 1024
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct metric {
    const char *label;
    char method[8];
    int status;
    uint64_t count;
    uint64_t le[NBUCKETS]; /* cumulative counts are computed when rendering */
    double sum;
};

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static struct metric metrics[METRIC_SLOTS];
static int nmetrics;
static atomic_int inflight;

void metrics_inflight_add(int delta)
{
    atomic_fetch_add(&inflight, delta);
}

int metrics_inflight(void)
{
    return atomic_load(&inflight);
}

void metrics_observe(const char *label, const char *method, int status, double secs)
{
    char m[8];
    snprintf(m, sizeof m, "%s", method);
    pthread_mutex_lock(&metrics_mu);
    struct metric *e = NULL;
    for (int i = 0; i < nmetrics; i++)
        if (metrics[i].label == label && metrics[i].status == status && strcmp(metrics[i].method, m) == 0) {
            e = &metrics[i];
            break;
        }
    if (!e && nmetrics < METRIC_SLOTS) {
        e = &metrics[nmetrics++];
        e->label = label;
        e->status = status;
        memcpy(e->method, m, sizeof m);
    }
    if (e) {
        e->count++;
        e->sum += secs;
        for (size_t b = 0; b < NBUCKETS; b++)
            if (secs <= buckets[b]) {
                e->le[b]++;
                break;
            }
    }
    pthread_mutex_unlock(&metrics_mu);
}

void http_metrics_render(struct strbuf *sb)
{
    strbuf_add(sb,
               "# HELP natter_http_requests_total HTTP requests by route, method and status.\n"
               "# TYPE natter_http_requests_total counter\n");
    pthread_mutex_lock(&metrics_mu);
    for (int i = 0; i < nmetrics; i++) {
        const struct metric *e = &metrics[i];
        strbuf_printf(sb, "natter_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n", e->method,
                      e->label, e->status, (unsigned long long)e->count);
    }
    strbuf_add(sb,
               "# HELP natter_http_request_duration_seconds HTTP request latency by route, method and status.\n"
               "# TYPE natter_http_request_duration_seconds histogram\n");
    for (int i = 0; i < nmetrics; i++) {
        const struct metric *e = &metrics[i];
        const char *route = e->label;
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += e->le[b];
            strbuf_printf(
                sb,
                "natter_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",status=\"%d\",le=\"%g\"} %llu\n",
                e->method, route, e->status, buckets[b], (unsigned long long)cum);
        }
        strbuf_printf(
            sb,
            "natter_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",status=\"%d\",le=\"+Inf\"} %llu\n"
            "natter_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\",status=\"%d\"} %.6f\n"
            "natter_http_request_duration_seconds_count{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
            e->method, route, e->status, (unsigned long long)e->count, e->method, route, e->status, e->sum, e->method,
            route, e->status, (unsigned long long)e->count);
    }
    pthread_mutex_unlock(&metrics_mu);
    strbuf_printf(sb,
                  "# HELP natter_http_inflight_requests Requests being processed.\n"
                  "# TYPE natter_http_inflight_requests gauge\nnatter_http_inflight_requests %d\n",
                  metrics_inflight());
    unsigned long long head_cut, body_cut, open;
    conns_stats(&head_cut, &body_cut, &open);
    strbuf_printf(
        sb,
        "# HELP natter_http_connections Open HTTP connections.\n"
        "# TYPE natter_http_connections gauge\nnatter_http_connections %llu\n"
        "# HELP natter_http_slow_closed_total Connections closed because the request head or body did not"
        " arrive in time (NATTER_HEAD_TIMEOUT, NATTER_BODY_TIMEOUT).\n"
        "# TYPE natter_http_slow_closed_total counter\n"
        "natter_http_slow_closed_total{phase=\"head\"} %llu\nnatter_http_slow_closed_total{phase=\"body\"} %llu\n",
        open, head_cut, body_cut);
}
