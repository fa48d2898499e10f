/*
 * test_social.c — the social network's node as its users see it: build/bin/social started as a
 * process on a free loopback port, driven over HTTP exactly as the API is written (issue 16).
 * The design notes' two scenarios (A follows B and C; both post; A's timeline has both posts,
 * newest first, and F, who follows neither, has none), search by name, username and prefix with
 * the users' images, a rename re-indexed, unfollow and the merge of a new follow, the celebrity
 * path (merged at read time), a passivated timeline rebuilt, kill -9 of the node under load (every
 * acknowledged user, follow and post is there after the restart, and the read models converge),
 * and bad input answered 4xx with the node still serving. Cluster mode: three nodes sharing a Redis
 * store and its one event log, any node answering any request, kill -9 of one: its users and
 * timelines move to the others and every read model converges. Read models are eventually
 * consistent: the tests wait for them (bounded), never for a speed. GET /metrics is scraped: its
 * names follow Prometheus's conventions and its numbers move with the requests.
 */
#include "test_app.h"
#include "test_hostile.h"
#include "test_net.h"
#include "test_peers.h"
#include "test_prom.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>

#ifndef SOCIAL_BIN
#error "SOCIAL_BIN must name the social executable"
#endif
#ifndef SOCIAL_CONF
#error "SOCIAL_CONF must name config/social.conf"
#endif

static char g_dir[64];
static _Thread_local char g_head[2048];

/* Starts a node on data directory `sub` of the test's directory, with each --set of the
 * NULL-terminated list. */
static void start(tt_app *n, const char *sub, int port, const char *const *sets)
{
    static char dir[160], http[64];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, sub);
    snprintf(http, sizeof http, "127.0.0.1:%d", port);
    const char *argv[40];
    int k = 0;
    argv[k++] = "social";
    argv[k++] = "--config";
    argv[k++] = SOCIAL_CONF;
    argv[k++] = "--http";
    argv[k++] = http;
    argv[k++] = "--data";
    argv[k++] = dir;
    for (int i = 0; sets != NULL && sets[i] != NULL && k < 37; i++) {
        argv[k++] = "--set";
        argv[k++] = sets[i];
    }
    argv[k] = NULL;
    tt_app_start(n, SOCIAL_BIN, argv);
}

static int http(int port, const char *method, const char *path, const char *body, char *out,
                size_t cap)
{
    return tt_http(port, method, path, body, out, cap, g_head, sizeof g_head, 30000);
}

/* POST /users: the new user's id into id (32 bytes). */
static void make_user(int port, const char *username, const char *name, char *id)
{
    char body[512], out[1024];
    snprintf(body, sizeof body, "{\"username\":\"%s\",\"name\":\"%s\"}", username, name);
    assert_int_equal(http(port, "POST", "/users", body, out, sizeof out), 201);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    const cJSON *v = cJSON_GetObjectItem(j, "id");
    assert_true(cJSON_IsString(v));
    snprintf(id, 32, "%s", v->valuestring);
    assert_string_equal(cJSON_GetObjectItem(j, "username")->valuestring, username);
    cJSON_Delete(j);
}

static int follow(int port, const char *a, const char *b, bool on)
{
    char path[128];
    snprintf(path, sizeof path, "/users/%s/following/%s", a, b);
    return http(port, on ? "PUT" : "DELETE", path, NULL, NULL, 0);
}

/* POST /posts: the post's id into id (64 bytes); its ts. */
static unsigned long long post(int port, const char *user, const char *url, char *id)
{
    char body[512], out[1024];
    snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"%s\"}", user, url);
    assert_int_equal(http(port, "POST", "/posts", body, out, sizeof out), 201);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "user")->valuestring, user);
    assert_string_equal(cJSON_GetObjectItem(j, "image_url")->valuestring, url);
    if (id != NULL)
        snprintf(id, 64, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
    unsigned long long ts = (unsigned long long)cJSON_GetObjectItem(j, "ts")->valuedouble;
    cJSON_Delete(j);
    return ts;
}

/* GET path as JSON (status 200 expected), or NULL. */
static cJSON *get_json(int port, const char *path)
{
    static _Thread_local char out[1 << 20];
    if (http(port, "GET", path, NULL, out, sizeof out) != 200)
        return NULL;
    return cJSON_Parse(out);
}

/* The image URLs of a page's posts, space-separated, into out. */
static void page_urls(int port, const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    cJSON *j = get_json(port, path);
    if (j == NULL)
        return;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "posts"))
    {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%s", l ? " " : "",
                 cJSON_GetObjectItem(p, "image_url")->valuestring);
    }
    cJSON_Delete(j);
}

static bool page_is(int port, const char *path, const char *want)
{
    char got[4096];
    page_urls(port, path, got, sizeof got);
    return strcmp(got, want) == 0;
}

/* The usernames of /search?q=... in order, space-separated. */
static void search_names(int port, const char *q, char *out, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, "/search?q=%s", q);
    out[0] = '\0';
    cJSON *j = get_json(port, path);
    if (j == NULL)
        return;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "results"))
    {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%s", l ? " " : "",
                 cJSON_GetObjectItem(cJSON_GetObjectItem(r, "user"), "username")->valuestring);
    }
    cJSON_Delete(j);
}

static bool search_is(int port, const char *q, const char *want)
{
    char got[1024];
    search_names(port, q, got, sizeof got);
    return strcmp(got, want) == 0;
}

static int setup(void **state)
{
    (void)state;
    return tt_tmpdir(g_dir, sizeof g_dir, "test_social");
}

static int teardown(void **state)
{
    (void)state;
    return tt_rm_rf(g_dir);
}

/* ---- the notes' scenarios ------------------------------------------------------------------ */

