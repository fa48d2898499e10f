/*
 * test_timelines.c — the node's timeline table (actors/src/timelines.c) without actors: order,
 * the cap, duplicates, the follow check, celebrities, unfollow, a record replaced by a newer one
 * of the same reader, every reference given back; the table's own memory; a fan-out passing a
 * stripe another thread holds, and two fanning out to the same readers at once; and the hashed
 * id set's membership at every size (a linear scan up to 32, a branch-free lower bound above).
 */
#include "test_util.h"

#include "../../actors/src/social_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static soc_post *post(social_ctx *ctx, const char *author, uint64_t ts)
{
    char id[64];
    int n = snprintf(id, sizeof id, "%s.%llu", author, (unsigned long long)ts);
    soc_post *p = soc_post_new(ctx, id, (size_t)n, author, strlen(author), "https://x/y", 11, ts);
    assert_non_null(p);
    return p;
}

static uint64_t h(const char *id)
{
    return soc_id_hash(id, strlen(id));
}

/* The ring's ts, newest first, as "ts,ts,..." */
static void page(social_ctx *ctx, soc_tl *t, uint64_t bts, const char *bid, char *out, size_t cap)
{
    soc_post *got[16];
    size_t avail;
    size_t n = soc_tl_page(ctx, t, bts, bid, 16, got, &avail);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%llu", i ? "," : "", (unsigned long long)got[i]->ts);
        soc_post_unref(ctx, got[i]);
    }
}

/* Timelines of readers PREFIX0..PREFIX(n-1), each following `author`; their id hashes in rh. */
static void open_readers(social_ctx *ctx, const char *prefix, const char *author, int n,
                         soc_tl **t, uint64_t *rh)
{
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%s%d", prefix, i);
        t[i] = soc_tl_open(ctx, id, TR_PID_NONE);
        assert_non_null(t[i]);
        assert_int_equal(soc_tl_follow(ctx, t[i], author), 1);
        rh[i] = h(id);
    }
}

typedef struct read_out {
    char text[256];
} read_out;

static void on_page(void *arg, const social_post_view *v, size_t n, bool more)
{
    read_out *o = arg;
    o->text[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(o->text);
        snprintf(o->text + l, sizeof o->text - l, "%s%llu %s %s", i ? " " : "",
                 (unsigned long long)v[i].ts, v[i].id, v[i].author);
    }
    if (more) {
        size_t l = strlen(o->text);
        snprintf(o->text + l, sizeof o->text - l, " more");
    }
}

