/*
 * troupectl — looks into a live troupe cluster: members, busy actors, the supervision tree, rate
 * limits (and changes them), kills an actor for a drill, counters.
 *
 * It speaks the cluster protocol as a hidden, short-lived node (tr_node_opts.hidden): it dials
 * the node given by --node with the cluster secret, on one connection that the node answers on,
 * and that node keeps it out of membership (no other node hears of it, nothing is placed on it);
 * it sends one request per command to the node's introspection service (tr_node_ctl; the
 * commands and their answers are in docs/operating.md), prints the answer as a table or, with
 * --json, as JSON, and leaves (a LEAVE, as any node that stops). What it shows is as the node
 * asked sees it.
 *
 * Exit status: 0 done; 1 the node refused the command (an unknown name, say), with one line on
 * stderr; 2 a usage error; 3 the node could not be reached or refused us (wrong secret, TLS).
 */
#include "troupe.h"
#include "troupe/config.h"
#include "troupe/node.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3

static void usage(FILE *f)
{
    fprintf(f,
            "usage: troupectl --node tcp://HOST:PORT --secret-file FILE [options] COMMAND\n"
            "commands:\n"
            "  nodes                      the members: state, incarnation, last heard, round trip\n"
            "  top                        actors by mailbox depth (--sort depth|rate|received|\n"
            "                             restarts), refreshed every --interval for --count rounds\n"
            "  tree                       the supervision tree with restart counts\n"
            "  limits NAME                the rate limits of an actor (a pid, a local or cluster\n"
            "                             name) or of every actor of a behaviour\n"
            "  limits set NAME rate=R [burst=B] [kind=token|leaky|none]   change them live\n"
            "  kill PID|NAME              an exit signal (killed; --reason TEXT: an error) for a\n"
            "                             drill: its supervisor restarts it\n"
            "  stats                      the system's and the node's counters\n"
            "options:\n"
            "  --node ADDR                the node to ask (tcp://HOST:PORT, its listen address)\n"
            "  --secret-file FILE         the cluster secret (first line; mode 0600)\n"
            "  --tls-cert FILE --tls-key FILE --tls-ca FILE   for a cluster over TLS\n"
            "  --tls-verify MODE          required (default), optional or none\n"
            "  --tls-server-name NAME     the name the node's certificate carries\n"
            "  --json                     the answer as JSON (one object per line)\n"
            "  --timeout MS               for connecting and for each answer (default 5000)\n"
            "  --interval SECONDS         top: between refreshes (default 2)\n"
            "  --count N                  top: refreshes (default 1; 0: until interrupted)\n"
            "  --sort KEY                 top: depth (default), rate, received or restarts\n"
            "  --rows N                   top: rows (default 20, at most 100)\n"
            "  --window MS                top: the window the rate is measured over (default 500)\n"
            "  --reason TEXT              kill: end it with an error and this text\n"
            "  --help                     this text\n"
            "Exit status: 0 done, 1 the node refused the command, 2 usage, 3 the node could not\n"
            "be reached or refused the connection (wrong secret, TLS).\n");
}

__attribute__((format(printf, 2, 3), noreturn)) static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "troupectl: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

/* ---- msgpack answers ----------------------------------------------------------------------- */

