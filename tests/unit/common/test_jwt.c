/* test_jwt.c — access tokens: round trip, expiry, pinned algorithm, tampering. */
#include <stdlib.h>
#include <string.h>

#include <jwt.h>
#include <sodium.h>

#include "natjwt.h"
#include "unit.h"

static const char *secret = "0123456789abcdef0123456789abcdef-unit";

/* A token with arbitrary alg/claims made directly with libjwt. */
static char *forge(jwt_alg_t alg, const char *key, const char *claims_json)
{
    jwt_t *j = NULL;
    jwt_new(&j);
    jwt_add_grants_json(j, claims_json);
    jwt_set_alg(j, alg, key ? (const unsigned char *)key : NULL, key ? (int)strlen(key) : 0);
    char *t = jwt_encode_str(j);
    jwt_free(j);
    return t;
}

static char *b64url(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 2 + 8);
    sodium_bin2base64(out, n * 2 + 8, (const unsigned char *)s, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

void suite_jwt(void)
{
    int64_t u = 0, d = 0;
    char *t = natter_jwt_sign(secret, 42, 7, 1000, 900);
    CHECK(t != NULL);
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_OK && u == 42 && d == 7);
    CHECK(natter_jwt_verify(secret, t, 1899, &u, &d) == JWT_OK);
    CHECK(natter_jwt_verify(secret, t, 1900, &u, &d) == JWT_EXPIRED); /* exp enforced */
    CHECK(natter_jwt_verify("another-secret-another-secret-xx", t, 1000, &u, &d) == JWT_INVALID);
    CHECK(natter_jwt_verify(NULL, t, 1000, &u, &d) == JWT_INVALID); /* never a NULL key */

    /* tamper with the payload: signature must fail */
    char *tampered = strdup(t);
    char *dot = strchr(tampered, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    CHECK(natter_jwt_verify(secret, tampered, 1000, &u, &d) == JWT_INVALID);
    free(tampered);
    free(t);

    const char *claims = "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"iat\":1000,\"exp\":5000}";
    /* right secret, wrong algorithm: pinned to HS256 */
    t = forge(JWT_ALG_HS512, secret, claims);
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID);
    free(t);
    t = forge(JWT_ALG_HS384, secret, claims);
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID);
    free(t);
    /* alg=none, built by hand */
    char *h = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}"), *p = b64url(claims);
    size_t n = strlen(h) + strlen(p) + 3;
    char *none = malloc(n);
    snprintf(none, n, "%s.%s.", h, p);
    CHECK(natter_jwt_verify(secret, none, 1000, &u, &d) == JWT_INVALID);
    free(none);
    free(h);
    free(p);
    /* missing or bad claims */
    t = forge(JWT_ALG_HS256, secret, "{\"iss\":\"natter\",\"sub\":\"42\",\"iat\":1000,\"exp\":5000}");
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID); /* no did */
    free(t);
    t = forge(JWT_ALG_HS256, secret, "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"iat\":1000}");
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID); /* no exp */
    free(t);
    t = forge(JWT_ALG_HS256, secret, "{\"iss\":\"other\",\"sub\":\"42\",\"did\":7,\"exp\":5000}");
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID); /* issuer */
    free(t);
    t = forge(JWT_ALG_HS256, secret, "{\"iss\":\"natter\",\"sub\":\"x1\",\"did\":7,\"exp\":5000}");
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID); /* sub not an id */
    free(t);
    /* claims of the wrong JSON type are malformed, not expired (an exp that
     * is a string read as -1 through jwt_get_grant_int) */
    static const char *const wrong_types[] = {
        "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"exp\":\"5000\"}",
        "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"exp\":\"9999999999\"}",
        "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"exp\":true}",
        "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"exp\":null}",
        "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"exp\":[5000]}",
        "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":\"7\",\"exp\":5000}",
        "{\"iss\":\"natter\",\"sub\":42,\"did\":7,\"exp\":5000}",
    };
    for (size_t i = 0; i < sizeof wrong_types / sizeof wrong_types[0]; i++) {
        t = forge(JWT_ALG_HS256, secret, wrong_types[i]);
        CHECK(t != NULL);
        CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_INVALID);
        CHECK(natter_jwt_verify(secret, t, 6000, &u, &d) == JWT_INVALID); /* never "expired" */
        free(t);
    }
    /* the same claims with the right types still verify, and expire */
    t = forge(JWT_ALG_HS256, secret, "{\"iss\":\"natter\",\"sub\":\"42\",\"did\":7,\"exp\":5000}");
    CHECK(natter_jwt_verify(secret, t, 1000, &u, &d) == JWT_OK && u == 42 && d == 7);
    CHECK(natter_jwt_verify(secret, t, 6000, &u, &d) == JWT_EXPIRED);
    free(t);
    /* garbage */
    CHECK(natter_jwt_verify(secret, "", 1000, &u, &d) == JWT_INVALID);
    CHECK(natter_jwt_verify(secret, "a.b.c", 1000, &u, &d) == JWT_INVALID);
    CHECK(natter_jwt_verify(secret, "not a token", 1000, &u, &d) == JWT_INVALID);
    char big[4000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(natter_jwt_verify(secret, big, 1000, &u, &d) == JWT_INVALID);
}
