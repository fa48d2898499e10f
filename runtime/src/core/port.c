/*
 * port.c — ports: requests from threads that are not actors, answered by callback (troupe.h).
 *
 * A port borrows an actor header, like a tr_system_call waiter: it has a pid, and replies, timeouts and
 * "target ended" notices reach its mailbox like any message. What differs is what making it
 * runnable does: the sender that flips its sched word 0 -> 1 runs the port right there
 * (tr__schedule -> tr__port_run), popping each message, finding its request by corr and calling
 * the callback, then setting sched back to 0 and looking once more (a message pushed in between
 * either sees sched 0 and runs the port itself, or is seen here). So an answer costs no thread
 * hand-off: an HTTP loop asking an order actor gets its callback on the thread that committed the
 * order, instead of a worker running a helper actor first (two thread crossings fewer per request).
 *
 * Requests in flight are kept in a small hash table by corr, behind a mutex (requesters and the
 * running thread both touch it). Timeouts cost no timer per request: requests with a deadline
 * are also on a list in deadline order (in arrival order when, as usual, every request has the
 * same timeout, so inserting is O(1)), and one timer per port, armed for the earliest deadline,
 * delivers a sweep (TR_MSG_TIMEOUT with corr 0) that expires what is due and arms the next. A
 * reply unlinks its request; nothing is cancelled. (A lazy timer per request cost the timer
 * thread an insert and a cancel, and three allocations, for every request.)
 *
 * A request to another node's actor registers the port's interest in that node (once per node
 * until it goes down: a bitmap by node id), so the node layer signals TR_SIG_NODEDOWN to the port
 * when the node is lost; the port then answers every request still waiting on that node with
 * TR_ENOCONN at once. Without it a caller whose peer was frozen or killed waited out its whole
 * timeout for a reply that could no longer come.
 */
#include "internal.h"

#include <stdlib.h>

#define PORT_BUCKETS 4096u      /* a power of two */
#define PORT_SPARES 1024u       /* answered requests' records kept for reuse, at most */

typedef struct port_req {
    struct port_req *next;              /* in its hash bucket */
    struct port_req *dprev, *dnext;     /* on the deadline list (deadline != 0) */
    uint64_t corr, cookie;
    uint64_t deadline;                  /* tr__now_ns() time; 0: never times out */
    uint16_t node;                      /* the target's node id */
} port_req;

struct tr_port {
    tr_system *sys;
    tr_actor *a;
    tr_pid pid;
    tr_port_fn fn;
    void *user;
    pthread_mutex_t lock;       /* the table and the corr counter */
    port_req *table[PORT_BUCKETS];
    _Atomic size_t n;           /* requests in flight (changed under the lock, read without) */
    uint64_t last_corr;
    port_req *dhead, *dtail;    /* requests with a deadline, earliest first */
    port_req *spare;            /* records of answered requests, for the next ones (a record
                                 * is taken on the requester's thread and given back on the
                                 * answerer's: reusing it here spares malloc a cross-thread free) */
    size_t nspare;
    uint64_t armed;             /* deadline the latest sweep timer was armed for; 0: none */
    uint64_t watched[65536 / 64]; /* node ids whose loss we are told of (tr__remote_interest) */
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
    atomic_store_explicit(&a->boff, TR_BEH_NONE, memory_order_relaxed); /* not an actor */
    p->sys = sys;
    p->a = a;
    p->fn = fn;
    p->user = user;
    pthread_mutex_init(&p->lock, NULL);
    atomic_store_explicit(&a->flags, TR_AF_PORT, memory_order_relaxed);
    __atomic_store_n(&a->beh, NULL, __ATOMIC_RELAXED); /* see spawn (actor.c) */
    a->state = p;
    p->pid = tr__pid_of(sys, a);
    atomic_store(&a->home, 0);
    atomic_store(&a->sched, TR_SCHED_IDLE);
    atomic_store_explicit(&a->pid, p->pid, memory_order_release);
    tr__ext_leave(sys);
    *out = p;
    return TR_OK;
}

static void deadline_unlink(tr_port *p, port_req *r)
{
    if (r->deadline == 0)
        return;
    if (r->dprev != NULL)
        r->dprev->dnext = r->dnext;
    else
        p->dhead = r->dnext;
    if (r->dnext != NULL)
        r->dnext->dprev = r->dprev;
    else
        p->dtail = r->dprev;
}

