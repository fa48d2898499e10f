/*
 * test_guest.c — guests (tr_guest_*): an outside thread that runs the actors it wakes itself.
 *  - between enter and leave, an actor the guest thread wakes waits in the guest: no worker runs
 *    it (deterministic: nobody can see a guest's queue); leave runs it on the guest's thread;
 *  - what those actors wake runs there too (a port's callback included); the budget bounds the
 *    turns, and what is left goes to the workers, which finish it;
 *  - misuse is refused (entered twice, from an actor, after the system stops); spawns and ends
 *    under a guest are counted; an actor spawned "blocking" is left to the workers.
 */
#include "test_util.h"

#include <pthread.h>

enum { MSG_HIT = 1, MSG_FWD = 2, MSG_LOOP = 3, MSG_SPAWN = 4, MSG_ECHO = 5, MSG_TRY = 6 };

static struct {
    atomic_int runs;
    atomic_int on_guest;      /* receives that ran on the test's (guest) thread */
    atomic_int on_other;      /* ... on another thread */
    atomic_int loops_left;
    atomic_int loops_done;
    atomic_int enter_rc;
    atomic_int port_calls;
    atomic_int port_on_guest;
    pthread_t main;
} G;

static void reset(void)
{
    memset(&G, 0, sizeof G);
    G.main = pthread_self();
    tt_reset_failures();
}

static void note_thread(void)
{
    if (pthread_equal(pthread_self(), G.main))
        atomic_fetch_add(&G.on_guest, 1);
    else
        atomic_fetch_add(&G.on_other, 1);
}

static const tr_behaviour child_beh;

static int child_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    (void)m;
    tr_stop(ctx);
    return 0;
}

static const tr_behaviour child_beh = {.name = "child", .receive = child_receive};

static tr_guest *G_guest; /* for MSG_TRY: an actor tries to enter a guest */

static int probe_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    atomic_fetch_add(&G.runs, 1);
    note_thread();
    switch (tr_msg_type(m)) {
    case MSG_FWD: /* wakes another actor: it runs where this one runs */
        TT_CHECK(tr_send(ctx, (tr_pid)tt_read_u64(m), tt_msg_u64(MSG_HIT, 0)) == TR_OK);
        break;
    case MSG_LOOP: /* keeps itself busy: one message to itself per receive */
        if (atomic_fetch_sub(&G.loops_left, 1) > 1)
            TT_CHECK(tr_send(ctx, tr_self(ctx), tt_msg_u64(MSG_LOOP, 0)) == TR_OK);
        else
            atomic_store(&G.loops_done, 1);
        break;
    case MSG_SPAWN: {
        tr_pid c;
        TT_CHECK(tr_spawn(ctx, &child_beh, NULL, &c) == TR_OK);
        TT_CHECK(tr_send(ctx, c, tt_msg_u64(MSG_HIT, 0)) == TR_OK);
        break;
    }
    case MSG_ECHO:
        TT_CHECK(tr_reply(ctx, m, tt_msg_u64(MSG_ECHO, tt_read_u64(m) + 1)) == TR_OK);
        break;
    case MSG_TRY:
        atomic_store(&G.enter_rc, tr_guest_enter(G_guest));
        break;
    default:
        break;
    }
    return 0;
}

static const tr_behaviour probe_beh = {.name = "probe", .receive = probe_receive};

static tr_pid spawn_probe(tr_system *sys)
{
    tr_pid p;
    assert_int_equal(tr_system_spawn(sys, &probe_beh, NULL, &p), TR_OK);
    return p;
}

/* Outside the bracket the actor runs on a worker; inside, it waits for leave and runs here,
 * with the actor it wakes. */
static void test_guest_runs_what_it_wakes(void **state)
{
    (void)state;
    reset();
    tr_system *sys = tt_system_workers(2);
    tr_guest *g;
    assert_int_equal(tr_guest_new(sys, &g), TR_OK);
    tr_pid w = spawn_probe(sys);
    assert_int_equal(tr_system_send(sys, w, tt_msg_u64(MSG_HIT, 0)), TR_OK);
    TT_WAIT_FOR(atomic_load(&G.runs) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&G.on_other), 1); /* no guest: a worker ran it */

    /* fresh actors: one that just ran may still be ending its turn on a worker, which would
     * then run the message itself (as it should) */
    tr_pid a = spawn_probe(sys), b = spawn_probe(sys);
    assert_int_equal(tr_guest_enter(g), TR_OK);
    assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_FWD, b)), TR_OK);
    for (int i = 0; i < 1000; i++) /* nobody else can see it: it does not run meanwhile */
        sched_yield();
    assert_int_equal(atomic_load(&G.runs), 1);
    unsigned turns = tr_guest_leave(g, 100);
    assert_int_equal(turns, 2);                     /* a, then b which a woke */
    assert_int_equal(atomic_load(&G.runs), 3);
    assert_int_equal(atomic_load(&G.on_guest), 2);
    assert_int_equal(tr_guest_leave(g, 100), 0);    /* not entered any more */

    tr_guest_free(g);
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* An actor that keeps itself busy does not keep the guest past its budget: the rest goes to the
 * workers, which finish it. */
