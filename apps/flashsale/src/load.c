/*
 * load.c — build/bin/flashsale-load: an open-loop load generator for the flash sale, with a report.
 *
 * Open loop: requests are due on a schedule (base_rate per second until sale_at, then sale_rate),
 * whether or not earlier ones were answered; each one's latency counts from the moment it was
 * due, so time spent waiting for a free connection is measured, not hidden (no coordinated
 * omission). A pool of keep-alive connections (libuv) carries them; requests due while every
 * connection is busy wait in a bounded queue (beyond it they are counted as not sent).
 *
 * At the end: requests by status, orders confirmed against the stock (a loud failure if more were
 * sold than there was), latency percentiles, emails sent per second (polled from
 * /emails/stats until none is pending, bounded) — as text on stdout, as JSON (--json FILE), and as a
 * PNG chart drawn by gnuplot (--png FILE; skipped with a note if gnuplot is not installed).
 */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <uv.h>

#define MAX_SECONDS 3600
#define QUEUE_MAX 200000u

typedef struct opts {
    const char *host;
    int port;
    double base_rate, sale_rate;
    double sale_at, duration;   /* seconds */
    unsigned users, skus, stock, conns;
    double email_wait;          /* seconds to wait for emails after the run */
    const char *json, *png;
    double max_p99_ms;          /* --max: the p99 bound (ms); 0 = one ordinary run */
    double max_start, max_step; /* --max: first rate, seconds per step */
    unsigned tick_us;           /* the schedule's step: requests due within one go out together */
    unsigned max_tries;         /* --max: a rate fails only after failing this many times running */
} opts;

typedef struct conn conn;

typedef struct run {
    opts o;
    uv_loop_t *loop;
    struct sockaddr_in addr;
    conn *conns;
    uint64_t t0;                /* ns */
    uint64_t scheduled, not_sent;
    uint64_t *due;              /* queue of due times (ring) */
    size_t qhead, qlen;
    uint64_t *lat;              /* latencies (us) of answered requests */
    size_t nlat, caplat;
    uint64_t status[600];
    uint64_t errors;
    uint64_t offered[MAX_SECONDS], confirmed[MAX_SECONDS];
    uv_poll_t tick;             /* on tick_fd: libuv's timers step in whole milliseconds */
    int tick_fd;                /* a timerfd firing every tick_us */
    uint64_t seed;
} run;

struct conn {
    uv_tcp_t tcp;
    uv_connect_t cr;
    run *r;
    bool up, busy, closed;
    uint64_t due;               /* the request in flight's scheduled time */
    char in[8192];
    size_t inlen;
    char out[512];
    uv_write_t w;
};

static run R;

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void conn_open(conn *c);

static void on_conn_closed(uv_handle_t *h)
{
    ((conn *)h->data)->closed = true; /* the tick reopens it */
}

/* Drops the connection (its request, if any, is counted by the caller). */
static void conn_drop(conn *c)
{
    c->busy = false;
    c->up = false;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void record(run *r, uint64_t due, int status)
{
    uint64_t now = now_ns();
    if (r->nlat == r->caplat) {
        size_t cap = r->caplat ? r->caplat * 2 : 65536;
        uint64_t *l = realloc(r->lat, cap * sizeof *l);
        if (l == NULL)
            return;
        r->lat = l;
        r->caplat = cap;
    }
    r->lat[r->nlat++] = now > due ? (now - due) / 1000 : 0;
    if (status > 0 && status < 600)
        r->status[status]++;
    size_t sec = (size_t)((now - r->t0) / 1000000000u);
    if (status == 201 && sec < MAX_SECONDS)
        r->confirmed[sec]++;
}

static void send_next(conn *c);

static void on_write(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status < 0) {
        c->r->errors++;
        record(c->r, c->due, 0);
        conn_drop(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)s;
    conn *c = h->data;
    *b = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof c->in - c->inlen));
}

