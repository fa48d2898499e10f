/**
 * @file
 * troupe/http.h — the web unit's HTTP/1.1 server (troupe::web): libuv event loops and Debian's
 * http-parser, answers from any thread. It needs nothing else of troupe: the apps bridge it to
 * actors (a port per loop, a guest per loop), an embedder can use it alone.
 *
 * Why our own server and not a library's: the flash sale reaches 0.77x of nginx answering a
 * constant on the same host (docs/performance.md) because each loop runs the actors its requests
 * wake in one batch, right after the loop's reads (the after_io hook + guests), and writes the
 * answers in place (tr_http_post / tr_http_respond_here: no allocation, no hand-off). Servers
 * that own their threads or copy each answer into their own queues cannot do either.
 *
 * Contract. Several loop threads share the port (SO_REUSEPORT); each owns its connections. A
 * connection carries one request at a time (pipelined requests wait their turn, in order; the
 * server stops reading while its bounded buffer is full of them). Limits: line + headers at most
 * max_request bytes and 64 headers (431 above), the body at most max_request or what body_limit
 * allows for the route (413), each request must arrive within request_ms (408, or a silent close
 * of an idle keep-alive connection), max_connections open at once and max_per_client from one
 * address (beyond, a new connection is accepted and closed at once). An error the server answers
 * itself (400 malformed, 408, 413, 431, 501 unknown method) ends the connection with a lingering
 * close: the answer is sent, the write side shut, and whatever the client still sends is read and
 * discarded for a while, so a client that writes its whole body before reading still reads its
 * 413 instead of a reset. So does the answer to a request that ends its connection
 * (`Connection: close`, HTTP/1.0 without keep-alive), which says `Connection: close`; requests
 * sent after such a one are read and dropped, unanswered. `Expect: 100-continue` gets its 100
 * when the body is within the limit. A HEAD request is answered with the headers of the answer
 * (the handler's, or the server's own error), without its body. Answers are application/json
 * unless the extra headers carry a Content-Type line.
 *
 * Metrics (opts.metrics, troupe/metrics.h): each answer written counts in
 * troupe_http_requests_total{route,method,status} and, but for the errors the server answers
 * itself (400, 408, 413, 431, 501), its time from the request's last byte to the answer's write in
 * troupe_http_request_duration_seconds{route,method}; troupe_http_connections is the open
 * connections. The route is the pattern the handler names with tr_http_route ("/orders/{id}"),
 * never the path: the label's values are the application's few patterns, whatever the clients
 * send. A request the handler does not name, and errors the server answers itself, count under
 * route "(none)".
 */
#ifndef TROUPE_HTTP_H
#define TROUPE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "troupe/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

/** An HTTP/1.1 server: its loop threads and connections (opaque). */
typedef struct tr_http_server tr_http_server;

/** A request's method. */
typedef enum tr_http_method {
    TR_HTTP_GET,                /**< GET */
    TR_HTTP_PUT,                /**< PUT */
    TR_HTTP_POST,               /**< POST */
    TR_HTTP_OTHER,              /**< a method http-parser knows that is not named here (OPTIONS, ...) */
    TR_HTTP_HEAD,               /**< answer as for GET: the server sends the headers only */
    TR_HTTP_DELETE,             /**< DELETE */
    TR_HTTP_PATCH,              /**< PATCH */
} tr_http_method;

/** One request header, as received (names in the client's case; NUL-terminated). */
typedef struct tr_http_header {
    const char *name;           /**< the header's name */
    const char *value;          /**< its value */
} tr_http_header;

/** A request, as the handler gets it (valid during the handler's call). */
typedef struct tr_http_request {
    tr_http_method method;      /**< its method */
    const char *path;           /**< the URL's path, as sent (NUL-terminated; %-escapes kept) */
    const char *query;          /**< what follows '?', as sent ("" when none) */
    const tr_http_header *headers; /**< its headers */
    size_t nheaders;            /**< how many */
    const char *body;           /**< the body (NUL-terminated copy) */
    size_t body_len;            /**< the body's length */
    uint64_t token;             /**< pass it to tr_http_respond */
} tr_http_request;

/** The value of header `name` (compared without case), or NULL. */
const char *tr_http_header_get(const tr_http_request *req, const char *name);
/** Decodes %-escapes (and '+' as a space when plus_space) of s[0..n) into out (cap bytes, NUL
 * added). Returns the length, or -1 for a malformed escape, an escaped or raw NUL, or no room. */
