/*
 * gossip.c — membership and failure detection as pure logic: a ring of K watchers per member,
 * suspicion and down by a watcher, infection-style gossip of every change, joins through a seed.
 * The rules are in gossip.h; this file holds the tables and the message format:
 *
 *   message  version (1), type (PING ACK GOSSIP JOIN SYNC PUSH), the sender (as a member,
 *            below), the receiver as the sender sees it (state, 4 = unknown, and incarnation),
 *            the digest of the sender's view, count, then count members (<= 64; SYNC and PUSH
 *            <= 512)
 *   member   name, address, node id, incarnation, state, declared by (the ring key of the
 *            watcher whose verdict a down is, and its incarnation then; 0 and 0 otherwise)
 *
 * all msgpack (unsigned integers and strings), decoded by wire.h's strict reader in two passes:
 * the whole message is checked before anything is applied, and nothing is allocated for it.
 *
 * Tables. Members live in one array sorted by ring key (the hash of the name): lookups are a
 * binary search, the K successors of a member are the next entries (skipping down and left
 * ones). A member is 56 bytes; its name and address are kept once in a table of idents, which the
 * simulator shares among its instances. Nothing in tick() or receive() walks all members except
 * the re-choice of the watched set when the ring changes (and it stops after K live ones).
 */
#include "gossip.h"

#include "wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOSSIP_VERSION 1u
enum { M_PING = 1, M_ACK = 2, M_GOSSIP = 3, M_JOIN = 4, M_SYNC = 5, M_PUSH = 6, M_BEAT = 7 };
#define STATE_UNKNOWN 4u
#define MAX_SEEDS 64u

/* ---- idents: names and addresses, shared ---------------------------------------------------- */

typedef struct ident {
    struct ident *next;
    uint64_t h;
    uint32_t refs;
    char name[TR_GOSSIP_NAME_MAX + 1];
    char addr[TR_GOSSIP_ADDR_MAX + 1];
} ident;

