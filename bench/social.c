/*
 * social.c — build/bin/social-bench: the social network's fan-out, measured in one process
 * (docs/performance.md, "Social"). Numbers, not verdicts.
 *
 * Builds a network through the actors (actors/social.h) with no HTTP in the way: N users, each
 * following F others drawn from a Zipf law over the users' ranks (rank 1 the most followed;
 * followers capped at --max-followers), every command persisted and published as in the app. Then
 * starts every user's timeline (a page read: each rebuilds from the user and post actors), and
 * has the authors of ranks [--from, --to] post one image each: the fan-out consumer inserts each
 * post into its author's followers' running timelines. It prints, as JSON lines: the build's
 * rates; how far the fan-out consumer was behind the build's events (the bus-backlog line: the
 * posts wait until it has caught up, and that catch-up is timed on its own; --no-settle posts at
 * once, behind them); timeline insertions per second (from the first post to the last
 * insertion) and the fan-out's shape ("shape": [ms since the first post, insertions so far]
 * about every 50 ms from the end of posting); the posts' commit→inserted lag (p50, p99); and the
 * memory of the timelines per entry (entry arrays, capacity included; the shared post records
 * apart).
 */
#include "actors/social.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <troupe/bus.h>
#include <troupe/shard.h>
#include <unistd.h>

#define WINDOW 2000u /* requests in flight at once */

typedef struct opts {
    unsigned users, follows, max_followers, from, to, workers, rounds, rate;
    double zipf;
    const char *dir;
    bool reuse, no_settle;
} opts;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- requests through a port, WINDOW in flight --------------------------------------------- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static unsigned g_inflight;
static uint64_t g_ok, g_failed;

static void on_answer(void *user, uint64_t cookie, int rc, const tr_msg *reply)
{
    (void)user;
    (void)cookie;
    uint64_t st = 99;
    if (rc == TR_OK && reply != NULL)
        tr_msg_get_u64(reply, &st);
    pthread_mutex_lock(&g_lock);
    g_inflight--;
    if (st == SOC_OK)
        g_ok++;
    else
        g_failed++;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

static void send_req(tr_shard *s, tr_port *p, const char *key, tr_msg *m)
{
    pthread_mutex_lock(&g_lock);
    while (g_inflight >= WINDOW)
        pthread_cond_wait(&g_cond, &g_lock);
    g_inflight++;
    pthread_mutex_unlock(&g_lock);
    if (tr_shard_port_request(s, p, key, m, 60000, 0) != TR_OK) {
        pthread_mutex_lock(&g_lock);
        g_inflight--;
        g_failed++;
        pthread_mutex_unlock(&g_lock);
    }
}

static void drain(void)
{
    pthread_mutex_lock(&g_lock);
    while (g_inflight > 0)
        pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
}

/* ---- the network --------------------------------------------------------------------------- */

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: social-bench [--users N] [--follows F] [--zipf S] [--max-followers M]\n"
               "                    [--from R] [--to R] [--rounds K] [--workers W]\n"
               "                    [--dir DIR [--reuse]] [--no-settle] [--rate P]\n"
               "defaults: 100000 users, 20 follows each, zipf 1.0, max followers 100000; the\n"
               "authors of ranks 200..2199 post once each (K times with --rounds); 2 workers;\n"
               "data in a fresh /tmp dir (--dir: kept in DIR, made if missing; --reuse: the\n"
               "network of an earlier run with the same --users/--follows/--zipf/--max-followers\n"
               "in DIR, not built again: its actors recover from the store). The posts wait\n"
               "until the fan-out consumer has caught up with the build's events (timed on\n"
               "its own: the bus-backlog line); --no-settle posts at once, behind them.\n"
               "--rate P: P posts a second (open loop) instead of all at once: the fanout\n"
               "line's lag is then the timelines' lag at that rate\n");
}

