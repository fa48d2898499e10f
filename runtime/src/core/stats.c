/*
 * stats.c — the runtime's own metrics: counters per behaviour name, and the collector that
 * writes them (with the scheduler's and the system's counters) into the system's registry
 * (tr_system_metrics, troupe/metrics.h; the families are listed in docs/observability.md).
 *
 * Why rows of counters rather than a walk of the actors at render time: a walk reads a few cache
 * lines per actor header, some 2-3 ms at 100,000 actors, and counters of actors that ended would
 * be lost (a counter must never go down). Instead each event is counted where it happens, in the
 * row of the actor's behaviour: on a worker or a guest in that thread's own rows (inside its
 * tr_worker: a single-writer add, as its other counters), elsewhere in the system's rows (an
 * atomic add). On the message path that is nothing per message: once per turn the runner adds
 * what the actor's own counters (pushed, popped) moved since its last turn, and the turn's sends
 * (tr__bcount_turn, some 13 instructions); the rest (spawns, ends, drops, limits) is off the fast
 * path. A render sums TR_BEH_MAX rows per worker and per live guest, whatever the number of
 * actors; a guest's rows go into the system's when it is freed. The mailbox depth of a behaviour
 * is received - popped; its high-water mark is raised with each actor's (rarely: only a new
 * maximum writes it).
 *
 * A spawn finds its behaviour's row by the tr_behaviour pointer: a one-entry cache per worker,
 * then a lock-free table of pointers, then (a new pointer) by name under a lock. A behaviour
 * freed and another made at its address later is counted under the first one's name.
 */
#include "internal.h"
#include "troupe/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void collect(void *user, tr_metrics_out *out);

#if defined(__SANITIZE_ADDRESS__)
#define TR_LSAN_ROOTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TR_LSAN_ROOTS 1
#endif
#endif
#ifdef TR_LSAN_ROOTS
#include <sanitizer/lsan_interface.h>
#endif

/* Zeroed memory for the tables below (tens of KiB, mostly never touched): mapped, so the pages a
 * system does not count in stay untouched zero pages, and nothing clears them. */
void *tr__zmap(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef TR_LSAN_ROOTS
    __lsan_register_root_region(p, size);
#endif
    return p;
}

void tr__zunmap(void *p, size_t size)
{
    if (p == NULL)
        return;
#ifdef TR_LSAN_ROOTS
    __lsan_unregister_root_region(p, size);
#endif
    munmap(p, size);
}

int tr__stats_init(tr_system *sys)
{
    static _Atomic uint64_t serials;
    sys->serial = atomic_fetch_add(&serials, 1) + 1; /* never 0: tl_spawn's "none" */
    sys->behs = tr__zmap(sizeof *sys->behs);
    if (sys->behs == NULL)
        return TR_ENOMEM;
    pthread_mutex_init(&sys->behs->lock, NULL);
    sys->brows = tr__zmap(TR_BEH_MAX * sizeof *sys->brows);
    if (sys->brows == NULL)
        return TR_ENOMEM;
    pthread_mutex_init(&sys->guests_lock, NULL);
    sys->behs->names[TR_BEH_NONE] = strdup("(none)");
    sys->behs->names[TR_BEH_OTHER] = strdup("(other)");
    if (sys->behs->names[0] == NULL || sys->behs->names[1] == NULL)
        return TR_ENOMEM;
    atomic_store(&sys->behs->n, 2);
    int rc = tr_metrics_new(0, &sys->metrics);
    if (rc == TR_OK)
        rc = tr_metrics_collector_add(sys->metrics, collect, sys);
    return rc;
}

void tr__stats_free(tr_system *sys)
{
    tr_metrics_free(sys->metrics);
    sys->metrics = NULL;
    if (sys->behs != NULL) {
        for (unsigned i = 0; i < TR_BEH_MAX; i++)
            free(sys->behs->names[i]);
        pthread_mutex_destroy(&sys->behs->lock);
        tr__zunmap(sys->behs, sizeof *sys->behs);
        sys->behs = NULL;
    }
    if (sys->brows != NULL) {
        tr__zunmap(sys->brows, TR_BEH_MAX * sizeof *sys->brows);
        sys->brows = NULL;
        pthread_mutex_destroy(&sys->guests_lock);
    }
}

