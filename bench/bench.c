/*
 * bench.c — troupe-bench: Savina-style workloads that print numbers, not verdicts.
 *
 *   troupe-bench NAME [--workers N] [--scale F] [--tls DIR]
 *   NAME: pingpong ring spawn fanin restart children limited remote-pingpong remote-throughput remote-call persist
 *         recover all
 *   troupe-bench membership-sim [--nodes N ...]   (membership.c: options of its own)
 *
 * Each workload prints one JSON line ({"bench":…,"value":…,"unit":…,…}) and one human line.
 * Every message is a freshly allocated message with a msgpack payload (no message is recycled by
 * the benchmark itself), so the figures include allocation, packing and unpacking. Counts are the
 * issue's exact parameters; --scale shrinks them (e.g. 0.01 for a quick run under a profiler).
 */
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <troupe.h>
#include <unistd.h>
#include <pthread.h>
#include <dirent.h>

#include "membership.h"
#include "persist.h"
#include "remote.h"

static unsigned g_workers;
static double g_scale = 1.0;
static bool g_no_idle; /* --no-idle: skip the RSS part of spawn (for profiling) */
static bool g_baseline; /* --baseline: limited without limits, offered exactly the rate */

/* ---- harness ------------------------------------------------------------------------------- */

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * sysconf(_SC_PAGESIZE);
}

static uint64_t scaled(uint64_t n)
{
    uint64_t v = (uint64_t)((double)n * g_scale);
    return v > 0 ? v : 1;
}

/* Completion signalled by an actor, awaited by main. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    double t_end;
} g_done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};

static void signal_done(void)
{
    double t = ((double)tr_now_ns() / 1e9);
    pthread_mutex_lock(&g_done.lock);
    g_done.done = true;
    g_done.t_end = t;
    pthread_cond_signal(&g_done.cond);
    pthread_mutex_unlock(&g_done.lock);
}

static double wait_done(void)
{
    pthread_mutex_lock(&g_done.lock);
    while (!g_done.done)
        pthread_cond_wait(&g_done.cond, &g_done.lock);
    g_done.done = false;
    double t = g_done.t_end;
    pthread_mutex_unlock(&g_done.lock);
    return t;
}

static tr_system *new_system(void)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = g_workers;
    tr_system *sys = NULL;
    int rc = tr_system_new(&sys, &o);
    if (rc == TR_OK)
        rc = tr_system_start(sys);
    if (rc != TR_OK) {
        fprintf(stderr, "troupe-bench: %s\n", tr_strerror(rc));
        exit(1);
    }
    return sys;
}

static void end_system(tr_system *sys)
{
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
}

static void report(tr_system *sys, const char *bench, double value, const char *unit, double secs,
                   double cpu, uint64_t count, const char *extra_json, const char *human_extra)
{
    unsigned workers = g_workers ? g_workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    tr_system_stats st;
    tr_system_stats_get(sys, &st);
    printf("{\"bench\":\"%s\",\"value\":%.0f,\"unit\":\"%s\",\"seconds\":%.3f,\"cpu_seconds\":%.3f,"
           "\"count\":%llu,\"workers\":%u,\"steals\":%llu,\"parks\":%llu%s%s}\n",
           bench, value, unit, secs, cpu, (unsigned long long)count, workers,
           (unsigned long long)st.steals, (unsigned long long)st.parks,
           extra_json ? "," : "", extra_json ? extra_json : "");
    if (value >= 1e5)
        printf("# %-9s %12.2f M %s", bench, value / 1e6, unit);
    else
        printf("# %-9s %12.1f %s", bench, value, unit);
    printf("  (%llu in %.3f s, %.2f s CPU, %u workers)%s\n", (unsigned long long)count, secs, cpu,
           workers, human_extra ? human_extra : "");
    fflush(stdout);
}

static uint64_t read_u64(const tr_msg *m)
{
    uint64_t v;
    tr_msg_get_u64(m, &v); /* 0 when it holds none */
    return v;
}

/* ---- pingpong: 2 actors, N round trips ------------------------------------------------------ */

enum { MSG_PING = 1, MSG_PONG, MSG_TOKEN, MSG_GO, MSG_DATA, MSG_ACK };

