/*
 * test_actor.c — actors: spawn / receive / stop, init refusal, receive errors and tr_fail,
 * stale pids and slot reuse, dead letters and the dead-letter hook, reserved message types,
 * tr_system_stop_actor, forwarding a received message (ownership passes), actors spawned before
 * start and systems freed without starting.
 *
 * Many tests spawn and send *before* tr_system_start: then every message is queued before the
 * actor can run, which makes "what was in the mailbox when it ended" deterministic.
 */
#include "test_util.h"

#include <pthread.h>

enum { MSG_DATA = 1, MSG_STOP = 2, MSG_FAIL = 3, MSG_GO = 4, MSG_FWD = 5, MSG_NOTE = 6 };

/* What the behaviours below report (reset by each test). */
static struct {
    tr_system *sys;
    atomic_int inits, received, terminated, fails;
    atomic_int term_kind, term_code;
    atomic_ullong term_count;
    atomic_ullong last_pid;
    char term_text[64];
    atomic_int term_has_text;
    atomic_int dl_calls;
    atomic_ullong dl_pid;
    atomic_uint dl_type;
    atomic_int dl_on_main;
    pthread_t main_thread;
} g;

static void reset(void)
{
    memset(&g, 0, sizeof g);
    atomic_store(&g.term_kind, -1);
    g.main_thread = pthread_self();
    tt_reset_failures();
}

static void dead_letter_hook(void *user, tr_pid to, const tr_msg *m)
{
    TT_CHECK(user == &g);
    atomic_fetch_add(&g.dl_calls, 1);
    atomic_store(&g.dl_pid, to);
    atomic_store(&g.dl_type, tr_msg_type(m));
    if (pthread_equal(pthread_self(), g.main_thread))
        atomic_fetch_add(&g.dl_on_main, 1);
}

static tr_system *new_system(unsigned workers, bool start)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = workers;
    o.drain_timeout_ms = 120000;
    o.dead_letter_hook = dead_letter_hook;
    o.dead_letter_user = &g;
    tr_system *sys = NULL;
    assert_int_equal(tr_system_new(&sys, &o), TR_OK);
    if (start)
        assert_int_equal(tr_system_start(sys), TR_OK);
    g.sys = sys;
    return sys;
}

static void send_u64(tr_system *sys, tr_pid to, uint32_t type, uint64_t v, int expect)
{
    assert_int_equal(tr_system_send(sys, to, tt_msg_u64(type, v)), expect);
}

/* ---- a counting actor ---------------------------------------------------------------------- */

typedef struct counter {
    uint64_t n;
    uint64_t magic;
    tr_pid self;
} counter;

static int counter_init(tr_ctx *ctx, void *state, const void *arg)
{
    counter *c = state;
    TT_CHECK(c->n == 0 && c->magic == 0 && c->self == 0); /* state starts zeroed */
    c->magic = arg != NULL ? *(const uint64_t *)arg : 0;
    c->self = tr_self(ctx);
    TT_CHECK(c->self != TR_PID_NONE);
    TT_CHECK(tr_ctx_system(ctx) == g.sys);
    atomic_fetch_add(&g.inits, 1);
    return 0;
}

static int counter_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    counter *c = state;
    TT_CHECK(tr_self(ctx) == c->self);
    TT_CHECK(tr_ctx_system(ctx) == g.sys);
    atomic_fetch_add(&g.received, 1);
    atomic_store(&g.last_pid, c->self);
    switch (tr_msg_type(m)) {
    case MSG_DATA:
        TT_CHECK(tt_read_u64(m) == c->n); /* one sender: in order */
        c->n++;
        break;
    case MSG_STOP:
        tr_stop(ctx);
        break;
    case MSG_FAIL:
        c->n++;
        return (int)tt_read_u64(m); /* non-zero ends the actor */
    default:
        c->n++;
        break;
    }
    return 0;
}

static void counter_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    counter *c = state;
    atomic_store(&g.term_count, c->n);
    atomic_store(&g.term_kind, (int)reason->kind);
    atomic_store(&g.term_code, reason->code);
    if (reason->text != NULL) {
        snprintf(g.term_text, sizeof g.term_text, "%s", reason->text);
        atomic_store(&g.term_has_text, 1);
    }
    atomic_fetch_add(&g.terminated, 1);
}

static const tr_behaviour counter_beh = {
    .name = "counter",
    .state_size = sizeof(counter),
    .init = counter_init,
    .receive = counter_receive,
    .terminate = counter_terminate,
};

/* The same with a state too big for the header's inline area (heap-allocated). */
typedef struct big_counter {
    counter c;
    unsigned char pad[8192];
} big_counter;

static int big_init(tr_ctx *ctx, void *state, const void *arg)
{
    big_counter *b = state;
    for (size_t i = 0; i < sizeof b->pad; i++)
        if (b->pad[i] != 0) {
            TT_CHECK(!"big state not zeroed");
            break;
        }
    memset(b->pad, 0xAB, sizeof b->pad); /* ASan: the whole state is ours */
    return counter_init(ctx, state, arg);
}

static const tr_behaviour big_beh = {
    .name = "big",
    .state_size = sizeof(big_counter),
    .init = big_init,
    .receive = counter_receive,
    .terminate = counter_terminate,
};

