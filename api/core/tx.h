/*
 * tx.h — the request's database session: one pooled connection per request
 * (taken on first use, given back when the reply is decided), parameterised
 * statements whose results live as long as the request, and transactions.
 *
 * Post-commit work belongs to the layers above, which register it here:
 * tx_on_commit(hook) hands back a note kind; inside a transaction a handler
 * records what it wrote with tx_note(r, kind, a, b); once COMMIT succeeded
 * req_commit calls each hook with the notes of its kind (acknowledged means
 * durable: nothing runs for a rollback or a failed commit). The realtime
 * layer registers the wake-up of waiting long-polls this way (realtime/bus.h).
 */
#ifndef NATTER_TX_H
#define NATTER_TX_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct req;

struct tx_note {
    int kind; /* from tx_on_commit */
    int64_t a, b;
    void *p; /* owned by the note: given to the kind's release function */
};

/* Called after COMMIT with the n (>= 1) notes of its kind, in recording
 * order. The notes' pointers are borrowed: the hook takes its own reference
 * to what it keeps. */
typedef void (*tx_hook_fn)(const struct tx_note *notes, size_t n);

#define TX_MAX_HOOKS 4

/* Registers a post-commit hook and returns its note kind (>= 0), or -1 when
 * TX_MAX_HOOKS are taken. release (may be NULL) frees a note's p once its
 * hook ran or the note was dropped (rollback, failed commit, a request that
 * ended mid-transaction). Only at start-up, before http_start. */
int tx_on_commit(tx_hook_fn fn, void (*release)(void *p));

/* The request's pooled connection (acquired once, released at request end);
 * NULL after replying 503. */
PGconn *req_db(struct req *r);
/* PQexecParams with text params; the result belongs to the request. On an
 * error result replies 500 (or 503 when the server is gone or a conflict
 * happened) and returns NULL, unless the SQLSTATE is listed in allow (e.g.
 * "23505"), in which case the failed result is returned for the caller to
 * inspect. */
PGresult *req_sql(struct req *r, const char *allow, const char *sql, int n, const char *const *vals);
/* BEGIN / COMMIT / ROLLBACK on the request's connection: 0 or -1 after
 * replying. req_commit runs the post-commit hooks; req_rollback drops the notes. */
int req_begin(struct req *r);
int req_commit(struct req *r);
int req_rollback(struct req *r);
/* Records, in the open transaction, a note for the hook of kind; p (may be
 * NULL) is owned by the note from here. */
void tx_note(struct req *r, int kind, int64_t a, int64_t b, void *p);
/* Drops the notes of the open transaction (http.c, when a request ends). */
void tx_drop_notes(struct req *r);
/* Returns the pooled connection early (before suspending a long-poll). */
void req_release_db(struct req *r);
/* "{1,2,3}" from an array of ids, a text parameter for `= ANY ($n::bigint[])`;
 * owned by the request. */
const char *req_id_array(struct req *r, const int64_t *ids, size_t n);

#endif
