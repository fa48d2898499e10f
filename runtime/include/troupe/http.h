/*
 * http.h — a small HTTP/1.1 server on libuv (Debian's libuv1 and http-parser), for the flash
 * sale's gateway: several event-loop threads sharing the port (SO_REUSEPORT), keep-alive, one
 * request at a time per connection (pipelined requests wait their turn), a bounded request size
 * (413 above it), a deadline for each request to arrive (slow clients are closed, never waited
 * for), and answers given later from any thread (tr_http_respond), so a handler can hand the
 * request to an actor and return at once.
 */
#ifndef TROUPE_HTTP_H
#define TROUPE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tr_http_server tr_http_server;

typedef enum tr_http_method { TR_HTTP_GET, TR_HTTP_PUT, TR_HTTP_POST, TR_HTTP_OTHER } tr_http_method;

typedef struct tr_http_request {
    tr_http_method method;
    const char *path;           /* the URL's path (NUL-terminated; no query) */
    const char *body;           /* the body (NUL-terminated copy) */
    size_t body_len;
    uint64_t token;             /* pass it to tr_http_respond */
} tr_http_request;

/* Called on a loop thread for each complete request; answer it (now or later) with
 * tr_http_respond. The request's memory is valid until then. */
typedef void (*tr_http_handler)(void *user, tr_http_server *srv, const tr_http_request *req);

typedef struct tr_http_opts {
    const char *host;           /* e.g. "127.0.0.1" */
    int port;                   /* 0: any */
    unsigned threads;           /* event loops; 0 = 2 */
    size_t max_request;         /* headers + body at most; 0 = 64 KiB */
    unsigned request_ms;        /* a request must arrive within this; 0 = 10,000 */
    unsigned max_connections;   /* open at once (shared out among the threads); 0 = 10,000 */
    tr_http_handler handler;
    void *user;
    /* Optional: called on each loop thread once per loop iteration, after that iteration's
     * requests went to the handler — where a handler that batches its work does it. Tasks
     * posted from here to this same loop (tr_http_post) run at once. */
    void (*after_io)(void *user, tr_http_server *srv, unsigned loop);
} tr_http_opts;

/* Starts the server (its threads run at once). 0 or -errno. */
int tr_http_start(const tr_http_opts *opts, tr_http_server **out);
/* Answers request `token` from any thread: status, extra header lines (each ending in "\r\n",
 * or NULL), a JSON body. Returns 0, or -1 if the connection is gone. */
int tr_http_respond(tr_http_server *s, uint64_t token, int status, const char *headers,
                 const char *body, size_t len);
/* Work handed to a loop thread (tr_http_post): fn runs there once, with the task (the poster's
 * memory, typically inside a bigger struct, untouched by the server after fn starts). */
typedef struct tr_http_task tr_http_task;
typedef void (*tr_http_task_fn)(tr_http_server *srv, tr_http_task *t);
struct tr_http_task {
    tr_http_task *next;
    tr_http_task_fn fn;
};

/* Runs t->fn on loop thread `loop` soon (at once when called from that loop's after_io); from
 * any thread until tr_http_stop returns (tasks posted while it stops run during it). 0, or -1 for
 * a bad loop (t is not run). */
int tr_http_post(tr_http_server *s, unsigned loop, tr_http_task *t);
/* Answers request `token` at once, on its own loop thread only (in a task posted there):
 * no allocation, no hand-off. 0, or -1. */
int tr_http_respond_here(tr_http_server *s, uint64_t token, int status, const char *headers,
                      const char *body, size_t len);
/* Which loop thread (0 .. threads - 1) request `token` came in on, and is answered from. */
static inline unsigned tr_http_loop_of(uint64_t token)
{
    return (unsigned)(token >> 56);
}
/* Stops calling the handler (new requests are answered 503 by the loops themselves) and returns
 * once no handler call is running; answers (tr_http_respond) still go out until tr_http_stop. */
void tr_http_quiesce(tr_http_server *s);
/* The port it listens on. */
int tr_http_port(const tr_http_server *s);
/* Stops: closes the listeners and connections after answering what is being answered. */
void tr_http_stop(tr_http_server *s);

#endif
