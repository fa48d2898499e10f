/*
 * test_bus.c — the event bus (troupe/bus.h): events committed with a journal's unit, delivered in
 * id order to a durable subscription's consumer, only of its topics; the offset kept across a
 * reopen; a window of unacknowledged events (back-pressure) and the lag counted; redelivery of
 * what is not acknowledged, in order; a new consumer after one ended; bad arguments refused.
 * Every test runs on both backends: SQLite, then a redis-server of the test's own; on Redis, two
 * stores (two nodes) share one log, each seeing the other's events.
 */
#include "../support/test_peers.h"
#include "../support/test_util.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <troupe/bus.h>
#include <troupe/node.h>
#include <troupe/store.h>

enum { PUB = 1, PUB_B = 2 };

/* ---- a publisher: a persistent actor that publishes one event per message ------------------ */

typedef struct pub_state {
    tr_journal *j;
    tr_store *s;
} pub_state;

static int pub_init(tr_ctx *ctx, void *state, const void *arg)
{
    pub_state *p = state;
    p->s = (tr_store *)arg;
    return tr_journal_open(ctx, p->s, "publisher", NULL, NULL, NULL, &p->j);
}

static int pub_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    pub_state *p = state;
    uint64_t v = tt_read_u64(m);
    const char *topic = tr_msg_type(m) == PUB_B ? "t.b" : "t.a";
    char key[32];
    snprintf(key, sizeof key, "k%llu", (unsigned long long)(v % 7));
    int rc = tr_journal_persist(p->j, &v, sizeof v);
    if (rc == TR_OK)
        rc = tr_journal_publish(p->j, topic, key, &v, sizeof v);
    if (rc == TR_OK && tr_msg_from(m).pid != TR_PID_NONE)
        rc = tr_journal_reply(p->j, m, tt_msg_u64(PUB, v));
    return rc;
}

static void pub_turn_end(tr_ctx *ctx, void *state)
{
    (void)ctx;
    tr_journal_flush(((pub_state *)state)->j);
}

static void pub_terminate(tr_ctx *ctx, void *state, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    tr_journal_close(((pub_state *)state)->j);
}

static const tr_behaviour pub_b = {.name = "publisher",
                                   .state_size = sizeof(pub_state),
                                   .init = pub_init,
                                   .receive = pub_receive,
                                   .turn_end = pub_turn_end,
                                   .terminate = pub_terminate};

/* ---- a consumer that records what it gets and acknowledges up to a limit ------------------- */

#define SEEN_MAX 20000u

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_ids[SEEN_MAX], g_vals[SEEN_MAX];
static unsigned g_attempts[SEEN_MAX];
static size_t g_nseen;
static _Atomic uint64_t g_ack_limit; /* acknowledge ids up to this (UINT64_MAX: all) */
static tr_store *g_store;
static atomic_bool g_bad_topic;

static void seen_reset(uint64_t ack_limit)
{
    pthread_mutex_lock(&g_lock);
    g_nseen = 0;
    pthread_mutex_unlock(&g_lock);
    atomic_store(&g_ack_limit, ack_limit);
    atomic_store(&g_bad_topic, false);
}

static size_t seen(void)
{
    pthread_mutex_lock(&g_lock);
    size_t n = g_nseen;
    pthread_mutex_unlock(&g_lock);
    return n;
}

typedef struct cons_state {
    uint64_t to_ack;
    char sub[64];
} cons_state;

static int cons_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    cons_state *c = state;
    tr_bus_event ev;
    if (tr_bus_read(m, &ev) != TR_OK)
        return 0;
    if (ev.topic_len != 3 || memcmp(ev.topic, "t.a", 3) != 0)
        atomic_store(&g_bad_topic, true);
    uint64_t v = 0;
    if (ev.len == sizeof v)
        memcpy(&v, ev.data, sizeof v);
    pthread_mutex_lock(&g_lock);
    if (g_nseen < SEEN_MAX) {
        g_ids[g_nseen] = ev.id;
        g_vals[g_nseen] = v;
        g_attempts[g_nseen] = ev.attempt;
        g_nseen++;
    }
    pthread_mutex_unlock(&g_lock);
    snprintf(c->sub, sizeof c->sub, "%.*s", (int)ev.sub_len, ev.sub);
    if (ev.id <= atomic_load(&g_ack_limit) && ev.id > c->to_ack)
        c->to_ack = ev.id;
    return 0;
}

