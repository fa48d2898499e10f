/**
 * @file
 * troupe/store.h — persistence: journals of persistent actors (event sourcing with snapshots),
 * group commit, replies that leave only after the commit, and a durable outbox consumed at
 * least once. Backends (tr_store_opts.backend): an embedded SQLite database, one file per node
 * (TR_STORE_SQLITE, the default), or a Redis server shared by a cluster (TR_STORE_REDIS); either
 * can be left out of a build (TROUPE_WITH_SQLITE / TROUPE_WITH_REDIS). See docs/persistence.md.
 *
 * A persistent actor opens its journal in init (tr_journal_open recovers its state from the
 * latest snapshot and the events after it), persists events while it handles messages, and
 * calls tr_journal_flush from its behaviour's turn_end: everything persisted during a turn is
 * handed to the store's writer as one unit, and the writer commits every unit waiting in one
 * transaction (one fsync for thousands of events under load). Replies given with
 * tr_journal_reply and outbox items are part of the unit: a reply leaves only once the events
 * before it are durable, and an outbox item is written in the same transaction as they are.
 *
 * Two backends: an embedded SQLite file per node (the default), and Redis shared by the nodes
 * of a cluster, where each journal has an owner epoch and a write from a stale owner is refused.
 */
#ifndef TROUPE_STORE_H
#define TROUPE_STORE_H

#include "troupe.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

/** A store: the database (SQLite or Redis) and its writer thread (opaque). */
typedef struct tr_store tr_store;
/** A persistent actor's journal of events and snapshots (opaque). */
typedef struct tr_journal tr_journal;

/** SQLite's synchronous setting (see docs/persistence.md for what each risks). */
typedef enum tr_store_sync {
    TR_SYNC_FULL = 0,   /**< every commit is on disk before it is acknowledged (default) */
    TR_SYNC_NORMAL,     /**< WAL: a power loss may undo the last commits; a process crash does not */
} tr_store_sync;

/** Where a store keeps its data. */
typedef enum tr_store_backend {
    TR_STORE_SQLITE = 0,        /**< an embedded database file (path) */
    TR_STORE_REDIS,             /**< a Redis server (redis_host, redis_port), shared by a cluster */
} tr_store_backend;

/** Which thread commits, with sync = normal on SQLite (docs/persistence.md). Inline: a unit is
 * committed by the thread that hands it over, at the end of its batch of turns (no writer
 * wake-up; the default). Writer: every commit on the store's writer thread, which batches what
 * all threads handed over meanwhile — better when the handing threads are HTTP loops with other
 * work to do and units are small and many (the social app's posts: its mixed benchmark). With
 * sync = full and on Redis every commit is the writer's anyway. */
typedef enum { TR_COMMITS_INLINE = 0, TR_COMMITS_WRITER } tr_store_commits;

/** A store's options (the config file gives them: troupe/config.h). */
typedef struct tr_store_opts {
    tr_store_backend backend;   /**< SQLite or Redis */
    const char *path;           /**< SQLite: the database file */
    const char *redis_host;     /**< Redis: host (e.g. "127.0.0.1") */
    unsigned redis_port;        /**< Redis: port; 0 = 6379 */
    tr_store_sync sync;         /**< SQLite: full or normal */
    unsigned snapshot_every;    /**< tr_journal_snapshot_due after this many events; 0 = 1000 */
    unsigned outbox_window;     /**< unacknowledged items out per queue at most; 0 = 64 */
    unsigned redeliver_ms;      /**< an item not acknowledged by then is sent again; 0 = 5000 */
    unsigned max_batch;         /**< units committed in one transaction at most; 0 = 4096 */
    tr_store_commits commits;   /**< who commits (sync = normal, SQLite); 0 = TR_COMMITS_INLINE */
    /** The writer's commit delay, µs (0, the default: none; at most 1,000,000). When commits are
     * frequent — the writer's previous one ended less than this long ago — the writer waits until
     * the oldest unit queued has waited this long, or until 64 units are queued, before it
     * commits: a few units share one transaction instead of one each (PostgreSQL's
     * commit_delay). Trades up to that much reply latency for CPU: the social node's posts at
     * 2,500/s, 1,000 µs: 3.1 posts a commit, ~40% less node CPU a post, +0.8 ms at p50
     * (docs/persistence.md). Applies to the writer's commits (commits = writer, sync = full,
     * Redis), not to inline ones. */
    unsigned commit_delay_us;
} tr_store_opts;

/** Opens (creating if needed) the store of a started system. On error returns a TR_E* code and
 * writes a line naming the file into err: unreadable or corrupt file, a schema from a newer
 * version. */
int tr_store_open(tr_system *sys, const tr_store_opts *opts, tr_store **out, char *err,
                  size_t errlen);
/** Commits what is queued, stops the writer, closes the database. Before tr_system_free. */
void tr_store_close(tr_store *s);

