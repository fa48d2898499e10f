/*
 * test_gossip.c — the membership core (runtime/src/dist/gossip.c, white-box) in small simulated
 * clusters (bench/memsim.c: virtual time, so nothing here depends on the machine's speed): a
 * kill and a freeze detected within their bounds, no false down without loss (and none with a
 * little), what each side of a partition sees and how it heals, joins and rejoins with a higher
 * incarnation, leaving; and, on lone instances, the watched sets, strict decoding and bounds.
 */
#include "test_util.h"
#include "memsim.h"

#include <stdlib.h>
#include <string.h>

/* Defaults of the core: heartbeat 200 ms, down after 1,000 ms, suspect 400 ms before. */
#define DOWN_MS 1000u

static memsim *cluster(size_t n, double loss, uint64_t seed)
{
    memsim_opts o = {.nodes = n, .capacity = n + 4, .latency_ms = 1, .loss = loss, .seed = seed};
    memsim *s = memsim_new(&o);
    assert_non_null(s);
    memsim_run_until(s, 2000);
    return s;
}

/* Runs in 5 ms steps until `node` is seen in `st` by at least `want` nodes; the time it took,
 * or -1 after limit_ms. */
static long long until_seen(memsim *s, size_t node, tr_gossip_state st, size_t want,
                            uint64_t limit_ms)
{
    uint64_t t0 = memsim_now_ms(s);
    for (uint64_t t = t0; t <= t0 + limit_ms; t += 5) {
        memsim_run_until(s, t);
        if (memsim_seen(s, node, st) >= want)
            return (long long)(t - t0);
    }
    return -1;
}

static void test_no_false_downs_without_loss(void **state)
{
    (void)state;
    memsim *s = cluster(64, 0, 1);
    memsim_run_until(s, 62000);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_suspects, 0);
    assert_int_equal(st.false_downs, 0);
    /* idle: a beat to each of the K = 5 watchers, 5 / 0.2 s per node, and nothing else */
    double rate = (double)st.sent / 64.0 / 62.0;
    assert_true(rate > 23 && rate < 26);
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(memsim_seen(s, i, TR_GOSSIP_ALIVE), 63);
    memsim_free(s);
}

static void test_no_false_downs_with_some_loss(void **state)
{
    (void)state;
    memsim *s = cluster(64, 0.02, 7); /* 2% of messages lost: suspicions, refuted */
    memsim_run_until(s, 62000);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_downs, 0);
    memsim_free(s);
}

static void test_kill_detected(void **state)
{
    (void)state;
    memsim *s = cluster(40, 0, 2);
    memsim_kill(s, 7);
    /* its watchers' pings bounce (its sockets are closed): suspect at once, down after the
     * 400 ms in which it could have refuted; then gossip */
    long long first = until_seen(s, 7, TR_GOSSIP_DOWN, 1, 5000);
    assert_true(first >= 0 && first <= 400 + 200 + 50);
    long long all = until_seen(s, 7, TR_GOSSIP_DOWN, 39, 5000);
    assert_true(all >= 0 && all <= (long long)DOWN_MS);
    memsim_run_until(s, memsim_now_ms(s) + 5000);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_downs, 0);
    /* the ring closed over the gap: every running node is watched by 5 again */
    for (size_t i = 0; i < 40; i++) {
        if (i == 7)
            continue;
        tr_gossip_member w[TR_GOSSIP_MONITORS_MAX];
        assert_int_equal(tr__gossip_watched(memsim_node(s, i), w, TR_GOSSIP_MONITORS_MAX), 5);
        for (size_t k = 0; k < 5; k++)
            assert_string_not_equal(w[k].name, "n7");
    }
    memsim_free(s);
}

