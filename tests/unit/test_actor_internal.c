/*
 * test_actor_internal.c — white-box checks of the actor header life cycle (internal.h), for the
 * interleavings the public-API stress tests can only hit by chance: a send whose pid lookup
 * happened before its target ended, and whose push comes after.
 *
 * tr__deliver is: a = tr__actor_lookup(pid); m->to = pid; push to a->mbox; if sched flips 0 -> 1,
 * schedule a. The tests below stop between the lookup and the push, end the actor, then perform
 * the rest exactly as tr__deliver does.
 *
 * Also the link set (link.c) on its own: an array for a few links, a hash set above
 * TR_LINKS_ARRAY_MAX, checked op by op against a reference across the threshold both ways.
 */
#include "core/internal.h"
#include "test_util.h"

static atomic_int hook_calls;

static void hook(void *user, tr_pid to, const tr_msg *m)
{
    (void)user;
    (void)to;
    (void)m;
    atomic_fetch_add(&hook_calls, 1);
}

static int stop_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    (void)m;
    tr_stop(ctx);
    return 0;
}

static const tr_behaviour stopper_beh = {.name = "stopper", .receive = stop_receive};
static const tr_behaviour idle_beh = {.name = "idle", .receive = stop_receive};

static tr_system *new_system(void)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 1;
    o.dead_letter_hook = hook;
    atomic_store(&hook_calls, 0);
    return tt_system_start(&o);
}

/* An actor that ends in its own turn leaves its header with pid 0 and sched 1: a late sender can
 * push, but never schedules the header (it may be in a free list). A reused header gets a new
 * generation. */
static void test_header_after_end_in_turn(void **state)
{
    (void)state;
    tr_system *sys = new_system();
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &stopper_beh, NULL, &pid), TR_OK);
    tr_actor *a = tr__actor_lookup(sys, pid);
    assert_non_null(a);
    assert_int_equal(tr_system_send(sys, pid, tr_msg_new(1, 0)), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, pid), TT_DEADLINE_MS);
    TT_WAIT_FOR(tt_stats(sys).ended == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&a->pid), 0);
    assert_int_equal(atomic_load(&a->sched), 1);
    assert_null(tr__actor_lookup(sys, pid));
    tt_system_end(sys);
}

/* REGRESSION (runtime/src/core/system.c end_if_alive + actor.c tr__actor_end; fixed in 3e4106e):
 * tr__actor_end relied on
 * "`sched` stays 1, so no sender schedules it again" -- true for an actor ending in its own turn
 * (sched is 1 while it runs), false for an idle actor ended by tr_system_join (end_if_alive) or by
 * tr_system_free of a never-started system: its sched is 0. A sender that looked the pid up
 * before the end then flipped sched 0 -> 1 and tr__schedule()d a header that tr__actor_release had
 * already put on a free list: inject_push_chain wrote a->link (the free-list link) -> a data race
 * and a corrupted free list. ThreadSanitizer reported exactly this in test_sched (outside senders
 * racing tr_system_join; line numbers of that time):
 *   WARNING: ThreadSanitizer: data race
 *     Write of size 8 by thread T387: inject_push_chain sched.c:90 <- tr__schedule sched.c:279
 *       <- tr__deliver actor.c:341 <- tr_system_send actor.c:379 <- racing_sender_main
 *     Previous write of size 8 by main thread (mutexes: pool_lock): tr__actor_release actor.c:173
 *       <- tr__actor_end actor.c:422 <- end_if_alive system.c:104 <- tr_system_join system.c:134
 * Fixed: tr__actor_end stores sched = busy (seq_cst) before releasing the header. */
static void bug_idle_actor_ended_at_join_keeps_sched_0(void **state)
{
    (void)state;
    tr_system *sys = new_system();
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &idle_beh, NULL, &pid), TR_OK);
    tr_actor *a = tr__actor_lookup(sys, pid); /* a sender's lookup, before the end */
    assert_non_null(a);
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK); /* ends the idle actor */
    assert_int_equal(atomic_load(&a->pid), 0);
    uint32_t sched = atomic_load(&a->sched);
    tr_system_free(sys);
    print_message("sched of the released header: %u (a late sender schedules it when 0)\n", sched);
    assert_int_equal(sched, 1);
}

/* REGRESSION (runtime/src/core/actor.c: tr__deliver / tr__actor_release / free_one; fixed in
 * 3e4106e, and bcaf503 for the send itself): the late half of a send pushed into a header that
 * tr__actor_release had already drained. tr_system_send returned TR_OK, but the message was
 * neither received nor counted: it waited in the free header until the slot was reused, and when
 * it was not, tr_system_free freed it silently (no dead_letters count, no hook). Here the
 * interleaving is forced. Fixed: free_one hands what it finds to tr__dead_letter (3e4106e), and
 * tr__deliver re-checks the pid after pushing (bcaf503). */
