/*
 * test_port.c — ports (troupe.h): requests from threads that are not actors, answered by a
 * callback on the runtime thread that delivers the answer. Every accepted request gets exactly
 * one callback — its reply, TR_ETIMEDOUT, or TR_ENOPROC when its target ends with it unanswered or
 * had ended (with the request itself when it was never read) — and a refused one (a bad message) none; requests from several threads at once all
 * come back.
 */
#include "test_util.h"

#include <pthread.h>

enum { MSG_DOUBLE = 1, MSG_SILENT = 2, MSG_ANSWER = 3, MSG_STOP = 4, MSG_LATE = 5, MSG_RELEASE = 6 };

#define NCOOKIES 20000

static struct {
    atomic_int ok, timeouts, noproc, bounced, stopped, other, bad_value;
    atomic_int seen[NCOOKIES];
    _Atomic uint64_t answered_ns[NCOOKIES];
} P;

static void reset(void)
{
    memset(&P, 0, sizeof P);
    tt_reset_failures();
}

/* Stops and joins the system, closes the port, then frees the system (the order a port needs). */
static void end_with_port(tr_system *sys, tr_port *p)
{
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_port_close(p);
    tr_system_free(sys);
}

/* cookie = the value asked for; a reply holds 2 * cookie */
static void on_answer(void *user, uint64_t cookie, int rc, const tr_msg *reply)
{
    (void)user;
    if (cookie < NCOOKIES) {
        atomic_fetch_add(&P.seen[cookie], 1);
        atomic_store(&P.answered_ns[cookie], tt_now_ns());
    }
    if (rc == TR_OK) {
        atomic_fetch_add(&P.ok, 1);
        if (reply == NULL || tt_read_u64(reply) != 2 * cookie)
            atomic_fetch_add(&P.bad_value, 1);
    } else if (rc == TR_ETIMEDOUT) {
        atomic_fetch_add(&P.timeouts, 1);
    } else if (rc == TR_ENOPROC) {
        atomic_fetch_add(&P.noproc, 1);
        if (reply != NULL) { /* the request itself, never read: as it was sent */
            if (tr_msg_type(reply) == MSG_SILENT && tt_read_u64(reply) == cookie)
                atomic_fetch_add(&P.bounced, 1);
            else
                atomic_fetch_add(&P.bad_value, 1);
        }
    } else if (rc == TR_ESTOPPED && reply == NULL) {
        atomic_fetch_add(&P.stopped, 1);
    } else {
        atomic_fetch_add(&P.other, 1);
    }
}

typedef struct server {
    tr_from held; /* MSG_LATE: answered on MSG_RELEASE */
    uint64_t held_value;
} server;

static int server_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    switch (tr_msg_type(m)) {
    case MSG_DOUBLE:
        TT_CHECK(tr_reply(ctx, m, tt_msg_u64(MSG_ANSWER, 2 * tt_read_u64(m))) == TR_OK);
        break;
    case MSG_LATE: /* answered only when the test says so (after the requester's timeout) */
        ((server *)state)->held = tr_msg_from(m);
        ((server *)state)->held_value = tt_read_u64(m);
        break;
    case MSG_RELEASE:
        TT_CHECK(tr_reply_from(ctx, ((server *)state)->held,
                               tt_msg_u64(MSG_ANSWER, 2 * ((server *)state)->held_value)) == TR_OK);
        break;
    case MSG_STOP:
        tr_stop(ctx);
        break;
    default:
        break;
    }
    return 0;
}

static const tr_behaviour server_beh = {.name = "server", .state_size = sizeof(server),
                                        .receive = server_receive};

/* A system with two workers, a server and a port. */
static tr_system *start(tr_pid *srv, tr_port **p)
{
    tr_system *sys = tt_system_workers(2);
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, srv), TR_OK);
    assert_int_equal(tr_port_open(sys, on_answer, NULL, p), TR_OK);
    return sys;
}

