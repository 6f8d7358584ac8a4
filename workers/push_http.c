/*
 * push_http.c — what the HTTP push providers share (see push.h): one POST on
 * the thread's curl handle with a bounded answer, Retry-After, key files.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "push.h"
#include "util.h"
#include "worker.h"

#define RETRY_AFTER_MAX_MS 3600000

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

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    struct push_http *h = ud;
    size_t bytes = size * n, room = PUSH_HTTP_MAX_BODY - h->len;
    size_t take = bytes < room ? bytes : room; /* the rest is dropped, the transfer goes on */
    if (take) {
        memcpy(h->body + h->len, p, take);
        h->len += take;
        h->body[h->len] = '\0';
    }
    return bytes;
}

static size_t header_line(char *p, size_t size, size_t n, void *ud)
{
    struct push_http *h = ud;
    size_t bytes = size * n;
    static const char name[] = "retry-after:";
    if (bytes > sizeof name - 1 && bytes < 256 && strncasecmp(p, name, sizeof name - 1) == 0) {
        char v[256];
        memcpy(v, p + sizeof name - 1, bytes - (sizeof name - 1));
        v[bytes - (sizeof name - 1)] = '\0';
        h->retry_after_ms = push_retry_after_ms(v);
    }
    return bytes;
}

int64_t push_retry_after_ms(const char *value)
{
    while (*value == ' ' || *value == '\t')
        value++;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", value);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\r' || buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (!n)
        return 0;
    int64_t ms = 0, secs;
    if (parse_i64(buf, &secs)) {
        ms = secs > 0 ? (secs > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS : secs * 1000) : 0;
    } else {
        time_t at = curl_getdate(buf, NULL);
        if (at > 0)
            ms = ((int64_t)at - (int64_t)time(NULL)) * 1000;
    }
    if (ms < 0)
        ms = 0;
    return ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
}

CURLcode push_http_post(struct wctx *w, const char *url, const char *body, size_t len, bool http2, struct push_http *h)
{
    h->body = xmalloc(PUSH_HTTP_MAX_BODY + 1);
    h->body[0] = '\0';
    h->len = 0;
    h->status = 0;
    h->retry_after_ms = 0;
    CURL *c = w->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)w->cfg->push_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_line);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "natter-worker");
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, w);
    if (*w->cfg->push_ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, w->cfg->push_ca_file);
    if (http2)
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
                         strncmp(url, "https:", 6) == 0 ? (long)CURL_HTTP_VERSION_2TLS
                                                        : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &h->status);
    return cc;
}

void push_http_free(struct push_http *h)
{
    curl_slist_free_all(h->headers);
    free(h->body);
    h->headers = NULL;
    h->body = NULL;
}

char *push_read_file(const char *setting, const char *path, size_t max, size_t *len, char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = xasprintf("%s: cannot read %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(max + 1);
    size_t n = fread(buf, 1, max + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || n > max || n == 0) {
        *err = xasprintf("%s: %s is %s", setting, path, bad ? "unreadable" : n ? "too large" : "empty");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}