static void test_freeze_detected_and_rejoins(void **state)
{
    (void)state;
    memsim *s = cluster(40, 0, 3);
    uint64_t inc = tr__gossip_incarnation(memsim_node(s, 11));
    memsim_freeze(s, 11, true);
    /* nothing bounces: its watchers hear nothing for down_after_ms (counted from their last
     * ack, up to one heartbeat before the freeze) */
    long long first = until_seen(s, 11, TR_GOSSIP_DOWN, 1, 5000);
    assert_true(first >= (long long)DOWN_MS - 200 - 50 && first <= (long long)DOWN_MS + 50);
    long long all = until_seen(s, 11, TR_GOSSIP_DOWN, 39, 5000);
    assert_true(all >= 0 && all <= (long long)DOWN_MS + 1000);
    memsim_run_until(s, memsim_now_ms(s) + 3000);
    memsim_freeze(s, 11, false);
    /* thawed, it hears it was declared down and refutes with a higher incarnation */
    long long back = until_seen(s, 11, TR_GOSSIP_ALIVE, 39, 10000);
    assert_true(back >= 0 && back <= 2000);
    assert_true(tr__gossip_incarnation(memsim_node(s, 11)) > inc);
    tr_gossip_member m;
    assert_int_equal(tr__gossip_find(memsim_node(s, 0), "n11", &m), TR_OK);
    assert_int_equal(m.state, TR_GOSSIP_ALIVE);
    assert_true(m.incarnation > inc);
    /* and it did not take anyone down meanwhile (its own pause is not their silence) */
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_downs, 0);
    memsim_free(s);
}

static void test_partition_views_and_heal(void **state)
{
    (void)state;
    memsim *s = cluster(30, 0, 4);
    size_t minority[] = {2, 9, 16, 23, 28};
    for (size_t i = 0; i < 5; i++)
        memsim_side(s, minority[i], 1);
    memsim_run_until(s, memsim_now_ms(s) + 3000);
    /* the majority watches every minority node from somewhere: all down within ~down_after */
    assert_int_equal(memsim_pairs(s, 0, 1, TR_GOSSIP_DOWN), 25u * 5u);
    /* the minority walks the ring: each of its nodes declares the majority nodes that follow it
     * down, K at a time, one down_after_ms after another; 30 s is ample for 25 */
    memsim_run_until(s, memsim_now_ms(s) + 27000);
    assert_int_equal(memsim_pairs(s, 1, 0, TR_GOSSIP_DOWN), 5u * 25u);
    /* each side still sees itself whole */
    assert_int_equal(memsim_pairs(s, 0, 0, TR_GOSSIP_ALIVE), 25u * 24u);
    assert_int_equal(memsim_pairs(s, 1, 1, TR_GOSSIP_ALIVE), 5u * 4u);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_downs, 0);
    /* healed: down members are probed, refute, and anti-entropy settles the rest */
    memsim_heal(s);
    uint64_t t0 = memsim_now_ms(s);
    while (memsim_pairs(s, 0, 0, TR_GOSSIP_ALIVE) < 30u * 29u && memsim_now_ms(s) < t0 + 60000)
        memsim_run_until(s, memsim_now_ms(s) + 100);
    assert_int_equal(memsim_pairs(s, 0, 0, TR_GOSSIP_ALIVE), 30u * 29u);
    /* and the other side's verdicts took down no member that had stayed on this side: they come
     * from watchers held down here at that incarnation, so they are dropped and the member is
     * told (it refutes) */
    memsim_stats_get(s, &st);
    assert_int_equal(st.excused_downs, 0);
    assert_int_equal(st.false_downs, 0);
    memsim_free(s);
}

static void test_join_through_a_seed(void **state)
{
    (void)state;
    memsim *s = cluster(50, 0, 5);
    size_t j = memsim_join(s, 3);
    long long t = until_seen(s, j, TR_GOSSIP_ALIVE, 50, 5000);
    assert_true(t >= 0 && t <= 2000);
    size_t counts[4];
    assert_int_equal(tr__gossip_count(memsim_node(s, j), counts), 51);
    assert_int_equal(counts[TR_GOSSIP_ALIVE], 51);
    assert_true(tr__gossip_joined(memsim_node(s, j)));
    /* it watches 5 and is watched by 5, and those agree about it */
    tr_gossip_member w[TR_GOSSIP_MONITORS_MAX];
    size_t k = tr__gossip_watchers(memsim_node(s, j), w, TR_GOSSIP_MONITORS_MAX);
    assert_int_equal(k, 5);
    for (size_t i = 0; i < k; i++) {
        tr_gossip_member ww[TR_GOSSIP_MONITORS_MAX];
        size_t idx = (size_t)strtoul(w[i].name + 1, NULL, 10);
        size_t kk = tr__gossip_watched(memsim_node(s, idx), ww, TR_GOSSIP_MONITORS_MAX);
        bool found = false;
        for (size_t x = 0; x < kk; x++)
            found |= strcmp(ww[x].name, "n50") == 0;
        assert_true(found);
    }
    memsim_free(s);
}

