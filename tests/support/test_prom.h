/*
 * test_prom.h — reading a Prometheus text exposition (format 0.0.4) in tests: a checker of the
 * conventions the runtime promises (troupe/metrics.h) and a lookup of one sample's value.
 *
 * tp_check reads every line: "# HELP name text" then "# TYPE name counter|gauge|histogram" before
 * a family's samples (each family once); sample lines "name{l="v",...} value" whose name is the
 * family's (a histogram's: name_bucket with an le label, name_sum, name_count; a counter's name
 * ends in _total); label names well formed, label values with only the escapes \\ \" \n; values
 * that parse as numbers (or NaN, +Inf, -Inf); histogram buckets cumulative and ending in
 * le="+Inf" equal to _count. It prints each problem and returns how many there were.
 */
#ifndef TROUPE_TEST_PROM_H
#define TROUPE_TEST_PROM_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline bool tp_name_char(char c, bool first, bool colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
           (!first && c >= '0' && c <= '9');
}

/* Reads a name at *p (metric: colons allowed); its length, 0 if none. */
static inline size_t tp_name(const char *p, bool colon)
{
    size_t n = 0;
    while (tp_name_char(p[n], n == 0, colon))
        n++;
    return n;
}

static inline bool tp_value_ok(const char *s)
{
    if (strcmp(s, "NaN") == 0 || strcmp(s, "+Inf") == 0 || strcmp(s, "-Inf") == 0)
        return true;
    char *end;
    strtod(s, &end);
    return end != s && *end == '\0';
}

#define TP_FAIL(...)                                                                           \
    do {                                                                                       \
        fprintf(stderr, "prom: line %d: ", lineno);                                            \
        fprintf(stderr, __VA_ARGS__);                                                          \
        fprintf(stderr, "\n");                                                                 \
        bad++;                                                                                 \
    } while (0)

static inline int tp_check(const char *text)
{
    int bad = 0, lineno = 0;
    char fam[256] = "", help_for[256] = "", type[16] = "";
    char seen[512][128];
    int nseen = 0;
    double last_cum = -1, count_expect = -1;
    char *copy = strdup(text);
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (strncmp(line, "# HELP ", 7) == 0) {
            size_t n = tp_name(line + 7, true);
            if (n == 0 || line[7 + n] != ' ')
                TP_FAIL("bad HELP: %s", line);
            snprintf(help_for, sizeof help_for, "%.*s", (int)n, line + 7);
            for (const char *h = line + 8 + n; *h != '\0'; h++)
                if (*h == '\\' && h[1] != '\\' && h[1] != 'n')
                    TP_FAIL("bad escape in HELP: %s", line);
                else if (*h == '\\')
                    h++;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            size_t n = tp_name(line + 7, true);
            snprintf(fam, sizeof fam, "%.*s", (int)n, line + 7);
            snprintf(type, sizeof type, "%s", line + 8 + n);
            if (strcmp(fam, help_for) != 0)
                TP_FAIL("TYPE without HELP before it: %s", line);
            if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram"))
                TP_FAIL("unknown type: %s", line);
            if (strcmp(type, "counter") == 0 &&
                (n < 6 || strcmp(fam + n - 6, "_total") != 0))
                TP_FAIL("counter not named _total: %s", fam);
            for (int i = 0; i < nseen; i++)
                if (strcmp(seen[i], fam) == 0)
                    TP_FAIL("family %s twice", fam);
            if (nseen < 512)
                snprintf(seen[nseen++], sizeof seen[0], "%s", fam);
            last_cum = -1;
            continue;
        }
        if (line[0] == '#')
            continue;
        size_t n = tp_name(line, true);
        if (n == 0) {
            TP_FAIL("not a sample: %s", line);
            continue;
        }
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)n, line);
        const char *suffix = "";
        size_t fl = strlen(fam);
        if (strncmp(name, fam, fl) == 0)
            suffix = name + fl;
        else
            TP_FAIL("sample %s outside its family %s", name, fam);
        bool hist = strcmp(type, "histogram") == 0;
        if (hist ? strcmp(suffix, "_bucket") && strcmp(suffix, "_sum") && strcmp(suffix, "_count")
                 : suffix[0] != '\0')
            TP_FAIL("sample %s does not belong to %s %s", name, type, fam);
        const char *p = line + n;
        bool has_le = false;
        double le = 0;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t ln = tp_name(p, false);
                if (ln == 0 || p[ln] != '=' || p[ln + 1] != '"') {
                    TP_FAIL("bad label: %s", line);
                    break;
                }
                bool is_le = ln == 2 && strncmp(p, "le", 2) == 0;
                p += ln + 2;
                const char *v = p;
                while (*p != '"' && *p != '\0') {
                    if (*p == '\\') {
                        if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                            TP_FAIL("bad escape in a label value: %s", line);
                        p++;
                    }
                    if (*p != '\0')
                        p++;
                }
                if (*p != '"') {
                    TP_FAIL("unterminated label value: %s", line);
                    break;
                }
                if (is_le) {
                    has_le = true;
                    le = strncmp(v, "+Inf", 4) == 0 ? 1e308 : strtod(v, NULL);
                }
                p++;
                if (*p == ',')
                    p++;
                else if (*p != '}') {
                    TP_FAIL("bad label list: %s", line);
                    break;
                }
            }
            if (*p == '}')
                p++;
        }
        if (*p != ' ' || !tp_value_ok(p + 1)) {
            TP_FAIL("bad value: %s", line);
            continue;
        }
        double v = strtod(p + 1, NULL);
        if (hist && strcmp(suffix, "_bucket") == 0) {
            if (!has_le)
                TP_FAIL("bucket without le: %s", line);
            if (last_cum >= 0 && v < last_cum)
                TP_FAIL("buckets not cumulative: %s", line);
            last_cum = v;
            if (le >= 1e308)
                count_expect = v, last_cum = -1;
        } else if (hist && strcmp(suffix, "_count") == 0) {
            if (count_expect != v)
                TP_FAIL("_count is not the +Inf bucket: %s", line);
            count_expect = -1;
        }
    }
    free(copy);
    return bad;
}

/* The value of the first sample whose line starts with `series` (name and labels exactly as
 * written, e.g. "troupe_actors{behaviour=\"echo\"}") followed by a space; -1 when none. */
static inline double tp_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

#endif
