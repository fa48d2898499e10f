/*
 * nng_baseline.c — nng-baseline: what raw nng (Debian's libnng 1.5.2) does on TCP loopback with no
 * troupe in the way, so that troupe's remote figures can be read beside a floor.
 *
 *   nng-baseline pair-rtt [N] [--no-nodelay] [--aio]   PAIR1 ping-pong of 64-byte messages
 *   nng-baseline push-throughput [N] [--buf MSGS]      PUSH -> PULL, 64-byte messages one way
 *   nng-baseline stream-throughput [N]                 nng_stream, 64-byte records sent 4,096 at a
 *                                                      time (256 KiB writes)
 *   nng-baseline stream-rtt [N]                        nng_stream ping-pong of 64 bytes driven by
 *                                                      aio callbacks on both ends (troupe's
 *                                                      data path with nothing else: its floor)
 *   nng-baseline tcp-rtt [N]                           the same over plain blocking sockets (the
 *                                                      kernel's floor)
 *   nng-baseline beat-floor [SECONDS] [--epoll] [--ms-wait] the floor of an idle 100-node cluster with
 *                                                      monitors = 5 (scripts/idle-cluster): 100
 *                                                      processes on a ring, each dialing the 5
 *                                                      after it, and on multiples of 200 ms
 *                                                      writing a 40-byte beat to each of the 5
 *                                                      that dialed it and reading the 5 it
 *                                                      dialed, without waiting: nothing else.
 *                                                      Prints their CPU over SECONDS (30) as
 *                                                      idle-cluster does. --epoll: each
 *                                                      socket also in an epoll set, disarmed,
 *                                                      as nng holds its sockets; --ms-wait:
 *                                                      sleep in epoll_wait with a timeout in
 *                                                      whole ms, as a libuv loop does
 *
 * Both ends live in one process on 127.0.0.1, the far end in a second thread. pair-rtt keeps every
 * round-trip sample and sorts them for p50/p99. Switches that probe the floor: --no-nodelay turns
 * NNG_OPT_TCP_NODELAY off (nng turns it on by default); --aio uses one preallocated nng_aio and an
 * nng_msg per call on both ends instead of nng_send/nng_recv (which copy, and set up an aio on the
 * stack each call — in 1.5 that costs a getrandom() syscall); --buf sets the PUSH send buffer and
 * the PULL receive buffer (both 0 by default). Each mode prints one JSON line like troupe-bench and
 * one human line. Every loop is bounded in count and time: each nng call times out after 5 s and
 * the run gives up after 60 s. Errors print a message and exit 1 (bad arguments: 2).
 */
#include <getopt.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>
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
    fprintf(stderr, "nng-baseline: %s%s%s\n", what, rv ? ": " : "", rv ? nng_strerror(rv) : "");
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

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        fail("out of memory", 0);
    return p;
}

static nng_aio *new_aio(void)
{
    nng_aio *aio;
    check("aio alloc", nng_aio_alloc(&aio, NULL, NULL));
    nng_aio_set_timeout(aio, CALL_TIMEOUT_MS);
    return aio;
}

static void start_thread(pthread_t *th, void *(*fn)(void *), void *arg)
{
    if (pthread_create(th, NULL, fn, arg) != 0)
        fail("pthread_create failed", 0);
}

/* Listens on tcp://127.0.0.1:0 with s_listen, dials the bound port with s_dial (blocking) and
 * sets 5 s send/recv timeouts on both. *nodelay_default gets what nng would have used. */
