/*
 * test_cluster.c — real node processes (build/bin/troupe-node) on 127.0.0.1, driven by this test
 * process, which joins their cluster as node "t": remote spawn by behaviour name, order across
 * the wire, request/reply, a node killed with kill -9 (watchers get DOWN / EXIT noconnection and
 * NODEDOWN, within 2 s: it is down), a node stopped with SIGTERM (it leaves: "left", not down), a node frozen with SIGSTOP (found by its silence), a node restarted
 * under the same name (a new incarnation: old pids are stale), a node with the wrong secret
 * (refused), garbage thrown at a node's port (it keeps serving), cluster-wide names held by
 * actors of another process (seen here, released when that process is killed), and the cluster
 * over TLS with its secret in a file (a certificate from another CA refused). With TT_MONITORS=K
 * every node, this one too, runs the gossip core with K monitors and lazy connections instead of
 * the full mesh (CI runs both: cluster, cluster_gossip).
 */
#include "test_util.h"
#include "troupe/node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TROUPE_NODE_BIN
#error "TROUPE_NODE_BIN must name the troupe-node executable"
#endif
#ifndef TROUPE_MAKE_CERTS
#error "TROUPE_MAKE_CERTS must name scripts/make-certs"
#endif

#define SECRET "cluster-test-secret"
#define DOWN_MS 2000u /* the bound for noticing a dead node on loopback */

enum { MSG_SEQ = 1, MSG_ECHO = 7 };

/* ---- node processes ------------------------------------------------------------------------ */

typedef struct proc {
    pid_t pid;
    int out;            /* its stdout */
    char addr[160];
    unsigned id;
} proc;

static char g_dir[64];
static pid_t g_running[16]; /* started and not reaped: killed after each test, pass or fail */
static char g_conf[128], g_bad_conf[128];

static void write_conf(const char *path, const char *secret)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "cluster = {\n  secret = \"%s\";\n  heartbeat_ms = 100;\n  down_after_ms = 1000;\n"
            "  leave_ms = 10000;\n  monitors = %u;\n"
            "  reconnect = { min_ms = 10; max_ms = 200; };\n  nodes = (\n"
            "    { name = \"n1\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; },\n"
            "    { name = \"n2\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; },\n"
            "    { name = \"intruder\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; }\n"
            "  );\n};\n",
            secret, tt_monitors());
    fclose(f);
}

/* Reads one line of p's stdout (waiting up to TT_DEADLINE_MS); false at end of file. */
static bool read_line(proc *p, char *line, size_t cap)
{
    size_t n = 0;
    uint64_t deadline = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    while (n + 1 < cap && tt_now_ns() < deadline) {
        struct pollfd pf = {.fd = p->out, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        char c;
        ssize_t r = read(p->out, &c, 1);
        if (r <= 0)
            return false;
        if (c == '\n')
            break;
        line[n++] = c;
    }
    line[n] = '\0';
    return true;
}

/* Starts troupe-node as `name` (from `conf`), joining through `seed`; waits for "ready". */
static void proc_start(proc *p, const char *conf, const char *name, const char *seed)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(TROUPE_NODE_BIN, "troupe-node", "--config", conf, "--node", name, "--listen",
              "tcp://127.0.0.1:0", "--seed", seed, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    p->out = fds[0];
    for (size_t i = 0; i < sizeof g_running / sizeof g_running[0]; i++)
        if (g_running[i] == 0) {
            g_running[i] = p->pid;
            break;
        }
    char line[256];
    assert_true(read_line(p, line, sizeof line));
    assert_int_equal(sscanf(line, "ready node=%*s addr=%159s id=%u", p->addr, &p->id), 2);
}

/* Sends sig and, for a deadly one, reaps the process. */
static void proc_signal(proc *p, int sig)
{
    assert_int_equal(kill(p->pid, sig), 0);
    if (sig == SIGKILL || sig == SIGTERM) {
        int st;
        assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
        for (size_t i = 0; i < sizeof g_running / sizeof g_running[0]; i++)
            if (g_running[i] == p->pid)
                g_running[i] = 0;
        close(p->out);
        p->pid = 0;
    }
}

static bool proc_alive(const proc *p)
{
    return p->pid > 0 && waitpid(p->pid, NULL, WNOHANG) == 0;
}

/* ---- the test node ------------------------------------------------------------------------- */

typedef struct tnode {
    tr_system *sys;
    tr_node *node;
} tnode;

/* Starts the test node; with tls (NULL: plain TCP). */
static void tnode_start_tls(tnode *t, const tr_node_tls *tls)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 2;
    o.node_id = tr_node_random_id();
    t->sys = tt_system_start(&o);
    tr_node_opts no;
    memset(&no, 0, sizeof no);
    no.name = "t";
    no.listen = "tcp://127.0.0.1:0";
    no.secret = SECRET;
    no.heartbeat_ms = 100;
    no.down_after_ms = 1000;
    no.reconnect_max_ms = 200;
    no.monitors = tt_monitors(); /* TT_MONITORS=K: the gossip core (CI: cluster_gossip) */
    no.tls = tls;
    assert_int_equal(tr_node_start(t->sys, &no, &t->node), TR_OK);
}

