/**
 * @file
 * troupe/node.h — nodes: systems that reach each other over TCP (nng streams), so that tr_send
 * to a pid of another node is the same call as to a local one.
 *
 * A node has a name, unique in its cluster, and a listen address. Its pids carry its node id
 * (tr_system_opts.node_id), which must differ from every other node's: give each incarnation a
 * fresh one (tr_node_random_id) so pids of an earlier incarnation are stale everywhere (sends
 * to them fail with TR_ENOPROC). Nodes prove to each other that they hold the cluster secret by
 * HMAC challenge-response (the secret is never sent), tell each other about the nodes they know
 * (so every node connects to every other), send heartbeats, and declare a peer down when its
 * connection breaks or stays silent too long: local actors linked to or monitoring its actors
 * then get EXIT / DOWN with reason TR_REASON_NOCONNECTION.
 *
 * With TLS (tr_node_opts.tls), every connection a node accepts or dials is TLS (nng's tls+tcp,
 * mbedTLS) and the secret's handshake runs inside it: TLS gives integrity and confidentiality and,
 * with certificates verified, says which machines may connect; the secret still proves membership.
 *
 * Delivery between nodes keeps each sender -> receiver pair in order and is at most once:
 * messages in flight when a connection breaks are lost, as in distributed Erlang.
 *
 * A hidden node (tr_node_opts.hidden; troupectl is one) joins no cluster: it dials its seeds
 * only, over one connection each that carries both directions, and the nodes it reaches keep it
 * out of everything membership does — it is not gossiped, listed, placed, told names or reported
 * to watchers, and is forgotten when it goes. It is how a tool asks a node's introspection
 * service (tr_node_ctl) about the node.
 */
#ifndef TROUPE_NODE_H
#define TROUPE_NODE_H

#include "troupe.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

/** A node: a system reachable by other nodes over TCP (opaque). */
typedef struct tr_node tr_node;

/** What happens to a send when the queue towards a peer is full. */
typedef enum tr_node_overflow {
    TR_NODE_REJECT = 0, /**< the send fails with TR_EFULL (default) */
    TR_NODE_DROP,       /**< the message is dropped and counted; the send succeeds */
} tr_node_overflow;

/** How a node with TLS checks its peers' certificates (tr_node_tls.verify). A certificate is
 * "valid" when it chains to the CA of tr_node_tls.ca and is in date. */
typedef enum tr_tls_verify {
    TR_TLS_VERIFY_REQUIRED = 0, /**< mutual (default): the dialer checks the acceptor's certificate
                                 * is valid and names the host dialed (or server_name); the
                                 * acceptor demands a valid certificate from the dialer */
    TR_TLS_VERIFY_OPTIONAL,     /**< the dialer checks the acceptor's certificate as above; the
                                 * acceptor asks for none (membership rests on the secret alone) */
    TR_TLS_VERIFY_NONE,         /**< no certificate is checked: encryption against a passive
                                 * listener only (an active man in the middle goes unnoticed) */
} tr_tls_verify;

/** TLS between nodes. Every node of a cluster must use it, or none: a plain node and a TLS node
 * cannot talk. The files are read (and checked) by tr_node_start; a file missing, unreadable or
 * malformed, a key others may read or one that does not match the certificate stops the start
 * (TR_EINVAL, a log line naming the file). An expired certificate of its own only warns: the
 * node starts, and its peers refuse it. */
typedef struct tr_node_tls {
    const char *cert;           /**< PEM file: this node's certificate (intermediates may follow) */
    const char *key;            /**< PEM file: its private key, unencrypted; refused when its mode
                                 * lets group or others read it (chmod 600) */
    const char *ca;             /**< PEM file: the CA certificate(s) peers' certificates must chain
                                 * to; may be NULL with TR_TLS_VERIFY_NONE */
    tr_tls_verify verify;       /**< how peers' certificates are checked (default: required) */
    const char *server_name;    /**< the name every acceptor's certificate must carry (one name for
                                 * the whole cluster); NULL: the host of the address dialed */
} tr_node_tls;

