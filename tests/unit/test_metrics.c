/*
 * test_metrics.c — troupe/metrics.h: the registry and its text writer (a golden exposition:
 * escaping, histogram lines, collectors), what the registry refuses (names, types, labels, its
 * bound), and the runtime's own metrics in a system's registry (counts per behaviour that move
 * with spawns, messages, failures and restarts). It also times a render of the system's registry
 * with 100,000 live actors and prints it (docs/performance.md); nothing depends on that time.
 */
#include "test_nodes.h"
#include "test_prom.h"
#include "test_util.h"
#include "troupe/metrics.h"
#include "troupe/node.h"

#include <math.h>

static const char golden[] =
    "# HELP app_requests_total Requests, \\\\ and\\nnewline.\n"
    "# TYPE app_requests_total counter\n"
    "app_requests_total{route=\"/a\\\"b\\\\c\\nd\",code=\"200\"} 3\n"
    "app_requests_total{route=\"/\",code=\"404\"} 18446744073709551615\n"
    "# HELP app_temperature The temperature.\n"
    "# TYPE app_temperature gauge\n"
    "app_temperature -1.5\n"
    "# HELP app_latency_seconds Latency.\n"
    "# TYPE app_latency_seconds histogram\n"
    "app_latency_seconds_bucket{op=\"x\",le=\"0.1\"} 0\n"
    "app_latency_seconds_bucket{op=\"x\",le=\"0.5\"} 3\n"
    "app_latency_seconds_bucket{op=\"x\",le=\"1\"} 3\n"
    "app_latency_seconds_bucket{op=\"x\",le=\"+Inf\"} 4\n"
    "app_latency_seconds_sum{op=\"x\"} 3.25\n"
    "app_latency_seconds_count{op=\"x\"} 4\n"
    "# HELP app_queue_depth Queued.\n"
    "# TYPE app_queue_depth gauge\n"
    "app_queue_depth{q=\"a\"} 7\n"
    "app_queue_depth{q=\"b\"} 0.1\n"
    "app_queue_depth NaN\n"
    "# HELP app_wait_seconds Waits.\n"
    "# TYPE app_wait_seconds histogram\n"
    "app_wait_seconds_bucket{le=\"0.001\"} 1\n"
    "app_wait_seconds_bucket{le=\"+Inf\"} 3\n"
    "app_wait_seconds_sum 1e+300\n"
    "app_wait_seconds_count 3\n"
    "# HELP troupe_metrics_series_refused_total Series not registered: the registry held its "
    "maximum.\n"
    "# TYPE troupe_metrics_series_refused_total counter\n"
    "troupe_metrics_series_refused_total 0\n";

static void collect_app(void *user, tr_metrics_out *out)
{
    (void)user;
    tr_metrics_out_family(out, "app_queue_depth", TR_METRIC_GAUGE, "Queued.");
    tr_label qa = {"q", "a"}, qb = {"q", "b"};
    tr_metrics_out_u64(out, &qa, 1, 7);
    tr_metrics_out_value(out, &qb, 1, 0.1);
    tr_metrics_out_value(out, NULL, 0, NAN);
    tr_metrics_out_family(out, "bad name", TR_METRIC_GAUGE, "skipped, with its samples");
    tr_metrics_out_u64(out, NULL, 0, 1);
    tr_metrics_out_family(out, "app_nottotal", TR_METRIC_COUNTER, "a counter not _total");
    tr_metrics_out_u64(out, NULL, 0, 1);
    tr_metrics_out_family(out, "app_wait_seconds", TR_METRIC_HISTOGRAM, "Waits.");
    static const double b[] = {0.001};
    static const uint64_t c[] = {1, 2};
    tr_metrics_out_histogram(out, NULL, 0, b, c, 1, 1e300);
}