static void tnode_start(tnode *t)
{
    tnode_start_tls(t, NULL);
}

static void tnode_end(tnode *t)
{
    tr_node_stop(t->node);
    tt_system_end(t->sys);
}

static bool sees(tnode *t, const char *peer)
{
    uint16_t id;
    return tr_node_lookup(t->node, peer, &id) == TR_OK;
}

/* The status t lists for `peer` (-1: not listed). */
static int peer_status(tnode *t, const char *peer)
{
    tr_peer_info info[16];
    size_t k = 0;
    assert_int_equal(tr_node_peers(t->node, info, 16, &k), TR_OK);
    for (size_t i = 0; i < k && i < 16; i++)
        if (strcmp(info[i].name, peer) == 0)
            return (int)info[i].status;
    return -1;
}

/* A local actor that watches remote ones and counts what it is told. */
static _Atomic uint64_t g_downs, g_exits, g_nodedowns, g_nodelefts, g_echoes;
static _Atomic int g_reason;
static _Atomic uint64_t g_down_at_ns;

enum { W_MONITOR = 100, W_LINK = 101, W_PUSH = 102, W_PING = 103 };

static int watcher_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    tr_reason r;
    uint64_t v[2];
    switch (tr_msg_type(m)) {
    case W_MONITOR: {
        uint64_t ref;
        tr_pid target = (tr_pid)tt_read_u64(m);
        int rc = tr_monitor(ctx, target, &ref);
        tr_send(ctx, target, tt_msg_u64(MSG_ECHO, 0)); /* its echo: the monitor is in place */
        tr_reply(ctx, m, tt_msg_u64(0, rc == TR_OK));
        break;
    }
    case W_LINK: {
        tr_trap_exits(ctx, true);
        int rc = tr_link(ctx, (tr_pid)tt_read_u64(m));
        tr_reply(ctx, m, tt_msg_u64(0, rc == TR_OK));
        break;
    }
    case W_PUSH: /* [to, count]: count sequence numbers to `to`, retrying a full queue */
        if (tt_read_u64s(m, 2, v) == TR_OK)
            for (uint64_t i = 0; i < v[1]; i++)
                while (tr_send(ctx, (tr_pid)v[0], tt_msg_u64(MSG_SEQ, i)) == TR_EFULL)
                    ;
        break;
    case W_PING: /* [to, count]: count messages to an echo, which sends each back */
        if (tt_read_u64s(m, 2, v) == TR_OK)
            for (uint64_t i = 0; i < v[1]; i++)
                tr_send(ctx, (tr_pid)v[0], tt_msg_u64(MSG_ECHO, i));
        break;
    case MSG_ECHO:
        atomic_fetch_add(&g_echoes, 1);
        break;
    case TR_MSG_DOWN:
        if (tr_msg_reason(m, &r) == TR_OK)
            atomic_store(&g_reason, (int)r.kind);
        atomic_store(&g_down_at_ns, tt_now_ns());
        atomic_fetch_add(&g_downs, 1);
        break;
    case TR_MSG_EXIT:
        if (tr_msg_reason(m, &r) == TR_OK)
            atomic_store(&g_reason, (int)r.kind);
        atomic_fetch_add(&g_exits, 1);
        break;
    case TR_MSG_NODEDOWN: { /* name, node id, left (1: it left the cluster, 0: lost) */
        tr_reader rd;
        const char *name;
        size_t len;
        uint64_t id, left = 0;
        tr_reader_init(&rd, m);
        if (tr_read_str(&rd, &name, &len) == TR_OK && tr_read_u64(&rd, &id) == TR_OK &&
            tr_read_u64(&rd, &left) == TR_OK && left == 1)
            atomic_fetch_add(&g_nodelefts, 1);
        tr_reader_done(&rd);
        atomic_fetch_add(&g_nodedowns, 1);
        break;
    }
    default:
        break;
    }
    return 0;
}