/** A node's options (the cluster file gives them: troupe/config.h). */
typedef struct tr_node_opts {
    const char *name;           /**< this node's name, 1..64 bytes, unique in the cluster */
    const char *listen;         /**< "tcp://HOST:PORT" to accept connections on (port 0: any); with
                                 * tls set, connections to it are TLS (addresses stay tcp://).
                                 * Ignored (may be NULL) for a hidden node */
    const char *secret;         /**< the cluster secret, at least 8 bytes */
    const char *const *seeds;   /**< addresses of nodes to join through (tcp://HOST:PORT) */
    size_t nseeds;              /**< how many in seeds */
    size_t max_frame;           /**< largest frame accepted, bytes; 0 = 4 MiB */
    size_t peer_queue;          /**< messages queued towards one peer at most; 0 = 65,536 */
    tr_node_overflow overflow;  /**< when that queue is full */
    size_t batch_bytes;         /**< most bytes of messages coalesced in one write; 0 = 256 KiB */
    unsigned heartbeat_ms;      /**< a heartbeat when nothing else was sent for this long; 0 = 200 */
    unsigned down_after_ms;     /**< silence after which a peer is down; 0 = 1,000 */
    unsigned reconnect_min_ms;  /**< first reconnect delay (doubles each try); 0 = 10 */
    unsigned reconnect_max_ms;  /**< its cap; 0 = 2,000 */
    unsigned forget_after_ms;   /**< a member learnt from others (not a seed) that was never up this
                                 * long is forgotten (no more dials); 0 = 60,000. With the peer
                                 * table full (256), such members make room for new ones at once */
    unsigned leave_ms;          /**< tr_node_stop waits this long at most for its peers to hear that
                                 * it leaves; 0 = 500 */
    bool quiet;                 /**< no log lines on stderr */
    const tr_node_tls *tls;     /**< TLS on every connection (read during tr_node_start only);
                                 * NULL: plain TCP */
    bool hidden;                /**< a hidden node (see above): it listens on nothing, dials only
                                 * its seeds (at least one), learns no other member; the nodes it
                                 * reaches answer it on its own connection. Its name must not be
                                 * a member's; at most 16 hidden nodes per node at once */
    unsigned monitors;          /**< 0 (the default): the full mesh — every node connects to and
                                 * heartbeats every other. 1..16: partial monitoring (issue 22,
                                 * docs/distribution.md "Scaling out"): membership and failure
                                 * detection by gossip, each node pinged by this many others on a
                                 * ring, connections opened when needed. Every node of a cluster
                                 * should use the same setting. Ignored by a hidden node */
    unsigned idle_close_ms;     /**< with monitors > 0: a connection this node dialed that carried
                                 * nothing for this long is closed (reopened when a message needs
                                 * it); 0 = 10,000 */
} tr_node_opts;

/** A random node id in [2, 65535] for a new incarnation of a node. */
uint16_t tr_node_random_id(void);
/** Makes the started system `sys` a node: listens, then joins through the seeds. One per system. */
int tr_node_start(tr_system *sys, const tr_node_opts *opts, tr_node **out);
/** Leaves the cluster, closes every connection and frees the node; call before tr_system_free.
 * Leaving: new sends to other nodes fail (TR_ENOPROC) from the call on; each peer up is sent what
 * was queued for it, then a LEAVE, and the call waits (leave_ms, 500 ms, at most in all) for
 * each to close its connections, its sign that it heard: those peers see this node "left"
 * (TR_MSG_NODEDOWN with `left` 1, no redial), the others see it down. Messages still queued then
 * become dead letters. The node's memory is freed: actors that use it — the routers of shards
 * and singletons placed by it — must have ended first (stop and join the system, as the apps
 * do, before tr_node_stop). */
void tr_node_stop(tr_node *node);

/** This node's name. */
const char *tr_node_name(const tr_node *node);
/** The TCP port the node listens on (useful with port 0 in the listen address). */
int tr_node_port(const tr_node *node);
/** The address other nodes reach this one at ("tcp://127.0.0.1:7101"). */
const char *tr_node_address(const tr_node *node);

/** A peer's state as this node sees it (tr_node_peers). */
typedef enum tr_peer_status {
    TR_PEER_DOWN = 0,   /**< not connected: reconnecting with backoff */
    TR_PEER_UP,         /**< connected and authenticated: messages flow */
    TR_PEER_SUSPECT,    /**< up, but silent for more than two heartbeats */
    TR_PEER_LEFT,       /**< it left the cluster (tr_node_stop): not redialed; listed so for
                         * forget_after_ms, then forgotten, unless it joins again */
} tr_peer_status;

/** A peer, as tr_node_peers lists it. */
typedef struct tr_peer_info {
    char name[65];      /**< empty while a seed has not said who it is */
    char address[129];  /**< where it listens (tcp://HOST:PORT) */
    uint16_t node_id;   /**< of its current (or last) incarnation; 0 if never connected */
    tr_peer_status status; /**< up, suspect, down or left */
} tr_peer_info;

