/**
 * @file
 * troupe/web.h — the HTTP→actor bridge of the web unit: HTTP requests answered by actors, with no
 * thread hand-off on the way in and none on the way out that is not needed.
 *
 * Contract. tr_web_start starts an HTTP server (troupe/http.h) whose handler is the application's,
 * plus, per loop thread, a port (the calls' return address) and, if run_actors > 0, a guest: the
 * actors a loop's requests wake run on that loop right after its reads, in one batch of at most
 * run_actors turns (the rest goes to the workers). In a handler, a request that needs an actor
 * becomes a call: tr_web_call_new (a record from the loop's own free list, with call_size bytes of
 * the application's), then tr_web_call_send (or _send_with, for a shard). The reply — or the
 * failure: TR_ETIMEDOUT after timeout_ms, TR_ENOCONN, TR_ENOPROC, TR_ESTOPPED — reaches on_reply
 * exactly once, on the thread that delivers it (a loop, a worker, the store's writer), which sets
 * the answer (tr_web_answer / tr_web_answer_buf); the loop of the request writes it. Nothing is
 * allocated per call once the free lists are warm. At most max_calls calls are in flight per loop:
 * beyond, the bridge answers 503 itself. Answers of requests whose connection went away are
 * dropped.
 *
 * Metrics: the server counts its requests in the system's registry (tr_system_metrics; the
 * families are troupe/http.h's), and, when metrics_path is set, the bridge answers GET (and HEAD)
 * of that path itself with the registry rendered (Content-Type TR_METRICS_CONTENT_TYPE; 405 for
 * other methods), before the application's handler sees anything: `GET /metrics` for Prometheus.
 * Handlers name their routes with tr_http_route.
 *
 * Lifecycle: tr_web_start after tr_system_start; tr_web_quiesce before tr_system_stop (the handler
 * is not called any more: new requests get 503 "stopping"); tr_web_stop after tr_system_join and
 * after whatever else could still answer (tr_store_close, tr_node_stop): calls still unanswered get
 * on_reply with TR_ESTOPPED and their 503 is written before the loops close.
 */
#ifndef TROUPE_WEB_H
#define TROUPE_WEB_H

#include "troupe.h"
#include "troupe/http.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

#define TR_WEB_BODY_MAX 1024u   /**< an answer's body set from on_reply, at most */

/** The bridge between an HTTP server and actors: calls made from its loops (opaque). */
typedef struct tr_web tr_web;
/** One call in flight: an HTTP request waiting for an actor's reply (opaque). */
typedef struct tr_web_call tr_web_call;

/** The reply to a call (rc TR_OK and reply) or why there is none (reply NULL); on the delivering
 * thread. Set the answer before returning (none set: 500). Must not block. */
typedef void (*tr_web_reply_fn)(void *user, tr_web_call *call, int rc, const tr_msg *reply);

/** A bridge's options (tr_web_start). */
typedef struct tr_web_opts {
    tr_http_opts http;          /**< the server (handler and user are the application's; its
                                 * after_io is the bridge's and must be NULL here) */
    unsigned run_actors;        /**< turns a loop runs itself after its reads; 0: none (workers) */
    size_t call_size;           /**< the application's bytes per call (tr_web_call_data) */
    tr_web_reply_fn on_reply;   /**< the reply to each call */
    unsigned timeout_ms;        /**< per call; 0 = 5,000 */
    size_t max_calls;           /**< in flight per loop; 0 = 100,000 */
    const char *metrics_path;   /**< answered with the system's metrics ("/metrics"); NULL: not */
} tr_web_opts;

/** A sender for tr_web_call_send_with: sends m (taken) through port with this cookie and timeout,
 * as tr_port_request does (TR_OK: the answer comes to the port; else no callback). It may be
 * called a second time for the same call, from the thread that delivers the answer: a request
 * whose target ended with it unread (TR_ENOPROC with the request, see tr_port_fn) is sent again
 * once the same way, so arg must live as long as the call. */
typedef int (*tr_web_send_fn)(void *arg, tr_port *port, tr_msg *m, unsigned timeout_ms,
                              uint64_t cookie);

/** Starts the bridge and its HTTP server on a started system. *out is set before the server
 * starts (the handler may run, and need it, before this returns), and NULL on failure. TR_EINVAL
 * for bad options, TR_EIO when the server cannot listen (err, if not NULL, says why). */
int tr_web_start(tr_system *sys, const tr_web_opts *opts, tr_web **out, char *err, size_t errlen);
/** The HTTP server (for tr_http_respond of answers that need no actor, and tr_http_port). */
tr_http_server *tr_web_http(tr_web *w);

/** In a handler: a call for req, with its call_size bytes zeroed; NULL when max_calls are in flight
 * on this loop (the bridge has answered 503). Send it, or give it back with tr_web_call_drop. */
tr_web_call *tr_web_call_new(tr_web *w, const tr_http_request *req);
/** The application's bytes of the call (call_size of them, max_align_t aligned). */
void *tr_web_call_data(tr_web_call *c);
/** Sends m (taken) to `to`; its reply comes to on_reply. On error the bridge answers 503 and takes
 * the call back (on_reply is not called); the error is returned. A request its target never read
 * (it ended first) is sent once more before on_reply hears TR_ENOPROC. */
int tr_web_call_send(tr_web_call *c, tr_pid to, tr_msg *m);
/** The same through a sender of the application's (a shard's keyed actors, say). */
int tr_web_call_send_with(tr_web_call *c, tr_msg *m, tr_web_send_fn send, void *arg);
/** Gives back a call that will not be sent (the handler answers the request itself). */
void tr_web_call_drop(tr_web_call *c);

/** In on_reply: the answer (body copied; at most TR_WEB_BODY_MAX bytes; headers a string literal
 * or NULL, each line ending in "\r\n"). */
void tr_web_answer(tr_web_call *c, int status, const char *headers, const char *body, size_t len);
/** In on_reply: the answer's body buffer (TR_WEB_BODY_MAX bytes) to format into, then
 * tr_web_answer_len with the length written. */
char *tr_web_answer_buf(tr_web_call *c);
/** In on_reply: answers with the len bytes written into tr_web_answer_buf's buffer. */
void tr_web_answer_len(tr_web_call *c, int status, const char *headers, size_t len);
/** In on_reply: an answer of any size; body (malloc'd, len bytes) is taken and freed once
 * written. */
void tr_web_answer_take(tr_web_call *c, int status, const char *headers, char *body, size_t len);

/** Stops calling the handler (see Lifecycle). */
void tr_web_quiesce(tr_web *w);
/** Stops the bridge and its server, and frees it (see Lifecycle). */
void tr_web_stop(tr_web *w);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
