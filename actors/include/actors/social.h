/*
 * actors/social.h — the image-sharing network's actors: user, post, timeline (with its fan-out
 * consumer) and search, and the protocol between them. apps/social wires them to HTTP; any app
 * may wire them otherwise.
 *
 * Who owns what (availability first: commands are durable at once, read models catch up by
 * events; docs in apps/social/README.md):
 * - user (shard "users", key = user id, persistent, journal "user/ID"): username, name, the
 *   follower and following sets. Publishes user.created, user.updated, follow.added,
 *   follow.removed in the transaction of the command, and user.celebrity [id, on] when its
 *   follower count crosses celebrity_followers (up: on = 1; back down: 0). A user's id is derived from the case-folded
 *   username (social_user_id), so the actor of the id is the single writer of the username's
 *   claim: uniqueness needs no second actor and no two-phase protocol.
 * - post (shard "posts", key = author id, persistent, journal "posts/ID"): the author's posts
 *   (id, image URL, ts: microseconds, strictly increasing per author). Publishes post.created.
 *   Answers a user's posts in pages: read-your-writes (the 201 leaves after the commit).
 * - timeline (shard "timelines", key = reader id, in memory, started on demand, passivated when
 *   idle): the newest `timeline_cap` posts of the users the reader follows, newest first. Rebuilt
 *   at start from the user (following) and post (newest posts of each followee) actors. Authors
 *   with more than `celebrity_followers` followers are not fanned out: their posts are merged in
 *   at read time.
 * - fanout (one per node, subscription "social.fanout.NODE"): consumes post.created, follow.added,
 *   follow.removed, user.celebrity; has the author's user actor insert the post into the
 *   timelines of its followers that run on this node (SOC_U_FANOUT, a page of followers at a
 *   time; when the author's actor runs on another node, asks it for its followers in pages and
 *   inserts them itself); an idle timeline rebuilds instead;
 *   follow events merge or remove the followee's posts in the follower's running timeline; a
 *   user that became a celebrity is pulled at read time from then on by its followers' running
 *   timelines (and pushed again when it no longer is one).
 * - search (one per node, subscription "social.search.NODE", replayed from the start of the log:
 *   an in-memory read model): users by username and name words, with their newest images
 *   (actors/search_index.h).
 *
 * Entries of a timeline are 8 bytes: a pointer to one shared, reference counted record of the
 * post (id, author, URL, ts), so a post fanned out to 100,000 timelines is stored once per node.
 * The running timelines' entries live in one table of the node (actors/src/timelines.c): the
 * fan-out writes into them directly, without a message per follower.
 */
#ifndef TROUPE_ACTORS_SOCIAL_H
#define TROUPE_ACTORS_SOCIAL_H

#include <stdatomic.h>
#include <troupe.h>
#include <troupe/shard.h>
#include <troupe/store.h>

#define SOCIAL_ID_MAX 32u           /* a user id: "u" + 24 hex digits */
#define SOCIAL_POST_ID_MAX 64u      /* a post id: "USERID.TS" */
#define SOCIAL_USERNAME_MAX 32u     /* [A-Za-z0-9_]{1,32} */
#define SOCIAL_NAME_MAX 400u        /* bytes: 1..100 characters of UTF-8 */
#define SOCIAL_NAME_CHARS 100u
#define SOCIAL_URL_MAX 2048u
#define SOCIAL_PAGE_MAX 200u
#define SOCIAL_FOLLOWERS_PAGE 1000u /* followers per page of SOC_U_FOLLOWERS */

