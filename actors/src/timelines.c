/*
 * timelines.c — the entries of the node's running timelines (social_impl.h), in one table found
 * by the reader's id hash, so that a fan-out writes a post into every running follower timeline
 * of this node without a message, a mailbox push and an actor turn per follower.
 *
 * Why a table and not messages: a post of an author with 1,000 followers made 1,000 messages,
 * each waking one of 1,000 actors whose state, mailbox and ring were all cold — the fan-out ran
 * at 0.64 M insertions/s over a million running timelines, with the scheduler, the allocator and
 * the shard's name lookup ahead of the insert itself in the profile. Each timeline is still one
 * actor (it rebuilds, merges a new follow, answers pages, passivates); only its entries and the
 * sets the fan-out checks per insert live here, where the fan-out can reach them.
 *
 * Layout: TL_STRIPES stripes, each a mutex and an open-addressing table (linear probing) of
 * (reader hash, record). A record holds a ring of post pointers, newest first (8 bytes an entry:
 * the post's ts, id and author are in the shared record, posts.c), the hashed follow set and the
 * hashed set of followees pulled at read time (celebrities).
 *
 * Invariants:
 * - Everything in a record that the fan-out reads or writes (ring, following, celebs) changes
 *   only under its stripe's lock; the owning actor reads its own sets without it (it is their
 *   only writer).
 * - A record is reachable from the table from soc_tl_open until soc_tl_close (or until a newer
 *   record of the same reader replaces it: an actor ending while its successor starts); after it
 *   is unreachable only its owner touches it.
 * - Each entry holds one reference to its post. The fan-out takes n references up front and gives
 *   back the unused ones after the loop, so a post is never freed while a page's inserts run.
 * - Lock order: a timeline stripe, then a post stripe (an evicted entry's last reference), or a
 *   timeline stripe, then the table's memory lock (a stripe taking a new piece); never the other
 *   way.
 *
 * Memory: records, follow sets and rings come from the table's own memory, not malloc (see "the
 * table's memory" below): at a million running timelines the node's heap is gigabytes of actors,
 * mailboxes and users' sets, and with malloc the lines an insert touches lay spread through all
 * of it, each on its own page — a TLB miss per line whose page-table walk missed the caches too.
 */
#include "social_impl.h"

#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

/* Under AddressSanitizer: blocks not handed out are poisoned, and the chunks are roots for its
 * leak checker (it does not scan memory it did not allocate: a malloc'd ring held only by a
 * record in a chunk would look leaked). */
#if defined(__SANITIZE_ADDRESS__)
#define TL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TL_ASAN 1
#endif
#endif
#ifdef TL_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define TL_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define TL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define TL_ROOT(p, n) __lsan_register_root_region((p), (n))
#define TL_UNROOT(p, n) __lsan_unregister_root_region((p), (n))
#else
#define TL_POISON(p, n) ((void)(p), (void)(n))
#define TL_UNPOISON(p, n) ((void)(p), (void)(n))
#define TL_ROOT(p, n) ((void)(p), (void)(n))
#define TL_UNROOT(p, n) ((void)(p), (void)(n))
#endif

#define TL_STRIPES 1024u
#define TL_CHUNK ((size_t)2 << 20) /* the table's memory comes in 2 MiB chunks (huge pages) */
#define TL_PAGE 4096u              /* chunks are cut in pages: a stripe's piece, or ring blocks */
#define TL_META_PAGES 4u           /* a chunk's first pages: the metas of its pages */
#define TL_SMALL 1024u             /* blocks above this many bytes come from malloc */
#define TL_RING_CLASSES 10u
#define TL_RING_MAX 128u           /* rings above this many entries come from malloc */
/* the capacities of rings in the table's memory (entries): growing by about half */
static const uint16_t RING_CLASS[TL_RING_CLASSES] = {4, 8, 12, 16, 24, 32, 48, 64, 96, 128};
#define TL_RECORD (TL_SMALL / 16 + 1) /* free list of records; those below: blocks by 16 bytes */

_Static_assert(offsetof(soc_tl, celebs.n) + sizeof(size_t) <= 64,
               "an insert's fields in the record's first line");

typedef struct tl_slot {
    uint64_t h;                 /* 0: empty */
    soc_tl *t;
} tl_slot;

typedef struct tl_free {
    struct tl_free *next;
} tl_free;

/* The meta of one page of a chunk (in the chunk's first TL_META_PAGES pages). A page of ring
 * blocks holds blocks of one class; while it has room it is in its stripe's list of that class;
 * its last block given back, it returns to the table's pool of pages. */
typedef struct tl_page {
    struct tl_page *next, *prev; /* in its stripe's list of its class, or the pool (next only) */
    tl_free *free;               /* its blocks given back */
    uint16_t used, carved;       /* blocks handed out; blocks cut from its start so far */
    uint16_t cls;                /* ring class */
} tl_page;

_Static_assert(sizeof(tl_page) * (TL_CHUNK / TL_PAGE) <= TL_META_PAGES * TL_PAGE,
               "a chunk's metas fit its first pages");

typedef struct tl_stripe {
    _Alignas(64) pthread_mutex_t lock;
    tl_slot *s;
    size_t mask, n;             /* mask + 1 slots (0: none yet), n used */
    uint64_t entries, bytes;    /* the stripe's timelines: entries held, ring bytes (capacity) */
    uint64_t heap;              /* bytes of its rings and follow sets in malloc */
    char *bump, *bump_end;      /* the rest of the stripe's piece */
    tl_free *free[TL_RECORD + 1]; /* [k]: blocks of 16 k bytes; [TL_RECORD]: records */
    tl_page *rings[TL_RING_CLASSES]; /* its pages of ring blocks with room, by class */
} tl_stripe;

