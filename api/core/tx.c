/*
 * tx.c — the request's database session and post-commit hooks (see tx.h).
 */
#include "tx.h"

#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "http.h"
#include "log.h"
#include "util.h"

static tx_hook_fn hooks[TX_MAX_HOOKS];
static void (*releases[TX_MAX_HOOKS])(void *p);
static int nhooks;

int tx_on_commit(tx_hook_fn fn, void (*release)(void *p))
{
    if (nhooks == TX_MAX_HOOKS)
        return -1;
    hooks[nhooks] = fn;
    releases[nhooks] = release;
    return nhooks++;
}

void tx_drop_notes(struct req *r)
{
    for (size_t i = 0; i < r->nnotes; i++)
        if (r->notes[i].p && releases[r->notes[i].kind])
            releases[r->notes[i].kind](r->notes[i].p);
    r->nnotes = 0;
}

static int reply_unavailable(struct req *r, const char *detail)
{
    req_add_header(r, "Retry-After", "1");
    return reply_problem(r, 503, "service_unavailable", "%s", detail);
}

PGconn *req_db(struct req *r)
{
    if (r->db)
        return r->db;
    r->db = db_acquire_slot(r->srv->db, r->srv->cfg->db_pool_timeout_ms, &r->db_slot);
    if (!r->db)
        reply_unavailable(r, "the database is unavailable; retry shortly");
    return r->db;
}

PGresult *req_sql(struct req *r, const char *allow, const char *sql, int n, const char *const *vals)
{
    PGconn *c = req_db(r);
    if (!c)
        return NULL;
    PGresult *res = db_query(r->srv->db, r->db_slot, c, sql, n, vals);
    req_own_result(r, res);
    if (db_res_ok(res))
        return res;
    const char *state = db_sqlstate(res);
    if (allow && *state && strstr(allow, state))
        return res;
    if (PQstatus(c) != CONNECTION_OK || !res || strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0) {
        nlog(LOG_ERROR, "database unavailable",
             json_pack("{s:s,s:s}", "request_id", r->request_id, "error", PQerrorMessage(c)));
        reply_unavailable(r, "the database is unavailable; retry shortly");
        return NULL;
    }
    if (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0) {
        /* lock order makes these unexpected; when one happens the client retries
         * (every write here is idempotent or safe to repeat) */
        nlog(LOG_WARN, "transaction conflict", json_pack("{s:s,s:s}", "request_id", r->request_id, "sqlstate", state));
        reply_unavailable(r, "a concurrent update conflicted; retry");
        return NULL;
    }
    nlog(LOG_ERROR, "query failed",
         json_pack("{s:s,s:s,s:s}", "request_id", r->request_id, "sqlstate", state, "error",
                   PQresultErrorMessage(res)));
    reply_problem(r, 500, "internal_error", "unexpected database error");
    return NULL;
}

int req_begin(struct req *r)
{
    tx_drop_notes(r);
    return req_sql(r, NULL, "BEGIN", 0, NULL) ? 0 : -1;
}

/* Calls each hook with the notes of its kind: the whole array when they are
 * all one kind (the usual case), else a compacted copy. */
static void run_hooks(const struct tx_note *notes, size_t n)
{
    struct tx_note *mine = NULL;
    for (int k = 0; k < nhooks; k++) {
        size_t count = 0;
        for (size_t i = 0; i < n; i++)
            count += notes[i].kind == k;
        if (count == n) {
            hooks[k](notes, n);
            continue;
        }
        if (count == 0)
            continue;
        if (!mine)
            mine = xmalloc(n * sizeof *mine);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (notes[i].kind == k)
                mine[m++] = notes[i];
        hooks[k](mine, m);
    }
    free(mine);
}

int req_commit(struct req *r)
{
    if (!req_sql(r, NULL, "COMMIT", 0, NULL)) {
        tx_drop_notes(r);
        return -1;
    }
    if (r->nnotes)
        run_hooks(r->notes, r->nnotes);
    tx_drop_notes(r); /* the hooks borrowed the notes' pointers */
    return 0;
}

int req_rollback(struct req *r)
{
    tx_drop_notes(r);
    return req_sql(r, NULL, "ROLLBACK", 0, NULL) ? 0 : -1;
}

void tx_note(struct req *r, int kind, int64_t a, int64_t b, void *p)
{
    if (r->nnotes == r->cap_notes) {
        r->cap_notes = r->cap_notes ? r->cap_notes * 2 : 16;
        r->notes = xrealloc(r->notes, r->cap_notes * sizeof *r->notes);
    }
    r->notes[r->nnotes++] = (struct tx_note){kind, a, b, p};
}

void req_release_db(struct req *r)
{
    if (r->db) {
        db_release(r->srv->db, r->db);
        r->db = NULL;
    }
}

const char *req_id_array(struct req *r, const int64_t *ids, size_t n)
{
    return req_own(r, db_id_array(ids, n));
}
