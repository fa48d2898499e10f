/*
 * nodegossip.c — partial monitoring in real nodes (issue 22, step 3): with tr_node_opts.monitors
 * > 0 a node's membership and failure detection are the gossip core's (gossip.c, the same code
 * `troupe-bench membership-sim` runs 10,000 times over) instead of the full mesh of members.c.
 *
 *   - The ticker drives the core (tr__ng_tick_locked, every heartbeat_ms / 4 at most 50 ms); the
 *     core's messages travel in GOSSIP frames (wire.h, kind 7) on the sender's outbound
 *     connection, like any control frame; MEMBERS and PING frames are not sent.
 *   - A peer is up (routable, NODEUP to watchers, names synced) when the core says it is alive
 *     (or suspect), and down or left (NODEDOWN, names swept, links and monitors broken with
 *     noconnection, queued messages dead letters) when the core says so — not when a connection
 *     opens or breaks. A connection we dialed that breaks, or a dial that fails, is reported to
 *     the core (tr__gossip_unreachable: the member is suspect at once, down 400 ms later unless
 *     it refutes); a dial refused (nothing listens there any more) makes a watcher declare it
 *     down at once (tr__gossip_refused): that is how a kill -9 shows within half a second.
 *   - Connections are lazy: a node dials a peer when something is queued for it (a message, or
 *     the core's ping, ack or gossip), and keeps one to each of its K watched members (their
 *     beats come in on it: conn.c, "Beats"), to each of its K watchers and to each of its
 *     fingers (the core's gossip partners: log2(N / K) of them); any other connection it
 *     dialed that carried nothing for idle_close_ms is closed.
 *     Inbound connections are kept until their dialer closes them.
 *   - Seeds: the core joins through the first seed that answers; then every reconnect_max_ms a
 *     seed address where no member is up is sent a JOIN again (a seed that left and comes back
 *     at its address, or a node of another cluster: the two merge), as the mesh redials seeds.
 *   - Leaving: tr_node_stop gossips "left" and waits (leave_ms at most) until the core has sent
 *     it as often as it sends any change; peers take it as today's LEAVE (TR_PEER_LEFT, NODEDOWN
 *     with left = 1).
 *
 * Locking: the core is called with n->lock held; its callbacks (send, event) run inside those
 * calls, so they only queue: frames on the peer's control buffer (its writer kicked once the lock
 * is released) and the NODEUP / NODEDOWN work as `after` records, run by tr__ng_flush unlocked.
 */
#include "gossip.h"
#include "node_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ng_after {
    struct ng_after *next;
    after af;
} ng_after;

static uint64_t now_ms(void)
{
    return tr__now_ns() / 1000000u;
}

/* A record for the work an event leaves (lock held); NULL when memory is short. */
static after *after_new(tr_node *n)
{
    ng_after *a = calloc(1, sizeof *a);
    if (a == NULL) {
        tr__node_log(n, "out of memory: a membership change is not told to watchers");
        return NULL;
    }
    *n->gaf_tail = a;
    n->gaf_tail = &a->next;
    return &a->af;
}

/* The peer a core message goes to: by name, else by address (a seed not yet named, or a member
 * that moved), else a new one (for a member that left, only if `create`: it is back). NULL when
 * the table is full. Lock held. */
static peer *peer_for(tr_node *n, const char *name, const char *addr, bool create)
{
    peer *pe = name[0] != '\0' ? tr__peer_by_name(n, name) : NULL;
    if (pe == NULL && !create && name[0] != '\0' && tr__left_known(n, name))
        return NULL; /* it left (a seed's entry lost its name then): a send to it now gave that
                      * entry its name back, listed as down beside the left list's "left" */
    if (pe == NULL && addr[0] != '\0') {
        pe = tr__peer_by_addr(n, addr);
        if (pe != NULL && name[0] != '\0' && strcmp(pe->name, name) != 0) {
            if (pe->name[0] == '\0' || pe->status != TR_PEER_UP)
                snprintf(pe->name, sizeof pe->name, "%s", name); /* a seed says who it is */
            else
                pe = NULL;
        }
        if (pe == NULL && name[0] != '\0' && (create || !tr__left_known(n, name)))
            pe = tr__peer_new(n, name, addr);
    }
    if (pe != NULL && addr[0] != '\0' && strcmp(pe->addr, addr) != 0 && pe->out_conn == NULL &&
        !pe->dialing)
        snprintf(pe->addr, sizeof pe->addr, "%s", addr); /* restarted elsewhere */
    return pe;
}