struct soc_tls {
    tl_stripe st[TL_STRIPES];
    pthread_mutex_t mem_lock;   /* the chunks and the pool below */
    char *cur, *end;            /* the rest of the newest chunk */
    tl_page *pool;              /* pages given back */
    void **chunks;
    size_t nchunks, chunks_cap;
};

static uint64_t key_of(uint64_t h)
{
    return h != 0 ? h : 1; /* 0 marks an empty slot */
}

static struct soc_tls *table(social_ctx *ctx)
{
    struct soc_tls *t = __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE);
    if (t != NULL)
        return t;
    struct soc_tls *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    for (unsigned i = 0; i < TL_STRIPES; i++)
        pthread_mutex_init(&n->st[i].lock, NULL);
    pthread_mutex_init(&n->mem_lock, NULL);
    if (__atomic_compare_exchange_n(&ctx->timelines_table, &t, n, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return n;
    for (unsigned i = 0; i < TL_STRIPES; i++) /* another thread made it first */
        pthread_mutex_destroy(&n->st[i].lock);
    pthread_mutex_destroy(&n->mem_lock);
    free(n);
    return t;
}

/* ---- the table's memory ---------------------------------------------------------------------
 *
 * Records, follow sets up to TL_SMALL bytes and rings up to TL_RING_MAX entries are carved from
 * TL_CHUNK chunks mapped aligned and offered to the kernel as huge pages (MADV_HUGEPAGE: honoured
 * when transparent huge pages are "always" or "madvise"), so at a million timelines what the
 * fan-out reads (~350 MB) is a few hundred pages the TLB holds instead of ~90,000 4 KiB pages
 * scattered through the heap. Chunks are cut in TL_PAGE pages (the metas of a chunk's pages in
 * its first pages). For records and follow sets a stripe takes a page (a piece) at a time (the
 * memory lock, rarely) and bumps through it under its own lock; a block given back goes to its
 * stripe's free list of its size (16-byte classes; records, 64-byte aligned so the fan-out's
 * fields share one line, have their own list), and is reused by the next block of that size in
 * that stripe. Records are one size; a follow set grows when its reader follows someone (one
 * timeline at a time: the block it outgrows serves the next one's). Rings work by pages (below),
 * which return to a pool when empty. Memory returns to the system only with the table
 * (soc_tls_free): the table holds about what its timelines held at their peak, which a node
 * bounds by passivating idle timelines. */

static size_t tl_class(size_t bytes)
{
    return (bytes + 15) / 16;
}

static void *chunk_new(void)
{
    size_t len = TL_CHUNK * 2; /* mapped twice as large, cut down to an aligned chunk */
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)m + TL_CHUNK - 1) & ~(uintptr_t)(TL_CHUNK - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    if (a + TL_CHUNK < m + len)
        munmap(a + TL_CHUNK, (size_t)(m + len - (a + TL_CHUNK)));
#ifdef MADV_HUGEPAGE
    (void)madvise(a, TL_CHUNK, MADV_HUGEPAGE); /* a hint: refused, the chunk is 4 KiB pages */
#endif
    TL_POISON(a + TL_META_PAGES * TL_PAGE, TL_CHUNK - TL_META_PAGES * TL_PAGE);
    TL_ROOT(a, TL_CHUNK);
    return a;
}

static tl_page *page_of(const void *p)
{
    uintptr_t base = (uintptr_t)p & ~(uintptr_t)(TL_CHUNK - 1);
    return (tl_page *)base + ((uintptr_t)p - base) / TL_PAGE;
}

static char *page_addr(const tl_page *pg)
{
    uintptr_t base = (uintptr_t)pg & ~(uintptr_t)(TL_CHUNK - 1);
    return (char *)base + (size_t)(pg - (const tl_page *)base) * TL_PAGE;
}

/* A page: one given back, else the newest chunk's next (a new chunk when it has none left);
 * NULL when out of memory. */
static tl_page *page_take(struct soc_tls *tab)
{
    tl_page *pg = NULL;
    pthread_mutex_lock(&tab->mem_lock);
    if (tab->pool != NULL) {
        pg = tab->pool;
        tab->pool = pg->next;
    } else {
        if (tab->cur == tab->end) {
            char *c = NULL;
            if (tab->nchunks == tab->chunks_cap) {
                size_t nc = tab->chunks_cap ? tab->chunks_cap * 2 : 16;
                void **v = realloc(tab->chunks, nc * sizeof *v);
                if (v != NULL) {
                    tab->chunks = v;
                    tab->chunks_cap = nc;
                }
            }
            if (tab->nchunks < tab->chunks_cap && (c = chunk_new()) != NULL) {
                tab->chunks[tab->nchunks++] = c;
                tab->cur = c + TL_META_PAGES * TL_PAGE;
                tab->end = c + TL_CHUNK;
            }
        }
        if (tab->cur != tab->end) {
            pg = page_of(tab->cur);
            tab->cur += TL_PAGE;
        }
    }
    pthread_mutex_unlock(&tab->mem_lock);
    if (pg != NULL)
        *pg = (tl_page){0};
    return pg;
}

