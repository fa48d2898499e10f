/*
 * members.c — membership and failure detection: the peers a node knows, learnt from seeds,
 * HELLOs and MEMBERS frames; peers taken down; the ticker (a hook on the timer thread); links
 * and monitors across nodes; node watchers.
 *
 * Membership and failure detection. Seeds are dialed first; every HELLO carries the sender's
 * listen address and every new connection gets a MEMBERS frame, so each node learns every other
 * and dials it. A ticker (tr__node_tick, run on the runtime's timer thread: no thread of its
 * own) sends heartbeats on quiet connections, declares a peer down when its inbound connection
 * was silent for down_after_ms (or at once when a connection breaks — which is how a kill -9 on
 * loopback shows), redials with capped exponential backoff, and
 * frees closed connections. When a peer goes down, its queued messages become dead letters,
 * node watchers get TR_MSG_NODEDOWN, and each local actor that holds a link or monitor with one
 * of its actors gets a NODEDOWN signal, which it turns into EXIT / DOWN with reason
 * noconnection (link.c). A peer that stops says so first (a LEAVE frame, see node.c): it is taken
 * down the same way but said to have left (watchers' NODEDOWN carries left = 1), then forgotten —
 * never redialed, its slot reusable — and remembered as left for forget_after_ms (a tombstone
 * tr_node_peers lists, which gossip from a peer that has not heard yet cannot undo).
 *
 * Hidden peers (a hidden node such as troupectl, connected to us on one duplex connection, see
 * conn.c) are not members: the lookups by name and address, tr_node_peers, gossip, watchers and
 * the ticker's dials leave them out, their loss is neither logged as a member's nor counted, and
 * a hidden peer that goes (down or left) is forgotten at once — no tombstone, no redial.
 */
#include "gossip.h"
#include "node_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- peers (node lock held unless said otherwise) ------------------------------------------ */

static bool named(const peer *pe, const char *name)
{
    return !pe->alias && !pe->hidden && strcmp(pe->name, name) == 0;
}

peer *tr__peer_by_name(tr_node *n, const char *name)
{
    /* the same few names are asked for again and again (with monitors: the K members a node
     * beats to, every heartbeat): a walk over every peer's cold struct each time was a visible
     * part of an idle node's CPU */
    uint32_t h = 2166136261u;
    for (const char *p = name; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    peer **slot = &n->name_cache[(h ^ h >> 16) % 64u];
    if (*slot != NULL && named(*slot, name))
        return *slot;
    for (size_t i = 0; i < n->npeers; i++)
        if (named(n->peers[i], name))
            return *slot = n->peers[i];
    return NULL;
}

peer *tr__peer_by_addr(tr_node *n, const char *addr)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && !n->peers[i]->hidden && strcmp(n->peers[i]->addr, addr) == 0)
            return n->peers[i];
    return NULL;
}

/* Remembers that `name` left (lock held): the entry of that name, else a free one, else the
 * oldest. */
static void left_remember(tr_node *n, const char *name, const char *addr, uint16_t id)
{
    left_entry *e = NULL;
    for (size_t i = 0; i < NODE_MAX_LEFT && e == NULL; i++)
        if (strcmp(n->left[i].name, name) == 0)
            e = &n->left[i];
    for (size_t i = 0; i < NODE_MAX_LEFT && e == NULL; i++)
        if (n->left[i].name[0] == '\0')
            e = &n->left[i];
    for (size_t i = 0; i < NODE_MAX_LEFT; i++)
        if (e == NULL || n->left[i].at_ns < e->at_ns)
            e = &n->left[i];
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->addr, sizeof e->addr, "%s", addr);
    e->node_id = id;
    e->at_ns = tr__now_ns();
}

/* The tombstone of `name`, NULL if none (lock held). */
static left_entry *left_find(tr_node *n, const char *name)
{
    for (size_t i = 0; i < NODE_MAX_LEFT; i++)
        if (n->left[i].name[0] != '\0' && strcmp(n->left[i].name, name) == 0)
            return &n->left[i];
    return NULL;
}

bool tr__left_known(tr_node *n, const char *name)
{
    return left_find(n, name) != NULL;
}

