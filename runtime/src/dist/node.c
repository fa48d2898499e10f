/*
 * node.c — a node's connections to other nodes: TCP streams (nng's stream API), the handshake,
 * batching of outbound messages, heartbeats, failure detection and membership.
 *
 * Connections. Each pair of nodes uses two TCP connections, one dialed by each side, and each
 * node sends only on the connection it dialed ("outbound") and receives on the one the peer
 * dialed ("inbound"). One queue and one stream per direction keep every sender -> receiver pair
 * in order, and no tie-break is needed when two nodes dial each other at once. A connection's
 * bytes are frames (wire.h), each after a 4-byte length that is checked against max_frame before
 * anything is read into memory.
 *
 * Handshake. The dialer sends HELLO (name, node id, incarnation, a fresh nonce, its listen
 * address); the acceptor answers HELLO (its own, with its fresh nonce) and nothing else; the
 * dialer proves the secret first: AUTH = HMAC-SHA256(secret, "troupe-auth-v2" | acceptor's
 * nonce | dialer's nonce | dialer's name | dialer's id); the acceptor checks it and only then
 * answers its own AUTH (nonces swapped, its name and id). Whoever connects to a node's port
 * thus learns no MAC before proving the secret itself, so it cannot test guessed secrets offline
 * (a node only dials its seeds and the members authenticated peers announce). Each side proves
 * the secret without sending it, and a recorded AUTH is useless on another connection. Frames
 * before authentication are at most 1 KiB. Anything else before that, a wrong MAC or a malformed
 * frame drops the connection, with a log line and a counter.
 *
 * Sending. tr__deliver hands a message for another node's pid to node_route (through the core's
 * transport seam, internal.h), which appends
 * it to the peer's bounded MPSC queue and, if no write is under way, becomes the writer: it
 * encodes everything queued (up to batch_bytes) into one buffer and starts one stream write.
 * The write's completion (an nng thread) sends whatever was queued meanwhile, so an idle node
 * sends a message at once, and a busy one coalesces everything queued during one write into the
 * next: the delay a message waits is bounded by one write, and its batch by batch_bytes.
 *
 * Membership and failure detection. Seeds are dialed first; every HELLO carries the sender's
 * listen address and every new connection gets a MEMBERS frame, so each node learns every other
 * and dials it. A ticker thread sends heartbeats on quiet connections, declares a peer down when
 * its inbound connection was silent for down_after_ms (or at once when a connection breaks —
 * which is how a kill -9 on loopback shows), redials with capped exponential backoff, and
 * frees closed connections. When a peer goes down, its queued messages become dead letters,
 * node watchers get TR_MSG_NODEDOWN, and each local actor that holds a link or monitor with one
 * of its actors gets a NODEDOWN signal, which it turns into EXIT / DOWN with reason
 * noconnection (link.c).
 */
#include "troupe/node.h"
#include "core/idmap.h"
#include "core/registry.h"
#include "wire.h"

#include <mbedtls/md.h>
#include <nng/nng.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define NODE_MAX_FRAME_DEFAULT (4u * 1024u * 1024u)
#define NODE_QUEUE_DEFAULT 65536u
#define NODE_BATCH_DEFAULT (256u * 1024u)
#define NODE_MAX_PEERS 256u
#define NODE_MAX_CONNS 1024u        /* connections at once, authenticated or not */
#define NODE_MAX_WATCHERS 4096u
#define NODE_MAX_BEHAVIOURS 256u
#define NODE_HANDSHAKE_MS 5000u     /* a connection not authenticated by then is dropped */
#define NODE_HANDSHAKE_FRAME 1024u  /* a frame before authentication, at most (HELLO and AUTH are
                                     * < 300 bytes): what a stranger can make us allocate */
#define NODE_SEND_TIMEOUT_MS 10000  /* one write not done by then: the connection is dropped */
#define NODE_RX_CHUNK (64u * 1024u)
#define NODE_RX_KEEP (1024u * 1024u) /* a receive buffer grown past this shrinks back after */

/* The node service: the actor each node runs to answer other nodes (remote spawn). Other nodes
 * address it as the pid with the node's id and slot 0, generation 0 (never an actor's). */
#define TR_MSG_NODE_SPAWN (TR_MSG_SYSTEM + 0x200)  /* [behaviour, args] -> [rc, pid] */
#define TR_MSG_NODE_REG (TR_MSG_SYSTEM + 0x201)    /* a peer's name: [name, pid] */
#define TR_MSG_NODE_UNREG (TR_MSG_SYSTEM + 0x202)  /* a peer dropped a name: [name, pid] */
#define TR_MSG_NODE_SYNC (TR_MSG_SYSTEM + 0x203)   /* local: tell peer [id] our names */
#define TR_MSG_NODE_ANNOUNCE (TR_MSG_SYSTEM + 0x204) /* local: watch [name, pid], tell peers */
#define TR_MSG_NODE_RETRACT (TR_MSG_SYSTEM + 0x205)  /* local: tell peers [name, pid] is gone */
#define TR_MSG_NODE_PULL (TR_MSG_SYSTEM + 0x206)     /* a peer asks for our names: [] */

enum { C_HELLO, C_AUTH, C_UP, C_REFUSED };

typedef struct peer peer;

typedef struct conn {
    struct conn *next;          /* in the node's list of connections */
    tr_node *n;
    nng_stream *s;
    nng_aio *rx, *tx, *hs;      /* receive; the writer's sends; handshake sends */
    peer *pe;                   /* outbound: the peer dialed; inbound: set once authenticated */
    bool outbound;
    bool dead;                  /* closed: no aio is started on it again */
    int state;                  /* C_* */
    int refs;                   /* writers using it (node lock) */
    uint64_t born_ns;
    _Atomic uint64_t last_rx_ns;
    uint8_t nonce[TR_WIRE_NONCE];
    tr_wire_hello ph;           /* the peer's HELLO (valid from state C_AUTH) */
    nng_aio *auth;              /* our AUTH's write (beside the HELLO's, which may not have
                                 * completed yet) */
    tr_wire_buf authbuf;
    uint8_t *rbuf;              /* received bytes not yet parsed */
    size_t rlen, rcap;
    tr_wire_buf out;            /* the write under way (the writer's) */
    size_t out_off;
    tr_wire_buf hsbuf;          /* a handshake write */
} conn;

struct peer {
    char name[TR_WIRE_NAME_MAX + 1];    /* "" until a seed says who it is */
    char addr[TR_WIRE_ADDR_MAX + 1];
    bool alias;                 /* a seed that turned out to be ourselves or a known peer */
    int status;                 /* TR_PEER_DOWN / TR_PEER_UP (we can send to it) */
    bool joining;               /* it connected to us and we are dialing back: sends are held */
    uint64_t joining_ns;        /* since when */
    uint16_t node_id;
    uint64_t incarnation;
    conn *out_conn, *in_conn;
    nng_stream_dialer *dialer;
    char dialer_addr[TR_WIRE_ADDR_MAX + 1];
    nng_aio *dial_aio;
    bool dialing;
    bool failing;               /* its connections keep failing: logged once until it is up */
    uint64_t next_dial_ns;
    unsigned backoff_ms;
    tr_idmap interest;          /* local pids with links / monitors to its actors */
    /* sending */
    tr_mpsc q;
    _Atomic uint64_t qlen;
    _Atomic int tx_busy;        /* a writer owns the queue */
    pthread_mutex_t ctl_lock;
    tr_wire_buf ctl;            /* control frames to send before the next messages */
    _Atomic int ctl_pending;
    _Atomic uint64_t last_tx_ns;
    tr_node *n;
};

typedef struct behaviour_entry {
    char name[TR_WIRE_NAME_MAX + 1];
    const tr_behaviour *b;
} behaviour_entry;

struct tr_node {
    tr_system *sys;
    char name[TR_WIRE_NAME_MAX + 1];
    char addr[TR_WIRE_ADDR_MAX + 1];
    int port;
    uint16_t id;
    uint64_t incarnation;
    uint8_t *secret;
    size_t secret_len;
    size_t max_frame, peer_queue, batch_bytes;
    tr_node_overflow overflow;
    uint64_t hb_ns, down_ns;
    unsigned backoff_min_ms, backoff_max_ms;
    bool quiet;
    nng_stream_listener *listener;
    nng_aio *accept_aio;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    peer *peers[NODE_MAX_PEERS];
    size_t npeers;
    _Atomic(peer *) *by_id;     /* 65,536: node id -> peer while up */
    conn *conns;
    size_t nconns;
    bool members_dirty;         /* tell every peer about the nodes we know */
    tr_pid watchers[NODE_MAX_WATCHERS];
    size_t nwatchers;
    behaviour_entry behaviours[NODE_MAX_BEHAVIOURS];
    size_t nbehaviours;
    tr_pid service;
    uint64_t hs_log_ns;         /* inbound handshake failures: one log line a second (lock) */
    uint64_t hs_suppressed;
    pthread_mutex_t names_lock;
    tr_namemap names;           /* cluster-wide names, as this node knows them */
    _Atomic bool stopping;      /* set under lock; read anywhere */
    bool ticker_started;
    pthread_t ticker;
    _Atomic uint64_t writes, frames_in, msgs_out, msgs_in, refused_auth, bad_frames, queue_full,
        no_route, lost, peers_down;
};

static void count(_Atomic uint64_t *c, uint64_t k)
{
    atomic_fetch_add_explicit(c, k, memory_order_relaxed);
}

static void node_log(const tr_node *n, const char *fmt, ...)
{
    if (n->quiet)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "troupe node %s: %s\n", n->name, line);
}

uint16_t tr_node_random_id(void)
{
    uint16_t v = 0;
    while (v < 2)
        if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
            v = (uint16_t)(tr__now_ns() ^ (tr__now_ns() >> 16));
    return v;
}

static void random_bytes(void *p, size_t len)
{
    if (getrandom(p, len, 0) != (ssize_t)len) {
        uint64_t t = tr__now_ns();
        memset(p, 0, len);
        memcpy(p, &t, len < sizeof t ? len : sizeof t);
    }
}

/* The AUTH of the prover (name, id) on a connection: its MAC over both nonces, the verifier's
 * (the challenge) first. */
