/*
 * load.c — build/bin/social-load: builds a social network through a node's HTTP API, drives it
 * with a mix of reads and posts, and reports (apps/social/README.md).
 *
 * Everything runs on one libuv loop, over pools of keep-alive connections, in three phases:
 * 1. build: users (POST /users), follows (PUT /users/A/following/B) of a generated power-law
 *    graph or of an edge list (--graph), preloaded posts; a closed loop on --build-conns
 *    connections, stage after stage, bounded by --build-timeout;
 * 2. run: the mix (timeline, posts, post, search), open loop at --rate — each operation's
 *    latency counts from the moment it was due, so waiting for a free connection is measured,
 *    not hidden (no coordinated omission); each is sent at that moment (a timerfd armed for the
 *    next one; libuv's timers count whole milliseconds, and a 1 ms tick added up to a
 *    millisecond of the generator's own to every latency), or up to --send-gap-us later (the
 *    timer fires at most that often, sending everything due: a wake-up per operation cost the
 *    generator as much CPU as the node it measured on a shared 2-core host, and the lateness
 *    still counts in the latency); due operations wait in a bounded queue — or closed
 *    loop (--closed C). Meanwhile --lag-samples probes, on connections of their own, post an
 *    image and poll one follower's timeline and the search until it shows, and /health is read
 *    once a second (fan-out inserts);
 * 3. report: text on stdout, --json FILE, --png FILE (gnuplot; a note when it is missing).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#ifdef __linux__
#include <sys/timerfd.h>
#endif
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_SECONDS 3600
#define SERIES (MAX_SECONDS + 120)  /* per-second series: the run, its drain, the probes */
#define MAX_USERS 10000000u
#define MAX_EDGES 50000000u         /* --graph: distinct edges at most */
#define MAX_FOLLOWING 5000u         /* the node's default max_following */
#define QUEUE_CAP 200000u           /* operations due and waiting for a connection, at most */
#define ID_CAP 33u                  /* a user id (the node's are at most 32 bytes) and its NUL */
#define PROBE_SLOTS 8u              /* lag samples under way at once */
#define DRAIN_S 15.0                /* answers still out after the load get this long */
#define IN_MAX (8u << 20)           /* an answer bigger than this is an error */
#define HB (1024u + 30u * 512u)     /* latency histogram buckets (hbucket) */
#define NONE UINT32_MAX

/* Operations: the mix's first (their names are --mix's), then the build's, the probes'. */
enum { OP_TIMELINE, OP_POSTS, OP_POST, OP_SEARCH, NMIX,
       OP_USER = NMIX, OP_FOLLOW, OP_PRELOAD,
       OP_PRIME, OP_PPOST, OP_PTL, OP_PSEARCH, OP_HEALTH, NOPS };
static const char *const OPN[NOPS] = {"timeline", "posts", "post", "search", "user",
                                      "follow", "preload", "prime", "probe-post",
                                      "probe-timeline", "probe-search", "health"};

typedef struct opts {
    char host[256];
    int port;
    unsigned users, follows, preload, conns, build_conns, closed, lag_samples, lag_poll_ms;
    unsigned send_gap_us;
    double zipf, rate, duration, build_timeout, lag_timeout, settle;
    unsigned mix[NMIX];
    const char *graph, *state, *reuse, *json, *png;
    unsigned long long seed;
} opts;

typedef struct user {
    char id[ID_CAP];            /* "" until created */
    uint32_t posts;             /* created by us (201), over all runs of a --state file */
    uint32_t followers;         /* follows of it answered 204 */
    uint32_t a_follower;        /* one of them (uniformly), NONE */
} user;

typedef struct job {
    uint8_t op;
    uint32_t a, b;              /* users (a: the actor of the operation); probes: b = sample */
    uint64_t due;               /* ns (uv_hrtime) it was due; 0: due when sent */
} job;

typedef struct opstat {
    uint64_t sched, not_sent, answered, ok, lost; /* lost: no answer (connection, end) */
    uint64_t status[1000];
    uint64_t hist[HB], max_us;
} opstat;

typedef struct pool pool;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t cr;
    uv_write_t w;
    pool *p;
    unsigned slot;
    bool up, busy, closed;
    uint64_t retry_ns;          /* a failed connect: not again before this */
    job j;                      /* the request in flight */
    char *in;
    size_t len, cap;
    char out[1024];
} conn;

struct pool {
    conn *c;
    unsigned n, busy, kick;
    bool reopen;                /* closed connections are opened again at the next tick */
    job *q;                     /* a ring of due jobs (open loop), or NULL */
    size_t qhead, qlen;
    bool (*next)(conn *c, job *j); /* or the next job for c, when the ring is empty */
    void (*done)(conn *c, int status, const char *body, size_t len);
};

typedef struct health {
    bool ok;
    double inserts, fposts, tl_p50, tl_p99, tl_n, tl_behind, s_p50, s_p99, s_n, s_behind;
} health;

static struct {
    opts o;
    uv_loop_t *loop;
    struct sockaddr_in addr;
    user *u;
    uint32_t n, *alive, nalive;
    char tag[16];
    uint64_t rng, url_n;
    uv_timer_t tick;
    void (*on_tick)(void);
    bool ending;
    pool *pools[3];
    unsigned npools;
    uint64_t t0;                /* the run's start (ns); 0 before */
} G;

static opstat ST[NOPS];
static struct {
    uint64_t offered, ok, err, n, sum_us, max_us;
} PS[SERIES];
static double INS[SERIES + 1];  /* fan-out inserts at the start of each second (-1: unknown) */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rnd(void)
{
    return mix64(G.rng += 0x9E3779B97F4A7C15ull);
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double since_s(uint64_t t)
{
    return (double)(uv_hrtime() - t) / 1e9;
}

/* ---- users: names are derived from the index and the run's tag ---------------------------- */

static const char *const FIRST[32] = {
    "Ada", "Alan", "Amara", "Anya", "Bruno", "Chen", "Dara", "Elif", "Emeka", "Farah", "Gita",
    "Hugo", "Ines", "Ivan", "Jonas", "Kenji", "Lena", "Luca", "Maya", "Nadia", "Omar", "Priya",
    "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Vera", "Wren", "Yara", "Zane", "Noor"};
static const char *const LAST[32] = {
    "Abara", "Berg", "Costa", "Diallo", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi",
    "Silva", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Novak", "Mendes",
    "Larsen", "Khan", "Dubois", "Ahn"};

static void name_words(uint32_t i, const char **first, const char **last)
{
    uint64_t h = mix64(i + 1ull);
    *first = FIRST[h % 32];
    *last = LAST[(h >> 8) % 32];
}

/* TAG_<i in base 36>: unique per run (the tag), valid as a username. */
static void user_name(uint32_t i, char out[48])
{
    char d[8];
    int k = 0;
    do {
        d[k++] = "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36];
        i /= 36;
    } while (i > 0 && k < 8);
    int n = snprintf(out, 48, "%s_", G.tag);
    while (k > 0 && n < 47)
        out[n++] = d[--k];
    out[n] = '\0';
}

/* A search query for user i: a prefix of the username (at least the tag and one more character)
 * or a word of the name, as v decides. */
static void search_q(uint32_t i, uint32_t v, char q[48])
{
    if (v & 1) {
        const char *f, *l;
        name_words(i, &f, &l);
        snprintf(q, 48, "%s", (v & 2) ? f : l);
        return;
    }
    user_name(i, q);
    size_t min = strlen(G.tag) + 2, len = strlen(q);
    q[min + (v >> 2) % (len - min + 1)] = '\0';
}

static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < ID_CAP && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_.-") == n;
}

static void build_alive(void)
{
    G.nalive = 0;
    for (uint32_t i = 0; i < G.n; i++)
        if (G.u[i].id[0] != '\0')
            G.alive[G.nalive++] = i;
}

static uint32_t any_user(void)
{
    return G.alive[rnd() % G.nalive];
}

/* ---- latency histograms: exact below 1,024 µs, 512 steps per power of two above ----------- */

static unsigned hbucket(uint64_t us)
{
    if (us < 1024)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us) - 9u; /* us >> e in [512, 1024) */
    return e > 30 ? HB - 1 : 1024u + (e - 1u) * 512u + (unsigned)((us >> e) - 512u);
}

static double bucket_us(unsigned b)
{
    if (b < 1024)
        return b;
    unsigned e = (b - 1024u) / 512u + 1u;
    uint64_t lo = ((b - 1024u) % 512u + 512u) << e;
    return (double)lo + (double)(1ull << e) / 2;
}

/* Quantile p of the answered operations of s, in ms. */
static double quantile(const opstat *s, double p)
{
    double want = p * (double)s->answered;
    uint64_t acc = 0;
    for (unsigned b = 0; b < HB && s->answered > 0; b++) {
        acc += s->hist[b];
        if (acc > 0 && (double)acc >= want) {
            double us = bucket_us(b);
            return (us < (double)s->max_us ? us : (double)s->max_us) / 1000.0;
        }
    }
    return (double)s->max_us / 1000.0;
}

static void record(const job *j, int status, uint64_t now)
{
    opstat *s = &ST[j->op];
    uint64_t us = now > j->due ? (now - j->due) / 1000u : 0;
    bool ok = status >= 200 && status < 300;
    if (status <= 0) {
        s->lost++;
    } else {
        s->answered++;
        s->ok += ok;
        s->status[status < 1000 ? status : 999]++;
        s->hist[hbucket(us)]++;
        if (us > s->max_us)
            s->max_us = us;
    }
    if (j->op < NMIX && G.t0 != 0 && now > G.t0) {
        size_t sec = (size_t)((now - G.t0) / 1000000000u);
        if (sec < SERIES) {
            PS[sec].ok += ok;
            PS[sec].err += !ok;
            if (status > 0) {
                PS[sec].n++;
                PS[sec].sum_us += us;
                if (us > PS[sec].max_us)
                    PS[sec].max_us = us;
            }
        }
    }
}

/* ---- requests ------------------------------------------------------------------------------ */

