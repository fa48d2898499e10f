/*
 * demo.c — a short tour of the runtime, run by `make demo` until the flash sale lands.
 *
 * A "counter" actor holds a number; a "client" actor asks it to add values with tr_request and
 * waits for replies as ordinary messages; a timer ticks three times; a request to an actor that
 * never answers times out; the main thread uses tr_system_call; then the system stops gracefully and
 * every actor's terminate callback runs. Before that: a supervisor restarts a child that crashes,
 * and a rate-limited mailbox holds an actor to 20 messages a second.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <troupe.h>

enum { MSG_ADD = 1, MSG_SUM, MSG_TICK, MSG_GET, MSG_VALUE, MSG_IGNORE, MSG_CRASH, MSG_MAIL };

/* ---- supervision and limits ---------------------------------------------------------------- */

static int flaky_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)state;
    (void)arg;
    printf("  flaky %#llx: started\n", (unsigned long long)tr_self(ctx));
    return 0;
}

static int flaky_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    return tr_msg_type(m) == MSG_CRASH ? 7 : 0; /* non-zero: it fails, its supervisor acts */
}

static const tr_behaviour flaky_b = {.name = "flaky", .init = flaky_init, .receive = flaky_receive};

static int mailer_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)m;
    (*(int *)state)++;
    return 0;
}

static const tr_behaviour mailer_b = {.name = "mailer", .state_size = sizeof(int), .receive = mailer_receive};

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void supervision_and_limits(tr_system *sys)
{
    tr_child_spec kid = {.id = "flaky", .behaviour = &flaky_b, .restart = TR_PERMANENT,
                         .shutdown_ms = 1000};
    tr_sup_spec spec = {.strategy = TR_ONE_FOR_ONE, .intensity = 3, .period_ms = 5000,
                        .children = &kid, .nchildren = 1};
    tr_pid sup, first = 0, now = 0;
    if (tr_sup_start(sys, &spec, &sup) != TR_OK || tr_sup_which_child(sys, sup, "flaky", &first))
        return;
    printf("  main: crashing flaky %#llx\n", (unsigned long long)first);
    tr_system_send(sys, first, tr_msg_new(MSG_CRASH, 0));
    for (int i = 0; i < 1000 && (now == 0 || now == first); i++) {
        sleep_ms(1);
        if (tr_sup_which_child(sys, sup, "flaky", &now) != TR_OK)
            now = 0;
    }
    uint64_t restarts = 0;
    tr_sup_count(sys, sup, NULL, &restarts);
    printf("  supervisor: restarted it as %#llx (%llu restart)\n", (unsigned long long)now,
           (unsigned long long)restarts);

    /* a token bucket: 20 messages/s, 5 saved for bursts, 10 queued at most, then refuse */
    tr_spawn_opts o = {.mailbox = {.capacity = 10, .overflow = TR_OVERFLOW_REJECT,
                                   .limit = TR_LIMIT_TOKEN, .rate = 20, .burst = 5}};
    tr_pid mailer;
    if (tr_system_spawn_ex(sys, &mailer_b, NULL, &o, &mailer) != TR_OK)
        return;
    int refused = 0;
    for (int i = 0; i < 20; i++)
        if (tr_system_send(sys, mailer, tr_msg_new(MSG_MAIL, 0)) == TR_EFULL)
            refused++;
    printf("  main: sent 20 mails at once to a mailer limited to 20/s (burst 5, queue 10): "
           "%d refused\n", refused);
    sleep_ms(250);
    tr_actor_stats st;
    if (tr_actor_stats_get(sys, mailer, &st) == TR_OK)
        printf("  mailer after 250 ms: %llu handled, %llu queued, %llu rejected, %.0f ms parked "
               "waiting for tokens\n",
               (unsigned long long)st.processed, (unsigned long long)st.depth,
               (unsigned long long)st.rejected, (double)st.token_wait_ns / 1e6);
}

typedef struct counter { int64_t total; } counter;

static int counter_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    counter *c = state;
    tr_reader r;
    tr_reader_init(&r, m);
    int64_t v = 0;
    int rc = TR_OK;
    switch (tr_msg_type(m)) {
    case MSG_ADD:
        if ((rc = tr_read_i64(&r, &v)) != TR_OK)
            break; /* a malformed payload fails this actor, nothing else */
        c->total += v;
        /* fallthrough */
    case MSG_GET: {
        tr_msg *reply = tr_msg_new(MSG_SUM, 16);
        msgpack_pack_int64(tr_msg_packer(reply), c->total);
        rc = tr_reply(ctx, m, reply);
        break;
    }
    case MSG_IGNORE:
        break; /* never replies: the requester gets a timeout */
    }
    tr_reader_done(&r);
    return rc;
}

