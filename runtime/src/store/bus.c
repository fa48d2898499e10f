/*
 * bus.c — the event bus (troupe/bus.h): a log of events in the store, committed with the units
 * that publish them, and durable named subscriptions that deliver it in order.
 *
 * Publishing adds an OP_PUBLISH op to a unit; the backend's commit gives the event its id (the
 * writer counts them up from the log's newest at open, like outbox ids) and its commit time, in
 * the same transaction as the unit's journal events. After the commit (tr__bus_after) the
 * subscriptions of its topic count it as pending, and the writer is woken to deliver it.
 *
 * A subscription is the writer's: its offset (acked), how far the log has been examined for it
 * (scanned), and the events in flight (ascending ids, at most window). The pump (tr__bus_pump, the
 * writer, after each round of commits and at least every 20 ms) first checks the oldest event in
 * flight: overdue (redeliver_ms without an ack) means go back — everything after the offset is
 * delivered again, in order (go-back-N keeps the consumer's view ordered; consumers skip ids they
 * applied). Then it tops the consumer up to the window from the log after `scanned`, skipping
 * other topics' events (the log is one sequence; a rowid range scan is cheaper than an index per
 * topic to maintain on every publish). Acks are cumulative and take effect at once, in memory
 * (the window, the lag); the offset is stored lazily: the writer commits the offsets acknowledged
 * ACK_STORE_MS ago or more, one unit per subscription, and all of them when the store closes.
 * Storing each ack as it came cost a transaction per consumer turn — with two consumers, two
 * SQLite commits per post at a few hundred posts/s, and a writer wake-up each. After a crash the
 * events since the stored offset are delivered again: at-least-once, as before, with at most
 * ACK_STORE_MS more of them (consumers skip ids they applied).
 *
 * Lag: pending is counted at subscribe (the backend counts the events of each topic after the
 * offset, once), then kept by commits (+) and acks (-). Its age is the oldest in-flight event's
 * commit time, or, with nothing in flight, the commit time of the first event published while
 * the subscription was caught up (an upper bound, said so in bus.h).
 */
#include "store_impl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCAN_ROWS 512u      /* log rows examined per backend call */
#define SCAN_CALLS 32u      /* backend calls per subscription per pump, at most */
#define ACK_STORE_MS 100u   /* an acknowledged offset is stored within about this long */

uint64_t tr__bus_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool name_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= STORE_ID_MAX;
}

static bsub *sub_find(tr_store *s, const char *name)
{
    for (size_t i = 0; i < s->nsubs; i++)
        if (strcmp(s->subs[i]->name, name) == 0)
            return s->subs[i];
    return NULL;
}

static bool sub_wants(const bsub *b, const char *topic)
{
    for (unsigned i = 0; i < b->ntopics; i++)
        if (strcmp(b->topics[i], topic) == 0)
            return true;
    return false;
}

static void sub_free(bsub *b)
{
    if (b == NULL)
        return;
    for (unsigned i = 0; i < b->ntopics; i++)
        free(b->topics[i]);
    free(b->out);
    free(b);
}

/* ---- publishing ---------------------------------------------------------------------------- */

static int add_publish(tr_store *s, unit *u, const char *topic, const char *key,
                       const void *data, size_t len)
{
    if (s->be->bus_next == NULL)
        return TR_EINVAL;
    if (!name_ok(topic) || key == NULL || strlen(key) > STORE_ID_MAX ||
        (data == NULL && len > 0) || len > (size_t)INT32_MAX)
        return TR_EINVAL;
    op *o = tr__unit_add(u, OP_PUBLISH);
    if (o == NULL)
        return TR_ENOMEM;
    if (tr__unit_put(u, data, len, &o->data_off) != TR_OK ||
        tr__unit_put(u, topic, strlen(topic), &o->queue_off) != TR_OK ||
        tr__unit_put(u, key, strlen(key), &o->key_off) != TR_OK) {
        u->n--; /* its bytes stay unused in the buffer */
        return TR_ENOMEM;
    }
    o->len = len;
    o->in_bytes = OP_IN_DATA | OP_IN_QUEUE | OP_IN_KEY;
    return TR_OK;
}

