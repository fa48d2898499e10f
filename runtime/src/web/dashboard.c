/*
 * dashboard.c — a node's live dashboard (troupe/dashboard.h): the page (dashboard.html, embedded
 * at build time by embed.cmake as dashboard_html.h, so it stays an HTML file in the tree), the
 * JSON it polls (/dashboard/data), and the process's ring of recent log events.
 *
 * Why here, in the web unit, rather than in each app: both apps serve the same page and the same
 * figures; an app only says where its node and store are and adds a JSON value of its own. The
 * node's and the store's figures come through getters the application hands over, so the web
 * unit still links the core alone (the getters' struct layouts are read from the headers, which
 * is no link dependency).
 *
 * Bounds: the ring has TR_DASHBOARD_EVENTS slots of fixed size; /dashboard/data lists at most
 * TR_DASHBOARD_PEERS members; nothing a client sends is kept.
 */
#include "troupe/dashboard.h"

#include "troupe/node.h"
#include "troupe/store.h"

#include "dashboard_html.h" /* generated: static const unsigned char dashboard_html[] (NUL-ended) */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tr_dashboard {
    tr_dashboard_opts o;
    uint64_t started_ms;        /* tr_now_ns at tr_dashboard_new, in ms */
};

/* ---- the ring of recent events ------------------------------------------------------------- */

typedef struct event {
    uint64_t seq;               /* 1, 2, ... in the order kept (0: an empty slot) */
    uint64_t wall_ms;           /* CLOCK_REALTIME when kept */
    int level;
    char component[24];
    char line[TR_DASHBOARD_LINE_MAX + 1];
} event;

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t ring_seq;       /* the last seq given */
static event ring[TR_DASHBOARD_EVENTS];

/* Copies at most max bytes of s into out (max + 1 bytes), not splitting a UTF-8 sequence. */
static void copy_cut(char *out, size_t max, const char *s)
{
    size_t n = strnlen(s, max + 1);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a sequence that starts before it: cut before that one */
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

void tr_dashboard_note(tr_log_level level, const char *component, const char *line)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&ring_lock);
    event *e = &ring[ring_seq % TR_DASHBOARD_EVENTS];
    e->seq = ++ring_seq;
    e->wall_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    e->level = (int)level;
    copy_cut(e->component, sizeof e->component - 1, component != NULL ? component : "runtime");
    copy_cut(e->line, TR_DASHBOARD_LINE_MAX, line != NULL ? line : "");
    pthread_mutex_unlock(&ring_lock);
}

void tr_dashboard_log(void *user, tr_log_level level, const char *component, const char *line)
{
    (void)user;
    tr_dashboard_note(level, component, line);
    fprintf(stderr, "troupe %s: %s\n", component != NULL ? component : "runtime",
            line != NULL ? line : "");
}

void tr_dashboard_events_clear(void)
{
    pthread_mutex_lock(&ring_lock);
    memset(ring, 0, sizeof ring);
    ring_seq = 0;
    pthread_mutex_unlock(&ring_lock);
}

static const char *level_name(int level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    return level >= 0 && level <= 3 ? names[level] : "debug";
}

/* "events":{"last":SEQ,"list":[...oldest first...]} */
static void events_json(tr_jbuf *b)
{
    pthread_mutex_lock(&ring_lock);
    tr_jbuf_lit(b, "\"events\":{\"last\":");
    tr_jbuf_u64(b, ring_seq);
    tr_jbuf_lit(b, ",\"list\":[");
    bool first = true;
    for (uint64_t i = 0; i < TR_DASHBOARD_EVENTS; i++) {
        const event *e = &ring[(ring_seq + i) % TR_DASHBOARD_EVENTS]; /* oldest first */
        if (e->seq == 0)
            continue;
        tr_jbuf_lit(b, first ? "{\"seq\":" : ",{\"seq\":");
        first = false;
        tr_jbuf_u64(b, e->seq);
        tr_jbuf_lit(b, ",\"wall_ms\":");
        tr_jbuf_u64(b, e->wall_ms);
        tr_jbuf_lit(b, ",\"level\":\"");
        tr_jbuf_lit(b, level_name(e->level));
        tr_jbuf_lit(b, "\",\"component\":");
        tr_jbuf_str(b, e->component, strlen(e->component));
        tr_jbuf_lit(b, ",\"line\":");
        tr_jbuf_str(b, e->line, strlen(e->line));
        tr_jbuf_lit(b, "}");
    }
    tr_jbuf_lit(b, "]}");
    pthread_mutex_unlock(&ring_lock);
}