static void test_notes_timeline_scenario(void **state)
{
    (void)state;
    tt_app n;
    start(&n, "notes", 0, NULL);
    char a[32], b[32], c[32], f[32], path[128];
    make_user(n.port, "userA", "User A", a);
    make_user(n.port, "userB", "User B", b);
    make_user(n.port, "userC", "User C", c);
    make_user(n.port, "userF", "User F", f);
    assert_int_equal(follow(n.port, a, b, true), 204);
    assert_int_equal(follow(n.port, a, c, true), 204);
    assert_int_equal(follow(n.port, a, b, true), 204); /* idempotent */
    snprintf(path, sizeof path, "/timeline/%s", a);
    assert_true(page_is(n.port, path, "")); /* A's timeline runs from now on: fan-out feeds it */
    post(n.port, b, "https://img.example/b1.jpg", NULL);
    post(n.port, c, "https://img.example/c1.jpg", NULL);
    post(n.port, b, "https://img.example/b2.jpg", NULL);
    post(n.port, c, "https://img.example/c2.jpg", NULL);
    /* read-your-writes: B's posts are there at once */
    snprintf(path, sizeof path, "/users/%s/posts", b);
    assert_true(page_is(n.port, path, "https://img.example/b2.jpg https://img.example/b1.jpg"));
    /* A's timeline converges: both authors, newest first */
    snprintf(path, sizeof path, "/timeline/%s", a);
    const char *want = "https://img.example/c2.jpg https://img.example/b2.jpg "
                       "https://img.example/c1.jpg https://img.example/b1.jpg";
    TT_WAIT_FOR(page_is(n.port, path, want), TT_DEADLINE_MS);
    /* F follows neither: untouched */
    snprintf(path, sizeof path, "/timeline/%s", f);
    assert_true(page_is(n.port, path, ""));
    /* pages: limit and the cursor */
    snprintf(path, sizeof path, "/timeline/%s?limit=3", a);
    cJSON *j = get_json(n.port, path);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "posts")), 3);
    const cJSON *next = cJSON_GetObjectItem(j, "next");
    assert_true(cJSON_IsString(next));
    char p2[256];
    snprintf(p2, sizeof p2, "/timeline/%s?limit=3&before=%s", a, next->valuestring);
    cJSON_Delete(j);
    assert_true(page_is(n.port, p2, "https://img.example/b1.jpg"));
    j = get_json(n.port, p2);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "next")));
    cJSON_Delete(j);
    /* the counts */
    snprintf(path, sizeof path, "/users/%s", a);
    j = get_json(n.port, path);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "following")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(j, "followers")->valueint, 0);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "/users/%s", b);
    j = get_json(n.port, path);
    assert_int_equal(cJSON_GetObjectItem(j, "followers")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(j, "posts")->valueint, 2);
    cJSON_Delete(j);
    tt_app_kill(&n, SIGTERM);
}

static void test_notes_search_scenario(void **state)
{
    (void)state;
    tt_app n;
    start(&n, "search", 0, NULL);
    char e[32], m[32], z[32];
    make_user(n.port, "emile_z", "Émile Zola", e);
    make_user(n.port, "emily", "Emily Brontë", m);
    make_user(n.port, "zed", "Zed Émilien", z);
    post(n.port, e, "https://img.example/germinal.jpg", NULL);
    post(n.port, e, "https://img.example/nana.jpg", NULL);
    /* username exact, then username prefix, then name words (whole before prefix) */
    TT_WAIT_FOR(search_is(n.port, "emily", "emily"), TT_DEADLINE_MS);
    assert_true(search_is(n.port, "emil", "emile_z emily"));
    assert_true(search_is(n.port, "%C3%89MILE", "emile_z")); /* a case-folded name word */
    assert_true(search_is(n.port, "%C3%89mil", "emile_z zed")); /* a prefix of name words */
    assert_true(search_is(n.port, "zola", "emile_z"));
    assert_true(search_is(n.port, "nobody", ""));
    /* the user's images come with it, newest first */
    TT_WAIT_FOR(({
                    cJSON *j = get_json(n.port, "/search?q=zola");
                    const cJSON *imgs = j ? cJSON_GetObjectItem(
                                                cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0),
                                                "images")
                                          : NULL;
                    bool ok = cJSON_GetArraySize(imgs) == 2 &&
                              strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(imgs, 0), "image_url")
                                         ->valuestring,
                                     "https://img.example/nana.jpg") == 0;
                    cJSON_Delete(j);
                    ok;
                }),
                TT_DEADLINE_MS);
    /* a rename is re-indexed */
    char path[128], out[1024];
    snprintf(path, sizeof path, "/users/%s", m);
    assert_int_equal(http(n.port, "PATCH", path, "{\"name\":\"Charlotte Brontë\"}", out,
                          sizeof out),
                     200);
    assert_non_null(strstr(out, "\"name\":\"Charlotte Brontë\""));
    TT_WAIT_FOR(search_is(n.port, "charlotte", "emily"), TT_DEADLINE_MS);
    assert_true(search_is(n.port, "%C3%A9mily", ""));
    tt_app_kill(&n, SIGTERM);
}

