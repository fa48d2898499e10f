/*
 * test_sched.c — the scheduler's guarantees, whatever its internals:
 *  - an actor never runs on two threads at once ("inside" counter in each receive), with many
 *    targets hammered concurrently by outside threads and by actors;
 *  - every message is delivered, in order per sender (outside threads and actors);
 *  - a graceful stop drains queued messages (also actor-to-actor ones) before terminate runs,
 *    with 1, 2 and 4 workers;
 *  - fairness: with one worker, an actor with a huge backlog, or a ping-pong pair that never
 *    goes idle, does not starve another actor.
 */
#include "test_util.h"

#include <pthread.h>
#include <sched.h>

enum { MSG_SEQ = 1, MSG_GO = 2, MSG_CONT = 3, MSG_TOKEN = 4, MSG_PING = 5 };

#define MAX_SENDERS 16

/* ---- many senders, many targets ------------------------------------------------------------ */

static struct {
    unsigned ntargets, nsenders, rounds;
    tr_pid *targets;
    atomic_ullong total;        /* messages received by all targets */
    atomic_long double_runs;    /* receive entered while another thread was inside */
    atomic_long order_errors;   /* a sender's sequence number out of order */
    atomic_long terminated_ok;  /* targets whose final counts were complete */
    atomic_long terminated;
    atomic_int go;              /* releases the outside sender threads */
} S;

typedef struct target_state {
    atomic_int inside;
    uint64_t count;
    uint64_t next[MAX_SENDERS]; /* plain memory: the runtime must order consecutive turns */
} target_state;

static int target_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    target_state *t = state;
    if (atomic_fetch_add(&t->inside, 1) != 0)
        atomic_fetch_add(&S.double_runs, 1);
    uint64_t v[2] = {UINT64_MAX, UINT64_MAX};
    TT_CHECK(tr_msg_type(m) == MSG_SEQ);
    TT_CHECK(tt_read_u64s(m, 2, v) == TR_OK);
    if (v[0] < MAX_SENDERS) {
        if (v[1] != t->next[v[0]])
            atomic_fetch_add(&S.order_errors, 1);
        t->next[v[0]] = v[1] + 1;
    }
    t->count++;
    for (volatile int spin = 0; spin < 50; spin++) {
    } /* widen the window a second runner would hit */
    atomic_fetch_add(&S.total, 1);
    atomic_fetch_sub(&t->inside, 1);
    return 0;
}

static void target_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    target_state *t = state;
    TT_CHECK(reason->kind == TR_REASON_SHUTDOWN);
    bool ok = t->count == (uint64_t)S.nsenders * S.rounds;
    for (unsigned s = 0; s < S.nsenders; s++)
        ok = ok && t->next[s] == S.rounds;
    if (ok)
        atomic_fetch_add(&S.terminated_ok, 1);
    atomic_fetch_add(&S.terminated, 1);
}

static const tr_behaviour target_beh = {
    .name = "target",
    .state_size = sizeof(target_state),
    .receive = target_receive,
    .terminate = target_terminate,
};

static tr_msg *seq_msg(uint64_t sender, uint64_t seq)
{
    uint64_t v[2] = {sender, seq};
    return tt_msg_u64s(MSG_SEQ, 2, v);
}

/* An actor sender: sends `rounds` rounds (one message to every target each), a few rounds per
 * turn, then a message to itself to continue, so it interleaves with everything else. */
typedef struct actor_sender {
    uint64_t id;
    uint64_t round;
} actor_sender;

static int actor_sender_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    actor_sender *a = state;
    if (tr_msg_type(m) == MSG_GO)
        a->id = tt_read_u64(m);
    unsigned per_turn = S.ntargets >= 500 ? 1 : 500 / S.ntargets;
    for (unsigned k = 0; k < per_turn && a->round < S.rounds; k++, a->round++) {
        unsigned start = (unsigned)(a->id * 7919u) % S.ntargets;
        for (unsigned i = 0; i < S.ntargets; i++) {
            int rc = tr_send(ctx, S.targets[(start + i) % S.ntargets], seq_msg(a->id, a->round));
            TT_CHECK(rc == TR_OK);
        }
    }
    if (a->round < S.rounds)
        TT_CHECK(tr_send(ctx, tr_self(ctx), tr_msg_new(MSG_CONT, 0)) == TR_OK);
    return 0;
}

