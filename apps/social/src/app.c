/*
 * app.c — the social network's node: routes and wiring. The actors are actors/social.h's; the
 * HTTP server and its bridge to actors are the runtime's web unit (troupe/web.h), the keyed actors
 * the runtime's shards, the events the store's bus (troupe/bus.h).
 *
 *   POST   /users                         {"username","name"} -> 201 {"id","username","name"} |
 *                                         409 taken | 400
 *   GET    /users/{id}                    -> 200 {"id","username","name","followers","following",
 *                                         "posts"} | 404
 *   PATCH  /users/{id}                    {"name"} -> 200 the user | 404 | 400
 *   PUT    /users/{id}/following/{other}  -> 204 | 404 | 400 (self) | 409 (following too many)
 *   DELETE /users/{id}/following/{other}  -> 204 | 404 | 400
 *   POST   /posts                         {"user","image_url"} -> 201 {"id","user","image_url","ts"}
 *                                         | 404 | 400
 *   GET    /users/{id}/posts?limit=&before=   -> 200 {"posts":[...],"next":CURSOR|null} | 404
 *   GET    /timeline/{id}?limit=&before=      -> the same, the posts of whom {id} follows
 *   GET    /search?q=&limit=&images=          -> 200 {"results":[{"user":{...},"images":[...]}]}
 *   GET    /dashboard, /dashboard/data        -> the live dashboard (troupe/dashboard.h): its page,
 *                                             and the figures it polls ("app": /health's)
 *   GET    /health                            -> 200 {"status":"ready", lag, counters}
 *   GET    /metrics                           -> the node's metrics, Prometheus text format
 *                                             (the bridge answers it: troupe/web.h)
 * Each route is named to the server (tr_http_route) by its pattern, the label of its metrics.
 * Every error has a JSON body {"error": "..."}; an unknown route 404, a known one with another
 * method 405 with Allow. A cursor is "TS_ID" of the last post of the page.
 */
#include "app.h"

#include "actors/social.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <troupe/bus.h>
#include <troupe/dashboard.h>
#include <troupe/json.h>
#include <troupe/shard.h>
#include <troupe/web.h>

struct soc_app {
    soc_opts o;
    tr_system *sys;
    tr_node *node;              /* cluster mode; NULL: one node */
    tr_store *store;
    tr_web *web;
    tr_dashboard *dash;         /* GET /dashboard */
    social_ctx ctx;
    tr_pid fanout, search;
    char search_sub[96], fanout_sub[96];
};

/* ---- answers that need no actor ------------------------------------------------------------ */

static void respond_error(tr_http_server *h, uint64_t token, int status, const char *headers,
                          const char *msg)
{
    char body[256];
    tr_http_respond(h, token, status, headers, body, tr_json_error(body, sizeof body, msg));
}

static void bad_request(tr_http_server *h, uint64_t token, const char *msg)
{
    respond_error(h, token, 400, NULL, msg);
}

static void not_found(tr_http_server *h, uint64_t token, const char *msg)
{
    respond_error(h, token, 404, NULL, msg);
}

/* ---- calls --------------------------------------------------------------------------------- */

enum { C_CREATE, C_GET, C_RENAME, C_FOLLOW, C_UNFOLLOW, C_POST, C_POSTS, C_TIMELINE, C_SEARCH };

typedef struct call {
    soc_app *app;
    int kind;
    tr_shard *shard;
    char key[SOCIAL_ID_MAX + 1];
    char user[SOCIAL_ID_MAX + 1];   /* C_POSTS: the author (posts carry no user) */
} call;

static void set_error(tr_web_call *wc, int status, const char *msg)
{
    tr_web_answer_len(wc, status, status == 503 || status == 429 ? "Retry-After: 1\r\n" : NULL,
                      tr_json_error(tr_web_answer_buf(wc), TR_WEB_BODY_MAX, msg));
}

/* A status other than SOC_OK, as HTTP. */
static void set_status_error(tr_web_call *wc, uint64_t st)
{
    switch (st) {
    case SOC_NOUSER:
        set_error(wc, 404, "no such user");
        break;
    case SOC_TAKEN:
        set_error(wc, 409, "username taken");
        break;
    case SOC_INVALID:
        set_error(wc, 400, "invalid request");
        break;
    case SOC_LIMIT:
        set_error(wc, 409, "following too many users");
        break;
    default:
        set_error(wc, 503, "unavailable, try again");
        break;
    }
}

static void take_answer(tr_web_call *wc, int status, tr_jbuf *b)
{
    size_t len;
    char *body = tr_jbuf_take(b, &len);
    if (body == NULL)
        set_error(wc, 503, "out of memory");
    else
        tr_web_answer_take(wc, status, NULL, body, len);
}

/* Reads a string of r and writes it to b as a JSON string. */
static int copy_str(tr_reader *r, tr_jbuf *b)
{
    const char *s;
    size_t n;
    int rc = tr_read_str(r, &s, &n);
    if (rc == TR_OK)
        tr_jbuf_str(b, s, n);
    return rc;
}

