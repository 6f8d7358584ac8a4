/*
 * metrics.h — the transport's Prometheus figures: requests and latency by
 * (route label, method, status), and requests in flight.
 */
#ifndef NATTER_METRICS_H
#define NATTER_METRICS_H

struct strbuf;

/* label must live as long as the process (a route pattern, a raw handler's
 * label, "unmatched"): slots are told apart by its address. */
void metrics_observe(const char *label, const char *method, int status, double secs);
/* Dispatched requests not yet completed. */
void metrics_inflight_add(int delta);
int metrics_inflight(void);
/* Appends the figures in Prometheus text format. */
void http_metrics_render(struct strbuf *sb);

#endif
