/*
 * msg.c — messages: the envelope (type, sender, correlation id), its msgpack payload, and the
 * reader that unpacks a payload without ever trusting it.
 *
 * A message is one allocation with room for TR_MSG_INLINE payload bytes; bigger payloads move to
 * a heap buffer that grows by doubling. Within a node a send passes the pointer: the payload is
 * never copied or re-encoded between sender and receiver.
 */
#include "internal.h"

#include <stdlib.h>
#include <stddef.h>
#include <string.h>

/* ---- the message pool ----------------------------------------------------------------------
 * Message headers come from a pool: a per-thread cache plus a process-wide depot of batches.
 * Messages flow between threads (allocated by a sender on one worker, freed by the receiver on
 * another); with plain malloc every such free contends on the allocating arena's lock. Here a
 * free goes to the freeing thread's cache, and a full cache hands a whole batch to the depot, so
 * the shared lock is taken at most once per POOL_BATCH messages, and never by a thread that
 * allocates about as much as it frees. A thread's cache returns to the depot when it exits.
 */

#define POOL_BATCH 64u
#define POOL_CACHE_MAX (4u * POOL_BATCH)

typedef struct msg_cache {
    tr_msg *head;            /* linked through node.next (thread-private while cached) */
    unsigned n;
    bool registered;         /* the thread-exit destructor is armed */
} msg_cache;

typedef struct msg_batch {
    struct msg_batch *next;  /* depot link, kept in the payload area of the batch's first message */
} msg_batch;

static struct {
    pthread_mutex_t lock;
    pthread_once_t once;
    pthread_key_t key;
    msg_batch *full;         /* batches of exactly POOL_BATCH messages */
} depot = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_ONCE_INIT, 0, NULL};

static _Thread_local msg_cache tls_cache;

