/*
 * test_registry.c — local names: register / whereis / unregister, a taken name refused, a name
 * released when its actor ends, bad arguments, and a churn of short-lived named actors (the
 * table does not keep the dead: every name can be taken again); and the name map under it
 * (white-box) against a plain array, through random puts, deletes and sweeps.
 */
#include "core/registry.h"
#include "test_util.h"

#include <stdio.h>
#include <string.h>

static int idle_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    return 0;
}

static const tr_behaviour idle_b = {.name = "idle", .receive = idle_recv};

static tr_pid spawn_idle(tr_system *sys)
{
    tr_pid p;
    assert_int_equal(tr_system_spawn(sys, &idle_b, NULL, &p), TR_OK);
    return p;
}

static void stop_and_wait(tr_system *sys, tr_pid p)
{
    assert_int_equal(tr_system_stop_actor(sys, p), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, p), TT_DEADLINE_MS);
}

static void test_register_whereis_unregister(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(2);
    tr_pid a = spawn_idle(sys), b = spawn_idle(sys), got;
    assert_int_equal(tr_system_whereis(sys, "svc", &got), TR_ENOPROC);
    assert_int_equal(tr_system_register(sys, "svc", a), TR_OK);
    assert_int_equal(tr_system_register(sys, "svc", a), TR_OK); /* again, same holder */
    assert_int_equal(tr_system_register(sys, "svc", b), TR_EEXIST);
    assert_int_equal(tr_system_register(sys, "other", a), TR_OK); /* one actor, two names */
    assert_int_equal(tr_system_whereis(sys, "svc", &got), TR_OK);
    assert_true(got == a);
    assert_int_equal(tr_system_unregister(sys, "svc"), TR_OK);
    assert_int_equal(tr_system_unregister(sys, "svc"), TR_ENOPROC);
    assert_int_equal(tr_system_register(sys, "svc", b), TR_OK);
    assert_int_equal(tr_system_whereis(sys, "svc", &got), TR_OK);
    assert_true(got == b);
    /* the holder ends: the name is free */
    stop_and_wait(sys, b);
    assert_int_equal(tr_system_whereis(sys, "svc", &got), TR_ENOPROC);
    stop_and_wait(sys, a);
    assert_int_equal(tr_system_register(sys, "other", spawn_idle(sys)), TR_OK);
    tt_system_end(sys);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(1);
    tr_pid a = spawn_idle(sys), got;
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(tr_system_register(sys, NULL, a), TR_EINVAL);
    assert_int_equal(tr_system_register(sys, "", a), TR_EINVAL);
    assert_int_equal(tr_system_register(sys, longname, a), TR_EINVAL);
    assert_int_equal(tr_system_register(sys, "x", TR_PID_NONE), TR_EINVAL);
    assert_int_equal(tr_system_register(sys, "x", ((tr_pid)77 << 48) | 5), TR_EINVAL); /* not ours */
    assert_int_equal(tr_system_register(NULL, "x", a), TR_EINVAL);
    assert_int_equal(tr_system_whereis(sys, "x", NULL), TR_EINVAL);
    assert_int_equal(tr_system_unregister(sys, ""), TR_EINVAL);
    stop_and_wait(sys, a);
    assert_int_equal(tr_system_register(sys, "x", a), TR_ENOPROC); /* a dead actor gets no name */
    assert_int_equal(tr_system_whereis(sys, "x", &got), TR_ENOPROC);
    tt_system_end(sys);
}

/* Many short-lived actors, each named once and never unregistered: every name stays usable,
 * and the names of the dead are taken again by the living. */
static void test_churn_of_named_actors(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(2);
    const unsigned rounds = tt_scale(20000, 2000);
    char name[32];
    for (unsigned i = 0; i < rounds; i++) {
        tr_pid p = spawn_idle(sys);
        snprintf(name, sizeof name, "n%u", i % 1000);
        int rc = tr_system_register(sys, name, p);
        if (rc == TR_EEXIST) { /* the previous holder of this name still runs: end it */
            tr_pid old;
            assert_int_equal(tr_system_whereis(sys, name, &old), TR_OK);
            stop_and_wait(sys, old);
            rc = tr_system_register(sys, name, p);
        }
        assert_int_equal(rc, TR_OK);
        tr_pid got;
        assert_int_equal(tr_system_whereis(sys, name, &got), TR_OK);
        assert_true(got == p);
    }
    tt_system_end(sys);
}

static bool drop_odd(void *arg, tr_pid pid)
{
    (void)arg;
    return (pid & 1) != 0;
}

static void test_namemap_against_a_reference(void **state)
{
    (void)state;
    enum { KEYS = 500 };
    tr_pid ref[KEYS] = {0}; /* 0: absent */
    tr_namemap m;
    tr__namemap_init(&m);
    uint64_t seed = 0x1234567887654321ULL;
    char name[16];
    for (unsigned step = 0; step < tt_scale(200000, 20000); step++) {
        unsigned k = (unsigned)(tt_xs64(&seed) % KEYS), op = (unsigned)(tt_xs64(&seed) % 100);
        snprintf(name, sizeof name, "k%u", k);
        if (op < 55) {
            tr_pid v = (tt_xs64(&seed) % 1000) + 1;
            assert_int_equal(tr__namemap_put(&m, name, v), TR_OK);
            ref[k] = v;
        } else if (op < 99) {
            assert_int_equal(tr__namemap_del(&m, name), ref[k] != 0);
            ref[k] = 0;
        } else {
            size_t want = 0;
            for (unsigned i = 0; i < KEYS; i++)
                if (ref[i] != 0 && (ref[i] & 1)) {
                    ref[i] = 0;
                    want++;
                }
            assert_int_equal(tr__namemap_sweep(&m, drop_odd, NULL), want);
        }
        if (step % 997 == 0) {
            size_t len = 0;
            for (unsigned i = 0; i < KEYS; i++) {
                snprintf(name, sizeof name, "k%u", i);
                tr_name_entry *e = tr__namemap_find(&m, name);
                assert_int_equal(e != NULL, ref[i] != 0);
                if (e != NULL)
                    assert_true(e->pid == ref[i]);
                len += ref[i] != 0;
            }
            assert_int_equal(m.len, len);
        }
    }
    tr__namemap_free(&m);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_namemap_against_a_reference),
    cmocka_unit_test(test_register_whereis_unregister),
    cmocka_unit_test(test_bad_arguments),
    cmocka_unit_test(test_churn_of_named_actors),
};

TT_MAIN_PLAIN(tests)