static void core_send(void *arg, const char *name, const char *addr, const void *msg, size_t len)
{
    tr_node *n = arg;
    peer *pe = peer_for(n, name, addr, false);
    if (pe == NULL || pe->hidden)
        return; /* no room: gossip is lossy, the core sends again */
    if (n->tls == NULL && tr__gossip_is_beat(msg, len)) {
        /* the ticker writes it on the connection this watcher dialed to us (conn.c, "Beats") */
        tr_wire_buf *b = &n->beatbuf;
        b->len = 0;
        b->oom = 0;
        size_t f = tr__wire_frame_begin(b, TR_WIRE_GOSSIP);
        tr__wire_put_raw(b, msg, len);
        tr__wire_frame_end(b, f);
        if (tr__wire_status(b) == TR_OK && b->len <= NODE_BEAT_MAX) {
            memcpy(pe->beat, b->data, b->len);
            pe->beat_len = (uint16_t)b->len;
            if (!pe->beat_listed && n->nbeats < NODE_MAX_PEERS) {
                pe->beat_listed = true;
                n->beats[n->nbeats++] = pe;
            }
            return;
        }
    }
    (void)tr__peer_ctl_append(pe, TR_WIRE_GOSSIP, msg, len); /* full: gossip is lossy */
    if (!pe->gkick && n->ngkick < NODE_MAX_PEERS) {
        pe->gkick = true;
        n->gkick[n->ngkick++] = pe;
    }
}

/* Two members with one node id (random 16-bit ids clash: a 7% chance among 100 nodes): the one
 * at the lower incarnation (it started first: an incarnation is its start time in ms, raised by
 * one per refutation), then the lower name, keeps it — every node decides alike, whatever it
 * heard first. True: a starts first. */
static bool starts_first(uint64_t inc_a, const char *a, uint64_t inc_b, const char *b)
{
    return inc_a != inc_b ? inc_a < inc_b : strcmp(a, b) < 0;
}

/* Whether member m may be up under its node id (lock held): not if this node or an earlier
 * member has it. A later holder is taken down here (refused from now on, as everywhere); this
 * node, the later one, says so once and counts it (tr_node_stats.id_taken): the cluster refuses
 * it, and whoever runs it restarts it with another id (troupe-node exits with status 3). */
static bool id_claim(tr_node *n, const tr_gossip_member *m, peer *pe)
{
    if (m->node_id == 0)
        return false;
    if (m->node_id == n->id) {
        if (starts_first(m->incarnation, m->name, tr__gossip_incarnation(n->gossip), n->name) &&
            !atomic_load(&n->id_taken)) {
            snprintf(n->id_holder, sizeof n->id_holder, "%s", m->name);
            atomic_store(&n->id_taken, true); /* the next tick tells the watchers */
            tr__node_log_at(n, TR_LOG_ERROR,
                            "node id %u is also %s's, which started first: the cluster refuses "
                            "this node; start it again with another node id",
                            m->node_id, m->name);
        } else if (!atomic_load(&n->id_taken))
            tr__node_log(n, "peer %s uses node id %u, this node's (it started first): refused",
                         m->name, m->node_id);
        return false;
    }
    peer *holder = atomic_load(&n->by_id[m->node_id]);
    if (holder == NULL || holder == pe)
        return true;
    if (!starts_first(m->incarnation, m->name, holder->ginc, holder->name)) {
        tr__node_log(n, "peer %s uses node id %u, %s's (it started first): refused", m->name,
                     m->node_id, holder->name);
        return false;
    }
    tr__node_log(n, "peer %s started before %s, which has its node id %u: %s is refused",
                 m->name, holder->name, m->node_id, holder->name);
    after *af = after_new(n);
    if (af == NULL)
        return false;
    tr__peer_down_locked(n, holder, af);
    return atomic_load(&n->by_id[m->node_id]) == NULL;
}