int main(int argc, char **argv)
{
    opts o = {.users = 100000, .follows = 20, .max_followers = 100000, .from = 200,
              .to = 2199, .workers = 2, .zipf = 1.0, .rounds = 1};
    static const struct option longopts[] = {
        {"users", required_argument, NULL, 'u'},  {"follows", required_argument, NULL, 'f'},
        {"zipf", required_argument, NULL, 'z'},   {"max-followers", required_argument, NULL, 'm'},
        {"from", required_argument, NULL, 'F'},   {"to", required_argument, NULL, 't'},
        {"rounds", required_argument, NULL, 'r'}, {"workers", required_argument, NULL, 'w'},
        {"dir", required_argument, NULL, 'd'},    {"reuse", no_argument, NULL, 'R'},
        {"no-settle", no_argument, NULL, 'S'},    {"rate", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u': o.users = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'f': o.follows = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'z': o.zipf = strtod(optarg, NULL); break;
        case 'm': o.max_followers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'F': o.from = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': o.to = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': o.rounds = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'w': o.workers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'd': o.dir = optarg; break;
        case 'R': o.reuse = true; break;
        case 'S': o.no_settle = true; break;
        case 'P': o.rate = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'social-bench --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "social-bench: unexpected argument '%s'; try 'social-bench --help'.\n",
                argv[optind]);
        return 2;
    }
    if (o.users < 10 || o.users > 10000000 || o.follows == 0 || o.follows >= o.users ||
        o.from < 1 || o.to < o.from || o.to > o.users || o.zipf <= 0 || o.rounds == 0 ||
        o.rounds > 1000 || o.rate > 10000000 || (o.reuse && o.dir == NULL)) {
        usage(stderr);
        return 2;
    }
    char dir[256];
    if (o.dir != NULL) {
        snprintf(dir, sizeof dir, "%s", o.dir);
        if (!o.reuse && mkdir(dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "social-bench: cannot make %s: %s\n", dir, strerror(errno));
            return 1;
        }
    } else if (mkdtemp(strcpy(dir, "/tmp/social-bench.XXXXXX")) == NULL)
        return 1;
    char path[300], err[256];
    snprintf(path, sizeof path, "%s/social.db", dir);
    if (!o.reuse)
        unlink(path);

    static social_ctx ctx;
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = o.workers;
    tr_system *sys;
    if (tr_system_new(&sys, &so) != TR_OK || tr_system_start(sys) != TR_OK)
        return 1;
    tr_store *store;
    tr_store_opts sto = {.path = path, .sync = TR_SYNC_NORMAL};
    if (tr_store_open(sys, &sto, &store, err, sizeof err) != TR_OK) {
        fprintf(stderr, "social-bench: %s\n", err);
        return 1;
    }
    ctx.store = store;
    ctx.node_name = "bench";
    if (social_shards_start(sys, &ctx, NULL, (size_t)o.users + 16, 0) != TR_OK)
        return 1;
    tr_pid fanout, search;
    if (tr_system_spawn(sys, &social_fanout_behaviour, &ctx, &fanout) != TR_OK ||
        tr_system_spawn(sys, &social_search_behaviour, &ctx, &search) != TR_OK)
        return 1;
    tr_port *port;
    if (tr_port_open(sys, on_answer, NULL, &port) != TR_OK)
        return 1;

    /* users u0000001.. (rank = number) */
    char (*ids)[SOCIAL_ID_MAX + 1] = calloc(o.users + 1, sizeof *ids);
    unsigned *followers = calloc(o.users + 1, sizeof *followers);
    double *cdf = calloc(o.users + 1, sizeof *cdf);
    if (ids == NULL || followers == NULL || cdf == NULL) {
        free(ids);
        free(followers);
        free(cdf);
        return 1;
    }
    uint64_t t0 = now_ns();
    for (unsigned r = 1; r <= o.users; r++) {
        char name[32];
        int nl = snprintf(name, sizeof name, "b%u", r);
        social_user_id(name, (size_t)nl, ids[r]);
        if (o.reuse)
            continue;
        tr_msg *m = tr_msg_new(SOC_U_CREATE, 48);
        tr_msg_put_str(m, name, (size_t)nl);
        tr_msg_put_str(m, "Bench User", 10);
        send_req(ctx.users, port, ids[r], m);
    }
    drain();
    double t_users = (double)(now_ns() - t0) / 1e9;
    if (!o.reuse)
        printf("{\"name\":\"build-users\",\"users\":%u,\"per_s\":%.0f,\"failed\":%llu}\n",
               o.users, o.users / t_users, (unsigned long long)g_failed);
    fflush(stdout);
    /* follows: each user follows F others drawn by Zipf over the ranks */
    double sum = 0;
    for (unsigned r = 1; r <= o.users; r++) {
        sum += 1.0 / pow((double)r, o.zipf);
        cdf[r] = sum;
    }
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    uint64_t follows = 0;
    t0 = now_ns();
    for (unsigned u = 1; u <= o.users; u++) {
        for (unsigned k = 0; k < o.follows; k++) {
            unsigned v = 0;
            for (int tries = 0; tries < 20; tries++) {
                double x = (double)(xs(&seed) >> 11) / 9007199254740992.0 * sum;
                unsigned lo = 1, hi = o.users;
                while (lo < hi) {
                    unsigned mid = (lo + hi) / 2;
                    if (cdf[mid] < x)
                        lo = mid + 1;
                    else
                        hi = mid;
                }
                if (lo != u && followers[lo] < o.max_followers) {
                    v = lo;
                    break;
                }
            }
            if (v == 0)
                continue;
            followers[v]++; /* duplicates are idempotent follows: counted once by the actors */
            follows++;
            if (o.reuse)
                continue;
            tr_msg *m = tr_msg_new(SOC_U_FOLLOW, 40);
            tr_msg_put_str(m, ids[v], strlen(ids[v]));
            send_req(ctx.users, port, ids[u], m);
        }
    }
    drain();
    double t_follows = (double)(now_ns() - t0) / 1e9;
    if (!o.reuse)
        printf("{\"name\":\"build-follows\",\"follows\":%llu,\"per_s\":%.0f,\"failed\":%llu,"
               "\"most_followed\":%u}\n",
               (unsigned long long)follows, follows / t_follows, (unsigned long long)g_failed,
               followers[1]);
    else
        printf("{\"name\":\"reused\",\"users\":%u,\"follows\":%llu,\"dir\":\"%s\"}\n", o.users,
               (unsigned long long)follows, dir);
    fflush(stdout);
    /* every timeline running (a page read each: the rebuild) */
    t0 = now_ns();
    for (unsigned u = 1; u <= o.users; u++) {
        tr_msg *m = tr_msg_new(SOC_T_PAGE, 24);
        tr_msg_put_u64(m, 0);
        tr_msg_put_str(m, "", 0);
        tr_msg_put_u64(m, 1);
        send_req(ctx.timelines, port, ids[u], m);
    }
    drain();
    printf("{\"name\":\"timelines-started\",\"timelines\":%zu,\"per_s\":%.0f}\n",
           tr_shard_count(ctx.timelines), o.users / ((double)(now_ns() - t0) / 1e9));
    fflush(stdout);
    /* the bus behind: the fan-out consumer's backlog of the build's events (follows) */
    tr_bus_lag lag = {0}, slag = {0};
    (void)tr_bus_lag_get(store, "social.fanout.bench", &lag);
    (void)tr_bus_lag_get(store, "social.search.bench", &slag);
    /* caught up first (bounded: 10 minutes), so the fan-out's figure is the posts' alone; how
     * long the catch-up took is its own figure */
    uint64_t c0 = now_ns(), backlog = lag.events, backlog_ms = lag.ms;
    while (!o.no_settle && lag.events > 0 && now_ns() - c0 < 600000000000ull) {
        usleep(10000);
        (void)tr_bus_lag_get(store, "social.fanout.bench", &lag);
    }
    double t_catch = (double)(now_ns() - c0) / 1e9;
    printf("{\"name\":\"bus-backlog\",\"fanout_events\":%llu,\"fanout_ms\":%llu,"
           "\"search_events\":%llu,\"search_ms\":%llu,\"caught_up_s\":%.3f,"
           "\"caught_up_per_s\":%.0f,\"left\":%llu}\n",
           (unsigned long long)backlog, (unsigned long long)backlog_ms,
           (unsigned long long)slag.events, (unsigned long long)slag.ms,
           o.no_settle ? 0.0 : t_catch,
           !o.no_settle && t_catch > 0 ? (double)(backlog - lag.events) / t_catch : 0.0,
           (unsigned long long)lag.events);
    fflush(stdout);
    /* the posts, and the fan-out they cause */
    uint64_t ins0 = atomic_load(&ctx.stats.fanout_inserts);
    uint64_t posts0 = atomic_load(&ctx.stats.fanout_posts);
    uint64_t expect = 0;
    for (unsigned r = o.from; r <= o.to; r++)
        expect += followers[r] <= (ctx.celebrity_followers ? ctx.celebrity_followers : 10000u)
                      ? followers[r]
                      : 0;
    expect *= o.rounds;
    t0 = now_ns();
    uint64_t sent = 0;
    for (unsigned k = 0; k < o.rounds; k++)
        for (unsigned r = o.from; r <= o.to; r++) {
            if (o.rate > 0) { /* open loop: post n at t0 + n / rate */
                uint64_t at = t0 + sent * 1000000000ull / o.rate, now = now_ns();
                if (at > now)
                    usleep((useconds_t)((at - now) / 1000u));
            }
            sent++;
            tr_msg *m = tr_msg_new(SOC_P_CREATE, 48);
            tr_msg_put_str(m, "https://img.example/bench.jpg", 29);
            send_req(ctx.posts, port, ids[r], m);
        }
    drain();
    uint64_t t_posted = now_ns();
    unsigned nposts = (o.to - o.from + 1) * o.rounds;
    uint64_t deadline = now_ns() + 600000000000ull;
    /* the fan-out's shape (a slow start, stalls, a tail): (ms since the first post, insertions
     * so far) about every PROFILE_MS, the first when the posting is done */
    enum { PROFILE_MS = 50, PROFILE_MAX = 400 };
    uint64_t prof_t[PROFILE_MAX], prof_v[PROFILE_MAX];
    unsigned nprof = 0;
    uint64_t prof_next = 0;
    while (atomic_load(&ctx.stats.fanout_posts) - posts0 < nposts && now_ns() < deadline) {
        uint64_t now = now_ns();
        if (now >= prof_next && nprof < PROFILE_MAX) {
            prof_t[nprof] = (now - t0) / 1000000u;
            prof_v[nprof++] = atomic_load(&ctx.stats.fanout_inserts) - ins0;
            prof_next = now + PROFILE_MS * 1000000ull;
        }
        usleep(1000);
    }
    uint64_t t_done = now_ns();
    uint64_t ins = atomic_load(&ctx.stats.fanout_inserts) - ins0;
    double secs = (double)(t_done - t0) / 1e9;
    uint64_t entries, bytes;
    social_timeline_memory(&ctx, NULL, &entries, &bytes);
    printf("{\"name\":\"fanout\",\"posts\":%u,\"insertions\":%llu,\"expected_at_most\":%llu,"
           "\"seconds\":%.3f,\"posting_s\":%.3f,\"value\":%.0f,\"unit\":\"insertions/s\","
           "\"lag_p50_ms\":%.1f,\"lag_p99_ms\":%.1f,\"shape\":[",
           nposts, (unsigned long long)ins, (unsigned long long)expect, secs,
           (double)(t_posted - t0) / 1e9, ins / secs,
           social_lag_quantile(&ctx.stats.timeline_lag, 0.5) / 1000.0,
           social_lag_quantile(&ctx.stats.timeline_lag, 0.99) / 1000.0);
    for (unsigned i = 0; i < nprof; i++)
        printf("%s[%llu,%llu]", i ? "," : "", (unsigned long long)prof_t[i],
               (unsigned long long)prof_v[i]);
    printf("]}\n");
    printf("{\"name\":\"timeline-memory\",\"entries\":%llu,\"array_bytes\":%llu,"
           "\"bytes_per_entry\":%.1f,\"entry_size\":8,\"post_records\":%llu,"
           "\"table_bytes\":%llu}\n",
           (unsigned long long)entries, (unsigned long long)bytes,
           entries ? (double)bytes / (double)entries : 0.0,
           (unsigned long long)atomic_load(&ctx.stats.post_records),
           (unsigned long long)social_timeline_table_bytes(&ctx));
    fflush(stdout);
    tr_port_close(port);
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_store_close(store);
    social_shards_free(&ctx);
    tr_system_free(sys);
    social_ctx_free(&ctx);
    free(ids);
    free(followers);
    free(cdf);
    if (o.dir == NULL) {
        unlink(path);
        char wal[320];
        snprintf(wal, sizeof wal, "%s-wal", path);
        unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", path);
        unlink(wal);
        rmdir(dir);
    }
    return 0;
}
