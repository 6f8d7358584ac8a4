/*
 * push.h — push providers. A provider is one file (push_webhook.c,
 * push_log.c, push_fcm.c, push_apns.c) exporting a struct push_provider;
 * push_http.c holds what the HTTP ones share (curl set-up, bounded response
 * bodies, Retry-After).
 *
 * Isolation: each provider has its own concurrency budget per worker process
 * (NATTER_PUSH_PROVIDER_CONCURRENCY, push.c): a call that finds its provider's
 * budget taken is not made; the push waits as a job of its own and the thread
 * goes on with other work, so a provider that hangs holds at most its budget
 * of threads and never delays another provider's pushes.
 */
#ifndef NATTER_PUSH_H
#define NATTER_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

struct wctx;
struct config;

enum push_result {
    PUSH_OK,            /* delivered to the provider */
    PUSH_RETRY,         /* 429, 5xx, timeout, connection error */
    PUSH_INVALID_TOKEN, /* the provider says the token is gone (404/410): drop it */
    PUSH_FAILED,        /* permanent (other 4xx, misconfiguration): dead letter */
};

enum push_kind {
    PUSH_MESSAGES, /* new messages: a visible notification with count and badge */
    PUSH_BADGE,    /* silent: only the new total unread count (read on another device) */
};

struct push_msg {
    const char *id; /* stable across retries: receivers de-duplicate on it */
    enum push_kind kind;
    int64_t user_id, device_id;
    const char *token, *platform;
    int64_t count;        /* messages coalesced into this push (0 for a badge update) */
    int64_t chat_id, seq; /* the newest of them (the chat read, for a badge update) */
    int64_t badge;        /* the user's total unread count */
    int64_t expires_at;   /* unix seconds after which the push is worthless (NATTER_PUSH_TTL) */
};

/* What a provider call tells beside its result. */
struct push_out {
    char *err; /* reason for anything but PUSH_OK */
    size_t errlen;
    int64_t retry_after_ms; /* PUSH_RETRY: the provider's Retry-After, 0 = none */
};

struct push_provider {
    const char *name; /* devices.push_provider */
    /* Reads keys and credentials at start-up; NULL when there is nothing to
     * load. 0, or -1 with an owned message in *err naming the setting. */
    int (*init)(const struct config *cfg, char **err);
    enum push_result (*send)(struct wctx *w, const struct push_msg *m, struct push_out *out);
};

extern const struct push_provider push_webhook;
extern const struct push_provider push_log;
extern const struct push_provider push_fcm;
extern const struct push_provider push_apns;

/* What became of a push, counted per provider: in this process (push_count,
 * the worker's own /metrics) and in the hash natter:metrics:pushes that every
 * worker writes (natter-api's /metrics: the whole pool). */
enum push_outcome {
    PUSH_OUT_SENT,          /* the provider accepted it */
    PUSH_OUT_RETRIED,       /* a transient failure (429, 5xx, timeout): tried again,
                               or dead-lettered once its attempts are spent */
    PUSH_OUT_TOKEN_REMOVED, /* the provider said the token is gone: it was dropped */
    PUSH_OUT_FAILED,        /* a permanent failure: dead-lettered ("failed") */
    PUSH_OUT_DEFERRED,      /* its provider's concurrency budget was taken: waits as a job */
    PUSH_OUT_EXPIRED,       /* older than NATTER_PUSH_TTL: dropped unsent */
    PUSH_OUT_N              /* count of the above */
};
/* "sent", "retried", "token_removed", "failed", "deferred", "expired". */
const char *push_outcome_name(enum push_outcome o);
/* Providers this worker knows (push_provider_name(0 .. push_providers_n() - 1)). */
size_t push_providers_n(void);
const char *push_provider_name(size_t i);
/* Pushes of provider i with outcome o that this process counted since it
 * started; provider i's calls in flight in this process now. Thread-safe. */
unsigned long long push_count(size_t i, enum push_outcome o);
int push_inflight(size_t i);

/* Loads every provider's keys (main.c, before threads start). 0 or -1. */
int push_providers_init(const struct config *cfg, char **err);

/* Builds the JSON body the webhook and log providers share (owned string). */
char *push_body(const struct push_msg *m);
/* "messages" or "badge". */
const char *push_kind_name(enum push_kind k);
/* The visible text of a messages push ("3 new messages"), into buf. */
const char *push_alert_text(const struct push_msg *m, char *buf, size_t len);

/* ---- push_http.c ---- */

#define PUSH_HTTP_MAX_BODY 65536 /* bytes of a provider's answer kept; more are cut */

struct push_http {
    struct curl_slist *headers; /* request headers (owned) */
    char *body;                 /* the answer, NUL-terminated, at most PUSH_HTTP_MAX_BODY (owned) */
    size_t len;
    long status;
    int64_t retry_after_ms; /* from the answer's Retry-After (seconds or HTTP date), 0 = none */
};

/* Resets w->curl for a POST of body (borrowed, len bytes) to url with
 * h->headers, bounded by NATTER_PUSH_TIMEOUT_MS, TLS checked against
 * NATTER_PUSH_CA_FILE when set, the job kept alive while it runs; performs it
 * and fills h. http2: ask for HTTP/2 (ALPN on https, prior knowledge on
 * http). Returns the curl code. */
CURLcode push_http_post(struct wctx *w, const char *url, const char *body, size_t len, bool http2, struct push_http *h);
void push_http_free(struct push_http *h);
/* Retry-After value (delta seconds or an HTTP date) in ms, 0 if absent or bad;
 * capped at one hour. */
int64_t push_retry_after_ms(const char *value);
/* Whole file at path (at most max bytes), owned and NUL-terminated, or NULL
 * with an owned message in *err naming setting. */
char *push_read_file(const char *setting, const char *path, size_t max, size_t *len, char **err);

#endif
