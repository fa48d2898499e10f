/*
 * node.c — a node: troupe's distribution over TCP (nng's stream API). This file holds its
 * lifecycle — tr_node_start (listener, ticker on the timer thread, node service, the transport
 * seam installed in the core), tr_node_stop, the public getters and counters; the node's parts are
 *
 *   conn.c     connections, the handshake, frames in and out, the writer that batches messages
 *   members.c  membership and failure detection, the ticker, links and monitors across nodes
 *   names.c    the node service: remote spawn, cluster-wide names, placement
 *   tls.c      TLS between nodes: the files, nng's TLS configs
 *   nodectl.c  the introspection service's view of the node, tr_node_ctl
 *
 * and node_impl.h the objects they share. The core never calls into this layer by name: it goes
 * through the table of operations tr_node_start installs (core/internal.h, tr__remote_ops), so a
 * program that links only troupe::core has no node layer and needs no nng.
 */
#include "gossip.h"
#include "node_impl.h"
#include "troupe/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static void node_vlog(const tr_node *n, tr_log_level level, const char *fmt, va_list ap)
{
    if (n->quiet)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    tr_log(level, "node", "%s: %s", n->name, line);
}

void tr__node_log(const tr_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    node_vlog(n, TR_LOG_INFO, fmt, ap);
    va_end(ap);
}

void tr__node_log_at(const tr_node *n, tr_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    node_vlog(n, level, fmt, ap);
    va_end(ap);
}

uint16_t tr_node_random_id(void)
{
    uint16_t v = 0;
    while (v < 2)
        if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
            v = (uint16_t)(tr__now_ns() ^ (tr__now_ns() >> 16));
    return v;
}

void tr__random_bytes(void *p, size_t len)
{
    if (getrandom(p, len, 0) != (ssize_t)len) {
        uint64_t t = tr__now_ns();
        memset(p, 0, len);
        memcpy(p, &t, len < sizeof t ? len : sizeof t);
    }
}

/* ---- public API: lifecycle ----------------------------------------------------------------- */

static void node_free(tr_node *n)
{
    tr__ng_free(n);
    if (n->by_id != NULL)
        free((void *)n->by_id);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        tr__peer_drop_queue(pe);
        tr__wire_buf_free(&pe->ctl);
        tr__idmap_free(&pe->interest);
        pthread_mutex_destroy(&pe->ctl_lock);
        free(pe);
    }
    if (n->secret != NULL) {
        memset(n->secret, 0, n->secret_len);
        free(n->secret);
    }
    tr__tls_free(n);
    tr__namemap_free(&n->names);
    pthread_mutex_destroy(&n->names_lock);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
    free(n);
}

/* The node layer's side of the core's transport seam (internal.h). */
static const tr__remote_ops remote_ops = {
    .route = tr__node_route,
    .interest = tr__node_interest,
    .forget = tr__node_forget,
    .free = tr_node_stop, /* a node its user left running */
};

/* ---- metrics ------------------------------------------------------------------------------ */

