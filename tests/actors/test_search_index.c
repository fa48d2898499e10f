/*
 * test_search_index.c — the search read model's core (actors/search_index.h): tiers and their
 * order, Unicode normalisation, renames, images, bad input, and one index of 200,000 generated
 * users checked against a brute-force answer (its time per query and bytes per user are printed,
 * never asserted: tests do not depend on speed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "actors/search_index.h"

#define MAXHITS 64

typedef struct answer {
    search_hit h[MAXHITS];
    size_t n;
    int rc;
} answer;

static answer ask(search_index *ix, const char *q, unsigned limit, unsigned images)
{
    answer a;
    memset(&a, 0, sizeof a);
    assert_true(limit <= MAXHITS);
    a.rc = search_index_query(ix, q, strlen(q), limit, images, a.h, &a.n);
    return a;
}

/* The answer's usernames, "a,b,c", and tiers, "0,1,2". */
static const char *names_of(const answer *a, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < a->n; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i > 0 ? "," : "",
                 a->h[i].username);
    return buf;
}

static const char *tiers_of(const answer *a, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < a->n; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%d", i > 0 ? "," : "", a->h[i].tier);
    return buf;
}

#define ASSERT_ANSWER(ix, q, limit, want_names, want_tiers)                                    \
    do {                                                                                       \
        answer a_ = ask((ix), (q), (limit), 0);                                                \
        char nb_[2048], tb_[512];                                                              \
        assert_int_equal(a_.rc, 0);                                                            \
        assert_string_equal(names_of(&a_, nb_, sizeof nb_), (want_names));                    \
        assert_string_equal(tiers_of(&a_, tb_, sizeof tb_), (want_tiers));                     \
    } while (0)

static void put(search_index *ix, const char *id, const char *username, const char *name)
{
    assert_int_equal(search_index_put_user(ix, id, username, name), 0);
}

/* ---- tiers ---------------------------------------------------------------------------------- */

static void test_tiers_in_order(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    assert_non_null(ix);
    put(ix, "1", "emilez", "Someone Else");
    put(ix, "2", "emile", "Emile Zola");
    put(ix, "3", "aaron", "Emile Aaron");
    put(ix, "4", "emi", "Nobody Here");
    put(ix, "5", "zed", "Emilie Zed");
    put(ix, "6", "bob", "Robert Emile");
    put(ix, "7", "xemile", "X Y");
    /* exact username, then usernames it prefixes, then name words (whole before prefix) */
    ASSERT_ANSWER(ix, "emile", 10, "emile,emilez,aaron,bob", "0,1,2,2");
    ASSERT_ANSWER(ix, "emi", 10, "emi,emile,emilez,aaron,bob,zed", "0,1,1,2,2,2");
    ASSERT_ANSWER(ix, "emilie", 10, "zed", "2");
    ASSERT_ANSWER(ix, "y", 10, "xemile", "2");
    ASSERT_ANSWER(ix, "nothing", 10, "", "");
    /* a user is listed once, at its best tier: emile's own name has "emile" too */
    answer a = ask(ix, "emile", 10, 0);
    for (size_t i = 0; i < a.n; i++)
        for (size_t j = i + 1; j < a.n; j++)
            assert_string_not_equal(a.h[i].id, a.h[j].id);
    assert_int_equal(search_index_users(ix), 7);
    search_index_free(ix);
}

static void test_whole_word_before_prefix(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    put(ix, "1", "amy", "Anna Smith");
    put(ix, "2", "zed", "Ann Smith");
    put(ix, "3", "kim", "Annabel Anna");
    /* "ann" is whole in zed's name, only a prefix in amy's and kim's */
    ASSERT_ANSWER(ix, "ann", 10, "zed,amy,kim", "2,2,2");
    ASSERT_ANSWER(ix, "anna", 10, "amy,kim", "2,2");
    /* two whole matches beat one whole and one prefix, whatever the usernames */
    ASSERT_ANSWER(ix, "anna smith", 10, "amy", "2");
    ASSERT_ANSWER(ix, "ann smith", 10, "zed,amy", "2,2");
    search_index_free(ix);
}

static void test_multi_word(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    put(ix, "1", "u1", "John Smith");
    put(ix, "2", "u2", "John Smithers");
    put(ix, "3", "u3", "Jane Smith");
    put(ix, "4", "u4", "Smith, John-Paul");
    put(ix, "5", "u5", "John John");
    put(ix, "6", "u6", "Johnny");
    ASSERT_ANSWER(ix, "john smith", 10, "u1,u4,u2", "2,2,2");
    ASSERT_ANSWER(ix, "smith john", 10, "u1,u4,u2", "2,2,2");
    ASSERT_ANSWER(ix, "jo sm", 10, "u1,u2,u4", "2,2,2");
    ASSERT_ANSWER(ix, "j sm", 10, "u1,u2,u3,u4", "2,2,2,2");
    ASSERT_ANSWER(ix, "paul", 10, "u4", "2");
    /* a name word serves one query word */
    ASSERT_ANSWER(ix, "john john", 10, "u5", "2");
    ASSERT_ANSWER(ix, "john jo", 10, "u5", "2");
    ASSERT_ANSWER(ix, "john", 10, "u1,u2,u4,u5,u6", "2,2,2,2,2");
    ASSERT_ANSWER(ix, "jo jo jo", 10, "", "");
    /* punctuation splits words in the query as in names */
    ASSERT_ANSWER(ix, "smith,john", 10, "u1,u4,u2", "2,2,2");
    ASSERT_ANSWER(ix, "  john   smith  ", 10, "u1,u4,u2", "2,2,2");
    search_index_free(ix);
}

