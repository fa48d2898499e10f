/*
 * test_flashsale_actors.c — the order and email actors (actors/): many concurrent buyers on one
 * SKU never oversell, every confirmed order gets exactly one email file and rejected ones none,
 * the email rate stays within limit + burst in every sliding 1-s window, and an order actor
 * restarted from its journal has the same stock, sales and orders. The SMTP provider delivers to
 * a real SMTP peer (postfix's smtp-sink on loopback), and a failing one (refused connections, then
 * 4xx replies) loses nothing: every email arrives once the peer is back, after a bounded number
 * of attempts (the backoff).
 */
#include "test_util.h"
#include "test_peers.h"
#include "actors/email.h"
#include "actors/order.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

typedef struct placed {
    int64_t status;
    char id[96];
    uint64_t remaining;
} placed;

static placed place(tr_system *sys, tr_pid order, const char *user, uint64_t qty)
{
    tr_msg *m = tr_msg_new(ORDER_PLACE, 64);
    msgpack_pack_str(tr_msg_packer(m), strlen(user));
    msgpack_pack_str_body(tr_msg_packer(m), user, strlen(user));
    msgpack_pack_uint64(tr_msg_packer(m), qty);
    tr_msg *reply = NULL;
    placed p = {.status = -1};
    if (tr_system_call(sys, order, m, 30000, &reply) != TR_OK)
        return p;
    tr_reader r;
    const char *id;
    size_t il;
    tr_reader_init(&r, reply);
    if (tr_read_i64(&r, &p.status) == TR_OK && tr_read_str(&r, &id, &il) == TR_OK &&
        tr_read_u64(&r, &p.remaining) == TR_OK && il < sizeof p.id) {
        memcpy(p.id, id, il);
        p.id[il] = '\0';
    }
    tr_reader_done(&r);
    tr_msg_free(reply);
    return p;
}

static void get3(tr_system *sys, tr_pid order, uint32_t type, uint64_t arg, bool with_arg,
                 uint64_t out[3], size_t n)
{
    tr_msg *m = with_arg ? tt_msg_u64(type, arg) : tr_msg_new(type, 0);
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, order, m, 30000, &reply), TR_OK);
    assert_int_equal(tt_read_u64s(reply, n, out), TR_OK);
    tr_msg_free(reply);
}

/* ---- buyers -------------------------------------------------------------------------------- */

typedef struct buyer {
    tr_system *sys;
    tr_pid order;
    int id, n;
    int confirmed, sold_out, other;
    char ids[64][96];
} buyer;

static void *buyer_main(void *arg)
{
    buyer *b = arg;
    char user[32];
    snprintf(user, sizeof user, "user%d", b->id);
    for (int i = 0; i < b->n; i++) {
        placed p = place(b->sys, b->order, user, 1);
        if (p.status == ORDER_CONFIRMED) {
            if (b->confirmed < 64)
                snprintf(b->ids[b->confirmed], sizeof b->ids[0], "%s", p.id);
            b->confirmed++;
        } else if (p.status == ORDER_SOLD_OUT) {
            b->sold_out++;
        } else {
            b->other++;
        }
    }
    return NULL;
}

/* ---- emails -------------------------------------------------------------------------------- */

static pthread_mutex_t g_sent_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_sent_ns[1024];
static size_t g_nsent;

static void on_sent(void *user, const char *order_id, uint64_t t_ns)
{
    (void)user;
    (void)order_id;
    pthread_mutex_lock(&g_sent_lock);
    if (g_nsent < 1024)
        g_sent_ns[g_nsent++] = t_ns;
    pthread_mutex_unlock(&g_sent_lock);
}

