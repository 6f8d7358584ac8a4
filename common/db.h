/*
 * db.h — a fixed-size PostgreSQL connection pool (libpq).
 *
 * Connections are opened lazily and reopened after a failure. db_acquire()
 * waits at most timeout_ms for a free slot; callers answer 503 when it returns
 * NULL. db_release() leaves the connection idle: it rolls back an open
 * transaction and drops the connection if that fails, so a handler that bails
 * out mid-transaction can never leak its transaction to the next user.
 */
#ifndef NATTER_DB_H
#define NATTER_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* SQL fragment (a compile-time constant, never built at run time): a
 * timestamptz column as RFC 3339 UTC with milliseconds, e.g. 2026-11-21T09:10:31.123Z */
#define DB_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
/* The same text from natter_ts() (migration 014), declared IMMUTABLE (it is: a fixed
 * zone and only numeric fields): Citus allows no other function in RETURNING. */
#define DB_TS_RET(col) "natter_ts(" col ")"

struct db_pool;

/* conninfo is copied. size >= 1. */
struct db_pool *db_pool_new(const char *conninfo, int size);
void db_pool_free(struct db_pool *p);
/* Returns a connected PGconn (borrowed until db_release), or NULL on timeout or
 * when the server cannot be reached. */
PGconn *db_acquire(struct db_pool *p, int timeout_ms);
/* Same, also telling which slot the connection holds (for db_query). */
PGconn *db_acquire_slot(struct db_pool *p, int timeout_ms, int *slot);
void db_release(struct db_pool *p, PGconn *c);
/* Runs a parameterised statement on a pooled connection, preparing it on
 * first use per connection (sql must be a static constant: its address is
 * the cache key) so PostgreSQL parses and plans it once per session. */
PGresult *db_query(struct db_pool *p, int slot, PGconn *c, const char *sql, int n, const char *const *vals);
void db_pool_stats(struct db_pool *p, int *size, int *in_use);
/* Statements run through db_query (by requests) since start. */
unsigned long long db_statements(void);

/* Whether the database is a Citus coordinator on which natter's tables are
 * distributed: some statements then take another shape (docs/LIBRARIES.md,
 * "Citus"). db_detect_citus asks the database (0, or -1 + log); natter-api does
 * once at start, before serving. */
int db_detect_citus(PGconn *c);
bool db_citus(void);

/* Opens one standalone connection (for migrations and workers); NULL + log on failure. */
PGconn *db_connect(const char *conninfo);

/* A connection of one's own for a batch writer (a pipeline's committer, the
 * ack flusher): its statements are prepared on first use (keyed by the SQL
 * constant's address, as db_query) and planned once, generically
 * (plan_cache_mode = force_generic_plan, also for the statements inside the
 * batch functions): a batch is a few large statements whose planning cost
 * more than executing a small batch. */
#define DB_SESSION_STMTS 16
struct db_session {
    PGconn *conn; /* NULL until db_session_open */
    const char *sql[DB_SESSION_STMTS];
    int nsql;
};
/* Connects when not connected. false (logged) when the server cannot be reached. */
bool db_session_open(struct db_session *s, const char *conninfo);
void db_session_close(struct db_session *s);
/* PQexecParams through the session's prepared statements (sql must be a
 * static constant). A statement without parameters runs as it is. */
PGresult *db_session_exec(struct db_session *s, const char *sql, int n, const char *const *vals);
/* SQLSTATE of a failed result ("" if none). */
const char *db_sqlstate(const PGresult *res);
/* True when res is COMMAND_OK or TUPLES_OK. */
bool db_res_ok(const PGresult *res);
/* Column col of row as an integer (0 when NULL or not a number). */
int64_t db_i64(const PGresult *res, int row, int col);
/* "{1,2,3}": ids as one text parameter for `= ANY ($n::bigint[])`. Owned. */
char *db_id_array(const int64_t *ids, size_t n);

#endif
