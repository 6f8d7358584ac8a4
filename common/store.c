/*
 * store.c — signed requests from natter to the object store (see store.h).
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

void store_target(const struct config *cfg, struct s3_target *t)
{
    bool embedded = config_embedded_store(cfg);
    t->endpoint = embedded ? cfg->embedded_url : cfg->s3_endpoint;
    t->bucket = cfg->s3_bucket;
    t->region = cfg->s3_region;
    t->access_key = cfg->s3_access_key;
    t->secret_key = cfg->s3_secret_key ? cfg->s3_secret_key : "";
    t->virtual_host = !embedded && strcmp(cfg->s3_addressing, "virtual") == 0;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* Sends a bodiless request on a 60-second pre-signed URL (S3 accepts those for
 * HEAD and DELETE too, so the embedded store needs only one verification
 * path); returns the HTTP status, or -1 (err). */
static long signed_request(CURL *c, const struct s3_target *t, const char *method, const char *key, char *err,
                           size_t errlen)
{
    long code = -1;
    char *url = sigv4_presign(t, method, key, (int64_t)time(NULL), 60, NULL, 0, NULL, 0);
    if (!url) {
        snprintf(err, errlen, "cannot sign the request");
        return -1;
    }
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        snprintf(err, errlen, "object store: %s", curl_easy_strerror(cc));
    else
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    free(url);
    return code;
}

int store_head(CURL *c, const struct s3_target *t, const char *key, int64_t *size, char *err, size_t errlen)
{
    long code = signed_request(c, t, "HEAD", key, err, errlen);
    if (code == 404)
        return 1;
    if (code < 200 || code >= 300) {
        if (code >= 0)
            snprintf(err, errlen, "object store answered HEAD with HTTP %ld", code);
        return -1;
    }
    curl_off_t len = -1;
    curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    *size = (int64_t)len;
    return 0;
}

int store_delete(CURL *c, const struct s3_target *t, const char *key, char *err, size_t errlen)
{
    long code = signed_request(c, t, "DELETE", key, err, errlen);
    if (code == 404 || (code >= 200 && code < 300))
        return 0;
    if (code >= 0)
        snprintf(err, errlen, "object store answered DELETE with HTTP %ld", code);
    return -1;
}
