/*
 * sqlite.c — the store's embedded backend: one SQLite database file per node, WAL mode.
 *
 * The writer thread owns one connection and commits each batch of units in one transaction
 * (all or nothing: if it fails, every unit of the batch fails). Recovery reads go through a
 * second, read-only connection (WAL lets it read while the writer writes). Checkpoints (copying
 * the WAL back into the database, with its fsyncs) run on a third connection and a thread of
 * their own: on the writer they stopped every commit for 30-50 ms each second under load, and
 * replies wait for commits. Schema
 * (PRAGMA user_version = 3), documented in docs/persistence.md:
 *   event_batches(id INTEGER PRIMARY KEY, pid TEXT, first_seq INTEGER, last_seq INTEGER, data BLOB),
 *     unique index on (pid, last_seq): one row per unit, holding its events back to back as
 *     [seq u64 LE][length u32 LE][bytes] (a hot journal's turn of 100 events is one insert and one
 *     index entry instead of 100 of each: +17% orders/s for the flash sale when events cost
 *     nothing at all); appended in commit order
 *   events(id INTEGER PRIMARY KEY, pid TEXT, seq INTEGER, data BLOB), unique index on (pid, seq):
 *     one row per event, written by schema 1; still read at recovery (before the batches)
 *   snapshots(pid TEXT PRIMARY KEY, seq INTEGER, data BLOB): a rowid table since schema 3 (it
 *     was WITHOUT ROWID: the whole row is then the b-tree's key, and a lookup that passes a big
 *     snapshot — a user with 50,000 followers, 1.5 MB — copies it out of its overflow pages to
 *     compare; a quarter of the social fan-out benchmark's CPU went to that memcpy while post
 *     actors started). A file of schema 2 is converted when it opens, in one transaction.
 *   outbox(id INTEGER PRIMARY KEY, queue TEXT, key TEXT, data BLOB, created_ms INTEGER), ids given
 *     by the writer
 *   bus(id INTEGER PRIMARY KEY, topic TEXT, key TEXT, ts INTEGER, data BLOB): the event bus's log
 *     (troupe/bus.h), ids given by the writer; bus_offsets(name TEXT PRIMARY KEY, off INTEGER):
 *     each durable subscription's offset. Both added without a version change (a file of an
 *     older build gains them; an older build ignores them).
 */
#include "store_impl.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TROUPE_SQLITE_SCHEMA 3
/* The checkpointer is asked to run past this many WAL frames. Each time the WAL starts over
 * the writer fsyncs its header (SQLite does, even with synchronous=NORMAL), so a short WAL
 * costs commits a stall every few hundred of them: 4,096 (16 MiB) did better than 1,024. */
#define CKPT_PAGES 4096
#define PENDING_QUEUES 16 /* outbox queues whose pending items are counted in memory */
#define CKPT_WRITER_PAGES (4 * CKPT_PAGES) /* past this (64 MiB) the writer checkpoints itself */

typedef struct sq {
    sqlite3 *db;        /* the writer's */
    sqlite3 *rdb;       /* recovery reads (read_lock) */
    pthread_mutex_t read_lock;
    /* recovery's statements on rdb, prepared once (read_lock), not three parses per actor
     * start (a thousand social actors start at once when readers come back after an idle
     * minute passivated them); rd_begin/rd_end make its reads one transaction: one snapshot of
     * the file for the snapshot and the events after it, one WAL read lock */
    sqlite3_stmt *rd_snap, *rd_events, *rd_batches, *rd_begin, *rd_end;
    sqlite3_stmt *ins_batch, *put_snapshot, *ins_outbox, *del_outbox, *get_outbox, *next_outbox;
    sqlite3_stmt *ins_bus, *put_offset, *next_bus, *count_bus, *get_offset;
    uint64_t next_bus_id;   /* the bus's ids, given here like the outbox's */
    sqlite3_stmt *begin, *commit; /* prepared once: sqlite3_exec parsed them on every commit */
    unsigned char *buf; /* a unit's events, packed for its event_batches row */
    size_t cap;
    sqlite3 *cdb;       /* the checkpointer's */
    uint64_t next_outbox_id; /* ids are given here: never reused while the store is open */
    pthread_t ckpt;
    bool ckpt_started, ckpt_stop, ckpt_due;
    pthread_mutex_t ckpt_lock;
    pthread_cond_t ckpt_cond;
    /* Outbox items per queue, kept as commits put and acknowledge them (counted once at open),
     * so tr_outbox_pending costs no table scan (a count(*) of 200,000 items held an HTTP loop
     * for 30 ms). Names are added by the committing thread and published through npending;
     * a queue beyond PENDING_QUEUES is counted with SQL when asked. */
    struct {
        char name[STORE_ID_MAX + 1];
        _Atomic uint64_t n;
    } pending[PENDING_QUEUES];
    _Atomic unsigned npending;
    _Atomic bool pending_full; /* some queue has no slot: ask SQL for names not found */
    int64_t delta[PENDING_QUEUES]; /* the commit in progress (committing thread only) */
} sq;