struct tr_gossip_idents {
    ident **b;
    size_t nb, n;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

bool tr__gossip_is_beat(const void *msg, size_t len)
{
    const uint8_t *p = msg; /* msg_begin: the version, then the type, each a positive fixint */
    return len >= 2 && p[0] == GOSSIP_VERSION && p[1] == M_BEAT;
}

uint64_t tr__gossip_key(const char *name)
{
    return mix64(fnv(0xcbf29ce484222325ull, name));
}

tr_gossip_idents *tr__gossip_idents_new(void)
{
    tr_gossip_idents *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->nb = 64;
    t->b = calloc(t->nb, sizeof *t->b);
    if (t->b == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

void tr__gossip_idents_free(tr_gossip_idents *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nb; i++)
        for (ident *e = t->b[i], *nx; e != NULL; e = nx) {
            nx = e->next;
            free(e);
        }
    free(t->b);
    free(t);
}

static ident *ident_get(tr_gossip_idents *t, const char *name, const char *addr)
{
    uint64_t h = fnv(fnv(0xcbf29ce484222325ull, name) ^ 0xff, addr);
    for (ident *e = t->b[h & (t->nb - 1)]; e != NULL; e = e->next)
        if (e->h == h && strcmp(e->name, name) == 0 && strcmp(e->addr, addr) == 0) {
            e->refs++;
            return e;
        }
    if (t->n >= t->nb) { /* grow (power of two) */
        ident **nb = calloc(t->nb * 2, sizeof *nb);
        if (nb != NULL) {
            for (size_t i = 0; i < t->nb; i++)
                for (ident *e = t->b[i], *nx; e != NULL; e = nx) {
                    nx = e->next;
                    e->next = nb[e->h & (t->nb * 2 - 1)];
                    nb[e->h & (t->nb * 2 - 1)] = e;
                }
            free(t->b);
            t->b = nb;
            t->nb *= 2;
        }
    }
    ident *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->h = h;
    e->refs = 1;
    memcpy(e->name, name, strnlen(name, TR_GOSSIP_NAME_MAX));
    memcpy(e->addr, addr, strnlen(addr, TR_GOSSIP_ADDR_MAX));
    e->next = t->b[h & (t->nb - 1)];
    t->b[h & (t->nb - 1)] = e;
    t->n++;
    return e;
}

static void ident_put(tr_gossip_idents *t, ident *e)
{
    if (e == NULL || --e->refs > 0)
        return;
    for (ident **pp = &t->b[e->h & (t->nb - 1)]; *pp != NULL; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    t->n--;
    free(e);
}

/* ---- the instance --------------------------------------------------------------------------- */

typedef struct gm {
    uint64_t key;     /* ring position: tr__gossip_key(name) */
    uint64_t inc;
    ident *id;
    uint32_t since;   /* when its state last changed, now_ms >> 10 (forgetting) */
    uint16_t node_id;
    uint8_t state;
    uint8_t fresh;    /* bit 0: new in a bulk load, not yet announced to the event callback;
                       * bit 1: told that a verdict on it was dropped, at this incarnation */
    uint64_t by;      /* down: the ring key of the watcher that declared it */
    uint64_t by_inc;  /* and its incarnation then */
    uint64_t down_inc; /* the highest incarnation at which this instance held it down (0: none) */
} gm;

typedef struct watch {
    uint64_t key;
    uint64_t last_ms; /* last heard from it (or when it became watched) */
    uint64_t since;   /* when it became watched */
    uint64_t last_ping; /* when we last pinged it (it was silent, or suspect, or new) */
    /* anti-entropy: the digests of its last beat or ack and of ours then, since when both have
     * stayed the same and differ (0: they agree), and when we last pushed our view to it */
    uint64_t peer_digest, my_digest, differ_since, last_sync;
    bool new_watch;     /* watched since the last ring change: pinged at the next tick */
    bool heard;       /* heard from since it became watched */
    bool young;       /* it became watched while the ring around it was settling: within
                       * 2 * down_ms of this instance's join, or it came in between watched
                       * members (it joined), or the ring was smaller than K + 1 */
} watch;

typedef struct queued {
    uint64_t key;
    uint32_t left;    /* gossip messages it still goes into */
} queued;

struct tr_gossip {
    /* options (defaults applied) */
    unsigned k, hb_ms, down_ms, suspect_after_ms, gossip_ms, fanout, retransmit, updates, probe_ms,
        join_ms, forget_ms, sync_ms;
    size_t max_members;
    char *seeds[MAX_SEEDS];
    size_t nseeds, seed_i;
    tr_gossip_send_fn send;
    tr_gossip_event_fn event;
    tr_gossip_note_fn note;
    void *arg;
    tr_gossip_idents *idents;
    bool own_idents;

    uint64_t self_key, digest;
    ident *self_id;
    gm *m;
    size_t n, cap;
    watch w[TR_GOSSIP_MONITORS_MAX];
    unsigned nw;
    queued q[TR_GOSSIP_QUEUE];
    size_t nq, qcur;
    uint16_t qmap[2 * TR_GOSSIP_QUEUE]; /* key -> slot + 1 (linear probing; 0: empty) */
    uint64_t probes[TR_GOSSIP_PROBES];
    size_t nprobes;
    uint64_t rng;
    uint64_t last_tick, next_hb, next_gossip, next_probe, next_join;
    /* this instance's own health: when the last tick asked to be ticked next, and how late the
     * ticks came after that, the largest in the current window of down_ms and in the one before */
    uint64_t due, late_window, late_cur, late_prev;
    uint64_t joined_ms; /* when this instance joined (its first SYNC, or its creation without seeds) */
    size_t forget_cur;
    bool joined, ring_dirty, leaving, refute_pending;
    uint64_t ring_gen; /* tr__gossip_ring_gen: bumped by every ring_compute and the leave */
    tr_wire_buf buf;
    tr_gossip_stats st;
};

static uint64_t rnd(tr_gossip *g)
{
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 0x2545f4914f6cdd1dull;
}

static unsigned rank(unsigned s)
{
    return s; /* alive 0 < suspect 1 < down 2 < left 3 */
}

static bool in_ring(const gm *m)
{
    return m->state == TR_GOSSIP_ALIVE || m->state == TR_GOSSIP_SUSPECT;
}

/* A member's share of the view's digest: the XOR over the members in the ring of a hash of name
 * and incarnation. Two instances with one view have one digest; it changes in O(1) per change
 * (every change of a member's incarnation or ring membership goes through here, out then in). */
static uint64_t dig(const gm *m)
{
    return in_ring(m) ? mix64(m->key ^ mix64(m->inc + 0x9e3779b97f4a7c15ull)) : 0;
}

/* The index of key, or -(insertion point) - 1. */
static ptrdiff_t find(const tr_gossip *g, uint64_t key)
{
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->m[mid].key < key)
            lo = mid + 1;
        else if (g->m[mid].key > key)
            hi = mid;
        else
            return (ptrdiff_t)mid;
    }
    return -(ptrdiff_t)lo - 1;
}

static gm *rec(tr_gossip *g, uint64_t key)
{
    ptrdiff_t i = find(g, key);
    return i >= 0 ? &g->m[i] : NULL;
}

static gm *self(tr_gossip *g)
{
    return rec(g, g->self_key);
}

static void view(const gm *m, tr_gossip_member *out)
{
    out->name = m->id->name;
    out->addr = m->id->addr;
    out->node_id = m->node_id;
    out->incarnation = m->inc;
    out->state = (tr_gossip_state)m->state;
    out->by = m->by;
    out->by_inc = m->by_inc;
}

static void note(tr_gossip *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line for the note callback (nothing formatted without one). */
static void note(tr_gossip *g, const char *fmt, ...)
{
    if (g->note == NULL)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    g->note(g->arg, line);
}

static void emit(tr_gossip *g, const gm *m, int old)
{
    if (g->event != NULL) {
        tr_gossip_member v;
        view(m, &v);
        g->event(g->arg, &v, old);
    }
}

static watch *watched(tr_gossip *g, uint64_t key)
{
    for (unsigned i = 0; i < g->nw; i++)
        if (g->w[i].key == key)
            return &g->w[i];
    return NULL;
}

/* ---- the gossip queue and the probed down members ------------------------------------------ */

static uint32_t budget(const tr_gossip *g)
{
    uint32_t lg = 1;
    while (lg < 63 && ((size_t)1 << lg) < g->n + 1)
        lg++;
    return g->retransmit * lg;
}

/* The queue's index: which slot holds a key, so that a change learnt is queued in O(1) (a
 * partition's heal brings thousands, each checked against a full queue). */
#define QMAP (2 * TR_GOSSIP_QUEUE)

static size_t qhome(uint64_t key)
{
    return (size_t)(key >> 17) & (QMAP - 1); /* (keys are hashes already) */
}

static ptrdiff_t q_find(const tr_gossip *g, uint64_t key)
{
    for (size_t h = qhome(key);; h = (h + 1) & (QMAP - 1)) {
        if (g->qmap[h] == 0)
            return -1;
        if (g->q[g->qmap[h] - 1].key == key)
            return g->qmap[h] - 1;
    }
}

static void q_map_put(tr_gossip *g, uint64_t key, size_t slot)
{
    size_t h = qhome(key);
    while (g->qmap[h] != 0)
        h = (h + 1) & (QMAP - 1);
    g->qmap[h] = (uint16_t)(slot + 1);
}

/* Removes key's entry (its slot still holds it), shifting back the entries after it. */
static void q_map_del(tr_gossip *g, uint64_t key)
{
    size_t h = qhome(key);
    while (g->qmap[h] != 0 && g->q[g->qmap[h] - 1].key != key)
        h = (h + 1) & (QMAP - 1);
    if (g->qmap[h] == 0)
        return;
    g->qmap[h] = 0;
    for (size_t j = (h + 1) & (QMAP - 1); g->qmap[j] != 0; j = (j + 1) & (QMAP - 1)) {
        size_t home = qhome(g->q[g->qmap[j] - 1].key);
        /* the entry at j may move to the hole at h if its home is not in (h, j] cyclically */
        if (((j - home) & (QMAP - 1)) >= ((j - h) & (QMAP - 1))) {
            g->qmap[h] = g->qmap[j];
            g->qmap[j] = 0;
            h = j;
        }
    }
}

/* Removes the entry in slot i: the last one takes its place. */
static void q_remove(tr_gossip *g, size_t i)
{
    size_t last = g->nq - 1;
    q_map_del(g, g->q[i].key);
    if (i != last) {
        q_map_del(g, g->q[last].key);
        g->q[i] = g->q[last];
        q_map_put(g, g->q[i].key, i);
    }
    g->nq--;
}

static void q_clear(tr_gossip *g)
{
    g->nq = g->qcur = 0;
    memset(g->qmap, 0, sizeof g->qmap);
}

static void enqueue(tr_gossip *g, uint64_t key)
{
    ptrdiff_t at = q_find(g, key);
    if (at >= 0) {
        g->q[at].left = budget(g);
        return;
    }
    if (g->nq == TR_GOSSIP_QUEUE) {
        /* full: the most-sent of 8 entries from a random place makes room */
        size_t start = (size_t)(rnd(g) % TR_GOSSIP_QUEUE), min = start;
        for (size_t k = 1; k < 8; k++) {
            size_t i = (start + k) % TR_GOSSIP_QUEUE;
            if (g->q[i].left < g->q[min].left)
                min = i;
        }
        q_remove(g, min);
    }
    g->q[g->nq] = (queued){.key = key, .left = budget(g)};
    q_map_put(g, key, g->nq);
    g->nq++;
}

static void probe_del(tr_gossip *g, uint64_t key)
{
    for (size_t i = 0; i < g->nprobes; i++)
        if (g->probes[i] == key) {
            g->probes[i] = g->probes[--g->nprobes];
            return;
        }
}

static void probe_add(tr_gossip *g, uint64_t key)
{
    probe_del(g, key);
    if (g->nprobes < TR_GOSSIP_PROBES)
        g->probes[g->nprobes++] = key;
    else
        g->probes[rnd(g) % TR_GOSSIP_PROBES] = key; /* a random one of the older ones goes */
}

/* ---- encoding ------------------------------------------------------------------------------- */

static void put_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void put_member(msgpack_packer *pk, const gm *m)
{
    put_str(pk, m->id->name);
    put_str(pk, m->id->addr);
    msgpack_pack_uint16(pk, m->node_id);
    msgpack_pack_uint64(pk, m->inc);
    msgpack_pack_uint8(pk, m->state);
    msgpack_pack_uint64(pk, m->state == TR_GOSSIP_DOWN ? m->by : 0);
    msgpack_pack_uint64(pk, m->state == TR_GOSSIP_DOWN ? m->by_inc : 0);
}

/* Starts a message of `type` to `to` (NULL: unknown) in g->buf, up to its updates' count. */
static void msg_begin(tr_gossip *g, msgpack_packer *pk, unsigned type, const gm *to)
{
    g->buf.len = 0;
    g->buf.oom = 0;
    tr__wire_packer(pk, &g->buf);
    const gm *me = self(g);
    msgpack_pack_uint8(pk, GOSSIP_VERSION);
    msgpack_pack_uint8(pk, (uint8_t)type);
    put_member(pk, me);
    msgpack_pack_uint8(pk, to != NULL ? to->state : STATE_UNKNOWN);
    msgpack_pack_uint64(pk, to != NULL ? to->inc : 0);
    msgpack_pack_uint64(pk, g->digest);
}

/* Appends up to g->updates queued changes, round robin; `spend`: they count as sent that many
 * times (a gossip message to `spend` members), else they ride along for free. */
static void put_queued(tr_gossip *g, msgpack_packer *pk, uint32_t spend)
{
    const gm *sel[TR_GOSSIP_MSG_UPDATES];
    size_t k = 0, scanned = 0;
    bool drop = false;
    for (; k < g->updates && scanned < g->nq; scanned++) {
        queued *q = &g->q[(g->qcur + scanned) % g->nq];
        const gm *m = rec(g, q->key);
        if (m == NULL) { /* forgotten since */
            q->left = 0;
            drop = true;
            continue;
        }
        sel[k++] = m;
        if (spend > 0) {
            q->left = q->left > spend ? q->left - spend : 0;
            drop |= q->left == 0;
        }
    }
    msgpack_pack_uint32(pk, (uint32_t)k);
    for (size_t i = 0; i < k; i++)
        put_member(pk, sel[i]);
    if (g->nq > 0)
        g->qcur = (g->qcur + scanned) % g->nq;
    if (drop) {
        for (size_t i = g->nq; i-- > 0;) /* (from the end: the last one is never a spent one) */
            if (g->q[i].left == 0)
                q_remove(g, i);
        if (g->qcur >= g->nq)
            g->qcur = 0;
    }
}

static void msg_send(tr_gossip *g, const char *name, const char *addr)
{
    if (g->buf.oom)
        return;
    g->st.sent++;
    g->send(g->arg, name, addr, g->buf.data, g->buf.len);
}

static void send_to(tr_gossip *g, unsigned type, gm *to, bool with_queue)
{
    msgpack_packer pk;
    msg_begin(g, &pk, type, to);
    if (with_queue)
        put_queued(g, &pk, 0);
    else
        msgpack_pack_uint32(&pk, 0);
    msg_send(g, to->id->name, to->id->addr);
}

/* ---- the ring ------------------------------------------------------------------------------- */

static void ring_compute(tr_gossip *g, uint64_t now)
{
    g->ring_dirty = false;
    g->ring_gen++;
    watch old[TR_GOSSIP_MONITORS_MAX];
    unsigned nold = g->nw;
    memcpy(old, g->w, sizeof old);
    g->nw = 0;
    ptrdiff_t si = find(g, g->self_key);
    if (si < 0 || g->leaving)
        return;
    bool fresh[TR_GOSSIP_MONITORS_MAX] = {false}; /* new in the set this time */
    for (size_t step = 1; step < g->n && g->nw < g->k; step++) {
        const gm *m = &g->m[((size_t)si + step) % g->n];
        if (!in_ring(m))
            continue;
        fresh[g->nw] = true;
        watch *w = &g->w[g->nw++];
        /* new: down_after_ms from now to be heard, and pinged at once — its beats start only
         * once it knows of the change that made this one its watcher, which gossip may bring
         * late on a busy host (a node killed under load: its watchers' new watched members
         * were taken down for want of being heard in time) */
        *w = (watch){.key = m->key, .last_ms = now, .since = now, .new_watch = true,
                     .young = now < g->joined_ms + 2ull * g->down_ms || nold < g->k};
        for (unsigned j = 0; j < nold; j++)
            if (old[j].key == m->key) {
                *w = old[j];
                fresh[g->nw - 1] = false;
            }
    }
    /* members that came in between (a join, or a member back) are young: a new watch before
     * one kept, or any new one when a member still in the ring fell out of the set (pushed out
     * by one that came in); new ones after all kept, with none pushed out, are the ring walking
     * on past members gone: not */
    bool pushed = false;
    for (unsigned j = 0; j < nold && !pushed; j++) {
        const gm *m = rec(g, old[j].key);
        pushed = m != NULL && in_ring(m) && watched(g, old[j].key) == NULL;
    }
    bool kept_after = false;
    for (unsigned i = g->nw; i-- > 0;) {
        if (fresh[i])
            g->w[i].young |= pushed || kept_after;
        else
            kept_after = true;
    }
}

/* Copies the (up to cap) members that watch this one: its K predecessors in the ring. */
static size_t watchers(tr_gossip *g, gm **out, size_t cap)
{
    ptrdiff_t si = find(g, g->self_key);
    size_t k = 0;
    if (si < 0)
        return 0;
    for (size_t step = 1; step < g->n && k < g->k && k < cap; step++) {
        gm *m = &g->m[((size_t)si + g->n - step) % g->n];
        if (in_ring(m))
            out[k++] = m;
    }
    return k;
}

/* ---- applying what others say --------------------------------------------------------------- */

typedef struct upd {
    char name[TR_GOSSIP_NAME_MAX + 1];
    char addr[TR_GOSSIP_ADDR_MAX + 1];
    uint64_t node_id, inc, state, by, by_inc;
} upd;

static tr_gossip_member as_member(const upd *u)
{
    return (tr_gossip_member){.name = u->name, .addr = u->addr, .node_id = (uint16_t)u->node_id,
                              .incarnation = u->inc, .state = (tr_gossip_state)u->state,
                              .by = u->by, .by_inc = u->by_inc};
}

/* What another says about this instance: refuted if not alive at our incarnation or above. */
static void about_self(tr_gossip *g, uint64_t inc, unsigned state)
{
    gm *me = self(g);
    if (g->leaving || me == NULL)
        return;
    if (inc < me->inc || (inc == me->inc && state == TR_GOSSIP_ALIVE))
        return;
    g->digest ^= dig(me);
    me->inc = inc == UINT64_MAX ? inc : inc + 1;
    g->digest ^= dig(me);
    g->st.refutations += state != TR_GOSSIP_ALIVE;
    if (state != TR_GOSSIP_ALIVE)
        note(g, "refuting that this node is %s (incarnation %llu -> %llu)",
             state == TR_GOSSIP_SUSPECT ? "suspect" : state == TR_GOSSIP_DOWN ? "down" : "left",
             (unsigned long long)inc, (unsigned long long)me->inc);
    enqueue(g, g->self_key);
    g->refute_pending = true;
}

/* Inserts a new member (alive or suspect) at index pos (-(find) - 1). */
static gm *insert_at(tr_gossip *g, size_t pos, const tr_gossip_member *u, uint64_t key,
                     uint64_t now)
{
    if (g->n >= g->max_members) {
        g->st.refused_full++;
        return NULL;
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        if (cap > g->max_members)
            cap = g->max_members;
        gm *m = realloc(g->m, cap * sizeof *m);
        if (m == NULL)
            return NULL;
        g->m = m;
        g->cap = cap;
    }
    ident *id = ident_get(g->idents, u->name, u->addr);
    if (id == NULL)
        return NULL;
    memmove(&g->m[pos + 1], &g->m[pos], (g->n - pos) * sizeof *g->m);
    g->n++;
    gm *m = &g->m[pos];
    *m = (gm){.key = key, .inc = u->incarnation, .id = id, .since = (uint32_t)(now >> 10),
              .node_id = u->node_id, .state = (uint8_t)u->state};
    g->digest ^= dig(m);
    return m;
}

/* Whether the member `by`, at incarnation by_inc, may have declared the member at index i down:
 * unknown (it cannot be checked), this instance, or in the ring among the 2K members before it and
 * not held down here at that incarnation or a later one. */
static bool plausible_watcher(tr_gossip *g, ptrdiff_t i, uint64_t by, uint64_t by_inc)
{
    if (by == 0 || by == g->self_key)
        return true;
    const gm *w = rec(g, by);
    if (w == NULL)
        return true;
    if (!in_ring(w) || (w->down_inc != 0 && w->down_inc >= by_inc))
        return false; /* held down here, now or since: a verdict from a cut-off view */
    size_t seen = 0;
    for (size_t step = 1; step < g->n && seen < 2 * g->k; step++) {
        const gm *m = &g->m[((size_t)i + g->n - step) % g->n];
        if (!in_ring(m))
            continue;
        if (m->key == by)
            return true;
        seen++;
    }
    return false;
}

/* Applies one update; true if it changed this instance's view. */
static bool apply(tr_gossip *g, uint64_t now, const tr_gossip_member *u)
{
    uint64_t key = tr__gossip_key(u->name);
    if (key == g->self_key) {
        if (strcmp(u->name, g->self_id->name) == 0)
            about_self(g, u->incarnation, (unsigned)u->state);
        return false;
    }
    ptrdiff_t i = find(g, key);
    if (i < 0) {
        if (u->state == TR_GOSSIP_DOWN || u->state == TR_GOSSIP_LEFT)
            return false; /* no tombstones of members never known */
        gm *m = insert_at(g, (size_t)(-i - 1), u, key, now);
        if (m == NULL)
            return false;
        g->ring_dirty = true;
        enqueue(g, key);
        emit(g, m, -1);
        return true;
    }
    gm *m = &g->m[i];
    if (strcmp(m->id->name, u->name) != 0)
        return false; /* two names on one key (2^-64): the first one keeps it */
    if (u->incarnation < m->inc ||
        (u->incarnation == m->inc && rank((unsigned)u->state) <= rank(m->state)))
        return false;
    if (u->state == TR_GOSSIP_DOWN && in_ring(m) && u->incarnation == m->inc &&
        !plausible_watcher(g, i, u->by, u->by_inc)) {
        g->st.verdicts_dropped++;
        if (!(m->fresh & 2)) { /* it learns it is held down somewhere, and refutes */
            m->fresh |= 2;
            msgpack_packer pk;
            msg_begin(g, &pk, M_GOSSIP, NULL);
            msgpack_pack_uint32(&pk, 1);
            put_str(&pk, u->name);
            put_str(&pk, u->addr);
            msgpack_pack_uint16(&pk, u->node_id);
            msgpack_pack_uint64(&pk, u->incarnation);
            msgpack_pack_uint8(&pk, TR_GOSSIP_DOWN);
            msgpack_pack_uint64(&pk, u->by);
            msgpack_pack_uint64(&pk, u->by_inc);
            msg_send(g, m->id->name, m->id->addr);
        }
        return false;
    }
    unsigned old = m->state;
    uint16_t old_id = m->node_id;
    bool was_in = in_ring(m);
    if (u->incarnation > m->inc)
        m->fresh &= (uint8_t)~2;
    if (u->incarnation > m->inc && u->state == TR_GOSSIP_ALIVE) {
        watch *w = watched(g, key);
        if (w != NULL) {
            w->last_ms = now; /* it refuted or restarted: alive a moment ago */
            w->heard = true;
        }
    }
    g->digest ^= dig(m);
    m->inc = u->incarnation;
    m->state = (uint8_t)u->state;
    m->node_id = u->node_id;
    m->by = u->state == TR_GOSSIP_DOWN ? u->by : 0;
    m->by_inc = u->state == TR_GOSSIP_DOWN ? u->by_inc : 0;
    if (u->state == TR_GOSSIP_DOWN)
        m->down_inc = m->inc;
    g->digest ^= dig(m);
    m->since = (uint32_t)(now >> 10);
    if (strcmp(m->id->addr, u->addr) != 0) {
        ident *id = ident_get(g->idents, u->name, u->addr);
        if (id != NULL) {
            ident_put(g->idents, m->id);
            m->id = id;
        }
    }
    if (in_ring(m) != was_in)
        g->ring_dirty = true;
    if (m->state == TR_GOSSIP_DOWN)
        probe_add(g, key);
    else
        probe_del(g, key);
    enqueue(g, key);
    if (old != m->state || old_id != m->node_id)
        emit(g, m, (int)old);
    return true;
}

static int cmp_gm(const void *a, const void *b)
{
    const gm *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* Applies n updates as one batch: those about known members (or this one) one by one, the new
 * ones appended and sorted in once (a SYNC of 10,000 members is not 10,000 insertions). New
 * ones are not gossiped: they are not news to the cluster. */
static int apply_bulk(tr_gossip *g, uint64_t now, const tr_gossip_member *us, size_t n, bool quiet)
{
    size_t base = g->n;
    bool any_new = false;
    for (size_t i = 0; i < n; i++) {
        const tr_gossip_member *u = &us[i];
        uint64_t key = tr__gossip_key(u->name);
        if (key == g->self_key || find(g, key) >= 0)
            apply(g, now, u); /* changes a known entry in place: the table stays sorted */
        else if (u->state == TR_GOSSIP_ALIVE || u->state == TR_GOSSIP_SUSPECT)
            any_new = true;
    }
    if (!any_new)
        return TR_OK;
    for (size_t i = 0; i < n; i++) {
        const tr_gossip_member *u = &us[i];
        uint64_t key = tr__gossip_key(u->name);
        if (key == g->self_key || (u->state != TR_GOSSIP_ALIVE && u->state != TR_GOSSIP_SUSPECT))
            continue;
        /* (the search covers the sorted part only: the tail is this batch's) */
        size_t lo = 0, hi = base;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (g->m[mid].key < key)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < base && g->m[lo].key == key)
            continue;
        if (g->n >= g->max_members) {
            g->st.refused_full++;
            continue;
        }
        if (g->n == g->cap) {
            size_t cap = g->cap ? g->cap * 2 : 16;
            while (cap < g->n + (n - i))
                cap *= 2;
            if (cap > g->max_members)
                cap = g->max_members;
            gm *m = realloc(g->m, cap * sizeof *m);
            if (m == NULL)
                break;
            g->m = m;
            g->cap = cap;
        }
        ident *id = ident_get(g->idents, u->name, u->addr);
        if (id == NULL)
            break;
        g->m[g->n] = (gm){.key = key, .inc = u->incarnation, .id = id,
                          .since = (uint32_t)(now >> 10), .node_id = u->node_id,
                          .state = (uint8_t)u->state, .fresh = 1};
        g->digest ^= dig(&g->m[g->n++]);
    }
    if (g->n == base)
        return TR_OK;
    bool sorted = true;
    for (size_t i = base > 0 ? base : 1; i < g->n && sorted; i++)
        sorted = g->m[i - 1].key < g->m[i].key;
    if (!sorted)
        qsort(g->m, g->n, sizeof *g->m, cmp_gm);
    /* one name twice in the batch, or two names on one key: the first one stays */
    size_t j = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (j > 0 && g->m[j - 1].key == g->m[i].key) {
            gm drop = g->m[i];
            if ((g->m[j - 1].fresh & 1) && !(g->m[i].fresh & 1)) { /* the old one stays */
                drop = g->m[j - 1];
                g->m[j - 1] = g->m[i];
            }
            g->digest ^= dig(&drop);
            ident_put(g->idents, drop.id);
            continue;
        }
        g->m[j++] = g->m[i];
    }
    g->n = j;
    g->ring_dirty = true;
    for (size_t i = 0; i < g->n; i++)
        if (g->m[i].fresh & 1) {
            g->m[i].fresh &= (uint8_t)~1;
            if (!quiet)
                emit(g, &g->m[i], -1);
        }
    return TR_OK;
}

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct header {
    uint64_t type;
    upd sender;
    uint64_t you_state, you_inc, digest, count;
} header;

static bool rd_upd(tr_wire_rd *r, upd *u)
{
    return tr__wire_rd_cstr(r, 1, TR_GOSSIP_NAME_MAX, u->name) &&
           tr__wire_rd_cstr(r, 0, TR_GOSSIP_ADDR_MAX, u->addr) &&
           tr__wire_rd_uint(r, UINT16_MAX, &u->node_id) &&
           tr__wire_rd_uint(r, UINT64_MAX, &u->inc) &&
           tr__wire_rd_uint(r, TR_GOSSIP_LEFT, &u->state) && tr__wire_rd_uint(r, UINT64_MAX, &u->by) &&
           tr__wire_rd_uint(r, UINT64_MAX, &u->by_inc);
}

static bool rd_header(tr_wire_rd *r, header *h)
{
    uint64_t v;
    if (!tr__wire_rd_uint(r, 255, &v) || v != GOSSIP_VERSION ||
        !tr__wire_rd_uint(r, M_BEAT, &h->type) || h->type < M_PING || !rd_upd(r, &h->sender) ||
        !tr__wire_rd_uint(r, STATE_UNKNOWN, &h->you_state) ||
        !tr__wire_rd_uint(r, UINT64_MAX, &h->you_inc) ||
        !tr__wire_rd_uint(r, UINT64_MAX, &h->digest))
        return false;
    bool sync = h->type == M_SYNC || h->type == M_PUSH;
    return tr__wire_rd_uint(r, sync ? TR_GOSSIP_SYNC_CHUNK : TR_GOSSIP_MSG_UPDATES, &h->count);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static unsigned dflt(unsigned v, unsigned d)
{
    return v != 0 ? v : d;
}

int tr__gossip_new(const tr_gossip_opts *o, uint64_t now, tr_gossip **out)
{
    if (o == NULL || out == NULL || o->name == NULL || o->send == NULL || o->name[0] == '\0' ||
        strlen(o->name) > TR_GOSSIP_NAME_MAX || (o->addr != NULL && strlen(o->addr) > TR_GOSSIP_ADDR_MAX) ||
        o->monitors > TR_GOSSIP_MONITORS_MAX || o->updates > TR_GOSSIP_MSG_UPDATES ||
        o->nseeds > MAX_SEEDS || (o->nseeds > 0 && o->seeds == NULL) ||
        (o->max_members != 0 && o->max_members < 2))
        return TR_EINVAL;
    for (size_t i = 0; i < o->nseeds; i++)
        if (o->seeds[i] == NULL || strlen(o->seeds[i]) > TR_GOSSIP_ADDR_MAX)
            return TR_EINVAL;
    tr_gossip *g = calloc(1, sizeof *g);
    if (g == NULL)
        return TR_ENOMEM;
    g->k = dflt(o->monitors, 5);
    g->hb_ms = dflt(o->heartbeat_ms, 200);
    g->down_ms = dflt(o->down_after_ms, 1000);
    unsigned suspect = dflt(o->suspect_ms, 2 * g->hb_ms);
    if (suspect >= g->down_ms)
        suspect = g->down_ms / 2;
    g->suspect_after_ms = g->down_ms - suspect;
    g->gossip_ms = dflt(o->gossip_ms, g->hb_ms / 2 ? g->hb_ms / 2 : 1);
    g->fanout = dflt(o->fanout, 3);
    g->retransmit = dflt(o->retransmit, 3);
    g->updates = dflt(o->updates, 16);
    g->probe_ms = dflt(o->probe_ms, 1000);
    g->join_ms = dflt(o->join_ms, 1000);
    g->forget_ms = dflt(o->forget_ms, 60000);
    g->sync_ms = dflt(o->sync_ms, 2000);
    g->max_members = o->max_members ? o->max_members : 16384;
    g->send = o->send;
    g->event = o->event;
    g->arg = o->arg;
    g->note = o->note;
    g->idents = o->idents;
    if (g->idents == NULL) {
        g->idents = tr__gossip_idents_new();
        g->own_idents = true;
    }
    const char *addr = o->addr != NULL ? o->addr : "";
    for (size_t i = 0; i < o->nseeds; i++)
        if (strcmp(o->seeds[i], addr) != 0 && (g->seeds[g->nseeds] = strdup(o->seeds[i])) != NULL)
            g->nseeds++;
    g->self_key = tr__gossip_key(o->name);
    g->rng = mix64(o->rng_seed ? o->rng_seed : g->self_key ^ now) | 1;
    g->joined = g->nseeds == 0;
    g->joined_ms = now;
    tr_gossip_member me = {.name = o->name, .addr = addr, .node_id = o->node_id,
                           .incarnation = o->incarnation, .state = TR_GOSSIP_ALIVE};
    if (g->idents == NULL || insert_at(g, 0, &me, g->self_key, now) == NULL) {
        tr__gossip_free(g);
        return TR_ENOMEM;
    }
    g->self_id = g->m[0].id;
    g->last_tick = now;
    g->next_hb = g->next_gossip = g->next_probe = g->next_join = now;
    *out = g;
    return TR_OK;
}

void tr__gossip_free(tr_gossip *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->n; i++)
        ident_put(g->idents, g->m[i].id);
    if (g->own_idents)
        tr__gossip_idents_free(g->idents);
    for (size_t i = 0; i < g->nseeds; i++)
        free(g->seeds[i]);
    free(g->m);
    tr__wire_buf_free(&g->buf);
    free(g);
}

/* ---- receiving ------------------------------------------------------------------------------ */

/* The whole view (but left members), in chunks: the first of type `first` (SYNC, or PUSH: answer
 * with yours), the others SYNC. */
static void send_sync(tr_gossip *g, const char *name, const char *addr, unsigned first)
{
    size_t i = 0;
    if (g->m == NULL) /* (never: it holds itself) */
        return;
    for (bool one = true; one || i < g->n; one = false) {
        size_t k = 0, j = i;
        for (; j < g->n && k < TR_GOSSIP_SYNC_CHUNK; j++)
            k += g->m[j].state != TR_GOSSIP_LEFT;
        if (k == 0 && !one)
            break; /* only left members remain */
        msgpack_packer pk;
        msg_begin(g, &pk, one ? first : M_SYNC, NULL);
        msgpack_pack_uint32(&pk, (uint32_t)k);
        for (; i < j; i++)
            if (g->m[i].state != TR_GOSSIP_LEFT)
                put_member(&pk, &g->m[i]);
        msg_send(g, name, addr);
    }
}

/* Refutes (this instance was called suspect or down): the news to those that watch it. */
static void refute_flush(tr_gossip *g)
{
    if (!g->refute_pending)
        return;
    g->refute_pending = false;
    gm *ws[TR_GOSSIP_MONITORS_MAX];
    size_t k = watchers(g, ws, TR_GOSSIP_MONITORS_MAX);
    for (size_t i = 0; i < k; i++)
        send_to(g, M_GOSSIP, ws[i], true);
}

int tr__gossip_receive(tr_gossip *g, uint64_t now, const char *from, const void *msg, size_t len)
{
    if (g == NULL || (msg == NULL && len > 0))
        return TR_EINVAL;
    tr_wire_rd r = {msg, (const uint8_t *)msg + len};
    header h;
    upd u;
    bool ok = rd_header(&r, &h) && (from == NULL || strcmp(from, h.sender.name) == 0) &&
              h.sender.state <= TR_GOSSIP_LEFT;
    const uint8_t *start = r.p;
    for (uint64_t i = 0; ok && i < h.count; i++)
        ok = rd_upd(&r, &u);
    if (!ok || r.p != r.end) {
        g->st.bad++;
        return TR_EBADMSG;
    }
    g->st.received++;
    /* the sender: what it says of itself, and it is heard */
    tr_gossip_member sm = as_member(&h.sender);
    apply(g, now, &sm);
    uint64_t skey = tr__gossip_key(h.sender.name);
    gm *s = rec(g, skey);
    watch *sw = NULL;
    if (s != NULL && s->inc <= h.sender.inc && in_ring(s) && (sw = watched(g, skey)) != NULL) {
        sw->last_ms = now;
        sw->heard = true;
    }
    if (h.you_state != STATE_UNKNOWN)
        about_self(g, h.you_inc, (unsigned)h.you_state);
    r.p = start;
    if (h.type == M_SYNC || h.type == M_PUSH) {
        upd *us = malloc(h.count * sizeof *us + 1);
        tr_gossip_member *ms = malloc(h.count * sizeof *ms + 1);
        if (us == NULL || ms == NULL) {
            free(us);
            free(ms);
            return TR_ENOMEM;
        }
        for (uint64_t i = 0; i < h.count; i++) {
            rd_upd(&r, &us[i]);
            ms[i] = as_member(&us[i]);
        }
        apply_bulk(g, now, ms, h.count, false);
        free(ms);
        free(us);
        if (!g->joined)
            g->joined_ms = now;
        g->joined = true;
    } else {
        for (uint64_t i = 0; i < h.count; i++) {
            rd_upd(&r, &u);
            tr_gossip_member um = as_member(&u);
            apply(g, now, &um);
        }
    }
    if (g->ring_dirty)
        ring_compute(g, now);
    if (h.type == M_PING && !g->leaving) {
        s = rec(g, skey);
        if (s != NULL)
            send_to(g, M_ACK, s, true);
    } else if ((h.type == M_JOIN || h.type == M_PUSH) && !g->leaving) {
        send_sync(g, h.sender.name, h.sender.addr, M_SYNC);
    } else if ((h.type == M_ACK || h.type == M_BEAT) && sw != NULL &&
               (sw = watched(g, skey)) != NULL) {
        /* anti-entropy: a watched member whose view differs from ours and has stayed so for
         * sync_ms (gossip in flight would have changed one of them) gets our view and answers
         * with its own; at most once per sync_ms per watched member */
        if (h.digest == g->digest) {
            sw->differ_since = 0;
        } else if (sw->differ_since == 0 || h.digest != sw->peer_digest ||
                   g->digest != sw->my_digest) {
            sw->peer_digest = h.digest;
            sw->my_digest = g->digest;
            sw->differ_since = now;
        } else if (now - sw->differ_since >= g->sync_ms && now - sw->last_sync >= g->sync_ms) {
            sw->last_sync = sw->differ_since = now;
            g->st.syncs++;
            if ((s = rec(g, skey)) != NULL)
                send_sync(g, s->id->name, s->id->addr, M_PUSH);
        }
    }
    refute_flush(g);
    return TR_OK;
}

/* ---- ticking -------------------------------------------------------------------------------- */

static void set_state(tr_gossip *g, gm *m, unsigned state, uint64_t now)
{
    unsigned old = m->state;
    g->digest ^= dig(m);
    m->state = (uint8_t)state;
    m->by = state == TR_GOSSIP_DOWN ? g->self_key : 0;
    m->by_inc = state == TR_GOSSIP_DOWN ? self(g)->inc : 0;
    if (state == TR_GOSSIP_DOWN)
        m->down_inc = m->inc;
    g->digest ^= dig(m);
    m->since = (uint32_t)(now >> 10);
    enqueue(g, m->key);
    if (state == TR_GOSSIP_DOWN) {
        probe_add(g, m->key);
        g->ring_dirty = true;
    }
    emit(g, m, (int)old);
}

/* How late this instance's ticks came lately (ms, the largest in the last one or two windows of
 * down_ms): its host's or its own starvation, which it also sees in its watched members. */
static uint64_t late_recent(const tr_gossip *g)
{
    return g->late_cur > g->late_prev ? g->late_cur : g->late_prev;
}

/* What a watched member's deadlines (suspect, down) are extended by: twice how late this
 * instance's own ticks came lately, at most down_ms — a watcher on a starved host gives its
 * members the time it sees itself lose (Lifeguard's local health, for a ring of watchers). On a
 * host that keeps up, 0: the bounds stand. */
static uint64_t grace_ms(const tr_gossip *g)
{
    uint64_t late = late_recent(g);
    return 2 * late < g->down_ms ? 2 * late : g->down_ms;
}

/* And a watch's own: down_ms more for a member never heard since it became watched while the
 * ring around it was settling (this instance had just joined, or the member had): its beats start
 * only once it learns it has a new watcher, and the first ping and its answer each wait for a
 * dial — on a host where 100 processes start at once, longer than down_ms (most forming false
 * downs were these). A member heard once is held to the bounds; a kill is seen sooner anyway
 * (the dial to it is refused). */
static uint64_t watch_grace_ms(const tr_gossip *g, const watch *w)
{
    return grace_ms(g) + (w->young && !w->heard ? g->down_ms : 0);
}

static void check_watched(tr_gossip *g, uint64_t now)
{
    for (unsigned i = 0; i < g->nw; i++) {
        watch *w = &g->w[i];
        gm *m = rec(g, w->key);
        if (m == NULL || !in_ring(m)) {
            g->ring_dirty = true;
            continue;
        }
        uint64_t silent = now > w->last_ms ? now - w->last_ms : 0, grace = watch_grace_ms(g, w);
        if (m->state == TR_GOSSIP_ALIVE && silent >= g->suspect_after_ms + grace) {
            g->st.suspected++;
            note(g, "watcher: %s suspect, not heard for %llu ms", m->id->name,
                 (unsigned long long)silent);
            set_state(g, m, TR_GOSSIP_SUSPECT, now);
        } else if (m->state == TR_GOSSIP_SUSPECT && silent >= g->down_ms + grace) {
            g->st.declared_down++;
            note(g,
                 "watcher: %s declared down, not heard for %llu ms (watched for %llu ms, %s; "
                 "this instance's ticks late by up to %llu ms lately; %llu ms of grace)",
                 m->id->name, (unsigned long long)silent, (unsigned long long)(now - w->since),
                 w->heard ? "heard before" : "never heard", (unsigned long long)late_recent(g),
                 (unsigned long long)grace);
            set_state(g, m, TR_GOSSIP_DOWN, now);
        }
    }
}

/* A random member in the ring other than this one, not in avoid[0..navoid); NULL if none found
 * in a few tries. */
static gm *random_member(tr_gossip *g, gm *const *avoid, size_t navoid)
{
    for (int tries = 0; tries < 16 && g->n > 1 && g->m != NULL; tries++) {
        gm *m = &g->m[rnd(g) % g->n];
        if (m->key == g->self_key || !in_ring(m))
            continue;
        bool dup = false;
        for (size_t i = 0; i < navoid; i++)
            dup |= avoid[i] == m;
        if (!dup)
            return m;
    }
    return NULL;
}

static void add_partner(gm **out, size_t *k, size_t cap, gm *m)
{
    for (size_t i = 0; i < *k; i++)
        if (out[i] == m)
            return;
    if (*k < cap)
        out[(*k)++] = m;
}

/* The members this one gossips to (rounds pick `fanout` of them at random): the K it watches,
 * the K that watch it, and fingers — the first member in the ring at 1/2, 1/4, 1/8, ... of the
 * ring's key space after this one, while that span holds more than K members. A change reaches
 * every member in O(log N) rounds (the fingers halve the distance, as Chord's do), and over
 * connections that are already open: the node keeps one to each partner (nodegossip.c), so a
 * round dials nobody. A finger moves only when a member near its point joins or goes, not with
 * every change of the ring. Returns how many (at most cap). */
static size_t partners(tr_gossip *g, gm **out, size_t cap)
{
    size_t k = 0;
    for (unsigned i = 0; i < g->nw; i++) {
        gm *m = rec(g, g->w[i].key);
        if (m != NULL && in_ring(m))
            add_partner(out, &k, cap, m);
    }
    gm *ws[TR_GOSSIP_MONITORS_MAX];
    size_t nws = watchers(g, ws, TR_GOSSIP_MONITORS_MAX);
    for (size_t i = 0; i < nws; i++)
        add_partner(out, &k, cap, ws[i]);
    for (unsigned j = 1; j < 64 && (g->n >> j) > g->k; j++) {
        ptrdiff_t at = find(g, g->self_key + (UINT64_C(1) << (64 - j)));
        size_t i = at >= 0 ? (size_t)at : (size_t)(-at - 1);
        for (size_t step = 0; step < g->n; step++) {
            gm *m = &g->m[(i + step) % g->n];
            if (m->key == g->self_key)
                break; /* around the ring: nobody there */
            if (in_ring(m)) {
                add_partner(out, &k, cap, m);
                break;
            }
        }
    }
    return k;
}

static void gossip_round(tr_gossip *g)
{
    gm *to[16];
    size_t k = 0;
    unsigned f = g->fanout < 16 ? g->fanout : 16;
    gm *ps[TR_GOSSIP_PARTNERS_MAX];
    size_t np = partners(g, ps, TR_GOSSIP_PARTNERS_MAX);
    while (k + 1 < f && np > 0) {
        size_t i = rnd(g) % np;
        to[k++] = ps[i];
        ps[i] = ps[--np];
    }
    /* and one member at random: what mixes views that partners alone keep apart (the two sides
     * of a partition, whose partners are mostly across it) */
    while (k < f) {
        gm *m = random_member(g, to, k);
        if (m == NULL)
            break;
        to[k++] = m;
    }
    if (k == 0) {
        q_clear(g); /* nobody to tell */
        return;
    }
    msgpack_packer pk;
    msg_begin(g, &pk, M_GOSSIP, NULL);
    put_queued(g, &pk, (uint32_t)k);
    for (size_t i = 0; i < k; i++)
        msg_send(g, to[i]->id->name, to[i]->id->addr);
}

static void forget_some(tr_gossip *g, uint64_t now)
{
    uint32_t t = (uint32_t)(now >> 10), limit = g->forget_ms >> 10;
    for (int step = 0; step < 64 && g->n > 0; step++) {
        if (g->forget_cur >= g->n)
            g->forget_cur = 0;
        gm *m = &g->m[g->forget_cur];
        if ((m->state == TR_GOSSIP_DOWN || m->state == TR_GOSSIP_LEFT) && t - m->since > limit &&
            m->key != g->self_key) {
            probe_del(g, m->key);
            g->digest ^= dig(m);
            ident_put(g->idents, m->id);
            memmove(m, m + 1, (g->n - g->forget_cur - 1) * sizeof *m);
            g->n--;
            g->st.forgotten++;
            continue;
        }
        g->forget_cur++;
    }
}

void tr__gossip_tick(tr_gossip *g, uint64_t now)
{
    if (g == NULL)
        return;
    if (now > g->last_tick && now - g->last_tick > g->down_ms / 2) {
        /* this instance stood still: its watched members' silence meanwhile is its own */
        for (unsigned i = 0; i < g->nw; i++)
            g->w[i].last_ms = now;
    }
    if (now >= g->late_window + g->down_ms) {
        g->late_prev = now >= g->late_window + 2ull * g->down_ms ? 0 : g->late_cur;
        g->late_cur = 0;
        g->late_window = now;
    }
    /* late: past what the last tick asked for by more than a tick's interval (heartbeat_ms / 4,
     * the cadence an embedder ticks at: the simulator's deadlines wait that long for a tick) */
    uint64_t slack = g->hb_ms / 4;
    if (g->due != 0 && now > g->due + slack && now - g->due - slack > g->late_cur)
        g->late_cur = now - g->due - slack;
    g->last_tick = now;
    if (!g->joined && now >= g->next_join && g->nseeds > 0) {
        msgpack_packer pk;
        msg_begin(g, &pk, M_JOIN, NULL);
        msgpack_pack_uint32(&pk, 0);
        msg_send(g, "", g->seeds[g->seed_i++ % g->nseeds]);
        g->next_join = now + g->join_ms;
    }
    if (g->ring_dirty)
        ring_compute(g, now);
    if (!g->leaving) {
        check_watched(g, now);
        if (g->ring_dirty)
            ring_compute(g, now);
        if (now >= g->next_hb) {
            /* beats to the members that watch this one; none answers */
            /* on multiples of heartbeat_ms: every instance on a host (one monotonic clock)
             * beats at the same moments, so a node's K beats out and K beats in come in one
             * burst — its threads wake once for several (at 100 idle nodes on 2 cores: 25% of
             * a core → 15%, in one sitting) */
            g->next_hb = (now / g->hb_ms + 1) * g->hb_ms;
            gm *ws[TR_GOSSIP_MONITORS_MAX];
            size_t k = watchers(g, ws, TR_GOSSIP_MONITORS_MAX);
            for (size_t i = 0; i < k; i++)
                send_to(g, M_BEAT, ws[i], true);
        }
        /* a watched member not heard for two heartbeats, or held suspect, is pinged (once a
         * heartbeat) and answers: it learns it is suspect and refutes, and a member that does
         * not count this one among its watchers (views that differ for a moment) is heard all
         * the same */
        for (unsigned i = 0; i < g->nw; i++) {
            watch *w = &g->w[i];
            gm *m = rec(g, w->key);
            uint64_t silent = now > w->last_ms ? now - w->last_ms : 0;
            if (m == NULL || (now - w->last_ping < g->hb_ms && !w->new_watch) ||
                (silent < 2ull * g->hb_ms && m->state == TR_GOSSIP_ALIVE && !w->new_watch))
                continue;
            w->last_ping = now;
            w->new_watch = false;
            send_to(g, M_PING, m, true);
        }
        if (now >= g->next_probe) {
            g->next_probe = now + g->probe_ms;
            while (g->nprobes > 0) {
                size_t i = rnd(g) % g->nprobes;
                gm *m = rec(g, g->probes[i]);
                if (m != NULL && m->state == TR_GOSSIP_DOWN) {
                    send_to(g, M_PING, m, true);
                    break;
                }
                g->probes[i] = g->probes[--g->nprobes];
            }
        }
    }
    if (g->nq > 0 && now >= g->next_gossip) {
        g->next_gossip = now + g->gossip_ms;
        gossip_round(g);
    }
    forget_some(g, now);
    refute_flush(g);
    g->due = tr__gossip_next_ms(g);
}

uint64_t tr__gossip_next_ms(const tr_gossip *g)
{
    uint64_t t = g->next_hb;
    if (g->nq > 0 && g->next_gossip < t)
        t = g->next_gossip;
    if (!g->joined && g->nseeds > 0 && g->next_join < t)
        t = g->next_join;
    for (unsigned i = 0; i < g->nw; i++) {
        uint64_t grace = watch_grace_ms(g, &g->w[i]);
        uint64_t d = g->w[i].last_ms + g->suspect_after_ms + grace;
        if (d <= g->last_tick)
            d = g->w[i].last_ms + g->down_ms + grace;
        if (d > g->last_tick && d < t)
            t = d;
    }
    return t;
}

/* The member `name` in the ring (not this instance) that a transport's report about may concern,
 * or NULL: none, or this instance stood still (not ticked since) — the connections it finds
 * broken now are its own pause's, as the silence is (the tick gives every watched member
 * down_after_ms from now to be heard). */
static gm *reported(tr_gossip *g, uint64_t now, const char *name)
{
    if (g == NULL || name == NULL || g->leaving)
        return NULL;
    if (now > g->last_tick && now - g->last_tick > g->down_ms / 2)
        return NULL;
    uint64_t key = tr__gossip_key(name);
    gm *m = rec(g, key);
    if (m == NULL || key == g->self_key || strcmp(m->id->name, name) != 0 || !in_ring(m))
        return NULL;
    return m;
}

void tr__gossip_unreachable(tr_gossip *g, uint64_t now, const char *name)
{
    gm *m = reported(g, now, name);
    if (m == NULL)
        return;
    watch *w = watched(g, m->key);
    if (w != NULL) {
        note(g, "watcher: %s unreachable (its connection broke or a dial failed)", name);
        uint64_t t = now > g->suspect_after_ms ? now - g->suspect_after_ms : 0;
        if (w->last_ms > t)
            w->last_ms = t;
        check_watched(g, now);
        if (g->ring_dirty)
            ring_compute(g, now);
    } else if (m->state == TR_GOSSIP_ALIVE) {
        set_state(g, m, TR_GOSSIP_SUSPECT, now); /* its watchers settle it */
    }
}

void tr__gossip_refused(tr_gossip *g, uint64_t now, const char *name)
{
    gm *m = reported(g, now, name);
    if (m == NULL)
        return;
    if (watched(g, m->key) == NULL) {
        tr__gossip_unreachable(g, now, name); /* not ours to settle: suspect, as for a break */
        return;
    }
    /* nothing listens where it did: that incarnation is gone (a frozen process still has its
     * listening socket, and the kernel completes the dial; a partition times out; a restart
     * comes back at a higher incarnation) */
    note(g, "watcher: %s declared down: its address refuses connections", name);
    g->st.declared_down++;
    set_state(g, m, TR_GOSSIP_DOWN, now);
    if (g->ring_dirty)
        ring_compute(g, now);
}

void tr__gossip_leave(tr_gossip *g, uint64_t now)
{
    if (g == NULL || g->leaving)
        return;
    gm *me = self(g);
    g->digest ^= dig(me);
    me->state = TR_GOSSIP_LEFT;
    me->since = (uint32_t)(now >> 10);
    enqueue(g, g->self_key);
    gm *ws[TR_GOSSIP_MONITORS_MAX];
    size_t k = watchers(g, ws, TR_GOSSIP_MONITORS_MAX);
    for (size_t i = 0; i < k; i++)
        send_to(g, M_GOSSIP, ws[i], true);
    for (unsigned i = 0; i < g->nw; i++) {
        gm *m = rec(g, g->w[i].key);
        if (m != NULL)
            send_to(g, M_GOSSIP, m, true);
    }
    g->leaving = true;
    g->nw = 0;
    g->ring_gen++;
    gossip_round(g);
}

int tr__gossip_load(tr_gossip *g, uint64_t now, const tr_gossip_member *ms, size_t n)
{
    if (g == NULL || (ms == NULL && n > 0))
        return TR_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ms[i].name == NULL || ms[i].name[0] == '\0' || strlen(ms[i].name) > TR_GOSSIP_NAME_MAX ||
            ms[i].addr == NULL || strlen(ms[i].addr) > TR_GOSSIP_ADDR_MAX ||
            (unsigned)ms[i].state > TR_GOSSIP_LEFT)
            return TR_EINVAL;
    int rc = apply_bulk(g, now, ms, n, true);
    if (g->ring_dirty)
        ring_compute(g, now);
    return rc;
}

