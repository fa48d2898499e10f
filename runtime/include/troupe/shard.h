/**
 * @file
 * troupe/shard.h — keyed actors across a cluster: one actor per key (a SKU's order actor, a user,
 * a timeline), placed on a live node, started on demand, reached from any node, moved when the
 * membership changes, passivated when idle if asked.
 *
 * Contract.
 * - Placement: the key's owner is the node tr_node_place picks (rendezvous hashing over this node
 *   and the peers up); with no node, every key lives here. Nodes with the same view agree.
 * - One shard of a given name runs per node; its router actor is registered cluster-wide as
 *   "tr.shard/NAME/NODE". A request for a key goes straight to the key's actor when it runs on this
 *   node; otherwise, wrapped, to the owner's router, which starts the actor if needed (under a
 *   simple_one_for_one supervisor, TR_TEMPORARY children), holds the requests meanwhile (bounded)
 *   and forwards them with their return address (tr_forward): the key's actor answers the
 *   requester directly.
 * - A router that does not own the key (a stale view of the cluster), cannot start its actor, or
 *   holds too many requests for it answers TR_MSG_SHARD_UNAVAILABLE: the requester retries later.
 *   A requester whose owner's router is not known yet gets TR_ENOCONN from the call itself.
 * - Keys whose owner changes have their actor stopped here (at once on a membership event; a view
 *   that changes otherwise is noticed within a second for tables up to 8,192 keys' buckets, within
 *   8 s for the largest); the new owner starts one on the next request. Two owners may briefly run
 *   the same key's actor while views differ: actors that persist must be fenced by their store
 *   (the Redis backend's journals are).
 * - Bounded: at most max_keys keys with an actor (or a start under way) per node; each key's
 *   waiting list at most max_waiting. The table forgets a key when its actor ends.
 * - Message types from TR_MSG_SHARD_BASE up are the shard's; keep application types below it.
 */
#ifndef TROUPE_SHARD_H
#define TROUPE_SHARD_H

#include "troupe.h"
#include "troupe/node.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

#define TR_SHARD_KEY_MAX 128u /**< a key's length, at most (bytes) */
#define TR_MSG_SHARD_BASE (TR_MSG_SYSTEM - 0x100u) /**< the shard's message types start here */
/** The answer of a router that cannot serve a key now (no payload): retry later. */
#define TR_MSG_SHARD_UNAVAILABLE (TR_MSG_SHARD_BASE + 1)

/** Keyed actors over a cluster: a router and a supervisor on each node (opaque). */
typedef struct tr_shard tr_shard;

/** A shard's options (tr_shard_start). */
typedef struct tr_shard_opts {
    const char *name;               /**< 1..32 letters, digits, '-', '_': unique per node */
    const tr_behaviour *behaviour;  /**< the keyed actors' */
    /** Writes the start argument of key's actor into arg (arg_size bytes), which its init gets;
     * arg and key stay valid while the actor runs. 0, or non-zero to refuse the key. With
     * arg_size 0 (or no init_arg) the actor's init gets the key itself (a const char *). */
    int (*init_arg)(void *user, const char *key, void *arg);
    size_t arg_size;                /**< at most 1,024 */
    void *user;                     /**< given to the callbacks */
    /** Optional: whether a request of `type` may start key's actor when none runs (a read of a key
     * nobody created should not create it, say). A request it refuses is answered with
     * refuse(user, key, type)'s message if that is set and returns one (e.g. "no such key"),
     * else TR_MSG_SHARD_UNAVAILABLE. NULL: every request may start it. Both run on the router. */
    bool (*may_start)(void *user, const char *key, uint32_t type);
    /** Optional: the answer to a request may_start refused (see may_start). */
    tr_msg *(*refuse)(void *user, const char *key, uint32_t type);
    tr_node *node;                  /**< NULL: every key lives on this node */
    size_t max_keys;                /**< keys with an actor here at once; 0 = 100,000 */
    size_t max_waiting;             /**< requests held per key while its actor starts; 0 = 10,000 */
    unsigned start_timeout_ms;      /**< 0 = 60,000: how long the router waits for the supervisor's
                                     * answer to a start (the requests held meanwhile are bounded
                                     * by their own timeouts). An actor that comes up after it runs
                                     * unmonitored: keep this well above any init's duration */
    unsigned shutdown_ms;           /**< given to a keyed actor to stop; 0 = 5,000 */
    unsigned idle_ms;               /**< stop an actor that received nothing this long (noticed
                                     * within a second, or 8 s in tables of over 8,192 keys'
                                     * buckets); 0 = never */
} tr_shard_opts;

/** Starts the shard on a started system (and its node, if any): its router and supervisor. */
int tr_shard_start(tr_system *sys, const tr_shard_opts *opts, tr_shard **out);
/** Sends request m (taken) for key's actor through a port: the answer reaches the port's callback
 * with `cookie` (the actor's reply, or a TR_MSG_SHARD_UNAVAILABLE reply, or TR_ETIMEDOUT /
 * TR_ENOCONN / TR_ENOPROC as any port request). Returns as tr_port_request, plus TR_EINVAL for a
 * bad key and TR_ENOCONN when the owner's router is not known yet (no callback then). */
int tr_shard_port_request(tr_shard *s, tr_port *port, const char *key, tr_msg *m,
                          unsigned timeout_ms, uint64_t cookie);
/** The same from an actor: the answer arrives as a reply with *corr (see tr_request). */
int tr_shard_request(tr_ctx *ctx, tr_shard *s, const char *key, tr_msg *m, unsigned timeout_ms,
                     uint64_t *corr);
/** Whether key's owner is this node; its name in owner (65 bytes) if not NULL. */
bool tr_shard_owns(tr_shard *s, const char *key, char owner[65]);
/** Whether key's actor runs on this node now; its pid in *out (if not NULL). For work that only
 * matters to running actors (an active timeline's new entry: an idle one rebuilds on its next
 * start), sent to it directly without starting anything. */
bool tr_shard_running(tr_shard *s, const char *key, tr_pid *out);
/** Keys with an actor (or a start under way) on this node. */
size_t tr_shard_count(tr_shard *s);
/** Frees the shard after tr_system_join (its actors ended with the system). */
void tr_shard_free(tr_shard *s);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
