/*
 * gateway.h — the flash sale node: the store, the order actors (one per SKU, under a
 * simple_one_for_one supervisor), the email actor (under a token bucket), and the HTTP API in
 * front of them (docs: apps/flashsale/README.md).
 */
#ifndef FLASHSALE_GATEWAY_H
#define FLASHSALE_GATEWAY_H

#include <troupe.h>
#include <troupe/store.h>

typedef struct fs_app fs_app;

typedef struct fs_opts {
    const char *http_host;      /* default "127.0.0.1" */
    int http_port;              /* 0: any (see fs_port) */
    unsigned http_threads;      /* 0 = 2 */
    tr_store_opts store;        /* where orders and the email outbox live */
    const char *maildir;        /* the email actor's maildir */
    const char *mail_from;
    unsigned email_rate;        /* emails per second (token bucket); 0 = 50 */
    unsigned email_burst;       /* 0 = 10 */
    unsigned admission_rate;    /* order requests per second admitted; 0 = no limit (429 above) */
    unsigned admission_burst;
    unsigned call_timeout_ms;   /* an order actor answering later is reported 503; 0 = 5,000 */
    unsigned workers;           /* runtime workers; 0 = CPUs */
} fs_opts;

/* Starts a node. On error returns a TR_E* code and writes why into err. */
int fs_start(const fs_opts *o, fs_app **out, char *err, size_t errlen);
/* The HTTP port. */
int fs_port(const fs_app *a);
/* Answers what is in flight, stops everything, closes the store. */
void fs_stop(fs_app *a);

#endif