/* The node's families in its system's registry (troupe/metrics.h; docs/observability.md). */
static void collect(void *user, tr_metrics_out *out)
{
    tr_node *n = user;
    static const struct {
        const char *name;
        tr_metric_type type;
        const char *help;
    } fams[] = {
        {"troupe_node_peer_up", TR_METRIC_GAUGE, "1 while the peer is up, else 0."},
        {"troupe_node_peer_messages_sent_total", TR_METRIC_COUNTER, "Messages sent to the peer."},
        {"troupe_node_peer_messages_received_total", TR_METRIC_COUNTER,
         "Messages received from the peer."},
        {"troupe_node_peer_bytes_sent_total", TR_METRIC_COUNTER,
         "Bytes written to the peer (frames, messages and control)."},
        {"troupe_node_peer_bytes_received_total", TR_METRIC_COUNTER,
         "Bytes of the frames received from the peer once it was up."},
        {"troupe_node_peer_queue_depth", TR_METRIC_GAUGE,
         "Messages queued towards the peer, not written yet."},
        {"troupe_node_peer_reconnects_total", TR_METRIC_COUNTER,
         "Times the peer came up again after its first time."},
    };
    pthread_mutex_lock(&n->lock);
    for (size_t f = 0; f < sizeof fams / sizeof *fams; f++) {
        tr_metrics_out_family(out, fams[f].name, fams[f].type, fams[f].help);
        for (size_t i = 0; i < n->npeers; i++) {
            peer *pe = n->peers[i];
            if (pe->alias || pe->hidden)
                continue; /* (hidden peers: troupectl's short-lived nodes, not members) */
            tr_label l = {"peer", pe->name[0] != '\0' ? pe->name : pe->addr};
            uint64_t ups = atomic_load_explicit(&pe->ups, memory_order_relaxed);
            uint64_t v = f == 0   ? pe->status == TR_PEER_UP
                         : f == 1 ? atomic_load_explicit(&pe->msgs_out, memory_order_relaxed)
                         : f == 2 ? atomic_load_explicit(&pe->msgs_in, memory_order_relaxed)
                         : f == 3 ? atomic_load_explicit(&pe->bytes_out, memory_order_relaxed)
                         : f == 4 ? atomic_load_explicit(&pe->bytes_in, memory_order_relaxed)
                         : f == 5 ? atomic_load_explicit(&pe->qlen, memory_order_relaxed)
                                  : (ups > 1 ? ups - 1 : 0);
            tr_metrics_out_u64(out, &l, 1, v);
        }
    }
    pthread_mutex_unlock(&n->lock);
    tr_node_stats st = {0};
    tr_node_stats_get(n, &st);
    const struct {
        const char *name, *help;
        uint64_t v;
    } totals[] = {
        {"troupe_node_refused_connections_total",
         "Connections dropped in the handshake: a wrong secret or a bad hello.", st.refused_auth},
        {"troupe_node_bad_frames_total", "Connections dropped for a malformed or oversized frame.",
         st.bad_frames},
        {"troupe_node_queue_full_total", "Sends refused or dropped: a peer's queue was full.",
         st.queue_full},
        {"troupe_node_no_route_total", "Sends to a node that is not up (dead letters).",
         st.no_route},
        {"troupe_node_lost_messages_total", "Messages queued towards a peer that went down.",
         st.lost},
        {"troupe_node_peers_down_total", "Times a peer was declared down.", st.peers_down},
        {"troupe_node_peers_left_total", "Peers that left the cluster (their LEAVE).",
         st.peers_left},
        {"troupe_node_tls_failed_total", "Connections dropped: the TLS handshake failed.",
         st.tls_failed},
    }, core[] = { /* partial monitoring (monitors > 0): the membership core's */
        {"troupe_node_gossip_sent_total",
         "Membership messages sent (beats, pings, acks, gossip rounds, syncs).", st.gossip_sent},
        {"troupe_node_gossip_received_total", "Membership messages taken in.",
         st.gossip_received},
        {"troupe_node_gossip_bad_total",
         "Membership messages refused: malformed, or not from who they say.", st.gossip_bad},
        {"troupe_node_suspected_total", "Members this node, as a watcher, held suspect.",
         st.suspected},
        {"troupe_node_declared_down_total", "Members this node, as a watcher, declared down.",
         st.declared_down},
        {"troupe_node_refutations_total", "Times this node refuted its own suspicion or down.",
         st.refutations},
        {"troupe_node_gossip_syncs_total", "Views pushed to a watched member (anti-entropy).",
         st.syncs},
        {"troupe_node_verdicts_dropped_total", "Downs from an implausible watcher, not taken.",
         st.verdicts_dropped},
    };
    for (size_t i = 0; i < sizeof totals / sizeof *totals; i++) {
        tr_metrics_out_family(out, totals[i].name, TR_METRIC_COUNTER, totals[i].help);
        tr_metrics_out_u64(out, NULL, 0, totals[i].v);
    }
    for (size_t i = 0; n->gossip != NULL && i < sizeof core / sizeof *core; i++) {
        tr_metrics_out_family(out, core[i].name, TR_METRIC_COUNTER, core[i].help);
        tr_metrics_out_u64(out, NULL, 0, core[i].v);
    }
    if (n->gossip != NULL) {
        static const char *const states[4] = {"alive", "suspect", "down", "left"};
        tr_metrics_out_family(out, "troupe_node_members", TR_METRIC_GAUGE,
                              "Members this node knows (itself included), by state.");
        for (int i = 0; i < 4; i++) {
            tr_label l = {"state", states[i]};
            tr_metrics_out_u64(out, &l, 1, st.members[i]);
        }
    }
}

