/*
 * hello.c — the smallest troupe program: a system, one actor that greets whoever it is sent, the
 * main thread asking it twice (tr_system_call waits for the answer), and a graceful stop.
 *
 *   build/bin/example-hello
 */
#include <stdio.h>
#include <string.h>
#include <troupe.h>

enum { MSG_HELLO = 1, MSG_GREETING };

/* The actor's state: the runtime allocates it (tr_behaviour.state_size), zeroed. */
typedef struct greeter {
    int greeted;
} greeter;

/* A MSG_HELLO carries a name (a msgpack string); the answer, a line of greeting. */
static int greeter_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    greeter *g = state;
    const char *name;
    size_t len;
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = tr_read_str(&r, &name, &len);
    if (rc == TR_OK) {
        char line[128];
        int n = snprintf(line, sizeof line, "hello, %.*s (greeting %d)", (int)len, name,
                         ++g->greeted);
        tr_msg *reply = tr_msg_new(MSG_GREETING, sizeof line);
        size_t used = n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        rc = reply == NULL ? TR_ENOMEM : tr_msg_put_str(reply, line, used);
        /* tr_reply takes the message whatever happens; a message not handed on is freed */
        if (rc == TR_OK)
            rc = tr_reply(ctx, m, reply);
        else
            tr_msg_free(reply);
    }
    tr_reader_done(&r);
    return rc; /* non-zero ends the actor with that error */
}

static const tr_behaviour greeter_b = {
    .name = "greeter", .state_size = sizeof(greeter), .receive = greeter_receive};

int main(void)
{
    tr_system *sys;
    tr_pid pid;
    int rc = tr_system_new(&sys, NULL); /* NULL: default options (a worker per CPU) */
    if (rc == TR_OK)
        rc = tr_system_start(sys);
    if (rc == TR_OK)
        rc = tr_system_spawn(sys, &greeter_b, NULL, &pid);
    const char *names[] = {"world", "troupe"};
    for (int i = 0; rc == TR_OK && i < 2; i++) {
        tr_msg *m = tr_msg_new(MSG_HELLO, 16), *reply = NULL;
        rc = m == NULL ? TR_ENOMEM : tr_msg_put_str(m, names[i], strlen(names[i]));
        if (rc == TR_OK)
            rc = tr_system_call(sys, pid, m, 5000, &reply); /* takes m; reply is ours */
        else
            tr_msg_free(m);
        const char *line;
        size_t len;
        tr_reader r;
        if (rc == TR_OK) {
            tr_reader_init(&r, reply);
            if ((rc = tr_read_str(&r, &line, &len)) == TR_OK)
                printf("%.*s\n", (int)len, line);
            tr_reader_done(&r);
        }
        tr_msg_free(reply);
    }
    tr_system_stop(sys);  /* ask every actor to end ... */
    tr_system_join(sys);  /* ... wait for it ... */
    tr_system_free(sys);  /* ... and free the system */
    if (rc != TR_OK) {
        fprintf(stderr, "hello: %s\n", tr_strerror(rc));
        return 1;
    }
    return 0;
}