int tr_http_decode(const char *s, size_t n, char *out, size_t cap, bool plus_space);
/** The decoded value of query parameter `key` (the first one) into out: its length; -1 when it is
 * not there; -2 when it is malformed or does not fit (see tr_http_decode). "?a&b=" gives "" for
 * both a and b. */
int tr_http_query_get(const tr_http_request *req, const char *key, char *out, size_t cap);

/** Called on a loop thread for each request; it answers with tr_http_respond, then or later. */
typedef void (*tr_http_handler)(void *user, tr_http_server *srv, const tr_http_request *req);

/** A server's options. */
typedef struct tr_http_opts {
    const char *host;           /**< e.g. "127.0.0.1" */
    int port;                   /**< 0: any */
    unsigned threads;           /**< event loops; 0 = 2 */
    size_t max_request;         /**< headers + body at most; 0 = 64 KiB */
    unsigned request_ms;        /**< a request must arrive within this; 0 = 10,000 */
    unsigned max_connections;   /**< open at once (shared out among the threads); 0 = 10,000 */
    unsigned max_per_client;    /**< open at once from one IPv4 address (all loops); 0 = no cap */
    tr_http_handler handler;    /**< called for each request */
    void *user;                 /**< given to the callbacks */
    /** Optional: the largest body route (method, path) accepts, when it may exceed max_request
     * (an upload, say); called once the headers are in. Return 0 for max_request. */
    size_t (*body_limit)(void *user, tr_http_method method, const char *path);
    /** Optional: called on each loop thread once per loop iteration, after that iteration's
     * requests went to the handler — where a handler that batches its work does it — and again
     * before the loop waits whenever requests went to the handler after it (a pipelined request
     * parsed once the answer before it, given at once, was written). Tasks posted from here to
     * this same loop (tr_http_post) run at once. */
    void (*after_io)(void *user, tr_http_server *srv, unsigned loop);
    /** Optional: the registry the server counts its requests and connections in (see above);
     * it must outlive the server. */
    tr_metrics *metrics;
} tr_http_opts;

/** Starts the server (its threads run at once). 0 or -errno: -EADDRINUSE when a socket
 * already listens on host:port (another node, say: the loops share their port among themselves
 * with SO_REUSEPORT, which would otherwise let a second process bind beside the first). */
int tr_http_start(const tr_http_opts *opts, tr_http_server **out);
/** Answers request `token` from any thread: status, extra header lines (each ending in "\r\n",
 * or NULL), a body — JSON (Content-Type: application/json) unless a Content-Type line is among
 * the headers. Returns 0, or -1 if the connection is gone. */
int tr_http_respond(tr_http_server *s, uint64_t token, int status, const char *headers,
                 const char *body, size_t len);
/** Work handed to a loop thread (tr_http_post): fn runs there once, with the task (the poster's
 * memory, typically inside a bigger struct, untouched by the server after fn starts). */
typedef struct tr_http_task tr_http_task;
/** What a task runs on the loop thread. */
typedef void (*tr_http_task_fn)(tr_http_server *srv, tr_http_task *t);
/** A task (see tr_http_task). */
struct tr_http_task {
    tr_http_task *next;         /**< the server's (its queue) */
    tr_http_task_fn fn;         /**< runs once on the loop thread */
};

/** Runs t->fn on loop thread `loop` soon (at once when called from that loop's after_io); from
 * any thread until tr_http_stop returns (tasks posted while it stops run during it). 0, or -1 for
 * a bad loop (t is not run). */
int tr_http_post(tr_http_server *s, unsigned loop, tr_http_task *t);
/** Answers request `token` at once, on its own loop thread only (in a task posted there):
 * no allocation, no hand-off. 0, or -1. */
int tr_http_respond_here(tr_http_server *s, uint64_t token, int status, const char *headers,
                      const char *body, size_t len);
/** In the handler, on its thread: names the route pattern request `token` matched, the label its
 * metrics are counted under ("/orders/{id}"; NULL: "(none)"). `route` is kept by address until
 * the server stops: a string literal, or memory that lives as long. */
void tr_http_route(tr_http_server *s, uint64_t token, const char *route);
/** Which loop thread (0 .. threads - 1) request `token` came in on, and is answered from. */
static inline unsigned tr_http_loop_of(uint64_t token)
{
    return (unsigned)(token >> 56);
}
/** Stops calling the handler (new requests are answered 503 by the loops themselves) and returns
 * once no handler call is running; answers (tr_http_respond) still go out until tr_http_stop. */
void tr_http_quiesce(tr_http_server *s);
/** The port it listens on. */
int tr_http_port(const tr_http_server *s);
/** Stops: closes the listeners and connections after answering what is being answered. */
void tr_http_stop(tr_http_server *s);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
