/*
 * sched.c — the scheduler: worker threads, their run queues, work stealing and parking.
 *
 * Each worker owns:
 *  - a LIFO "next" slot: an actor made runnable by the running actor runs right after it, on the
 *    same core with a warm cache (ping-pong pairs and rings stay on one worker); it is never
 *    stolen, and after TR_LIFO_MAX consecutive uses it is demoted to the ring so others get a turn;
 *  - a bounded FIFO ring the owner pushes at the tail; the owner and thieves take from the head
 *    with a CAS (a thief takes half in one CAS). When full, half moves to the global queue.
 *  - an MPSC inbox: an actor made runnable by another worker goes back to its home (the worker
 *    it last ran on) if that worker is busy running actors, so a producer acknowledged by a
 *    consumer on another core does not migrate to the consumer's core and get stolen back (its
 *    data stays in its home's cache). If the home is idle or searching, the actor runs on the
 *    waker's core instead: a ping-pong pair split across cores comes together on one.
 * Plus one global injection queue (mutex + intrusive list) for actors made runnable by threads
 * that are not workers (timers, the embedding application) and for overflow.
 *
 * Idle workers search (global queue, then steal) for a short spin, then park on a futex. Waking a
 * parked thread costs 10-500 us on a VM, so a producer wakes one only when no worker is already
 * searching, and the waker counts the woken worker as searching at once (as Go's scheduler does)
 * so a burst of sends wakes one worker, not all of them.
 *
 * The spin (tr_system_opts.spin_rounds) is 128 rounds (~150 us here) by default; a node lowers it
 * to 8 when the workers already take every CPU, because spinning workers then starve nng's I/O
 * threads (on 2 cores, 128 rounds doubled the remote round trip). Adaptive rules (shrink when a
 * spin ends in a park) were tried and lost 30% of local fan-in for the same gain; see
 * docs/performance.md. However short the spin, a search lasts long enough to rob a worker stuck
 * in a long turn whenever work is visible (TR_STEAL_PATIENCE).
 */
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TR_LIFO_MAX 32u
#define TR_GLOBAL_EVERY 61u
#define TR_SPIN_ROUNDS 128u  /* how long an idle worker spins before parking, by default */
#define TR_STEAL_SPIN 17u     /* rounds a search lasts at least while work is visible */
#define TR_STEAL_BACKLOG 16u  /* a victim with this many queued actors is robbed at once */
#define TR_STEAL_PATIENCE 16u /* else only after its queue head stood still this many rounds */

static _Thread_local tr_worker *tls_worker;

tr_worker *tr__current_worker(tr_system *sys)
{
    tr_worker *w = tls_worker;
    return (w != NULL && w->sys == sys) ? w : NULL;
}

uint64_t tr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t rng_next(tr_worker *w)
{
    uint32_t x = w->rng; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return w->rng = x;
}

/* ---- futex --------------------------------------------------------------------------------- */

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void tr__futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t timeout_ns)
{
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, timeout_ns ? &ts : NULL, NULL, 0);
}

void tr__futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

/* ---- the global injection queue ------------------------------------------------------------ */

static void inject_push_chain(tr_system *sys, tr_actor *first, tr_actor *last, size_t n)
{
    last->link = NULL;
    pthread_mutex_lock(&sys->inject_lock);
    if (sys->inject_tail != NULL)
        sys->inject_tail->link = first;
    else
        sys->inject_head = first;
    sys->inject_tail = last;
    atomic_fetch_add_explicit(&sys->inject_len, n, memory_order_seq_cst);
    pthread_mutex_unlock(&sys->inject_lock);
}

