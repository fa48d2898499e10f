/*
 * test_util.h — small helpers shared by the unit tests (header-only, everything static inline).
 *
 * Rules the helpers encode:
 *  - never assert an upper bound on time: wait for asynchronous things by polling a condition
 *    with a generous deadline (TT_WAIT_FOR), then assert;
 *  - cmocka's assert_* may only be used on the test's own thread: inside actor callbacks and
 *    helper threads use TT_CHECK, which counts failures in an atomic that the test thread then
 *    asserts to be zero (tt_assert_no_failures);
 *  - TROUPE_TEST_SMALL=1 in the environment shrinks the big counts (tt_scale).
 */
#ifndef TROUPE_TEST_UTIL_H
#define TROUPE_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>
#include <cmocka.h>
#include <dirent.h>

#include "troupe.h"

/* Generous deadline for anything asynchronous (the machine may be slow or loaded). */
#define TT_DEADLINE_MS 60000u

static atomic_long tt_failures;

/* For use off the test thread (actors, helper threads): records a failure, never aborts. */
#define TT_CHECK(cond)                                                                         \
    do {                                                                                       \
        if (!(cond) && atomic_fetch_add(&tt_failures, 1) < 20)                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);           \
    } while (0)

static inline void tt_reset_failures(void)
{
    atomic_store(&tt_failures, 0);
}

static inline void tt_assert_no_failures(void)
{
    assert_int_equal(atomic_load(&tt_failures), 0);
}

/* The runtime's clock (tr_now_ns), under the tests' prefix. */
static inline uint64_t tt_now_ns(void)
{
    return tr_now_ns();
}

static inline void tt_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Polls `cond` every millisecond until it holds or `ms` milliseconds have passed, then asserts it. */
#define TT_WAIT_FOR(cond, ms)                                                                  \
    do {                                                                                       \
        uint64_t tt_dl_ = tt_now_ns() + (uint64_t)(ms) * 1000000u;                             \
        while (!(cond) && tt_now_ns() < tt_dl_)                                                \
            tt_sleep_ms(1);                                                                    \
        assert_true(cond);                                                                     \
    } while (0)

static inline bool tt_small(void)
{
    const char *s = getenv("TROUPE_TEST_SMALL");
    return s != NULL && *s != '\0' && strcmp(s, "0") != 0;
}

/* `full` normally, `small` when TROUPE_TEST_SMALL is set. */
static inline unsigned tt_scale(unsigned full, unsigned small)
{
    return tt_small() ? small : full;
}

/* A started system; opts may be NULL. */
static inline tr_system *tt_system_start(const tr_system_opts *opts)
{
    tr_system *sys = NULL;
    assert_int_equal(tr_system_new(&sys, opts), TR_OK);
    assert_non_null(sys);
    assert_int_equal(tr_system_start(sys), TR_OK);
    return sys;
}

/* A started system with `workers` threads and a long drain timeout (never speed-dependent). */
static inline tr_system *tt_system_workers(unsigned workers)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = workers;
    o.drain_timeout_ms = 120000;
    return tt_system_start(&o);
}

static inline void tt_system_end(tr_system *sys)
{
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_system_free(sys);
}

static inline tr_system_stats tt_stats(tr_system *sys)
{
    tr_system_stats s;
    tr_system_stats_get(sys, &s);
    return s;
}

/* A message whose payload is the given unsigned integers (msgpack). */
static inline tr_msg *tt_msg_u64s(uint32_t type, size_t n, const uint64_t *v)
{
    tr_msg *m = tr_msg_new(type, 9 * n);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (msgpack_pack_uint64(tr_msg_packer(m), v[i]) != 0) {
            tr_msg_free(m);
            return NULL;
        }
    return m;
}

static inline tr_msg *tt_msg_u64(uint32_t type, uint64_t v)
{
    return tt_msg_u64s(type, 1, &v);
}

/* Reads n unsigned integers from a payload; returns TR_OK or the first error. */
static inline int tt_read_u64s(const tr_msg *m, size_t n, uint64_t *out)
{
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = TR_OK;
    for (size_t i = 0; i < n && rc == TR_OK; i++)
        rc = tr_read_u64(&r, &out[i]);
    tr_reader_done(&r);
    return rc;
}

/* The first unsigned integer of a payload (UINT64_MAX and a TT_CHECK failure when unreadable). */
static inline uint64_t tt_read_u64(const tr_msg *m)
{
    uint64_t v = UINT64_MAX;
    int rc = tt_read_u64s(m, 1, &v);
    TT_CHECK(rc == TR_OK);
    return v;
}

/* TT_MONITORS=K in the environment: clusters the tests configure run with partial monitoring
 * (`monitors = K`, issue 22); unset: 0, the full mesh. */
static inline unsigned tt_monitors(void)
{
    const char *m = getenv("TT_MONITORS");
    return m != NULL ? (unsigned)atoi(m) : 0u;
}

/* TT_FILTER=pattern in the environment runs only the matching tests (cmocka wildcards);
 * TT_SKIP=pattern leaves the matching ones out. */
static inline void tt_apply_filter(void)
{
    const char *f = getenv("TT_FILTER");
    if (f != NULL && *f != '\0')
        cmocka_set_test_filter(f);
    f = getenv("TT_SKIP");
    if (f != NULL && *f != '\0')
        cmocka_set_skip_filter(f);
}

/* ---- scratch directories ---- */

/* Makes a fresh directory /tmp/PREFIX-XXXXXX into dir (cap bytes): 0, or -1 (a cmocka setup's
 * return). */
static inline int tt_tmpdir(char *dir, size_t cap, const char *prefix)
{
    snprintf(dir, cap, "/tmp/%s-XXXXXX", prefix);
    return mkdtemp(dir) != NULL ? 0 : -1;
}

/* Removes a directory and everything in it: 0, or -1. */
static inline int tt_rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The entries of dir that do not start with '.' (0 when it does not exist). */
static inline size_t tt_count_files(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d != NULL)
        closedir(d);
    return n;
}

/* xorshift64: a small deterministic generator for test workloads (seed must be non-zero). */
static inline uint64_t tt_xs64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Runs the "tests" group, or with argument --regressions the "regressions" group: one test per
 * runtime bug this suite found, each under a comment "REGRESSION (where; fixed in COMMIT)" saying
 * what broke and how it was fixed; registered in ctest as NAME_regressions with the label
 * regression (ctest -L regression). A bug found and not yet fixed gets its test there too, marked
 * "KNOWN BUG", failing until the fix lands. */
#define TT_MAIN(tests, regressions)                                                            \
    int main(int argc, char **argv)                                                            \
    {                                                                                          \
        tt_apply_filter();                                                                     \
        if (argc > 1 && strcmp(argv[1], "--regressions") == 0)                                 \
            return cmocka_run_group_tests_name("regressions", regressions, NULL, NULL);        \
        return cmocka_run_group_tests_name("tests", tests, NULL, NULL);                        \
    }

/* Runs the "tests" group only (files without regression tests). */
#define TT_MAIN_PLAIN(tests)                                                                   \
    int main(void)                                                                             \
    {                                                                                          \
        tt_apply_filter();                                                                     \
        return cmocka_run_group_tests_name("tests", tests, NULL, NULL);                        \
    }

#endif
