/*
 * link.c — links, monitors and exit signals, and the per-actor "ext" that holds them.
 *
 * Each actor keeps its own half of every relation, in memory only its runner touches: its link
 * set, the monitors it holds (ref -> target) and the monitors on it (ref -> watcher). The two
 * halves are kept in step by runtime signals — ordinary mailbox messages with TR_MF_SIGNAL —
 * so no lock is shared between actors, signals keep their order with the sender's messages
 * (as OTP guarantees between a pair of processes), and a relation with an actor of another node
 * is only a matter of carrying the same signals over the wire.
 *
 * The link set is a small unordered array for the usual few links and an open-addressing hash
 * set keyed by pid above TR_LINKS_ARRAY_MAX (see "the link set" below), so linking, unlinking
 * and an exit signal's lookup stay O(1) for an actor with a million links (a supervisor of a
 * shard's keys); the set has no order, and nothing depends on one.
 *
 * Races are settled by the signals themselves: a link or monitor request that reaches an actor
 * already gone (dead letter) or still queued when it ends is answered for it (reason noproc,
 * or its exit reason), and an exit signal or DOWN for a link or monitor removed meanwhile is
 * ignored by its receiver (tr_unlink and tr_demonitor "flush").
 */
#include "idmap.h"
#include "limiter.h"

#include <stdlib.h>
#include <string.h>

#define TR_REASON_TEXT_MAX 1024u

tr_actor_ext *tr__ext_get(tr_actor *a)
{
    if (a->ext == NULL)
        a->ext = calloc(1, sizeof *a->ext);
    return a->ext;
}

static void idmap_release(tr_idmap **mp)
{
    if (*mp != NULL) {
        tr__idmap_free(*mp);
        free(*mp);
        *mp = NULL;
    }
}

