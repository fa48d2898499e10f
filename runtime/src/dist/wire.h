/*
 * wire.h — the node-to-node wire format: frames carried on a TCP stream (nng's stream API).
 *
 * On the stream each frame is preceded by its length (4 bytes, big endian; node.c refuses a
 * length above its max_frame before reading it). A frame starts with a 5-byte header: "TRP",
 * the protocol version, and the frame kind. The rest is msgpack:
 *   HELLO    name (str, 1..TR_WIRE_NAME_MAX), node id (u16, the node field of its pids),
 *            incarnation (u64), nonce (bin, TR_WIRE_NONCE bytes), listen address (str,
 *            0..TR_WIRE_ADDR_MAX: where the sender accepts connections), and optionally flags
 *            (u32, non-zero when present; only bit TR_WIRE_HELLO_HIDDEN is defined): a hidden
 *            node (troupectl) says so, has no listen address, and uses its one connection
 *            both ways (a member it dials answers on it instead of dialing back)
 *   AUTH     mac (bin, TR_WIRE_MAC bytes): HMAC-SHA256 proving the cluster secret (see node.c)
 *   DATA     one or more envelopes, each: to (u64), from (u64), type (u32), flags (u32),
 *            corr (u64), payload (bin)
 *   PING     no body: a heartbeat, sent when nothing else was
 *   MEMBERS  count (u32, <= TR_WIRE_MEMBERS_MAX), then count pairs: name (str), address (str):
 *            the nodes the sender knows, so every node connects to every other (gossip)
 *   LEAVE    no body (an empty one only): the sender is stopping (tr_node_stop) and leaves the
 *            cluster; sent last on its connection, after the messages queued before the stop.
 *            The receiver forgets it as "left" (not "down") and closes both connections, which
 *            tells the sender it was heard
 *   GOSSIP   one message of the membership core (gossip.c: ping, ack, gossip, join, sync, push;
 *            its own strict msgpack encoding), sent only by nodes with monitors > 0
 *            (tr_node_opts.monitors); such nodes send no MEMBERS and no PING
 * Version rules. TR_WIRE_VERSION changes when a frame that both sides must understand changes:
 * the handshake (HELLO, AUTH: version 2 made the dialer prove the secret first), or the body of an
 * existing kind. A new kind that an older node may refuse without harm keeps the version: an older
 * node drops the connection on a kind it does not know (as on any malformed frame), which is what
 * it would have seen a moment later anyway. LEAVE (kind 6) came that way, within version 2: a
 * version-2 node without it sees a leaving node as down, as before. GOSSIP (kind 7) came the same
 * way: a node without it drops the connection of a peer that sends one (nodes of one cluster are
 * meant to share the monitors setting). HELLO's flags came the same
 * way: members send none (an older node reads their HELLO as before), and an older node refuses
 * a hidden node's HELLO (the extra item is a malformed frame to it), which costs nothing but that
 * hidden node's connection.
 * Decoding is strict and bounded: every length is checked against what is left and against the
 * limits here before anything is allocated, so a malformed or hostile frame costs nothing but a
 * refusal (TR_EBADMSG).
 */
#ifndef TROUPE_WIRE_H
#define TROUPE_WIRE_H

#include "core/internal.h"

#define TR_WIRE_VERSION 2u
#define TR_WIRE_HEADER 5u
#define TR_WIRE_NAME_MAX 64u
#define TR_WIRE_NONCE 16u
#define TR_WIRE_MAC 32u
#define TR_WIRE_ADDR_MAX 128u
#define TR_WIRE_MEMBERS_MAX 1024u
#define TR_WIRE_PREFIX 4u /* the length before each frame on a stream */
#define TR_WIRE_HELLO_HIDDEN 1u /* HELLO flags: the sender is a hidden node */

enum { TR_WIRE_HELLO = 1, TR_WIRE_AUTH = 2, TR_WIRE_DATA = 3, TR_WIRE_PING = 4, TR_WIRE_MEMBERS = 5,
       TR_WIRE_LEAVE = 6, TR_WIRE_GOSSIP = 7 };