static void test_no_oversell_and_one_email_per_order(void **state)
{
    (void)state;
    char db[128], maildir[128], newdir[160];
    snprintf(db, sizeof db, "%s/sale.db", g_dir);
    snprintf(maildir, sizeof maildir, "%s/mail", g_dir);
    snprintf(newdir, sizeof newdir, "%s/new", maildir);
    tr_system *sys = tt_system_workers(2);
    tr_store_opts so = {.path = db, .sync = TR_SYNC_NORMAL, .redeliver_ms = 10000};
    tr_store *s;
    char err[256];
    assert_int_equal(tr_store_open(sys, &so, &s, err, sizeof err), TR_OK);
    order_args oa = {.store = s, .sku = "s1", .email_queue = "email"};
    tr_pid order, email;
    assert_int_equal(tr_system_spawn(sys, &order_behaviour, &oa, &order), TR_OK);
    uint64_t v[3];
    get3(sys, order, ORDER_SET_STOCK, 100, true, v, 2);
    assert_int_equal(v[0], 100);
    /* bad requests */
    assert_int_equal(place(sys, order, "bad user\r\nBcc: x", 1).status, ORDER_INVALID);
    assert_int_equal(place(sys, order, "u", 0).status, ORDER_INVALID);
    assert_int_equal(place(sys, order, "u", ORDER_MAX_QTY + 1).status, ORDER_INVALID);
    /* 8 buyers x 50 tries for 100 units */
    buyer b[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        memset(&b[i], 0, sizeof b[i]);
        b[i] = (buyer){.sys = sys, .order = order, .id = i, .n = 50};
        assert_int_equal(pthread_create(&th[i], NULL, buyer_main, &b[i]), 0);
    }
    int confirmed = 0, sold_out = 0, other = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        confirmed += b[i].confirmed;
        sold_out += b[i].sold_out;
        other += b[i].other;
    }
    print_message("confirmed %d, sold out %d, other %d\n", confirmed, sold_out, other);
    assert_int_equal(confirmed, 100);
    assert_int_equal(sold_out, 300);
    assert_int_equal(other, 0);
    get3(sys, order, ORDER_GET, 0, false, v, 3);
    assert_int_equal(v[0], 100);
    assert_int_equal(v[1], 100);
    assert_int_equal(v[2], 0);
    /* a confirmed order is found; an unknown one is not (the first buyer that got one: which
     * buyers win is up to the scheduler) */
    const char *first = NULL;
    for (int i = 0; i < 8 && first == NULL; i++)
        if (b[i].confirmed > 0)
            first = b[i].ids[0];
    assert_non_null(first);
    tr_msg *m = tr_msg_new(ORDER_LOOKUP, 64);
    msgpack_pack_str(tr_msg_packer(m), strlen(first));
    msgpack_pack_str_body(tr_msg_packer(m), first, strlen(first));
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, order, m, 30000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 1);
    tr_msg_free(reply);
    m = tr_msg_new(ORDER_LOOKUP, 16);
    msgpack_pack_str(tr_msg_packer(m), 6);
    msgpack_pack_str_body(tr_msg_packer(m), "s1-999", 6);
    assert_int_equal(tr_system_call(sys, order, m, 30000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 0);
    tr_msg_free(reply);

    /* the emails: 50/s with a burst of 5, one file per confirmed order */
    email_stats st = {0};
    email_args ea = {.store = s, .queue = "email", .maildir = maildir,
                     .from = "Flash Sale <sale@flashsale.troupe>", .stats = &st,
                     .format = order_email_format,
                     .on_sent = on_sent};
    tr_spawn_opts sp = {.mailbox = {.limit = TR_LIMIT_TOKEN, .rate = 50, .burst = 5}};
    g_nsent = 0;
    assert_int_equal(tr_system_spawn_ex(sys, &email_behaviour, &ea, &sp, &email), TR_OK);
    TT_WAIT_FOR(atomic_load(&st.sent) == 100, TT_DEADLINE_MS);
    tt_sleep_ms(200);
    assert_int_equal(tt_count_files(newdir), 100);
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < b[i].confirmed && k < 64; k++) {
            char f[256];
            snprintf(f, sizeof f, "%s/%s.eml", newdir, b[i].ids[k]);
            FILE *fp = fopen(f, "r");
            assert_non_null(fp);
            char line[256];
            bool has_id = false;
            while (fgets(line, sizeof line, fp) != NULL)
                has_id |= strncmp(line, "Message-ID: <", 13) == 0 &&
                          strstr(line, b[i].ids[k]) != NULL;
            fclose(fp);
            assert_true(has_id);
        }
    /* the rate: in any sliding 1-s window at most rate + burst */
    pthread_mutex_lock(&g_sent_lock);
    size_t worst = 0;
    for (size_t i = 0; i < g_nsent; i++) {
        size_t k = i;
        while (k < g_nsent && g_sent_ns[k] - g_sent_ns[i] < 1000000000u)
            k++;
        if (k - i > worst)
            worst = k - i;
    }
    pthread_mutex_unlock(&g_sent_lock);
    print_message("100 emails at 50/s (burst 5): worst sliding 1-s window %zu\n", worst);
    assert_true(worst <= 55);
    /* restarted from its journal: same stock, sales and orders */
    tr_system_stop_actor(sys, order);
    TT_WAIT_FOR(!tr_system_alive(sys, order), TT_DEADLINE_MS);
    assert_int_equal(tr_system_spawn(sys, &order_behaviour, &oa, &order), TR_OK);
    get3(sys, order, ORDER_GET, 0, false, v, 3);
    assert_int_equal(v[0], 100);
    assert_int_equal(v[1], 100);
    /* an order's id, random tag included, is the same after the restart (the tag is in its event) */
    m = tr_msg_new(ORDER_LOOKUP, 128);
    tr_msg_put_str(m, first, strlen(first));
    assert_int_equal(tr_system_call(sys, order, m, 30000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 1);
    tr_msg_free(reply);
    size_t sl = 0;
    assert_true(order_id_parse(first, strlen(first), &sl));
    assert_int_equal(sl, 2); /* "s1" */
    assert_false(order_id_parse("s1-", 3, NULL));
    assert_false(order_id_parse("-12", 3, NULL));
    assert_true(order_id_parse("s1-1-0123", 9, &sl)); /* no tag: SKU "s1-1", N 123 */
    assert_int_equal(sl, 4);
    assert_int_equal(place(sys, order, "late", 1).status, ORDER_SOLD_OUT);
    get3(sys, order, ORDER_SET_STOCK, 101, true, v, 2); /* restock by one */
    placed p = place(sys, order, "late", 1);
    assert_int_equal(p.status, ORDER_CONFIRMED);
    assert_int_equal(p.remaining, 0);
    TT_WAIT_FOR(atomic_load(&st.sent) == 101, TT_DEADLINE_MS);
    tt_system_end(sys);
    tr_store_close(s);
}

