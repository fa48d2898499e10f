/*
 * test_node_tls.c — nodes over TLS (tr_node_opts.tls), in one process on 127.0.0.1: a three-node
 * cluster exchanging messages (order, request/reply, ping-pong) over TLS with mutual
 * authentication; peers refused for a certificate from another CA, an expired one, none at all
 * (a client written with nng's TLS, no certificate), a name that is not the host dialed, and
 * no TLS at all; verify = optional and none; the files checked at start (missing, a key others
 * can read, a key that is not the certificate's, no CA), each error naming its file.
 *
 * The certificates are made when the group starts, by scripts/make-certs (openssl) in a scratch
 * directory: nothing secret is committed, and nothing here expires with time.
 */
#include "test_nodes.h"
#include "test_util.h"
#include "troupe/node.h"

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TROUPE_MAKE_CERTS
#error "TROUPE_MAKE_CERTS must name scripts/make-certs"
#endif

enum { MSG_SEQ = 1, MSG_PING = 2, MSG_PONG = 3, MSG_ASK = 4 };

static char g_dir[128];

static _Atomic uint64_t g_received, g_out_of_order, g_pongs;

typedef struct sink_state {
    uint64_t next;
} sink_state;

/* Checks MSG_SEQ values arrive in order, answers pings and requests, counts pongs. */
static int sink_recv(tr_ctx *ctx, void *state, tr_msg *m)
{
    sink_state *s = state;
    switch (tr_msg_type(m)) {
    case MSG_SEQ: {
        uint64_t v = tt_read_u64(m);
        if (v != s->next)
            atomic_fetch_add(&g_out_of_order, 1);
        s->next = v + 1;
        atomic_fetch_add(&g_received, 1);
        break;
    }
    case MSG_PING:
        tr_send(ctx, (tr_pid)tt_read_u64(m), tt_msg_u64(MSG_PONG, 0));
        break;
    case MSG_PONG:
        atomic_fetch_add(&g_pongs, 1);
        break;
    case MSG_ASK:
        tr_reply(ctx, m, tt_msg_u64(MSG_ASK, tt_read_u64(m) + 1));
        break;
    default:
        break;
    }
    return 0;
}

static const tr_behaviour sink_b = {.name = "sink", .state_size = sizeof(sink_state),
                                    .receive = sink_recv};

/* ---- nodes with TLS ------------------------------------------------------------------------ */

typedef struct tnode {
    tr_system *sys;
    tr_node *node;
    char addr[64];
    char cert[192], key[192], ca[192];
    tr_node_tls tls;
} tnode;

/* TLS settings for a node using certificate NAME (NAME.pem / NAME.key of the scratch directory)
 * and trusting the CA file `ca` ("ca" or "other-ca"; NULL: none). */
static void tls_for(tnode *t, const char *name, const char *ca, tr_tls_verify verify)
{
    memset(&t->tls, 0, sizeof t->tls);
    snprintf(t->cert, sizeof t->cert, "%s/%s.pem", g_dir, name);
    snprintf(t->key, sizeof t->key, "%s/%s.key", g_dir, name);
    snprintf(t->ca, sizeof t->ca, "%s/%s.pem", g_dir, ca != NULL ? ca : "none");
    t->tls.cert = t->cert;
    t->tls.key = t->key;
    t->tls.ca = ca != NULL ? t->ca : NULL;
    t->tls.verify = verify;
}

/* Starts node `name` (id) with t->tls (tls: false for plain TCP), joining through `seed`. */
static int tnode_try(tnode *t, const char *name, uint16_t id, bool tls, const char *seed)
{
    t->sys = tt_node_system(id);
    tr_node_opts no = tt_node_opts(name, "cluster-secret", &seed, seed != NULL ? 1 : 0);
    no.tls = tls ? &t->tls : NULL;
    int rc = tr_node_start(t->sys, &no, &t->node);
    if (rc == TR_OK)
        snprintf(t->addr, sizeof t->addr, "%s", tr_node_address(t->node));
    else
        tt_system_end(t->sys);
    return rc;
}

static void tnode_up(tnode *t, const char *name, uint16_t id, bool tls, const char *seed)
{
    assert_int_equal(tnode_try(t, name, id, tls, seed), TR_OK);
}