static void connect_pair(nng_socket s_listen, nng_socket s_dial, bool nodelay,
                         bool *nodelay_default)
{
    nng_listener l;
    nng_dialer d;
    int port = 0;
    char url[64];
    nng_socket both[2] = {s_listen, s_dial};
    for (int i = 0; i < 2; i++) {
        check("recv timeout", nng_socket_set_ms(both[i], NNG_OPT_RECVTIMEO, CALL_TIMEOUT_MS));
        check("send timeout", nng_socket_set_ms(both[i], NNG_OPT_SENDTIMEO, CALL_TIMEOUT_MS));
    }
    check("listener", nng_listener_create(&l, s_listen, "tcp://127.0.0.1:0"));
    check("listener nodelay", nng_listener_set_bool(l, NNG_OPT_TCP_NODELAY, nodelay));
    check("listen", nng_listener_start(l, 0));
    check("bound port", nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port));
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    check("dialer", nng_dialer_create(&d, s_dial, url));
    check("dialer nodelay get", nng_dialer_get_bool(d, NNG_OPT_TCP_NODELAY, nodelay_default));
    check("dialer nodelay", nng_dialer_set_bool(d, NNG_OPT_TCP_NODELAY, nodelay));
    check("dial", nng_dialer_start(d, 0));
}

/* ---- pair-rtt ------------------------------------------------------------------------------ */

struct peer { /* the far end, in its own thread */
    nng_socket s;
    nng_stream *st;       /* stream-throughput */
    unsigned long long n; /* messages (bytes for a stream) to receive */
    bool echo, use_aio;
    double t_end;
};

/* One blocking message operation on a preallocated aio: sends msg if given, else receives. */
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
            nng_msg_free(msg); /* a failed send leaves the message with us */
        fail(what, rv);
    }
    return msg != NULL ? NULL : nng_aio_get_msg(aio);
}

/* The far end: receives n messages and, for pair-rtt, sends each one straight back. */
static void *peer_thread(void *arg)
{
    struct peer *p = arg;
    char buf[MSG_SIZE * 2];
    nng_aio *aio = p->use_aio ? new_aio() : NULL;
    for (unsigned long long i = 0; i < p->n; i++) {
        size_t sz = sizeof buf;
        if (aio != NULL) {
            nng_msg *m = aio_xfer(p->s, aio, NULL, "peer recv");
            sz = nng_msg_len(m);
            if (p->echo)
                aio_xfer(p->s, aio, m, "echo send");
            else
                nng_msg_free(m);
        } else {
            check("peer recv", nng_recv(p->s, buf, &sz, 0));
            if (p->echo)
                check("echo send", nng_send(p->s, buf, sz, 0));
        }
        if (sz != MSG_SIZE)
            fail("peer received a message of the wrong size", 0);
        if ((i & 1023) == 0)
            check_deadline(p->echo ? "pair-rtt echo" : "push-throughput pull", i, p->n);
    }
    p->t_end = now_s();
    if (aio != NULL)
        nng_aio_free(aio);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    return (*(const double *)a > *(const double *)b) - (*(const double *)a < *(const double *)b);
}

