/*
 * natjwt.h — access tokens: HS256 JWTs with claims iss="natter", sub (user id as
 * a string), did (device id), iat, exp.
 *
 * libjwt 1.10 checks neither exp nor the algorithm; natter_jwt_verify does
 * both: the algorithm is pinned to HS256 (alg=none and any other alg are
 * refused) and exp is compared with now. Claims are read with their JSON
 * types: an exp (or did) that is not an integer is JWT_INVALID, never
 * JWT_EXPIRED.
 */
#ifndef NATTER_NATJWT_H
#define NATTER_NATJWT_H

#include <stddef.h>
#include <stdint.h>

enum jwt_status {
    JWT_OK = 0,
    JWT_INVALID, /* malformed, bad signature, wrong alg, missing/bad claims */
    JWT_EXPIRED, /* valid signature, exp <= now */
};

/* Returns an owned token string, or NULL on failure. */
char *natter_jwt_sign(const char *secret, int64_t user_id, int64_t device_id, int64_t now, int ttl);
/* Verifies token against secret at time now; on JWT_OK fills the ids. */
enum jwt_status natter_jwt_verify(const char *secret, const char *token, int64_t now, int64_t *user_id,
                                  int64_t *device_id);

#endif