static int request(const job *j, char *out, size_t cap)
{
    const char *id = G.u[j->a].id, *method = "GET", *f, *l;
    char path[192], body[320] = "", text[48];
    switch (j->op) {
    case OP_TIMELINE:
    case OP_PTL:
    case OP_PRIME:
        snprintf(path, sizeof path, "/timeline/%s?limit=%d", id,
                 j->op == OP_TIMELINE ? 10 : j->op == OP_PTL ? 20 : 1);
        break;
    case OP_POSTS:
        snprintf(path, sizeof path, "/users/%s/posts?limit=10", id);
        break;
    case OP_SEARCH:
        search_q(j->a, j->b, text);
        snprintf(path, sizeof path, "/search?q=%s&limit=10&images=3", text);
        break;
    case OP_PSEARCH:
        user_name(j->a, text);
        snprintf(path, sizeof path, "/search?q=%s&limit=1&images=5", text);
        break;
    case OP_HEALTH:
        snprintf(path, sizeof path, "/health");
        break;
    case OP_FOLLOW:
        method = "PUT";
        snprintf(path, sizeof path, "/users/%s/following/%s", id, G.u[j->b].id);
        break;
    case OP_USER:
        method = "POST";
        snprintf(path, sizeof path, "/users");
        user_name(j->a, text);
        name_words(j->a, &f, &l);
        snprintf(body, sizeof body, "{\"username\":\"%s\",\"name\":\"%s %s\"}", text, f, l);
        break;
    default: /* the posts */
        method = "POST";
        snprintf(path, sizeof path, "/posts");
        snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"https://img.example/%s/%llu.jpg\"}",
                 id, G.tag, (unsigned long long)++G.url_n);
        break;
    }
    return snprintf(out, cap,
                    "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n%s",
                    method, path, G.o.host, strlen(body), body);
}

/* The length of the whole answer at the start of in[0..len) (NUL-terminated), 0 while it is not
 * all there; its status (999: unreadable) and where its body starts. */
static size_t whole(const char *in, size_t len, int *status, size_t *body)
{
    const char *eoh = memmem(in, len, "\r\n\r\n", 4);
    if (eoh == NULL)
        return 0;
    size_t clen = 0;
    for (const char *l = strchr(in, '\n'); l != NULL && l < eoh; l = strchr(l + 1, '\n'))
        if (strncasecmp(l + 1, "Content-Length:", 15) == 0)
            clen = strtoul(l + 16, NULL, 10);
    *body = (size_t)(eoh + 4 - in);
    if (len < *body + clen)
        return 0;
    if (sscanf(in, "HTTP/1.%*d %d", status) != 1 || *status < 100 || *status > 999)
        *status = 999;
    return *body + clen;
}

/* ---- the connection pools ------------------------------------------------------------------ */

static void send_next(conn *c);

static void on_closed(uv_handle_t *h)
{
    conn *c = h->data;
    c->closed = true;
}

static void conn_drop(conn *c)
{
    c->up = false;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* The request in flight on c was answered (status), or will not be (0). */
static void finish(conn *c, int status, const char *body, size_t len)
{
    pool *p = c->p;
    c->busy = false;
    p->busy--;
    record(&c->j, status, uv_hrtime());
    p->done(c, status, body, len);
}

static void conn_fail(conn *c)
{
    c->up = false;
    if (c->busy)
        finish(c, 0, NULL, 0);
    conn_drop(c);
}

static void on_write(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status < 0 && !uv_is_closing((uv_handle_t *)&c->tcp))
        conn_fail(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    conn *c = h->data;
    if (c->cap - c->len < 4097 && c->cap < IN_MAX) {
        size_t cap = c->cap ? c->cap * 2 : 16384;
        char *in = realloc(c->in, cap);
        if (in != NULL) {
            c->in = in;
            c->cap = cap;
        }
    }
    /* no room: libuv answers UV_ENOBUFS, and the connection fails */
    *b = c->in != NULL ? uv_buf_init(c->in + c->len, (unsigned)(c->cap - c->len - 1))
                       : uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    conn *c = s->data;
    if (n < 0) {
        conn_fail(c);
        return;
    }
    c->len += (size_t)n;
    c->in[c->len] = '\0';
    int status;
    size_t body, total = whole(c->in, c->len, &status, &body);
    if (total == 0)
        return;
    if (!c->busy) { /* an answer to nothing asked */
        conn_drop(c);
        return;
    }
    char keep = c->in[total];
    c->in[total] = '\0';
    finish(c, status, c->in + body, total - body);
    c->in[total] = keep;
    memmove(c->in, c->in + total, c->len - total + 1);
    c->len -= total;
    send_next(c);
}

static void on_connect(uv_connect_t *r, int status)
{
    conn *c = r->data;
    if (status < 0 || G.ending) {
        c->retry_ns = uv_hrtime() + 50000000u; /* refused: again in 50 ms */
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
    c->closed = c->up = c->busy = false;
    c->len = 0;
    uv_tcp_init(G.loop, &c->tcp);
    c->tcp.data = c->cr.data = c->w.data = c;
    if (uv_tcp_connect(&c->cr, &c->tcp, (const struct sockaddr *)&G.addr, on_connect) != 0)
        conn_drop(c);
}

static void send_next(conn *c)
{
    pool *p = c->p;
    job j;
    if (!c->up || c->busy || G.ending)
        return;
    if (p->qlen > 0) {
        j = p->q[p->qhead];
        p->qhead = (p->qhead + 1) % QUEUE_CAP;
        p->qlen--;
    } else if (p->next == NULL || !p->next(c, &j)) {
        return;
    }
    if (j.due == 0)
        j.due = uv_hrtime();
    c->j = j;
    int n = request(&j, c->out, sizeof c->out); /* host, path and body are bounded: it fits */
    uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
    c->busy = true;
    p->busy++;
    if (n <= 0 || (size_t)n >= sizeof c->out)
        finish(c, 0, NULL, 0);
    else if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0)
        conn_fail(c);
}

static bool may_open(const conn *c)
{
    return c->closed && !G.ending && uv_hrtime() >= c->retry_ns;
}

/* Offers the pool's work to its connections, starting one further each time: at a low rate
 * every connection still carries some, so none sits idle until the node closes it (an idle
 * keep-alive connection is closed after request_timeout_ms; a request sent as it closes is
 * lost). */
static void pool_kick(pool *p)
{
    unsigned first = p->kick++ % p->n;
    for (unsigned k = 0; k < p->n; k++) {
        conn *c = &p->c[(first + k) % p->n];
        if (!c->closed)
            send_next(c);
        else if (p->reopen && may_open(c))
            conn_open(c);
    }
}

static pool *pool_new(unsigned n, bool queue, bool reopen)
{
    pool *p = calloc(1, sizeof *p);
    if (p != NULL)
        p->c = calloc(n, sizeof *p->c);
    if (p != NULL && queue)
        p->q = malloc(QUEUE_CAP * sizeof *p->q);
    if (p == NULL || p->c == NULL || (queue && p->q == NULL)) {
        fprintf(stderr, "social-load: out of memory\n");
        exit(1);
    }
    p->n = n;
    p->reopen = reopen;
    for (unsigned i = 0; i < n; i++) {
        p->c[i].p = p;
        p->c[i].slot = i;
        p->c[i].closed = true;
    }
    return p;
}

static void pool_free(pool *p)
{
    for (unsigned i = 0; i < p->n; i++)
        free(p->c[i].in);
    free(p->c);
    free(p->q);
    free(p);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (G.on_tick != NULL) /* NULL while the connections are being opened */
        G.on_tick();
}

/* Runs one phase: opens the connections of the pools that reopen theirs (waiting, at most 5 s,
 * until each is up or refused: connecting is the generator's own start), calls start, then
 * tick every millisecond until it calls phase_end. */
static void phase(pool **pools, unsigned np, void (*start)(void), void (*tick)(void))
{
    G.ending = false;
    G.npools = np;
    G.on_tick = NULL;
    uv_timer_init(G.loop, &G.tick);
    uv_timer_start(&G.tick, on_tick, 1, 1); /* also bounds each wait below */
    for (unsigned k = 0; k < np; k++) {
        G.pools[k] = pools[k];
        for (unsigned i = 0; i < pools[k]->n && pools[k]->reopen; i++)
            conn_open(&pools[k]->c[i]);
    }
    uint64_t give_up = uv_hrtime() + 5000000000ull;
    for (unsigned k = 0; k < np; k++)
        for (unsigned i = 0; i < pools[k]->n && uv_hrtime() < give_up; i++)
            while (!pools[k]->c[i].up && !pools[k]->c[i].closed && uv_hrtime() < give_up)
                uv_run(G.loop, UV_RUN_ONCE);
    if (start != NULL)
        start();
    G.on_tick = tick;
    uv_run(G.loop, UV_RUN_DEFAULT);
}

/* Ends the phase: requests still out count as lost; uv_run returns once all is closed. */
static void phase_end(void)
{
    G.ending = true;
    for (unsigned k = 0; k < G.npools; k++)
        for (unsigned i = 0; i < G.pools[k]->n; i++) {
            conn *c = &G.pools[k]->c[i];
            if (!c->closed)
                conn_fail(c);
        }
    uv_timer_stop(&G.tick);
    uv_close((uv_handle_t *)&G.tick, NULL);
}

/* ---- plain blocking HTTP, for /health and checks outside the loop --------------------------- */

static int fetch(const char *path, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, G.o.host);
    int status = -1;
    size_t len = 0, body = 0, total = 0;
    if (connect(fd, (const struct sockaddr *)&G.addr, sizeof G.addr) == 0 &&
        send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
        ssize_t k;
        while (len + 1 < cap && (k = recv(fd, out + len, cap - 1 - len, 0)) > 0) {
            len += (size_t)k;
            out[len] = '\0';
            if ((total = whole(out, len, &status, &body)) > 0)
                break;
        }
    }
    close(fd);
    if (total == 0)
        return -1;
    memmove(out, out + body, total - body);
    out[total - body] = '\0';
    return status;
}

/* The number at path "a.b.c" of j, or -1. */
static double jnum(const cJSON *j, const char *path)
{
    char buf[96], *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    for (char *k = strtok_r(buf, ".", &save); k != NULL && j != NULL; k = strtok_r(NULL, ".", &save))
        j = cJSON_GetObjectItemCaseSensitive(j, k);
    return j != NULL && cJSON_IsNumber(j) ? j->valuedouble : -1;
}

