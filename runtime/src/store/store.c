/*
 * store.c — the persistence store: journals of persistent actors, group commit, replies after
 * commit, and the durable outbox; the backends (sqlite.c, redis.c) do the storing.
 *
 * One writer thread does every backend call but recovery. Persistent actors hand it "units" —
 * what one turn persisted: events, a snapshot, outbox items, replies — through a mutex-protected
 * queue; the writer takes every unit waiting (up to max_batch) and has the backend commit them
 * together (one SQLite transaction; one pipelined round of Lua scripts on Redis), then sends the
 * units' replies in order. So under load one fsync covers thousands of events, and a reply never
 * leaves before the events it depends on are durable. An actor whose unit fails is ended with an
 * error (its supervisor restarts it and it recovers what is durable); its replies are dropped and
 * their requesters told at once (TR_MSG_NOPROC), as when an actor ends with a request unanswered.
 *
 * The outbox: items are written with the events of their unit. Each queue has at most one
 * consumer; the writer delivers it up to outbox_window unacknowledged items (oldest first), sends
 * an item again when redeliver_ms pass without its ack, and deletes it when acknowledged.
 * Delivery is at least once; items carry an idempotency key.
 *
 * Committing in the thread that hands the unit over: with synchronous=NORMAL (no fsync per commit)
 * a worker or guest holds the units of its batch of turns in the queue and commits them itself
 * when the batch ends (tr__at_batch_end), as a group commit's leader would, unless another thread
 * is committing; any other thread commits a unit at once when the writer is idle and nothing is
 * queued. The writer's wake-up (a futex wake, two context switches, and the wait for a CPU, which
 * is what a loaded 2-core machine makes long) is saved, and the replies leave that much sooner.
 * Units arriving meanwhile queue for the writer as before; `busy` keeps the backend to one
 * thread at a time, in unit order.
 *
 * Before recovering, tr_journal_open waits until every unit queued earlier is committed, so an
 * actor restarted right after a failure sees everything its previous incarnation persisted —
 * when one of that journal's units may still be queued (recent[], by the hash of its id): an
 * actor that starts long after its previous incarnation ended need not wait for the writer.
 * Waiting for everything every time cost a commit per start, inside the start: a shard's
 * supervisor runs its children's inits one after the other, so a thousand persistent actors
 * starting at once (social, readers back after an idle minute) waited for a thousand commits in
 * a row (with the other cold-start fixes of that day: first requests 1.7-2.4 s -> ~1 s).
 *
 * The writer's commit delay (tr_store_opts.commit_delay_us; PostgreSQL's commit_delay): a
 * transaction costs about the same for one small unit as for a few — the WAL frames of the pages
 * they share, the file locks, the checkpoints that follow — and at a few thousand units a second
 * the writer, idle between them, made one commit per unit. When its previous commit ended less
 * than the delay ago, the writer waits until the oldest queued unit has waited the delay, or
 * STORE_DELAY_UNITS are queued, or a unit someone waits for (a journal's open) arrives; units
 * queued meanwhile do not wake it. When commits are rare (the previous one longer ago) nothing
 * waits. The social node's posts at 2,500/s with 1 ms: 3.1 posts a commit instead of 1.0, node
 * CPU per post 216-301 -> 144-179 us, p50 0.25 -> 1.1 ms (docs/persistence.md).
 */
#include "store_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void count(_Atomic uint64_t *c, uint64_t k)
{
    atomic_fetch_add_explicit(c, k, memory_order_relaxed);
}

/* ---- units --------------------------------------------------------------------------------- */

static void op_free(op *o)
{
    if (!(o->in_bytes & OP_IN_QUEUE))
        free(o->queue);
    if (!(o->in_bytes & OP_IN_KEY))
        free(o->key);
    if (!(o->in_bytes & OP_IN_DATA))
        free(o->data);
    tr_msg_free(o->msg);
}

static void unit_free(unit *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n; i++)
        op_free(&u->ops[i]);
    free(u->ops);
    free(u->bytes);
    free(u->jid);
    free(u);
}

/* Copies len bytes (and a NUL) into the unit's buffer; their offset in *off. */
static int unit_put(unit *u, const void *p, size_t len, size_t *off)
{
    if (len + 1 > u->bcap - u->blen) {
        size_t cap = u->bcap ? u->bcap : 256;
        while (len + 1 > cap - u->blen) {
            if (cap > SIZE_MAX / 2)
                return TR_ENOMEM;
            cap *= 2;
        }
        char *b = realloc(u->bytes, cap);
        if (b == NULL)
            return TR_ENOMEM;
        u->bytes = b;
        u->bcap = cap;
    }
    *off = u->blen;
    if (len > 0)
        memcpy(u->bytes + u->blen, p, len);
    u->bytes[u->blen + len] = '\0';
    u->blen += len + 1;
    return TR_OK;
}

