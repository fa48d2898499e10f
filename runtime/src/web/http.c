/*
 * http.c — the web unit's HTTP/1.1 server (see troupe/http.h and docs/web.md): libuv loops,
 * http-parser, answers from any thread.
 *
 * Each loop thread has its own listening socket on the shared port (SO_REUSEPORT: the kernel
 * spreads connections) and owns its connections. A connection parses one request at a time:
 * when one is complete the parser is paused and the request handed to the handler; bytes that
 * arrive meanwhile (pipelined requests) wait in the buffer, and once it is full the connection
 * stops reading until the answer leaves (never an error: the request in flight keeps its answer).
 * An answer, from whatever thread, goes onto the loop's lock-free stack of tasks and wakes it
 * (uv_async); the loop writes it, then goes on parsing. A caller that can hand its own record to
 * the loop (tr_http_post) has the loop format and write the answer itself
 * (tr_http_respond_here): no allocation per answer.
 * Limits: line and headers at most max_request bytes and HEADERS_MAX headers (431), the body at
 * most max_request or the route's body_limit (413); a request must arrive within request_ms of the
 * previous answer or of the connection (else the connection is closed: a slow client costs one
 * timer, never a thread); the buffered input is bounded. An error the server answers itself ends
 * the connection with a lingering close (linger()), so the client reads the answer.
 * Header names and values are kept per request in one growing buffer (bounded by max_request),
 * NUL-terminated, and handed over as a table once the headers are complete.
 */
#include "troupe/http.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define URL_MAX 512u
#define BUCKETS 4096u
#define HEADERS_MAX 64u         /* headers per request (431 above) */
#define LINGER_IDLE_MS 2000u    /* a lingering close waits this long for more bytes to discard, */
#define LINGER_MAX_MS 10000u    /* and this long in all */
#define MCACHE 128u             /* (route, method, status) series remembered per loop */

typedef struct loop_t loop_t;

/* A loop's series of one route, method and status (its own: no lock to count a request). */
typedef struct mcache {
    const char *route;
    int method;
    int status;
    tr_metric *count, *duration;
} mcache;

/* An answer given by tr_http_respond: a task that writes it. */
typedef struct resp {
    tr_http_task task;             /* first */
    uint64_t token;
    size_t len;
    char data[];                /* the whole response */
} resp;

typedef struct conn {
    uv_tcp_t tcp;               /* first: handle -> conn */
    uv_timer_t timer;
    loop_t *lp;
    uint32_t id;
    struct conn *hnext;         /* in the loop's table */
    http_parser parser;
    char *buf;                  /* input not yet parsed */
    size_t len, cap, parsed;
    char url[URL_MAX + 1];
    size_t url_len;
    char *body;
    size_t body_len, body_cap;
    size_t req_bytes;
    size_t limit;               /* the current request's body may not exceed this */
    char *hdr;                  /* the request's header names and values, each NUL-terminated */
    size_t hdr_len, hdr_cap;
    size_t hdr_off[2 * HEADERS_MAX]; /* offsets of name, value, name, value, ... */
    unsigned nhdr_tok;          /* tokens started (names and values) */
    bool in_value;              /* the last header bytes were a value's */
    tr_http_header headers[HEADERS_MAX];
    uint64_t deadline;          /* loop time (ms) the next request must have arrived by */
    uint64_t linger_end;        /* loop time a lingering close ends at the latest */
    uint32_t seq;
    bool in_flight, keep_alive, closing, too_big;
    bool too_many_headers;
    bool headers_done;          /* the current request's headers are all in */
    bool failed;                /* the server answered an error and closes: nothing more is read */
    bool lingering;             /* answered, write side shut: reading and discarding until close */
    bool head;                  /* the request in flight is a HEAD: its answer goes without body */
    bool in_message;            /* between the first byte of a request and its end */
    bool parsing;               /* parse_some is on the stack (it is not re-entered) */
    bool parse_again;           /* ... and was asked again meanwhile (an answer given at once) */
    int handles;                /* open uv handles (tcp, timer) */
    uint32_t client;            /* the peer's IPv4 address (host order), counted in clients */
    const char *route;          /* the request's route pattern (tr_http_route), or NULL */
    uint64_t t0;                /* when the request was complete (uv_hrtime) */
    bool counted;               /* counted against its client's cap */
    uv_shutdown_t shut;
    tr_http_request req;
} conn;

static _Thread_local loop_t *tls_loop; /* the loop this thread runs, if any */

struct loop_t {
    tr_http_server *srv;
    unsigned idx;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_check_t check;           /* after_io, then the tasks posted on this thread */
    uv_prepare_t prepare;       /* the tasks posted on this thread since (before the poll) */
    bool in_after_io;           /* on the loop thread, inside after_io */
    bool handled;               /* the handler was called since settle() last looked */
    uv_thread_t th;
    pthread_mutex_t lock;       /* the quiesce barrier */
    _Atomic(tr_http_task *) tasks; /* posted from any thread, newest first (a lock-free stack) */
    conn *table[BUCKETS];
    uint32_t next_id;
    unsigned nconns;            /* open connections (at most max_connections / threads) */
    _Atomic bool stopping;      /* set by tr_http_stop on another thread */
    uint64_t barrier_req, barrier_ack; /* tr_http_quiesce's round trip (under lock) */
    pthread_cond_t barrier_cond;
    mcache mc[MCACHE];
};

/* Open connections per client address (max_per_client), shared by the loops. */
typedef struct client {
    struct client *next;
    uint32_t addr;
    unsigned n;
} client;

