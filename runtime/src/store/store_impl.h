/*
 * store_impl.h — what store.c (units, the writer, journals, the outbox pump) shares with its
 * backends: sqlite.c (the embedded default) and redis.c (shared by a cluster).
 *
 * A backend commits batches of units, recovers a journal, and reads outbox items; store.c does
 * the rest (queueing, group commit, replies after commit, delivery windows and redelivery).
 * Backend calls come from the writer thread, except recover (an actor's init, under the
 * backend's own lock) and close.
 */
#ifndef TROUPE_STORE_IMPL_H
#define TROUPE_STORE_IMPL_H

#include "core/registry.h"
#include "troupe/bus.h"
#include "troupe/metrics.h"
#include "troupe/store.h"

#include <stdio.h>

#define STORE_MAX_QUEUES 64u
#define STORE_ID_MAX 255u

enum { OP_EVENT, OP_SNAPSHOT, OP_OUTBOX, OP_REPLY, OP_ACK, OP_SUBSCRIBE, OP_RETRY,
       OP_PUBLISH, OP_BUS_ACK, OP_BUS_SUB, OP_BUS_UNSUB };

typedef struct op {
    int kind;
    uint64_t seq;       /* EVENT / SNAPSHOT: its sequence number; ACK / RETRY: the item's id;
                         * PUBLISH: the event's id (given by the backend's commit); BUS_ACK: the
                         * id acknowledged; BUS_SUB: from */
    uint64_t ts;        /* PUBLISH: commit time, µs since the epoch (set by the commit) */
    char *queue, *key;  /* OUTBOX / SUBSCRIBE (queue); PUBLISH (queue: the topic);
                         * BUS_*: queue is the subscription's name */
    void *data;
    size_t len;
    tr_pid to;          /* REPLY: the requester; SUBSCRIBE: the consumer */
    tr_msg *msg;        /* REPLY */
    unsigned delay_ms;  /* RETRY: when to deliver it again; BUS_SUB: the window */
    size_t data_off, queue_off, key_off; /* in the unit's bytes, while it is being built */
    unsigned in_bytes;  /* OP_IN_* bits: which of data, queue, key live in the unit's bytes */
} op;

enum { OP_IN_DATA = 1, OP_IN_QUEUE = 2, OP_IN_KEY = 4 };

typedef struct unit {
    struct unit *next;
    tr_pid actor;       /* ended if the unit cannot be committed (0: none) */
    char *jid;          /* the journal's id (events, snapshot) */
    uint64_t epoch;     /* the journal's ownership epoch (backends that fence writers) */
    op *ops;
    size_t n, cap;
    char *bytes;        /* the ops' data, queues and keys, copied in one buffer (freed with
                         * the unit: one allocation per turn, not several per op) */
    size_t blen, bcap;
    bool *done;         /* set (under the store lock) once committed or failed */
    uint64_t ticket;    /* its place in the queue (enqueue; 0: not queued through it) */
    bool failed;        /* set by the backend's commit */
    char why[256];      /* ...and why */
} unit;

typedef struct inflight {
    uint64_t id;
    uint64_t due_ns;
    unsigned attempt;
} inflight;

typedef struct oqueue {
    char name[STORE_ID_MAX + 1];
    tr_pid consumer;
    uint64_t last_id;   /* the newest item delivered (fetching continues after it) */
    inflight *out;      /* outbox_window entries */
    size_t nout;
} oqueue;

/* A subscription of the event bus (bus.c): the writer's, but for the lag counters. */
typedef struct bflight {
    uint64_t id, ts_us;
} bflight;

typedef struct bsub {
    char name[STORE_ID_MAX + 1];
    char *topics[TR_BUS_TOPICS];
    unsigned ntopics;
    tr_pid consumer;
    uint64_t acked;     /* the offset (acknowledged up to this id), in memory */
    uint64_t stored;    /* the offset as last stored (acks are stored lazily: tr__bus_acks_due) */
    uint64_t ack_ns;    /* when an ack above `stored` first came in (0: none waiting) */
    uint64_t scanned;   /* the log is examined up to this id for delivery */
    bflight *out;       /* in flight, ascending ids (window entries) */
    unsigned nout, window, attempt;
    uint64_t due_ns;    /* when the oldest in flight is delivered again */
    uint64_t pending;   /* events of its topics after acked */
    uint64_t oldest_us; /* commit time of the oldest pending event, when known (0: none) */
} bsub;

