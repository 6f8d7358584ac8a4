/*
 * ops.c — natter-worker's operator HTTP listener (see ops.h).
 *
 * libmicrohttpd with one internal thread, at most OPS_MAX_CONNS connections
 * and an idle timeout. Every request is answered in the first call of the
 * access handler: none of these endpoints takes a body, so a request that
 * sends one is refused before it is read (libmicrohttpd then closes the
 * connection, which costs nothing at an operator's scrape rate).
 *
 * The figures of /metrics are this process's own, read from the atomic
 * counters of push.c; natter-api's /metrics shows the whole pool's from
 * Redis. /readyz checks the dependencies live: Redis through the worker's
 * shared pool (PING, short timeouts), PostgreSQL through a connection of the
 * listener's own, used only by its thread, with bounded connect and query
 * times — so a probe takes at most a few seconds however the database fails.
 */
#include "ops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>

#include "log.h"
#include "push.h"
#include "strbuf.h"
#include "util.h"
#include "worker.h"

#define OPS_MAX_CONNS 64          /* connections at once; more wait in the backlog */
#define OPS_IDLE_TIMEOUT_S 10     /* an idle connection is closed after this */
#define OPS_CONN_MEMORY 16384     /* per-connection buffer: request head + headers */
#define PROBE_CONNECT_TIMEOUT "2" /* seconds, libpq's connect_timeout (its minimum) */
#define PROBE_QUERY_MS 2000       /* SELECT 1 must answer within this */
#define RETRY_AFTER_S "5"

struct ops {
    struct MHD_Daemon *daemon;
    struct ops_env env;
    PGconn *probe;     /* /readyz's own connection; only the listener's thread uses it */
    time_t started_at; /* wall clock, natter_worker_start_time_seconds */
};

/* ---- replies ---- */

/* Queues status with body (owned, len bytes; NULL = empty), the headers
 * every answer carries and header (NULL, or {name, value} of one more). */
static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *content_type, char *body,
                              size_t len, const char *request_id, const char *const *header)
{
    struct MHD_Response *resp = body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
                                     : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Request-Id", request_id);
    if (header)
        MHD_add_response_header(resp, header[0], header[1]);
    if (status == 503)
        MHD_add_response_header(resp, "Retry-After", RETRY_AFTER_S);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result answer_json(struct MHD_Connection *conn, unsigned status, const char *content_type,
                                   json_t *body_new, const char *request_id, const char *const *header)
{
    char *text = json_dumps(body_new, JSON_COMPACT);
    json_decref(body_new);
    if (!text)
        return answer(conn, 500, NULL, NULL, 0, request_id, NULL);
    return answer(conn, status, content_type, text, strlen(text), request_id, header);
}

/* The path for `instance` when it is plain (letters, digits, / - . _ ~),
 * else NULL: a problem never echoes bytes that would need escaping. */
static const char *plain_path(const char *path)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++, n++) {
        bool keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '/' ||
                    *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (!keep || n >= 256)
            return NULL;
    }
    return path;
}

/* RFC 9457 problem+json, the shape natter-api's reply_problem writes. */
static enum MHD_Result problem(struct MHD_Connection *conn, unsigned status, const char *title, const char *code,
                               const char *detail, const char *path, const char *request_id, json_t *extra_new,
                               const char *const *header)
{
    char type[96];
    snprintf(type, sizeof type, "urn:natter:problem:%s", code);
    json_t *p = json_pack("{s:s,s:s,s:i,s:s,s:s,s:s}", "type", type, "title", title, "status", (int)status, "detail",
                          detail, "code", code, "request_id", request_id);
    const char *instance = plain_path(path);
    if (p && instance)
        json_object_set_new(p, "instance", json_string(instance));
    if (p && extra_new)
        json_object_update(p, extra_new);
    json_decref(extra_new);
    return answer_json(conn, status, "application/problem+json", p, request_id, header);
}

/* ---- /readyz ---- */

/* PostgreSQL answers SELECT 1 on the probe connection within PROBE_QUERY_MS
 * (connecting first if need be, bounded by connect_timeout). A connection
 * that fails or is too slow is dropped; the next probe connects afresh. */