static void test_unfollow_and_follow_merge(void **state)
{
    (void)state;
    tt_app n;
    start(&n, "follow", 0, NULL);
    char a[32], b[32], d[32], path[128];
    make_user(n.port, "reader", "Reader", a);
    make_user(n.port, "bee", "Bee", b);
    make_user(n.port, "dee", "Dee", d);
    post(n.port, d, "https://img.example/d1.jpg", NULL);
    post(n.port, d, "https://img.example/d2.jpg", NULL);
    assert_int_equal(follow(n.port, a, b, true), 204);
    snprintf(path, sizeof path, "/timeline/%s", a);
    assert_true(page_is(n.port, path, ""));
    post(n.port, b, "https://img.example/b1.jpg", NULL);
    TT_WAIT_FOR(page_is(n.port, path, "https://img.example/b1.jpg"), TT_DEADLINE_MS);
    /* a new follow merges the followee's newest posts into the running timeline */
    assert_int_equal(follow(n.port, a, d, true), 204);
    TT_WAIT_FOR(page_is(n.port, path, "https://img.example/b1.jpg https://img.example/d2.jpg "
                                      "https://img.example/d1.jpg"),
                TT_DEADLINE_MS);
    /* unfollow removes that author's posts */
    assert_int_equal(follow(n.port, a, b, false), 204);
    assert_int_equal(follow(n.port, a, b, false), 204); /* idempotent */
    TT_WAIT_FOR(page_is(n.port, path, "https://img.example/d2.jpg https://img.example/d1.jpg"),
                TT_DEADLINE_MS);
    post(n.port, b, "https://img.example/b2.jpg", NULL);
    tt_sleep_ms(200);
    assert_true(page_is(n.port, path, "https://img.example/d2.jpg https://img.example/d1.jpg"));
    tt_app_kill(&n, SIGTERM);
}

static void test_celebrity_merged_at_read(void **state)
{
    (void)state;
    tt_app n;
    const char *sets[] = {"social.celebrity_followers=2", NULL};
    start(&n, "celebrity", 0, sets);
    char star[32], f[3][32], path[128];
    make_user(n.port, "star", "Star", star);
    for (int i = 0; i < 3; i++) {
        char u[16];
        snprintf(u, sizeof u, "fan%d", i);
        make_user(n.port, u, "Fan", f[i]);
        assert_int_equal(follow(n.port, f[i], star, true), 204);
        snprintf(path, sizeof path, "/timeline/%s", f[i]);
        assert_true(page_is(n.port, path, "")); /* running */
    }
    post(n.port, star, "https://img.example/s1.jpg", NULL);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/timeline/%s", f[i]);
        TT_WAIT_FOR(page_is(n.port, path, "https://img.example/s1.jpg"), TT_DEADLINE_MS);
    }
    cJSON *h = NULL;
    TT_WAIT_FOR((cJSON_Delete(h), h = get_json(n.port, "/health"),
                 h != NULL && cJSON_GetObjectItem(cJSON_GetObjectItem(h, "fanout"),
                                                  "celebrity_posts")
                                      ->valueint >= 1),
                TT_DEADLINE_MS);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(h, "fanout"), "inserts")->valueint,
                     0);
    cJSON_Delete(h);
    tt_app_kill(&n, SIGTERM);
}

static void test_passivated_timeline_rebuilt(void **state)
{
    (void)state;
    tt_app n;
    const char *sets[] = {"social.idle_ms=300", NULL};
    start(&n, "passivate", 0, sets);
    char a[32], b[32], path[128];
    make_user(n.port, "aa", "A", a);
    make_user(n.port, "bb", "B", b);
    assert_int_equal(follow(n.port, a, b, true), 204);
    post(n.port, b, "https://img.example/1.jpg", NULL);
    post(n.port, b, "https://img.example/2.jpg", NULL);
    snprintf(path, sizeof path, "/timeline/%s", a);
    TT_WAIT_FOR(page_is(n.port, path, "https://img.example/2.jpg https://img.example/1.jpg"),
                TT_DEADLINE_MS);
    /* every keyed actor goes idle and is stopped; the timeline is rebuilt from the user and post
     * actors on the next read */
    cJSON *h = NULL;
    TT_WAIT_FOR((cJSON_Delete(h), h = get_json(n.port, "/health"),
                 h != NULL &&
                     cJSON_GetObjectItem(cJSON_GetObjectItem(h, "active"), "timelines")->valueint ==
                         0),
                TT_DEADLINE_MS);
    int built = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "fanout"), "timelines_built")->valueint;
    cJSON_Delete(h);
    assert_true(page_is(n.port, path, "https://img.example/2.jpg https://img.example/1.jpg"));
    h = get_json(n.port, "/health");
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(h, "fanout"), "timelines_built")->valueint,
        built + 1);
    cJSON_Delete(h);
    tt_app_kill(&n, SIGTERM);
}

/* ---- kill -9 under load -------------------------------------------------------------------- */

#define KUSERS 24
#define KPOSTS 400

typedef struct kload {
    int port;
    char ids[KUSERS][32];
    atomic_int acked_posts;
    char post_author[KPOSTS][32];
    char post_url[KPOSTS][64];
    atomic_bool acked[KPOSTS];
    atomic_bool follow_acked[KUSERS];
    atomic_bool stop;
    int first, step;
} kload;

static void *poster_main(void *arg)
{
    kload *k = arg;
    char body[256];
    for (int i = k->first; i < KPOSTS && !atomic_load(&k->stop); i += k->step) {
        snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"%s\"}", k->post_author[i],
                 k->post_url[i]);
        char head[512];
        int st = tt_http(k->port, "POST", "/posts", body, NULL, 0, head, sizeof head, 5000);
        if (st == 201)
            atomic_store(&k->acked[i], true);
        else if (st < 0)
            break; /* the node is gone */
    }
    return NULL;
}

