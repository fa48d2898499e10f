/*
 * supervisor.c — supervisors: actors that start children from specs and restart them.
 *
 * A supervisor traps exits and links to each child it starts, so every end of a child reaches
 * it as a TR_MSG_EXIT message, in order with everything else. It never blocks: stopping
 * children (one by one, in reverse start order, each with exit(shutdown) and then a kill after
 * its shutdown time) is an "operation" driven by the EXIT messages and kill timers that come
 * back; failures of other children meanwhile are deferred and handled when it completes, and so
 * are requests from outside (tr_sup_start_child & co., sent with a blocking call).
 *
 * Restart intensity is exact: the times of the last R restarts are kept in a ring; one more
 * within P ms makes the supervisor stop all its children and end with TR_EINTENSITY, which its
 * own supervisor sees as a failure (escalation). An optional exponential backoff delays a
 * crash-looping child's restarts (capped, with up to 25% jitter) through a timer message, so
 * the loop does not burn a core and other children are served meanwhile.
 *
 * Children: a doubly linked list in start order (a new child at the end; a restarted one keeps
 * its place), an index pid -> child of exactly the running ones (by_pid, which also gives the
 * running count), a FIFO of those whose restart waits for a backoff (the due queue), and a
 * `queued` mark on those the operation in progress is still to stop. So a child's start, exit,
 * restart, termination and removal from the middle are O(1) expected — a simple_one_for_one
 * supervisor under a shard router holds one child per active key, hundreds of thousands, and
 * starting and ending N of them is O(N) in all (the supervisor's own link set, link.c, is a
 * hash set at that size) — and only what is about order walks the list: the stop queue of an
 * operation (reverse start order, from a given child to the last: shutdown, one_for_all,
 * rest_for_one), the restarts after one (start order), which_child (the first with the id).
 * Restarts that fall due together are made in the order they were scheduled. Memory follows
 * the children: by_pid shrinks as they go, a child is freed when it is forgotten, the stop
 * queue when its operation ends.
 */
#include "idmap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUP_MAX_DEPTH 16
#define SUP_MAX_INTENSITY 1000000u
#define SUP_CALL_TIMEOUT_MS 60000u

/* Requests (tr__call) and timer messages, in the supervisor's reserved type range. */
enum {
    SUP_START_CHILD = TR_MSG_SUP_BASE, /* [arg bin] -> [rc, pid] */
    SUP_WHICH,                         /* [id str] -> [rc, pid] */
    SUP_TERMINATE,                     /* [pid] -> [rc] (after the child has ended) */
    SUP_COUNT,                         /* -> [rc, running, restarts] */
    SUP_KILL_TIMEOUT,                  /* timer: corr = token of the child being stopped */
    SUP_RESTART_DUE,                   /* timer: restart children whose backoff has passed */
    SUP_CHILDREN,                      /* [cap] -> a map (sup_children): the introspection
                                        * service's supervision tree (ctl.c) */
};

/* ---- specs: checking and deep copies ------------------------------------------------------- */

int tr__sup_spec_check(const tr_sup_spec *spec, unsigned depth)
{
    if (spec == NULL || depth > SUP_MAX_DEPTH || spec->strategy > TR_SIMPLE_ONE_FOR_ONE ||
        spec->intensity > SUP_MAX_INTENSITY || spec->backoff_max_ms < spec->backoff_min_ms ||
        (spec->nchildren > 0 && spec->children == NULL))
        return TR_EINVAL;
    if (spec->strategy == TR_SIMPLE_ONE_FOR_ONE && spec->nchildren != 1)
        return TR_EINVAL;
    for (size_t i = 0; i < spec->nchildren; i++) {
        const tr_child_spec *c = &spec->children[i];
        if (c->id == NULL || c->restart > TR_TEMPORARY)
            return TR_EINVAL;
        if ((c->behaviour == NULL || c->behaviour->receive == NULL) && c->supervisor == NULL)
            return TR_EINVAL;
        if (c->supervisor != NULL && tr__sup_spec_check(c->supervisor, depth + 1) != TR_OK)
            return TR_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(spec->children[j].id, c->id) == 0)
                return TR_EINVAL;
    }
    return TR_OK;
}

static void spec_free(tr_sup_spec *s);

static void child_spec_free(tr_child_spec *c)
{
    free((char *)c->id);
    if (c->arg_len > 0)
        free((void *)c->arg);
    if (c->supervisor != NULL)
        spec_free((tr_sup_spec *)c->supervisor);
}

static void spec_free(tr_sup_spec *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nchildren; i++)
        child_spec_free((tr_child_spec *)&s->children[i]);
    free((void *)s->children);
    free(s);
}

static tr_sup_spec *spec_copy(const tr_sup_spec *src)
{
    tr_sup_spec *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    *s = *src;
    s->children = NULL;
    s->nchildren = 0;
    tr_child_spec *kids = src->nchildren ? calloc(src->nchildren, sizeof *kids) : NULL;
    if (src->nchildren && kids == NULL) {
        free(s);
        return NULL;
    }
    s->children = kids;
    for (size_t i = 0; i < src->nchildren; i++) {
        tr_child_spec *c = &kids[i];
        *c = src->children[i];
        c->id = NULL;
        c->supervisor = NULL;
        if (c->arg_len > 0)
            c->arg = NULL;
        s->nchildren = i + 1;
        if ((c->id = strdup(src->children[i].id)) == NULL)
            goto fail;
        if (c->arg_len > 0) {
            void *copy = malloc(c->arg_len);
            if (copy == NULL)
                goto fail;
            memcpy(copy, src->children[i].arg, c->arg_len);
            c->arg = copy;
        }
        if (src->children[i].supervisor != NULL &&
            (c->supervisor = spec_copy(src->children[i].supervisor)) == NULL)
            goto fail;
    }
    return s;
fail:
    spec_free(s);
    return NULL;
}

