/*
 * test_limiter.c — the token and leaky bucket cores (internal tr__limiter_*), in virtual time.
 *
 * The design notes' scenarios, exactly: a sale opening at 1000 req/s on a token bucket of
 * 100/s with 500 saved tokens; a leaky bucket of 100/s hit by 150 requests in one second; and an
 * email actor held to 50/s that never sends more than 50 + burst in any 1-second window over a
 * simulated 10 minutes of bursty arrivals.
 */
#include "core/limiter.h"
#include "test_util.h"

#define MS 1000000ULL
#define SEC 1000000000ULL

/* Normal load 100 req/s for 10 s, then a sale at 1000 req/s for 5 s, arrivals rejected when no
 * token is there. Expected: the 500 saved tokens pass at once on top of the rate, then exactly
 * the rate. */
static void test_token_bucket_sale(void **state)
{
    (void)state;
    tr_limiter l;
    tr_limiter_init(&l, TR_LIMIT_TOKEN, 100, 500, 0);
    for (uint64_t t = 0; t < 10 * SEC; t += 10 * MS)
        assert_int_equal(tr_limiter_take(&l, t), 0); /* normal load: all pass */
    const uint64_t T = 10 * SEC;
    uint64_t passed = 0, passed_first_555ms = 0, passed_second_2 = 0;
    for (uint64_t k = 0; k < 5000; k++) {
        uint64_t now = T + k * MS;
        /* bucket full at T (the last normal request left 499, 10 ms earned 1 more); after that
         * consumption outruns refill, so passes by arrival k = min(k + 1, 500 + k / 10) */
        uint64_t expect = (k + 1 < 500 + k / 10) ? k + 1 : 500 + k / 10;
        tr_limiter before = l;
        uint64_t wait = tr_limiter_take(&l, now);
        if (wait == 0) {
            passed++;
            if (k < 555)
                passed_first_555ms++;
            if (k >= 1000 && k < 2000)
                passed_second_2++;
        } else {
            /* the wait is exact: one ns earlier is still too early, at now + wait it passes */
            tr_limiter a = before, b = before;
            if (wait > 1)
                assert_true(tr_limiter_take(&a, now + wait - 1) > 0);
            assert_int_equal(tr_limiter_take(&b, now + wait), 0);
        }
        assert_int_equal(passed, expect);
    }
    assert_int_equal(passed_first_555ms, 555); /* 500 saved + 55 earned in 555 ms */
    assert_int_equal(passed_second_2, 100);    /* then exactly the rate */
    assert_int_equal(passed, 500 + 4999 / 10); /* 999 over the 5 s */
}

/* 100 req/s, queue 100: 150 requests arrive within one second (all at once). 100 are served
 * evenly over that second (every 10 ms), 50 are dropped. */
static void test_leaky_bucket_150(void **state)
{
    (void)state;
    tr_limiter l;
    tr_limiter_init(&l, TR_LIMIT_LEAKY, 100, 1, 0);
    const unsigned queue_cap = 100;
    unsigned queued = 0, dropped = 0;
    for (unsigned i = 0; i < 150; i++) {
        if (queued < queue_cap)
            queued++;
        else
            dropped++;
    }
    assert_int_equal(dropped, 50);
    uint64_t now = 0;
    unsigned served = 0;
    while (queued > 0) {
        uint64_t wait = tr_limiter_take(&l, now);
        if (wait != 0) {
            now += wait; /* the actor parks on a timer for exactly this long */
            continue;
        }
        assert_int_equal(now, (uint64_t)served * 10 * MS); /* evenly: 0, 10, ..., 990 ms */
        served++;
        queued--;
    }
    assert_int_equal(served, 100);
    assert_true(now < SEC);
}

/* A rate that does not divide 1e9 drifts not at all: 3/s gives exactly 3 per second. */
static void test_leaky_no_drift(void **state)
{
    (void)state;
    tr_limiter l;
    tr_limiter_init(&l, TR_LIMIT_LEAKY, 3, 1, 0);
    uint64_t now = 0, served = 0;
    while (now < 1000 * SEC) {
        uint64_t wait = tr_limiter_take(&l, now);
        if (wait == 0)
            served++;
        else
            now += wait;
    }
    assert_int_equal(served, 3000);
}

