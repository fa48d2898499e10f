/*
 * node_impl.h — what the node layer's files share (private to runtime/src/dist/): its limits, the
 * node service's message types, and the three objects — the node, a peer (another node we know),
 * a connection (one TCP stream to or from a peer) — with the functions one file calls in another.
 *
 *   node.c     the node's lifecycle (start, stop, free), its public getters and counters
 *   conn.c     connections: the handshake, receiving and decoding frames, the writer that
 *              batches messages to a peer, accepting and dialing
 *   members.c  membership and failure detection: peers learnt and lost, the ticker (heartbeats,
 *              down detection, redials, reaping), links and monitors across nodes, watchers
 *   names.c    the node service (remote spawn, global names) and placement (tr_node_place)
 *   tls.c      TLS between nodes: the files read at start, nng's TLS configs for the listener
 *              and each dialer
 *   nodectl.c  the node's side of the introspection service (core/ctl.c): what it asks of the
 *              node (members, counters, cluster names), and tr_node_ctl
 *   nodegossip.c  with tr_node_opts.monitors > 0: membership and failure detection by the
 *              gossip core (gossip.c) instead of the full mesh, and lazy connections
 *
 * Hidden nodes (tr_node_opts.hidden: troupectl) dial one member and use that one connection both
 * ways (conn.duplex); the member keeps them as peers marked `hidden`, which membership leaves out
 * everywhere (gossip, tr_node_peers, placement, watchers, names) and forgets when they go.
 *
 * Locking: n->lock guards the peer table, the connection list, watchers and behaviours (a
 * function named *_locked, or whose comment says "lock held", expects it held); n->names_lock the
 * name map; a peer's queue is an MPSC queue its writer (tx_busy) drains.
 */
#ifndef TROUPE_DIST_NODE_IMPL_H
#define TROUPE_DIST_NODE_IMPL_H

#include "troupe/node.h"
#include "core/idmap.h"
#include "core/registry.h"
#include "wire.h"

#include <nng/nng.h>
#include <stdbool.h>

#define NODE_MAX_FRAME_DEFAULT (4u * 1024u * 1024u)
#define NODE_QUEUE_DEFAULT 65536u
#define NODE_BATCH_DEFAULT (256u * 1024u)
#define NODE_MAX_PEERS 256u
#define NODE_MAX_CONNS 1024u        /* connections at once, authenticated or not */
#define NODE_MAX_POLLS 16u          /* polled connections: TR_GOSSIP_MONITORS_MAX (conn.c checks) */
#define NODE_MAX_WATCHERS 4096u
#define NODE_MAX_BEHAVIOURS 256u
#define NODE_HANDSHAKE_MS 5000u     /* a connection not authenticated by then is dropped */
#define NODE_BEAT_MAX 512u          /* a beat frame above this goes the usual way */
#define NODE_SWEEP_MS 1000u         /* with monitors, the ticker walks its peers this often */
#define NODE_HANDSHAKE_FRAME 1024u  /* a frame before authentication, at most (HELLO and AUTH are
                                     * < 300 bytes): what a stranger can make us allocate */
#define NODE_SEND_TIMEOUT_MS 10000  /* one write not done by then: the connection is dropped */
#define NODE_RX_CHUNK (64u * 1024u)
#define NODE_RX_KEEP (1024u * 1024u) /* a receive buffer grown past this shrinks back after */
#define NODE_DEFER_MAX 256u /* messages queued for a peer before its write starts mid-batch */
#define NODE_TX_INLINE 16u /* writes a writer makes inline in a row (conn.c, tx_pump) */
#define NODE_RD_AFTER 64u /* receives through nng before an inbound connection goes to the
                           * node's reader (conn.c, "The reader") */