int tr_node_start(tr_system *sys, const tr_node_opts *o, tr_node **out)
{
    if (sys == NULL || o == NULL || out == NULL || o->name == NULL || o->name[0] == '\0' ||
        strlen(o->name) > TR_WIRE_NAME_MAX ||
        (!o->hidden && (o->listen == NULL || strlen(o->listen) > TR_WIRE_ADDR_MAX ||
                        strncmp(o->listen, "tcp://", 6) != 0)) ||
        o->secret == NULL || strlen(o->secret) < 8 || (o->nseeds > 0 && o->seeds == NULL) ||
        (o->hidden && o->nseeds == 0))
        return TR_EINVAL;
    for (size_t i = 0; i < o->nseeds; i++)
        if (o->seeds[i] == NULL || strlen(o->seeds[i]) > TR_WIRE_ADDR_MAX ||
            strncmp(o->seeds[i], "tcp://", 6) != 0)
            return TR_EINVAL;
    if (atomic_load(&sys->node) != NULL)
        return TR_ESTATE;
    tr_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return TR_ENOMEM;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->cond, NULL);
    n->rd_ep = n->rd_wake = -1;
    pthread_mutex_init(&n->names_lock, NULL);
    tr__namemap_init(&n->names);
    n->sys = sys;
    snprintf(n->name, sizeof n->name, "%s", o->name);
    n->id = sys->opts.node_id;
    tr__random_bytes(&n->incarnation, sizeof n->incarnation);
    n->secret_len = strlen(o->secret);
    n->secret = malloc(n->secret_len);
    n->by_id = calloc(65536, sizeof *n->by_id);
    if (n->secret == NULL || n->by_id == NULL) {
        node_free(n);
        return TR_ENOMEM;
    }
    memcpy(n->secret, o->secret, n->secret_len);
    n->max_frame = o->max_frame ? o->max_frame : NODE_MAX_FRAME_DEFAULT;
    if (n->max_frame > UINT32_MAX)
        n->max_frame = UINT32_MAX;
    n->peer_queue = o->peer_queue ? o->peer_queue : NODE_QUEUE_DEFAULT;
    n->batch_bytes = o->batch_bytes ? o->batch_bytes : NODE_BATCH_DEFAULT;
    n->overflow = o->overflow;
    n->hb_ns = (uint64_t)(o->heartbeat_ms ? o->heartbeat_ms : 200) * 1000000u;
    n->down_ns = (uint64_t)(o->down_after_ms ? o->down_after_ms : 1000) * 1000000u;
    n->backoff_min_ms = o->reconnect_min_ms ? o->reconnect_min_ms : 10;
    n->backoff_max_ms = o->reconnect_max_ms ? o->reconnect_max_ms : 2000;
    n->forget_ns = (uint64_t)(o->forget_after_ms ? o->forget_after_ms : 60000) * 1000000u;
    n->leave_ns = (uint64_t)(o->leave_ms ? o->leave_ms : 500) * 1000000u;
    if (n->backoff_max_ms < n->backoff_min_ms)
        n->backoff_max_ms = n->backoff_min_ms;
    n->quiet = o->quiet;
    n->hidden = o->hidden;
    int trc = tr__tls_load(n, o->tls);
    if (trc != TR_OK) {
        node_free(n);
        return trc;
    }

    char url[TR_WIRE_ADDR_MAX + 8];
    int rv = 0;
    if (!n->hidden) { /* a hidden node accepts nothing: it has no address */
        tr__tls_url(n, o->listen, url, sizeof url);
        rv = nng_stream_listener_alloc(&n->listener, url);
        if (rv == 0)
            rv = tr__tls_listener(n, n->listener);
        if (rv == 0)
            rv = nng_stream_listener_listen(n->listener);
    }
    if (rv != 0) {
        if (!o->quiet)
            tr_log(TR_LOG_ERROR, "node", "%s: cannot listen on %s: %s", o->name, url,
                   nng_strerror(rv));
        if (n->listener != NULL)
            nng_stream_listener_free(n->listener);
        node_free(n);
        return TR_EINVAL;
    }
    if (!n->hidden) {
        nng_stream_listener_get_int(n->listener, NNG_OPT_TCP_BOUND_PORT, &n->port);
        /* the address others dial: the listen address with the port actually bound */
        const char *hp = o->listen + 6;
        const char *colon = strrchr(hp, ':');
        int hl = colon != NULL ? (int)(colon - hp) : (int)strlen(hp);
        snprintf(n->addr, sizeof n->addr, "tcp://%.*s:%d", hl, hp, n->port);
    }

    for (size_t i = 0; i < o->nseeds; i++) {
        if (!n->hidden && (strcmp(o->seeds[i], n->addr) == 0 || strcmp(o->seeds[i], o->listen) == 0))
            continue; /* ourselves */
        peer *pe = tr__peer_by_addr(n, o->seeds[i]);
        if (pe == NULL && (pe = tr__peer_new(n, "", o->seeds[i])) == NULL) {
            if (n->listener != NULL)
                nng_stream_listener_free(n->listener);
            node_free(n);
            return TR_ENOMEM;
        }
        pe->seed = true;
    }
    if ((trc = tr__ng_start(n, o)) != TR_OK) {
        if (n->listener != NULL)
            nng_stream_listener_free(n->listener);
        node_free(n);
        return trc;
    }
    if (nng_aio_alloc(&n->accept_aio, tr__node_on_accept, n) != 0) {
        if (n->listener != NULL)
            nng_stream_listener_free(n->listener);
        node_free(n);
        return TR_ENOMEM;
    }
    int rc = tr_system_spawn(sys, &tr__node_service_behaviour, n, &n->service);
    if (rc == TR_OK && (rc = tr__node_ctl_start(n)) != TR_OK)
        tr_system_stop_actor(sys, n->service); /* (before n is freed: see tr_node_stop) */
    if (rc != TR_OK) {
        for (int i = 0; i < 5000 && n->service != TR_PID_NONE &&
                        tr_system_alive(sys, n->service); i++)
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        nng_aio_free(n->accept_aio);
        if (n->listener != NULL)
            nng_stream_listener_free(n->listener);
        node_free(n);
        return rc;
    }
    tr__remote_install(sys, &remote_ops); /* before the node is visible: see internal.h */
    tr__system_name_set(sys, n->name); /* the core's log lines name the node */
    atomic_store(&sys->node, n);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 0 && sys->nworkers >= (unsigned)cpus)
        tr__sched_spin_hint(sys, 8); /* nng's I/O threads need CPU time: spin less */
    tr__conn_reader_start(n); /* (none: inbound connections are read through nng) */
    if (n->listener != NULL)
        nng_stream_listener_accept(n->listener, n->accept_aio);
    n->last_tick_ns = tr__now_ns();
    int hrc = tr__timer_hook_set(sys, tr__node_tick, n); /* the ticker: on the timer thread */
    if (hrc != TR_OK) {
        tr_node_stop(n);
        return hrc;
    }
    n->ticker_started = true;
    tr_metrics_collector_add(tr_system_metrics(sys), collect, n); /* TR_EEXIST: one per system */
    *out = n;
    return TR_OK;
}