static void test_guest_budget_hands_the_rest_to_workers(void **state)
{
    (void)state;
    reset();
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 2;
    o.msgs_per_turn = 4;
    o.drain_timeout_ms = 120000;
    tr_system *sys = tt_system_start(&o);
    tr_guest *g;
    assert_int_equal(tr_guest_new(sys, &g), TR_OK);
    tr_pid a = spawn_probe(sys);
    atomic_store(&G.loops_left, 1000);
    assert_int_equal(tr_guest_enter(g), TR_OK);
    assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_LOOP, 0)), TR_OK);
    assert_int_equal(tr_guest_leave(g, 3), 3);
    /* three turns of at most msgs_per_turn messages ran here; workers do the rest */
    assert_in_range(atomic_load(&G.on_guest), 3, 12);
    TT_WAIT_FOR(atomic_load(&G.loops_done) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&G.runs), 1000);
    assert_true(atomic_load(&G.on_other) > 0);
    tr_guest_free(g);
    tt_system_end(sys);
    tt_assert_no_failures();
}

static void on_port(void *user, uint64_t cookie, int rc, const tr_msg *reply)
{
    (void)user;
    TT_CHECK(rc == TR_OK && cookie == 7 && reply != NULL && tt_read_u64(reply) == 42);
    if (pthread_equal(pthread_self(), G.main))
        atomic_fetch_add(&G.port_on_guest, 1);
    atomic_fetch_add(&G.port_calls, 1);
}

/* A port request made in the bracket: the target and the port's callback both run in leave. */
static void test_guest_port_round_trip_on_one_thread(void **state)
{
    (void)state;
    reset();
    tr_system *sys = tt_system_workers(2);
    tr_guest *g;
    assert_int_equal(tr_guest_new(sys, &g), TR_OK);
    tr_port *port;
    assert_int_equal(tr_port_open(sys, on_port, NULL, &port), TR_OK);
    tr_pid a = spawn_probe(sys);
    assert_int_equal(tr_guest_enter(g), TR_OK);
    assert_int_equal(tr_port_request(port, a, tt_msg_u64(MSG_ECHO, 41), 0, 7), TR_OK);
    assert_int_equal(atomic_load(&G.port_calls), 0);
    tr_guest_leave(g, 16);
    assert_int_equal(atomic_load(&G.port_calls), 1);
    assert_int_equal(atomic_load(&G.port_on_guest), 1);
    assert_int_equal(atomic_load(&G.on_guest), 1);
    tr_guest_free(g);
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_port_close(port);
    tr_system_free(sys);
    tt_assert_no_failures();
}

/* Misuse is refused; spawns and ends under a guest are counted in the system's stats. */
static void test_guest_misuse_and_counts(void **state)
{
    (void)state;
    reset();
    tr_system *sys = tt_system_workers(2);
    tr_guest *g, *h;
    assert_int_equal(tr_guest_new(NULL, &g), TR_EINVAL);
    assert_int_equal(tr_guest_new(sys, NULL), TR_EINVAL);
    assert_int_equal(tr_guest_enter(NULL), TR_EINVAL);
    assert_int_equal(tr_guest_new(sys, &g), TR_OK);
    assert_int_equal(tr_guest_new(sys, &h), TR_OK);
    G_guest = h;
    tr_pid a = spawn_probe(sys);

    /* an actor (on a worker) cannot become a guest */
    assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_TRY, 0)), TR_OK);
    TT_WAIT_FOR(atomic_load(&G.runs) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&G.enter_rc), TR_ESTATE);

    a = spawn_probe(sys); /* fresh: see test_guest_runs_what_it_wakes */
    uint64_t spawned = tt_stats(sys).spawned, ended = tt_stats(sys).ended;
    assert_int_equal(tr_guest_enter(g), TR_OK);
    assert_int_equal(tr_guest_enter(g), TR_ESTATE); /* already a guest */
    assert_int_equal(tr_guest_enter(h), TR_ESTATE); /* one guest per thread at a time */
    assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_SPAWN, 0)), TR_OK);
    assert_int_equal(tr_guest_leave(g, 100), 2); /* a, then the child it spawned, which ends */
    assert_int_equal(tt_stats(sys).spawned, spawned + 1);
    assert_int_equal(tt_stats(sys).ended, ended + 1);

    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    assert_int_equal(tr_guest_enter(g), TR_ESTOPPED);
    tr_guest_free(g);
    tr_guest_free(h);
    tr_system_free(sys);
    tt_assert_no_failures();
}

/* An actor spawned with opts.blocking is never run by a guest: a worker runs it at once. */
static void test_guest_never_runs_a_blocking_actor(void **state)
{
    (void)state;
    reset();
    tr_system *sys = tt_system_workers(2);
    tr_guest *g;
    assert_int_equal(tr_guest_new(sys, &g), TR_OK);
    tr_spawn_opts so = {.blocking = true};
    tr_pid a, b = spawn_probe(sys);
    assert_int_equal(tr_system_spawn_ex(sys, &probe_beh, NULL, &so, &a), TR_OK);
    assert_int_equal(tr_guest_enter(g), TR_OK);
    assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_HIT, 0)), TR_OK);
    TT_WAIT_FOR(atomic_load(&G.runs) == 1, TT_DEADLINE_MS); /* during the bracket */
    assert_int_equal(atomic_load(&G.on_other), 1);
    assert_int_equal(tr_system_send(sys, b, tt_msg_u64(MSG_HIT, 0)), TR_OK); /* b may run here */
    assert_int_equal(tr_guest_leave(g, 16), 1);
    assert_int_equal(atomic_load(&G.on_guest), 1);
    tr_guest_free(g);
    tt_system_end(sys);
    tt_assert_no_failures();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_guest_runs_what_it_wakes),
    cmocka_unit_test(test_guest_budget_hands_the_rest_to_workers),
    cmocka_unit_test(test_guest_port_round_trip_on_one_thread),
    cmocka_unit_test(test_guest_misuse_and_counts),
    cmocka_unit_test(test_guest_never_runs_a_blocking_actor),
};

TT_MAIN_PLAIN(tests)
