/*
 * fuzz_jsonv.c — request bodies: jansson parses the bytes as the server does
 * (common/jsonv.c callers), then jsonv_check runs against a table with every
 * type and flag. Properties: an accepted object has every required key, no
 * unknown key, and each value within its bounds; a refusal names a field.
 */
#include <jansson.h>
#include <stdbool.h>

#include "fuzz.h"
#include "jsonv.h"
#include "util.h"

static const struct jfield fields[] = {
    {"text", JT_STRING, true, 1, 40, JF_NO_CONTROL},
    {"title", JT_STRING, false, 0, 8, JF_NULLABLE},
    {"n", JT_INT, false, -5, 1000, 0},
    {"flag", JT_BOOL, false, 0, 0, 0},
    {"ids", JT_ARRAY, false, 0, 3, 0},
    {"extra", JT_OBJECT, false, 0, 0, JF_NULLABLE},
};

static const struct jfield *field_of(const char *key)
{
    for (size_t i = 0; i < JSONV_COUNT(fields); i++)
        if (strcmp(fields[i].name, key) == 0)
            return &fields[i];
    return NULL;
}

static void check_accepted(const json_t *obj)
{
    FUZZ_ASSERT(json_is_object(obj));
    FUZZ_ASSERT(json_object_get(obj, "text") != NULL);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        const struct jfield *f = field_of(key);
        FUZZ_ASSERT(f != NULL);
        if (json_is_null(v)) {
            FUZZ_ASSERT(f->flags & JF_NULLABLE);
            continue;
        }
        switch (f->type) {
        case JT_STRING: {
            FUZZ_ASSERT(json_is_string(v));
            const char *s = json_string_value(v);
            size_t len = json_string_length(v);
            long long chars = (long long)utf8_chars(s, len);
            FUZZ_ASSERT(chars >= f->min && chars <= f->max);
            if (f->flags & JF_NO_CONTROL)
                FUZZ_ASSERT(!utf8_has_control(s, len));
            break;
        }
        case JT_INT:
            FUZZ_ASSERT(json_is_integer(v));
            FUZZ_ASSERT(json_integer_value(v) >= f->min && json_integer_value(v) <= f->max);
            break;
        case JT_BOOL:
            FUZZ_ASSERT(json_is_boolean(v));
            break;
        case JT_ARRAY:
            FUZZ_ASSERT(json_is_array(v));
            FUZZ_ASSERT((long long)json_array_size(v) >= f->min && (long long)json_array_size(v) <= f->max);
            break;
        case JT_OBJECT:
            FUZZ_ASSERT(json_is_object(v));
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return 0;
    struct jsonv_error err = {0};
    if (jsonv_check(body, fields, JSONV_COUNT(fields), &err) == 0)
        check_accepted(body);
    else
        FUZZ_ASSERT(json_is_object(body) ? err.field != NULL : true);
    FUZZ_ASSERT(memchr(err.reason, '\0', sizeof err.reason) != NULL);
    json_decref(body);
    return 0;
}
