/*
 * ctl.c — the introspection service: a system actor ("troupe.ctl") that answers TR_MSG_CTL
 * requests about its system, for troupectl and any other client (docs/operating.md has the
 * commands and their answers). Requests and answers are msgpack maps; every answer carries "rc"
 * and, when it is not TR_OK, "error" (one line).
 *
 *   ping         {rc}
 *   stats        the system's counters, and the node's (hooks)
 *   nodes        this node and its members (hooks), each member up pinged through its own
 *                service for a round-trip time
 *   top          the live actors by mailbox depth, message rate (two walks `window_ms` apart),
 *                messages received or restarts: the first n (at most 100)
 *   tree         every supervisor (at most 200) with its first 50 children, each asked with a
 *                request it answers at once (supervisor.c, SUP_CHILDREN)
 *   limits       the rate limits of an actor, a name or every actor of a behaviour (at most 64):
 *                each actor's runner answers for its own limiter (link.c, TR_SIG_LIMIT_INFO)
 *   limits_set   the same, changing rate / burst / kind on the way
 *   kill         an exit signal (killed, or an error with a text) to one actor: a drill
 *
 * It never blocks: what needs other actors' answers (nodes, tree, limits) is an operation that
 * collects them (each a request with a timeout, so each gets exactly one answer or a timeout)
 * and answers its client once the last is in. At most CTL_MAX_OPS operations run at once (more
 * are refused with TR_EFULL), each asks at most CTL_MAX_SUBS actors, and every answer is cut to
 * the node's max_reply bytes ("truncated": true): nothing a client asks makes the node grow
 * beyond that, but a top by rate, whose first walk notes each live actor's count.
 *
 * Walking the actors reads the headers of the actor table (actor.c) as other threads spawn and
 * end actors: a header's pid is read first (acquire), its behaviour (an atomic store in spawn),
 * then its counters through tr_actor_stats_get, which checks the pid again; a header that
 * changed hands meanwhile is skipped.
 */
#include "ctl.h"
#include "idmap.h"
#include "registry.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_MAX_OPS 8u
#define CTL_MAX_SUBS 256u
#define CTL_TOP_MAX 100u
#define CTL_TOP_DEFAULT 20u
#define CTL_SUPS_MAX 200u
#define CTL_CHILDREN_MAX 50u
#define CTL_LIMITS_MAX 64u
#define CTL_REPLY_MAX (256u * 1024u)
#define CTL_SUB_TIMEOUT_MS 2000u
#define CTL_PING_TIMEOUT_MS 1000u
#define CTL_WINDOW_DEFAULT 500u
#define CTL_WINDOW_MAX 5000u
#define CTL_TICK (TR_MSG_SYSTEM + 0x300) /* timer: a top's window is over; corr = its op's id */
#define CTL_TARGET_MAX 256u

enum { OP_FREE = 0, OP_NODES, OP_TOP, OP_TREE, OP_LIMITS };
enum { SORT_DEPTH, SORT_RATE, SORT_RECEIVED, SORT_RESTARTS };

typedef struct sub {
    uint64_t corr;      /* the request's; 0 once answered */
    tr_pid pid;         /* asked */
    uint64_t sent_ns;
    uint64_t rtt_ns;    /* nodes: the round trip (0: no answer) */
    tr_msg *reply;      /* the answer (NULL: none came) */
} sub;

typedef struct row {
    tr_pid pid;
    const tr_behaviour *b;
    tr_actor_stats st;
    uint64_t rate;      /* messages received per second over the window */
    uint64_t key;
} row;

typedef struct op {
    int kind;
    uint64_t id;
    tr_from from;
    sub *subs;
    size_t nsub, waiting;
    size_t total;       /* what matched before the caps (supervisors, actors) */
    bool set;           /* limits_set */
    /* nodes */
    tr__ctl_peer *peers;
    size_t npeers;
    /* top */
    int sort;
    unsigned n, window_ms;
    tr_idmap first;     /* pid -> messages received at the first walk */
    uint64_t first_ns;
    char target[CTL_TARGET_MAX + 1];
} op;

typedef struct ctl {
    tr__ctl_hooks hooks;
    op ops[CTL_MAX_OPS];
    uint64_t next_id;
} ctl;

/* ---- msgpack helpers ----------------------------------------------------------------------- */

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    pk_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void pk_kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
    pk_str(pk, k);
    msgpack_pack_int64(pk, v);
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pk_str(pk, k);
    pk_str(pk, v);
}

