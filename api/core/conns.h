/*
 * conns.h — every open HTTP connection with its deadline, against slow
 * clients (slowloris).
 *
 * libmicrohttpd's idle timeout restarts on every byte received, so a client
 * that sends one header byte every few seconds would hold its connection
 * forever. Here each connection has a deadline for the phase it is in:
 *
 *   opened             the complete request head within head_s
 *   head received      the complete body within body_s (+ 1 s per
 *                      CONNS_BODY_MIN_RATE bytes of Content-Length)
 *   dispatched         none: the application holds the request (a long-poll
 *                      may wait its whole timeout, a reply may stream)
 *   request completed  the next complete head within idle_s + head_s (a
 *                      keep-alive connection may sit idle, MHD's own
 *                      timeout closes it then, before sending a next head)
 *
 * A watchdog thread, several times a second, shuts down (shutdown(2), never
 * close: the descriptor stays MHD's) the socket of every connection past its
 * deadline; MHD then sees the end of the stream and closes the connection
 * itself. The shutdown is done under the list's mutex, and MHD's
 * connection-closed notification takes the entry out under the same mutex
 * before MHD closes the descriptor, so a reused descriptor number is never
 * touched.
 *
 * Wiring (http.c): conns_notify is MHD_OPTION_NOTIFY_CONNECTION's callback;
 * the access handler reports the phases. All functions are thread-safe.
 */
#ifndef NATTER_CONNS_H
#define NATTER_CONNS_H

#include <stdint.h>

#include <microhttpd.h>

/* Body bytes a slow client is granted one more second for. */
#define CONNS_BODY_MIN_RATE (16 * 1024)

/* Starts the watchdog. Seconds per phase (see above). 0 or -1. */
int conns_start(unsigned head_s, unsigned body_s, unsigned idle_s);
/* Stops and joins the watchdog; call after MHD_stop_daemon. */
void conns_stop(void);

/* MHD_NotifyConnectionCallback: tracks the connection from open to close. */
void conns_notify(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code);

/* The request head is complete; body_len is the declared Content-Length
 * (0: no body; -1: unknown, chunked). */
void conns_head_done(struct MHD_Connection *c, int64_t body_len);
/* The whole request is in: no deadline until it completes. */
void conns_dispatched(struct MHD_Connection *c);
/* The request completed: the next head is due. */
void conns_request_done(struct MHD_Connection *c);

/* Connections cut for a late head / body since the start, and open now. */
void conns_stats(unsigned long long *head_cut, unsigned long long *body_cut, unsigned long long *open);

#endif
