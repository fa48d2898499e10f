/*
 * search_index_bench.c — build/bin/search-index-bench [USERS] [QUERIES]: the search read model's
 * core alone (actors/search_index.h), one thread, at the scale (docs/performance.md).
 *
 * Builds an index of USERS users (default 1,000,000) named as social-load names them (username
 * TAG_<index in base 36>, name: two of 32 first and 32 last names, so each name word is shared
 * by ~1/32 of the users), with 3 images each; then times QUERIES queries (default 100,000) of
 * social-load's search mix (half a username prefix of at least the tag and one character, half
 * one name word; limit 10, images 3), and 20,000 of each of three more kinds: two whole name
 * words, a name word and a 3-letter prefix of another, a 2-letter prefix of a name word (a '!'
 * after it keeps it out of the username tiers). Prints per kind the mean, p50, p99, p99.9 and
 * max in µs, the build's time and search_index_bytes per user. Figures, not verdicts.
 */
#include "actors/search_index.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const FIRST[32] = {
    "Ada", "Alan", "Amara", "Anya", "Bruno", "Chen", "Dara", "Elif", "Emeka", "Farah", "Gita",
    "Hugo", "Ines", "Ivan", "Jonas", "Kenji", "Lena", "Luca", "Maya", "Nadia", "Omar", "Priya",
    "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Vera", "Wren", "Yara", "Zane", "Noor"};
static const char *const LAST[32] = {
    "Abara", "Berg", "Costa", "Diallo", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi",
    "Silva", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Novak", "Mendes",
    "Larsen", "Khan", "Dubois", "Ahn"};
static const char TAG[] = "s1bench";
static uint64_t rng = 1;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rnd(void)
{
    return mix64(rng += 0x9E3779B97F4A7C15ull);
}

/* social-load's user_name, name_words and search_q (apps/social/src/load.c) */
static void user_name(uint32_t i, char out[48])
{
    char d[8];
    int k = 0;
    do {
        d[k++] = "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36];
        i /= 36;
    } while (i > 0 && k < 8);
    int n = snprintf(out, 48, "%s_", TAG);
    while (k > 0 && n < 47)
        out[n++] = d[--k];
    out[n] = '\0';
}

static void name_words(uint32_t i, const char **first, const char **last)
{
    uint64_t h = mix64(i + 1ull);
    *first = FIRST[h % 32];
    *last = LAST[(h >> 8) % 32];
}

