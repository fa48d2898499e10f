/*
 * test_spawn_many.c — 100,000 actors: spawned from the main thread and from inside an actor,
 * each receives one message and stops (stats: spawned == ended, alive == 0); and 100,000 idle
 * actors still alive at tr_system_join, each of whose terminate runs exactly once with
 * TR_REASON_SHUTDOWN. Run under ASan, LeakSanitizer checks that nothing leaks.
 */
#include "test_util.h"

enum { MSG_HELLO = 1, MSG_GO = 2, MSG_CONT = 3 };

static struct {
    atomic_ullong received, terminated, wrong_reason;
    atomic_int spawner_done;
    unsigned n;
    atomic_uchar *term_count; /* per idle actor */
} M;

static void reset(unsigned n)
{
    M.n = n;
    atomic_store(&M.received, 0);
    atomic_store(&M.terminated, 0);
    atomic_store(&M.wrong_reason, 0);
    atomic_store(&M.spawner_done, 0);
    tt_reset_failures();
}

/* ---- one message, then stop ---------------------------------------------------------------- */

typedef struct oneshot {
    uint64_t got;
    char pad[40]; /* 48 bytes: the header's inline state */
} oneshot;

static int oneshot_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    oneshot *o = state;
    TT_CHECK(tr_msg_type(m) == MSG_HELLO);
    o->got++;
    atomic_fetch_add(&M.received, 1);
    tr_stop(ctx);
    return 0;
}

static void oneshot_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    oneshot *o = state;
    if (reason->kind != TR_REASON_NORMAL || o->got != 1)
        atomic_fetch_add(&M.wrong_reason, 1);
    atomic_fetch_add(&M.terminated, 1);
}

static const tr_behaviour oneshot_beh = {
    .name = "oneshot",
    .state_size = sizeof(oneshot),
    .receive = oneshot_receive,
    .terminate = oneshot_terminate,
};

static void test_spawn_many_from_main(void **state)
{
    (void)state;
    const unsigned n = tt_scale(100000, 20000);
    reset(n);
    tr_system *sys = tt_system_workers(2);
    tr_pid *pids = malloc(n * sizeof *pids);
    assert_non_null(pids);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(tr_system_spawn(sys, &oneshot_beh, NULL, &pids[i]), TR_OK);
    tr_system_stats s = tt_stats(sys);
    assert_int_equal(s.spawned, n);
    assert_int_equal(s.alive, n);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(tr_system_send(sys, pids[i], tr_msg_new(MSG_HELLO, 0)), TR_OK);
    TT_WAIT_FOR(tt_stats(sys).ended == n, TT_DEADLINE_MS);
    s = tt_stats(sys);
    assert_int_equal(s.spawned, n);
    assert_int_equal(s.ended, n);
    assert_int_equal(s.alive, 0);
    assert_int_equal(s.dead_letters, 0);
    assert_int_equal(atomic_load(&M.received), n);
    assert_int_equal(atomic_load(&M.terminated), n);
    assert_int_equal(atomic_load(&M.wrong_reason), 0);
    for (unsigned i = 0; i < n; i += 997)
        assert_false(tr_system_alive(sys, pids[i]));
    tt_system_end(sys);
    assert_int_equal(atomic_load(&M.terminated), n); /* nobody ends twice */
    free(pids);
    tt_assert_no_failures();
}

/* ---- spawned by an actor ------------------------------------------------------------------- */

typedef struct spawner {
    unsigned spawned;
} spawner;

/* Spawns 1000 children per turn (and greets each), then continues with a message to itself. */
static int spawner_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)m;
    spawner *sp = state;
    for (unsigned k = 0; k < 1000 && sp->spawned < M.n; k++, sp->spawned++) {
        tr_pid child;
        int rc = tr_spawn(ctx, &oneshot_beh, NULL, &child);
        TT_CHECK(rc == TR_OK);
        if (rc == TR_OK)
            TT_CHECK(tr_send(ctx, child, tr_msg_new(MSG_HELLO, 0)) == TR_OK);
    }
    if (sp->spawned < M.n)
        TT_CHECK(tr_send(ctx, tr_self(ctx), tr_msg_new(MSG_CONT, 0)) == TR_OK);
    else
        atomic_store(&M.spawner_done, 1);
    return 0;
}

