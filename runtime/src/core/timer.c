/*
 * timer.c — timers on a libuv loop that runs on its own thread.
 *
 * Any thread arms or cancels a timer by queueing a command and poking the loop with uv_async_send
 * (which coalesces: a burst of commands costs one wake-up). The loop thread owns every uv_timer_t
 * and the id -> timer map, so no lock guards them. A timer that fires delivers its message like
 * any other send from outside an actor; an interval timer delivers a copy each time and stops by
 * itself once its target has ended.
 *
 * Request timeouts are armed and cancelled lazily (tr__timer_add_lazy, tr__timer_cancel_lazy):
 * their commands wait in the list without a wake-up, and the loop drains the list at most every
 * DRAIN_MS while there are any. A request/reply costs no thread wake-up that way (two per request
 * before: at 10,000 requests/s the timer thread took a tenth of a core); a timeout still fires on
 * time (its due time is taken when it is armed), and a late cancel is harmless (the requester
 * drops a TIMEOUT whose request was answered).
 *
 * Rate-limited actors waiting for a token are parked on a wheel of 1 ms slots instead of a
 * uv_timer each: parking is a lock and a list insert, no allocation, and one one-shot tick, armed
 * for the earliest due millisecond, makes due actors runnable in batches. The loop thread sleeps
 * until then (a 1 ms repeating tick cost 1,000 wake-ups/s while one email actor waited for its
 * next token every 20 ms); a park due before the armed tick wakes the loop to re-arm it.
 */
#include "idmap.h"

#include <stdlib.h>
#include <uv.h>

typedef struct tmr {
    uv_timer_t h;
    tr_timers *T;
    uint64_t id;
    tr_pid to;
    tr_msg *m;
    unsigned interval_ms;
    uint64_t due_ns;    /* when it was armed + its delay */
} tmr;

enum { CMD_ADD, CMD_CANCEL };

typedef struct cmd {
    struct cmd *next;
    int kind;
    uint64_t id;
    tmr *t; /* CMD_ADD */
} cmd;

#define WHEEL_SLOTS 1024u
#define WAKE_BATCH 256u
#define DRAIN_MS 10u          /* lazy commands wait this long at most */
#define LAZY_MIN_MS 50u       /* shorter timeouts are armed at once */

struct tr_timers {
    tr_system *sys;
    /* the wake-up wheel: parked actors (linked through their ext) by due millisecond */
    pthread_mutex_t wheel_lock;
    tr_actor *wheel[WHEEL_SLOTS];
    size_t wheel_count;
    uint64_t wheel_pos;   /* the last millisecond processed */
    uv_timer_t tick;      /* loop thread: one-shot, for the earliest due millisecond */
    uint64_t tick_ms;     /* the millisecond the tick is armed for; 0: not armed */
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock; /* guards the command list, `closing` and `drain_armed` */
    cmd *head, *tail;
    bool closing;         /* halt asked: no new commands */
    bool drain_armed;     /* the loop will drain the list within DRAIN_MS */
    uv_timer_t drain;     /* loop thread: drains lazy commands */
    tr_idmap live;        /* loop thread only: id -> tmr* */
    _Atomic uint64_t next_id;
    /* the hook (one per system: the node's tick, tr__timer_hook_set) */
    pthread_mutex_t hook_run;   /* held while the hook runs, so clearing it waits that out */
    tr__tick_fn hook_fn;        /* guarded by hook_run (the loop reads it under it) */
    void *hook_arg;
    bool hook_set;              /* guarded by lock: pokes and the loop's close look at it */
    bool hook_poked;            /* guarded by lock: run the hook at the loop's next pass */
    bool hook_started;          /* loop thread only: hook_timer initialised */
    uv_timer_t hook_timer;      /* loop thread: the hook's next run */
};

static void on_close_free(uv_handle_t *h)
{
    tmr *t = (tmr *)h;
    tr_msg_free(t->m);
    free(t);
}

static void timer_drop(tmr *t)
{
    tr__idmap_del(&t->T->live, t->id, NULL);
    uv_timer_stop(&t->h);
    uv_close((uv_handle_t *)&t->h, on_close_free);
}

