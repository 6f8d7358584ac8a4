/*
 * wake.h — a committed inbox event on its way to waiting long-polls.
 *
 * The writer of an inbox row knows the event it wrote; instead of telling the
 * polls only "user U has seq S" (after which each of them would read the
 * inbox from PostgreSQL), the wake-up carries the event itself:
 *
 *   struct wake { user, seq, ev }   ev: the event without its seq, or NULL
 *
 * An event body (struct evbody) is the event's JSON text minus the leading
 * `{"seq":N,` — `"type":"message","chat_id":7,"created_at":"…","data":{…}}`
 * — so that one body serves every recipient of a fan-out (only the seq
 * differs) and a poll answer is built by concatenation, without parsing.
 * Bodies are immutable and reference counted (any thread).
 *
 * A body is bounded (evbody_set_max, NATTER_WAKE_EVENT_MAX): a bigger event
 * travels as an id-only wake (ev NULL) and the poll reads it from the
 * database. Correctness never depends on the body being there.
 */
#ifndef NATTER_WAKE_H
#define NATTER_WAKE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the poll acks of an event need to know (acks.h): a `message` event's
 * message (its seq in its chat, its sender, 0 for a system message), or that
 * the event carries no message (mseq 0). */
struct evmeta {
    int64_t mseq, sender;
};

struct evbody {
    atomic_uint refs;
    uint32_t len;    /* of text, without the NUL */
    bool meta;       /* mseq and sender are known (false: a message event whose message is not) */
    int64_t chat_id; /* 0: none */
    int64_t mseq, sender;
    char text[]; /* `"type":…,"data":…}` (NUL-terminated) */
};

struct wake {
    int64_t user, seq;
    struct evbody *ev; /* a reference, or NULL (id-only) */
};

/* Largest body accepted (bytes of text); 0 makes every wake id-only. */
void evbody_set_max(size_t max);
size_t evbody_max(void);
/* A body from its parts: type is a plain identifier, chat_id 0 writes null,
 * created_at an RFC 3339 string, data (data_len bytes) a JSON value, meta
 * NULL when not known. NULL when it would exceed the bound. Returns one
 * reference. */
struct evbody *evbody_new(const char *type, int64_t chat_id, const char *created_at, const char *data, size_t data_len,
                          const struct evmeta *meta);
/* A body from its text as another instance published it; NULL when empty
 * or past the bound. The text is trusted to be a body (it came from a
 * natter-api through Redis). Returns one reference. */
struct evbody *evbody_from_text(const char *text, size_t len, int64_t chat_id, const struct evmeta *meta);
/* NULL-safe */
struct evbody *evbody_ref(struct evbody *b);
void evbody_unref(struct evbody *b);

/* Drops the references of n wakes (not the array). */
void wakes_unref(struct wake *w, size_t n);

/*
 * Wake-ups between instances travel as a text frame rather than JSON, so
 * that event bodies (JSON already) go as they are, without escaping or
 * re-parsing:
 *
 *   W <instance id>\n
 *   <bodies> <wakes>\n
 *   <length> <chat> <mseq|-1> <sender>\n<body bytes>\n    once per body
 *   <user> <seq> <body index|-1>\n                        once per wake
 *
 * (mseq -1: the body's evmeta is not known.)
 *
 * A body shared by consecutive wakes (one message fanned out to a group) is
 * sent once; bodies past max_bodies bytes in all go id-only (-1).
 */
/* The frame of n wakes from instance: owned text of *len bytes. */
char *wakes_encode(const char *instance, const struct wake *w, size_t n, size_t max_bodies, size_t *len);
/* Parses a frame: *instance (borrowed from text, *ilen bytes) and *out, an
 * owned array of the wakes, each holding a body reference (wakes_unref, then
 * free). Returns how many, or -1 when the frame is malformed (nothing out). */
long wakes_decode(const char *text, size_t len, const char **instance, size_t *ilen, struct wake **out);

#endif
