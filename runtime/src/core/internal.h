/*
 * internal.h — the runtime's private structures, shared by the files of runtime/src/.
 *
 * Nothing here is public API. The units are compiled with -fvisibility=hidden and only the
 * public headers give their declarations default visibility (#pragma GCC visibility), so each
 * shared library exports only the public API; TR_HIDDEN marks the internals all the same. The few internals
 * another unit calls (dist and store use these of the core) are TR_UNIT: libtroupe-core.so
 * exports them under the symbol version TROUPE_PRIVATE_<version> (runtime/troupe.map.in), which
 * only the same release's other units can bind to (tests/link/exports.sh checks the lists).
 */
#ifndef TROUPE_INTERNAL_H
#define TROUPE_INTERNAL_H

#include "troupe.h"

#include <pthread.h>
#include <stdatomic.h>

#define TR_HIDDEN __attribute__((visibility("hidden")))
#define TR_UNIT __attribute__((visibility("default")))
#define TR_LIKELY(x) __builtin_expect(!!(x), 1)
#define TR_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TR_CACHELINE 64

static inline void tr_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Futex wait while *addr == val, up to timeout_ns (0 = no limit). Spurious returns happen. */
TR_HIDDEN void tr__futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t timeout_ns);
/* Zeroed memory mapped for big tables a system touches little of (stats.c): pages never touched
 * stay zero pages. Under AddressSanitizer each region is a LeakSanitizer root, since heap blocks
 * pointed to only from there (names, a worker's arrays) would otherwise be reported as leaked
 * while the system lives (fuzz harnesses keep one). NULL when out of memory. */
TR_HIDDEN void *tr__zmap(size_t size);
/* Gives back a region of tr__zmap (NULL: nothing). */
TR_HIDDEN void tr__zunmap(void *p, size_t size);
/* Wakes every thread waiting on addr. */
TR_HIDDEN void tr__futex_wake_all(_Atomic uint32_t *addr);

/* ---- messages (msg.c) ------------------------------------------------------------------------ */

/* Link of the intrusive MPSC queue; first member of every queued object. */
typedef struct tr_mpsc_node {
    _Atomic(struct tr_mpsc_node *) next;
} tr_mpsc_node;

enum {
    TR_MF_REQUEST = 1u << 0, /* carries a corr that expects a reply */
    TR_MF_REPLY = 1u << 1,   /* answers a request (corr = the request's) */
    TR_MF_SIGNAL = 1u << 2,  /* runtime signal, handled by the runtime (type says which) */
    TR_MF_SYSTEM = 1u << 3,  /* runtime message for receive (EXIT, DOWN, TIMEOUT): no limits */
    TR_MF_BOUNCED = 1u << 4, /* a port's request back to it unread: its target ended first */
};

/* A tr_system_call waiter's request was dropped unanswered (its target ended first): the waiter gets
 * TR_MSG_NOPROC (troupe.h) instead of a reply (flags reply + system, corr = the request's), and
 * tr_system_call returns TR_ENOPROC. */
#define TR_MSG_NOPROC_NOTICE TR_MSG_NOPROC

/* Runtime signals (flag TR_MF_SIGNAL). They bypass capacity and rate limits, wake a parked
 * actor, and keep their order with the sender's messages. */
enum {
    TR_SIG_STOP = 1,      /* end with reason shutdown */
    TR_SIG_EXIT,          /* exit signal from tr_exit (payload: reason) */
    TR_SIG_EXIT_LINK,     /* exit signal because a linked actor ended (payload: reason) */
    TR_SIG_LINK,          /* sender asks to be linked */
    TR_SIG_UNLINK,        /* sender removed its link */
    TR_SIG_MONITOR,       /* sender monitors us; corr = reference */
    TR_SIG_DEMONITOR,     /* sender dropped monitor corr */
    TR_SIG_LIMIT,         /* new rate limit (payload: kind, rate, burst) */
    TR_SIG_NODEDOWN,      /* node corr went down: its linked / monitored actors are gone */
    TR_SIG_LIMIT_INFO,    /* a request (corr): change the rate limit if the payload says so
                           * ([kind or TR__LIMIT_KEEP, rate or 0, burst or 0]), then answer
                           * with it (link.c, limit_info) */
};
#define TR__LIMIT_KEEP 255u /* TR_SIG_LIMIT_INFO: the kind stays */

#define TR_MSG_INLINE 56
#define TR_MSG_MAX ((size_t)1 << 30)

struct tr_msg {
    tr_mpsc_node node;      /* mailbox link: must stay first */
    uint32_t type;
    uint32_t flags;
    tr_pid sender;
    tr_pid to;              /* the incarnation it was sent to (checked on receipt) */
    uint64_t corr;
    char *data;             /* inline_buf or a heap buffer */
    uint32_t len;
    uint32_t cap;
    msgpack_packer pk;
    char inline_buf[TR_MSG_INLINE];
};

/* Copies type, payload and corr/flags into a new message (for interval timers). */
TR_HIDDEN tr_msg *tr__msg_clone(const tr_msg *m);

/* ---- the MPSC mailbox queue (mailbox.c) ----------------------------------------------------- */

/* Vyukov's intrusive multi-producer single-consumer queue: push is one exchange, pop is wait-free
 * except while a producer is between its two steps (then pop reports "busy"). */
typedef struct tr_mpsc {
    _Atomic(tr_mpsc_node *) tail; /* producers */
    tr_mpsc_node *head;           /* consumer */
    tr_mpsc_node stub;
} tr_mpsc;

TR_UNIT void tr__mpsc_init(tr_mpsc *q);
/* Pushes n (any thread). */
TR_UNIT void tr__mpsc_push(tr_mpsc *q, tr_mpsc_node *n);
/* Pops the oldest node, or NULL when empty or a push is half done (consumer thread only). */
TR_UNIT tr_mpsc_node *tr__mpsc_pop(tr_mpsc *q);
/* True when a node is queued or being pushed (consumer thread only; seq_cst). */
TR_HIDDEN bool tr__mpsc_nonempty(tr_mpsc *q);

