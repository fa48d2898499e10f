/*
 * conn.c — a node's connections to other nodes: TCP streams (nng's stream API), the handshake,
 * frames received and decoded, batching of outbound messages, accepting and dialing.
 *
 * Connections. Each pair of nodes uses two TCP connections, one dialed by each side, and each
 * node sends only on the connection it dialed ("outbound") and receives on the one the peer
 * dialed ("inbound"). One queue and one stream per direction keep every sender -> receiver pair
 * in order, and no tie-break is needed when two nodes dial each other at once. A connection's
 * bytes are frames (wire.h), each after a 4-byte length that is checked against max_frame before
 * anything is read into memory.
 *
 * Handshake. The dialer sends HELLO (name, node id, incarnation, a fresh nonce, its listen
 * address); the acceptor answers HELLO (its own, with its fresh nonce) and nothing else; the
 * dialer proves the secret first: AUTH = HMAC-SHA256(secret, "troupe-auth-v2" | acceptor's
 * nonce | dialer's nonce | dialer's name | dialer's id); the acceptor checks it and only then
 * answers its own AUTH (nonces swapped, its name and id). Whoever connects to a node's port
 * thus learns no MAC before proving the secret itself, so it cannot test guessed secrets offline
 * (a node only dials its seeds and the members authenticated peers announce). Each side proves
 * the secret without sending it, and a recorded AUTH is useless on another connection. Frames
 * before authentication are at most 1 KiB. Anything else before that, a wrong MAC or a malformed
 * frame drops the connection, with a log line and a counter.
 *
 * Hidden nodes. A hidden node (troupectl) says so in its HELLO (flags, covered by its MAC) and
 * has no listener: the member it dials keeps it as a hidden peer and answers on that same
 * connection (duplex) instead of dialing back; once its own AUTH is on its way, the peer is up
 * for sending. A hidden peer is never gossiped, placed, reported to watchers or dialed, and is
 * forgotten when it goes (members.c).
 *
 * TLS. With tr_node_opts.tls, the streams are nng's tls+tcp ones (tls.c makes their configs):
 * the same stream API, so nothing here changes but the URLs; the TLS handshake happens on the
 * first read or write, so a certificate refused shows up as the first I/O failing (counted in
 * tls_failed). The secret's handshake then runs inside TLS, unchanged.
 *
 * Sending. tr__deliver hands a message for another node's pid to tr__node_route (through the core's
 * transport seam, internal.h), which appends
 * it to the peer's bounded MPSC queue and, if no write is under way, becomes the writer: it
 * encodes everything queued (up to batch_bytes) into one buffer and starts one stream write.
 * The write's completion (an nng thread) sends whatever was queued meanwhile, so an idle node
 * sends a message at once, and a busy one coalesces everything queued during one write into the
 * next: the delay a message waits is bounded by one write, and its batch by batch_bytes.
 */
#include "gossip.h"
#include "node_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/md.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The AUTH of the prover (name, id, HELLO flags) on a connection: its MAC over both nonces, the
 * verifier's (the challenge) first. Flags are covered when there are any (a hidden node's), so
 * nobody in the middle can make a member of a hidden node or the reverse; without flags the
 * input is what it always was. */
static void mac_of(const tr_node *n, const uint8_t *verifier_nonce, const uint8_t *prover_nonce,
                   const char *name, uint16_t id, uint32_t flags, uint8_t out[TR_WIRE_MAC])
{
    uint8_t in[16 + 2 * TR_WIRE_NONCE + TR_WIRE_NAME_MAX + 2 + 4];
    size_t len = 16;
    memcpy(in, "troupe-auth-v2\0\0", 16);
    memcpy(in + len, verifier_nonce, TR_WIRE_NONCE);
    len += TR_WIRE_NONCE;
    memcpy(in + len, prover_nonce, TR_WIRE_NONCE);
    len += TR_WIRE_NONCE;
    size_t nl = strnlen(name, TR_WIRE_NAME_MAX);
    memcpy(in + len, name, nl);
    len += nl;
    in[len++] = (uint8_t)(id >> 8);
    in[len++] = (uint8_t)id;
    if (flags != 0)
        for (int sh = 24; sh >= 0; sh -= 8)
            in[len++] = (uint8_t)(flags >> sh);
    mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), n->secret, n->secret_len, in,
                    len, out);
}

