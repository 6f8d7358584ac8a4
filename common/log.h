/*
 * log.h — structured logs: one JSON object per line on stderr, with ts, level,
 * msg and any fields the caller adds. Thread-safe (a single write per line).
 *
 *   nlog(LOG_INFO, "listening", json_pack("{s:s,s:i}", "addr", a, "port", p));
 *
 * The fields object is stolen (may be NULL).
 */
#ifndef NATTER_LOG_H
#define NATTER_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level lvl);
/* Sets a field ("service": "natter-api") added to every line; s is borrowed forever. */
void log_set_service(const char *s);
void nlog(enum log_level lvl, const char *msg, json_t *fields_new);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 on anything else. */
int log_level_parse(const char *s);

#endif
