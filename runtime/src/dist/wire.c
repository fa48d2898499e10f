/*
 * wire.c — encoding and strict decoding of node-to-node frames (see wire.h for the format).
 *
 * Encoding goes through msgpack-c's packer into a growable buffer. Decoding does not use the
 * generic unpacker: a frame holds only unsigned integers, strings and bins in a fixed order, so
 * a small reader checks each type byte and each length against the bytes left, and a DATA frame
 * is walked once to validate every envelope before any message is allocated. A peer can make us
 * do work proportional to the bytes it sent, and nothing more.
 */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

static const char MAGIC[3] = {'T', 'R', 'P'};

/* ---- output -------------------------------------------------------------------------------- */

void tr__wire_buf_init(tr_wire_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void tr__wire_buf_free(tr_wire_buf *b)
{
    free(b->data);
    tr__wire_buf_init(b);
}

static int buf_write(void *arg, const char *p, size_t n)
{
    tr_wire_buf *b = arg;
    if (b->oom)
        return -1;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > TR_MSG_MAX) {
                b->oom = 1;
                return -1;
            }
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->oom = 1;
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void tr__wire_begin(tr_wire_buf *b, unsigned kind)
{
    b->len = 0;
    b->oom = 0;
    char h[TR_WIRE_HEADER] = {MAGIC[0], MAGIC[1], MAGIC[2], (char)TR_WIRE_VERSION, (char)kind};
    buf_write(b, h, sizeof h);
}

size_t tr__wire_frame_begin(tr_wire_buf *b, unsigned kind)
{
    size_t start = b->len;
    char h[TR_WIRE_PREFIX + TR_WIRE_HEADER] = {
        0, 0, 0, 0, MAGIC[0], MAGIC[1], MAGIC[2], (char)TR_WIRE_VERSION, (char)kind};
    buf_write(b, h, sizeof h);
    return start;
}

void tr__wire_frame_end(tr_wire_buf *b, size_t start)
{
    if (b->oom || b->len < start + TR_WIRE_PREFIX)
        return;
    size_t n = b->len - start - TR_WIRE_PREFIX;
    uint8_t *p = (uint8_t *)b->data + start;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

uint32_t tr__wire_prefix(const void *p)
{
    const uint8_t *q = p;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

void tr__wire_put_hello(tr_wire_buf *b, const tr_wire_hello *h)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    size_t n = strnlen(h->name, TR_WIRE_NAME_MAX);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, h->name, n);
    msgpack_pack_uint16(&pk, h->node_id);
    msgpack_pack_uint64(&pk, h->incarnation);
    msgpack_pack_bin(&pk, TR_WIRE_NONCE);
    msgpack_pack_bin_body(&pk, h->nonce, TR_WIRE_NONCE);
    n = strnlen(h->addr, TR_WIRE_ADDR_MAX);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, h->addr, n);
    if (h->flags != 0) /* only hidden nodes send flags: members' HELLOs are as before */
        msgpack_pack_uint32(&pk, h->flags);
}

void tr__wire_put_raw(tr_wire_buf *b, const void *data, size_t len)
{
    if (len > 0)
        buf_write(b, data, len);
}

void tr__wire_put_members(tr_wire_buf *b, uint32_t count)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_uint32(&pk, count);
}

void tr__wire_put_member(tr_wire_buf *b, const char *name, const char *addr)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    size_t n = strnlen(name, TR_WIRE_NAME_MAX);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, name, n);
    n = strnlen(addr, TR_WIRE_ADDR_MAX);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, addr, n);
}

void tr__wire_put_auth(tr_wire_buf *b, const uint8_t mac[TR_WIRE_MAC])
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_bin(&pk, TR_WIRE_MAC);
    msgpack_pack_bin_body(&pk, mac, TR_WIRE_MAC);
}

void tr__wire_put_envelope(tr_wire_buf *b, tr_pid to, const tr_msg *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_uint64(&pk, to);
    msgpack_pack_uint64(&pk, m->sender);
    msgpack_pack_uint32(&pk, m->type);
    msgpack_pack_uint32(&pk, m->flags);
    msgpack_pack_uint64(&pk, m->corr);
    msgpack_pack_bin(&pk, m->len);
    msgpack_pack_bin_body(&pk, m->data, m->len);
}

int tr__wire_status(const tr_wire_buf *b)
{
    return b->oom ? TR_ENOMEM : TR_OK;
}