static void mac_of(const tr_node *n, const uint8_t *verifier_nonce, const uint8_t *prover_nonce,
                   const char *name, uint16_t id, uint8_t out[TR_WIRE_MAC])
{
    uint8_t in[16 + 2 * TR_WIRE_NONCE + TR_WIRE_NAME_MAX + 2];
    size_t len = 16;
    memcpy(in, "troupe-auth-v2\0\0", 16);
    memcpy(in + len, verifier_nonce, TR_WIRE_NONCE);
    len += TR_WIRE_NONCE;
    memcpy(in + len, prover_nonce, TR_WIRE_NONCE);
    len += TR_WIRE_NONCE;
    size_t nl = strnlen(name, TR_WIRE_NAME_MAX);
    memcpy(in + len, name, nl);
    len += nl;
    in[len++] = (uint8_t)(id >> 8);
    in[len++] = (uint8_t)id;
    mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), n->secret, n->secret_len, in,
                    len, out);
}

static bool same_mac(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0; /* constant time */
    for (unsigned i = 0; i < TR_WIRE_MAC; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

static inline tr_pid service_pid(uint16_t node_id)
{
    return (tr_pid)node_id << 48;
}

/* ---- peers (node lock held unless said otherwise) ------------------------------------------ */

static peer *peer_by_name(tr_node *n, const char *name)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && strcmp(n->peers[i]->name, name) == 0)
            return n->peers[i];
    return NULL;
}

static peer *peer_by_addr(tr_node *n, const char *addr)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && strcmp(n->peers[i]->addr, addr) == 0)
            return n->peers[i];
    return NULL;
}

static void on_dial(void *arg);

static peer *peer_new(tr_node *n, const char *name, const char *addr)
{
    if (n->npeers >= NODE_MAX_PEERS)
        return NULL;
    peer *pe = calloc(1, sizeof *pe);
    if (pe == NULL)
        return NULL;
    if (nng_aio_alloc(&pe->dial_aio, on_dial, pe) != 0) {
        free(pe);
        return NULL;
    }
    snprintf(pe->name, sizeof pe->name, "%s", name);
    snprintf(pe->addr, sizeof pe->addr, "%s", addr);
    pe->n = n;
    pe->backoff_ms = n->backoff_min_ms;
    tr__idmap_init(&pe->interest);
    tr__mpsc_init(&pe->q);
    pthread_mutex_init(&pe->ctl_lock, NULL);
    tr__wire_buf_init(&pe->ctl);
    n->peers[n->npeers++] = pe;
    n->members_dirty = true;
    return pe;
}

/* Learns that node `name` listens at `addr` (from a HELLO or a MEMBERS frame). */
static void peer_learn(tr_node *n, const char *name, const char *addr)
{
    if (name[0] == '\0' || strcmp(name, n->name) == 0 || addr[0] == '\0')
        return;
    peer *pe = peer_by_name(n, name);
    if (pe == NULL) {
        pe = peer_by_addr(n, addr);
        if (pe != NULL && pe->name[0] == '\0')
            snprintf(pe->name, sizeof pe->name, "%s", name); /* a seed says who it is */
        else if (pe == NULL)
            peer_new(n, name, addr);
        return;
    }
    if (strcmp(pe->addr, addr) != 0 && pe->status != TR_PEER_UP) {
        snprintf(pe->addr, sizeof pe->addr, "%s", addr); /* restarted elsewhere */
        n->members_dirty = true;
    }
}

/* ---- connections --------------------------------------------------------------------------- */

static void on_rx(void *arg);
static void on_tx(void *arg);
static void on_hs(void *arg);
static void on_auth_sent(void *arg);
static void kick(peer *pe);

static conn *conn_new(tr_node *n, nng_stream *s, bool outbound, peer *pe)
{
    conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->rcap = NODE_RX_CHUNK;
    c->rbuf = malloc(c->rcap);
    if (c->rbuf == NULL || nng_aio_alloc(&c->rx, on_rx, c) != 0 ||
        nng_aio_alloc(&c->tx, on_tx, c) != 0 || nng_aio_alloc(&c->hs, on_hs, c) != 0 ||
        nng_aio_alloc(&c->auth, on_auth_sent, c) != 0) {
        if (c->rx)
            nng_aio_free(c->rx);
        if (c->tx)
            nng_aio_free(c->tx);
        if (c->hs)
            nng_aio_free(c->hs);
        free(c->rbuf);
        free(c);
        return NULL;
    }
    c->n = n;
    c->s = s;
    c->outbound = outbound;
    c->pe = pe;
    c->state = C_HELLO;
    c->born_ns = tr__now_ns();
    atomic_init(&c->last_rx_ns, c->born_ns);
    random_bytes(c->nonce, sizeof c->nonce);
    tr__wire_buf_init(&c->out);
    tr__wire_buf_init(&c->hsbuf);
    tr__wire_buf_init(&c->authbuf);
    nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true);
    return c;
}

static void conn_destroy(conn *c)
{
    nng_stream_close(c->s);
    nng_aio_stop(c->rx);
    nng_aio_stop(c->tx);
    nng_aio_stop(c->hs);
    nng_aio_stop(c->auth);
    nng_aio_free(c->rx);
    nng_aio_free(c->tx);
    nng_aio_free(c->hs);
    nng_aio_free(c->auth);
    nng_stream_free(c->s);
    tr__wire_buf_free(&c->out);
    tr__wire_buf_free(&c->hsbuf);
    tr__wire_buf_free(&c->authbuf);
    free(c->rbuf);
    free(c);
}

/* What a peer going down leaves to do once the lock is released. */
typedef struct after {
    peer *kick[2];
    int nkick;
    bool down;                  /* notify interested actors (and watchers if down_watchers) */
    bool down_watchers;
    char name[TR_WIRE_NAME_MAX + 1];
    uint16_t node_id;
    tr_idmap interest;
    bool up;                    /* notify watchers of a peer up */
} after;

/* Marks a connection closed (lock held). The stream is closed at once — nng completes its
 * pending operations on its own threads, never inside this call — because once dead and
 * unreferenced, the ticker may free it as soon as the lock is released. */
static void conn_mark_dead(conn *c)
{
    if (c == NULL || c->dead)
        return;
    c->dead = true;
    nng_stream_close(c->s);
    /* nng 1.5.2 leaves an operation started on a stream already closed pending for ever: a
     * writer that took its reference just before the close would hold it until stop. Cancel
     * what is pending now; the reaper cancels again until the writer has let go. */
    nng_aio_cancel(c->tx);
    nng_aio_cancel(c->rx);
    nng_aio_cancel(c->hs);
    nng_aio_cancel(c->auth);
}

static bool pid_on_node(void *arg, tr_pid pid)
{
    return tr_pid_node(pid) == *(const uint16_t *)arg;
}

static void peer_down_locked(tr_node *n, peer *pe, after *af)
{
    if (pe->status == TR_PEER_UP || pe->joining) {
        if (atomic_load(&n->by_id[pe->node_id]) == pe)
            atomic_store(&n->by_id[pe->node_id], NULL);
        af->down = true;
        af->down_watchers = pe->status == TR_PEER_UP; /* they were told it was up */
        snprintf(af->name, sizeof af->name, "%s", pe->name);
        af->node_id = pe->node_id;
        af->interest = pe->interest; /* the notified take it over */
        tr__idmap_init(&pe->interest);
        if (pe->status == TR_PEER_UP) {
            count(&n->peers_down, 1);
            node_log(n, "peer %s (node id %u) is down", pe->name, pe->node_id);
        }
        pe->status = TR_PEER_DOWN;
        pe->joining = false;
        /* its names are released here, under the lock, so no name it registers once it is
         * back can be swept by this down: a sweep left for later (it used to run once the lock
         * was released) could remove names merged meanwhile from a reconnection the peer saw as
         * nothing but "up", and it never sent them again (issue 20: a node thawed after a freeze
         * answered 503 for every SKU of a peer whose router it no longer knew) */
        uint16_t gone = pe->node_id;
        pthread_mutex_lock(&n->names_lock);
        tr__namemap_sweep(&n->names, pid_on_node, &gone);
        pthread_mutex_unlock(&n->names_lock);
    }
    conn *o = pe->out_conn, *i = pe->in_conn;
    pe->out_conn = pe->in_conn = NULL;
    conn_mark_dead(o);
    conn_mark_dead(i);
    if (!pe->dialing && pe->next_dial_ns < tr__now_ns() + (uint64_t)pe->backoff_ms * 1000000u) {
        pe->next_dial_ns = tr__now_ns() + (uint64_t)pe->backoff_ms * 1000000u;
        pe->backoff_ms = pe->backoff_ms * 2 > n->backoff_max_ms ? n->backoff_max_ms
                                                                 : pe->backoff_ms * 2;
    }
    if (af->nkick < 2)
        af->kick[af->nkick++] = pe; /* the writer turns what is queued into dead letters */
    pthread_cond_broadcast(&n->cond);
}

static void notify_watchers(tr_node *n, uint32_t type, const char *name, uint16_t id)
{
    tr_pid w[NODE_MAX_WATCHERS];
    pthread_mutex_lock(&n->lock);
    size_t k = n->nwatchers;
    memcpy(w, n->watchers, k * sizeof *w);
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < k; i++) {
        tr_msg *m = tr_msg_new(type, 80);
        if (m == NULL)
            return;
        msgpack_packer *pk = tr_msg_packer(m);
        size_t nl = strlen(name);
        msgpack_pack_str(pk, nl);
        msgpack_pack_str_body(pk, name, nl);
        msgpack_pack_uint64(pk, id);
        m->flags = TR_MF_SYSTEM;
        m->corr = id;
        tr__deliver(n->sys, NULL, w[i], m);
    }
}

static void after_run(tr_node *n, after *af)
{
    for (int i = 0; i < af->nkick; i++)
        kick(af->kick[i]);
    if ((af->down || af->up) && tr__ext_enter(n->sys) == TR_OK) {
        if (af->down) {
            tr_idmap *m = &af->interest;
            for (size_t i = 0; i < m->cap; i++)
                if (m->keys[i] != 0)
                    tr__signal(n->sys, NULL, TR_PID_NONE, (tr_pid)m->keys[i], TR_SIG_NODEDOWN,
                               af->node_id, NULL);
            if (af->down_watchers)
                notify_watchers(n, TR_MSG_NODEDOWN, af->name, af->node_id);
        }
        if (af->up) {
            notify_watchers(n, TR_MSG_NODEUP, af->name, af->node_id);
            /* it learns our names, and we ask for its own: whichever side saw the other go
             * down and come back, both end up with both sets (a peer that saw nothing but "up"
             * would not send its names again by itself) */
            tr_msg *m = tr_msg_new(TR_MSG_NODE_SYNC, 8);
            if (m != NULL) {
                msgpack_pack_uint64(tr_msg_packer(m), af->node_id);
                tr__deliver(n->sys, NULL, n->service, m);
            }
        }
        tr__ext_leave(n->sys);
    }
    if (af->down)
        tr__idmap_free(&af->interest);
}