void tr__ext_free(tr_actor *a)
{
    tr_actor_ext *x = a->ext;
    if (x == NULL)
        return;
    if (x->lim != NULL)
        tr__wake_cancel(a->sys, a); /* only limited actors ever enter the wake-up wheel */
    for (tr_msg *m = x->stash, *next; m != NULL; m = next) {
        next = (tr_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
        tr__count_popped(a);
        atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
        tr__dead_letter(a->sys, m->to, m);
    }
    free(x->lim);
    free(x->links);
    idmap_release(&x->monitors);
    idmap_release(&x->watchers);
    free(x);
    a->ext = NULL;
}

/* ---- reasons as payloads ------------------------------------------------------------------- */

tr_msg *tr__reason_msg(uint32_t type, uint32_t flags, const tr_reason *r)
{
    size_t tl = r->text != NULL ? strnlen(r->text, TR_REASON_TEXT_MAX - 1) : 0;
    tr_msg *m = tr_msg_new(type, 24 + tl);
    if (m == NULL)
        return NULL;
    msgpack_packer *pk = tr_msg_packer(m);
    int bad = msgpack_pack_uint32(pk, (uint32_t)r->kind);
    bad |= msgpack_pack_int32(pk, r->code);
    if (r->text != NULL) {
        /* the text is stored with its NUL, so the decoded reason can point into the message */
        bad |= msgpack_pack_str(pk, tl + 1);
        bad |= msgpack_pack_str_body(pk, r->text, tl);
        bad |= msgpack_pack_str_body(pk, "", 1);
    } else {
        bad |= msgpack_pack_nil(pk);
    }
    if (bad) {
        tr_msg_free(m);
        return NULL;
    }
    m->flags = flags;
    return m;
}

static int reason_decode(const tr_msg *m, tr_reason *out)
{
    tr_reader r;
    tr_reader_init(&r, m);
    uint64_t kind = 0;
    int64_t code = 0;
    const msgpack_object *o;
    int rc = tr_read_u64(&r, &kind);
    if (rc == TR_OK)
        rc = tr_read_i64(&r, &code);
    if (rc == TR_OK)
        rc = tr_read_object(&r, &o);
    if (rc == TR_OK && (kind > TR_REASON_NOCONNECTION || code < INT32_MIN || code > INT32_MAX))
        rc = TR_EBADMSG;
    if (rc == TR_OK) {
        out->kind = (tr_reason_kind)kind;
        out->code = (int)code;
        out->text = NULL;
        if (o->type == MSGPACK_OBJECT_STR && o->via.str.size > 0 &&
            o->via.str.ptr[o->via.str.size - 1] == '\0')
            out->text = o->via.str.ptr; /* points into m's payload */
        else if (o->type != MSGPACK_OBJECT_NIL)
            rc = TR_EBADMSG;
    }
    tr_reader_done(&r);
    return rc;
}

int tr_msg_reason(const tr_msg *m, tr_reason *out)
{
    if (m == NULL || out == NULL || (m->type != TR_MSG_EXIT && m->type != TR_MSG_DOWN))
        return TR_EINVAL;
    return reason_decode(m, out);
}

/* ---- signals ------------------------------------------------------------------------------- */

int tr__signal(tr_system *sys, tr_worker *w, tr_pid from, tr_pid to, uint32_t sig, uint64_t corr,
               const tr_reason *reason)
{
    tr_msg *m = reason != NULL ? tr__reason_msg(sig, TR_MF_SIGNAL, reason) : tr_msg_new(sig, 0);
    if (m == NULL)
        return TR_ENOMEM;
    m->flags = TR_MF_SIGNAL;
    m->sender = from;
    /* an exit signal carries its kind in corr, so a kill is recognised without decoding */
    m->corr = (sig == TR_SIG_EXIT || sig == TR_SIG_EXIT_LINK) && reason != NULL
                  ? (uint64_t)reason->kind
                  : corr;
    return tr__deliver(sys, w, to, m);
}

static int send_down(tr_system *sys, tr_worker *w, tr_pid from, tr_pid to, uint64_t ref,
                     const tr_reason *reason)
{
    tr_msg *m = tr__reason_msg(TR_MSG_DOWN, TR_MF_SYSTEM, reason);
    if (m == NULL)
        return TR_ENOMEM;
    m->sender = from;
    m->corr = ref;
    return tr__deliver(sys, w, to, m);
}

void tr__signal_bounce(tr_system *sys, tr_msg *m, const tr_reason *reason)
{
    static const tr_reason noproc = {.kind = TR_REASON_NOPROC};
    if (reason == NULL)
        reason = &noproc;
    tr_worker *w = tr__current_worker(sys);
    if (m->sender != TR_PID_NONE) {
        if (m->type == TR_SIG_LINK)
            tr__signal(sys, w, m->to, m->sender, TR_SIG_EXIT_LINK, 0, reason);
        else if (m->type == TR_SIG_MONITOR)
            send_down(sys, w, m->to, m->sender, m->corr, reason);
    }
    tr_msg_free(m);
}

/* ---- the link set --------------------------------------------------------------------------
 * x->links holds the pids this actor is linked to (never 0, each once), in one of two forms told
 * apart by caplinks:
 *   caplinks <= TR_LINKS_ARRAY_MAX  an unordered array: links[0, nlinks), swap-removal. Most
 *                                   actors have 0-4 links; a scan of a few words is the fastest.
 *   caplinks >  TR_LINKS_ARRAY_MAX  an open-addressing set of caplinks slots (a power of two):
 *                                   0 = empty, home slot tr__id_slot(pid), linear probing,
 *                                   backward-shift deletion (no tombstones), load <= 1/2.
 * The set becomes a table when a link is added to a full array of TR_LINKS_ARRAY_MAX, and an
 * array again when a removal leaves TR_LINKS_ARRAY_MAX / 2 (the gap keeps an actor hovering
 * around the threshold from converting on every link); a table halves (at least) when at most
 * 1/16 of it is used. So add, remove and lookup are O(1) expected, and the memory stays within
 * a constant factor of the links held (a supervisor that had a million children and has a few
 * left holds a small array). Walks (exit signals, node down) visit every slot of [0,
 * links_span) and skip zeros. A conversion that cannot allocate leaves the set as it was: a
 * failed grow fails the add (TR_ENOMEM), a failed shrink keeps the larger, still valid form. */

#define TR_LINKS_TABLE_MIN 64u /* holds TR_LINKS_ARRAY_MAX + 1 at load <= 1/2 */

static bool links_table(const tr_actor_ext *x)
{
    return x->caplinks > TR_LINKS_ARRAY_MAX;
}

/* The slots a walk over the set visits (zeros among them are empty slots of a table). */
static uint32_t links_span(const tr_actor_ext *x)
{
    return links_table(x) ? x->caplinks : x->nlinks;
}

/* The slot holding pid, or the empty slot ending its probe run (tables only). */
static uint32_t table_find(const tr_actor_ext *x, tr_pid pid)
{
    uint32_t mask = x->caplinks - 1;
    uint32_t i = (uint32_t)tr__id_slot(pid, x->caplinks);
    while (x->links[i] != 0 && x->links[i] != pid)
        i = (i + 1) & mask;
    return i;
}

bool tr__link_has(const tr_actor_ext *x, tr_pid pid)
{
    if (x == NULL || x->nlinks == 0 || pid == TR_PID_NONE)
        return false;
    if (links_table(x))
        return x->links[table_find(x, pid)] == pid;
    for (uint32_t i = 0; i < x->nlinks; i++)
        if (x->links[i] == pid)
            return true;
    return false;
}

/* Moves the set into a fresh array (cap <= TR_LINKS_ARRAY_MAX) or table (a power of two that
 * holds nlinks at load <= 1/2). TR_ENOMEM leaves it untouched. */
static int links_rebuild(tr_actor_ext *x, uint32_t cap)
{
    tr_pid *p = calloc(cap, sizeof *p);
    if (p == NULL)
        return TR_ENOMEM;
    uint32_t span = links_span(x), n = 0;
    for (uint32_t i = 0; i < span; i++) {
        tr_pid pid = x->links[i];
        if (pid == 0)
            continue;
        if (cap <= TR_LINKS_ARRAY_MAX) {
            p[n++] = pid;
        } else {
            uint32_t j = (uint32_t)tr__id_slot(pid, cap);
            while (p[j] != 0)
                j = (j + 1) & (cap - 1);
            p[j] = pid;
        }
    }
    free(x->links);
    x->links = p;
    x->caplinks = cap;
    return TR_OK;
}

int tr__link_add(tr_actor *a, tr_pid pid)
{
    tr_actor_ext *x = tr__ext_get(a);
    if (x == NULL)
        return TR_ENOMEM;
    if (pid == TR_PID_NONE)
        return TR_EINVAL;
    if (tr__link_has(x, pid))
        return TR_OK;
    if (!links_table(x)) {
        if (x->nlinks < x->caplinks) {
            x->links[x->nlinks++] = pid;
            return TR_OK;
        }
        if (x->caplinks < TR_LINKS_ARRAY_MAX) {
            uint32_t cap = x->caplinks ? x->caplinks * 2 : 4;
            tr_pid *p = realloc(x->links, cap * sizeof *p);
            if (p == NULL)
                return TR_ENOMEM;
            x->links = p;
            x->caplinks = cap;
            x->links[x->nlinks++] = pid;
            return TR_OK;
        }
        if (links_rebuild(x, TR_LINKS_TABLE_MIN) != TR_OK) /* a full array: now a table */
            return TR_ENOMEM;
    } else if ((x->nlinks + 1u) * 2u > x->caplinks) {
        if (x->caplinks > UINT32_MAX / 2 || links_rebuild(x, x->caplinks * 2) != TR_OK)
            return TR_ENOMEM;
    }
    x->links[table_find(x, pid)] = pid;
    x->nlinks++;
    return TR_OK;
}

/* Removes slot i of a table, pulling later members of its probe run back into the hole. */
static void table_remove(tr_actor_ext *x, uint32_t i)
{
    uint32_t mask = x->caplinks - 1;
    for (uint32_t j = (i + 1) & mask; x->links[j] != 0; j = (j + 1) & mask) {
        uint32_t home = (uint32_t)tr__id_slot(x->links[j], x->caplinks);
        /* j may move into the hole at i unless its home is cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            x->links[i] = x->links[j];
            i = j;
        }
    }
    x->links[i] = 0;
}

void tr__link_del(tr_actor *a, tr_pid pid)
{
    tr_actor_ext *x = a->ext;
    if (x == NULL || x->nlinks == 0 || pid == TR_PID_NONE)
        return;
    if (!links_table(x)) {
        for (uint32_t i = 0; i < x->nlinks; i++)
            if (x->links[i] == pid) {
                x->links[i] = x->links[--x->nlinks];
                return;
            }
        return;
    }
    uint32_t i = table_find(x, pid);
    if (x->links[i] != pid)
        return;
    table_remove(x, i);
    x->nlinks--;
    if (x->nlinks <= TR_LINKS_ARRAY_MAX / 2) {
        (void)links_rebuild(x, TR_LINKS_ARRAY_MAX); /* back to an array (or stay, if no memory) */
    } else if (x->caplinks > TR_LINKS_TABLE_MIN && (uint64_t)x->nlinks * 16u <= x->caplinks) {
        uint32_t cap = TR_LINKS_TABLE_MIN;
        while (cap < (uint64_t)x->nlinks * 4u)
            cap *= 2;
        (void)links_rebuild(x, cap); /* at most 1/4 full again */
    }
}

/* Empties the set, giving its memory back. */
static void links_clear(tr_actor_ext *x)
{
    free(x->links);
    x->links = NULL;
    x->nlinks = x->caplinks = 0;
}

static tr_idmap *idmap_of(tr_idmap **mp)
{
    if (*mp == NULL && (*mp = malloc(sizeof **mp)) != NULL)
        tr__idmap_init(*mp);
    return *mp;
}

/* Records a relation between actor a (pid self) and `other` of another node, so a's node tells
 * it when that node goes down. TR_ENOPROC if that node is not up. */
static int note_remote(tr_system *sys, tr_actor *a, tr_pid self, tr_pid other)
{
    if (tr_pid_node(other) == sys->opts.node_id)
        return TR_OK;
    tr_actor_ext *x = tr__ext_get(a);
    if (x == NULL)
        return TR_ENOMEM;
    int rc = tr__remote_interest(sys, tr_pid_node(other), self);
    if (rc == TR_OK)
        x->remote = true;
    return rc;
}

int tr__link_note_remote(tr_system *sys, tr_actor *a, tr_pid self, tr_pid other)
{
    return note_remote(sys, a, self, other);
}

/* Node `node_id` went down: each link and monitor with one of its actors ends as if that actor
 * had ended with reason noconnection — the signals are queued to ourselves, and handled like
 * any exit signal or DOWN (trapped or not, flushed if removed meanwhile). Watchers there are
 * forgotten. */
static void node_down(tr_ctx *ctx, uint16_t node_id)
{
    static const tr_reason noconn = {.kind = TR_REASON_NOCONNECTION};
    tr__pending_node_down(ctx->sys, ctx->w, ctx->self, ctx->pid, node_id);
    tr_actor_ext *x = ctx->self->ext;
    if (x == NULL)
        return;
    /* the signals go to ourselves, queued: the set is not changed during the walk */
    for (uint32_t i = 0, span = links_span(x); i < span; i++)
        if (x->links[i] != 0 && tr_pid_node(x->links[i]) == node_id)
            tr__signal(ctx->sys, ctx->w, x->links[i], ctx->pid, TR_SIG_EXIT_LINK, 0, &noconn);
    if (x->monitors != NULL) {
        tr_idmap *map = x->monitors;
        for (size_t i = 0; i < map->cap; i++)
            if (map->keys[i] != 0 && tr_pid_node((tr_pid)map->vals[i]) == node_id)
                send_down(ctx->sys, ctx->w, (tr_pid)map->vals[i], ctx->pid, map->keys[i],
                          &noconn);
    }
    if (x->watchers != NULL) {
        tr_idmap *map = x->watchers;
        for (size_t i = 0; i < map->cap;) {
            if (map->keys[i] != 0 && tr_pid_node((tr_pid)map->vals[i]) == node_id &&
                tr__idmap_del(map, map->keys[i], NULL))
                continue; /* deletion shifts later keys back: look at i again */
            i++;
        }
    }
}

/* ---- the receiving side -------------------------------------------------------------------- */

/* Sets a's rate limit (its runner): TR_OK or TR_ENOMEM. */
static int apply_limit(tr_actor *a, uint64_t kind, uint64_t rate, uint64_t burst)
{
    tr_actor_ext *x = tr__ext_get(a);
    if (x == NULL)
        return TR_ENOMEM;
    if (kind == TR_LIMIT_NONE) {
        x->limited = false; /* held messages are delivered first, then the mailbox */
        return TR_OK;
    }
    uint64_t now = tr__now_ns();
    if (x->lim == NULL) {
        if ((x->lim = malloc(sizeof *x->lim)) == NULL)
            return TR_ENOMEM;
        tr_limiter_init(x->lim, (tr_limit_kind)kind, rate, burst, now);
    } else {
        tr_limiter_set(x->lim, (tr_limit_kind)kind, rate, burst, now);
    }
    x->limited = true;
    return TR_OK;
}

static void set_limit(tr_actor *a, tr_msg *m)
{
    tr_reader r;
    tr_reader_init(&r, m);
    uint64_t kind, rate, burst;
    bool ok = tr_read_u64(&r, &kind) == TR_OK && tr_read_u64(&r, &rate) == TR_OK &&
              tr_read_u64(&r, &burst) == TR_OK;
    tr_reader_done(&r);
    if (ok)
        (void)apply_limit(a, kind, rate, burst);
}

static void pack_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, k, n);
}

