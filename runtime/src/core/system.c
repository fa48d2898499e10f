/*
 * system.c — a system's life: options, creation, start, the graceful stop, and its counters.
 *
 * The graceful stop runs in tr_system_join, on the joining thread, once someone called
 * tr_system_stop: refuse new outside work, cancel timers, let the workers drain every queued
 * message (bounded by drain_timeout_ms: actors that keep messaging each other forever would
 * otherwise never stop), halt the workers, then end every live actor with reason shutdown so
 * its terminate callback runs. After that nothing runs and tr_system_free releases everything.
 */
#include "internal.h"
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void tr_system_opts_init(tr_system_opts *o)
{
    memset(o, 0, sizeof *o);
}

/* The workers' records, zeroed: mapped rather than allocated and cleared, since each holds its
 * counters per behaviour (some 32 KiB, tr_worker.brows) of which a system touches a few rows: the
 * others stay untouched zero pages. */
static tr_worker *workers_alloc(unsigned n)
{
    return tr__zmap(sizeof(tr_worker) * n);
}

static void workers_free(tr_worker *w, unsigned n)
{
    tr__zunmap(w, sizeof(tr_worker) * n);
}

int tr_system_new(tr_system **out, const tr_system_opts *opts)
{
    if (out == NULL)
        return TR_EINVAL;
    *out = NULL;
    tr_system *sys = aligned_alloc(TR_CACHELINE, sizeof *sys);
    if (sys == NULL)
        return TR_ENOMEM;
    memset(sys, 0, sizeof *sys);
    if (opts != NULL)
        sys->opts = *opts;
    if (sys->opts.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        sys->opts.workers = n > 0 ? (unsigned)n : 1;
    }
    if (sys->opts.workers > 1024) {
        free(sys);
        return TR_EINVAL;
    }
    if (sys->opts.msgs_per_turn == 0)
        sys->opts.msgs_per_turn = 64;
    if (sys->opts.node_id == 0)
        sys->opts.node_id = 1;
    if (sys->opts.drain_timeout_ms == 0)
        sys->opts.drain_timeout_ms = 5000;
    sys->nworkers = sys->opts.workers;
    sys->workers = workers_alloc(sys->nworkers);
    if (sys->workers == NULL || tr__actor_table_init(sys) != TR_OK) {
        workers_free(sys->workers, sys->nworkers);
        free(sys);
        return TR_ENOMEM;
    }
    for (unsigned i = 0; i < sys->nworkers; i++) {
        sys->workers[i].sys = sys;
        sys->workers[i].id = i;
        sys->workers[i].rng = 0x9E3779B9u * (i + 1);
        tr__mpsc_init(&sys->workers[i].inbox);
    }
    if (tr__stats_init(sys) != TR_OK) {
        tr__stats_free(sys);
        tr__actor_table_free(sys);
        workers_free(sys->workers, sys->nworkers);
        free(sys);
        return TR_ENOMEM;
    }
    pthread_mutex_init(&sys->pool_lock, NULL);
    pthread_mutex_init(&sys->inject_lock, NULL);
    pthread_mutex_init(&sys->state_lock, NULL);
    pthread_cond_init(&sys->state_cond, NULL);
    atomic_init(&sys->state, TR_SYS_NEW);
    *out = sys;
    return TR_OK;
}

int tr_system_start(tr_system *sys)
{
    if (sys == NULL)
        return TR_EINVAL;
    if (atomic_load(&sys->state) != TR_SYS_NEW)
        return TR_ESTATE;
    int rc = tr__timer_start(sys);
    if (rc != TR_OK)
        return rc;
    rc = tr__sched_start(sys);
    if (rc != TR_OK) {
        tr__timer_free(sys);
        return rc;
    }
    atomic_store(&sys->state, TR_SYS_RUNNING);
    return TR_OK;
}

int tr__ext_enter(tr_system *sys)
{
    atomic_fetch_add(&sys->ext_inflight, 1);
    int st = atomic_load(&sys->state);
    if (st == TR_SYS_STOPPING || st == TR_SYS_JOINED) {
        atomic_fetch_sub(&sys->ext_inflight, 1);
        return TR_ESTOPPED;
    }
    return TR_OK;
}

void tr__ext_leave(tr_system *sys)
{
    atomic_fetch_sub(&sys->ext_inflight, 1);
}

void tr_system_stop(tr_system *sys)
{
    if (sys == NULL)
        return;
    pthread_mutex_lock(&sys->state_lock);
    atomic_store(&sys->stop_requested, 1);
    pthread_cond_broadcast(&sys->state_cond);
    pthread_mutex_unlock(&sys->state_lock);
}

static void end_if_alive(tr_actor *a, void *arg)
{
    (void)arg;
    if (atomic_load_explicit(&a->pid, memory_order_acquire) == 0 ||
        (atomic_load_explicit(&a->flags, memory_order_relaxed) & (TR_AF_WAITER | TR_AF_PORT)))
        return;
    static const tr_reason shutdown = {.kind = TR_REASON_SHUTDOWN};
    tr__actor_end(a, NULL, &shutdown, 0);
}

