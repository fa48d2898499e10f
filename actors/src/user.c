/*
 * user.c — the user actor (actors/social.h): one persistent actor per user id, the single writer
 * of that user's name, its username's claim, and its follower and following sets.
 *
 * Journal "user/ID", events (msgpack): [1, username, name] created, [2, name] renamed,
 * [3, other] / [4, other] following added / removed, [5, who] / [6, who] follower added /
 * removed; a snapshot ([username, name, followers..., following...]) every snapshot_every
 * events. Every command persists its event, publishes its bus event in the same unit, and
 * answers after the commit.
 *
 * A follow touches two users: A asks B's actor to add A as a follower (B persists, answers after
 * its commit), then A persists the following and publishes follow.added. Were A to crash in
 * between, B lists a follower A that does not follow it: the fan-out would push B's posts to A's
 * timeline, which drops posts of authors it does not follow; the client's retry (PUT is
 * idempotent) completes the follow. An unfollow goes the same way round (B first), so a crash
 * leaves at worst a follow that the retry removes.
 */
#include "social_impl.h"

#include <stdio.h>
#include <string.h>

enum { E_CREATED = 1, E_RENAMED, E_FOLLOWING_ADD, E_FOLLOWING_DEL, E_FOLLOWER_ADD,
       E_FOLLOWER_DEL };
enum { W_FOLLOW = 1, W_UNFOLLOW, W_GET };

#define PENDING_MAX 10000u /* requests waiting for another actor, at most */

typedef struct pend {
    struct pend *next;
    uint64_t corr;
    int kind;
    uint32_t reply_type;
    tr_from from;
    char other[SOCIAL_ID_MAX + 1];
} pend;

typedef struct user_st {
    social_ctx *ctx;
    char id[SOCIAL_ID_MAX + 1];
    tr_journal *j;
    bool exists;
    char username[SOCIAL_USERNAME_MAX + 1];
    char name[SOCIAL_NAME_MAX + 1];
    soc_set followers, following;
    soc_hset followers_h;       /* the followers' id hashes, for SOC_U_FANOUT (sorted by hash) */
    pend *pending;
    size_t npending;
} user_st;

/* ---- state changes (recovery and live) ----------------------------------------------------- */

static int apply_event(user_st *u, const void *ev, size_t len)
{
    tr_reader r;
    uint64_t kind;
    char a[SOCIAL_NAME_MAX + 1], b[SOCIAL_NAME_MAX + 1];
    tr_reader_init_bytes(&r, ev, len);
    int rc = tr_read_u64(&r, &kind);
    if (rc == TR_OK)
        rc = soc_read_strz(&r, a, sizeof a);
    if (rc == TR_OK && kind == E_CREATED)
        rc = soc_read_strz(&r, b, sizeof b);
    tr_reader_done(&r);
    if (rc != TR_OK)
        return rc;
    switch (kind) {
    case E_CREATED:
        u->exists = true;
        snprintf(u->username, sizeof u->username, "%.*s", (int)SOCIAL_USERNAME_MAX, a);
        snprintf(u->name, sizeof u->name, "%s", b);
        return TR_OK;
    case E_RENAMED:
        snprintf(u->name, sizeof u->name, "%s", a);
        return TR_OK;
    case E_FOLLOWING_ADD:
        return soc_set_add(&u->following, a) < 0 ? TR_ENOMEM : TR_OK;
    case E_FOLLOWING_DEL:
        soc_set_del(&u->following, a);
        return TR_OK;
    case E_FOLLOWER_ADD:
        if (soc_set_add(&u->followers, a) < 0)
            return TR_ENOMEM;
        if (soc_hset_add(&u->followers_h, a) < 0) {
            soc_set_del(&u->followers, a);
            return TR_ENOMEM;
        }
        return TR_OK;
    case E_FOLLOWER_DEL:
        soc_set_del(&u->followers, a);
        soc_hset_del(&u->followers_h, a);
        return TR_OK;
    default:
        return TR_EBADMSG;
    }
}

static int on_apply(void *state, uint64_t seq, const void *ev, size_t len)
{
    (void)seq;
    return apply_event(state, ev, len) == TR_OK ? 0 : -1;
}