/* The unit is complete: the ops' pointers into its buffer (which moves while it grows). */
static void unit_seal(unit *u)
{
    for (size_t i = 0; i < u->n; i++) {
        op *o = &u->ops[i];
        if (o->in_bytes & OP_IN_DATA)
            o->data = u->bytes + o->data_off;
        if (o->in_bytes & OP_IN_QUEUE)
            o->queue = u->bytes + o->queue_off;
        if (o->in_bytes & OP_IN_KEY)
            o->key = u->bytes + o->key_off;
    }
}

static unit *unit_new(tr_pid actor, const char *jid)
{
    unit *u = calloc(1, sizeof *u);
    if (u == NULL)
        return NULL;
    u->actor = actor;
    if (jid != NULL && (u->jid = strdup(jid)) == NULL) {
        free(u);
        return NULL;
    }
    return u;
}

/* A new op at the end of u (zeroed), or NULL. */
static op *unit_add(unit *u, int kind)
{
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 4;
        op *o = realloc(u->ops, cap * sizeof *o);
        if (o == NULL)
            return NULL;
        u->ops = o;
        u->cap = cap;
    }
    op *o = &u->ops[u->n++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    return o;
}

static void commit_batch(tr_store *s, unit *batch);

/* Takes the queued units, up to max_batch of them, as one batch (lock held). */
static unit *take_batch(tr_store *s)
{
    unit *batch = s->head, *last = NULL;
    unsigned n = 0;
    for (unit *u = batch; u != NULL && n < s->max_batch; u = u->next, n++)
        last = u;
    s->queued -= n;
    if (last != NULL) {
        s->head = last->next;
        if (s->head == NULL)
            s->tail = NULL;
        last->next = NULL;
    }
    return batch;
}

