/*
 * jsonv.c — table-driven JSON body validation (see jsonv.h).
 */
#include "jsonv.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static const char *const type_names[] = {"string", "integer", "boolean", "array", "object"};

static int fail(struct jsonv_error *err, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct jsonv_error *err, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err->field = field;
    vsnprintf(err->reason, sizeof err->reason, fmt, ap);
    va_end(ap);
    return -1;
}

static int check_one(const json_t *v, const struct jfield *f, struct jsonv_error *err)
{
    if (json_is_null(v) && (f->flags & JF_NULLABLE))
        return 0;
    switch (f->type) {
    case JT_STRING: {
        if (!json_is_string(v))
            break;
        const char *s = json_string_value(v);
        size_t bytes = json_string_length(v);
        long long chars = (long long)utf8_chars(s, bytes);
        if (chars < f->min || chars > f->max)
            return fail(err, f->name, "must be %lld to %lld characters long", f->min, f->max);
        if ((f->flags & JF_NO_CONTROL) && utf8_has_control(s, bytes)) {
            err->field = f->name;
            snprintf(err->reason, sizeof err->reason, "must not contain control characters");
            return -1;
        }
        return 0;
    }
    case JT_INT: {
        if (!json_is_integer(v))
            break;
        long long n = json_integer_value(v);
        if (n < f->min || n > f->max)
            return fail(err, f->name, "must be between %lld and %lld", f->min, f->max);
        return 0;
    }
    case JT_BOOL:
        if (!json_is_boolean(v))
            break;
        return 0;
    case JT_ARRAY: {
        if (!json_is_array(v))
            break;
        long long n = (long long)json_array_size(v);
        if (n < f->min || n > f->max)
            return fail(err, f->name, "must have %lld to %lld items", f->min, f->max);
        return 0;
    }
    case JT_OBJECT:
        if (!json_is_object(v))
            break;
        return 0;
    }
    err->field = f->name;
    snprintf(err->reason, sizeof err->reason, "must be %s%s", type_names[f->type],
             (f->flags & JF_NULLABLE) ? " or null" : "");
    return -1;
}

int jsonv_check(const json_t *obj, const struct jfield *fields, size_t n, struct jsonv_error *err)
{
    err->field = NULL;
    err->reason[0] = '\0';
    if (!json_is_object(obj)) {
        snprintf(err->reason, sizeof err->reason, "body must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *val;
    /* unknown keys first: a typo must not hide behind a "missing field" error */
    json_object_foreach((json_t *)obj, key, val) {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(fields[i].name, key) == 0)
                break;
        if (i == n) {
            err->field = key;
            snprintf(err->reason, sizeof err->reason, "unknown field");
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_object_get(obj, fields[i].name);
        if (!v) {
            if (fields[i].required) {
                err->field = fields[i].name;
                snprintf(err->reason, sizeof err->reason, "is required");
                return -1;
            }
            continue;
        }
        if (check_one(v, &fields[i], err) < 0)
            return -1;
    }
    return 0;
}
