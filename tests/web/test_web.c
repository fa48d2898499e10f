/*
 * test_web.c — the HTTP→actor bridge (troupe/web.h) over real sockets: calls answered by an actor
 * (with the loop running the actor itself, and without), answers that need no actor, a timeout
 * and an on_reply that sets nothing (503 / 500), max_calls (503 beyond), a send that fails at once
 * (503, no on_reply), a request its target never read sent again once (answered by the second
 * target; 503 TR_ENOPROC when that one is gone too), and tr_web_stop with a call in flight (on_reply
 * with TR_ESTOPPED).
 */
#include "test_util.h"
#include "test_net.h"
#include "troupe/web.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ECHO = 1, MUTE = 2 };

/* Answers ECHO with the same u64; ignores MUTE. */
static int echo_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_type(m) == ECHO && tr_msg_corr(m) != 0 && !tr_msg_is_reply(m))
        tr_reply(ctx, m, tt_msg_u64(ECHO, tt_read_u64(m) * 2));
    return 0;
}

static const tr_behaviour echo_b = {.name = "echo", .receive = echo_receive};

typedef struct app {
    tr_web *web;
    tr_pid echo;
    tr_pid dead;                /* an actor that has ended */
    _Atomic int stopped;        /* on_reply calls with TR_ESTOPPED */
    _Atomic int mutes;          /* MUTE calls sent */
} app;

typedef struct call {
    int kind;                   /* 0: echo, 1: no answer set */
    int sends;                  /* /resent: times its sender ran */
} call;

/* /resent's sender: the first time to the ended actor, the second to echo (the bridge sends a
 * request its target never read again, once, the same way). */
static int resend_send(void *arg, tr_port *port, tr_msg *m, unsigned timeout_ms, uint64_t cookie)
{
    app *a = arg;
    call *c = tr_web_call_data((tr_web_call *)(uintptr_t)cookie);
    c->sends++;
    return tr_port_request(port, c->sends == 1 ? a->dead : a->echo, m, timeout_ms, cookie);
}

static void on_reply(void *user, tr_web_call *wc, int rc, const tr_msg *reply)
{
    app *a = user;
    const call *c = tr_web_call_data(wc);
    if (rc == TR_ESTOPPED)
        atomic_fetch_add(&a->stopped, 1);
    if (c->kind == 1)
        return; /* no answer: the bridge says 500 */
    if (c->kind == 2 && rc == TR_OK) { /* an answer far above TR_WEB_BODY_MAX, taken */
        size_t n = 100000;
        char *big = malloc(n);
        memset(big, 'x', n);
        big[0] = '"';
        big[n - 1] = '"';
        tr_web_answer_take(wc, 200, NULL, big, n);
        return;
    }
    if (rc != TR_OK) {
        char *b = tr_web_answer_buf(wc);
        tr_web_answer_len(wc, 503, "Retry-After: 1\r\n",
                          (size_t)snprintf(b, TR_WEB_BODY_MAX, "{\"rc\":%d}", rc));
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof body, "{\"got\":%llu}", (unsigned long long)tt_read_u64(reply));
    tr_web_answer(wc, 200, NULL, body, (size_t)n);
}