int tr_system_join(tr_system *sys)
{
    if (sys == NULL)
        return TR_EINVAL;
    if (tr__current_worker(sys) != NULL)
        return TR_ESTATE;
    int st = atomic_load(&sys->state);
    if (st == TR_SYS_JOINED)
        return TR_OK;
    if (st != TR_SYS_RUNNING)
        return TR_ESTATE;
    pthread_mutex_lock(&sys->state_lock);
    while (!atomic_load(&sys->stop_requested))
        pthread_cond_wait(&sys->state_cond, &sys->state_lock);
    pthread_mutex_unlock(&sys->state_lock);

    atomic_store(&sys->state, TR_SYS_STOPPING);
    while (atomic_load(&sys->ext_inflight) > 0) /* outside sends already past the check */
        tr_cpu_relax();
    tr__timer_halt(sys);
    /* drain: wait until every worker is parked with nothing queued, seen twice in a row */
    uint64_t deadline = tr__now_ns() + (uint64_t)sys->opts.drain_timeout_ms * 1000000u;
    for (int calm = 0; calm < 2 && tr__now_ns() < deadline;) {
        calm = tr__sched_quiescent(sys) ? calm + 1 : 0;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    tr__sched_halt(sys);
    /* every live actor ends with reason shutdown, the most recently created slots first; they
     * all go, so links and monitors are not told (no exit signals, no DOWN) */
    atomic_store(&sys->ending_all, 1);
    tr__actor_foreach(sys, end_if_alive, NULL);
    atomic_store(&sys->state, TR_SYS_JOINED);
    return TR_OK;
}

/* ---- the transport seam (internal.h) ------------------------------------------------------- */

static const tr__remote_ops *remote_of(tr_system *sys)
{
    return atomic_load_explicit(&sys->remote, memory_order_acquire);
}

void tr__remote_install(tr_system *sys, const tr__remote_ops *ops)
{
    atomic_store_explicit(&sys->remote, ops, memory_order_release);
}

int tr__remote_route(tr_system *sys, tr_pid to, tr_msg *m)
{
    const tr__remote_ops *r = remote_of(sys);
    if (r != NULL)
        return r->route(sys, to, m);
    m->to = to; /* no node layer: another node's pid is a dead letter */
    tr__dead_letter(sys, to, m);
    return TR_ENOPROC;
}

int tr__remote_interest(tr_system *sys, uint16_t node_id, tr_pid local)
{
    const tr__remote_ops *r = remote_of(sys);
    return r != NULL ? r->interest(sys, node_id, local) : TR_ENOPROC;
}

void tr__remote_forget(tr_system *sys, tr_pid local)
{
    const tr__remote_ops *r = remote_of(sys);
    if (r != NULL)
        r->forget(sys, local);
}

void tr_system_free(tr_system *sys)
{
    if (sys == NULL)
        return;
    if (atomic_load(&sys->state) == TR_SYS_RUNNING) {
        tr_system_stop(sys);
        tr_system_join(sys);
    } else if (atomic_load(&sys->state) == TR_SYS_NEW) {
        atomic_store(&sys->ending_all, 1);
        tr__actor_foreach(sys, end_if_alive, NULL); /* actors spawned but never run */
    }
    const tr__remote_ops *remote = atomic_load(&sys->remote);
    struct tr_node *node = atomic_load(&sys->node);
    if (remote != NULL && node != NULL)
        remote->free(node); /* a node its user did not stop */
    tr__registry_free(sys);
    tr__timer_free(sys);
    tr__actor_table_free(sys);
    tr__stats_free(sys); /* after the last actor's end is counted; the units removed their
                          * collectors when they ended */
    pthread_mutex_destroy(&sys->pool_lock);
    pthread_mutex_destroy(&sys->inject_lock);
    pthread_mutex_destroy(&sys->state_lock);
    pthread_cond_destroy(&sys->state_cond);
    for (unsigned i = 0; i < sys->nworkers; i++) {
        free(sys->workers[i].seen_head);
        free(sys->workers[i].seen_round);
    }
    workers_free(sys->workers, sys->nworkers);
    free(sys);
}

void tr__system_name_set(tr_system *sys, const char *name)
{
    int expected = 0;
    if (sys == NULL || name == NULL || !atomic_compare_exchange_strong(&sys->named, &expected, 1))
        return;
    snprintf(sys->name, sizeof sys->name, "%s", name);
    atomic_store_explicit(&sys->named, 2, memory_order_release);
}

const char *tr__system_log_prefix(tr_system *sys, char buf[68])
{
    buf[0] = '\0';
    if (sys != NULL && atomic_load_explicit(&sys->named, memory_order_acquire) == 2)
        snprintf(buf, 68, "%s: ", sys->name);
    return buf;
}

void tr_system_stats_get(tr_system *sys, tr_system_stats *out)
{
    memset(out, 0, sizeof *out);
    out->spawned = atomic_load_explicit(&sys->spawned, memory_order_relaxed);
    out->ended = atomic_load_explicit(&sys->ended, memory_order_relaxed);
    out->dead_letters = atomic_load_explicit(&sys->dead_letters, memory_order_relaxed);
    out->late_replies = atomic_load_explicit(&sys->late_replies, memory_order_relaxed);
    for (unsigned i = 0; i < sys->nworkers; i++) {
        tr_worker *w = &sys->workers[i];
        out->spawned += atomic_load_explicit(&w->spawned, memory_order_relaxed);
        out->ended += atomic_load_explicit(&w->ended, memory_order_relaxed);
        out->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
        out->parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
    }
#if TR_METRICS
    tr__stats_lives(sys, &out->spawned, &out->ended); /* counted per behaviour only */
#endif
    out->alive = out->spawned >= out->ended ? out->spawned - out->ended : 0;
}