static void search_q(uint32_t i, uint32_t v, char q[48])
{
    if (v & 1) {
        const char *f, *l;
        name_words(i, &f, &l);
        snprintf(q, 48, "%s", (v & 2) ? f : l);
        return;
    }
    user_name(i, q);
    size_t min = strlen(TAG) + 2, len = strlen(q);
    q[min + (v >> 2) % (len - min + 1)] = '\0';
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_kind(const char *name, double *lat, size_t n)
{
    if (n == 0)
        return;
    qsort(lat, n, sizeof *lat, cmp_double);
    double sum = 0;
    for (size_t k = 0; k < n; k++)
        sum += lat[k];
    printf("%-22s %7zu queries: mean %.1f, p50 %.1f, p99 %.1f, p99.9 %.1f, max %.1f us\n", name,
           n, sum / (double)n, lat[n / 2], lat[n * 99 / 100], lat[n * 999 / 1000], lat[n - 1]);
}

int main(int argc, char **argv)
{
    static const char use[] = "usage: search-index-bench [USERS (1..10000000)] [QUERIES]\n"
                              "  (or --users N, --queries N; defaults 1000000 and 100000)\n";
    static const struct option longopts[] = {{"users", required_argument, NULL, 'u'},
                                             {"queries", required_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    long users = 1000000, queries = 100000;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u': users = strtol(optarg, NULL, 10); break;
        case 'q': queries = strtol(optarg, NULL, 10); break;
        case 'h': fputs(use, stdout); return 0;
        default: /* getopt_long said what is wrong */
            fprintf(stderr, "Try 'search-index-bench --help'.\n");
            return 2;
        }
    }
    if (optind < argc) /* the positional form: USERS [QUERIES] */
        users = strtol(argv[optind++], NULL, 10);
    if (optind < argc)
        queries = strtol(argv[optind++], NULL, 10);
    if (optind < argc || users < 1 || users > 10000000 || queries < 1 || queries > 10000000) {
        fputs(use, stderr);
        return 2;
    }
    uint32_t n = (uint32_t)users;
    size_t nq = (size_t)queries;
    search_index *ix = search_index_new(20);
    double *lat = malloc((nq > 20000 ? nq : 20000) * sizeof *lat);
    double *lat2 = malloc(nq * sizeof *lat2);
    search_hit hits[10];
    int rc = 1;
    if (ix == NULL || lat == NULL || lat2 == NULL) {
        fprintf(stderr, "search-index-bench: out of memory\n");
        goto out;
    }
    char id[48], un[48], name[64], post[64], url[128];
    double t0 = now_us();
    for (uint32_t i = 0; i < n; i++) {
        const char *f, *l;
        snprintf(id, sizeof id, "u%016llx", (unsigned long long)mix64(i));
        user_name(i, un);
        name_words(i, &f, &l);
        snprintf(name, sizeof name, "%s %s", f, l);
        if (search_index_put_user(ix, id, un, name) != 0) {
            fprintf(stderr, "search-index-bench: put_user failed\n");
            goto out;
        }
    }
    double t1 = now_us();
    for (uint32_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "u%016llx", (unsigned long long)mix64(i));
        for (unsigned k = 0; k < 3; k++) {
            snprintf(post, sizeof post, "%s.%u", id, k);
            snprintf(url, sizeof url, "https://img.example/%s/%llu.jpg", TAG,
                     (unsigned long long)i * 3 + k);
            if (search_index_add_image(ix, id, post, url, 1000000ull * i + k) != 0) {
                fprintf(stderr, "search-index-bench: add_image failed\n");
                goto out;
            }
        }
    }
    double t2 = now_us();
    printf("%u users: put_user %.2f us each, add_image %.2f us each; %.0f bytes per user\n", n,
           (t1 - t0) / n, (t2 - t1) / (3.0 * n), (double)search_index_bytes(ix) / n);

    size_t nw = 0, np = 0;
    for (size_t k = 0; k < nq; k++) {
        uint32_t i = (uint32_t)(rnd() % n), v = (uint32_t)rnd();
        char q[48];
        size_t got;
        search_q(i, v, q);
        double a = now_us();
        int qrc = search_index_query(ix, q, strlen(q), 10, 3, hits, &got);
        double b = now_us();
        if (qrc != 0) {
            fprintf(stderr, "search-index-bench: query %s failed\n", q);
            goto out;
        }
        if (v & 1)
            lat2[nw++] = b - a;
        else
            lat[np++] = b - a;
    }
    print_kind("username prefix", lat, np);
    print_kind("one name word", lat2, nw);
    static const char *const kinds[3] = {"two name words", "word + 3-letter prefix",
                                         "2-letter prefix"};
    for (int kind = 0; kind < 3; kind++) {
        size_t m = 0;
        for (unsigned t = 0; t < 20000; t++) {
            uint32_t i = (uint32_t)(rnd() % n);
            const char *f, *l;
            char q[64];
            size_t got;
            name_words(i, &f, &l);
            if (kind == 0)
                snprintf(q, sizeof q, "%s %s", f, l);
            else if (kind == 1)
                snprintf(q, sizeof q, "%s %.3s", f, l);
            else
                snprintf(q, sizeof q, "%.2s!", l);
            double a = now_us();
            int qrc = search_index_query(ix, q, strlen(q), 10, 3, hits, &got);
            double b = now_us();
            if (qrc != 0) {
                fprintf(stderr, "search-index-bench: query %s failed\n", q);
                goto out;
            }
            lat[m++] = b - a;
        }
        print_kind(kinds[kind], lat, m);
    }
    rc = 0;
out:
    search_index_free(ix);
    free(lat);
    free(lat2);
    return rc;
}
