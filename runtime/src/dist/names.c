/*
 * names.c — the node service and what it serves: every node runs one actor at a fixed pid (its
 * node id, slot 0, generation 0) that answers other nodes — a remote spawn of a behaviour
 * registered by name (tr_node_spawn), and the cluster-wide names (tr_node_register / whereis):
 * each node keeps the map of every name it knows, a registration is told to every peer up, two
 * registrations of one name meet and the smaller pid keeps it everywhere, a holder that ends or a
 * node that goes down releases its names, and a peer that comes up is sent ours (if any: a
 * node without names sends nothing) and, if it was up before (we dropped its names when it went
 * down), asked for its own — the first time it sends them itself, as it sees us come up.
 * Placement (tr_node_place) is rendezvous hashing over the nodes up. Requests for the
 * introspection service (TR_MSG_CTL) are handed on to it (core/ctl.c). Hidden peers (troupectl)
 * are not members: they are told no names, their own are refused, and nothing is placed on them.
 */
#include "node_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the node service ---------------------------------------------------------------------- */

static const tr_behaviour *behaviour_find(tr_node *n, const char *name, size_t len)
{
    const tr_behaviour *b = NULL;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->nbehaviours && b == NULL; i++)
        if (strlen(n->behaviours[i].name) == len && memcmp(n->behaviours[i].name, name, len) == 0)
            b = n->behaviours[i].b;
    pthread_mutex_unlock(&n->lock);
    return b;
}

static tr_msg *spawn_reply(int rc, tr_pid pid)
{
    tr_msg *r = tr_msg_new(0, 16); /* replies carry user types */
    if (r != NULL) {
        msgpack_pack_int64(tr_msg_packer(r), rc);
        tr_msg_put_u64(r, pid);
    }
    return r;
}

/* A message [name, pid] of the given type. */
static tr_msg *name_msg(uint32_t type, const char *name, size_t len, tr_pid pid)
{
    tr_msg *m = tr_msg_new(type, len + 16);
    if (m != NULL) {
        msgpack_pack_str(tr_msg_packer(m), len);
        msgpack_pack_str_body(tr_msg_packer(m), name, len);
        tr_msg_put_u64(m, pid);
    }
    return m;
}

/* Reads [name, pid] into name (NUL-terminated, at most TR_NAME_MAX bytes). */
static bool read_name(const tr_msg *m, char name[TR_NAME_MAX + 1], tr_pid *pid)
{
    tr_reader r;
    const char *s;
    size_t len;
    uint64_t p;
    tr_reader_init(&r, m);
    bool ok = tr_read_str(&r, &s, &len) == TR_OK && len > 0 && len <= TR_NAME_MAX &&
              memchr(s, '\0', len) == NULL && tr_read_u64(&r, &p) == TR_OK && p != 0;
    if (ok) {
        memcpy(name, s, len);
        name[len] = '\0';
        *pid = p;
    }
    tr_reader_done(&r);
    return ok;
}

/* Sends a runtime-typed message from the service (tr_send takes only user types). Marked system:
 * a full queue towards the peer does not refuse it (a name sync or a pull lost to a burst of
 * application messages left a node without its peer's names). */
static void svc_send(tr_ctx *ctx, const tr_node *n, tr_pid to, tr_msg *m)
{
    if (m == NULL)
        return;
    m->flags |= TR_MF_SYSTEM;
    /* from the service's address as other nodes know it (slot 0, generation 0), not its actor's
     * pid: a peer checks that a PULL comes from a service (it used to see the actor's pid, so
     * refused every PULL: a node that saw a peer go down and come back, while the peer saw
     * nothing, never had its names again — test_monitors_join_idle_kill_leave) */
    m->sender = service_pid(n->id);
    tr__deliver(ctx->sys, ctx->w, to, m);
}