static void on_fire(uv_timer_t *h)
{
    tmr *t = (tmr *)h;
    tr_system *sys = t->T->sys;
    if (t->interval_ms == 0) {
        tr_msg *m = t->m;
        t->m = NULL;
        tr__deliver(sys, NULL, t->to, m);
        timer_drop(t);
        return;
    }
    tr_msg *copy = tr__msg_clone(t->m);
    if (copy == NULL)
        return; /* out of memory: skip this tick */
    if (tr__deliver(sys, NULL, t->to, copy) == TR_ENOPROC)
        timer_drop(t); /* the target has ended */
}

static void run_commands(tr_timers *T)
{
    pthread_mutex_lock(&T->lock);
    cmd *c = T->head;
    T->head = T->tail = NULL;
    pthread_mutex_unlock(&T->lock);
    while (c != NULL) {
        cmd *next = c->next;
        if (c->kind == CMD_ADD) {
            tmr *t = c->t;
            uv_timer_init(&T->loop, &t->h);
            if (tr__idmap_put(&T->live, t->id, (uint64_t)(uintptr_t)t) != TR_OK) {
                uv_close((uv_handle_t *)&t->h, on_close_free); /* out of memory: drop */
            } else {
                /* libuv counts from its cached, whole-millisecond loop time: refresh it and add
                 * 1 ms so a timer never fires before its delay has fully passed */
                uv_update_time(&T->loop);
                uint64_t now = tr__now_ns();
                uint64_t left = t->due_ns > now ? (t->due_ns - now + 999999u) / 1000000u : 0;
                uv_timer_start(&t->h, on_fire, left + 1u, t->interval_ms);
            }
        } else {
            uint64_t v;
            if (tr__idmap_get(&T->live, c->id, &v))
                timer_drop((tmr *)(uintptr_t)v);
        }
        free(c);
        c = next;
    }
}

static void close_all(uv_handle_t *h, void *arg)
{
    tr_timers *T = arg;
    if (uv_is_closing(h))
        return;
    if (h == (uv_handle_t *)&T->async || (T->hook_started && h == (uv_handle_t *)&T->hook_timer)) {
        /* the hook outlives the timers (tr__timer_hook_set): closed once it is cleared */
        pthread_mutex_lock(&T->lock);
        bool keep = T->hook_set;
        pthread_mutex_unlock(&T->lock);
        if (keep)
            return;
        if (h == (uv_handle_t *)&T->hook_timer)
            uv_timer_stop(&T->hook_timer);
        uv_close(h, NULL);
    } else if (h == (uv_handle_t *)&T->tick || h == (uv_handle_t *)&T->drain) {
        uv_timer_stop((uv_timer_t *)h);
        uv_close(h, NULL);
    } else if (h->type == UV_TIMER) {
        uv_timer_stop((uv_timer_t *)h);
        uv_close(h, on_close_free);
    } else {
        uv_close(h, NULL);
    }
}

/* ---- the wake-up wheel ---------------------------------------------------------------------- */

static void wheel_unlink(tr_timers *T, tr_actor *a)
{
    tr_actor_ext *x = a->ext;
    if (x->wake_prev != NULL)
        x->wake_prev->ext->wake_next = x->wake_next;
    else
        T->wheel[x->wake_due_ms % WHEEL_SLOTS] = x->wake_next;
    if (x->wake_next != NULL)
        x->wake_next->ext->wake_prev = x->wake_prev;
    x->in_wheel = false;
    T->wheel_count--;
}

static void on_tick(uv_timer_t *h);

/* The earliest due millisecond on the wheel (wheel_lock held, wheel_count > 0): the first slot
 * after wheel_pos holding an actor due in this turn of the wheel, else the least due of all. */
static uint64_t wheel_earliest(tr_timers *T)
{
    uint64_t least = UINT64_MAX;
    for (uint64_t ms = T->wheel_pos + 1; ms <= T->wheel_pos + WHEEL_SLOTS; ms++) {
        for (tr_actor *a = T->wheel[ms % WHEEL_SLOTS]; a != NULL; a = a->ext->wake_next) {
            uint64_t due = a->ext->wake_due_ms;
            if (due <= ms)
                return ms; /* due now or overdue: its slot comes up first */
            if (due < least)
                least = due;
        }
    }
    return least;
}

