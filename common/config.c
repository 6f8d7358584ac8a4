/*
 * config.c — the configuration table and its loader (see config.h).
 *
 * One row per variable. Adding a setting = one row here + one field in
 * struct config + one line in the README table (a test checks --help against
 * the README).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "log.h"
#include "util.h"

enum ctype { CT_STR, CT_INT, CT_ENUM };

struct config_item {
    const char *name; /* environment variable */
    enum ctype type;
    size_t offset;       /* into struct config */
    const char *def;     /* default as text; NULL = no default */
    long min, max;       /* CT_INT bounds */
    const char *choices; /* CT_ENUM: '|'-separated */
    int roles;           /* ROLE_* mask */
    bool secret;         /* redact in logs */
    const char *help;
};

#define F(field) offsetof(struct config, field)

static const struct config_item items[] = {
    {"NATTER_ENV", CT_ENUM, F(env), "development", 0, 0, "development|production", ROLE_BOTH, false,
     "development or production (production requires NATTER_JWT_SECRET)"},
    {"NATTER_STATE_DIR", CT_STR, F(state_dir), ".state", 0, 0, NULL, ROLE_BOTH, false,
     "development only: directory of the generated JWT and embedded-store secrets (and blobs)"},
    {"NATTER_LISTEN_ADDR", CT_STR, F(listen_addr), "127.0.0.1", 0, 0, NULL, ROLE_API, false,
     "IPv4 or IPv6 address to bind"},
    {"NATTER_PORT", CT_INT, F(port), "8080", 1, 65535, NULL, ROLE_API, false, "HTTP port"},
    {"NATTER_DATABASE_URL", CT_STR, F(database_url), "postgresql:///natter", 0, 0, NULL, ROLE_BOTH, true,
     "PostgreSQL connection string (libpq URL or key=value)"},
    {"NATTER_REDIS_URL", CT_STR, F(redis_url), "redis://127.0.0.1:6379/0", 0, 0, NULL, ROLE_BOTH, true,
     "Redis: redis://[[user]:password@]host[:port][/db] (host may be [IPv6], user and password percent-encoded) or unix:///path/to.sock"},
    {"NATTER_JWT_SECRET", CT_STR, F(jwt_secret), NULL, 0, 0, NULL, ROLE_API, true,
     "HS256 signing key, at least 32 bytes; generated into the state dir in development"},
    {"NATTER_ACCESS_TOKEN_TTL", CT_INT, F(access_token_ttl), "900", 30, 86400, NULL, ROLE_API, false,
     "access JWT lifetime, seconds"},
    {"NATTER_REFRESH_TOKEN_TTL", CT_INT, F(refresh_token_ttl), "2592000", 60, 31536000, NULL, ROLE_API, false,
     "refresh token lifetime, seconds"},
    {"NATTER_REFRESH_REUSE_GRACE", CT_INT, F(refresh_reuse_grace), "30", 0, 300, NULL, ROLE_API, false,
     "seconds after a refresh during which the same refresh token, presented again (two tabs, a client's retry),"
     " returns the same successor instead of counting as reuse"},
    {"NATTER_PWHASH_COST", CT_ENUM, F(pwhash_cost), "interactive", 0, 0, "interactive|moderate|sensitive|min", ROLE_API,
     false, "argon2id cost (libsodium presets; min is for tests only)"},
    {"NATTER_LOGIN_WINDOW", CT_INT, F(login_window), "300", 1, 86400, NULL, ROLE_API, false,
     "login rate-limit window, seconds"},
    {"NATTER_LOGIN_MAX_PER_USER", CT_INT, F(login_max_per_user), "10", 1, 1000000, NULL, ROLE_API, false,
     "failed logins per (username, client address) per window; then that address gets 429 for that username"},
    {"NATTER_LOGIN_MAX_PER_IP", CT_INT, F(login_max_per_ip), "50", 1, 1000000, NULL, ROLE_API, false,
     "failed logins per client address per window; then that address gets 429 for every login"},
    {"NATTER_CORS_ORIGINS", CT_STR, F(cors_origins), "", 0, 0, NULL, ROLE_API, false,
     "comma-separated web origins allowed by CORS, or *"},
    {"NATTER_HTTP_THREADS", CT_INT, F(http_threads), "8", 1, 256, NULL, ROLE_API, false,
     "HTTP event-loop threads (libmicrohttpd thread pool)"},
    {"NATTER_MAX_CONNECTIONS", CT_INT, F(max_connections), "0", 0, 1000000, NULL, ROLE_API, false,
     "connection limit; 0 = the open-file limit (raised to the hard limit) minus a reserve"},
    {"NATTER_CONN_TIMEOUT", CT_INT, F(conn_timeout), "90", 1, 3600, NULL, ROLE_API, false,
     "idle keep-alive connection timeout, seconds"},
    {"NATTER_HEAD_TIMEOUT", CT_INT, F(head_timeout), "20", 1, 3600, NULL, ROLE_API, false,
     "seconds a client has to send a complete request head (after connecting, or after the idle timeout following"
     " its previous request), however slowly the bytes come"},
    {"NATTER_BODY_TIMEOUT", CT_INT, F(body_timeout), "60", 1, 3600, NULL, ROLE_API, false,
     "seconds a client has to send a request body, plus one second per 16 KiB of its Content-Length"},
    {"NATTER_MAX_CONNECTIONS_PER_IP", CT_INT, F(max_conns_per_ip), "0", 0, 1000000, NULL, ROLE_API, false,
     "connections one client address may hold; 0 = half the connection limit (behind a balancer: the connection limit)"},
    {"NATTER_DB_POOL_SIZE", CT_INT, F(db_pool_size), "16", 1, 1000, NULL, ROLE_API, false,
     "PostgreSQL connections held by natter-api"},
    {"NATTER_DB_POOL_TIMEOUT_MS", CT_INT, F(db_pool_timeout_ms), "2000", 1, 60000, NULL, ROLE_API, false,
     "wait for a free database connection before answering 503, ms"},
    {"NATTER_SEARCH_TIMEOUT_MS", CT_INT, F(search_timeout_ms), "3000", 1, 60000, NULL, ROLE_API, false,
     "longest a message search (GET /v1/search) may run in PostgreSQL before it is cancelled and answered 503"
     " search_timeout, ms"},
    {"NATTER_SEARCH_MAX_CONCURRENT", CT_INT, F(search_max_concurrent), "4", 1, 256, NULL, ROLE_API, false,
     "message searches running at once in one natter-api process, each on a thread of its own (never an HTTP"
     " thread) with a database connection; as many more may wait, past that 503 service_unavailable"},
    {"NATTER_HASH_THREADS", CT_INT, F(hash_threads), "2", 1, 64, NULL, ROLE_API, false,
     "password-hashing threads (off the HTTP threads)"},
    {"NATTER_HASH_QUEUE", CT_INT, F(hash_queue), "64", 1, 100000, NULL, ROLE_API, false,
     "requests that may wait for a hashing thread before 503"},
    {"NATTER_HASH_REGISTER_THREADS", CT_INT, F(hash_register_threads), "1", 1, 64, NULL, ROLE_API, false,
     "hashing threads registrations may hold at once (at most NATTER_HASH_THREADS - 1: logins keep the rest)"},
    {"NATTER_HASH_REGISTER_QUEUE", CT_INT, F(hash_register_queue), "16", 1, 100000, NULL, ROLE_API, false,
     "registrations that may wait for a hashing thread before 503 (apart from the logins' queue)"},
    {"NATTER_RATE_SEND_BURST", CT_INT, F(rate_send_burst), "200", 0, 1000000, NULL, ROLE_API, false,
     "messages sent per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_SEND_PER_MIN", CT_INT, F(rate_send_per_min), "1200", 1, 10000000, NULL, ROLE_API, false,
     "messages sent per user: sustained rate, per minute"},
    {"NATTER_RATE_EDIT_BURST", CT_INT, F(rate_edit_burst), "60", 0, 1000000, NULL, ROLE_API, false,
     "message edits and deletes per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_EDIT_PER_MIN", CT_INT, F(rate_edit_per_min), "600", 1, 10000000, NULL, ROLE_API, false,
     "message edits and deletes per user: sustained rate, per minute"},
    {"NATTER_RATE_REACTION_BURST", CT_INT, F(rate_reaction_burst), "60", 0, 1000000, NULL, ROLE_API, false,
     "reactions added or removed per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_REACTION_PER_MIN", CT_INT, F(rate_reaction_per_min), "600", 1, 10000000, NULL, ROLE_API, false,
     "reactions added or removed per user: sustained rate, per minute"},
    {"NATTER_RATE_TYPING_BURST", CT_INT, F(rate_typing_burst), "20", 0, 1000000, NULL, ROLE_API, false,
     "typing requests per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_TYPING_PER_MIN", CT_INT, F(rate_typing_per_min), "120", 1, 10000000, NULL, ROLE_API, false,
     "typing requests per user: sustained rate, per minute"},
    {"NATTER_RATE_CHAT_BURST", CT_INT, F(rate_chat_burst), "50", 0, 1000000, NULL, ROLE_API, false,
     "chats created or renamed per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_CHAT_PER_MIN", CT_INT, F(rate_chat_per_min), "120", 1, 10000000, NULL, ROLE_API, false,
     "chats created or renamed per user: sustained rate, per minute"},
    {"NATTER_RATE_MEMBER_BURST", CT_INT, F(rate_member_burst), "60", 0, 1000000, NULL, ROLE_API, false,
     "member changes (add, remove, role) per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_MEMBER_PER_MIN", CT_INT, F(rate_member_per_min), "300", 1, 10000000, NULL, ROLE_API, false,
     "member changes (add, remove, role) per user: sustained rate, per minute"},
    {"NATTER_RATE_ATTACHMENT_BURST", CT_INT, F(rate_attachment_burst), "60", 0, 1000000, NULL, ROLE_API, false,
     "attachment upload requests per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_ATTACHMENT_PER_MIN", CT_INT, F(rate_attachment_per_min), "300", 1, 10000000, NULL, ROLE_API, false,
     "attachment upload requests per user: sustained rate, per minute"},
    {"NATTER_RATE_PUSH_ACK_BURST", CT_INT, F(rate_push_ack_burst), "120", 0, 1000000, NULL, ROLE_API, false,
     "push acks (POST /v1/devices/{id}/push-ack) per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_PUSH_ACK_PER_MIN", CT_INT, F(rate_push_ack_per_min), "600", 1, 10000000, NULL, ROLE_API, false,
     "push acks per user: sustained rate, per minute"},
    {"NATTER_RATE_SEARCH_BURST", CT_INT, F(rate_search_burst), "20", 0, 1000000, NULL, ROLE_API, false,
     "message searches per user: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_SEARCH_PER_MIN", CT_INT, F(rate_search_per_min), "60", 1, 10000000, NULL, ROLE_API, false,
     "message searches per user: sustained rate, per minute"},
    {"NATTER_RATE_REGISTER_IP_BURST", CT_INT, F(rate_register_ip_burst), "10", 0, 1000000, NULL, ROLE_API, false,
     "registrations per client address: bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_REGISTER_IP_PER_MIN", CT_INT, F(rate_register_ip_per_min), "1", 1, 10000000, NULL, ROLE_API, false,
     "registrations per client address: sustained rate, per minute"},
    {"NATTER_RATE_REGISTER_ALL_BURST", CT_INT, F(rate_register_all_burst), "100", 0, 1000000, NULL, ROLE_API, false,
     "registrations over all addresses (this instance): bucket size (allowed at once); 0 = no limit"},
    {"NATTER_RATE_REGISTER_ALL_PER_MIN", CT_INT, F(rate_register_all_per_min), "600", 1, 10000000, NULL, ROLE_API,
     false, "registrations over all addresses (this instance): sustained rate, per minute"},
    {"NATTER_RATE_TABLE_BUCKETS", CT_INT, F(rate_table_buckets), "65536", 64, 16777216, NULL, ROLE_API, false,
     "rate-limit buckets held in memory (fixed; the least recently used one is reused)"},
    {"NATTER_TYPING_COALESCE_MS", CT_INT, F(typing_coalesce_ms), "2500", 0, 60000, NULL, ROLE_API, false,
     "a repeat of the same typing state by a member in a chat within this window is not sent on, ms"},
    {"NATTER_PRESENCE_TTL", CT_INT, F(presence_ttl), "30", 2, 3600, NULL, ROLE_API, false,
     "seconds without a poll or heartbeat after which a user is offline"},
    {"NATTER_POLL_TIMEOUT_MAX", CT_INT, F(poll_timeout_max), "60", 1, 300, NULL, ROLE_API, false,
     "longest long-poll timeout a client may ask for, seconds"},
    {"NATTER_ACK_FLUSH_MS", CT_INT, F(ack_flush_ms), "20", 1, 10000, NULL, ROLE_API, false,
     "poll acks gather this long (ms) before one transaction writes them and their delivered receipts"},
    {"NATTER_SEND_COMMITTERS", CT_INT, F(send_committers), "2", 1, 16, NULL, ROLE_API, false,
     "send batches committed at once (each on its own PostgreSQL connection): one is written while another commits"},
    {"NATTER_WAKE_EVENT_MAX", CT_INT, F(wake_event_max), "8192", 0, 1048576, NULL, ROLE_API, false,
     "largest event (bytes of JSON) a wake-up carries to waiting polls; bigger ones are read from the database"},
    {"NATTER_AUTH_CACHE_TTL", CT_INT, F(auth_cache_ttl), "60", 0, 300, NULL, ROLE_API, false,
     "seconds a device's checked state is reused without a query; a revocation elsewhere reaches this instance"
     " through Redis at once, or after at most this long; 0 checks every request"},
    {"NATTER_METRICS_TOKEN", CT_STR, F(metrics_token), "", 0, 0, NULL, ROLE_BOTH, true,
     "bearer token GET /metrics requires (Authorization: Bearer <token>, at least 16 bytes), natter-api's and"
     " natter-worker's; empty = /metrics is public"},
    {"NATTER_WORKER_THREADS", CT_INT, F(worker_threads), "4", 1, 256, NULL, ROLE_WORKER, false,
     "natter-worker threads"},
    {"NATTER_WORKER_LISTEN", CT_STR, F(worker_listen), "127.0.0.1:8081", 0, 0, NULL, ROLE_WORKER, false,
     "address:port of natter-worker's operator HTTP listener (GET /metrics, /healthz, /readyz): an IPv4 address, or"
     " an IPv6 one in brackets ([::1]:8081); each worker process on a host needs its own port; empty = no listener"},
    {"NATTER_PUSH_WEBHOOK_URL", CT_STR, F(push_webhook_url), "", 0, 0, NULL, ROLE_WORKER, false,
     "webhook push provider endpoint (http or https); empty = webhook pushes disabled"},
    {"NATTER_PUSH_WEBHOOK_SECRET", CT_STR, F(push_webhook_secret), "", 0, 0, NULL, ROLE_WORKER, true,
     "HMAC-SHA256 key of X-Natter-Signature; required with NATTER_PUSH_WEBHOOK_URL"},
    {"NATTER_PUSH_TIMEOUT_MS", CT_INT, F(push_timeout_ms), "5000", 100, 60000, NULL, ROLE_WORKER, false,
     "total time allowed for one push provider call, ms"},
    {"NATTER_PUSH_COALESCE_MS", CT_INT, F(push_coalesce_ms), "2000", 0, 600000, NULL, ROLE_WORKER, false,
     "messages to one user within this window become one push with a count, ms"},
    {"NATTER_PUSH_TTL", CT_INT, F(push_ttl), "3600", 1, 604800, NULL, ROLE_WORKER, false,
     "pushes older than this are dropped rather than delivered late, seconds"},
    {"NATTER_PUSH_PROVIDER_CONCURRENCY", CT_INT, F(push_provider_concurrency), "0", 0, 256, NULL, ROLE_WORKER, false,
     "push provider calls one worker process makes to one provider at once (a provider that hangs holds at most"
     " this many threads; pushes for it beyond wait and are retried); 0 = half of NATTER_WORKER_THREADS, at least 1"},
    {"NATTER_PUSH_CA_FILE", CT_STR, F(push_ca_file), "", 0, 0, NULL, ROLE_WORKER, false,
     "PEM file of the certificate authorities push providers' TLS certificates are checked against; empty = the"
     " system's"},
    {"NATTER_PUSH_FCM_CREDENTIALS", CT_STR, F(push_fcm_credentials), "", 0, 0, NULL, ROLE_WORKER, false,
     "path of the Firebase service-account JSON file (project_id, client_email, private_key, token_uri) the FCM"
     " provider signs its OAuth 2.0 assertions with; empty = FCM pushes disabled"},
    {"NATTER_PUSH_FCM_URL", CT_STR, F(push_fcm_url), "https://fcm.googleapis.com", 0, 0, NULL, ROLE_WORKER, false,
     "base URL of the FCM HTTP v1 API (messages:send is under /v1/projects/<project_id>/)"},
    {"NATTER_PUSH_APNS_KEY_FILE", CT_STR, F(push_apns_key_file), "", 0, 0, NULL, ROLE_WORKER, false,
     "path of the APNs token-auth signing key (.p8, PEM, P-256); empty = APNs pushes disabled"},
    {"NATTER_PUSH_APNS_KEY_ID", CT_STR, F(push_apns_key_id), "", 0, 0, NULL, ROLE_WORKER, false,
     "the APNs key's id (the JWT's kid); required with NATTER_PUSH_APNS_KEY_FILE"},
    {"NATTER_PUSH_APNS_TEAM_ID", CT_STR, F(push_apns_team_id), "", 0, 0, NULL, ROLE_WORKER, false,
     "the Apple developer team id (the JWT's iss); required with NATTER_PUSH_APNS_KEY_FILE"},
    {"NATTER_PUSH_APNS_TOPIC", CT_STR, F(push_apns_topic), "", 0, 0, NULL, ROLE_WORKER, false,
     "apns-topic: the app's bundle id; required with NATTER_PUSH_APNS_KEY_FILE"},
    {"NATTER_PUSH_APNS_URL", CT_STR, F(push_apns_url), "https://api.push.apple.com", 0, 0, NULL, ROLE_WORKER, false,
     "APNs base URL (HTTP/2): https://api.push.apple.com, or https://api.sandbox.push.apple.com for development"
     " builds of the app"},
    {"NATTER_JOB_VISIBILITY_MS", CT_INT, F(job_visibility_ms), "30000", 500, 3600000, NULL, ROLE_WORKER, false,
     "a job unacknowledged this long (its worker died) is reclaimed by another worker, ms"},
    {"NATTER_JOB_MAX_ATTEMPTS", CT_INT, F(job_max_attempts), "8", 1, 100, NULL, ROLE_WORKER, false,
     "attempts before a job goes to the dead-letter stream"},
    {"NATTER_JOB_RETRY_BASE_MS", CT_INT, F(job_retry_base_ms), "1000", 10, 600000, NULL, ROLE_WORKER, false,
     "first retry delay (doubles per attempt with jitter, capped at 5 min), ms"},
    {"NATTER_CLEANUP_INTERVAL", CT_INT, F(cleanup_interval), "60", 1, 86400, NULL, ROLE_WORKER, false,
     "seconds between runs of each cleanup task"},
    {"NATTER_INBOX_RETENTION", CT_INT, F(inbox_retention), "2592000", 1, 315360000, NULL, ROLE_WORKER, false,
     "inbox rows older than this are deleted even if unacknowledged, seconds"},
    {"NATTER_PUBLIC_URL", CT_STR, F(public_url), "", 0, 0, NULL, ROLE_API, false,
     "base URL (scheme://host[:port], no path) at which clients reach natter-api: the embedded store's"
     " pre-signed URLs point here; empty = http://<NATTER_LISTEN_ADDR>:<NATTER_PORT> (127.0.0.1 for 0.0.0.0)"},
    {"NATTER_STORE_URL", CT_STR, F(store_url), "http://127.0.0.1:8080", 0, 0, NULL, ROLE_WORKER, false,
     "base URL (scheme://host[:port]) at which natter-worker reaches natter-api's embedded store to delete"
     " abandoned uploads (in a container: the API's service address); unused with NATTER_S3_ENDPOINT"},
    {"NATTER_S3_ENDPOINT", CT_STR, F(s3_endpoint), "", 0, 0, NULL, ROLE_BOTH, false,
     "S3-compatible endpoint (scheme://host[:port]); empty = the embedded store"},
    {"NATTER_S3_BUCKET", CT_STR, F(s3_bucket), "natter", 0, 0, NULL, ROLE_BOTH, false, "bucket for attachments"},
    {"NATTER_S3_REGION", CT_STR, F(s3_region), "us-east-1", 0, 0, NULL, ROLE_BOTH, false, "SigV4 region"},
    {"NATTER_S3_ACCESS_KEY", CT_STR, F(s3_access_key), "natter-embedded", 0, 0, NULL, ROLE_BOTH, false,
     "S3 access key id"},
    {"NATTER_S3_SECRET_KEY", CT_STR, F(s3_secret_key), NULL, 0, 0, NULL, ROLE_BOTH, true,
     "S3 secret key; embedded store in development: generated into the state dir"},
    {"NATTER_S3_ADDRESSING", CT_ENUM, F(s3_addressing), "path", 0, 0, "path|virtual", ROLE_BOTH, false,
     "path-style (endpoint/bucket/key) or virtual-host style (bucket.endpoint/key) URLs"},
    {"NATTER_BLOB_DIR", CT_STR, F(blob_dir), "", 0, 0, NULL, ROLE_API, false,
     "embedded store data directory; empty = <NATTER_STATE_DIR>/blobs"},
    {"NATTER_ATTACHMENT_MAX_BYTES", CT_INT, F(attachment_max_bytes), "104857600", 1, 2147483647, NULL, ROLE_API, false,
     "largest attachment, bytes"},
    {"NATTER_ATTACHMENT_TYPES", CT_STR, F(attachment_types), "image/*,video/*,audio/*,application/pdf,text/plain", 0, 0,
     NULL, ROLE_API, false, "allowed attachment content types (comma-separated, type/* wildcards)"},
    {"NATTER_UPLOAD_URL_TTL", CT_INT, F(upload_url_ttl), "900", 10, 604800, NULL, ROLE_API, false,
     "validity of a pre-signed upload URL, seconds"},
    {"NATTER_ATTACHMENT_PENDING_MAX", CT_INT, F(pending_max), "20", 1, 100000, NULL, ROLE_API, false,
     "pending attachments (upload URL asked for, not completed) one user may have at once; more get"
     " 409 too_many_pending_attachments"},
    {"NATTER_ATTACHMENT_PENDING_MAX_BYTES", CT_INT, F(pending_max_bytes), "1073741824", 1, 2147483647, NULL, ROLE_API,
     false,
     "total declared size of one user's pending attachments, bytes (at least NATTER_ATTACHMENT_MAX_BYTES); more get"
     " 409 too_many_pending_attachments"},
    {"NATTER_ATTACHMENT_PENDING_TTL", CT_INT, F(pending_ttl), "3600", 60, 604800, NULL, ROLE_BOTH, false,
     "a pending attachment older than this stops counting toward the quota and the worker reclaims it (object, then"
     " row), seconds; must exceed NATTER_UPLOAD_URL_TTL"},
    {"NATTER_DOWNLOAD_URL_TTL", CT_INT, F(download_url_ttl), "300", 10, 604800, NULL, ROLE_API, false,
     "validity of a pre-signed download URL, seconds"},
    {"NATTER_LOG_LEVEL", CT_ENUM, F(log_level), "info", 0, 0, "debug|info|warn|error", ROLE_BOTH, false,
     "minimum log level"},
};

