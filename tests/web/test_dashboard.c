/*
 * test_dashboard.c — the live dashboard of the web unit (troupe/dashboard.h) over a real HTTP
 * server: the page (HTML, self-contained: nothing fetched from another origin, a Content-Type of
 * its own), /dashboard/data's JSON (strict, with the system's, the cluster's, the store's and
 * the application's figures read through the getters handed over), the routes' errors (404 under
 * /dashboard/, 405, other paths left to the application), and the ring of recent events (fixed
 * size, oldest first, lines cut on a UTF-8 boundary, escaped). The page in a browser is
 * tests/dashboard/'s test.
 */
#include "test_util.h"
#include "test_net.h"
#include "troupe/dashboard.h"
#include "troupe/node.h"
#include "troupe/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fake getters: a cluster of two peers, a store with counters ----------------------------- */

static struct tr_node *const FAKE_NODE = (struct tr_node *)0x1;
static struct tr_store *const FAKE_STORE = (struct tr_store *)0x2;

static int fake_peers(tr_node *node, tr_peer_info *out, size_t cap, size_t *count)
{
    assert_ptr_equal(node, FAKE_NODE);
    static const tr_peer_info peers[2] = {
        {.name = "beta", .address = "tcp://127.0.0.1:7102", .node_id = 2, .status = TR_PEER_UP},
        {.name = "gam\"ma", .address = "tcp://127.0.0.1:7103", .node_id = 3,
         .status = TR_PEER_DOWN},
    };
    for (size_t i = 0; i < 2 && i < cap; i++)
        out[i] = peers[i];
    *count = 2;
    return TR_OK;
}

static void fake_node_stats(tr_node *node, tr_node_stats *out)
{
    assert_ptr_equal(node, FAKE_NODE);
    memset(out, 0, sizeof *out);
    out->msgs_in = 11;
    out->msgs_out = 12;
    out->peers_down = 1;
}

static void fake_store_stats(tr_store *s, tr_store_stats *out)
{
    assert_ptr_equal(s, FAKE_STORE);
    memset(out, 0, sizeof *out);
    out->commits = 42;
    out->outbox_put = 7;
}

static int app_calls;

static void app_json(void *user, tr_jbuf *b)
{
    assert_ptr_equal(user, &app_calls);
    app_calls++;
    tr_jbuf_lit(b, "{\"email\":{\"sent\":5,\"pending\":3,\"rate\":50}}");
}

static void app_json_nothing(void *user, tr_jbuf *b)
{
    (void)user;
    (void)b;
}

/* ---- the server: /dashboard..., everything else the "application's" 404 ---------------------- */

static void handler(void *user, tr_http_server *srv, const tr_http_request *req)
{
    tr_dashboard *d = user;
    if (!tr_dashboard_serve(d, srv, req)) {
        static const char nf[] = "{\"error\":\"app 404\"}";
        tr_http_respond(srv, req->token, 404, NULL, nf, sizeof nf - 1);
    }
}

static tr_http_server *serve(tr_dashboard *d)
{
    tr_http_server *srv;
    tr_http_opts o = {.host = "127.0.0.1", .threads = 1, .handler = handler, .user = d};
    assert_int_equal(tr_http_start(&o, &srv), 0);
    return srv;
}

/* cJSON of body, strictly parsed (fails the test when it is not JSON) */
static cJSON *parse(const char *body)
{
    char why[128];
    cJSON *j = tr_json_parse(body, strlen(body), why, sizeof why);
    if (j == NULL)
        fail_msg("not JSON (%s): %.300s", why, body);
    return j;
}

static double num_at(const cJSON *j, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, a);
    if (b != NULL)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    assert_true(cJSON_IsNumber(x));
    return x->valuedouble;
}

static void test_new_refuses(void **state)
{
    (void)state;
    tr_dashboard *d = (tr_dashboard *)0x1;
    assert_int_equal(tr_dashboard_new(NULL, &d), TR_EINVAL);
    assert_null(d);
    tr_dashboard_opts o = {0};
    assert_int_equal(tr_dashboard_new(&o, &d), TR_EINVAL); /* no system */
    assert_int_equal(tr_dashboard_new(&o, NULL), TR_EINVAL);
    tr_dashboard_free(NULL);
}