static bool same_mac(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0; /* constant time */
    for (unsigned i = 0; i < TR_WIRE_MAC; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

static void on_rx(void *arg);

static void on_tx(void *arg);

static void on_hs(void *arg);

static void on_auth_sent(void *arg);

static conn *conn_new(tr_node *n, nng_stream *s, bool outbound, peer *pe)
{
    conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->rcap = NODE_RX_CHUNK;
    c->rbuf = malloc(c->rcap);
    if (c->rbuf == NULL || nng_aio_alloc(&c->rx, on_rx, c) != 0 ||
        nng_aio_alloc(&c->tx, on_tx, c) != 0 || nng_aio_alloc(&c->txs, NULL, NULL) != 0 ||
        nng_aio_alloc(&c->rxs, NULL, NULL) != 0 ||
        nng_aio_alloc(&c->hs, on_hs, c) != 0 || nng_aio_alloc(&c->auth, on_auth_sent, c) != 0) {
        if (c->rx)
            nng_aio_free(c->rx);
        if (c->tx)
            nng_aio_free(c->tx);
        if (c->txs)
            nng_aio_free(c->txs);
        if (c->rxs)
            nng_aio_free(c->rxs);
        if (c->hs)
            nng_aio_free(c->hs);
        if (c->auth)
            nng_aio_free(c->auth);
        free(c->rbuf);
        free(c);
        return NULL;
    }
    c->n = n;
    c->s = s;
    c->outbound = outbound;
    c->pe = pe;
    c->state = C_HELLO;
    c->fd = -1;
    c->born_ns = tr__now_ns();
    atomic_init(&c->last_rx_ns, c->born_ns);
    tr__random_bytes(c->nonce, sizeof c->nonce);
    tr__wire_buf_init(&c->out);
    tr__wire_buf_init(&c->hsbuf);
    tr__wire_buf_init(&c->authbuf);
    nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true);
    return c;
}

void tr__conn_destroy(conn *c)
{
    nng_stream_close(c->s);
    nng_aio_stop(c->rx);
    nng_aio_stop(c->tx);
    nng_aio_stop(c->txs);
    nng_aio_stop(c->rxs);
    nng_aio_stop(c->hs);
    nng_aio_stop(c->auth);
    nng_aio_free(c->rx);
    nng_aio_free(c->tx);
    nng_aio_free(c->txs);
    nng_aio_free(c->rxs);
    nng_aio_free(c->hs);
    nng_aio_free(c->auth);
    nng_stream_free(c->s);
    tr__wire_buf_free(&c->out);
    tr__wire_buf_free(&c->hsbuf);
    tr__wire_buf_free(&c->authbuf);
    tr_guest_free(c->guest);
    free(c->rbuf);
    free(c);
}

/* Marks a connection closed (lock held). The stream is closed at once — nng completes its
 * pending operations on its own threads, never inside this call — because once dead and
 * unreferenced, the ticker may free it as soon as the lock is released. */
void tr__conn_mark_dead(conn *c)
{
    if (c == NULL || c->dead)
        return;
    c->dead = true;
    atomic_store(&c->n->reap_pending, true);
    if (c->rd_reg)
        (void)!eventfd_write(c->n->rd_wake, 1); /* the reader lets go of it */
    nng_stream_close(c->s);
    /* nng 1.5.2 leaves an operation started on a stream already closed pending for ever: a
     * writer that took its reference just before the close would hold it until stop. Cancel
     * what is pending now; the reaper cancels again until the writer has let go. */
    nng_aio_cancel(c->tx);
    nng_aio_cancel(c->txs);
    nng_aio_cancel(c->rxs);
    nng_aio_cancel(c->rx);
    nng_aio_cancel(c->hs);
    nng_aio_cancel(c->auth);
}

/* Drops a connection (tr__conn_fail); tls_failed: because its TLS handshake failed (counted). */
static void conn_drop(conn *c, const char *why, bool tls_failed)
{
    tr_node *n = c->n;
    after af;
    memset(&af, 0, sizeof af);
    pthread_mutex_lock(&n->lock);
    if (c->dead) {
        pthread_mutex_unlock(&n->lock);
        return;
    }
    if (tls_failed && !n->stopping)
        count(&n->tls_failed, 1);
    peer *pe = c->pe;
    if ((c->state == C_HELLO || c->state == C_AUTH) && !n->stopping) {
        count(&n->refused_auth, 1); /* a handshake not completed, whatever the cause */
        if (why == NULL)
            why = "closed during the handshake";
    }
    bool handshake = c->state == C_HELLO || c->state == C_AUTH;
    if (n->leaving)
        why = NULL; /* its peers closing are their answer to its LEAVE (tr_node_stop says so) */
    if (why != NULL && handshake && c->outbound && pe != NULL) {
        if (pe->failing)
            why = NULL; /* said once already: a redial every few seconds must not flood the log */
        pe->failing = true;
    }
    if (why != NULL && handshake && !c->outbound) {
        uint64_t now = tr__now_ns();
        if (now - n->hs_log_ns < 1000000000u) {
            n->hs_suppressed++; /* a peer retrying, or a scanner: not a line each */
            why = NULL;
        } else {
            if (n->hs_suppressed > 0)
                tr__node_log(n, "(%llu more inbound handshakes failed in the last second)",
                         (unsigned long long)n->hs_suppressed);
            n->hs_log_ns = now;
            n->hs_suppressed = 0;
        }
    }
    if (why != NULL && n->gossip != NULL && !handshake && (pe == NULL || !pe->hidden) &&
        (!c->outbound || pe == NULL || pe->status != TR_PEER_UP))
        why = NULL; /* monitors: connections come and go (idle ones are closed); the core says
                     * who is down, and a connection we dialed to a member up that breaks is
                     * still logged */
    if (why != NULL)
        tr__node_log(n, "%s connection %s%s: %s", c->outbound ? "outbound" : "inbound",
                 c->outbound ? "to " : "from ",
                 pe != NULL && pe->name[0] ? pe->name
                 : c->state >= C_AUTH     ? c->ph.name
                 : pe != NULL             ? pe->addr /* a seed dialed, not yet named */
                                          : "?",
                 why);
    if (n->gossip != NULL && pe != NULL && !pe->hidden &&
        (pe->out_conn == c || pe->in_conn == c)) {
        /* monitors: the core says who is down; a connection we dialed that broke tells it
         * (suspect at once). One the peer dialed is its own to reopen, and its dialer closes
         * it when it has sent nothing on it for idle_close_ms: one that carried something
         * lately did not close so — its peer crashed (a kill -9: the beats to its watchers
         * come this way), and the core hears it at once too. */
        if (pe->out_conn == c) {
            pe->out_conn = NULL;
            tr__ng_unreachable_locked(n, pe, false);
            af.kick[af.nkick++] = pe; /* what is queued: redialed, or dead letters */
        } else {
            pe->in_conn = NULL;
            uint64_t last = atomic_load_explicit(&c->last_rx_ns, memory_order_relaxed);
            if (!handshake && !n->leaving && c->state == C_UP &&
                tr__now_ns() - last < n->idle_close_ns / 2)
                tr__ng_unreachable_locked(n, pe, false);
        }
        tr__conn_mark_dead(c);
    } else if (pe != NULL && (pe->out_conn == c || pe->in_conn == c)) {
        tr__peer_down_locked(n, pe, &af); /* a connection lost either way: the peer is down */
    } else {
        tr__conn_mark_dead(c);
    }
    tr__node_wake(n);
    pthread_mutex_unlock(&n->lock);
    tr__node_after_run(n, &af);
    tr__ng_flush(n);
}

/* Drops a connection: a protocol error, a closed stream, a timeout. */
void tr__conn_fail(conn *c, const char *why)
{
    conn_drop(c, why, false);
}

/* Drops a connection whose read or write failed with nng error rv (why: what to log, NULL for
 * nothing). With TLS, an error of nng's TLS layer before the secret's handshake is done is the
 * TLS handshake failing: said so, and counted. nng tells no more than "cryptographic error"
 * (mbedTLS's reason stays inside it), so the log line lists what it may be. */
static void conn_fail_io(conn *c, int rv, const char *why)
{
    bool handshake = c->state == C_HELLO || c->state == C_AUTH;
    if (c->n->tls != NULL && handshake &&
        (rv == NNG_ECRYPTO || rv == NNG_EPEERAUTH || rv == NNG_EPROTO)) {
        char line[256];
        snprintf(line, sizeof line,
                 "TLS handshake failed (%s): a certificate refused on either side (another CA, "
                 "expired, missing, or not naming the host), or a peer without TLS",
                 nng_strerror(rv));
        conn_drop(c, line, true);
        return;
    }
    conn_drop(c, why, false);
}

static void conn_unref(conn *c)
{
    pthread_mutex_lock(&c->n->lock);
    c->refs--;
    if (c->refs == 0 && c->dead)
        tr__node_wake(c->n); /* tr_node_stop waits for this (and the ticker reaps it); a
                              * live connection's writes wake nobody: they were 40 of an idle
                              * node's wake-ups a second with monitors */
    pthread_mutex_unlock(&c->n->lock);
}

/* Grows rbuf to hold `need` bytes; false (the connection dropped) when memory is short. */
static bool rx_room(conn *c, size_t need)
{
    if (need > c->rcap) {
        uint8_t *b = realloc(c->rbuf, need);
        if (b == NULL) {
            tr__conn_fail(c, "out of memory");
            return false;
        }
        c->rbuf = b;
        c->rcap = need;
    }
    return true;
}

/* Starts receiving into the free part of rbuf (grown to hold a frame of `need` bytes). */
static void rx_post(conn *c, size_t need)
{
    if (!rx_room(c, need))
        return;
    atomic_store(&c->rx_out, true);
    nng_iov iov = {.iov_buf = c->rbuf + c->rlen, .iov_len = c->rcap - c->rlen};
    nng_aio_set_iov(c->rx, 1, &iov);
    nng_stream_recv(c->s, c->rx);
}

/* A handshake write: buffer b on aio (c->hs for our HELLO, c->auth for our AUTH — the HELLO's write
 * may still be completing when the AUTH goes), before the writer may use the connection. */
static void hs_write(conn *c, nng_aio *aio, tr_wire_buf *b)
{
    nng_iov iov = {.iov_buf = b->data, .iov_len = b->len};
    nng_aio_set_iov(aio, 1, &iov);
    nng_aio_set_timeout(aio, NODE_HANDSHAKE_MS);
    nng_stream_send(c->s, aio);
}

/* A handshake write's completion: a failure drops the connection; a short write sends the rest. */
static void hs_written(conn *c, nng_aio *aio, tr_wire_buf *b)
{
    int rv = nng_aio_result(aio);
    if (rv != 0) {
        conn_fail_io(c, rv, NULL);
        return;
    }
    size_t done = nng_aio_count(aio);
    if (done < b->len) {
        memmove(b->data, b->data + done, b->len - done);
        b->len -= done;
        hs_write(c, aio, b);
    }
}

static void hs_send(conn *c)
{
    hs_write(c, c->hs, &c->hsbuf);
}

static void on_hs(void *arg)
{
    conn *c = arg;
    hs_written(c, c->hs, &c->hsbuf);
}

/* Our AUTH (once per connection). */
static void send_auth(conn *c)
{
    hs_write(c, c->auth, &c->authbuf);
}

static void on_auth_sent(void *arg)
{
    conn *c = arg;
    hs_written(c, c->auth, &c->authbuf);
}

static void put_hello(tr_node *n, tr_wire_buf *b, const uint8_t nonce[TR_WIRE_NONCE])
{
    tr_wire_hello h;
    memset(&h, 0, sizeof h);
    snprintf(h.name, sizeof h.name, "%s", n->name);
    snprintf(h.addr, sizeof h.addr, "%s", n->addr);
    h.node_id = n->id;
    h.incarnation = n->incarnation;
    h.flags = n->hidden ? TR_WIRE_HELLO_HIDDEN : 0;
    memcpy(h.nonce, nonce, TR_WIRE_NONCE);
    size_t f = tr__wire_frame_begin(b, TR_WIRE_HELLO);
    tr__wire_put_hello(b, &h);
    tr__wire_frame_end(b, f);
}

static void put_auth(tr_node *n, tr_wire_buf *b, const uint8_t *peer_nonce,
                     const uint8_t *own_nonce)
{
    uint8_t mac[TR_WIRE_MAC];
    mac_of(n, peer_nonce, own_nonce, n->name, n->id, n->hidden ? TR_WIRE_HELLO_HIDDEN : 0, mac);
    size_t f = tr__wire_frame_begin(b, TR_WIRE_AUTH);
    tr__wire_put_auth(b, mac);
    tr__wire_frame_end(b, f);
}

/* Appends a MEMBERS frame (every peer with a name and an address, and ourselves). Lock held. */
static void put_members(tr_node *n, tr_wire_buf *b)
{
    uint32_t k = 1;
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && !n->peers[i]->hidden && n->peers[i]->name[0] &&
            n->peers[i]->addr[0])
            k++;
    size_t f = tr__wire_frame_begin(b, TR_WIRE_MEMBERS);
    tr__wire_put_members(b, k);
    tr__wire_put_member(b, n->name, n->addr);
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->alias && !n->peers[i]->hidden && n->peers[i]->name[0] &&
            n->peers[i]->addr[0])
            tr__wire_put_member(b, n->peers[i]->name, n->peers[i]->addr);
    tr__wire_frame_end(b, f);
}

/* Queues a control frame for a peer's writer: kind PING, or MEMBERS. Lock held. */
void tr__peer_ctl_queue(tr_node *n, peer *pe, unsigned kind)
{
    pthread_mutex_lock(&pe->ctl_lock);
    if (pe->ctl.len < 64u * 1024u) { /* bounded: control frames are tiny and rare */
        if (kind == TR_WIRE_MEMBERS) {
            put_members(n, &pe->ctl);
        } else {
            size_t f = tr__wire_frame_begin(&pe->ctl, kind);
            tr__wire_frame_end(&pe->ctl, f);
        }
        atomic_store(&pe->ctl_pending, 1);
    }
    pthread_mutex_unlock(&pe->ctl_lock);
}

/* ---- receiving ----------------------------------------------------------------------------- */

typedef struct deliver_ctx {
    tr_node *n;
    uint64_t count;
} deliver_ctx;

static void deliver_envelope(void *arg, tr_pid to, tr_msg *m)
{
    deliver_ctx *d = arg;
    tr_node *n = d->n;
    d->count++;
    if (tr_pid_node(to) != n->id) {
        tr_msg_free(m); /* not ours: nodes do not forward */
        return;
    }
    if ((to & 0xFFFFFFFFFFFFULL) == 0)
        to = n->service;
    if (to == n->service && m->sender == TR_PID_NONE) {
        /* "from nobody" is what the node's own local-only service messages look like (name
         * announcements, retractions, syncs); another node's service always says who it is: a
         * forgery. Dropped, counted. (Other actors may get messages from nobody: a
         * tr_system_send made outside any actor on another node.) */
        count(&n->bad_frames, 1);
        tr_msg_free(m);
        return;
    }
    bool request = (m->flags & TR_MF_REQUEST) != 0;
    tr_pid from = m->sender;
    uint64_t corr = m->corr;
    /* on a guest (on_rx), the actor woken waits in it and runs on this thread */
    tr_worker *w = tr__current_worker(n->sys);
    int rc = tr__deliver(n->sys, w, to, m);
    if ((rc == TR_EFULL || rc == TR_ENOPROC) && request && from != TR_PID_NONE) {
        /* a refused or undeliverable request is answered, so its requester does not wait for
         * nothing (locally the send itself would have said so) */
        tr_msg *r = tr_msg_new(rc == TR_EFULL ? TR_MSG_REJECTED : TR_MSG_NOPROC, 0);
        if (r != NULL) {
            r->flags = TR_MF_REPLY | TR_MF_SYSTEM;
            r->corr = corr;
            r->sender = to;
            tr__deliver(n->sys, w, from, r);
        }
    }
}

