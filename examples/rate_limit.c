/*
 * rate_limit.c — rate-limited workers: a mailbox option holds an actor to a rate, whatever its
 * senders do (troupe.h, tr_mailbox_opts).
 *
 *   - token bucket, 50 messages/s with a burst of 10: 40 messages sent at once are all handled,
 *     the first 10 at once and the other 30 at 50 a second;
 *   - leaky bucket, 50 messages/s with room for 10: one passes every 20 ms and what does not fit
 *     in the queue is dropped (counted in the actor's stats).
 *
 * Each worker notes when it handled its first and last message; the program checks that the
 * rate held (a lower bound on the time from the first send to the last message handled, which no
 * machine can beat — measured from the first handled message instead, a first handling that came
 * late on a loaded host made the span look too short: TSan in CI) and prints the numbers.
 *
 *   build/bin/example-rate-limit
 */
#include <stdio.h>
#include <time.h>
#include <troupe.h>

enum { MSG_JOB = 1, MSG_REPORT, SENT = 40, RATE = 50, BURST = 10, ROOM = 10 };

typedef struct worker {
    uint64_t handled, first_ns, last_ns;
} worker;

static int worker_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    worker *w = state;
    if (tr_msg_type(m) == MSG_REPORT) {
        tr_msg *r = tr_msg_new(MSG_REPORT, 32);
        if (r == NULL || tr_msg_put_u64(r, w->handled) != TR_OK ||
            tr_msg_put_u64(r, w->first_ns) != TR_OK || tr_msg_put_u64(r, w->last_ns) != TR_OK) {
            tr_msg_free(r);
            return TR_ENOMEM;
        }
        return tr_reply(ctx, m, r);
    }
    w->last_ns = tr_now_ns();
    if (w->handled++ == 0)
        w->first_ns = w->last_ns;
    return TR_OK;
}

static const tr_behaviour worker_b = {
    .name = "worker", .state_size = sizeof(worker), .receive = worker_receive};

/* Sends SENT jobs at once, waits until the mailbox is empty, asks for the worker's numbers. */
static int run(tr_system *sys, const char *what, const tr_mailbox_opts *mb)
{
    tr_pid pid;
    uint64_t start_ns = tr_now_ns();
    int rc = tr_system_spawn_ex(sys, &worker_b, NULL, &(tr_spawn_opts){.mailbox = *mb}, &pid);
    for (int i = 0; rc == TR_OK && i < SENT; i++)
        rc = tr_system_send(sys, pid, tr_msg_new(MSG_JOB, 0));
    tr_actor_stats st = {0};
    for (int i = 0; rc == TR_OK && i < 3000; i++) { /* 30 s at most */
        if ((rc = tr_actor_stats_get(sys, pid, &st)) != TR_OK || st.depth == 0)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
    tr_msg *reply = NULL;
    uint64_t handled = 0, first_ns = 0, last_ns = 0;
    if (rc == TR_OK)
        rc = tr_system_call(sys, pid, tr_msg_new(MSG_REPORT, 0), 30000, &reply);
    if (rc == TR_OK) {
        tr_reader r;
        tr_reader_init(&r, reply);
        rc = tr_read_u64(&r, &handled);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &first_ns);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &last_ns);
        tr_reader_done(&r);
    }
    uint64_t span_ns = last_ns - first_ns;
    tr_msg_free(reply);
    if (rc == TR_OK)
        rc = tr_actor_stats_get(sys, pid, &st);
    if (rc != TR_OK)
        return rc;
    printf("%s: %d sent, %llu handled in %llu ms, %llu dropped, %llu ms waited for the limit\n",
           what, SENT, (unsigned long long)handled, (unsigned long long)(span_ns / 1000000),
           (unsigned long long)st.dropped, (unsigned long long)(st.token_wait_ns / 1000000));
    /* the limit's promise: beyond what it lets through at once (the burst; one for a leaky
     * bucket), one message per 1/RATE s, counted from before the first send (the spawn). 1 ms of
     * slack for the clock readings. */
    uint64_t at_once = mb->limit == TR_LIMIT_TOKEN ? BURST : 1;
    uint64_t floor_ns = handled > at_once ? (handled - at_once) * 1000000000ull / RATE : 0;
    if (last_ns - start_ns + 1000000 < floor_ns || handled + st.dropped != SENT) {
        fprintf(stderr, "%s: the limit did not hold\n", what);
        return TR_EINVAL;
    }
    return tr_system_stop_actor(sys, pid);
}

int main(void)
{
    tr_system *sys;
    int rc = tr_system_new(&sys, NULL);
    if (rc == TR_OK)
        rc = tr_system_start(sys);
    if (rc == TR_OK)
        rc = run(sys, "token bucket (50/s, burst 10)",
                 &(tr_mailbox_opts){.limit = TR_LIMIT_TOKEN, .rate = RATE, .burst = BURST});
    if (rc == TR_OK)
        rc = run(sys, "leaky bucket (50/s, room for 10)",
                 &(tr_mailbox_opts){.limit = TR_LIMIT_LEAKY, .rate = RATE, .capacity = ROOM});
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
    if (rc != TR_OK)
        fprintf(stderr, "rate_limit: %s\n", tr_strerror(rc));
    return rc == TR_OK ? 0 : 1;
}
