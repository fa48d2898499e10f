/*
 * remote.c — troupe-bench's workloads between two nodes, in two processes on 127.0.0.1.
 *
 * The benchmark process (node "bench-a") starts a second one — itself, re-executed with
 * --serve-node — as node "bench-b", joins it, spawns the remote actors there by behaviour name
 * and measures:
 *   remote-pingpong    100,000 round trips between an actor on a and an echo on b
 *                      -> round trips/s, p50/p99/p99.9 latency
 *   remote-throughput  1,000,000 messages with a 64-byte payload from one actor on a to a sink
 *                      on b -> messages/s, and how many messages went in each stream write
 *   remote-call        100 requester actors on a, each calling (tr_request, 5 s timeout) one of
 *                      10 server actors on b in turn, 1,000,000 calls in all -> calls/s,
 *                      p50/p99/p99.9 (Erlang's gen_server:call across two nodes is the peer:
 *                      bench/peers/)
 * The second process is exec'ed (not just forked) so it starts with fresh runtime and nng state.
 * With --tls DIR both nodes speak TLS (mutual authentication; certificates from
 * scripts/make-certs DIR), to measure what TLS costs.
 */
#include "remote.h"

#include <troupe.h>
#include <troupe/node.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SECRET "troupe-bench-secret"
#define PAYLOAD 62 /* a bin of 62 bytes: 64 bytes of msgpack */

enum { R_PING = 1, R_GO = 2, R_DATA = 3, R_DONE = 4, R_CALL = 5 };

static const char *g_tls_dir; /* --tls DIR; NULL: plain TCP */

void bench_remote_tls(const char *dir)
{
    g_tls_dir = dir;
}

/* TLS options for certificate `name` of g_tls_dir (NULL without --tls). */
typedef struct tls_files {
    char cert[512], key[512], ca[512];
    tr_node_tls tls;
} tls_files;

static const tr_node_tls *tls_of(tls_files *f, const char *name)
{
    if (g_tls_dir == NULL)
        return NULL;
    snprintf(f->cert, sizeof f->cert, "%s/%s.pem", g_tls_dir, name);
    snprintf(f->key, sizeof f->key, "%s/%s.key", g_tls_dir, name);
    snprintf(f->ca, sizeof f->ca, "%s/ca.pem", g_tls_dir);
    f->tls = (tr_node_tls){.cert = f->cert, .key = f->key, .ca = f->ca,
                           .verify = TR_TLS_VERIFY_REQUIRED};
    return &f->tls;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the serving node (process b) ---------------------------------------------------------- */

static int echo_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) < TR_MSG_SYSTEM && tr_msg_sender(m) != TR_PID_NONE)
        tr_send(ctx, tr_msg_sender(m), tr_msg_from_bytes(tr_msg_type(m), tr_msg_data(m),
                                                         tr_msg_size(m)));
    return 0;
}

static const tr_behaviour echo_b = {.name = "echo", .receive = echo_receive};

/* A server: answers each request with its payload. */
static int server_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == R_CALL)
        (void)tr_reply(ctx, m, tr_msg_from_bytes(R_CALL, tr_msg_data(m), tr_msg_size(m)));
    return 0;
}

static const tr_behaviour server_b = {.name = "server", .receive = server_receive};

typedef struct sink_state {
    uint64_t want, got;
    tr_pid report;
} sink_state;

/* args: [count, pid to tell when count messages arrived] */
static int sink_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    sink_state *s = state;
    tr_reader r;
    tr_reader_init(&r, arg);
    int rc = tr_read_u64(&r, &s->want);
    if (rc == TR_OK)
        rc = tr_read_u64(&r, &s->report);
    tr_reader_done(&r);
    return rc;
}

static int sink_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    sink_state *s = state;
    if (tr_msg_type(m) == R_DATA && ++s->got == s->want)
        tr_send(ctx, s->report, tr_msg_new(R_DONE, 0));
    return 0;
}

static const tr_behaviour sink_b = {.name = "sink", .state_size = sizeof(sink_state),
                                    .init = sink_init, .receive = sink_receive};

