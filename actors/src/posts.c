/*
 * posts.c — the node's post records (social_impl.h): one reference-counted record per post,
 * shared by every timeline of the node that holds the post, found by id in a striped hash table.
 *
 * Why interned: a post fanned out to 10,000 timelines is one record either way, but timelines
 * rebuilt at start (or merging a new follow) read the posts from the post actors; without the
 * table each such read made records of its own (social-load's 10,000-user run: 3.5 M records for
 * 104,000 posts). With it, a record exists once per node while any timeline holds its post.
 *
 * Concurrency: lookups and the last reference's removal happen under the stripe's lock; a
 * reference that is not the last is dropped with a compare-and-swap. So a record is never found
 * after its count reached zero, and never freed while found: the count goes from 1 to 0 only
 * under the lock that lookups take.
 */
#include "social_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <troupe/json.h>

#define STRIPES 64u

typedef struct stripe {
    pthread_mutex_t lock;
    soc_post **b;
    size_t nb, n;
} stripe;

struct soc_posts {
    stripe s[STRIPES];
};

static struct soc_posts *table(social_ctx *ctx)
{
    struct soc_posts *t = __atomic_load_n(&ctx->posts_table, __ATOMIC_ACQUIRE);
    if (t != NULL)
        return t;
    struct soc_posts *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    for (unsigned i = 0; i < STRIPES; i++)
        pthread_mutex_init(&n->s[i].lock, NULL);
    if (__atomic_compare_exchange_n(&ctx->posts_table, &t, n, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return n;
    for (unsigned i = 0; i < STRIPES; i++) /* another thread made it first */
        pthread_mutex_destroy(&n->s[i].lock);
    free(n);
    return t;
}

/* Doubles the stripe's buckets (lock held); false when out of memory (the chains grow). */
static void grow(stripe *s)
{
    size_t nb = s->nb ? s->nb * 2 : 64;
    soc_post **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return;
    for (size_t i = 0; i < s->nb; i++)
        for (soc_post *p = s->b[i], *next; p != NULL; p = next) {
            next = p->hnext;
            size_t k = (p->hash / STRIPES) & (nb - 1);
            p->hnext = b[k];
            b[k] = p;
        }
    free(s->b);
    s->b = b;
    s->nb = nb;
}

/* The record of id in s with a reference taken, or NULL (lock held). */
static soc_post *lookup(stripe *s, uint64_t h, const char *id, size_t il)
{
    if (s->nb > 0)
        for (soc_post *p = s->b[(h / STRIPES) & (s->nb - 1)]; p != NULL; p = p->hnext)
            if (p->hash == h && strncmp(p->id, id, il) == 0 && p->id[il] == '\0') {
                atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
                return p;
            }
    return NULL;
}

soc_post *soc_post_new(social_ctx *ctx, const char *id, size_t il, const char *author,
                       size_t al, const char *url, size_t ul, uint64_t ts)
{
    struct soc_posts *t = table(ctx);
    if (t == NULL)
        return NULL;
    uint64_t h = soc_id_hash(id, il);
    stripe *s = &t->s[h % STRIPES];
    pthread_mutex_lock(&s->lock);
    soc_post *found = lookup(s, h, id, il);
    if (found != NULL) {
        pthread_mutex_unlock(&s->lock);
        return found;
    }
    if (s->n >= s->nb)
        grow(s);
    /* the post as the API shows it, written once: a timeline page is then these copied */
    size_t cap = 6 * (il + al + ul) + 96, jl = 0;
    char *js = s->nb > 0 ? malloc(cap) : NULL;
    if (js != NULL) {
        size_t k;
        jl = (size_t)snprintf(js, cap, "{\"id\":");
        jl += (k = tr_json_escape(js + jl, cap - jl, id, il));
        bool ok = k > 0;
        jl += (size_t)snprintf(js + jl, cap - jl, ",\"user\":");
        jl += (k = tr_json_escape(js + jl, cap - jl, author, al));
        ok = ok && k > 0;
        jl += (size_t)snprintf(js + jl, cap - jl, ",\"image_url\":");
        jl += (k = tr_json_escape(js + jl, cap - jl, url, ul));
        ok = ok && k > 0;
        jl += (size_t)snprintf(js + jl, cap - jl, ",\"ts\":%llu}", (unsigned long long)ts);
        if (!ok || jl >= cap) {
            free(js);
            js = NULL;
        }
    }
    soc_post *p = js != NULL ? malloc(sizeof *p + il + al + ul + jl + 4) : NULL;
    if (p == NULL) {
        free(js);
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    atomic_init(&p->refs, 1);
    p->stripe = (uint32_t)(h % STRIPES);
    p->hash = h;
    p->ts = ts;
    p->id = (char *)(p + 1);
    p->author = p->id + il + 1;
    p->url = p->author + al + 1;
    memcpy(p->id, id, il);
    p->id[il] = '\0';
    memcpy(p->author, author, al);
    p->author[al] = '\0';
    p->author_h = soc_id_hash(p->author, al);
    memcpy(p->url, url, ul);
    p->url[ul] = '\0';
    p->json = p->url + ul + 1;
    memcpy(p->json, js, jl + 1);
    p->json_len = (uint32_t)jl;
    free(js);
    size_t k = (h / STRIPES) & (s->nb - 1);
    p->hnext = s->b[k];
    s->b[k] = p;
    s->n++;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add_explicit(&ctx->stats.post_records, 1, memory_order_relaxed);
    return p;
}

soc_post *soc_post_find(social_ctx *ctx, const char *id, size_t il)
{
    struct soc_posts *t = __atomic_load_n(&ctx->posts_table, __ATOMIC_ACQUIRE);
    if (t == NULL)
        return NULL;
    uint64_t h = soc_id_hash(id, il);
    stripe *s = &t->s[h % STRIPES];
    pthread_mutex_lock(&s->lock);
    soc_post *found = lookup(s, h, id, il);
    pthread_mutex_unlock(&s->lock);
    return found;
}

void soc_post_ref(soc_post *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void soc_post_unref(social_ctx *ctx, soc_post *p)
{
    if (p == NULL)
        return;
    uint32_t r = atomic_load_explicit(&p->refs, memory_order_relaxed);
    while (r > 1) /* not the last: no lock */
        if (atomic_compare_exchange_weak_explicit(&p->refs, &r, r - 1, memory_order_release,
                                                  memory_order_relaxed))
            return;
    struct soc_posts *t = __atomic_load_n(&ctx->posts_table, __ATOMIC_ACQUIRE);
    stripe *s = &t->s[p->stripe];
    pthread_mutex_lock(&s->lock);
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) {
        pthread_mutex_unlock(&s->lock); /* found again meanwhile */
        return;
    }
    soc_post **pp = &s->b[(p->hash / STRIPES) & (s->nb - 1)];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    s->n--;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_sub_explicit(&ctx->stats.post_records, 1, memory_order_relaxed);
    free(p);
}

void social_ctx_free(social_ctx *ctx)
{
    if (ctx != NULL)
        soc_tls_free(ctx);
    struct soc_posts *t = ctx != NULL ? __atomic_load_n(&ctx->posts_table, __ATOMIC_ACQUIRE) : NULL;
    if (t == NULL)
        return;
    for (unsigned i = 0; i < STRIPES; i++) {
        stripe *s = &t->s[i];
        for (size_t k = 0; k < s->nb; k++) /* records still referenced: nobody is left to */
            for (soc_post *p = s->b[k], *next; p != NULL; p = next) {
                next = p->hnext;
                free(p);
            }
        free(s->b);
        pthread_mutex_destroy(&s->lock);
    }
    free(t);
    ctx->posts_table = NULL;
}
