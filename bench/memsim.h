/*
 * memsim.h — a simulated network for the membership core (runtime/src/dist/gossip.c): N
 * instances of that same code in one process, one thread, virtual time (an event queue), with
 * latency, loss, crashes, freezes and partitions. `troupe-bench membership-sim` (membership.c)
 * and the unit tests (tests/unit/test_gossip.c) drive it.
 *
 * Nodes are called "n<i>" and reached at "sim:<i>". A crashed node's sockets are closed: a
 * message sent to it comes back as "unreachable" one latency later, and its watchers (who hold
 * the connections its beats came on) are told so one latency after the crash (as a kill -9 on a
 * real host shows at once to those connected to it: conn.c); a frozen node neither ticks nor receives, and what is
 * sent to it is lost, without a word (a SIGSTOP, a VM paused, a cable cut).
 *
 * The simulator keeps, from the instances' events, how many nodes see each node in each state,
 * so detection and convergence are read without walking 10,000 x 10,000 views.
 */
#ifndef TROUPE_MEMSIM_H
#define TROUPE_MEMSIM_H

#include "dist/gossip.h"

typedef struct memsim_opts {
    size_t nodes;              /* formed at the start: each knows all (as after their joins) */
    size_t capacity;           /* nodes at most, joins included (0: nodes + 16) */
    double latency_ms;         /* one way, uniform in [latency/2, latency*3/2]; 0 = 1 ms */
    double loss;               /* probability that a message is lost */
    uint64_t seed;             /* the run's randomness (0 = 1) */
    unsigned monitors, heartbeat_ms, down_after_ms, suspect_ms, gossip_ms, fanout; /* 0: default */
    unsigned tick_ms;          /* each node's tick period; 0 = heartbeat / 4 */
} memsim_opts;

typedef struct memsim memsim;

/* Statistics of a run so far. */
typedef struct memsim_stats {
    uint64_t sent, delivered, lost, unreachable; /* messages */
    uint64_t bytes;
    uint64_t false_suspects;   /* a node saw a healthy node on its side of any partition become
                                * suspect (not within 2 * down_after + 2 s of its thaw, nor after
                                * a heal) */
    uint64_t false_downs;      /* ... become down */
    uint64_t excused_downs;    /* downs of healthy nodes within the windows above (after a heal:
                                * the other side's verdicts, until the member refutes) */
    uint64_t events;
} memsim_stats;

memsim *memsim_new(const memsim_opts *o);
void memsim_free(memsim *s);
/* Runs the events up to virtual time t_ms. */
void memsim_run_until(memsim *s, uint64_t t_ms);
uint64_t memsim_now_ms(const memsim *s);
size_t memsim_size(const memsim *s);     /* nodes ever started (indices 0..size-1) */
tr_gossip *memsim_node(memsim *s, size_t i);
void memsim_stats_get(const memsim *s, memsim_stats *out);

/* Starts a new node that joins through node `seed`; its index. */
size_t memsim_join(memsim *s, size_t seed);
/* Crashes node i (for good). */
void memsim_kill(memsim *s, size_t i);
/* Freezes (on) or thaws node i. */
void memsim_freeze(memsim *s, size_t i, bool on);
/* Restarts a crashed node i: a new incarnation that joins through `seed`. */
void memsim_restart(memsim *s, size_t i, size_t seed);
/* Puts node i on side 0 or 1: messages between sides are lost (all on side 0: healed). */
void memsim_side(memsim *s, size_t i, int side);
void memsim_heal(memsim *s);

/* How many running nodes (i itself left out) see node i in state st. */
size_t memsim_seen(const memsim *s, size_t i, tr_gossip_state st);
/* How many running nodes are there (not crashed; frozen ones count). */
size_t memsim_running(const memsim *s);
/* Pairs (observer on side a, subject on side b, not itself) where the observer sees the subject
 * in st; running observers and subjects only. */
uint64_t memsim_pairs(const memsim *s, int a, int b, tr_gossip_state st);
/* Nodes on side `side` that are running. */
size_t memsim_side_count(const memsim *s, int side);

#endif