typedef struct pp { tr_pid peer; uint64_t left; } pp;

static int pp_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(pp *)state = *(const pp *)arg;
    return 0;
}

static int ping_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    pp *s = state;
    if (tr_msg_type(m) == MSG_PONG && --s->left == 0) {
        signal_done();
        return 0;
    }
    return tr_send(ctx, s->peer, tr_msg_new_u64(MSG_PING, s->left));
}

static int pong_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    return tr_send(ctx, tr_msg_sender(m), tr_msg_new_u64(MSG_PONG, read_u64(m)));
}

static const tr_behaviour ping_b = {
    .name = "ping", .state_size = sizeof(pp), .init = pp_init, .receive = ping_recv};
static const tr_behaviour pong_b = {.name = "pong", .receive = pong_recv};

static void bench_pingpong(void)
{
    uint64_t n = scaled(1000000);
    tr_system *sys = new_system();
    pp a = {.left = n};
    tr_pid ping;
    tr_system_spawn(sys, &pong_b, NULL, &a.peer);
    tr_system_spawn(sys, &ping_b, &a, &ping);
    double c0 = cpu_s(), t0 = ((double)tr_now_ns() / 1e9);
    tr_system_send(sys, ping, tr_msg_new_u64(MSG_GO, 0));
    double t1 = wait_done(), c1 = cpu_s();
    report(sys, "pingpong", (double)(2 * n) / (t1 - t0), "msgs/s", t1 - t0, c1 - c0, 2 * n, NULL, NULL);
    end_system(sys);
}

/* ---- ring: 503 actors, a token passed H hops ------------------------------------------------ */

typedef struct ring_node { tr_pid next; } ring_node;

static int ring_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    ring_node *s = state;
    uint64_t v = read_u64(m);
    if (tr_msg_type(m) == MSG_GO) { /* setup: learn the next node */
        s->next = (tr_pid)v;
        return 0;
    }
    if (v == 0) {
        signal_done();
        return 0;
    }
    return tr_send(ctx, s->next, tr_msg_new_u64(MSG_TOKEN, v - 1));
}

static const tr_behaviour ring_b = {.name = "ring", .state_size = sizeof(ring_node), .receive = ring_recv};

static void bench_ring(void)
{
    const unsigned nodes = 503;
    uint64_t hops = scaled(10000000);
    tr_system *sys = new_system();
    tr_pid *pids = calloc(nodes, sizeof *pids);
    for (unsigned i = 0; i < nodes; i++)
        tr_system_spawn(sys, &ring_b, NULL, &pids[i]);
    for (unsigned i = 0; i < nodes; i++)
        tr_system_send(sys, pids[i], tr_msg_new_u64(MSG_GO, pids[(i + 1) % nodes]));
    usleep(100000); /* setup messages are processed before the token starts */
    double c0 = cpu_s(), t0 = ((double)tr_now_ns() / 1e9);
    tr_system_send(sys, pids[0], tr_msg_new_u64(MSG_TOKEN, hops));
    double t1 = wait_done(), c1 = cpu_s();
    report(sys, "ring", (double)hops / (t1 - t0), "hops/s", t1 - t0, c1 - c0, hops, "\"actors\":503",
           "  503 actors");
    free(pids);
    end_system(sys);
}

/* ---- spawn: N actors each receiving one message; RSS per idle actor --------------------------- */

static _Atomic uint64_t g_spawn_left;

static int one_shot_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    (void)m;
    tr_stop(ctx);
    if (atomic_fetch_sub_explicit(&g_spawn_left, 1, memory_order_acq_rel) == 1)
        signal_done();
    return 0;
}

static const tr_behaviour one_shot_b = {.name = "one-shot", .state_size = 8, .receive = one_shot_recv};

typedef struct spawner { uint64_t left; } spawner;