typedef struct learn_ctx {
    tr_node *n;
} learn_ctx;

static void learn_member(void *arg, const char *name, const char *addr)
{
    learn_ctx *l = arg;
    tr__peer_learn(l->n, name, addr, false);
}

static void ignore_member(void *arg, const char *name, const char *addr)
{
    (void)arg;
    (void)name;
    (void)addr;
}

/* A hidden node (its HELLO said so) proved the secret: a hidden peer on this one connection,
 * its sends held until our AUTH is on its way (hidden_ready). Lock held. */
static void inbound_hidden(tr_node *n, conn *c, after *af)
{
    const char *why = NULL;
    peer *old = NULL;
    size_t nhidden = 0;
    for (size_t i = 0; i < n->npeers; i++) {
        peer *p = n->peers[i];
        if (p->alias || !p->hidden)
            continue;
        nhidden++;
        if (strcmp(p->name, c->ph.name) == 0)
            old = p; /* the same hidden node again: its earlier connection goes */
    }
    if (strcmp(c->ph.name, n->name) == 0 || tr__peer_by_name(n, c->ph.name) != NULL)
        why = "its name is a member's";
    else if (old == NULL && nhidden >= NODE_MAX_HIDDEN)
        why = "too many hidden nodes connected";
    if (why == NULL && old != NULL)
        tr__peer_down_locked(n, old, af); /* forgotten: its slot is free again */
    peer *holder = atomic_load(&n->by_id[c->ph.node_id]);
    if (why == NULL && (c->ph.node_id == n->id || holder != NULL))
        why = "its node id is taken";
    peer *pe = why == NULL ? tr__peer_new_hidden(n, c->ph.name) : NULL;
    if (why == NULL && pe == NULL)
        why = "no room in the peer table";
    if (pe == NULL) {
        tr__node_log(n, "hidden node %s refused: %s", c->ph.name, why);
        tr__conn_mark_dead(c);
        return;
    }
    pe->in_conn = c;
    c->pe = pe;
    c->duplex = true;
    c->state = C_UP;
    pe->joining = true; /* sends held: our AUTH goes first (hidden_ready) */
    pe->joining_ns = tr__now_ns();
    pe->node_id = c->ph.node_id;
    pe->incarnation = c->ph.incarnation;
    atomic_store(&n->by_id[pe->node_id], pe);
    tr__node_wake(n);
}

/* Our AUTH to a hidden node is queued on the stream (nng writes a stream's sends in order): what
 * we send it may follow, on the same connection. */
static void hidden_ready(tr_node *n, conn *c)
{
    peer *pe = NULL;
    pthread_mutex_lock(&n->lock);
    if (!c->dead && c->pe != NULL && c->pe->in_conn == c && c->pe->joining) {
        pe = c->pe;
        pe->out_conn = c;
        pe->status = TR_PEER_UP;
        pe->joining = false;
        pe->ever_up = true;
        tr__node_log_at(n, TR_LOG_DEBUG, "hidden node %s (node id %u) connected", pe->name,
                        pe->node_id);
        tr__node_wake(n);
    }
    pthread_mutex_unlock(&n->lock);
    if (pe != NULL)
        tr__peer_kick(pe);
}

/* The peer (inbound side) authenticated: attach the connection. Lock held. */
static void inbound_up(tr_node *n, conn *c, after *af)
{
    if (c->ph.flags & TR_WIRE_HELLO_HIDDEN) {
        inbound_hidden(n, c, af);
        return;
    }
    peer *pe = tr__peer_by_name(n, c->ph.name);
    if (n->gossip != NULL) {
        /* monitors: a connection, not a sign of life (the core says who is up and makes the
         * peer); one from a node not known yet is kept unattached: its frames go to the core,
         * which knows the sender by its authenticated name */
        if (pe != NULL) {
            if (pe->in_conn != NULL && pe->in_conn != c)
                tr__conn_mark_dead(pe->in_conn);
            pe->in_conn = c;
        }
        c->pe = pe;
        c->state = C_UP;
        tr__node_wake(n);
        return;
    }
    if (pe == NULL) {
        tr__peer_learn(n, c->ph.name, c->ph.addr, true);
        pe = tr__peer_by_name(n, c->ph.name);
    }
    if (pe == NULL) {
        tr__node_log(n, "no room for peer %s", c->ph.name);
        tr__conn_mark_dead(c);
        return;
    }

    if ((pe->status == TR_PEER_UP || pe->joining) && pe->incarnation != c->ph.incarnation)
        tr__peer_down_locked(n, pe, af); /* it restarted before we noticed */
    peer *holder = atomic_load(&n->by_id[c->ph.node_id]);
    if (c->ph.node_id == n->id || (holder != NULL && holder != pe)) {
        tr__node_log(n, "peer %s uses node id %u, already taken: refused", c->ph.name, c->ph.node_id);
        tr__conn_mark_dead(c);
        return;
    }
    if (pe->in_conn != NULL && pe->in_conn != c)
        tr__conn_mark_dead(pe->in_conn);
    pe->in_conn = c;
    c->pe = pe;
    c->state = C_UP;
    if (pe->status != TR_PEER_UP && !pe->joining) {
        /* it may send requests before our connection to it is up: hold our sends to it */
        pe->joining = true;
        pe->joining_ns = tr__now_ns();
        pe->node_id = c->ph.node_id;
        pe->incarnation = c->ph.incarnation;
        atomic_store(&n->by_id[pe->node_id], pe);
    }
    if (pe->out_conn == NULL && !pe->dialing)
        pe->next_dial_ns = 0; /* dial back now */
    tr__node_wake(n);
}

/* The peer (outbound side) proved the secret: it is up. Lock held. */
static void outbound_up(tr_node *n, conn *c, after *af)
{
    peer *pe = c->pe;
    peer *other = tr__peer_by_name(n, c->ph.name);
    if (other != NULL && other != pe) {
        /* a seed address that names a peer we already know under another address */
        pe->alias = true;
        pe->out_conn = NULL;
        tr__conn_mark_dead(c);
        return;
    }
    peer *holder = atomic_load(&n->by_id[c->ph.node_id]);
    if (n->gossip == NULL && (c->ph.node_id == n->id || (holder != NULL && holder != pe))) {
        tr__node_log(n, "peer %s uses node id %u, already taken: refused", c->ph.name, c->ph.node_id);
        pe->out_conn = NULL;
        tr__conn_mark_dead(c);
        return;
    }
    if (n->gossip != NULL && tr__left_incarnation(n, c->ph.name, c->ph.node_id)) {
        /* a dial (a seed's, say) answered by the very incarnation that left — it listens until
         * its peers heard it: naming this entry after it listed it a second time, down, beside
         * the left list's entry */
        pe->out_conn = NULL;
        tr__conn_mark_dead(c);
        return;
    }
    snprintf(pe->name, sizeof pe->name, "%s", c->ph.name);
    if (n->gossip != NULL) {
        /* monitors: our connection is up, the peer is up only when the core says so — and
         * of two members with one node id, the core decides which (nodegossip.c, id_claim):
         * the other still gets the core's frames on it, so it learns that it is refused */
        if (pe->status == TR_PEER_UP && pe->node_id != c->ph.node_id) {
            pe->out_conn = NULL; /* another incarnation than the one the core holds up */
            tr__conn_mark_dead(c);
            return;
        }
        pe->backoff_ms = n->backoff_min_ms;
        pe->failing = false;
        c->state = C_UP;
        /* a member we watch beats to us on it: read by the ticker ("Beats" below); others
         * keep a receive posted (a ring that changes later: its beats come that way) */
        atomic_store(&c->polled, n->tls == NULL && tr__ng_watches_locked(n, pe->name));
        atomic_store(&pe->last_tx_ns, tr__now_ns());
        if (af->nkick < 2)
            af->kick[af->nkick++] = pe; /* what waited for the connection */
        tr__node_wake(n);
        return;
    }
    tr__left_clear(n, pe->name); /* a node that had left, back at a seed's address */
    if (pe->joining && pe->incarnation != c->ph.incarnation) {
        /* held for an incarnation that is gone */
        pe->out_conn = NULL;
        tr__peer_down_locked(n, pe, af);
        pe->out_conn = c;
    }
    if (pe->in_conn != NULL && pe->in_conn->ph.incarnation != c->ph.incarnation) {
        tr__conn_mark_dead(pe->in_conn); /* from an earlier incarnation */
        pe->in_conn = NULL;
    }
    pe->node_id = c->ph.node_id;
    pe->incarnation = c->ph.incarnation;
    pe->backoff_ms = n->backoff_min_ms;
    pe->failing = false;
    c->state = C_UP;
    if (n->hidden) {
        /* a hidden node receives on the connection it dialed, and tells nobody what it knows */
        c->duplex = true;
        pe->in_conn = c;
    } else {
        /* what we know goes first (our AUTH went before theirs came); then messages may flow */
        pthread_mutex_lock(&pe->ctl_lock);
        put_members(n, &pe->ctl);
        atomic_store(&pe->ctl_pending, 1);
        pthread_mutex_unlock(&pe->ctl_lock);
    }
    pe->status = TR_PEER_UP;
    af->pull = pe->ever_up;
    pe->ever_up = true;
    count(&pe->ups, 1);
    pe->joining = false;
    atomic_store(&n->by_id[pe->node_id], pe);
    af->up = true;
    snprintf(af->name, sizeof af->name, "%s", pe->name);
    af->node_id = pe->node_id;
    if (af->nkick < 2)
        af->kick[af->nkick++] = pe;
    n->members_dirty = true;
    tr__node_log(n, "peer %s (node id %u) is up", pe->name, pe->node_id);
    tr__node_wake(n);
}

