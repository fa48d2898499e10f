/*
 * test_singleton.c — troupe/singleton.h: one actor in the cluster, kept running, moved, found.
 *
 * On one system: it runs at once, is found by name, is started again after it ends (at the next
 * check, not in a loop), and bad options are refused. On two nodes in this process (loopback):
 * exactly one of the two runs it and both find that one; the owner going away moves it to the
 * other; start_here runs it on the starting node first and the next check moves it.
 */
#include "test_nodes.h"
#include "test_util.h"

#include <string.h>
#include <troupe/node.h>
#include <troupe/singleton.h>

enum { MSG_WHO = 1, MSG_CRASH };

static _Atomic uint64_t g_starts;

static int single_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx, (void)state, (void)arg;
    atomic_fetch_add(&g_starts, 1);
    return 0;
}

/* MSG_WHO -> [node id]; MSG_CRASH: it fails. */
static int single_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == MSG_CRASH)
        return TR_EINVAL;
    if (tr_msg_type(m) == MSG_WHO)
        return tr_reply(ctx, m, tr_msg_new_u64(MSG_WHO, tr_pid_node(tr_self(ctx))));
    return 0;
}

static const tr_behaviour single_b = {
    .name = "single", .init = single_init, .receive = single_receive};

static int refusing_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx, (void)state, (void)arg;
    return TR_EIO;
}

static const tr_behaviour refusing_b = {
    .name = "refusing", .init = refusing_init, .receive = single_receive};

static void test_one_system(void **state)
{
    (void)state;
    atomic_store(&g_starts, 0);
    tr_system *sys = tt_system_workers(2);
    tr_singleton_opts bad = {.name = "bad name!", .behaviour = &single_b};
    tr_singleton *s = NULL;
    assert_int_equal(tr_singleton_start(sys, &bad, &s), TR_EINVAL);
    bad = (tr_singleton_opts){.name = "x", .behaviour = &single_b, .spawn = {.link = true}};
    assert_int_equal(tr_singleton_start(sys, &bad, &s), TR_EINVAL);
    bad = (tr_singleton_opts){.name = "x"};
    assert_int_equal(tr_singleton_start(sys, &bad, &s), TR_EINVAL);
    /* one that cannot start: start_here says so at once; without it, the keeper keeps trying */
    bad = (tr_singleton_opts){.name = "refuses", .behaviour = &refusing_b, .start_here = true};
    assert_int_equal(tr_singleton_start(sys, &bad, &s), TR_EIO);
    bad.start_here = false;
    assert_int_equal(tr_singleton_start(sys, &bad, &s), TR_OK);
    assert_false(tr_singleton_here(s));
    tr_pid none;
    assert_int_equal(tr_singleton_whereis(s, &none), TR_ENOPROC);
    tr_singleton *refuses = s;

    tr_singleton_opts o = {.name = "app/clock", .behaviour = &single_b, .check_ms = 50};
    assert_int_equal(tr_singleton_start(sys, &o, &s), TR_OK);
    assert_true(tr_singleton_here(s)); /* no node: this node owns it, started at once */
    assert_int_equal(atomic_load(&g_starts), 1);
    tr_pid first = TR_PID_NONE, now = TR_PID_NONE;
    assert_int_equal(tr_singleton_whereis(s, &first), TR_OK);
    assert_true(tr_system_alive(sys, first));
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, first, tr_msg_new(MSG_WHO, 0), 10000, &reply), TR_OK);
    tr_msg_free(reply);
    /* it crashes: started again at a later check, under the same name */
    assert_int_equal(tr_system_send(sys, first, tr_msg_new(MSG_CRASH, 0)), TR_OK);
    TT_WAIT_FOR(tr_singleton_whereis(s, &now) == TR_OK && now != first &&
                    tr_system_alive(sys, now),
                TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g_starts), 2);
    /* the checks do not start a second one while it runs */
    tt_sleep_ms(200);
    assert_int_equal(atomic_load(&g_starts), 2);
    tt_system_end(sys);
    tr_singleton_free(s);
    tr_singleton_free(refuses);
}

/* ---- two nodes ----------------------------------------------------------------------------- */

typedef struct node {
    tr_system *sys;
    tr_node *node;
    tr_singleton *single;
} node;

static void node_up(node *nd, const char *name, uint16_t id, const char *seed, bool start_here)
{
    nd->sys = tt_node_system(id);
    tr_node_opts no = tt_node_opts(name, "single-secret", &seed, seed != NULL ? 1 : 0);
    assert_int_equal(tr_node_start(nd->sys, &no, &nd->node), TR_OK);
    tr_singleton_opts so = {.name = "mailer", .behaviour = &single_b, .node = nd->node,
                            .check_ms = 100, .start_here = start_here};
    assert_int_equal(tr_singleton_start(nd->sys, &so, &nd->single), TR_OK);
}

/* A node goes away as the apps stop one: its actors first (the shard's or singleton's router
 * reads the node: it must have ended before tr_node_stop frees it), then the node. */
static void node_down(node *nd)
{
    tr_system_stop(nd->sys);
    assert_int_equal(tr_system_join(nd->sys), TR_OK);
    tr_node_stop(nd->node);
    tr_singleton_free(nd->single);
    tr_system_free(nd->sys);
}

/* Both nodes find the same live actor, running on exactly one of them: that node's id. */
static uint16_t settled(node *a, node *b)
{
    tr_pid pa = TR_PID_NONE, pb = TR_PID_NONE;
    TT_WAIT_FOR(tr_singleton_here(a->single) != tr_singleton_here(b->single) &&
                    tr_singleton_whereis(a->single, &pa) == TR_OK &&
                    tr_singleton_whereis(b->single, &pb) == TR_OK && pa == pb,
                TT_DEADLINE_MS);
    return tr_pid_node(pa);
}

static void test_two_nodes_one_actor_that_moves(void **state)
{
    (void)state;
    node a, b;
    node_up(&b, "b", 92, NULL, false);
    char seed[64];
    snprintf(seed, sizeof seed, "%s", tr_node_address(b.node));
    node_up(&a, "a", 91, seed, true); /* a starts it at once, then it goes to its owner */
    uint16_t id;
    TT_WAIT_FOR(tr_node_lookup(a.node, "b", &id) == TR_OK &&
                    tr_node_lookup(b.node, "a", &id) == TR_OK,
                TT_DEADLINE_MS);
    char owner[65];
    assert_int_equal(tr_node_place(a.node, "mailer", 6, owner, &id), TR_OK);
    uint16_t where = settled(&a, &b);
    assert_int_equal(where, id); /* where placement says */
    /* the owner goes: the other node runs it */
    node *gone = where == 91 ? &a : &b, *left = where == 91 ? &b : &a;
    node_down(gone);
    TT_WAIT_FOR(tr_singleton_here(left->single), TT_DEADLINE_MS);
    tr_pid p = TR_PID_NONE;
    TT_WAIT_FOR(tr_singleton_whereis(left->single, &p) == TR_OK && tr_pid_node(p) != where,
                TT_DEADLINE_MS);
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(left->sys, p, tr_msg_new(MSG_WHO, 0), 10000, &reply), TR_OK);
    uint64_t v;
    assert_int_equal(tr_msg_get_u64(reply, &v), TR_OK);
    assert_int_equal(v, where == 91 ? 92 : 91);
    tr_msg_free(reply);
    node_down(left);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_one_system),
    cmocka_unit_test(test_two_nodes_one_actor_that_moves),
};

TT_MAIN_PLAIN(tests)