static const msgpack_object *get(const msgpack_object *m, const char *key)
{
    if (m == NULL || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int64_t get_i64(const msgpack_object *m, const char *key, int64_t dflt)
{
    const msgpack_object *v = get(m, key);
    if (v == NULL)
        return dflt;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)v->via.u64;
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return v->via.i64;
    if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
        return (int64_t)v->via.f64;
    if (v->type == MSGPACK_OBJECT_BOOLEAN)
        return v->via.boolean;
    return dflt;
}

static uint64_t get_u64(const msgpack_object *m, const char *key)
{
    const msgpack_object *v = get(m, key);
    return v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0;
}

static double get_f64(const msgpack_object *m, const char *key, double dflt)
{
    const msgpack_object *v = get(m, key);
    if (v == NULL)
        return dflt;
    if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
        return v->via.f64;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (double)v->via.u64;
    return dflt;
}

/* The string at key into buf ("" if none). */
static const char *get_str(const msgpack_object *m, const char *key, char *buf, size_t cap)
{
    const msgpack_object *v = get(m, key);
    buf[0] = '\0';
    if (v != NULL && v->type == MSGPACK_OBJECT_STR)
        snprintf(buf, cap, "%.*s", (int)v->via.str.size, v->via.str.ptr);
    return buf;
}

static const msgpack_object *get_array(const msgpack_object *m, const char *key)
{
    const msgpack_object *v = get(m, key);
    return v != NULL && v->type == MSGPACK_OBJECT_ARRAY ? v : NULL;
}

/* JSON, for --json: maps, arrays, strings (escaped), numbers, booleans, nil. */
static void json_str(const char *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json(const msgpack_object *o, int depth)
{
    if (depth > 32) {
        printf("null");
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: printf("null"); break;
    case MSGPACK_OBJECT_BOOLEAN: printf(o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: printf("%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: printf("%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: printf("%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: json_str(o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: json_str(o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        putchar('[');
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i > 0)
                putchar(',');
            json(&o->via.array.ptr[i], depth + 1);
        }
        putchar(']');
        break;
    case MSGPACK_OBJECT_MAP:
        putchar('{');
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i > 0)
                putchar(',');
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR)
                json_str(k->via.str.ptr, k->via.str.size);
            else
                printf("\"?\"");
            putchar(':');
            json(&o->via.map.ptr[i].val, depth + 1);
        }
        putchar('}');
        break;
    default: printf("null"); break;
    }
}

/* ---- the connection ------------------------------------------------------------------------ */

typedef struct cli {
    const char *addr, *secret_file;
    tr_node_tls tls;
    bool use_tls, json;
    unsigned timeout_ms;
    double interval;
    long count, rows, window;
    const char *sort, *reason;
    tr_system *sys;
    tr_node *node;
    char peer[65];
} cli;

static void disconnect_node(cli *c);

/* --node must be tcp://HOST:PORT. */
static void check_addr(const cli *c)
{
    const char *hp = c->addr + 6, *colon = strrchr(hp, ':');
    if (strncmp(c->addr, "tcp://", 6) != 0 || colon == NULL || colon == hp || colon[1] == '\0' ||
        strlen(c->addr) > 128)
        die(EXIT_USAGE, "--node wants tcp://HOST:PORT, not '%s'", c->addr);
}

/* A plain TCP connect to the node's address, once the node's first dial has failed: it says
 * precisely why (refused, no route, a name that does not resolve). Not made before: a node
 * counts and logs a connection that closes without a handshake. */