static void run_spawn_receive_stop(const tr_behaviour *b)
{
    reset();
    tr_system *sys = new_system(2, true);
    uint64_t magic = 0x1234;
    tr_pid pid = TR_PID_NONE;
    assert_int_equal(tr_system_spawn(sys, b, &magic, &pid), TR_OK);
    assert_int_not_equal(pid, TR_PID_NONE);
    assert_int_equal(tr_pid_node(pid), 1); /* node_id 0 means 1 */
    assert_int_not_equal(tr_pid_gen(pid), 0);
    assert_int_equal(atomic_load(&g.inits), 1); /* init ran in tr_system_spawn */
    assert_true(tr_system_alive(sys, pid));
    tr_system_stats s = tt_stats(sys);
    assert_int_equal(s.spawned, 1);
    assert_int_equal(s.alive, 1);

    const unsigned n = 1000;
    for (unsigned i = 0; i < n; i++)
        send_u64(sys, pid, MSG_DATA, i, TR_OK);
    send_u64(sys, pid, MSG_STOP, 0, TR_OK);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.term_count), n);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_NORMAL);
    assert_int_equal(atomic_load(&g.received), n + 1);
    TT_WAIT_FOR(tt_stats(sys).ended == 1, TT_DEADLINE_MS);
    assert_false(tr_system_alive(sys, pid));
    s = tt_stats(sys);
    assert_int_equal(s.spawned, 1);
    assert_int_equal(s.alive, 0);
    assert_int_equal(s.dead_letters, 0);
    tt_system_end(sys);
    assert_int_equal(atomic_load(&g.terminated), 1); /* not again at shutdown */
    tt_assert_no_failures();
}

static void test_spawn_receive_stop(void **state)
{
    (void)state;
    run_spawn_receive_stop(&counter_beh);
}

static void test_spawn_receive_stop_heap_state(void **state)
{
    (void)state;
    run_spawn_receive_stop(&big_beh);
}

static void test_spawn_invalid(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(1, true);
    tr_pid pid = 77;
    static const tr_behaviour no_receive = {.name = "none"};
    assert_int_equal(tr_system_spawn(sys, NULL, NULL, &pid), TR_EINVAL);
    assert_int_equal(tr_system_spawn(sys, &no_receive, NULL, &pid), TR_EINVAL);
    assert_int_equal(tr_system_spawn(NULL, &counter_beh, NULL, &pid), TR_EINVAL);
    assert_int_equal(pid, 77);
    assert_int_equal(tt_stats(sys).spawned, 0);
    /* out may be NULL */
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, NULL), TR_OK);
    tt_system_end(sys);
    assert_int_equal(atomic_load(&g.terminated), 1);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_SHUTDOWN);
    tt_assert_no_failures();
}

/* ---- init refusal -------------------------------------------------------------------------- */

static int refuse_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)state;
    atomic_fetch_add(&g.inits, 1);
    /* a message to itself during init: it must not leak when the spawn is refused */
    TT_CHECK(tr_send(ctx, tr_self(ctx), tt_msg_u64(MSG_DATA, 0)) == TR_OK);
    int code = *(const int *)arg;
    if (code == 0)
        tr_stop(ctx); /* chooses not to start without an error code */
    return code;
}

static const tr_behaviour refuse_beh = {
    .name = "refuse",
    .state_size = 4000, /* heap state: freed on refusal */
    .init = refuse_init,
    .receive = counter_receive,
    .terminate = counter_terminate,
};

static void test_init_refusal(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, true);
    static const int codes[] = {7, -42, TR_EINVAL, 0};
    for (size_t i = 0; i < 4; i++) {
        tr_pid pid = 0xDEAD;
        int rc = tr_system_spawn(sys, &refuse_beh, &codes[i], &pid);
        if (codes[i] != 0)
            assert_int_equal(rc, codes[i]); /* the init's code, verbatim */
        else
            assert_int_equal(rc, TR_ENOPROC); /* tr_stop in init: refused, no code */
        assert_int_equal(pid, 0xDEAD);        /* *out untouched */
    }
    assert_int_equal(atomic_load(&g.inits), 4);
    tr_system_stats s = tt_stats(sys);
    assert_int_equal(s.spawned, s.ended);
    assert_int_equal(s.alive, 0);
    /* each init's message to itself was dropped as a dead letter */
    TT_WAIT_FOR(tt_stats(sys).dead_letters == 4, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.dl_calls), 4);
    assert_int_equal(atomic_load(&g.dl_type), MSG_DATA);
    tt_sleep_ms(20);
    assert_int_equal(atomic_load(&g.received), 0);
    tt_system_end(sys);
    assert_int_equal(atomic_load(&g.terminated), 0); /* terminate never ran */
    tt_assert_no_failures();
}

/* init may message itself and spawn: the message is received once the spawn completes. */
static int selfmsg_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)arg;
    counter *c = state;
    c->self = tr_self(ctx);
    TT_CHECK(tr_send(ctx, c->self, tt_msg_u64(MSG_DATA, 0)) == TR_OK);
    TT_CHECK(tr_send(ctx, c->self, tt_msg_u64(MSG_DATA, 1)) == TR_OK);
    return 0;
}

static const tr_behaviour selfmsg_beh = {
    .name = "selfmsg",
    .state_size = sizeof(counter),
    .init = selfmsg_init,
    .receive = counter_receive,
    .terminate = counter_terminate,
};

static void test_init_messages_itself(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, true);
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &selfmsg_beh, NULL, &pid), TR_OK);
    TT_WAIT_FOR(atomic_load(&g.received) == 2, TT_DEADLINE_MS);
    assert_true(tr_system_alive(sys, pid));
    tt_system_end(sys);
    assert_int_equal(atomic_load(&g.term_count), 2);
    tt_assert_no_failures();
}

/* ---- receive errors and tr_fail ------------------------------------------------------------ */

