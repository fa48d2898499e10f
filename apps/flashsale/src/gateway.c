/*
 * gateway.c — the flash sale node: HTTP in front, actors behind.
 *
 * The HTTP loops (troupe/http.h) never block: a request that needs an order actor becomes a call
 * made through the loop's port; the answer's callback, on whichever runtime thread delivers it,
 * turns the reply into JSON and hands it to the loop that writes it. Order actors are keyed
 * actors of the runtime's shard facility (troupe/shard.h), one per SKU: placed on the node that
 * owns the SKU, started on first use, reached from any node, moved when nodes come and go. Order
 * actors recover from their journal; in a cluster the store is shared (Redis) and fenced, so a
 * SKU that moves to another node recovers there and its old owner can no longer write.
 * The email actor consumes the outbox under its mailbox's token bucket: one in the cluster, a
 * runtime singleton (troupe/singleton.h) placed on the node that owns "flashsale/email" and moved
 * when nodes come and go. Each node's stats actor, registered as "flashsale/stats/NODE_ID",
 * answers the other nodes' GET /emails/stats with its node's email counters.
 *
 *   PUT  /inventory/{sku}  {"stock":N}              -> 200 {"sku","stock","sold","remaining"} |
 *                                                      401 without the admin token, when set
 *   GET  /inventory/{sku}                           -> 200 ... | 404
 *   POST /orders  {"user","sku","qty"}              -> 201 {"order_id","user","sku","qty",
 *                                                      "status":"confirmed"} | 409 sold out |
 *                                                      404 no such SKU (never set up) |
 *                                                      400 (which field) | 413 | 429 | 503
 *   GET  /orders/{id}                               -> 200 | 404
 *   GET  /dashboard, /dashboard/data                -> the live dashboard (troupe/dashboard.h): its
 *                                                      page, and the figures it polls ("app": the
 *                                                      email counters and limit)
 *   GET  /emails/stats                              -> {"sent","pending","retrying","rate"}
 *   GET  /health                                    -> 200 when ready (cluster: "node", "peers_up")
 *   GET  /metrics                                   -> the node's metrics, Prometheus text format
 *                                                      (the bridge answers it: troupe/web.h)
 *
 * Each route is named to the server (tr_http_route) by its pattern, the label of its metrics.
 */
#include "gateway.h"
#include "troupe/http.h"

#include "actors/email.h"
#include "actors/order.h"

#include <troupe/dashboard.h>
#include <troupe/json.h>
#include <troupe/node.h>
#include <troupe/shard.h>
#include <troupe/singleton.h>
#include <troupe/web.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SKUS 100000u        /* SKUs with an order actor on one node at once */
#define EMAIL_KEY "flashsale/email" /* the email actor's singleton name */
#define PORTS 64u               /* HTTP threads at most (the bridge has a port for each) */

/* The stats actor's protocol. */
enum {
    FS_EMAIL_STATS = 0x4603,    /* [] -> [sent, pending, retrying] */
};

