/*
 * social_impl.h — what the social actors' files share and nobody else needs: reply builders,
 * string reading, sorted string sets, the pending-request list, the shared post record.
 */
#ifndef TROUPE_ACTORS_SOCIAL_IMPL_H
#define TROUPE_ACTORS_SOCIAL_IMPL_H

#include "actors/social.h"

#include <stdlib.h>
#include <troupe/bus.h>

#define SOC_CALL_MS(ctx) ((ctx)->call_ms ? (ctx)->call_ms : 5000u)

/* A reply of `type` holding status (more fields follow with tr_msg_put_*); NULL when out of
 * memory. */
tr_msg *soc_reply(uint32_t type, uint64_t status);
/* Reads a string into out (cap bytes with the NUL): TR_ETOOBIG if it does not fit. */
int soc_read_strz(tr_reader *r, char *out, size_t cap);
int soc_put_strz(tr_msg *m, const char *s);

/* A sorted set of strings (ids). */
typedef struct soc_set {
    char **v;
    size_t n, cap;
} soc_set;
bool soc_set_has(const soc_set *s, const char *k);
/* 1 added, 0 there already, TR_ENOMEM. */
int soc_set_add(soc_set *s, const char *k);
bool soc_set_del(soc_set *s, const char *k);
void soc_set_free(soc_set *s);

/* A set of ids kept as sorted 64-bit hashes: membership is a binary search over integers (a
 * timeline checks it for every insert). Two ids with one hash (odds 2^-64 a pair) are one. */
typedef struct soc_hset {
    uint64_t *v;
    size_t n, cap;
} soc_hset;
bool soc_hset_has(const soc_hset *s, const char *k);
/* The same for an id already hashed (soc_id_hash). */
bool soc_hset_has_hash(const soc_hset *s, uint64_t h);
/* A 64-bit hash of k[0..n) (ids: the timeline's follow set, the post records' table). */
uint64_t soc_id_hash(const char *k, size_t n);
/* 1 added, 0 there already, TR_ENOMEM. */
int soc_hset_add(soc_hset *s, const char *k);
bool soc_hset_del(soc_hset *s, const char *k);
void soc_hset_free(soc_hset *s);

/* A post, shared by every timeline of this node that holds it (reference counted), interned by
 * id in the node's table (posts.c): a timeline rebuilt or merged gets the record fanned-out
 * timelines already hold. */
typedef struct soc_post {
    _Atomic uint32_t refs;
    uint32_t stripe;
    struct soc_post *hnext;     /* in its stripe's chain */
    uint64_t hash, ts;
    uint64_t author_h;          /* soc_id_hash(author): a timeline's follow check per insert */
    char *id, *author, *url;    /* one allocation: the struct's tail */
} soc_post;

/* The record of post id (a reference taken): the interned one, or a new one (refs 1); NULL when
 * out of memory. */
soc_post *soc_post_new(social_ctx *ctx, const char *id, size_t il, const char *author,
                       size_t al, const char *url, size_t ul, uint64_t ts);
void soc_post_ref(soc_post *p);
/* Drops a reference; the last one removes the record from the table and frees it. */
void soc_post_unref(social_ctx *ctx, soc_post *p);

#endif
