/*
 * timelines_bench.c — build/bin/timelines-bench: the fan-out's core alone (actors/src/timelines.c,
 * the node's table of running timelines), no actors, no store, no bus (docs/performance.md).
 *
 * social-bench measures the fan-out end to end, but at a million users its network takes ten
 * minutes to build and its fan-out phase lasts seconds, with posts committed and events delivered
 * around it. This opens the same network's timelines directly: N readers, each following F
 * authors drawn from the same Zipf law over ranks (followers capped at --max-followers), every
 * author's followers kept as social-bench's user actors keep them (sorted id hashes). Then
 * --threads threads take the posts of the authors of ranks [--from, --to], --rounds times, and
 * insert each into its author's followers' timelines in pages of SOCIAL_FOLLOWERS_PAGE, as a user
 * actor's SOC_U_FANOUT does (celebrities, above 10,000 followers, skipped as there). Prints, as
 * JSON lines: insertions per second over the fan-out, CPU ns per insertion (the process's, so
 * the kernel's page faults count), and bytes per timeline entry. --preload K first gives every
 * timeline up to K older posts (rings that are not new). --pad B allocates B bytes of other data
 * beside each timeline (and B/16 beside each follow), as a node's actors, mailboxes and users'
 * sets lie between its timelines' allocations (social-bench's node holds ~8.9 KB a user): without
 * it the table's data sits packed as on no real node. Figures, not verdicts.
 */
#include "../actors/src/social_impl.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct opts {
    unsigned users, follows, max_followers, from, to, rounds, threads, preload, pad;
    double zipf;
} opts;

typedef struct author {
    uint64_t *fol;              /* followers' id hashes, sorted */
    uint32_t n, cap;
} author;

static opts o = {.users = 1000000, .follows = 10, .max_followers = 100000, .from = 200,
                 .to = 2199, .rounds = 5, .threads = 2, .preload = 0, .pad = 0, .zipf = 1.0};
static social_ctx ctx;
static char (*ids)[SOCIAL_ID_MAX + 1];
static author *au;
static _Atomic uint64_t next_job, inserted, ts_clock;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static _Noreturn void oom(void)
{
    fprintf(stderr, "timelines-bench: out of memory\n");
    exit(1);
}

/* --pad: `bytes` of other data, kept in a list (freed at the end) */
static void *junk;