struct fs_app {
    fs_opts o;
    tr_system *sys;
    tr_node *node;              /* cluster mode; NULL: one node */
    tr_store *store;
    tr_web *web;                /* the HTTP server and its bridge to the actors */
    tr_dashboard *dash;         /* GET /dashboard */
    tr_shard *orders;           /* the order actors, one per SKU */
    tr_singleton *mailer;       /* the email actor, one in the cluster */
    tr_pid stats_actor;         /* answers other nodes' FS_EMAIL_STATS */
    tr_spawn_opts email_spawn;
    email_stats stats;
    email_args eargs;
    order_email_opts mail;      /* what the confirmation emails say (order_email_format) */
    char admin[257];            /* the admin token ("" when none: admin routes are open) */
    size_t admin_len;
    pthread_mutex_t lock;       /* the admission bucket */
    tr_limiter admission;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static void respond(tr_http_server *h, uint64_t token, int status, const char *body)
{
    tr_http_respond(h, token, status, NULL, body, strlen(body));
}

/* {"error": msg} in body[size] (msg escaped); its length. */
static size_t error_body(char *body, size_t size, const char *msg)
{
    return tr_json_error(body, size, msg);
}

/* {"error": msg} with extra header lines (or NULL). */
static void respond_err(tr_http_server *h, uint64_t token, int status, const char *headers,
                        const char *msg)
{
    char body[256];
    tr_http_respond(h, token, status, headers, body, error_body(body, sizeof body, msg));
}

static void respond_error(tr_http_server *h, uint64_t token, int status, const char *msg)
{
    respond_err(h, token, status, NULL, msg);
}

/* 400 for a body that is not strict JSON (troupe/json.h says why). */
static void bad_json(tr_http_server *h, uint64_t token, const char *why)
{
    char msg[128];
    snprintf(msg, sizeof msg, "malformed JSON: %s", why);
    respond_err(h, token, 400, NULL, msg);
}

/* 405 with the methods the route takes (allow: an "Allow: ...\r\n" header line). */
static void not_allowed(tr_http_server *h, uint64_t token, const char *allow)
{
    respond_err(h, token, 405, allow, "method not allowed");
}

/* GET, or HEAD (answered as GET; the server sends the headers only). */
static bool reads(const tr_http_request *req)
{
    return req->method == TR_HTTP_GET || req->method == TR_HTTP_HEAD;
}

/* An error the client should retry after a second (429, 503). */
static void respond_retry(tr_http_server *h, uint64_t token, int status, const char *msg)
{
    respond_err(h, token, status, "Retry-After: 1\r\n", msg);
}

/* This node's email counters: sent (by its email actor), pending (in the store), retrying. */
static void email_counts(fs_app *a, uint64_t v[3])
{
    v[0] = atomic_load(&a->stats.sent);
    v[1] = 0;
    tr_outbox_pending(a->store, "email", &v[1]);
    v[2] = atomic_load(&a->stats.retrying);
}

/* GET /emails/stats's answer from the counters of the email actor's node, in body[size]. */
static size_t email_stats_body(const fs_app *a, const uint64_t v[3], char *body, size_t size)
{
    int n = snprintf(body, size,
                     "{\"sent\":%llu,\"pending\":%llu,\"retrying\":%llu,\"rate\":%u}",
                     (unsigned long long)v[0], (unsigned long long)v[1],
                     (unsigned long long)v[2], a->o.email_rate ? a->o.email_rate : 50);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* The admission bucket (a token bucket: rate per second, burst): true when a request may pass. */
static bool admit(fs_app *a)
{
    if (a->o.admission_rate == 0)
        return true;
    pthread_mutex_lock(&a->lock);
    bool ok = tr_limiter_take(&a->admission, tr_now_ns()) == 0;
    pthread_mutex_unlock(&a->lock);
    return ok;
}

/* The stats actor of the node that runs the email actor, when that is another node: TR_OK with
 * its pid, or TR_ENOPROC while it is not known (the email actor starting or moving). */
static int email_stats_actor(fs_app *a, tr_pid *out)
{
    tr_pid mailer;
    char reg[64];
    if (a->node == NULL || tr_singleton_whereis(a->mailer, &mailer) != TR_OK)
        return TR_ENOPROC;
    snprintf(reg, sizeof reg, "flashsale/stats/%u", (unsigned)tr_pid_node(mailer));
    return tr_node_whereis(a->node, reg, out);
}

/* Whether the request carries the admin token, when one is set ("Authorization: Bearer TOKEN",
 * compared in constant time for a token of its length). */
static bool admin_ok(const fs_app *a, const tr_http_request *req)
{
    if (a->admin_len == 0)
        return true;
    const char *auth = tr_http_header_get(req, "Authorization");
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *t = auth + 7;
    size_t tl = strlen(t);
    unsigned char d = tl != a->admin_len;
    for (size_t i = 0; i < a->admin_len; i++)
        d |= (unsigned char)(a->admin[i] ^ (i < tl ? t[i] : 0));
    return d == 0;
}

/* ---- calls ----------------------------------------------------------------------------------- */

enum { CALL_SET, CALL_GET, CALL_PLACE, CALL_LOOKUP, CALL_STATS };

/* What a call to an actor remembers to answer its HTTP request (the bridge's call data). */
typedef struct call {
    fs_app *app;
    int kind;
    tr_msg *req;                /* the request to send (owned until sent) */
    char sku[ORDER_SKU_MAX + 1];
    char user[ORDER_USER_MAX + 1];
    char order_id[ORDER_ID_MAX + 1];
    uint64_t qty;
} call;

/* Sets the call's answer (body copied). */
static void set_answer(tr_web_call *wc, int status, const char *headers, const char *body)
{
    tr_web_answer(wc, status, headers, body, strlen(body));
}

static void set_error(tr_web_call *wc, int status, const char *msg)
{
    tr_web_answer_len(wc, status, status == 503 || status == 429 ? "Retry-After: 1\r\n" : NULL,
                      error_body(tr_web_answer_buf(wc), TR_WEB_BODY_MAX, msg));
}

/* A bounded string builder: what does not fit is cut off (end points at the last usable byte). */
typedef struct sbuf {
    char *p, *end;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (n > (size_t)(b->end - b->p))
        n = (size_t)(b->end - b->p);
    memcpy(b->p, s, n);
    b->p += n;
}

#define sb_lit(b, lit) sb_put((b), (lit), sizeof(lit) - 1)

static void sb_u64(sbuf *b, uint64_t v)
{
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0 && b->p < b->end)
        *b->p++ = digits[--n];
}

static void answer(tr_web_call *wc, const call *c, const tr_msg *m)
{
    tr_reader r;
    tr_reader_init(&r, m);
    char *body = tr_web_answer_buf(wc);
    const size_t size = TR_WEB_BODY_MAX;
    uint64_t v[3];
    switch (c->kind) {
    case CALL_SET:
    case CALL_GET: {
        bool got = tr_read_u64(&r, &v[0]) == TR_OK && tr_read_u64(&r, &v[1]) == TR_OK;
        uint64_t remaining, set_up = 1;
        if (got && c->kind == CALL_GET)
            got = tr_read_u64(&r, &remaining) == TR_OK && tr_read_u64(&r, &set_up) == TR_OK;
        if (got && !set_up) {
            set_error(wc, 404, "no such SKU"); /* never set up: POST /orders says the same */
        } else if (got) {
            uint64_t rem = v[0] > v[1] ? v[0] - v[1] : 0;
            snprintf(body, size,
                     "{\"sku\":\"%s\",\"stock\":%llu,\"sold\":%llu,\"remaining\":%llu}", c->sku,
                     (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)rem);
            set_answer(wc, 200, NULL, body);
        } else {
            set_error(wc, 500, "bad answer from the order actor");
        }
        break;
    }
    case CALL_PLACE: {
        int64_t status;
        const char *id;
        size_t il;
        if (tr_read_i64(&r, &status) != TR_OK || tr_read_str(&r, &id, &il) != TR_OK) {
            set_error(wc, 500, "bad answer from the order actor");
        } else if (status == ORDER_CONFIRMED) { /* by hand: this is once per order */
            sbuf b = {body, body + size - 1};
            sb_lit(&b, "{\"order_id\":\"");
            sb_put(&b, id, il);
            sb_lit(&b, "\",\"user\":\"");
            sb_put(&b, c->user, strlen(c->user));
            sb_lit(&b, "\",\"sku\":\"");
            sb_put(&b, c->sku, strlen(c->sku));
            sb_lit(&b, "\",\"qty\":");
            sb_u64(&b, c->qty);
            sb_lit(&b, ",\"status\":\"confirmed\"}");
            *b.p = '\0';
            set_answer(wc, 201, NULL, body);
        } else if (status == ORDER_SOLD_OUT) {
            set_error(wc, 409, "sold out");
        } else if (status == ORDER_UNKNOWN) {
            set_error(wc, 404, "no such SKU");
        } else {
            set_error(wc, 400, "invalid user or qty");
        }
        break;
    }
    case CALL_STATS: {
        if (tr_read_u64(&r, &v[0]) == TR_OK && tr_read_u64(&r, &v[1]) == TR_OK &&
            tr_read_u64(&r, &v[2]) == TR_OK) {
            tr_web_answer_len(wc, 200, NULL, email_stats_body(c->app, v, body, size));
        } else {
            set_error(wc, 500, "bad answer from the email node");
        }
        break;
    }
    case CALL_LOOKUP: {
        uint64_t found = 0, qty = 0;
        const char *user = "";
        size_t ul = 0;
        if (tr_read_u64(&r, &found) == TR_OK && found && tr_read_str(&r, &user, &ul) == TR_OK &&
            tr_read_u64(&r, &qty) == TR_OK) {
            snprintf(body, size,
                     "{\"order_id\":\"%s\",\"user\":\"%.*s\",\"sku\":\"%s\",\"qty\":%llu,"
                     "\"status\":\"confirmed\"}",
                     c->order_id, (int)ul, user, c->sku, (unsigned long long)qty);
            set_answer(wc, 200, NULL, body);
        } else {
            set_error(wc, 404, "no such order");
        }
        break;
    }
    default:
        break;
    }
    tr_reader_done(&r);
}

/* Calls go through the web unit's bridge (troupe/web.h): a port and a guest per HTTP loop, the
 * answer formatted on the thread that delivers the reply — for a placed order, the one that
 * committed it, most often the loop itself — and written by the request's loop. */

/* The reply to a call (or why none came), on the delivering thread. */
static void on_reply(void *user, tr_web_call *wc, int rc, const tr_msg *reply)
{
    (void)user;
    const call *c = tr_web_call_data(wc);
    if (rc != TR_OK || reply == NULL || tr_msg_type(reply) == TR_MSG_SHARD_UNAVAILABLE)
        set_error(wc, 503, rc == TR_ESTOPPED ? "stopping" : "the SKU's owner is unavailable");
    else
        answer(wc, c, reply);
}

/* The bridge's sender for an order actor: the SKU's, wherever it lives (troupe/shard.h). */
static int order_send(void *arg, tr_port *port, tr_msg *m, unsigned timeout_ms, uint64_t cookie)
{
    tr_web_call *wc = (tr_web_call *)(uintptr_t)cookie;
    const call *c = tr_web_call_data(wc);
    return tr_shard_port_request(((fs_app *)arg)->orders, port, c->sku, m, timeout_ms, cookie);
}

/* Sends the call's request (c->req, taken) for HTTP request req: to `to`, or when that is
 * TR_PID_NONE to the order actor of c->sku. Failures are answered 503 by the bridge. */
static void start_call(fs_app *a, const tr_http_request *req, call *c, tr_pid to)
{
    tr_msg *m = c->req;
    c->req = NULL;
    tr_web_call *wc = m != NULL ? tr_web_call_new(a->web, req) : NULL;
    if (wc == NULL) {
        tr_msg_free(m);
        if (m == NULL)
            respond_retry(tr_web_http(a->web), req->token, 503, "out of memory");
        return;
    }
    *(call *)tr_web_call_data(wc) = *c;
    if (to != TR_PID_NONE)
        (void)tr_web_call_send(wc, to, m);
    else
        (void)tr_web_call_send_with(wc, m, order_send, a);
}

/* ---- the stats actor: this node's email counters, for the other nodes ----------------------- */

static int stats_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    fs_app *a = *(fs_app **)state;
    if (tr_msg_type(m) == FS_EMAIL_STATS && tr_msg_from(m).pid != TR_PID_NONE) {
        uint64_t v[3];
        email_counts(a, v);
        tr_msg *r = tr_msg_new(FS_EMAIL_STATS, 32);
        for (int i = 0; r != NULL && i < 3; i++)
            tr_msg_put_u64(r, v[i]);
        if (r != NULL)
            (void)tr_reply(ctx, m, r);
    }
    return 0;
}

