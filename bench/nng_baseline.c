/*
 * nng_baseline.c — nng-baseline: what raw nng (Debian's libnng 1.5.2) does on TCP loopback, with no
 * troupe in the way, so that troupe's remote figures can be read beside a floor.
 *
 *   nng-baseline pair-rtt [N] [--no-nodelay] [--aio] [--cb]   PAIR1 ping-pong, 64-byte messages
 *   nng-baseline push-throughput [N]                          PUSH -> PULL, 64-byte messages
 *   nng-baseline stream-throughput [N]                        nng_stream, 64-byte records sent
 *                                                             4,096 at a time (256 KiB writes)
 *
 * Both ends live in one process on 127.0.0.1, the far end in a second thread. pair-rtt keeps every
 * round-trip sample and sorts them for p50/p99. Its switches probe the latency floor: --no-nodelay
 * turns NNG_OPT_TCP_NODELAY off (nng turns it on by default), --aio uses preallocated nng_aio and
 * nng_msg instead of nng_send/nng_recv (which copy and use an aio on the stack), --cb echoes from
 * an aio callback on nng's own threads instead of from a thread blocked in nng_recv (the client
 * side still follows --aio).
 * Each mode prints one JSON line like troupe-bench and one human line. Every loop is bounded in
 * count and in time: each call times out after 5 s and the whole run gives up after 60 s.
 */
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG_SIZE 64
#define CALL_TIMEOUT_MS 5000
#define RUN_LIMIT_S 60.0
#define BATCH_RECORDS 4096
#define MAX_COUNT 100000000ull

static double g_deadline; /* now_s() after which every loop gives up */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(const char *what, int rv)
{
    fprintf(stderr, "nng-baseline: %s: %s\n", what, rv ? nng_strerror(rv) : "failed");
    exit(1);
}

static void check(const char *what, int rv)
{
    if (rv != 0)
        fail(what, rv);
}

static void check_deadline(const char *what, unsigned long long done, unsigned long long n)
{
    if (now_s() > g_deadline) {
        fprintf(stderr, "nng-baseline: %s: gave up after %.0f s (%llu of %llu done)\n", what,
                RUN_LIMIT_S, done, n);
        exit(1);
    }
}

/* Listens on tcp://127.0.0.1:0 with s_listen and dials the bound port with s_dial (blocking). */
static void connect_pair(nng_socket s_listen, nng_socket s_dial, bool nodelay, bool *nodelay_seen)
{
    nng_listener l;
    nng_dialer d;
    int port = 0;
    char url[64];
    check("listener", nng_listener_create(&l, s_listen, "tcp://127.0.0.1:0"));
    check("listener nodelay", nng_listener_set_bool(l, NNG_OPT_TCP_NODELAY, nodelay));
    check("listen", nng_listener_start(l, 0));
    check("bound port", nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port));
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    check("dialer", nng_dialer_create(&d, s_dial, url));
    if (nodelay_seen != NULL) /* what nng would use if we did not say */
        check("dialer nodelay get", nng_dialer_get_bool(d, NNG_OPT_TCP_NODELAY, nodelay_seen));
    check("dialer nodelay", nng_dialer_set_bool(d, NNG_OPT_TCP_NODELAY, nodelay));
    check("dial", nng_dialer_start(d, 0));
}

static void set_timeouts(nng_socket s)
{
    check("recv timeout", nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, CALL_TIMEOUT_MS));
    check("send timeout", nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CALL_TIMEOUT_MS));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- pair-rtt ------------------------------------------------------------------------------ */

struct echo {
    nng_socket s;
    unsigned long long n; /* messages to echo */
    bool use_aio;
    nng_aio *aio; /* --cb: one aio that alternates recv and send */
    bool sending;
    unsigned long long done;
};

/* Sends msg back on a preallocated aio, or receives into one; returns the message (recv). */
static nng_msg *aio_xfer(nng_socket s, nng_aio *aio, nng_msg *msg, const char *what)
{
    if (msg != NULL) {
        nng_aio_set_msg(aio, msg);
        nng_send_aio(s, aio);
    } else {
        nng_recv_aio(s, aio);
    }
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    if (rv != 0) {
        if (msg != NULL)
            nng_msg_free(msg);
        fail(what, rv);
    }
    return msg != NULL ? NULL : nng_aio_get_msg(aio);
}