static void tnode_end(tnode *t)
{
    tr_node_stop(t->node);
    tt_system_end(t->sys);
}

static bool sees(tnode *t, const char *peer)
{
    uint16_t id;
    return tr_node_lookup(t->node, peer, &id) == TR_OK;
}

static uint64_t tls_failed(tnode *t)
{
    tr_node_stats st;
    tr_node_stats_get(t->node, &st);
    return st.tls_failed;
}

/* ---- the group's certificates ---------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    if (tt_tmpdir(g_dir, sizeof g_dir, "troupe-tls") != 0)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash '%s' '%s' a b c > /dev/null", TROUPE_MAKE_CERTS, g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "scripts/make-certs failed (is openssl installed? scripts/bootstrap)\n");
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tt_rm_rf(g_dir);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* Three nodes, mutual TLS: a full mesh from one seed, 20,000 messages in order, request/reply,
 * and ping-pong between actors on every pair. */
static void test_cluster_over_tls(void **state)
{
    (void)state;
    atomic_store(&g_received, 0);
    atomic_store(&g_out_of_order, 0);
    atomic_store(&g_pongs, 0);
    tnode a, b, c;
    tls_for(&a, "a", "ca", TR_TLS_VERIFY_REQUIRED);
    tls_for(&b, "b", "ca", TR_TLS_VERIFY_REQUIRED);
    tls_for(&c, "c", "ca", TR_TLS_VERIFY_REQUIRED);
    tnode_up(&b, "b", 12, true, NULL);
    tnode_up(&a, "a", 11, true, b.addr);
    tnode_up(&c, "c", 13, true, b.addr);
    TT_WAIT_FOR(sees(&a, "b") && sees(&a, "c") && sees(&b, "a") && sees(&b, "c") &&
                    sees(&c, "a") && sees(&c, "b"),
                TT_DEADLINE_MS);
    tr_pid sa, sb, sc;
    assert_int_equal(tr_system_spawn(a.sys, &sink_b, NULL, &sa), TR_OK);
    assert_int_equal(tr_system_spawn(b.sys, &sink_b, NULL, &sb), TR_OK);
    assert_int_equal(tr_system_spawn(c.sys, &sink_b, NULL, &sc), TR_OK);
    /* order across the wire */
    const uint64_t n = tt_scale(20000, 2000);
    for (uint64_t i = 0; i < n; i++)
        while (tr_system_send(a.sys, sb, tt_msg_u64(MSG_SEQ, i)) == TR_EFULL)
            tt_sleep_ms(1);
    TT_WAIT_FOR(atomic_load(&g_received) == n, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&g_out_of_order), 0);
    /* request / reply */
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(c.sys, sa, tt_msg_u64(MSG_ASK, 41), 20000, &reply), TR_OK);
    assert_int_equal(tt_read_u64(reply), 42);
    tr_msg_free(reply);
    /* ping-pong on every pair: each sink pings the others (a ping carries whom to answer) */
    tr_pid all[3] = {sa, sb, sc};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            if (i != k)
                assert_int_equal(tr_system_send(i == 0 ? a.sys : i == 1 ? b.sys : c.sys, all[k],
                                                tt_msg_u64(MSG_PING, all[i])),
                                 TR_OK);
    TT_WAIT_FOR(atomic_load(&g_pongs) == 6, TT_DEADLINE_MS);
    assert_int_equal(tls_failed(&a) + tls_failed(&b) + tls_failed(&c), 0);
    tnode_end(&c);
    tnode_end(&a);
    tnode_end(&b);
}

/* Node x (certificate `cert`, trusting `ca`) and node b (a good certificate) never meet, in
 * either direction: x dialing b (b, accepting, refuses x's certificate — or x refuses b's), then
 * b dialing x. Each attempt is seen failing before the check that neither sees the other. */