static void test_kill9_under_load_loses_nothing(void **state)
{
    (void)state;
    static kload k;
    memset(&k, 0, sizeof k);
    tt_app n;
    start(&n, "kill9", 0, NULL);
    k.port = n.port;
    for (int i = 0; i < KUSERS; i++) {
        char u[16];
        snprintf(u, sizeof u, "k%02d", i);
        make_user(n.port, u, "Kay", k.ids[i]);
    }
    /* everyone follows the next user; half the timelines run */
    for (int i = 0; i < KUSERS; i++) {
        if (follow(n.port, k.ids[i], k.ids[(i + 1) % KUSERS], true) == 204)
            atomic_store(&k.follow_acked[i], true);
        if (i % 2 == 0) {
            char path[128];
            snprintf(path, sizeof path, "/timeline/%s", k.ids[i]);
            assert_true(page_is(n.port, path, ""));
        }
    }
    for (int i = 0; i < KPOSTS; i++) {
        snprintf(k.post_author[i], 32, "%s", k.ids[i % KUSERS]);
        snprintf(k.post_url[i], 64, "https://img.example/k%d.jpg", i);
    }
    pthread_t th[4];
    static kload views[4];
    for (int t = 0; t < 4; t++) {
        k.first = t;
        k.step = 4;
        views[t] = k; /* the plan; results gathered below */
        pthread_create(&th[t], NULL, poster_main, &views[t]);
    }
    TT_WAIT_FOR(({
                    int acked = 0;
                    for (int t = 0; t < 4; t++)
                        for (int i = 0; i < KPOSTS; i++)
                            acked += atomic_load(&views[t].acked[i]);
                    acked >= KPOSTS / 4;
                }),
                TT_DEADLINE_MS);
    tt_app_kill(&n, SIGKILL);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    int acked = 0;
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < KPOSTS; i++)
            if (atomic_load(&views[t].acked[i])) {
                atomic_store(&k.acked[i], true);
                acked++;
            }
    print_message("kill -9 after %d acknowledged posts\n", acked);

    start(&n, "kill9", 0, NULL);
    char path[256], out[1 << 16];
    /* every acknowledged user and follow */
    for (int i = 0; i < KUSERS; i++) {
        snprintf(path, sizeof path, "/users/%s", k.ids[i]);
        assert_int_equal(http(n.port, "GET", path, NULL, out, sizeof out), 200);
        if (atomic_load(&k.follow_acked[i]))
            assert_non_null(strstr(out, "\"following\":1"));
    }
    /* every acknowledged post, in its author's list */
    for (int u = 0; u < KUSERS; u++) {
        char urls[1 << 15];
        snprintf(path, sizeof path, "/users/%s/posts?limit=200", k.ids[u]);
        page_urls(n.port, path, urls, sizeof urls);
        for (int i = u; i < KPOSTS; i += KUSERS)
            if (atomic_load(&k.acked[i])) {
                char want[80];
                snprintf(want, sizeof want, "%s ", k.post_url[i]);
                size_t ul = strlen(urls);
                urls[ul] = ' ', urls[ul + 1] = '\0'; /* each URL ends in a space */
                assert_non_null(strstr(urls, want));
                urls[ul] = '\0';
            }
    }
    /* the read models converge: search knows every user; each timeline has its followee's
     * newest acknowledged post */
    for (int i = 0; i < KUSERS; i++) {
        char u[16];
        snprintf(u, sizeof u, "k%02d", i);
        TT_WAIT_FOR(search_is(n.port, u, u), TT_DEADLINE_MS);
    }
    for (int i = 0; i < KUSERS; i++) { /* every acknowledged post of the followee (at most
                                           * 17 each: within a rebuild's merge of 50) */
        if (!atomic_load(&k.follow_acked[i]))
            continue;
        int followee = (i + 1) % KUSERS;
        snprintf(path, sizeof path, "/timeline/%s?limit=200", k.ids[i]);
        static char urls[1 << 15];
        TT_WAIT_FOR(({
                        page_urls(n.port, path, urls, sizeof urls);
                        size_t ul = strlen(urls);
                        urls[ul] = ' ', urls[ul + 1] = '\0';
                        bool all = true;
                        for (int p = followee; p < KPOSTS && all; p += KUSERS) {
                            char want[80];
                            snprintf(want, sizeof want, "%s ", k.post_url[p]);
                            all = !atomic_load(&k.acked[p]) || strstr(urls, want) != NULL;
                        }
                        all;
                    }),
                    TT_DEADLINE_MS);
    }
    tt_app_kill(&n, SIGTERM);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static void test_bad_input_answered_4xx(void **state)
{
    (void)state;
    tt_app n;
    start(&n, "bad", 0, NULL);
    char a[32], path[256], out[4096];
    make_user(n.port, "good", "Good", a);
    const char *unknown = "u0000000000000000000000000";
    struct {
        const char *method, *path, *body;
        int status;
    } cases[] = {
        {"POST", "/users", "{\"username\":\"good\",\"name\":\"Again\"}", 409},
        {"POST", "/users", "{\"username\":\"GOOD\",\"name\":\"Case\"}", 409},
        {"POST", "/users", "{\"username\":\"bad name\",\"name\":\"x\"}", 400},
        {"POST", "/users", "{\"username\":\"\",\"name\":\"x\"}", 400},
        {"POST", "/users", "{\"username\":\"abcdefghijabcdefghijabcdefghijabc\",\"name\":\"x\"}",
         400},
        {"POST", "/users", "{\"username\":\"okname\",\"name\":\"\"}", 400},
        {"POST", "/users", "{\"username\":\"okname\",\"name\":\"\\u0001\"}", 400},
        {"POST", "/users", "{\"username\":\"okname\"}", 400},
        {"POST", "/users", "{\"username\":\"okname\",\"name\":\"x\"", 400},
        {"POST", "/users", "[1,2]", 400},
        {"POST", "/users", "{\"username\":\"okname\",\"name\":\"\xff\xfe\"}", 400},
        {"GET", "/users/u0000000000000000000000000", NULL, 404},
        {"GET", "/users/nope", NULL, 404},
        {"PATCH", "/users/u0000000000000000000000000", "{\"name\":\"x\"}", 404},
        {"GET", "/users/u0000000000000000000000000/posts", NULL, 404},
        {"GET", "/timeline/u0000000000000000000000000", NULL, 404},
        {"POST", "/posts", "{\"user\":\"u0000000000000000000000000\",\"image_url\":"
                           "\"https://x/y.jpg\"}", 404},
        {"POST", "/posts", "{\"user\":\"nope\",\"image_url\":\"https://x/y.jpg\"}", 404},
        {"GET", "/search?q=", NULL, 400},
        {"GET", "/search", NULL, 400},
        {"GET", "/search?q=%20%21", NULL, 400},
        {"GET", "/search?q=%FF%FE", NULL, 400},
        {"GET", "/search?q=x&limit=abc", NULL, 400},
        {"GET", "/nowhere", NULL, 404},
        {"DELETE", "/users", NULL, 405},
        {"POST", "/health", NULL, 405},
        {"GET", "/posts", NULL, 405},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = http(n.port, cases[i].method, cases[i].path, cases[i].body, out, sizeof out);
        if (st != cases[i].status)
            print_error("%s %s %s: %d, wanted %d (%s)\n", cases[i].method, cases[i].path,
                        cases[i].body ? cases[i].body : "", st, cases[i].status, out);
        assert_int_equal(st, cases[i].status);
        assert_true(out[0] == '{' || cases[i].status == 204); /* every error a JSON body */
    }
    /* with the user known */
    snprintf(path, sizeof path, "/users/%s/following/%s", a, a);
    assert_int_equal(http(n.port, "PUT", path, NULL, out, sizeof out), 400);
    snprintf(path, sizeof path, "/users/%s/following/%s", a, unknown);
    assert_int_equal(http(n.port, "PUT", path, NULL, out, sizeof out), 404);
    assert_int_equal(http(n.port, "DELETE", path, NULL, out, sizeof out), 404);
    snprintf(path, sizeof path, "/users/%s", a);
    assert_int_equal(http(n.port, "PATCH", path, "{\"name\":7}", out, sizeof out), 400);
    char body[4200];
    snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"ftp://x/y\"}", a);
    assert_int_equal(http(n.port, "POST", "/posts", body, out, sizeof out), 400);
    char longurl[2100];
    memset(longurl, 'a', sizeof longurl - 1);
    memcpy(longurl, "https://x/", 10);
    longurl[sizeof longurl - 1] = '\0';
    snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"%s\"}", a, longurl);
    assert_int_equal(http(n.port, "POST", "/posts", body, out, sizeof out), 400);
    snprintf(path, sizeof path, "/users/%s/posts?before=garbage", a);
    assert_int_equal(http(n.port, "GET", path, NULL, out, sizeof out), 400);
    snprintf(path, sizeof path, "/users/%s/posts?limit=0", a);
    assert_int_equal(http(n.port, "GET", path, NULL, out, sizeof out), 400);
    /* a huge query, an oversized body */
    char q[400];
    memset(q, 'a', sizeof q - 1);
    q[sizeof q - 1] = '\0';
    snprintf(path, sizeof path, "/search?q=%.*s", 150, q);
    assert_int_equal(http(n.port, "GET", path, NULL, out, sizeof out), 400);
    char *huge = malloc(200000);
    memset(huge, 'x', 199999);
    huge[199999] = '\0';
    assert_int_equal(http(n.port, "POST", "/users", huge, out, sizeof out), 413);
    free(huge);
    /* made-up ids leave no actor behind */
    for (int i = 0; i < 100; i++) {
        snprintf(path, sizeof path, "/%s/u%024x", i % 2 ? "users" : "timeline", i + 1);
        assert_int_equal(http(n.port, "GET", path, NULL, out, sizeof out), 404);
    }
    TT_WAIT_FOR(({
                    cJSON *h = get_json(n.port, "/health");
                    const cJSON *act = cJSON_GetObjectItem(h, "active");
                    bool few = cJSON_GetObjectItem(act, "users")->valueint <= 2 &&
                               cJSON_GetObjectItem(act, "timelines")->valueint == 0 &&
                               cJSON_GetObjectItem(act, "posts")->valueint <= 1;
                    cJSON_Delete(h);
                    few;
                }),
                TT_DEADLINE_MS);
    /* still serving */
    assert_int_equal(http(n.port, "GET", "/health", NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "\"status\":\"ready\""));
    snprintf(path, sizeof path, "/users/%s", a);
    assert_int_equal(http(n.port, "GET", path, NULL, out, sizeof out), 200);
    tt_app_kill(&n, SIGTERM);
}