bool tr__left_incarnation(tr_node *n, const char *name, uint16_t node_id)
{
    left_entry *e = left_find(n, name);
    return e != NULL && e->node_id == node_id;
}

void tr__left_clear(tr_node *n, const char *name)
{
    left_entry *e = left_find(n, name);
    if (e != NULL)
        e->name[0] = '\0';
}

/* No thread holds pe in use: no dial under way, no connection (live or dead) that names it, not
 * up nor joining. Lock held. */
static bool peer_idle(tr_node *n, const peer *pe)
{
    if (pe->dialing || pe->out_conn != NULL || pe->in_conn != NULL || pe->joining ||
        pe->status == TR_PEER_UP)
        return false;
    for (const conn *c = n->conns; c != NULL; c = c->next)
        if (c->pe == pe)
            return false;
    return true;
}

/* A member learnt from others that was never up (not a seed): what forgetting may take. */
static bool peer_forgettable(const peer *pe)
{
    return !pe->alias && !pe->seed && !pe->ever_up;
}

/* Takes pe out of use: inert (an alias), its slot reusable (tr__peer_new). Lock held. */
static void peer_forget(tr_node *n, peer *pe, const char *why)
{
    tr__node_log(n, "forgetting member %s at %s: %s", pe->name[0] ? pe->name : "?", pe->addr, why);
    count(&n->peers_forgotten, 1);
    pe->alias = true; /* put_members leaves aliases out: nothing to tell the others */
    pe->name[0] = '\0';
    pe->addr[0] = '\0';
}

/* A slot for a new peer when the table is full: an inert entry nothing uses, else the oldest
 * member never reached (forgotten now). NULL if every peer is real or busy. Lock held. */
static peer *peer_reusable(tr_node *n)
{
    peer *oldest = NULL;
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (!peer_idle(n, pe))
            continue;
        if (pe->alias && !pe->seed)
            return pe;
        if (peer_forgettable(pe) && (oldest == NULL || pe->learned_ns < oldest->learned_ns))
            oldest = pe;
    }
    if (oldest != NULL)
        peer_forget(n, oldest, "the peer table is full");
    return oldest;
}

/* Forgets members never reached within forget_after_ms (the ticker, lock held). */
void tr__peer_forget_stale(tr_node *n, uint64_t now)
{
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (peer_forgettable(pe) && now - pe->learned_ns > n->forget_ns && peer_idle(n, pe))
            peer_forget(n, pe, "never reached");
    }
    for (size_t i = 0; i < NODE_MAX_LEFT; i++)
        if (n->left[i].name[0] != '\0' && now - n->left[i].at_ns > n->forget_ns)
            n->left[i].name[0] = '\0'; /* forgotten: no longer listed as left */
}

/* Gives pe (new, or an idle slot: no queue, no interest, no control frames) a member's identity. */
static void peer_learnt(tr_node *n, peer *pe, const char *name, const char *addr)
{
    snprintf(pe->name, sizeof pe->name, "%s", name);
    snprintf(pe->addr, sizeof pe->addr, "%s", addr);
    pe->alias = pe->seed = pe->ever_up = pe->failing = pe->hidden = false;
    pe->status = TR_PEER_DOWN;
    pe->backoff_ms = n->backoff_min_ms;
    pe->next_dial_ns = 0;
    pe->learned_ns = tr__now_ns();
    n->members_dirty = true;
}

peer *tr__peer_new(tr_node *n, const char *name, const char *addr)
{
    peer *pe;
    if (n->npeers >= NODE_MAX_PEERS) {
        if ((pe = peer_reusable(n)) == NULL)
            return NULL;
    } else {
        if ((pe = calloc(1, sizeof *pe)) == NULL)
            return NULL;
        if (nng_aio_alloc(&pe->dial_aio, tr__node_on_dial, pe) != 0) {
            free(pe);
            return NULL;
        }
        pe->n = n;
        tr__idmap_init(&pe->interest);
        tr__mpsc_init(&pe->q);
        pthread_mutex_init(&pe->ctl_lock, NULL);
        tr__wire_buf_init(&pe->ctl);
        n->peers[n->npeers++] = pe;
    }
    peer_learnt(n, pe, name, addr);
    return pe;
}