/* ---- queries -------------------------------------------------------------------------------- */

void tr__gossip_join(tr_gossip *g, const char *addr)
{
    if (g == NULL || addr == NULL || addr[0] == '\0' || g->leaving)
        return;
    msgpack_packer pk;
    msg_begin(g, &pk, M_JOIN, NULL);
    msgpack_pack_uint32(&pk, 0);
    msg_send(g, "", addr);
}

bool tr__gossip_joined(const tr_gossip *g)
{
    return g->joined;
}

uint64_t tr__gossip_incarnation(const tr_gossip *g)
{
    return self((tr_gossip *)g)->inc;
}

size_t tr__gossip_count(const tr_gossip *g, size_t counts[4])
{
    if (counts != NULL) {
        memset(counts, 0, 4 * sizeof *counts);
        for (size_t i = 0; i < g->n; i++)
            counts[g->m[i].state]++;
    }
    return g->n;
}

int tr__gossip_find(const tr_gossip *g, const char *name, tr_gossip_member *out)
{
    gm *m = rec((tr_gossip *)g, tr__gossip_key(name));
    if (m == NULL || strcmp(m->id->name, name) != 0)
        return TR_ENOPROC;
    if (out != NULL)
        view(m, out);
    return TR_OK;
}

uint64_t tr__gossip_ring_gen(const tr_gossip *g)
{
    return g->ring_gen;
}

