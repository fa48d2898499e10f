/*
 * redis.c — the store's shared backend: a Redis server used by every node of a cluster,
 * so an actor can move to a surviving node and recover there. Writes are fenced.
 *
 * Keys (standalone Redis; all under "troupe:"):
 *   troupe:ep:JID       the journal's owner epoch: INCR'd by each tr_journal_open (recovery)
 *   troupe:ev:JID       list of event blobs; the event at index i has sequence number i + 1
 *   troupe:sn:JID       hash {seq, d}: the snapshot
 *   troupe:ob:seq       outbox item ids (INCR)
 *   troupe:ob:i:ID      hash {q, k, d}: an outbox item
 *   troupe:ob:q:QUEUE   sorted set of the queue's item ids (score = id)
 *   troupe:bus          the event bus's log (troupe/bus.h): a stream, entry ID-0 for event ID,
 *                       fields t (topic), k (key), ts (commit time, µs), d (data)
 *   troupe:bus:seq      the last event id given (INCR, in the unit's script)
 *   troupe:bus:t:TOPIC  sorted set of the topic's event ids (to count a subscription's lag)
 *   troupe:bus:off      hash: subscription name -> its offset (only ever raised)
 * Each unit is one Lua script call — atomic on the server — that first checks the journal's
 * epoch is still the caller's (else "STALE": an owner that lost the journal to another node can
 * never write it again, even after a partition heals) and that its first event follows the last
 * one stored, then writes everything; the units of a batch are pipelined in one round trip.
 * Durability is Redis's: with appendonly yes and appendfsync always, a reply comes after the
 * fsync (docs/persistence.md says what everysec and no lose).
 */
#include "store_impl.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const unit_lua =
    "local jid, epoch = ARGV[1], ARGV[2]\n"
    "if jid ~= '' then\n"
    "  local cur = redis.call('GET', 'troupe:ep:' .. jid)\n"
    "  if cur ~= epoch then\n"
    "    return redis.error_reply('STALE journal ' .. jid .. ' belongs to epoch ' ..\n"
    "      tostring(cur) .. ', not ' .. epoch .. ' (another node took it over)')\n"
    "  end\n"
    "end\n"
    "local evk = 'troupe:ev:' .. jid\n"
    "local next = nil\n"
    "local i = 3\n"
    "while i <= #ARGV do\n"  /* check first: a script that fails half way keeps its writes */
    "  local k = ARGV[i]\n"
    "  if k == 'E' then\n"
    "    if next == nil then next = redis.call('LLEN', evk) + 1 end\n"
    "    if tonumber(ARGV[i + 1]) ~= next then\n"
    "      return redis.error_reply('SEQ journal ' .. jid .. ' expected event ' .. next ..\n"
    "        ', got ' .. ARGV[i + 1])\n"
    "    end\n"
    "    next = next + 1\n"
    "    i = i + 3\n"
    "  elseif k == 'S' then i = i + 3\n"
    "  elseif k == 'O' or k == 'P' then i = i + 4\n"
    "  elseif k == 'A' then i = i + 2\n"
    "  elseif k == 'B' then i = i + 3\n"
    "  else return redis.error_reply('BAD op ' .. tostring(k)) end\n"
    "end\n"
    "i = 3\n"
    "local out = {}\n"
    "while i <= #ARGV do\n"
    "  local k = ARGV[i]\n"
    "  if k == 'E' then\n"
    "    redis.call('RPUSH', evk, ARGV[i + 2]); i = i + 3\n"
    "  elseif k == 'S' then\n"
    "    redis.call('HSET', 'troupe:sn:' .. jid, 'seq', ARGV[i + 1], 'd', ARGV[i + 2]); i = i + 3\n"
    "  elseif k == 'O' then\n"
    "    local id = redis.call('INCR', 'troupe:ob:seq')\n"
    "    redis.call('HSET', 'troupe:ob:i:' .. id, 'q', ARGV[i + 1], 'k', ARGV[i + 2],\n"
    "      'd', ARGV[i + 3])\n"
    "    redis.call('ZADD', 'troupe:ob:q:' .. ARGV[i + 1], id, id); i = i + 4\n"
    "  elseif k == 'P' then\n"  /* an event of the bus: its id and commit time are the reply's */
    "    local id = redis.call('INCR', 'troupe:bus:seq')\n"
    "    local t = redis.call('TIME')\n"
    "    local ts = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]\n"
    "    redis.call('XADD', 'troupe:bus', id .. '-0', 't', ARGV[i + 1], 'k', ARGV[i + 2],\n"
    "      'ts', ts, 'd', ARGV[i + 3])\n"
    "    redis.call('ZADD', 'troupe:bus:t:' .. ARGV[i + 1], id, id)\n"
    "    out[#out + 1] = id; out[#out + 1] = ts; i = i + 4\n"
    "  elseif k == 'B' then\n"
    "    local cur = tonumber(redis.call('HGET', 'troupe:bus:off', ARGV[i + 1]) or '0')\n"
    "    if tonumber(ARGV[i + 2]) > cur then\n"
    "      redis.call('HSET', 'troupe:bus:off', ARGV[i + 1], ARGV[i + 2])\n"
    "    end\n"
    "    i = i + 3\n"
    "  else\n"
    "    local q = redis.call('HGET', 'troupe:ob:i:' .. ARGV[i + 1], 'q')\n"
    "    if q then\n"
    "      redis.call('ZREM', 'troupe:ob:q:' .. q, ARGV[i + 1])\n"
    "      redis.call('DEL', 'troupe:ob:i:' .. ARGV[i + 1])\n"
    "    end\n"
    "    i = i + 2\n"
    "  end\n"
    "end\n"
    "return out\n";

