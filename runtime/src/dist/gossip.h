/*
 * gossip.h — cluster membership and failure detection as pure logic (issue 22): no thread, no
 * socket, no clock. The embedder drives it with tr__gossip_tick(now) and tr__gossip_receive(msg)
 * and sends what it hands to the `send` callback; the same code runs in a node and, thousands of
 * times over, in the simulator (bench/memsim.c, `troupe-bench membership-sim`).
 *
 * The rules (docs/distribution.md, "Scaling out: partial monitoring" says the same for users):
 *
 * Membership. Every instance knows every member: name, address, node id, incarnation and state
 * (alive, suspect, down, left). A member's state at a higher incarnation wins; at the same
 * incarnation left > down > suspect > alive. Only a member raises its own incarnation: when it
 * hears itself called suspect or down (or left) at its current one, it refutes — incarnation+1,
 * alive — to the nodes that watch it directly and to everyone by gossip. A process that restarts
 * starts above its previous incarnation (the embedder uses the wall clock in ms).
 *
 * Monitoring. Members that are alive or suspect form a ring ordered by the 64-bit hash of their
 * names (stable across restarts; node ids are per incarnation and 16-bit, and would collide at
 * 10,000 nodes). Each instance watches the `monitors` (K, default 5) members that follow it on
 * the ring, so every member is watched by the K that precede it; the sets are re-chosen whenever
 * the ring changes. Every heartbeat_ms (on multiples of it, so the instances of one host beat
 * together) each member sends a BEAT to its K watchers, which nobody answers: K messages per
 * member per heartbeat. Any message from a watched member, or learning a higher incarnation of
 * it, counts as hearing from it. A watched member not heard for two heartbeats, or held suspect,
 * is pinged once a heartbeat and answers with an ack: it learns it is suspect (and refutes), and
 * a member whose view of the ring differs for a moment (it does not count this one among its
 * watchers, so sends it no beats) is heard all the same.
 *
 * Down. A watcher that has not heard a watched member for down_after_ms - suspect_ms marks it
 * suspect and says so (its pings tell the member, gossip tells the others); the member, if
 * alive, refutes. If the watcher still hears nothing by down_after_ms, it declares the member
 * down at that incarnation and gossips it: one watcher's report suffices — all K watchers of a
 * crashed node come to it within a heartbeat of each other, and a quorum would leave a node cut
 * off from some of its watchers alive forever in their views. Only watchers declare down; others
 * only relay. A broken connection (tr__gossip_unreachable) makes the member suspect at once.
 * Down is final for that incarnation: a member comes back only with a higher one (a frozen
 * process that thaws hears it was declared down and refutes: it rejoins). Down members are
 * probed now and then (probe_ms), so two sides of a healed partition find each other.
 * A verdict names its watcher, and one that would take down a member this instance holds alive at
 * that incarnation is taken only from a plausible watcher: one in this instance's ring among the
 * 2K members before it, and not held down here at the incarnation it gave the verdict at, nor at
 * a later one. A verdict from a member this instance holds (or held) down so, or from far along
 * the ring (how a cut-off node walks it, below), is
 * dropped — and the member is told, so it refutes and the view that holds it down gives way: after
 * a partition heals, the other side's verdicts do not take down here members that never left. A
 * crashed member's other watchers reach the same verdict, and anti-entropy carries one that was
 * dropped for want of knowing the members between.
 *
 * A partition. Each side's watchers declare the members they can no longer hear down. A member
 * of the minority is watched by K members spread over the ring, so the majority sees the
 * minority down within down_after_ms plus dissemination. The minority sees the majority go down
 * by walking the ring: a watcher that declares a member down watches the next one instead, so an
 * isolated node needs about (N / K) * down_after_ms to see all others down (measured in the
 * simulator); meanwhile the ones it has not reached are still alive in its view. A node that
 * stood still itself (tick() after more than down_after_ms / 2) gives every watched member a new
 * down_after_ms to be heard, instead of declaring them down.
 *
 * Grace. Two things move a watched member's deadlines (suspect and down) later. An instance whose
 * own ticks come late (past what its last tick asked for, by more than heartbeat_ms / 4: its
 * host is starved) gives every member twice the largest lateness of the last down_after_ms or
 * two, at most down_after_ms (Lifeguard's local health). And a member never heard since it
 * became watched while the ring around it was settling — this instance joined less than two
 * down_after_ms ago, or the member came in between watched ones (it joined), or the ring had
 * fewer than K + 1 members — gets down_after_ms more: its beats start only once it learns it
 * has a new watcher, and ping and answer each wait for a dial (100 processes starting at once
 * on 2 cores: most false downs were these). On a host that keeps up, a member heard once, or
 * one the ring walks on to past members gone, is held to the bounds above; a kill is seen
 * sooner anyway (the transport's refused dial).
 *
 * Anti-entropy. Every message carries a digest of the sender's view (an XOR of hashes of the
 * members in the ring and their incarnations, kept in O(1) per change). A watcher whose watched
 * member's beats (or acks) show a digest that differs from its own, both unchanged for sync_ms (no
 * gossip is in flight to settle it), pushes its whole view to it and gets the member's back
 * (PUSH, SYNC): views that gossip missed — a lost message, a queue that overflowed, the two
 * sides of a healed partition — converge, at no cost while views agree.
 *
 * Gossip. Every change an instance learns is queued and sent, at most `updates` per message, in
 * gossip messages to `fanout` of its partners, picked at random, every gossip_ms — its K watched
 * members, its K watchers, and fingers: the first member at 1/2, 1/4, 1/8, ... of the ring's key
 * space after it, while that span holds more than K (log2(N / K) of them; a change reaches every
 * member in O(log N) rounds, and an embedder that keeps connections to its partners open dials
 * nobody to gossip: random targets made a real node dial for most hops) — each queued change
 * retransmit * ceil(log2(N + 1)) times (infection-style: O(log N) rounds reach every member),
 * and piggybacked on beats, pings and acks for free. An idle cluster sends only beats:
 * K / heartbeat_ms messages per node. Joining: a new instance sends JOIN to a seed, which
 * adds it, gossips it and answers with its whole membership (SYNC, in chunks).
 *
 * Bounds. Everything a peer can make an instance hold is bounded: members (max_members; a full
 * table refuses new names and counts them), the gossip queue (TR_GOSSIP_QUEUE entries; when
 * full, the most-sent entry makes room), the down members probed (TR_GOSSIP_PROBES), updates per
 * message (TR_GOSSIP_MSG_UPDATES, SYNC: TR_GOSSIP_SYNC_CHUNK); decoding is strict and
 * allocation-free (wire.h's reader). Down and left members are forgotten after forget_ms.
 * Not thread-safe: one thread (or one lock) per instance.
 */
