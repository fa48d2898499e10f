/*
 * troupe-node — one node of a cluster, started from a cluster file in config/.
 *
 * It runs a system and its node (tr_node_start) with the settings of one node of the file, and
 * offers a few behaviours other nodes can spawn on it by name (tr_node_spawn): "echo" (answers
 * every request with its payload, and every message with a message of the same type back to its
 * sender), "sink" (counts messages of type 1 holding sequence numbers, checks they come in
 * order, and answers any request with [count, out_of_order]) and "named" (an echo that takes the
 * cluster-wide name given as its spawn argument, a string). The multi-process cluster tests
 * and the remote benchmarks use them; operators use the node to check a cluster forms.
 *
 * For drills with troupectl (docs/operating.md) it also runs a small supervision tree: the
 * supervisor "drill" (one_for_one) with two echo children, "worker" and "limited" (a token bucket
 * of 100 messages/s, burst 10), each registered under its child id as a local name — so
 * `troupectl kill worker` shows a restart in `troupectl tree`, and `troupectl limits set limited
 * rate=5` a changed rate in `troupectl limits limited`.
 *
 * With --load RATE it also offers traffic (scripts/idle-cluster --load): an echo registered
 * cluster-wide as "echo@NAME", and an actor sending RATE requests a second (2 s timeout), each
 * to the echo of a peer up chosen at random; at the end it prints "load sent=S answered=A
 * timeouts=T failed=F" (failed: no such peer's echo yet, refused, or no route).
 *
 * On stdout: "ready node=NAME addr=ADDRESS id=ID" once it listens, then "up NAME ID" /
 * "down NAME ID" / "left NAME ID" as peers come and go (left: it stopped and said so; a peer is
 * printed "up" once until it goes down, those up before the printer was registered too). SIGTERM or
 * SIGINT stop it, and it leaves the cluster (tr_node_stop): its peers print "left". With monitors,
 * a node whose id a member that started first has (random 16-bit ids clash) is refused by the
 * cluster: it says so and exits with status 3, to be started again with another id.
 */
#include "troupe.h"
#include "troupe/config.h"
#include "troupe/node.h"

#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SEEDS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: troupe-node --config FILE --node NAME [options]\n"
            "  --config FILE     the cluster file (libconfig; see config/cluster-local.conf)\n"
            "  --node NAME       which node of the file this process is\n"
            "  --listen ADDR     listen on ADDR instead (tcp://HOST:PORT; port 0: any)\n"
            "  --seed ADDR       join through ADDR instead of the file's seeds (repeatable)\n"
            "  --workers N       scheduler threads (default: the file's, else the runtime's)\n"
            "  --node-id N       node id of this incarnation, 2..65535 (default: random)\n"
            "  --load RATE       send RATE requests/s to random peers' echo@NAME (0..100000)\n"
            "  --quiet           no log lines on stderr\n"
            "  --help            this text\n"
            "Runs the supervisor \"drill\" with children \"worker\" and \"limited\" (100/s) for\n"
            "troupectl drills (docs/operating.md).\n"
            "Prints \"ready node=NAME addr=ADDRESS id=ID\" when listening, then \"up NAME ID\",\n"
            "\"down NAME ID\" (lost) and \"left NAME ID\" (stopped cleanly) as peers come and go.\n"
            "SIGTERM or SIGINT stop it: it leaves the cluster, and its peers print \"left\".\n"
            "With monitors, exit status 3: a member that started first has its node id.\n");
}

/* ---- behaviours others may spawn here ------------------------------------------------------ */

static int echo_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) >= TR_MSG_SYSTEM)
        return 0;
    tr_msg *back = tr_msg_from_bytes(tr_msg_type(m), tr_msg_data(m), tr_msg_size(m));
    if (back == NULL)
        return 0;
    if (tr_msg_corr(m) != 0)
        tr_reply(ctx, m, back);
    else if (tr_msg_sender(m) != TR_PID_NONE)
        tr_send(ctx, tr_msg_sender(m), back);
    else
        tr_msg_free(back);
    return 0;
}

static const tr_behaviour echo_b = {.name = "echo", .receive = echo_receive};

typedef struct sink {
    uint64_t count, out_of_order, next;
    tr_pid from;
} sink;

