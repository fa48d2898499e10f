/**
 * @file
 * troupe/dashboard.h — a live dashboard for a node, in the web unit (troupe::web): one HTML page
 * (inline CSS and JavaScript, nothing fetched from elsewhere) at `/dashboard`, and the JSON it
 * polls every second at `/dashboard/data`. docs/dashboard.md says what the page shows.
 *
 * What `/dashboard/data` holds: this node's name and application, its monotonic clock (the page
 * computes rates against it, not against the browser's), the system's counters
 * (tr_system_stats_get), the cluster's members and their state and the node's counters (when a
 * node is given), the store's counters (when a store is given), the process's recent log events
 * (below), and a JSON value of the application's own (app_json: an email backlog, a read model's
 * lag). The page also reads `GET /metrics` of the same server when it answers (per-behaviour
 * message rates and mailbox depths, HTTP by route, the commit-time histogram, the bus's lag), and
 * shows what it lacks as not served.
 *
 * The web unit links only the core: the node's and the store's figures are read through the
 * getters the application hands over (node_peers = tr_node_peers, store_stats =
 * tr_store_stats_get, ...), so an embedder without troupe::dist or troupe::store leaves them NULL.
 *
 * Recent events: the process keeps its last TR_DASHBOARD_EVENTS log lines (each cut at
 * TR_DASHBOARD_LINE_MAX bytes), oldest overwritten — a fixed ring, whatever happens. Lines reach
 * it through the log hook tr_dashboard_log (install it with tr_log_set: supervisors' crash,
 * restart and give-up reports, peers up and down) or from a hook of one's own calling
 * tr_dashboard_note. The ring is the process's, shared by its dashboards (a line about a node's
 * system starts with the node's name).
 *
 * Threads: tr_dashboard_serve from an HTTP loop (the application's handler); the getters and
 * app_json run there, so they must not block. The ring is safe from any thread.
 */
#ifndef TROUPE_DASHBOARD_H
#define TROUPE_DASHBOARD_H

#include "troupe.h"
#include "troupe/http.h"
#include "troupe/json.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

#define TR_DASHBOARD_EVENTS 64u      /**< log lines the process keeps for its dashboards */
#define TR_DASHBOARD_LINE_MAX 240u   /**< bytes of a line kept, at most (cut on a UTF-8 boundary) */
#define TR_DASHBOARD_PEERS 64u       /**< cluster members listed, at most (the count says how many) */

/* The types of other units, by their tags (their headers are not needed to include this one). */
struct tr_node;
struct tr_peer_info;
struct tr_node_stats;
struct tr_store;
struct tr_store_stats;

/** A node's dashboard (opaque). */
typedef struct tr_dashboard tr_dashboard;

/** Where a dashboard reads its figures (tr_dashboard_new). Everything but sys is optional. */
typedef struct tr_dashboard_opts {
    tr_system *sys;             /**< the node's system (required) */
    const char *app;            /**< the application's name, shown in the title; NULL: "troupe" */
    const char *node_name;      /**< this node's name; NULL: "local" (kept by address: it must
                                 * outlive the dashboard) */
    struct tr_node *node;       /**< the node, for node_peers and node_stats */
    /** tr_node_peers, to list the cluster's members and their state. */
    int (*node_peers)(struct tr_node *node, struct tr_peer_info *out, size_t cap, size_t *count);
    /** tr_node_stats_get, for the node's message and failure counters. */
    void (*node_stats)(struct tr_node *node, struct tr_node_stats *out);
    struct tr_store *store;     /**< the store, for store_stats */
    /** tr_store_stats_get, for commits and the outbox. */
    void (*store_stats)(struct tr_store *store, struct tr_store_stats *out);
    /** Optional: writes exactly one JSON value (an object, typically) into b: the application's
     * figures, under "app" in /dashboard/data. On an HTTP loop; must not block. */
    void (*app_json)(void *user, tr_jbuf *b);
    void *user;                 /**< given to app_json */
} tr_dashboard_opts;

/** Makes a dashboard (the options are copied; what they point to must outlive it). TR_OK;
 * TR_EINVAL without opts, out or sys; TR_ENOMEM. */
int tr_dashboard_new(const tr_dashboard_opts *opts, tr_dashboard **out);
/** Frees a dashboard (NULL: nothing). No tr_dashboard_serve may be running. */
void tr_dashboard_free(tr_dashboard *d);

/** In an HTTP handler: answers req when its path is `/dashboard`, `/dashboard/` or under
 * `/dashboard/` — the page, `/dashboard/data`'s JSON, 404 for any other path under it, 405 for a
 * method other than GET or HEAD — and returns true; returns false (answering nothing) for any
 * other path. Answers are `Cache-Control: no-store`. */
bool tr_dashboard_serve(tr_dashboard *d, tr_http_server *srv, const tr_http_request *req);

/** The page's HTML (NUL-terminated, in the library's read-only data); *len, if not NULL, gets its
 * length. For serving it elsewhere. */
const char *tr_dashboard_page(size_t *len);

/** A log hook (tr_log_fn; tr_log_set(tr_dashboard_log, NULL, level)): keeps the line in the
 * process's ring of recent events, then writes it to stderr as the default hook does ("troupe
 * COMPONENT: LINE"). user is not used. */
void tr_dashboard_log(void *user, tr_log_level level, const char *component, const char *line);
/** Keeps one line in the process's ring of recent events (for a log hook of one's own). From any
 * thread. */
void tr_dashboard_note(tr_log_level level, const char *component, const char *line);
/** Empties the process's ring of recent events; the next line kept is seq 1 again (tests). */
void tr_dashboard_events_clear(void);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