/* The core's decisions, in the node's log (lock held). */
static void core_note(void *arg, const char *line)
{
    tr__node_log(arg, "%s (at %llu ms of the monotonic clock)", line,
                 (unsigned long long)now_ms()); /* (lines of nodes on one host line up) */
}

static void core_event(void *arg, const tr_gossip_member *m, int old)
{
    (void)old;
    tr_node *n = arg;
    if (strcmp(m->name, n->name) == 0)
        return;
    bool live = m->state == TR_GOSSIP_ALIVE || m->state == TR_GOSSIP_SUSPECT;
    peer *pe = live ? peer_for(n, m->name, m->addr, true) : tr__peer_by_name(n, m->name);
    if (pe == NULL) {
        if (live)
            tr__node_log(n, "no room in the peer table for member %s", m->name);
        return;
    }
    if (pe->hidden)
        return;
    pe->gsuspect = m->state == TR_GOSSIP_SUSPECT;
    if (live) {
        if (pe->status == TR_PEER_UP && pe->node_id == m->node_id)
            return; /* alive <-> suspect: still up */
        after *af = after_new(n);
        if (af == NULL)
            return;
        if (pe->status == TR_PEER_UP)
            tr__peer_down_locked(n, pe, af); /* restarted (a new node id) before we noticed */
        if (!id_claim(n, m, pe))
            return;
        tr__left_clear(n, pe->name);
        pe->ginc = m->incarnation;
        pe->node_id = m->node_id;
        pe->status = TR_PEER_UP;
        af->pull = pe->ever_up;
        pe->ever_up = true;
        pe->backoff_ms = n->backoff_min_ms;
        pe->next_dial_ns = 0;
        count(&pe->ups, 1);
        atomic_store(&n->by_id[pe->node_id], pe);
        af->up = true;
        snprintf(af->name, sizeof af->name, "%s", pe->name);
        af->node_id = pe->node_id;
        if (af->nkick < 2)
            af->kick[af->nkick++] = pe;
        tr__node_log(n, "peer %s (node id %u) is up (at %llu ms of the monotonic clock)", pe->name,
                     pe->node_id, (unsigned long long)(tr__now_ns() / 1000000u));
        tr__node_wake(n);
    } else if (pe->status == TR_PEER_UP) {
        after *af = after_new(n);
        if (af == NULL)
            return;
        if (m->state == TR_GOSSIP_LEFT)
            tr__peer_left_locked(n, pe, af);
        else
            tr__peer_down_locked(n, pe, af);
    }
}

int tr__ng_start(tr_node *n, const tr_node_opts *o)
{
    n->gaf_tail = &n->gaf_head;
    if (o->monitors == 0 || n->hidden)
        return TR_OK;
    if (o->monitors > TR_GOSSIP_MONITORS_MAX)
        return TR_EINVAL;
    n->monitors = o->monitors;
    n->idle_close_ns = (uint64_t)(o->idle_close_ms ? o->idle_close_ms : 10000) * 1000000u;
    const char *seeds[64];
    size_t ns = 0;
    for (size_t i = 0; i < o->nseeds && ns < 64; i++)
        if (strcmp(o->seeds[i], n->addr) != 0 && strcmp(o->seeds[i], o->listen) != 0)
            seeds[ns++] = o->seeds[i];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* above any earlier incarnation of this name */
    tr_gossip_opts go = {
        .name = n->name,
        .addr = n->addr,
        .node_id = n->id,
        .incarnation = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u,
        .monitors = o->monitors,
        .heartbeat_ms = (unsigned)(n->hb_ns / 1000000u),
        .down_after_ms = (unsigned)(n->down_ns / 1000000u),
        .forget_ms = (unsigned)(n->forget_ns / 1000000u),
        .max_members = NODE_MAX_PEERS,
        .seeds = seeds,
        .nseeds = ns,
        .send = core_send,
        .event = core_event,
        .note = n->quiet ? NULL : core_note,
        .arg = n,
    };
    pthread_mutex_lock(&n->lock);
    int rc = tr__gossip_new(&go, now_ms(), &n->gossip);
    pthread_mutex_unlock(&n->lock);
    return rc;
}