/* Whether a LEAVE can go to pe now: it is up and our connection to it is (lock held). */
static bool told_now(const peer *pe)
{
    return pe->status == TR_PEER_UP && pe->out_conn != NULL && !pe->out_conn->dead &&
           pe->out_conn->state == C_UP;
}

/* Leaves the cluster: a LEAVE to every peer up, after what is queued for it; then waits, at most
 * leave_ms in all, until each has closed its connections with us — its sign that it heard
 * (conn.c, rx_frame). A peer whose connection to us is up but ours to it is not yet (it came up
 * a moment ago: our dial back is under way, or not started) is told too, once our connection is
 * up: it saw us up, and without a LEAVE it would see us go down. Nothing new is sent or accepted
 * meanwhile (n->leaving); only those dials are made. A peer that does not answer in time sees
 * the node go down instead, as before LEAVE existed. */
static void leave_cluster(tr_node *n)
{
    peer *told[NODE_MAX_PEERS], *later[NODE_MAX_PEERS], *kick[NODE_MAX_PEERS];
    size_t ntold = 0, nlater = 0, nkick = 0;
    if (n->gossip != NULL) { /* monitors: the core gossips it (nodegossip.c) */
        tr__ng_leave(n);
        pthread_mutex_lock(&n->lock);
        n->leaving = true;
        pthread_mutex_unlock(&n->lock);
        return;
    }
    pthread_mutex_lock(&n->lock);
    n->leaving = true;
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (pe->alias || pe->hidden || (pe->status != TR_PEER_UP && !pe->joining))
            continue;
        if (told_now(pe)) {
            atomic_store(&pe->leave_pending, 1);
            told[ntold++] = pe;
        } else {
            later[nlater++] = pe; /* told once our connection to it is up */
            if (pe->out_conn == NULL && !pe->dialing && pe->addr[0] != '\0')
                tr__node_dial_start(n, pe);
        }
    }
    pthread_mutex_unlock(&n->lock);
    if (ntold == 0 && nlater == 0)
        return;
    uint64_t start = tr__now_ns(), deadline = start + n->leave_ns;
    for (size_t i = 0; i < ntold; i++)
        tr__peer_kick(told[i]);
    size_t waiting, nall = ntold + nlater;
    pthread_mutex_lock(&n->lock);
    for (;;) {
        waiting = 0;
        for (size_t i = 0; i < nlater;) {
            peer *pe = later[i];
            if (told_now(pe)) {
                atomic_store(&pe->leave_pending, 1);
                told[ntold++] = kick[nkick++] = pe;
                later[i] = later[--nlater];
            } else if (pe->status != TR_PEER_UP && !pe->joining) {
                later[i] = later[--nlater]; /* gone meanwhile: nothing to tell */
            } else {
                waiting++;
                i++;
            }
        }
        if (nkick > 0) {
            pthread_mutex_unlock(&n->lock);
            for (size_t i = 0; i < nkick; i++)
                tr__peer_kick(kick[i]);
            nkick = 0;
            pthread_mutex_lock(&n->lock);
        }
        for (size_t i = 0; i < ntold; i++)
            if (told[i]->status == TR_PEER_UP)
                waiting++;
        uint64_t now = tr__now_ns();
        if (waiting == 0 || now >= deadline)
            break;
        /* a peer closing its connections broadcasts n->cond (tr__peer_down_locked); a
         * connection of ours coming up is seen at the next turn: the variable runs on the wall
         * clock, so each wait is short (20 ms) and the deadline is ours */
        uint64_t wait_ns = deadline - now < 20000000u ? deadline - now : 20000000u;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)wait_ns;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
    }
    pthread_mutex_unlock(&n->lock);
    tr__node_log(n, "leaving the cluster: %zu of %zu peers heard it in %llu ms", nall - waiting,
                 nall, (unsigned long long)((tr__now_ns() - start) / 1000000u));
}

