/*
 * fuzz_http.c — libFuzzer harness of the HTTP request path end to end: the runtime's HTTP server
 * (http-parser, its limits, pipelining, HEAD, 100-continue, errors it answers itself), the bridge
 * to the actors (troupe/web.h), and the routes and JSON bodies of both apps — the flash sale
 * (apps/flashsale, fs_start) and the social network (apps/social, soc_start) — each started once
 * in this process as its node binary starts it, on a loopback port, its SQLite store and maildir
 * in a temporary directory (made fresh every RESTART_EVERY inputs, so what the inputs create
 * stays bounded).
 *
 * An input's first byte picks the app (even: flash sale, odd: social); the rest is written as it
 * is on a fresh connection. The harness parses the same bytes with http-parser to know how many
 * complete requests they hold (and which are HEAD), reads the answers until it has had that many
 * or the server closed, and checks every answer: a status line "HTTP/1.1 NNN Reason" with a
 * status the apps use (a 500, "no answer set", is a bug; a 503 must say Retry-After, and must not
 * be a call's timeout: every answer comes within ANSWER_MS of the one before, less than the
 * calls' timeout), interim 100s well formed, a
 * Content-Length (none on a 204) matching the body that follows (none after a HEAD), the body
 * strict JSON (GET /metrics: Prometheus text, GET /dashboard a whole HTML page, each as its
 * Content-Type says), no answer after one that said "Connection: close", never more answers than
 * requests plus the one error the server may answer itself, and every complete request answered
 * unless the server closed the connection — a request left without an answer (the harness waits
 * ANSWER_MS) aborts — and a connection the server closes is closed, never reset (a reset can
 * destroy answers the client has not read yet).
 * Sockets are loopback TCP: the web layer owns its connections through libuv, and a
 * socket is what a client has; each connection ends with a reset (SO_LINGER 0: no TIME_WAIT).
 */
#include "app.h"
#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <troupe/json.h>
#include <unistd.h>

#define RESTART_EVERY 20000u    /* inputs to one app before it starts again on an empty store */
#define CALL_MS 4000            /* the apps' call timeout (an actor answering later: 503) */
#define ANSWER_MS 3000          /* each answer comes within this of the one before (or the input
                                 * was sent), else it waited for a call to time out: a bug */
#define MAX_REQUEST 4096u       /* the apps' max_request: small, so inputs reach the limits */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_base[64];         /* the temporary directory */

typedef struct app {
    bool social;
    fs_app *fs;
    soc_app *soc;
    int port;
    unsigned inputs, generation;
    char dir[128], db[160], maildir[160];
} app;

static app g_apps[2] = {{.social = false}, {.social = true}};

static const char *g_got;      /* the answers read so far (printed by die) */
static size_t g_got_len;
static uint64_t g_t0;           /* when this input's connection opened (ms) */
static unsigned long g_503, g_answers; /* answers 503 (retry later), of all answers */
static struct {                 /* the 503s' bodies, told apart (the first few kinds) */
    char body[64];
    unsigned long n;
} g_503_kinds[8];

/* Counts a 503's body among the kinds seen (bounded: kinds past the table go uncounted). */
static void count_503(const char *body, size_t len)
{
    char b[64];
    snprintf(b, sizeof b, "%.*s", (int)(len < sizeof b - 1 ? len : sizeof b - 1), body);
    for (size_t i = 0; i < sizeof g_503_kinds / sizeof g_503_kinds[0]; i++) {
        if (g_503_kinds[i].n == 0)
            snprintf(g_503_kinds[i].body, sizeof g_503_kinds[i].body, "%s", b);
        if (strcmp(g_503_kinds[i].body, b) == 0) {
            g_503_kinds[i].n++;
            return;
        }
    }
}
static uint64_t now_ms(void);

static void die(const char *what)
{
    fprintf(stderr, "fuzz-http: %s (after %llu ms)\n", what,
            (unsigned long long)(g_t0 != 0 ? now_ms() - g_t0 : 0));
    if (g_got != NULL)
        fprintf(stderr, "fuzz-http: the answers read (%zu bytes):\n%.*s\n", g_got_len,
                (int)(g_got_len < 4000 ? g_got_len : 4000), g_got);
    abort();
}