/** Copies up to `cap` peers into out; *count gets how many there are. */
int tr_node_peers(tr_node *node, tr_peer_info *out, size_t cap, size_t *count);
/** The node id of the peer called `name` while it is up (TR_ENOPROC otherwise). */
int tr_node_lookup(tr_node *node, const char *name, uint16_t *node_id);
/** Waits up to timeout_ms for the peer called `name` to be up (this node's own name: at once),
 * then gives its node id as tr_node_lookup does: TR_OK, TR_ETIMEDOUT, or TR_ESTOPPED when the
 * node is stopping. Blocks: not from an actor (use tr_node_monitor there), and not while another
 * thread stops the node. */
int tr_node_wait_peer(tr_node *node, const char *name, unsigned timeout_ms, uint16_t *node_id);

/** Delivered to node watchers (tr_node_monitor): payload = name (str), node id (u64), and for
 * TR_MSG_NODEDOWN a third item, left (u64): 1 when the peer left the cluster (it stopped:
 * tr_node_stop), 0 when it was lost (its connection broke or went silent); corr = id. A watcher
 * that reads only the first two items treats both alike, as before LEAVE existed. */
#define TR_MSG_NODEUP (TR_MSG_SYSTEM + 6)
#define TR_MSG_NODEDOWN (TR_MSG_SYSTEM + 7) /**< a peer went down or left (see TR_MSG_NODEUP) */
/** Delivered to node watchers (tr_node_monitor) once, when the cluster refuses this node for its
 * node id (with monitors: a member that started first has it; tr_node_stats.id_taken is 1 from
 * then on): payload = the holder's name (str), the node id (u64); corr = the node id. The node
 * stays up but no member talks to it: whoever runs it stops it and starts it with another id. */
#define TR_MSG_NODE_ID_TAKEN (TR_MSG_SYSTEM + 11)
/** Starts (on) or stops sending `watcher` a TR_MSG_NODEUP / TR_MSG_NODEDOWN for every peer that
 * comes up or goes down, and TR_MSG_NODE_ID_TAKEN if the cluster refuses this node's id. Changes
 * from this call on: peers already up are not told of (tr_node_peers lists them; a node that
 * joins a cluster may see dozens up before its caller gets here). */
int tr_node_monitor(tr_node *node, tr_pid watcher, bool on);

/** Registers behaviour b under `name` so other nodes can spawn it (tr_node_spawn). Its init gets
 * as `arg` a `const tr_msg *` holding the spawner's arguments. */
int tr_node_register_behaviour(tr_node *node, const char *name, const tr_behaviour *b);
/** Spawns behaviour `behaviour` on the node called `peer` (this node's own name spawns here)
 * with `args` (may be NULL; not consumed) and waits up to timeout_ms for its pid. Not from an
 * actor. TR_ENOPROC: no such node up; TR_EINVAL: no such behaviour there. */
int tr_node_spawn(tr_node *node, const char *peer, const char *behaviour, const tr_msg *args,
                  unsigned timeout_ms, tr_pid *out);

/** Cluster-wide names. Every node keeps a copy of the table, kept in step by messages between
 * the nodes' services: registering tells every node up; a node coming up gets the names of each
 * node it meets; a name is released when its actor ends or its node goes down. Two nodes that
 * give one name to different actors while apart (a partition, or at the same moment) settle it
 * the same way everywhere once they meet — the smaller pid keeps it — and the loser is sent a
 * TR_MSG_NAME_LOST (payload: the name). */
#define TR_MSG_NAME_LOST (TR_MSG_SYSTEM + 8)
/** Gives the local live actor `pid` a cluster-wide name (1..255 bytes). TR_EEXIST if this node
 * knows it is taken. */
int tr_node_register(tr_node *node, const char *name, tr_pid pid);
/** Removes a cluster-wide name held by one of this node's actors (TR_ENOPROC if none). */
int tr_node_unregister(tr_node *node, const char *name);
/** The holder of a cluster-wide name as this node knows it (TR_ENOPROC if none). */
int tr_node_whereis(tr_node *node, const char *name, tr_pid *out);

/** Picks the node that owns `key` among this node and the peers up (rendezvous hashing): every
 * node with the same view picks the same one, and a change of membership moves only the keys of
 * the node that came or went. Copies its name (65 bytes) and node id. */
int tr_node_place(tr_node *node, const void *key, size_t len, char name[65], uint16_t *node_id);
/** Like tr_node_place, as if the node called `without` (this node or a peer; NULL: none) were not
 * there: the key's next owner in rendezvous order. TR_ENOPROC when no node is left. */
int tr_node_place_without(tr_node *node, const void *key, size_t len, const char *without,
                          char name[65], uint16_t *node_id);