static void page_give(struct soc_tls *tab, tl_page *pg)
{
    TL_POISON(page_addr(pg), TL_PAGE);
    pthread_mutex_lock(&tab->mem_lock);
    pg->next = tab->pool;
    tab->pool = pg;
    pthread_mutex_unlock(&tab->mem_lock);
}

static void release_block(tl_stripe *st, void *p, size_t k)
{
    tl_free *f = p;
    TL_UNPOISON(f, sizeof *f);
    f->next = st->free[k];
    st->free[k] = f;
    TL_POISON((char *)p + sizeof *f, (k == TL_RECORD ? sizeof(soc_tl) : k * 16) - sizeof *f);
}

/* The rest of the stripe's piece into its free list (a multiple of 16 bytes), a new piece (a
 * page, never given back) in its place; false when out of memory. */
static bool piece_new(struct soc_tls *tab, tl_stripe *st)
{
    size_t rest = (size_t)(st->bump_end - st->bump);
    if (rest >= 16)
        release_block(st, st->bump, rest / 16);
    st->bump = st->bump_end = NULL;
    tl_page *pg = page_take(tab);
    if (pg == NULL)
        return false;
    st->bump = page_addr(pg);
    st->bump_end = st->bump + TL_PAGE;
    return true;
}

/* A block of `bytes` (lock held; malloc above TL_SMALL); NULL when out of memory. */
static void *tl_alloc(struct soc_tls *tab, tl_stripe *st, size_t bytes)
{
    if (bytes > TL_SMALL) {
        void *p = malloc(bytes);
        if (p != NULL)
            st->heap += bytes;
        return p;
    }
    size_t k = tl_class(bytes);
    tl_free *f = st->free[k];
    if (f != NULL) {
        TL_UNPOISON(f, k * 16);
        st->free[k] = f->next;
        return f;
    }
    if ((size_t)(st->bump_end - st->bump) < k * 16 && !piece_new(tab, st))
        return NULL;
    void *p = st->bump;
    st->bump += k * 16;
    TL_UNPOISON(p, k * 16);
    return p;
}

static void tl_release(tl_stripe *st, void *p, size_t bytes)
{
    if (p == NULL)
        return;
    if (bytes > TL_SMALL) {
        free(p);
        st->heap -= bytes;
    } else {
        release_block(st, p, tl_class(bytes));
    }
}

/* A zeroed record, 64-byte aligned (lock held); NULL when out of memory. */
static soc_tl *record_alloc(struct soc_tls *tab, tl_stripe *st)
{
    soc_tl *t = (soc_tl *)st->free[TL_RECORD];
    if (t != NULL) {
        TL_UNPOISON(t, sizeof *t);
        st->free[TL_RECORD] = ((tl_free *)t)->next;
    } else {
        size_t skip = (size_t)(-(uintptr_t)st->bump & 63); /* to the next line */
        if ((size_t)(st->bump_end - st->bump) < skip + sizeof *t) {
            if (!piece_new(tab, st))
                return NULL;
            skip = 0; /* pieces are pages */
        } else if (skip > 0) {
            release_block(st, st->bump, skip / 16);
        }
        st->bump += skip;
        t = (soc_tl *)(void *)st->bump;
        st->bump += (sizeof *t + 15) & ~(size_t)15;
        TL_UNPOISON(t, sizeof *t);
    }
    memset(t, 0, sizeof *t);
    return t;
}

/* ---- a follow set in the table's memory (lock held) ------------------------------------------
 * The same sorted hashes as soc_hset (soc_hset_has_hash reads it), allocated here. */

/* 1 added, 0 there already, TR_ENOMEM. */
static int tset_add(struct soc_tls *tab, tl_stripe *st, soc_hset *s, uint64_t h)
{
    bool found;
    size_t i = soc_hset_pos(s, h, &found);
    if (found)
        return 0;
    if (s->n == s->cap) { /* by half (at least 4): ten follows take 96 bytes */
        size_t nc = s->cap + (s->cap / 2 > 4 ? s->cap / 2 : 4);
        uint64_t *v = tl_alloc(tab, st, nc * sizeof *v);
        if (v == NULL)
            return TR_ENOMEM;
        if (s->n > 0)
            memcpy(v, s->v, s->n * sizeof *v);
        tl_release(st, s->v, s->cap * sizeof *v);
        s->v = v;
        s->cap = nc;
    }
    memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof *s->v);
    s->v[i] = h;
    s->n++;
    return 1;
}

static void tset_del(soc_hset *s, uint64_t h)
{
    bool found;
    size_t i = soc_hset_pos(s, h, &found);
    if (found) {
        memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof *s->v);
        s->n--;
    }
}

static void tset_free(tl_stripe *st, soc_hset *s)
{
    tl_release(st, s->v, s->cap * sizeof *s->v);
    *s = (soc_hset){0};
}

/* ---- ring blocks (lock held) -------------------------------------------------------------------
 * Rings grow as posts come, all of a node's timelines together: the blocks they outgrow would
 * sit in free lists nobody asks from (every ring has grown past them). So a ring of up to
 * TL_RING_MAX entries lives in a page holding blocks of its class only, and a page whose blocks
 * have all been given back returns to the table's pool for any class and any stripe: the table
 * holds about what its rings hold, plus a partly used page per class and stripe. */

static void page_unlist(tl_stripe *st, tl_page *pg)
{
    if (pg->prev != NULL)
        pg->prev->next = pg->next;
    else
        st->rings[pg->cls] = pg->next;
    if (pg->next != NULL)
        pg->next->prev = pg->prev;
    pg->next = pg->prev = NULL;
}