/* ---- SMTP ---------------------------------------------------------------------------------- */

/* Counts the files in dir holding "Message-ID: <ORDER@flashsale.troupe>" for each of ids. */
static size_t sink_count_ids(const char *dir, char ids[][96], size_t nids)
{
    size_t found = 0;
    for (size_t i = 0; i < nids; i++) {
        char want[160];
        snprintf(want, sizeof want, "Message-ID: <%s@flashsale.troupe>", ids[i]);
        DIR *d = opendir(dir);
        struct dirent *de;
        bool hit = false;
        while (d != NULL && !hit && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char f[512], line[256];
            snprintf(f, sizeof f, "%s/%s", dir, de->d_name);
            FILE *fp = fopen(f, "r");
            while (fp != NULL && fgets(line, sizeof line, fp) != NULL)
                hit |= strncmp(line, want, strlen(want)) == 0;
            if (fp != NULL)
                fclose(fp);
        }
        if (d != NULL)
            closedir(d);
        found += hit;
    }
    return found;
}

typedef struct smtp_fixture {
    tr_system *sys;
    tr_store *store;
    tr_pid order, email;
    email_stats st;
    char sinkdir[128];
    char ids[16][96];
    size_t nids;
} smtp_fixture;

/* A store, an order actor with n confirmed orders (so n outbox items), a sink directory. */
static void smtp_fixture_open(smtp_fixture *f, const char *name, size_t n)
{
    char db[160];
    memset(f, 0, sizeof *f);
    snprintf(db, sizeof db, "%s/%s.db", g_dir, name);
    snprintf(f->sinkdir, sizeof f->sinkdir, "%s/%s-sink", g_dir, name);
    assert_int_equal(mkdir(f->sinkdir, 0755), 0);
    f->sys = tt_system_workers(2);
    tr_store_opts so = {.path = db, .sync = TR_SYNC_NORMAL, .redeliver_ms = 60000};
    char err[256];
    assert_int_equal(tr_store_open(f->sys, &so, &f->store, err, sizeof err), TR_OK);
    order_args oa = {.store = f->store, .sku = name, .email_queue = "email"};
    assert_int_equal(tr_system_spawn(f->sys, &order_behaviour, &oa, &f->order), TR_OK);
    uint64_t v[3];
    get3(f->sys, f->order, ORDER_SET_STOCK, n, true, v, 2);
    for (size_t i = 0; i < n && i < 16; i++) {
        placed p = place(f->sys, f->order, i % 2 ? "buyer@example.org" : "u1", 1);
        assert_int_equal(p.status, ORDER_CONFIRMED);
        snprintf(f->ids[f->nids++], sizeof f->ids[0], "%s", p.id);
    }
}

