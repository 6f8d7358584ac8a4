/*
 * auth.h — accounts and sessions: register, login (one device per login),
 * refresh-token rotation with reuse detection, logout, and the bearer-token
 * check every R_AUTH route runs before its handler.
 */
#ifndef NATTER_AUTH_H
#define NATTER_AUTH_H

#include <jansson.h>
#include <libpq-fe.h>

struct req;

/* Verifies the Bearer JWT (HS256 pinned, exp enforced) and that its device is
 * live; sets r->user_id and r->device_id. 0, or -1 after replying 401/503. */
int auth_authenticate(struct req *r);
/* The transport's admission check of offloaded routes (server.admit), on the
 * HTTP thread: registrations are rate-limited per client address and over
 * all addresses before they take a slot of the hashing pool. 0, or -1 after
 * replying 429. */
int auth_admit(struct req *r);

/* Sets the argon2id cost preset ("interactive" | "moderate" | "sensitive" | "min"). */
void auth_set_pwhash_cost(const char *preset);
/* Hashes pw into out (crypto_pwhash_STRBYTES). 0 or -1. */
int auth_hash_password(const char *pw, size_t len, char *out);
/* Password policy: NULL when acceptable, else a reason. */
const char *auth_password_weakness(const char *pw, const char *username);
/* Username syntax: true when valid. */
int auth_username_valid(const char *u);

/* The users row of a username: by_name is a statement with the username as $1 that
 * finds the row through `WHERE id = (SELECT user_id FROM usernames WHERE name_lower =
 * lower($1))`, by_id the same columns with the user id as $1. Plain PostgreSQL runs
 * by_name; on Citus (usernames is distributed by the name, users by id: the subquery
 * would make the users part visit every shard) the name's id is read first and
 * by_id runs with it, two one-shard statements. A result with 0 or 1 rows (owned by
 * the request), or NULL after replying. */
PGresult *user_by_name(struct req *r, const char *name, const char *by_name, const char *by_id);

/* Builds a User JSON object from a users row (id, username, display_name, created_at). */
json_t *user_json(const char *id, const char *username, const char *display_name, const char *created_at);

int auth_register(struct req *r);
int auth_login(struct req *r);
int auth_refresh(struct req *r);
int auth_logout(struct req *r);

#endif