/* A ring for at least n entries, its capacity into *cap; NULL when out of memory. */
static soc_post **ring_alloc(struct soc_tls *tab, tl_stripe *st, size_t n, size_t *cap)
{
    if (n > TL_RING_MAX) {
        soc_post **v = malloc(n * sizeof *v);
        if (v != NULL) {
            st->heap += n * sizeof *v;
            *cap = n;
        }
        return v;
    }
    unsigned c = 0;
    while (RING_CLASS[c] < n)
        c++;
    size_t bytes = RING_CLASS[c] * sizeof(soc_post *);
    tl_page *pg = st->rings[c];
    if (pg == NULL) {
        if ((pg = page_take(tab)) == NULL)
            return NULL;
        pg->cls = (uint16_t)c;
        st->rings[c] = pg;
    }
    void *b;
    if (pg->free != NULL) {
        b = pg->free;
        TL_UNPOISON(b, bytes);
        pg->free = pg->free->next;
    } else {
        b = page_addr(pg) + (size_t)pg->carved++ * bytes;
        TL_UNPOISON(b, bytes);
    }
    if (++pg->used == TL_PAGE / bytes) /* full: off the list */
        page_unlist(st, pg);
    *cap = RING_CLASS[c];
    return b;
}

static void ring_free(struct soc_tls *tab, tl_stripe *st, soc_post **e, size_t cap)
{
    if (e == NULL)
        return;
    if (cap > TL_RING_MAX) {
        free(e);
        st->heap -= cap * sizeof *e;
        return;
    }
    tl_page *pg = page_of(e);
    size_t bytes = RING_CLASS[pg->cls] * sizeof(soc_post *);
    if (pg->used == TL_PAGE / bytes) { /* full until now: back on the list */
        pg->next = st->rings[pg->cls];
        if (pg->next != NULL)
            pg->next->prev = pg;
        st->rings[pg->cls] = pg;
    }
    tl_free *f = (tl_free *)(void *)e;
    f->next = pg->free;
    pg->free = f;
    TL_POISON((char *)e + sizeof *f, bytes - sizeof *f);
    if (--pg->used == 0) {
        page_unlist(st, pg);
        page_give(tab, pg);
    }
}

/* ---- the stripe's table (lock held) -------------------------------------------------------- */

static size_t home(const tl_stripe *st, uint64_t h)
{
    return (size_t)(h / TL_STRIPES) & st->mask;
}

static tl_slot *slot_find(const tl_stripe *st, uint64_t h)
{
    if (st->s == NULL)
        return NULL;
    for (size_t i = home(st, h);; i = (i + 1) & st->mask) {
        if (st->s[i].h == h)
            return &st->s[i];
        if (st->s[i].h == 0)
            return NULL;
    }
}

/* Room for one more at load at most 1/2; false when out of memory. */
static bool slot_room(tl_stripe *st)
{
    size_t cap = st->s != NULL ? st->mask + 1 : 0;
    if ((st->n + 1) * 2 <= cap)
        return true;
    size_t nc = cap ? cap * 2 : 8;
    tl_slot *s = calloc(nc, sizeof *s);
    if (s == NULL)
        return false;
    tl_slot *old = st->s;
    st->s = s;
    st->mask = nc - 1;
    for (size_t i = 0; i < cap; i++)
        if (old[i].h != 0) {
            size_t k = home(st, old[i].h);
            while (s[k].h != 0)
                k = (k + 1) & st->mask;
            s[k] = old[i];
        }
    free(old);
    return true;
}

/* Empties slot i, moving later members of its cluster back (no tombstones). */
static void slot_remove(tl_stripe *st, size_t i)
{
    for (size_t j = (i + 1) & st->mask; st->s[j].h != 0; j = (j + 1) & st->mask) {
        size_t k = home(st, st->s[j].h);
        /* s[j] may move to i when its home is not within (i, j] cyclically */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            st->s[i] = st->s[j];
            i = j;
        }
    }
    st->s[i] = (tl_slot){0};
    st->n--;
}

/* ---- a ring (lock held) -------------------------------------------------------------------- */

/* (ts, id) descending: negative when a comes first. */
static int newer_first(const soc_post *a, const soc_post *b)
{
    if (a->ts != b->ts)
        return a->ts > b->ts ? -1 : 1;
    return a == b ? 0 : -strcmp(a->id, b->id);
}

static soc_post **at(const soc_tl *t, size_t i)
{
    size_t k = t->head + i;
    return &t->e[k < t->cap ? k : k - t->cap];
}

/* The capacity a ring of capacity c grows to: by a quarter (at least 4), so short timelines
 * waste little (bytes per entry); never past cap + 1 (an insert into a full ring, then its
 * oldest falls off). */
static size_t ring_grown(size_t c, size_t cap)
{
    size_t nc = c + (c / 4 > 4 ? c / 4 : 4);
    return nc < cap + 1 ? nc : cap + 1;
}

static bool ring_resize(struct soc_tls *tab, tl_stripe *st, soc_tl *t, size_t nc)
{
    soc_post **v = ring_alloc(tab, st, nc, &nc);
    if (v == NULL)
        return false;
    for (size_t i = 0; i < t->n; i++)
        v[i] = *at(t, i);
    ring_free(tab, st, t->e, t->cap);
    st->bytes += (nc - t->cap) * sizeof *v;
    t->e = v;
    t->cap = (uint32_t)nc;
    t->head = 0;
    return true;
}