static void smtp_fixture_email(smtp_fixture *f, int port, unsigned retry_min, unsigned retry_max)
{
    static char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", port);
    email_args ea = {.store = f->store, .queue = "email", .provider = EMAIL_SMTP,
                     .smtp_url = url, .timeout_ms = 5000,
                     .from = "Flash Sale <sale@flashsale.troupe>", .stats = &f->st,
                     .format = order_email_format,
                     .retry_min_ms = retry_min, .retry_max_ms = retry_max};
    tr_spawn_opts sp = {.mailbox = {.limit = TR_LIMIT_TOKEN, .rate = 1000, .burst = 100}};
    assert_int_equal(tr_system_spawn_ex(f->sys, &email_behaviour, &ea, &sp, &f->email), TR_OK);
}

static void smtp_fixture_close(smtp_fixture *f)
{
    tt_system_end(f->sys);
    tr_store_close(f->store);
}

static void test_smtp_delivers_to_a_real_peer(void **state)
{
    (void)state;
    smtp_fixture f;
    smtp_fixture_open(&f, "smtp1", 12);
    int port = free_port();
    pid_t sink = sink_start(port, f.sinkdir, false);
    smtp_fixture_email(&f, port, 0, 0);
    TT_WAIT_FOR(atomic_load(&f.st.sent) == 12, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&f.st.sent), 12);
    assert_int_equal(atomic_load(&f.st.failed), 0);
    TT_WAIT_FOR(sink_count_ids(f.sinkdir, f.ids, f.nids) == 12, TT_DEADLINE_MS);
    assert_int_equal(sink_count_ids(f.sinkdir, f.ids, f.nids), 12);
    assert_int_equal(tt_count_files(f.sinkdir), 12);
    smtp_fixture_close(&f);
    sink_stop(sink, port);
}

static void test_smtp_failing_provider_loses_nothing(void **state)
{
    (void)state;
    smtp_fixture f;
    smtp_fixture_open(&f, "smtp2", 8);
    int port = free_port();
    /* nothing listens: every attempt is refused */
    uint64_t t0 = tt_now_ns();
    smtp_fixture_email(&f, port, 50, 200);
    TT_WAIT_FOR(atomic_load(&f.st.failed) >= 3 && atomic_load(&f.st.retrying) == 8,
                TT_DEADLINE_MS);
    assert_true(atomic_load(&f.st.failed) >= 3);
    assert_int_equal(atomic_load(&f.st.retrying), 8);
    assert_int_equal(atomic_load(&f.st.sent), 0);
    /* backing off: at most one attempt per retry_min_ms (50), not one per email per turn */
    uint64_t failed = atomic_load(&f.st.failed);
    uint64_t ms = (tt_now_ns() - t0) / 1000000u;
    print_message("refused: %llu attempts in %llu ms for 8 emails\n", (unsigned long long)failed,
                  (unsigned long long)ms);
    assert_true(failed <= 2 + ms / 50);
    /* a peer answering 4xx to RCPT TO: still failing, still nothing lost */
    pid_t sink = sink_start(port, f.sinkdir, true);
    TT_WAIT_FOR(atomic_load(&f.st.failed) >= failed + 2, TT_DEADLINE_MS);
    assert_true(atomic_load(&f.st.failed) >= failed + 2);
    assert_int_equal(atomic_load(&f.st.sent), 0);
    sink_stop(sink, port);
    /* (smtp-sink may dump the envelope of a rejected transaction, but no message reached it) */
    assert_int_equal(sink_count_ids(f.sinkdir, f.ids, f.nids), 0);
    /* the peer accepts again: all 8 arrive, the backoff resets */
    sink = sink_start(port, f.sinkdir, false);
    TT_WAIT_FOR(atomic_load(&f.st.sent) == 8, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&f.st.sent), 8);
    TT_WAIT_FOR(atomic_load(&f.st.retrying) == 0, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&f.st.retrying), 0);
    TT_WAIT_FOR(sink_count_ids(f.sinkdir, f.ids, f.nids) == 8, TT_DEADLINE_MS);
    assert_int_equal(sink_count_ids(f.sinkdir, f.ids, f.nids), 8);
    smtp_fixture_close(&f);
    sink_stop(sink, port);
}

static int setup(void **state)
{
    (void)state;
    return tt_tmpdir(g_dir, sizeof g_dir, "troupe-sale");
}

static int teardown(void **state)
{
    (void)state;
    return tt_rm_rf(g_dir);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_no_oversell_and_one_email_per_order),
    cmocka_unit_test(test_smtp_delivers_to_a_real_peer),
    cmocka_unit_test(test_smtp_failing_provider_loses_nothing),
};

int main(void)
{
    tt_apply_filter();
    return cmocka_run_group_tests_name("flashsale-actors", tests, setup, teardown);
}
