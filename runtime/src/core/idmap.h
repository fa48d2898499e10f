/*
 * idmap.h — a small open-addressing hash map from non-zero uint64 keys to uint64 values.
 *
 * Linear probing with backward-shift deletion (no tombstones), power-of-two capacity, load
 * factor <= 1/2. Not thread-safe: each map has one owner (an actor, the timer thread).
 */
#ifndef TROUPE_IDMAP_H
#define TROUPE_IDMAP_H

#include "internal.h"

typedef struct tr_idmap {
    uint64_t *keys; /* 0 = empty */
    uint64_t *vals;
    size_t cap;     /* 0 or a power of two */
    size_t len;
} tr_idmap;

/* An empty map (allocates nothing until the first put). */
TR_HIDDEN void tr__idmap_init(tr_idmap *m);
TR_HIDDEN void tr__idmap_free(tr_idmap *m);
/* Inserts or replaces key -> val. TR_OK, TR_EINVAL (key 0) or TR_ENOMEM. */
TR_HIDDEN int tr__idmap_put(tr_idmap *m, uint64_t key, uint64_t val);
/* Finds key; true and *val set when present (val may be NULL). */
TR_HIDDEN bool tr__idmap_get(const tr_idmap *m, uint64_t key, uint64_t *val);
/* Removes key; true and *val set when it was present (val may be NULL). */
TR_HIDDEN bool tr__idmap_del(tr_idmap *m, uint64_t key, uint64_t *val);

#endif
