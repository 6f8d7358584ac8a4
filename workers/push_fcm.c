/*
 * push_fcm.c — Firebase Cloud Messaging, HTTP v1 API.
 *
 * Authentication: the OAuth 2.0 service-account flow. A JWT signed RS256
 * with the service account's private key ({iss: client_email, scope:
 * firebase.messaging, aud: token_uri, iat, exp = iat + 1 h}; header kid =
 * private_key_id) is exchanged at token_uri (grant_type jwt-bearer) for an
 * access token, which every thread of the process shares until shortly before
 * it expires (or until FCM answers 401).
 *
 *   POST <NATTER_PUSH_FCM_URL>/v1/projects/<project_id>/messages:send
 *   Authorization: Bearer <access token>
 *   {"message": {"token", "notification": {title, body} (messages only),
 *                "data": {push_id, kind, chat_id, seq, count, badge} (strings),
 *                "android": {"collapse_key", "ttl": "<s>s", "priority"}}}
 *
 * A badge update is data-only with NORMAL priority (silent). Answers: 200
 * delivered; UNREGISTERED (404), INVALID_ARGUMENT about message.token (400)
 * and SENDER_ID_MISMATCH (403) remove the token; 401 forgets the access token
 * and retries; 429 and 5xx retry honouring Retry-After; anything else is
 * permanent.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <jwt.h>

#include "config.h"
#include "log.h"
#include "push.h"
#include "util.h"
#include "worker.h"

#define FCM_SCOPE "https://www.googleapis.com/auth/firebase.messaging"
#define FCM_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define CREDENTIALS_MAX 65536
#define ASSERTION_LIFETIME_S 3600
#define TOKEN_EARLY_S 300 /* an access token is renewed this long before it expires */

static struct {
    bool enabled;
    char *project_id, *client_email, *private_key, *private_key_id, *token_uri;
    char *send_url;
    pthread_mutex_t mu; /* guards the access token */
    char *access_token; /* owned, NULL = none */
    int64_t renew_at;   /* wall ms */
} fcm = {.mu = PTHREAD_MUTEX_INITIALIZER};

static char *dup_field(json_t *j, const char *name)
{
    const char *v = json_string_value(json_object_get(j, name));
    return v && *v ? xstrdup(v) : NULL;
}

static int fcm_init(const struct config *cfg, char **err)
{
    if (!*cfg->push_fcm_credentials)
        return 0;
    char *text = push_read_file("NATTER_PUSH_FCM_CREDENTIALS", cfg->push_fcm_credentials, CREDENTIALS_MAX, NULL, err);
    if (!text)
        return -1;
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(j)) {
        json_decref(j);
        *err = xasprintf("NATTER_PUSH_FCM_CREDENTIALS: %s is not a JSON object", cfg->push_fcm_credentials);
        return -1;
    }
    fcm.project_id = dup_field(j, "project_id");
    fcm.client_email = dup_field(j, "client_email");
    fcm.private_key = dup_field(j, "private_key");
    fcm.private_key_id = dup_field(j, "private_key_id");
    fcm.token_uri = dup_field(j, "token_uri");
    json_decref(j);
    if (!fcm.token_uri)
        fcm.token_uri = xstrdup(FCM_DEFAULT_TOKEN_URI);
    if (!fcm.project_id || !fcm.client_email || !fcm.private_key) {
        *err = xasprintf("NATTER_PUSH_FCM_CREDENTIALS: %s lacks project_id, client_email or private_key",
                         cfg->push_fcm_credentials);
        return -1;
    }
    if (strncmp(fcm.token_uri, "https://", 8) != 0 && strncmp(fcm.token_uri, "http://", 7) != 0) {
        *err = xasprintf("NATTER_PUSH_FCM_CREDENTIALS: token_uri must be an http(s) URL");
        return -1;
    }
    /* sign once now: a key that cannot sign fails at start-up, not per push */
    jwt_t *t = NULL;
    bool ok = jwt_new(&t) == 0 &&
              jwt_set_alg(t, JWT_ALG_RS256, (const unsigned char *)fcm.private_key, (int)strlen(fcm.private_key)) == 0;
    char *s = ok ? jwt_encode_str(t) : NULL;
    jwt_free(t);
    if (!s) {
        *err = xasprintf("NATTER_PUSH_FCM_CREDENTIALS: private_key is not a usable RSA key");
        return -1;
    }
    free(s);
    fcm.send_url = xasprintf("%s/v1/projects/%s/messages:send", cfg->push_fcm_url, fcm.project_id);
    fcm.enabled = true;
    return 0;
}