int tr_journal_publish(tr_journal *j, const char *topic, const char *key, const void *data,
                       size_t len)
{
    if (j == NULL)
        return TR_EINVAL;
    unit *u = tr__journal_unit(j);
    if (u == NULL)
        return TR_ENOMEM;
    return add_publish(j->s, u, topic, key, data, len);
}

int tr_bus_publish(tr_store *s, const char *topic, const char *key, const void *data,
                   size_t len)
{
    if (s == NULL)
        return TR_EINVAL;
    unit *u = tr__unit_new(TR_PID_NONE, NULL);
    if (u == NULL)
        return TR_ENOMEM;
    int rc = add_publish(s, u, topic, key, data, len);
    if (rc != TR_OK) {
        tr__unit_free(u);
        return rc;
    }
    tr__store_enqueue(s, u);
    return TR_OK;
}

/* ---- subscriptions ------------------------------------------------------------------------- */

/* A unit of one bus op for subscription `name` (queue), or NULL. */
static unit *sub_unit(const char *name, int kind, op **out)
{
    unit *u = tr__unit_new(TR_PID_NONE, NULL);
    op *o = u != NULL ? tr__unit_add(u, kind) : NULL;
    if (o == NULL || (o->queue = strdup(name)) == NULL) {
        tr__unit_free(u);
        return NULL;
    }
    *out = o;
    return u;
}

int tr_bus_subscribe(tr_store *s, const tr_bus_sub_opts *so)
{
    if (s == NULL || so == NULL || !name_ok(so->name) || so->topics == NULL ||
        so->ntopics == 0 || so->ntopics > TR_BUS_TOPICS || so->consumer == TR_PID_NONE ||
        so->window > 65536u)
        return TR_EINVAL;
    if (s->be->bus_next == NULL)
        return TR_EINVAL;
    size_t need = 0;
    for (size_t i = 0; i < so->ntopics; i++) {
        if (!name_ok(so->topics[i]))
            return TR_EINVAL;
        need += strlen(so->topics[i]) + 1;
    }
    op *o;
    unit *u = sub_unit(so->name, OP_BUS_SUB, &o);
    if (u == NULL || (o->data = malloc(need)) == NULL) {
        tr__unit_free(u);
        return TR_ENOMEM;
    }
    char *p = o->data; /* the topics, NUL after each */
    for (size_t i = 0; i < so->ntopics; i++) {
        size_t n = strlen(so->topics[i]) + 1;
        memcpy(p, so->topics[i], n);
        p += n;
    }
    o->len = need;
    o->to = so->consumer;
    o->seq = so->from;
    o->delay_ms = so->window ? so->window : s->window;
    tr__store_enqueue(s, u);
    return TR_OK;
}

int tr_bus_unsubscribe(tr_store *s, const char *name)
{
    if (s == NULL || !name_ok(name))
        return TR_EINVAL;
    op *o;
    unit *u = sub_unit(name, OP_BUS_UNSUB, &o);
    if (u == NULL)
        return TR_ENOMEM;
    tr__store_enqueue(s, u);
    return TR_OK;
}

static void ack_apply(tr_store *s, bsub *b, uint64_t id);
static void kick(tr_store *s);

int tr_bus_ack(tr_store *s, const char *name, uint64_t id)
{
    if (s == NULL || !name_ok(name) || id == 0 || id == TR_BUS_FROM_STORED)
        return TR_EINVAL;
    pthread_mutex_lock(&s->bus_lock);
    bsub *b = sub_find(s, name);
    if (b != NULL) { /* in memory now; stored by the writer within ACK_STORE_MS */
        ack_apply(s, b, id);
        if (b->acked > b->stored && b->ack_ns == 0)
            b->ack_ns = tr_now_ns();
        /* behind the log (a replay, a backlog): the window has room again, deliver now rather
         * than at the writer's 20 ms tick (waiting for it made a 4.2 M-event replay 8x slower);
         * a consumer that is caught up wakes nobody */
        bool more = b->consumer != TR_PID_NONE && b->scanned < s->bus_head;
        pthread_mutex_unlock(&s->bus_lock);
        if (more)
            kick(s);
        return TR_OK;
    }
    pthread_mutex_unlock(&s->bus_lock);
    op *o; /* not subscribed on this store: stored as a unit of its own */
    unit *u = sub_unit(name, OP_BUS_ACK, &o);
    if (u == NULL)
        return TR_ENOMEM;
    o->seq = id;
    tr__store_enqueue(s, u);
    return TR_OK;
}