static const tr_behaviour actor_sender_beh = {
    .name = "actor-sender",
    .state_size = sizeof(actor_sender),
    .receive = actor_sender_receive,
};

typedef struct thread_sender {
    tr_system *sys;
    uint64_t id;
} thread_sender;

static void *thread_sender_main(void *p)
{
    thread_sender *ts = p;
    while (!atomic_load(&S.go))
        sched_yield();
    unsigned start = (unsigned)(ts->id * 104729u) % S.ntargets;
    for (uint64_t r = 0; r < S.rounds; r++)
        for (unsigned i = 0; i < S.ntargets; i++) {
            int rc = tr_system_send(ts->sys, S.targets[(start + i) % S.ntargets], seq_msg(ts->id, r));
            TT_CHECK(rc == TR_OK);
        }
    return NULL;
}

static void run_many_senders(unsigned workers, unsigned msgs_per_turn, unsigned ntargets,
                             unsigned nthreads, unsigned nactors, unsigned rounds)
{
    assert_true(nthreads + nactors <= MAX_SENDERS);
    tt_reset_failures();
    memset(&S, 0, sizeof S);
    S.ntargets = ntargets;
    S.nsenders = nthreads + nactors;
    S.rounds = rounds;
    S.targets = calloc(ntargets, sizeof *S.targets);
    assert_non_null(S.targets);

    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = workers;
    o.msgs_per_turn = msgs_per_turn;
    o.drain_timeout_ms = 120000;
    tr_system *sys = tt_system_start(&o);
    for (unsigned i = 0; i < ntargets; i++)
        assert_int_equal(tr_system_spawn(sys, &target_beh, NULL, &S.targets[i]), TR_OK);

    pthread_t th[MAX_SENDERS];
    thread_sender ts[MAX_SENDERS];
    for (unsigned i = 0; i < nthreads; i++) {
        ts[i] = (thread_sender){.sys = sys, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, thread_sender_main, &ts[i]), 0);
    }
    for (unsigned i = 0; i < nactors; i++) {
        tr_pid a;
        assert_int_equal(tr_system_spawn(sys, &actor_sender_beh, NULL, &a), TR_OK);
        assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_GO, nthreads + i)), TR_OK);
    }
    atomic_store(&S.go, 1);
    for (unsigned i = 0; i < nthreads; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);

    const uint64_t expected = (uint64_t)ntargets * S.nsenders * rounds;
    TT_WAIT_FOR(atomic_load(&S.total) >= expected, TT_DEADLINE_MS);
    tt_sleep_ms(10);
    assert_int_equal(atomic_load(&S.total), expected); /* and not more */
    assert_int_equal(atomic_load(&S.double_runs), 0);
    assert_int_equal(atomic_load(&S.order_errors), 0);
    tr_system_stats st = tt_stats(sys);
    print_message("%u workers: %llu messages, %llu steals, %llu parks\n", workers,
                  (unsigned long long)expected, (unsigned long long)st.steals,
                  (unsigned long long)st.parks);
    assert_int_equal(st.dead_letters, 0);
    tt_system_end(sys);
    assert_int_equal(atomic_load(&S.terminated), ntargets);
    assert_int_equal(atomic_load(&S.terminated_ok), ntargets);
    tt_assert_no_failures();
    free(S.targets);
}

/* 1000 actors, 3 outside threads and 3 actors sending to all of them concurrently. */
static void test_no_double_run_2_workers(void **state)
{
    (void)state;
    run_many_senders(2, 0, tt_scale(1000, 200), 3, 3, tt_scale(20, 5));
}

static void test_no_double_run_4_workers(void **state)
{
    (void)state;
    run_many_senders(4, 0, tt_scale(1000, 200), 3, 3, tt_scale(20, 5));
}

/* One message per turn: every message is a scheduling round trip. */
static void test_no_double_run_one_msg_per_turn(void **state)
{
    (void)state;
    run_many_senders(3, 1, tt_scale(300, 100), 2, 2, tt_scale(20, 5));
}

/* Few targets, long streams: per-sender FIFO under contention on one mailbox. */
static void test_fifo_per_sender(void **state)
{
    (void)state;
    run_many_senders(4, 0, 2, 4, 4, tt_scale(10000, 2000));
}