/* Drops a connection: a protocol error, a closed stream, a timeout. */
static void conn_fail(conn *c, const char *why)
{
    tr_node *n = c->n;
    after af;
    memset(&af, 0, sizeof af);
    pthread_mutex_lock(&n->lock);
    if (c->dead) {
        pthread_mutex_unlock(&n->lock);
        return;
    }
    peer *pe = c->pe;
    if ((c->state == C_HELLO || c->state == C_AUTH) && !n->stopping) {
        count(&n->refused_auth, 1); /* a handshake not completed, whatever the cause */
        if (why == NULL)
            why = "closed during the handshake";
    }
    bool handshake = c->state == C_HELLO || c->state == C_AUTH;
    if (why != NULL && handshake && c->outbound && pe != NULL) {
        if (pe->failing)
            why = NULL; /* said once already: a redial every few seconds must not flood the log */
        pe->failing = true;
    }
    if (why != NULL && handshake && !c->outbound) {
        uint64_t now = tr__now_ns();
        if (now - n->hs_log_ns < 1000000000u) {
            n->hs_suppressed++; /* a peer retrying, or a scanner: not a line each */
            why = NULL;
        } else {
            if (n->hs_suppressed > 0)
                node_log(n, "(%llu more inbound handshakes failed in the last second)",
                         (unsigned long long)n->hs_suppressed);
            n->hs_log_ns = now;
            n->hs_suppressed = 0;
        }
    }
    if (why != NULL)
        node_log(n, "%s connection %s%s: %s", c->outbound ? "outbound" : "inbound",
                 c->outbound ? "to " : "from ",
                 pe != NULL && pe->name[0] ? pe->name : c->state >= C_AUTH ? c->ph.name : "?",
                 why);
    if (pe != NULL && (pe->out_conn == c || pe->in_conn == c)) {
        peer_down_locked(n, pe, &af); /* a connection lost either way: the peer is down */
    } else {
        conn_mark_dead(c);
    }
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    after_run(n, &af);
}

static void conn_unref(conn *c)
{
    pthread_mutex_lock(&c->n->lock);
    c->refs--;
    pthread_cond_broadcast(&c->n->cond);
    pthread_mutex_unlock(&c->n->lock);
}

/* Starts receiving into the free part of rbuf (grown to hold a frame of `need` bytes). */
static void rx_post(conn *c, size_t need)
{
    if (need > c->rcap) {
        uint8_t *b = realloc(c->rbuf, need);
        if (b == NULL) {
            conn_fail(c, "out of memory");
            return;
        }
        c->rbuf = b;
        c->rcap = need;
    }
    nng_iov iov = {.iov_buf = c->rbuf + c->rlen, .iov_len = c->rcap - c->rlen};
    nng_aio_set_iov(c->rx, 1, &iov);
    nng_stream_recv(c->s, c->rx);
}

/* A handshake write: buffer b on aio (c->hs for our HELLO, c->auth for our AUTH — the HELLO's write
 * may still be completing when the AUTH goes), before the writer may use the connection. */
static void hs_write(conn *c, nng_aio *aio, tr_wire_buf *b)
{
    nng_iov iov = {.iov_buf = b->data, .iov_len = b->len};
    nng_aio_set_iov(aio, 1, &iov);
    nng_aio_set_timeout(aio, NODE_HANDSHAKE_MS);
    nng_stream_send(c->s, aio);
}

/* A handshake write's completion: a failure drops the connection; a short write sends the rest. */
static void hs_written(conn *c, nng_aio *aio, tr_wire_buf *b)
{
    if (nng_aio_result(aio) != 0) {
        conn_fail(c, NULL);
        return;
    }
    size_t done = nng_aio_count(aio);
    if (done < b->len) {
        memmove(b->data, b->data + done, b->len - done);
        b->len -= done;
        hs_write(c, aio, b);
    }
}

static void hs_send(conn *c)
{
    hs_write(c, c->hs, &c->hsbuf);
}

static void on_hs(void *arg)
{
    conn *c = arg;
    hs_written(c, c->hs, &c->hsbuf);
}

/* Our AUTH (once per connection). */
static void send_auth(conn *c)
{
    hs_write(c, c->auth, &c->authbuf);
}

static void on_auth_sent(void *arg)
{
    conn *c = arg;
    hs_written(c, c->auth, &c->authbuf);
}

static void put_hello(tr_node *n, tr_wire_buf *b, const uint8_t nonce[TR_WIRE_NONCE])
{
    tr_wire_hello h;
    memset(&h, 0, sizeof h);
    snprintf(h.name, sizeof h.name, "%s", n->name);
    snprintf(h.addr, sizeof h.addr, "%s", n->addr);
    h.node_id = n->id;
    h.incarnation = n->incarnation;
    memcpy(h.nonce, nonce, TR_WIRE_NONCE);
    size_t f = tr__wire_frame_begin(b, TR_WIRE_HELLO);
    tr__wire_put_hello(b, &h);
    tr__wire_frame_end(b, f);
}

static void put_auth(tr_node *n, tr_wire_buf *b, const uint8_t *peer_nonce,
                     const uint8_t *own_nonce)
{
    uint8_t mac[TR_WIRE_MAC];
    mac_of(n, peer_nonce, own_nonce, n->name, n->id, mac);
    size_t f = tr__wire_frame_begin(b, TR_WIRE_AUTH);
    tr__wire_put_auth(b, mac);
    tr__wire_frame_end(b, f);
}

/* Appends a MEMBERS frame (every peer with a name and an address, and ourselves). Lock held. */
static void put_members(tr_node *n, tr_wire_buf *b)
{
    uint32_t k = 1;
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && n->peers[i]->name[0] && n->peers[i]->addr[0])
            k++;
    size_t f = tr__wire_frame_begin(b, TR_WIRE_MEMBERS);
    tr__wire_put_members(b, k);
    tr__wire_put_member(b, n->name, n->addr);
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && n->peers[i]->name[0] && n->peers[i]->addr[0])
            tr__wire_put_member(b, n->peers[i]->name, n->peers[i]->addr);
    tr__wire_frame_end(b, f);
}

/* Queues a control frame for a peer's writer: kind PING, or MEMBERS. Lock held. */
static void ctl_queue(tr_node *n, peer *pe, unsigned kind)
{
    pthread_mutex_lock(&pe->ctl_lock);
    if (pe->ctl.len < 64u * 1024u) { /* bounded: control frames are tiny and rare */
        if (kind == TR_WIRE_MEMBERS) {
            put_members(n, &pe->ctl);
        } else {
            size_t f = tr__wire_frame_begin(&pe->ctl, kind);
            tr__wire_frame_end(&pe->ctl, f);
        }
        atomic_store(&pe->ctl_pending, 1);
    }
    pthread_mutex_unlock(&pe->ctl_lock);
}

/* ---- receiving ----------------------------------------------------------------------------- */

typedef struct deliver_ctx {
    tr_node *n;
    uint64_t count;
} deliver_ctx;

static void deliver_envelope(void *arg, tr_pid to, tr_msg *m)
{
    deliver_ctx *d = arg;
    tr_node *n = d->n;
    d->count++;
    if (tr_pid_node(to) != n->id) {
        tr_msg_free(m); /* not ours: nodes do not forward */
        return;
    }
    if ((to & 0xFFFFFFFFFFFFULL) == 0)
        to = n->service;
    if (to == n->service && m->sender == TR_PID_NONE) {
        /* "from nobody" is what the node's own local-only service messages look like (name
         * announcements, retractions, syncs); another node's service always says who it is: a
         * forgery. Dropped, counted. (Other actors may get messages from nobody: a
         * tr_system_send made outside any actor on another node.) */
        count(&n->bad_frames, 1);
        tr_msg_free(m);
        return;
    }
    bool request = (m->flags & TR_MF_REQUEST) != 0;
    tr_pid from = m->sender;
    uint64_t corr = m->corr;
    int rc = tr__deliver(n->sys, NULL, to, m);
    if ((rc == TR_EFULL || rc == TR_ENOPROC) && request && from != TR_PID_NONE) {
        /* a refused or undeliverable request is answered, so its requester does not wait for
         * nothing (locally the send itself would have said so) */
        tr_msg *r = tr_msg_new(rc == TR_EFULL ? TR_MSG_REJECTED : TR_MSG_NOPROC, 0);
        if (r != NULL) {
            r->flags = TR_MF_REPLY | TR_MF_SYSTEM;
            r->corr = corr;
            r->sender = to;
            tr__deliver(n->sys, NULL, from, r);
        }
    }
}

typedef struct learn_ctx {
    tr_node *n;
} learn_ctx;

static void learn_member(void *arg, const char *name, const char *addr)
{
    learn_ctx *l = arg;
    peer_learn(l->n, name, addr);
}

/* The peer (inbound side) authenticated: attach the connection. Lock held. */
static void inbound_up(tr_node *n, conn *c, after *af)
{
    peer *pe = peer_by_name(n, c->ph.name);
    if (pe == NULL) {
        peer_learn(n, c->ph.name, c->ph.addr);
        pe = peer_by_name(n, c->ph.name);
    }
    if (pe == NULL) {
        node_log(n, "no room for peer %s", c->ph.name);
        conn_mark_dead(c);
        return;
    }
    if ((pe->status == TR_PEER_UP || pe->joining) && pe->incarnation != c->ph.incarnation)
        peer_down_locked(n, pe, af); /* it restarted before we noticed */
    peer *holder = atomic_load(&n->by_id[c->ph.node_id]);
    if (c->ph.node_id == n->id || (holder != NULL && holder != pe)) {
        node_log(n, "peer %s uses node id %u, already taken: refused", c->ph.name, c->ph.node_id);
        conn_mark_dead(c);
        return;
    }
    if (pe->in_conn != NULL && pe->in_conn != c)
        conn_mark_dead(pe->in_conn);
    pe->in_conn = c;
    c->pe = pe;
    c->state = C_UP;
    if (pe->status != TR_PEER_UP && !pe->joining) {
        /* it may send requests before our connection to it is up: hold our sends to it */
        pe->joining = true;
        pe->joining_ns = tr__now_ns();
        pe->node_id = c->ph.node_id;
        pe->incarnation = c->ph.incarnation;
        atomic_store(&n->by_id[pe->node_id], pe);
    }
    if (pe->out_conn == NULL && !pe->dialing)
        pe->next_dial_ns = 0; /* dial back now */
    pthread_cond_broadcast(&n->cond);
}

