/*
 * limiter.h — rate limiter cores: token bucket and leaky bucket, as pure functions of
 * (state, now) so tests drive them with virtual time and get exact answers.
 */
#ifndef TROUPE_LIMITER_H
#define TROUPE_LIMITER_H

#include "internal.h"

/* All arithmetic is in integers: token amounts are kept in units of 1e-9 token (so a rate of r
 * tokens/s adds exactly r units per ns), and leaky-bucket times in units of ns x rate. Nothing
 * drifts, and a test can predict every decision exactly. */
/* How far behind its schedule a leaky bucket may fall and catch up (timer granularity). */
#define TR_LEAKY_LAG_NS 2000000u

typedef struct tr_limiter {
    tr_limit_kind kind;
    uint64_t rate;          /* per second, >= 1 */
    uint64_t burst;         /* token bucket capacity, in tokens (>= 1) */
    uint64_t units;         /* token bucket: saved tokens x 1e9 */
    uint64_t last_ns;       /* token bucket: time of the last refill */
    unsigned __int128 next; /* leaky bucket: earliest next pass, in ns x rate */
} tr_limiter;

/* Sets up a limiter at time now. A token bucket starts full (b saved tokens), a leaky bucket
 * lets the first message through at once. rate 0 or kind NONE gives a limiter that never
 * waits. */
TR_HIDDEN void tr__limiter_init(tr_limiter *l, tr_limit_kind kind, uint64_t rate, uint64_t burst,
                                uint64_t now_ns);
/* Asks to let one message through at now. Returns 0 when it may pass (the token is spent), or
 * the number of ns to wait before asking again (nothing is spent). now must not go backwards. */
TR_HIDDEN uint64_t tr__limiter_take(tr_limiter *l, uint64_t now_ns);
/* Changes rate/burst at run time, keeping what was saved (capped to the new burst). */
TR_HIDDEN void tr__limiter_set(tr_limiter *l, tr_limit_kind kind, uint64_t rate, uint64_t burst,
                               uint64_t now_ns);

#endif