static inline tr_msg *cache_next(tr_msg *m)
{
    return (tr_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
}

/* Moves POOL_BATCH messages from the cache to the depot. */
static void cache_spill(msg_cache *c)
{
    tr_msg *first = c->head, *last = first;
    for (unsigned i = 1; i < POOL_BATCH; i++)
        last = cache_next(last);
    c->head = cache_next(last);
    c->n -= POOL_BATCH;
    atomic_store_explicit(&last->node.next, NULL, memory_order_relaxed);
    msg_batch *b = (msg_batch *)(void *)first->inline_buf;
    pthread_mutex_lock(&depot.lock);
    b->next = depot.full;
    depot.full = b;
    pthread_mutex_unlock(&depot.lock);
}

static void thread_exit(void *arg)
{
    msg_cache *c = arg;
    while (c->n >= POOL_BATCH)
        cache_spill(c);
    while (c->head != NULL) {
        tr_msg *m = c->head;
        c->head = cache_next(m);
        free(m);
    }
    c->n = 0;
}

static void depot_init(void)
{
    pthread_key_create(&depot.key, thread_exit);
}

static void cache_register(msg_cache *c)
{
    pthread_once(&depot.once, depot_init);
    pthread_setspecific(depot.key, c);
    c->registered = true;
}

static tr_msg *pool_get(void)
{
    msg_cache *c = &tls_cache;
    if (TR_LIKELY(c->head != NULL)) {
        tr_msg *m = c->head;
        c->head = cache_next(m);
        c->n--;
        if (c->head != NULL)
            __builtin_prefetch(c->head, 1); /* often last written by another core */
        return m;
    }
    pthread_mutex_lock(&depot.lock);
    msg_batch *b = depot.full;
    if (b != NULL)
        depot.full = b->next;
    pthread_mutex_unlock(&depot.lock);
    if (b != NULL) {
        if (TR_UNLIKELY(!c->registered))
            cache_register(c); /* the rest of the batch returns to the depot at thread exit */
        tr_msg *m = (tr_msg *)(void *)((char *)b - offsetof(tr_msg, inline_buf));
        c->head = cache_next(m);
        c->n = POOL_BATCH - 1;
        return m;
    }
    return malloc(sizeof(tr_msg));
}

static void pool_put(tr_msg *m)
{
    msg_cache *c = &tls_cache;
    if (TR_UNLIKELY(!c->registered))
        cache_register(c);
    atomic_store_explicit(&m->node.next, c->head != NULL ? &c->head->node : NULL,
                          memory_order_relaxed);
    c->head = m;
    if (++c->n > POOL_CACHE_MAX)
        cache_spill(c);
}

static void msg_init(tr_msg *m, uint32_t type)
{
    atomic_store_explicit(&m->node.next, NULL, memory_order_relaxed);
    m->type = type;
    m->flags = 0;
    m->sender = TR_PID_NONE;
    m->corr = 0;
    m->data = m->inline_buf;
    m->len = 0;
    m->cap = TR_MSG_INLINE;
    m->pk.data = NULL;
    m->pk.callback = NULL;
}

static int msg_reserve(tr_msg *m, size_t extra)
{
    size_t need = (size_t)m->len + extra;
    if (need > TR_MSG_MAX)
        return TR_ETOOBIG;
    if (need <= m->cap)
        return TR_OK;
    size_t cap = m->cap;
    while (cap < need)
        cap *= 2;
    char *p;
    if (m->data == m->inline_buf) {
        p = malloc(cap);
        if (p == NULL)
            return TR_ENOMEM;
        memcpy(p, m->inline_buf, m->len);
    } else {
        p = realloc(m->data, cap);
        if (p == NULL)
            return TR_ENOMEM;
    }
    m->data = p;
    m->cap = (uint32_t)cap;
    return TR_OK;
}

tr_msg *tr_msg_new(uint32_t type, size_t size_hint)
{
    tr_msg *m = pool_get();
    if (m == NULL)
        return NULL;
    msg_init(m, type);
    if (size_hint > TR_MSG_INLINE && msg_reserve(m, size_hint) != TR_OK) {
        pool_put(m);
        return NULL;
    }
    return m;
}

tr_msg *tr_msg_from_bytes(uint32_t type, const void *data, size_t len)
{
    if (data == NULL && len > 0)
        return NULL;
    tr_msg *m = tr_msg_new(type, len);
    if (m != NULL && len > 0) {
        memcpy(m->data, data, len);
        m->len = (uint32_t)len;
    }
    return m;
}

void tr_msg_free(tr_msg *m)
{
    if (m == NULL)
        return;
    if (m->data != m->inline_buf)
        free(m->data);
    pool_put(m);
}

tr_msg *tr__msg_clone(const tr_msg *src)
{
    tr_msg *m = tr_msg_from_bytes(src->type, src->data, src->len);
    if (m != NULL) {
        m->flags = src->flags;
        m->corr = src->corr;
        m->sender = src->sender;
    }
    return m;
}

uint32_t tr_msg_type(const tr_msg *m) { return m->type; }
tr_pid tr_msg_sender(const tr_msg *m) { return m->sender; }
uint64_t tr_msg_corr(const tr_msg *m) { return m->corr; }
bool tr_msg_is_reply(const tr_msg *m) { return (m->flags & TR_MF_REPLY) != 0; }
const void *tr_msg_data(const tr_msg *m) { return m->data; }
size_t tr_msg_size(const tr_msg *m) { return m->len; }

int tr_msg_append(tr_msg *m, const void *data, size_t len)
{
    if (m == NULL || (data == NULL && len > 0))
        return TR_EINVAL;
    int rc = msg_reserve(m, len);
    if (rc != TR_OK)
        return rc;
    if (len > 0)
        memcpy(m->data + m->len, data, len);
    m->len += (uint32_t)len;
    return TR_OK;
}

static int packer_write(void *data, const char *buf, size_t len)
{
    tr_msg *m = data;
    if (len == 0)
        return 0; /* (an empty bin or str body may come with a NULL buf) */
    if (msg_reserve(m, len) != TR_OK)
        return -1;
    memcpy(m->data + m->len, buf, len);
    m->len += (uint32_t)len;
    return 0;
}

msgpack_packer *tr_msg_packer(tr_msg *m)
{
    if (m->pk.callback == NULL)
        msgpack_packer_init(&m->pk, m, packer_write);
    return &m->pk;
}

/* ---- reading ------------------------------------------------------------------------------- */

static inline uint64_t load_be(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

void tr_reader_init_bytes(tr_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = data != NULL ? len : 0;
    r->off = 0;
    msgpack_unpacked_init(&r->obj);
}

void tr_reader_init(tr_reader *r, const tr_msg *m)
{
    tr_reader_init_bytes(r, m->data, m->len);
}

void tr_reader_done(tr_reader *r)
{
    msgpack_unpacked_destroy(&r->obj);
}

bool tr_reader_at_end(const tr_reader *r)
{
    return r->off >= r->len;
}

/* Walks one msgpack object at off without allocating, checking that every declared length fits
 * in the bytes that remain. msgpack_unpack_next allocates room for a container's declared
 * element count before looking at the bytes (5 bytes claiming 2^32 elements asked for ~96 GiB),
 * so untrusted payloads are scanned first; after the scan, what it allocates is bounded by the
 * payload size. Iterative: `pending` counts the objects still to read, each needs >= 1 byte. */
static int scan_object(const unsigned char *p, size_t len, size_t off)
{
    uint64_t pending = 1;
    while (pending > 0) {
        if (off >= len || pending > len - off)
            return TR_EBADMSG;
        unsigned char t = p[off];
        size_t avail = len - off;
        uint64_t n = 0;       /* body bytes to skip */
        uint64_t items = 0;   /* objects contained */
        size_t hdr = 1;
        pending--;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
            /* fixint, nil, bool */
        } else if ((t & 0xf0) == 0x80) {
            items = 2u * (t & 0x0f);
        } else if ((t & 0xf0) == 0x90) {
            items = t & 0x0f;
        } else if ((t & 0xe0) == 0xa0) {
            n = t & 0x1f;
        } else {
            switch (t) {
            case 0xcc: case 0xd0: n = 1; break;
            case 0xcd: case 0xd1: n = 2; break;
            case 0xca: case 0xce: case 0xd2: n = 4; break;
            case 0xcb: case 0xcf: case 0xd3: n = 8; break;
            case 0xd4: n = 2; break; /* fixext: type + data */
            case 0xd5: n = 3; break;
            case 0xd6: n = 5; break;
            case 0xd7: n = 9; break;
            case 0xd8: n = 17; break;
            case 0xc4: case 0xd9: hdr = 2; break;
            case 0xc5: case 0xda: hdr = 3; break;
            case 0xc6: case 0xdb: hdr = 5; break;
            case 0xc7: hdr = 2; break; /* ext 8/16/32: length, then type byte */
            case 0xc8: hdr = 3; break;
            case 0xc9: hdr = 5; break;
            case 0xdc: hdr = 3; break; /* array16/32 */
            case 0xdd: hdr = 5; break;
            case 0xde: hdr = 3; break; /* map16/32 */
            case 0xdf: hdr = 5; break;
            default: return TR_EBADMSG; /* 0xc1: never used */
            }
            if (hdr > 1) {
                if (avail < hdr)
                    return TR_EBADMSG;
                uint64_t v = load_be(p + off + 1, (unsigned)(hdr - 1));
                if (t == 0xdc || t == 0xdd)
                    items = v;
                else if (t == 0xde || t == 0xdf)
                    items = 2 * v;
                else if (t >= 0xc7 && t <= 0xc9)
                    n = v + 1;
                else
                    n = v;
            }
        }
        if (avail - hdr < n)
            return TR_EBADMSG;
        off += hdr + (size_t)n;
        if (items > len - off)
            return TR_EBADMSG; /* more elements declared than bytes left to hold them */
        pending += items;
    }
    return TR_OK;
}

int tr_read_object(tr_reader *r, const msgpack_object **out)
{
    if (r->off >= r->len)
        return TR_EBADMSG;
    if (scan_object((const unsigned char *)r->data, r->len, r->off) != TR_OK)
        return TR_EBADMSG;
    size_t off = r->off;
    msgpack_unpack_return ret = msgpack_unpack_next(&r->obj, r->data, r->len, &off);
    if (ret != MSGPACK_UNPACK_SUCCESS && ret != MSGPACK_UNPACK_EXTRA_BYTES)
        return ret == MSGPACK_UNPACK_NOMEM_ERROR ? TR_ENOMEM : TR_EBADMSG;
    r->off = off;
    *out = &r->obj.data;
    return TR_OK;
}

/* Scalars are decoded straight from the bytes (msgpack spec, big-endian), without a zone: this
 * is the hot path of every receive. Anything else goes through msgpack_unpack_next. */

/* Reads an integer header at r->off. *neg tells which of *u / *i holds it. */
static int read_int(tr_reader *r, bool *neg, uint64_t *u, int64_t *i)
{
    if (r->off >= r->len)
        return TR_EBADMSG;
    const unsigned char *p = (const unsigned char *)r->data + r->off;
    size_t avail = r->len - r->off;
    unsigned char t = p[0];
    unsigned n;
    if (t <= 0x7f) {
        *neg = false, *u = t, r->off += 1;
        return TR_OK;
    }
    if (t >= 0xe0) {
        *neg = true, *i = (int8_t)t, r->off += 1;
        return TR_OK;
    }
    switch (t) {
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        n = 1u << (t - 0xcc);
        if (avail < 1 + n)
            return TR_EBADMSG;
        *neg = false, *u = load_be(p + 1, n);
        break;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        n = 1u << (t - 0xd0);
        if (avail < 1 + n)
            return TR_EBADMSG;
        uint64_t raw = load_be(p + 1, n);
        unsigned shift = 64 - 8 * n; /* sign-extend */
        int64_t v = (int64_t)(raw << shift) >> shift;
        if (v >= 0)
            *neg = false, *u = (uint64_t)v;
        else
            *neg = true, *i = v;
        break;
    }
    default:
        return TR_EBADMSG;
    }
    r->off += 1 + n;
    return TR_OK;
}