/* Commits `batch` on this thread, which set `busy` (see the top of the file). */
static void commit_here(tr_store *s, unit *batch)
{
    count(&s->commits_inline, 1);
    commit_batch(s, batch);
    pthread_mutex_lock(&s->lock);
    s->busy = false;
    /* queued meanwhile: the writer's now; published: the writer delivers at once */
    if (s->head != NULL || s->writer_waits || s->bus_kick)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void store_unref(tr_store *s);

/* A batch of turns ends on a guest or worker (tr__at_batch_end): the units its turns queued are
 * committed here, as one transaction, unless another thread is committing (then the writer
 * takes them). */
static void batch_commit(void *arg)
{
    tr_store *s = arg;
    pthread_mutex_lock(&s->lock);
    if (s->busy || s->stopping || s->head == NULL) {
        if (s->head != NULL)
            pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
    } else {
        unit *batch = take_batch(s);
        s->busy = true;
        pthread_mutex_unlock(&s->lock);
        commit_here(s, batch);
    }
    store_unref(s); /* the hook's reference (enqueue): the store outlives a close meanwhile */
}

static size_t recent_slot(const char *jid)
{
    return (size_t)tr__name_hash(jid) & (STORE_RECENT_SLOTS - 1);
}

static void enqueue(tr_store *s, unit *u)
{
    unit_seal(u);
    pthread_mutex_lock(&s->lock);
    if (s->closed) {
        /* a journal still open after tr_store_close: what it hands over is lost, and said */
        pthread_mutex_unlock(&s->lock);
        if (u->done != NULL) {
            *u->done = true;
        }
        unit_free(u);
        return;
    }
    u->next = NULL;
    u->ticket = ++s->ticket_next;
    if (u->jid != NULL)
        s->recent[recent_slot(u->jid)] = u->ticket;
    /* The units of a thread's batch of turns (a guest's visit, a worker's run of local work)
     * are committed together when it ends: eight order actors' turns, one transaction. A unit
     * someone waits for is not held back. Queued in order like any other, so a unit handed over
     * meanwhile by another thread (the writer takes both) cannot overtake it. */
    int hook = s->inline_commits && !s->stopping && u->done == NULL
                   ? tr__at_batch_end(s->sys, batch_commit, s)
                   : TR_HOOK_NONE;
    bool hold = hook != TR_HOOK_NONE;
    if (hook == TR_HOOK_ADDED)
        s->refs++; /* dropped by batch_commit */
    if (!hold && s->inline_commits && !s->busy && !s->stopping && s->head == NULL) {
        s->busy = true; /* this thread commits it (see the top of the file) */
        pthread_mutex_unlock(&s->lock);
        commit_here(s, u);
        return;
    }
    if (s->tail != NULL)
        s->tail->next = u;
    else {
        s->head = u;
        if (s->delay_ns != 0)
            s->head_ns = tr_now_ns();
    }
    s->tail = u;
    s->queued++;
    if (u->done != NULL)
        s->urgent = true; /* someone waits for it (a journal's open): not delayed */
    else if (s->delaying && s->queued < STORE_DELAY_UNITS)
        hold = true; /* the writer waits out its delay: a wake-up per unit would cost more */
    pthread_mutex_unlock(&s->lock);
    /* signalled after the unlock: a writer woken under the lock would only block on it again
     * (two more context switches per commit; seen in perf as the writer's lll_lock_wait). The
     * store outlives this call: the caller's journal holds a reference. */
    if (!hold)
        pthread_cond_signal(&s->cond);
}

/* ---- the writer ---------------------------------------------------------------------------- */

/* Sends m (consumed) from outside any actor; TR_ENOPROC when `to` is gone. */
static int deliver(tr_store *s, tr_pid to, tr_msg *m)
{
    if (tr__ext_enter(s->sys) != TR_OK) {
        tr_msg_free(m);
        return TR_ESTATE;
    }
    int rc = tr__deliver(s->sys, NULL, to, m);
    tr__ext_leave(s->sys);
    return rc;
}

static oqueue *queue_find(tr_store *s, const char *name, bool create)
{
    for (size_t i = 0; i < s->nqueues; i++)
        if (strcmp(s->queues[i].name, name) == 0)
            return &s->queues[i];
    if (!create || s->nqueues == STORE_MAX_QUEUES)
        return NULL;
    oqueue *q = &s->queues[s->nqueues];
    q->out = calloc(s->window, sizeof *q->out);
    if (q->out == NULL)
        return NULL;
    snprintf(q->name, sizeof q->name, "%s", name);
    s->nqueues++;
    return q;
}

/* After the commit: replies, subscriptions and acks take effect, in unit order. */
static void after_commit(tr_store *s, unit *u)
{
    for (size_t i = 0; i < u->n; i++) {
        op *o = &u->ops[i];
        if (o->kind == OP_REPLY) {
            deliver(s, o->to, o->msg);
            o->msg = NULL;
        } else if (o->kind == OP_EVENT) {
            count(&s->events, 1);
        } else if (o->kind == OP_SNAPSHOT) {
            count(&s->snapshots, 1);
        } else if (o->kind == OP_OUTBOX) {
            count(&s->outbox_put, 1);
        } else if (o->kind == OP_ACK) {
            count(&s->outbox_acked, 1);
            for (size_t k = 0; k < s->nqueues; k++) {
                oqueue *q = &s->queues[k];
                for (size_t j = 0; j < q->nout; j++)
                    if (q->out[j].id == o->seq) {
                        q->out[j] = q->out[--q->nout];
                        break;
                    }
            }
        } else if (o->kind == OP_RETRY) {
            uint64_t due = tr_now_ns() + (uint64_t)o->delay_ms * 1000000u;
            for (size_t k = 0; k < s->nqueues; k++) {
                oqueue *q = &s->queues[k];
                for (size_t j = 0; j < q->nout; j++)
                    if (q->out[j].id == o->seq)
                        q->out[j].due_ns = due;
            }
        } else if (o->kind >= OP_PUBLISH) {
            tr__bus_after(s, o);
        } else if (o->kind == OP_SUBSCRIBE) {
            oqueue *q = queue_find(s, o->queue, true);
            if (q != NULL) {
                q->consumer = o->to;
                for (size_t j = 0; j < q->nout; j++) /* the new consumer gets them at once */
                    q->out[j].due_ns = 0, q->out[j].attempt = 0;
            }
        }
    }
}

static void fail_unit(tr_store *s, unit *u, const char *why)
{
    /* each reply the unit held will never leave: its requester is told now, as if the actor had
     * ended with the request unanswered (a port gets TR_ENOPROC, tr_system_call too, an actor's
     * tr_request a TR_MSG_NOPROC reply) instead of waiting out its timeout */
    for (size_t i = 0; i < u->n; i++) {
        op *o = &u->ops[i];
        if (o->kind != OP_REPLY || o->msg == NULL)
            continue;
        tr_msg *n = tr_msg_new(TR_MSG_NOPROC_NOTICE, 0);
        if (n != NULL) {
            n->flags = TR_MF_REPLY | TR_MF_SYSTEM;
            n->corr = o->msg->corr;
            n->sender = o->msg->sender;
            deliver(s, o->to, n);
        }
    }
    if (u->actor != TR_PID_NONE) {
        tr_reason r = {.kind = TR_REASON_ERROR, .code = TR_EIO, .text = why};
        if (tr__ext_enter(s->sys) == TR_OK) {
            tr__signal(s->sys, NULL, TR_PID_NONE, u->actor, TR_SIG_EXIT, 0, &r);
            tr__ext_leave(s->sys);
        }
    }
}

static const double lat_bounds[STORE_LAT_N] = STORE_LAT_BOUNDS;

/* One transaction's time into the histogram (lock-free: any committing thread). */
static void count_commit_time(tr_store *s, uint64_t ns)
{
    double sec = (double)ns / 1e9;
    unsigned i = 0;
    while (i < STORE_LAT_N && sec > lat_bounds[i])
        i++;
    count(&s->commit_hist[i], 1);
    count(&s->commit_ns, ns);
}

static void commit_batch(tr_store *s, unit *batch)
{
    for (unit *u = batch; u != NULL; u = u->next)
        u->failed = false;
    uint64_t t0 = tr_now_ns();
    s->be->commit(s, batch);
    count_commit_time(s, tr_now_ns() - t0);
    bool any_failed = false;
    for (unit *u = batch; u != NULL && !any_failed; u = u->next)
        any_failed = u->failed;
    /* counted before anyone hears of the outcome */
    count(any_failed ? &s->failures : &s->commits, 1);
    for (unit *u = batch; u != NULL; u = u->next) {
        if (u->failed) {
            if (u == batch || !batch->failed)
                tr_log(TR_LOG_ERROR, "store", "%s", u->why);
            fail_unit(s, u, u->why);
        } else {
            count(&s->units, 1);
            after_commit(s, u);
        }
    }
    pthread_mutex_lock(&s->lock);
    for (unit *u = batch; u != NULL; u = u->next) {
        if (u->done != NULL)
            *u->done = true;
        if (u->ticket > s->ticket_done)
            s->ticket_done = u->ticket;
    }
    pthread_cond_broadcast(&s->done_cond);
    pthread_mutex_unlock(&s->lock);
    while (batch != NULL) {
        unit *next = batch->next;
        unit_free(batch);
        batch = next;
    }
}

/* An outbox message for item (id, key, data). */
static tr_msg *outbox_msg(uint64_t id, const void *key, size_t klen, const void *data, size_t len,
                          unsigned attempt)
{
    tr_msg *m = tr_msg_new(TR_MSG_OUTBOX, klen + len + 32);
    if (m == NULL)
        return NULL;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_str(pk, klen);
    msgpack_pack_str_body(pk, key, klen);
    msgpack_pack_uint32(pk, attempt);
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, data, len);
    m->corr = id; /* an ordinary message (flags 0): the consumer's mailbox limits apply */
    return m;
}

