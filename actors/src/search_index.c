/*
 * search_index.c — the search read model's core (see actors/search_index.h): users by normalised
 * username and by the words of their name, each with their newest images.
 *
 * Text goes through libutf8proc once (utf8proc_map: NFKC, case folding, default ignorables
 * dropped; words cut at utf8proc_category), and everything after that compares bytes.
 *
 * Data structures, and what they cost (d = a crit-bit tree's depth: about log2 of its size for
 * real keys, at most its longest key's bits):
 *  - users: one struct each (fixed fields, the id inline, the first 8 bytes of the normalised
 *    username as a number so most comparisons need nothing else), found by id in an
 *    open-addressing hash table (linear probing, load at most 3/4); users are never removed. A
 *    user's strings — its name words (pointers to the shared word entries), the username and
 *    name as given, the normalised username — are one allocation, replaced whole by put_user.
 *  - usernames: a crit-bit tree (Bernstein's, as in Langley's critbit.pdf) over the key
 *    "normalised username, NUL, id": the NUL puts a username before the longer ones it
 *    prefixes, the id makes keys unique and ties deterministic. Its leaves are the user structs
 *    themselves (the key is read from them, never copied); internal nodes are 24 bytes from a
 *    pool of the index's own. A query's prefix subtree is found in O(d) and walked in order:
 *    tier 0 (username equal to the query) first, then tier 1 in username order, and the walk
 *    stops after `limit` — so tiers 0 and 1 are exact and cost O(d + limit) however many users
 *    share the prefix.
 *  - name words: a second crit-bit tree whose leaves are word entries (the word's bytes and its
 *    postings: the users with that word, as a crit-bit tree of their own over the same user key
 *    as the usernames' tree, so in username order; its leaves are the user structs again, and
 *    each posting costs one 24-byte node). Every internal node of the word tree also counts the
 *    postings below it, so how many a query word's prefix covers is known in O(d) without
 *    walking the range.
 *  - put_user: O(d) per username and name word (crit-bit paths, counts, the postings' trees)
 *    plus one hash probe; a user whose normalised username changes leaves and rejoins every
 *    word's tree (its key changed); add_image: one hash probe plus at most images_per_user
 *    entries of the user's own array.
 *  - tier 2: the query word whose prefix covers the fewest postings gives the candidates; its
 *    range is walked in word order (the exact word first), each word's users in key order, and
 *    each candidate is checked against its own name words: query words longest first, each
 *    taking an unused name word equal to it if there is one, else an unused one it prefixes
 *    (prefix ranges nest or are disjoint, so this greedy finds an assignment whenever one
 *    exists, and one with the most whole-word matches). Survivors go through a heap of `limit`
 *    ranked (whole-word count desc, username, id). Since each word's users come in the heap's
 *    own order, a word's walk stops once `limit` of them matched with as many whole words as a
 *    user of that word can have (query words no user has as a word never match whole), or
 *    once the next one ranks below the heap's worst; and the
 *    range's walk stops when the heap is full of answers no longer word can beat (the comments
 *    in search_index_query give the argument). One common name word thus costs O(d + limit),
 *    not a scan of everyone who has it.
 *    BOUND: a query visits at most TIER2_SCAN_MAX (10,000) postings of that range. Beyond, the
 *    answer is the best of those visited — with several words that rarely meet, possibly fewer
 *    hits than exist; a prefix of more than ~10,000 different words, possibly not the best.
 *    Tiers 0 and 1 are never bounded. (Measured, 1,000,000 users named as social-load names
 *    them — two of 64 name words each, so one word has ~31,000 users —, one thread, p99: one
 *    name word 1.2 µs, two whole name words 50 µs, a name word and a prefix 72 µs, a
 *    two-letter prefix of name words 1.5 µs, a username prefix 3.3 µs; with the postings
 *    unordered and the first 10,000 scanned these were 409 µs, 657, 510, 272 and 5 µs. About
 *    477 bytes per user with 3 images, 454 before.)
 *  - which candidates a query already saw: a per-user stamp (the query's generation), so no
 *    per-query set is allocated.
 *  - images: per user an array sorted by (ts desc, post id desc), at most images_per_user, each
 *    image's id and url one allocation; a post id already kept is ignored.
 * search_index_bytes counts the sizes asked of malloc (not malloc's own overhead).
 *
 * A query's "whole normalised query" (tiers 0 and 1) is the normalised query with white space
 * (categories Z*, Cc) trimmed from both ends; tier 1 applies when it holds no white space (one
 * word). A query is empty when no letter or digit (L*, N*) is left. images_per_user above 1,000
 * is taken as 1,000. No global mutable state: everything is in the index.
 */
#include "actors/search_index.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define NORM_OPTS                                                                              \
    (UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD | UTF8PROC_STABLE | UTF8PROC_IGNORE)
#define IMAGES_DEFAULT 20u
#define IMAGES_MAX 1000u
#define TIER2_SCAN_MAX 10000u   /* postings a tier-2 query visits at most (see above) */
#define POOL_CHUNK 1024u        /* crit-bit nodes per pool allocation */
#define KEY_MAX 65535u          /* a key's bytes (crit-bit byte index is 16 bits); never reached */
#define WALK_LOCAL 64u

/* ---- types ---------------------------------------------------------------------------------- */

typedef struct cb_node {
    void *child[2];             /* tagged: low bit set = another node, else a leaf */
    uint32_t total;             /* word tree: postings below */
    uint16_t byte;
    uint8_t otherbits;
} cb_node;

