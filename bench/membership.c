/*
 * membership.c — `troupe-bench membership-sim`: the membership core (runtime/src/dist/gossip.c)
 * run N times over in one process against the simulated network of memsim.c, in virtual time.
 *
 * A run forms a cluster of N nodes (each knows all, as after their joins), lets it settle, then
 * measures in turn: the messages an idle cluster sends; a join (until every node sees the new one
 * alive); a kill (a crash: its sockets close); a freeze (silent, then thawed: it must rejoin with
 * a higher incarnation); and, with --partition F, a partition of a fraction F of the nodes, then
 * its healing. It prints what each took in virtual time, the false suspicions and downs, and what
 * the run cost in real time and memory. docs/distribution.md has the table and the commands.
 */
#include "membership.h"

#include "memsim.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

/* Runs in steps of `step` ms until done(s, arg) or `limit` ms from now; the time it took (ms),
 * or -1 if never. */
typedef bool (*cond_fn)(memsim *s, const void *arg);
static long long wait_for(memsim *s, cond_fn done, const void *arg, uint64_t step, uint64_t limit)
{
    uint64_t t0 = memsim_now_ms(s);
    for (uint64_t t = t0; t <= t0 + limit; t += step) {
        memsim_run_until(s, t);
        if (done(s, arg))
            return (long long)(t - t0);
    }
    return -1;
}

typedef struct target {
    size_t node;
    tr_gossip_state state;
    size_t want;
} target;

static bool seen_by(memsim *s, const void *arg)
{
    const target *t = arg;
    return memsim_seen(s, t->node, t->state) >= t->want;
}

static bool joiner_sees_all(memsim *s, const void *arg)
{
    const target *t = arg;
    size_t counts[4];
    tr__gossip_count(memsim_node(s, t->node), counts);
    return counts[TR_GOSSIP_ALIVE] >= t->want;
}

static bool join_done(memsim *s, const void *arg)
{
    const target *t = arg;
    target all = {t->node, TR_GOSSIP_ALIVE, t->want - 1};
    return seen_by(s, &all) && joiner_sees_all(s, t);
}

typedef struct pair_target {
    int a, b;
    tr_gossip_state state;
    uint64_t want;
} pair_target;

static bool pairs_reach(memsim *s, const void *arg)
{
    const pair_target *p = arg;
    return memsim_pairs(s, p->a, p->b, p->state) >= p->want;
}

static void fmt_ms(char *buf, size_t cap, long long ms)
{
    if (ms < 0)
        snprintf(buf, cap, "never");
    else
        snprintf(buf, cap, "%lld ms", ms);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: troupe-bench membership-sim [--nodes N] [--latency-ms L] [--loss P] [--seed S]\n"
            "         [--monitors K] [--heartbeat-ms H] [--down-after-ms D] [--idle-s T]\n"
            "         [--freeze-ms F] [--partition FRACTION] [--partition-s T]\n"
            "defaults: 1000 nodes, latency 1 ms (uniform 0.5..1.5x), loss 0, seed 1, K 5, H 200,\n"
            "D 1000, idle 10 s, freeze 5000 ms, no partition (with one: 30 s at most per side).\n");
}