/* An email actor limited to 50/s with a burst of 10, fed bursty arrivals for 10 simulated
 * minutes (bursts of up to 400 at random moments, quiet gaps of up to 30 s). Its deliveries never
 * exceed 50 + 10 in any 1-second window, and it keeps up with the rate when work is queued. */
static void test_email_50_per_second(void **state)
{
    (void)state;
    const uint64_t rate = 50, burst = 10, horizon = 600 * SEC;
    tr_limiter l;
    tr_limiter_init(&l, TR_LIMIT_TOKEN, rate, burst, 0);
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    uint64_t *sent = malloc(sizeof(uint64_t) * 40000);
    assert_non_null(sent);
    size_t nsent = 0;
    uint64_t queued = 0, arrived = 0, now = 0;
    uint64_t next_burst = 0;
    while (now < horizon) {
        if (now >= next_burst) {
            uint64_t n = tt_xs64(&seed) % 401;
            queued += n;
            arrived += n;
            next_burst = now + (tt_xs64(&seed) % (30 * SEC));
        }
        if (queued == 0) {
            now = next_burst;
            continue;
        }
        uint64_t wait = tr_limiter_take(&l, now);
        if (wait == 0) {
            assert_true(nsent < 40000);
            sent[nsent++] = now;
            queued--;
            continue;
        }
        now = now + wait < next_burst ? now + wait : next_burst;
    }
    /* the worst sliding 1-second window */
    size_t worst = 0;
    for (size_t i = 0, j = 0; i < nsent; i++) {
        while (j < nsent && sent[j] < sent[i] + SEC)
            j++;
        if (j - i > worst)
            worst = j - i;
    }
    print_message("arrived %llu, sent %zu, worst 1-s window %zu (limit %llu)\n",
                  (unsigned long long)arrived, nsent, worst, (unsigned long long)(rate + burst));
    assert_true(worst <= rate + burst);
    assert_true(worst >= rate); /* under backlog it does send at the rate */
    assert_int_equal(nsent + queued, arrived); /* nothing lost: sent, or still waiting */
    assert_true(nsent > 5000);
    free(sent);
}

/* Changing the limit at run time keeps what was saved, capped to the new burst. */
static void test_set_at_run_time(void **state)
{
    (void)state;
    tr_limiter l;
    tr_limiter_init(&l, TR_LIMIT_TOKEN, 100, 500, 0);
    for (int i = 0; i < 400; i++)
        assert_int_equal(tr_limiter_take(&l, 0), 0); /* 100 saved tokens left */
    tr_limiter_set(&l, TR_LIMIT_TOKEN, 10, 50, 0);   /* capped to 50 */
    unsigned n = 0;
    while (tr_limiter_take(&l, 0) == 0)
        n++;
    assert_int_equal(n, 50);
    assert_int_equal(tr_limiter_take(&l, 0), 100 * MS); /* one token per 100 ms now */
    tr_limiter_init(&l, TR_LIMIT_NONE, 0, 0, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(tr_limiter_take(&l, 0), 0); /* unlimited */
}

/* Idle for years does not overflow anything and saves at most the burst. */
static void test_long_idle(void **state)
{
    (void)state;
    tr_limiter l;
    tr_limiter_init(&l, TR_LIMIT_TOKEN, 1000000, 7, 0);
    for (int i = 0; i < 7; i++)
        assert_int_equal(tr_limiter_take(&l, 0), 0);
    uint64_t later = 100ULL * 365 * 24 * 3600 * SEC;
    unsigned n = 0;
    while (tr_limiter_take(&l, later) == 0)
        n++;
    assert_int_equal(n, 7);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_token_bucket_sale),
    cmocka_unit_test(test_leaky_bucket_150),
    cmocka_unit_test(test_leaky_no_drift),
    cmocka_unit_test(test_email_50_per_second),
    cmocka_unit_test(test_set_at_run_time),
    cmocka_unit_test(test_long_idle),
};

TT_MAIN_PLAIN(tests)