static void test_page(void **state)
{
    (void)state;
    size_t len = 0;
    const char *page = tr_dashboard_page(&len);
    assert_non_null(page);
    assert_int_equal(strlen(page), len);
    assert_true(len > 1000);
    assert_true(strncmp(page, "<!DOCTYPE html>", 15) == 0);
    assert_non_null(strstr(page, "</html>"));
    /* self-contained: no other origin, no file of its own to load */
    assert_null(strstr(page, "http://"));
    assert_null(strstr(page, "https://"));
    assert_null(strstr(page, "src=\""));
    assert_null(strstr(page, "<link"));
    assert_non_null(strstr(page, "/dashboard/data"));

    tr_system *sys = tt_system_workers(1);
    tr_dashboard *d;
    tr_dashboard_opts o = {.sys = sys};
    assert_int_equal(tr_dashboard_new(&o, &d), TR_OK);
    tr_http_server *srv = serve(d);
    int port = tr_http_port(srv);
    static char body[1 << 17], head[2048];
    assert_int_equal(tt_http(port, "GET", "/dashboard", NULL, body, sizeof body, head,
                             sizeof head, 5000), 200);
    assert_string_equal(body, page);
    assert_non_null(strstr(head, "Content-Type: text/html; charset=utf-8\r\n"));
    assert_null(strstr(head, "application/json")); /* one Content-Type, the page's */
    assert_non_null(strstr(head, "Content-Security-Policy: default-src 'none'"));
    assert_non_null(strstr(head, "Cache-Control: no-store"));
    assert_int_equal(tt_http(port, "GET", "/dashboard/", NULL, body, sizeof body, NULL, 0, 5000),
                     200);
    assert_string_equal(body, page);
    assert_int_equal(tt_http(port, "HEAD", "/dashboard", NULL, body, sizeof body, head,
                             sizeof head, 5000), 200);
    assert_string_equal(body, "");
    assert_int_equal(tt_http(port, "POST", "/dashboard", "x", body, sizeof body, head,
                             sizeof head, 5000), 405);
    assert_non_null(strstr(head, "Allow: GET, HEAD"));
    assert_int_equal(tt_http(port, "DELETE", "/dashboard/data", NULL, body, sizeof body, NULL, 0,
                             5000), 405);
    /* under /dashboard/: the dashboard's 404; anything else: the application's */
    assert_int_equal(tt_http(port, "GET", "/dashboard/nope", NULL, body, sizeof body, NULL, 0,
                             5000), 404);
    assert_string_equal(body, "{\"error\":\"no such route\"}");
    assert_int_equal(tt_http(port, "GET", "/dashboardx", NULL, body, sizeof body, NULL, 0, 5000),
                     404);
    assert_string_equal(body, "{\"error\":\"app 404\"}");
    assert_int_equal(tt_http(port, "GET", "/dash", NULL, body, sizeof body, NULL, 0, 5000), 404);
    assert_string_equal(body, "{\"error\":\"app 404\"}");
    tr_http_stop(srv);
    tr_dashboard_free(d);
    tt_system_end(sys);
}

static int idle_receive(tr_ctx *ctx, void *st, tr_msg *m)
{
    (void)ctx;
    (void)st;
    (void)m;
    return 0;
}