/* Reads a set of ids into s (and their hashes into hs when not NULL). */
static int read_set(tr_reader *r, soc_set *s, soc_hset *hs)
{
    uint64_t n;
    int rc = tr_read_u64(r, &n);
    char k[SOCIAL_ID_MAX + 1];
    for (uint64_t i = 0; rc == TR_OK && i < n; i++) {
        rc = soc_read_strz(r, k, sizeof k);
        if (rc == TR_OK && (soc_set_add(s, k) < 0 || (hs != NULL && soc_hset_add(hs, k) < 0)))
            rc = TR_ENOMEM;
    }
    return rc;
}

static int on_restore(void *state, uint64_t seq, const void *snap, size_t len)
{
    (void)seq;
    user_st *u = state;
    tr_reader r;
    tr_reader_init_bytes(&r, snap, len);
    int rc = soc_read_strz(&r, u->username, sizeof u->username);
    if (rc == TR_OK)
        rc = soc_read_strz(&r, u->name, sizeof u->name);
    if (rc == TR_OK)
        rc = read_set(&r, &u->followers, &u->followers_h);
    if (rc == TR_OK)
        rc = read_set(&r, &u->following, NULL);
    tr_reader_done(&r);
    u->exists = rc == TR_OK;
    return rc == TR_OK ? 0 : -1;
}

static void put_set(tr_msg *m, const soc_set *s)
{
    tr_msg_put_u64(m, s->n);
    for (size_t i = 0; i < s->n; i++)
        soc_put_strz(m, s->v[i]);
}

/* Persists event [kind, a (, b)], applies it, and publishes (topic, payload) if topic. */
static int persist(user_st *u, uint64_t kind, const char *a, const char *b, const char *topic,
                   tr_msg *payload)
{
    tr_msg *ev = tr_msg_new(0, 64);
    int rc = ev != NULL ? TR_OK : TR_ENOMEM;
    if (rc == TR_OK)
        rc = tr_msg_put_u64(ev, kind);
    if (rc == TR_OK)
        rc = soc_put_strz(ev, a);
    if (rc == TR_OK && b != NULL)
        rc = soc_put_strz(ev, b);
    if (rc == TR_OK)
        rc = tr_journal_persist(u->j, tr_msg_data(ev), tr_msg_size(ev));
    if (rc == TR_OK)
        rc = apply_event(u, tr_msg_data(ev), tr_msg_size(ev));
    if (rc == TR_OK && topic != NULL && payload != NULL)
        rc = tr_journal_publish(u->j, topic, u->id, tr_msg_data(payload), tr_msg_size(payload));
    tr_msg_free(ev);
    if (rc == TR_OK && tr_journal_snapshot_due(u->j)) {
        tr_msg *s = tr_msg_new(0, 128 + 32 * (u->followers.n + u->following.n));
        if (s != NULL) {
            soc_put_strz(s, u->username);
            soc_put_strz(s, u->name);
            put_set(s, &u->followers);
            put_set(s, &u->following);
            rc = tr_journal_snapshot(u->j, tr_msg_data(s), tr_msg_size(s));
            tr_msg_free(s);
        }
    }
    return rc;
}

/* The user's public record: [id, username, name]. */
static tr_msg *user_event(const user_st *u)
{
    tr_msg *p = tr_msg_new(0, 64 + strlen(u->name));
    if (p != NULL) {
        soc_put_strz(p, u->id);
        soc_put_strz(p, u->username);
        soc_put_strz(p, u->name);
    }
    return p;
}

static tr_msg *follow_event(const char *follower, const char *followee)
{
    tr_msg *p = tr_msg_new(0, 64);
    if (p != NULL) {
        soc_put_strz(p, follower);
        soc_put_strz(p, followee);
    }
    return p;
}

/* ---- answers ------------------------------------------------------------------------------- */

static void answer(tr_ctx *ctx, tr_from from, tr_msg *r)
{
    if (r != NULL && from.pid != TR_PID_NONE)
        (void)tr_reply_from(ctx, from, r);
    else
        tr_msg_free(r);
}

static void answer_status(tr_ctx *ctx, tr_from from, uint32_t type, uint64_t st)
{
    answer(ctx, from, soc_reply(type, st));
}

/* [st, id, username, name, followers, following, posts] */
static tr_msg *full_reply(const user_st *u, uint32_t type, uint64_t posts)
{
    tr_msg *r = soc_reply(type, SOC_OK);
    if (r != NULL) {
        soc_put_strz(r, u->id);
        soc_put_strz(r, u->username);
        soc_put_strz(r, u->name);
        tr_msg_put_u64(r, u->followers.n);
        tr_msg_put_u64(r, u->following.n);
        tr_msg_put_u64(r, posts);
    }
    return r;
}

