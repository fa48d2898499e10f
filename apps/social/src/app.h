/*
 * app.h — the social network's node: the store (journals and the event bus), the user, post and
 * timeline shards, the fan-out and search actors (actors/social.h), and the HTTP API in front of
 * them (apps/social/README.md).
 */
#ifndef SOCIAL_APP_H
#define SOCIAL_APP_H

#include <troupe.h>
#include <troupe/node.h>
#include <troupe/store.h>

typedef struct soc_app soc_app;

typedef struct soc_opts {
    const char *http_host;      /* default "127.0.0.1" */
    int http_port;              /* 0: any (see soc_port) */
    unsigned http_threads;      /* 0 = 1 */
    size_t http_max_request;    /* 0 = 64 KiB */
    unsigned http_request_ms;   /* 0 = 10,000 */
    unsigned http_max_connections;
    unsigned http_max_per_client;
    unsigned run_actors;        /* turns an HTTP loop runs itself after its reads; 0: none */
    unsigned workers;           /* 0 = CPUs */
    tr_store_opts store;
    unsigned call_timeout_ms;   /* 0 = 5,000 */
    unsigned celebrity_followers, timeline_cap, follow_merge, max_following, search_images;
    unsigned idle_ms;           /* keyed actors idle this long are passivated; 0 = 60,000 */
    size_t max_keys;            /* keyed actors per shard and node at most; 0 = 1,000,000 */
    const char *node_name;      /* names this node's bus subscriptions; NULL = "local" (the
                                 * node's name in cluster mode) */
    const tr_node_opts *node;   /* cluster mode: this node (the store must be shared: Redis);
                                 * NULL = one node */
} soc_opts;

/* Starts a node. On error returns a TR_E* code and writes why into err. */
int soc_start(const soc_opts *o, soc_app **out, char *err, size_t errlen);
/* The HTTP port. */
int soc_port(const soc_app *a);
/* Answers what is in flight, stops everything, closes the store. */
void soc_stop(soc_app *a);

#endif