/* Stops delivering b's in-flight events; the next pump starts again after the offset. */
static void sub_rewind(bsub *b)
{
    b->nout = 0;
    b->scanned = b->acked;
}

/* OP_BUS_SUB: creates or updates the subscription (bus_lock held). */
static void sub_apply(tr_store *s, op *o)
{
    bsub *b = sub_find(s, o->queue);
    if (b == NULL) {
        if (s->nsubs == TR_BUS_SUBS || (b = calloc(1, sizeof *b)) == NULL) {
            tr_log(TR_LOG_ERROR, "bus", "subscription %s refused: %s", o->queue,
                   s->nsubs == TR_BUS_SUBS ? "too many subscriptions" : "out of memory");
            return;
        }
        snprintf(b->name, sizeof b->name, "%s", o->queue);
        s->subs[s->nsubs++] = b;
    }
    for (unsigned i = 0; i < b->ntopics; i++)
        free(b->topics[i]);
    b->ntopics = 0;
    for (const char *t = o->data; t < (const char *)o->data + o->len; t += strlen(t) + 1) {
        char *d = strdup(t);
        if (d != NULL)
            b->topics[b->ntopics++] = d;
    }
    bflight *out = realloc(b->out, (size_t)o->delay_ms * sizeof *out);
    if (out == NULL) {
        b->consumer = TR_PID_NONE;
        tr_log(TR_LOG_ERROR, "bus", "subscription %s: out of memory", b->name);
        return;
    }
    b->out = out;
    b->window = o->delay_ms;
    uint64_t stored = 0;
    if (s->be->bus_offset(s, b->name, &stored) != TR_OK)
        tr_log(TR_LOG_ERROR, "bus", "subscription %s: cannot read its offset", b->name);
    if (o->seq == TR_BUS_FROM_STORED) /* acks of a consumer before it may not be stored yet */
        b->acked = stored > b->acked ? stored : b->acked;
    else
        b->acked = o->seq;
    if (stored > b->stored)
        b->stored = stored;
    b->consumer = o->to;
    b->attempt = 0;
    b->pending = 0;
    for (unsigned i = 0; i < b->ntopics; i++) { /* those whose commits were taken in so far:
                                                    * the later ones of this batch count as
                                                    * they are */
        uint64_t n = 0;
        if (b->acked < s->bus_head &&
            s->be->bus_count(s, b->topics[i], b->acked, s->bus_head, &n) == TR_OK)
            b->pending += n;
    }
    b->oldest_us = b->pending > 0 ? tr__bus_now_us() : 0; /* refined once delivered */
    sub_rewind(b);
}

/* OP_BUS_ACK after its commit (bus_lock held). */
static void ack_apply(tr_store *s, bsub *b, uint64_t id)
{
    if (id <= b->acked)
        return;
    unsigned k = 0;
    while (k < b->nout && b->out[k].id <= id)
        k++;
    b->pending = b->pending > k ? b->pending - k : 0;
    memmove(b->out, b->out + k, (size_t)(b->nout - k) * sizeof *b->out);
    b->nout -= k;
    b->acked = id;
    if (b->scanned < id)
        b->scanned = id;
    b->attempt = 0;
    b->due_ns = tr_now_ns() + s->redeliver_ns; /* progress: the rest gets a full period */
    if (b->nout > 0)
        b->oldest_us = b->out[0].ts_us;
    else if (b->pending == 0)
        b->oldest_us = 0;
}