typedef struct rd {
    redisContext *w;        /* the writer's */
    redisContext *r;        /* recovery (read_lock) */
    pthread_mutex_t read_lock;
    char host[256];
    unsigned port;
    char sha[41];
} rd;

static redisContext *connect_to(const rd *b)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(b->host, (int)b->port, tv);
    if (c != NULL && c->err == 0) {
        struct timeval limit = {10, 0}; /* no call waits for ever on a stuck server */
        redisSetTimeout(c, limit);
    }
    return c;
}

/* The writer's connection, reconnected if it broke. */
static redisContext *writer_conn(rd *b)
{
    if (b->w != NULL && b->w->err == 0)
        return b->w;
    if (b->w != NULL)
        redisFree(b->w);
    b->w = connect_to(b);
    return b->w;
}

/* The reading connection (read_lock held), connected again if it failed. */
static redisContext *reader_conn(rd *b)
{
    if (b->r == NULL || b->r->err != 0) {
        if (b->r != NULL)
            redisFree(b->r);
        b->r = connect_to(b);
    }
    return b->r;
}

/* Appends the arguments of one unit's script call. */
typedef struct args {
    const char **v;
    size_t *len;
    size_t n, cap;
    char num[1024][24];     /* number strings */
    size_t nnum;
} args;

static bool args_add(args *a, const void *p, size_t len)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        const char **v = realloc(a->v, cap * sizeof *v);
        size_t *l = v != NULL ? realloc(a->len, cap * sizeof *l) : NULL;
        if (v == NULL || l == NULL) {
            if (v != NULL)
                a->v = v;
            return false;
        }
        a->v = v;
        a->len = l;
        a->cap = cap;
    }
    a->v[a->n] = p;
    a->len[a->n] = len;
    a->n++;
    return true;
}

static bool args_num(args *a, uint64_t v)
{
    if (a->nnum == sizeof a->num / sizeof a->num[0])
        return false;
    char *s = a->num[a->nnum++];
    int n = snprintf(s, sizeof a->num[0], "%llu", (unsigned long long)v);
    return args_add(a, s, (size_t)n);
}