/* Removes r from the table (under the lock); r->next is reused by the caller. */
static void unlink_locked(tr_port *p, port_req *r)
{
    port_req **pp = &p->table[r->corr & (PORT_BUCKETS - 1)];
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    deadline_unlink(p, r);
    atomic_store_explicit(&p->n, p->n - 1, memory_order_relaxed);
}

/* Removes the request with this corr, giving its cookie (false: unknown, or answered already);
 * its record is kept for reuse. */
static bool take(tr_port *p, uint64_t corr, uint64_t *cookie)
{
    pthread_mutex_lock(&p->lock);
    port_req *r = p->table[corr & (PORT_BUCKETS - 1)];
    while (r != NULL && r->corr != corr)
        r = r->next;
    bool found = r != NULL;
    if (found) {
        unlink_locked(p, r);
        *cookie = r->cookie;
        if (p->nspare < PORT_SPARES) {
            r->next = p->spare;
            p->spare = r;
            p->nspare++;
            r = NULL;
        }
    }
    pthread_mutex_unlock(&p->lock);
    free(r);
    return found;
}

/* Arms the sweep for `deadline` (under the lock). A sweep timer that fires early or twice only
 * costs a look at the list's head. */
static int arm_sweep(tr_port *p, uint64_t deadline, uint64_t now)
{
    tr_msg *t = tr_msg_new(TR_MSG_TIMEOUT, 0);
    if (t == NULL)
        return TR_ENOMEM;
    t->corr = 0;
    t->flags = TR_MF_SYSTEM;
    uint64_t ms = deadline > now ? (deadline - now + 999999u) / 1000000u : 0;
    int rc = tr__timer_add_lazy(p->sys, p->pid, t, (unsigned)(ms < UINT32_MAX ? ms : UINT32_MAX),
                                NULL);
    if (rc == TR_OK)
        p->armed = deadline;
    return rc;
}