/** A store's counters (tr_store_stats_get), monotonic. */
typedef struct tr_store_stats {
    uint64_t commits;           /**< transactions */
    uint64_t commits_inline;    /**< of which made by the thread handing its unit over (NORMAL) */
    uint64_t commits_delayed;   /**< of which the writer delayed (commit_delay_us) */
    uint64_t units;             /**< units committed (turns of persistent actors, acks) */
    uint64_t events;            /**< journal events written */
    uint64_t snapshots;         /**< journal snapshots written */
    uint64_t outbox_put;        /**< outbox items written */
    uint64_t outbox_acked;      /**< outbox items acknowledged */
    uint64_t outbox_delivered;  /**< outbox items sent to their consumer */
    uint64_t outbox_redelivered; /**< outbox items sent again (not acknowledged in time) */
    uint64_t failures;          /**< transactions that failed (their actors were ended) */
} tr_store_stats;

/** Reads the store's counters. */
void tr_store_stats_get(tr_store *s, tr_store_stats *out);

/* ---- journals ---- */

/** Called during recovery with the latest snapshot (if any) and then each later event, in order. */
typedef int (*tr_journal_restore_fn)(void *state, uint64_t seq, const void *snapshot, size_t len);
/** Called during recovery with each event after the snapshot, in order (see restore). */
typedef int (*tr_journal_apply_fn)(void *state, uint64_t seq, const void *event, size_t len);

/** From the running actor's init: opens journal `id` (1..255 bytes, e.g. "order/sku-42"),
 * waits until everything queued before is committed, and recovers `state` through restore and
 * apply (non-zero from them fails the open with TR_EBADMSG). TR_EEXIST if another live actor
 * has it open. */
int tr_journal_open(tr_ctx *ctx, tr_store *s, const char *id, tr_journal_restore_fn restore,
                    tr_journal_apply_fn apply, void *state, tr_journal **out);
/** The sequence number of the last event (0 before the first). */
uint64_t tr_journal_seq(const tr_journal *j);
/** Appends an event to this turn's unit (copied). */
int tr_journal_persist(tr_journal *j, const void *event, size_t len);
/** Replaces the snapshot, as of the last event persisted, in this turn's unit. */
int tr_journal_snapshot(tr_journal *j, const void *snapshot, size_t len);
/** True when snapshot_every events were persisted since the last snapshot. */
bool tr_journal_snapshot_due(const tr_journal *j);
/** Adds an outbox item for queue `queue` with idempotency key `key` to this turn's unit: it is
 * written in the same transaction as the unit's events. */
int tr_journal_outbox(tr_journal *j, const char *queue, const char *key, const void *data,
                      size_t len);
/** Answers `request` with `reply` (consumed) once this turn's unit is committed. */
int tr_journal_reply(tr_journal *j, const tr_msg *request, tr_msg *reply);
/** The same for a request kept by its return address (tr_msg_from): a deferred answer that leaves
 * once this turn's unit is committed. */
int tr_journal_reply_from(tr_journal *j, tr_from from, tr_msg *reply);
/** Hands this turn's unit to the writer (call it from the behaviour's turn_end). */
void tr_journal_flush(tr_journal *j);
/** Flushes and closes the journal (call it from terminate). */
void tr_journal_close(tr_journal *j);

/* ---- the outbox ---- */

/** An outbox item for its consumer: read it with tr_outbox_read, acknowledge with tr_outbox_ack.
 * corr holds the item's id. */
#define TR_MSG_OUTBOX (TR_MSG_SYSTEM + 12) /* (+ 9 until 2026-12-05: TR_MSG_CTL's too) */
/** Makes `consumer` the one receiver of queue's items: every item not acknowledged is delivered
 * to it (at most outbox_window at a time), again after redeliver_ms until acknowledged. */
int tr_outbox_subscribe(tr_store *s, const char *queue, tr_pid consumer);
/** Acknowledges item `id`: it is deleted (in the next commit) and never delivered again. */
int tr_outbox_ack(tr_store *s, uint64_t id);
/** The consumer could not handle item `id` now: it is delivered again after delay_ms instead of
 * redeliver_ms (a consumer's backoff). Unknown or acknowledged ids are ignored. */
int tr_outbox_retry(tr_store *s, uint64_t id, unsigned delay_ms);
/** How many items of `queue` are stored and not yet acknowledged (by any node sharing the store);
 * from any thread. */
int tr_outbox_pending(tr_store *s, const char *queue, uint64_t *n);

/** Leases: at most one holder of `name` at a time among the nodes sharing the store (a cluster's
 * singleton that must never run twice, even while two nodes cannot see each other: the email
 * actor that keeps a rate). Takes `name` for `holder` (an id unique to this holder, e.g. node
 * name and incarnation; 1..255 bytes) for ttl_ms if it is free or already holder's, or renews
 * it; ttl_ms 0 gives it up if held. *held says whether holder has it now. The store's clock
 * counts the ttl: a holder counts its lease from before the call, and stops acting on it a
 * margin before it ends unless renewed. On SQLite (one node writes the file) every holder holds.
 * A blocking round trip to Redis; from any thread. TR_EIO: the store cannot be reached (held
 * false). */
int tr_store_lease(tr_store *s, const char *name, const char *holder, unsigned ttl_ms,
                   bool *held);
/** Reads a TR_MSG_OUTBOX message; pointers are into m. attempt counts deliveries since the
 * consumer subscribed (1 = first). */
int tr_outbox_read(const tr_msg *m, uint64_t *id, const char **key, size_t *key_len,
                   const void **data, size_t *len, unsigned *attempt);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif /* TROUPE_STORE_H */