/* One frame from the peer. Returns false when the connection was dropped. */
static bool rx_frame(conn *c, const uint8_t *f, size_t len)
{
    tr_node *n = c->n;
    unsigned kind;
    count(&n->frames_in, 1);
    if (c->state == C_UP && c->pe != NULL)
        count(&c->pe->bytes_in, len);
    if (tr__wire_kind(f, len, &kind) != TR_OK) {
        if (c->state == C_UP)
            count(&n->bad_frames, 1);
        tr__conn_fail(c, "not a troupe frame (or another protocol version)");
        return false;
    }
    if (c->state == C_UP && (!c->outbound || c->duplex)) {
        if (kind == TR_WIRE_DATA) {
            deliver_ctx d = {.n = n, .count = 0};
            if (tr__ext_enter(n->sys) != TR_OK)
                return true; /* the system is stopping */
            int rc = tr__wire_get_data(f, len, n->max_frame, deliver_envelope, &d);
            tr__ext_leave(n->sys);
            count(&n->msgs_in, d.count);
            if (c->pe != NULL)
                count(&c->pe->msgs_in, d.count);
            if (rc == TR_EBADMSG) {
                count(&n->bad_frames, 1);
                tr__conn_fail(c, "malformed DATA frame");
                return false;
            }
            return true;
        }
        if (kind == TR_WIRE_PING)
            return true;
        if (kind == TR_WIRE_GOSSIP && n->gossip != NULL && !c->duplex) {
            if (tr__ng_receive(n, c, f, len) == TR_EBADMSG) {
                count(&n->bad_frames, 1);
                tr__conn_fail(c, "malformed GOSSIP frame");
                return false;
            }
            return true;
        }
        if (kind == TR_WIRE_LEAVE) {
            if (tr__wire_get_leave(f, len) != TR_OK) {
                count(&n->bad_frames, 1);
                tr__conn_fail(c, "malformed LEAVE frame");
                return false;
            }
            after af;
            memset(&af, 0, sizeof af);
            pthread_mutex_lock(&n->lock);
            peer *pe = c->pe;
            if (!c->dead && pe != NULL && pe->in_conn == c)
                tr__peer_left_locked(n, pe, &af); /* closes both connections: the sender's
                                                   * sign that it was heard */
            else
                tr__conn_mark_dead(c);
            pthread_mutex_unlock(&n->lock);
            tr__node_after_run(n, &af);
            return false;
        }
        if (kind == TR_WIRE_MEMBERS) {
            learn_ctx l = {.n = n};
            pthread_mutex_lock(&n->lock);
            /* a hidden node learns nobody (it talks to the member it dialed), and nobody learns
             * from a hidden node: checked, not used */
            int rc = tr__wire_get_members(f, len, n->hidden || c->duplex ? ignore_member
                                                                         : learn_member, &l);
            pthread_mutex_unlock(&n->lock);
            if (rc != TR_OK) {
                count(&n->bad_frames, 1);
                tr__conn_fail(c, "malformed MEMBERS frame");
                return false;
            }
            return true;
        }
        if (kind == TR_WIRE_AUTH || kind == TR_WIRE_HELLO) {
            count(&n->bad_frames, 1);
            tr__conn_fail(c, "handshake frame after the handshake");
            return false;
        }
        if (kind == TR_WIRE_GOSSIP) {
            count(&n->bad_frames, 1);
            tr__conn_fail(c, "GOSSIP frame, and this node runs the full mesh (monitors = 0)");
            return false;
        }
    }
    if (c->state == C_UP && c->outbound) {
        if (kind == TR_WIRE_PING)
            return true;
        if (kind == TR_WIRE_GOSSIP && n->gossip != NULL) { /* beats, on a polled connection */
            if (tr__ng_receive(n, c, f, len) == TR_EBADMSG) {
                count(&n->bad_frames, 1);
                tr__conn_fail(c, "malformed GOSSIP frame");
                return false;
            }
            return true;
        }
        count(&n->bad_frames, 1);
        tr__conn_fail(c, "unexpected frame on an outbound connection");
        return false;
    }
    if (c->state == C_REFUSED)
        return true; /* dropped by the ticker or by the peer */
    after af;
    memset(&af, 0, sizeof af);
    if (c->state == C_HELLO) {
        tr_wire_hello h;
        if (kind != TR_WIRE_HELLO || tr__wire_get_hello(f, len, &h) != TR_OK) {
            tr__conn_fail(c, "no valid HELLO");
            return false;
        }
        if (h.flags != 0 && (c->outbound || n->hidden)) {
            tr__conn_fail(c, "a hidden node answered, or dialed a hidden node");
            return false;
        }
        bool self = strcmp(h.name, n->name) == 0;
        pthread_mutex_lock(&n->lock); /* the ticker and tr__conn_fail read state and ph */
        c->ph = h;
        c->state = self && !c->outbound ? C_REFUSED : C_AUTH;
        pthread_mutex_unlock(&n->lock);
        if (!c->outbound) {
            /* answer HELLO only: the dialer proves the secret first (a node that dialed
             * itself learns so from our HELLO) */
            put_hello(n, &c->hsbuf, c->nonce);
            if (tr__wire_status(&c->hsbuf) != TR_OK) {
                tr__conn_fail(c, "out of memory");
                return false;
            }
            hs_send(c);
        } else if (strcmp(c->ph.name, n->name) != 0) {
            /* we dialed: we prove the secret first */
            put_auth(n, &c->authbuf, c->ph.nonce, c->nonce);
            if (tr__wire_status(&c->authbuf) != TR_OK) {
                tr__conn_fail(c, "out of memory");
                return false;
            }
            send_auth(c);
        } else {
            pthread_mutex_lock(&n->lock);
            c->pe->alias = true; /* a seed that is ourselves: never dialed again */
            c->pe->out_conn = NULL;
            tr__conn_mark_dead(c);
            pthread_mutex_unlock(&n->lock);
            tr__node_after_run(n, &af);
            return false;
        }
        return true;
    }
    /* C_AUTH: the peer proves the secret */
    uint8_t mac[TR_WIRE_MAC], want[TR_WIRE_MAC];
    if (kind != TR_WIRE_AUTH || tr__wire_get_auth(f, len, mac) != TR_OK) {
        tr__conn_fail(c, "no valid AUTH");
        return false;
    }
    mac_of(n, c->nonce, c->ph.nonce, c->ph.name, c->ph.node_id, c->ph.flags, want);
    if (!same_mac(mac, want)) {
        tr__conn_fail(c, "wrong cluster secret: refused");
        return false;
    }
    pthread_mutex_lock(&n->lock);
    if (c->dead) {
        pthread_mutex_unlock(&n->lock);
        return false;
    }
    if (c->outbound)
        outbound_up(n, c, &af);
    else
        inbound_up(n, c, &af);
    bool alive = !c->dead;
    pthread_mutex_unlock(&n->lock);
    if (alive && !c->outbound) { /* the dialer proved it: now we prove it too */
        put_auth(n, &c->authbuf, c->ph.nonce, c->nonce);
        if (tr__wire_status(&c->authbuf) == TR_OK) {
            send_auth(c);
            pthread_mutex_lock(&n->lock);
            c->auth_posted = true; /* nng writes a stream's sends in order */
            pthread_mutex_unlock(&n->lock);
            if (c->duplex)
                hidden_ready(n, c);
        } else {
            tr__conn_fail(c, "out of memory");
        }
    }
    tr__node_after_run(n, &af);
    return alive;
}

static size_t rx_frames(conn *c, size_t got);
static bool reader_take(conn *c, size_t need);

/* A receive completed (on an nng thread). The actors its frames wake run here, as a guest's do,
 * up to NODE_RX_TURNS turns (the rest goes to the workers): a request that came in is answered
 * from this thread, its reply written inline, without waking a worker — one thread hand-off
 * less per direction of a round trip. */
static void on_rx(void *arg)
{
    conn *c = arg;
    int rv = nng_aio_result(c->rx);
    if (rv != 0) {
        conn_fail_io(c, rv,
                     rv == NNG_ECLOSED || rv == NNG_ECANCELED ? NULL : "connection closed");
        return;
    }
    tr_guest *g = NULL;
    if (c->state == C_UP && !c->outbound) {
        if (c->guest == NULL)
            (void)tr_guest_new(c->n->sys, &c->guest); /* none: the workers run them */
        if (c->guest != NULL && tr_guest_enter(c->guest) == TR_OK)
            g = c->guest;
    }
    size_t need = rx_frames(c, nng_aio_count(c->rx));
    if (g != NULL)
        (void)tr_guest_leave(g, NODE_RX_TURNS);
    if (need == 0)
        return;
    if (c->outbound) {
        /* decided under the lock the ticker flips `polled` under (tr__conn_poll): either it
         * sees this receive still out and leaves the repost to us, or we see its flip */
        pthread_mutex_lock(&c->n->lock);
        bool polled = atomic_load(&c->polled);
        if (polled) {
            c->rneed = need; /* up (outbound_up, in rx_frames), or the member became one we
                              * watch: the ticker reads it from now on */
            atomic_store(&c->rx_out, false);
        }
        pthread_mutex_unlock(&c->n->lock);
        if (polled)
            return;
    }
    if (reader_take(c, need))
        return; /* the reader reads it from now on */
    rx_post(c, need); /* after the guest: the next completion may run on another thread */
}

