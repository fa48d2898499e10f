/*
 * persist.c — troupe-bench's persistence workloads, on the SQLite store (troupe/store.h).
 *
 *   persist   1,000 persistent actors, 1,000,000 events in all; each actor is driven by a client
 *             actor that keeps one request outstanding and measures the time to its reply, which
 *             leaves only after the event's commit -> events/s, p50/p99 persist latency, and
 *             events per commit; with SQLite synchronous=FULL, then NORMAL, then on Redis (a
 *             redis-server started here on a free loopback port, appendfsync always), if installed
 *   recover   one actor with 1,000,000 events: time to recover it from the events alone, then
 *             from a snapshot taken after the last event
 * The database lives in a fresh directory under the current one's data/ (a real disk: fsync
 * is part of what is measured), removed afterwards.
 */
#include "persist.h"

#include <troupe.h>
#include <troupe/store.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <time.h>
#include <unistd.h>

enum { P_ADD = 1, P_GO = 2, P_FILL = 3, P_SNAP = 4 };

static void die(const char *what)
{
    fprintf(stderr, "troupe-bench: %s\n", what);
    exit(1);
}

static tr_system *system_up(unsigned workers)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = workers;
    tr_system *sys;
    if (tr_system_new(&sys, &o) != TR_OK || tr_system_start(sys) != TR_OK)
        die("cannot start the runtime");
    return sys;
}

static void system_down(tr_system *sys)
{
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
}

static char g_dir[256];

static void dir_make(void)
{
    mkdir("data", 0755);
    snprintf(g_dir, sizeof g_dir, "data/bench-store-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        die("cannot make a directory under data/");
}

static void db_remove(const char *path)
{
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static unsigned g_redis_port; /* 0: SQLite */

static tr_store *store_up(tr_system *sys, const char *path, tr_store_sync sync)
{
    tr_store_opts o = {.path = path, .sync = sync, .snapshot_every = 1u << 30};
    if (g_redis_port != 0) {
        o.backend = TR_STORE_REDIS;
        o.redis_host = "127.0.0.1";
        o.redis_port = g_redis_port;
    }
    tr_store *s;
    char err[512];
    if (tr_store_open(sys, &o, &s, err, sizeof err) != TR_OK)
        die(err);
    return s;
}

/* ---- the persistent actor: a counter ------------------------------------------------------- */

typedef struct pa_arg {
    tr_store *s;
    char id[32];
} pa_arg;

typedef struct pa {
    tr_journal *j;
    uint64_t sum;
} pa;

static _Atomic uint64_t g_recovered;

static int pa_restore(void *state, uint64_t seq, const void *snap, size_t len)
{
    (void)seq;
    pa *p = state;
    if (len == sizeof p->sum)
        memcpy(&p->sum, snap, len);
    return 0;
}

static int pa_apply(void *state, uint64_t seq, const void *ev, size_t len)
{
    (void)seq;
    pa *p = state;
    uint64_t v = 0;
    if (len == sizeof v)
        memcpy(&v, ev, len);
    p->sum += v;
    return 0;
}

static int pa_init(tr_ctx *ctx, void *state, const void *arg)
{
    const pa_arg *a = arg;
    pa *p = state;
    int rc = tr_journal_open(ctx, a->s, a->id, pa_restore, pa_apply, p, &p->j);
    atomic_store(&g_recovered, tr_journal_seq(p->j));
    return rc;
}

static uint64_t u64_of(const tr_msg *m)
{
    uint64_t v;
    tr_msg_get_u64(m, &v); /* 0 when it holds none */
    return v;
}

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t left;
} g_done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void done_one(void)
{
    pthread_mutex_lock(&g_done.lock);
    if (--g_done.left == 0)
        pthread_cond_signal(&g_done.cond);
    pthread_mutex_unlock(&g_done.lock);
}

static bool wait_all(unsigned seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    pthread_mutex_lock(&g_done.lock);
    while (g_done.left > 0)
        if (pthread_cond_timedwait(&g_done.cond, &g_done.lock, &ts) != 0)
            break;
    bool ok = g_done.left == 0;
    pthread_mutex_unlock(&g_done.lock);
    return ok;
}

static int pa_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    pa *p = state;
    uint64_t v = u64_of(m);
    if (tr_msg_type(m) == P_ADD) {
        tr_journal_persist(p->j, &v, sizeof v);
        p->sum += v;
        if (tr_msg_corr(m) != 0)
            tr_journal_reply(p->j, m, tr_msg_new_u64(P_ADD, p->sum));
    } else if (tr_msg_type(m) == P_FILL) { /* v events in this one turn */
        uint64_t one = 1;
        for (uint64_t i = 0; i < v; i++)
            tr_journal_persist(p->j, &one, sizeof one);
        p->sum += v;
        if (tr_msg_corr(m) != 0)
            tr_journal_reply(p->j, m, tr_msg_new_u64(P_FILL, p->sum));
    } else if (tr_msg_type(m) == P_SNAP) {
        tr_journal_snapshot(p->j, &p->sum, sizeof p->sum);
        if (tr_msg_corr(m) != 0)
            tr_journal_reply(p->j, m, tr_msg_new_u64(P_SNAP, p->sum));
    }
    return 0;
}

