/*
 * main.c — build/bin/social: one node of the image-sharing network (app.h) from
 * config/social.conf.
 *
 * Flags override the file: --http HOST:PORT, --data DIR (the SQLite file goes there), --set
 * KEY=VALUE for any setting (e.g. --set social.celebrity_followers=100). With --node NAME the
 * process is node NAME of the cluster the file declares (its `cluster` group; its HTTP address
 * from social.nodes; the store must be shared: Redis, whose one event log every node reads).
 * SIGTERM and SIGINT stop it gracefully: requests in flight are answered, the store is closed.
 */
#include "app.h"

#include <errno.h>
#include <getopt.h>
#include <libconfig.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <troupe/config.h>
#include <troupe/dashboard.h>

#define MAX_SETS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: social --config FILE [options]\n"
            "  --config FILE      settings (see config/social.conf)\n"
            "  --http HOST:PORT   where the HTTP API listens (default 127.0.0.1:8090)\n"
            "  --data DIR         data directory: DIR/social.db (SQLite: journals and events)\n"
            "  --set KEY=VALUE    any setting, e.g. --set social.celebrity_followers=100\n"
            "  --node NAME        be node NAME of the cluster in the file\n"
            "                     (config/social-cluster.conf): HTTP from social.nodes, data in\n"
            "                     DATA/NAME, the store must be Redis\n"
            "  --help             this text\n"
            "Prints \"listening on http://HOST:PORT\" when ready. SIGTERM / SIGINT stop it.\n");
}

#define N(p, lo, hi) {p, TR_SETTING_INT, lo, hi}
#define S(p) {p, TR_SETTING_STR, 0, 0}
#define G(p) {p, TR_SETTING_GROUP, 0, 0}
static const tr_setting schema[] = {
    G("log"),
    S("log.level"), /* error, warn, info or debug; TROUPE_LOG, when set, wins */
    G("social"),
    S("social.data"),
    {"social.nodes", TR_SETTING_LIST, 0, 0},
    N("social.workers", 0, 1024),
    N("social.call_timeout_ms", 1, 3600000),
    N("social.celebrity_followers", 1, 100000000),
    N("social.timeline_cap", 1, 100000),
    N("social.follow_merge", 0, 10000),
    N("social.max_following", 1, 1000000),
    N("social.search_images", 1, 1000),
    N("social.idle_ms", 1, 86400000),
    N("social.max_keys", 1, 100000000),
    G("social.http"),
    S("social.http.host"),
    N("social.http.port", 0, 65535),
    N("social.http.threads", 1, 64),
    N("social.http.max_request", 1024, 16 << 20),
    N("social.http.request_timeout_ms", 1, 3600000),
    N("social.http.max_connections", 1, 1000000),
    N("social.http.max_per_client", 0, 1000000),
    N("social.http.run_actors", 0, 100000),
    {"store", TR_SETTING_FOREIGN, 0, 0},
    {"cluster", TR_SETTING_FOREIGN, 0, 0},
};
#undef N
#undef S
#undef G

static long long get_int(const config_t *cfg, const char *path, long long def)
{
    long long v;
    return config_lookup_int64(cfg, path, &v) == CONFIG_TRUE ? v : def;
}

static const char *get_str(const config_t *cfg, const char *path, const char *def)
{
    const char *v;
    return config_lookup_string(cfg, path, &v) == CONFIG_TRUE ? v : def;
}

