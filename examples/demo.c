/*
 * demo.c — a short tour of the runtime, run by `make demo` until the flash sale lands.
 *
 * A "counter" actor holds a number; a "client" actor asks it to add values with tr_request and
 * waits for replies as ordinary messages; a timer ticks three times; a request to an actor that
 * never answers times out; the main thread uses tr_call; then the system stops gracefully and
 * every actor's terminate callback runs.
 */
#include <stdio.h>
#include <string.h>
#include <troupe.h>

enum { MSG_ADD = 1, MSG_SUM, MSG_TICK, MSG_GET, MSG_VALUE, MSG_IGNORE };

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

int main(void)
{
    tr_system *sys;
    tr_system_opts opts;
    tr_system_opts_init(&opts);
    opts.dead_letter_hook = on_dead_letter;
    int rc = tr_system_new(&sys, &opts);
    if (rc != TR_OK || (rc = tr_system_start(sys)) != TR_OK) {
        fprintf(stderr, "troupe-demo: %s\n", tr_strerror(rc));
        return 1;
    }
    printf("troupe demo: a counter actor, a client actor, request/reply, timers, tr_call\n");
    tr_pid counter_pid, client_pid;
    tr_system_spawn(sys, &counter_b, NULL, &counter_pid);
    printf("  spawned counter %#llx (node %u, slot %u, generation %u)\n",
           (unsigned long long)counter_pid, tr_pid_node(counter_pid), tr_pid_slot(counter_pid),
           tr_pid_gen(counter_pid));
    tr_system_spawn(sys, &client_b, &counter_pid, &client_pid);

    tr_msg *reply = NULL;
    rc = tr_call(sys, counter_pid, tr_msg_new(MSG_GET, 0), 1000, &reply);
    if (rc == TR_OK) {
        tr_reader r;
        tr_reader_init(&r, reply);
        int64_t total = 0;
        tr_read_i64(&r, &total);
        tr_reader_done(&r);
        printf("  main: tr_call GET -> %lld (the client's adds may still be in flight)\n",
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
