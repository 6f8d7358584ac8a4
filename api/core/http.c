/*
 * http.c — libmicrohttpd glue: the multi-call protocol, routing, body limits,
 * CORS, authentication, reply helpers, access logs and HTTP metrics.
 *
 * Life of a request (see http.h for the handler-facing API):
 *   1st call    create struct req, route it, check Content-Length (413 early);
 *               return MHD_YES without replying (replying here forces
 *               Connection: close, which costs ~5x throughput).
 *   body calls  append to r->body up to the route's bound (413 past it).
 *   last call   dispatch(): preflight / 404 / 405 / 415 / 400 / 401, then the
 *               handler, or suspend and hand it to the offload pool.
 *   resumed     queue the reply the offload thread parked.
 *   completed   access log, metrics, release the DB connection and every
 *               deferred resource, free the request.
 */
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "blobstore.h"
#include "bus.h"
#include "db.h"
#include "hub.h"
#include "jsonv.h"
#include "log.h"
#include "offload.h"
#include "util.h"

/* dispatched requests not yet completed: shutdown waits for these (a client
 * stalling in the middle of its body does not hold shutdown) */
static atomic_int inflight;
/* set by http_stop: new requests are refused with 503 + Connection: close */
static atomic_bool stopping;

/* ======================================================================
 * Metrics: request count and latency histogram per (route, method, status)
 * ====================================================================== */

#define METRIC_SLOTS 1024
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct metric {
    int route_idx;          /* -1 = unmatched */
    char method[8];
    int status;
    uint64_t count;
    uint64_t le[NBUCKETS];  /* cumulative counts are computed when rendering */
    double sum;
};

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static struct metric metrics[METRIC_SLOTS];
static int nmetrics;