static void test_rejoin_with_higher_incarnation(void **state)
{
    (void)state;
    memsim *s = cluster(30, 0, 6);
    memsim_kill(s, 4);
    assert_true(until_seen(s, 4, TR_GOSSIP_DOWN, 29, 5000) >= 0);
    memsim_run_until(s, memsim_now_ms(s) + 2000);
    memsim_restart(s, 4, 0); /* a new process: incarnation from the clock, above the old one */
    long long t = until_seen(s, 4, TR_GOSSIP_ALIVE, 29, 5000);
    assert_true(t >= 0 && t <= 2000);
    tr_gossip_member m;
    assert_int_equal(tr__gossip_find(memsim_node(s, 20), "n4", &m), TR_OK);
    assert_true(m.incarnation > 1);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_downs, 0);
    memsim_free(s);
}

static void test_leave(void **state)
{
    (void)state;
    memsim *s = cluster(30, 0, 8);
    /* the member last in ring order leaves: a seed's SYNC then ends with a left member, which
     * it leaves out (REGRESSION: the chunking loop never ended on such a table) */
    size_t last = 0;
    for (size_t i = 1; i < 30; i++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "n%zu", i);
        snprintf(b, sizeof b, "n%zu", last);
        if (tr__gossip_key(a) > tr__gossip_key(b))
            last = i;
    }
    tr__gossip_leave(memsim_node(s, last), memsim_now_ms(s));
    long long t = until_seen(s, last, TR_GOSSIP_LEFT, 29, 5000);
    assert_true(t >= 0 && t <= 1000);
    size_t j = memsim_join(s, last == 0 ? 1 : 0);
    assert_true(until_seen(s, j, TR_GOSSIP_ALIVE, 29, 5000) >= 0);
    size_t counts[4];
    tr__gossip_count(memsim_node(s, j), counts);
    assert_int_equal(counts[TR_GOSSIP_ALIVE], 30); /* all but the one that left, and itself */
    assert_int_equal(counts[TR_GOSSIP_LEFT], 0);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.false_downs, 0);
    memsim_free(s);
}

static void test_partition_of_one(void **state)
{
    (void)state;
    /* an isolated node: the others see it down within down_after_ms and some gossip; it walks
     * the ring, K members a down_after_ms, and meanwhile takes no one down for the others */
    memsim *s = cluster(40, 0, 9);
    memsim_side(s, 13, 1);
    long long t = until_seen(s, 13, TR_GOSSIP_DOWN, 39, 5000);
    assert_true(t >= 0 && t <= (long long)DOWN_MS + 1000);
    memsim_run_until(s, memsim_now_ms(s) + 20000);
    assert_int_equal(memsim_pairs(s, 1, 0, TR_GOSSIP_DOWN), 39u);
    assert_int_equal(memsim_pairs(s, 0, 0, TR_GOSSIP_ALIVE), 39u * 38u);
    memsim_heal(s);
    uint64_t t0 = memsim_now_ms(s);
    while (memsim_pairs(s, 0, 0, TR_GOSSIP_ALIVE) < 40u * 39u && memsim_now_ms(s) < t0 + 30000)
        memsim_run_until(s, memsim_now_ms(s) + 100);
    assert_int_equal(memsim_pairs(s, 0, 0, TR_GOSSIP_ALIVE), 40u * 39u);
    memsim_stats st;
    memsim_stats_get(s, &st);
    assert_int_equal(st.excused_downs, 0);
    assert_int_equal(st.false_downs, 0);
    memsim_free(s);
}

/* ---- lone instances ------------------------------------------------------------------------- */

typedef struct sent {
    size_t n;
    char to[8][80];
    uint8_t msg[8][4096];
    size_t len[8];
} sent;

