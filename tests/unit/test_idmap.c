/*
 * test_idmap.c — the uint64 -> uint64 open-addressing map (internal tr__idmap_*).
 *
 * put/get/del, replace, key 0 rejected, a random workload checked op by op against a reference
 * array, clusters that wrap around the end of the table to exercise backward-shift deletion, and
 * shrinking as keys go.
 */
#include "core/idmap.h"
#include "test_util.h"

static void test_basic(void **state)
{
    (void)state;
    tr_idmap m;
    tr__idmap_init(&m);
    uint64_t v = 0;
    assert_false(tr__idmap_get(&m, 1, &v)); /* empty map, nothing allocated */
    assert_false(tr__idmap_del(&m, 1, &v));
    assert_int_equal(m.len, 0);

    assert_int_equal(tr__idmap_put(&m, 1, 100), TR_OK);
    assert_int_equal(tr__idmap_put(&m, 2, 200), TR_OK);
    assert_int_equal(tr__idmap_put(&m, UINT64_MAX, 300), TR_OK);
    assert_int_equal(m.len, 3);
    assert_true(tr__idmap_get(&m, 1, &v));
    assert_int_equal(v, 100);
    assert_true(tr__idmap_get(&m, 2, NULL));
    assert_true(tr__idmap_get(&m, UINT64_MAX, &v));
    assert_int_equal(v, 300);
    assert_false(tr__idmap_get(&m, 3, &v));

    assert_true(tr__idmap_del(&m, 2, &v));
    assert_int_equal(v, 200);
    assert_false(tr__idmap_get(&m, 2, &v));
    assert_false(tr__idmap_del(&m, 2, &v));
    assert_true(tr__idmap_del(&m, 1, NULL));
    assert_int_equal(m.len, 1);
    assert_true(tr__idmap_get(&m, UINT64_MAX, &v));
    tr__idmap_free(&m);
    assert_int_equal(m.len, 0);
    assert_false(tr__idmap_get(&m, UINT64_MAX, &v));
    tr__idmap_free(&m); /* twice is harmless */
}

static void test_replace(void **state)
{
    (void)state;
    tr_idmap m;
    tr__idmap_init(&m);
    uint64_t v;
    assert_int_equal(tr__idmap_put(&m, 42, 1), TR_OK);
    assert_int_equal(tr__idmap_put(&m, 42, 2), TR_OK);
    assert_int_equal(m.len, 1);
    assert_true(tr__idmap_get(&m, 42, &v));
    assert_int_equal(v, 2);
    assert_int_equal(tr__idmap_put(&m, 42, 0), TR_OK); /* value 0 is a value like any other */
    assert_true(tr__idmap_get(&m, 42, &v));
    assert_int_equal(v, 0);
    assert_true(tr__idmap_del(&m, 42, &v));
    assert_int_equal(m.len, 0);
    tr__idmap_free(&m);
}

static void test_key_zero_rejected(void **state)
{
    (void)state;
    tr_idmap m;
    tr__idmap_init(&m);
    uint64_t v = 7;
    assert_int_equal(tr__idmap_put(&m, 0, 1), TR_EINVAL);
    assert_int_equal(m.len, 0);
    assert_int_equal(tr__idmap_put(&m, 5, 1), TR_OK);
    assert_int_equal(tr__idmap_put(&m, 0, 1), TR_EINVAL);
    assert_false(tr__idmap_get(&m, 0, &v));
    assert_false(tr__idmap_del(&m, 0, &v));
    assert_int_equal(v, 7);
    assert_int_equal(m.len, 1);
    tr__idmap_free(&m);
}

/* The map against a reference array over keys 1..NKEYS (sparse and dense phases). */
static void test_random_against_reference(void **state)
{
    (void)state;
    enum { NKEYS = 4096 };
    static bool present[NKEYS + 1];
    static uint64_t ref[NKEYS + 1];
    memset(present, 0, sizeof present);
    tr_idmap m;
    tr__idmap_init(&m);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    size_t count = 0;
    const unsigned ops = tt_scale(400000, 100000);
    for (unsigned op = 0; op < ops; op++) {
        /* phases bias towards inserting or deleting, so the load goes up and down */
        bool filling = ((op / 20000) % 2) == 0;
        uint64_t r = tt_xs64(&seed);
        uint64_t key = 1 + (r >> 20) % NKEYS;
        unsigned what = (unsigned)(r % 10);
        uint64_t v = 0;
        if (what < (filling ? 6u : 3u)) {
            uint64_t val = tt_xs64(&seed);
            assert_int_equal(tr__idmap_put(&m, key, val), TR_OK);
            if (!present[key])
                count++;
            present[key] = true;
            ref[key] = val;
        } else if (what < 9) {
            bool had = tr__idmap_del(&m, key, &v);
            assert_int_equal(had, present[key]);
            if (had) {
                assert_int_equal(v, ref[key]);
                present[key] = false;
                count--;
            }
        } else {
            bool has = tr__idmap_get(&m, key, &v);
            assert_int_equal(has, present[key]);
            if (has)
                assert_int_equal(v, ref[key]);
        }
        assert_int_equal(m.len, count);
        assert_true(m.cap == 0 || m.len * 2 <= m.cap);
        if (op % 5000 == 4999) {
            for (uint64_t k = 1; k <= NKEYS; k++) {
                bool has = tr__idmap_get(&m, k, &v);
                assert_int_equal(has, present[k]);
                if (has)
                    assert_int_equal(v, ref[k]);
            }
        }
    }
    tr__idmap_free(&m);
}