static void counter_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    printf("  counter: terminate (reason %d), final total %lld\n", reason->kind,
           (long long)((counter *)state)->total);
}

static const tr_behaviour counter_b = {
    .name = "counter", .state_size = sizeof(counter),
    .receive = counter_receive, .terminate = counter_terminate,
};

typedef struct client {
    tr_pid counter;
    int pending;
    int ticks;
} client;

static int client_init(tr_ctx *ctx, void *state, const void *arg)
{
    client *cl = state;
    cl->counter = *(const tr_pid *)arg;
    for (int i = 1; i <= 5; i++) {
        tr_msg *m = tr_msg_new(MSG_ADD, 8);
        msgpack_pack_int(tr_msg_packer(m), i * 10);
        tr_request(ctx, cl->counter, m, 1000, NULL);
        cl->pending++;
    }
    tr_request(ctx, cl->counter, tr_msg_new(MSG_IGNORE, 0), 50, NULL);
    cl->pending++;
    tr_send_interval(ctx, tr_self(ctx), tr_msg_new(MSG_TICK, 0), 20, NULL);
    return 0;
}

static int client_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    client *cl = state;
    if (tr_msg_type(m) == TR_MSG_TIMEOUT) {
        printf("  client: request %llu timed out, as expected\n", (unsigned long long)tr_msg_corr(m));
        cl->pending--;
    } else if (tr_msg_type(m) == MSG_SUM) {
        tr_reader r;
        tr_reader_init(&r, m);
        int64_t total = 0;
        tr_read_i64(&r, &total);
        tr_reader_done(&r);
        printf("  client: reply to request %llu: total = %lld\n",
               (unsigned long long)tr_msg_corr(m), (long long)total);
        cl->pending--;
    } else if (tr_msg_type(m) == MSG_TICK) {
        printf("  client: tick %d\n", ++cl->ticks);
    }
    if (cl->pending == 0 && cl->ticks >= 3)
        tr_stop(ctx);
    return 0;
}

static void client_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)state;
    printf("  client: terminate (reason %d); stopping the system\n", reason->kind);
    tr_system_stop(tr_ctx_system(ctx));
}

static const tr_behaviour client_b = {
    .name = "client", .state_size = sizeof(client), .init = client_init,
    .receive = client_receive, .terminate = client_terminate,
};

/* Called on the sender's thread for each message that reached no actor. */
static void on_dead_letter(void *user, tr_pid to, const tr_msg *m)
{
    (void)user;
    printf("  dead letter: type %u to %#llx (its actor has ended)\n", tr_msg_type(m),
           (unsigned long long)to);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: troupe-demo\n  a short tour of the runtime: a supervisor restart, a "
                   "rate limit,\n  request/reply, timers, tr_system_call. No options but --help.\n");
            return 0;
        }
        fprintf(stderr, "Try 'troupe-demo --help'.\n");
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "troupe-demo: takes no arguments; try 'troupe-demo --help'.\n");
        return 2;
    }
    tr_system *sys;
    tr_system_opts opts;
    tr_system_opts_init(&opts);
    opts.dead_letter_hook = on_dead_letter;
    int rc = tr_system_new(&sys, &opts);
    if (rc != TR_OK || (rc = tr_system_start(sys)) != TR_OK) {
        fprintf(stderr, "troupe-demo: %s\n", tr_strerror(rc));
        return 1;
    }
    printf("troupe demo: supervision, a rate limit, then request/reply, timers, tr_system_call\n");
    supervision_and_limits(sys);
    tr_pid counter_pid, client_pid;
    tr_system_spawn(sys, &counter_b, NULL, &counter_pid);
    printf("  spawned counter %#llx (node %u, slot %u, generation %u)\n",
           (unsigned long long)counter_pid, tr_pid_node(counter_pid), tr_pid_slot(counter_pid),
           tr_pid_gen(counter_pid));
    tr_system_spawn(sys, &client_b, &counter_pid, &client_pid);

    tr_msg *reply = NULL;
    rc = tr_system_call(sys, counter_pid, tr_msg_new(MSG_GET, 0), 1000, &reply);
    if (rc == TR_OK) {
        tr_reader r;
        tr_reader_init(&r, reply);
        int64_t total = 0;
        tr_read_i64(&r, &total);
        tr_reader_done(&r);
        printf("  main: tr_system_call GET -> %lld (the client's adds may still be in flight)\n",
               (long long)total);
        tr_msg_free(reply);
    }
    tr_system_join(sys);
    tr_system_stats st;
    tr_system_stats_get(sys, &st);
    printf("stopped: %llu spawned, %llu ended, %llu dead letters, %llu late replies\n",
           (unsigned long long)st.spawned, (unsigned long long)st.ended,
           (unsigned long long)st.dead_letters, (unsigned long long)st.late_replies);
    tr_system_free(sys);
    return 0;
}
