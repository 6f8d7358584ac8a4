/*
 * config.h — configuration from environment variables, described by one table
 * (config.c: name, type, default, bounds, which binary, help text). The same
 * table drives parsing, validation, --help and the effective-config log line.
 *
 * config_load() fails fast: it names the first bad variable in *err.
 */
#ifndef NATTER_CONFIG_H
#define NATTER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum config_role { ROLE_API = 1, ROLE_WORKER = 2, ROLE_BOTH = 3 };

struct config {
    char *env;                 /* "development" | "production" */
    bool production;           /* env == production */
    char *state_dir;           /* dev: where the generated JWT secret lives */
    char *listen_addr;         /* bind address */
    int port;                  /* HTTP port */
    char *database_url;        /* libpq conninfo or URL */
    char *redis_url;           /* redis://host:port/db or unix:///path */
    char *jwt_secret;          /* HS256 key (>= 32 bytes) */
    int access_token_ttl;      /* seconds */
    int refresh_token_ttl;     /* seconds */
    int refresh_reuse_grace;   /* seconds: a rotated token still answers with its successor */
    char *pwhash_cost;         /* interactive | moderate | sensitive | min */
    int login_window;          /* seconds */
    int login_max_per_user;    /* failed logins per (username, client address) per window */
    int login_max_per_ip;      /* failed logins per client address per window */
    char *cors_origins;        /* comma-separated origins, or "*" */
    int http_threads;          /* MHD thread pool size */
    int max_connections;       /* 0 = derive from RLIMIT_NOFILE */
    int conn_timeout;          /* idle keep-alive timeout, seconds */
    int head_timeout;          /* seconds to send a complete request head */
    int body_timeout;          /* seconds to send a request body (+1 s per 16 KiB) */
    int max_conns_per_ip;      /* connections per client address; 0 = half the connection limit */
    int db_pool_size;          /* PostgreSQL connections per process */
    int db_pool_timeout_ms;    /* wait for a free connection before 503 */
    int search_timeout_ms;     /* statement timeout of one search (GET /v1/search) */
    int search_max_concurrent; /* search threads per process (as many may wait, then 503) */
    int hash_threads;          /* password hashing threads */
    int hash_queue;            /* max requests waiting for a hashing thread */
    int hash_register_threads; /* hashing threads registrations may hold at once */
    int hash_register_queue;   /* registrations that may wait for a hashing thread */
    /* per-user (per-address for register) token buckets: burst, refill per minute */
    int rate_send_burst, rate_send_per_min;
    int rate_edit_burst, rate_edit_per_min;
    int rate_reaction_burst, rate_reaction_per_min;
    int rate_typing_burst, rate_typing_per_min;
    int rate_chat_burst, rate_chat_per_min;
    int rate_member_burst, rate_member_per_min;
    int rate_attachment_burst, rate_attachment_per_min;
    int rate_push_ack_burst, rate_push_ack_per_min;
    int rate_search_burst, rate_search_per_min;
    int rate_register_ip_burst, rate_register_ip_per_min;
    int rate_register_all_burst, rate_register_all_per_min;
    int rate_table_buckets;        /* size of the in-process bucket table */
    int typing_coalesce_ms;        /* repeats of a typing state within this are not sent on */
    int worker_threads;            /* natter-worker threads */
    char *worker_listen;           /* natter-worker's operator listener, address:port; "" = none */
    char *push_webhook_url;        /* webhook provider endpoint, "" = none */
    char *push_webhook_secret;     /* HMAC key for X-Natter-Signature */
    int push_timeout_ms;           /* total time of one provider call */
    int push_coalesce_ms;          /* window in which a user's messages become one push */
    int push_ttl;                  /* seconds after which an undelivered push is dropped */
    int push_provider_concurrency; /* calls to one provider at once per worker process (0 = derived) */
    char *push_ca_file;            /* CA bundle for providers' TLS, "" = the system's */
    char *push_fcm_credentials;    /* path of the FCM service-account JSON, "" = no FCM */
    char *push_fcm_url;            /* FCM API base URL */
    char *push_apns_key_file;      /* path of the APNs .p8 key, "" = no APNs */
    char *push_apns_key_id;        /* kid */
    char *push_apns_team_id;       /* iss */
    char *push_apns_topic;         /* apns-topic (bundle id) */
    char *push_apns_url;           /* APNs base URL */
    int job_visibility_ms;         /* a job idle this long in a dead worker is reclaimed */
    int job_max_attempts;          /* then dead letters */
    int job_retry_base_ms;         /* first retry delay; doubles, capped at 5 min */
    int cleanup_interval;          /* seconds between runs of each cleanup task */
    int inbox_retention;           /* seconds an inbox row is kept at most */
    char *public_url;              /* api: how clients reach natter-api (embedded store URLs);
                                      "" = http://<listen addr>:<port>, filled in by config_load */
    char *store_url;               /* worker: how natter-worker reaches natter-api's embedded store */
    char *s3_endpoint;             /* "" = the embedded store */
    char *s3_bucket;
    char *s3_region;
    char *s3_access_key;
    char *s3_secret_key;      /* embedded store in development: generated if unset */
    char *s3_addressing;      /* path | virtual */
    char *blob_dir;           /* embedded store data directory ("" = <state dir>/blobs) */
    int attachment_max_bytes; /* largest upload */
    char *attachment_types;   /* comma-separated allow-list; a subtype of * is a wildcard */
    int upload_url_ttl;       /* seconds a pre-signed PUT stays valid */
    int pending_max;          /* pending attachments one user may have at once */
    int pending_max_bytes;    /* and their total declared size */
    int pending_ttl;          /* seconds after which a pending attachment is reclaimed */
    int download_url_ttl;     /* seconds a pre-signed GET stays valid */
    int presence_ttl;         /* seconds without a poll/heartbeat before offline */
    int poll_timeout_max;     /* longest long-poll timeout a client may ask for, seconds */
    int ack_flush_ms;         /* how long poll acks gather before one flush writes them */
    int send_committers;      /* send batches in flight at once */
    int wake_event_max;       /* largest event body a wake-up carries (bytes) */
    int auth_cache_ttl;       /* seconds a device check is reused */
    char *metrics_token;      /* "" = /metrics is public; else the bearer token it requires */
    char *log_level;          /* debug | info | warn | error */
    const char *embedded_url; /* derived, borrowed: where this binary's URLs for the embedded
                                 store point (api: public_url, worker: store_url) */
};

