/*
 * memsim.c — the simulated network of memsim.h: an event queue (a binary heap ordered by virtual
 * time, then by insertion), one event per message in flight and one per node's next tick. Every
 * message is a copy of the bytes an instance handed to its send callback, decoded by the
 * receiving instance as a node would: the simulator runs the core's real encoding, decoding and
 * rules, not a model of them.
 */
#include "memsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EV_TICK = 1, EV_DELIVER = 2, EV_UNREACH = 3 };

typedef struct ev {
    uint64_t t_us, seq;
    uint32_t type, dst, src, len;
    uint8_t *msg;
} ev;

typedef struct snode {
    tr_gossip *g;
    struct memsim *s;
    uint32_t idx;
    bool dead, frozen;
    int side;
    uint64_t inc;
    uint64_t excused_until_ms; /* thawed lately: late news of its down is not a false one */
    char name[32], addr[32];
} snode;

struct memsim {
    memsim_opts o;
    unsigned tick_ms, down_ms;
    tr_gossip_idents *idents;
    snode *nodes;
    size_t n, cap;
    uint32_t (*cnt)[4]; /* per subject: running observers seeing it in each state */
    uint64_t pairs[2][2][4];
    bool pairs_dirty;
    ev *heap;
    size_t nh, hcap;
    uint64_t seq, now_us, rng;
    memsim_stats st;
};

static uint64_t srnd(memsim *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 0x2545f4914f6cdd1dull;
}

static double unit(memsim *s)
{
    return (double)(srnd(s) >> 11) / 9007199254740992.0;
}

/* ---- the event queue ------------------------------------------------------------------------ */

static bool ev_less(const ev *a, const ev *b)
{
    return a->t_us < b->t_us || (a->t_us == b->t_us && a->seq < b->seq);
}

static void push(memsim *s, ev e)
{
    if (s->nh == s->hcap) {
        s->hcap = s->hcap ? s->hcap * 2 : 1024;
        s->heap = realloc(s->heap, s->hcap * sizeof *s->heap);
        if (s->heap == NULL) {
            fprintf(stderr, "memsim: out of memory\n");
            exit(1);
        }
    }
    e.seq = s->seq++;
    size_t i = s->nh++;
    while (i > 0 && ev_less(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
}

static ev pop(memsim *s)
{
    ev top = s->heap[0], last = s->heap[--s->nh];
    s->heap[s->nh].msg = NULL; /* (the vacated slot: nothing in it is freed twice) */
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nh)
            break;
        if (c + 1 < s->nh && ev_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nh > 0)
        s->heap[i] = last;
    return top;
}

static uint64_t latency_us(memsim *s)
{
    double l = s->o.latency_ms * 1000.0;
    return (uint64_t)(l * (0.5 + unit(s))) + 1;
}

/* ---- the callbacks -------------------------------------------------------------------------- */

static size_t index_of(const char *name_or_addr)
{
    const char *p = strchr(name_or_addr, ':');
    p = p != NULL ? p + 1 : name_or_addr + 1; /* "sim:<i>" or "n<i>" */
    return (size_t)strtoull(p, NULL, 10);
}

static void on_send(void *arg, const char *name, const char *addr, const void *msg, size_t len)
{
    (void)name;
    snode *from = arg;
    memsim *s = from->s;
    size_t to = index_of(addr);
    s->st.sent++;
    s->st.bytes += len;
    if (to >= s->n || s->nodes[to].side != from->side || unit(s) < s->o.loss) {
        s->st.lost++;
        return;
    }
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
        s->st.lost++;
        return;
    }
    memcpy(copy, msg, len);
    push(s, (ev){.t_us = s->now_us + latency_us(s), .type = EV_DELIVER, .dst = (uint32_t)to,
                 .src = from->idx, .len = (uint32_t)len, .msg = copy});
}

static void count_pair(memsim *s, const snode *obs, size_t subj, int state, int delta)
{
    if (subj >= s->n || state < 0)
        return;
    s->cnt[subj][state] = (uint32_t)((int64_t)s->cnt[subj][state] + delta);
    if (subj != obs->idx && !s->nodes[subj].dead)
        s->pairs[obs->side][s->nodes[subj].side][state] += (uint64_t)(int64_t)delta;
}

