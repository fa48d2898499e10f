/*
 * test_ctl.c — hidden nodes and the introspection service, in one process on 127.0.0.1: a hidden
 * node reaches the member it dials, and neither that member nor any other counts it as one (not
 * in tr_node_peers, not looked up, not placed, no NODEUP / NODEDOWN to watchers, not gossiped, no
 * "left" when it goes); a hidden node under a member's name or with a wrong secret is refused;
 * tr_node_ctl's commands against a node running a supervisor and a rate-limited actor (tree, top,
 * limits and limits_set, kill and the restart, stats, nodes, errors). troupectl's own test is
 * tests/cli/troupectl.sh.
 */
#include "test_nodes.h"
#include "test_util.h"
#include "troupe/node.h"

#include <stdio.h>
#include <string.h>

#define SECRET "ctl-test-secret-123"

static _Atomic uint64_t g_told; /* NODEUP / NODEDOWN naming the hidden node "peek" */

static int watch_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    if (tr_msg_type(m) != TR_MSG_NODEUP && tr_msg_type(m) != TR_MSG_NODEDOWN)
        return 0;
    tr_reader r;
    const char *name;
    size_t len;
    tr_reader_init(&r, m);
    if (tr_read_str(&r, &name, &len) == TR_OK && len == 4 && memcmp(name, "peek", 4) == 0)
        atomic_fetch_add(&g_told, 1);
    tr_reader_done(&r);
    return 0;
}

static const tr_behaviour watch_b = {.name = "watch", .receive = watch_recv};

static int echo_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_corr(m) != 0 && !tr_msg_is_reply(m) && tr_msg_type(m) < TR_MSG_SYSTEM)
        tr_reply(ctx, m, tr_msg_new(0, 0));
    return 0;
}

static const tr_behaviour worker_b = {.name = "ctl_worker", .receive = echo_recv};
static const tr_behaviour limited_b = {.name = "ctl_limited", .receive = echo_recv};

/* ---- answers ------------------------------------------------------------------------------- */

typedef struct answer {
    tr_msg *m;
    tr_reader r;
    const msgpack_object *o;
} answer;

static const msgpack_object *get(const msgpack_object *m, const char *key)
{
    if (m == NULL || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int64_t num(const msgpack_object *m, const char *key)
{
    const msgpack_object *v = get(m, key);
    assert_non_null(v);
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)v->via.u64;
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return v->via.i64;
    if (v->type == MSGPACK_OBJECT_BOOLEAN)
        return v->via.boolean;
    fail_msg("%s is not a number", key);
    return 0;
}

static bool str_is(const msgpack_object *m, const char *key, const char *want)
{
    const msgpack_object *v = get(m, key);
    return v != NULL && v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(want) &&
           memcmp(v->via.str.ptr, want, v->via.str.size) == 0;
}

static const msgpack_object *item(const msgpack_object *m, const char *key, uint32_t i)
{
    const msgpack_object *a = get(m, key);
    assert_non_null(a);
    assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
    assert_true(i < a->via.array.size);
    return &a->via.array.ptr[i];
}

static uint32_t count_of(const msgpack_object *m, const char *key)
{
    const msgpack_object *a = get(m, key);
    assert_non_null(a);
    assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
    return a->via.array.size;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Asks `peer`'s service (through node n) {cmd, then the key/value pairs kv (strings; a value
 * starting with '#' is a number)} and reads the answer into a (rc checked by the caller). */
static void ask(tr_node *n, const char *peer, answer *a, const char *cmd, const char *const *kv,
                size_t nkv)
{
    tr_msg *m = tr_msg_new(TR_MSG_CTL, 64);
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_map(pk, 1 + nkv / 2);
    pk_str(pk, "cmd");
    pk_str(pk, cmd);
    for (size_t i = 0; i + 1 < nkv; i += 2) {
        pk_str(pk, kv[i]);
        if (kv[i + 1][0] == '#')
            msgpack_pack_uint64(pk, strtoull(kv[i + 1] + 1, NULL, 10));
        else
            pk_str(pk, kv[i + 1]);
    }
    assert_int_equal(tr_node_ctl(n, peer, m, 5000, &a->m), TR_OK);
    tr_reader_init(&a->r, a->m);
    assert_int_equal(tr_read_object(&a->r, &a->o), TR_OK);
    assert_int_equal(a->o->type, MSGPACK_OBJECT_MAP);
}

static void done(answer *a)
{
    tr_reader_done(&a->r);
    tr_msg_free(a->m);
}