peer *tr__peer_new_hidden(tr_node *n, const char *name)
{
    bool dirty = n->members_dirty; /* nothing to tell the members about it */
    peer *pe = NULL;
    /* the slot of one that went, if idle: hidden nodes come and go, the table need not grow */
    for (size_t i = 0; i < n->npeers && pe == NULL; i++)
        if (n->peers[i]->alias && !n->peers[i]->seed && n->peers[i]->hidden &&
            peer_idle(n, n->peers[i]))
            pe = n->peers[i];
    if (pe != NULL)
        peer_learnt(n, pe, name, "");
    else
        pe = tr__peer_new(n, name, "");
    n->members_dirty = dirty;
    if (pe != NULL)
        pe->hidden = true;
    return pe;
}

/* Forgets a hidden peer that went: inert, its slot reusable (lock held). */
static void hidden_forget(peer *pe)
{
    pe->alias = true;
    pe->name[0] = '\0';
}

/* Learns that node `name` listens at `addr` (from a HELLO: direct, or a MEMBERS frame). */
void tr__peer_learn(tr_node *n, const char *name, const char *addr, bool direct)
{
    if (name[0] == '\0' || strcmp(name, n->name) == 0 || addr[0] == '\0')
        return;
    left_entry *gone = left_find(n, name);
    if (gone != NULL) {
        if (!direct)
            return; /* a peer that has not heard of its leave yet: not brought back by it */
        gone->name[0] = '\0'; /* it connected to us: it is back */
    }
    peer *pe = tr__peer_by_name(n, name);
    if (pe == NULL) {
        pe = tr__peer_by_addr(n, addr);
        if (pe != NULL && pe->name[0] == '\0')
            snprintf(pe->name, sizeof pe->name, "%s", name); /* a seed says who it is */
        else if (pe == NULL)
            tr__peer_new(n, name, addr);
        return;
    }
    if (strcmp(pe->addr, addr) != 0 && pe->status != TR_PEER_UP) {
        snprintf(pe->addr, sizeof pe->addr, "%s", addr); /* restarted elsewhere */
        n->members_dirty = true;
    }
}

/* ---- peers going down and coming up -------------------------------------------------------- */

static bool pid_on_node(void *arg, tr_pid pid)
{
    return tr_pid_node(pid) == *(const uint16_t *)arg;
}

/* Down (left: false) or left (true). */
static void peer_down(tr_node *n, peer *pe, after *af, bool left)
{
    if (pe->status == TR_PEER_UP || pe->joining) {
        if (atomic_load(&n->by_id[pe->node_id]) == pe)
            atomic_store(&n->by_id[pe->node_id], NULL);
        af->down = true;
        /* they were told it was up (never of a hidden peer) */
        af->down_watchers = pe->status == TR_PEER_UP && !pe->hidden;
        af->left = left;
        snprintf(af->name, sizeof af->name, "%s", pe->name);
        af->node_id = pe->node_id;
        af->interest = pe->interest; /* the notified take it over */
        tr__idmap_init(&pe->interest);
        if (pe->hidden) {
            tr__node_log_at(n, TR_LOG_DEBUG, "hidden node %s (node id %u) %s", pe->name,
                            pe->node_id, left ? "left" : "went away");
        } else if (left) {
            count(&n->peers_left, 1);
            tr__node_log(n, "peer %s (node id %u) left", pe->name, pe->node_id);
        } else if (pe->status == TR_PEER_UP && !n->leaving) {
            /* (while this node leaves, its peers closing their connections is their answer to
             * its LEAVE: tr_node_stop says how many answered) */
            count(&n->peers_down, 1);
            tr__node_log(n, "peer %s (node id %u) is down (at %llu ms of the monotonic clock)", pe->name,
                         pe->node_id, (unsigned long long)(tr__now_ns() / 1000000u));
        }
        pe->status = TR_PEER_DOWN;
        pe->joining = false;
        /* its names are released here, under the lock, so no name it registers once it is
         * back can be swept by this down: a sweep left for later (it used to run once the lock
         * was released) could remove names merged meanwhile from a reconnection the peer saw as
         * nothing but "up", and it never sent them again (issue 20: a node thawed after a freeze
         * answered 503 for every SKU of a peer whose router it no longer knew) */
        uint16_t gone = pe->node_id;
        pthread_mutex_lock(&n->names_lock);
        tr__namemap_sweep(&n->names, pid_on_node, &gone);
        pthread_mutex_unlock(&n->names_lock);
    }
    conn *o = pe->out_conn, *i = pe->in_conn;
    pe->out_conn = pe->in_conn = NULL;
    tr__conn_mark_dead(o);
    tr__conn_mark_dead(i);
    if (!pe->dialing && pe->next_dial_ns < tr__now_ns() + (uint64_t)pe->backoff_ms * 1000000u) {
        pe->next_dial_ns = tr__now_ns() + (uint64_t)pe->backoff_ms * 1000000u;
        pe->backoff_ms = pe->backoff_ms * 2 > n->backoff_max_ms ? n->backoff_max_ms
                                                                 : pe->backoff_ms * 2;
    }
    if (af->nkick < 2)
        af->kick[af->nkick++] = pe; /* the writer turns what is queued into dead letters */
    tr__node_wake(n);
}

