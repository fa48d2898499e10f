/*
 * gateway.c — the flash sale node: HTTP in front, actors behind.
 *
 * The HTTP loops (http.c) never block: a request that needs an order actor spawns a one-shot
 * "call" actor (half a microsecond) that sends the actor a tr_request, turns its reply into JSON
 * and hands it to http_respond, then ends. Order actors are created on first use of a SKU, under
 * a simple_one_for_one supervisor (they recover from their journal when restarted); the SKU ->
 * pid table is the one shared structure, behind a mutex. The email actor consumes the outbox
 * under its mailbox's token bucket.
 *
 *   PUT  /inventory/{sku}  {"stock":N}              -> 200 {"sku","stock","sold","remaining"}
 *   GET  /inventory/{sku}                           -> 200 ... | 404
 *   POST /orders  {"user","sku","qty"}              -> 201 {"order_id","user","sku","qty",
 *                                                      "status":"confirmed"} | 409 sold out |
 *                                                      400 (which field) | 413 | 429 | 503
 *   GET  /orders/{id}                               -> 200 | 404
 *   GET  /emails/stats                              -> {"sent","pending","retrying","rate"}
 *   GET  /health                                    -> 200 when ready
 */
#include "gateway.h"
#include "http.h"

#include "actors/email.h"
#include "actors/order.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SKUS 100000u

typedef struct sku_entry {
    char sku[ORDER_SKU_MAX + 1];
    order_args args;            /* its actor's start argument (points at sku) */
    tr_pid pid;
} sku_entry;