/* TR_SIG_LIMIT_INFO: the change asked for, if any ([kind or TR__LIMIT_KEEP, rate or 0, burst or
 * 0]; an empty payload changes nothing), then the answer to the requester (the introspection
 * service, ctl.c): a map of rc, the limit (kind, rate, burst, tokens saved now or the next
 * leaky pass), the mailbox's capacity and policy, and its waits. Run by a's runner, the only
 * thread that may read its limiter. */
static void limit_info(tr_ctx *ctx, tr_actor *a, const tr_msg *m)
{
    int rc = TR_OK;
    tr_reader r;
    tr_reader_init(&r, m);
    uint64_t kind, rate, burst;
    if (!tr_reader_at_end(&r)) {
        if (tr_read_u64(&r, &kind) != TR_OK || tr_read_u64(&r, &rate) != TR_OK ||
            tr_read_u64(&r, &burst) != TR_OK || (kind > TR_LIMIT_LEAKY && kind != TR__LIMIT_KEEP) ||
            rate > UINT32_MAX || burst > UINT32_MAX) {
            rc = TR_EINVAL;
        } else {
            const tr_actor_ext *x = a->ext;
            bool limited = x != NULL && x->limited && x->lim != NULL;
            if (kind == TR__LIMIT_KEEP)
                kind = limited ? (uint64_t)x->lim->kind : TR_LIMIT_TOKEN;
            if (rate == 0 && kind != TR_LIMIT_NONE)
                rate = limited ? x->lim->rate : 0;
            if (burst == 0)
                burst = limited && x->lim->kind == TR_LIMIT_TOKEN ? x->lim->burst : 1;
            if (kind != TR_LIMIT_NONE && rate == 0) {
                rc = TR_EINVAL; /* no limit yet, and no rate given */
            } else {
                if (kind == TR_LIMIT_LEAKY) {
                    /* as at spawn: the bucket's queue is the mailbox, excess dropped */
                    if (atomic_load_explicit(&a->capacity, memory_order_relaxed) == 0)
                        atomic_store_explicit(&a->capacity, (uint32_t)rate, memory_order_relaxed);
                    atomic_store_explicit(&a->overflow, TR_OVERFLOW_DROP_NEWEST,
                                          memory_order_relaxed);
                }
                rc = apply_limit(a, kind, rate, burst);
            }
        }
    }
    tr_reader_done(&r);
    if (!(m->flags & TR_MF_REQUEST) || m->sender == TR_PID_NONE)
        return;
    tr_msg *rep = tr_msg_new(0, 160);
    if (rep == NULL)
        return; /* its requester's timeout answers */
    msgpack_packer *pk = tr_msg_packer(rep);
    const tr_actor_ext *x = a->ext;
    const tr_limiter *l = x != NULL && x->limited ? x->lim : NULL;
    static const char *const kinds[] = {"none", "token", "leaky"};
    msgpack_pack_map(pk, l != NULL ? 10 : 7);
    pack_key(pk, "rc");
    msgpack_pack_int64(pk, rc);
    pack_key(pk, "kind");
    pack_key(pk, l != NULL && (unsigned)l->kind <= TR_LIMIT_LEAKY ? kinds[l->kind] : "none");
    pack_key(pk, "capacity");
    msgpack_pack_uint32(pk, atomic_load_explicit(&a->capacity, memory_order_relaxed));
    pack_key(pk, "overflow");
    static const char *const policies[] = {"drop_newest", "drop_oldest", "reject"};
    uint32_t ov = atomic_load_explicit(&a->overflow, memory_order_relaxed);
    pack_key(pk, ov <= TR_OVERFLOW_REJECT ? policies[ov] : "?");
    pack_key(pk, "waits");
    msgpack_pack_uint64(pk, x != NULL ? x->waits : 0);
    pack_key(pk, "wait_ms");
    msgpack_pack_uint64(pk, atomic_load_explicit(&a->token_wait_ns, memory_order_relaxed) /
                                1000000u);
    pack_key(pk, "parked");
    msgpack_pack_uint64(pk, x != NULL && x->park_ns != 0 ? 1 : 0);
    if (l != NULL) {
        uint64_t now = tr__now_ns();
        pack_key(pk, "rate");
        msgpack_pack_uint64(pk, l->rate);
        pack_key(pk, "burst");
        msgpack_pack_uint64(pk, l->burst);
        if (l->kind == TR_LIMIT_TOKEN) {
            tr_limiter t = *l; /* refilled to now on a copy: the tokens saved at this moment */
            tr_limiter_set(&t, t.kind, t.rate, t.burst, now);
            pack_key(pk, "tokens");
            msgpack_pack_double(pk, (double)t.units / 1e9);
        } else {
            unsigned __int128 at = (unsigned __int128)now * l->rate;
            uint64_t ns = l->next > at ? (uint64_t)((l->next - at) / l->rate) : 0;
            pack_key(pk, "next_pass_ms");
            msgpack_pack_double(pk, (double)ns / 1e6);
        }
    }
    rep->flags = TR_MF_REPLY;
    rep->corr = m->corr;
    rep->sender = ctx->pid;
    tr__deliver(ctx->sys, ctx->w, m->sender, rep);
}