static int copy_u64(tr_reader *r, tr_jbuf *b)
{
    uint64_t v;
    int rc = tr_read_u64(r, &v);
    if (rc == TR_OK)
        tr_jbuf_u64(b, v);
    return rc;
}

/* [id, username, name, followers, following, posts] as the user object. */
static int user_json(tr_reader *r, tr_jbuf *b, bool counts)
{
    int rc;
    tr_jbuf_lit(b, "{\"id\":");
    rc = copy_str(r, b);
    tr_jbuf_lit(b, ",\"username\":");
    if (rc == TR_OK)
        rc = copy_str(r, b);
    tr_jbuf_lit(b, ",\"name\":");
    if (rc == TR_OK)
        rc = copy_str(r, b);
    if (counts) {
        tr_jbuf_lit(b, ",\"followers\":");
        if (rc == TR_OK)
            rc = copy_u64(r, b);
        tr_jbuf_lit(b, ",\"following\":");
        if (rc == TR_OK)
            rc = copy_u64(r, b);
        tr_jbuf_lit(b, ",\"posts\":");
        if (rc == TR_OK)
            rc = copy_u64(r, b);
    }
    tr_jbuf_lit(b, "}");
    return rc;
}

/* One post {"id","user","image_url","ts"} from [id, (user,) url, ts]; its ts and id for the
 * cursor. */
static int post_json(tr_reader *r, tr_jbuf *b, const char *user, uint64_t *ts, const char **id,
                     size_t *il)
{
    const char *u = user, *url;
    size_t ul = user != NULL ? strlen(user) : 0, rl;
    int rc = tr_read_str(r, id, il);
    if (rc == TR_OK && user == NULL)
        rc = tr_read_str(r, &u, &ul);
    if (rc == TR_OK)
        rc = tr_read_str(r, &url, &rl);
    if (rc == TR_OK)
        rc = tr_read_u64(r, ts);
    if (rc != TR_OK)
        return rc;
    tr_jbuf_lit(b, "{\"id\":");
    tr_jbuf_str(b, *id, *il);
    tr_jbuf_lit(b, ",\"user\":");
    tr_jbuf_str(b, u, ul);
    tr_jbuf_lit(b, ",\"image_url\":");
    tr_jbuf_str(b, url, rl);
    tr_jbuf_lit(b, ",\"ts\":");
    tr_jbuf_u64(b, *ts);
    tr_jbuf_lit(b, "}");
    return TR_OK;
}

/* The end of a page: "],\"next\":" the cursor after its last post (ts, id[0..il)) or null. */
static void page_end(tr_jbuf *b, bool more, uint64_t ts, const char *id, size_t il)
{
    tr_jbuf_lit(b, "],\"next\":");
    if (more) {
        char cur[SOCIAL_POST_ID_MAX + 32];
        int cl = snprintf(cur, sizeof cur, "%llu_%.*s", (unsigned long long)ts, (int)il, id);
        tr_jbuf_str(b, cur, (size_t)cl);
    } else {
        tr_jbuf_lit(b, "null");
    }
    tr_jbuf_lit(b, "}");
}

/* A timeline page read from the node's timeline table (social_timeline_read's callback: under
 * its lock, so it only writes JSON). */
static void page_from_table(void *arg, const social_post_view *v, size_t n, bool more)
{
    tr_jbuf *b = arg;
    tr_jbuf_raw(b, "{\"posts\":[", 10);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            tr_jbuf_raw(b, ",", 1);
        tr_jbuf_raw(b, v[i].json, v[i].json_len); /* written once per post (its record) */
    }
    page_end(b, more && n > 0, n > 0 ? v[n - 1].ts : 0, n > 0 ? v[n - 1].id : "",
             n > 0 ? strlen(v[n - 1].id) : 0);
}

/* A page [n, posts..., more] as {"posts":[...],"next":...}. */
static int page_json(tr_reader *r, tr_jbuf *b, const char *user)
{
    uint64_t n, more = 0, ts = 0;
    const char *id = NULL;
    size_t il = 0;
    int rc = tr_read_u64(r, &n);
    tr_jbuf_lit(b, "{\"posts\":[");
    for (uint64_t i = 0; rc == TR_OK && i < n; i++) {
        if (i > 0)
            tr_jbuf_lit(b, ",");
        rc = post_json(r, b, user, &ts, &id, &il);
    }
    if (rc == TR_OK)
        rc = tr_read_u64(r, &more);
    page_end(b, more && n > 0, ts, id, il);
    return rc;
}

