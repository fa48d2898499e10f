/*
 * request.c — request/reply: correlation ids, timeouts as ordinary messages, and tr_system_call, the
 * blocking variant for threads that are not actors.
 *
 * Each requesting actor keeps a map of its outstanding correlation ids (to the id of the timer
 * that will deliver TR_MSG_TIMEOUT). Whichever of the reply and the timeout arrives first removes
 * the entry and is delivered; the other is dropped (a late reply is counted). So the actor sees
 * exactly one of them, and no scheduler thread ever blocks waiting.
 *
 * tr_system_call borrows an actor header as a "waiter": it has a pid like any actor, but making it
 * runnable signals the calling thread's condition variable instead of queueing it on a worker.
 *
 * A request to another node's actor also notes its node (corr -> node) and registers the actor's
 * interest in that node once (link.c), so the node's loss reaches the actor as a NODEDOWN signal,
 * which turns each request still waiting there into a TR_MSG_NOPROC notice at once — as Erlang's
 * calls exit noconnection — instead of a TR_MSG_TIMEOUT at the end of its timeout.
 */
#include "idmap.h"

#include <stdlib.h>
#include <time.h>

#define WATCHED_MAX 8

struct tr_pending {
    tr_idmap map;      /* corr -> timer id (0 = no timeout) */
    uint64_t last_corr; /* correlation ids are unique per requester, which is all replies need */
    tr_idmap remote;   /* requests to other nodes' actors: corr -> node id + 1 */
    uint16_t watched[WATCHED_MAX]; /* nodes whose loss we are told of (interest registered) */
    unsigned nwatched;
};


bool tr__pending_filter(tr_actor *a, tr_msg *m)
{
    tr_system *sys = a->sys;
    uint64_t timer = 0;
    bool mine = a->pending != NULL && tr__idmap_del(&a->pending->map, m->corr, &timer);
    if (mine && a->pending->remote.len > 0)
        tr__idmap_del(&a->pending->remote, m->corr, NULL);
    if (!mine) {
        if (m->flags & TR_MF_REPLY)
            atomic_fetch_add_explicit(&sys->late_replies, 1, memory_order_relaxed);
        tr_msg_free(m);
        return false;
    }
    if ((m->flags & TR_MF_REPLY) && timer != 0)
        tr__timer_cancel_lazy(sys, timer); /* firing meanwhile is harmless: no longer pending */
    return true;
}

void tr__pending_free(tr_system *sys, tr_actor *a)
{
    if (a->pending == NULL)
        return;
    tr_idmap *map = &a->pending->map;
    for (size_t i = 0; i < map->cap; i++)
        if (map->keys[i] != 0 && map->vals[i] != 0)
            tr__timer_cancel_lazy(sys, map->vals[i]);
    tr__idmap_free(map);
    tr__idmap_free(&a->pending->remote);
    free(a->pending);
    a->pending = NULL;
}

void tr__pending_node_down(tr_system *sys, tr_worker *w, tr_actor *a, tr_pid self,
                           uint16_t node_id)
{
    tr_pending *p = a->pending;
    if (p == NULL)
        return;
    for (unsigned i = 0; i < p->nwatched; i++)
        if (p->watched[i] == node_id) { /* the next request there registers again */
            p->watched[i] = p->watched[--p->nwatched];
            break;
        }
    tr_idmap *map = &p->remote;
    for (size_t i = 0; i < map->cap; i++) {
        if (map->keys[i] == 0 || map->vals[i] != (uint64_t)node_id + 1)
            continue;
        tr_msg *n = tr_msg_new(TR_MSG_NOPROC_NOTICE, 0);
        if (n == NULL)
            continue; /* its timeout still comes */
        n->flags = TR_MF_REPLY | TR_MF_SYSTEM;
        n->corr = map->keys[i]; /* the filter takes it out of both maps when it arrives */
        tr__deliver(sys, w, self, n);
    }
}

