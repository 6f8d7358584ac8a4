/*
 * db.c — PostgreSQL connection pool (see db.h).
 *
 * A slot array guarded by one mutex and a condition variable. Connecting
 * happens outside the lock so one slow connect does not stall the pool.
 */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define STMT_MAX 128 /* prepared statements remembered per connection */

/* The statements prepared on one pooled connection, keyed by the address of
 * their SQL text (every request statement is a static constant). Only the
 * thread holding the slot touches it, so it needs no lock. */
struct stmt_cache {
    const char *sql[STMT_MAX];
    int n;
};

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *conninfo;
    int size;
    int in_use;
    PGconn **conns; /* NULL slot = not connected */
    bool *busy;
    struct stmt_cache *caches; /* per slot; emptied whenever the slot reconnects */
};

struct db_pool *db_pool_new(const char *conninfo, int size)
{
    struct db_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->conninfo = xstrdup(conninfo);
    p->size = size;
    p->conns = xcalloc((size_t)size, sizeof *p->conns);
    p->busy = xcalloc((size_t)size, sizeof *p->busy);
    p->caches = xcalloc((size_t)size, sizeof *p->caches);
    return p;
}

void db_pool_free(struct db_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->size; i++)
        if (p->conns[i])
            PQfinish(p->conns[i]);
    free(p->conns);
    free(p->busy);
    free(p->caches);
    free(p->conninfo);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* libpq's notice receiver: a server NOTICE/WARNING as a JSON line (by
 * default libpq prints "NOTICE:  …" as plain text on stderr, e.g. for every
 * `CREATE TABLE IF NOT EXISTS` of a repeated migrate). Notices below WARNING
 * are debug lines: they say nothing an operator must act on. */
static void on_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool warn = sev && strcmp(sev, "WARNING") == 0;
    enum log_level lvl = warn ? LOG_WARN : LOG_DEBUG;
    if (!log_enabled(lvl))
        return;
    nlog(lvl, "postgres notice",
         json_pack("{s:s,s:s,s:s}", "severity", sev ? sev : "", "message", msg ? msg : "", "sqlstate",
                   state ? state : ""));
}

static atomic_bool citus_on;

#define DB_CITUS_CACHED_CONNS "8" /* per worker, per natter session: a bound */

PGconn *db_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    PQsetNoticeReceiver(c, on_notice, NULL);
    if (PQstatus(c) == CONNECTION_OK && atomic_load(&citus_on)) {
        /* Citus plans most of natter's statements only with their parameters'
         * values: no generic plans of prepared statements. And a session keeps
         * its connections to the workers between transactions (Citus keeps one
         * per worker by default; a multi-shard statement opens more, and
         * opening one costs more than most of natter's statements) */
        PGresult *r = PQexec(c,
                             "SET plan_cache_mode = force_custom_plan;"
                             " SET citus.max_cached_conns_per_worker = " DB_CITUS_CACHED_CONNS);
        if (!db_res_ok(r))
            nlog(LOG_WARN, "cannot set plan_cache_mode for Citus", json_pack("{s:s}", "error", PQerrorMessage(c)));
        PQclear(r);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char *msg = xstrdup(PQerrorMessage(c));
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            msg[--n] = '\0';
        nlog(LOG_ERROR, "postgres connect failed", json_pack("{s:s}", "error", msg));
        free(msg);
        PQfinish(c);
        return NULL;
    }
    return c;
}

PGconn *db_acquire(struct db_pool *p, int timeout_ms)
{
    int slot;
    return db_acquire_slot(p, timeout_ms, &slot);
}

PGconn *db_acquire_slot(struct db_pool *p, int timeout_ms, int *slot_out)
{
    struct timespec deadline;
    timespec_after(CLOCK_MONOTONIC, (uint64_t)timeout_ms * 1000u, &deadline);
    int slot = -1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* prefer a slot with a live connection */
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->busy[i] && p->conns[i])
                slot = i;
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->busy[i])
                slot = i;
        if (slot >= 0)
            break;
        if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            nlog(LOG_WARN, "database pool exhausted", json_pack("{s:i}", "timeout_ms", timeout_ms));
            return NULL;
        }
    }
    p->busy[slot] = true;
    p->in_use++;
    PGconn *c = p->conns[slot];
    pthread_mutex_unlock(&p->mu);

    if (c && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    }
    if (!c) {
        c = db_connect(p->conninfo);
        p->caches[slot].n = 0; /* a new session has no prepared statements */
    }
    *slot_out = slot;

    pthread_mutex_lock(&p->mu);
    p->conns[slot] = c;
    if (!c) {
        p->busy[slot] = false;
        p->in_use--;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return c;
}

void db_release(struct db_pool *p, PGconn *c)
{
    if (!c)
        return;
    int slot = -1;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++)
        if (p->busy[i] && p->conns[i] == c)
            slot = i;
    pthread_mutex_unlock(&p->mu);

    /* drain anything left over from an async use */
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) {
        nlog(LOG_WARN, "dropping database connection: not idle after rollback", NULL);
        PQfinish(c);
        c = NULL;
    }

    pthread_mutex_lock(&p->mu);
    if (slot >= 0) {
        if (!c)
            p->caches[slot].n = 0;
        p->conns[slot] = c;
        p->busy[slot] = false;
        p->in_use--;
    }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (slot < 0 && c)
        PQfinish(c); /* not from this pool: should not happen, but do not leak */
}