static void *echo_thread(void *arg)
{
    struct echo *e = arg;
    char buf[MSG_SIZE * 2];
    nng_aio *aio = NULL;
    if (e->use_aio) {
        check("echo aio", nng_aio_alloc(&aio, NULL, NULL));
        nng_aio_set_timeout(aio, CALL_TIMEOUT_MS);
    }
    for (unsigned long long i = 0; i < e->n; i++) {
        if (e->use_aio) {
            aio_xfer(e->s, aio, aio_xfer(e->s, aio, NULL, "echo recv"), "echo send");
        } else {
            size_t sz = sizeof buf;
            check("echo recv", nng_recv(e->s, buf, &sz, 0));
            check("echo send", nng_send(e->s, buf, sz, 0));
        }
        if ((i & 1023) == 0)
            check_deadline("echo", i, e->n);
    }
    if (aio != NULL)
        nng_aio_free(aio);
    return NULL;
}

/* --cb: runs on nng's threads; recv done -> send the same message back -> recv again. */
static void echo_cb(void *arg)
{
    struct echo *e = arg;
    int rv = nng_aio_result(e->aio);
    if (rv != 0) {
        if (e->sending)
            nng_msg_free(nng_aio_get_msg(e->aio));
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
            fail("echo callback", rv);
        return;
    }
    if (!e->sending) {
        e->sending = true;
        nng_aio_set_msg(e->aio, nng_aio_get_msg(e->aio));
        nng_send_aio(e->s, e->aio);
    } else if (++e->done < e->n) {
        e->sending = false;
        nng_recv_aio(e->s, e->aio);
    }
}

