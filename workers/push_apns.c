/*
 * push_apns.c — Apple Push Notification service, HTTP/2 with token-based
 * authentication.
 *
 *   POST <NATTER_PUSH_APNS_URL>/3/device/<device token>   (HTTP/2)
 *   authorization: bearer <JWT ES256 {kid} {iss: team id, iat}>
 *   apns-topic: <bundle id>        apns-push-type: alert | background
 *   apns-priority: 10 | 5          apns-expiration: <unix seconds>
 *   apns-collapse-id: messages | badge
 *   {"aps": {"alert": {title, body}, "badge", "sound"} | {"content-available": 1, "badge"},
 *    "natter": {push_id, kind, chat_id, seq, count}}
 *
 * The provider JWT is shared by every thread of the process and reused for
 * 50 minutes (Apple refuses tokens older than an hour and throttles fresh ones
 * more often than every 20 minutes), or until APNs says ExpiredProviderToken.
 * Answers: 200 delivered; 410 Unregistered, 400 BadDeviceToken and 400
 * DeviceTokenNotForTopic remove the token; 429 and 5xx retry (Retry-After when
 * given); anything else is permanent.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <jwt.h>

#include "config.h"
#include "push.h"
#include "util.h"
#include "worker.h"

#define KEY_MAX 16384
#define JWT_REUSE_S 3000

static struct {
    bool enabled;
    char *key; /* PEM, owned */
    size_t keylen;
    pthread_mutex_t mu; /* guards the JWT */
    char *jwt;          /* owned, NULL = none */
    time_t jwt_iat;
} apns = {.mu = PTHREAD_MUTEX_INITIALIZER};

static char *sign(const struct config *cfg, time_t iat)
{
    jwt_t *t = NULL;
    char *s = NULL;
    if (jwt_new(&t) != 0)
        return NULL;
    if (jwt_add_header(t, "kid", cfg->push_apns_key_id) == 0 && jwt_add_grant(t, "iss", cfg->push_apns_team_id) == 0 &&
        jwt_add_grant_int(t, "iat", (long)iat) == 0 &&
        jwt_set_alg(t, JWT_ALG_ES256, (const unsigned char *)apns.key, (int)apns.keylen) == 0)
        s = jwt_encode_str(t);
    jwt_free(t);
    return s;
}

static int apns_init(const struct config *cfg, char **err)
{
    if (!*cfg->push_apns_key_file)
        return 0;
    apns.key = push_read_file("NATTER_PUSH_APNS_KEY_FILE", cfg->push_apns_key_file, KEY_MAX, &apns.keylen, err);
    if (!apns.key)
        return -1;
    char *s = sign(cfg, time(NULL)); /* a key that cannot sign fails at start-up */
    if (!s) {
        *err = xasprintf("NATTER_PUSH_APNS_KEY_FILE: %s is not a usable P-256 key (PEM)", cfg->push_apns_key_file);
        return -1;
    }
    free(s);
    apns.enabled = true;
    return 0;
}

/* "authorization: bearer <jwt>" into buf; false when the key cannot sign. */
static bool bearer(const struct config *cfg, char *buf, size_t len)
{
    pthread_mutex_lock(&apns.mu);
    time_t now = time(NULL);
    if (!apns.jwt || now - apns.jwt_iat >= JWT_REUSE_S || now < apns.jwt_iat) {
        free(apns.jwt);
        apns.jwt = sign(cfg, now);
        apns.jwt_iat = now;
    }
    bool ok = apns.jwt != NULL;
    if (ok)
        snprintf(buf, len, "authorization: bearer %s", apns.jwt);
    pthread_mutex_unlock(&apns.mu);
    return ok;
}

static void forget_jwt(void)
{
    pthread_mutex_lock(&apns.mu);
    free(apns.jwt);
    apns.jwt = NULL;
    pthread_mutex_unlock(&apns.mu);
}

