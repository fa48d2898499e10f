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
#include <libconfig.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <troupe/config.h>
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

/* Sets path (a.b.c) to value in cfg, creating groups as needed. */
static int set_value(config_t *cfg, const char *kv, char *err, size_t errlen)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq == kv) {
        snprintf(err, errlen, "--set wants KEY=VALUE, not %s", kv);
        return -1;
    }
    char path[256];
    snprintf(path, sizeof path, "%.*s", (int)(eq - kv), kv);
    const char *value = eq + 1;
    config_setting_t *g = config_root_setting(cfg);
    char *save = NULL;
    char *tok = strtok_r(path, ".", &save);
    while (tok != NULL) {
        char *next = strtok_r(NULL, ".", &save);
        config_setting_t *m = config_setting_get_member(g, tok);
        if (next == NULL) {
            /* "..." is a string as written (the quotes dropped), even one of digits */
            char unquoted[1024];
            size_t vl = strlen(value);
            bool quoted = vl >= 2 && value[0] == '"' && value[vl - 1] == '"' && vl < sizeof unquoted;
            if (quoted) {
                memcpy(unquoted, value + 1, vl - 2);
                unquoted[vl - 2] = '\0';
                value = unquoted;
            }
            char *end;
            long long n = strtoll(value, &end, 10);
            bool number = !quoted && *value != '\0' && *end == '\0';
            if (m != NULL)
                config_setting_remove(g, tok);
            m = config_setting_add(g, tok, number ? CONFIG_TYPE_INT64 : CONFIG_TYPE_STRING);
            if (m == NULL) {
                snprintf(err, errlen, "--set %s: cannot set it", kv);
                return -1;
            }
            if (number)
                config_setting_set_int64(m, n);
            else
                config_setting_set_string(m, value);
            return 0;
        }
        if (m == NULL)
            m = config_setting_add(g, tok, CONFIG_TYPE_GROUP);
        if (m == NULL || config_setting_type(m) != CONFIG_TYPE_GROUP) {
            snprintf(err, errlen, "--set %s: %s is not a group", kv, tok);
            return -1;
        }
        g = m;
        tok = next;
    }
    return 0;
}

static long long get_int(const config_t *cfg, const char *path, long long def)
{
    long long v;
    return config_lookup_int64(cfg, path, &v) == CONFIG_TRUE ? v : def;
}

/* The numeric settings and their ranges: a value out of range (or not a number) is an error,
 * not a silent default. */
static const struct {
    const char *path;
    long long min, max;
} ranges[] = {
    {"flashsale.http.port", 0, 65535},
    {"flashsale.http.threads", 1, 64},
    {"flashsale.http.max_request", 1024, 16 << 20},
    {"flashsale.http.request_timeout_ms", 1, 3600000},
    {"flashsale.http.max_connections", 1, 1000000},
    {"flashsale.http.max_per_client", 0, 1000000},
    {"flashsale.http.run_actors", 0, 100000},
    {"flashsale.email.smtp.timeout_ms", 1, 600000},
    {"flashsale.email.retry_min_ms", 1, 3600000},
    {"flashsale.email.retry_max_ms", 1, 3600000},
    {"flashsale.email.rate", 1, 1000000},
    {"flashsale.email.burst", 1, 1000000},
    {"flashsale.admission.rate", 0, 10000000},
    {"flashsale.admission.burst", 0, 10000000},
    {"flashsale.call_timeout_ms", 1, 3600000},
    {"flashsale.workers", 0, 1024},
};

/* Every setting the flash sale reads, and its kind: anything else in the file or from --set is an
 * error that names the setting, where it came from, and the closest known name. (The store and
 * cluster groups are checked as strictly by troupe's own loaders.) */