static void test_table(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.timeline_cap = 4;
    soc_tl *a = soc_tl_open(&ctx, "ua", TR_PID_NONE);
    soc_tl *b = soc_tl_open(&ctx, "ub", TR_PID_NONE);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(soc_tl_follow(&ctx, a, "ux"), 1);
    assert_int_equal(soc_tl_follow(&ctx, a, "ux"), 0);
    assert_int_equal(soc_tl_follow(&ctx, a, "uy"), 1);
    assert_int_equal(soc_tl_follow(&ctx, b, "uy"), 1);

    /* the fan-out: a follows x, b does not; c is not running; duplicates placed once */
    uint64_t readers[] = {h("ua"), h("ub"), h("uc"), h("ua")};
    soc_post *p1 = post(&ctx, "ux", 10);
    assert_int_equal(soc_tl_fanout(&ctx, p1, readers, 4), 1);
    soc_post *p2 = post(&ctx, "uy", 20);
    assert_int_equal(soc_tl_fanout(&ctx, p2, readers, 4), 2);
    char got[256];
    page(&ctx, a, 0, "", got, sizeof got);
    assert_string_equal(got, "20,10");
    page(&ctx, b, 0, "", got, sizeof got);
    assert_string_equal(got, "20");
    /* out of order (an older post arriving late), then the cap: the oldest fall off */
    soc_tl_insert(&ctx, a, post(&ctx, "ux", 15));
    soc_tl_insert(&ctx, a, post(&ctx, "uy", 30));
    soc_tl_insert(&ctx, a, post(&ctx, "ux", 25));
    page(&ctx, a, 0, "", got, sizeof got);
    assert_string_equal(got, "30,25,20,15");
    assert_false(soc_tl_insert(&ctx, a, post(&ctx, "ux", 5))); /* older than a full ring */
    assert_false(soc_tl_insert(&ctx, a, post(&ctx, "uz", 40))); /* not followed */
    /* a page after a cursor */
    char cursor[64];
    snprintf(cursor, sizeof cursor, "ux.25");
    page(&ctx, a, 25, cursor, got, sizeof got);
    assert_string_equal(got, "20,15");
    /* a celebrity's posts leave the ring and are not inserted; pushed again: inserted */
    soc_tl_celeb(&ctx, a, "uy", true);
    page(&ctx, a, 0, "", got, sizeof got);
    assert_string_equal(got, "25,15");
    assert_false(soc_tl_insert(&ctx, a, post(&ctx, "uy", 50)));
    soc_tl_celeb(&ctx, a, "uy", false);
    assert_true(soc_tl_insert(&ctx, a, post(&ctx, "uy", 50)));
    /* unfollow: the author's posts leave */
    soc_tl_unfollow(&ctx, a, "ux");
    page(&ctx, a, 0, "", got, sizeof got);
    assert_string_equal(got, "50");
    assert_int_equal(soc_tl_count(&ctx, a), 1);
    uint64_t tls, entries, bytes;
    social_timeline_memory(&ctx, &tls, &entries, &bytes);
    assert_int_equal(tls, 2);
    assert_int_equal(entries, 2);
    assert_true(bytes >= entries * sizeof(soc_post *));

    /* read straight from the table: only once the actor says the table alone has the answer */
    read_out ro = {0};
    assert_false(social_timeline_read(&ctx, "ua", 0, "", 10, on_page, &ro));
    assert_false(social_timeline_read(&ctx, "nobody", 0, "", 10, on_page, &ro));
    soc_tl_insert(&ctx, a, post(&ctx, "uy", 70));
    soc_tl_servable(&ctx, a, true);
    assert_true(social_timeline_read(&ctx, "ua", 0, "", 1, on_page, &ro));
    assert_string_equal(ro.text, "70 uy.70 uy more");
    assert_true(social_timeline_read(&ctx, "ua", 70, "uy.70", 10, on_page, &ro));
    assert_string_equal(ro.text, "50 uy.50 uy");
    soc_tl_servable(&ctx, a, false);
    assert_false(social_timeline_read(&ctx, "ua", 0, "", 10, on_page, &ro));
    entries = 0;
    social_timeline_memory(&ctx, NULL, &entries, NULL);
    assert_int_equal(entries, 3);

    /* a newer record of reader b replaces the old one in the table; the old one's close leaves
     * the new one listed */
    soc_tl *b2 = soc_tl_open(&ctx, "ub", TR_PID_NONE);
    assert_non_null(b2);
    soc_tl_follow(&ctx, b2, "uy");
    soc_tl_close(&ctx, b);
    soc_post *p3 = post(&ctx, "uy", 60);
    assert_int_equal(soc_tl_fanout(&ctx, p3, readers, 2), 2);
    page(&ctx, b2, 0, "", got, sizeof got);
    assert_string_equal(got, "60");

    soc_post_unref(&ctx, p1);
    soc_post_unref(&ctx, p2);
    soc_post_unref(&ctx, p3);
    soc_tl_close(&ctx, a);
    soc_tl_close(&ctx, b2);
    social_timeline_memory(&ctx, &tls, &entries, &bytes);
    assert_int_equal(tls + entries + bytes, 0);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0); /* every reference given back */
    social_ctx_free(&ctx);
}

/* soc_tl_merge places what soc_tl_insert would, one at a time: on random lists (some entries
 * already there, some twice, some of authors not followed or pulled, unordered, rings below, at
 * and past the cap), both rings end equal, with the same entries counted and every reference
 * given back; soc_tl_floor is the oldest ts of a full ring. */