static int wait_for(tr_ctx *ctx, user_st *u, tr_shard *shard, const char *key, tr_msg *req,
                    int kind, uint32_t reply_type, tr_from from, const char *other)
{
    if (u->npending >= PENDING_MAX) {
        tr_msg_free(req);
        return TR_EFULL;
    }
    pend *p = calloc(1, sizeof *p);
    if (p == NULL) {
        tr_msg_free(req);
        return TR_ENOMEM;
    }
    int rc = tr_shard_request(ctx, shard, key, req, SOC_CALL_MS(u->ctx), &p->corr);
    if (rc != TR_OK) {
        free(p);
        return rc;
    }
    p->kind = kind;
    p->reply_type = reply_type;
    p->from = from;
    snprintf(p->other, sizeof p->other, "%s", other != NULL ? other : "");
    p->next = u->pending;
    u->pending = p;
    u->npending++;
    return TR_OK;
}

static pend *take_pending(user_st *u, uint64_t corr)
{
    for (pend **pp = &u->pending; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->corr == corr) {
            pend *p = *pp;
            *pp = p->next;
            u->npending--;
            return p;
        }
    return NULL;
}

/* A reply (or a timeout / no-process notice) to one of our requests. */
static void on_answer(tr_ctx *ctx, user_st *u, const tr_msg *m)
{
    pend *p = take_pending(u, tr_msg_corr(m));
    if (p == NULL)
        return;
    uint64_t st = SOC_UNAVAILABLE, v = 0;
    uint32_t t = tr_msg_type(m);
    if (t == SOC_U_FOLLOWER_ADD || t == SOC_U_FOLLOWER_DEL || t == SOC_P_COUNT) {
        tr_reader r;
        tr_reader_init(&r, m);
        if (tr_read_u64(&r, &st) != TR_OK || (st == SOC_OK && tr_read_u64(&r, &v) != TR_OK))
            st = SOC_UNAVAILABLE;
        tr_reader_done(&r);
    }
    if (st != SOC_OK) {
        answer_status(ctx, p->from, p->reply_type,
                      st == SOC_NOUSER ? SOC_NOUSER : SOC_UNAVAILABLE);
        free(p);
        return;
    }
    int rc = TR_OK;
    if (p->kind == W_FOLLOW) {
        if (!u->exists) {
            rc = TR_ESTATE;
        } else if (soc_set_has(&u->following, p->other)) {
            answer_status(ctx, p->from, p->reply_type, SOC_OK);
        } else {
            tr_msg *ev = follow_event(u->id, p->other);
            rc = ev != NULL ? persist(u, E_FOLLOWING_ADD, p->other, NULL, "follow.added", ev)
                            : TR_ENOMEM;
            tr_msg_free(ev);
            if (rc == TR_OK)
                rc = tr_journal_reply_from(u->j, p->from, soc_reply(p->reply_type, SOC_OK));
        }
    } else if (p->kind == W_UNFOLLOW) {
        if (u->exists && soc_set_has(&u->following, p->other)) {
            tr_msg *ev = follow_event(u->id, p->other);
            rc = ev != NULL ? persist(u, E_FOLLOWING_DEL, p->other, NULL, "follow.removed", ev)
                            : TR_ENOMEM;
            tr_msg_free(ev);
            if (rc == TR_OK)
                rc = tr_journal_reply_from(u->j, p->from, soc_reply(p->reply_type, SOC_OK));
        } else {
            /* nothing to undo here; still said after everything before is committed */
            rc = tr_journal_reply_from(u->j, p->from, soc_reply(p->reply_type, SOC_OK));
        }
    } else if (p->kind == W_GET) {
        rc = tr_journal_reply_from(u->j, p->from, full_reply(u, p->reply_type, v));
    }
    if (rc != TR_OK)
        answer_status(ctx, p->from, p->reply_type, SOC_UNAVAILABLE);
    free(p);
}

/* ---- commands ------------------------------------------------------------------------------ */