struct tr_http_server {
    tr_http_opts o;
    pthread_mutex_t clients_lock;
    client *clients[BUCKETS];
    _Atomic bool quiesced;      /* the handler is not called any more (tr_http_quiesce) */
    int port;
    unsigned n;
    loop_t *loops;
    tr_metric *conns;           /* troupe_http_connections (metrics) */
};

static http_parser_settings settings;

/* ---- metrics ------------------------------------------------------------------------------- */

static const char *method_name(int m)
{
    switch (m) {
    case TR_HTTP_GET: return "GET";
    case TR_HTTP_PUT: return "PUT";
    case TR_HTTP_POST: return "POST";
    case TR_HTTP_HEAD: return "HEAD";
    case TR_HTTP_DELETE: return "DELETE";
    case TR_HTTP_PATCH: return "PATCH";
    case TR_HTTP_OTHER: return "OTHER";
    default: return "(none)";
    }
}

/* Counts an answer of `status` to a request of `route` and `method` (-1: none was read) on loop
 * lp, and its duration (seconds < 0: none, an error the server answered itself). */
static void count_answer(loop_t *lp, const char *route, int method, int status, double seconds)
{
    tr_metrics *m = lp->srv->o.metrics;
    if (m == NULL)
        return;
    unsigned h = (unsigned)(((uintptr_t)route >> 3) * 31u + (unsigned)method * 7u + (unsigned)status);
    mcache *e = NULL;
    for (unsigned i = 0; i < MCACHE; i++) {
        mcache *x = &lp->mc[(h + i) % MCACHE];
        if (x->count != NULL && x->route == route && x->method == method && x->status == status) {
            e = x;
            break;
        }
        if (x->count == NULL) { /* not there: made, and kept here */
            char code[16];
            snprintf(code, sizeof code, "%d", status);
            tr_label l[3] = {{"route", route != NULL ? route : "(none)"},
                             {"method", method_name(method)},
                             {"status", code}};
            if (tr_metrics_counter(m, "troupe_http_requests_total",
                                   "HTTP requests answered, by route pattern, method and status.",
                                   l, 3, &x->count) != TR_OK)
                return; /* the registry is full: counted in its refusals */
            tr_metrics_histogram(m, "troupe_http_request_duration_seconds",
                                 "Time from a request's last byte to its answer's write.", l, 2,
                                 NULL, 0, &x->duration);
            x->route = route;
            x->method = method;
            x->status = status;
            e = x;
            break;
        }
    }
    if (e == NULL)
        return; /* more than MCACHE kinds of answers on this loop: the rest are not counted */
    tr_metric_inc(e->count, 1);
    if (seconds >= 0)
        tr_metric_observe(e->duration, seconds);
}

/* ---- connections --------------------------------------------------------------------------- */

static conn *conn_find(loop_t *lp, uint32_t id)
{
    for (conn *c = lp->table[id % BUCKETS]; c != NULL; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

static void conn_unlink(conn *c)
{
    conn **pp = &c->lp->table[c->id % BUCKETS];
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp == c)
        *pp = c->hnext;
}

/* Counts a connection from addr; false (not counted) when the client has max_per_client open. */
static bool client_enter(tr_http_server *srv, uint32_t addr)
{
    unsigned cap = srv->o.max_per_client;
    if (cap == 0)
        return true;
    bool ok = false;
    pthread_mutex_lock(&srv->clients_lock);
    client **b = &srv->clients[(addr * 2654435761u) % BUCKETS], *cl = *b;
    while (cl != NULL && cl->addr != addr)
        cl = cl->next;
    if (cl == NULL && (cl = calloc(1, sizeof *cl)) != NULL) {
        cl->addr = addr;
        cl->next = *b;
        *b = cl;
    }
    if (cl != NULL && cl->n < cap) {
        cl->n++;
        ok = true;
    }
    pthread_mutex_unlock(&srv->clients_lock);
    return ok;
}

static void client_leave(tr_http_server *srv, uint32_t addr)
{
    pthread_mutex_lock(&srv->clients_lock);
    client **pp = &srv->clients[(addr * 2654435761u) % BUCKETS];
    while (*pp != NULL && (*pp)->addr != addr)
        pp = &(*pp)->next;
    client *cl = *pp;
    if (cl != NULL && --cl->n == 0) { /* forgotten with its last connection: the table is bounded
                                       * by the open connections */
        *pp = cl->next;
        free(cl);
    }
    pthread_mutex_unlock(&srv->clients_lock);
}

static void on_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles == 0) {
        if (c->counted)
            client_leave(c->lp->srv, c->client);
        c->lp->nconns--;
        tr_metric_add(c->lp->srv->conns, -1);
        free(c->buf);
        free(c->body);
        free(c->hdr);
        free(c);
    }
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    conn_unlink(c);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

typedef struct wreq {
    uv_write_t w;
    conn *c;
    char *data;
    bool close_after;
} wreq;

static void linger(conn *c);

static void on_written(uv_write_t *w, int status)
{
    wreq *r = (wreq *)w;
    if (status >= 0 && r->close_after)
        linger(r->c); /* the client reads the answer before the connection ends (requests it
                       * sent after a Connection: close one are read and dropped, no reset) */
    else if (status < 0)
        conn_close(r->c);
    free(r->data);
    free(r);
}

/* Writes len bytes of data, with ins[0..inslen) inserted at offset `at` when ins is not NULL (it
 * is then copied, and not tried straight into the socket); `owned` (malloc'd, or NULL when data
 * is borrowed) is freed once written. */
