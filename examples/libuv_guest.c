/*
 * libuv_guest.c — actors driven from an existing libuv program. The program's own loop (a uv
 * timer here; an HTTP server or a game loop in real life) talks to actors without a thread of
 * its own waiting on them:
 *
 *   - a port (tr_port_open) sends requests and gets each answer in a callback, not by blocking;
 *   - a guest (tr_guest_new) lets the loop's thread run the actors it wakes itself: between
 *     tr_guest_enter and tr_guest_leave the requests it sends wait in the guest, and leave runs
 *     them here — the actor's turn and the port's callback on this thread, no hand-off.
 *
 * Each tick of the timer asks a "squarer" actor for a square; after 20 answers the loop stops.
 *
 *   build/bin/example-libuv-guest
 */
#include <stdio.h>
#include <troupe.h>
#include <uv.h>

enum { MSG_SQUARE = 1, MSG_SQUARED, TICKS = 20 };

static int squarer_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    uint64_t v;
    int rc = tr_msg_get_u64(m, &v);
    return rc != TR_OK ? rc : tr_reply(ctx, m, tr_msg_new_u64(MSG_SQUARED, v * v));
}

static const tr_behaviour squarer_b = {.name = "squarer", .receive = squarer_receive};

typedef struct app {
    tr_system *sys;
    tr_guest *guest;
    tr_port *port;
    tr_pid squarer;
    uv_timer_t timer;
    uint64_t sent, answered, sum, turns;
    int rc;
} app;

/* A port's answer: on the thread that delivered it — here the loop's, inside tr_guest_leave. */
static void on_answer(void *user, uint64_t cookie, int rc, const tr_msg *reply)
{
    app *a = user;
    uint64_t v = 0;
    if (rc == TR_OK)
        rc = tr_msg_get_u64(reply, &v);
    if (rc != TR_OK)
        a->rc = rc;
    a->sum += v;
    a->answered++;
    (void)cookie;
}

static void on_tick(uv_timer_t *t)
{
    app *a = t->data;
    if (a->answered >= TICKS || a->rc != TR_OK) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL); /* the loop has nothing left: uv_run returns */
        return;
    }
    if (a->sent < TICKS && tr_guest_enter(a->guest) == TR_OK) {
        int rc = tr_port_request(a->port, a->squarer, tr_msg_new_u64(MSG_SQUARE, a->sent + 1),
                                 10000, a->sent);
        if (rc == TR_OK)
            a->sent++;
        else
            a->rc = rc;
        a->turns += tr_guest_leave(a->guest, 64); /* the squarer's turn runs now, here */
    }
}

int main(void)
{
    app a = {.rc = TR_OK};
    uv_loop_t *loop = uv_default_loop();
    int rc = tr_system_new(&a.sys, NULL);
    if (rc == TR_OK)
        rc = tr_system_start(a.sys);
    if (rc == TR_OK)
        rc = tr_system_spawn(a.sys, &squarer_b, NULL, &a.squarer);
    if (rc == TR_OK)
        rc = tr_port_open(a.sys, on_answer, &a, &a.port);
    if (rc == TR_OK)
        rc = tr_guest_new(a.sys, &a.guest);
    if (rc == TR_OK) {
        uv_timer_init(loop, &a.timer);
        a.timer.data = &a;
        uv_timer_start(&a.timer, on_tick, 0, 1); /* every millisecond */
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        rc = a.rc;
    }
    tr_system_stop(a.sys);
    tr_system_join(a.sys);
    if (a.port != NULL)
        tr_port_close(a.port); /* after the join: nothing can answer any more */
    tr_guest_free(a.guest);
    tr_system_free(a.sys);
    /* 1² + 2² + ... + 20² = 2870 */
    printf("libuv loop: %llu requests, %llu answers (sum of squares %llu), %llu actor turns run "
           "by the loop's thread\n", (unsigned long long)a.sent, (unsigned long long)a.answered,
           (unsigned long long)a.sum, (unsigned long long)a.turns);
    if (rc != TR_OK)
        fprintf(stderr, "libuv_guest: %s\n", tr_strerror(rc));
    return rc == TR_OK && a.answered == TICKS && a.sum == 2870 ? 0 : 1;
}