void tr__peer_down_locked(tr_node *n, peer *pe, after *af)
{
    peer_down(n, pe, af, false);
    if (pe->hidden)
        hidden_forget(pe);
}

void tr__peer_left_locked(tr_node *n, peer *pe, after *af)
{
    if (pe->hidden) {
        peer_down(n, pe, af, true);
        hidden_forget(pe);
        return;
    }
    if (pe->name[0] != '\0')
        left_remember(n, pe->name, pe->addr, pe->node_id);
    peer_down(n, pe, af, true);
    pe->failing = false;
    pe->ever_up = false;
    if (pe->seed) {
        /* a seed's address is configuration: the node there may come back (a cluster whose only
         * seed restarts would stay split otherwise), so it is dialed as a seed not yet reached,
         * at the slowest pace */
        pe->name[0] = '\0';
        pe->backoff_ms = n->backoff_max_ms;
        pe->next_dial_ns = tr__now_ns() + (uint64_t)n->backoff_max_ms * 1000000u;
    } else {
        pe->alias = true; /* inert: never dialed, its slot reusable once idle (peer_reusable) */
        pe->name[0] = '\0';
        pe->addr[0] = '\0';
    }
    n->members_dirty = true;
}

/* NODEUP, NODE_ID_TAKEN, or NODEDOWN with its `left` item, to the k watchers in w. */
static void notify(tr_node *n, const tr_pid *w, size_t k, uint32_t type, const char *name,
                   uint16_t id, bool left)
{
    for (size_t i = 0; i < k; i++) {
        tr_msg *m = tr_msg_new(type, 80);
        if (m == NULL)
            return;
        msgpack_packer *pk = tr_msg_packer(m);
        size_t nl = strlen(name);
        msgpack_pack_str(pk, nl);
        msgpack_pack_str_body(pk, name, nl);
        msgpack_pack_uint64(pk, id);
        if (type == TR_MSG_NODEDOWN)
            msgpack_pack_uint64(pk, left ? 1 : 0);
        m->flags = TR_MF_SYSTEM;
        m->corr = id;
        tr__deliver(n->sys, NULL, w[i], m);
    }
}

static void notify_watchers(tr_node *n, uint32_t type, const char *name, uint16_t id, bool left)
{
    tr_pid w[NODE_MAX_WATCHERS];
    pthread_mutex_lock(&n->lock);
    size_t k = n->nwatchers;
    memcpy(w, n->watchers, k * sizeof *w);
    pthread_mutex_unlock(&n->lock);
    notify(n, w, k, type, name, id, left);
}

