/*
 * main.c — troupe embedded in a program that wants local actors only: it links troupe::core
 * (libuv and msgpack-c) and nothing of the other units — no nng, SQLite, hiredis or libconfig on
 * its command line (examples/embed/CMakeLists.txt; tests/link/core_only.sh builds and runs it).
 *
 * A ring of actors passes a token round a given number of times; the main thread asks the member
 * where the token ends, with tr_system_call, how many times it went by — that member answers when the
 * token's last hop arrives (a deferred reply); a send to another node's pid is a dead letter
 * (TR_ENOPROC), since this program has no node layer.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <troupe.h>

enum { MSG_TOKEN = 1, MSG_NEXT, MSG_COUNT, MSG_COUNTED };
enum { RING = 100, LAPS = 50 };

typedef struct member {
    tr_pid next;
    uint64_t seen;
    bool done;       /* the token's last hop arrived here */
    bool asked;      /* a MSG_COUNT waits for that (asker) */
    tr_from asker;
} member;

static int answer(tr_ctx *ctx, member *me)
{
    me->asked = false;
    return tr_reply_from(ctx, me->asker, tr_msg_new_u64(MSG_COUNTED, me->seen));
}

/* state->next is set by the init argument: the pid of the next actor in the ring */
static int member_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)ctx;
    ((member *)state)->next = arg != NULL ? *(const tr_pid *)arg : 0;
    return TR_OK;
}

static int member_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    member *me = state;
    if (tr_msg_type(m) == MSG_COUNT) {
        me->asker = tr_msg_from(m);
        me->asked = true;
        return me->done ? answer(ctx, me) : TR_OK;
    }
    uint64_t value;
    int rc = tr_msg_get_u64(m, &value);
    if (rc != TR_OK)
        return rc;
    if (tr_msg_type(m) == MSG_NEXT) {
        me->next = (tr_pid)value;
        return TR_OK;
    }
    uint64_t hops = value;
    me->seen++;
    if (hops == 0) {
        me->done = true;
        return me->asked ? answer(ctx, me) : TR_OK;
    }
    return tr_send(ctx, me->next, tr_msg_new_u64(MSG_TOKEN, hops - 1));
}

static const tr_behaviour member_b = {
    .name = "member", .state_size = sizeof(member), .init = member_init, .receive = member_receive};

static int fail(const char *what, int rc)
{
    fprintf(stderr, "embed: %s: %s\n", what, tr_strerror(rc));
    return 1;
}

int main(void)
{
    tr_system *sys;
    int rc = tr_system_new(&sys, NULL);
    if (rc != TR_OK)
        return fail("tr_system_new", rc);
    if ((rc = tr_system_start(sys)) != TR_OK)
        return fail("tr_system_start", rc);
    /* the ring, spawned backwards so each member knows the next; the last one learns the first
     * by a message (queued before the token can reach it) */
    tr_pid pids[RING], next = 0;
    for (int i = RING - 1; i >= 0; i--) {
        if ((rc = tr_system_spawn(sys, &member_b, &next, &pids[i])) != TR_OK)
            return fail("tr_system_spawn", rc);
        next = pids[i];
    }
    if ((rc = tr_system_send(sys, pids[RING - 1], tr_msg_new_u64(MSG_NEXT, pids[0]))) != TR_OK)
        return fail("tr_system_send", rc);
    tr_msg *token = tr_msg_new_u64(MSG_TOKEN, (uint64_t)RING * LAPS - 1);
    if ((rc = tr_system_send(sys, pids[0], token)) != TR_OK)
        return fail("tr_system_send", rc);

    /* the token's last hop is at member (RING * LAPS - 1) % RING = RING - 1, once per lap */
    tr_msg *reply = NULL;
    rc = tr_system_call(sys, pids[RING - 1], tr_msg_new(MSG_COUNT, 0), 60000, &reply);
    if (rc != TR_OK)
        return fail("tr_system_call", rc);
    uint64_t seen;
    rc = tr_msg_get_u64(reply, &seen);
    tr_msg_free(reply);
    if (rc != TR_OK)
        return fail("reading the reply", rc);
    /* another node's pid (node id 2): no node layer here, so it is a dead letter */
    tr_pid remote = ((tr_pid)2 << 48) | 1;
    int remote_rc = tr_system_send(sys, remote, tr_msg_new(MSG_TOKEN, 0));
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
    printf("embed: the token made %d hops round a ring of %d; the last member saw it %llu "
           "times; a send to another node's pid: %s\n",
           RING * LAPS, RING, (unsigned long long)seen, tr_strerror(remote_rc));
    return seen == LAPS && remote_rc == TR_ENOPROC ? 0 : 1;
}
