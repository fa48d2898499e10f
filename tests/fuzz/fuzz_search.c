/*
 * fuzz_search.c — libFuzzer harness for the search read model's core (actors/search_index.h):
 * what users put in their usernames and names (through POST /users and PATCH) and what anyone
 * sends to GET /search. The input is a script of operations on one index — add or rename users
 * (any bytes: invalid UTF-8 and over-long fields must be refused, not stored), add images
 * (duplicates, old and new), and queries — and every answer is checked: at most `limit` hits, each
 * with at most `images` images in newest-first order, a tier of 0, 1 or 2, tiers never
 * decreasing, and every string present.
 */
#include "actors/search_index.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct in {
    const uint8_t *p;
    size_t n;
} in;

static unsigned byte(in *s)
{
    if (s->n == 0)
        return 0;
    s->n--;
    return *s->p++;
}

/* The next k bytes (fewer at the end) as a NUL-terminated copy in buf (cap bytes). */
static size_t take(in *s, size_t k, char *buf, size_t cap)
{
    if (k > s->n)
        k = s->n;
    if (k >= cap)
        k = cap - 1;
    memcpy(buf, s->p, k);
    buf[k] = '\0';
    s->p += k;
    s->n -= k;
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    search_index *ix = search_index_new(3);
    if (ix == NULL)
        return 0;
    search_hit hits[64];
    in s = {data, size};
    char a[512], b[512], c[2100];
    unsigned steps = 0;
    while (s.n > 0 && steps++ < 400) {
        unsigned op = byte(&s) % 3;
        if (op == 0) { /* a user, new or renamed */
            char id[8] = {'u', (char)('a' + byte(&s) % 16), '\0'};
            take(&s, byte(&s) % 48, a, sizeof a);
            take(&s, byte(&s) % 160, b, sizeof b);
            (void)search_index_put_user(ix, id, a, b);
        } else if (op == 1) { /* an image */
            char id[8] = {'u', (char)('a' + byte(&s) % 16), '\0'};
            char post[16];
            take(&s, byte(&s) % 12, post, sizeof post);
            take(&s, byte(&s) % 64, c, sizeof c);
            uint64_t ts = byte(&s) % 8;
            (void)search_index_add_image(ix, id, post[0] ? post : "p", c, ts);
        } else { /* a query */
            size_t ql = take(&s, byte(&s) % 130, a, sizeof a);
            unsigned limit = byte(&s) % 64, images = byte(&s) % 6;
            size_t n = 99;
            if (search_index_query(ix, a, ql, limit, images, hits, &n) != 0)
                continue;
            if (n > limit)
                abort();
            int tier = 0;
            for (size_t i = 0; i < n; i++) {
                const search_hit *h = &hits[i];
                if (h->id == NULL || h->username == NULL || h->name == NULL || h->tier < tier ||
                    h->tier > 2 || h->nimages > images)
                    abort();
                tier = h->tier;
                for (size_t k = 0; k < h->nimages; k++)
                    if (h->images[k].id == NULL || h->images[k].url == NULL ||
                        (k > 0 && h->images[k].ts > h->images[k - 1].ts))
                        abort();
            }
        }
    }
    (void)search_index_users(ix);
    (void)search_index_bytes(ix);
    search_index_free(ix);
    return 0;
}