static int search_json(tr_reader *r, tr_jbuf *b)
{
    uint64_t n;
    int rc = tr_read_u64(r, &n);
    tr_jbuf_lit(b, "{\"results\":[");
    for (uint64_t i = 0; rc == TR_OK && i < n; i++) {
        tr_jbuf_lit(b, i > 0 ? ",{\"user\":" : "{\"user\":");
        rc = user_json(r, b, false);
        uint64_t k = 0;
        if (rc == TR_OK)
            rc = tr_read_u64(r, &k);
        tr_jbuf_lit(b, ",\"images\":[");
        for (uint64_t j = 0; rc == TR_OK && j < k; j++) {
            const char *id, *url;
            size_t il, ul;
            uint64_t ts;
            rc = tr_read_str(r, &id, &il);
            if (rc == TR_OK)
                rc = tr_read_str(r, &url, &ul);
            if (rc == TR_OK)
                rc = tr_read_u64(r, &ts);
            if (rc != TR_OK)
                break;
            /* the author is the part of the post id before its '.' */
            const char *dot = memchr(id, '.', il);
            tr_jbuf_lit(b, j > 0 ? ",{\"id\":" : "{\"id\":");
            tr_jbuf_str(b, id, il);
            tr_jbuf_lit(b, ",\"user\":");
            tr_jbuf_str(b, id, dot != NULL ? (size_t)(dot - id) : il);
            tr_jbuf_lit(b, ",\"image_url\":");
            tr_jbuf_str(b, url, ul);
            tr_jbuf_lit(b, ",\"ts\":");
            tr_jbuf_u64(b, ts);
            tr_jbuf_lit(b, "}");
        }
        tr_jbuf_lit(b, "]}");
    }
    tr_jbuf_lit(b, "]}");
    return rc;
}

static void answer(tr_web_call *wc, const call *c, const tr_msg *m)
{
    tr_reader r;
    uint64_t st;
    tr_reader_init(&r, m);
    if (tr_read_u64(&r, &st) != TR_OK) {
        tr_reader_done(&r);
        set_error(wc, 500, "bad answer from an actor");
        return;
    }
    if (st != SOC_OK) {
        tr_reader_done(&r);
        set_status_error(wc, st);
        return;
    }
    tr_jbuf b = {0};
    int rc = TR_OK, status = 200;
    switch (c->kind) {
    case C_CREATE:
        status = 201;
        rc = user_json(&r, &b, false);
        break;
    case C_GET:
    case C_RENAME:
        rc = user_json(&r, &b, true);
        break;
    case C_FOLLOW:
    case C_UNFOLLOW:
        tr_reader_done(&r);
        tr_web_answer_len(wc, 204, NULL, 0);
        return;
    case C_POST: {
        const char *id;
        size_t il;
        uint64_t ts;
        status = 201;
        rc = tr_read_str(&r, &id, &il);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &ts);
        if (rc == TR_OK) {
            /* the URL is the request's: the actor's answer holds id and ts */
            const char *url = (const char *)(c + 1);
            tr_jbuf_lit(&b, "{\"id\":");
            tr_jbuf_str(&b, id, il);
            tr_jbuf_lit(&b, ",\"user\":");
            tr_jbuf_str(&b, c->key, strlen(c->key));
            tr_jbuf_lit(&b, ",\"image_url\":");
            tr_jbuf_str(&b, url, strlen(url));
            tr_jbuf_lit(&b, ",\"ts\":");
            tr_jbuf_u64(&b, ts);
            tr_jbuf_lit(&b, "}");
        }
        break;
    }
    case C_POSTS:
        rc = page_json(&r, &b, c->key);
        break;
    case C_TIMELINE:
        rc = page_json(&r, &b, NULL);
        break;
    case C_SEARCH:
        rc = search_json(&r, &b);
        break;
    default:
        rc = TR_EINVAL;
        break;
    }
    tr_reader_done(&r);
    if (rc != TR_OK) {
        tr_jbuf_free(&b);
        set_error(wc, 500, "bad answer from an actor");
        return;
    }
    take_answer(wc, status, &b);
}

static void on_reply(void *user, tr_web_call *wc, int rc, const tr_msg *reply)
{
    (void)user;
    const call *c = tr_web_call_data(wc);
    if (rc != TR_OK || reply == NULL || tr_msg_type(reply) == TR_MSG_SHARD_UNAVAILABLE)
        set_error(wc, 503, rc == TR_ESTOPPED ? "stopping" : "unavailable, try again");
    else
        answer(wc, c, reply);
}

static int shard_send(void *arg, tr_port *port, tr_msg *m, unsigned timeout_ms, uint64_t cookie)
{
    (void)arg;
    tr_web_call *wc = (tr_web_call *)(uintptr_t)cookie;
    const call *c = tr_web_call_data(wc);
    return tr_shard_port_request(c->shard, port, c->key, m, timeout_ms, cookie);
}

/* Sends m (taken) for request req to key's actor of shard (or, shard NULL, to the search
 * actor); extra (n bytes) is kept after the call record (C_POST: the URL). */