static bool postgres_ok(struct ops *o)
{
    if (o->probe && PQstatus(o->probe) != CONNECTION_OK) {
        PQfinish(o->probe);
        o->probe = NULL;
    }
    if (!o->probe) {
        /* dbname is expanded (a URL or key=value string): its own connect_timeout wins */
        const char *const keys[] = {"connect_timeout", "dbname", NULL};
        const char *const vals[] = {PROBE_CONNECT_TIMEOUT, o->env.cfg->database_url, NULL};
        o->probe = PQconnectdbParams(keys, vals, 1);
        if (!o->probe || PQstatus(o->probe) != CONNECTION_OK) {
            PQfinish(o->probe);
            o->probe = NULL;
            return false;
        }
    }
    bool ok = false;
    if (PQsendQuery(o->probe, "SELECT 1") == 1) {
        uint64_t deadline = now_us() + PROBE_QUERY_MS * 1000u;
        bool failed = false;
        for (int i = 0; i < 1000 && !failed && PQisBusy(o->probe); i++) {
            uint64_t now = now_us();
            if (now >= deadline) {
                failed = true;
                break;
            }
            struct pollfd pfd = {PQsocket(o->probe), POLLIN, 0};
            int n = poll(&pfd, 1, (int)((deadline - now) / 1000u) + 1);
            if ((n < 0 && errno != EINTR) || PQconsumeInput(o->probe) != 1)
                failed = true;
        }
        if (!failed && !PQisBusy(o->probe)) {
            PGresult *r;
            ok = true;
            while ((r = PQgetResult(o->probe)) != NULL) { /* bounded: one statement's results */
                ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK;
                PQclear(r);
            }
        }
    }
    if (!ok) {
        PQfinish(o->probe);
        o->probe = NULL;
    }
    return ok;
}

static enum MHD_Result readyz(struct ops *o, struct MHD_Connection *conn, const char *path, const char *request_id)
{
    bool pg = postgres_ok(o), redis = redis_ping(o->env.redis);
    json_t *checks = json_pack("{s:s,s:s}", "postgres", pg ? "ok" : "fail", "redis", redis ? "ok" : "fail");
    if (pg && redis)
        return answer_json(conn, 200, "application/json", json_pack("{s:s,s:o}", "status", "ready", "checks", checks),
                           request_id, NULL);
    return problem(conn, 503, "Service unavailable", "not_ready", "a dependency is down", path, request_id,
                   json_pack("{s:o}", "checks", checks), NULL);
}

/* ---- /metrics ---- */

/* NATTER_METRICS_TOKEN set: the scrape must carry `Authorization: Bearer
 * <token>`, as natter-api's /metrics. */
static enum MHD_Result metrics(struct ops *o, struct MHD_Connection *conn, const char *path, const char *request_id)
{
    const char *want = o->env.cfg->metrics_token;
    if (want && *want) {
        const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        switch (bearer_check(h, want)) {
        case BEARER_OK:
            break;
        case BEARER_MISSING:
            return problem(conn, 401, "Unauthorized", "unauthorized",
                           "GET /metrics needs Authorization: Bearer <NATTER_METRICS_TOKEN>", path, request_id, NULL,
                           (const char *const[]){"WWW-Authenticate", "Bearer realm=\"metrics\""});
        case BEARER_WRONG:
            return problem(conn, 401, "Unauthorized", "invalid_token", "wrong metrics token", path, request_id, NULL,
                           (const char *const[]){"WWW-Authenticate",
                                                 "Bearer realm=\"metrics\", error=\"invalid_token\""});
        }
    }
    struct strbuf sb = {0};
    strbuf_add(&sb,
               "# HELP natter_pushes_total Pushes by provider and outcome, counted by this worker process since"
               " it started (natter-api's /metrics has the same family for the whole pool).\n"
               "# TYPE natter_pushes_total counter\n");
    for (size_t p = 0; p < push_providers_n(); p++)
        for (int out = 0; out < PUSH_OUT_N; out++)
            strbuf_printf(&sb, "natter_pushes_total{provider=\"%s\",outcome=\"%s\"} %llu\n", push_provider_name(p),
                          push_outcome_name((enum push_outcome)out), push_count(p, (enum push_outcome)out));
    strbuf_add(&sb,
               "# HELP natter_push_provider_calls_in_flight Push provider calls this process is making now"
               " (at most NATTER_PUSH_PROVIDER_CONCURRENCY each).\n"
               "# TYPE natter_push_provider_calls_in_flight gauge\n");
    for (size_t p = 0; p < push_providers_n(); p++)
        strbuf_printf(&sb, "natter_push_provider_calls_in_flight{provider=\"%s\"} %d\n", push_provider_name(p),
                      push_inflight(p));
    strbuf_add(&sb,
               "# HELP natter_worker_job_runs_total Jobs this process ran since it started, by type and outcome"
               " (retry: tried again later or dead-lettered once its attempts are spent; abandon: a dependency was"
               " down, the job is reclaimed later; defer: its provider's budget was taken).\n"
               "# TYPE natter_worker_job_runs_total counter\n");
    for (size_t t = 0; t < job_types_n(); t++)
        for (int rc = 0; rc < JOB_RCS; rc++)
            strbuf_printf(&sb, "natter_worker_job_runs_total{type=\"%s\",outcome=\"%s\"} %llu\n", job_type_name(t),
                          job_rc_name((enum job_rc)rc), job_runs(t, (enum job_rc)rc));
    strbuf_printf(&sb,
                  "# HELP natter_worker_jobs_running Jobs this process's threads are running now.\n"
                  "# TYPE natter_worker_jobs_running gauge\nnatter_worker_jobs_running %d\n"
                  "# HELP natter_worker_threads Job threads of this process (NATTER_WORKER_THREADS).\n"
                  "# TYPE natter_worker_threads gauge\nnatter_worker_threads %d\n"
                  "# HELP natter_worker_start_time_seconds When this process started, unix seconds.\n"
                  "# TYPE natter_worker_start_time_seconds gauge\nnatter_worker_start_time_seconds %lld\n"
                  "# HELP natter_log_lines_written_total Log lines the asynchronous writer wrote.\n"
                  "# TYPE natter_log_lines_written_total counter\nnatter_log_lines_written_total %llu\n"
                  "# HELP natter_log_lines_dropped_total Log lines dropped because the log buffer was full.\n"
                  "# TYPE natter_log_lines_dropped_total counter\nnatter_log_lines_dropped_total %llu\n",
                  jobs_running(), o->env.threads, (long long)o->started_at, log_written(), log_dropped());
    size_t len;
    char *text = strbuf_take(&sb, &len);
    return answer(conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, request_id, NULL);
}