tr_msg *tr__signal_handle(tr_ctx *ctx, tr_msg *m)
{
    tr_actor *a = ctx->self;
    tr_pid from = m->sender;
    switch (m->type) {
    case TR_SIG_STOP: {
        static const tr_reason shutdown = {.kind = TR_REASON_SHUTDOWN};
        tr__ctx_end(ctx, &shutdown);
        break;
    }
    case TR_SIG_NODEDOWN:
        node_down(ctx, (uint16_t)m->corr);
        break;
    case TR_SIG_LINK:
        if (note_remote(ctx->sys, a, ctx->pid, from) == TR_ENOPROC) {
            /* its node went down meanwhile */
            static const tr_reason noconn = {.kind = TR_REASON_NOCONNECTION};
            tr__signal(ctx->sys, ctx->w, ctx->pid, from, TR_SIG_EXIT_LINK, 0, &noconn);
        } else if (tr__link_add(a, from) != TR_OK) {
            /* cannot hold the link: the linker is told we are gone for it */
            static const tr_reason oom = {.kind = TR_REASON_ERROR, .code = TR_ENOMEM};
            tr__signal(ctx->sys, ctx->w, ctx->pid, from, TR_SIG_EXIT_LINK, 0, &oom);
        }
        break;
    case TR_SIG_UNLINK:
        tr__link_del(a, from);
        break;
    case TR_SIG_MONITOR: {
        tr_actor_ext *x = tr__ext_get(a);
        tr_idmap *map = x != NULL ? idmap_of(&x->watchers) : NULL;
        if (note_remote(ctx->sys, a, ctx->pid, from) == TR_ENOPROC)
            break; /* its node went down meanwhile: nobody to tell */
        if (map == NULL || tr__idmap_put(map, m->corr, from) != TR_OK) {
            static const tr_reason oom = {.kind = TR_REASON_ERROR, .code = TR_ENOMEM};
            send_down(ctx->sys, ctx->w, ctx->pid, from, m->corr, &oom);
        }
        break;
    }
    case TR_SIG_DEMONITOR:
        if (a->ext != NULL && a->ext->watchers != NULL)
            tr__idmap_del(a->ext->watchers, m->corr, NULL);
        break;
    case TR_SIG_LIMIT:
        set_limit(a, m);
        break;
    case TR_SIG_LIMIT_INFO:
        limit_info(ctx, a, m);
        break;
    case TR_SIG_EXIT:
    case TR_SIG_EXIT_LINK: {
        tr_reason r;
        if (reason_decode(m, &r) != TR_OK)
            break;
        if (m->type == TR_SIG_EXIT_LINK) {
            if (!tr__link_has(a->ext, from))
                break; /* unlinked meanwhile */
            tr__link_del(a, from);
        } else if (r.kind == TR_REASON_KILLED) {
            tr__ctx_end(ctx, &r); /* kill cannot be trapped */
            break;
        }
        if (a->ext != NULL && a->ext->trap_exits) {
            m->type = TR_MSG_EXIT; /* same payload: the reason */
            m->flags = TR_MF_SYSTEM;
            m->corr = 0;
            return m;
        }
        if (r.kind != TR_REASON_NORMAL)
            tr__ctx_end(ctx, &r); /* copies the text */
        break;
    }
    default:
        break;
    }
    tr_msg_free(m);
    return NULL;
}