/* ---- state --------------------------------------------------------------------------------- */

typedef struct child {
    struct child *prev, *next;  /* the supervisor's children, in start order */
    struct child *due_next;     /* the next on the due queue (while due_ms != 0) */
    const tr_child_spec *spec;  /* in the supervisor's spec (the template, for simple) */
    void *arg_owned;            /* simple_one_for_one: this child's copy of its argument */
    const void *arg;
    tr_pid pid;                 /* 0 while not running */
    uint32_t restarts;
    unsigned backoff_level;     /* consecutive quick restarts */
    uint64_t started_ms;
    uint64_t due_ms;            /* restart pending after a backoff (0 = none): on the due queue */
    bool removed;
    bool queued;                /* in the operation's queue, not taken by stop_next yet */
} child;

typedef struct deferred {
    struct deferred *next;
    child *c;                   /* a child failure (c set) ... */
    tr_reason_kind kind;
    tr_msg *req;                /* ... or a request */
} deferred;

enum { OP_NONE, OP_RESTART, OP_STOP, OP_TERMINATE };

typedef struct sup {
    tr_sup_spec *spec;          /* owned deep copy */
    tr_pid parent;
    child *head, *tail;         /* every child, in start order (see "Children" above) */
    size_t nkids;
    tr_idmap by_pid;            /* pid -> child*, for exactly the running children */
    child *due_head, *due_tail; /* children whose restart waits for a backoff, as scheduled */
    uint64_t *ring;             /* restart times (ms), the last `intensity` of them */
    size_t ring_len, ring_head;
    uint64_t restarts;          /* total */
    uint64_t rng;
    /* the operation in progress */
    int op;
    child **queue;              /* children to stop, in order; [iqueue, nqueue) have `queued` */
    size_t nqueue, iqueue;
    child *cur;                 /* being stopped */
    uint64_t kill_token;
    child *failed;              /* OP_RESTART: the child whose failure started it */
    bool restart_all;           /* OP_RESTART: the set is every child (one_for_all), else
                                 * `failed` and those started after it (rest_for_one) */
    tr_reason stop_reason;      /* OP_STOP */
    char *stop_text;
    tr_msg *request;            /* OP_TERMINATE: the request to answer */
    deferred *dq_head, *dq_tail;
} sup;

typedef struct sup_arg {
    const tr_sup_spec *spec;
    tr_pid parent;
} sup_arg;

static uint64_t now_ms(void)
{
    return tr__now_ns() / 1000000u;
}

static child *child_new(sup *s, const tr_child_spec *spec, const void *arg, size_t arg_len)
{
    child *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->spec = spec;
    c->arg = spec->arg;
    if (arg_len > 0) {
        if ((c->arg_owned = malloc(arg_len)) == NULL) {
            free(c);
            return NULL;
        }
        memcpy(c->arg_owned, arg, arg_len);
        c->arg = c->arg_owned;
    } else if (s->spec->strategy == TR_SIMPLE_ONE_FOR_ONE) {
        c->arg = arg;
    }
    c->prev = s->tail; /* the last started */
    if (s->tail != NULL)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    s->nkids++;
    return c;
}

/* Forgets a child that is not running. O(1): it is unlinked from the start order, and it is
 * on no queue (only children with due_ms = 0, outside any operation, are removed). */
static void child_remove(sup *s, child *c)
{
    TR_ASSERT(c->pid == 0 && c->due_ms == 0 && !c->queued);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        s->tail = c->prev;
    s->nkids--;
    free(c->arg_owned);
    free(c);
}

static const tr_behaviour sup_behaviour;

/* Starts (or restarts) a child, linked to the supervisor. */
static int child_start(tr_ctx *ctx, sup *s, child *c)
{
    tr_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.mailbox = c->spec->mailbox;
    o.link = true;
    o.restarts = c->restarts;
    tr_pid pid = 0;
    int rc;
    if (c->spec->supervisor != NULL) {
        sup_arg a = {.spec = c->spec->supervisor, .parent = tr_self(ctx)};
        o.trap_exits = true;
        rc = tr_spawn_ex(ctx, &sup_behaviour, &a, &o, &pid);
    } else {
        rc = tr_spawn_ex(ctx, c->spec->behaviour, c->arg, &o, &pid);
    }
    if (rc != TR_OK)
        return rc;
    if (tr__idmap_put(&s->by_pid, pid, (uint64_t)(uintptr_t)c) != TR_OK) {
        static const tr_reason kill = {.kind = TR_REASON_KILLED};
        tr_unlink(ctx, pid);
        tr_exit(ctx, pid, &kill);
        return TR_ENOMEM;
    }
    TR_ASSERT(c->due_ms == 0); /* a due child is taken off the due queue before it starts */
    c->pid = pid;
    c->started_ms = now_ms();
    return TR_OK;
}

/* Records a restart; false when it is one more than the intensity allows. */
static bool intensity_ok(sup *s)
{
    uint64_t now = now_ms();
    s->restarts++;
    size_t cap = s->spec->intensity;
    if (cap == 0)
        return false;
    /* the ring holds the last `intensity` restart times; the oldest is at ring_head when full */
    if (s->ring_len == cap) {
        uint64_t oldest = s->ring[s->ring_head];
        if (now - oldest < s->spec->period_ms)
            return false; /* this would be restart cap + 1 within the period */
        s->ring[s->ring_head] = now;
        s->ring_head = (s->ring_head + 1) % cap;
    } else {
        s->ring[(s->ring_head + s->ring_len) % cap] = now;
        s->ring_len++;
    }
    return true;
}