static void send_raw_ins(conn *c, const char *data, size_t len, char *owned, bool close_after,
                         size_t at, const char *ins, size_t inslen)
{
    if (!close_after && ins == NULL) {
        /* straight into the socket when it takes it all (libuv refuses while earlier writes
         * are queued, so order holds): no write request, no completion pass, and no epoll
         * re-arm after it — one syscall fewer per response */
        uv_buf_t tb = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &tb, 1);
        if (n == (int)len) {
            free(owned);
            return;
        }
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
    }
    if (owned == NULL || data != owned || ins != NULL) { /* the rest, in a buffer of its own */
        size_t extra = ins != NULL ? inslen : 0;
        char *copy = malloc(len + extra ? len + extra : 1);
        if (copy == NULL) {
            free(owned);
            conn_close(c);
            return;
        }
        if (ins != NULL) {
            memcpy(copy, data, at);
            memcpy(copy + at, ins, inslen);
            memcpy(copy + at + inslen, data + at, len - at);
        } else {
            memcpy(copy, data, len);
        }
        free(owned);
        owned = copy;
        len += extra;
    }
    wreq *r = malloc(sizeof *r);
    if (r == NULL) {
        free(owned);
        conn_close(c);
        return;
    }
    r->c = c;
    r->data = owned;
    r->close_after = close_after;
    uv_buf_t b = uv_buf_init(owned, (unsigned)len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(owned);
        free(r);
        conn_close(c);
    }
}

static void send_raw(conn *c, const char *data, size_t len, char *owned, bool close_after)
{
    send_raw_ins(c, data, len, owned, close_after, 0, NULL, 0);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

/* Writes the decimal digits of v at p; returns the end. */
static char *put_uint(char *p, size_t v)
{
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put_str((p), (lit), sizeof(lit) - 1)

/* Room a response needs beyond its extra headers and body. */
#define HEAD_ROOM 160u

/* Whether the extra header lines name a Content-Type (then the default is left out). */
static bool has_content_type(const char *h, size_t hl)
{
    for (size_t i = 0; i + 13 <= hl; i++)
        if ((i == 0 || h[i - 1] == '\n') && strncasecmp(h + i, "content-type:", 13) == 0)
            return true;
    return false;
}

/* Writes a whole response at p (HEAD_ROOM + strlen(headers) + len bytes at most); returns its
 * length. Hand-formatted: snprintf was a visible share of each answer's cost. */
static size_t format_into(char *p, int status, const char *headers, size_t hl, const char *body,
                          size_t len, bool close)
{
    char *s = p;
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = put_uint(p, (size_t)(status >= 100 && status <= 999 ? status : 500));
    *p++ = ' ';
    const char *why = reason(status);
    p = put_str(p, why, strlen(why));
    if (status == 204) { /* no body, and no Content-Length (RFC 9110, 8.6) */
        len = 0;
        p = PUT_LIT(p, "\r\n");
    } else {
        p = hl > 0 && has_content_type(headers, hl)
                ? PUT_LIT(p, "\r\nContent-Length: ")
                : PUT_LIT(p, "\r\nContent-Type: application/json\r\nContent-Length: ");
        p = put_uint(p, len);
        p = PUT_LIT(p, "\r\n");
    }
    p = put_str(p, headers, hl);
    if (close)
        p = PUT_LIT(p, "Connection: close\r\n");
    p = PUT_LIT(p, "\r\n");
    p = put_str(p, body, len);
    return (size_t)(p - s);
}

/* A whole response in one malloc'd buffer (NULL when out of memory). */
static char *format(int status, const char *headers, const char *body, size_t len, bool close,
                    size_t *out_len)
{
    size_t hl = headers != NULL ? strlen(headers) : 0;
    char *p = malloc(HEAD_ROOM + hl + len);
    if (p != NULL)
        *out_len = format_into(p, status, headers != NULL ? headers : "", hl, body, len, close);
    return p;
}

/* An error answered by the server itself, then the connection is closed. */
static void fail(conn *c, int status, const char *msg)
{
    if (c->failed || c->closing)
        return; /* one answer per connection: the first error's */
    c->failed = true;
    count_answer(c->lp, NULL, -1, status, -1);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
    size_t len;
    char *p = format(status, NULL, body, (size_t)n, true, &len);
    if (p == NULL) {
        conn_close(c);
        return;
    }
    /* a HEAD's answer has no body (the method is known once the URL has begun) */
    if (c->in_message && c->url_len > 0 && c->parser.method == HTTP_HEAD) {
        const char *end = memmem(p, len, "\r\n\r\n", 4);
        if (end != NULL)
            len = (size_t)(end + 4 - p);
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    send_raw(c, p, len, p, true);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_timeout(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *sh, int status)
{
    conn *c = sh->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    c->len = c->parsed = 0;
    uint64_t now = uv_now(&c->lp->loop);
    c->linger_end = now + LINGER_MAX_MS;
    c->deadline = now + LINGER_IDLE_MS;
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_timeout, LINGER_IDLE_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

/* A lingering close (as nginx's lingering_close): the answer is written; shut the write side
 * (the client sees the end of the answer) and read what the client still sends, discarding it,
 * until it closes, goes quiet for LINGER_IDLE_MS, or LINGER_MAX_MS pass. Closing at once with
 * unread bytes would make the kernel send a reset, which destroys the answer in the client's
 * receive buffer before it reads it. */
static void linger(conn *c)
{
    if (c->closing)
        return;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

/* The request deadline's timer is lazy: an answer only moves c->deadline, and the timer, when it
 * fires, starts again for what is left (two heap operations per request saved). */
static void on_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->closing)
        return;
    if (c->lingering) {
        uint64_t now = uv_now(&c->lp->loop);
        uint64_t until = c->deadline < c->linger_end ? c->deadline : c->linger_end;
        if (now >= until)
            conn_close(c);
        else
            uv_timer_start(&c->timer, on_timeout, until - now, 0);
        return;
    }
    if (c->in_flight)
        return; /* armed again with the answer */
    uint64_t now = uv_now(&c->lp->loop);
    if (now < c->deadline) {
        uv_timer_start(&c->timer, on_timeout, c->deadline - now, 0);
        return;
    }
    if (c->len > c->parsed || c->in_message)
        fail(c, 408, "request not received in time"); /* a request started, never finished */
    else
        conn_close(c); /* an idle keep-alive connection: closed without a word */
}

/* The next request must arrive within request_ms from now. */
static void arm_timer(conn *c)
{
    unsigned ms = c->lp->srv->o.request_ms;
    c->deadline = uv_now(&c->lp->loop) + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer))
        uv_timer_start(&c->timer, on_timeout, ms, 0);
}

/* Whether p[0..n) begins with a well-formed request line: "TOKEN SP TARGET SP HTTP/1.d" CRLF
 * (leading empty lines skipped). An unknown method in such a line is 501; anything else, 400. */
static bool request_line_ok(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n'))
        i++;
    size_t m = i;
    while (i < n && ((p[i] >= 'A' && p[i] <= 'Z') || p[i] == '-' || p[i] == '_'))
        i++;
    if (i == m || i - m > 32 || i >= n || p[i++] != ' ')
        return false;
    size_t t = i;
    while (i < n && p[i] > ' ' && p[i] < 0x7f)
        i++;
    if (i == t || i >= n || p[i++] != ' ')
        return false;
    return n - i >= 10 && memcmp(p + i, "HTTP/1.", 7) == 0 && p[i + 7] >= '0' &&
           p[i + 7] <= '9' && p[i + 8] == '\r' && p[i + 9] == '\n';
}

static void parse_once(conn *c)
{
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0);
    size_t from = c->parsed;
    size_t n = http_parser_execute(&c->parser, &settings, c->buf + c->parsed, c->len - c->parsed);
    c->parsed += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->too_many_headers) {
        fail(c, 431, "too many or too large headers");
        return;
    }
    if (c->too_big) {
        /* the line and headers, or the body */
        if (c->headers_done)
            fail(c, 413, "request too large");
        else
            fail(c, 431, "request line or headers too large");
        return;
    }
    if (e == HPE_INVALID_METHOD && request_line_ok(c->buf + from, c->len - from)) {
        fail(c, 501, "method not implemented");
        return;
    }
    if (e != HPE_OK && e != HPE_PAUSED) {
        fail(c, 400, "malformed HTTP request");
        return;
    }
    if (c->parsed == c->len) {
        c->parsed = c->len = 0;
    } else if (c->parsed > c->cap / 2) {
        memmove(c->buf, c->buf + c->parsed, c->len - c->parsed);
        c->len -= c->parsed;
        c->parsed = 0;
    }
}