struct fs_app {
    fs_opts o;
    tr_system *sys;
    tr_store *store;
    http_server *http;
    tr_pid orders_sup, email;
    email_stats stats;
    email_args eargs;
    pthread_mutex_t lock;       /* skus and the admission bucket */
    sku_entry **skus;
    size_t nskus, capskus;
    double tokens;
    uint64_t tokens_ns;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void respond(http_server *h, uint64_t token, int status, const char *body)
{
    http_respond(h, token, status, NULL, body, strlen(body));
}

static void respond_error(http_server *h, uint64_t token, int status, const char *msg)
{
    char body[256];
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
    respond(h, token, status, body);
}

/* An error the client should retry after a second (429, 503). */
static void respond_retry(http_server *h, uint64_t token, int status, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
    http_respond(h, token, status, "Retry-After: 1\r\n", body, (size_t)n);
}

/* The admission bucket (rate per second, burst): true when a request may pass. */
static bool admit(fs_app *a)
{
    if (a->o.admission_rate == 0)
        return true;
    pthread_mutex_lock(&a->lock);
    uint64_t now = now_ns();
    a->tokens += (double)(now - a->tokens_ns) * a->o.admission_rate / 1e9;
    double cap = a->o.admission_burst ? a->o.admission_burst : 1;
    if (a->tokens > cap)
        a->tokens = cap;
    a->tokens_ns = now;
    bool ok = a->tokens >= 1.0;
    if (ok)
        a->tokens -= 1.0;
    pthread_mutex_unlock(&a->lock);
    return ok;
}

/* The order actor of sku, started if `create` (TR_ENOPROC if none). */
static int order_of(fs_app *a, const char *sku, size_t len, bool create, tr_pid *out)
{
    if (!order_sku_valid(sku, len))
        return TR_EINVAL;
    pthread_mutex_lock(&a->lock);
    sku_entry *e = NULL;
    for (size_t i = 0; i < a->nskus && e == NULL; i++) /* few SKUs per sale */
        if (strlen(a->skus[i]->sku) == len && memcmp(a->skus[i]->sku, sku, len) == 0)
            e = a->skus[i];
    int rc = TR_OK;
    if (e == NULL && !create) {
        rc = TR_ENOPROC;
    } else if (e == NULL) {
        if (a->nskus == a->capskus) {
            size_t cap = a->capskus ? a->capskus * 2 : 16;
            sku_entry **n = cap <= MAX_SKUS ? realloc(a->skus, cap * sizeof *n) : NULL;
            if (n == NULL)
                rc = TR_ENOMEM;
            else {
                a->skus = n;
                a->capskus = cap;
            }
        }
        if (rc == TR_OK && (e = calloc(1, sizeof *e)) == NULL)
            rc = TR_ENOMEM;
        if (rc == TR_OK) {
            memcpy(e->sku, sku, len);
            e->args = (order_args){.store = a->store, .sku = e->sku, .email_queue = "email"};
            a->skus[a->nskus++] = e;
        }
    }
    if (rc == TR_OK && !tr_system_alive(a->sys, e->pid)) {
        /* first use, or its actor ended (a failed commit, say): start it again, recovering
         * from its journal. Children are temporary: restarts happen here, on demand, so there
         * is never a second actor for one SKU. */
        rc = tr_sup_start_child(a->sys, a->orders_sup, &e->args, sizeof e->args, &e->pid);
    }
    if (rc == TR_OK)
        *out = e->pid;
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* ---- the call actor ------------------------------------------------------------------------ */

enum { CALL_SET, CALL_GET, CALL_PLACE, CALL_LOOKUP };

typedef struct call {
    fs_app *app;
    uint64_t token;
    int kind;
    tr_pid order;
    tr_msg *req;                /* the request to send (owned until sent) */
    char sku[ORDER_SKU_MAX + 1];
    char user[ORDER_USER_MAX + 1];
    char order_id[ORDER_SKU_MAX + 24];
    uint64_t qty;
} call;

static int call_init(tr_ctx *ctx, void *state, const void *arg)
{
    call *c = state;
    *c = *(const call *)arg;
    ((call *)arg)->req = NULL; /* taken (the arg is start_call's own copy) */
    uint64_t corr;
    tr_msg *m = c->req;
    c->req = NULL;
    unsigned timeout = c->app->o.call_timeout_ms ? c->app->o.call_timeout_ms : 5000;
    return tr_request(ctx, c->order, m, timeout, &corr); /* failing: start_call answers 503 */
}

static void answer(call *c, const tr_msg *m)
{
    http_server *h = c->app->http;
    tr_reader r;
    tr_reader_init(&r, m);
    char body[512];
    uint64_t v[3];
    switch (c->kind) {
    case CALL_SET:
    case CALL_GET: {
        bool got = tr_read_u64(&r, &v[0]) == TR_OK && tr_read_u64(&r, &v[1]) == TR_OK;
        if (got && c->kind == CALL_GET && v[0] == 0 && v[1] == 0) {
            respond_error(h, c->token, 404, "no such SKU"); /* never set up */
        } else if (got) {
            uint64_t rem = v[0] > v[1] ? v[0] - v[1] : 0;
            snprintf(body, sizeof body,
                     "{\"sku\":\"%s\",\"stock\":%llu,\"sold\":%llu,\"remaining\":%llu}", c->sku,
                     (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)rem);
            respond(h, c->token, 200, body);
        } else {
            respond_error(h, c->token, 500, "bad answer from the order actor");
        }
        break;
    }
    case CALL_PLACE: {
        int64_t status;
        const char *id;
        size_t il;
        if (tr_read_i64(&r, &status) != TR_OK || tr_read_str(&r, &id, &il) != TR_OK) {
            respond_error(h, c->token, 500, "bad answer from the order actor");
        } else if (status == ORDER_CONFIRMED) {
            snprintf(body, sizeof body,
                     "{\"order_id\":\"%.*s\",\"user\":\"%s\",\"sku\":\"%s\",\"qty\":%llu,"
                     "\"status\":\"confirmed\"}",
                     (int)il, id, c->user, c->sku, (unsigned long long)c->qty);
            respond(h, c->token, 201, body);
        } else if (status == ORDER_SOLD_OUT) {
            respond_error(h, c->token, 409, "sold out");
        } else {
            respond_error(h, c->token, 400, "invalid user or qty");
        }
        break;
    }
    case CALL_LOOKUP: {
        uint64_t found = 0, qty = 0;
        const char *user = "";
        size_t ul = 0;
        if (tr_read_u64(&r, &found) == TR_OK && found && tr_read_str(&r, &user, &ul) == TR_OK &&
            tr_read_u64(&r, &qty) == TR_OK) {
            snprintf(body, sizeof body,
                     "{\"order_id\":\"%s\",\"user\":\"%.*s\",\"sku\":\"%s\",\"qty\":%llu,"
                     "\"status\":\"confirmed\"}",
                     c->order_id, (int)ul, user, c->sku, (unsigned long long)qty);
            respond(h, c->token, 200, body);
        } else {
            respond_error(h, c->token, 404, "no such order");
        }
        break;
    }
    default:
        break;
    }
    tr_reader_done(&r);
}

static int call_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    call *c = state;
    if (tr_msg_type(m) == TR_MSG_TIMEOUT || tr_msg_type(m) == TR_MSG_NOPROC ||
        tr_msg_type(m) == TR_MSG_REJECTED)
        respond_error(c->app->http, c->token, 503, "the SKU's owner is unavailable");
    else if (tr_msg_is_reply(m))
        answer(c, m);
    else
        return 0;
    tr_stop(ctx);
    return 0;
}

static void call_terminate(tr_ctx *ctx, void *state, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    tr_msg_free(((call *)state)->req);
}

static const tr_behaviour call_b = {.name = "http-call", .state_size = sizeof(call),
                                    .init = call_init, .receive = call_receive,
                                    .terminate = call_terminate};

static void start_call(fs_app *a, call *c)
{
    tr_pid p;
    if (tr_system_spawn(a->sys, &call_b, c, &p) != TR_OK) {
        tr_msg_free(c->req); /* NULL if init took it (a failed tr_request consumed it) */
        respond_retry(a->http, c->token, 503, "the SKU's owner is unavailable");
    }
}

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

static void inventory(fs_app *a, const http_request *req, const char *sku, size_t sl)
{
    call c = {.app = a, .token = req->token};
    memcpy(c.sku, sku, sl < ORDER_SKU_MAX ? sl : ORDER_SKU_MAX);
    if (req->method == HTTP_M_PUT) {
        cJSON *j = cJSON_ParseWithLength(req->body, req->body_len);
        cJSON *st = j != NULL ? cJSON_GetObjectItemCaseSensitive(j, "stock") : NULL;
        bool ok = cJSON_IsNumber(st) && st->valuedouble >= 0 && st->valuedouble <= 1e12 &&
                  st->valuedouble == (double)(uint64_t)st->valuedouble;
        uint64_t stock = ok ? (uint64_t)st->valuedouble : 0;
        cJSON_Delete(j);
        if (!ok) {
            respond_error(a->http, req->token, 400, "body must be {\\\"stock\\\": a whole number >= 0}");
            return;
        }
        if (order_of(a, sku, sl, true, &c.order) != TR_OK) {
            respond_error(a->http, req->token, 503, "the SKU's owner is unavailable");
            return;
        }
        c.kind = CALL_SET;
        c.req = tr_msg_new(ORDER_SET_STOCK, 9);
        msgpack_pack_uint64(tr_msg_packer(c.req), stock);
    } else if (req->method == HTTP_M_GET) {
        /* started on demand: after a restart the SKU's actor recovers from its journal */
        int rc = order_of(a, sku, sl, true, &c.order);
        if (rc == TR_ENOPROC) {
            respond_error(a->http, req->token, 404, "no such SKU");
            return;
        }
        if (rc != TR_OK) {
            respond_error(a->http, req->token, 503, "the SKU's owner is unavailable");
            return;
        }
        c.kind = CALL_GET;
        c.req = tr_msg_new(ORDER_GET, 0);
    } else {
        respond_error(a->http, req->token, 405, "PUT or GET");
        return;
    }
    start_call(a, &c);
}

static void place_order(fs_app *a, const http_request *req)
{
    if (!admit(a)) {
        respond_retry(a->http, req->token, 429, "too many requests");
        return;
    }
    cJSON *j = cJSON_ParseWithLength(req->body, req->body_len);
    if (j == NULL || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        respond_error(a->http, req->token, 400, "malformed JSON");
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
        respond_error(a->http, req->token, 400, bad);
        return;
    }
    call c = {.app = a, .token = req->token, .kind = CALL_PLACE};
    snprintf(c.user, sizeof c.user, "%s", user->valuestring);
    snprintf(c.sku, sizeof c.sku, "%s", sku->valuestring);
    c.qty = qty != NULL ? (uint64_t)qty->valuedouble : 1;
    cJSON_Delete(j);
    int rc = order_of(a, c.sku, strlen(c.sku), true, &c.order); /* no sale: stock 0, 409 */
    if (rc != TR_OK) {
        respond_retry(a->http, req->token, 503, "the SKU's owner is unavailable");
        return;
    }
    size_t ul = strlen(c.user);
    c.req = tr_msg_new(ORDER_PLACE, ul + 16);
    msgpack_pack_str(tr_msg_packer(c.req), ul);
    msgpack_pack_str_body(tr_msg_packer(c.req), c.user, ul);
    msgpack_pack_uint64(tr_msg_packer(c.req), c.qty);
    start_call(a, &c);
}

static void get_order(fs_app *a, const http_request *req, const char *id, size_t il)
{
    const char *dash = NULL;
    for (size_t i = 0; i < il; i++)
        if (id[i] == '-')
            dash = id + i;
    call c = {.app = a, .token = req->token, .kind = CALL_LOOKUP};
    if (dash == NULL || il >= sizeof c.order_id ||
        order_of(a, id, (size_t)(dash - id), true, &c.order) != TR_OK) {
        respond_error(a->http, req->token, 404, "no such order");
        return;
    }
    memcpy(c.order_id, id, il);
    memcpy(c.sku, id, (size_t)(dash - id));
    c.req = tr_msg_new(ORDER_LOOKUP, il + 8);
    msgpack_pack_str(tr_msg_packer(c.req), il);
    msgpack_pack_str_body(tr_msg_packer(c.req), id, il);
    start_call(a, &c);
}

static void handler(void *user, http_server *h, const http_request *req)
{
    fs_app *a = user;
    const char *arg;
    size_t len;
    if (strcmp(req->path, "/health") == 0) {
        respond(h, req->token, 200, "{\"status\":\"ready\"}");
    } else if (path_arg(req->path, "/inventory/", &arg, &len)) {
        inventory(a, req, arg, len);
    } else if (strcmp(req->path, "/orders") == 0) {
        if (req->method == HTTP_M_POST)
            place_order(a, req);
        else
            respond_error(h, req->token, 405, "POST");
    } else if (path_arg(req->path, "/orders/", &arg, &len) && req->method == HTTP_M_GET) {
        get_order(a, req, arg, len);
    } else if (strcmp(req->path, "/emails/stats") == 0) {
        tr_store_stats st;
        tr_store_stats_get(a->store, &st);
        uint64_t sent = atomic_load(&a->stats.sent);
        uint64_t pending = st.outbox_put > st.outbox_acked ? st.outbox_put - st.outbox_acked : 0;
        char body[256];
        snprintf(body, sizeof body,
                 "{\"sent\":%llu,\"pending\":%llu,\"retrying\":%llu,\"rate\":%u}",
                 (unsigned long long)sent, (unsigned long long)pending,
                 (unsigned long long)atomic_load(&a->stats.retrying),
                 a->o.email_rate ? a->o.email_rate : 50);
        respond(h, req->token, 200, body);
    } else {
        respond_error(h, req->token, 404, "no such route");
    }
}

/* ---- start and stop ------------------------------------------------------------------------ */

int fs_start(const fs_opts *o, fs_app **out, char *err, size_t errlen)
{
    fs_app *a = calloc(1, sizeof *a);
    if (a == NULL)
        return TR_ENOMEM;
    a->o = *o;
    pthread_mutex_init(&a->lock, NULL);
    a->tokens = o->admission_burst ? o->admission_burst : 1; /* a full bucket at start */
    a->tokens_ns = now_ns();
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = o->workers;
    so.spin_rounds = 8; /* the HTTP loops and the store's writer need the CPUs idle workers spin on */
    int rc = tr_system_new(&a->sys, &so);
    if (rc == TR_OK)
        rc = tr_system_start(a->sys);
    if (rc == TR_OK)
        rc = tr_store_open(a->sys, &o->store, &a->store, err, errlen);
    static const tr_child_spec order_child = {
        .id = "order", .behaviour = &order_behaviour, .restart = TR_TEMPORARY,
        .shutdown_ms = 5000};
    static const tr_sup_spec orders = {.strategy = TR_SIMPLE_ONE_FOR_ONE, .intensity = 10,
                                       .period_ms = 1000, .backoff_min_ms = 10,
                                       .backoff_max_ms = 1000, .children = &order_child,
                                       .nchildren = 1};
    if (rc == TR_OK)
        rc = tr_sup_start(a->sys, &orders, &a->orders_sup);
    if (rc == TR_OK) {
        a->eargs = (email_args){.store = a->store, .queue = "email",
                                .provider = (email_provider)o->email_provider,
                                .maildir = o->maildir, .smtp_url = o->smtp_url,
                                .timeout_ms = o->smtp_timeout_ms,
                                .from = o->mail_from ? o->mail_from
                                                     : "Flash Sale <sale@flashsale.troupe>",
                                .to_domain = o->mail_to_domain,
                                .retry_min_ms = o->email_retry_min_ms,
                                .retry_max_ms = o->email_retry_max_ms, .stats = &a->stats};
        tr_spawn_opts sp = {.mailbox = {.limit = TR_LIMIT_TOKEN,
                                        .rate = o->email_rate ? o->email_rate : 50,
                                        .burst = o->email_burst ? o->email_burst : 10}};
        rc = tr_system_spawn_ex(a->sys, &email_behaviour, &a->eargs, &sp, &a->email);
        if (rc != TR_OK && err != NULL && errlen > 0 && err[0] == '\0')
            snprintf(err, errlen, "cannot start the email actor (%s %s)",
                     o->email_provider == EMAIL_SMTP ? "smtp" : "maildir",
                     o->email_provider == EMAIL_SMTP ? o->smtp_url : o->maildir);
    }
    if (rc == TR_OK) {
        http_opts ho = {.host = o->http_host, .port = o->http_port, .threads = o->http_threads,
                        .max_request = o->http_max_request, .request_ms = o->http_request_ms,
                        .max_connections = o->http_max_connections, .handler = handler,
                        .user = a};
        int hr = http_start(&ho, &a->http);
        if (hr != 0) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "cannot listen on %s:%d: %s",
                         o->http_host ? o->http_host : "127.0.0.1", o->http_port, strerror(-hr));
            rc = TR_EINVAL;
        }
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
    return a != NULL ? http_port(a->http) : 0;
}

void fs_stop(fs_app *a)
{
    if (a == NULL)
        return;
    if (a->sys != NULL) {
        /* the actors first (calls in flight answer or end; requests arriving meanwhile get
         * 503; order journals flush and close), then the HTTP loops, then the store */
        tr_system_stop(a->sys);
        tr_system_join(a->sys);
    }
    http_stop(a->http);
    tr_store_close(a->store);
    tr_system_free(a->sys);
    for (size_t i = 0; i < a->nskus; i++)
        free(a->skus[i]);
    free(a->skus);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