/* Builds EVALSHA sha 0 jid epoch ops... for u; false when it does not fit (then it fails). */
static bool unit_args(const rd *b, const unit *u, args *a)
{
    a->n = 0;
    a->nnum = 0;
    bool ok = args_add(a, "EVALSHA", 7) && args_add(a, b->sha, 40) && args_add(a, "0", 1);
    ok = ok && args_add(a, u->jid != NULL ? u->jid : "", u->jid != NULL ? strlen(u->jid) : 0) &&
         args_num(a, u->epoch);
    for (size_t i = 0; ok && i < u->n; i++) {
        const op *o = &u->ops[i];
        switch (o->kind) {
        case OP_EVENT:
            ok = args_add(a, "E", 1) && args_num(a, o->seq) && args_add(a, o->data, o->len);
            break;
        case OP_SNAPSHOT:
            ok = args_add(a, "S", 1) && args_num(a, o->seq) && args_add(a, o->data, o->len);
            break;
        case OP_OUTBOX:
            ok = args_add(a, "O", 1) && args_add(a, o->queue, strlen(o->queue)) &&
                 args_add(a, o->key, strlen(o->key)) && args_add(a, o->data, o->len);
            break;
        case OP_ACK:
            ok = args_add(a, "A", 1) && args_num(a, o->seq);
            break;
        case OP_PUBLISH:
            ok = args_add(a, "P", 1) && args_add(a, o->queue, strlen(o->queue)) &&
                 args_add(a, o->key, strlen(o->key)) && args_add(a, o->data, o->len);
            break;
        case OP_BUS_ACK:
            ok = args_add(a, "B", 1) && args_add(a, o->queue, strlen(o->queue)) &&
                 args_num(a, o->seq);
            break;
        default:
            break;
        }
    }
    return ok;
}

static bool unit_writes(const unit *u)
{
    for (size_t i = 0; i < u->n; i++)
        if (u->ops[i].kind == OP_EVENT || u->ops[i].kind == OP_SNAPSHOT ||
            u->ops[i].kind == OP_OUTBOX || u->ops[i].kind == OP_ACK ||
            u->ops[i].kind == OP_PUBLISH || u->ops[i].kind == OP_BUS_ACK)
            return true;
    return false;
}

static bool load_script(rd *b, redisContext *c)
{
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", unit_lua);
    bool ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(b->sha, r->str, 41);
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

static void fail_all(tr_store *s, unit *batch, const char *what)
{
    for (unit *u = batch; u != NULL; u = u->next)
        if (!u->failed) {
            u->failed = true;
            snprintf(u->why, sizeof u->why, "persist failed at %s: %s", s->where, what);
        }
}

static void rd_commit(tr_store *s, unit *batch)
{
    rd *b = s->bk;
    redisContext *c = writer_conn(b);
    if (c == NULL || c->err != 0) {
        fail_all(s, batch, c != NULL ? c->errstr : "cannot connect");
        return;
    }
    args a = {0};
    size_t sent = 0;
    for (unit *u = batch; u != NULL; u = u->next) {
        if (!unit_writes(u))
            continue;
        if (!unit_args(b, u, &a)) {
            u->failed = true;
            snprintf(u->why, sizeof u->why, "persist failed: a unit too large for one call");
            continue;
        }
        redisAppendCommandArgv(c, (int)a.n, a.v, a.len);
        sent++;
    }
    /* Every reply of the pipeline is read before anything else is sent on the connection: a
     * server that restarted answers NOSCRIPT to each unit, and a SCRIPT LOAD sent after the first
     * one would have its own reply taken for the next unit's — a unit never run taken as
     * committed (found by scripts/chaos: a 201 for an order Redis never saw, after a kill -9 of
     * the server). Then the script is loaded once and the NOSCRIPT units alone sent again, in
     * order (another node may have loaded it meanwhile: a later unit may have run). */
    redisReply **rep = sent > 0 ? calloc(sent, sizeof *rep) : NULL;
    if (sent > 0 && rep == NULL) { /* the replies cannot be kept: this connection is lost */
        fail_all(s, batch, "out of memory reading the replies");
        redisFree(c);
        b->w = NULL;
        free(a.v);
        free(a.len);
        return;
    }
    size_t k = 0;
    bool noscript = false, lost = false;
    for (unit *u = batch; u != NULL && k < sent; u = u->next) {
        if (!unit_writes(u) || u->failed)
            continue;
        if (redisGetReply(c, (void **)&rep[k]) != REDIS_OK || rep[k] == NULL) {
            fail_all(s, u, c->errstr[0] ? c->errstr : "connection lost");
            lost = true;
            break;
        }
        if (rep[k]->type == REDIS_REPLY_ERROR && strncmp(rep[k]->str, "NOSCRIPT", 8) == 0)
            noscript = true;
        k++;
    }
    size_t got = k; /* replies read: the units after them failed above (connection lost) */
    bool loaded = noscript && !lost && load_script(b, c);
    k = 0;
    for (unit *u = batch; u != NULL && k < got; u = u->next) {
        if (!unit_writes(u) || u->failed)
            continue;
        redisReply *r = rep[k];
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
            /* the server restarted and forgot the script: once more, now loaded */
            freeReplyObject(r);
            r = rep[k] = loaded && unit_args(b, u, &a) ? redisCommandArgv(c, (int)a.n, a.v, a.len)
                                                       : NULL;
        }
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            u->failed = true;
            snprintf(u->why, sizeof u->why, "persist refused at %s: %s", s->where,
                     r != NULL ? r->str : "no reply");
        } else if (r->type == REDIS_REPLY_ARRAY) { /* the published events' ids and times */
            size_t e = 0;
            for (size_t i = 0; i < u->n; i++) {
                op *o = &u->ops[i];
                if (o->kind != OP_PUBLISH || e + 1 >= r->elements)
                    continue;
                const redisReply *id = r->element[e], *ts = r->element[e + 1];
                o->seq = id->type == REDIS_REPLY_INTEGER ? (uint64_t)id->integer
                                                          : strtoull(id->str ? id->str : "0",
                                                                     NULL, 10);
                o->ts = ts->type == REDIS_REPLY_INTEGER ? (uint64_t)ts->integer
                                                         : strtoull(ts->str ? ts->str : "0",
                                                                    NULL, 10);
                e += 2;
            }
        }
        k++;
    }
    for (size_t i = 0; i < sent; i++)
        if (rep[i] != NULL)
            freeReplyObject(rep[i]);
    free(rep);
    free(a.v);
    free(a.len);
}