static void pad_alloc(unsigned bytes, int fill)
{
    for (unsigned b = 0; b < bytes; b += 256) {
        void **j = malloc(256);
        if (j == NULL)
            oom();
        memset(j, fill, 256);
        *j = junk;
        junk = j;
    }
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One post of author rank r, fanned out page by page; returns the insertions. */
static uint64_t post_once(unsigned r)
{
    const author *a = &au[r];
    size_t line = ctx.celebrity_followers ? ctx.celebrity_followers : 10000u;
    if (a->n == 0 || a->n > line)
        return 0;
    uint64_t ts = atomic_fetch_add(&ts_clock, 1);
    char id[64];
    int il = snprintf(id, sizeof id, "%s.%llu", ids[r], (unsigned long long)ts);
    soc_post *p = soc_post_new(&ctx, id, (size_t)il, ids[r], strlen(ids[r]),
                               "https://img.example/bench.jpg", 29, ts);
    if (p == NULL)
        return 0;
    uint64_t placed = 0;
    for (size_t s = 0; s < a->n; s += SOCIAL_FOLLOWERS_PAGE)
        placed += soc_tl_fanout(&ctx, p, a->fol + s,
                                a->n - s < SOCIAL_FOLLOWERS_PAGE ? a->n - s
                                                                 : SOCIAL_FOLLOWERS_PAGE);
    soc_post_unref(&ctx, p);
    return placed;
}

static void *worker(void *arg)
{
    (void)arg;
    unsigned per = o.to - o.from + 1;
    uint64_t total = (uint64_t)per * o.rounds, mine = 0;
    for (uint64_t j; (j = atomic_fetch_add(&next_job, 1)) < total;)
        mine += post_once(o.from + (unsigned)(j % per));
    atomic_fetch_add(&inserted, mine);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: timelines-bench [--users N] [--follows F] [--zipf S] "
                    "[--max-followers M]\n"
                    "                       [--from R] [--to R] [--rounds K] [--threads T] "
                    "[--preload K] [--pad B]\n"
                    "defaults: 1000000 users, 10 follows, zipf 1.0, max followers 100000, ranks "
                    "200..2199, 5 rounds, 2 threads, no preload, no pad\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"users", 1, 0, 'u'},   {"follows", 1, 0, 'f'}, {"zipf", 1, 0, 'z'},
        {"max-followers", 1, 0, 'm'}, {"from", 1, 0, 'a'}, {"to", 1, 0, 'b'},
        {"rounds", 1, 0, 'r'},  {"threads", 1, 0, 't'}, {"preload", 1, 0, 'p'},
        {"pad", 1, 0, 'P'},     {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        switch (c) {
        case 'u': o.users = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'f': o.follows = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'z': o.zipf = strtod(optarg, NULL); break;
        case 'm': o.max_followers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'a': o.from = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': o.to = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': o.rounds = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': o.threads = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'p': o.preload = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'P': o.pad = (unsigned)strtoul(optarg, NULL, 10); break;
        default: usage(); return c == 'h' ? 0 : 2;
        }
    }
    if (o.users < 2 || o.users > 100000000 || o.from < 1 || o.to < o.from || o.to > o.users ||
        o.threads < 1 || o.threads > 64 || o.rounds < 1) {
        usage();
        return 2;
    }
    ids = calloc(o.users + 1, sizeof *ids);
    au = calloc(o.users + 1, sizeof *au);
    double *cdf = calloc(o.users + 1, sizeof *cdf);
    soc_tl **tl = calloc(o.users + 1, sizeof *tl);
    if (ids == NULL || au == NULL || cdf == NULL || tl == NULL)
        oom();
    /* the network: social-bench's ids and draw */
    uint64_t t0 = now_ns();
    for (unsigned r = 1; r <= o.users; r++) {
        char name[32];
        int nl = snprintf(name, sizeof name, "b%u", r);
        social_user_id(name, (size_t)nl, ids[r]);
        if ((tl[r] = soc_tl_open(&ctx, ids[r], TR_PID_NONE)) == NULL)
            oom();
        pad_alloc(o.pad, (int)r); /* a node's other allocations between */
        soc_tl_servable(&ctx, tl[r], true);
    }
    double sum = 0;
    for (unsigned r = 1; r <= o.users; r++) {
        sum += 1.0 / pow((double)r, o.zipf);
        cdf[r] = sum;
    }
    uint64_t seed = 0x9e3779b97f4a7c15ULL, follows = 0;
    for (unsigned u = 1; u <= o.users; u++) {
        uint64_t hu = soc_id_hash(ids[u], strlen(ids[u]));
        for (unsigned k = 0; k < o.follows; k++) {
            unsigned v = 0;
            for (int tries = 0; tries < 20 && v == 0; tries++) {
                double x = (double)(xs(&seed) >> 11) / 9007199254740992.0 * sum;
                unsigned lo_ = 1, hi = o.users;
                while (lo_ < hi) {
                    unsigned mid = (lo_ + hi) / 2;
                    if (cdf[mid] < x)
                        lo_ = mid + 1;
                    else
                        hi = mid;
                }
                if (lo_ != u && au[lo_].n < o.max_followers)
                    v = lo_;
            }
            if (v == 0 || soc_tl_follow(&ctx, tl[u], ids[v]) != 1)
                continue; /* none drawn, or a follow drawn twice (idempotent) */
            pad_alloc(o.pad / 16, (int)u);
            author *a = &au[v];
            if (a->n == a->cap) {
                uint32_t nc = a->cap ? a->cap * 2 : 4;
                uint64_t *nv = realloc(a->fol, nc * sizeof *nv);
                if (nv == NULL)
                    oom();
                a->fol = nv;
                a->cap = nc;
            }
            a->fol[a->n++] = hu;
            follows++;
        }
    }
    for (unsigned r = 1; r <= o.users; r++)
        if (au[r].n > 1)
            qsort(au[r].fol, au[r].n, sizeof *au[r].fol, cmp_u64);
    free(cdf);
    printf("{\"name\":\"timelines-network\",\"users\":%u,\"follows\":%llu,\"most_followed\":%u,"
           "\"build_s\":%.2f}\n",
           o.users, (unsigned long long)follows, au[1].n, (double)(now_ns() - t0) / 1e9);
    fflush(stdout);
    atomic_store(&ts_clock, 1);
    /* older posts first: every author of ranks beyond the posting ones, round-robin, until the
     * timelines hold about `preload` entries each (their rings grown and not new) */
    if (o.preload > 0) {
        t0 = now_ns();
        uint64_t want = (uint64_t)o.preload * o.users, got = 0;
        for (unsigned r = 1; got < want && r <= o.users; r = r % o.users + 1) {
            uint64_t placed = post_once(r);
            got += placed;
            if (r == o.users && got == 0)
                break;
        }
        printf("{\"name\":\"timelines-preload\",\"entries\":%llu,\"s\":%.2f}\n",
               (unsigned long long)got, (double)(now_ns() - t0) / 1e9);
        fflush(stdout);
    }
    uint64_t e0 = 0;
    social_timeline_memory(&ctx, NULL, &e0, NULL);
    pthread_t th[64];
    uint64_t c0 = cpu_ns();
    t0 = now_ns();
    for (unsigned i = 0; i < o.threads; i++)
        if (pthread_create(&th[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "timelines-bench: no thread\n");
            exit(1);
        }
    for (unsigned i = 0; i < o.threads; i++)
        pthread_join(th[i], NULL);
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t cpu = cpu_ns() - c0, ins = atomic_load(&inserted);
    uint64_t entries = 0, bytes = 0;
    social_timeline_memory(&ctx, NULL, &entries, &bytes);
    printf("{\"name\":\"timelines-fanout\",\"posts\":%u,\"insertions\":%llu,\"seconds\":%.3f,"
           "\"value\":%.0f,\"unit\":\"insertions/s\",\"cpu_ns_per_insertion\":%.0f,"
           "\"threads\":%u,\"entries_before\":%llu}\n",
           (o.to - o.from + 1) * o.rounds, (unsigned long long)ins, secs, ins / secs,
           ins ? (double)cpu / (double)ins : 0.0, o.threads, (unsigned long long)e0);
    printf("{\"name\":\"timeline-memory\",\"entries\":%llu,\"array_bytes\":%llu,"
           "\"bytes_per_entry\":%.1f,\"table_bytes\":%llu}\n",
           (unsigned long long)entries, (unsigned long long)bytes,
           entries ? (double)bytes / (double)entries : 0.0,
           (unsigned long long)social_timeline_table_bytes(&ctx));
    fflush(stdout);
    for (unsigned r = 1; r <= o.users; r++) {
        soc_tl_close(&ctx, tl[r]);
        free(au[r].fol);
    }
    soc_tls_free(&ctx);
    while (junk != NULL) {
        void **j = junk;
        junk = *j;
        free(j);
    }
    free(tl);
    free(au);
    free(ids);
    return 0;
}