static health parse_health(const char *body)
{
    health h = {0};
    cJSON *j = cJSON_Parse(body);
    if (j == NULL)
        return h;
    h.ok = jnum(j, "fanout.inserts") >= 0;
    h.inserts = jnum(j, "fanout.inserts");
    h.fposts = jnum(j, "fanout.posts");
    h.tl_p50 = jnum(j, "lag.timeline.p50_ms");
    h.tl_p99 = jnum(j, "lag.timeline.p99_ms");
    h.tl_n = jnum(j, "lag.timeline.samples");
    h.tl_behind = jnum(j, "lag.timeline.events_behind");
    h.s_p50 = jnum(j, "lag.search.p50_ms");
    h.s_p99 = jnum(j, "lag.search.p99_ms");
    h.s_n = jnum(j, "lag.search.samples");
    h.s_behind = jnum(j, "lag.search.events_behind");
    cJSON_Delete(j);
    return h;
}

static health get_health(void)
{
    static char buf[16384];
    health none = {0};
    return fetch("/health", buf, sizeof buf) == 200 ? parse_health(buf) : none;
}

/* Waits (at most max_s) until the node's read models have caught up with the event log. */
static double settle(double max_s, bool *caught_up)
{
    uint64_t t = uv_hrtime();
    for (;;) {
        health h = get_health();
        *caught_up = h.ok && h.tl_behind == 0 && h.s_behind == 0;
        if (*caught_up || since_s(t) >= max_s)
            return since_s(t);
        usleep(50000);
    }
}

/* ---- the network: a generated power-law graph or an edge list ------------------------------ */

static struct {
    int stage;                  /* 0 users, 1 follows, 2 posts, 3 done */
    bool dry, timed_out;        /* the stage has nothing more to send; the time is up */
    uint64_t i, k, t_stage, deadline, last_print;
    uint64_t *edges;            /* --graph: a << 32 | b, sorted, distinct */
    size_t nedges;
    double *cdf;                /* generated: the Zipf law over popularity ranks */
    uint32_t *perm, *mark, *fl; /* rank -> user; mark[b] = a + 1: a picked b; a's followees */
    uint32_t a;
    unsigned nfl, pos;
    uint64_t ok[3], err[3];
    double secs[3];
    uint64_t lines, self, dups, bad;
} B;

typedef struct lmap {
    long long *k;
    uint32_t *v;                /* index + 1; 0: free */
    size_t cap;
} lmap;

static bool lmap_grow(lmap *m)
{
    lmap g = {calloc(m->cap * 2, sizeof *g.k), calloc(m->cap * 2, sizeof *g.v), m->cap * 2};
    if (g.k == NULL || g.v == NULL) {
        free(g.k);
        free(g.v);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->v[i] != 0) {
            size_t h = mix64((uint64_t)m->k[i]) & (g.cap - 1);
            while (g.v[h] != 0)
                h = (h + 1) & (g.cap - 1);
            g.k[h] = m->k[i];
            g.v[h] = m->v[i];
        }
    free(m->k);
    free(m->v);
    *m = g;
    return true;
}

/* The index of label key (a new one: *n, then *n is one more); NONE when out of room. */
static uint32_t lmap_get(lmap *m, long long key, uint32_t *n)
{
    if ((size_t)*n * 2 >= m->cap && !lmap_grow(m))
        return NONE;
    size_t h = mix64((uint64_t)key) & (m->cap - 1);
    while (m->v[h] != 0 && m->k[h] != key)
        h = (h + 1) & (m->cap - 1);
    if (m->v[h] == 0) {
        if (*n >= MAX_USERS)
            return NONE;
        m->k[h] = key;
        m->v[h] = ++*n;
    }
    return m->v[h] - 1;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

/* Reads an edge list: "a b" per line (a follows b; tabs, spaces or commas between; more columns
 * ignored), '#' and '%' lines skipped, and a Matrix Market file's size line. */
static int load_graph(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "social-load: %s: %s\n", path, strerror(errno));
        return -1;
    }
    lmap m = {calloc(1024, sizeof(long long)), calloc(1024, sizeof(uint32_t)), 1024};
    size_t cap = 0;
    uint32_t n = 0;
    bool mm = false, sized = false;
    char line[512];
    int rc = m.k != NULL && m.v != NULL ? 0 : -1;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        size_t ll = strlen(line);
        if (ll == sizeof line - 1 && line[ll - 1] != '\n') /* too long: the rest is ignored */
            for (int ch = fgetc(f); ch != EOF && ch != '\n'; ch = fgetc(f))
                ;
        B.lines++;
        char *p = line + strspn(line, " \t"), *e1, *e2;
        if (*p == '%' && strncmp(p, "%%MatrixMarket", 14) == 0)
            mm = true;
        if (*p == '#' || *p == '%' || *p == '\n' || *p == '\r' || *p == '\0')
            continue;
        if (mm && !sized) { /* "rows cols entries" */
            sized = true;
            continue;
        }
        long long a = strtoll(p, &e1, 10), b = strtoll(e1 + strspn(e1, " \t,;"), &e2, 10);
        if (e1 == p || e2 == e1 + strspn(e1, " \t,;")) {
            B.bad++;
            continue;
        }
        uint32_t ia = lmap_get(&m, a, &n), ib = lmap_get(&m, b, &n);
        if (ia == NONE || ib == NONE) {
            fprintf(stderr, "social-load: %s: more than %u nodes (or out of memory)\n", path,
                    MAX_USERS);
            rc = -1;
        } else if (ia == ib) {
            B.self++;
        } else if (B.nedges == MAX_EDGES) {
            fprintf(stderr, "social-load: %s: more than %u edges\n", path, MAX_EDGES);
            rc = -1;
        } else {
            if (B.nedges == cap) {
                size_t nc = cap ? cap * 2 : 65536;
                uint64_t *ne = realloc(B.edges, nc * sizeof *ne);
                if (ne == NULL) {
                    rc = -1;
                    break;
                }
                B.edges = ne;
                cap = nc;
            }
            B.edges[B.nedges++] = (uint64_t)ia << 32 | ib;
        }
    }
    fclose(f);
    free(m.k);
    free(m.v);
    if (rc == 0 && n == 0) {
        fprintf(stderr, "social-load: %s: no edges\n", path);
        rc = -1;
    }
    if (rc != 0)
        return rc;
    qsort(B.edges, B.nedges, sizeof *B.edges, cmp_u64);
    size_t w = 0;
    for (size_t r = 0; r < B.nedges; r++)
        if (w == 0 || B.edges[r] != B.edges[w - 1])
            B.edges[w++] = B.edges[r];
    B.dups = B.nedges - w;
    B.nedges = w;
    G.n = n;
    return 0;
}

/* The generated graph: popularity ranks on a random permutation of the users, rank r drawn
 * with weight 1 / r^s. */
static int setup_zipf(void)
{
    B.cdf = malloc(G.n * sizeof *B.cdf);
    B.perm = malloc(G.n * sizeof *B.perm);
    B.mark = calloc(G.n, sizeof *B.mark);
    B.fl = malloc((MAX_FOLLOWING + 1) * sizeof *B.fl);
    if (B.cdf == NULL || B.perm == NULL || B.mark == NULL || B.fl == NULL)
        return -1;
    double sum = 0;
    for (uint32_t r = 0; r < G.n; r++) {
        sum += pow((double)r + 1, -G.o.zipf);
        B.cdf[r] = sum;
        B.perm[r] = r;
    }
    for (uint32_t r = 0; r < G.n; r++)
        B.cdf[r] /= sum;
    for (uint32_t r = G.n; r > 1; r--) {
        uint32_t k = (uint32_t)(rnd() % r), t = B.perm[r - 1];
        B.perm[r - 1] = B.perm[k];
        B.perm[k] = t;
    }
    return 0;
}