/* Sequential ids (like correlation ids and timer ids) inserted, then deleted in random order. */
static void test_sequential_keys_random_delete(void **state)
{
    (void)state;
    const size_t n = tt_scale(50000, 10000);
    uint64_t *order = malloc(n * sizeof *order);
    assert_non_null(order);
    tr_idmap m;
    tr__idmap_init(&m);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(tr__idmap_put(&m, 1000 + i, i * 3), TR_OK);
        order[i] = 1000 + i;
    }
    uint64_t seed = 77;
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)(tt_xs64(&seed) % (i + 1));
        uint64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        assert_true(tr__idmap_del(&m, order[i], &v));
        assert_int_equal(v, (order[i] - 1000) * 3);
        assert_false(tr__idmap_get(&m, order[i], NULL));
        if (i % 997 == 0) /* the keys not yet deleted are all still there */
            for (size_t j = i + 1; j < n; j++)
                assert_true(tr__idmap_get(&m, order[j], NULL));
    }
    assert_int_equal(m.len, 0);
    tr__idmap_free(&m);
    free(order);
}

/* Same hash as idmap.c's slot_of, to build clusters on purpose (white-box). */
static size_t home_slot(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

/* Keys whose home slots are the last few of a 64-slot table: their probe runs wrap around to
 * slot 0, where backward-shift deletion must handle the cyclic interval. */
static void test_wraparound_cluster(void **state)
{
    (void)state;
    enum { CAP = 64, NK = 24 };
    uint64_t keys[NK];
    size_t nk = 0;
    for (uint64_t k = 1; nk < NK; k++)
        if (home_slot(k, CAP) >= CAP - 3 || (nk % 4 == 3 && home_slot(k, CAP) == 0))
            keys[nk++] = k;
    uint64_t seed = 2024;
    for (int round = 0; round < 200; round++) {
        tr_idmap m;
        tr__idmap_init(&m);
        for (size_t i = 0; i < NK; i++)
            assert_int_equal(tr__idmap_put(&m, keys[i], keys[i] + 1), TR_OK);
        assert_int_equal(m.cap, CAP); /* 24 keys: the table has grown to 64 and no further */
        bool gone[NK] = {false};
        for (size_t d = 0; d < NK; d++) {
            size_t i;
            do
                i = (size_t)(tt_xs64(&seed) % NK);
            while (gone[i]);
            uint64_t v;
            assert_true(tr__idmap_del(&m, keys[i], &v));
            assert_int_equal(v, keys[i] + 1);
            gone[i] = true;
            for (size_t j = 0; j < NK; j++) {
                bool has = tr__idmap_get(&m, keys[j], &v);
                assert_int_equal(has, !gone[j]);
                if (has)
                    assert_int_equal(v, keys[j] + 1);
            }
            /* re-insert now and then, into a table with holes shifted around */
            if (d % 5 == 4) {
                size_t r = (size_t)(tt_xs64(&seed) % NK);
                if (gone[r]) {
                    assert_int_equal(tr__idmap_put(&m, keys[r], keys[r] + 1), TR_OK);
                    gone[r] = false;
                    d--; /* keep the number of deletions equal to NK */
                }
            }
        }
        assert_int_equal(m.len, 0);
        tr__idmap_free(&m);
    }
}

/* tr__idmap_shrink: a map that grew to 100,000 keys gives its memory back as they go (the
 * table stays within 16x its keys), keeps every key left, and is freed once empty. */
static void test_shrink(void **state)
{
    (void)state;
    enum { N = 100000 };
    tr_idmap m;
    tr__idmap_init(&m);
    for (uint64_t k = 1; k <= N; k++)
        assert_int_equal(tr__idmap_put(&m, k * 7919, k), TR_OK);
    size_t peak = m.cap;
    assert_true(peak >= 2 * (size_t)N);
    tr__idmap_shrink(&m); /* full enough: nothing to do */
    assert_int_equal(m.cap, peak);
    for (uint64_t k = 1; k <= N; k++) {
        assert_true(tr__idmap_del(&m, k * 7919, NULL));
        tr__idmap_shrink(&m);
        assert_true(m.cap <= 8 || m.cap <= 16 * m.len);
        if (k % 997 == 0) /* the keys left are all still there */
            for (uint64_t j = k + 1; j <= N; j += 101) {
                uint64_t v;
                assert_true(tr__idmap_get(&m, j * 7919, &v));
                assert_int_equal(v, j);
            }
    }
    assert_int_equal(m.len, 0);
    assert_true(m.cap <= 8);
    assert_int_equal(tr__idmap_put(&m, 5, 6), TR_OK); /* usable again */
    assert_true(tr__idmap_get(&m, 5, NULL));
    tr__idmap_free(&m);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_basic),
    cmocka_unit_test(test_replace),
    cmocka_unit_test(test_key_zero_rejected),
    cmocka_unit_test(test_random_against_reference),
    cmocka_unit_test(test_sequential_keys_random_delete),
    cmocka_unit_test(test_wraparound_cluster),
    cmocka_unit_test(test_shrink),
};

TT_MAIN_PLAIN(tests)