static void test_receive_error_ends_actor(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, false);
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &pid), TR_OK);
    send_u64(sys, pid, MSG_DATA, 0, TR_OK);
    send_u64(sys, pid, MSG_FAIL, 5, TR_OK); /* receive returns 5 */
    send_u64(sys, pid, MSG_DATA, 2, TR_OK); /* left in the mailbox: dead letters */
    send_u64(sys, pid, MSG_DATA, 3, TR_OK);
    assert_int_equal(tr_system_start(sys), TR_OK);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_ERROR);
    assert_int_equal(atomic_load(&g.term_code), 5);
    assert_int_equal(atomic_load(&g.term_has_text), 0);
    assert_int_equal(atomic_load(&g.term_count), 2);
    TT_WAIT_FOR(tt_stats(sys).dead_letters == 2, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.received), 2);
    assert_false(tr_system_alive(sys, pid));
    assert_int_equal(tt_stats(sys).alive, 0);
    tt_system_end(sys);
    assert_int_equal(atomic_load(&g.terminated), 1);
    tt_assert_no_failures();
}

static int failer_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    atomic_fetch_add(&g.received, 1);
    if (tr_msg_type(m) == MSG_FAIL) {
        char text[32];
        snprintf(text, sizeof text, "disk on fire #%d", (int)tt_read_u64(m));
        tr_fail(ctx, 9, text);
        memset(text, 'X', sizeof text - 1); /* the runtime kept a copy */
        tr_fail(ctx, 10, "second");        /* the first reason wins */
        tr_stop(ctx);
        return 3;                          /* ignored: already ending */
    }
    if (tr_msg_type(m) == MSG_STOP)
        tr_fail(ctx, -1, NULL);
    return 0;
}

static const tr_behaviour failer_beh = {
    .name = "failer",
    .receive = failer_receive,
    .terminate = counter_terminate,
};

static void test_fail_with_text(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, true);
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &failer_beh, NULL, &pid), TR_OK);
    send_u64(sys, pid, MSG_FAIL, 4, TR_OK);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_ERROR);
    assert_int_equal(atomic_load(&g.term_code), 9);
    assert_int_equal(atomic_load(&g.term_has_text), 1);
    assert_string_equal(g.term_text, "disk on fire #4");
    TT_WAIT_FOR(!tr_system_alive(sys, pid), TT_DEADLINE_MS);

    /* tr_fail without text */
    atomic_store(&g.terminated, 0);
    atomic_store(&g.term_has_text, 0);
    assert_int_equal(tr_system_spawn(sys, &failer_beh, NULL, &pid), TR_OK);
    send_u64(sys, pid, MSG_STOP, 0, TR_OK);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_ERROR);
    assert_int_equal(atomic_load(&g.term_code), -1);
    assert_int_equal(atomic_load(&g.term_has_text), 0);
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- stale pids and slot reuse ------------------------------------------------------------- */

static atomic_ullong reuse_old_pid, reuse_new_pid;
static atomic_int reuse_tries, reuse_done;

/* Spawns children (kept alive) from inside an actor until one gets the slot of the old pid. */
static int spawner_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    (void)m;
    tr_pid old = atomic_load(&reuse_old_pid);
    for (int i = 1; i <= 20000; i++) {
        tr_pid child;
        if (tr_spawn(ctx, &counter_beh, NULL, &child) != TR_OK) {
            TT_CHECK(!"tr_spawn failed");
            break;
        }
        TT_CHECK(child != old);
        if (tr_pid_slot(child) == tr_pid_slot(old)) {
            atomic_store(&reuse_new_pid, child);
            atomic_store(&reuse_tries, i);
            break;
        }
    }
    atomic_store(&reuse_done, 1);
    return 0;
}

static const tr_behaviour spawner_beh = {.name = "spawner", .receive = spawner_receive};

static void test_stale_pid(void **state)
{
    (void)state;
    reset();
    atomic_store(&reuse_new_pid, 0);
    atomic_store(&reuse_done, 0);
    tr_system *sys = new_system(1, true); /* one worker: its header cache is reused first */
    tr_pid spawner, old;
    assert_int_equal(tr_system_spawn(sys, &spawner_beh, NULL, &spawner), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &old), TR_OK);
    atomic_store(&reuse_old_pid, old);
    send_u64(sys, old, MSG_STOP, 0, TR_OK);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    TT_WAIT_FOR(!tr_system_alive(sys, old), TT_DEADLINE_MS);

    /* the old pid is dead: sends fail and count as dead letters */
    send_u64(sys, old, MSG_DATA, 0, TR_ENOPROC);
    assert_int_equal(tt_stats(sys).dead_letters, 1);
    assert_int_equal(atomic_load(&g.dl_pid), old);

    send_u64(sys, spawner, MSG_GO, 0, TR_OK);
    TT_WAIT_FOR(atomic_load(&reuse_done) == 1, TT_DEADLINE_MS);
    tr_pid fresh = atomic_load(&reuse_new_pid);
    print_message("slot reused after %d spawns\n", atomic_load(&reuse_tries));
    assert_int_not_equal(fresh, TR_PID_NONE); /* the slot was reused */
    assert_int_equal(tr_pid_slot(fresh), tr_pid_slot(old));
    assert_int_not_equal(tr_pid_gen(fresh), tr_pid_gen(old));
    assert_int_not_equal(fresh, old);

    /* the old pid still never reaches anyone, the new one works */
    int before = atomic_load(&g.received);
    assert_false(tr_system_alive(sys, old));
    assert_true(tr_system_alive(sys, fresh));
    send_u64(sys, old, MSG_DATA, 0, TR_ENOPROC);
    assert_int_equal(tr_system_stop_actor(sys, old), TR_ENOPROC);
    send_u64(sys, fresh, MSG_DATA, 0, TR_OK);
    TT_WAIT_FOR(atomic_load(&g.received) == before + 1, TT_DEADLINE_MS);
    tt_sleep_ms(20);
    assert_int_equal(atomic_load(&g.received), before + 1);
    assert_int_equal(atomic_load(&g.last_pid), fresh);
    assert_true(tr_system_alive(sys, fresh));
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- dead letters -------------------------------------------------------------------------- */