/* ---- stop drains --------------------------------------------------------------------------- */

enum { RELAYS = 8 };

static struct {
    tr_pid sink;
    unsigned per_relay;
    atomic_long relay_ok, sink_ok, terminated, order_errors;
    atomic_ullong sink_count;
} D;

typedef struct relay_state {
    uint64_t count;
} relay_state;

/* Counts and forwards every message to the sink (the same message object). */
static int relay_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    relay_state *r = state;
    uint64_t v[2];
    TT_CHECK(tt_read_u64s(m, 2, v) == TR_OK);
    if (v[1] != r->count)
        atomic_fetch_add(&D.order_errors, 1);
    r->count++;
    TT_CHECK(tr_send(ctx, D.sink, m) == TR_OK);
    return 0;
}

static void relay_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    relay_state *r = state;
    TT_CHECK(reason->kind == TR_REASON_SHUTDOWN);
    if (r->count == D.per_relay)
        atomic_fetch_add(&D.relay_ok, 1);
    atomic_fetch_add(&D.terminated, 1);
}

static const tr_behaviour relay_beh = {
    .name = "relay",
    .state_size = sizeof(relay_state),
    .receive = relay_receive,
    .terminate = relay_terminate,
};

static int sink_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)m;
    ((relay_state *)state)->count++;
    return 0;
}

static void sink_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    TT_CHECK(reason->kind == TR_REASON_SHUTDOWN);
    atomic_store(&D.sink_count, ((relay_state *)state)->count);
    if (((relay_state *)state)->count == (uint64_t)D.per_relay * RELAYS)
        atomic_fetch_add(&D.sink_ok, 1);
    atomic_fetch_add(&D.terminated, 1);
}

static const tr_behaviour sink_beh = {
    .name = "sink",
    .state_size = sizeof(relay_state),
    .receive = sink_receive,
    .terminate = sink_terminate,
};

static void run_stop_drains(unsigned workers)
{
    tt_reset_failures();
    memset(&D, 0, sizeof D);
    D.per_relay = tt_scale(20000, 4000);
    tr_system *sys = tt_system_workers(workers); /* drain timeout: 120 s */
    tr_pid relays[RELAYS];
    assert_int_equal(tr_system_spawn(sys, &sink_beh, NULL, &D.sink), TR_OK);
    for (unsigned i = 0; i < RELAYS; i++)
        assert_int_equal(tr_system_spawn(sys, &relay_beh, NULL, &relays[i]), TR_OK);
    for (unsigned k = 0; k < D.per_relay; k++)
        for (unsigned i = 0; i < RELAYS; i++)
            assert_int_equal(tr_system_send(sys, relays[i], seq_msg(i, k)), TR_OK);
    /* stop at once: most messages are still queued */
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_system_stats st = tt_stats(sys);
    tr_system_free(sys);
    print_message("%u workers: sink got %llu of %u\n", workers,
                  (unsigned long long)atomic_load(&D.sink_count), D.per_relay * RELAYS);
    assert_int_equal(atomic_load(&D.terminated), RELAYS + 1);
    assert_int_equal(atomic_load(&D.relay_ok), RELAYS);
    assert_int_equal(atomic_load(&D.sink_ok), 1);
    assert_int_equal(atomic_load(&D.order_errors), 0);
    assert_int_equal(st.dead_letters, 0);
    assert_int_equal(st.spawned, RELAYS + 1);
    assert_int_equal(st.ended, RELAYS + 1);
    tt_assert_no_failures();
}

static void test_stop_drains_1_worker(void **state)
{
    (void)state;
    run_stop_drains(1);
}

static void test_stop_drains_2_workers(void **state)
{
    (void)state;
    run_stop_drains(2);
}

static void test_stop_drains_4_workers(void **state)
{
    (void)state;
    run_stop_drains(4);
}

/* ---- fairness ------------------------------------------------------------------------------ */

static struct {
    atomic_int a_inside, gate, b_ran, stop;
    atomic_ullong a_count, b_saw_a;
    atomic_ullong pings;
} F;