/* ---- nodes --------------------------------------------------------------------------------- */

static void end(tr_node *n, tr_system *sys)
{
    tr_node_stop(n);
    tt_system_end(sys);
}

static tr_node *start_node(tr_system *sys, const char *name, const char *const *seeds,
                           size_t nseeds, bool hidden, const char *secret)
{
    tr_node_opts o = tt_node_opts(name, secret, seeds, nseeds);
    o.hidden = hidden;
    tr_node *n;
    assert_int_equal(tr_node_start(sys, &o, &n), TR_OK);
    return n;
}

/* The name of the first peer n has up ("" if none yet). */
static bool peer_up(tr_node *n, char name[65])
{
    tr_peer_info p[8];
    size_t k = 0;
    tr_node_peers(n, p, 8, &k);
    for (size_t i = 0; i < k && i < 8; i++)
        if (p[i].status == TR_PEER_UP && p[i].name[0] != '\0') {
            snprintf(name, 65, "%s", p[i].name);
            return true;
        }
    return false;
}

static size_t npeers(tr_node *n)
{
    size_t k = 0;
    tr_node_peers(n, NULL, 0, &k);
    return k;
}

static void test_hidden_node_is_not_a_member(void **st)
{
    (void)st;
    tr_system *sa = tt_node_system(11), *sb = tt_node_system(12), *sh = tt_node_system(13);
    tr_node *a = start_node(sa, "a", NULL, 0, false, SECRET);
    const char *seed_a[] = {tr_node_address(a)};
    tr_node *b = start_node(sb, "b", seed_a, 1, false, SECRET);
    uint16_t id;
    assert_int_equal(tr_node_wait_peer(a, "b", TT_DEADLINE_MS, &id), TR_OK);
    assert_int_equal(tr_node_wait_peer(b, "a", TT_DEADLINE_MS, &id), TR_OK);
    tr_pid wa, wb;
    assert_int_equal(tr_system_spawn(sa, &watch_b, NULL, &wa), TR_OK);
    assert_int_equal(tr_system_spawn(sb, &watch_b, NULL, &wb), TR_OK);
    tr_node_monitor(a, wa, true);
    tr_node_monitor(b, wb, true);
    tr_node_stats before_a, before_b, after;
    tr_node_stats_get(a, &before_a);
    tr_node_stats_get(b, &before_b);

    tr_node *h = start_node(sh, "peek", seed_a, 1, true, SECRET);
    assert_string_equal(tr_node_address(h), "");
    char name[65];
    TT_WAIT_FOR(peer_up(h, name), TT_DEADLINE_MS);
    assert_string_equal(name, "a");
    assert_int_equal(npeers(h), 1); /* it learns no other member */
    /* a and b: one peer each, the other; "peek" is nobody's member */
    answer r;
    ask(h, "a", &r, "nodes", NULL, 0);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_int_equal(num(r.o, "members"), 2);
    assert_true(str_is(item(r.o, "nodes", 0), "name", "a"));
    assert_true(str_is(item(r.o, "nodes", 1), "name", "b"));
    assert_true(num(item(r.o, "nodes", 1), "rtt_us") > 0);
    done(&r);
    assert_int_equal(npeers(a), 1);
    assert_int_equal(npeers(b), 1);
    assert_int_equal(tr_node_lookup(a, "peek", &id), TR_ENOPROC);
    for (unsigned k = 0; k < 500; k++) {
        char owner[65];
        assert_int_equal(tr_node_place(a, &k, sizeof k, owner, &id), TR_OK);
        assert_true(strcmp(owner, "a") == 0 || strcmp(owner, "b") == 0);
    }
    ask(a, NULL, &r, "stats", NULL, 0);
    assert_int_equal(num(get(r.o, "node"), "hidden_connected"), 1);
    assert_int_equal(num(get(r.o, "node"), "peers_up"), 1);
    done(&r);
    /* it leaves: forgotten at once, neither left nor down for anyone */
    tr_node_stop(h);
    ask(a, NULL, &r, "stats", NULL, 0);
    assert_int_equal(num(get(r.o, "node"), "hidden_connected"), 0);
    done(&r);
    tr_node_stats_get(a, &after);
    assert_int_equal(after.peers_left, before_a.peers_left);
    assert_int_equal(after.peers_down, before_a.peers_down);
    tr_node_stats_get(b, &after);
    assert_int_equal(after.peers_left, before_b.peers_left);
    assert_int_equal(after.dials, before_b.dials); /* nobody told b of it: never dialed */
    assert_int_equal(npeers(a), 1);
    tt_sleep_ms(300); /* a watcher told would have been by now */
    assert_int_equal(atomic_load(&g_told), 0);

    tt_system_end(sh);
    end(b, sb);
    end(a, sa);
}