static void pa_turn_end(tr_ctx *ctx, void *state)
{
    (void)ctx;
    tr_journal_flush(((pa *)state)->j);
}

static void pa_terminate(tr_ctx *ctx, void *state, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    tr_journal_close(((pa *)state)->j);
}

static const tr_behaviour pa_b = {.name = "persistent",
                                  .state_size = sizeof(pa),
                                  .init = pa_init,
                                  .receive = pa_receive,
                                  .terminate = pa_terminate,
                                  .turn_end = pa_turn_end};

/* ---- the client: one request outstanding, latency per reply --------------------------------- */

typedef struct client {
    tr_pid target;
    uint64_t left, sent_ns;
    uint64_t *samples;  /* its own slice */
    size_t n;
} client;

static int client_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(client *)state = *(const client *)arg;
    return 0;
}

static void client_send(tr_ctx *ctx, client *c)
{
    c->sent_ns = tr_now_ns();
    uint64_t corr;
    if (tr_request(ctx, c->target, tr_msg_new_u64(P_ADD, 1), 60000, &corr) != TR_OK)
        die("a request failed");
}

static int client_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    client *c = state;
    if (tr_msg_type(m) == P_GO) {
        client_send(ctx, c);
    } else if (tr_msg_is_reply(m)) {
        c->samples[c->n++] = tr_now_ns() - c->sent_ns;
        if (--c->left == 0)
            done_one();
        else
            client_send(ctx, c);
    } else if (tr_msg_type(m) == TR_MSG_TIMEOUT) {
        die("a persist took more than 60 s");
    }
    return 0;
}

static const tr_behaviour client_b = {.name = "client", .state_size = sizeof(client),
                                      .init = client_init, .receive = client_receive};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void persist_run(unsigned workers, double scale, tr_store_sync sync)
{
    const unsigned actors = 1000;
    uint64_t per = (uint64_t)(1000 * scale);
    if (per < 1)
        per = 1;
    uint64_t total = per * actors;
    char path[512];
    snprintf(path, sizeof path, "%s/persist.db", g_dir);
    db_remove(path);
    tr_system *sys = system_up(workers);
    tr_store *s = store_up(sys, path, sync);
    uint64_t *samples = calloc(total, sizeof *samples);
    tr_pid *targets = calloc(actors, sizeof *targets), *clients = calloc(actors, sizeof *clients);
    if (samples == NULL || targets == NULL || clients == NULL)
        die("out of memory");
    for (unsigned i = 0; i < actors; i++) {
        pa_arg a = {.s = s};
        snprintf(a.id, sizeof a.id, "bench/%u", i);
        if (tr_system_spawn(sys, &pa_b, &a, &targets[i]) != TR_OK)
            die("cannot spawn a persistent actor");
        client c = {.target = targets[i], .left = per, .samples = samples + i * per};
        if (tr_system_spawn(sys, &client_b, &c, &clients[i]) != TR_OK)
            die("cannot spawn a client");
    }
    g_done.left = actors;
    tr_store_stats before, after;
    tr_store_stats_get(s, &before);
    uint64_t t0 = tr_now_ns();
    for (unsigned i = 0; i < actors; i++)
        tr_system_send(sys, clients[i], tr_msg_new(P_GO, 0));
    if (!wait_all(600))
        die("persist did not finish within 600 s");
    double secs = (double)(tr_now_ns() - t0) / 1e9;
    tr_store_stats_get(s, &after);
    qsort(samples, total, sizeof *samples, cmp_u64);
    double p50 = (double)samples[total / 2] / 1e6, p99 = (double)samples[total * 99 / 100] / 1e6;
    double commits = (double)(after.commits - before.commits);
    double per_commit = commits > 0 ? (double)(after.events - before.events) / commits : 0;
    const char *mode = g_redis_port ? "redis-aof-always" : sync == TR_SYNC_FULL ? "FULL" : "NORMAL";
    printf("{\"bench\":\"persist\",\"sync\":\"%s\",\"value\":%.0f,\"unit\":\"events/s\","
           "\"seconds\":%.3f,\"count\":%llu,\"actors\":%u,\"p50_ms\":%.2f,\"p99_ms\":%.2f,"
           "\"commits\":%.0f,\"events_per_commit\":%.1f}\n",
           mode, (double)total / secs, secs, (unsigned long long)total, actors, p50, p99, commits,
           per_commit);
    printf("# persist (%s) %10.0f events/s  p50 %.2f ms  p99 %.2f ms  (%llu events, "
           "%u actors, %.0f commits, %.0f events per commit, %.2f s)\n",
           mode, (double)total / secs, p50, p99, (unsigned long long)total, actors, commits,
           per_commit, secs);
    fflush(stdout);
    system_down(sys); /* actors end (their journals close) before the store does */
    tr_store_close(s);
    free(samples);
    free(targets);
    free(clients);
    db_remove(path);
}