static void capture(void *arg, const char *name, const char *addr, const void *msg, size_t len)
{
    (void)addr;
    sent *c = arg;
    if (c->n < 8 && len <= sizeof c->msg[0]) {
        snprintf(c->to[c->n], sizeof c->to[0], "%s", name);
        memcpy(c->msg[c->n], msg, len);
        c->len[c->n++] = len;
    }
}

static tr_gossip *lone(const char *name, sent *c, size_t max_members)
{
    tr_gossip_opts o = {.name = name, .addr = "tcp://127.0.0.1:1", .node_id = 2,
                        .incarnation = 10, .max_members = max_members, .send = capture,
                        .arg = c};
    tr_gossip *g = NULL;
    assert_int_equal(tr__gossip_new(&o, 0, &g), TR_OK);
    return g;
}

/* A lone instance "me" that knows 40 members m0..m39 (their names in names), loaded at time 0. */
static tr_gossip *lone_with_40(sent *c, char names[40][8])
{
    tr_gossip *g = lone("me", c, 0);
    tr_gossip_member ms[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], 8, "m%d", i);
        ms[i] = (tr_gossip_member){.name = names[i], .addr = "x", .incarnation = 1};
    }
    assert_int_equal(tr__gossip_load(g, 0, ms, 40), TR_OK);
    return g;
}

static void test_watched_are_ring_successors(void **state)
{
    (void)state;
    sent c = {0};
    char names[40][8];
    tr_gossip *g = lone_with_40(&c, names);
    /* the 5 members after "me" in hash order, in that order */
    uint64_t me = tr__gossip_key("me");
    tr_gossip_member w[TR_GOSSIP_MONITORS_MAX];
    assert_int_equal(tr__gossip_watched(g, w, TR_GOSSIP_MONITORS_MAX), 5);
    uint64_t prev = me;
    for (int k = 0; k < 5; k++) {
        uint64_t key = tr__gossip_key(w[k].name);
        /* no member's key lies strictly between the previous one and this one (mod 2^64) */
        for (int i = 0; i < 40; i++) {
            uint64_t x = tr__gossip_key(names[i]);
            assert_false(x - prev - 1 < key - prev - 1);
        }
        prev = key;
    }
    tr__gossip_free(g);
}

/* When a lone instance (nobody answers) that ticks every `step` ms declares watched members
 * down: the times of its first and of its sixth verdict. */
static void verdict_times(unsigned step, uint64_t *first, uint64_t *sixth)
{
    sent c = {0};
    char names[40][8];
    tr_gossip *g = lone_with_40(&c, names);
    *first = *sixth = 0;
    for (uint64_t t = 0; t <= 10000 && *sixth == 0; t += step) {
        c.n = 0;
        tr__gossip_tick(g, t);
        tr_gossip_stats st;
        tr__gossip_stats_get(g, &st);
        if (st.declared_down >= 1 && *first == 0)
            *first = t;
        if (st.declared_down >= 6)
            *sixth = t;
    }
    tr__gossip_free(g);
}

/* The deadlines' grace (gossip.h, "Down"): a member never heard since it became watched while
 * the ring was settling (here: the instance has just started) gets down_after_ms more; the
 * next member watched as the ring walks on past the ones declared down does not; and an
 * instance whose own ticks come late gives twice its lateness more. */
static void test_deadline_grace(void **state)
{
    (void)state;
    uint64_t first, sixth;
    verdict_times(10, &first, &sixth); /* punctual: down_after_ms 1,000 */
    print_message("ticks every 10 ms: first verdict at %llu ms, sixth at %llu ms\n",
                  (unsigned long long)first, (unsigned long long)sixth);
    assert_true(first >= 2000 && first < 2100); /* never heard, young: 2 * down_after_ms */
    assert_true(sixth >= first + 1000 && sixth < first + 1100); /* walked on to: 1 * */
    verdict_times(300, &first, &sixth); /* each tick ~100 ms past what the last asked for */
    print_message("ticks every 300 ms: first verdict at %llu ms, sixth at %llu ms\n",
                  (unsigned long long)first, (unsigned long long)sixth);
    assert_true(first >= 2300); /* and twice the lateness (150 ms past the slack) */
    assert_true(sixth >= first + 1300);
}

