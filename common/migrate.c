/*
 * migrate.c — apply and check the embedded migrations (see migrate.h).
 */
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "util.h"

/* arbitrary constant: the advisory lock id shared by every migrate run */
#define MIGRATE_LOCK_ID "7346021785"

static int version_of(const char *name)
{
    return atoi(name); /* file names start with their number: 001_initial.sql */
}

static int exec_ok(PGconn *c, const char *sql, int n, const char *const *vals, const char *what)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    int ok = db_res_ok(r);
    if (!ok)
        nlog(LOG_ERROR, "migration step failed",
             json_pack("{s:s,s:s}", "step", what, "error", PQresultErrorMessage(r)));
    PQclear(r);
    return ok ? 0 : -1;
}

int migrate_apply(PGconn *c)
{
    int rc = -1;
    PGresult *r = NULL;
    if (exec_ok(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_ID ")", 0, NULL, "lock") < 0)
        return -1;
    if (exec_ok(c,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                0, NULL, "create schema_migrations") < 0)
        goto out;
    for (unsigned long i = 0; i < natter_migrations_count; i++) {
        const struct embedded_file *m = &natter_migrations[i];
        char ver[16];
        snprintf(ver, sizeof ver, "%d", version_of(m->name));
        const char *vals[2] = {ver, m->name};
        r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, vals, NULL, NULL, 0);
        if (!db_res_ok(r))
            goto out;
        int have = PQntuples(r) > 0;
        PQclear(r);
        r = NULL;
        if (have)
            continue;
        if (exec_ok(c, "BEGIN", 0, NULL, "begin") < 0)
            goto out;
        /* the migration text comes from our own repository, never from input;
         * PQexec is used because a migration holds several statements */
        r = PQexec(c, m->data);
        if (!db_res_ok(r)) {
            nlog(LOG_ERROR, "migration failed",
                 json_pack("{s:s,s:s}", "file", m->name, "error", PQresultErrorMessage(r)));
            PQclear(r);
            r = NULL;
            exec_ok(c, "ROLLBACK", 0, NULL, "rollback");
            goto out;
        }
        PQclear(r);
        r = NULL;
        if (exec_ok(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, vals, "record") < 0 ||
            exec_ok(c, "COMMIT", 0, NULL, "commit") < 0) {
            exec_ok(c, "ROLLBACK", 0, NULL, "rollback");
            goto out;
        }
        nlog(LOG_INFO, "migration applied", json_pack("{s:s}", "file", m->name));
    }
    rc = 0;
out:
    PQclear(r);
    exec_ok(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_ID ")", 0, NULL, "unlock");
    return rc;
}

int migrate_check(PGconn *c, int *have, int *want)
{
    *want = 0;
    for (unsigned long i = 0; i < natter_migrations_count; i++) {
        int v = version_of(natter_migrations[i].name);
        if (v > *want)
            *want = v;
    }
    *have = 0;
    PGresult *r = PQexec(c, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (!db_res_ok(r)) {
        PQclear(r);
        return -1;
    }
    int exists = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!exists)
        return 1;
    /* every embedded version must be present, not just the highest */
    int missing = 0;
    for (unsigned long i = 0; i < natter_migrations_count; i++) {
        char ver[16];
        snprintf(ver, sizeof ver, "%d", version_of(natter_migrations[i].name));
        const char *vals[1] = {ver};
        r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, vals, NULL, NULL, 0);
        if (!db_res_ok(r)) {
            PQclear(r);
            return -1;
        }
        if (PQntuples(r) == 0)
            missing++;
        else if (version_of(natter_migrations[i].name) > *have)
            *have = version_of(natter_migrations[i].name);
        PQclear(r);
    }
    return missing ? 1 : 0;
}