static void test_hidden_node_refused(void **st)
{
    (void)st;
    tr_system *sa = tt_node_system(21), *sb = tt_node_system(24), *sh = tt_node_system(22),
              *sw = tt_node_system(23);
    tr_node *a = start_node(sa, "a", NULL, 0, false, SECRET);
    const char *seed_a[] = {tr_node_address(a)};
    tr_node *b = start_node(sb, "b", seed_a, 1, false, SECRET);
    uint16_t id;
    assert_int_equal(tr_node_wait_peer(a, "b", TT_DEADLINE_MS, &id), TR_OK);
    /* under a member's name */
    tr_node *h = start_node(sh, "b", seed_a, 1, true, SECRET);
    /* with the wrong secret */
    tr_node *w = start_node(sw, "peek", seed_a, 1, true, "another-secret-456");
    tr_node_stats s;
    TT_WAIT_FOR((tr_node_stats_get(h, &s), s.refused_auth > 0), TT_DEADLINE_MS);
    TT_WAIT_FOR((tr_node_stats_get(w, &s), s.refused_auth > 0), TT_DEADLINE_MS);
    char name[65];
    assert_false(peer_up(h, name));
    assert_false(peer_up(w, name));
    assert_int_equal(npeers(a), 1);
    end(w, sw);
    end(h, sh);
    end(b, sb);
    end(a, sa);
}

/* The child of the tree's supervisor with this id: its pid and restarts. */
static void child_of(tr_node *n, const char *cid, uint64_t *pid, uint64_t *restarts)
{
    answer r;
    ask(n, NULL, &r, "tree", NULL, 0);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_int_equal(num(r.o, "supervisors"), 1);
    const msgpack_object *sup = item(r.o, "tree", 0);
    assert_true(str_is(sup, "strategy", "one_for_one"));
    assert_true(str_is(sup, "name", "sup"));
    *pid = 0;
    for (uint32_t i = 0; i < count_of(sup, "children"); i++) {
        const msgpack_object *c = item(sup, "children", i);
        if (str_is(c, "id", cid)) {
            *pid = (uint64_t)num(c, "pid");
            *restarts = (uint64_t)num(c, "restarts");
        }
    }
    done(&r);
}