/* A backend read an item: deliver it to q's consumer (attempt: s->pump_attempt). */
static void item_out(tr_store *s, oqueue *q, uint64_t id, const void *key, size_t klen,
                     const void *data, size_t len)
{
    tr_msg *m = outbox_msg(id, key, klen, data, len, s->pump_attempt);
    if (m != NULL && deliver(s, q->consumer, m) == TR_ENOPROC)
        q->consumer = TR_PID_NONE; /* it ended: nothing more until a consumer subscribes */
}

/* A backend read the next new item: deliver it and track it. */
static void item_new(tr_store *s, oqueue *q, uint64_t id, const void *key, size_t klen,
                     const void *data, size_t len)
{
    if (q->nout >= s->window)
        return;
    s->pump_attempt = 1;
    item_out(s, q, id, key, klen, data, len);
    q->out[q->nout++] = (inflight){.id = id, .due_ns = tr_now_ns() + s->redeliver_ns, .attempt = 1};
    if (id > q->last_id)
        q->last_id = id;
    count(&s->outbox_delivered, 1);
}

/* Redelivers what is overdue and tops each consumer up to the window. */
static void outbox_pump(tr_store *s)
{
    uint64_t now = tr_now_ns();
    for (size_t k = 0; k < s->nqueues; k++) {
        oqueue *q = &s->queues[k];
        if (q->consumer == TR_PID_NONE)
            continue;
        for (size_t j = 0; j < q->nout;) {
            inflight *f = &q->out[j];
            if (f->due_ns > now) {
                j++;
                continue;
            }
            s->pump_attempt = f->attempt + 1;
            if (!s->be->item_get(s, q, f->id, item_out)) {
                q->out[j] = q->out[--q->nout]; /* acknowledged meanwhile */
                continue;
            }
            count(f->attempt > 0 ? &s->outbox_redelivered : &s->outbox_delivered, 1);
            f->attempt++;
            f->due_ns = now + s->redeliver_ns;
            j++;
        }
        if (q->nout < s->window)
            s->be->items_next(s, q, q->last_id, s->window - (unsigned)q->nout, item_new);
    }
}