static const tr_behaviour watcher_b = {.name = "watcher", .receive = watcher_recv};

static void reset(void)
{
    atomic_store(&g_downs, 0);
    atomic_store(&g_exits, 0);
    atomic_store(&g_nodedowns, 0);
    atomic_store(&g_nodelefts, 0);
    atomic_store(&g_echoes, 0);
    atomic_store(&g_reason, -1);
}

static uint64_t call_u64(tnode *t, tr_pid to, tr_msg *m)
{
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(t->sys, to, m, 20000, &reply), TR_OK);
    uint64_t v = tt_read_u64(reply);
    tr_msg_free(reply);
    return v;
}

/* The sink's [count, out_of_order]. */
static void sink_stats(tnode *t, tr_pid sink, uint64_t out[2])
{
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(t->sys, sink, tr_msg_new(2, 0), 20000, &reply), TR_OK);
    assert_int_equal(tt_read_u64s(reply, 2, out), TR_OK);
    tr_msg_free(reply);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/troupe-cluster-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_conf, sizeof g_conf, "%s/cluster.conf", g_dir);
    snprintf(g_bad_conf, sizeof g_bad_conf, "%s/wrong-secret.conf", g_dir);
    write_conf(g_conf, SECRET);
    write_conf(g_bad_conf, "not-the-cluster-secret");
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* After each test: node processes a failed test left behind are killed. */
static int kill_leftovers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof g_running / sizeof g_running[0]; i++)
        if (g_running[i] > 0) {
            kill(g_running[i], SIGKILL);
            waitpid(g_running[i], NULL, 0);
            g_running[i] = 0;
        }
    return 0;
}