/* Spawns in slices of 1,000 per message so the spawner itself stays fair to its children. */
static int spawner_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    spawner *s = state;
    if (tr_msg_type(m) == MSG_GO)
        s->left = read_u64(m);
    for (unsigned i = 0; i < 1000 && s->left > 0; i++, s->left--) {
        tr_pid p;
        int rc = tr_spawn(ctx, &one_shot_b, NULL, &p);
        if (rc != TR_OK)
            return rc;
        tr_send(ctx, p, tr_msg_new_u64(MSG_DATA, s->left));
    }
    if (s->left > 0)
        tr_send(ctx, tr_self(ctx), tr_msg_new_u64(MSG_DATA, 0));
    return 0;
}

static const tr_behaviour spawner_b = {.name = "spawner", .state_size = sizeof(spawner), .receive = spawner_recv};

static int idle_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    return 0;
}

static const tr_behaviour idle_b = {.name = "idle", .state_size = 8, .receive = idle_recv};

static void bench_spawn(void)
{
    uint64_t n = scaled(1000000);
    tr_system *sys = new_system();
    tr_pid sp;
    tr_system_spawn(sys, &spawner_b, NULL, &sp);
    atomic_store(&g_spawn_left, n);
    double c0 = cpu_s(), t0 = ((double)tr_now_ns() / 1e9);
    tr_system_send(sys, sp, tr_msg_new_u64(MSG_GO, n));
    double t1 = wait_done(), c1 = cpu_s();
    report(sys, "spawn", (double)n / (t1 - t0), "spawns/s", t1 - t0, c1 - c0, n, NULL,
           "  spawn + 1 message + exit each");
    end_system(sys);
    if (g_no_idle)
        return;

    /* memory: N idle actors alive at once */
    sys = new_system();
    long r0 = rss_bytes();
    for (uint64_t i = 0; i < n; i++) {
        if (tr_system_spawn(sys, &idle_b, NULL, NULL) != TR_OK) {
            fprintf(stderr, "troupe-bench: spawn failed at %llu\n", (unsigned long long)i);
            break;
        }
    }
    long r1 = rss_bytes();
    double per = (double)(r1 - r0) / (double)n;
    char extra[96];
    snprintf(extra, sizeof extra, "\"alive\":%llu", (unsigned long long)n);
    printf("{\"bench\":\"idle-actor\",\"value\":%.0f,\"unit\":\"bytes\",\"count\":%llu,%s}\n", per,
           (unsigned long long)n, extra);
    printf("# %-9s %12.0f bytes of RSS per idle actor (%llu alive)\n", "idle", per,
           (unsigned long long)n);
    fflush(stdout);
    end_system(sys);
}

/* ---- fanin: P producers x N messages to one counting actor ---------------------------------- */

#define FANIN_PRODUCERS 8
#define FANIN_SLICE 1000u       /* messages a producer sends per turn */
#define FANIN_ACK_EVERY 125u   /* the consumer acknowledges every this many per producer */
#define FANIN_WINDOW 1000u   /* unacknowledged messages a producer may have in flight */

typedef struct producer {
    tr_pid consumer;
    uint64_t index, left, sent, acked;
} producer;

typedef struct fanin_args { tr_pid consumer; uint64_t index, count; } fanin_args;

static int producer_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    const fanin_args *a = arg;
    producer *p = state;
    p->consumer = a->consumer;
    p->index = a->index;
    p->left = a->count;
    return 0;
}

static int producer_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    producer *p = state;
    if (tr_msg_type(m) == MSG_ACK)
        p->acked += FANIN_ACK_EVERY;
    unsigned burst = 0;
    while (p->left > 0 && burst < FANIN_SLICE && p->sent - p->acked < FANIN_WINDOW) {
        tr_send(ctx, p->consumer, tr_msg_new_u64(MSG_DATA, p->index));
        p->left--;
        p->sent++;
        burst++;
    }
    /* out of window: wait for an ack; out of slice: yield and continue */
    if (p->left > 0 && burst == FANIN_SLICE)
        tr_send(ctx, tr_self(ctx), tr_msg_new_u64(MSG_GO, 0));
    return 0;
}

static const tr_behaviour producer_b = {
    .name = "producer", .state_size = sizeof(producer), .init = producer_init, .receive = producer_recv};

typedef struct consumer {
    uint64_t total, expect;
    uint64_t per[FANIN_PRODUCERS];
} consumer;