static int cmd_create(tr_ctx *ctx, user_st *u, const tr_msg *m, tr_from from)
{
    char username[SOCIAL_USERNAME_MAX + 1], name[SOCIAL_NAME_MAX + 1], id[SOCIAL_ID_MAX + 1];
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = soc_read_strz(&r, username, sizeof username);
    if (rc == TR_OK)
        rc = soc_read_strz(&r, name, sizeof name);
    tr_reader_done(&r);
    if (rc == TR_OK) {
        social_user_id(username, strlen(username), id);
        if (!social_username_valid(username, strlen(username)) ||
            !social_name_valid(name, strlen(name)) || strcmp(id, u->id) != 0)
            rc = TR_EINVAL;
    }
    if (rc != TR_OK) {
        answer_status(ctx, from, SOC_U_CREATE, SOC_INVALID);
        return 0;
    }
    if (u->exists) { /* the username (case-folded) is this id's: taken */
        answer_status(ctx, from, SOC_U_CREATE, SOC_TAKEN);
        return 0;
    }
    u->exists = true; /* for user_event; persist sets it too */
    snprintf(u->username, sizeof u->username, "%s", username);
    snprintf(u->name, sizeof u->name, "%s", name);
    tr_msg *ev = user_event(u);
    rc = ev != NULL ? persist(u, E_CREATED, username, name, "user.created", ev) : TR_ENOMEM;
    tr_msg_free(ev);
    if (rc != TR_OK)
        return rc; /* the actor ends; its supervisor-less shard starts it again on demand */
    tr_msg *reply = soc_reply(SOC_U_CREATE, SOC_OK);
    if (reply != NULL) {
        soc_put_strz(reply, u->id);
        soc_put_strz(reply, u->username);
        soc_put_strz(reply, u->name);
    }
    return tr_journal_reply_from(u->j, from, reply);
}

static int cmd_rename(tr_ctx *ctx, user_st *u, const tr_msg *m, tr_from from)
{
    char name[SOCIAL_NAME_MAX + 1];
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = soc_read_strz(&r, name, sizeof name);
    tr_reader_done(&r);
    if (rc != TR_OK || !social_name_valid(name, strlen(name))) {
        answer_status(ctx, from, SOC_U_RENAME, SOC_INVALID);
        return 0;
    }
    if (strcmp(name, u->name) != 0) {
        snprintf(u->name, sizeof u->name, "%s", name);
        tr_msg *ev = user_event(u);
        rc = ev != NULL ? persist(u, E_RENAMED, name, NULL, "user.updated", ev) : TR_ENOMEM;
        tr_msg_free(ev);
        if (rc != TR_OK)
            return rc;
    }
    /* the answer is the user, with its posts counted by the post actor */
    tr_msg *q = tr_msg_new(SOC_P_COUNT, 8);
    if (q == NULL ||
        wait_for(ctx, u, u->ctx->posts, u->id, q, W_GET, SOC_U_RENAME, from, NULL) != TR_OK)
        answer_status(ctx, from, SOC_U_RENAME, SOC_UNAVAILABLE);
    return 0;
}

static void cmd_follow(tr_ctx *ctx, user_st *u, const tr_msg *m, tr_from from, bool follow)
{
    uint32_t type = follow ? SOC_U_FOLLOW : SOC_U_UNFOLLOW;
    char other[SOCIAL_ID_MAX + 1];
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = soc_read_strz(&r, other, sizeof other);
    tr_reader_done(&r);
    if (rc != TR_OK || !social_id_valid(other, strlen(other)) || strcmp(other, u->id) == 0) {
        answer_status(ctx, from, type, SOC_INVALID);
        return;
    }
    if (follow && soc_set_has(&u->following, other)) {
        answer_status(ctx, from, type, SOC_OK);
        return;
    }
    unsigned max = u->ctx->max_following ? u->ctx->max_following : 5000;
    if (follow && u->following.n >= max) {
        answer_status(ctx, from, type, SOC_LIMIT);
        return;
    }
    tr_msg *q = tr_msg_new(follow ? SOC_U_FOLLOWER_ADD : SOC_U_FOLLOWER_DEL, 40);
    if (q == NULL || soc_put_strz(q, u->id) != TR_OK ||
        wait_for(ctx, u, u->ctx->users, other, q, follow ? W_FOLLOW : W_UNFOLLOW, type, from,
                 other) != TR_OK)
        answer_status(ctx, from, type, SOC_UNAVAILABLE);
}