/* ---- actors (actor.c) ----------------------------------------------------------------------- */

#define TR_SLOT_BITS 24
#define TR_GEN_BITS 24
#define TR_CHUNK_SHIFT 8
#define TR_CHUNK_SIZE (1u << TR_CHUNK_SHIFT)
#define TR_MAX_CHUNKS ((1u << TR_SLOT_BITS) / TR_CHUNK_SIZE)
#define TR_STATE_INLINE 48
#define TR_ACTOR_BATCH 128u

enum {
    TR_AF_WAITER = 1u << 0,   /* a tr_system_call waiter: "scheduling" it signals a thread */
    TR_AF_SIGNALED = 1u << 1, /* a signal was pushed since the turn began (wakes a parked actor) */
    TR_AF_KILL = 1u << 2,     /* a kill signal may be queued: look for it before other messages */
    TR_AF_PORT = 1u << 3,     /* a tr_port: "scheduling" it runs its callbacks on that thread */
    TR_AF_BLOCKING = 1u << 4, /* spawned with opts.blocking: never run by a guest */
};

/* Values of tr_actor.sched. */
enum {
    TR_SCHED_IDLE = 0,   /* nothing queued: the next sender makes it runnable */
    TR_SCHED_BUSY = 1,   /* queued, running, or ended */
    TR_SCHED_PARKED = 2, /* waiting for its rate limit: a timer (or a signal) makes it runnable */
};

typedef struct tr_actor_ext tr_actor_ext;

typedef struct tr_pending tr_pending;
struct tr_worker;
struct tr_system;

/* An actor's header. Headers live in chunks that are never freed while the system exists
 * (type-stable memory), so a sender may safely touch a header it found through a stale pid.
 * A send checks the live pid, stamps the message with it (msg->to) and pushes; if the actor
 * ended in between, the message lands in a mailbox that is drained when the header is reused,
 * and the receiver drops any message whose `to` is not its own pid. No reference counting is
 * needed on the send path. */
typedef struct tr_actor {
    /* first cache line: what every send reads or updates, apart from the queue's tail. The
     * receiver writes none of it per message (only sched, once per turn), so senders' atomic
     * adds on `pushed` do not fight the receiver for the line. */
    _Atomic uint64_t pushed;        /* senders: messages accepted (see `base`) */
    _Atomic uint32_t sched;         /* TR_SCHED_*; futex word of tr_system_call waiters */
    _Atomic uint32_t flags;         /* TR_AF_* */
    _Atomic tr_pid pid;             /* the live pid, 0 once ended */
    _Atomic uint32_t home;          /* 1 + id of the worker it last ran on; 0 = none yet */
    _Atomic uint32_t capacity;      /* bounded mailbox: queued messages at most; 0 = unbounded */
    tr_mpsc_node rq_node;           /* link in a worker's inbox */
    _Atomic uint16_t overflow;      /* tr_overflow */
    _Atomic uint16_t boff;          /* its behaviour's row in the counters, as a byte offset
                                     * (bidx << TR_BEH_ROW_SHIFT; stats.c) */
    _Atomic uint32_t depth_max;
    _Atomic uint64_t send_dropped;  /* senders: dropped on arrival */
    _Atomic uint64_t rejected;      /* senders: refused with TR_EFULL */
    /* second line: the queue (senders exchange its tail; the receiver owns head and stub) and
     * the receiver's side. pushed - popped is the queue's length (never reset: `base` is
     * popped when this incarnation began) */
    _Alignas(TR_CACHELINE) tr_mpsc mbox;
    _Atomic uint64_t popped;        /* runner: messages taken out */
    uint32_t slot;
    uint32_t gen;
    const tr_behaviour *beh;
    void *state;                    /* inline_state or heap */
    struct tr_system *sys;
    struct tr_actor *link;          /* run-queue / free-list link */
    tr_pending *pending;            /* outstanding requests (lazily allocated) */
    struct tr_actor *batch_next;    /* free only: next batch in the system's free stack */
    tr_actor_ext *ext;              /* links, monitors, rate limit (lazily allocated) */
    _Atomic uint64_t base;
    _Atomic uint32_t restarts;
    _Atomic uint64_t dropped;       /* runner: dropped after queueing */
    _Atomic uint64_t token_wait_ns; /* runner: time parked for its rate limit */
    /* runner: pushed and popped as last added to its behaviour's counters (stats.c); both are
     * `popped` while the header is free, which is where an actor's counting starts */
    uint64_t acct_pushed, acct_popped;
    _Alignas(16) char inline_state[TR_STATE_INLINE];
} tr_actor;

/* Up to this many links an actor keeps them in an array; above, in a hash set (link.c). */
#define TR_LINKS_ARRAY_MAX 16u

/* Rarely used per-actor state, owned by the actor's runner (see link.c, actor.c). */
struct tr_actor_ext {
    bool trap_exits;
    bool remote;                    /* holds a relation with another node's actor (node.c) */
    bool limited;
    struct tr_limiter *lim;         /* the rate limiter (when limited) */
    tr_msg *stash, *stash_tail;     /* popped but held back by the limiter, in order */
    uint64_t park_ns;               /* when it parked for a token (0 = not parked) */
    uint64_t waits;                 /* times it parked for its rate limit */
    tr_pid *links;                  /* the link set: an array or a hash set (link.c) */
    uint32_t nlinks, caplinks;      /* members; array size, or table slots if > TR_LINKS_ARRAY_MAX */
    struct tr_idmap *monitors;       /* ref -> target: monitors this actor holds */
    struct tr_idmap *watchers;       /* ref -> watcher: monitors on this actor */
    /* the timer thread's wake-up wheel (guarded by its lock) */
    tr_actor *wake_prev, *wake_next;
    uint64_t wake_due_ms;
    bool in_wheel;
};

