/*
 * main.c — build/bin/flashsale: one flash sale node (gateway.h) from config/flashsale.conf.
 *
 * Flags override the file: --http HOST:PORT, --data DIR (the SQLite file and the maildir go
 * there), --set KEY=VALUE for any setting (e.g. --set flashsale.email.rate=200). With --node NAME
 * the process is node NAME of the cluster the file declares (its `cluster` group, as troupe-node
 * reads it; its HTTP address from flashsale.nodes; the store must be shared: Redis). SIGTERM and
 * SIGINT stop it gracefully: requests in flight are answered, the store is closed.
 */
#include "gateway.h"

#include "actors/email.h"

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
#include <unistd.h>

#define MAX_SETS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flashsale --config FILE [options]\n"
            "  --config FILE      settings (see config/flashsale.conf)\n"
            "  --http HOST:PORT   where the HTTP API listens (default 127.0.0.1:8080)\n"
            "  --data DIR         data directory: DIR/flashsale.db (SQLite) and DIR/mail/new/\n"
            "  --set KEY=VALUE    any setting, e.g. --set flashsale.email.rate=200\n"
            "                     (numbers are numbers, anything else a string; in double\n"
            "                     quotes always a string, the quotes dropped)\n"
            "  --node NAME        be node NAME of the cluster in the file (config/flashsale-cluster.conf):\n"
            "                     HTTP from flashsale.nodes, data in DATA/NAME, the store must be Redis\n"
            "  --help             this text\n"
            "Prints \"listening on http://HOST:PORT\" when ready. SIGTERM / SIGINT stop it.\n");
}

static long long get_int(const config_t *cfg, const char *path, long long def)
{
    long long v;
    return config_lookup_int64(cfg, path, &v) == CONFIG_TRUE ? v : def;
}

/* Every setting the flash sale reads, its kind and (numbers) its range: anything else in the
 * file or from --set, a value of another kind, or a number out of range is an error that names
 * the setting and where it came from (tr_config_app_load). The store and cluster groups are
 * checked as strictly by troupe's own loaders. */
#define N(p, lo, hi) {p, TR_SETTING_INT, lo, hi}
#define S(p) {p, TR_SETTING_STR, 0, 0}
#define G(p) {p, TR_SETTING_GROUP, 0, 0}
static const tr_setting schema[] = {
    G("log"),
    S("log.level"), /* error, warn, info or debug; TROUPE_LOG, when set, wins */
    G("flashsale"),
    S("flashsale.data"),
    N("flashsale.workers", 0, 1024),
    N("flashsale.call_timeout_ms", 1, 3600000),
    S("flashsale.admin_token_file"),
    {"flashsale.nodes", TR_SETTING_LIST, 0, 0},
    G("flashsale.http"),
    S("flashsale.http.host"),
    N("flashsale.http.port", 0, 65535),
    N("flashsale.http.threads", 1, 64),
    N("flashsale.http.max_request", 1024, 16 << 20),
    N("flashsale.http.request_timeout_ms", 1, 3600000),
    N("flashsale.http.max_connections", 1, 1000000),
    N("flashsale.http.max_per_client", 0, 1000000),
    N("flashsale.http.run_actors", 0, 100000),
    G("flashsale.admission"),
    N("flashsale.admission.rate", 0, 10000000),
    N("flashsale.admission.burst", 0, 10000000),
    G("flashsale.email"),
    N("flashsale.email.rate", 1, 1000000),
    N("flashsale.email.burst", 1, 1000000),
    S("flashsale.email.from"),
    S("flashsale.email.to_domain"),
    S("flashsale.email.provider"),
    S("flashsale.email.maildir"),
    G("flashsale.email.smtp"),
    S("flashsale.email.smtp.url"),
    N("flashsale.email.smtp.timeout_ms", 1, 600000),
    N("flashsale.email.retry_min_ms", 1, 3600000),
    N("flashsale.email.retry_max_ms", 1, 3600000),
    {"store", TR_SETTING_FOREIGN, 0, 0},
    {"cluster", TR_SETTING_FOREIGN, 0, 0},
};
#undef N
#undef S
#undef G

/* A port: 0 to 65535, digits only. */
static bool parse_port(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < 0 || v > 65535)
        return false;
    *out = (int)v;
    return true;
}

static const char *get_str(const config_t *cfg, const char *path, const char *def)
{
    const char *v;
    return config_lookup_string(cfg, path, &v) == CONFIG_TRUE ? v : def;
}

