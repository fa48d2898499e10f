/*
 * metrics.c — the metrics registry and the Prometheus text writer (troupe/metrics.h).
 *
 * A registry holds families (a name, its help, type, label names and buckets) in registration
 * order, each with its series; a series is found by a hash of its name and its label pairs as
 * they are written out (escaped once, at registration, never at render). Series are never freed
 * before the registry, so their handles stay valid and updates need no lock: a counter is an
 * atomic add, a gauge a CAS on the bits of a double, a histogram an atomic add on its bucket and
 * a CAS on its sum. A render takes the lock, writes every series, then runs the collectors,
 * which write their families through the same writer (tr_metrics_out_*).
 */
#include "troupe/metrics.h"
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES_DEFAULT 4096u
#define HASH_BUCKETS 1024u
#define LABELS_TEXT_MAX 4096u
#define COLLECTORS_MAX 64u

static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                        0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                        1,      2.5,     5,      10};

typedef struct family {
    char *name;
    char *help;
    tr_metric_type type;
    size_t nlabels;
    char *label_names[TR_METRICS_LABELS_MAX];
    double bounds[TR_METRICS_BUCKETS_MAX];
    size_t nbounds;
    tr_metric *first, *last;
    struct family *next;        /* registration order */
} family;

struct tr_metric {
    family *f;
    char *labels;               /* `a="x",b="y"` as written (escaped); "" without labels */
    uint64_t hash;
    tr_metric *next;            /* in its family */
    tr_metric *hnext;           /* in the registry's hash chain */
    _Atomic uint64_t u;         /* counter: the count; gauge, histogram: a double's bits (value, sum) */
    _Atomic uint64_t *buckets;  /* histogram: nbounds + 1 counts, not cumulative */
};

typedef struct collector {
    tr_metrics_collect_fn fn;
    void *user;
} collector;

struct tr_metrics {
    _Atomic long refs;          /* its owner's, plus tr__metrics_hold's */
    pthread_mutex_t lock;
    size_t max_series, nseries;
    _Atomic uint64_t refused;   /* registrations refused: max_series reached */
    family *first, *last;
    tr_metric *hash[HASH_BUCKETS];
    collector collectors[COLLECTORS_MAX];
    size_t ncollectors;
};

/* ---- the text buffer and the writer ------------------------------------------------------- */

struct tr_metrics_out {
    char *p;
    size_t len, cap;
    bool oom;
    /* the family being written by a collector */
    char name[256];
    tr_metric_type type;
    bool skip;                  /* its name was bad: its samples are dropped */
};

static void out_reserve(tr_metrics_out *o, size_t more)
{
    if (o->oom || o->len + more + 1 <= o->cap)
        return;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + more + 1)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (p == NULL) {
        o->oom = true;
        return;
    }
    o->p = p;
    o->cap = cap;
}

static void out_put(tr_metrics_out *o, const char *s, size_t n)
{
    out_reserve(o, n);
    if (o->oom)
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(tr_metrics_out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

/* A value as the format writes it: NaN, +Inf, -Inf, an integer when it is one (below 2^53),
 * else the shortest %g that reads back the same. */
static size_t fmt_double(char *buf, size_t cap, double v)
{
    if (isnan(v))
        return (size_t)snprintf(buf, cap, "NaN");
    if (isinf(v))
        return (size_t)snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(int64_t)v)
        return (size_t)snprintf(buf, cap, "%" PRId64, (int64_t)v); /* and no "-0" */
    for (int prec = 15; prec < 17; prec++) {
        int n = snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return (size_t)n;
    }
    return (size_t)snprintf(buf, cap, "%.17g", v);
}

static void out_double(tr_metrics_out *o, double v)
{
    char b[40];
    out_put(o, b, fmt_double(b, sizeof b, v));
}

static void out_u64(tr_metrics_out *o, uint64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof b, "%" PRIu64, v);
    out_put(o, b, (size_t)n);
}

/* s escaped for a help text (label: also the double quote). */
static void out_escaped(tr_metrics_out *o, const char *s, bool label)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        const char *rep = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : label && *s == '"' ? "\\\"" : NULL;
        if (rep == NULL)
            continue;
        out_put(o, run, (size_t)(s - run));
        out_put(o, rep, 2);
        run = s + 1;
    }
    out_put(o, run, (size_t)(s - run));
}