enum { K_GROUP, K_INT, K_STR, K_NODES };
static const struct {
    const char *path;
    int kind;
} known[] = {
    {"flashsale", K_GROUP},
    {"flashsale.data", K_STR},
    {"flashsale.workers", K_INT},
    {"flashsale.call_timeout_ms", K_INT},
    {"flashsale.admin_token_file", K_STR},
    {"flashsale.nodes", K_NODES},
    {"flashsale.http", K_GROUP},
    {"flashsale.http.host", K_STR},
    {"flashsale.http.port", K_INT},
    {"flashsale.http.threads", K_INT},
    {"flashsale.http.max_request", K_INT},
    {"flashsale.http.request_timeout_ms", K_INT},
    {"flashsale.http.max_connections", K_INT},
    {"flashsale.http.max_per_client", K_INT},
    {"flashsale.http.run_actors", K_INT},
    {"flashsale.admission", K_GROUP},
    {"flashsale.admission.rate", K_INT},
    {"flashsale.admission.burst", K_INT},
    {"flashsale.email", K_GROUP},
    {"flashsale.email.rate", K_INT},
    {"flashsale.email.burst", K_INT},
    {"flashsale.email.from", K_STR},
    {"flashsale.email.to_domain", K_STR},
    {"flashsale.email.provider", K_STR},
    {"flashsale.email.maildir", K_STR},
    {"flashsale.email.smtp", K_GROUP},
    {"flashsale.email.smtp.url", K_STR},
    {"flashsale.email.smtp.timeout_ms", K_INT},
    {"flashsale.email.retry_min_ms", K_INT},
    {"flashsale.email.retry_max_ms", K_INT},
    {"store", K_GROUP},   /* its members: troupe's store loader */
    {"cluster", K_GROUP}, /* its members: troupe's cluster loader */
};

/* Reads a secret (the admin token) from a file only its owner can read: the first line, its line
 * end removed. False, with the reason on stderr, when the file is missing, readable or writable by
 * group or others, empty, or longer than cap - 2 bytes. */
static bool read_secret(const char *path, char *out, size_t cap)
{
    struct stat st;
    FILE *f = fopen(path, "r");
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "flashsale: admin_token_file %s: %s\n", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return false;
    }
    if ((st.st_mode & 077) != 0) {
        fprintf(stderr, "flashsale: admin_token_file %s: others can read or write it (mode %03o; "
                        "chmod 600)\n", path, (unsigned)(st.st_mode & 0777));
        fclose(f);
        return false;
    }
    size_t n = fgets(out, (int)cap, f) != NULL ? strlen(out) : 0;
    fclose(f);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    if (n == 0 || n > cap - 2) {
        fprintf(stderr, "flashsale: admin_token_file %s: %s\n", path,
                n == 0 ? "empty" : "the token is longer than 256 bytes");
        return false;
    }
    return true;
}

/* Levenshtein distance of a and b (short strings), for "did you mean". */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), d[128];
    if (la >= 127 || lb >= 127)
        return 1000;
    for (size_t j = 0; j <= lb; j++)
        d[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = d[0];
        d[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = d[j];
            size_t sub = prev + (a[i - 1] != b[j - 1]);
            size_t del = d[j] + 1, ins = d[j - 1] + 1;
            d[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = cur;
        }
    }
    return d[lb];
}

/* Where a setting came from: "FILE:LINE", or the --set that made it. */
static void origin(const config_setting_t *st, const char *path, const char *conf,
                   const char *const *sets, int nsets, char *out, size_t cap)
{
    unsigned line = config_setting_source_line(st);
    if (line > 0) {
        const char *f = config_setting_source_file(st);
        snprintf(out, cap, "%s:%u", f != NULL ? f : conf, line);
        return;
    }
    size_t pl = strlen(path);
    for (int i = nsets - 1; i >= 0; i--) /* a later --set wins: name the last that matches */
        if (strncmp(sets[i], path, pl) == 0 && (sets[i][pl] == '=' || sets[i][pl] == '.')) {
            snprintf(out, cap, "--set %s", sets[i]);
            return;
        }
    snprintf(out, cap, "%s", conf);
}