static void run_pair_rtt(unsigned long long n, bool nodelay, bool use_aio)
{
    nng_socket srv, cli;
    bool nodelay_default = false;
    unsigned long long warm = n / 10 < 1000 ? n / 10 : 1000; /* untimed round trips first */
    double *samples = xmalloc(n * sizeof *samples);
    char msg[MSG_SIZE], back[MSG_SIZE * 2];
    nng_aio *aio = use_aio ? new_aio() : NULL;
    pthread_t th;
    memset(msg, 'x', sizeof msg);
    check("pair1 open", nng_pair1_open(&srv));
    check("pair1 open", nng_pair1_open(&cli));
    connect_pair(srv, cli, nodelay, &nodelay_default);
    struct peer e = {.s = srv, .n = warm + n, .echo = true, .use_aio = use_aio};
    start_thread(&th, peer_thread, &e);
    double t0 = 0;
    for (unsigned long long i = 0; i < warm + n; i++) {
        if (i == warm)
            t0 = now_s();
        double a = now_s();
        size_t sz = sizeof back;
        if (aio != NULL) {
            nng_msg *m;
            check("msg alloc", nng_msg_alloc(&m, 0));
            check("msg append", nng_msg_append(m, msg, sizeof msg));
            aio_xfer(cli, aio, m, "send");
            m = aio_xfer(cli, aio, NULL, "recv");
            sz = nng_msg_len(m);
            nng_msg_free(m);
        } else {
            check("send", nng_send(cli, msg, sizeof msg, 0));
            check("recv", nng_recv(cli, back, &sz, 0));
        }
        double b = now_s();
        if (sz != MSG_SIZE)
            fail("echoed message has the wrong size", 0);
        if (i >= warm)
            samples[i - warm] = (b - a) * 1e6;
        if (b > g_deadline)
            check_deadline("pair-rtt", i, warm + n);
    }
    double secs = now_s() - t0, rate = (double)n / secs;
    pthread_join(th, NULL);
    nng_close(cli);
    nng_close(srv);
    if (aio != NULL)
        nng_aio_free(aio);
    qsort(samples, n, sizeof *samples, cmp_double);
    double p50 = samples[n / 2], p99 = samples[n * 99 / 100];
    const char *style = use_aio ? "aio" : "blocking";
    printf("{\"bench\":\"nng-pair-rtt\",\"value\":%.0f,\"unit\":\"round trips/s\",\"p50_us\":%.1f,"
           "\"p99_us\":%.1f,\"count\":%llu,\"seconds\":%.3f,\"nodelay\":%s,\"style\":\"%s\"}\n",
           rate, p50, p99, n, secs, nodelay ? "true" : "false", style);
    printf("# nng-pair-rtt %10.0f round trips/s  p50 %.1f us  p99 %.1f us  (%llu in %.3f s, "
           "nodelay %s [nng default %s], %s)\n",
           rate, p50, p99, n, secs, nodelay ? "on" : "off", nodelay_default ? "on" : "off", style);
    free(samples);
}

/* ---- push-throughput ----------------------------------------------------------------------- */

static void run_push_throughput(unsigned long long n, int buf)
{
    nng_socket push, pull;
    bool nodelay_default;
    char msg[MSG_SIZE];
    pthread_t th;
    memset(msg, 'x', sizeof msg);
    check("pull0 open", nng_pull0_open(&pull));
    check("push0 open", nng_push0_open(&push));
    check("push send buffer", nng_socket_set_int(push, NNG_OPT_SENDBUF, buf));
    check("pull recv buffer", nng_socket_set_int(pull, NNG_OPT_RECVBUF, buf));
    connect_pair(pull, push, true, &nodelay_default);
    struct peer p = {.s = pull, .n = n};
    start_thread(&th, peer_thread, &p);
    double t0 = now_s();
    for (unsigned long long i = 0; i < n; i++) {
        check("push send", nng_send(push, msg, sizeof msg, 0));
        if ((i & 1023) == 0)
            check_deadline("push-throughput push", i, n);
    }
    pthread_join(th, NULL);
    double secs = p.t_end - t0, rate = (double)n / secs;
    nng_close(push);
    nng_close(pull);
    printf("{\"bench\":\"nng-push-throughput\",\"value\":%.0f,\"unit\":\"msgs/s\",\"count\":%llu,"
           "\"seconds\":%.3f,\"buffer\":%d}\n", rate, n, secs, buf);
    printf("# nng-push-throughput %10.0f msgs/s  (%llu x %d B in %.3f s, buffers %d)\n", rate, n,
           MSG_SIZE, secs, buf);
}

/* ---- stream-throughput --------------------------------------------------------------------- */

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
    if (nng_aio_count(aio) == 0)
        fail("stream operation moved 0 bytes", 0);
    return nng_aio_count(aio);
}