void tr__node_after_run(tr_node *n, after *af)
{
    for (int i = 0; i < af->nkick; i++)
        tr__peer_kick(af->kick[i]);
    if ((af->down || af->up) && tr__ext_enter(n->sys) == TR_OK) {
        if (af->down) {
            tr_idmap *m = &af->interest;
            for (size_t i = 0; i < m->cap; i++)
                if (m->keys[i] != 0)
                    tr__signal(n->sys, NULL, TR_PID_NONE, (tr_pid)m->keys[i], TR_SIG_NODEDOWN,
                               af->node_id, NULL);
            if (af->down_watchers)
                notify_watchers(n, TR_MSG_NODEDOWN, af->name, af->node_id, af->left);
        }
        if (af->up) {
            notify_watchers(n, TR_MSG_NODEUP, af->name, af->node_id, false);
            /* it learns our names (none: nothing is sent); and if it was up before, we ask
             * for its own — we dropped them when it went down, and it may have seen nothing
             * but "up". The first time, it sends them itself when it sees us up: a cluster
             * without names opens no connection to every member as it forms (names.c) */
            tr_msg *m = n->hidden ? NULL : tr_msg_new(TR_MSG_NODE_SYNC, 8); /* a hidden node
                                                                               * keeps no names */
            if (m != NULL) {
                tr_msg_put_u64(m, af->node_id);
                tr_msg_put_u64(m, af->pull);
                tr__deliver(n->sys, NULL, n->service, m);
            }
        }
        tr__ext_leave(n->sys);
    }
    if (af->down)
        tr__idmap_free(&af->interest);
}

/* ---- the ticker: heartbeats, failure detection, dials, reaping ----------------------------- */

void tr__node_reap(tr_node *n)
{
    if (!atomic_exchange(&n->reap_pending, false))
        return; /* nothing marked dead since the last walk left none behind */
    conn *dead = NULL;
    bool held = false;
    pthread_mutex_lock(&n->lock);
    for (conn **pp = &n->conns; *pp != NULL;) {
        conn *c = *pp;
        if (c->dead && c->refs == 0) {
            *pp = c->next;
            n->nconns--;
            c->next = dead;
            dead = c;
        } else {
            if (c->dead) {
                nng_aio_cancel(c->tx); /* see tr__conn_mark_dead */
                held = true;           /* a writer still holds it: walk again next tick */
            }
            pp = &c->next;
        }
    }
    if (held)
        atomic_store(&n->reap_pending, true);
    pthread_mutex_unlock(&n->lock);
    while (dead != NULL) {
        conn *c = dead;
        dead = c->next;
        tr__conn_destroy(c);
    }
}