/* ---- the dashboard ------------------------------------------------------------------------- */

int tr_dashboard_new(const tr_dashboard_opts *opts, tr_dashboard **out)
{
    if (out != NULL)
        *out = NULL;
    if (opts == NULL || out == NULL || opts->sys == NULL)
        return TR_EINVAL;
    tr_dashboard *d = calloc(1, sizeof *d);
    if (d == NULL)
        return TR_ENOMEM;
    d->o = *opts;
    d->started_ms = tr_now_ns() / 1000000u;
    *out = d;
    return TR_OK;
}

void tr_dashboard_free(tr_dashboard *d)
{
    free(d);
}

const char *tr_dashboard_page(size_t *len)
{
    if (len != NULL)
        *len = sizeof dashboard_html - 1;
    return (const char *)dashboard_html;
}

/* A "key":value member, after the first. */
static void member_u64(tr_jbuf *b, const char *key, uint64_t v)
{
    tr_jbuf_lit(b, ",\"");
    tr_jbuf_lit(b, key);
    tr_jbuf_lit(b, "\":");
    tr_jbuf_u64(b, v);
}

static const char *peer_state(tr_peer_status s)
{
    switch (s) {
    case TR_PEER_UP: return "up";
    case TR_PEER_SUSPECT: return "suspect";
    case TR_PEER_LEFT: return "left";
    default: return "down";
    }
}

static void cluster_json(const tr_dashboard *d, tr_jbuf *b)
{
    tr_peer_info peers[TR_DASHBOARD_PEERS];
    size_t n = 0;
    if (d->o.node_peers(d->o.node, peers, TR_DASHBOARD_PEERS, &n) != TR_OK)
        n = 0;
    tr_jbuf_lit(b, ",\"cluster\":{\"count\":");
    tr_jbuf_u64(b, n);
    tr_jbuf_lit(b, ",\"members\":[");
    for (size_t i = 0; i < n && i < TR_DASHBOARD_PEERS; i++) {
        const tr_peer_info *p = &peers[i];
        tr_jbuf_lit(b, i == 0 ? "{\"name\":" : ",{\"name\":");
        tr_jbuf_str(b, p->name, strnlen(p->name, sizeof p->name));
        tr_jbuf_lit(b, ",\"address\":");
        tr_jbuf_str(b, p->address, strnlen(p->address, sizeof p->address));
        member_u64(b, "node_id", p->node_id);
        tr_jbuf_lit(b, ",\"state\":\"");
        tr_jbuf_lit(b, peer_state(p->status));
        tr_jbuf_lit(b, "\"}");
    }
    tr_jbuf_lit(b, "]}");
}

