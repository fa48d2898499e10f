/*
 * actors/email.h — the email actor: consumes an outbox queue of confirmation emails at least
 * once and hands each to a provider. Spawn it with a token bucket on its mailbox (rate, burst):
 * the outbox's items are ordinary messages, so the bucket holds the provider to that rate.
 *
 * Providers:
 * - EMAIL_MAILDIR: one RFC 5322 file per email, written to DIR/tmp/ and renamed into DIR/new/
 *   (atomic), named after the order id — so a duplicate delivery (an item in flight when a node
 *   died) rewrites the same file.
 * - EMAIL_SMTP: libcurl's SMTP client to smtp_url (one connection, reused), each transfer bounded
 *   by timeout_ms.
 * Either way the email carries Message-ID <ORDER_ID@flashsale.troupe>, so a duplicate is
 * recognisable anywhere.
 *
 * Delivery runs in the actor's turn, so the mailbox's token bucket is exactly the rate the
 * provider sees (a slow provider slows the actor; it never receives a catch-up burst). A failure
 * (refused connection, timeout, 4xx/5xx) leaves the item in the outbox: it is delivered again
 * after a backoff that doubles from retry_min_ms to retry_max_ms, and while the provider is
 * backing off the actor does not try it at all (items arriving meanwhile are put back for when
 * the backoff ends), so a dead provider costs one attempt per backoff period, not one per email.
 */
#ifndef TROUPE_ACTORS_EMAIL_H
#define TROUPE_ACTORS_EMAIL_H

#include <stdatomic.h>
#include <troupe.h>
#include <troupe/store.h>

typedef struct email_stats {
    _Atomic uint64_t sent;      /* delivered and acknowledged */
    _Atomic uint64_t failed;    /* provider failures (each leaves its item for a retry) */
    _Atomic uint64_t retrying;  /* items whose last attempt failed, waiting for their retry */
} email_stats;

typedef enum email_provider { EMAIL_MAILDIR = 0, EMAIL_SMTP = 1 } email_provider;

typedef struct email_args {
    tr_store *store;
    const char *queue;          /* the outbox queue (e.g. "email") */
    email_provider provider;
    const char *maildir;        /* EMAIL_MAILDIR: DIR; tmp/, new/, cur/ are created if missing */
    bool no_fsync;              /* EMAIL_MAILDIR: skip the fsync of each file (then a file survives
                                 * a killed process, not a power cut: match the store's sync) */
    const char *smtp_url;       /* EMAIL_SMTP: e.g. "smtp://127.0.0.1:2525" */
    unsigned timeout_ms;        /* EMAIL_SMTP: one delivery at most (connect included); 0 = 5,000 */
    const char *from;           /* the From: header, e.g. "Sale <sale@example.com>" */
    const char *to_domain;      /* a user without '@' gets USER@to_domain; NULL = "customers.invalid" */
    unsigned retry_min_ms;      /* first backoff after a failure; 0 = 500 */
    unsigned retry_max_ms;      /* backoff cap; 0 = 30,000 */
    email_stats *stats;         /* optional, shared with whoever reports them */
    /* optional: called once an email is delivered, with the monotonic time (ns) the rate limit
     * let its item through (what the token bucket bounds; delivery itself may take longer) */
    void (*on_sent)(void *user, const char *order_id, uint64_t t_ns);
    void *user;
} email_args;

/* The behaviour (spawn it with a const email_args *; args must outlive the actor). */
extern const tr_behaviour email_behaviour;

#endif