static void test_replies_come_back_once(void **state)
{
    (void)state;
    reset();
    tr_pid srv;
    tr_port *p;
    tr_system *sys = start(&srv, &p);
    for (uint64_t i = 0; i < 2000; i++)
        assert_int_equal(tr_port_request(p, srv, tt_msg_u64(MSG_DOUBLE, i), i % 2 ? 30000 : 0, i),
                         TR_OK);
    TT_WAIT_FOR(atomic_load(&P.ok) == 2000, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&P.ok), 2000);
    assert_int_equal(atomic_load(&P.bad_value), 0);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(atomic_load(&P.seen[i]), 1);
    assert_int_equal(tr_port_pending(p), 0);
    /* a dead pid: answered TR_ENOPROC by callback; a bad message: refused, no callback */
    assert_int_equal(tr_port_request(p, srv + 12345, tt_msg_u64(MSG_DOUBLE, 3000), 0, 3000),
                     TR_OK);
    TT_WAIT_FOR(atomic_load(&P.noproc) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&P.seen[3000]), 1);
    assert_int_equal(tr_port_request(p, srv, tr_msg_new(TR_MSG_TIMEOUT, 0), 0, 3001), TR_EINVAL);
    assert_int_equal(tr_port_request(p, srv, NULL, 0, 3002), TR_EINVAL);
    tt_sleep_ms(50);
    assert_int_equal(atomic_load(&P.seen[3001]), 0);
    assert_int_equal(atomic_load(&P.seen[3002]), 0);
    assert_int_equal(tr_port_pending(p), 0);
    /* never answered: the callback comes at close, TR_ESTOPPED */
    assert_int_equal(tr_port_request(p, srv, tt_msg_u64(MSG_SILENT, 4000), 0, 4000), TR_OK);
    TT_WAIT_FOR(tr_port_pending(p) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&P.seen[4000]), 0);
    end_with_port(sys, p);
    assert_int_equal(atomic_load(&P.seen[4000]), 1);
    assert_int_equal(atomic_load(&P.stopped), 1);
    tt_assert_no_failures();
}

static void test_timeout_then_late_reply(void **state)
{
    (void)state;
    reset();
    tr_pid srv;
    tr_port *p;
    tr_system *sys = start(&srv, &p);
    assert_int_equal(tr_port_request(p, srv, tt_msg_u64(MSG_SILENT, 1), 60, 1), TR_OK);
    assert_int_equal(tr_port_request(p, srv, tt_msg_u64(MSG_LATE, 2), 50, 2), TR_OK);
    TT_WAIT_FOR(atomic_load(&P.timeouts) == 2, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&P.timeouts), 2);
    /* now the late reply: counted as late, never a second callback */
    assert_int_equal(tr_system_send(sys, srv, tr_msg_new(MSG_RELEASE, 0)), TR_OK);
    TT_WAIT_FOR(tt_stats(sys).late_replies >= 1, TT_DEADLINE_MS);
    assert_true(tt_stats(sys).late_replies >= 1);
    tt_sleep_ms(100);
    assert_int_equal(atomic_load(&P.timeouts), 2);
    assert_int_equal(atomic_load(&P.seen[1]), 1);
    assert_int_equal(atomic_load(&P.seen[2]), 1);
    assert_int_equal(atomic_load(&P.ok), 0);
    assert_int_equal(tr_port_pending(p), 0);
    end_with_port(sys, p);
    tt_assert_no_failures();
}

/* Timeouts in no particular order (longer ones first, shorter ones later): each request times
 * out once, never before its deadline; requests without a timeout stay until the port closes. */
static void test_timeouts_in_any_order(void **state)
{
    (void)state;
    reset();
    tr_pid srv;
    tr_port *p;
    tr_system *sys = start(&srv, &p);
    enum { N = 300 };
    static uint64_t due[N];
    for (uint64_t i = 0; i < N; i++) {
        unsigned ms = i % 10 == 0 ? 0 : 20 + (unsigned)((i * 37) % 200);
        due[i] = tt_now_ns() + (uint64_t)ms * 1000000u;
        assert_int_equal(tr_port_request(p, srv, tt_msg_u64(MSG_SILENT, i), ms, i), TR_OK);
        if (i % 50 == 49)
            tt_sleep_ms(15); /* later requests' deadlines fall before earlier ones' */
    }
    TT_WAIT_FOR(atomic_load(&P.timeouts) == N - N / 10, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&P.timeouts), N - N / 10);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&P.seen[i]), i % 10 == 0 ? 0 : 1);
        if (i % 10 != 0)
            assert_true(atomic_load(&P.answered_ns[i]) >= due[i]);
    }
    assert_int_equal(tr_port_pending(p), N / 10);
    end_with_port(sys, p);
    assert_int_equal(atomic_load(&P.stopped), N / 10);
    assert_int_equal(atomic_load(&P.timeouts), N - N / 10);
    tt_assert_no_failures();
}

