/*
 * bridge.c — the HTTP→actor bridge (troupe/web.h): a port and a guest per HTTP loop, call records
 * recycled per loop, answers written by the request's own loop.
 *
 * A call goes out through the port of the loop it came in on; the reply's callback runs on the
 * thread that delivers it (for an order of the flash sale, the thread that committed it: often the
 * loop itself, inside its guest), where on_reply turns it into an answer in the record; the record
 * is then posted to the loop (tr_http_post: run at once when that is the current thread, between
 * callbacks), which writes the answer in place and puts the record back on its free list. Free
 * lists are per loop and touched only by their loop, so they need no lock. (A one-shot actor per
 * request cost a spawn, two turns and an exit; a caller actor per loop still cost two thread
 * hand-offs per request: this is what the flash sale measured its way to, now shared.)
 */
#include "troupe/web.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOOPS_MAX 64u
#define SPARES_MAX 4096u        /* records kept per loop for reuse, at most */

struct tr_web_call {
    tr_web_call *next;          /* on its loop's free list */
    tr_web *w;
    tr_http_server *http;       /* the server of the request (set before tr_web_start returns) */
    uint64_t token;
    unsigned loop;
    tr_http_task task;
    int status;
    bool resent;                /* sent again once already (see on_port) */
    tr_web_send_fn send;        /* how it was sent, for that */
    void *send_arg;
    tr_pid to;                  /* tr_web_call_send's target (send_arg points here) */
    const char *headers;
    size_t body_len;
    char *big;                  /* an answer above TR_WEB_BODY_MAX (tr_web_answer_take), or NULL */
    char body[TR_WEB_BODY_MAX];
    _Alignas(max_align_t) unsigned char data[]; /* the application's call_size bytes */
};

typedef struct loop_state {
    tr_http_server *http;       /* as its handler calls saw it (the loop's own) */
    tr_port *port;
    tr_guest *guest;
    tr_web_call *spare;
    size_t nspare;
} loop_state;

struct tr_web {
    tr_system *sys;
    tr_web_opts o;
    tr_http_handler handler;    /* the application's */
    void *user;
    tr_http_server *http;
    unsigned nloops;
    loop_state loops[LOOPS_MAX];
};

/* ---- calls --------------------------------------------------------------------------------- */

/* On the request's loop: writes the answer and keeps the record. */
static void write_answer(tr_http_server *h, tr_http_task *t)
{
    tr_web_call *c = (tr_web_call *)((char *)t - offsetof(tr_web_call, task));
    tr_http_respond_here(h, c->token, c->status, c->headers, c->big ? c->big : c->body,
                         c->body_len);
    tr_web_call_drop(c);
}

/* A port's callback: the reply (or why none), on the delivering thread. */
static void on_port(void *user, uint64_t cookie, int rc, const tr_msg *reply)
{
    tr_web *w = user;
    tr_web_call *c = (tr_web_call *)(uintptr_t)cookie;
    if (rc == TR_ENOPROC && reply != NULL && !c->resent) {
        /* its target ended before reading it (a keyed actor passivated, or ending itself, with
         * requests queued): never handled, so sent again, once, the way it was — a shard's
         * sender finds the key's next actor. Refused at once: answered below. */
        c->resent = true;
        tr_msg *again = tr_msg_from_bytes(tr_msg_type(reply), tr_msg_data(reply),
                                          tr_msg_size(reply));
        if (again != NULL &&
            c->send(c->send_arg, w->loops[c->loop % w->nloops].port, again, w->o.timeout_ms,
                    cookie) == TR_OK)
            return;
    }
    if (rc != TR_OK)
        reply = NULL;
    c->status = 0;
    w->o.on_reply(w->o.http.user, c, rc, reply);
    if (c->status == 0) {
        c->status = 500;
        c->headers = NULL;
        c->body_len = (size_t)snprintf(c->body, sizeof c->body, "{\"error\":\"no answer\"}");
    }
    c->task.fn = write_answer;
    if (tr_http_post(c->http, c->loop, &c->task) != 0) { /* the server is gone */
        free(c->big);
        free(c);
    }
}

