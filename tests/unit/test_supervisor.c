/*
 * test_supervisor.c — supervisors: strategies, restart types, intensity and escalation,
 * shutdown order and timeouts, simple_one_for_one, backoff, trees from config files, order with
 * a hundred children, and a simple_one_for_one supervisor with 200,000 children.
 */
#include "test_util.h"
#include "troupe/config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

enum { MSG_FAIL = 1, MSG_STOP = 2, MSG_FAIL_SELF_ON_START = 3 };

/* What each child id does; shared with the tests through the start argument. */
typedef struct probe {
    _Atomic int starts;
    _Atomic int ends;
    bool trap_and_ignore;   /* traps exits and ignores shutdown requests */
    bool crash_loop;        /* fails right after every start */
    int refuse_after;       /* > 0: init refuses once it has started this many times */
    char last_arg[32];
} probe;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char end_log[256];

typedef struct wstate {
    probe *p;
    char name;
} wstate;

static int w_init(tr_ctx *ctx, void *st, const void *arg)
{
    wstate *s = st;
    s->p = (probe *)arg;
    int n = atomic_fetch_add(&s->p->starts, 1) + 1;
    if (s->p->refuse_after > 0 && n > s->p->refuse_after)
        return TR_EINVAL;
    if (s->p->trap_and_ignore)
        tr_trap_exits(ctx, true);
    if (s->p->crash_loop)
        tr_send(ctx, tr_self(ctx), tr_msg_new(MSG_FAIL, 0));
    return 0;
}

static int w_receive(tr_ctx *ctx, void *st, tr_msg *m)
{
    (void)st;
    switch (tr_msg_type(m)) {
    case MSG_FAIL:
        return 7;
    case MSG_STOP:
        tr_stop(ctx);
        return 0;
    default:
        return 0; /* EXIT messages when trapping: ignored */
    }
}

static void w_terminate(tr_ctx *ctx, void *st, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    wstate *s = st;
    atomic_fetch_add(&s->p->ends, 1);
}

static const tr_behaviour worker = {.name = "worker", .state_size = sizeof(wstate), .init = w_init, .receive = w_receive, .terminate = w_terminate};

/* a worker that logs its name (its arg string) when it ends, for shutdown order */
static int n_init(tr_ctx *ctx, void *st, const void *arg)
{
    (void)ctx;
    ((wstate *)st)->name = *(const char *)arg;
    return 0;
}
static void n_terminate(tr_ctx *ctx, void *st, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    pthread_mutex_lock(&log_lock);
    size_t n = strlen(end_log);
    if (n + 1 < sizeof end_log)
        end_log[n] = ((wstate *)st)->name;
    pthread_mutex_unlock(&log_lock);
}
static const tr_behaviour named = {.name = "named", .state_size = sizeof(wstate), .init = n_init, .receive = w_receive, .terminate = n_terminate};

static tr_system *sys_new(void)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 2;
    tr_system *sys;
    assert_int_equal(tr_system_new(&sys, &o), TR_OK);
    assert_int_equal(tr_system_start(sys), TR_OK);
    return sys;
}

static void sys_end(tr_system *sys)
{
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_system_free(sys);
}

static tr_pid which(tr_system *sys, tr_pid sup, const char *id)
{
    tr_pid p = 0;
    int rc = tr_sup_which_child(sys, sup, id, &p);
    return rc == TR_OK ? p : 0;
}

/* Waits until child `id` runs with a pid other than `old` (and not 0); returns it. */
static tr_pid wait_new_pid(tr_system *sys, tr_pid sup, const char *id, tr_pid old)
{
    tr_pid p = 0;
    TT_WAIT_FOR((p = which(sys, sup, id)) != 0 && p != old, TT_DEADLINE_MS);
    return p;
}

static void crash(tr_system *sys, tr_pid pid)
{
    assert_int_equal(tr_system_send(sys, pid, tr_msg_new(MSG_FAIL, 0)), TR_OK);
}

static tr_child_spec child(const char *id, const tr_behaviour *b, const void *arg, tr_restart r)
{
    tr_child_spec c;
    memset(&c, 0, sizeof c);
    c.id = id;
    c.behaviour = b;
    c.arg = arg;
    c.restart = r;
    c.shutdown_ms = 5000;
    return c;
}