/* Takes up to max actors from the global queue; returns the chain and its length. */
static tr_actor *inject_pop(tr_system *sys, size_t max, size_t *n_out)
{
    *n_out = 0;
    if (atomic_load_explicit(&sys->inject_len, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&sys->inject_lock);
    tr_actor *first = sys->inject_head, *a = first, *last = NULL;
    size_t n = 0;
    while (a != NULL && n < max) {
        last = a;
        a = a->link;
        n++;
    }
    if (n > 0) {
        sys->inject_head = a;
        if (a == NULL)
            sys->inject_tail = NULL;
        last->link = NULL;
        atomic_fetch_sub_explicit(&sys->inject_len, n, memory_order_relaxed);
    }
    pthread_mutex_unlock(&sys->inject_lock);
    *n_out = n;
    return n > 0 ? first : NULL;
}

/* ---- waking and parking -------------------------------------------------------------------- */

static bool wake_one(tr_system *sys, unsigned start)
{
    for (unsigned i = 0; i < sys->nworkers; i++) {
        tr_worker *v = &sys->workers[(start + i) % sys->nworkers];
        uint32_t one = 1;
        if (atomic_load_explicit(&v->sleeping, memory_order_relaxed) == 1 &&
            atomic_compare_exchange_strong(&v->sleeping, &one, 0)) {
            atomic_fetch_sub(&sys->nparked, 1);
            atomic_fetch_add(&sys->nsearching, 1); /* the woken worker starts out searching */
            futex_wake(&v->sleeping);
            return true;
        }
    }
    return false;
}

/* Wakes worker v if it is parked. */
static void wake_worker(tr_system *sys, tr_worker *v)
{
    uint32_t one = 1;
    if (atomic_compare_exchange_strong(&v->sleeping, &one, 0)) {
        atomic_fetch_sub(&sys->nparked, 1);
        atomic_fetch_add(&sys->nsearching, 1);
        futex_wake(&v->sleeping);
    }
}

/* Called after making work visible to thieves: wake a worker if nobody is looking for work. */
static void maybe_wake(tr_system *sys, unsigned hint)
{
    if (atomic_load(&sys->nsearching) == 0 && atomic_load(&sys->nparked) > 0)
        wake_one(sys, hint);
}

/* ---- the per-worker ring ------------------------------------------------------------------- */

static uint32_t ring_len(tr_worker *w)
{
    uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&w->tail, memory_order_acquire);
    uint32_t n = t - h;
    return n > TR_RING_SIZE ? 1 : n; /* torn read under concurrent steals: say "not empty" */
}

