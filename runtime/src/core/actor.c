/*
 * actor.c — actors: the header pool and pid table, spawn, send, one turn of a mailbox, and the
 * end of an actor.
 *
 * Headers are allocated in chunks of TR_CHUNK_SIZE that live as long as the system. A header's
 * slot (its index in the table) never changes; each reuse bumps its generation, so a pid names
 * one incarnation exactly. Lookup of a pid is three loads: chunk, header, live pid. A message is
 * stamped with the pid it was sent to, and a receiver drops any message stamped for an earlier
 * incarnation of its header (possible only when a send races with the end of the actor).
 *
 * Scheduling follows the classic "scheduled flag" protocol: a sender pushes to the mailbox and
 * then flips `sched` 0 -> 1; whoever flips it makes the actor runnable. At the end of a turn the
 * runner clears the flag and looks at the mailbox again (both seq_cst: a Dekker pair with the
 * sender), so a message is never left behind and the actor never runs on two threads at once.
 */
#include "idmap.h"
#include "limiter.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define WORKER_CACHE_MAX (4u * TR_ACTOR_BATCH)
#define TR_PARK_QUANTUM_NS 4000000u
#define TR_DROP_OLDEST_SLACK 1024u
#define TR_DEPTH_SAMPLE 16u

/* ---- table and pool ------------------------------------------------------------------------ */

int tr__actor_table_init(tr_system *sys)
{
    sys->chunks = calloc(TR_MAX_CHUNKS, sizeof *sys->chunks);
    if (sys->chunks == NULL)
        return TR_ENOMEM;
    sys->nchunks = 0;
    sys->free_batches = NULL;
    sys->free_loose = NULL;
    return TR_OK;
}

static void free_one(tr_actor *a, void *arg)
{
    (void)arg;
    tr_msg *m; /* sends that raced with the end of their target: still dead letters */
    while ((m = (tr_msg *)tr__mpsc_pop(&a->mbox)) != NULL)
        tr__dead_letter(a->sys, m->to, m);
}

void tr__actor_table_free(tr_system *sys)
{
    if (sys->chunks == NULL)
        return;
    tr__actor_foreach(sys, free_one, NULL);
    for (unsigned c = 0; c < sys->nchunks; c++)
        free(atomic_load_explicit(&sys->chunks[c], memory_order_relaxed));
    free(sys->chunks);
    sys->chunks = NULL;
}

void tr__actor_foreach(tr_system *sys, void (*fn)(tr_actor *, void *), void *arg)
{
    for (unsigned c = sys->nchunks; c-- > 0;) {
        tr_actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
        for (unsigned i = TR_CHUNK_SIZE; i-- > 0;)
            fn(&chunk[i], arg);
    }
}

/* Adds a chunk to the global free list. Called with pool_lock held. */
static int pool_grow(tr_system *sys)
{
    if (sys->nchunks >= TR_MAX_CHUNKS)
        return TR_ENOMEM;
    tr_actor *chunk = aligned_alloc(TR_CACHELINE, sizeof(tr_actor) * TR_CHUNK_SIZE);
    if (chunk == NULL)
        return TR_ENOMEM;
    unsigned c = sys->nchunks;
    for (unsigned i = 0; i < TR_CHUNK_SIZE; i++) {
        tr_actor *a = &chunk[i];
        tr__mpsc_init(&a->mbox);
        atomic_init(&a->sched, 1);
        atomic_init(&a->flags, 0);
        atomic_init(&a->pid, 0);
        atomic_init(&a->home, 0);
        atomic_init(&a->rq_node.next, NULL);
        a->slot = (c << TR_CHUNK_SHIFT) | i;
        a->gen = 0;
        a->sys = sys;
        a->beh = NULL;
        a->state = NULL;
        a->pending = NULL;
        a->ext = NULL;
        atomic_init(&a->pushed, 0);
        atomic_init(&a->popped, 0);
        a->acct_pushed = a->acct_popped = 0;
        atomic_init(&a->boff, TR_BEH_NONE);
        a->batch_next = NULL;
        a->link = ((i + 1) % TR_ACTOR_BATCH != 0) ? &chunk[i + 1] : NULL;
    }
    for (unsigned i = 0; i < TR_CHUNK_SIZE; i += TR_ACTOR_BATCH) {
        chunk[i].batch_next = sys->free_batches;
        sys->free_batches = &chunk[i];
    }
    atomic_store_explicit(&sys->chunks[c], chunk, memory_order_release);
    sys->nchunks = c + 1;
    return TR_OK;
}

