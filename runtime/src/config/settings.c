/*
 * settings.c — an application's settings (troupe/config.h): its libconfig file, the command
 * line's KEY=VALUE overrides, and a schema every setting is checked against. Both apps read their
 * settings this way (the flash sale's and the social network's main.c), so a typo in either is
 * refused the same way: where it came from and the closest known name.
 */
#include "troupe/config.h"

#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int tr_config_set(config_t *cfg, const char *kv, char *err, size_t errlen)
{
    const char *eq = kv != NULL ? strchr(kv, '=') : NULL;
    if (cfg == NULL || eq == NULL || eq == kv) {
        snprintf(err, errlen, "--set wants KEY=VALUE, not %s", kv != NULL ? kv : "(null)");
        return TR_EINVAL;
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
            bool quoted =
                vl >= 2 && value[0] == '"' && value[vl - 1] == '"' && vl < sizeof unquoted;
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
                return TR_EINVAL;
            }
            if (number)
                config_setting_set_int64(m, n);
            else
                config_setting_set_string(m, value);
            return TR_OK;
        }
        if (m == NULL)
            m = config_setting_add(g, tok, CONFIG_TYPE_GROUP);
        if (m == NULL || config_setting_type(m) != CONFIG_TYPE_GROUP) {
            snprintf(err, errlen, "--set %s: %s is not a group", kv, tok);
            return TR_EINVAL;
        }
        g = m;
        tok = next;
    }
    snprintf(err, errlen, "--set %s: no key", kv);
    return TR_EINVAL;
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

typedef struct check {
    const char *file;
    const char *const *sets;
    int nsets;
    const tr_setting *schema;
    size_t n;
    char *err;
    size_t errlen;
} check;

/* Where a setting came from: "FILE:LINE", or the --set that made it. */
static void origin(const check *c, const config_setting_t *st, const char *path, char *out,
                   size_t cap)
{
    unsigned line = config_setting_source_line(st);
    if (line > 0) {
        const char *f = config_setting_source_file(st);
        snprintf(out, cap, "%s:%u", f != NULL ? f : c->file, line);
        return;
    }
    size_t pl = strlen(path);
    for (int i = c->nsets - 1; i >= 0; i--) /* a later --set wins: name the last that matches */
        if (strncmp(c->sets[i], path, pl) == 0 &&
            (c->sets[i][pl] == '=' || c->sets[i][pl] == '.')) {
            snprintf(out, cap, "--set %s", c->sets[i]);
            return;
        }
    snprintf(out, cap, "%s", c->file);
}

/* Checks every setting under g (whose path is prefix) against the schema. */
static bool check_group(const check *c, const config_setting_t *g, const char *prefix)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *st = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(st);
        char path[256], where[600];
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", name ? name : "?");
        const tr_setting *known = NULL;
        size_t best = 1000, k = 0;
        for (size_t j = 0; j < c->n; j++) {
            if (strcmp(c->schema[j].path, path) == 0)
                known = &c->schema[j];
            size_t d = distance(c->schema[j].path, path);
            if (d < best) {
                best = d;
                k = j;
            }
        }
        origin(c, st, path, where, sizeof where);
        if (known == NULL) {
            size_t pl = strlen(path);
            bool suffix = false; /* a known name ending in this one is the best guess */
            for (size_t j = 0; j < c->n && !suffix; j++) {
                size_t kl = strlen(c->schema[j].path); /* "email" for "flashsale.email" */
                if (kl > pl && c->schema[j].path[kl - pl - 1] == '.' &&
                    strcmp(c->schema[j].path + kl - pl, path) == 0) {
                    suffix = true;
                    best = 0;
                    k = j;
                }
            }
            if (best <= 3)
                snprintf(c->err, c->errlen, "%s: unknown setting %s (did you mean %s?)", where,
                         path, c->schema[k].path);
            else
                snprintf(c->err, c->errlen, "%s: unknown setting %s", where, path);
            return false;
        }
        int t = config_setting_type(st);
        bool isint = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
        bool ok = known->kind == TR_SETTING_GROUP || known->kind == TR_SETTING_FOREIGN
                      ? t == CONFIG_TYPE_GROUP
                  : known->kind == TR_SETTING_INT ? isint
                  : known->kind == TR_SETTING_STR ? t == CONFIG_TYPE_STRING
                                                  : t == CONFIG_TYPE_LIST;
        if (known->kind == TR_SETTING_INT) {
            long long v = isint ? config_setting_get_int64(st) : 0;
            if (!isint || v < known->min || v > known->max) {
                snprintf(c->err, c->errlen, "%s: %s must be a whole number from %lld to %lld",
                         where, path, known->min, known->max);
                return false;
            }
        }
        if (!ok) {
            snprintf(c->err, c->errlen, "%s: %s must be %s", where, path,
                     known->kind == TR_SETTING_GROUP || known->kind == TR_SETTING_FOREIGN
                         ? "a group { ... }"
                     : known->kind == TR_SETTING_STR ? "a string in double quotes"
                                                     : "a list ( ... )");
            return false;
        }
        if (known->kind == TR_SETTING_GROUP && !check_group(c, st, path))
            return false;
    }
    return true;
}

int tr_config_app_load(config_t *cfg, const char *file, const char *const *sets, int nsets,
                       const tr_setting *schema, size_t n, char *err, size_t errlen)
{
    if (cfg == NULL || file == NULL || schema == NULL || err == NULL || errlen == 0)
        return TR_EINVAL;
    int rc = tr_config_read(cfg, file, err, errlen);
    if (rc != TR_OK)
        return rc;
    for (int i = 0; i < nsets; i++)
        if (tr_config_set(cfg, sets[i], err, errlen) != TR_OK)
            return TR_EINVAL;
    check c = {.file = file, .sets = sets, .nsets = nsets, .schema = schema, .n = n,
               .err = err, .errlen = errlen};
    return check_group(&c, config_root_setting(cfg), "") ? TR_OK : TR_EINVAL;
}

int tr_config_secret(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    struct stat st;
    if (path == NULL || out == NULL || cap < 3)
        return TR_EINVAL;
    FILE *f = fopen(path, "r");
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return TR_EINVAL;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen, "%s: others can read or write it (mode %03o; chmod 600)", path,
                 (unsigned)(st.st_mode & 0777));
        fclose(f);
        return TR_EINVAL;
    }
    size_t n = fgets(out, (int)cap, f) != NULL ? strlen(out) : 0;
    fclose(f);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    if (n == 0 || n > cap - 2) {
        snprintf(err, errlen, "%s: %s", path, n == 0 ? "empty" : "the secret is too long");
        return TR_EINVAL;
    }
    return TR_OK;
}
