/*
 * main.c — a program outside troupe's tree, built against an *installed* troupe (tests/link/
 * install.sh: once with pkg-config, once with find_package): an actor that answers, asked by the
 * main thread, and a node started and stopped, so that both the core's and dist's libraries are
 * loaded and used. Checks that the library it runs with is the version of the headers it was
 * built with.
 */
#include <stdio.h>
#include <troupe.h>
#include <troupe/node.h>

static int echo_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    uint64_t v;
    int rc = tr_msg_get_u64(m, &v);
    return rc != TR_OK ? rc : tr_reply(ctx, m, tr_msg_new_u64(2, v + 1));
}

static const tr_behaviour echo = {.name = "echo", .receive = echo_receive};

int main(void)
{
    if (tr_version() != TR_VERSION_HEX) {
        fprintf(stderr, "outoftree: headers %#x, library %#x\n", TR_VERSION_HEX, tr_version());
        return 1;
    }
    tr_system *sys;
    tr_pid pid;
    tr_node *node = NULL;
    tr_msg *reply = NULL;
    uint64_t v = 0;
    int rc = tr_system_new(&sys, NULL);
    if (rc == TR_OK)
        rc = tr_system_start(sys);
    if (rc == TR_OK)
        rc = tr_node_start(sys, &(tr_node_opts){.name = "outoftree", .listen = "tcp://127.0.0.1:0",
                                                .secret = "outoftree-secret", .quiet = true},
                           &node);
    if (rc == TR_OK)
        rc = tr_system_spawn(sys, &echo, NULL, &pid);
    if (rc == TR_OK)
        rc = tr_system_call(sys, pid, tr_msg_new_u64(1, 41), 10000, &reply);
    if (rc == TR_OK)
        rc = tr_msg_get_u64(reply, &v);
    tr_msg_free(reply);
    int port = node != NULL ? tr_node_port(node) : 0;
    tr_system_stop(sys);
    tr_system_join(sys);
    if (node != NULL)
        tr_node_stop(node);
    tr_system_free(sys);
    if (rc != TR_OK || v != 42) {
        fprintf(stderr, "outoftree: %s (answer %llu)\n", tr_strerror(rc), (unsigned long long)v);
        return 1;
    }
    printf("outoftree: troupe %s, the actor answered %llu, a node listened on port %d\n",
           tr_version_string(), (unsigned long long)v, port);
    return 0;
}