static void *sink_thread(void *arg)
{
    struct peer *k = arg;
    size_t cap = (size_t)BATCH_RECORDS * MSG_SIZE;
    char *buf = xmalloc(cap);
    nng_aio *aio = new_aio();
    unsigned long long got = 0, calls = 0;
    while (got < k->n) {
        size_t want = k->n - got < cap ? (size_t)(k->n - got) : cap;
        got += stream_xfer(k->st, aio, false, buf, want);
        if ((++calls & 63) == 0)
            check_deadline("stream-throughput sink (bytes)", got, k->n);
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
    nng_aio *acc = new_aio(), *dial = new_aio(), *aio = new_aio();
    int port = 0;
    char url[64];
    pthread_t th;
    size_t cap = (size_t)BATCH_RECORDS * MSG_SIZE;
    char *buf = xmalloc(cap);
    for (size_t i = 0; i < cap; i += MSG_SIZE) /* record i: 64 bytes of (i & 0xff) */
        memset(buf + i, (int)(i / MSG_SIZE) & 0xff, MSG_SIZE);
    check("stream listener", nng_stream_listener_alloc(&l, "tcp://127.0.0.1:0"));
    check("stream listen", nng_stream_listener_listen(l));
    check("stream bound port", nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port));
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    check("stream dialer", nng_stream_dialer_alloc(&d, url));
    nng_stream_listener_accept(l, acc);
    nng_stream_dialer_dial(d, dial);
    nng_aio_wait(dial);
    nng_aio_wait(acc);
    check("stream dial", nng_aio_result(dial));
    check("stream accept", nng_aio_result(acc));
    nng_stream *tx = nng_aio_get_output(dial, 0);
    struct peer k = {.st = nng_aio_get_output(acc, 0), .n = n * MSG_SIZE};
    start_thread(&th, sink_thread, &k);
    double t0 = now_s();
    unsigned long long sent = 0, calls = 0;
    while (sent < k.n) {
        size_t off = (size_t)(sent % cap); /* a short write resumes mid-batch */
        size_t want = k.n - sent < cap - off ? (size_t)(k.n - sent) : cap - off;
        sent += stream_xfer(tx, aio, true, buf + off, want);
        if ((++calls & 63) == 0)
            check_deadline("stream-throughput send (bytes)", sent, k.n);
    }
    pthread_join(th, NULL);
    double secs = k.t_end - t0, mbs = (double)k.n / secs / 1e6, rate = (double)n / secs;
    nng_stream_free(tx); /* free closes */
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
           "%llu sends, %.3f s)\n", mbs, rate, n, MSG_SIZE, cap, calls, secs);
}

/* ---- stream-rtt and tcp-rtt ---------------------------------------------------------------- */

static void print_rtt(const char *name, double *us, unsigned long long n, double secs)
{
    qsort(us, n, sizeof *us, cmp_double);
    double sum = 0;
    for (unsigned long long i = 0; i < n; i++)
        sum += us[i];
    double p50 = us[n / 2], p99 = us[n * 99 / 100], mean = sum / (double)n;
    printf("{\"bench\":\"%s\",\"value\":%.0f,\"unit\":\"round trips/s\",\"count\":%llu,"
           "\"seconds\":%.3f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f}\n", name,
           (double)n / secs, n, secs, p50, p99, mean);
    printf("# %-17s %8.0f round trips/s  p50 %.1f us  p99 %.1f us  mean %.1f us  (%llu in %.3f s)\n",
           name, (double)n / secs, p50, p99, mean, n, secs);
}

/* One end of a stream ping-pong: every step is started from the previous one's callback, as
 * troupe's connections do (a receive completes on an nng thread, which writes the answer). */
typedef struct rtt_end {
    nng_stream *st;
    nng_aio *rx, *tx;
    char buf[MSG_SIZE];
    size_t moved;
    bool client;
    unsigned long long i, n;
    double t0, *us;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done; /* 1 finished, -1 failed */
} rtt_end;