static uint64_t backoff_delay(sup *s, child *c)
{
    if (s->spec->backoff_min_ms == 0)
        return 0;
    uint64_t now = now_ms();
    if (c->started_ms != 0 && now - c->started_ms >= s->spec->period_ms)
        c->backoff_level = 0; /* it ran a while: start over */
    uint64_t d = s->spec->backoff_min_ms;
    for (unsigned i = 0; i < c->backoff_level && d < s->spec->backoff_max_ms; i++)
        d *= 2;
    if (d > s->spec->backoff_max_ms)
        d = s->spec->backoff_max_ms;
    if (c->backoff_level < 32)
        c->backoff_level++;
    /* jitter up to +25%, so children failing together do not restart in lockstep */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return d + (d / 4 > 0 ? s->rng % (d / 4 + 1) : 0);
}

/* Sends the supervisor one of its own runtime messages, now or after delay_ms (a timer). */
static void send_self(tr_ctx *ctx, uint32_t type, uint64_t corr, uint64_t delay_ms)
{
    tr_msg *m = tr_msg_new(type, 0);
    if (m == NULL)
        return;
    m->sender = tr_self(ctx);
    m->corr = corr;
    m->flags = TR_MF_SYSTEM;
    if (delay_ms == 0)
        tr__deliver(ctx->sys, ctx->w, tr_self(ctx), m);
    else
        tr__timer_add(ctx->sys, tr_self(ctx), m, (unsigned)delay_ms, false, NULL);
}

/* Puts c (not due) at the end of the due queue, to restart at due_ms (never 0). */
static void due_push(sup *s, child *c, uint64_t due_ms)
{
    TR_ASSERT(c->due_ms == 0 && c->pid == 0);
    c->due_ms = due_ms != 0 ? due_ms : 1;
    c->due_next = NULL;
    if (s->due_tail != NULL)
        s->due_tail->due_next = c;
    else
        s->due_head = c;
    s->due_tail = c;
}

/* Takes the first child off the due queue (due_ms stays: the caller clears or re-queues it). */
static child *due_pop(sup *s)
{
    child *c = s->due_head;
    if (c != NULL) {
        s->due_head = c->due_next;
        if (s->due_head == NULL)
            s->due_tail = NULL;
        c->due_next = NULL;
    }
    return c;
}

/* Marks c to be restarted after delay_ms, by a SUP_RESTART_DUE message to ourselves. */
static void schedule_restart(tr_ctx *ctx, sup *s, child *c, uint64_t delay_ms)
{
    due_push(s, c, now_ms() + delay_ms);
    send_self(ctx, SUP_RESTART_DUE, 0, delay_ms);
}

static void begin_stop(tr_ctx *ctx, sup *s, const tr_reason *why);
static void give_up(tr_ctx *ctx, sup *s);
static void on_restart_due(tr_ctx *ctx, sup *s);
static void handle_failure(tr_ctx *ctx, sup *s, child *c, tr_reason_kind kind);

/* ---- reports (the log hook: troupe.h, "Logging") ------------------------------------------- */

/* A child's name for a report: "ID (PID, behaviour NAME)". */
static const char *child_str(const child *c, tr_pid pid, char *buf, size_t cap)
{
    const char *b = c->spec->supervisor != NULL ? "a supervisor"
                    : c->spec->behaviour != NULL && c->spec->behaviour->name != NULL
                        ? c->spec->behaviour->name
                        : "?";
    snprintf(buf, cap, "%s (%#llx, %s%s)", c->spec->id != NULL ? c->spec->id : "?",
             (unsigned long long)pid, c->spec->supervisor != NULL ? "" : "behaviour ", b);
    return buf;
}

/* One report line from supervisor ctx: "[NODE: ]supervisor PID: WHAT". */
__attribute__((format(printf, 3, 4))) static void report(tr_ctx *ctx, tr_log_level level,
                                                         const char *fmt, ...);
static void report(tr_ctx *ctx, tr_log_level level, const char *fmt, ...)
{
    if (level > tr_log_level_get())
        return;
    char what[600], prefix[68];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    tr_log(level, "supervisor", "%ssupervisor %#llx: %s",
           tr__system_log_prefix(tr_ctx_system(ctx), prefix), (unsigned long long)tr_self(ctx),
           what);
}

/* A child's crash (an end the supervisor did not ask for, other than normal or shutdown). */
static void report_crash(tr_ctx *ctx, const child *c, tr_pid pid, const tr_reason *r)
{
    static const char *const kinds[] = {"normal", "shutdown", "killed", "error", "noproc",
                                        "noconnection"};
    char who[200];
    child_str(c, pid, who, sizeof who);
    if (r->kind == TR_REASON_ERROR)
        report(ctx, TR_LOG_ERROR, "child %s crashed: error %d (%s)%s%s", who, r->code,
               tr_strerror(r->code), r->text != NULL ? ": " : "", r->text != NULL ? r->text : "");
    else
        report(ctx, TR_LOG_ERROR, "child %s ended: %s", who,
               (unsigned)r->kind < 6 ? kinds[r->kind] : "?");
}

/* Restarts c now, or after its backoff. A failure to start (init refused) counts as another
 * restart and is retried through a message to ourselves, never by recursion: a child that can
 * never start ends in escalation after `intensity` attempts, not in a deep stack. */