typedef struct tr_wire_hello {
    char name[TR_WIRE_NAME_MAX + 1];
    uint16_t node_id;
    uint64_t incarnation;
    uint8_t nonce[TR_WIRE_NONCE];
    char addr[TR_WIRE_ADDR_MAX + 1];
    uint32_t flags;             /* TR_WIRE_HELLO_*; 0: none (not sent) */
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
/* Appends to b (not reset) a length prefix and the header of a frame; returns where the frame
 * starts, for tr__wire_frame_end, which writes its length once its body is appended. */
TR_HIDDEN size_t tr__wire_frame_begin(tr_wire_buf *b, unsigned kind);
TR_HIDDEN void tr__wire_frame_end(tr_wire_buf *b, size_t start);
/* Reads the length prefix of the frame at p (TR_WIRE_PREFIX bytes). */
TR_HIDDEN uint32_t tr__wire_prefix(const void *p);
/* Appends a HELLO's body / an AUTH's body. */
TR_HIDDEN void tr__wire_put_hello(tr_wire_buf *b, const tr_wire_hello *h);
TR_HIDDEN void tr__wire_put_auth(tr_wire_buf *b, const uint8_t mac[TR_WIRE_MAC]);
/* Appends one envelope carrying m (to its `to`) to a DATA frame. */
TR_HIDDEN void tr__wire_put_envelope(tr_wire_buf *b, tr_pid to, const tr_msg *m);
/* Appends len raw bytes (frames encoded elsewhere). */
TR_HIDDEN void tr__wire_put_raw(tr_wire_buf *b, const void *data, size_t len);
/* Appends a MEMBERS body's count / one of its entries. */
TR_HIDDEN void tr__wire_put_members(tr_wire_buf *b, uint32_t count);
TR_HIDDEN void tr__wire_put_member(tr_wire_buf *b, const char *name, const char *addr);
/* TR_OK, or TR_ENOMEM if any append ran out of memory. */
TR_HIDDEN int tr__wire_status(const tr_wire_buf *b);

/* Reads a frame's header: its kind, and where its body starts. TR_EBADMSG on a wrong magic,
 * version or kind. */
TR_HIDDEN int tr__wire_kind(const void *frame, size_t len, unsigned *kind);
TR_HIDDEN int tr__wire_get_hello(const void *frame, size_t len, tr_wire_hello *out);
TR_HIDDEN int tr__wire_get_auth(const void *frame, size_t len, uint8_t mac[TR_WIRE_MAC]);
/* Checks a LEAVE frame (its body must be empty): TR_OK or TR_EBADMSG. */
TR_HIDDEN int tr__wire_get_leave(const void *frame, size_t len);

/* Calls fn for each entry of a MEMBERS frame (validated whole first). */
typedef void (*tr_wire_member_fn)(void *arg, const char *name, const char *addr);
TR_HIDDEN int tr__wire_get_members(const void *frame, size_t len, tr_wire_member_fn fn, void *arg);

/* Calls fn for each envelope of a DATA frame, with a new message (owned by fn) addressed to
 * *to. The whole frame is validated first: on TR_EBADMSG no envelope has been handed out. */
typedef void (*tr_wire_envelope_fn)(void *arg, tr_pid to, tr_msg *m);
TR_HIDDEN int tr__wire_get_data(const void *frame, size_t len, size_t max_payload,
                                tr_wire_envelope_fn fn, void *arg);

/* A strict reader over bytes (the one the frames above are decoded with), for other encodings
 * of this layer (gossip.c): each call checks the type byte and every length against what is
 * left, and fails (false) rather than read past end. */
typedef struct tr_wire_rd {
    const uint8_t *p, *end;
} tr_wire_rd;
/* An unsigned integer (positive fixint or uint8..uint64) no larger than max. */
TR_HIDDEN bool tr__wire_rd_uint(tr_wire_rd *r, uint64_t max, uint64_t *out);
/* A str of min..max bytes without control characters, copied into out (max + 1 bytes). */
TR_HIDDEN bool tr__wire_rd_cstr(tr_wire_rd *r, size_t min, size_t max, char *out);
/* A msgpack packer that appends to b (not reset). */
TR_HIDDEN void tr__wire_packer(msgpack_packer *pk, tr_wire_buf *b);

#endif