static int consumer_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    ((consumer *)state)->expect = *(const uint64_t *)arg;
    return 0;
}

static int consumer_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    consumer *c = state;
    uint64_t i = read_u64(m);
    if (i >= FANIN_PRODUCERS)
        return TR_EBADMSG;
    if (++c->per[i] % FANIN_ACK_EVERY == 0)
        tr_send(ctx, tr_msg_sender(m), tr_msg_new_u64(MSG_ACK, 0));
    if (++c->total == c->expect)
        signal_done();
    return 0;
}

static const tr_behaviour consumer_b = {
    .name = "consumer", .state_size = sizeof(consumer), .init = consumer_init, .receive = consumer_recv};

static void bench_fanin(void)
{
    uint64_t n = scaled(1000000);
    uint64_t total = n * FANIN_PRODUCERS;
    tr_system *sys = new_system();
    tr_pid cons, prods[FANIN_PRODUCERS];
    tr_system_spawn(sys, &consumer_b, &total, &cons);
    for (unsigned i = 0; i < FANIN_PRODUCERS; i++) {
        fanin_args a = {.consumer = cons, .index = i, .count = n};
        tr_system_spawn(sys, &producer_b, &a, &prods[i]);
    }
    double c0 = cpu_s(), t0 = ((double)tr_now_ns() / 1e9);
    for (unsigned i = 0; i < FANIN_PRODUCERS; i++)
        tr_system_send(sys, prods[i], tr_msg_new_u64(MSG_GO, 0));
    double t1 = wait_done(), c1 = cpu_s();
    report(sys, "fanin", (double)total / (t1 - t0), "msgs/s", t1 - t0, c1 - c0, total,
           "\"producers\":8", "  8 producers -> 1 consumer");
    end_system(sys);
}

/* ---- restart: a one_for_one supervisor whose child fails on every message ------------------- */

static _Atomic int64_t g_restart_left;

static int crasher_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)state;
    (void)arg;
    int64_t left = atomic_fetch_sub(&g_restart_left, 1);
    if (left > 0)
        tr_send(ctx, tr_self(ctx), tr_msg_new_u64(MSG_DATA, 0)); /* fails on it: restarted */
    else if (left == 0)
        signal_done();
    return 0;
}

static int crasher_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    return tr_msg_type(m) == MSG_DATA ? TR_EBADMSG : 0;
}

static const tr_behaviour crasher_b = {
    .name = "crasher", .init = crasher_init, .receive = crasher_recv};

static void bench_restart(void)
{
    uint64_t n = scaled(100000);
    atomic_store(&g_restart_left, (int64_t)n);
    tr_system *sys = new_system();
    tr_child_spec child = {.id = "crasher", .behaviour = &crasher_b, .restart = TR_PERMANENT,
                           .shutdown_ms = 5000};
    /* the intensity allows every one of them: the figure includes the intensity bookkeeping */
    tr_sup_spec spec = {.strategy = TR_ONE_FOR_ONE, .intensity = 1000000, .period_ms = 1000,
                        .children = &child, .nchildren = 1};
    double c0 = cpu_s(), t0 = ((double)tr_now_ns() / 1e9);
    tr_pid sup;
    int rc = tr_sup_start(sys, &spec, &sup);
    if (rc != TR_OK) {
        fprintf(stderr, "troupe-bench: tr_sup_start: %s\n", tr_strerror(rc));
        exit(1);
    }
    double t1 = wait_done(), c1 = cpu_s();
    uint64_t restarts = 0;
    tr_sup_count(sys, sup, NULL, &restarts);
    report(sys, "restart", (double)n / (t1 - t0), "restarts/s", t1 - t0, c1 - c0, n,
           "\"strategy\":\"one_for_one\"", "  child fails on every message, restarted each time");
    if (restarts != n)
        fprintf(stderr, "troupe-bench: supervisor counted %llu restarts, expected %llu\n",
                (unsigned long long)restarts, (unsigned long long)n);
    end_system(sys);
}

/* ---- children: a simple_one_for_one supervisor with N children, all started, all ending ------ */

#define CHILDREN_WINDOW 1024u /* start requests in flight */