/* One whole response in c->in: its status, and how many bytes it took (0: not yet whole). */
static size_t parse(conn *c, int *status)
{
    c->in[c->inlen < sizeof c->in ? c->inlen : sizeof c->in - 1] = '\0';
    char *end = strstr(c->in, "\r\n\r\n");
    if (end == NULL)
        return 0;
    size_t clen = 0;
    char *cl = strstr(c->in, "Content-Length: ");
    if (cl != NULL && cl < end)
        clen = strtoul(cl + 16, NULL, 10);
    size_t total = (size_t)(end + 4 - c->in) + clen;
    if (c->inlen < total)
        return 0;
    *status = 0;
    sscanf(c->in, "HTTP/1.1 %d", status);
    return total;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    conn *c = s->data;
    if (n < 0) {
        if (c->busy) {
            c->r->errors++;
            record(c->r, c->due, 0);
        }
        conn_drop(c);
        return;
    }
    c->inlen += (size_t)n;
    int status;
    size_t used = parse(c, &status);
    if (used == 0) {
        if (c->inlen == sizeof c->in) { /* an answer too big for us: count it, reconnect */
            c->r->errors++;
            record(c->r, c->due, 0);
            conn_drop(c);
        }
        return;
    }
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= used;
    if (!c->busy) { /* an answer to nothing we asked (e.g. a server closing an idle connection) */
        conn_drop(c);
        return;
    }
    record(c->r, c->due, status);
    c->busy = false;
    send_next(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn *c = req->data;
    if (status < 0) {
        conn_drop(c);
        return;
    }
    c->up = true;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    send_next(c);
}

static void conn_open(conn *c)
{
    memset(&c->tcp, 0, sizeof c->tcp);
    c->closed = false;
    uv_tcp_init(c->r->loop, &c->tcp);
    c->tcp.data = c;
    c->cr.data = c;
    c->inlen = 0;
    c->busy = false;
    uv_tcp_connect(&c->cr, &c->tcp, (const struct sockaddr *)&c->r->addr, on_connect);
}

/* Gives the oldest due request to c, if any. */
static void send_next(conn *c)
{
    run *r = c->r;
    if (!c->up || c->busy || r->qlen == 0)
        return;
    c->due = r->due[r->qhead];
    r->qhead = (r->qhead + 1) % QUEUE_MAX;
    r->qlen--;
    unsigned user = (unsigned)(xs(&r->seed) % r->o.users), sku = (unsigned)(xs(&r->seed) % r->o.skus);
    char body[128];
    int bl = snprintf(body, sizeof body, "{\"user\":\"u%u\",\"sku\":\"s%u\",\"qty\":1}", user, sku);
    int n = snprintf(c->out, sizeof c->out,
                     "POST /orders HTTP/1.1\r\nHost: sale\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     bl, body);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
    c->busy = true;
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        r->errors++;
        c->busy = false;
    }
}

static void tick_closed(uv_handle_t *h)
{
    run *r = h->data;
    close(r->tick_fd);
    r->tick_fd = -1;
}

/* Every tick (tick_us): make due what the schedule says, hand it to free connections. Requests
 * go out up to one tick after they were due, and that counts as latency; a finer tick lowers
 * the p50 but wakes this thread more often, and on a 2-core machine shared with the node that
 * raised the p99 (docs/performance.md), so the default stays 1 ms. */
static void on_tick(uv_poll_t *t, int status, int events)
{
    (void)status;
    (void)events;
    run *r = t->data;
    uint64_t expirations;
    if (read(r->tick_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        return;
    uint64_t now = now_ns();
    double el = (double)(now - r->t0) / 1e9;
    if (el >= r->o.duration) {
        bool idle = r->qlen == 0;
        for (unsigned i = 0; i < r->o.conns && idle; i++)
            idle = !r->conns[i].busy;
        if (idle || el > r->o.duration + 30) { /* answers still out get 30 s */
            uv_poll_stop(t);
            for (unsigned i = 0; i < r->o.conns; i++)
                if (!uv_is_closing((uv_handle_t *)&r->conns[i].tcp))
                    uv_close((uv_handle_t *)&r->conns[i].tcp, NULL);
            uv_close((uv_handle_t *)t, tick_closed);
        }
        return;
    }
    /* the number of requests due by now: the integral of the rate */
    double due_total = el < r->o.sale_at ? el * r->o.base_rate
                                         : r->o.sale_at * r->o.base_rate +
                                               (el - r->o.sale_at) * r->o.sale_rate;
    while ((double)(r->scheduled + 1) <= due_total) { /* request k is due at the k-th /rate */
        double k = (double)r->scheduled + 1;
        double at = k <= r->o.sale_at * r->o.base_rate
                        ? k / r->o.base_rate
                        : r->o.sale_at + (k - r->o.sale_at * r->o.base_rate) / r->o.sale_rate;
        uint64_t due = r->t0 + (uint64_t)(at * 1e9);
        r->scheduled++;
        size_t sec = (size_t)at;
        if (sec < MAX_SECONDS)
            r->offered[sec]++;
        if (r->qlen == QUEUE_MAX) {
            r->not_sent++;
            continue;
        }
        r->due[(r->qhead + r->qlen) % QUEUE_MAX] = due;
        r->qlen++;
    }
    for (unsigned i = 0; i < r->o.conns && r->qlen > 0; i++) {
        conn *c = &r->conns[i];
        if (c->closed)
            conn_open(c);
        send_next(c);
    }
}

/* ---- plain blocking HTTP for setup and the email poll --------------------------------------- */

static int simple_http(const opts *o, const char *method, const char *path, const char *body,
                       char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&R.addr, sizeof R.addr) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, o->host, body ? strlen(body) : 0, body ? body : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char buf[4096];
    size_t len = 0;
    ssize_t k;
    while (len + 1 < sizeof buf && (k = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)k;
    buf[len] = '\0';
    close(fd);
    int status = -1;
    sscanf(buf, "HTTP/1.1 %d", &status);
    const char *b = strstr(buf, "\r\n\r\n");
    if (out != NULL)
        snprintf(out, cap, "%s", b ? b + 4 : "");
    return status;
}

static uint64_t json_u64(const char *body, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(body, k);
    return p != NULL ? strtoull(p + strlen(k), NULL, 10) : 0;
}

/* Emails sent per second since the start, polled from /emails/stats once a second. */
static uint64_t g_emails[MAX_SECONDS];
static uint64_t g_email_sent, g_email_pending;
static double g_last_email_s;
static atomic_bool g_poll_stop;
static _Atomic uint64_t g_t0;  /* R.t0 for the poller thread */

static void poll_once(const opts *o)
{
    char body[512];
    if (simple_http(o, "GET", "/emails/stats", NULL, body, sizeof body) != 200)
        return;
    uint64_t sent = json_u64(body, "sent");
    double el = (double)(now_ns() - atomic_load(&g_t0)) / 1e9;
    size_t sec = (size_t)el;
    if (sent > g_email_sent && sec < MAX_SECONDS) {
        g_emails[sec] += sent - g_email_sent;
        g_last_email_s = el;
    }
    g_email_sent = sent;
    g_email_pending = json_u64(body, "pending");
}

static void *poller_main(void *arg)
{
    const opts *o = arg;
    while (!atomic_load(&g_poll_stop)) {
        poll_once(o);
        for (int i = 0; i < 10 && !atomic_load(&g_poll_stop); i++)
            usleep(100000);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Runs one open-loop phase on fresh connections: `base` requests/s, `sale` from `sale_at` s on,
 * for `duration` s (then up to 30 s for the answers still out). Resets the counters first. */
static void run_phase(double base, double sale, double sale_at, double duration)
{
    R.o.base_rate = base;
    R.o.sale_rate = sale;
    R.o.sale_at = sale_at;
    R.o.duration = duration;
    R.scheduled = R.not_sent = R.errors = 0;
    R.qhead = R.qlen = 0;
    R.nlat = 0;
    memset(R.status, 0, sizeof R.status);
    memset(R.offered, 0, sizeof R.offered);
    memset(R.confirmed, 0, sizeof R.confirmed);
    for (unsigned i = 0; i < R.o.conns; i++) {
        R.conns[i].r = &R;
        conn_open(&R.conns[i]);
    }
    /* the schedule starts once the connections are set up (or refused, at most 5 s): setting
     * them up is the generator's own start, not latency of the node's (the first requests
     * would otherwise wait for 256 connects and count it) */
    uint64_t give_up = now_ns() + 5000000000ull;
    for (;;) {
        unsigned settled = 0;
        for (unsigned i = 0; i < R.o.conns; i++)
            settled += R.conns[i].up || R.conns[i].closed;
        if (settled == R.o.conns || now_ns() >= give_up)
            break;
        uv_run(R.loop, UV_RUN_ONCE);
    }
    R.tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    unsigned us = R.o.tick_us;
    struct itimerspec its = {.it_interval = {.tv_sec = us / 1000000, .tv_nsec = us % 1000000 * 1000L}};
    its.it_value = its.it_interval;
    if (R.tick_fd < 0 || timerfd_settime(R.tick_fd, 0, &its, NULL) != 0 ||
        uv_poll_init(R.loop, &R.tick, R.tick_fd) != 0) {
        perror("flashsale-load: timerfd");
        exit(1);
    }
    R.tick.data = &R;
    R.t0 = now_ns();
    atomic_store(&g_t0, R.t0);
    uv_poll_start(&R.tick, UV_READABLE, on_tick);
    uv_run(R.loop, UV_RUN_DEFAULT);
}

static int cmp_u64(const void *a, const void *b);

/* The latency percentile p (0..1) of the last phase, in ms (R.lat sorted first: sort_lat). */
static double pct(double p)
{
    return R.nlat ? (double)R.lat[(size_t)((double)(R.nlat - 1) * p)] / 1000.0 : 0;
}

static void sort_lat(void)
{
    qsort(R.lat, R.nlat, sizeof *R.lat, cmp_u64);
}

/* --max: doubles the rate while each step is served (every request answered 201 or 409, none
 * left unsent, p99 under the bound), then bisects between the last served rate and the first
 * that was not, to within 5%. A rate that fails is tried again (max_tries in all) before it
 * counts as not served: on a machine shared with the node one slow second would otherwise cut
 * the search short. Prints each step and the result (and --json). */
static int find_max(const opts *o)
{
    double rate = o->max_start > 0 ? o->max_start : 1000, step = o->max_step > 0 ? o->max_step : 5;
    double good = 0, bad = 0, good_p50 = 0, good_p99 = 0;
    FILE *jf = o->json != NULL ? fopen(o->json, "w") : NULL;
    if (jf != NULL)
        fprintf(jf, "{\"p99_bound_ms\":%.3f,\"step_s\":%.1f,\"steps\":[", o->max_p99_ms, step);
    printf("== flashsale-load --max: p99 under %.2f ms, %.0f s per step, %u connections ==\n",
           o->max_p99_ms, step, o->conns);
    unsigned tries = o->max_tries ? o->max_tries : 1, failed = 0;
    for (int n = 0; n < 48; n++) {
        run_phase(rate, rate, 0, step);
        sort_lat();
        uint64_t answered = R.status[201] + R.status[409];
        double p50 = pct(0.5), p99 = pct(0.99);
        bool served = R.scheduled > 0 && answered == R.scheduled && R.not_sent == 0 &&
                      R.errors == 0 && p99 <= o->max_p99_ms;
        printf("rate %8.0f/s: offered %llu, 201 %llu, 409 %llu, other %llu, p50 %.2f ms, p99 %.2f "
               "ms, max %.2f ms: %s\n",
               rate, (unsigned long long)R.scheduled, (unsigned long long)R.status[201],
               (unsigned long long)R.status[409],
               (unsigned long long)(R.scheduled - answered), p50, p99, pct(1.0),
               served ? "served" : failed + 1 < tries ? "not served (trying again)" : "not served");
        fflush(stdout);
        if (jf != NULL)
            fprintf(jf, "%s{\"rate\":%.0f,\"offered\":%llu,\"answered\":%llu,\"p50\":%.3f,"
                        "\"p99\":%.3f,\"served\":%s}",
                    n ? "," : "", rate, (unsigned long long)R.scheduled,
                    (unsigned long long)answered, p50, p99, served ? "true" : "false");
        if (!served && ++failed < tries) {
            sleep(1);
            continue; /* the same rate again */
        }
        failed = 0;
        if (served) {
            good = rate;
            good_p50 = p50;
            good_p99 = p99;
        } else {
            bad = rate;
        }
        if (bad == 0)
            rate *= 2;
        else if (good == 0 && bad <= 1)
            break;
        else if (good == 0)
            rate = bad / 2;
        else if ((bad - good) / good <= 0.05)
            break;
        else
            rate = (good + bad) / 2;
        sleep(1); /* let the node settle between steps */
    }
    if (good > 0)
        printf("max: %.0f requests/s served with p99 %.2f ms (p50 %.2f ms; bound %.2f ms)\n", good,
               good_p99, good_p50, o->max_p99_ms);
    else
        printf("max: no rate tried was served with p99 under %.2f ms\n", o->max_p99_ms);
    if (jf != NULL) {
        fprintf(jf, "],\"max_rate\":%.0f,\"p50\":%.3f,\"p99\":%.3f}\n", good, good_p50, good_p99);
        fclose(jf);
    }
    return good > 0 ? 0 : 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flashsale-load [options]\n"
            "  --url HOST:PORT     the node (default 127.0.0.1:8080)\n"
            "  --base-rate R       requests/s before the sale (default 100)\n"
            "  --sale-rate R       requests/s from the sale on (default 1000)\n"
            "  --sale-at S         seconds until the sale opens (default 10)\n"
            "  --duration S        seconds of load (default 30)\n"
            "  --users N --skus N  buyers and items (default 100000, 1)\n"
            "  --stock N           units per SKU, set up before the run (default 5000; 0: no setup)\n"
            "  --conns N           keep-alive connections (default 64)\n"
            "  --tick-us N         the schedule's step: requests due within one step are sent\n"
            "                      together, at its end (default 1000)\n"
            "  --email-wait S      at most this long to wait for the emails after (default 120)\n"
            "  --json FILE         the report as JSON      --png FILE  a chart (gnuplot)\n"
            "  --max P99_MS        instead: find the highest constant rate answered with p99 under\n"
            "                      P99_MS (every request answered 201/409, none waiting unsent)\n"
            "  --max-start R       --max: the first rate tried (default 1000)\n"
            "  --max-step S        --max: seconds at each rate (default 5)\n"
            "  --max-tries N       --max: a rate counts as not served after failing N times\n"
            "                      running (default 2)\n");
}

int main(int argc, char **argv)
{
    opts o = {.host = "127.0.0.1", .port = 8080, .base_rate = 100, .sale_rate = 1000,
              .sale_at = 10, .duration = 30, .users = 100000, .skus = 1, .stock = 5000,
              .conns = 64, .email_wait = 120, .tick_us = 1000, .max_tries = 2};
    static char hostbuf[256];
    enum { O_URL = 256, O_BASE_RATE, O_SALE_RATE, O_SALE_AT, O_DURATION, O_USERS, O_SKUS,
           O_STOCK, O_CONNS, O_TICK_US, O_EMAIL_WAIT, O_JSON, O_PNG, O_MAX, O_MAX_START,
           O_MAX_STEP, O_MAX_TRIES };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"base-rate", required_argument, NULL, O_BASE_RATE},
        {"sale-rate", required_argument, NULL, O_SALE_RATE},
        {"sale-at", required_argument, NULL, O_SALE_AT},
        {"duration", required_argument, NULL, O_DURATION},
        {"users", required_argument, NULL, O_USERS},
        {"skus", required_argument, NULL, O_SKUS},
        {"stock", required_argument, NULL, O_STOCK},
        {"conns", required_argument, NULL, O_CONNS},
        {"tick-us", required_argument, NULL, O_TICK_US},
        {"email-wait", required_argument, NULL, O_EMAIL_WAIT},
        {"json", required_argument, NULL, O_JSON},
        {"png", required_argument, NULL, O_PNG},
        {"max", required_argument, NULL, O_MAX},
        {"max-start", required_argument, NULL, O_MAX_START},
        {"max-step", required_argument, NULL, O_MAX_STEP},
        {"max-tries", required_argument, NULL, O_MAX_TRIES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        const char *v = optarg;
        switch (opt) {
        case 'h':
            usage(stdout);
            return 0;
        case O_URL: {
            const char *c = strrchr(v, ':');
            if (c == NULL) {
                fprintf(stderr, "flashsale-load: --url wants HOST:PORT\n");
                return 2;
            }
            snprintf(hostbuf, sizeof hostbuf, "%.*s", (int)(c - v), v);
            o.host = hostbuf;
            o.port = atoi(c + 1);
            break;
        }
        case O_BASE_RATE: o.base_rate = atof(v); break;
        case O_SALE_RATE: o.sale_rate = atof(v); break;
        case O_SALE_AT: o.sale_at = atof(v); break;
        case O_DURATION: o.duration = atof(v); break;
        case O_USERS: o.users = (unsigned)atoi(v); break;
        case O_SKUS: o.skus = (unsigned)atoi(v); break;
        case O_STOCK: o.stock = (unsigned)atoi(v); break;
        case O_CONNS: o.conns = (unsigned)atoi(v); break;
        case O_TICK_US: o.tick_us = (unsigned)atoi(v); break;
        case O_EMAIL_WAIT: o.email_wait = atof(v); break;
        case O_JSON: o.json = v; break;
        case O_PNG: o.png = v; break;
        case O_MAX: o.max_p99_ms = atof(v); break;
        case O_MAX_START: o.max_start = atof(v); break;
        case O_MAX_STEP: o.max_step = atof(v); break;
        case O_MAX_TRIES: o.max_tries = (unsigned)atoi(v); break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'flashsale-load --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "flashsale-load: unexpected argument '%s'; try 'flashsale-load --help'.\n",
                argv[optind]);
        return 2;
    }
    if (o.base_rate <= 0 || o.sale_rate <= 0 || o.duration <= 0 || o.duration > MAX_SECONDS - 60 ||
        o.users == 0 || o.skus == 0 || o.conns == 0 || o.conns > 10000 || o.tick_us < 10 ||
        o.tick_us > 1000000 || o.max_tries == 0 || o.max_tries > 10) {
        fprintf(stderr, "flashsale-load: rates, duration (< %d s), users, skus, conns must be > 0, "
                        "tick-us from 10 to 1000000, max-tries from 1 to 10\n",
                MAX_SECONDS - 60);
        return 2;
    }
    R.o = o;
    R.seed = 0x9E3779B97F4A7C15ULL;
    if (uv_ip4_addr(o.host, o.port, &R.addr) != 0) {
        fprintf(stderr, "flashsale-load: bad address %s\n", o.host);
        return 2;
    }
    char body[512];
    if (o.stock > 0)
        for (unsigned s = 0; s < o.skus; s++) {
            char path[64], b[64];
            snprintf(path, sizeof path, "/inventory/s%u", s);
            snprintf(b, sizeof b, "{\"stock\":%u}", o.stock);
            if (simple_http(&o, "PUT", path, b, body, sizeof body) != 200) {
                fprintf(stderr, "flashsale-load: cannot set up s%u at %s:%d\n", s, o.host, o.port);
                return 1;
            }
        }
    R.loop = uv_default_loop();
    R.due = calloc(QUEUE_MAX, sizeof *R.due);
    R.conns = calloc(o.conns, sizeof *R.conns);
    if (R.due == NULL || R.conns == NULL)
        return 1;
    if (o.max_p99_ms > 0)
        return find_max(&o);
    pthread_t poller;
    bool polling = pthread_create(&poller, NULL, poller_main, &R.o) == 0;
    fprintf(stderr, "flashsale-load: %.0f req/s, %.0f req/s from %.0f s, for %.0f s...\n",
            o.base_rate, o.sale_rate, o.sale_at, o.duration);
    run_phase(o.base_rate, o.sale_rate, o.sale_at, o.duration);

    /* the emails: keep polling until none is pending (bounded) */
    if (polling) {
        atomic_store(&g_poll_stop, true);
        pthread_join(poller, NULL);
    }
    uint64_t sold = 0, stock_total = 0;
    for (double waited = 0; waited < o.email_wait; waited += 1) {
        poll_once(&o);
        if (g_email_pending == 0)
            break;
        sleep(1);
    }
    uint64_t last_sent = g_email_sent, pending = g_email_pending;
    double last_email_s = g_last_email_s;
    size_t esec = (size_t)((now_ns() - R.t0) / 1000000000u) + 1;
    uint64_t *emails = g_emails;
    for (unsigned s = 0; s < o.skus; s++) {
        char path[64];
        snprintf(path, sizeof path, "/inventory/s%u", s);
        if (simple_http(&o, "GET", path, NULL, body, sizeof body) == 200) {
            sold += json_u64(body, "sold");
            stock_total += json_u64(body, "stock");
        }
    }
    sort_lat();
    uint64_t confirmed = R.status[201];
    bool oversold = sold > stock_total || confirmed > stock_total;
    printf("\n== flash sale report ==\n");
    printf("offered %llu requests in %.1f s (%.0f/s, then %.0f/s from %.0f s); not sent %llu; "
           "errors %llu\n",
           (unsigned long long)R.scheduled, o.duration, o.base_rate, o.sale_rate, o.sale_at,
           (unsigned long long)R.not_sent, (unsigned long long)R.errors);
    printf("answers: 201 %llu  409 %llu  400 %llu  429 %llu  503 %llu  other %llu\n",
           (unsigned long long)R.status[201], (unsigned long long)R.status[409],
           (unsigned long long)R.status[400], (unsigned long long)R.status[429],
           (unsigned long long)R.status[503],
           (unsigned long long)(R.nlat - R.status[201] - R.status[409] - R.status[400] -
                                R.status[429] - R.status[503]));
    for (int st = 100; st < 600; st++)
        if (R.status[st] > 0 && st != 201 && st != 409 && st != 400 && st != 429 && st != 503)
            printf("  (status %d: %llu)\n", st, (unsigned long long)R.status[st]);
    printf("orders confirmed %llu, sold %llu, stock %llu: %s\n", (unsigned long long)confirmed,
           (unsigned long long)sold, (unsigned long long)stock_total,
           oversold ? "OVERSOLD!!! more sold than there was" : "no oversell");
    printf("latency from the scheduled time (ms): p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
           pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1.0));
    printf("emails: %llu sent, %llu pending; the last left %.1f s after the start\n",
           (unsigned long long)last_sent, (unsigned long long)pending, last_email_s);
    if (o.json != NULL) {
        FILE *f = fopen(o.json, "w");
        if (f != NULL) {
            fprintf(f,
                    "{\"offered\":%llu,\"not_sent\":%llu,\"errors\":%llu,\"status\":{\"201\":%llu,"
                    "\"409\":%llu,\"400\":%llu,\"429\":%llu,\"503\":%llu},\"confirmed\":%llu,"
                    "\"sold\":%llu,\"stock\":%llu,\"oversold\":%s,\"latency_ms\":{\"p50\":%.3f,"
                    "\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},\"emails_sent\":%llu,"
                    "\"emails_pending\":%llu,\"last_email_s\":%.1f,\"per_second\":[",
                    (unsigned long long)R.scheduled, (unsigned long long)R.not_sent,
                    (unsigned long long)R.errors, (unsigned long long)R.status[201],
                    (unsigned long long)R.status[409], (unsigned long long)R.status[400],
                    (unsigned long long)R.status[429], (unsigned long long)R.status[503],
                    (unsigned long long)confirmed, (unsigned long long)sold,
                    (unsigned long long)stock_total, oversold ? "true" : "false", pct(0.5),
                    pct(0.9), pct(0.99), pct(0.999), pct(1.0), (unsigned long long)last_sent,
                    (unsigned long long)pending, last_email_s);
            for (size_t s = 0; s < esec && s < MAX_SECONDS; s++)
                fprintf(f, "%s{\"t\":%zu,\"offered\":%llu,\"confirmed\":%llu,\"emails\":%llu}",
                        s ? "," : "", s, (unsigned long long)R.offered[s],
                        (unsigned long long)R.confirmed[s], (unsigned long long)emails[s]);
            fprintf(f, "]}\n");
            fclose(f);
            printf("report: %s\n", o.json);
        }
    }
    if (o.png != NULL) {
        char dat[300], gp[300];
        snprintf(dat, sizeof dat, "%s.dat", o.png);
        snprintf(gp, sizeof gp, "%s.gp", o.png);
        FILE *d = fopen(dat, "w"), *g = fopen(gp, "w");
        if (d != NULL && g != NULL) {
            for (size_t s = 0; s < esec && s < MAX_SECONDS; s++)
                fprintf(d, "%zu %llu %llu %llu\n", s, (unsigned long long)R.offered[s],
                        (unsigned long long)R.confirmed[s], (unsigned long long)emails[s]);
            fprintf(g,
                    "set terminal png size 1000,500\nset output '%s'\n"
                    "set title 'flash sale: offered requests, confirmed orders and emails per second'\n"
                    "set xlabel 'seconds'\nset ylabel 'per second'\nset logscale y\nset key left\n"
                    "plot '%s' using 1:($2+0.5) with lines title 'offered req/s', "
                    "'' using 1:($3+0.5) with lines title 'confirmed orders/s', "
                    "'' using 1:($4+0.5) with lines title 'emails/s'\n",
                    o.png, dat);
        }
        if (d != NULL)
            fclose(d);
        if (g != NULL)
            fclose(g);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "command -v gnuplot >/dev/null 2>&1 && gnuplot '%s'", gp);
        if (system(cmd) == 0)
            printf("chart: %s\n", o.png);
        else
            printf("chart: not drawn (gnuplot is not installed: apt-get install gnuplot-nox); data in %s\n",
                   dat);
    }
    return oversold ? 3 : 0;
}