int tr_request(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t *corr_out)
{
    if (m != NULL && m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    return tr__request(ctx, to, m, timeout_ms, corr_out);
}

int tr__request(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t *corr_out)
{
    if (m == NULL)
        return TR_EINVAL;
    if (ctx == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    tr_actor *a = tr__ctx_actor(ctx);
    tr_system *sys = a->sys;
    tr__ctx_release_cur(ctx, m);
    if (a->pending == NULL) {
        a->pending = calloc(1, sizeof *a->pending);
        if (a->pending == NULL) {
            tr_msg_free(m);
            return TR_ENOMEM;
        }
        tr__idmap_init(&a->pending->map);
        tr__idmap_init(&a->pending->remote);
    }
    uint64_t corr = ++a->pending->last_corr;
    tr_pid self = tr_self(ctx);
    tr_timer timer = 0;
    if (timeout_ms > 0) {
        tr_msg *t = tr_msg_new(TR_MSG_TIMEOUT, 0);
        if (t == NULL) {
            tr_msg_free(m);
            return TR_ENOMEM;
        }
        t->corr = corr;
        t->flags = TR_MF_SYSTEM; /* never refused by a bounded mailbox */
        int rc = tr__timer_add_lazy(sys, self, t, timeout_ms, &timer);
        if (rc != TR_OK) {
            tr_msg_free(m);
            return rc;
        }
    }
    if (tr__idmap_put(&a->pending->map, corr, timer) != TR_OK) {
        if (timer != 0)
            tr_system_cancel_timer(sys, timer);
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    uint16_t node = tr_pid_node(to);
    if (node != sys->opts.node_id && to != TR_PID_NONE) { /* told at once if its node goes */
        tr_pending *p = a->pending;
        bool known = false;
        for (unsigned i = 0; i < p->nwatched && !known; i++)
            known = p->watched[i] == node;
        if (!known && tr__link_note_remote(sys, a, self, to) == TR_OK && p->nwatched < WATCHED_MAX)
            p->watched[p->nwatched++] = node;
        tr__idmap_put(&p->remote, corr, (uint64_t)node + 1); /* no room: its timeout still comes */
    }
    m->sender = self;
    m->corr = corr;
    m->flags = TR_MF_REQUEST | (m->flags & TR_MF_SIGNAL); /* a request the runtime answers
                                                          * (TR_SIG_LIMIT_INFO) */
    if (corr_out != NULL)
        *corr_out = corr;
    ctx->sent++;
    int rc = tr__deliver(sys, tr__ctx_worker(ctx), to, m);
    if (rc != TR_OK) {
        tr__idmap_del(&a->pending->map, corr, NULL);
        tr__idmap_del(&a->pending->remote, corr, NULL);
        if (timer != 0)
            tr__timer_cancel_lazy(sys, timer);
    }
    return rc;
}

int tr_reply(tr_ctx *ctx, const tr_msg *request, tr_msg *reply)
{
    /* the return address is read first: reply may be the request itself */
    return tr_reply_from(ctx, tr_msg_from(request), reply);
}

tr_from tr_msg_from(const tr_msg *m)
{
    tr_from f = {0, 0};
    if (m != NULL && (m->flags & TR_MF_REQUEST) && m->sender != TR_PID_NONE) {
        f.pid = m->sender;
        f.corr = m->corr;
    }
    return f;
}

int tr_reply_from(tr_ctx *ctx, tr_from from, tr_msg *reply)
{
    if (reply == NULL)
        return TR_EINVAL;
    if (ctx == NULL || from.pid == TR_PID_NONE || from.corr == 0 || reply->type >= TR_MSG_SYSTEM) {
        tr_msg_free(reply);
        return TR_EINVAL;
    }
    tr__ctx_release_cur(ctx, reply);
    reply->sender = tr_self(ctx);
    reply->corr = from.corr;
    reply->flags = TR_MF_REPLY;
    ctx->sent++;
    return tr__deliver(tr__ctx_actor(ctx)->sys, tr__ctx_worker(ctx), from.pid, reply);
}

int tr_forward(tr_ctx *ctx, tr_pid to, tr_from from, tr_msg *m)
{
    if (m == NULL)
        return TR_EINVAL;
    if (ctx == NULL || from.pid == TR_PID_NONE || from.corr == 0 || m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    tr__ctx_release_cur(ctx, m);
    m->sender = from.pid;
    m->corr = from.corr;
    m->flags = TR_MF_REQUEST;
    ctx->sent++;
    return tr__deliver(tr__ctx_actor(ctx)->sys, tr__ctx_worker(ctx), to, m);
}

/* ---- tr_system_call ------------------------------------------------------------------------------- */

/* A sender that flips the waiter's sched 0 -> 1 wakes it, then sets `home` (unused by waiters)
 * to say it is done with the header. The futex word lives in the header, type-stable memory, so
 * a late sender never touches freed memory; and the waiter does not retire (letting the header
 * be reused by an actor, which that sender could otherwise queue a second time) while a sender
 * that flipped is still between its flip and its wake. */
void tr__waiter_signal(tr_actor *a)
{
    tr__futex_wake_all(&a->sched);
    atomic_store(&a->home, 1);
}

/* Waits until the sender that flipped sched has finished signalling. */
static void waiter_settle(tr_actor *a)
{
    while (atomic_load(&a->home) == 0)
        tr_cpu_relax();
}

/* Takes everything in the waiter's mailbox; keeps the reply with `corr`, drops the rest. */
static void waiter_drain(tr_system *sys, tr_actor *a, tr_pid self, uint64_t corr, tr_msg **reply)
{
    for (;;) {
        tr_msg *r = (tr_msg *)tr__mpsc_pop(&a->mbox);
        if (r != NULL)
            tr__count_popped(a);
        if (r == NULL) {
            if (!tr__mpsc_nonempty(&a->mbox))
                return;
            tr_cpu_relax(); /* a sender is between its two push steps */
            continue;
        }
        if (*reply == NULL && r->to == self && (r->flags & TR_MF_REPLY) && r->corr == corr)
            *reply = r;
        else
            tr__dead_letter(sys, self, r);
    }
}

/* A reply in hand is either the real one (rc stands) or the notice that the target ended with
 * the request unanswered: then it is dropped and the call fails with TR_ENOPROC. */
static int take_notice(tr_msg **reply, int rc)
{
    uint32_t t = tr_msg_type(*reply);
    if (t != TR_MSG_NOPROC_NOTICE && t != TR_MSG_REJECTED)
        return rc;
    tr_msg_free(*reply);
    *reply = NULL;
    return t == TR_MSG_REJECTED ? TR_EFULL : TR_ENOPROC; /* (a full mailbox on another node) */
}

int tr_system_call(tr_system *sys, tr_pid to, tr_msg *m, unsigned timeout_ms, tr_msg **reply_out)
{
    if (m != NULL && m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    return tr__call(sys, to, m, timeout_ms, reply_out);
}

int tr__call(tr_system *sys, tr_pid to, tr_msg *m, unsigned timeout_ms, tr_msg **reply_out)
{
    if (m == NULL)
        return TR_EINVAL;
    if (sys == NULL || reply_out == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    *reply_out = NULL;
    if (tr__current_worker(sys) != NULL) {
        tr_msg_free(m); /* would block a scheduler thread: actors use tr_request */
        return TR_ESTATE;
    }
    if (tr__ext_enter(sys) != TR_OK) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    tr_actor *a = tr__actor_alloc(sys);
    if (a == NULL) {
        tr__ext_leave(sys);
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    atomic_store_explicit(&a->flags, TR_AF_WAITER, memory_order_relaxed);
    __atomic_store_n(&a->beh, NULL, __ATOMIC_RELAXED); /* see spawn (actor.c) */
    atomic_store_explicit(&a->boff, TR_BEH_NONE, memory_order_relaxed); /* not an actor */
    a->state = NULL;
    tr_pid self = tr__pid_of(sys, a);
    atomic_store(&a->home, 0);
    atomic_store(&a->sched, 0);
    atomic_store_explicit(&a->pid, self, memory_order_release);

    const uint64_t corr = 1; /* the waiter is a fresh incarnation: it has only this request */
    m->sender = self;
    m->corr = corr;
    m->flags = TR_MF_REQUEST;
    int rc = tr__deliver(sys, NULL, to, m);
    tr__ext_leave(sys); /* only the send is bracketed: the wait may outlast a stop */
    uint64_t deadline = tr__now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (rc == TR_OK) {
        /* senders push, then flip sched 0 -> 1: after each re-arm, look at the mailbox first */
        waiter_drain(sys, a, self, corr, reply_out);
        if (*reply_out != NULL) {
            rc = take_notice(reply_out, TR_OK);
            break;
        }
        while (atomic_load(&a->sched) == 0) {
            uint64_t now = tr__now_ns();
            if (timeout_ms > 0 && now >= deadline) {
                rc = TR_ETIMEDOUT;
                break;
            }
            tr__futex_wait(&a->sched, 0, timeout_ms > 0 ? deadline - now : 0);
        }
        if (rc != TR_OK)
            break;
        waiter_settle(a); /* re-arm only once the flipping sender is done */
        atomic_store(&a->home, 0);
        atomic_store(&a->sched, 0);
    }
    if (rc == TR_ETIMEDOUT) {
        waiter_drain(sys, a, self, corr, reply_out); /* a reply that made it after all */
        if (*reply_out != NULL)
            rc = take_notice(reply_out, TR_OK);
    }
    /* retire: no sender can find the pid or flip sched any more; wait out one that did */
    atomic_store_explicit(&a->pid, 0, memory_order_seq_cst); /* see push_allowed (actor.c) */
    if (atomic_exchange(&a->sched, 1) == 1)
        waiter_settle(a);
    tr__acct_reset(a); /* a waiter's traffic is not the next actor's */
    tr__actor_release(a);
    return rc;
}
