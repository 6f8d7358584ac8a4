/*
 * blobstore.h — natter-api's embedded, S3-compatible object store (the
 * default when NATTER_S3_ENDPOINT is empty). It answers path-style requests
 * /<bucket>/<key> carrying a SigV4 pre-signed query, verified exactly as S3
 * would (signature, credential scope, expiry, signed headers), and keeps
 * objects under NATTER_BLOB_DIR.
 *
 * http.c calls it from the multi-call protocol:
 *   blob_claims   first call: is this a store request? (path under /<bucket>/)
 *   blob_begin    first call: verify; for PUT open a temp file and stream the
 *                 body into it (never the whole object in memory)
 *   blob_write    each body chunk
 *   blob_finish   last call: PUT fsyncs and renames into place atomically;
 *                 GET/HEAD answer from the file; DELETE unlinks
 * The request's cleanup (req_defer) closes and removes a temp file left
 * behind by an upload that did not finish.
 */
#ifndef NATTER_BLOBSTORE_H
#define NATTER_BLOBSTORE_H

#include <stdbool.h>
#include <stddef.h>

struct app;
struct req;

/* Prepares the data directory; 0 or -1 (logged). */
int blob_init(struct app *a);
bool blob_claims(struct app *a, const char *path);
void blob_begin(struct req *r);
/* 0, or -1 when the body must be discarded (a reply is already decided) */
int blob_write(struct req *r, const char *data, size_t n);
void blob_finish(struct req *r);

#endif