/* The peer (outbound side) proved the secret: it is up. Lock held. */
static void outbound_up(tr_node *n, conn *c, after *af)
{
    peer *pe = c->pe;
    peer *other = peer_by_name(n, c->ph.name);
    if (other != NULL && other != pe) {
        /* a seed address that names a peer we already know under another address */
        pe->alias = true;
        pe->out_conn = NULL;
        conn_mark_dead(c);
        return;
    }
    peer *holder = atomic_load(&n->by_id[c->ph.node_id]);
    if (c->ph.node_id == n->id || (holder != NULL && holder != pe)) {
        node_log(n, "peer %s uses node id %u, already taken: refused", c->ph.name, c->ph.node_id);
        pe->out_conn = NULL;
        conn_mark_dead(c);
        return;
    }
    snprintf(pe->name, sizeof pe->name, "%s", c->ph.name);
    if (pe->joining && pe->incarnation != c->ph.incarnation) {
        /* held for an incarnation that is gone */
        pe->out_conn = NULL;
        peer_down_locked(n, pe, af);
        pe->out_conn = c;
    }
    if (pe->in_conn != NULL && pe->in_conn->ph.incarnation != c->ph.incarnation) {
        conn_mark_dead(pe->in_conn); /* from an earlier incarnation */
        pe->in_conn = NULL;
    }
    pe->node_id = c->ph.node_id;
    pe->incarnation = c->ph.incarnation;
    pe->backoff_ms = n->backoff_min_ms;
    pe->failing = false;
    c->state = C_UP;
    /* what we know goes first (our AUTH went before theirs came); then messages may flow */
    pthread_mutex_lock(&pe->ctl_lock);
    put_members(n, &pe->ctl);
    atomic_store(&pe->ctl_pending, 1);
    pthread_mutex_unlock(&pe->ctl_lock);
    pe->status = TR_PEER_UP;
    pe->joining = false;
    atomic_store(&n->by_id[pe->node_id], pe);
    af->up = true;
    snprintf(af->name, sizeof af->name, "%s", pe->name);
    af->node_id = pe->node_id;
    if (af->nkick < 2)
        af->kick[af->nkick++] = pe;
    n->members_dirty = true;
    node_log(n, "peer %s (node id %u) is up", pe->name, pe->node_id);
    pthread_cond_broadcast(&n->cond);
}

/* One frame from the peer. Returns false when the connection was dropped. */
static bool rx_frame(conn *c, const uint8_t *f, size_t len)
{
    tr_node *n = c->n;
    unsigned kind;
    count(&n->frames_in, 1);
    if (tr__wire_kind(f, len, &kind) != TR_OK) {
        if (c->state == C_UP)
            count(&n->bad_frames, 1);
        conn_fail(c, "not a troupe frame (or another protocol version)");
        return false;
    }
    if (c->state == C_UP && !c->outbound) {
        if (kind == TR_WIRE_DATA) {
            deliver_ctx d = {.n = n, .count = 0};
            if (tr__ext_enter(n->sys) != TR_OK)
                return true; /* the system is stopping */
            int rc = tr__wire_get_data(f, len, n->max_frame, deliver_envelope, &d);
            tr__ext_leave(n->sys);
            count(&n->msgs_in, d.count);
            if (rc == TR_EBADMSG) {
                count(&n->bad_frames, 1);
                conn_fail(c, "malformed DATA frame");
                return false;
            }
            return true;
        }
        if (kind == TR_WIRE_PING)
            return true;
        if (kind == TR_WIRE_MEMBERS) {
            learn_ctx l = {.n = n};
            pthread_mutex_lock(&n->lock);
            int rc = tr__wire_get_members(f, len, learn_member, &l);
            pthread_mutex_unlock(&n->lock);
            if (rc != TR_OK) {
                count(&n->bad_frames, 1);
                conn_fail(c, "malformed MEMBERS frame");
                return false;
            }
            return true;
        }
        if (kind == TR_WIRE_AUTH || kind == TR_WIRE_HELLO) {
            count(&n->bad_frames, 1);
            conn_fail(c, "handshake frame after the handshake");
            return false;
        }
    }
    if (c->state == C_UP && c->outbound) {
        if (kind == TR_WIRE_PING)
            return true;
        count(&n->bad_frames, 1);
        conn_fail(c, "unexpected frame on an outbound connection");
        return false;
    }
    if (c->state == C_REFUSED)
        return true; /* dropped by the ticker or by the peer */
    after af;
    memset(&af, 0, sizeof af);
    if (c->state == C_HELLO) {
        tr_wire_hello h;
        if (kind != TR_WIRE_HELLO || tr__wire_get_hello(f, len, &h) != TR_OK) {
            conn_fail(c, "no valid HELLO");
            return false;
        }
        bool self = strcmp(h.name, n->name) == 0;
        pthread_mutex_lock(&n->lock); /* the ticker and conn_fail read state and ph */
        c->ph = h;
        c->state = self && !c->outbound ? C_REFUSED : C_AUTH;
        pthread_mutex_unlock(&n->lock);
        if (!c->outbound) {
            /* answer HELLO only: the dialer proves the secret first (a node that dialed
             * itself learns so from our HELLO) */
            put_hello(n, &c->hsbuf, c->nonce);
            if (tr__wire_status(&c->hsbuf) != TR_OK) {
                conn_fail(c, "out of memory");
                return false;
            }
            hs_send(c);
        } else if (strcmp(c->ph.name, n->name) != 0) {
            /* we dialed: we prove the secret first */
            put_auth(n, &c->authbuf, c->ph.nonce, c->nonce);
            if (tr__wire_status(&c->authbuf) != TR_OK) {
                conn_fail(c, "out of memory");
                return false;
            }
            send_auth(c);
        } else {
            pthread_mutex_lock(&n->lock);
            c->pe->alias = true; /* a seed that is ourselves: never dialed again */
            c->pe->out_conn = NULL;
            conn_mark_dead(c);
            pthread_mutex_unlock(&n->lock);
            after_run(n, &af);
            return false;
        }
        return true;
    }
    /* C_AUTH: the peer proves the secret */
    uint8_t mac[TR_WIRE_MAC], want[TR_WIRE_MAC];
    if (kind != TR_WIRE_AUTH || tr__wire_get_auth(f, len, mac) != TR_OK) {
        conn_fail(c, "no valid AUTH");
        return false;
    }
    mac_of(n, c->nonce, c->ph.nonce, c->ph.name, c->ph.node_id, want);
    if (!same_mac(mac, want)) {
        conn_fail(c, "wrong cluster secret: refused");
        return false;
    }
    pthread_mutex_lock(&n->lock);
    if (c->dead) {
        pthread_mutex_unlock(&n->lock);
        return false;
    }
    if (c->outbound)
        outbound_up(n, c, &af);
    else
        inbound_up(n, c, &af);
    bool alive = !c->dead;
    pthread_mutex_unlock(&n->lock);
    if (alive && !c->outbound) { /* the dialer proved it: now we prove it too */
        put_auth(n, &c->authbuf, c->ph.nonce, c->nonce);
        if (tr__wire_status(&c->authbuf) == TR_OK)
            send_auth(c);
        else
            conn_fail(c, "out of memory");
    }
    after_run(n, &af);
    return alive;
}