static void test_data(void **state)
{
    (void)state;
    tr_dashboard_events_clear();
    tr_system *sys = tt_system_workers(1);
    tr_pid pids[3];
    static const tr_behaviour idle = {.name = "idle", .receive = idle_receive};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tr_system_spawn(sys, &idle, NULL, &pids[i]), TR_OK);
    tr_dashboard *d;
    tr_dashboard_opts o = {.sys = sys, .app = "shop", .node_name = "alpha", .node = FAKE_NODE,
                           .node_peers = fake_peers, .node_stats = fake_node_stats,
                           .store = FAKE_STORE, .store_stats = fake_store_stats,
                           .app_json = app_json, .user = &app_calls};
    assert_int_equal(tr_dashboard_new(&o, &d), TR_OK);
    tr_http_server *srv = serve(d);
    int port = tr_http_port(srv);
    static char body[1 << 16], head[2048];
    assert_int_equal(tt_http(port, "GET", "/dashboard/data", NULL, body, sizeof body, head,
                             sizeof head, 5000), 200);
    assert_non_null(strstr(head, "application/json"));
    assert_non_null(strstr(head, "Cache-Control: no-store"));
    cJSON *j = parse(body);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "application")->valuestring, "shop");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "node")->valuestring, "alpha");
    double t1 = num_at(j, "now_ms", NULL);
    assert_true(num_at(j, "system", "alive") >= 3);
    assert_true(num_at(j, "system", "spawned") >= 3);
    assert_true(num_at(j, "wall_ms", NULL) > 1.6e12); /* a real time of day, in ms */
    /* the cluster: both peers, their state, a name with a quote escaped */
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(j, "cluster");
    assert_int_equal((int)num_at(cl, "count", NULL), 2);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(cl, "members");
    assert_int_equal(cJSON_GetArraySize(ms), 2);
    const cJSON *m1 = cJSON_GetArrayItem(ms, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m1, "name")->valuestring, "gam\"ma");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m1, "state")->valuestring, "down");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ms, 0), "state")->valuestring, "up");
    assert_int_equal((int)num_at(j, "node_stats", "msgs_in"), 11);
    assert_int_equal((int)num_at(j, "node_stats", "peers_down"), 1);
    assert_int_equal((int)num_at(j, "store", "commits"), 42);
    assert_int_equal((int)num_at(j, "store", "outbox_put"), 7);
    const cJSON *app = cJSON_GetObjectItemCaseSensitive(j, "app");
    assert_int_equal((int)num_at(app, "email", "pending"), 3);
    assert_int_equal(app_calls, 1);
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "events");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ev, "list")), 0);
    cJSON_Delete(j);

    /* a second read: the clock moved on (or stood), the spawn is counted */
    tr_pid more;
    assert_int_equal(tr_system_spawn(sys, &idle, NULL, &more), TR_OK);
    tt_sleep_ms(5);
    assert_int_equal(tt_http(port, "GET", "/dashboard/data", NULL, body, sizeof body, NULL, 0,
                             5000), 200);
    j = parse(body);
    assert_true(num_at(j, "now_ms", NULL) >= t1 + 5);
    assert_true(num_at(j, "system", "spawned") >= 4);
    cJSON_Delete(j);
    tr_http_stop(srv);
    tr_dashboard_free(d);

    /* nothing but the system: no cluster, store or node figures; an app_json writing nothing and
     * none at all are both "app": null */
    for (int k = 0; k < 2; k++) {
        tr_dashboard_opts bare = {.sys = sys, .app_json = k == 0 ? app_json_nothing : NULL};
        assert_int_equal(tr_dashboard_new(&bare, &d), TR_OK);
        srv = serve(d);
        assert_int_equal(tt_http(tr_http_port(srv), "GET", "/dashboard/data", NULL, body,
                                 sizeof body, NULL, 0, 5000), 200);
        j = parse(body);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "application")->valuestring,
                            "troupe");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "node")->valuestring, "local");
        assert_null(cJSON_GetObjectItemCaseSensitive(j, "cluster"));
        assert_null(cJSON_GetObjectItemCaseSensitive(j, "store"));
        assert_null(cJSON_GetObjectItemCaseSensitive(j, "node_stats"));
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "app")));
        cJSON_Delete(j);
        tr_http_stop(srv);
        tr_dashboard_free(d);
    }
    tt_system_end(sys);
}