tr_web_call *tr_web_call_new(tr_web *w, const tr_http_request *req)
{
    unsigned loop = tr_http_loop_of(req->token) % w->nloops;
    loop_state *ls = &w->loops[loop];
    if (tr_port_pending(ls->port) >= w->o.max_calls) {
        static const char busy[] = "{\"error\":\"too many calls in flight\"}";
        tr_http_respond(ls->http, req->token, 503, "Retry-After: 1\r\n", busy, sizeof busy - 1);
        return NULL;
    }
    tr_web_call *c = ls->spare;
    if (c != NULL) {
        ls->spare = c->next;
        ls->nspare--;
    } else if ((c = malloc(sizeof *c + w->o.call_size)) == NULL) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        tr_http_respond(ls->http, req->token, 503, "Retry-After: 1\r\n", oom, sizeof oom - 1);
        return NULL;
    }
    c->next = NULL;
    c->w = w;
    c->token = req->token;
    c->loop = tr_http_loop_of(req->token);
    c->http = ls->http;
    c->status = 0;
    c->resent = false;
    c->send = NULL;
    c->send_arg = NULL;
    c->to = TR_PID_NONE;
    c->headers = NULL;
    c->body_len = 0;
    c->big = NULL;
    memset(c->data, 0, w->o.call_size);
    return c;
}

void *tr_web_call_data(tr_web_call *c)
{
    return c != NULL ? c->data : NULL;
}

void tr_web_call_drop(tr_web_call *c)
{
    if (c == NULL)
        return;
    free(c->big);
    c->big = NULL;
    loop_state *ls = &c->w->loops[c->loop % c->w->nloops];
    if (ls->nspare >= SPARES_MAX) {
        free(c);
        return;
    }
    c->next = ls->spare;
    ls->spare = c;
    ls->nspare++;
}

