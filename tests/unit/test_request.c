/*
 * test_request.c — request/reply: tr_request + tr_reply round trips between actors, timeouts
 * (exactly one TR_MSG_TIMEOUT with the request's corr), late replies (dropped and counted),
 * requests to dead pids, and tr_system_call from outside (reply, timeout, dead pid, stopped system,
 * refused inside an actor, concurrent callers).
 *
 * "Exactly one of reply or timeout" is checked without timing assumptions: after the first one
 * arrives, the requester arms a fence timer due well after the request's timeout; timers fire in
 * due order, so by the time the fence arrives a stray second answer would have arrived too.
 */
#include "test_util.h"

#include <pthread.h>

enum {
    MSG_REQ = 1,     /* request: payload i, reply 2*i */
    MSG_SILENT = 2,  /* request that is never answered */
    MSG_GO = 3,      /* to the requester: payload (server, n, timeout_ms, type) */
    MSG_FENCE = 4,
    MSG_ANSWER = 5,  /* reply type */
    MSG_PLAIN = 6,
    MSG_ECHO = 7,
};

#define MAX_REQ 128

static struct {
    atomic_int replies, timeouts, fences, bad, gos;
    atomic_int timeout_forward_rc;
    atomic_int request_rc;
    atomic_int first_answer_seen;
    atomic_int server_seen, server_reply_rc;
    atomic_int block_release;
    atomic_int inside_rcs[4];
    atomic_int inside_done;
} R;

static void reset(void)
{
    memset(&R, 0, sizeof R);
    atomic_store(&R.request_rc, 99);
    atomic_store(&R.timeout_forward_rc, 99);
    atomic_store(&R.server_reply_rc, 99);
    tt_reset_failures();
}

/* ---- server -------------------------------------------------------------------------------- */

static int server_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    atomic_fetch_add(&R.server_seen, 1);
    if (tr_msg_corr(m) == 0) { /* a plain message: replying to it is refused */
        int rc = tr_reply(ctx, m, tt_msg_u64(MSG_ANSWER, 0));
        atomic_store(&R.server_reply_rc, rc);
        TT_CHECK(tr_reply(ctx, m, NULL) == TR_EINVAL);
        return 0;
    }
    TT_CHECK(!tr_msg_is_reply(m));
    switch (tr_msg_type(m)) {
    case MSG_REQ:
        TT_CHECK(tr_reply(ctx, m, tt_msg_u64(MSG_ANSWER, 2 * tt_read_u64(m))) == TR_OK);
        break;
    case MSG_ECHO:
        /* replying with the request message itself: see bug_reply_with_request_message */
        atomic_store(&R.server_reply_rc, tr_reply(ctx, m, m));
        break;
    default: /* MSG_SILENT */
        break;
    }
    return 0;
}

static const tr_behaviour server_beh = {.name = "server", .receive = server_receive};

/* A server that holds its (only) request until the test says so, then replies: the reply comes
 * after the requester's timeout. (A deferred reply through tr_send_after is impossible: a message
 * sent that way loses its request flag and corr, so tr_reply refuses it. Blocking the worker is
 * the only way with the public API; the test runs two workers.) */
static int blocker_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    uint64_t deadline = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    while (!atomic_load(&R.block_release) && tt_now_ns() < deadline)
        tt_sleep_ms(1);
    TT_CHECK(tr_reply(ctx, m, tt_msg_u64(MSG_ANSWER, 0)) == TR_OK);
    return 0;
}

static const tr_behaviour blocker_beh = {.name = "blocker", .receive = blocker_receive};

/* ---- requester ----------------------------------------------------------------------------- */

typedef struct requester {
    tr_pid server;
    uint64_t n, timeout_ms, type;
    uint64_t corr[MAX_REQ];
    bool answered[MAX_REQ];
    uint64_t answers;
} requester;

static int find_corr(requester *q, uint64_t corr)
{
    for (uint64_t i = 0; i < q->n; i++)
        if (q->corr[i] == corr)
            return (int)i;
    return -1;
}

static void arm_fence(tr_ctx *ctx, requester *q)
{
    unsigned delay = (unsigned)q->timeout_ms * 2 + 20;
    TT_CHECK(tr_send_after(ctx, tr_self(ctx), tr_msg_new(MSG_FENCE, 0), delay, NULL) == TR_OK);
}