static void metrics_observe(int route_idx, const char *method, int status, double secs)
{
    char m[8];
    snprintf(m, sizeof m, "%s", method);
    pthread_mutex_lock(&metrics_mu);
    struct metric *e = NULL;
    for (int i = 0; i < nmetrics; i++)
        if (metrics[i].route_idx == route_idx && metrics[i].status == status && strcmp(metrics[i].method, m) == 0) {
            e = &metrics[i];
            break;
        }
    if (!e && nmetrics < METRIC_SLOTS) {
        e = &metrics[nmetrics++];
        e->route_idx = route_idx;
        e->status = status;
        memcpy(e->method, m, sizeof m);
    }
    if (e) { /* the table is bounded: unknown methods x statuses cannot grow it forever */
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

static const char *route_label(int idx)
{
    if (idx >= 0)
        return routes[idx].pattern;
    return idx == -2 ? "/{bucket}/{key}" : "unmatched";
}

static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (*len + (size_t)n + 1 > *cap) {
        *cap = (*len + (size_t)n + 1) * 2;
        *buf = xrealloc(*buf, *cap);
    }
    va_start(ap, fmt);
    vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

void http_metrics_render(struct app *a, char **buf, size_t *len, size_t *cap)
{
    (void)a;
    buf_printf(buf, len, cap,
               "# HELP natter_http_requests_total HTTP requests by route, method and status.\n"
               "# TYPE natter_http_requests_total counter\n");
    pthread_mutex_lock(&metrics_mu);
    for (int i = 0; i < nmetrics; i++) {
        const struct metric *e = &metrics[i];
        const char *route = route_label(e->route_idx);
        buf_printf(buf, len, cap, "natter_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
                   e->method, route, e->status, (unsigned long long)e->count);
    }
    buf_printf(buf, len, cap,
               "# HELP natter_http_request_duration_seconds HTTP request latency by route, method and status.\n"
               "# TYPE natter_http_request_duration_seconds histogram\n");
    for (int i = 0; i < nmetrics; i++) {
        const struct metric *e = &metrics[i];
        const char *route = route_label(e->route_idx);
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += e->le[b];
            buf_printf(buf, len, cap,
                       "natter_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",status=\"%d\",le=\"%g\"} %llu\n",
                       e->method, route, e->status, buckets[b], (unsigned long long)cum);
        }
        buf_printf(buf, len, cap,
                   "natter_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",status=\"%d\",le=\"+Inf\"} %llu\n"
                   "natter_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\",status=\"%d\"} %.6f\n"
                   "natter_http_request_duration_seconds_count{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
                   e->method, route, e->status, (unsigned long long)e->count, e->method, route, e->status, e->sum,
                   e->method, route, e->status, (unsigned long long)e->count);
    }
    pthread_mutex_unlock(&metrics_mu);
    buf_printf(buf, len, cap,
               "# HELP natter_http_inflight_requests Requests being processed.\n"
               "# TYPE natter_http_inflight_requests gauge\nnatter_http_inflight_requests %d\n",
               atomic_load(&inflight));
}

/* ======================================================================
 * Request-lifetime resources
 * ====================================================================== */

void req_defer(struct req *r, void (*fn)(void *), void *ptr)
{
    if (!ptr)
        return;
    if (r->ndefers == r->cap_defers) {
        r->cap_defers = r->cap_defers ? r->cap_defers * 2 : 8;
        r->defers = xrealloc(r->defers, r->cap_defers * sizeof *r->defers);
    }
    r->defers[r->ndefers++] = (struct deferred){fn, ptr};
}

char *req_own(struct req *r, char *s)
{
    req_defer(r, free, s);
    return s;
}

static void json_decref_v(void *p)
{
    json_decref(p);
}

json_t *req_own_json(struct req *r, json_t *j)
{
    req_defer(r, json_decref_v, j);
    return j;
}

static void pqclear_v(void *p)
{
    PQclear(p);
}

/* ======================================================================
 * Replies
 * ====================================================================== */

void req_add_header(struct req *r, const char *name, const char *value)
{
    if (r->nhdr >= 8)
        return;
    r->hdr_name[r->nhdr] = xstrdup(name);
    r->hdr_val[r->nhdr] = xstrdup(value);
    r->nhdr++;
}

void req_send_response(struct req *r, int status, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After, Location");
    }
    for (int i = 0; i < r->nhdr; i++)
        MHD_add_response_header(resp, r->hdr_name[i], r->hdr_val[i]);
    r->status = status;
    r->replied = true;
    if (r->offloaded) {
        r->parked = resp; /* queued by the access handler once the connection resumes */
        return;
    }
    if (MHD_queue_response(r->conn, (unsigned)status, resp) != MHD_YES)
        nlog(LOG_ERROR, "MHD refused the reply", json_pack("{s:s,s:i}", "request_id", r->request_id, "status", status));
    MHD_destroy_response(resp);
}

int reply_text(struct req *r, int status, const char *content_type, const char *body, size_t len, bool copy)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, (void *)body, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    req_send_response(r, status, resp);
    return 0;
}

static int reply_json_ct(struct req *r, int status, json_t *body_new, const char *ct)
{
    char *text = json_dumps(body_new, JSON_COMPACT);
    json_decref(body_new);
    if (!text) {
        static const char fallback[] = "{\"status\":500,\"code\":\"internal_error\",\"title\":\"Internal error\"}";
        return reply_text(r, 500, "application/problem+json", fallback, sizeof fallback - 1, false);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", ct);
    req_send_response(r, status, resp);
    return 0;
}

int reply_json(struct req *r, int status, json_t *body_new)
{
    return reply_json_ct(r, status, body_new, "application/json");
}

int reply_empty(struct req *r, int status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    req_send_response(r, status, resp);
    return 0;
}

static const char *title_of(int status)
{
    switch (status) {
    case 400: return "Bad request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not found";
    case 405: return "Method not allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Payload too large";
    case 415: return "Unsupported media type";
    case 422: return "Unprocessable content";
    case 429: return "Too many requests";
    case 503: return "Service unavailable";
    default: return status >= 500 ? "Internal error" : "Error";
    }
}

/* Percent-encodes a decoded path back into a URI reference for `instance`
 * (RFC 9457 wants a URI; MHD hands us the path already unescaped). */
static void uri_path(const char *path, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)path; *p && o + 4 < len; p++) {
        unsigned char c = *p;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
                    c == '-' || c == '.' || c == '_' || c == '~';
        if (keep) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

static int vproblem(struct req *r, int status, const char *code, json_t *extra_new, const char *fmt, va_list ap)
{
    char detail[512];
    vsnprintf(detail, sizeof detail, fmt, ap);
    if (r->replied) { /* a bug: never answer twice */
        json_decref(extra_new);
        nlog(LOG_ERROR, "second reply suppressed", json_pack("{s:s,s:s}", "request_id", r->request_id, "code", code));
        return -1;
    }
    char type[96], instance[512];
    snprintf(type, sizeof type, "urn:natter:problem:%s", code);
    uri_path(r->path ? r->path : "/", instance, sizeof instance);
    json_t *p = json_pack("{s:s,s:s,s:i,s:s,s:s,s:s,s:s}", "type", type, "title", title_of(status), "status", status,
                          "detail", detail, "instance", instance, "code", code, "request_id",
                          r->request_id);
    if (!p) /* detail with invalid UTF-8 cannot happen with our formats; be safe */
        p = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", type, "title", title_of(status), "status", status, "code",
                      code, "request_id", r->request_id);
    if (extra_new)
        json_object_update(p, extra_new);
    json_decref(extra_new);
    r->problem_code = code;
    reply_json_ct(r, status, p, "application/problem+json");
    return -1;
}