static uint32_t zipf_user(void)
{
    double x = (double)(rnd() >> 11) * 0x1p-53;
    uint32_t lo = 0, hi = G.n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (B.cdf[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return B.perm[lo];
}

/* Whom user a follows: about --follows users (from half to one and a half times), distinct. */
static void pick_followees(uint32_t a)
{
    unsigned f = G.o.follows, d = f - f / 2 + (unsigned)(rnd() % (2 * (f / 2) + 1));
    if (d > G.n - 1)
        d = G.n - 1;
    if (d > MAX_FOLLOWING)
        d = MAX_FOLLOWING;
    B.nfl = B.pos = 0;
    for (unsigned tries = 0; B.nfl < d && tries < 20 * d + 20; tries++) {
        uint32_t b = zipf_user();
        if (b != a && B.mark[b] != a + 1) {
            B.mark[b] = a + 1;
            B.fl[B.nfl++] = b;
        }
    }
}

static bool next_edge(uint32_t *a, uint32_t *b)
{
    while (B.edges != NULL && B.i < B.nedges) {
        *a = (uint32_t)(B.edges[B.i] >> 32);
        *b = (uint32_t)B.edges[B.i++];
        if (G.u[*a].id[0] != '\0' && G.u[*b].id[0] != '\0')
            return true;
    }
    while (B.edges == NULL && G.o.follows > 0) {
        if (B.pos < B.nfl) {
            *a = B.a;
            *b = B.fl[B.pos++];
            if (G.u[*b].id[0] != '\0')
                return true;
        } else if (B.i < G.nalive) {
            B.a = G.alive[B.i++];
            pick_followees(B.a);
        } else {
            break;
        }
    }
    return false;
}

/* The build's next request: users, then (all created) follows, then posts. */
static bool build_next(conn *c, job *j)
{
    (void)c;
    *j = (job){0};
    if (uv_hrtime() >= B.deadline)
        B.timed_out = true;
    else if (B.stage == 0 && B.i < G.n)
        *j = (job){.op = OP_USER, .a = (uint32_t)B.i++};
    else if (B.stage == 1 && next_edge(&j->a, &j->b))
        j->op = OP_FOLLOW;
    else if (B.stage == 2 && B.i < G.nalive && G.o.preload > 0) {
        *j = (job){.op = OP_PRELOAD, .a = G.alive[B.i]};
        if (++B.k >= G.o.preload) {
            B.k = 0;
            B.i++;
        }
    }
    B.dry = j->op < OP_USER;
    return !B.dry;
}

static void followed(uint32_t a, uint32_t b)
{
    user *u = &G.u[b];
    if (++u->followers == 1 || rnd() % u->followers == 0)
        u->a_follower = a;
}

static void build_done(conn *c, int status, const char *body, size_t len)
{
    (void)len;
    const job *j = &c->j;
    int s = j->op - OP_USER;
    cJSON *doc = status == 201 && j->op == OP_USER ? cJSON_Parse(body) : NULL;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    if (j->op == OP_USER && cJSON_IsString(id) && id_ok(id->valuestring))
        snprintf(G.u[j->a].id, ID_CAP, "%s", id->valuestring);
    else if (j->op == OP_USER)
        status = status == 201 ? 999 : status; /* a 201 we cannot read: an error */
    cJSON_Delete(doc);
    if (status < 200 || status >= 300) {
        B.err[s]++;
        return;
    }
    B.ok[s]++;
    if (j->op == OP_FOLLOW)
        followed(j->a, j->b);
    else if (j->op == OP_PRELOAD)
        G.u[j->a].posts++;
}

static void build_tick(void)
{
    static const char *const stage[3] = {"users", "follows", "posts"};
    pool *p = G.pools[0];
    uint64_t now = uv_hrtime();
    if ((B.dry || B.timed_out) && p->busy == 0) {
        B.secs[B.stage] = (double)(now - B.t_stage) / 1e9;
        if (B.stage == 0)
            build_alive();
        B.stage = B.timed_out ? 3 : B.stage + 1;
        B.i = B.k = 0;
        B.dry = false;
        B.t_stage = now;
    }
    if (B.stage == 3 || now > B.deadline + (uint64_t)(DRAIN_S * 1e9)) {
        if (B.stage < 3) /* answers still out: given up */
            B.secs[B.stage] = (double)(now - B.t_stage) / 1e9;
        phase_end();
        return;
    }
    if (now - B.last_print > 2000000000ull) {
        B.last_print = now;
        fprintf(stderr, "social-load: build: %s: %llu done, %llu errors\n", stage[B.stage],
                (unsigned long long)B.ok[B.stage], (unsigned long long)B.err[B.stage]);
    }
    pool_kick(p);
}

static int build(void)
{
    if (B.edges == NULL && G.o.follows > 0 && setup_zipf() != 0) {
        fprintf(stderr, "social-load: out of memory for %u users\n", G.n);
        return -1;
    }
    fprintf(stderr, "social-load: building %u users, %s, %u posts each, on %u connections\n",
            G.n, B.edges ? "the follows of the edge list" : "a generated power-law graph",
            G.o.preload, G.o.build_conns);
    pool *p = pool_new(G.o.build_conns, false, true);
    p->next = build_next;
    p->done = build_done;
    B.t_stage = B.last_print = uv_hrtime();
    B.deadline = B.t_stage + (uint64_t)(G.o.build_timeout * 1e9);
    phase(&p, 1, NULL, build_tick);
    if (B.stage == 0 || (B.stage < 3 && G.nalive == 0))
        build_alive();
    pool_free(p);
    free(B.cdf);
    free(B.perm);
    free(B.mark);
    free(B.fl);
    return 0;
}

/* ---- --state / --reuse: the users of a build -------------------------------------------------- */

static void save_state(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "social-load: %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "social-load-state 1 %s %u\n", G.tag, G.n);
    for (uint32_t i = 0; i < G.n; i++)
        fprintf(f, "%s %u %u %ld\n", G.u[i].id[0] ? G.u[i].id : "-", G.u[i].posts,
                G.u[i].followers, G.u[i].a_follower == NONE ? -1L : (long)G.u[i].a_follower);
    if (fclose(f) != 0)
        fprintf(stderr, "social-load: %s: %s\n", path, strerror(errno));
}

static int load_state(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned n = 0;
    int rc = -1;
    if (f == NULL || fscanf(f, "social-load-state 1 %15s %u", G.tag, &n) != 2 || n == 0 ||
        n > MAX_USERS || (G.u = calloc(n, sizeof *G.u)) == NULL) {
        fprintf(stderr, "social-load: %s: not a social-load state file\n", path);
    } else {
        G.n = n;
        rc = 0;
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            char id[64];
            long fol;
            user *u = &G.u[i];
            if (fscanf(f, "%63s %u %u %ld", id, &u->posts, &u->followers, &fol) != 4 ||
                fol >= (long)n || fol < -1) {
                fprintf(stderr, "social-load: %s: user %u is unreadable\n", path, i);
                rc = -1;
            } else {
                snprintf(u->id, ID_CAP, "%s", strcmp(id, "-") != 0 && id_ok(id) ? id : "");
                u->a_follower = fol < 0 ? NONE : (uint32_t)fol;
            }
        }
    }
    if (f != NULL)
        fclose(f);
    return rc;
}

/* ---- the run: the mix, the lag probes, /health once a second -------------------------------- */

typedef struct probe {
    enum { P_IDLE, P_BUSY, P_WAIT } state;
    uint32_t gen, author, reader; /* reader: the follower whose timeline is polled, NONE */
    char post[128];
    uint64_t base_us, start_ns, posted_ns, wake_ns;
    bool seen_tl, seen_s;
    bool has_job;
    job j;
} probe;

static probe PR[PROBE_SLOTS];

static struct {
    pool *mp, *pp, *hp;         /* the mix, the probes, /health */
    int tfd;                    /* open loop: a timerfd armed for the next operation, or -1 */
    uv_poll_t tpoll;
    uint64_t sched, t_end, last_up, last_answer;
    uint64_t fired_ns;          /* the timerfd's last firing (--send-gap-us) */
    bool load_over, health_want;
    health h0, h1;              /* at the start and at the end of the load */
    unsigned mixw[NMIX], mixsum;
} R;

static struct {
    unsigned started, posted, failed, no_reader, tl_n, s_n, tl_missed, s_missed;
    uint64_t *tl, *s;           /* lags (µs) of the samples seen */
    bool skew;                  /* the node's clock disagreed with ours: 201 times used */
} L;

static void mix_job(job *j, uint64_t due, uint64_t at_ns)
{
    unsigned x = (unsigned)(rnd() % R.mixsum), op = 0;
    while (x >= R.mixw[op])
        x -= R.mixw[op++];
    *j = (job){.op = (uint8_t)op, .a = any_user(), .b = (uint32_t)rnd(), .due = due};
    ST[op].sched++;
    size_t sec = (size_t)(at_ns / 1000000000u);
    if (sec < SERIES)
        PS[sec].offered++;
}

/* Open loop: operation k is due at t0 + k / rate. */
static void schedule(uint64_t now)
{
    double el = (double)(now - G.t0) / 1e9;
    double upto = (el < G.o.duration ? el : G.o.duration) * G.o.rate;
    pool *p = R.mp;
    while ((double)(R.sched + 1) <= upto) {
        uint64_t at = (uint64_t)((double)++R.sched / G.o.rate * 1e9);
        job j;
        mix_job(&j, G.t0 + at, at);
        if (p->qlen == QUEUE_CAP) {
            ST[j.op].not_sent++;
            continue;
        }
        p->q[(p->qhead + p->qlen++) % QUEUE_CAP] = j;
    }
}

/* Open loop, precisely: the timerfd fires when the next operation is due (libuv's own timers
 * count whole milliseconds); the 1 ms tick still runs, as a fallback. */
static void precise_arm(void)
{
#ifdef __linux__
    double k = (double)R.sched + 1;
    if (k > G.o.duration * G.o.rate)
        return; /* all scheduled */
    uint64_t at = G.t0 + (uint64_t)(k / G.o.rate * 1e9) + 1000u; /* +1 µs: past rounding */
    uint64_t gap = R.fired_ns + (uint64_t)G.o.send_gap_us * 1000u;
    if (R.fired_ns != 0 && at < gap)
        at = gap; /* at most one firing a gap: what is due then goes out together */
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    (void)timerfd_settime(R.tfd, TFD_TIMER_ABSTIME, &its, NULL);
#endif
}

static void precise_fire(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    uint64_t x;
    if (read(R.tfd, &x, sizeof x) < 0 && errno != EAGAIN)
        return;
    if (R.load_over || G.ending)
        return;
    R.fired_ns = uv_hrtime();
    schedule(R.fired_ns);
    pool_kick(R.mp);
    precise_arm();
}

/* Starts the precise schedule (uv_hrtime is CLOCK_MONOTONIC on Linux, as the timerfd); without
 * a timerfd the 1 ms tick schedules alone. */
static void precise_start(void)
{
    R.tfd = -1;
#ifdef __linux__
    if (G.o.closed != 0)
        return;
    R.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (R.tfd < 0)
        return;
    if (uv_poll_init(G.loop, &R.tpoll, R.tfd) != 0) {
        close(R.tfd);
        R.tfd = -1;
        return;
    }
    uv_poll_start(&R.tpoll, UV_READABLE, precise_fire);
    precise_arm();
#endif
}

static void precise_closed(uv_handle_t *h)
{
    (void)h;
    close(R.tfd);
    R.tfd = -1;
}

static void precise_stop(void)
{
    if (R.tfd >= 0 && !uv_is_closing((uv_handle_t *)&R.tpoll))
        uv_close((uv_handle_t *)&R.tpoll, precise_closed);
}

/* Closed loop: each connection's next operation as soon as its last is answered. */
static bool closed_next(conn *c, job *j)
{
    (void)c;
    uint64_t now = uv_hrtime();
    if (G.t0 == 0 || now - G.t0 >= (uint64_t)(G.o.duration * 1e9))
        return false;
    mix_job(j, 0, now - G.t0);
    return true;
}

static void mix_done(conn *c, int status, const char *body, size_t len)
{
    (void)body;
    (void)len;
    if (status > 0)
        R.last_answer = uv_hrtime();
    if (c->j.op == OP_POST && status == 201)
        G.u[c->j.a].posts++;
}

static bool health_next(conn *c, job *j)
{
    (void)c;
    if (!R.health_want)
        return false;
    R.health_want = false;
    *j = (job){.op = OP_HEALTH};
    return true;
}

static void health_done(conn *c, int status, const char *body, size_t len)
{
    (void)c;
    (void)len;
    health h = status == 200 ? parse_health(body) : (health){0};
    uint64_t now = uv_hrtime();
    size_t sec = (size_t)((now - G.t0) / 1000000000u);
    if (h.ok && sec <= SERIES && !R.load_over)
        INS[sec] = h.inserts;
    if (h.ok && R.load_over && !R.h1.ok)
        R.h1 = h;
}

static void probe_send(unsigned i, int op, uint32_t who)
{
    probe *p = &PR[i];
    p->state = P_BUSY;
    p->j = (job){.op = (uint8_t)op, .a = who, .b = p->gen};
    p->has_job = true;
    send_next(&R.pp->c[i]);
}

static bool probe_next(conn *c, job *j)
{
    probe *p = &PR[c->slot];
    if (!p->has_job)
        return false;
    p->has_job = false;
    *j = p->j;
    return true;
}

static void probe_start(unsigned i)
{
    probe *p = &PR[i];
    uint32_t a = any_user();
    for (int tries = 0; tries < 64 && G.u[a].a_follower == NONE; tries++)
        a = any_user();
    *p = (probe){.gen = ++L.started, .author = a, .reader = G.u[a].a_follower,
                 .start_ns = uv_hrtime()};
    L.no_reader += p->reader == NONE;
    if (p->reader != NONE) /* its timeline runs from this read on, fed by the fan-out */
        probe_send(i, OP_PRIME, p->reader);
    else
        probe_send(i, OP_PPOST, a);
}

static void probe_stop(unsigned i)
{
    probe *p = &PR[i];
    if (p->posted_ns != 0) {
        L.tl_missed += !p->seen_tl && p->reader != NONE;
        L.s_missed += !p->seen_s;
    } else {
        L.failed++; /* not posted in time */
    }
    p->state = P_IDLE;
    p->has_job = false;
}

/* The next poll of sample i after an answer to op: a round polls the timeline, then the
 * search (what is still unseen), then waits 1 ms during the first 20 ms after the post (most
 * posts show within them), --lag-poll-ms after. */
static void probe_poll(unsigned i, int op)
{
    probe *p = &PR[i];
    bool tl = !p->seen_tl && p->reader != NONE;
    if (!tl && p->seen_s)
        probe_stop(i);
    else if (op == OP_PTL && !p->seen_s)
        probe_send(i, OP_PSEARCH, p->author);
    else if (op == OP_PPOST || op < 0) /* a new round */
        probe_send(i, tl ? OP_PTL : OP_PSEARCH, tl ? p->reader : p->author);
    else {
        uint64_t now = uv_hrtime();
        p->state = P_WAIT;
        p->wake_ns = now + (now - p->posted_ns < 20000000u ? 1 : G.o.lag_poll_ms) * 1000000ull;
    }
}

/* The post's id and ts from its 201: the lags count from ts (the node's commit time), unless the
 * node's clock disagrees with ours, then from the middle of the request. */
static bool probe_posted(probe *p, const char *body, uint64_t sent_ns)
{
    cJSON *j = cJSON_Parse(body);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    double ts = jnum(j, "ts");
    bool ok = cJSON_IsString(id) && strlen(id->valuestring) < sizeof p->post && ts > 0;
    if (ok) {
        uint64_t now = wall_us(), sent = now - (uv_hrtime() - sent_ns) / 1000u;
        snprintf(p->post, sizeof p->post, "%s", id->valuestring);
        p->base_us = (uint64_t)ts;
        if (ts + 2000 < (double)sent || ts > (double)now + 2000) {
            p->base_us = (sent + now) / 2;
            L.skew = true;
        }
        p->posted_ns = uv_hrtime();
    }
    cJSON_Delete(j);
    return ok;
}

static void probe_done(conn *c, int status, const char *body, size_t len)
{
    (void)len;
    probe *p = &PR[c->slot];
    const job *j = &c->j;
    if (j->b != p->gen || p->state != P_BUSY || G.ending)
        return; /* a sample given up, or the end */
    uint64_t now = wall_us(), lag = now > p->base_us ? now - p->base_us : 0;
    switch (j->op) {
    case OP_PRIME:
        if (status != 200)
            p->reader = NONE;
        probe_send(c->slot, OP_PPOST, p->author);
        return;
    case OP_PPOST:
        if (status != 201 || !probe_posted(p, body, j->due)) {
            probe_stop(c->slot);
            return;
        }
        G.u[p->author].posts++;
        L.posted++;
        break;
    case OP_PTL:
        if (status == 200 && strstr(body, p->post) != NULL) {
            p->seen_tl = true;
            L.tl[L.tl_n++] = lag;
        }
        break;
    default:
        if (status == 200 && strstr(body, p->post) != NULL) {
            p->seen_s = true;
            L.s[L.s_n++] = lag;
        }
        break;
    }
    probe_poll(c->slot, j->op);
}

/* Starts the samples that are due (sample k at (k + 1/2) / n of the run; late ones while the
 * load lasts), wakes the waiting ones, gives up those older than --lag-timeout. */
static void probes_tick(uint64_t now, double el)
{
    uint64_t timeout = (uint64_t)(G.o.lag_timeout * 1e9);
    for (unsigned i = 0; i < R.pp->n; i++) {
        probe *p = &PR[i];
        double due = ((double)L.started + 0.5) / G.o.lag_samples * G.o.duration;
        if (p->state == P_IDLE && L.started < G.o.lag_samples && el >= due && !R.load_over)
            probe_start(i);
        else if (p->state != P_IDLE && now - (p->posted_ns ? p->posted_ns : p->start_ns) > timeout)
            probe_stop(i);
        else if (p->state == P_WAIT && now >= p->wake_ns)
            probe_poll(i, -1);
        if (p->has_job && may_open(&R.pp->c[i]))
            conn_open(&R.pp->c[i]);
    }
}

/* After the load: whether the samples under way are over (or out of time). */
static bool probes_over(double el)
{
    for (unsigned i = 0; i < R.pp->n; i++)
        if (PR[i].state != P_IDLE)
            return el >= G.o.duration + DRAIN_S + G.o.lag_timeout + 5;
    return true;
}

/* The load is over: what was not answered is lost, what never left is not sent. */
static void load_over(uint64_t now)
{
    pool *p = R.mp;
    R.load_over = true;
    R.t_end = now;
    precise_stop();
    p->reopen = false;
    for (unsigned i = 0; i < p->n; i++)
        if (!p->c[i].closed)
            conn_fail(&p->c[i]);
    for (; p->qlen > 0; p->qlen--, p->qhead = (p->qhead + 1) % QUEUE_CAP)
        ST[p->q[p->qhead].op].not_sent++;
    R.health_want = true;
}

static void run_tick(void)
{
    static size_t health_sec = SIZE_MAX;
    uint64_t now = uv_hrtime();
    double el = (double)(now - G.t0) / 1e9;
    if (!R.load_over) {
        if (G.o.closed == 0)
            schedule(now);
        pool_kick(R.mp);
        for (unsigned i = 0; i < R.mp->n && R.last_up != now; i++)
            R.last_up = R.mp->c[i].up ? now : R.last_up;
        /* over: all answered, or the drain's time is up, or no connection for 1 s (the node
         * is gone) */
        if (el >= G.o.duration &&
            ((R.mp->busy == 0 && (R.mp->qlen == 0 || now - R.last_up > 1000000000u)) ||
             el >= G.o.duration + DRAIN_S))
            load_over(now);
    }
    probes_tick(now, el);
    if ((size_t)el != health_sec && !R.load_over) { /* once at the start of each second */
        health_sec = (size_t)el;
        R.health_want = true;
    }
    pool_kick(R.hp);
    /* the end: the load and the samples are over, and /health was read after the load (or
     * could not be within 5 s) */
    if (R.load_over && probes_over(el) && (R.h1.ok || now - R.t_end > 5000000000ull))
        phase_end();
}

static void run_start(void)
{
    R.h0 = get_health();
    for (size_t s = 0; s <= SERIES; s++)
        INS[s] = -1;
    G.t0 = R.last_up = uv_hrtime();
    precise_start();
}

static void run(void)
{
    unsigned conns = G.o.closed ? G.o.closed : G.o.conns;
    R.mp = pool_new(conns, G.o.closed == 0, true);
    R.mp->next = G.o.closed ? closed_next : NULL;
    R.mp->done = mix_done;
    unsigned slots = G.o.lag_samples < PROBE_SLOTS ? G.o.lag_samples : PROBE_SLOTS;
    R.pp = pool_new(slots ? slots : 1, false, false);
    R.pp->next = probe_next;
    R.pp->done = probe_done;
    R.hp = pool_new(1, false, true);
    R.hp->next = health_next;
    R.hp->done = health_done;
    L.tl = calloc(G.o.lag_samples + 1u, sizeof *L.tl);
    L.s = calloc(G.o.lag_samples + 1u, sizeof *L.s);
    if (L.tl == NULL || L.s == NULL) {
        fprintf(stderr, "social-load: out of memory\n");
        exit(1);
    }
    if (G.o.closed)
        fprintf(stderr, "social-load: closed loop on %u connections for %.0f s...\n",
                G.o.closed, G.o.duration);
    else
        fprintf(stderr, "social-load: %.0f operations/s on %u connections for %.0f s...\n",
                G.o.rate, G.o.conns, G.o.duration);
    pool *pools[3] = {R.mp, R.pp, R.hp};
    phase(pools, 3, run_start, run_tick);
    pool_free(R.mp);
    pool_free(R.pp);
    pool_free(R.hp);
}

/* ---- the report ---------------------------------------------------------------------------- */

/* Nearest-rank quantile p of v[0..n) (sorted), in ms. */
static double lag_ms(const uint64_t *v, unsigned n, double p)
{
    if (n == 0)
        return 0;
    unsigned k = (unsigned)ceil(p * n);
    return (double)v[k > 0 ? k - 1 : 0] / 1000.0;
}

static cJSON *op_report(const opstat *s, const char *name, bool text)
{
    double q[5] = {quantile(s, 0.5), quantile(s, 0.9), quantile(s, 0.99), quantile(s, 0.999),
                   (double)s->max_us / 1000.0};
    uint64_t errors = s->answered - s->ok + s->lost;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)s->sched);
    cJSON_AddNumberToObject(o, "ok", (double)s->ok);
    cJSON_AddNumberToObject(o, "errors", (double)errors);
    cJSON_AddNumberToObject(o, "not_sent", (double)s->not_sent);
    cJSON *lat = cJSON_AddObjectToObject(o, "latency_ms"),
          *st = cJSON_AddObjectToObject(o, "errors_by_status");
    static const char *const qn[5] = {"p50", "p90", "p99", "p99.9", "max"};
    for (int k = 0; k < 5; k++)
        cJSON_AddNumberToObject(lat, qn[k], round(q[k] * 1000) / 1000);
    char err[512] = "";
    size_t el = 0;
    for (int c = 100; c < 1000; c++)
        if ((c < 200 || c >= 300) && s->status[c] > 0) {
            char k[8];
            snprintf(k, sizeof k, "%d", c);
            cJSON_AddNumberToObject(st, k, (double)s->status[c]);
            if (el < sizeof err - 40)
                el += (size_t)snprintf(err + el, sizeof err - el, " %d x%llu", c,
                                       (unsigned long long)s->status[c]);
        }
    if (s->lost > 0) {
        cJSON_AddNumberToObject(st, "lost", (double)s->lost);
        snprintf(err + el, sizeof err - el, " lost x%llu", (unsigned long long)s->lost);
    }
    if (text)
        printf("  %-9s %9llu %9llu %7llu %8llu %8.2f %8.2f %8.2f %8.2f %8.2f%s%s\n", name,
               (unsigned long long)s->sched, (unsigned long long)s->ok,
               (unsigned long long)errors, (unsigned long long)s->not_sent, q[0], q[1], q[2],
               q[3], q[4], err[0] ? "  errors:" : "", err);
    return o;
}