static _Atomic tr_pid *g_child_pid; /* [i]: the pid of child i (written by its init) */
static uint64_t g_children_n;

static int kid_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)state;
    atomic_store_explicit((_Atomic tr_pid *)arg, tr_self(ctx), memory_order_relaxed);
    return 0;
}

static int kid_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == MSG_DATA)
        tr_stop(ctx); /* normal: a transient child is not restarted, the supervisor forgets it */
    return 0;
}

static const tr_behaviour kid_b = {.name = "kid", .init = kid_init, .receive = kid_recv};

typedef struct kid_starter {
    tr_pid sup;
    uint64_t n, sent, answered;
} kid_starter;

/* Keeps CHILDREN_WINDOW asynchronous start requests in flight until N children are started. */
static int kid_starter_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    kid_starter *s = state;
    if (tr_msg_type(m) == MSG_GO) {
        s->sup = (tr_pid)read_u64(m);
        s->n = g_children_n;
    } else if (tr_msg_is_reply(m)) {
        if (tr_sup_started(m, NULL) != TR_OK) {
            fprintf(stderr, "troupe-bench: a child did not start\n");
            exit(1);
        }
        if (++s->answered == s->n)
            signal_done();
    }
    while (s->sent < s->n && s->sent - s->answered < CHILDREN_WINDOW) {
        uint64_t corr;
        int rc = tr_sup_start_child_async(ctx, s->sup, (const void *)&g_child_pid[s->sent], 0,
                                          600000, &corr);
        if (rc != TR_OK)
            return rc;
        s->sent++;
    }
    return 0;
}

static const tr_behaviour kid_starter_b = {
    .name = "kid-starter", .state_size = sizeof(kid_starter), .receive = kid_starter_recv};

static void bench_children(void)
{
    uint64_t n = scaled(1000000);
    g_child_pid = calloc(n, sizeof *g_child_pid);
    if (g_child_pid == NULL) {
        fprintf(stderr, "troupe-bench: out of memory\n");
        exit(1);
    }
    tr_system *sys = new_system();
    tr_child_spec child = {.id = "kid", .behaviour = &kid_b, .restart = TR_TRANSIENT,
                           .shutdown_ms = 5000};
    tr_sup_spec spec = {.strategy = TR_SIMPLE_ONE_FOR_ONE, .intensity = 10, .period_ms = 1000,
                        .children = &child, .nchildren = 1};
    tr_pid sup, starter;
    if (tr_sup_start(sys, &spec, &sup) != TR_OK ||
        tr_system_spawn(sys, &kid_starter_b, NULL, &starter) != TR_OK) {
        fprintf(stderr, "troupe-bench: cannot start the supervisor\n");
        exit(1);
    }
    g_children_n = n;
    /* phase 1: N children started (each spawned and linked by the supervisor) */
    double c0 = cpu_s(), t0 = ((double)tr_now_ns() / 1e9);
    tr_system_send(sys, starter, tr_msg_new_u64(MSG_GO, sup));
    double t1 = wait_done(), c1 = cpu_s();
    uint64_t running = 0;
    tr_sup_count(sys, sup, &running, NULL);
    report(sys, "children-start", (double)n / (t1 - t0), "children/s", t1 - t0, c1 - c0, n,
           "\"strategy\":\"simple_one_for_one\"", "  start_child_async, 1,024 in flight");
    if (running != n)
        fprintf(stderr, "troupe-bench: %llu running, expected %llu\n",
                (unsigned long long)running, (unsigned long long)n);
    /* phase 2: every child ends (normal); the supervisor handles N exits */
    double c2 = cpu_s(), t2 = ((double)tr_now_ns() / 1e9);
    for (uint64_t i = 0; i < n; i++)
        tr_system_send(sys, atomic_load(&g_child_pid[i]), tr_msg_new_u64(MSG_DATA, 0));
    do {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    } while (tr_sup_count(sys, sup, &running, NULL) != TR_OK || running != 0);
    double t3 = ((double)tr_now_ns() / 1e9), c3 = cpu_s();
    report(sys, "children-exit", (double)n / (t3 - t2), "exits/s", t3 - t2, c3 - c2, n,
           "\"strategy\":\"simple_one_for_one\"", "  every child ends, supervisor forgets it");
    end_system(sys);
    free((void *)g_child_pid);
    g_child_pid = NULL;
}