static int requester_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    requester *q = state;
    if (tr_msg_type(m) == MSG_GO) {
        uint64_t v[4];
        TT_CHECK(tt_read_u64s(m, 4, v) == TR_OK);
        q->server = v[0];
        q->n = v[1];
        q->timeout_ms = v[2];
        q->type = v[3];
        for (uint64_t i = 0; i < q->n; i++) {
            int rc = tr_request(ctx, q->server, tt_msg_u64((uint32_t)q->type, i),
                                (unsigned)q->timeout_ms, &q->corr[i]);
            atomic_store(&R.request_rc, rc);
            if (rc != TR_OK) {
                q->corr[i] = 0;
                continue;
            }
            TT_CHECK(q->corr[i] != 0);
            for (uint64_t j = 0; j < i; j++)
                TT_CHECK(q->corr[j] != q->corr[i]); /* fresh corr for each request */
        }
        if (atomic_load(&R.request_rc) != TR_OK)
            arm_fence(ctx, q); /* e.g. a dead pid: nothing may arrive before the fence */
        atomic_fetch_add(&R.gos, 1);
        return 0;
    }
    if (tr_msg_type(m) == MSG_FENCE) {
        atomic_fetch_add(&R.fences, 1);
        return 0;
    }
    int i = find_corr(q, tr_msg_corr(m));
    if (i < 0 || q->answered[i]) {
        atomic_fetch_add(&R.bad, 1); /* unknown corr, or a second answer */
        return 0;
    }
    q->answered[i] = true;
    if (++q->answers == q->n)
        arm_fence(ctx, q);
    if (tr_msg_type(m) == TR_MSG_TIMEOUT) {
        TT_CHECK(!tr_msg_is_reply(m));
        atomic_fetch_add(&R.timeouts, 1);
        atomic_store(&R.block_release, 1);
        /* the timeout message cannot be sent on (reserved type); no double free either */
        atomic_store(&R.timeout_forward_rc, tr_send(ctx, q->server, m));
        return 0;
    }
    TT_CHECK(tr_msg_is_reply(m));
    TT_CHECK(tr_msg_sender(m) == q->server);
    if (tr_msg_type(m) == MSG_ANSWER && q->type == MSG_REQ)
        TT_CHECK(tt_read_u64(m) == 2 * (uint64_t)i);
    atomic_fetch_add(&R.replies, 1);
    return 0;
}

static const tr_behaviour requester_beh = {
    .name = "requester",
    .state_size = sizeof(requester),
    .receive = requester_receive,
};

static void go(tr_system *sys, tr_pid requester_pid, tr_pid server, uint64_t n,
               uint64_t timeout_ms, uint64_t type)
{
    uint64_t v[4] = {server, n, timeout_ms, type};
    assert_int_equal(tr_system_send(sys, requester_pid, tt_msg_u64s(MSG_GO, 4, v)), TR_OK);
}

static tr_system *new_system(unsigned workers)
{
    return tt_system_workers(workers);
}

/* The fixture most tests share: the records reset, a started system of 2 workers in *state; at the
 * end the system is stopped, joined and freed, and no actor may have reported a failure. */
static int sys2_up(void **state)
{
    reset();
    *state = new_system(2);
    return *state != NULL ? 0 : -1;
}

static int sys2_down(void **state)
{
    tt_system_end(*state);
    tt_assert_no_failures();
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void run_roundtrip(unsigned timeout_ms)
{
    reset();
    tr_system *sys = new_system(2);
    tr_pid server, req;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &requester_beh, NULL, &req), TR_OK);
    const unsigned n = 100;
    go(sys, req, server, n, timeout_ms, MSG_REQ);
    TT_WAIT_FOR(atomic_load(&R.replies) == (int)n, TT_DEADLINE_MS);
    if (timeout_ms > 0)
        TT_WAIT_FOR(atomic_load(&R.fences) == 1, TT_DEADLINE_MS); /* past every timeout */
    assert_int_equal(atomic_load(&R.request_rc), TR_OK);
    assert_int_equal(atomic_load(&R.timeouts), 0);
    assert_int_equal(atomic_load(&R.bad), 0);
    tr_system_stats st = tt_stats(sys);
    assert_int_equal(st.late_replies, 0);
    assert_int_equal(st.dead_letters, 0);
    tt_system_end(sys);
    tt_assert_no_failures();
}