static void test_dead_letters(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, true);
    tr_pid live, dead;
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &live), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &dead), TR_OK);
    send_u64(sys, dead, MSG_STOP, 0, TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, dead), TT_DEADLINE_MS);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    assert_int_equal(tt_stats(sys).dead_letters, 0);

    send_u64(sys, dead, 77, 1, TR_ENOPROC);
    assert_int_equal(tt_stats(sys).dead_letters, 1);
    assert_int_equal(atomic_load(&g.dl_calls), 1);
    assert_int_equal(atomic_load(&g.dl_pid), dead);
    assert_int_equal(atomic_load(&g.dl_type), 77);
    assert_int_equal(atomic_load(&g.dl_on_main), 1); /* on the sender's thread */

    send_u64(sys, TR_PID_NONE, 78, 1, TR_ENOPROC);
    assert_int_equal(atomic_load(&g.dl_pid), TR_PID_NONE);
    /* a pid that was never handed out, and the live actor's pid with another node id */
    tr_pid never = ((tr_pid)1 << 48) | ((tr_pid)5 << 24) | 0xFFFFFF;
    send_u64(sys, never, 79, 1, TR_ENOPROC);
    tr_pid other_node = (live & ~((tr_pid)0xFFFF << 48)) | ((tr_pid)2 << 48);
    assert_false(tr_system_alive(sys, other_node));
    send_u64(sys, other_node, 80, 1, TR_ENOPROC);
    assert_int_equal(atomic_load(&g.dl_pid), other_node);
    tr_pid other_gen = live ^ ((tr_pid)1 << 24);
    assert_false(tr_system_alive(sys, other_gen));
    send_u64(sys, other_gen, 81, 1, TR_ENOPROC);
    assert_int_equal(tt_stats(sys).dead_letters, 5);
    assert_int_equal(atomic_load(&g.dl_calls), 5);
    tt_sleep_ms(20);
    assert_int_equal(atomic_load(&g.received), 1); /* only the STOP: the live actor got nothing */
    assert_true(tr_system_alive(sys, live));
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- reserved message types ---------------------------------------------------------------- */

static atomic_int reserved_results[8];

static int reserved_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) != MSG_GO) {
        atomic_fetch_add(&g.received, 1);
        return 0;
    }
    tr_pid target = (tr_pid)tt_read_u64(m);
    atomic_store(&reserved_results[0], tr_send(ctx, target, tr_msg_new(TR_MSG_SYSTEM, 0)));
    atomic_store(&reserved_results[1], tr_send(ctx, target, tr_msg_new(TR_MSG_TIMEOUT, 0)));
    atomic_store(&reserved_results[2], tr_request(ctx, target, tr_msg_new(0xFFFFFFFFu, 0), 0, NULL));
    atomic_store(&reserved_results[3],
                 tr_send_after(ctx, target, tr_msg_new(TR_MSG_SYSTEM + 7, 0), 1, NULL));
    atomic_store(&reserved_results[4],
                 tr_send_interval(ctx, target, tr_msg_new(TR_MSG_SYSTEM, 0), 1, NULL));
    atomic_store(&reserved_results[5], tr_send(ctx, target, NULL));
    atomic_store(&reserved_results[6], 1);
    return 0;
}

static const tr_behaviour reserved_beh = {.name = "reserved", .receive = reserved_receive};

static void test_reserved_types_rejected(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, true);
    tr_pid target, sender;
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &target), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &reserved_beh, NULL, &sender), TR_OK);

    static const uint32_t types[] = {TR_MSG_SYSTEM, TR_MSG_TIMEOUT, TR_MSG_SYSTEM + 12345,
                                     0xFFFFFFFFu};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(tr_system_send(sys, target, tr_msg_new(types[i], 0)), TR_EINVAL);
        assert_int_equal(tr_system_send_after(sys, target, tr_msg_new(types[i], 0), 1, NULL),
                         TR_EINVAL);
        tr_msg *reply = (tr_msg *)&g; /* must be reset */
        assert_int_equal(tr_system_call(sys, target, tr_msg_new(types[i], 0), 100, &reply), TR_EINVAL);
        (void)reply;
    }
    assert_int_equal(tr_system_send(sys, target, NULL), TR_EINVAL);
    assert_int_equal(tr_system_send(NULL, target, tr_msg_new(1, 0)), TR_EINVAL);

    for (int i = 0; i < 8; i++)
        atomic_store(&reserved_results[i], 99);
    send_u64(sys, sender, MSG_GO, target, TR_OK);
    TT_WAIT_FOR(atomic_load(&reserved_results[6]) == 1, TT_DEADLINE_MS);
    for (int i = 0; i < 6; i++)
        assert_int_equal(atomic_load(&reserved_results[i]), TR_EINVAL);

    /* the highest type below the reserved range is an ordinary message */
    send_u64(sys, target, TR_MSG_SYSTEM - 1, 0, TR_OK);
    TT_WAIT_FOR(atomic_load(&g.received) == 1, TT_DEADLINE_MS);
    tt_sleep_ms(50);
    assert_int_equal(atomic_load(&g.received), 1);
    assert_int_equal(tt_stats(sys).dead_letters, 0); /* rejected sends are not dead letters */
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- tr_system_stop_actor ------------------------------------------------------------------ */

