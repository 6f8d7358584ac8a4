/*
 * log.c — JSON line logger (see log.h). Lines are built in memory with jansson
 * (so every string is escaped) and written with one write(2), which keeps lines
 * from different threads whole.
 */
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static enum log_level min_level = LOG_INFO;
static const char *service = "natter";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level lvl)
{
    min_level = lvl;
}

void log_set_service(const char *s)
{
    service = s;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void nlog(enum log_level lvl, const char *msg, json_t *fields_new)
{
    if (lvl < min_level) {
        json_decref(fields_new);
        return;
    }
    char ts[40];
    rfc3339_now(ts, sizeof ts);
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[lvl]));
    json_object_set_new(line, "service", json_string(service));
    json_object_set_new(line, "msg", json_string(msg ? msg : ""));
    if (fields_new && json_is_object(fields_new))
        json_object_update_missing(line, fields_new);
    json_decref(fields_new);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(line);
    if (!text)
        return;
    size_t n = strlen(text);
    char *buf = xmalloc(n + 2);
    memcpy(buf, text, n);
    buf[n] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, n + 1);
    (void)w; /* nowhere left to report a failed log write */
    free(buf);
    free(text);
}
