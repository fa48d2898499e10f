/*
 * test_cluster_monitors.c — partial monitoring in real nodes (issue 22, step 3): five troupe-node
 * processes on 127.0.0.1 and this test process (node "t") with `monitors = 2` in the cluster
 * file, so membership and failure detection are the gossip core's (runtime/src/dist/
 * nodegossip.c) and connections are lazy (idle_close_ms = 1000). It checks that all see all, that
 * a request reaches a node over a connection opened for it, that a few idle seconds (connections
 * closed meanwhile) bring no false down, that a kill -9 is seen as down by every node, that a
 * frozen node (SIGSTOP) is seen as down by every node and as up again once thawed (SIGCONT), and
 * that a SIGTERM is seen as "left" by every node; and that a node started with a member's node
 * id exits with status 3. The default (monitors = 0, the full mesh) is what
 * test_cluster.c covers.
 */
#include "test_util.h"
#include "troupe/node.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TROUPE_NODE_BIN
#error "TROUPE_NODE_BIN must name the troupe-node executable"
#endif

#define SECRET "cluster-monitors-secret"
#define NPROC 5
/* kill -9: suspect at once where a connection breaks, down 400 ms later, then gossip; a node that
 * held no connection to it hears it from the others. Generous for a loaded 2-core host. */
#define KILL_BOUND_MS 3000u

typedef struct proc {
    pid_t pid;
    int out;
    char name[8];
    char addr[160];
    unsigned id;
} proc;

static char g_dir[64], g_conf[128];
static pid_t g_running[NPROC];

static void write_conf(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "cluster = {\n  secret = \"%s\";\n  heartbeat_ms = 100;\n  down_after_ms = 1000;\n"
               "  leave_ms = 5000;\n  monitors = 2;\n  idle_close_ms = 1000;\n"
               "  reconnect = { min_ms = 10; max_ms = 200; };\n  nodes = (\n",
            SECRET);
    for (int i = 1; i <= NPROC; i++)
        fprintf(f, "    { name = \"n%d\"; listen = \"tcp://127.0.0.1:0\"; workers = 1; }%s\n", i,
                i < NPROC ? "," : "");
    fprintf(f, "  );\n};\n");
    fclose(f);
}

/* One line of p's stdout within wait_ms; false at end of file or when none came. */
static bool read_line_within(proc *p, char *line, size_t cap, unsigned wait_ms)
{
    size_t n = 0;
    uint64_t deadline = tt_now_ns() + (uint64_t)wait_ms * 1000000u;
    while (n + 1 < cap) {
        int left = (int)((deadline - tt_now_ns()) / 1000000u);
        if (tt_now_ns() >= deadline)
            return false;
        struct pollfd pf = {.fd = p->out, .events = POLLIN};
        if (poll(&pf, 1, left < 100 ? left : 100) <= 0)
            continue;
        char c;
        if (read(p->out, &c, 1) <= 0)
            return false;
        if (c == '\n')
            break;
        line[n++] = c;
    }
    line[n] = '\0';
    return true;
}

/* Starts troupe-node `name` joining through `seed`, with node id `node_id` (0: a random one),
 * and reads its ready line. */