bool tr__down_filter(tr_actor *a, tr_msg *m)
{
    tr_actor_ext *x = a->ext;
    if (x != NULL && x->monitors != NULL && tr__idmap_del(x->monitors, m->corr, NULL))
        return true;
    tr_msg_free(m); /* demonitored: flushed */
    return false;
}

void tr__links_notify(tr_actor *a, tr_worker *w, tr_pid self, const tr_reason *reason)
{
    tr_system *sys = a->sys;
    tr_actor_ext *x = a->ext;
    for (uint32_t i = 0, span = links_span(x); i < span; i++)
        if (x->links[i] != 0)
            tr__signal(sys, w, self, x->links[i], TR_SIG_EXIT_LINK, 0, reason);
    links_clear(x);
    if (x->watchers != NULL) {
        tr_idmap *map = x->watchers;
        for (size_t i = 0; i < map->cap; i++)
            if (map->keys[i] != 0)
                send_down(sys, w, self, map->vals[i], map->keys[i], reason);
    }
    if (x->remote)
        tr__remote_forget(sys, self);
    if (x->monitors != NULL) {
        /* our targets forget us, so a long-lived actor does not collect dead watchers */
        tr_idmap *map = x->monitors;
        for (size_t i = 0; i < map->cap; i++)
            if (map->keys[i] != 0)
                tr__signal(sys, w, self, map->vals[i], TR_SIG_DEMONITOR, map->keys[i], NULL);
    }
}