#ifndef TROUPE_GOSSIP_H
#define TROUPE_GOSSIP_H

#include "core/internal.h"

#define TR_GOSSIP_NAME_MAX 64u
#define TR_GOSSIP_ADDR_MAX 128u
#define TR_GOSSIP_MONITORS_MAX 16u
#define TR_GOSSIP_QUEUE 512u
#define TR_GOSSIP_PROBES 64u
#define TR_GOSSIP_MSG_UPDATES 64u
#define TR_GOSSIP_SYNC_CHUNK 512u
#define TR_GOSSIP_PARTNERS_MAX (2u * TR_GOSSIP_MONITORS_MAX + 64u)

typedef enum tr_gossip_state {
    TR_GOSSIP_ALIVE = 0,
    TR_GOSSIP_SUSPECT = 1,
    TR_GOSSIP_DOWN = 2,
    TR_GOSSIP_LEFT = 3,
} tr_gossip_state;

/* A member, as the core shows it (strings valid until the next call into the instance). */
typedef struct tr_gossip_member {
    const char *name, *addr;
    uint16_t node_id;
    uint64_t incarnation;
    tr_gossip_state state;
    uint64_t by;                /* down: the ring key of the watcher that declared it (0: unknown) */
    uint64_t by_inc;            /* and that watcher's incarnation then */
} tr_gossip_member;

/* Names and addresses, kept once per table: an instance makes its own, the simulator shares one
 * among all its instances (10,000 instances knowing 10,000 members each). Not thread-safe. */
