/*
 * post.c — the post actor (actors/social.h): one persistent actor per author, the single writer
 * of the author's posts. Journal "posts/AUTHOR", one event per post: [ts, url]. A post's id is
 * "AUTHOR.TS"; ts is the commit's server time in microseconds, made strictly increasing per
 * author (a post in the same microsecond as the last, or after the clock stepped back, gets the
 * last ts + 1), so (ts) orders an author's posts and (ts, id) orders anyone's.
 *
 * Before its first post the actor asks the author's user actor whether the user exists (once per
 * start; creates arriving meanwhile wait, at most PENDING_MAX). A post is answered after its
 * commit, which also holds its post.created event [id, user, url, ts].
 *
 * The posts are held in memory, oldest first, while the actor runs (the shard passivates idle
 * authors); an author's posts list is answered from there.
 */
#include "social_impl.h"

#include <stdio.h>
#include <string.h>

#define PENDING_MAX 1000u

typedef struct post {
    uint64_t ts;
    char *url;
} post;

typedef struct waiter {
    struct waiter *next;
    tr_from from;
    uint32_t type;              /* SOC_P_CREATE (url) or SOC_P_LIST (before, limit) */
    char *url;
    uint64_t before, limit;
} waiter;

typedef struct post_st {
    social_ctx *ctx;
    char author[SOCIAL_ID_MAX + 1];
    tr_journal *j;
    post *v;
    size_t n, cap;
    int user;                   /* 0 unknown, 1 exists, -1 does not */
    uint64_t check_corr;        /* the existence check under way (0: none) */
    waiter *wait_head, *wait_tail;
    size_t nwait;
} post_st;

static int add_post(post_st *p, uint64_t ts, const char *url, size_t ul)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        post *v = realloc(p->v, cap * sizeof *v);
        if (v == NULL)
            return TR_ENOMEM;
        p->v = v;
        p->cap = cap;
    }
    char *u = malloc(ul + 1);
    if (u == NULL)
        return TR_ENOMEM;
    memcpy(u, url, ul);
    u[ul] = '\0';
    p->v[p->n++] = (post){.ts = ts, .url = u};
    return TR_OK;
}

static int on_apply(void *state, uint64_t seq, const void *ev, size_t len)
{
    (void)seq;
    post_st *p = state;
    tr_reader r;
    uint64_t ts;
    const char *url;
    size_t ul;
    tr_reader_init_bytes(&r, ev, len);
    int rc = tr_read_u64(&r, &ts);
    if (rc == TR_OK)
        rc = tr_read_str(&r, &url, &ul);
    if (rc == TR_OK)
        rc = add_post(p, ts, url, ul);
    tr_reader_done(&r);
    if (rc == TR_OK)
        p->user = 1; /* it posted: it exists (users are never deleted) */
    return rc == TR_OK ? 0 : -1;
}

static void answer_status(tr_ctx *ctx, tr_from from, uint32_t type, uint64_t st)
{
    tr_msg *r = soc_reply(type, st);
    if (r != NULL && from.pid != TR_PID_NONE)
        (void)tr_reply_from(ctx, from, r);
    else
        tr_msg_free(r);
}

static int create(tr_ctx *ctx, post_st *p, tr_from from, const char *url)
{
    (void)ctx;
    uint64_t ts = social_now_us();
    if (p->n > 0 && ts <= p->v[p->n - 1].ts)
        ts = p->v[p->n - 1].ts + 1;
    size_t ul = strlen(url);
    tr_msg *ev = tr_msg_new(0, ul + 16);
    tr_msg *pub = tr_msg_new(0, ul + 96);
    char id[SOCIAL_POST_ID_MAX + 1];
    snprintf(id, sizeof id, "%s.%llu", p->author, (unsigned long long)ts);
    int rc = ev != NULL && pub != NULL ? TR_OK : TR_ENOMEM;
    if (rc == TR_OK) {
        tr_msg_put_u64(ev, ts);
        tr_msg_put_str(ev, url, ul);
        soc_put_strz(pub, id);
        soc_put_strz(pub, p->author);
        tr_msg_put_str(pub, url, ul);
        rc = tr_msg_put_u64(pub, ts);
    }
    if (rc == TR_OK)
        rc = tr_journal_persist(p->j, tr_msg_data(ev), tr_msg_size(ev));
    if (rc == TR_OK)
        rc = tr_journal_publish(p->j, "post.created", p->author, tr_msg_data(pub),
                                tr_msg_size(pub));
    if (rc == TR_OK)
        rc = add_post(p, ts, url, ul);
    tr_msg_free(ev);
    tr_msg_free(pub);
    if (rc != TR_OK)
        return rc;
    tr_msg *reply = soc_reply(SOC_P_CREATE, SOC_OK);
    if (reply != NULL) {
        soc_put_strz(reply, id);
        tr_msg_put_u64(reply, ts);
    }
    return tr_journal_reply_from(p->j, from, reply);
}