static void on_rx(void *arg)
{
    conn *c = arg;
    tr_node *n = c->n;
    int rv = nng_aio_result(c->rx);
    if (rv != 0) {
        conn_fail(c, rv == NNG_ECLOSED || rv == NNG_ECANCELED ? NULL : "connection closed");
        return;
    }
    c->rlen += nng_aio_count(c->rx);
    atomic_store_explicit(&c->last_rx_ns, tr__now_ns(), memory_order_relaxed);
    size_t off = 0;
    size_t need = c->rcap < NODE_RX_CHUNK ? NODE_RX_CHUNK : c->rcap;
    while (c->rlen - off >= TR_WIRE_PREFIX) {
        uint32_t flen = tr__wire_prefix(c->rbuf + off);
        /* until the peer has proved the secret its frames are handshake frames: small */
        size_t limit = c->state == C_UP ? n->max_frame : NODE_HANDSHAKE_FRAME;
        if (flen > limit || flen < TR_WIRE_HEADER) {
            if (c->state == C_UP || flen > limit)
                count(&n->bad_frames, 1);
            conn_fail(c, flen < TR_WIRE_HEADER ? "frame too short"
                         : c->state == C_UP  ? "frame above max_frame"
                                              : "frame above the handshake's 1 KiB before "
                                                "authentication");
            return;
        }
        if (c->rlen - off < TR_WIRE_PREFIX + (size_t)flen) {
            if (TR_WIRE_PREFIX + (size_t)flen > need)
                need = TR_WIRE_PREFIX + (size_t)flen;
            break;
        }
        if (!rx_frame(c, c->rbuf + off + TR_WIRE_PREFIX, flen))
            return;
        off += TR_WIRE_PREFIX + flen;
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    pthread_mutex_lock(&n->lock);
    bool dead = c->dead;
    pthread_mutex_unlock(&n->lock);
    if (dead)
        return;
    if (c->rcap > NODE_RX_KEEP && c->rlen < NODE_RX_CHUNK && need <= NODE_RX_CHUNK) {
        uint8_t *b = realloc(c->rbuf, NODE_RX_CHUNK); /* give back a large frame's room */
        if (b != NULL) {
            c->rbuf = b;
            c->rcap = NODE_RX_CHUNK;
        }
    }
    if (c->rlen == c->rcap && need <= c->rcap)
        need = c->rcap * 2; /* cannot happen: a full buffer holds a frame */
    rx_post(c, need);
}

/* ---- sending ------------------------------------------------------------------------------- */

/* Turns everything queued towards pe into dead letters (no connection to send it on). */
static void drop_queue(peer *pe)
{
    tr_node *n = pe->n;
    tr_mpsc_node *x;
    while ((x = tr__mpsc_pop(&pe->q)) != NULL) {
        tr_msg *m = (tr_msg *)x;
        atomic_fetch_sub_explicit(&pe->qlen, 1, memory_order_relaxed);
        count(&n->lost, 1);
        if (m->flags & TR_MF_SIGNAL) {
            static const tr_reason noconn = {.kind = TR_REASON_NOCONNECTION};
            tr__signal_bounce(n->sys, m, &noconn);
        } else {
            tr__dead_letter(n->sys, m->to, m);
        }
    }
    pthread_mutex_lock(&pe->ctl_lock);
    pe->ctl.len = 0;
    atomic_store(&pe->ctl_pending, 0);
    pthread_mutex_unlock(&pe->ctl_lock);
}

/* Fills c->out with the control frames and up to batch_bytes of queued messages. */
static void tx_build(peer *pe, conn *c)
{
    tr_node *n = pe->n;
    tr_wire_buf *b = &c->out;
    b->len = 0;
    b->oom = 0;
    c->out_off = 0;
    if (atomic_exchange(&pe->ctl_pending, 0)) {
        pthread_mutex_lock(&pe->ctl_lock);
        tr__wire_put_raw(b, pe->ctl.data, pe->ctl.len);
        pe->ctl.len = 0;
        pthread_mutex_unlock(&pe->ctl_lock);
    }
    size_t f = 0;
    uint64_t k = 0;
    while (b->len < n->batch_bytes && atomic_load_explicit(&pe->qlen, memory_order_acquire) > 0) {
        tr_mpsc_node *x = tr__mpsc_pop(&pe->q);
        if (x == NULL)
            break; /* a sender is between its two steps: its message goes in the next write */
        tr_msg *m = (tr_msg *)x;
        atomic_fetch_sub_explicit(&pe->qlen, 1, memory_order_relaxed);
        if (k == 0)
            f = tr__wire_frame_begin(b, TR_WIRE_DATA);
        tr__wire_put_envelope(b, m->to, m);
        tr_msg_free(m);
        k++;
    }
    if (k > 0) {
        tr__wire_frame_end(b, f);
        count(&n->msgs_out, k);
    }
}

static void tx_send(conn *c)
{
    nng_iov iov = {.iov_buf = c->out.data + c->out_off, .iov_len = c->out.len - c->out_off};
    nng_aio_set_iov(c->tx, 1, &iov);
    /* a peer that takes nothing for this long is as good as gone (and a send stuck on a stream
     * closed under it ends too) */
    nng_aio_set_timeout(c->tx, NODE_SEND_TIMEOUT_MS);
    nng_stream_send(c->s, c->tx);
}

/* The writer's loop, run by whoever owns pe->tx_busy: sends, or gives the queue up. With a
 * connection `c` (a reference held) it continues a chain of writes. */
static void tx_pump(peer *pe, conn *c)
{
    tr_node *n = pe->n;
    unsigned idle_spins = 0;
    for (;;) {
        bool hold = false;
        if (c == NULL) {
            pthread_mutex_lock(&n->lock);
            c = pe->out_conn;
            if (c != NULL && (c->dead || c->state != C_UP))
                c = NULL;
            if (c != NULL)
                c->refs++;
            hold = c == NULL && pe->joining && !n->stopping;
            pthread_mutex_unlock(&n->lock);
        }
        if (hold) {
            /* our connection to it is being made: outbound_up kicks the writer */
            atomic_store(&pe->tx_busy, 0);
            pthread_mutex_lock(&n->lock);
            bool ready = pe->status == TR_PEER_UP || !pe->joining;
            pthread_mutex_unlock(&n->lock);
            int idle = 0;
            if (!ready || !atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
                return;
            continue; /* it came up (or went down) meanwhile */
        }
        if (c == NULL) {
            drop_queue(pe);
        } else {
            tr__wire_status(&c->out);
            tx_build(pe, c);
            if (tr__wire_status(&c->out) != TR_OK) {
                conn_fail(c, "out of memory");
                conn_unref(c);
                c = NULL;
                continue; /* no connection now: the queue becomes dead letters */
            }
            if (c->out.len > 0) {
                atomic_store_explicit(&pe->last_tx_ns, tr__now_ns(), memory_order_relaxed);
                count(&n->writes, 1);
                tx_send(c); /* on_tx continues the chain */
                return;
            }
            conn_unref(c);
            c = NULL;
        }
        /* nothing to send: give the queue up, unless a sender came meanwhile */
        atomic_store(&pe->tx_busy, 0);
        if (atomic_load(&pe->qlen) == 0 && atomic_load(&pe->ctl_pending) == 0)
            return;
        int idle = 0;
        if (!atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
            return; /* another writer took it */
        if (++idle_spins > 64)
            sched_yield(); /* a sender between its two steps */
    }
}

static void on_tx(void *arg)
{
    conn *c = arg;
    peer *pe = c->pe;
    int rv = nng_aio_result(c->tx);
    if (rv != 0) {
        conn_fail(c, NULL);
        conn_unref(c);
        tx_pump(pe, NULL); /* no connection: what is queued becomes dead letters */
        return;
    }
    c->out_off += nng_aio_count(c->tx);
    if (c->out_off < c->out.len) {
        tx_send(c);
        return;
    }
    tx_pump(pe, c);
}

/* Makes sure a writer runs for pe. */
static void kick(peer *pe)
{
    int idle = 0;
    if (atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
        tx_pump(pe, NULL);
}

static int node_route(tr_system *sys, tr_pid to, tr_msg *m)
{
    m->to = to;
    atomic_fetch_add(&sys->node_users, 1);
    tr_node *n = atomic_load(&sys->node);
    uint16_t id = tr_pid_node(to);
    if (n == NULL || id == 0) {
        atomic_fetch_sub(&sys->node_users, 1);
        tr__dead_letter(sys, to, m);
        return TR_ENOPROC;
    }
    peer *pe = atomic_load_explicit(&n->by_id[id], memory_order_acquire);
    int rc = TR_OK;
    if (pe == NULL || n->stopping) {
        count(&n->no_route, 1);
        if (m->flags & TR_MF_SIGNAL) {
            static const tr_reason noconn = {.kind = TR_REASON_NOCONNECTION};
            tr__signal_bounce(sys, m, &noconn);
        } else {
            tr__dead_letter(sys, to, m);
        }
        rc = TR_ENOPROC;
    } else if (atomic_fetch_add_explicit(&pe->qlen, 1, memory_order_acq_rel) >= n->peer_queue &&
               !(m->flags & (TR_MF_SIGNAL | TR_MF_SYSTEM))) {
        atomic_fetch_sub_explicit(&pe->qlen, 1, memory_order_relaxed);
        count(&n->queue_full, 1);
        bool reject = n->overflow == TR_NODE_REJECT || (m->flags & TR_MF_REQUEST);
        tr_msg_free(m);
        rc = reject ? TR_EFULL : TR_OK;
    } else {
        tr__mpsc_push(&pe->q, &m->node);
        kick(pe);
    }
    atomic_fetch_sub(&sys->node_users, 1);
    return rc;
}

/* ---- accepting and dialing ----------------------------------------------------------------- */

static bool conn_admit(tr_node *n, conn *c)
{
    pthread_mutex_lock(&n->lock);
    bool ok = !n->stopping && n->nconns < NODE_MAX_CONNS;
    if (ok) {
        c->next = n->conns;
        n->conns = c;
        n->nconns++;
    }
    pthread_mutex_unlock(&n->lock);
    return ok;
}

static void on_accept(void *arg)
{
    tr_node *n = arg;
    int rv = nng_aio_result(n->accept_aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(n->accept_aio, 0);
        conn *c = conn_new(n, s, false, NULL);
        if (c == NULL || !conn_admit(n, c)) {
            if (c != NULL)
                conn_destroy(c);
            else {
                nng_stream_close(s);
                nng_stream_free(s);
            }
        } else {
            rx_post(c, NODE_RX_CHUNK);
        }
    }
    pthread_mutex_lock(&n->lock);
    bool stop = n->stopping;
    pthread_mutex_unlock(&n->lock);
    if (!stop)
        nng_stream_listener_accept(n->listener, n->accept_aio);
}

static void on_dial(void *arg)
{
    peer *pe = arg;
    tr_node *n = pe->n;
    int rv = nng_aio_result(pe->dial_aio);
    conn *c = NULL;
    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(pe->dial_aio, 0);
        c = conn_new(n, s, true, pe);
        if (c == NULL) {
            nng_stream_close(s);
            nng_stream_free(s);
        } else if (!conn_admit(n, c)) {
            conn_destroy(c);
            c = NULL;
        }
    }
    pthread_mutex_lock(&n->lock);
    pe->dialing = false;
    if (c == NULL || n->stopping || pe->alias) {
        if (c != NULL)
            c->dead = true; /* reaped by the ticker */
        c = NULL;
        pe->next_dial_ns = tr__now_ns() + (uint64_t)pe->backoff_ms * 1000000u;
        pe->backoff_ms = pe->backoff_ms * 2 > n->backoff_max_ms ? n->backoff_max_ms
                                                                 : pe->backoff_ms * 2;
    } else {
        pe->out_conn = c;
    }
    pthread_mutex_unlock(&n->lock);
    if (c != NULL) {
        put_hello(n, &c->hsbuf, c->nonce);
        hs_send(c);
        rx_post(c, NODE_RX_CHUNK);
    }
}

/* Starts a dial to pe (lock held). */
static void dial_start(tr_node *n, peer *pe)
{
    if (pe->dialer == NULL || strcmp(pe->dialer_addr, pe->addr) != 0) {
        if (pe->dialer != NULL) {
            nng_stream_dialer_close(pe->dialer);
            nng_stream_dialer_free(pe->dialer);
            pe->dialer = NULL;
        }
        if (nng_stream_dialer_alloc(&pe->dialer, pe->addr) != 0) {
            node_log(n, "cannot dial %s: not a tcp:// address", pe->addr);
            pe->alias = true; /* never dialed */
            return;
        }
        snprintf(pe->dialer_addr, sizeof pe->dialer_addr, "%s", pe->addr);
    }
    pe->dialing = true;
    nng_aio_set_timeout(pe->dial_aio, 2000);
    nng_stream_dialer_dial(pe->dialer, pe->dial_aio);
}

/* ---- the ticker: heartbeats, failure detection, dials, reaping ------------------------------ */

static void reap(tr_node *n)
{
    conn *dead = NULL;
    pthread_mutex_lock(&n->lock);
    for (conn **pp = &n->conns; *pp != NULL;) {
        conn *c = *pp;
        if (c->dead && c->refs == 0) {
            *pp = c->next;
            n->nconns--;
            c->next = dead;
            dead = c;
        } else {
            if (c->dead)
                nng_aio_cancel(c->tx); /* see conn_mark_dead */
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&n->lock);
    while (dead != NULL) {
        conn *c = dead;
        dead = c->next;
        conn_destroy(c);
    }
}

static void *ticker_main(void *arg)
{
    tr_node *n = arg;
    pthread_setname_np(pthread_self(), "tr-ticker");
    pthread_mutex_lock(&n->lock);
    uint64_t last_tick = tr__now_ns();
    while (!n->stopping) {
        uint64_t now = tr__now_ns();
        conn *fail[16];
        int nfail = 0;
        peer *ping[NODE_MAX_PEERS];
        int nping = 0;
        if (now - last_tick > n->down_ns / 2) {
            /* this node itself stood still (SIGSTOP, a VM pause, starved of CPU): its peers'
             * silence meanwhile is ours, not theirs. Each inbound connection gets down_after_ms
             * from now to speak (as Cassandra's detector ignores a local pause); a peer that did
             * go away shows by its closed connection, or stays silent past that. */
            node_log(n, "this node was paused for %llu ms: peers get %llu ms to be heard again",
                     (unsigned long long)((now - last_tick) / 1000000u),
                     (unsigned long long)(n->down_ns / 1000000u));
            for (conn *c = n->conns; c != NULL; c = c->next)
                atomic_store_explicit(&c->last_rx_ns, now, memory_order_relaxed);
        }
        last_tick = now;
        /* silent or stuck connections */
        for (conn *c = n->conns; c != NULL && nfail < 16; c = c->next) {
            if (c->dead)
                continue;
            uint64_t last = atomic_load_explicit(&c->last_rx_ns, memory_order_relaxed);
            if (c->state != C_UP && now - c->born_ns > (uint64_t)NODE_HANDSHAKE_MS * 1000000u)
                fail[nfail++] = c;
            else if (c->state == C_UP && !c->outbound && now > last && now - last > n->down_ns)
                fail[nfail++] = c;
        }
        for (size_t i = 0; i < n->npeers; i++) {
            peer *pe = n->peers[i];
            if (pe->alias)
                continue;
            if (pe->joining && now - pe->joining_ns > n->down_ns + NODE_HANDSHAKE_MS * 1000000ull &&
                nfail < 16 && pe->in_conn != NULL) {
                fail[nfail++] = pe->in_conn; /* we cannot reach it back: it is down for us */
            } else if (pe->status == TR_PEER_UP) {
                if (n->members_dirty)
                    ctl_queue(n, pe, TR_WIRE_MEMBERS);
                else if (now - atomic_load(&pe->last_tx_ns) >= n->hb_ns)
                    ctl_queue(n, pe, TR_WIRE_PING);
                if (atomic_load(&pe->ctl_pending))
                    ping[nping++] = pe;
            } else if (pe->out_conn == NULL && !pe->dialing && now >= pe->next_dial_ns) {
                dial_start(n, pe);
            }
        }
        n->members_dirty = false;
        pthread_mutex_unlock(&n->lock);
        for (int i = 0; i < nfail; i++)
            conn_fail(fail[i], fail[i]->state != C_UP ? "handshake timeout"
                               : fail[i]->pe != NULL && fail[i]->pe->joining
                                   ? "cannot connect back to it"
                                   : "silent for too long");
        for (int i = 0; i < nping; i++)
            kick(ping[i]);
        reap(n);
        pthread_mutex_lock(&n->lock);
        if (n->stopping)
            break;
        uint64_t tick = n->hb_ns / 4 < 50000000u ? n->hb_ns / 4 : 50000000u;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + tick;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

/* ---- the node service ---------------------------------------------------------------------- */

static const tr_behaviour *behaviour_find(tr_node *n, const char *name, size_t len)
{
    const tr_behaviour *b = NULL;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->nbehaviours && b == NULL; i++)
        if (strlen(n->behaviours[i].name) == len && memcmp(n->behaviours[i].name, name, len) == 0)
            b = n->behaviours[i].b;
    pthread_mutex_unlock(&n->lock);
    return b;
}

static uint64_t msg_u64(const tr_msg *m)
{
    tr_reader r;
    uint64_t v = 0;
    tr_reader_init(&r, m);
    tr_read_u64(&r, &v);
    tr_reader_done(&r);
    return v;
}

static tr_msg *spawn_reply(int rc, tr_pid pid)
{
    tr_msg *r = tr_msg_new(0, 16); /* replies carry user types */
    if (r != NULL) {
        msgpack_pack_int64(tr_msg_packer(r), rc);
        msgpack_pack_uint64(tr_msg_packer(r), pid);
    }
    return r;
}

/* A message [name, pid] of the given type. */
static tr_msg *name_msg(uint32_t type, const char *name, size_t len, tr_pid pid)
{
    tr_msg *m = tr_msg_new(type, len + 16);
    if (m != NULL) {
        msgpack_pack_str(tr_msg_packer(m), len);
        msgpack_pack_str_body(tr_msg_packer(m), name, len);
        msgpack_pack_uint64(tr_msg_packer(m), pid);
    }
    return m;
}

/* Reads [name, pid] into name (NUL-terminated, at most TR_NAME_MAX bytes). */
static bool read_name(const tr_msg *m, char name[TR_NAME_MAX + 1], tr_pid *pid)
{
    tr_reader r;
    const char *s;
    size_t len;
    uint64_t p;
    tr_reader_init(&r, m);
    bool ok = tr_read_str(&r, &s, &len) == TR_OK && len > 0 && len <= TR_NAME_MAX &&
              memchr(s, '\0', len) == NULL && tr_read_u64(&r, &p) == TR_OK && p != 0;
    if (ok) {
        memcpy(name, s, len);
        name[len] = '\0';
        *pid = p;
    }
    tr_reader_done(&r);
    return ok;
}

/* Sends a runtime-typed message from the service (tr_send takes only user types). Marked system:
 * a full queue towards the peer does not refuse it (a name sync or a pull lost to a burst of
 * application messages left a node without its peer's names). */
static void svc_send(tr_ctx *ctx, tr_pid to, tr_msg *m)
{
    if (m == NULL)
        return;
    m->flags |= TR_MF_SYSTEM;
    m->sender = ctx->pid;
    tr__deliver(ctx->sys, ctx->w, to, m);
}

/* Sends [name, pid] as `type` to the service of every peer up. */
static void tell_peers(tr_ctx *ctx, tr_node *n, uint32_t type, const char *name, tr_pid pid)
{
    uint16_t ids[NODE_MAX_PEERS];
    size_t k = 0;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->status == TR_PEER_UP)
            ids[k++] = n->peers[i]->node_id;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < k; i++)
        svc_send(ctx, service_pid(ids[i]), name_msg(type, name, strlen(name), pid));
}

/* A peer's registration meets ours: the smaller pid keeps the name, everywhere. */
static void names_merge(tr_ctx *ctx, tr_node *n, const char *name, tr_pid pid)
{
    tr_pid loser = TR_PID_NONE;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e == NULL) {
        tr__namemap_put(&n->names, name, pid);
    } else if (e->pid != pid) {
        loser = e->pid < pid ? pid : e->pid;
        e->pid = e->pid < pid ? e->pid : pid;
    }
    pthread_mutex_unlock(&n->names_lock);
    if (loser != TR_PID_NONE && tr_pid_node(loser) == n->id) {
        tr_msg *lost = name_msg(TR_MSG_NAME_LOST, name, strlen(name), loser);
        if (lost != NULL) {
            lost->flags = TR_MF_SYSTEM;
            tr__deliver(ctx->sys, NULL, loser, lost);
        }
    }
}

/* The names held by our actors, sent to the service of node `id`. */
static void names_sync(tr_ctx *ctx, tr_node *n, uint16_t id)
{
    pthread_mutex_lock(&n->names_lock);
    size_t k = 0, cap = n->names.len;
    tr_msg **out = cap > 0 ? calloc(cap, sizeof *out) : NULL;
    for (size_t i = 0; out != NULL && i < n->names.cap; i++) {
        tr_name_entry *e = &n->names.e[i];
        if (e->name != NULL && tr_pid_node(e->pid) == n->id && k < cap)
            out[k++] = name_msg(TR_MSG_NODE_REG, e->name, strlen(e->name), e->pid);
    }
    pthread_mutex_unlock(&n->names_lock);
    for (size_t i = 0; i < k; i++)
        if (out[i] != NULL)
            svc_send(ctx, service_pid(id), out[i]);
    free(out);
}

/* An actor of ours that held names ended: they are released here and everywhere. */
static void names_holder_down(tr_ctx *ctx, tr_node *n, tr_pid pid)
{
    for (;;) {
        char name[TR_NAME_MAX + 1] = {0};
        pthread_mutex_lock(&n->names_lock);
        for (size_t i = 0; i < n->names.cap && name[0] == '\0'; i++)
            if (n->names.e[i].name != NULL && n->names.e[i].pid == pid)
                snprintf(name, sizeof name, "%s", n->names.e[i].name);
        if (name[0] != '\0')
            tr__namemap_del(&n->names, name);
        pthread_mutex_unlock(&n->names_lock);
        if (name[0] == '\0')
            return;
        tell_peers(ctx, n, TR_MSG_NODE_UNREG, name, pid);
    }
}

/* A remote spawn: [behaviour, args] -> [rc, pid]. */
static void service_spawn(tr_ctx *ctx, tr_node *n, tr_msg *m)
{
    tr_reader r;
    tr_reader_init(&r, m);
    const char *name;
    size_t nl;
    const void *args;
    size_t al;
    int rc = TR_EBADMSG;
    tr_pid pid = TR_PID_NONE;
    if (tr_read_str(&r, &name, &nl) == TR_OK && tr_read_bin(&r, &args, &al) == TR_OK) {
        const tr_behaviour *b = behaviour_find(n, name, nl);
        tr_msg *a = b != NULL ? tr_msg_from_bytes(0, args, al) : NULL;
        rc = b == NULL ? TR_EINVAL : a == NULL ? TR_ENOMEM : tr_spawn(ctx, b, a, &pid);
        tr_msg_free(a);
    }
    tr_reader_done(&r);
    tr_msg *rep = spawn_reply(rc, pid);
    if (rep != NULL)
        tr_reply(ctx, m, rep);
}

static int service_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    tr_node *n = *(tr_node **)state;
    char name[TR_NAME_MAX + 1];
    tr_pid pid;
    switch (tr_msg_type(m)) {
    case TR_MSG_NODE_REG:
        if (read_name(m, name, &pid) && tr_pid_node(pid) == tr_pid_node(tr_msg_sender(m)))
            names_merge(ctx, n, name, pid);
        return 0;
    case TR_MSG_NODE_UNREG:
        if (read_name(m, name, &pid)) {
            pthread_mutex_lock(&n->names_lock);
            tr_name_entry *e = tr__namemap_find(&n->names, name);
            if (e != NULL && e->pid == pid)
                tr__namemap_del(&n->names, name);
            pthread_mutex_unlock(&n->names_lock);
        }
        return 0;
    case TR_MSG_NODE_ANNOUNCE:
        if (tr_msg_sender(m) == TR_PID_NONE && read_name(m, name, &pid)) {
            uint64_t ref;
            tr_monitor(ctx, pid, &ref); /* its end releases the name */
            tell_peers(ctx, n, TR_MSG_NODE_REG, name, pid);
        }
        return 0;
    case TR_MSG_NODE_RETRACT:
        if (tr_msg_sender(m) == TR_PID_NONE && read_name(m, name, &pid))
            tell_peers(ctx, n, TR_MSG_NODE_UNREG, name, pid);
        return 0;
    case TR_MSG_NODE_SYNC:
        if (tr_msg_sender(m) == TR_PID_NONE) {
            uint16_t id = (uint16_t)msg_u64(m);
            names_sync(ctx, n, id);
            svc_send(ctx, service_pid(id), tr_msg_new(TR_MSG_NODE_PULL, 0));
        }
        return 0;
    case TR_MSG_NODE_PULL: /* from a peer's service: our names, to it */
        if (tr_pid_node(tr_msg_sender(m)) != n->id && tr_msg_sender(m) != TR_PID_NONE &&
            tr_msg_sender(m) == service_pid(tr_pid_node(tr_msg_sender(m))))
            names_sync(ctx, n, tr_pid_node(tr_msg_sender(m)));
        return 0;
    case TR_MSG_DOWN:
        names_holder_down(ctx, n, tr_msg_sender(m));
        return 0;
    default:
        break;
    }
    if (tr_msg_type(m) == TR_MSG_NODE_SPAWN && tr_msg_corr(m) != 0)
        service_spawn(ctx, n, m);
    return 0;
}

static int service_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(tr_node **)state = (tr_node *)arg;
    return 0;
}

