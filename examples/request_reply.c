/*
 * request_reply.c — requests with a timeout, both ways troupe has them:
 *
 *   - inside an actor, tr_request: the reply (or a TR_MSG_TIMEOUT with the request's corr) comes
 *     later as an ordinary message, so the actor never blocks. The "client" asks a "doubler" (which
 *     answers) and a "sleeper" (which never does) and reports what came back;
 *   - outside any actor, tr_system_call: the calling thread waits for the reply, or TR_ETIMEDOUT.
 *
 *   build/bin/example-request-reply
 */
#include <stdio.h>
#include <troupe.h>

enum { MSG_DOUBLE = 1, MSG_DOUBLED, MSG_GO, MSG_REPORT };

static int doubler_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    uint64_t v;
    int rc = tr_msg_get_u64(m, &v);
    return rc != TR_OK ? rc : tr_reply(ctx, m, tr_msg_new_u64(MSG_DOUBLED, v * 2));
}

/* keeps every request and answers none */
static int sleeper_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    return TR_OK;
}

static const tr_behaviour doubler_b = {.name = "doubler", .receive = doubler_receive};
static const tr_behaviour sleeper_b = {.name = "sleeper", .receive = sleeper_receive};

/* The client: MSG_GO (a call from main, with the two servers' pids) starts two requests; when
 * both are settled it answers the call with the doubled value and how many timed out. */
typedef struct client {
    tr_from caller;         /* whom to report to (a deferred reply) */
    uint64_t corr[2];       /* the requests in flight */
    int settled, timeouts;
    uint64_t doubled;
} client;

static int client_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    client *c = state;
    if (tr_msg_type(m) == MSG_GO) {
        tr_reader r;
        uint64_t doubler, sleeper;
        tr_reader_init(&r, m);
        int rc = tr_read_u64(&r, &doubler);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &sleeper);
        tr_reader_done(&r);
        if (rc != TR_OK)
            return rc;
        c->caller = tr_msg_from(m);
        /* 10 s for the one that answers (generous: it is not a race), 100 ms for the other */
        rc = tr_request(ctx, doubler, tr_msg_new_u64(MSG_DOUBLE, 21), 10000, &c->corr[0]);
        if (rc == TR_OK)
            rc = tr_request(ctx, sleeper, tr_msg_new_u64(MSG_DOUBLE, 1), 100, &c->corr[1]);
        return rc;
    }
    /* a reply or a timeout: both carry the request's corr */
    if (tr_msg_corr(m) != c->corr[0] && tr_msg_corr(m) != c->corr[1])
        return TR_OK; /* not ours (a late reply, say) */
    if (tr_msg_type(m) == TR_MSG_TIMEOUT)
        c->timeouts++;
    else if (tr_msg_get_u64(m, &c->doubled) != TR_OK)
        return TR_EBADMSG;
    if (++c->settled < 2)
        return TR_OK;
    tr_msg *report = tr_msg_new(MSG_REPORT, 16);
    if (report == NULL || tr_msg_put_u64(report, c->doubled) != TR_OK ||
        tr_msg_put_u64(report, (uint64_t)c->timeouts) != TR_OK) {
        tr_msg_free(report);
        return TR_ENOMEM;
    }
    return tr_reply_from(ctx, c->caller, report);
}

static const tr_behaviour client_b = {
    .name = "client", .state_size = sizeof(client), .receive = client_receive};

int main(void)
{
    tr_system *sys;
    tr_pid doubler = 0, sleeper = 0, cl = 0;
    uint64_t doubled = 0, timeouts = 0;
    int rc = tr_system_new(&sys, NULL);
    if (rc == TR_OK)
        rc = tr_system_start(sys);
    if (rc == TR_OK)
        rc = tr_system_spawn(sys, &doubler_b, NULL, &doubler);
    if (rc == TR_OK)
        rc = tr_system_spawn(sys, &sleeper_b, NULL, &sleeper);
    if (rc == TR_OK)
        rc = tr_system_spawn(sys, &client_b, NULL, &cl);

    /* 1. inside an actor: tr_request */
    tr_msg *go = tr_msg_new(MSG_GO, 32), *report = NULL;
    if (rc == TR_OK && (go == NULL || tr_msg_put_u64(go, doubler) != TR_OK ||
                        tr_msg_put_u64(go, sleeper) != TR_OK))
        rc = TR_ENOMEM;
    if (rc == TR_OK) {
        rc = tr_system_call(sys, cl, go, 30000, &report);
        go = NULL;
    }
    tr_msg_free(go);
    if (rc == TR_OK) {
        tr_reader r;
        tr_reader_init(&r, report);
        rc = tr_read_u64(&r, &doubled);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &timeouts);
        tr_reader_done(&r);
        tr_msg_free(report);
        printf("tr_request: the doubler answered %llu, %llu request timed out (the sleeper)\n",
               (unsigned long long)doubled, (unsigned long long)timeouts);
    }

    /* 2. outside any actor: tr_system_call, which blocks this thread up to its timeout */
    int call_rc = TR_OK;
    if (rc == TR_OK) {
        tr_msg *reply = NULL;
        uint64_t t0 = tr_now_ns();
        call_rc = tr_system_call(sys, sleeper, tr_msg_new_u64(MSG_DOUBLE, 5), 100, &reply);
        tr_msg_free(reply);
        printf("tr_system_call to the sleeper: %s after %llu ms\n", tr_strerror(call_rc),
               (unsigned long long)((tr_now_ns() - t0) / 1000000));
    }
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
    if (rc != TR_OK) {
        fprintf(stderr, "request_reply: %s\n", tr_strerror(rc));
        return 1;
    }
    return doubled == 42 && timeouts == 1 && call_rc == TR_ETIMEDOUT ? 0 : 1;
}