static int serve(config_t *cfg, const char *conf, const char *http, const char *data,
                 const char *node, const char *const *sets, int nsets, tr_store_config **scp,
                 tr_node_config **ncp)
{
    char err[512] = "";
    int rc = tr_config_app_load(cfg, conf, sets, nsets, schema, sizeof schema / sizeof schema[0],
                                err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "social: %s\n", err);
        return 2;
    }
    /* the log level: TROUPE_LOG's (the runtime read it already), else log.level's */
    const char *env = getenv("TROUPE_LOG"), *lv;
    if ((env == NULL || env[0] == '\0') &&
        config_lookup_string(cfg, "log.level", &lv) == CONFIG_TRUE) {
        tr_log_level level;
        if (tr_log_level_parse(lv, &level) != TR_OK) {
            fprintf(stderr, "social: log.level must be error, warn, info or debug, not \"%s\"\n",
                    lv);
            return 2;
        }
        tr_log_set(NULL, NULL, level);
    }
    /* --node: this node's HTTP address (social.nodes) and its own data directory */
    char nodedir[900];
    if (node != NULL) {
        const config_setting_t *list = config_lookup(cfg, "social.nodes");
        const char *nh = NULL, *nm = NULL;
        for (int i = 0; list != NULL && i < config_setting_length(list) && nh == NULL; i++) {
            const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
            if (config_setting_lookup_string(e, "name", &nm) == CONFIG_TRUE &&
                strcmp(nm, node) == 0 && config_setting_lookup_string(e, "http", &nh) != CONFIG_TRUE)
                nh = NULL;
        }
        if (http == NULL && nh == NULL) {
            fprintf(stderr, "social: no social.nodes entry with name \"%s\" and an http address "
                            "in %s (or give --http)\n", node, conf);
            return 1;
        }
        if (http == NULL)
            http = nh;
        if (data == NULL) {
            const char *base = get_str(cfg, "social.data", "data");
            if (mkdir(base, 0755) != 0 && errno != EEXIST) {
                fprintf(stderr, "social: cannot make %s: %s\n", base, strerror(errno));
                return 1;
            }
            if ((size_t)snprintf(nodedir, sizeof nodedir, "%s/%s", base, node) >= sizeof nodedir) {
                fprintf(stderr, "social: data path too long\n");
                return 1;
            }
            data = nodedir;
        }
    }
    const char *dir = data != NULL ? data : get_str(cfg, "social.data", "data");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "social: cannot make %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char dbpath[1024], kv[1100];
    if ((size_t)snprintf(dbpath, sizeof dbpath, "%s/social.db", dir) >= sizeof dbpath) {
        fprintf(stderr, "social: data path too long\n");
        return 1;
    }
    if (data != NULL || config_lookup(cfg, "store.path") == NULL) {
        snprintf(kv, sizeof kv, "store.path=%s", dbpath);
        tr_config_set(cfg, kv, err, sizeof err);
    }
    rc = tr_store_config_from(cfg, conf, "store", scp, err, sizeof err);
    if (rc == TR_OK && node != NULL)
        rc = tr_node_config_from(cfg, conf, node, ncp, err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "social: %s\n", err);
        return 1;
    }
    if (*ncp != NULL && (*scp)->store.backend != TR_STORE_REDIS) {
        fprintf(stderr, "social: --node: a cluster needs a shared store (store.backend = "
                        "\"redis\"): a user's journal must be readable by the node it moves to, "
                        "and every node reads the one event log\n");
        return 1;
    }
    soc_opts o = {
        .http_host = get_str(cfg, "social.http.host", "127.0.0.1"),
        .http_port = (int)get_int(cfg, "social.http.port", 8090),
        .http_threads = (unsigned)get_int(cfg, "social.http.threads", 1),
        .http_max_request = (size_t)get_int(cfg, "social.http.max_request", 65536),
        .http_request_ms = (unsigned)get_int(cfg, "social.http.request_timeout_ms", 10000),
        .http_max_connections = (unsigned)get_int(cfg, "social.http.max_connections", 10000),
        .http_max_per_client = (unsigned)get_int(cfg, "social.http.max_per_client", 2500),
        .run_actors = (unsigned)get_int(cfg, "social.http.run_actors", 64),
        .workers = (unsigned)get_int(cfg, "social.workers", 0),
        .store = (*scp)->store,
        .call_timeout_ms = (unsigned)get_int(cfg, "social.call_timeout_ms", 5000),
        .celebrity_followers = (unsigned)get_int(cfg, "social.celebrity_followers", 10000),
        .timeline_cap = (unsigned)get_int(cfg, "social.timeline_cap", 800),
        .follow_merge = (unsigned)get_int(cfg, "social.follow_merge", 50),
        .max_following = (unsigned)get_int(cfg, "social.max_following", 5000),
        .search_images = (unsigned)get_int(cfg, "social.search_images", 20),
        .idle_ms = (unsigned)get_int(cfg, "social.idle_ms", 60000),
        .max_keys = (size_t)get_int(cfg, "social.max_keys", 1000000),
        .node_name = node,
        .node = *ncp != NULL ? &(*ncp)->node : NULL,
    };
    if (*ncp != NULL && (*ncp)->workers != 0 && config_lookup(cfg, "social.workers") == NULL)
        o.workers = (*ncp)->workers;
    char host[256];
    if (http != NULL) {
        const char *colon = strrchr(http, ':');
        char *end = NULL;
        long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
        if (colon == NULL || colon == http || end == colon + 1 || *end != '\0' || port < 0 ||
            port > 65535) {
            fprintf(stderr, "social: --http wants HOST:PORT (a port from 0 to 65535)\n");
            return 2;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - http), http);
        o.http_host = host;
        o.http_port = (int)port;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    soc_app *app;
    /* log lines go to stderr and into the ring of recent events /dashboard shows */
    tr_log_set(tr_dashboard_log, NULL, tr_log_level_get());
    rc = soc_start(&o, &app, err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "social: %s%s%s\n", err, err[0] ? ": " : "", tr_strerror(rc));
        return 1;
    }
    if (*ncp != NULL)
        printf("listening on http://%s:%d (data in %s; node %s on %s)\n", o.http_host,
               soc_port(app), dir, node, (*ncp)->node.listen);
    else
        printf("listening on http://%s:%d (data in %s)\n", o.http_host, soc_port(app), dir);
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "social: signal %d, stopping\n", sig);
    soc_stop(app);
    return 0;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *http = NULL, *data = NULL, *node = NULL;
    const char *sets[MAX_SETS];
    int nsets = 0;
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"http", required_argument, NULL, 'H'},
        {"data", required_argument, NULL, 'd'},   {"node", required_argument, NULL, 'n'},
        {"set", required_argument, NULL, 's'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'c': conf = optarg; break;
        case 'H': http = optarg; break;
        case 'd': data = optarg; break;
        case 'n': node = optarg; break;
        case 's':
            if (nsets == MAX_SETS) {
                fprintf(stderr, "social: at most %d --set\n", MAX_SETS);
                return 2;
            }
            sets[nsets++] = optarg;
            break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'social --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "social: unexpected argument '%s'; try 'social --help'.\n",
                argv[optind]);
        return 2;
    }
    if (conf == NULL) {
        fprintf(stderr, "social: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    config_t cfg;
    config_init(&cfg);
    tr_store_config *sc = NULL;
    tr_node_config *nc = NULL;
    int status = serve(&cfg, conf, http, data, node, sets, nsets, &sc, &nc);
    tr_node_config_free(nc);
    tr_store_config_free(sc);
    config_destroy(&cfg);
    return status;
}