/* Parses what is buffered, up to the end of the next request. Not re-entered: a request answered
 * at once, from inside its own handler call (tr_http_respond on the loop thread during after_io,
 * where posted tasks run at once), delivers its answer while http_parser_execute is still on the
 * stack with c->parsed not yet past that request; parsing again there read the same request
 * again and called the handler with it again (found by fuzz-http: one pipelined GET answered
 * 25 times). The inner call only asks the outer one to go on once it has returned. */
static void parse_some(conn *c)
{
    if (c->parsing) {
        c->parse_again = true;
        return;
    }
    c->parsing = true;
    do {
        c->parse_again = false;
        if (c->in_flight || c->closing || c->failed)
            break;
        parse_once(c);
    } while (c->parse_again);
    c->parsing = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    conn *c = h->data;
    size_t limit = 2 * c->lp->srv->o.max_request + 4096;
    if (c->cap - c->len < 4096 && c->cap < limit) {
        size_t cap = c->cap ? c->cap * 2 : 8192;
        if (cap > limit)
            cap = limit;
        char *nb = realloc(c->buf, cap);
        if (nb != NULL) {
            c->buf = nb;
            c->cap = cap;
        }
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    conn *c = s->data;
    if (c->lingering) { /* discarding until the client closes or goes quiet */
        if (nread < 0) {
            conn_close(c);
        } else if (nread > 0) {
            c->len = 0;
            c->deadline = uv_now(&c->lp->loop) + LINGER_IDLE_MS;
        }
        return;
    }
    if (nread == UV_ENOBUFS) { /* no room left (full of pipelined requests): wait for the answer */
        uv_read_stop(s);
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->failed)
        return; /* answered and closing: the rest is not read */
    c->len += (size_t)nread;
    parse_some(c);
    if (c->closing || c->failed || c->len < c->cap)
        return;
    /* The buffer is full. With a request in flight, what is buffered is pipelined requests that
     * wait their turn: stop reading until the answer (deliver starts again) — never answer them
     * for it, or the request in flight loses its answer (an order sold whose 201 never leaves).
     * Without one, the parser took every byte it was given (it pauses only at a complete
     * request), so a full buffer means one request that outgrew it: too large. */
    if (c->in_flight)
        uv_read_stop(s);
    else
        fail(c, 413, "request too large");
}

static void on_connection(uv_stream_t *server, int status)
{
    loop_t *lp = server->data;
    if (status < 0 || lp->stopping)
        return;
    conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->lp = lp;
    uv_tcp_init(&lp->loop, &c->tcp);
    uv_timer_init(&lp->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    lp->nconns++;
    tr_metric_add(lp->srv->conns, 1);
    unsigned cap = lp->srv->o.max_connections ? lp->srv->o.max_connections : 10000;
    cap = cap / lp->srv->n ? cap / lp->srv->n : 1;
    /* accepted then closed at once when full, or when its client has max_per_client open: the
     * peer learns at once, the backlog drains, and one client cannot take every slot */
    bool ok = uv_accept(server, (uv_stream_t *)&c->tcp) == 0 && lp->nconns <= cap;
    if (ok && lp->srv->o.max_per_client > 0) {
        struct sockaddr_storage ss;
        int sl = sizeof ss;
        ok = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0 &&
             ss.ss_family == AF_INET;
        if (ok) {
            c->client = ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr);
            ok = c->counted = client_enter(lp->srv, c->client);
        }
    }
    if (!ok) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    do
        c->id = ++lp->next_id;
    while (c->id == 0 || conn_find(lp, c->id) != NULL);
    c->hnext = lp->table[c->id % BUCKETS];
    lp->table[c->id % BUCKETS] = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    arm_timer(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- parser callbacks ---------------------------------------------------------------------- */

static tr_http_method method_of(unsigned m)
{
    switch (m) {
    case HTTP_GET: return TR_HTTP_GET;
    case HTTP_HEAD: return TR_HTTP_HEAD;
    case HTTP_PUT: return TR_HTTP_PUT;
    case HTTP_POST: return TR_HTTP_POST;
    case HTTP_DELETE: return TR_HTTP_DELETE;
    case HTTP_PATCH: return TR_HTTP_PATCH;
    default: return TR_HTTP_OTHER;
    }
}

static int count_bytes(conn *c, size_t n)
{
    c->req_bytes += n;
    if (c->req_bytes > c->limit) {
        c->too_big = true;
        return -1;
    }
    return 0;
}

static int cb_begin(http_parser *p)
{
    conn *c = p->data;
    c->url_len = 0;
    c->body_len = 0;
    c->req_bytes = 0;
    c->limit = c->lp->srv->o.max_request;
    c->hdr_len = 0;
    c->nhdr_tok = 0;
    c->in_value = false;
    c->headers_done = false;
    c->in_message = true;
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_bytes(c, n) != 0)
        return -1;
    if (c->url_len + n > URL_MAX)
        return -1; /* a URL this long is refused as malformed */
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    return 0;
}

/* Appends n bytes to the header store (its size is bounded by count_bytes: max_request). */
static int hdr_put(conn *c, const char *at, size_t n)
{
    if (c->hdr_len + n + 1 > c->hdr_cap) {
        size_t cap = c->hdr_cap ? c->hdr_cap : 512;
        while (cap < c->hdr_len + n + 1)
            cap *= 2;
        char *h = realloc(c->hdr, cap);
        if (h == NULL)
            return -1;
        c->hdr = h;
        c->hdr_cap = cap;
    }
    memcpy(c->hdr + c->hdr_len, at, n);
    c->hdr_len += n;
    return 0;
}

/* Starts the next token (a name when value is false): the previous one gets its NUL. */
static int hdr_token(conn *c, bool value)
{
    if (!value && c->nhdr_tok / 2 >= HEADERS_MAX) {
        c->too_many_headers = true;
        return -1;
    }
    if (c->nhdr_tok > 0 && hdr_put(c, "", 1) != 0) /* the previous token's NUL */
        return -1;
    c->hdr_off[c->nhdr_tok++] = c->hdr_len;
    c->in_value = value;
    return 0;
}

static int cb_field(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_bytes(c, n) != 0)
        return -1;
    if ((c->nhdr_tok == 0 || c->in_value) && hdr_token(c, false) != 0)
        return -1;
    return hdr_put(c, at, n);
}

static int cb_value(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_bytes(c, n) != 0)
        return -1;
    if (!c->in_value && hdr_token(c, true) != 0)
        return -1;
    return hdr_put(c, at, n);
}

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch + ('a' - 'A')) : ch;
}