static json_t *payload(const struct push_msg *m)
{
    char text[64];
    json_t *aps = m->kind == PUSH_BADGE ? json_pack("{s:i,s:I}", "content-available", 1, "badge", (json_int_t)m->badge)
                                        : json_pack("{s:{s:s,s:s},s:I,s:s}", "alert", "title", "Natter", "body",
                                                    push_alert_text(m, text, sizeof text), "badge",
                                                    (json_int_t)m->badge, "sound", "default");
    return json_pack("{s:o,s:{s:s,s:s,s:I,s:I,s:I}}", "aps", aps, "natter", "push_id", m->id, "kind",
                     push_kind_name(m->kind), "chat_id", (json_int_t)m->chat_id, "seq", (json_int_t)m->seq, "count",
                     (json_int_t)m->count);
}

static enum push_result apns_send(struct wctx *w, const struct push_msg *m, struct push_out *out)
{
    const struct config *cfg = w->cfg;
    if (!apns.enabled) {
        snprintf(out->err, out->errlen, "apns provider not configured (NATTER_PUSH_APNS_KEY_FILE is empty)");
        return PUSH_FAILED;
    }
    if (!apns_token_valid(m->token)) { /* the API checks it too; an old row may not be */
        snprintf(out->err, out->errlen, "apns: the device token is not hex");
        return PUSH_INVALID_TOKEN;
    }
    char auth[1024], line[512];
    if (!bearer(cfg, auth, sizeof auth)) {
        snprintf(out->err, out->errlen, "apns: cannot sign the provider token");
        return PUSH_FAILED;
    }
    struct push_http h = {0};
    h.headers = curl_slist_append(h.headers, auth);
    snprintf(line, sizeof line, "apns-topic: %s", cfg->push_apns_topic);
    h.headers = curl_slist_append(h.headers, line);
    h.headers = curl_slist_append(h.headers,
                                  m->kind == PUSH_BADGE ? "apns-push-type: background" : "apns-push-type: alert");
    h.headers = curl_slist_append(h.headers, m->kind == PUSH_BADGE ? "apns-priority: 5" : "apns-priority: 10");
    snprintf(line, sizeof line, "apns-expiration: %lld", (long long)m->expires_at);
    h.headers = curl_slist_append(h.headers, line);
    h.headers = curl_slist_append(h.headers,
                                  m->kind == PUSH_BADGE ? "apns-collapse-id: badge" : "apns-collapse-id: messages");
    h.headers = curl_slist_append(h.headers, "Content-Type: application/json");
    h.headers = curl_slist_append(h.headers, "Expect:");
    json_t *j = payload(m);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    char *url = xasprintf("%s/3/device/%s", cfg->push_apns_url, m->token);
    enum push_result res = PUSH_RETRY;
    CURLcode cc = push_http_post(w, url, body, strlen(body), true, &h);
    free(url);
    free(body);
    if (cc != CURLE_OK) {
        snprintf(out->err, out->errlen, "apns: %s", curl_easy_strerror(cc));
        goto out;
    }
    if (h.status == 200) {
        res = PUSH_OK;
        goto out;
    }
    json_t *e = json_loads(h.body, 0, NULL);
    char reason[64];
    const char *rs = json_string_value(json_object_get(e, "reason"));
    snprintf(reason, sizeof reason, "%s", rs ? rs : "-");
    json_decref(e);
    if (h.status == 410 ||
        (h.status == 400 && (strcmp(reason, "BadDeviceToken") == 0 || strcmp(reason, "DeviceTokenNotForTopic") == 0)))
        res = PUSH_INVALID_TOKEN;
    else if (h.status == 403 && strcmp(reason, "ExpiredProviderToken") == 0) {
        forget_jwt();
        res = PUSH_RETRY;
    } else if (h.status == 429 || h.status >= 500)
        res = PUSH_RETRY;
    else
        res = PUSH_FAILED;
    out->retry_after_ms = h.retry_after_ms;
    snprintf(out->err, out->errlen, "apns answered HTTP %ld %s", h.status, reason);
out:
    push_http_free(&h);
    return res;
}

const struct push_provider push_apns = {"apns", apns_init, apns_send};