/* Everything after the arguments: reads the settings into cfg, starts the node, waits for
 * SIGTERM / SIGINT, stops it. The configs it loads are returned for the caller to free, so every
 * way out of here frees them. Returns the exit status. */
static int serve(config_t *cfg, const char *conf, const char *http, const char *data,
                 const char *node, const char *const *sets, int nsets, tr_store_config **scp,
                 tr_node_config **ncp)
{
    char err[512] = "";
    int rc = tr_config_app_load(cfg, conf, sets, nsets, schema, sizeof schema / sizeof schema[0],
                                err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "flashsale: %s\n", err);
        return 2;
    }
    /* the log level: TROUPE_LOG's (the runtime read it already), else log.level's */
    const char *env = getenv("TROUPE_LOG"), *lv;
    if ((env == NULL || env[0] == '\0') &&
        config_lookup_string(cfg, "log.level", &lv) == CONFIG_TRUE) {
        tr_log_level level;
        if (tr_log_level_parse(lv, &level) != TR_OK) {
            fprintf(stderr, "flashsale: log.level must be error, warn, info or debug, not \"%s\"\n",
                    lv);
            return 2;
        }
        tr_log_set(NULL, NULL, level);
    }
    /* --node: this node's HTTP address (flashsale.nodes) and its own data directory */
    char nodedir[900];
    if (node != NULL) {
        const config_setting_t *list = config_lookup(cfg, "flashsale.nodes");
        const char *nh = NULL, *nm = NULL;
        for (int i = 0; list != NULL && i < config_setting_length(list) && nh == NULL; i++) {
            const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
            if (config_setting_lookup_string(e, "name", &nm) == CONFIG_TRUE &&
                strcmp(nm, node) == 0 && config_setting_lookup_string(e, "http", &nh) != CONFIG_TRUE)
                nh = NULL;
        }
        if (http == NULL && nh == NULL) {
            fprintf(stderr, "flashsale: no flashsale.nodes entry with name \"%s\" and an http "
                            "address in %s (or give --http)\n", node, conf);
            return 1;
        }
        if (http == NULL)
            http = nh;
        if (data == NULL) {
            const char *base = get_str(cfg, "flashsale.data", "data");
            if (mkdir(base, 0755) != 0 && errno != EEXIST) {
                fprintf(stderr, "flashsale: cannot make %s: %s\n", base, strerror(errno));
                return 1;
            }
            if ((size_t)snprintf(nodedir, sizeof nodedir, "%s/%s", base, node) >= sizeof nodedir) {
                fprintf(stderr, "flashsale: data path too long\n");
                return 1;
            }
            data = nodedir;
        }
    }
    /* --data: the directory of the database and the maildir */
    const char *dir = data != NULL ? data : get_str(cfg, "flashsale.data", "data");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "flashsale: cannot make %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char dbpath[1024], maildir[1024], kv[1100];
    snprintf(dbpath, sizeof dbpath, "%s/flashsale.db", dir);
    snprintf(maildir, sizeof maildir, "%s/mail", dir);
    if (data != NULL || config_lookup(cfg, "store.path") == NULL) {
        snprintf(kv, sizeof kv, "store.path=%s", dbpath);
        tr_config_set(cfg, kv, err, sizeof err);
    }
    /* the store and cluster groups are read by troupe's own loaders, as overridden */
    rc = tr_store_config_from(cfg, conf, "store", scp, err, sizeof err);
    if (rc == TR_OK && node != NULL)
        rc = tr_node_config_from(cfg, conf, node, ncp, err, sizeof err);
    tr_store_config *sc = *scp;
    tr_node_config *nc = *ncp;
    if (rc != TR_OK) {
        fprintf(stderr, "flashsale: %s\n", err);
        return 1;
    }
    if (nc != NULL && sc->store.backend != TR_STORE_REDIS) {
        fprintf(stderr, "flashsale: --node: a cluster needs a shared store (store.backend = "
                        "\"redis\"): a SKU's journal must be readable by the node it moves to\n");
        return 1;
    }
    fs_opts o = {
        .http_host = get_str(cfg, "flashsale.http.host", "127.0.0.1"),
        .http_port = (int)get_int(cfg, "flashsale.http.port", 8080),
        .http_threads = (unsigned)get_int(cfg, "flashsale.http.threads", 2),
        .http_max_request = (size_t)get_int(cfg, "flashsale.http.max_request", 65536),
        .http_request_ms = (unsigned)get_int(cfg, "flashsale.http.request_timeout_ms", 10000),
        .http_max_connections = (unsigned)get_int(cfg, "flashsale.http.max_connections", 10000),
        .http_max_per_client = (unsigned)get_int(cfg, "flashsale.http.max_per_client", 2500),
        .store = sc->store,
        .maildir = get_str(cfg, "flashsale.email.maildir", maildir),
        .smtp_url = get_str(cfg, "flashsale.email.smtp.url", NULL),
        .smtp_timeout_ms = (unsigned)get_int(cfg, "flashsale.email.smtp.timeout_ms", 5000),
        .mail_from = get_str(cfg, "flashsale.email.from", NULL),
        .mail_to_domain = get_str(cfg, "flashsale.email.to_domain", NULL),
        .email_retry_min_ms = (unsigned)get_int(cfg, "flashsale.email.retry_min_ms", 500),
        .email_retry_max_ms = (unsigned)get_int(cfg, "flashsale.email.retry_max_ms", 30000),
        .email_rate = (unsigned)get_int(cfg, "flashsale.email.rate", 50),
        .email_burst = (unsigned)get_int(cfg, "flashsale.email.burst", 10),
        .admission_rate = (unsigned)get_int(cfg, "flashsale.admission.rate", 0),
        .admission_burst = (unsigned)get_int(cfg, "flashsale.admission.burst", 0),
        .call_timeout_ms = (unsigned)get_int(cfg, "flashsale.call_timeout_ms", 5000),
        .workers = (unsigned)get_int(cfg, "flashsale.workers", 0),
        .run_actors = (unsigned)get_int(cfg, "flashsale.http.run_actors", 64),
        .node = nc != NULL ? &nc->node : NULL,
    };
    if (nc != NULL && nc->workers != 0 && config_lookup(cfg, "flashsale.workers") == NULL)
        o.workers = nc->workers;
    char host[256];
    if (http != NULL) {
        const char *colon = strrchr(http, ':');
        if (colon == NULL || colon == http) {
            fprintf(stderr, "flashsale: --http wants HOST:PORT\n");
            return 2;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - http), http);
        o.http_host = host;
        if (!parse_port(colon + 1, &o.http_port)) {
            fprintf(stderr, "flashsale: --http %s: the port must be a number from 0 to 65535\n",
                    http);
            return 2;
        }
    }
    static char admin[258];
    const char *admin_file = get_str(cfg, "flashsale.admin_token_file", NULL);
    if (admin_file != NULL) {
        if (tr_config_secret(admin_file, admin, sizeof admin, err, sizeof err) != TR_OK) {
            fprintf(stderr, "flashsale: admin_token_file %s\n", err);
            return 1;
        }
        o.admin_token = admin;
    }
    const char *provider = get_str(cfg, "flashsale.email.provider", "maildir");
    if (strcmp(provider, "smtp") == 0) {
        o.email_provider = EMAIL_SMTP;
        if (o.smtp_url == NULL) {
            fprintf(stderr, "flashsale: email.provider \"smtp\" needs email.smtp.url\n");
            return 1;
        }
    } else if (strcmp(provider, "maildir") != 0) {
        fprintf(stderr, "flashsale: email.provider: \"maildir\" or \"smtp\", not \"%s\"\n",
                provider);
        return 1;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    fs_app *app;
    /* log lines go to stderr and into the ring of recent events /dashboard shows */
    tr_log_set(tr_dashboard_log, NULL, tr_log_level_get());
    rc = fs_start(&o, &app, err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "flashsale: %s%s%s\n", err, err[0] ? ": " : "", tr_strerror(rc));
        return 1;
    }
    if (nc != NULL)
        printf("listening on http://%s:%d (data in %s; node %s on %s)\n", o.http_host,
               fs_port(app), dir, node, nc->node.listen);
    else
        printf("listening on http://%s:%d (data in %s)\n", o.http_host, fs_port(app), dir);
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "flashsale: signal %d, stopping\n", sig);
    fs_stop(app);
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
                fprintf(stderr, "flashsale: at most %d --set\n", MAX_SETS);
                return 2;
            }
            sets[nsets++] = optarg;
            break;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'flashsale --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "flashsale: unexpected argument '%s'; try 'flashsale --help'.\n",
                argv[optind]);
        return 2;
    }
    if (conf == NULL) {
        fprintf(stderr, "flashsale: --config FILE is required\n");
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