/* The writer pumps at once instead of at its next 20 ms tick: woken if it sleeps (the flag
 * alone only kept a writer that was awake from sleeping; a sleeping one waited for its tick, so a
 * backlog drained at one window per 20 ms: ~20k events/s for the fan-out's 256). */
static void kick(tr_store *s)
{
    pthread_mutex_lock(&s->lock);
    s->bus_kick = true;
    pthread_mutex_unlock(&s->lock);
    pthread_cond_signal(&s->cond);
}

void tr__bus_after(tr_store *s, op *o)
{
    pthread_mutex_lock(&s->bus_lock);
    switch (o->kind) {
    case OP_PUBLISH: {
        if (o->seq > s->bus_head)
            s->bus_head = o->seq;
        bool any = false;
        for (size_t i = 0; i < s->nsubs; i++) {
            bsub *b = s->subs[i];
            if (o->seq > b->acked && sub_wants(b, o->queue)) {
                if (b->pending++ == 0)
                    b->oldest_us = o->ts;
                any = any || b->consumer != TR_PID_NONE;
            }
        }
        pthread_mutex_unlock(&s->bus_lock);
        if (any)
            kick(s);
        return;
    }
    case OP_BUS_SUB:
        sub_apply(s, o);
        pthread_mutex_unlock(&s->bus_lock);
        kick(s); /* its first events go out now */
        return;
    case OP_BUS_UNSUB: {
        bsub *b = sub_find(s, o->queue);
        if (b != NULL) {
            b->consumer = TR_PID_NONE;
            sub_rewind(b);
        }
        break;
    }
    case OP_BUS_ACK: {
        bsub *b = sub_find(s, o->queue);
        bool more = b != NULL && b->consumer != TR_PID_NONE && b->scanned < s->bus_head &&
                    o->seq > b->acked;
        if (b != NULL) {
            ack_apply(s, b, o->seq);
            if (o->seq > b->stored)
                b->stored = o->seq;
        }
        pthread_mutex_unlock(&s->bus_lock);
        if (more)
            kick(s); /* the window has room again and the log has more: deliver now */
        return;
    }
    default:
        break;
    }
    pthread_mutex_unlock(&s->bus_lock);
}

/* ---- delivery ------------------------------------------------------------------------------ */

static tr_msg *event_msg(const bsub *b, unsigned attempt, uint64_t id, const char *topic,
                         const char *key, uint64_t ts, const void *data, size_t len)
{
    size_t nl = strlen(b->name), tl = strlen(topic), kl = strlen(key);
    tr_msg *m = tr_msg_new(TR_MSG_BUS_EVENT, nl + tl + kl + len + 64);
    if (m == NULL)
        return NULL;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_str(pk, nl);
    msgpack_pack_str_body(pk, b->name, nl);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_str(pk, tl);
    msgpack_pack_str_body(pk, topic, tl);
    msgpack_pack_str(pk, kl);
    msgpack_pack_str_body(pk, key, kl);
    msgpack_pack_uint64(pk, ts);
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, data, len);
    msgpack_pack_uint32(pk, attempt + 1);
    m->corr = id;
    return m;
}

typedef struct scan {
    bsub *b;
    uint64_t now_ns;
    bool gone;          /* the consumer ended */
} scan;

static bool on_row(tr_store *s, void *arg, uint64_t id, const char *topic, const char *key,
                   uint64_t ts, const void *data, size_t len)
{
    scan *sc = arg;
    bsub *b = sc->b;
    /* acks change the subscription on the consumers' threads (tr_bus_ack): what both touch is
     * read and written under bus_lock */
    pthread_mutex_lock(&s->bus_lock);
    if (id > s->bus_head) {
        pthread_mutex_unlock(&s->bus_lock);
        return false; /* another node's, newer than the head counted: after the next poll */
    }
    b->scanned = id;
    bool wanted = sub_wants(b, topic) && id > b->acked;
    unsigned attempt = b->attempt;
    pthread_mutex_unlock(&s->bus_lock);
    if (!wanted)
        return true;
    tr_msg *m = event_msg(b, attempt, id, topic, key, ts, data, len);
    if (m == NULL) {
        pthread_mutex_lock(&s->bus_lock);
        b->scanned = id - 1; /* tried again at the next pump */
        pthread_mutex_unlock(&s->bus_lock);
        return false;
    }
    /* in flight before it is sent: its ack may come back before this thread goes on */
    pthread_mutex_lock(&s->bus_lock);
    if (b->nout == 0) {
        b->due_ns = sc->now_ns + s->redeliver_ns;
        b->oldest_us = ts;
    }
    b->out[b->nout++] = (bflight){.id = id, .ts_us = ts};
    bool room = b->nout < b->window;
    tr_pid to = b->consumer;
    pthread_mutex_unlock(&s->bus_lock);
    if (tr__store_deliver(s, to, m) == TR_ENOPROC) {
        sc->gone = true; /* the pump rewinds the subscription */
        return false;
    }
    return room;
}

