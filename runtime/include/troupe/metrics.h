/**
 * @file
 * troupe/metrics.h — metrics: counters, gauges and histograms, written out in Prometheus's text
 * exposition format (version 0.0.4), the format `GET /metrics` answers with (docs/observability.md
 * lists every metric the runtime and the apps export).
 *
 * Where it lives, and why. The facility is part of the core (troupe::core), not of the web unit:
 * every system has a registry (tr_system_metrics) made with it, so the other units register into
 * the registry of the system they are started on without being told — a node its peers, a store
 * its commits and its bus subscriptions, the web bridge its HTTP requests — and an embedder that
 * has no HTTP server can still read everything through the C API (tr_metrics_render). Nothing
 * here needs a library: the text writer is a few hundred lines, smaller than what a client
 * library would bring, and Debian has no C client of Prometheus to take.
 *
 * Two ways in. A series registered here (tr_metrics_counter, _gauge, _histogram) is a handle
 * that is updated with lock-free atomics from any thread and written out by every render; the
 * registry holds at most max_series of them (beyond, registering fails with TR_EFULL and is
 * counted in troupe_metrics_series_refused_total), so nothing a peer or a user controls can grow
 * it without bound. A collector (tr_metrics_collector_add) is a callback that writes families at
 * render time from figures kept elsewhere: how the runtime exports its own counters, which
 * already exist (per worker, per actor, per peer) and would cost more to mirror into series.
 *
 * Conventions the registry enforces: names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* not starting with "__" (and never "le" on a histogram), a counter's
 * name ends in "_total"; the runtime's own are troupe_... and time is in seconds (histograms of
 * durations end in "_seconds"). Label values and help texts are escaped as the format says
 * (backslash, double quote and newline in label values; backslash and newline in help).
 *
 * Threading: every function may be called from any thread. A render holds the registry's lock,
 * so registering, and adding or removing a collector, waits for a render under way; once
 * tr_metrics_collector_remove returns, the callback is not running and will not run again.
 */
#ifndef TROUPE_METRICS_H
#define TROUPE_METRICS_H

#include "troupe.h"

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

/** The Content-Type of a rendered exposition. */
#define TR_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/** Labels of one series, at most. */
#define TR_METRICS_LABELS_MAX 8u
/** Buckets of one histogram (besides +Inf), at most. */
#define TR_METRICS_BUCKETS_MAX 32u

/** A registry: series and collectors, rendered together (tr_metrics_new, tr_system_metrics). */
typedef struct tr_metrics tr_metrics;
/** One series: a counter, a gauge or a histogram with its label values. */
typedef struct tr_metric tr_metric;
/** The exposition being written by a render (a collector's argument). */
typedef struct tr_metrics_out tr_metrics_out;

/** A family's type. */
typedef enum tr_metric_type {
    TR_METRIC_COUNTER = 0,  /**< only goes up (name ends in _total) */
    TR_METRIC_GAUGE,        /**< goes up and down */
    TR_METRIC_HISTOGRAM,    /**< observations counted in buckets, with their sum and count */
} tr_metric_type;

/** A label: name and value (any bytes but NUL; escaped when written). */
typedef struct tr_label {
    const char *name;   /**< [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" */
    const char *value;  /**< any bytes but NUL */
} tr_label;

/** Makes a registry of at most max_series series (0: 4,096). TR_OK, TR_EINVAL, TR_ENOMEM. */
int tr_metrics_new(size_t max_series, tr_metrics **out);
/** Frees a registry and its series (NULL is ignored). Everything that registered into it —
 * series handles, collectors — must be done with it. */
void tr_metrics_free(tr_metrics *m);

/** The registry of a system, made with it and freed by tr_system_free. The runtime's own metrics
 * (actors per behaviour, the scheduler) are a collector in it from the start; tr_node_start,
 * tr_store_open and tr_web_start add theirs, and remove them when they end. NULL for NULL. */
tr_metrics *tr_system_metrics(tr_system *sys);

/** Finds or makes the counter series name{labels} (labels in the same order, with the same
 * names, as the family's first series; 0..TR_METRICS_LABELS_MAX of them; the name ends in
 * "_total"). The family's help and type are its first registration's; a later one with another
 * type is TR_EINVAL. *out stays valid until the registry is freed. TR_EINVAL (a bad name, label
 * or type), TR_EFULL (max_series reached), TR_ETOOBIG (the label values exceed 4 KiB written
 * out), TR_ENOMEM. */