static void on_event(void *arg, const tr_gossip_member *m, int old)
{
    snode *obs = arg;
    memsim *s = obs->s;
    s->st.events++;
    if (obs->dead)
        return;
    size_t subj = index_of(m->name);
    count_pair(s, obs, subj, old, -1);
    count_pair(s, obs, subj, (int)m->state, +1);
    if (subj < s->n && (m->state == TR_GOSSIP_SUSPECT || m->state == TR_GOSSIP_DOWN)) {
        const snode *t = &s->nodes[subj];
        bool healthy = !t->dead && !t->frozen && t->side == obs->side &&
                       t->excused_until_ms <= s->now_us / 1000 && m->incarnation >= t->inc;
        if (!healthy && !t->dead && !t->frozen && t->side == obs->side &&
            m->state == TR_GOSSIP_DOWN)
        {
            s->st.excused_downs++;
            if (getenv("MEMSIM_DEBUG") != NULL && s->st.excused_downs < 40)
                fprintf(stderr, "memsim: at %llu ms %s sees %s down (incarnation %llu, by %016llx) "
                        "[excused]\n", (unsigned long long)(s->now_us / 1000), obs->name, m->name,
                        (unsigned long long)m->incarnation, (unsigned long long)m->by);
        }
        if (healthy && m->state == TR_GOSSIP_SUSPECT)
            s->st.false_suspects++;
        if (healthy && m->state == TR_GOSSIP_DOWN) {
            s->st.false_downs++;
            if (getenv("MEMSIM_DEBUG") != NULL)
                fprintf(stderr, "memsim: at %llu ms %s sees %s down (incarnation %llu)\n",
                        (unsigned long long)(s->now_us / 1000), obs->name, m->name,
                        (unsigned long long)m->incarnation);
        }
    }
}

/* ---- nodes ---------------------------------------------------------------------------------- */

static void start_node(memsim *s, snode *nd, uint64_t inc, const char *seed)
{
    tr_gossip_opts go = {
        .name = nd->name, .addr = nd->addr, .node_id = (uint16_t)(nd->idx % 65534 + 2),
        .incarnation = inc, .monitors = s->o.monitors, .heartbeat_ms = s->o.heartbeat_ms,
        .down_after_ms = s->o.down_after_ms, .suspect_ms = s->o.suspect_ms,
        .gossip_ms = s->o.gossip_ms, .fanout = s->o.fanout, .max_members = s->cap + 1,
        .seeds = seed != NULL ? &seed : NULL, .nseeds = seed != NULL ? 1 : 0,
        .rng_seed = srnd(s), .idents = s->idents, .send = on_send, .event = on_event, .arg = nd};
    nd->inc = inc;
    nd->dead = nd->frozen = false;
    if (tr__gossip_new(&go, s->now_us / 1000, &nd->g) != TR_OK) {
        fprintf(stderr, "memsim: cannot start %s\n", nd->name);
        exit(1);
    }
    /* it sees itself alive */
    count_pair(s, nd, nd->idx, TR_GOSSIP_ALIVE, +1);
    push(s, (ev){.t_us = s->now_us + (uint64_t)(unit(s) * s->tick_ms * 1000.0), .type = EV_TICK,
                 .dst = nd->idx});
}

/* Takes a node's whole view out of the counters (it crashed). */
static void forget_view(memsim *s, snode *nd)
{
    tr_gossip_member m;
    for (size_t i = 0; tr__gossip_member_at(nd->g, i, &m) == TR_OK; i++)
        if (index_of(m.name) != nd->idx)
            count_pair(s, nd, index_of(m.name), (int)m.state, -1);
    count_pair(s, nd, nd->idx, TR_GOSSIP_ALIVE, -1); /* as start_node counted it */
}

static int cmp_key(const void *a, const void *b)
{
    uint64_t x = tr__gossip_key(((const tr_gossip_member *)a)->name);
    uint64_t y = tr__gossip_key(((const tr_gossip_member *)b)->name);
    return x < y ? -1 : x > y;
}