static int teardown(void **state)
{
    kill_leftovers(state);
    unlink(g_conf);
    unlink(g_bad_conf);
    rmdir(g_dir);
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_remote_spawn_order_and_request_reply(void **state)
{
    (void)state;
    reset();
    tnode t;
    tnode_start(&t);
    proc n1, n2;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    proc_start(&n2, g_conf, "n2", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1") && sees(&t, "n2"), TT_DEADLINE_MS);
    tr_pid sink, echo;
    assert_int_equal(tr_node_spawn(t.node, "n1", "sink", NULL, 20000, &sink), TR_OK);
    assert_int_equal(tr_pid_node(sink), n1.id);
    assert_int_equal(tr_node_spawn(t.node, "n2", "echo", NULL, 20000, &echo), TR_OK);
    assert_int_equal(tr_node_spawn(t.node, "n2", "no-such-behaviour", NULL, 20000, &echo),
                     TR_EINVAL);
    assert_int_equal(tr_node_spawn(t.node, "n2", "echo", NULL, 20000, &echo), TR_OK);
    /* request / reply across processes */
    assert_int_equal(call_u64(&t, echo, tt_msg_u64(3, 12345)), 12345);
    /* order: 100,000 messages from one actor arrive in order */
    tr_pid w;
    assert_int_equal(tr_system_spawn(t.sys, &watcher_b, NULL, &w), TR_OK);
    const uint64_t n = tt_scale(100000, 10000);
    uint64_t push[2] = {sink, n};
    assert_int_equal(tr_system_send(t.sys, w, tt_msg_u64s(W_PUSH, 2, push)), TR_OK);
    uint64_t st[2] = {0, 0};
    TT_WAIT_FOR((sink_stats(&t, sink, st), st[0] == n), TT_DEADLINE_MS);
    assert_int_equal(st[1], 0);
    /* ping-pong between actors: the echo on n2 sends each message back to its sender on t */
    uint64_t ping[2] = {echo, 1000};
    assert_int_equal(tr_system_send(t.sys, w, tt_msg_u64s(W_PING, 2, ping)), TR_OK);
    TT_WAIT_FOR(atomic_load(&g_echoes) == 1000, TT_DEADLINE_MS);
    tnode_end(&t);
    proc_signal(&n1, SIGTERM);
    proc_signal(&n2, SIGTERM);
}

static void test_kill9_gives_noconnection_within_2s(void **state)
{
    (void)state;
    reset();
    tnode t;
    tnode_start(&t);
    proc n1, n2;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    proc_start(&n2, g_conf, "n2", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1") && sees(&t, "n2"), TT_DEADLINE_MS);
    tr_pid echo1, echo2, w;
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &echo1), TR_OK);
    assert_int_equal(tr_node_spawn(t.node, "n2", "echo", NULL, 20000, &echo2), TR_OK);
    assert_int_equal(tr_system_spawn(t.sys, &watcher_b, NULL, &w), TR_OK);
    assert_int_equal(tr_node_monitor(t.node, w, true), TR_OK);
    assert_int_equal(call_u64(&t, w, tt_msg_u64(W_MONITOR, echo2)), 1);
    assert_int_equal(call_u64(&t, w, tt_msg_u64(W_LINK, echo2)), 1);
    TT_WAIT_FOR(atomic_load(&g_echoes) == 1, TT_DEADLINE_MS); /* the monitor is in place */
    uint64_t t0 = tt_now_ns();
    proc_signal(&n2, SIGKILL);
    TT_WAIT_FOR(atomic_load(&g_downs) == 1 && atomic_load(&g_exits) == 1 &&
                    atomic_load(&g_nodedowns) == 1,
                TT_DEADLINE_MS);
    uint64_t ms = (atomic_load(&g_down_at_ns) - t0) / 1000000u;
    print_message("kill -9 -> DOWN noconnection after %llu ms\n", (unsigned long long)ms);
    assert_int_equal(atomic_load(&g_reason), TR_REASON_NOCONNECTION);
    assert_true(ms < DOWN_MS);
    assert_false(sees(&t, "n2"));
    assert_int_equal(peer_status(&t, "n2"), TR_PEER_DOWN); /* lost, not left */
    assert_int_equal(atomic_load(&g_nodelefts), 0);
    assert_int_equal(tr_system_send(t.sys, echo2, tt_msg_u64(3, 1)), TR_ENOPROC);
    /* the rest of the cluster serves on */
    assert_int_equal(call_u64(&t, echo1, tt_msg_u64(3, 77)), 77);
    assert_true(proc_alive(&n1));
    tnode_end(&t);
    proc_signal(&n1, SIGTERM);
}

/* A node process stopped by SIGTERM leaves the cluster: the others see it "left" (NODEDOWN with
 * left = 1, links and monitors noconnection, no redial; troupe-node prints "left NAME ID"), unlike
 * one killed with kill -9 (above: down). */
static void test_sigterm_leaves_the_cluster(void **state)
{
    (void)state;
    reset();
    tnode t;
    tnode_start(&t);
    proc n1, n2;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    proc_start(&n2, g_conf, "n2", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1") && sees(&t, "n2"), TT_DEADLINE_MS);
    tr_pid echo1, echo2, w;
    /* answered: n1 and n2 reach t, so they tell it when they leave */
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &echo1), TR_OK);
    assert_int_equal(tr_node_spawn(t.node, "n2", "echo", NULL, 20000, &echo2), TR_OK);
    assert_int_equal(tr_system_spawn(t.sys, &watcher_b, NULL, &w), TR_OK);
    assert_int_equal(tr_node_monitor(t.node, w, true), TR_OK);
    assert_int_equal(call_u64(&t, w, tt_msg_u64(W_MONITOR, echo1)), 1);
    TT_WAIT_FOR(atomic_load(&g_echoes) == 1, TT_DEADLINE_MS); /* the monitor is in place */
    /* n2 must know n1 (the full mesh) to say it left */
    char line[256];
    unsigned n1_id = 0;
    while (n1_id == 0 && read_line(&n2, line, sizeof line))
        if (sscanf(line, "up n1 %u", &n1_id) != 1)
            n1_id = 0;
    assert_int_equal(n1_id, n1.id);
    proc_signal(&n1, SIGTERM); /* reaped: its tr_node_stop has returned */
    TT_WAIT_FOR(atomic_load(&g_downs) == 1 && atomic_load(&g_nodedowns) == 1, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g_nodelefts), 1);
    assert_int_equal(atomic_load(&g_reason), TR_REASON_NOCONNECTION);
    assert_int_equal(peer_status(&t, "n1"), TR_PEER_LEFT);
    tr_node_stats st;
    tr_node_stats_get(t.node, &st);
    assert_int_equal(st.peers_left, 1);
    assert_int_equal(st.peers_down, 0);
    /* the other process says so too */
    bool left = false;
    while (!left && read_line(&n2, line, sizeof line)) {
        unsigned id;
        left = sscanf(line, "left n1 %u", &id) == 1 && id == n1.id;
        assert_true(left || strncmp(line, "down n1", 7) != 0);
    }
    assert_true(left);
    assert_int_equal(call_u64(&t, echo2, tt_msg_u64(3, 5)), 5); /* the rest serves on */
    tnode_end(&t);
    proc_signal(&n2, SIGTERM);
}

