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
/* Where h is or would go in s (its lower bound); *found: whether it is there. */
size_t soc_hset_pos(const soc_hset *s, uint64_t h, bool *found);
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
    uint32_t json_len;
    char *id, *author, *url;    /* one allocation: the struct's tail */
    char *json;                 /* {"id","user","image_url","ts"} as the HTTP API shows it */
} soc_post;

/* The record of post id (a reference taken): the interned one, or a new one (refs 1); NULL when
 * out of memory. */
soc_post *soc_post_new(social_ctx *ctx, const char *id, size_t il, const char *author,
                       size_t al, const char *url, size_t ul, uint64_t ts);
void soc_post_ref(soc_post *p);
/* Drops a reference; the last one removes the record from the table and frees it. */
void soc_post_unref(social_ctx *ctx, soc_post *p);
/* The record of post id with a reference taken, if this node holds it; NULL otherwise. */
soc_post *soc_post_find(social_ctx *ctx, const char *id, size_t il);

/* The entries of one running timeline, in the node's table (timelines.c): a ring of post
 * pointers newest first, and the hashed sets the fan-out checks per insert. Its actor opens it at
 * start and closes it at the end; fields change under the table's lock (the functions below),
 * and the owner may read its own sets without it. */
typedef struct soc_tl {
    /* the first 64 bytes hold all an insert reads (the record is 64-byte aligned) */
    uint32_t n, cap, head;      /* the ring: n entries newest first from e[head] */
    uint32_t stripe;
    soc_post **e;               /* the table's memory (malloc above 128 entries) */
    soc_hset following;         /* whom the reader follows (the table's memory) */
    soc_hset celebs;            /* followees pulled at read time: not inserted (likewise) */
    uint64_t reader_h;          /* soc_id_hash(reader) (never 0) */
    bool listed;                /* reachable from the table */
    bool servable;              /* pages may be read from the table (social_timeline_read) */
    uint64_t touched_ms;        /* when a table read last told the actor (SOC_T_TOUCH) */
    tr_pid owner;
} soc_tl;

/* A new, empty timeline of reader, owned by actor owner, listed in ctx's table (replacing the
 * record of an actor of the same reader that is ending); NULL when out of memory. */
soc_tl *soc_tl_open(social_ctx *ctx, const char *reader, tr_pid owner);
/* Unlists t, drops its entries' references and frees it (its owner, at the end). */
void soc_tl_close(social_ctx *ctx, soc_tl *t);
/* Inserts p (its reference consumed) if the reader follows its author and the author is not
 * pulled at read time; true when placed. */
bool soc_tl_insert(social_ctx *ctx, soc_tl *t, soc_post *p);
/* Inserts v[0..n) (their references consumed) as soc_tl_insert would, in one pass over the
 * ring: a rebuild or a new follow merges a followee's newest posts, which one insert at a time
 * placed by moving up every newer entry (timelines.c). v is reordered. Returns how many placed. */
size_t soc_tl_merge(social_ctx *ctx, soc_tl *t, soc_post **v, size_t n);
/* The ts of t's oldest entry when its ring is full (a post older than it cannot enter), else 0. */
uint64_t soc_tl_floor(social_ctx *ctx, soc_tl *t);
/* Whether pages may be served from the table without the actor (built, nothing to merge). */
void soc_tl_servable(social_ctx *ctx, soc_tl *t, bool on);
/* Adds who to the follow set: 1 added, 0 there already, TR_ENOMEM. */
int soc_tl_follow(social_ctx *ctx, soc_tl *t, const char *who);
/* Removes who from the follow and celebrity sets and its posts from the ring. */
void soc_tl_unfollow(social_ctx *ctx, soc_tl *t, const char *who);
/* who is pulled at read time from now on (on: its posts leave the ring), or pushed again. */
void soc_tl_celeb(social_ctx *ctx, soc_tl *t, const char *who, bool on);
/* Copies at most max entries older than the cursor (before_ts 0: from the newest) into out, a
 * reference taken on each; *avail is how many entries are older than the cursor. Returns the
 * count. */
size_t soc_tl_page(social_ctx *ctx, soc_tl *t, uint64_t before_ts, const char *before_id,
                   size_t max, soc_post **out, size_t *avail);
size_t soc_tl_count(social_ctx *ctx, soc_tl *t);
/* Inserts p (the caller holds a reference) into the running timelines of the readers with id
 * hashes readers[0..n) that take it (they follow its author, who is not pulled); returns how many
 * placed it. A reader not running here is skipped: its timeline rebuilds when it starts. */
size_t soc_tl_fanout(social_ctx *ctx, soc_post *p, const uint64_t *readers, size_t n);
/* The actor of reader's running timeline, if one runs on this node. */
bool soc_tl_owner(social_ctx *ctx, const char *reader, tr_pid *owner);
/* Frees the table (social_ctx_free: every timeline has closed). */
void soc_tls_free(social_ctx *ctx);

#endif