/* A row of the bus log read back by a backend. Returns false to stop the scan. */
typedef bool (*store_bus_fn)(tr_store *s, void *arg, uint64_t id, const char *topic,
                             const char *key, uint64_t ts_us, const void *data, size_t len);

/* An outbox item read back by a backend, handed to the pump. */
typedef void (*store_item_fn)(tr_store *s, oqueue *q, uint64_t id, const void *key, size_t klen,
                              const void *data, size_t len);

typedef struct store_backend {
    /* Commits a batch: all or nothing (SQLite), or unit by unit (Redis); marks failed units. */
    void (*commit)(tr_store *s, unit *batch);
    /* Recovers journal j (and takes ownership of it, where writers are fenced). */
    int (*recover)(tr_store *s, tr_journal *j, tr_journal_restore_fn restore,
                   tr_journal_apply_fn apply, void *state);
    /* Item id of q, if still there (false: acknowledged). */
    bool (*item_get)(tr_store *s, oqueue *q, uint64_t id, store_item_fn fn);
    /* Up to limit items of q with ids above `after`, oldest first. */
    void (*items_next)(tr_store *s, oqueue *q, uint64_t after, unsigned limit, store_item_fn fn);
    /* How many items of queue `queue` are not acknowledged (any thread: the reading connection). */
    int (*pending)(tr_store *s, const char *queue, uint64_t *n);
    /* The bus (NULL: this backend has none): up to limit rows of the log after id `after`, in
     * id order (writer); events of topic with ids in (after, upto] (writer); the stored offset of
     * a subscription, 0 when none (writer). */
    void (*bus_next)(tr_store *s, uint64_t after, unsigned limit, store_bus_fn fn, void *arg);
    int (*bus_count)(tr_store *s, const char *topic, uint64_t after, uint64_t upto, uint64_t *n);
    int (*bus_offset)(tr_store *s, const char *name, uint64_t *off);
    /* The newest id in the log, written by any node (shared backends; NULL: only this store
     * writes its log, whose head the commits keep). */
    int (*bus_head)(tr_store *s, uint64_t *head);
    /* Takes or renews lease `name` for `holder` for ttl_ms (0: gives it up if held); *held
     * says whether holder has it now (any thread: the reading connection). NULL: this backend
     * has one writer node, whose holders always hold. */
    int (*lease)(tr_store *s, const char *name, const char *holder, unsigned ttl_ms, bool *held);
    /* Closes the connections (the writer has stopped). */
    void (*close)(tr_store *s);
    /* Frees what close left. */
    void (*free)(tr_store *s);
} store_backend;