#define NODE_RX_TURNS 32u /* actor turns run on the receiving thread per receive (conn.c) */
#define NODE_MAX_LEFT 64u           /* nodes remembered as left (tombstones), oldest replaced */
#define NODE_MAX_HIDDEN 16u         /* hidden nodes (troupectl) connected at once */

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
    nng_aio *txs;               /* the writer's small sends from the ticker: no callback, so
                                 * one that completes at once wakes no nng thread (conn.c) */
    nng_aio *rxs;               /* the ticker's reads of a polled connection (no callback) */
    atomic_bool polled;         /* with monitors: a connection we dialed to a member we watch,
                                 * which beats to us on it; no receive is kept posted on it, the
                                 * ticker reads it every tick (conn.c, "Beats"); the ticker
                                 * flips it as the watched set changes */
    atomic_bool rx_out;         /* a receive (rx, with its callback) is posted or running: the
                                 * ticker does not read the connection meanwhile */
    _Atomic(peer *) pe;         /* outbound: the peer dialed; inbound: set once authenticated
                                 * (or later by the ticker, under the node lock, for one kept
                                 * unattached: the reader reads it without the lock) */
    bool outbound;
    bool duplex;                /* a hidden node's connection: used both ways (either side) */
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
    size_t rneed;               /* polled: the size the next read needs room for */
    int fd;                     /* polled: the stream's socket, read with recv(2) by the ticker
                                 * (conn.c, "Beats"); -1: not looked up yet, -2: not found */
    uint32_t rx_done;           /* inbound: receives completed through nng (on_rx's) */
    bool rd_reg;                /* inbound: read by the node's reader thread (conn.c, "The
                                 * reader"), which holds a reference for it (node lock) */
    bool auth_posted;           /* inbound: our AUTH's write is posted (node lock): what the
                                 * ticker writes here goes after it */
    tr_wire_buf out;            /* the write under way (the writer's) */
    size_t out_off;
    tr_wire_buf hsbuf;          /* a handshake write */
    tr_guest *guest;            /* inbound: runs the actors its frames wake, on nng's thread */
} conn;

struct peer {
    char name[TR_WIRE_NAME_MAX + 1];    /* "" until a seed says who it is */
    char addr[TR_WIRE_ADDR_MAX + 1];
    bool alias;                 /* a seed that turned out to be ourselves or a known peer, or a
                                 * forgotten member: inert, its slot reusable once idle */
    bool seed;                  /* from the node's own seeds: never forgotten */
    bool hidden;                /* a hidden node (no address, one duplex connection): not a
                                 * member; forgotten when it goes */
    bool ever_up;               /* was up at least once (since it was learnt) */
    uint64_t learned_ns;        /* when it was learnt */
    int status;                 /* TR_PEER_DOWN / TR_PEER_UP (we can send to it) */
    bool joining;               /* it connected to us and we are dialing back: sends are held */
    uint64_t joining_ns;        /* since when */
    uint16_t node_id;
    uint64_t incarnation;
    uint64_t ginc;              /* with monitors: its incarnation as the core said when it came
                                 * up (which of two members with one node id keeps it) */
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
    _Atomic int leave_pending;  /* our node is leaving: a LEAVE goes after what is queued */
    /* counted for metrics (node.c's collector) */
    _Atomic uint64_t msgs_out, msgs_in, bytes_out, bytes_in, ups;
    /* with monitors (nodegossip.c; node lock) */
    bool gkick;                 /* in n->gkick: its writer is kicked once the lock is released */
    bool gsuspect;              /* the core holds it suspect (tr_node_peers says so) */
    uint8_t beat[NODE_BEAT_MAX];  /* the core's beat to it, framed, for the ticker to write on
                                   * the connection it dialed to us (beat_len 0: none) */
    uint16_t beat_len;
    bool beat_listed;           /* in n->beats */
    tr_node *n;
};

/* A node's TLS settings, its files read at start (tls.c). */
typedef struct node_tls {
    char *cert, *key, *ca;      /* PEM text, NUL-terminated; ca NULL when nothing is verified */
    size_t key_len;             /* the key is wiped when freed */
    tr_tls_verify verify;
    char *server_name;          /* NULL: the host of the address dialed */
} node_tls;
/* A node that left the cluster (a LEAVE): listed as left by tr_node_peers, and not learnt again
 * from others' gossip, for forget_after_ms — unless it connects to us itself (it came back). */
