/*
 * log.h — structured logs: one JSON object per line on stderr, with ts,
 * level, service, msg and then any fields the caller adds, written
 * asynchronously through a bounded buffer.
 *
 *   nlog(LOG_INFO, "listening", json_pack("{s:s,s:i}", "addr", a, "port", p));
 *
 * The fields object is stolen (may be NULL). Fields named ts, level, service
 * or msg are ignored (the logger's own win).
 *
 * The contract:
 *
 * - nlog() formats the line in the calling thread (the timestamp is the time
 *   of the call), appends it to an in-memory ring of LOG_BUFFER_BYTES bytes
 *   under a short mutex and returns. It never blocks on I/O and never waits
 *   for space: a line that does not fit (the buffer is full because stderr is
 *   slower than the producers, or the line is bigger than the whole buffer) is
 *   dropped and counted (log_dropped()).
 * - One writer thread, started by the first nlog() (all signals blocked in
 *   it, so a sigwait() loop in main keeps working), drains the ring to stderr
 *   with one writev(2) per batch of pending lines, retrying partial writes and
 *   EINTR. After a batch it lingers 1 ms for more lines before it goes idle;
 *   only an idle writer is woken (by the next line). So a line reaches stderr
 *   within about a millisecond, and under load the lines of a millisecond go
 *   out in one write with no wake-up per line. Lines from different threads
 *   are never interleaved (other writers of fd 2, such as fprintf(stderr), may
 *   land between two of our lines, and may overtake lines still in the ring).
 * - After drops, the writer emits one line of its own, level warn (whatever
 *   the log level), msg "log lines dropped", fields dropped (since the
 *   previous such line) and dropped_total, right after the next batch it
 *   writes.
 * - At exit() or a return from main, an atexit handler drains the ring, stops
 *   and joins the writer and frees the ring: nothing accepted is lost, and
 *   LeakSanitizer sees no buffer (exit waits for that write: if stderr
 *   blocks, so does exit, as a synchronous logger would). _exit(), abort(), a
 *   crash or SIGKILL lose what is still in the ring (normally the lines of
 *   the last millisecond or so): call log_flush() first on a deliberate abort
 *   path.
 * - When the writer is not running (it has stopped at exit, so in later
 *   atexit handlers; it could not be started; in the child of a fork), nlog()
 *   writes the line itself, synchronously, as before.
 * - Not async-signal-safe (it allocates and takes a mutex): never call it from
 *   a signal handler.
 */
#ifndef NATTER_LOG_H
#define NATTER_LOG_H

#include <stddef.h>

#include <jansson.h>
#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Bytes of formatted lines (newline included) accepted but not yet written
 * before nlog() starts dropping: about 16k access-log lines, a few seconds of
 * a busy server against a stalled stderr. */
#define LOG_BUFFER_BYTES (4u << 20)

void log_set_level(enum log_level lvl);
/* Sets a field ("service": "natter-api") added to every line; s is borrowed forever. */
void log_set_service(const char *s);
/* Formats and queues one line (see above); takes ownership of fields_new. */
void nlog(enum log_level lvl, const char *msg, json_t *fields_new);
/* A field of nlog_fields: a string (NULL writes ""), an integer or a real. */
struct log_field {
    const char *key; /* a constant: written as it is */
    enum { LF_STR, LF_INT, LF_REAL } type;
    const char *s;
    long long i;
    double d;
};
/* The same line as nlog with these fields, formatted straight into a stack
 * buffer: no allocation (the per-request access log). Strings are escaped
 * and bytes that are not UTF-8 become U+FFFD. */
void nlog_fields(enum log_level lvl, const char *msg, const struct log_field *f, size_t n);
/* Would a line at lvl be written? (to skip building one that would not) */
bool log_enabled(enum log_level lvl);

/* A library's message made fit for a log field, in place: trailing newlines
 * and spaces cut, every byte outside printable ASCII replaced by '?'. */
void log_printable(char *text);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 on anything else. */
int log_level_parse(const char *s);

/* Blocks until every line accepted before the call has been handed to
 * write(2) (or failed to write). Returns at once when the writer is not
 * running. The drop notice for lines dropped before the call may follow a
 * moment later. If stderr blocks (a pipe nobody reads), so does this. */
void log_flush(void);
/* Lines dropped because the buffer was full, since the start of the process. */
unsigned long long log_dropped(void);
/* Lines written to stderr (by the writer or synchronously), drop notices
 * included, since the start of the process; a failed write does not count. */
unsigned long long log_written(void);

/* For tests only: waits until the ring is empty, then bounds it to bytes
 * (at least 1, at most LOG_BUFFER_BYTES; 0 restores LOG_BUFFER_BYTES). */
void log_test_set_capacity(size_t bytes);

#endif