/* /dashboard/data's body (see troupe/dashboard.h), or NULL (out of memory). */
static char *data_json(const tr_dashboard *d, size_t *len)
{
    tr_jbuf b = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = tr_now_ns() / 1000000u;
    const char *app = d->o.app != NULL ? d->o.app : "troupe";
    const char *node = d->o.node_name != NULL ? d->o.node_name : "local";
    tr_jbuf_lit(&b, "{\"version\":1,\"application\":");
    tr_jbuf_str(&b, app, strlen(app));
    tr_jbuf_lit(&b, ",\"node\":");
    tr_jbuf_str(&b, node, strlen(node));
    member_u64(&b, "now_ms", now);
    member_u64(&b, "wall_ms", (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
    member_u64(&b, "uptime_ms", now - d->started_ms);

    tr_system_stats ss;
    tr_system_stats_get(d->o.sys, &ss);
    tr_jbuf_lit(&b, ",\"system\":{\"alive\":");
    tr_jbuf_u64(&b, ss.alive);
    member_u64(&b, "spawned", ss.spawned);
    member_u64(&b, "ended", ss.ended);
    member_u64(&b, "dead_letters", ss.dead_letters);
    member_u64(&b, "late_replies", ss.late_replies);
    member_u64(&b, "steals", ss.steals);
    member_u64(&b, "parks", ss.parks);
    tr_jbuf_lit(&b, "}");

    if (d->o.node != NULL && d->o.node_peers != NULL)
        cluster_json(d, &b);
    if (d->o.node != NULL && d->o.node_stats != NULL) {
        tr_node_stats ns;
        memset(&ns, 0, sizeof ns);
        d->o.node_stats(d->o.node, &ns);
        tr_jbuf_lit(&b, ",\"node_stats\":{\"msgs_in\":");
        tr_jbuf_u64(&b, ns.msgs_in);
        member_u64(&b, "msgs_out", ns.msgs_out);
        member_u64(&b, "peers_down", ns.peers_down);
        member_u64(&b, "peers_left", ns.peers_left);
        member_u64(&b, "lost", ns.lost);
        member_u64(&b, "queue_full", ns.queue_full);
        member_u64(&b, "no_route", ns.no_route);
        member_u64(&b, "refused_auth", ns.refused_auth);
        member_u64(&b, "bad_frames", ns.bad_frames);
        tr_jbuf_lit(&b, "}");
    }
    if (d->o.store != NULL && d->o.store_stats != NULL) {
        tr_store_stats st;
        memset(&st, 0, sizeof st);
        d->o.store_stats(d->o.store, &st);
        tr_jbuf_lit(&b, ",\"store\":{\"commits\":");
        tr_jbuf_u64(&b, st.commits);
        member_u64(&b, "failures", st.failures);
        member_u64(&b, "units", st.units);
        member_u64(&b, "events", st.events);
        member_u64(&b, "snapshots", st.snapshots);
        member_u64(&b, "outbox_put", st.outbox_put);
        member_u64(&b, "outbox_acked", st.outbox_acked);
        member_u64(&b, "outbox_delivered", st.outbox_delivered);
        member_u64(&b, "outbox_redelivered", st.outbox_redelivered);
        tr_jbuf_lit(&b, "}");
    }
    tr_jbuf_lit(&b, ",");
    events_json(&b);
    tr_jbuf_lit(&b, ",\"app\":");
    if (d->o.app_json != NULL) {
        size_t before = b.len;
        d->o.app_json(d->o.user, &b);
        if (b.len == before)
            tr_jbuf_lit(&b, "null"); /* it wrote nothing: still valid JSON */
    } else {
        tr_jbuf_lit(&b, "null");
    }
    tr_jbuf_lit(&b, "}");
    return tr_jbuf_take(&b, len);
}

static void respond_error(tr_http_server *srv, uint64_t token, int status, const char *headers,
                          const char *msg)
{
    char body[128];
    tr_http_respond(srv, token, status, headers, body, tr_json_error(body, sizeof body, msg));
}

/* The page may load nothing from anywhere else, and may only talk to its own server. */
#define PAGE_HEADERS                                                                             \
    "Content-Type: text/html; charset=utf-8\r\n"                                                 \
    "Cache-Control: no-store\r\n"                                                                \
    "X-Content-Type-Options: nosniff\r\n"                                                        \
    "Content-Security-Policy: default-src 'none'; connect-src 'self'; img-src data:; "           \
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'\r\n"

bool tr_dashboard_serve(tr_dashboard *d, tr_http_server *srv, const tr_http_request *req)
{
    static const char base[] = "/dashboard";
    const char *p = req->path;
    if (strncmp(p, base, sizeof base - 1) != 0 || (p[sizeof base - 1] != '\0' &&
                                                    p[sizeof base - 1] != '/'))
        return false;
    const char *rest = p + sizeof base - 1; /* "", "/", "/data", ... */
    bool page = rest[0] == '\0' || strcmp(rest, "/") == 0;
    bool data = strcmp(rest, "/data") == 0;
    /* its requests counted under their own route in /metrics, not "(none)" */
    tr_http_route(srv, req->token, page ? "/dashboard" : data ? "/dashboard/data" : NULL);
    if (!page && !data) {
        respond_error(srv, req->token, 404, NULL, "no such route");
    } else if (req->method != TR_HTTP_GET && req->method != TR_HTTP_HEAD) {
        respond_error(srv, req->token, 405, "Allow: GET, HEAD\r\n", "method not allowed");
    } else if (page) {
        tr_http_respond(srv, req->token, 200, PAGE_HEADERS, (const char *)dashboard_html,
                        sizeof dashboard_html - 1);
    } else {
        size_t len = 0;
        char *body = data_json(d, &len);
        if (body == NULL) {
            respond_error(srv, req->token, 503, "Retry-After: 1\r\n", "out of memory");
        } else {
            tr_http_respond(srv, req->token, 200, "Cache-Control: no-store\r\n", body, len);
            free(body);
        }
    }
    return true;
}