memsim *memsim_new(const memsim_opts *o)
{
    memsim *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->o = *o;
    if (s->o.latency_ms <= 0)
        s->o.latency_ms = 1;
    s->rng = s->o.seed ? s->o.seed * 0x9e3779b97f4a7c15ull | 1 : 1;
    unsigned hb = s->o.heartbeat_ms ? s->o.heartbeat_ms : 200;
    s->tick_ms = s->o.tick_ms ? s->o.tick_ms : (hb / 4 ? hb / 4 : 1);
    s->down_ms = s->o.down_after_ms ? s->o.down_after_ms : 1000;
    s->cap = s->o.capacity ? s->o.capacity : s->o.nodes + 16;
    s->idents = tr__gossip_idents_new();
    s->nodes = calloc(s->cap, sizeof *s->nodes);
    s->cnt = calloc(s->cap, sizeof *s->cnt);
    if (s->idents == NULL || s->nodes == NULL || s->cnt == NULL) {
        memsim_free(s);
        return NULL;
    }
    for (size_t i = 0; i < s->cap; i++) {
        snode *nd = &s->nodes[i];
        nd->s = s;
        nd->idx = (uint32_t)i;
        snprintf(nd->name, sizeof nd->name, "n%zu", i);
        snprintf(nd->addr, sizeof nd->addr, "sim:%zu", i);
    }
    s->n = s->o.nodes;
    tr_gossip_member *all = calloc(s->n + 1, sizeof *all);
    if (all == NULL) {
        memsim_free(s);
        return NULL;
    }
    for (size_t i = 0; i < s->n; i++)
        all[i] = (tr_gossip_member){.name = s->nodes[i].name, .addr = s->nodes[i].addr,
                                    .node_id = (uint16_t)(i % 65534 + 2), .incarnation = 1,
                                    .state = TR_GOSSIP_ALIVE};
    /* in ring order, so that each instance takes them in without sorting */
    qsort(all, s->n, sizeof *all, cmp_key);
    for (size_t i = 0; i < s->n; i++) {
        start_node(s, &s->nodes[i], 1, NULL);
        tr__gossip_load(s->nodes[i].g, 0, all, s->n); /* (no events: counted here) */
        s->cnt[i][TR_GOSSIP_ALIVE] = (uint32_t)s->n;
    }
    s->pairs_dirty = true;
    free(all);
    return s;
}

void memsim_free(memsim *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->nodes != NULL && i < s->n; i++)
        tr__gossip_free(s->nodes[i].g);
    for (size_t i = 0; i < s->nh; i++)
        free(s->heap[i].msg);
    tr__gossip_idents_free(s->idents);
    free(s->heap);
    free(s->nodes);
    free(s->cnt);
    free(s);
}

void memsim_run_until(memsim *s, uint64_t t_ms)
{
    uint64_t end = t_ms * 1000;
    while (s->nh > 0 && s->heap[0].t_us <= end) {
        ev e = pop(s);
        s->now_us = e.t_us;
        uint64_t now = s->now_us / 1000;
        snode *nd = &s->nodes[e.dst];
        switch (e.type) {
        case EV_TICK:
            if (nd->dead)
                break;
            if (!nd->frozen)
                tr__gossip_tick(nd->g, now);
            push(s, (ev){.t_us = s->now_us + s->tick_ms * 1000u, .type = EV_TICK, .dst = e.dst});
            break;
        case EV_DELIVER:
            if (nd->dead) { /* its sockets are closed: the sender hears so */
                s->st.unreachable++;
                push(s, (ev){.t_us = s->now_us + latency_us(s), .type = EV_UNREACH, .dst = e.src,
                             .src = e.dst});
            } else if (nd->frozen || nd->side != s->nodes[e.src].side) {
                s->st.lost++;
            } else {
                s->st.delivered++;
                tr__gossip_receive(nd->g, now, s->nodes[e.src].name, e.msg, e.len);
            }
            free(e.msg);
            break;
        case EV_UNREACH:
            if (!nd->dead && !nd->frozen)
                tr__gossip_unreachable(nd->g, now, s->nodes[e.src].name);
            break;
        default:
            break;
        }
    }
    if (s->now_us < end)
        s->now_us = end;
}

uint64_t memsim_now_ms(const memsim *s)
{
    return s->now_us / 1000;
}

size_t memsim_size(const memsim *s)
{
    return s->n;
}

tr_gossip *memsim_node(memsim *s, size_t i)
{
    return i < s->n ? s->nodes[i].g : NULL;
}

