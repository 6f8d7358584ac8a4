/*
 * natjwt.c — sign and verify access tokens with libjwt (see jwt.h for the rules).
 */
#include "natjwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jwt.h>

#include "util.h"

#define JWT_MAX_LEN 2048 /* far above what we issue; bounds work on garbage */

char *natter_jwt_sign(const char *secret, int64_t user_id, int64_t device_id, int64_t now, int ttl)
{
    jwt_t *jwt = NULL;
    char *out = NULL, *tok = NULL;
    char sub[24];
    snprintf(sub, sizeof sub, "%lld", (long long)user_id);
    if (jwt_new(&jwt) != 0)
        goto out;
    if (jwt_add_grant(jwt, "iss", "natter") || jwt_add_grant(jwt, "sub", sub) ||
        jwt_add_grant_int(jwt, "did", (long)device_id) || jwt_add_grant_int(jwt, "iat", (long)now) ||
        jwt_add_grant_int(jwt, "exp", (long)(now + ttl)))
        goto out;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) != 0)
        goto out;
    tok = jwt_encode_str(jwt);
    if (tok)
        out = xstrdup(tok);
out:
    free(tok);
    jwt_free(jwt);
    return out;
}

enum jwt_status natter_jwt_verify(const char *secret, const char *token, int64_t now, int64_t *user_id,
                                  int64_t *device_id)
{
    jwt_t *jwt = NULL;
    char *claims = NULL; /* owned, from libjwt */
    json_t *root = NULL;
    enum jwt_status st = JWT_INVALID;
    if (!secret || !*secret || !token || strlen(token) > JWT_MAX_LEN)
        return JWT_INVALID;
    /* the header must say HS256 before we let libjwt near it: never a NULL key, never alg=none */
    if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 || !jwt)
        goto out;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256)
        goto out;
    /* The claims are read from the payload with their JSON types: libjwt's
     * jwt_get_grant_int answers -1 for a claim that is not an integer, which
     * would make an `exp` of "9999999999" (a string) look long expired. A
     * claim of the wrong type is a malformed token, not an expired one. */
    claims = jwt_get_grants_json(jwt, NULL);
    root = claims ? json_loads(claims, 0, NULL) : NULL;
    if (!json_is_object(root))
        goto out;
    const char *iss = json_string_value(json_object_get(root, "iss"));
    if (!iss || strcmp(iss, "natter") != 0)
        goto out;
    const char *sub = json_string_value(json_object_get(root, "sub"));
    int64_t uid;
    if (!sub || !parse_i64(sub, &uid) || uid <= 0)
        goto out;
    json_t *jdid = json_object_get(root, "did"), *jexp = json_object_get(root, "exp");
    if (!json_is_integer(jdid) || json_integer_value(jdid) <= 0 || !json_is_integer(jexp))
        goto out;
    int64_t did = json_integer_value(jdid), exp = json_integer_value(jexp);
    if (exp <= now) {
        st = JWT_EXPIRED;
        goto out;
    }
    *user_id = uid;
    *device_id = did;
    st = JWT_OK;
out:
    json_decref(root);
    free(claims);
    jwt_free(jwt);
    return st;
}