int bench_serve_node(unsigned workers)
{
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = workers;
    o.node_id = 2;
    tr_system *sys;
    if (tr_system_new(&sys, &o) != TR_OK || tr_system_start(sys) != TR_OK)
        return 1;
    tr_node_opts no;
    memset(&no, 0, sizeof no);
    no.name = "bench-b";
    no.listen = "tcp://127.0.0.1:0";
    no.secret = SECRET;
    no.quiet = true;
    tls_files tf;
    no.tls = tls_of(&tf, "n2");
    tr_node *node;
    if (tr_node_start(sys, &no, &node) != TR_OK)
        return 1;
    tr_node_register_behaviour(node, "echo", &echo_b);
    tr_node_register_behaviour(node, "sink", &sink_b);
    tr_node_register_behaviour(node, "server", &server_b);
    printf("%s\n", tr_node_address(node));
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    tr_node_stop(node);
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
    return 0;
}

/* ---- the measuring node (process a) -------------------------------------------------------- */

typedef struct remote {
    pid_t child;
    tr_system *sys;
    tr_node *node;
} remote;

static void fail(const char *what)
{
    fprintf(stderr, "troupe-bench: %s\n", what);
    exit(1);
}

static void remote_up(remote *r, unsigned workers)
{
    int fds[2];
    if (pipe(fds) != 0)
        fail("pipe");
    char w[16];
    snprintf(w, sizeof w, "%u", workers);
    r->child = fork();
    if (r->child < 0)
        fail("fork");
    if (r->child == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (g_tls_dir != NULL)
            execl("/proc/self/exe", "troupe-bench", "--serve-node", w, "--tls", g_tls_dir,
                  (char *)NULL);
        else
            execl("/proc/self/exe", "troupe-bench", "--serve-node", w, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char addr[160] = {0};
    FILE *f = fdopen(fds[0], "r");
    if (f == NULL || fgets(addr, sizeof addr, f) == NULL)
        fail("the second process did not start");
    fclose(f);
    addr[strcspn(addr, "\n")] = '\0';
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = workers;
    o.node_id = 1;
    if (tr_system_new(&r->sys, &o) != TR_OK || tr_system_start(r->sys) != TR_OK)
        fail("cannot start the runtime");
    tr_node_opts no;
    memset(&no, 0, sizeof no);
    no.name = "bench-a";
    no.listen = "tcp://127.0.0.1:0";
    no.secret = SECRET;
    no.quiet = true;
    tls_files tf;
    no.tls = tls_of(&tf, "n1");
    const char *seed = addr;
    no.seeds = &seed;
    no.nseeds = 1;
    if (tr_node_start(r->sys, &no, &r->node) != TR_OK)
        fail(g_tls_dir != NULL ? "cannot start the node (--tls DIR: ca.pem, n1.pem, n1.key from "
                                 "scripts/make-certs DIR?)"
                               : "cannot start the node");
    uint16_t id;
    uint64_t deadline = tr_now_ns() + 30000000000ull;
    while (tr_node_lookup(r->node, "bench-b", &id) != TR_OK) {
        if (tr_now_ns() > deadline)
            fail("the nodes did not connect within 30 s");
        usleep(1000);
    }
}

static void remote_down(remote *r)
{
    tr_node_stop(r->node);
    tr_system_stop(r->sys);
    tr_system_join(r->sys);
    tr_system_free(r->sys);
    kill(r->child, SIGTERM);
    waitpid(r->child, NULL, 0);
}

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} g_done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};

static void signal_done(void)
{
    pthread_mutex_lock(&g_done.lock);
    g_done.done = true;
    pthread_cond_signal(&g_done.cond);
    pthread_mutex_unlock(&g_done.lock);
}

/* Waits for signal_done, at most 120 s (false then). */
static bool wait_done(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 120;
    pthread_mutex_lock(&g_done.lock);
    while (!g_done.done)
        if (pthread_cond_timedwait(&g_done.cond, &g_done.lock, &ts) != 0)
            break;
    bool ok = g_done.done;
    g_done.done = false;
    pthread_mutex_unlock(&g_done.lock);
    return ok;
}

/* ---- remote-pingpong ----------------------------------------------------------------------- */

typedef struct pinger {
    tr_pid echo;
    uint64_t left, sent_ns;
    uint64_t *samples;
    size_t n;
} pinger;

