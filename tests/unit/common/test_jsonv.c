/* test_jsonv.c — request-body validation tables. */
#include <string.h>

#include "jsonv.h"
#include "unit.h"

static const struct jfield fields[] = {
    {"name", JT_STRING, 1, 1, 5, JF_NO_CONTROL},
    {"age", JT_INT, 0, 0, 150, 0},
    {"tags", JT_ARRAY, 0, 0, 2, 0},
    {"ok", JT_BOOL, 0, 0, 0, 0},
    {"note", JT_STRING, 0, 0, 10, JF_NULLABLE},
};

static int check(const char *text, const char **field)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        return 99;
    struct jsonv_error err;
    int rc = jsonv_check(j, fields, 5, &err);
    static char saved[64];
    saved[0] = '\0';
    if (err.field)
        strncpy(saved, err.field, sizeof saved - 1);
    *field = saved;
    json_decref(j);
    return rc;
}

void suite_jsonv(void)
{
    const char *f;
    CHECK(check("{\"name\":\"abc\"}", &f) == 0);
    CHECK(check("{\"name\":\"abc\",\"age\":3,\"tags\":[1],\"ok\":true,\"note\":null}", &f) == 0);
    CHECK(check("{}", &f) == -1 && strcmp(f, "name") == 0);                      /* missing */
    CHECK(check("{\"name\":\"abc\",\"x\":1}", &f) == -1 && strcmp(f, "x") == 0); /* unknown */
    CHECK(check("{\"name\":1}", &f) == -1 && strcmp(f, "name") == 0);            /* type */
    CHECK(check("{\"name\":null}", &f) == -1 && strcmp(f, "name") == 0);         /* null */
    CHECK(check("{\"name\":\"\"}", &f) == -1);                                   /* too short */
    CHECK(check("{\"name\":\"abcdef\"}", &f) == -1);                             /* too long */
    /* five characters, fifteen bytes: lengths count characters */
    CHECK(check("{\"name\":\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}", &f) == 0);
    CHECK(check("{\"name\":\"\\ud83d\\ude00\\ud83d\\ude00\"}", &f) == 0);
    CHECK(check("{\"name\":\"a\\tb\"}", &f) == -1); /* control */
    CHECK(check("{\"name\":\"a\",\"age\":151}", &f) == -1 && strcmp(f, "age") == 0);
    CHECK(check("{\"name\":\"a\",\"age\":1.5}", &f) == -1 && strcmp(f, "age") == 0);
    CHECK(check("{\"name\":\"a\",\"age\":\"1\"}", &f) == -1);
    CHECK(check("{\"name\":\"a\",\"tags\":[1,2,3]}", &f) == -1 && strcmp(f, "tags") == 0);
    CHECK(check("{\"name\":\"a\",\"ok\":1}", &f) == -1 && strcmp(f, "ok") == 0);

    struct jsonv_error err;
    json_t *arr = json_array();
    CHECK(jsonv_check(arr, fields, 5, &err) == -1); /* not an object */
    json_decref(arr);

    /* jansson itself must refuse what we rely on it to refuse */
    json_error_t e;
    CHECK(json_loads("{\"a\":1,\"a\":2}", JSON_REJECT_DUPLICATES, &e) == NULL);
    CHECK(json_loads("{\"a\":\"\\u0000\"}", 0, &e) == NULL);
    CHECK(json_loadb("{\"a\":\"\xff\"}", 10, 0, &e) == NULL);
}