#define NITEMS (sizeof items / sizeof items[0])

/* One component of a parsed URL (owned), NULL when absent. */
static char *url_part(CURLU *u, CURLUPart what)
{
    char *v = NULL;
    if (curl_url_get(u, what, &v, 0) != CURLUE_OK)
        return NULL;
    char *out = xstrdup(v);
    curl_free(v);
    return out;
}

/* One pass of config_base_url's check and normalisation. */
static char *base_url_once(const char *name, const char *url, char **err)
{
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *extra = NULL, *out = NULL;
    CURLU *u = curl_url();
    *err = NULL;
    if (!u) {
        *err = xasprintf("%s: out of memory", name);
        goto done;
    }
    CURLUcode cc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (cc != CURLUE_OK) {
        *err = xasprintf("%s: '%s' is not a URL (%s)", name, url, curl_url_strerror(cc));
        goto done;
    }
    scheme = url_part(u, CURLUPART_SCHEME);
    host = url_part(u, CURLUPART_HOST);
    port = url_part(u, CURLUPART_PORT);
    path = url_part(u, CURLUPART_PATH);
    if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) || !host || !*host) {
        *err = xasprintf("%s: '%s' must be an http:// or https:// URL with a host", name, url);
        goto done;
    }
    if ((extra = url_part(u, CURLUPART_USER)) || (extra = url_part(u, CURLUPART_QUERY)) ||
        (extra = url_part(u, CURLUPART_FRAGMENT))) {
        *err = xasprintf("%s: '%s' must be scheme://host[:port] (no user, query or fragment)", name, url);
        goto done;
    }
    if (path && strcmp(path, "/") != 0) {
        *err = xasprintf(
            "%s: '%s' has a path prefix (%s), which is not supported: the object store's signed"
            " URLs are /<bucket>/<key> from the root of the host. Route the whole host (or a"
            " host of its own) to natter-api, or keep the proxy's prefix out of this URL",
            name, url, path);
        goto done;
    }
    out = port ? xasprintf("%s://%s:%s", scheme, host, port) : xasprintf("%s://%s", scheme, host);