void tr_node_stop(tr_node *n)
{
    if (n == NULL)
        return;
    tr_system *sys = n->sys;
    tr_metrics_collector_remove(tr_system_metrics(sys), collect, n); /* waits out a render */
    leave_cluster(n);
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    if (n->ticker_started)
        tr__timer_hook_clear(sys); /* waits out a tick under way */
    atomic_store(&sys->node, NULL);
    while (atomic_load(&sys->node_users) > 0)
        sched_yield(); /* threads that found the node before it was unhooked */
    if (n->listener != NULL)
        nng_stream_listener_close(n->listener);
    nng_aio_stop(n->accept_aio);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        nng_aio_stop(pe->dial_aio);
        if (pe->dialer != NULL)
            nng_stream_dialer_close(pe->dialer);
    }
    tr__conn_reader_stop(n); /* it lets go of the inbound connections it reads */
    /* close every connection, wait for the writers to let go, free them */
    pthread_mutex_lock(&n->lock);
    tr__conn_polls_drop_locked(n);
    for (conn *c = n->conns; c != NULL; c = c->next)
        tr__conn_mark_dead(c);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        pe->out_conn = pe->in_conn = NULL;
        if (pe->status == TR_PEER_UP)
            atomic_store(&n->by_id[pe->node_id], NULL);
        pe->status = TR_PEER_DOWN;
    }
    for (;;) {
        bool busy = false;
        for (conn *c = n->conns; c != NULL; c = c->next)
            if (c->refs > 0) {
                busy = true;
                nng_aio_cancel(c->tx); /* a send started after the close (see tr__conn_mark_dead) */
            }
        if (!busy)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
    }
    pthread_mutex_unlock(&n->lock);
    tr__node_reap(n);
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        while (atomic_load(&pe->tx_busy))
            sched_yield(); /* a writer finishing its dead letters */
        nng_aio_free(pe->dial_aio);
        if (pe->dialer != NULL)
            nng_stream_dialer_free(pe->dialer);
    }
    nng_aio_free(n->accept_aio);
    if (n->listener != NULL)
        nng_stream_listener_free(n->listener);
    if (!tr__node_ctl_stop(n)) { /* its turns read n too */
        tr_log(TR_LOG_WARN, "node", "%s: the node's introspection service did not end within "
               "5 s: its memory is kept", n->name);
        return;
    }
    if (n->service != TR_PID_NONE && tr_system_stop_actor(sys, n->service) == TR_OK) {
        /* the service's turns read n: it must have ended before n is freed (ASan caught a
         * turn running after the free in test_node) */
        for (int i = 0; i < 5000 && tr_system_alive(sys, n->service); i++)
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        if (tr_system_alive(sys, n->service)) {
            tr_log(TR_LOG_WARN, "node", "%s: the node's service actor did not end within 5 s: "
                   "its memory is kept", n->name);
            return;
        }
    }
    node_free(n);
}