int tr_web_call_send_with(tr_web_call *c, tr_msg *m, tr_web_send_fn send, void *arg)
{
    if (c == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    tr_web *w = c->w;
    tr_port *port = w->loops[c->loop % w->nloops].port;
    c->send = send;
    c->send_arg = arg;
    int rc = send(arg, port, m, w->o.timeout_ms, (uint64_t)(uintptr_t)c);
    if (rc != TR_OK) {
        static const char gone[] = "{\"error\":\"unavailable\"}";
        tr_http_respond(c->http, c->token, 503, "Retry-After: 1\r\n", gone, sizeof gone - 1);
        tr_web_call_drop(c);
    }
    return rc;
}

static int send_pid(void *arg, tr_port *port, tr_msg *m, unsigned timeout_ms, uint64_t cookie)
{
    return tr_port_request(port, *(const tr_pid *)arg, m, timeout_ms, cookie);
}

int tr_web_call_send(tr_web_call *c, tr_pid to, tr_msg *m)
{
    if (c == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    c->to = to;
    return tr_web_call_send_with(c, m, send_pid, &c->to);
}

void tr_web_answer(tr_web_call *c, int status, const char *headers, const char *body, size_t len)
{
    if (len > sizeof c->body)
        len = sizeof c->body;
    if (body != c->body)
        memcpy(c->body, body, len);
    tr_web_answer_len(c, status, headers, len);
}

char *tr_web_answer_buf(tr_web_call *c)
{
    return c->body;
}

void tr_web_answer_take(tr_web_call *c, int status, const char *headers, char *body, size_t len)
{
    free(c->big);
    c->big = body;
    c->status = status;
    c->headers = headers;
    c->body_len = body != NULL ? len : 0;
}

void tr_web_answer_len(tr_web_call *c, int status, const char *headers, size_t len)
{
    free(c->big);
    c->big = NULL;
    c->status = status;
    c->headers = headers;
    c->body_len = len <= sizeof c->body ? len : sizeof c->body;
}

/* ---- the server's hooks -------------------------------------------------------------------- */

/* GET metrics_path: the system's registry, rendered on this loop (a render costs the same
 * whatever the number of actors: docs/performance.md). */
static void metrics_answer(tr_web *w, tr_http_server *srv, const tr_http_request *req)
{
    tr_http_route(srv, req->token, w->o.metrics_path);
    if (req->method != TR_HTTP_GET && req->method != TR_HTTP_HEAD) {
        static const char no[] = "{\"error\":\"method not allowed\"}";
        tr_http_respond(srv, req->token, 405, "Allow: GET, HEAD\r\n", no, sizeof no - 1);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    if (tr_metrics_render(tr_system_metrics(w->sys), &text, &len) != TR_OK) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        tr_http_respond(srv, req->token, 503, "Retry-After: 1\r\n", oom, sizeof oom - 1);
        return;
    }
    tr_http_respond(srv, req->token, 200, "Content-Type: " TR_METRICS_CONTENT_TYPE "\r\n", text,
                    len);
    free(text);
}

static void handler(void *user, tr_http_server *srv, const tr_http_request *req)
{
    tr_web *w = user;
    loop_state *ls = &w->loops[tr_http_loop_of(req->token) % w->nloops];
    ls->http = srv; /* this loop's own field: requests may come before tr_http_start returns */
    if (w->o.metrics_path != NULL && strcmp(req->path, w->o.metrics_path) == 0) {
        metrics_answer(w, srv, req);
        return;
    }
    if (ls->guest != NULL)
        (void)tr_guest_enter(ls->guest); /* TR_ESTATE: in already, since an earlier request */
    w->handler(w->user, srv, req);
}

static void after_io(void *user, tr_http_server *srv, unsigned loop)
{
    (void)srv;
    tr_web *w = user;
    /* the actors this iteration's requests woke run here, in one batch; nothing if none */
    tr_guest_leave(w->loops[loop % w->nloops].guest, w->o.run_actors);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

tr_http_server *tr_web_http(tr_web *w)
{
    return w != NULL ? w->http : NULL;
}

static void free_loops(tr_web *w)
{
    for (unsigned i = 0; i < LOOPS_MAX; i++) {
        loop_state *ls = &w->loops[i];
        tr_port_close(ls->port); /* unanswered: TR_ESTOPPED, answered while the server runs */
        ls->port = NULL;
    }
    tr_http_stop(w->http); /* runs the answers' tasks still posted: the records come back */
    w->http = NULL;
    for (unsigned i = 0; i < LOOPS_MAX; i++) {
        loop_state *ls = &w->loops[i];
        while (ls->spare != NULL) {
            tr_web_call *c = ls->spare;
            ls->spare = c->next;
            free(c);
        }
        tr_guest_free(ls->guest); /* the loops are gone: no thread is in one */
        ls->guest = NULL;
    }
}

int tr_web_start(tr_system *sys, const tr_web_opts *o, tr_web **out, char *err, size_t errlen)
{
    if (sys == NULL || o == NULL || out == NULL || o->http.handler == NULL ||
        o->on_reply == NULL || o->http.after_io != NULL || o->http.threads > LOOPS_MAX ||
        o->call_size > (1u << 20))
        return TR_EINVAL;
    tr_web *w = calloc(1, sizeof *w);
    if (w == NULL)
        return TR_ENOMEM;
    w->sys = sys;
    w->o = *o;
    if (w->o.timeout_ms == 0)
        w->o.timeout_ms = 5000;
    if (w->o.max_calls == 0)
        w->o.max_calls = 100000;
    w->handler = o->http.handler;
    w->user = o->http.user;
    w->nloops = o->http.threads ? o->http.threads : 2;
    int rc = TR_OK;
    *out = w; /* before the loops start: their handler calls may need it at once */
    for (unsigned i = 0; rc == TR_OK && i < w->nloops; i++) {
        rc = tr_port_open(sys, on_port, w, &w->loops[i].port);
        if (rc == TR_OK && o->run_actors > 0)
            rc = tr_guest_new(sys, &w->loops[i].guest);
    }
    if (rc == TR_OK) {
        tr_http_opts ho = o->http;
        ho.handler = handler;
        ho.user = w;
        ho.after_io = o->run_actors > 0 ? after_io : NULL;
        if (ho.metrics == NULL)
            ho.metrics = tr_system_metrics(sys);
        tr_http_server *h = NULL;
        int hr = tr_http_start(&ho, &h);
        if (hr != 0) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "cannot listen on %s:%d: %s",
                         ho.host != NULL ? ho.host : "127.0.0.1", ho.port, strerror(-hr));
            rc = TR_EIO;
        } else {
            w->http = h;
        }
    }
    if (rc != TR_OK) {
        *out = NULL;
        free_loops(w);
        free(w);
        return rc;
    }
    return TR_OK;
}

void tr_web_quiesce(tr_web *w)
{
    if (w != NULL)
        tr_http_quiesce(w->http);
}

void tr_web_stop(tr_web *w)
{
    if (w == NULL)
        return;
    free_loops(w);
    free(w);
}