static void test_golden(void **state)
{
    (void)state;
    tr_metrics *m;
    assert_int_equal(tr_metrics_new(0, &m), TR_OK);
    tr_metric *c, *c2, *g, *h, *again;
    tr_label l[] = {{"route", "/a\"b\\c\nd"}, {"code", "200"}};
    assert_int_equal(tr_metrics_counter(m, "app_requests_total", "Requests, \\ and\nnewline.", l,
                                        2, &c),
                     TR_OK);
    tr_label l2[] = {{"route", "/"}, {"code", "404"}};
    assert_int_equal(tr_metrics_counter(m, "app_requests_total", "ignored", l2, 2, &c2), TR_OK);
    assert_int_equal(tr_metrics_counter(m, "app_requests_total", NULL, l, 2, &again), TR_OK);
    assert_ptr_equal(again, c); /* the same series */
    assert_int_equal(tr_metrics_gauge(m, "app_temperature", "The temperature.", NULL, 0, &g),
                     TR_OK);
    static const double bounds[] = {0.1, 0.5, 1};
    tr_label op = {"op", "x"};
    assert_int_equal(
        tr_metrics_histogram(m, "app_latency_seconds", "Latency.", &op, 1, bounds, 3, &h), TR_OK);
    tr_metric_inc(c, 2);
    tr_metric_inc(c, 1);
    tr_metric_inc(c2, UINT64_MAX); /* written exactly */
    tr_metric_set(g, 3);
    tr_metric_add(g, -4.5);
    tr_metric_observe(h, 0.25);
    tr_metric_observe(h, 0.5); /* le: at most the bound */
    tr_metric_observe(h, 0.5);
    tr_metric_observe(h, 2);
    tr_metric_observe(h, NAN); /* ignored */
    tr_metric_inc(g, 1);       /* the wrong type: ignored */
    tr_metric_observe(c, 1);
    double v;
    uint64_t n;
    assert_int_equal(tr_metric_read(h, &v, &n), TR_OK);
    assert_true(v == 3.25 && n == 4);
    assert_int_equal(tr_metric_read(g, &v, &n), TR_OK);
    assert_true(v == -1.5 && n == 0);
    assert_int_equal(tr_metrics_collector_add(m, collect_app, NULL), TR_OK);
    char *text;
    size_t len;
    assert_int_equal(tr_metrics_render(m, &text, &len), TR_OK);
    assert_int_equal(len, strlen(text));
    if (strcmp(text, golden) != 0)
        fprintf(stderr, "rendered:\n%s\nexpected:\n%s\n", text, golden);
    assert_string_equal(text, golden);
    assert_int_equal(tp_check(text), 0);
    free(text);
    /* removed: its families are gone */
    tr_metrics_collector_remove(m, collect_app, NULL);
    assert_int_equal(tr_metrics_render(m, &text, &len), TR_OK);
    assert_null(strstr(text, "app_queue_depth"));
    free(text);
    tr_metrics_free(m);
}

