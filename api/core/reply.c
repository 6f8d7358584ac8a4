/*
 * reply.c — the replies every handler ends with: JSON, text, empty, and
 * RFC 9457 problem+json with a stable code; the headers every reply carries.
 * An offloaded request's reply is parked and queued once its connection
 * resumes (http.c).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "jsonv.h"
#include "log.h"
#include "util.h"

void req_add_header(struct req *r, const char *name, const char *value)
{
    if (r->nhdr >= HTTP_MAX_HEADERS)
        return;
    r->hdr_name[r->nhdr] = xstrdup(name);
    r->hdr_val[r->nhdr] = xstrdup(value);
    r->nhdr++;
}

void req_send_response(struct req *r, int status, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    /* API answers are never stored; a reply that set its own (the web
     * client's files, revalidated by ETag) keeps it */
    bool own_cache_control = false;
    for (int i = 0; i < r->nhdr; i++)
        own_cache_control |= strcasecmp(r->hdr_name[i], "Cache-Control") == 0;
    if (!own_cache_control)
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After, Location");
    }
    for (int i = 0; i < r->nhdr; i++)
        MHD_add_response_header(resp, r->hdr_name[i], r->hdr_val[i]);
    if (http_stopping()) /* libmicrohttpd closes the connection after this reply */
        MHD_add_response_header(resp, "Connection", "close");
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
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body,
                                                                copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    req_send_response(r, status, resp);
    return 0;
}

int reply_owned(struct req *r, int status, const char *content_type, char *body_new, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body_new, MHD_RESPMEM_MUST_FREE);
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
    return reply_owned(r, status, ct, text, strlen(text));
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
    case 400:
        return "Bad request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not found";
    case 405:
        return "Method not allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Payload too large";
    case 414:
        return "URI too long";
    case 415:
        return "Unsupported media type";
    case 422:
        return "Unprocessable content";
    case 429:
        return "Too many requests";
    case 503:
        return "Service unavailable";
    default:
        return status >= 500 ? "Internal error" : "Error";
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

__attribute__((format(printf, 5, 0))) static int vproblem(struct req *r, int status, const char *code,
                                                          json_t *extra_new, const char *fmt, va_list ap)
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
                          "detail", detail, "instance", instance, "code", code, "request_id", r->request_id);
    if (!p) /* detail with invalid UTF-8 cannot happen with our formats; be safe */
        p = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", type, "title", title_of(status), "status", status, "code", code,
                      "request_id", r->request_id);
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