/* Parses what was received: the size to receive into next, or 0 when the connection failed. */
static size_t rx_frames(conn *c, size_t got)
{
    tr_node *n = c->n;
    c->rlen += got;
    atomic_store_explicit(&c->last_rx_ns, tr__now_ns(), memory_order_relaxed);
    size_t off = 0;
    size_t need = c->rcap < NODE_RX_CHUNK ? NODE_RX_CHUNK : c->rcap;
    while (c->rlen - off >= TR_WIRE_PREFIX) {
        uint32_t flen = tr__wire_prefix(c->rbuf + off);
        /* until the peer has proved the secret its frames are handshake frames: small */
        size_t limit = c->state == C_UP ? n->max_frame : NODE_HANDSHAKE_FRAME;
        if (flen > limit || flen < TR_WIRE_HEADER) {
            if (c->state == C_UP || flen > limit)
                count(&n->bad_frames, 1);
            tr__conn_fail(c, flen < TR_WIRE_HEADER ? "frame too short"
                         : c->state == C_UP  ? "frame above max_frame"
                                              : "frame above the handshake's 1 KiB before "
                                                "authentication");
            return 0;
        }
        if (c->rlen - off < TR_WIRE_PREFIX + (size_t)flen) {
            if (TR_WIRE_PREFIX + (size_t)flen > need)
                need = TR_WIRE_PREFIX + (size_t)flen;
            break;
        }
        if (!rx_frame(c, c->rbuf + off + TR_WIRE_PREFIX, flen))
            return 0;
        off += TR_WIRE_PREFIX + flen;
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    pthread_mutex_lock(&n->lock);
    bool dead = c->dead;
    pthread_mutex_unlock(&n->lock);
    if (dead)
        return 0;
    if (c->rcap > NODE_RX_KEEP && c->rlen < NODE_RX_CHUNK && need <= NODE_RX_CHUNK) {
        uint8_t *b = realloc(c->rbuf, NODE_RX_CHUNK); /* give back a large frame's room */
        if (b != NULL) {
            c->rbuf = b;
            c->rcap = NODE_RX_CHUNK;
        }
    }
    if (c->rlen == c->rcap && need <= c->rcap)
        need = c->rcap * 2; /* cannot happen: a full buffer holds a frame */
    return need;
}

/* ---- sending ------------------------------------------------------------------------------- */

/* Turns everything queued towards pe into dead letters (no connection to send it on). */
void tr__peer_drop_queue(peer *pe)
{
    tr_node *n = pe->n;
    tr_mpsc_node *x;
    while ((x = tr__mpsc_pop(&pe->q)) != NULL) {
        tr_msg *m = (tr_msg *)x;
        atomic_fetch_sub_explicit(&pe->qlen, 1, memory_order_relaxed);
        count(&n->lost, 1);
        if (m->flags & TR_MF_SIGNAL) {
            static const tr_reason noconn = {.kind = TR_REASON_NOCONNECTION};
            tr__signal_bounce(n->sys, m, &noconn);
        } else {
            tr__dead_letter(n->sys, m->to, m);
        }
    }
    pthread_mutex_lock(&pe->ctl_lock);
    pe->ctl.len = 0;
    atomic_store(&pe->ctl_pending, 0);
    pthread_mutex_unlock(&pe->ctl_lock);
    atomic_store(&pe->leave_pending, 0); /* no connection to say it on */
}

/* Fills c->out with the control frames and up to batch_bytes of queued messages. */
static void tx_build(peer *pe, conn *c)
{
    tr_node *n = pe->n;
    tr_wire_buf *b = &c->out;
    b->len = 0;
    b->oom = 0;
    c->out_off = 0;
    if (atomic_exchange(&pe->ctl_pending, 0)) {
        pthread_mutex_lock(&pe->ctl_lock);
        tr__wire_put_raw(b, pe->ctl.data, pe->ctl.len);
        pe->ctl.len = 0;
        pthread_mutex_unlock(&pe->ctl_lock);
    }
    size_t f = 0;
    uint64_t k = 0;
    while (b->len < n->batch_bytes && atomic_load_explicit(&pe->qlen, memory_order_acquire) > 0) {
        tr_mpsc_node *x = tr__mpsc_pop(&pe->q);
        if (x == NULL)
            break; /* a sender is between its two steps: its message goes in the next write */
        tr_msg *m = (tr_msg *)x;
        atomic_fetch_sub_explicit(&pe->qlen, 1, memory_order_relaxed);
        if (k == 0)
            f = tr__wire_frame_begin(b, TR_WIRE_DATA);
        tr__wire_put_envelope(b, m->to, m);
        tr_msg_free(m);
        k++;
    }
    if (k > 0) {
        tr__wire_frame_end(b, f);
        count(&n->msgs_out, k);
        count(&pe->msgs_out, k);
    }
    /* our node leaves: its LEAVE goes last, once what was queued before is on its way (nothing
     * more is queued meanwhile: tr__node_route refuses while the node leaves) */
    if (atomic_load(&pe->leave_pending) && atomic_load(&pe->qlen) == 0) {
        atomic_store(&pe->leave_pending, 0);
        size_t lf = tr__wire_frame_begin(b, TR_WIRE_LEAVE);
        tr__wire_frame_end(b, lf);
    }
}

/* Writes that complete at once. nng dispatches every completion to one of its task threads: a
 * thread wake-up per write even when the socket took the bytes at once — for the ticker's beats
 * at 100 idle nodes a third of what an idle cluster cost, and for a round trip across nodes one
 * wake-up in each direction, on a 2-core host the other side's CPU (remote-pingpong: 14.7-16.0k
 * round trips/s against 26.4-27.5k written inline, with the reader below, 4.7-5.1 s of CPU
 * against 2.0). So every write (the ticker's beats, the writer's frames) first goes through an
 * aio with no callback: nng's TCP stream tries the write inline, and a completion without a
 * callback runs in the completing thread. The write is then cancelled at once: a no-op when it
 * is done (nng completes a write after one writev, with the count the socket took: part of it
 * on a full socket); when the socket took nothing it comes back cancelled. The rest goes as
 * usual: a beat the usual way, whole (one written in part puts the stream out of step: the
 * connection is dropped), the writer's rest through c->tx, whose completion continues the
 * chain. So the writer never waits, and the aio has no timeout (a timeout would wake nng's
 * expiry threads). Not for TLS (its stream completes on nng's threads). */

/* Writes buf on c as far as the socket takes it at once (c->txs: its writer, or the ticker's
 * beats on an inbound connection): 0 with *sent (all of it, or part on a full socket),
 * NNG_ECANCELED when it took nothing, or the stream's error. */
static int write_now(conn *c, void *buf, size_t len, size_t *sent)
{
    nng_iov iov = {.iov_buf = buf, .iov_len = len};
    nng_aio_set_iov(c->txs, 1, &iov);
    nng_aio_set_timeout(c->txs, NNG_DURATION_INFINITE);
    nng_stream_send(c->s, c->txs);
    nng_aio_cancel(c->txs); /* not written at once: back, unwritten (ECANCELED) */
    nng_aio_wait(c->txs);
    *sent = nng_aio_count(c->txs);
    return nng_aio_result(c->txs);
}

/* Writes the rest of c->out, as much as the socket takes at once: true when all of it is
 * written or the stream failed (rv set); false: the caller sends the rest as usual. */
static bool tx_send_inline(conn *c, int *rv)
{
    *rv = 0;
    size_t left = c->out.len - c->out_off;
    if (c->n->tls != NULL)
        return false;
    size_t sent;
    int r = write_now(c, c->out.data + c->out_off, left, &sent);
    c->out_off += sent;
    if (r == NNG_ECANCELED)
        return false;
    *rv = r;
    if (r == 0 && c->out_off >= c->out.len)
        count(&c->n->writes_inline, 1); /* (all of what was left, in one go) */
    return r != 0 || c->out_off >= c->out.len;
}

/* ---- Beats (with monitors, plain TCP) --------------------------------------------------------
 *
 * The core's beats are the whole traffic of an idle cluster: K a heartbeat from every member, one
 * to each of its watchers. Through nng's callbacks each one woke a thread twice on the receiving
 * side (the poller, then a task thread) — most of what 100 idle nodes cost. So they go where no
 * callback is waiting:
 *
 *   - A watcher dials each member it watches (nodegossip.c keeps that connection open) and keeps
 *     no receive posted on it once it is up (`polled`): the ticker reads it at every tick with
 *     recv(2) on the stream's socket, MSG_DONTWAIT. nng never reads a stream on which no receive
 *     is posted, so the bytes are ours; through nng (an aio without callback, cancelled at once)
 *     a read that found nothing armed the socket in nng's poller, which then woke for the beat
 *     — every node's beats are written at the same moments, so 2 of 5 reads a tick found
 *     nothing: 12.0% of one core for 100 idle nodes against 9.8% with recv(2), in one sitting.
 *     The socket is found once per connection by its two addresses (stream_fd); where it is
 *     not (no /proc), the ticker reads through nng as before.
 *   - A member writes its beat to a watcher on the connection that watcher dialed to it (its
 *     in_conn), from the ticker, inline; when that connection is missing or the socket does not
 *     take the frame at once, the beat goes the usual way (its own connection, read with a
 *     receive posted).
 *
 * So an idle node wakes once a heartbeat (its ticker) and makes 2K system calls. A beat read at
 * the tick after the one it was written at is heard a heartbeat late at most, inside the core's
 * margins (suspect after three heartbeats of silence). The watcher learns of a crash at its next
 * read (the connection reads as closed: unreachable, suspect at once). Everything else — pings,
 * acks, gossip, messages — travels as before. Not with TLS (its stream completes on nng's threads:
 * nothing is gained). */

/* Whether a's address (nng's, network byte order) is the socket address sa. */
static bool addr_is(const nng_sockaddr *a, const struct sockaddr_storage *sa)
{
    if (a->s_family == NNG_AF_INET && sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return a->s_in.sa_port == in->sin_port && a->s_in.sa_addr == in->sin_addr.s_addr;
    }
    if (a->s_family == NNG_AF_INET6 && sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)sa;
        return a->s_in6.sa_port == in->sin6_port &&
               memcmp(a->s_in6.sa_addr, &in->sin6_addr, 16) == 0;
    }
    return false;
}

/* The socket under a plain TCP stream: the descriptor whose two addresses are the stream's
 * (a TCP connection's pair is unique; the peer's end, even in this process, has them swapped),
 * or -2. Linux (/proc/self/fd); elsewhere -2, and the ticker reads through nng. The directory is
 * opened and listed, and the descriptors asked, with raw system calls: ThreadSanitizer follows
 * descriptors by number, and libuv closes its own with a raw close(2) it does not see, so a
 * number libuv closed and this opened again read to it as a race. */
