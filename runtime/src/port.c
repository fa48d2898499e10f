/*
 * port.c — ports: requests from threads that are not actors, answered by callback (troupe.h).
 *
 * A port borrows an actor header, like a tr_call waiter: it has a pid, and replies, timeouts and
 * "target ended" notices reach its mailbox like any message. What differs is what making it
 * runnable does: the sender that flips its sched word 0 -> 1 runs the port right there
 * (tr__schedule -> tr__port_run), popping each message, finding its request by corr and calling
 * the callback, then setting sched back to 0 and looking once more (a message pushed in between
 * either sees sched 0 and runs the port itself, or is seen here). So an answer costs no thread
 * hand-off: an HTTP loop asking an order actor gets its callback on the thread that committed the
 * order, instead of a worker running a helper actor first (two thread crossings fewer per request).
 *
 * Requests in flight are kept in a small hash table by corr, behind a mutex (requesters and the
 * running thread both touch it). Timeouts are lazy timers (timer.c) delivering TR_MSG_TIMEOUT to
 * the port; a reply cancels its timer lazily, and a timeout that comes after its reply finds no
 * entry and is dropped.
 */
#include "internal.h"

#include <stdlib.h>

#define PORT_BUCKETS 4096u      /* a power of two */

typedef struct port_req {
    struct port_req *next;
    uint64_t corr, cookie;
    tr_timer timer;
} port_req;

struct tr_port {
    tr_system *sys;
    tr_actor *a;
    tr_pid pid;
    tr_port_fn fn;
    void *user;
    pthread_mutex_t lock;       /* the table and the corr counter */
    port_req *table[PORT_BUCKETS];
    size_t n;
    uint64_t last_corr;
};

int tr_port_open(tr_system *sys, tr_port_fn fn, void *user, tr_port **out)
{
    if (sys == NULL || fn == NULL || out == NULL)
        return TR_EINVAL;
    tr_port *p = calloc(1, sizeof *p);
    if (p == NULL)
        return TR_ENOMEM;
    if (tr__ext_enter(sys) != TR_OK) {
        free(p);
        return TR_ESTOPPED;
    }
    tr_actor *a = tr__actor_alloc(sys);
    if (a == NULL) {
        tr__ext_leave(sys);
        free(p);
        return TR_ENOMEM;
    }
    p->sys = sys;
    p->a = a;
    p->fn = fn;
    p->user = user;
    pthread_mutex_init(&p->lock, NULL);
    atomic_store_explicit(&a->flags, TR_AF_PORT, memory_order_relaxed);
    a->beh = NULL;
    a->state = p;
    p->pid = tr__pid_of(sys, a);
    atomic_store(&a->home, 0);
    atomic_store(&a->sched, TR_SCHED_IDLE);
    atomic_store_explicit(&a->pid, p->pid, memory_order_release);
    tr__ext_leave(sys);
    *out = p;
    return TR_OK;
}

/* Removes and returns the request with this corr (NULL: unknown, or answered already). */
static port_req *take(tr_port *p, uint64_t corr)
{
    pthread_mutex_lock(&p->lock);
    port_req **pp = &p->table[corr & (PORT_BUCKETS - 1)];
    while (*pp != NULL && (*pp)->corr != corr)
        pp = &(*pp)->next;
    port_req *r = *pp;
    if (r != NULL) {
        *pp = r->next;
        p->n--;
    }
    pthread_mutex_unlock(&p->lock);
    return r;
}