static void test_unicode(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    put(ix, "1", "émile", "Émile Zola");
    put(ix, "2", "full", "Straße Über");
    put(ix, "3", "ｆｕｌｌｗｉｄｔｈ", "Ｆｕｌｌ Ｗｉｄｔｈ");
    ASSERT_ANSWER(ix, "ÉMILE", 10, "émile", "0");
    ASSERT_ANSWER(ix, "e\xcc\x81mile", 10, "émile", "0");
    ASSERT_ANSWER(ix, "E\xcc\x81M", 10, "émile", "1");
    ASSERT_ANSWER(ix, "zola", 10, "émile", "2");
    ASSERT_ANSWER(ix, "ZOLA", 10, "émile", "2");
    /* fullwidth is NFKC-equal to ASCII, both ways */
    ASSERT_ANSWER(ix, "ｆｕｌｌ", 10, "full,ｆｕｌｌｗｉｄｔｈ", "0,1");
    ASSERT_ANSWER(ix, "fullwidth", 10, "ｆｕｌｌｗｉｄｔｈ", "0");
    ASSERT_ANSWER(ix, "width", 10, "ｆｕｌｌｗｉｄｔｈ", "2");
    /* case folding: ß is ss */
    ASSERT_ANSWER(ix, "STRASSE", 10, "full", "2");
    ASSERT_ANSWER(ix, "uber", 10, "", "");
    ASSERT_ANSWER(ix, "über", 10, "full", "2");
    /* default-ignorable code points (ZERO WIDTH SPACE) are dropped */
    ASSERT_ANSWER(ix, "zo\xe2\x80\x8bla", 10, "émile", "2");
    search_index_free(ix);
}

static void test_rename_reindexes(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    put(ix, "1", "alice", "Alice Liddell");
    put(ix, "2", "other", "Alice Cooper");
    ASSERT_ANSWER(ix, "liddell", 10, "alice", "2");
    put(ix, "1", "alice", "Alice Pleasance Hargreaves");
    ASSERT_ANSWER(ix, "liddell", 10, "", "");
    ASSERT_ANSWER(ix, "hargreaves", 10, "alice", "2");
    ASSERT_ANSWER(ix, "pleas", 10, "alice", "2");
    ASSERT_ANSWER(ix, "alice", 10, "alice,other", "0,2");
    /* a word the renamed user had alone is gone; a shared one stays for the other */
    put(ix, "1", "alice", "Zed");
    ASSERT_ANSWER(ix, "hargreaves", 10, "", "");
    ASSERT_ANSWER(ix, "alice", 10, "alice,other", "0,2");
    ASSERT_ANSWER(ix, "cooper", 10, "other", "2");
    /* the same again changes nothing */
    put(ix, "1", "alice", "Zed");
    ASSERT_ANSWER(ix, "zed", 10, "alice", "2");
    assert_int_equal(search_index_users(ix), 2);
    /* a name repeating a word, renamed away and back */
    put(ix, "2", "other", "Bo Bo Bob");
    ASSERT_ANSWER(ix, "bo bo bo", 10, "other", "2");
    put(ix, "2", "other", "Bo");
    ASSERT_ANSWER(ix, "bo bo", 10, "", "");
    ASSERT_ANSWER(ix, "bo", 10, "other", "2");
    search_index_free(ix);
}

static void test_username_update(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    put(ix, "1", "oldname", "Person One");
    put(ix, "2", "oldie", "Person Two");
    ASSERT_ANSWER(ix, "old", 10, "oldie,oldname", "1,1");
    put(ix, "1", "newname", "Person One");
    ASSERT_ANSWER(ix, "oldname", 10, "", "");
    ASSERT_ANSWER(ix, "old", 10, "oldie", "1");
    ASSERT_ANSWER(ix, "newname", 10, "newname", "0");
    /* the username changed only in case: same key, new text answered */
    put(ix, "1", "NewName", "Person One");
    answer a = ask(ix, "newname", 10, 0);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.h[0].username, "NewName");
    assert_string_equal(a.h[0].id, "1");
    assert_string_equal(a.h[0].name, "Person One");
    ASSERT_ANSWER(ix, "person", 10, "NewName,oldie", "2,2");
    assert_int_equal(search_index_users(ix), 2);
    search_index_free(ix);
}

/* ---- images --------------------------------------------------------------------------------- */

