/*
 * idmap.c — uint64 -> uint64 hash map used for pending requests and timers (see idmap.h).
 */
#include "idmap.h"

#include <stdlib.h>

void tr__idmap_init(tr_idmap *m)
{
    m->keys = NULL;
    m->vals = NULL;
    m->cap = 0;
    m->len = 0;
}

void tr__idmap_free(tr_idmap *m)
{
    free(m->keys);
    free(m->vals);
    tr__idmap_init(m);
}

/* Rehashes into a table of ncap slots (a power of two that holds len at load <= 1/2). */
static int resize(tr_idmap *m, size_t ncap)
{
    uint64_t *nk = calloc(ncap, sizeof *nk);
    uint64_t *nv = malloc(ncap * sizeof *nv);
    if (nk == NULL || nv == NULL) {
        free(nk);
        free(nv);
        return TR_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == 0)
            continue;
        size_t j = tr__id_slot(m->keys[i], ncap);
        while (nk[j] != 0)
            j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    return TR_OK;
}

static int grow(tr_idmap *m)
{
    return resize(m, m->cap ? m->cap * 2 : 8);
}

void tr__idmap_shrink(tr_idmap *m)
{
    if (m->cap <= 8 || m->len * 16 > m->cap)
        return;
    if (m->len == 0) {
        tr__idmap_free(m);
        return;
    }
    size_t ncap = 8;
    while (ncap < m->len * 4)
        ncap *= 2;
    (void)resize(m, ncap); /* out of memory: the larger table stays, still correct */
}

int tr__idmap_put(tr_idmap *m, uint64_t key, uint64_t val)
{
    if (key == 0)
        return TR_EINVAL;
    if ((m->len + 1) * 2 > m->cap && grow(m) != TR_OK)
        return TR_ENOMEM;
    TR_ASSERT(m->cap != 0 && (m->cap & (m->cap - 1)) == 0 && m->len < m->cap / 2 + 1);
    size_t i = tr__id_slot(key, m->cap);
    while (m->keys[i] != 0 && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (m->keys[i] == 0)
        m->len++;
    m->keys[i] = key;
    m->vals[i] = val;
    return TR_OK;
}

static bool find(const tr_idmap *m, uint64_t key, size_t *at)
{
    if (m->cap == 0 || key == 0)
        return false;
    size_t i = tr__id_slot(key, m->cap);
    while (m->keys[i] != 0) {
        if (m->keys[i] == key) {
            *at = i;
            return true;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return false;
}

bool tr__idmap_get(const tr_idmap *m, uint64_t key, uint64_t *val)
{
    size_t i;
    if (!find(m, key, &i))
        return false;
    if (val != NULL)
        *val = m->vals[i];
    return true;
}

bool tr__idmap_del(tr_idmap *m, uint64_t key, uint64_t *val)
{
    size_t i;
    if (!find(m, key, &i))
        return false;
    if (val != NULL)
        *val = m->vals[i];
    /* backward-shift: pull later members of the probe run into the hole */
    size_t mask = m->cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->keys[j] == 0)
            break;
        size_t home = tr__id_slot(m->keys[j], m->cap);
        /* move j into i if its home is not cyclically in (i, j] */
        bool in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->len--;
    return true;
}