void db_pool_stats(struct db_pool *p, int *size, int *in_use)
{
    pthread_mutex_lock(&p->mu);
    *size = p->size;
    *in_use = p->in_use;
    pthread_mutex_unlock(&p->mu);
}

const char *db_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

bool db_res_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

int64_t db_i64(const PGresult *res, int row, int col)
{
    int64_t v = 0;
    parse_i64(PQgetvalue(res, row, col), &v);
    return v;
}

char *db_id_array(const int64_t *ids, size_t n)
{
    char *s = xmalloc(n * 21 + 3);
    size_t len = 0;
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(s + len, "%s%lld", i ? "," : "", (long long)ids[i]);
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static atomic_ullong statements;

int db_detect_citus(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')");
    bool ext = db_res_ok(r) && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    int rc = db_res_ok(r) ? 0 : -1;
    PQclear(r);
    if (rc == 0 && ext) {
        r = PQexec(c, "SELECT EXISTS (SELECT 1 FROM pg_dist_partition)");
        rc = db_res_ok(r) && PQntuples(r) == 1 ? 0 : -1;
        atomic_store(&citus_on, rc == 0 && PQgetvalue(r, 0, 0)[0] == 't');
        PQclear(r);
    }
    if (rc < 0)
        nlog(LOG_ERROR, "cannot tell whether the database is a Citus coordinator", NULL);
    return rc;
}

bool db_citus(void)
{
    return atomic_load(&citus_on);
}

unsigned long long db_statements(void)
{
    return atomic_load_explicit(&statements, memory_order_relaxed);
}

PGresult *db_query(struct db_pool *p, int slot, PGconn *c, const char *sql, int n, const char *const *vals)
{
    atomic_fetch_add_explicit(&statements, 1, memory_order_relaxed);
    /* parameterless statements (BEGIN, COMMIT, …) are cheap to parse: not cached */
    if (slot < 0 || slot >= p->size || n == 0)
        return PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    struct stmt_cache *sc = &p->caches[slot];
    int idx = -1;
    for (int i = 0; i < sc->n; i++)
        if (sc->sql[i] == sql) {
            idx = i;
            break;
        }
    char name[16];
    if (idx < 0) {
        if (sc->n == STMT_MAX)
            return PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
        snprintf(name, sizeof name, "n%d", sc->n);
        PGresult *pr = PQprepare(c, name, sql, n, NULL);
        if (!db_res_ok(pr) && PQtransactionStatus(c) == PQTRANS_INERROR)
            return pr; /* the prepare itself failed the transaction (a statement_timeout of a
                          search, say): its error is the statement's, not the 25P02 a retry gets */
        bool ok = db_res_ok(pr);
        PQclear(pr);
        if (!ok) /* e.g. inside an aborted transaction: let the plain call report it */
            return PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
        idx = sc->n;
        sc->sql[sc->n++] = sql;
    }
    snprintf(name, sizeof name, "n%d", idx);
    return PQexecPrepared(c, name, n, vals, NULL, NULL, 0);
}

bool db_session_open(struct db_session *s, const char *conninfo)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return true;
    db_session_close(s);
    s->conn = db_connect(conninfo);
    if (!s->conn)
        return false;
    /* generic plans save the planning of every batch; Citus needs custom ones (db_connect) */
    PGresult *r = PQexec(s->conn, db_citus() ? "SET plan_cache_mode = force_custom_plan"
                                             : "SET plan_cache_mode = force_generic_plan");
    bool ok = db_res_ok(r);
    PQclear(r);
    if (!ok) {
        nlog(LOG_ERROR, "cannot set up a batch connection", json_pack("{s:s}", "error", PQerrorMessage(s->conn)));
        db_session_close(s);
    }
    return ok;
}

void db_session_close(struct db_session *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->nsql = 0; /* a new session has no prepared statements */
}

PGresult *db_session_exec(struct db_session *s, const char *sql, int n, const char *const *vals)
{
    if (n == 0)
        return PQexec(s->conn, sql);
    int idx = -1;
    for (int i = 0; i < s->nsql; i++)
        if (s->sql[i] == sql) {
            idx = i;
            break;
        }
    char name[16];
    if (idx < 0) {
        if (s->nsql == DB_SESSION_STMTS)
            return PQexecParams(s->conn, sql, n, NULL, vals, NULL, NULL, 0);
        snprintf(name, sizeof name, "b%d", s->nsql);
        PGresult *pr = PQprepare(s->conn, name, sql, n, NULL);
        bool ok = db_res_ok(pr);
        PQclear(pr);
        if (!ok) /* e.g. inside an aborted transaction: let the plain call report it */
            return PQexecParams(s->conn, sql, n, NULL, vals, NULL, NULL, 0);
        idx = s->nsql;
        s->sql[s->nsql++] = sql;
    }
    snprintf(name, sizeof name, "b%d", idx);
    return PQexecPrepared(s->conn, name, n, vals, NULL, NULL, 0);
}