/* ASCII, without case (header names and tokens; no locale). */
static bool eq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (lower(*a) != lower(*b))
            return false;
    return *a == *b;
}

static int cb_headers_done(http_parser *p)
{
    conn *c = p->data;
    c->headers_done = true;
    /* the header table: names and values, NUL-terminated in the store (which no longer moves) */
    if (c->nhdr_tok % 2 == 1 && hdr_token(c, true) != 0) /* a name without value */
        return -1;
    if (hdr_put(c, "", 1) != 0) /* the last token's NUL */
        return -1;
    size_t nh = c->nhdr_tok / 2;
    for (size_t i = 0; i < nh; i++)
        c->headers[i] = (tr_http_header){.name = c->hdr + c->hdr_off[2 * i],
                                         .value = c->hdr + c->hdr_off[2 * i + 1]};
    c->req.headers = c->headers;
    c->req.nheaders = nh;
    tr_http_server *srv = c->lp->srv;
    if (srv->o.body_limit != NULL) { /* the route may take a larger body */
        c->url[c->url_len] = '\0';
        char path[URL_MAX + 1];
        memcpy(path, c->url, c->url_len + 1);
        char *q = strchr(path, '?');
        if (q != NULL)
            *q = '\0';
        size_t lim = srv->o.body_limit(srv->o.user, method_of(p->method), path);
        if (lim > c->limit)
            c->limit = c->req_bytes + lim; /* the headers counted so far, and the body */
    }
    if (p->content_length != ULLONG_MAX && p->content_length > c->limit - c->req_bytes) {
        c->too_big = true;
        return -1;
    }
    /* a client that waits for a go-ahead before sending its body gets it (RFC 9110 10.1.1) */
    const char *expect = tr_http_header_get(&c->req, "expect");
    if (expect != NULL && eq_nocase(expect, "100-continue") && p->http_minor >= 1 &&
        p->content_length != 0) {
        static const char go[] = "HTTP/1.1 100 Continue\r\n\r\n";
        send_raw(c, go, sizeof go - 1, NULL, false);
    }
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_bytes(c, n) != 0)
        return -1;
    if (c->body_len + n + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 256;
        while (cap < c->body_len + n + 1)
            cap *= 2;
        char *b = realloc(c->body, cap);
        if (b == NULL)
            return -1;
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

static int cb_complete(http_parser *p)
{
    conn *c = p->data;
    c->url[c->url_len] = '\0';
    char *q = strchr(c->url, '?');
    if (q != NULL)
        *q++ = '\0';
    c->req.query = q != NULL ? q : "";
    if (c->body == NULL && (c->body = malloc(1)) != NULL)
        c->body_cap = 1;
    if (c->body == NULL)
        return -1;
    c->body[c->body_len] = '\0';
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->in_flight = true;
    c->in_message = false;
    c->seq++; /* (its deadline's timer, if it fires meanwhile, sees in_flight) */
    c->req.method = method_of(p->method);
    c->head = c->req.method == TR_HTTP_HEAD;
    c->req.path = c->url;
    c->req.body = c->body;
    c->req.body_len = c->body_len;
    c->req.token = (uint64_t)c->lp->idx << 56 | (uint64_t)c->id << 24 | (c->seq & 0xFFFFFFu);
    c->route = NULL;
    if (c->lp->srv->o.metrics != NULL)
        c->t0 = uv_hrtime();
    http_parser_pause(p, 1);
    tr_http_server *srv = c->lp->srv;
    if (atomic_load(&srv->quiesced)) {
        static const char stopping[] = "{\"error\":\"stopping\"}";
        tr_http_respond(srv, c->req.token, 503, "Retry-After: 1\r\n", stopping,
                     sizeof stopping - 1);
        return 0;
    }
    c->lp->handled = true;
    srv->o.handler(srv->o.user, srv, &c->req);
    return 0;
}

/* ---- requests: headers, query strings, %-decoding ------------------------------------------ */

const char *tr_http_header_get(const tr_http_request *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (eq_nocase(req->headers[i].name, name))
            return req->headers[i].value;
    return NULL;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
        return (ch | 0x20) - 'a' + 10;
    return -1;
}

int tr_http_decode(const char *s, size_t n, char *out, size_t cap, bool plus_space)
{
    if (s == NULL || out == NULL || cap == 0)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '+' && plus_space) {
            ch = ' ';
        }
        if (ch == '\0' || k + 1 >= cap || k >= INT32_MAX)
            return -1; /* a NUL would cut the string short where the caller reads it */
        out[k++] = ch;
    }
    out[k] = '\0';
    return (int)k;
}

