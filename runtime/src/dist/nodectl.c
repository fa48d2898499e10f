/*
 * nodectl.c — the node's side of the introspection service (core/ctl.c): the hooks through which
 * the service sees the node (this node, its members with their incarnation and when each was last
 * heard, the node's counters, cluster-wide names), starting and stopping it with the node, and
 * tr_node_ctl, the client call. Other nodes reach a node's service through its node service
 * (names.c hands TR_MSG_CTL requests on), so it needs no address of its own.
 */
#include "node_impl.h"
#include "core/ctl.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

_Static_assert(TR_MSG_CTL == TR__MSG_CTL, "the core's and the node's TR_MSG_CTL");

static void hook_self(void *arg, tr__ctl_peer *out)
{
    tr_node *n = arg;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", n->name);
    snprintf(out->addr, sizeof out->addr, "%s", n->addr);
    out->node_id = n->id;
    out->incarnation = n->incarnation;
    out->status = TR_PEER_UP;
    out->heard_ms = 0;
}

static size_t hook_peers(void *arg, tr__ctl_peer *out, size_t cap)
{
    tr_node *n = arg;
    size_t k = 0;
    uint64_t now = tr__now_ns();
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++) {
        const peer *pe = n->peers[i];
        if (pe->alias || pe->hidden)
            continue;
        if (k < cap) {
            tr__ctl_peer *p = &out[k];
            memset(p, 0, sizeof *p);
            snprintf(p->name, sizeof p->name, "%s", pe->name);
            snprintf(p->addr, sizeof p->addr, "%s", pe->addr);
            p->node_id = pe->node_id;
            p->incarnation = pe->incarnation;
            p->status = pe->status;
            p->heard_ms = -1;
            if (pe->in_conn != NULL) {
                uint64_t last = atomic_load(&pe->in_conn->last_rx_ns);
                p->heard_ms = now > last ? (int64_t)((now - last) / 1000000u) : 0;
                if (pe->status == TR_PEER_UP && now > last && now - last > 2 * n->hb_ns)
                    p->status = TR_PEER_SUSPECT;
            }
        }
        k++;
    }
    for (size_t i = 0; i < NODE_MAX_LEFT; i++) {
        const left_entry *e = &n->left[i];
        if (e->name[0] == '\0')
            continue;
        if (k < cap) {
            tr__ctl_peer *p = &out[k];
            memset(p, 0, sizeof *p);
            snprintf(p->name, sizeof p->name, "%s", e->name);
            snprintf(p->addr, sizeof p->addr, "%s", e->addr);
            p->node_id = e->node_id;
            p->status = TR_PEER_LEFT;
            p->heard_ms = (int64_t)((now - e->at_ns) / 1000000u);
        }
        k++;
    }
    pthread_mutex_unlock(&n->lock);
    return k;
}

static size_t hook_counters(void *arg, tr__ctl_counter *out, size_t cap)
{
    tr_node *n = arg;
    tr_node_stats st;
    tr_node_stats_get(n, &st);
    size_t hidden = 0, members = 0;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && n->peers[i]->status == TR_PEER_UP)
            (*(n->peers[i]->hidden ? &hidden : &members))++;
    pthread_mutex_unlock(&n->lock);
    const tr__ctl_counter all[] = {
        {"peers_up", members},          {"hidden_connected", hidden},
        {"writes", st.writes},          {"frames_in", st.frames_in},
        {"msgs_out", st.msgs_out},      {"msgs_in", st.msgs_in},
        {"refused_auth", st.refused_auth}, {"bad_frames", st.bad_frames},
        {"queue_full", st.queue_full},  {"no_route", st.no_route},
        {"lost", st.lost},              {"peers_down", st.peers_down},
        {"peers_left", st.peers_left},  {"peers_forgotten", st.peers_forgotten},
        {"tls_failed", st.tls_failed},  {"dials", st.dials},
        {"writes_inline", st.writes_inline}, {"reader_conns", st.reader_conns},
    };
    size_t k = sizeof all / sizeof all[0];
    if (k > cap)
        k = cap;
    memcpy(out, all, k * sizeof *out);
    return k;
}

static int hook_whereis(void *arg, const char *name, tr_pid *out)
{
    return tr_node_whereis(arg, name, out);
}

static bool hook_name_of(void *arg, tr_pid pid, char *buf, size_t cap)
{
    tr_node *n = arg;
    bool found = false;
    pthread_mutex_lock(&n->names_lock);
    for (size_t i = 0; i < n->names.cap && !found; i++)
        if (n->names.e[i].name != NULL && n->names.e[i].pid == pid) {
            snprintf(buf, cap, "%s", n->names.e[i].name);
            found = true;
        }
    pthread_mutex_unlock(&n->names_lock);
    return found;
}

int tr__node_ctl_start(tr_node *n)
{
    tr__ctl_hooks h = {
        .arg = n,
        .self = hook_self,
        .peers = hook_peers,
        .counters = hook_counters,
        .whereis = hook_whereis,
        .name_of = hook_name_of,
        .max_reply = n->max_frame > 4096 ? n->max_frame - 1024 : 3072, /* room for the envelope */
    };
    return tr__ctl_start(n->sys, &h, &n->ctl);
}

bool tr__node_ctl_stop(tr_node *n)
{
    if (n->ctl == TR_PID_NONE || tr_system_stop_actor(n->sys, n->ctl) != TR_OK)
        return true; /* none, or ended already */
    /* its turns read n (the hooks): it must have ended before n is freed */
    for (int i = 0; i < 5000 && tr_system_alive(n->sys, n->ctl); i++)
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    return !tr_system_alive(n->sys, n->ctl);
}

int tr_node_ctl(tr_node *n, const char *peer_name, tr_msg *req, unsigned timeout_ms,
                tr_msg **reply)
{
    if (req == NULL)
        return TR_EINVAL;
    if (n == NULL || reply == NULL || tr_msg_type(req) != TR_MSG_CTL) {
        tr_msg_free(req);
        return TR_EINVAL;
    }
    tr_pid to = n->ctl;
    if (peer_name != NULL && strcmp(peer_name, n->name) != 0) {
        uint16_t id;
        int rc = tr_node_lookup(n, peer_name, &id);
        if (rc != TR_OK) {
            tr_msg_free(req);
            return rc;
        }
        to = service_pid(id); /* its node service hands it on to its introspection service */
    }
    return tr__call(n->sys, to, req, timeout_ms, reply);
}