tr_actor *tr__actor_alloc(tr_system *sys)
{
    tr_worker *w = tr__current_worker(sys);
    if (w != NULL && w->guest)
        w = NULL; /* a guest keeps no header cache: it would be stranded when the guest goes */
    tr_actor *a = NULL;
    if (w != NULL && w->free_actors != NULL) {
        a = w->free_actors;
        w->free_actors = a->link;
        w->nfree_actors--;
    } else {
        pthread_mutex_lock(&sys->pool_lock);
        if (w == NULL && sys->free_loose != NULL) {
            a = sys->free_loose;
            sys->free_loose = a->link;
        } else {
            if (sys->free_batches == NULL && pool_grow(sys) != TR_OK) {
                pthread_mutex_unlock(&sys->pool_lock);
                return NULL;
            }
            /* a whole batch in O(1): one for now, the rest for the worker's (or loose) cache */
            a = sys->free_batches;
            sys->free_batches = a->batch_next;
            if (w != NULL) {
                w->free_actors = a->link;
                w->nfree_actors = TR_ACTOR_BATCH - 1;
            } else if (a->link != NULL) {
                tr_actor *last = a->link;
                while (last->link != NULL)
                    last = last->link;
                last->link = sys->free_loose;
                sys->free_loose = a->link;
            }
        }
        pthread_mutex_unlock(&sys->pool_lock);
    }
    a->gen = (a->gen + 1) & ((1u << TR_GEN_BITS) - 1);
    if (a->gen == 0)
        a->gen = 1;
    a->link = NULL;
    a->batch_next = NULL;
    atomic_store_explicit(&a->flags, 0, memory_order_relaxed);
    atomic_store_explicit(&a->home, 0, memory_order_relaxed);
    a->pending = NULL;
    a->ext = NULL;
    /* per-incarnation counters (pushed/popped run on: their difference is the queue) */
    atomic_store_explicit(&a->base, atomic_load_explicit(&a->popped, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&a->capacity, 0, memory_order_relaxed);
    atomic_store_explicit(&a->overflow, TR_OVERFLOW_DROP_NEWEST, memory_order_relaxed);
    atomic_store_explicit(&a->send_dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&a->rejected, 0, memory_order_relaxed);
    atomic_store_explicit(&a->dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&a->token_wait_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&a->depth_max, 0, memory_order_relaxed);
    atomic_store_explicit(&a->restarts, 0, memory_order_relaxed);
    return a;
}

tr_msg *tr__mbox_take_closed(tr_actor *a)
{
    for (unsigned spins = 0;; spins++) {
        tr_msg *m = (tr_msg *)tr__mpsc_pop(&a->mbox);
        if (m != NULL) {
            tr__count_popped(a); /* pushed - popped stays the queue's length for the next one */
            return m;
        }
        int64_t owed = (int64_t)(atomic_load_explicit(&a->pushed, memory_order_seq_cst) -
                                 atomic_load_explicit(&a->popped, memory_order_relaxed));
        if (owed <= 0)
            return NULL;
        /* a sender that found the pid before it was cleared is between its count and its push
         * (or about to take its count back): a few instructions, unless it was preempted */
        if (spins < 64)
            tr_cpu_relax();
        else
            sched_yield();
    }
}

void tr__actor_release(tr_actor *a)
{
    tr_system *sys = a->sys;
    /* messages that raced with the end of the actor (none after tr__actor_finish) */
    tr_msg *m;
    while ((m = tr__mbox_take_closed(a)) != NULL) {
        tr__dead_letter(sys, m->to, m);
        tr__acct_reset(a); /* not the next incarnation's to count (tr__count_end) */
    }
    tr_worker *w = tr__current_worker(sys);
    if (w != NULL && !w->guest) {
        a->link = w->free_actors;
        w->free_actors = a;
        if (++w->nfree_actors <= WORKER_CACHE_MAX)
            return;
        /* hand a batch to the global stack */
        tr_actor *first = w->free_actors, *last = first;
        for (unsigned i = 1; i < TR_ACTOR_BATCH; i++)
            last = last->link;
        w->free_actors = last->link;
        w->nfree_actors -= TR_ACTOR_BATCH;
        last->link = NULL;
        pthread_mutex_lock(&sys->pool_lock);
        first->batch_next = sys->free_batches;
        sys->free_batches = first;
        pthread_mutex_unlock(&sys->pool_lock);
        return;
    }
    pthread_mutex_lock(&sys->pool_lock);
    a->link = sys->free_loose;
    sys->free_loose = a;
    pthread_mutex_unlock(&sys->pool_lock);
}

tr_actor *tr__actor_lookup(tr_system *sys, tr_pid pid)
{
    uint32_t slot = tr_pid_slot(pid);
    uint32_t c = slot >> TR_CHUNK_SHIFT;
    if (pid == TR_PID_NONE || c >= TR_MAX_CHUNKS)
        return NULL;
    tr_actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
    if (chunk == NULL)
        return NULL;
    tr_actor *a = &chunk[slot & (TR_CHUNK_SIZE - 1)];
    if (atomic_load_explicit(&a->pid, memory_order_acquire) != pid)
        return NULL;
    return a;
}

/* ---- spawning ------------------------------------------------------------------------------ */

/* Gives up the right to run `a` (sched 1 -> 0) unless messages wait. Returns true when the
 * caller still (or again) holds that right and must make the actor runnable.
 * Once sched is 0 a sender may schedule the actor and another worker may be popping its
 * mailbox, so after the store we must not read consumer state (head): we compare the tail,
 * which senders exchange, with its value before the store. The tail of an empty queue is its
 * stub, which no push installs, so an unchanged tail means no push (no ABA). */
bool tr__release_turn(tr_actor *a)
{
    /* snapshot the tail first: "empty" is judged against it, so any push after the snapshot
     * changes the tail (a push between an emptiness check and a later snapshot would be lost:
     * its sender saw sched == 1 and left the scheduling to us) */
    tr_mpsc_node *t0 = atomic_load_explicit(&a->mbox.tail, memory_order_seq_cst);
    if (t0 != &a->mbox.stub || a->mbox.head != &a->mbox.stub ||
        atomic_load_explicit(&a->mbox.stub.next, memory_order_acquire) != NULL)
        return true; /* messages wait (or a push is half done): still ours, keep sched = 1 */
    atomic_store_explicit(&a->sched, 0, memory_order_seq_cst);
    return atomic_load_explicit(&a->mbox.tail, memory_order_seq_cst) != t0 &&
           atomic_exchange_explicit(&a->sched, 1, memory_order_seq_cst) == 0;
}

/* Checks mailbox options and fills in their defaults. */
static int mailbox_opts_norm(const tr_mailbox_opts *in, tr_mailbox_opts *out)
{
    *out = *in;
    if (out->overflow > TR_OVERFLOW_REJECT || out->limit > TR_LIMIT_LEAKY)
        return TR_EINVAL;
    if (out->limit != TR_LIMIT_NONE && out->rate == 0)
        return TR_EINVAL;
    if (out->limit == TR_LIMIT_LEAKY) {
        /* the bucket's queue: arrivals beyond it are dropped */
        if (out->capacity == 0)
            out->capacity = out->rate;
        out->overflow = TR_OVERFLOW_DROP_NEWEST;
    }
    if (out->limit == TR_LIMIT_TOKEN && out->burst == 0)
        out->burst = 1;
    if (out->capacity > (1u << 30))
        return TR_EINVAL;
    return TR_OK;
}

/* Sets up a fresh (not yet visible) actor's limiter. */
static int limiter_setup(tr_actor *a, const tr_mailbox_opts *mo)
{
    if (mo->limit == TR_LIMIT_NONE)
        return TR_OK;
    tr_actor_ext *x = tr__ext_get(a);
    if (x == NULL || (x->lim == NULL && (x->lim = malloc(sizeof *x->lim)) == NULL))
        return TR_ENOMEM;
    tr_limiter_init(x->lim, mo->limit, mo->rate, mo->burst, tr__now_ns());
    x->limited = true;
    return TR_OK;
}

static int spawn(tr_system *sys, tr_worker *w, tr_ctx *parent, const tr_behaviour *b,
                 const void *arg, const tr_spawn_opts *opts, tr_pid *out)
{
    if (b == NULL || b->receive == NULL)
        return TR_EINVAL;
    tr_mailbox_opts mo = {0};
    if (opts != NULL) {
        int rc = mailbox_opts_norm(&opts->mailbox, &mo);
        if (rc != TR_OK)
            return rc;
        if (opts->link && parent == NULL)
            return TR_EINVAL;
    }
    int st = atomic_load_explicit(&sys->state, memory_order_acquire);
    if (st == TR_SYS_STOPPING || st == TR_SYS_JOINED)
        return TR_ESTOPPED;
    tr_actor *a = tr__actor_alloc(sys);
    if (a == NULL)
        return TR_ENOMEM;
    if (opts != NULL && opts->blocking) /* not visible yet: nobody else writes flags */
        atomic_store_explicit(&a->flags, TR_AF_BLOCKING, memory_order_relaxed);
    __atomic_store_n(&a->beh, b, __ATOMIC_RELAXED); /* ctl.c's walk reads it as others spawn */
    if (b->state_size <= TR_STATE_INLINE) {
        a->state = a->inline_state;
        memset(a->inline_state, 0, sizeof a->inline_state);
    } else if ((a->state = calloc(1, b->state_size)) == NULL) {
        tr__actor_release(a);
        return TR_ENOMEM;
    }
    tr_pid pid = tr__pid_of(sys, a);
#if TR_METRICS
    uint16_t boff;
    if (w != NULL ? w->last_beh == b /* spawned here just before: the same row */
                  : tr__tl_spawn.serial == sys->serial && tr__tl_spawn.b == b)
        boff = w != NULL ? w->last_boff : tr__tl_spawn.boff;
    else
        boff = tr__beh_boff(sys, w, b);
    atomic_store_explicit(&a->boff, boff, memory_order_relaxed);
    /* acct_pushed and acct_popped are both `popped` already: set so by the last end of this
     * header (tr__count_end), or by whatever else used it (tr__acct_reset) */
#else
    const uint16_t boff = 0;
#endif
    if (opts != NULL) {
        atomic_store_explicit(&a->capacity, mo.capacity, memory_order_relaxed);
        atomic_store_explicit(&a->overflow, (uint32_t)mo.overflow, memory_order_relaxed);
        atomic_store_explicit(&a->restarts, opts->restarts, memory_order_relaxed);
        int rc = limiter_setup(a, &mo);
        if (rc == TR_OK && opts->trap_exits) {
            tr_actor_ext *x = tr__ext_get(a);
            if (x == NULL)
                rc = TR_ENOMEM;
            else
                x->trap_exits = true;
        }
        if (rc == TR_OK && opts->link) {
            /* both ends are ours: the parent is running here, the child is not visible yet */
            rc = tr__link_add(a, parent->pid);
            if (rc == TR_OK && (rc = tr__link_add(parent->self, pid)) != TR_OK)
                rc = TR_ENOMEM;
        }
        if (rc != TR_OK) {
            tr__ext_free(a);
            if (a->state != a->inline_state)
                free(a->state);
            a->state = NULL;
            tr__actor_release(a);
            return rc;
        }
    }
    atomic_store_explicit(&a->sched, TR_SCHED_BUSY, memory_order_relaxed); /* not runnable during init */
    atomic_store_explicit(&a->pid, pid, memory_order_release);
#if TR_METRICS
    tr__bcount_off(sys, w, boff, TR_BC_SPAWNED, 1); /* also the system's figure */
#else
    TR_COUNT(sys, w, spawned);
#endif
    if (opts != NULL && opts->restarts > 0)
        tr__bcount_off(sys, w, boff, TR_BC_RESTARTS, 1);
    if (b->init != NULL) {
        tr_ctx ctx = {.sys = sys, .w = w, .self = a, .pid = pid};
        int rc = b->init(&ctx, a->state, arg);
        if (TR_METRICS && ctx.sent > 0)
            tr__bcount_off(sys, w, boff, TR_BC_SENT, ctx.sent);
        if (rc != 0 || ctx.ending) {
            /* init refused: the actor never existed for anyone else; terminate does not run,
             * but links and monitors it made are told (as OTP's init failure does).
             * The error is init's return, else tr_fail's code, else TR_ENOPROC (tr_stop). */
            if (rc == 0)
                rc = ctx.reason.kind == TR_REASON_ERROR && ctx.reason.code != 0 ? ctx.reason.code
                                                                                : TR_ENOPROC;
            atomic_store_explicit(&a->pid, 0, memory_order_seq_cst);
            tr_reason why = {.kind = TR_REASON_ERROR, .code = rc, .text = ctx.fail_text};
            if (opts != NULL && opts->link)
                tr__link_del(parent->self, pid); /* the spawner learns from the return code */
            tr__actor_finish(a, w, pid, &why);
            free(ctx.fail_text);
            if (a->state != a->inline_state)
                free(a->state);
            a->state = NULL;
            tr__count_end(sys, w, a, 0, true); /* init's sends are counted above */
            tr__actor_release(a);
            return rc;
        }
    }
    if (out != NULL)
        *out = pid;
    /* open for scheduling; messages sent during init are picked up now */
    if (tr__release_turn(a))
        tr__schedule(sys, w, a);
    return TR_OK;
}

int tr_system_spawn_ex(tr_system *sys, const tr_behaviour *b, const void *arg,
                       const tr_spawn_opts *opts, tr_pid *out)
{
    if (sys == NULL)
        return TR_EINVAL;
    tr_worker *w = tr__current_worker(sys);
    if (w != NULL)
        return spawn(sys, w, NULL, b, arg, opts, out);
    int rc = tr__ext_enter(sys);
    if (rc != TR_OK)
        return rc;
    rc = spawn(sys, NULL, NULL, b, arg, opts, out);
    tr__ext_leave(sys);
    return rc;
}

int tr_system_spawn(tr_system *sys, const tr_behaviour *b, const void *arg, tr_pid *out)
{
    return tr_system_spawn_ex(sys, b, arg, NULL, out);
}

int tr_spawn_ex(tr_ctx *ctx, const tr_behaviour *b, const void *arg, const tr_spawn_opts *opts,
                tr_pid *out)
{
    if (ctx == NULL)
        return TR_EINVAL;
    return spawn(ctx->sys, ctx->w, ctx, b, arg, opts, out);
}

int tr_spawn(tr_ctx *ctx, const tr_behaviour *b, const void *arg, tr_pid *out)
{
    return tr_spawn_ex(ctx, b, arg, NULL, out);
}

tr_pid tr_self(const tr_ctx *ctx)
{
    return ctx->pid;
}

tr_system *tr_ctx_system(const tr_ctx *ctx)
{
    return ctx->sys;
}

void tr__ctx_end(tr_ctx *ctx, const tr_reason *reason)
{
    if (ctx->ending)
        return;
    if (reason->kind == TR_REASON_ERROR) {
        tr_fail(ctx, reason->code, reason->text);
        return;
    }
    ctx->ending = true;
    ctx->reason = (tr_reason){.kind = reason->kind, .code = reason->code};
}

void tr_stop(tr_ctx *ctx)
{
    if (ctx->ending)
        return;
    ctx->ending = true;
    ctx->reason = (tr_reason){.kind = TR_REASON_NORMAL};
}

void tr_fail(tr_ctx *ctx, int code, const char *text)
{
    if (ctx->ending)
        return;
    ctx->ending = true;
    free(ctx->fail_text);
    ctx->fail_text = text != NULL ? strdup(text) : NULL;
    ctx->reason = (tr_reason){.kind = TR_REASON_ERROR, .code = code, .text = ctx->fail_text};
}

bool tr_system_alive(tr_system *sys, tr_pid pid)
{
    return sys != NULL && tr__actor_lookup(sys, pid) != NULL;
}

/* ---- sending ------------------------------------------------------------------------------- */

void tr__dead_letter(tr_system *sys, tr_pid to, tr_msg *m)
{
    if (m->flags & TR_MF_SIGNAL) {
        tr__signal_bounce(sys, m, NULL); /* a control request, not a letter: answered noproc */
        return;
    }
    if (m->type == TR_MSG_TIMEOUT && (m->flags & TR_MF_SYSTEM)) {
        tr_msg_free(m); /* a request's timeout for a requester that ended: moot, not a letter */
        return;
    }
    atomic_fetch_add_explicit(&sys->dead_letters, 1, memory_order_relaxed);
    if (sys->opts.dead_letter_hook != NULL)
        sys->opts.dead_letter_hook(sys->opts.dead_letter_user, to, m);
    if ((m->flags & TR_MF_REQUEST) && tr_pid_node(m->sender) == sys->opts.node_id) {
        /* a blocked tr_system_call learns at once that its request will never be answered */
        tr_actor *w = tr__actor_lookup(sys, m->sender);
        uint32_t af = w != NULL ? atomic_load_explicit(&w->flags, memory_order_relaxed) : 0;
        tr_msg *n;
        if (af & TR_AF_PORT) {
            /* a port gets its request back whole (no allocation, so it always can): its callback
             * sees TR_ENOPROC with the request, never read by its target, and may send it again
             * (the shard's keyed actors that end with requests queued; the web bridge resends
             * once). Going back as a reply, it is never bounced twice. */
            tr_pid requester = m->sender;
            m->flags = TR_MF_REPLY | TR_MF_SYSTEM | TR_MF_BOUNCED;
            m->sender = to;
            tr__deliver(sys, tr__current_worker(sys), requester, m);
            return;
        }
        if ((af & TR_AF_WAITER) && (n = tr_msg_new(TR_MSG_NOPROC_NOTICE, 0)) != NULL) {
            n->flags = TR_MF_REPLY | TR_MF_SYSTEM;
            n->corr = m->corr;
            n->sender = to;
            tr__deliver(sys, tr__current_worker(sys), m->sender, n);
        }
    }
    tr_msg_free(m);
}

/* The most messages a bounded mailbox may hold: its capacity, except for drop_oldest, whose
 * receiver trims the oldest only when it runs: until then it may hold up to TR_DROP_OLDEST_SLACK
 * (or capacity, if more) extra messages, beyond which the newest are dropped, so memory stays
 * bounded even while the receiver is stuck. */
static inline uint64_t queue_bound(uint32_t cap, uint32_t pol)
{
    if (pol != TR_OVERFLOW_DROP_OLDEST)
        return cap;
    return (uint64_t)cap + (cap > TR_DROP_OLDEST_SLACK ? cap : TR_DROP_OLDEST_SLACK);
}

/* Messages queued now (system messages included: they bypass the capacity but take room). */
static uint64_t queue_depth(tr_actor *a)
{
    int64_t d = (int64_t)(atomic_load_explicit(&a->pushed, memory_order_relaxed) -
                          atomic_load_explicit(&a->popped, memory_order_relaxed));
    return d > 0 ? (uint64_t)d : 0;
}

static inline __attribute__((always_inline)) void raise_depth_max(tr_actor *a, uint64_t depth)
{
    uint32_t d = depth > UINT32_MAX ? UINT32_MAX : (uint32_t)depth;
    uint32_t cur = atomic_load_explicit(&a->depth_max, memory_order_relaxed);
    while (d > cur && !atomic_compare_exchange_weak_explicit(&a->depth_max, &cur, d,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
    /* its behaviour's mark, when this one rose past 1 (a mark of 1 is implied by any message
     * received: stats.c writes it so; every new actor's first message would cost it here) */
    if (TR_METRICS && TR_UNLIKELY(d > cur && d > 1)) {
        _Atomic uint32_t *mx = &a->sys->behs->depth_max[tr__bidx(a)];
        uint32_t bm = atomic_load_explicit(mx, memory_order_relaxed);
        while (d > bm && !atomic_compare_exchange_weak_explicit(mx, &bm, d, memory_order_relaxed,
                                                                memory_order_relaxed))
            ;
    }
}

/* Admission to a bounded mailbox: a place is taken with a CAS on `pushed` only while the queue
 * is below its bound, so the bound is exact (no sender overshoots it) and a refused send leaves
 * no trace in the counters. */
static int admit_bounded(tr_actor *a, uint32_t cap, tr_msg *m)
{
    uint32_t pol = atomic_load_explicit(&a->overflow, memory_order_relaxed);
    uint64_t bound = queue_bound(cap, pol);
    uint64_t n = atomic_load_explicit(&a->pushed, memory_order_relaxed);
    for (;;) {
        int64_t depth = (int64_t)(n - atomic_load_explicit(&a->popped, memory_order_relaxed));
        if (depth < 0)
            depth = 0; /* popped is read after n: the receiver took some since */
        if ((uint64_t)depth >= bound)
            break;
        if (atomic_compare_exchange_weak_explicit(&a->pushed, &n, n + 1, memory_order_seq_cst,
                                                  memory_order_relaxed)) {
            raise_depth_max(a, (uint64_t)depth + 1);
            return TR_OK;
        }
    }
    if (pol == TR_OVERFLOW_REJECT || (m->flags & TR_MF_REQUEST)) {
        /* a request is never dropped silently: its requester would wait for nothing */
        atomic_fetch_add_explicit(&a->rejected, 1, memory_order_relaxed);
        /* its behaviour's too, in the system's row (the sender may be any thread; inline: a
         * call here costs tr__deliver's fast path registers) */
        if (TR_METRICS)
            atomic_fetch_add_explicit(&a->sys->brows[tr__bidx(a)].c[TR_BC_REJECTED], 1,
                                      memory_order_relaxed);
        tr_msg_free(m);
        return TR_EFULL;
    }
    atomic_fetch_add_explicit(&a->send_dropped, 1, memory_order_relaxed);
    if (TR_METRICS)
        atomic_fetch_add_explicit(&a->sys->brows[tr__bidx(a)].c[TR_BC_SDROPPED], 1,
                                  memory_order_relaxed);
    tr_msg_free(m);
    return 1; /* dropped by policy: the send itself succeeded */
}

/* Closes the race between a send and the end of its target. The sender counts its push in
 * `pushed` before it checks the pid again; the ender clears the pid before it reads `pushed`
 * (tr__mbox_take_closed). Both seq_cst, so either the ender waits for this message and answers
 * it (a link request gets its exit signal), or the sender sees the pid gone and takes its count
 * back. Without it a message could sit in a dead actor's mailbox until the header was reused. */
static inline bool push_allowed(tr_actor *a, tr_pid to)
{
    if (TR_LIKELY(atomic_load_explicit(&a->pid, memory_order_seq_cst) == to))
        return true;
    atomic_fetch_sub_explicit(&a->pushed, 1, memory_order_seq_cst);
    return false;
}

int tr__deliver(tr_system *sys, tr_worker *w, tr_pid to, tr_msg *m)
{
    if (TR_UNLIKELY(tr_pid_node(to) != sys->opts.node_id))
        return tr__remote_route(sys, to, m); /* another node's pid, or none */
    tr_actor *a = tr__actor_lookup(sys, to);
    m->to = to;
    if (TR_UNLIKELY(a == NULL)) {
        tr__dead_letter(sys, to, m);
        return TR_ENOPROC;
    }
    if (TR_UNLIKELY(m->flags & (TR_MF_SIGNAL | TR_MF_SYSTEM))) {
        /* runtime signals and messages bypass capacity; a signal wakes a parked actor */
        /* read m before the push: once queued it belongs to the receiver */
        bool signal = (m->flags & TR_MF_SIGNAL) != 0;
        uint32_t f = TR_AF_SIGNALED;
        if (m->type == TR_SIG_EXIT && m->corr == TR_REASON_KILLED)
            f |= TR_AF_KILL;
        atomic_fetch_add_explicit(&a->pushed, 1, memory_order_seq_cst);
        if (TR_UNLIKELY(!push_allowed(a, to))) {
            tr__dead_letter(sys, to, m);
            return TR_ENOPROC;
        }
        tr__mpsc_push(&a->mbox, &m->node);
        if (signal) {
            atomic_fetch_or_explicit(&a->flags, f, memory_order_seq_cst);
            uint32_t parked = TR_SCHED_PARKED;
            if (atomic_compare_exchange_strong_explicit(&a->sched, &parked, TR_SCHED_BUSY,
                                                        memory_order_seq_cst,
                                                        memory_order_seq_cst)) {
                tr__schedule(sys, w, a);
                return TR_OK;
            }
        }
    } else {
        uint32_t cap = atomic_load_explicit(&a->capacity, memory_order_relaxed);
        if (TR_UNLIKELY(cap != 0)) {
            int rc = admit_bounded(a, cap, m);
            if (rc != TR_OK)
                return rc < 0 ? rc : TR_OK;
        } else {
            atomic_fetch_add_explicit(&a->pushed, 1, memory_order_seq_cst);
        }
        if (TR_UNLIKELY(!push_allowed(a, to))) {
            tr__dead_letter(sys, to, m);
            return TR_ENOPROC;
        }
        tr__mpsc_push(&a->mbox, &m->node);
    }
    /* a seq_cst load first: the common case (already scheduled) costs no write. 0 -> 1 only:
     * a parked actor (2) is woken by its timer, not by messages */
    uint32_t idle = TR_SCHED_IDLE;
    if (atomic_load_explicit(&a->sched, memory_order_seq_cst) == TR_SCHED_IDLE &&
        atomic_compare_exchange_strong_explicit(&a->sched, &idle, TR_SCHED_BUSY,
                                                memory_order_seq_cst, memory_order_seq_cst))
        tr__schedule(sys, w, a);
    return TR_OK;
}

int tr_send(tr_ctx *ctx, tr_pid to, tr_msg *m)
{
    if (m == NULL)
        return TR_EINVAL;
    if (ctx == NULL || m->type >= TR_MSG_SYSTEM) {
        if (ctx != NULL && m == ctx->cur)
            ctx->cur = NULL;
        tr_msg_free(m);
        return TR_EINVAL;
    }
    if (m == ctx->cur)
        ctx->cur = NULL; /* forwarding the message being received: it is no longer ours to free */
    m->sender = tr_self(ctx);
    m->flags &= ~(uint32_t)(TR_MF_REQUEST | TR_MF_REPLY);
    m->corr = 0;
    ctx->sent++;
    return tr__deliver(ctx->sys, ctx->w, to, m);
}

int tr_system_send(tr_system *sys, tr_pid to, tr_msg *m)
{
    if (m == NULL)
        return TR_EINVAL;
    if (sys == NULL || m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    tr_worker *w = tr__current_worker(sys);
    if (w == NULL && tr__ext_enter(sys) != TR_OK) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    m->sender = TR_PID_NONE;
    m->flags &= ~(uint32_t)(TR_MF_REQUEST | TR_MF_REPLY);
    m->corr = 0;
    int rc = tr__deliver(sys, w, to, m);
    if (w == NULL)
        tr__ext_leave(sys);
    return rc;
}

int tr_system_stop_actor(tr_system *sys, tr_pid pid)
{
    if (sys == NULL)
        return TR_EINVAL;
    if (tr__actor_lookup(sys, pid) == NULL)
        return TR_ENOPROC;
    tr_worker *w = tr__current_worker(sys);
    if (w == NULL && tr__ext_enter(sys) != TR_OK)
        return TR_ESTOPPED;
    int rc = tr__signal(sys, w, TR_PID_NONE, pid, TR_SIG_STOP, 0, NULL);
    if (w == NULL)
        tr__ext_leave(sys);
    return rc;
}

tr_actor *tr__ctx_actor(tr_ctx *ctx) { return ctx->self; }
tr_worker *tr__ctx_worker(tr_ctx *ctx) { return ctx->w; }
void tr__ctx_release_cur(tr_ctx *ctx, const tr_msg *m)
{
    if (ctx->cur == m)
        ctx->cur = NULL;
}

/* ---- running ------------------------------------------------------------------------------- */

/* The common end of an actor (ended, or refused by init): links and monitors are told, the
 * messages left queued are dropped (counted) and link or monitor requests among them answered. */
void tr__actor_finish(tr_actor *a, tr_worker *w, tr_pid pid, const tr_reason *reason)
{
    tr_system *sys = a->sys;
    if (a->ext != NULL && !atomic_load_explicit(&sys->ending_all, memory_order_relaxed))
        tr__links_notify(a, w, pid, reason);
    tr__ext_free(a);
    tr__pending_free(sys, a);
    /* OTP's choice: messages left in an ended actor's mailbox are dropped (counted in its
     * `dropped` and as dead letters). `sched` stays busy, so no sender schedules it again. */
    tr_msg *m;
    while ((m = tr__mbox_take_closed(a)) != NULL) {
        if (m->flags & TR_MF_SIGNAL) {
            tr__signal_bounce(sys, m, m->to == pid ? reason : NULL);
            continue;
        }
        atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
        tr__bcount(sys, NULL, tr__bidx(a), TR_BC_QDROPPED, 1); /* (rare: the system's row) */
        tr__dead_letter(sys, m->to, m);
    }
}

void tr__actor_end(tr_actor *a, tr_worker *w, const tr_reason *reason, uint64_t sent)
{
    tr_system *sys = a->sys;
    tr_pid pid = atomic_load_explicit(&a->pid, memory_order_relaxed);
    /* new sends now fail (ENOPROC); seq_cst: the Dekker pair with push_allowed */
    atomic_store_explicit(&a->pid, 0, memory_order_seq_cst);
    /* an idle or parked actor ended from outside (join, free) is taken, so a sender that looked
     * the pid up just before cannot schedule a header that goes back to the pool */
    atomic_store_explicit(&a->sched, TR_SCHED_BUSY, memory_order_seq_cst);
    if (a->beh->terminate != NULL) {
        tr_ctx ctx = {.sys = sys, .w = w, .self = a, .pid = pid};
        a->beh->terminate(&ctx, a->state, reason);
        free(ctx.fail_text);
        sent += ctx.sent;
    }
    if (a->state != a->inline_state)
        free(a->state);
    a->state = NULL;
    tr__actor_finish(a, w, pid, reason);
    /* everything pushed is popped now: the behaviour's queue holds none of it; the ending turn's
     * arrivals, pops and sends are counted here (tr__actor_run leaves them), with the end */
    tr__count_end(sys, w, a, sent,
                  reason->kind == TR_REASON_ERROR || reason->kind == TR_REASON_KILLED);
    tr__actor_release(a);
}

static void end_turn(tr_worker *w, tr_actor *a)
{
    if (tr__release_turn(a))
        tr__yield(w, a); /* a message arrived as we were leaving */
}


/* The stash: messages popped from the mailbox but held back by the rate limit, oldest first,
 * linked through their mailbox node. They still count as queued (popped is not bumped). */
static inline tr_msg *next_msg(tr_actor *a, bool mailbox_only)
{
    tr_actor_ext *x = a->ext;
    if (TR_UNLIKELY(x != NULL && x->stash != NULL) && !mailbox_only) {
        tr_msg *m = x->stash;
        x->stash = (tr_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
        if (x->stash == NULL)
            x->stash_tail = NULL;
        return m;
    }
    return (tr_msg *)tr__mpsc_pop(&a->mbox);
}

static void stash_front(tr_actor_ext *x, tr_msg *m)
{
    atomic_store_explicit(&m->node.next, x->stash != NULL ? &x->stash->node : NULL,
                          memory_order_relaxed);
    x->stash = m;
    if (x->stash_tail == NULL)
        x->stash_tail = m;
}

static void stash_back(tr_actor_ext *x, tr_msg *m)
{
    atomic_store_explicit(&m->node.next, NULL, memory_order_relaxed);
    if (x->stash_tail != NULL)
        atomic_store_explicit(&x->stash_tail->node.next, &m->node, memory_order_relaxed);
    else
        x->stash = m;
    x->stash_tail = m;
}

/* Parks a limited actor until its next token is due (or a signal arrives). */
static void park(tr_worker *w, tr_actor *a, uint64_t now, uint64_t wait_ns)
{
    tr_actor_ext *x = a->ext;
    if (x->park_ns == 0) {
        x->park_ns = now;
        x->waits++;
        tr__bcount(a->sys, w, tr__bidx(a), TR_BC_LIMIT_WAITS, 1);
    }
    tr__wake_at(a->sys, a, now + wait_ns); /* also sets sched to parked (see timer.c) */
    /* Dekker pair with signal senders (push, set SIGNALED, then look for PARKED) */
    if (atomic_load_explicit(&a->flags, memory_order_seq_cst) & (TR_AF_SIGNALED | TR_AF_KILL)) {
        uint32_t parked = TR_SCHED_PARKED;
        if (atomic_compare_exchange_strong(&a->sched, &parked, TR_SCHED_BUSY))
            tr__yield(w, a);
    }
}

enum { TAKE_DELIVER, TAKE_SKIP, TAKE_STOP, TAKE_HOLD };

/* True when every message must go through take_slow: a rate limit, or drop_oldest trimming. */
static inline bool needs_slow_path(tr_actor *a)
{
    return (a->ext != NULL && a->ext->limited) ||
           atomic_load_explicit(&a->overflow, memory_order_relaxed) == TR_OVERFLOW_DROP_OLDEST;
}

/* Everything but a plain message to an actor without limits: signals, replies and timeouts,
 * DOWN and EXIT, drop_oldest trimming, the rate limit. Decides what becomes of *mp. */
static int take_slow(tr_ctx *ctx, tr_actor *a, tr_msg **mp, bool holding, uint64_t *wait_ns,
                     uint64_t *now_out)
{
    tr_msg *m = *mp;
    if (atomic_load_explicit(&a->overflow, memory_order_relaxed) == TR_OVERFLOW_DROP_OLDEST &&
        !(m->flags & (TR_MF_SIGNAL | TR_MF_SYSTEM))) {
        uint32_t cap = atomic_load_explicit(&a->capacity, memory_order_relaxed);
        if (cap != 0 && queue_depth(a) > cap) {
            tr__count_popped(a);
            atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
            tr__bcount(ctx->sys, ctx->w, tr__bidx(a), TR_BC_QDROPPED, 1);
            tr_msg_free(m);
            return TAKE_SKIP;
        }
    }
    if (m->flags & TR_MF_SIGNAL) {
        tr__count_popped(a);
        tr_msg *d = tr__signal_handle(ctx, m);
        if (ctx->ending) {
            tr_msg_free(d);
            return TAKE_STOP;
        }
        if (d == NULL)
            return TAKE_SKIP;
        *mp = d;
        return TAKE_DELIVER;
    }
    if ((m->flags & TR_MF_REPLY) || m->type == TR_MSG_TIMEOUT) {
        tr__count_popped(a);
        return tr__pending_filter(a, m) ? TAKE_DELIVER : TAKE_SKIP;
    }
    if (m->flags & TR_MF_SYSTEM) {
        tr__count_popped(a);
        if (m->type == TR_MSG_DOWN && !tr__down_filter(a, m))
            return TAKE_SKIP;
        return TAKE_DELIVER;
    }
    tr_actor_ext *x = a->ext;
    if (holding) {
        stash_back(x, m); /* behind the ones held back: order is kept */
        return TAKE_SKIP;
    }
    if (x != NULL && x->limited) {
        uint64_t now = tr__now_ns();
        uint64_t wait = tr_limiter_take(x->lim, now);
        if (wait != 0) {
            stash_front(x, m);
            *wait_ns = wait;
            *now_out = now;
            return TAKE_HOLD;
        }
        tr__bcount(ctx->sys, ctx->w, tr__bidx(a), TR_BC_LIMIT_TOKENS, 1);
    }
    tr__count_popped(a);
    return TAKE_DELIVER;
}

TR_NO_CANARY void tr__actor_run(tr_worker *w, tr_actor *a)
{
    tr_system *sys = a->sys;
    tr_pid self = atomic_load_explicit(&a->pid, memory_order_relaxed);
    tr_ctx ctx = {.sys = sys, .w = w, .self = a, .pid = self};
    unsigned budget = sys->opts.msgs_per_turn;
    if (w != NULL && !w->guest && atomic_load_explicit(&a->home, memory_order_relaxed) != w->id + 1)
        atomic_store_explicit(&a->home, w->id + 1, memory_order_relaxed);
    bool signaled = false;
    uint32_t fl = atomic_load_explicit(&a->flags, memory_order_relaxed);
    if (TR_UNLIKELY(fl & (TR_AF_SIGNALED | TR_AF_KILL))) {
        atomic_fetch_and(&a->flags, ~(uint32_t)(TR_AF_SIGNALED | TR_AF_KILL));
        signaled = true;
        if ((fl & TR_AF_KILL) && tr__kill_queued(a, self)) {
            static const tr_reason killed = {.kind = TR_REASON_KILLED};
            tr__actor_end(a, w, &killed, 0);
            return;
        }
    }
    /* the high-water mark of the queue, sampled as each turn starts (and by bounded sends) */
    uint64_t depth = queue_depth(a);
    if (TR_UNLIKELY(depth > atomic_load_explicit(&a->depth_max, memory_order_relaxed)))
        raise_depth_max(a, depth);
    tr_actor_ext *x = a->ext;
    if (TR_UNLIKELY(x != NULL && x->park_ns != 0)) {
        uint64_t waited = tr__now_ns() - x->park_ns;
        atomic_fetch_add_explicit(&a->token_wait_ns, waited, memory_order_relaxed);
        tr__bcount(sys, w, tr__bidx(a), TR_BC_LIMIT_WAIT_NS, waited);
        x->park_ns = 0;
    }
    bool slow = needs_slow_path(a);
    bool holding = false;
    uint64_t wait_ns = 0, now = 0;
    unsigned n = 0;
again:
    while (n < budget) {
        tr_msg *m = next_msg(a, holding);
        if (m == NULL)
            break;
        n++;
        if (TR_UNLIKELY(m->to != self)) {
            tr__count_popped(a); /* sent to an earlier incarnation of this header */
            atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
            tr__bcount(sys, w, tr__bidx(a), TR_BC_QDROPPED, 1);
            tr__dead_letter(sys, m->to, m);
            continue;
        }
        /* the high-water mark of an unbounded mailbox (bounded ones are exact: their senders
         * raise it) is sampled every TR_DEPTH_SAMPLE messages: reading `pushed` costs a cache
         * miss while senders write it, too much for every message */
        if (TR_UNLIKELY((atomic_load_explicit(&a->popped, memory_order_relaxed) &
                         (TR_DEPTH_SAMPLE - 1)) == 0)) {
            uint64_t d = queue_depth(a); /* the message in hand is not counted out yet */
            if (d > atomic_load_explicit(&a->depth_max, memory_order_relaxed))
                raise_depth_max(a, d);
        }
        if (TR_UNLIKELY(slow || holding ||
                        (m->flags & (TR_MF_SIGNAL | TR_MF_REPLY | TR_MF_SYSTEM)))) {
            int r = take_slow(&ctx, a, &m, holding, &wait_ns, &now);
            /* a signal may have changed the limit or the policy: applies to the next message */
            slow = needs_slow_path(a);
            if (r == TAKE_STOP)
                break;
            if (r == TAKE_SKIP)
                continue;
            if (r == TAKE_HOLD) {
                holding = true;
                if (!signaled)
                    break; /* park now; else first look for signals behind the held messages */
                continue;
            }
        } else {
            tr__count_popped(a);
        }
        ctx.cur = m;
        int rc = a->beh->receive(&ctx, a->state, m);
        if (ctx.cur != NULL)
            tr_msg_free(ctx.cur);
        ctx.cur = NULL;
        if (TR_UNLIKELY(rc != 0) && !ctx.ending)
            tr_fail(&ctx, rc, NULL);
        if (ctx.ending)
            break;
    }
    if (a->beh->turn_end != NULL && !ctx.ending && n > 0)
        a->beh->turn_end(&ctx, a->state);
    if (TR_UNLIKELY(ctx.ending)) {
        tr__actor_end(a, w, &ctx.reason, ctx.sent); /* which counts the turn, as it ends */
        free(ctx.fail_text);
        return;
    }
    /* the turn's arrivals, pops and sends go to its behaviour's counters once, at its end */
    tr__bcount_turn(ctx.w, a, ctx.sent); /* (ctx.w, not w: read where it is, not kept) */
    if (TR_UNLIKELY(holding)) {
        if (!a->ext->limited || (signaled && n >= budget && tr__mpsc_nonempty(&a->mbox))) {
            /* the limit was lifted (the held messages go first, next turn), or still looking
             * for signals behind a long queue */
            atomic_fetch_or(&a->flags, TR_AF_SIGNALED);
            tr__yield(w, a);
        } else {
            /* a token bucket saves tokens while parked: wake up for a few at a time (up to
             * TR_PARK_QUANTUM_NS worth, within its burst), so a busy limited actor costs a few
             * hundred wake-ups a second, not one per message */
            const tr_limiter *l = a->ext->lim;
            if (l->kind == TR_LIMIT_TOKEN && wait_ns < TR_PARK_QUANTUM_NS) {
                uint64_t fill_ns = (l->burst - 1) * 1000000000u / l->rate;
                uint64_t q = fill_ns < TR_PARK_QUANTUM_NS ? fill_ns : TR_PARK_QUANTUM_NS;
                if (q > wait_ns)
                    wait_ns = q;
            }
            park(w, a, now, wait_ns);
        }
        return;
    }
    if (n == budget) {
        /* fairness is owed to actors waiting here; with none, yielding would only let an idle
         * worker steal this actor and move its working set to another core for nothing (a
         * guest always yields: its budget must bound the time it keeps its thread) */
        if (w != NULL && !w->guest && tr__worker_idle_otherwise(w) && !atomic_load(&sys->halt) &&
            !(atomic_load_explicit(&a->flags, memory_order_relaxed) & TR_AF_KILL)) {
            n = 0;
            ctx.sent = 0; /* counted above */
            goto again;
        }
        tr__yield(w, a);
    } else {
        end_turn(w, a);
    }
}

/* ---- mailbox options and counters ----------------------------------------------------------- */

int tr_mailbox_set(tr_system *sys, tr_pid pid, const tr_mailbox_opts *opts)
{
    if (sys == NULL || opts == NULL)
        return TR_EINVAL;
    tr_mailbox_opts mo;
    int rc = mailbox_opts_norm(opts, &mo);
    if (rc != TR_OK)
        return rc;
    tr_actor *a = tr__actor_lookup(sys, pid);
    if (a == NULL)
        return TR_ENOPROC;
    tr_worker *w = tr__current_worker(sys);
    if (w == NULL && tr__ext_enter(sys) != TR_OK)
        return TR_ESTOPPED;
    atomic_store_explicit(&a->overflow, (uint32_t)mo.overflow, memory_order_relaxed);
    atomic_store_explicit(&a->capacity, mo.capacity, memory_order_relaxed);
    /* the limiter belongs to the actor's runner: it changes it when it reads this signal */
    tr_msg *m = tr_msg_new(TR_SIG_LIMIT, 16);
    if (m == NULL) {
        rc = TR_ENOMEM;
    } else {
        msgpack_packer *pk = tr_msg_packer(m);
        msgpack_pack_uint32(pk, (uint32_t)mo.limit);
        msgpack_pack_uint32(pk, mo.rate);
        msgpack_pack_uint32(pk, mo.burst);
        m->flags = TR_MF_SIGNAL;
        m->sender = TR_PID_NONE;
        rc = tr__deliver(sys, w, pid, m);
    }
    if (w == NULL)
        tr__ext_leave(sys);
    return rc;
}

int tr_actor_stats_get(tr_system *sys, tr_pid pid, tr_actor_stats *out)
{
    if (sys == NULL || out == NULL)
        return TR_EINVAL;
    tr_actor *a = tr__actor_lookup(sys, pid);
    if (a == NULL)
        return TR_ENOPROC;
    /* each counter is loaded once and everything is derived from those loads, so the identity
     * received = processed + dropped + rejected + depth holds for every read */
    uint64_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
    uint64_t popped = atomic_load_explicit(&a->popped, memory_order_relaxed);
    uint64_t pushed = atomic_load_explicit(&a->pushed, memory_order_relaxed);
    uint64_t sdrop = atomic_load_explicit(&a->send_dropped, memory_order_relaxed);
    uint64_t drop = atomic_load_explicit(&a->dropped, memory_order_relaxed);
    uint64_t rej = atomic_load_explicit(&a->rejected, memory_order_relaxed);
    out->depth = (int64_t)(pushed - popped) > 0 ? pushed - popped : 0;
    raise_depth_max(a, out->depth); /* a reader saw it: the mark must not fall below */
    out->received = (pushed - base) + sdrop + rej;
    out->processed = popped - base >= drop ? popped - base - drop : 0;
    out->dropped = drop + sdrop;
    out->rejected = rej;
    out->depth_max = atomic_load_explicit(&a->depth_max, memory_order_relaxed);
    if (out->depth_max < out->depth)
        out->depth_max = out->depth;
    out->restarts = atomic_load_explicit(&a->restarts, memory_order_relaxed);
    out->token_wait_ns = atomic_load_explicit(&a->token_wait_ns, memory_order_relaxed);
    if (atomic_load_explicit(&a->pid, memory_order_acquire) != pid)
        return TR_ENOPROC; /* it ended while we read: the figures may be of its successor */
    return TR_OK;
}