int tr_http_query_get(const tr_http_request *req, const char *key, char *out, size_t cap)
{
    if (req == NULL || req->query == NULL || key == NULL)
        return -1;
    size_t kl = strlen(key);
    for (const char *p = req->query; *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t nl = eq != NULL ? (size_t)(eq - p) : len;
        char name[256];
        int dn = nl < sizeof name ? tr_http_decode(p, nl, name, sizeof name, true) : -1;
        if (dn >= 0 && (size_t)dn == kl && memcmp(name, key, kl) == 0) {
            const char *v = eq != NULL ? eq + 1 : p + len;
            size_t vl = eq != NULL ? len - nl - 1 : 0;
            int r = tr_http_decode(v, vl, out, cap, true);
            return r < 0 ? -2 : r;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return -1;
}

/* ---- answers ------------------------------------------------------------------------------ */

/* Writes the answer to request `token` (on its loop): if the connection is still there and still
 * waiting for that request, then goes on reading. data is borrowed (copied if it must wait). */
static void deliver(loop_t *lp, uint64_t token, const char *data, size_t len)
{
    conn *c = conn_find(lp, (uint32_t)(token >> 24));
    if (c == NULL || !c->in_flight || (c->seq & 0xFFFFFFu) != (token & 0xFFFFFFu) || c->closing)
        return; /* its connection is gone */
    c->in_flight = false;
    if (lp->srv->o.metrics != NULL && len >= 12) /* "HTTP/1.1 NNN" */
        count_answer(lp, c->route, (int)c->req.method,
                     (data[9] - '0') * 100 + (data[10] - '0') * 10 + (data[11] - '0'),
                     (double)(uv_hrtime() - c->t0) / 1e9);
    bool close_after = !c->keep_alive || lp->stopping;
    const char *end = memmem(data, len, "\r\n\r\n", 4);
    if (c->head && end != NULL) /* the headers only (Content-Length still says the body's) */
        len = (size_t)(end + 4 - data);
    if (close_after && end != NULL) { /* the answer says so (RFC 9112, 9.6), in a copy */
        static const char hdr[] = "Connection: close\r\n";
        send_raw_ins(c, data, len, NULL, true, (size_t)(end + 2 - data), hdr, sizeof hdr - 1);
        return;
    }
    send_raw(c, data, len, NULL, close_after);
    if (!close_after) {
        arm_timer(c);
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        parse_some(c); /* a pipelined request may be waiting */
    }
}

void tr_http_route(tr_http_server *s, uint64_t token, const char *route)
{
    unsigned idx = tr_http_loop_of(token);
    if (s == NULL || idx >= s->n || tls_loop != &s->loops[idx])
        return; /* only on the request's own loop */
    conn *c = conn_find(&s->loops[idx], (uint32_t)(token >> 24));
    if (c != NULL && c->in_flight && (c->seq & 0xFFFFFFu) == (token & 0xFFFFFFu))
        c->route = route;
}

int tr_http_respond_here(tr_http_server *s, uint64_t token, int status, const char *headers,
                      const char *body, size_t len)
{
    unsigned idx = tr_http_loop_of(token);
    if (s == NULL || idx >= s->n)
        return -1;
    size_t hl = headers != NULL ? strlen(headers) : 0;
    char small[8192]; /* a page of posts fits: no allocation for most answers */
    char *p = HEAD_ROOM + hl + len <= sizeof small ? small : malloc(HEAD_ROOM + hl + len);
    if (p == NULL)
        return -1;
    size_t n = format_into(p, status, headers != NULL ? headers : "", hl, body, len, false);
    deliver(&s->loops[idx], token, p, n);
    if (p != small)
        free(p);
    return 0;
}

int tr_http_post(tr_http_server *s, unsigned loop, tr_http_task *t)
{
    if (s == NULL || loop >= s->n || t == NULL)
        return -1;
    loop_t *lp = &s->loops[loop];
    if (tls_loop == lp && lp->in_after_io) { /* between callbacks, on that loop: no need to wait */
        t->fn(s, t);
        return 0;
    }
    tr_http_task *head = atomic_load_explicit(&lp->tasks, memory_order_relaxed);
    do
        t->next = head;
    while (!atomic_compare_exchange_weak_explicit(&lp->tasks, &head, t, memory_order_release,
                                                  memory_order_relaxed));
    /* from the loop's own thread (a handler answering at once) no wake-up is needed: the loop
     * runs its tasks at the check phase and again before it next polls (on_check, on_prepare);
     * the wake-up was an eventfd write and an extra epoll round per loop iteration */
    if (tls_loop != lp)
        uv_async_send(&lp->wake);
    return 0;
}

static void resp_run(tr_http_server *s, tr_http_task *t)
{
    resp *r = (resp *)t;
    deliver(&s->loops[tr_http_loop_of(r->token)], r->token, r->data, r->len);
    free(r);
}

int tr_http_respond(tr_http_server *s, uint64_t token, int status, const char *headers,
                 const char *body, size_t len)
{
    unsigned idx = tr_http_loop_of(token);
    if (s == NULL || idx >= s->n)
        return -1;
    size_t hl = headers != NULL ? strlen(headers) : 0;
    resp *r = malloc(sizeof *r + HEAD_ROOM + hl + len);
    if (r == NULL)
        return -1;
    r->task.fn = resp_run;
    r->token = token;
    /* Connection: close is decided on the loop (keep-alive) */
    r->len = format_into(r->data, status, headers != NULL ? headers : "", hl, body, len, false);
    return tr_http_post(s, idx, &r->task);
}

/* Runs the tasks posted to lp, oldest first. */
static void run_tasks(loop_t *lp)
{
    /* the whole stack at once (so no ABA), then reversed */
    tr_http_task *newest = atomic_exchange_explicit(&lp->tasks, NULL, memory_order_acquire);
    tr_http_task *t = NULL;
    while (newest != NULL) {
        tr_http_task *next = newest->next;
        newest->next = t;
        t = newest;
        newest = next;
    }
    while (t != NULL) {
        tr_http_task *next = t->next;
        t->fn(lp->srv, t);
        t = next;
    }
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    if (h->type == UV_TCP && h->data != NULL && h->data != h->loop->data) {
        conn_close(h->data);
        return;
    }
    if (h->type == UV_TIMER)
        return; /* a connection's: closed with it */
    uv_close(h, NULL);
}

static void on_wake(uv_async_t *a)
{
    loop_t *lp = a->data;
    pthread_mutex_lock(&lp->lock);
    if (lp->barrier_ack != lp->barrier_req) { /* between callbacks: no handler is running */
        lp->barrier_ack = lp->barrier_req;
        pthread_cond_broadcast(&lp->barrier_cond);
    }
    pthread_mutex_unlock(&lp->lock);
    run_tasks(lp);
    if (lp->stopping)
        uv_walk(&lp->loop, close_walk, NULL);
}

/* ---- start and stop ------------------------------------------------------------------------ */

/* The tasks posted on this loop's own thread, until none is left (one may post another). */
static void run_own_tasks(loop_t *lp)
{
    while (atomic_load_explicit(&lp->tasks, memory_order_relaxed) != NULL)
        run_tasks(lp);
}

/* after_io (when due), then the tasks posted on this thread; and again while those handed the
 * handler a request: a pipelined request is parsed, and handled, when the answer before it is
 * written — by such a task when that answer was given at once. What the handler starts waits for
 * after_io (the bridge's guest runs the actors it woke there); without another round the loop
 * slept in poll with it until the next I/O, and the actor's call timed out (found by fuzz-http:
 * "GET /nothing" answered 404 at once, then a pipelined GET /inventory/SKU answered 503 after
 * the call's timeout). */
static void settle(loop_t *lp, bool after_io_due)
{
    tr_http_opts *o = &lp->srv->o;
    for (;;) {
        lp->handled = false;
        if (after_io_due && o->after_io != NULL) {
            lp->in_after_io = true;
            o->after_io(o->user, lp->srv, lp->idx);
            lp->in_after_io = false;
        }
        run_own_tasks(lp);
        if (!lp->handled || o->after_io == NULL)
            return;
        after_io_due = true;
    }
}

static void on_check(uv_check_t *c)
{
    settle(c->data, true);
}

static void on_prepare(uv_prepare_t *p)
{
    settle(p->data, false); /* tasks posted after the last check (close callbacks, timers) */
}

static void loop_main(void *arg)
{
    loop_t *lp = arg;
    pthread_setname_np(pthread_self(), "tr-http");
    tls_loop = lp;
    uv_run(&lp->loop, UV_RUN_DEFAULT);
}

static int listen_socket(const char *host, int port, int *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in sa;
    if (uv_ip4_addr(host, port, &sa) != 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno ? -errno : -EINVAL;
        close(fd);
        return e;
    }
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *bound = ntohs(sa.sin_port);
    return fd;
}

/* Whether another socket already listens on host:port: the loops' sockets share their port with
 * SO_REUSEPORT, which the kernel grants any socket of the same user that sets it too — so a
 * second node started on a port in use would bind beside the first and take half its
 * connections, silently (seen: a stray social node left on social-bench's port answered 404 for
 * the users of the new one). A probe without SO_REUSEPORT cannot bind there while any socket
 * listens. (A node started in the instant between the probe and the binds is not caught.) */
static int port_taken(const char *host, int port)
{
    if (port == 0)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* TIME_WAIT is not in use */
    struct sockaddr_in sa;
    int rc = 0;
    if (uv_ip4_addr(host, port, &sa) != 0)
        rc = -EINVAL;
    else if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

int tr_http_start(const tr_http_opts *o, tr_http_server **out)
{
    if (o == NULL || o->handler == NULL || out == NULL)
        return -EINVAL;
    settings = (http_parser_settings){.on_message_begin = cb_begin,
                                      .on_url = cb_url,
                                      .on_header_field = cb_field,
                                      .on_header_value = cb_value,
                                      .on_headers_complete = cb_headers_done,
                                      .on_body = cb_body,
                                      .on_message_complete = cb_complete};
    int taken = port_taken(o->host != NULL ? o->host : "127.0.0.1", o->port);
    if (taken != 0)
        return taken;
    tr_http_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->o = *o;
    pthread_mutex_init(&s->clients_lock, NULL);
    if (s->o.host == NULL)
        s->o.host = "127.0.0.1";
    if (s->o.max_request == 0)
        s->o.max_request = 64 * 1024;
    if (s->o.request_ms == 0)
        s->o.request_ms = 10000;
    s->n = s->o.threads ? s->o.threads : 2;
    if (s->o.metrics != NULL)
        tr_metrics_gauge(s->o.metrics, "troupe_http_connections", "Open HTTP connections.", NULL,
                         0, &s->conns);
    s->loops = calloc(s->n, sizeof *s->loops);
    if (s->loops == NULL) {
        free(s);
        return -ENOMEM;
    }
    int port = o->port;
    for (unsigned i = 0; i < s->n; i++) {
        loop_t *lp = &s->loops[i];
        lp->srv = s;
        lp->idx = i;
        pthread_mutex_init(&lp->lock, NULL);
        pthread_cond_init(&lp->barrier_cond, NULL);
        uv_loop_init(&lp->loop);
        lp->loop.data = lp;
        int bound = 0;
        int fd = listen_socket(s->o.host, port, &bound);
        if (fd < 0) {
            uv_loop_close(&lp->loop);
            pthread_mutex_destroy(&lp->lock);
            s->n = i;
            tr_http_stop(s); /* closes what was started */
            return fd;
        }
        port = bound; /* the others share the first one's port */
        s->port = bound;
        uv_tcp_init(&lp->loop, &lp->listener);
        lp->listener.data = lp;
        uv_tcp_open(&lp->listener, fd);
        int rc = uv_listen((uv_stream_t *)&lp->listener, 1024, on_connection);
        uv_async_init(&lp->loop, &lp->wake, on_wake);
        lp->wake.data = lp;
        uv_check_init(&lp->loop, &lp->check);
        lp->check.data = lp;
        uv_check_start(&lp->check, on_check);
        uv_prepare_init(&lp->loop, &lp->prepare);
        lp->prepare.data = lp;
        uv_prepare_start(&lp->prepare, on_prepare);
        if (rc != 0 || uv_thread_create(&lp->th, loop_main, lp) != 0) {
            s->n = i + 1;
            tr_http_stop(s);
            return rc != 0 ? rc : -EAGAIN;
        }
    }
    *out = s;
    return 0;
}

int tr_http_port(const tr_http_server *s)
{
    return s != NULL ? s->port : 0;
}

void tr_http_quiesce(tr_http_server *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->quiesced, true);
    for (unsigned i = 0; i < s->n; i++) { /* wait out a handler already running */
        loop_t *lp = &s->loops[i];
        if (lp->th == 0)
            continue;
        pthread_mutex_lock(&lp->lock);
        uint64_t want = ++lp->barrier_req;
        uv_async_send(&lp->wake);
        while (lp->barrier_ack < want)
            pthread_cond_wait(&lp->barrier_cond, &lp->lock);
        pthread_mutex_unlock(&lp->lock);
    }
}

void tr_http_stop(tr_http_server *s)
{
    if (s == NULL)
        return;
    for (unsigned i = 0; i < s->n; i++) {
        loop_t *lp = &s->loops[i];
        atomic_store(&lp->stopping, true);
        if (lp->th != 0) {
            uv_async_send(&lp->wake);
            uv_thread_join(&lp->th);
        }
        /* tasks posted after the end still run (their answers find no connection to write
         * to, and what they hold is given back) */
        run_tasks(lp);
        uv_walk(&lp->loop, close_walk, NULL);
        uv_run(&lp->loop, UV_RUN_DEFAULT);
        uv_loop_close(&lp->loop);
        pthread_mutex_destroy(&lp->lock);
        pthread_cond_destroy(&lp->barrier_cond);
    }
    free(s->loops);
    for (size_t b = 0; b < BUCKETS; b++) /* normally empty: every connection closed */
        while (s->clients[b] != NULL) {
            client *cl = s->clients[b];
            s->clients[b] = cl->next;
            free(cl);
        }
    pthread_mutex_destroy(&s->clients_lock);
    free(s);
}