static const tr_behaviour service_behaviour = {
    .name = "troupe.node",
    .state_size = sizeof(tr_node *),
    .init = service_init,
    .receive = service_receive,
};

int tr_node_register_behaviour(tr_node *node, const char *name, const tr_behaviour *b)
{
    if (node == NULL || name == NULL || b == NULL || name[0] == '\0' ||
        strlen(name) > TR_WIRE_NAME_MAX)
        return TR_EINVAL;
    int rc = TR_OK;
    pthread_mutex_lock(&node->lock);
    size_t i;
    for (i = 0; i < node->nbehaviours; i++)
        if (strcmp(node->behaviours[i].name, name) == 0)
            break;
    if (i == node->nbehaviours) {
        if (i == NODE_MAX_BEHAVIOURS)
            rc = TR_ENOMEM;
        else
            node->nbehaviours++;
    }
    if (rc == TR_OK) {
        snprintf(node->behaviours[i].name, sizeof node->behaviours[i].name, "%s", name);
        node->behaviours[i].b = b;
    }
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int tr_node_spawn(tr_node *node, const char *peer_name, const char *behaviour, const tr_msg *args,
                  unsigned timeout_ms, tr_pid *out)
{
    if (node == NULL || peer_name == NULL || behaviour == NULL || out == NULL ||
        strlen(behaviour) > TR_WIRE_NAME_MAX)
        return TR_EINVAL;
    const void *ab = args != NULL ? tr_msg_data(args) : NULL;
    size_t al = args != NULL ? tr_msg_size(args) : 0;
    if (strcmp(peer_name, node->name) == 0) {
        const tr_behaviour *b = behaviour_find(node, behaviour, strlen(behaviour));
        if (b == NULL)
            return TR_EINVAL;
        tr_msg *a = tr_msg_from_bytes(0, ab, al);
        if (a == NULL)
            return TR_ENOMEM;
        int rc = tr_system_spawn(node->sys, b, a, out);
        tr_msg_free(a);
        return rc;
    }
    uint16_t id;
    int rc = tr_node_lookup(node, peer_name, &id);
    if (rc != TR_OK)
        return rc;
    tr_msg *m = tr_msg_new(TR_MSG_NODE_SPAWN, strlen(behaviour) + al + 16);
    if (m == NULL)
        return TR_ENOMEM;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_str(pk, strlen(behaviour));
    msgpack_pack_str_body(pk, behaviour, strlen(behaviour));
    msgpack_pack_bin(pk, al);
    msgpack_pack_bin_body(pk, ab, al);
    tr_msg *rep = NULL;
    rc = tr__call(node->sys, service_pid(id), m, timeout_ms, &rep);
    if (rc != TR_OK)
        return rc;
    tr_reader r;
    tr_reader_init(&r, rep);
    int64_t code;
    uint64_t pid;
    rc = tr_read_i64(&r, &code) == TR_OK && tr_read_u64(&r, &pid) == TR_OK ? TR_OK : TR_EBADMSG;
    tr_reader_done(&r);
    tr_msg_free(rep);
    if (rc != TR_OK)
        return rc;
    if (code != TR_OK)
        return (int)code;
    *out = pid;
    return TR_OK;
}

/* ---- links and monitors across nodes ------------------------------------------------------- */

/* The node, kept from being freed until node_leave (NULL: none). */
static tr_node *node_enter(tr_system *sys)
{
    atomic_fetch_add(&sys->node_users, 1);
    tr_node *n = atomic_load(&sys->node);
    if (n == NULL)
        atomic_fetch_sub(&sys->node_users, 1);
    return n;
}

static void node_leave(tr_system *sys)
{
    atomic_fetch_sub(&sys->node_users, 1);
}

static int node_interest(tr_system *sys, uint16_t node_id, tr_pid local)
{
    tr_node *n = node_enter(sys);
    if (n == NULL)
        return TR_ENOPROC;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&n->lock);
    peer *pe = atomic_load(&n->by_id[node_id]);
    if (pe != NULL && (pe->status == TR_PEER_UP || pe->joining))
        rc = tr__idmap_put(&pe->interest, local, 1);
    pthread_mutex_unlock(&n->lock);
    node_leave(sys);
    return rc;
}