static void restart_child(tr_ctx *ctx, sup *s, child *c, uint64_t delay)
{
    if (delay > 0) {
        schedule_restart(ctx, s, c, delay);
        return;
    }
    c->restarts++;
    char who[200];
    int rc = child_start(ctx, s, c);
    if (rc == TR_OK) {
        report(ctx, TR_LOG_INFO, "restarted child %s (restart %u)",
               child_str(c, c->pid, who, sizeof who), (unsigned)c->restarts);
        return;
    }
    report(ctx, TR_LOG_ERROR, "child %s could not restart: %s", child_str(c, 0, who, sizeof who),
           tr_strerror(rc));
    if (!intensity_ok(s)) {
        give_up(ctx, s);
        return;
    }
    schedule_restart(ctx, s, c, backoff_delay(s, c));
}

/* ---- stopping children, one at a time -------------------------------------------------------- */

static void stop_next(tr_ctx *ctx, sup *s);

static void op_done(tr_ctx *ctx, sup *s);

static void stop_child(tr_ctx *ctx, sup *s, child *c)
{
    s->cur = c;
    s->kill_token++;
    static const tr_reason kill = {.kind = TR_REASON_KILLED};
    static const tr_reason shutdown = {.kind = TR_REASON_SHUTDOWN};
    unsigned ms = c->spec->shutdown_ms;
    if (ms == TR_SHUTDOWN_BRUTAL) {
        tr_exit(ctx, c->pid, &kill);
        return;
    }
    tr_exit(ctx, c->pid, &shutdown);
    if (ms != TR_SHUTDOWN_INFINITY)
        send_self(ctx, SUP_KILL_TIMEOUT, s->kill_token, ms);
}

static void stop_next(tr_ctx *ctx, sup *s)
{
    s->cur = NULL;
    while (s->iqueue < s->nqueue) {
        child *c = s->queue[s->iqueue++];
        c->queued = false;
        if (c->pid != 0) {
            stop_child(ctx, s, c);
            return;
        }
    }
    op_done(ctx, s);
}

/* Empties the operation's queue (the children not taken yet are no longer queued). */
static void queue_reset(sup *s)
{
    for (size_t i = s->iqueue; i < s->nqueue; i++)
        s->queue[i]->queued = false;
    free(s->queue);
    s->queue = NULL;
    s->nqueue = s->iqueue = 0;
}

/* Starts an operation that stops, one at a time and in reverse start order, the running
 * children from `first` to the last started, except `skip`; none when first is NULL. */
static bool begin_op(sup *s, int op, child *first, const child *skip)
{
    queue_reset(s);
    size_t running = s->by_pid.len;
    if (first != NULL && running > 0) {
        s->queue = malloc(running * sizeof *s->queue);
        if (s->queue == NULL)
            return false;
        for (child *c = s->tail; c != NULL; c = c->prev) {
            if (c->pid != 0 && c != skip) {
                TR_ASSERT(s->nqueue < running);
                c->queued = true;
                s->queue[s->nqueue++] = c;
            }
            if (c == first)
                break;
        }
    }
    s->op = op;
    return true;
}

static void reply_rc(tr_ctx *ctx, const tr_msg *req, int rc, int extra, uint64_t a, uint64_t b)
{
    tr_msg *r = tr_msg_new(0, 24);
    if (r == NULL)
        return;
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_int32(pk, rc);
    if (extra >= 1)
        msgpack_pack_uint64(pk, a);
    if (extra >= 2)
        msgpack_pack_uint64(pk, b);
    tr_reply(ctx, req, r);
}

static void handle_request(tr_ctx *ctx, sup *s, tr_msg *m);

/* Handles what waited for the operation to end. */
static void run_deferred(tr_ctx *ctx, sup *s)
{
    while (s->op == OP_NONE && s->dq_head != NULL && !ctx->ending) {
        deferred *d = s->dq_head;
        s->dq_head = d->next;
        if (s->dq_head == NULL)
            s->dq_tail = NULL;
        if (d->req != NULL) {
            handle_request(ctx, s, d->req);
            tr_msg_free(d->req);
        } else if (d->c->pid == 0 && d->c->due_ms == 0 && !d->c->removed) {
            handle_failure(ctx, s, d->c, d->kind);
        }
        free(d);
    }
}

static void defer(sup *s, child *c, tr_reason_kind kind, tr_msg *req)
{
    deferred *d = calloc(1, sizeof *d);
    if (d == NULL) {
        tr_msg_free(req);
        return;
    }
    d->c = c;
    d->kind = kind;
    d->req = req;
    if (s->dq_tail != NULL)
        s->dq_tail->next = d;
    else
        s->dq_head = d;
    s->dq_tail = d;
}

static void op_done(tr_ctx *ctx, sup *s)
{
    int op = s->op;
    s->op = OP_NONE;
    s->cur = NULL;
    queue_reset(s);
    if (op == OP_STOP) {
        tr_reason r = s->stop_reason;
        r.text = s->stop_text;
        tr__ctx_end(ctx, &r);
        return;
    }
    if (op == OP_TERMINATE) {
        if (s->failed != NULL && s->failed->removed && s->failed->pid == 0)
            child_remove(s, s->failed);
        s->failed = NULL;
        if (s->request != NULL) {
            reply_rc(ctx, s->request, TR_OK, 0, 0, 0);
            tr_msg_free(s->request);
            s->request = NULL;
        }
    } else if (op == OP_RESTART) {
        /* restart the set in start order; temporary children stopped by it are gone for good */
        /* `failed` is still a child: it is not temporary (handle_failure forgot it then), and
         * no child is removed while an operation runs */
        uint64_t delay = backoff_delay(s, s->failed);
        for (child *c = s->restart_all ? s->head : s->failed, *next; c != NULL; c = next) {
            next = c->next;
            if (c->pid != 0 || c->due_ms != 0)
                continue;
            if (c->spec->restart == TR_TEMPORARY) {
                child_remove(s, c);
                continue;
            }
            restart_child(ctx, s, c, delay);
            if (ctx->ending || s->op != OP_NONE)
                return;
        }
    }
    run_deferred(ctx, s);
    /* restarts that fell due while we were busy (their timer message found us busy) */
    if (s->op == OP_NONE && !ctx->ending && s->due_head != NULL)
        on_restart_due(ctx, s);
}