/* Acknowledges once per turn batch: the highest id applied (cumulative). */
static void cons_turn_end(tr_ctx *ctx, void *state)
{
    (void)ctx;
    cons_state *c = state;
    if (c->to_ack > 0 && c->sub[0] != '\0') {
        tr_bus_ack(g_store, c->sub, c->to_ack);
        c->to_ack = 0;
    }
}

static const tr_behaviour cons_b = {.name = "consumer",
                                    .state_size = sizeof(cons_state),
                                    .receive = cons_receive,
                                    .turn_end = cons_turn_end};

/* ---- helpers ------------------------------------------------------------------------------- */

static char g_dir[64];
static bool g_redis;
static pid_t g_redis_pid;
static int g_redis_port;

static int setup_dir(void **state)
{
    (void)state;
    g_redis = false;
    return tt_tmpdir(g_dir, sizeof g_dir, "test_bus");
}

static int setup_redis(void **state)
{
    if (setup_dir(state) != 0)
        return -1;
    g_redis = true;
    g_redis_pid = redis_start(g_dir, &g_redis_port);
    return g_redis_pid > 0 ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    if (g_redis_pid > 0) {
        redis_stop(g_redis_pid);
        g_redis_pid = 0;
    }
    return tt_rm_rf(g_dir);
}

/* Each test starts from an empty log on Redis (a file of its own on SQLite). */
static int fresh(void **state)
{
    (void)state;
    if (!g_redis)
        return 0;
    redisContext *c = redisConnect("127.0.0.1", g_redis_port);
    redisReply *r = c != NULL && c->err == 0 ? redisCommand(c, "FLUSHALL") : NULL;
    bool ok = r != NULL;
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    return ok ? 0 : -1;
}

static tr_store *open_store(tr_system *sys, const char *name, unsigned redeliver_ms,
                            unsigned window)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.db", g_dir, name);
    tr_store_opts o = {.path = path, .sync = TR_SYNC_NORMAL, .redeliver_ms = redeliver_ms,
                       .outbox_window = window};
    if (g_redis) {
        o.backend = TR_STORE_REDIS;
        o.redis_host = "127.0.0.1";
        o.redis_port = (unsigned)g_redis_port;
    }
    tr_store *s = NULL;
    char err[256];
    assert_int_equal(tr_store_open(sys, &o, &s, err, sizeof err), TR_OK);
    g_store = s;
    return s;
}

static void publish_n(tr_system *sys, tr_pid pub, unsigned n, bool both)
{
    for (unsigned i = 1; i <= n; i++) {
        uint32_t type = both && i % 2 == 0 ? PUB_B : PUB;
        if (i == n) { /* the last one as a call: everything before it is committed then */
            tr_msg *r = NULL;
            assert_int_equal(tr_system_call(sys, pub, tt_msg_u64(type, i), 20000, &r), TR_OK);
            tr_msg_free(r);
        } else {
            assert_int_equal(tr_system_send(sys, pub, tt_msg_u64(type, i)), TR_OK);
        }
    }
}

static int subscribe(tr_store *s, const char *name, tr_pid consumer, uint64_t from,
                     unsigned window)
{
    static const char *const topics[] = {"t.a"};
    tr_bus_sub_opts so = {.name = name, .topics = topics, .ntopics = 1, .consumer = consumer,
                          .from = from, .window = window};
    return tr_bus_subscribe(s, &so);
}

static void end(tr_system *sys, tr_store *s)
{
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_store_close(s);
    tr_system_free(sys);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* The runtime's own message types are distinct (TR_MSG_OUTBOX once had TR_MSG_CTL's value). */