int reply_problem(struct req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vproblem(r, status, code, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int reply_problem_ext(struct req *r, int status, const char *code, json_t *extra_new, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vproblem(r, status, code, extra_new, fmt, ap);
    va_end(ap);
    return rc;
}

int reply_invalid(struct req *r, const struct jsonv_error *e)
{
    const char *field = e->field ? e->field : "";
    return reply_problem_ext(r, 422, "validation_failed", json_pack("{s:s}", "field", field), "%s %s",
                             *field ? field : "body", e->reason);
}

int reply_field(struct req *r, int status, const char *code, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vproblem(r, status, code, json_pack("{s:s}", "field", field), fmt, ap);
    va_end(ap);
    return rc;
}

/* ======================================================================
 * Request data and database access
 * ====================================================================== */

const char *req_param(struct req *r, int i)
{
    return i < r->nparams ? r->params[i] : NULL;
}

const char *req_query(struct req *r, const char *k)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, k);
}

const char *req_header(struct req *r, const char *k)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, k);
}

PGconn *req_db(struct req *r)
{
    if (r->db)
        return r->db;
    r->db = db_acquire_slot(r->app->db, r->app->cfg->db_pool_timeout_ms, &r->db_slot);
    if (!r->db) {
        req_add_header(r, "Retry-After", "1");
        reply_problem(r, 503, "service_unavailable", "the database is unavailable; retry shortly");
    }
    return r->db;
}

PGresult *req_sql(struct req *r, const char *allow, const char *sql, int n, const char *const *vals)
{
    PGconn *c = req_db(r);
    if (!c)
        return NULL;
    PGresult *res = db_query(r->app->db, r->db_slot, c, sql, n, vals);
    req_defer(r, pqclear_v, res);
    if (db_res_ok(res))
        return res;
    const char *state = db_sqlstate(res);
    if (allow && *state && strstr(allow, state))
        return res;
    if (PQstatus(c) != CONNECTION_OK || !res || strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0) {
        nlog(LOG_ERROR, "database unavailable", json_pack("{s:s,s:s}", "request_id", r->request_id, "error",
                                                          PQerrorMessage(c)));
        req_add_header(r, "Retry-After", "1");
        reply_problem(r, 503, "service_unavailable", "the database is unavailable; retry shortly");
        return NULL;
    }
    if (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0) {
        /* lock order makes these unexpected; when one happens the client retries
         * (every write here is idempotent or safe to repeat) */
        nlog(LOG_WARN, "transaction conflict", json_pack("{s:s,s:s}", "request_id", r->request_id, "sqlstate", state));
        req_add_header(r, "Retry-After", "1");
        reply_problem(r, 503, "service_unavailable", "a concurrent update conflicted; retry");
        return NULL;
    }
    nlog(LOG_ERROR, "query failed", json_pack("{s:s,s:s,s:s}", "request_id", r->request_id, "sqlstate", state,
                                              "error", PQresultErrorMessage(res)));
    reply_problem(r, 500, "internal_error", "unexpected database error");
    return NULL;
}