static void probe(cli *c)
{
    char host[256], port[16];
    const char *hp = c->addr + 6, *colon = strrchr(hp, ':');
    if (strncmp(c->addr, "tcp://", 6) != 0 || colon == NULL || colon == hp ||
        (size_t)(colon - hp) >= sizeof host || strlen(colon + 1) >= sizeof port)
        die(EXIT_USAGE, "--node wants tcp://HOST:PORT, not '%s'", c->addr);
    snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
    snprintf(port, sizeof port, "%s", colon + 1);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [v6] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g != 0)
        die(EXIT_UNREACHABLE, "cannot reach %s: %s", c->addr, gai_strerror(g));
    int err = ETIMEDOUT;
    for (struct addrinfo *p = ai; p != NULL; p = p->ai_next) {
        int fd = socket(p->ai_family, p->ai_socktype | SOCK_NONBLOCK, p->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int rc = connect(fd, p->ai_addr, p->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof err;
            if (poll(&pf, 1, (int)c->timeout_ms) == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
                rc = err == 0 ? 0 : -1;
            else
                err = ETIMEDOUT;
        } else if (rc != 0) {
            err = errno;
        }
        close(fd);
        if (rc == 0) {
            freeaddrinfo(ai);
            return;
        }
    }
    freeaddrinfo(ai);
    disconnect_node(c);
    die(EXIT_UNREACHABLE, "cannot reach %s: %s", c->addr, strerror(err));
}

/* Joins as a hidden node and waits until the node is up for us, or says why not. */
static void connect_node(cli *c)
{
    char secret[1024], err[512];
    if (tr_config_secret(c->secret_file, secret, sizeof secret, err, sizeof err) != TR_OK)
        die(EXIT_USAGE, "%s", err);
    check_addr(c);
    tr_log_set(NULL, NULL, TR_LOG_ERROR);
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = 1;
    so.node_id = tr_node_random_id();
    int rc;
    if ((rc = tr_system_new(&c->sys, &so)) != TR_OK || (rc = tr_system_start(c->sys)) != TR_OK)
        die(EXIT_UNREACHABLE, "cannot start the runtime: %s", tr_strerror(rc));
    char name[65];
    unsigned r;
    if (getentropy(&r, sizeof r) != 0)
        r = (unsigned)tr_now_ns();
    snprintf(name, sizeof name, "troupectl-%ld-%04x", (long)getpid(), r & 0xffff);
    const char *seeds[] = {c->addr};
    tr_node_opts no = {.name = name, .secret = secret, .seeds = seeds, .nseeds = 1,
                       .hidden = true, .quiet = true, .reconnect_min_ms = 100,
                       .reconnect_max_ms = 1000, .leave_ms = 500,
                       .tls = c->use_tls ? &c->tls : NULL};
    rc = tr_node_start(c->sys, &no, &c->node);
    memset(secret, 0, sizeof secret);
    if (rc != TR_OK)
        die(rc == TR_EINVAL && c->use_tls ? EXIT_USAGE : EXIT_UNREACHABLE,
            "cannot start a node: %s%s", tr_strerror(rc),
            c->use_tls ? " (check the --tls files: mode 0600 for the key)" : "");
    uint64_t deadline = tr_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
    bool probed = false;
    for (;;) {
        tr_peer_info p[4];
        size_t k = 0;
        tr_node_peers(c->node, p, 4, &k);
        for (size_t i = 0; i < k && i < 4; i++)
            if (p[i].status == TR_PEER_UP && p[i].name[0] != '\0') {
                snprintf(c->peer, sizeof c->peer, "%s", p[i].name);
                return;
            }
        tr_node_stats st;
        tr_node_stats_get(c->node, &st);
        if (st.tls_failed > 0 || st.refused_auth > 0)
            disconnect_node(c);
        if (st.tls_failed > 0)
            die(EXIT_UNREACHABLE, "%s refused the TLS handshake (a certificate refused on "
                "either side, or one side without TLS)", c->addr);
        if (st.refused_auth > 0)
            die(EXIT_UNREACHABLE, "%s refused us during the handshake: wrong cluster secret "
                "(or TLS on one side only, or not a troupe node of this version)", c->addr);
        if (st.dials >= 2 && !probed) {
            probed = true; /* the first dial failed: why? (dies if the port cannot be reached) */
            probe(c);
        }
        if (tr_now_ns() >= deadline) {
            disconnect_node(c);
            die(EXIT_UNREACHABLE, "%s accepted the connection but no troupe node answered "
                "within %u ms", c->addr, c->timeout_ms);
        }
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
}

static void disconnect_node(cli *c)
{
    if (c->node != NULL)
        tr_node_stop(c->node); /* a LEAVE: the node forgets us at once */
    if (c->sys != NULL) {
        tr_system_stop(c->sys);
        tr_system_join(c->sys);
        tr_system_free(c->sys);
    }
    c->node = NULL;
    c->sys = NULL;
}

/* A request: a map of cmd and nargs more key/value pairs (packed by the caller after this). */
static tr_msg *request(const char *cmd, unsigned nargs, msgpack_packer **pk)
{
    tr_msg *m = tr_msg_new(TR_MSG_CTL, 128);
    if (m == NULL)
        die(EXIT_UNREACHABLE, "out of memory");
    *pk = tr_msg_packer(m);
    msgpack_pack_map(*pk, 1 + nargs);
    msgpack_pack_str(*pk, 3);
    msgpack_pack_str_body(*pk, "cmd", 3);
    msgpack_pack_str(*pk, strlen(cmd));
    msgpack_pack_str_body(*pk, cmd, strlen(cmd));
    return m;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Sends req, returns the answer (a map with rc = 0) in *r (done with tr_reader_done and
 * tr_msg_free); dies with the node's error line otherwise. */
static const msgpack_object *ask(cli *c, tr_msg *req, tr_msg **ans, tr_reader *r)
{
    int rc = tr_node_ctl(c->node, c->peer, req, c->timeout_ms, ans);
    if (rc != TR_OK) {
        disconnect_node(c);
        die(EXIT_UNREACHABLE, "%s did not answer: %s", c->addr, tr_strerror(rc));
    }
    const msgpack_object *obj;
    tr_reader_init(r, *ans);
    if (tr_read_object(r, &obj) != TR_OK || obj->type != MSGPACK_OBJECT_MAP) {
        disconnect_node(c);
        die(EXIT_REFUSED, "a malformed answer from %s", c->addr);
    }
    int64_t code = get_i64(obj, "rc", TR_EBADMSG);
    if (code != TR_OK) {
        char line[512];
        get_str(obj, "error", line, sizeof line);
        if (c->json) {
            json(obj, 0);
            putchar('\n');
        }
        disconnect_node(c);
        die(EXIT_REFUSED, "%s", line[0] != '\0' ? line : tr_strerror((int)code));
    }
    return obj;
}

/* ---- commands ------------------------------------------------------------------------------ */

static void pidstr(uint64_t pid, char *buf, size_t cap)
{
    if (pid == 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%#llx", (unsigned long long)pid);
}

static void cmd_nodes(cli *c)
{
    msgpack_packer *pk;
    tr_msg *ans;
    tr_reader r;
    const msgpack_object *o = ask(c, request("nodes", 0, &pk), &ans, &r);
    if (c->json) {
        json(o, 0);
        putchar('\n');
    } else {
        printf("%-16s %-28s %6s %-8s %-18s %8s %9s\n", "NAME", "ADDRESS", "ID", "STATE",
               "INCARNATION", "HEARD", "RTT");
        const msgpack_object *a = get_array(o, "nodes");
        for (uint32_t i = 0; a != NULL && i < a->via.array.size; i++) {
            const msgpack_object *p = &a->via.array.ptr[i];
            char name[70], label[72], addr[140], state[16], heard[24], rtt[24];
            get_str(p, "name", name, sizeof name);
            snprintf(label, sizeof label, "%s%s", name, get_i64(p, "self", 0) ? "*" : "");
            int64_t h = get_i64(p, "heard_ms", -1), t = get_i64(p, "rtt_us", -1);
            if (get_i64(p, "self", 0) || h < 0)
                snprintf(heard, sizeof heard, "-");
            else
                snprintf(heard, sizeof heard, "%lldms", (long long)h);
            if (get_i64(p, "self", 0) || t < 0)
                snprintf(rtt, sizeof rtt, "-");
            else
                snprintf(rtt, sizeof rtt, "%lldus", (long long)t);
            printf("%-16s %-28s %6llu %-8s %#-18llx %8s %9s\n", label,
                   get_str(p, "address", addr, sizeof addr),
                   (unsigned long long)get_u64(p, "id"), get_str(p, "state", state, sizeof state),
                   (unsigned long long)get_u64(p, "incarnation"), heard, rtt);
        }
        printf("(* the node asked; HEARD: since its last frame from that node; RTT: a request "
               "to its introspection service and back)\n");
    }
    tr_reader_done(&r);
    tr_msg_free(ans);
}

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void cmd_top(cli *c)
{
    bool tty = isatty(STDOUT_FILENO);
    signal(SIGINT, on_sigint);
    for (long round = 0; (c->count == 0 || round < c->count) && !g_interrupted; round++) {
        if (round > 0) {
            double left = c->interval;
            while (left > 0 && !g_interrupted) {
                double d = left < 0.1 ? left : 0.1;
                nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = (long)(d * 1e9)}, NULL);
                left -= d;
            }
            if (g_interrupted)
                break;
        }
        msgpack_packer *pk;
        tr_msg *req = request("top", 3, &pk);
        pk_str(pk, "sort");
        pk_str(pk, c->sort);
        pk_str(pk, "n");
        msgpack_pack_uint64(pk, (uint64_t)c->rows);
        pk_str(pk, "window_ms");
        msgpack_pack_uint64(pk, (uint64_t)c->window);
        tr_msg *ans;
        tr_reader r;
        const msgpack_object *o = ask(c, req, &ans, &r);
        if (c->json) {
            json(o, 0);
            putchar('\n');
        } else {
            if (tty && c->count != 1)
                printf("\033[H\033[J");
            else if (round > 0)
                putchar('\n');
            char sort[16];
            printf("%s: %llu actors, by %s (rate over %lld ms)\n", c->peer,
                   (unsigned long long)get_u64(o, "actors"), get_str(o, "sort", sort, sizeof sort),
                   (long long)get_i64(o, "window_ms", 0));
            printf("%-20s %-22s %-22s %7s %7s %8s %10s %8s %8s\n", "PID", "NAME", "BEHAVIOUR",
                   "DEPTH", "MAX", "RATE/s", "RECEIVED", "RESTARTS", "DROPPED");
            const msgpack_object *a = get_array(o, "rows");
            for (uint32_t i = 0; a != NULL && i < a->via.array.size; i++) {
                const msgpack_object *x = &a->via.array.ptr[i];
                char pid[24], name[64], beh[64];
                pidstr(get_u64(x, "pid"), pid, sizeof pid);
                get_str(x, "name", name, sizeof name);
                printf("%-20s %-22s %-22s %7llu %7llu %8llu %10llu %8llu %8llu\n", pid,
                       name[0] ? name : "-", get_str(x, "behaviour", beh, sizeof beh),
                       (unsigned long long)get_u64(x, "depth"),
                       (unsigned long long)get_u64(x, "depth_max"),
                       (unsigned long long)get_u64(x, "rate"),
                       (unsigned long long)get_u64(x, "received"),
                       (unsigned long long)get_u64(x, "restarts"),
                       (unsigned long long)get_u64(x, "dropped"));
            }
        }
        fflush(stdout);
        tr_reader_done(&r);
        tr_msg_free(ans);
    }
}

/* The supervisor entry of the tree whose pid is pid, or NULL. */
static const msgpack_object *sup_of(const msgpack_object *tree, uint64_t pid)
{
    for (uint32_t i = 0; tree != NULL && i < tree->via.array.size; i++)
        if (get_u64(&tree->via.array.ptr[i], "pid") == pid)
            return &tree->via.array.ptr[i];
    return NULL;
}

static void print_sup(const msgpack_object *tree, const msgpack_object *s, const char *label,
                      const char *indent, int depth)
{
    char pid[24], strategy[32], ind[256];
    pidstr(get_u64(s, "pid"), pid, sizeof pid);
    printf("%s %s  %s  restarts %llu  running %llu of %llu\n", label, pid,
           get_str(s, "strategy", strategy, sizeof strategy),
           (unsigned long long)get_u64(s, "restarts"), (unsigned long long)get_u64(s, "running"),
           (unsigned long long)get_u64(s, "children_total"));
    const msgpack_object *kids = get_array(s, "children");
    uint32_t nk = kids != NULL ? kids->via.array.size : 0;
    for (uint32_t i = 0; i < nk; i++) {
        const msgpack_object *k = &kids->via.array.ptr[i];
        bool last = i + 1 == nk && get_u64(s, "children_total") <= nk;
        char id[80], beh[64], kl[200];
        get_str(k, "id", id, sizeof id);
        pidstr(get_u64(k, "pid"), pid, sizeof pid);
        snprintf(ind, sizeof ind, "%s%s", indent, last ? "   " : "|  ");
        const msgpack_object *sub = get_i64(k, "supervisor", 0) && depth < 16
                                        ? sup_of(tree, get_u64(k, "pid"))
                                        : NULL;
        if (sub != NULL) {
            snprintf(kl, sizeof kl, "%s%s %s (supervisor)", indent, last ? "`-" : "|-", id);
            print_sup(tree, sub, kl, ind, depth + 1);
        } else {
            printf("%s%s %s  %s  %s  restarts %llu\n", indent, last ? "`-" : "|-", id, pid,
                   get_str(k, "behaviour", beh, sizeof beh),
                   (unsigned long long)get_u64(k, "restarts"));
        }
    }
    if (get_u64(s, "children_total") > nk)
        printf("%s`- ... %llu more\n", indent,
               (unsigned long long)(get_u64(s, "children_total") - nk));
}

static void cmd_tree(cli *c)
{
    msgpack_packer *pk;
    tr_msg *ans;
    tr_reader r;
    const msgpack_object *o = ask(c, request("tree", 0, &pk), &ans, &r);
    if (c->json) {
        json(o, 0);
        putchar('\n');
    } else {
        const msgpack_object *tree = get_array(o, "tree");
        printf("%s: %llu supervisors%s\n", c->peer, (unsigned long long)get_u64(o, "supervisors"),
               get_i64(o, "truncated", 0) ? " (not all shown)" : "");
        for (uint32_t i = 0; tree != NULL && i < tree->via.array.size; i++) {
            const msgpack_object *s = &tree->via.array.ptr[i];
            uint64_t parent = get_u64(s, "parent");
            if (parent != 0 && sup_of(tree, parent) != NULL)
                continue; /* printed under its parent */
            if (get(s, "error") != NULL) {
                char pid[24];
                pidstr(get_u64(s, "pid"), pid, sizeof pid);
                printf("%s  (no answer)\n", pid);
                continue;
            }
            char name[80], label[120];
            get_str(s, "name", name, sizeof name);
            snprintf(label, sizeof label, "%s", name[0] ? name : "supervisor");
            print_sup(tree, s, label, "", 0);
        }
    }
    tr_reader_done(&r);
    tr_msg_free(ans);
}

static void print_limits(cli *c, const msgpack_object *o)
{
    if (c->json) {
        json(o, 0);
        putchar('\n');
        return;
    }
    const msgpack_object *a = get_array(o, "actors");
    printf("%-20s %-16s %-6s %7s %6s %9s %9s %-12s %7s %9s\n", "PID", "NAME", "KIND", "RATE",
           "BURST", "TOKENS", "CAPACITY", "OVERFLOW", "WAITS", "WAIT_MS");
    for (uint32_t i = 0; a != NULL && i < a->via.array.size; i++) {
        const msgpack_object *x = &a->via.array.ptr[i];
        char pid[24], name[64], kind[16], ov[16], tokens[32];
        pidstr(get_u64(x, "pid"), pid, sizeof pid);
        if (get(x, "error") != NULL) {
            printf("%-20s (no answer)\n", pid);
            continue;
        }
        get_str(x, "name", name, sizeof name);
        get_str(x, "kind", kind, sizeof kind);
        if (get(x, "tokens") != NULL)
            snprintf(tokens, sizeof tokens, "%.2f", get_f64(x, "tokens", 0));
        else if (get(x, "next_pass_ms") != NULL)
            snprintf(tokens, sizeof tokens, "%.1fms", get_f64(x, "next_pass_ms", 0));
        else
            snprintf(tokens, sizeof tokens, "-");
        printf("%-20s %-16s %-6s %7llu %6llu %9s %9llu %-12s %7llu %9llu\n", pid,
               name[0] ? name : "-", kind, (unsigned long long)get_u64(x, "rate"),
               (unsigned long long)get_u64(x, "burst"), tokens,
               (unsigned long long)get_u64(x, "capacity"), get_str(x, "overflow", ov, sizeof ov),
               (unsigned long long)get_u64(x, "waits"), (unsigned long long)get_u64(x, "wait_ms"));
    }
    if (get_u64(o, "matched") > (a != NULL ? a->via.array.size : 0))
        printf("(%llu actors matched; the first %u shown)\n",
               (unsigned long long)get_u64(o, "matched"), a != NULL ? a->via.array.size : 0);
}

/* The request of `limits ...` (checked before anything connects). */
static tr_msg *limits_request(int argc, char **argv)
{
    msgpack_packer *pk;
    tr_msg *req;
    if (argc >= 1 && strcmp(argv[0], "set") == 0) {
        if (argc < 3)
            die(EXIT_USAGE, "usage: limits set NAME rate=R [burst=B] [kind=token|leaky|none]");
        long long rate = -1, burst = -1;
        const char *kind = NULL;
        for (int i = 2; i < argc; i++) {
            char *end;
            if (strncmp(argv[i], "rate=", 5) == 0) {
                rate = strtoll(argv[i] + 5, &end, 10);
                if (*end != '\0' || end == argv[i] + 5 || rate < 1 || rate > 4294967295LL)
                    die(EXIT_USAGE, "rate= wants a number of messages per second, 1..4294967295");
            } else if (strncmp(argv[i], "burst=", 6) == 0) {
                burst = strtoll(argv[i] + 6, &end, 10);
                if (*end != '\0' || end == argv[i] + 6 || burst < 1 || burst > 4294967295LL)
                    die(EXIT_USAGE, "burst= wants a number of messages, 1..4294967295");
            } else if (strncmp(argv[i], "kind=", 5) == 0) {
                kind = argv[i] + 5;
                if (strcmp(kind, "token") != 0 && strcmp(kind, "leaky") != 0 &&
                    strcmp(kind, "none") != 0)
                    die(EXIT_USAGE, "kind= is token, leaky or none");
            } else {
                die(EXIT_USAGE, "limits set: '%s' is not rate=R, burst=B or kind=K", argv[i]);
            }
        }
        req = request("limits_set", 1 + (rate > 0) + (burst > 0) + (kind != NULL), &pk);
        pk_str(pk, "target");
        pk_str(pk, argv[1]);
        if (rate > 0) {
            pk_str(pk, "rate");
            msgpack_pack_uint64(pk, (uint64_t)rate);
        }
        if (burst > 0) {
            pk_str(pk, "burst");
            msgpack_pack_uint64(pk, (uint64_t)burst);
        }
        if (kind != NULL) {
            pk_str(pk, "kind");
            pk_str(pk, kind);
        }
    } else if (argc == 1) {
        req = request("limits", 1, &pk);
        pk_str(pk, "target");
        pk_str(pk, argv[0]);
    } else {
        die(EXIT_USAGE, "usage: limits NAME | limits set NAME rate=R [burst=B] [kind=K]");
    }
    return req;
}

static void cmd_limits(cli *c, tr_msg *req)
{
    tr_msg *ans;
    tr_reader r;
    const msgpack_object *o = ask(c, req, &ans, &r);
    print_limits(c, o);
    tr_reader_done(&r);
    tr_msg_free(ans);
}

static void cmd_kill(cli *c, const char *target)
{
    msgpack_packer *pk;
    tr_msg *req = request("kill", c->reason != NULL ? 2 : 1, &pk);
    pk_str(pk, "target");
    pk_str(pk, target);
    if (c->reason != NULL) {
        pk_str(pk, "reason");
        pk_str(pk, c->reason);
    }
    tr_msg *ans;
    tr_reader r;
    const msgpack_object *o = ask(c, req, &ans, &r);
    if (c->json) {
        json(o, 0);
        putchar('\n');
    } else {
        char pid[24], beh[64], reason[256];
        pidstr(get_u64(o, "pid"), pid, sizeof pid);
        printf("%s: sent exit (%s) to %s (%s, behaviour %s)\n", c->peer,
               get_str(o, "reason", reason, sizeof reason), target, pid,
               get_str(o, "behaviour", beh, sizeof beh));
    }
    tr_reader_done(&r);
    tr_msg_free(ans);
}

static void print_counters(const char *title, const msgpack_object *m)
{
    if (m == NULL || m->type != MSGPACK_OBJECT_MAP)
        return;
    printf("%s\n", title);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (k->type == MSGPACK_OBJECT_STR && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            printf("  %-18.*s %llu\n", (int)k->via.str.size, k->via.str.ptr,
                   (unsigned long long)v->via.u64);
    }
}

static void cmd_stats(cli *c)
{
    msgpack_packer *pk;
    tr_msg *ans;
    tr_reader r;
    const msgpack_object *o = ask(c, request("stats", 0, &pk), &ans, &r);
    if (c->json) {
        json(o, 0);
        putchar('\n');
    } else {
        print_counters("system:", get(o, "system"));
        print_counters("node:", get(o, "node"));
    }
    tr_reader_done(&r);
    tr_msg_free(ans);
}

/* ---- main ---------------------------------------------------------------------------------- */

static long num_arg(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end != '\0' || end == v || n < lo || n > hi)
        die(EXIT_USAGE, "%s takes %ld..%ld", opt, lo, hi);
    return n;
}

int main(int argc, char **argv)
{
    cli c = {.timeout_ms = 5000, .interval = 2, .count = 1, .rows = 20, .window = 500,
             .sort = "depth"};
    c.tls.verify = TR_TLS_VERIFY_REQUIRED;
    static const struct option longopts[] = {
        {"node", required_argument, NULL, 'n'},
        {"secret-file", required_argument, NULL, 's'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"tls-ca", required_argument, NULL, 'A'},
        {"tls-verify", required_argument, NULL, 'V'},
        {"tls-server-name", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'},
        {"interval", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'c'},
        {"sort", required_argument, NULL, 'o'},
        {"rows", required_argument, NULL, 'r'},
        {"window", required_argument, NULL, 'w'},
        {"reason", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int opt;
    char *end;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'n': c.addr = optarg; break;
        case 's': c.secret_file = optarg; break;
        case 'C': c.tls.cert = optarg; c.use_tls = true; break;
        case 'K': c.tls.key = optarg; c.use_tls = true; break;
        case 'A': c.tls.ca = optarg; c.use_tls = true; break;
        case 'S': c.tls.server_name = optarg; c.use_tls = true; break;
        case 'V':
            c.use_tls = true;
            if (strcmp(optarg, "required") == 0)
                c.tls.verify = TR_TLS_VERIFY_REQUIRED;
            else if (strcmp(optarg, "optional") == 0)
                c.tls.verify = TR_TLS_VERIFY_OPTIONAL;
            else if (strcmp(optarg, "none") == 0)
                c.tls.verify = TR_TLS_VERIFY_NONE;
            else
                die(EXIT_USAGE, "--tls-verify is required, optional or none");
            break;
        case 'j': c.json = true; break;
        case 't': c.timeout_ms = (unsigned)num_arg("--timeout", optarg, 1, 600000); break;
        case 'i':
            c.interval = strtod(optarg, &end);
            if (*end != '\0' || end == optarg || !(c.interval >= 0.05 && c.interval <= 3600))
                die(EXIT_USAGE, "--interval takes 0.05..3600 seconds");
            break;
        case 'c': c.count = num_arg("--count", optarg, 0, 1000000); break;
        case 'o':
            if (strcmp(optarg, "depth") != 0 && strcmp(optarg, "rate") != 0 &&
                strcmp(optarg, "received") != 0 && strcmp(optarg, "restarts") != 0)
                die(EXIT_USAGE, "--sort is depth, rate, received or restarts");
            c.sort = optarg;
            break;
        case 'r': c.rows = num_arg("--rows", optarg, 1, 100); break;
        case 'w': c.window = num_arg("--window", optarg, 0, 5000); break;
        case 'R': c.reason = optarg; break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'troupectl --help'.\n");
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "troupectl: a command is required (nodes, top, tree, limits, kill, "
                        "stats); try 'troupectl --help'.\n");
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;
    bool known = strcmp(cmd, "nodes") == 0 || strcmp(cmd, "top") == 0 ||
                 strcmp(cmd, "tree") == 0 || strcmp(cmd, "stats") == 0 ||
                 strcmp(cmd, "limits") == 0 || strcmp(cmd, "kill") == 0;
    if (!known)
        die(EXIT_USAGE, "unknown command '%s'; try 'troupectl --help'", cmd);
    if ((strcmp(cmd, "kill") == 0 && nargs != 1) ||
        (strcmp(cmd, "limits") != 0 && strcmp(cmd, "kill") != 0 && nargs != 0))
        die(EXIT_USAGE, "%s: wrong arguments; try 'troupectl --help'", cmd);
    if (c.addr == NULL || c.secret_file == NULL)
        die(EXIT_USAGE, "--node ADDR and --secret-file FILE are required");
    if (c.use_tls && (c.tls.cert == NULL || c.tls.key == NULL ||
                      (c.tls.ca == NULL && c.tls.verify != TR_TLS_VERIFY_NONE)))
        die(EXIT_USAGE, "TLS needs --tls-cert, --tls-key and --tls-ca (no CA: --tls-verify none)");
    tr_msg *limits_req = strcmp(cmd, "limits") == 0 ? limits_request(nargs, args) : NULL;
    signal(SIGPIPE, SIG_IGN);
    connect_node(&c);
    if (strcmp(cmd, "nodes") == 0)
        cmd_nodes(&c);
    else if (strcmp(cmd, "top") == 0)
        cmd_top(&c);
    else if (strcmp(cmd, "tree") == 0)
        cmd_tree(&c);
    else if (strcmp(cmd, "limits") == 0)
        cmd_limits(&c, limits_req);
    else if (strcmp(cmd, "kill") == 0)
        cmd_kill(&c, args[0]);
    else
        cmd_stats(&c);
    fflush(stdout);
    disconnect_node(&c);
    return 0;
}