static void test_frozen_node_found_by_silence(void **state)
{
    (void)state;
    reset();
    tnode t;
    tnode_start(&t);
    proc n1;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1"), TT_DEADLINE_MS);
    tr_pid echo, w;
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &echo), TR_OK);
    assert_int_equal(tr_system_spawn(t.sys, &watcher_b, NULL, &w), TR_OK);
    assert_int_equal(call_u64(&t, w, tt_msg_u64(W_MONITOR, echo)), 1);
    TT_WAIT_FOR(atomic_load(&g_echoes) == 1, TT_DEADLINE_MS);
    uint64_t t0 = tt_now_ns();
    proc_signal(&n1, SIGSTOP); /* connections stay open: only heartbeats can tell */
    TT_WAIT_FOR(atomic_load(&g_downs) == 1, TT_DEADLINE_MS);
    uint64_t ms = (atomic_load(&g_down_at_ns) - t0) / 1000000u;
    print_message("SIGSTOP -> DOWN noconnection after %llu ms (down_after_ms = 1000)\n",
                  (unsigned long long)ms);
    assert_int_equal(atomic_load(&g_reason), TR_REASON_NOCONNECTION);
    assert_true(ms >= 900);
    /* thawed, it reconnects: the same incarnation, so its pids are good again */
    proc_signal(&n1, SIGCONT);
    TT_WAIT_FOR(sees(&t, "n1"), TT_DEADLINE_MS);
    assert_int_equal(call_u64(&t, echo, tt_msg_u64(3, 5)), 5);
    tnode_end(&t);
    proc_signal(&n1, SIGTERM);
}