/* A: blocks its (only) worker on the first message until the test has queued its backlog. */
static int flooded_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    if (atomic_load(&F.a_count) == 0) {
        atomic_store(&F.a_inside, 1);
        uint64_t deadline = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
        while (!atomic_load(&F.gate) && tt_now_ns() < deadline)
            tt_sleep_ms(1);
    }
    atomic_fetch_add(&F.a_count, 1);
    return 0;
}

static const tr_behaviour flooded_beh = {.name = "flooded", .receive = flooded_receive};

static int bystander_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    atomic_store(&F.b_saw_a, atomic_load(&F.a_count));
    atomic_store(&F.b_ran, 1);
    return 0;
}

static const tr_behaviour bystander_beh = {.name = "bystander", .receive = bystander_receive};

static void test_fairness_backlog(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    const unsigned n = tt_scale(100000, 20000);
    tr_system *sys = tt_system_workers(1);
    tr_pid a, b;
    assert_int_equal(tr_system_spawn(sys, &flooded_beh, NULL, &a), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &bystander_beh, NULL, &b), TR_OK);
    assert_int_equal(tr_system_send(sys, a, tr_msg_new(MSG_SEQ, 0)), TR_OK);
    TT_WAIT_FOR(atomic_load(&F.a_inside) == 1, TT_DEADLINE_MS);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(tr_system_send(sys, a, tr_msg_new(MSG_SEQ, 0)), TR_OK);
    assert_int_equal(tr_system_send(sys, b, tr_msg_new(MSG_SEQ, 0)), TR_OK);
    atomic_store(&F.gate, 1);
    TT_WAIT_FOR(atomic_load(&F.b_ran) == 1, TT_DEADLINE_MS);
    TT_WAIT_FOR(atomic_load(&F.a_count) == n + 1, TT_DEADLINE_MS);
    print_message("B ran after A had handled %llu of %u messages\n",
                  (unsigned long long)atomic_load(&F.b_saw_a), n + 1);
    assert_true(atomic_load(&F.b_saw_a) < n + 1);
    tt_system_end(sys);
}

/* A ping-pong pair that never goes idle (each reply makes the other runnable at once, from the
 * worker itself) must not starve an actor woken from outside. */
static int pinger_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    atomic_fetch_add(&F.pings, 1);
    if (atomic_load(&F.stop))
        return 0;
    tr_pid peer = tr_msg_sender(m) != TR_PID_NONE ? tr_msg_sender(m) : (tr_pid)tt_read_u64(m);
    TT_CHECK(tr_send(ctx, peer, tr_msg_new(MSG_PING, 0)) == TR_OK);
    return 0;
}

static const tr_behaviour pinger_beh = {.name = "pinger", .receive = pinger_receive};

static void test_fairness_ping_pong(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    tt_reset_failures();
    tr_system *sys = tt_system_workers(1);
    tr_pid p1, p2, b;
    assert_int_equal(tr_system_spawn(sys, &pinger_beh, NULL, &p1), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &pinger_beh, NULL, &p2), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &bystander_beh, NULL, &b), TR_OK);
    assert_int_equal(tr_system_send(sys, p1, tt_msg_u64(MSG_PING, p2)), TR_OK);
    TT_WAIT_FOR(atomic_load(&F.pings) > 1000, TT_DEADLINE_MS);
    for (int k = 0; k < 3; k++) {
        atomic_store(&F.b_ran, 0);
        assert_int_equal(tr_system_send(sys, b, tr_msg_new(MSG_SEQ, 0)), TR_OK);
        TT_WAIT_FOR(atomic_load(&F.b_ran) == 1, TT_DEADLINE_MS);
    }
    uint64_t pings = atomic_load(&F.pings);
    TT_WAIT_FOR(atomic_load(&F.pings) > pings, TT_DEADLINE_MS); /* the pair still runs */
    atomic_store(&F.stop, 1);
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- outside senders racing with the graceful stop ----------------------------------------- */

static struct {
    tr_pid targets[64];
    atomic_int go, stop_sending;
    atomic_long sent_ok, refused, noproc, received, terminated, bad_rc, dead_letters;
} J;

static int counting_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    atomic_fetch_add(&J.received, 1);
    return 0;
}

static void counting_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    (void)state;
    TT_CHECK(reason->kind == TR_REASON_SHUTDOWN);
    atomic_fetch_add(&J.terminated, 1);
}

