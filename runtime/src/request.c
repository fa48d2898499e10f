/*
 * request.c — request/reply: correlation ids, timeouts as ordinary messages, and tr_call, the
 * blocking variant for threads that are not actors.
 *
 * Each requesting actor keeps a map of its outstanding correlation ids (to the id of the timer
 * that will deliver TR_MSG_TIMEOUT). Whichever of the reply and the timeout arrives first removes
 * the entry and is delivered; the other is dropped (a late reply is counted). So the actor sees
 * exactly one of them, and no scheduler thread ever blocks waiting.
 *
 * tr_call borrows an actor header as a "waiter": it has a pid like any actor, but making it
 * runnable signals the calling thread's condition variable instead of queueing it on a worker.
 */
#include "idmap.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct tr_pending {
    tr_idmap map; /* corr -> timer id (0 = no timeout) */
};

static uint64_t new_corr(tr_system *sys)
{
    return atomic_fetch_add_explicit(&sys->next_corr, 1, memory_order_relaxed) + 1;
}

bool tr__pending_filter(tr_actor *a, tr_msg *m)
{
    tr_system *sys = a->sys;
    uint64_t timer = 0;
    bool mine = a->pending != NULL && tr__idmap_del(&a->pending->map, m->corr, &timer);
    if (!mine) {
        if (m->flags & TR_MF_REPLY)
            atomic_fetch_add_explicit(&sys->late_replies, 1, memory_order_relaxed);
        tr_msg_free(m);
        return false;
    }
    if ((m->flags & TR_MF_REPLY) && timer != 0)
        tr_cancel_timer(sys, timer);
    return true;
}

void tr__pending_free(tr_system *sys, tr_actor *a)
{
    if (a->pending == NULL)
        return;
    tr_idmap *map = &a->pending->map;
    for (size_t i = 0; i < map->cap; i++)
        if (map->keys[i] != 0 && map->vals[i] != 0)
            tr_cancel_timer(sys, map->vals[i]);
    tr__idmap_free(map);
    free(a->pending);
    a->pending = NULL;
}