typedef struct pool_chunk {
    struct pool_chunk *next;
    cb_node nodes[POOL_CHUNK];
} pool_chunk;

struct suser;

typedef struct sword {
    void *posts;                /* crit-bit tree of the users with this word, by user key */
    uint32_t n;                 /* postings: the users with this word */
    uint16_t len;
    uint8_t s[];                /* len bytes, then a NUL */
} sword;

/* blk: sword *ws[nw] (a repeated word repeats its pointer; the user is posted once); username
 * NUL; name NUL (at name_off); normalised username (ulen bytes) NUL (at un_off). NULL until
 * put_user names the user. */
typedef struct suser {
    void *blk;
    search_image *img;          /* newest first */
    uint64_t upfx;              /* the normalised username's first 8 bytes, big-endian, 0-padded */
    uint32_t blksz, seen, name_off, un_off;
    uint16_t nw, ulen, nimg, capimg;
    uint8_t idlen;
    bool named;
    char id[];
} suser;

struct search_index {
    suser **users;              /* in the order they came */
    uint32_t nusers, capusers;
    suser **tab;                /* by id */
    size_t tabcap;
    void *uroot, *wroot;        /* crit-bit trees: usernames, name words */
    cb_node *freelist;
    size_t nfree;
    pool_chunk *chunks;
    size_t bytes;
    uint32_t gen;               /* the current query's stamp */
    uint32_t maxnw;             /* the most name words a user has had */
    unsigned nimages;
};

enum { T_USER, T_WORD };

typedef struct cbkey {
    const uint8_t *a;
    size_t na;
    const uint8_t *b;           /* NULL: the key is a alone; else a, NUL, b */
    size_t nb;
} cbkey;

typedef struct span {
    uint32_t off, len;
} span;

typedef struct qword {
    const uint8_t *s;
    uint32_t len;
} qword;

typedef struct hent {
    suser *u;
    uint32_t whole;
} hent;

/* ---- allocation, counted -------------------------------------------------------------------- */

static void *ix_alloc(search_index *ix, size_t n)
{
    void *p = malloc(n);
    if (p != NULL)
        ix->bytes += n;
    return p;
}

static void *ix_realloc(search_index *ix, void *p, size_t old, size_t n)
{
    void *q = realloc(p, n);
    if (q != NULL)
        ix->bytes = ix->bytes - old + n;
    return q;
}

static void ix_free(search_index *ix, void *p, size_t n)
{
    if (p != NULL) {
        free(p);
        ix->bytes -= n;
    }
}

/* ---- text ----------------------------------------------------------------------------------- */

/* NFKC + case fold of s[0..n) into a malloc'd buffer (free()); -EINVAL for invalid UTF-8. */
static int normalise(const void *s, size_t n, uint8_t **out, size_t *outlen)
{
    utf8proc_uint8_t *d = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d,
                                      (utf8proc_option_t)NORM_OPTS);
    if (r < 0) {
        free(d);
        return r == UTF8PROC_ERROR_NOMEM ? -ENOMEM : -EINVAL;
    }
    *out = d;
    *outlen = (size_t)r;
    return 0;
}

static bool valid_utf8(const char *s, size_t n)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t r = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &cp);
        if (r <= 0 || cp < 0)
            return false;
        i += (size_t)r;
    }
    return true;
}

static bool cat_word(utf8proc_category_t c)     /* L*, M*, N* */
{
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO;
}

static bool cat_letter_digit(utf8proc_category_t c)     /* L*, N* */
{
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

static bool cat_space(utf8proc_category_t c)    /* Z*, Cc */
{
    return c >= UTF8PROC_CATEGORY_ZS && c <= UTF8PROC_CATEGORY_CC;
}

/* The words of normalised (so valid) text s[0..n): their count, and into out when not NULL.
 * *ln: whether a letter or digit occurs. */
static size_t split_words(const uint8_t *s, size_t n, span *out, bool *ln)
{
    size_t nw = 0, i = 0, start = 0;
    bool in = false;
    if (ln != NULL)
        *ln = false;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t r;
        if (s[i] < 0x80) {
            cp = s[i];
            r = 1;
        } else {
            r = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
            if (r <= 0 || cp < 0) { /* cannot happen after utf8proc_map: end the text */
                n = i;
                break;
            }
        }
        utf8proc_category_t c = utf8proc_category(cp);
        bool w = cat_word(c);
        if (ln != NULL && cat_letter_digit(c))
            *ln = true;
        if (w && !in) {
            in = true;
            start = i;
        } else if (!w && in) {
            in = false;
            if (out != NULL)
                out[nw] = (span){(uint32_t)start, (uint32_t)(i - start)};
            nw++;
        }
        i += (size_t)r;
    }
    if (in) {
        if (out != NULL)
            out[nw] = (span){(uint32_t)start, (uint32_t)(n - start)};
        nw++;
    }
    return nw;
}

/* ---- users' fields -------------------------------------------------------------------------- */

static sword **u_ws(const suser *u)
{
    return (sword **)u->blk;
}

/* Whether ws[i] is the first occurrence of its word in ws. */
static bool ws_first(sword *const *ws, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (ws[j] == ws[i])
            return false;
    return true;
}

/* Whether w is one of ws[0..n). */
static bool ws_has(sword *const *ws, size_t n, const sword *w)
{
    for (size_t j = 0; j < n; j++)
        if (ws[j] == w)
            return true;
    return false;
}

static const char *u_username(const suser *u)
{
    return (const char *)u->blk + (size_t)u->nw * sizeof(sword *);
}