done:
    free(scheme);
    free(host);
    free(port);
    free(path);
    free(extra);
    if (u)
        curl_url_cleanup(u);
    return out;
}

/* libcurl decodes a percent-encoded host after it has normalised numeric
 * hosts: "http://%39" gives "http://9", which it reads next time as
 * "http://0.0.0.9". So the URL is normalised until it no longer changes (a
 * second pass has always been the last; the bound is a guard). */
char *config_base_url(const char *name, const char *url, char **err)
{
    char *out = base_url_once(name, url, err);
    for (int pass = 0; out && pass < 3; pass++) {
        char *again = base_url_once(name, out, err);
        if (!again) { /* its own output refused: refuse the URL */
            free(out);
            return NULL;
        }
        bool same = strcmp(again, out) == 0;
        free(out);
        out = again;
        if (same)
            return out;
    }
    if (out) {
        free(out);
        *err = xasprintf("%s: '%s' does not normalise to a stable URL", name, url);
        out = NULL;
    }
    return out;
}

int config_host_port(const char *name, const char *value, char *host, size_t hostlen, int *port, char **err)
{
    *err = NULL;
    const char *colon = strrchr(value, ':');
    const char *h = value, *h_end = colon;
    bool v6 = value[0] == '[';
    if (v6) { /* [addr]:port */
        const char *close = strchr(value, ']');
        if (!close || close[1] != ':') {
            *err = xasprintf("%s: '%s' must be [IPv6 address]:port", name, value);
            return -1;
        }
        h = value + 1;
        h_end = close;
        colon = close + 1;
    }
    if (!colon || h_end <= h || (size_t)(h_end - h) >= hostlen) {
        *err = xasprintf("%s: '%s' must be address:port (e.g. 127.0.0.1:8081 or [::1]:8081)", name, value);
        return -1;
    }
    memcpy(host, h, (size_t)(h_end - h));
    host[h_end - h] = '\0';
    unsigned char probe[sizeof(struct in6_addr)];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, probe) != 1) {
        *err = xasprintf("%s: '%s' is not an IP%s address", name, host,
                         v6 ? "v6" : "v4 (an IPv6 one goes in brackets)");
        return -1;
    }
    int64_t n;
    if (!parse_i64(colon + 1, &n) || n < 1 || n > 65535) {
        *err = xasprintf("%s: port '%s' is not an integer in 1..65535", name, colon + 1);
        return -1;
    }
    *port = (int)n;
    return 0;
}