static void start_call(soc_app *a, const tr_http_request *req, int kind, tr_shard *shard,
                       const char *key, tr_msg *m, const char *extra)
{
    tr_web_call *wc = m != NULL ? tr_web_call_new(a->web, req) : NULL;
    if (wc == NULL) {
        if (m == NULL)
            respond_error(tr_web_http(a->web), req->token, 503, "Retry-After: 1\r\n",
                          "out of memory");
        tr_msg_free(m);
        return;
    }
    call *c = tr_web_call_data(wc);
    c->app = a;
    c->kind = kind;
    c->shard = shard;
    snprintf(c->key, sizeof c->key, "%s", key != NULL ? key : "");
    if (extra != NULL)
        snprintf((char *)(c + 1), SOCIAL_URL_MAX + 1, "%s", extra);
    if (shard == NULL)
        (void)tr_web_call_send(wc, a->search, m);
    else
        (void)tr_web_call_send_with(wc, m, shard_send, a);
}

/* ---- request parsing ----------------------------------------------------------------------- */

/* The body as a JSON object, or NULL (answered 400). */
static cJSON *body_object(tr_http_server *h, const tr_http_request *req)
{
    char why[128], msg[160];
    cJSON *j = tr_json_parse(req->body, req->body_len, why, sizeof why);
    if (j == NULL) {
        snprintf(msg, sizeof msg, "malformed JSON: %s", why);
        bad_request(h, req->token, msg);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        bad_request(h, req->token, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Member `name` of j as a string, or NULL. */
static const char *str_member(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Query parameter `key` as a number within [1, max] (clamped to max), or def when absent;
 * false (answered 400) when not a number. */
static bool query_num(tr_http_server *h, const tr_http_request *req, const char *key,
                      uint64_t def, uint64_t min, uint64_t max, uint64_t *out)
{
    char v[32];
    int n = tr_http_query_get(req, key, v, sizeof v);
    *out = def;
    if (n == -1 || (n == 0 && def != 0))
        return true;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (n <= 0 || *end != '\0' || v[0] == '-' || v[0] == '+' || x < min) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s must be a whole number from %llu to %llu", key,
                 (unsigned long long)min, (unsigned long long)max);
        bad_request(h, req->token, msg);
        return false;
    }
    *out = x > max ? max : x;
    return true;
}

/* ?limit=&before= of a page: false when answered 400. */
static bool page_args(tr_http_server *h, const tr_http_request *req, uint64_t *limit,
                      uint64_t *before_ts, char before_id[SOCIAL_POST_ID_MAX + 1])
{
    if (!query_num(h, req, "limit", 20, 1, SOCIAL_PAGE_MAX, limit))
        return false;
    char cur[SOCIAL_POST_ID_MAX + 32];
    int n = tr_http_query_get(req, "before", cur, sizeof cur);
    *before_ts = 0;
    before_id[0] = '\0';
    if (n == -1 || n == 0)
        return true;
    char *us = n > 0 ? strchr(cur, '_') : NULL, *end = NULL;
    unsigned long long ts = us != NULL ? strtoull(cur, &end, 10) : 0;
    if (us == NULL || end != us || ts == 0 || strlen(us + 1) == 0 ||
        strlen(us + 1) > SOCIAL_POST_ID_MAX) {
        bad_request(h, req->token, "before must be the next of a previous page");
        return false;
    }
    *before_ts = ts;
    snprintf(before_id, SOCIAL_POST_ID_MAX + 1, "%s", us + 1);
    return true;
}

static tr_msg *page_msg(uint32_t type, uint64_t before_ts, const char *before_id, uint64_t limit)
{
    tr_msg *m = tr_msg_new(type, 96);
    if (m != NULL) {
        tr_msg_put_u64(m, before_ts);
        tr_msg_put_str(m, before_id, strlen(before_id));
        tr_msg_put_u64(m, limit);
    }
    return m;
}

/* ---- routes -------------------------------------------------------------------------------- */

/* A timeline page answered from the node's timeline table on this thread, when the table alone
 * has it (social_timeline_read): no message, no actor turn. False: ask the actor. */
static bool timeline_here(soc_app *a, tr_http_server *h, const tr_http_request *req,
                          const char *reader, uint64_t bts, const char *bid, uint64_t limit)
{
    tr_jbuf b = {0};
    if (!social_timeline_read(&a->ctx, reader, bts, bid, (size_t)limit, page_from_table, &b)) {
        tr_jbuf_free(&b);
        return false;
    }
    size_t len;
    char *body = tr_jbuf_take(&b, &len);
    if (body == NULL)
        return false; /* out of memory: the actor may do better */
    tr_http_respond(h, req->token, 200, NULL, body, len);
    free(body);
    return true;
}

static void create_user(soc_app *a, tr_http_server *h, const tr_http_request *req)
{
    cJSON *j = body_object(h, req);
    if (j == NULL)
        return;
    const char *username = str_member(j, "username"), *name = str_member(j, "name");
    if (username == NULL || !social_username_valid(username, strlen(username))) {
        bad_request(h, req->token, "username must be 1 to 32 of A-Z a-z 0-9 _");
    } else if (name == NULL || !social_name_valid(name, strlen(name))) {
        bad_request(h, req->token,
                    "name must be 1 to 100 characters of UTF-8, without control characters");
    } else {
        char id[SOCIAL_ID_MAX + 1];
        social_user_id(username, strlen(username), id);
        tr_msg *m = tr_msg_new(SOC_U_CREATE, 64 + strlen(name));
        if (m != NULL) {
            tr_msg_put_str(m, username, strlen(username));
            tr_msg_put_str(m, name, strlen(name));
        }
        start_call(a, req, C_CREATE, a->ctx.users, id, m, NULL);
    }
    cJSON_Delete(j);
}

static void rename_user(soc_app *a, tr_http_server *h, const tr_http_request *req,
                        const char *id)
{
    cJSON *j = body_object(h, req);
    if (j == NULL)
        return;
    const char *name = str_member(j, "name");
    if (name == NULL || !social_name_valid(name, strlen(name))) {
        bad_request(h, req->token,
                    "name must be 1 to 100 characters of UTF-8, without control characters");
    } else {
        tr_msg *m = tr_msg_new(SOC_U_RENAME, 16 + strlen(name));
        if (m != NULL)
            tr_msg_put_str(m, name, strlen(name));
        start_call(a, req, C_RENAME, a->ctx.users, id, m, NULL);
    }
    cJSON_Delete(j);
}

static void create_post(soc_app *a, tr_http_server *h, const tr_http_request *req)
{
    cJSON *j = body_object(h, req);
    if (j == NULL)
        return;
    const char *user = str_member(j, "user"), *url = str_member(j, "image_url");
    if (user == NULL) {
        bad_request(h, req->token, "user must be a user id");
    } else if (url == NULL || !social_url_valid(url, strlen(url))) {
        bad_request(h, req->token,
                    "image_url must be an http:// or https:// URL of at most 2048 bytes");
    } else if (!social_id_valid(user, strlen(user))) {
        not_found(h, req->token, "no such user");
    } else {
        tr_msg *m = tr_msg_new(SOC_P_CREATE, 16 + strlen(url));
        if (m != NULL)
            tr_msg_put_str(m, url, strlen(url));
        start_call(a, req, C_POST, a->ctx.posts, user, m, url);
    }
    cJSON_Delete(j);
}

static void search(soc_app *a, tr_http_server *h, const tr_http_request *req)
{
    char q[256];
    int n = tr_http_query_get(req, "q", q, sizeof q);
    uint64_t limit, images;
    if (n == -2 || n > 100) {
        bad_request(h, req->token, "q must be at most 100 bytes");
        return;
    }
    if (n <= 0) {
        bad_request(h, req->token, "q is needed");
        return;
    }
    if (!query_num(h, req, "limit", 10, 1, 50, &limit) ||
        !query_num(h, req, "images", 20, 0, 200, &images))
        return;
    tr_msg *m = tr_msg_new(SOC_S_QUERY, 32 + (size_t)n);
    if (m != NULL) {
        tr_msg_put_str(m, q, (size_t)n);
        tr_msg_put_u64(m, limit);
        tr_msg_put_u64(m, images);
    }
    start_call(a, req, C_SEARCH, NULL, NULL, m, NULL);
}

static void lag_json(soc_app *a, tr_jbuf *b, const char *name, const char *sub,
                     const social_lag *l)
{
    tr_bus_lag lag = {0};
    (void)tr_bus_lag_get(a->store, sub, &lag);
    tr_jbuf_lit(b, "\"");
    tr_jbuf_lit(b, name);
    tr_jbuf_lit(b, "\":{\"events_behind\":");
    tr_jbuf_u64(b, lag.events);
    tr_jbuf_lit(b, ",\"behind_ms\":");
    tr_jbuf_u64(b, lag.ms);
    tr_jbuf_lit(b, ",\"samples\":");
    tr_jbuf_u64(b, atomic_load(&l->n));
    tr_jbuf_lit(b, ",\"p50_ms\":");
    tr_jbuf_u64(b, (social_lag_quantile(l, 0.5) + 999) / 1000);
    tr_jbuf_lit(b, ",\"p99_ms\":");
    tr_jbuf_u64(b, (social_lag_quantile(l, 0.99) + 999) / 1000);
    tr_jbuf_lit(b, ",\"p50_us\":"); /* bucket bounds: within 25% */
    tr_jbuf_u64(b, social_lag_quantile(l, 0.5));
    tr_jbuf_lit(b, ",\"p99_us\":");
    tr_jbuf_u64(b, social_lag_quantile(l, 0.99));
    tr_jbuf_lit(b, "}");
}

/* The node's figures, as members of a JSON object ("node": ... "lag": {...}): /health's and the
 * dashboard's. */
static void figures_json(soc_app *a, tr_jbuf *bp)
{
    social_stats *s = &a->ctx.stats;
    tr_jbuf b = *bp;
    tr_jbuf_lit(&b, "\"node\":");
    tr_jbuf_str(&b, a->ctx.node_name, strlen(a->ctx.node_name));
    if (a->node != NULL) { /* the cluster as this node sees it */
        tr_peer_info peers[64];
        size_t n = 0, up = 0;
        tr_node_peers(a->node, peers, 64, &n);
        for (size_t i = 0; i < n && i < 64; i++)
            up += peers[i].status == TR_PEER_UP || peers[i].status == TR_PEER_SUSPECT;
        tr_jbuf_lit(&b, ",\"peers_up\":");
        tr_jbuf_u64(&b, up);
    }
    tr_jbuf_lit(&b, ",\"active\":{\"users\":");
    tr_jbuf_u64(&b, tr_shard_count(a->ctx.users));
    tr_jbuf_lit(&b, ",\"posts\":");
    tr_jbuf_u64(&b, tr_shard_count(a->ctx.posts));
    tr_jbuf_lit(&b, ",\"timelines\":");
    tr_jbuf_u64(&b, tr_shard_count(a->ctx.timelines));
    tr_jbuf_lit(&b, "},\"fanout\":{\"posts\":");
    tr_jbuf_u64(&b, atomic_load(&s->fanout_posts));
    tr_jbuf_lit(&b, ",\"inserts\":");
    tr_jbuf_u64(&b, atomic_load(&s->fanout_inserts));
    tr_jbuf_lit(&b, ",\"celebrity_posts\":");
    tr_jbuf_u64(&b, atomic_load(&s->fanout_skipped));
    tr_jbuf_lit(&b, ",\"timelines_built\":");
    tr_jbuf_u64(&b, atomic_load(&s->timelines_built));
    tr_jbuf_lit(&b, ",\"timeline_rebuild_p50_ms\":");
    tr_jbuf_u64(&b, (social_lag_quantile(&s->timeline_rebuild, 0.5) + 999) / 1000);
    tr_jbuf_lit(&b, ",\"timeline_rebuild_p99_ms\":");
    tr_jbuf_u64(&b, (social_lag_quantile(&s->timeline_rebuild, 0.99) + 999) / 1000);
    tr_jbuf_lit(&b, ",\"timeline_retries\":");
    tr_jbuf_u64(&b, atomic_load(&s->timeline_retries));
    tr_jbuf_lit(&b, ",\"post_records\":");
    tr_jbuf_u64(&b, atomic_load(&s->post_records));
    tr_jbuf_lit(&b, ",\"repairs\":");
    tr_jbuf_u64(&b, atomic_load(&s->repairs));
    tr_jbuf_lit(&b, ",\"rewinds\":");
    tr_jbuf_u64(&b, atomic_load(&s->rewinds));
    tr_jbuf_lit(&b, ",\"rewind_events\":");
    tr_jbuf_u64(&b, atomic_load(&s->rewind_events));
    uint64_t tl_entries, tl_bytes;
    social_timeline_memory(&a->ctx, NULL, &tl_entries, &tl_bytes);
    tr_jbuf_lit(&b, ",\"timeline_entries\":");
    tr_jbuf_u64(&b, tl_entries);
    tr_jbuf_lit(&b, ",\"timeline_bytes\":");
    tr_jbuf_u64(&b, tl_bytes);
    tr_jbuf_lit(&b, ",\"timeline_table_bytes\":");
    tr_jbuf_u64(&b, social_timeline_table_bytes(&a->ctx));
    tr_jbuf_lit(&b, "},\"search\":{\"events\":");
    tr_jbuf_u64(&b, atomic_load(&s->search_events));
    tr_jbuf_lit(&b, "},\"lag\":{");
    lag_json(a, &b, "timeline", a->fanout_sub, &s->timeline_lag);
    tr_jbuf_lit(&b, ",");
    lag_json(a, &b, "search", a->search_sub, &s->search_lag);
    tr_jbuf_lit(&b, "}");
    *bp = b;
}

/* The dashboard's "app" (on an HTTP loop): /health's figures. */
static void dashboard_json(void *user, tr_jbuf *b)
{
    tr_jbuf_lit(b, "{");
    figures_json(user, b);
    tr_jbuf_lit(b, "}");
}

static void health(soc_app *a, tr_http_server *h, const tr_http_request *req)
{
    tr_jbuf b = {0};
    tr_jbuf_lit(&b, "{\"status\":\"ready\",");
    figures_json(a, &b);
    tr_jbuf_lit(&b, "}");
    size_t len;
    char *body = tr_jbuf_take(&b, &len);
    if (body == NULL) {
        respond_error(h, req->token, 503, "Retry-After: 1\r\n", "out of memory");
        return;
    }
    tr_http_respond(h, req->token, 200, NULL, body, len);
    free(body);
}

/* Splits path into at most 4 segments after the leading '/'; their count, or -1. */
static int segments(const char *path, char seg[4][SOCIAL_POST_ID_MAX + 1])
{
    if (path[0] != '/')
        return -1;
    int n = 0;
    const char *p = path + 1;
    while (*p != '\0') {
        const char *e = strchr(p, '/');
        size_t l = e != NULL ? (size_t)(e - p) : strlen(p);
        if (n == 4 || l == 0 || l > SOCIAL_POST_ID_MAX)
            return -1;
        memcpy(seg[n], p, l);
        seg[n][l] = '\0';
        n++;
        p += l;
        if (*p == '/')
            p++;
        if (*p == '\0' && p[-1] == '/')
            return -1; /* a trailing slash */
    }
    return n;
}

static void not_allowed(tr_http_server *h, uint64_t token, const char *allow)
{
    respond_error(h, token, 405, allow, "method not allowed");
}

static bool reads(const tr_http_request *req)
{
    return req->method == TR_HTTP_GET || req->method == TR_HTTP_HEAD;
}

/* The route pattern a path's segments match (the label of its metrics), or NULL. */
static const char *route_of(int n, char seg[][SOCIAL_POST_ID_MAX + 1])
{
    if (n == 1) {
        static const char *const one[] = {"/health", "/users", "/posts", "/search"};
        for (size_t i = 0; i < sizeof one / sizeof *one; i++)
            if (strcmp(seg[0], one[i] + 1) == 0)
                return one[i];
    } else if (n == 2 && strcmp(seg[0], "users") == 0) {
        return "/users/{id}";
    } else if (n == 2 && strcmp(seg[0], "timeline") == 0) {
        return "/timeline/{id}";
    } else if (n == 3 && strcmp(seg[0], "users") == 0 && strcmp(seg[2], "posts") == 0) {
        return "/users/{id}/posts";
    } else if (n == 4 && strcmp(seg[0], "users") == 0 && strcmp(seg[2], "following") == 0) {
        return "/users/{id}/following/{other}";
    }
    return NULL;
}

static void handler(void *user, tr_http_server *h, const tr_http_request *req)
{
    soc_app *a = user;
    char seg[4][SOCIAL_POST_ID_MAX + 1];
    int n = segments(req->path, seg);
    tr_http_route(h, req->token, route_of(n, seg));
    if (n == 1 && strcmp(seg[0], "health") == 0) {
        if (reads(req))
            health(a, h, req);
        else
            not_allowed(h, req->token, "Allow: GET, HEAD\r\n");
    } else if (n == 1 && strcmp(seg[0], "users") == 0) {
        if (req->method == TR_HTTP_POST)
            create_user(a, h, req);
        else
            not_allowed(h, req->token, "Allow: POST\r\n");
    } else if (n == 1 && strcmp(seg[0], "posts") == 0) {
        if (req->method == TR_HTTP_POST)
            create_post(a, h, req);
        else
            not_allowed(h, req->token, "Allow: POST\r\n");
    } else if (n == 1 && strcmp(seg[0], "search") == 0) {
        if (reads(req))
            search(a, h, req);
        else
            not_allowed(h, req->token, "Allow: GET, HEAD\r\n");
    } else if (n >= 2 && strcmp(seg[0], "users") == 0 && (n == 2 || n == 3 || n == 4) &&
               (n != 3 || strcmp(seg[2], "posts") == 0) &&
               (n != 4 || strcmp(seg[2], "following") == 0)) {
        const char *id = seg[1];
        bool valid = social_id_valid(id, strlen(id));
        if (n == 2 && !reads(req) && req->method != TR_HTTP_PATCH) {
            not_allowed(h, req->token, "Allow: GET, HEAD, PATCH\r\n");
        } else if (n == 3 && !reads(req)) {
            not_allowed(h, req->token, "Allow: GET, HEAD\r\n");
        } else if (n == 4 && req->method != TR_HTTP_PUT && req->method != TR_HTTP_DELETE) {
            not_allowed(h, req->token, "Allow: PUT, DELETE\r\n");
        } else if (!valid) {
            not_found(h, req->token, "no such user");
        } else if (n == 2 && req->method == TR_HTTP_PATCH) {
            rename_user(a, h, req, id);
        } else if (n == 2) {
            start_call(a, req, C_GET, a->ctx.users, id, tr_msg_new(SOC_U_GET, 8), NULL);
        } else if (n == 3) {
            uint64_t limit, bts;
            char bid[SOCIAL_POST_ID_MAX + 1];
            if (page_args(h, req, &limit, &bts, bid))
                start_call(a, req, C_POSTS, a->ctx.posts, id,
                           page_msg(SOC_P_LIST, bts, bid, limit), NULL);
        } else {
            const char *other = seg[3];
            if (strcmp(other, id) == 0) {
                bad_request(h, req->token, "a user cannot follow itself");
            } else if (!social_id_valid(other, strlen(other))) {
                not_found(h, req->token, "no such user");
            } else {
                bool follow = req->method == TR_HTTP_PUT;
                tr_msg *m = tr_msg_new(follow ? SOC_U_FOLLOW : SOC_U_UNFOLLOW, 40);
                if (m != NULL)
                    tr_msg_put_str(m, other, strlen(other));
                start_call(a, req, follow ? C_FOLLOW : C_UNFOLLOW, a->ctx.users, id, m, NULL);
            }
        }
    } else if (n == 2 && strcmp(seg[0], "timeline") == 0) {
        uint64_t limit, bts;
        char bid[SOCIAL_POST_ID_MAX + 1];
        if (!reads(req))
            not_allowed(h, req->token, "Allow: GET, HEAD\r\n");
        else if (!social_id_valid(seg[1], strlen(seg[1])))
            not_found(h, req->token, "no such user");
        else if (page_args(h, req, &limit, &bts, bid) && !timeline_here(a, h, req, seg[1],
                                                                          bts, bid, limit))
            start_call(a, req, C_TIMELINE, a->ctx.timelines, seg[1],
                       page_msg(SOC_T_PAGE, bts, bid, limit), NULL);
    } else if (!tr_dashboard_serve(a->dash, h, req)) { /* it answers /dashboard and below */
        not_found(h, req->token, "no such route");
    }
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

int soc_start(const soc_opts *o, soc_app **out, char *err, size_t errlen)
{
    *out = NULL;
    soc_app *a = calloc(1, sizeof *a);
    if (a == NULL)
        return TR_ENOMEM;
    a->o = *o;
    a->ctx = (social_ctx){.celebrity_followers = o->celebrity_followers,
                          .timeline_cap = o->timeline_cap,
                          .follow_merge = o->follow_merge,
                          .max_following = o->max_following,
                          .search_images = o->search_images,
                          .call_ms = o->call_timeout_ms,
                          .node_name = o->node != NULL      ? o->node->name
                                       : o->node_name != NULL ? o->node_name
                                                              : "local"};
    snprintf(a->search_sub, sizeof a->search_sub, "social.search.%s", a->ctx.node_name);
    snprintf(a->fanout_sub, sizeof a->fanout_sub, "social.fanout.%s", a->ctx.node_name);
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = o->workers;
    so.spin_rounds = 8;
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
    a->ctx.store = a->store;
    unsigned idle = o->idle_ms ? o->idle_ms : 60000;
    size_t max_keys = o->max_keys ? o->max_keys : 1000000;
    if (rc == TR_OK && (rc = social_shards_start(a->sys, &a->ctx, a->node, max_keys, idle)) !=
                           TR_OK)
        snprintf(err, errlen, "cannot start the social shards");
    if (rc == TR_OK)
        rc = tr_system_spawn(a->sys, &social_fanout_behaviour, &a->ctx, &a->fanout);
    if (rc == TR_OK)
        rc = tr_system_spawn(a->sys, &social_search_behaviour, &a->ctx, &a->search);
    if (rc == TR_OK) {
        tr_dashboard_opts dopts = {.sys = a->sys, .app = "social", .node_name = a->ctx.node_name,
                                   .node = a->node, .node_peers = tr_node_peers,
                                   .node_stats = tr_node_stats_get, .store = a->store,
                                   .store_stats = tr_store_stats_get,
                                   .app_json = dashboard_json, .user = a};
        rc = tr_dashboard_new(&dopts, &a->dash);
    }
    if (rc == TR_OK) { /* last: requests come in at once */
        tr_web_opts wo = {
            .http = {.host = o->http_host, .port = o->http_port,
                     .threads = o->http_threads ? o->http_threads : 1,
                     .max_request = o->http_max_request, .request_ms = o->http_request_ms,
                     .max_connections = o->http_max_connections,
                     .max_per_client = o->http_max_per_client, .handler = handler, .user = a},
            .run_actors = o->run_actors,
            .call_size = sizeof(call) + SOCIAL_URL_MAX + 1,
            .on_reply = on_reply,
            .timeout_ms = o->call_timeout_ms ? o->call_timeout_ms : 5000,
            .metrics_path = "/metrics"};
        rc = tr_web_start(a->sys, &wo, &a->web, err, errlen);
    }
    if (rc != TR_OK) {
        soc_stop(a);
        return rc;
    }
    *out = a;
    return TR_OK;
}

int soc_port(const soc_app *a)
{
    return a != NULL ? tr_http_port(tr_web_http(a->web)) : 0;
}

void soc_stop(soc_app *a)
{
    if (a == NULL)
        return;
    tr_web_quiesce(a->web);
    if (a->sys != NULL) {
        tr_system_stop(a->sys);
        tr_system_join(a->sys);
    }
    tr_store_close(a->store);
    tr_node_stop(a->node);
    tr_web_stop(a->web);
    tr_dashboard_free(a->dash); /* no handler runs any more */
    social_shards_free(&a->ctx);
    tr_system_free(a->sys);
    social_ctx_free(&a->ctx);
    free(a);
}
