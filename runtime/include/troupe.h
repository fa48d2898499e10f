/**
 * @file
 * troupe.h — the public API of libtroupe, an actor runtime in C.
 *
 * Actors are scheduled on a pool of worker threads; each has a lock-free mailbox; messages carry a
 * type tag, the sender's pid, a correlation id and a msgpack payload. Timers run on a libuv loop of
 * their own. Everything public is prefixed tr_ / TR_; every function that can fail returns a
 * negative TR_E* code (see tr_strerror) and never aborts on bad input.
 *
 * Threading and naming: functions taking a tr_ctx (tr_send, tr_spawn, tr_request, tr_cancel_timer,
 * ...) are for use inside an actor's callbacks (the ctx is only valid during the callback); the
 * same operation from outside any actor — an embedding app, a test, another thread — takes the
 * tr_system and is named tr_system_... (tr_system_send, tr_system_spawn, tr_system_call, ...).
 * Functions on another object are named after it (tr_node_..., tr_port_..., tr_sup_...).
 *
 * Ownership, one rule for every message: a tr_msg you made (tr_msg_new) or were given
 * (tr_system_call's reply) is yours until you hand it to a call that takes a message to deliver —
 * a send, reply, forward, request, call or timer; from that call on it is the runtime's, whether
 * the call succeeds or fails, and you never touch it again. A message you are not going to hand
 * on, free with tr_msg_free. A message your receive callback gets is the runtime's: it is freed
 * after the callback returns, unless you send it on.
 *
 * Lifecycle, one vocabulary for every object: _new / _open / _start make it; one call ends it and
 * frees it, after which the pointer is gone — _stop for an object that runs threads or
 * connections (tr_node_stop, tr_web_stop, tr_http_stop), _close for one that holds work that must
 * be flushed or answered first (tr_store_close, tr_journal_close, tr_port_close), _free for plain
 * memory (tr_msg_free, tr_guest_free, tr_shard_free, the config results). The system alone has
 * three steps, as it outlives everything built on it: tr_system_stop asks every actor to end,
 * tr_system_join waits for that, tr_system_free frees it; end the objects built on a system
 * between its join and its free.
 */
#ifndef TROUPE_H
#define TROUPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

/* ---------------------------------------------------------------------------------------------
 * Version
 *
 * The version of these headers; tr_version gives that of the library the program runs with. The
 * build reads it from here (CMakeLists.txt), and the shared libraries' soname carries the major
 * version (libtroupe-core.so.0): a release that breaks the ABI changes it.
 * ------------------------------------------------------------------------------------------- */

/* (each #define alone on its line, its comment above: CMakeLists.txt reads them with a regex) */
/** The headers' major version: it changes with the ABI (the shared libraries' soname carries it). */
#define TR_VERSION_MAJOR 0
/** The headers' minor version. */
#define TR_VERSION_MINOR 1
/** The headers' patch level. */
#define TR_VERSION_PATCH 0
/** The three as one number, to compare: (major << 16) | (minor << 8) | patch. */
#define TR_VERSION_HEX ((TR_VERSION_MAJOR << 16) | (TR_VERSION_MINOR << 8) | TR_VERSION_PATCH)

/** The library's version as TR_VERSION_HEX computes it (a program built against other headers can
 * compare it with its own TR_VERSION_HEX). */
unsigned tr_version(void);
/** The library's version as "MAJOR.MINOR.PATCH"; never NULL. */
const char *tr_version_string(void);

/* ---------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------- */

enum {
    TR_OK = 0,
    TR_ENOMEM = -1,     /**< out of memory, or an internal table is full */
    TR_EINVAL = -2,     /**< an argument is invalid */
    TR_ENOPROC = -3,    /**< no such actor: the pid is null, stale, or the actor has ended */
    TR_ETIMEDOUT = -4,  /**< a request or call got no reply in time */
    TR_ESTOPPED = -5,   /**< the system is stopping or stopped */
    TR_EBADMSG = -6,    /**< a payload is malformed, or does not hold what the reader asked for */
    TR_ESTATE = -7,     /**< the call is not valid in the current state (e.g. start twice) */
    TR_ETOOBIG = -8,    /**< a size limit was exceeded */
    TR_EFULL = -9,      /**< a bounded queue is full */
    TR_EINTENSITY = -10,/**< a supervisor gave up: more restarts than its intensity allows */
    TR_EEXIST = -11,    /**< the name is already taken */
    TR_EIO = -12,       /**< an I/O error: a store unreadable, corrupt or failing; a port that
                         *   cannot be listened on */
    TR_ENOCONN = -13,   /**< the actor's node went down (or was never reached): no answer will come */
};

/** A short English description of a TR_E* code (or of TR_OK); never NULL. */
const char *tr_strerror(int err);

/** The runtime's clock: nanoseconds on CLOCK_MONOTONIC (the one its timeouts and deadlines use).
 * From any thread. */
uint64_t tr_now_ns(void);

/* ---------------------------------------------------------------------------------------------
 * Logging
 * ------------------------------------------------------------------------------------------- */