static int rd_recover(tr_store *s, tr_journal *j, tr_journal_restore_fn restore,
                      tr_journal_apply_fn apply, void *state)
{
    rd *b = s->bk;
    int rc = TR_OK;
    pthread_mutex_lock(&b->read_lock);
    reader_conn(b);
    redisContext *c = b->r;
    redisReply *r = NULL;
    if (c == NULL || c->err != 0) {
        tr_log(TR_LOG_ERROR, "store", "recovering %s: cannot reach %s: %s", j->id, s->where,
               c != NULL ? c->errstr : "no connection");
        rc = TR_EIO;
        goto out;
    }
    /* ownership first: from now on a write from an earlier owner is refused */
    r = redisCommand(c, "INCR troupe:ep:%s", j->id);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        rc = TR_EIO;
        goto out;
    }
    j->epoch = (uint64_t)r->integer;
    freeReplyObject(r);
    r = redisCommand(c, "HMGET troupe:sn:%s seq d", j->id);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        rc = TR_EIO;
        goto out;
    }
    uint64_t from = 0;
    if (r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        from = strtoull(r->element[0]->str, NULL, 10);
        if (restore != NULL &&
            restore(state, from, r->element[1]->str, (size_t)r->element[1]->len) != 0)
            rc = TR_EBADMSG;
    }
    freeReplyObject(r);
    r = NULL;
    j->seq = from;
    /* the events after the snapshot, in pages */
    for (uint64_t at = from; rc == TR_OK;) {
        r = redisCommand(c, "LRANGE troupe:ev:%s %llu %llu", j->id, (unsigned long long)at,
                         (unsigned long long)(at + 9999));
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            rc = TR_EIO;
            break;
        }
        for (size_t i = 0; i < r->elements && rc == TR_OK; i++) {
            uint64_t seq = at + i + 1;
            if (apply != NULL &&
                apply(state, seq, r->element[i]->str, (size_t)r->element[i]->len) != 0)
                rc = TR_EBADMSG;
            j->seq = seq;
            j->since_snapshot++;
        }
        size_t got = r->elements;
        freeReplyObject(r);
        r = NULL;
        if (got < 10000)
            break;
        at += got;
    }
out:
    if (rc == TR_EIO)
        tr_log(TR_LOG_ERROR, "store", "recovering %s from %s: %s", j->id, s->where,
               c != NULL && c->err ? c->errstr : "unexpected reply");
    if (r != NULL)
        freeReplyObject(r);
    pthread_mutex_unlock(&b->read_lock);
    return rc;
}