typedef struct left_entry {
    char name[TR_WIRE_NAME_MAX + 1]; /* "" : a free entry */
    char addr[TR_WIRE_ADDR_MAX + 1];
    uint16_t node_id;
    uint64_t at_ns;
} left_entry;

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
    uint64_t forget_ns;         /* forget_after_ms */
    uint64_t leave_ns;          /* leave_ms */
    bool quiet;
    bool hidden;                /* this node is hidden: no listener, dials its seeds only */
    node_tls *tls;              /* NULL: plain TCP */
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
    tr_pid ctl;                 /* the introspection service (core/ctl.c) */
    uint64_t hs_log_ns;         /* inbound handshake failures: one log line a second (lock) */
    uint64_t hs_suppressed;
    pthread_mutex_t names_lock;
    tr_namemap names;           /* cluster-wide names, as this node knows them */
    _Atomic bool stopping;      /* set under lock; read anywhere */
    _Atomic bool leaving;       /* tr_node_stop is telling its peers (before stopping): no new
                                 * sends, dials or connections */
    left_entry left[NODE_MAX_LEFT];
    bool ticker_started;        /* the tick is the timer thread's hook */
    uint64_t last_tick_ns;      /* the ticker's (a longer gap: this node was paused) */
    /* partial monitoring (nodegossip.c; node lock): NULL gossip = the full mesh */
    unsigned monitors;
    uint64_t idle_close_ns;
    struct tr_gossip *gossip;
    struct ng_after *gaf_head, **gaf_tail; /* the core's up/down events, to run unlocked */
    peer *gkick[NODE_MAX_PEERS];           /* peers the core queued frames for */
    peer *beats[NODE_MAX_PEERS];           /* peers the core left a beat for (ticker) */
    size_t nbeats;
    tr_wire_buf beatbuf;                   /* where a beat is framed (node lock) */
    size_t ngkick;
    uint64_t next_seed_join_ns;            /* seeds not held up are joined again then */
    uint64_t next_sweep_ns;                /* the ticker's walk over peers and connections */
    bool sweep_soon;                       /* a connection or peer in a hurry (handshakes,
                                            * hidden peers' pings): walk every tick */
    int rd_ep;                             /* the reader's epoll set; -1: no reader, inbound
                                            * connections are read through nng */
    int rd_wake;                           /* eventfd: a registered connection died, or stop */
    pthread_t rd_thread;
    bool rd_on;                            /* the reader takes connections (node lock) */
    _Atomic bool rd_stop;
    conn *polls[NODE_MAX_POLLS];          /* the ticker's polled connections, a reference
                                            * held on each (tr__conn_poll; ticker only) */
    size_t npolls;
    uint64_t polls_gen;                    /* the core's ring generation they were found at */
    bool polls_short;                      /* a watched member had no polled connection then:
                                            * look again at the next tick */
    peer *name_cache[64];                  /* tr__peer_by_name's last answers, by a hash of
                                            * the name (checked on use: peers live as long
                                            * as the node) */
    _Atomic bool id_taken;                 /* a member that started first has our node id:
                                            * the cluster refuses this node (tr_node_stats) */
    bool id_taken_told;                    /* ... and the watchers were told (the tick) */
    char id_holder[TR_WIRE_NAME_MAX + 1];    /* ... that member's name (lock) */
    _Atomic bool reap_pending;             /* a connection was marked dead: the ticker's
                                            * reaper walks the list until it is freed */
    _Atomic uint64_t writes, frames_in, msgs_out, msgs_in, refused_auth, bad_frames, queue_full,
        no_route, lost, peers_down, peers_forgotten, tls_failed, peers_left,
        dials, writes_inline, reader_conns;
};

static inline void count(_Atomic uint64_t *c, uint64_t k)
{
    atomic_fetch_add_explicit(c, k, memory_order_relaxed);
}

/* The node service's pid on node node_id (slot 0, generation 0: never an actor's). */
static inline tr_pid service_pid(uint16_t node_id)
{
    return (tr_pid)node_id << 48;
}

/* What a peer going down (or coming up) leaves to do once the lock is released. */
typedef struct after {
    peer *kick[2];
    int nkick;
    bool down;                  /* notify interested actors (and watchers if down_watchers) */
    bool down_watchers;
    bool left;                  /* it left (a LEAVE), not lost: said to watchers */
    char name[TR_WIRE_NAME_MAX + 1];
    uint16_t node_id;
    tr_idmap interest;
    bool up;                    /* notify watchers of a peer up */
    bool pull;                  /* and it was up before: ask for its names again (ours were
                                 * dropped when it went down; it may have seen nothing) */
} after;

/* ---- node.c ------------------------------------------------------------------------------- */

