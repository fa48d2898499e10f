/*
 * actors/search_index.h — the search read model's core: users indexed by username and by the words
 * of their name, each with their newest images; no actor, no lock (the search actor owns one).
 *
 * Text is compared after Unicode normalisation: NFKC with case folding (libutf8proc's
 * UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD | UTF8PROC_STABLE, plus
 * UTF8PROC_IGNORE to drop default-ignorable code points), so "ÉMILE", "émile" and "e\u0301mile"
 * are the same. A name's words are its maximal runs of letters, marks and digits (Unicode
 * categories L*, M*, N*) after normalisation; a username is one word.
 *
 * A query is normalised the same way (spaces and control characters trimmed at both ends) and
 * split into words. A user matches when
 * - tier 0: the whole normalised query equals the normalised username;
 * - tier 1: the normalised query, holding no space, is a proper prefix of the normalised
 *   username ("jean-l" finds "jean-luc");
 * - tier 2: every query word is a whole word of the name, or a prefix of one, each query word
 *   matched by a name word of its own;
 * and ranks by tier, then (within tier 2) by how many query words matched a name word whole
 * (more first), then by normalised username (bytes, ascending), then id, so answers are
 * deterministic. A user is listed once, at its best tier.
 *
 * Cost: put/rename/add_image O(log n + words). Tiers 0 and 1 are exact and return their first
 * `limit` users without visiting every match (crit-bit tree walks). Tier 2 takes its candidates
 * from the rarest query word, each word's users in username order, and visits at most 10,000 of
 * them: beyond, the answer is the best of those (measured at 1,000,000 users: one name word p99
 * 1.2 µs, two name words p99 50 µs; search_index.c).
 */
#ifndef TROUPE_ACTORS_SEARCH_INDEX_H
#define TROUPE_ACTORS_SEARCH_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define SEARCH_ID_MAX 64u           /* a user or post id, bytes at most */
#define SEARCH_USERNAME_MAX 32u     /* bytes */
#define SEARCH_NAME_MAX 400u        /* bytes (100 characters of UTF-8 at most 4 bytes each) */
#define SEARCH_URL_MAX 2048u        /* an image URL, bytes */
#define SEARCH_QUERY_MAX 100u       /* a query, bytes */

typedef struct search_index search_index;

/* One image of a user, as search answers it. */
typedef struct search_image {
    const char *id;             /* the post's id */
    const char *url;
    uint64_t ts;                /* microseconds since the epoch */
} search_image;

/* One user in an answer; the pointers stay valid until the index is next changed. */
typedef struct search_hit {
    const char *id, *username, *name;
    const search_image *images; /* newest first */
    size_t nimages;
    int tier;                   /* 0, 1 or 2 (see above) */
} search_hit;

/* A new, empty index keeping each user's newest `images_per_user` images (0 = 20, at most 1,000).
 * NULL when out of memory. */
search_index *search_index_new(unsigned images_per_user);
/* Frees the index and everything in it. */
void search_index_free(search_index *ix);

/* Adds user `id`, or when it is there already updates its username and name (and re-indexes
 * them). 0; -EINVAL for an empty or too long id/username/name or text that is not valid UTF-8;
 * -ENOMEM. */
int search_index_put_user(search_index *ix, const char *id, const char *username,
                          const char *name);
/* Adds image `post_id` of user `user_id` (a user not known yet is created with an empty username
 * and name, and is not found by any query until put_user names it). Keeps the newest
 * images_per_user by (ts, then post id); adding the same post id twice changes nothing (events
 * are delivered at least once). 0; -EINVAL; -ENOMEM. */
int search_index_add_image(search_index *ix, const char *user_id, const char *post_id,
                           const char *url, uint64_t ts);
/* Answers query q (qlen bytes, not NUL-terminated necessarily): at most `limit` hits into out
 * (capacity limit), their count in *n; each hit's images cut to the newest `images`.
 * 0; -EINVAL for an empty query (after normalisation: no letter or digit left), one above
 * SEARCH_QUERY_MAX bytes, or invalid UTF-8; -ENOMEM. */
int search_index_query(search_index *ix, const char *q, size_t qlen, unsigned limit,
                       unsigned images, search_hit *out, size_t *n);
/* Users in the index. */
size_t search_index_users(const search_index *ix);
/* Bytes the index holds (its allocations, approximately). */
size_t search_index_bytes(const search_index *ix);

#endif