static cJSON *lag_report(const char *name, uint64_t *v, unsigned n, unsigned missed,
                         const health *h, bool timeline)
{
    qsort(v, n, sizeof *v, cmp_u64);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "seen", n);
    cJSON_AddNumberToObject(o, "not_seen", missed);
    cJSON_AddNumberToObject(o, "p50_ms", round(lag_ms(v, n, 0.5) * 100) / 100);
    cJSON_AddNumberToObject(o, "p99_ms", round(lag_ms(v, n, 0.99) * 100) / 100);
    cJSON_AddNumberToObject(o, "max_ms", round(lag_ms(v, n, 1.0) * 100) / 100);
    cJSON *node = h->ok ? cJSON_AddObjectToObject(o, "node") : NULL;
    if (node == NULL)
        cJSON_AddNullToObject(o, "node");
    double p50 = timeline ? h->tl_p50 : h->s_p50, p99 = timeline ? h->tl_p99 : h->s_p99;
    double ns = timeline ? h->tl_n : h->s_n, behind = timeline ? h->tl_behind : h->s_behind;
    cJSON_AddNumberToObject(node, "p50_ms", p50);
    cJSON_AddNumberToObject(node, "p99_ms", p99);
    cJSON_AddNumberToObject(node, "samples", ns);
    cJSON_AddNumberToObject(node, "events_behind", behind);
    if (n + missed == 0)
        printf("  %-8s  probes: none;", name);
    else
        printf("  %-8s  probes: %u seen, p50 %.2f ms, p99 %.2f ms, max %.2f ms, %u not within %.0f s;",
               name, n, lag_ms(v, n, 0.5), lag_ms(v, n, 0.99), lag_ms(v, n, 1.0), missed,
               G.o.lag_timeout);
    if (h->ok)
        printf("  node: p50 %.0f ms, p99 %.0f ms (%.0f samples, %.0f events behind)\n", p50, p99,
               ns, behind);
    else
        printf("  node: /health unreadable\n");
    return o;
}