static void test_system_types_distinct(void **state)
{
    (void)state;
    const uint32_t types[] = {TR_MSG_TIMEOUT,   TR_MSG_EXIT,     TR_MSG_DOWN,
                              TR_MSG_REJECTED,  TR_MSG_NOPROC,   TR_MSG_NODEUP,
                              TR_MSG_NODEDOWN,  TR_MSG_NAME_LOST, TR_MSG_CTL,
                              TR_MSG_BUS_EVENT, TR_MSG_NODE_ID_TAKEN, TR_MSG_OUTBOX};
    size_t n = sizeof types / sizeof types[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_int_not_equal(types[i], types[j]);
}

static void test_delivered_in_order_only_its_topics(void **state)
{
    (void)state;
    seen_reset(UINT64_MAX);
    tr_system *sys = tt_system_workers(2);
    tr_store *s = open_store(sys, "order", 0, 0);
    tr_pid pub, cons;
    assert_int_equal(tr_system_spawn(sys, &pub_b, s, &pub), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "reader", cons, TR_BUS_FROM_STORED, 0), TR_OK);
    const unsigned n = tt_scale(4000, 1000);
    publish_n(sys, pub, n, true);
    TT_WAIT_FOR(seen() >= n / 2, TT_DEADLINE_MS);
    assert_int_equal(seen(), n / 2);
    assert_false(atomic_load(&g_bad_topic));
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_nseen; i++) {
        assert_int_equal(g_vals[i], 2 * i + 1); /* the odd ones went to t.a, in order */
        if (i > 0)
            assert_true(g_ids[i] > g_ids[i - 1]);
    }
    uint64_t last = g_ids[g_nseen - 1];
    pthread_mutex_unlock(&g_lock);
    tr_bus_lag lag;
    TT_WAIT_FOR(tr_bus_lag_get(s, "reader", &lag) == TR_OK && lag.offset == last,
                TT_DEADLINE_MS);
    assert_int_equal(lag.events, 0);
    assert_int_equal(lag.ms, 0);
    assert_true(lag.consumer);
    assert_int_equal(lag.head, (uint64_t)n); /* one log for both topics */
    assert_int_equal(tr_bus_lag_get(s, "nobody", &lag), TR_ENOPROC);
    end(sys, s);
}

static void test_offset_kept_across_reopen(void **state)
{
    (void)state;
    seen_reset(50);
    tr_system *sys = tt_system_workers(2);
    tr_store *s = open_store(sys, "reopen", 0, 0);
    tr_pid pub, cons;
    assert_int_equal(tr_system_spawn(sys, &pub_b, s, &pub), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "reader", cons, TR_BUS_FROM_STORED, 1000), TR_OK);
    publish_n(sys, pub, 100, false);
    TT_WAIT_FOR(seen() == 100, TT_DEADLINE_MS);
    tr_bus_lag lag;
    TT_WAIT_FOR(tr_bus_lag_get(s, "reader", &lag) == TR_OK && lag.offset == 50, TT_DEADLINE_MS);
    assert_int_equal(lag.events, 50);
    end(sys, s);

    /* reopened: the stored offset (50) is where it goes on; from 0 replays the whole log */
    seen_reset(UINT64_MAX);
    sys = tt_system_workers(2);
    s = open_store(sys, "reopen", 0, 0);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "reader", cons, TR_BUS_FROM_STORED, 0), TR_OK);
    TT_WAIT_FOR(seen() == 50, TT_DEADLINE_MS);
    tt_sleep_ms(50);
    assert_int_equal(seen(), 50);
    pthread_mutex_lock(&g_lock);
    assert_int_equal(g_ids[0], 51);
    assert_int_equal(g_vals[49], 100);
    pthread_mutex_unlock(&g_lock);
    seen_reset(UINT64_MAX);
    tr_pid again;
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &again), TR_OK);
    assert_int_equal(subscribe(s, "replay", again, 0, 0), TR_OK);
    TT_WAIT_FOR(seen() == 100, TT_DEADLINE_MS);
    end(sys, s);
}

static void test_window_holds_back_and_lag_counts(void **state)
{
    (void)state;
    seen_reset(0); /* acknowledge nothing */
    tr_system *sys = tt_system_workers(2);
    tr_store *s = open_store(sys, "window", 60000, 0);
    tr_pid pub, cons;
    assert_int_equal(tr_system_spawn(sys, &pub_b, s, &pub), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "slow", cons, TR_BUS_FROM_STORED, 16), TR_OK);
    publish_n(sys, pub, 100, false);
    TT_WAIT_FOR(seen() == 16, TT_DEADLINE_MS);
    tt_sleep_ms(100);
    assert_int_equal(seen(), 16); /* no more than the window while nothing is acknowledged */
    tr_bus_lag lag;
    assert_int_equal(tr_bus_lag_get(s, "slow", &lag), TR_OK);
    assert_int_equal(lag.events, 100);
    assert_int_equal(lag.offset, 0);
    tt_sleep_ms(20);
    assert_int_equal(tr_bus_lag_get(s, "slow", &lag), TR_OK);
    assert_true(lag.ms >= 10);
    atomic_store(&g_ack_limit, UINT64_MAX); /* acknowledging again: the rest flows */
    assert_int_equal(tr_bus_ack(s, "slow", 16), TR_OK);
    TT_WAIT_FOR(seen() == 100, TT_DEADLINE_MS);
    TT_WAIT_FOR(tr_bus_lag_get(s, "slow", &lag) == TR_OK && lag.events == 0, TT_DEADLINE_MS);
    end(sys, s);
}