static void bug_message_pushed_after_end_is_lost_silently(void **state)
{
    (void)state;
    tr_system *sys = new_system();
    tr_pid pid;
    assert_int_equal(tr_system_spawn(sys, &stopper_beh, NULL, &pid), TR_OK);
    tr_actor *a = tr__actor_lookup(sys, pid); /* first half of tr__deliver */
    assert_non_null(a);
    assert_int_equal(tr_system_send(sys, pid, tr_msg_new(1, 0)), TR_OK); /* it stops */
    TT_WAIT_FOR(tt_stats(sys).ended == 1, TT_DEADLINE_MS);
    /* second half of tr__deliver, as a preempted sender would resume it */
    tr_msg *m = tr_msg_new(2, 0);
    m->to = pid;
    tr__mpsc_push(&a->mbox, &m->node);
    TT_WAIT_FOR(atomic_load(&a->sched) == 1, TT_DEADLINE_MS); /* (true: ended in its turn) */
    tt_system_end(sys); /* no reuse of the slot before the end */
    print_message("dead-letter hook calls for the stranded message: %d\n", atomic_load(&hook_calls));
    assert_int_equal(atomic_load(&hook_calls), 1);
}

/* Every member of the reference (pids ref[0, n)) is in a's set, a walk over the set's slots
 * sees each exactly once, and nothing else. */
static void check_links(const tr_actor *a, const tr_pid *ref, uint32_t n)
{
    const tr_actor_ext *x = a->ext;
    assert_non_null(x);
    assert_int_equal(x->nlinks, n);
    bool table = x->caplinks > TR_LINKS_ARRAY_MAX;
    if (table)
        assert_true((x->caplinks & (x->caplinks - 1)) == 0 && x->nlinks * 2 <= x->caplinks);
    uint32_t span = table ? x->caplinks : x->nlinks, seen = 0;
    for (uint32_t i = 0; i < span; i++) {
        if (x->links[i] == 0) {
            assert_true(table); /* an array has no holes */
            continue;
        }
        seen++;
        uint32_t hits = 0;
        for (uint32_t j = 0; j < n; j++)
            hits += ref[j] == x->links[i];
        assert_int_equal(hits, 1);
    }
    assert_int_equal(seen, n);
    for (uint32_t j = 0; j < n; j++)
        assert_true(tr__link_has(x, ref[j]));
}

static tr_pid some_pid(uint64_t *seed)
{
    /* node, generation and slot bits all vary; never 0 */
    return (tt_xs64(seed) & 0x0003ffffff00ffffULL) | 1u;
}

static void test_link_set_across_threshold(void **state)
{
    (void)state;
    enum { MAXN = 3000 };
    static tr_pid ref[MAXN];
    uint64_t seed = 77;
    tr_actor *a = aligned_alloc(_Alignof(tr_actor), sizeof *a); /* a bare header, no system */
    assert_non_null(a);
    memset(a, 0, sizeof *a);
    uint32_t n = 0;
    assert_int_equal(tr__link_add(a, TR_PID_NONE), TR_EINVAL);
    /* up and down through the threshold several times, to sizes far above it */
    const uint32_t targets[] = {3, 16, 17, 9, 8, 40, 2, 3000, 700, 8, 0, 100, 0};
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        while (n != targets[t]) {
            if (n < targets[t]) {
                tr_pid p = some_pid(&seed);
                if (tr__link_has(a->ext, p))
                    continue;
                assert_int_equal(tr__link_add(a, p), TR_OK);
                assert_int_equal(tr__link_add(a, p), TR_OK); /* twice is once */
                ref[n++] = p;
            } else {
                uint32_t k = (uint32_t)(tt_xs64(&seed) % n);
                tr__link_del(a, ref[k]);
                assert_false(tr__link_has(a->ext, ref[k]));
                tr__link_del(a, ref[k]); /* not there: nothing happens */
                ref[k] = ref[--n];
            }
            if (n < 40 || n % 97 == 0)
                check_links(a, ref, n);
        }
        check_links(a, ref, n);
        const tr_actor_ext *x = a->ext;
        if (n <= TR_LINKS_ARRAY_MAX / 2)
            assert_true(x->caplinks <= TR_LINKS_ARRAY_MAX); /* an array again */
        if (n > TR_LINKS_ARRAY_MAX)
            assert_true(x->caplinks > TR_LINKS_ARRAY_MAX);
        if (x->caplinks > 64)
            assert_true(x->caplinks <= 16 * n); /* memory given back as links go */
    }
    tr__ext_free(a);
    assert_null(a->ext);
    free(a);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_header_after_end_in_turn),
    cmocka_unit_test(test_link_set_across_threshold),
};

static const struct CMUnitTest regressions[] = {
    cmocka_unit_test(bug_idle_actor_ended_at_join_keeps_sched_0),
    cmocka_unit_test(bug_message_pushed_after_end_is_lost_silently),
};

TT_MAIN(tests, regressions)