static void node_forget(tr_system *sys, tr_pid local)
{
    tr_node *n = node_enter(sys);
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++)
        tr__idmap_del(&n->peers[i]->interest, local, NULL);
    pthread_mutex_unlock(&n->lock);
    node_leave(sys);
}

/* ---- public API ---------------------------------------------------------------------------- */

static void node_free(tr_node *n)
{
    if (n->by_id != NULL)
        free((void *)n->by_id);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        drop_queue(pe);
        tr__wire_buf_free(&pe->ctl);
        tr__idmap_free(&pe->interest);
        pthread_mutex_destroy(&pe->ctl_lock);
        free(pe);
    }
    if (n->secret != NULL) {
        memset(n->secret, 0, n->secret_len);
        free(n->secret);
    }
    tr__namemap_free(&n->names);
    pthread_mutex_destroy(&n->names_lock);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
    free(n);
}

/* The node layer's side of the core's transport seam (internal.h). */
static void node_free_left(tr_node *n)
{
    tr_node_stop(n);
}

static const tr__remote_ops remote_ops = {
    .route = node_route,
    .interest = node_interest,
    .forget = node_forget,
    .free = node_free_left,
};

int tr_node_start(tr_system *sys, const tr_node_opts *o, tr_node **out)
{
    if (sys == NULL || o == NULL || out == NULL || o->name == NULL || o->name[0] == '\0' ||
        strlen(o->name) > TR_WIRE_NAME_MAX || o->listen == NULL ||
        strlen(o->listen) > TR_WIRE_ADDR_MAX || strncmp(o->listen, "tcp://", 6) != 0 ||
        o->secret == NULL || strlen(o->secret) < 8 || (o->nseeds > 0 && o->seeds == NULL))
        return TR_EINVAL;
    for (size_t i = 0; i < o->nseeds; i++)
        if (o->seeds[i] == NULL || strlen(o->seeds[i]) > TR_WIRE_ADDR_MAX ||
            strncmp(o->seeds[i], "tcp://", 6) != 0)
            return TR_EINVAL;
    if (atomic_load(&sys->node) != NULL)
        return TR_ESTATE;
    tr_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return TR_ENOMEM;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->cond, NULL);
    pthread_mutex_init(&n->names_lock, NULL);
    tr__namemap_init(&n->names);
    n->sys = sys;
    snprintf(n->name, sizeof n->name, "%s", o->name);
    n->id = sys->opts.node_id;
    random_bytes(&n->incarnation, sizeof n->incarnation);
    n->secret_len = strlen(o->secret);
    n->secret = malloc(n->secret_len);
    n->by_id = calloc(65536, sizeof *n->by_id);
    if (n->secret == NULL || n->by_id == NULL) {
        node_free(n);
        return TR_ENOMEM;
    }
    memcpy(n->secret, o->secret, n->secret_len);
    n->max_frame = o->max_frame ? o->max_frame : NODE_MAX_FRAME_DEFAULT;
    if (n->max_frame > UINT32_MAX)
        n->max_frame = UINT32_MAX;
    n->peer_queue = o->peer_queue ? o->peer_queue : NODE_QUEUE_DEFAULT;
    n->batch_bytes = o->batch_bytes ? o->batch_bytes : NODE_BATCH_DEFAULT;
    n->overflow = o->overflow;
    n->hb_ns = (uint64_t)(o->heartbeat_ms ? o->heartbeat_ms : 200) * 1000000u;
    n->down_ns = (uint64_t)(o->down_after_ms ? o->down_after_ms : 1000) * 1000000u;
    n->backoff_min_ms = o->reconnect_min_ms ? o->reconnect_min_ms : 10;
    n->backoff_max_ms = o->reconnect_max_ms ? o->reconnect_max_ms : 2000;
    if (n->backoff_max_ms < n->backoff_min_ms)
        n->backoff_max_ms = n->backoff_min_ms;
    n->quiet = o->quiet;

    int rv = nng_stream_listener_alloc(&n->listener, o->listen);
    if (rv == 0)
        rv = nng_stream_listener_listen(n->listener);
    if (rv != 0) {
        if (!o->quiet)
            fprintf(stderr, "troupe node %s: cannot listen on %s: %s\n", o->name, o->listen,
                    nng_strerror(rv));
        if (n->listener != NULL)
            nng_stream_listener_free(n->listener);
        node_free(n);
        return TR_EINVAL;
    }
    nng_stream_listener_get_int(n->listener, NNG_OPT_TCP_BOUND_PORT, &n->port);
    /* the address others dial: the listen address with the port actually bound */
    const char *hp = o->listen + 6;
    const char *colon = strrchr(hp, ':');
    int hl = colon != NULL ? (int)(colon - hp) : (int)strlen(hp);
    snprintf(n->addr, sizeof n->addr, "tcp://%.*s:%d", hl, hp, n->port);

    for (size_t i = 0; i < o->nseeds; i++) {
        if (strcmp(o->seeds[i], n->addr) == 0 || strcmp(o->seeds[i], o->listen) == 0)
            continue; /* ourselves */
        if (peer_by_addr(n, o->seeds[i]) == NULL && peer_new(n, "", o->seeds[i]) == NULL) {
            nng_stream_listener_free(n->listener);
            node_free(n);
            return TR_ENOMEM;
        }
    }
    if (nng_aio_alloc(&n->accept_aio, on_accept, n) != 0) {
        nng_stream_listener_free(n->listener);
        node_free(n);
        return TR_ENOMEM;
    }
    int rc = tr_system_spawn(sys, &service_behaviour, n, &n->service);
    if (rc != TR_OK) {
        nng_aio_free(n->accept_aio);
        nng_stream_listener_free(n->listener);
        node_free(n);
        return rc;
    }
    tr__remote_install(sys, &remote_ops); /* before the node is visible: see internal.h */
    atomic_store(&sys->node, n);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 0 && sys->nworkers >= (unsigned)cpus)
        tr__sched_spin_hint(sys, 8); /* nng's I/O threads need CPU time: spin less */
    nng_stream_listener_accept(n->listener, n->accept_aio);
    if (pthread_create(&n->ticker, NULL, ticker_main, n) != 0) {
        tr_node_stop(n);
        return TR_ENOMEM;
    }
    n->ticker_started = true;
    *out = n;
    return TR_OK;
}