/* ---- the social port's table of hostile inputs ------------------------------------------- */

#define REQ(method, path) method " " path " HTTP/1.1\r\nHost: x\r\n\r\n"

/* A request with a body and its Content-Length (and extra header lines, or ""), in memory that
 * lives until the end of the test (one of 32). */
static const char *with_body(const char *method, const char *path, const char *headers,
                             const char *body)
{
    static char reqs[32][640];
    static unsigned next;
    char *r = reqs[next++ % 32];
    snprintf(r, 640, "%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n%s", method, path,
             headers, strlen(body), body);
    return r;
}

/* The social network port's table of hostile inputs (issue 21, bad input), one row each with its
 * required outcome (tests/support/test_hostile.h): statuses, the connection closed or kept, the
 * node serving others after each. test_bad_input_answered_4xx holds the API's own refusals
 * (field by field). */
static void test_hostile_input_table(void **state)
{
    (void)state;
    tt_app n;
    const char *sets[] = {"social.http.request_timeout_ms=1000", "social.http.max_request=4096",
                          NULL};
    start(&n, "hostile", 0, sets);
    char a[32], out[512];
    make_user(n.port, "hostile", "Host Ile", a);
    static char big_headers[8192], many_headers[4096], big_body[10000], long_path[1024],
        nested[512], pipelined_bad[512], user_path[128], posts_neg[128], posts_float[128],
        posts_big[128], long_id[512];
    snprintf(big_headers, sizeof big_headers, "GET /health HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n",
             6000, 0);
    size_t k = (size_t)snprintf(many_headers, sizeof many_headers, "GET /health HTTP/1.1\r\n");
    for (int i = 0; i < 70; i++)
        k += (size_t)snprintf(many_headers + k, sizeof many_headers - k, "X-%d: v\r\n", i);
    snprintf(many_headers + k, sizeof many_headers - k, "\r\n");
    k = (size_t)snprintf(big_body, sizeof big_body,
                         "POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\n");
    memset(big_body + k, 'x', 8000);
    snprintf(long_path, sizeof long_path, "GET /users/u%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 600, 0);
    k = (size_t)snprintf(nested, sizeof nested,
                         "POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n");
    for (int i = 0; i < 100; i++)
        nested[k + (size_t)i] = '[', nested[k + 100 + (size_t)i] = ']';
    snprintf(pipelined_bad, sizeof pipelined_bad, "%s%s%s", REQ("GET", "/health"),
             "GET /health HTTP/1.1\r\nContent-Length: x\r\n\r\n", REQ("GET", "/health"));
    snprintf(user_path, sizeof user_path, "/users/%s", a);
    snprintf(posts_neg, sizeof posts_neg,
             "GET /users/%s/posts?limit=-1 HTTP/1.1\r\nHost: x\r\n\r\n", a);
    snprintf(posts_float, sizeof posts_float,
             "GET /users/%s/posts?limit=1.5 HTTP/1.1\r\nHost: x\r\n\r\n", a);
    snprintf(posts_big, sizeof posts_big,
             "GET /timeline/%s?limit=18446744073709551616 HTTP/1.1\r\nHost: x\r\n\r\n", a);
    snprintf(long_id, sizeof long_id, "GET /users/u%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 300, 0);
    const tt_http_row rows[] = {
        /* the request line and headers */
        {"headers larger than max_request", big_headers, 0, "431", true, NULL, false},
        {"70 headers (64 at most)", many_headers, 0, "431", true, NULL, false},
        {"an unknown method", REQ("BREW", "/health"), 0, "501", true, NULL, false},
        {"not HTTP", "\x01\x02\xff GARBAGE \x00\r\n\r\n", 17, "400", true, NULL, false},
        {"a NUL byte in the path", "GET /users/u1\0x HTTP/1.1\r\n\r\n", 29, "400", true, NULL,
         false},
        {"a path segment above the URL's 512 bytes", long_path, 0, "400", true, NULL, false},
        {"a malformed Content-Length", "POST /users HTTP/1.1\r\nContent-Length: x\r\n\r\n", 0,
         "400", true, NULL, false},
        {"a request that never ends (slowloris: request_timeout_ms)",
         "POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"us", 0, "408", true,
         NULL, false},
        /* bodies */
        {"a body larger than max_request (413, read by the client)", big_body, 0, "413", true,
         NULL, false},
        {"a body larger than max_request announced with 100-continue (no 100)",
         "POST /users HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
         "Content-Length: 100000\r\n\r\n",
         0, "413", true, NULL, false},
        {"Expect: 100-continue",
         with_body("POST", "/users", "Expect: 100-continue\r\n",
                   "{\"username\":\"expecting\",\"name\":\"Ex Pecting\"}"),
         0, "100 201", false, "expecting", false},
        {"a chunked body",
         "POST /users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         "f\r\n{\"username\":\"ch\r\n16\r\nunked\",\"name\":\"Chunk\"}\r\n0\r\n\r\n",
         0, "201", false, "chunked", false},
        {"invalid JSON", with_body("POST", "/users", "", "{oops"), 0, "400", false, NULL, false},
        {"invalid UTF-8 in JSON",
         with_body("POST", "/users", "", "{\"username\":\"x\xc3\x28\",\"name\":\"n\"}"), 0, "400",
         false, NULL, false},
        {"JSON with a duplicate key",
         with_body("POST", "/users", "",
                   "{\"username\":\"dup\",\"username\":\"dup2\",\"name\":\"n\"}"),
         0, "400", false, NULL, false},
        {"JSON nested 100 deep", nested, 0, "400", false, NULL, false},
        {"a name of the wrong type (a number)",
         with_body("PATCH", user_path, "", "{\"name\":7}"), 0, "400", false, NULL, false},
        {"limit negative", posts_neg, 0, "400", false, "limit", false},
        {"limit a float", posts_float, 0, "400", false, "limit", false},
        {"limit 2^64 (capped: above 200 is 200, README)", posts_big, 0, "200", false, NULL,
         false},
        /* connections */
        {"HTTP/1.0", "GET /health HTTP/1.0\r\n\r\n", 0, "200", true, "Connection: close", false},
        {"Connection: close", "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 0, "200", true,
         "Connection: close", false},
        {"Connection: close with requests after it (not answered)",
         "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n" REQ("GET", "/health"), 0, "200",
         true, NULL, false},
        {"HEAD refused by the server itself (413, without a body either)",
         "HEAD /health HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", 0, "413", true, NULL, true},
        {"HEAD", REQ("HEAD", "/health"), 0, "200", false, NULL, true},
        {"three pipelined requests",
         REQ("GET", "/health") REQ("GET", "/search?q=host") REQ("GET", "/nowhere"), 0,
         "200 200 404", false, NULL, false},
        {"pipelined requests with a bad one in the middle", pipelined_bad, 0, "200 400", true,
         NULL, false},
        /* ids */
        {"a long user id (under the URL's limit)", long_id, 0, "404", false, NULL, false},
        {"a %-encoded slash in a user id", REQ("GET", "/users/u1%2Fx"), 0, "404", false, NULL,
         false},
        {"a %-encoded NUL in a user id", REQ("GET", "/users/u1%00x"), 0, "404", false, NULL,
         false},
        {"a malformed %-escape in a query", REQ("GET", "/search?q=%zz"), 0, "400", false, NULL,
         false},
        {"a query of invalid UTF-8", REQ("GET", "/search?q=%FF%FE"), 0, "400", false, NULL,
         false},
        {"dot segments in an id", REQ("GET", "/users/../../etc/passwd"), 0, "404", false, NULL,
         false},
    };
    tt_http_table(n.port, rows, sizeof rows / sizeof rows[0]);
    /* the user made before is untouched */
    assert_int_equal(http(n.port, "GET", user_path, NULL, out, sizeof out), 200);
    assert_non_null(strstr(out, "Host Ile"));
    tt_app_kill(&n, SIGTERM);
}

/* ---- cluster mode -------------------------------------------------------------------------- */

static int peers_up(int port)
{
    cJSON *h = get_json(port, "/health");
    const cJSON *p = h != NULL ? cJSON_GetObjectItem(h, "peers_up") : NULL;
    int up = cJSON_IsNumber(p) ? p->valueint : -1;
    cJSON_Delete(h);
    return up;
}

static void cluster_node(tt_app *n, const char *conf, const char *name, const char *dir)
{
    const char *argv[] = {"social", "--config", conf, "--node", name, "--http", "127.0.0.1:0",
                          "--data", dir, NULL};
    tt_app_start(n, SOCIAL_BIN, argv);
}

/* A request that may meet a node going away or a key moving: retried until it is not 503 (or a
 * connection refused), bounded. */
static int settled(int port, const char *method, const char *path, const char *body, char *out,
                   size_t cap)
{
    /* by hand, not TT_WAIT_FOR: its final check would send the request once more */
    uint64_t deadline = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    int st;
    while (((st = http(port, method, path, body, out, cap)) == 503 || st < 0) &&
           tt_now_ns() < deadline)
        tt_sleep_ms(20);
    if (st == 503 || st < 0)
        print_error("%s %s: %d %s\n", method, path, st, out);
    return st;
}

static void test_cluster_any_node_and_kill9(void **state)
{
    (void)state;
    char base[128], conf[192], dirs[3][160];
    snprintf(base, sizeof base, "%s/cluster", g_dir);
    assert_int_equal(mkdir(base, 0755), 0);
    int rport = 0;
    pid_t redis = redis_start(base, &rport);
    if (redis <= 0)
        fail_msg("cannot start redis-server (scripts/bootstrap installs it)");
    int np[3] = {free_port(), free_port(), free_port()};
    snprintf(conf, sizeof conf, "%s/cluster.conf", base);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "store = { backend = \"redis\"; redis = { host = \"127.0.0.1\"; port = %d; };\n"
            "          redeliver_ms = 2000; };\n"
            "cluster = { secret = \"social-cluster-test\"; heartbeat_ms = 100; monitors = %u;\n"
            "  down_after_ms = 1000; seeds = [ \"tcp://127.0.0.1:%d\" ];\n"
            "  nodes = ( { name = \"n1\"; listen = \"tcp://127.0.0.1:%d\"; },\n"
            "            { name = \"n2\"; listen = \"tcp://127.0.0.1:%d\"; },\n"
            "            { name = \"n3\"; listen = \"tcp://127.0.0.1:%d\"; } ); };\n",
            rport, tt_monitors(), np[0], np[0], np[1], np[2]);
    fclose(f);
    const char *names[3] = {"n1", "n2", "n3"};
    tt_app n[3];
    for (int i = 0; i < 3; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/%s", base, names[i]);
        cluster_node(&n[i], conf, names[i], dirs[i]);
    }
    for (int i = 0; i < 3; i++)
        TT_WAIT_FOR(peers_up(n[i].port) == 2, TT_DEADLINE_MS);
    /* twelve users, made through the three nodes; each follows the next two */
    enum { U = 12 };
    char ids[U][32], out[1 << 16], path[512], body[512];
    for (int i = 0; i < U; i++) {
        snprintf(body, sizeof body, "{\"username\":\"c%02d\",\"name\":\"Cluster %d\"}", i, i);
        int st = settled(n[i % 3].port, "POST", "/users", body, out, sizeof out);
        if (st != 201)
            print_error("user %d: %d %s\n", i, st, out);
        assert_int_equal(st, 201);
        cJSON *j = cJSON_Parse(out);
        snprintf(ids[i], sizeof ids[i], "%s", cJSON_GetObjectItem(j, "id")->valuestring);
        cJSON_Delete(j);
    }
    for (int i = 0; i < U; i++)
        for (int k = 1; k <= 2; k++) {
            snprintf(path, sizeof path, "/users/%s/following/%s", ids[i], ids[(i + k) % U]);
            assert_int_equal(settled(n[(i + k) % 3].port, "PUT", path, NULL, out, sizeof out),
                             204);
        }
    /* every timeline running (read through some node), then one post each, through another */
    for (int i = 0; i < U; i++) {
        snprintf(path, sizeof path, "/timeline/%s", ids[i]);
        assert_int_equal(settled(n[(i + 1) % 3].port, "GET", path, NULL, out, sizeof out), 200);
    }
    for (int i = 0; i < U; i++) {
        snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"https://c/%d-1\"}",
                 ids[i], i);
        assert_int_equal(settled(n[(i + 2) % 3].port, "POST", "/posts", body, out, sizeof out),
                         201);
    }
    /* any node answers any timeline: i's holds the posts of i+1 and i+2, newest first (the
     * users posted in index order) */
    for (int i = 0; i < U; i++) {
        char want[128];
        int a = (i + 1) % U, b = (i + 2) % U, hi = a > b ? a : b, lo = a > b ? b : a;
        snprintf(want, sizeof want, "https://c/%d-1 https://c/%d-1", hi, lo);
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "/timeline/%s", ids[i]);
            TT_WAIT_FOR(page_is(n[k].port, path, want), TT_DEADLINE_MS);
        }
    }
    /* every node's search replica knows every user */
    for (int k = 0; k < 3; k++)
        TT_WAIT_FOR(search_is(n[k].port, "c07", "c07"), TT_DEADLINE_MS);
    /* kill -9 of n2: its users and timelines move to n1 and n3 */
    tt_app_kill(&n[1], SIGKILL);
    TT_WAIT_FOR(peers_up(n[0].port) == 1 && peers_up(n[2].port) == 1, TT_DEADLINE_MS);
    for (int i = 0; i < U; i++) {
        snprintf(path, sizeof path, "/users/%s", ids[i]);
        assert_int_equal(settled(n[i % 2 ? 2 : 0].port, "GET", path, NULL, out, sizeof out), 200);
        assert_non_null(strstr(out, "\"following\":2"));
        assert_non_null(strstr(out, "\"followers\":2"));
        assert_non_null(strstr(out, "\"posts\":1"));
    }
    /* a second post each, through the survivors; every timeline converges on both */
    for (int i = 0; i < U; i++) {
        snprintf(body, sizeof body, "{\"user\":\"%s\",\"image_url\":\"https://c/%d-2\"}",
                 ids[i], i);
        assert_int_equal(settled(n[i % 2 ? 0 : 2].port, "POST", "/posts", body, out, sizeof out),
                         201);
    }
    for (int i = 0; i < U; i++) {
        char want[160];
        int a = (i + 1) % U, b = (i + 2) % U, hi = a > b ? a : b, lo = a > b ? b : a;
        snprintf(want, sizeof want, "https://c/%d-2 https://c/%d-2 https://c/%d-1 https://c/%d-1",
                 hi, lo, hi, lo);
        snprintf(path, sizeof path, "/timeline/%s", ids[i]);
        TT_WAIT_FOR(page_is(n[0].port, path, want), TT_DEADLINE_MS);
        TT_WAIT_FOR(page_is(n[2].port, path, want), TT_DEADLINE_MS);
    }
    tt_app_kill(&n[0], SIGTERM);
    tt_app_kill(&n[2], SIGTERM);
    redis_stop(redis);
}