/* A log shared with other nodes (Redis): their events show as a head beyond ours, asked for at
 * most every POLL_NS; the subscriptions' pending counts are then counted again (the commits of
 * this node count only its own). */
#define POLL_NS 5000000u

static void poll_head(tr_store *s, uint64_t now)
{
    if (s->be->bus_head == NULL || s->nsubs == 0 || now - s->bus_polled_ns < POLL_NS)
        return;
    s->bus_polled_ns = now;
    uint64_t head;
    if (s->be->bus_head(s, &head) != TR_OK || head <= s->bus_head)
        return;
    uint64_t counts[TR_BUS_SUBS] = {0};
    for (size_t i = 0; i < s->nsubs; i++) { /* asked without the lock: round trips */
        bsub *b = s->subs[i];
        pthread_mutex_lock(&s->bus_lock);
        uint64_t acked = b->acked; /* acks move it on the consumers' threads */
        pthread_mutex_unlock(&s->bus_lock);
        counts[i] = 0;
        for (unsigned k = 0; k < b->ntopics; k++) {
            uint64_t n = 0;
            if (acked < head && s->be->bus_count(s, b->topics[k], acked, head, &n) == TR_OK)
                counts[i] += n;
        }
    }
    pthread_mutex_lock(&s->bus_lock);
    s->bus_head = head;
    for (size_t i = 0; i < s->nsubs; i++) {
        bsub *b = s->subs[i];
        if (b->pending == 0 && counts[i] > 0)
            b->oldest_us = tr__bus_now_us();
        b->pending = counts[i];
    }
    pthread_mutex_unlock(&s->bus_lock);
}

unit *tr__bus_acks_due(tr_store *s, bool all)
{
    unit *chain = NULL, **tail = &chain;
    uint64_t now = tr_now_ns();
    pthread_mutex_lock(&s->bus_lock);
    for (size_t i = 0; i < s->nsubs; i++) {
        bsub *b = s->subs[i];
        if (b->acked <= b->stored ||
            (!all && (b->ack_ns == 0 || now - b->ack_ns < ACK_STORE_MS * 1000000ull)))
            continue;
        op *o;
        unit *u = sub_unit(b->name, OP_BUS_ACK, &o);
        if (u == NULL)
            continue; /* out of memory: stored next time */
        o->seq = b->acked;
        b->ack_ns = 0;
        *tail = u;
        tail = &u->next;
    }
    pthread_mutex_unlock(&s->bus_lock);
    return chain;
}

void tr__bus_pump(tr_store *s)
{
    uint64_t now = tr_now_ns();
    poll_head(s, now);
    for (size_t i = 0; i < s->nsubs; i++) {
        bsub *b = s->subs[i];
        pthread_mutex_lock(&s->bus_lock);
        bool consumer = b->consumer != TR_PID_NONE;
        if (consumer && b->nout > 0 && b->due_ns <= now) { /* go back: all after the offset */
            sub_rewind(b);
            b->attempt++;
        }
        pthread_mutex_unlock(&s->bus_lock);
        if (!consumer)
            continue;
        scan sc = {.b = b, .now_ns = now};
        for (unsigned calls = 0; calls < SCAN_CALLS && !sc.gone; calls++) {
            pthread_mutex_lock(&s->bus_lock);
            bool room = b->nout < b->window && b->scanned < s->bus_head;
            uint64_t before = b->scanned;
            pthread_mutex_unlock(&s->bus_lock);
            if (!room)
                break;
            s->be->bus_next(s, before, SCAN_ROWS, on_row, &sc);
            pthread_mutex_lock(&s->bus_lock);
            bool read = b->scanned != before;
            pthread_mutex_unlock(&s->bus_lock);
            if (!read) /* nothing read (an error, or a gap at the end) */
                break;
        }
        if (sc.gone) {
            pthread_mutex_lock(&s->bus_lock);
            b->consumer = TR_PID_NONE; /* nothing more until a consumer subscribes */
            sub_rewind(b);
            pthread_mutex_unlock(&s->bus_lock);
        }
    }
}