/* Replaces *slot (owned) by its normalised base URL; 0, or -1 with *err. */
static int normalise_url(const char *name, char **slot, char **err)
{
    char *norm = config_base_url(name, *slot, err);
    if (!norm)
        return -1;
    free(*slot);
    *slot = norm;
    return 0;
}

/* http://<listen addr>:<port>, a wildcard address replaced by loopback (owned). */
static char *default_public_url(const struct config *cfg)
{
    const char *a = cfg->listen_addr;
    if (!*a || strcmp(a, "0.0.0.0") == 0)
        a = "127.0.0.1";
    else if (strcmp(a, "::") == 0 || strcmp(a, "[::]") == 0)
        a = "::1";
    bool v6 = strchr(a, ':') != NULL && a[0] != '[';
    return xasprintf("http://%s%s%s:%d", v6 ? "[" : "", a, v6 ? "]" : "", cfg->port);
}

static bool enum_has(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && strncmp(p, v, l) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

int config_load(struct config *cfg, enum config_role role, const char *(*getenv_fn)(const char *), char **err)
{
    memset(cfg, 0, sizeof *cfg);
    *err = NULL;
    for (size_t i = 0; i < NITEMS; i++) {
        const struct config_item *it = &items[i];
        const char *v = getenv_fn(it->name);
        bool applies = (it->roles & role) != 0;
        if (!v || !applies)
            v = it->def;
        if (v && strlen(v) > 4096) {
            *err = xasprintf("%s: value longer than 4096 bytes", it->name);
            goto fail;
        }
        char *base = (char *)cfg + it->offset;
        switch (it->type) {
        case CT_STR:
            *(char **)base = v ? xstrdup(v) : NULL;
            break;
        case CT_ENUM:
            if (!enum_has(it->choices, v)) {
                *err = xasprintf("%s: '%s' is not one of %s", it->name, v, it->choices);
                goto fail;
            }
            *(char **)base = xstrdup(v);
            break;
        case CT_INT: {
            int64_t n;
            if (!parse_i64(v, &n) || n < it->min || n > it->max) {
                *err = xasprintf("%s: '%s' is not an integer in %ld..%ld", it->name, v, it->min, it->max);
                goto fail;
            }
            *(int *)base = (int)n;
            break;
        }
        }
    }
    cfg->production = strcmp(cfg->env, "production") == 0;
    if (cfg->metrics_token && *cfg->metrics_token && strlen(cfg->metrics_token) < 16) {
        *err = xasprintf("NATTER_METRICS_TOKEN: must be at least 16 bytes (or empty: /metrics public)");
        goto fail;
    }
    if (role & ROLE_API) {
        if (cfg->jwt_secret && strlen(cfg->jwt_secret) < 32) {
            *err = xasprintf("NATTER_JWT_SECRET: must be at least 32 bytes");
            goto fail;
        }
        if (!cfg->jwt_secret && cfg->production) {
            *err = xasprintf(
                "NATTER_JWT_SECRET: required when NATTER_ENV=production "
                "(generate one with: head -c 32 /dev/urandom | base64)");
            goto fail;
        }
        if (cfg->pending_max_bytes < cfg->attachment_max_bytes) {
            *err = xasprintf("NATTER_ATTACHMENT_PENDING_MAX_BYTES: must be at least NATTER_ATTACHMENT_MAX_BYTES (%d)",
                             cfg->attachment_max_bytes);
            goto fail;
        }
        if (cfg->pending_ttl <= cfg->upload_url_ttl) {
            *err = xasprintf(
                "NATTER_ATTACHMENT_PENDING_TTL: must exceed NATTER_UPLOAD_URL_TTL (%d s), or uploads in"
                " progress would be reclaimed",
                cfg->upload_url_ttl);
            goto fail;
        }
        if (cfg->production && strcmp(cfg->pwhash_cost, "min") == 0) {
            *err = xasprintf("NATTER_PWHASH_COST: 'min' is not allowed in production");
            goto fail;
        }
    }
    if ((role & ROLE_WORKER) && *cfg->push_webhook_url) {
        if (strncmp(cfg->push_webhook_url, "http://", 7) != 0 && strncmp(cfg->push_webhook_url, "https://", 8) != 0) {
            *err = xasprintf("NATTER_PUSH_WEBHOOK_URL: must be an http:// or https:// URL");
            goto fail;
        }
        if (strlen(cfg->push_webhook_secret) < 16) {
            *err = xasprintf("NATTER_PUSH_WEBHOOK_SECRET: required (at least 16 bytes) with NATTER_PUSH_WEBHOOK_URL");
            goto fail;
        }
    }
    if ((role & ROLE_WORKER) && *cfg->push_apns_key_file &&
        (!*cfg->push_apns_key_id || !*cfg->push_apns_team_id || !*cfg->push_apns_topic)) {
        *err = xasprintf(
            "NATTER_PUSH_APNS_KEY_FILE: needs NATTER_PUSH_APNS_KEY_ID, NATTER_PUSH_APNS_TEAM_ID and"
            " NATTER_PUSH_APNS_TOPIC");
        goto fail;
    }
    if ((role & ROLE_WORKER) && *cfg->worker_listen) {
        char host[INET6_ADDRSTRLEN];
        int port;
        if (config_host_port("NATTER_WORKER_LISTEN", cfg->worker_listen, host, sizeof host, &port, err) < 0)
            goto fail;
    }
    if ((role & ROLE_WORKER) && normalise_url("NATTER_PUSH_FCM_URL", &cfg->push_fcm_url, err) < 0)
        goto fail;
    if ((role & ROLE_WORKER) && normalise_url("NATTER_PUSH_APNS_URL", &cfg->push_apns_url, err) < 0)
        goto fail;
    if (!*cfg->database_url) {
        *err = xasprintf("NATTER_DATABASE_URL: must not be empty");
        goto fail;
    }
    if (role & ROLE_API) {
        if (!*cfg->public_url) {
            free(cfg->public_url);
            cfg->public_url = default_public_url(cfg);
        }
        if (normalise_url("NATTER_PUBLIC_URL", &cfg->public_url, err) < 0)
            goto fail;
    }
    if ((role & ROLE_WORKER) && normalise_url("NATTER_STORE_URL", &cfg->store_url, err) < 0)
        goto fail;
    if (*cfg->s3_endpoint && normalise_url("NATTER_S3_ENDPOINT", &cfg->s3_endpoint, err) < 0)
        goto fail;
    cfg->embedded_url = (role & ROLE_API) ? cfg->public_url : cfg->store_url;
    return 0;
fail:
    config_free(cfg);
    return -1;
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < NITEMS; i++) {
        if (items[i].type == CT_INT)
            continue;
        char **p = (char **)((char *)cfg + items[i].offset);
        free(*p);
        *p = NULL;
    }
    cfg->embedded_url = NULL;
}