static bool rd_item_get(tr_store *s, oqueue *q, uint64_t id, store_item_fn fn)
{
    rd *b = s->bk;
    redisContext *c = writer_conn(b);
    if (c == NULL || c->err != 0)
        return true; /* unknown: keep it in flight, try again later */
    redisReply *r = redisCommand(c, "HMGET troupe:ob:i:%llu k d", (unsigned long long)id);
    bool found = true;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        found = r->element[0]->type == REDIS_REPLY_STRING;
        if (found)
            fn(s, q, id, r->element[0]->str, r->element[0]->len, r->element[1]->str,
               r->element[1]->len);
    }
    if (r != NULL)
        freeReplyObject(r);
    return found;
}

static void rd_items_next(tr_store *s, oqueue *q, uint64_t after, unsigned limit,
                          store_item_fn fn)
{
    rd *b = s->bk;
    redisContext *c = writer_conn(b);
    if (c == NULL || c->err != 0)
        return;
    redisReply *ids = redisCommand(c, "ZRANGEBYSCORE troupe:ob:q:%s (%llu +inf LIMIT 0 %u",
                                   q->name, (unsigned long long)after, limit);
    if (ids == NULL || ids->type != REDIS_REPLY_ARRAY) {
        if (ids != NULL)
            freeReplyObject(ids);
        return;
    }
    for (size_t i = 0; i < ids->elements; i++) {
        uint64_t id = strtoull(ids->element[i]->str, NULL, 10);
        redisReply *r = redisCommand(c, "HMGET troupe:ob:i:%llu k d", (unsigned long long)id);
        if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING)
            fn(s, q, id, r->element[0]->str, r->element[0]->len, r->element[1]->str,
               r->element[1]->len);
        if (r != NULL)
            freeReplyObject(r);
    }
    freeReplyObject(ids);
}

/* ---- the bus ------------------------------------------------------------------------------- */

static const char *field(const redisReply *kv, const char *name, size_t *len)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(kv->element[i]->str, name) == 0) {
            *len = kv->element[i + 1]->len;
            return kv->element[i + 1]->str;
        }
    *len = 0;
    return NULL;
}

static void rd_bus_next(tr_store *s, uint64_t after, unsigned limit, store_bus_fn fn, void *arg)
{
    rd *b = s->bk;
    redisContext *c = writer_conn(b);
    if (c == NULL || c->err != 0)
        return;
    redisReply *r = redisCommand(c, "XRANGE troupe:bus %llu-0 + COUNT %u",
                                 (unsigned long long)after + 1, limit);
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        uint64_t id = strtoull(e->element[0]->str, NULL, 10);
        size_t tl, kl, sl, dl;
        const char *topic = field(e->element[1], "t", &tl), *key = field(e->element[1], "k", &kl);
        const char *ts = field(e->element[1], "ts", &sl), *d = field(e->element[1], "d", &dl);
        if (topic == NULL || key == NULL || ts == NULL || d == NULL)
            continue;
        if (!fn(s, arg, id, topic, key, strtoull(ts, NULL, 10), d, dl))
            break;
    }
    if (r != NULL)
        freeReplyObject(r);
}

