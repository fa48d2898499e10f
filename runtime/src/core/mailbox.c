/*
 * mailbox.c — the lock-free MPSC queue behind every actor's mailbox.
 *
 * Dmitry Vyukov's intrusive non-blocking queue: a push is one atomic exchange on the tail plus a
 * release store that links the previous node, so any number of senders enqueue without locks and
 * without contending on anything but the tail. Only the actor's current runner pops. A stub node
 * lets the queue become empty without a NULL tail. The single weak point of the design is that a
 * producer between its two steps makes the queue look "busy" to the consumer; tr__mpsc_pop then
 * returns NULL and tr__mpsc_nonempty returns true, so the scheduler simply runs the actor again.
 */
#include "internal.h"

void tr__mpsc_init(tr_mpsc *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->tail, &q->stub, memory_order_relaxed);
    q->head = &q->stub;
}

void tr__mpsc_push(tr_mpsc *q, tr_mpsc_node *n)
{
    TR_ASSERT(q != NULL && n != NULL);
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* seq_cst: a Dekker pair with the runner releasing the actor (release_turn in actor.c) */
    tr_mpsc_node *prev = atomic_exchange_explicit(&q->tail, n, memory_order_seq_cst);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

tr_mpsc_node *tr__mpsc_pop(tr_mpsc *q)
{
    tr_mpsc_node *head = q->head;
    tr_mpsc_node *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == &q->stub) {
        if (next == NULL)
            return NULL;
        q->head = next;
        head = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->head = next;
        /* the next pop reads this node, most likely written by another core: start the
         * transfer now so it overlaps with the receive of the current one */
        __builtin_prefetch(next, 1);
        return head;
    }
    if (atomic_load_explicit(&q->tail, memory_order_acquire) != head)
        return NULL; /* a push is half done */
    tr__mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next != NULL) {
        q->head = next;
        return head;
    }
    return NULL;
}

bool tr__mpsc_nonempty(tr_mpsc *q)
{
    tr_mpsc_node *head = q->head;
    if (atomic_load_explicit(&head->next, memory_order_acquire) != NULL)
        return true;
    if (head != &q->stub)
        return true; /* a real node waits at the head */
    return atomic_load_explicit(&q->tail, memory_order_seq_cst) != head;
}