bool tr__kill_queued(tr_actor *a, tr_pid self)
{
    if (a->ext != NULL)
        for (tr_msg *m = a->ext->stash; m != NULL;
             m = (tr_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed))
            if (m->to == self && (m->flags & TR_MF_SIGNAL) && m->type == TR_SIG_EXIT &&
                m->corr == TR_REASON_KILLED)
                return true;
    for (tr_mpsc_node *n = a->mbox.head; n != NULL;
         n = atomic_load_explicit(&n->next, memory_order_acquire)) {
        if (n == &a->mbox.stub)
            continue;
        tr_msg *m = (tr_msg *)n;
        if (m->to == self && (m->flags & TR_MF_SIGNAL) && m->type == TR_SIG_EXIT &&
            m->corr == TR_REASON_KILLED)
            return true;
    }
    return false;
}

/* ---- public API ---------------------------------------------------------------------------- */

int tr_link(tr_ctx *ctx, tr_pid pid)
{
    if (ctx == NULL || pid == TR_PID_NONE)
        return TR_EINVAL;
    if (pid == ctx->pid)
        return TR_OK;
    bool remote = tr_pid_node(pid) != ctx->sys->opts.node_id;
    if (!remote && tr__actor_lookup(ctx->sys, pid) == NULL)
        return TR_ENOPROC;
    if (tr__link_has(ctx->self->ext, pid))
        return TR_OK;
    int rc = remote ? note_remote(ctx->sys, ctx->self, ctx->pid, pid) : TR_OK;
    if (rc != TR_OK)
        return rc; /* its node is not up */
    rc = tr__link_add(ctx->self, pid);
    if (rc != TR_OK)
        return rc;
    rc = tr__signal(ctx->sys, ctx->w, ctx->pid, pid, TR_SIG_LINK, 0, NULL);
    if (rc == TR_ENOPROC)
        rc = TR_OK; /* it ended since the lookup: the bounced request brings the exit signal */
    else if (rc != TR_OK)
        tr__link_del(ctx->self, pid);
    return rc;
}