static void pk_kv_bool(msgpack_packer *pk, const char *k, bool v)
{
    pk_str(pk, k);
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* The value of `key` in map m, or NULL. */
static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
    if (m == NULL || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

/* The string at `key` into buf (NUL-terminated); false if absent, not a string or too long. */
static bool map_str(const msgpack_object *m, const char *key, char *buf, size_t cap)
{
    const msgpack_object *v = map_get(m, key);
    if (v == NULL || v->type != MSGPACK_OBJECT_STR || v->via.str.size >= cap ||
        memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL)
        return false;
    memcpy(buf, v->via.str.ptr, v->via.str.size);
    buf[v->via.str.size] = '\0';
    return true;
}

/* The unsigned integer at `key`: 1 found, 0 absent, -1 not an unsigned integer. */
static int map_u64(const msgpack_object *m, const char *key, uint64_t *out)
{
    const msgpack_object *v = map_get(m, key);
    if (v == NULL)
        return 0;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = v->via.u64;
    return 1;
}

/* ---- answers ------------------------------------------------------------------------------- */

/* Answers `from` with {rc, error}. */
__attribute__((format(printf, 4, 5))) static void answer_error(tr_ctx *ctx, tr_from from, int rc,
                                                               const char *fmt, ...)
{
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    tr_msg *r = tr_msg_new(0, strlen(line) + 32);
    if (r == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, 2);
    pk_kv_i64(pk, "rc", rc);
    pk_kv_str(pk, "error", line);
    tr_reply_from(ctx, from, r);
}

static size_t max_reply(const ctl *s)
{
    size_t m = s->hooks.max_reply;
    return m == 0 || m > CTL_REPLY_MAX ? CTL_REPLY_MAX : m;
}

/* A local or cluster-wide name pid holds, into buf; "" if none. */
static void name_of(ctl *s, tr_system *sys, tr_pid pid, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (!tr__registry_name_of(sys, pid, buf, cap) && s->hooks.name_of != NULL &&
        !s->hooks.name_of(s->hooks.arg, pid, buf, cap))
        buf[0] = '\0';
}

/* ---- walking the actors -------------------------------------------------------------------- */

typedef void (*visit_fn)(void *arg, tr_pid pid, const tr_behaviour *b, const tr_actor_stats *st);

/* Calls fn for each live actor (ports and waiters left out); returns how many. */
static size_t walk(tr_system *sys, visit_fn fn, void *arg)
{
    size_t k = 0;
    for (unsigned c = 0; c < TR_MAX_CHUNKS; c++) {
        tr_actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
        if (chunk == NULL)
            break; /* chunks are added in order */
        for (unsigned i = 0; i < TR_CHUNK_SIZE; i++) {
            tr_actor *a = &chunk[i];
            tr_pid pid = atomic_load_explicit(&a->pid, memory_order_acquire);
            if (pid == TR_PID_NONE)
                continue;
            const tr_behaviour *b = __atomic_load_n(&a->beh, __ATOMIC_RELAXED);
            tr_actor_stats st;
            if (b == NULL || tr_actor_stats_get(sys, pid, &st) != TR_OK)
                continue; /* a port or a waiter, or it ended meanwhile */
            fn(arg, pid, b, &st);
            k++;
        }
    }
    return k;
}

/* ---- operations ---------------------------------------------------------------------------- */

static op *op_new(ctl *s, int kind, tr_from from)
{
    for (size_t i = 0; i < CTL_MAX_OPS; i++)
        if (s->ops[i].kind == OP_FREE) {
            op *o = &s->ops[i];
            memset(o, 0, sizeof *o);
            o->kind = kind;
            o->id = ++s->next_id;
            o->from = from;
            tr__idmap_init(&o->first);
            return o;
        }
    return NULL;
}

static void op_free(op *o)
{
    for (size_t i = 0; i < o->nsub; i++)
        tr_msg_free(o->subs[i].reply);
    free(o->subs);
    free(o->peers);
    tr__idmap_free(&o->first);
    memset(o, 0, sizeof *o);
}

/* Room for n requests. */
static bool op_subs(op *o, size_t n)
{
    o->subs = n > 0 ? calloc(n, sizeof *o->subs) : NULL;
    return n == 0 || o->subs != NULL;
}

/* Sends request m (taken) to pid as o's next sub-request. */
static void op_ask(tr_ctx *ctx, op *o, tr_pid pid, tr_msg *m, unsigned timeout_ms)
{
    sub *x = &o->subs[o->nsub];
    uint64_t corr = 0;
    if (m == NULL)
        return;
    x->pid = pid;
    x->sent_ns = tr__now_ns();
    if (tr__request(ctx, pid, m, timeout_ms, &corr) != TR_OK)
        return; /* gone already: no answer will come */
    x->corr = corr;
    o->nsub++;
    o->waiting++;
}

static void finish(tr_ctx *ctx, ctl *s, op *o);

/* ---- ping, stats --------------------------------------------------------------------------- */

static void cmd_ping(tr_ctx *ctx, tr_from from)
{
    tr_msg *r = tr_msg_new(0, 8);
    if (r == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, 1);
    pk_kv_i64(pk, "rc", TR_OK);
    tr_reply_from(ctx, from, r);
}

static void cmd_stats(tr_ctx *ctx, ctl *s, tr_from from)
{
    tr_system *sys = tr_ctx_system(ctx);
    tr_system_stats st;
    tr_system_stats_get(sys, &st);
    tr__ctl_counter cs[TR__CTL_MAX_COUNTERS];
    size_t nc = s->hooks.counters != NULL
                    ? s->hooks.counters(s->hooks.arg, cs, TR__CTL_MAX_COUNTERS)
                    : 0;
    if (nc > TR__CTL_MAX_COUNTERS)
        nc = TR__CTL_MAX_COUNTERS;
    tr_msg *r = tr_msg_new(0, 512);
    if (r == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, s->hooks.counters != NULL ? 3 : 2);
    pk_kv_i64(pk, "rc", TR_OK);
    pk_str(pk, "system");
    msgpack_pack_map(pk, 8);
    pk_kv_u64(pk, "workers", sys->nworkers);
    pk_kv_u64(pk, "alive", st.alive);
    pk_kv_u64(pk, "spawned", st.spawned);
    pk_kv_u64(pk, "ended", st.ended);
    pk_kv_u64(pk, "dead_letters", st.dead_letters);
    pk_kv_u64(pk, "late_replies", st.late_replies);
    pk_kv_u64(pk, "steals", st.steals);
    pk_kv_u64(pk, "parks", st.parks);
    if (s->hooks.counters != NULL) {
        pk_str(pk, "node");
        msgpack_pack_map(pk, nc);
        for (size_t i = 0; i < nc; i++)
            pk_kv_u64(pk, cs[i].name, cs[i].value);
    }
    tr_reply_from(ctx, from, r);
}

/* ---- nodes --------------------------------------------------------------------------------- */

static const char *status_name(int st)
{
    static const char *const names[] = {"down", "up", "suspect", "left"};
    return st >= 0 && st < 4 ? names[st] : "?";
}

static void cmd_nodes(tr_ctx *ctx, ctl *s, tr_from from)
{
    if (s->hooks.self == NULL || s->hooks.peers == NULL) {
        answer_error(ctx, from, TR_ESTATE, "this system is not a node");
        return;
    }
    op *o = op_new(s, OP_NODES, from);
    if (o == NULL) {
        answer_error(ctx, from, TR_EFULL, "busy: %u requests under way", CTL_MAX_OPS);
        return;
    }
    o->peers = calloc(TR__CTL_MAX_PEERS + 1, sizeof *o->peers);
    if (o->peers == NULL || !op_subs(o, TR__CTL_MAX_PEERS)) {
        op_free(o);
        answer_error(ctx, from, TR_ENOMEM, "out of memory");
        return;
    }
    s->hooks.self(s->hooks.arg, &o->peers[0]);
    size_t k = s->hooks.peers(s->hooks.arg, o->peers + 1, TR__CTL_MAX_PEERS);
    o->total = k;
    o->npeers = 1 + (k < TR__CTL_MAX_PEERS ? k : TR__CTL_MAX_PEERS);
    for (size_t i = 1; i < o->npeers; i++) {
        const tr__ctl_peer *p = &o->peers[i];
        if (p->status != 1 && p->status != 2) /* up or suspect: ask its service */
            continue;
        tr_msg *m = tr_msg_new(TR__MSG_CTL, 16);
        if (m != NULL) {
            msgpack_packer *pk = tr_msg_packer(m);
            msgpack_pack_map(pk, 1);
            pk_kv_str(pk, "cmd", "ping");
        }
        op_ask(ctx, o, (tr_pid)p->node_id << 48, m, CTL_PING_TIMEOUT_MS);
    }
    if (o->waiting == 0)
        finish(ctx, s, o);
}

static void pack_peer(msgpack_packer *pk, const tr__ctl_peer *p, int64_t rtt_us, bool self)
{
    msgpack_pack_map(pk, 8);
    pk_kv_str(pk, "name", p->name);
    pk_kv_str(pk, "address", p->addr);
    pk_kv_u64(pk, "id", p->node_id);
    pk_kv_u64(pk, "incarnation", p->incarnation);
    pk_kv_str(pk, "state", status_name(p->status));
    pk_kv_i64(pk, "heard_ms", p->heard_ms);
    pk_kv_i64(pk, "rtt_us", rtt_us);
    pk_kv_bool(pk, "self", self);
}

static void finish_nodes(tr_ctx *ctx, op *o)
{
    tr_msg *r = tr_msg_new(0, 256 * o->npeers);
    if (r == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, 3);
    pk_kv_i64(pk, "rc", TR_OK);
    pk_kv_u64(pk, "members", o->total + 1);
    pk_str(pk, "nodes");
    msgpack_pack_array(pk, o->npeers);
    pack_peer(pk, &o->peers[0], 0, true);
    for (size_t i = 1; i < o->npeers; i++) {
        int64_t rtt = -1;
        for (size_t j = 0; j < o->nsub; j++)
            if (o->subs[j].pid == (tr_pid)o->peers[i].node_id << 48 && o->subs[j].rtt_ns > 0)
                rtt = (int64_t)(o->subs[j].rtt_ns / 1000u);
        pack_peer(pk, &o->peers[i], rtt, false);
    }
    tr_reply_from(ctx, o->from, r);
}

/* ---- top ----------------------------------------------------------------------------------- */

typedef struct top_walk {
    op *o;
    row *rows;
    size_t nrows;
    uint64_t elapsed_ns;
} top_walk;

static void note_first(void *arg, tr_pid pid, const tr_behaviour *b, const tr_actor_stats *st)
{
    (void)b;
    op *o = arg;
    (void)tr__idmap_put(&o->first, pid, st->received + 1); /* + 1: 0 is "absent" */
}

static void note_row(void *arg, tr_pid pid, const tr_behaviour *b, const tr_actor_stats *st)
{
    top_walk *t = arg;
    op *o = t->o;
    row x = {.pid = pid, .b = b, .st = *st};
    if (o->window_ms > 0 && t->elapsed_ns > 0) {
        uint64_t before = 0;
        if (tr__idmap_get(&o->first, pid, &before))
            before--;
        uint64_t d = st->received > before ? st->received - before : 0;
        x.rate = (uint64_t)((double)d * 1e9 / (double)t->elapsed_ns + 0.5);
    }
    x.key = o->sort == SORT_RATE       ? x.rate
            : o->sort == SORT_RECEIVED ? st->received
            : o->sort == SORT_RESTARTS ? st->restarts
                                       : st->depth;
    /* the first n by key, kept sorted (n <= 100): an insertion */
    if (t->nrows == o->n && (o->n == 0 || t->rows[t->nrows - 1].key >= x.key))
        return;
    size_t i = t->nrows < o->n ? t->nrows++ : t->nrows - 1;
    while (i > 0 && t->rows[i - 1].key < x.key) {
        t->rows[i] = t->rows[i - 1];
        i--;
    }
    t->rows[i] = x;
}

static void top_answer(tr_ctx *ctx, ctl *s, op *o)
{
    tr_system *sys = tr_ctx_system(ctx);
    top_walk t = {.o = o};
    t.rows = calloc(o->n > 0 ? o->n : 1, sizeof *t.rows);
    if (t.rows == NULL) {
        answer_error(ctx, o->from, TR_ENOMEM, "out of memory");
        return;
    }
    t.elapsed_ns = o->window_ms > 0 ? tr__now_ns() - o->first_ns : 0;
    size_t alive = walk(sys, note_row, &t);
    static const char *const sorts[] = {"depth", "rate", "received", "restarts"};
    tr_msg *r = tr_msg_new(0, 160 * t.nrows + 64);
    if (r == NULL) {
        free(t.rows);
        return;
    }
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, 5);
    pk_kv_i64(pk, "rc", TR_OK);
    pk_kv_u64(pk, "actors", alive);
    pk_kv_str(pk, "sort", sorts[o->sort]);
    pk_kv_u64(pk, "window_ms", t.elapsed_ns / 1000000u);
    pk_str(pk, "rows");
    msgpack_pack_array(pk, t.nrows);
    for (size_t i = 0; i < t.nrows; i++) {
        const row *x = &t.rows[i];
        char name[TR_NAME_MAX + 1];
        name_of(s, sys, x->pid, name, sizeof name);
        msgpack_pack_map(pk, 10);
        pk_kv_u64(pk, "pid", x->pid);
        pk_kv_str(pk, "name", name);
        pk_kv_str(pk, "behaviour", x->b->name != NULL ? x->b->name : "?");
        pk_kv_u64(pk, "depth", x->st.depth);
        pk_kv_u64(pk, "depth_max", x->st.depth_max);
        pk_kv_u64(pk, "received", x->st.received);
        pk_kv_u64(pk, "rate", x->rate);
        pk_kv_u64(pk, "restarts", x->st.restarts);
        pk_kv_u64(pk, "dropped", x->st.dropped);
        pk_kv_u64(pk, "rejected", x->st.rejected);
    }
    free(t.rows);
    tr_reply_from(ctx, o->from, r);
}

static void cmd_top(tr_ctx *ctx, ctl *s, tr_from from, const msgpack_object *req)
{
    char sort[16] = "depth";
    uint64_t n = CTL_TOP_DEFAULT, window = CTL_WINDOW_DEFAULT;
    if ((map_get(req, "sort") != NULL && !map_str(req, "sort", sort, sizeof sort)) ||
        map_u64(req, "n", &n) < 0 || map_u64(req, "window_ms", &window) < 0) {
        answer_error(ctx, from, TR_EINVAL, "top: sort is a string, n and window_ms numbers");
        return;
    }
    int key = strcmp(sort, "depth") == 0      ? SORT_DEPTH
              : strcmp(sort, "rate") == 0     ? SORT_RATE
              : strcmp(sort, "received") == 0 ? SORT_RECEIVED
              : strcmp(sort, "restarts") == 0 ? SORT_RESTARTS
                                              : -1;
    if (key < 0 || n > CTL_TOP_MAX || window > CTL_WINDOW_MAX) {
        answer_error(ctx, from, TR_EINVAL,
                     "top: sort is depth, rate, received or restarts; n at most %u; window_ms at "
                     "most %u",
                     CTL_TOP_MAX, CTL_WINDOW_MAX);
        return;
    }
    op *o = op_new(s, OP_TOP, from);
    if (o == NULL) {
        answer_error(ctx, from, TR_EFULL, "busy: %u requests under way", CTL_MAX_OPS);
        return;
    }
    o->sort = key;
    o->n = (unsigned)n;
    o->window_ms = (unsigned)window;
    if (window == 0) {
        top_answer(ctx, s, o);
        op_free(o);
        return;
    }
    /* the rate is measured: every actor's count now, the rest when the window is over */
    o->first_ns = tr__now_ns();
    walk(tr_ctx_system(ctx), note_first, o);
    tr_msg *tick = tr_msg_new(CTL_TICK, 0);
    tr_timer t;
    if (tick == NULL) {
        op_free(o);
        answer_error(ctx, from, TR_ENOMEM, "out of memory");
        return;
    }
    tick->flags = TR_MF_SYSTEM;
    tick->sender = tr_self(ctx);
    tick->corr = o->id;
    if (tr__timer_add(tr_ctx_system(ctx), tr_self(ctx), tick, o->window_ms, false, &t) != TR_OK) {
        op_free(o);
        answer_error(ctx, from, TR_ENOMEM, "no timer");
    }
}

/* ---- tree ---------------------------------------------------------------------------------- */

typedef struct sup_walk {
    op *o;
    tr_pid pids[CTL_SUPS_MAX];
    size_t n;
} sup_walk;

static void note_sup(void *arg, tr_pid pid, const tr_behaviour *b, const tr_actor_stats *st)
{
    (void)st;
    sup_walk *w = arg;
    if (!tr__is_supervisor(b))
        return;
    w->o->total++;
    if (w->n < CTL_SUPS_MAX)
        w->pids[w->n++] = pid;
}

static void cmd_tree(tr_ctx *ctx, ctl *s, tr_from from)
{
    op *o = op_new(s, OP_TREE, from);
    sup_walk *w = calloc(1, sizeof *w);
    if (o == NULL || w == NULL) {
        free(w);
        if (o != NULL)
            op_free(o);
        answer_error(ctx, from, o == NULL ? TR_EFULL : TR_ENOMEM,
                     o == NULL ? "busy: requests under way" : "out of memory");
        return;
    }
    w->o = o;
    walk(tr_ctx_system(ctx), note_sup, w);
    if (!op_subs(o, w->n)) {
        free(w);
        op_free(o);
        answer_error(ctx, from, TR_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < w->n; i++)
        op_ask(ctx, o, w->pids[i], tr__sup_children_request(CTL_CHILDREN_MAX),
               CTL_SUB_TIMEOUT_MS);
    free(w);
    if (o->waiting == 0)
        finish(ctx, s, o);
}

/* Appends the map of answer m to pk with "pid" (and extra_key: extra_val) first. False if the
 * answer is not a map. */
static bool pack_answer(msgpack_packer *pk, tr_pid pid, const char *extra_key,
                        const char *extra_val, const tr_msg *m)
{
    tr_reader r;
    const msgpack_object *obj;
    tr_reader_init(&r, m);
    bool ok = tr_read_object(&r, &obj) == TR_OK && obj->type == MSGPACK_OBJECT_MAP;
    if (ok) {
        msgpack_pack_map(pk, obj->via.map.size + 1 + (extra_key != NULL));
        pk_kv_u64(pk, "pid", pid);
        if (extra_key != NULL)
            pk_kv_str(pk, extra_key, extra_val);
        for (uint32_t i = 0; i < obj->via.map.size; i++) {
            msgpack_pack_object(pk, obj->via.map.ptr[i].key);
            msgpack_pack_object(pk, obj->via.map.ptr[i].val);
        }
    }
    tr_reader_done(&r);
    return ok;
}

/* The answer's "rc" (TR_ETIMEDOUT when there is none). */
static int64_t answer_rc(const tr_msg *m)
{
    if (m == NULL)
        return TR_ETIMEDOUT;
    tr_reader r;
    const msgpack_object *obj;
    int64_t rc = TR_EBADMSG;
    tr_reader_init(&r, m);
    if (tr_read_object(&r, &obj) == TR_OK) {
        const msgpack_object *v = map_get(obj, "rc");
        if (v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            rc = (int64_t)v->via.u64;
        else if (v != NULL && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            rc = v->via.i64;
    }
    tr_reader_done(&r);
    return rc;
}

/* Builds {rc, <count_key>: total, truncated, <list_key>: [each answer]} for tree and limits. */
static void finish_list(tr_ctx *ctx, ctl *s, op *o, const char *count_key, const char *list_key)
{
    tr_system *sys = tr_ctx_system(ctx);
    tr_msg *body = tr_msg_new(0, 4096);
    if (body == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(body);
    size_t k = 0, failed = 0;
    int64_t first_rc = TR_OK;
    bool truncated = o->total > o->nsub;
    size_t budget = max_reply(s) - 256;
    for (size_t i = 0; i < o->nsub; i++) {
        const sub *x = &o->subs[i];
        int64_t rc = answer_rc(x->reply);
        if (rc != TR_OK) {
            failed++;
            if (first_rc == TR_OK)
                first_rc = rc;
        }
        if (tr_msg_size(body) > budget) {
            truncated = true;
            break;
        }
        char name[TR_NAME_MAX + 1];
        name_of(s, sys, x->pid, name, sizeof name);
        if (x->reply != NULL && pack_answer(pk, x->pid, "name", name, x->reply)) {
            k++;
            continue;
        }
        /* no answer in time (it ended, or is stuck in a long turn) */
        msgpack_pack_map(pk, 2);
        pk_kv_u64(pk, "pid", x->pid);
        pk_kv_str(pk, "error", x->reply == NULL ? "no answer" : "a malformed answer");
        k++;
    }
    tr_msg *r = tr_msg_new(0, tr_msg_size(body) + 128);
    if (r != NULL) {
        msgpack_packer *rp = tr_msg_packer(r);
        bool all_failed = o->nsub > 0 && failed == o->nsub;
        msgpack_pack_map(rp, all_failed ? 5 : 4);
        pk_kv_i64(rp, "rc", all_failed ? first_rc : TR_OK);
        if (all_failed)
            pk_kv_str(rp, "error", first_rc == TR_EINVAL
                                       ? "refused: no rate limit to change without a rate"
                                       : tr_strerror((int)first_rc));
        pk_kv_u64(rp, count_key, o->total);
        pk_kv_bool(rp, "truncated", truncated);
        pk_str(rp, list_key);
        msgpack_pack_array(rp, k);
        if (tr_msg_append(r, tr_msg_data(body), tr_msg_size(body)) == TR_OK)
            tr_reply_from(ctx, o->from, r);
        else
            tr_msg_free(r);
    }
    tr_msg_free(body);
}

/* ---- targets: a pid, a name, a behaviour --------------------------------------------------- */

typedef struct beh_walk {
    const char *name;
    tr_pid *pids;
    size_t cap, n, total;
} beh_walk;

static void note_beh(void *arg, tr_pid pid, const tr_behaviour *b, const tr_actor_stats *st)
{
    (void)st;
    beh_walk *w = arg;
    if (b->name == NULL || strcmp(b->name, w->name) != 0)
        return;
    w->total++;
    if (w->n < w->cap)
        w->pids[w->n++] = pid;
}

/* The actors `target` names on this node: a pid (0x... or decimal), a local or cluster-wide
 * name, else every actor of a behaviour of that name (up to cap; *total: how many). TR_OK, or
 * an error with a line in err. */
static int resolve(tr_ctx *ctx, ctl *s, const char *target, tr_pid *pids, size_t cap,
                   size_t *n, size_t *total, char *err, size_t errcap)
{
    tr_system *sys = tr_ctx_system(ctx);
    tr_pid pid = TR_PID_NONE;
    char *end = NULL;
    *n = *total = 0;
    unsigned long long v = strtoull(target, &end, 0);
    if (target[0] >= '0' && target[0] <= '9' && end != NULL && *end == '\0') {
        pid = (tr_pid)v;
        if (tr_pid_node(pid) != sys->opts.node_id) {
            snprintf(err, errcap, "%s is an actor of node id %u, not of this node (id %u)",
                     target, tr_pid_node(pid), sys->opts.node_id);
            return TR_EINVAL;
        }
        if (!tr_system_alive(sys, pid)) {
            snprintf(err, errcap, "no live actor %s on this node", target);
            return TR_ENOPROC;
        }
    } else if (tr_system_whereis(sys, target, &pid) != TR_OK &&
               (s->hooks.whereis == NULL ||
                s->hooks.whereis(s->hooks.arg, target, &pid) != TR_OK)) {
        beh_walk w = {.name = target, .pids = pids, .cap = cap};
        walk(sys, note_beh, &w);
        if (w.total == 0) {
            snprintf(err, errcap, "no actor, name or behaviour called '%s' on this node", target);
            return TR_ENOPROC;
        }
        *n = w.n;
        *total = w.total;
        return TR_OK;
    }
    if (tr_pid_node(pid) != sys->opts.node_id) {
        snprintf(err, errcap, "'%s' is held by an actor of node id %u: ask that node", target,
                 tr_pid_node(pid));
        return TR_EINVAL;
    }
    pids[0] = pid;
    *n = *total = 1;
    return TR_OK;
}

/* ---- limits, limits_set -------------------------------------------------------------------- */

static void cmd_limits(tr_ctx *ctx, ctl *s, tr_from from, const msgpack_object *req, bool set)
{
    char target[CTL_TARGET_MAX + 1], kind[16] = "";
    uint64_t rate = 0, burst = 0, k = TR__LIMIT_KEEP;
    if (!map_str(req, "target", target, sizeof target) || target[0] == '\0') {
        answer_error(ctx, from, TR_EINVAL, "limits: a target (a pid, a name or a behaviour)");
        return;
    }
    if (set) {
        int rr = map_u64(req, "rate", &rate), rb = map_u64(req, "burst", &burst);
        bool has_kind = map_get(req, "kind") != NULL;
        if (has_kind && !map_str(req, "kind", kind, sizeof kind))
            kind[0] = '?';
        k = !has_kind                      ? TR__LIMIT_KEEP
            : strcmp(kind, "token") == 0   ? TR_LIMIT_TOKEN
            : strcmp(kind, "leaky") == 0   ? TR_LIMIT_LEAKY
            : strcmp(kind, "none") == 0    ? TR_LIMIT_NONE
                                           : 99;
        if (rr < 0 || rb < 0 || k == 99 || rate > UINT32_MAX || burst > UINT32_MAX ||
            (rr == 0 && rb == 0 && !has_kind)) {
            answer_error(ctx, from, TR_EINVAL,
                         "limits_set: rate and burst are numbers up to 4294967295, kind is "
                         "token, leaky or none; give at least one");
            return;
        }
    }
    tr_pid pids[CTL_LIMITS_MAX];
    size_t n, total;
    char err[320];
    int rc = resolve(ctx, s, target, pids, CTL_LIMITS_MAX, &n, &total, err, sizeof err);
    if (rc != TR_OK) {
        answer_error(ctx, from, rc, "%s", err);
        return;
    }
    op *o = op_new(s, OP_LIMITS, from);
    if (o == NULL || !op_subs(o, n)) {
        if (o != NULL)
            op_free(o);
        answer_error(ctx, from, o == NULL ? TR_EFULL : TR_ENOMEM,
                     o == NULL ? "busy: requests under way" : "out of memory");
        return;
    }
    o->set = set;
    o->total = total;
    snprintf(o->target, sizeof o->target, "%s", target);
    for (size_t i = 0; i < n; i++) {
        tr_msg *m = tr_msg_new(TR_SIG_LIMIT_INFO, 24);
        if (m != NULL && set) {
            tr_msg_put_u64(m, k);
            tr_msg_put_u64(m, rate);
            tr_msg_put_u64(m, burst);
        }
        if (m != NULL)
            m->flags = TR_MF_SIGNAL; /* answered by the runtime in the actor's own turn */
        op_ask(ctx, o, pids[i], m, CTL_SUB_TIMEOUT_MS);
    }
    if (o->waiting == 0)
        finish(ctx, s, o);
}

/* ---- kill ---------------------------------------------------------------------------------- */

static void cmd_kill(tr_ctx *ctx, ctl *s, tr_from from, const msgpack_object *req)
{
    char target[CTL_TARGET_MAX + 1], text[200] = "";
    if (!map_str(req, "target", target, sizeof target) || target[0] == '\0' ||
        (map_get(req, "reason") != NULL && !map_str(req, "reason", text, sizeof text))) {
        answer_error(ctx, from, TR_EINVAL, "kill: a target (a pid, a name or a behaviour), and "
                                           "a reason (a string, up to 199 bytes) if any");
        return;
    }
    tr_pid pids[2];
    size_t n, total;
    char err[320];
    int rc = resolve(ctx, s, target, pids, 2, &n, &total, err, sizeof err);
    if (rc != TR_OK) {
        answer_error(ctx, from, rc, "%s", err);
        return;
    }
    if (total != 1) {
        answer_error(ctx, from, TR_EINVAL,
                     "behaviour '%s' has %zu actors here: give a pid or a registered name",
                     target, total);
        return;
    }
    tr_system *sys = tr_ctx_system(ctx);
    tr_actor *a = tr__actor_lookup(sys, pids[0]);
    const tr_behaviour *b = a != NULL ? __atomic_load_n(&a->beh, __ATOMIC_RELAXED) : NULL;
    const char *bname = b != NULL && b->name != NULL ? b->name : "?";
    if (strncmp(bname, "troupe.", 7) == 0) {
        answer_error(ctx, from, TR_EINVAL, "%s is the runtime's own %s: not killed", target,
                     bname);
        return;
    }
    char bcopy[128];
    snprintf(bcopy, sizeof bcopy, "%s", bname);
    tr_reason reason = {.kind = TR_REASON_KILLED};
    if (text[0] != '\0')
        reason = (tr_reason){.kind = TR_REASON_ERROR, .code = TR_ESTATE, .text = text};
    rc = tr_exit(ctx, pids[0], &reason);
    if (rc != TR_OK) {
        answer_error(ctx, from, rc, "%s ended before the signal: %s", target, tr_strerror(rc));
        return;
    }
    tr_msg *r = tr_msg_new(0, 96);
    if (r == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, 4);
    pk_kv_i64(pk, "rc", TR_OK);
    pk_kv_u64(pk, "pid", pids[0]);
    pk_kv_str(pk, "behaviour", bcopy);
    pk_kv_str(pk, "reason", text[0] != '\0' ? text : "killed");
    tr_reply_from(ctx, from, r);
}

/* ---- the actor ----------------------------------------------------------------------------- */

static void finish(tr_ctx *ctx, ctl *s, op *o)
{
    switch (o->kind) {
    case OP_NODES:
        finish_nodes(ctx, o);
        break;
    case OP_TREE:
        finish_list(ctx, s, o, "supervisors", "tree");
        break;
    case OP_LIMITS:
        finish_list(ctx, s, o, "matched", "actors");
        break;
    case OP_TOP:
        top_answer(ctx, s, o);
        break;
    default:
        break;
    }
    op_free(o);
}

static void on_request(tr_ctx *ctx, ctl *s, const tr_msg *m)
{
    tr_from from = tr_msg_from(m);
    if (from.pid == TR_PID_NONE)
        return; /* nobody to answer */
    tr_reader r;
    const msgpack_object *req;
    char cmd[32];
    tr_reader_init(&r, m);
    if (tr_read_object(&r, &req) != TR_OK || req->type != MSGPACK_OBJECT_MAP ||
        !map_str(req, "cmd", cmd, sizeof cmd)) {
        answer_error(ctx, from, TR_EBADMSG, "a request is a map with \"cmd\"");
    } else if (strcmp(cmd, "ping") == 0) {
        cmd_ping(ctx, from);
    } else if (strcmp(cmd, "stats") == 0) {
        cmd_stats(ctx, s, from);
    } else if (strcmp(cmd, "nodes") == 0) {
        cmd_nodes(ctx, s, from);
    } else if (strcmp(cmd, "top") == 0) {
        cmd_top(ctx, s, from, req);
    } else if (strcmp(cmd, "tree") == 0) {
        cmd_tree(ctx, s, from);
    } else if (strcmp(cmd, "limits") == 0) {
        cmd_limits(ctx, s, from, req, false);
    } else if (strcmp(cmd, "limits_set") == 0) {
        cmd_limits(ctx, s, from, req, true);
    } else if (strcmp(cmd, "kill") == 0) {
        cmd_kill(ctx, s, from, req);
    } else {
        answer_error(ctx, from, TR_EINVAL, "unknown command '%s'", cmd);
    }
    tr_reader_done(&r);
}

/* An answer (or a timeout, or a notice that none will come) to one of our requests. */
static void on_answer(tr_ctx *ctx, ctl *s, tr_msg *m, bool answered)
{
    uint64_t corr = tr_msg_corr(m);
    for (size_t i = 0; i < CTL_MAX_OPS; i++) {
        op *o = &s->ops[i];
        if (o->kind == OP_FREE)
            continue;
        for (size_t j = 0; j < o->nsub; j++) {
            sub *x = &o->subs[j];
            if (x->corr != corr)
                continue;
            x->corr = 0;
            if (answered) {
                x->rtt_ns = tr__now_ns() - x->sent_ns;
                tr__ctx_release_cur(ctx, m); /* kept until the operation answers */
                x->reply = m;
            }
            if (--o->waiting == 0)
                finish(ctx, s, o);
            return;
        }
    }
}

static int ctl_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    ctl *s = *(ctl **)state;
    uint32_t type = tr_msg_type(m);
    if (tr_msg_is_reply(m) && type != TR_MSG_NOPROC && type != TR_MSG_REJECTED) {
        on_answer(ctx, s, m, true);
    } else if (type == TR_MSG_TIMEOUT || type == TR_MSG_NOPROC || type == TR_MSG_REJECTED) {
        on_answer(ctx, s, m, false);
    } else if (type == CTL_TICK && tr_msg_sender(m) == tr_self(ctx)) {
        for (size_t i = 0; i < CTL_MAX_OPS; i++)
            if (s->ops[i].kind == OP_TOP && s->ops[i].id == tr_msg_corr(m))
                finish(ctx, s, &s->ops[i]);
    } else if (type == TR__MSG_CTL && tr_msg_corr(m) != 0) {
        on_request(ctx, s, m);
    }
    return 0;
}

static int ctl_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    ctl *s = calloc(1, sizeof *s);
    if (s == NULL)
        return TR_ENOMEM;
    s->hooks = *(const tr__ctl_hooks *)arg;
    *(ctl **)state = s;
    return 0;
}

static void ctl_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    (void)reason;
    ctl *s = *(ctl **)state;
    if (s == NULL)
        return;
    for (size_t i = 0; i < CTL_MAX_OPS; i++)
        if (s->ops[i].kind != OP_FREE)
            op_free(&s->ops[i]); /* their clients' timeouts answer */
    free(s);
}

static const tr_behaviour ctl_behaviour = {
    .name = "troupe.ctl",
    .state_size = sizeof(ctl *),
    .init = ctl_init,
    .receive = ctl_receive,
    .terminate = ctl_terminate,
};

int tr__ctl_start(tr_system *sys, const tr__ctl_hooks *hooks, tr_pid *out)
{
    if (sys == NULL || hooks == NULL || out == NULL)
        return TR_EINVAL;
    return tr_system_spawn(sys, &ctl_behaviour, hooks, out);
}
