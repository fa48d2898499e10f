/*
 * registry.h — a map from names to pids (open addressing, string keys), and the local registry
 * of a system built on it. node.c keeps the cluster-wide registry in another such map.
 */
#ifndef TROUPE_REGISTRY_H
#define TROUPE_REGISTRY_H

#include "internal.h"

#define TR_NAME_MAX 255u

typedef struct tr_name_entry {
    char *name; /* NULL: empty */
    tr_pid pid;
} tr_name_entry;

/* Not thread-safe: the owner locks. */
typedef struct tr_namemap {
    tr_name_entry *e;
    size_t cap; /* 0 or a power of two */
    size_t len;
} tr_namemap;

/* The hash the map places a name by (FNV-1a, its high bits folded in): also for tables of
 * names kept elsewhere (the store's recent journals). */
TR_UNIT uint64_t tr__name_hash(const char *s);
TR_UNIT void tr__namemap_init(tr_namemap *m);
TR_UNIT void tr__namemap_free(tr_namemap *m);
/* The entry for name, or NULL. */
TR_UNIT tr_name_entry *tr__namemap_find(tr_namemap *m, const char *name);
/* Inserts or replaces name -> pid. TR_OK or TR_ENOMEM. */
TR_UNIT int tr__namemap_put(tr_namemap *m, const char *name, tr_pid pid);
/* Removes name; true if it was there. */
TR_UNIT bool tr__namemap_del(tr_namemap *m, const char *name);
/* Removes every entry for which drop(arg, pid) is true; returns how many. */
TR_UNIT size_t tr__namemap_sweep(tr_namemap *m, bool (*drop)(void *arg, tr_pid pid), void *arg);

/* True when n is 1..max bytes of ASCII letters, digits and the characters of `also` (the names
 * of shards, singletons and the like, which end up in registered names and logs). */
TR_UNIT bool tr__token_valid(const char *n, size_t max, const char *also);

/* The system's local registry (created on first use; freed by tr_system_free). */
TR_HIDDEN void tr__registry_free(struct tr_system *sys);
/* A local name pid holds, copied into buf (cap bytes): true, or false if it holds none. A scan
 * of the registry: for the introspection service's few rows, not for a hot path. */
TR_HIDDEN bool tr__registry_name_of(struct tr_system *sys, tr_pid pid, char *buf, size_t cap);

#endif