/* Arms the tick for the earliest parked actor unless it is armed for that time or sooner.
 * Loop thread only. */
static void tick_arm(tr_timers *T)
{
    pthread_mutex_lock(&T->wheel_lock);
    uint64_t due = T->wheel_count > 0 ? wheel_earliest(T) : 0;
    bool arm = due != 0 && (T->tick_ms == 0 || due < T->tick_ms);
    if (arm)
        T->tick_ms = due;
    pthread_mutex_unlock(&T->wheel_lock);
    if (!arm)
        return;
    uv_update_time(&T->loop);
    uint64_t now_ms = tr__now_ns() / 1000000u;
    uv_timer_start(&T->tick, on_tick, due > now_ms ? due - now_ms : 0, 0);
}

static void on_tick(uv_timer_t *h)
{
    tr_timers *T = h->data;
    tr_actor *due[WAKE_BATCH];
    uint64_t now_ms = tr__now_ns() / 1000000u;
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&T->wheel_lock);
        T->tick_ms = 0; /* fired: tick_arm below arms it again if anything is left */
        uint64_t end = now_ms;
        if (end - T->wheel_pos > WHEEL_SLOTS)
            T->wheel_pos = end - WHEEL_SLOTS; /* one full turn visits every slot */
        while (T->wheel_pos < end && n < WAKE_BATCH) {
            uint64_t ms = T->wheel_pos + 1;
            tr_actor *a = T->wheel[ms % WHEEL_SLOTS];
            while (a != NULL && n < WAKE_BATCH) {
                tr_actor *next = a->ext->wake_next;
                if (a->ext->wake_due_ms <= now_ms) {
                    wheel_unlink(T, a);
                    due[n++] = a;
                }
                a = next;
            }
            if (a != NULL)
                break; /* batch full: this slot again on the next round */
            T->wheel_pos = ms;
        }
        bool more = T->wheel_pos < end;
        pthread_mutex_unlock(&T->wheel_lock);
        /* a CAS that fails means a signal woke it first: nothing to do */
        for (size_t i = 0; i < n; i++) {
            uint32_t parked = TR_SCHED_PARKED;
            if (atomic_compare_exchange_strong(&due[i]->sched, &parked, TR_SCHED_BUSY))
                tr__schedule(T->sys, NULL, due[i]);
        }
        if (!more)
            break;
    }
    tick_arm(T);
}

void tr__wake_at(tr_system *sys, tr_actor *a, uint64_t due_ns)
{
    tr_timers *T = sys->timers;
    tr_actor_ext *x = a->ext;
    uint64_t due_ms = (due_ns + 999999u) / 1000000u;
    pthread_mutex_lock(&T->wheel_lock);
    if (x->in_wheel)
        wheel_unlink(T, a);
    if (due_ms <= T->wheel_pos)
        due_ms = T->wheel_pos + 1;
    x->wake_due_ms = due_ms;
    x->wake_prev = NULL;
    x->wake_next = T->wheel[due_ms % WHEEL_SLOTS];
    if (x->wake_next != NULL)
        x->wake_next->ext->wake_prev = a;
    T->wheel[due_ms % WHEEL_SLOTS] = a;
    x->in_wheel = true;
    T->wheel_count++;
    bool kick = T->tick_ms == 0 || due_ms < T->tick_ms; /* the loop must (re-)arm the tick */
    atomic_store_explicit(&a->sched, TR_SCHED_PARKED, memory_order_seq_cst);
    pthread_mutex_unlock(&T->wheel_lock);
    if (kick) {
        pthread_mutex_lock(&T->lock);
        if (!T->closing)
            uv_async_send(&T->async); /* the loop starts the tick */
        pthread_mutex_unlock(&T->lock);
    }
}

void tr__wake_cancel(tr_system *sys, tr_actor *a)
{
    tr_timers *T = sys->timers;
    if (T == NULL)
        return;
    pthread_mutex_lock(&T->wheel_lock);
    if (a->ext->in_wheel)
        wheel_unlink(T, a);
    pthread_mutex_unlock(&T->wheel_lock);
}