static void test_restart_is_a_new_incarnation(void **state)
{
    (void)state;
    reset();
    tnode t;
    tnode_start(&t);
    proc n1;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1"), TT_DEADLINE_MS);
    tr_pid old, fresh;
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &old), TR_OK);
    unsigned old_id = n1.id;
    proc_signal(&n1, SIGKILL);
    TT_WAIT_FOR(!sees(&t, "n1"), TT_DEADLINE_MS);
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1"), TT_DEADLINE_MS);
    uint16_t id;
    assert_int_equal(tr_node_lookup(t.node, "n1", &id), TR_OK);
    assert_int_equal(id, n1.id);
    if (n1.id != old_id) /* a random id: equal once in 65,534 restarts */
        assert_int_equal(tr_system_send(t.sys, old, tt_msg_u64(3, 1)), TR_ENOPROC);
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &fresh), TR_OK);
    assert_int_equal(call_u64(&t, fresh, tt_msg_u64(3, 9)), 9);
    tnode_end(&t);
    proc_signal(&n1, SIGTERM);
}

static void test_wrong_secret_refused(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t);
    proc n1, bad;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1"), TT_DEADLINE_MS);
    tr_node_stats before;
    tr_node_stats_get(t.node, &before);
    proc_start(&bad, g_bad_conf, "intruder", tr_node_address(t.node));
    tr_node_stats st;
    TT_WAIT_FOR((tr_node_stats_get(t.node, &st), st.refused_auth > before.refused_auth),
                TT_DEADLINE_MS);
    tt_sleep_ms(300);
    assert_false(sees(&t, "intruder"));
    tr_pid echo;
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &echo), TR_OK);
    assert_int_equal(call_u64(&t, echo, tt_msg_u64(3, 4)), 4);
    assert_true(proc_alive(&bad));
    tnode_end(&t);
    proc_signal(&bad, SIGTERM);
    proc_signal(&n1, SIGTERM);
}

/* Bytes written to a node's port by a plain TCP client. */
static void raw_send(const char *addr, const void *bytes, size_t len)
{
    int port = atoi(strrchr(addr, ':') + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    (void)!write(fd, bytes, len);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    (void)poll(&pf, 1, 5000); /* until the node drops it */
    close(fd);
}

static void test_garbage_at_a_node_port(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t);
    proc n1;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1"), TT_DEADLINE_MS);
    static const struct {
        const char *bytes;
        size_t len;
    } junk[] = {
        {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27},
        {"\x00\x00\x00\x0cTRP\x01\x01\xc1\xc1\xc1\xc1\xc1\xc1\xc1", 16}, /* malformed msgpack */
        {"\x00\x00\x00\x0cTRP\x01\x03\x01\x02\x03\x00\x00\xc4\x00", 16}, /* DATA first */
        {"\x7f\xff\xff\xffTRP", 7},                                      /* 2 GiB announced */
    };
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        raw_send(n1.addr, junk[i].bytes, junk[i].len);
    for (int i = 0; i < 20; i++) { /* random bytes, some after a valid-looking header */
        unsigned char buf[256];
        for (size_t k = 0; k < sizeof buf; k++)
            buf[k] = (unsigned char)tt_xs64(&seed);
        if (i % 2 == 0)
            memcpy(buf, "\x00\x00\x00\xf0TRP\x01\x01", 9);
        raw_send(n1.addr, buf, sizeof buf);
    }
    assert_true(proc_alive(&n1));
    tr_pid echo;
    assert_int_equal(tr_node_spawn(t.node, "n1", "echo", NULL, 20000, &echo), TR_OK);
    assert_int_equal(call_u64(&t, echo, tt_msg_u64(3, 6)), 6);
    tnode_end(&t);
    proc_signal(&n1, SIGTERM);
}