static tr_sup_spec spec_of(tr_strategy st, unsigned r, unsigned p, tr_child_spec *kids, size_t n)
{
    tr_sup_spec s;
    memset(&s, 0, sizeof s);
    s.strategy = st;
    s.intensity = r;
    s.period_ms = p;
    s.children = kids;
    s.nchildren = n;
    return s;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_one_for_one_restarts_only_the_failed_child(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe pa = {0}, pb = {0};
    tr_child_spec kids[] = {child("a", &worker, &pa, TR_PERMANENT),
                            child("b", &worker, &pb, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 5, 10000, kids, 2);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid a = which(sys, sup, "a"), b = which(sys, sup, "b");
    assert_true(a != 0 && b != 0 && a != b);
    crash(sys, a);
    tr_pid a2 = wait_new_pid(sys, sup, "a", a);
    assert_int_equal(which(sys, sup, "b"), b);
    assert_int_equal(atomic_load(&pa.starts), 2);
    assert_int_equal(atomic_load(&pb.starts), 1);
    uint64_t running, restarts;
    assert_int_equal(tr_sup_count(sys, sup, &running, &restarts), TR_OK);
    assert_int_equal(running, 2);
    assert_int_equal(restarts, 1);
    tr_actor_stats st;
    assert_int_equal(tr_actor_stats_get(sys, a2, &st), TR_OK);
    assert_int_equal(st.restarts, 1);
    assert_false(tr_system_alive(sys, a));
    sys_end(sys);
}

static void test_intensity_exceeded_stops_children_and_supervisor(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe pa = {0}, pb = {0};
    tr_child_spec kids[] = {child("a", &worker, &pa, TR_PERMANENT),
                            child("b", &worker, &pb, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 2, 60000, kids, 2);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid a = which(sys, sup, "a");
    tr_pid b = which(sys, sup, "b");
    for (int i = 0; i < 2; i++) {
        crash(sys, a);
        a = wait_new_pid(sys, sup, "a", a);
    }
    crash(sys, a); /* the third within the period: more than R = 2 */
    TT_WAIT_FOR(!tr_system_alive(sys, sup), TT_DEADLINE_MS);
    assert_false(tr_system_alive(sys, b));
    TT_WAIT_FOR(atomic_load(&pb.ends) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&pa.starts), 3);
    sys_end(sys);
}

/* The reports a supervisor makes through the log hook (troupe.h, "Logging"), in order. */
typedef struct reports {
    pthread_mutex_t lock;
    int n;
    char line[8][300];
    tr_log_level level[8];
} reports;

static void collect_report(void *user, tr_log_level level, const char *component,
                           const char *line)
{
    reports *r = user;
    if (strcmp(component, "supervisor") != 0)
        return;
    pthread_mutex_lock(&r->lock);
    if (r->n < 8) {
        r->level[r->n] = level;
        snprintf(r->line[r->n], sizeof r->line[0], "%s", line);
    }
    r->n++;
    pthread_mutex_unlock(&r->lock);
}

static int reports_count(reports *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->n;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* A crash, a restart and the giving up are each one line (OTP's crash and supervisor reports);
 * a child the supervisor ends itself (its shutdown) is not reported as a crash. */
static void test_crashes_restarts_and_giving_up_are_reported(void **state)
{
    (void)state;
    static reports r = {.lock = PTHREAD_MUTEX_INITIALIZER};
    tr_log_set(collect_report, &r, TR_LOG_INFO);
    tr_system *sys = sys_new();
    probe pa = {0};
    tr_child_spec kids[] = {child("a", &worker, &pa, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 1, 60000, kids, 1);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid a = which(sys, sup, "a");
    crash(sys, a);
    tr_pid a2 = wait_new_pid(sys, sup, "a", a);
    TT_WAIT_FOR(reports_count(&r) == 2, TT_DEADLINE_MS);
    crash(sys, a2); /* the second within the period: more than R = 1 */
    TT_WAIT_FOR(!tr_system_alive(sys, sup), TT_DEADLINE_MS);
    TT_WAIT_FOR(reports_count(&r) == 4, TT_DEADLINE_MS);
    sys_end(sys);
    tr_log_set(NULL, NULL, TR_LOG_INFO);
    assert_int_equal(r.n, 4);
    char sup_s[32], a_s[32], a2_s[32];
    snprintf(sup_s, sizeof sup_s, "supervisor %#llx: ", (unsigned long long)sup);
    snprintf(a_s, sizeof a_s, "(%#llx, behaviour worker)", (unsigned long long)a);
    snprintf(a2_s, sizeof a2_s, "(%#llx, behaviour worker)", (unsigned long long)a2);
    for (int i = 0; i < 4; i++)
        assert_non_null(strstr(r.line[i], sup_s));
    assert_int_equal(r.level[0], TR_LOG_ERROR);
    assert_non_null(strstr(r.line[0], "child a "));
    assert_non_null(strstr(r.line[0], a_s));
    assert_non_null(strstr(r.line[0], "crashed: error 7"));
    assert_int_equal(r.level[1], TR_LOG_INFO);
    assert_non_null(strstr(r.line[1], "restarted child a "));
    assert_non_null(strstr(r.line[1], a2_s));
    assert_int_equal(r.level[2], TR_LOG_ERROR);
    assert_non_null(strstr(r.line[2], a2_s));
    assert_int_equal(r.level[3], TR_LOG_ERROR);
    assert_non_null(strstr(r.line[3], "giving up: more than 1 restarts within 60000 ms"));
}

static void test_one_for_all_restarts_every_child(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe pa = {0}, pb = {0}, pc = {0};
    tr_child_spec kids[] = {child("a", &worker, &pa, TR_PERMANENT),
                            child("b", &worker, &pb, TR_PERMANENT),
                            child("c", &worker, &pc, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ALL, 5, 10000, kids, 3);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid a = which(sys, sup, "a"), b = which(sys, sup, "b"), c = which(sys, sup, "c");
    crash(sys, b);
    wait_new_pid(sys, sup, "a", a);
    wait_new_pid(sys, sup, "b", b);
    wait_new_pid(sys, sup, "c", c);
    assert_int_equal(atomic_load(&pa.starts), 2);
    assert_int_equal(atomic_load(&pb.starts), 2);
    assert_int_equal(atomic_load(&pc.starts), 2);
    assert_int_equal(atomic_load(&pa.ends), 1);
    assert_int_equal(atomic_load(&pc.ends), 1);
    sys_end(sys);
}

static void test_rest_for_one_restarts_later_children(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe pa = {0}, pb = {0}, pc = {0};
    tr_child_spec kids[] = {child("a", &worker, &pa, TR_PERMANENT),
                            child("b", &worker, &pb, TR_PERMANENT),
                            child("c", &worker, &pc, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_REST_FOR_ONE, 5, 10000, kids, 3);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid a = which(sys, sup, "a"), b = which(sys, sup, "b"), c = which(sys, sup, "c");
    crash(sys, b);
    wait_new_pid(sys, sup, "b", b);
    wait_new_pid(sys, sup, "c", c);
    assert_int_equal(which(sys, sup, "a"), a);
    assert_int_equal(atomic_load(&pa.starts), 1);
    assert_int_equal(atomic_load(&pc.starts), 2);
    sys_end(sys);
}

static void test_restart_types(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe pt = {0}, pn = {0}, pf = {0};
    tr_child_spec kids[] = {child("temp", &worker, &pt, TR_TEMPORARY),
                            child("trans_normal", &worker, &pn, TR_TRANSIENT),
                            child("trans_fail", &worker, &pf, TR_TRANSIENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 5, 10000, kids, 3);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    crash(sys, which(sys, sup, "temp"));
    assert_int_equal(tr_system_send(sys, which(sys, sup, "trans_normal"), tr_msg_new(MSG_STOP, 0)),
                     TR_OK);
    tr_pid f = which(sys, sup, "trans_fail");
    crash(sys, f);
    wait_new_pid(sys, sup, "trans_fail", f);
    TT_WAIT_FOR(atomic_load(&pt.ends) == 1 && atomic_load(&pn.ends) == 1, TT_DEADLINE_MS);
    uint64_t running = 0;
    TT_WAIT_FOR(tr_sup_count(sys, sup, &running, NULL) == TR_OK && running == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&pt.starts), 1);
    assert_int_equal(atomic_load(&pn.starts), 1);
    assert_int_equal(which(sys, sup, "temp"), 0);
    sys_end(sys);
}

static void test_shutdown_in_reverse_start_order(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    memset(end_log, 0, sizeof end_log);
    tr_child_spec kids[] = {child("a", &named, "a", TR_PERMANENT),
                            child("b", &named, "b", TR_PERMANENT),
                            child("c", &named, "c", TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 5, 10000, kids, 3);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    const tr_reason shutdown = {.kind = TR_REASON_SHUTDOWN};
    assert_int_equal(tr_system_exit(sys, sup, &shutdown), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, sup), TT_DEADLINE_MS);
    pthread_mutex_lock(&log_lock);
    assert_string_equal(end_log, "cba");
    pthread_mutex_unlock(&log_lock);
    sys_end(sys);
}

static void test_shutdown_timeout_then_kill(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe stubborn = {.trap_and_ignore = true}, quick = {.trap_and_ignore = true};
    tr_child_spec kids[] = {child("stubborn", &worker, &stubborn, TR_PERMANENT),
                            child("brutal", &worker, &quick, TR_PERMANENT)};
    kids[0].shutdown_ms = 100;
    kids[1].shutdown_ms = TR_SHUTDOWN_BRUTAL;
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 5, 10000, kids, 2);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid s = which(sys, sup, "stubborn"), b = which(sys, sup, "brutal");
    uint64_t t0 = (tt_now_ns() / 1000000u);
    assert_int_equal(tr_sup_terminate_child(sys, sup, s), TR_OK);
    assert_true((tt_now_ns() / 1000000u) - t0 >= 100); /* it ignored the shutdown: killed after 100 ms */
    assert_false(tr_system_alive(sys, s));
    assert_int_equal(tr_sup_terminate_child(sys, sup, b), TR_OK);
    assert_false(tr_system_alive(sys, b));
    assert_int_equal(atomic_load(&stubborn.starts), 1); /* terminated for good: no restart */
    uint64_t running = 9;
    assert_int_equal(tr_sup_count(sys, sup, &running, NULL), TR_OK);
    assert_int_equal(running, 0);
    sys_end(sys);
}

static int arg_init(tr_ctx *ctx, void *st, const void *arg)
{
    (void)ctx;
    (void)st;
    const char *s = arg;
    if (strcmp(s, "refuse") == 0)
        return TR_EINVAL;
    return 0;
}

static int arg_receive(tr_ctx *ctx, void *st, tr_msg *m)
{
    (void)st;
    if (tr_msg_type(m) == MSG_STOP)
        tr_stop(ctx);
    return tr_msg_type(m) == MSG_FAIL ? 7 : 0;
}
static const tr_behaviour skuw = {.name = "sku", .init = arg_init, .receive = arg_receive};

static void test_simple_one_for_one(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    tr_child_spec tmpl = child("sku", &skuw, NULL, TR_TRANSIENT);
    tr_sup_spec spec = spec_of(TR_SIMPLE_ONE_FOR_ONE, 10, 10000, &tmpl, 1);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid kids[3];
    const char *skus[] = {"sku-1", "sku-2", "sku-3"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tr_sup_start_child(sys, sup, skus[i], strlen(skus[i]) + 1, &kids[i]),
                         TR_OK);
    assert_int_equal(tr_sup_start_child(sys, sup, "refuse", 7, NULL), TR_EINVAL);
    uint64_t running = 0, restarts = 0;
    assert_int_equal(tr_sup_count(sys, sup, &running, NULL), TR_OK);
    assert_int_equal(running, 3);
    assert_int_equal(tr_sup_terminate_child(sys, sup, kids[1]), TR_OK);
    assert_false(tr_system_alive(sys, kids[1]));
    crash(sys, kids[2]); /* transient + abnormal: restarted with its own argument */
    TT_WAIT_FOR(tr_sup_count(sys, sup, &running, &restarts) == TR_OK && restarts == 1 &&
                running == 2, TT_DEADLINE_MS);
    assert_int_equal(tr_system_send(sys, kids[0], tr_msg_new(MSG_STOP, 0)), TR_OK);
    TT_WAIT_FOR(tr_sup_count(sys, sup, &running, NULL) == TR_OK && running == 1, TT_DEADLINE_MS);
    assert_int_equal(tr_sup_terminate_child(sys, sup, kids[0]), TR_ENOPROC);
    sys_end(sys);
}

/* tr_sup_start_child_async: an actor starts children without blocking; the answers come as
 * replies (a started child's pid, or the refusal's code). */
static _Atomic uint64_t g_async_pid;
static atomic_int g_async_refused, g_async_answers;

static int starter_receive(tr_ctx *ctx, void *st, tr_msg *m)
{
    (void)st;
    if (tr_msg_is_reply(m)) {
        tr_pid child_pid;
        int rc = tr_sup_started(m, &child_pid);
        if (rc == TR_OK)
            atomic_store(&g_async_pid, child_pid);
        else if (rc == TR_EINVAL)
            atomic_fetch_add(&g_async_refused, 1);
        atomic_fetch_add(&g_async_answers, 1);
        return 0;
    }
    tr_pid sup = (tr_pid)tt_read_u64(m);
    uint64_t c1 = 0, c2 = 0;
    TT_CHECK(tr_sup_start_child_async(ctx, sup, "sku-async", 10, 30000, &c1) == TR_OK);
    TT_CHECK(tr_sup_start_child_async(ctx, sup, "refuse", 7, 30000, &c2) == TR_OK);
    TT_CHECK(c1 != 0 && c2 != 0 && c1 != c2);
    return 0;
}
static const tr_behaviour starter = {.name = "starter", .receive = starter_receive};

static void test_start_child_async_from_an_actor(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    tr_child_spec tmpl = child("sku", &skuw, NULL, TR_TEMPORARY);
    tr_sup_spec spec = spec_of(TR_SIMPLE_ONE_FOR_ONE, 10, 10000, &tmpl, 1);
    tr_pid sup, st;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &starter, NULL, &st), TR_OK);
    assert_int_equal(tr_system_send(sys, st, tt_msg_u64(1, sup)), TR_OK);
    TT_WAIT_FOR(atomic_load(&g_async_answers) == 2, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g_async_refused), 1);
    assert_true(tr_system_alive(sys, (tr_pid)atomic_load(&g_async_pid)));
    uint64_t running = 0;
    assert_int_equal(tr_sup_count(sys, sup, &running, NULL), TR_OK);
    assert_int_equal(running, 1);
    assert_int_equal(tr_sup_started(NULL, NULL), TR_EINVAL);
    sys_end(sys);
}

static void test_nested_supervisor_escalates(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe pw = {0};
    tr_child_spec inner_kids[] = {child("w", &worker, &pw, TR_PERMANENT)};
    tr_sup_spec inner = spec_of(TR_ONE_FOR_ONE, 0, 1000, inner_kids, 1); /* gives up at once */
    tr_child_spec outer_kids[] = {child("inner", NULL, NULL, TR_PERMANENT)};
    outer_kids[0].supervisor = &inner;
    tr_sup_spec outer = spec_of(TR_ONE_FOR_ONE, 5, 10000, outer_kids, 1);
    tr_pid top;
    assert_int_equal(tr_sup_start(sys, &outer, &top), TR_OK);
    tr_pid in = which(sys, top, "inner");
    tr_pid w = which(sys, in, "w");
    assert_true(in != 0 && w != 0);
    crash(sys, w);
    tr_pid in2 = wait_new_pid(sys, top, "inner", in);
    tr_pid w2 = 0;
    TT_WAIT_FOR((w2 = which(sys, in2, "w")) != 0, TT_DEADLINE_MS);
    assert_true(w2 != w);
    assert_int_equal(atomic_load(&pw.starts), 2);
    assert_false(tr_system_alive(sys, in));
    sys_end(sys);
}

static void test_backoff_slows_a_crash_loop(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe loop = {.crash_loop = true};
    tr_child_spec kids[] = {child("loop", &worker, &loop, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 1000000, 1000, kids, 1);
    spec.backoff_min_ms = 50;
    spec.backoff_max_ms = 200;
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    uint64_t t0 = (tt_now_ns() / 1000000u);
    TT_WAIT_FOR(atomic_load(&loop.starts) >= 3, TT_DEADLINE_MS);
    uint64_t elapsed = (tt_now_ns() / 1000000u) - t0;
    int starts = atomic_load(&loop.starts);
    /* delays 50, 100, 200, 200...: at most 1 + elapsed/50 starts, however fast the machine */
    assert_true((uint64_t)starts <= 1 + elapsed / 50 + 1);
    assert_true(elapsed >= 50 + 100 - 10 || starts < 3);
    sys_end(sys);
}

static void test_no_backoff_restart_is_immediate_and_counted(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe loop = {.crash_loop = true};
    tr_child_spec kids[] = {child("loop", &worker, &loop, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 1000, 60000, kids, 1);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    /* 1 start + 1000 restarts allowed, the 1001st restart escalates */
    TT_WAIT_FOR(!tr_system_alive(sys, sup), TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&loop.starts), 1001);
    sys_end(sys);
}

/* A child that can no longer start: each refused start counts as a restart, retried without
 * recursion, until the intensity makes the supervisor give up. */
static void test_child_that_cannot_restart_escalates(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe p = {.refuse_after = 1};
    tr_child_spec kids[] = {child("a", &worker, &p, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 100000, 60000, kids, 1);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    crash(sys, which(sys, sup, "a"));
    TT_WAIT_FOR(!tr_system_alive(sys, sup), TT_DEADLINE_MS);
    /* the first start, then one refused start per allowed restart */
    assert_int_equal(atomic_load(&p.starts), 1 + 100000);
    sys_end(sys);
}

/* OTP's choice: what was queued in a crashed child's mailbox is dropped and counted (dead letters);
 * the restarted child starts empty. */
static void test_crashed_childs_queue_is_dropped_and_counted(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe p = {.trap_and_ignore = false};
    tr_child_spec kids[] = {child("a", &worker, &p, TR_PERMANENT)};
    tr_sup_spec spec = spec_of(TR_ONE_FOR_ONE, 5, 10000, kids, 1);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    tr_pid a = which(sys, sup, "a");
    tr_system_stats before, after;
    tr_system_stats_get(sys, &before);
    crash(sys, a);
    for (int i = 0; i < 9; i++) {
        int rc = tr_system_send(sys, a, tr_msg_new(99, 0));
        assert_true(rc == TR_OK || rc == TR_ENOPROC); /* queued then dropped, or too late */
    }
    wait_new_pid(sys, sup, "a", a);
    TT_WAIT_FOR((tr_system_stats_get(sys, &after), after.dead_letters - before.dead_letters == 9),
                TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&p.starts), 2);
    sys_end(sys);
}

static void test_bad_specs_are_refused(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    probe p = {0};
    tr_child_spec dup[] = {child("a", &worker, &p, TR_PERMANENT),
                           child("a", &worker, &p, TR_PERMANENT)};
    tr_sup_spec s = spec_of(TR_ONE_FOR_ONE, 1, 1000, dup, 2);
    tr_pid sup;
    assert_int_equal(tr_sup_start(sys, &s, &sup), TR_EINVAL);
    s = spec_of(TR_SIMPLE_ONE_FOR_ONE, 1, 1000, dup, 2);
    assert_int_equal(tr_sup_start(sys, &s, &sup), TR_EINVAL);
    tr_child_spec none[] = {child("x", NULL, NULL, TR_PERMANENT)};
    s = spec_of(TR_ONE_FOR_ONE, 1, 1000, none, 1);
    assert_int_equal(tr_sup_start(sys, &s, &sup), TR_EINVAL);
    s = spec_of(TR_ONE_FOR_ONE, 2000000, 1000, NULL, 0);
    assert_int_equal(tr_sup_start(sys, &s, &sup), TR_EINVAL);
    assert_int_equal(tr_sup_start(sys, NULL, &sup), TR_EINVAL);
    /* a child whose init fails makes the start fail, and the started ones end */
    tr_child_spec refuse[] = {child("a", &worker, &p, TR_PERMANENT),
                              child("b", &skuw, "refuse", TR_PERMANENT)};
    s = spec_of(TR_ONE_FOR_ONE, 1, 1000, refuse, 2);
    assert_int_equal(tr_sup_start(sys, &s, &sup), TR_EINVAL);
    TT_WAIT_FOR(atomic_load(&p.ends) == 1, TT_DEADLINE_MS);
    sys_end(sys);
}

static void test_tree_from_config_file(void **state)
{
    (void)state;
    const char *text =
        "top = { strategy = \"one_for_one\"; intensity = 3; period_ms = 1000;\n"
        "  children = ( { id = \"email\"; behaviour = \"sku\"; arg = \"x\";\n"
        "                 mailbox = { capacity = 100; overflow = \"reject\"; limit = \"token\";"
        "                             rate = 50; burst = 50; }; },\n"
        "               { id = \"orders\"; supervisor = { strategy = \"simple_one_for_one\";\n"
        "                   children = ( { id = \"order\"; behaviour = \"sku\"; } ); }; } ); };\n";
    const tr_behaviour *reg[] = {&skuw};
    tr_sup_tree *tree;
    char err[256];
    assert_int_equal(tr_sup_tree_parse(text, "top", reg, 1, &tree, err, sizeof err), TR_OK);
    tr_system *sys = sys_new();
    tr_pid top;
    assert_int_equal(tr_sup_start(sys, tr_sup_tree_spec(tree), &top), TR_OK);
    tr_sup_tree_free(tree); /* the supervisor keeps its own copy */
    tr_pid email = which(sys, top, "email"), orders = which(sys, top, "orders");
    assert_true(email != 0 && orders != 0);
    tr_pid o1;
    assert_int_equal(tr_sup_start_child(sys, orders, "sku-9", 6, &o1), TR_OK);
    /* the email child got its mailbox limits from the file */
    for (int i = 0; i < 150; i++)
        tr_system_send(sys, email, tr_msg_new(5, 0));
    tr_actor_stats st;
    TT_WAIT_FOR(tr_actor_stats_get(sys, email, &st) == TR_OK &&
                st.processed + st.rejected + st.depth == 150, TT_DEADLINE_MS);
    assert_true(st.processed <= 150);
    sys_end(sys);
}

/* ---- many children ----------------------------------------------------------------------------
 * Order-dependent strategies keep their order with a hundred children, some of them removed
 * from the middle; a simple_one_for_one supervisor with 200,000 children has them all started,
 * killed and restarted, then all ending, and counts them right (the supervisor's bookkeeping is
 * O(1) per child: this would take minutes if it were O(N)). */

#define NMANY 100
#define ORDER_LOG_MAX 1024

static struct {
    pthread_mutex_t lock;
    int starts[ORDER_LOG_MAX], ends[ORDER_LOG_MAX];
    int nstarts, nends;
} olog = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void olog_reset(void)
{
    pthread_mutex_lock(&olog.lock);
    olog.nstarts = olog.nends = 0;
    pthread_mutex_unlock(&olog.lock);
}

static int o_init(tr_ctx *ctx, void *st, const void *arg)
{
    (void)ctx;
    int i = *(const int *)arg;
    *(int *)st = i;
    pthread_mutex_lock(&olog.lock);
    if (olog.nstarts < ORDER_LOG_MAX)
        olog.starts[olog.nstarts++] = i;
    pthread_mutex_unlock(&olog.lock);
    return 0;
}

static void o_terminate(tr_ctx *ctx, void *st, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    pthread_mutex_lock(&olog.lock);
    if (olog.nends < ORDER_LOG_MAX)
        olog.ends[olog.nends++] = *(int *)st;
    pthread_mutex_unlock(&olog.lock);
}

static const tr_behaviour ordered = {.name = "ordered", .state_size = sizeof(int), .init = o_init, .receive = w_receive, .terminate = o_terminate};

static int many_idx[NMANY];
static char many_id[NMANY][8];
static tr_child_spec many_kids[NMANY];

/* NMANY children "c00".."c99" of `ordered`; those with i % 10 == 5 are temporary. */
static tr_sup_spec many_spec(tr_strategy st)
{
    for (int i = 0; i < NMANY; i++) {
        many_idx[i] = i;
        snprintf(many_id[i], sizeof many_id[i], "c%02d", i);
        many_kids[i] = child(many_id[i], &ordered, &many_idx[i],
                             i % 10 == 5 ? TR_TEMPORARY : TR_PERMANENT);
    }
    return spec_of(st, 50, 10000, many_kids, NMANY);
}

static bool olog_has(int n, int m)
{
    pthread_mutex_lock(&olog.lock);
    bool ok = olog.nends >= n && olog.nstarts >= m;
    pthread_mutex_unlock(&olog.lock);
    return ok;
}

/* Waits until the log holds `n` ends and `m` starts, checks them against the lists (exactly
 * these, in this order), and empties it. */
static void olog_expect(const int *ends, int n, const int *starts, int m)
{
    TT_WAIT_FOR(olog_has(n, m), TT_DEADLINE_MS);
    pthread_mutex_lock(&olog.lock);
    assert_int_equal(olog.nends, n);
    assert_int_equal(olog.nstarts, m);
    for (int i = 0; i < n; i++)
        assert_int_equal(olog.ends[i], ends[i]);
    for (int i = 0; i < m; i++)
        assert_int_equal(olog.starts[i], starts[i]);
    olog.nends = olog.nstarts = 0;
    pthread_mutex_unlock(&olog.lock);
}

static void start_many(tr_system *sys, tr_sup_spec *spec, tr_pid *sup)
{
    olog_reset();
    assert_int_equal(tr_sup_start(sys, spec, sup), TR_OK);
    int starts[NMANY];
    for (int i = 0; i < NMANY; i++)
        starts[i] = i;
    olog_expect(NULL, 0, starts, NMANY);
}

static void test_rest_for_one_order_with_many_children(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    tr_sup_spec spec = many_spec(TR_REST_FOR_ONE);
    tr_pid sup;
    start_many(sys, &spec, &sup);
    int ends[NMANY + 1], starts[NMANY];
    /* a temporary child in the middle fails: forgotten, nothing else happens */
    crash(sys, which(sys, sup, "c25"));
    ends[0] = 25;
    olog_expect(ends, 1, NULL, 0);
    /* c30 fails: c99..c31 stopped in reverse start order, then c30.. restarted in start order
     * (the temporary ones among them stopped for good) */
    crash(sys, which(sys, sup, "c30"));
    int n = 0, m = 0;
    ends[n++] = 30;
    for (int i = NMANY - 1; i > 30; i--)
        ends[n++] = i;
    for (int i = 30; i < NMANY; i++)
        if (i % 10 != 5)
            starts[m++] = i;
    olog_expect(ends, n, starts, m);
    uint64_t running = 0;
    assert_int_equal(tr_sup_count(sys, sup, &running, NULL), TR_OK);
    assert_int_equal(running, NMANY - 8); /* c25, c35 .. c95 are gone */
    /* shutdown: every child left, in reverse start order (a restarted child kept its place) */
    const tr_reason shutdown = {.kind = TR_REASON_SHUTDOWN};
    assert_int_equal(tr_system_exit(sys, sup, &shutdown), TR_OK);
    n = 0;
    for (int i = NMANY - 1; i >= 0; i--)
        if (i % 10 != 5 || i < 25)
            ends[n++] = i;
    olog_expect(ends, n, NULL, 0);
    TT_WAIT_FOR(!tr_system_alive(sys, sup), TT_DEADLINE_MS);
    sys_end(sys);
}

static void test_one_for_all_order_with_many_children(void **state)
{
    (void)state;
    tr_system *sys = sys_new();
    tr_sup_spec spec = many_spec(TR_ONE_FOR_ALL);
    tr_pid sup;
    start_many(sys, &spec, &sup);
    int ends[NMANY], starts[NMANY];
    crash(sys, which(sys, sup, "c15")); /* temporary: forgotten alone */
    ends[0] = 15;
    olog_expect(ends, 1, NULL, 0);
    /* c60 fails: every other child stopped in reverse start order, the permanent ones
     * restarted in start order */
    crash(sys, which(sys, sup, "c60"));
    int n = 0, m = 0;
    ends[n++] = 60;
    for (int i = NMANY - 1; i >= 0; i--)
        if (i != 60 && i != 15)
            ends[n++] = i;
    for (int i = 0; i < NMANY; i++)
        if (i % 10 != 5)
            starts[m++] = i;
    olog_expect(ends, n, starts, m);
    uint64_t running = 0;
    assert_int_equal(tr_sup_count(sys, sup, &running, NULL), TR_OK);
    assert_int_equal(running, NMANY - 10);
    sys_end(sys);
}

/* simple_one_for_one with many children: the child's arg points at its slot in kid_pid. */
enum { MSG_KID_STOP = 40 };
static _Atomic tr_pid *kid_pid;
static _Atomic uint64_t kid_starts;

static int kid_init(tr_ctx *ctx, void *st, const void *arg)
{
    (void)st;
    atomic_store((_Atomic tr_pid *)arg, tr_self(ctx));
    atomic_fetch_add(&kid_starts, 1);
    return 0;
}

static int kid_receive(tr_ctx *ctx, void *st, tr_msg *m)
{
    (void)st;
    if (tr_msg_type(m) == MSG_KID_STOP)
        tr_stop(ctx);
    return 0;
}

static const tr_behaviour kidw = {.name = "kid", .init = kid_init, .receive = kid_receive};

typedef struct kid_starter {
    tr_pid sup;
    uint64_t n, sent, answered;
} kid_starter;
static _Atomic uint64_t kid_started, kid_refused;

/* Starts n children, 256 requests in flight. */
static int kid_starter_receive(tr_ctx *ctx, void *st, tr_msg *m)
{
    kid_starter *s = st;
    if (tr_msg_is_reply(m)) {
        if (tr_sup_started(m, NULL) == TR_OK)
            atomic_fetch_add(&kid_started, 1);
        else
            atomic_fetch_add(&kid_refused, 1);
        s->answered++;
    } else {
        uint64_t v[2];
        TT_CHECK(tt_read_u64s(m, 2, v) == TR_OK);
        s->sup = v[0];
        s->n = v[1];
    }
    while (s->sent < s->n && s->sent - s->answered < 256) {
        uint64_t corr;
        TT_CHECK(tr_sup_start_child_async(ctx, s->sup, (const void *)&kid_pid[s->sent], 0,
                                          600000, &corr) == TR_OK);
        s->sent++;
    }
    return 0;
}

static const tr_behaviour kid_starter_b = {.name = "kid-starter", .state_size = sizeof(kid_starter), .receive = kid_starter_receive};

static uint64_t running_of(tr_system *sys, tr_pid sup, uint64_t *restarts)
{
    uint64_t running = UINT64_MAX;
    if (tr_sup_count(sys, sup, &running, restarts) != TR_OK)
        return UINT64_MAX;
    return running;
}

static void test_simple_one_for_one_with_many_children(void **state)
{
    (void)state;
    const uint64_t n = tt_scale(200000, 20000);
    kid_pid = calloc(n + 3, sizeof *kid_pid); /* n, then 3 more */
    assert_non_null(kid_pid);
    atomic_store(&kid_starts, 0);
    atomic_store(&kid_started, 0);
    atomic_store(&kid_refused, 0);
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 2;
    o.drain_timeout_ms = 120000;
    tr_system *sys = tt_system_start(&o);
    tr_child_spec tmpl = child("kid", &kidw, NULL, TR_TRANSIENT);
    tmpl.shutdown_ms = TR_SHUTDOWN_BRUTAL;
    tr_sup_spec spec = spec_of(TR_SIMPLE_ONE_FOR_ONE, 1000000, 3600000, &tmpl, 1);
    tr_pid sup, kstarter;
    assert_int_equal(tr_sup_start(sys, &spec, &sup), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &kid_starter_b, NULL, &kstarter), TR_OK);
    /* all started */
    const uint64_t go[2] = {sup, n};
    assert_int_equal(tr_system_send(sys, kstarter, tt_msg_u64s(1, 2, go)), TR_OK);
    TT_WAIT_FOR(atomic_load(&kid_started) == n, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&kid_refused), 0);
    uint64_t restarts = 9;
    assert_int_equal(running_of(sys, sup, &restarts), n);
    assert_int_equal(restarts, 0);
    /* all killed: each restarted once (transient, abnormal end), with its own argument */
    tr_pid *first = malloc(n * sizeof *first);
    assert_non_null(first);
    const tr_reason kill = {.kind = TR_REASON_KILLED};
    for (uint64_t i = 0; i < n; i++) {
        first[i] = atomic_load(&kid_pid[i]);
        assert_true(first[i] != 0);
        assert_int_equal(tr_system_exit(sys, first[i], &kill), TR_OK);
    }
    TT_WAIT_FOR(running_of(sys, sup, &restarts) == n && restarts == n, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&kid_starts), 2 * n);
    for (uint64_t i = 0; i < n; i++) {
        tr_pid p = atomic_load(&kid_pid[i]);
        assert_true(p != 0 && p != first[i]);
        assert_false(tr_system_alive(sys, first[i]));
    }
    /* all end normally: forgotten, not restarted */
    for (uint64_t i = 0; i < n; i++)
        assert_int_equal(tr_system_send(sys, atomic_load(&kid_pid[i]), tr_msg_new(MSG_KID_STOP, 0)),
                         TR_OK);
    TT_WAIT_FOR(running_of(sys, sup, &restarts) == 0, TT_DEADLINE_MS);
    assert_int_equal(restarts, n);
    assert_int_equal(atomic_load(&kid_starts), 2 * n);
    /* the supervisor still serves: a few more, one terminated from among them, then a shutdown */
    const uint64_t go2[2] = {sup, n + 3};
    assert_int_equal(tr_system_send(sys, kstarter, tt_msg_u64s(1, 2, go2)), TR_OK);
    TT_WAIT_FOR(atomic_load(&kid_started) == n + 3, TT_DEADLINE_MS);
    assert_int_equal(running_of(sys, sup, NULL), 3);
    assert_int_equal(tr_sup_terminate_child(sys, sup, atomic_load(&kid_pid[n + 1])), TR_OK);
    assert_int_equal(running_of(sys, sup, NULL), 2);
    sys_end(sys);
    free(first);
    free((void *)kid_pid);
    kid_pid = NULL;
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_one_for_one_restarts_only_the_failed_child),
    cmocka_unit_test(test_crashes_restarts_and_giving_up_are_reported),
    cmocka_unit_test(test_intensity_exceeded_stops_children_and_supervisor),
    cmocka_unit_test(test_one_for_all_restarts_every_child),
    cmocka_unit_test(test_rest_for_one_restarts_later_children),
    cmocka_unit_test(test_restart_types),
    cmocka_unit_test(test_shutdown_in_reverse_start_order),
    cmocka_unit_test(test_shutdown_timeout_then_kill),
    cmocka_unit_test(test_simple_one_for_one),
    cmocka_unit_test(test_start_child_async_from_an_actor),
    cmocka_unit_test(test_nested_supervisor_escalates),
    cmocka_unit_test(test_backoff_slows_a_crash_loop),
    cmocka_unit_test(test_no_backoff_restart_is_immediate_and_counted),
    cmocka_unit_test(test_child_that_cannot_restart_escalates),
    cmocka_unit_test(test_crashed_childs_queue_is_dropped_and_counted),
    cmocka_unit_test(test_bad_specs_are_refused),
    cmocka_unit_test(test_tree_from_config_file),
    cmocka_unit_test(test_rest_for_one_order_with_many_children),
    cmocka_unit_test(test_one_for_all_order_with_many_children),
    cmocka_unit_test(test_simple_one_for_one_with_many_children),
};

TT_MAIN_PLAIN(tests)