/* The first loaded member at or after key, in ring order (wrapping). */
static uint64_t first_at_or_after(const char names[][8], int n, uint64_t key)
{
    uint64_t best = 0, best_d = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        uint64_t x = tr__gossip_key(names[i]);
        if (x - key < best_d) {
            best_d = x - key;
            best = x;
        }
    }
    return best;
}

/* Gossip partners: the K watched, the K watchers, and fingers — the first member at 1/2, 1/4,
 * ... of the key space after this one while that span holds more than K members (200 members,
 * K = 5: 1/2 ... 1/32, five fingers); a round goes to fanout - 1 of them and to one member at
 * random. */
static void test_partners_are_ring_and_fingers(void **state)
{
    (void)state;
    sent c = {0};
    tr_gossip *g = lone("me", &c, 0);
    enum { N = 199 };
    static tr_gossip_member ms[N];
    static char names[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        ms[i] = (tr_gossip_member){.name = names[i], .addr = "x", .incarnation = 1};
    }
    assert_int_equal(tr__gossip_load(g, 0, ms, N), TR_OK);
    tr__gossip_tick(g, 0);
    tr_gossip_member p[TR_GOSSIP_PARTNERS_MAX], w[TR_GOSSIP_MONITORS_MAX];
    size_t np = tr__gossip_partners(g, p, TR_GOSSIP_PARTNERS_MAX);
    assert_true(np <= 5 + 5 + 5 && np >= 10);
    /* every watched member and every watcher is a partner */
    size_t nw = tr__gossip_watched(g, w, TR_GOSSIP_MONITORS_MAX);
    nw += tr__gossip_watchers(g, w + nw, TR_GOSSIP_MONITORS_MAX - nw);
    for (size_t i = 0; i < nw; i++) {
        bool found = false;
        for (size_t j = 0; j < np; j++)
            found |= strcmp(p[j].name, w[i].name) == 0;
        assert_true(found);
    }
    /* and each finger: the first member at 1/2^j of the ring after "me", j = 1..5 */
    uint64_t me = tr__gossip_key("me");
    for (unsigned j = 1; j <= 5; j++) {
        uint64_t want = first_at_or_after(names, N, me + (UINT64_C(1) << (64 - j)));
        bool found = false;
        for (size_t i = 0; i < np; i++)
            found |= tr__gossip_key(p[i].name) == want;
        assert_true(found);
    }
    /* a change gossiped (a member not watched here found unreachable: suspect): one round,
     * three messages, at least two of them to partners */
    const char *other = NULL;
    for (int i = 0; i < N && other == NULL; i++) {
        bool watched = false;
        for (size_t k = 0; k < 5; k++)
            watched |= strcmp(w[k].name, names[i]) == 0;
        if (!watched)
            other = names[i];
    }
    c.n = 0;
    tr__gossip_unreachable(g, 100, other);
    tr__gossip_tick(g, 100);
    size_t to_partners = 0, gossip = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (c.msg[i][1] != 3)
            continue; /* (GOSSIP is type 3; beats and pings are not counted) */
        gossip++;
        for (size_t j = 0; j < np; j++)
            if (strcmp(c.to[i], p[j].name) == 0) {
                to_partners++;
                break;
            }
    }
    assert_int_equal(gossip, 3);
    assert_true(to_partners >= 2);
    tr__gossip_free(g);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    sent c = {0}, d = {0};
    tr_gossip *a = lone("a", &c, 0), *b = lone("b", &d, 0);
    /* a JOIN from b (a seed-less instance joins nothing: make b's message by hand through a
     * real one) */
    const char *seed = "tcp://127.0.0.1:1";
    tr_gossip_opts o = {.name = "j", .addr = "tcp://127.0.0.1:2", .incarnation = 1,
                        .seeds = &seed, .nseeds = 1, .send = capture, .arg = &d};
    tr_gossip *j = NULL;
    assert_int_equal(tr__gossip_new(&o, 0, &j), TR_OK);
    tr__gossip_tick(j, 0);
    assert_int_equal(d.n, 1); /* JOIN to the seed */
    uint8_t *msg = d.msg[0];
    size_t len = d.len[0];
    /* every truncation is refused, nothing learnt */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(tr__gossip_receive(a, 1, NULL, msg, cut), TR_EBADMSG);
    assert_int_equal(tr__gossip_count(a, NULL), 1);
    /* a trailing byte too, and a sender that is not who the transport says */
    uint8_t longer[4096];
    memcpy(longer, msg, len);
    longer[len] = 0;
    assert_int_equal(tr__gossip_receive(a, 1, NULL, longer, len + 1), TR_EBADMSG);
    assert_int_equal(tr__gossip_receive(a, 1, "someone-else", msg, len), TR_EBADMSG);
    /* random bytes */
    uint64_t x = 12345;
    for (int r = 0; r < 2000; r++) {
        uint8_t junk[64];
        for (size_t i = 0; i < sizeof junk; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            junk[i] = (uint8_t)(x >> 56);
        }
        junk[0] = 1; /* the version, to get further */
        (void)tr__gossip_receive(a, 1, NULL, junk, (size_t)(x % sizeof junk));
    }
    assert_int_equal(tr__gossip_count(a, NULL), 1);
    /* the real one is taken, and answered with a SYNC */
    assert_int_equal(tr__gossip_receive(a, 1, "j", msg, len), TR_OK);
    assert_int_equal(tr__gossip_count(a, NULL), 2);
    assert_true(c.n >= 1);
    tr_gossip_stats st;
    tr__gossip_stats_get(a, &st);
    assert_true(st.bad >= len + 2);
    tr__gossip_free(j);
    tr__gossip_free(a);
    tr__gossip_free(b);
}