/* ---- the access handler ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    struct ops *o = cls;
    char rid[17];
    id_hex16(rid);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool known = strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0;
    if (!known)
        return problem(conn, 404, "Not found", "not_found", "no such resource", url, rid, NULL, NULL);
    if (!get) {
        char detail[96];
        snprintf(detail, sizeof detail, "%.32s is not allowed here", method);
        return problem(conn, 405, "Method not allowed", "method_not_allowed", detail, url, rid, NULL,
                       (const char *const[]){"Allow", "GET, HEAD"});
    }
    if (strcmp(url, "/healthz") == 0)
        return answer_json(conn, 200, "application/json", json_pack("{s:s}", "status", "ok"), rid, NULL);
    if (strcmp(url, "/readyz") == 0)
        return readyz(o, conn, url, rid);
    return metrics(o, conn, url, rid);
}

/* libmicrohttpd's own messages as JSON log lines (printable ASCII only). */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    log_printable(text);
    nlog(LOG_WARN, "libmicrohttpd (operator listener)", json_pack("{s:s}", "detail", text));
}

int ops_start(const struct ops_env *env, struct ops **out)
{
    *out = NULL;
    const char *listen = env->cfg->worker_listen;
    if (!listen || !*listen) {
        nlog(LOG_INFO, "operator listener disabled (NATTER_WORKER_LISTEN is empty)", NULL);
        return 0;
    }
    char host[INET6_ADDRSTRLEN], *err = NULL;
    int port;
    if (config_host_port("NATTER_WORKER_LISTEN", listen, host, sizeof host, &port, &err) < 0) {
        nlog(LOG_ERROR, "cannot start the operator listener", json_pack("{s:s}", "error", err));
        free(err);
        return -1;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else { /* config_host_port checked it; be safe */
        nlog(LOG_ERROR, "cannot start the operator listener", json_pack("{s:s}", "NATTER_WORKER_LISTEN", listen));
        return -1;
    }
    struct ops *o = xcalloc(1, sizeof *o);
    o->env = *env;
    o->started_at = time(NULL);
    /* not MHD_OPTION_LISTENING_ADDRESS_REUSE: a second worker on the same port
     * must fail here, or scrapes would land on either process at random */
    o->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, o, MHD_OPTION_EXTERNAL_LOGGER,
                                 on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)OPS_MAX_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)OPS_IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                 (size_t)OPS_CONN_MEMORY, MHD_OPTION_END);
    if (!o->daemon) {
        nlog(LOG_ERROR, "cannot start the operator listener (NATTER_WORKER_LISTEN: address in use?)",
             json_pack("{s:s}", "listen", listen));
        free(o);
        return -1;
    }
    nlog(LOG_INFO, "operator listener started",
         json_pack("{s:s,s:s,s:i,s:i}", "listen", listen, "addr", host, "port", port, "connection_limit",
                   OPS_MAX_CONNS));
    *out = o;
    return 0;
}

void ops_stop(struct ops *o)
{
    if (!o)
        return;
    MHD_stop_daemon(o->daemon); /* joins its thread: nothing uses o->probe after this */
    PQfinish(o->probe);
    free(o);
    nlog(LOG_INFO, "operator listener stopped", NULL);
}
