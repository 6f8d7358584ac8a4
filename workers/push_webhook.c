/*
 * push_webhook.c — the webhook provider: an HMAC-signed JSON POST.
 *
 *   X-Natter-Push-Id:   <push id> (the same on every retry)
 *   X-Natter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
 *
 * Receivers recompute the HMAC over the raw body and reject stale t values
 * (replays). 2xx = delivered, 404/410 = token gone, 429/5xx/network = retry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#include "push.h"
#include "util.h"
#include "worker.h"

/* hex HMAC-SHA256(secret, "<t>." + body) */
static void sign(const char *secret, const char *t, const char *body, char out[65])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)t, strlen(t));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(out, 65, mac, sizeof mac);
}

static enum push_result webhook_send(struct wctx *w, const struct push_msg *m, struct push_out *out)
{
    enum push_result res = PUSH_RETRY;
    struct push_http h = {0};
    char *body = NULL;
    if (!*w->cfg->push_webhook_url) {
        snprintf(out->err, out->errlen, "webhook provider not configured (NATTER_PUSH_WEBHOOK_URL is empty)");
        return PUSH_FAILED;
    }
    body = push_body(m);
    char t[24], mac[65], sig[128], pid[160];
    snprintf(t, sizeof t, "%lld", (long long)time(NULL));
    sign(w->cfg->push_webhook_secret, t, body, mac);
    snprintf(sig, sizeof sig, "X-Natter-Signature: t=%s,v1=%s", t, mac);
    snprintf(pid, sizeof pid, "X-Natter-Push-Id: %s", m->id);
    h.headers = curl_slist_append(h.headers, "Content-Type: application/json");
    h.headers = curl_slist_append(h.headers, sig);
    h.headers = curl_slist_append(h.headers, pid);
    h.headers = curl_slist_append(h.headers, "Expect:");
    CURLcode cc = push_http_post(w, w->cfg->push_webhook_url, body, strlen(body), false, &h);
    if (cc != CURLE_OK) {
        snprintf(out->err, out->errlen, "webhook: %s", curl_easy_strerror(cc));
        goto out;
    }
    if (h.status >= 200 && h.status < 300)
        res = PUSH_OK;
    else if (h.status == 404 || h.status == 410)
        res = PUSH_INVALID_TOKEN;
    else if (h.status == 429 || h.status >= 500)
        res = PUSH_RETRY;
    else
        res = PUSH_FAILED;
    if (res != PUSH_OK) {
        out->retry_after_ms = h.retry_after_ms;
        snprintf(out->err, out->errlen, "webhook answered HTTP %ld", h.status);
    }
out:
    push_http_free(&h);
    free(body);
    return res;
}

const struct push_provider push_webhook = {"webhook", NULL, webhook_send};
