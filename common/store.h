/*
 * store.h — the object store for attachments, reached the same way whether it
 * is natter-api's embedded store or an S3-compatible service: pre-signed URLs
 * for clients (sigv4.h) and signed HEAD/DELETE requests from natter itself.
 */
#ifndef NATTER_STORE_H
#define NATTER_STORE_H

#include <curl/curl.h>
#include <stdint.h>

#include "config.h"
#include "sigv4.h"

/* The target described by cfg (endpoint = NATTER_S3_ENDPOINT, or for the
 * embedded store cfg->embedded_url: NATTER_PUBLIC_URL in natter-api, whose
 * URLs are for clients, NATTER_STORE_URL in natter-worker). Strings borrowed
 * from cfg. */
void store_target(const struct config *cfg, struct s3_target *t);

/* HEAD key: 0 and *size when the object exists, 1 when it does not,
 * -1 when the store cannot be reached or answers otherwise (err filled).
 * curl is the caller's handle (reset and reused). */
int store_head(CURL *curl, const struct s3_target *t, const char *key, int64_t *size, char *err, size_t errlen);
/* DELETE key: 0 when gone (deleted or absent), -1 on failure. */
int store_delete(CURL *curl, const struct s3_target *t, const char *key, char *err, size_t errlen);

#endif