static void test_roundtrip_with_timeout(void **state)
{
    (void)state;
    run_roundtrip(300);
}

static void test_roundtrip_without_timeout(void **state)
{
    (void)state;
    run_roundtrip(0);
}

static void test_timeout_exactly_once(void **state)
{
    tr_system *sys = *state;
    tr_pid server, req;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &requester_beh, NULL, &req), TR_OK);
    const unsigned n = 10;
    go(sys, req, server, n, 30, MSG_SILENT);
    TT_WAIT_FOR(atomic_load(&R.timeouts) == (int)n, TT_DEADLINE_MS);
    TT_WAIT_FOR(atomic_load(&R.fences) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&R.timeouts), n); /* one each, with the request's corr */
    assert_int_equal(atomic_load(&R.replies), 0);
    assert_int_equal(atomic_load(&R.bad), 0);
    assert_int_equal(atomic_load(&R.server_seen), n);
    assert_int_equal(atomic_load(&R.timeout_forward_rc), TR_EINVAL);
    assert_int_equal(tt_stats(sys).late_replies, 0);
}

static void test_late_reply_dropped_and_counted(void **state)
{
    tr_system *sys = *state;
    tr_pid blocker, req;
    assert_int_equal(tr_system_spawn(sys, &blocker_beh, NULL, &blocker), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &requester_beh, NULL, &req), TR_OK);
    go(sys, req, blocker, 1, 30, MSG_REQ);
    TT_WAIT_FOR(atomic_load(&R.timeouts) == 1, TT_DEADLINE_MS);
    /* the timeout released the blocker, which replies now: too late */
    TT_WAIT_FOR(tt_stats(sys).late_replies == 1, TT_DEADLINE_MS);
    TT_WAIT_FOR(atomic_load(&R.fences) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&R.replies), 0);
    assert_int_equal(atomic_load(&R.bad), 0);
    assert_int_equal(tt_stats(sys).late_replies, 1);
}

static void test_request_to_dead_pid(void **state)
{
    tr_system *sys = *state;
    tr_pid dead, req;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &dead), TR_OK);
    assert_int_equal(tr_system_stop_actor(sys, dead), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, dead), TT_DEADLINE_MS);
    uint64_t dl = tt_stats(sys).dead_letters;
    assert_int_equal(tr_system_spawn(sys, &requester_beh, NULL, &req), TR_OK);
    go(sys, req, dead, 1, 30, MSG_REQ);
    TT_WAIT_FOR(atomic_load(&R.fences) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&R.request_rc), TR_ENOPROC);
    assert_int_equal(atomic_load(&R.timeouts), 0); /* its timer was cancelled */
    assert_int_equal(atomic_load(&R.bad), 0);
    assert_int_equal(tt_stats(sys).dead_letters, dl + 1);

    /* TR_PID_NONE too */
    atomic_store(&R.fences, 0);
    go(sys, req, TR_PID_NONE, 1, 30, MSG_REQ);
    TT_WAIT_FOR(atomic_load(&R.fences) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&R.request_rc), TR_ENOPROC);
    assert_int_equal(atomic_load(&R.timeouts), 0);
}

static void test_reply_refused_for_plain_message(void **state)
{
    tr_system *sys = *state;
    tr_pid server;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    assert_int_equal(tr_system_send(sys, server, tt_msg_u64(MSG_PLAIN, 1)), TR_OK);
    TT_WAIT_FOR(atomic_load(&R.server_reply_rc) != 99, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&R.server_reply_rc), TR_EINVAL);
}

/* ---- tr_system_call ------------------------------------------------------------------------------- */

static void call_ok(tr_system *sys, tr_pid server, uint64_t i, unsigned timeout_ms)
{
    tr_msg *reply = NULL;
    int rc = tr_system_call(sys, server, tt_msg_u64(MSG_REQ, i), timeout_ms, &reply);
    assert_int_equal(rc, TR_OK);
    assert_non_null(reply);
    assert_true(tr_msg_is_reply(reply));
    assert_int_equal(tr_msg_type(reply), MSG_ANSWER);
    assert_int_equal(tr_msg_sender(reply), server);
    assert_int_not_equal(tr_msg_corr(reply), 0);
    assert_int_equal(tt_read_u64(reply), 2 * i);
    tr_msg_free(reply);
}