static bool pushed(const soc_tl *t, const soc_post *p)
{
    return soc_hset_has_hash(&t->following, p->author_h) &&
           (t->celebs.n == 0 || !soc_hset_has_hash(&t->celebs, p->author_h));
}

/* Places p (whose reference the ring then owns), newest first, capped; false when not placed
 * (there already, too old for a full ring, out of memory): the caller keeps its reference. */
static bool ring_insert(social_ctx *ctx, tl_stripe *st, soc_tl *t, soc_post *p)
{
    size_t lo = 0, hi = t->n;
    if (t->n > 0 && newer_first(p, *at(t, 0)) < 0)
        hi = 0; /* newer than everything: the front (the common case, no search) */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = newer_first(*at(t, mid), p);
        if (c == 0)
            return false; /* there already */
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t cap = ctx->timeline_cap ? ctx->timeline_cap : 800u;
    if (lo >= cap)
        return false;
    if (t->n == t->cap) {
        if (!ring_resize(ctx->timelines_table, st, t, ring_grown(t->cap, cap)))
            return false;
    }
    t->head = t->head == 0 ? t->cap - 1 : t->head - 1; /* one more slot in front */
    t->n++;
    for (size_t i = 0; i < lo; i++) /* the newer ones move up by one */
        *at(t, i) = *at(t, i + 1);
    *at(t, lo) = p;
    if (t->n > cap)
        soc_post_unref(ctx, *at(t, --t->n)); /* the oldest falls off */
    else
        st->entries++;
    return true;
}

/* Merges w[0..k) (newest first, references owned, all pushed) into t's ring in one pass, newest
 * `cap` kept, duplicates dropped; false when out of memory (nothing changed, w still owned). */
static bool ring_merge(social_ctx *ctx, tl_stripe *st, soc_tl *t, soc_post **w, size_t k,
                       size_t *placed)
{
    size_t cap = ctx->timeline_cap ? ctx->timeline_cap : 800u;
    size_t want = t->n + k < cap ? t->n + k : cap;
    size_t nc = t->cap;
    if (want > nc) { /* grown as ring_insert grows it, at least to what the merge needs */
        nc = ring_grown(t->cap, cap);
        if (nc < want)
            nc = want; /* (want <= cap) */
    }
    soc_post **v = ring_alloc(ctx->timelines_table, st, nc, &nc);
    if (v == NULL)
        return false;
    size_t i = 0, j = 0, n = 0, took = 0;
    while (n < cap && (i < t->n || j < k)) {
        int c = i == t->n ? 1 : j == k ? -1 : newer_first(*at(t, i), w[j]);
        if (c <= 0) {
            v[n++] = *at(t, i++);
            if (c == 0)
                soc_post_unref(ctx, w[j++]); /* there already */
        } else if (n == 0 || v[n - 1] != w[j]) {
            v[n++] = w[j++];
            took++;
        } else {
            soc_post_unref(ctx, w[j++]); /* twice in the list */
        }
    }
    for (; i < t->n; i++) /* too old for the cap */
        soc_post_unref(ctx, *at(t, i));
    for (; j < k; j++)
        soc_post_unref(ctx, w[j]);
    st->entries += n;
    st->entries -= t->n;
    st->bytes += nc * sizeof *v;
    st->bytes -= t->cap * sizeof *v;
    ring_free(ctx->timelines_table, st, t->e, t->cap);
    t->e = v;
    t->cap = (uint32_t)nc;
    t->head = 0;
    t->n = (uint32_t)n;
    *placed = took;
    return true;
}

static int cmp_newer_first(const void *a, const void *b)
{
    return newer_first(*(soc_post *const *)a, *(soc_post *const *)b);
}