/** The runtime never writes to stderr itself: what it has to say goes through tr_log to the
 * process's log hook, one line per event — a supervisor's child crashing, being restarted, the
 * supervisor giving up (component "supervisor"); a peer up or down, a connection lost ("node");
 * a failed commit ("store"). A line about something of a node's system starts with the node's
 * name ("alpha: peer beta (node id 3) is up"). */
typedef enum tr_log_level {
    TR_LOG_ERROR = 0,   /**< something failed: a crash, a supervisor giving up, a lost commit */
    TR_LOG_WARN = 1,    /**< something is wrong but handled: a retry, a refused peer */
    TR_LOG_INFO = 2,    /**< what changed: a restart, a peer up or down (the default level) */
    TR_LOG_DEBUG = 3,   /**< details for whoever is chasing a problem */
} tr_log_level;
/** A log hook: one line (no newline) from `component` ("node", "supervisor", "store", ...). It may
 * be called from any thread, several at once; it must not call tr_log_set. */
typedef void (*tr_log_fn)(void *user, tr_log_level level, const char *component,
                          const char *line);
/** Installs the process's log hook (fn NULL: the default, which writes "troupe COMPONENT: LINE" to
 * stderr) and the most detailed level it gets: lines above `level` are dropped before they are
 * formatted. Until the first call, the level is TROUPE_LOG's ("error", "warn", "info" or "debug";
 * info when unset or not one of those). From any thread; lines being logged meanwhile go to the
 * old or the new hook. */
void tr_log_set(tr_log_fn fn, void *user, tr_log_level level);
/** The level lines are kept up to (a caller can skip building a costly line). */
tr_log_level tr_log_level_get(void);
/** Reads a level's name ("error", "warn", "info", "debug"; any case) into *out: TR_OK, or
 * TR_EINVAL (NULL or another name; *out untouched). */