static int stats_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(fs_app **)state = (fs_app *)arg;
    return 0;
}

static const tr_behaviour stats_b = {.name = "flashsale-stats", .state_size = sizeof(fs_app *),
                                     .init = stats_init, .receive = stats_receive};

/* ---- routes -------------------------------------------------------------------------------- */

static bool path_arg(const char *path, const char *prefix, const char **arg, size_t *len)
{
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0 || path[pl] == '\0' || strchr(path + pl, '/') != NULL)
        return false;
    *arg = path + pl;
    *len = strlen(*arg);
    return true;
}

static void inventory(fs_app *a, tr_http_server *h, const tr_http_request *req, const char *sku,
                      size_t sl)
{
    call c = {.app = a};
    memcpy(c.sku, sku, sl < ORDER_SKU_MAX ? sl : ORDER_SKU_MAX);
    if (req->method == TR_HTTP_PUT) {
        if (!admin_ok(a, req)) {
            respond_err(h, req->token, 401, "WWW-Authenticate: Bearer\r\n",
                        "the admin token is needed (Authorization: Bearer ...)");
            return;
        }
        char why[96];
        cJSON *j = tr_json_parse(req->body, req->body_len, why, sizeof why);
        if (j == NULL) {
            bad_json(h, req->token, why);
            return;
        }
        cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stock");
        bool ok = cJSON_IsNumber(st) && st->valuedouble >= 0 && st->valuedouble <= 1e12 &&
                  st->valuedouble == (double)(uint64_t)st->valuedouble;
        uint64_t stock = ok ? (uint64_t)st->valuedouble : 0;
        cJSON_Delete(j);
        if (!ok) {
            respond_error(h, req->token, 400, "body must be {\"stock\": a whole number >= 0}");
            return;
        }
        c.kind = CALL_SET;
        c.req = tr_msg_new(ORDER_SET_STOCK, 9);
        tr_msg_put_u64(c.req, stock);
    } else if (req->method == TR_HTTP_GET || req->method == TR_HTTP_HEAD) {
        /* started on demand: after a restart the SKU's actor recovers from its journal */
        c.kind = CALL_GET;
        c.req = tr_msg_new(ORDER_GET, 0);
    } else {
        not_allowed(h, req->token, "Allow: GET, HEAD, PUT\r\n");
        return;
    }
    if (!order_sku_valid(sku, sl)) {
        tr_msg_free(c.req);
        respond_error(h, req->token, 404, "no such SKU");
        return;
    }
    start_call(a, req, &c, TR_PID_NONE);
}