/* Sends [name, pid] as `type` to the service of every peer up. */
static void tell_peers(tr_ctx *ctx, tr_node *n, uint32_t type, const char *name, tr_pid pid)
{
    uint16_t ids[NODE_MAX_PEERS];
    size_t k = 0;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->status == TR_PEER_UP && !n->peers[i]->hidden)
            ids[k++] = n->peers[i]->node_id;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < k; i++)
        svc_send(ctx, n, service_pid(ids[i]), name_msg(type, name, strlen(name), pid));
}

/* A peer's registration meets ours: the smaller pid keeps the name, everywhere. */
static void names_merge(tr_ctx *ctx, tr_node *n, const char *name, tr_pid pid)
{
    tr_pid loser = TR_PID_NONE;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e == NULL) {
        tr__namemap_put(&n->names, name, pid);
    } else if (e->pid != pid) {
        loser = e->pid < pid ? pid : e->pid;
        e->pid = e->pid < pid ? e->pid : pid;
    }
    pthread_mutex_unlock(&n->names_lock);
    if (loser != TR_PID_NONE && tr_pid_node(loser) == n->id) {
        tr_msg *lost = name_msg(TR_MSG_NAME_LOST, name, strlen(name), loser);
        if (lost != NULL) {
            lost->flags = TR_MF_SYSTEM;
            tr__deliver(ctx->sys, NULL, loser, lost);
        }
    }
}

/* The names held by our actors, sent to the service of node `id`. */
static void names_sync(tr_ctx *ctx, tr_node *n, uint16_t id)
{
    pthread_mutex_lock(&n->names_lock);
    size_t k = 0, cap = n->names.len;
    tr_msg **out = cap > 0 ? calloc(cap, sizeof *out) : NULL;
    for (size_t i = 0; out != NULL && i < n->names.cap; i++) {
        tr_name_entry *e = &n->names.e[i];
        if (e->name != NULL && tr_pid_node(e->pid) == n->id && k < cap)
            out[k++] = name_msg(TR_MSG_NODE_REG, e->name, strlen(e->name), e->pid);
    }
    pthread_mutex_unlock(&n->names_lock);
    for (size_t i = 0; i < k; i++)
        if (out[i] != NULL)
            svc_send(ctx, n, service_pid(id), out[i]);
    free(out);
}

/* An actor of ours that held names ended: they are released here and everywhere. */
static void names_holder_down(tr_ctx *ctx, tr_node *n, tr_pid pid)
{
    for (;;) {
        char name[TR_NAME_MAX + 1] = {0};
        pthread_mutex_lock(&n->names_lock);
        for (size_t i = 0; i < n->names.cap && name[0] == '\0'; i++)
            if (n->names.e[i].name != NULL && n->names.e[i].pid == pid)
                snprintf(name, sizeof name, "%s", n->names.e[i].name);
        if (name[0] != '\0')
            tr__namemap_del(&n->names, name);
        pthread_mutex_unlock(&n->names_lock);
        if (name[0] == '\0')
            return;
        tell_peers(ctx, n, TR_MSG_NODE_UNREG, name, pid);
    }
}

/* A remote spawn: [behaviour, args] -> [rc, pid]. */
static void service_spawn(tr_ctx *ctx, tr_node *n, tr_msg *m)
{
    tr_reader r;
    tr_reader_init(&r, m);
    const char *name;
    size_t nl;
    const void *args;
    size_t al;
    int rc = TR_EBADMSG;
    tr_pid pid = TR_PID_NONE;
    if (tr_read_str(&r, &name, &nl) == TR_OK && tr_read_bin(&r, &args, &al) == TR_OK) {
        const tr_behaviour *b = behaviour_find(n, name, nl);
        tr_msg *a = b != NULL ? tr_msg_from_bytes(0, args, al) : NULL;
        rc = b == NULL ? TR_EINVAL : a == NULL ? TR_ENOMEM : tr_spawn(ctx, b, a, &pid);
        tr_msg_free(a);
    }
    tr_reader_done(&r);
    tr_msg *rep = spawn_reply(rc, pid);
    if (rep != NULL)
        tr_reply(ctx, m, rep);
}

