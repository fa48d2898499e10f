/*
 * registry.c — names for pids: a string-keyed hash map, and the local registry of a system
 * (tr_system_register / tr_system_whereis / tr_system_unregister).
 *
 * The map uses linear probing with backward-shift deletion, so it never fills with tombstones.
 * A local name is released when its actor ends: lazily — a lookup or a registration that finds
 * the name held by a dead pid drops it, and before the table grows every dead holder is swept,
 * so a churn of short-lived named actors cannot make it grow without bound.
 */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the map ------------------------------------------------------------------------------- */

uint64_t tr__name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

void tr__namemap_init(tr_namemap *m)
{
    m->e = NULL;
    m->cap = m->len = 0;
}

void tr__namemap_free(tr_namemap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->e[i].name);
    free(m->e);
    tr__namemap_init(m);
}

static size_t slot_of(const tr_namemap *m, const char *name)
{
    size_t i = (size_t)tr__name_hash(name) & (m->cap - 1);
    while (m->e[i].name != NULL && strcmp(m->e[i].name, name) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

tr_name_entry *tr__namemap_find(tr_namemap *m, const char *name)
{
    if (m->cap == 0)
        return NULL;
    size_t i = slot_of(m, name);
    return m->e[i].name != NULL ? &m->e[i] : NULL;
}

static int grow(tr_namemap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    tr_name_entry *e = calloc(cap, sizeof *e);
    if (e == NULL)
        return TR_ENOMEM;
    tr_namemap n = {.e = e, .cap = cap, .len = m->len};
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].name != NULL)
            n.e[slot_of(&n, m->e[i].name)] = m->e[i];
    free(m->e);
    *m = n;
    return TR_OK;
}

int tr__namemap_put(tr_namemap *m, const char *name, tr_pid pid)
{
    tr_name_entry *f = tr__namemap_find(m, name);
    if (f != NULL) {
        f->pid = pid;
        return TR_OK;
    }
    if ((m->len + 1) * 2 > m->cap && grow(m) != TR_OK)
        return TR_ENOMEM;
    char *copy = strdup(name);
    if (copy == NULL)
        return TR_ENOMEM;
    size_t i = slot_of(m, name);
    m->e[i].name = copy;
    m->e[i].pid = pid;
    m->len++;
    return TR_OK;
}

/* Empties slot i and shifts back the entries that probed past it. */
static void remove_at(tr_namemap *m, size_t i)
{
    free(m->e[i].name);
    m->e[i].name = NULL;
    m->len--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (m->e[j].name == NULL)
            return;
        size_t home = (size_t)tr__name_hash(m->e[j].name) & (m->cap - 1);
        /* j's entry may fill the hole at i unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            m->e[i] = m->e[j];
            m->e[j].name = NULL;
            i = j;
        }
    }
}

bool tr__namemap_del(tr_namemap *m, const char *name)
{
    if (m->cap == 0)
        return false;
    size_t i = slot_of(m, name);
    if (m->e[i].name == NULL)
        return false;
    remove_at(m, i);
    return true;
}

size_t tr__namemap_sweep(tr_namemap *m, bool (*drop)(void *arg, tr_pid pid), void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap;) {
        if (m->e[i].name != NULL && drop(arg, m->e[i].pid)) {
            remove_at(m, i); /* a later entry may have moved into i: look again */
            n++;
            continue;
        }
        i++;
    }
    return n;
}

/* ---- the local registry -------------------------------------------------------------------- */