static void quiet_log(void *user, tr_log_level level, const char *component, const char *msg)
{
    (void)user;
    if (level == TR_LOG_ERROR)
        fprintf(stderr, "[%s] %s\n", component, msg);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void app_start(app *a)
{
    snprintf(a->dir, sizeof a->dir, "%s/%s-%u", g_base, a->social ? "social" : "flashsale",
             a->generation++);
    if (mkdir(a->dir, 0700) != 0)
        die("mkdir");
    snprintf(a->db, sizeof a->db, "%s/store.db", a->dir);
    snprintf(a->maildir, sizeof a->maildir, "%s/mail", a->dir);
    tr_store_opts store = {.path = a->db, .sync = TR_SYNC_NORMAL};
    char err[256] = "";
    int rc;
    if (a->social) {
        soc_opts o = {.http_threads = 1,
                      .http_max_request = MAX_REQUEST,
                      .workers = 2,
                      .run_actors = 64,
                      .store = store,
                      .call_timeout_ms = CALL_MS,
                      .idle_ms = 100}; /* passivated at once: starts and stops race requests */
        rc = soc_start(&o, &a->soc, err, sizeof err);
        a->port = rc == TR_OK ? soc_port(a->soc) : 0;
    } else {
        fs_opts o = {.http_threads = 1,
                     .http_max_request = MAX_REQUEST,
                     .store = store,
                     .maildir = a->maildir,
                     .email_rate = 1000,
                     .email_burst = 100,
                     .call_timeout_ms = CALL_MS,
                     .workers = 2,
                     .run_actors = 64};
        rc = fs_start(&o, &a->fs, err, sizeof err);
        a->port = rc == TR_OK ? fs_port(a->fs) : 0;
    }
    if (rc != TR_OK) {
        fprintf(stderr, "fuzz-http: %s: %s\n", err, tr_strerror(rc));
        abort();
    }
    a->inputs = 0;
}

static void app_stop(app *a)
{
    if (a->social)
        soc_stop(a->soc);
    else
        fs_stop(a->fs);
    a->fs = NULL;
    a->soc = NULL;
    nftw(a->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void stop_all(void)
{
    fprintf(stderr, "fuzz-http: %lu answers, %lu of them 503 (retry later)\n", g_answers, g_503);
    for (size_t i = 0; i < sizeof g_503_kinds / sizeof g_503_kinds[0] && g_503_kinds[i].n; i++)
        fprintf(stderr, "fuzz-http:   %lu with %s\n", g_503_kinds[i].n, g_503_kinds[i].body);
    for (int i = 0; i < 2; i++)
        if (g_apps[i].fs != NULL || g_apps[i].soc != NULL)
            app_stop(&g_apps[i]);
    rmdir(g_base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    tr_log_set(quiet_log, NULL, TR_LOG_ERROR);
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_base, sizeof g_base, "%s/fuzz-http-XXXXXX", tmp);
    if (mkdtemp(g_base) == NULL)
        die("mkdtemp");
    for (int i = 0; i < 2; i++)
        app_start(&g_apps[i]);
    atexit(stop_all);
    return 0;
}

/* ---- what the input holds: complete requests, and whether they end in an error ------------- */

typedef struct expect {
    bool *head;                 /* per complete request: a HEAD */
    size_t n, cap;
    bool cur_head;
    bool trail_head;            /* the request under way (not complete) is a HEAD: the server's
                                 * error answer to it may go without its body */
} expect;

static int on_begin(http_parser *p)
{
    ((expect *)p->data)->trail_head = false;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    (void)at;
    (void)n;
    ((expect *)p->data)->trail_head = p->method == HTTP_HEAD; /* known once the URL begins */
    return 0;
}

static int on_headers(http_parser *p)
{
    ((expect *)p->data)->cur_head = p->method == HTTP_HEAD;
    return 0;
}

static int on_complete(http_parser *p)
{
    expect *e = p->data;
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 64;
        bool *h = realloc(e->head, cap * sizeof *h);
        if (h == NULL)
            die("out of memory");
        e->head = h;
        e->cap = cap;
    }
    e->head[e->n++] = e->cur_head;
    return 0;
}

/* ---- the answers ----------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool known_status(int s)
{
    /* no 500: the handler set no answer */
    static const int ok[] = {200, 201, 204, 400, 401, 404, 405, 408, 409, 413, 429, 431, 501,
                             503};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (ok[i] == s)
            return true;
    return false;
}

static const char *find(const char *p, size_t n, const char *s)
{
    return memmem(p, n, s, strlen(s));
}

/* The value of header `name` (lower case, with its ": ") in head[0..n), or NULL. */
static const char *header(const char *head, size_t n, const char *name)
{
    size_t nl = strlen(name);
    for (const char *line = find(head, n, "\r\n"); line != NULL && line + 2 < head + n;) {
        line += 2;
        size_t left = (size_t)(head + n - line);
        if (left >= nl && strncasecmp(line, name, nl) == 0)
            return line + nl;
        line = find(line, left, "\r\n");
    }
    return NULL;
}

/* True if b[0..n) is Prometheus' text exposition as the runtime writes it: lines ending in '\n',
 * each a comment ("# HELP name text", "# TYPE name type") or a sample "name[{labels}] value". */
static bool prom_text(const char *b, size_t n)
{
    if (n == 0 || b[n - 1] != '\n')
        return false;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(b + i, '\n', n - i);
        size_t len = (size_t)(nl - (b + i));
        const char *l = b + i;
        if (len == 0)
            return false;
        if (l[0] == '#') {
            if (!(len > 7 && (strncmp(l, "# HELP ", 7) == 0 || strncmp(l, "# TYPE ", 7) == 0)))
                return false;
        } else {
            if (!((l[0] >= 'a' && l[0] <= 'z') || (l[0] >= 'A' && l[0] <= 'Z') || l[0] == '_' ||
                  l[0] == ':'))
                return false;
            const char *sp = NULL; /* the space before the value: the last one on the line */
            for (size_t k = len; k > 0; k--)
                if (l[k - 1] == ' ') {
                    sp = l + k - 1;
                    break;
                }
            if (sp == NULL || sp + 1 == l + len)
                return false;
            char num[64];
            size_t vl = (size_t)(l + len - (sp + 1));
            if (vl >= sizeof num)
                return false;
            memcpy(num, sp + 1, vl);
            num[vl] = '\0';
            char *stop;
            (void)strtod(num, &stop);
            if (*stop != '\0' && strcmp(num, "+Inf") != 0 && strcmp(num, "NaN") != 0)
                return false;
        }
        i += len + 1;
    }
    return true;
}

