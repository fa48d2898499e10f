/*
 * singleton.c — one actor in the cluster (troupe/singleton.h): a keeper actor per node checks, on
 * every membership event and every check_ms, whether this node owns the singleton's name
 * (tr_node_place), starts the actor here if it does and none runs, registers it under
 * "tr.singleton/NAME", and stops it when another node owns the name. The keeper alone writes the
 * local pid; other threads read it (tr_singleton_here) as an atomic.
 */
#include "troupe/singleton.h"
#include "core/registry.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SINGLETON_TICK (TR_MSG_SYSTEM - 0x200u + 1) /* (keeper to itself) check now */
#define NAME_MAX_LEN 64u

struct tr_singleton {
    tr_system *sys;
    tr_node *node;
    tr_singleton_opts o;
    char name[NAME_MAX_LEN + 1];
    char reg[NAME_MAX_LEN + 16];    /* "tr.singleton/NAME" */
    _Atomic tr_pid local;           /* the actor, when it runs here */
    tr_pid keeper;
};

static bool owned_here(tr_singleton *s)
{
    if (s->node == NULL)
        return true;
    char owner[65];
    uint16_t id;
    return tr_node_place(s->node, s->name, strlen(s->name), owner, &id) == TR_OK &&
           strcmp(owner, tr_node_name(s->node)) == 0;
}

static int whereis(tr_singleton *s, tr_pid *out)
{
    return s->node != NULL ? tr_node_whereis(s->node, s->reg, out)
                           : tr_system_whereis(s->sys, s->reg, out);
}

static void publish(tr_singleton *s, tr_pid pid)
{
    tr_pid known = TR_PID_NONE;
    if (whereis(s, &known) == TR_OK && known == pid)
        return;
    /* TR_EEXIST while the old owner's actor is still ending: the next check registers it */
    if (s->node != NULL)
        (void)tr_node_register(s->node, s->reg, pid);
    else
        (void)tr_system_register(s->sys, s->reg, pid);
}

/* Starts, publishes or stops the actor as placement says; the spawn's error when it had to start
 * one here and could not. */
static int check(tr_ctx *ctx, tr_singleton *s, bool here_anyway)
{
    int rc = TR_OK;
    tr_pid pid = atomic_load(&s->local);
    bool running = pid != TR_PID_NONE && tr_system_alive(s->sys, pid);
    bool mine = here_anyway || owned_here(s);
    if (mine && !running) {
        pid = TR_PID_NONE;
        if ((rc = tr_spawn_ex(ctx, s->o.behaviour, s->o.arg, &s->o.spawn, &pid)) != TR_OK)
            pid = TR_PID_NONE; /* tried again at the next check */
        atomic_store(&s->local, pid);
        if (pid != TR_PID_NONE)
            publish(s, pid);
    } else if (mine) {
        publish(s, pid);
    } else {
        if (running)
            tr_system_stop_actor(s->sys, pid); /* its name goes when it ends */
        atomic_store(&s->local, TR_PID_NONE);
    }
    return rc;
}

static int keeper_init(tr_ctx *ctx, void *state, const void *arg)
{
    tr_singleton *s = (tr_singleton *)arg;
    *(tr_singleton **)state = s;
    if (s->node != NULL)
        tr_node_monitor(s->node, tr_self(ctx), true);
    tr_msg *tick = tr_msg_new(SINGLETON_TICK, 0);
    int rc = tick != NULL ? tr_send_interval(ctx, tr_self(ctx), tick, s->o.check_ms, NULL)
                          : TR_ENOMEM;
    if (rc == TR_OK) {
        rc = check(ctx, s, s->o.start_here); /* at once, not a check_ms later */
        if (!s->o.start_here)
            rc = TR_OK; /* tried again at the next check */
    }
    if (rc != TR_OK && s->node != NULL)
        tr_node_monitor(s->node, tr_self(ctx), false);
    return rc;
}

static int keeper_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    tr_singleton *s = *(tr_singleton **)state;
    uint32_t type = tr_msg_type(m);
    if (type == SINGLETON_TICK || type == TR_MSG_NODEUP || type == TR_MSG_NODEDOWN)
        (void)check(ctx, s, false);
    return 0;
}

static const tr_behaviour keeper_b = {.name = "tr.singleton.keeper",
                                      .state_size = sizeof(tr_singleton *),
                                      .init = keeper_init,
                                      .receive = keeper_receive};

int tr_singleton_start(tr_system *sys, const tr_singleton_opts *o, tr_singleton **out)
{
    if (sys == NULL || o == NULL || out == NULL || !tr__token_valid(o->name, NAME_MAX_LEN, "-_./") ||
        o->behaviour == NULL || o->spawn.link)
        return TR_EINVAL;
    tr_singleton *s = calloc(1, sizeof *s);
    if (s == NULL)
        return TR_ENOMEM;
    s->sys = sys;
    s->node = o->node;
    s->o = *o;
    snprintf(s->name, sizeof s->name, "%s", o->name);
    s->o.name = s->name;
    snprintf(s->reg, sizeof s->reg, "tr.singleton/%s", s->name);
    if (s->o.check_ms == 0)
        s->o.check_ms = 1000;
    int rc = tr_system_spawn(sys, &keeper_b, s, &s->keeper);
    if (rc != TR_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return TR_OK;
}

int tr_singleton_whereis(tr_singleton *s, tr_pid *out)
{
    if (s == NULL || out == NULL)
        return TR_EINVAL;
    *out = TR_PID_NONE;
    return whereis(s, out);
}

bool tr_singleton_here(tr_singleton *s)
{
    if (s == NULL)
        return false;
    tr_pid pid = atomic_load(&s->local);
    return pid != TR_PID_NONE && tr_system_alive(s->sys, pid);
}

void tr_singleton_free(tr_singleton *s)
{
    free(s);
}