static int sink_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    sink *s = state;
    if (tr_msg_corr(m) != 0 && !tr_msg_is_reply(m)) {
        tr_msg *r = tr_msg_new(0, 24);
        if (r != NULL) {
            tr_msg_put_u64(r, s->count);
            tr_msg_put_u64(r, s->out_of_order);
            tr_reply(ctx, m, r);
        }
        return 0;
    }
    if (tr_msg_type(m) != 1)
        return 0;
    uint64_t v;
    if (tr_msg_get_u64(m, &v) != TR_OK)
        return 0;
    if (tr_msg_sender(m) != s->from) { /* a new sender starts its own sequence */
        s->from = tr_msg_sender(m);
        s->next = v;
    }
    if (v != s->next)
        s->out_of_order++;
    s->next = v + 1;
    s->count++;
    return 0;
}

static const tr_behaviour sink_b = {.name = "sink", .state_size = sizeof(sink),
                                    .receive = sink_receive};

static tr_node *g_node;

enum { NAMED_REGISTER = 0x7000 };

typedef struct named {
    char name[256];
} named;

/* args: the name (str). It registers on its first message, once it is alive. */
static int named_init(tr_ctx *ctx, void *state, const void *arg)
{
    named *s = state;
    tr_reader r;
    const char *p;
    size_t len;
    tr_reader_init(&r, arg);
    int rc = tr_read_str(&r, &p, &len);
    tr_reader_done(&r);
    if (rc != TR_OK || len == 0 || len >= sizeof s->name)
        return TR_EINVAL;
    memcpy(s->name, p, len);
    s->name[len] = '\0';
    return tr_send(ctx, tr_self(ctx), tr_msg_new(NAMED_REGISTER, 0));
}

static int named_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    named *s = state;
    if (tr_msg_type(m) == NAMED_REGISTER && tr_msg_sender(m) == tr_self(ctx)) {
        int rc = tr_node_register(g_node, s->name, tr_self(ctx));
        if (rc != TR_OK)
            fprintf(stderr, "troupe-node: cannot register %s: %s\n", s->name, tr_strerror(rc));
        return 0;
    }
    return echo_receive(ctx, state, m);
}

static const tr_behaviour named_b = {.name = "named", .state_size = sizeof(named),
                                     .init = named_init, .receive = named_receive};

enum {
    MSG_READY = 1, /* [line]: the watcher prints it first (see main) */
    MSG_PEERS_NOW, /* the peers up when the watcher was registered: printed "up" if not yet */
};

typedef struct watch_state {
    uint8_t up[65536 / 8]; /* node ids printed "up" and not "down" since */
} watch_state;

static bool watch_bit(const watch_state *w, uint64_t id)
{
    return id < 65536 && (w->up[id / 8] >> (id % 8)) & 1u;
}

static void watch_set(watch_state *w, uint64_t id, bool on)
{
    if (id >= 65536)
        return;
    if (on)
        w->up[id / 8] |= (uint8_t)(1u << (id % 8));
    else
        w->up[id / 8] &= (uint8_t)~(1u << (id % 8));
}

static atomic_bool g_id_taken; /* the cluster refuses this node's id (the watcher was told) */

/* Prints the ready line, then peers coming and going: one printer, so "ready" always comes first
 * (a peer quick to connect was printed "up" before it when main printed it). The node starts
 * before the watcher is registered (tr_node_monitor tells of changes from then on), so peers
 * that came up in between are read from the node once registered (MSG_PEERS_NOW); a peer is
 * printed "up" once until it goes down, whichever way the watcher heard of it. (Under load on a
 * crowded host, a node that joined 99 others saw 62 of them up before its watcher was
 * registered, and never printed them.) */
