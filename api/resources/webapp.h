/*
 * webapp.h — the web client (web/) and the API reference page, built into
 * natter-api (scripts/embed-web.sh generates the table at build time) and
 * served at their paths: `/` is web/index.html, `/docs` web/docs.html, every
 * other file at "/" + its path under web/.
 *
 * Only the embedded set is served (an exact match on the path, so nothing
 * outside it can be named: no traversal, no file system access), only to GET
 * and HEAD, and only for paths no API route claims: the transport asks
 * webapp_serve when routing found nothing, so the API's own 404 and 405
 * answers stay as they are.
 */
#ifndef NATTER_WEBAPP_H
#define NATTER_WEBAPP_H

#include <stdbool.h>

struct req;

struct web_file {
    const char *path;          /* URL path, e.g. "/app/main.js" */
    const char *content_type;  /* e.g. "text/javascript; charset=utf-8" */
    const char *etag;          /* strong ETag, quoted */
    const unsigned char *data; /* the bytes (NUL-terminated) */
    unsigned long len;
};

extern const struct web_file natter_web[];
extern const unsigned long natter_web_count;

/* Sets the table webapp_serve answers from (borrowed for the process
 * lifetime); without it nothing is served. */
void webapp_init(const struct web_file *files, unsigned long count);

/* The transport's fallback for a request no route matched: answers GET or
 * HEAD of an embedded file (200, or 304 for a matching If-None-Match) and
 * returns true; returns false, replying nothing, for anything else. */
bool webapp_serve(struct req *r);

#endif
