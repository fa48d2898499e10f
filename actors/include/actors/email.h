/*
 * actors/email.h — the email actor: consumes an outbox queue at least once and hands one email
 * per item to a provider. What an email says is the app's: a format callback (email_format_fn)
 * turns an item's payload into recipient, id, subject and body; the actor does the delivery —
 * the RFC 5322 message, the provider, retries, the rate. Spawn it with a token bucket on its
 * mailbox (rate, burst): the outbox's items are ordinary messages, so the bucket holds the
 * provider to that rate. actors/order.h has the format callback of an order's confirmation.
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
    _Atomic uint64_t dropped;   /* items that can never be sent (the format callback refused
                                 * them, or the email was invalid or too big): acknowledged */
} email_stats;

typedef enum email_provider { EMAIL_MAILDIR = 0, EMAIL_SMTP = 1 } email_provider;

/* One email, as the app's format callback describes it. The strings may point into the scratch
 * buffer the callback is given, or anywhere that outlives the call until the email is sent; the
 * actor checks them and drops an email that breaks a rule. */
typedef struct email_content {
    const char *to;             /* the recipient's address, local@domain (no CR, LF, <, >, space;
                                 * at most 254 bytes) */
    const char *id;             /* this email's stable id, [A-Za-z0-9._-]{1,200}: the maildir
                                 * file name and Message-ID <ID@DOMAIN>, so a duplicate delivery
                                 * of an item is the same email (e.g. an order id) */
    const char *subject;        /* UTF-8, no CR or LF; encoded (RFC 2047) when not ASCII */
    const char *body;           /* text/plain, UTF-8; line ends are written as CRLF */
} email_content;

/* Describes the email of one outbox item (its payload: data, len), in the email actor's turn;
 * buf is cap bytes of scratch for the strings. TR_OK with *out filled; any other return means
 * the item can never be sent (malformed): it is acknowledged, counted in email_stats.dropped,
 * never retried. */
typedef int (*email_format_fn)(void *user, const void *data, size_t len, char *buf, size_t cap,
                               email_content *out);

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
    email_format_fn format;     /* what each email says (required) */
    void *format_user;          /* its first argument */
    const char *message_id_domain; /* Message-ID's right part; NULL = the From address's domain */
    size_t max_bytes;           /* one formatted email at most (bigger: dropped); 0 = 64 KiB */
    unsigned retry_min_ms;      /* first backoff after a failure; 0 = 500 */
    unsigned retry_max_ms;      /* backoff cap; 0 = 30,000 */
    email_stats *stats;         /* optional, shared with whoever reports them */
    /* optional: called once an email is delivered, with its id and the monotonic time (ns) the
     * rate limit let its item through (what the token bucket bounds; delivery may take longer) */
    void (*on_sent)(void *user, const char *email_id, uint64_t t_ns);
    void *user;
    /* optional: a store lease (tr_store_lease) the actor must hold to send — one sender among
     * all the nodes sharing the store, even while they cannot see each other (a cluster's
     * singleton moving, a partition), so the rate holds cluster-wide. Taken, or renewed once a
     * third of lease_ms has passed, before an email (idle, it lapses); an item that comes while
     * it is not held is put back (tr_outbox_retry). A new holder waits one second before its
     * first email, so that no 1-s window holds the sends of two holders. Given up when the actor
     * ends. NULL: none. */
    const char *lease;
    unsigned lease_ms;          /* the lease's time to live; 0 = 3,000 */
} email_args;

/* A request the email actor answers (tr_request, tr_system_call, a port; message type
 * EMAIL_STATS, no payload): its reply (same type) holds sent, failed, retrying, dropped as
 * unsigned integers — from args.stats when given (counted since that struct was zeroed), else
 * its own counts since it started. How another node asks the node that sends the emails. */
#define EMAIL_STATS 0x4501u

/* The behaviour (spawn it with a const email_args *; args must outlive the actor). */
extern const tr_behaviour email_behaviour;

#endif