/* One tick (see tr__node_tick); returns the ns until the next. */
static uint64_t node_tick(tr_node *n)
{
    const uint64_t later = 1000000000u; /* stopping: the hook is about to be cleared */
    if (n->gossip != NULL && !n->stopping)
        tr__conn_poll(n); /* the beats the members we watch wrote on our connections (conn.c) */
    pthread_mutex_lock(&n->lock);
    if (n->stopping) {
        pthread_mutex_unlock(&n->lock);
        return later;
    }
    uint64_t now = tr__now_ns();
    conn *fail[16];
    int nfail = 0;
    peer *ping[NODE_MAX_PEERS];
    int nping = 0;
    if (now - n->last_tick_ns > n->down_ns / 2) {
        /* this node itself stood still (SIGSTOP, a VM pause, starved of CPU): its peers'
         * silence meanwhile is ours, not theirs. Each inbound connection gets down_after_ms
         * from now to speak (as Cassandra's detector ignores a local pause); a peer that did
         * go away shows by its closed connection, or stays silent past that. */
        tr__node_log(n,
                     "this node was paused for %llu ms: peers get %llu ms to be heard again "
                     "(at %llu ms of the monotonic clock)",
                     (unsigned long long)((now - n->last_tick_ns) / 1000000u),
                     (unsigned long long)(n->down_ns / 1000000u),
                     (unsigned long long)(now / 1000000u));
        for (conn *c = n->conns; c != NULL; c = c->next)
            atomic_store_explicit(&c->last_rx_ns, now, memory_order_relaxed);
    }
    n->last_tick_ns = now;
    /* With monitors the core says what is due and the walk over every peer and connection
     * below (handshake timeouts, hidden peers' pings, forgetting, idle connections) runs
     * only when something is in a hurry or every NODE_SWEEP_MS: at 100 idle nodes on
     * 2 cores the walk's cache misses, 20 times a second, were a third of the cluster's
     * idle CPU. Without monitors it runs at every tick, as the full mesh needs. */
    bool sweep = n->gossip == NULL || n->sweep_soon || now >= n->next_sweep_ns;
    if (sweep) {
        n->next_sweep_ns = now + (uint64_t)NODE_SWEEP_MS * 1000000u;
        n->sweep_soon = false;
    }
    /* silent or stuck connections */
    for (conn *c = sweep ? n->conns : NULL; c != NULL && nfail < 16; c = c->next) {
        if (c->dead)
            continue;
        uint64_t last = atomic_load_explicit(&c->last_rx_ns, memory_order_relaxed);
        if (c->state != C_UP)
            n->sweep_soon = true;
        if (c->state != C_UP && now - c->born_ns > (uint64_t)NODE_HANDSHAKE_MS * 1000000u)
            fail[nfail++] = c;
        else if (c->state == C_UP && (!c->outbound || c->duplex) && now > last &&
                 now - last > n->down_ns && (n->gossip == NULL || c->duplex))
            /* (with monitors the core watches who is silent: an inbound connection is quiet
             * whenever its dialer has nothing to send) */
            fail[nfail++] = c;
    }
    for (size_t i = 0; sweep && i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (pe->alias)
            continue;
        if (pe->joining || pe->hidden)
            n->sweep_soon = true;
        if (pe->joining && now - pe->joining_ns > n->down_ns + NODE_HANDSHAKE_MS * 1000000ull &&
            nfail < 16 && pe->in_conn != NULL) {
            fail[nfail++] = pe->in_conn; /* we cannot reach it back: it is down for us */
        } else if (n->gossip != NULL && !pe->hidden) {
            continue; /* monitors: the core pings, gossips and dials (nodegossip.c) */
        } else if (pe->status == TR_PEER_UP) {
            if (n->members_dirty && !pe->hidden && !n->hidden)
                tr__peer_ctl_queue(n, pe, TR_WIRE_MEMBERS);
            else if (now - atomic_load(&pe->last_tx_ns) >= n->hb_ns)
                tr__peer_ctl_queue(n, pe, TR_WIRE_PING);
            if (atomic_load(&pe->ctl_pending))
                ping[nping++] = pe;
        } else if (pe->out_conn == NULL && !pe->dialing && now >= pe->next_dial_ns &&
                   !n->leaving && !pe->hidden) {
            tr__node_dial_start(n, pe);
        }
    }
    if (sweep)
        tr__peer_forget_stale(n, now);
    n->members_dirty = false;
    tr__ng_tick_locked(n, now, sweep);
    pthread_mutex_unlock(&n->lock);
    tr__ng_flush(n);
    tr__conn_beats_flush(n);
    for (int i = 0; i < nfail; i++)
        tr__conn_fail(fail[i], fail[i]->state != C_UP ? "handshake timeout"
                           : fail[i]->pe != NULL && fail[i]->pe->joining
                               ? "cannot connect back to it"
                               : "silent for too long");
    for (int i = 0; i < nping; i++)
        tr__peer_kick(ping[i]);
    tr__node_reap(n);
    pthread_mutex_lock(&n->lock);
    if (n->stopping) {
        pthread_mutex_unlock(&n->lock);
        return later;
    }
    uint64_t tick = n->hb_ns / 4 < 50000000u ? n->hb_ns / 4 : 50000000u;
    if (n->gossip != NULL) {
        /* monitors: sleep until the core has something due (its heartbeat, a watched
         * member's deadline, a gossip round) or the walk is (hidden peers' pings and
         * handshakes: heartbeat_ms / 2; else NODE_SWEEP_MS), at most down_after_ms / 4 and
         * at least 1 ms */
        uint64_t due = tr__gossip_next_ms(n->gossip) * 1000000u, at = tr__now_ns();
        if (n->sweep_soon && n->next_sweep_ns > at + n->hb_ns / 2)
            n->next_sweep_ns = at + n->hb_ns / 2;
        if (n->sweep_soon && n->next_sweep_ns < due)
            due = n->next_sweep_ns; /* else the walk rides on the core's next tick */
        tick = due > at ? due - at : 0;
        if (tick > n->down_ns / 4)
            tick = n->down_ns / 4; /* a longer sleep would read as this node's own pause */
        if (tick < 1000000u)
            tick = 1000000u;
    }
    pthread_mutex_unlock(&n->lock);
    return tick;
}