int req_begin(struct req *r)
{
    r->nwakes = 0;
    return req_sql(r, NULL, "BEGIN", 0, NULL) ? 0 : -1;
}

int req_commit(struct req *r)
{
    if (!req_sql(r, NULL, "COMMIT", 0, NULL))
        return -1;
    if (r->nwakes) {
        bus_after_commit(r->app, r->wakes, r->nwakes);
        r->nwakes = 0;
    }
    return 0;
}

void req_note_wake(struct req *r, int64_t user_id, int64_t seq)
{
    if (r->nwakes == r->cap_wakes) {
        r->cap_wakes = r->cap_wakes ? r->cap_wakes * 2 : 16;
        r->wakes = xrealloc(r->wakes, r->cap_wakes * 2 * sizeof *r->wakes);
    }
    r->wakes[2 * r->nwakes] = user_id;
    r->wakes[2 * r->nwakes + 1] = seq;
    r->nwakes++;
}

void req_release_db(struct req *r)
{
    if (r->db) {
        db_release(r->app->db, r->db);
        r->db = NULL;
    }
}

void req_suspend(struct req *r)
{
    req_release_db(r); /* a waiting poll holds no database connection ... */
    /* ... and no query results: thousands of polls wait at once */
    size_t k = 0;
    for (size_t i = 0; i < r->ndefers; i++) {
        if (r->defers[i].fn == pqclear_v)
            PQclear(r->defers[i].ptr);
        else
            r->defers[k++] = r->defers[i];
    }
    r->ndefers = k;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
}

void req_resume(struct req *r)
{
    MHD_resume_connection(r->conn);
}

/* ======================================================================
 * Routing
 * ====================================================================== */

/* Matches path against pattern; on success stores owned copies of the {x}
 * segments in r->params. */
static bool match(struct req *r, const char *pattern, const char *path)
{
    const char *p = pattern, *u = path;
    const char *found[HTTP_MAX_PARAMS];
    size_t flen[HTTP_MAX_PARAMS];
    int n = 0;
    while (*p && *u) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            const char *ue = strchr(u, '/');
            size_t ul = ue ? (size_t)(ue - u) : strlen(u);
            if (!pe || ul == 0 || n == HTTP_MAX_PARAMS)
                return false;
            found[n] = u;
            flen[n++] = ul;
            p = pe + 1;
            u += ul;
            continue;
        }
        if (*p != *u)
            return false;
        p++;
        u++;
    }
    if (*p || *u)
        return false;
    for (int i = 0; i < n; i++)
        r->params[i] = req_own(r, xstrndup(found[i], flen[i]));
    r->nparams = n;
    return true;
}

/* Finds the route for r; when only the method differs, fills allow. */
static void route_request(struct req *r, char *allow, size_t allow_len)
{
    allow[0] = '\0';
    for (size_t i = 0; i < routes_count; i++) {
        struct req probe = {0};
        if (!match(&probe, routes[i].pattern, r->path))
            continue;
        for (size_t k = 0; k < probe.ndefers; k++)
            probe.defers[k].fn(probe.defers[k].ptr);
        free(probe.defers);
        if (strcmp(routes[i].method, r->method) == 0) {
            match(r, routes[i].pattern, r->path);
            r->route = &routes[i];
            r->route_idx = (int)i;
            return;
        }
        if (!strstr(allow, routes[i].method)) {
            size_t l = strlen(allow);
            snprintf(allow + l, allow_len - l, "%s%s", l ? ", " : "", routes[i].method);
        }
    }
}

/* ======================================================================
 * CORS
 * ====================================================================== */

static const char *cors_allowed(struct app *a, const char *origin)
{
    if (!origin || !*origin)
        return NULL;
    if (a->cors_any)
        return origin;
    for (char **o = a->cors; o && *o; o++)
        if (strcmp(*o, origin) == 0)
            return origin;
    return NULL;
}