static int stream_fd(nng_stream *s)
{
#if defined(__linux__) && defined(SYS_getdents64)
    nng_sockaddr la, ra;
    if (nng_stream_get_addr(s, NNG_OPT_LOCADDR, &la) != 0 ||
        nng_stream_get_addr(s, NNG_OPT_REMADDR, &ra) != 0)
        return -2;
    long d = syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0)
        return -2;
    int found = -2;
    _Alignas(8) char buf[4096];
    for (long got; found < 0 && (got = syscall(SYS_getdents64, d, buf, sizeof buf)) > 0;) {
        for (long off = 0; off < got && found < 0;) {
            /* struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name */
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char *name = buf + off + 19;
            off += reclen;
            char *end;
            long fd = strtol(name, &end, 10);
            if (*end != '\0' || end == name || fd < 0 || fd == d || reclen == 0)
                continue;
            struct sockaddr_storage sl = {0}, sr = {0};
            socklen_t ll = sizeof sl, lr = sizeof sr;
            /* the peer's address first: an inbound connection's (an ephemeral port) is its
             * own, so most descriptors cost one system call */
            if (syscall(SYS_getpeername, fd, (struct sockaddr *)&sr, &lr) == 0 &&
                addr_is(&ra, &sr) &&
                syscall(SYS_getsockname, fd, (struct sockaddr *)&sl, &ll) == 0 &&
                addr_is(&la, &sl))
                found = (int)fd;
        }
    }
    (void)syscall(SYS_close, d);
    return found;
#else
    (void)s;
    return -2;
#endif
}

/* One recv(2), without waiting, of what c's socket holds, its frames handled (the ticker's polled
 * connections, the reader's): 1 when it filled the room (more may be there), 0 when it read all
 * there was or nothing, -1 when the connection failed or was dropped. */
static int sock_read(conn *c)
{
    if (!rx_room(c, c->rneed > NODE_RX_CHUNK ? c->rneed : NODE_RX_CHUNK))
        return -1;
    size_t room = c->rcap - c->rlen;
    ssize_t r = recv(c->fd, c->rbuf + c->rlen, room, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (r <= 0) {
        conn_fail_io(c, NNG_ECONNSHUT, "connection closed");
        return -1;
    }
    size_t next = rx_frames(c, (size_t)r);
    if (next == 0)
        return -1; /* dropped */
    c->rneed = next;
    return (size_t)r == room;
}

/* Reads what a polled connection holds, without waiting (the ticker, a reference held). */
static void poll_one(conn *c)
{
    if (c->fd == -1)
        c->fd = stream_fd(c->s);
    for (int round = 0; round < 8; round++) {
        if (c->fd >= 0) {
            if (sock_read(c) <= 0)
                return;
            continue;
        }
        if (!rx_room(c, c->rneed > NODE_RX_CHUNK ? c->rneed : NODE_RX_CHUNK))
            return;
        size_t room = c->rcap - c->rlen;
        nng_iov iov = {.iov_buf = c->rbuf + c->rlen, .iov_len = room};
        nng_aio_set_iov(c->rxs, 1, &iov);
        nng_aio_set_timeout(c->rxs, NNG_DURATION_INFINITE);
        nng_stream_recv(c->s, c->rxs);
        nng_aio_cancel(c->rxs); /* nothing there: back at once, ECANCELED */
        nng_aio_wait(c->rxs);
        int rv = nng_aio_result(c->rxs);
        if (rv == NNG_ECANCELED)
            return;
        if (rv != 0) {
            conn_fail_io(c, rv, rv == NNG_ECLOSED ? NULL : "connection closed");
            return;
        }
        size_t got = nng_aio_count(c->rxs);
        size_t next = rx_frames(c, got);
        if (next == 0)
            return; /* dropped */
        c->rneed = next;
        if (got < room)
            return; /* all of it */
    }
}

/* Whether the polled connections found at the last look still stand (lock held): each up, its
 * peer's connection, and the core's watched set unchanged. */
static bool polls_stand(tr_node *n)
{
    if (n->polls_short || n->polls_gen != tr__gossip_ring_gen(n->gossip))
        return false;
    for (size_t i = 0; i < n->npolls; i++) {
        conn *c = n->polls[i];
        if (c->dead || c->state != C_UP || c->pe == NULL || c->pe->out_conn != c)
            return false;
    }
    return true;
}

void tr__conn_poll(tr_node *n)
{
    _Static_assert(NODE_MAX_POLLS == TR_GOSSIP_MONITORS_MAX, "a polled connection per watch");
    conn *cs[NODE_MAX_POLLS], *drop[NODE_MAX_POLLS], *post[16];
    size_t k = 0, nd = 0, np = 0;
    pthread_mutex_lock(&n->lock);
    if (n->gossip == NULL || n->tls != NULL) {
        pthread_mutex_unlock(&n->lock);
        return;
    }
    /* The connections to read are looked for again only when the watched set or one of them
     * changed (a walk over every connection and the core's watched members, each tick, was a
     * tenth of an idle node's CPU: cold cache lines). The watched set changes with the ring: a
     * connection we dialed to a member we watch now is read by the ticker once its posted
     * receive completes (the member's next beat: until then it is not read here); one to a
     * member no longer watched gets a receive posted again (else a member watched after we had
     * dialed it for something else beat through nng's threads for as long as the ring stood:
     * 5 wake-ups of two threads a second). */
    if (!polls_stand(n)) {
        nd = n->npolls;
        memcpy(drop, n->polls, nd * sizeof *drop); /* their references, let go below */
        n->npolls = 0;
        n->polls_gen = tr__gossip_ring_gen(n->gossip);
        tr_gossip_member w[TR_GOSSIP_MONITORS_MAX];
        size_t nw = tr__gossip_watched(n->gossip, w, TR_GOSSIP_MONITORS_MAX), found = 0;
        if (nw > TR_GOSSIP_MONITORS_MAX)
            nw = TR_GOSSIP_MONITORS_MAX;
        for (conn *c = n->conns; c != NULL; c = c->next) {
            if (!c->outbound || c->dead || c->state != C_UP || c->pe == NULL || c->pe->hidden ||
                c->pe->out_conn != c)
                continue;
            bool want = false;
            for (size_t i = 0; i < nw && !want; i++)
                want = strcmp(w[i].name, c->pe->name) == 0;
            if (want) {
                atomic_store(&c->polled, true);
                c->refs++;
                n->polls[n->npolls++] = c; /* one per peer: nw at most */
                found++;
            } else if (atomic_load(&c->polled) && np < sizeof post / sizeof post[0]) {
                atomic_store(&c->polled, false);
                if (!atomic_load(&c->rx_out)) { /* (else its receive is still running: it reposts) */
                    c->refs++;
                    post[np++] = c;
                }
            }
        }
        n->polls_short = found < nw;
    }
    for (size_t i = 0; i < n->npolls; i++) {
        conn *c = n->polls[i];
        if (!atomic_load(&c->rx_out)) {
            c->refs++;
            cs[k++] = c;
        }
    }
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < k; i++) {
        poll_one(cs[i]);
        conn_unref(cs[i]);
    }
    for (size_t i = 0; i < nd; i++)
        conn_unref(drop[i]);
    for (size_t i = 0; i < np; i++) {
        rx_post(post[i], post[i]->rneed > NODE_RX_CHUNK ? post[i]->rneed : NODE_RX_CHUNK);
        conn_unref(post[i]);
    }
}

/* Lets go of the polled connections (tr_node_stop, the ticker stopped; lock held). */
void tr__conn_polls_drop_locked(tr_node *n)
{
    for (size_t i = 0; i < n->npolls; i++)
        n->polls[i]->refs--;
    n->npolls = 0;
}

/* ---- The reader (inbound connections, plain TCP) ---------------------------------------------
 *
 * A frame that came in on an inbound connection went through two of nng's threads: its poller
 * woke on the socket, then handed the read's completion to a task thread, which ran on_rx — two
 * wake-ups per direction of a round trip, the floor nng-baseline's stream-rtt measured (24.5 us
 * p50 against 5.9 us for plain TCP). Once an inbound connection is up (the handshake done through
 * nng), the node's reader thread reads it itself: its own epoll set, recv(2) on the stream's
 * socket (stream_fd), the frames parsed and the actors they wake run as on_rx runs them (the
 * connection's guest, NODE_RX_TURNS), a reply written inline — one wake-up per direction.
 * nng never reads a stream on which no receive is posted, so the bytes are the reader's; the
 * connection is still nng's for everything else (dial, accept, writes, close). Not with TLS
 * (the bytes on the socket are TLS records) nor for a hidden node's duplex connection.
 *
 * A connection goes to the reader after NODE_RD_AFTER receives through nng: the ones that carry
 * traffic. Finding the socket (stream_fd) asks every descriptor of the process, and 100 nodes
 * forming under load, each looking up its 99 inbound connections at once, spent 8 s of CPU in
 * it (a fifth of 2 cores while forming): ticks came late and watchers declared members down
 * (19-32 verdicts a start against none). After 64 receives: 869 look-ups in all, 0.36 s, no
 * verdict. It also keeps the reader's set to the connections worth a thread: one reader runs
 * what all of them wake, where nng spreads completions over its task threads.
 *
 * Lifetime: registering takes a reference (rd_reg); only the reader lets it go — when it finds
 * the connection dead (tr__conn_mark_dead pokes it through rd_wake), or at stop — so an event it
 * holds never names a freed connection, and the socket (closed by nng_stream_free, after the
 * last reference) is never another one's while registered. */

/* Hands an inbound connection that is up to the reader (on_rx, its receive done): true when the
 * reader reads it from now on. */