static void place_order(fs_app *a, tr_http_server *h, const tr_http_request *req)
{
    if (!admit(a)) {
        respond_retry(h, req->token, 429, "too many requests");
        return;
    }
    char why[96];
    cJSON *j = tr_json_parse(req->body, req->body_len, why, sizeof why);
    if (j == NULL || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        bad_json(h, req->token, j == NULL ? why : "the body must be a JSON object");
        return;
    }
    cJSON *user = cJSON_GetObjectItemCaseSensitive(j, "user");
    cJSON *sku = cJSON_GetObjectItemCaseSensitive(j, "sku");
    cJSON *qty = cJSON_GetObjectItemCaseSensitive(j, "qty");
    const char *bad = !cJSON_IsString(user) || strlen(user->valuestring) == 0 ||
                              strlen(user->valuestring) > ORDER_USER_MAX
                          ? "user must be a non-empty string"
                      : !cJSON_IsString(sku) ||
                              !order_sku_valid(sku->valuestring, strlen(sku->valuestring))
                          ? "sku must be a valid SKU"
                      : qty != NULL && (!cJSON_IsNumber(qty) || qty->valuedouble < 1 ||
                                        qty->valuedouble > ORDER_MAX_QTY ||
                                        qty->valuedouble != (double)(int)qty->valuedouble)
                          ? "qty must be a whole number from 1 to 1000"
                          : NULL;
    if (bad != NULL) {
        cJSON_Delete(j);
        respond_error(h, req->token, 400, bad);
        return;
    }
    call c = {.app = a, .kind = CALL_PLACE};
    snprintf(c.user, sizeof c.user, "%s", user->valuestring);
    snprintf(c.sku, sizeof c.sku, "%s", sku->valuestring);
    c.qty = qty != NULL ? (uint64_t)qty->valuedouble : 1;
    cJSON_Delete(j);
    size_t ul = strlen(c.user);
    c.req = tr_msg_new(ORDER_PLACE, ul + 16);
    msgpack_pack_str(tr_msg_packer(c.req), ul);
    msgpack_pack_str_body(tr_msg_packer(c.req), c.user, ul);
    tr_msg_put_u64(c.req, c.qty);
    start_call(a, req, &c, TR_PID_NONE); /* a SKU never set up: 404, as GET /inventory says */
}