static const char *u_name(const suser *u)
{
    return (const char *)u->blk + u->name_off;
}

static const uint8_t *u_un(const suser *u)
{
    return (const uint8_t *)u->blk + u->un_off;
}

/* s's first 8 bytes as a big-endian number (0-padded): compares as the bytes do. */
static uint64_t pfx8(const uint8_t *s, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = v << 8 | (i < n ? s[i] : 0u);
    return v;
}

static size_t user_size(size_t idlen)
{
    return sizeof(suser) + idlen + 1;
}

static size_t word_size(size_t len)
{
    return sizeof(sword) + len + 1;
}

/* ---- crit-bit trees ------------------------------------------------------------------------- */

static bool is_node(const void *p)
{
    return ((uintptr_t)p & 1u) != 0;
}

static cb_node *node_of(void *p)
{
    return (cb_node *)(void *)((uintptr_t)p - 1u);
}

static void *tagged(cb_node *n)
{
    return (void *)((uintptr_t)n + 1u);
}

static int cb_dir(const cb_node *q, uint8_t c)
{
    return (1 + (q->otherbits | c)) >> 8;
}

static uint8_t kbyte(const cbkey *k, size_t i)
{
    if (i < k->na)
        return k->a[i];
    if (k->b == NULL || i == k->na)
        return 0;
    i -= k->na + 1;
    return i < k->nb ? k->b[i] : 0;
}

static size_t klen(const cbkey *k)
{
    return k->b != NULL ? k->na + 1 + k->nb : k->na;
}

static cbkey leaf_key(int kind, const void *leaf)
{
    if (kind == T_USER) {
        const suser *u = leaf;
        return (cbkey){u_un(u), u->ulen, (const uint8_t *)u->id, u->idlen};
    }
    const sword *w = leaf;
    return (cbkey){w->s, w->len, NULL, 0};
}

static uint32_t subtotal(int kind, void *p)
{
    if (is_node(p))
        return node_of(p)->total;
    return kind == T_WORD ? ((sword *)p)->n : 0;
}

/* Makes sure n nodes can be taken without failing. */
static int pool_reserve(search_index *ix, size_t n)
{
    while (ix->nfree < n) {
        pool_chunk *c = ix_alloc(ix, sizeof *c);
        if (c == NULL)
            return -ENOMEM;
        c->next = ix->chunks;
        ix->chunks = c;
        for (size_t i = 0; i < POOL_CHUNK; i++) {
            c->nodes[i].child[0] = ix->freelist;
            ix->freelist = &c->nodes[i];
        }
        ix->nfree += POOL_CHUNK;
    }
    return 0;
}

static cb_node *pool_take(search_index *ix)
{
    cb_node *n = ix->freelist;
    ix->freelist = n->child[0];
    ix->nfree--;
    return n;
}

static void pool_give(search_index *ix, cb_node *n)
{
    n->child[0] = ix->freelist;
    ix->freelist = n;
    ix->nfree++;
}

/* Inserts leaf (its key not in the tree); a node must be reserved. */
static void cb_insert(search_index *ix, void **rootp, int kind, void *leaf)
{
    if (*rootp == NULL) {
        *rootp = leaf;
        return;
    }
    cbkey k = leaf_key(kind, leaf);
    void *p = *rootp;
    while (is_node(p)) {
        cb_node *q = node_of(p);
        p = q->child[cb_dir(q, kbyte(&k, q->byte))];
    }
    cbkey pk = leaf_key(kind, p);
    size_t kl = klen(&k), pl = klen(&pk), max = kl > pl ? kl : pl, nb;
    unsigned ob = 0;
    for (nb = 0; nb < max; nb++) {
        ob = (unsigned)(kbyte(&k, nb) ^ kbyte(&pk, nb));
        if (ob != 0)
            break;
    }
    if (ob == 0) /* equal keys: the callers never do this */
        return;
    ob |= ob >> 1;
    ob |= ob >> 2;
    ob |= ob >> 4;
    ob = (ob & ~(ob >> 1)) ^ 255u;
    int ndir = (int)((1u + (ob | kbyte(&pk, nb))) >> 8);
    cb_node *n = pool_take(ix);
    n->byte = (uint16_t)nb;
    n->otherbits = (uint8_t)ob;
    n->child[1 - ndir] = leaf;
    void **wherep = rootp;
    for (;;) {
        void *w = *wherep;
        if (!is_node(w))
            break;
        cb_node *q = node_of(w);
        if (q->byte > nb || (q->byte == nb && q->otherbits > ob))
            break;
        wherep = &q->child[cb_dir(q, kbyte(&k, q->byte))];
    }
    n->child[ndir] = *wherep;
    n->total = subtotal(kind, *wherep);
    *wherep = tagged(n);
}

/* Removes leaf (a word leaf with no posting left, so no count changes above it). */
static void cb_delete(search_index *ix, void **rootp, int kind, void *leaf)
{
    cbkey k = leaf_key(kind, leaf);
    void **wherep = rootp, **whereq = NULL, *p = *rootp;
    cb_node *q = NULL;
    int d = 0;
    while (p != NULL && is_node(p)) {
        whereq = wherep;
        q = node_of(p);
        d = cb_dir(q, kbyte(&k, q->byte));
        wherep = &q->child[d];
        p = *wherep;
    }
    if (p != leaf)
        return;
    if (whereq == NULL) {
        *rootp = NULL;
        return;
    }
    *whereq = q->child[1 - d];
    pool_give(ix, q);
}