static void run_pair_rtt(unsigned long long n, bool nodelay, bool use_aio, bool use_cb)
{
    nng_socket srv, cli;
    bool nodelay_default = false;
    unsigned long long warm = n / 10 < 1000 ? n / 10 : 1000;
    double *samples = malloc(n * sizeof *samples);
    char msgbuf[MSG_SIZE], back[MSG_SIZE * 2];
    nng_aio *aio = NULL;
    pthread_t th;
    if (samples == NULL)
        fail("out of memory for samples", 0);
    memset(msgbuf, 'x', sizeof msgbuf);
    check("pair1 open", nng_pair1_open(&srv));
    check("pair1 open", nng_pair1_open(&cli));
    set_timeouts(srv);
    set_timeouts(cli);
    connect_pair(srv, cli, nodelay, &nodelay_default);
    struct echo e = {.s = srv, .n = warm + n, .use_aio = use_aio};
    if (use_cb) {
        check("echo aio", nng_aio_alloc(&e.aio, echo_cb, &e));
        nng_aio_set_timeout(e.aio, CALL_TIMEOUT_MS);
        nng_recv_aio(srv, e.aio);
    } else if (pthread_create(&th, NULL, echo_thread, &e) != 0) {
        fail("pthread_create", 0);
    }
    if (use_aio) {
        check("client aio", nng_aio_alloc(&aio, NULL, NULL));
        nng_aio_set_timeout(aio, CALL_TIMEOUT_MS);
    }
    double t0 = 0;
    for (unsigned long long i = 0; i < warm + n; i++) {
        if (i == warm)
            t0 = now_s();
        double a = now_s();
        if (aio != NULL) {
            nng_msg *m;
            check("msg alloc", nng_msg_alloc(&m, 0));
            check("msg append", nng_msg_append(m, msgbuf, sizeof msgbuf));
            aio_xfer(cli, aio, m, "send");
            m = aio_xfer(cli, aio, NULL, "recv");
            if (nng_msg_len(m) != MSG_SIZE)
                fail("echoed message has the wrong size", 0);
            nng_msg_free(m);
        } else {
            size_t sz = sizeof back;
            check("send", nng_send(cli, msgbuf, sizeof msgbuf, 0));
            check("recv", nng_recv(cli, back, &sz, 0));
            if (sz != MSG_SIZE)
                fail("echoed message has the wrong size", 0);
        }
        double b = now_s();
        if (i >= warm)
            samples[i - warm] = (b - a) * 1e6;
        if (b > g_deadline)
            check_deadline("pair-rtt", i, warm + n);
    }
    double secs = now_s() - t0;
    if (!use_cb)
        pthread_join(th, NULL);
    nng_close(cli);
    nng_close(srv);
    if (e.aio != NULL)
        nng_aio_free(e.aio);
    if (aio != NULL)
        nng_aio_free(aio);
    qsort(samples, n, sizeof *samples, cmp_double);
    double p50 = samples[n / 2], p99 = samples[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
    double rate = (double)n / secs;
    const char *style = use_cb ? (use_aio ? "aio, callback echo" : "blocking, callback echo")
                               : (use_aio ? "aio" : "blocking");
    printf("{\"bench\":\"nng-pair-rtt\",\"value\":%.0f,\"unit\":\"round trips/s\",\"p50_us\":%.1f,"
           "\"p99_us\":%.1f,\"count\":%llu,\"seconds\":%.3f,\"nodelay\":%s,\"style\":\"%s\"}\n",
           rate, p50, p99, n, secs, nodelay ? "true" : "false", style);
    printf("# nng-pair-rtt %10.0f round trips/s  p50 %.1f us  p99 %.1f us  (%llu in %.3f s, "
           "nodelay %s [nng default %s], %s)\n",
           rate, p50, p99, n, secs, nodelay ? "on" : "off", nodelay_default ? "on" : "off", style);
    free(samples);
}

/* ---- push-throughput ----------------------------------------------------------------------- */

struct pull {
    nng_socket s;
    unsigned long long n;
    double t_end;
};

static void *pull_thread(void *arg)
{
    struct pull *p = arg;
    char buf[MSG_SIZE * 2];
    for (unsigned long long i = 0; i < p->n; i++) {
        size_t sz = sizeof buf;
        check("pull recv", nng_recv(p->s, buf, &sz, 0));
        if (sz != MSG_SIZE)
            fail("pulled message has the wrong size", 0);
        if ((i & 1023) == 0)
            check_deadline("pull", i, p->n);
    }
    p->t_end = now_s();
    return NULL;
}

static void run_push_throughput(unsigned long long n)
{
    nng_socket push, pull;
    char msg[MSG_SIZE];
    pthread_t th;
    memset(msg, 'x', sizeof msg);
    check("pull0 open", nng_pull0_open(&pull));
    check("push0 open", nng_push0_open(&push));
    set_timeouts(pull);
    set_timeouts(push);
    connect_pair(pull, push, true, NULL);
    struct pull p = {.s = pull, .n = n};
    if (pthread_create(&th, NULL, pull_thread, &p) != 0)
        fail("pthread_create", 0);
    double t0 = now_s();
    for (unsigned long long i = 0; i < n; i++) {
        check("push send", nng_send(push, msg, sizeof msg, 0));
        if ((i & 1023) == 0)
            check_deadline("push", i, n);
    }
    pthread_join(th, NULL);
    double secs = p.t_end - t0, rate = (double)n / secs;
    nng_close(push);
    nng_close(pull);
    printf("{\"bench\":\"nng-push-throughput\",\"value\":%.0f,\"unit\":\"msgs/s\",\"count\":%llu,"
           "\"seconds\":%.3f}\n", rate, n, secs);
    printf("# nng-push-throughput %10.0f msgs/s  (%llu x %d B in %.3f s)\n", rate, n, MSG_SIZE,
           secs);
}

/* ---- stream-throughput --------------------------------------------------------------------- */

struct sink {
    nng_stream *st;
    unsigned long long bytes; /* to receive */
    double t_end;
};

/* One blocking stream operation on [buf, buf+len); returns the bytes moved (may be short). */
static size_t stream_xfer(nng_stream *st, nng_aio *aio, bool send, char *buf, size_t len)
{
    nng_iov iov = {.iov_buf = buf, .iov_len = len};
    check("aio iov", nng_aio_set_iov(aio, 1, &iov));
    if (send)
        nng_stream_send(st, aio);
    else
        nng_stream_recv(st, aio);
    nng_aio_wait(aio);
    check(send ? "stream send" : "stream recv", nng_aio_result(aio));
    return nng_aio_count(aio);
}

static void *sink_thread(void *arg)
{
    struct sink *k = arg;
    size_t cap = (size_t)BATCH_RECORDS * MSG_SIZE;
    char *buf = malloc(cap);
    nng_aio *aio;
    unsigned long long got = 0, calls = 0;
    if (buf == NULL)
        fail("out of memory", 0);
    check("sink aio", nng_aio_alloc(&aio, NULL, NULL));
    nng_aio_set_timeout(aio, CALL_TIMEOUT_MS);
    while (got < k->bytes) {
        size_t want = k->bytes - got < cap ? (size_t)(k->bytes - got) : cap;
        size_t r = stream_xfer(k->st, aio, false, buf, want);
        if (r == 0)
            fail("stream recv returned 0 bytes", 0);
        got += r;
        if ((++calls & 63) == 0)
            check_deadline("stream sink (bytes)", got, k->bytes);
    }
    k->t_end = now_s();
    nng_aio_free(aio);
    free(buf);
    return NULL;
}

static void run_stream_throughput(unsigned long long n)
{
    nng_stream_listener *l;
    nng_stream_dialer *d;
    nng_aio *acc, *dial, *aio;
    int port = 0;
    char url[64];
    pthread_t th;
    size_t cap = (size_t)BATCH_RECORDS * MSG_SIZE;
    char *buf = malloc(cap);
    if (buf == NULL)
        fail("out of memory", 0);
    for (size_t i = 0; i < cap; i += MSG_SIZE) /* record i: 64 bytes of (i & 0xff) */
        memset(buf + i, (int)(i / MSG_SIZE) & 0xff, MSG_SIZE);
    check("stream listener", nng_stream_listener_alloc(&l, "tcp://127.0.0.1:0"));
    check("stream listen", nng_stream_listener_listen(l));
    check("stream bound port", nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port));
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    check("stream dialer", nng_stream_dialer_alloc(&d, url));
    check("aio", nng_aio_alloc(&acc, NULL, NULL));
    check("aio", nng_aio_alloc(&dial, NULL, NULL));
    check("aio", nng_aio_alloc(&aio, NULL, NULL));
    nng_aio_set_timeout(acc, CALL_TIMEOUT_MS);
    nng_aio_set_timeout(dial, CALL_TIMEOUT_MS);
    nng_aio_set_timeout(aio, CALL_TIMEOUT_MS);
    nng_stream_listener_accept(l, acc);
    nng_stream_dialer_dial(d, dial);
    nng_aio_wait(dial);
    nng_aio_wait(acc);
    check("stream dial", nng_aio_result(dial));
    check("stream accept", nng_aio_result(acc));
    nng_stream *tx = nng_aio_get_output(dial, 0);
    struct sink k = {.st = nng_aio_get_output(acc, 0), .bytes = n * MSG_SIZE};
    if (pthread_create(&th, NULL, sink_thread, &k) != 0)
        fail("pthread_create", 0);
    double t0 = now_s();
    unsigned long long sent = 0, calls = 0;
    while (sent < k.bytes) {
        size_t off = (size_t)(sent % cap); /* a short write resumes mid-batch */
        size_t want = cap - off;
        if (k.bytes - sent < want)
            want = (size_t)(k.bytes - sent);
        sent += stream_xfer(tx, aio, true, buf + off, want);
        if ((++calls & 63) == 0)
            check_deadline("stream send (bytes)", sent, k.bytes);
    }
    pthread_join(th, NULL);
    double secs = k.t_end - t0;
    double mbs = (double)k.bytes / secs / 1e6, rate = (double)n / secs;
    nng_stream_close(tx);
    nng_stream_close(k.st);
    nng_stream_free(tx);
    nng_stream_free(k.st);
    nng_aio_free(aio);
    nng_aio_free(dial);
    nng_aio_free(acc);
    nng_stream_dialer_free(d);
    nng_stream_listener_free(l);
    free(buf);
    printf("{\"bench\":\"nng-stream-throughput\",\"value\":%.1f,\"unit\":\"MB/s\",\"records_per_s\":"
           "%.0f,\"count\":%llu,\"record_bytes\":%d,\"write_bytes\":%zu,\"seconds\":%.3f}\n",
           mbs, rate, n, MSG_SIZE, cap, secs);
    printf("# nng-stream-throughput %8.1f MB/s  %.0f records/s  (%llu x %d B, %zu-byte writes, "
           "%.3f s, %llu sends)\n", mbs, rate, n, MSG_SIZE, cap, secs, calls);
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: nng-baseline pair-rtt [N] [--no-nodelay] [--aio] [--cb]\n"
               "       nng-baseline push-throughput [N]\n"
               "       nng-baseline stream-throughput [N]\n");
}

int main(int argc, char **argv)
{
    unsigned long long n = 0;
    bool nodelay = true, use_aio = false, use_cb = false;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--no-nodelay") == 0) {
            nodelay = false;
        } else if (strcmp(argv[i], "--aio") == 0) {
            use_aio = true;
        } else if (strcmp(argv[i], "--cb") == 0) {
            use_cb = true;
        } else {
            n = strtoull(argv[i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || n == 0 || n > MAX_COUNT) {
                fprintf(stderr, "nng-baseline: bad count '%s' (1..%llu)\n", argv[i], MAX_COUNT);
                return 2;
            }
        }
    }
    g_deadline = now_s() + RUN_LIMIT_S;
    if (strcmp(argv[1], "pair-rtt") == 0) {
        run_pair_rtt(n ? n : 100000, nodelay, use_aio, use_cb);
    } else if (strcmp(argv[1], "push-throughput") == 0) {
        run_push_throughput(n ? n : 200000);
    } else if (strcmp(argv[1], "stream-throughput") == 0) {
        run_stream_throughput(n ? n : 1000000);
    } else {
        usage(argv[1][0] == '-' ? stdout : stderr);
        return argv[1][0] == '-' ? 0 : 2;
    }
    return 0;
}
