/*
 * tls.c — TLS between nodes (tr_node_opts.tls): the certificate, key and CA files read and checked
 * once at start, and nng's TLS configs made from them — one for the listener (server), one per
 * dialer (client; each names the host it dials, which the acceptor's certificate must carry).
 *
 * nng's TLS (tls+tcp://, Debian 12's nng 1.5.2 built with mbedTLS 2.28) wraps the same stream
 * API the node uses for TCP, so the connection code is the same with or without TLS; the node's
 * addresses stay tcp:// (in the config, in HELLO and MEMBERS frames) and become tls+tcp:// only
 * in the URLs given to nng. The files are read into memory here so that a file missing or
 * malformed stops the start with a message naming it, and a dialer made later (a peer learnt an
 * hour after start) does not depend on the files still being there.
 *
 * The checks (mbedTLS's x509 and pk parsers): each file parses; the key is not readable by group
 * or others (like cluster.secret_file); the key matches the certificate. An expired certificate
 * of the node's own is logged but not refused: the peers refuse it (tests show that), and a
 * clock set wrong on one machine should not stop a node from telling why it cannot join.
 */
#include "node_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <nng/supplemental/tls/tls.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TLS_FILE_MAX (1024u * 1024u) /* a PEM file larger than this is not a certificate or key */

/* Reads the whole file `path` (what: "certificate", ...) into a NUL-terminated buffer. A secret
 * file (the key) is refused when group or others may read or write it. */
static int read_pem(const tr_node *n, const char *what, const char *path, bool secret,
                    char **out, size_t *len)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0') {
        tr__node_log_at(n, TR_LOG_ERROR, "TLS: no %s file given", what);
        return TR_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        char buf[128];
        tr__node_log_at(n, TR_LOG_ERROR, "TLS: cannot read the %s file %s: %s", what, path,
                        strerror_r(errno, buf, sizeof buf));
        if (fd >= 0)
            close(fd);
        return TR_EINVAL;
    }
    int rc = TR_OK;
    if (!S_ISREG(st.st_mode)) {
        tr__node_log_at(n, TR_LOG_ERROR, "TLS: the %s file %s is not a regular file", what, path);
        rc = TR_EINVAL;
    } else if (secret && (st.st_mode & 077) != 0) {
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the %s file %s can be read or written by others (mode %03o; "
                        "chmod 600)", what, path, (unsigned)(st.st_mode & 0777));
        rc = TR_EINVAL;
    } else if (st.st_size <= 0 || (uint64_t)st.st_size > TLS_FILE_MAX) {
        tr__node_log_at(n, TR_LOG_ERROR, "TLS: the %s file %s is %s", what, path,
                        st.st_size <= 0 ? "empty" : "above 1 MiB");
        rc = TR_EINVAL;
    }
    char *b = NULL;
    size_t got = 0;
    if (rc == TR_OK) {
        b = malloc((size_t)st.st_size + 1);
        if (b == NULL)
            rc = TR_ENOMEM;
    }
    while (rc == TR_OK && got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            tr__node_log_at(n, TR_LOG_ERROR, "TLS: cannot read the %s file %s", what, path);
            rc = TR_EINVAL;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (rc != TR_OK) {
        if (b != NULL) {
            memset(b, 0, (size_t)st.st_size);
            free(b);
        }
        return rc;
    }
    b[got] = '\0';
    if (strlen(b) != got) {
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the %s file %s is not PEM text (a NUL byte)", what, path);
        memset(b, 0, got);
        free(b);
        return TR_EINVAL;
    }
    *out = b;
    *len = got;
    return TR_OK;
}

/* Parses the files' contents: the certificate and the CA as certificates, the key as a key that
 * matches the certificate. Warns when the certificate has expired or is not yet valid. */
static int check_files(const tr_node *n, const tr_node_tls *o, const node_tls *t)
{
    mbedtls_x509_crt crt, ca;
    mbedtls_pk_context pk;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&ca);
    mbedtls_pk_init(&pk);
    int rc = TR_OK;
    if (mbedtls_x509_crt_parse(&crt, (const unsigned char *)t->cert, strlen(t->cert) + 1) != 0) {
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the certificate file %s holds no valid PEM certificate", o->cert);
        rc = TR_EINVAL;
    } else if (t->ca != NULL &&
               mbedtls_x509_crt_parse(&ca, (const unsigned char *)t->ca, strlen(t->ca) + 1) != 0) {
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the CA file %s holds no valid PEM certificate", o->ca);
        rc = TR_EINVAL;
    } else if (mbedtls_pk_parse_key(&pk, (const unsigned char *)t->key, t->key_len + 1, NULL,
                                    0) != 0) {
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the key file %s holds no valid PEM private key (an encrypted key "
                        "is not supported)", o->key);
        rc = TR_EINVAL;
    } else if (mbedtls_pk_check_pair(&crt.pk, &pk) != 0) {
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the key in %s does not match the certificate in %s", o->key, o->cert);
        rc = TR_EINVAL;
    } else if (mbedtls_x509_time_is_past(&crt.valid_to) ||
               mbedtls_x509_time_is_future(&crt.valid_from)) {
        const mbedtls_x509_time *w =
            mbedtls_x509_time_is_past(&crt.valid_to) ? &crt.valid_to : &crt.valid_from;
        tr__node_log_at(n, TR_LOG_ERROR,
                        "TLS: the certificate in %s %s %04d-%02d-%02d: peers will refuse it",
                        o->cert, w == &crt.valid_to ? "expired on" : "is not valid before",
                        w->year, w->mon, w->day);
    }
    mbedtls_pk_free(&pk);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