struct tr_registry {
    pthread_mutex_t lock;
    tr_namemap map;
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static struct tr_registry *registry_of(tr_system *sys)
{
    struct tr_registry *r = atomic_load(&sys->registry);
    if (r != NULL)
        return r;
    pthread_mutex_lock(&create_lock);
    r = atomic_load(&sys->registry);
    if (r == NULL && (r = calloc(1, sizeof *r)) != NULL) {
        pthread_mutex_init(&r->lock, NULL);
        tr__namemap_init(&r->map);
        atomic_store(&sys->registry, r);
    }
    pthread_mutex_unlock(&create_lock);
    return r;
}

void tr__registry_free(tr_system *sys)
{
    struct tr_registry *r = atomic_load(&sys->registry);
    if (r == NULL)
        return;
    tr__namemap_free(&r->map);
    pthread_mutex_destroy(&r->lock);
    free(r);
    atomic_store(&sys->registry, NULL);
}

static bool dead(void *arg, tr_pid pid)
{
    return !tr_system_alive(arg, pid);
}

static int check_name(const char *name)
{
    return name == NULL || name[0] == '\0' || strlen(name) > TR_NAME_MAX ? TR_EINVAL : TR_OK;
}

int tr_system_register(tr_system *sys, const char *name, tr_pid pid)
{
    if (sys == NULL || check_name(name) != TR_OK || pid == TR_PID_NONE ||
        tr_pid_node(pid) != sys->opts.node_id)
        return TR_EINVAL;
    struct tr_registry *r = registry_of(sys);
    if (r == NULL)
        return TR_ENOMEM;
    if (!tr_system_alive(sys, pid))
        return TR_ENOPROC;
    int rc = TR_OK;
    pthread_mutex_lock(&r->lock);
    tr_name_entry *e = tr__namemap_find(&r->map, name);
    if (e != NULL && e->pid != pid && tr_system_alive(sys, e->pid)) {
        rc = TR_EEXIST;
    } else if (e != NULL) {
        e->pid = pid; /* the holder ended: the name is free */
    } else {
        if ((r->map.len + 1) * 2 > r->map.cap)
            tr__namemap_sweep(&r->map, dead, sys); /* before growing, drop the dead */
        rc = tr__namemap_put(&r->map, name, pid);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int tr_system_unregister(tr_system *sys, const char *name)
{
    if (sys == NULL || check_name(name) != TR_OK)
        return TR_EINVAL;
    struct tr_registry *r = registry_of(sys);
    if (r == NULL)
        return TR_ENOMEM;
    pthread_mutex_lock(&r->lock);
    bool had = tr__namemap_del(&r->map, name);
    pthread_mutex_unlock(&r->lock);
    return had ? TR_OK : TR_ENOPROC;
}

int tr_system_whereis(tr_system *sys, const char *name, tr_pid *out)
{
    if (sys == NULL || check_name(name) != TR_OK || out == NULL)
        return TR_EINVAL;
    struct tr_registry *r = registry_of(sys);
    if (r == NULL)
        return TR_ENOMEM;
    int rc = TR_ENOPROC;
    pthread_mutex_lock(&r->lock);
    tr_name_entry *e = tr__namemap_find(&r->map, name);
    if (e != NULL && tr_system_alive(sys, e->pid)) {
        *out = e->pid;
        rc = TR_OK;
    } else if (e != NULL) {
        tr__namemap_del(&r->map, name); /* its actor ended: released */
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

bool tr__token_valid(const char *n, size_t max, const char *also)
{
    size_t len = n != NULL ? strnlen(n, max + 1) : 0;
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
              (n[i] >= '0' && n[i] <= '9') || (n[i] != '\0' && strchr(also, n[i]) != NULL)))
            return false;
    return true;
}

bool tr__registry_name_of(tr_system *sys, tr_pid pid, char *buf, size_t cap)
{
    struct tr_registry *r = atomic_load(&sys->registry);
    bool found = false;
    if (r == NULL || pid == TR_PID_NONE || cap == 0)
        return false;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->map.cap && !found; i++)
        if (r->map.e[i].name != NULL && r->map.e[i].pid == pid) {
            snprintf(buf, cap, "%s", r->map.e[i].name);
            found = true;
        }
    pthread_mutex_unlock(&r->lock);
    return found;
}