int tr_metrics_counter(tr_metrics *m, const char *name, const char *help, const tr_label *labels,
                       size_t nlabels, tr_metric **out);
/** Finds or makes the gauge series name{labels}: as tr_metrics_counter, for a gauge. */
int tr_metrics_gauge(tr_metrics *m, const char *name, const char *help, const tr_label *labels,
                     size_t nlabels, tr_metric **out);
/** Finds or makes a histogram series, as tr_metrics_counter, with upper bounds bounds[0..nbounds) (increasing, finite; at most
 * TR_METRICS_BUCKETS_MAX; +Inf is implied), or NULL and 0 for the latency buckets in seconds
 * (100 us to 10 s: 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5
 * 5 10). A family's buckets are its first registration's. */
int tr_metrics_histogram(tr_metrics *m, const char *name, const char *help,
                         const tr_label *labels, size_t nlabels, const double *bounds,
                         size_t nbounds, tr_metric **out);

/** Adds n to a counter (ignored for other types or NULL). Lock-free. */
void tr_metric_inc(tr_metric *c, uint64_t n);
/** Sets a gauge to v (ignored for other types or NULL). Lock-free. */
void tr_metric_set(tr_metric *g, double v);
/** Adds d (may be negative) to a gauge (ignored for other types or NULL). Lock-free. */
void tr_metric_add(tr_metric *g, double d);
/** Counts an observation in a histogram (ignored for other types, NULL or NaN). Lock-free. */
void tr_metric_observe(tr_metric *h, double v);
/** Reads a series: a counter's or gauge's value (count 0), or a histogram's sum and count.
 * TR_EINVAL for NULL. */
int tr_metric_read(const tr_metric *s, double *value, uint64_t *count);

/** A collector: writes families into out with tr_metrics_out_* when the registry is rendered. It
 * runs with the registry's lock held: it must not register series nor add or remove collectors,
 * and should be quick (it delays the other renders). */
typedef void (*tr_metrics_collect_fn)(void *user, tr_metrics_out *out);
/** Adds a collector (called after the series, in the order added; at most 64). TR_EFULL, or
 * TR_EEXIST when fn is a collector of this registry already, whatever its user: a collector
 * writes fixed family names, which an exposition may hold once (a second store of a system, say,
 * is not collected: its figures stay in tr_store_stats_get). */
int tr_metrics_collector_add(tr_metrics *m, tr_metrics_collect_fn fn, void *user);
/** Removes the collector (fn, user) if present; it is not running when this returns. */
void tr_metrics_collector_remove(tr_metrics *m, tr_metrics_collect_fn fn, void *user);

/** In a collector: starts family `name` (HELP and TYPE lines). Its samples follow; a family must
 * not be started twice in one render, nor share a name with a registered series. A bad name
 * (see above) skips the family and its samples. */
void tr_metrics_out_family(tr_metrics_out *out, const char *name, tr_metric_type type,
                           const char *help);
/** One sample of the current counter or gauge family, with its labels (escaped here). */
void tr_metrics_out_value(tr_metrics_out *out, const tr_label *labels, size_t nlabels, double v);
/** One sample of the current counter or gauge family with an integer value, written exactly (counters above 2^53). */
void tr_metrics_out_u64(tr_metrics_out *out, const tr_label *labels, size_t nlabels, uint64_t v);
/** One histogram of the current histogram family: counts[i] observations at most bounds[i]
 * (and above bounds[i-1]) for i < nbounds, counts[nbounds] those above the last bound; sum of
 * every observation. Written as the cumulative _bucket{le=...} lines, _sum and _count. */
void tr_metrics_out_histogram(tr_metrics_out *out, const tr_label *labels, size_t nlabels,
                              const double *bounds, const uint64_t *counts, size_t nbounds,
                              double sum);

/** Writes the registry out: its series, then what its collectors write, as text in the
 * exposition format (NUL-terminated; *len without the NUL), in *text to free with free().
 * TR_OK, TR_EINVAL, TR_ENOMEM. */
int tr_metrics_render(tr_metrics *m, char **text, size_t *len);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif /* TROUPE_METRICS_H */