/* One log line on stderr, "troupe node NAME: ...", unless the node is quiet. */
TR_HIDDEN void tr__node_log(const tr_node *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same at a level other than info (a line starting "NAME: "). */
TR_HIDDEN void tr__node_log_at(const tr_node *n, tr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* len random bytes (getrandom; the clock if that fails). */
TR_HIDDEN void tr__random_bytes(void *p, size_t len);

/* ---- conn.c ------------------------------------------------------------------------------- */

/* Frees a connection nothing uses any more (dead, no writer; the ticker's reap). */
TR_HIDDEN void tr__conn_destroy(conn *c);
/* Marks a connection closed (lock held; NULL is nothing). The stream is closed at once — nng
 * completes its pending operations on its own threads, never inside this call — because once
 * dead and unreferenced, the ticker may free it as soon as the lock is released. */
TR_HIDDEN void tr__conn_mark_dead(conn *c);
/* Drops a connection: a protocol error, a closed stream, a timeout (lock not held). */
TR_HIDDEN void tr__conn_fail(conn *c, const char *why);
/* Queues a control frame for a peer's writer: kind PING, or MEMBERS. Lock held. (A LEAVE is
 * not a control frame: it goes after the messages queued, see peer->leave_pending.) */
TR_HIDDEN void tr__peer_ctl_queue(tr_node *n, peer *pe, unsigned kind);
/* Appends len bytes to pe's control frames: framed as `kind`, or as they are (kind 0: already a
 * whole frame), bounded as every control frame (64 KiB queued at most; false, nothing added,
 * past it). The caller kicks pe's writer. */
TR_HIDDEN bool tr__peer_ctl_append(peer *pe, unsigned kind, const void *bytes, size_t len);
/* Turns everything queued towards pe into dead letters (no connection to send it on). */
TR_HIDDEN void tr__peer_drop_queue(peer *pe);
/* Makes sure a writer runs for pe. */
TR_HIDDEN void tr__peer_kick(peer *pe);
/* The transport seam's route (core/internal.h): queues m for the node that owns `to`. */
TR_HIDDEN int tr__node_route(tr_system *sys, tr_pid to, tr_msg *m);
/* nng callbacks: a connection accepted on the listener; a dial to a peer completed. */
TR_HIDDEN void tr__node_on_accept(void *arg);
TR_HIDDEN void tr__node_on_dial(void *arg);
/* Starts a dial to pe (lock held). */
TR_HIDDEN void tr__node_dial_start(tr_node *n, peer *pe);

/* ---- tls.c -------------------------------------------------------------------------------- */

/* Reads and checks the files of `o` into n->tls (NULL o: plain TCP, nothing done). TR_EINVAL with
 * a log line naming the file (unless n->quiet), TR_ENOMEM. */
TR_HIDDEN int tr__tls_load(tr_node *n, const tr_node_tls *o);
/* Frees n->tls (the key wiped). */
TR_HIDDEN void tr__tls_free(tr_node *n);
/* The URL nng is given for a tcp:// address: "tls+tcp://..." with TLS, the address otherwise. */
TR_HIDDEN void tr__tls_url(const tr_node *n, const char *addr, char *out, size_t cap);
/* Gives a listener / a dialer to `addr` its TLS config (server / client). TR_OK at once without
 * TLS; an nng error code otherwise. */
TR_HIDDEN int tr__tls_listener(tr_node *n, nng_stream_listener *l);
TR_HIDDEN int tr__tls_dialer(tr_node *n, nng_stream_dialer *d, const char *addr);

/* ---- members.c ---------------------------------------------------------------------------- */

/* The peer of that name or address, NULL if none (lock held; aliases are skipped). */
TR_HIDDEN peer *tr__peer_by_name(tr_node *n, const char *name);
TR_HIDDEN peer *tr__peer_by_addr(tr_node *n, const char *addr);
/* A new peer in the table (lock held); NULL when the table is full or memory is short. */
TR_HIDDEN peer *tr__peer_new(tr_node *n, const char *name, const char *addr);
/* Forgets the members learnt from others that were never up within forget_after_ms (lock held). */
TR_HIDDEN void tr__peer_forget_stale(tr_node *n, uint64_t now);
/* Learns that node `name` listens at `addr` (lock held): `direct` from its own HELLO (it
 * connected to us: a node that had left is back), else from a MEMBERS frame (gossip, which does
 * not bring back a node that left within forget_after_ms). When the table is full, a member never
 * reached makes room. */
TR_HIDDEN void tr__peer_learn(tr_node *n, const char *name, const char *addr, bool direct);
/* A new hidden peer (lock held): no address, not gossiped; NULL when the table is full. */
TR_HIDDEN peer *tr__peer_new_hidden(tr_node *n, const char *name);
/* Takes pe down (lock held): unpublished, its names swept, its connections closed, its redial
 * scheduled; what must be done without the lock is left in af (tr__node_after_run). */
TR_HIDDEN void tr__peer_down_locked(tr_node *n, peer *pe, after *af);
/* pe sent LEAVE (lock held): taken down as tr__peer_down_locked does, but said to have left; then
 * forgotten — never redialed, its slot reusable — and remembered as left (a tombstone). A seed
 * keeps its address: it is dialed again as a seed not yet reached, at reconnect_max_ms. */
TR_HIDDEN void tr__peer_left_locked(tr_node *n, peer *pe, after *af);
/* Whether `name` left (a tombstone; lock held). */
TR_HIDDEN bool tr__left_known(tr_node *n, const char *name);
/* Whether the incarnation of `name` with node_id is the one that left (lock held). */
TR_HIDDEN bool tr__left_incarnation(tr_node *n, const char *name, uint16_t node_id);
/* Forgets that `name` left (lock held): it is back. */
TR_HIDDEN void tr__left_clear(tr_node *n, const char *name);
/* Does what af holds, the lock released: kicks writers (dead letters), NODEDOWN signals to the
 * interested actors, NODEDOWN / NODEUP to watchers, a name sync with a peer up. */
TR_HIDDEN void tr__node_after_run(tr_node *n, after *af);
/* Frees dead, unreferenced connections (lock held). */
TR_HIDDEN void tr__node_reap(tr_node *n);
/* The ticker (lock NOT held): reads what the polled connections hold (conn.c, "Beats"). */
TR_HIDDEN void tr__conn_poll(tr_node *n);
/* Lets go of what tr__conn_poll holds (tr_node_stop, once the ticker has stopped; lock held). */
TR_HIDDEN void tr__conn_polls_drop_locked(tr_node *n);
/* The reader (conn.c): a thread that reads the node's inbound plain-TCP connections itself once
 * they are up. Start: none when it cannot (TLS, no epoll): inbound connections are read through
 * nng. Stop (tr_node_stop, before the connections close): joins it; it lets go of them. */
TR_HIDDEN void tr__conn_reader_start(tr_node *n);
TR_HIDDEN void tr__conn_reader_stop(tr_node *n);
/* The ticker (lock NOT held): writes the beats the core left (tr__ng_tick_locked). */
TR_HIDDEN void tr__conn_beats_flush(tr_node *n);
/* The ticker: one tick of heartbeats, failure detection, dials, reaping — the hook the node sets
 * on the runtime's timer thread (core/timer.c, tr__timer_hook_set); returns the ns until the
 * next tick. */
TR_HIDDEN uint64_t tr__node_tick(void *arg);
/* Wakes the ticker (its next tick comes at once) and whoever waits on n->cond (lock held or not). */
TR_HIDDEN void tr__node_wake(tr_node *n);
/* The transport seam's interest and forget (core/internal.h). */
TR_HIDDEN int tr__node_interest(tr_system *sys, uint16_t node_id, tr_pid local);
TR_HIDDEN void tr__node_forget(tr_system *sys, tr_pid local);

/* ---- nodegossip.c (monitors > 0) ---------------------------------------------------------- */

/* Starts the gossip core (before the ticker and the listener's first accept) when
 * o->monitors > 0 and the node is not hidden; TR_OK at once otherwise. */
TR_HIDDEN int tr__ng_start(tr_node *n, const tr_node_opts *o);
TR_HIDDEN void tr__ng_free(tr_node *n);
/* Runs what the core's calls left (lock NOT held): writers to kick, NODEUP / NODEDOWN. */
TR_HIDDEN void tr__ng_flush(tr_node *n);
/* A GOSSIP frame from the peer on inbound connection c (lock not held; flushes). TR_EBADMSG:
 * malformed. */
TR_HIDDEN int tr__ng_receive(tr_node *n, conn *c, const uint8_t *frame, size_t len);
/* The connection we dialed to pe broke, or a dial failed — refused: nothing listens at its
 * address (lock held). */
TR_HIDDEN void tr__ng_unreachable_locked(tr_node *n, peer *pe, bool refused);
/* Whether this node watches the member called name (lock held). */
TR_HIDDEN bool tr__ng_watches_locked(tr_node *n, const char *name);
/* The ticker's part (lock held): the core's tick; with `sweep`, also seeds joined again and idle
 * connections closed. */
TR_HIDDEN void tr__ng_tick_locked(tr_node *n, uint64_t now_ns, bool sweep);
/* A writer found no connection to pe (lock held): true when a connection is being dialed (what
 * is queued waits for it), false when there is none to wait for (it becomes dead letters). */
TR_HIDDEN bool tr__ng_lazy_dial_locked(tr_node *n, peer *pe);
/* tr_node_stop: tells the cluster this node leaves (gossip), waits at most leave_ms for it to
 * spread. */
TR_HIDDEN void tr__ng_leave(tr_node *n);

/* ---- nodectl.c ---------------------------------------------------------------------------- */

/* Starts / stops the node's introspection service (tr_node_start / tr_node_stop); the stop
 * waits up to 5 s for it to end, and says whether it did. */
TR_HIDDEN int tr__node_ctl_start(tr_node *n);
TR_HIDDEN bool tr__node_ctl_stop(tr_node *n);

/* ---- names.c ------------------------------------------------------------------------------ */

/* The node service's behaviour (spawned by tr_node_start). */
extern TR_HIDDEN const tr_behaviour tr__node_service_behaviour;

#endif