/* The signed assertion (owned), or NULL. */
static char *assertion(void)
{
    jwt_t *t = NULL;
    char *s = NULL;
    time_t now = time(NULL);
    if (jwt_new(&t) != 0)
        return NULL;
    if ((fcm.private_key_id && jwt_add_header(t, "kid", fcm.private_key_id) != 0) ||
        jwt_add_grant(t, "iss", fcm.client_email) != 0 || jwt_add_grant(t, "scope", FCM_SCOPE) != 0 ||
        jwt_add_grant(t, "aud", fcm.token_uri) != 0 || jwt_add_grant_int(t, "iat", (long)now) != 0 ||
        jwt_add_grant_int(t, "exp", (long)now + ASSERTION_LIFETIME_S) != 0 ||
        jwt_set_alg(t, JWT_ALG_RS256, (const unsigned char *)fcm.private_key, (int)strlen(fcm.private_key)) != 0)
        goto out;
    s = jwt_encode_str(t);
out:
    jwt_free(t);
    return s;
}

/* fcm.mu held: a valid access token in fcm.access_token, fetched if needed. */
static enum push_result access_token(struct wctx *w, struct push_out *out)
{
    if (fcm.access_token && wall_time_ms() < fcm.renew_at)
        return PUSH_OK;
    free(fcm.access_token);
    fcm.access_token = NULL;
    char *jwt = assertion();
    if (!jwt) {
        snprintf(out->err, out->errlen, "fcm: cannot sign the OAuth assertion");
        return PUSH_FAILED;
    }
    char *esc = curl_easy_escape(w->curl, jwt, 0);
    char *form = xasprintf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", esc);
    curl_free(esc);
    free(jwt);
    struct push_http h = {0};
    h.headers = curl_slist_append(h.headers, "Content-Type: application/x-www-form-urlencoded");
    h.headers = curl_slist_append(h.headers, "Expect:");
    enum push_result res = PUSH_RETRY;
    CURLcode cc = push_http_post(w, fcm.token_uri, form, strlen(form), false, &h);
    free(form);
    if (cc != CURLE_OK) {
        snprintf(out->err, out->errlen, "fcm token endpoint: %s", curl_easy_strerror(cc));
        goto out;
    }
    if (h.status != 200) {
        res = h.status == 429 || h.status >= 500 ? PUSH_RETRY : PUSH_FAILED;
        out->retry_after_ms = h.retry_after_ms;
        snprintf(out->err, out->errlen, "fcm token endpoint answered HTTP %ld: %.120s", h.status, h.body);
        goto out;
    }
    json_t *j = json_loads(h.body, 0, NULL);
    const char *tok = json_string_value(json_object_get(j, "access_token"));
    json_int_t ttl = json_integer_value(json_object_get(j, "expires_in"));
    if (tok && *tok && strlen(tok) < 4096 && ttl > 0) {
        fcm.access_token = xstrdup(tok);
        int64_t early = ttl > 2 * TOKEN_EARLY_S ? TOKEN_EARLY_S : ttl / 2;
        fcm.renew_at = wall_time_ms() + ((int64_t)ttl - early) * 1000;
        res = PUSH_OK;
    } else {
        snprintf(out->err, out->errlen, "fcm token endpoint: no access_token/expires_in in its answer");
    }
    json_decref(j);
out:
    push_http_free(&h);
    return res;
}

