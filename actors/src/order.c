/*
 * order.c — the order actor of one SKU (see actors/order.h): the single writer of its stock.
 *
 * Its journal ("order/SKU") holds two kinds of events, msgpack arrays: [0, stock] (the sale was
 * set up or restocked) and [1, user, qty, tag] (an order was confirmed; its id is "SKU-seq-TAG",
 * the tag 16 random bytes in hex; events written before tags existed have none, and their
 * orders keep their "SKU-seq" ids). The
 * state — stock, sold, and the confirmed orders in sequence order (at most one per unit of
 * stock, so bounded by the stock) — is rebuilt from them at start. Every reply goes through the
 * journal, so it leaves after the commit of everything decided before it: a "sold out" is never
 * sent on the strength of an order that could still be lost.
 */
#include "actors/order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TAG_BYTES (ORDER_TAG_HEX / 2u)

typedef struct record {
    uint64_t seq;
    uint32_t qty;
    bool tagged;            /* false: an order from before ids had a tag ("SKU-seq") */
    uint8_t tag[TAG_BYTES];
    char *user;
} record;

typedef struct order_state {
    tr_journal *j;
    char sku[ORDER_SKU_MAX + 1];
    char queue[ORDER_SKU_MAX + 1];
    uint64_t stock, sold;
    bool set_up;        /* a stock event was ever committed: the SKU exists */
    record *recs;       /* confirmed orders, by increasing seq */
    size_t nrecs, caprecs;
} order_state;

bool order_sku_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > ORDER_SKU_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static bool user_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > ORDER_USER_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '@' || c == '+'))
            return false; /* it goes into an email header: nothing that could break one */
    }
    return true;
}

/* A fresh random tag: from the kernel's generator, 256 tags a system call (a buffer per thread:
 * order actors run on workers and HTTP loops, one turn at a time per thread). */
static int draw_tag(uint8_t tag[TAG_BYTES])
{
    static _Thread_local uint8_t pool[256 * TAG_BYTES];
    static _Thread_local size_t left;
    if (left < TAG_BYTES) {
        if (getrandom(pool, sizeof pool, 0) != (ssize_t)sizeof pool)
            return TR_EIO; /* no randomness, no guessable id: the order fails */
        left = sizeof pool;
    }
    memcpy(tag, pool + sizeof pool - left, TAG_BYTES);
    memset(pool + sizeof pool - left, 0, TAG_BYTES);
    left -= TAG_BYTES;
    return TR_OK;
}

static int add_record(order_state *o, uint64_t seq, const char *user, size_t len, uint32_t qty,
                      const uint8_t *tag)
{
    if (o->nrecs == o->caprecs) {
        size_t cap = o->caprecs ? o->caprecs * 2 : 64;
        record *r = realloc(o->recs, cap * sizeof *r);
        if (r == NULL)
            return TR_ENOMEM;
        o->recs = r;
        o->caprecs = cap;
    }
    char *u = malloc(len + 1);
    if (u == NULL)
        return TR_ENOMEM;
    memcpy(u, user, len);
    u[len] = '\0';
    record *r = &o->recs[o->nrecs++];
    *r = (record){.seq = seq, .qty = qty, .tagged = tag != NULL, .user = u};
    if (tag != NULL)
        memcpy(r->tag, tag, TAG_BYTES);
    return TR_OK;
}

