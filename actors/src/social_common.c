/*
 * social_common.c — what the social actors share: ids, the input rules, lag histograms, the
 * shard start argument, and the packing helpers of social_impl.h.
 */
#include "social_impl.h"

#include <utf8proc.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t social_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int social_shard_arg(void *user, const char *key, void *arg)
{
    *(social_arg *)arg = (social_arg){.ctx = user, .key = key};
    return 0;
}

int social_shards_start(tr_system *sys, social_ctx *ctx, tr_node *node, size_t max_keys,
                        unsigned idle_ms)
{
    const struct {
        const char *name;
        const tr_behaviour *b;
        tr_shard **out;
    } shards[] = {{"social-users", &social_user_behaviour, &ctx->users},
                  {"social-posts", &social_post_behaviour, &ctx->posts},
                  {"social-timelines", &social_timeline_behaviour, &ctx->timelines}};
    ctx->sys = sys;
    ctx->node = node;
    for (size_t i = 0; i < sizeof shards / sizeof shards[0]; i++) {
        tr_shard_opts o = {.name = shards[i].name, .behaviour = shards[i].b,
                           .init_arg = social_shard_arg, .arg_size = sizeof(social_arg),
                           .user = ctx, .node = node, .max_keys = max_keys, .idle_ms = idle_ms};
        int rc = tr_shard_start(sys, &o, shards[i].out);
        if (rc != TR_OK)
            return rc;
    }
    return TR_OK;
}

void social_shards_free(social_ctx *ctx)
{
    tr_shard_free(ctx->users);
    tr_shard_free(ctx->posts);
    tr_shard_free(ctx->timelines);
    ctx->users = ctx->posts = ctx->timelines = NULL;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void social_user_id(const char *username, size_t len, char out[SOCIAL_ID_MAX + 1])
{
    /* two independent 64-bit hashes of the folded name, 96 bits of them in hex: ids of a
     * million users collide with odds of about 10^-17 */
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)username[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        a = (a ^ c) * 0x100000001b3ULL;
        b = mix64(b ^ c);
    }
    a = mix64(a ^ len);
    snprintf(out, SOCIAL_ID_MAX + 1, "u%016llx%08llx", (unsigned long long)a,
             (unsigned long long)(b >> 32));
}

bool social_username_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > SOCIAL_USERNAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

bool social_id_valid(const char *s, size_t len)
{
    if (s == NULL || len != 25 || s[0] != 'u')
        return false;
    for (size_t i = 1; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Counts the characters of valid UTF-8 (libutf8proc decides: no overlong forms, surrogates or
 * values above U+10FFFF), with no control characters; -1 when invalid. */
static long utf8_chars(const unsigned char *p, size_t len)
{
    long n = 0;
    for (size_t i = 0; i < len; n++) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
            return -1;
        i += (size_t)k;
    }
    return n;
}

bool social_name_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > SOCIAL_NAME_MAX)
        return false;
    long n = utf8_chars((const unsigned char *)s, len);
    return n >= 1 && n <= (long)SOCIAL_NAME_CHARS;
}

bool social_url_valid(const char *s, size_t len)
{
    if (s == NULL || len > SOCIAL_URL_MAX)
        return false;
    size_t pre;
    if (len > 7 && strncmp(s, "http://", 7) == 0)
        pre = 7;
    else if (len > 8 && strncmp(s, "https://", 8) == 0)
        pre = 8;
    else
        return false;
    if (s[pre] == '/' || s[pre] == '\0')
        return false; /* a host is needed */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>')
            return false;
    }
    return true;
}

/* The upper bound (µs) of bucket i: four buckets per power of two from 16 µs. */
static uint64_t lag_bound(unsigned i)
{
    uint64_t base = 16ull << (i / 4);
    return base + base * (i % 4 + 1) / 4;
}

void social_lag_add(social_lag *l, uint64_t us)
{
    unsigned b = 0;
    while (b + 1 < SOCIAL_LAG_BUCKETS && us >= lag_bound(b))
        b++;
    atomic_fetch_add_explicit(&l->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->n, 1, memory_order_relaxed);
}

