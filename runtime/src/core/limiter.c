/*
 * limiter.c — token bucket and leaky bucket cores (see limiter.h).
 *
 * Token bucket: tokens accrue at `rate` per second up to `burst`; a message passes by spending
 * one. Idle time is saved up as a burst allowance: after a quiet period, `burst` messages pass
 * at once, then exactly `rate` per second.
 * Leaky bucket: messages leave at a steady `rate`, one every 1/rate s, whatever arrived; what
 * cannot wait is the mailbox's business (its capacity is the bucket's queue, excess dropped).
 *
 * Pure: no clock, no locks. The mailbox calls tr_limiter_take with the current time and, when
 * told to wait, parks the actor on a timer for exactly that long.
 */
#include "limiter.h"

#define UNITS_PER_TOKEN 1000000000ULL

static void refill(tr_limiter *l, uint64_t now)
{
    uint64_t cap = l->burst * UNITS_PER_TOKEN;
    if (now <= l->last_ns)
        return;
    uint64_t elapsed = now - l->last_ns;
    l->last_ns = now;
    if (l->units >= cap)
        return;
    /* elapsed x rate without overflow: more than needed to fill is the same as full */
    uint64_t room = cap - l->units;
    if (elapsed >= room / l->rate + 1)
        l->units = cap;
    else
        l->units += elapsed * l->rate;
    if (l->units > cap)
        l->units = cap;
}

void tr_limiter_init(tr_limiter *l, tr_limit_kind kind, uint64_t rate, uint64_t burst,
                     uint64_t now_ns)
{
    l->kind = rate == 0 ? TR_LIMIT_NONE : kind;
    l->rate = rate == 0 ? 1 : rate;
    l->burst = burst == 0 ? 1 : burst;
    if (l->burst > UINT64_MAX / UNITS_PER_TOKEN)
        l->burst = UINT64_MAX / UNITS_PER_TOKEN;
    l->units = l->burst * UNITS_PER_TOKEN;
    l->last_ns = now_ns;
    l->next = (unsigned __int128)now_ns * l->rate;
}

void tr_limiter_set(tr_limiter *l, tr_limit_kind kind, uint64_t rate, uint64_t burst,
                     uint64_t now_ns)
{
    if (l->kind == TR_LIMIT_TOKEN)
        refill(l, now_ns);
    uint64_t saved = l->kind == TR_LIMIT_TOKEN ? l->units : UINT64_MAX;
    tr_limit_kind old = l->kind;
    tr_limiter_init(l, kind, rate, burst, now_ns);
    if (old == TR_LIMIT_TOKEN && saved < l->units)
        l->units = saved;
}

uint64_t tr_limiter_take(tr_limiter *l, uint64_t now)
{
    switch (l->kind) {
    case TR_LIMIT_TOKEN: {
        refill(l, now);
        if (l->units >= UNITS_PER_TOKEN) {
            l->units -= UNITS_PER_TOKEN;
            return 0;
        }
        uint64_t need = UNITS_PER_TOKEN - l->units;
        return (need + l->rate - 1) / l->rate; /* ceil: at that time a whole token is there */
    }
    case TR_LIMIT_LEAKY: {
        unsigned __int128 t = (unsigned __int128)now * l->rate;
        if (t >= l->next) {
            /* GCRA: the next pass is one interval after the scheduled one, so a timer that
             * fires a little late does not slow the rate down; but idle time is not saved
             * beyond a small lag: half an interval, or TR_LEAKY_LAG_NS when that is more
             * (wake-ups come on a 1 ms grid, so a rate above 500/s must catch up a little
             * after each one: at most lag x rate messages pass together). */
            unsigned __int128 lag = (unsigned __int128)TR_LEAKY_LAG_NS * l->rate;
            if (lag < UNITS_PER_TOKEN / 2)
                lag = UNITS_PER_TOKEN / 2;
            unsigned __int128 sched = l->next + UNITS_PER_TOKEN;
            unsigned __int128 floor = t + UNITS_PER_TOKEN > lag ? t + UNITS_PER_TOKEN - lag : 0;
            l->next = sched > floor ? sched : floor;
            return 0;
        }
        unsigned __int128 d = l->next - t;
        return (uint64_t)((d + l->rate - 1) / l->rate);
    }
    default:
        return 0;
    }
}
