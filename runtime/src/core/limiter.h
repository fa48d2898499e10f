/*
 * limiter.h — what the core adds to the rate limiters of troupe.h (tr_limiter: token bucket and
 * leaky bucket, pure functions of (state, now) so tests drive them with virtual time).
 */
#ifndef TROUPE_LIMITER_H
#define TROUPE_LIMITER_H

#include "internal.h"

/* How far behind its schedule a leaky bucket may fall and catch up (timer granularity). */
#define TR_LEAKY_LAG_NS 2000000u

#endif