/* Message types (below TR_MSG_SHARD_BASE). Payloads msgpack; every reply starts with a status. */
enum {
    SOC_U_CREATE = 0x5301,  /* [username, name] -> [st, id, username, name] */
    SOC_U_GET,              /* [] -> [st, id, username, name, followers, following, posts] */
    SOC_U_RENAME,           /* [name] -> as SOC_U_GET */
    SOC_U_FOLLOW,           /* [other] -> [st] */
    SOC_U_UNFOLLOW,         /* [other] -> [st] */
    SOC_U_FOLLOWER_ADD,     /* [who] -> [st, followers]: who follows this user (user to user) */
    SOC_U_FOLLOWER_DEL,     /* [who] -> [st, followers] */
    SOC_U_FOLLOWERS,        /* [from, limit] -> [st, total, next, ids...] (next 0: the end) */
    SOC_U_FOLLOWING,        /* [] -> [st, n, ids...] */
    SOC_U_INFO,             /* [] -> [st, username, name, followers] */
    SOC_U_FANOUT,           /* [post id, from] -> [st, total, next, placed] (this node only:
                             * the post's record, held by the fan-out, inserted into the running
                             * timelines of followers [from, from + SOCIAL_FOLLOWERS_PAGE);
                             * placed 0 and next 0 when total is above celebrity_followers) */
    SOC_P_CREATE = 0x5321,  /* [image_url] -> [st, id, ts] once durable */
    SOC_P_LIST,             /* [before_ts, before_id, limit] -> [st, n, (id, url, ts)..., more] */
    SOC_P_COUNT,            /* [] -> [st, n] */
    SOC_T_PAGE = 0x5341,    /* [before_ts, before_id, limit] -> [st, n, (id, user, url, ts)...,
                             * more] */
    SOC_T_FOLLOW,           /* [followee] (one-way: merge the followee's newest posts) */
    SOC_T_UNFOLLOW,         /* [followee] (one-way: drop the followee's posts) */
    SOC_T_COUNT,            /* [] -> [st, entries] */
    SOC_T_CELEB,            /* [author, on] (one-way: the author became a celebrity, or no
                             * longer is) */
    SOC_T_RETRY,            /* [] (the timeline to itself, after a backoff: ask again what a
                             * rebuild or merge could not get) */
    SOC_T_TOUCH,            /* [] (one-way: the timeline was read from the table, so it is not
                             * idle; social_timeline_read sends it at most once a second) */
    SOC_T_REFRESH,          /* [] (one-way, a repair: ask the reader's user actor again whom the
                             * reader follows, and merge in the followees missing) */
    SOC_T_LINGER,           /* [] (a timeline of no such reader to itself: it ends if no page came
                             * since it was sent) */
    SOC_S_QUERY = 0x5361,   /* [q, limit, images] -> [st, n, (id, username, name, k,
                             * (post id, url, ts) * k) * n] */
    SOC_F_RETRY = 0x5381,   /* [event id] (the fan-out consumer to itself, after a backoff: ask
                             * the author's followers again) */
    SOC_F_PUBLISH,          /* [] (the fan-out consumer to itself: publish the repair that the
                             * membership changes seen call for) */
    SOC_F_REWIND,           /* [] (the fan-out consumer to itself: start the repair's rewind) */
    SOC_F_TICK,             /* [] (a rewind to itself: give up when its end never comes) */
};

/* Statuses. */
enum {
    SOC_OK = 0,
    SOC_NOUSER = 1,         /* no such user (404) */
    SOC_TAKEN = 2,          /* the username is taken (409) */
    SOC_INVALID = 3,        /* bad input (400) */
    SOC_LIMIT = 4,          /* a bound was reached (409: following at most max_following) */
    SOC_UNAVAILABLE = 5,    /* try again (503) */
};

/* Counters and lag samples of a node's social actors (atomics: read from any thread). */
#define SOCIAL_LAG_BUCKETS 160u  /* four per power of two from 16 µs: quantiles within 25% */
typedef struct social_lag {
    _Atomic uint64_t n;
    _Atomic uint64_t bucket[SOCIAL_LAG_BUCKETS]; /* bucket 4k + j: lag below
                                                  * 16 µs * 2^k * (1 + (j + 1) / 4) */
} social_lag;

typedef struct social_stats {
    _Atomic uint64_t fanout_posts;      /* post.created events fanned out */
    _Atomic uint64_t fanout_inserts;    /* timeline insertions (running timelines) */
    _Atomic uint64_t fanout_skipped;    /* posts of celebrities, not fanned out */
    _Atomic uint64_t timelines_built;   /* timelines (re)built at start */
    _Atomic uint64_t timeline_retries;  /* rebuild questions that failed, asked again later */
    _Atomic uint64_t search_events;     /* events applied to the search read model */
    _Atomic uint64_t post_records;      /* shared post records alive on this node */
    _Atomic uint64_t repairs;           /* repairs published (membership changes seen here) */
    _Atomic uint64_t rewinds;           /* rewinds run to their end (fan-out replayed) */
    _Atomic uint64_t rewind_events;     /* events replayed by rewinds */
    social_lag search_lag;              /* commit -> visible in search */
    social_lag timeline_lag;            /* commit -> inserted into the running timelines */
    social_lag timeline_rebuild;        /* a timeline's start -> built (pages wait meanwhile) */
} social_stats;

/* What the social actors of one node share. Set it up, start the shards with social_*_behaviour
 * and social_shard_arg, then spawn the fanout and search actors. */