static void test_call_reply(void **state)
{
    tr_system *sys = *state;
    tr_pid server;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    call_ok(sys, server, 21, 30000);
    call_ok(sys, server, 22, 0); /* no timeout */
    for (unsigned i = 0; i < tt_scale(2000, 300); i++)
        call_ok(sys, server, i, 30000);
    tr_system_stats st = tt_stats(sys);
    assert_int_equal(st.dead_letters, 0);
    assert_int_equal(st.late_replies, 0);
    assert_int_equal(st.alive, 1); /* waiters are not actors */
}

typedef struct caller_arg {
    tr_system *sys;
    tr_pid server;
    unsigned n, base;
    atomic_int *errors;
} caller_arg;

static void *caller_main(void *p)
{
    caller_arg *a = p;
    for (unsigned i = 0; i < a->n; i++) {
        tr_msg *reply = NULL;
        uint64_t v = a->base + i;
        int rc = tr_system_call(a->sys, a->server, tt_msg_u64(MSG_REQ, v), 30000, &reply);
        if (rc != TR_OK || reply == NULL || tt_read_u64(reply) != 2 * v)
            atomic_fetch_add(a->errors, 1);
        tr_msg_free(reply);
    }
    return NULL;
}

static void test_call_concurrent_callers(void **state)
{
    tr_system *sys = *state;
    tr_pid server;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    enum { NT = 4 };
    pthread_t th[NT];
    caller_arg args[NT];
    atomic_int errors = 0;
    for (unsigned t = 0; t < NT; t++) {
        args[t] = (caller_arg){sys, server, tt_scale(500, 100), t * 100000u, &errors};
        assert_int_equal(pthread_create(&th[t], NULL, caller_main, &args[t]), 0);
    }
    for (unsigned t = 0; t < NT; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    assert_int_equal(atomic_load(&errors), 0);
    assert_int_equal(tt_stats(sys).late_replies, 0);
}

/* A server that sometimes answers after a pause, so replies race with callers giving up (and
 * with the reuse of their waiter headers by the next call). */
static int slow_server_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    uint64_t *k = state;
    uint64_t v = tt_read_u64(m);
    uint64_t pause_us = (++*k * 7919u) % 1500u;
    uint64_t until = tt_now_ns() + pause_us * 1000u;
    while (tt_now_ns() < until) {
    }
    int rc = tr_reply(ctx, m, tt_msg_u64(MSG_ANSWER, 2 * v));
    TT_CHECK(rc == TR_OK || rc == TR_ENOPROC); /* ENOPROC: the caller gave up already */
    return 0;
}

static const tr_behaviour slow_server_beh = {
    .name = "slow-server",
    .state_size = sizeof(uint64_t),
    .receive = slow_server_receive,
};

typedef struct racer_arg {
    tr_system *sys;
    tr_pid server;
    unsigned n, base;
    atomic_int wrong, ok, timedout;
} racer_arg;

static void *racer_main(void *p)
{
    racer_arg *a = p;
    for (unsigned i = 0; i < a->n; i++) {
        tr_msg *reply = NULL;
        uint64_t v = a->base + i;
        int rc = tr_system_call(a->sys, a->server, tt_msg_u64(MSG_REQ, v), 1, &reply);
        if (rc == TR_OK) {
            if (reply == NULL || tt_read_u64(reply) != 2 * v)
                atomic_fetch_add(&a->wrong, 1); /* somebody else's reply */
            atomic_fetch_add(&a->ok, 1);
        } else if (rc == TR_ETIMEDOUT) {
            if (reply != NULL)
                atomic_fetch_add(&a->wrong, 1);
            atomic_fetch_add(&a->timedout, 1);
        } else {
            atomic_fetch_add(&a->wrong, 1);
        }
        tr_msg_free(reply);
    }
    return NULL;
}