static void list(tr_ctx *ctx, post_st *p, tr_from from, uint64_t before, uint64_t limit);

/* The existence check answered (or failed): the waiting creates go on, or are refused. */
static int checked(tr_ctx *ctx, post_st *p, const tr_msg *m)
{
    uint64_t st = SOC_UNAVAILABLE;
    if (tr_msg_type(m) == SOC_U_INFO && tr_msg_get_u64(m, &st) != TR_OK)
        st = SOC_UNAVAILABLE;
    p->check_corr = 0;
    if (st == SOC_OK)
        p->user = 1;
    else if (st == SOC_NOUSER)
        p->user = -1;
    int rc = TR_OK;
    while (p->wait_head != NULL) {
        waiter *w = p->wait_head;
        p->wait_head = w->next;
        p->nwait--;
        if (rc == TR_OK && p->user == 1 && w->type == SOC_P_LIST)
            list(ctx, p, w->from, w->before, w->limit);
        else if (rc == TR_OK && p->user == 1)
            rc = create(ctx, p, w->from, w->url);
        else
            answer_status(ctx, w->from, w->type, p->user == -1 ? SOC_NOUSER : SOC_UNAVAILABLE);
        free(w->url);
        free(w);
    }
    p->wait_tail = NULL;
    if (p->user == -1)
        p->user = 0; /* ask again next time: the user may be created meanwhile */
    return rc;
}