int tr_unlink(tr_ctx *ctx, tr_pid pid)
{
    if (ctx == NULL || pid == TR_PID_NONE)
        return TR_EINVAL;
    if (!tr__link_has(ctx->self->ext, pid))
        return TR_OK;
    tr__link_del(ctx->self, pid);
    int rc = tr__signal(ctx->sys, ctx->w, ctx->pid, pid, TR_SIG_UNLINK, 0, NULL);
    return rc == TR_ENOPROC ? TR_OK : rc;
}

int tr_monitor(tr_ctx *ctx, tr_pid pid, uint64_t *ref_out)
{
    if (ctx == NULL || pid == TR_PID_NONE)
        return TR_EINVAL;
    tr_actor_ext *x = tr__ext_get(ctx->self);
    tr_idmap *map = x != NULL ? idmap_of(&x->monitors) : NULL;
    if (map == NULL)
        return TR_ENOMEM;
    /* a target on a node that is not up: DOWN noconnection comes from the bounced request */
    (void)note_remote(ctx->sys, ctx->self, ctx->pid, pid);
    uint64_t ref = atomic_fetch_add_explicit(&ctx->sys->next_ref, 1, memory_order_relaxed) + 1;
    if (tr__idmap_put(map, ref, pid) != TR_OK)
        return TR_ENOMEM;
    if (ref_out != NULL)
        *ref_out = ref;
    /* a dead target bounces the request, which delivers DOWN with reason noproc */
    int rc = tr__signal(ctx->sys, ctx->w, ctx->pid, pid, TR_SIG_MONITOR, ref, NULL);
    if (rc == TR_ENOMEM) {
        tr__idmap_del(map, ref, NULL);
        return rc;
    }
    return TR_OK;
}