/* ---- limited: 1,000 actors limited to 1,000 msgs/s each, offered 10x that ------------------ */

#define LIM_ACTORS 1000u
#define LIM_RATE 1000u
#define LIM_BURST 100u
#define LIM_OFFER_FACTOR 10u
#define LIM_PRODUCERS 2u

static int sink_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)m;
    (*(uint64_t *)state)++;
    return 0;
}

static const tr_behaviour sink_b = {.name = "sink", .state_size = 8, .receive = sink_recv};

typedef struct lim_producer {
    _Atomic long tid;
    tr_system *sys;
    const tr_pid *pids;
    unsigned first, count;
    double until;
    uint64_t offered, refused;
    double cpu;
} lim_producer;

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Offers LIM_OFFER_FACTOR x the limit to each of its actors, paced in 1 ms steps. */
static void *lim_produce(void *arg)
{
    lim_producer *p = arg;
    atomic_store(&p->tid, (long)gettid());
    const uint64_t per_ms = (uint64_t)LIM_RATE * (g_baseline ? 1u : LIM_OFFER_FACTOR) / 1000u;
    double start = ((double)tr_now_ns() / 1e9);
    uint64_t step = 0;
    while (((double)tr_now_ns() / 1e9) < p->until) {
        double due = start + (double)step / 1000.0;
        double now = ((double)tr_now_ns() / 1e9);
        if (now < due) {
            struct timespec ts = {0, (long)((due - now) * 1e9)};
            nanosleep(&ts, NULL);
        }
        for (unsigned i = 0; i < p->count; i++)
            for (uint64_t k = 0; k < per_ms; k++) {
                p->offered++;
                if (tr_system_send(p->sys, p->pids[p->first + i], tr_msg_new_u64(MSG_DATA, k)) != TR_OK)
                    p->refused++;
            }
        step++;
    }
    p->cpu = thread_cpu_s();
    return NULL;
}

/* CPU seconds of this process's threads, except main and the producers: the runtime's. */
static double runtime_threads_cpu_s(const lim_producer *prod, unsigned nprod)
{
    char path[64], buf[512];
    double total = 0;
    long tck = sysconf(_SC_CLK_TCK);
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid <= 0 || tid == (long)getpid())
            continue;
        bool skip = false;
        for (unsigned i = 0; i < nprod; i++)
            skip |= atomic_load(&prod[i].tid) == tid;
        if (skip)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')'); /* fields after the command name */
        unsigned long ut = 0, st = 0;
        if (p != NULL &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)tck;
    }
    closedir(d);
    return total;
}

static void lim_processed(tr_system *sys, const tr_pid *pids, uint64_t *out)
{
    for (unsigned i = 0; i < LIM_ACTORS; i++) {
        tr_actor_stats st;
        out[i] = tr_actor_stats_get(sys, pids[i], &st) == TR_OK ? st.processed : 0;
    }
}