int tr_read_i64(tr_reader *r, int64_t *out)
{
    bool neg;
    uint64_t u = 0;
    int64_t i = 0;
    size_t off = r->off;
    int rc = read_int(r, &neg, &u, &i);
    if (rc != TR_OK)
        return rc;
    if (!neg && u > (uint64_t)INT64_MAX) {
        r->off = off;
        return TR_EBADMSG;
    }
    *out = neg ? i : (int64_t)u;
    return TR_OK;
}

TR_NO_CANARY int tr_read_u64(tr_reader *r, uint64_t *out)
{
    bool neg;
    uint64_t u = 0;
    int64_t i = 0;
    size_t off = r->off;
    int rc = read_int(r, &neg, &u, &i);
    if (rc != TR_OK)
        return rc;
    if (neg) {
        r->off = off;
        return TR_EBADMSG;
    }
    *out = u;
    return TR_OK;
}

/* Reads a str (want_str) or bin header + body; with accept_both, either kind. */
static int read_raw(tr_reader *r, bool want_str, bool accept_both, const char **p_out, size_t *len)
{
    if (r->off >= r->len)
        return TR_EBADMSG;
    const unsigned char *p = (const unsigned char *)r->data + r->off;
    size_t avail = r->len - r->off;
    unsigned char t = p[0];
    size_t hdr, n = 0;
    bool is_str;
    if ((t & 0xe0) == 0xa0) {
        is_str = true, hdr = 1, n = t & 0x1f;
    } else if (t >= 0xd9 && t <= 0xdb) {
        is_str = true, hdr = 1 + (1u << (t - 0xd9));
    } else if (t >= 0xc4 && t <= 0xc6) {
        is_str = false, hdr = 1 + (1u << (t - 0xc4));
    } else {
        return TR_EBADMSG;
    }
    if (!accept_both && is_str != want_str)
        return TR_EBADMSG;
    if (avail < hdr)
        return TR_EBADMSG;
    if (hdr > 1)
        n = (size_t)load_be(p + 1, (unsigned)(hdr - 1));
    if (n > avail - hdr)
        return TR_EBADMSG;
    *p_out = (const char *)p + hdr;
    *len = n;
    r->off += hdr + n;
    return TR_OK;
}