static void refused_both_ways(const char *cert, const char *ca, tr_tls_verify verify)
{
    tnode b, x;
    tls_for(&b, "b", "ca", TR_TLS_VERIFY_REQUIRED);
    tls_for(&x, cert, ca, verify);
    /* x dials b */
    tnode_up(&b, "b", 22, true, NULL);
    tnode_up(&x, "x", 21, true, b.addr);
    TT_WAIT_FOR(tls_failed(&b) + tls_failed(&x) >= 2, TT_DEADLINE_MS);
    assert_false(sees(&b, "x"));
    assert_false(sees(&x, "b"));
    tnode_end(&x);
    tnode_end(&b);
    /* b dials x */
    tnode_up(&x, "x", 23, true, NULL);
    tnode_up(&b, "b", 24, true, x.addr);
    TT_WAIT_FOR(tls_failed(&b) >= 2, TT_DEADLINE_MS);
    assert_false(sees(&b, "x"));
    assert_false(sees(&x, "b"));
    tr_node_stats st;
    tr_node_stats_get(b.node, &st);
    assert_true(st.refused_auth >= 2); /* a handshake not done, counted there too */
    tnode_end(&b);
    tnode_end(&x);
}

/* A certificate from another CA: refused whether its holder trusts the cluster's CA (only b
 * refuses) or its own (both refuse). */
static void test_certificate_from_another_ca_refused(void **state)
{
    (void)state;
    refused_both_ways("rogue", "ca", TR_TLS_VERIFY_REQUIRED);
    refused_both_ways("rogue", "other-ca", TR_TLS_VERIFY_REQUIRED);
}

/* An expired certificate (signed by the cluster's CA): refused. Its node starts (with a warning):
 * the refusal is its peers'. */
static void test_expired_certificate_refused(void **state)
{
    (void)state;
    refused_both_ways("expired", "ca", TR_TLS_VERIFY_REQUIRED);
}

/* A TLS client written with nng: connects to port (verifying the node's certificate against the
 * cluster's CA), presenting certificate `cert` (NULL: none), and writes 4 bytes. Returns the
 * write's nng result: 0 when TLS let it through. */
static int tls_client(int port, const char *cert)
{
    char url[64], ca[192], pem[192], key[192];
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", port);
    snprintf(ca, sizeof ca, "%s/ca.pem", g_dir);
    nng_stream_dialer *d;
    assert_int_equal(nng_stream_dialer_alloc(&d, url), 0);
    nng_tls_config *cfg;
    assert_int_equal(nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT), 0);
    assert_int_equal(nng_tls_config_ca_file(cfg, ca), 0);
    if (cert != NULL) {
        snprintf(pem, sizeof pem, "%s/%s.pem", g_dir, cert);
        snprintf(key, sizeof key, "%s/%s.key", g_dir, cert);
        char both[8192];
        FILE *f1 = fopen(pem, "r"), *f2 = fopen(key, "r");
        assert_non_null(f1);
        assert_non_null(f2);
        size_t k = fread(both, 1, sizeof both / 2, f1);
        k += fread(both + k, 1, sizeof both / 2 - 1, f2);
        both[k] = '\0';
        fclose(f1);
        fclose(f2);
        char *cut = strstr(both, "-----END CERTIFICATE-----");
        assert_non_null(cut);
        char key_pem[4096];
        snprintf(key_pem, sizeof key_pem, "%s", cut + strlen("-----END CERTIFICATE-----\n"));
        cut[strlen("-----END CERTIFICATE-----\n")] = '\0';
        assert_int_equal(nng_tls_config_own_cert(cfg, both, key_pem, NULL), 0);
    }
    assert_int_equal(nng_tls_config_server_name(cfg, "127.0.0.1"), 0);
    assert_int_equal(nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg), 0);
    nng_tls_config_free(cfg);
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, 10000);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    assert_int_equal(nng_aio_result(aio), 0);
    nng_stream *s = nng_aio_get_output(aio, 0);
    /* a write drives the TLS handshake: a peer not let through fails it. What is written, a
     * zero-length frame, the node refuses itself once TLS has let it through. */
    uint8_t junk[4] = {0, 0, 0, 0};
    nng_iov iov = {.iov_buf = junk, .iov_len = sizeof junk};
    nng_aio_set_iov(aio, 1, &iov);
    nng_aio_set_timeout(aio, 10000);
    nng_stream_send(s, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    nng_stream_close(s);
    nng_stream_free(s);
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    return rv;
}