static bool reader_take(conn *c, size_t need)
{
    tr_node *n = c->n;
    if (c->outbound || c->duplex || n->tls != NULL || c->state != C_UP ||
        ++c->rx_done < NODE_RD_AFTER)
        return false;
    if (c->fd == -1)
        c->fd = stream_fd(c->s);
    if (c->fd < 0)
        return false;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    pthread_mutex_lock(&n->lock); /* (the reader stops under it: see tr__conn_reader_stop) */
    bool ok = n->rd_on && !c->dead && epoll_ctl(n->rd_ep, EPOLL_CTL_ADD, c->fd, &ev) == 0;
    if (ok) {
        c->refs++;
        c->rd_reg = true;
        c->rneed = need;
    }
    pthread_mutex_unlock(&n->lock);
    if (ok)
        count(&n->reader_conns, 1);
    return ok;
}

/* Reads what a registered connection holds and runs what it wakes (the reader). */
static void reader_read(conn *c)
{
    tr_node *n = c->n;
    pthread_mutex_lock(&n->lock);
    bool dead = c->dead;
    pthread_mutex_unlock(&n->lock);
    if (dead)
        return; /* (the sweep lets go of it) */
    tr_guest *g = NULL;
    if (c->guest == NULL)
        (void)tr_guest_new(n->sys, &c->guest); /* none: the workers run them */
    if (c->guest != NULL && tr_guest_enter(c->guest) == TR_OK)
        g = c->guest;
    for (int round = 0; round < 8 && sock_read(c) > 0; round++)
        ; /* (all of it read: level-triggered, more later wakes us again) */
    if (g != NULL)
        (void)tr_guest_leave(g, NODE_RX_TURNS);
}

/* Lets go of the registered connections that died (all of them: stopping). */
static void reader_sweep(tr_node *n, bool all)
{
    conn *drop[64];
    size_t k;
    do {
        k = 0;
        pthread_mutex_lock(&n->lock);
        for (conn *c = n->conns; c != NULL && k < sizeof drop / sizeof drop[0]; c = c->next)
            if (c->rd_reg && (c->dead || all)) {
                c->rd_reg = false;
                drop[k++] = c;
            }
        pthread_mutex_unlock(&n->lock);
        for (size_t i = 0; i < k; i++) {
            (void)epoll_ctl(n->rd_ep, EPOLL_CTL_DEL, drop[i]->fd, NULL);
            conn_unref(drop[i]);
        }
    } while (k == sizeof drop / sizeof drop[0]);
}

static void *reader_main(void *arg)
{
    tr_node *n = arg;
    pthread_setname_np(pthread_self(), "tr-rx");
    struct epoll_event ev[64];
    while (!atomic_load(&n->rd_stop)) {
        int k = epoll_wait(n->rd_ep, ev, 64, -1);
        if (k < 0 && errno != EINTR)
            break;
        bool sweep = false;
        for (int i = 0; i < k; i++) {
            if (ev[i].data.ptr == NULL) {
                eventfd_t v;
                (void)eventfd_read(n->rd_wake, &v);
                sweep = true;
            } else {
                reader_read(ev[i].data.ptr);
            }
        }
        if (sweep)
            reader_sweep(n, false);
    }
    reader_sweep(n, true);
    return NULL;
}

void tr__conn_reader_start(tr_node *n)
{
    if (n->tls != NULL)
        return;
    n->rd_ep = epoll_create1(EPOLL_CLOEXEC);
    n->rd_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (n->rd_ep < 0 || n->rd_wake < 0 ||
        epoll_ctl(n->rd_ep, EPOLL_CTL_ADD, n->rd_wake, &ev) != 0 ||
        pthread_create(&n->rd_thread, NULL, reader_main, n) != 0) {
        if (n->rd_ep >= 0)
            close(n->rd_ep);
        if (n->rd_wake >= 0)
            close(n->rd_wake);
        n->rd_ep = n->rd_wake = -1;
        return;
    }
    pthread_mutex_lock(&n->lock);
    n->rd_on = true;
    pthread_mutex_unlock(&n->lock);
}

void tr__conn_reader_stop(tr_node *n)
{
    pthread_mutex_lock(&n->lock);
    bool on = n->rd_on;
    n->rd_on = false; /* nothing is registered from now on: the last sweep takes them all */
    pthread_mutex_unlock(&n->lock);
    if (!on)
        return;
    atomic_store(&n->rd_stop, true);
    (void)!eventfd_write(n->rd_wake, 1);
    pthread_join(n->rd_thread, NULL);
    close(n->rd_ep);
    close(n->rd_wake);
    n->rd_ep = n->rd_wake = -1;
}

bool tr__peer_ctl_append(peer *pe, unsigned kind, const void *bytes, size_t len)
{
    pthread_mutex_lock(&pe->ctl_lock);
    bool room = pe->ctl.len + len < 64u * 1024u; /* bounded, as every control frame */
    if (room) {
        size_t f = kind != 0 ? tr__wire_frame_begin(&pe->ctl, kind) : 0;
        tr__wire_put_raw(&pe->ctl, bytes, len);
        if (kind != 0)
            tr__wire_frame_end(&pe->ctl, f);
        atomic_store(&pe->ctl_pending, 1);
    }
    pthread_mutex_unlock(&pe->ctl_lock);
    return room;
}

/* A beat the usual way: a control frame on pe's own connection. */
static void beat_queue(peer *pe, const uint8_t *f, size_t len)
{
    (void)tr__peer_ctl_append(pe, 0, f, len); /* already framed */
    tr__peer_kick(pe);
}

void tr__conn_beats_flush(tr_node *n)
{
    struct {
        peer *pe;
        conn *c;
        uint16_t len;
        uint8_t f[NODE_BEAT_MAX];
    } *b = NULL;
    pthread_mutex_lock(&n->lock);
    size_t k = n->nbeats;
    if (k > 0)
        b = malloc(k * sizeof *b);
    for (size_t i = 0; i < k; i++) {
        peer *pe = n->beats[i];
        conn *c = pe->in_conn;
        if (c == NULL) {
            /* a connection from it that came before we knew its name was kept unattached
             * (inbound_up): it is the one it watches us on */
            for (conn *x = n->conns; x != NULL && c == NULL; x = x->next)
                if (!x->outbound && !x->dead && x->state == C_UP && x->pe == NULL &&
                    !(x->ph.flags & TR_WIRE_HELLO_HIDDEN) && strcmp(x->ph.name, pe->name) == 0)
                    c = x;
            if (c != NULL) {
                c->pe = pe;
                pe->in_conn = c;
            }
        }
        if (b != NULL) {
            b[i].pe = pe;
            b[i].len = pe->beat_len;
            memcpy(b[i].f, pe->beat, pe->beat_len);
            b[i].c = c != NULL && !c->dead && c->state == C_UP && !c->duplex && c->auth_posted
                         ? c
                         : NULL;
            if (b[i].c != NULL)
                b[i].c->refs++;
        }
        pe->beat_len = 0;
        pe->beat_listed = false;
    }
    n->nbeats = 0;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; b != NULL && i < k; i++) {
        conn *c = b[i].c;
        if (c == NULL) {
            beat_queue(b[i].pe, b[i].f, b[i].len);
            continue;
        }
        size_t sent;
        int rv = write_now(c, b[i].f, b[i].len, &sent);
        if (rv == 0 && sent < b[i].len) {
            tr__conn_fail(c, "a beat written in part"); /* the stream is out of step */
        } else if (rv == NNG_ECANCELED) {
            beat_queue(b[i].pe, b[i].f, b[i].len); /* the socket was full: the usual way */
        } else if (rv != 0) {
            tr__conn_fail(c, NULL);
            beat_queue(b[i].pe, b[i].f, b[i].len);
        }
        conn_unref(c);
    }
    free(b);
}

static void tx_send(conn *c)
{
    nng_iov iov = {.iov_buf = c->out.data + c->out_off, .iov_len = c->out.len - c->out_off};
    nng_aio_set_iov(c->tx, 1, &iov);
    /* a peer that takes nothing for this long is as good as gone (and a send stuck on a stream
     * closed under it ends too) */
    nng_aio_set_timeout(c->tx, NODE_SEND_TIMEOUT_MS);
    nng_stream_send(c->s, c->tx);
}

/* The writer's loop, run by whoever owns pe->tx_busy: sends, or gives the queue up. With a
 * connection `c` (a reference held) it continues a chain of writes. */
