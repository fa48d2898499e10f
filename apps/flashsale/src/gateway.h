/*
 * gateway.h — the flash sale node: the store, the order actors (one per SKU, under a
 * simple_one_for_one supervisor), the email actor (under a token bucket), and the HTTP API in
 * front of them (docs: apps/flashsale/README.md).
 */
#ifndef FLASHSALE_GATEWAY_H
#define FLASHSALE_GATEWAY_H

#include <troupe.h>
#include <troupe/node.h>
#include <troupe/store.h>

typedef struct fs_app fs_app;

typedef struct fs_opts {
    const char *http_host;      /* default "127.0.0.1" */
    int http_port;              /* 0: any (see fs_port) */
    unsigned http_threads;      /* 0 = 2 */
    size_t http_max_request;    /* headers + body of one request at most (413 above); 0 = 64 KiB */
    unsigned http_request_ms;   /* a request must arrive within this (408); 0 = 10,000 */
    unsigned http_max_connections; /* open at once; more are closed on accept; 0 = 10,000 */
    unsigned http_max_per_client;  /* open at once from one address; 0 = no cap */
    tr_store_opts store;        /* where orders and the email outbox live */
    int email_provider;         /* email_provider (actors/email.h): maildir or smtp */
    const char *maildir;        /* the email actor's maildir (provider maildir) */
    const char *smtp_url;       /* provider smtp: e.g. "smtp://127.0.0.1:2525" */
    unsigned smtp_timeout_ms;   /* one SMTP delivery at most; 0 = 5,000 */
    const char *mail_from;
    const char *mail_to_domain; /* USER@this when a user is not an address; NULL = default */
    unsigned email_retry_min_ms, email_retry_max_ms; /* provider backoff; 0 = 500 / 30,000 */
    unsigned email_rate;        /* emails per second (token bucket); 0 = 50 */
    unsigned email_burst;       /* 0 = 10 */
    unsigned admission_rate;    /* order requests per second admitted; 0 = no limit (429 above) */
    unsigned admission_burst;
    unsigned call_timeout_ms;   /* an order actor answering later is reported 503; 0 = 5,000 */
    unsigned workers;           /* runtime workers; 0 = CPUs */
    unsigned run_actors;        /* turns of actors an HTTP thread runs itself after each batch of
                                 * requests (tr_guest); 0 = hand every call to the workers */
    const tr_node_opts *node;   /* cluster mode: this node (the store must be shared); NULL = one node */
    const char *admin_token;    /* when set: PUT /inventory needs "Authorization: Bearer <it>"
                                 * (16..256 bytes; main.c reads it from admin_token_file) */
} fs_opts;

/* Starts a node. On error returns a TR_E* code and writes why into err. */
int fs_start(const fs_opts *o, fs_app **out, char *err, size_t errlen);
/* The HTTP port. */
int fs_port(const fs_app *a);
/* Answers what is in flight, stops everything, closes the store. */
void fs_stop(fs_app *a);

#endif
