/*
 * actors/email.h — the email actor: consumes an outbox queue of confirmation emails at least
 * once and hands each to a provider. Spawn it with a token bucket on its mailbox (rate, burst):
 * the outbox's items are ordinary messages, so the bucket holds the provider to that rate.
 *
 * Provider "maildir": one RFC 5322 file per email, written to DIR/tmp/ and renamed into
 * DIR/new/ (atomic), named after the order id — so a duplicate delivery (an item in flight when
 * a node died) rewrites the same file, and its Message-ID <ORDER_ID@flashsale.troupe> makes it
 * recognisable anywhere else. A failing provider leaves the item unacknowledged: the store sends
 * it again after its redelivery delay.
 */
#ifndef TROUPE_ACTORS_EMAIL_H
#define TROUPE_ACTORS_EMAIL_H

#include <stdatomic.h>
#include <troupe.h>
#include <troupe/store.h>

typedef struct email_stats {
    _Atomic uint64_t sent;      /* written and acknowledged */
    _Atomic uint64_t failed;    /* provider failures (the item is tried again later) */
} email_stats;

typedef struct email_args {
    tr_store *store;
    const char *queue;          /* the outbox queue (e.g. "email") */
    const char *maildir;        /* DIR: tmp/, new/, cur/ are created if missing */
    const char *from;           /* the From: address */
    email_stats *stats;         /* optional, shared with whoever reports them */
    void (*on_sent)(void *user, const char *order_id, uint64_t t_ns); /* optional */
    void *user;
} email_args;

/* The behaviour (spawn it with a const email_args *; args must outlive the actor). */
extern const tr_behaviour email_behaviour;

#endif