static void test_refusals(void **state)
{
    (void)state;
    tr_metrics *m;
    tr_metric *s;
    assert_int_equal(tr_metrics_new(3, &m), TR_OK);
    assert_int_equal(tr_metrics_counter(m, "requests", "no _total", NULL, 0, &s), TR_EINVAL);
    assert_null(s);
    assert_int_equal(tr_metrics_counter(m, "9_total", "", NULL, 0, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_gauge(m, "a-b", "", NULL, 0, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_gauge(m, NULL, "", NULL, 0, &s), TR_EINVAL);
    tr_label bad[] = {{"__reserved", "x"}}, le = {"le", "1"}, dash = {"a-b", "x"};
    assert_int_equal(tr_metrics_gauge(m, "g", "", bad, 1, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_gauge(m, "g", "", &dash, 1, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_histogram(m, "h_seconds", "", &le, 1, NULL, 0, &s), TR_EINVAL);
    static const double down[] = {1, 0.5}, inf[] = {1, INFINITY};
    assert_int_equal(tr_metrics_histogram(m, "h_seconds", "", NULL, 0, down, 2, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_histogram(m, "h_seconds", "", NULL, 0, inf, 2, &s), TR_EINVAL);
    double many[TR_METRICS_BUCKETS_MAX + 1];
    for (size_t i = 0; i <= TR_METRICS_BUCKETS_MAX; i++)
        many[i] = (double)i;
    assert_int_equal(tr_metrics_histogram(m, "h_seconds", "", NULL, 0, many,
                                          TR_METRICS_BUCKETS_MAX + 1, &s),
                     TR_EINVAL);
    /* a family keeps its type and label names */
    tr_label a = {"a", "1"}, b = {"b", "1"};
    assert_int_equal(tr_metrics_gauge(m, "g", "", &a, 1, &s), TR_OK);
    assert_int_equal(tr_metrics_counter(m, "g", "", &a, 1, &s), TR_EINVAL); /* not _total */
    assert_int_equal(tr_metrics_histogram(m, "g", "", &a, 1, NULL, 0, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_gauge(m, "g", "", &b, 1, &s), TR_EINVAL);
    assert_int_equal(tr_metrics_gauge(m, "g", "", NULL, 0, &s), TR_EINVAL);
    /* the default latency buckets */
    assert_int_equal(tr_metrics_histogram(m, "h_seconds", "", NULL, 0, NULL, 0, &s), TR_OK);
    tr_metric_observe(s, 0.003);
    /* the bound: 3 series */
    tr_label a2 = {"a", "2"}, a3 = {"a", "3"};
    assert_int_equal(tr_metrics_gauge(m, "g", "", &a2, 1, &s), TR_OK);
    assert_int_equal(tr_metrics_gauge(m, "g", "", &a3, 1, &s), TR_EFULL);
    assert_int_equal(tr_metrics_gauge(m, "g", "", &a, 1, &s), TR_OK); /* found, not new */
    char long_value[5000];
    memset(long_value, 'x', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    tr_label lv = {"a", long_value};
    assert_int_equal(tr_metrics_gauge(m, "g", "", &lv, 1, &s), TR_ETOOBIG);
    char *text;
    assert_int_equal(tr_metrics_render(m, &text, NULL), TR_OK);
    assert_int_equal(tp_check(text), 0);
    assert_true(tp_value(text, "troupe_metrics_series_refused_total") == 1);
    assert_true(tp_value(text, "h_seconds_bucket{le=\"0.0025\"}") == 0);
    assert_true(tp_value(text, "h_seconds_bucket{le=\"0.005\"}") == 1);
    assert_true(tp_value(text, "h_seconds_bucket{le=\"10\"}") == 1);
    free(text);
    assert_int_equal(tr_metrics_render(NULL, &text, NULL), TR_EINVAL);
    assert_int_equal(tr_metrics_collector_add(m, NULL, NULL), TR_EINVAL);
    assert_int_equal(tr_metric_read(NULL, NULL, NULL), TR_EINVAL);
    tr_metrics_free(m);
    tr_metrics_free(NULL);
}

/* ---- the runtime's own metrics -------------------------------------------------------------- */

enum { T_PING = 1, T_FAIL = 2 };

static int echo_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == T_FAIL)
        return TR_EINVAL; /* a crash */
    if (tr_msg_sender(m) != TR_PID_NONE)
        tr_send(ctx, tr_msg_sender(m), tr_msg_new(T_PING + 10, 0));
    return 0;
}

static int relay_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    tr_pid to = *(tr_pid *)state;
    if (to != TR_PID_NONE && tr_msg_type(m) == T_PING)
        tr_send(ctx, to, tr_msg_new(T_PING, 0)); /* echo answers: relay receives that too */
    return 0;
}

static int relay_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(tr_pid *)state = arg != NULL ? *(const tr_pid *)arg : TR_PID_NONE;
    return 0;
}

static int filler_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    const tr_pid *to = state;
    for (int t = 0; t < 2 && tr_msg_type(m) == T_PING; t++)
        for (int i = 0; i < 5; i++)
            tr_send(ctx, to[t], tr_msg_new(T_PING, 0)); /* the first fits, 4 are refused */
    return 0;
}

static int filler_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    memcpy(state, arg, 2 * sizeof(tr_pid));
    return 0;
}

static const tr_behaviour filler_b = {.name = "filler", .state_size = 2 * sizeof(tr_pid),
                                      .init = filler_init, .receive = filler_receive};

static const tr_behaviour echo_b = {.name = "test \"echo\"", .receive = echo_receive};
static const tr_behaviour relay_b = {.name = "relay", .state_size = sizeof(tr_pid),
                                     .init = relay_init, .receive = relay_receive};

static double series(const char *text, const char *family, const char *beh)
{
    char s[256];
    snprintf(s, sizeof s, "%s{behaviour=\"%s\"}", family, beh);
    return tp_value(text, s);
}

static char *render_sys(tr_system *sys)
{
    char *text = NULL;
    assert_int_equal(tr_metrics_render(tr_system_metrics(sys), &text, NULL), TR_OK);
    assert_int_equal(tp_check(text), 0);
    return text;
}

static void test_system_metrics(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(2);
    assert_non_null(tr_system_metrics(sys));
    assert_null(tr_system_metrics(NULL));
    enum { N = 10, M = 100 };
    tr_pid echo[N], relay;
    for (int i = 0; i < N; i++)
        assert_int_equal(tr_system_spawn(sys, &echo_b, NULL, &echo[i]), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &relay_b, &echo[0], &relay), TR_OK);
    for (int i = 0; i < M; i++)
        assert_int_equal(tr_system_send(sys, relay, tr_msg_new(T_PING, 0)), TR_OK);
    /* relay: M from outside + M answers from echo[0]; echo[0]: M; each relay message sends one */
    const char *e = "test \\\"echo\\\"";
    char *text = NULL;
    bool done = false;
    uint64_t deadline = tt_now_ns() + TT_DEADLINE_MS * 1000000ull;
    while (!done && tt_now_ns() < deadline) {
        free(text);
        text = render_sys(sys);
        done = series(text, "troupe_actor_messages_processed_total", "relay") == 2 * M &&
               series(text, "troupe_actor_messages_processed_total", e) == M;
        if (!done)
            tt_sleep_ms(5);
    }
    assert_true(done);
    assert_true(series(text, "troupe_actors", e) == N);
    assert_true(series(text, "troupe_actors", "relay") == 1);
    assert_true(series(text, "troupe_actor_spawns_total", e) == N);
    assert_true(series(text, "troupe_actor_messages_received_total", "relay") == 2 * M);
    assert_true(series(text, "troupe_actor_messages_sent_total", "relay") == M);
    assert_true(series(text, "troupe_actor_messages_sent_total", e) == M);
    assert_true(series(text, "troupe_actor_mailbox_depth", "relay") == 0);
    assert_true(series(text, "troupe_actor_mailbox_depth_max", "relay") >= 1);
    assert_true(series(text, "troupe_actor_failures_total", e) == 0);
    assert_true(tp_value(text, "troupe_scheduler_workers") == 2);
    assert_non_null(strstr(text, "# TYPE troupe_scheduler_steals_total counter\n"));
    assert_null(strstr(text, "(none)")); /* ports and call waiters are not actors */
    free(text);
    /* a crash: one failure and one exit */
    assert_int_equal(tr_system_send(sys, echo[1], tr_msg_new(T_FAIL, 0)), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, echo[1]), TT_DEADLINE_MS);
    text = render_sys(sys);
    assert_true(series(text, "troupe_actor_failures_total", e) == 1);
    assert_true(series(text, "troupe_actor_exits_total", e) == 1);
    assert_true(series(text, "troupe_actors", e) == N - 1);
    free(text);
    tt_system_end(sys);
}