static const record *find_record(const order_state *o, uint64_t seq)
{
    size_t lo = 0, hi = o->nrecs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (o->recs[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < o->nrecs && o->recs[lo].seq == seq ? &o->recs[lo] : NULL;
}

/* ---- events -------------------------------------------------------------------------------- */

static int apply(void *state, uint64_t seq, const void *ev, size_t len)
{
    order_state *o = state;
    tr_reader r;
    tr_reader_init_bytes(&r, ev, len);
    uint64_t kind, v = 0;
    const char *user;
    size_t ul;
    int rc = tr_read_u64(&r, &kind);
    if (rc == TR_OK && kind == 0) {
        rc = tr_read_u64(&r, &v);
        if (rc == TR_OK) {
            o->stock = v;
            o->set_up = true;
        }
    } else if (rc == TR_OK && kind == 1) {
        rc = tr_read_str(&r, &user, &ul);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &v);
        const void *tag = NULL;
        size_t tl = 0;
        if (rc == TR_OK && !tr_reader_at_end(&r) && /* events before tags have none */
            (tr_read_bin(&r, &tag, &tl) != TR_OK || tl != TAG_BYTES))
            rc = TR_EBADMSG;
        if (rc == TR_OK && v <= ORDER_MAX_QTY) {
            o->sold += v;
            rc = add_record(o, seq, user, ul, (uint32_t)v, tag);
        }
    } else if (rc == TR_OK) {
        rc = TR_EBADMSG;
    }
    tr_reader_done(&r);
    return rc == TR_OK ? 0 : 1;
}

/* ---- the actor ----------------------------------------------------------------------------- */

static int order_init(tr_ctx *ctx, void *state, const void *arg)
{
    const order_args *a = arg;
    order_state *o = state;
    if (a == NULL || a->store == NULL || a->sku == NULL || a->email_queue == NULL ||
        !order_sku_valid(a->sku, strlen(a->sku)) || strlen(a->email_queue) > ORDER_SKU_MAX)
        return TR_EINVAL;
    snprintf(o->sku, sizeof o->sku, "%s", a->sku);
    snprintf(o->queue, sizeof o->queue, "%s", a->email_queue);
    char id[ORDER_SKU_MAX + 8];
    snprintf(id, sizeof id, "order/%s", o->sku);
    int rc = tr_journal_open(ctx, a->store, id, NULL, apply, o, &o->j);
    if (rc != TR_OK) { /* terminate will not run */
        for (size_t i = 0; i < o->nrecs; i++)
            free(o->recs[i].user);
        free(o->recs);
    }
    return rc;
}

static tr_msg *reply_u64s(uint32_t type, size_t n, const uint64_t *v)
{
    tr_msg *m = tr_msg_new(type, 9 * n + 1);
    if (m != NULL)
        for (size_t i = 0; i < n; i++)
            tr_msg_put_u64(m, v[i]);
    return m;
}

/* A fixed buffer to pack an order's event and email into (their sizes are bounded by the
 * SKU's and the user's): no allocation per order. */
typedef struct packbuf {
    size_t n;
    bool over;
    char b[2 * (ORDER_ID_MAX + 8) + ORDER_USER_MAX + 64];
} packbuf;

static int packbuf_write(void *data, const char *buf, size_t len)
{
    packbuf *p = data;
    if (len > sizeof p->b - p->n) {
        p->over = true;
        return -1;
    }
    memcpy(p->b + p->n, buf, len);
    p->n += len;
    return 0;
}

/* "SKU-SEQ-TAG" into id (ORDER_ID_MAX + 1 bytes; "SKU-SEQ" without a tag): by hand, this is
 * once per order. */
static void order_id_format(char *id, const char *sku, uint64_t seq, const uint8_t *tag)
{
    static const char hex[] = "0123456789abcdef";
    size_t sl = strlen(sku);
    memcpy(id, sku, sl);
    id[sl++] = '-';
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char)('0' + seq % 10);
    while ((seq /= 10) != 0);
    while (n > 0)
        id[sl++] = digits[--n];
    if (tag != NULL) {
        id[sl++] = '-';
        for (unsigned i = 0; i < TAG_BYTES; i++) {
            id[sl++] = hex[tag[i] >> 4];
            id[sl++] = hex[tag[i] & 15];
        }
    }
    id[sl] = '\0';
}

bool order_id_parse(const char *id, size_t len, size_t *sku_len)
{
    /* from the end: [-TAG] then -N; the SKU (which may hold '-') is what is before */
    size_t end = len;
    if (len > ORDER_TAG_HEX + 1 && id[len - ORDER_TAG_HEX - 1] == '-') {
        for (size_t i = len - ORDER_TAG_HEX; i < len; i++)
            if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
                return false;
        end = len - ORDER_TAG_HEX - 1;
    }
    size_t d = end;
    while (d > 0 && id[d - 1] >= '0' && id[d - 1] <= '9')
        d--;
    if (d == end || end - d > 20 || d < 2 || id[d - 1] != '-')
        return false;
    if (sku_len != NULL)
        *sku_len = d - 1;
    return order_sku_valid(id, d - 1);
}