/* Drains the lazy commands; goes on every DRAIN_MS while more keep coming. */
static void on_drain(uv_timer_t *h)
{
    tr_timers *T = h->data;
    run_commands(T);
    pthread_mutex_lock(&T->lock);
    bool more = T->head != NULL && !T->closing;
    if (!more)
        T->drain_armed = false; /* the next lazy command wakes the loop */
    pthread_mutex_unlock(&T->lock);
    if (more)
        uv_timer_start(&T->drain, on_drain, DRAIN_MS, 0);
}

static void run_hook(tr_timers *T);

static void on_async(uv_async_t *a)
{
    tr_timers *T = a->data;
    pthread_mutex_lock(&T->lock);
    bool poked = T->hook_poked;
    T->hook_poked = false;
    pthread_mutex_unlock(&T->lock);
    if (poked)
        run_hook(T);
    run_commands(T);
    pthread_mutex_lock(&T->lock);
    bool drain = T->drain_armed && !T->closing, open = !T->closing;
    pthread_mutex_unlock(&T->lock);
    if (open)
        tick_arm(T);
    if (drain && !uv_is_active((uv_handle_t *)&T->drain))
        uv_timer_start(&T->drain, on_drain, DRAIN_MS, 0);
    pthread_mutex_lock(&T->lock);
    bool closing = T->closing;
    pthread_mutex_unlock(&T->lock);
    if (closing)
        uv_walk(&T->loop, close_all, T); /* pending timers' messages are dropped */
}

/* ---- the hook: the node's tick on this thread ------------------------------------------------ */

static void on_hook(uv_timer_t *h)
{
    run_hook(h->data);
}

/* Runs the hook (if set) and arms its next run. */
static void run_hook(tr_timers *T)
{
    pthread_mutex_lock(&T->hook_run);
    if (T->hook_fn == NULL) {
        pthread_mutex_unlock(&T->hook_run);
        return;
    }
    if (!T->hook_started) {
        uv_timer_init(&T->loop, &T->hook_timer);
        T->hook_timer.data = T;
        T->hook_started = true;
    }
    uint64_t next_ns = T->hook_fn(T->hook_arg);
    pthread_mutex_unlock(&T->hook_run);
    /* libuv counts whole milliseconds from its cached loop time, truncated: refresh it, round
     * up and add 1 ms, so the hook never runs before it asked to (early, it finds nothing due
     * and asks again for the rest: a wake-up for nothing) */
    uv_update_time(&T->loop);
    uint64_t ms = (next_ns + 999999u) / 1000000u;
    uv_timer_start(&T->hook_timer, on_hook, ms + 1u, 0);
}

int tr__timer_hook_set(tr_system *sys, tr__tick_fn fn, void *arg)
{
    tr_timers *T = sys->timers;
    if (T == NULL || fn == NULL)
        return TR_EINVAL;
    pthread_mutex_lock(&T->hook_run);
    pthread_mutex_lock(&T->lock);
    int rc = TR_OK;
    if (T->closing || T->hook_set) {
        rc = T->closing ? TR_ESTOPPED : TR_EEXIST;
    } else {
        T->hook_fn = fn;
        T->hook_arg = arg;
        T->hook_set = T->hook_poked = true;
        uv_async_send(&T->async); /* its first run */
    }
    pthread_mutex_unlock(&T->lock);
    pthread_mutex_unlock(&T->hook_run);
    return rc;
}

void tr__timer_hook_poke(tr_system *sys)
{
    tr_timers *T = sys->timers;
    if (T == NULL)
        return;
    pthread_mutex_lock(&T->lock);
    if (T->hook_set && !T->hook_poked) {
        T->hook_poked = true;
        uv_async_send(&T->async); /* under the lock: the loop closes it only once unset */
    }
    pthread_mutex_unlock(&T->lock);
}

