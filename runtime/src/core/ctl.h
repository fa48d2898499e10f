/*
 * ctl.h — the introspection service (ctl.c): a system actor that answers requests about its
 * system — the actors by mailbox depth, message rate or restarts, the supervision tree, rate
 * limits (shown and changed live), an actor killed for a drill, the counters — and, through the
 * hooks its starter gives, about the node (members, the node's counters, cluster-wide names).
 * The node layer starts one on every node (dist/nodectl.c) and hands it the TR_MSG_CTL requests
 * other nodes send to its node service; troupectl asks it through a hidden node. The core knows
 * nothing of nodes: what it needs of one comes through tr__ctl_hooks.
 */
#ifndef TROUPE_CTL_H
#define TROUPE_CTL_H

#include "internal.h"

/* The request type (troupe/node.h's TR_MSG_CTL: a runtime type, so no application sends it). */
#define TR__MSG_CTL (TR_MSG_SYSTEM + 9)

/* A member as the service reports it. */
typedef struct tr__ctl_peer {
    char name[65];
    char addr[129];
    uint16_t node_id;
    uint64_t incarnation;
    int status;             /* tr_peer_status (troupe/node.h) */
    int64_t heard_ms;       /* since a frame last came from it; -1: never */
} tr__ctl_peer;

/* A counter by name. */
typedef struct tr__ctl_counter {
    const char *name;
    uint64_t value;
} tr__ctl_counter;

#define TR__CTL_MAX_PEERS 256u
#define TR__CTL_MAX_COUNTERS 32u

/* What the service asks of the node it runs on (every hook may be NULL: no node). They run on
 * the service's thread and must not block for long. */
typedef struct tr__ctl_hooks {
    void *arg;
    /* this node (name, address, id, incarnation; status up) */
    void (*self)(void *arg, tr__ctl_peer *out);
    /* the members but this node, up to cap (hidden nodes left out); returns how many */
    size_t (*peers)(void *arg, tr__ctl_peer *out, size_t cap);
    /* the node's counters, up to cap; returns how many */
    size_t (*counters)(void *arg, tr__ctl_counter *out, size_t cap);
    /* the holder of a cluster-wide name: TR_OK or TR_ENOPROC */
    int (*whereis)(void *arg, const char *name, tr_pid *out);
    /* a cluster-wide name pid holds, into buf (cap bytes); false if none */
    bool (*name_of)(void *arg, tr_pid pid, char *buf, size_t cap);
    /* the largest answer the node can send (its max_frame, less room for the frame) */
    size_t max_reply;
} tr__ctl_hooks;

/* Spawns the introspection service on sys with these hooks (copied). */
TR_UNIT int tr__ctl_start(struct tr_system *sys, const tr__ctl_hooks *hooks, tr_pid *out);

#endif