void tr__stats_lives(tr_system *sys, uint64_t *spawned, uint64_t *ended)
{
    pthread_mutex_lock(&sys->guests_lock);
    const tr_worker *g = sys->guests;
    for (unsigned w = 0; w <= sys->nworkers || g != NULL; w++) {
        const tr_beh_row *rows;
        if (w < sys->nworkers) {
            rows = sys->workers[w].brows;
        } else if (w == sys->nworkers) {
            rows = sys->brows;
        } else {
            rows = g->brows;
            g = g->gnext;
        }
        for (unsigned b = 0; b < TR_BEH_MAX; b++) {
            *spawned += atomic_load_explicit(&rows[b].c[TR_BC_SPAWNED], memory_order_relaxed);
            *ended += atomic_load_explicit(&rows[b].c[TR_BC_ENDED], memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&sys->guests_lock);
}

/* ---- guests' rows ------------------------------------------------------------------------- */

void tr__stats_guest_add(tr_system *sys, tr_worker *g)
{
    pthread_mutex_lock(&sys->guests_lock);
    g->gnext = sys->guests;
    sys->guests = g;
    pthread_mutex_unlock(&sys->guests_lock);
}

void tr__stats_guest_remove(tr_system *sys, tr_worker *g)
{
    pthread_mutex_lock(&sys->guests_lock);
    for (tr_worker **p = &sys->guests; *p != NULL; p = &(*p)->gnext)
        if (*p == g) {
            *p = g->gnext;
            break;
        }
    /* what it counted stays counted: into the system's rows (a render holds the lock, so it
     * sees these either in the guest or in the system, never in both nor in neither) */
    for (unsigned b = 0; b < TR_BEH_MAX; b++)
        for (unsigned c = 0; c < TR_BC_N; c++) {
            uint64_t v = atomic_load_explicit(&g->brows[b].c[c], memory_order_relaxed);
            if (v != 0)
                atomic_fetch_add_explicit(&sys->brows[b].c[c], v, memory_order_relaxed);
        }
    pthread_mutex_unlock(&sys->guests_lock);
}

tr_metrics *tr_system_metrics(tr_system *sys)
{
    return sys != NULL ? sys->metrics : NULL;
}

/* ---- the behaviour table ------------------------------------------------------------------ */

static unsigned ptr_hash(const tr_behaviour *b)
{
    uint64_t x = (uint64_t)(uintptr_t)b;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9u;
    x ^= x >> 32;
    return (unsigned)x & (TR_BEH_CACHE - 1);
}

/* The row of the name (lock held): an existing one, a new one, or TR_BEH_OTHER. */
static uint16_t name_row(tr_beh_table *t, const char *name)
{
    unsigned n = atomic_load_explicit(&t->n, memory_order_relaxed);
    for (unsigned i = 2; i < n; i++)
        if (strcmp(t->names[i], name) == 0)
            return (uint16_t)i;
    if (n >= TR_BEH_MAX || (t->names[n] = strdup(name)) == NULL)
        return TR_BEH_OTHER;
    atomic_store_explicit(&t->n, n + 1, memory_order_release); /* a render sees the name set */
    return (uint16_t)n;
}

/* A behaviour not remembered yet (or the table of pointers is full): by name, locked. */
__attribute__((noinline)) static uint16_t beh_index_slow(tr_beh_table *t, const tr_behaviour *b,
                                                         unsigned h)
{
    pthread_mutex_lock(&t->lock);
    const char *name = b->name != NULL && b->name[0] != '\0' ? b->name : "(unnamed)";
    uint16_t row = name_row(t, name);
    if (t->nkeys < TR_BEH_CACHE / 2) { /* remembered (half full at most: probes stay short) */
        unsigned k = h;
        const tr_behaviour *key;
        while ((key = atomic_load_explicit(&t->keys[k], memory_order_relaxed)) != NULL && key != b)
            k = (k + 1) & (TR_BEH_CACHE - 1);
        if (key == NULL) {
            atomic_store_explicit(&t->vals[k], row, memory_order_relaxed);
            atomic_store_explicit(&t->keys[k], b, memory_order_release);
            t->nkeys++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return row;
}

uint16_t tr__beh_index(tr_system *sys, const tr_behaviour *b)
{
    tr_beh_table *t = sys->behs;
    unsigned h = ptr_hash(b);
    for (unsigned i = 0; i < TR_BEH_CACHE; i++) { /* the common case: remembered, no lock */
        unsigned k = (h + i) & (TR_BEH_CACHE - 1);
        const tr_behaviour *key = atomic_load_explicit(&t->keys[k], memory_order_acquire);
        if (key == b)
            return atomic_load_explicit(&t->vals[k], memory_order_relaxed);
        if (key == NULL)
            break;
    }
    return beh_index_slow(t, b, h);
}

_Thread_local tr__spawn_cache tr__tl_spawn;

uint16_t tr__beh_boff(tr_system *sys, tr_worker *w, const tr_behaviour *b)
{
    uint16_t boff = (uint16_t)(tr__beh_index(sys, b) << TR_BEH_ROW_SHIFT);
    if (w != NULL) {
        w->last_beh = b;
        w->last_boff = boff;
    } else {
        tr__tl_spawn.serial = sys->serial;
        tr__tl_spawn.b = b;
        tr__tl_spawn.boff = boff;
    }
    return boff;
}

void tr__bcount_end_shared(tr_system *sys, tr_actor *a, uint64_t sent, bool failed)
{
    uint64_t po = atomic_load_explicit(&a->popped, memory_order_relaxed); /* = pushed now */
    _Atomic uint64_t *c = sys->brows[tr__bidx(a)].c;
    /* (atomic adds: any thread may count here; the many idle actors a system ends at its stop
     * have only their end to add) */
    if (po != a->acct_pushed)
        atomic_fetch_add_explicit(&c[TR_BC_RECEIVED], po - a->acct_pushed, memory_order_relaxed);
    if (po != a->acct_popped)
        atomic_fetch_add_explicit(&c[TR_BC_POPPED], po - a->acct_popped, memory_order_relaxed);
    a->acct_pushed = a->acct_popped = po;
    if (sent != 0)
        atomic_fetch_add_explicit(&c[TR_BC_SENT], sent, memory_order_relaxed);
    atomic_fetch_add_explicit(&c[TR_BC_ENDED], 1, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&c[TR_BC_FAILED], 1, memory_order_relaxed);
}

/* ---- the collector ------------------------------------------------------------------------ */

typedef struct fam {
    const char *name;
    tr_metric_type type;
    const char *help;
} fam;

enum {
    F_ACTORS, F_SPAWNS, F_EXITS, F_FAILURES, F_RESTARTS, F_RECEIVED, F_PROCESSED, F_SENT,
    F_DROPPED, F_REJECTED, F_DEPTH, F_DEPTH_MAX, F_LIMIT_WAITS, F_LIMIT_WAIT_S, F_LIMIT_TOKENS,
    F_N
};

static const fam fams[F_N] = {
    [F_ACTORS] = {"troupe_actors", TR_METRIC_GAUGE, "Live actors, by behaviour."},
    [F_SPAWNS] = {"troupe_actor_spawns_total", TR_METRIC_COUNTER, "Actors spawned."},
    [F_EXITS] = {"troupe_actor_exits_total", TR_METRIC_COUNTER, "Actors ended, for any reason."},
    [F_FAILURES] = {"troupe_actor_failures_total", TR_METRIC_COUNTER,
                    "Actors ended with an error or killed."},
    [F_RESTARTS] = {"troupe_actor_restarts_total", TR_METRIC_COUNTER,
                    "Actors restarted by their supervisor."},
    [F_RECEIVED] = {"troupe_actor_messages_received_total", TR_METRIC_COUNTER,
                    "Messages that reached mailboxes, accepted or not (runtime signals included)."},
    [F_PROCESSED] = {"troupe_actor_messages_processed_total", TR_METRIC_COUNTER,
                     "Messages taken out of mailboxes and handled (runtime signals included)."},
    [F_SENT] = {"troupe_actor_messages_sent_total", TR_METRIC_COUNTER,
                "Messages sent by actors (sends, requests, replies, forwards)."},
    [F_DROPPED] = {"troupe_actor_messages_dropped_total", TR_METRIC_COUNTER,
                   "Messages dropped by a mailbox's policy, or left queued when an actor ended."},
    [F_REJECTED] = {"troupe_actor_messages_rejected_total", TR_METRIC_COUNTER,
                    "Messages refused by a full mailbox (TR_EFULL)."},
    [F_DEPTH] = {"troupe_actor_mailbox_depth", TR_METRIC_GAUGE,
                 "Messages queued now in the mailboxes of a behaviour's actors."},
    [F_DEPTH_MAX] = {"troupe_actor_mailbox_depth_max", TR_METRIC_GAUGE,
                     "High-water mark of one actor's mailbox since the system started."},
    [F_LIMIT_WAITS] = {"troupe_actor_limiter_waits_total", TR_METRIC_COUNTER,
                       "Times an actor waited for its rate limit's next token."},
    [F_LIMIT_WAIT_S] = {"troupe_actor_limiter_wait_seconds_total", TR_METRIC_COUNTER,
                        "Time actors spent waiting for their rate limit."},
    [F_LIMIT_TOKENS] = {"troupe_actor_limiter_tokens_total", TR_METRIC_COUNTER,
                        "Messages a rate limit let through (tokens spent)."},
};

static uint64_t sub0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* The families per behaviour (not written when the counting is compiled out). */
static void collect_behaviours(tr_system *sys, tr_metrics_out *out)
{
    unsigned n = atomic_load_explicit(&sys->behs->n, memory_order_acquire);
    if (n < 2)
        n = 2;
    /* the rows summed: every thread's, for each name (row 0, not actors, is left out) */
    uint64_t(*sum)[TR_BC_N] = calloc(n, sizeof *sum);
    if (sum == NULL)
        return;
    pthread_mutex_lock(&sys->guests_lock);
    const tr_worker *g = sys->guests;
    for (unsigned w = 0; w <= sys->nworkers || g != NULL; w++) {
        const tr_beh_row *rows;
        if (w < sys->nworkers) {
            rows = sys->workers[w].brows;
        } else if (w == sys->nworkers) {
            rows = sys->brows;
        } else {
            rows = g->brows;
            g = g->gnext;
        }
        for (unsigned b = 1; b < n; b++)
            for (unsigned c = 0; c < TR_BC_N; c++)
                sum[b][c] += atomic_load_explicit(&rows[b].c[c], memory_order_relaxed);
    }
    pthread_mutex_unlock(&sys->guests_lock);
    for (unsigned f = 0; f < F_N; f++) {
        tr_metrics_out_family(out, fams[f].name, fams[f].type, fams[f].help);
        for (unsigned b = 1; b < n; b++) {
            const uint64_t *s = sum[b];
            if (s[TR_BC_SPAWNED] == 0 && s[TR_BC_RECEIVED] == 0)
                continue; /* (other) until a name overflows */
            tr_label l = {"behaviour", sys->behs->names[b]};
            uint64_t v = 0;
            switch (f) {
            case F_ACTORS: v = sub0(s[TR_BC_SPAWNED], s[TR_BC_ENDED]); break;
            case F_SPAWNS: v = s[TR_BC_SPAWNED]; break;
            case F_EXITS: v = s[TR_BC_ENDED]; break;
            case F_FAILURES: v = s[TR_BC_FAILED]; break;
            case F_RESTARTS: v = s[TR_BC_RESTARTS]; break;
            case F_RECEIVED: v = s[TR_BC_RECEIVED] + s[TR_BC_SDROPPED] + s[TR_BC_REJECTED]; break;
            case F_PROCESSED: v = sub0(s[TR_BC_POPPED], s[TR_BC_QDROPPED]); break;
            case F_SENT: v = s[TR_BC_SENT]; break;
            case F_DROPPED: v = s[TR_BC_QDROPPED] + s[TR_BC_SDROPPED]; break;
            case F_REJECTED: v = s[TR_BC_REJECTED]; break;
            case F_DEPTH: v = sub0(s[TR_BC_RECEIVED], s[TR_BC_POPPED]); break;
            case F_DEPTH_MAX: /* marks of 1 are not written (actor.c's raise_depth_max) */
                v = atomic_load_explicit(&sys->behs->depth_max[b], memory_order_relaxed);
                if (v == 0 && s[TR_BC_RECEIVED] > 0)
                    v = 1;
                break;
            case F_LIMIT_WAITS: v = s[TR_BC_LIMIT_WAITS]; break;
            case F_LIMIT_WAIT_S:
                tr_metrics_out_value(out, &l, 1, (double)s[TR_BC_LIMIT_WAIT_NS] / 1e9);
                continue;
            case F_LIMIT_TOKENS: v = s[TR_BC_LIMIT_TOKENS]; break;
            default: break;
            }
            tr_metrics_out_u64(out, &l, 1, v);
        }
    }
    free(sum);
}

static void collect(void *user, tr_metrics_out *out)
{
    tr_system *sys = user;
    if (TR_METRICS)
        collect_behaviours(sys, out);
    tr_system_stats st;
    tr_system_stats_get(sys, &st);
    tr_metrics_out_family(out, "troupe_dead_letters_total", TR_METRIC_COUNTER,
                          "Messages sent to no live actor, or left in ended actors.");
    tr_metrics_out_u64(out, NULL, 0, st.dead_letters);
    tr_metrics_out_family(out, "troupe_late_replies_total", TR_METRIC_COUNTER,
                          "Replies that arrived after their request timed out.");
    tr_metrics_out_u64(out, NULL, 0, st.late_replies);
    tr_metrics_out_family(out, "troupe_scheduler_workers", TR_METRIC_GAUGE, "Worker threads.");
    tr_metrics_out_u64(out, NULL, 0, sys->nworkers);
    tr_metrics_out_family(out, "troupe_scheduler_steals_total", TR_METRIC_COUNTER,
                          "Actors a worker took from another worker's queue.");
    tr_metrics_out_u64(out, NULL, 0, st.steals);
    tr_metrics_out_family(out, "troupe_scheduler_parks_total", TR_METRIC_COUNTER,
                          "Times a worker went to sleep for want of work.");
    tr_metrics_out_u64(out, NULL, 0, st.parks);
    tr_metrics_out_family(out, "troupe_scheduler_global_queue_depth", TR_METRIC_GAUGE,
                          "Runnable actors waiting in the global queue.");
    tr_metrics_out_u64(out, NULL, 0, atomic_load_explicit(&sys->inject_len, memory_order_relaxed));
}