/* The word s[0..n) in the word tree, or NULL. */
static sword *word_find(void *root, const uint8_t *s, size_t n)
{
    if (root == NULL)
        return NULL;
    cbkey k = {s, n, NULL, 0};
    void *p = root;
    while (is_node(p)) {
        cb_node *q = node_of(p);
        p = q->child[cb_dir(q, kbyte(&k, q->byte))];
    }
    sword *w = p;
    return w->len == n && memcmp(w->s, s, n) == 0 ? w : NULL;
}

/* Adds delta to the counts on the path to word w. */
static void word_count(void *root, const sword *w, bool up)
{
    cbkey k = leaf_key(T_WORD, w);
    void *p = root;
    while (is_node(p)) {
        cb_node *q = node_of(p);
        if (up)
            q->total++;
        else
            q->total--;
        p = q->child[cb_dir(q, kbyte(&k, q->byte))];
    }
}

/* The subtree holding exactly the leaves whose key starts with key[0..n), or NULL. */
static void *cb_prefix(void *root, int kind, const uint8_t *key, size_t n)
{
    if (root == NULL)
        return NULL;
    void *p = root, *top = root;
    while (is_node(p)) {
        cb_node *q = node_of(p);
        uint8_t c = q->byte < n ? key[q->byte] : 0;
        p = q->child[cb_dir(q, c)];
        if (q->byte < n)
            top = p;
    }
    cbkey lk = leaf_key(kind, p);
    return lk.na >= n && memcmp(lk.a, key, n) == 0 ? top : NULL;
}

/* An in-order walk of a subtree, leaves only. */
typedef struct walk {
    void **stk;
    size_t n, cap;
    void *local[WALK_LOCAL];
} walk;

static void walk_init(walk *w, void *top)
{
    w->stk = w->local;
    w->cap = WALK_LOCAL;
    w->n = 0;
    if (top != NULL)
        w->stk[w->n++] = top;
}

static void walk_done(walk *w)
{
    if (w->stk != w->local)
        free(w->stk);
}

/* The next leaf into *leaf (NULL at the end); -ENOMEM. */
static int walk_next(walk *w, void **leaf)
{
    *leaf = NULL;
    if (w->n == 0)
        return 0;
    void *p = w->stk[--w->n];
    while (is_node(p)) {
        cb_node *q = node_of(p);
        if (w->n == w->cap) {
            size_t cap = w->cap * 2;
            void **s = w->stk == w->local ? malloc(cap * sizeof *s)
                                           : realloc(w->stk, cap * sizeof *s);
            if (s == NULL) {
                w->stk[w->n++] = p;     /* leave it whole */
                return -ENOMEM;
            }
            if (w->stk == w->local)
                memcpy(s, w->local, w->n * sizeof *s);
            w->stk = s;
            w->cap = cap;
        }
        w->stk[w->n++] = q->child[1];
        p = q->child[0];
    }
    *leaf = p;
    return 0;
}

/* ---- users by id ---------------------------------------------------------------------------- */