typedef struct social_ctx {
    tr_store *store;
    tr_shard *users, *posts, *timelines;
    unsigned celebrity_followers;   /* 0 = 10,000 */
    unsigned timeline_cap;          /* 0 = 800 */
    unsigned follow_merge;          /* newest posts merged on a follow; 0 = 50 */
    unsigned max_following;         /* 0 = 5,000 */
    unsigned search_images;         /* images kept per user by search; 0 = 20 */
    unsigned call_ms;               /* actor-to-actor request timeout; 0 = 5,000 */
    const char *node_name;          /* names this node's search subscription */
    tr_system *sys;                 /* set by social_shards_start */
    tr_node *node;                  /* likewise: the cluster (NULL: one node) */
    social_stats stats;
    struct soc_posts *posts_table;  /* the node's post records (made on first use; freed by
                                     * social_ctx_free) */
    struct soc_tls *timelines_table; /* the running timelines' entries (likewise) */
} social_ctx;

/* Starts ctx's three shards on a started system — users, posts, timelines ("social-users",
 * "social-posts", "social-timelines"), placed by node (NULL: every key here) — with max_keys and
 * idle_ms as tr_shard_opts has them. On error the ones started stay in ctx for
 * social_shards_free. */
int social_shards_start(tr_system *sys, social_ctx *ctx, tr_node *node, size_t max_keys,
                        unsigned idle_ms);
/* Frees the shards after tr_system_join (their actors ended with the system). */
void social_shards_free(social_ctx *ctx);

/* Frees what the actors left in ctx (the post records' table), after the system has ended. */
void social_ctx_free(social_ctx *ctx);

/* A keyed actor's start argument (tr_shard_opts.init_arg = social_shard_arg, arg_size =
 * sizeof(social_arg), user = the social_ctx). */
typedef struct social_arg {
    social_ctx *ctx;
    const char *key;
} social_arg;
int social_shard_arg(void *user, const char *key, void *arg);
/* A user or post actor whose user does not exist answers SOC_NOUSER and ends (normal exit), so
 * requests for made-up ids leave no actor behind. */

extern const tr_behaviour social_user_behaviour;
extern const tr_behaviour social_post_behaviour;
extern const tr_behaviour social_timeline_behaviour;
/* Spawn with the social_ctx * as argument (one each per node). */
extern const tr_behaviour social_fanout_behaviour;
extern const tr_behaviour social_search_behaviour;

/* A post as social_timeline_read shows it (valid while its callback runs). */
typedef struct social_post_view {
    const char *id, *author, *url;
    uint64_t ts;
    const char *json;           /* {"id","user","image_url","ts"} as the HTTP API writes a post */
    size_t json_len;
} social_post_view;
typedef void (*social_page_fn)(void *arg, const social_post_view *posts, size_t n, bool more);

/* Serves a page of reader's timeline (at most limit posts older than the cursor before_ts /
 * before_id, before_ts 0: from the newest; more: older ones exist) straight from the node's
 * timeline table, without a message, when the table alone has the answer: the timeline runs on
 * this node, is built (no rebuild or follow merge under way) and pulls no celebrity at read time.
 * fn runs under the table's stripe lock: write the answer, do not block or call actors. Returns
 * false without calling fn otherwise: ask the timeline actor (SOC_T_PAGE), which answers the same
 * page. A timeline read this way is kept from passivation (SOC_T_TOUCH). */
bool social_timeline_read(social_ctx *ctx, const char *reader, uint64_t before_ts,
                          const char *before_id, size_t limit, social_page_fn fn, void *arg);

/* The running timelines of this node: how many, the entries they hold and the bytes of their
 * entry rings (capacity included; the shared post records apart). Any argument may be NULL. */
void social_timeline_memory(social_ctx *ctx, uint64_t *timelines, uint64_t *entries,
                            uint64_t *bytes);
/* All the memory of this node's timeline table: its 2 MiB chunks (records, follow sets up to
 * 1 KiB, rings up to 128 entries, free blocks and pages kept for reuse included), its slot
 * arrays and the larger rings and sets it took from malloc (the shared post records apart). */
uint64_t social_timeline_table_bytes(social_ctx *ctx);

/* The id of the user named `username` (case-folded), into out (SOCIAL_ID_MAX + 1 bytes). */
void social_user_id(const char *username, size_t len, char out[SOCIAL_ID_MAX + 1]);
/* Whether s[0..len) is a valid username / user id / name (UTF-8, 1..100 characters, no control
 * characters) / image URL (http:// or https://, at most 2,048 bytes, no space or control). */
bool social_username_valid(const char *s, size_t len);
bool social_id_valid(const char *s, size_t len);
bool social_name_valid(const char *s, size_t len);
bool social_url_valid(const char *s, size_t len);

/* Lag: a sample (µs) and a quantile of the samples so far (µs, the bucket's upper bound). */
void social_lag_add(social_lag *l, uint64_t us);
uint64_t social_lag_quantile(const social_lag *l, double q);

/* Current time in microseconds since the Unix epoch. */
uint64_t social_now_us(void);

#endif