static void proc_start(proc *p, const char *name, const char *seed, unsigned node_id)
{
    char id_arg[16];
    snprintf(id_arg, sizeof id_arg, "%u", node_id);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    snprintf(p->name, sizeof p->name, "%s", name);
    fflush(stderr);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (getenv("TT_NODE_LOGS") == NULL) {
            FILE *devnull = freopen("/dev/null", "w", stderr);
            (void)devnull;
        }
        if (node_id != 0)
            execl(TROUPE_NODE_BIN, "troupe-node", "--config", g_conf, "--node", name, "--listen",
                  "tcp://127.0.0.1:0", "--seed", seed, "--node-id", id_arg, (char *)NULL);
        else
            execl(TROUPE_NODE_BIN, "troupe-node", "--config", g_conf, "--node", name, "--listen",
                  "tcp://127.0.0.1:0", "--seed", seed, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    p->out = fds[0];
    for (size_t i = 0; i < NPROC; i++)
        if (g_running[i] == 0) {
            g_running[i] = p->pid;
            break;
        }
    char line[256];
    assert_true(read_line_within(p, line, sizeof line, TT_DEADLINE_MS));
    assert_int_equal(sscanf(line, "ready node=%*s addr=%159s id=%u", p->addr, &p->id), 2);
}

static void proc_signal(proc *p, int sig)
{
    assert_int_equal(kill(p->pid, sig), 0);
    int st;
    assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
    for (size_t i = 0; i < NPROC; i++)
        if (g_running[i] == p->pid)
            g_running[i] = 0;
    close(p->out);
    p->pid = 0;
}

/* Reads p's lines until "<what> <name> ..." (what: up, down, left); fails on "down <name>" when
 * waiting for something else, or when nothing came within wait_ms. */
static void expect_line(proc *p, const char *what, const char *name, unsigned wait_ms)
{
    char line[256], want[80], bad[80];
    snprintf(want, sizeof want, "%s %s ", what, name);
    snprintf(bad, sizeof bad, "down %s ", name);
    for (;;) {
        bool got = read_line_within(p, line, sizeof line, wait_ms);
        if (!got)
            print_message("%s: no \"%s\" within %u ms\n", p->name, want, wait_ms);
        assert_true(got);
        if (strncmp(line, want, strlen(want)) == 0)
            return;
        if (strcmp(what, "down") != 0 && strncmp(line, bad, strlen(bad)) == 0)
            print_message("%s: %s\n", p->name, line);
        assert_false(strcmp(what, "down") != 0 && strncmp(line, bad, strlen(bad)) == 0);
    }
}

/* No "down" line from p now (what it printed meanwhile is read). */
static void expect_no_down(proc *p)
{
    char line[256];
    while (read_line_within(p, line, sizeof line, 1)) {
        if (strncmp(line, "down ", 5) == 0)
            print_message("%s: false %s\n", p->name, line);
        assert_false(strncmp(line, "down ", 5) == 0);
    }
}

static int peer_status(tr_node *n, const char *name)
{
    tr_peer_info info[32];
    size_t k = 0;
    assert_int_equal(tr_node_peers(n, info, 32, &k), TR_OK);
    for (size_t i = 0; i < k && i < 32; i++)
        if (strcmp(info[i].name, name) == 0)
            return (int)info[i].status;
    return -1;
}

static bool sees(tr_node *n, const char *name)
{
    uint16_t id;
    return tr_node_lookup(n, name, &id) == TR_OK;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/troupe-monitors-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_conf, sizeof g_conf, "%s/cluster.conf", g_dir);
    write_conf(g_conf);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int kill_leftovers(void **state)
{
    (void)state;
    for (size_t i = 0; i < NPROC; i++)
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
    rmdir(g_dir);
    return 0;
}

/* A node of this test process named `name`, with the cluster file's settings, joining through
 * `seed` (NULL: none, the processes join through it); its node id in *id. */
static tr_node *t_start_as(const char *name, const char *seed, tr_system **sys, uint16_t *id)
{
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = 2;
    so.node_id = tr_node_random_id();
    *id = so.node_id;
    *sys = tt_system_start(&so);
    tr_node_opts no;
    memset(&no, 0, sizeof no);
    no.name = name;
    no.listen = "tcp://127.0.0.1:0";
    const char *seeds[1] = {seed};
    if (seed != NULL) {
        no.seeds = seeds;
        no.nseeds = 1;
    }
    no.secret = SECRET;
    no.heartbeat_ms = 100;
    no.down_after_ms = 1000;
    no.reconnect_max_ms = 200;
    no.leave_ms = 5000;
    no.monitors = 2;
    no.idle_close_ms = 1000;
    no.quiet = getenv("TT_NODE_LOGS") == NULL;
    tr_node *t;
    assert_int_equal(tr_node_start(*sys, &no, &t), TR_OK);
    return t;
}

/* This test process's node "t", the seed of the processes. */
static tr_node *t_start(tr_system **sys, uint16_t *id)
{
    return t_start_as("t", NULL, sys, id);
}

static bool whereis_is(tr_node *t, const char *name, tr_pid want)
{
    tr_pid got = TR_PID_NONE;
    int rc = tr_node_whereis(t, name, &got);
    return want == TR_PID_NONE ? rc == TR_ENOPROC : (rc == TR_OK && got == want);
}

static void test_monitors_join_idle_kill_leave(void **state)
{
    (void)state;
    tr_system *sys;
    uint16_t tid;
    tr_node *t = t_start(&sys, &tid);

    /* all see all: every process prints "up" for the other five, t sees the five */
    proc p[NPROC];
    for (int i = 0; i < NPROC; i++) {
        char name[8];
        snprintf(name, sizeof name, "n%d", i + 1);
        proc_start(&p[i], name, tr_node_address(t), 0);
    }
    uint64_t t0 = tt_now_ns();
    for (int i = 0; i < NPROC; i++) {
        bool up[NPROC + 1] = {false}; /* n1..n5, then t: in any order */
        up[i] = true;
        for (int seen = 1; seen < NPROC + 1;) {
            char line[256], name[16];
            bool got = read_line_within(&p[i], line, sizeof line, TT_DEADLINE_MS);
            if (!got)
                print_message("%s: saw %d of the others up\n", p[i].name, seen - 1);
            assert_true(got);
            assert_false(strncmp(line, "down ", 5) == 0);
            if (sscanf(line, "up %15s", name) != 1)
                continue;
            int k = strcmp(name, "t") == 0 ? NPROC : name[0] == 'n' ? atoi(name + 1) - 1 : -1;
            if (k >= 0 && k <= NPROC && !up[k]) {
                up[k] = true;
                seen++;
            }
        }
    }
    for (int i = 0; i < NPROC; i++)
        TT_WAIT_FOR(sees(t, p[i].name), TT_DEADLINE_MS);
    print_message("6 nodes (monitors = 2): all see all after %llu ms\n",
                  (unsigned long long)((tt_now_ns() - t0) / 1000000u));

    /* a request over a connection opened for it */
    tr_pid echo;
    assert_int_equal(tr_node_spawn(t, "n4", "echo", NULL, 20000, &echo), TR_OK);
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, echo, tt_msg_u64(3, 4242), 20000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 4242);
    tr_msg_free(reply);

    /* idle for 3 s (connections idle for 1 s are closed meanwhile): no false down */
    tt_sleep_ms(3000);
    for (int i = 0; i < NPROC; i++)
        expect_no_down(&p[i]);
    tr_node_stats st;
    tr_node_stats_get(t, &st);
    assert_int_equal(st.peers_down, 0);
    for (int i = 0; i < NPROC; i++)
        assert_int_equal(peer_status(t, p[i].name), TR_PEER_UP);
    /* the echo is reached again after its connection was closed for being idle */
    assert_int_equal(tr_system_call(sys, echo, tt_msg_u64(3, 7), 20000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 7);
    tr_msg_free(reply);

    /* kill -9 n3: down for everyone */
    t0 = tt_now_ns();
    proc_signal(&p[2], SIGKILL);
    for (int i = 0; i < NPROC; i++)
        if (i != 2)
            expect_line(&p[i], "down", "n3", TT_DEADLINE_MS);
    TT_WAIT_FOR(!sees(t, "n3"), TT_DEADLINE_MS);
    uint64_t ms = (tt_now_ns() - t0) / 1000000u;
    print_message("kill -9 n3: down for all 5 others after %llu ms\n", (unsigned long long)ms);
    assert_true(ms < KILL_BOUND_MS);
    assert_int_equal(peer_status(t, "n3"), TR_PEER_DOWN);

    /* SIGSTOP n5: found by silence (its watchers' pings go unanswered: down at down_after_ms,
     * then gossip), down for everyone; SIGCONT: it hears it was declared down, refutes at a
     * higher incarnation, and is up again for everyone */
    /* n5 holds a cluster-wide name: it goes with n5's down and comes back with its up (n5, frozen,
     * saw nothing: the others ask for its names again) */
    tr_msg *arg = tr_msg_new(0, 16);
    msgpack_pack_str(tr_msg_packer(arg), 7);
    msgpack_pack_str_body(tr_msg_packer(arg), "n5-name", 7);
    tr_pid held;
    assert_int_equal(tr_node_spawn(t, "n5", "named", arg, 20000, &held), TR_OK);
    tr_msg_free(arg);
    TT_WAIT_FOR(whereis_is(t, "n5-name", held), TT_DEADLINE_MS);
    t0 = tt_now_ns();
    assert_int_equal(kill(p[4].pid, SIGSTOP), 0);
    for (int i = 0; i < NPROC; i++)
        if (i != 2 && i != 4)
            expect_line(&p[i], "down", "n5", TT_DEADLINE_MS);
    TT_WAIT_FOR(!sees(t, "n5"), TT_DEADLINE_MS);
    print_message("SIGSTOP n5: down for all 4 others after %llu ms\n",
                  (unsigned long long)((tt_now_ns() - t0) / 1000000u));
    TT_WAIT_FOR(whereis_is(t, "n5-name", TR_PID_NONE), TT_DEADLINE_MS);
    t0 = tt_now_ns();
    assert_int_equal(kill(p[4].pid, SIGCONT), 0);
    for (int i = 0; i < NPROC; i++)
        if (i != 2 && i != 4)
            expect_line(&p[i], "up", "n5", TT_DEADLINE_MS);
    TT_WAIT_FOR(sees(t, "n5"), TT_DEADLINE_MS);
    print_message("SIGCONT n5: up again for all 4 others after %llu ms\n",
                  (unsigned long long)((tt_now_ns() - t0) / 1000000u));
    TT_WAIT_FOR(whereis_is(t, "n5-name", held), TT_DEADLINE_MS);

    /* a node that joins now learns the name too: n5 sends its names to whoever it sees come up
     * (no node asks every member it meets for theirs: a cluster without names dials nobody for
     * them as it forms) */
    tr_system *usys;
    uint16_t uid;
    tr_node *u = t_start_as("u", tr_node_address(t), &usys, &uid);
    TT_WAIT_FOR(sees(u, "n5") && sees(u, "n4") && sees(u, "t"), TT_DEADLINE_MS);
    TT_WAIT_FOR(whereis_is(u, "n5-name", held), TT_DEADLINE_MS);

    /* SIGTERM n2: it leaves, "left" (not down) for everyone */
    t0 = tt_now_ns();
    proc_signal(&p[1], SIGTERM);
    for (int i = 0; i < NPROC; i++)
        if (i != 1 && i != 2)
            expect_line(&p[i], "left", "n2", TT_DEADLINE_MS);
    TT_WAIT_FOR(peer_status(t, "n2") == TR_PEER_LEFT, TT_DEADLINE_MS);
    print_message("SIGTERM n2: left for all 4 others %llu ms after the signal\n",
                  (unsigned long long)((tt_now_ns() - t0) / 1000000u));
    tr_node_stats_get(t, &st);
    assert_int_equal(st.peers_down, 2); /* n3 killed, n5 frozen */
    assert_int_equal(st.peers_left, 1);

    /* the rest serves on */
    assert_int_equal(tr_system_call(sys, echo, tt_msg_u64(3, 9), 20000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 9);
    tr_msg_free(reply);

    tr_node_stop(u);
    tt_system_end(usys);
    tr_node_stop(t);
    tt_system_end(sys);
    for (int i = 0; i < NPROC; i++)
        if (p[i].pid > 0)
            proc_signal(&p[i], SIGTERM);
}

/* A troupe-node whose node id a member that started first already has: the cluster refuses it,
 * its watcher is told (TR_MSG_NODE_ID_TAKEN), and it exits with status 3 (it waits on signals
 * only: no poll), never seen up by the member. */
static void test_node_id_taken_exits(void **state)
{
    (void)state;
    tr_system *sys;
    uint16_t tid;
    tr_node *t = t_start(&sys, &tid);
    tt_sleep_ms(5); /* a later incarnation */
    proc p;
    proc_start(&p, "n1", tr_node_address(t), tid);
    assert_int_equal(p.id, tid);
    int st = 0;
    bool exited = false; /* (TT_WAIT_FOR evaluates its condition once more at the end) */
    TT_WAIT_FOR(exited || (exited = waitpid(p.pid, &st, WNOHANG) == p.pid), TT_DEADLINE_MS);
    for (size_t i = 0; i < NPROC; i++)
        if (g_running[i] == p.pid)
            g_running[i] = 0;
    close(p.out);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 3);
    assert_false(sees(t, "n1"));
    tr_node_stop(t);
    tt_system_end(sys);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_monitors_join_idle_kill_leave, kill_leftovers),
    cmocka_unit_test_teardown(test_node_id_taken_exits, kill_leftovers),
};

int main(void)
{
    tt_apply_filter();
    return cmocka_run_group_tests_name("cluster_monitors", tests, setup, teardown);
}