static void test_call_timeouts_racing_replies(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2);
    enum { NT = 3 };
    tr_pid servers[NT];
    for (unsigned t = 0; t < NT; t++)
        assert_int_equal(tr_system_spawn(sys, &slow_server_beh, NULL, &servers[t]), TR_OK);
    pthread_t th[NT];
    racer_arg args[NT];
    for (unsigned t = 0; t < NT; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].sys = sys;
        args[t].server = servers[(t + 1) % NT];
        args[t].n = tt_scale(1500, 300);
        args[t].base = t * 1000000u;
        assert_int_equal(pthread_create(&th[t], NULL, racer_main, &args[t]), 0);
    }
    int ok = 0, timedout = 0;
    for (unsigned t = 0; t < NT; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(atomic_load(&args[t].wrong), 0);
        ok += atomic_load(&args[t].ok);
        timedout += atomic_load(&args[t].timedout);
    }
    print_message("%d answered in time, %d timed out, %llu dead letters\n", ok, timedout,
                  (unsigned long long)tt_stats(sys).dead_letters);
    assert_int_equal(ok + timedout, (int)(NT * args[0].n));
    tt_system_end(sys);
    tt_assert_no_failures();
}

static void test_call_timeout(void **state)
{
    tr_system *sys = *state;
    tr_pid server;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    tr_msg *reply = (tr_msg *)&R;
    uint64_t t0 = tt_now_ns();
    int rc = tr_system_call(sys, server, tt_msg_u64(MSG_SILENT, 0), 100, &reply);
    uint64_t elapsed_ms = (tt_now_ns() - t0) / 1000000u;
    assert_int_equal(rc, TR_ETIMEDOUT);
    assert_null(reply);
    assert_true(elapsed_ms >= 100); /* a lower bound only */
    TT_WAIT_FOR(atomic_load(&R.server_seen) == 1, TT_DEADLINE_MS);
    /* the system is still fine: a call that is answered */
    call_ok(sys, server, 5, 30000);
}

static void test_call_errors(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2);
    tr_pid dead;
    tr_msg *reply = (tr_msg *)&R;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &dead), TR_OK);
    assert_int_equal(tr_system_stop_actor(sys, dead), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, dead), TT_DEADLINE_MS);
    assert_int_equal(tr_system_call(sys, dead, tt_msg_u64(MSG_REQ, 1), 30000, &reply), TR_ENOPROC);
    assert_null(reply);
    assert_int_equal(tr_system_call(sys, TR_PID_NONE, tt_msg_u64(MSG_REQ, 1), 0, &reply), TR_ENOPROC);
    assert_int_equal(tr_system_call(sys, dead, tt_msg_u64(MSG_REQ, 1), 100, NULL), TR_EINVAL);
    assert_int_equal(tr_system_call(NULL, dead, tt_msg_u64(MSG_REQ, 1), 100, &reply), TR_EINVAL);
    assert_int_equal(tr_system_call(sys, dead, NULL, 100, &reply), TR_EINVAL);
    tt_system_end(sys);
}

/* tr_system_call from inside an actor would block a worker: refused with TR_ESTATE. */
static int inside_caller_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    tr_msg *reply = NULL;
    atomic_store(&R.inside_rcs[0],
                 tr_system_call(tr_ctx_system(ctx), (tr_pid)tt_read_u64(m), tt_msg_u64(MSG_REQ, 1), 1000,
                         &reply));
    TT_CHECK(reply == NULL);
    atomic_store(&R.inside_rcs[1], tr_system_join(tr_ctx_system(ctx)));
    atomic_store(&R.inside_done, 1);
    return 0;
}

static const tr_behaviour inside_caller_beh = {.name = "inside", .receive = inside_caller_receive};

static void test_call_inside_actor_refused(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2);
    tr_pid server, a;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &inside_caller_beh, NULL, &a), TR_OK);
    assert_int_equal(tr_system_send(sys, a, tt_msg_u64(MSG_PLAIN, server)), TR_OK);
    TT_WAIT_FOR(atomic_load(&R.inside_done) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&R.inside_rcs[0]), TR_ESTATE);
    assert_int_equal(atomic_load(&R.inside_rcs[1]), TR_ESTATE);
    tt_sleep_ms(20);
    assert_int_equal(atomic_load(&R.server_seen), 0); /* the refused call sent nothing */
    tt_system_end(sys);
    tt_assert_no_failures();
}