/* True when node `id` is a hidden peer (troupectl): not a member. */
static bool from_hidden(tr_node *n, uint16_t id)
{
    pthread_mutex_lock(&n->lock);
    peer *pe = atomic_load(&n->by_id[id]);
    bool hidden = pe != NULL && pe->hidden;
    pthread_mutex_unlock(&n->lock);
    return hidden;
}

/* Hands a request for the introspection service on to it: a copy with the requester's address,
 * so the service answers the requester itself. */
static void to_ctl(tr_ctx *ctx, tr_node *n, const tr_msg *m)
{
    if (n->ctl == TR_PID_NONE || !(m->flags & TR_MF_REQUEST))
        return;
    tr_msg *c = tr_msg_from_bytes(TR_MSG_CTL, tr_msg_data(m), tr_msg_size(m));
    if (c == NULL)
        return; /* its requester's timeout answers */
    c->sender = m->sender;
    c->corr = m->corr;
    c->flags = TR_MF_REQUEST;
    tr__deliver(ctx->sys, ctx->w, n->ctl, c);
}

static int service_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    tr_node *n = *(tr_node **)state;
    char name[TR_NAME_MAX + 1];
    tr_pid pid;
    switch (tr_msg_type(m)) {
    case TR_MSG_CTL:
        to_ctl(ctx, n, m);
        return 0;
    case TR_MSG_NODE_REG:
        if (read_name(m, name, &pid) && tr_pid_node(pid) == tr_pid_node(tr_msg_sender(m)) &&
            !from_hidden(n, tr_pid_node(pid)))
            names_merge(ctx, n, name, pid);
        return 0;
    case TR_MSG_NODE_UNREG:
        if (read_name(m, name, &pid)) {
            pthread_mutex_lock(&n->names_lock);
            tr_name_entry *e = tr__namemap_find(&n->names, name);
            if (e != NULL && e->pid == pid)
                tr__namemap_del(&n->names, name);
            pthread_mutex_unlock(&n->names_lock);
        }
        return 0;
    case TR_MSG_NODE_ANNOUNCE:
        if (tr_msg_sender(m) == TR_PID_NONE && read_name(m, name, &pid)) {
            uint64_t ref;
            tr_monitor(ctx, pid, &ref); /* its end releases the name */
            tell_peers(ctx, n, TR_MSG_NODE_REG, name, pid);
        }
        return 0;
    case TR_MSG_NODE_RETRACT:
        if (tr_msg_sender(m) == TR_PID_NONE && read_name(m, name, &pid))
            tell_peers(ctx, n, TR_MSG_NODE_UNREG, name, pid);
        return 0;
    case TR_MSG_NODE_SYNC:
        if (tr_msg_sender(m) == TR_PID_NONE) { /* [node id, pull] */
            uint64_t id = 0, pull = 0;
            tr_reader r;
            tr_reader_init(&r, m);
            (void)tr_read_u64(&r, &id);
            (void)tr_read_u64(&r, &pull);
            tr_reader_done(&r);
            names_sync(ctx, n, (uint16_t)id);
            if (pull)
                svc_send(ctx, n, service_pid((uint16_t)id), tr_msg_new(TR_MSG_NODE_PULL, 0));
        }
        return 0;
    case TR_MSG_NODE_PULL: /* from a peer's service: our names, to it */
        if (tr_pid_node(tr_msg_sender(m)) != n->id && tr_msg_sender(m) != TR_PID_NONE &&
            tr_msg_sender(m) == service_pid(tr_pid_node(tr_msg_sender(m))))
            names_sync(ctx, n, tr_pid_node(tr_msg_sender(m)));
        return 0;
    case TR_MSG_DOWN:
        names_holder_down(ctx, n, tr_msg_sender(m));
        return 0;
    default:
        break;
    }
    if (tr_msg_type(m) == TR_MSG_NODE_SPAWN && tr_msg_corr(m) != 0)
        service_spawn(ctx, n, m);
    return 0;
}

static int service_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    *(tr_node **)state = (tr_node *)arg;
    return 0;
}