/* Up to 5 users with posts: the node's count of their posts against ours. */
static cJSON *posts_check(unsigned *checked, unsigned *mismatched)
{
    cJSON *a = cJSON_CreateArray();
    static char buf[4096];
    uint32_t seen[5];
    *checked = *mismatched = 0;
    for (int tries = 0; tries < 200 && *checked < 5 && G.nalive > 0; tries++) {
        uint32_t i = any_user();
        char path[64];
        bool again = false;
        for (unsigned k = 0; k < *checked; k++)
            again |= seen[k] == i;
        if (again || (G.u[i].posts == 0 && tries < 100))
            continue;
        snprintf(path, sizeof path, "/users/%s", G.u[i].id);
        if (fetch(path, buf, sizeof buf) != 200)
            continue;
        cJSON *j = cJSON_Parse(buf);
        double node = jnum(j, "posts");
        cJSON_Delete(j);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "user", G.u[i].id);
        cJSON_AddNumberToObject(o, "ours", G.u[i].posts);
        cJSON_AddNumberToObject(o, "node", node);
        cJSON_AddItemToArray(a, o);
        seen[(*checked)++] = i;
        *mismatched += node != (double)G.u[i].posts;
    }
    return a;
}

static void followers_stats(cJSON *o)
{
    uint32_t *f = malloc((G.n ? G.n : 1) * sizeof *f);
    if (f == NULL)
        return;
    uint64_t sum = 0, celeb = 0;
    for (uint32_t i = 0; i < G.n; i++) {
        f[i] = G.u[i].followers;
        sum += f[i];
        celeb += f[i] > 10000;
    }
    qsort(f, G.n, sizeof *f, cmp_u32);
    double mean = G.n ? (double)sum / G.n : 0;
    uint32_t p50 = f[G.n / 2], p99 = f[(size_t)((G.n - 1) * 0.99)], max = f[G.n - 1];
    cJSON_AddNumberToObject(o, "mean", round(mean * 10) / 10);
    cJSON_AddNumberToObject(o, "p50", p50);
    cJSON_AddNumberToObject(o, "p99", p99);
    cJSON_AddNumberToObject(o, "max", max);
    cJSON_AddNumberToObject(o, "above_10000", (double)celeb);
    printf("followers per user: mean %.1f, p50 %u, p99 %u, max %u; %llu above 10000 (the node's "
           "default celebrity_followers)\n",
           mean, p50, p99, max, (unsigned long long)celeb);
    free(f);
}

/* Fan-out inserts in each second of the run, from the /health readings, one at the start of
 * each second (where one is missing, the next one's difference covers both seconds). */
static void fanout_series(double *out, size_t secs)
{
    double last = R.h0.inserts;
    for (size_t s = 0; s < secs; s++) {
        double at = s + 1 == secs && R.h1.ok ? R.h1.inserts : INS[s + 1];
        out[s] = at >= 0 ? at - last : 0;
        if (at >= 0)
            last = at;
    }
}

static void chart(const char *png, const double *fan, size_t secs)
{
    FILE *g = popen("command -v gnuplot >/dev/null 2>&1 || exit 127; exec gnuplot", "w");
    if (g == NULL) {
        printf("chart: not drawn (%s)\n", strerror(errno));
        return;
    }
    fprintf(g, "$d << EOD\n");
    for (size_t s = 0; s < secs; s++)
        fprintf(g, "%zu %llu %llu %llu %.0f %.3f %.3f\n", s, (unsigned long long)PS[s].offered,
                (unsigned long long)PS[s].ok, (unsigned long long)PS[s].err, fan[s],
                PS[s].n ? (double)PS[s].sum_us / (double)PS[s].n / 1000.0 : 0.0,
                (double)PS[s].max_us / 1000.0);
    fprintf(g, "EOD\nset terminal png size 1000,700\nset output '%s'\n"
               "set multiplot layout 2,1 title 'social-load: %s'\n"
               "set xrange [0:%zu]\nset grid\nset key outside right top\n"
               "set ylabel 'per second'\nset yrange [0:*]\n"
               "plot $d using ($1+0.5):2 with linespoints title 'offered operations', "
               "$d using ($1+0.5):3 with linespoints title 'answered 2xx', "
               "$d using ($1+0.5):4 with linespoints title 'errors', "
               "$d using ($1+0.5):5 with linespoints title 'fan-out inserts'\n"
               "set xlabel 'seconds'\nset ylabel 'ms'\nset logscale y\nset yrange [*:*]\n"
               "plot $d using ($1+0.5):($6+0.001) with linespoints title 'mean latency', "
               "$d using ($1+0.5):($7+0.001) with linespoints title 'max latency'\n"
               "unset multiplot\n",
            png, G.o.closed ? "closed loop" : "open loop (latency from the scheduled time)", secs);
    int st = pclose(g);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        printf("chart: %s\n", png);
    else if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 127)
        printf("chart: not drawn (gnuplot is not installed: apt-get install gnuplot-nox); the "
               "per-second numbers are in the --json report\n");
    else
        printf("chart: not drawn (gnuplot failed)\n");
}

static cJSON *build_report(bool built, double settle_s, bool caught_up)
{
    static const char *const what[3] = {"users", "follows", "posts"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "reused", !built);
    if (!built) {
        printf("build: reused %u users from %s\n", G.nalive, G.o.reuse);
        cJSON_AddNumberToObject(o, "users", G.nalive);
    } else {
        printf("build:");
        for (int k = 0; k < 3; k++) {
            cJSON *s = cJSON_AddObjectToObject(o, what[k]);
            cJSON_AddNumberToObject(s, "created", (double)B.ok[k]);
            cJSON_AddNumberToObject(s, "errors", (double)B.err[k]);
            cJSON_AddNumberToObject(s, "seconds", round(B.secs[k] * 1000) / 1000);
            printf(" %llu %s (%llu errors) in %.1f s%s", (unsigned long long)B.ok[k], what[k],
                   (unsigned long long)B.err[k], B.secs[k], k < 2 ? "," : "\n");
        }
        if (B.timed_out)
            printf("build: stopped at --build-timeout (%.0f s)\n", G.o.build_timeout);
        cJSON_AddBoolToObject(o, "timed_out", B.timed_out);
        if (G.o.graph != NULL) {
            printf("graph: %s: %llu lines, %zu distinct edges (%llu self-loops, %llu duplicates, "
                   "%llu unreadable lines left out), %u nodes\n",
                   G.o.graph, (unsigned long long)B.lines, B.nedges, (unsigned long long)B.self,
                   (unsigned long long)B.dups, (unsigned long long)B.bad, G.n);
            cJSON_AddStringToObject(o, "graph", G.o.graph);
            cJSON_AddNumberToObject(o, "edges", (double)B.nedges);
        } else {
            printf("graph: generated: %u users, %u follows each on average, zipf %.2f\n", G.n,
                   G.o.follows, G.o.zipf);
            cJSON_AddStringToObject(o, "graph", "generated");
            cJSON_AddNumberToObject(o, "zipf", G.o.zipf);
        }
    }
    followers_stats(cJSON_AddObjectToObject(o, "followers"));
    printf("settle: the node's read models %s after %.1f s\n",
           caught_up ? "had caught up" : "had NOT caught up", settle_s);
    cJSON_AddNumberToObject(o, "settle_s", round(settle_s * 10) / 10);
    cJSON_AddBoolToObject(o, "caught_up", caught_up);
    return o;
}