int tr_port_request(tr_port *p, tr_pid to, tr_msg *m, unsigned timeout_ms, uint64_t cookie)
{
    if (m == NULL)
        return TR_EINVAL;
    if (p == NULL || m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    /* a worker or a guest is inside the system's lifetime already: no need to bracket */
    tr_worker *w = tr__current_worker(p->sys);
    if (w == NULL && tr__ext_enter(p->sys) != TR_OK) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    uint64_t now = timeout_ms > 0 ? tr__now_ns() : 0;
    pthread_mutex_lock(&p->lock);
    port_req *r = p->spare;
    if (r != NULL) {
        p->spare = r->next;
        p->nspare--;
    } else if ((r = malloc(sizeof *r)) == NULL) {
        pthread_mutex_unlock(&p->lock);
        if (w == NULL)
            tr__ext_leave(p->sys);
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    r->cookie = cookie;
    r->node = tr_pid_node(to);
    r->deadline = 0;
    r->dprev = r->dnext = NULL;
    int rc = TR_OK;
    r->corr = ++p->last_corr;
    uint64_t corr = r->corr;
    if (timeout_ms > 0) { /* on the deadline list, and a sweep armed if none is due by then */
        r->deadline = now + (uint64_t)timeout_ms * 1000000u;
        if (p->armed == 0 || r->deadline < p->armed)
            rc = arm_sweep(p, r->deadline, now);
        if (rc == TR_OK) {
            port_req *after = p->dtail;
            while (after != NULL && after->deadline > r->deadline)
                after = after->dprev;
            r->dprev = after;
            r->dnext = after != NULL ? after->dnext : p->dhead;
            if (r->dnext != NULL)
                r->dnext->dprev = r;
            else
                p->dtail = r;
            if (after != NULL)
                after->dnext = r;
            else
                p->dhead = r;
        }
    }
    bool registered = rc == TR_OK;
    uint16_t node = tr_pid_node(to);
    bool watch = registered && node != p->sys->opts.node_id && to != TR_PID_NONE &&
                 !(p->watched[node / 64] & (1ull << (node % 64)));
    if (watch)
        p->watched[node / 64] |= 1ull << (node % 64);
    if (registered) {
        port_req **b = &p->table[corr & (PORT_BUCKETS - 1)];
        r->next = *b;
        *b = r;
        atomic_store_explicit(&p->n, p->n + 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&p->lock);
    if (watch && tr__remote_interest(p->sys, node, p->pid) != TR_OK) {
        /* not up (the send below says so), or no room: ask again next time */
        pthread_mutex_lock(&p->lock);
        p->watched[node / 64] &= ~(1ull << (node % 64));
        pthread_mutex_unlock(&p->lock);
    }
    if (rc == TR_OK) {
        m->sender = p->pid;
        m->corr = corr;
        m->flags = TR_MF_REQUEST;
        rc = tr__deliver(p->sys, w, to, m);
        m = NULL;
    }
    if (rc != TR_OK) {
        /* refused at once, or never registered (no sweep could be armed): no callback; not
         * found, the target was dead and its notice already ran the callback (TR_ENOPROC) */
        uint64_t ck;
        if (!registered)
            free(r);
        else if (!take(p, corr, &ck))
            rc = TR_OK;
        tr_msg_free(m);
    }
    if (w == NULL)
        tr__ext_leave(p->sys);
    return rc;
}

size_t tr_port_pending(tr_port *p)
{
    if (p == NULL)
        return 0;
    return atomic_load_explicit(&p->n, memory_order_relaxed);
}

/* A sweep: expires the requests whose deadline passed and arms the next sweep. */
static void sweep(tr_port *p)
{
    uint64_t now = tr__now_ns();
    port_req *due = NULL, **last = &due;
    pthread_mutex_lock(&p->lock);
    p->armed = 0;
    while (p->dhead != NULL && p->dhead->deadline <= now) {
        port_req *r = p->dhead;
        unlink_locked(p, r);
        r->next = NULL;
        *last = r;
        last = &r->next;
    }
    /* should arming fail (no memory), the next request with a deadline arms it */
    if (p->dhead != NULL)
        arm_sweep(p, p->dhead->deadline, now);
    pthread_mutex_unlock(&p->lock);
    while (due != NULL) {
        port_req *r = due;
        due = r->next;
        p->fn(p->user, r->cookie, TR_ETIMEDOUT, NULL);
        free(r);
    }
}

/* Node `node` went down: every request still waiting on one of its actors is answered
 * TR_ENOCONN, and the next request to it registers our interest again. */
static void node_lost(tr_port *p, uint16_t node)
{
    port_req *lost = NULL;
    pthread_mutex_lock(&p->lock);
    p->watched[node / 64] &= ~(1ull << (node % 64));
    for (size_t i = 0; i < PORT_BUCKETS; i++)
        for (port_req *r = p->table[i], *next; r != NULL; r = next) {
            next = r->next;
            if (r->node == node) {
                unlink_locked(p, r);
                r->next = lost;
                lost = r;
            }
        }
    pthread_mutex_unlock(&p->lock);
    while (lost != NULL) {
        port_req *r = lost;
        lost = r->next;
        p->fn(p->user, r->cookie, TR_ENOCONN, NULL);
        free(r);
    }
}

static void dispatch(tr_port *p, tr_msg *m)
{
    if ((m->flags & TR_MF_SIGNAL) && m->type == TR_SIG_NODEDOWN) {
        uint16_t node = (uint16_t)m->corr;
        tr_msg_free(m);
        node_lost(p, node);
        return;
    }
    if (m->type == TR_MSG_TIMEOUT && m->corr == 0 && !(m->flags & TR_MF_REPLY)) {
        tr_msg_free(m);
        sweep(p);
        return;
    }
    uint64_t cookie;
    if (m->corr == 0 || m->to != p->pid || !take(p, m->corr, &cookie)) {
        /* late (after its timeout), or not ours */
        if (m->flags & TR_MF_REPLY)
            atomic_fetch_add_explicit(&p->sys->late_replies, 1, memory_order_relaxed);
        tr_msg_free(m);
        return;
    }
    int rc = TR_OK;
    bool bounced = (m->flags & TR_MF_BOUNCED) != 0; /* the request itself, unread */
    if (bounced || m->type == TR_MSG_NOPROC_NOTICE)
        rc = TR_ENOPROC;
    else if (m->type == TR_MSG_REJECTED)
        rc = TR_EFULL;
    p->fn(p->user, cookie, rc, rc == TR_OK || bounced ? m : NULL);
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
    tr__remote_forget(p->sys, p->pid); /* no more NODEDOWN signals for it */
    atomic_store_explicit(&p->a->pid, 0, memory_order_seq_cst); /* see push_allowed */
    for (tr_msg *m; (m = tr__mbox_take_closed(p->a)) != NULL;)
        tr_msg_free(m);
    p->a->state = NULL;
    tr__acct_reset(p->a); /* a port's traffic is not the next actor's */
    tr__actor_release(p->a);
    while (p->spare != NULL) {
        port_req *r = p->spare;
        p->spare = r->next;
        free(r);
    }
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