static void get_order(fs_app *a, tr_http_server *h, const tr_http_request *req, const char *id,
                      size_t il)
{
    size_t sl = 0;
    call c = {.app = a, .kind = CALL_LOOKUP};
    if (il >= sizeof c.order_id || !order_id_parse(id, il, &sl)) {
        respond_error(h, req->token, 404, "no such order");
        return;
    }
    memcpy(c.order_id, id, il);
    memcpy(c.sku, id, sl);
    c.req = tr_msg_new(ORDER_LOOKUP, il + 8);
    msgpack_pack_str(tr_msg_packer(c.req), il);
    msgpack_pack_str_body(tr_msg_packer(c.req), id, il);
    start_call(a, req, &c, TR_PID_NONE);
}

static void handler(void *user, tr_http_server *h, const tr_http_request *req)
{
    fs_app *a = user;
    const char *arg;
    size_t len;
    const char *route = strcmp(req->path, "/health") == 0         ? "/health"
                        : strcmp(req->path, "/emails/stats") == 0  ? "/emails/stats"
                        : strcmp(req->path, "/orders") == 0        ? "/orders"
                        : strncmp(req->path, "/orders/", 8) == 0   ? "/orders/{id}"
                        : strncmp(req->path, "/inventory/", 11) == 0 ? "/inventory/{sku}"
                                                                     : NULL;
    tr_http_route(h, req->token, route);
    if ((strcmp(req->path, "/health") == 0 || strcmp(req->path, "/emails/stats") == 0) &&
        !reads(req)) {
        not_allowed(h, req->token, "Allow: GET, HEAD\r\n");
    } else if (strcmp(req->path, "/health") == 0) {
        if (a->node == NULL) {
            respond(h, req->token, 200, "{\"status\":\"ready\"}");
        } else { /* and the cluster as this node sees it */
            tr_peer_info peers[64];
            size_t n = 0, up = 0;
            tr_node_peers(a->node, peers, 64, &n);
            for (size_t i = 0; i < n && i < 64; i++)
                up += peers[i].status == TR_PEER_UP || peers[i].status == TR_PEER_SUSPECT;
            char body[160];
            snprintf(body, sizeof body, "{\"status\":\"ready\",\"node\":\"%s\",\"peers_up\":%zu}",
                     tr_node_name(a->node), up);
            respond(h, req->token, 200, body);
        }
    } else if (path_arg(req->path, "/inventory/", &arg, &len)) {
        inventory(a, h, req, arg, len);
    } else if (strcmp(req->path, "/orders") == 0) {
        if (req->method == TR_HTTP_POST)
            place_order(a, h, req);
        else
            not_allowed(h, req->token, "Allow: POST\r\n");
    } else if (path_arg(req->path, "/orders/", &arg, &len)) {
        if (reads(req))
            get_order(a, h, req, arg, len);
        else
            not_allowed(h, req->token, "Allow: GET, HEAD\r\n");
    } else if (strcmp(req->path, "/emails/stats") == 0) {
        tr_pid other = TR_PID_NONE;
        if (!tr_singleton_here(a->mailer)) { /* the email actor runs on another node */
            call c = {.app = a, .kind = CALL_STATS, .req = tr_msg_new(FS_EMAIL_STATS, 0)};
            if (email_stats_actor(a, &other) != TR_OK) {
                tr_msg_free(c.req);
                respond_retry(h, req->token, 503, "the email node is unavailable");
            } else {
                start_call(a, req, &c, other);
            }
            return;
        }
        uint64_t v[3];
        char body[256];
        email_counts(a, v);
        tr_http_respond(h, req->token, 200, NULL, body, email_stats_body(a, v, body, sizeof body));
    } else if (!tr_dashboard_serve(a->dash, h, req)) { /* it answers /dashboard and below */
        respond_error(h, req->token, 404, "no such route");
    }
}

