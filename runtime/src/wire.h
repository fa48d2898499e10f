/*
 * wire.h — the node-to-node wire format: frames carried in nng messages.
 *
 * A frame starts with a 5-byte header: "TRP", the protocol version, and the frame kind. The rest
 * is msgpack:
 *   HELLO  name (str, 1..TR_WIRE_NAME_MAX), node id (u16, the node field of its pids),
 *          incarnation (u64), nonce (bin, TR_WIRE_NONCE bytes)
 *   AUTH   mac (bin, TR_WIRE_MAC bytes): HMAC-SHA256 proving the cluster secret (see node.c)
 *   DATA   one or more envelopes, each: to (u64), from (u64), type (u32), flags (u32),
 *          corr (u64), payload (bin)
 * Decoding is strict and bounded: every length is checked against what is left and against the
 * limits here before anything is allocated, so a malformed or hostile frame costs nothing but a
 * refusal (TR_EBADMSG).
 */
#ifndef TROUPE_WIRE_H
#define TROUPE_WIRE_H

#include "internal.h"

#define TR_WIRE_VERSION 1u
#define TR_WIRE_HEADER 5u
#define TR_WIRE_NAME_MAX 64u
#define TR_WIRE_NONCE 16u
#define TR_WIRE_MAC 32u

enum { TR_WIRE_HELLO = 1, TR_WIRE_AUTH = 2, TR_WIRE_DATA = 3 };

typedef struct tr_wire_hello {
    char name[TR_WIRE_NAME_MAX + 1];
    uint16_t node_id;
    uint64_t incarnation;
    uint8_t nonce[TR_WIRE_NONCE];
} tr_wire_hello;

/* A growable output buffer for a frame. */
typedef struct tr_wire_buf {
    char *data;
    size_t len, cap;
    int oom;
} tr_wire_buf;

TR_HIDDEN void tr__wire_buf_init(tr_wire_buf *b);
TR_HIDDEN void tr__wire_buf_free(tr_wire_buf *b);

/* Starts a frame of the given kind in b (b is reset first). */
TR_HIDDEN void tr__wire_begin(tr_wire_buf *b, unsigned kind);
/* Appends a HELLO's body / an AUTH's body. */
TR_HIDDEN void tr__wire_put_hello(tr_wire_buf *b, const tr_wire_hello *h);
TR_HIDDEN void tr__wire_put_auth(tr_wire_buf *b, const uint8_t mac[TR_WIRE_MAC]);
/* Appends one envelope carrying m (to its `to`) to a DATA frame. */
TR_HIDDEN void tr__wire_put_envelope(tr_wire_buf *b, tr_pid to, const tr_msg *m);
/* TR_OK, or TR_ENOMEM if any append ran out of memory. */
TR_HIDDEN int tr__wire_status(const tr_wire_buf *b);

/* Reads a frame's header: its kind, and where its body starts. TR_EBADMSG on a wrong magic,
 * version or kind. */
TR_HIDDEN int tr__wire_kind(const void *frame, size_t len, unsigned *kind);
TR_HIDDEN int tr__wire_get_hello(const void *frame, size_t len, tr_wire_hello *out);
TR_HIDDEN int tr__wire_get_auth(const void *frame, size_t len, uint8_t mac[TR_WIRE_MAC]);

/* Calls fn for each envelope of a DATA frame, with a new message (owned by fn) addressed to
 * *to. The whole frame is validated first: on TR_EBADMSG no envelope has been handed out. */
typedef void (*tr_wire_envelope_fn)(void *arg, tr_pid to, tr_msg *m);
TR_HIDDEN int tr__wire_get_data(const void *frame, size_t len, size_t max_payload,
                                tr_wire_envelope_fn fn, void *arg);

#endif