static int watch_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    watch_state *w = state;
    uint32_t t = tr_msg_type(m);
    if (t == MSG_PEERS_NOW) {
        static tr_peer_info all[1024];
        size_t n = 0;
        if (tr_node_peers(g_node, all, sizeof all / sizeof all[0], &n) == TR_OK)
            for (size_t i = 0; i < n && i < sizeof all / sizeof all[0]; i++)
                if ((all[i].status == TR_PEER_UP || all[i].status == TR_PEER_SUSPECT) &&
                    all[i].name[0] != '\0' && !watch_bit(w, all[i].node_id)) {
                    watch_set(w, all[i].node_id, true);
                    printf("up %s %u\n", all[i].name, (unsigned)all[i].node_id);
                }
        fflush(stdout);
        return 0;
    }
    if (t == MSG_READY) {
        tr_reader r;
        const char *line;
        size_t len;
        tr_reader_init(&r, m);
        if (tr_read_str(&r, &line, &len) == TR_OK)
            printf("%.*s\n", (int)len, line);
        tr_reader_done(&r);
        fflush(stdout);
        return 0;
    }
    if (t == TR_MSG_NODE_ID_TAKEN) {
        /* main waits on signals only: this one says why it should stop (exit status 3) */
        atomic_store(&g_id_taken, true);
        kill(getpid(), SIGUSR1);
        return 0;
    }
    if (t != TR_MSG_NODEUP && t != TR_MSG_NODEDOWN)
        return 0;
    tr_reader r;
    const char *name;
    size_t len;
    uint64_t id, left = 0;
    tr_reader_init(&r, m);
    if (tr_read_str(&r, &name, &len) == TR_OK) {
        if (t == TR_MSG_NODEDOWN && tr_read_u64(&r, &id) == TR_OK)
            (void)tr_read_u64(&r, &left); /* 1: it left the cluster */
        bool was = watch_bit(w, tr_msg_corr(m));
        watch_set(w, tr_msg_corr(m), t == TR_MSG_NODEUP);
        if (t != TR_MSG_NODEUP || !was) /* (up: printed already, read from the node) */
            printf("%s %.*s %llu\n", t == TR_MSG_NODEUP ? "up" : left ? "left" : "down",
                   (int)len, name, (unsigned long long)tr_msg_corr(m));
    }
    tr_reader_done(&r);
    fflush(stdout);
    return 0;
}

static const tr_behaviour watch_b = {.name = "watch", .state_size = sizeof(watch_state),
                                     .receive = watch_receive};

/* ---- --load: requests to random peers ------------------------------------------------------ */

enum { LOAD_TICK = 0x7100, LOAD_REQ = 0x7101 };
#define LOAD_TICK_MS 20u
#define LOAD_MAX_PEERS 256

typedef struct load {
    unsigned rate;              /* requests a second */
    double owed;                /* requests due, not yet sent */
    tr_peer_info up[LOAD_MAX_PEERS];
    size_t nup;
    uint64_t listed_at;         /* when `up` was read (ns) */
    uint64_t rng;
} load;

static _Atomic uint64_t load_sent, load_answered, load_timeouts, load_failed;

static int load_init(tr_ctx *ctx, void *state, const void *arg)
{
    load *l = state;
    l->rate = (unsigned)(uintptr_t)arg;
    l->rng = tr_now_ns() | 1;
    return tr_send_after(ctx, tr_self(ctx), tr_msg_new(LOAD_TICK, 0), LOAD_TICK_MS, NULL);
}

static int load_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    load *l = state;
    uint32_t t = tr_msg_type(m);
    if (tr_msg_is_reply(m)) {
        atomic_fetch_add(t == TR_MSG_TIMEOUT ? &load_timeouts
                         : t >= TR_MSG_SYSTEM ? &load_failed
                                              : &load_answered,
                         1);
        return 0;
    }
    if (t == TR_MSG_TIMEOUT) {
        atomic_fetch_add(&load_timeouts, 1);
        return 0;
    }
    if (t != LOAD_TICK || tr_msg_sender(m) != tr_self(ctx))
        return 0;
    uint64_t now = tr_now_ns();
    if (now - l->listed_at > 1000000000u) { /* the peers up, once a second */
        tr_peer_info all[LOAD_MAX_PEERS];
        size_t n = 0;
        l->nup = 0;
        if (tr_node_peers(g_node, all, LOAD_MAX_PEERS, &n) == TR_OK)
            for (size_t i = 0; i < n && i < LOAD_MAX_PEERS; i++)
                if (all[i].status == TR_PEER_UP && all[i].name[0] != '\0')
                    l->up[l->nup++] = all[i];
        l->listed_at = now;
    }
    l->owed += (double)l->rate * LOAD_TICK_MS / 1000.0;
    for (; l->owed >= 1.0 && l->nup > 0; l->owed -= 1.0) {
        l->rng ^= l->rng << 13;
        l->rng ^= l->rng >> 7;
        l->rng ^= l->rng << 17;
        char name[80];
        snprintf(name, sizeof name, "echo@%s", l->up[l->rng % l->nup].name);
        tr_pid to;
        tr_msg *r = tr_msg_new(LOAD_REQ, 16);
        atomic_fetch_add(&load_sent, 1);
        if (r == NULL || tr_node_whereis(g_node, name, &to) != TR_OK) {
            tr_msg_free(r);
            atomic_fetch_add(&load_failed, 1);
            continue;
        }
        tr_msg_put_u64(r, now);
        if (tr_request(ctx, to, r, 2000, NULL) != TR_OK)
            atomic_fetch_add(&load_failed, 1);
    }
    if (l->nup == 0)
        l->owed = 0;
    return tr_send_after(ctx, tr_self(ctx), tr_msg_new(LOAD_TICK, 0), LOAD_TICK_MS, NULL);
}