/* ---- the dashboard ------------------------------------------------------------------------- */

/* The flash sale's figures on the dashboard ("app" of /dashboard/data; on an HTTP loop): this
 * node's email counters (the page asks /emails/stats for the email node's when it is another),
 * the limit they are held to, and the order actors running here. */
static void dashboard_json(void *user, tr_jbuf *b)
{
    fs_app *a = user;
    uint64_t v[3];
    email_counts(a, v);
    tr_jbuf_lit(b, "{\"email\":{\"here\":");
    tr_jbuf_lit(b, tr_singleton_here(a->mailer) ? "true" : "false");
    tr_jbuf_lit(b, ",\"sent\":");
    tr_jbuf_u64(b, v[0]);
    tr_jbuf_lit(b, ",\"pending\":");
    tr_jbuf_u64(b, v[1]);
    tr_jbuf_lit(b, ",\"retrying\":");
    tr_jbuf_u64(b, v[2]);
    tr_jbuf_lit(b, ",\"rate\":");
    tr_jbuf_u64(b, a->email_spawn.mailbox.rate);
    tr_jbuf_lit(b, ",\"burst\":");
    tr_jbuf_u64(b, a->email_spawn.mailbox.burst);
    tr_jbuf_lit(b, "},\"order_actors\":");
    tr_jbuf_u64(b, tr_shard_count(a->orders));
    tr_jbuf_lit(b, ",\"admission_rate\":");
    tr_jbuf_u64(b, a->o.admission_rate);
    tr_jbuf_lit(b, "}");
}