static void test_call_on_stopped_system(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2);
    tr_pid server;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_msg *reply = (tr_msg *)&R;
    assert_int_equal(tr_system_call(sys, server, tt_msg_u64(MSG_REQ, 1), 1000, &reply), TR_ESTOPPED);
    assert_null(reply);
    assert_int_equal(tr_system_call(sys, server, tt_msg_u64(MSG_REQ, 1), 0, &reply), TR_ESTOPPED);
    /* the rest of the outside API says so too (and frees the messages: ASan) */
    assert_int_equal(tr_system_send(sys, server, tt_msg_u64(MSG_REQ, 1)), TR_ESTOPPED);
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_ESTOPPED);
    assert_int_equal(tr_system_send_after(sys, server, tt_msg_u64(MSG_REQ, 1), 1, NULL),
                     TR_ESTOPPED);
    assert_false(tr_system_alive(sys, server));
    tr_system_free(sys);
}

/* ---- regressions (run with --regressions) ---------------------------------------------------- */

/* REGRESSION (runtime/src/core/request.c, tr_reply; fixed in 3e4106e): replying with the request
 * message itself, tr_reply(ctx, m, m) -- an echo -- sent the reply to the replier, not to the
 * requester: `reply->sender = tr_self(ctx)` overwrote request->sender (same object) before
 * `request->sender` was read as the destination. The replier dropped its own "reply" as a late
 * reply (late_replies++), and the requester waited forever (or timed out). Fixed: tr_reply reads
 * the requester and corr before it writes the reply's fields (kept by tr_reply_from since). */
static void bug_reply_with_request_message(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2);
    tr_pid server, req;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &requester_beh, NULL, &req), TR_OK);
    go(sys, req, server, 1, 0, MSG_ECHO);
    TT_WAIT_FOR(atomic_load(&R.replies) == 1 || tt_stats(sys).late_replies > 0, TT_DEADLINE_MS);
    tt_sleep_ms(20);
    int replies = atomic_load(&R.replies);
    uint64_t late = tt_stats(sys).late_replies;
    tt_system_end(sys);
    print_message("tr_reply(ctx, m, m) returned %d; requester got %d replies; late_replies %llu\n",
                  atomic_load(&R.server_reply_rc), replies, (unsigned long long)late);
    assert_int_equal(replies, 1);
    assert_int_equal(late, 0);
}

/* A target that ends with a tr_system_call's request still queued: the call returns TR_ENOPROC at once,
 * even with no timeout, instead of waiting forever. The target blocks in its first message until a
 * helper thread opens the gate, then fails; the request is either queued behind (dropped at the
 * end: the waiter is told) or sent after the end (refused at once): TR_ENOPROC both ways. */
static atomic_int g_gate;

static int gated_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == MSG_PLAIN) {
        while (!atomic_load(&g_gate))
            tt_sleep_ms(1);
        tr_fail(ctx, 5, "gone before answering");
    }
    return 0;
}

static const tr_behaviour gated_b = {.name = "gated", .receive = gated_receive};

static void *open_gate_later(void *arg)
{
    (void)arg;
    tt_sleep_ms(50);
    atomic_store(&g_gate, 1);
    return NULL;
}

static void test_call_target_ends_with_request_queued(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(2);
    for (int round = 0; round < 3; round++) {
        atomic_store(&g_gate, 0);
        tr_pid t;
        assert_int_equal(tr_system_spawn(sys, &gated_b, NULL, &t), TR_OK);
        assert_int_equal(tr_system_send(sys, t, tr_msg_new(MSG_PLAIN, 0)), TR_OK);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, open_gate_later, NULL), 0);
        tr_msg *reply = NULL;
        assert_int_equal(tr_system_call(sys, t, tt_msg_u64(MSG_REQ, 1), 0, &reply), TR_ENOPROC);
        assert_null(reply);
        pthread_join(th, NULL);
    }
    tt_system_end(sys);
}

/* ---- tr_forward ---------------------------------------------------------------------------- */

/* tr_forward / tr_reply_from. A router: a MSG_REQ is handed on to the server it was started with (payload + 1), so the
 * server's reply goes straight to the original requester; a plain message cannot be forwarded,
 * and a request forwarded to a dead pid tells the requester (TR_ENOPROC), as a request would. */
typedef struct router {
    tr_pid server;
} router;

static int router_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    ((router *)state)->server = *(const tr_pid *)arg;
    return 0;
}