static void test_stop_actor(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2, false);
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &pid), TR_OK);
    for (unsigned i = 0; i < 5; i++)
        send_u64(sys, pid, MSG_DATA, i, TR_OK);
    assert_int_equal(tr_system_stop_actor(sys, pid), TR_OK);
    send_u64(sys, pid, MSG_DATA, 5, TR_OK); /* after the stop: never received */
    send_u64(sys, pid, MSG_DATA, 6, TR_OK);
    assert_int_equal(tr_system_start(sys), TR_OK);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_SHUTDOWN);
    assert_int_equal(atomic_load(&g.term_count), 5); /* the messages before the stop, all */
    TT_WAIT_FOR(tt_stats(sys).dead_letters == 2, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.received), 5);
    TT_WAIT_FOR(!tr_system_alive(sys, pid), TT_DEADLINE_MS);
    assert_int_equal(tt_stats(sys).alive, 0);

    assert_int_equal(tr_system_stop_actor(NULL, pid), TR_EINVAL);
    assert_int_equal(tr_system_stop_actor(sys, pid), TR_ENOPROC);
    assert_int_equal(tr_system_stop_actor(sys, TR_PID_NONE), TR_ENOPROC);

    /* stopping a running actor from outside, twice: terminate runs once */
    atomic_store(&g.terminated, 0);
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &pid), TR_OK);
    int r1 = tr_system_stop_actor(sys, pid);
    int r2 = tr_system_stop_actor(sys, pid);
    assert_int_equal(r1, TR_OK);
    assert_true(r2 == TR_OK || r2 == TR_ENOPROC);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    tt_system_end(sys);
    assert_int_equal(atomic_load(&g.terminated), 1);
    tt_assert_no_failures();
}

/* ---- forwarding: ownership passes with tr_send --------------------------------------------- */

enum { RING = 10 };
static atomic_ullong ring_pids[RING];
static atomic_int ring_hops_done;
static atomic_ullong ring_final_hops;

typedef struct ring_state {
    unsigned index;
} ring_state;

static int ring_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    ((ring_state *)state)->index = *(const unsigned *)arg;
    return 0;
}

/* Payload: hops left, always encoded as a msgpack uint16 (cd hi lo) so it can be patched in place,
 * then a 1000-byte bin. Each hop forwards the same message object (tr_send of the message being
 * received: ownership passes, the runtime must not free it); every 100th hop sends a fresh copy
 * instead and lets the runtime free the received one. */
static tr_msg *ring_msg(uint64_t hops, const void *blob, size_t len)
{
    tr_msg *m = tr_msg_new(MSG_FWD, 0);
    unsigned char hdr[3] = {0xcd, (unsigned char)(hops >> 8), (unsigned char)hops};
    if (m == NULL || tr_msg_append(m, hdr, 3) != TR_OK ||
        msgpack_pack_bin_with_body(tr_msg_packer(m), blob, len) != 0) {
        tr_msg_free(m);
        return NULL;
    }
    return m;
}

static int ring_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    ring_state *rs = state;
    tr_reader r;
    tr_reader_init(&r, m);
    uint64_t hops = 0;
    const void *p = NULL;
    size_t len = 0;
    TT_CHECK(tr_read_u64(&r, &hops) == TR_OK);
    TT_CHECK(tr_read_bin(&r, &p, &len) == TR_OK && len == 1000);
    for (size_t i = 0; p != NULL && i < len; i += 97)
        TT_CHECK(((const unsigned char *)p)[i] == (unsigned char)i);
    tr_reader_done(&r);
    tr_pid prev = atomic_load(&ring_pids[(rs->index + RING - 1) % RING]);
    if (tr_msg_sender(m) != TR_PID_NONE)
        TT_CHECK(tr_msg_sender(m) == prev);
    if (hops == 0 || p == NULL) {
        atomic_store(&ring_final_hops, atomic_load(&ring_hops_done) + 1);
        return 0; /* the runtime frees it */
    }
    atomic_fetch_add(&ring_hops_done, 1);
    tr_pid next = atomic_load(&ring_pids[(rs->index + 1) % RING]);
    if (hops % 100 == 0) {
        TT_CHECK(tr_send(ctx, next, ring_msg(hops - 1, p, len)) == TR_OK);
        return 0; /* m is freed by the runtime after receive */
    }
    unsigned char *data = (unsigned char *)(uintptr_t)tr_msg_data(m);
    data[1] = (unsigned char)((hops - 1) >> 8);
    data[2] = (unsigned char)(hops - 1);
    TT_CHECK(tr_send(ctx, next, m) == TR_OK);
    return 0;
}

static const tr_behaviour ring_beh = {
    .name = "ring",
    .state_size = sizeof(ring_state),
    .init = ring_init,
    .receive = ring_receive,
};