/* A commit's time, in seconds: the buckets of troupe_store_commit_seconds (store.c). */
#define STORE_LAT_BOUNDS                                                                          \
    {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
#define STORE_LAT_N 16u

#define STORE_RECENT_SLOTS 4096u /* tr_store.recent: a power of two */
#define STORE_DELAY_UNITS 64u    /* a delayed commit waits for at most this many units */

struct tr_store {
    tr_system *sys;
    char *where;        /* the file or address, for messages */
    const store_backend *be;
    void *bk;           /* the backend's state */
    unsigned snapshot_every, window, max_batch;
    uint64_t redeliver_ns;
    pthread_mutex_t lock;
    pthread_cond_t cond, done_cond;
    unit *head, *tail;
    bool busy;          /* the backend and the queues' state are in use: by the writer, or by a
                         * thread committing its own unit (lock) */
    bool inline_commits; /* a unit handed over with nothing queued and nothing committing is
                          * committed at once by the thread handing it over */
    uint64_t delay_ns;      /* the writer's commit delay (tr_store_opts.commit_delay_us) */
    uint64_t head_ns;       /* when the oldest unit queued was queued (delay_ns only; lock;
                             * after a take of max_batch, older than that: a shorter wait) */
    uint64_t committed_ns;  /* when the writer's last commit ended (writer) */
    unsigned queued;        /* units queued (lock) */
    bool delaying;          /* the writer waits out its commit delay: no wake-ups (lock) */
    bool urgent;            /* a unit someone waits for is queued: no delay (lock) */
    bool writer_waits;  /* the writer waits for busy to clear (lock) */
    bool stopping;
    bool closed;        /* tr_store_close ran: units are dropped */
    unsigned refs;      /* the opener's, plus one per open journal (lock) */
    pthread_t writer;
    bool writer_started;
    tr_namemap open;    /* journal ids open -> pid (lock) */
    /* Units are committed in the order they were queued (one queue, `busy`): each gets the next
     * ticket; ticket_done is the newest committed (or failed). recent[h] is the newest ticket
     * of a journal whose id hashes to h, so tr_journal_open waits for the writer only when a
     * unit of that journal (or of one sharing its slot) may not be committed yet (lock). */
    uint64_t ticket_next, ticket_done;
    uint64_t recent[STORE_RECENT_SLOTS];
    oqueue queues[STORE_MAX_QUEUES]; /* the writer's */
    size_t nqueues;
    unsigned pump_attempt;  /* the attempt number of the item being delivered (writer) */
    /* the bus (bus.c): subscriptions (the writer's; bus_lock guards the table's shape and the
     * counters tr_bus_lag_get reads), the newest id committed (set at open by the backend) */
    bsub *subs[TR_BUS_SUBS];
    size_t nsubs;
    pthread_mutex_t bus_lock;
    uint64_t bus_head;
    uint64_t bus_polled_ns; /* when the shared log's head was last asked for (writer) */
    bool bus_kick;      /* a commit published: the writer should pump now (lock) */
    _Atomic uint64_t commits, commits_inline, commits_delayed, units, events, snapshots,
        outbox_put, outbox_acked, outbox_delivered, outbox_redelivered, failures;
    /* the time of each transaction, in STORE_LAT_BOUNDS buckets (+ one above), and their sum */
    _Atomic uint64_t commit_hist[STORE_LAT_N + 1];
    _Atomic uint64_t commit_ns;
    tr_metrics *metrics;        /* its system's registry, held (tr__metrics_hold) while open */
};

struct tr_journal {
    tr_store *s;
    char *id;
    tr_pid actor;
    uint64_t seq, since_snapshot;
    uint64_t epoch;     /* ownership (Redis) */
    unit *cur;
};

/* The backends this build has (the CMake options TROUPE_WITH_SQLITE and TROUPE_WITH_REDIS). */
#ifndef TROUPE_HAVE_SQLITE
#define TROUPE_HAVE_SQLITE 1
#endif
#ifndef TROUPE_HAVE_REDIS
#define TROUPE_HAVE_REDIS 1
#endif
/* A backend compiled out: tr_store_open says so (TR_EINVAL). */
static inline int tr__store_absent(const char *which, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "store: the %s backend is not in this build", which);
    return TR_EINVAL;
}
#if TROUPE_HAVE_SQLITE
/* Opens the SQLite backend on s (s->where is the file). TR_OK, or an error written into err. */
TR_HIDDEN int tr__store_sqlite_open(tr_store *s, const tr_store_opts *o, char *err, size_t errlen);
#else
#define tr__store_sqlite_open(s, o, err, errlen) tr__store_absent("sqlite", err, errlen)
#endif
#if TROUPE_HAVE_REDIS
/* Opens the Redis backend on s. */
TR_HIDDEN int tr__store_redis_open(tr_store *s, const tr_store_opts *o, char *err, size_t errlen);
#else
#define tr__store_redis_open(s, o, err, errlen) tr__store_absent("redis", err, errlen)
#endif

/* Shared by store.c and bus.c. */
TR_HIDDEN unit *tr__unit_new(tr_pid actor, const char *jid);
TR_HIDDEN op *tr__unit_add(unit *u, int kind);
TR_HIDDEN int tr__unit_put(unit *u, const void *p, size_t len, size_t *off);
TR_HIDDEN void tr__unit_free(unit *u);
TR_HIDDEN void tr__store_enqueue(tr_store *s, unit *u);
TR_HIDDEN int tr__store_deliver(tr_store *s, tr_pid to, tr_msg *m);
/* The journal's unit of this turn (NULL: out of memory). */
TR_HIDDEN unit *tr__journal_unit(tr_journal *j);
/* bus.c: a committed op of the bus takes effect (the thread committing); the pump (writer);
 * freeing the subscriptions (the writer has stopped). */
TR_HIDDEN void tr__bus_after(tr_store *s, op *o);
TR_HIDDEN void tr__bus_pump(tr_store *s);
/* The writer's: a chain of units storing the offsets acknowledged ACK_STORE_MS ago or more (all
 * of them when `all`), or NULL. */
TR_HIDDEN unit *tr__bus_acks_due(tr_store *s, bool all);
TR_HIDDEN void tr__bus_free(tr_store *s);
/* Writes the subscriptions' lag (troupe_bus_lag_events, troupe_bus_lag_seconds) into out. */
TR_HIDDEN void tr__bus_collect(tr_store *s, tr_metrics_out *out);
/* Wall-clock microseconds since the epoch (the bus's commit times). */
TR_HIDDEN uint64_t tr__bus_now_us(void);

#endif