/* The first entry older than the cursor (before_ts 0: the newest, 0) (lock held). */
static size_t below(const soc_tl *t, uint64_t before_ts, const char *before_id)
{
    soc_post cursor = {.ts = before_ts, .id = (char *)before_id};
    size_t lo = 0, hi = t->n;
    while (before_ts != 0 && lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (newer_first(*at(t, mid), &cursor) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void ring_drop_author(social_ctx *ctx, tl_stripe *st, soc_tl *t, uint64_t author_h)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        soc_post *p = *at(t, i);
        if (p->author_h == author_h)
            soc_post_unref(ctx, p);
        else
            *at(t, k++) = p;
    }
    st->entries -= t->n - k;
    t->n = (uint32_t)k;
}

/* ---- the owner's side ---------------------------------------------------------------------- */

static tl_stripe *stripe_of(social_ctx *ctx, const soc_tl *t)
{
    return &ctx->timelines_table->st[t->stripe];
}

soc_tl *soc_tl_open(social_ctx *ctx, const char *reader, tr_pid owner)
{
    struct soc_tls *tab = table(ctx);
    if (tab == NULL)
        return NULL;
    uint64_t h = key_of(soc_id_hash(reader, strlen(reader)));
    tl_stripe *st = &tab->st[h % TL_STRIPES];
    pthread_mutex_lock(&st->lock);
    soc_tl *t = record_alloc(tab, st);
    if (t == NULL) {
        pthread_mutex_unlock(&st->lock);
        return NULL;
    }
    t->reader_h = h;
    t->stripe = (uint32_t)(h % TL_STRIPES);
    t->owner = owner;
    tl_slot *s = slot_find(st, h);
    if (s != NULL) { /* an ending actor's record: this one replaces it */
        s->t->listed = false;
        s->t = t;
        t->listed = true;
    } else if (slot_room(st)) {
        size_t k = home(st, h);
        while (st->s[k].h != 0)
            k = (k + 1) & st->mask;
        st->s[k] = (tl_slot){.h = h, .t = t};
        st->n++;
        t->listed = true;
    } else {
        release_block(st, t, TL_RECORD);
        t = NULL;
    }
    pthread_mutex_unlock(&st->lock);
    return t;
}

void soc_tl_close(social_ctx *ctx, soc_tl *t)
{
    if (t == NULL)
        return;
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    if (t->listed) {
        tl_slot *s = slot_find(st, t->reader_h);
        if (s != NULL && s->t == t)
            slot_remove(st, (size_t)(s - st->s));
        t->listed = false;
    }
    st->entries -= t->n;
    st->bytes -= t->cap * sizeof *t->e;
    pthread_mutex_unlock(&st->lock);
    /* unreachable now: only this thread sees the record (its entries' last references, if they
     * are, free post records: not under the stripe's lock) */
    for (size_t i = 0; i < t->n; i++)
        soc_post_unref(ctx, *at(t, i));
    pthread_mutex_lock(&st->lock);
    ring_free(ctx->timelines_table, st, t->e, t->cap);
    tset_free(st, &t->following);
    tset_free(st, &t->celebs);
    release_block(st, t, TL_RECORD);
    pthread_mutex_unlock(&st->lock);
}

bool soc_tl_insert(social_ctx *ctx, soc_tl *t, soc_post *p)
{
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    bool ok = pushed(t, p) && ring_insert(ctx, st, t, p);
    pthread_mutex_unlock(&st->lock);
    if (!ok)
        soc_post_unref(ctx, p);
    return ok;
}

size_t soc_tl_merge(social_ctx *ctx, soc_tl *t, soc_post **v, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (newer_first(v[i - 1], v[i]) > 0) {
            qsort(v, n, sizeof *v, cmp_newer_first);
            break;
        }
    tl_stripe *st = stripe_of(ctx, t);
    size_t placed = 0;
    pthread_mutex_lock(&st->lock);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) /* those it takes, in order */
        if (pushed(t, v[i]))
            v[k++] = v[i];
        else
            soc_post_unref(ctx, v[i]);
    if (k > 0 && !ring_merge(ctx, st, t, v, k, &placed)) {
        for (size_t i = 0; i < k; i++) { /* out of memory: one at a time, as far as it goes */
            if (ring_insert(ctx, st, t, v[i]))
                placed++;
            else
                soc_post_unref(ctx, v[i]);
        }
    }
    pthread_mutex_unlock(&st->lock);
    return placed;
}

uint64_t soc_tl_floor(social_ctx *ctx, soc_tl *t)
{
    size_t cap = ctx->timeline_cap ? ctx->timeline_cap : 800u;
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    uint64_t floor = t->n >= cap ? (*at(t, t->n - 1))->ts : 0;
    pthread_mutex_unlock(&st->lock);
    return floor;
}

int soc_tl_follow(social_ctx *ctx, soc_tl *t, const char *who)
{
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    int rc = tset_add(ctx->timelines_table, st, &t->following, soc_id_hash(who, strlen(who)));
    pthread_mutex_unlock(&st->lock);
    return rc;
}

void soc_tl_unfollow(social_ctx *ctx, soc_tl *t, const char *who)
{
    uint64_t h = soc_id_hash(who, strlen(who));
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    tset_del(&t->following, h);
    tset_del(&t->celebs, h);
    ring_drop_author(ctx, st, t, h);
    pthread_mutex_unlock(&st->lock);
}

void soc_tl_celeb(social_ctx *ctx, soc_tl *t, const char *who, bool on)
{
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    uint64_t h = soc_id_hash(who, strlen(who));
    if (on) {
        if (tset_add(ctx->timelines_table, st, &t->celebs, h) >= 0)
            ring_drop_author(ctx, st, t, h);
    } else {
        tset_del(&t->celebs, h);
    }
    pthread_mutex_unlock(&st->lock);
}

size_t soc_tl_page(social_ctx *ctx, soc_tl *t, uint64_t before_ts, const char *before_id,
                   size_t max, soc_post **out, size_t *avail)
{
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    size_t lo = below(t, before_ts, before_id);
    size_t take = t->n - lo < max ? t->n - lo : max;
    for (size_t i = 0; i < take; i++) {
        out[i] = *at(t, lo + i);
        soc_post_ref(out[i]);
    }
    *avail = t->n - lo;
    pthread_mutex_unlock(&st->lock);
    return take;
}

void soc_tl_servable(social_ctx *ctx, soc_tl *t, bool on)
{
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    t->servable = on;
    pthread_mutex_unlock(&st->lock);
}

