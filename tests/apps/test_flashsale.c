/*
 * test_flashsale.c — the flash sale node as its users see it: build/bin/flashsale started as a
 * process on a free loopback port, driven over HTTP. The API contract (each status code), no
 * oversell with many concurrent buyers, an email file per confirmed order and none for the
 * rejected, the admission limit (429), and kill -9 of the node mid-sale: after a restart on the
 * same data directory every confirmed order is still there and its email is sent.
 */
#include "../unit/test_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FLASHSALE_BIN
#error "FLASHSALE_BIN must name the flashsale executable"
#endif
#ifndef FLASHSALE_CONF
#error "FLASHSALE_CONF must name config/flashsale.conf"
#endif

static char g_dir[64];

typedef struct node {
    pid_t pid;
    int port;
} node;

/* Starts the node on data dir `dir` (extra: one more --set, or NULL); waits for "listening". */
static void node_start2(node *n, const char *dir, int port, const char *extra, const char *extra2);

static void node_start(node *n, const char *dir, int port, const char *extra)
{
    node_start2(n, dir, port, extra, NULL);
}

static void node_start2(node *n, const char *dir, int port, const char *extra, const char *extra2)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char http[64];
    snprintf(http, sizeof http, "127.0.0.1:%d", port);
    fflush(NULL);
    n->pid = fork();
    assert_true(n->pid >= 0);
    if (n->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (extra2 != NULL)
            execl(FLASHSALE_BIN, "flashsale", "--config", FLASHSALE_CONF, "--http", http,
                  "--data", dir, "--set", extra2, "--set", "flashsale.email.burst=10", "--set",
                  extra, (char *)NULL);
        else if (extra != NULL)
            execl(FLASHSALE_BIN, "flashsale", "--config", FLASHSALE_CONF, "--http", http,
                  "--data", dir, "--set", "flashsale.email.rate=1000", "--set",
                  "flashsale.email.burst=50", "--set", extra, (char *)NULL);
        else
            execl(FLASHSALE_BIN, "flashsale", "--config", FLASHSALE_CONF, "--http", http,
                  "--data", dir, "--set", "flashsale.email.rate=1000", "--set",
                  "flashsale.email.burst=50", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[256] = {0};
    size_t len = 0;
    uint64_t deadline = tt_now_ns() + 30000000000ull;
    while (tt_now_ns() < deadline && strchr(line, '\n') == NULL && len + 1 < sizeof line) {
        struct pollfd pf = {.fd = fds[0], .events = POLLIN};
        if (poll(&pf, 1, 100) > 0 && read(fds[0], line + len, 1) == 1)
            len++;
    }
    close(fds[0]);
    char *p = strstr(line, "127.0.0.1:");
    assert_non_null(p);
    n->port = atoi(p + 10);
    assert_true(n->port > 0);
}

static void node_kill(node *n, int sig)
{
    kill(n->pid, sig);
    waitpid(n->pid, NULL, 0);
}

/* One HTTP request on a fresh connection; returns the status and copies the body. */
static int http(int port, const char *method, const char *path, const char *body, char *out,
                size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    static _Thread_local char req[80000];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    (void)!write(fd, req, (size_t)n); /* a refused request may be cut short: read the answer */
    char buf[8192];
    size_t len = 0;
    ssize_t r;
    while (len + 1 < sizeof buf && (r = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    int status = 0;
    sscanf(buf, "HTTP/1.1 %d", &status);
    const char *b = strstr(buf, "\r\n\r\n");
    if (out != NULL)
        snprintf(out, cap, "%s", b != NULL ? b + 4 : "");
    return status;
}

static size_t count_files(const char *dir)
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

static void test_api_contract(void **state)
{
    (void)state;
    char dir[128], body[1024];
    snprintf(dir, sizeof dir, "%s/api", g_dir);
    node n;
    node_start(&n, dir, 0, NULL);
    assert_int_equal(http(n.port, "GET", "/health", NULL, body, sizeof body), 200);
    assert_int_equal(http(n.port, "PUT", "/inventory/s1", "{\"stock\":2}", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"remaining\":2"));
    assert_int_equal(http(n.port, "GET", "/inventory/s1", NULL, body, sizeof body), 200);
    assert_int_equal(http(n.port, "GET", "/inventory/nope", NULL, body, sizeof body), 404);
    assert_int_equal(http(n.port, "PUT", "/inventory/s1", "{\"stock\":-1}", body, sizeof body),
                     400);
    assert_int_equal(http(n.port, "POST", "/orders", "{\"user\":\"u1\",\"sku\":\"s1\",\"qty\":1}",
                          body, sizeof body),
                     201);
    assert_non_null(strstr(body, "\"status\":\"confirmed\""));
    char id[64] = {0};
    sscanf(strstr(body, "\"order_id\":\"") + 12, "%63[^\"]", id);
    char path[128];
    snprintf(path, sizeof path, "/orders/%s", id);
    assert_int_equal(http(n.port, "GET", path, NULL, body, sizeof body), 200);
    assert_int_equal(http(n.port, "GET", "/orders/s1-999", NULL, body, sizeof body), 404);
    assert_int_equal(http(n.port, "POST", "/orders", "{\"user\":\"u2\",\"sku\":\"s1\",\"qty\":2}",
                          body, sizeof body),
                     409); /* 1 left */
    assert_int_equal(http(n.port, "POST", "/orders", "{oops", body, sizeof body), 400);
    assert_int_equal(http(n.port, "POST", "/orders", "{\"sku\":\"s1\"}", body, sizeof body), 400);
    assert_non_null(strstr(body, "user"));
    assert_int_equal(http(n.port, "POST", "/orders", "{\"user\":\"u\",\"sku\":\"s1\",\"qty\":0}",
                          body, sizeof body),
                     400);
    assert_non_null(strstr(body, "qty"));
    static char big[70000];
    memset(big, 'x', sizeof big - 1);
    assert_int_equal(http(n.port, "POST", "/orders", big, body, sizeof body), 413);
    assert_int_equal(http(n.port, "GET", "/emails/stats", NULL, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"sent\""));
    assert_int_equal(http(n.port, "DELETE", "/orders", NULL, body, sizeof body), 405);
    node_kill(&n, SIGTERM);

    /* admission: 1 request a second, burst 1 -> the second of two at once is 429 */
    node_start(&n, dir, 0, "flashsale.admission.rate=1");
    int s1 = http(n.port, "POST", "/orders", "{\"user\":\"u\",\"sku\":\"s1\",\"qty\":1}", body,
                  sizeof body);
    int s2 = http(n.port, "POST", "/orders", "{\"user\":\"u\",\"sku\":\"s1\",\"qty\":1}", body,
                  sizeof body);
    assert_true(s1 == 201 || s1 == 409);
    assert_int_equal(s2, 429);
    node_kill(&n, SIGTERM);
}

/* Buyers on threads, each with its own connections. */
typedef struct buyer {
    int port, id, n;
    int confirmed, sold_out, other;
} buyer;

static void *buyer_main(void *arg)
{
    buyer *b = arg;
    char body[512], req[128];
    for (int i = 0; i < b->n; i++) {
        snprintf(req, sizeof req, "{\"user\":\"b%d\",\"sku\":\"hot\",\"qty\":1}", b->id);
        int s = http(b->port, "POST", "/orders", req, body, sizeof body);
        if (s == 201)
            b->confirmed++;
        else if (s == 409)
            b->sold_out++;
        else
            b->other++;
    }
    return NULL;
}

static void test_no_oversell_emails_and_kill9(void **state)
{
    (void)state;
    char dir[128], body[1024], newdir[160];
    snprintf(dir, sizeof dir, "%s/sale", g_dir);
    snprintf(newdir, sizeof newdir, "%s/mail/new", dir);
    node n;
    node_start(&n, dir, 0, NULL);
    assert_int_equal(http(n.port, "PUT", "/inventory/hot", "{\"stock\":150}", body, sizeof body),
                     200);
    buyer b[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (buyer){.port = n.port, .id = i, .n = 25};
        pthread_create(&th[i], NULL, buyer_main, &b[i]);
    }
    int confirmed = 0, sold_out = 0, other = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        confirmed += b[i].confirmed;
        sold_out += b[i].sold_out;
        other += b[i].other;
    }
    print_message("200 buyers for 150: %d confirmed, %d sold out, %d other\n", confirmed,
                  sold_out, other);
    assert_int_equal(confirmed, 150);
    assert_int_equal(sold_out, 50);
    assert_int_equal(other, 0);
    /* kill -9 mid-sale (emails still going out), restart on the same data */
    size_t before = count_files(newdir);
    node_kill(&n, SIGKILL);
    uint64_t t_restart = tt_now_ns();
    node_start(&n, dir, 0, NULL);
    assert_int_equal(http(n.port, "GET", "/inventory/hot", NULL, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"sold\":150"));
    for (int k = 1; k <= 151; k++) { /* event 1 set the stock; orders are hot-2 .. hot-151 */
        char path[64];
        snprintf(path, sizeof path, "/orders/hot-%d", k);
        assert_int_equal(http(n.port, "GET", path, NULL, body, sizeof body), k == 1 ? 404 : 200);
    }
    /* every confirmed order's email, and no other */
    TT_WAIT_FOR(count_files(newdir) == 150, TT_DEADLINE_MS);
    print_message("killed with %zu of 150 emails written; the other %zu within %.0f ms of the restart "
                  "(email rate 1,000/s here)\n",
                  before, 150 - before, (double)(tt_now_ns() - t_restart) / 1e6);
    tt_sleep_ms(300);
    assert_int_equal(count_files(newdir), 150);
    assert_int_equal(http(n.port, "POST", "/orders", "{\"user\":\"late\",\"sku\":\"hot\"}", body,
                          sizeof body),
                     409);
    node_kill(&n, SIGTERM);
}

/* The email rate on the node: the time each email was let through (its X-Troupe-Handled
 * header), every sliding 1-s window within rate + burst (rate 100, burst 10, 300 orders: about
 * three seconds of emails). */
static int cmp_time(const void *a, const void *b)
{
    const struct timespec *x = a, *y = b;
    return x->tv_sec != y->tv_sec ? (x->tv_sec < y->tv_sec ? -1 : 1)
                                  : (x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec);
}

static void test_email_rate_window(void **state)
{
    (void)state;
    char dir[128], body[256], newdir[160];
    snprintf(dir, sizeof dir, "%s/rate", g_dir);
    snprintf(newdir, sizeof newdir, "%s/mail/new", dir);
    node n;
    node_start2(&n, dir, 0, "flashsale.call_timeout_ms=5000", "flashsale.email.rate=100");
    assert_int_equal(http(n.port, "PUT", "/inventory/r", "{\"stock\":300}", body, sizeof body),
                     200);
    for (int i = 0; i < 300; i++)
        assert_int_equal(http(n.port, "POST", "/orders", "{\"user\":\"u\",\"sku\":\"r\"}", body,
                              sizeof body),
                         201);
    TT_WAIT_FOR(count_files(newdir) == 300, TT_DEADLINE_MS);
    static struct timespec t[300];
    size_t k = 0;
    DIR *d = opendir(newdir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && k < 300) {
        if (e->d_name[0] == '.')
            continue;
        char f[512], line[256];
        snprintf(f, sizeof f, "%s/%s", newdir, e->d_name);
        FILE *fp = fopen(f, "r"); /* when the email actor's rate limit let it through */
        long long sec = 0;
        long nsec = 0;
        while (fp != NULL && fgets(line, sizeof line, fp) != NULL)
            if (sscanf(line, "X-Troupe-Handled: %lld.%ld", &sec, &nsec) == 2)
                break;
        if (fp != NULL)
            fclose(fp);
        t[k++] = (struct timespec){.tv_sec = (time_t)sec, .tv_nsec = nsec};
    }
    closedir(d);
    qsort(t, k, sizeof t[0], cmp_time);
    size_t worst = 0;
    for (size_t i = 0; i < k; i++) {
        size_t j = i;
        while (j < k && (double)(t[j].tv_sec - t[i].tv_sec) +
                                (double)(t[j].tv_nsec - t[i].tv_nsec) / 1e9 <
                            1.0)
            j++;
        if (j - i > worst)
            worst = j - i;
    }
    print_message("300 emails at 100/s, burst 10: worst sliding 1-s window %zu\n", worst);
    assert_int_equal(k, 300);
    assert_true(worst <= 110);
    node_kill(&n, SIGTERM);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/troupe-flashsale-XXXXXX");
    signal(SIGPIPE, SIG_IGN);
    return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_api_contract),
    cmocka_unit_test(test_no_oversell_emails_and_kill9),
    cmocka_unit_test(test_email_rate_window),
};

int main(void)
{
    tt_apply_filter();
    return cmocka_run_group_tests_name("flashsale", tests, setup, teardown);
}
