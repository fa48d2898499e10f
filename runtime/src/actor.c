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
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define WORKER_CACHE_MAX (4u * TR_ACTOR_BATCH)

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
    return a;
}

void tr__actor_release(tr_actor *a)
{
    tr_system *sys = a->sys;
    /* messages that raced with the end of the actor; a push still half done is found (and
     * dropped) by the next incarnation, which checks msg->to */
    tr_msg *m;
    while ((m = (tr_msg *)tr__mpsc_pop(&a->mbox)) != NULL)
        tr__dead_letter(sys, m->to, m);
    tr_worker *w = tr__current_worker(sys);
    if (w != NULL) {
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

struct tr_ctx {
    tr_system *sys;
    tr_worker *w;
    tr_actor *self;
    tr_pid pid;             /* self's pid: stays valid in terminate, after a->pid is cleared */
    tr_msg *cur;            /* the message being received, until sent on */
    bool ending;
    tr_reason reason;
    char *fail_text;
};

/* Gives up the right to run `a` (sched 1 -> 0) unless messages wait. Returns true when the
 * caller still (or again) holds that right and must make the actor runnable.
 * Once sched is 0 a sender may schedule the actor and another worker may be popping its
 * mailbox, so after the store we must not read consumer state (head): we compare the tail,
 * which senders exchange, with its value before the store. The tail of an empty queue is its
 * stub, which no push installs, so an unchanged tail means no push (no ABA). */
static bool release_turn(tr_actor *a)
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

static int spawn(tr_system *sys, tr_worker *w, const tr_behaviour *b, const void *arg, tr_pid *out)
{
    if (b == NULL || b->receive == NULL)
        return TR_EINVAL;
    int st = atomic_load_explicit(&sys->state, memory_order_acquire);
    if (st == TR_SYS_STOPPING || st == TR_SYS_JOINED)
        return TR_ESTOPPED;
    tr_actor *a = tr__actor_alloc(sys);
    if (a == NULL)
        return TR_ENOMEM;
    a->beh = b;
    if (b->state_size <= TR_STATE_INLINE) {
        a->state = a->inline_state;
        memset(a->inline_state, 0, sizeof a->inline_state);
    } else if ((a->state = calloc(1, b->state_size)) == NULL) {
        tr__actor_release(a);
        return TR_ENOMEM;
    }
    tr_pid pid = ((tr_pid)sys->opts.node_id << 48) | ((tr_pid)a->gen << TR_SLOT_BITS) | a->slot;
    atomic_store_explicit(&a->sched, 1, memory_order_relaxed); /* not runnable during init */
    atomic_store_explicit(&a->pid, pid, memory_order_release);
    TR_COUNT(sys, w, spawned);
    if (b->init != NULL) {
        tr_ctx ctx = {.sys = sys, .w = w, .self = a, .pid = pid};
        int rc = b->init(&ctx, a->state, arg);
        if (rc != 0 || ctx.ending) {
            /* init refused: the actor never existed for anyone else; terminate does not run.
             * The error is init's return, else tr_fail's code, else TR_ENOPROC (tr_stop). */
            if (rc == 0)
                rc = ctx.reason.kind == TR_REASON_ERROR && ctx.reason.code != 0 ? ctx.reason.code
                                                                                : TR_ENOPROC;
            atomic_store_explicit(&a->pid, 0, memory_order_release);
            free(ctx.fail_text);
            if (a->state != a->inline_state)
                free(a->state);
            a->state = NULL;
            tr__pending_free(sys, a);
            TR_COUNT(sys, w, ended);
            tr__actor_release(a);
            return rc;
        }
    }
    if (out != NULL)
        *out = pid;
    /* open for scheduling; messages sent during init are picked up now */
    if (release_turn(a))
        tr__schedule(sys, w, a);
    return TR_OK;
}

int tr_system_spawn(tr_system *sys, const tr_behaviour *b, const void *arg, tr_pid *out)
{
    if (sys == NULL)
        return TR_EINVAL;
    tr_worker *w = tr__current_worker(sys);
    if (w != NULL)
        return spawn(sys, w, b, arg, out);
    int rc = tr__ext_enter(sys);
    if (rc != TR_OK)
        return rc;
    rc = spawn(sys, NULL, b, arg, out);
    tr__ext_leave(sys);
    return rc;
}

int tr_spawn(tr_ctx *ctx, const tr_behaviour *b, const void *arg, tr_pid *out)
{
    if (ctx == NULL)
        return TR_EINVAL;
    return spawn(ctx->sys, ctx->w, b, arg, out);
}

tr_pid tr_self(const tr_ctx *ctx)
{
    return ctx->pid;
}

tr_system *tr_ctx_system(const tr_ctx *ctx)
{
    return ctx->sys;
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
        tr_msg_free(m); /* a runtime signal is a control request, not a letter */
        return;
    }
    atomic_fetch_add_explicit(&sys->dead_letters, 1, memory_order_relaxed);
    if (sys->opts.dead_letter_hook != NULL)
        sys->opts.dead_letter_hook(sys->opts.dead_letter_user, to, m);
    tr_msg_free(m);
}

int tr__deliver(tr_system *sys, tr_worker *w, tr_pid to, tr_msg *m)
{
    tr_actor *a = tr__actor_lookup(sys, to);
    if (TR_UNLIKELY(a == NULL)) {
        tr__dead_letter(sys, to, m);
        return TR_ENOPROC;
    }
    m->to = to;
    tr__mpsc_push(&a->mbox, &m->node);
    /* a seq_cst load first: the common case (already scheduled) costs no write */
    if (atomic_load_explicit(&a->sched, memory_order_seq_cst) == 0 &&
        atomic_exchange_explicit(&a->sched, 1, memory_order_seq_cst) == 0)
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
    tr_msg *m = tr_msg_new(TR_SIG_STOP, 0);
    int rc = TR_ENOMEM;
    if (m != NULL) {
        m->flags = TR_MF_SIGNAL;
        rc = tr__deliver(sys, w, pid, m);
    }
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

void tr__actor_end(tr_actor *a, tr_worker *w, const tr_reason *reason)
{
    tr_system *sys = a->sys;
    tr_pid pid = atomic_load_explicit(&a->pid, memory_order_relaxed);
    atomic_store_explicit(&a->pid, 0, memory_order_release); /* new sends now fail: ENOPROC */
    /* an idle actor ended from outside (join, free) has sched 0: take it, so a sender that
     * looked the pid up just before cannot schedule a header that goes back to the pool */
    atomic_store_explicit(&a->sched, 1, memory_order_seq_cst);
    if (a->beh->terminate != NULL) {
        tr_ctx ctx = {.sys = sys, .w = w, .self = a, .pid = pid};
        a->beh->terminate(&ctx, a->state, reason);
        free(ctx.fail_text);
    }
    if (a->state != a->inline_state)
        free(a->state);
    a->state = NULL;
    tr__pending_free(sys, a);
    /* OTP's choice: messages left in an ended actor's mailbox are dropped (counted as dead
     * letters, by tr__actor_release). `sched` stays 1, so no sender schedules it again. */
    TR_COUNT(sys, w, ended);
    tr__actor_release(a);
}

static void end_turn(tr_worker *w, tr_actor *a)
{
    if (release_turn(a))
        tr__yield(w, a); /* a message arrived as we were leaving */
}

void tr__actor_run(tr_worker *w, tr_actor *a)
{
    tr_system *sys = a->sys;
    tr_pid self = atomic_load_explicit(&a->pid, memory_order_relaxed);
    tr_ctx ctx = {.sys = sys, .w = w, .self = a, .pid = self};
    unsigned budget = sys->opts.msgs_per_turn;
    if (w != NULL && atomic_load_explicit(&a->home, memory_order_relaxed) != w->id + 1)
        atomic_store_explicit(&a->home, w->id + 1, memory_order_relaxed);
    unsigned n = 0;
again:
    while (n < budget) {
        tr_msg *m = (tr_msg *)tr__mpsc_pop(&a->mbox);
        if (m == NULL)
            break;
        n++;
        if (TR_UNLIKELY(m->to != self)) {
            tr__dead_letter(sys, m->to, m); /* sent to an earlier incarnation of this header */
            continue;
        }
        if (TR_UNLIKELY(m->flags & (TR_MF_SIGNAL | TR_MF_REPLY)) || m->type == TR_MSG_TIMEOUT) {
            if (m->flags & TR_MF_SIGNAL) {
                tr_msg_free(m);
                if (!ctx.ending) {
                    ctx.ending = true;
                    ctx.reason = (tr_reason){.kind = TR_REASON_SHUTDOWN};
                }
                break;
            }
            if (!tr__pending_filter(a, m))
                continue;
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
    if (TR_UNLIKELY(ctx.ending)) {
        tr__actor_end(a, w, &ctx.reason);
        free(ctx.fail_text);
        return;
    }
    if (n == budget) {
        /* fairness is owed to actors waiting here; with none, yielding would only let an idle
         * worker steal this actor and move its working set to another core for nothing */
        if (w != NULL && tr__worker_idle_otherwise(w) && !atomic_load(&sys->halt)) {
            n = 0;
            goto again;
        }
        tr__yield(w, a);
    } else {
        end_turn(w, a);
    }
}