static void tls_free(node_tls *t)
{
    if (t == NULL)
        return;
    if (t->key != NULL) {
        memset(t->key, 0, t->key_len);
        free(t->key);
    }
    free(t->cert);
    free(t->ca);
    free(t->server_name);
    free(t);
}

void tr__tls_free(tr_node *n)
{
    tls_free(n->tls);
    n->tls = NULL;
}

int tr__tls_load(tr_node *n, const tr_node_tls *o)
{
    if (o == NULL)
        return TR_OK;
    if (o->verify != TR_TLS_VERIFY_REQUIRED && o->verify != TR_TLS_VERIFY_OPTIONAL &&
        o->verify != TR_TLS_VERIFY_NONE) {
        tr__node_log_at(n, TR_LOG_ERROR, "TLS: verify must be required, optional or none");
        return TR_EINVAL;
    }
    if (o->server_name != NULL && (o->server_name[0] == '\0' || strlen(o->server_name) > 255)) {
        tr__node_log_at(n, TR_LOG_ERROR, "TLS: server_name must be 1 to 255 bytes");
        return TR_EINVAL;
    }
    node_tls *t = calloc(1, sizeof *t);
    if (t == NULL)
        return TR_ENOMEM;
    t->verify = o->verify;
    size_t len;
    int rc = read_pem(n, "certificate", o->cert, false, &t->cert, &len);
    if (rc == TR_OK)
        rc = read_pem(n, "key", o->key, true, &t->key, &t->key_len);
    if (rc == TR_OK && (o->verify != TR_TLS_VERIFY_NONE || o->ca != NULL))
        rc = read_pem(n, "CA", o->ca, false, &t->ca, &len);
    if (rc == TR_OK && o->server_name != NULL &&
        (t->server_name = strdup(o->server_name)) == NULL)
        rc = TR_ENOMEM;
    if (rc == TR_OK)
        rc = check_files(n, o, t);
    if (rc != TR_OK) {
        tls_free(t);
        return rc;
    }
    n->tls = t;
    return TR_OK;
}

void tr__tls_url(const tr_node *n, const char *addr, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", n->tls != NULL ? "tls+" : "", addr);
}

/* A TLS config of the given mode holding the node's certificate and its CA. */
static int config_new(tr_node *n, nng_tls_mode mode, nng_tls_config **out)
{
    node_tls *t = n->tls;
    nng_tls_config *cfg;
    int rv = nng_tls_config_alloc(&cfg, mode);
    if (rv != 0)
        return rv;
    rv = nng_tls_config_own_cert(cfg, t->cert, t->key, NULL);
    if (rv == 0 && t->ca != NULL)
        rv = nng_tls_config_ca_chain(cfg, t->ca, NULL);
    if (rv != 0) {
        nng_tls_config_free(cfg);
        return rv;
    }
    *out = cfg;
    return 0;
}

int tr__tls_listener(tr_node *n, nng_stream_listener *l)
{
    if (n->tls == NULL)
        return 0;
    nng_tls_config *cfg;
    int rv = config_new(n, NNG_TLS_MODE_SERVER, &cfg);
    if (rv != 0)
        return rv;
    /* only "required" asks the dialer for a certificate: mbedTLS's "optional" would accept a
     * bad one too, which is no better than none */
    rv = nng_tls_config_auth_mode(cfg, n->tls->verify == TR_TLS_VERIFY_REQUIRED
                                           ? NNG_TLS_AUTH_MODE_REQUIRED
                                           : NNG_TLS_AUTH_MODE_NONE);
    if (rv == 0)
        rv = nng_stream_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg); /* the listener holds it */
    return rv;
}

int tr__tls_dialer(tr_node *n, nng_stream_dialer *d, const char *addr)
{
    if (n->tls == NULL)
        return 0;
    nng_tls_config *cfg;
    int rv = config_new(n, NNG_TLS_MODE_CLIENT, &cfg);
    if (rv != 0)
        return rv;
    rv = nng_tls_config_auth_mode(cfg, n->tls->verify == TR_TLS_VERIFY_NONE
                                           ? NNG_TLS_AUTH_MODE_NONE
                                           : NNG_TLS_AUTH_MODE_REQUIRED);
    if (rv == 0) {
        /* the name the acceptor's certificate must carry: the cluster's, or the host dialed */
        char host[TR_WIRE_ADDR_MAX + 1];
        const char *name = n->tls->server_name;
        if (name == NULL) {
            const char *h = strstr(addr, "://");
            h = h != NULL ? h + 3 : addr;
            const char *colon = strrchr(h, ':');
            size_t hl = colon != NULL ? (size_t)(colon - h) : strlen(h);
            if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [::1] */
                h++;
                hl -= 2;
            }
            snprintf(host, sizeof host, "%.*s", (int)hl, h);
            name = host;
        }
        rv = nng_tls_config_server_name(cfg, name);
    }
    if (rv == 0)
        rv = nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg); /* the dialer holds it */
    return rv;
}