int tr_log_level_parse(const char *name, tr_log_level *out);
/** Logs one line (printf format; cut at 1,000 bytes) through the hook, if level is kept. */
void tr_log(tr_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------------------------------------
 * Pids
 * ------------------------------------------------------------------------------------------- */

/** An actor's address: node id (16 bits) | generation (24 bits) | slot (24 bits). 0 is "no actor".
 * A slot is reused only with a new generation, so a stale pid never reaches a newer actor. */
typedef uint64_t tr_pid;
#define TR_PID_NONE ((tr_pid)0) /**< no actor */

/** The node id part of a pid. */
static inline uint16_t tr_pid_node(tr_pid p) { return (uint16_t)(p >> 48); }
/** The generation part of a pid. */
static inline uint32_t tr_pid_gen(tr_pid p) { return (uint32_t)(p >> 24) & 0xFFFFFFu; }
/** The local slot (serial) part of a pid. */
static inline uint32_t tr_pid_slot(tr_pid p) { return (uint32_t)p & 0xFFFFFFu; }

/* ---------------------------------------------------------------------------------------------
 * Messages
 * ------------------------------------------------------------------------------------------- */

/** A message: a type tag, the sender's pid, a correlation id and a msgpack payload (opaque). */
typedef struct tr_msg tr_msg;

/** Message types at or above this value are reserved for the runtime. */
#define TR_MSG_SYSTEM 0xFFFF0000u
/** Delivered to a requester when its tr_request got no reply in time; corr is the request's. */
#define TR_MSG_TIMEOUT (TR_MSG_SYSTEM + 1)
/** Delivered to an actor that traps exits when a linked actor ends (or one sends it tr_exit);
 * sender = the exiting pid. Decode the reason with tr_msg_reason. */
#define TR_MSG_EXIT (TR_MSG_SYSTEM + 2)
/** Delivered to a watcher when a monitored actor ends; sender = that pid, corr = the monitor's
 * reference. Decode the reason with tr_msg_reason (TR_REASON_NOPROC if it was already gone). */
#define TR_MSG_DOWN (TR_MSG_SYSTEM + 3)
/** Delivered to a requester whose request met a full mailbox with policy reject (a request sent
 * across nodes; locally tr_request / tr_system_call return TR_EFULL at once); corr is the request's. */
#define TR_MSG_REJECTED (TR_MSG_SYSTEM + 4)
/** Delivered to a requester whose request reached no actor: its target had ended (sent across
 * nodes; locally tr_request returns TR_ENOPROC at once). corr is the request's; tr_system_call returns
 * TR_ENOPROC instead. */
#define TR_MSG_NOPROC (TR_MSG_SYSTEM + 5)
/** Message types from here up are used by supervisors for their requests (tr_sup_*). */
#define TR_MSG_SUP_BASE (TR_MSG_SYSTEM + 0x100)

/** Allocates a message of the given type with room for `size_hint` payload bytes (it grows as
 * needed). Returns NULL when out of memory. Free with tr_msg_free unless it was handed to a send. */
tr_msg *tr_msg_new(uint32_t type, size_t size_hint);
/** Allocates a message whose payload is a copy of `len` bytes at `data`. NULL when out of memory. */
tr_msg *tr_msg_from_bytes(uint32_t type, const void *data, size_t len);
/** Frees a message the caller owns (NULL is ignored). */
void tr_msg_free(tr_msg *m);

/** The message's type tag. */
uint32_t tr_msg_type(const tr_msg *m);
/** The pid of the actor that sent the message (TR_PID_NONE from outside any actor). */
tr_pid tr_msg_sender(const tr_msg *m);
/** The correlation id: non-zero on requests, their replies and their timeouts. */
uint64_t tr_msg_corr(const tr_msg *m);
/** True when the message is a reply to a tr_request / tr_system_call (sent with tr_reply). */
bool tr_msg_is_reply(const tr_msg *m);
/** The payload bytes (valid while the message is). */
const void *tr_msg_data(const tr_msg *m);
/** The payload length in bytes. */
size_t tr_msg_size(const tr_msg *m);

/** A msgpack packer that appends to the message's payload (valid while the message is). Packing
 * fails with a non-zero msgpack return only when out of memory or above 1 GiB. */
msgpack_packer *tr_msg_packer(tr_msg *m);
/** Appends raw bytes to the payload. TR_OK, TR_ENOMEM or TR_ETOOBIG. */
int tr_msg_append(tr_msg *m, const void *data, size_t len);

/** Scalars, for the payloads of one value or a few: each appends one msgpack object (TR_OK, or
 * TR_ENOMEM when the payload cannot grow), as tr_msg_packer's msgpack_pack_* would. */
int tr_msg_put_u64(tr_msg *m, uint64_t v);
/** A signed integer (see tr_msg_put_u64). */
int tr_msg_put_i64(tr_msg *m, int64_t v);
/** A string of len bytes (any bytes; not NUL-terminated). */
int tr_msg_put_str(tr_msg *m, const char *s, size_t len);
/** A new message whose payload is the one unsigned integer v; NULL when out of memory. */
tr_msg *tr_msg_new_u64(uint32_t type, uint64_t v);
/** Reads the payload's first object as an unsigned integer: TR_OK, or TR_EBADMSG (empty,
 * malformed, or not an unsigned integer; *out is then 0). */
int tr_msg_get_u64(const tr_msg *m, uint64_t *out);

/** A read cursor over a payload made of consecutive msgpack objects. Strings and bins returned by
 * the readers point into the message: keep the message alive while they are used. */
typedef struct tr_reader {
    const char *data;       /**< the payload (the reader's own: read it through the calls) */
    size_t len;             /**< its length */
    size_t off;             /**< where the next object starts */
    msgpack_unpacked obj;   /**< the object last read */
} tr_reader;

/** Starts reading the message's payload. Call tr_reader_done when finished. */
void tr_reader_init(tr_reader *r, const tr_msg *m);
/** Starts reading `len` bytes at `data` (any msgpack buffer). */
void tr_reader_init_bytes(tr_reader *r, const void *data, size_t len);
/** Releases the reader's memory. */
void tr_reader_done(tr_reader *r);
/** Reads the next object, whatever it is; *out is valid until the next read. TR_EBADMSG when the
 * payload ends or is malformed. */
int tr_read_object(tr_reader *r, const msgpack_object **out);
/** Reads the next object as a signed integer (TR_EBADMSG if it is not one or does not fit). */
int tr_read_i64(tr_reader *r, int64_t *out);
/** Reads the next object as an unsigned integer (TR_EBADMSG if it is not one). */
int tr_read_u64(tr_reader *r, uint64_t *out);
/** Reads the next object as a string: pointer into the message, not NUL-terminated. */
int tr_read_str(tr_reader *r, const char **s, size_t *len);
/** Reads the next object as a bin (or str): pointer into the message. */
int tr_read_bin(tr_reader *r, const void **p, size_t *len);
/** True when every object has been read. */
bool tr_reader_at_end(const tr_reader *r);

/* ---------------------------------------------------------------------------------------------
 * Systems
 * ------------------------------------------------------------------------------------------- */

/** A system: the worker threads, the actors they run, the timer loop (opaque). */
typedef struct tr_system tr_system;
/** The running actor, as its callbacks see it (valid during the callback only; opaque). */
typedef struct tr_ctx tr_ctx;

/** Called for each dead letter (a message to a dead or stale pid), on the sender's thread. */
typedef void (*tr_dead_letter_fn)(void *user, tr_pid to, const tr_msg *m);

/** A system's options (tr_system_opts_init gives the defaults). */
typedef struct tr_system_opts {
    unsigned workers;           /**< worker threads; 0 = number of online CPUs */
    unsigned msgs_per_turn;     /**< messages an actor handles before yielding; 0 = 64 */
    uint16_t node_id;           /**< node id stamped in pids; 0 = 1 */
    unsigned drain_timeout_ms;  /**< how long a graceful stop waits for queues to empty; 0 = 5000 */
    tr_dead_letter_fn dead_letter_hook; /**< optional: called (on the sender's thread) for each dead letter */
    void *dead_letter_user;     /**< given to dead_letter_hook */
    unsigned spin_rounds;       /**< how long an idle worker looks for work before it sleeps (about
                                 * 1 us a round); 0 = 128, or 8 once a node starts on a system with
                                 * a worker per CPU (its I/O threads need the CPU time) */
} tr_system_opts;

/** Fills `o` with the defaults. */
void tr_system_opts_init(tr_system_opts *o);
/** Creates a system (no thread runs yet). `opts` may be NULL for defaults. */
int tr_system_new(tr_system **out, const tr_system_opts *opts);
/** Starts the worker threads and the timer loop. */
int tr_system_start(tr_system *sys);
/** Asks the system to stop; returns at once. Callable from any thread, actors included. */
void tr_system_stop(tr_system *sys);
/** Waits for a stop to be asked, then stops gracefully: timers are cancelled, queued messages are
 * delivered (up to drain_timeout_ms), each live actor's terminate runs with reason shutdown, the
 * threads end. Not callable from an actor. */
int tr_system_join(tr_system *sys);
/** Frees a joined (or never started) system and everything it holds. */
void tr_system_free(tr_system *sys);

/** System-wide counters (monotonic, read without locks). */
typedef struct tr_system_stats {
    uint64_t spawned;           /**< actors spawned */
    uint64_t ended;             /**< actors ended */
    uint64_t alive;             /**< actors alive now */
    uint64_t dead_letters;      /**< sends to a dead or stale pid, and messages left in ended actors */
    uint64_t late_replies;      /**< replies arriving after their request timed out (dropped) */
    uint64_t steals;            /**< actors taken from another worker's queue */
    uint64_t parks;             /**< times a worker went to sleep */
} tr_system_stats;

/** Reads the system's counters. */
void tr_system_stats_get(tr_system *sys, tr_system_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Actors
 * ------------------------------------------------------------------------------------------- */

/** Why an actor ended. */
typedef enum tr_reason_kind {
    TR_REASON_NORMAL = 0,   /**< tr_stop */
    TR_REASON_SHUTDOWN,     /**< the system (or later, a supervisor) stopped it */
    TR_REASON_KILLED,       /**< killed without running its own logic */
    TR_REASON_ERROR,        /**< tr_fail, or receive returned non-zero */
    TR_REASON_NOPROC,       /**< (DOWN / EXIT only) the actor was already gone */
    TR_REASON_NOCONNECTION, /**< (DOWN / EXIT only) its node went down or became unreachable */
} tr_reason_kind;

/** Why an actor ended (its terminate's argument; EXIT and DOWN carry one too). */
typedef struct tr_reason {
    tr_reason_kind kind;    /**< normal, shutdown, killed, error, noproc, noconnection */
    int code;               /**< for TR_REASON_ERROR: the failure code */
    const char *text;       /**< for TR_REASON_ERROR: a description, or NULL */
} tr_reason;

/** An actor's behaviour: callbacks plus the size of the state the runtime allocates for it.
 * init (optional) runs in tr_spawn on the caller's thread; non-zero (or tr_fail: its code; tr_stop:
 * TR_ENOPROC) makes the spawn fail with that code, and terminate does not run. receive handles one message; non-zero ends the actor with TR_REASON_ERROR and that code.
 * terminate (optional) runs once when the actor ends, whatever the reason. The message passed to
 * receive is freed after it returns, unless it was sent on (tr_send of the same message).
 * turn_end (optional) runs after each turn (a batch of up to msgs_per_turn messages, 64 by
 * default, handled in a row) of an actor that goes on living: where work gathered during the turn is handed off at once (the
 * journal's group commit, troupe/store.h). */
typedef struct tr_behaviour {
    const char *name;       /**< for logs and reports */
    size_t state_size;      /**< bytes of state the runtime allocates (zeroed) for each actor */
    /** Optional: runs in the spawn, with the spawn's argument; non-zero fails the spawn. */
    int (*init)(tr_ctx *ctx, void *state, const void *arg);
    /** Handles one message; non-zero ends the actor with TR_REASON_ERROR and that code. */
    int (*receive)(tr_ctx *ctx, void *state, tr_msg *m);
    /** Optional: runs once when the actor ends, whatever the reason. */
    void (*terminate)(tr_ctx *ctx, void *state, const tr_reason *reason);
    /** Optional: runs after each turn of an actor that goes on living. */
    void (*turn_end)(tr_ctx *ctx, void *state);
} tr_behaviour;

/** Spawns an actor from outside any actor. `b` must outlive the actor. */
int tr_system_spawn(tr_system *sys, const tr_behaviour *b, const void *arg, tr_pid *out);
/** Spawns an actor from inside an actor. */
int tr_spawn(tr_ctx *ctx, const tr_behaviour *b, const void *arg, tr_pid *out);

/** What a full bounded mailbox does with one more message. */
typedef enum tr_overflow {
    TR_OVERFLOW_DROP_NEWEST = 0, /**< the new message is dropped (counted); the send reports TR_OK
                                  * (a request is refused instead: TR_EFULL) */
    TR_OVERFLOW_DROP_OLDEST,     /**< the oldest queued message is dropped to make room */
    TR_OVERFLOW_REJECT,          /**< the send fails with TR_EFULL (a request: its requester is told) */
} tr_overflow;

/** A mailbox rate limit. */
typedef enum tr_limit_kind {
    TR_LIMIT_NONE = 0,
    TR_LIMIT_TOKEN = 1, /**< token bucket: `rate`/s, up to `burst` tokens saved while idle */
    TR_LIMIT_LEAKY = 2, /**< leaky bucket: one message every 1/rate s; the queue is `capacity` */
} tr_limit_kind;

/** A rate limiter on its own: the cores of the mailbox buckets, for code that limits something
 * else (an HTTP route's admission, a client). Pure functions of (limiter, now): exact, in integers
 * (token amounts in units of 1e-9 token, leaky-bucket times in ns x rate, so nothing drifts and a
 * test with virtual time predicts every decision), and not thread-safe — hold a lock around a
 * limiter shared by threads. `now_ns` is tr_now_ns() or a test's clock; it must not go back. */
typedef struct tr_limiter {
    tr_limit_kind kind;     /**< token bucket or leaky bucket */
    uint64_t rate;          /**< per second, >= 1 */
    uint64_t burst;         /**< token bucket capacity, in tokens (>= 1) */
    uint64_t units;         /**< token bucket: saved tokens x 1e9 */
    uint64_t last_ns;       /**< token bucket: time of the last refill */
    __extension__ unsigned __int128 next; /**< leaky bucket: earliest next pass, in ns x rate */
} tr_limiter;
/** Sets up a limiter at now_ns. A token bucket starts full (burst saved tokens; 0 = 1), a leaky
 * bucket lets the first pass at once. rate 0 or TR_LIMIT_NONE: a limiter that never waits. */
void tr_limiter_init(tr_limiter *l, tr_limit_kind kind, uint64_t rate, uint64_t burst,
                     uint64_t now_ns);
/** Asks to let one through at now_ns: 0 when it may pass (the token is spent), else the ns to
 * wait before asking again (nothing is spent). */
uint64_t tr_limiter_take(tr_limiter *l, uint64_t now_ns);
/** Changes kind, rate and burst at run time, keeping what was saved (capped to the new burst). */
void tr_limiter_set(tr_limiter *l, tr_limit_kind kind, uint64_t rate, uint64_t burst,
                    uint64_t now_ns);

/** Mailbox options: set at spawn, changeable at run time with tr_mailbox_set. */
typedef struct tr_mailbox_opts {
    uint32_t capacity;      /**< queued messages at most; 0 = unbounded (leaky bucket: 0 = rate) */
    tr_overflow overflow;   /**< what a full mailbox does (leaky bucket: always drop_newest) */
    tr_limit_kind limit;    /**< rate limit on messages reaching receive */
    uint32_t rate;          /**< messages per second, at least 1 (limit != NONE) */
    uint32_t burst;         /**< token bucket: saved tokens at most (0 = 1) */
} tr_mailbox_opts;

/** Spawn options. Zero-initialised = the defaults of tr_spawn. */
typedef struct tr_spawn_opts {
    tr_mailbox_opts mailbox; /**< its mailbox's bound and rate limit */
    bool link;              /**< link the new actor to the spawning actor before it can run */
    bool trap_exits;        /**< start trapping exits (see tr_trap_exits) */
    uint32_t restarts;      /**< reported in tr_actor_stats.restarts (set by supervisors) */
    bool blocking;          /**< its turns may block (disk, network): run by workers only, never
                             * by a guest thread (tr_guest) such as an event loop */
} tr_spawn_opts;

/** Like tr_spawn, with options (opts may be NULL). `link` needs a spawning actor. */
int tr_spawn_ex(tr_ctx *ctx, const tr_behaviour *b, const void *arg, const tr_spawn_opts *opts,
                tr_pid *out);
/** Like tr_system_spawn, with options (`link` is invalid here: TR_EINVAL). */
int tr_system_spawn_ex(tr_system *sys, const tr_behaviour *b, const void *arg,
                       const tr_spawn_opts *opts, tr_pid *out);
/** Changes a live actor's mailbox options. Capacity and policy apply to the next send; the limit
 * applies from the actor's next turn (saved tokens are kept, capped to the new burst). */
int tr_mailbox_set(tr_system *sys, tr_pid pid, const tr_mailbox_opts *opts);

/** Per-actor counters. received = processed + dropped + rejected + depth (runtime signals such as
 * link requests count as received and processed). */
typedef struct tr_actor_stats {
    uint64_t received;      /**< messages that reached the mailbox (accepted or not) */
    uint64_t processed;     /**< handed to receive (or handled by the runtime, for signals) */
    uint64_t dropped;       /**< dropped: overflow, leaky excess, or left queued when it ended */
    uint64_t rejected;      /**< refused with TR_EFULL */
    uint64_t depth;         /**< queued now */
    uint64_t depth_max;     /**< high-water mark of depth (unbounded mailboxes: sampled, see docs) */
    uint64_t restarts;      /**< restarts of its supervisor's child before this incarnation */
    uint64_t token_wait_ns; /**< time spent parked for its rate limit (added when it wakes up) */
} tr_actor_stats;

/** Reads the counters of a live actor (TR_ENOPROC once it has ended). */
int tr_actor_stats_get(tr_system *sys, tr_pid pid, tr_actor_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Links, monitors, exit signals
 *
 * A link is bidirectional: when either actor ends with a reason other than normal, the other
 * receives an exit signal and ends with the same reason, unless it traps exits, in which case it
 * receives a TR_MSG_EXIT message instead. A monitor is one-way: the watcher receives TR_MSG_DOWN
 * when the target ends, whatever the reason. Signals between two actors keep their send order
 * (except that signals overtake the messages a rate-limited actor is holding back).
 * ------------------------------------------------------------------------------------------- */

/** Links the running actor with `pid`. TR_ENOPROC if pid is not alive now; if it ends before the
 * link is set up, the running actor receives an exit signal with reason noproc. Idempotent. */
int tr_link(tr_ctx *ctx, tr_pid pid);
/** Removes a link; after it, no exit signal due to that link reaches the running actor. */
int tr_unlink(tr_ctx *ctx, tr_pid pid);
/** Monitors `pid`: a TR_MSG_DOWN with *ref as corr is delivered when it ends (at once, with
 * reason noproc, if it is not alive). Each call makes a new monitor. */
int tr_monitor(tr_ctx *ctx, tr_pid pid, uint64_t *ref);
/** Removes a monitor; its DOWN is not delivered after this returns, even if already sent. */
int tr_demonitor(tr_ctx *ctx, uint64_t ref);
/** Turns exit trapping on or off for the running actor. */
void tr_trap_exits(tr_ctx *ctx, bool on);
/** Sends an exit signal with `reason` to `pid`. Kind killed cannot be trapped and takes effect at
 * the target's next turn, ahead of its queued messages; others keep message order: a trapping
 * target gets TR_MSG_EXIT, others end with the reason (normal is ignored by non-trapping ones). */
int tr_exit(tr_ctx *ctx, tr_pid pid, const tr_reason *reason);
/** tr_exit from outside any actor (sender TR_PID_NONE). */
int tr_system_exit(tr_system *sys, tr_pid pid, const tr_reason *reason);
/** Decodes the reason of a TR_MSG_EXIT or TR_MSG_DOWN; out->text points into m (or is NULL). */
int tr_msg_reason(const tr_msg *m, tr_reason *out);

/* ---------------------------------------------------------------------------------------------
 * Supervisors
 *
 * A supervisor is an actor that starts children from specs, links to them, traps their exits and
 * restarts them by its strategy. More than `intensity` restarts within `period_ms` make it end
 * its children (in reverse start order) and then itself with TR_EINTENSITY, which its own
 * supervisor sees as a failure of its child (escalation). Messages queued in a crashed child's
 * mailbox are dropped, as in OTP, and counted as dead letters; other actors are untouched.
 * ------------------------------------------------------------------------------------------- */

/** How a supervisor restarts its children when one ends. */
typedef enum tr_strategy {
    TR_ONE_FOR_ONE = 0,     /**< restart the child that ended */
    TR_ONE_FOR_ALL,         /**< end all the others, restart all */
    TR_REST_FOR_ONE,        /**< end those started after it, restart them and it */
    TR_SIMPLE_ONE_FOR_ONE,  /**< one spec, children added at run time (tr_sup_start_child) */
} tr_strategy;

/** Whether a child is restarted when it ends. */
typedef enum tr_restart {
    TR_PERMANENT = 0,       /**< always restarted */
    TR_TRANSIENT,           /**< restarted only after an abnormal end (not normal or shutdown) */
    TR_TEMPORARY,           /**< never restarted */
} tr_restart;

#define TR_SHUTDOWN_INFINITY 0xFFFFFFFFu /**< shutdown_ms: wait for the child to end, however long */
#define TR_SHUTDOWN_BRUTAL 0u           /**< shutdown_ms: kill the child at once */

/** A supervisor: its strategy, restart intensity and children (below). */
typedef struct tr_sup_spec tr_sup_spec;

/** A child: what to start and how to treat its end. */
typedef struct tr_child_spec {
    const char *id;         /**< unique among the supervisor's children (copied) */
    const tr_behaviour *behaviour; /**< must outlive the supervisor; ignored if `supervisor` is set */
    const void *arg;        /**< start argument given to init */
    size_t arg_len;         /**< > 0: arg is copied (and the copy given to init); 0: passed as is */
    tr_restart restart;     /**< permanent, transient or temporary */
    unsigned shutdown_ms;   /**< exit(shutdown), then kill after this long; TR_SHUTDOWN_BRUTAL: kill */
    tr_mailbox_opts mailbox; /**< the child's mailbox */
    const tr_sup_spec *supervisor; /**< non-NULL: this child is a supervisor with this spec */
} tr_child_spec;

/** A supervisor's spec (tr_sup_start; or a child's `supervisor`). */
struct tr_sup_spec {
    tr_strategy strategy;   /**< one_for_one, one_for_all, rest_for_one, simple_one_for_one */
    unsigned intensity;     /**< R: restarts allowed within period_ms (at most 1,000,000) */
    unsigned period_ms;     /**< P */
    unsigned backoff_min_ms;/**< 0: restart at once; else first delay of an exponential backoff */
    unsigned backoff_max_ms;/**< the backoff's cap (jitter: up to +25%) */
    const tr_child_spec *children; /**< simple_one_for_one: exactly one, the template */
    size_t nchildren;       /**< how many in children */
};

/** Starts a supervisor from outside any actor. The spec is copied (not behaviours / uncopied args). */
int tr_sup_start(tr_system *sys, const tr_sup_spec *spec, tr_pid *out);
/** Starts a supervisor linked to the running actor. */
int tr_sup_spawn(tr_ctx *ctx, const tr_sup_spec *spec, tr_pid *out);
/** simple_one_for_one: starts a child of the template with `arg` (copied: arg_len bytes; 0 = pass
 * the pointer as is). Blocks until started. Not callable from an actor. */
int tr_sup_start_child(tr_system *sys, tr_pid sup, const void *arg, size_t arg_len, tr_pid *child);
/** tr_sup_start_child from inside an actor, without blocking: the supervisor answers with a reply
 * (its corr in *corr; or a TR_MSG_TIMEOUT after timeout_ms) to read with tr_sup_started. */
int tr_sup_start_child_async(tr_ctx *ctx, tr_pid sup, const void *arg, size_t arg_len,
                             unsigned timeout_ms, uint64_t *corr);
/** Reads the supervisor's answer to tr_sup_start_child_async: TR_OK and the child's pid, or why
 * the child could not start. */
int tr_sup_started(const tr_msg *reply, tr_pid *child);
/** The current pid of the child with this id (TR_ENOPROC if not running). Not from an actor. */
int tr_sup_which_child(tr_system *sys, tr_pid sup, const char *id, tr_pid *child);
/** Ends a child for good (no restart); for simple_one_for_one pass its pid, else its id's pid. */
int tr_sup_terminate_child(tr_system *sys, tr_pid sup, tr_pid child);
/** Counts: children running, and restarts done since the supervisor started. */
int tr_sup_count(tr_system *sys, tr_pid sup, uint64_t *running, uint64_t *restarts);

/** The running actor's own pid. */
tr_pid tr_self(const tr_ctx *ctx);
/** The system the running actor belongs to. */
tr_system *tr_ctx_system(const tr_ctx *ctx);
/** Ends the running actor with reason normal once the current callback returns. What is still
 * queued is dropped: requests among it are answered TR_ENOPROC (a port's gets its request back,
 * see tr_port_fn). */
void tr_stop(tr_ctx *ctx);
/** Ends the running actor with TR_REASON_ERROR, `code` and `text` (copied; may be NULL) once the
 * current callback returns. */
void tr_fail(tr_ctx *ctx, int code, const char *text);
/** Asks the actor `pid` to end with reason shutdown after the messages already in its mailbox
 * (a rate-limited actor: after those it has been allowed to handle; the rest are dropped). */
int tr_system_stop_actor(tr_system *sys, tr_pid pid);
/** True when `pid` names a live actor of this node. */
bool tr_system_alive(tr_system *sys, tr_pid pid);

/* ---- names (this node; troupe/node.h has cluster-wide names) ---- */

/** Gives the live local actor `pid` the name (1..255 bytes). TR_EEXIST if a live actor holds it;
 * a name is released when its actor ends. Any thread. */
int tr_system_register(tr_system *sys, const char *name, tr_pid pid);
/** Removes the name (TR_ENOPROC if nobody held it). */
int tr_system_unregister(tr_system *sys, const char *name);
/** The live actor holding the name, or TR_ENOPROC. */
int tr_system_whereis(tr_system *sys, const char *name, tr_pid *out);

/* ---------------------------------------------------------------------------------------------
 * Sending
 * ------------------------------------------------------------------------------------------- */

/** Sends `m` to `to`; the message always passes to the runtime (freed on error). Per
 * sender->receiver FIFO order. TR_ENOPROC for a dead or stale pid (counted as a dead letter). */
int tr_send(tr_ctx *ctx, tr_pid to, tr_msg *m);
/** Sends from outside any actor (sender TR_PID_NONE). Same ownership and errors as tr_send. */
int tr_system_send(tr_system *sys, tr_pid to, tr_msg *m);
/** Sends a request: `m` gets a fresh correlation id (returned in *corr if not NULL). Exactly one of
 * the reply or a TR_MSG_TIMEOUT message with that corr is later delivered to the actor.
 * timeout_ms 0 means no timeout. */
int tr_request(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t *corr);
/** Replies to `request` (a message received with a corr) with `reply`, which the runtime takes. */
int tr_reply(tr_ctx *ctx, const tr_msg *request, tr_msg *reply);
/** A request's return address: who asked, and the request's corr (Erlang's From). Plain data: keep
 * it to answer later, after the request message itself is gone. */
typedef struct tr_from {
    tr_pid pid;             /**< who asked */
    uint64_t corr;          /**< the request's correlation id */
} tr_from;
/** The return address of a request ({0, 0} if `m` is not a request). */
tr_from tr_msg_from(const tr_msg *m);
/** Answers the request `from` came from with `reply` (taken): a deferred tr_reply. */
int tr_reply_from(tr_ctx *ctx, tr_from from, tr_msg *reply);
/** Hands a request on: sends `m` (taken) to `to` as the request `from` came from — same requester,
 * same corr — so `to`'s tr_reply answers the requester directly (a router's hop; Akka's forward).
 * TR_ENOPROC if `to` is gone; then, as for any request, the requester is told (TR_MSG_NOPROC). */
int tr_forward(tr_ctx *ctx, tr_pid to, tr_from from, tr_msg *m);
/** Sends a request from outside any actor and blocks until the reply (*reply_out, owned by the
 * caller), the timeout (TR_ETIMEDOUT), or the target ending with the request unanswered
 * (TR_ENOPROC, even with no timeout). Never call it from an actor: use tr_request. */
int tr_system_call(tr_system *sys, tr_pid to, tr_msg *m, unsigned timeout_ms, tr_msg **reply_out);

/** Ports: requests from threads that are not actors (an event loop, say), answered by a callback
 * instead of a blocked thread or a helper actor. A port has a pid like an actor; its callback
 * runs on whichever runtime thread delivers the answer (a worker, the store's writer, a node's
 * I/O thread, the timer thread), so it must be short and never block. */
typedef struct tr_port tr_port;
/** Called exactly once per request tr_port_request accepted: rc TR_OK with the reply (valid during
 * the call only), or TR_ETIMEDOUT, TR_ENOPROC (the target ended with it unanswered), TR_EFULL
 * (refused by a full mailbox on another node), TR_ENOCONN (the target's node went down with the
 * request unanswered: told at once, as Erlang's calls are, not at the timeout) or TR_ESTOPPED
 * (tr_port_close), with reply NULL — except TR_ENOPROC for a target on this node that ended with
 * the request still in its mailbox: reply is then the request itself (its type and payload, valid
 * during the call), which the target never read, so it may be sent again (to the key's next actor,
 * say). */
typedef void (*tr_port_fn)(void *user, uint64_t cookie, int rc, const tr_msg *reply);
/** Opens a port on a started system. */
int tr_port_open(tr_system *sys, tr_port_fn fn, void *user, tr_port **out);
/** Sends `m` (taken) to `to` as a request from the port; its answer comes to fn with `cookie`
 * (a target that has already ended: TR_ENOPROC, maybe before this returns, on this thread).
 * From any thread. On error (TR_EFULL, TR_ESTOPPED, TR_ENOMEM, TR_EINVAL) there will be no
 * callback. timeout_ms 0: no timeout. */
int tr_port_request(tr_port *p, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t cookie);
/** Requests made through the port and not answered yet. */
size_t tr_port_pending(tr_port *p);
/** Frees the port once nothing can answer any more: after tr_system_join, and after tr_node_stop
 * and tr_store_close if they are used (before tr_system_free). Each request still unanswered
 * gets its callback now, with TR_ESTOPPED. */
void tr_port_close(tr_port *p);

/** Guests: an outside thread (an event loop, say) that runs the actors it makes runnable itself,
 * in a batch, instead of waking a worker thread for each. Between tr_guest_enter and
 * tr_guest_leave, actors this thread makes runnable (by tr_system_send, tr_port_request, ...)
 * wait in the guest, and tr_guest_leave runs them here, with what they make runnable in turn:
 * an HTTP loop that sends requests to an actor and answers through a port does it all on one
 * thread, with no hand-off. Their turns block the thread: keep them short. One thread at a time. */
typedef struct tr_guest tr_guest;
/** Makes a guest for sys (free it before tr_system_free). */
int tr_guest_new(tr_system *sys, tr_guest **out);
/** Makes this thread a guest until tr_guest_leave. TR_ESTATE on a worker or a thread that is a
 * guest already, TR_ESTOPPED once the system is stopping. Keep the bracket short: the system
 * does not stop during it. */
int tr_guest_enter(tr_guest *g);
/** Runs what waits in g for at most `budget` turns, hands the rest to the workers, and ends the
 * bracket. Returns the turns run (0 if this thread had not entered g). */
unsigned tr_guest_leave(tr_guest *g, unsigned budget);
/** Frees a guest no thread is in. */
void tr_guest_free(tr_guest *g);

/* ---------------------------------------------------------------------------------------------
 * Timers
 * ------------------------------------------------------------------------------------------- */

/** A timer's id (tr_send_after and the like), for tr_cancel_timer; 0 is none. */
typedef uint64_t tr_timer;

/** Delivers `m` to `to` after `delay_ms` (sender: the running actor). *t (if not NULL) receives an id
 * for tr_cancel_timer. The runtime takes `m`. */
int tr_send_after(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned delay_ms, tr_timer *t);
/** Delivers a copy of `m` to `to` every `interval_ms` (first after one interval) until cancelled or
 * until `to` ends. The runtime takes `m`. */
int tr_send_interval(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned interval_ms, tr_timer *t);
/** Like tr_send_after, from outside any actor. */
int tr_system_send_after(tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms, tr_timer *t);
/** Cancels a timer, from the running actor. A message already delivered stays delivered;
 * cancelling an unknown or fired timer is harmless. */
int tr_cancel_timer(tr_ctx *ctx, tr_timer t);
/** Like tr_cancel_timer, from outside any actor. */
int tr_system_cancel_timer(tr_system *sys, tr_timer t);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif /* TROUPE_H */