int tr_read_str(tr_reader *r, const char **s, size_t *len)
{
    return read_raw(r, true, false, s, len);
}

int tr_read_bin(tr_reader *r, const void **p, size_t *len)
{
    const char *c;
    int rc = read_raw(r, false, true, &c, len);
    if (rc == TR_OK)
        *p = c;
    return rc;
}

/* ---- scalars (troupe.h) ---------------------------------------------------------------------- */

TR_NO_CANARY int tr_msg_put_u64(tr_msg *m, uint64_t v)
{
    return msgpack_pack_uint64(tr_msg_packer(m), v) == 0 ? TR_OK : TR_ENOMEM;
}

TR_NO_CANARY int tr_msg_put_i64(tr_msg *m, int64_t v)
{
    return msgpack_pack_int64(tr_msg_packer(m), v) == 0 ? TR_OK : TR_ENOMEM;
}

int tr_msg_put_str(tr_msg *m, const char *s, size_t len)
{
    msgpack_packer *pk = tr_msg_packer(m);
    return len <= UINT32_MAX && msgpack_pack_str(pk, len) == 0 &&
                   msgpack_pack_str_body(pk, s, len) == 0
               ? TR_OK
               : TR_ENOMEM;
}

tr_msg *tr_msg_new_u64(uint32_t type, uint64_t v)
{
    tr_msg *m = tr_msg_new(type, 9);
    if (m != NULL && tr_msg_put_u64(m, v) != TR_OK) {
        tr_msg_free(m);
        m = NULL;
    }
    return m;
}

TR_NO_CANARY int tr_msg_get_u64(const tr_msg *m, uint64_t *out)
{
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = tr_read_u64(&r, out);
    tr_reader_done(&r);
    if (rc != TR_OK)
        *out = 0;
    return rc;
}