static const tr_behaviour load_b = {.name = "load", .state_size = sizeof(load),
                                    .init = load_init, .receive = load_receive};

/* The drill tree's children: an echo that registers under the name it was given (its child id)
 * on its first message, once it is alive (a restarted one takes the name over). */
enum { DRILL_REGISTER = 0x7001 };

typedef struct drill {
    const char *name;
} drill;

static int drill_init(tr_ctx *ctx, void *state, const void *arg)
{
    ((drill *)state)->name = arg;
    return tr_send(ctx, tr_self(ctx), tr_msg_new(DRILL_REGISTER, 0));
}

static int drill_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    drill *s = state;
    if (tr_msg_type(m) == DRILL_REGISTER && tr_msg_sender(m) == tr_self(ctx)) {
        (void)tr_system_register(tr_ctx_system(ctx), s->name, tr_self(ctx));
        return 0;
    }
    return echo_receive(ctx, state, m);
}

static const tr_behaviour drill_worker_b = {.name = "drill_worker", .state_size = sizeof(drill),
                                            .init = drill_init, .receive = drill_receive};
static const tr_behaviour drill_limited_b = {.name = "drill_limited", .state_size = sizeof(drill),
                                             .init = drill_init, .receive = drill_receive};

static const tr_child_spec drill_children[] = {
    {.id = "worker", .behaviour = &drill_worker_b, .arg = "worker", .restart = TR_PERMANENT,
     .shutdown_ms = 1000},
    {.id = "limited", .behaviour = &drill_limited_b, .arg = "limited", .restart = TR_PERMANENT,
     .shutdown_ms = 1000,
     .mailbox = {.limit = TR_LIMIT_TOKEN, .rate = 100, .burst = 10}},
};
static const tr_sup_spec drill_spec = {.strategy = TR_ONE_FOR_ONE, .intensity = 100,
                                       .period_ms = 10000, .children = drill_children,
                                       .nchildren = 2};

/* ---- main ---------------------------------------------------------------------------------- */

