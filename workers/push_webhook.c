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

/* curl calls this about once a second during a transfer: keep our job */
static int progress(void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
    (void)dlt;
    (void)dln;
    (void)ult;
    (void)uln;
    jobs_keepalive(ud);
    return 0;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

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

static enum push_result webhook_send(struct wctx *w, const struct push_msg *m, char *err, size_t errlen)
{
    enum push_result res = PUSH_RETRY;
    struct curl_slist *hdr = NULL;
    char *body = NULL;
    if (!*w->cfg->push_webhook_url) {
        snprintf(err, errlen, "webhook provider not configured (NATTER_PUSH_WEBHOOK_URL is empty)");
        return PUSH_FAILED;
    }
    body = push_body(m);
    char t[24], mac[65], sig[128], pid[160];
    snprintf(t, sizeof t, "%lld", (long long)time(NULL));
    sign(w->cfg->push_webhook_secret, t, body, mac);
    snprintf(sig, sizeof sig, "X-Natter-Signature: t=%s,v1=%s", t, mac);
    snprintf(pid, sizeof pid, "X-Natter-Push-Id: %s", m->id);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, sig);
    hdr = curl_slist_append(hdr, pid);
    hdr = curl_slist_append(hdr, "Expect:");

    CURL *c = w->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, w->cfg->push_webhook_url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)w->cfg->push_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "natter-worker");
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, w);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "webhook: %s", curl_easy_strerror(cc));
        goto out;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300)
        res = PUSH_OK;
    else if (code == 404 || code == 410)
        res = PUSH_INVALID_TOKEN;
    else if (code == 429 || code >= 500)
        res = PUSH_RETRY;
    else
        res = PUSH_FAILED;
    if (res != PUSH_OK)
        snprintf(err, errlen, "webhook answered HTTP %ld", code);
out:
    curl_slist_free_all(hdr);
    free(body);
    return res;
}

const struct push_provider push_webhook = {"webhook", webhook_send};
