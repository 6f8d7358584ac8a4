/*
 * migrate.h — schema migrations embedded in the binaries at build time from
 * migrations/NNN_name.sql (see scripts/embed.sh).
 *
 * migrate_apply() takes a session advisory lock (so concurrent runs serialise),
 * creates schema_migrations if needed, and applies each missing file in its
 * own transaction together with its schema_migrations row.
 * migrate_check() tells whether the database has every embedded migration.
 */
#ifndef NATTER_MIGRATE_H
#define NATTER_MIGRATE_H

#include <libpq-fe.h>

struct embedded_file {
    const char *name; /* file name, e.g. "001_initial.sql" */
    const char *data; /* NUL-terminated contents */
    unsigned long len;
};

extern const struct embedded_file natter_migrations[];
extern const unsigned long natter_migrations_count;

/* 0 on success (logs each applied file), -1 on failure (logged). */
int migrate_apply(PGconn *c);
/* 0 when up to date; 1 when behind (have and want set); -1 on a query failure. */
int migrate_check(PGconn *c, int *have, int *want);

#endif