/* The slot counting queue `name`'s pending items, made if `add` (committing thread only), or -1. */
static int pending_slot(sq *b, const char *name, bool add)
{
    unsigned n = atomic_load_explicit(&b->npending, memory_order_acquire);
    for (unsigned i = 0; i < n; i++)
        if (strcmp(b->pending[i].name, name) == 0)
            return (int)i;
    if (!add)
        return -1;
    if (n == PENDING_QUEUES) {
        atomic_store_explicit(&b->pending_full, true, memory_order_relaxed);
        return -1;
    }
    snprintf(b->pending[n].name, sizeof b->pending[n].name, "%s", name);
    atomic_store_explicit(&b->pending[n].n, 0, memory_order_relaxed);
    atomic_store_explicit(&b->npending, n + 1, memory_order_release);
    return (int)n;
}

/* Applies (commit) or forgets (rollback) the commit's changes to the pending counts. */
static void pending_settle(sq *b, bool apply)
{
    unsigned n = atomic_load_explicit(&b->npending, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        if (apply && b->delta[i] != 0)
            atomic_fetch_add_explicit(&b->pending[i].n, (uint64_t)b->delta[i],
                                      memory_order_relaxed);
        b->delta[i] = 0;
    }
}

/* After each commit (on the writer): past CKPT_PAGES frames of WAL, ask the checkpointer. Every
 * commit past it asks again: a checkpoint that raced with new commits leaves frames behind, and
 * the WAL starts over only after one that caught up. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sq *b = arg;
    (void)name;
    if (frames >= CKPT_PAGES) {
        pthread_mutex_lock(&b->ckpt_lock);
        if (!b->ckpt_due) {
            b->ckpt_due = true;
            pthread_cond_signal(&b->ckpt_cond);
        }
        pthread_mutex_unlock(&b->ckpt_lock);
    }
    if (frames >= CKPT_WRITER_PAGES) /* the checkpointer is not keeping up: bound the WAL */
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    sq *b = arg;
    pthread_setname_np(pthread_self(), "tr-checkpoint");
    pthread_mutex_lock(&b->ckpt_lock);
    for (;;) {
        while (!b->ckpt_due && !b->ckpt_stop)
            pthread_cond_wait(&b->ckpt_cond, &b->ckpt_lock);
        if (b->ckpt_stop)
            break;
        b->ckpt_due = false;
        pthread_mutex_unlock(&b->ckpt_lock);
        sqlite3_wal_checkpoint_v2(b->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&b->ckpt_lock);
    }
    pthread_mutex_unlock(&b->ckpt_lock);
    return NULL;
}

