/*
 * http.c — libmicrohttpd glue: the multi-call protocol, routing, body limits,
 * the raw handler, dispatch to the authenticate hook and the handlers, access
 * logs, start and stop. Replies are in reply.c, request data in request.c,
 * the database session in tx.c, CORS in cors.c, figures in metrics.c.
 *
 * Life of a request (see http.h for the handler-facing API):
 *   request line  on_uri creates struct req (so that a request MHD refuses
 *               itself still gets its access-log line).
 *   1st call    the head is in: request id, route, check Content-Length (413
 *               early), path length (414); return MHD_YES without replying
 *               (replying here forces Connection: close, which costs ~5x
 *               throughput). conns.c's deadline moves from head to body.
 *   body calls  append to r->body up to the route's bound (413 past it).
 *   last call   no deadline from here (conns_dispatched); dispatch():
 *               preflight / 404 / 405 / 415 / 400 / 401, then the
 *               handler, or suspend and hand it to the offload pool.
 *   resumed     queue the reply the offload thread parked.
 *   completed   access log, metrics, release the DB connection and every
 *               deferred resource, free the request.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conns.h"
#include "cors.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "offload.h"
#include "tx.h"
#include "util.h"

/* set by http_stop: new requests are refused with 503 + Connection: close */
static atomic_bool stopping;

static const char unmatched[] = "unmatched";

/* Routes r by its path and method; when only the method differs, fills allow. */
static void route_request(struct req *r, char *allow, size_t allow_len)
{
    struct route_params p;
    const struct route *rt = route_find(r->srv->routes, r->srv->nroutes, r->method, r->path, &p, allow, allow_len);
    if (!rt)
        return;
    r->route = rt;
    r->label = rt->pattern;
    for (int i = 0; i < p.n; i++)
        r->params[i] = req_own(r, xstrndup(p.at[i], p.len[i]));
    r->nparams = p.n;
}

/* ======================================================================
 * Dispatch
 * ====================================================================== */

static void run_handler(struct req *r)
{
    bool was_offloaded = r->offloaded;
    r->route->handler(r);
    /* a handler that handed its request off (req_hand_off) must not read it:
     * the other thread may be replying right now */
    if (r->offloaded && !was_offloaded)
        return;
    if (!r->replied && !r->suspended) {
        nlog(LOG_ERROR, "handler returned without a reply",
             json_pack("{s:s,s:s}", "request_id", r->request_id, "route", r->route->pattern));
        reply_problem(r, 500, "internal_error", "no reply was produced");
    }
    /* the reply is decided: give the connection back now, not when MHD
     * reports the request complete on a later turn of its loop */
    req_release_db(r);
}

/* Offload pool entry point: run the handler, then wake the connection. */
static void offload_run(struct req *r)
{
    run_handler(r); /* which gave the DB connection back to the pool already */
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
        cors_preflight(r);
        return;
    }
    if (!r->route) {
        route_request(r, allow, sizeof allow);
        if (!r->route) {
            if (!allow[0] && r->srv->fallback && r->srv->fallback(r))
                return; /* a file of the web client */
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
    if ((r->route->flags & R_AUTH) && r->srv->authenticate(r) < 0)
        return;
    if (r->route->flags & (R_OFFLOAD | R_SLOW)) {
        /* slow queries have a pool of their own, so that they never hold an
         * HTTP thread (and every connection it serves) nor delay a login */
        struct offload *pool = (r->route->flags & R_SLOW) ? r->srv->slow : r->srv->offload;
        enum offload_lane lane = (r->route->flags & R_BULK) ? OFFLOAD_BULK : OFFLOAD_MAIN;
        /* the application's cheap refusals (rate limits) never take a slot */
        if (r->srv->admit && r->srv->admit(r) < 0)
            return;
        if (!pool || !offload_reserve(pool, lane)) {
            req_add_header(r, "Retry-After", "1");
            reply_problem(r, 503, "service_unavailable", "the server is busy; retry shortly");
            return;
        }
        /* hand back the DB connection: the pool thread takes its own */
        req_release_db(r);
        r->offloaded = true;
        MHD_suspend_connection(r->conn);
        offload_submit(pool, lane, r);
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
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 c == '.';
        }
        if (ok) {
            memcpy(r->request_id, in, n + 1);
            return;
        }
    }
    id_hex16(r->request_id);
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

/* MHD_OPTION_URI_LOG_CALLBACK: the request line has been read (the headers
 * not yet). The request context is made here rather than in the access
 * handler so that a request libmicrohttpd refuses itself after this point
 * (431, 400, 413, …: the handler is never called) still reaches on_completed
 * and gets its access-log line. uri is the raw target, query included. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct server *s = cls;
    struct req *r = xcalloc(1, sizeof *r);
    r->srv = s;
    r->app = s->app;
    r->conn = conn;
    r->method = "";
    r->label = unmatched;
    r->start_us = now_us();
    size_t ul = strcspn(uri, "?");
    r->path = xstrndup(uri, ul > HTTP_MAX_PATH ? HTTP_MAX_PATH : ul); /* until the handler has the decoded one */
    r->target_nul = strstr(uri, "%00") != NULL;
    id_hex16(r->request_id);
    set_client_ip(r);
    return r;
}