bool social_timeline_read(social_ctx *ctx, const char *reader, uint64_t before_ts,
                          const char *before_id, size_t limit, social_page_fn fn, void *arg)
{
    struct soc_tls *tab = ctx != NULL ? __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE)
                                      : NULL;
    if (tab == NULL || reader == NULL || before_id == NULL || fn == NULL)
        return false;
    if (limit == 0 || limit > SOCIAL_PAGE_MAX)
        limit = SOCIAL_PAGE_MAX;
    social_post_view v[SOCIAL_PAGE_MAX];
    uint64_t h = key_of(soc_id_hash(reader, strlen(reader)));
    uint64_t now_ms = social_now_us() / 1000;
    tl_stripe *st = &tab->st[h % TL_STRIPES];
    tr_pid touch = TR_PID_NONE;
    pthread_mutex_lock(&st->lock);
    tl_slot *s = slot_find(st, h);
    soc_tl *t = s != NULL ? s->t : NULL;
    if (t == NULL || !t->servable) {
        pthread_mutex_unlock(&st->lock);
        return false;
    }
    size_t lo = below(t, before_ts, before_id);
    size_t avail = t->n - lo, n = avail < limit ? avail : limit;
    for (size_t i = 0; i < n; i++) {
        const soc_post *p = *at(t, lo + i);
        v[i] = (social_post_view){.id = p->id, .author = p->author, .url = p->url, .ts = p->ts,
                                  .json = p->json, .json_len = p->json_len};
    }
    fn(arg, v, n, avail > limit);
    if (now_ms - t->touched_ms >= 1000) { /* read: not idle (the shard passivates idle ones) */
        t->touched_ms = now_ms;
        touch = t->owner;
    }
    pthread_mutex_unlock(&st->lock);
    if (touch != TR_PID_NONE && ctx->sys != NULL) {
        tr_msg *m = tr_msg_new(SOC_T_TOUCH, 0);
        if (m != NULL)
            (void)tr_system_send(ctx->sys, touch, m); /* gone meanwhile: nothing to keep */
    }
    return true;
}

size_t soc_tl_count(social_ctx *ctx, soc_tl *t)
{
    tl_stripe *st = stripe_of(ctx, t);
    pthread_mutex_lock(&st->lock);
    size_t n = t->n;
    pthread_mutex_unlock(&st->lock);
    return n;
}

/* ---- the fan-out's side -------------------------------------------------------------------- */

/* Inserts p into the running timelines of readers[0..n), n <= FANOUT_BATCH (a reference per
 * reader taken by the caller); returns how many placed it.
 *
 * A million running timelines do not fit the caches: each insert touches its slot, its record,
 * its follow set and its ring's front, four lines of memory that are each a miss, and taken one
 * reader at a time those misses queue behind each other. So a batch's stripes are locked first,
 * and each level of lines is asked for (prefetched) for the whole batch before the next level
 * reads it: the misses of the batch overlap instead of adding up.
 *
 * A stripe another thread holds is not waited for: the batch takes its stripes with trylock and
 * leaves the readers of a busy one for later — after the call's other batches, or once
 * FANOUT_LATER of them wait — each then placed alone, its stripe locked and let go (no thread
 * waits for a stripe while holding another, so no deadlock). Two workers fanning out batches of
 * 16 of the 1,024 stripes at once can meet on one in a batch in four; waiting there, holding up
 * to 15 others, was a futex sleep and wake-up each (slow on a VM: strace counted ~37,000 waits
 * in timelines-bench's 10,000 posts) with the other worker then waiting in turn. That was half
 * the CPU of an insertion, and two threads were slower than one (3.0-3.5 M insertions/s against
 * 4.0-4.9 M; 6.8-7.0 M with two threads since). A page read holding its stripe while it writes
 * JSON delays only its reader's insert, not the fan-out's page. */
#define FANOUT_BATCH 16u
#define FANOUT_LATER 256u

/* Places p in the timelines of readers in busy stripes left for later, one at a time. */
static size_t fanout_later(social_ctx *ctx, struct soc_tls *tab, soc_post *p,
                           const uint64_t *later, size_t n)
{
    size_t placed = 0;
    for (size_t i = 0; i < n; i++) {
        tl_stripe *st = &tab->st[later[i] % TL_STRIPES];
        pthread_mutex_lock(&st->lock);
        tl_slot *s = slot_find(st, later[i]);
        if (s != NULL && pushed(s->t, p) && ring_insert(ctx, st, s->t, p))
            placed++;
        pthread_mutex_unlock(&st->lock);
    }
    return placed;
}

/* One batch (n <= FANOUT_BATCH); the readers of busy stripes are appended to later (*nlater
 * of them there already, room for FANOUT_BATCH more). */
static size_t fanout_batch(social_ctx *ctx, struct soc_tls *tab, soc_post *p,
                           const uint64_t *readers, size_t n, uint64_t *later, size_t *nlater)
{
    uint64_t hs[FANOUT_BATCH];
    tl_stripe *sts[FANOUT_BATCH];
    soc_tl *ts[FANOUT_BATCH];
    size_t m = 0, nl = *nlater;
    uint64_t busy = UINT64_MAX; /* the last stripe found held by another thread */
    for (size_t i = 0; i < n; i++) { /* in stripe order (insertion sort: n is small) */
        uint64_t h = key_of(readers[i]);
        size_t k = i;
        while (k > 0 && hs[k - 1] % TL_STRIPES > h % TL_STRIPES) {
            hs[k] = hs[k - 1];
            k--;
        }
        hs[k] = h;
    }
    tl_stripe *held = NULL; /* the last stripe locked */
    for (size_t i = 0; i < n; i++) { /* the stripes free now; the others' readers for later */
        uint64_t k = hs[i] % TL_STRIPES;
        tl_stripe *st = &tab->st[k];
        if (st != held) {
            if (k == busy || pthread_mutex_trylock(&st->lock) != 0) {
                busy = k;
                later[nl++] = hs[i];
                continue;
            }
            held = st;
        }
        sts[m] = st;
        hs[m++] = hs[i];
    }
    *nlater = nl;
    for (size_t i = 0; i < m; i++) /* the slots */
        if (sts[i]->s != NULL)
            __builtin_prefetch(&sts[i]->s[home(sts[i], hs[i])]);
    for (size_t i = 0; i < m; i++) { /* the records */
        tl_slot *s = slot_find(sts[i], hs[i]);
        ts[i] = s != NULL ? s->t : NULL;
        if (ts[i] != NULL)
            __builtin_prefetch(ts[i]);
    }
    for (size_t i = 0; i < m; i++) { /* their follow sets and the rings' fronts */
        soc_tl *t = ts[i];
        if (t == NULL)
            continue;
        if (t->following.n > 0) { /* (16-byte aligned: ten hashes may span three lines) */
            __builtin_prefetch(t->following.v);
            __builtin_prefetch(t->following.v + t->following.n - 1);
        }
        if (t->following.n > 8)
            __builtin_prefetch(t->following.v + 8);
        if (t->e != NULL)
            __builtin_prefetch(&t->e[t->head > 0 ? t->head - 1 : t->cap - 1], 1);
    }
    size_t placed = 0;
    for (size_t i = 0; i < m; i++)
        if (ts[i] != NULL && pushed(ts[i], p) && ring_insert(ctx, sts[i], ts[i], p))
            placed++;
    for (size_t i = m; i-- > 0;)
        if (i == 0 || sts[i] != sts[i - 1])
            pthread_mutex_unlock(&sts[i]->lock);
    return placed;
}

