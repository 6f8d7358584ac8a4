/*
 * http.h — the transport: the request context, the route table's shape, the
 * reply helpers every handler uses, and the server that runs them.
 *
 * http.c owns libmicrohttpd's multi-call protocol: it creates a struct req
 * once the request line is read, checks Content-Length on the first call of
 * the access handler and accumulates the body up to the
 * route's bound (413 past it), then on the last call routes (404/405),
 * answers CORS preflights, checks the content type (415), parses JSON (400),
 * calls the application's authenticate hook (R_AUTH) and the handler.
 * Handlers never see MHD's protocol; they get `struct req *` and answer with
 * one reply_* call.
 *
 * The transport names nothing above it. The application hands it, in
 * struct server: the route table, an authenticate function, an optional raw
 * handler (a second application on the same port that takes whole requests
 * before routing, streaming their bodies: the object store), and a
 * before-stop hook. The request's database session and its post-commit
 * hooks are tx.h's business.
 *
 * Return convention: handlers and helpers return 0 after a successful reply
 * and -1 after an error reply (reply_problem returns -1 so that
 * `return reply_problem(...)` reads naturally). A helper that already replied
 * returns -1 and the caller just returns -1.
 *
 * Request-lifetime resources (PGresult, json_t, strings) hang on the request
 * via req_defer() / req_own() and are released once, in MHD's completion callback.
 */
#ifndef NATTER_HTTP_H
#define NATTER_HTTP_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <microhttpd.h>

#include "config.h"
#include "router.h"

struct req;
struct app; /* the application's state: handlers read r->app; the transport never looks inside */
struct server;
struct tx_note; /* tx.h */

#define HTTP_DEFAULT_MAX_BODY (16 * 1024)
#define HTTP_MAX_PARAMS ROUTE_MAX_PARAMS
#define HTTP_MAX_HEADERS 8 /* extra reply headers per request (req_add_header) */
/* longest URL path served; a longer one is answered 414 uri_too_long */
#define HTTP_MAX_PATH 2048
/* after a body passes its limit, bytes read and dropped before hanging up */
#define HTTP_DISCARD_MAX (1024 * 1024)

/* A second application on the same port: it claims requests by path before
 * routing and gets the body as it streams (never buffered whole). */
struct raw_handler {
    const char *label;                                       /* route label in metrics and logs */
    bool (*claims)(const char *path);                        /* first call: is this request mine? */
    void (*begin)(struct req *r);                            /* first call: may reply at once (an error) */
    int (*write)(struct req *r, const char *data, size_t n); /* each body chunk; -1: discard the rest */
    void (*finish)(struct req *r);                           /* last call: must reply */
};

struct deferred {
    void (*fn)(void *);
    void *ptr;
};

struct req {
    struct server *srv;
    struct app *app; /* srv->app */
    struct MHD_Connection *conn;
    const char *method;                  /* borrowed from MHD ("" until the head is read) */
    char *path;                          /* owned: URL path without query (raw until the head is read) */
    bool begun;                          /* the access handler has seen the request (its head is complete) */
    bool path_too_long;                  /* the path passed HTTP_MAX_PATH: 414 */
    bool target_nul;                     /* the raw target holds %00: 400 (see head_refusal) */
    const struct route *route;           /* matched route, NULL until routed */
    const char *label;                   /* metrics/log label: route pattern, raw handler, "unmatched" */
    const char *params[HTTP_MAX_PARAMS]; /* path params, owned by the request */
    int nparams;
    char *body; /* owned request body (NUL-terminated) */
    size_t body_len, body_cap, body_limit;
    bool too_large;    /* body passed body_limit: 413 at the end */
    size_t discarded;  /* bytes thrown away after too_large */
    json_t *json;      /* parsed body (object) or NULL; owned */
    int64_t user_id;   /* authenticated user, 0 if none */
    int64_t device_id; /* authenticated device, 0 if none */
    char request_id[72];
    char client_ip[64];
    const char *cors_origin; /* allowed Origin to echo, borrowed from MHD */
    uint64_t start_us;
    int status;               /* status of the reply, 0 until replied */
    const char *problem_code; /* code of an error reply, for the access log */
    bool replied;
    bool offloaded;              /* running on the offload pool: reply is parked */
    struct MHD_Response *parked; /* reply built off-thread, queued on resume */
    bool dispatched;
    const struct raw_handler *raw; /* set when the raw handler claimed the request */
    void *raw_state;               /* the raw handler's per-request state, borrowed */
    PGconn *db;                    /* pooled connection held by this request (tx.c) */
    int db_slot;                   /* its pool slot (prepared-statement cache) */
    struct tx_note *notes;         /* what the open transaction wrote, for post-commit hooks (tx.c) */
    size_t nnotes, cap_notes;
    handler_fn resume_fn; /* long-poll: called when a suspended request resumes */
    bool suspended;       /* suspended by req_suspend, not yet resumed */
    void *ctx;            /* handler state across suspension (e.g. struct waiter) */
    char *hdr_name[HTTP_MAX_HEADERS], *hdr_val[HTTP_MAX_HEADERS]; /* extra reply headers, owned */
    int nhdr;
    struct deferred *defers; /* cleanups run at completion, in reverse order */
    size_t ndefers, cap_defers;
};