static void test_merge_matches_inserts(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.timeline_cap = 16;
    const char *authors[] = {"ua", "ub", "uc", "ud"}; /* ud: not followed; uc: pulled */
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        soc_tl *one = soc_tl_open(&ctx, "r1", TR_PID_NONE);
        soc_tl *all = soc_tl_open(&ctx, "r2", TR_PID_NONE);
        assert_non_null(one);
        assert_non_null(all);
        for (int i = 0; i < 3; i++) {
            soc_tl_follow(&ctx, one, authors[i]);
            soc_tl_follow(&ctx, all, authors[i]);
        }
        soc_tl_celeb(&ctx, one, "uc", true);
        soc_tl_celeb(&ctx, all, "uc", true);
        /* what both already hold */
        int pre = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 20;
        for (int i = 0; i < pre; i++) {
            seed = seed * 1103515245u + 12345u;
            soc_post *p = post(&ctx, authors[(seed >> 16) % 2], (seed >> 8) % 60 + 1);
            soc_post_ref(p);
            soc_tl_insert(&ctx, one, p);
            soc_tl_insert(&ctx, all, p);
        }
        /* the list to merge */
        soc_post *v[40];
        size_t n = (size_t)((seed = seed * 1103515245u + 12345u) >> 16) % 40;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            v[i] = post(&ctx, authors[(seed >> 16) % 4], (seed >> 4) % 60 + 1);
        }
        if (round % 2 == 0) { /* half of them newest first, as the post actors answer */
            for (size_t i = 0; i < n; i++)
                for (size_t k = i + 1; k < n; k++)
                    if (v[k]->ts > v[i]->ts) {
                        soc_post *x = v[i];
                        v[i] = v[k];
                        v[k] = x;
                    }
        }
        size_t placed_one = 0;
        for (size_t i = 0; i < n; i++) {
            soc_post_ref(v[i]);
            placed_one += soc_tl_insert(&ctx, one, v[i]);
        }
        size_t placed_all = soc_tl_merge(&ctx, all, v, n);
        char a[1024], b[1024];
        page(&ctx, one, 0, "", a, sizeof a);
        page(&ctx, all, 0, "", b, sizeof b);
        assert_string_equal(a, b);
        assert_int_equal(soc_tl_count(&ctx, one), soc_tl_count(&ctx, all));
        /* one at a time can place a post that a later one pushes out: merged, never placed */
        assert_true(placed_all <= placed_one);
        size_t c = soc_tl_count(&ctx, all);
        soc_post *last[16];
        size_t avail;
        size_t k = soc_tl_page(&ctx, all, 0, "", 16, last, &avail);
        assert_int_equal(soc_tl_floor(&ctx, all), c == 16 ? last[k - 1]->ts : 0);
        for (size_t i = 0; i < k; i++)
            soc_post_unref(&ctx, last[i]);
        soc_tl_close(&ctx, one);
        soc_tl_close(&ctx, all);
    }
    uint64_t tls, entries, bytes;
    social_timeline_memory(&ctx, &tls, &entries, &bytes);
    assert_int_equal(tls + entries + bytes, 0);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0);
    social_ctx_free(&ctx);
}

/* Many readers in one table: it grows, and removals (backward shift) keep every one findable. */
static void test_table_grows(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    enum { N = 20000 };
    static soc_tl *t[N];
    static uint64_t rh[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%d", i);
        t[i] = soc_tl_open(&ctx, id, TR_PID_NONE);
        assert_non_null(t[i]);
        soc_tl_follow(&ctx, t[i], "author");
        rh[i] = h(id);
    }
    for (int i = 0; i < N; i += 3) { /* a third end */
        soc_tl_close(&ctx, t[i]);
        t[i] = NULL;
    }
    soc_post *p = post(&ctx, "author", 1);
    assert_int_equal(soc_tl_fanout(&ctx, p, rh, N), N - (N + 2) / 3);
    for (int i = 0; i < N; i++)
        if (t[i] != NULL) {
            assert_int_equal(soc_tl_count(&ctx, t[i]), 1);
            snprintf(id, sizeof id, "r%d", i);
            tr_pid owner;
            assert_true(soc_tl_owner(&ctx, id, &owner));
            soc_tl_close(&ctx, t[i]);
        }
    soc_post_unref(&ctx, p);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0);
    social_ctx_free(&ctx);
}

/* The table's own memory (records, follow sets and rings carved from its chunks and recycled,
 * malloc above its sizes): thousands of timelines with small and large follow sets and rings, a
 * third closed and their memory reused by new readers, which start empty; every survivor keeps
 * exactly its entries and follows (no block handed out twice). */
static size_t follows_of(int i, int gen, int *out)
{
    if (i % 100 == 0) { /* 150 hashes: 1,200 bytes, past TL_SMALL (malloc) */
        for (int k = 0; k < 150; k++)
            out[k] = k;
        return 150;
    }
    out[0] = i % 13;
    out[1] = 20 + (i + gen) % 17;
    out[2] = 50 + (i + gen) % 29;
    return 3;
}