/* Checks every setting under g (whose path is prefix) against `known`. */
static bool check_known(const config_setting_t *g, const char *prefix, const char *conf,
                        const char *const *sets, int nsets)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *st = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(st);
        char path[256], where[600];
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", name ? name : "?");
        int kind = -1;
        size_t best = 1000, k = 0;
        for (size_t j = 0; j < sizeof known / sizeof known[0]; j++) {
            if (strcmp(known[j].path, path) == 0)
                kind = known[j].kind;
            size_t d = distance(known[j].path, path);
            if (d < best) {
                best = d;
                k = j;
            }
        }
        origin(st, path, conf, sets, nsets, where, sizeof where);
        if (kind < 0) {
            size_t pl = strlen(path);
            for (size_t j = 0; j < sizeof known / sizeof known[0] && best > 3; j++) {
                size_t kl = strlen(known[j].path); /* "email" for "flashsale.email" */
                if (kl > pl && known[j].path[kl - pl - 1] == '.' &&
                    strcmp(known[j].path + kl - pl, path) == 0) {
                    best = 0;
                    k = j;
                }
            }
            if (best <= 3)
                fprintf(stderr, "flashsale: %s: unknown setting %s (did you mean %s?)\n", where,
                        path, known[k].path);
            else
                fprintf(stderr, "flashsale: %s: unknown setting %s\n", where, path);
            return false;
        }
        int t = config_setting_type(st);
        bool ok = kind == K_GROUP   ? t == CONFIG_TYPE_GROUP
                  : kind == K_INT   ? t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64
                  : kind == K_STR   ? t == CONFIG_TYPE_STRING
                                    : t == CONFIG_TYPE_LIST;
        if (!ok) {
            fprintf(stderr, "flashsale: %s: %s must be %s\n", where, path,
                    kind == K_GROUP ? "a group { ... }"
                    : kind == K_INT ? "a whole number"
                    : kind == K_STR ? "a string in double quotes"
                                    : "a list ( { name = ...; http = ...; }, ... )");
            return false;
        }
        if (kind == K_GROUP && strcmp(path, "store") != 0 && strcmp(path, "cluster") != 0 &&
            !check_known(st, path, conf, sets, nsets))
            return false;
    }
    return true;
}

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

static bool check_ranges(const config_t *cfg, const char *conf, const char *const *sets,
                         int nsets)
{
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        const config_setting_t *st = config_lookup(cfg, ranges[i].path);
        if (st == NULL)
            continue;
        int t = config_setting_type(st);
        long long v = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 ? config_setting_get_int64(st)
                                                                     : ranges[i].min - 1;
        if (v < ranges[i].min || v > ranges[i].max) {
            char where[600];
            origin(st, ranges[i].path, conf, sets, nsets, where, sizeof where);
            fprintf(stderr, "flashsale: %s: %s must be a whole number from %lld to %lld\n", where,
                    ranges[i].path, ranges[i].min, ranges[i].max);
            return false;
        }
    }
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
    if (tr_config_read(cfg, conf, err, sizeof err) != TR_OK) {
        fprintf(stderr, "flashsale: %s\n", err);
        return 1;
    }
    for (int i = 0; i < nsets; i++)
        if (set_value(cfg, sets[i], err, sizeof err) != 0) {
            fprintf(stderr, "flashsale: %s\n", err);
            return 2;
        }
    if (!check_known(config_root_setting(cfg), "", conf, sets, nsets) || !check_ranges(cfg, conf, sets, nsets))
        return 2;
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
        set_value(cfg, kv, err, sizeof err);
    }
    /* the store and cluster groups are read by troupe's own loaders, as overridden */
    int rc = tr_store_config_from(cfg, conf, "store", scp, err, sizeof err);
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
        if (!read_secret(admin_file, admin, sizeof admin))
            return 1;
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
    for (int i = 1; i < argc; i++) {
        bool has = i + 1 < argc;
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && has) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "--http") == 0 && has) {
            http = argv[++i];
        } else if (strcmp(argv[i], "--data") == 0 && has) {
            data = argv[++i];
        } else if (strcmp(argv[i], "--node") == 0 && has) {
            node = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && has && nsets < MAX_SETS) {
            sets[nsets++] = argv[++i];
        } else {
            fprintf(stderr, "flashsale: unknown or incomplete option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (conf == NULL) {
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