static int place(order_state *o, tr_msg *m)
{
    tr_reader r;
    const char *user;
    size_t ul;
    uint64_t qty;
    tr_reader_init(&r, m);
    bool ok = tr_read_str(&r, &user, &ul) == TR_OK && tr_read_u64(&r, &qty) == TR_OK &&
              user_valid(user, ul) && qty >= 1 && qty <= ORDER_MAX_QTY;
    int64_t status = !ok          ? ORDER_INVALID
                     : !o->set_up ? ORDER_UNKNOWN
                     : o->sold + qty > o->stock ? ORDER_SOLD_OUT
                                                : ORDER_CONFIRMED;
    char order_id[ORDER_ID_MAX + 1] = "";
    int rc = TR_OK;
    uint8_t tag[TAG_BYTES];
    if (status == ORDER_CONFIRMED && (rc = draw_tag(tag)) != TR_OK)
        status = ORDER_INVALID; /* not reached on Linux: getrandom does not fail once seeded */
    if (status == ORDER_CONFIRMED) {
        /* the event, and in the same transaction the confirmation email */
        packbuf pb = {.n = 0};
        msgpack_packer pk;
        msgpack_packer_init(&pk, &pb, packbuf_write);
        msgpack_pack_uint64(&pk, 1);
        msgpack_pack_str(&pk, ul);
        msgpack_pack_str_body(&pk, user, ul);
        msgpack_pack_uint64(&pk, qty);
        msgpack_pack_bin(&pk, TAG_BYTES);
        msgpack_pack_bin_body(&pk, tag, TAG_BYTES);
        rc = pb.over ? TR_ENOMEM : tr_journal_persist(o->j, pb.b, pb.n);
        uint64_t seq = tr_journal_seq(o->j);
        order_id_format(order_id, o->sku, seq, tag);
        if (rc == TR_OK) {
            pb.n = 0;
            size_t il = strlen(order_id), sl = strlen(o->sku);
            msgpack_pack_array(&pk, 4);
            msgpack_pack_str(&pk, il);
            msgpack_pack_str_body(&pk, order_id, il);
            msgpack_pack_str(&pk, ul);
            msgpack_pack_str_body(&pk, user, ul);
            msgpack_pack_str(&pk, sl);
            msgpack_pack_str_body(&pk, o->sku, sl);
            msgpack_pack_uint64(&pk, qty);
            rc = pb.over ? TR_ENOMEM : tr_journal_outbox(o->j, o->queue, order_id, pb.b, pb.n);
        }
        if (rc == TR_OK) {
            o->sold += qty;
            rc = add_record(o, seq, user, ul, (uint32_t)qty, tag);
        }
    }
    tr_reader_done(&r);
    if (rc != TR_OK)
        return rc; /* the actor fails: its supervisor restarts it from what is durable */
    tr_msg *rep = tr_msg_new(ORDER_PLACE, 48);
    if (rep == NULL)
        return TR_ENOMEM;
    size_t il = strlen(order_id);
    msgpack_pack_int64(tr_msg_packer(rep), status);
    msgpack_pack_str(tr_msg_packer(rep), il);
    msgpack_pack_str_body(tr_msg_packer(rep), order_id, il);
    tr_msg_put_u64(rep, o->stock - o->sold);
    return tr_journal_reply(o->j, m, rep);
}

static int lookup(order_state *o, tr_msg *m)
{
    tr_reader r;
    const char *id;
    size_t il;
    const record *rec = NULL;
    tr_reader_init(&r, m);
    size_t sl = strlen(o->sku), skl = 0;
    if (tr_read_str(&r, &id, &il) == TR_OK && il <= ORDER_ID_MAX &&
        order_id_parse(id, il, &skl) && skl == sl && memcmp(id, o->sku, sl) == 0) {
        uint64_t seq = 0;
        size_t i = sl + 1;
        for (; i < il && id[i] != '-' && seq < UINT64_MAX / 10; i++)
            seq = seq * 10 + (uint64_t)(id[i] - '0');
        rec = find_record(o, seq);
        if (rec != NULL) { /* the whole id, tag included, or nothing */
            char want[ORDER_ID_MAX + 1];
            order_id_format(want, o->sku, seq, rec->tagged ? rec->tag : NULL);
            if (strlen(want) != il || memcmp(want, id, il) != 0)
                rec = NULL;
        }
    }
    tr_reader_done(&r);
    tr_msg *rep = tr_msg_new(ORDER_LOOKUP, 160);
    if (rep == NULL)
        return TR_ENOMEM;
    msgpack_packer *pk = tr_msg_packer(rep);
    msgpack_pack_uint64(pk, rec != NULL);
    size_t ul = rec != NULL ? strlen(rec->user) : 0;
    msgpack_pack_str(pk, ul);
    msgpack_pack_str_body(pk, rec != NULL ? rec->user : "", ul);
    msgpack_pack_uint64(pk, rec != NULL ? rec->qty : 0);
    return tr_journal_reply(o->j, m, rep);
}

static int handle(order_state *o, tr_msg *m);

static int order_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    order_state *o = state;
    if (tr_msg_corr(m) == 0 || tr_msg_is_reply(m))
        return 0; /* only requests */
    int rc = handle(o, m);
    if (rc == TR_OK && !o->set_up)
        tr_stop(ctx); /* a SKU nobody set up: answered "unknown", nothing to keep in memory */
    return rc;
}