int tr_request(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t *corr_out)
{
    if (m == NULL)
        return TR_EINVAL;
    if (ctx == NULL || m->type >= TR_MSG_SYSTEM) {
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
    }
    uint64_t corr = new_corr(sys);
    tr_pid self = tr_self(ctx);
    tr_timer timer = 0;
    if (timeout_ms > 0) {
        tr_msg *t = tr_msg_new(TR_MSG_TIMEOUT, 0);
        if (t == NULL) {
            tr_msg_free(m);
            return TR_ENOMEM;
        }
        t->corr = corr;
        int rc = tr__timer_add(sys, self, t, timeout_ms, false, &timer);
        if (rc != TR_OK) {
            tr_msg_free(m);
            return rc;
        }
    }
    if (tr__idmap_put(&a->pending->map, corr, timer) != TR_OK) {
        if (timer != 0)
            tr_cancel_timer(sys, timer);
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    m->sender = self;
    m->corr = corr;
    m->flags = TR_MF_REQUEST;
    if (corr_out != NULL)
        *corr_out = corr;
    int rc = tr__deliver(sys, tr__ctx_worker(ctx), to, m);
    if (rc != TR_OK) {
        tr__idmap_del(&a->pending->map, corr, NULL);
        if (timer != 0)
            tr_cancel_timer(sys, timer);
    }
    return rc;
}

int tr_reply(tr_ctx *ctx, const tr_msg *request, tr_msg *reply)
{
    if (reply == NULL)
        return TR_EINVAL;
    if (ctx == NULL || request == NULL || !(request->flags & TR_MF_REQUEST) ||
        request->sender == TR_PID_NONE || reply->type >= TR_MSG_SYSTEM) {
        tr_msg_free(reply);
        return TR_EINVAL;
    }
    tr__ctx_release_cur(ctx, reply);
    reply->sender = tr_self(ctx);
    reply->corr = request->corr;
    reply->flags = TR_MF_REPLY;
    return tr__deliver(tr__ctx_actor(ctx)->sys, tr__ctx_worker(ctx), request->sender, reply);
}

/* ---- tr_call ------------------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool signalled;
} waiter;

void tr__waiter_signal(tr_actor *a)
{
    waiter *wt = a->state;
    pthread_mutex_lock(&wt->lock);
    wt->signalled = true;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
}

int tr_call(tr_system *sys, tr_pid to, tr_msg *m, unsigned timeout_ms, tr_msg **reply_out)
{
    if (m == NULL)
        return TR_EINVAL;
    if (sys == NULL || reply_out == NULL || m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    *reply_out = NULL;
    if (tr__current_worker(sys) != NULL) {
        tr_msg_free(m); /* would block a scheduler thread: actors use tr_request */
        return TR_ESTATE;
    }
    int st = atomic_load(&sys->state);
    if (st == TR_SYS_STOPPING || st == TR_SYS_JOINED) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    tr_actor *a = tr__actor_alloc(sys);
    if (a == NULL) {
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    waiter wt = {.signalled = false};
    pthread_mutex_init(&wt.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wt.cond, &ca);
    pthread_condattr_destroy(&ca);
    a->flags = TR_AF_WAITER;
    a->state = &wt;
    a->beh = NULL;
    tr_pid self = ((tr_pid)sys->opts.node_id << 48) | ((tr_pid)a->gen << TR_SLOT_BITS) | a->slot;
    atomic_store(&a->sched, 0);
    atomic_store_explicit(&a->pid, self, memory_order_release);

    uint64_t corr = new_corr(sys);
    m->sender = self;
    m->corr = corr;
    m->flags = TR_MF_REQUEST;
    int rc = tr__deliver(sys, NULL, to, m);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (rc == TR_OK || rc == TR_ETIMEDOUT) {
        /* take what arrived; anything but our reply is a stray message and is dropped */
        for (;;) {
            tr_msg *r = (tr_msg *)tr__mpsc_pop(&a->mbox);
            if (r == NULL) {
                if (!tr__mpsc_nonempty(&a->mbox))
                    break;
                tr_cpu_relax(); /* a sender is between its two push steps */
                continue;
            }
            if (*reply_out == NULL && (r->flags & TR_MF_REPLY) && r->corr == corr)
                *reply_out = r;
            else
                tr__dead_letter(sys, self, r);
        }
        if (*reply_out != NULL) {
            rc = TR_OK;
            break;
        }
        if (rc != TR_OK)
            break;
        /* re-arm: the next sender to flip sched 0 -> 1 signals us */
        pthread_mutex_lock(&wt.lock);
        wt.signalled = false;
        pthread_mutex_unlock(&wt.lock);
        if (atomic_exchange(&a->sched, 0) == 1)
            atomic_fetch_sub(&sys->active, 1);
        if (tr__mpsc_nonempty(&a->mbox)) {
            if (atomic_exchange(&a->sched, 1) == 0)
                atomic_fetch_add(&sys->active, 1);
            continue;
        }
        pthread_mutex_lock(&wt.lock);
        while (!wt.signalled && rc == TR_OK) {
            if (timeout_ms == 0)
                pthread_cond_wait(&wt.cond, &wt.lock);
            else if (pthread_cond_timedwait(&wt.cond, &wt.lock, &deadline) == ETIMEDOUT)
                rc = TR_ETIMEDOUT;
        }
        pthread_mutex_unlock(&wt.lock);
    }

    /* retire the waiter: no new sender can find it, then wait out those already in tr_send */
    atomic_store_explicit(&a->pid, 0, memory_order_release);
    if (atomic_exchange(&a->sched, 1) == 1)
        atomic_fetch_sub(&sys->active, 1);
    while (atomic_load(&a->refs) > 1)
        tr_cpu_relax();
    a->state = NULL;
    a->flags = 0;
    tr__actor_unref(a); /* late replies left in the mailbox become dead letters */
    pthread_cond_destroy(&wt.cond);
    pthread_mutex_destroy(&wt.lock);
    return rc;
}