static _Thread_local bool tls_in_tick; /* this thread runs tr__node_tick now: it never wakes
                                       * itself (tr__node_wake) */

/* Tells the watchers, once, that the cluster refuses this node for its id (id_claim found it
 * under the node's lock; watchers are told outside it, as every notification is). */
static void tell_id_taken(tr_node *n)
{
    char holder[TR_WIRE_NAME_MAX + 1];
    tr_pid w[NODE_MAX_WATCHERS];
    pthread_mutex_lock(&n->lock);
    if (n->id_taken_told) {
        pthread_mutex_unlock(&n->lock);
        return;
    }
    n->id_taken_told = true; /* with the list copied: a watcher added later is told by
                              * tr_node_monitor, one added before by this, none twice */
    size_t k = n->nwatchers;
    memcpy(w, n->watchers, k * sizeof *w);
    memcpy(holder, n->id_holder, sizeof holder);
    pthread_mutex_unlock(&n->lock);
    if (tr__ext_enter(n->sys) == TR_OK) {
        notify(n, w, k, TR_MSG_NODE_ID_TAKEN, holder, n->id, false);
        tr__ext_leave(n->sys);
    }
}

uint64_t tr__node_tick(void *arg)
{
    tr_node *n = arg;
    tls_in_tick = true;
    if (atomic_load_explicit(&n->id_taken, memory_order_relaxed))
        tell_id_taken(n);
    uint64_t next = node_tick(n);
    tls_in_tick = false;
    return next;
}

void tr__node_wake(tr_node *n)
{
    pthread_cond_broadcast(&n->cond); /* tr_node_stop's and leave's waits */
    /* the tick, unless it is the caller: a tick that poked itself (a connection it failed, a
     * peer it took down) ran again at once, and again — at 100 nodes on 2 cores, after a kill,
     * enough to starve nodes for 500-1,000 ms and take them down (647 transient downs in a
     * drill, against 22-146 with the ticker's own thread, whose broadcasts to itself were lost) */
    if (!tls_in_tick)
        tr__timer_hook_poke(n->sys);
}

/* ---- links and monitors across nodes ------------------------------------------------------- */

/* The node, kept from being freed until node_leave (NULL: none). */
static tr_node *node_enter(tr_system *sys)
{
    atomic_fetch_add(&sys->node_users, 1);
    tr_node *n = atomic_load(&sys->node);
    if (n == NULL)
        atomic_fetch_sub(&sys->node_users, 1);
    return n;
}

static void node_leave(tr_system *sys)
{
    atomic_fetch_sub(&sys->node_users, 1);
}

int tr__node_interest(tr_system *sys, uint16_t node_id, tr_pid local)
{
    tr_node *n = node_enter(sys);
    if (n == NULL)
        return TR_ENOPROC;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&n->lock);
    peer *pe = atomic_load(&n->by_id[node_id]);
    if (pe != NULL && (pe->status == TR_PEER_UP || pe->joining))
        rc = tr__idmap_put(&pe->interest, local, 1);
    pthread_mutex_unlock(&n->lock);
    node_leave(sys);
    return rc;
}

void tr__node_forget(tr_system *sys, tr_pid local)
{
    tr_node *n = node_enter(sys);
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++)
        tr__idmap_del(&n->peers[i]->interest, local, NULL);
    pthread_mutex_unlock(&n->lock);
    node_leave(sys);
}

/* ---- public API: peers, watchers ----------------------------------------------------------- */

