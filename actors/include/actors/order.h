/*
 * actors/order.h — the order actor: one persistent actor per SKU, the single writer of that SKU's
 * stock, so overselling is impossible by construction (consistency first). It persists each
 * confirmed order and, in the same transaction, an outbox item for its confirmation email, and
 * answers only after the commit.
 *
 * Requests (tr_system_call / tr_request; payloads msgpack, replies the same type):
 *   ORDER_SET_STOCK  [stock u64]           -> [stock, sold]        sets up (or restocks) the sale
 *   ORDER_PLACE      [user str, qty u64]   -> [status i64, order_id str, remaining u64]
 *   ORDER_GET        []                    -> [stock, sold, remaining, set_up u64]
 * A SKU is "set up" once an ORDER_SET_STOCK was committed for it (a stock of 0 included); until
 * then ORDER_PLACE answers ORDER_UNKNOWN and ORDER_GET's set_up is 0, so a SKU nobody created
 * is told apart from one that sold out. An order actor whose SKU is not set up ends once it has
 * answered (normal exit): requests for made-up SKUs never leave actors behind.
 *   ORDER_LOOKUP     [order_id str]        -> [found u64, user str, qty u64]
 * Order ids are "SKU-N-TAG": N the journal's sequence number (unique), TAG 32 hex digits of a
 * random 128-bit tag drawn for the order and kept in its event, so one order's id says nothing
 * about another's (ORDER_LOOKUP finds an order only by its whole id: ids cannot be enumerated).
 * The id is the idempotency key of the confirmation email.
 */
#ifndef TROUPE_ACTORS_ORDER_H
#define TROUPE_ACTORS_ORDER_H

#include <troupe.h>
#include <troupe/store.h>

#include "actors/email.h"

enum {
    ORDER_SET_STOCK = 0x4f01,
    ORDER_PLACE,
    ORDER_GET,
    ORDER_LOOKUP,
};

/* ORDER_PLACE statuses. */
enum { ORDER_CONFIRMED = 0, ORDER_SOLD_OUT = 1, ORDER_INVALID = 2, ORDER_UNKNOWN = 3 };

#define ORDER_SKU_MAX 64u
#define ORDER_USER_MAX 128u
#define ORDER_MAX_QTY 1000u
#define ORDER_TAG_HEX 32u   /* the random tag of an order id, in hex digits (128 bits) */
#define ORDER_ID_MAX (ORDER_SKU_MAX + 1u + 20u + 1u + ORDER_TAG_HEX) /* "SKU-N-TAG" */

/* What a confirmation email's outbox item holds (msgpack): [order_id, user, sku, qty]. */

typedef struct order_args {
    tr_store *store;
    const char *sku;            /* 1..64 bytes: letters, digits, '-', '_', '.' */
    const char *email_queue;    /* outbox queue of the confirmation emails (e.g. "email") */
} order_args;

/* The behaviour (spawn it with a const order_args *, e.g. as a simple_one_for_one child). */
extern const tr_behaviour order_behaviour;

/* True when s is a valid SKU. */
bool order_sku_valid(const char *s, size_t len);
/* True when id[0..len) has the form of an order id ("SKU-N-TAG", or "SKU-N" for orders confirmed
 * before ids had a tag); *sku_len gets the length of its SKU (what routes it to the SKU's actor). */
bool order_id_parse(const char *id, size_t len, size_t *sku_len);

/* The confirmation email of an order: the email actor's format callback (actors/email.h) for the
 * items the order actor puts in its email queue. Its id is the order id; subject "Payment
 * successful: order ID"; the body names the item and the quantity. `user` is a const
 * order_email_opts * (NULL: the defaults). An item that is not [order_id, user, sku, qty] with
 * the characters the order actor allows is refused (TR_EBADMSG: the email actor drops it). */
typedef struct order_email_opts {
    const char *to_domain;      /* a user without '@' is USER@to_domain; NULL = "customers.invalid" */
} order_email_opts;
int order_email_format(void *user, const void *data, size_t len, char *buf, size_t cap,
                       email_content *out);

#endif