/** Like tr_node_place, as if the nwithout nodes named in `without` (this node or peers) were not
 * there: who owned the key for a node that could not see them. TR_ENOPROC when no node is left. */
int tr_node_place_excluding(tr_node *node, const void *key, size_t len, const char *const *without,
                            size_t nwithout, char name[65], uint16_t *node_id);

/** A request to a node's introspection service (tr_node_ctl), every node runs one. The payload
 * is a msgpack map: "cmd" (str) names the command — "nodes", "top", "tree", "limits",
 * "limits_set", "kill", "stats", "ping" — and the other keys are its arguments; the answer is a
 * map with "rc" (a TR_E* code, 0 on success), "error" (a line saying what failed, when rc is not
 * 0) and the command's results. docs/operating.md lists every command, its arguments and its
 * answer. Answers are bounded (at most 100 rows of top, 200 supervisors of 50 children each,
 * 64 actors of limits, and 256 KiB in all, with "truncated" set when something was left out),
 * so nothing a client asks makes a node grow. */
#define TR_MSG_CTL (TR_MSG_SYSTEM + 9)
/** Sends `req` (type TR_MSG_CTL; taken in every case) to the introspection service of the node
 * called `peer` (NULL or this node's name: this node's) and waits up to timeout_ms for its answer,
 * which *reply receives (the caller frees it; read "rc" in it). TR_ENOPROC: no such node up;
 * TR_ETIMEDOUT; TR_EINVAL (not a TR_MSG_CTL). Blocks: not from an actor. */
int tr_node_ctl(tr_node *node, const char *peer, tr_msg *req, unsigned timeout_ms,
                tr_msg **reply);

/** A node's counters (tr_node_stats_get), monotonic. */
typedef struct tr_node_stats {
    uint64_t writes;                    /**< stream writes made */
    uint64_t frames_in;                 /**< frames received */
    uint64_t msgs_out;                  /**< envelopes sent */
    uint64_t msgs_in;                   /**< envelopes received */
    uint64_t refused_auth;              /**< connections dropped: wrong secret or bad handshake
                                         * (a failed TLS handshake included) */
    uint64_t bad_frames;                /**< connections dropped: malformed or oversized frame */
    uint64_t queue_full;                /**< sends refused or dropped: a peer's queue was full */
    uint64_t no_route;                  /**< sends to a node that is not up (dead letters) */
    uint64_t lost;                      /**< messages queued towards a peer that went down */
    uint64_t peers_down;                /**< times a peer was declared down */
    uint64_t peers_forgotten;           /**< members forgotten, never reached (forget_after_ms) */
    uint64_t tls_failed;                /**< connections dropped: the TLS handshake failed (a
                                         * certificate refused on either side, or not TLS) */
    uint64_t peers_left;                /**< peers that left the cluster (their LEAVE) */
    uint64_t dials;                     /**< connections this node started to dial */
    uint64_t writes_inline;             /**< of `writes`: those the socket took whole at once,
                                         * written by the sending thread (no nng thread woken) */
    uint64_t reader_conns;              /**< inbound connections handed to the node's reader
                                         * thread once busy (plain TCP on Linux): it reads
                                         * them and runs the actors they wake */
    /* partial monitoring (monitors > 0; all 0 in the full mesh) */
    uint64_t gossip_sent;               /**< membership messages sent (beats, pings, acks, gossip
                                         * rounds, syncs) */
    uint64_t gossip_received;           /**< membership messages taken in */
    uint64_t gossip_bad;                /**< membership messages refused (malformed, or not
                                         * from who they say) */
    uint64_t suspected;                 /**< members this node, as a watcher, held suspect */
    uint64_t declared_down;             /**< members this node, as a watcher, declared down */
    uint64_t refutations;               /**< times this node refuted its own suspicion or down */
    uint64_t syncs;                     /**< views pushed to a watched member (anti-entropy) */
    uint64_t verdicts_dropped;          /**< downs from an implausible watcher, not taken */
    uint32_t members[4];                /**< members known now (itself included) by state: alive,
                                         * suspect, down, left (a gauge, not a counter) */
    uint32_t id_taken;                  /**< with monitors: 1 once a member that started first
                                         * was found with this node's id (random 16-bit ids
                                         * clash: 7% among 100 nodes). Every node refuses this
                                         * one then (the earlier keeps the id); start it again
                                         * with another id (troupe-node exits with status 3) */
} tr_node_stats;

/** Reads the node's counters. */
void tr_node_stats_get(tr_node *node, tr_node_stats *out);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif /* TROUPE_NODE_H */
