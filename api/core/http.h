/*
 * http.h — the request context and the reply helpers every handler uses.
 *
 * http.c owns libmicrohttpd's multi-call protocol: it creates a struct req on
 * the first call, checks Content-Length and accumulates the body up to the
 * route's bound (413 past it), then on the last call routes (404/405),
 * answers CORS preflights, checks the content type (415), parses JSON (400),
 * authenticates (401) and calls the handler. Handlers never see MHD's
 * protocol; they get `struct req *` and answer with one reply_* call.
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

struct req;
struct app;
struct blob;

typedef int (*handler_fn)(struct req *r);

/* route flags */
#define R_AUTH 0x1u      /* Bearer JWT of a live device required */
#define R_JSON 0x2u      /* application/json object body required */
#define R_SLOW 0x4u      /* runs on the hashing pool, off the HTTP threads */
#define R_JSON_OPT 0x8u  /* JSON body allowed but optional */

struct route {
    const char *method;
    const char *pattern;   /* "/v1/users/{id}": {x} matches one non-empty segment */
    handler_fn handler;
    unsigned flags;        /* R_* */
    size_t max_body;       /* bytes; 0 = HTTP_DEFAULT_MAX_BODY */
};

#define HTTP_DEFAULT_MAX_BODY (16 * 1024)
#define HTTP_MAX_PARAMS 4
/* after a body passes its limit, bytes read and dropped before hanging up */
#define HTTP_DISCARD_MAX (1024 * 1024)

extern const struct route routes[];
extern const size_t routes_count;

struct deferred {
    void (*fn)(void *);
    void *ptr;
};

struct req {
    struct app *app;
    struct MHD_Connection *conn;
    const char *method;            /* borrowed from MHD */
    char *path;                    /* owned: URL path without query */
    const struct route *route;     /* matched route, NULL until routed */
    int route_idx;                 /* index in routes[] or -1 */
    const char *params[HTTP_MAX_PARAMS]; /* path params, owned by the request */
    int nparams;
    char *body;                    /* owned request body (NUL-terminated) */
    size_t body_len, body_cap, body_limit;
    bool too_large;                /* body passed body_limit: 413 at the end */
    size_t discarded;              /* bytes thrown away after too_large */
    json_t *json;                  /* parsed body (object) or NULL; owned */
    int64_t user_id;               /* authenticated user, 0 if none */
    int64_t device_id;             /* authenticated device, 0 if none */
    char request_id[72];
    char client_ip[64];
    const char *cors_origin;       /* allowed Origin to echo, borrowed from MHD */
    uint64_t start_us;
    int status;                    /* status of the reply, 0 until replied */
    const char *problem_code;      /* code of an error reply, for the access log */
    bool replied;
    bool offloaded;                /* running on the hashing pool: reply is parked */
    struct MHD_Response *parked;   /* reply built off-thread, queued on resume */
    bool dispatched;
    PGconn *db;                    /* pooled connection held by this request */
    int db_slot;                   /* its pool slot (prepared-statement cache) */
    handler_fn resume_fn;          /* long-poll: called when a suspended request resumes */
    bool suspended;                /* suspended by req_suspend, not yet resumed */
    void *ctx;                     /* handler state across suspension (e.g. struct waiter) */
    struct blob *blob;             /* embedded object store request (blobstore.c), borrowed */
    int64_t *wakes;                /* (user id, inbox seq) pairs written by this transaction */
    size_t nwakes, cap_wakes;      /* pairs, not elements */
    char *hdr_name[8], *hdr_val[8];/* extra reply headers (req_add_header), owned */
    int nhdr;
    struct deferred *defers;       /* cleanups run at completion, in reverse order */
    size_t ndefers, cap_defers;
};

/* ---- replies (each returns 0, or -1 for reply_problem) ---- */
int reply_json(struct req *r, int status, json_t *body_new);
int reply_empty(struct req *r, int status);
int reply_text(struct req *r, int status, const char *content_type, const char *body, size_t len, bool copy);
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
 * Headers are buffered until the reply; at most 8. name/value are copied. */
void req_add_header(struct req *r, const char *name, const char *value);

/* ---- request data ---- */
const char *req_param(struct req *r, int i);         /* path param i, borrowed */
const char *req_query(struct req *r, const char *k); /* query arg, borrowed, or NULL */
const char *req_header(struct req *r, const char *k);

/* ---- request-lifetime resources ---- */
void req_defer(struct req *r, void (*fn)(void *), void *ptr);
char *req_own(struct req *r, char *s);   /* frees s at request end; returns s */
json_t *req_own_json(struct req *r, json_t *j);

/* ---- database ---- */
/* The request's pooled connection (acquired once, released at request end);
 * NULL after replying 503. */
PGconn *req_db(struct req *r);
/* PQexecParams with text params; the result belongs to the request. On an
 * error result replies 500 (or 503 when the server is gone) and returns NULL,
 * unless the SQLSTATE is listed in allow (e.g. "23505"), in which case the
 * failed result is returned for the caller to inspect. */
PGresult *req_sql(struct req *r, const char *allow, const char *sql, int n, const char *const *vals);
/* BEGIN / COMMIT on the request's connection: 0 or -1 after replying.
 * req_commit also delivers the wake-ups the transaction recorded with
 * req_note_wake (only after COMMIT succeeded: acknowledged means durable). */
int req_begin(struct req *r);
int req_commit(struct req *r);
/* Records that user_id's inbox got seq in the open transaction. */
void req_note_wake(struct req *r, int64_t user_id, int64_t seq);
/* Returns the pooled connection early (before suspending a long-poll). */
void req_release_db(struct req *r);

/* ---- long-poll support (hub.c) ---- */
/* Suspends the connection; only inside the access handler. */
void req_suspend(struct req *r);
/* Resumes a suspended connection from any thread; MHD then calls r->resume_fn. */
void req_resume(struct req *r);

/* ---- server ---- */
struct app {
    struct config *cfg;
    struct db_pool *db;
    struct redis_pool *redis;
    struct MHD_Daemon *daemon;
    struct offload *offload;
    const char *openapi;     /* embedded spec */
    size_t openapi_len;
    char **cors;             /* allowed origins, NULL-terminated; NULL = none */
    bool cors_any;
    char instance_id[17];    /* random per process: tells our own pub/sub messages apart */
};

/* Starts MHD on cfg's address. 0 or -1 (logged). */
int http_start(struct app *a);
/* Graceful stop: answer new requests 503 (Connection: close), finish the
 * offloaded jobs (resuming their connections), let dispatched requests
 * finish (bounded, 10 s), then stop MHD. */
void http_stop(struct app *a);

/* Metrics of the HTTP layer in Prometheus text format, appended to buf. */
void http_metrics_render(struct app *a, char **buf, size_t *len, size_t *cap);

#endif