/* What libmicrohttpd passes on without a word: a %00 in the target (the
 * decoded path or value silently ends there), bytes that are not UTF-8 in the
 * decoded path or query, and two Content-Length headers that disagree (it
 * takes the first). */
struct head_scan {
    const char *bad_arg; /* a query parameter that is not UTF-8 ("query" when its name is not either) */
    const char *content_length;
    bool conflicting_length;
};

static enum MHD_Result scan_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct head_scan *h = cls;
    bool key_ok = utf8_valid(key, strlen(key));
    if (!key_ok || (value && !utf8_valid(value, strlen(value)))) {
        h->bad_arg = key_ok ? key : "query";
        return MHD_NO;
    }
    return MHD_YES;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct head_scan *h = cls;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (!h->content_length)
            h->content_length = value ? value : "";
        else if (strcmp(h->content_length, value ? value : "") != 0)
            h->conflicting_length = true;
    }
    return MHD_YES;
}

/* Refuses (400) a head libmicrohttpd accepted but that cannot be read as
 * sent; true when it replied. */
static bool head_refusal(struct req *r)
{
    struct head_scan h = {NULL, NULL, false};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, scan_header, &h);
    if (h.conflicting_length) {
        reply_problem(r, 400, "malformed_request", "conflicting Content-Length headers");
        return true;
    }
    if (r->target_nul) {
        reply_problem(r, 400, "invalid_parameter", "the request target holds a NUL byte (%%00)");
        return true;
    }
    if (!utf8_valid(r->path, strlen(r->path))) {
        reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", "path"),
                          "the path is not valid UTF-8");
        return true;
    }
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, scan_arg, &h);
    if (h.bad_arg) {
        reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", h.bad_arg),
                          "a query parameter is not valid UTF-8");
        return true;
    }
    return false;
}

/* First call of the access handler: the head is complete. */
static void req_head(struct req *r, const char *url, const char *method)
{
    r->begun = true;
    r->method = method;
    free(r->path);
    size_t ul = strlen(url);
    r->path = xstrndup(url, ul > HTTP_MAX_PATH ? HTTP_MAX_PATH : ul);
    r->path_too_long = ul > HTTP_MAX_PATH;
    set_request_id(r);
    r->cors_origin = cors_allowed(r->srv->cors, req_header(r, "Origin"));
}

