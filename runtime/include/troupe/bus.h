/**
 * @file
 * troupe/bus.h — the event bus: topics with durable publish/subscribe, built on the store
 * (troupe::store). See docs/persistence.md, "The event bus".
 *
 * Contract.
 * - Publishing is part of a journal's unit (tr_journal_publish): the event is committed in the
 *   same transaction as the events and replies of the turn that caused it (the outbox idea), so
 *   a command acknowledged is an event published, and an event is never published for a command
 *   that was not. tr_bus_publish publishes outside any journal (its own unit).
 * - Each committed event gets an id from the store: increasing in commit order, never reused.
 *   The log of a store is one sequence across topics; events of one publisher are in the order
 *   it published them.
 * - A subscription is durable and named: the store keeps its offset (the id up to which its
 *   consumer acknowledged, tr_bus_ack, cumulative). tr_bus_subscribe gives it a consumer (any
 *   pid, on this node or another) and a set of topics; the store delivers the events of those
 *   topics after the offset (or after an explicit id: from the beginning, to rebuild a read
 *   model kept in memory) in id order, at most `window` unacknowledged at once (back-pressure:
 *   a slow consumer holds at most window events in its mailbox; the rest waits in the log).
 * - At least once: an event not acknowledged within the store's redeliver_ms is delivered again,
 *   with every event after it (in order). A consumer that ends loses its in-flight events to the
 *   next consumer of the name. Consumers are idempotent by event id: within one subscription ids
 *   only grow, so "ignore an id not above the last one applied" is enough.
 * - Lag is counted per subscription (tr_bus_lag): events committed and not acknowledged, and the
 *   age of the oldest of them.
 * - Bounded: at most TR_BUS_SUBS subscriptions per store, TR_BUS_TOPICS topics each, names and
 *   topics 1..255 bytes, keys at most 255 bytes. The log is kept (a read model may replay it);
 *   see docs/persistence.md for its size.
 * - Backends: SQLite (a log per node) and Redis (one log shared by the nodes of a cluster: ids
 *   given by the server in commit order; each node's subscriptions see every node's events, the
 *   log's head asked for at most every 5 ms).
 */
#ifndef TROUPE_BUS_H
#define TROUPE_BUS_H

#include "troupe.h"
#include "troupe/store.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

#define TR_BUS_SUBS 32u   /**< durable subscriptions per store, at most */
#define TR_BUS_TOPICS 8u  /**< topics per subscription, at most */
/** An event for a subscription's consumer: read it with tr_bus_read; corr holds the event's id.
 * An ordinary message (the consumer's mailbox limits apply). */
#define TR_MSG_BUS_EVENT (TR_MSG_SYSTEM + 10)
/** tr_bus_sub_opts.from: continue after the offset the store keeps for the name (0 if none). */
#define TR_BUS_FROM_STORED UINT64_MAX

/** Adds event (topic, key, data) to this turn's unit of journal j: committed with it. */
int tr_journal_publish(tr_journal *j, const char *topic, const char *key, const void *data,
                       size_t len);
/** Publishes an event on its own (a unit of no journal); from any thread. */
int tr_bus_publish(tr_store *s, const char *topic, const char *key, const void *data,
                   size_t len);

/** A durable subscription (tr_bus_subscribe). */
typedef struct tr_bus_sub_opts {
    const char *name;               /**< the durable subscription's name */
    const char *const *topics;      /**< its topics (1..TR_BUS_TOPICS) */
    size_t ntopics;                 /**< how many in topics */
    tr_pid consumer;                /**< where events go */
    uint64_t from;                  /**< deliver events after this id; TR_BUS_FROM_STORED: after
                                     * the stored offset. (0: from the beginning of the log) */
    unsigned window;                /**< unacknowledged events out at once; 0 = the store's
                                     * outbox_window; at most 65,536 */
} tr_bus_sub_opts;

/** Makes o->consumer the consumer of subscription o->name (created if new; its topics replaced).
 * Takes effect in order with the units committed before it; from any thread. */
int tr_bus_subscribe(tr_store *s, const tr_bus_sub_opts *o);
/** Stops delivering subscription `name` (its offset is kept). */
int tr_bus_unsubscribe(tr_store *s, const char *name);
/** Acknowledges every event of subscription `name` up to id (cumulative): the offset moves at once
 * (the window has room again; what was in flight up to id is not delivered again) and is stored
 * within about 100 ms, and when the store closes. After a crash the events after the offset last
 * stored are delivered again (at least once: consumers skip ids they applied). Any thread. */
int tr_bus_ack(tr_store *s, const char *name, uint64_t id);

/** A TR_MSG_BUS_EVENT, read: pointers into the message. */
typedef struct tr_bus_event {
    const char *sub;                /**< the subscription's name */
    size_t sub_len;                 /**< its length */
    uint64_t id;                    /**< the event's id (increasing in commit order) */
    const char *topic;              /**< its topic (not NUL-terminated) */
    const char *key;                /**< its key (not NUL-terminated) */
    size_t topic_len;               /**< the topic's length */
    size_t key_len;                 /**< the key's length */
    uint64_t ts_us;                 /**< commit time, microseconds since the Unix epoch */
    const void *data;               /**< the event's bytes */
    size_t len;                     /**< their length */
    unsigned attempt;               /**< 1 the first time it is delivered to this consumer */
} tr_bus_event;

/** Reads a TR_MSG_BUS_EVENT. TR_EINVAL for another message, TR_EBADMSG if malformed. */
int tr_bus_read(const tr_msg *m, tr_bus_event *ev);

/** How far a subscription is behind (tr_bus_lag). */
typedef struct tr_bus_lag {
    uint64_t events;                /**< committed, of its topics, not acknowledged */
    uint64_t ms;                    /**< age of the oldest of them (an upper bound while no
                                     * consumer is subscribed); 0 when none */
    uint64_t offset;                /**< acknowledged up to this id */
    uint64_t head;                  /**< the newest id in the log */
    bool consumer;                  /**< a consumer is subscribed */
} tr_bus_lag;

/** Subscription `name`'s lag; from any thread. TR_ENOPROC when it is not known (never
 * subscribed since the store opened). */
int tr_bus_lag_get(tr_store *s, const char *name, tr_bus_lag *out);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif /* TROUPE_BUS_H */