typedef struct tr_gossip_idents tr_gossip_idents;
TR_HIDDEN tr_gossip_idents *tr__gossip_idents_new(void);
/* Frees the table (every instance using it freed first). */
TR_HIDDEN void tr__gossip_idents_free(tr_gossip_idents *t);

/* Sends msg (len bytes, the callee copies what it keeps) to the member `name` at `addr` (name is
 * "" for a seed not yet known). Must not call into the instance. */
typedef void (*tr_gossip_send_fn)(void *arg, const char *name, const char *addr, const void *msg,
                                  size_t len);
/* A member's state changed in this instance's view: old is its previous state, -1 for a member
 * new to it. Must not call into the instance. */
typedef void (*tr_gossip_event_fn)(void *arg, const tr_gossip_member *m, int old);
/* A line about a decision of this instance (a watcher's suspicion or verdict, and why; a
 * refutation of what another said about it), for a log. */
typedef void (*tr_gossip_note_fn)(void *arg, const char *line);

typedef struct tr_gossip_opts {
    const char *name;           /* this member (1..64 bytes) */
    const char *addr;           /* where it is reached (0..128 bytes) */
    uint16_t node_id;           /* carried along for the embedder (its pids' node field) */
    uint64_t incarnation;       /* above any earlier incarnation of this name (a clock in ms) */
    unsigned monitors;          /* K: members each one watches; 0 = 5, at most 16 */
    unsigned heartbeat_ms;      /* pings to watched members; 0 = 200 */
    unsigned down_after_ms;     /* silence after which a watched member is down; 0 = 1,000 */
    unsigned suspect_ms;        /* it is suspect this long before: 0 = 2 heartbeats (< down) */
    unsigned gossip_ms;         /* gossip rounds while changes are queued; 0 = heartbeat / 2 */
    unsigned fanout;            /* members a gossip round goes to; 0 = 3 */
    unsigned retransmit;        /* each change sent retransmit * ceil(log2(N+1)) times; 0 = 3 */
    unsigned updates;           /* changes per message at most; 0 = 16, at most 64 */
    unsigned probe_ms;          /* a down member is pinged this often (partitions heal); 0 = 1,000 */
    unsigned join_ms;           /* JOIN to the next seed until answered, this often; 0 = 1,000 */
    unsigned forget_ms;         /* down and left members forgotten after; 0 = 60,000 */
    unsigned sync_ms;           /* anti-entropy: a watched member whose view has differed from
                                 * ours this long gets ours and answers with its; 0 = 2,000 */
    size_t max_members;         /* members held at most (itself included); 0 = 16,384 */
    const char *const *seeds;   /* addresses to join through (none: a cluster of its own) */
    size_t nseeds;
    uint64_t rng_seed;          /* for the choice of gossip targets (0: from the name) */
    tr_gossip_idents *idents;   /* a shared table, or NULL for one of its own */
    tr_gossip_send_fn send;     /* required */
    tr_gossip_event_fn event;   /* may be NULL */
    tr_gossip_note_fn note;     /* may be NULL */
    void *arg;                  /* for send, event and note */
} tr_gossip_opts;

typedef struct tr_gossip_stats {
    uint64_t sent, received;    /* messages */
    uint64_t bad;               /* messages refused (malformed, or not from who they say) */
    uint64_t refused_full;      /* new members refused: the table was full */
    uint64_t suspected, declared_down; /* by this instance, as a watcher */
    uint64_t refutations;       /* of its own suspicion / down */
    uint64_t forgotten;         /* down or left members forgotten */
    uint64_t syncs;             /* views pushed to a watched member (anti-entropy) */
    uint64_t verdicts_dropped;  /* downs from an implausible watcher, not taken */
} tr_gossip_stats;

typedef struct tr_gossip tr_gossip;

/* A new instance (alive, alone, joining through the seeds if any). TR_EINVAL on bad options. */
TR_HIDDEN int tr__gossip_new(const tr_gossip_opts *o, uint64_t now_ms, tr_gossip **out);
TR_HIDDEN void tr__gossip_free(tr_gossip *g);
/* Pings, suspicion and down, gossip rounds, joins, probes, forgetting: call every
 * heartbeat_ms / 4 or so (tr__gossip_next_ms says until when nothing is due). */