static const char *type_name(tr_metric_type t)
{
    return t == TR_METRIC_COUNTER ? "counter" : t == TR_METRIC_GAUGE ? "gauge" : "histogram";
}

static void out_head(tr_metrics_out *o, const char *name, tr_metric_type type, const char *help)
{
    out_str(o, "# HELP ");
    out_str(o, name);
    out_put(o, " ", 1);
    out_escaped(o, help != NULL ? help : "", false);
    out_str(o, "\n# TYPE ");
    out_str(o, name);
    out_put(o, " ", 1);
    out_str(o, type_name(type));
    out_put(o, "\n", 1);
}

/* name{labels[,extra]}; labels already written out (or ""), extra a label pair or NULL. */
static void out_series_name(tr_metrics_out *o, const char *name, const char *suffix,
                            const char *labels, const char *extra)
{
    out_str(o, name);
    if (suffix != NULL)
        out_str(o, suffix);
    bool any = labels[0] != '\0';
    if (!any && extra == NULL)
        return;
    out_put(o, "{", 1);
    out_str(o, labels);
    if (extra != NULL) {
        if (any)
            out_put(o, ",", 1);
        out_str(o, extra);
    }
    out_put(o, "}", 1);
}

/* The bucket lines, _sum and _count of one histogram (counts per bucket, not cumulative). */
static void out_hist(tr_metrics_out *o, const char *name, const char *labels, const double *bounds,
                     const uint64_t *counts, size_t nbounds, double sum)
{
    uint64_t cum = 0;
    char le[64];
    for (size_t i = 0; i <= nbounds; i++) {
        cum += counts[i];
        memcpy(le, "le=\"", 4);
        size_t n = i < nbounds ? fmt_double(le + 4, sizeof le - 6, bounds[i])
                               : (size_t)snprintf(le + 4, sizeof le - 6, "+Inf");
        memcpy(le + 4 + n, "\"", 2);
        out_series_name(o, name, "_bucket", labels, le);
        out_put(o, " ", 1);
        out_u64(o, cum);
        out_put(o, "\n", 1);
    }
    out_series_name(o, name, "_sum", labels, NULL);
    out_put(o, " ", 1);
    out_double(o, sum);
    out_put(o, "\n", 1);
    out_series_name(o, name, "_count", labels, NULL);
    out_put(o, " ", 1);
    out_u64(o, cum);
    out_put(o, "\n", 1);
}

/* ---- names and labels --------------------------------------------------------------------- */

static bool name_ok(const char *s)
{
    if (s == NULL || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
                       *s == ':'))
        return false;
    size_t n = 0;
    for (; *s != '\0'; s++, n++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == ':'))
            return false;
    return n < 200;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool family_name_ok(const char *name, tr_metric_type type)
{
    if (!name_ok(name) || type > TR_METRIC_HISTOGRAM)
        return false;
    return type != TR_METRIC_COUNTER || ends_with(name, "_total");
}