/* ---- input --------------------------------------------------------------------------------- */

typedef tr_wire_rd rd;

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* An unsigned integer (positive fixint or uint8..uint64) no larger than max. */
static bool rd_uint(rd *r, uint64_t max, uint64_t *out)
{
    if (r->p >= r->end)
        return false;
    uint8_t t = *r->p++;
    unsigned n;
    if (t <= 0x7f) {
        *out = t;
        return t <= max;
    }
    switch (t) {
    case 0xcc: n = 1; break;
    case 0xcd: n = 2; break;
    case 0xce: n = 4; break;
    case 0xcf: n = 8; break;
    default: return false;
    }
    if ((size_t)(r->end - r->p) < n)
        return false;
    *out = be(r->p, n);
    r->p += n;
    return *out <= max;
}

/* A str (is_str) or bin of at most max bytes: pointer into the frame. */
static bool rd_bytes(rd *r, bool is_str, size_t max, const uint8_t **ptr, size_t *len)
{
    if (r->p >= r->end)
        return false;
    uint8_t t = *r->p++;
    unsigned n;
    size_t l;
    if (is_str && t >= 0xa0 && t <= 0xbf) {
        l = t & 0x1f;
        n = 0;
    } else if (is_str ? t == 0xd9 : t == 0xc4) {
        n = 1;
    } else if (is_str ? t == 0xda : t == 0xc5) {
        n = 2;
    } else if (is_str ? t == 0xdb : t == 0xc6) {
        n = 4;
    } else {
        return false;
    }
    if (n > 0) {
        if ((size_t)(r->end - r->p) < n)
            return false;
        l = (size_t)be(r->p, n);
        r->p += n;
    }
    if (l > max || (size_t)(r->end - r->p) < l)
        return false;
    *ptr = r->p;
    *len = l;
    r->p += l;
    return true;
}

int tr__wire_kind(const void *frame, size_t len, unsigned *kind)
{
    const uint8_t *f = frame;
    if (frame == NULL || len < TR_WIRE_HEADER || memcmp(f, MAGIC, 3) != 0 ||
        f[3] != TR_WIRE_VERSION || f[4] < TR_WIRE_HELLO || f[4] > TR_WIRE_GOSSIP)
        return TR_EBADMSG;
    *kind = f[4];
    return TR_OK;
}

static bool body(const void *frame, size_t len, unsigned want, rd *r)
{
    unsigned kind;
    if (tr__wire_kind(frame, len, &kind) != TR_OK || kind != want)
        return false;
    r->p = (const uint8_t *)frame + TR_WIRE_HEADER;
    r->end = (const uint8_t *)frame + len;
    return true;
}

/* A str of min..max printable bytes (no control character: names and addresses end up in logs,
 * where a "\n" would forge a line), copied into out (max + 1 bytes). */