/* Stops every child (reverse start order), then the supervisor, with `why`. */
static void begin_stop(tr_ctx *ctx, sup *s, const tr_reason *why)
{
    child *cur = s->op != OP_NONE ? s->cur : NULL;
    if (s->op == OP_TERMINATE && s->request != NULL) {
        reply_rc(ctx, s->request, TR_ESTOPPED, 0, 0, 0);
        tr_msg_free(s->request);
        s->request = NULL;
    }
    free(s->stop_text);
    s->stop_text = why->text != NULL ? strdup(why->text) : NULL;
    s->stop_reason = *why;
    s->stop_reason.text = NULL;
    if (!begin_op(s, OP_STOP, s->head, cur)) {
        tr__ctx_end(ctx, why); /* out of memory: links take the children down */
        return;
    }
    if (cur != NULL && cur->pid != 0) {
        s->cur = cur; /* keep waiting for the one being stopped */
        return;
    }
    stop_next(ctx, s);
}

static void give_up(tr_ctx *ctx, sup *s)
{
    report(ctx, TR_LOG_ERROR, "giving up: more than %u restarts within %u ms; ending its "
           "children and itself (%s)", s->spec->intensity, s->spec->period_ms,
           tr_strerror(TR_EINTENSITY));
    const tr_reason why = {.kind = TR_REASON_ERROR, .code = TR_EINTENSITY,
                           .text = "restart intensity reached"};
    begin_stop(ctx, s, &why);
}

/* A child ended (not because the supervisor stopped it) with reason kind. */
static void handle_failure(tr_ctx *ctx, sup *s, child *c, tr_reason_kind kind)
{
    bool restart = c->spec->restart == TR_PERMANENT ||
                   (c->spec->restart == TR_TRANSIENT && kind != TR_REASON_NORMAL &&
                    kind != TR_REASON_SHUTDOWN);
    if (!restart) {
        if (c->spec->restart == TR_TEMPORARY || s->spec->strategy == TR_SIMPLE_ONE_FOR_ONE) {
            c->removed = true;
            child_remove(s, c);
        }
        return;
    }
    if (!intensity_ok(s)) {
        give_up(ctx, s);
        return;
    }
    switch (s->spec->strategy) {
    case TR_ONE_FOR_ONE:
    case TR_SIMPLE_ONE_FOR_ONE:
        restart_child(ctx, s, c, backoff_delay(s, c));
        return;
    case TR_ONE_FOR_ALL:
    case TR_REST_FOR_ONE: {
        bool all = s->spec->strategy == TR_ONE_FOR_ALL;
        if (!begin_op(s, OP_RESTART, all ? s->head : c, NULL)) {
            give_up(ctx, s);
            return;
        }
        s->failed = c;
        s->restart_all = all;
        stop_next(ctx, s);
        return;
    }
    }
}

/* ---- messages -------------------------------------------------------------------------------- */

static void on_exit_msg(tr_ctx *ctx, sup *s, tr_msg *m)
{
    tr_reason r;
    if (tr_msg_reason(m, &r) != TR_OK)
        r = (tr_reason){.kind = TR_REASON_ERROR, .code = TR_EBADMSG};
    tr_pid from = tr_msg_sender(m);
    uint64_t v;
    if (!tr__idmap_del(&s->by_pid, from, &v)) {
        /* not a child: the parent (or anyone asking with a non-normal reason) ends us */
        if (r.kind != TR_REASON_NORMAL || from == s->parent)
            begin_stop(ctx, s, &r);
        return;
    }
    tr__idmap_shrink(&s->by_pid); /* memory back when most children are gone */
    child *c = (child *)(uintptr_t)v;
    c->pid = 0;
    /* a crash report, unless the supervisor is the one ending it */
    bool ours = s->op != OP_NONE &&
                (c == s->cur || c->queued || (s->op == OP_RESTART && c == s->failed));
    if (!ours && r.kind != TR_REASON_NORMAL && r.kind != TR_REASON_SHUTDOWN)
        report_crash(ctx, c, from, &r);
    if (s->op != OP_NONE) {
        if (c == s->cur) {
            stop_next(ctx, s);
            return;
        }
        if (c->queued)
            return; /* it was to be stopped anyway */
        if (s->op == OP_RESTART && c == s->failed)
            return;
        defer(s, c, r.kind, NULL);
        return;
    }
    handle_failure(ctx, s, c, r.kind);
}

static void on_restart_due(tr_ctx *ctx, sup *s)
{
    if (s->op != OP_NONE)
        return; /* op_done restarts what is due */
    /* one pass over the due queue as it is now: each child is taken off the front and either
     * restarted (a failed start puts it back at the end, due later) or put back at the end */
    uint64_t now = now_ms(), next = 0;
    size_t n = 0;
    for (const child *c = s->due_head; c != NULL; c = c->due_next)
        n++;
    for (; n > 0 && !ctx->ending && s->op == OP_NONE; n--) {
        child *c = due_pop(s);
        uint64_t due = c->due_ms;
        c->due_ms = 0;
        if (due <= now) {
            restart_child(ctx, s, c, 0);
        } else {
            due_push(s, c, due);
            if (next == 0 || due < next)
                next = due;
        }
    }
    if (next != 0 && !ctx->ending)
        send_self(ctx, SUP_RESTART_DUE, 0, next - now);
}