/* With verify = required, a dialer without a certificate is refused by TLS; with a good one its
 * bytes reach the node (which then drops it for a frame too short: the secret is still needed).
 * With verify = optional, no certificate is asked for: TLS lets it through. */
static void test_peer_without_certificate(void **state)
{
    (void)state;
    tnode b;
    tls_for(&b, "b", "ca", TR_TLS_VERIFY_REQUIRED);
    tnode_up(&b, "b", 32, true, NULL);
    assert_int_not_equal(tls_client(tr_node_port(b.node), NULL), 0);
    TT_WAIT_FOR(tls_failed(&b) == 1, TT_DEADLINE_MS);
    assert_int_equal(tls_client(tr_node_port(b.node), "a"), 0);
    tr_node_stats st;
    TT_WAIT_FOR((tr_node_stats_get(b.node, &st), st.refused_auth == 2), TT_DEADLINE_MS);
    assert_int_equal(st.tls_failed, 1); /* the second was dropped by troupe, not by TLS */
    tnode_end(&b);

    tls_for(&b, "b", "ca", TR_TLS_VERIFY_OPTIONAL);
    tnode_up(&b, "b", 33, true, NULL);
    assert_int_equal(tls_client(tr_node_port(b.node), NULL), 0);
    TT_WAIT_FOR((tr_node_stats_get(b.node, &st), st.refused_auth == 1), TT_DEADLINE_MS);
    assert_int_equal(st.tls_failed, 0);
    tnode_end(&b);
}

/* server_name: the acceptor's certificate must carry it; the test certificates name localhost
 * and 127.0.0.1, not "elsewhere.example". */
static void test_server_name(void **state)
{
    (void)state;
    tnode a, b;
    tls_for(&b, "b", "ca", TR_TLS_VERIFY_REQUIRED);
    tnode_up(&b, "b", 42, true, NULL);
    tls_for(&a, "a", "ca", TR_TLS_VERIFY_REQUIRED);
    a.tls.server_name = "elsewhere.example";
    tnode_up(&a, "a", 41, true, b.addr);
    TT_WAIT_FOR(tls_failed(&a) >= 1, TT_DEADLINE_MS);
    assert_false(sees(&a, "b"));
    tnode_end(&a);
    a.tls.server_name = "localhost";
    tnode_up(&a, "a", 43, true, b.addr);
    TT_WAIT_FOR(sees(&a, "b") && sees(&b, "a"), TT_DEADLINE_MS);
    tnode_end(&a);
    tnode_end(&b);
}

/* A node without TLS and a node with it never meet, whichever dials. */
static void test_plain_node_refused(void **state)
{
    (void)state;
    tnode b, p;
    tls_for(&b, "b", "ca", TR_TLS_VERIFY_REQUIRED);
    tnode_up(&b, "b", 52, true, NULL);
    tnode_up(&p, "p", 51, false, b.addr); /* plain dials TLS */
    TT_WAIT_FOR(tls_failed(&b) >= 1, TT_DEADLINE_MS);
    assert_false(sees(&b, "p"));
    assert_false(sees(&p, "b"));
    tnode_end(&p);
    tnode_end(&b);
    tnode_up(&p, "p", 53, false, NULL);
    tr_node_stats st;
    tnode_up(&b, "b", 54, true, p.addr); /* TLS dials plain */
    TT_WAIT_FOR((tr_node_stats_get(p.node, &st), st.refused_auth >= 1), TT_DEADLINE_MS);
    assert_false(sees(&b, "p"));
    assert_false(sees(&p, "b"));
    tnode_end(&b);
    tnode_end(&p);
}

/* verify = none: encryption only, no CA needed; the nodes meet whatever their certificates. */
static void test_verify_none(void **state)
{
    (void)state;
    tnode a, b;
    tls_for(&b, "b", NULL, TR_TLS_VERIFY_NONE);
    tls_for(&a, "rogue", NULL, TR_TLS_VERIFY_NONE);
    tnode_up(&b, "b", 62, true, NULL);
    tnode_up(&a, "a", 61, true, b.addr);
    TT_WAIT_FOR(sees(&a, "b") && sees(&b, "a"), TT_DEADLINE_MS);
    tnode_end(&a);
    tnode_end(&b);
}