static int pinger_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(pinger *)state = *(const pinger *)arg;
    return 0;
}

static void ping(tr_ctx *ctx, pinger *p)
{
    tr_msg *m = tr_msg_new(R_PING, 16);
    tr_msg_put_u64(m, p->left);
    p->sent_ns = tr_now_ns();
    tr_send(ctx, p->echo, m);
}

static int pinger_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    pinger *p = state;
    if (tr_msg_type(m) == R_GO) {
        ping(ctx, p);
    } else if (tr_msg_type(m) == R_PING) {
        p->samples[p->n++] = tr_now_ns() - p->sent_ns;
        if (--p->left == 0)
            signal_done();
        else
            ping(ctx, p);
    }
    return 0;
}

static const tr_behaviour pinger_b = {.name = "pinger", .state_size = sizeof(pinger),
                                      .init = pinger_init, .receive = pinger_receive};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void bench_remote_pingpong(unsigned workers, double scale)
{
    remote r;
    remote_up(&r, workers);
    uint64_t n = (uint64_t)(100000 * scale);
    if (n < 10)
        n = 10;
    pinger p = {.left = n, .samples = calloc(n, sizeof(uint64_t))};
    if (p.samples == NULL || tr_node_spawn(r.node, "bench-b", "echo", NULL, 10000, &p.echo) != TR_OK)
        fail("cannot spawn the echo on the other node");
    tr_pid pid;
    uint64_t *s = p.samples; /* the actor fills it through its copy of p */
    tr_system_spawn(r.sys, &pinger_b, &p, &pid);
    double c0 = cpu_s();
    uint64_t t0 = tr_now_ns();
    tr_system_send(r.sys, pid, tr_msg_new(R_GO, 0));
    if (!wait_done())
        fail("remote-pingpong did not finish within 120 s");
    double secs = (double)(tr_now_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    qsort(s, n, sizeof(uint64_t), cmp_u64);
    double p50 = (double)s[n / 2] / 1e3, p99 = (double)s[n * 99 / 100] / 1e3,
           p999 = (double)s[n * 999 / 1000] / 1e3, mean = 0;
    for (uint64_t i = 0; i < n; i++)
        mean += (double)s[i];
    mean = mean / (double)n / 1e3;
    printf("{\"bench\":\"remote-pingpong\",\"tls\":%s,\"value\":%.0f,\"unit\":\"round trips/s\","
           "\"seconds\":%.3f,\"cpu_seconds\":%.3f,\"count\":%llu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"mean_us\":%.1f}\n",
           g_tls_dir != NULL ? "true" : "false", (double)n / secs, secs, cpu,
           (unsigned long long)n, p50, p99, p999, mean);
    printf("# remote-pingpong%s %10.0f round trips/s  p50 %.1f us  p99 %.1f us  p99.9 %.1f us  "
           "mean %.1f us  (%llu in %.3f s, %.2f s CPU in this process)\n",
           g_tls_dir != NULL ? " (TLS)" : "", (double)n / secs, p50, p99, p999, mean,
           (unsigned long long)n, secs, cpu);
    fflush(stdout);
    free(s);
    remote_down(&r);
}

/* ---- remote-throughput --------------------------------------------------------------------- */

typedef struct pusher {
    tr_pid sink;
    uint64_t count;
} pusher;

static int pusher_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(pusher *)state = *(const pusher *)arg;
    return 0;
}

static int pusher_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    pusher *p = state;
    if (tr_msg_type(m) == R_DONE) {
        signal_done();
        return 0;
    }
    if (tr_msg_type(m) != R_GO)
        return 0;
    static const char payload[PAYLOAD] = {0};
    for (uint64_t i = 0; i < p->count; i++) {
        tr_msg *d = tr_msg_new(R_DATA, PAYLOAD + 2);
        msgpack_pack_bin(tr_msg_packer(d), PAYLOAD);
        msgpack_pack_bin_body(tr_msg_packer(d), payload, PAYLOAD);
        int rc;
        unsigned spins = 0;
        while ((rc = tr_send(ctx, p->sink, d)) == TR_EFULL) {
            /* the queue towards b is full (a refused send frees the message): wait for room */
            if (++spins > 16)
                sched_yield();
            d = tr_msg_new(R_DATA, PAYLOAD + 2);
            msgpack_pack_bin(tr_msg_packer(d), PAYLOAD);
            msgpack_pack_bin_body(tr_msg_packer(d), payload, PAYLOAD);
        }
        if (rc != TR_OK)
            fail("a send to the other node failed");
    }
    return 0;
}