TR_HIDDEN void tr__gossip_tick(tr_gossip *g, uint64_t now_ms);
TR_HIDDEN uint64_t tr__gossip_next_ms(const tr_gossip *g);
/* A message from a peer. `from`: the member the transport says sent it, or NULL if it does not
 * know; a message whose sender is another is refused. TR_EBADMSG: malformed (nothing applied). */
TR_HIDDEN int tr__gossip_receive(tr_gossip *g, uint64_t now_ms, const char *from, const void *msg,
                                 size_t len);
/* The transport lost or could not open its connection to `name`: suspect at once. */
TR_HIDDEN void tr__gossip_unreachable(tr_gossip *g, uint64_t now_ms, const char *name);
/* The transport's dial to `name` was refused (nothing listens at its address: the process is
 * gone): a member this instance watches is declared down at once; others as unreachable. */
TR_HIDDEN void tr__gossip_refused(tr_gossip *g, uint64_t now_ms, const char *name);
/* Sends a JOIN to addr now, joined or not: the member there adds this one and answers with its
 * whole view. How an embedder reaches a seed that is not a member it holds alive (a seed that
 * restarted, or one of another cluster to merge with). */
TR_HIDDEN void tr__gossip_join(tr_gossip *g, const char *addr);
/* Leaves the cluster: gossips "left" (keep ticking a few gossip rounds to spread it). */
TR_HIDDEN void tr__gossip_leave(tr_gossip *g, uint64_t now_ms);
/* Adds (or updates) members in bulk, as a SYNC does, without events: how the simulator forms a
 * cluster. TR_EINVAL (nothing added) if one of them is malformed. */
TR_HIDDEN int tr__gossip_load(tr_gossip *g, uint64_t now_ms, const tr_gossip_member *ms, size_t n);

/* Queries. */
TR_HIDDEN bool tr__gossip_joined(const tr_gossip *g);
TR_HIDDEN uint64_t tr__gossip_incarnation(const tr_gossip *g);
/* Members held (itself included), and of them how many in each state (counts[4], or NULL). */
TR_HIDDEN size_t tr__gossip_count(const tr_gossip *g, size_t counts[4]);
/* The member called name: TR_OK, or TR_ENOPROC. */
TR_HIDDEN int tr__gossip_find(const tr_gossip *g, const char *name, tr_gossip_member *out);
/* The members this instance watches (its K successors) / that watch it (its K predecessors), in
 * ring order; returns how many (at most cap copied). */
TR_HIDDEN size_t tr__gossip_watched(const tr_gossip *g, tr_gossip_member *out, size_t cap);
TR_HIDDEN size_t tr__gossip_watchers(const tr_gossip *g, tr_gossip_member *out, size_t cap);
/* A number that changes whenever the watched set may have (the ring was computed again, or this
 * instance left): a caller that keeps something per watched member rebuilds it then. */
TR_HIDDEN uint64_t tr__gossip_ring_gen(const tr_gossip *g);
/* The members this instance gossips to (a round picks `fanout` of them): its watched members,
 * its watchers, and fingers at 1/2, 1/4, 1/8, ... of the ring after it; how many (at most cap
 * copied; TR_GOSSIP_PARTNERS_MAX at most). An embedder keeps its connections to them open. */
TR_HIDDEN size_t tr__gossip_partners(const tr_gossip *g, tr_gossip_member *out, size_t cap);
/* The i-th member held (ring order), for walking all of them: TR_OK, or TR_ENOPROC past the end. */
TR_HIDDEN int tr__gossip_member_at(const tr_gossip *g, size_t i, tr_gossip_member *out);
/* Changes queued for gossip. */
TR_HIDDEN size_t tr__gossip_queued(const tr_gossip *g);
TR_HIDDEN void tr__gossip_stats_get(const tr_gossip *g, tr_gossip_stats *out);
/* The ring position of a name (the hash the ring is ordered by). */
TR_HIDDEN uint64_t tr__gossip_key(const char *name);
/* True when msg (as handed to `send`) is a BEAT: sent only from tr__gossip_tick, once a
 * heartbeat to each watcher; losing one costs at most a ping (an embedder may send it on a
 * path of its own, or drop it). */
TR_HIDDEN bool tr__gossip_is_beat(const void *msg, size_t len);

#endif
