/*
 * wake.c — event bodies (see wake.h).
 */
#include "wake.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"
#include "util.h"

static atomic_size_t max_len = 8192;

void evbody_set_max(size_t max)
{
    atomic_store(&max_len, max);
}

size_t evbody_max(void)
{
    return atomic_load(&max_len);
}

static struct evbody *alloc_body(size_t len, int64_t chat_id, const struct evmeta *meta)
{
    struct evbody *b = xmalloc(sizeof *b + len + 1);
    atomic_init(&b->refs, 1);
    b->len = (uint32_t)len;
    b->chat_id = chat_id;
    b->meta = meta != NULL;
    b->mseq = meta ? meta->mseq : 0;
    b->sender = meta ? meta->sender : 0;
    return b;
}

struct evbody *evbody_new(const char *type, int64_t chat_id, const char *created_at, const char *data, size_t data_len,
                          const struct evmeta *meta)
{
    char head[160];
    int n = chat_id
                ? snprintf(head, sizeof head, "\"type\":\"%s\",\"chat_id\":%lld,\"created_at\":\"%s\",\"data\":", type,
                           (long long)chat_id, created_at)
                : snprintf(head, sizeof head, "\"type\":\"%s\",\"chat_id\":null,\"created_at\":\"%s\",\"data\":", type,
                           created_at);
    if (n < 0 || (size_t)n >= sizeof head)
        return NULL;
    size_t len = (size_t)n + data_len + 1;
    if (len > evbody_max())
        return NULL;
    struct evbody *b = alloc_body(len, chat_id, meta);
    memcpy(b->text, head, (size_t)n);
    memcpy(b->text + n, data, data_len);
    b->text[len - 1] = '}';
    b->text[len] = '\0';
    return b;
}

struct evbody *evbody_from_text(const char *text, size_t len, int64_t chat_id, const struct evmeta *meta)
{
    if (len == 0 || len > evbody_max() || len > UINT32_MAX)
        return NULL;
    struct evbody *b = alloc_body(len, chat_id, meta);
    memcpy(b->text, text, len);
    b->text[len] = '\0';
    return b;
}

struct evbody *evbody_ref(struct evbody *b)
{
    if (b)
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void evbody_unref(struct evbody *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

void wakes_unref(struct wake *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        evbody_unref(w[i].ev);
        w[i].ev = NULL;
    }
}

char *wakes_encode(const char *instance, const struct wake *w, size_t n, size_t max_bodies, size_t *len)
{
    struct strbuf bodies = {0}, tail = {0}, msg = {0};
    const struct evbody **sent = xmalloc((n ? n : 1) * sizeof *sent);
    size_t nbodies = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct evbody *ev = w[i].ev;
        long idx = -1;
        if (ev) {
            /* a fan-out's wakes share their body and come one after another */
            for (size_t k = nbodies; k > 0 && nbodies - k < 8; k--)
                if (sent[k - 1] == ev) {
                    idx = (long)k - 1;
                    break;
                }
            if (idx < 0 && bytes + ev->len <= max_bodies) {
                idx = (long)nbodies;
                sent[nbodies++] = ev;
                bytes += ev->len;
                strbuf_printf(&bodies, "%u %lld %lld %lld\n", ev->len, (long long)ev->chat_id,
                              ev->meta ? (long long)ev->mseq : -1LL, ev->meta ? (long long)ev->sender : 0LL);
                strbuf_addn(&bodies, ev->text, ev->len);
                strbuf_add(&bodies, "\n");
            }
        }
        strbuf_printf(&tail, "%lld %lld %ld\n", (long long)w[i].user, (long long)w[i].seq, idx);
    }
    free(sent);
    strbuf_printf(&msg, "W %s\n%zu %zu\n", instance, nbodies, n);
    if (bodies.buf)
        strbuf_addn(&msg, bodies.buf, bodies.len);
    if (tail.buf)
        strbuf_addn(&msg, tail.buf, tail.len);
    free(bodies.buf);
    free(tail.buf);
    return strbuf_take(&msg, len);
}

/* Reads "<decimal><sep>" at *p (before end). */
static bool frame_num(const char **p, const char *end, char sep, long long *out)
{
    char *stop;
    if (*p >= end || !((**p >= '0' && **p <= '9') || **p == '-'))
        return false;
    errno = 0;
    *out = strtoll(*p, &stop, 10);
    if (stop == *p || stop >= end || *stop != sep || errno)
        return false;
    *p = stop + 1;
    return true;
}

long wakes_decode(const char *text, size_t len, const char **instance, size_t *ilen, struct wake **out)
{
    const char *p = text, *end = text + len;
    const char *nl = memchr(text, '\n', len);
    *out = NULL;
    if (len < 3 || text[0] != 'W' || text[1] != ' ' || !nl)
        return -1;
    *instance = text + 2;
    *ilen = (size_t)(nl - text - 2);
    p = nl + 1;
    long long nb, nw;
    /* every body and wake takes at least 2 bytes: the counts are bounded by len */
    if (!frame_num(&p, end, ' ', &nb) || !frame_num(&p, end, '\n', &nw) || nb < 0 || nw < 0 || nb > nw ||
        nw > (long long)len / 2)
        return -1;
    struct evbody **bodies = xcalloc((size_t)nb + 1, sizeof *bodies);
    struct wake *w = xmalloc(((size_t)nw + 1) * sizeof *w);
    long k = 0;
    bool ok = true;
    for (long long i = 0; ok && i < nb; i++) {
        long long blen, chat, mseq, sender;
        ok = frame_num(&p, end, ' ', &blen) && frame_num(&p, end, ' ', &chat) && frame_num(&p, end, ' ', &mseq) &&
             frame_num(&p, end, '\n', &sender) && blen > 0 && blen < end - p && p[blen] == '\n' && mseq >= -1;
        if (ok) {
            struct evmeta m = {mseq, sender};
            /* NULL past our own bound: id-only */
            bodies[i] = evbody_from_text(p, (size_t)blen, chat, mseq >= 0 ? &m : NULL);
            p += blen + 1;
        }
    }
    for (long long i = 0; ok && i < nw; i++) {
        long long u, seq, idx;
        ok = frame_num(&p, end, ' ', &u) && frame_num(&p, end, ' ', &seq) && frame_num(&p, end, '\n', &idx) &&
             idx >= -1 && idx < nb && u > 0 && seq > 0;
        if (ok)
            w[k++] = (struct wake){u, seq, idx >= 0 ? evbody_ref(bodies[idx]) : NULL};
    }
    ok = ok && p == end;
    for (long long i = 0; i < nb; i++)
        evbody_unref(bodies[i]);
    free(bodies);
    if (!ok) {
        wakes_unref(w, (size_t)k);
        free(w);
        return -1;
    }
    *out = w;
    return k;
}