void tr_node_stop(tr_node *n)
{
    if (n == NULL)
        return;
    tr_system *sys = n->sys;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    if (n->ticker_started)
        pthread_join(n->ticker, NULL);
    atomic_store(&sys->node, NULL);
    while (atomic_load(&sys->node_users) > 0)
        sched_yield(); /* threads that found the node before it was unhooked */
    nng_stream_listener_close(n->listener);
    nng_aio_stop(n->accept_aio);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        nng_aio_stop(pe->dial_aio);
        if (pe->dialer != NULL)
            nng_stream_dialer_close(pe->dialer);
    }
    /* close every connection, wait for the writers to let go, free them */
    pthread_mutex_lock(&n->lock);
    for (conn *c = n->conns; c != NULL; c = c->next)
        conn_mark_dead(c);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        pe->out_conn = pe->in_conn = NULL;
        if (pe->status == TR_PEER_UP)
            atomic_store(&n->by_id[pe->node_id], NULL);
        pe->status = TR_PEER_DOWN;
    }
    for (;;) {
        bool busy = false;
        for (conn *c = n->conns; c != NULL; c = c->next)
            if (c->refs > 0) {
                busy = true;
                nng_aio_cancel(c->tx); /* a send started after the close (see conn_mark_dead) */
            }
        if (!busy)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
    }
    pthread_mutex_unlock(&n->lock);
    reap(n);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        while (atomic_load(&pe->tx_busy))
            sched_yield(); /* a writer finishing its dead letters */
        nng_aio_free(pe->dial_aio);
        if (pe->dialer != NULL)
            nng_stream_dialer_free(pe->dialer);
    }
    nng_aio_free(n->accept_aio);
    nng_stream_listener_free(n->listener);
    if (n->service != TR_PID_NONE)
        tr_system_stop_actor(sys, n->service);
    node_free(n);
}


const char *tr_node_name(const tr_node *node)
{
    return node != NULL ? node->name : NULL;
}

int tr_node_port(const tr_node *node)
{
    return node != NULL ? node->port : 0;
}

const char *tr_node_address(const tr_node *node)
{
    return node != NULL ? node->addr : NULL;
}

int tr_node_peers(tr_node *n, tr_peer_info *out, size_t cap, size_t *countp)
{
    if (n == NULL || (out == NULL && cap > 0))
        return TR_EINVAL;
    size_t k = 0;
    uint64_t now = tr__now_ns();
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (pe->alias)
            continue;
        if (k < cap) {
            tr_peer_info *p = &out[k];
            snprintf(p->name, sizeof p->name, "%s", pe->name);
            snprintf(p->address, sizeof p->address, "%s", pe->addr);
            p->node_id = pe->node_id;
            p->status = (tr_peer_status)pe->status;
            if (pe->status == TR_PEER_UP && pe->in_conn != NULL &&
                now - atomic_load(&pe->in_conn->last_rx_ns) > 2 * n->hb_ns)
                p->status = TR_PEER_SUSPECT;
        }
        k++;
    }
    pthread_mutex_unlock(&n->lock);
    if (countp != NULL)
        *countp = k;
    return TR_OK;
}

int tr_node_lookup(tr_node *n, const char *name, uint16_t *node_id)
{
    if (n == NULL || name == NULL || node_id == NULL)
        return TR_EINVAL;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&n->lock);
    peer *pe = peer_by_name(n, name);
    if (pe != NULL && pe->status == TR_PEER_UP) {
        *node_id = pe->node_id;
        rc = TR_OK;
    } else if (strcmp(name, n->name) == 0) {
        *node_id = n->id;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

int tr_node_monitor(tr_node *n, tr_pid watcher, bool on)
{
    if (n == NULL || watcher == TR_PID_NONE)
        return TR_EINVAL;
    int rc = TR_OK;
    pthread_mutex_lock(&n->lock);
    size_t i;
    for (i = 0; i < n->nwatchers && n->watchers[i] != watcher; i++)
        ;
    if (on && i == n->nwatchers) {
        if (i == NODE_MAX_WATCHERS)
            rc = TR_ENOMEM;
        else
            n->watchers[n->nwatchers++] = watcher;
    } else if (!on && i < n->nwatchers) {
        n->watchers[i] = n->watchers[--n->nwatchers];
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

/* Hands a message [name, pid] to our service (from any thread). */
static int to_service(tr_node *n, uint32_t type, const char *name, tr_pid pid)
{
    tr_msg *m = name_msg(type, name, strlen(name), pid);
    if (m == NULL)
        return TR_ENOMEM;
    tr_worker *w = tr__current_worker(n->sys);
    if (w == NULL && tr__ext_enter(n->sys) != TR_OK) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    m->sender = TR_PID_NONE; /* a runtime type: tr_system_send would refuse it */
    int rc = tr__deliver(n->sys, w, n->service, m);
    if (w == NULL)
        tr__ext_leave(n->sys);
    return rc == TR_OK ? TR_OK : TR_ESTOPPED;
}

int tr_node_register(tr_node *n, const char *name, tr_pid pid)
{
    if (n == NULL || name == NULL || name[0] == '\0' || strlen(name) > TR_NAME_MAX ||
        tr_pid_node(pid) != n->id)
        return TR_EINVAL;
    if (!tr_system_alive(n->sys, pid))
        return TR_ENOPROC;
    int rc = TR_OK;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e != NULL && e->pid != pid &&
        (tr_pid_node(e->pid) != n->id || tr_system_alive(n->sys, e->pid)))
        rc = TR_EEXIST;
    else
        rc = tr__namemap_put(&n->names, name, pid);
    pthread_mutex_unlock(&n->names_lock);
    if (rc == TR_OK)
        rc = to_service(n, TR_MSG_NODE_ANNOUNCE, name, pid);
    return rc;
}

int tr_node_unregister(tr_node *n, const char *name)
{
    if (n == NULL || name == NULL || name[0] == '\0' || strlen(name) > TR_NAME_MAX)
        return TR_EINVAL;
    tr_pid pid = TR_PID_NONE;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e != NULL && tr_pid_node(e->pid) == n->id) {
        pid = e->pid;
        tr__namemap_del(&n->names, name);
    }
    pthread_mutex_unlock(&n->names_lock);
    if (pid == TR_PID_NONE)
        return TR_ENOPROC;
    return to_service(n, TR_MSG_NODE_RETRACT, name, pid);
}

int tr_node_whereis(tr_node *n, const char *name, tr_pid *out)
{
    if (n == NULL || name == NULL || out == NULL)
        return TR_EINVAL;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e != NULL && (tr_pid_node(e->pid) != n->id || tr_system_alive(n->sys, e->pid))) {
        *out = e->pid;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&n->names_lock);
    return rc;
}

/* 64-bit FNV-1a then a finaliser: the weight of (node, key) for rendezvous hashing. */
static uint64_t weight(const char *node, const void *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = node; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    h = (h ^ 0xff) * 0x100000001b3ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ ((const uint8_t *)key)[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

int tr_node_place(tr_node *n, const void *key, size_t len, char name[65], uint16_t *node_id)
{
    if (n == NULL || (key == NULL && len > 0))
        return TR_EINVAL;
    pthread_mutex_lock(&n->lock);
    const char *best = n->name;
    uint16_t best_id = n->id;
    uint64_t bw = weight(n->name, key, len);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (pe->alias || pe->status != TR_PEER_UP)
            continue;
        uint64_t w = weight(pe->name, key, len);
        if (w > bw || (w == bw && strcmp(pe->name, best) < 0)) {
            bw = w;
            best = pe->name;
            best_id = pe->node_id;
        }
    }
    if (name != NULL)
        snprintf(name, 65, "%s", best);
    if (node_id != NULL)
        *node_id = best_id;
    pthread_mutex_unlock(&n->lock);
    return TR_OK;
}

void tr_node_stats_get(tr_node *n, tr_node_stats *o)
{
    if (n == NULL || o == NULL)
        return;
    o->writes = atomic_load(&n->writes);
    o->frames_in = atomic_load(&n->frames_in);
    o->msgs_out = atomic_load(&n->msgs_out);
    o->msgs_in = atomic_load(&n->msgs_in);
    o->refused_auth = atomic_load(&n->refused_auth);
    o->bad_frames = atomic_load(&n->bad_frames);
    o->queue_full = atomic_load(&n->queue_full);
    o->no_route = atomic_load(&n->no_route);
    o->lost = atomic_load(&n->lost);
    o->peers_down = atomic_load(&n->peers_down);
}