static uint64_t hash_id(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static suser *user_find(const search_index *ix, const char *id, size_t n)
{
    if (ix->tabcap == 0)
        return NULL;
    size_t mask = ix->tabcap - 1;
    for (size_t i = (size_t)hash_id(id, n) & mask;; i = (i + 1) & mask) {
        suser *u = ix->tab[i];
        if (u == NULL)
            return NULL;
        if (u->idlen == n && memcmp(u->id, id, n) == 0)
            return u;
    }
}

static void tab_put(suser **tab, size_t cap, suser *u)
{
    size_t mask = cap - 1, i = (size_t)hash_id(u->id, u->idlen) & mask;
    while (tab[i] != NULL)
        i = (i + 1) & mask;
    tab[i] = u;
}

/* Room for one more user in the array and the table. */
static int users_reserve(search_index *ix)
{
    if (ix->nusers == UINT32_MAX)
        return -ENOMEM;
    if (ix->nusers == ix->capusers) {
        uint32_t cap = ix->capusers < 16 ? 16 : ix->capusers > UINT32_MAX / 2 ? UINT32_MAX
                                                                               : ix->capusers * 2;
        suser **a = ix_realloc(ix, ix->users, ix->capusers * sizeof *a, cap * sizeof *a);
        if (a == NULL)
            return -ENOMEM;
        ix->users = a;
        ix->capusers = cap;
    }
    if ((ix->nusers + 1u) * (size_t)4 > ix->tabcap * 3) {
        size_t cap = ix->tabcap < 32 ? 32 : ix->tabcap * 2;
        suser **t = ix_alloc(ix, cap * sizeof *t);
        if (t == NULL)
            return -ENOMEM;
        memset(t, 0, cap * sizeof *t);
        for (uint32_t i = 0; i < ix->nusers; i++)
            tab_put(t, cap, ix->users[i]);
        ix_free(ix, ix->tab, ix->tabcap * sizeof *t);
        ix->tab = t;
        ix->tabcap = cap;
    }
    return 0;
}

static suser *user_new(search_index *ix, const char *id, size_t n)
{
    suser *u = ix_alloc(ix, user_size(n));
    if (u != NULL) {
        memset(u, 0, sizeof *u);
        memcpy(u->id, id, n);
        u->id[n] = '\0';
        u->idlen = (uint8_t)n;
    }
    return u;
}

/* Registers u (users_reserve done). */
static void user_add(search_index *ix, suser *u)
{
    ix->users[ix->nusers++] = u;
    tab_put(ix->tab, ix->tabcap, u);
}

/* ---- postings ------------------------------------------------------------------------------- */

/* Adds u to w's tree, under u's current key (a node reserved when w has a posting already). */
static void posting_add(search_index *ix, sword *w, suser *u)
{
    cb_insert(ix, &w->posts, T_USER, u);
    w->n++;
    word_count(ix->wroot, w, true);
}

/* Takes u out of w's tree (u's key must be the one it was added under); the word stays, even
 * when it has no posting left (word_drop_if_empty). */
static void posting_remove(search_index *ix, sword *w, suser *u)
{
    cb_delete(ix, &w->posts, T_USER, u);
    w->n--;
    word_count(ix->wroot, w, false);
}

static void word_free(search_index *ix, sword *w)
{
    ix_free(ix, w, word_size(w->len));
}

/* Drops word w from the word tree when no user has it any more. */
static void word_drop_if_empty(search_index *ix, sword *w)
{
    if (w->n == 0) {
        cb_delete(ix, &ix->wroot, T_WORD, w);
        word_free(ix, w);
    }
}

/* ---- the public functions ------------------------------------------------------------------- */

search_index *search_index_new(unsigned images_per_user)
{
    search_index *ix = malloc(sizeof *ix);
    if (ix == NULL)
        return NULL;
    memset(ix, 0, sizeof *ix);
    ix->bytes = sizeof *ix;
    ix->nimages = images_per_user == 0 ? IMAGES_DEFAULT
                  : images_per_user > IMAGES_MAX ? IMAGES_MAX
                                                 : images_per_user;
    return ix;
}

static void image_free(search_index *ix, search_image *im)
{
    ix_free(ix, (void *)(uintptr_t)im->id, strlen(im->id) + strlen(im->url) + 2);
}

void search_index_free(search_index *ix)
{
    if (ix == NULL)
        return;
    for (uint32_t i = 0; i < ix->nusers; i++) {
        suser *u = ix->users[i];
        if (u->blk != NULL) {
            sword **ws = u_ws(u);
            for (uint32_t j = 0; j < u->nw; j++)
                if (ws_first(ws, j) && --ws[j]->n == 0)
                    word_free(ix, ws[j]);
            ix_free(ix, u->blk, u->blksz);
        }
        for (uint32_t j = 0; j < u->nimg; j++)
            image_free(ix, &u->img[j]);
        ix_free(ix, u->img, u->capimg * sizeof *u->img);
        ix_free(ix, u, user_size(u->idlen));
    }
    while (ix->chunks != NULL) {
        pool_chunk *c = ix->chunks;
        ix->chunks = c->next;
        free(c);
    }
    free(ix->users);
    free(ix->tab);
    free(ix);
}

static bool text_ok(const char *s, size_t max, size_t *len)
{
    if (s == NULL)
        return false;
    size_t n = 0;
    while (n <= max && s[n] != '\0')
        n++;
    *len = n;
    return *len > 0 && *len <= max && valid_utf8(s, *len);
}

int search_index_put_user(search_index *ix, const char *id, const char *username,
                          const char *name)
{
    size_t idl, ul, nl;
    if (ix == NULL || !text_ok(id, SEARCH_ID_MAX, &idl) ||
        !text_ok(username, SEARCH_USERNAME_MAX, &ul) || !text_ok(name, SEARCH_NAME_MAX, &nl))
        return -EINVAL;
    suser *u = user_find(ix, id, idl);
    if (u != NULL && u->named && strcmp(u_username(u), username) == 0 &&
        strcmp(u_name(u), name) == 0)
        return 0;

    uint8_t *un = NULL, *nn = NULL;
    size_t unl, nnl;
    span *sp = NULL;
    sword **fresh = NULL;
    size_t nfresh = 0;
    void *blk = NULL;
    size_t blksz = 0, nw = 0;
    int rc = normalise(username, ul, &un, &unl);
    if (rc == 0)
        rc = normalise(name, nl, &nn, &nnl);
    if (rc != 0)
        goto out;
    if (unl + 1 + idl > KEY_MAX || nnl > KEY_MAX) {
        rc = -EINVAL;
        goto out;
    }
    nw = split_words(nn, nnl, NULL, NULL);
    if (nw > UINT16_MAX) {
        rc = -EINVAL;
        goto out;
    }
    rc = -ENOMEM;
    sp = calloc(nw + 1, sizeof *sp);
    fresh = malloc((nw + 1) * sizeof *fresh);
    blksz = nw * sizeof(sword *) + ul + 1 + nl + 1 + unl + 1;
    blk = ix_alloc(ix, blksz);
    if (sp == NULL || fresh == NULL || blk == NULL)
        goto out;
    split_words(nn, nnl, sp, NULL);

    /* The new block; each distinct word found or made (not yet in the tree). */
    sword **ws = blk;
    char *t = (char *)blk + nw * sizeof(sword *);
    memcpy(t, username, ul + 1);
    uint32_t name_off = (uint32_t)(t + ul + 1 - (char *)blk);
    memcpy(t + ul + 1, name, nl + 1);
    uint32_t un_off = (uint32_t)(name_off + nl + 1);
    memcpy((char *)blk + un_off, un, unl);
    ((char *)blk)[un_off + unl] = '\0';
    for (size_t i = 0; i < nw; i++) {
        const uint8_t *s = nn + sp[i].off;
        size_t len = sp[i].len;
        ws[i] = NULL;
        for (size_t j = 0; j < i; j++)
            if (sp[j].len == len && memcmp(nn + sp[j].off, s, len) == 0) {
                ws[i] = ws[j];
                break;
            }
        if (ws[i] != NULL)
            continue;
        sword *w = word_find(ix->wroot, s, len);
        if (w == NULL) {
            w = ix_alloc(ix, word_size(len));
            if (w == NULL)
                goto out;
            memset(w, 0, sizeof *w);
            w->len = (uint16_t)len;
            memcpy(w->s, s, len);
            w->s[len] = '\0';
            fresh[nfresh++] = w;
        }
        ws[i] = w;
    }
    bool ukey_same = u != NULL && u->named && u->ulen == unl && memcmp(u_un(u), un, unl) == 0;
    /* nodes: the fresh words', the username's, and one per posting added at most */
    if (pool_reserve(ix, nfresh + (ukey_same ? 0 : 1) + nw) != 0)
        goto out;
    if (u == NULL) {
        if (users_reserve(ix) != 0 || (u = user_new(ix, id, idl)) == NULL)
            goto out;
        user_add(ix, u);
    }

    /* Nothing fails from here on. A word's postings are ordered by the user's key, so a user
     * whose key changes leaves all its trees under the old key and joins the new ones under
     * the new key; one whose key stays only leaves and joins the words that changed. */
    rc = 0;
    for (size_t i = 0; i < nfresh; i++)
        cb_insert(ix, &ix->wroot, T_WORD, fresh[i]);
    nfresh = 0;
    void *oblk = u->blk;
    uint32_t onw = oblk != NULL ? u->nw : 0, oblksz = u->blksz;
    sword **ows = oblk != NULL ? u_ws(u) : NULL;
    if (!ukey_same) {
        if (oblk != NULL) /* named */
            cb_delete(ix, &ix->uroot, T_USER, u);
        for (uint32_t j = 0; j < onw; j++)
            if (ws_first(ows, j))
                posting_remove(ix, ows[j], u);
    } else {
        for (uint32_t j = 0; j < onw; j++)
            if (ws_first(ows, j) && !ws_has(ws, nw, ows[j]))
                posting_remove(ix, ows[j], u);
    }
    u->blk = blk;
    u->blksz = (uint32_t)blksz;
    u->nw = (uint16_t)nw;
    u->ulen = (uint16_t)unl;
    u->upfx = pfx8(un, unl);
    u->name_off = name_off;
    u->un_off = un_off;
    blk = NULL;
    for (size_t i = 0; i < nw; i++)
        if (ws_first(ws, i) && (!ukey_same || !ws_has(ows, onw, ws[i])))
            posting_add(ix, ws[i], u);
    if (!ukey_same)
        cb_insert(ix, &ix->uroot, T_USER, u);
    for (uint32_t j = 0; j < onw; j++)
        if (ws_first(ows, j))
            word_drop_if_empty(ix, ows[j]);
    ix_free(ix, oblk, oblksz);
    u->named = true;
    if (nw > ix->maxnw)
        ix->maxnw = (uint32_t)nw;
out:
    for (size_t i = 0; i < nfresh; i++)
        ix_free(ix, fresh[i], word_size(fresh[i]->len));
    if (blk != NULL)
        ix_free(ix, blk, blksz);
    free(fresh);
    free(sp);
    free(un);
    free(nn);
    return rc;
}

/* a newer than b: ts, then post id, descending. */
static bool img_newer(uint64_t ats, const char *aid, const search_image *b)
{
    return ats > b->ts || (ats == b->ts && strcmp(aid, b->id) > 0);
}

int search_index_add_image(search_index *ix, const char *user_id, const char *post_id,
                           const char *url, uint64_t ts)
{
    size_t idl, pl, ul;
    if (ix == NULL || !text_ok(user_id, SEARCH_ID_MAX, &idl) ||
        !text_ok(post_id, SEARCH_ID_MAX, &pl) || !text_ok(url, SEARCH_URL_MAX, &ul))
        return -EINVAL;
    suser *u = user_find(ix, user_id, idl);
    uint32_t at = 0;
    if (u != NULL) {
        for (uint32_t i = 0; i < u->nimg; i++)
            if (strcmp(u->img[i].id, post_id) == 0)
                return 0;
        while (at < u->nimg && !img_newer(ts, post_id, &u->img[at]))
            at++;
        if (at >= ix->nimages)
            return 0;
    }
    char *s = ix_alloc(ix, pl + ul + 2);
    if (s == NULL)
        return -ENOMEM;
    memcpy(s, post_id, pl + 1);
    memcpy(s + pl + 1, url, ul + 1);
    bool is_new = u == NULL;
    if (is_new && (users_reserve(ix) != 0 || (u = user_new(ix, user_id, idl)) == NULL)) {
        ix_free(ix, s, pl + ul + 2);
        return -ENOMEM;
    }
    if (u->nimg == u->capimg && u->capimg < ix->nimages) {
        unsigned cap = u->capimg == 0 ? 1u : u->capimg * 2u;
        if (cap > ix->nimages)
            cap = ix->nimages;
        search_image *a = ix_realloc(ix, u->img, u->capimg * sizeof *a, cap * sizeof *a);
        if (a == NULL) {
            ix_free(ix, s, pl + ul + 2);
            if (is_new)
                ix_free(ix, u, user_size(u->idlen));
            return -ENOMEM;
        }
        u->img = a;
        u->capimg = (uint16_t)cap;
    }
    if (is_new)
        user_add(ix, u);
    if (u->nimg == ix->nimages)
        image_free(ix, &u->img[--u->nimg]);
    memmove(&u->img[at + 1], &u->img[at], (u->nimg - at) * sizeof *u->img);
    u->img[at] = (search_image){s, s + pl + 1, ts};
    u->nimg++;
    return 0;
}

/* ---- queries -------------------------------------------------------------------------------- */

/* Compares users by (normalised username, id). */
static int ukey_cmp(const suser *a, const suser *b)
{
    if (a->upfx != b->upfx)
        return a->upfx < b->upfx ? -1 : 1;
    size_t n = a->ulen < b->ulen ? a->ulen : b->ulen;
    int c = memcmp(u_un(a), u_un(b), n);
    if (c != 0)
        return c;
    if (a->ulen != b->ulen)
        return a->ulen < b->ulen ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* The whole query, for tiers 0 and 1. */
typedef struct qkey {
    const uint8_t *s;
    size_t len;
    uint64_t pfx, mask;         /* its first 8 bytes as pfx8, and which of them count */
    bool ok, one_word;
} qkey;

/* Whether tier 0 or 1 lists u. */
static bool in01(const qkey *k, const suser *u)
{
    if (!k->ok || u->ulen < k->len || (u->upfx & k->mask) != k->pfx)
        return false;
    if (k->len > 8 && memcmp(u_un(u) + 8, k->s + 8, k->len - 8) != 0)
        return false;
    return u->ulen == k->len || k->one_word;
}

static bool hbetter(const hent *a, const hent *b)
{
    return a->whole > b->whole || (a->whole == b->whole && ukey_cmp(a->u, b->u) < 0);
}

/* The heap keeps its worst entry at the root. */
static void heap_down(hent *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && hbetter(&h[w], &h[l]))
            w = l;
        if (r < n && hbetter(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        hent t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_offer(hent *h, size_t *n, size_t cap, hent e)
{
    if (*n < cap) {
        size_t i = (*n)++;
        h[i] = e;
        while (i > 0 && hbetter(&h[(i - 1) / 2], &h[i])) {
            hent t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (cap > 0 && hbetter(&e, &h[0])) {
        h[0] = e;
        heap_down(h, *n, 0);
    }
}

/* Query words (longest first) against u's name words: how many matched a word whole, or -1
 * when some query word finds no unused name word it equals or prefixes. */
static int match_words(const suser *u, const qword *qw, size_t k, uint8_t *used)
{
    sword **ws = u_ws(u);
    uint32_t nw = u->nw;
    int whole = 0;
    memset(used, 0, nw);
    for (size_t i = 0; i < k; i++) {
        uint32_t len = qw[i].len, pick = UINT32_MAX;
        for (uint32_t j = 0; j < nw; j++)
            if (!used[j] && ws[j]->len == len && memcmp(ws[j]->s, qw[i].s, len) == 0) {
                pick = j;
                whole++;
                break;
            }
        if (pick == UINT32_MAX)
            for (uint32_t j = 0; j < nw; j++)
                if (!used[j] && ws[j]->len > len && memcmp(ws[j]->s, qw[i].s, len) == 0) {
                    pick = j;
                    break;
                }
        if (pick == UINT32_MAX)
            return -1;
        used[pick] = 1;
    }
    return whole;
}

static int qword_longer(const void *a, const void *b)
{
    const qword *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    int c = memcmp(x->s, y->s, x->len);
    return c;
}

static void hit(search_hit *h, const suser *u, int tier, unsigned images)
{
    h->id = u->id;
    h->username = u_username(u);
    h->name = u_name(u);
    h->nimages = u->nimg < images ? u->nimg : images;
    h->images = h->nimages > 0 ? u->img : NULL;
    h->tier = tier;
}

int search_index_query(search_index *ix, const char *q, size_t qlen, unsigned limit,
                       unsigned images, search_hit *out, size_t *n)
{
    if (n != NULL)
        *n = 0;
    if (ix == NULL || n == NULL || (q == NULL && qlen > 0) || (limit > 0 && out == NULL))
        return -EINVAL;
    if (qlen == 0 || qlen > SEARCH_QUERY_MAX)
        return -EINVAL;
    uint8_t *nq = NULL;
    size_t nl;
    int rc = normalise(q, qlen, &nq, &nl);
    if (rc != 0)
        return rc;
    span *sp = NULL;
    qword *qw = NULL;
    hent *heap = NULL;
    uint8_t *used = NULL;
    walk wk, pw;
    walk_init(&wk, NULL);
    walk_init(&pw, NULL);
    bool ln;
    /* words are at least a byte each, and so are the gaps between them */
    sp = calloc(nl / 2 + 1, sizeof *sp);
    qw = calloc(nl / 2 + 1, sizeof *qw);
    if (sp == NULL || qw == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    size_t k = split_words(nq, nl, sp, &ln);
    if (!ln) {
        rc = -EINVAL;
        goto out;
    }
    if (limit == 0)
        goto out;       /* rc is 0 */
    rc = -ENOMEM;
    for (size_t i = 0; i < k; i++)
        qw[i] = (qword){nq + sp[i].off, sp[i].len};

    /* The whole query, white space trimmed: tiers 0 and 1; one word when none is left inside. */
    size_t ks = nl, ke = 0, cnt = 0, nsp = 0, nsp_at_ke = 0;
    for (size_t i = 0; i < nl;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t r = utf8proc_iterate(nq + i, (utf8proc_ssize_t)(nl - i), &cp);
        if (r <= 0)
            break;
        if (cat_space(utf8proc_category(cp))) {
            if (ks < nl)
                nsp++;
        } else {
            if (ks == nl)
                ks = i;
            ke = i + (size_t)r;
            nsp_at_ke = nsp;
        }
        i += (size_t)r;
    }
    const uint8_t *key = nq + ks;
    size_t kl = ke - ks;
    bool inner_space = nsp_at_ke > 0;
    bool key_ok = memchr(key, 0, kl) == NULL, one_word = !inner_space;
    if (key_ok) {
        walk_init(&wk, cb_prefix(ix->uroot, T_USER, key, kl));
        void *leaf;
        while (cnt < limit) {
            if (walk_next(&wk, &leaf) != 0)
                goto out;
            if (leaf == NULL)
                break;
            const suser *u = leaf;
            if (u->ulen == kl)
                hit(&out[cnt++], u, 0, images);
            else if (one_word)
                hit(&out[cnt++], u, 1, images);
            else
                break;
        }
        walk_done(&wk);
        walk_init(&wk, NULL);
    }

    /* Tier 2: the rarest query word's range, each candidate checked against its name words. */
    if (cnt < limit && ix->wroot != NULL && k > 0) {
        void *best = NULL;
        uint32_t bestn = UINT32_MAX;
        qword bw = qw[0];
        for (size_t i = 0; i < k; i++) {
            void *top = cb_prefix(ix->wroot, T_WORD, qw[i].s, qw[i].len);
            uint32_t c = top != NULL ? subtotal(T_WORD, top) : 0;
            if (c < bestn) {
                bestn = c;
                best = top;
                bw = qw[i];
            }
        }
        if (best != NULL && bestn > 0) {
            qsort(qw, k, sizeof *qw, qword_longer);
            size_t rem = limit - cnt, hcap = rem < TIER2_SCAN_MAX ? rem : TIER2_SCAN_MAX, hn = 0;
            heap = malloc(hcap * sizeof *heap);
            used = malloc(ix->maxnw + 1u);
            if (heap == NULL || used == NULL)
                goto out;
            if (++ix->gen == 0) {
                for (uint32_t i = 0; i < ix->nusers; i++)
                    ix->users[i]->seen = 0;
                ix->gen = 1;
            }
            qkey qk = {key, kl, 0, 0, key_ok, one_word};
            qk.mask = kl >= 8 ? UINT64_MAX : UINT64_MAX << (8 * (8 - kl));
            qk.pfx = pfx8(key, kl) & qk.mask;
            /* Whole-word matches a user can have at most: a query word can match whole only
             * if some user has it as a word; under a longer word of the range (below), bw
             * matched by a prefix only, so its occurrences in the query do not count. */
            uint32_t most_exact = 0, most_longer = 0;
            for (size_t i = 0; i < k; i++)
                if (word_find(ix->wroot, qw[i].s, qw[i].len) != NULL) {
                    most_exact++;
                    most_longer += qw[i].len != bw.len || memcmp(qw[i].s, bw.s, bw.len) != 0;
                }
            walk_init(&wk, best);
            size_t scanned = 0;
            void *leaf;
            while (scanned < TIER2_SCAN_MAX) {
                if (walk_next(&wk, &leaf) != 0)
                    goto out;
                if (leaf == NULL)
                    break;
                sword *w = leaf;
                /* The word itself comes first in its range: its users may match up to
                 * most_exact query words whole; a user found under a longer word of the range
                 * matched bw by a prefix only (at most most_longer whole), unless it also has
                 * the word itself — then it was seen there, or that walk stopped before it
                 * with `hcap` better ones. So once the heap is full of answers with more than
                 * most_longer whole words, no later word of the range can improve it. */
                int exact = w->len == bw.len && memcmp(w->s, bw.s, bw.len) == 0;
                uint32_t most = exact ? most_exact : most_longer;
                if (!exact && hn == hcap && heap[0].whole > most)
                    break;
                /* The word's users in key order (username, id): once `hcap` of them matched
                 * with `most` whole words, every later one of this word ranks below them. */
                walk_init(&pw, w->posts);
                size_t good = 0;
                while (good < hcap && scanned < TIER2_SCAN_MAX) {
                    if (walk_next(&pw, &leaf) != 0)
                        goto out;
                    if (leaf == NULL)
                        break;
                    scanned++;
                    suser *u = leaf;
                    /* the heap's worst has `most` whole words or more and a smaller key than
                     * u: u and every later user of this word rank below it */
                    if (hn == hcap && heap[0].whole >= most && ukey_cmp(u, heap[0].u) > 0)
                        break;
                    if (u->seen == ix->gen)
                        continue;
                    u->seen = ix->gen;
                    if (in01(&qk, u))
                        continue;       /* listed in tier 0 or 1 */
                    int wh = k == 1 ? exact : match_words(u, qw, k, used);
                    if (wh >= 0) {
                        heap_offer(heap, &hn, hcap, (hent){u, (uint32_t)wh});
                        good += (uint32_t)wh >= most;
                    }
                }
                walk_done(&pw);
                walk_init(&pw, NULL);
            }
            for (size_t e = hn; e > 1; e--) {   /* best first */
                hent t = heap[0];
                heap[0] = heap[e - 1];
                heap[e - 1] = t;
                heap_down(heap, e - 1, 0);
            }
            for (size_t i = 0; i < hn; i++)
                hit(&out[cnt++], heap[i].u, 2, images);
        }
    }
    *n = cnt;
    rc = 0;
out:
    walk_done(&wk);
    walk_done(&pw);
    free(used);
    free(heap);
    free(qw);
    free(sp);
    free(nq);
    return rc;
}

size_t search_index_users(const search_index *ix)
{
    return ix != NULL ? ix->nusers : 0;
}

size_t search_index_bytes(const search_index *ix)
{
    return ix != NULL ? ix->bytes : 0;
}