const tr_behaviour tr__node_service_behaviour = {
    .name = "troupe.node",
    .state_size = sizeof(tr_node *),
    .init = service_init,
    .receive = service_receive,
};

int tr_node_register_behaviour(tr_node *node, const char *name, const tr_behaviour *b)
{
    if (node == NULL || name == NULL || b == NULL || name[0] == '\0' ||
        strlen(name) > TR_WIRE_NAME_MAX)
        return TR_EINVAL;
    int rc = TR_OK;
    pthread_mutex_lock(&node->lock);
    size_t i;
    for (i = 0; i < node->nbehaviours; i++)
        if (strcmp(node->behaviours[i].name, name) == 0)
            break;
    if (i == node->nbehaviours) {
        if (i == NODE_MAX_BEHAVIOURS)
            rc = TR_ENOMEM;
        else
            node->nbehaviours++;
    }
    if (rc == TR_OK) {
        snprintf(node->behaviours[i].name, sizeof node->behaviours[i].name, "%s", name);
        node->behaviours[i].b = b;
    }
    pthread_mutex_unlock(&node->lock);
    return rc;
}

int tr_node_spawn(tr_node *node, const char *peer_name, const char *behaviour, const tr_msg *args,
                  unsigned timeout_ms, tr_pid *out)
{
    if (node == NULL || peer_name == NULL || behaviour == NULL || out == NULL ||
        strlen(behaviour) > TR_WIRE_NAME_MAX)
        return TR_EINVAL;
    const void *ab = args != NULL ? tr_msg_data(args) : NULL;
    size_t al = args != NULL ? tr_msg_size(args) : 0;
    if (strcmp(peer_name, node->name) == 0) {
        const tr_behaviour *b = behaviour_find(node, behaviour, strlen(behaviour));
        if (b == NULL)
            return TR_EINVAL;
        tr_msg *a = tr_msg_from_bytes(0, ab, al);
        if (a == NULL)
            return TR_ENOMEM;
        int rc = tr_system_spawn(node->sys, b, a, out);
        tr_msg_free(a);
        return rc;
    }
    uint16_t id;
    int rc = tr_node_lookup(node, peer_name, &id);
    if (rc != TR_OK)
        return rc;
    tr_msg *m = tr_msg_new(TR_MSG_NODE_SPAWN, strlen(behaviour) + al + 16);
    if (m == NULL)
        return TR_ENOMEM;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_str(pk, strlen(behaviour));
    msgpack_pack_str_body(pk, behaviour, strlen(behaviour));
    msgpack_pack_bin(pk, al);
    msgpack_pack_bin_body(pk, ab, al);
    tr_msg *rep = NULL;
    rc = tr__call(node->sys, service_pid(id), m, timeout_ms, &rep);
    if (rc != TR_OK)
        return rc;
    tr_reader r;
    tr_reader_init(&r, rep);
    int64_t code;
    uint64_t pid;
    rc = tr_read_i64(&r, &code) == TR_OK && tr_read_u64(&r, &pid) == TR_OK ? TR_OK : TR_EBADMSG;
    tr_reader_done(&r);
    tr_msg_free(rep);
    if (rc != TR_OK)
        return rc;
    if (code != TR_OK)
        return (int)code;
    *out = pid;
    return TR_OK;
}

/* ---- public API: names and placement ------------------------------------------------------- */

/* Hands a message [name, pid] to our service (from any thread). */
static int to_service(tr_node *n, uint32_t type, const char *name, tr_pid pid)
{
    tr_msg *m = name_msg(type, name, strlen(name), pid);
    if (m == NULL)
        return TR_ENOMEM;
    tr_worker *w = tr__current_worker(n->sys);
    if (w == NULL && tr__ext_enter(n->sys) != TR_OK) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    m->sender = TR_PID_NONE; /* a runtime type: tr_system_send would refuse it */
    int rc = tr__deliver(n->sys, w, n->service, m);
    if (w == NULL)
        tr__ext_leave(n->sys);
    return rc == TR_OK ? TR_OK : TR_ESTOPPED;
}