static void test_images(void **state)
{
    (void)state;
    search_index *ix = search_index_new(3);
    /* images before the user is named: the user exists but is found by nothing */
    assert_int_equal(search_index_add_image(ix, "1", "p1", "https://x/1", 100), 0);
    assert_int_equal(search_index_users(ix), 1);
    ASSERT_ANSWER(ix, "p1", 10, "", "");
    put(ix, "1", "pat", "Pat Image");
    assert_int_equal(search_index_add_image(ix, "1", "p2", "https://x/2", 300), 0);
    assert_int_equal(search_index_add_image(ix, "1", "p3", "https://x/3", 200), 0);
    /* the same post again (at least once delivery): nothing changes */
    assert_int_equal(search_index_add_image(ix, "1", "p2", "https://x/2", 300), 0);
    answer a = ask(ix, "pat", 10, 10);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.h[0].nimages, 3);
    assert_string_equal(a.h[0].images[0].id, "p2");
    assert_string_equal(a.h[0].images[1].id, "p3");
    assert_string_equal(a.h[0].images[2].id, "p1");
    assert_string_equal(a.h[0].images[0].url, "https://x/2");
    assert_true(a.h[0].images[0].ts == 300);
    /* capped at 3: a newer one pushes the oldest out, an older one is not kept */
    assert_int_equal(search_index_add_image(ix, "1", "p4", "https://x/4", 250), 0);
    assert_int_equal(search_index_add_image(ix, "1", "p0", "https://x/0", 50), 0);
    a = ask(ix, "pat", 10, 10);
    assert_int_equal(a.h[0].nimages, 3);
    assert_string_equal(a.h[0].images[0].id, "p2");
    assert_string_equal(a.h[0].images[1].id, "p4");
    assert_string_equal(a.h[0].images[2].id, "p3");
    /* same ts: the greater post id is newer */
    assert_int_equal(search_index_add_image(ix, "1", "p9", "https://x/9", 300), 0);
    assert_int_equal(search_index_add_image(ix, "1", "p1", "https://x/1", 300), 0);
    a = ask(ix, "pat", 10, 10);
    assert_string_equal(a.h[0].images[0].id, "p9");
    assert_string_equal(a.h[0].images[1].id, "p2");
    assert_string_equal(a.h[0].images[2].id, "p1");
    /* cut to `images` */
    a = ask(ix, "pat", 10, 2);
    assert_int_equal(a.h[0].nimages, 2);
    assert_string_equal(a.h[0].images[0].id, "p9");
    a = ask(ix, "pat", 10, 0);
    assert_int_equal(a.h[0].nimages, 0);
    /* images survive a rename */
    put(ix, "1", "patricia", "Patricia Image");
    a = ask(ix, "patricia", 10, 5);
    assert_int_equal(a.h[0].nimages, 3);
    assert_string_equal(a.h[0].images[0].id, "p9");
    /* a user without images */
    put(ix, "2", "patty", "No Pictures");
    a = ask(ix, "patty", 10, 5);
    assert_int_equal(a.h[0].nimages, 0);
    /* bad images */
    char longurl[SEARCH_URL_MAX + 2];
    memset(longurl, 'u', sizeof longurl - 1);
    longurl[sizeof longurl - 1] = '\0';
    assert_int_equal(search_index_add_image(ix, "1", "p5", longurl, 1), -EINVAL);
    longurl[SEARCH_URL_MAX] = '\0';
    assert_int_equal(search_index_add_image(ix, "1", "p5", longurl, 1000), 0);
    assert_int_equal(search_index_add_image(ix, "1", "", "u", 1), -EINVAL);
    assert_int_equal(search_index_add_image(ix, "", "p", "u", 1), -EINVAL);
    assert_int_equal(search_index_add_image(ix, "1", "p", "", 1), -EINVAL);
    assert_int_equal(search_index_add_image(ix, "1", "p\xff", "u", 1), -EINVAL);
    assert_int_equal(search_index_add_image(ix, "1", NULL, "u", 1), -EINVAL);
    search_index_free(ix);

    /* the default keeps 20 */
    ix = search_index_new(0);
    put(ix, "1", "many", "Many Images");
    for (int i = 0; i < 50; i++) {
        char p[16];
        snprintf(p, sizeof p, "p%02d", i);
        assert_int_equal(search_index_add_image(ix, "1", p, "https://x", (uint64_t)i), 0);
    }
    a = ask(ix, "many", 1, 100);
    assert_int_equal(a.h[0].nimages, 20);
    assert_string_equal(a.h[0].images[0].id, "p49");
    assert_string_equal(a.h[0].images[19].id, "p30");
    search_index_free(ix);
}

/* ---- bad input ------------------------------------------------------------------------------ */