/* Starts redis-server on a free loopback port (appendonly, fsync at every write); 0 if none. */
static pid_t redis_up(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0)
        return 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        g_redis_port = 20000 + (unsigned)((tr_now_ns() / 1000 + (uint64_t)attempt * 7919) % 40000);
        char port[16];
        snprintf(port, sizeof port, "%u", g_redis_port);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            if (devnull >= 0) {
                dup2(devnull, STDOUT_FILENO);
                dup2(devnull, STDERR_FILENO);
            }
            execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir",
                   g_dir, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 200; i++) {
            redisContext *c = redisConnect("127.0.0.1", (int)g_redis_port);
            bool up = c != NULL && c->err == 0;
            if (c != NULL)
                redisFree(c);
            if (up)
                return pid;
            if (waitpid(pid, NULL, WNOHANG) == pid)
                break;
            usleep(10000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    g_redis_port = 0;
    return 0;
}

void bench_persist(unsigned workers, double scale)
{
    dir_make();
    persist_run(workers, scale, TR_SYNC_FULL);
    persist_run(workers, scale, TR_SYNC_NORMAL);
    pid_t redis = redis_up();
    if (redis > 0) {
        persist_run(workers, scale, TR_SYNC_FULL);
        kill(redis, SIGTERM);
        waitpid(redis, NULL, 0);
        g_redis_port = 0;
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'/appendonlydir", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "troupe-bench: could not clean %s\n", g_dir);
    } else {
        printf("# persist on Redis skipped: redis-server is not installed\n");
    }
    rmdir(g_dir);
}

/* ---- recover ------------------------------------------------------------------------------- */

static uint64_t call(tr_system *sys, tr_pid to, uint32_t type, uint64_t v)
{
    tr_msg *reply = NULL;
    if (tr_system_call(sys, to, tr_msg_new_u64(type, v), 600000, &reply) != TR_OK)
        die("a call failed");
    uint64_t r = u64_of(reply);
    tr_msg_free(reply);
    return r;
}

/* Spawns the actor (recovering it) and returns how long that took, in seconds. */
static double timed_spawn(tr_system *sys, tr_store *s, tr_pid *out)
{
    pa_arg a = {.s = s};
    snprintf(a.id, sizeof a.id, "recover/1");
    uint64_t t0 = tr_now_ns();
    if (tr_system_spawn(sys, &pa_b, &a, out) != TR_OK)
        die("cannot recover the actor");
    return (double)(tr_now_ns() - t0) / 1e9;
}

static void stop_actor(tr_system *sys, tr_pid p)
{
    tr_system_stop_actor(sys, p);
    while (tr_system_alive(sys, p))
        usleep(1000);
}

void bench_recover(unsigned workers, double scale)
{
    dir_make();
    uint64_t n = (uint64_t)(1000000 * scale);
    if (n < 1)
        n = 1;
    char path[512];
    snprintf(path, sizeof path, "%s/recover.db", g_dir);
    db_remove(path);
    tr_system *sys = system_up(workers);
    tr_store *s = store_up(sys, path, TR_SYNC_NORMAL);
    tr_pid p;
    timed_spawn(sys, s, &p);
    for (uint64_t done = 0; done < n;) { /* 10,000 events per turn */
        uint64_t k = n - done < 10000 ? n - done : 10000;
        call(sys, p, P_FILL, k);
        done += k;
    }
    stop_actor(sys, p);
    double t_events = timed_spawn(sys, s, &p);
    uint64_t got = atomic_load(&g_recovered);
    call(sys, p, P_SNAP, 0);
    stop_actor(sys, p);
    double t_snap = timed_spawn(sys, s, &p);
    stop_actor(sys, p);
    if (got != n)
        die("recovered a different number of events");
    printf("{\"bench\":\"recover\",\"value\":%.3f,\"unit\":\"s\",\"events\":%llu,"
           "\"events_per_s\":%.0f,\"with_snapshot_s\":%.4f}\n",
           t_events, (unsigned long long)n, (double)n / t_events, t_snap);
    printf("# recover  %llu events replayed in %.3f s (%.0f events/s); from a snapshot: %.4f s\n",
           (unsigned long long)n, t_events, (double)n / t_events, t_snap);
    fflush(stdout);
    system_down(sys);
    tr_store_close(s);
    db_remove(path);
    rmdir(g_dir);
}