static void bench_limited(void)
{
    double secs = 10.0 * g_scale;
    if (secs < 2.0)
        secs = 2.0;
    tr_system *sys = new_system();
    static tr_pid pids[LIM_ACTORS];
    static uint64_t p1[LIM_ACTORS], p2[LIM_ACTORS];
    tr_spawn_opts o = {.mailbox = {.capacity = 1000, .overflow = TR_OVERFLOW_REJECT,
                                   .limit = TR_LIMIT_TOKEN, .rate = LIM_RATE, .burst = LIM_BURST}};
    if (g_baseline)
        o.mailbox.limit = TR_LIMIT_NONE; /* the cost of the delivered messages alone */
    for (unsigned i = 0; i < LIM_ACTORS; i++)
        if (tr_system_spawn_ex(sys, &sink_b, NULL, &o, &pids[i]) != TR_OK) {
            fprintf(stderr, "troupe-bench: spawn failed\n");
            exit(1);
        }
    double t0 = ((double)tr_now_ns() / 1e9), c0 = cpu_s();
    pthread_t th[LIM_PRODUCERS];
    lim_producer prod[LIM_PRODUCERS];
    for (unsigned i = 0; i < LIM_PRODUCERS; i++) {
        prod[i] = (lim_producer){.sys = sys, .pids = pids, .first = i * (LIM_ACTORS / LIM_PRODUCERS),
                                 .count = LIM_ACTORS / LIM_PRODUCERS, .until = t0 + secs};
        pthread_create(&th[i], NULL, lim_produce, &prod[i]);
    }
    /* the rate is measured after the first second, once the saved burst is spent */
    struct timespec one = {1, 0};
    nanosleep(&one, NULL);
    double ta = ((double)tr_now_ns() / 1e9), ca = cpu_s();
    double ra = runtime_threads_cpu_s(prod, LIM_PRODUCERS);
    lim_processed(sys, pids, p1);
    for (unsigned i = 0; i < LIM_PRODUCERS; i++)
        pthread_join(th[i], NULL);
    double tb = ((double)tr_now_ns() / 1e9), cb = cpu_s();
    double rb = runtime_threads_cpu_s(prod, LIM_PRODUCERS);
    lim_processed(sys, pids, p2);
    double win = tb - ta;
    double minr = 1e18, maxr = 0, sum = 0;
    for (unsigned i = 0; i < LIM_ACTORS; i++) {
        double r = (double)(p2[i] - p1[i]) / win;
        minr = r < minr ? r : minr;
        maxr = r > maxr ? r : maxr;
        sum += r;
    }
    uint64_t offered = 0, refused = 0;
    double prod_cpu = 0;
    for (unsigned i = 0; i < LIM_PRODUCERS; i++) {
        offered += prod[i].offered;
        refused += prod[i].refused;
        prod_cpu += prod[i].cpu;
    }
    double total_s = tb - t0;
    /* the runtime's share: its threads' CPU (workers, timer loop) over the window, from /proc
     * (clock ticks: 10 ms resolution) */
    double runtime_cpu = rb - ra;
    double delivered = sum * win;
    char extra[512], human[512];
    snprintf(extra, sizeof extra,
             "\"actors\":%u,\"limit\":%u,\"min_rate\":%.1f,\"max_rate\":%.1f,\"offered_per_s\":%.0f,"
             "\"refused\":%llu,\"runtime_cpu_s\":%.3f,\"producer_cpu_s\":%.3f,"
             "\"runtime_ns_per_delivered\":%.0f",
             LIM_ACTORS, LIM_RATE, minr, maxr, (double)offered / total_s,
             (unsigned long long)refused, runtime_cpu, prod_cpu, runtime_cpu * 1e9 / delivered);
    snprintf(human, sizeof human,
             "\n#   per actor: mean %.1f, min %.1f, max %.1f msgs/s (limit %u); offered %.2f M/s "
             "(%.1fx), %.1f%% refused\n#   runtime CPU %.2f s over %.1f s = %.0f ns per delivered "
             "message; producers' CPU %.2f s; the process %.2f s in all",
             sum / LIM_ACTORS, minr, maxr, LIM_RATE, (double)offered / total_s / 1e6,
             (double)offered / total_s / (LIM_ACTORS * (double)LIM_RATE),
             100.0 * (double)refused / (double)offered, runtime_cpu, win,
             runtime_cpu * 1e9 / delivered, prod_cpu, cb - c0);
    report(sys, "limited", sum / LIM_ACTORS, "msgs/s/actor", win, cb - ca, (uint64_t)delivered,
           extra, human);
    end_system(sys);
}

/* ---- two nodes (remote.c) ------------------------------------------------------------------ */

static void run_remote_pingpong(void)
{
    bench_remote_pingpong(g_workers, g_scale);
}

static void run_remote_throughput(void)
{
    bench_remote_throughput(g_workers, g_scale);
}

static void run_remote_call(void)
{
    bench_remote_call(g_workers, g_scale);
}

static void run_persist(void)
{
    bench_persist(g_workers, g_scale);
}

static void run_recover(void)
{
    bench_recover(g_workers, g_scale);
}