static void handler(void *user, tr_http_server *srv, const tr_http_request *req)
{
    app *a = user;
    if (strcmp(req->path, "/direct") == 0) {
        tr_http_respond(srv, req->token, 200, NULL, "{}", 2);
        return;
    }
    tr_web_call *wc = tr_web_call_new(a->web, req);
    if (wc == NULL)
        return; /* 503 answered by the bridge */
    call *c = tr_web_call_data(wc);
    assert_int_equal(c->kind, 0); /* zeroed */
    c->kind = strcmp(req->path, "/silent") == 0 ? 1 : strcmp(req->path, "/big") == 0 ? 2 : 0;
    if (strcmp(req->path, "/patch") == 0) { /* PATCH is a method of its own */
        tr_web_call_drop(wc);
        tr_http_respond(srv, req->token, req->method == TR_HTTP_PATCH ? 200 : 405, NULL, "{}", 2);
        return;
    }
    uint64_t v = (uint64_t)atoi(req->query[0] ? req->query + 2 : "0"); /* ?v=N */
    if (strcmp(req->path, "/resent") == 0)
        tr_web_call_send_with(wc, tt_msg_u64(ECHO, v), resend_send, a);
    else if (strcmp(req->path, "/dead") == 0)
        tr_web_call_send(wc, a->dead, tt_msg_u64(ECHO, v)); /* sent again: gone again */
    else if (strcmp(req->path, "/gone") == 0)
        tr_web_call_send(wc, TR_PID_NONE, tt_msg_u64(ECHO, v)); /* refused at once */
    else if (strcmp(req->path, "/mute") == 0 &&
             tr_web_call_send(wc, a->echo, tt_msg_u64(MUTE, v)) == TR_OK)
        atomic_fetch_add(&a->mutes, 1);
    else if (strcmp(req->path, "/mute") != 0)
        tr_web_call_send(wc, a->echo, tt_msg_u64(ECHO, v));
}

/* One request on its own connection: the status, and the body into out. */
static int get(int port, const char *path, char *out, size_t cap)
{
    return tt_http(port, "GET", path, NULL, out, cap, NULL, 0, 60000);
}