size_t tr__gossip_watched(const tr_gossip *g, tr_gossip_member *out, size_t cap)
{
    size_t k = 0;
    for (unsigned i = 0; i < g->nw; i++) {
        gm *m = rec((tr_gossip *)g, g->w[i].key);
        if (m != NULL && k < cap)
            view(m, &out[k]);
        k += m != NULL;
    }
    return k;
}

/* Copies the views of the k members in ms (at most cap); returns k. */
static size_t views(gm *const *ms, size_t k, tr_gossip_member *out, size_t cap)
{
    for (size_t i = 0; i < k && i < cap; i++)
        view(ms[i], &out[i]);
    return k;
}

size_t tr__gossip_partners(const tr_gossip *g, tr_gossip_member *out, size_t cap)
{
    gm *ps[TR_GOSSIP_PARTNERS_MAX];
    return views(ps, partners((tr_gossip *)g, ps, TR_GOSSIP_PARTNERS_MAX), out, cap);
}

size_t tr__gossip_watchers(const tr_gossip *g, tr_gossip_member *out, size_t cap)
{
    gm *ws[TR_GOSSIP_MONITORS_MAX];
    return views(ws, watchers((tr_gossip *)g, ws, TR_GOSSIP_MONITORS_MAX), out, cap);
}

int tr__gossip_member_at(const tr_gossip *g, size_t i, tr_gossip_member *out)
{
    if (i >= g->n)
        return TR_ENOPROC;
    view(&g->m[i], out);
    return TR_OK;
}

size_t tr__gossip_queued(const tr_gossip *g)
{
    return g->nq;
}

void tr__gossip_stats_get(const tr_gossip *g, tr_gossip_stats *out)
{
    *out = g->st;
}