static const tr_behaviour pusher_b = {.name = "pusher", .state_size = sizeof(pusher),
                                      .init = pusher_init, .receive = pusher_receive};

static int reporter_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    if (tr_msg_type(m) == R_DONE)
        signal_done();
    return 0;
}

static const tr_behaviour reporter_b = {.name = "reporter", .receive = reporter_receive};

void bench_remote_throughput(unsigned workers, double scale)
{
    remote r;
    remote_up(&r, workers);
    uint64_t n = (uint64_t)(1000000 * scale);
    if (n < 10)
        n = 10;
    /* the sink on b tells the reporter on a when all n arrived */
    tr_pid reporter, sink, pid;
    tr_system_spawn(r.sys, &reporter_b, NULL, &reporter);
    tr_msg *args = tr_msg_new(0, 24);
    tr_msg_put_u64(args, n);
    tr_msg_put_u64(args, reporter);
    if (tr_node_spawn(r.node, "bench-b", "sink", args, 10000, &sink) != TR_OK)
        fail("cannot spawn the sink on the other node");
    tr_msg_free(args);
    pusher p = {.sink = sink, .count = n};
    tr_system_spawn(r.sys, &pusher_b, &p, &pid);
    tr_node_stats before, after;
    tr_node_stats_get(r.node, &before);
    double c0 = cpu_s();
    uint64_t t0 = tr_now_ns();
    tr_system_send(r.sys, pid, tr_msg_new(R_GO, 0));
    if (!wait_done())
        fail("remote-throughput did not finish within 120 s");
    double secs = (double)(tr_now_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    tr_node_stats_get(r.node, &after);
    double writes = (double)(after.writes - before.writes);
    double per_write = writes > 0 ? (double)(after.msgs_out - before.msgs_out) / writes : 0;
    printf("{\"bench\":\"remote-throughput\",\"tls\":%s,\"value\":%.0f,\"unit\":\"msgs/s\","
           "\"seconds\":%.3f,\"cpu_seconds\":%.3f,\"count\":%llu,\"payload_bytes\":64,"
           "\"writes\":%.0f,\"msgs_per_write\":%.1f,\"queue_full\":%llu}\n",
           g_tls_dir != NULL ? "true" : "false", (double)n / secs, secs, cpu,
           (unsigned long long)n, writes, per_write,
           (unsigned long long)(after.queue_full - before.queue_full));
    printf("# remote-throughput%s %8.2f M msgs/s  (%llu x 64 B in %.3f s, %.0f writes, %.0f "
           "msgs per write, %.2f s CPU in this process)\n",
           g_tls_dir != NULL ? " (TLS)" : "", (double)n / secs / 1e6, (unsigned long long)n, secs,
           writes, per_write, cpu);
    fflush(stdout);
    remote_down(&r);
}

/* ---- remote-call --------------------------------------------------------------------------- */

#define CALLERS 100u
#define SERVERS 10u

static _Atomic unsigned g_callers_left;
static _Atomic uint64_t g_call_timeouts;

typedef struct caller {
    tr_pid server;
    uint64_t left, sent_ns, corr;
    uint64_t *samples;          /* its slice of the samples */
    size_t n;
} caller;

static int caller_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(caller *)state = *(const caller *)arg;
    return 0;
}

static void call_next(tr_ctx *ctx, caller *c)
{
    tr_msg *m = tr_msg_new(R_CALL, 16);
    tr_msg_put_u64(m, c->left);
    c->sent_ns = tr_now_ns();
    if (tr_request(ctx, c->server, m, 5000, &c->corr) != TR_OK)
        fail("a request to the other node could not be sent");
}