void tr__ng_free(tr_node *n)
{
    tr__wire_buf_free(&n->beatbuf);
    if (n->gossip != NULL)
        tr__gossip_free(n->gossip);
    n->gossip = NULL;
    ng_after *a = n->gaf_head;
    while (a != NULL) {
        ng_after *next = a->next;
        if (a->af.down)
            tr__idmap_free(&a->af.interest);
        free(a);
        a = next;
    }
    n->gaf_head = NULL;
    n->gaf_tail = &n->gaf_head;
}

void tr__ng_flush(tr_node *n)
{
    if (n->gossip == NULL)
        return;
    peer *kick[NODE_MAX_PEERS];
    pthread_mutex_lock(&n->lock);
    ng_after *a = n->gaf_head;
    n->gaf_head = NULL;
    n->gaf_tail = &n->gaf_head;
    size_t k = n->ngkick;
    for (size_t i = 0; i < k; i++) {
        kick[i] = n->gkick[i];
        kick[i]->gkick = false;
    }
    n->ngkick = 0;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < k; i++)
        tr__peer_kick(kick[i]);
    while (a != NULL) {
        ng_after *next = a->next;
        tr__node_after_run(n, &a->af);
        free(a);
        a = next;
    }
}

int tr__ng_receive(tr_node *n, conn *c, const uint8_t *frame, size_t len)
{
    if (len < TR_WIRE_HEADER)
        return TR_EBADMSG;
    pthread_mutex_lock(&n->lock);
    int rc = TR_OK;
    bool due = false;
    if (n->gossip != NULL && !n->stopping) {
        uint64_t now = now_ms();
        rc = tr__gossip_receive(n->gossip, now, c->ph.name, frame + TR_WIRE_HEADER,
                                len - TR_WIRE_HEADER);
        /* news to pass on (a member down, a refutation) whose gossip round is due: the tick,
         * asleep until its next beat, runs now — each hop of the epidemic waited up to a
         * heartbeat for the next tick of the node it reached (a freeze seen by all 100 nodes
         * 0.4-0.7 s after its watcher's verdict on a slow host) */
        due = tr__gossip_next_ms(n->gossip) <= now;
    }
    pthread_mutex_unlock(&n->lock);
    tr__ng_flush(n);
    if (due)
        tr__node_wake(n);
    return rc;
}

void tr__ng_unreachable_locked(tr_node *n, peer *pe, bool refused)
{
    if (n->gossip == NULL || n->stopping || n->leaving || pe->hidden || pe->alias ||
        pe->name[0] == '\0')
        return;
    if (refused)
        tr__gossip_refused(n->gossip, now_ms(), pe->name);
    else
        tr__gossip_unreachable(n->gossip, now_ms(), pe->name);
}

bool tr__ng_watches_locked(tr_node *n, const char *name)
{
    if (n->gossip == NULL)
        return false;
    tr_gossip_member w[TR_GOSSIP_MONITORS_MAX];
    size_t k = tr__gossip_watched(n->gossip, w, TR_GOSSIP_MONITORS_MAX);
    for (size_t i = 0; i < k; i++)
        if (strcmp(w[i].name, name) == 0)
            return true;
    return false;
}