/* ---- main ---------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(void);
    const char *what;
} benches[] = {
    {"pingpong", bench_pingpong, "2 actors, 1,000,000 round trips -> msgs/s"},
    {"ring", bench_ring, "503 actors, token passed 10,000,000 hops -> hops/s"},
    {"spawn", bench_spawn, "1,000,000 actors each receiving one message -> spawns/s; RSS per idle actor"},
    {"fanin", bench_fanin, "8 producers x 1,000,000 messages to one actor -> msgs/s"},
    {"restart", bench_restart, "one_for_one supervisor, child fails on every message, 100,000 times -> restarts/s"},
    {"children", bench_children, "simple_one_for_one supervisor: 1,000,000 children started, then all ending -> children/s, exits/s"},
    {"limited", bench_limited, "1,000 actors limited to 1,000 msgs/s each, offered 10x for 10 s -> rate, CPU"},
    {"remote-pingpong", run_remote_pingpong, "2 nodes (processes) on loopback, 100,000 round trips -> round trips/s, p50/p99"},
    {"remote-throughput", run_remote_throughput, "2 nodes (processes) on loopback, 1,000,000 x 64 B one way -> msgs/s"},
    {"remote-call", run_remote_call, "2 nodes (processes), 100 callers -> 10 servers, 1,000,000 request/replies -> calls/s, p50/p99"},
    {"persist", run_persist, "1,000 persistent actors, 1,000,000 events, reply after commit -> events/s, p50/p99 (SQLite FULL, NORMAL)"},
    {"recover", run_recover, "one actor with 1,000,000 events: recovery time from events, from a snapshot"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: troupe-bench NAME|all [--workers N] [--scale F] [--baseline] [--no-idle]\n"
               "                            [--tls DIR]\n\nworkloads:\n");
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        fprintf(f, "  %-17s %s\n", benches[i].name, benches[i].what);
    fprintf(f, "  %-17s %s\n", "membership-sim",
            "the membership core, N nodes in one process, virtual time (its own options:\n"
            "                    troupe-bench membership-sim --help; not part of all)\n");
    fprintf(f, "\n--workers N  worker threads (default: online CPUs)\n"
               "--scale F    multiply the counts by F (default 1)\n"
               "--baseline   limited: no limit, offered exactly the limit (the delivered cost)\n"
               "--tls DIR    remote-*: both nodes over TLS (mutual), certificates from\n"
               "             scripts/make-certs DIR (ca, n1, n2)\n"
               "--no-idle    spawn: skip its RSS part (for profiling)\n"
               "--help       this text (--opt=value and --opt value both work)\n");
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "membership-sim") == 0) /* options of its own */
        return bench_membership_sim(argc - 1, argv + 1);
    const char *name = NULL, *serve = NULL;
    static const struct option longopts[] = {
        {"workers", required_argument, NULL, 'w'}, {"scale", required_argument, NULL, 's'},
        {"no-idle", no_argument, NULL, 'I'},       {"baseline", no_argument, NULL, 'b'},
        {"serve-node", required_argument, NULL, 'S'}, /* internal: remote.c's second process */
        {"tls", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'w': g_workers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': g_scale = strtod(optarg, NULL); break;
        case 'I': g_no_idle = true; break;
        case 'b': g_baseline = true; break;
        case 'S': serve = optarg; break;
        case 'T': bench_remote_tls(optarg); break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'troupe-bench --help'.\n");
            return 2;
        }
    }
    if (serve != NULL)
        return bench_serve_node((unsigned)strtoul(serve, NULL, 10));
    if (optind < argc)
        name = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "troupe-bench: one workload at a time ('%s' is one too many)\n",
                argv[optind]);
        return 2;
    }
    if (name == NULL || g_scale <= 0) {
        fprintf(stderr, name == NULL ? "troupe-bench: which workload? (NAME or all)\n"
                                     : "troupe-bench: --scale must be above 0\n");
        usage(stderr);
        return 2;
    }
    bool any = false;
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++) {
        if (strcmp(name, "all") == 0 || strcmp(name, benches[i].name) == 0) {
            benches[i].run();
            any = true;
        }
    }
    if (!any) {
        usage(stderr);
        return 2;
    }
    return 0;
}