static void report(bool built, double settle_s, bool caught_up, const health *end)
{
    static opstat all;
    cJSON *root = cJSON_CreateObject();
    char node[300];
    snprintf(node, sizeof node, "%s:%d", G.o.host, G.o.port);
    printf("\n== social-load report: node %s, tag %s, seed %llu ==\n", node, G.tag, G.o.seed);
    cJSON_AddStringToObject(root, "node", node);
    cJSON_AddStringToObject(root, "tag", G.tag);
    cJSON_AddNumberToObject(root, "seed", (double)G.o.seed);
    cJSON_AddItemToObject(root, "build", build_report(built, settle_s, caught_up));

    /* the load's time: its duration, or longer if answers came after */
    double elapsed = R.last_answer > G.t0 ? (double)(R.last_answer - G.t0) / 1e9 : 0;
    elapsed = elapsed > G.o.duration ? elapsed : G.o.duration;
    for (int op = 0; op < NMIX; op++) {
        all.sched += ST[op].sched;
        all.not_sent += ST[op].not_sent;
        all.answered += ST[op].answered;
        all.ok += ST[op].ok;
        all.lost += ST[op].lost;
        for (unsigned b = 0; b < 1000; b++)
            all.status[b] += ST[op].status[b];
        for (unsigned b = 0; b < HB; b++)
            all.hist[b] += ST[op].hist[b];
        if (ST[op].max_us > all.max_us)
            all.max_us = ST[op].max_us;
    }
    cJSON *r = cJSON_AddObjectToObject(root, "run");
    cJSON_AddStringToObject(r, "mode", G.o.closed ? "closed" : "open");
    cJSON_AddNumberToObject(r, G.o.closed ? "connections" : "rate", G.o.closed ? G.o.closed : G.o.rate);
    if (!G.o.closed)
        cJSON_AddNumberToObject(r, "send_gap_us", G.o.send_gap_us);
    cJSON_AddNumberToObject(r, "duration_s", G.o.duration);
    cJSON_AddNumberToObject(r, "elapsed_s", round(elapsed * 1000) / 1000);
    cJSON_AddNumberToObject(r, "answered_per_s", round((double)all.answered / elapsed * 10) / 10);
    if (G.o.closed)
        printf("run: closed loop on %u connections for %.1f s: %llu answered, %.0f operations/s "
               "(latency from the send)\n",
               G.o.closed, elapsed, (unsigned long long)all.answered,
               (double)all.answered / elapsed);
    else
        printf("run: open loop, %.0f operations/s offered for %.1f s on %u connections: %llu "
               "answered in %.1f s, %.0f operations/s (latency from the scheduled time)\n",
               G.o.rate, G.o.duration, G.o.conns, (unsigned long long)all.answered, elapsed,
               (double)all.answered / elapsed);
    printf("  %-9s %9s %9s %7s %8s %8s %8s %8s %8s %8s   (ms)\n", "operation", "count", "ok",
           "errors", "not-sent", "p50", "p90", "p99", "p99.9", "max");
    cJSON *ops = cJSON_AddObjectToObject(r, "operations");
    for (int op = 0; op < NMIX; op++)
        if (ST[op].sched > 0)
            cJSON_AddItemToObject(ops, OPN[op], op_report(&ST[op], OPN[op], true));
    cJSON_AddItemToObject(ops, "all", op_report(&all, "all", true));

    uint64_t preq = 0, perr = 0;
    for (int op = OP_PRIME; op <= OP_PSEARCH; op++) {
        preq += ST[op].answered + ST[op].lost;
        perr += ST[op].answered - ST[op].ok + ST[op].lost;
    }
    double ins = R.h1.ok && R.h0.ok ? R.h1.inserts - R.h0.inserts : 0;
    double fposts = R.h1.ok && R.h0.ok ? R.h1.fposts - R.h0.fposts : 0;
    cJSON *fo = cJSON_AddObjectToObject(root, "fanout");
    cJSON_AddNumberToObject(fo, "posts", fposts);
    cJSON_AddNumberToObject(fo, "inserts", ins);
    cJSON_AddNumberToObject(fo, "inserts_per_s", round(ins / elapsed * 10) / 10);
    printf("fan-out: %.0f posts fanned out, %.0f timeline inserts: %.0f deliveries/s%s\n", fposts,
           ins, ins / elapsed, R.h1.ok && R.h0.ok ? "" : " (/health unreadable)");

    cJSON *lag = cJSON_AddObjectToObject(root, "lag");
    cJSON_AddNumberToObject(lag, "samples", L.started);
    cJSON_AddNumberToObject(lag, "posted", L.posted);
    cJSON_AddNumberToObject(lag, "failed", L.failed);
    cJSON_AddNumberToObject(lag, "poll_ms", G.o.lag_poll_ms);
    cJSON_AddBoolToObject(lag, "clock_skew", L.skew);
    printf("lag (event -> visible): %u samples of %u (%u posted, %u failed, %u with no follower), "
           "polled every 1 ms for 20 ms, then every %u ms; probe requests %llu, errors %llu%s\n",
           L.started, G.o.lag_samples, L.posted, L.failed, L.no_reader, G.o.lag_poll_ms,
           (unsigned long long)preq, (unsigned long long)perr,
           L.skew ? "; the node's clock is off ours: some lags count from the 201" : "");
    cJSON_AddItemToObject(lag, "timeline", lag_report("timeline", L.tl, L.tl_n, L.tl_missed, end, true));
    cJSON_AddItemToObject(lag, "search", lag_report("search", L.s, L.s_n, L.s_missed, end, false));

    unsigned checked, mismatched;
    cJSON *pc = cJSON_AddObjectToObject(root, "posts_check");
    cJSON_AddItemToObject(pc, "users", posts_check(&checked, &mismatched));
    cJSON_AddNumberToObject(pc, "mismatched", mismatched);
    printf("posts check: %u users, %s\n", checked,
           checked == 0  ? "none could be read from the node"
           : mismatched ? "MISMATCH: the node counts other posts than were created (see --json)"
                        : "the node's post counts match the posts created");

    size_t secs = (size_t)(elapsed + 0.8); /* a last fifth of a second is left out */
    secs = secs < SERIES ? secs : SERIES;
    double *fan = calloc(secs + 1, sizeof *fan);
    cJSON *ser = cJSON_AddArrayToObject(root, "per_second");
    if (fan != NULL)
        fanout_series(fan, secs);
    for (size_t s = 0; s < secs && fan != NULL; s++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "t", (double)s);
        cJSON_AddNumberToObject(o, "offered", (double)PS[s].offered);
        cJSON_AddNumberToObject(o, "ok", (double)PS[s].ok);
        cJSON_AddNumberToObject(o, "errors", (double)PS[s].err);
        cJSON_AddNumberToObject(o, "fanout_inserts", fan[s]);
        cJSON_AddNumberToObject(o, "mean_ms",
                                PS[s].n ? round((double)PS[s].sum_us / (double)PS[s].n) / 1000 : 0);
        cJSON_AddNumberToObject(o, "max_ms", (double)PS[s].max_us / 1000);
        cJSON_AddItemToArray(ser, o);
    }
    if (G.o.json != NULL) {
        char *text = cJSON_Print(root);
        FILE *f = fopen(G.o.json, "w");
        if (text == NULL || f == NULL || fputs(text, f) < 0 || fputc('\n', f) == EOF)
            printf("report: cannot write %s\n", G.o.json);
        else
            printf("report: %s\n", G.o.json);
        if (f != NULL)
            fclose(f);
        free(text);
    }
    if (G.o.png != NULL && fan != NULL)
        chart(G.o.png, fan, secs);
    free(fan);
    cJSON_Delete(root);
}

/* ---- flags --------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: social-load [options]   (apps/social/README.md)\n"
            "Builds a network on a social node through its HTTP API, runs a mix of operations\n"
            "against it, reports latency, fan-out and lag.\n"
            "  --url HOST:PORT       the node (default 127.0.0.1:8090)\n"
            "the network:\n"
            "  --users N             users to create (default 1000, at most 10000000)\n"
            "  --follows N           follows per user on average (default 40, at most 5000)\n"
            "  --zipf S              exponent of the followees' popularity: rank r is picked with\n"
            "                        weight 1/r^S, so the first few are celebrities (default 1.0)\n"
            "  --graph FILE          instead: an edge list, 'a b' per line (a follows b; SNAP and\n"
            "                        Network Repository files; '#' and '%%' lines skipped)\n"
            "  --preload-posts N     posts per user created by the build (default 10)\n"
            "  --build-conns N       connections building the network (default 32)\n"
            "  --build-timeout S     the build stops after S seconds (default 1800)\n"
            "  --state FILE          write the users built (and their posts) to FILE\n"
            "  --reuse FILE          skip the build: take the users of a --state FILE\n"
            "  --settle S            wait at most S s for the read models to catch up after the\n"
            "                        build (default 60)\n"
            "the run:\n"
            "  --mix SPEC            weights of the operations (default\n"
            "                        timeline=60,posts=30,post=10,search=0):\n"
            "                          timeline  GET /timeline/{user}?limit=10\n"
            "                          posts     GET /users/{user}/posts?limit=10\n"
            "                          post      POST /posts\n"
            "                          search    GET /search?q=...&limit=10&images=3\n"
            "  --rate R              operations/s, open loop (default 1000)\n"
            "  --closed C            instead: closed loop on C connections (each sends its next\n"
            "                        operation when its last is answered)\n"
            "  --duration S          seconds of load (default 20, at most 3600)\n"
            "  --conns N             open loop: keep-alive connections (default 64)\n"
            "  --send-gap-us N       open loop: wake to send at most every N µs, sending all that\n"
            "                        is due (default 100; 0: a wake-up per operation); the delay\n"
            "                        counts in the latency\n"
            "  --lag-samples N       posts followed until visible in a follower's timeline and in\n"
            "                        search (default 200; 0: none)\n"
            "  --lag-poll-ms N       their polling interval (default 5; every 1 ms during the\n"
            "                        first 20 ms after the post)\n"
            "  --lag-timeout S       a post not visible after S seconds is not seen (default 10)\n"
            "  --seed N              the graph's and the mix's random seed (default 1)\n"
            "the report (text on stdout):\n"
            "  --json FILE           also as JSON\n"
            "  --png FILE            a chart per second (needs gnuplot)\n"
            "exit status: 0 the run completed (errors are in the report), 1 the node could not\n"
            "be reached (or no user created), 2 bad flags\n");
}

typedef struct flag {
    const char *name;
    char kind;                  /* u: unsigned, d: double, s: string */
    double lo, hi;
    size_t off;
} flag;