static int exec_op(sq *b, const unit *u, op *o)
{
    sqlite3_stmt *st = NULL;
    switch (o->kind) {
    case OP_SNAPSHOT:
        st = b->put_snapshot;
        sqlite3_bind_text(st, 1, u->jid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)o->seq);
        sqlite3_bind_blob(st, 3, o->data, (int)o->len, SQLITE_STATIC);
        break;
    case OP_OUTBOX:
        st = b->ins_outbox;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)b->next_outbox_id++);
        sqlite3_bind_text(st, 2, o->queue, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, o->key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, o->data, (int)o->len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)(time(NULL) * 1000LL));
        break;
    case OP_ACK:
        st = b->del_outbox;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)o->seq);
        break;
    case OP_PUBLISH: {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o->seq = b->next_bus_id++;
        o->ts = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        st = b->ins_bus;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)o->seq);
        sqlite3_bind_text(st, 2, o->queue, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, o->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)o->ts);
        sqlite3_bind_blob(st, 5, o->data, (int)o->len, SQLITE_STATIC);
        break;
    }
    case OP_BUS_ACK:
        st = b->put_offset;
        sqlite3_bind_text(st, 1, o->queue, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)o->seq);
        break;
    default:
        return SQLITE_OK;
    }
    int rc = sqlite3_step(st);
    if (o->kind == OP_OUTBOX && rc == SQLITE_DONE) {
        int slot = pending_slot(b, o->queue, true);
        if (slot >= 0)
            b->delta[slot]++;
    } else if (o->kind == OP_ACK && rc == SQLITE_ROW) { /* RETURNING queue: a row went */
        int slot = pending_slot(b, (const char *)sqlite3_column_text(st, 0), true);
        if (slot >= 0)
            b->delta[slot]--;
        rc = sqlite3_step(st); /* SQLITE_DONE */
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The unit's events as one event_batches row (none: nothing to do). */
static int put_events(sq *b, const unit *u)
{
    size_t need = 0, n = 0;
    uint64_t first = 0, last = 0;
    for (size_t i = 0; i < u->n; i++)
        if (u->ops[i].kind == OP_EVENT) {
            need += 12 + u->ops[i].len;
            first = n++ == 0 ? u->ops[i].seq : first;
            last = u->ops[i].seq;
        }
    if (n == 0)
        return SQLITE_OK;
    if (need > (size_t)INT32_MAX)
        return SQLITE_TOOBIG;
    if (need > b->cap) {
        unsigned char *nb = realloc(b->buf, need);
        if (nb == NULL)
            return SQLITE_NOMEM;
        b->buf = nb;
        b->cap = need;
    }
    size_t off = 0;
    for (size_t i = 0; i < u->n; i++) {
        const op *o = &u->ops[i];
        if (o->kind != OP_EVENT)
            continue;
        put_le(b->buf + off, o->seq, 8);
        put_le(b->buf + off + 8, o->len, 4);
        memcpy(b->buf + off + 12, o->data, o->len);
        off += 12 + o->len;
    }
    sqlite3_stmt *st = b->ins_batch;
    sqlite3_bind_text(st, 1, u->jid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)first);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)last);
    sqlite3_bind_blob(st, 4, b->buf, (int)off, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void sq_commit(tr_store *s, unit *batch)
{
    sq *b = s->bk;
    int rc = sqlite3_step(b->begin) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(b->db);
    sqlite3_reset(b->begin);
    for (unit *u = batch; rc == SQLITE_OK && u != NULL; u = u->next) {
        rc = put_events(b, u);
        for (size_t i = 0; rc == SQLITE_OK && i < u->n; i++)
            rc = exec_op(b, u, &u->ops[i]);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(b->commit) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(b->db);
        sqlite3_reset(b->commit);
    }
    pending_settle(b, rc == SQLITE_OK);
    if (rc != SQLITE_OK) {
        char why[256];
        snprintf(why, sizeof why, "persist failed in %s: %s", s->where, sqlite3_errmsg(b->db));
        if (!sqlite3_get_autocommit(b->db)) /* a failed BEGIN left no transaction to undo */
            sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
        for (unit *u = batch; u != NULL; u = u->next) { /* all or nothing */
            u->failed = true;
            snprintf(u->why, sizeof u->why, "%s", why);
        }
    }
}

static int sq_recover(tr_store *s, tr_journal *j, tr_journal_restore_fn restore,
                      tr_journal_apply_fn apply, void *state)
{
    sq *b = s->bk;
    int rc = TR_OK;
    uint64_t from = 0;
    pthread_mutex_lock(&b->read_lock);
    if (b->rdb == NULL || b->rd_snap == NULL) {
        pthread_mutex_unlock(&b->read_lock);
        return TR_ESTATE;
    }
    bool in_txn = sqlite3_step(b->rd_begin) == SQLITE_DONE;
    sqlite3_reset(b->rd_begin);
    sqlite3_stmt *st = b->rd_snap;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        from = (uint64_t)sqlite3_column_int64(st, 0);
        if (restore != NULL && restore(state, from, sqlite3_column_blob(st, 1),
                                       (size_t)sqlite3_column_bytes(st, 1)) != 0)
            rc = TR_EBADMSG;
    } else if (step != SQLITE_DONE) {
        rc = TR_EIO;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    j->seq = from;
    if (rc != TR_OK)
        goto out;
    st = b->rd_events;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)from);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        if (apply != NULL && apply(state, seq, sqlite3_column_blob(st, 1),
                                   (size_t)sqlite3_column_bytes(st, 1)) != 0) {
            rc = TR_EBADMSG;
            break;
        }
        j->seq = seq;
        j->since_snapshot++;
    }
    if (rc == TR_OK && step != SQLITE_DONE)
        rc = TR_EIO;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != TR_OK)
        goto out;
    /* then the batches (schema 2), each event once, in order */
    st = b->rd_batches;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)j->seq);
    while (rc == TR_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *d = sqlite3_column_blob(st, 0);
        size_t len = (size_t)sqlite3_column_bytes(st, 0), off = 0;
        while (rc == TR_OK && off < len) {
            if (len - off < 12 || len - off - 12 < get_le(d + off + 8, 4)) {
                rc = TR_EBADMSG; /* a torn or foreign row */
                break;
            }
            uint64_t seq = get_le(d + off, 8);
            size_t el = (size_t)get_le(d + off + 8, 4);
            if (seq > j->seq) {
                if (apply != NULL && apply(state, seq, d + off + 12, el) != 0)
                    rc = TR_EBADMSG;
                j->seq = seq;
                j->since_snapshot++;
            }
            off += 12 + el;
        }
    }
    if (rc == TR_OK && step != SQLITE_DONE)
        rc = TR_EIO;