static int router_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    router *r = state;
    tr_from from = tr_msg_from(m);
    if (tr_msg_corr(m) == 0) {
        TT_CHECK(from.pid == TR_PID_NONE && from.corr == 0);
        TT_CHECK(tr_forward(ctx, r->server, from, tt_msg_u64(MSG_REQ, 1)) == TR_EINVAL);
        TT_CHECK(tr_reply_from(ctx, from, tt_msg_u64(MSG_ANSWER, 1)) == TR_EINVAL);
        return 0;
    }
    uint64_t v = tt_read_u64(m);
    if (v == 1000) { /* to a dead pid: refused, and the requester is told */
        TT_CHECK(tr_forward(ctx, tr_self(ctx) + 7777, from, tt_msg_u64(MSG_REQ, 1)) == TR_ENOPROC);
        return 0;
    }
    if (v == 2000) { /* answered by the router itself, from the saved return address */
        TT_CHECK(tr_reply_from(ctx, from, tt_msg_u64(MSG_ANSWER, 7)) == TR_OK);
        return 0;
    }
    TT_CHECK(tr_forward(ctx, r->server, from, tt_msg_u64(MSG_REQ, v + 1)) == TR_OK);
    return 0;
}

static const tr_behaviour router_beh = {.name = "router", .state_size = sizeof(router),
                                        .init = router_init, .receive = router_receive};

static void test_forward_answers_the_requester(void **state)
{
    (void)state;
    reset();
    tr_system *sys = new_system(2);
    tr_pid server, rt;
    assert_int_equal(tr_system_spawn(sys, &server_beh, NULL, &server), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &router_beh, &server, &rt), TR_OK);
    for (uint64_t i = 0; i < 100; i++) {
        tr_msg *reply = NULL;
        assert_int_equal(tr_system_call(sys, rt, tt_msg_u64(MSG_REQ, i), 30000, &reply), TR_OK);
        assert_true(tr_msg_is_reply(reply));
        assert_int_equal(tr_msg_sender(reply), server); /* straight from the server */
        assert_int_equal(tt_read_u64(reply), 2 * (i + 1));
        tr_msg_free(reply);
    }
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, rt, tt_msg_u64(MSG_REQ, 1000), 30000, &reply), TR_ENOPROC);
    assert_null(reply);
    assert_int_equal(tr_system_call(sys, rt, tt_msg_u64(MSG_REQ, 2000), 30000, &reply), TR_OK);
    assert_int_equal(tr_msg_sender(reply), rt);
    assert_int_equal(tt_read_u64(reply), 7);
    tr_msg_free(reply);
    assert_int_equal(tr_system_send(sys, rt, tt_msg_u64(MSG_PLAIN, 1)), TR_OK);
    tr_actor_stats as = {0};
    TT_WAIT_FOR((tr_actor_stats_get(sys, rt, &as), as.processed >= 103), TT_DEADLINE_MS);
    assert_int_equal(as.processed, 103);
    tr_system_stats st = tt_stats(sys);
    assert_int_equal(st.late_replies, 0);
    tt_system_end(sys);
    tt_assert_no_failures();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_roundtrip_with_timeout),
    cmocka_unit_test(test_roundtrip_without_timeout),
    cmocka_unit_test_setup_teardown(test_timeout_exactly_once, sys2_up, sys2_down),
    cmocka_unit_test_setup_teardown(test_late_reply_dropped_and_counted, sys2_up, sys2_down),
    cmocka_unit_test_setup_teardown(test_request_to_dead_pid, sys2_up, sys2_down),
    cmocka_unit_test_setup_teardown(test_reply_refused_for_plain_message, sys2_up, sys2_down),
    cmocka_unit_test_setup_teardown(test_call_reply, sys2_up, sys2_down),
    cmocka_unit_test_setup_teardown(test_call_concurrent_callers, sys2_up, sys2_down),
    cmocka_unit_test_setup_teardown(test_call_timeout, sys2_up, sys2_down),
    cmocka_unit_test(test_call_timeouts_racing_replies),
    cmocka_unit_test(test_call_errors),
    cmocka_unit_test(test_call_inside_actor_refused),
    cmocka_unit_test(test_call_on_stopped_system),
    cmocka_unit_test(test_call_target_ends_with_request_queued),
    cmocka_unit_test(test_forward_answers_the_requester),
};

static const struct CMUnitTest regressions[] = {
    cmocka_unit_test(bug_reply_with_request_message),
};

TT_MAIN(tests, regressions)
