/*
 * blobstore.h — natter-api's embedded, S3-compatible object store (the
 * default when NATTER_S3_ENDPOINT is empty). It answers path-style requests
 * /<bucket>/<key> carrying a SigV4 pre-signed query, verified exactly as S3
 * would (signature, credential scope, expiry, signed headers), and keeps
 * objects under NATTER_BLOB_DIR.
 *
 * It is the transport's raw handler (http.h), called from the multi-call
 * protocol:
 *   claims   first call: is this a store request? (path under /<bucket>/)
 *   begin    first call: verify; for PUT open a temp file and stream the
 *            body into it (never the whole object in memory)
 *   write    each body chunk
 *   finish   last call: PUT fsyncs and renames into place atomically;
 *            GET/HEAD answer from the file; DELETE unlinks
 * The request's cleanup (req_defer) closes and removes a temp file left
 * behind by an upload that did not finish.
 */
#ifndef NATTER_BLOBSTORE_H
#define NATTER_BLOBSTORE_H

#include <stdint.h>

#include "http.h"

struct config;

/* Prepares the data directory; 0 or -1 (logged). cfg must outlive the store. */
int blob_init(const struct config *cfg);
/* natter-api's own look at an object of its embedded store, with no HTTP and
 * no public URL: 0 with *size and sha256 (lowercase hex, "" for an object
 * stored before digests were required) when key exists, 1 when it does not,
 * -1 for a bad key, a store not initialised or an unreadable object. */
int blob_stat(const char *key, int64_t *size, char sha256[65]);
/* For struct server.raw: claims nothing until blob_init succeeded. */
extern const struct raw_handler blob_handler;

#endif