void tr__bus_free(tr_store *s)
{
    for (size_t i = 0; i < s->nsubs; i++)
        sub_free(s->subs[i]);
    s->nsubs = 0;
}

/* ---- reading ------------------------------------------------------------------------------- */

void tr__bus_collect(tr_store *s, tr_metrics_out *out)
{
    pthread_mutex_lock(&s->bus_lock);
    uint64_t now = tr__bus_now_us();
    tr_metrics_out_family(out, "troupe_bus_lag_events", TR_METRIC_GAUGE,
                          "Events of a subscription's topics committed and not acknowledged.");
    for (size_t i = 0; i < s->nsubs; i++) {
        tr_label l = {"subscription", s->subs[i]->name};
        tr_metrics_out_u64(out, &l, 1, s->subs[i]->pending);
    }
    tr_metrics_out_family(out, "troupe_bus_lag_seconds", TR_METRIC_GAUGE,
                          "Age of the oldest of them (0 when none).");
    for (size_t i = 0; i < s->nsubs; i++) {
        const bsub *b = s->subs[i];
        tr_label l = {"subscription", b->name};
        double age = b->pending > 0 && b->oldest_us > 0 && now > b->oldest_us
                         ? (double)(now - b->oldest_us) / 1e6
                         : 0;
        tr_metrics_out_value(out, &l, 1, age);
    }
    pthread_mutex_unlock(&s->bus_lock);
}

int tr_bus_lag_get(tr_store *s, const char *name, tr_bus_lag *out)
{
    if (s == NULL || !name_ok(name) || out == NULL)
        return TR_EINVAL;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&s->bus_lock);
    bsub *b = sub_find(s, name);
    if (b != NULL) {
        uint64_t now = tr__bus_now_us();
        out->events = b->pending;
        out->ms = b->pending > 0 && b->oldest_us > 0 && now > b->oldest_us
                      ? (now - b->oldest_us) / 1000u
                      : 0;
        out->offset = b->acked;
        out->head = s->bus_head;
        out->consumer = b->consumer != TR_PID_NONE;
        rc = TR_OK;
    }
    pthread_mutex_unlock(&s->bus_lock);
    return rc;
}

int tr_bus_read(const tr_msg *m, tr_bus_event *ev)
{
    if (m == NULL || ev == NULL || tr_msg_type(m) != TR_MSG_BUS_EVENT)
        return TR_EINVAL;
    tr_reader r;
    uint64_t attempt = 0;
    const void *d = NULL;
    tr_reader_init(&r, m);
    int rc = tr_read_str(&r, &ev->sub, &ev->sub_len);
    if (rc == TR_OK)
        rc = tr_read_u64(&r, &ev->id);
    if (rc == TR_OK)
        rc = tr_read_str(&r, &ev->topic, &ev->topic_len);
    if (rc == TR_OK)
        rc = tr_read_str(&r, &ev->key, &ev->key_len);
    if (rc == TR_OK)
        rc = tr_read_u64(&r, &ev->ts_us);
    if (rc == TR_OK)
        rc = tr_read_bin(&r, &d, &ev->len);
    if (rc == TR_OK)
        rc = tr_read_u64(&r, &attempt);
    tr_reader_done(&r);
    ev->data = d;
    ev->attempt = (unsigned)attempt;
    return rc;
}