static int cmd_follower(tr_ctx *ctx, user_st *u, const tr_msg *m, tr_from from, bool add)
{
    uint32_t type = add ? SOC_U_FOLLOWER_ADD : SOC_U_FOLLOWER_DEL;
    char who[SOCIAL_ID_MAX + 1];
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = soc_read_strz(&r, who, sizeof who);
    tr_reader_done(&r);
    if (rc != TR_OK || !social_id_valid(who, strlen(who))) {
        answer_status(ctx, from, type, SOC_INVALID);
        return 0;
    }
    bool has = soc_set_has(&u->followers, who);
    if (has != add) {
        rc = persist(u, add ? E_FOLLOWER_ADD : E_FOLLOWER_DEL, who, NULL, NULL, NULL);
        if (rc != TR_OK)
            return rc;
        /* crossing the celebrity line: the running timelines of its followers switch between
         * having its posts pushed and pulling them (the fan-out tells them) */
        size_t line = u->ctx->celebrity_followers ? u->ctx->celebrity_followers : 10000u;
        if ((add && u->followers.n == line + 1) || (!add && u->followers.n == line)) {
            tr_msg *ev = tr_msg_new(0, 48);
            rc = ev != NULL ? TR_OK : TR_ENOMEM;
            if (rc == TR_OK && (rc = soc_put_strz(ev, u->id)) == TR_OK &&
                (rc = tr_msg_put_u64(ev, add)) == TR_OK)
                rc = tr_journal_publish(u->j, "user.celebrity", u->id, tr_msg_data(ev),
                                        tr_msg_size(ev));
            tr_msg_free(ev);
            if (rc != TR_OK)
                return rc;
        }
    }
    tr_msg *reply = soc_reply(type, SOC_OK);
    if (reply != NULL)
        tr_msg_put_u64(reply, u->followers.n);
    return tr_journal_reply_from(u->j, from, reply);
}

static void cmd_followers(tr_ctx *ctx, user_st *u, const tr_msg *m, tr_from from)
{
    uint64_t start = 0, limit = SOCIAL_FOLLOWERS_PAGE;
    tr_reader r;
    tr_reader_init(&r, m);
    if (tr_read_u64(&r, &start) != TR_OK || tr_read_u64(&r, &limit) != TR_OK)
        start = 0, limit = SOCIAL_FOLLOWERS_PAGE;
    tr_reader_done(&r);
    if (limit == 0 || limit > SOCIAL_FOLLOWERS_PAGE)
        limit = SOCIAL_FOLLOWERS_PAGE;
    if (start > u->followers.n)
        start = u->followers.n;
    uint64_t end = start + limit < u->followers.n ? start + limit : u->followers.n;
    tr_msg *reply = soc_reply(SOC_U_FOLLOWERS, SOC_OK);
    if (reply != NULL) {
        tr_msg_put_u64(reply, u->followers.n);
        tr_msg_put_u64(reply, end < u->followers.n ? end : 0);
        for (uint64_t i = start; i < end; i++)
            soc_put_strz(reply, u->followers.v[i]);
    }
    answer(ctx, from, reply);
}

/* Inserts the post [id] into the running timelines here of followers [from, from + page): the
 * fan-out of a post whose author's actor runs on the fan-out's node (no follower ids travel). */
static void cmd_fanout(tr_ctx *ctx, user_st *u, const tr_msg *m, tr_from from)
{
    char id[SOCIAL_POST_ID_MAX + 1];
    uint64_t start = 0;
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = soc_read_strz(&r, id, sizeof id);
    if (rc == TR_OK)
        rc = tr_read_u64(&r, &start);
    tr_reader_done(&r);
    size_t n = u->followers_h.n;
    size_t line = u->ctx->celebrity_followers ? u->ctx->celebrity_followers : 10000u;
    uint64_t next = 0, placed = 0;
    uint64_t st = rc == TR_OK ? SOC_OK : SOC_INVALID;
    if (rc == TR_OK && n <= line) { /* a celebrity's posts are not fanned out */
        soc_post *p = soc_post_find(u->ctx, id, strlen(id));
        if (p == NULL) {
            st = SOC_UNAVAILABLE; /* not held here: the fan-out asks for the ids instead */
        } else {
            if (start > n)
                start = n;
            size_t end = start + SOCIAL_FOLLOWERS_PAGE < n ? start + SOCIAL_FOLLOWERS_PAGE : n;
            if (end > start) /* (no followers: no array at all) */
                placed = soc_tl_fanout(u->ctx, p, u->followers_h.v + start, end - start);
            next = end < n ? end : 0;
            soc_post_unref(u->ctx, p);
        }
    }
    tr_msg *reply = soc_reply(SOC_U_FANOUT, st);
    if (reply != NULL) {
        tr_msg_put_u64(reply, n);
        tr_msg_put_u64(reply, next);
        tr_msg_put_u64(reply, placed);
    }
    answer(ctx, from, reply);
}