int tr_node_peers(tr_node *n, tr_peer_info *out, size_t cap, size_t *countp)
{
    if (n == NULL || (out == NULL && cap > 0))
        return TR_EINVAL;
    size_t k = 0;
    uint64_t now = tr__now_ns();
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (pe->alias || pe->hidden)
            continue;
        if (k < cap) {
            tr_peer_info *p = &out[k];
            snprintf(p->name, sizeof p->name, "%s", pe->name);
            snprintf(p->address, sizeof p->address, "%s", pe->addr);
            p->node_id = pe->node_id;
            p->status = (tr_peer_status)pe->status;
            if (pe->status == TR_PEER_UP && n->gossip != NULL && pe->gsuspect)
                p->status = TR_PEER_SUSPECT;
            else if (pe->status == TR_PEER_UP && n->gossip == NULL && pe->in_conn != NULL &&
                     now - atomic_load(&pe->in_conn->last_rx_ns) > 2 * n->hb_ns)
                p->status = TR_PEER_SUSPECT;
        }
        k++;
    }
    for (size_t i = 0; i < NODE_MAX_LEFT; i++) {
        const left_entry *e = &n->left[i];
        if (e->name[0] == '\0')
            continue;
        if (k < cap) {
            tr_peer_info *p = &out[k];
            snprintf(p->name, sizeof p->name, "%s", e->name);
            snprintf(p->address, sizeof p->address, "%s", e->addr);
            p->node_id = e->node_id;
            p->status = TR_PEER_LEFT;
        }
        k++;
    }
    pthread_mutex_unlock(&n->lock);
    if (countp != NULL)
        *countp = k;
    return TR_OK;
}

int tr_node_lookup(tr_node *n, const char *name, uint16_t *node_id)
{
    if (n == NULL || name == NULL || node_id == NULL)
        return TR_EINVAL;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&n->lock);
    peer *pe = tr__peer_by_name(n, name);
    if (pe != NULL && pe->status == TR_PEER_UP) {
        *node_id = pe->node_id;
        rc = TR_OK;
    } else if (strcmp(name, n->name) == 0) {
        *node_id = n->id;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

int tr_node_wait_peer(tr_node *n, const char *name, unsigned timeout_ms, uint16_t *node_id)
{
    if (n == NULL || name == NULL || node_id == NULL)
        return TR_EINVAL;
    uint64_t deadline = tr__now_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc;
    pthread_mutex_lock(&n->lock);
    for (;;) {
        peer *pe = tr__peer_by_name(n, name);
        if ((pe != NULL && pe->status == TR_PEER_UP) || strcmp(name, n->name) == 0) {
            *node_id = pe != NULL && pe->status == TR_PEER_UP ? pe->node_id : n->id;
            rc = TR_OK;
            break;
        }
        uint64_t now = tr__now_ns();
        if (n->stopping || now >= deadline) {
            rc = n->stopping ? TR_ESTOPPED : TR_ETIMEDOUT;
            break;
        }
        /* a peer coming up broadcasts n->cond (conn.c); the condition variable's clock is the
         * wall clock, so each wait is short (100 ms at most) and the deadline is on ours */
        uint64_t wait_ns = deadline - now < 100000000u ? deadline - now : 100000000u;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(wait_ns / 1000000000u);
        ts.tv_nsec += (long)(wait_ns % 1000000000u);
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

int tr_node_monitor(tr_node *n, tr_pid watcher, bool on)
{
    if (n == NULL || watcher == TR_PID_NONE)
        return TR_EINVAL;
    int rc = TR_OK;
    bool tell = false; /* a new watcher of a node whose id the cluster already refused */
    char holder[TR_WIRE_NAME_MAX + 1];
    pthread_mutex_lock(&n->lock);
    size_t i;
    for (i = 0; i < n->nwatchers && n->watchers[i] != watcher; i++)
        ;
    if (on && i == n->nwatchers) {
        if (i == NODE_MAX_WATCHERS) {
            rc = TR_ENOMEM;
        } else {
            n->watchers[n->nwatchers++] = watcher;
            if ((tell = n->id_taken_told))
                memcpy(holder, n->id_holder, sizeof holder);
        }
    } else if (!on && i < n->nwatchers) {
        n->watchers[i] = n->watchers[--n->nwatchers];
    }
    pthread_mutex_unlock(&n->lock);
    if (tell && tr__ext_enter(n->sys) == TR_OK) {
        notify(n, &watcher, 1, TR_MSG_NODE_ID_TAKEN, holder, n->id, false);
        tr__ext_leave(n->sys);
    }
    return rc;
}