static void test_events_ring(void **state)
{
    (void)state;
    tr_dashboard_events_clear();
    tr_system *sys = tt_system_workers(1);
    tr_dashboard *d;
    tr_dashboard_opts o = {.sys = sys};
    assert_int_equal(tr_dashboard_new(&o, &d), TR_OK);
    tr_http_server *srv = serve(d);
    int port = tr_http_port(srv);

    /* more lines than the ring holds: the last TR_DASHBOARD_EVENTS stay, oldest first */
    const unsigned n = TR_DASHBOARD_EVENTS + 10;
    for (unsigned i = 1; i <= n; i++) {
        char line[64];
        snprintf(line, sizeof line, "line %u \"quoted\"\t\\", i);
        tr_dashboard_note(i % 2 ? TR_LOG_ERROR : TR_LOG_INFO, "test", line);
    }
    /* a long line of 3-byte characters: cut at TR_DASHBOARD_LINE_MAX bytes at most, whole
     * characters only; a long component cut too */
    char longline[3 * 200 + 1];
    for (int i = 0; i < 200; i++)
        memcpy(longline + 3 * i, "\xe2\x82\xac", 3); /* U+20AC */
    longline[600] = '\0';
    tr_dashboard_note(TR_LOG_WARN, "a-component-name-far-too-long-to-keep", longline);
    /* through the hook, as the runtime's own lines come (written to stderr too) */
    tr_log_level was = tr_log_level_get();
    tr_log_set(tr_dashboard_log, NULL, TR_LOG_INFO);
    tr_log(TR_LOG_INFO, "node", "alpha: peer beta (node id 2) is down");
    tr_log(TR_LOG_DEBUG, "node", "not kept: above the level");
    tr_log_set(NULL, NULL, was);

    static char body[1 << 17];
    assert_int_equal(tt_http(port, "GET", "/dashboard/data", NULL, body, sizeof body, NULL, 0,
                             5000), 200);
    cJSON *j = parse(body); /* strict: valid UTF-8, escapes and all */
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "events");
    assert_int_equal((int)num_at(ev, "last", NULL), (int)n + 2);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(ev, "list");
    assert_int_equal(cJSON_GetArraySize(list), (int)TR_DASHBOARD_EVENTS);
    for (int i = 0; i < cJSON_GetArraySize(list); i++) { /* in order, none missing */
        const cJSON *e = cJSON_GetArrayItem(list, i);
        assert_int_equal((int)num_at(e, "seq", NULL), (int)n + 2 - (int)TR_DASHBOARD_EVENTS + 1 + i);
    }
    const cJSON *first = cJSON_GetArrayItem(list, 0);
    unsigned first_seq = n + 2 - TR_DASHBOARD_EVENTS + 1;
    char want[64];
    snprintf(want, sizeof want, "line %u \"quoted\"\t\\", first_seq);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(first, "line")->valuestring, want);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(first, "level")->valuestring,
                        first_seq % 2 ? "error" : "info");
    const cJSON *cut = cJSON_GetArrayItem(list, (int)TR_DASHBOARD_EVENTS - 2);
    const char *cl = cJSON_GetObjectItemCaseSensitive(cut, "line")->valuestring;
    assert_true(strlen(cl) <= TR_DASHBOARD_LINE_MAX);
    assert_int_equal(strlen(cl) % 3, 0);          /* whole characters */
    assert_true(strlen(cl) > TR_DASHBOARD_LINE_MAX - 3);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cut, "level")->valuestring, "warn");
    assert_true(strlen(cJSON_GetObjectItemCaseSensitive(cut, "component")->valuestring) < 24);
    const cJSON *last = cJSON_GetArrayItem(list, (int)TR_DASHBOARD_EVENTS - 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(last, "line")->valuestring,
                        "alpha: peer beta (node id 2) is down");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(last, "component")->valuestring, "node");
    assert_true(num_at(last, "wall_ms", NULL) > 1.6e12);
    cJSON_Delete(j);

    tr_dashboard_events_clear();
    assert_int_equal(tt_http(port, "GET", "/dashboard/data", NULL, body, sizeof body, NULL, 0,
                             5000), 200);
    j = parse(body);
    ev = cJSON_GetObjectItemCaseSensitive(j, "events");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ev, "list")), 0);
    cJSON_Delete(j);
    tr_http_stop(srv);
    tr_dashboard_free(d);
    tt_system_end(sys);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_new_refuses),
    cmocka_unit_test(test_page),
    cmocka_unit_test(test_data),
    cmocka_unit_test(test_events_ring),
};

TT_MAIN_PLAIN(tests)