/* The declared body length for the head-done deadline: 0 none, -1 unknown. */
static int64_t declared_body(struct req *r)
{
    const char *cl = req_header(r, "Content-Length");
    int64_t n;
    if (cl && parse_i64(cl, &n) && n >= 0)
        return n;
    return req_header(r, "Transfer-Encoding") ? -1 : 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    struct server *s = cls;
    struct req *r = *con_cls;
    if (!r) { /* cannot happen: on_uri made it; be safe */
        r = on_uri(s, url, conn);
        *con_cls = r;
    }
    if (!r->begun) {
        char allow[128];
        req_head(r, url, method);
        conns_head_done(conn, declared_body(r));
        if (atomic_load(&stopping)) {
            /* replying in the first call closes the connection: what we want */
            req_add_header(r, "Retry-After", "1"); /* and Connection: close (reply.c) */
            reply_problem(r, 503, "service_unavailable", "the server is shutting down");
            return MHD_YES;
        }
        if (head_refusal(r))
            return MHD_YES;
        bool preflight_req = strcmp(method, "OPTIONS") == 0 && req_header(r, "Origin");
        if (!preflight_req && s->raw && s->raw->claims(r->path)) {
            r->raw = s->raw;
            r->label = s->raw->label;
            s->raw->begin(r); /* e.g. verifies a signature now; a body then streams to it */
            return MHD_YES;
        }
        if (r->path_too_long) {
            /* ours rather than libmicrohttpd's HTML 414 (which it sends for a
             * request line past its 8 KiB buffer) */
            reply_problem(r, 414, "uri_too_long", "the path exceeds %d bytes", HTTP_MAX_PATH);
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
        if (r->raw) {
            r->raw->write(r, upload_data, n); /* a failure is answered at the end */
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
    conns_dispatched(conn);
    metrics_inflight_add(1);
    if (r->raw)
        r->raw->finish(r);
    else if (r->too_large)
        reply_problem(r, 413, "payload_too_large", "the body exceeds %zu bytes", r->body_limit);
    else
        dispatch(r);
    if (!r->offloaded) /* an offloaded request's connection belongs to the pool thread */
        req_release_db(r);
    return MHD_YES;
}

/* The request's access-log line. */
static void access_log(struct req *r, enum log_level lvl, int status, double secs, enum MHD_RequestTerminationCode toe)
{
    struct log_field f[12] = {
        {"request_id", LF_STR, r->request_id, 0, 0},
        {"method", LF_STR, r->method, 0, 0},
        {"path", LF_STR, r->path, 0, 0},
        {"route", LF_STR, r->label, 0, 0},
        {"status", LF_INT, NULL, status, 0},
        {"duration_ms", LF_REAL, NULL, 0, secs * 1000.0},
        {"ip", LF_STR, r->client_ip, 0, 0},
    };
    size_t n = 7;
    if (r->user_id)
        f[n++] = (struct log_field){"user_id", LF_INT, NULL, r->user_id, 0};
    if (r->device_id)
        f[n++] = (struct log_field){"device_id", LF_INT, NULL, r->device_id, 0};
    if (r->problem_code)
        f[n++] = (struct log_field){"code", LF_STR, r->problem_code, 0, 0};
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        f[n++] = (struct log_field){"terminated", LF_INT, NULL, (long long)toe, 0};
    if (!r->replied && status != 499)
        f[n++] = (struct log_field){"refused_by", LF_STR, "libmicrohttpd", 0, 0};
    nlog_fields(lvl, "request", f, n); /* no allocation: one line per request */
}

/* Releases everything the request holds. */
static void req_free(struct req *r)
{
    if (r->parked)
        MHD_destroy_response(r->parked);
    tx_drop_notes(r); /* a request that ended mid-transaction */
    free(r->notes);
    req_release_db(r);
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
        metrics_inflight_add(-1);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    struct req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    conns_request_done(conn);
    double secs = (double)(now_us() - r->start_us) / 1e6;
    int status = r->status;
    if (!status) {
        /* no reply of ours: libmicrohttpd refused the request itself (its
         * status is queued on the connection), or the client went away */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
        status = ci && ci->http_status >= 100 && ci->http_status <= 599 ? (int)ci->http_status : 499;
    }
    metrics_observe(r->label, r->method, status, secs);
    enum log_level lvl = status >= 500 ? LOG_ERROR : LOG_INFO;
    if (log_enabled(lvl))
        access_log(r, lvl, status, secs, toe);
    req_free(r);
}

/* ======================================================================
 * Start / stop
 * ====================================================================== */

/* Raises the soft open-file limit to the hard one (each held poll is a
 * socket): the operator sets the ceiling (ulimit -Hn, LimitNOFILE=), the
 * process uses all of it. Logs what it got. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            nlog(LOG_WARN, "cannot raise the open-file limit", json_pack("{s:s}", "error", strerror(errno)));
            return;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && was != RLIM_INFINITY)
        nlog(LOG_INFO, "open-file limit",
             json_pack("{s:I,s:I}", "was", (json_int_t)was, "now", (json_int_t)rl.rlim_cur));
}

/* The connection limit: configured, or every descriptor the (raised) soft
 * RLIMIT_NOFILE leaves after the process's own: the database pool, the
 * Redis pool (one per HTTP and hashing thread + 4), one connection each for
 * the pipelines, the bus, the re-check and presence threads (<= 16), and
 * 128 for the listening socket, epoll and inter-thread pipes of each HTTP
 * thread, the log, blob store files and stdio. With 20,000 descriptors and
 * the defaults that is ~19,800 connections. */
static unsigned connection_limit(const struct config *cfg)
{
    if (cfg->max_connections > 0)
        return (unsigned)cfg->max_connections;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 10000;
    long reserve = 128 + 16 + cfg->db_pool_size + cfg->http_threads + cfg->hash_threads + 4;
    long lim = (long)rl.rlim_cur - reserve;
    return lim < 64 ? 64 : (unsigned)lim;
}

/* Connections one address may hold: configured, or half the limit, so that
 * one address can never take them all. */
static unsigned per_ip_limit(const struct config *cfg, unsigned limit)
{
    if (cfg->max_conns_per_ip > 0)
        return (unsigned)cfg->max_conns_per_ip;
    return limit / 2 > 0 ? limit / 2 : 1;
}

/* MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's own messages as JSON lines
 * (without it they are plain text on stderr). Its refusals read "Error
 * processing request (HTTP response code is 431 ('<html>…')). Closing
 * connection.": the status becomes a field and the HTML page it sent is
 * left out. Anything not printable ASCII becomes '?', so the line is
 * always valid JSON. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    unsigned status = 0;
    const char *code = strstr(text, "HTTP response code is ");
    if (code)
        status = (unsigned)strtoul(code + strlen("HTTP response code is "), NULL, 10);
    char *html = strstr(text, " ('<");
    if (html)
        snprintf(html, sizeof text - (size_t)(html - text), "). Closing connection.");
    log_printable(text);
    json_t *f = json_pack("{s:s}", "detail", text);
    if (status >= 100 && status <= 599)
        json_object_set_new(f, "status", json_integer(status));
    nlog(LOG_WARN, status ? "libmicrohttpd refused a request" : "libmicrohttpd", f);
}

/* What http_start set up before a later step failed. */
static void undo_start(struct server *s)
{
    offload_stop(s->offload);
    offload_free(s->offload);
    s->offload = NULL;
    if (s->slow) {
        offload_stop(s->slow);
        offload_free(s->slow);
        s->slow = NULL;
    }
    cors_free(s->cors);
    s->cors = NULL;
}

int http_start(struct server *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->cfg->listen_addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)s->cfg->port);
    } else if (inet_pton(AF_INET6, s->cfg->listen_addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)s->cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        nlog(LOG_ERROR, "NATTER_LISTEN_ADDR is not an IP address", json_pack("{s:s}", "value", s->cfg->listen_addr));
        return -1;
    }
    s->cors = cors_new(s->cfg->cors_origins);
    s->offload = offload_new(s->cfg->hash_threads, s->cfg->hash_queue, s->cfg->hash_register_threads,
                             s->cfg->hash_register_queue, offload_run);
    raise_nofile();
    /* one lane used: the bulk lane's share (1) and queue (1) stay empty */
    s->slow = s->slow_threads > 0 ? offload_new(s->slow_threads, s->slow_queue, 1, 1, offload_run) : NULL;
    unsigned limit = connection_limit(s->cfg), per_ip = per_ip_limit(s->cfg, limit);
    if (conns_start((unsigned)s->cfg->head_timeout, (unsigned)s->cfg->body_timeout, (unsigned)s->cfg->conn_timeout) <
        0) {
        undo_start(s);
        return -1;
    }
    s->daemon = MHD_start_daemon(flags, (uint16_t)s->cfg->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                                 on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_THREAD_POOL_SIZE,
                                 (unsigned)s->cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT, limit,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                 (size_t)8192, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg->conn_timeout,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
                                 conns_notify, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_END);
    if (!s->daemon) {
        conns_stop();
        nlog(LOG_ERROR, "cannot start HTTP server (address in use?)",
             json_pack("{s:s,s:i}", "addr", s->cfg->listen_addr, "port", s->cfg->port));
        undo_start(s);
        return -1;
    }
    nlog(LOG_INFO, "listening",
         json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i}", "addr", s->cfg->listen_addr, "port", s->cfg->port, "threads",
                   s->cfg->http_threads, "connection_limit", (int)limit, "per_ip_limit", (int)per_ip, "head_timeout",
                   s->cfg->head_timeout, "body_timeout", s->cfg->body_timeout));
    return 0;
}