int tr_demonitor(tr_ctx *ctx, uint64_t ref)
{
    if (ctx == NULL || ref == 0)
        return TR_EINVAL;
    tr_actor_ext *x = ctx->self->ext;
    uint64_t target;
    if (x == NULL || x->monitors == NULL || !tr__idmap_del(x->monitors, ref, &target))
        return TR_OK; /* unknown or already fired */
    int rc = tr__signal(ctx->sys, ctx->w, ctx->pid, (tr_pid)target, TR_SIG_DEMONITOR, ref, NULL);
    return rc == TR_ENOPROC ? TR_OK : rc;
}

void tr_trap_exits(tr_ctx *ctx, bool on)
{
    if (ctx == NULL)
        return;
    tr_actor_ext *x = tr__ext_get(ctx->self);
    if (x != NULL)
        x->trap_exits = on;
}

static int exit_check(const tr_reason *reason)
{
    if (reason == NULL || reason->kind > TR_REASON_NOPROC)
        return TR_EINVAL;
    return TR_OK;
}

int tr_exit(tr_ctx *ctx, tr_pid pid, const tr_reason *reason)
{
    if (ctx == NULL || exit_check(reason) != TR_OK)
        return TR_EINVAL;
    return tr__signal(ctx->sys, ctx->w, ctx->pid, pid, TR_SIG_EXIT, 0, reason);
}

int tr_system_exit(tr_system *sys, tr_pid pid, const tr_reason *reason)
{
    if (sys == NULL || exit_check(reason) != TR_OK)
        return TR_EINVAL;
    tr_worker *w = tr__current_worker(sys);
    if (w == NULL && tr__ext_enter(sys) != TR_OK)
        return TR_ESTOPPED;
    int rc = tr__signal(sys, w, TR_PID_NONE, pid, TR_SIG_EXIT, 0, reason);
    if (w == NULL)
        tr__ext_leave(sys);
    return rc;
}