static void test_unacknowledged_redelivered_in_order(void **state)
{
    (void)state;
    seen_reset(0);
    tr_system *sys = tt_system_workers(2);
    tr_store *s = open_store(sys, "redeliver", 100, 0);
    tr_pid pub, cons;
    assert_int_equal(tr_system_spawn(sys, &pub_b, s, &pub), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "r", cons, TR_BUS_FROM_STORED, 8), TR_OK);
    publish_n(sys, pub, 5, false);
    TT_WAIT_FOR(seen() >= 10, TT_DEADLINE_MS); /* the five, then the five again */
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(g_ids[i], i % 5 + 1);
        assert_int_equal(g_attempts[i], i < 5 ? 1 : 2);
    }
    pthread_mutex_unlock(&g_lock);
    end(sys, s);
}

static void test_next_consumer_after_one_ended(void **state)
{
    (void)state;
    seen_reset(3);
    tr_system *sys = tt_system_workers(2);
    tr_store *s = open_store(sys, "handover", 60000, 0);
    tr_pid pub, cons;
    assert_int_equal(tr_system_spawn(sys, &pub_b, s, &pub), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "h", cons, TR_BUS_FROM_STORED, 0), TR_OK);
    publish_n(sys, pub, 10, false);
    TT_WAIT_FOR(seen() == 10, TT_DEADLINE_MS);
    tr_bus_lag lag;
    TT_WAIT_FOR(tr_bus_lag_get(s, "h", &lag) == TR_OK && lag.offset == 3, TT_DEADLINE_MS);
    assert_int_equal(tr_system_exit(sys, cons, &(tr_reason){.kind = TR_REASON_KILLED}), TR_OK);
    tt_sleep_ms(20);
    publish_n(sys, pub, 1, false); /* delivery to the dead consumer fails: it is dropped */
    seen_reset(UINT64_MAX);
    tr_pid next;
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &next), TR_OK);
    assert_int_equal(subscribe(s, "h", next, TR_BUS_FROM_STORED, 0), TR_OK);
    TT_WAIT_FOR(seen() >= 8, TT_DEADLINE_MS); /* 4..10 and the 11th */
    pthread_mutex_lock(&g_lock);
    assert_int_equal(g_ids[0], 4);
    assert_int_equal(g_ids[7], 11);
    pthread_mutex_unlock(&g_lock);
    end(sys, s);
}

static void test_publish_outside_a_journal(void **state)
{
    (void)state;
    seen_reset(UINT64_MAX);
    tr_system *sys = tt_system_workers(1);
    tr_store *s = open_store(sys, "alone", 0, 0);
    tr_pid cons;
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(s, "x", cons, TR_BUS_FROM_STORED, 0), TR_OK);
    uint64_t v = 42;
    assert_int_equal(tr_bus_publish(s, "t.a", "k", &v, sizeof v), TR_OK);
    assert_int_equal(tr_bus_publish(s, "t.z", "k", &v, sizeof v), TR_OK);
    TT_WAIT_FOR(seen() == 1, TT_DEADLINE_MS);
    pthread_mutex_lock(&g_lock);
    assert_int_equal(g_vals[0], 42);
    pthread_mutex_unlock(&g_lock);
    end(sys, s);
}