static void test_forward_received_message(void **state)
{
    (void)state;
    reset();
    atomic_store(&ring_hops_done, 0);
    atomic_store(&ring_final_hops, 0);
    tr_system *sys = new_system(2, true);
    unsigned idx[RING];
    for (unsigned i = 0; i < RING; i++) {
        tr_pid pid;
        idx[i] = i;
        assert_int_equal(tr_system_spawn(sys, &ring_beh, &idx[i], &pid), TR_OK);
        atomic_store(&ring_pids[i], pid);
    }
    unsigned char blob[1000];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (unsigned char)i;
    const unsigned hops = 3000;
    assert_int_equal(tr_system_send(sys, atomic_load(&ring_pids[0]), ring_msg(hops, blob, sizeof blob)),
                     TR_OK);
    TT_WAIT_FOR(atomic_load(&ring_final_hops) != 0 || atomic_load(&tt_failures) != 0,
                TT_DEADLINE_MS);
    tt_assert_no_failures();
    assert_int_equal(atomic_load(&ring_final_hops), hops + 1);
    assert_int_equal(atomic_load(&ring_hops_done), hops);
    assert_int_equal(tt_stats(sys).dead_letters, 0);
    tt_system_end(sys);
}

/* ---- systems that never start -------------------------------------------------------------- */

static void test_spawn_before_start_and_free_unstarted(void **state)
{
    (void)state;
    reset();
    tr_system *sys = NULL;
    assert_int_equal(tr_system_new(NULL, NULL), TR_EINVAL);
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 100000;
    assert_int_equal(tr_system_new(&sys, &o), TR_EINVAL);
    assert_null(sys);

    sys = new_system(2, false);
    tr_pid pids[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr_system_spawn(sys, i == 1 ? &big_beh : &counter_beh, NULL, &pids[i]),
                         TR_OK);
        assert_true(tr_system_alive(sys, pids[i]));
        send_u64(sys, pids[i], MSG_DATA, 0, TR_OK);
        send_u64(sys, pids[i], MSG_DATA, 1, TR_OK);
    }
    assert_int_equal(tr_system_join(sys), TR_ESTATE); /* not started */
    tr_system_free(sys);                              /* never started: no leak (ASan) */
    assert_int_equal(atomic_load(&g.terminated), 3);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_SHUTDOWN);
    assert_int_equal(atomic_load(&g.received), 0);

    /* start twice; join twice; free a joined system */
    reset();
    sys = new_system(1, true);
    assert_int_equal(tr_system_start(sys), TR_ESTATE);
    tr_system_stop(sys);
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    assert_int_equal(tr_system_join(sys), TR_OK);
    assert_int_equal(tr_system_start(sys), TR_ESTATE);
    tr_system_free(sys);
    tr_system_free(NULL);

    /* free a running system directly: it stops and joins itself */
    reset();
    sys = new_system(2, true);
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &pids[0]), TR_OK);
    send_u64(sys, pids[0], MSG_DATA, 0, TR_OK);
    tr_system_free(sys);
    assert_int_equal(atomic_load(&g.terminated), 1);
    assert_int_equal(atomic_load(&g.term_count), 1);
    tt_assert_no_failures();
}

/* ---- stale sends racing with the end and reuse of headers ---------------------------------- */

/* A churner actor keeps a table of victims; each round it stops every victim and spawns a
 * replacement (from a worker: the freed header is reused at once, with a new generation). Outside
 * threads keep sending to whatever pid they read from the table, the expected recipient written in
 * the payload. A victim must only ever receive messages addressed to its own pid. */
enum { VICTIMS = 32 };
static struct {
    atomic_ullong table[VICTIMS];
    atomic_int stop_senders, churn_done;
    atomic_long misdelivered, delivered, sent_ok, sent_noproc;
    unsigned rounds;
} C;

static int victim_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == MSG_STOP) {
        tr_stop(ctx);
        return 0;
    }
    if (tt_read_u64(m) != tr_self(ctx))
        atomic_fetch_add(&C.misdelivered, 1);
    atomic_fetch_add(&C.delivered, 1);
    return 0;
}

static const tr_behaviour victim_beh = {.name = "victim", .receive = victim_receive};

static int churner_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)m;
    unsigned *round = state;
    for (unsigned i = 0; i < VICTIMS; i++) {
        tr_pid old = atomic_load(&C.table[i]), fresh;
        if (old != TR_PID_NONE)
            TT_CHECK(tr_send(ctx, old, tr_msg_new(MSG_STOP, 0)) == TR_OK);
        TT_CHECK(tr_spawn(ctx, &victim_beh, NULL, &fresh) == TR_OK);
        atomic_store(&C.table[i], fresh);
    }
    if (++*round < C.rounds)
        TT_CHECK(tr_send(ctx, tr_self(ctx), tr_msg_new(MSG_GO, 0)) == TR_OK);
    else
        atomic_store(&C.churn_done, 1);
    return 0;
}

static const tr_behaviour churner_beh = {
    .name = "churner",
    .state_size = sizeof(unsigned),
    .receive = churner_receive,
};

static void *stale_sender_main(void *arg)
{
    tr_system *sys = arg;
    uint64_t rng = (uint64_t)(uintptr_t)&rng | 1;
    while (!atomic_load(&C.stop_senders)) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tr_pid to = atomic_load(&C.table[rng % VICTIMS]);
        if (to == TR_PID_NONE)
            continue;
        int rc = tr_system_send(sys, to, tt_msg_u64(MSG_DATA, to));
        if (rc == TR_OK)
            atomic_fetch_add(&C.sent_ok, 1);
        else if (rc == TR_ENOPROC)
            atomic_fetch_add(&C.sent_noproc, 1);
        else
            TT_CHECK(!"unexpected send result");
    }
    return NULL;
}