/* GET /metrics: the conventions (test_prom.h), requests counted by route pattern, the user
 * actors' messages, the store's commits and the bus subscriptions' lag. */
static void test_metrics_scraped(void **state)
{
    (void)state;
    tt_app n;
    start(&n, "metrics", 0, NULL);
    static char m1[1 << 20], m2[1 << 20];
    char a[32], b[32], path[160];
    assert_int_equal(http(n.port, "GET", "/metrics", NULL, m1, sizeof m1), 200);
    assert_non_null(strstr(g_head, "\r\nContent-Type: text/plain; version=0.0.4"));
    assert_int_equal(tp_check(m1), 0);
    const char *users = "troupe_http_requests_total{route=\"/users\",method=\"POST\",status=\"201\"}";
    assert_true(tp_value(m1, users) == -1);
    double commits1 = tp_value(m1, "troupe_store_commits_total");
    make_user(n.port, "metra", "Met A", a);
    make_user(n.port, "metrb", "Met B", b);
    assert_int_equal(follow(n.port, a, b, true), 204);
    post(n.port, b, "https://img.example/m.png", NULL);
    snprintf(path, sizeof path, "/users/%s", a);
    assert_int_equal(http(n.port, "GET", path, NULL, NULL, 0), 200);
    assert_int_equal(http(n.port, "GET", "/users/u0000000000000000000000000", NULL, NULL, 0), 404);
    assert_int_equal(http(n.port, "GET", "/metrics", NULL, m2, sizeof m2), 200);
    assert_int_equal(tp_check(m2), 0);
    assert_true(tp_value(m2, users) == 2);
    assert_true(tp_value(m2, "troupe_http_requests_total{route=\"/posts\",method=\"POST\","
                              "status=\"201\"}") == 1);
    assert_true(tp_value(m2, "troupe_http_requests_total{route=\"/users/{id}/following/{other}\","
                              "method=\"PUT\",status=\"204\"}") == 1);
    assert_true(tp_value(m2, "troupe_http_requests_total{route=\"/users/{id}\",method=\"GET\","
                              "status=\"200\"}") == 1);
    assert_true(tp_value(m2, "troupe_http_requests_total{route=\"/users/{id}\",method=\"GET\","
                              "status=\"404\"}") == 1);
    assert_null(strstr(m2, a)); /* ids never become labels */
    assert_true(tp_value(m2, "troupe_http_request_duration_seconds_count{route=\"/users\","
                              "method=\"POST\"}") == 2);
    assert_true(tp_value(m2, "troupe_store_commits_total") > commits1);
    assert_non_null(strstr(m2, "# TYPE troupe_bus_lag_events gauge\n"));
    assert_non_null(strstr(m2, "troupe_bus_lag_events{subscription=\""));
    assert_non_null(strstr(m2, "# TYPE troupe_store_commit_seconds histogram\n"));
    assert_non_null(strstr(m2, "troupe_actor_messages_processed_total{behaviour=\""));
    tt_app_kill(&n, SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notes_timeline_scenario),
        cmocka_unit_test(test_notes_search_scenario),
        cmocka_unit_test(test_unfollow_and_follow_merge),
        cmocka_unit_test(test_celebrity_merged_at_read),
        cmocka_unit_test(test_passivated_timeline_rebuilt),
        cmocka_unit_test(test_kill9_under_load_loses_nothing),
        cmocka_unit_test(test_bad_input_answered_4xx),
        cmocka_unit_test(test_hostile_input_table),
        cmocka_unit_test(test_metrics_scraped),
        cmocka_unit_test(test_cluster_any_node_and_kill9),
    };
    tt_apply_filter();
    return cmocka_run_group_tests(tests, setup, teardown);
}