const char *tr_node_name(const tr_node *node)
{
    return node != NULL ? node->name : NULL;
}

int tr_node_port(const tr_node *node)
{
    return node != NULL ? node->port : 0;
}

const char *tr_node_address(const tr_node *node)
{
    return node != NULL ? node->addr : NULL;
}

void tr_node_stats_get(tr_node *n, tr_node_stats *o)
{
    if (n == NULL || o == NULL)
        return;
    o->writes = atomic_load(&n->writes);
    o->frames_in = atomic_load(&n->frames_in);
    o->msgs_out = atomic_load(&n->msgs_out);
    o->msgs_in = atomic_load(&n->msgs_in);
    o->refused_auth = atomic_load(&n->refused_auth);
    o->bad_frames = atomic_load(&n->bad_frames);
    o->queue_full = atomic_load(&n->queue_full);
    o->no_route = atomic_load(&n->no_route);
    o->lost = atomic_load(&n->lost);
    o->peers_down = atomic_load(&n->peers_down);
    o->peers_forgotten = atomic_load(&n->peers_forgotten);
    o->tls_failed = atomic_load(&n->tls_failed);
    o->peers_left = atomic_load(&n->peers_left);
    o->dials = atomic_load(&n->dials);
    o->writes_inline = atomic_load(&n->writes_inline);
    o->reader_conns = atomic_load(&n->reader_conns);
    tr_gossip_stats g = {0};
    size_t counts[4] = {0};
    pthread_mutex_lock(&n->lock);
    if (n->gossip != NULL) {
        tr__gossip_stats_get(n->gossip, &g);
        tr__gossip_count(n->gossip, counts);
    }
    pthread_mutex_unlock(&n->lock);
    o->gossip_sent = g.sent;
    o->gossip_received = g.received;
    o->gossip_bad = g.bad;
    o->suspected = g.suspected;
    o->declared_down = g.declared_down;
    o->refutations = g.refutations;
    o->syncs = g.syncs;
    o->verdicts_dropped = g.verdicts_dropped;
    for (int i = 0; i < 4; i++)
        o->members[i] = (uint32_t)counts[i];
    o->id_taken = atomic_load(&n->id_taken) ? 1u : 0u;
}