void memsim_stats_get(const memsim *s, memsim_stats *out)
{
    *out = s->st;
}

size_t memsim_join(memsim *s, size_t seed)
{
    if (s->n >= s->cap) {
        fprintf(stderr, "memsim: capacity %zu reached\n", s->cap);
        exit(1);
    }
    snode *nd = &s->nodes[s->n++];
    nd->side = 0;
    start_node(s, nd, 1, s->nodes[seed].addr);
    return nd->idx;
}

void memsim_kill(memsim *s, size_t i)
{
    snode *nd = &s->nodes[i];
    if (nd->dead)
        return;
    /* its watchers hold the connections its beats came on: a node sees them break (its
     * inbound connection that carried something lately: conn.c), one latency later */
    tr_gossip_member ws[TR_GOSSIP_MONITORS_MAX];
    size_t k = tr__gossip_watchers(nd->g, ws, TR_GOSSIP_MONITORS_MAX);
    for (size_t j = 0; j < k; j++) {
        char *end;
        unsigned long w = strtoul(ws[j].name + 1, &end, 10); /* "n<index>" */
        if (ws[j].name[0] == 'n' && *end == '\0' && w < s->n)
            push(s, (ev){.t_us = s->now_us + latency_us(s), .type = EV_UNREACH, .dst = w,
                         .src = i});
    }
    forget_view(s, nd);
    nd->dead = true;
    s->pairs_dirty = true; /* it is no one's subject any more */
}

void memsim_freeze(memsim *s, size_t i, bool on)
{
    snode *nd = &s->nodes[i];
    nd->frozen = on;
    if (!on)
        nd->excused_until_ms = s->now_us / 1000 + 2u * s->down_ms + 2000u;
}

void memsim_restart(memsim *s, size_t i, size_t seed)
{
    snode *nd = &s->nodes[i];
    if (!nd->dead)
        memsim_kill(s, i);
    uint64_t inc = tr__gossip_incarnation(nd->g) + 1;
    if (inc < s->now_us / 1000)
        inc = s->now_us / 1000; /* a clock in ms, as a node does */
    tr__gossip_free(nd->g);
    nd->g = NULL;
    start_node(s, nd, inc, s->nodes[seed].addr);
    s->pairs_dirty = true;
}

void memsim_side(memsim *s, size_t i, int side)
{
    s->nodes[i].side = side ? 1 : 0;
    s->pairs_dirty = true;
}

void memsim_heal(memsim *s)
{
    /* each side's verdicts on the other reach it now (a member declared down by the other side
     * is down at its incarnation until it refutes): counted apart, for the rest of the run */
    for (size_t i = 0; i < s->n; i++) {
        s->nodes[i].side = 0;
        s->nodes[i].excused_until_ms = UINT64_MAX;
    }
    s->pairs_dirty = true;
}

size_t memsim_seen(const memsim *s, size_t i, tr_gossip_state st)
{
    size_t c = i < s->n ? s->cnt[i][st] : 0;
    if (i < s->n && !s->nodes[i].dead && st == TR_GOSSIP_ALIVE && c > 0)
        c--; /* not itself (counted alive when it started: the core tells no one its own state) */
    return c;
}

size_t memsim_running(const memsim *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += !s->nodes[i].dead;
    return k;
}

uint64_t memsim_pairs(const memsim *s, int a, int b, tr_gossip_state st)
{
    memsim *w = (memsim *)s;
    if (w->pairs_dirty) {
        memset(w->pairs, 0, sizeof w->pairs);
        for (size_t i = 0; i < w->n; i++) {
            snode *nd = &w->nodes[i];
            if (nd->dead)
                continue;
            tr_gossip_member m;
            for (size_t j = 0; tr__gossip_member_at(nd->g, j, &m) == TR_OK; j++) {
                size_t subj = index_of(m.name);
                if (subj < w->n && subj != i && !w->nodes[subj].dead)
                    w->pairs[nd->side][w->nodes[subj].side][m.state]++;
            }
        }
        w->pairs_dirty = false;
    }
    return s->pairs[a ? 1 : 0][b ? 1 : 0][st];
}

size_t memsim_side_count(const memsim *s, int side)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += !s->nodes[i].dead && s->nodes[i].side == side;
    return k;
}