static const tr_behaviour sink_b = {.name = "sink", .receive = echo_receive};
static const tr_behaviour other_b = {.name = "other", .receive = echo_receive};

/* Turns a guest runs are counted in the guest's rows, summed while it lives and kept once it is
 * freed; a header an actor ended in carries nothing into the next actor spawned in it; a
 * behaviour that received anything has a high-water mark of at least 1; spawns and exits are
 * the system's figures too. */
static void test_guests_and_reused_headers(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(1);
    enum { N = 20, M = 5 };
    tr_pid p[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(tr_system_spawn(sys, &sink_b, NULL, &p[i]), TR_OK);
    tr_guest *g;
    assert_int_equal(tr_guest_new(sys, &g), TR_OK);
    unsigned on_guest = 0;
    for (int r = 0; r < M; r++) {
        assert_int_equal(tr_guest_enter(g), TR_OK);
        for (int i = 0; i < N; i++)
            assert_int_equal(tr_system_send(sys, p[i], tr_msg_new(T_PING, 0)), TR_OK);
        on_guest += tr_guest_leave(g, 1000);
    }
    print_message("%u of %d turns on the guest\n", on_guest, N * M);
    assert_true(on_guest > 0);
    char *text = NULL;
    TT_WAIT_FOR((free(text), text = render_sys(sys),
                 series(text, "troupe_actor_messages_processed_total", "sink") == N * M),
                TT_DEADLINE_MS);
    assert_true(series(text, "troupe_actor_messages_received_total", "sink") == N * M);
    assert_true(series(text, "troupe_actor_mailbox_depth", "sink") == 0);
    assert_true(series(text, "troupe_actor_mailbox_depth_max", "sink") >= 1);
    free(text);
    tr_guest_free(g); /* its rows go to the system's */
    text = render_sys(sys);
    assert_true(series(text, "troupe_actor_messages_processed_total", "sink") == N * M);
    assert_true(series(text, "troupe_actor_messages_received_total", "sink") == N * M);
    free(text);
    text = NULL;
    /* the sinks end; the headers go to actors of another behaviour */
    for (int i = 0; i < N; i++)
        assert_int_equal(tr_system_stop_actor(sys, p[i]), TR_OK);
    for (int i = 0; i < N; i++)
        TT_WAIT_FOR(!tr_system_alive(sys, p[i]), TT_DEADLINE_MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(tr_system_spawn(sys, &other_b, NULL, &p[i]), TR_OK);
        assert_int_equal(tr_system_send(sys, p[i], tr_msg_new(T_PING, 0)), TR_OK);
    }
    TT_WAIT_FOR((free(text), text = render_sys(sys),
                 series(text, "troupe_actor_messages_processed_total", "other") == N),
                TT_DEADLINE_MS);
    assert_true(series(text, "troupe_actor_messages_received_total", "other") == N);
    assert_true(series(text, "troupe_actor_mailbox_depth", "other") == 0);
    assert_true(series(text, "troupe_actor_mailbox_depth_max", "other") == 1);
    print_message("sink after its end: %.0f received, %.0f processed\n",
                  series(text, "troupe_actor_messages_received_total", "sink"),
                  series(text, "troupe_actor_messages_processed_total", "sink"));
    /* (each took its stop as a message too: signals are counted) */
    assert_true(series(text, "troupe_actor_messages_processed_total", "sink") == N * M + N);
    assert_true(series(text, "troupe_actor_messages_received_total", "sink") == N * M + N);
    assert_true(series(text, "troupe_actor_mailbox_depth", "sink") == 0);
    assert_true(series(text, "troupe_actor_exits_total", "sink") == N);
    assert_true(series(text, "troupe_actors", "sink") == 0);
    assert_true(series(text, "troupe_actors", "other") == N);
    free(text);
    tr_system_stats st;
    tr_system_stats_get(sys, &st);
    assert_int_equal(st.spawned, 2 * N);
    assert_int_equal(st.ended, N);
    assert_int_equal(st.alive, N);
    tt_system_end(sys);
}

/* A supervisor's restarts, and messages a full mailbox refuses or drops. */
static void test_restarts_and_refusals(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(1);
    tr_child_spec child = {.id = "c", .behaviour = &echo_b, .restart = TR_PERMANENT};
    tr_sup_spec spec = {.strategy = TR_ONE_FOR_ONE, .intensity = 10, .period_ms = 60000,
                        .children = &child, .nchildren = 1};
    tr_pid sup, c;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr_sup_which_child(sys, sup, "c", &c), TR_OK);
        assert_int_equal(tr_system_send(sys, c, tr_msg_new(T_FAIL, 0)), TR_OK);
        uint64_t running = 0, restarts = 0;
        TT_WAIT_FOR(tr_sup_count(sys, sup, &running, &restarts) == TR_OK && restarts == (uint64_t)i + 1 &&
                        running == 1,
                    TT_DEADLINE_MS);
    }
    char *text = render_sys(sys);
    const char *e = "test \\\"echo\\\"";
    if (series(text, "troupe_actor_restarts_total", e) != 3)
        fprintf(stderr, "%s\n", text);
    assert_true(series(text, "troupe_actor_restarts_total", e) == 3);
    assert_true(series(text, "troupe_actor_failures_total", e) == 3);
    assert_true(series(text, "troupe_actors", e) == 1);
    free(text);
    /* a mailbox of one that rejects, and one that drops the newest, each sent 5 messages in
     * one turn of another actor (one worker: they cannot run meanwhile) */
    tr_spawn_opts rej = {.mailbox = {.capacity = 1, .overflow = TR_OVERFLOW_REJECT}};
    tr_spawn_opts drop = {.mailbox = {.capacity = 1, .overflow = TR_OVERFLOW_DROP_NEWEST}};
    tr_pid targets[2], filler;
    static const tr_behaviour rej_b = {.name = "rejecting", .receive = echo_receive};
    static const tr_behaviour drop_b = {.name = "dropping", .receive = echo_receive};
    assert_int_equal(tr_system_spawn_ex(sys, &rej_b, NULL, &rej, &targets[0]), TR_OK);
    assert_int_equal(tr_system_spawn_ex(sys, &drop_b, NULL, &drop, &targets[1]), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &filler_b, targets, &filler), TR_OK);
    assert_int_equal(tr_system_send(sys, filler, tr_msg_new(T_PING, 0)), TR_OK);
    text = NULL;
    bool done = false;
    uint64_t deadline = tt_now_ns() + TT_DEADLINE_MS * 1000000ull;
    while (!done && tt_now_ns() < deadline) {
        free(text);
        text = render_sys(sys);
        done = series(text, "troupe_actor_messages_processed_total", "rejecting") == 1 &&
               series(text, "troupe_actor_messages_processed_total", "dropping") == 1;
        if (!done)
            tt_sleep_ms(5);
    }
    if (!done)
        fprintf(stderr, "%s\n", text);
    assert_true(done);
    assert_true(series(text, "troupe_actor_messages_rejected_total", "rejecting") == 4);
    assert_true(series(text, "troupe_actor_messages_dropped_total", "dropping") == 4);
    assert_true(series(text, "troupe_actor_messages_received_total", "rejecting") == 5);
    assert_true(series(text, "troupe_actor_messages_received_total", "dropping") == 5);
    assert_true(series(text, "troupe_actor_mailbox_depth_max", "dropping") == 1);
    assert_true(series(text, "troupe_actor_messages_sent_total", "filler") == 10);
    free(text);
    tt_system_end(sys);
}