uint64_t social_lag_quantile(const social_lag *l, double q)
{
    uint64_t n = atomic_load_explicit(&l->n, memory_order_relaxed);
    if (n == 0)
        return 0;
    uint64_t want = (uint64_t)((double)n * q), seen = 0;
    if (want >= n)
        want = n - 1;
    for (unsigned b = 0; b < SOCIAL_LAG_BUCKETS; b++) {
        seen += atomic_load_explicit(&l->bucket[b], memory_order_relaxed);
        if (seen > want)
            return lag_bound(b);
    }
    return lag_bound(SOCIAL_LAG_BUCKETS - 1);
}

/* ---- social_impl.h ------------------------------------------------------------------------- */

tr_msg *soc_reply(uint32_t type, uint64_t status)
{
    tr_msg *m = tr_msg_new(type, 64);
    if (m != NULL && tr_msg_put_u64(m, status) != TR_OK) {
        tr_msg_free(m);
        return NULL;
    }
    return m;
}

int soc_read_strz(tr_reader *r, char *out, size_t cap)
{
    const char *s;
    size_t n;
    int rc = tr_read_str(r, &s, &n);
    if (rc != TR_OK)
        return rc;
    if (n >= cap)
        return TR_ETOOBIG;
    memcpy(out, s, n);
    out[n] = '\0';
    return TR_OK;
}

int soc_put_strz(tr_msg *m, const char *s)
{
    return tr_msg_put_str(m, s, strlen(s));
}

/* ---- sorted string sets -------------------------------------------------------------------- */

static size_t set_pos(const soc_set *s, const char *k, bool *found)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->v[mid], k);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

bool soc_set_has(const soc_set *s, const char *k)
{
    bool f;
    set_pos(s, k, &f);
    return f;
}

int soc_set_add(soc_set *s, const char *k)
{
    bool f;
    size_t i = set_pos(s, k, &f);
    if (f)
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        char **v = realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            return TR_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    char *d = strdup(k);
    if (d == NULL)
        return TR_ENOMEM;
    memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof *s->v);
    s->v[i] = d;
    s->n++;
    return 1;
}

bool soc_set_del(soc_set *s, const char *k)
{
    bool f;
    size_t i = set_pos(s, k, &f);
    if (!f)
        return false;
    free(s->v[i]);
    memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof *s->v);
    s->n--;
    return true;
}

void soc_set_free(soc_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    *s = (soc_set){0};
}

/* ---- hashed id sets ------------------------------------------------------------------------ */

uint64_t soc_id_hash(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 0x100000001b3ULL;
    return mix64(h);
}

size_t soc_hset_pos(const soc_hset *s, uint64_t h, bool *found)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->v[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < s->n && s->v[lo] == h;
    return lo;
}

bool soc_hset_has(const soc_hset *s, const char *k)
{
    return soc_hset_has_hash(s, soc_id_hash(k, strlen(k)));
}

bool soc_hset_has_hash(const soc_hset *s, uint64_t h)
{
    /* the fan-out asks this once per insert: no branch that depends on the data (a binary
     * search's mispredicted halvings were 16% of the fan-out) */
    const uint64_t *v = s->v;
    size_t n = s->n;
    if (n <= 32) {
        bool f = false;
        for (size_t i = 0; i < n; i++)
            f |= v[i] == h;
        return f;
    }
    while (n > 1) { /* lower bound, the halving done with a conditional move */
        size_t half = n / 2;
        v = v[half - 1] < h ? v + half : v;
        n -= half;
    }
    return *v == h;
}

int soc_hset_add(soc_hset *s, const char *k)
{
    uint64_t h = soc_id_hash(k, strlen(k));
    bool f;
    size_t i = soc_hset_pos(s, h, &f);
    if (f)
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        uint64_t *v = realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            return TR_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof *s->v);
    s->v[i] = h;
    s->n++;
    return 1;
}

bool soc_hset_del(soc_hset *s, const char *k)
{
    bool f;
    size_t i = soc_hset_pos(s, soc_id_hash(k, strlen(k)), &f);
    if (!f)
        return false;
    memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof *s->v);
    s->n--;
    return true;
}

void soc_hset_free(soc_hset *s)
{
    free(s->v);
    *s = (soc_hset){0};
}