/* Loads or creates (O_EXCL: concurrent starters agree) <state_dir>/<name>
 * holding 32 random bytes as hex, into *out. */
static int dev_file_secret(struct config *cfg, const char *name, char **out, char **err)
{
    int fd = -1, rc = -1;
    char *path = NULL;
    *err = NULL;
    if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST) {
        *err = xasprintf("NATTER_STATE_DIR: cannot create %s: %s", cfg->state_dir, strerror(errno));
        goto out;
    }
    path = xasprintf("%s/%s", cfg->state_dir, name);
    for (int attempt = 0; attempt < 2 && rc < 0 && !*err; attempt++) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[257];
            ssize_t n = read(fd, buf, sizeof buf - 1);
            while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                n--;
            if (n < 32) {
                *err = xasprintf("%s: unreadable or shorter than 32 bytes", path);
                goto out;
            }
            buf[n] = '\0';
            *out = xstrdup(buf);
            rc = 0;
            goto out;
        }
        /* written whole under a private name, then linked into place: a process
         * starting at the same moment (natter-worker beside natter-api) sees
         * either no file or the complete secret, never a half-written one */
        char *tmp = xasprintf("%s.%ld.tmp", path, (long)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            *err = xasprintf("%s: cannot create: %s", tmp, strerror(errno));
            free(tmp);
            goto out;
        }
        char hex[66];
        random_hex(hex, 32);
        hex[64] = '\n';
        bool written = write(fd, hex, 65) == 65 && fsync(fd) == 0;
        close(fd);
        fd = -1;
        int linked = written ? link(tmp, path) : -1;
        int link_errno = errno;
        unlink(tmp);
        free(tmp);
        if (!written) {
            *err = xasprintf("%s: write failed", path);
            goto out;
        }
        if (linked < 0) {
            if (link_errno == EEXIST)
                continue; /* another process created it first: read theirs */
            *err = xasprintf("%s: cannot create: %s", path, strerror(link_errno));
            goto out;
        }
        hex[64] = '\0';
        *out = xstrdup(hex);
        nlog(LOG_INFO, "generated development secret", json_pack("{s:s}", "path", path));
        rc = 0;
    }
    if (rc < 0 && !*err)
        *err = xasprintf("%s: cannot be read or created", path);
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

