/*
 * idmap.h — a small open-addressing hash map from non-zero uint64 keys to uint64 values.
 *
 * Linear probing with backward-shift deletion (no tombstones), power-of-two capacity, load
 * factor <= 1/2. Deletion never resizes (callers may delete while walking the slots);
 * tr__idmap_shrink gives memory back once the map is mostly empty. Not thread-safe: each map has
 * one owner (an actor, the timer thread).
 */
#ifndef TROUPE_IDMAP_H
#define TROUPE_IDMAP_H

#include "internal.h"

/* The home slot of a 64-bit id (a pid, a ref, a corr) in a power-of-two table of cap slots:
 * murmur3's finaliser, as ids are sequential or differ only in a few bits. Shared with the link
 * set (link.c). */
static inline size_t tr__id_slot(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

typedef struct tr_idmap {
    uint64_t *keys; /* 0 = empty */
    uint64_t *vals;
    size_t cap;     /* 0 or a power of two */
    size_t len;
} tr_idmap;

/* An empty map (allocates nothing until the first put). */
TR_UNIT void tr__idmap_init(tr_idmap *m);
TR_UNIT void tr__idmap_free(tr_idmap *m);
/* Inserts or replaces key -> val. TR_OK, TR_EINVAL (key 0) or TR_ENOMEM. */
TR_UNIT int tr__idmap_put(tr_idmap *m, uint64_t key, uint64_t val);
/* Finds key; true and *val set when present (val may be NULL). */
TR_HIDDEN bool tr__idmap_get(const tr_idmap *m, uint64_t key, uint64_t *val);
/* Removes key; true and *val set when it was present (val may be NULL). Never resizes. */
TR_UNIT bool tr__idmap_del(tr_idmap *m, uint64_t key, uint64_t *val);
/* Gives memory back when at most 1/16 of the slots are used: rehashes into the smallest table
 * that is at most 1/4 full (freed when empty), so a map that grew to N keys and emptied again
 * holds O(keys) memory, and growing and shrinking are both amortised O(1). Keeps the table as
 * it is if the allocation fails. Not during a walk over the slots. */
TR_HIDDEN void tr__idmap_shrink(tr_idmap *m);

#endif