static const tr_behaviour counting_beh = {
    .name = "counting",
    .receive = counting_receive,
    .terminate = counting_terminate,
};

static void *racing_sender_main(void *arg)
{
    tr_system *sys = arg;
    while (!atomic_load(&J.go))
        sched_yield();
    for (unsigned i = 0; !atomic_load(&J.stop_sending); i++) {
        int rc = tr_system_send(sys, J.targets[i % 64], tr_msg_new(MSG_SEQ, 0));
        if (rc == TR_OK)
            atomic_fetch_add(&J.sent_ok, 1);
        else if (rc == TR_ESTOPPED)
            atomic_fetch_add(&J.refused, 1);
        else if (rc == TR_ENOPROC)
            atomic_fetch_add(&J.noproc, 1); /* its target already ended at shutdown: a dead letter */
        else
            atomic_fetch_add(&J.bad_rc, 1);
    }
    return NULL;
}

static void count_dead_letter(void *user, tr_pid to, const tr_msg *m)
{
    (void)user;
    (void)to;
    (void)m;
    atomic_fetch_add(&J.dead_letters, 1);
}

/* One round: outside threads keep sending while the system stops, joins and is freed. Returns
 * the number of accepted sends that were neither received nor reported as dead letters. */
static long senders_during_join_round(int round, int nthreads)
{
    memset(&J, 0, sizeof J);
    tt_reset_failures();
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 2;
    o.drain_timeout_ms = 120000;
    o.dead_letter_hook = count_dead_letter;
    tr_system *sys = tt_system_start(&o);
    for (unsigned i = 0; i < 64; i++)
        assert_int_equal(tr_system_spawn(sys, &counting_beh, NULL, &J.targets[i]), TR_OK);
    pthread_t th[32];
    assert_true(nthreads <= 32);
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_create(&th[t], NULL, racing_sender_main, sys), 0);
    atomic_store(&J.go, 1);
    tt_sleep_ms((unsigned)(round % 3));
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    /* senders still running now are refused: wait for one to see it (not for a time window) */
    TT_WAIT_FOR(atomic_load(&J.refused) > 0, TT_DEADLINE_MS);
    atomic_store(&J.stop_sending, 1);
    for (int t = 0; t < nthreads; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    tr_system_free(sys); /* messages still held anywhere are reported here at the latest */
    assert_int_equal(atomic_load(&J.bad_rc), 0);
    assert_int_equal(atomic_load(&J.terminated), 64);
    assert_true(atomic_load(&J.refused) > 0);
    tt_assert_no_failures();
    /* ENOPROC sends are dead letters too */
    long accounted = atomic_load(&J.received) + atomic_load(&J.dead_letters);
    long expected = atomic_load(&J.sent_ok) + atomic_load(&J.noproc);
    assert_true(accounted <= expected);
    if (accounted != expected)
        print_message("round %d: %ld sends accepted (+%ld ENOPROC), %ld received, %ld dead letters\n",
                      round, atomic_load(&J.sent_ok), atomic_load(&J.noproc),
                      atomic_load(&J.received), atomic_load(&J.dead_letters));
    return expected - accounted;
}

/* Outside threads sending while the system stops: every send is refused (TR_ESTOPPED), refused
 * as a dead letter (TR_ENOPROC: its target already ended), received or a dead letter (the exact count: test_actor_internal.c, bug_message_pushed_after_end_is_lost_silently); every actor ends
 * exactly once; nothing leaks or crashes. */
static void test_outside_senders_during_join(void **state)
{
    (void)state;
    const int rounds = (int)tt_scale(20, 5);
    for (int round = 0; round < rounds; round++)
        senders_during_join_round(round, 3);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_no_double_run_2_workers),
    cmocka_unit_test(test_no_double_run_4_workers),
    cmocka_unit_test(test_no_double_run_one_msg_per_turn),
    cmocka_unit_test(test_fifo_per_sender),
    cmocka_unit_test(test_stop_drains_1_worker),
    cmocka_unit_test(test_stop_drains_2_workers),
    cmocka_unit_test(test_stop_drains_4_workers),
    cmocka_unit_test(test_fairness_backlog),
    cmocka_unit_test(test_fairness_ping_pong),
    cmocka_unit_test(test_outside_senders_during_join),
};

TT_MAIN_PLAIN(tests)