static child *find_by_id(sup *s, const char *id, size_t len)
{
    /* the first in start order (the children of a simple_one_for_one share the template's) */
    for (child *c = s->head; c != NULL; c = c->next)
        if (strlen(c->spec->id) == len && memcmp(c->spec->id, id, len) == 0)
            return c;
    return NULL;
}

static void handle_request(tr_ctx *ctx, sup *s, tr_msg *m)
{
    tr_reader r;
    tr_reader_init(&r, m);
    switch (tr_msg_type(m)) {
    case SUP_START_CHILD: {
        const void *arg;
        size_t len;
        uint64_t as_ptr = 0;
        int rc = tr_read_bin(&r, &arg, &len);
        if (rc == TR_OK && len == 0)
            rc = tr_read_u64(&r, &as_ptr); /* an argument passed as a pointer */
        if (rc != TR_OK || s->spec->strategy != TR_SIMPLE_ONE_FOR_ONE) {
            reply_rc(ctx, m, rc != TR_OK ? rc : TR_ESTATE, 0, 0, 0);
            break;
        }
        child *c = child_new(s, &s->spec->children[0], len > 0 ? arg : (const void *)(uintptr_t)as_ptr, len);
        if (c == NULL) {
            reply_rc(ctx, m, TR_ENOMEM, 0, 0, 0);
            break;
        }
        rc = child_start(ctx, s, c);
        tr_pid pid = c->pid;
        if (rc != TR_OK)
            child_remove(s, c);
        reply_rc(ctx, m, rc, 1, pid, 0);
        break;
    }
    case SUP_WHICH: {
        const char *id;
        size_t len;
        child *c = tr_read_str(&r, &id, &len) == TR_OK ? find_by_id(s, id, len) : NULL;
        if (c == NULL || c->pid == 0)
            reply_rc(ctx, m, TR_ENOPROC, 1, 0, 0);
        else
            reply_rc(ctx, m, TR_OK, 1, c->pid, 0);
        break;
    }
    case SUP_TERMINATE: {
        uint64_t pid;
        uint64_t v;
        if (tr_read_u64(&r, &pid) != TR_OK || !tr__idmap_get(&s->by_pid, pid, &v)) {
            reply_rc(ctx, m, TR_ENOPROC, 0, 0, 0);
            break;
        }
        child *c = (child *)(uintptr_t)v;
        /* for good: it is not restarted (simple and temporary children are forgotten) */
        if (s->spec->strategy == TR_SIMPLE_ONE_FOR_ONE || c->spec->restart == TR_TEMPORARY)
            c->removed = true;
        if (!begin_op(s, OP_TERMINATE, NULL, NULL)) {
            reply_rc(ctx, m, TR_ENOMEM, 0, 0, 0);
            break;
        }
        /* keep what the reply needs: answered once the child has ended */
        s->request = tr_msg_new(tr_msg_type(m), 0);
        if (s->request != NULL) {
            s->request->sender = m->sender;
            s->request->corr = m->corr;
            s->request->flags = m->flags;
        }
        s->failed = c;
        stop_child(ctx, s, c);
        break;
    }
    case SUP_COUNT: {
        reply_rc(ctx, m, TR_OK, 2, s->by_pid.len, s->restarts); /* the running children */
        break;
    }
    default:
        break;
    }
    tr_reader_done(&r);
}

static void sup_children(tr_ctx *ctx, sup *s, const tr_msg *m);

static int sup_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    sup *s = *(sup **)state;
    uint32_t type = tr_msg_type(m);
    switch (type) {
    case TR_MSG_EXIT:
        on_exit_msg(ctx, s, m);
        break;
    case SUP_KILL_TIMEOUT:
        if (s->cur != NULL && s->cur->pid != 0 && tr_msg_corr(m) == s->kill_token) {
            static const tr_reason kill = {.kind = TR_REASON_KILLED};
            tr_exit(ctx, s->cur->pid, &kill);
        }
        break;
    case SUP_RESTART_DUE:
        on_restart_due(ctx, s);
        break;
    case SUP_START_CHILD:
    case SUP_TERMINATE:
        if (s->op != OP_NONE || s->dq_head != NULL) {
            tr__ctx_release_cur(ctx, m); /* answered when the operation in progress is over */
            defer(s, NULL, TR_REASON_NORMAL, m);
            break;
        }
        handle_request(ctx, s, m);
        break;
    case SUP_WHICH:
    case SUP_COUNT:
        handle_request(ctx, s, m);
        break;
    case SUP_CHILDREN:
        if (tr_msg_corr(m) != 0)
            sup_children(ctx, s, m);
        break;
    default:
        break; /* not for supervisors: ignored */
    }
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *v)
{
    size_t n = strlen(v);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, v, n);
}

/* SUP_CHILDREN: parent, strategy, restarts, running and total children, and the first `cap`
 * children in start order (at most 1,000): id, pid (0 while not running), restarts, whether it
 * is a supervisor, its behaviour's name. Answered at once, even during an operation (a child
 * being restarted shows pid 0). */