static void test_bad_arguments_refused(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(1);
    tr_store *s = open_store(sys, "bad", 0, 0);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(tr_bus_publish(s, "", "k", "d", 1), TR_EINVAL);
    assert_int_equal(tr_bus_publish(s, big, "k", "d", 1), TR_EINVAL);
    assert_int_equal(tr_bus_publish(s, "t", big, "d", 1), TR_EINVAL);
    assert_int_equal(tr_bus_publish(s, "t", NULL, "d", 1), TR_EINVAL);
    assert_int_equal(tr_bus_publish(s, "t", "k", NULL, 1), TR_EINVAL);
    assert_int_equal(tr_bus_publish(NULL, "t", "k", "d", 1), TR_EINVAL);
    const char *nine[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    tr_bus_sub_opts so = {.name = "n", .topics = nine, .ntopics = 9, .consumer = 1};
    assert_int_equal(tr_bus_subscribe(s, &so), TR_EINVAL);
    so.ntopics = 0;
    assert_int_equal(tr_bus_subscribe(s, &so), TR_EINVAL);
    so.ntopics = 1;
    so.consumer = TR_PID_NONE;
    assert_int_equal(tr_bus_subscribe(s, &so), TR_EINVAL);
    so.consumer = 1;
    so.name = big;
    assert_int_equal(tr_bus_subscribe(s, &so), TR_EINVAL);
    so.name = "n";
    so.window = 1u << 20;
    assert_int_equal(tr_bus_subscribe(s, &so), TR_EINVAL);
    assert_int_equal(tr_bus_ack(s, "n", 0), TR_EINVAL);
    assert_int_equal(tr_bus_ack(s, "", 1), TR_EINVAL);
    tr_bus_event ev;
    tr_msg *m = tt_msg_u64(PUB, 1);
    assert_int_equal(tr_bus_read(m, &ev), TR_EINVAL);
    tr_msg_free(m);
    m = tr_msg_new(TR_MSG_BUS_EVENT, 8);
    tr_msg_put_u64(m, 1);
    assert_int_equal(tr_bus_read(m, &ev), TR_EBADMSG);
    tr_msg_free(m);
    end(sys, s);
}

/* Redis only: two stores on one server (two nodes of a cluster) share the log; a consumer of the
 * second sees what the first publishes, and the offset it acknowledges is the one stored. */
static void test_two_nodes_share_the_log(void **state)
{
    (void)state;
    seen_reset(UINT64_MAX);
    tr_system *sys = tt_system_workers(2);
    tr_store *a = open_store(sys, "a", 0, 0);
    tr_store *b = open_store(sys, "b", 0, 0); /* g_store: the consumer acknowledges here */
    tr_pid pub, cons;
    assert_int_equal(tr_system_spawn(sys, &pub_b, a, &pub), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &cons_b, NULL, &cons), TR_OK);
    assert_int_equal(subscribe(b, "other-node", cons, TR_BUS_FROM_STORED, 0), TR_OK);
    publish_n(sys, pub, 50, false);
    TT_WAIT_FOR(seen() == 50, TT_DEADLINE_MS);
    tr_bus_lag lag;
    TT_WAIT_FOR(tr_bus_lag_get(b, "other-node", &lag) == TR_OK && lag.offset == 50 &&
                    lag.events == 0,
                TT_DEADLINE_MS);
    assert_int_equal(lag.head, 50);
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_store_close(a);
    tr_store_close(b);
    tr_system_free(sys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_system_types_distinct),
        cmocka_unit_test_setup(test_delivered_in_order_only_its_topics, fresh),
        cmocka_unit_test_setup(test_offset_kept_across_reopen, fresh),
        cmocka_unit_test_setup(test_window_holds_back_and_lag_counts, fresh),
        cmocka_unit_test_setup(test_unacknowledged_redelivered_in_order, fresh),
        cmocka_unit_test_setup(test_next_consumer_after_one_ended, fresh),
        cmocka_unit_test_setup(test_publish_outside_a_journal, fresh),
        cmocka_unit_test_setup(test_bad_arguments_refused, fresh),
    };
    const struct CMUnitTest redis_only[] = {
        cmocka_unit_test_setup(test_two_nodes_share_the_log, fresh),
    };
    tt_apply_filter();
    int failed = cmocka_run_group_tests_name("bus-sqlite", tests, setup_dir, teardown_dir);
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("SKIPPED: the Redis half: redis-server is not installed\n");
        return failed;
    }
    failed += cmocka_run_group_tests_name("bus-redis", tests, setup_redis, teardown_dir);
    failed += cmocka_run_group_tests_name("bus-redis-only", redis_only, setup_redis, teardown_dir);
    return failed;
}