static int handle(order_state *o, tr_msg *m)
{
    switch (tr_msg_type(m)) {
    case ORDER_SET_STOCK: {
        tr_reader r;
        uint64_t stock;
        tr_reader_init(&r, m);
        int rc = tr_read_u64(&r, &stock);
        tr_reader_done(&r);
        if (rc != TR_OK || stock > (1ull << 40))
            stock = o->stock; /* refused: the answer shows nothing changed */
        else if (stock != o->stock || !o->set_up) { /* a first stock of 0 sets the SKU up */
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_uint64(&pk, 0);
            msgpack_pack_uint64(&pk, stock);
            rc = tr_journal_persist(o->j, sb.data, sb.size);
            msgpack_sbuffer_destroy(&sb);
            if (rc != TR_OK)
                return rc;
            o->stock = stock;
            o->set_up = true;
        }
        uint64_t v[2] = {o->stock, o->sold};
        return tr_journal_reply(o->j, m, reply_u64s(ORDER_SET_STOCK, 2, v));
    }
    case ORDER_PLACE:
        return place(o, m);
    case ORDER_GET: {
        uint64_t v[4] = {o->stock, o->sold, o->stock > o->sold ? o->stock - o->sold : 0,
                         o->set_up};
        return tr_journal_reply(o->j, m, reply_u64s(ORDER_GET, 4, v));
    }
    case ORDER_LOOKUP:
        return lookup(o, m);
    default:
        return 0;
    }
}

static void order_turn_end(tr_ctx *ctx, void *state)
{
    (void)ctx;
    tr_journal_flush(((order_state *)state)->j);
}

static void order_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    (void)reason;
    order_state *o = state;
    tr_journal_close(o->j);
    for (size_t i = 0; i < o->nrecs; i++)
        free(o->recs[i].user);
    free(o->recs);
}

const tr_behaviour order_behaviour = {
    .name = "order",
    .state_size = sizeof(order_state),
    .init = order_init,
    .receive = order_receive,
    .terminate = order_terminate,
    .turn_end = order_turn_end,
};

/* ---- the confirmation email (actors/email.h's format callback) ------------------------------ */

int order_email_format(void *user, const void *data, size_t len, char *buf, size_t cap,
                       email_content *out)
{
    const order_email_opts *o = user;
    const char *domain = o != NULL && o->to_domain != NULL ? o->to_domain : "customers.invalid";
    tr_reader r;
    tr_reader_init_bytes(&r, data, len);
    const msgpack_object *arr;
    int rc = tr_read_object(&r, &arr);
    /* the item is one array [order_id, user, sku, qty] (add_order) */
    if (rc != TR_OK || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size != 4 ||
        arr->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        arr->via.array.ptr[1].type != MSGPACK_OBJECT_STR ||
        arr->via.array.ptr[2].type != MSGPACK_OBJECT_STR ||
        arr->via.array.ptr[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        tr_reader_done(&r);
        return TR_EBADMSG;
    }
    const msgpack_object_str *id = &arr->via.array.ptr[0].via.str,
                             *who = &arr->via.array.ptr[1].via.str,
                             *sku = &arr->via.array.ptr[2].via.str;
    uint64_t qty = arr->via.array.ptr[3].via.u64;
    /* an order id is SKU-N; the characters of each part are what the order actor allows */
    rc = id->size <= ORDER_ID_MAX && order_id_parse(id->ptr, id->size, NULL) && user_valid(who->ptr, who->size) &&
                 order_sku_valid(sku->ptr, sku->size)
             ? TR_OK
             : TR_EBADMSG;
    int n = 0;
    if (rc == TR_OK) {
        /* to, id, subject and body, one after the other in buf */
        bool has_at = memchr(who->ptr, '@', who->size) != NULL;
        char *p = buf, *end = buf + cap;
        out->to = p;
        n = has_at ? snprintf(p, (size_t)(end - p), "%.*s", (int)who->size, who->ptr)
                   : snprintf(p, (size_t)(end - p), "%.*s@%s", (int)who->size, who->ptr, domain);
        if (n >= 0 && n < end - p) {
            p += n + 1;
            out->id = p;
            n = snprintf(p, (size_t)(end - p), "%.*s", (int)id->size, id->ptr);
        }
        if (n >= 0 && n < end - p) {
            p += n + 1;
            out->subject = p;
            n = snprintf(p, (size_t)(end - p), "Payment successful: order %.*s", (int)id->size,
                         id->ptr);
        }
        if (n >= 0 && n < end - p) {
            p += n + 1;
            out->body = p;
            n = snprintf(p, (size_t)(end - p),
                         "Your payment for order %.*s was successful.\nItem: %.*s, quantity %llu.\n",
                         (int)id->size, id->ptr, (int)sku->size, sku->ptr,
                         (unsigned long long)qty);
        }
        if (n < 0 || n >= end - p)
            rc = TR_ETOOBIG;
    }
    tr_reader_done(&r);
    return rc;
}