void tr__timer_hook_clear(tr_system *sys)
{
    tr_timers *T = sys->timers;
    if (T == NULL)
        return;
    pthread_mutex_lock(&T->hook_run); /* a run under way ends first */
    T->hook_fn = NULL;
    T->hook_arg = NULL;
    pthread_mutex_lock(&T->lock);
    bool was = T->hook_set;
    T->hook_set = T->hook_poked = false;
    if (was && T->closing)
        uv_async_send(&T->async); /* halted meanwhile: the loop closes what the hook kept */
    pthread_mutex_unlock(&T->lock);
    pthread_mutex_unlock(&T->hook_run);
    if (was && T->closing && T->thread_started) {
        pthread_join(T->thread, NULL);
        T->thread_started = false;
    }
}

static void *loop_main(void *arg)
{
    tr_timers *T = arg;
    pthread_setname_np(pthread_self(), "tr-timer");
    uv_run(&T->loop, UV_RUN_DEFAULT);
    return NULL;
}

int tr__timer_start(tr_system *sys)
{
    tr_timers *T = calloc(1, sizeof *T);
    if (T == NULL)
        return TR_ENOMEM;
    T->sys = sys;
    pthread_mutex_init(&T->lock, NULL);
    pthread_mutex_init(&T->hook_run, NULL);
    tr__idmap_init(&T->live);
    if (uv_loop_init(&T->loop) != 0) {
        free(T);
        return TR_ENOMEM;
    }
    uv_async_init(&T->loop, &T->async, on_async);
    T->async.data = T;
    pthread_mutex_init(&T->wheel_lock, NULL);
    uv_timer_init(&T->loop, &T->tick);
    T->tick.data = T;
    uv_timer_init(&T->loop, &T->drain);
    T->drain.data = T;
    T->wheel_pos = tr__now_ns() / 1000000u;
    if (pthread_create(&T->thread, NULL, loop_main, T) != 0) {
        uv_close((uv_handle_t *)&T->async, NULL);
        uv_close((uv_handle_t *)&T->tick, NULL);
        uv_close((uv_handle_t *)&T->drain, NULL);
        uv_run(&T->loop, UV_RUN_DEFAULT);
        uv_loop_close(&T->loop);
        pthread_mutex_destroy(&T->hook_run);
        pthread_mutex_destroy(&T->lock);
        free(T);
        return TR_ENOMEM;
    }
    T->thread_started = true;
    sys->timers = T;
    return TR_OK;
}

/* Queues c; wakes the loop at once, or (lazy) only if no drain is due within DRAIN_MS. */
static int push_cmd(tr_timers *T, cmd *c, bool lazy)
{
    c->next = NULL;
    pthread_mutex_lock(&T->lock);
    if (T->closing) {
        pthread_mutex_unlock(&T->lock);
        return TR_ESTOPPED;
    }
    if (T->tail != NULL)
        T->tail->next = c;
    else
        T->head = c;
    T->tail = c;
    if (!lazy || !T->drain_armed) {
        T->drain_armed = T->drain_armed || lazy;
        uv_async_send(&T->async); /* under the lock: the loop cannot close the handle meanwhile */
    }
    pthread_mutex_unlock(&T->lock);
    return TR_OK;
}

static int timer_add(tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms, bool interval,
                     bool lazy, tr_timer *out)
{
    tr_timers *T = sys->timers;
    if (T == NULL) {
        tr_msg_free(m);
        return TR_ESTOPPED;
    }
    tmr *t = malloc(sizeof *t);
    cmd *c = malloc(sizeof *c);
    if (t == NULL || c == NULL) {
        free(t);
        free(c);
        tr_msg_free(m);
        return TR_ENOMEM;
    }
    t->T = T;
    t->id = atomic_fetch_add_explicit(&T->next_id, 1, memory_order_relaxed) + 1;
    t->to = to;
    t->m = m;
    t->due_ns = tr__now_ns() + (uint64_t)delay_ms * 1000000u;
    t->interval_ms = interval ? (delay_ms > 0 ? delay_ms : 1) : 0;
    c->kind = CMD_ADD;
    c->id = t->id;
    c->t = t;
    if (out != NULL)
        *out = t->id;
    int rc = push_cmd(T, c, lazy && !interval && delay_ms >= LAZY_MIN_MS);
    if (rc != TR_OK) {
        free(c);
        free(t);
        tr_msg_free(m);
    }
    return rc;
}