static bool rd_cstr(rd *r, size_t min, size_t max, char *out)
{
    const uint8_t *p;
    size_t n;
    if (!rd_bytes(r, true, max, &p, &n) || n < min)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

int tr__wire_get_hello(const void *frame, size_t len, tr_wire_hello *out)
{
    rd r;
    const uint8_t *p;
    size_t n;
    uint64_t id, inc;
    if (!body(frame, len, TR_WIRE_HELLO, &r) || !rd_cstr(&r, 1, TR_WIRE_NAME_MAX, out->name))
        return TR_EBADMSG;
    if (!rd_uint(&r, UINT16_MAX, &id) || id == 0 || !rd_uint(&r, UINT64_MAX, &inc) ||
        !rd_bytes(&r, false, TR_WIRE_NONCE, &p, &n) || n != TR_WIRE_NONCE)
        return TR_EBADMSG;
    memcpy(out->nonce, p, TR_WIRE_NONCE);
    if (!rd_cstr(&r, 0, TR_WIRE_ADDR_MAX, out->addr))
        return TR_EBADMSG;
    uint64_t flags = 0;
    if (r.p != r.end && (!rd_uint(&r, UINT32_MAX, &flags) || flags == 0 ||
                         (flags & ~(uint64_t)TR_WIRE_HELLO_HIDDEN) != 0))
        return TR_EBADMSG; /* sent only when non-zero, and only the bits we know */
    if (r.p != r.end)
        return TR_EBADMSG;
    out->flags = (uint32_t)flags;
    out->node_id = (uint16_t)id;
    out->incarnation = inc;
    return TR_OK;
}

int tr__wire_get_members(const void *frame, size_t len, tr_wire_member_fn fn, void *arg)
{
    rd r;
    uint64_t count;
    char name[TR_WIRE_NAME_MAX + 1], addr[TR_WIRE_ADDR_MAX + 1];
    if (!body(frame, len, TR_WIRE_MEMBERS, &r) || !rd_uint(&r, TR_WIRE_MEMBERS_MAX, &count))
        return TR_EBADMSG;
    const uint8_t *start = r.p;
    for (uint64_t i = 0; i < count; i++)
        if (!rd_cstr(&r, 1, TR_WIRE_NAME_MAX, name) || !rd_cstr(&r, 0, TR_WIRE_ADDR_MAX, addr))
            return TR_EBADMSG;
    if (r.p != r.end)
        return TR_EBADMSG;
    r.p = start;
    for (uint64_t i = 0; i < count; i++) {
        rd_cstr(&r, 1, TR_WIRE_NAME_MAX, name);
        rd_cstr(&r, 0, TR_WIRE_ADDR_MAX, addr);
        fn(arg, name, addr);
    }
    return TR_OK;
}

int tr__wire_get_auth(const void *frame, size_t len, uint8_t mac[TR_WIRE_MAC])
{
    rd r;
    const uint8_t *p;
    size_t n;
    if (!body(frame, len, TR_WIRE_AUTH, &r) || !rd_bytes(&r, false, TR_WIRE_MAC, &p, &n) ||
        n != TR_WIRE_MAC || r.p != r.end)
        return TR_EBADMSG;
    memcpy(mac, p, TR_WIRE_MAC);
    return TR_OK;
}

int tr__wire_get_leave(const void *frame, size_t len)
{
    rd r;
    if (!body(frame, len, TR_WIRE_LEAVE, &r) || r.p != r.end)
        return TR_EBADMSG;
    return TR_OK;
}

typedef struct envelope {
    uint64_t to, from, type, flags, corr;
    const uint8_t *payload;
    size_t len;
} envelope;

static bool rd_envelope(rd *r, size_t max_payload, envelope *e)
{
    return rd_uint(r, UINT64_MAX, &e->to) && rd_uint(r, UINT64_MAX, &e->from) &&
           rd_uint(r, UINT32_MAX, &e->type) && rd_uint(r, UINT32_MAX, &e->flags) &&
           rd_uint(r, UINT64_MAX, &e->corr) &&
           rd_bytes(r, false, max_payload, &e->payload, &e->len) && e->to != TR_PID_NONE;
}

int tr__wire_get_data(const void *frame, size_t len, size_t max_payload, tr_wire_envelope_fn fn,
                      void *arg)
{
    rd r;
    envelope e;
    if (!body(frame, len, TR_WIRE_DATA, &r) || r.p == r.end)
        return TR_EBADMSG;
    const uint8_t *start = r.p;
    while (r.p < r.end)
        if (!rd_envelope(&r, max_payload, &e))
            return TR_EBADMSG;
    const uint32_t allowed = TR_MF_REQUEST | TR_MF_REPLY | TR_MF_SIGNAL | TR_MF_SYSTEM;
    int rc = TR_OK;
    for (r.p = start; r.p < r.end;) {
        rd_envelope(&r, max_payload, &e);
        tr_msg *m = tr_msg_from_bytes((uint32_t)e.type, e.payload, e.len);
        if (m == NULL) {
            rc = TR_ENOMEM; /* the rest of the frame is lost, as on a broken connection */
            break;
        }
        m->sender = e.from;
        m->flags = (uint32_t)e.flags & allowed;
        m->corr = e.corr;
        fn(arg, e.to, m);
    }
    return rc;
}

/* ---- the reader for other encodings of this layer (gossip.c) ------------------------------- */

void tr__wire_packer(msgpack_packer *pk, tr_wire_buf *b)
{
    msgpack_packer_init(pk, b, buf_write);
}

bool tr__wire_rd_uint(tr_wire_rd *r, uint64_t max, uint64_t *out)
{
    return rd_uint(r, max, out);
}

bool tr__wire_rd_cstr(tr_wire_rd *r, size_t min, size_t max, char *out)
{
    return rd_cstr(r, min, max, out);
}