static void rtt_finish(rtt_end *e, int how)
{
    pthread_mutex_lock(&e->lock);
    e->done = how;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

static void rtt_step(rtt_end *e, nng_aio *aio, bool send)
{
    nng_iov iov = {.iov_buf = e->buf + e->moved, .iov_len = MSG_SIZE - e->moved};
    if (nng_aio_set_iov(aio, 1, &iov) != 0) {
        rtt_finish(e, -1);
        return;
    }
    if (send)
        nng_stream_send(e->st, aio);
    else
        nng_stream_recv(e->st, aio);
}

static void rtt_on_tx(void *arg)
{
    rtt_end *e = arg;
    if (nng_aio_result(e->tx) != 0) {
        rtt_finish(e, e->client ? -1 : 1);
        return;
    }
    e->moved += nng_aio_count(e->tx);
    if (e->moved < MSG_SIZE) {
        rtt_step(e, e->tx, true);
        return;
    }
    e->moved = 0;
    rtt_step(e, e->rx, false);
}

static void rtt_on_rx(void *arg)
{
    rtt_end *e = arg;
    if (nng_aio_result(e->rx) != 0 || nng_aio_count(e->rx) == 0) {
        rtt_finish(e, e->client ? -1 : 1); /* the echo ends when the client closes */
        return;
    }
    e->moved += nng_aio_count(e->rx);
    if (e->moved < MSG_SIZE) {
        rtt_step(e, e->rx, false);
        return;
    }
    e->moved = 0;
    if (e->client) {
        double t = now_s();
        e->us[e->i++] = (t - e->t0) * 1e6;
        if (e->i == e->n || t > g_deadline) {
            rtt_finish(e, e->i == e->n ? 1 : -1);
            return;
        }
        e->t0 = t;
    }
    rtt_step(e, e->tx, true);
}

static void rtt_end_init(rtt_end *e, nng_stream *st, bool client, unsigned long long n)
{
    memset(e, 0, sizeof *e);
    e->st = st;
    e->client = client;
    e->n = n;
    memset(e->buf, 'x', sizeof e->buf);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    check("aio alloc", nng_aio_alloc(&e->rx, rtt_on_rx, e));
    check("aio alloc", nng_aio_alloc(&e->tx, rtt_on_tx, e));
    check("nodelay", nng_stream_set_bool(st, NNG_OPT_TCP_NODELAY, true));
}

static void run_stream_rtt(unsigned long long n)
{
    nng_stream_listener *l;
    nng_stream_dialer *d;
    nng_aio *acc = new_aio(), *dial = new_aio();
    int port = 0;
    char url[64];
    check("stream listener", nng_stream_listener_alloc(&l, "tcp://127.0.0.1:0"));
    check("stream listen", nng_stream_listener_listen(l));
    check("stream bound port", nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port));
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    check("stream dialer", nng_stream_dialer_alloc(&d, url));
    nng_stream_listener_accept(l, acc);
    nng_stream_dialer_dial(d, dial);
    nng_aio_wait(dial);
    nng_aio_wait(acc);
    check("stream dial", nng_aio_result(dial));
    check("stream accept", nng_aio_result(acc));
    static rtt_end cli, echo;
    rtt_end_init(&echo, nng_aio_get_output(acc, 0), false, 0);
    rtt_end_init(&cli, nng_aio_get_output(dial, 0), true, n);
    cli.us = xmalloc(n * sizeof *cli.us);
    rtt_step(&echo, echo.rx, false);
    double t0 = now_s();
    cli.t0 = t0;
    rtt_step(&cli, cli.tx, true);
    pthread_mutex_lock(&cli.lock);
    while (cli.done == 0)
        pthread_cond_wait(&cli.cond, &cli.lock);
    pthread_mutex_unlock(&cli.lock);
    double secs = now_s() - t0;
    if (cli.done < 0)
        fail("stream-rtt: a stream operation failed or the run took too long", 0);
    nng_stream_close(cli.st);
    nng_stream_close(echo.st);
    nng_aio_stop(cli.rx);
    nng_aio_stop(cli.tx);
    nng_aio_stop(echo.rx);
    nng_aio_stop(echo.tx);
    print_rtt("nng-stream-rtt", cli.us, n, secs);
    nng_aio_free(cli.rx);
    nng_aio_free(cli.tx);
    nng_aio_free(echo.rx);
    nng_aio_free(echo.tx);
    nng_stream_free(cli.st);
    nng_stream_free(echo.st);
    nng_aio_free(acc);
    nng_aio_free(dial);
    nng_stream_dialer_free(d);
    nng_stream_listener_free(l);
    free(cli.us);
}