/* Waits on the store's condition (lock held) for at most ns. */
static void wait_ns(tr_store *s, uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ns += (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

static void *writer_main(void *arg)
{
    tr_store *s = arg;
    pthread_setname_np(pthread_self(), "tr-writer");
    for (;;) {
        pthread_mutex_lock(&s->lock);
        if (s->head == NULL && !s->stopping && !s->bus_kick)
            wait_ns(s, 20000000); /* redelivery is checked at least this often */
        while (s->busy) { /* a thread committing its own unit */
            s->writer_waits = true;
            pthread_cond_wait(&s->cond, &s->lock);
        }
        s->writer_waits = false;
        bool delayed = false;
        if (s->delay_ns != 0 && s->head != NULL && !s->stopping && !s->urgent &&
            tr_now_ns() - s->committed_ns < s->delay_ns) {
            /* commits are frequent: let a few more units share this one (see the top) */
            s->delaying = delayed = true;
            for (;;) {
                uint64_t now = tr_now_ns(), until = s->head_ns + s->delay_ns;
                if (s->stopping || s->urgent || s->queued >= STORE_DELAY_UNITS || now >= until)
                    break;
                wait_ns(s, until - now);
            }
            s->delaying = false;
        }
        s->bus_kick = false;
        s->urgent = false; /* whatever is queued goes now */
        unit *batch = take_batch(s);
        bool stop = s->stopping && s->head == NULL && batch == NULL;
        s->busy = true;
        pthread_mutex_unlock(&s->lock);
        if (batch != NULL) {
            if (delayed)
                count(&s->commits_delayed, 1);
            commit_batch(s, batch);
            s->committed_ns = tr_now_ns();
        }
        unit *acks = tr__bus_acks_due(s, stop);
        if (acks != NULL)
            commit_batch(s, acks);
        outbox_pump(s);
        tr__bus_pump(s);
        pthread_mutex_lock(&s->lock);
        s->busy = false;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            break;
    }
    return NULL;
}

/* ---- metrics ------------------------------------------------------------------------------- */

/* The store's families, and its bus subscriptions' lag, in its system's registry
 * (troupe/metrics.h; docs/observability.md). */
static void collect(void *user, tr_metrics_out *out)
{
    tr_store *s = user;
    tr_store_stats st = {0};
    tr_store_stats_get(s, &st);
    const struct {
        const char *name, *help;
        uint64_t v;
    } c[] = {
        {"troupe_store_commits_total", "Transactions committed.", st.commits},
        {"troupe_store_commits_delayed_total",
         "Transactions the writer delayed for company (commit_delay_us).", st.commits_delayed},
        {"troupe_store_commit_failures_total", "Transactions that failed (their actors ended).",
         st.failures},
        {"troupe_store_units_total", "Units committed (turns of persistent actors, acks).",
         st.units},
        {"troupe_store_events_total", "Journal events committed.", st.events},
        {"troupe_store_snapshots_total", "Snapshots committed.", st.snapshots},
        {"troupe_store_outbox_put_total", "Outbox items committed.", st.outbox_put},
        {"troupe_store_outbox_acked_total", "Outbox items acknowledged.", st.outbox_acked},
        {"troupe_store_outbox_delivered_total", "Outbox items delivered to their consumer.",
         st.outbox_delivered},
        {"troupe_store_outbox_redelivered_total", "Outbox items delivered again (no ack in time).",
         st.outbox_redelivered},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        tr_metrics_out_family(out, c[i].name, TR_METRIC_COUNTER, c[i].help);
        tr_metrics_out_u64(out, NULL, 0, c[i].v);
    }
    uint64_t h[STORE_LAT_N + 1];
    for (unsigned i = 0; i <= STORE_LAT_N; i++)
        h[i] = atomic_load_explicit(&s->commit_hist[i], memory_order_relaxed);
    tr_metrics_out_family(out, "troupe_store_commit_seconds", TR_METRIC_HISTOGRAM,
                          "Time of each transaction (failed ones included), in the backend.");
    tr_metrics_out_histogram(out, NULL, 0, lat_bounds, h, STORE_LAT_N,
                             (double)atomic_load_explicit(&s->commit_ns, memory_order_relaxed) /
                                 1e9);
    tr__bus_collect(s, out);
}

/* ---- opening ------------------------------------------------------------------------------- */

static void store_free(tr_store *s)
{
    if (s->be != NULL)
        s->be->free(s);
    for (size_t i = 0; i < s->nqueues; i++)
        free(s->queues[i].out);
    tr__bus_free(s);
    pthread_mutex_destroy(&s->bus_lock);
    tr__namemap_free(&s->open);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->done_cond);
    free(s->where);
    free(s);
}

int tr_store_open(tr_system *sys, const tr_store_opts *o, tr_store **out, char *err,
                  size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    bool redis = o != NULL && o->backend == TR_STORE_REDIS;
    if (sys == NULL || o == NULL || out == NULL ||
        (!redis && (o->path == NULL || o->path[0] == '\0')) ||
        (redis && (o->redis_host == NULL || o->redis_host[0] == '\0'))) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "store: no system, options, %s or out",
                     redis ? "redis_host" : "path");
        return TR_EINVAL;
    }
    *out = NULL;
    tr_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return TR_ENOMEM;
    char where[300];
    if (redis)
        snprintf(where, sizeof where, "redis://%s:%u", o->redis_host,
                 o->redis_port ? o->redis_port : 6379u);
    else
        snprintf(where, sizeof where, "%s", o->path);
    if ((s->where = strdup(where)) == NULL) {
        free(s);
        return TR_ENOMEM;
    }
    s->sys = sys;
    s->snapshot_every = o->snapshot_every ? o->snapshot_every : 1000;
    s->window = o->outbox_window ? o->outbox_window : 64;
    s->max_batch = o->max_batch ? o->max_batch : 4096;
    s->redeliver_ns = (uint64_t)(o->redeliver_ms ? o->redeliver_ms : 5000) * 1000000u;
    s->delay_ns = (uint64_t)(o->commit_delay_us < 1000000u ? o->commit_delay_us : 1000000u) * 1000u;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->bus_lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_cond_init(&s->done_cond, NULL);
    tr__namemap_init(&s->open);
    int rc = redis ? tr__store_redis_open(s, o, err, errlen)
                   : tr__store_sqlite_open(s, o, err, errlen);
    /* not with an fsync per commit (a worker would wait for the disk), nor over the network */
    s->inline_commits = !redis && o->sync == TR_SYNC_NORMAL && o->commits != TR_COMMITS_WRITER;
    if (rc != TR_OK) {
        store_free(s);
        return rc;
    }
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        store_free(s);
        return TR_ENOMEM;
    }
    s->writer_started = true;
    s->refs = 1;
    s->metrics = tr_system_metrics(sys);
    tr__metrics_hold(s->metrics); /* a store may be closed after its system is freed */
    tr_metrics_collector_add(s->metrics, collect, s); /* TR_EEXIST: the system's first store */
    *out = s;
    return TR_OK;
}