static int user_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    user_st *u = state;
    uint32_t t = tr_msg_type(m);
    if (tr_msg_is_reply(m) || t == TR_MSG_TIMEOUT || t == TR_MSG_NOPROC) {
        on_answer(ctx, u, m);
        return 0;
    }
    tr_from from = tr_msg_from(m);
    if (t == SOC_U_CREATE)
        return cmd_create(ctx, u, m, from);
    if (!u->exists) {
        if (t >= SOC_U_CREATE && t <= SOC_U_FANOUT)
            answer_status(ctx, from, t, SOC_NOUSER);
        return 0;
    }
    switch (t) {
    case SOC_U_GET: {
        tr_msg *q = tr_msg_new(SOC_P_COUNT, 8);
        if (q == NULL ||
            wait_for(ctx, u, u->ctx->posts, u->id, q, W_GET, SOC_U_GET, from, NULL) != TR_OK)
            answer_status(ctx, from, t, SOC_UNAVAILABLE);
        return 0;
    }
    case SOC_U_RENAME:
        return cmd_rename(ctx, u, m, from);
    case SOC_U_FOLLOW:
    case SOC_U_UNFOLLOW:
        cmd_follow(ctx, u, m, from, t == SOC_U_FOLLOW);
        return 0;
    case SOC_U_FOLLOWER_ADD:
    case SOC_U_FOLLOWER_DEL:
        return cmd_follower(ctx, u, m, from, t == SOC_U_FOLLOWER_ADD);
    case SOC_U_FOLLOWERS:
        cmd_followers(ctx, u, m, from);
        return 0;
    case SOC_U_FANOUT:
        cmd_fanout(ctx, u, m, from);
        return 0;
    case SOC_U_FOLLOWING: {
        tr_msg *reply = soc_reply(t, SOC_OK);
        if (reply != NULL)
            put_set(reply, &u->following);
        answer(ctx, from, reply);
        return 0;
    }
    case SOC_U_INFO: {
        tr_msg *reply = soc_reply(t, SOC_OK);
        if (reply != NULL) {
            soc_put_strz(reply, u->username);
            soc_put_strz(reply, u->name);
            tr_msg_put_u64(reply, u->followers.n);
        }
        answer(ctx, from, reply);
        return 0;
    }
    default:
        return 0;
    }
}

static int user_init(tr_ctx *ctx, void *state, const void *arg)
{
    user_st *u = state;
    const social_arg *a = arg;
    u->ctx = a->ctx;
    snprintf(u->id, sizeof u->id, "%s", a->key);
    char jid[64];
    snprintf(jid, sizeof jid, "user/%s", u->id);
    int rc = tr_journal_open(ctx, u->ctx->store, jid, on_restore, on_apply, u, &u->j);
    if (rc != TR_OK) { /* a recovery refused part way (terminate will not run): what it read */
        soc_set_free(&u->followers);
        soc_set_free(&u->following);
        soc_hset_free(&u->followers_h);
    }
    return rc;
}

static void user_turn_end(tr_ctx *ctx, void *state)
{
    user_st *u = state;
    tr_journal_flush(u->j);
    if (!u->exists && u->npending == 0)
        tr_stop(ctx); /* no such user: answered, nothing to keep (a made-up id leaves no actor) */
}

static void user_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)reason;
    user_st *u = state;
    tr_journal_close(u->j);
    while (u->pending != NULL) {
        pend *p = u->pending;
        u->pending = p->next;
        answer_status(ctx, p->from, p->reply_type, SOC_UNAVAILABLE);
        free(p);
    }
    soc_set_free(&u->followers);
    soc_set_free(&u->following);
    soc_hset_free(&u->followers_h);
}

const tr_behaviour social_user_behaviour = {
    .name = "social-user",
    .state_size = sizeof(user_st),
    .init = user_init,
    .receive = user_receive,
    .turn_end = user_turn_end,
    .terminate = user_terminate,
};