static void test_ctl_commands(void **st)
{
    (void)st;
    tr_system *sa = tt_node_system(31);
    tr_node *a = start_node(sa, "a", NULL, 0, false, SECRET);
    const tr_child_spec kids[] = {
        {.id = "worker", .behaviour = &worker_b, .restart = TR_PERMANENT, .shutdown_ms = 100},
        {.id = "limited", .behaviour = &limited_b, .restart = TR_PERMANENT, .shutdown_ms = 100,
         .mailbox = {.limit = TR_LIMIT_TOKEN, .rate = 50, .burst = 5}},
    };
    const tr_sup_spec spec = {.strategy = TR_ONE_FOR_ONE, .intensity = 10, .period_ms = 1000,
                              .children = kids, .nchildren = 2};
    tr_pid sup, limited;
    assert_int_equal(tr_sup_start(sa, &spec, &sup), TR_OK);
    assert_int_equal(tr_system_register(sa, "sup", sup), TR_OK);
    assert_int_equal(tr_sup_which_child(sa, sup, "limited", &limited), TR_OK);
    assert_int_equal(tr_system_register(sa, "lim", limited), TR_OK);
    answer r;

    /* tree, then kill: the supervisor restarts the child */
    uint64_t pid, restarts;
    child_of(a, "worker", &pid, &restarts);
    assert_true(pid != 0);
    assert_int_equal(restarts, 0);
    char target[32];
    snprintf(target, sizeof target, "%#llx", (unsigned long long)pid);
    const char *kill_kv[] = {"target", target};
    ask(a, NULL, &r, "kill", kill_kv, 2);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_int_equal((uint64_t)num(r.o, "pid"), pid);
    assert_true(str_is(r.o, "behaviour", "ctl_worker"));
    done(&r);
    uint64_t pid2 = pid;
    TT_WAIT_FOR((child_of(a, "worker", &pid2, &restarts), pid2 != 0 && pid2 != pid),
                TT_DEADLINE_MS);
    assert_int_equal(restarts, 1);

    /* limits by name and by behaviour; limits_set changes them live */
    const char *lim_kv[] = {"target", "lim"};
    ask(a, NULL, &r, "limits", lim_kv, 2);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_int_equal(num(r.o, "matched"), 1);
    const msgpack_object *x = item(r.o, "actors", 0);
    assert_true(str_is(x, "kind", "token"));
    assert_true(str_is(x, "name", "lim"));
    assert_int_equal(num(x, "rate"), 50);
    assert_int_equal(num(x, "burst"), 5);
    done(&r);
    const char *set_kv[] = {"target", "ctl_limited", "rate", "#9", "burst", "#2"};
    ask(a, NULL, &r, "limits_set", set_kv, 6);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_int_equal(num(item(r.o, "actors", 0), "rate"), 9);
    done(&r);
    ask(a, NULL, &r, "limits", lim_kv, 2);
    x = item(r.o, "actors", 0);
    assert_int_equal(num(x, "rate"), 9);
    assert_int_equal(num(x, "burst"), 2);
    done(&r);
    /* an actor without a limit, and no rate given: refused */
    const char *norate_kv[] = {"target", "ctl_worker", "burst", "#3"};
    ask(a, NULL, &r, "limits_set", norate_kv, 4);
    assert_int_equal(num(r.o, "rc"), TR_EINVAL);
    done(&r);

    /* top: bounded rows, sorted */
    const char *top_kv[] = {"sort", "restarts", "n", "#2", "window_ms", "#0"};
    ask(a, NULL, &r, "top", top_kv, 6);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_int_equal(count_of(r.o, "rows"), 2);
    assert_true(str_is(item(r.o, "rows", 0), "behaviour", "ctl_worker"));
    assert_int_equal(num(item(r.o, "rows", 0), "restarts"), 1);
    assert_true(num(r.o, "actors") >= 5); /* sup, 2 children, node service, ctl */
    done(&r);
    const char *rate_kv[] = {"sort", "rate", "window_ms", "#100"};
    ask(a, NULL, &r, "top", rate_kv, 4);
    assert_int_equal(num(r.o, "rc"), TR_OK);
    assert_true(num(r.o, "window_ms") >= 100);
    done(&r);

    /* stats, nodes (alone) */
    ask(a, NULL, &r, "stats", NULL, 0);
    assert_true(num(get(r.o, "system"), "alive") >= 5);
    assert_int_equal(num(get(r.o, "node"), "peers_up"), 0);
    done(&r);
    ask(a, NULL, &r, "nodes", NULL, 0);
    assert_int_equal(num(r.o, "members"), 1);
    done(&r);

    /* errors */
    const char *none_kv[] = {"target", "nope"};
    ask(a, NULL, &r, "limits", none_kv, 2);
    assert_int_equal(num(r.o, "rc"), TR_ENOPROC);
    assert_non_null(get(r.o, "error"));
    done(&r);
    const char *self_kv[] = {"target", "troupe.ctl"};
    ask(a, NULL, &r, "kill", self_kv, 2);
    assert_int_equal(num(r.o, "rc"), TR_EINVAL);
    done(&r);
    const char *bad_kv[] = {"sort", "colour"};
    ask(a, NULL, &r, "top", bad_kv, 2);
    assert_int_equal(num(r.o, "rc"), TR_EINVAL);
    done(&r);
    ask(a, NULL, &r, "fly", NULL, 0);
    assert_int_equal(num(r.o, "rc"), TR_EINVAL);
    done(&r);
    tr_msg *m = tr_msg_new(TR_MSG_CTL, 8);
    tr_msg_put_u64(m, 7); /* not a map */
    tr_msg *rep;
    assert_int_equal(tr_node_ctl(a, NULL, m, 5000, &rep), TR_OK);
    assert_non_null(rep);
    tr_msg_free(rep);
    assert_int_equal(tr_node_ctl(a, NULL, tr_msg_new(1, 0), 5000, &rep), TR_EINVAL);
    assert_int_equal(tr_node_ctl(a, "nobody", tr_msg_new(TR_MSG_CTL, 0), 5000, &rep), TR_ENOPROC);

    end(a, sa);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hidden_node_is_not_a_member),
    cmocka_unit_test(test_hidden_node_refused),
    cmocka_unit_test(test_ctl_commands),
};

TT_MAIN_PLAIN(tests)