/* Drops a reference; the last one frees the store. */
static void store_unref(tr_store *s)
{
    pthread_mutex_lock(&s->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last)
        store_free(s);
}

void tr_store_close(tr_store *s)
{
    if (s == NULL)
        return;
    tr_metrics_collector_remove(s->metrics, collect, s); /* waits out a render */
    tr_metrics_free(s->metrics); /* (the last reference once the system is freed) */
    s->metrics = NULL;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->writer_started)
        pthread_join(s->writer, NULL);
    pthread_mutex_lock(&s->lock);
    s->closed = true; /* journals still open keep the struct (not the database) alive */
    pthread_mutex_unlock(&s->lock);
    s->be->close(s);
    store_unref(s);
}

void tr_store_stats_get(tr_store *s, tr_store_stats *o)
{
    if (s == NULL || o == NULL)
        return;
    o->commits = atomic_load(&s->commits);
    o->commits_inline = atomic_load(&s->commits_inline);
    o->commits_delayed = atomic_load(&s->commits_delayed);
    o->units = atomic_load(&s->units);
    o->events = atomic_load(&s->events);
    o->snapshots = atomic_load(&s->snapshots);
    o->outbox_put = atomic_load(&s->outbox_put);
    o->outbox_acked = atomic_load(&s->outbox_acked);
    o->outbox_delivered = atomic_load(&s->outbox_delivered);
    o->outbox_redelivered = atomic_load(&s->outbox_redelivered);
    o->failures = atomic_load(&s->failures);
}

/* ---- journals ------------------------------------------------------------------------------ */

