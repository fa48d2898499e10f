/*
 * two_nodes.c — two nodes talking: "alpha" and "beta", each a system of its own made a node
 * (troupe::dist) on 127.0.0.1, beta joining through alpha's address. Beta gives its "greeter"
 * actor a cluster-wide name; alpha waits for beta (tr_node_wait_peer), finds the name
 * (tr_node_whereis) and calls the actor on the other node with the same tr_system_call as a local
 * one. Here both nodes live in one process to keep the example whole; a real cluster runs one per
 * process or machine (tools/troupe-node.c, docs/distribution.md).
 *
 *   build/bin/example-two-nodes
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <troupe.h>
#include <troupe/node.h>

enum { MSG_ASK = 1, MSG_ANSWER };

static int greeter_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    uint64_t v;
    int rc = tr_msg_get_u64(m, &v);
    /* the reply goes back over the connection to the asker's node */
    return rc != TR_OK ? rc : tr_reply(ctx, m, tr_msg_new_u64(MSG_ANSWER, v * v));
}

static const tr_behaviour greeter_b = {.name = "greeter", .receive = greeter_receive};

/* A started system whose pids carry node id `id`, made the node `name`. */
static int start_node(const char *name, uint16_t id, const char *seed, tr_system **sys,
                      tr_node **node)
{
    tr_system_opts so;
    tr_system_opts_init(&so);
    so.workers = 2;
    so.node_id = id; /* unique in the cluster; tr_node_random_id() for a real incarnation */
    int rc = tr_system_new(sys, &so);
    if (rc == TR_OK && (rc = tr_system_start(*sys)) != TR_OK) {
        tr_system_free(*sys);
        *sys = NULL;
    }
    if (rc != TR_OK)
        return rc;
    tr_node_opts no = {.name = name,
                       .listen = "tcp://127.0.0.1:0", /* port 0: any free port */
                       .secret = "an example secret, shared by the cluster",
                       .seeds = seed != NULL ? &seed : NULL,
                       .nseeds = seed != NULL ? 1 : 0};
    return tr_node_start(*sys, &no, node);
}

static void stop_node(tr_system *sys, tr_node *node)
{
    if (sys == NULL)
        return;
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_node_stop(node); /* after the join, before the free */
    tr_system_free(sys);
}

int main(void)
{
    tr_system *alpha_sys = NULL, *beta_sys = NULL;
    tr_node *alpha = NULL, *beta = NULL;
    tr_pid greeter = 0, found = 0;
    uint16_t beta_id = 0;
    uint64_t answer = 0;
    int rc = start_node("alpha", 2, NULL, &alpha_sys, &alpha);
    if (rc == TR_OK)
        rc = start_node("beta", 3, tr_node_address(alpha), &beta_sys, &beta);
    if (rc == TR_OK)
        rc = tr_system_spawn(beta_sys, &greeter_b, NULL, &greeter);
    if (rc == TR_OK)
        rc = tr_node_register(beta, "greeter", greeter);
    if (rc == TR_OK)
        rc = tr_node_wait_peer(alpha, "beta", 10000, &beta_id);
    /* names travel between the nodes' services: alpha learns this one shortly after beta is up */
    for (int i = 0; rc == TR_OK && i < 1000; i++) {
        if (tr_node_whereis(alpha, "greeter", &found) == TR_OK)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
    if (rc == TR_OK && found == 0)
        rc = TR_ETIMEDOUT;
    if (rc == TR_OK) {
        printf("alpha sees beta up (node id %u); \"greeter\" is %#llx, on node %u\n", beta_id,
               (unsigned long long)found, tr_pid_node(found));
        tr_msg *reply = NULL;
        rc = tr_system_call(alpha_sys, found, tr_msg_new_u64(MSG_ASK, 12), 10000, &reply);
        if (rc == TR_OK)
            rc = tr_msg_get_u64(reply, &answer);
        tr_msg_free(reply);
        printf("alpha asked beta's greeter for 12 squared: %llu\n", (unsigned long long)answer);
    }
    stop_node(beta_sys, beta);
    stop_node(alpha_sys, alpha);
    if (rc != TR_OK)
        fprintf(stderr, "two_nodes: %s\n", tr_strerror(rc));
    return rc == TR_OK && answer == 144 ? 0 : 1;
}