static void post_round(social_ctx *ctx, uint64_t ts0, const uint64_t *readers, size_t n)
{
    for (int a = 0; a < 300; a++) {
        char au[16];
        snprintf(au, sizeof au, "a%d", a);
        soc_post *p = post(ctx, au, ts0 + (uint64_t)a);
        soc_tl_fanout(ctx, p, readers, n);
        soc_post_unref(ctx, p);
    }
}

static void test_table_memory(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    enum { N = 3000 };
    static soc_tl *r[N], *s[N];
    static uint64_t rh[2 * N];
    int fo[150];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%d", i);
        r[i] = soc_tl_open(&ctx, id, TR_PID_NONE);
        assert_non_null(r[i]);
        rh[i] = h(id);
        size_t nf = follows_of(i, 0, fo);
        for (size_t k = 0; k < nf; k++) {
            char au[16];
            snprintf(au, sizeof au, "a%d", fo[k]);
            assert_int_equal(soc_tl_follow(&ctx, r[i], au), 1);
        }
    }
    post_round(&ctx, 1, rh, N); /* every author once: each reader gets its follows' posts */
    for (int i = 0; i < N; i++)
        assert_int_equal(soc_tl_count(&ctx, r[i]), follows_of(i, 0, fo));
    size_t live = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) { /* a third close; new readers take their memory */
            soc_tl_close(&ctx, r[i]);
            r[i] = NULL;
            snprintf(id, sizeof id, "s%d", i);
            s[i] = soc_tl_open(&ctx, id, TR_PID_NONE);
            assert_non_null(s[i]);
            assert_int_equal(soc_tl_count(&ctx, s[i]), 0);
            size_t nf = follows_of(i, 1, fo);
            for (size_t k = 0; k < nf; k++) {
                char au[16];
                snprintf(au, sizeof au, "a%d", fo[k]);
                assert_int_equal(soc_tl_follow(&ctx, s[i], au), 1);
            }
            rh[live++] = h(id);
        } else {
            snprintf(id, sizeof id, "r%d", i);
            rh[live++] = h(id);
        }
    }
    post_round(&ctx, 1000, rh, live);
    char got[256];
    for (int i = 0; i < N; i++) {
        if (r[i] != NULL) {
            size_t nf = follows_of(i, 0, fo);
            assert_int_equal(soc_tl_count(&ctx, r[i]), 2 * nf);
            page(&ctx, r[i], 0, "", got, sizeof got); /* newest first: round 2, then round 1 */
            char want[256] = "";
            for (size_t k = 0, l = 0; k < 2 * nf && k < 16; k++) {
                int a = fo[nf - 1 - (k % nf)];
                l += (size_t)snprintf(want + l, sizeof want - l, "%s%llu", k ? "," : "",
                                      (unsigned long long)((k < nf ? 1000u : 1u) + (unsigned)a));
            }
            assert_string_equal(got, want);
        } else {
            assert_int_equal(soc_tl_count(&ctx, s[i]), follows_of(i, 1, fo));
        }
    }
    soc_tl_unfollow(&ctx, r[100], "a7"); /* a large set shrinks; its two posts leave */
    assert_int_equal(soc_tl_count(&ctx, r[100]), 298);
    soc_tl_celeb(&ctx, r[101], "a9", true); /* the celebrity set, allocated here too */
    soc_tl_celeb(&ctx, r[101], "a9", false);
    assert_int_equal(soc_tl_count(&ctx, r[101]), follows_of(101, 0, fo) * 2 - (101 % 13 == 9 ? 2 : 0));
    uint64_t tls, entries, bytes;
    social_timeline_memory(&ctx, &tls, &entries, &bytes);
    assert_int_equal(tls, N);
    for (int i = 0; i < N; i++)
        soc_tl_close(&ctx, r[i] != NULL ? r[i] : s[i]);
    social_timeline_memory(&ctx, &tls, &entries, &bytes);
    assert_int_equal(tls + entries + bytes, 0);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0);
    social_ctx_free(&ctx);
}

/* Rings grow together (every reader of one author, post after post) through every size the
 * table keeps: the blocks they outgrow do not stay behind. The table ends near what its rings,
 * records and sets hold (pages emptied return to its pool and serve the next size); per-size free
 * lists that kept every outgrown block would hold ~3.4 KB more a timeline here (69 MB). */