/* Waits until everything queued so far is committed (or failed). */
static int barrier(tr_store *s)
{
    unit *u = unit_new(TR_PID_NONE, NULL);
    if (u == NULL)
        return TR_ENOMEM;
    bool done = false;
    u->done = &done;
    enqueue(s, u);
    pthread_mutex_lock(&s->lock);
    while (!done)
        pthread_cond_wait(&s->done_cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return TR_OK;
}

int tr_journal_open(tr_ctx *ctx, tr_store *s, const char *id, tr_journal_restore_fn restore,
                    tr_journal_apply_fn apply, void *state, tr_journal **out)
{
    if (ctx == NULL || s == NULL || id == NULL || id[0] == '\0' || strlen(id) > STORE_ID_MAX ||
        out == NULL)
        return TR_EINVAL;
    *out = NULL;
    tr_pid self = tr_self(ctx);
    pthread_mutex_lock(&s->lock);
    tr_name_entry *e = tr__namemap_find(&s->open, id);
    int rc = TR_OK;
    if (s->closed)
        rc = TR_ESTATE;
    else if (e != NULL && e->pid != self && tr_system_alive(s->sys, e->pid))
        rc = TR_EEXIST;
    else
        rc = tr__namemap_put(&s->open, id, self);
    if (rc == TR_OK)
        s->refs++;
    pthread_mutex_unlock(&s->lock);
    if (rc != TR_OK)
        return rc;
    tr_journal *j = calloc(1, sizeof *j);
    if (j == NULL || (j->id = strdup(id)) == NULL) {
        free(j);
        j = NULL; /* freed: the failure path below must not free it again (cppcheck) */
        rc = TR_ENOMEM;
    } else {
        j->s = s;
        j->actor = self;
        pthread_mutex_lock(&s->lock);
        bool settled = s->recent[recent_slot(id)] <= s->ticket_done;
        pthread_mutex_unlock(&s->lock);
        rc = settled ? TR_OK : barrier(s);
        if (rc == TR_OK)
            rc = s->be->recover(s, j, restore, apply, state);
    }
    if (rc != TR_OK) {
        pthread_mutex_lock(&s->lock);
        tr__namemap_del(&s->open, id);
        pthread_mutex_unlock(&s->lock);
        if (j != NULL)
            free(j->id);
        free(j);
        store_unref(s);
        return rc;
    }
    *out = j;
    return TR_OK;
}

uint64_t tr_journal_seq(const tr_journal *j)
{
    return j != NULL ? j->seq : 0;
}

static unit *cur_unit(tr_journal *j)
{
    if (j->cur == NULL && (j->cur = unit_new(j->actor, j->id)) != NULL)
        j->cur->epoch = j->epoch;
    return j->cur;
}

static int add_bytes(tr_journal *j, int kind, const void *data, size_t len, op **out)
{
    if (j == NULL || (data == NULL && len > 0) || len > INT32_MAX)
        return TR_EINVAL;
    unit *u = cur_unit(j);
    op *o = u != NULL ? unit_add(u, kind) : NULL;
    if (o == NULL)
        return TR_ENOMEM;
    if (unit_put(u, data, len, &o->data_off) != TR_OK) {
        u->n--;
        return TR_ENOMEM;
    }
    o->in_bytes = OP_IN_DATA;
    o->len = len;
    *out = o;
    return TR_OK;
}

int tr_journal_persist(tr_journal *j, const void *event, size_t len)
{
    op *o;
    int rc = add_bytes(j, OP_EVENT, event, len, &o);
    if (rc == TR_OK) {
        o->seq = ++j->seq;
        j->since_snapshot++;
    }
    return rc;
}

int tr_journal_snapshot(tr_journal *j, const void *snapshot, size_t len)
{
    op *o;
    int rc = add_bytes(j, OP_SNAPSHOT, snapshot, len, &o);
    if (rc == TR_OK) {
        o->seq = j->seq;
        j->since_snapshot = 0;
    }
    return rc;
}

bool tr_journal_snapshot_due(const tr_journal *j)
{
    return j != NULL && j->since_snapshot >= j->s->snapshot_every;
}

int tr_journal_outbox(tr_journal *j, const char *queue, const char *key, const void *data,
                      size_t len)
{
    if (queue == NULL || queue[0] == '\0' || strlen(queue) > STORE_ID_MAX || key == NULL)
        return TR_EINVAL;
    op *o;
    int rc = add_bytes(j, OP_OUTBOX, data, len, &o);
    if (rc != TR_OK)
        return rc;
    if (unit_put(j->cur, queue, strlen(queue), &o->queue_off) != TR_OK ||
        unit_put(j->cur, key, strlen(key), &o->key_off) != TR_OK) {
        j->cur->n--; /* its bytes stay unused in the buffer */
        return TR_ENOMEM;
    }
    o->in_bytes |= OP_IN_QUEUE | OP_IN_KEY;
    return TR_OK;
}

int tr_journal_reply(tr_journal *j, const tr_msg *request, tr_msg *reply)
{
    if (request == NULL || !(request->flags & TR_MF_REQUEST)) {
        tr_msg_free(reply);
        return TR_EINVAL;
    }
    return tr_journal_reply_from(j, (tr_from){.pid = request->sender, .corr = request->corr},
                                 reply);
}

int tr_journal_reply_from(tr_journal *j, tr_from from, tr_msg *reply)
{
    if (reply == NULL)
        return TR_EINVAL;
    if (j == NULL || from.pid == TR_PID_NONE || reply->type >= TR_MSG_SYSTEM) {
        tr_msg_free(reply);
        return TR_EINVAL;
    }
    unit *u = cur_unit(j);
    op *o = u != NULL ? unit_add(u, OP_REPLY) : NULL;
    if (o == NULL) {
        tr_msg_free(reply);
        return TR_ENOMEM;
    }
    reply->sender = j->actor;
    reply->corr = from.corr;
    reply->flags = TR_MF_REPLY;
    o->to = from.pid;
    o->msg = reply;
    return TR_OK;
}

void tr_journal_flush(tr_journal *j)
{
    if (j == NULL || j->cur == NULL)
        return;
    enqueue(j->s, j->cur);
    j->cur = NULL;
}

void tr_journal_close(tr_journal *j)
{
    if (j == NULL)
        return;
    tr_journal_flush(j);
    tr_store *s = j->s;
    pthread_mutex_lock(&s->lock);
    tr_name_entry *e = tr__namemap_find(&s->open, j->id);
    if (e != NULL && e->pid == j->actor)
        tr__namemap_del(&s->open, j->id);
    pthread_mutex_unlock(&s->lock);
    free(j->id);
    free(j);
    store_unref(s);
}

/* ---- the outbox ---------------------------------------------------------------------------- */

int tr_outbox_subscribe(tr_store *s, const char *queue, tr_pid consumer)
{
    if (s == NULL || queue == NULL || queue[0] == '\0' || strlen(queue) > STORE_ID_MAX ||
        consumer == TR_PID_NONE)
        return TR_EINVAL;
    unit *u = unit_new(TR_PID_NONE, NULL);
    op *o = u != NULL ? unit_add(u, OP_SUBSCRIBE) : NULL;
    if (o == NULL || (o->queue = strdup(queue)) == NULL) {
        unit_free(u);
        return TR_ENOMEM;
    }
    o->to = consumer;
    enqueue(s, u);
    return TR_OK;
}

int tr_outbox_ack(tr_store *s, uint64_t id)
{
    if (s == NULL || id == 0)
        return TR_EINVAL;
    unit *u = unit_new(TR_PID_NONE, NULL);
    op *o = u != NULL ? unit_add(u, OP_ACK) : NULL;
    if (o == NULL) {
        unit_free(u);
        return TR_ENOMEM;
    }
    o->seq = id;
    enqueue(s, u);
    return TR_OK;
}

int tr_outbox_pending(tr_store *s, const char *queue, uint64_t *n)
{
    if (s == NULL || queue == NULL || n == NULL || strlen(queue) > STORE_ID_MAX)
        return TR_EINVAL;
    return s->be->pending(s, queue, n);
}

int tr_store_lease(tr_store *s, const char *name, const char *holder, unsigned ttl_ms,
                   bool *held)
{
    if (s == NULL || name == NULL || holder == NULL || held == NULL || name[0] == '\0' ||
        strlen(name) > 255 || holder[0] == '\0' || strlen(holder) > 255)
        return TR_EINVAL;
    *held = false;
    if (s->be->lease == NULL) { /* one node writes this store: its holders always hold */
        *held = ttl_ms > 0;
        return TR_OK;
    }
    return s->be->lease(s, name, holder, ttl_ms, held);
}

int tr_outbox_retry(tr_store *s, uint64_t id, unsigned delay_ms)
{
    if (s == NULL || id == 0)
        return TR_EINVAL;
    unit *u = unit_new(TR_PID_NONE, NULL);
    op *o = u != NULL ? unit_add(u, OP_RETRY) : NULL;
    if (o == NULL) {
        unit_free(u);
        return TR_ENOMEM;
    }
    o->seq = id;
    o->delay_ms = delay_ms;
    enqueue(s, u);
    return TR_OK;
}

int tr_outbox_read(const tr_msg *m, uint64_t *id, const char **key, size_t *key_len,
                   const void **data, size_t *len, unsigned *attempt)
{
    if (m == NULL || tr_msg_type(m) != TR_MSG_OUTBOX)
        return TR_EINVAL;
    tr_reader r;
    uint64_t i, a;
    const char *k;
    size_t kl, dl;
    const void *d;
    tr_reader_init(&r, m);
    int rc = tr_read_u64(&r, &i);
    if (rc == TR_OK)
        rc = tr_read_str(&r, &k, &kl);
    if (rc == TR_OK)
        rc = tr_read_u64(&r, &a);
    if (rc == TR_OK)
        rc = tr_read_bin(&r, &d, &dl);
    tr_reader_done(&r);
    if (rc != TR_OK)
        return rc;
    if (id != NULL)
        *id = i;
    if (key != NULL)
        *key = k;
    if (key_len != NULL)
        *key_len = kl;
    if (data != NULL)
        *data = d;
    if (len != NULL)
        *len = dl;
    if (attempt != NULL)
        *attempt = (unsigned)a;
    return TR_OK;
}

/* ---- shared with bus.c --------------------------------------------------------------------- */

unit *tr__unit_new(tr_pid actor, const char *jid)
{
    return unit_new(actor, jid);
}

op *tr__unit_add(unit *u, int kind)
{
    return unit_add(u, kind);
}

int tr__unit_put(unit *u, const void *p, size_t len, size_t *off)
{
    return unit_put(u, p, len, off);
}

void tr__unit_free(unit *u)
{
    unit_free(u);
}

void tr__store_enqueue(tr_store *s, unit *u)
{
    enqueue(s, u);
}

int tr__store_deliver(tr_store *s, tr_pid to, tr_msg *m)
{
    return deliver(s, to, m);
}

unit *tr__journal_unit(tr_journal *j)
{
    return cur_unit(j);
}