/* A base URL setting (name for messages) checked with libcurl's parser: http
 * or https, a host, an optional port, nothing else (no user, query, fragment
 * or path prefix: the store's signatures cover /<bucket>/<key> from the root).
 * A trailing '/' is dropped. Returns an owned scheme://host[:port], or NULL
 * with an owned message in *err. */
char *config_base_url(const char *name, const char *url, char **err);

/* Splits an address:port setting (name for messages): an IPv4 address, or an
 * IPv6 one in brackets, then a port in 1..65535. The address (brackets
 * dropped) goes to host (hostlen bytes, INET6_ADDRSTRLEN is enough), the port
 * to *port. 0, or -1 with an owned message in *err naming the setting. */
int config_host_port(const char *name, const char *value, char *host, size_t hostlen, int *port, char **err);

/* Reads the environment through getenv_fn (getenv in production code, a fake in
 * tests) into cfg, applying defaults and validating every value that applies to
 * role. Returns 0, or -1 with an owned message in *err naming the variable.
 * In development a missing NATTER_JWT_SECRET is left NULL (see config_dev_secret). */
int config_load(struct config *cfg, enum config_role role, const char *(*getenv_fn)(const char *), char **err);
void config_free(struct config *cfg);

/* Development only: loads or creates <state_dir>/jwt-secret (0600) into
 * cfg->jwt_secret. Returns 0 or -1 with *err. */
int config_dev_secret(struct config *cfg, char **err);
/* The embedded store's S3 secret: NATTER_S3_SECRET_KEY, else (development)
 * <state_dir>/s3-secret, created once. Both binaries call it. 0 or -1. */
int config_s3_secret(struct config *cfg, char **err);
/* True when attachments go to natter-api's embedded store. */
bool config_embedded_store(const struct config *cfg);

/* Writes the --help text for role to stdout. */
void config_print_help(const char *prog, enum config_role role);
/* Logs the effective configuration with secrets redacted. */
void config_log(const struct config *cfg, enum config_role role);

#endif