int tr_node_register(tr_node *n, const char *name, tr_pid pid)
{
    if (n == NULL || name == NULL || name[0] == '\0' || strlen(name) > TR_NAME_MAX ||
        tr_pid_node(pid) != n->id)
        return TR_EINVAL;
    if (!tr_system_alive(n->sys, pid))
        return TR_ENOPROC;
    int rc = TR_OK;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e != NULL && e->pid != pid &&
        (tr_pid_node(e->pid) != n->id || tr_system_alive(n->sys, e->pid)))
        rc = TR_EEXIST;
    else
        rc = tr__namemap_put(&n->names, name, pid);
    pthread_mutex_unlock(&n->names_lock);
    if (rc == TR_OK)
        rc = to_service(n, TR_MSG_NODE_ANNOUNCE, name, pid);
    return rc;
}

int tr_node_unregister(tr_node *n, const char *name)
{
    if (n == NULL || name == NULL || name[0] == '\0' || strlen(name) > TR_NAME_MAX)
        return TR_EINVAL;
    tr_pid pid = TR_PID_NONE;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e != NULL && tr_pid_node(e->pid) == n->id) {
        pid = e->pid;
        tr__namemap_del(&n->names, name);
    }
    pthread_mutex_unlock(&n->names_lock);
    if (pid == TR_PID_NONE)
        return TR_ENOPROC;
    return to_service(n, TR_MSG_NODE_RETRACT, name, pid);
}

int tr_node_whereis(tr_node *n, const char *name, tr_pid *out)
{
    if (n == NULL || name == NULL || out == NULL)
        return TR_EINVAL;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&n->names_lock);
    tr_name_entry *e = tr__namemap_find(&n->names, name);
    if (e != NULL && (tr_pid_node(e->pid) != n->id || tr_system_alive(n->sys, e->pid))) {
        *out = e->pid;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&n->names_lock);
    return rc;
}

/* 64-bit FNV-1a then a finaliser: the weight of (node, key) for rendezvous hashing. */
static uint64_t weight(const char *node, const void *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = node; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    h = (h ^ 0xff) * 0x100000001b3ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ ((const uint8_t *)key)[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

int tr_node_place(tr_node *n, const void *key, size_t len, char name[65], uint16_t *node_id)
{
    return tr_node_place_without(n, key, len, NULL, name, node_id);
}

static bool excluded(const char *name, const char *const *without, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (without[i] != NULL && strcmp(name, without[i]) == 0)
            return true;
    return false;
}

int tr_node_place_excluding(tr_node *n, const void *key, size_t len, const char *const *without,
                            size_t nwithout, char name[65], uint16_t *node_id)
{
    if (n == NULL || (key == NULL && len > 0) || (without == NULL && nwithout > 0))
        return TR_EINVAL;
    pthread_mutex_lock(&n->lock);
    bool self = !excluded(n->name, without, nwithout);
    const char *best = self ? n->name : NULL;
    uint16_t best_id = self ? n->id : 0;
    uint64_t bw = self ? weight(n->name, key, len) : 0;
    for (size_t i = 0; i < n->npeers; i++) {
        peer *pe = n->peers[i];
        if (pe->alias || pe->hidden || pe->status != TR_PEER_UP ||
            excluded(pe->name, without, nwithout))
            continue;
        uint64_t w = weight(pe->name, key, len);
        if (best == NULL || w > bw || (w == bw && strcmp(pe->name, best) < 0)) {
            bw = w;
            best = pe->name;
            best_id = pe->node_id;
        }
    }
    if (best == NULL) { /* every node left out */
        pthread_mutex_unlock(&n->lock);
        return TR_ENOPROC;
    }
    if (name != NULL)
        snprintf(name, 65, "%s", best);
    if (node_id != NULL)
        *node_id = best_id;
    pthread_mutex_unlock(&n->lock);
    return TR_OK;
}

int tr_node_place_without(tr_node *n, const void *key, size_t len, const char *without,
                          char name[65], uint16_t *node_id)
{
    return tr_node_place_excluding(n, key, len, &without, without != NULL, name, node_id);
}