static bool full_io(int fd, char *buf, size_t len, bool send)
{
    size_t done = 0;
    while (done < len) {
        ssize_t k = send ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);
        if (k <= 0)
            return false;
        done += (size_t)k;
    }
    return true;
}

static void *tcp_echo(void *arg)
{
    int fd = *(int *)arg;
    char buf[MSG_SIZE];
    while (full_io(fd, buf, sizeof buf, false) && full_io(fd, buf, sizeof buf, true))
        ;
    return NULL;
}

static void run_tcp_rtt(unsigned long long n)
{
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    struct timeval tv = {.tv_sec = CALL_TIMEOUT_MS / 1000};
    if (lfd < 0 || cfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&a, &al) != 0 ||
        connect(cfd, (struct sockaddr *)&a, sizeof a) != 0)
        fail("tcp-rtt: cannot connect on loopback", 0);
    int efd = accept(lfd, NULL, NULL);
    if (efd < 0)
        fail("tcp-rtt: accept failed", 0);
    int fds[] = {cfd, efd};
    for (int i = 0; i < 2; i++) {
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    pthread_t th;
    start_thread(&th, tcp_echo, &efd);
    double *us = xmalloc(n * sizeof *us), t0 = now_s();
    char buf[MSG_SIZE];
    memset(buf, 'x', sizeof buf);
    for (unsigned long long i = 0; i < n; i++) {
        double t = now_s();
        if (!full_io(cfd, buf, sizeof buf, true) || !full_io(cfd, buf, sizeof buf, false))
            fail("tcp-rtt: a read or write failed", 0);
        us[i] = (now_s() - t) * 1e6;
        if ((i & 1023) == 0)
            check_deadline("tcp-rtt", i, n);
    }
    double secs = now_s() - t0;
    shutdown(cfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(cfd);
    close(efd);
    close(lfd);
    print_rtt("tcp-rtt", us, n, secs);
    free(us);
}

/* ---- beat-floor ----------------------------------------------------------------------------- */

#define FLOOR_PROCS 100
#define FLOOR_K 5
#define FLOOR_BEAT_MS 200
#define FLOOR_SETTLE_S 3

static bool g_floor_epoll;   /* --epoll: each member's sockets in an epoll set, as nng's are */
static bool g_floor_ms_wait; /* --ms-wait: sleep as libuv does (epoll_wait, whole ms) */

/* One member: dials the K after it, accepts the K before it, then beats until killed (or the
 * deadline: bounded even if the parent dies). */
static void floor_member(int i, const int *lfd, const struct sockaddr_in *addr, double until)
{
    int out[FLOOR_K], in[FLOOR_K], one = 1;
    for (int k = 0; k < FLOOR_K; k++) {
        out[k] = socket(AF_INET, SOCK_STREAM, 0);
        if (out[k] < 0 || connect(out[k], (const struct sockaddr *)&addr[(i + 1 + k) % FLOOR_PROCS],
                                  sizeof addr[0]) != 0)
            _exit(1);
    }
    for (int k = 0; k < FLOOR_K; k++) {
        if ((in[k] = accept(lfd[i], NULL, NULL)) < 0)
            _exit(1);
        setsockopt(in[k], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    for (int j = 0; j < FLOOR_PROCS; j++)
        close(lfd[j]);
    if (g_floor_epoll) {
        /* as nng holds every socket: registered in its poller's epoll set, disarmed (events 0)
         * while nothing waits on it — the socket's wait queue then has a sleeper, and each
         * segment that arrives takes its lock */
        int ep = epoll_create1(0);
        for (int k = 0; k < 2 * FLOOR_K && ep >= 0; k++) {
            struct epoll_event ev = {.events = 0};
            (void)epoll_ctl(ep, EPOLL_CTL_ADD, k < FLOOR_K ? out[k] : in[k - FLOOR_K], &ev);
        }
    }
    char beat[40], buf[4096];
    memset(beat, 'b', sizeof beat);
    while (now_s() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        uint64_t next = (ms / FLOOR_BEAT_MS + 1) * FLOOR_BEAT_MS;
        if (g_floor_ms_wait) {
            /* as a libuv loop waits: epoll_wait with a timeout in whole ms from now, so each
             * process wakes at its own moment within the ms, not all at the same instant */
            static int wep = -1;
            if (wep < 0)
                wep = epoll_create1(0);
            struct epoll_event ev;
            (void)epoll_wait(wep, &ev, 1, (int)(next - ms));
        } else {
            ts.tv_sec = (time_t)(next / 1000u);
            ts.tv_nsec = (long)(next % 1000u) * 1000000L;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
        for (int k = 0; k < FLOOR_K; k++)
            (void)!send(in[k], beat, sizeof beat, MSG_DONTWAIT | MSG_NOSIGNAL);
        for (int k = 0; k < FLOOR_K; k++)
            (void)!recv(out[k], buf, sizeof buf, MSG_DONTWAIT);
    }
    _exit(0);
}

static unsigned long long proc_ticks(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t len = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[len] = '\0';
    const char *p = strrchr(line, ')'); /* fields after the command's name */
    unsigned long long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                            &st) != 2)
        return 0;
    return ut + st;
}

static void run_beat_floor(unsigned long long seconds)
{
    if (seconds > 600)
        fail("beat-floor: at most 600 seconds", 0);
    int lfd[FLOOR_PROCS];
    struct sockaddr_in addr[FLOOR_PROCS];
    for (int i = 0; i < FLOOR_PROCS; i++) {
        socklen_t al = sizeof addr[i];
        addr[i] = (struct sockaddr_in){.sin_family = AF_INET,
                                       .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        lfd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (lfd[i] < 0 || bind(lfd[i], (struct sockaddr *)&addr[i], sizeof addr[i]) != 0 ||
            listen(lfd[i], FLOOR_K) != 0 ||
            getsockname(lfd[i], (struct sockaddr *)&addr[i], &al) != 0)
            fail("beat-floor: cannot listen on loopback (1,000+ file descriptors needed)", 0);
    }
    double until = now_s() + FLOOR_SETTLE_S + (double)seconds + 5;
    pid_t pids[FLOOR_PROCS];
    fflush(stdout);
    for (int i = 0; i < FLOOR_PROCS; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            fail("beat-floor: fork failed", 0);
        if (pids[i] == 0)
            floor_member(i, lfd, addr, until);
    }
    for (int i = 0; i < FLOOR_PROCS; i++)
        close(lfd[i]);
    sleep(FLOOR_SETTLE_S);
    unsigned long long c0 = 0, c1 = 0;
    for (int i = 0; i < FLOOR_PROCS; i++)
        c0 += proc_ticks(pids[i]);
    double t0 = now_s();
    sleep((unsigned)seconds);
    for (int i = 0; i < FLOOR_PROCS; i++)
        c1 += proc_ticks(pids[i]);
    double secs = now_s() - t0;
    int alive = 0;
    for (int i = 0; i < FLOOR_PROCS; i++) {
        int st;
        alive += waitpid(pids[i], &st, WNOHANG) == 0;
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &st, 0);
    }
    if (alive != FLOOR_PROCS)
        fail("beat-floor: a member failed to set up (ports? file descriptors?)", 0);
    double pct = 100.0 * (double)(c1 - c0) / (double)sysconf(_SC_CLK_TCK) / secs;
    printf("{\"bench\":\"beat-floor\",\"procs\":%d,\"k\":%d,\"beat_ms\":%d,\"epoll\":%s,"
           "\"seconds\":%.1f,\"cpu_pct_of_one_core\":%.1f}\n",
           FLOOR_PROCS, FLOOR_K, FLOOR_BEAT_MS, g_floor_epoll ? "true" : "false", secs, pct);
    printf("# beat-floor: %d processes, %d beats out and %d reads each per %d ms%s: %.1f%% of one "
           "core over %.0f s\n",
           FLOOR_PROCS, FLOOR_K, FLOOR_K, FLOOR_BEAT_MS,
           g_floor_epoll ? ", sockets in an epoll set" : "", pct, secs);
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    unsigned long long n = 0;
    bool nodelay = true, use_aio = false;
    int buf = 0;
    const char *mode = "", *err = NULL;
    static const struct option longopts[] = {
        {"no-nodelay", no_argument, NULL, 'N'}, {"aio", no_argument, NULL, 'a'},
        {"buf", required_argument, NULL, 'b'},  {"help", no_argument, NULL, 'h'},
        {"epoll", no_argument, NULL, 'e'},      {"ms-wait", no_argument, NULL, 'w'},
        {NULL, 0, NULL, 0}};
    int opt;
    char *end;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'N': nodelay = false; break;
        case 'a': use_aio = true; break;
        case 'e': g_floor_epoll = true; break;
        case 'w': g_floor_ms_wait = true; break;
        case 'b':
            buf = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || buf < 0 || buf > 8192)
                err = "bad --buf (0..8192)";
            break;
        case 'h':
            mode = "help";
            break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'nng-baseline --help'.\n");
            return 2;
        }
    }
    /* MODE [N], before or after the options */
    if (optind < argc && strcmp(mode, "help") != 0)
        mode = argv[optind++];
    if (optind < argc && strcmp(mode, "help") != 0) {
        const char *a = argv[optind++];
        n = strtoull(a, &end, 10);
        if (*a < '0' || *a > '9' || *end != '\0' || n == 0 || n > MAX_COUNT)
            err = "bad count (1..100000000)";
    }
    if (optind < argc && strcmp(mode, "help") != 0)
        err = "too many arguments (MODE [N] and options)";
    g_deadline = now_s() + RUN_LIMIT_S;
    if (err != NULL) {
        fprintf(stderr, "nng-baseline: %s\n", err);
        return 2;
    } else if (strcmp(mode, "pair-rtt") == 0) {
        run_pair_rtt(n ? n : 100000, nodelay, use_aio);
    } else if (strcmp(mode, "push-throughput") == 0) {
        run_push_throughput(n ? n : 200000, buf);
    } else if (strcmp(mode, "stream-throughput") == 0) {
        run_stream_throughput(n ? n : 1000000);
    } else if (strcmp(mode, "stream-rtt") == 0) {
        run_stream_rtt(n ? n : 100000);
    } else if (strcmp(mode, "tcp-rtt") == 0) {
        run_tcp_rtt(n ? n : 100000);
    } else if (strcmp(mode, "beat-floor") == 0) {
        run_beat_floor(n ? n : 30);
    } else {
        bool help = strcmp(mode, "help") == 0;
        if (*mode != '\0' && !help)
            fprintf(stderr, "nng-baseline: unknown mode '%s'\n", mode);
        fprintf(help ? stdout : stderr, "usage: nng-baseline pair-rtt [N] [--no-nodelay] [--aio]\n"
                                        "       nng-baseline push-throughput [N] [--buf MSGS]\n"
                                        "       nng-baseline stream-throughput [N]\n"
                                        "       nng-baseline stream-rtt [N]\n"
                                        "       nng-baseline tcp-rtt [N]\n"
                                        "       nng-baseline beat-floor [SECONDS] [--epoll] [--ms-wait]\n");
        return help ? 0 : 2;
    }
    return 0;
}