/* ---- start and stop ------------------------------------------------------------------------ */

/* The start argument of sku's order actor (the shard keeps it, and sku, while the actor runs). */
static int order_arg(void *user, const char *sku, void *arg)
{
    fs_app *a = user;
    if (!order_sku_valid(sku, strlen(sku)))
        return TR_EINVAL;
    *(order_args *)arg = (order_args){.store = a->store, .sku = sku, .email_queue = "email"};
    return 0;
}

int fs_start(const fs_opts *o, fs_app **out, char *err, size_t errlen)
{
    if (o->http_threads > PORTS) { /* a port per HTTP thread */
        snprintf(err, errlen, "at most %u HTTP threads", PORTS);
        return TR_EINVAL;
    }
    fs_app *a = calloc(1, sizeof *a);
    if (a == NULL)
        return TR_ENOMEM;
    a->o = *o;
    if (o->admin_token != NULL) {
        a->admin_len = strlen(o->admin_token);
        if (a->admin_len < 16 || a->admin_len >= sizeof a->admin) {
            snprintf(err, errlen, "the admin token must be 16 to 256 bytes");
            free(a);
            return TR_EINVAL;
        }
        memcpy(a->admin, o->admin_token, a->admin_len);
    }
    pthread_mutex_init(&a->lock, NULL);
    tr_limiter_init(&a->admission, TR_LIMIT_TOKEN, o->admission_rate, o->admission_burst,
                    tr_now_ns()); /* a full bucket at start */
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = o->workers;
    so.spin_rounds = 8; /* the HTTP loops and the store's writer need the CPUs idle workers spin on */
    if (o->node != NULL)
        so.node_id = tr_node_random_id(); /* a new incarnation: pids of the last one are stale */
    int rc = tr_system_new(&a->sys, &so);
    if (rc == TR_OK)
        rc = tr_system_start(a->sys);
    if (rc == TR_OK && o->node != NULL) {
        rc = tr_node_start(a->sys, o->node, &a->node);
        if (rc != TR_OK)
            snprintf(err, errlen, "cannot start node %s on %s", o->node->name, o->node->listen);
    }
    if (rc == TR_OK)
        rc = tr_store_open(a->sys, &o->store, &a->store, err, errlen);
    if (rc == TR_OK) { /* the order actors: one per SKU, on the SKU's node */
        tr_shard_opts sh = {.name = "flashsale-order", .behaviour = &order_behaviour,
                            .init_arg = order_arg, .arg_size = sizeof(order_args), .user = a,
                            .node = a->node, .max_keys = MAX_SKUS};
        rc = tr_shard_start(a->sys, &sh, &a->orders);
    }
    if (rc == TR_OK) {
        a->mail = (order_email_opts){.to_domain = o->mail_to_domain};
        a->eargs = (email_args){.store = a->store, .queue = "email",
                                .provider = (email_provider)o->email_provider,
                                .maildir = o->maildir, .smtp_url = o->smtp_url,
                                /* an email file as durable as the order: fsynced only when
                                 * the store is (sync=full) */
                                .no_fsync = o->store.sync == TR_SYNC_NORMAL,
                                .timeout_ms = o->smtp_timeout_ms,
                                .from = o->mail_from ? o->mail_from
                                                     : "Flash Sale <sale@flashsale.troupe>",
                                .format = order_email_format,
                                .format_user = &a->mail,
                                .retry_min_ms = o->email_retry_min_ms,
                                .retry_max_ms = o->email_retry_max_ms, .stats = &a->stats,
                                /* a cluster: one sender at a time, even while the singleton
                                 * runs on two nodes (a move, a partition): the rate holds */
                                .lease = a->node != NULL ? EMAIL_KEY : NULL};
        /* blocking: it writes files or talks SMTP, never on an HTTP loop (run_actors) */
        a->email_spawn = (tr_spawn_opts){.blocking = true,
                                         .mailbox = {.limit = TR_LIMIT_TOKEN,
                                                     .rate = o->email_rate ? o->email_rate : 50,
                                                     .burst = o->email_burst ? o->email_burst : 10}};
        /* a singleton: started here at once (so a bad maildir or URL fails the start), moved to
         * the node that owns EMAIL_KEY at the keeper's next check */
        tr_singleton_opts so1 = {.name = EMAIL_KEY, .behaviour = &email_behaviour,
                                 .arg = &a->eargs, .spawn = a->email_spawn, .node = a->node,
                                 .start_here = true};
        rc = tr_singleton_start(a->sys, &so1, &a->mailer);
        if (rc != TR_OK && err != NULL && errlen > 0 && err[0] == '\0')
            snprintf(err, errlen, "cannot start the email actor (%s %s)",
                     o->email_provider == EMAIL_SMTP ? "smtp" : "maildir",
                     o->email_provider == EMAIL_SMTP ? o->smtp_url : o->maildir);
    }
    if (rc == TR_OK)
        rc = tr_system_spawn(a->sys, &stats_b, a, &a->stats_actor);
    if (rc == TR_OK && a->node != NULL) {
        char reg[64];
        snprintf(reg, sizeof reg, "flashsale/stats/%u", (unsigned)tr_pid_node(a->stats_actor));
        rc = tr_node_register(a->node, reg, a->stats_actor);
        if (rc != TR_OK)
            snprintf(err, errlen, "cannot register %s", reg);
    }
    if (rc == TR_OK) {
        tr_dashboard_opts dopts = {.sys = a->sys, .app = "flashsale",
                                   .node_name = a->node != NULL ? tr_node_name(a->node) : NULL,
                                   .node = a->node, .node_peers = tr_node_peers,
                                   .node_stats = tr_node_stats_get, .store = a->store,
                                   .store_stats = tr_store_stats_get,
                                   .app_json = dashboard_json, .user = a};
        rc = tr_dashboard_new(&dopts, &a->dash);
    }
    if (rc == TR_OK) { /* last: requests come in at once */
        tr_web_opts wo = {
            .http = {.host = o->http_host, .port = o->http_port, .threads = o->http_threads,
                     .max_request = o->http_max_request, .request_ms = o->http_request_ms,
                     .max_connections = o->http_max_connections,
                     .max_per_client = o->http_max_per_client, .handler = handler, .user = a},
            .run_actors = o->run_actors, /* each HTTP loop runs the actors its requests wake */
            .call_size = sizeof(call), .on_reply = on_reply,
            .timeout_ms = o->call_timeout_ms ? o->call_timeout_ms : 5000,
            .metrics_path = "/metrics"};
        rc = tr_web_start(a->sys, &wo, &a->web, err, errlen);
    }
    if (rc != TR_OK) {
        fs_stop(a);
        return rc;
    }
    *out = a;
    return TR_OK;
}

int fs_port(const fs_app *a)
{
    return a != NULL ? tr_http_port(tr_web_http(a->web)) : 0;
}

void fs_stop(fs_app *a)
{
    if (a == NULL)
        return;
    /* no new calls (the HTTP loops answer 503 themselves from now on, and no longer ask the
     * node who owns what); then the actors (order journals flush and close); then the store,
     * whose last commits answer their calls; then the node (remote answers); then the bridge
     * (calls still unanswered get 503, and the loops write what is answered) */
    tr_web_quiesce(a->web);
    if (a->sys != NULL) {
        tr_system_stop(a->sys);
        tr_system_join(a->sys);
    }
    tr_store_close(a->store);
    tr_node_stop(a->node);
    tr_web_stop(a->web);
    tr_dashboard_free(a->dash); /* no handler runs any more */
    tr_shard_free(a->orders); /* its actors ended with the system */
    tr_singleton_free(a->mailer);
    tr_system_free(a->sys);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