static void test_rings_grow_together(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    enum { N = 20000, POSTS = 128 };
    static soc_tl *t[N];
    static uint64_t rh[N];
    open_readers(&ctx, "g", "star", N, t, rh);
    for (uint64_t k = 1; k <= POSTS; k++) {
        soc_post *p = post(&ctx, "star", k);
        assert_int_equal(soc_tl_fanout(&ctx, p, rh, N), N);
        soc_post_unref(&ctx, p);
    }
    uint64_t tls, entries, bytes;
    social_timeline_memory(&ctx, &tls, &entries, &bytes);
    assert_int_equal(entries, (uint64_t)N * POSTS);
    uint64_t table = social_timeline_table_bytes(&ctx);
    /* the rings (20.5 MB), records and sets (~3.2 MB), slot arrays, a partly used page per
     * stripe and size, and the pages of the last size they left, not all empty yet */
    printf("rings %llu bytes, table %llu bytes\n", (unsigned long long)bytes,
           (unsigned long long)table);
    assert_true(table < bytes * 3 / 2 + 16u * 1024 * 1024);
    for (int i = 0; i < N; i++)
        soc_tl_close(&ctx, t[i]);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0);
    social_ctx_free(&ctx);
}

/* A fan-out does not wait for a stripe another thread holds: it places the post in every other
 * reader's timeline first, and in the busy stripe's once it is free. Here a page read holds
 * reader R's stripe (social_timeline_read calls back under it) while the main thread fans a post
 * out to R and 40 readers of stripes above R's (1,024 stripes); the callback, still holding,
 * waits (at most ~5 s) to see the post in all 40, then lets go, and R gets it too. A fan-out that
 * waited for each stripe in stripe order (as it did) would wait at R's, the first, and place none
 * of the 40 meanwhile: the callback sees 0 and the test fails (it does not hang: nothing else is
 * held). */
typedef struct busy_arg {
    social_ctx *ctx;
    const char *reader;
    soc_tl **others;
    size_t n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool holding, read;
    size_t seen;                /* others holding the post, seen while R's stripe was held */
} busy_arg;

static void on_busy(void *arg, const social_post_view *v, size_t n, bool more)
{
    (void)v, (void)n, (void)more;
    busy_arg *b = arg;
    pthread_mutex_lock(&b->mu);
    b->holding = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int tries = 0; tries < 5000; tries++) {
        size_t seen = 0;
        for (size_t i = 0; i < b->n; i++)
            seen += soc_tl_count(b->ctx, b->others[i]) == 1;
        b->seen = seen;
        if (seen == b->n)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
}

static void *busy_reader(void *arg)
{
    busy_arg *b = arg;
    b->read = social_timeline_read(b->ctx, b->reader, 0, "", 10, on_busy, b);
    return NULL;
}

static void test_fanout_passes_busy_stripes(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    enum { N = 40 };
    char id[32], rid[32];
    for (int k = 0;; k++) { /* a reader of one of the lower stripes */
        snprintf(rid, sizeof rid, "ua%d", k);
        if (h(rid) % 1024 < 512)
            break;
    }
    soc_tl *a = soc_tl_open(&ctx, rid, TR_PID_NONE);
    assert_non_null(a);
    assert_int_equal(soc_tl_follow(&ctx, a, "ux"), 1);
    soc_tl_servable(&ctx, a, true);
    soc_tl *o[N];
    uint64_t readers[N + 1];
    readers[0] = h(rid);
    for (int i = 0, k = 0; i < N; k++) { /* readers of stripes above it */
        snprintf(id, sizeof id, "o%d", k);
        if (h(id) % 1024 <= h(rid) % 1024)
            continue;
        o[i] = soc_tl_open(&ctx, id, TR_PID_NONE);
        assert_non_null(o[i]);
        assert_int_equal(soc_tl_follow(&ctx, o[i], "ux"), 1);
        readers[++i] = h(id);
    }
    busy_arg b = {.ctx = &ctx, .reader = rid, .others = o, .n = N};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, busy_reader, &b), 0);
    pthread_mutex_lock(&b.mu);
    while (!b.holding)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    soc_post *p = post(&ctx, "ux", 10);
    assert_int_equal(soc_tl_fanout(&ctx, p, readers, N + 1), N + 1);
    pthread_join(th, NULL);
    assert_true(b.read);
    assert_int_equal(b.seen, N);
    assert_int_equal(soc_tl_count(&ctx, a), 1);
    soc_post_unref(&ctx, p);
    soc_tl_close(&ctx, a);
    for (int i = 0; i < N; i++)
        soc_tl_close(&ctx, o[i]);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0);
    social_ctx_free(&ctx);
}