int tr__timer_add(tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms, bool interval,
                  tr_timer *out)
{
    return timer_add(sys, to, m, delay_ms, interval, false, out);
}

int tr__timer_add_lazy(tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms, tr_timer *out)
{
    return timer_add(sys, to, m, delay_ms, false, true, out);
}

static int timer_cancel(tr_system *sys, tr_timer id, bool lazy)
{
    if (sys == NULL || id == 0)
        return TR_EINVAL;
    tr_timers *T = sys->timers;
    if (T == NULL)
        return TR_ESTOPPED;
    cmd *c = malloc(sizeof *c);
    if (c == NULL)
        return TR_ENOMEM;
    c->kind = CMD_CANCEL;
    c->id = id;
    c->t = NULL;
    int rc = push_cmd(T, c, lazy);
    if (rc != TR_OK)
        free(c);
    return rc;
}

int tr_system_cancel_timer(tr_system *sys, tr_timer id)
{
    return timer_cancel(sys, id, false);
}

int tr_cancel_timer(tr_ctx *ctx, tr_timer id)
{
    return ctx != NULL ? timer_cancel(ctx->sys, id, false) : TR_EINVAL;
}

int tr__timer_cancel_lazy(tr_system *sys, tr_timer id)
{
    return timer_cancel(sys, id, true);
}

void tr__timer_halt(tr_system *sys)
{
    tr_timers *T = sys->timers;
    if (T == NULL || !T->thread_started)
        return;
    pthread_mutex_lock(&T->lock);
    T->closing = true;
    bool hook = T->hook_set;
    uv_async_send(&T->async);
    pthread_mutex_unlock(&T->lock);
    if (hook)
        return; /* the loop runs on for the hook; tr__timer_hook_clear joins it */
    pthread_join(T->thread, NULL);
    T->thread_started = false;
}

void tr__timer_free(tr_system *sys)
{
    tr_timers *T = sys->timers;
    if (T == NULL)
        return;
    tr__timer_halt(sys);
    /* commands queued after the loop's last pass */
    for (cmd *c = T->head, *n; c != NULL; c = n) {
        n = c->next;
        if (c->kind == CMD_ADD) {
            tr_msg_free(c->t->m);
            free(c->t);
        }
        free(c);
    }
    uv_loop_close(&T->loop);
    tr__idmap_free(&T->live);
    pthread_mutex_destroy(&T->hook_run);
    pthread_mutex_destroy(&T->wheel_lock);
    pthread_mutex_destroy(&T->lock);
    free(T);
    sys->timers = NULL;
}

/* ---- public wrappers ----------------------------------------------------------------------- */

static int send_timed(tr_system *sys, tr_pid sender, tr_pid to, tr_msg *m, unsigned ms,
                      bool interval, tr_timer *out)
{
    if (out != NULL)
        *out = 0;
    if (m->type >= TR_MSG_SYSTEM) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    m->sender = sender;
    m->flags = 0;
    m->corr = 0;
    return tr__timer_add(sys, to, m, ms, interval, out);
}

int tr_send_after(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned delay_ms, tr_timer *t)
{
    if (m == NULL)
        return TR_EINVAL;
    if (ctx == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    tr__ctx_release_cur(ctx, m);
    return send_timed(tr_ctx_system(ctx), tr_self(ctx), to, m, delay_ms, false, t);
}

int tr_send_interval(tr_ctx *ctx, tr_pid to, tr_msg *m, unsigned interval_ms, tr_timer *t)
{
    if (m == NULL)
        return TR_EINVAL;
    if (ctx == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    tr__ctx_release_cur(ctx, m);
    return send_timed(tr_ctx_system(ctx), tr_self(ctx), to, m, interval_ms, true, t);
}

int tr_system_send_after(tr_system *sys, tr_pid to, tr_msg *m, unsigned delay_ms, tr_timer *t)
{
    if (m == NULL)
        return TR_EINVAL;
    if (sys == NULL) {
        tr_msg_free(m);
        return TR_EINVAL;
    }
    return send_timed(sys, TR_PID_NONE, to, m, delay_ms, false, t);
}