out:
    if (rc == TR_EIO)
        tr_log(TR_LOG_ERROR, "store", "recovering %s from %s: %s", j->id, s->where,
               sqlite3_errmsg(b->rdb));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (in_txn) {
        (void)sqlite3_step(b->rd_end);
        sqlite3_reset(b->rd_end);
    }
    pthread_mutex_unlock(&b->read_lock);
    return rc;
}

static bool sq_item_get(tr_store *s, oqueue *q, uint64_t id, store_item_fn fn)
{
    sq *b = s->bk;
    sqlite3_stmt *st = b->get_outbox;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    if (found)
        fn(s, q, id, sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0),
           sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

static void sq_items_next(tr_store *s, oqueue *q, uint64_t after, unsigned limit,
                          store_item_fn fn)
{
    sq *b = s->bk;
    sqlite3_stmt *st = b->next_outbox;
    sqlite3_bind_text(st, 1, q->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)after);
    sqlite3_bind_int(st, 3, (int)limit);
    while (sqlite3_step(st) == SQLITE_ROW)
        fn(s, q, (uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_text(st, 1),
           (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_blob(st, 2),
           (size_t)sqlite3_column_bytes(st, 2));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static void sq_bus_next(tr_store *s, uint64_t after, unsigned limit, store_bus_fn fn, void *arg)
{
    sq *b = s->bk;
    sqlite3_stmt *st = b->next_bus;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
    sqlite3_bind_int(st, 2, (int)limit);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(st, 1);
        const char *key = (const char *)sqlite3_column_text(st, 2);
        if (!fn(s, arg, (uint64_t)sqlite3_column_int64(st, 0), topic ? topic : "",
                key ? key : "", (uint64_t)sqlite3_column_int64(st, 3),
                sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4)))
            break;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int sq_bus_count(tr_store *s, const char *topic, uint64_t after, uint64_t upto,
                        uint64_t *n)
{
    sq *b = s->bk;
    sqlite3_stmt *st = b->count_bus;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)upto);
    sqlite3_bind_text(st, 3, topic, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_ROW ? TR_OK : TR_EIO;
    *n = rc == TR_OK ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int sq_bus_offset(tr_store *s, const char *name, uint64_t *off)
{
    sq *b = s->bk;
    sqlite3_stmt *st = b->get_offset;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    *off = step == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? TR_OK : TR_EIO;
}

/* Finalizes each statement and forgets it. */
static void finalize_all(sqlite3_stmt **const st[], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_finalize(*st[i]);
        *st[i] = NULL;
    }
}

static void sq_close(tr_store *s)
{
    sq *b = s->bk;
    if (b == NULL)
        return;
    sqlite3_stmt **const wr[] = {&b->ins_bus,    &b->put_offset,   &b->next_bus,   &b->count_bus,
                                 &b->get_offset, &b->ins_batch,    &b->put_snapshot,
                                 &b->ins_outbox, &b->del_outbox,   &b->get_outbox,
                                 &b->next_outbox, &b->begin,       &b->commit};
    finalize_all(wr, sizeof wr / sizeof *wr);
    if (b->ckpt_started) {
        pthread_mutex_lock(&b->ckpt_lock);
        b->ckpt_stop = true;
        pthread_cond_signal(&b->ckpt_cond);
        pthread_mutex_unlock(&b->ckpt_lock);
        pthread_join(b->ckpt, NULL);
        b->ckpt_started = false;
    }
    sqlite3_close(b->cdb);
    b->cdb = NULL;
    sqlite3_close(b->db);
    pthread_mutex_lock(&b->read_lock);
    sqlite3_stmt **const rd[] = {&b->rd_snap, &b->rd_events, &b->rd_batches, &b->rd_begin,
                                 &b->rd_end};
    finalize_all(rd, sizeof rd / sizeof *rd);
    sqlite3_close(b->rdb);
    b->db = b->rdb = NULL;
    pthread_mutex_unlock(&b->read_lock);
}

static void sq_free(tr_store *s)
{
    sq *b = s->bk;
    if (b == NULL)
        return;
    sq_close(s);
    pthread_mutex_destroy(&b->read_lock);
    pthread_mutex_destroy(&b->ckpt_lock);
    pthread_cond_destroy(&b->ckpt_cond);
    free(b->buf);
    free(b);
    s->bk = NULL;
}

static int sq_pending(tr_store *s, const char *queue, uint64_t *n)
{
    sq *b = s->bk;
    int slot = pending_slot(b, queue, false);
    if (slot >= 0 || !atomic_load_explicit(&b->pending_full, memory_order_relaxed)) { /* counted here, or never put since the store opened */
        *n = slot >= 0 ? atomic_load_explicit(&b->pending[slot].n, memory_order_relaxed) : 0;
        return TR_OK;
    }
    pthread_mutex_lock(&b->read_lock);
    sqlite3_stmt *st = NULL;
    int rc = TR_EIO;
    if (b->rdb != NULL &&
        sqlite3_prepare_v2(b->rdb, "SELECT count(*) FROM outbox WHERE queue = ?", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, queue, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            *n = (uint64_t)sqlite3_column_int64(st, 0);
            rc = TR_OK;
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&b->read_lock);
    return rc;
}

static const store_backend sqlite_backend = {
    .commit = sq_commit,
    .recover = sq_recover,
    .item_get = sq_item_get,
    .items_next = sq_items_next,
    .pending = sq_pending,
    .bus_next = sq_bus_next,
    .bus_count = sq_bus_count,
    .bus_offset = sq_bus_offset,
    .close = sq_close,
    .free = sq_free,
};

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, pid TEXT NOT NULL, "
    "  seq INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_pid ON events(pid, seq);"
    "CREATE TABLE IF NOT EXISTS event_batches(id INTEGER PRIMARY KEY, pid TEXT NOT NULL, "
    "  first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS event_batches_by_pid ON event_batches(pid, last_seq);"
    "CREATE TABLE IF NOT EXISTS snapshots(pid TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
    "  data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY, "
    "  queue TEXT NOT NULL, key TEXT NOT NULL, data BLOB NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS bus(id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
    "  key TEXT NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS bus_offsets(name TEXT PRIMARY KEY, off INTEGER NOT NULL) "
    "  WITHOUT ROWID;";
/* Outbox ids are given by the writer (max + 1 at open, then counting up), not by AUTOINCREMENT
 * (which rewrote the sqlite_sequence page in every commit); items are read in id order by a
 * rowid range scan, so there is no (queue, id) index to maintain either. Files made before
 * (AUTOINCREMENT, outbox_by_queue) work unchanged. */

/* Schema 2 -> 3: snapshots from a WITHOUT ROWID table to a rowid one (see the top). */
static const char *const snapshots_v3_sql =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE snapshots_v3(pid TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);"
    "INSERT INTO snapshots_v3(pid, seq, data) SELECT pid, seq, data FROM snapshots;"
    "DROP TABLE snapshots;"
    "ALTER TABLE snapshots_v3 RENAME TO snapshots;"
    "COMMIT;";

/* Whether the file's snapshots table is the WITHOUT ROWID one of schemas 1 and 2. */
static bool snapshots_without_rowid(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    bool old = false;
    if (sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE name = 'snapshots'", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *sql = (const char *)sqlite3_column_text(st, 0);
        old = sql != NULL && strstr(sql, "WITHOUT ROWID") != NULL;
    }
    sqlite3_finalize(st);
    return old;
}

static int fail_open(tr_store *s, char *err, size_t errlen, const char *what, sqlite3 *db)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s%s%s", s->where, what, db != NULL ? ": " : "",
                 db != NULL ? sqlite3_errmsg(db) : "");
    return TR_EIO;
}

static int prepare(sq *b, sqlite3_stmt **st, const char *sql)
{
    return sqlite3_prepare_v3(b->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
}

int tr__store_sqlite_open(tr_store *s, const tr_store_opts *o, char *err, size_t errlen)
{
    sq *b = calloc(1, sizeof *b);
    if (b == NULL)
        return TR_ENOMEM;
    pthread_mutex_init(&b->read_lock, NULL);
    pthread_mutex_init(&b->ckpt_lock, NULL);
    pthread_cond_init(&b->ckpt_cond, NULL);
    s->bk = b;
    s->be = &sqlite_backend;
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(s->where, &b->db, flags, NULL) != SQLITE_OK)
        return fail_open(s, err, errlen, "cannot open the database", b->db);
    sqlite3_busy_timeout(b->db, 5000);
    /* a file that is not a database shows at the first statement */
    sqlite3_stmt *st = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(b->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0)
        return fail_open(s, err, errlen, "not a database, or corrupt", b->db);
    if (version > TROUPE_SQLITE_SCHEMA) {
        char what[128];
        snprintf(what, sizeof what, "schema version %d is newer than this build's (%d)", version,
                 TROUPE_SQLITE_SCHEMA);
        return fail_open(s, err, errlen, what, NULL);
    }
    char sync_sql[64];
    snprintf(sync_sql, sizeof sync_sql, "PRAGMA synchronous=%s",
             o->sync == TR_SYNC_NORMAL ? "NORMAL" : "FULL");
    /* 64 MiB of page cache for the writer (the default 2 MiB made inserts into a journal of a
     * million events three times slower) */
    sqlite3_exec(b->db, "PRAGMA cache_size=-65536", NULL, NULL, NULL);
    if (sqlite3_exec(b->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(b->db, sync_sql, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(b->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK)
        return fail_open(s, err, errlen, "cannot set up the schema", b->db);
    if (snapshots_without_rowid(b->db) &&
        sqlite3_exec(b->db, snapshots_v3_sql, NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
        return fail_open(s, err, errlen, "cannot convert the snapshots table (schema 3)", b->db);
    }
    if (sqlite3_exec(b->db, "PRAGMA user_version=3", NULL, NULL, NULL) != SQLITE_OK)
        return fail_open(s, err, errlen, "cannot set up the schema", b->db);
    if (prepare(b, &b->begin, "BEGIN IMMEDIATE") || prepare(b, &b->commit, "COMMIT") ||
        prepare(b, &b->ins_batch,
                "INSERT INTO event_batches(pid, first_seq, last_seq, data) VALUES(?, ?, ?, ?)") ||
        prepare(b, &b->put_snapshot,
                "INSERT OR REPLACE INTO snapshots(pid, seq, data) VALUES(?, ?, ?)") ||
        prepare(b, &b->ins_outbox,
                "INSERT INTO outbox(id, queue, key, data, created_ms) VALUES(?, ?, ?, ?, ?)") ||
        prepare(b, &b->del_outbox, "DELETE FROM outbox WHERE id = ? RETURNING queue") ||
        prepare(b, &b->get_outbox, "SELECT key, data FROM outbox WHERE id = ?") ||
        prepare(b, &b->next_outbox,
                "SELECT id, key, data FROM outbox WHERE queue = ? AND id > ? ORDER BY id LIMIT ?") ||
        prepare(b, &b->ins_bus, "INSERT INTO bus(id, topic, key, ts, data) VALUES(?, ?, ?, ?, ?)") ||
        prepare(b, &b->put_offset,
                "INSERT INTO bus_offsets(name, off) VALUES(?1, ?2) "
                "ON CONFLICT(name) DO UPDATE SET off = max(off, ?2)") ||
        prepare(b, &b->next_bus,
                "SELECT id, topic, key, ts, data FROM bus WHERE id > ? ORDER BY id LIMIT ?") ||
        prepare(b, &b->count_bus, "SELECT count(*) FROM bus WHERE id > ? AND id <= ? AND topic = ?") ||
        prepare(b, &b->get_offset, "SELECT off FROM bus_offsets WHERE name = ?"))
        return fail_open(s, err, errlen, "cannot prepare statements", b->db);
    sqlite3_stmt *bh = NULL;
    if (sqlite3_prepare_v2(b->db, "SELECT coalesce(max(id), 0) FROM bus", -1, &bh, NULL) !=
            SQLITE_OK ||
        sqlite3_step(bh) != SQLITE_ROW) {
        sqlite3_finalize(bh);
        return fail_open(s, err, errlen, "cannot read the bus", b->db);
    }
    s->bus_head = (uint64_t)sqlite3_column_int64(bh, 0);
    b->next_bus_id = s->bus_head + 1;
    sqlite3_finalize(bh);
    sqlite3_stmt *mx = NULL;
    if (sqlite3_prepare_v2(b->db, "SELECT coalesce(max(id), 0) FROM outbox", -1, &mx, NULL) !=
            SQLITE_OK ||
        sqlite3_step(mx) != SQLITE_ROW) {
        sqlite3_finalize(mx);
        return fail_open(s, err, errlen, "cannot read the outbox", b->db);
    }
    b->next_outbox_id = (uint64_t)sqlite3_column_int64(mx, 0) + 1;
    sqlite3_finalize(mx);
    /* the pending counts start from what the table holds (one scan, here only) */
    if (sqlite3_prepare_v2(b->db, "SELECT queue, count(*) FROM outbox GROUP BY queue", -1, &mx,
                           NULL) != SQLITE_OK)
        return fail_open(s, err, errlen, "cannot count the outbox", b->db);
    while (sqlite3_step(mx) == SQLITE_ROW) {
        int slot = pending_slot(b, (const char *)sqlite3_column_text(mx, 0), true);
        if (slot >= 0)
            atomic_store(&b->pending[slot].n, (uint64_t)sqlite3_column_int64(mx, 1));
    }
    sqlite3_finalize(mx);
    if (sqlite3_open_v2(s->where, &b->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return fail_open(s, err, errlen, "cannot open a reading connection", b->rdb);
    sqlite3_busy_timeout(b->rdb, 5000);
    static const char *const rd_sql[] = {
        "SELECT seq, data FROM snapshots WHERE pid = ?",
        "SELECT seq, data FROM events WHERE pid = ? AND seq > ? ORDER BY seq",
        "SELECT data FROM event_batches WHERE pid = ? AND last_seq > ? ORDER BY last_seq",
        "BEGIN", "COMMIT"};
    sqlite3_stmt **rd_st[] = {&b->rd_snap, &b->rd_events, &b->rd_batches, &b->rd_begin,
                              &b->rd_end};
    for (size_t i = 0; i < sizeof rd_sql / sizeof *rd_sql; i++)
        if (sqlite3_prepare_v3(b->rdb, rd_sql[i], -1, SQLITE_PREPARE_PERSISTENT, rd_st[i],
                               NULL) != SQLITE_OK)
            return fail_open(s, err, errlen, "cannot prepare the recovery's reads", b->rdb);
    /* the checkpointer: its own connection and thread; the hook replaces autocheckpoint */
    if (sqlite3_open_v2(s->where, &b->cdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return fail_open(s, err, errlen, "cannot open a checkpointing connection", b->cdb);
    sqlite3_busy_timeout(b->cdb, 5000);
    sqlite3_exec(b->cdb, sync_sql, NULL, NULL, NULL);
    if (pthread_create(&b->ckpt, NULL, ckpt_main, b) != 0)
        return fail_open(s, err, errlen, "cannot start the checkpointing thread", NULL);
    b->ckpt_started = true;
    sqlite3_wal_hook(b->db, wal_hook, b);
    return TR_OK;
}