static void test_stale_sends_never_reach_a_new_incarnation(void **state)
{
    (void)state;
    reset();
    memset(&C, 0, sizeof C);
    C.rounds = tt_scale(3000, 500);
    tr_system *sys = new_system(2, true);
    enum { NS = 3 };
    pthread_t th[NS];
    for (int i = 0; i < NS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, stale_sender_main, sys), 0);
    tr_pid churner;
    assert_int_equal(tr_system_spawn(sys, &churner_beh, NULL, &churner), TR_OK);
    assert_int_equal(tr_system_send(sys, churner, tr_msg_new(MSG_GO, 0)), TR_OK);
    TT_WAIT_FOR(atomic_load(&C.churn_done) == 1, TT_DEADLINE_MS);
    atomic_store(&C.stop_senders, 1);
    for (int i = 0; i < NS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    /* the last victims end too; then nothing is in flight, and every send is accounted for
     * before the system ends (which would sweep leftovers out of the actor table) */
    for (unsigned i = 0; i < VICTIMS; i++)
        assert_int_equal(tr_system_send(sys, atomic_load(&C.table[i]), tr_msg_new(MSG_STOP, 0)),
                         TR_OK);
    TT_WAIT_FOR(tt_stats(sys).ended + 1 == tt_stats(sys).spawned, TT_DEADLINE_MS);
    tr_system_stats st = tt_stats(sys);
    print_message("%ld delivered, %ld sends ok, %ld ENOPROC, %llu dead letters, %llu spawned\n",
                  atomic_load(&C.delivered), atomic_load(&C.sent_ok), atomic_load(&C.sent_noproc),
                  (unsigned long long)st.dead_letters, (unsigned long long)st.spawned);
    assert_int_equal(atomic_load(&C.misdelivered), 0);
    assert_true(atomic_load(&C.delivered) > 0);
    /* every send either reached its own incarnation or was a dead letter: none is left in the
     * mailbox of an ended actor (a send that found the pid just before its target ended) */
    assert_int_equal((uint64_t)atomic_load(&C.sent_ok) + (uint64_t)atomic_load(&C.sent_noproc),
                     (uint64_t)atomic_load(&C.delivered) + st.dead_letters);
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* Sends racing with the end of their target, with no header reused meanwhile (reuse would sweep
 * a lost message out as a stale one). All senders hammer the same victim until it has ended
 * (ENOPROC), then move on; each victim stops itself after a few messages, so every end races
 * with sends. Afterwards every send must be accounted for: received, or a dead letter.
 * REGRESSION (actor.c, tr__deliver vs tr__actor_end): a sender that found the pid just before
 * the actor ended pushed after the final drain, and the message sat in the dead actor's
 * mailbox until the header was reused — a link or monitor request among them was never
 * answered (test_link's race test hung once in ~20 runs under TSan). */
enum { RACE_VICTIMS = 4000, RACE_SENDS_MAX = 256 };
static struct {
    tr_pid pids[RACE_VICTIMS];
    atomic_uint cur;
    atomic_long delivered, sent_ok, sent_noproc;
} R;

static int quick_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(uintptr_t *)state = (uintptr_t)arg;
    return 0;
}

static int quick_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)m;
    atomic_fetch_add(&R.delivered, 1);
    uintptr_t *left = state;
    if (--*left == 0)
        tr_stop(ctx);
    return 0;
}

static const tr_behaviour quick_beh = {
    .name = "quick", .state_size = sizeof(uintptr_t), .init = quick_init, .receive = quick_receive};

static void *race_sender_main(void *arg)
{
    tr_system *sys = arg;
    unsigned last = UINT32_MAX, sent = 0;
    for (;;) {
        unsigned i = atomic_load(&R.cur);
        if (i >= RACE_VICTIMS)
            return NULL;
        if (i != last)
            last = i, sent = 0;
        /* bounded: a victim whose worker is descheduled would otherwise collect millions */
        if (++sent > RACE_SENDS_MAX) {
            atomic_compare_exchange_strong(&R.cur, &i, i + 1);
            continue;
        }
        int rc = tr_system_send(sys, R.pids[i], tt_msg_u64(MSG_DATA, i));
        if (rc == TR_OK) {
            atomic_fetch_add(&R.sent_ok, 1);
        } else {
            TT_CHECK(rc == TR_ENOPROC);
            atomic_fetch_add(&R.sent_noproc, 1);
            atomic_compare_exchange_strong(&R.cur, &i, i + 1);
        }
    }
}

static void test_sends_racing_with_the_end_are_accounted(void **state)
{
    (void)state;
    reset();
    memset(&R, 0, sizeof R);
    tr_system *sys = new_system(2, true);
    for (unsigned i = 0; i < RACE_VICTIMS; i++)
        assert_int_equal(tr_system_spawn(sys, &quick_beh, (const void *)(uintptr_t)(1 + i % 7),
                                         &R.pids[i]),
                         TR_OK);
    enum { NS = 2 };
    pthread_t th[NS];
    for (int i = 0; i < NS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_sender_main, sys), 0);
    for (int i = 0; i < NS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    TT_WAIT_FOR(tt_stats(sys).ended == RACE_VICTIMS, TT_DEADLINE_MS);
    tr_system_stats st = tt_stats(sys);
    print_message("%ld delivered, %ld sends ok, %ld ENOPROC, %llu dead letters\n",
                  atomic_load(&R.delivered), atomic_load(&R.sent_ok), atomic_load(&R.sent_noproc),
                  (unsigned long long)st.dead_letters);
    assert_int_equal((uint64_t)atomic_load(&R.sent_ok) + (uint64_t)atomic_load(&R.sent_noproc),
                     (uint64_t)atomic_load(&R.delivered) + st.dead_letters);
    tt_system_end(sys);
    tt_assert_no_failures();
}