void tr__ng_tick_locked(tr_node *n, uint64_t now, bool sweep)
{
    if (n->gossip == NULL)
        return;
    tr__gossip_tick(n->gossip, now / 1000000u);
    if (!sweep)
        return; /* the walks below are the ticker's sweep (members.c) */
    /* the members this node watches beat to it on the connections it dialed to them (conn.c,
     * "Beats"): each one is dialed, and kept however idle. So is one to each member that
     * watches this node: its beats go on the watcher's connection, but its acks, refutations
     * and gossip the usual way, and a dial for them when they are due (a watcher's ping after a
     * ring change) came too late on a busy host — the watcher took the member down. And one to
     * each finger: the core gossips to these partners (gossip.c, partners()), so a change
     * travels over connections already open — a dial per hop made a freeze seen by all 100
     * nodes 0.9 s after the verdict on a slow host, against 0.2 s with connections kept */
    tr_gossip_member w[TR_GOSSIP_PARTNERS_MAX];
    peer *watched[TR_GOSSIP_PARTNERS_MAX];
    size_t nw = tr__gossip_partners(n->gossip, w, TR_GOSSIP_PARTNERS_MAX), nwp = 0;
    for (size_t i = 0; i < nw; i++) {
        peer *pe = tr__peer_by_name(n, w[i].name);
        if (pe == NULL || pe->hidden || pe->status != TR_PEER_UP)
            continue;
        watched[nwp++] = pe;
        if (n->tls == NULL && pe->out_conn == NULL && !pe->dialing && !n->leaving &&
            now >= pe->next_dial_ns)
            tr__node_dial_start(n, pe);
    }
    if (now >= n->next_seed_join_ns && tr__gossip_joined(n->gossip)) {
        /* a seed's address is configuration, as in the full mesh: one where no member is up (the
         * node there left and may come back, or it belongs to another cluster to merge with) is
         * sent a JOIN every reconnect_max_ms */
        n->next_seed_join_ns = now + (uint64_t)n->backoff_max_ms * 1000000u;
        for (size_t i = 0; i < n->npeers; i++) {
            peer *pe = n->peers[i];
            if (!pe->seed || pe->hidden || pe->addr[0] == '\0')
                continue;
            peer *at = tr__peer_by_addr(n, pe->addr);
            if (at == NULL || at->status != TR_PEER_UP)
                tr__gossip_join(n->gossip, pe->addr);
        }
    }
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        conn *c = pe->out_conn;
        if (c == NULL || c->dead || c->state != C_UP || c->refs > 0 || c->duplex ||
            atomic_load(&pe->qlen) > 0 || atomic_load(&pe->ctl_pending) ||
            atomic_load(&pe->tx_busy))
            continue;
        bool beats_here = false;
        for (size_t j = 0; j < nwp; j++)
            beats_here |= watched[j] == pe;
        if (beats_here)
            continue; /* a partner: a member it watches (its beats come in on it), a watcher, a
                       * finger: kept */
        uint64_t last = atomic_load(&pe->last_tx_ns);
        if (last < c->born_ns)
            last = c->born_ns;
        if (now > last && now - last > n->idle_close_ns) {
            pe->out_conn = NULL; /* closed by us: not a loss, nothing told to the core */
            tr__conn_mark_dead(c);
        }
    }
}

bool tr__ng_lazy_dial_locked(tr_node *n, peer *pe)
{
    if (n->gossip == NULL || n->stopping || n->leaving || pe->hidden || pe->alias ||
        pe->addr[0] == '\0')
        return false;
    if (pe->dialing)
        return true;
    if (pe->status != TR_PEER_UP && !atomic_load(&pe->ctl_pending))
        return false; /* messages for a peer that is not up: dead letters */
    if (tr__now_ns() < pe->next_dial_ns)
        return false; /* its last dial failed: nothing to wait for yet */
    tr__node_dial_start(n, pe);
    return pe->dialing;
}

void tr__ng_leave(tr_node *n)
{
    if (n->gossip == NULL)
        return;
    uint64_t start = tr__now_ns(), deadline = start + n->leave_ns;
    pthread_mutex_lock(&n->lock);
    tr__gossip_leave(n->gossip, now_ms());
    pthread_mutex_unlock(&n->lock);
    tr__ng_flush(n);
    /* the ticker keeps ticking the core: its gossip rounds carry the leave */
    for (;;) {
        pthread_mutex_lock(&n->lock);
        size_t queued = tr__gossip_queued(n->gossip);
        pthread_mutex_unlock(&n->lock);
        uint64_t now = tr__now_ns();
        if (queued == 0 || now >= deadline)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    }
    tr__node_log(n, "leaving the cluster: told by gossip in %llu ms",
                 (unsigned long long)((tr__now_ns() - start) / 1000000u));
}