static int rd_bus_count(tr_store *s, const char *topic, uint64_t after, uint64_t upto,
                        uint64_t *n)
{
    rd *b = s->bk;
    redisContext *c = writer_conn(b);
    redisReply *r = c != NULL && c->err == 0
                        ? redisCommand(c, "ZCOUNT troupe:bus:t:%s (%llu %llu", topic,
                                       (unsigned long long)after, (unsigned long long)upto)
                        : NULL;
    int rc = r != NULL && r->type == REDIS_REPLY_INTEGER ? TR_OK : TR_EIO;
    *n = rc == TR_OK ? (uint64_t)r->integer : 0;
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

/* A number stored at key (0 when none); TR_EIO when Redis cannot be asked. */
static int get_num(tr_store *s, const char *cmd, const char *arg, uint64_t *out)
{
    rd *b = s->bk;
    redisContext *c = writer_conn(b);
    redisReply *r = c != NULL && c->err == 0 ? redisCommand(c, cmd, arg) : NULL;
    int rc = r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL)
                 ? TR_OK
                 : TR_EIO;
    *out = rc == TR_OK && r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

static int rd_bus_offset(tr_store *s, const char *name, uint64_t *off)
{
    return get_num(s, "HGET troupe:bus:off %s", name, off);
}

static int rd_bus_head(tr_store *s, uint64_t *head)
{
    return get_num(s, "GET %s", "troupe:bus:seq", head);
}

static void rd_close(tr_store *s)
{
    rd *b = s->bk;
    if (b == NULL)
        return;
    if (b->w != NULL)
        redisFree(b->w);
    pthread_mutex_lock(&b->read_lock);
    if (b->r != NULL)
        redisFree(b->r);
    b->w = b->r = NULL;
    pthread_mutex_unlock(&b->read_lock);
}

static void rd_free(tr_store *s)
{
    rd *b = s->bk;
    if (b == NULL)
        return;
    rd_close(s);
    pthread_mutex_destroy(&b->read_lock);
    free(b);
    s->bk = NULL;
}

static int rd_pending(tr_store *s, const char *queue, uint64_t *n)
{
    rd *b = s->bk;
    int rc = TR_EIO;
    pthread_mutex_lock(&b->read_lock);
    reader_conn(b);
    redisReply *r = b->r != NULL && b->r->err == 0
                        ? redisCommand(b->r, "ZCARD troupe:ob:q:%s", queue)
                        : NULL;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        *n = (uint64_t)r->integer;
        rc = TR_OK;
    }
    if (r != NULL)
        freeReplyObject(r);
    pthread_mutex_unlock(&b->read_lock);
    return rc;
}

/* A lease: troupe:lease:NAME holds the holder's id and expires (the server's clock) ttl_ms after
 * the last take or renewal; only its holder renews or gives it up. */
static const char *const lease_lua =
    "local v = redis.call('GET', KEYS[1])\n"
    "if ARGV[2] == '0' then\n"
    "  if v == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "  return 0\n"
    "end\n"
    "if v == false or v == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

static int rd_lease(tr_store *s, const char *name, const char *holder, unsigned ttl_ms,
                    bool *held)
{
    rd *b = s->bk;
    int rc = TR_EIO;
    char key[300], ttl[16];
    snprintf(key, sizeof key, "troupe:lease:%s", name);
    snprintf(ttl, sizeof ttl, "%u", ttl_ms);
    pthread_mutex_lock(&b->read_lock);
    reader_conn(b);
    const char *argv[] = {"EVAL", lease_lua, "1", key, holder, ttl};
    redisReply *r = b->r != NULL && b->r->err == 0 ? redisCommandArgv(b->r, 6, argv, NULL) : NULL;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        *held = r->integer == 1;
        rc = TR_OK;
    }
    if (r != NULL)
        freeReplyObject(r);
    pthread_mutex_unlock(&b->read_lock);
    return rc;
}

static const store_backend redis_backend = {
    .lease = rd_lease,
    .commit = rd_commit,
    .recover = rd_recover,
    .item_get = rd_item_get,
    .items_next = rd_items_next,
    .pending = rd_pending,
    .bus_next = rd_bus_next,
    .bus_count = rd_bus_count,
    .bus_offset = rd_bus_offset,
    .bus_head = rd_bus_head,
    .close = rd_close,
    .free = rd_free,
};

int tr__store_redis_open(tr_store *s, const tr_store_opts *o, char *err, size_t errlen)
{
    rd *b = calloc(1, sizeof *b);
    if (b == NULL)
        return TR_ENOMEM;
    pthread_mutex_init(&b->read_lock, NULL);
    snprintf(b->host, sizeof b->host, "%s", o->redis_host);
    b->port = o->redis_port ? o->redis_port : 6379u;
    s->bk = b;
    s->be = &redis_backend;
    b->w = connect_to(b);
    if (b->w == NULL || b->w->err != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot connect: %s", s->where,
                     b->w != NULL ? b->w->errstr : "out of memory");
        return TR_EIO;
    }
    if (!load_script(b, b->w)) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot load the write script (is it a Redis >= 5?)",
                     s->where);
        return TR_EIO;
    }
    b->r = connect_to(b);
    if (rd_bus_head(s, &s->bus_head) != TR_OK) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: cannot read the bus's last id", s->where);
        return TR_EIO;
    }
    return TR_OK;
}