/* The cluster over TLS (issue 21): node processes configured with cluster.tls (mutual
 * authentication, certificates made by scripts/make-certs) and cluster.secret_file (mode 0600)
 * form a cluster with the test node: remote spawn, request/reply, 10,000 messages in order. A
 * process with the right secret and a certificate from another CA is refused by TLS. */
static void test_cluster_over_tls(void **state)
{
    (void)state;
    reset();
    char certs[200], cmd[512], conf[220], rogue_conf[220], secret[220];
    snprintf(certs, sizeof certs, "%s/certs", g_dir);
    snprintf(cmd, sizeof cmd, "bash '%s' '%s' n1 n2 t > /dev/null", TROUPE_MAKE_CERTS, certs);
    assert_int_equal(system(cmd), 0);
    snprintf(secret, sizeof secret, "%s/secret", g_dir);
    FILE *f = fopen(secret, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", SECRET);
    fclose(f);
    assert_int_equal(chmod(secret, 0600), 0);
    for (int rogue = 0; rogue < 2; rogue++) {
        char *path = rogue ? rogue_conf : conf;
        snprintf(path, sizeof conf, "%s/%s.conf", g_dir, rogue ? "rogue" : "tls");
        f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f,
                "cluster = {\n  secret_file = \"%s\";\n"
                "  tls = { cert = \"%s/%s.pem\"; key = \"%s/%s.key\"; ca = \"%s/ca.pem\"; };\n"
                "  heartbeat_ms = 100;\n  monitors = %u;\n"
                "  reconnect = { min_ms = 10; max_ms = 200; };\n  nodes = (\n"
                "    { name = \"n1\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; },\n"
                "    { name = \"n2\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; },\n"
                "    { name = \"intruder\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; }\n"
                "  );\n};\n",
                secret, certs, rogue ? "rogue" : "{node}", certs, rogue ? "rogue" : "{node}",
                certs, tt_monitors());
        fclose(f);
    }
    char cert[220], key[220], ca[220];
    snprintf(cert, sizeof cert, "%s/t.pem", certs);
    snprintf(key, sizeof key, "%s/t.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    tr_node_tls tls = {.cert = cert, .key = key, .ca = ca, .verify = TR_TLS_VERIFY_REQUIRED};
    tnode t;
    tnode_start_tls(&t, &tls);
    proc n1, n2, bad;
    proc_start(&n1, conf, "n1", tr_node_address(t.node));
    proc_start(&n2, conf, "n2", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1") && sees(&t, "n2"), TT_DEADLINE_MS);
    tr_pid sink, echo;
    assert_int_equal(tr_node_spawn(t.node, "n1", "sink", NULL, 20000, &sink), TR_OK);
    assert_int_equal(tr_node_spawn(t.node, "n2", "echo", NULL, 20000, &echo), TR_OK);
    assert_int_equal(call_u64(&t, echo, tt_msg_u64(3, 777)), 777);
    tr_pid w;
    assert_int_equal(tr_system_spawn(t.sys, &watcher_b, NULL, &w), TR_OK);
    const uint64_t n = tt_scale(10000, 2000);
    uint64_t push[2] = {sink, n};
    assert_int_equal(tr_system_send(t.sys, w, tt_msg_u64s(W_PUSH, 2, push)), TR_OK);
    uint64_t st[2] = {0, 0};
    TT_WAIT_FOR((sink_stats(&t, sink, st), st[0] == n), TT_DEADLINE_MS);
    assert_int_equal(st[1], 0);
    /* the rogue: right secret, certificate from another CA */
    tr_node_stats before, now;
    tr_node_stats_get(t.node, &before);
    assert_int_equal(before.tls_failed, 0);
    proc_start(&bad, rogue_conf, "intruder", tr_node_address(t.node));
    TT_WAIT_FOR((tr_node_stats_get(t.node, &now), now.tls_failed > before.tls_failed),
                TT_DEADLINE_MS);
    assert_false(sees(&t, "intruder"));
    assert_true(proc_alive(&bad));
    assert_int_equal(call_u64(&t, echo, tt_msg_u64(3, 778)), 778);
    tnode_end(&t);
    proc_signal(&bad, SIGTERM);
    proc_signal(&n2, SIGTERM);
    proc_signal(&n1, SIGTERM);
    unlink(conf);
    unlink(rogue_conf);
    unlink(secret);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certs);
    assert_int_equal(system(cmd), 0);
}

static bool whereis_is(tnode *t, const char *name, tr_pid want)
{
    tr_pid got = TR_PID_NONE;
    int rc = tr_node_whereis(t->node, name, &got);
    return want == TR_PID_NONE ? rc == TR_ENOPROC : (rc == TR_OK && got == want);
}

static void test_names_across_processes(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t);
    proc n1, n2;
    proc_start(&n1, g_conf, "n1", tr_node_address(t.node));
    proc_start(&n2, g_conf, "n2", tr_node_address(t.node));
    TT_WAIT_FOR(sees(&t, "n1") && sees(&t, "n2"), TT_DEADLINE_MS);
    tr_msg *arg = tr_msg_new(0, 16);
    msgpack_pack_str(tr_msg_packer(arg), 6);
    msgpack_pack_str_body(tr_msg_packer(arg), "orders", 6);
    tr_pid holder, other;
    assert_int_equal(tr_node_spawn(t.node, "n1", "named", arg, 20000, &holder), TR_OK);
    TT_WAIT_FOR(whereis_is(&t, "orders", holder), TT_DEADLINE_MS);
    tr_pid where;
    assert_int_equal(tr_node_whereis(t.node, "orders", &where), TR_OK);
    assert_int_equal(call_u64(&t, where, tt_msg_u64(3, 31)), 31);
    /* the same name asked for on n2: refused there if n2 already knows it, else the two
     * registrations meet and the smaller pid keeps it; either way every node ends up agreeing */
    assert_int_equal(tr_node_spawn(t.node, "n2", "named", arg, 20000, &other), TR_OK);
    tr_pid settled = holder < other ? holder : other;
    uint64_t deadline = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    tt_sleep_ms(300);
    while (!whereis_is(&t, "orders", holder) && !whereis_is(&t, "orders", settled) &&
           tt_now_ns() < deadline)
        tt_sleep_ms(5);
    assert_int_equal(tr_node_whereis(t.node, "orders", &where), TR_OK);
    assert_true(where == holder || where == settled);
    tr_msg_free(arg);
    /* the winner's process dies: the name is free again */
    proc *winner = tr_pid_node(where) == n1.id ? &n1 : &n2;
    proc_signal(winner, SIGKILL);
    TT_WAIT_FOR(whereis_is(&t, "orders", TR_PID_NONE), TT_DEADLINE_MS);
    proc_signal(winner == &n1 ? &n2 : &n1, SIGTERM);
    tnode_end(&t);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_names_across_processes, kill_leftovers),
    cmocka_unit_test_teardown(test_remote_spawn_order_and_request_reply, kill_leftovers),
    cmocka_unit_test_teardown(test_kill9_gives_noconnection_within_2s, kill_leftovers),
    cmocka_unit_test_teardown(test_sigterm_leaves_the_cluster, kill_leftovers),
    cmocka_unit_test_teardown(test_frozen_node_found_by_silence, kill_leftovers),
    cmocka_unit_test_teardown(test_restart_is_a_new_incarnation, kill_leftovers),
    cmocka_unit_test_teardown(test_wrong_secret_refused, kill_leftovers),
    cmocka_unit_test_teardown(test_garbage_at_a_node_port, kill_leftovers),
    cmocka_unit_test_teardown(test_cluster_over_tls, kill_leftovers),
};

int main(void)
{
    tt_apply_filter();
    return cmocka_run_group_tests_name("cluster", tests, setup, teardown);
}