void http_stop(struct server *s)
{
    if (!s->daemon)
        return;
    /* Not MHD_quiesce_daemon(): in 0.9.75 with a thread pool it races the
     * workers removing the listen socket from their epoll sets and can abort
     * ("Failed to remove listen FD from epoll set"). New requests are
     * answered 503 instead, which a load balancer retries elsewhere. */
    atomic_store(&stopping, true);
    /* the application ends its long-polls now: MHD_stop_daemon aborts with a
     * suspended connection */
    if (s->before_stop)
        s->before_stop();
    /* every suspended request is resumed by its pool as it finishes its job */
    offload_stop(s->offload);
    if (s->slow)
        offload_stop(s->slow);
    uint64_t deadline = now_us() + 10u * 1000000u;
    while (metrics_inflight() > 0 && now_us() < deadline)
        usleep(10000);
    int left = metrics_inflight();
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    conns_stop();
    offload_free(s->offload);
    s->offload = NULL;
    if (s->slow) {
        offload_free(s->slow);
        s->slow = NULL;
    }
    cors_free(s->cors);
    s->cors = NULL;
    nlog(LOG_INFO, "http stopped", json_pack("{s:i}", "abandoned_requests", left));
}

bool http_stopping(void)
{
    return atomic_load(&stopping);
}

int http_offload_depth(const struct server *s)
{
    return s->offload ? offload_depth(s->offload) : 0;
}