/* ---- the files, checked at start ------------------------------------------------------------ */

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_log[4096];

static void capture(void *user, tr_log_level level, const char *component, const char *line)
{
    (void)user;
    (void)level;
    (void)component;
    pthread_mutex_lock(&g_log_lock);
    size_t k = strlen(g_log);
    snprintf(g_log + k, sizeof g_log - k, "%s\n", line);
    pthread_mutex_unlock(&g_log_lock);
}

/* Starts node "f" with t->tls, logs captured: its result; the log must hold `want` (if given). */
static int start_logged(tnode *t, const char *want)
{
    g_log[0] = '\0';
    tr_log_set(capture, NULL, TR_LOG_DEBUG);
    t->sys = tt_node_system(71);
    tr_node_opts no = tt_node_opts("f", "cluster-secret", NULL, 0);
    no.quiet = false;
    no.tls = &t->tls;
    int rc = tr_node_start(t->sys, &no, &t->node);
    if (rc == TR_OK)
        tr_node_stop(t->node);
    tt_system_end(t->sys);
    tr_log_set(NULL, NULL, TR_LOG_INFO);
    if (want != NULL && strstr(g_log, want) == NULL)
        fail_msg("expected \"%s\" in the log, got: %s", want, g_log);
    return rc;
}

static void test_bad_files_refused_at_start(void **state)
{
    (void)state;
    tnode t;
    char path[256], key[256];
    /* a certificate file missing */
    tls_for(&t, "a", "ca", TR_TLS_VERIFY_REQUIRED);
    snprintf(path, sizeof path, "%s/missing.pem", g_dir);
    t.tls.cert = path;
    assert_int_equal(start_logged(&t, path), TR_EINVAL);
    assert_non_null(strstr(g_log, "No such file"));
    /* the CA file missing, or not given while verifying */
    tls_for(&t, "a", "no-such-ca", TR_TLS_VERIFY_REQUIRED);
    assert_int_equal(start_logged(&t, "no-such-ca.pem"), TR_EINVAL);
    tls_for(&t, "a", NULL, TR_TLS_VERIFY_OPTIONAL);
    assert_int_equal(start_logged(&t, "no CA file given"), TR_EINVAL);
    /* a key others can read: refused (a copy, mode 0644) */
    tls_for(&t, "a", "ca", TR_TLS_VERIFY_REQUIRED);
    snprintf(key, sizeof key, "%s/open.key", g_dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && chmod 644 '%s'", t.key, key, key);
    assert_int_equal(system(cmd), 0);
    t.tls.key = key;
    assert_int_equal(start_logged(&t, "mode 644"), TR_EINVAL);
    assert_non_null(strstr(g_log, key));
    /* the same key, 0600: accepted */
    assert_int_equal(chmod(key, 0600), 0);
    assert_int_equal(start_logged(&t, NULL), TR_OK);
    /* a key that is not the certificate's */
    snprintf(key, sizeof key, "%s/b.key", g_dir);
    t.tls.key = key;
    assert_int_equal(start_logged(&t, "does not match"), TR_EINVAL);
    /* a file that is not what it should be: the key given as the certificate */
    tls_for(&t, "a", "ca", TR_TLS_VERIFY_REQUIRED);
    t.tls.cert = t.key;
    assert_int_equal(start_logged(&t, "no valid PEM certificate"), TR_EINVAL);
    /* an expired certificate of its own: the node starts, and says so */
    tls_for(&t, "expired", "ca", TR_TLS_VERIFY_REQUIRED);
    assert_int_equal(start_logged(&t, "expired on 2020-01-02"), TR_OK);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_cluster_over_tls),
    cmocka_unit_test(test_certificate_from_another_ca_refused),
    cmocka_unit_test(test_expired_certificate_refused),
    cmocka_unit_test(test_peer_without_certificate),
    cmocka_unit_test(test_server_name),
    cmocka_unit_test(test_plain_node_refused),
    cmocka_unit_test(test_verify_none),
    cmocka_unit_test(test_bad_files_refused_at_start),
};

int main(void)
{
    tt_apply_filter();
    return cmocka_run_group_tests_name("tests", tests, setup, teardown);
}