/* Owner: moves the older half of a full ring to the global queue. */
static bool ring_overflow(tr_worker *w, uint32_t h)
{
    const uint32_t half = TR_RING_SIZE / 2;
    tr_actor *first = NULL, *last = NULL;
    /* claim the half first, so no thief can take the same actors */
    if (!atomic_compare_exchange_strong_explicit(&w->head, &h, h + half, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return false;
    for (uint32_t i = 0; i < half; i++) {
        tr_actor *a = atomic_load_explicit(&w->ring[(h + i) % TR_RING_SIZE], memory_order_relaxed);
        if (last != NULL)
            last->link = a;
        else
            first = a;
        last = a;
    }
    inject_push_chain(w->sys, first, last, half);
    return true;
}

static void ring_push(tr_worker *w, tr_actor *a)
{
    for (;;) {
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
        uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
        if (t - h < TR_RING_SIZE) {
            atomic_store_explicit(&w->ring[t % TR_RING_SIZE], a, memory_order_relaxed);
            atomic_store_explicit(&w->tail, t + 1, memory_order_seq_cst);
            return;
        }
        ring_overflow(w, h); /* a failed CAS means a thief made room: retry either way */
    }
}

static tr_actor *ring_pop(tr_worker *w)
{
    uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
    for (;;) {
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
        if (h == t)
            return NULL;
        tr_actor *a = atomic_load_explicit(&w->ring[h % TR_RING_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return a;
    }
}

static bool ring_empty(tr_worker *w)
{
    return atomic_load_explicit(&w->head, memory_order_acquire) ==
           atomic_load_explicit(&w->tail, memory_order_relaxed);
}

/* Thief w takes half of victim's ring into its own (empty) ring; returns one actor to run. */
static tr_actor *ring_steal(tr_worker *w, tr_worker *v)
{
    uint32_t h = atomic_load_explicit(&v->head, memory_order_acquire);
    for (;;) {
        uint32_t t = atomic_load_explicit(&v->tail, memory_order_acquire);
        uint32_t n = t - h;
        if (n == 0 || n > TR_RING_SIZE)
            return NULL;
        n -= n / 2;
        uint32_t mt = atomic_load_explicit(&w->tail, memory_order_relaxed);
        for (uint32_t i = 0; i < n; i++) {
            tr_actor *a = atomic_load_explicit(&v->ring[(h + i) % TR_RING_SIZE], memory_order_relaxed);
            atomic_store_explicit(&w->ring[(mt + i) % TR_RING_SIZE], a, memory_order_relaxed);
        }
        if (atomic_compare_exchange_weak_explicit(&v->head, &h, h + n, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            atomic_fetch_add_explicit(&w->steals, 1, memory_order_relaxed);
            /* keep the last one to run now, publish the rest */
            tr_actor *run = atomic_load_explicit(&w->ring[(mt + n - 1) % TR_RING_SIZE],
                                                 memory_order_relaxed);
            if (n > 1)
                atomic_store_explicit(&w->tail, mt + n - 1, memory_order_seq_cst);
            return run;
        }
    }
}

/* ---- scheduling entry points --------------------------------------------------------------- */

void tr__schedule(tr_system *sys, tr_worker *w, tr_actor *a)
{
    uint32_t af = atomic_load_explicit(&a->flags, memory_order_relaxed);
    if (TR_UNLIKELY(af & (TR_AF_WAITER | TR_AF_PORT))) {
        if (af & TR_AF_WAITER)
            tr__waiter_signal(a);
        else
            tr__port_run(a);
        return;
    }
    if (w != NULL && TR_UNLIKELY(w->guest) && (af & TR_AF_BLOCKING))
        w = NULL; /* not on an event loop: the global queue, for a worker */
    if (w != NULL) {
        /* a guest keeps what it wakes until tr_guest_leave runs it: no home, no worker woken */
        uint32_t home = w->guest ? 0 : atomic_load_explicit(&a->home, memory_order_relaxed);
        if (home != 0 && home - 1 != w->id) {
            tr_worker *hw = &sys->workers[home - 1];
            if (atomic_load(&hw->busy)) {
                tr__mpsc_push(&hw->inbox, &a->rq_node);
                /* it may have gone idle meanwhile: then it parks only after seeing its inbox
                 * empty, or we see it parked here (seq_cst on both sides) and wake it */
                if (atomic_load(&hw->sleeping) == 1)
                    wake_worker(sys, hw);
                return;
            }
        }
        tr_actor *old = w->next_slot;
        w->next_slot = a;
        if (old != NULL) {
            ring_push(w, old);
            if (!w->guest)
                maybe_wake(sys, w->id + 1);
        }
        return;
    }
    inject_push_chain(sys, a, a, 1);
    maybe_wake(sys, 0);
}

bool tr__worker_idle_otherwise(tr_worker *w)
{
    return w->next_slot == NULL && ring_len(w) == 0 &&
           atomic_load_explicit(&w->sys->inject_len, memory_order_relaxed) == 0 &&
           !tr__mpsc_nonempty(&w->inbox);
}

void tr__yield(tr_worker *w, tr_actor *a)
{
    if (w == NULL) {
        inject_push_chain(a->sys, a, a, 1);
        return;
    }
    ring_push(w, a);
    if (!w->guest)
        maybe_wake(w->sys, w->id + 1);
}

/* ---- the worker loop ----------------------------------------------------------------------- */

static tr_actor *take_global(tr_worker *w)
{
    tr_system *sys = w->sys;
    size_t len = atomic_load_explicit(&sys->inject_len, memory_order_relaxed);
    if (len == 0)
        return NULL;
    size_t want = len / sys->nworkers + 1;
    if (want > TR_RING_SIZE / 2)
        want = TR_RING_SIZE / 2;
    size_t n;
    tr_actor *chain = inject_pop(sys, want, &n);
    if (chain == NULL)
        return NULL;
    tr_actor *run = chain;
    for (tr_actor *a = chain->link, *next; a != NULL; a = next) {
        next = a->link;
        ring_push(w, a);
    }
    if (n > 1)
        maybe_wake(sys, w->id + 1);
    return run;
}

static tr_actor *actor_of_rq(tr_mpsc_node *n)
{
    return (tr_actor *)(void *)((char *)n - offsetof(tr_actor, rq_node));
}

/* Moves actors sent home by other workers into the ring (where thieves can see them). */
static void drain_inbox(tr_worker *w)
{
    tr_mpsc_node *n;
    while ((n = tr__mpsc_pop(&w->inbox)) != NULL)
        ring_push(w, actor_of_rq(n));
}

static tr_actor *find_local(tr_worker *w)
{
    drain_inbox(w);
    if ((++w->tick % TR_GLOBAL_EVERY) == 0) {
        tr_actor *a = take_global(w);
        if (a != NULL) {
            if (w->next_slot != NULL) {
                ring_push(w, w->next_slot);
                w->next_slot = NULL;
            }
            return a;
        }
    }
    if (w->next_slot != NULL) {
        tr_actor *a = w->next_slot;
        w->next_slot = NULL;
        if (w->next_streak++ < TR_LIFO_MAX)
            return a;
        ring_push(w, a); /* demoted for fairness; no wake: this worker runs it soon */
    }
    w->next_streak = 0;
    return ring_pop(w);
}

/* Should w rob v now? Moving an actor to another core costs its working set, and for actors
 * that exchange messages a lot that costs more than running them one after the other (fan-in on
 * two cores ran ~5x faster without stealing). So steal only real waiting: a backlog, or a queue
 * whose head has not moved for TR_STEAL_PATIENCE rounds (its owner is stuck in a long turn). */
static bool worth_stealing(tr_worker *w, tr_worker *v, unsigned round)
{
    uint32_t len = ring_len(v);
    uint32_t head = atomic_load_explicit(&v->head, memory_order_relaxed);
    unsigned i = v->id;
    if (len == 0 || head != w->seen_head[i]) {
        w->seen_head[i] = head;
        w->seen_round[i] = round;
        return len >= TR_STEAL_BACKLOG;
    }
    return len >= TR_STEAL_BACKLOG || round - w->seen_round[i] >= TR_STEAL_PATIENCE;
}

static bool work_visible(tr_system *sys)
{
    if (atomic_load(&sys->inject_len) > 0)
        return true;
    for (unsigned i = 0; i < sys->nworkers; i++)
        if (ring_len(&sys->workers[i]) > 0)
            return true;
    return false;
}

static tr_actor *search(tr_worker *w)
{
    tr_system *sys = w->sys;
    for (unsigned i = 0; i < sys->nworkers; i++)
        w->seen_round[i] = 0, w->seen_head[i] = atomic_load(&sys->workers[i].head) - 1;
    /* at least long enough to rob a stuck worker (TR_STEAL_PATIENCE) when work is visible: a
     * short adaptive spin must not leave an actor queued behind another actor's long turn */
    unsigned limit = atomic_load_explicit(&sys->spin_rounds, memory_order_relaxed);
    if (limit < TR_STEAL_SPIN && work_visible(sys))
        limit = TR_STEAL_SPIN;
    for (unsigned round = 0; round < limit && !atomic_load(&sys->halt); round++) {
        drain_inbox(w);
        tr_actor *a = ring_pop(w);
        if (a == NULL)
            a = take_global(w);
        if (a == NULL && sys->nworkers > 1) {
            unsigned start = rng_next(w);
            for (unsigned i = 0; i < sys->nworkers && a == NULL; i++) {
                tr_worker *v = &sys->workers[(start + i) % sys->nworkers];
                if (v != w && worth_stealing(w, v, round))
                    a = ring_steal(w, v);
            }
        }
        if (a != NULL)
            return a;
        for (unsigned k = 0; k < 32; k++)
            tr_cpu_relax();
    }
    return NULL;
}

void tr__sched_spin_hint(tr_system *sys, unsigned rounds)
{
    if (sys->opts.spin_rounds == 0)
        atomic_store(&sys->spin_rounds, rounds);
}


static void park(tr_worker *w)
{
    tr_system *sys = w->sys;
    atomic_store(&w->sleeping, 1);
    atomic_fetch_add(&sys->nparked, 1);
    if (work_visible(sys) || tr__mpsc_nonempty(&w->inbox) || atomic_load(&sys->halt)) {
        uint32_t one = 1;
        if (atomic_compare_exchange_strong(&w->sleeping, &one, 0)) {
            atomic_fetch_sub(&sys->nparked, 1);
            atomic_fetch_add(&sys->nsearching, 1);
            return;
        }
        return; /* a waker got us first and counted us as searching */
    }
    atomic_fetch_add_explicit(&w->parks, 1, memory_order_relaxed);
    while (atomic_load(&w->sleeping) == 1)
        futex_wait(&w->sleeping, 1);
}

int tr__at_batch_end(tr_system *sys, void (*fn)(void *), void *arg)
{
    tr_worker *w = tls_worker;
    if (w == NULL || w->sys != sys)
        return TR_HOOK_NONE;
    for (unsigned i = 0; i < w->nhooks; i++)
        if (w->hooks[i].fn == fn && w->hooks[i].arg == arg)
            return TR_HOOK_ALREADY;
    if (w->nhooks == TR_BATCH_HOOKS)
        return TR_HOOK_NONE;
    if (w->nhooks == 0) {
        w->hook_turns = 0;
        if (!w->guest)
            w->hook_ns = tr__now_ns();
    }
    w->hooks[w->nhooks].fn = fn;
    w->hooks[w->nhooks].arg = arg;
    w->nhooks++;
    return TR_HOOK_ADDED;
}

/* Runs the hooks asked for in this batch (asked again while they run: for the next batch). */
static void run_batch_hooks(tr_worker *w)
{
    unsigned n = w->nhooks;
    void (*fn[TR_BATCH_HOOKS])(void *);
    void *arg[TR_BATCH_HOOKS];
    for (unsigned i = 0; i < n; i++) {
        fn[i] = w->hooks[i].fn;
        arg[i] = w->hooks[i].arg;
    }
    w->nhooks = 0;
    for (unsigned i = 0; i < n; i++)
        fn[i](arg[i]);
}

static void *worker_main(void *arg)
{
    tr_worker *w = arg;
    pthread_setname_np(pthread_self(), "tr-worker");
    tr_system *sys = w->sys;
    tls_worker = w;
    bool searching = false; /* counted in nsearching */
    while (!atomic_load_explicit(&sys->halt, memory_order_acquire)) {
        tr_actor *a = find_local(w);
        if (a == NULL && w->nhooks > 0) {
            run_batch_hooks(w); /* out of local work: the batch ends (it may wake some) */
            continue; /* (one call of find_local in this loop keeps it inlined) */
        }
        if (a == NULL) {
            atomic_store_explicit(&w->busy, 0, memory_order_relaxed);
            if (!searching) {
                atomic_fetch_add(&sys->nsearching, 1);
                searching = true;
            }
            a = search(w);
        }
        if (a == NULL) {
            atomic_fetch_sub(&sys->nsearching, 1); /* not searching while parked */
            park(w);
            searching = true; /* a woken worker is counted as searching by its waker (or by park) */
            continue;
        }
        if (!atomic_load_explicit(&w->busy, memory_order_relaxed))
            atomic_store(&w->busy, 1);
        if (searching) {
            searching = false;
            /* the last searcher found work: others may be needed for what is left */
            if (atomic_fetch_sub(&sys->nsearching, 1) == 1 && work_visible(sys))
                maybe_wake(sys, w->id + 1);
        }
        /* a batch ends before a turn that may be long (a blocking actor's, or one starting late):
         * what it holds must not wait for that turn */
        if (w->nhooks > 0 && ((atomic_load_explicit(&a->flags, memory_order_relaxed) &
                               TR_AF_BLOCKING) ||
                              tr__now_ns() - w->hook_ns >= TR_BATCH_NS))
            run_batch_hooks(w);
        tr__actor_run(w, a);
        if (w->nhooks > 0 && ++w->hook_turns >= TR_BATCH_TURNS)
            run_batch_hooks(w); /* a batch that goes on and on ends here */
    }
    if (w->nhooks > 0)
        run_batch_hooks(w);
    if (searching)
        atomic_fetch_sub(&sys->nsearching, 1);
    tls_worker = NULL;
    return NULL;
}

bool tr__sched_quiescent(tr_system *sys)
{
    /* A worker parks only with an empty next slot and ring, and only its owner fills those; so
     * with every worker parked and every shared queue empty, nothing is runnable. (A worker that
     * is parking may still be re-checking the queues: they are empty, it will sleep.) */
    for (unsigned i = 0; i < sys->nworkers; i++)
        if (atomic_load(&sys->workers[i].sleeping) == 0)
            return false;
    return !work_visible(sys);
}

int tr__sched_start(tr_system *sys)
{
    atomic_store(&sys->spin_rounds, sys->opts.spin_rounds ? sys->opts.spin_rounds : TR_SPIN_ROUNDS);
    for (unsigned i = 0; i < sys->nworkers; i++) {
        tr_worker *w = &sys->workers[i];
        w->seen_head = calloc(sys->nworkers, sizeof *w->seen_head);
        w->seen_round = calloc(sys->nworkers, sizeof *w->seen_round);
        if (w->seen_head == NULL || w->seen_round == NULL)
            return TR_ENOMEM; /* tr_system_free releases what was allocated */
    }
    for (unsigned i = 0; i < sys->nworkers; i++) {
        tr_worker *w = &sys->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            atomic_store(&sys->halt, 1);
            for (unsigned j = 0; j < i; j++) {
                atomic_store(&sys->workers[j].sleeping, 0);
                futex_wake(&sys->workers[j].sleeping);
                pthread_join(sys->workers[j].thread, NULL);
            }
            return TR_ENOMEM;
        }
    }
    return TR_OK;
}

void tr__sched_halt(tr_system *sys)
{
    atomic_store(&sys->halt, 1);
    for (unsigned i = 0; i < sys->nworkers; i++) {
        atomic_store(&sys->workers[i].sleeping, 0);
        futex_wake(&sys->workers[i].sleeping);
    }
    for (unsigned i = 0; i < sys->nworkers; i++)
        pthread_join(sys->workers[i].thread, NULL);
}

/* ---- guests -------------------------------------------------------------------------------- */

/* A guest is a worker record that no worker thread owns: an outside thread (an event loop)
 * borrows it between tr_guest_enter and tr_guest_leave. It is not in sys->workers, so nobody
 * steals from it, wakes it or sends actors "home" to it; what it holds when it leaves goes to
 * the global queue, where the workers find it. */
struct tr_guest {
    tr_worker w;
};

int tr_guest_new(tr_system *sys, tr_guest **out)
{
    if (sys == NULL || out == NULL)
        return TR_EINVAL;
    size_t size = (sizeof(tr_guest) + TR_CACHELINE - 1) / TR_CACHELINE * TR_CACHELINE;
    tr_guest *g = aligned_alloc(TR_CACHELINE, size);
    if (g == NULL)
        return TR_ENOMEM;
    memset(g, 0, sizeof *g);
    g->w.sys = sys;
    g->w.id = UINT32_MAX;
    g->w.guest = true;
    g->w.rng = 0x9e3779b9u;
    tr__mpsc_init(&g->w.inbox);
    tr__stats_guest_add(sys, &g->w); /* its counters per behaviour are summed with the others */
    *out = g;
    return TR_OK;
}

int tr_guest_enter(tr_guest *g)
{
    if (g == NULL)
        return TR_EINVAL;
    if (tls_worker != NULL)
        return TR_ESTATE; /* a worker, or a guest already */
    int rc = tr__ext_enter(g->w.sys); /* the system does not halt under a guest */
    if (rc != TR_OK)
        return rc;
    tls_worker = &g->w;
    return TR_OK;
}

unsigned tr_guest_leave(tr_guest *g, unsigned budget)
{
    if (g == NULL || tls_worker != &g->w)
        return 0;
    tr_worker *w = &g->w;
    tr_system *sys = w->sys;
    unsigned turns = 0;
    for (;;) {
        while (turns < budget) {
            tr_actor *a = w->next_slot;
            if (a != NULL)
                w->next_slot = NULL;
            else if ((a = ring_pop(w)) == NULL)
                break;
            tr__actor_run(w, a);
            turns++;
        }
        if (w->nhooks == 0)
            break;
        /* before anything goes to the workers: a unit a hook commits must not be overtaken by
         * the next turn of its actor on a worker (the store keeps its units in order anyway) */
        run_batch_hooks(w);
        if (turns >= budget || (w->next_slot == NULL && ring_empty(w)))
            break; /* what the hooks woke (the replies' receivers) runs next time, or below */
    }
    /* what is left (over budget) goes to the workers */
    tr_actor *first = w->next_slot, *last = first, *a;
    size_t n = first != NULL;
    w->next_slot = NULL;
    while ((a = ring_pop(w)) != NULL) {
        if (last != NULL)
            last->link = a;
        else
            first = a;
        last = a;
        n++;
    }
    if (n > 0)
        inject_push_chain(sys, first, last, n);
    if (atomic_load_explicit(&sys->inject_len, memory_order_relaxed) > 0)
        maybe_wake(sys, 0); /* also for a ring that overflowed into the global queue */
    tls_worker = NULL;
    tr__ext_leave(sys);
    return turns;
}

void tr_guest_free(tr_guest *g)
{
    if (g == NULL)
        return;
    tr__stats_guest_remove(g->w.sys, &g->w);
    free(g);
}