static void tx_pump(peer *pe, conn *c)
{
    tr_node *n = pe->n;
    unsigned idle_spins = 0, inline_left = NODE_TX_INLINE;
    for (;;) {
        bool hold = false, lazy = false;
        if (c == NULL) {
            pthread_mutex_lock(&n->lock);
            c = pe->out_conn;
            if (c != NULL && (c->dead || c->state != C_UP))
                c = NULL;
            if (c != NULL)
                c->refs++;
            hold = c == NULL && pe->joining && !n->stopping;
            /* monitors: no connection yet (lazy), or one being made */
            lazy = c == NULL && !hold && pe->out_conn == NULL && tr__ng_lazy_dial_locked(n, pe);
            if (c == NULL && !hold && pe->out_conn != NULL && n->gossip != NULL &&
                !pe->out_conn->dead)
                lazy = true; /* dialed, handshake under way: outbound_up kicks the writer */
            pthread_mutex_unlock(&n->lock);
        }
        if (lazy) {
            atomic_store(&pe->tx_busy, 0);
            pthread_mutex_lock(&n->lock);
            conn *o = pe->out_conn;
            bool ready = (o == NULL && !pe->dialing) || (o != NULL && (o->dead || o->state == C_UP));
            pthread_mutex_unlock(&n->lock);
            int idle = 0;
            if (!ready || !atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
                return;
            if (++idle_spins > 64)
                sched_yield();
            continue; /* it came up (or failed) meanwhile */
        }
        if (hold) {
            /* our connection to it is being made: outbound_up kicks the writer */
            atomic_store(&pe->tx_busy, 0);
            pthread_mutex_lock(&n->lock);
            bool ready = pe->status == TR_PEER_UP || !pe->joining;
            pthread_mutex_unlock(&n->lock);
            int idle = 0;
            if (!ready || !atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
                return;
            continue; /* it came up (or went down) meanwhile */
        }
        if (c == NULL) {
            tr__peer_drop_queue(pe);
        } else {
            tr__wire_status(&c->out);
            tx_build(pe, c);
            if (tr__wire_status(&c->out) != TR_OK) {
                tr__conn_fail(c, "out of memory");
                conn_unref(c);
                c = NULL;
                continue; /* no connection now: the queue becomes dead letters */
            }
            if (c->out.len > 0) {
                atomic_store_explicit(&pe->last_tx_ns, tr__now_ns(), memory_order_relaxed);
                count(&n->writes, 1);
                count(&pe->bytes_out, c->out.len);
                int rv;
                if (inline_left > 0 && (inline_left--, tx_send_inline(c, &rv))) {
                    if (rv == 0)
                        continue; /* written: what came meanwhile, or give the queue up */
                    tr__conn_fail(c, NULL);
                    conn_unref(c);
                    c = NULL;
                    continue; /* no connection now: redialed, or dead letters */
                }
                tx_send(c); /* on_tx continues the chain (the rest of an inline write too;
                             * after NODE_TX_INLINE of them: the caller, an actor's worker or a
                             * reader, has its own work) */
                return;
            }
            conn_unref(c);
            c = NULL;
        }
        /* nothing to send: give the queue up, unless a sender came meanwhile */
        atomic_store(&pe->tx_busy, 0);
        if (atomic_load(&pe->qlen) == 0 && atomic_load(&pe->ctl_pending) == 0 &&
            atomic_load(&pe->leave_pending) == 0)
            return;
        int idle = 0;
        if (!atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
            return; /* another writer took it */
        if (++idle_spins > 64)
            sched_yield(); /* a sender between its two steps */
    }
}

static void on_tx(void *arg)
{
    conn *c = arg;
    peer *pe = c->pe;
    int rv = nng_aio_result(c->tx);
    if (rv != 0) {
        tr__conn_fail(c, NULL);
        conn_unref(c);
        tx_pump(pe, NULL); /* no connection: what is queued becomes dead letters */
        return;
    }
    c->out_off += nng_aio_count(c->tx);
    if (c->out_off < c->out.len) {
        tx_send(c);
        return;
    }
    tx_pump(pe, c);
}

/* Makes sure a writer runs for pe. */
void tr__peer_kick(peer *pe)
{
    int idle = 0;
    if (atomic_compare_exchange_strong(&pe->tx_busy, &idle, 1))
        tx_pump(pe, NULL);
}

/* The end of a batch of turns that queued messages for pe (tr__node_route): one write for all. */
static void peer_flush(void *arg)
{
    peer *pe = arg;
    tr_system *sys = pe->n->sys;
    tr__peer_kick(pe);
    atomic_fetch_sub(&sys->node_users, 1); /* taken when the flush was asked for */
}

int tr__node_route(tr_system *sys, tr_pid to, tr_msg *m)
{
    m->to = to;
    atomic_fetch_add(&sys->node_users, 1);
    tr_node *n = atomic_load(&sys->node);
    uint16_t id = tr_pid_node(to);
    if (n == NULL || id == 0) {
        atomic_fetch_sub(&sys->node_users, 1);
        tr__dead_letter(sys, to, m);
        return TR_ENOPROC;
    }
    peer *pe = atomic_load_explicit(&n->by_id[id], memory_order_acquire);
    int rc = TR_OK;
    if (pe == NULL || n->stopping || n->leaving) {
        count(&n->no_route, 1);
        if (m->flags & TR_MF_SIGNAL) {
            static const tr_reason noconn = {.kind = TR_REASON_NOCONNECTION};
            tr__signal_bounce(sys, m, &noconn);
        } else {
            tr__dead_letter(sys, to, m);
        }
        rc = TR_ENOPROC;
    } else if (atomic_fetch_add_explicit(&pe->qlen, 1, memory_order_acq_rel) >= n->peer_queue &&
               !(m->flags & (TR_MF_SIGNAL | TR_MF_SYSTEM))) {
        atomic_fetch_sub_explicit(&pe->qlen, 1, memory_order_relaxed);
        count(&n->queue_full, 1);
        bool reject = n->overflow == TR_NODE_REJECT || (m->flags & TR_MF_REQUEST);
        tr_msg_free(m);
        rc = reject ? TR_EFULL : TR_OK;
    } else {
        uint64_t queued = atomic_load_explicit(&pe->qlen, memory_order_relaxed);
        tr__mpsc_push(&pe->q, &m->node);
        /* on a worker or a guest (a connection's receive), the write waits for the end of the
         * batch of turns: what the batch sends to pe goes in one write (the node stays in use
         * until then: its reference is the flush's). Elsewhere, with no room for the hook, or
         * once NODE_DEFER_MAX are queued (one long turn sending many), now. */
        switch (queued < NODE_DEFER_MAX ? tr__at_batch_end(sys, peer_flush, pe)
                                        : TR_HOOK_NONE) {
        case TR_HOOK_ADDED:
            return TR_OK;
        case TR_HOOK_ALREADY:
            break;
        default:
            tr__peer_kick(pe);
            break;
        }
    }
    atomic_fetch_sub(&sys->node_users, 1);
    return rc;
}

/* ---- accepting and dialing ----------------------------------------------------------------- */

/* Puts a new connection on the node's list, with a reference its caller drops (conn_unref) once
 * it has posted the first receive and write: listed, the connection can be marked dead (a peer
 * taken down, tr_node_stop) by another thread at once, and the reaper frees a dead connection
 * nobody holds — before the caller's rx_post, it did (ASan: test_node_tls, 3 runs in 60). */
static bool conn_admit(tr_node *n, conn *c)
{
    pthread_mutex_lock(&n->lock);
    /* leaving: no new peer, but a dial leave_cluster waits for (to tell a peer that came up a
     * moment ago) completes */
    bool ok = !n->stopping && (!n->leaving || c->outbound) && n->nconns < NODE_MAX_CONNS;
    if (ok) {
        c->next = n->conns;
        n->conns = c;
        n->nconns++;
        c->refs++;
    }
    pthread_mutex_unlock(&n->lock);
    return ok;
}

void tr__node_on_accept(void *arg)
{
    tr_node *n = arg;
    int rv = nng_aio_result(n->accept_aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(n->accept_aio, 0);
        conn *c = conn_new(n, s, false, NULL);
        if (c == NULL || !conn_admit(n, c)) {
            if (c != NULL)
                tr__conn_destroy(c);
            else {
                nng_stream_close(s);
                nng_stream_free(s);
            }
        } else {
            rx_post(c, NODE_RX_CHUNK);
            conn_unref(c);
        }
    }
    pthread_mutex_lock(&n->lock);
    bool stop = n->stopping;
    pthread_mutex_unlock(&n->lock);
    if (!stop)
        nng_stream_listener_accept(n->listener, n->accept_aio);
}

void tr__node_on_dial(void *arg)
{
    peer *pe = arg;
    tr_node *n = pe->n;
    int rv = nng_aio_result(pe->dial_aio);
    conn *c = NULL;
    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(pe->dial_aio, 0);
        c = conn_new(n, s, true, pe);
        if (c == NULL) {
            nng_stream_close(s);
            nng_stream_free(s);
        } else if (!conn_admit(n, c)) {
            tr__conn_destroy(c);
            c = NULL;
        }
    }
    pthread_mutex_lock(&n->lock);
    pe->dialing = false;
    if (c == NULL || n->stopping || pe->alias) {
        if (c != NULL) {
            tr__conn_mark_dead(c); /* reaped by the ticker */
            c->refs--;             /* conn_admit's */
        }
        c = NULL;
        pe->next_dial_ns = tr__now_ns() + (uint64_t)pe->backoff_ms * 1000000u;
        pe->backoff_ms = pe->backoff_ms * 2 > n->backoff_max_ms ? n->backoff_max_ms
                                                                 : pe->backoff_ms * 2;
        tr__ng_unreachable_locked(n, pe, rv == NNG_ECONNREFUSED);
    } else {
        pe->out_conn = c;
    }
    pthread_mutex_unlock(&n->lock);
    if (c == NULL && n->gossip != NULL) {
        tr__ng_flush(n);
        tr__peer_kick(pe); /* what waited for the dial: dead letters now */
    }
    if (c != NULL) {
        put_hello(n, &c->hsbuf, c->nonce);
        hs_send(c);
        rx_post(c, NODE_RX_CHUNK);
        conn_unref(c); /* conn_admit's */
    }
}

/* Starts a dial to pe (lock held). */
void tr__node_dial_start(tr_node *n, peer *pe)
{
    if (pe->dialer == NULL || strcmp(pe->dialer_addr, pe->addr) != 0) {
        if (pe->dialer != NULL) {
            nng_stream_dialer_close(pe->dialer);
            nng_stream_dialer_free(pe->dialer);
            pe->dialer = NULL;
        }
        char url[TR_WIRE_ADDR_MAX + 8];
        tr__tls_url(n, pe->addr, url, sizeof url);
        int rv = nng_stream_dialer_alloc(&pe->dialer, url);
        if (rv != 0) {
            tr__node_log(n, "cannot dial %s: not a tcp:// address", pe->addr);
            pe->alias = true; /* never dialed */
            return;
        }
        if ((rv = tr__tls_dialer(n, pe->dialer, pe->addr)) != 0) {
            tr__node_log(n, "cannot dial %s: TLS: %s", pe->addr, nng_strerror(rv));
            nng_stream_dialer_free(pe->dialer);
            pe->dialer = NULL;
            pe->next_dial_ns = tr__now_ns() + (uint64_t)n->backoff_max_ms * 1000000u;
            return; /* out of memory, most likely: tried again later */
        }
        snprintf(pe->dialer_addr, sizeof pe->dialer_addr, "%s", pe->addr);
    }
    pe->dialing = true;
    count(&n->dials, 1);
    nng_aio_set_timeout(pe->dial_aio, 2000);
    nng_stream_dialer_dial(pe->dialer, pe->dial_aio);
}