static void sup_children(tr_ctx *ctx, sup *s, const tr_msg *m)
{
    uint64_t cap = 0;
    if (tr_msg_get_u64(m, &cap) != TR_OK || cap > 1000)
        cap = 1000;
    static const char *const strategies[] = {"one_for_one", "one_for_all", "rest_for_one",
                                             "simple_one_for_one"};
    tr_msg *r = tr_msg_new(0, 128 + (size_t)(cap < s->nkids ? cap : s->nkids) * 64);
    if (r == NULL)
        return; /* its requester's timeout answers */
    msgpack_packer *pk = tr_msg_packer(r);
    msgpack_pack_map(pk, 7);
    pack_str(pk, "rc");
    msgpack_pack_int32(pk, TR_OK);
    pack_str(pk, "parent");
    msgpack_pack_uint64(pk, s->parent);
    pack_str(pk, "strategy");
    pack_str(pk, (unsigned)s->spec->strategy < 4 ? strategies[s->spec->strategy] : "?");
    pack_str(pk, "restarts");
    msgpack_pack_uint64(pk, s->restarts);
    pack_str(pk, "running");
    msgpack_pack_uint64(pk, s->by_pid.len);
    pack_str(pk, "children_total");
    msgpack_pack_uint64(pk, s->nkids);
    pack_str(pk, "children");
    size_t k = s->nkids < cap ? s->nkids : (size_t)cap;
    msgpack_pack_array(pk, k);
    size_t i = 0;
    for (const child *c = s->head; c != NULL && i < k; c = c->next, i++) {
        bool is_sup = c->spec->supervisor != NULL;
        msgpack_pack_map(pk, 5);
        pack_str(pk, "id");
        pack_str(pk, c->spec->id != NULL ? c->spec->id : "");
        pack_str(pk, "pid");
        msgpack_pack_uint64(pk, c->pid);
        pack_str(pk, "restarts");
        msgpack_pack_uint64(pk, c->restarts);
        pack_str(pk, "supervisor");
        if (is_sup)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        pack_str(pk, "behaviour");
        pack_str(pk, is_sup ? "supervisor"
                     : c->spec->behaviour != NULL && c->spec->behaviour->name != NULL
                         ? c->spec->behaviour->name
                         : "?");
    }
    tr_reply(ctx, m, r);
}

static void sup_free(sup *s)
{
    if (s == NULL)
        return;
    queue_reset(s);
    for (child *c = s->head, *next; c != NULL; c = next) {
        next = c->next;
        free(c->arg_owned);
        free(c);
    }
    free(s->queue);
    free(s->ring);
    free(s->stop_text);
    tr__idmap_free(&s->by_pid);
    spec_free(s->spec);
    free(s);
}

static int sup_init(tr_ctx *ctx, void *state, const void *arg)
{
    const sup_arg *a = arg;
    if (a == NULL || tr__sup_spec_check(a->spec, 0) != TR_OK)
        return TR_EINVAL;
    sup *s = calloc(1, sizeof *s);
    if (s == NULL)
        return TR_ENOMEM;
    tr__idmap_init(&s->by_pid);
    s->parent = a->parent;
    s->spec = spec_copy(a->spec);
    s->ring = calloc(a->spec->intensity > 0 ? a->spec->intensity : 1, sizeof *s->ring);
    if (s->spec == NULL || s->ring == NULL) {
        sup_free(s);
        return TR_ENOMEM;
    }
    s->rng = (tr_self(ctx) ^ tr__now_ns()) | 1;
    *(sup **)state = s;
    tr_trap_exits(ctx, true);
    if (s->spec->strategy == TR_SIMPLE_ONE_FOR_ONE)
        return TR_OK;
    for (size_t i = 0; i < s->spec->nchildren; i++) {
        child *c = child_new(s, &s->spec->children[i], NULL, 0);
        int rc = c != NULL ? child_start(ctx, s, c) : TR_ENOMEM;
        if (rc != TR_OK) {
            /* the children started so far are linked to us: our failed init takes them down */
            *(sup **)state = NULL;
            sup_free(s);
            return rc;
        }
    }
    return TR_OK;
}

static void answer_stopped(tr_ctx *ctx, tr_msg *req)
{
    if (req != NULL) {
        reply_rc(ctx, req, TR_ESTOPPED, 0, 0, 0);
        tr_msg_free(req);
    }
}

static void sup_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)reason; /* children still running end through their links */
    sup *s = *(sup **)state;
    if (s == NULL)
        return;
    answer_stopped(ctx, s->request);
    for (deferred *d = s->dq_head, *n; d != NULL; d = n) {
        n = d->next;
        answer_stopped(ctx, d->req);
        free(d);
    }
    sup_free(s);
}

static const tr_behaviour sup_behaviour = {
    .name = "supervisor",
    .state_size = sizeof(sup *),
    .init = sup_init,
    .receive = sup_receive,
    .terminate = sup_terminate,
};

bool tr__is_supervisor(const tr_behaviour *b)
{
    return b == &sup_behaviour;
}

tr_msg *tr__sup_children_request(unsigned cap)
{
    return tr_msg_new_u64(SUP_CHILDREN, cap);
}

/* ---- public API ---------------------------------------------------------------------------- */

int tr_sup_start(tr_system *sys, const tr_sup_spec *spec, tr_pid *out)
{
    if (sys == NULL || tr__sup_spec_check(spec, 0) != TR_OK)
        return TR_EINVAL;
    sup_arg a = {.spec = spec, .parent = TR_PID_NONE};
    tr_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.trap_exits = true;
    return tr_system_spawn_ex(sys, &sup_behaviour, &a, &o, out);
}