#define FL(n, k, lo, hi, m) {n, k, lo, hi, offsetof(opts, m)}
static const flag FLAGS[] = {
    FL("--users", 'u', 1, MAX_USERS, users), FL("--follows", 'u', 0, MAX_FOLLOWING, follows),
    FL("--zipf", 'd', 0, 10, zipf), FL("--preload-posts", 'u', 0, 10000, preload),
    FL("--rate", 'd', 0.001, 1e7, rate), FL("--duration", 'd', 0.1, MAX_SECONDS, duration),
    FL("--closed", 'u', 1, 10000, closed), FL("--conns", 'u', 1, 10000, conns),
    FL("--send-gap-us", 'u', 0, 100000, send_gap_us),
    FL("--build-conns", 'u', 1, 10000, build_conns),
    FL("--build-timeout", 'd', 1, MAX_SECONDS, build_timeout),
    FL("--lag-samples", 'u', 0, 100000, lag_samples), FL("--lag-poll-ms", 'u', 1, 1000, lag_poll_ms),
    FL("--lag-timeout", 'd', 0.1, 600, lag_timeout), FL("--settle", 'd', 0, 600, settle),
    FL("--graph", 's', 0, 0, graph), FL("--state", 's', 0, 0, state),
    FL("--reuse", 's', 0, 0, reuse), FL("--json", 's', 0, 0, json), FL("--png", 's', 0, 0, png),
};
#undef FL

static bool parse_mix(const char *spec, unsigned w[NMIX])
{
    char buf[256], *save = NULL;
    unsigned sum = 0;
    if (strlen(spec) >= sizeof buf)
        return false;
    snprintf(buf, sizeof buf, "%s", spec);
    memset(w, 0, NMIX * sizeof *w);
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '='), *end;
        int op = 0;
        if (eq == NULL)
            return false;
        *eq = '\0';
        while (op < NMIX && strcmp(t, OPN[op]) != 0)
            op++;
        unsigned long v = strtoul(eq + 1, &end, 10);
        if (op == NMIX || end == eq + 1 || *end != '\0' || v > 1000000)
            return false;
        w[op] = (unsigned)v;
        sum += (unsigned)v;
    }
    return sum > 0;
}

/* 0: go on, 1: --help, 2: a bad flag (said on stderr). getopt_long: --flag=value or --flag value;
 * the table's flags are options FLAG_BASE + their index. */
enum { NFLAGS = sizeof FLAGS / sizeof FLAGS[0], FLAG_URL = 256, FLAG_MIX, FLAG_SEED, FLAG_BASE };

static int parse_flags(int argc, char **argv, opts *o)
{
    struct option longopts[NFLAGS + 5];
    for (size_t k = 0; k < NFLAGS; k++)
        longopts[k] = (struct option){FLAGS[k].name + 2, required_argument, NULL,
                                      FLAG_BASE + (int)k};
    longopts[NFLAGS] = (struct option){"url", required_argument, NULL, FLAG_URL};
    longopts[NFLAGS + 1] = (struct option){"mix", required_argument, NULL, FLAG_MIX};
    longopts[NFLAGS + 2] = (struct option){"seed", required_argument, NULL, FLAG_SEED};
    longopts[NFLAGS + 3] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[NFLAGS + 4] = (struct option){NULL, 0, NULL, 0};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        const char *v = optarg, *colon;
        char *end;
        if (opt == 'h')
            return 1;
        if (opt < FLAG_URL || opt >= FLAG_BASE + (int)NFLAGS) {
            fprintf(stderr, "Try 'social-load --help'.\n"); /* getopt_long said what is wrong */
            return 2;
        }
        if (opt == FLAG_URL) {
            long port = (colon = strrchr(v, ':')) != NULL ? strtol(colon + 1, &end, 10) : 0;
            if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof o->host ||
                *end != '\0' || port < 1 || port > 65535) {
                fprintf(stderr, "social-load: --url must be HOST:PORT\n");
                return 2;
            }
            snprintf(o->host, sizeof o->host, "%.*s", (int)(colon - v), v);
            o->port = (int)port;
        } else if (opt == FLAG_MIX) {
            if (!parse_mix(v, o->mix)) {
                fprintf(stderr, "social-load: --mix wants NAME=WEIGHT,... of timeline, posts, "
                                "post, search (weights whole, not all 0)\n");
                return 2;
            }
        } else if (opt == FLAG_SEED) {
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (end == v || *end != '\0' || errno != 0 || v[0] == '-') {
                fprintf(stderr, "social-load: --seed wants a whole number\n");
                return 2;
            }
        } else {
            const flag *f = &FLAGS[opt - FLAG_BASE];
            const char *a = f->name;
            char *at = (char *)o + f->off;
            if (f->kind == 's') {
                memcpy(at, &v, sizeof v);
                continue;
            }
            errno = 0;
            double x = strtod(v, &end);
            if (end == v || *end != '\0' || errno != 0 || !(x >= f->lo && x <= f->hi) ||
                (f->kind == 'u' && x != floor(x))) {
                fprintf(stderr, "social-load: %s wants a%s number from %.15g to %.15g\n", a,
                        f->kind == 'u' ? " whole" : "", f->lo, f->hi);
                return 2;
            }
            if (f->kind == 'u') {
                unsigned u = (unsigned)x;
                memcpy(at, &u, sizeof u);
            } else {
                memcpy(at, &x, sizeof x);
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "social-load: unexpected argument '%s'; try 'social-load --help'.\n",
                argv[optind]);
        return 2;
    }
    if (o->graph != NULL && o->reuse != NULL) {
        fprintf(stderr, "social-load: --graph and --reuse exclude each other\n");
        return 2;
    }
    return 0;
}

static bool resolve(const char *host, int port, struct sockaddr_in *sa)
{
    if (uv_ip4_addr(host, port, sa) == 0)
        return true;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return false;
    memcpy(sa, res->ai_addr, sizeof *sa);
    sa->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return true;
}

int main(int argc, char **argv)
{
    opts o = {.host = "127.0.0.1", .port = 8090, .users = 1000, .follows = 40, .preload = 10,
              .conns = 64, .build_conns = 32, .lag_samples = 200, .lag_poll_ms = 5, .send_gap_us = 100, .zipf = 1.0,
              .rate = 1000, .duration = 20, .build_timeout = 1800, .lag_timeout = 10,
              .settle = 60, .mix = {60, 30, 10, 0}, .seed = 1};
    signal(SIGPIPE, SIG_IGN);
    int rc = parse_flags(argc, argv, &o);
    if (rc != 0) {
        usage(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : 2;
    }
    G.o = o;
    if (!resolve(o.host, o.port, &G.addr)) {
        fprintf(stderr, "social-load: cannot resolve %s\n", o.host);
        return 2;
    }
    for (int k = 0; k < NMIX; k++) {
        R.mixw[k] = o.mix[k];
        R.mixsum += o.mix[k];
    }
    G.rng = o.seed;
    uint64_t t = mix64(o.seed ^ (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid());
    G.tag[0] = 's';
    for (int k = 1; k < 7; k++, t /= 36)
        G.tag[k] = "0123456789abcdefghijklmnopqrstuvwxyz"[t % 36];
    static char buf[16384];
    if (fetch("/health", buf, sizeof buf) != 200) {
        fprintf(stderr, "social-load: cannot reach the node at http://%s:%d/health\n", o.host,
                o.port);
        return 1;
    }
    G.loop = uv_default_loop();
    if (o.reuse != NULL) {
        if (load_state(o.reuse) != 0)
            return 2;
    } else if (o.graph != NULL && load_graph(o.graph) != 0) {
        return 2;
    } else if (o.graph == NULL) {
        G.n = o.users;
    }
    if (G.u == NULL)
        G.u = calloc(G.n, sizeof *G.u);
    G.alive = malloc(G.n * sizeof *G.alive);
    if (G.u == NULL || G.alive == NULL) {
        fprintf(stderr, "social-load: out of memory for %u users\n", G.n);
        return 1;
    }
    if (o.reuse == NULL) {
        for (uint32_t i = 0; i < G.n; i++)
            G.u[i].a_follower = NONE;
        if (build() != 0)
            return 1;
    } else {
        build_alive();
        char path[64];
        if (G.nalive > 0)
            snprintf(path, sizeof path, "/users/%s", G.u[G.alive[0]].id);
        if (G.nalive > 0 && fetch(path, buf, sizeof buf) != 200) {
            fprintf(stderr, "social-load: the users of %s are not on this node\n", o.reuse);
            return 1;
        }
    }
    if (G.nalive == 0) {
        fprintf(stderr, "social-load: no user could be created on the node\n");
        return 1;
    }
    if (o.state != NULL)
        save_state(o.state);
    bool caught_up;
    double settle_s = settle(o.settle, &caught_up);
    run();
    health end = get_health();
    report(o.reuse == NULL, settle_s, caught_up, &end);
    if (o.state != NULL)
        save_state(o.state);
    return 0;
}