int bench_membership_sim(int argc, char **argv)
{
    memsim_opts o = {.nodes = 1000, .latency_ms = 1, .seed = 1};
    double idle_s = 10, part = 0, part_s = 30;
    unsigned freeze_ms = 5000;
    static const struct option longopts[] = {
        {"nodes", required_argument, NULL, 'n'},      {"latency-ms", required_argument, NULL, 'l'},
        {"loss", required_argument, NULL, 'p'},       {"seed", required_argument, NULL, 's'},
        {"monitors", required_argument, NULL, 'k'},   {"heartbeat-ms", required_argument, NULL, 'H'},
        {"down-after-ms", required_argument, NULL, 'D'}, {"idle-s", required_argument, NULL, 'i'},
        {"freeze-ms", required_argument, NULL, 'f'},  {"partition", required_argument, NULL, 'P'},
        {"partition-s", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n': o.nodes = strtoull(optarg, NULL, 10); break;
        case 'l': o.latency_ms = strtod(optarg, NULL); break;
        case 'p': o.loss = strtod(optarg, NULL); break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'k': o.monitors = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'H': o.heartbeat_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'D': o.down_after_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'i': idle_s = strtod(optarg, NULL); break;
        case 'f': freeze_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'P': part = strtod(optarg, NULL); break;
        case 'T': part_s = strtod(optarg, NULL); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (o.nodes < 8 || o.nodes > 100000 || o.loss < 0 || o.loss >= 1 || part < 0 || part >= 0.5 ||
        o.monitors > TR_GOSSIP_MONITORS_MAX || idle_s <= 0 || o.latency_ms < 0) {
        fprintf(stderr, "membership-sim: --nodes 8..100000, --loss [0,1), --partition [0,0.5), "
                        "--monitors <= %u\n", TR_GOSSIP_MONITORS_MAX);
        return 2;
    }
    size_t n = o.nodes;
    o.capacity = n + 4;
    double w0 = wall_s();
    memsim *s = memsim_new(&o);
    if (s == NULL) {
        fprintf(stderr, "membership-sim: out of memory\n");
        return 1;
    }
    double w_formed = wall_s();
    srand((unsigned)o.seed);
    char a[32], b[32], c[32];
    memsim_stats st0, st1;

    /* idle */
    memsim_run_until(s, 2000);
    memsim_stats_get(s, &st0);
    memsim_run_until(s, 2000 + (uint64_t)(idle_s * 1000));
    memsim_stats_get(s, &st1);
    double idle_rate = (double)(st1.sent - st0.sent) / (double)n / idle_s;
    double idle_bytes = (double)(st1.bytes - st0.bytes) / (double)n / idle_s;
    uint64_t idle_fd = st1.false_downs, idle_fs = st1.false_suspects;
    printf("membership-sim: %zu nodes, latency %.1f ms, loss %.3f, seed %llu\n", n, o.latency_ms,
           o.loss, (unsigned long long)o.seed);
    printf("  idle:    %.1f messages/node/s (%.0f bytes/node/s) over %.0f s; false suspects %llu, "
           "false downs %llu\n",
           idle_rate, idle_bytes, idle_s, (unsigned long long)idle_fs, (unsigned long long)idle_fd);
    fflush(stdout);

    /* join */
    size_t j = memsim_join(s, 0);
    target tj = {j, TR_GOSSIP_ALIVE, memsim_running(s)};
    long long join_ms = wait_for(s, join_done, &tj, 10, 60000);
    fmt_ms(a, sizeof a, join_ms);
    printf("  join:    every node sees the new one alive, and it sees all: %s\n", a);
    fflush(stdout);
    memsim_run_until(s, memsim_now_ms(s) + 2000);

    /* kill */
    memsim_stats_get(s, &st0);
    size_t v = 1 + (size_t)rand() % (n - 1);
    memsim_kill(s, v);
    target t1 = {v, TR_GOSSIP_DOWN, 1}, tall = {v, TR_GOSSIP_DOWN, memsim_running(s)};
    long long kill_first = wait_for(s, seen_by, &t1, 5, 60000);
    long long kill_all = kill_first < 0 ? -1 : kill_first + wait_for(s, seen_by, &tall, 5, 60000);
    memsim_run_until(s, memsim_now_ms(s) + 3000);
    memsim_stats_get(s, &st1);
    fmt_ms(a, sizeof a, kill_first);
    fmt_ms(b, sizeof b, kill_all);
    printf("  kill:    n%zu: first down %s, all %s; false downs meanwhile %llu\n", v, a, b,
           (unsigned long long)(st1.false_downs - st0.false_downs));
    fflush(stdout);

    /* freeze */
    memsim_stats_get(s, &st0);
    size_t f;
    do
        f = 1 + (size_t)rand() % (n - 1);
    while (f == v);
    uint64_t tf = memsim_now_ms(s);
    memsim_freeze(s, f, true);
    t1 = (target){f, TR_GOSSIP_DOWN, 1};
    tall = (target){f, TR_GOSSIP_DOWN, memsim_running(s) - 1};
    long long fr_first = wait_for(s, seen_by, &t1, 5, freeze_ms);
    long long fr_all = fr_first < 0 ? -1 : fr_first + wait_for(s, seen_by, &tall, 5, freeze_ms);
    memsim_run_until(s, tf + freeze_ms);
    memsim_freeze(s, f, false);
    target back = {f, TR_GOSSIP_ALIVE, memsim_running(s) - 1};
    long long rejoin = wait_for(s, seen_by, &back, 10, 60000);
    memsim_run_until(s, memsim_now_ms(s) + 3000);
    memsim_stats_get(s, &st1);
    fmt_ms(a, sizeof a, fr_first);
    fmt_ms(b, sizeof b, fr_all);
    fmt_ms(c, sizeof c, rejoin);
    printf("  freeze:  n%zu: first down %s, all %s; thawed after %u ms: all see it alive again "
           "(higher incarnation) in %s; false downs meanwhile %llu\n",
           f, a, b, freeze_ms, c, (unsigned long long)(st1.false_downs - st0.false_downs));
    fflush(stdout);

    long long p_maj = -2, p_min = -2, p_heal = -2;
    double p_min_pct = 0;
    if (part > 0) {
        size_t m = (size_t)(part * (double)n + 0.5);
        if (m < 1)
            m = 1;
        for (size_t i = 0, k = 0; k < m && i < 10 * n; i++) {
            size_t x = (size_t)rand() % n;
            if (x == v || x == f)
                continue;
            memsim_side(s, x, 1);
            k = memsim_side_count(s, 1);
        }
        size_t n1 = memsim_side_count(s, 1), n0 = memsim_side_count(s, 0);
        memsim_pairs(s, 0, 1, TR_GOSSIP_DOWN); /* (counts the pairs once) */
        pair_target maj = {0, 1, TR_GOSSIP_DOWN, (uint64_t)n0 * n1};
        pair_target min = {1, 0, TR_GOSSIP_DOWN, (uint64_t)n1 * n0};
        uint64_t tp = memsim_now_ms(s), lim = (uint64_t)(part_s * 1000);
        p_maj = p_min = -1;
        for (uint64_t t = tp; t <= tp + lim && (p_maj < 0 || p_min < 0); t += 20) {
            memsim_run_until(s, t);
            if (p_maj < 0 && pairs_reach(s, &maj))
                p_maj = (long long)(t - tp);
            if (p_min < 0 && pairs_reach(s, &min))
                p_min = (long long)(t - tp);
        }
        p_min_pct = 100.0 * (double)memsim_pairs(s, 1, 0, TR_GOSSIP_DOWN) / (double)min.want;
        fmt_ms(a, sizeof a, p_maj);
        fmt_ms(b, sizeof b, p_min);
        printf("  partition of %zu / %zu nodes: the majority sees all the minority down in %s; the "
               "minority sees all the majority down in %s (%.1f%% of those pairs after %.0f s)\n",
               n1, n0 + n1, a, b, p_min_pct, (double)(memsim_now_ms(s) - tp) / 1000.0);
        memsim_heal(s);
        size_t r = memsim_running(s);
        pair_target healed = {0, 0, TR_GOSSIP_ALIVE, (uint64_t)r * (r - 1)};
        p_heal = wait_for(s, pairs_reach, &healed, 50, 120000);
        memsim_stats_get(s, &st1);
        fmt_ms(a, sizeof a, p_heal);
        printf("  healed:  every running node sees every other alive again in %s (meanwhile %llu "
               "downs of reachable nodes: the other side's verdicts, until refuted)\n",
               a, (unsigned long long)st1.excused_downs);
    }
    memsim_stats_get(s, &st1);
    double w_end = wall_s();
    printf("  totals:  %llu messages (%llu lost), false suspects %llu, false downs %llu; virtual "
           "%.1f s in %.1f s real (forming %.1f s), peak RSS %ld MiB\n",
           (unsigned long long)st1.sent, (unsigned long long)st1.lost,
           (unsigned long long)st1.false_suspects, (unsigned long long)st1.false_downs,
           (double)memsim_now_ms(s) / 1000.0, w_end - w0, w_formed - w0, peak_rss_mib());
    printf("{\"bench\":\"membership-sim\",\"nodes\":%zu,\"latency_ms\":%.2f,\"loss\":%.4f,"
           "\"idle_msgs_per_node_s\":%.2f,\"join_ms\":%lld,\"kill_first_ms\":%lld,"
           "\"kill_all_ms\":%lld,\"freeze_first_ms\":%lld,\"freeze_all_ms\":%lld,"
           "\"rejoin_ms\":%lld,\"partition_majority_ms\":%lld,\"partition_minority_ms\":%lld,"
           "\"partition_heal_ms\":%lld,\"false_suspects\":%llu,\"false_downs\":%llu,"
           "\"real_s\":%.1f,\"rss_mib\":%ld}\n",
           n, o.latency_ms, o.loss, idle_rate, join_ms, kill_first, kill_all, fr_first, fr_all,
           rejoin, p_maj, p_min, p_heal, (unsigned long long)st1.false_suspects,
           (unsigned long long)st1.false_downs, w_end - w0, peak_rss_mib());
    memsim_free(s);
    return 0;
}