size_t soc_tl_fanout(social_ctx *ctx, soc_post *p, const uint64_t *readers, size_t n)
{
    struct soc_tls *tab = __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE);
    if (tab == NULL || n == 0)
        return 0; /* no timeline ever ran here */
    /* a reference per possible insert, up front: a post placed in a ring may leave it (an
     * unfollow, a closing timeline) before this loop ends */
    atomic_fetch_add_explicit(&p->refs, (uint32_t)n, memory_order_relaxed);
    uint64_t later[FANOUT_LATER];
    size_t placed = 0, nl = 0;
    for (size_t i = 0; i < n; i += FANOUT_BATCH) {
        if (nl > FANOUT_LATER - FANOUT_BATCH) {
            placed += fanout_later(ctx, tab, p, later, nl);
            nl = 0;
        }
        placed += fanout_batch(ctx, tab, p, readers + i,
                               n - i < FANOUT_BATCH ? n - i : FANOUT_BATCH, later, &nl);
    }
    placed += fanout_later(ctx, tab, p, later, nl);
    if (placed < n) /* the caller's own reference keeps the count above zero */
        atomic_fetch_sub_explicit(&p->refs, (uint32_t)(n - placed), memory_order_release);
    return placed;
}

bool soc_tl_owner(social_ctx *ctx, const char *reader, tr_pid *owner)
{
    struct soc_tls *tab = __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE);
    if (tab == NULL)
        return false;
    uint64_t h = key_of(soc_id_hash(reader, strlen(reader)));
    tl_stripe *st = &tab->st[h % TL_STRIPES];
    pthread_mutex_lock(&st->lock);
    tl_slot *s = slot_find(st, h);
    if (s != NULL)
        *owner = s->t->owner;
    pthread_mutex_unlock(&st->lock);
    return s != NULL;
}

/* ---- the node's view ----------------------------------------------------------------------- */

void social_timeline_memory(social_ctx *ctx, uint64_t *timelines, uint64_t *entries,
                            uint64_t *bytes)
{
    uint64_t t = 0, e = 0, b = 0;
    struct soc_tls *tab = ctx != NULL ? __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE)
                                      : NULL;
    for (unsigned i = 0; tab != NULL && i < TL_STRIPES; i++) {
        tl_stripe *st = &tab->st[i];
        pthread_mutex_lock(&st->lock);
        t += st->n;
        e += st->entries;
        b += st->bytes;
        pthread_mutex_unlock(&st->lock);
    }
    if (timelines != NULL)
        *timelines = t;
    if (entries != NULL)
        *entries = e;
    if (bytes != NULL)
        *bytes = b;
}

uint64_t social_timeline_table_bytes(social_ctx *ctx)
{
    struct soc_tls *tab = ctx != NULL ? __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE)
                                      : NULL;
    if (tab == NULL)
        return 0;
    uint64_t b = sizeof *tab;
    for (unsigned i = 0; i < TL_STRIPES; i++) {
        tl_stripe *st = &tab->st[i];
        pthread_mutex_lock(&st->lock);
        b += st->heap + (st->s != NULL ? (st->mask + 1) * sizeof *st->s : 0);
        pthread_mutex_unlock(&st->lock);
    }
    pthread_mutex_lock(&tab->mem_lock);
    b += (uint64_t)tab->nchunks * TL_CHUNK;
    pthread_mutex_unlock(&tab->mem_lock);
    return b;
}

void soc_tls_free(social_ctx *ctx)
{
    struct soc_tls *tab = __atomic_load_n(&ctx->timelines_table, __ATOMIC_ACQUIRE);
    if (tab == NULL)
        return;
    for (unsigned i = 0; i < TL_STRIPES; i++) {
        free(tab->st[i].s); /* every timeline closed with its actor */
        pthread_mutex_destroy(&tab->st[i].lock);
    }
    for (size_t i = 0; i < tab->nchunks; i++) {
        TL_UNROOT(tab->chunks[i], TL_CHUNK);
        TL_UNPOISON(tab->chunks[i], TL_CHUNK);
        munmap(tab->chunks[i], TL_CHUNK);
    }
    free(tab->chunks);
    pthread_mutex_destroy(&tab->mem_lock);
    free(tab);
    ctx->timelines_table = NULL;
}