/* Renders sys's registry until the sample `series` is at least want (or the deadline). */
static char *render_until(tr_system *sys, const char *series_text, double want)
{
    uint64_t deadline = tt_now_ns() + TT_DEADLINE_MS * 1000000ull;
    for (;;) {
        char *text = render_sys(sys);
        if (tp_value(text, series_text) >= want || tt_now_ns() > deadline)
            return text;
        free(text);
        tt_sleep_ms(5);
    }
}

/* A node's families: its peer up, messages and bytes both ways; removed when the node stops. */
static void test_node_metrics(void **state)
{
    (void)state;
    tr_system *sa = tt_node_system(31), *sb = tt_node_system(32);
    tr_node *a, *b;
    tr_node_opts oa = tt_node_opts("ma", "metrics-secret", NULL, 0);
    assert_int_equal(tr_node_start(sa, &oa, &a), TR_OK);
    const char *seed = tr_node_address(a);
    tr_node_opts ob = tt_node_opts("mb", "metrics-secret", &seed, 1);
    assert_int_equal(tr_node_start(sb, &ob, &b), TR_OK);
    uint16_t id;
    assert_int_equal(tr_node_wait_peer(a, "mb", TT_DEADLINE_MS, &id), TR_OK);
    tr_pid echo;
    assert_int_equal(tr_system_spawn(sb, &echo_b, NULL, &echo), TR_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(tr_system_send(sa, echo, tr_msg_new(T_PING, 0)), TR_OK);
    char *text = NULL;
    bool done = false;
    uint64_t deadline = tt_now_ns() + TT_DEADLINE_MS * 1000000ull;
    while (!done && tt_now_ns() < deadline) {
        free(text);
        text = render_sys(sa);
        done = tp_value(text, "troupe_node_peer_messages_sent_total{peer=\"mb\"}") >= 10;
        if (!done)
            tt_sleep_ms(5);
    }
    assert_true(done);
    assert_true(tp_value(text, "troupe_node_peer_up{peer=\"mb\"}") == 1);
    assert_true(tp_value(text, "troupe_node_peer_bytes_sent_total{peer=\"mb\"}") > 10);
    assert_true(tp_value(text, "troupe_node_peer_reconnects_total{peer=\"mb\"}") == 0);
    assert_true(tp_value(text, "troupe_node_bad_frames_total") == 0);
    free(text);
    text = render_until(sb, "troupe_node_peer_messages_received_total{peer=\"ma\"}", 10);
    assert_true(tp_value(text, "troupe_node_peer_up{peer=\"ma\"}") == 1);
    free(text);
    tr_node_stop(b);
    tr_node_stop(a);
    text = render_sys(sa);
    assert_null(strstr(text, "troupe_node_")); /* its collector went with it */
    free(text);
    tr_system_stop(sa);
    tr_system_stop(sb);
    tr_system_join(sa);
    tr_system_join(sb);
    tr_system_free(sa);
    tr_system_free(sb);
}

/* The cost of a render at 100,000 actors: the rows of counters make it independent of the
 * number of actors (printed; nothing is asserted on time). */
static void test_render_at_100k_actors(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(2);
    unsigned n = tt_scale(100000, 10000);
    static const tr_behaviour kinds[4] = {
        {.name = "kind-a", .receive = echo_receive}, {.name = "kind-b", .receive = echo_receive},
        {.name = "kind-c", .receive = echo_receive}, {.name = "kind-d", .receive = echo_receive}};
    for (unsigned i = 0; i < n; i++) {
        tr_pid p;
        assert_int_equal(tr_system_spawn(sys, &kinds[i % 4], NULL, &p), TR_OK);
        if (i % 10 == 0)
            tr_system_send(sys, p, tr_msg_new(T_PING, 0));
    }
    tr_metrics *m = tr_system_metrics(sys);
    char *text = NULL;
    size_t len = 0;
    uint64_t best = UINT64_MAX, total = 0;
    enum { ROUNDS = 50 };
    for (int r = 0; r < ROUNDS; r++) {
        free(text);
        uint64_t t0 = tt_now_ns();
        assert_int_equal(tr_metrics_render(m, &text, &len), TR_OK);
        uint64_t dt = tt_now_ns() - t0;
        total += dt;
        if (dt < best)
            best = dt;
    }
    assert_int_equal(tp_check(text), 0);
    assert_true(series(text, "troupe_actors", "kind-a") == n / 4);
    printf("metrics: render of the system's registry at %u actors: best %.3f ms, mean %.3f ms, "
           "%zu bytes\n",
           n, (double)best / 1e6, (double)total / ROUNDS / 1e6, len);
    free(text);
    tt_system_end(sys);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_golden),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_system_metrics),
    cmocka_unit_test(test_restarts_and_refusals),
    cmocka_unit_test(test_guests_and_reused_headers),
    cmocka_unit_test(test_node_metrics),
    cmocka_unit_test(test_render_at_100k_actors),
};

TT_MAIN_PLAIN(tests)