/* Two threads fan posts out to the same 3,000 readers at once (their batches meet on stripes and
 * pass busy ones by, to place there after): every reader ends with every post it follows, once,
 * newest first, and every reference comes back. */
typedef struct race_arg {
    social_ctx *ctx;
    const uint64_t *readers;
    size_t n;
    uint64_t first;             /* this thread's posts: ts first, first + 2, ... */
    size_t placed;
} race_arg;

enum { RACE_READERS = 3000, RACE_POSTS = 60 };

static void *race_fanout(void *arg)
{
    race_arg *r = arg;
    for (uint64_t k = 0; k < RACE_POSTS; k++) {
        char id[64];
        int n = snprintf(id, sizeof id, "rx.%llu", (unsigned long long)(r->first + 2 * k));
        soc_post *p = soc_post_new(r->ctx, id, (size_t)n, "rx", 2, "https://x/y", 11,
                                   r->first + 2 * k);
        if (p == NULL)
            return NULL;
        r->placed += soc_tl_fanout(r->ctx, p, r->readers, r->n);
        soc_post_unref(r->ctx, p);
    }
    return NULL;
}

static void test_fanout_race(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.timeline_cap = 800;
    static soc_tl *t[RACE_READERS];
    static uint64_t rh[RACE_READERS];
    open_readers(&ctx, "r", "rx", RACE_READERS, t, rh);
    race_arg ra = {&ctx, rh, RACE_READERS, 1, 0}, rb = {&ctx, rh, RACE_READERS, 2, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, race_fanout, &rb), 0);
    race_fanout(&ra);
    pthread_join(th, NULL);
    assert_int_equal(ra.placed, (size_t)RACE_READERS * RACE_POSTS);
    assert_int_equal(rb.placed, (size_t)RACE_READERS * RACE_POSTS);
    for (int i = 0; i < RACE_READERS; i++) {
        assert_int_equal(soc_tl_count(&ctx, t[i]), 2 * RACE_POSTS);
        soc_post *got[16];
        size_t avail;
        size_t n = soc_tl_page(&ctx, t[i], 0, "", 16, got, &avail);
        assert_int_equal(n, 16);
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(got[k]->ts, 2 * RACE_POSTS - k);
            soc_post_unref(&ctx, got[k]);
        }
    }
    for (int i = 0; i < RACE_READERS; i++)
        soc_tl_close(&ctx, t[i]);
    assert_int_equal(atomic_load(&ctx.stats.post_records), 0);
    social_ctx_free(&ctx);
}

/* A post record keeps the post as the HTTP API writes it, escaped. */
static void test_post_json(void **state)
{
    (void)state;
    static social_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    const char *url = "https://x/a\"b\\c";
    soc_post *p = soc_post_new(&ctx, "ua.7", 4, "ua", 2, url, strlen(url), 7);
    assert_non_null(p);
    assert_string_equal(p->json,
                        "{\"id\":\"ua.7\",\"user\":\"ua\",\"image_url\":\"https://x/a\\\"b\\\\c\","
                        "\"ts\":7}");
    assert_int_equal(p->json_len, strlen(p->json));
    soc_post_unref(&ctx, p);
    social_ctx_free(&ctx);
}

static void test_hset_membership(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 100; n++) {
        soc_hset s = {0};
        char id[32];
        for (size_t i = 0; i < n; i++) {
            snprintf(id, sizeof id, "m%zu", i);
            assert_int_equal(soc_hset_add(&s, id), 1);
        }
        for (size_t i = 0; i < n + 20; i++) {
            snprintf(id, sizeof id, "m%zu", i);
            assert_int_equal(soc_hset_has_hash(&s, h(id)), i < n);
        }
        assert_false(soc_hset_has_hash(&s, 0));
        assert_false(soc_hset_has_hash(&s, UINT64_MAX));
        soc_hset_free(&s);
    }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_table),
    cmocka_unit_test(test_merge_matches_inserts),
    cmocka_unit_test(test_table_grows),
    cmocka_unit_test(test_table_memory),
    cmocka_unit_test(test_rings_grow_together),
    cmocka_unit_test(test_fanout_passes_busy_stripes),
    cmocka_unit_test(test_fanout_race),
    cmocka_unit_test(test_post_json),
    cmocka_unit_test(test_hset_membership),
};

TT_MAIN_PLAIN(tests)