static json_t *message_json(const struct push_msg *m)
{
    char b[24], c[24], s[24], n[24], ttl[32], text[64];
    int64_t left = m->expires_at - (int64_t)time(NULL);
    snprintf(ttl, sizeof ttl, "%llds", (long long)(left > 0 ? left : 0));
    json_t *data = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "push_id", m->id, "kind", push_kind_name(m->kind), "chat_id",
                             i64s(c, m->chat_id), "seq", i64s(s, m->seq), "count", i64s(n, m->count), "badge",
                             i64s(b, m->badge));
    json_t *android = json_pack("{s:s,s:s,s:s}", "collapse_key", m->kind == PUSH_BADGE ? "badge" : "messages", "ttl",
                                ttl, "priority", m->kind == PUSH_BADGE ? "NORMAL" : "HIGH");
    json_t *msg = json_pack("{s:s,s:o,s:o}", "token", m->token, "data", data, "android", android);
    if (m->kind == PUSH_MESSAGES)
        json_object_set_new(msg, "notification",
                            json_pack("{s:s,s:s}", "title", "Natter", "body", push_alert_text(m, text, sizeof text)));
    return json_pack("{s:o}", "message", msg);
}

/* What an error answer says: google.rpc status and the FCM error code. */
static void error_codes(const char *body, char *status, char *code, bool *token_field)
{
    *status = *code = '\0';
    *token_field = false;
    json_t *j = json_loads(body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *st = json_string_value(json_object_get(e, "status"));
    if (st)
        snprintf(status, 48, "%s", st);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(e, "details"), i, d) {
        const char *ec = json_string_value(json_object_get(d, "errorCode"));
        if (ec)
            snprintf(code, 48, "%s", ec);
        size_t k;
        json_t *v;
        json_array_foreach(json_object_get(d, "fieldViolations"), k, v) {
            const char *f = json_string_value(json_object_get(v, "field"));
            if (f && strcmp(f, "message.token") == 0)
                *token_field = true;
        }
    }
    json_decref(j);
}

static enum push_result fcm_send(struct wctx *w, const struct push_msg *m, struct push_out *out)
{
    if (!fcm.enabled) {
        snprintf(out->err, out->errlen, "fcm provider not configured (NATTER_PUSH_FCM_CREDENTIALS is empty)");
        return PUSH_FAILED;
    }
    char auth[4200];
    pthread_mutex_lock(&fcm.mu);
    enum push_result res = access_token(w, out);
    if (res == PUSH_OK)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", fcm.access_token);
    pthread_mutex_unlock(&fcm.mu);
    if (res != PUSH_OK)
        return res;
    json_t *j = message_json(m);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct push_http h = {0};
    h.headers = curl_slist_append(h.headers, "Content-Type: application/json; charset=UTF-8");
    h.headers = curl_slist_append(h.headers, auth);
    h.headers = curl_slist_append(h.headers, "Expect:");
    res = PUSH_RETRY;
    CURLcode cc = push_http_post(w, fcm.send_url, body, strlen(body), false, &h);
    free(body);
    if (cc != CURLE_OK) {
        snprintf(out->err, out->errlen, "fcm: %s", curl_easy_strerror(cc));
        goto out;
    }
    if (h.status == 200) {
        res = PUSH_OK;
        goto out;
    }
    char status[48], code[48];
    bool token_field;
    error_codes(h.body, status, code, &token_field);
    if (h.status == 404 || strcmp(code, "UNREGISTERED") == 0 || strcmp(code, "SENDER_ID_MISMATCH") == 0 ||
        (h.status == 400 && token_field))
        res = PUSH_INVALID_TOKEN;
    else if (h.status == 401) {
        pthread_mutex_lock(&fcm.mu); /* the access token was refused: the next call fetches another */
        free(fcm.access_token);
        fcm.access_token = NULL;
        pthread_mutex_unlock(&fcm.mu);
        res = PUSH_RETRY;
    } else if (h.status == 429 || h.status >= 500)
        res = PUSH_RETRY;
    else
        res = PUSH_FAILED;
    out->retry_after_ms = h.retry_after_ms;
    snprintf(out->err, out->errlen, "fcm answered HTTP %ld %s %s", h.status, *status ? status : "-",
             *code ? code : "-");
out:
    push_http_free(&h);
    return res;
}

const struct push_provider push_fcm = {"fcm", fcm_init, fcm_send};
