/*
 * test_nodes.h — nodes for the tests that run several in one process, on loopback (header-only):
 * a system with a node id, and node options with an ephemeral port, quiet unless TT_NODE_LOGS is
 * set (then the nodes' logs show), redialing within 200 ms so a test never waits on backoff,
 * and stopping only once its peers heard it leave (up to 10 s: a slow run still sees "left",
 * not "down").
 */
#ifndef TROUPE_TEST_NODES_H
#define TROUPE_TEST_NODES_H

#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <troupe/node.h>

/* A started system of 2 workers whose pids carry node id `id`. */
static inline tr_system *tt_node_system(uint16_t id)
{
    tr_system_opts o;
    tr_system_opts_init(&o);
    o.workers = 2;
    o.node_id = id;
    return tt_system_start(&o);
}

/* Options for node `name` on 127.0.0.1 (an ephemeral port) with `secret`, joining through `seeds`
 * (nseeds of them; may be 0). The strings must outlive tr_node_start's call. */
static inline tr_node_opts tt_node_opts(const char *name, const char *secret,
                                        const char *const *seeds, size_t nseeds)
{
    tr_node_opts no;
    memset(&no, 0, sizeof no);
    no.name = name;
    no.listen = "tcp://127.0.0.1:0";
    no.secret = secret;
    no.seeds = seeds;
    no.nseeds = nseeds;
    no.quiet = getenv("TT_NODE_LOGS") == NULL;
    no.reconnect_max_ms = 200;
    no.leave_ms = 10000; /* a stop waits for its peers to hear it leave, however slow the run */
    /* TT_MONITORS=K: the same tests with partial monitoring (issue 22; ctest's node_monitors) */
    no.monitors = tt_monitors();
    return no;
}

#endif