/* ---- replies (each returns 0, or -1 for reply_problem) ---- */
int reply_json(struct req *r, int status, json_t *body_new);
int reply_empty(struct req *r, int status);
int reply_text(struct req *r, int status, const char *content_type, const char *body, size_t len, bool copy);
/* A malloc'd body the reply takes over (freed once sent). */
int reply_owned(struct req *r, int status, const char *content_type, char *body_new, size_t len);
/* RFC 9457 problem+json with a stable code; fmt describes this instance. */
int reply_problem(struct req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same, with extra members merged into the problem object (stolen). */
int reply_problem_ext(struct req *r, int status, const char *code, json_t *extra_new, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Sends a response built by the caller (takes ownership), with the common
 * headers (request id, CORS, req_add_header ones). */
void req_send_response(struct req *r, int status, struct MHD_Response *resp_new);
/* 422 validation_failed naming the offending field, from jsonv_check(). */
struct jsonv_error;
int reply_invalid(struct req *r, const struct jsonv_error *e);
/* status + code with a `field` member: for input errors jsonv does not see. */
int reply_field(struct req *r, int status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Adds a header to the reply that is about to be sent (e.g. Location, Retry-After).
 * Headers are buffered until the reply; at most HTTP_MAX_HEADERS. name/value are copied. */
void req_add_header(struct req *r, const char *name, const char *value);

/* ---- request data ---- */
const char *req_param(struct req *r, int i);         /* path param i, borrowed */
const char *req_query(struct req *r, const char *k); /* query arg, borrowed, or NULL */
const char *req_header(struct req *r, const char *k);
/* Optional integer query parameter in [min,max]: 0 (absent: *present=false)
 * or -1 after replying 400 invalid_parameter naming it. */
int req_query_int(struct req *r, const char *name, int64_t min, int64_t max, int64_t *out, bool *present);

/* ---- request-lifetime resources ---- */
void req_defer(struct req *r, void (*fn)(void *), void *ptr);
char *req_own(struct req *r, char *s); /* frees s at request end; returns s */
json_t *req_own_json(struct req *r, json_t *j);
/* A query result cleared at request end, or earlier by req_suspend. */
void req_own_result(struct req *r, PGresult *res);

/* ---- long-poll support ---- */
/* Suspends the connection (releasing its database connection and query
 * results first); only inside the access handler. */
void req_suspend(struct req *r);
/* Resumes a suspended connection from any thread; MHD then calls r->resume_fn. */
void req_resume(struct req *r);

/* ---- handing a request to another thread ---- */
/* Inside the handler: suspends the connection and gives back its database
 * connection; the handler then returns 0 without replying. Another thread
 * owns the request from here: it replies (the reply is parked) and calls
 * req_hand_back, after which it must not touch the request again. */
void req_hand_off(struct req *r);
void req_hand_back(struct req *r);

/* ---- server ---- */
struct server {
    /* set by the application before http_start */
    const struct config *cfg;
    struct db_pool *db; /* requests' database sessions (tx.h) */
    struct app *app;    /* copied into every request */
    const struct route *routes;
    size_t nroutes;
    /* R_AUTH: sets r->user_id and r->device_id; 0, or -1 after replying */
    int (*authenticate)(struct req *r);
    /* optional, R_OFFLOAD and R_SLOW routes: on the HTTP thread before the
     * request takes a slot of its pool; 0, or -1 after replying (a rate limit) */
    int (*admit)(struct req *r);
    /* the slow-query pool (R_SLOW routes): threads running them at once, and
     * requests that may wait for one before 503; 0 threads = no such pool */
    int slow_threads, slow_queue;
    const struct raw_handler *raw; /* optional */
    /* optional: asked about a request whose path matches no route (before
     * the 404); true when it answered (natter-api serves its web client) */
    bool (*fallback)(struct req *r);
    /* called by http_stop once new requests are refused, before it waits for
     * the dispatched ones (the application ends its long-polls here) */
    void (*before_stop)(void);
    /* the transport's own */
    struct MHD_Daemon *daemon;
    struct offload *offload;
    struct offload *slow; /* R_SLOW routes, NULL without slow_threads */
    struct cors *cors;
};

/* Starts MHD on cfg's address with SO_REUSEPORT, so that several natter-api
 * processes can share one port (the kernel spreads new connections between
 * them); raises the soft open-file limit to the hard one first and sizes the
 * connection limit from it. 0 or -1 (logged). */
int http_start(struct server *s);
/* Graceful stop: answer new requests 503 (Connection: close), run before_stop,
 * finish the offloaded and slow jobs (resuming their connections), let dispatched
 * requests finish (bounded, 10 s), then stop MHD. */
void http_stop(struct server *s);
/* True once http_stop began: every reply from then on carries
 * `Connection: close`, so a drained poll's client (or its balancer) opens its
 * next request elsewhere. */
bool http_stopping(void);
/* Requests waiting for an offload thread. */
int http_offload_depth(const struct server *s);

#endif
