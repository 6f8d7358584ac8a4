/*
 * webapp.c — serves the embedded web client and API reference (webapp.h).
 *
 * Files are revalidated rather than cached blind (Cache-Control: no-cache with
 * a strong ETag; If-None-Match answers 304), so a new natter-api build is
 * picked up on the next load. HTML pages carry a Content-Security-Policy: the
 * page runs only its own scripts and loads nothing from elsewhere, except
 * that it may talk to a natter-api and an object store on another origin
 * (connect-src, img-src: the app can be pointed at another server, and
 * attachment URLs name the store's public address).
 */
#include "webapp.h"

#include <string.h>
#include <strings.h>

#include "http.h"

/* 'unsafe-inline' styles: Redoc (the /docs page) injects its CSS at run time;
 * blob: workers: Redoc's search index runs in one */
static const char csp[] =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob: http: https:; connect-src 'self' http: https:; "
    "worker-src 'self' blob:; font-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

static const struct web_file *files;
static unsigned long nfiles;

void webapp_init(const struct web_file *table, unsigned long count)
{
    files = table;
    nfiles = count;
}

static const struct web_file *find(const char *path)
{
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    else if (strcmp(path, "/docs") == 0) /* not "/docs/": the page's relative links assume "/" */
        path = "/docs.html";
    for (unsigned long i = 0; i < nfiles; i++)
        if (strcmp(files[i].path, path) == 0)
            return &files[i];
    return NULL;
}

/* If-None-Match lists the ETag (or is "*"): RFC 9110 13.1.2, weak comparison */
static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    size_t n = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

bool webapp_serve(struct req *r)
{
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
        return false;
    const struct web_file *f = find(r->path);
    if (!f)
        return false;
    r->label = "web"; /* one metrics/log label for every file */
    req_add_header(r, "ETag", f->etag);
    req_add_header(r, "Cache-Control", "no-cache");
    req_add_header(r, "X-Content-Type-Options", "nosniff");
    if (strncmp(f->content_type, "text/html", 9) == 0) {
        req_add_header(r, "Content-Security-Policy", csp);
        req_add_header(r, "Referrer-Policy", "no-referrer");
    }
    if (etag_matches(req_header(r, "If-None-Match"), f->etag)) {
        reply_text(r, 304, NULL, "", 0, false);
        return true;
    }
    reply_text(r, 200, f->content_type, (const char *)f->data, f->len, false);
    return true;
}