int tr_sup_spawn(tr_ctx *ctx, const tr_sup_spec *spec, tr_pid *out)
{
    if (ctx == NULL || tr__sup_spec_check(spec, 0) != TR_OK)
        return TR_EINVAL;
    sup_arg a = {.spec = spec, .parent = tr_self(ctx)};
    tr_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.trap_exits = true;
    o.link = true;
    return tr_spawn_ex(ctx, &sup_behaviour, &a, &o, out);
}

/* Sends a request to a supervisor and reads [rc, a, b] from its reply. */
static int sup_call(tr_system *sys, tr_pid sup_pid, tr_msg *m, unsigned timeout_ms, uint64_t *a,
                    uint64_t *b)
{
    if (m == NULL)
        return TR_ENOMEM;
    tr_msg *reply = NULL;
    int rc = tr__call(sys, sup_pid, m, timeout_ms, &reply);
    if (rc != TR_OK)
        return rc;
    tr_reader r;
    tr_reader_init(&r, reply);
    int64_t code = TR_EBADMSG;
    if (tr_read_i64(&r, &code) != TR_OK)
        code = TR_EBADMSG;
    if (a != NULL && !tr_reader_at_end(&r) && tr_read_u64(&r, a) != TR_OK)
        code = TR_EBADMSG;
    if (b != NULL && !tr_reader_at_end(&r) && tr_read_u64(&r, b) != TR_OK)
        code = TR_EBADMSG;
    tr_reader_done(&r);
    tr_msg_free(reply);
    return (int)code;
}

int tr_sup_start_child(tr_system *sys, tr_pid sup_pid, const void *arg, size_t arg_len,
                       tr_pid *child_out)
{
    if (sys == NULL || (arg_len > 0 && arg == NULL) || arg_len > TR_MSG_MAX / 2)
        return TR_EINVAL;
    tr_msg *m = tr_msg_new(SUP_START_CHILD, arg_len + 16);
    if (m == NULL)
        return TR_ENOMEM;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_bin(pk, arg_len);
    if (arg_len > 0)
        msgpack_pack_bin_body(pk, arg, arg_len);
    else
        msgpack_pack_uint64(pk, (uint64_t)(uintptr_t)arg);
    uint64_t pid = 0;
    int rc = sup_call(sys, sup_pid, m, SUP_CALL_TIMEOUT_MS, &pid, NULL);
    if (child_out != NULL)
        *child_out = rc == TR_OK ? pid : TR_PID_NONE;
    return rc;
}

int tr_sup_start_child_async(tr_ctx *ctx, tr_pid sup_pid, const void *arg, size_t arg_len,
                             unsigned timeout_ms, uint64_t *corr)
{
    if (ctx == NULL || (arg_len > 0 && arg == NULL) || arg_len > TR_MSG_MAX / 2)
        return TR_EINVAL;
    tr_msg *m = tr_msg_new(SUP_START_CHILD, arg_len + 16);
    if (m == NULL)
        return TR_ENOMEM;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_bin(pk, arg_len);
    if (arg_len > 0)
        msgpack_pack_bin_body(pk, arg, arg_len);
    else
        msgpack_pack_uint64(pk, (uint64_t)(uintptr_t)arg);
    return tr__request(ctx, sup_pid, m, timeout_ms, corr);
}

int tr_sup_started(const tr_msg *reply, tr_pid *child_out)
{
    if (child_out != NULL)
        *child_out = TR_PID_NONE;
    if (reply == NULL || !tr_msg_is_reply(reply))
        return TR_EINVAL;
    tr_reader r;
    tr_reader_init(&r, reply);
    int64_t code = TR_EBADMSG;
    uint64_t pid = 0;
    if (tr_read_i64(&r, &code) != TR_OK)
        code = TR_EBADMSG;
    else if (code == TR_OK && tr_read_u64(&r, &pid) != TR_OK)
        code = TR_EBADMSG;
    tr_reader_done(&r);
    if (code == TR_OK && child_out != NULL)
        *child_out = pid;
    return (int)code;
}

int tr_sup_which_child(tr_system *sys, tr_pid sup_pid, const char *id, tr_pid *child_out)
{
    if (sys == NULL || id == NULL)
        return TR_EINVAL;
    size_t len = strlen(id);
    tr_msg *m = tr_msg_new(SUP_WHICH, len + 8);
    if (m == NULL)
        return TR_ENOMEM;
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, id, len);
    uint64_t pid = 0;
    int rc = sup_call(sys, sup_pid, m, SUP_CALL_TIMEOUT_MS, &pid, NULL);
    if (child_out != NULL)
        *child_out = rc == TR_OK ? pid : TR_PID_NONE;
    return rc;
}

int tr_sup_terminate_child(tr_system *sys, tr_pid sup_pid, tr_pid child_pid)
{
    if (sys == NULL || child_pid == TR_PID_NONE)
        return TR_EINVAL;
    tr_msg *m = tr_msg_new(SUP_TERMINATE, 12);
    if (m == NULL)
        return TR_ENOMEM;
    tr_msg_put_u64(m, child_pid);
    return sup_call(sys, sup_pid, m, 10 * SUP_CALL_TIMEOUT_MS, NULL, NULL); /* shutdown may be slow */
}

int tr_sup_count(tr_system *sys, tr_pid sup_pid, uint64_t *running, uint64_t *restarts)
{
    if (sys == NULL)
        return TR_EINVAL;
    uint64_t a = 0, b = 0;
    int rc = sup_call(sys, sup_pid, tr_msg_new(SUP_COUNT, 0), SUP_CALL_TIMEOUT_MS, &a, &b);
    if (running != NULL)
        *running = a;
    if (restarts != NULL)
        *restarts = b;
    return rc;
}