static const tr_behaviour spawner_beh = {
    .name = "spawner",
    .state_size = sizeof(spawner),
    .receive = spawner_receive,
};

static void test_spawn_many_from_actor(void **state)
{
    (void)state;
    const unsigned n = tt_scale(100000, 20000);
    reset(n);
    tr_system *sys = tt_system_workers(2);
    tr_pid sp;
    assert_int_equal(tr_system_spawn(sys, &spawner_beh, NULL, &sp), TR_OK);
    assert_int_equal(tr_system_send(sys, sp, tr_msg_new(MSG_GO, 0)), TR_OK);
    TT_WAIT_FOR(atomic_load(&M.spawner_done) == 1, TT_DEADLINE_MS);
    TT_WAIT_FOR(tt_stats(sys).ended == n, TT_DEADLINE_MS);
    tr_system_stats s = tt_stats(sys);
    assert_int_equal(s.spawned, n + 1);
    assert_int_equal(s.ended, n);
    assert_int_equal(s.alive, 1); /* the spawner */
    assert_int_equal(s.dead_letters, 0);
    assert_int_equal(atomic_load(&M.received), n);
    assert_int_equal(atomic_load(&M.terminated), n);
    assert_int_equal(atomic_load(&M.wrong_reason), 0);
    assert_true(tr_system_alive(sys, sp));
    assert_int_equal(tr_system_stop_actor(sys, sp), TR_OK);
    TT_WAIT_FOR(tt_stats(sys).alive == 0, TT_DEADLINE_MS);
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- idle until the join ------------------------------------------------------------------- */

typedef struct idle {
    unsigned index;
    char heap_state[60]; /* bigger than the inline area: a heap state per actor */
} idle;

static int idle_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    ((idle *)state)->index = (unsigned)(uintptr_t)arg;
    return 0;
}

static int idle_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    atomic_fetch_add(&M.received, 1);
    return 0;
}

static void idle_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    idle *d = state;
    if (reason->kind != TR_REASON_SHUTDOWN)
        atomic_fetch_add(&M.wrong_reason, 1);
    if (d->index < M.n)
        atomic_fetch_add(&M.term_count[d->index], 1);
    atomic_fetch_add(&M.terminated, 1);
}

static const tr_behaviour idle_beh = {
    .name = "idle",
    .state_size = sizeof(idle),
    .init = idle_init,
    .receive = idle_receive,
    .terminate = idle_terminate,
};

static void test_idle_actors_at_join(void **state)
{
    (void)state;
    const unsigned n = tt_scale(100000, 20000);
    reset(n);
    M.term_count = calloc(n, sizeof *M.term_count);
    assert_non_null(M.term_count);
    tr_system *sys = tt_system_workers(2);
    for (unsigned i = 0; i < n; i++) {
        tr_pid pid;
        assert_int_equal(tr_system_spawn(sys, &idle_beh, (const void *)(uintptr_t)i, &pid), TR_OK);
        if (i % 10 == 0) /* some have had a turn, some never ran */
            assert_int_equal(tr_system_send(sys, pid, tr_msg_new(MSG_HELLO, 0)), TR_OK);
    }
    TT_WAIT_FOR(atomic_load(&M.received) == (n + 9) / 10, TT_DEADLINE_MS);
    tr_system_stats s = tt_stats(sys);
    assert_int_equal(s.alive, n);
    assert_int_equal(atomic_load(&M.terminated), 0);
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    s = tt_stats(sys);
    tr_system_free(sys);
    assert_int_equal(atomic_load(&M.terminated), n);
    assert_int_equal(atomic_load(&M.wrong_reason), 0);
    for (unsigned i = 0; i < n; i++)
        if (atomic_load(&M.term_count[i]) != 1)
            fail_msg("actor %u: terminate ran %u times", i, (unsigned)atomic_load(&M.term_count[i]));
    assert_int_equal(s.spawned, n);
    assert_int_equal(s.ended, n);
    assert_int_equal(s.alive, 0);
    free(M.term_count);
    M.term_count = NULL;
    tt_assert_no_failures();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_spawn_many_from_main),
    cmocka_unit_test(test_spawn_many_from_actor),
    cmocka_unit_test(test_idle_actors_at_join),
};

TT_MAIN_PLAIN(tests)