int tr_port_request(tr_port *p, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t cookie)
{
    if (m == NULL)
        return TR_EINVAL;
    if (p == NULL || m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    port_req *r = malloc(sizeof *r);
    if (r == NULL) {
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    if (tr__ext_enter(p->sys) != TR_OK) {
        free(r);
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    r->cookie = cookie;
    r->timer = 0;
    int rc = TR_OK;
    tr_msg *t = timeout_ms > 0 ? tr_msg_new(TR_MSG_TIMEOUT, 0) : NULL;
    if (timeout_ms > 0 && t == NULL)
        rc = TR_ENOMEM;
    /* the timer is armed under the lock: a timeout firing at once waits here for r->timer */
    pthread_mutex_lock(&p->lock);
    r->corr = ++p->last_corr;
    port_req **b = &p->table[r->corr & (PORT_BUCKETS - 1)];
    r->next = *b;
    *b = r;
    p->n++;
    uint64_t corr = r->corr;
    if (t != NULL) {
        t->corr = corr;
        t->flags = TR_MF_SYSTEM;
        rc = tr__timer_add_lazy(p->sys, p->pid, t, timeout_ms, &r->timer);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc == TR_OK) {
        m->sender = p->pid;
        m->corr = corr;
        m->flags = TR_MF_REQUEST;
        rc = tr__deliver(p->sys, tr__current_worker(p->sys), to, m);
        m = NULL;
    }
    if (rc != TR_OK) {
        port_req *mine = take(p, corr);
        if (mine != NULL) { /* refused at once: no callback */
            if (mine->timer != 0)
                tr__timer_cancel_lazy(p->sys, mine->timer);
            free(mine);
        } else {
            rc = TR_OK; /* a dead target: its notice already ran the callback (TR_ENOPROC) */
        }
        tr_msg_free(m);
    }
    tr__ext_leave(p->sys);
    return rc;
}

size_t tr_port_pending(tr_port *p)
{
    if (p == NULL)
        return 0;
    pthread_mutex_lock(&p->lock);
    size_t n = p->n;
    pthread_mutex_unlock(&p->lock);
    return n;
}

static void dispatch(tr_port *p, tr_msg *m)
{
    port_req *r = m->corr != 0 && m->to == p->pid ? take(p, m->corr) : NULL;
    if (r == NULL) { /* late (after its timeout), or not ours */
        if (m->flags & TR_MF_REPLY)
            atomic_fetch_add_explicit(&p->sys->late_replies, 1, memory_order_relaxed);
        tr_msg_free(m);
        return;
    }
    int rc = TR_OK;
    if (m->type == TR_MSG_TIMEOUT && !(m->flags & TR_MF_REPLY))
        rc = TR_ETIMEDOUT;
    else if (m->type == TR_MSG_NOPROC_NOTICE)
        rc = TR_ENOPROC;
    else if (m->type == TR_MSG_REJECTED)
        rc = TR_EFULL;
    if (rc != TR_ETIMEDOUT && r->timer != 0)
        tr__timer_cancel_lazy(p->sys, r->timer);
    p->fn(p->user, r->cookie, rc, rc == TR_OK ? m : NULL);
    free(r);
    tr_msg_free(m);
}

void tr__port_run(tr_actor *a)
{
    tr_port *p = a->state;
    for (;;) {
        tr_msg *m = (tr_msg *)tr__mpsc_pop(&a->mbox);
        if (m != NULL) {
            tr__count_popped(a);
            dispatch(p, m);
            continue;
        }
        /* empty (or a push half done): let go the way an actor's turn ends, reading only the
         * producers' side once another thread may have become the runner */
        if (!tr__release_turn(a))
            return;
        tr_cpu_relax();
    }
}

void tr_port_close(tr_port *p)
{
    if (p == NULL)
        return;
    atomic_store_explicit(&p->a->pid, 0, memory_order_release);
    for (tr_msg *m; (m = (tr_msg *)tr__mpsc_pop(&p->a->mbox)) != NULL;) {
        tr__count_popped(p->a);
        tr_msg_free(m);
    }
    p->a->state = NULL;
    tr__actor_release(p->a);
    for (size_t i = 0; i < PORT_BUCKETS; i++)
        while (p->table[i] != NULL) {
            port_req *r = p->table[i];
            p->table[i] = r->next;
            p->fn(p->user, r->cookie, TR_ESTOPPED, NULL);
            free(r);
        }
    pthread_mutex_destroy(&p->lock);
    free(p);
}