typedef struct reader {
    char *buf;
    size_t len, cap, off;       /* off: what is checked */
    size_t answers;             /* final answers checked */
    bool closed_by_server;      /* an answer said Connection: close */
    bool head_close;            /* ... after a HEAD: its body may follow (the server's own error) */
    size_t head_close_len;
} reader;

/* Checks the complete answers buffered; returns when the next one is incomplete. */
static void check_answers(reader *r, const expect *e)
{
    for (;;) {
        const char *p = r->buf + r->off;
        size_t n = r->len - r->off;
        const char *end = find(p, n, "\r\n\r\n");
        if (end == NULL) {
            if (n > 8192)
                die("an answer's head without its end");
            return;
        }
        size_t hl = (size_t)(end + 4 - p);
        if (r->closed_by_server) {
            if (r->head_close && n == r->head_close_len)
                return; /* a HEAD's error answer with its body: checked at the end */
            die("bytes after an answer with Connection: close");
        }
        int status = 0;
        if (hl < 14 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[12] != ' ' ||
            sscanf(p + 9, "%3d", &status) != 1)
            die("a malformed status line");
        if (status == 100) {
            if (hl != 25 || memcmp(p, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
                die("a malformed 100 Continue");
            r->off += hl;
            continue;
        }
        if (!known_status(status)) {
            fprintf(stderr, "fuzz-http: status %d\n", status);
            die("an unexpected status");
        }
        if (status == 503) {
            if (header(p, hl, "retry-after: ") == NULL)
                die("a 503 without Retry-After");
            g_503++;
        }
        if (r->answers >= e->n + 1)
            die("more answers than requests");
        bool head = r->answers < e->n ? e->head[r->answers] : e->trail_head;
        const char *cl = header(p, hl, "content-length: ");
        size_t body = 0;
        if (status == 204) {
            if (cl != NULL)
                die("a 204 with a Content-Length");
        } else {
            char *stop = NULL;
            if (cl == NULL)
                die("an answer without Content-Length");
            unsigned long long v = strtoull(cl, &stop, 10);
            if (stop == cl || stop[0] != '\r')
                die("a malformed Content-Length");
            body = (size_t)v;
        }
        bool close = header(p, hl, "connection: close") != NULL;
        if (head) {
            r->off += hl;
            r->answers++;
            if (close) {
                r->closed_by_server = r->head_close = true;
                r->head_close_len = body;
            }
            continue;
        }
        if (n - hl < body)
            return; /* the body is still coming */
        const char *ct = header(p, hl, "content-type: ");
        if (body > 0 && ct != NULL && strncmp(ct, "text/plain; version=0.0.4", 25) == 0) {
            /* GET /metrics: Prometheus' text exposition, not JSON */
            if (!prom_text(p + hl, body)) {
                fprintf(stderr, "fuzz-http: %.*s\n", (int)(hl + body), p);
                die("a metrics answer that is not Prometheus text");
            }
        } else if (body > 0 && ct != NULL && strncmp(ct, "text/html; charset=utf-8", 24) == 0) {
            /* GET /dashboard: the page itself, whole (its data route answers JSON) */
            static const char open_[] = "<!DOCTYPE html>", close_[] = "</html>";
            const char *b = p + hl;
            size_t bl = body;
            while (bl > 0 && (b[bl - 1] == '\n' || b[bl - 1] == '\r'))
                bl--;
            if (bl < sizeof open_ + sizeof close_ || memcmp(b, open_, sizeof open_ - 1) != 0 ||
                memcmp(b + bl - (sizeof close_ - 1), close_, sizeof close_ - 1) != 0) {
                fprintf(stderr, "fuzz-http: %.*s\n", (int)hl, p);
                die("an HTML answer that is not a whole page");
            }
        } else if (body > 0) {
            char why[128];
            cJSON *j = tr_json_parse(p + hl, body, why, sizeof why);
            if (j == NULL) {
                fprintf(stderr, "fuzz-http: %.*s\n", (int)(hl + body), p);
                die("an answer's body is not JSON");
            }
            cJSON_Delete(j);
            if (status == 503)
                count_503(p + hl, body);
        }
        r->off += hl + body;
        r->answers++;
        if (close)
            r->closed_by_server = true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    app *a = &g_apps[data[0] & 1];
    if (++a->inputs > RESTART_EVERY) {
        app_stop(a);
        app_start(a);
        a->inputs = 1;
    }
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    expect e = {0};
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &e;
    http_parser_settings ps = {.on_message_begin = on_begin,
                               .on_url = on_url,
                               .on_headers_complete = on_headers,
                               .on_message_complete = on_complete};
    http_parser_execute(&p, &ps, in, len);
    bool bad_end = HTTP_PARSER_ERRNO(&p) != HPE_OK;

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)a->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* non-blocking: a signal (the apps' threads get some) does not cut the connect short */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS && errno != EINTR)
            die(strerror(errno)); /* (connect) */
        struct pollfd cp = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        while (poll(&cp, 1, ANSWER_MS) < 0 && errno == EINTR)
            ;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)
            die(strerror(err != 0 ? err : errno)); /* (connect) */
    }

    reader r = {.cap = 65536};
    r.buf = malloc(r.cap);
    if (r.buf == NULL)
        die("out of memory");
    size_t sent = 0;
    bool eof = false;
    g_t0 = now_ms();
    uint64_t deadline = g_t0 + ANSWER_MS;
    size_t answered = 0;
    for (;;) {
        g_got = r.buf;
        g_got_len = r.len;
        check_answers(&r, &e);
        if (r.answers > answered) { /* the next one has ANSWER_MS from now */
            answered = r.answers;
            deadline = now_ms() + ANSWER_MS;
        }
        if (eof)
            break;
        /* every complete request answered, and nothing more will come unless more is sent */
        if (!bad_end && sent == len && r.answers >= e.n && !r.closed_by_server)
            break;
        uint64_t now = now_ms();
        if (now >= deadline) {
            fprintf(stderr, "fuzz-http: %zu of %zu requests answered, then nothing for %d ms\n",
                    r.answers, e.n, ANSWER_MS);
            die("a request without an answer (or one waiting for a call's timeout)");
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
        if (poll(&pf, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            die("poll");
        if (pf.revents & POLLOUT && sent < len) {
            ssize_t w = send(fd, in + sent, len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                sent = len; /* closed by the server (its error answer is being read) */
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            if (r.cap - r.len < 4096) {
                char *b = realloc(r.buf, r.cap * 2);
                if (b == NULL)
                    die("out of memory");
                r.buf = b;
                r.cap *= 2;
            }
            ssize_t got = recv(fd, r.buf + r.len, r.cap - r.len, 0);
            if (got > 0)
                r.len += (size_t)got;
            else if (got == 0)
                eof = true; /* closed by the server */
            else if (errno == ECONNRESET)
                die("the server reset the connection (an answer in flight is lost so)");
            else if (errno != EAGAIN && errno != EINTR)
                die("recv");
        }
    }
    /* what is left once the server closed: nothing, or a HEAD error answer's body */
    size_t left = r.len - r.off;
    if (left != 0 && !(r.head_close && left == r.head_close_len)) {
        fprintf(stderr, "fuzz-http: %zu bytes left: %.*s\n", left, (int)(left < 300 ? left : 300),
                r.buf + r.off);
        die("a truncated answer");
    }
    if (r.answers > e.n + 1)
        die("more answers than requests");
    close(fd);
    g_answers += r.answers;
    g_got = NULL;
    free(r.buf);
    free(e.head);
    return 0;
}