/* ---- regressions (bugs found by this suite, fixed in 28777b5) ------------------------------- */

static atomic_ullong note_sender;
static atomic_ullong term_self;
static atomic_int note_received;

static int observer_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    if (tr_msg_type(m) == MSG_NOTE) {
        atomic_store(&note_sender, tr_msg_sender(m));
        atomic_store(&note_received, 1);
    }
    return 0;
}

static const tr_behaviour observer_beh = {.name = "observer", .receive = observer_receive};

static int notifier_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    *(tr_pid *)state = (tr_pid)tt_read_u64(m); /* the observer */
    tr_stop(ctx);
    return 0;
}

static void notifier_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)reason;
    atomic_store(&term_self, tr_self(ctx));
    tr_send(ctx, *(tr_pid *)state, tr_msg_new(MSG_NOTE, 0));
    atomic_fetch_add(&g.terminated, 1);
}

static const tr_behaviour notifier_beh = {
    .name = "notifier",
    .state_size = sizeof(tr_pid),
    .receive = notifier_receive,
    .terminate = notifier_terminate,
};

/* REGRESSION (runtime/src/core/actor.c, tr__actor_end + tr_self): tr__actor_end cleared a->pid before it
 * ran terminate, and tr_self read a->pid, so inside terminate tr_self() returned TR_PID_NONE and
 * every message terminate sent (the usual "I am done" notice to a parent or registry) carried
 * sender TR_PID_NONE. troupe.h: "tr_self: The running actor's own pid". */
static void test_tr_self_in_terminate(void **state)
{
    (void)state;
    reset();
    atomic_store(&note_received, 0);
    atomic_store(&note_sender, 0);
    atomic_store(&term_self, 0);
    tr_system *sys = new_system(2, true);
    tr_pid observer, notifier;
    assert_int_equal(tr_system_spawn(sys, &observer_beh, NULL, &observer), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &notifier_beh, NULL, &notifier), TR_OK);
    send_u64(sys, notifier, MSG_STOP, observer, TR_OK);
    TT_WAIT_FOR(atomic_load(&note_received) == 1, TT_DEADLINE_MS);
    tt_system_end(sys);
    print_message("in terminate: tr_self = %#llx, notice sender = %#llx, pid = %#llx\n",
                  (unsigned long long)atomic_load(&term_self),
                  (unsigned long long)atomic_load(&note_sender), (unsigned long long)notifier);
    assert_int_equal(atomic_load(&term_self), notifier);
    assert_int_equal(atomic_load(&note_sender), notifier);
}

/* REGRESSION (runtime/src/core/actor.c, tr_system_stop_actor): stopping a pid that was already dead sent
 * the runtime's internal stop signal (type TR_SIG_STOP = 1, flag TR_MF_SIGNAL) through
 * tr__deliver, which counts it in dead_letters and hands it to the user's dead_letter_hook, where
 * it was indistinguishable from a user message of type 1 that the user never sent. Expected:
 * TR_ENOPROC without a dead letter (a control request is not a letter). */
static void test_stop_actor_dead_pid_is_not_a_dead_letter(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(1, true);
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &pid), TR_OK);
    send_u64(sys, pid, MSG_STOP, 0, TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, pid), TT_DEADLINE_MS);
    assert_int_equal(tr_system_stop_actor(sys, pid), TR_ENOPROC);
    /* a stop signal left in the mailbox of an actor that ended by itself */
    tr_pid pid2;
    assert_int_equal(tr_system_spawn(sys, &counter_beh, NULL, &pid2), TR_OK);
    atomic_store(&g.terminated, 0);
    send_u64(sys, pid2, MSG_STOP, 0, TR_OK);
    int rc2 = tr_system_stop_actor(sys, pid2);
    assert_true(rc2 == TR_OK || rc2 == TR_ENOPROC);
    TT_WAIT_FOR(atomic_load(&g.terminated) == 1, TT_DEADLINE_MS);
    TT_WAIT_FOR(!tr_system_alive(sys, pid2), TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g.term_kind), TR_REASON_NORMAL);
    int calls = atomic_load(&g.dl_calls);
    unsigned type = atomic_load(&g.dl_type);
    uint64_t dl = tt_stats(sys).dead_letters;
    tt_system_end(sys);
    print_message("dead_letter_hook calls: %d (last type %u), dead_letters: %llu\n", calls, type,
                  (unsigned long long)dl);
    assert_int_equal(calls, 0);
    assert_int_equal(dl, 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_spawn_receive_stop),
    cmocka_unit_test(test_spawn_receive_stop_heap_state),
    cmocka_unit_test(test_spawn_invalid),
    cmocka_unit_test(test_init_refusal),
    cmocka_unit_test(test_init_messages_itself),
    cmocka_unit_test(test_receive_error_ends_actor),
    cmocka_unit_test(test_fail_with_text),
    cmocka_unit_test(test_stale_pid),
    cmocka_unit_test(test_dead_letters),
    cmocka_unit_test(test_reserved_types_rejected),
    cmocka_unit_test(test_stop_actor),
    cmocka_unit_test(test_forward_received_message),
    cmocka_unit_test(test_spawn_before_start_and_free_unstarted),
    cmocka_unit_test(test_stale_sends_never_reach_a_new_incarnation),
    cmocka_unit_test(test_sends_racing_with_the_end_are_accounted),
    cmocka_unit_test(test_tr_self_in_terminate),
    cmocka_unit_test(test_stop_actor_dead_pid_is_not_a_dead_letter),
};

TT_MAIN_PLAIN(tests)
