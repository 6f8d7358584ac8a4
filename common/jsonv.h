/*
 * jsonv.h — validation of JSON request bodies against a small field table.
 *
 *   static const struct jfield login_fields[] = {
 *       {"username", JT_STRING, true, 1, 64, 0},
 *       {"platform", JT_STRING, false, 1, 16, 0},
 *   };
 *   if (jsonv_check(body, login_fields, JSONV_COUNT(login_fields), &bad) < 0) -> 422 naming bad.field
 *
 * Rejects: non-objects, unknown keys, missing required keys, wrong types
 * (null counts as wrong unless JF_NULLABLE), strings outside [min,max]
 * Unicode characters (not bytes), integers outside [min,max], arrays with a
 * size outside [min,max], and (JF_NO_CONTROL) strings with control characters.
 * Pure: no I/O, no allocation.
 */
#ifndef NATTER_JSONV_H
#define NATTER_JSONV_H

#include <jansson.h>
#include <stddef.h>

enum jtype { JT_STRING, JT_INT, JT_BOOL, JT_ARRAY, JT_OBJECT };

#define JF_NO_CONTROL 0x1u /* strings: no C0/C1 controls or DEL */
#define JF_NULLABLE 0x2u   /* null is accepted */

struct jfield {
    const char *name;
    enum jtype type;
    int required;  /* bool */
    long long min; /* string: chars; int: value; array: items */
    long long max;
    unsigned flags; /* JF_* */
};

struct jsonv_error {
    const char *field; /* borrowed: from the table or from the body's keys */
    char reason[128];
};

/* 0 when obj satisfies the table; -1 and *err otherwise. */
int jsonv_check(const json_t *obj, const struct jfield *fields, size_t n, struct jsonv_error *err);
/* The length of a field table (an array, not a pointer): the n of jsonv_check. */
#define JSONV_COUNT(table) (sizeof(table) / sizeof((table)[0]))

#endif