/* A whole number in [lo, hi] from option `opt`'s argument; false (said on stderr) otherwise. */
static bool option_long(const char *arg, long lo, long hi, const char *opt, const char *unit,
                        long *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "troupe-node: %s takes %ld..%ld%s\n", opt, lo, hi, unit);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *name = NULL, *listen = NULL;
    const char *seeds[MAX_SEEDS];
    size_t nseeds = 0;
    long workers = -1, node_id = 0, load_rate = 0;
    bool quiet = false;
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"node", required_argument, NULL, 'n'},
        {"listen", required_argument, NULL, 'l'}, {"seed", required_argument, NULL, 's'},
        {"workers", required_argument, NULL, 'w'}, {"node-id", required_argument, NULL, 'i'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {"load", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'c': config = optarg; break;
        case 'n': name = optarg; break;
        case 'l': listen = optarg; break;
        case 'q': quiet = true; break;
        case 's':
            if (nseeds == MAX_SEEDS) {
                fprintf(stderr, "troupe-node: at most %d seeds\n", MAX_SEEDS);
                return 2;
            }
            seeds[nseeds++] = optarg;
            break;
        case 'w':
            if (!option_long(optarg, 1, 1024, "--workers", "", &workers))
                return 2;
            break;
        case 'L':
            if (!option_long(optarg, 0, 100000, "--load", " requests/s", &load_rate))
                return 2;
            break;
        case 'i':
            if (!option_long(optarg, 2, 65535, "--node-id", "", &node_id))
                return 2;
            break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'troupe-node --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "troupe-node: unexpected argument '%s'; try 'troupe-node --help'.\n",
                argv[optind]);
        return 2;
    }
    if (config == NULL || name == NULL) {
        fprintf(stderr, "troupe-node: --config FILE and --node NAME are required\n");
        usage(stderr);
        return 2;
    }
    char err[512];
    tr_node_config *nc;
    int rc = tr_node_config_load(config, name, &nc, err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "troupe-node: %s\n", err);
        return 1;
    }
    tr_node_opts no = nc->node;
    if (listen != NULL)
        no.listen = listen;
    if (nseeds > 0) {
        no.seeds = seeds;
        no.nseeds = nseeds;
    }
    no.quiet = quiet;

    /* signals are taken by sigwait in this thread; every thread started later blocks them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1); /* from the watcher: the cluster refused this node's id */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    tr_system_opts so;
    tr_system_opts_init(&so);
    if (workers > 0)
        so.workers = (unsigned)workers;
    else if (nc->workers > 0)
        so.workers = nc->workers;
    so.node_id = node_id > 0 ? (uint16_t)node_id : tr_node_random_id();
    tr_system *sys;
    if ((rc = tr_system_new(&sys, &so)) != TR_OK || (rc = tr_system_start(sys)) != TR_OK) {
        fprintf(stderr, "troupe-node: cannot start the runtime: %s\n", tr_strerror(rc));
        tr_node_config_free(nc);
        return 1;
    }
    tr_node *node;
    rc = tr_node_start(sys, &no, &node);
    if (rc != TR_OK) {
        fprintf(stderr, "troupe-node: cannot start node %s on %s: %s\n", name, no.listen,
                tr_strerror(rc));
        tr_system_stop(sys);
        tr_system_join(sys);
        tr_system_free(sys);
        tr_node_config_free(nc);
        return 1;
    }
    tr_node_register_behaviour(node, "echo", &echo_b);
    tr_node_register_behaviour(node, "sink", &sink_b);
    g_node = node;
    tr_node_register_behaviour(node, "named", &named_b);
    tr_pid drill_sup;
    if ((rc = tr_sup_start(sys, &drill_spec, &drill_sup)) == TR_OK)
        (void)tr_system_register(sys, "drill", drill_sup);
    else
        fprintf(stderr, "troupe-node: cannot start the drill tree: %s\n", tr_strerror(rc));
    if (load_rate > 0) {
        /* the echo others load, then the loader (the echo registers once it runs) */
        char echo_name[80];
        int el = snprintf(echo_name, sizeof echo_name, "echo@%s", tr_node_name(node));
        tr_msg *ea = tr_msg_new(0, (size_t)el + 8);
        tr_pid echo, loader;
        if (ea != NULL)
            tr_msg_put_str(ea, echo_name, (size_t)el);
        if (ea == NULL || (rc = tr_system_spawn(sys, &named_b, ea, &echo)) != TR_OK ||
            (rc = tr_system_spawn(sys, &load_b, (void *)(uintptr_t)load_rate, &loader)) != TR_OK)
            fprintf(stderr, "troupe-node: cannot start the load: %s\n", tr_strerror(rc));
        tr_msg_free(ea);
    }
    char ready[256];
    int rl = snprintf(ready, sizeof ready, "ready node=%s addr=%s id=%u", tr_node_name(node),
                      tr_node_address(node), (unsigned)so.node_id);
    /* the watcher prints the ready line, then the peers it is told of (queued after it) */
    tr_pid watcher;
    tr_msg *rm = tr_msg_new(MSG_READY, (size_t)rl + 8);
    if (rm != NULL)
        tr_msg_put_str(rm, ready, (size_t)rl);
    bool told = false;
    if (rm != NULL && tr_system_spawn(sys, &watch_b, NULL, &watcher) == TR_OK)
        told = tr_system_send(sys, watcher, rm) == TR_OK; /* (takes rm either way) */
    else
        tr_msg_free(rm);
    if (told) {
        tr_node_monitor(node, watcher, true);
        (void)tr_system_send(sys, watcher, tr_msg_new(MSG_PEERS_NOW, 0)); /* (see watch_receive) */
    } else {
        printf("%s\n", ready);
        fflush(stdout);
    }

    /* until SIGTERM / SIGINT; or until the cluster refuses this node for its id (another
     * member that started first has it: exit 3, to be started again with another id) */
    int sig = 0, status = 0;
    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            sig = 0;
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (atomic_load(&g_id_taken)) {
            sig = 0;
            fprintf(stderr, "troupe-node: node id %u is taken in this cluster by a member that "
                            "started first: exiting; start it again with another --node-id (or "
                            "none: a random one)\n", (unsigned)so.node_id);
            status = 3;
            break;
        }
    }
    if (!quiet && sig > 0)
        fprintf(stderr, "troupe node %s: signal %d, stopping\n", name, sig);
    tr_node_stop(node);
    tr_system_stop(sys);
    tr_system_join(sys);
    if (load_rate > 0) {
        printf("load sent=%llu answered=%llu timeouts=%llu failed=%llu\n",
               (unsigned long long)load_sent, (unsigned long long)load_answered,
               (unsigned long long)load_timeouts, (unsigned long long)load_failed);
        fflush(stdout);
    }
    tr_system_free(sys);
    tr_node_config_free(nc);
    return status;
}