static int preflight(struct req *r)
{
    if (!r->cors_origin)
        return reply_problem(r, 403, "cors_origin_denied", "origin is not allowed");
    req_add_header(r, "Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
    req_add_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id");
    req_add_header(r, "Access-Control-Max-Age", "600");
    return reply_empty(r, 204);
}

/* ======================================================================
 * Dispatch
 * ====================================================================== */

static void run_handler(struct req *r)
{
    r->route->handler(r);
    if (!r->replied && !r->suspended) {
        nlog(LOG_ERROR, "handler returned without a reply", json_pack("{s:s,s:s}", "request_id", r->request_id,
                                                                       "route", r->route->pattern));
        reply_problem(r, 500, "internal_error", "no reply was produced");
    }
    /* the reply is decided: give the connection back now, not when MHD
     * reports the request complete on a later turn of its loop */
    req_release_db(r);
}

/* Offload pool entry point: run the handler, then wake the connection. */
static void offload_run(struct req *r)
{
    run_handler(r);
    /* the DB connection goes back to the pool now, not when MHD gets round to it */
    if (r->db) {
        db_release(r->app->db, r->db);
        r->db = NULL;
    }
    MHD_resume_connection(r->conn);
}

static bool is_json_content_type(const char *ct)
{
    if (!ct)
        return false;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static void dispatch(struct req *r)
{
    char allow[128];
    if (strcmp(r->method, "OPTIONS") == 0 && req_header(r, "Origin") &&
        req_header(r, "Access-Control-Request-Method")) {
        preflight(r);
        return;
    }
    if (!r->route) {
        route_request(r, allow, sizeof allow);
        if (!r->route) {
            if (allow[0]) {
                req_add_header(r, "Allow", allow);
                reply_problem(r, 405, "method_not_allowed", "%s is not allowed here", r->method);
            } else {
                reply_problem(r, 404, "not_found", "no such resource");
            }
            return;
        }
    }
    if (r->route->flags & R_JSON) {
        if (!is_json_content_type(req_header(r, "Content-Type"))) {
            reply_problem(r, 415, "unsupported_media_type", "send the body as application/json");
            return;
        }
        json_error_t jerr;
        r->json = r->body_len ? json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
        if (!r->json) {
            reply_problem(r, 400, "malformed_json", "%s", r->body_len ? jerr.text : "a JSON body is required");
            return;
        }
        if (!json_is_object(r->json)) {
            reply_problem(r, 400, "malformed_json", "the body must be a JSON object");
            return;
        }
    }
    if ((r->route->flags & R_AUTH) && auth_authenticate(r) < 0)
        return;
    if (r->route->flags & R_SLOW) {
        if (!offload_reserve(r->app->offload)) {
            req_add_header(r, "Retry-After", "1");
            reply_problem(r, 503, "service_unavailable", "the server is busy; retry shortly");
            return;
        }
        /* hand back the DB connection: the pool thread takes its own */
        if (r->db) {
            db_release(r->app->db, r->db);
            r->db = NULL;
        }
        r->offloaded = true;
        MHD_suspend_connection(r->conn);
        offload_submit(r->app->offload, r);
        return;
    }
    run_handler(r);
}

/* ======================================================================
 * MHD callbacks
 * ====================================================================== */

static void set_request_id(struct req *r)
{
    const char *in = req_header(r, "X-Request-Id");
    if (in) {
        size_t n = strlen(in);
        bool ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++) {
            char c = in[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '_' || c == '.';
        }
        if (ok) {
            memcpy(r->request_id, in, n + 1);
            return;
        }
    }
    random_hex(r->request_id, 8);
}

static void set_client_ip(struct req *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(r->client_ip, sizeof r->client_ip, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, r->client_ip,
                  sizeof r->client_ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, r->client_ip,
                  sizeof r->client_ip);
}

static struct req *req_new(struct app *a, struct MHD_Connection *conn, const char *url, const char *method)
{
    struct req *r = xcalloc(1, sizeof *r);
    r->app = a;
    r->conn = conn;
    r->method = method;
    r->route_idx = -1;
    r->start_us = now_us();
    size_t ul = strlen(url);
    r->path = xstrndup(url, ul > 2048 ? 2048 : ul);
    set_request_id(r);
    set_client_ip(r);
    r->cors_origin = cors_allowed(a, req_header(r, "Origin"));
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    struct app *a = cls;
    struct req *r = *con_cls;
    if (!r) {
        char allow[128];
        r = req_new(a, conn, url, method);
        *con_cls = r;
        if (atomic_load(&stopping)) {
            /* replying in the first call closes the connection: what we want */
            req_add_header(r, "Retry-After", "1");
            req_add_header(r, "Connection", "close");
            reply_problem(r, 503, "service_unavailable", "the server is shutting down");
            return MHD_YES;
        }
        bool preflight_req = strcmp(method, "OPTIONS") == 0 && req_header(r, "Origin");
        if (!preflight_req && blob_claims(a, r->path)) {
            blob_begin(r); /* verifies the signature now; a PUT then streams to disk */
            return MHD_YES;
        }
        route_request(r, allow, sizeof allow);
        r->body_limit = r->route && r->route->max_body ? r->route->max_body : HTTP_DEFAULT_MAX_BODY;
        const char *cl = req_header(r, "Content-Length");
        int64_t n;
        if (cl && parse_i64(cl, &n) && n > (int64_t)r->body_limit) {
            /* refuse before reading a byte; MHD closes the connection after this reply */
            reply_problem(r, 413, "payload_too_large", "the body exceeds %zu bytes", r->body_limit);
        }
        return MHD_YES;
    }
    if (r->parked) { /* back from the offload pool */
        MHD_queue_response(conn, (unsigned)r->status, r->parked);
        MHD_destroy_response(r->parked);
        r->parked = NULL;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->replied)
            return MHD_YES; /* discarding the rest of a refused body */
        if (r->blob) {
            blob_write(r, upload_data, n); /* a failure is answered at the end */
            return MHD_YES;
        }
        if (r->too_large || r->body_len + n > r->body_limit) {
            /* MHD cannot queue a reply in the middle of a body: discard the
             * rest and answer 413 at the end, but close a connection that
             * keeps streaming far past the limit */
            r->too_large = true;
            r->discarded += n;
            return r->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            r->body_cap = r->body_len + n + 1 < 1024 ? 1024 : (r->body_len + n + 1) * 2;
            if (r->body_cap > r->body_limit + 1)
                r->body_cap = r->body_limit + 1;
            r->body = xrealloc(r->body, r->body_cap);
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    if (r->suspended) { /* a long-poll woke up (or timed out) */
        r->suspended = false;
        if (r->resume_fn && !r->replied) {
            r->resume_fn(r);
            if (!r->replied && !r->suspended)
                reply_problem(r, 500, "internal_error", "no reply was produced");
        }
        req_release_db(r);
        return MHD_YES;
    }
    if (r->replied || r->dispatched)
        return MHD_YES;
    r->dispatched = true;
    atomic_fetch_add(&inflight, 1);
    if (r->blob)
        blob_finish(r);
    else if (r->too_large)
        reply_problem(r, 413, "payload_too_large", "the body exceeds %zu bytes", r->body_limit);
    else
        dispatch(r);
    if (!r->offloaded) /* an offloaded request's connection belongs to the pool thread */
        req_release_db(r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    struct req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    double secs = (double)(now_us() - r->start_us) / 1e6;
    int status = r->status ? r->status : 499; /* client went away before any reply */
    metrics_observe(r->route_idx, r->method, status, secs);
    json_t *f = json_pack("{s:s,s:s,s:s,s:s,s:i,s:f,s:s}", "request_id", r->request_id, "method", r->method, "path",
                          r->path, "route", route_label(r->route_idx), "status", status,
                          "duration_ms", secs * 1000.0, "ip", r->client_ip);
    if (r->user_id)
        json_object_set_new(f, "user_id", json_integer(r->user_id));
    if (r->device_id)
        json_object_set_new(f, "device_id", json_integer(r->device_id));
    if (r->problem_code)
        json_object_set_new(f, "code", json_string(r->problem_code));
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        json_object_set_new(f, "terminated", json_integer((json_int_t)toe));
    nlog(status >= 500 ? LOG_ERROR : LOG_INFO, "request", f);

    if (r->parked)
        MHD_destroy_response(r->parked);
    free(r->wakes);
    if (r->db)
        db_release(r->app->db, r->db);
    for (size_t i = r->ndefers; i > 0; i--)
        r->defers[i - 1].fn(r->defers[i - 1].ptr);
    free(r->defers);
    for (int i = 0; i < r->nhdr; i++) {
        free(r->hdr_name[i]);
        free(r->hdr_val[i]);
    }
    json_decref(r->json);
    free(r->body);
    free(r->path);
    if (r->dispatched)
        atomic_fetch_sub(&inflight, 1);
    free(r);
}

/* ======================================================================
 * Start / stop
 * ====================================================================== */

static unsigned connection_limit(const struct config *cfg)
{
    if (cfg->max_connections > 0)
        return (unsigned)cfg->max_connections;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 10000;
    /* keep a reserve for database, Redis, log and listening descriptors */
    long lim = (long)rl.rlim_cur - 100 - cfg->db_pool_size - 64;
    return lim < 64 ? 64 : (unsigned)lim;
}

static void parse_cors(struct app *a)
{
    const char *s = a->cfg->cors_origins, *p, *it;
    size_t n = 0, l, k = 0;
    if (strcmp(s, "*") == 0) {
        a->cors_any = true;
        return;
    }
    for (p = s; csv_next(&p, &it, &l);)
        n++;
    a->cors = xcalloc(n + 1, sizeof *a->cors);
    for (p = s; csv_next(&p, &it, &l);)
        if (l)
            a->cors[k++] = xstrndup(it, l);
}

int http_start(struct app *a)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, a->cfg->listen_addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)a->cfg->port);
    } else if (inet_pton(AF_INET6, a->cfg->listen_addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)a->cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        nlog(LOG_ERROR, "NATTER_LISTEN_ADDR is not an IP address", json_pack("{s:s}", "value", a->cfg->listen_addr));
        return -1;
    }
    parse_cors(a);
    a->offload = offload_new(a->cfg->hash_threads, a->cfg->hash_queue, offload_run);
    unsigned limit = connection_limit(a->cfg);
    a->daemon = MHD_start_daemon(
        flags, (uint16_t)a->cfg->port, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)a->cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)a->cfg->conn_timeout, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_END);
    if (!a->daemon) {
        nlog(LOG_ERROR, "cannot start HTTP server (address in use?)",
             json_pack("{s:s,s:i}", "addr", a->cfg->listen_addr, "port", a->cfg->port));
        offload_stop(a->offload);
        offload_free(a->offload);
        a->offload = NULL;
        return -1;
    }
    nlog(LOG_INFO, "listening", json_pack("{s:s,s:i,s:i,s:i}", "addr", a->cfg->listen_addr, "port", a->cfg->port,
                                          "threads", a->cfg->http_threads, "connection_limit", (int)limit));
    return 0;
}

void http_stop(struct app *a)
{
    if (!a->daemon)
        return;
    /* Not MHD_quiesce_daemon(): in 0.9.75 with a thread pool it races the
     * workers removing the listen socket from their epoll sets and can abort
     * ("Failed to remove listen FD from epoll set"). New requests are
     * answered 503 instead, which a load balancer retries elsewhere. */
    atomic_store(&stopping, true);
    /* long-polls answer now; MHD_stop_daemon aborts with a suspended connection */
    hub_stop();
    /* every suspended request is resumed by the pool as it finishes its job */
    offload_stop(a->offload);
    uint64_t deadline = now_us() + 10u * 1000000u;
    while (atomic_load(&inflight) > 0 && now_us() < deadline)
        usleep(10000);
    int left = atomic_load(&inflight);
    MHD_stop_daemon(a->daemon);
    a->daemon = NULL;
    offload_free(a->offload);
    a->offload = NULL;
    for (char **o = a->cors; o && *o; o++)
        free(*o);
    free(a->cors);
    a->cors = NULL;
    nlog(LOG_INFO, "http stopped", json_pack("{s:i}", "abandoned_requests", left));
}