static void run(unsigned run_actors)
{
    tr_system *sys = tt_system_workers(2);
    static app a;
    memset(&a, 0, sizeof a);
    assert_int_equal(tr_system_spawn(sys, &echo_b, NULL, &a.echo), TR_OK);
    assert_int_equal(tr_system_spawn(sys, &echo_b, NULL, &a.dead), TR_OK);
    assert_int_equal(tr_system_stop_actor(sys, a.dead), TR_OK);
    TT_WAIT_FOR(!tr_system_alive(sys, a.dead), TT_DEADLINE_MS);
    tr_web_opts o = {.http = {.host = "127.0.0.1", .threads = 2, .handler = handler, .user = &a},
                     .run_actors = run_actors, .call_size = sizeof(call), .on_reply = on_reply,
                     .timeout_ms = 1500, .max_calls = 2};
    char err[128];
    assert_int_equal(tr_web_start(sys, &o, &a.web, err, sizeof err), TR_OK);
    int port = tr_http_port(tr_web_http(a.web));
    char body[256];
    for (int i = 1; i <= 50; i++) { /* records are recycled: many calls, few allocations */
        char path[32], want[32];
        snprintf(path, sizeof path, "/echo?v=%d", i);
        snprintf(want, sizeof want, "{\"got\":%d}", 2 * i);
        assert_int_equal(get(port, path, body, sizeof body), 200);
        assert_string_equal(body, want);
    }
    assert_int_equal(get(port, "/direct", body, sizeof body), 200);
    /* a request its target never read comes back and is sent again, once */
    assert_int_equal(get(port, "/resent?v=21", body, sizeof body), 200);
    assert_string_equal(body, "{\"got\":42}");
    char gone[32];
    snprintf(gone, sizeof gone, "{\"rc\":%d}", TR_ENOPROC);
    assert_int_equal(get(port, "/dead?v=1", body, sizeof body), 503);
    assert_string_equal(body, gone);
    static char big[200000];
    assert_int_equal(get(port, "/big?v=1", big, sizeof big), 200);
    assert_int_equal(strlen(big), 100000);
    assert_int_equal(tt_http(port, "PATCH", "/patch", "{}", body, sizeof body, NULL, 0, 60000),
                     200);
    /* no reply within timeout_ms: on_reply with TR_ETIMEDOUT */
    assert_int_equal(get(port, "/mute", body, sizeof body), 503);
    char want[32];
    snprintf(want, sizeof want, "{\"rc\":%d}", TR_ETIMEDOUT);
    assert_string_equal(body, want);
    assert_int_equal(get(port, "/silent?v=1", body, sizeof body), 500); /* no answer set */
    assert_int_equal(get(port, "/gone", body, sizeof body), 503);         /* send refused */
    /* max_calls 2 per loop: three calls that hang, on one connection's loop... a fourth
     * connection's call may land on either loop: send 6 and expect at least one 503 at once */
    int fds[6];
    for (int i = 0; i < 6; i++) {
        fds[i] = tt_dial(port);
        const char *r = "GET /mute HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_int_equal(write(fds[i], r, strlen(r)), (ssize_t)strlen(r));
    }
    int busy = 0;
    for (int i = 0; i < 6; i++) {
        char buf[512] = {0};
        struct pollfd pf = {.fd = fds[i], .events = POLLIN};
        if (poll(&pf, 1, 100) == 1 && read(fds[i], buf, sizeof buf - 1) > 0)
            busy += strstr(buf, "too many calls in flight") != NULL;
    }
    assert_true(busy >= 2); /* 6 calls over 2 loops of 2: at least 2 refused */
    for (int i = 0; i < 6; i++)
        close(fds[i]);
    /* a call in flight when the bridge stops: on_reply with TR_ESTOPPED */
    int st = 0;
    uint64_t until = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    while ((st = get(port, "/echo?v=1", body, sizeof body)) != 200 && tt_now_ns() < until)
        tt_sleep_ms(10);
    if (st != 200)
        print_message("last answer %d %s\n", st, body);
    assert_int_equal(st, 200);
    /* (a loop still full from above refuses it: try again until one takes it) */
    int fd = -1;
    uint64_t give_up = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    while (fd < 0 && tt_now_ns() < give_up) {
        int before = atomic_load(&a.mutes);
        int c = tt_dial(port);
        const char *r = "GET /mute HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_int_equal(write(c, r, strlen(r)), (ssize_t)strlen(r));
        char buf[256];
        struct pollfd pf = {.fd = c, .events = POLLIN};
        while (atomic_load(&a.mutes) == before && poll(&pf, 1, 1) == 0)
            ;
        if (atomic_load(&a.mutes) > before)
            fd = c; /* in flight, with 1.5 s to go */
        else
            (void)!read(c, buf, sizeof buf), close(c), tt_sleep_ms(20);
    }
    assert_true(fd >= 0);
    tr_web_quiesce(a.web);
    tr_system_stop(sys);
    assert_int_equal(tr_system_join(sys), TR_OK);
    tr_web_stop(a.web);
    assert_true(atomic_load(&a.stopped) >= 1);
    close(fd);
    tr_system_free(sys);
}

static void test_bridge_on_workers(void **state)
{
    (void)state;
    run(0);
}

static void test_bridge_with_guests(void **state)
{
    (void)state;
    run(64);
}

static void test_bad_options(void **state)
{
    (void)state;
    tr_system *sys = tt_system_workers(1);
    tr_web *w = NULL;
    char err[128] = "";
    tr_web_opts o = {.http = {.host = "127.0.0.1", .handler = handler}, .on_reply = on_reply};
    tr_web_opts no_reply = o;
    no_reply.on_reply = NULL;
    assert_int_equal(tr_web_start(sys, &no_reply, &w, err, sizeof err), TR_EINVAL);
    tr_web_opts taken = o;
    taken.http.host = "203.0.113.1"; /* not an address of this machine: cannot listen */
    assert_int_equal(tr_web_start(sys, &taken, &w, err, sizeof err), TR_EIO);
    assert_null(w);
    assert_non_null(strstr(err, "cannot listen on 203.0.113.1"));
    tt_system_end(sys);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_bridge_on_workers),
    cmocka_unit_test(test_bridge_with_guests),
    cmocka_unit_test(test_bad_options),
};

TT_MAIN_PLAIN(tests)