static void list(tr_ctx *ctx, post_st *p, tr_from from, uint64_t before, uint64_t limit)
{
    if (limit == 0 || limit > SOCIAL_PAGE_MAX)
        limit = SOCIAL_PAGE_MAX;
    /* newest first, below the cursor (an author's ts are unique: ts alone places it) */
    size_t hi = p->n; /* posts [0, hi) are older than the cursor */
    if (before != 0) {
        size_t lo = 0;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (p->v[mid].ts < before)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    size_t k = hi < limit ? hi : (size_t)limit;
    size_t bytes = 64;
    for (size_t i = 0; i < k; i++)
        bytes += strlen(p->v[hi - 1 - i].url) + 96;
    tr_msg *reply = tr_msg_new(SOC_P_LIST, bytes);
    if (reply == NULL)
        return;
    tr_msg_put_u64(reply, SOC_OK);
    tr_msg_put_u64(reply, k);
    char id[SOCIAL_POST_ID_MAX + 1];
    size_t al = strlen(p->author);
    memcpy(id, p->author, al); /* "AUTHOR." once, the ts's digits per post */
    id[al] = '.';
    for (size_t i = 0; i < k; i++) {
        const post *q = &p->v[hi - 1 - i];
        char d[24];
        size_t nd = sizeof d;
        uint64_t ts = q->ts;
        do
            d[--nd] = (char)('0' + ts % 10);
        while ((ts /= 10) != 0);
        memcpy(id + al + 1, d + nd, sizeof d - nd);
        tr_msg_put_str(reply, id, al + 1 + sizeof d - nd);
        soc_put_strz(reply, q->url);
        tr_msg_put_u64(reply, q->ts);
    }
    tr_msg_put_u64(reply, hi > k);
    (void)tr_reply_from(ctx, from, reply);
}

/* Holds request w (copied; its url taken) until the author's existence is known, asking for it
 * if nobody has yet. */
static int wait_user(tr_ctx *ctx, post_st *p, const waiter *w0)
{
    waiter *w = p->nwait < PENDING_MAX ? malloc(sizeof *w) : NULL;
    if (w == NULL) {
        free(w0->url);
        answer_status(ctx, w0->from, w0->type, SOC_UNAVAILABLE);
        return 0;
    }
    *w = *w0;
    w->next = NULL;
    if (p->wait_tail != NULL)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->nwait++;
    if (p->check_corr == 0) {
        tr_msg *q = tr_msg_new(SOC_U_INFO, 8);
        if (q == NULL || tr_shard_request(ctx, p->ctx->users, p->author, q, SOC_CALL_MS(p->ctx),
                                          &p->check_corr) != TR_OK) {
            p->check_corr = 0;
            tr_msg *fail = tr_msg_new(TR_MSG_TIMEOUT, 0);
            int rc = fail != NULL ? checked(ctx, p, fail) : TR_ENOMEM;
            tr_msg_free(fail);
            return rc;
        }
    }
    return 0;
}

static int post_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    post_st *p = state;
    uint32_t t = tr_msg_type(m);
    if (tr_msg_is_reply(m) || t == TR_MSG_TIMEOUT || t == TR_MSG_NOPROC) {
        if (p->check_corr != 0 && tr_msg_corr(m) == p->check_corr)
            return checked(ctx, p, m);
        return 0;
    }
    tr_from from = tr_msg_from(m);
    switch (t) {
    case SOC_P_CREATE: {
        const char *url;
        size_t ul;
        tr_reader r;
        tr_reader_init(&r, m);
        int rc = tr_read_str(&r, &url, &ul);
        bool ok = rc == TR_OK && social_url_valid(url, ul);
        char *copy = ok ? malloc(ul + 1) : NULL;
        if (copy != NULL) {
            memcpy(copy, url, ul);
            copy[ul] = '\0';
        }
        tr_reader_done(&r);
        if (!ok) {
            answer_status(ctx, from, t, SOC_INVALID);
            return 0;
        }
        if (copy == NULL) {
            answer_status(ctx, from, t, SOC_UNAVAILABLE);
            return 0;
        }
        if (p->user == 1) {
            rc = create(ctx, p, from, copy);
            free(copy);
            return rc;
        }
        return wait_user(ctx, p, &(waiter){.from = from, .type = t, .url = copy});
    }
    case SOC_P_LIST: {
        uint64_t before = 0, limit = 20;
        const char *bid;
        size_t bl;
        tr_reader r;
        tr_reader_init(&r, m);
        if (tr_read_u64(&r, &before) != TR_OK || tr_read_str(&r, &bid, &bl) != TR_OK ||
            tr_read_u64(&r, &limit) != TR_OK)
            before = 0, limit = 20;
        tr_reader_done(&r);
        if (p->user == 1 || p->n > 0) {
            list(ctx, p, from, before, limit);
            return 0;
        }
        /* no posts: an author without posts, or no such user (404) */
        return wait_user(ctx, p, &(waiter){.from = from, .type = t, .before = before,
                                           .limit = limit});
    }
    case SOC_P_COUNT: {
        tr_msg *reply = soc_reply(t, SOC_OK);
        if (reply != NULL) {
            tr_msg_put_u64(reply, p->n);
            (void)tr_reply_from(ctx, from, reply);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int post_init(tr_ctx *ctx, void *state, const void *arg)
{
    post_st *p = state;
    const social_arg *a = arg;
    p->ctx = a->ctx;
    snprintf(p->author, sizeof p->author, "%s", a->key);
    char jid[64];
    snprintf(jid, sizeof jid, "posts/%s", p->author);
    int rc = tr_journal_open(ctx, p->ctx->store, jid, NULL, on_apply, p, &p->j);
    if (rc != TR_OK) { /* a recovery refused part way (terminate will not run): what it read */
        for (size_t i = 0; i < p->n; i++)
            free(p->v[i].url);
        free(p->v);
    }
    return rc;
}

static void post_turn_end(tr_ctx *ctx, void *state)
{
    post_st *p = state;
    tr_journal_flush(p->j);
    if (p->n == 0 && p->user != 1 && p->nwait == 0 && p->check_corr == 0)
        tr_stop(ctx); /* nothing posted and no user known: nothing to keep */
}

static void post_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)reason;
    post_st *p = state;
    tr_journal_close(p->j);
    while (p->wait_head != NULL) {
        waiter *w = p->wait_head;
        p->wait_head = w->next;
        answer_status(ctx, w->from, w->type, SOC_UNAVAILABLE);
        free(w->url);
        free(w);
    }
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i].url);
    free(p->v);
}

const tr_behaviour social_post_behaviour = {
    .name = "social-post",
    .state_size = sizeof(post_st),
    .init = post_init,
    .receive = post_receive,
    .turn_end = post_turn_end,
    .terminate = post_terminate,
};
