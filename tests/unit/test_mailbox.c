/*
 * test_mailbox.c — the intrusive MPSC queue behind every mailbox (internal tr__mpsc_*).
 *
 * Single-threaded FIFO and empty/non-empty reporting, the "push half done" state, and a
 * concurrent run: 4 producers x 200,000 nodes into one queue while the consumer pops: nothing
 * lost, nothing duplicated, each producer's order kept.
 */
#include "core/internal.h"
#include "test_util.h"

#include <pthread.h>
#include <sched.h>

typedef struct item {
    tr_mpsc_node node; /* first: the queue hands back tr_mpsc_node pointers */
    uint32_t producer;
    uint32_t seq;
} item;

static item *pop_item(tr_mpsc *q)
{
    return (item *)tr__mpsc_pop(q);
}

static void test_empty(void **state)
{
    (void)state;
    tr_mpsc q;
    tr__mpsc_init(&q);
    assert_false(tr__mpsc_nonempty(&q));
    assert_null(tr__mpsc_pop(&q));
    assert_null(tr__mpsc_pop(&q));
    assert_false(tr__mpsc_nonempty(&q));
}

static void test_fifo_single_thread(void **state)
{
    (void)state;
    enum { N = 1000 };
    static item items[N];
    tr_mpsc q;
    tr__mpsc_init(&q);

    /* one node in, one out: the stub dance */
    items[0].seq = 0;
    tr__mpsc_push(&q, &items[0].node);
    assert_true(tr__mpsc_nonempty(&q));
    assert_ptr_equal(pop_item(&q), &items[0]);
    assert_false(tr__mpsc_nonempty(&q));
    assert_null(tr__mpsc_pop(&q));

    /* many in, all out in order */
    for (uint32_t i = 0; i < N; i++) {
        items[i].seq = i;
        tr__mpsc_push(&q, &items[i].node);
        assert_true(tr__mpsc_nonempty(&q));
    }
    for (uint32_t i = 0; i < N; i++) {
        assert_true(tr__mpsc_nonempty(&q));
        item *it = pop_item(&q);
        assert_non_null(it);
        assert_int_equal(it->seq, i);
    }
    assert_null(tr__mpsc_pop(&q));
    assert_false(tr__mpsc_nonempty(&q));

    /* interleaved pushes and pops, the queue repeatedly going empty; nodes are reused */
    uint32_t next_in = 0, next_out = 0;
    uint32_t rng = 12345;
    for (int round = 0; round < 20000; round++) {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        if ((rng & 1) && next_in - next_out < N) {
            item *it = &items[next_in % N];
            it->seq = next_in++;
            tr__mpsc_push(&q, &it->node);
        } else {
            item *it = pop_item(&q);
            if (next_in == next_out) {
                assert_null(it);
                assert_false(tr__mpsc_nonempty(&q));
            } else {
                assert_non_null(it);
                assert_int_equal(it->seq, next_out);
                next_out++;
            }
        }
    }
    while (next_out < next_in) {
        item *it = pop_item(&q);
        assert_non_null(it);
        assert_int_equal(it->seq, next_out++);
    }
    assert_null(tr__mpsc_pop(&q));
}

/* A producer stopped between its two steps (tail exchanged, previous node not linked yet): the
 * consumer must see "busy" (pop NULL, nonempty true) and get the node once the link is made. */
static void test_push_half_done(void **state)
{
    (void)state;
    item a = {.seq = 1}, b = {.seq = 2};
    tr_mpsc q;
    tr__mpsc_init(&q);
    tr__mpsc_push(&q, &a.node);

    /* the first half of tr__mpsc_push for b */
    atomic_store(&b.node.next, NULL);
    tr_mpsc_node *prev = atomic_exchange(&q.tail, &b.node);
    assert_ptr_equal(prev, &a.node);

    assert_true(tr__mpsc_nonempty(&q));
    /* a is at the head but its successor is not linked: pop may hand out a or report busy; it
     * must never lose b */
    item *got = pop_item(&q);
    if (got != NULL)
        assert_ptr_equal(got, &a);
    assert_true(tr__mpsc_nonempty(&q));
    assert_null(tr__mpsc_pop(&q));

    /* the second half */
    atomic_store(&prev->next, &b.node);
    assert_true(tr__mpsc_nonempty(&q));
    if (got == NULL)
        assert_ptr_equal(pop_item(&q), &a);
    assert_ptr_equal(pop_item(&q), &b);
    assert_null(tr__mpsc_pop(&q));
    assert_false(tr__mpsc_nonempty(&q));
}

/* ---- concurrent producers ------------------------------------------------------------------ */

#define NPROD 4

typedef struct producer_arg {
    tr_mpsc *q;
    item *items;
    uint32_t id;
    uint32_t n;
    atomic_int *go;
} producer_arg;

static void *producer_main(void *p)
{
    producer_arg *a = p;
    while (!atomic_load(a->go))
        sched_yield();
    for (uint32_t i = 0; i < a->n; i++) {
        item *it = &a->items[i];
        it->producer = a->id;
        it->seq = i;
        tr__mpsc_push(a->q, &it->node);
        if ((i & 1023) == 0)
            sched_yield(); /* vary the interleavings a little */
    }
    return NULL;
}

static void test_concurrent_producers(void **state)
{
    (void)state;
    const uint32_t per = tt_scale(200000, 50000);
    tr_mpsc q;
    tr__mpsc_init(&q);
    atomic_int go = 0;
    pthread_t th[NPROD];
    producer_arg args[NPROD];
    item *items[NPROD];
    uint8_t *seen[NPROD];
    for (uint32_t p = 0; p < NPROD; p++) {
        items[p] = calloc(per, sizeof(item));
        seen[p] = calloc(per, 1);
        assert_non_null(items[p]);
        assert_non_null(seen[p]);
        args[p] = (producer_arg){.q = &q, .items = items[p], .id = p, .n = per, .go = &go};
        assert_int_equal(pthread_create(&th[p], NULL, producer_main, &args[p]), 0);
    }
    atomic_store(&go, 1);

    uint32_t next[NPROD] = {0};
    uint64_t total = (uint64_t)per * NPROD, got = 0, busy = 0;
    uint64_t deadline = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    while (got < total) {
        item *it = pop_item(&q);
        if (it == NULL) {
            busy++;
            if ((busy & 255) == 0) {
                assert_true(tt_now_ns() < deadline);
                sched_yield();
            }
            continue;
        }
        assert_in_range(it->producer, 0, NPROD - 1);
        assert_in_range(it->seq, 0, per - 1);
        assert_int_equal(seen[it->producer][it->seq], 0); /* no duplicate */
        seen[it->producer][it->seq] = 1;
        assert_int_equal(it->seq, next[it->producer]);    /* per-producer FIFO, nothing skipped */
        next[it->producer]++;
        got++;
    }
    for (uint32_t p = 0; p < NPROD; p++)
        assert_int_equal(pthread_join(th[p], NULL), 0);
    assert_null(tr__mpsc_pop(&q));
    assert_false(tr__mpsc_nonempty(&q));
    for (uint32_t p = 0; p < NPROD; p++) {
        assert_int_equal(next[p], per);
        free(items[p]);
        free(seen[p]);
    }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_empty),
    cmocka_unit_test(test_fifo_single_thread),
    cmocka_unit_test(test_push_half_done),
    cmocka_unit_test(test_concurrent_producers),
};

TT_MAIN_PLAIN(tests)