/* The runner took a message out of a's mailbox (handled or dropped). */
static inline void tr__count_popped(tr_actor *a)
{
    atomic_store_explicit(&a->popped, atomic_load_explicit(&a->popped, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

TR_HIDDEN int tr__actor_table_init(struct tr_system *sys);
TR_HIDDEN void tr__actor_table_free(struct tr_system *sys);
/* The header of the live actor named by pid, or NULL. The actor may end right after: callers
 * only push to its mailbox (see above). */
TR_HIDDEN tr_actor *tr__actor_lookup(struct tr_system *sys, tr_pid pid);
/* Allocates a header with a fresh generation (not yet visible: pid is 0). */
TR_HIDDEN tr_actor *tr__actor_alloc(struct tr_system *sys);
/* The next message of an actor whose pid is cleared, counted out; NULL once every send counted
 * in `pushed` is in (waits for a sender between its count and its push). */
TR_HIDDEN tr_msg *tr__mbox_take_closed(tr_actor *a);
/* Drains a header's mailbox and returns it to the pool. */
TR_HIDDEN void tr__actor_release(tr_actor *a);
/* Ends an actor: pid invalidated, terminate run, mailbox dropped, header returned to the pool.
 * `sent`: messages its last turn sent, not counted yet (its behaviour's counters). */
TR_HIDDEN void tr__actor_end(tr_actor *a, struct tr_worker *w, const tr_reason *reason,
                             uint64_t sent);
/* The end shared by ended actors and actors refused by init: links and monitors told, queued
 * messages dropped (link and monitor requests among them answered with reason). */
TR_HIDDEN void tr__actor_finish(tr_actor *a, struct tr_worker *w, tr_pid pid,
                                const tr_reason *reason);
/* Runs one turn of the actor on worker w (w may be NULL only at shutdown). */
TR_HIDDEN void tr__actor_run(struct tr_worker *w, tr_actor *a);
/* Delivers an already-allocated message (sender/flags set) to pid. */
TR_UNIT int tr__deliver(struct tr_system *sys, struct tr_worker *w, tr_pid to, tr_msg *m);
/* Counts (and hands to the hook) a dead letter, then frees it. */
TR_UNIT void tr__dead_letter(struct tr_system *sys, tr_pid to, tr_msg *m);
/* Calls fn on every header of the system (alive or not). Only when no worker runs. */
TR_HIDDEN void tr__actor_foreach(struct tr_system *sys, void (*fn)(tr_actor *, void *), void *arg);

/* What a callback's tr_ctx points at (valid during the callback only). */
struct tr_ctx {
    struct tr_system *sys;
    struct tr_worker *w;
    tr_actor *self;
    tr_pid pid;             /* self's pid: stays valid in terminate, after a->pid is cleared */
    tr_msg *cur;            /* the message being received, until sent on */
    uint32_t sent;          /* messages sent in this callback (or turn): added to its behaviour's */
    bool ending;
    tr_reason reason;
    char *fail_text;
};

/* Ends the running actor (once the callback returns) with a copy of reason. */
TR_HIDDEN void tr__ctx_end(tr_ctx *ctx, const tr_reason *reason);

/* The running actor, worker and received-message bookkeeping behind a tr_ctx (actor.c). */
TR_HIDDEN tr_actor *tr__ctx_actor(tr_ctx *ctx);
TR_HIDDEN struct tr_worker *tr__ctx_worker(tr_ctx *ctx);
/* If m is the message being received, the runtime will no longer free it after receive. */
TR_HIDDEN void tr__ctx_release_cur(tr_ctx *ctx, const tr_msg *m);

/* ---- links, monitors and exit signals (link.c) --------------------------------------------- */

/* The actor's ext, allocated on first use (runner or spawner only). NULL when out of memory. */
TR_HIDDEN tr_actor_ext *tr__ext_get(tr_actor *a);
/* Frees the ext of an ending actor (its stash counted as dropped, its wake-up cancelled). */
TR_HIDDEN void tr__ext_free(tr_actor *a);
/* Adds / removes pid in a's link set (a's runner, or a not yet visible); O(1) expected. Adding
 * a member is TR_OK; TR_ENOMEM (set unchanged) or TR_EINVAL (pid 0). */
TR_HIDDEN int tr__link_add(tr_actor *a, tr_pid pid);
TR_HIDDEN void tr__link_del(tr_actor *a, tr_pid pid);
/* Whether pid is in the link set of x (x may be NULL). */
TR_HIDDEN bool tr__link_has(const tr_actor_ext *x, tr_pid pid);
/* A message carrying a reason as payload ([kind, code, text]); NULL when out of memory. */
TR_HIDDEN tr_msg *tr__reason_msg(uint32_t type, uint32_t flags, const tr_reason *r);
/* Sends a runtime signal (any thread). */
TR_UNIT int tr__signal(struct tr_system *sys, struct tr_worker *w, tr_pid from, tr_pid to,
                       uint32_t sig, uint64_t corr, const tr_reason *reason);
/* Handles a signal popped by the running actor (consumes m). Returns a message to hand to
 * receive (an EXIT for a trapping actor), or NULL. May end the actor (ctx->ending). */
TR_HIDDEN tr_msg *tr__signal_handle(tr_ctx *ctx, tr_msg *m);
/* For a DOWN popped by the running actor: true if its monitor is still held (now removed);
 * false when it was demonitored (m is freed). */
TR_HIDDEN bool tr__down_filter(tr_actor *a, tr_msg *m);
/* A signal whose target is gone: a link or monitor request is answered with noproc (or with
 * `reason`, when the target ended with it queued). Consumes m. */
TR_UNIT void tr__signal_bounce(struct tr_system *sys, tr_msg *m, const tr_reason *reason);
/* Tells links and monitors of an ending actor (pid self) why it ended. */
TR_HIDDEN void tr__links_notify(tr_actor *a, struct tr_worker *w, tr_pid self,
                                const tr_reason *reason);
/* True when the actor's queue (stash or mailbox) holds a kill signal for `self`. */
TR_HIDDEN bool tr__kill_queued(tr_actor *a, tr_pid self);

/* ---- requests (request.c) ------------------------------------------------------------------- */

/* Returns true when m may go to receive; false when it was a late reply or a stale timeout (then
 * it has been freed and counted). Updates the actor's pending set. */
TR_HIDDEN bool tr__pending_filter(tr_actor *a, tr_msg *m);
TR_HIDDEN void tr__pending_free(struct tr_system *sys, tr_actor *a);
/* Node node_id went down: each request of actor a (pid self) still waiting on one of its actors
 * gets a TR_MSG_NOPROC notice at once (from the node's loss, not at its timeout). */
TR_HIDDEN void tr__pending_node_down(struct tr_system *sys, struct tr_worker *w, tr_actor *a,
                                     tr_pid self, uint16_t node_id);
/* Records that actor a (pid self) waits on an actor of another node (`other`), so a's node tells
 * it when that node goes down (link.c). TR_ENOPROC if that node is not up. */
TR_HIDDEN int tr__link_note_remote(struct tr_system *sys, tr_actor *a, tr_pid self, tr_pid other);
/* tr_system_call without the check on the message type (runtime requests such as a supervisor's). */
/* tr_request without the check on the type (runtime protocols use system types). */
TR_HIDDEN int tr__request(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t *corr);
TR_UNIT int tr__call(struct tr_system *sys, tr_pid to, tr_msg *m, unsigned timeout_ms,
                     tr_msg **reply_out);
/* The end of a turn: sets sched to idle unless messages wait; true when the caller still owns
 * the actor (messages wait, or one arrived as it let go) and must run it again. */
TR_HIDDEN bool tr__release_turn(tr_actor *a);
/* Runs a port's callbacks for what its mailbox holds, on the calling thread (port.c). */
TR_HIDDEN void tr__port_run(tr_actor *a);
/* Wakes the thread blocked in tr_system_call on this waiter (a futex on a->sched). */
TR_HIDDEN void tr__waiter_signal(tr_actor *a);

/* ---- the remote layer, as the core sees it ------------------------------------------------- */

/* The transport seam (CAF's backend pattern). The core knows no transport: a message for another
 * node's pid, a link or monitor across nodes and a node left running at tr_system_free go through
 * this table of operations, which the node layer (runtime/src/dist/, troupe::dist) installs in
 * sys->remote when tr_node_start starts a node, before it publishes the node in sys->node. The
 * table is static and stays installed (the node's own operations see whether a node is running),
 * so a reader never sees it change under it. Until one is installed the core behaves as a node
 * alone: another node's pid is a dead letter. No object of the core refers to a symbol of dist
 * (tests/link checks it with nm). */
struct tr_node;
typedef struct tr__remote_ops {
    /* Queues m for the node that owns `to` (a pid of another node, or none). TR_ENOPROC (a
     * dead letter) when that node is not up, TR_EFULL when the queue towards it is full. */
    int (*route)(struct tr_system *sys, tr_pid to, tr_msg *m);
    /* Records that local actor `local` holds a link or monitor with an actor of node_id, so it
     * gets TR_SIG_NODEDOWN if that node goes down. TR_ENOPROC if node_id is not up. */
    int (*interest)(struct tr_system *sys, uint16_t node_id, tr_pid local);
    /* Forgets `local` (it ended). */
    void (*forget)(struct tr_system *sys, tr_pid local);
    /* Stops and frees a node its user left running; called by tr_system_free. */
    void (*free)(struct tr_node *n);
} tr__remote_ops;

/* The seam's calls, for the core (actor.c, link.c, port.c, system.c). */
TR_HIDDEN int tr__remote_route(struct tr_system *sys, tr_pid to, tr_msg *m);
TR_HIDDEN int tr__remote_interest(struct tr_system *sys, uint16_t node_id, tr_pid local);
TR_HIDDEN void tr__remote_forget(struct tr_system *sys, tr_pid local);
/* Installs the node layer's table (tr_node_start; the same table every time). */
TR_UNIT void tr__remote_install(struct tr_system *sys, const tr__remote_ops *ops);

/* ---- supervisors (supervisor.c) ------------------------------------------------------------ */

/* Checks a supervisor spec (recursively): TR_OK or TR_EINVAL. */
TR_HIDDEN int tr__sup_spec_check(const tr_sup_spec *spec, unsigned depth);
/* True when b is the supervisors' behaviour. */
TR_HIDDEN bool tr__is_supervisor(const tr_behaviour *b);
/* A request (for tr__request) a supervisor answers at once with a msgpack map: its parent,
 * strategy, restarts, running and total children, and the first `cap` children in start order
 * (id, pid, restarts, whether a supervisor, behaviour) — see sup_children in supervisor.c. */
TR_HIDDEN tr_msg *tr__sup_children_request(unsigned cap);

/* ---- counters per behaviour (stats.c) ------------------------------------------------------ */

/* Actors are counted per behaviour name (troupe/metrics.h: the troupe_actor_... families) in
 * rows of counters: one row per name per worker, written by that worker alone with plain adds
 * (as its other counters), and one per name for every other thread (atomic adds); a render sums
 * them. Nothing walks the actors: a render costs the same at 10 or 1,000,000 of them. */
#ifndef TR_METRICS
#define TR_METRICS 1        /* 0: the per-behaviour counting compiled out (cmake -DTROUPE_METRICS=OFF) */
#endif
#define TR_BEH_MAX 256u     /* behaviour names counted apart */
#define TR_BEH_NONE 0u      /* not an actor (a port, a call's waiter): not written out */
#define TR_BEH_OTHER 1u     /* names past the first TR_BEH_MAX - 2 */
#define TR_BEH_CACHE 1024u  /* behaviour pointers remembered (more: looked up by name, locked) */

enum {
    TR_BC_RECEIVED,         /* queued into its actors' mailboxes (signals included), as of
                             * each actor's last turn */
    TR_BC_POPPED,           /* taken out of them: handled, or dropped once queued */
    TR_BC_QDROPPED,         /* dropped once queued (drop_oldest, leaky excess, left at the end) */
    TR_BC_SDROPPED,         /* dropped on arrival (drop_newest at capacity) */
    TR_BC_REJECTED,         /* refused with TR_EFULL */
    TR_BC_SENT,             /* sent by its actors (sends, requests, replies, forwards) */
    TR_BC_SPAWNED,
    TR_BC_ENDED,
    TR_BC_FAILED,           /* ended with an error or killed */
    TR_BC_RESTARTS,         /* spawned by a supervisor as a restart */
    TR_BC_LIMIT_WAITS,      /* times parked for its rate limit */
    TR_BC_LIMIT_WAIT_NS,    /* time parked for it */
    TR_BC_LIMIT_TOKENS,     /* messages its rate limit let through */
    TR_BC_N
};

typedef struct tr_beh_row {
    _Atomic uint64_t c[16];     /* TR_BC_N used: a power of two, so a row's address is a shift */
} tr_beh_row;
_Static_assert(TR_BC_N <= 16, "a row holds every counter");
#define TR_BEH_ROW_SHIFT 7u     /* log2(sizeof(tr_beh_row)) */
_Static_assert(sizeof(tr_beh_row) == 1u << TR_BEH_ROW_SHIFT, "a row's offset is a shift");
_Static_assert((TR_BEH_MAX - 1) << TR_BEH_ROW_SHIFT <= UINT16_MAX, "an offset fits tr_actor.boff");

/* The names counted, and which row each behaviour pointer goes to. */
typedef struct tr_beh_table {
    pthread_mutex_t lock;
    _Atomic unsigned n;                         /* rows named (names[0..n) are set) */
    char *names[TR_BEH_MAX];
    _Atomic uint32_t depth_max[TR_BEH_MAX];     /* the largest mailbox any of its actors had */
    _Atomic(const tr_behaviour *) keys[TR_BEH_CACHE];
    _Atomic uint16_t vals[TR_BEH_CACHE];
    unsigned nkeys;                             /* (lock) */
} tr_beh_table;

/* The behaviour's row (TR_BEH_OTHER when the names are all taken). From any thread. */
TR_HIDDEN uint16_t tr__beh_index(struct tr_system *sys, const tr_behaviour *b);
/* The same as a byte offset (tr_actor.boff), for a spawn on worker w whose w->last_beh is not b
 * (remembered there then), or on no worker whose tr__tl_spawn is not b's (remembered there). */
TR_HIDDEN uint16_t tr__beh_boff(struct tr_system *sys, struct tr_worker *w, const tr_behaviour *b);
/* The last row found by a spawn on this thread when it is no worker: for the many spawns from
 * outside (tr_system_spawn in a loop). The serial tells a new system at a freed one's address. */
typedef struct tr__spawn_cache {
    uint64_t serial;
    const tr_behaviour *b;
    uint16_t boff;
} tr__spawn_cache;
TR_HIDDEN extern _Thread_local tr__spawn_cache tr__tl_spawn;
/* The counters, the table and the system's registry with its collector (tr_system_new), and
 * their end (tr_system_free). */
TR_HIDDEN int tr__stats_init(struct tr_system *sys);
TR_HIDDEN void tr__stats_free(struct tr_system *sys);
struct tr_metrics;
/* Keeps a registry alive until one more tr_metrics_free: a store holds its system's, so that
 * closing it after tr_system_free (which the suite does) removes its collector safely. */
TR_UNIT void tr__metrics_hold(struct tr_metrics *m);
/* Adds the actors spawned and ended, summed over every behaviour's rows, to *spawned, *ended. */
TR_HIDDEN void tr__stats_lives(struct tr_system *sys, uint64_t *spawned, uint64_t *ended);
/* A guest's rows (tr_guest_new), summed by renders until tr__stats_guest_remove adds them to
 * the system's (tr_guest_free). */
TR_HIDDEN void tr__stats_guest_add(struct tr_system *sys, struct tr_worker *g);
TR_HIDDEN void tr__stats_guest_remove(struct tr_system *sys, struct tr_worker *g);

/* ---- scheduler (sched.c) -------------------------------------------------------------------- */

#define TR_RING_SIZE 256u
#define TR_BATCH_HOOKS 8u  /* tr__at_batch_end's per thread (the stores, the peers written to) */
#define TR_BATCH_TURNS 16u /* a worker runs them after this many turns at most, */
#define TR_BATCH_NS 100000u /* or before a turn that starts this long after the first was asked */

typedef struct tr_worker {
    struct tr_system *sys;
    unsigned id;
    pthread_t thread;
    /* ring: a bounded FIFO the owner pushes at tail; owner and thieves take from head by CAS */
    _Alignas(TR_CACHELINE) _Atomic uint32_t head;
    _Alignas(TR_CACHELINE) _Atomic uint32_t tail;
    _Atomic(tr_actor *) ring[TR_RING_SIZE];
    /* inbox: actors whose home this worker is, made runnable by other workers (MPSC) */
    _Alignas(TR_CACHELINE) tr_mpsc inbox;
    _Atomic uint32_t busy;          /* 1 while running actors, 0 while searching or parked */
    /* owner only */
    _Alignas(TR_CACHELINE) tr_actor *next_slot; /* LIFO slot: run next, never stolen */
    unsigned next_streak;
    uint32_t rng;
    unsigned tick;
    uint32_t *seen_head;            /* search: each victim's ring head when last looked at */
    unsigned *seen_round;           /* search: the round it was seen to move */
    tr_actor *free_actors;          /* per-worker header cache */
    unsigned nfree_actors;
    /* counters: written by the owner only (plain adds), read by tr_system_stats_get */
    _Atomic uint64_t spawned;
    _Atomic uint64_t ended;
    /* parking */
    _Alignas(TR_CACHELINE) _Atomic uint32_t sleeping; /* futex word: 1 while parked */
    _Atomic uint64_t steals;
    _Atomic uint64_t parks;
    const tr_behaviour *last_beh;   /* the behaviour last spawned here, and its row (a cache) */
    uint16_t last_boff;
    bool guest;                     /* a tr_guest: an outside thread, not in sys->workers */
    struct tr_worker *gnext;        /* a guest: the next in sys->guests (guests_lock) */
    /* tr__at_batch_end's, until this thread's batch of turns ends (owner only) */
    struct {
        void (*fn)(void *);
        void *arg;
    } hooks[TR_BATCH_HOOKS];
    unsigned nhooks;
    unsigned hook_turns;            /* turns run since the first of them was asked for */
    uint64_t hook_ns;               /* when that was (a worker's: tr__now_ns) */
    /* counters per behaviour (stats.c), written by this thread alone; here rather than behind a
     * pointer, so a turn's end finds its behaviour's row at w + boff with no load */
    _Alignas(TR_CACHELINE) tr_beh_row brows[TR_BEH_MAX];
} tr_worker;

/* The worker running on this thread, if it belongs to sys. */
TR_UNIT tr_worker *tr__current_worker(struct tr_system *sys);
/* Makes a (now scheduled) actor runnable: local queue of w, or the global queue if w is NULL. */
TR_HIDDEN void tr__schedule(struct tr_system *sys, tr_worker *w, tr_actor *a);
/* True when w has nothing queued but the running actor (its yield would only invite a thief). */
TR_HIDDEN bool tr__worker_idle_otherwise(tr_worker *w);
/* Asks for fn(arg) to run when this thread's batch of turns ends, once per batch however often
 * it is asked: work the turns can share (the store's commit). A guest's batch ends in
 * tr_guest_leave, after its turns and before its leftovers go to the workers; a worker's when it
 * runs out of local work (before it looks elsewhere or sleeps), after TR_BATCH_TURNS turns, or
 * before a turn that would start TR_BATCH_NS after the first ask or is a blocking actor's.
 * TR_HOOK_ADDED the first time in a batch, TR_HOOK_ALREADY after; TR_HOOK_NONE when this thread
 * is not a worker or guest of sys, or has no room left. */
enum { TR_HOOK_NONE, TR_HOOK_ADDED, TR_HOOK_ALREADY };
TR_UNIT int tr__at_batch_end(struct tr_system *sys, void (*fn)(void *), void *arg);
/* Puts an actor that used its whole turn back at the tail of w's queue. */
TR_HIDDEN void tr__yield(tr_worker *w, tr_actor *a);
TR_HIDDEN int tr__sched_start(struct tr_system *sys);
/* True when every worker is parked and no queue holds a runnable actor. */
TR_HIDDEN bool tr__sched_quiescent(struct tr_system *sys);
/* Wakes all workers and makes them return; joins them. */
TR_HIDDEN void tr__sched_halt(struct tr_system *sys);

/* ---- timers (timer.c) ----------------------------------------------------------------------- */

TR_HIDDEN int tr__timer_start(struct tr_system *sys);
/* Cancels every timer, ends the loop thread and joins it — unless a hook is set: then the loop
 * runs on for it alone, and tr__timer_hook_clear ends and joins it. */
TR_HIDDEN void tr__timer_halt(struct tr_system *sys);
/* A hook run on the timer thread (the node's tick): returns in how many ns it wants to run again
 * (at least 1 ms is waited; tr__timer_hook_poke runs it sooner). */
typedef uint64_t (*tr__tick_fn)(void *arg);
/* Sets the system's one hook; its first run comes at once. TR_EEXIST: one is set; TR_ESTOPPED:
 * the timers were halted. The hook outlives tr__timer_halt (the system's join): the node ticks
 * until it is stopped, after the system. */
TR_UNIT int tr__timer_hook_set(struct tr_system *sys, tr__tick_fn fn, void *arg);
/* Runs the hook at the loop's next pass (any thread, any lock but the hook's own caller's; one
 * wake-up for a burst of pokes). */
TR_UNIT void tr__timer_hook_poke(struct tr_system *sys);
/* Unsets the hook; waits out a run under way (never call it from the hook). After it returns the
 * hook does not run again. */
TR_UNIT void tr__timer_hook_clear(struct tr_system *sys);
/* Arms a timer that delivers m (or copies of it when interval) to `to`. */
TR_HIDDEN int tr__timer_add(struct tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms,
                            bool interval, tr_timer *out);
/* A one-shot timer armed without waking the timer thread (it is inserted within DRAIN_MS, due
 * from now): for request timeouts. Delays under 50 ms are armed at once. */
TR_HIDDEN int tr__timer_add_lazy(struct tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms,
                                 tr_timer *out);
/* Cancels without waking the timer thread: it may still fire in the next DRAIN_MS. */
TR_HIDDEN int tr__timer_cancel_lazy(struct tr_system *sys, tr_timer id);
TR_HIDDEN void tr__timer_free(struct tr_system *sys);
/* Parks the running actor `a` until due_ns (or later; never earlier): sets sched to parked under
 * the wheel's lock, so the wake-up cannot come first and no one frees a's ext while it is
 * queued. After this the caller must not touch a's ext (a signal may run the actor elsewhere). */
TR_HIDDEN void tr__wake_at(struct tr_system *sys, tr_actor *a, uint64_t due_ns);
/* Removes a's pending wake-up, if any. */
TR_HIDDEN void tr__wake_cancel(struct tr_system *sys, tr_actor *a);

/* ---- the system (system.c) ------------------------------------------------------------------ */

typedef struct tr_timers tr_timers;

enum { TR_SYS_NEW = 0, TR_SYS_RUNNING, TR_SYS_STOPPING, TR_SYS_JOINED };

struct tr_system {
    tr_system_opts opts;
    unsigned nworkers;
    tr_worker *workers;

    /* actors: chunk table (slot >> TR_CHUNK_SHIFT) and the global free lists */
    _Atomic(tr_actor *) *chunks;
    unsigned nchunks;
    pthread_mutex_t pool_lock;
    tr_actor *free_batches;         /* stack of chains of exactly TR_ACTOR_BATCH headers */
    tr_actor *free_loose;           /* single headers (freed by threads that are not workers) */

    /* global injection queue */
    pthread_mutex_t inject_lock;
    tr_actor *inject_head, *inject_tail;
    _Atomic size_t inject_len;

    /* parking */
    _Alignas(TR_CACHELINE) _Atomic unsigned nparked;
    _Atomic unsigned nsearching;
    _Atomic int halt;               /* workers return when set */

    _Alignas(TR_CACHELINE) _Atomic int state;
    _Atomic long ext_inflight;      /* outside threads inside a send/spawn (see tr__ext_enter) */
    _Atomic int stop_requested;
    pthread_mutex_t state_lock;
    pthread_cond_t state_cond;

    tr_timers *timers;

    /* counters of threads that are not workers (workers count in tr_worker) */
    _Alignas(TR_CACHELINE) _Atomic uint64_t spawned;
    _Atomic uint64_t ended;
    _Atomic uint64_t dead_letters;
    _Atomic uint64_t late_replies;
    _Atomic uint64_t next_ref;      /* monitor references */
    _Atomic int ending_all;         /* join is ending every actor: links stay silent */
    _Atomic(struct tr_node *) node; /* the node layer, when started (dist/node.c) */
    _Atomic(const tr__remote_ops *) remote; /* its operations (the transport seam, above) */
    _Atomic long node_users;        /* threads using `node` (it is freed when this is 0) */
    _Atomic unsigned spin_rounds;   /* idle workers' search rounds before parking (sched.c) */
    _Atomic(struct tr_registry *) registry; /* local names (registry.c), made on first use */
    tr_beh_row *brows;              /* counters per behaviour of threads that are neither
                                     * workers nor guests, and of guests freed (atomic adds) */
    pthread_mutex_t guests_lock;    /* guards `guests` */
    tr_worker *guests;              /* live guests (tr_guest_new), whose rows a render sums */
    tr_beh_table *behs;
    uint64_t serial;                /* this system among those the process made (stats.c) */
    struct tr_metrics *metrics;     /* tr_system_metrics */
    char name[65];                  /* its node's name, for log lines (written once, then named) */
    _Atomic int named;              /* 0: no name; 1: being written; 2: name is set for good */
};

/* Names the system after its first node (tr_node_start), for the log lines the core writes
 * about it; a later name is ignored (a line must never read a name being rewritten). */
TR_UNIT void tr__system_name_set(struct tr_system *sys, const char *name);
/* "NAME: " once the system is named, else "": the prefix of the core's log lines about it. */
TR_HIDDEN const char *tr__system_log_prefix(struct tr_system *sys, char buf[68]);

/* The pid of header a's current incarnation on this node. */
static inline tr_pid tr__pid_of(const struct tr_system *sys, const tr_actor *a)
{
    return ((tr_pid)sys->opts.node_id << 48) | ((tr_pid)a->gen << TR_SLOT_BITS) | a->slot;
}

/* Adds one to a counter owned by worker w (a plain add: only w writes it), or to the system-wide
 * atomic when the caller is not a worker (or is a guest, whose counters nobody sums). */
#define TR_COUNT(sys, w, field)                                                                   \
    do {                                                                                          \
        if ((w) != NULL && !(w)->guest)                                                           \
            atomic_store_explicit(&(w)->field,                                                    \
                                  atomic_load_explicit(&(w)->field, memory_order_relaxed) + 1,    \
                                  memory_order_relaxed);                                          \
        else                                                                                      \
            atomic_fetch_add_explicit(&(sys)->field, 1, memory_order_relaxed);                    \
    } while (0)

/* Adds n to a counter only this thread writes (others read it with relaxed loads). On x86-64 one
 * unlocked `add` to memory: an aligned 8-byte store is never seen torn, and with a single writer
 * nothing is lost; a relaxed load and store elsewhere (and under TSan, which must see it). The
 * per-behaviour counters sit on every turn's path, where the two instructions saved count. */
#if defined(__SANITIZE_THREAD__)
#define TR_TSAN_ 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TR_TSAN_ 1
#endif
#endif
static inline void tr__own_add(_Atomic uint64_t *c, uint64_t n)
{
#if defined(__x86_64__) && !defined(TR_TSAN_)
    __asm__("addq %1, %0" : "+m"(*(uint64_t *)c) : "re"(n));
#else
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
#endif
}

/* The row of actor a's behaviour (its index in the tables). */
static inline unsigned tr__bidx(const tr_actor *a)
{
    return (unsigned)atomic_load_explicit(&a->boff, memory_order_relaxed) >> TR_BEH_ROW_SHIFT;
}

/* Adds n to counter `field` of behaviour row bidx: w's row (a worker's or a guest's: only its
 * thread writes it), or the system's (an atomic add) when the caller is neither (w NULL). */
static inline void tr__bcount(struct tr_system *sys, tr_worker *w, unsigned bidx, unsigned field,
                              uint64_t n)
{
#if TR_METRICS
    if (w != NULL)
        tr__own_add(&w->brows[bidx].c[field], n);
    else
        atomic_fetch_add_explicit(&sys->brows[bidx].c[field], n, memory_order_relaxed);
#else
    (void)sys, (void)w, (void)bidx, (void)field, (void)n;
#endif
}

/* As tr__bcount, with the row given as a byte offset (tr_actor.boff). */
static inline void tr__bcount_off(struct tr_system *sys, tr_worker *w, unsigned boff,
                                  unsigned field, uint64_t n)
{
#if TR_METRICS
    if (w != NULL)
        tr__own_add((_Atomic uint64_t *)((char *)w->brows + boff) + field, n);
    else
        atomic_fetch_add_explicit((_Atomic uint64_t *)((char *)sys->brows + boff) + field, n,
                                  memory_order_relaxed);
#else
    (void)sys, (void)w, (void)boff, (void)field, (void)n;
#endif
}

/* A header that was not an actor's (a port, a call's waiter) goes back to the pool: what its
 * mailbox saw is nobody's to count. */
static inline void tr__acct_reset(tr_actor *a)
{
    a->acct_pushed = a->acct_popped = atomic_load_explicit(&a->popped, memory_order_relaxed);
}

/* At the end of each of actor a's turns, by its runner w (a worker or a guest, never NULL): what
 * its mailbox took in and gave out since the last time, and the `sent` of the turn, added to its
 * behaviour's row in w's counters. Some 14 instructions: the row is at w + boff, the adds are
 * single instructions, and nothing is tested. */
static inline void tr__bcount_turn(tr_worker *w, tr_actor *a, uint64_t sent)
{
#if TR_METRICS
    _Atomic uint64_t *c =
        (_Atomic uint64_t *)((char *)w->brows + atomic_load_explicit(&a->boff, memory_order_relaxed));
    /* in = pushed - acct_pushed (mod 2^64: a sender may take its count back), then acct_pushed
     * += in: the same as = pushed, in one instruction less (the barrier keeps the compiler
     * from turning it back into a copy and a store) */
    uint64_t in = atomic_load_explicit(&a->pushed, memory_order_relaxed) - a->acct_pushed;
    uint64_t out = atomic_load_explicit(&a->popped, memory_order_relaxed) - a->acct_popped;
    __asm__("" : "+r"(in), "+r"(out));
    tr__own_add(&c[TR_BC_RECEIVED], in);
    a->acct_pushed += in;
    tr__own_add(&c[TR_BC_POPPED], out);
    a->acct_popped += out;
    tr__own_add(&c[TR_BC_SENT], sent);
#else
    (void)w, (void)a, (void)sent;
#endif
}

/* The last turn's figures of an actor that ends on no worker (at the system's end), with its
 * end (and failure), into the system's rows (stats.c). */
TR_HIDDEN void tr__bcount_end_shared(struct tr_system *sys, tr_actor *a, uint64_t sent,
                                     bool failed);

/* An actor's end counted (after tr__actor_finish): its behaviour's exits (and failures), with its
 * last turn's figures and `sent`. With the counting compiled in, these rows are also the system's
 * spawned and ended figures (tr_system_stats_get sums them), so the end costs no other counter. */
static inline void tr__count_end(struct tr_system *sys, tr_worker *w, tr_actor *a, uint64_t sent,
                                 bool failed)
{
#if TR_METRICS
    if (TR_LIKELY(w != NULL)) {
        /* its mailbox is closed and drained: everything pushed was popped (a sender that came
         * too late took its count back), so `popped` stands for both */
        _Atomic uint64_t *c = (_Atomic uint64_t *)((char *)w->brows +
                                                   atomic_load_explicit(&a->boff, memory_order_relaxed));
        uint64_t po = atomic_load_explicit(&a->popped, memory_order_relaxed);
        uint64_t in = po - a->acct_pushed, out = po - a->acct_popped;
        __asm__("" : "+r"(in), "+r"(out)); /* (see tr__bcount_turn) */
        tr__own_add(&c[TR_BC_RECEIVED], in);
        a->acct_pushed += in; /* = popped: where the header's next actor starts */
        tr__own_add(&c[TR_BC_POPPED], out);
        a->acct_popped += out;
        tr__own_add(&c[TR_BC_SENT], sent);
        tr__own_add(&c[TR_BC_ENDED], 1);
        if (failed)
            tr__own_add(&c[TR_BC_FAILED], 1);
    } else if (atomic_load_explicit(&a->popped, memory_order_relaxed) == a->acct_pushed &&
               a->acct_pushed == a->acct_popped && sent == 0 && !failed) {
        /* (an idle actor ended at the system's end, say: its end is all there is to count) */
        atomic_fetch_add_explicit(&sys->brows[tr__bidx(a)].c[TR_BC_ENDED], 1, memory_order_relaxed);
    } else {
        tr__bcount_end_shared(sys, a, sent, failed);
    }
#else
    (void)a, (void)sent, (void)failed;
    TR_COUNT(sys, w, ended);
#endif
}

/* Outside threads (not workers) bracket every send/spawn with these: enter fails with
 * TR_ESTOPPED once the system is stopping, and the graceful stop waits for those inside to leave
 * before it ends actors, so no outside send can schedule an actor being ended. */
TR_UNIT int tr__ext_enter(struct tr_system *sys);
/* Lowers the idle spin to `rounds` unless the user chose it (node.c: I/O threads need CPU). */
TR_UNIT void tr__sched_spin_hint(struct tr_system *sys, unsigned rounds);
TR_UNIT void tr__ext_leave(struct tr_system *sys);

/* For the few functions on every message's path whose locals hold no buffer whose size input
 * decides (a context, a reader, msgpack's fixed 9-byte scratch): the hardened build's stack canary
 * (-fstack-protector-strong) cost ~3% of pingpong's instructions there, and nothing to protect
 * (docs/security.md). Everything else keeps its canary. */
#if defined(__has_attribute)
#if __has_attribute(no_stack_protector)
#define TR_NO_CANARY __attribute__((no_stack_protector))
#endif
#endif
#ifndef TR_NO_CANARY
#define TR_NO_CANARY
#endif

/* Debug assertions of the runtime's own invariants (never of input: bad input is an error code).
 * Checked when TROUPE_DEBUG is set — Debug builds and the sanitizer builds, so the suite runs
 * with them under ASan and TSan — and compiled out otherwise. A failed one names the condition
 * and where, and aborts: it is a bug in the runtime. */
#if TROUPE_DEBUG
TR_UNIT _Noreturn void tr__assert_fail(const char *cond, const char *file, int line);
#define TR_ASSERT(c) ((c) ? (void)0 : tr__assert_fail(#c, __FILE__, __LINE__))
#else
#define TR_ASSERT(c) ((void)0)
#endif

/* Monotonic clock in nanoseconds. */
#define tr__now_ns tr_now_ns /* the public clock (troupe.h) */

#endif /* TROUPE_INTERNAL_H */