static void test_table_bounded(void **state)
{
    (void)state;
    sent c = {0};
    tr_gossip *g = lone("me", &c, 16);
    tr_gossip_member ms[100];
    char names[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        ms[i] = (tr_gossip_member){.name = names[i], .addr = "x", .incarnation = 1};
    }
    assert_int_equal(tr__gossip_load(g, 0, ms, 100), TR_OK);
    assert_int_equal(tr__gossip_count(g, NULL), 16);
    tr_gossip_stats st;
    tr__gossip_stats_get(g, &st);
    assert_int_equal(st.refused_full, 100 - 15);
    /* a malformed entry refuses the load whole */
    ms[3].name = "";
    assert_int_equal(tr__gossip_load(g, 0, ms, 100), TR_EINVAL);
    tr__gossip_free(g);
}

static void test_options_checked(void **state)
{
    (void)state;
    sent c = {0};
    tr_gossip *g = NULL;
    tr_gossip_opts o = {.name = "a", .send = capture, .arg = &c};
    o.monitors = TR_GOSSIP_MONITORS_MAX + 1;
    assert_int_equal(tr__gossip_new(&o, 0, &g), TR_EINVAL);
    o.monitors = 0;
    o.name = "";
    assert_int_equal(tr__gossip_new(&o, 0, &g), TR_EINVAL);
    o.name = "a";
    o.send = NULL;
    assert_int_equal(tr__gossip_new(&o, 0, &g), TR_EINVAL);
    o.send = capture;
    o.updates = TR_GOSSIP_MSG_UPDATES + 1;
    assert_int_equal(tr__gossip_new(&o, 0, &g), TR_EINVAL);
    assert_null(g);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_no_false_downs_without_loss),
    cmocka_unit_test(test_no_false_downs_with_some_loss),
    cmocka_unit_test(test_kill_detected),
    cmocka_unit_test(test_freeze_detected_and_rejoins),
    cmocka_unit_test(test_partition_views_and_heal),
    cmocka_unit_test(test_partition_of_one),
    cmocka_unit_test(test_join_through_a_seed),
    cmocka_unit_test(test_rejoin_with_higher_incarnation),
    cmocka_unit_test(test_leave),
    cmocka_unit_test(test_watched_are_ring_successors),
    cmocka_unit_test(test_deadline_grace),
    cmocka_unit_test(test_partners_are_ring_and_fingers),
    cmocka_unit_test(test_malformed_refused),
    cmocka_unit_test(test_table_bounded),
    cmocka_unit_test(test_options_checked),
};

TT_MAIN_PLAIN(tests)