static bool label_name_ok(const char *s, tr_metric_type type)
{
    if (s == NULL || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    if (strncmp(s, "__", 2) == 0 || (type == TR_METRIC_HISTOGRAM && strcmp(s, "le") == 0))
        return false;
    size_t n = 0;
    for (; *s != '\0'; s++, n++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return n < 128;
}

/* The label pairs as written, into o (escaped). false when a label name is bad. */
static bool out_labels(tr_metrics_out *o, const tr_label *labels, size_t n, tr_metric_type type)
{
    for (size_t i = 0; i < n; i++) {
        if (!label_name_ok(labels[i].name, type) || labels[i].value == NULL)
            return false;
        if (i > 0)
            out_put(o, ",", 1);
        out_str(o, labels[i].name);
        out_put(o, "=\"", 2);
        out_escaped(o, labels[i].value, true);
        out_put(o, "\"", 1);
    }
    return true;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u; /* FNV-1a */
    return h;
}

static double bits_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t double_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

/* ---- the registry ------------------------------------------------------------------------- */

int tr_metrics_new(size_t max_series, tr_metrics **out)
{
    if (out == NULL)
        return TR_EINVAL;
    *out = NULL;
    tr_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return TR_ENOMEM;
    m->max_series = max_series ? max_series : MAX_SERIES_DEFAULT;
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return TR_OK;
}

static void family_free(family *f)
{
    for (tr_metric *s = f->first, *next; s != NULL; s = next) {
        next = s->next;
        free(s->labels);
        free(s->buckets);
        free(s);
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->name);
    free(f->help);
    free(f);
}

void tr__metrics_hold(tr_metrics *m)
{
    if (m != NULL)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void tr_metrics_free(tr_metrics *m)
{
    if (m == NULL || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return; /* a unit still holds it (tr__metrics_hold) */
    for (family *f = m->first, *next; f != NULL; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static family *family_find(tr_metrics *m, const char *name)
{
    for (family *f = m->first; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* A new family (lock held); NULL when out of memory. */
static family *family_new(tr_metrics *m, const char *name, const char *help, tr_metric_type type,
                          const tr_label *labels, size_t nlabels, const double *bounds,
                          size_t nbounds)
{
    family *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help != NULL ? help : "");
    bool ok = f->name != NULL && f->help != NULL;
    for (size_t i = 0; i < nlabels && ok; i++) {
        f->label_names[i] = strdup(labels[i].name);
        ok = f->label_names[i] != NULL;
        f->nlabels = i + 1;
    }
    if (!ok) {
        family_free(f);
        return NULL;
    }
    if (type == TR_METRIC_HISTOGRAM) {
        memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
        f->nbounds = nbounds;
    }
    if (m->last != NULL)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
}

static int series_get(tr_metrics *m, const char *name, const char *help, tr_metric_type type,
                      const tr_label *labels, size_t nlabels, const double *bounds,
                      size_t nbounds, tr_metric **out)
{
    if (out != NULL)
        *out = NULL;
    if (m == NULL || out == NULL || !family_name_ok(name, type) ||
        nlabels > TR_METRICS_LABELS_MAX || (nlabels > 0 && labels == NULL))
        return TR_EINVAL;
    if (type == TR_METRIC_HISTOGRAM) {
        if (bounds == NULL && nbounds == 0) {
            bounds = latency_bounds;
            nbounds = sizeof latency_bounds / sizeof *latency_bounds;
        }
        if (bounds == NULL || nbounds == 0 || nbounds > TR_METRICS_BUCKETS_MAX)
            return TR_EINVAL;
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                return TR_EINVAL;
    }
    tr_metrics_out lt = {0};
    if (!out_labels(&lt, labels, nlabels, type)) {
        free(lt.p);
        return TR_EINVAL;
    }
    if (lt.oom) {
        free(lt.p);
        return TR_ENOMEM;
    }
    const char *ltext = lt.p != NULL ? lt.p : "";
    if (lt.len > LABELS_TEXT_MAX) {
        free(lt.p);
        return TR_ETOOBIG;
    }
    uint64_t h = hash_str(hash_str(14695981039346656037u, name) * 31u, ltext);
    int rc = TR_OK;
    pthread_mutex_lock(&m->lock);
    tr_metric *s = m->hash[h % HASH_BUCKETS];
    while (s != NULL && !(s->hash == h && strcmp(s->f->name, name) == 0 &&
                          strcmp(s->labels, ltext) == 0))
        s = s->hnext;
    if (s != NULL) {
        rc = s->f->type == type ? TR_OK : TR_EINVAL;
        goto done;
    }
    family *f = family_find(m, name);
    if (f != NULL) { /* the same type and label names, in the same order */
        bool same = f->type == type && f->nlabels == nlabels;
        for (size_t i = 0; i < nlabels && same; i++)
            same = strcmp(f->label_names[i], labels[i].name) == 0;
        if (!same) {
            rc = TR_EINVAL;
            goto done;
        }
    }
    if (m->nseries >= m->max_series) {
        atomic_fetch_add_explicit(&m->refused, 1, memory_order_relaxed);
        rc = TR_EFULL;
        goto done;
    }
    if (f == NULL &&
        (f = family_new(m, name, help, type, labels, nlabels, bounds, nbounds)) == NULL) {
        rc = TR_ENOMEM;
        goto done;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || (s->labels = strdup(ltext)) == NULL ||
        (type == TR_METRIC_HISTOGRAM &&
         (s->buckets = calloc(f->nbounds + 1, sizeof *s->buckets)) == NULL)) {
        if (s != NULL)
            free(s->labels);
        free(s);
        s = NULL;
        rc = TR_ENOMEM; /* the family stays, empty: it writes no sample */
        goto done;
    }
    s->f = f;
    s->hash = h;
    atomic_init(&s->u, 0); /* 0 is the bits of 0.0 too */
    if (f->last != NULL)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    s->hnext = m->hash[h % HASH_BUCKETS];
    m->hash[h % HASH_BUCKETS] = s;
    m->nseries++;
done:
    pthread_mutex_unlock(&m->lock);
    free(lt.p);
    if (rc == TR_OK)
        *out = s;
    return rc;
}

int tr_metrics_counter(tr_metrics *m, const char *name, const char *help, const tr_label *labels,
                       size_t nlabels, tr_metric **out)
{
    return series_get(m, name, help, TR_METRIC_COUNTER, labels, nlabels, NULL, 0, out);
}

int tr_metrics_gauge(tr_metrics *m, const char *name, const char *help, const tr_label *labels,
                     size_t nlabels, tr_metric **out)
{
    return series_get(m, name, help, TR_METRIC_GAUGE, labels, nlabels, NULL, 0, out);
}

int tr_metrics_histogram(tr_metrics *m, const char *name, const char *help,
                         const tr_label *labels, size_t nlabels, const double *bounds,
                         size_t nbounds, tr_metric **out)
{
    return series_get(m, name, help, TR_METRIC_HISTOGRAM, labels, nlabels, bounds, nbounds, out);
}

/* ---- updates ------------------------------------------------------------------------------ */

void tr_metric_inc(tr_metric *c, uint64_t n)
{
    if (c != NULL && c->f->type == TR_METRIC_COUNTER)
        atomic_fetch_add_explicit(&c->u, n, memory_order_relaxed);
}

static void add_double(_Atomic uint64_t *u, double d)
{
    uint64_t old = atomic_load_explicit(u, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(u, &old, double_bits(bits_double(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void tr_metric_set(tr_metric *g, double v)
{
    if (g != NULL && g->f->type == TR_METRIC_GAUGE)
        atomic_store_explicit(&g->u, double_bits(v), memory_order_relaxed);
}

void tr_metric_add(tr_metric *g, double d)
{
    if (g != NULL && g->f->type == TR_METRIC_GAUGE)
        add_double(&g->u, d);
}

void tr_metric_observe(tr_metric *h, double v)
{
    if (h == NULL || h->f->type != TR_METRIC_HISTOGRAM || isnan(v))
        return;
    size_t i = 0;
    while (i < h->f->nbounds && v > h->f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    add_double(&h->u, v);
}

int tr_metric_read(const tr_metric *s, double *value, uint64_t *count)
{
    if (s == NULL)
        return TR_EINVAL;
    uint64_t u = atomic_load_explicit(&s->u, memory_order_relaxed);
    uint64_t n = 0;
    double v = s->f->type == TR_METRIC_COUNTER ? (double)u : bits_double(u);
    if (s->f->type == TR_METRIC_HISTOGRAM)
        for (size_t i = 0; i <= s->f->nbounds; i++)
            n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    if (value != NULL)
        *value = v;
    if (count != NULL)
        *count = n;
    return TR_OK;
}

/* ---- collectors --------------------------------------------------------------------------- */

int tr_metrics_collector_add(tr_metrics *m, tr_metrics_collect_fn fn, void *user)
{
    if (m == NULL || fn == NULL)
        return TR_EINVAL;
    int rc = TR_EFULL;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->ncollectors; i++)
        if (m->collectors[i].fn == fn)
            rc = TR_EEXIST;
    if (rc != TR_EEXIST && m->ncollectors < COLLECTORS_MAX) {
        m->collectors[m->ncollectors++] = (collector){fn, user};
        rc = TR_OK;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void tr_metrics_collector_remove(tr_metrics *m, tr_metrics_collect_fn fn, void *user)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->ncollectors; i++)
        if (m->collectors[i].fn == fn && m->collectors[i].user == user) {
            memmove(&m->collectors[i], &m->collectors[i + 1],
                    (m->ncollectors - i - 1) * sizeof *m->collectors);
            m->ncollectors--;
            break;
        }
    pthread_mutex_unlock(&m->lock);
}

void tr_metrics_out_family(tr_metrics_out *o, const char *name, tr_metric_type type,
                           const char *help)
{
    if (o == NULL)
        return;
    o->skip = !family_name_ok(name, type);
    if (o->skip)
        return;
    snprintf(o->name, sizeof o->name, "%s", name);
    o->type = type;
    out_head(o, name, type, help);
}

/* The label pairs of a collector's sample, into buf (a writer of its own); false: skip it. */
static bool sample_labels(tr_metrics_out *o, tr_metrics_out *buf, const tr_label *labels,
                          size_t n)
{
    if (o->skip || o->name[0] == '\0' || n > TR_METRICS_LABELS_MAX || (n > 0 && labels == NULL))
        return false;
    if (!out_labels(buf, labels, n, o->type) || buf->oom) {
        free(buf->p);
        return false;
    }
    return true;
}

static void out_sample_start(tr_metrics_out *o, tr_metrics_out *lb)
{
    out_series_name(o, o->name, NULL, lb->p != NULL ? lb->p : "", NULL);
    out_put(o, " ", 1);
    free(lb->p);
}

void tr_metrics_out_value(tr_metrics_out *o, const tr_label *labels, size_t nlabels, double v)
{
    tr_metrics_out lb = {0};
    if (o == NULL || o->type == TR_METRIC_HISTOGRAM || !sample_labels(o, &lb, labels, nlabels))
        return;
    out_sample_start(o, &lb);
    out_double(o, v);
    out_put(o, "\n", 1);
}

void tr_metrics_out_u64(tr_metrics_out *o, const tr_label *labels, size_t nlabels, uint64_t v)
{
    tr_metrics_out lb = {0};
    if (o == NULL || o->type == TR_METRIC_HISTOGRAM || !sample_labels(o, &lb, labels, nlabels))
        return;
    out_sample_start(o, &lb);
    out_u64(o, v);
    out_put(o, "\n", 1);
}

void tr_metrics_out_histogram(tr_metrics_out *o, const tr_label *labels, size_t nlabels,
                              const double *bounds, const uint64_t *counts, size_t nbounds,
                              double sum)
{
    tr_metrics_out lb = {0};
    if (o == NULL || o->type != TR_METRIC_HISTOGRAM || counts == NULL ||
        (nbounds > 0 && bounds == NULL) || !sample_labels(o, &lb, labels, nlabels))
        return;
    out_hist(o, o->name, lb.p != NULL ? lb.p : "", bounds, counts, nbounds, sum);
    free(lb.p);
}

/* ---- rendering ---------------------------------------------------------------------------- */

static void render_family(tr_metrics_out *o, const family *f)
{
    if (f->first == NULL)
        return;
    out_head(o, f->name, f->type, f->help);
    for (const tr_metric *s = f->first; s != NULL; s = s->next) {
        uint64_t u = atomic_load_explicit(&s->u, memory_order_relaxed);
        if (f->type == TR_METRIC_HISTOGRAM) {
            uint64_t counts[TR_METRICS_BUCKETS_MAX + 1];
            for (size_t i = 0; i <= f->nbounds; i++)
                counts[i] = atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
            out_hist(o, f->name, s->labels, f->bounds, counts, f->nbounds, bits_double(u));
            continue;
        }
        out_series_name(o, f->name, NULL, s->labels, NULL);
        out_put(o, " ", 1);
        if (f->type == TR_METRIC_COUNTER)
            out_u64(o, u);
        else
            out_double(o, bits_double(u));
        out_put(o, "\n", 1);
    }
}

int tr_metrics_render(tr_metrics *m, char **text, size_t *len)
{
    if (text != NULL)
        *text = NULL;
    if (len != NULL)
        *len = 0;
    if (m == NULL || text == NULL)
        return TR_EINVAL;
    tr_metrics_out o = {0};
    out_reserve(&o, 16384);
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->first; f != NULL; f = f->next)
        render_family(&o, f);
    for (size_t i = 0; i < m->ncollectors; i++) {
        o.name[0] = '\0';
        o.skip = false;
        m->collectors[i].fn(m->collectors[i].user, &o);
    }
    o.name[0] = '\0';
    o.skip = false;
    tr_metrics_out_family(&o, "troupe_metrics_series_refused_total", TR_METRIC_COUNTER,
                          "Series not registered: the registry held its maximum.");
    tr_metrics_out_u64(&o, NULL, 0, atomic_load_explicit(&m->refused, memory_order_relaxed));
    pthread_mutex_unlock(&m->lock);
    if (o.oom || o.p == NULL) {
        free(o.p);
        return TR_ENOMEM;
    }
    *text = o.p;
    if (len != NULL)
        *len = o.len;
    return TR_OK;
}