static int caller_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    caller *c = state;
    uint32_t t = tr_msg_type(m);
    if (t == R_GO) {
        call_next(ctx, c);
        return 0;
    }
    if (tr_msg_corr(m) != c->corr)
        return 0;
    if (t == R_CALL && tr_msg_is_reply(m))
        c->samples[c->n++] = tr_now_ns() - c->sent_ns;
    else
        atomic_fetch_add(&g_call_timeouts, 1); /* a timeout (or the node gone): counted */
    if (--c->left == 0) {
        if (atomic_fetch_sub(&g_callers_left, 1) == 1)
            signal_done();
    } else {
        call_next(ctx, c);
    }
    return 0;
}

static const tr_behaviour caller_b = {.name = "caller", .state_size = sizeof(caller),
                                      .init = caller_init, .receive = caller_receive};

void bench_remote_call(unsigned workers, double scale)
{
    remote r;
    remote_up(&r, workers);
    uint64_t per = (uint64_t)(1000000 * scale) / CALLERS;
    if (per < 1)
        per = 1;
    uint64_t n = per * CALLERS;
    uint64_t *samples = calloc(n, sizeof(uint64_t));
    tr_pid servers[SERVERS], callers[CALLERS];
    if (samples == NULL)
        fail("out of memory");
    for (unsigned i = 0; i < SERVERS; i++)
        if (tr_node_spawn(r.node, "bench-b", "server", NULL, 10000, &servers[i]) != TR_OK)
            fail("cannot spawn the servers on the other node");
    atomic_store(&g_callers_left, CALLERS);
    atomic_store(&g_call_timeouts, 0);
    for (unsigned i = 0; i < CALLERS; i++) {
        caller c = {.server = servers[i % SERVERS], .left = per, .samples = samples + i * per};
        if (tr_system_spawn(r.sys, &caller_b, &c, &callers[i]) != TR_OK)
            fail("cannot spawn the callers");
    }
    tr_node_stats before, after;
    tr_node_stats_get(r.node, &before);
    double c0 = cpu_s();
    uint64_t t0 = tr_now_ns();
    for (unsigned i = 0; i < CALLERS; i++)
        tr_system_send(r.sys, callers[i], tr_msg_new(R_GO, 0));
    if (!wait_done())
        fail("remote-call did not finish within 120 s");
    double secs = (double)(tr_now_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    tr_node_stats_get(r.node, &after);
    /* the samples of the calls answered (each caller filled the start of its slice) */
    uint64_t timeouts = atomic_load(&g_call_timeouts), k = 0;
    for (unsigned i = 0; i < CALLERS; i++)
        for (uint64_t j = 0; j < per; j++)
            if (samples[i * per + j] != 0)
                samples[k++] = samples[i * per + j];
    if (k == 0)
        fail("remote-call: no call was answered");
    qsort(samples, k, sizeof(uint64_t), cmp_u64);
    double p50 = (double)samples[k / 2] / 1e3, p99 = (double)samples[k * 99 / 100] / 1e3,
           p999 = (double)samples[k * 999 / 1000] / 1e3;
    double writes = (double)(after.writes - before.writes);
    double per_write = writes > 0 ? (double)(after.msgs_out - before.msgs_out) / writes : 0;
    printf("{\"bench\":\"remote-call\",\"value\":%.0f,\"unit\":\"calls/s\",\"seconds\":%.3f,"
           "\"cpu_seconds\":%.3f,\"count\":%llu,\"callers\":%u,\"servers\":%u,\"p50_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f,\"timeouts\":%llu,\"msgs_per_write\":%.1f}\n",
           (double)n / secs, secs, cpu, (unsigned long long)n, CALLERS, SERVERS, p50, p99, p999,
           (unsigned long long)timeouts, per_write);
    printf("# remote-call     %10.0f calls/s  p50 %.1f us  p99 %.1f us  p99.9 %.1f us  (%llu calls "
           "by %u callers to %u servers in %.3f s, %llu timeouts, %.1f msgs per write, %.2f s CPU "
           "in this process)\n",
           (double)n / secs, p50, p99, p999, (unsigned long long)n, CALLERS, SERVERS, secs,
           (unsigned long long)timeouts, per_write, cpu);
    fflush(stdout);
    free(samples);
    remote_down(&r);
}