int config_dev_secret(struct config *cfg, char **err)
{
    *err = NULL;
    if (cfg->jwt_secret)
        return 0;
    return dev_file_secret(cfg, "jwt-secret", &cfg->jwt_secret, err);
}

bool config_embedded_store(const struct config *cfg)
{
    return !cfg->s3_endpoint || !*cfg->s3_endpoint;
}

int config_s3_secret(struct config *cfg, char **err)
{
    *err = NULL;
    if (cfg->s3_secret_key && *cfg->s3_secret_key)
        return 0;
    if (!config_embedded_store(cfg) || cfg->production) {
        *err = xasprintf("NATTER_S3_SECRET_KEY: required %s",
                         cfg->production ? "in production" : "with NATTER_S3_ENDPOINT");
        return -1;
    }
    free(cfg->s3_secret_key);
    cfg->s3_secret_key = NULL;
    return dev_file_secret(cfg, "s3-secret", &cfg->s3_secret_key, err);
}

void config_print_help(const char *prog, enum config_role role)
{
    printf("Usage: %s%s\n\nConfiguration (environment variables):\n", prog,
           role == ROLE_API ? " [migrate | --help | --routes]" : " [--help]");
    for (size_t i = 0; i < NITEMS; i++) {
        const struct config_item *it = &items[i];
        if (!(it->roles & role))
            continue;
        printf("  %-28s %s (default: %s)\n", it->name, it->help, it->def ? (*it->def ? it->def : "empty") : "none");
    }
}

void config_log(const struct config *cfg, enum config_role role)
{
    json_t *f = json_object();
    for (size_t i = 0; i < NITEMS; i++) {
        const struct config_item *it = &items[i];
        if (!(it->roles & role))
            continue;
        const char *base = (const char *)cfg + it->offset;
        if (it->type == CT_INT)
            json_object_set_new(f, it->name, json_integer(*(const int *)base));
        else if (it->secret)
            json_object_set_new(f, it->name,
                                json_string(*(char *const *)base && **(char *const *)base ? "(set, redacted)"
                                                                                          : "(unset)"));
        else
            json_object_set_new(f, it->name, *(char *const *)base ? json_string(*(char *const *)base) : json_null());
    }
    nlog(LOG_INFO, "effective configuration", json_pack("{s:o}", "config", f));
}
