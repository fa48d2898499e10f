/**
 * @file
 * troupe/singleton.h — one actor in the whole cluster (a mailer held to a rate, a scheduler, a
 * leader's duties): run on the node that owns its name, started there, kept running, moved when
 * the membership changes, and found from any node.
 *
 * Contract.
 * - Placement: the node tr_node_place picks for the singleton's name (rendezvous hashing over the
 *   nodes up, as the shard router does); with no node, this node. Every node that wants the
 *   singleton calls tr_singleton_start with the same name and behaviour; each runs a keeper actor
 *   that checks placement on every membership event and every check_ms.
 * - The owner's keeper spawns the actor (with the spawn options given) and registers it under
 *   "tr.singleton/NAME" — cluster-wide with a node (tr_node_register), in the system's local names
 *   without one — so tr_singleton_whereis finds it from any node. A keeper that stops owning the
 *   name stops its actor (tr_system_stop_actor: after the messages already queued).
 * - An actor that ends (a crash, a stop) is started again by its keeper at the next check, not at
 *   once: a singleton that fails at start does not spin.
 * - At most one runs while the nodes agree on who is up; while views differ (a node just joined
 *   or was just lost), two may run for a moment, as with the shard router. An actor that must
 *   never have a twin must be fenced by what it writes to (the Redis store's journals are).
 * - Lifecycle: tr_singleton_start after tr_system_start (and tr_node_start, if any);
 *   tr_singleton_free after tr_system_join.
 */
#ifndef TROUPE_SINGLETON_H
#define TROUPE_SINGLETON_H

#include "troupe.h"
#include "troupe/node.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

/** One actor in the whole cluster, and the keeper actors that place it (opaque). */
typedef struct tr_singleton tr_singleton;

/** A singleton's options (tr_singleton_start). */
typedef struct tr_singleton_opts {
    const char *name;               /**< 1..64 letters, digits, '-', '_', '.', '/': its key */
    const tr_behaviour *behaviour;  /**< must outlive the singleton */
    const void *arg;                /**< its init's argument (must outlive the singleton) */
    tr_spawn_opts spawn;            /**< e.g. a rate-limited mailbox (`link` is not allowed) */
    tr_node *node;                  /**< NULL: it runs on this node */
    unsigned check_ms;              /**< placement and liveness checked this often; 0 = 1,000 */
    bool start_here;                /**< start it on this node at once, whoever owns it (a check
                                     * moves it where it belongs): tr_singleton_start then fails
                                     * with its init's error if it cannot start at all */
} tr_singleton_opts;

/** Starts this node's keeper of the singleton (which starts the actor here if this node owns
 * it). TR_EINVAL for a bad name or options; with start_here, the actor's spawn error. */
int tr_singleton_start(tr_system *sys, const tr_singleton_opts *opts, tr_singleton **out);
/** Where the singleton runs now, on any node: TR_OK with its pid, or TR_ENOPROC while none is
 * known (starting, moving). From any thread. */
int tr_singleton_whereis(tr_singleton *s, tr_pid *out);
/** Whether it runs on this node now. */
bool tr_singleton_here(tr_singleton *s);
/** Frees the keeper's memory after tr_system_join (its actors ended with the system). */
void tr_singleton_free(tr_singleton *s);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