static void test_bad_input(void **state)
{
    (void)state;
    search_index *ix = search_index_new(0);
    search_hit h[4];
    size_t n = 99;
    put(ix, "1", "valid", "Valid Name");
    /* queries */
    assert_int_equal(search_index_query(ix, "va\xff", 3, 4, 0, h, &n), -EINVAL);
    assert_int_equal(n, 0);
    assert_int_equal(search_index_query(ix, "\xc0\x80", 2, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "\xed\xa0\x80", 3, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "\xc3", 1, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "", 0, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "  ", 2, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "!!!", 3, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, " - . \t", 6, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "\xe2\x80\x8b", 3, 4, 0, h, &n), -EINVAL);
    char q[SEARCH_QUERY_MAX + 2];
    memset(q, 'v', sizeof q);
    assert_int_equal(search_index_query(ix, q, SEARCH_QUERY_MAX + 1, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, q, SEARCH_QUERY_MAX, 4, 0, h, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(search_index_query(ix, NULL, 3, 4, 0, h, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "val", 3, 4, 0, NULL, &n), -EINVAL);
    assert_int_equal(search_index_query(ix, "val", 3, 4, 0, h, NULL), -EINVAL);
    assert_int_equal(search_index_query(NULL, "val", 3, 4, 0, h, &n), -EINVAL);
    /* not NUL-terminated: only qlen bytes count */
    assert_int_equal(search_index_query(ix, "validXYZ", 5, 4, 0, h, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].tier, 0);
    /* limit 0: a valid query, nothing answered */
    assert_int_equal(search_index_query(ix, "val", 3, 0, 0, NULL, &n), 0);
    assert_int_equal(n, 0);
    /* users */
    assert_int_equal(search_index_put_user(ix, "2", "x", "Na\xffme"), -EINVAL);
    assert_int_equal(search_index_put_user(ix, "2", "x\xe0\x80", "Name"), -EINVAL);
    assert_int_equal(search_index_put_user(ix, "2", "", "Name"), -EINVAL);
    assert_int_equal(search_index_put_user(ix, "2", "x", ""), -EINVAL);
    assert_int_equal(search_index_put_user(ix, "", "x", "Name"), -EINVAL);
    assert_int_equal(search_index_put_user(ix, NULL, "x", "Name"), -EINVAL);
    assert_int_equal(search_index_put_user(ix, "2", NULL, "Name"), -EINVAL);
    assert_int_equal(search_index_put_user(ix, "2", "x", NULL), -EINVAL);
    assert_int_equal(search_index_put_user(NULL, "2", "x", "Name"), -EINVAL);
    char big[SEARCH_NAME_MAX + 2];
    memset(big, 'n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(search_index_put_user(ix, "2", "x", big), -EINVAL);
    big[SEARCH_NAME_MAX] = '\0';
    assert_int_equal(search_index_put_user(ix, "2", "x", big), 0);
    big[SEARCH_USERNAME_MAX + 1] = '\0';
    assert_int_equal(search_index_put_user(ix, "3", big, "Name"), -EINVAL);
    big[SEARCH_USERNAME_MAX] = '\0';
    assert_int_equal(search_index_put_user(ix, "3", big, "Name"), 0);
    char id[SEARCH_ID_MAX + 2];
    memset(id, 'i', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    assert_int_equal(search_index_put_user(ix, id, "y", "Name"), -EINVAL);
    id[SEARCH_ID_MAX] = '\0';
    assert_int_equal(search_index_put_user(ix, id, "y", "Name"), 0);
    /* a name with no word is a name: found by username only */
    assert_int_equal(search_index_put_user(ix, "4", "dots", "..."), 0);
    ASSERT_ANSWER(ix, "dots", 4, "dots", "0");
    /* a rejected update leaves the user as it was */
    assert_int_equal(search_index_put_user(ix, "1", "changed", "Bad\xff"), -EINVAL);
    ASSERT_ANSWER(ix, "valid", 4, "valid", "0");
    assert_int_equal(search_index_users(ix), 5);
    assert_true(search_index_bytes(ix) > 0);
    search_index_free(ix);
    search_index_free(NULL);
}

static void test_limit_and_determinism(void **state)
{
    (void)state;
    /* two indexes fed in opposite orders answer the same */
    search_index *a = search_index_new(0), *b = search_index_new(0);
    enum { N = 300 };
    char id[16], un[32], nm[64];
    for (int k = 0; k < N; k++) {
        int i = k, j = N - 1 - k;
        snprintf(id, sizeof id, "id%03d", i);
        snprintf(un, sizeof un, "%s%03d", i % 2 ? "Sam" : "sam", i % 150); /* pairs share one */
        snprintf(nm, sizeof nm, "Sam %s %03d", i % 3 ? "Jones" : "Jonas", i);
        put(a, id, un, nm);
        snprintf(id, sizeof id, "id%03d", j);
        snprintf(un, sizeof un, "%s%03d", j % 2 ? "Sam" : "sam", j % 150);
        snprintf(nm, sizeof nm, "Sam %s %03d", j % 3 ? "Jones" : "Jonas", j);
        put(b, id, un, nm);
    }
    const char *qs[] = {"sam", "sam0", "sam001", "jon", "jonas", "sam jones", "s j", "0"};
    for (size_t q = 0; q < sizeof qs / sizeof *qs; q++)
        for (unsigned limit = 1; limit <= MAXHITS; limit += 21) {
            answer x = ask(a, qs[q], limit, 0), y = ask(b, qs[q], limit, 0);
            assert_int_equal(x.rc, 0);
            assert_int_equal(x.n, y.n);
            assert_true(x.n <= limit);
            for (size_t i = 0; i < x.n; i++) {
                assert_string_equal(x.h[i].id, y.h[i].id);
                assert_int_equal(x.h[i].tier, y.h[i].tier);
            }
            /* asked again: the same */
            answer z = ask(a, qs[q], limit, 0);
            for (size_t i = 0; i < x.n; i++)
                assert_string_equal(x.h[i].id, z.h[i].id);
        }
    /* equal normalised usernames: ordered by id */
    answer x = ask(a, "sam001", 10, 0);
    assert_int_equal(x.n, 2);
    assert_string_equal(x.h[0].id, "id001");
    assert_string_equal(x.h[1].id, "id151");
    assert_int_equal(x.h[0].tier, 0);
    assert_int_equal(x.h[1].tier, 0);
    /* limit is respected in every tier */
    x = ask(a, "sam", 5, 0);
    assert_int_equal(x.n, 5);
    assert_string_equal(x.h[0].id, "id000");
    assert_string_equal(x.h[1].id, "id150");
    assert_int_equal(x.h[0].tier, 1);
    x = ask(a, "jonas", 7, 0);
    assert_int_equal(x.n, 7);
    for (size_t i = 0; i < x.n; i++)
        assert_int_equal(x.h[i].tier, 2);
    x = ask(a, "jonas", 64, 0);
    assert_int_equal(x.n, 64);
    x = ask(a, "sam jonas", 64, 0);
    assert_int_equal(x.n, 64);
    /* whole "jonas" and "sam": 100 users, username order (sam000 id000, sam000 id150, ...) */
    for (size_t i = 1; i < x.n; i++)
        assert_true(strcasecmp(x.h[i - 1].username, x.h[i].username) <= 0);
    search_index_free(a);
    search_index_free(b);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* A word of 1 to maxlen letters of "abc", some upper case when upper. */
static void rand_word(uint64_t *s, char *out, int maxlen, bool upper)
{
    int n = 1 + (int)(rnd(s) % (uint64_t)maxlen);
    for (int i = 0; i < n; i++) {
        out[i] = (char)('a' + rnd(s) % 3);
        if (upper && rnd(s) % 5 == 0)
            out[i] = (char)(out[i] - 32);
    }
    out[n] = '\0';
}

/* ---- against a brute-force model ------------------------------------------------------------ */

/* Lowercase ASCII over a small alphabet, so words share prefixes and repeat a lot. */
enum { MU = 600, MWORDS = 4 };

typedef struct muser {
    char id[8], un[8], lun[8], name[48];   /* lun: un in lower case */
    char w[MWORDS][8];
    int nw;
} muser;

/* The most whole-word matches over all ways of giving each query word its own name word, or -1. */
static int model_match(const muser *u, char q[][8], int nq, int i, unsigned usedmask)
{
    if (i == nq)
        return 0;
    int best = -1;
    size_t ql = strlen(q[i]);
    for (int j = 0; j < u->nw; j++) {
        if ((usedmask & (1u << j)) != 0 || strncmp(u->w[j], q[i], ql) != 0)
            continue;
        int rest = model_match(u, q, nq, i + 1, usedmask | (1u << j));
        if (rest < 0)
            continue;
        rest += strcmp(u->w[j], q[i]) == 0;
        if (rest > best)
            best = rest;
    }
    return best;
}

typedef struct mhit {
    const muser *u;
    int tier, whole;
} mhit;

static int cmp_mhit(const void *a, const void *b)
{
    const mhit *x = a, *y = b;
    if (x->tier != y->tier)
        return x->tier - y->tier;
    if (x->whole != y->whole)
        return y->whole - x->whole;
    int c = strcmp(x->u->lun, y->u->lun);
    return c != 0 ? c : strcmp(x->u->id, y->u->id);
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s + 32);
}

static void model_put(muser *u, uint64_t *s)
{
    rand_word(s, u->un, 5, true);
    memcpy(u->lun, u->un, sizeof u->lun);
    lower(u->lun);
    u->nw = 1 + (int)(rnd(s) % MWORDS);
    u->name[0] = '\0';
    const char *sep[] = {" ", "-", ", ", " . ", "  "};
    for (int j = 0; j < u->nw; j++) {
        rand_word(s, u->w[j], 4, true);
        snprintf(u->name + strlen(u->name), sizeof u->name - strlen(u->name), "%s%s",
                 j > 0 ? sep[rnd(s) % 5] : (rnd(s) % 4 == 0 ? " " : ""), u->w[j]);
        lower(u->w[j]);
    }
}

static void test_against_model(void **state)
{
    (void)state;
    uint64_t seed = 12345;
    muser *m = calloc(MU, sizeof *m);
    mhit *want = malloc(MU * sizeof *want);
    assert_non_null(m);
    assert_non_null(want);
    size_t seen[4] = {0, 0, 0, 0}; /* hits at tier 0, 1, 2 with no whole word, 2 with some */
    search_index *ix = search_index_new(0);
    for (int i = 0; i < MU; i++) {
        snprintf(m[i].id, sizeof m[i].id, "m%04d", i);
        model_put(&m[i], &seed);
        put(ix, m[i].id, m[i].un, m[i].name);
    }
    for (int round = 0; round < 3000; round++) {
        if (round % 3 == 0) {   /* rename someone */
            muser *u = &m[rnd(&seed) % MU];
            model_put(u, &seed);
            put(ix, u->id, u->un, u->name);
        }
        /* a query of 1 to 3 words, maybe padded, maybe upper case */
        char q[8][8], text[64] = "";
        int nq = 1 + (int)(rnd(&seed) % 3);
        bool pad = rnd(&seed) % 4 == 0;
        if (pad)
            strcat(text, "  ");
        for (int i = 0; i < nq; i++) {
            rand_word(&seed, q[i], 3, true);
            if (i > 0)
                strcat(text, rnd(&seed) % 2 ? " " : "  ");
            strcat(text, q[i]);
            lower(q[i]);
        }
        if (pad)
            strcat(text, " ");
        char key[64];
        snprintf(key, sizeof key, "%s", text + (pad ? 2 : 0));
        if (pad)
            key[strlen(key) - 1] = '\0';
        lower(key);
        bool one_word = strchr(key, ' ') == NULL;
        size_t nw = 0, kl = strlen(key);
        for (int i = 0; i < MU; i++) {
            const muser *u = &m[i];
            if (strcmp(u->lun, key) == 0)
                want[nw++] = (mhit){u, 0, 0};
            else if (one_word && strncmp(u->lun, key, kl) == 0)
                want[nw++] = (mhit){u, 1, 0};
            else {
                int w = model_match(u, q, nq, 0, 0);
                if (w >= 0)
                    want[nw++] = (mhit){u, 2, w};
            }
        }
        qsort(want, nw, sizeof *want, cmp_mhit);
        unsigned limit = round % 2 ? 10 : MAXHITS;
        answer a = ask(ix, text, limit, 0);
        assert_int_equal(a.rc, 0);
        assert_int_equal(a.n, nw < limit ? nw : limit);
        for (size_t i = 0; i < a.n; i++) {
            if (strcmp(a.h[i].id, want[i].u->id) != 0 || a.h[i].tier != want[i].tier)
                fail_msg("query \"%s\" hit %zu: %s (tier %d), want %s (tier %d, %d whole)",
                         text, i, a.h[i].id, a.h[i].tier, want[i].u->id, want[i].tier,
                         want[i].whole);
            seen[want[i].tier + (want[i].tier == 2 && want[i].whole > 0)]++;
        }
    }
    print_message("model: hits at tier 0 %zu, tier 1 %zu, tier 2 %zu (+%zu with whole words)\n",
                  seen[0], seen[1], seen[2], seen[3]);
    for (int i = 0; i < 4; i++)
        assert_true(seen[i] > 100);
    search_index_free(ix);
    free(want);
    free(m);
}

/* ---- 200,000 users -------------------------------------------------------------------------- */


static const char *const syl[] = {"ka", "lo", "mi", "an", "ra", "te", "so", "vi", "el", "da",
                                  "ne", "ju", "pa", "ri", "on", "be", "ta", "li", "mo", "sa",
                                  "ge", "ha", "no", "za", "wu", "qi", "fe", "yo", "ci", "ba"};
#define NSYL (sizeof syl / sizeof *syl)

/* A word of 2 or 3 syllables, picked with a skew (low ones are common). */
static void gen_word(uint64_t *s, char *out, size_t len)
{
    out[0] = '\0';
    int n = 2 + (int)(rnd(s) % 2);
    for (int i = 0; i < n; i++) {
        uint64_t r = rnd(s) % (NSYL * NSYL);
        size_t k = (size_t)(r * r / (NSYL * NSYL * NSYL)); /* quadratic skew */
        snprintf(out + strlen(out), len - strlen(out), "%s", syl[k % NSYL]);
    }
}

typedef struct guser {
    char id[12], un[24], first[16], last[16];
} guser;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Brute force for a two-word query (lowercase ASCII) against a two-word name: -1 or the most
 * whole-word matches over the two assignments. */
static int brute2(const guser *g, const char *q1, const char *q2)
{
    const char *w[2] = {g->first, g->last};
    int best = -1;
    for (int swap = 0; swap < 2; swap++) {
        const char *a = w[swap], *b = w[1 - swap];
        if (strncmp(a, q1, strlen(q1)) != 0 || strncmp(b, q2, strlen(q2)) != 0)
            continue;
        int whole = (strcmp(a, q1) == 0) + (strcmp(b, q2) == 0);
        if (whole > best)
            best = whole;
    }
    return best;
}

typedef struct bref {
    const guser *g;
    int whole;
} bref;

static int cmp_bref(const void *a, const void *b)
{
    const bref *x = a, *y = b;
    if (x->whole != y->whole)
        return x->whole > y->whole ? -1 : 1;
    int c = strcmp(x->g->un, y->g->un);
    return c != 0 ? c : strcmp(x->g->id, y->g->id);
}

static void test_many_users(void **state)
{
    (void)state;
    enum { N = 200000, LIMIT = 20 };
    guser *g = malloc(N * sizeof *g);
    assert_non_null(g);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
#ifdef __GLIBC__
    size_t heap0 = mallinfo2().uordblks;
#endif
    search_index *ix = search_index_new(0);
    double t0 = now_us();
    for (int i = 0; i < N; i++) {
        snprintf(g[i].id, sizeof g[i].id, "u%07d", i);
        gen_word(&seed, g[i].first, sizeof g[i].first);
        gen_word(&seed, g[i].last, sizeof g[i].last);
        snprintf(g[i].un, sizeof g[i].un, "%s%s%d", g[i].first, g[i].last,
                 (int)(rnd(&seed) % 1000));
        char name[40];
        snprintf(name, sizeof name, "%c%s %c%s", g[i].first[0] - 32, g[i].first + 1,
                 g[i].last[0] - 32, g[i].last + 1);
        assert_int_equal(search_index_put_user(ix, g[i].id, g[i].un, name), 0);
    }
    double build_us = now_us() - t0;
    size_t bytes = search_index_bytes(ix);
#ifdef __GLIBC__
    size_t heap1 = mallinfo2().uordblks;
#endif
    assert_int_equal(search_index_users(ix), N);

    /* exact usernames: that user first, at tier 0 */
    for (int i = 0; i < N; i += N / 50) {
        answer a = ask(ix, g[i].un, LIMIT, 0);
        assert_int_equal(a.rc, 0);
        assert_true(a.n >= 1);
        assert_int_equal(a.h[0].tier, 0);
        int found = 0;
        for (size_t j = 0; j < a.n && a.h[j].tier == 0; j++)
            found |= strcmp(a.h[j].id, g[i].id) == 0;
        assert_true(found);
    }

    /* one-letter and two-letter prefixes: the first LIMIT usernames in order, all tier 1 */
    const char **sorted = malloc(N * sizeof *sorted);
    assert_non_null(sorted);
    for (int i = 0; i < N; i++)
        sorted[i] = g[i].un;
    qsort(sorted, N, sizeof *sorted, cmp_str);
    const char *prefixes[] = {"k", "ka", "s", "z", "q", "mi", "kaka"};
    for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes; p++) {
        size_t pl = strlen(prefixes[p]), first = 0;
        while (first < N && strncmp(sorted[first], prefixes[p], pl) < 0)
            first++;
        answer a = ask(ix, prefixes[p], LIMIT, 0);
        assert_int_equal(a.rc, 0);
        size_t want = 0;
        while (first + want < N && want < LIMIT &&
               strncmp(sorted[first + want], prefixes[p], pl) == 0)
            want++;
        assert_int_equal(a.n >= want, 1);
        for (size_t j = 0; j < want; j++) {
            assert_string_equal(a.h[j].username, sorted[first + j]);
            assert_int_equal(a.h[j].tier, 1);
        }
    }

    /* two-word name queries (tier 2 only: the space rules out usernames) against brute force */
    bref *br = malloc(N * sizeof *br);
    assert_non_null(br);
    size_t checked = 0;
    for (int i = 7; i < N && checked < 20; i += 9973) {
        char q1[16], q2[16], q[40];
        /* whole words, or the second one cut to a prefix */
        snprintf(q1, sizeof q1, "%s", g[i].first);
        snprintf(q2, sizeof q2, "%s", g[i].last);
        if (checked % 2 == 1)
            q2[3] = '\0';
        snprintf(q, sizeof q, "%s %s", q1, q2);
        size_t nb = 0, post1 = 0, post2 = 0, l1 = strlen(q1), l2 = strlen(q2);
        for (int j = 0; j < N; j++) {
            int w = brute2(&g[j], q1, q2);
            if (w >= 0)
                br[nb++] = (bref){&g[j], w};
            bool same = strcmp(g[j].first, g[j].last) == 0;
            post1 += (strncmp(g[j].first, q1, l1) == 0) + (!same && strncmp(g[j].last, q1, l1) == 0);
            post2 += (strncmp(g[j].first, q2, l2) == 0) + (!same && strncmp(g[j].last, q2, l2) == 0);
        }
        /* the index visits at most 10,000 postings of the rarest word's range (documented):
         * exact when that range is within the bound */
        if ((post1 < post2 ? post1 : post2) > 10000)
            continue;
        qsort(br, nb, sizeof *br, cmp_bref);
        answer a = ask(ix, q, LIMIT, 0);
        assert_int_equal(a.rc, 0);
        assert_int_equal(a.n, nb < LIMIT ? nb : LIMIT);
        for (size_t j = 0; j < a.n; j++) {
            assert_string_equal(a.h[j].id, br[j].g->id);
            assert_int_equal(a.h[j].tier, 2);
        }
        checked++;
    }
    assert_true(checked >= 10);

    /* one name word, against brute force, including prefixes that more than 10,000 users'
     * words start with (each word's users are walked in username order, so the answer is exact
     * while the range has fewer than 10,000 words); the '!' keeps the query out of tier 1 */
    const char *oneq[] = {"ka", "lo", "kaka", "kalo", "kaka!", "lolo", "kakaka", "mi", "ri",
                          g[11].first, g[12].last, g[13].first, g[14].last};
    size_t over_bound = 0;
    for (size_t t = 0; t < sizeof oneq / sizeof *oneq; t++) {
        char w[24], q[sizeof w + 1];
        snprintf(w, sizeof w, "%s", oneq[t]);
        w[strcspn(w, "!")] = '\0';
        snprintf(q, sizeof q, "%s!", w);
        size_t nb = 0, lw = strlen(w);
        for (int j = 0; j < N; j++) {
            int a1 = strcmp(g[j].first, w) == 0, a2 = strcmp(g[j].last, w) == 0;
            int p1 = strncmp(g[j].first, w, lw) == 0, p2 = strncmp(g[j].last, w, lw) == 0;
            if (a1 || a2 || p1 || p2)
                br[nb++] = (bref){&g[j], a1 || a2};
        }
        over_bound += nb > 10000;
        qsort(br, nb, sizeof *br, cmp_bref);
        answer a = ask(ix, q, LIMIT, 0);
        assert_int_equal(a.rc, 0);
        assert_int_equal(a.n, nb < LIMIT ? nb : LIMIT);
        for (size_t j = 0; j < a.n; j++) {
            assert_string_equal(a.h[j].id, br[j].g->id);
            assert_int_equal(a.h[j].tier, 2);
        }
    }
    assert_true(over_bound >= 1);

    /* timing, printed only: a mix of the kinds above, and single name words */
    enum { Q = 2000 };
    double *lat = malloc(Q * sizeof *lat);
    assert_non_null(lat);
    double kind_sum[4] = {0, 0, 0, 0}, kind_max[4] = {0, 0, 0, 0};
    const char *kind_name[4] = {"one/two-letter prefix", "exact username", "two name words",
                                "one name word"};
    int kind_n[4] = {0, 0, 0, 0};
    for (int k = 0; k < Q; k++) {
        char q[48];
        int kind = k % 4;
        const guser *u = &g[rnd(&seed) % N];
        if (kind == 0)
            snprintf(q, sizeof q, "%.*s", 1 + k % 2, u->un);
        else if (kind == 1)
            snprintf(q, sizeof q, "%s", u->un);
        else if (kind == 2)
            snprintf(q, sizeof q, "%s %.3s", u->first, u->last);
        else
            snprintf(q, sizeof q, "%s!", u->last);    /* the '!' keeps it out of tier 1 */
        double s = now_us();
        answer a = ask(ix, q, LIMIT, 0);
        lat[k] = now_us() - s;
        assert_int_equal(a.rc, 0);
        assert_true(a.n >= 1 || kind == 2); /* two common words: maybe none in the bound */
        kind_sum[kind] += lat[k];
        kind_n[kind]++;
        if (lat[k] > kind_max[kind])
            kind_max[kind] = lat[k];
    }
    qsort(lat, Q, sizeof *lat, cmp_double);
    print_message("search_index: %d users built in %.0f ms (%.2f us per put_user)\n", N,
                  build_us / 1e3, build_us / N);
    print_message("search_index: %d queries, limit %d: median %.1f us, p99 %.1f us, max %.1f us\n",
                  Q, LIMIT, lat[Q / 2], lat[Q * 99 / 100], lat[Q - 1]);
    for (int k = 0; k < 4; k++)
        print_message("search_index:   %-22s mean %.1f us, max %.1f us\n", kind_name[k],
                      kind_sum[k] / kind_n[k], kind_max[k]);
    print_message("search_index: %.0f bytes per user (search_index_bytes)\n",
                  (double)bytes / N);
#ifdef __GLIBC__
    if (heap1 > heap0)
        print_message("search_index: %.0f bytes per user (malloc's in-use bytes)\n",
                      (double)(heap1 - heap0) / N);
#endif
    free(lat);
    free(br);
    free(sorted);
    search_index_free(ix);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiers_in_order),
        cmocka_unit_test(test_whole_word_before_prefix),
        cmocka_unit_test(test_multi_word),
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_rename_reindexes),
        cmocka_unit_test(test_username_update),
        cmocka_unit_test(test_images),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_limit_and_determinism),
        cmocka_unit_test(test_against_model),
        cmocka_unit_test(test_many_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
