/*
 * push.h — push providers. A provider is one file (push_webhook.c,
 * push_log.c; FCM and APNs later) exporting a struct push_provider.
 */
#ifndef NATTER_PUSH_H
#define NATTER_PUSH_H

#include <stddef.h>
#include <stdint.h>

struct wctx;

enum push_result {
    PUSH_OK,            /* delivered to the provider */
    PUSH_RETRY,         /* 429, 5xx, timeout, connection error */
    PUSH_INVALID_TOKEN, /* the provider says the token is gone (404/410): drop it */
    PUSH_FAILED,        /* permanent (other 4xx, misconfiguration): dead letter */
};

struct push_msg {
    const char *id; /* stable across retries: receivers de-duplicate on it */
    int64_t user_id, device_id;
    const char *token, *platform;
    int64_t count;        /* messages coalesced into this push */
    int64_t chat_id, seq; /* the newest of them */
    int64_t badge;        /* the user's total unread count */
};

struct push_provider {
    const char *name; /* devices.push_provider */
    enum push_result (*send)(struct wctx *w, const struct push_msg *m, char *err, size_t errlen);
};

extern const struct push_provider push_webhook;
extern const struct push_provider push_log;

/* Builds the JSON body every provider shares (owned string). */
char *push_body(const struct push_msg *m);

#endif
