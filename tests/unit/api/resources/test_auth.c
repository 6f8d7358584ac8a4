/* test_auth.c — username syntax and password policy. */
#include <stddef.h>

#include "auth.h"
#include "unit.h"

void suite_auth(void)
{
    CHECK(auth_username_valid("alice"));
    CHECK(auth_username_valid("a1_.-"));
    CHECK(auth_username_valid("abc"));
    CHECK(!auth_username_valid("ab"));
    CHECK(!auth_username_valid("abcdefghijabcdefghijabcdefghijabc")); /* 33 */
    CHECK(!auth_username_valid(".alice"));
    CHECK(!auth_username_valid("al ice"));
    CHECK(!auth_username_valid("al\xc3\xa9"));

    CHECK(auth_password_weakness("correct horse", "alice") == NULL);
    CHECK(auth_password_weakness("short", "alice") != NULL);
    CHECK(auth_password_weakness("aaaaaaaaaa", "alice") != NULL);
    CHECK(auth_password_weakness("AliceAlice", "alicealice") != NULL);
    CHECK(auth_password_weakness("Password", "alice") != NULL);
    CHECK(auth_password_weakness("12345678", "alice") != NULL);
    /* eight characters of multibyte text is long enough: characters, not bytes */
    CHECK(auth_password_weakness("\xc3\xa9t\xc3\xa9 ros\xc3\xa9", "alice") == NULL);
}