static void test_target_ends_with_request_queued(void **state)
{
    (void)state;
    reset();
    tr_system *sys = tt_system_workers(2);
    for (int i = 0; i < 50; i++) {
        tr_pid srv;
        assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &srv), TR_OK);
        tr_port *p;
        assert_int_equal(tr_port_open(sys, on_answer, NULL, &p), TR_OK);
        assert_int_equal(tr_system_send(sys, srv, tr_msg_new(MSG_STOP, 0)), TR_OK);
        /* queued behind the stop (then dropped: the port is told), or after the end */
        int rc = tr_port_request(p, srv, tt_msg_u64(MSG_SILENT, (uint64_t)i), 0, (uint64_t)i);
        assert_int_equal(rc, TR_OK);
        TT_WAIT_FOR(atomic_load(&P.seen[i]) == 1, TT_DEADLINE_MS);
        assert_int_equal(atomic_load(&P.seen[i]), 1);
        assert_int_equal(tr_port_pending(p), 0);
        TT_WAIT_FOR(!tr_system_alive(sys, srv), TT_DEADLINE_MS);
        tr_port_close(p); /* its one request is settled and its target gone: nothing can come */
    }
    assert_int_equal(atomic_load(&P.noproc), 50);
    /* each came back whole (TR_ENOPROC with the request: it may be sent again) */
    assert_int_equal(atomic_load(&P.bounced), 50);
    assert_int_equal(atomic_load(&P.bad_value), 0);
    assert_int_equal(atomic_load(&P.ok), 0);
    tt_system_end(sys);
    tt_assert_no_failures();
}

typedef struct asker {
    tr_port *p;
    tr_pid srv;
    int base, n;
} asker;

static void *asker_main(void *arg)
{
    asker *k = arg;
    for (int i = 0; i < k->n; i++)
        if (tr_port_request(k->p, k->srv, tt_msg_u64(MSG_DOUBLE, (uint64_t)(k->base + i)), 30000,
                            (uint64_t)(k->base + i)) != TR_OK)
            atomic_fetch_add(&P.other, 1);
    return NULL;
}

static void test_many_threads_one_port(void **state)
{
    (void)state;
    reset();
    tr_system *sys = tt_system_workers(2);
    tr_pid srv[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &srv[i]), TR_OK);
    tr_port *p;
    assert_int_equal(tr_port_open(sys, on_answer, NULL, &p), TR_OK);
    unsigned per = tt_scale(5000, 1000);
    asker k[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        k[i] = (asker){.p = p, .srv = srv[i], .base = i * (int)per, .n = (int)per};
        pthread_create(&th[i], NULL, asker_main, &k[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    TT_WAIT_FOR(atomic_load(&P.ok) == (int)(4 * per), TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&P.ok), 4 * per);
    assert_int_equal(atomic_load(&P.other), 0);
    assert_int_equal(atomic_load(&P.bad_value), 0);
    for (unsigned i = 0; i < 4 * per; i++)
        assert_int_equal(atomic_load(&P.seen[i]), 1);
    end_with_port(sys, p);
    tt_assert_no_failures();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_replies_come_back_once),
    cmocka_unit_test(test_timeout_then_late_reply),
    cmocka_unit_test(test_timeouts_in_any_order),
    cmocka_unit_test(test_target_ends_with_request_queued),
    cmocka_unit_test(test_many_threads_one_port),
};

TT_MAIN_PLAIN(tests)
