/*
 * timeline.c — timelines (actors/social.h): the timeline actor of one reader, and the fan-out
 * consumer of one node that feeds the running ones.
 *
 * A timeline holds the newest `timeline_cap` posts of the users its reader follows, newest
 * first, as 16-byte entries (ts, pointer to a shared soc_post). At start it rebuilds: it asks
 * the reader's user actor whom the reader follows, then each followee's user actor for its
 * follower count (above celebrity_followers: a celebrity, pulled at read time) and each
 * non-celebrity followee's post actor for its newest follow_merge posts. Pages asked for meanwhile
 * wait (bounded). A question that fails (a timeout, an owner unavailable: a node dying, frozen or
 * cut off) does not hold the pages up — they are served with what came (availability first) — but
 * it is asked again in the background, after a backoff doubling from RETRY_MS to RETRY_MAX_MS,
 * until it is answered: otherwise the timeline would lack that followee (or all of them) until it
 * next restarts (found by scripts/chaos). A page merges the entries with the newest posts of
 * each celebrity followee,
 * asked for at read time (the hybrid: no fan-out of a post to a million followers).
 *
 * The fan-out consumer takes post.created, follow.added, follow.removed and user.celebrity from
 * the bus (durable subscription "social.fanout.NODE", so a node that was down catches up; in a
 * cluster sharing one log, each node's consumer sees every node's events and serves its own
 * timelines). For a post it asks the
 * author's user actor for its followers, a page at a time, and sends the running timelines of
 * this node an insert holding a reference to one soc_post; a timeline that is not running
 * rebuilds when it next starts, so it is not started for the post. Insertions drop posts of
 * authors the reader does not follow (a stale follower list) and duplicates (at-least-once
 * delivery). It acknowledges the bus up to the oldest event not yet fanned out, at each turn's
 * end. It never gives a post up while the author's user actor exists: a followers request that
 * times out (a node frozen, partitioned or dying) is asked again at once up to FANOUT_TRIES
 * times, then after a backoff doubling up to FANOUT_BACKOFF_MAX_MS, for as long as it takes;
 * meanwhile the events behind it wait (the window is bounded, the ack holds) and the lag says so.
 * Giving up would leave the post out of its followers' running timelines for good (found by
 * scripts/chaos: 30% packet loss for 6 s lost posts from timelines).
 *
 * Repairs (anti-entropy after membership changes). While two nodes could not see each other, a
 * key may have had two actors — the one that stayed and the one a peer started — and reads of
 * the stale one (an author's followers, a reader's followees, an author's posts) fed fan-outs and
 * rebuilds that then lack a post or a followee; the shards stop the stale actors when the peers
 * see each other again (shard.c, "Rejoins"), but what was read from them meanwhile stays wrong in
 * the read model. So the consumer watches the membership: a peer down, or back after being down,
 * makes it publish a "social.repair" event (REPAIR_DEBOUNCE_MS after the first change of a burst)
 * carrying the id to replay after — the event committed REPAIR_MARGIN_US before the peer was
 * first seen down, from (commit time, id) samples of the log. Every node's consumer receives it
 * (one shared log), waits until the burst of repairs is over (REWIND_DELAY_MS after the last, by
 * when the rejoin sweeps are done) and starts a rewind: an actor with a subscription of its own
 * from that id, which publishes a marker event and fans out again every post up to the marker
 * (insertions are idempotent: duplicates dropped), and has the timeline of each follower named in
 * a follow.added ask again whom its reader follows (SOC_T_REFRESH; follows are not replayed as
 * such: a later unfollow may be applied already). One rewind runs at a time; repairs received
 * meanwhile make the next one, from the oldest id asked. Found by scripts/chaos (social seed 11:
 * a post missing from timelines after packet loss healed).
 */
#include "social_impl.h"

#include <stdio.h>
#include <string.h>

#define WAIT_MAX 1000u          /* pages waiting for a rebuild, per timeline */
#define RETRY_MS 250u           /* a failed rebuild question asked again after this, doubling */
#define LINGER_MS 1000u         /* a timeline of no such reader ends this long after its last page */
#define RETRY_MAX_MS 5000u      /* up to this */
#define RETRY_MAX 20000u        /* questions waiting to be asked again, at most */
#define FANOUT_WINDOW 1024u     /* events in flight in the fan-out consumer (the bus delivers a
                                 * window after each round of the writer's commits: 256 fell
                                 * 257,000-415,000 events behind a build of ~35,000 follows/s) */
#define FANOUT_TRIES 3u         /* a followers page asked again at once this often, then: */
#define FANOUT_BACKOFF_MS 100u  /* after a backoff, doubling from this */
#define FANOUT_BACKOFF_MAX_MS 5000u
#define REPAIR_DEBOUNCE_MS 1000u  /* membership changes gathered this long, then one repair */
#define REPAIR_MARGIN_US 5000000u /* a repair replays from this long before the first change */
#define REWIND_DELAY_MS 5000u     /* a rewind starts this long after the last repair received
                                   * (the shards' rejoin sweeps, at 0 and 2 s, are over) */
#define REWIND_DEFER_MAX_MS 30000u /* repairs arriving all the time defer it this long at most */
#define REWIND_TICK_MS 5000u
#define REWIND_QUIET_MS 60000u    /* a rewind whose end never comes gives up after this silence */
#define SAMPLES 4096u             /* (commit time, event id) samples: from time to event id */
#define SAMPLE_US 100000u         /* one per 100 ms of commit time at most (>= 6 min kept) */
#define DOWN_MAX 64u              /* peers seen down, remembered until they come back */

/* (ts, id) descending: negative when a comes first. */
static int newer_first(uint64_t ats, const char *aid, uint64_t bts, const char *bid)
{
    if (ats != bts)
        return ats > bts ? -1 : 1;
    return -strcmp(aid, bid);
}

/* ---- the timeline actor -------------------------------------------------------------------- */

enum { Q_FOLLOWING = 1, Q_INFO, Q_MERGE, Q_CELEB };

/* Posts gathered (a reference held on each). */
typedef struct post_vec {
    soc_post **v;
    size_t n, cap;
} post_vec;

typedef struct page_req {
    struct page_req *next;
    tr_from from;
    uint64_t before_ts;
    char before_id[SOCIAL_POST_ID_MAX + 1];
    uint64_t limit;
    unsigned waiting;           /* celebrity lists still to come */
    bool more;
    post_vec extra;             /* celebrity posts gathered */
} page_req;

typedef struct tl_q {
    struct tl_q *next;
    uint64_t corr;
    int kind;
    bool repair;                /* asked again in the background: pages do not wait for it */
    bool refresh;               /* the question of a SOC_T_REFRESH */
    char who[SOCIAL_ID_MAX + 1];
    page_req *page;
} tl_q;

typedef struct tl_st {
    social_ctx *ctx;
    char reader[SOCIAL_ID_MAX + 1];
    soc_tl *tl;                 /* the entries and follow set, in the node's table */
    soc_set celebs;             /* followees pulled at read time (their ids, to ask) */
    unsigned building;          /* answers still expected before pages can be served */
    bool nouser;                /* the reader does not exist: pages are answered SOC_NOUSER */
    bool ready;                 /* built once */
    bool servable;              /* what the table was last told (soc_tl_servable) */
    tl_q *qs;
    page_req *waiting;          /* pages waiting for the rebuild (a stack; order kept) */
    size_t nwaiting;
    tl_q *retry;                /* failed questions to ask again (kind, who), at the timer */
    size_t nretry;
    unsigned retry_ms;          /* the next backoff */
    bool retry_armed;           /* a SOC_T_RETRY is on its way */
    bool refreshing;            /* a SOC_T_REFRESH's question is out */
    bool linger_armed;          /* a SOC_T_LINGER is on its way */
    uint64_t pages;             /* pages asked of it, ever (the linger's check) */
    uint64_t linger_pages;      /* pages when the SOC_T_LINGER was sent */
    uint64_t born_us;           /* its start (the rebuild's time) */
} tl_st;

static unsigned celebrity(const tl_st *t)
{
    return t->ctx->celebrity_followers ? t->ctx->celebrity_followers : 10000u;
}

static int ask(tr_ctx *ctx, tl_st *t, tr_shard *shard, const char *key, tr_msg *req, int kind,
               page_req *page);

/* Keeps (kind, who) to be asked again after the backoff, arming the timer. */
static void retry_later(tr_ctx *ctx, tl_st *t, int kind, const char *who)
{
    for (tl_q *q = t->retry; q != NULL; q = q->next)
        if (q->kind == kind && strcmp(q->who, who) == 0)
            return;
    atomic_fetch_add_explicit(&t->ctx->stats.timeline_retries, 1, memory_order_relaxed);
    tl_q *q = t->nretry < RETRY_MAX ? calloc(1, sizeof *q) : NULL;
    if (q == NULL) { /* too many (or no memory): rebuilt from scratch at the next start */
        tr_log(TR_LOG_WARN, "social", "timeline of %s: cannot keep a failed question to ask "
               "again; it stops, to be rebuilt at its next read", t->reader);
        tr_stop(ctx);
        return;
    }
    q->kind = kind;
    snprintf(q->who, sizeof q->who, "%s", who);
    q->next = t->retry;
    t->retry = q;
    t->nretry++;
    if (!t->retry_armed) {
        if (t->retry_ms == 0)
            t->retry_ms = RETRY_MS;
        tr_msg *m = tr_msg_new(SOC_T_RETRY, 0);
        t->retry_armed = m != NULL && tr_send_after(ctx, tr_self(ctx), m, t->retry_ms, NULL) ==
                                          TR_OK;
        if (!t->retry_armed)
            tr_stop(ctx); /* no timer: rebuilt from scratch at the next start */
        t->retry_ms = t->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : t->retry_ms * 2;
    }
}

static int ask_kind(tr_ctx *ctx, tl_st *t, int kind, const char *who);

/* The timer: every failed question asked again, in the background. */
static void on_retry(tr_ctx *ctx, tl_st *t)
{
    t->retry_armed = false;
    tl_q *list = t->retry;
    t->retry = NULL;
    t->nretry = 0;
    while (list != NULL) {
        tl_q *q = list;
        list = q->next;
        if (ask_kind(ctx, t, q->kind, q->who) == TR_OK)
            t->qs->repair = true; /* ask() put it first */
        else
            retry_later(ctx, t, q->kind, q->who);
        free(q);
    }
}

/* Whether an answer of `type` failed for a reason that may pass: a timeout, no actor, the
 * owner unavailable, or SOC_UNAVAILABLE. */
static bool transient(const tr_msg *m, uint32_t type)
{
    if (tr_msg_type(m) != type)
        return true;
    tr_reader r;
    uint64_t st = SOC_UNAVAILABLE;
    tr_reader_init(&r, m);
    bool bad = tr_read_u64(&r, &st) != TR_OK || st == SOC_UNAVAILABLE;
    tr_reader_done(&r);
    return bad;
}

static int ask(tr_ctx *ctx, tl_st *t, tr_shard *shard, const char *key, tr_msg *req, int kind,
               page_req *page)
{
    tl_q *q = calloc(1, sizeof *q);
    if (q == NULL) {
        tr_msg_free(req);
        return TR_ENOMEM;
    }
    int rc = tr_shard_request(ctx, shard, key, req, SOC_CALL_MS(t->ctx), &q->corr);
    if (rc != TR_OK) {
        free(q);
        return rc;
    }
    q->kind = kind;
    q->page = page;
    snprintf(q->who, sizeof q->who, "%s", key);
    q->next = t->qs;
    t->qs = q;
    return TR_OK;
}

static tr_msg *list_req(uint64_t before_ts, const char *before_id, uint64_t limit)
{
    tr_msg *m = tr_msg_new(SOC_P_LIST, 96);
    if (m != NULL) {
        tr_msg_put_u64(m, before_ts);
        soc_put_strz(m, before_id);
        tr_msg_put_u64(m, limit);
    }
    return m;
}

/* Asks `who` the rebuild question `kind` (Q_FOLLOWING: whom the reader follows; Q_INFO: a
 * followee's follower count; Q_MERGE: its newest follow_merge posts). */
static int ask_kind(tr_ctx *ctx, tl_st *t, int kind, const char *who)
{
    unsigned merge = t->ctx->follow_merge ? t->ctx->follow_merge : 50u;
    tr_msg *req = kind == Q_FOLLOWING ? tr_msg_new(SOC_U_FOLLOWING, 8)
                  : kind == Q_INFO    ? tr_msg_new(SOC_U_INFO, 8)
                                      : list_req(0, "", merge);
    return ask(ctx, t, kind == Q_MERGE ? t->ctx->posts : t->ctx->users, who, req, kind, NULL);
}

/* Asks for followee's follower count and newest posts (a rebuild, or a new follow). */
static void learn_followee(tr_ctx *ctx, tl_st *t, const char *who)
{
    if (ask_kind(ctx, t, Q_INFO, who) == TR_OK)
        t->building++;
    else
        retry_later(ctx, t, Q_INFO, who);
    if (ask_kind(ctx, t, Q_MERGE, who) == TR_OK)
        t->building++;
    else
        retry_later(ctx, t, Q_MERGE, who);
}

/* Reads a SOC_P_LIST reply's posts of author `who`: each not older than floor to fn (a record,
 * a reference taken for it). */
static uint64_t read_list(tl_st *t, const tr_msg *m, const char *who, uint64_t floor,
                          void (*fn)(tl_st *, soc_post *, void *), void *arg)
{
    tr_reader r;
    uint64_t st, n, more = 0;
    tr_reader_init(&r, m);
    if (tr_msg_type(m) == SOC_P_LIST && tr_read_u64(&r, &st) == TR_OK && st == SOC_OK &&
        tr_read_u64(&r, &n) == TR_OK) {
        for (uint64_t i = 0; i < n; i++) {
            const char *id, *url;
            size_t il, ul;
            uint64_t ts;
            if (tr_read_str(&r, &id, &il) != TR_OK || tr_read_str(&r, &url, &ul) != TR_OK ||
                tr_read_u64(&r, &ts) != TR_OK)
                break;
            if (ts < floor)
                continue; /* (no record made: a look-up and a copy saved) */
            soc_post *p = soc_post_new(t->ctx, id, il, who, strlen(who), url, ul, ts);
            if (p != NULL)
                fn(t, p, arg);
        }
        if (tr_read_u64(&r, &more) != TR_OK)
            more = 0;
    }
    tr_reader_done(&r);
    return more;
}

/* Keeps p in the post_vec arg (read_list's fn); released when out of memory. */
static void collect_one(tl_st *t, soc_post *p, void *arg)
{
    post_vec *pv = arg;
    if (pv->n == pv->cap) {
        size_t nc = pv->cap ? pv->cap * 2 : 32;
        soc_post **v = realloc(pv->v, nc * sizeof *v);
        if (v == NULL) {
            soc_post_unref(t->ctx, p);
            return;
        }
        pv->v = v;
        pv->cap = nc;
    }
    pv->v[pv->n++] = p;
}

/* A followee's newest posts (a rebuild, a new follow) into the ring, in one merge: inserted one
 * at a time, each older post moved every newer entry up — a rebuild of 40 followees' 50 posts
 * into a ring of 800 moved up to ~10^6 pointers (8% of the node's CPU while a thousand
 * timelines rebuilt at once after an idle minute). Posts older than a full ring's oldest entry
 * are not even made records. */
static void merge_list(tl_st *t, const tr_msg *m, const char *who)
{
    post_vec pv = {0};
    read_list(t, m, who, soc_tl_floor(t->ctx, t->tl), collect_one, &pv);
    if (pv.n > 0)
        soc_tl_merge(t->ctx, t->tl, pv.v, pv.n); /* if followed and not pulled; else released */
    free(pv.v);
}

static int cmp_posts(const void *a, const void *b)
{
    const soc_post *x = *(soc_post *const *)a, *y = *(soc_post *const *)b;
    return newer_first(x->ts, x->id, y->ts, y->id);
}

static bool below(const soc_post *p, uint64_t bts, const char *bid)
{
    return bts == 0 || newer_first(p->ts, p->id, bts, bid) > 0;
}

/* Answers a page: the entries below the cursor merged with the celebrity posts gathered. */
static void serve(tr_ctx *ctx, tl_st *t, page_req *pr)
{
    size_t lim = pr->limit;
    size_t total = lim + 1 + pr->extra.n;
    soc_post *local[128];
    /* got: the entries taken (a reference each, dropped after the reply); all: the page */
    soc_post **got = 2 * total <= 128 ? local : malloc(2 * total * sizeof *got);
    soc_post **all = got != NULL ? got + total : NULL;
    tr_msg *reply = NULL;
    size_t take = 0;
    if (got != NULL) {
        /* the entries below the cursor (one more than asked: is there a next page?) */
        size_t avail;
        take = soc_tl_page(t->ctx, t->tl, pr->before_ts, pr->before_id, lim + 1, got, &avail);
        memcpy(all, got, take * sizeof *all);
        size_t k = take;
        for (size_t i = 0; i < pr->extra.n; i++)
            if (below(pr->extra.v[i], pr->before_ts, pr->before_id))
                all[k++] = pr->extra.v[i];
        qsort(all, k, sizeof *all, cmp_posts);
        size_t u = 0; /* duplicates (a post both fanned out and pulled) */
        for (size_t i = 0; i < k; i++)
            if (u == 0 || strcmp(all[u - 1]->id, all[i]->id) != 0)
                all[u++] = all[i];
        size_t out = u < lim ? u : lim;
        bool more = u > lim || avail > take || pr->more;
        size_t bytes = 64;
        for (size_t i = 0; i < out; i++)
            bytes += strlen(all[i]->url) + 128;
        reply = tr_msg_new(SOC_T_PAGE, bytes);
        if (reply != NULL) {
            tr_msg_put_u64(reply, SOC_OK);
            tr_msg_put_u64(reply, out);
            for (size_t i = 0; i < out; i++) {
                soc_put_strz(reply, all[i]->id);
                soc_put_strz(reply, all[i]->author);
                soc_put_strz(reply, all[i]->url);
                tr_msg_put_u64(reply, all[i]->ts);
            }
            tr_msg_put_u64(reply, more);
        }
        for (size_t i = 0; i < take; i++)
            soc_post_unref(t->ctx, got[i]);
        if (got != local)
            free(got);
    }
    if (reply == NULL)
        reply = soc_reply(SOC_T_PAGE, SOC_UNAVAILABLE);
    if (reply != NULL)
        (void)tr_reply_from(ctx, pr->from, reply);
    for (size_t i = 0; i < pr->extra.n; i++)
        soc_post_unref(t->ctx, pr->extra.v[i]);
    free(pr->extra.v);
    free(pr);
}

/* A page: merged with the celebrities' newest posts, asked for now. */
static void start_page(tr_ctx *ctx, tl_st *t, page_req *pr)
{
    if (t->nouser) {
        tr_msg *r = soc_reply(SOC_T_PAGE, SOC_NOUSER);
        if (r != NULL)
            (void)tr_reply_from(ctx, pr->from, r);
        free(pr);
        return;
    }
    for (size_t i = 0; i < t->celebs.n; i++)
        if (ask(ctx, t, t->ctx->posts, t->celebs.v[i],
                list_req(pr->before_ts, pr->before_id, pr->limit), Q_CELEB, pr) == TR_OK)
            pr->waiting++;
    if (pr->waiting == 0)
        serve(ctx, t, pr);
}

static void built(tr_ctx *ctx, tl_st *t)
{
    if (!t->ready) { /* the start's rebuild (not a merge of a new follow) */
        atomic_fetch_add_explicit(&t->ctx->stats.timelines_built, 1, memory_order_relaxed);
        uint64_t now = social_now_us();
        social_lag_add(&t->ctx->stats.timeline_rebuild, now > t->born_us ? now - t->born_us : 0);
    }
    t->ready = true;
    /* the waiting pages, oldest first (the list is a stack) */
    page_req *rev = NULL;
    while (t->waiting != NULL) {
        page_req *p = t->waiting;
        t->waiting = p->next;
        p->next = rev;
        rev = p;
    }
    t->nwaiting = 0;
    while (rev != NULL) {
        page_req *p = rev;
        rev = p->next;
        start_page(ctx, t, p);
    }
}

static void on_answer(tr_ctx *ctx, tl_st *t, const tr_msg *m)
{
    tl_q *q = NULL;
    for (tl_q **pp = &t->qs; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->corr == tr_msg_corr(m)) {
            q = *pp;
            *pp = q->next;
            break;
        }
    if (q == NULL)
        return;
    if (q->refresh)
        t->refreshing = false;
    bool was_building = t->building > 0;
    static const uint32_t want[] = {[Q_FOLLOWING] = SOC_U_FOLLOWING, [Q_INFO] = SOC_U_INFO,
                                    [Q_MERGE] = SOC_P_LIST, [Q_CELEB] = SOC_P_LIST};
    if (q->kind != Q_CELEB && transient(m, want[q->kind])) {
        retry_later(ctx, t, q->kind, q->who); /* pages do not wait for it */
        if (!q->repair)
            t->building--;
        free(q);
        if (was_building && t->building == 0)
            built(ctx, t);
        return;
    }
    if (q->repair) /* its answer counts as any other, but nobody waits for it */
        t->building++;
    t->retry_ms = RETRY_MS; /* the owners answer again */
    switch (q->kind) {
    case Q_FOLLOWING: {
        tr_reader r;
        uint64_t st = SOC_UNAVAILABLE, n;
        tr_reader_init(&r, m);
        if (tr_msg_type(m) == SOC_U_FOLLOWING && tr_read_u64(&r, &st) == TR_OK &&
            st == SOC_OK && tr_read_u64(&r, &n) == TR_OK) {
            char who[SOCIAL_ID_MAX + 1];
            for (uint64_t i = 0; i < n && soc_read_strz(&r, who, sizeof who) == TR_OK; i++)
                if (soc_tl_follow(t->ctx, t->tl, who) == 1)
                    learn_followee(ctx, t, who);
        } else if (tr_msg_type(m) == SOC_U_FOLLOWING && st == SOC_NOUSER) {
            t->nouser = true;
        }
        tr_reader_done(&r);
        t->building--;
        break;
    }
    case Q_INFO: {
        tr_reader r;
        uint64_t st, followers;
        const char *s;
        size_t sl;
        tr_reader_init(&r, m);
        if (tr_msg_type(m) == SOC_U_INFO && tr_read_u64(&r, &st) == TR_OK && st == SOC_OK &&
            tr_read_str(&r, &s, &sl) == TR_OK && tr_read_str(&r, &s, &sl) == TR_OK &&
            tr_read_u64(&r, &followers) == TR_OK && followers > celebrity(t) &&
            soc_hset_has(&t->tl->following, q->who)) {
            soc_set_add(&t->celebs, q->who);
            soc_tl_celeb(t->ctx, t->tl, q->who, true);
        }
        tr_reader_done(&r);
        t->building--;
        break;
    }
    case Q_MERGE:
        merge_list(t, m, q->who);
        t->building--;
        break;
    case Q_CELEB: {
        page_req *pr = q->page;
        if (read_list(t, m, q->who, 0, collect_one, &pr->extra))
            pr->more = true;
        if (--pr->waiting == 0)
            serve(ctx, t, pr);
        break;
    }
    default:
        break;
    }
    free(q);
    if (was_building && t->building == 0)
        built(ctx, t);
}

static void on_page(tr_ctx *ctx, tl_st *t, const tr_msg *m, tr_from from)
{
    page_req *pr = calloc(1, sizeof *pr);
    tr_reader r;
    tr_reader_init(&r, m);
    bool ok = pr != NULL && tr_read_u64(&r, &pr->before_ts) == TR_OK &&
              soc_read_strz(&r, pr->before_id, sizeof pr->before_id) == TR_OK &&
              tr_read_u64(&r, &pr->limit) == TR_OK;
    tr_reader_done(&r);
    if (!ok || (t->building > 0 && t->nwaiting >= WAIT_MAX)) {
        free(pr);
        tr_msg *reply = soc_reply(SOC_T_PAGE, ok ? SOC_UNAVAILABLE : SOC_INVALID);
        if (reply != NULL)
            (void)tr_reply_from(ctx, from, reply);
        return;
    }
    if (pr->limit == 0 || pr->limit > SOCIAL_PAGE_MAX)
        pr->limit = SOCIAL_PAGE_MAX;
    pr->from = from;
    /* no such user when last asked: it may exist by now */
    if (t->nouser && t->building == 0 && ask_kind(ctx, t, Q_FOLLOWING, t->reader) == TR_OK) {
        t->nouser = false;
        t->building = 1;
    }
    if (t->building > 0) {
        pr->next = t->waiting;
        t->waiting = pr;
        t->nwaiting++;
        return;
    }
    start_page(ctx, t, pr);
}

/* No such reader, nothing under way: nothing to keep. It ends once LINGER_MS pass without a
 * page, not at once: pages still coming (a client's pipelined requests, other clients) would reach
 * it as it ends — each sent back to its requester unread and sent again, to the key's next actor,
 * which could be ending the same way (a 503, seen by fuzz-http with made-up readers). */
static bool idle_nouser(const tl_st *t)
{
    return t->nouser && t->building == 0 && t->qs == NULL && t->waiting == NULL;
}

static int tl_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    tl_st *t = state;
    uint32_t type = tr_msg_type(m);
    if (tr_msg_is_reply(m) || type == TR_MSG_TIMEOUT || type == TR_MSG_NOPROC) {
        on_answer(ctx, t, m);
        return 0;
    }
    switch (type) {
    case SOC_T_PAGE:
        t->pages++;
        on_page(ctx, t, m, tr_msg_from(m));
        break;
    case SOC_T_LINGER:
        t->linger_armed = false;
        if (idle_nouser(t) && t->pages == t->linger_pages)
            tr_stop(ctx); /* answered, nothing to keep (a made-up id leaves no actor) */
        break;
    case SOC_T_FOLLOW:
    case SOC_T_UNFOLLOW: {
        char who[SOCIAL_ID_MAX + 1];
        tr_reader r;
        tr_reader_init(&r, m);
        int rc = soc_read_strz(&r, who, sizeof who);
        tr_reader_done(&r);
        if (rc != TR_OK)
            break;
        if (type == SOC_T_FOLLOW) {
            if (soc_tl_follow(t->ctx, t->tl, who) == 1)
                learn_followee(ctx, t, who);
        } else {
            soc_set_del(&t->celebs, who);
            soc_tl_unfollow(t->ctx, t->tl, who);
        }
        break;
    }
    case SOC_T_CELEB: {
        char who[SOCIAL_ID_MAX + 1];
        uint64_t on = 0;
        tr_reader r;
        tr_reader_init(&r, m);
        int rc = soc_read_strz(&r, who, sizeof who);
        if (rc == TR_OK)
            rc = tr_read_u64(&r, &on);
        tr_reader_done(&r);
        if (rc != TR_OK || !soc_hset_has(&t->tl->following, who))
            break;
        if (on) { /* pulled at read time from now on */
            soc_set_add(&t->celebs, who);
            soc_tl_celeb(t->ctx, t->tl, who, true);
        } else if (soc_set_del(&t->celebs, who)) { /* pushed again: its newest posts merged */
            soc_tl_celeb(t->ctx, t->tl, who, false);
            if (ask_kind(ctx, t, Q_MERGE, who) == TR_OK)
                t->building++;
        }
        break;
    }
    case SOC_T_TOUCH: /* read from the table: the message itself keeps this actor from idling */
        break;
    case SOC_T_REFRESH: /* a repair: whom the reader follows, asked again (new ones merged in) */
        if (!t->refreshing && !t->nouser) {
            if (ask_kind(ctx, t, Q_FOLLOWING, t->reader) == TR_OK) {
                t->qs->repair = true; /* ask() put it first */
                t->qs->refresh = true;
                t->refreshing = true;
            } else {
                retry_later(ctx, t, Q_FOLLOWING, t->reader);
            }
        }
        break;
    case SOC_T_RETRY:
        on_retry(ctx, t);
        break;
    case SOC_T_COUNT: {
        tr_msg *reply = soc_reply(type, SOC_OK);
        if (reply != NULL) {
            tr_msg_put_u64(reply, soc_tl_count(t->ctx, t->tl));
            (void)tr_reply_from(ctx, tr_msg_from(m), reply);
        }
        break;
    }
    default:
        break;
    }
    return 0;
}

static int tl_init(tr_ctx *ctx, void *state, const void *arg)
{
    tl_st *t = state;
    const social_arg *a = arg;
    t->ctx = a->ctx;
    snprintf(t->reader, sizeof t->reader, "%s", a->key);
    t->born_us = social_now_us();
    t->tl = soc_tl_open(t->ctx, t->reader, tr_self(ctx));
    if (t->tl == NULL)
        return TR_ENOMEM;
    int rc = ask_kind(ctx, t, Q_FOLLOWING, t->reader);
    if (rc == TR_OK) {
        t->building = 1;
    } else { /* terminate will not run */
        soc_tl_close(t->ctx, t->tl);
        t->tl = NULL;
    }
    return rc;
}

static void tl_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)reason;
    tl_st *t = state;
    soc_tl_close(t->ctx, t->tl);
    t->tl = NULL;
    soc_set_free(&t->celebs);
    while (t->waiting != NULL) {
        page_req *p = t->waiting;
        t->waiting = p->next;
        tr_msg *r = soc_reply(SOC_T_PAGE, SOC_UNAVAILABLE);
        if (r != NULL)
            (void)tr_reply_from(ctx, p->from, r);
        free(p);
    }
    while (t->retry != NULL) {
        tl_q *q = t->retry;
        t->retry = q->next;
        free(q);
    }
    /* pages gathering celebrity posts: each is referenced by its queries */
    while (t->qs != NULL) {
        tl_q *q = t->qs;
        t->qs = q->next;
        page_req *pr = q->page;
        if (pr != NULL && --pr->waiting == 0) {
            tr_msg *r = soc_reply(SOC_T_PAGE, SOC_UNAVAILABLE);
            if (r != NULL)
                (void)tr_reply_from(ctx, pr->from, r);
            for (size_t i = 0; i < pr->extra.n; i++)
                soc_post_unref(t->ctx, pr->extra.v[i]);
            free(pr->extra.v);
            free(pr);
        }
        free(q);
    }
}

static void tl_turn_end(tr_ctx *ctx, void *state)
{
    tl_st *t = state;
    if (idle_nouser(t)) { /* no such reader: answered; it ends after the linger */
        if (!t->linger_armed) {
            tr_msg *l = tr_msg_new(SOC_T_LINGER, 0);
            t->linger_pages = t->pages;
            t->linger_armed = l != NULL && tr_send_after(ctx, tr_self(ctx), l, LINGER_MS, NULL) ==
                                               TR_OK;
            if (!t->linger_armed)
                tr_stop(ctx); /* no timer: at once, as before */
        }
        return;
    }
    /* pages may be read from the table without this actor while nothing is being merged in
     * and no celebrity is pulled at read time (social_timeline_read) */
    bool servable = t->ready && t->building == 0 && !t->nouser && t->celebs.n == 0;
    if (servable != t->servable) {
        soc_tl_servable(t->ctx, t->tl, servable);
        t->servable = servable;
    }
}

const tr_behaviour social_timeline_behaviour = {
    .name = "social-timeline",
    .state_size = sizeof(tl_st),
    .init = tl_init,
    .receive = tl_receive,
    .turn_end = tl_turn_end,
    .terminate = tl_terminate,
};

/* ---- the fan-out consumer ------------------------------------------------------------------ */

typedef struct fo_job {
    uint64_t evid, ts_us;       /* (its request's correlation id: fo_st's corr, same slot) */
    bool active;                /* false: done */
    soc_post *p;                /* a post to fan out, or NULL: a celebrity change */
    char author[SOCIAL_ID_MAX + 1];
    bool celeb;                 /* the change: became one (or no longer is) */
    bool local;                 /* the author's user actor runs here: it inserts (SOC_U_FANOUT) */
    bool waiting;               /* a SOC_F_RETRY is on its way (a backoff) */
    unsigned tries;
    uint64_t from;              /* the next followers page */
} fo_job;

typedef struct fo_st {
    social_ctx *ctx;
    char sub[96];               /* "social.fanout.NODE": each node fans out to its own timelines;
                                 * a rewind: "social.rewind.NODE" */
    fo_job jobs[FANOUT_WINDOW]; /* in evid order; [head, head + n) */
    uint64_t corr[FANOUT_WINDOW]; /* the request each job waits for, or 0: apart from the jobs,
                                   * so finding a reply's job reads 8 KB, not 112 KB */
    size_t head, n;
    bool stalled;               /* a job's backoff found no timer: fo_turn_end asks it again */
    uint64_t max_seen, acked;
    uint64_t started_us;
    /* a rewind */
    bool rewind;
    bool done;                  /* its marker came: everything before it was replayed */
    char marker[96];            /* its marker event's key: "NODE/nonce" */
    uint64_t last_rx_ms;        /* when it last received an event */
    uint64_t replayed;
    /* the node's consumer: repairs after membership changes */
    struct { uint64_t ts_us, id; } samples[SAMPLES]; /* a ring, newest at sample_head - 1 */
    size_t sample_head, nsamples;
    struct { char name[65]; uint64_t down_us; } down[DOWN_MAX];
    size_t ndown;
    uint64_t burst_t0_us;       /* a repair to publish replays from this commit time; 0: none */
    bool publish_armed;
    uint64_t rewind_from;       /* a rewind to start replays after this id; UINT64_MAX: none */
    uint64_t rewind_at_ms, rewind_first_ms;
    bool rewind_armed;
    tr_pid rewinder;            /* the rewind running, or TR_PID_NONE */
    uint64_t rewinder_mon;
    uint64_t rewinder_from;     /* where it replays from (again from there if it fails) */
} fo_st;

typedef struct rw_arg {
    social_ctx *ctx;
    uint64_t from;
} rw_arg;

static const tr_behaviour social_rewind_behaviour;

static uint64_t now_ms(void)
{
    return tr_now_ns() / 1000000u;
}

static void after_ms(tr_ctx *ctx, uint32_t type, unsigned ms, bool *armed)
{
    tr_msg *m = tr_msg_new(type, 0);
    *armed = m != NULL && tr_send_after(ctx, tr_self(ctx), m, ms, NULL) == TR_OK;
}


static fo_job *job_at(fo_st *f, size_t i)
{
    return &f->jobs[(f->head + i) % FANOUT_WINDOW];
}

static void job_done(fo_st *f, fo_job *j)
{
    j->active = false;
    if (j->p != NULL) {
        soc_post_unref(f->ctx, j->p);
        j->p = NULL;
        if (!f->rewind)
            atomic_fetch_add_explicit(&f->ctx->stats.fanout_posts, 1, memory_order_relaxed);
        if (j->ts_us >= f->started_us) { /* not a catch-up of before this start */
            uint64_t now = social_now_us();
            social_lag_add(&f->ctx->stats.timeline_lag, now > j->ts_us ? now - j->ts_us : 0);
        }
    }
    f->corr[j - f->jobs] = 0;
}

static void backoff(tr_ctx *ctx, fo_st *f, fo_job *j);

static void ask_followers(tr_ctx *ctx, fo_st *f, fo_job *j)
{
    tr_msg *q;
    if (j->p != NULL && j->local) { /* the user actor inserts: no follower ids travel */
        q = tr_msg_new(SOC_U_FANOUT, 96);
        if (q != NULL) {
            soc_put_strz(q, j->p->id);
            tr_msg_put_u64(q, j->from);
        }
    } else {
        q = tr_msg_new(SOC_U_FOLLOWERS, 16);
        if (q != NULL) {
            tr_msg_put_u64(q, j->from);
            tr_msg_put_u64(q, SOCIAL_FOLLOWERS_PAGE);
        }
    }
    j->tries++;
    if (q == NULL || tr_shard_request(ctx, f->ctx->users, j->author, q, SOC_CALL_MS(f->ctx),
                                      &f->corr[j - f->jobs]) != TR_OK)
        backoff(ctx, f, j); /* no memory, no owner reachable: later */
}

/* Asks again after a while: the author's followers did not answer (or could not be asked). */
static void backoff(tr_ctx *ctx, fo_st *f, fo_job *j)
{
    unsigned over = j->tries > FANOUT_TRIES ? j->tries - FANOUT_TRIES : 0;
    unsigned ms = over >= 6 ? FANOUT_BACKOFF_MAX_MS : FANOUT_BACKOFF_MS << over;
    if (ms > FANOUT_BACKOFF_MAX_MS)
        ms = FANOUT_BACKOFF_MAX_MS;
    if (j->tries == FANOUT_TRIES + 1)
        tr_log(TR_LOG_WARN, "social", "fan-out of an event of %s waits: its followers did not "
               "answer %u times; asking again every %u ms at most", j->author, FANOUT_TRIES,
               FANOUT_BACKOFF_MAX_MS);
    f->corr[j - f->jobs] = 0;
    tr_msg *m = tr_msg_new(SOC_F_RETRY, 16);
    if (m != NULL && tr_msg_put_u64(m, j->evid) != TR_OK) {
        tr_msg_free(m);
        m = NULL;
    }
    /* tr_send_after takes m whatever it returns; without a timer the job is asked again at the
     * end of a later turn (fo_turn_end: active, not waiting, nothing asked) */
    j->waiting = m != NULL && tr_send_after(ctx, tr_self(ctx), m, ms, NULL) == TR_OK;
    if (!j->waiting)
        f->stalled = true;
}

static void fo_retry(tr_ctx *ctx, fo_st *f, const tr_msg *m)
{
    tr_reader r;
    uint64_t evid;
    tr_reader_init(&r, m);
    bool ok = tr_read_u64(&r, &evid) == TR_OK;
    tr_reader_done(&r);
    for (size_t i = 0; ok && i < f->n; i++) {
        fo_job *j = job_at(f, i);
        if (j->evid == evid && j->active && j->waiting) {
            j->waiting = false;
            ask_followers(ctx, f, j);
            return;
        }
    }
}

static bool topic_is(const tr_bus_event *ev, const char *topic)
{
    size_t n = strlen(topic);
    return ev->topic_len == n && memcmp(ev->topic, topic, n) == 0;
}

/* Keeps (commit time, id) now and then: a repair turns a time into the id to replay after. */
static void sample(fo_st *f, uint64_t ts_us, uint64_t id)
{
    if (f->nsamples > 0) {
        uint64_t last = f->samples[(f->sample_head + SAMPLES - 1) % SAMPLES].ts_us;
        if (ts_us < last + SAMPLE_US)
            return;
    }
    f->samples[f->sample_head].ts_us = ts_us;
    f->samples[f->sample_head].id = id;
    f->sample_head = (f->sample_head + 1) % SAMPLES;
    if (f->nsamples < SAMPLES)
        f->nsamples++;
}

/* The id to replay after so that every event committed at or after t0 is replayed: the newest
 * sample at or before t0, else (all are later) just before the oldest one kept. */
static uint64_t id_before(const fo_st *f, uint64_t t0_us)
{
    if (f->nsamples == 0)
        return f->max_seen;
    for (size_t i = 1; i <= f->nsamples; i++) {
        size_t k = (f->sample_head + SAMPLES - i) % SAMPLES;
        if (f->samples[k].ts_us <= t0_us)
            return f->samples[k].id;
    }
    uint64_t oldest = f->samples[(f->sample_head + SAMPLES - f->nsamples) % SAMPLES].id;
    return oldest > 0 ? oldest - 1 : 0;
}

/* A repair came (from any node, this one too): a rewind from `from`, started REWIND_DELAY_MS
 * after the last repair of a burst. */
static void repair_received(tr_ctx *ctx, fo_st *f, uint64_t from)
{
    uint64_t now = now_ms();
    if (f->rewind_from == UINT64_MAX)
        f->rewind_first_ms = now;
    if (from < f->rewind_from)
        f->rewind_from = from;
    f->rewind_at_ms = now + REWIND_DELAY_MS;
    if (f->rewind_at_ms > f->rewind_first_ms + REWIND_DEFER_MAX_MS)
        f->rewind_at_ms = f->rewind_first_ms + REWIND_DEFER_MAX_MS;
    if (!f->rewind_armed && f->rewinder == TR_PID_NONE)
        after_ms(ctx, SOC_F_REWIND, REWIND_DELAY_MS, &f->rewind_armed);
}

static void fo_event(tr_ctx *ctx, fo_st *f, const tr_msg *m)
{
    tr_bus_event ev;
    if (tr_bus_read(m, &ev) != TR_OK || ev.id <= f->max_seen)
        return; /* a duplicate (redelivered) */
    if (f->n == FANOUT_WINDOW)
        return; /* cannot happen within the subscription's window; redelivered if it does */
    f->max_seen = ev.id;
    fo_job *j = job_at(f, f->n++);
    *j = (fo_job){.evid = ev.id, .ts_us = ev.ts_us};
    f->corr[j - f->jobs] = 0;
    if (f->rewind) {
        f->last_rx_ms = now_ms();
        if (f->done)
            return; /* past its end */
        f->replayed++;
    } else {
        sample(f, ev.ts_us, ev.id);
    }
    tr_reader r;
    tr_reader_init_bytes(&r, ev.data, ev.len);
    if (topic_is(&ev, "post.created")) {
        const char *id, *user, *url;
        size_t il, ul, rl;
        uint64_t ts;
        if (tr_read_str(&r, &id, &il) == TR_OK && tr_read_str(&r, &user, &ul) == TR_OK &&
            tr_read_str(&r, &url, &rl) == TR_OK && tr_read_u64(&r, &ts) == TR_OK &&
            ul <= SOCIAL_ID_MAX && il <= SOCIAL_POST_ID_MAX) {
            j->p = soc_post_new(f->ctx, id, il, user, ul, url, rl, ts);
            if (j->p != NULL) {
                j->active = true;
                snprintf(j->author, sizeof j->author, "%s", j->p->author);
                j->local = tr_shard_owns(f->ctx->users, j->author, NULL);
                ask_followers(ctx, f, j);
            }
        }
    } else if (topic_is(&ev, "user.celebrity")) {
        uint64_t on;
        if (soc_read_strz(&r, j->author, sizeof j->author) == TR_OK &&
            tr_read_u64(&r, &on) == TR_OK) {
            j->celeb = on != 0;
            j->active = true;
            ask_followers(ctx, f, j);
        }
    } else if (topic_is(&ev, "social.repair")) {
        uint64_t from;
        if (ev.len == sizeof from) {
            memcpy(&from, ev.data, sizeof from);
            repair_received(ctx, f, from);
        }
    } else if (topic_is(&ev, "social.rewind")) {
        if (ev.key_len == strlen(f->marker) && memcmp(ev.key, f->marker, ev.key_len) == 0)
            f->done = true;
    } else if (topic_is(&ev, "follow.added") || topic_is(&ev, "follow.removed")) {
        char follower[SOCIAL_ID_MAX + 1], followee[SOCIAL_ID_MAX + 1];
        bool add = topic_is(&ev, "follow.added");
        tr_pid tl;
        if (soc_read_strz(&r, follower, sizeof follower) == TR_OK &&
            soc_read_strz(&r, followee, sizeof followee) == TR_OK &&
            soc_tl_owner(f->ctx, follower, &tl)) {
            /* a rewind does not replay follows (later ones may have been applied already): it
             * has the timeline ask its user actor again whom its reader follows */
            tr_msg *n = f->rewind ? tr_msg_new(SOC_T_REFRESH, 0)
                                  : tr_msg_new(add ? SOC_T_FOLLOW : SOC_T_UNFOLLOW, 40);
            if (n != NULL && (f->rewind || soc_put_strz(n, followee) == TR_OK))
                (void)tr_send(ctx, tl, n);
            else
                tr_msg_free(n);
        }
    }
    tr_reader_done(&r);
}

/* A page of follower ids (their user actor runs on another node): the post inserted into the
 * running ones here, or the celebrity change told to them. */
static uint64_t fo_page(tr_ctx *ctx, fo_st *f, fo_job *j, tr_reader *r)
{
    uint64_t hs[256];
    size_t nh = 0;
    uint64_t placed = 0;
    char who[SOCIAL_ID_MAX + 1];
    while (soc_read_strz(r, who, sizeof who) == TR_OK) {
        if (j->p == NULL) { /* a celebrity change */
            tr_pid tl;
            if (!soc_tl_owner(f->ctx, who, &tl))
                continue;
            tr_msg *c = tr_msg_new(SOC_T_CELEB, 48);
            if (c != NULL && soc_put_strz(c, j->author) == TR_OK &&
                tr_msg_put_u64(c, j->celeb) == TR_OK)
                (void)tr_send(ctx, tl, c);
            else
                tr_msg_free(c);
            continue;
        }
        hs[nh++] = soc_id_hash(who, strlen(who));
        if (nh == sizeof hs / sizeof hs[0]) {
            placed += soc_tl_fanout(f->ctx, j->p, hs, nh);
            nh = 0;
        }
    }
    if (nh > 0)
        placed += soc_tl_fanout(f->ctx, j->p, hs, nh);
    return placed;
}

static void fo_followers(tr_ctx *ctx, fo_st *f, const tr_msg *m)
{
    fo_job *j = NULL;
    uint64_t c = tr_msg_corr(m);
    for (size_t k = 0; k < FANOUT_WINDOW && j == NULL && c != 0; k++)
        if (f->corr[k] == c && f->jobs[k].active)
            j = &f->jobs[k];
    if (j == NULL)
        return;
    f->corr[j - f->jobs] = 0;
    tr_reader r;
    uint64_t st, total, next;
    tr_reader_init(&r, m);
    uint32_t type = tr_msg_type(m);
    bool ok = (type == SOC_U_FOLLOWERS || type == SOC_U_FANOUT) &&
              tr_read_u64(&r, &st) == TR_OK &&
              (st != SOC_OK ||
               (tr_read_u64(&r, &total) == TR_OK && tr_read_u64(&r, &next) == TR_OK));
    uint64_t line = f->ctx->celebrity_followers ? f->ctx->celebrity_followers : 10000u;
    if (ok && st == SOC_OK && j->p != NULL && total > line) {
        atomic_fetch_add_explicit(&f->ctx->stats.fanout_skipped, 1, memory_order_relaxed);
        next = 0; /* a celebrity: pulled at read time */
    } else if (ok && st == SOC_OK) {
        uint64_t placed = 0;
        if (type == SOC_U_FANOUT) {
            if (tr_read_u64(&r, &placed) != TR_OK)
                placed = 0;
        } else {
            placed = fo_page(ctx, f, j, &r);
        }
        atomic_fetch_add_explicit(&f->ctx->stats.fanout_inserts, placed, memory_order_relaxed);
    } else if (ok && st == SOC_NOUSER) {
        next = 0;
    } else if (ok && type == SOC_U_FANOUT && j->local) {
        /* the user actor did not find the record (it runs elsewhere by now): ask for ids */
        tr_reader_done(&r);
        j->local = false;
        ask_followers(ctx, f, j);
        return;
    } else { /* a timeout, a node going away: again, at once and then after a backoff */
        tr_reader_done(&r);
        if (j->tries < FANOUT_TRIES)
            ask_followers(ctx, f, j);
        else
            backoff(ctx, f, j);
        return;
    }
    tr_reader_done(&r);
    if (next != 0) {
        j->from = next;
        j->tries = 0;
        ask_followers(ctx, f, j);
    } else {
        job_done(f, j);
    }
}

/* A peer went down or came back: a repair is published REPAIR_DEBOUNCE_MS later, replaying from
 * REPAIR_MARGIN_US before the peer was seen down (before the keys it owned may have had two
 * actors, one of them stale). */
static void fo_member(tr_ctx *ctx, fo_st *f, const tr_msg *m, bool up)
{
    char name[65];
    tr_reader r;
    tr_reader_init(&r, m);
    int rc = soc_read_strz(&r, name, sizeof name);
    tr_reader_done(&r);
    if (rc != TR_OK)
        return;
    uint64_t now = social_now_us(), t0 = now;
    size_t i = 0;
    while (i < f->ndown && strcmp(f->down[i].name, name) != 0)
        i++;
    if (up) {
        if (i == f->ndown)
            return; /* the first time it is up: nothing diverged */
        t0 = f->down[i].down_us;
        f->down[i] = f->down[--f->ndown];
    } else if (i == f->ndown) {
        if (f->ndown == DOWN_MAX) /* full: the oldest goes (its repair was published) */
            memmove(&f->down[0], &f->down[1], --f->ndown * sizeof f->down[0]);
        snprintf(f->down[f->ndown].name, sizeof f->down[0].name, "%s", name);
        f->down[f->ndown++].down_us = now;
    }
    t0 = t0 > REPAIR_MARGIN_US ? t0 - REPAIR_MARGIN_US : 0;
    if (f->burst_t0_us == 0 || t0 < f->burst_t0_us)
        f->burst_t0_us = t0;
    if (!f->publish_armed)
        after_ms(ctx, SOC_F_PUBLISH, REPAIR_DEBOUNCE_MS, &f->publish_armed);
}

/* Publishes the repair on the shared log: every node's consumer (this one too) rewinds. */
static void fo_publish(tr_ctx *ctx, fo_st *f)
{
    f->publish_armed = false;
    if (f->burst_t0_us == 0)
        return;
    uint64_t from = id_before(f, f->burst_t0_us);
    if (tr_bus_publish(f->ctx->store, "social.repair", f->ctx->node_name, &from, sizeof from) !=
        TR_OK) {
        after_ms(ctx, SOC_F_PUBLISH, REPAIR_DEBOUNCE_MS, &f->publish_armed); /* again, later */
        return;
    }
    atomic_fetch_add_explicit(&f->ctx->stats.repairs, 1, memory_order_relaxed);
    tr_log(TR_LOG_INFO, "social", "membership changed: timelines repaired from event %llu on "
           "(a rewind of the fan-out on every node)", (unsigned long long)from);
    f->burst_t0_us = 0;
}

/* The timer of a rewind: started when the burst of repairs is over and none runs. */
static void fo_rewind(tr_ctx *ctx, fo_st *f)
{
    f->rewind_armed = false;
    if (f->rewind_from == UINT64_MAX || f->rewinder != TR_PID_NONE)
        return; /* nothing to do, or when the one running ends */
    uint64_t now = now_ms();
    if (now < f->rewind_at_ms) {
        after_ms(ctx, SOC_F_REWIND, (unsigned)(f->rewind_at_ms - now), &f->rewind_armed);
        return;
    }
    rw_arg a = {.ctx = f->ctx, .from = f->rewind_from};
    tr_pid pid;
    if (tr_spawn(ctx, &social_rewind_behaviour, &a, &pid) != TR_OK ||
        tr_monitor(ctx, pid, &f->rewinder_mon) != TR_OK) {
        after_ms(ctx, SOC_F_REWIND, REWIND_DELAY_MS, &f->rewind_armed); /* the store is down? */
        return;
    }
    f->rewinder = pid;
    f->rewinder_from = f->rewind_from;
    f->rewind_from = UINT64_MAX;
}

static int fo_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    fo_st *f = state;
    uint32_t t = tr_msg_type(m);
    if (t == TR_MSG_BUS_EVENT)
        fo_event(ctx, f, m);
    else if (t == SOC_F_RETRY)
        fo_retry(ctx, f, m);
    else if (t == TR_MSG_NODEDOWN || t == TR_MSG_NODEUP)
        fo_member(ctx, f, m, t == TR_MSG_NODEUP);
    else if (t == SOC_F_PUBLISH)
        fo_publish(ctx, f);
    else if (t == SOC_F_REWIND)
        fo_rewind(ctx, f);
    else if (t == TR_MSG_DOWN && tr_msg_corr(m) == f->rewinder_mon && f->rewinder != TR_PID_NONE) {
        f->rewinder = TR_PID_NONE;
        tr_reason why;
        if (tr_msg_reason(m, &why) == TR_OK && why.kind != TR_REASON_NORMAL &&
            f->rewinder_from < f->rewind_from) { /* it did not finish: again */
            if (f->rewind_from == UINT64_MAX)
                f->rewind_first_ms = now_ms();
            f->rewind_from = f->rewinder_from;
            f->rewind_at_ms = now_ms() + REWIND_DELAY_MS;
        }
        if (f->rewind_from != UINT64_MAX && !f->rewind_armed)
            after_ms(ctx, SOC_F_REWIND, 100, &f->rewind_armed);
    } else if (t == SOC_F_TICK && f->rewind) {
        if (!f->done && now_ms() - f->last_rx_ms > REWIND_QUIET_MS) {
            tr_log(TR_LOG_WARN, "social", "%s: its end did not come in %u s; it stops, to be "
                   "started again", f->sub, REWIND_QUIET_MS / 1000u);
            tr_fail(ctx, TR_ETIMEDOUT, "rewind: no end");
            return 0;
        }
        /* the marker again: its unit may have failed (the store unreachable); the first seen
         * ends the rewind */
        if (!f->done)
            (void)tr_bus_publish(f->ctx->store, "social.rewind", f->marker, "", 0);
        bool armed;
        after_ms(ctx, SOC_F_TICK, REWIND_TICK_MS, &armed);
    } else if (tr_msg_is_reply(m) || t == TR_MSG_TIMEOUT || t == TR_MSG_NOPROC)
        fo_followers(ctx, f, m);
    return 0;
}

static void fo_turn_end(tr_ctx *ctx, void *state)
{
    fo_st *f = state;
    if (f->stalled) { /* a job whose backoff found no timer; set again if one still finds none */
        f->stalled = false;
        for (size_t i = 0; i < f->n; i++) {
            fo_job *j = job_at(f, i);
            if (j->active && !j->waiting && f->corr[j - f->jobs] == 0)
                ask_followers(ctx, f, j);
        }
    }
    uint64_t upto = f->max_seen;
    while (f->n > 0) {
        fo_job *j = job_at(f, 0);
        if (j->active) {
            upto = j->evid - 1;
            break;
        }
        f->head = (f->head + 1) % FANOUT_WINDOW;
        f->n--;
    }
    if (upto > f->acked) {
        if (tr_bus_ack(f->ctx->store, f->sub, upto) == TR_OK)
            f->acked = upto;
    }
    if (f->rewind && f->done) { /* the end: done once every replayed post is fanned out */
        bool busy = false;
        for (size_t i = 0; i < f->n && !busy; i++)
            busy = job_at(f, i)->active;
        if (!busy) {
            atomic_fetch_add_explicit(&f->ctx->stats.rewinds, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&f->ctx->stats.rewind_events, f->replayed,
                                      memory_order_relaxed);
            tr_log(TR_LOG_INFO, "social", "%s: %llu events replayed", f->sub,
                   (unsigned long long)f->replayed);
            tr_stop(ctx);
        }
    }
}

static int fo_init(tr_ctx *ctx, void *state, const void *arg)
{
    fo_st *f = state;
    f->ctx = (social_ctx *)arg;
    f->started_us = social_now_us();
    f->rewind_from = UINT64_MAX;
    f->rewinder = TR_PID_NONE;
    snprintf(f->sub, sizeof f->sub, "social.fanout.%s",
             f->ctx->node_name != NULL ? f->ctx->node_name : "local");
    static const char *const topics[] = {"post.created", "follow.added", "follow.removed",
                                         "user.celebrity", "social.repair"};
    tr_bus_sub_opts so = {.name = f->sub, .topics = topics, .ntopics = 5,
                          .consumer = tr_self(ctx), .from = TR_BUS_FROM_STORED,
                          .window = FANOUT_WINDOW};
    int rc = tr_bus_subscribe(f->ctx->store, &so);
    if (rc == TR_OK && f->ctx->node != NULL &&
        (rc = tr_node_monitor(f->ctx->node, tr_self(ctx), true)) != TR_OK)
        (void)tr_bus_unsubscribe(f->ctx->store, f->sub);
    return rc;
}

/* A rewind: the fan-out again for the posts committed after a.from up to its marker (an event
 * it publishes at its start, so "up to now"), into the running timelines of this node; a follow
 * among them has the follower's timeline ask again whom its reader follows. Ends when its marker
 * came and every post is fanned out. */
static int rw_init(tr_ctx *ctx, void *state, const void *arg)
{
    fo_st *f = state;
    const rw_arg *a = arg;
    f->ctx = a->ctx;
    f->rewind = true;
    f->max_seen = a->from;
    f->acked = a->from;
    f->started_us = UINT64_MAX; /* its lags are not the read model's */
    f->rewinder = TR_PID_NONE;
    f->rewind_from = UINT64_MAX;
    f->last_rx_ms = now_ms();
    const char *node = f->ctx->node_name != NULL ? f->ctx->node_name : "local";
    snprintf(f->sub, sizeof f->sub, "social.rewind.%s", node);
    snprintf(f->marker, sizeof f->marker, "%s/%llx", node, (unsigned long long)tr_self(ctx));
    static const char *const topics[] = {"post.created", "follow.added", "social.rewind"};
    tr_bus_sub_opts so = {.name = f->sub, .topics = topics, .ntopics = 3,
                          .consumer = tr_self(ctx), .from = a->from, .window = FANOUT_WINDOW};
    int rc = tr_bus_subscribe(f->ctx->store, &so);
    if (rc != TR_OK)
        return rc;
    rc = tr_bus_publish(f->ctx->store, "social.rewind", f->marker, "", 0);
    bool armed = false;
    if (rc == TR_OK)
        after_ms(ctx, SOC_F_TICK, REWIND_TICK_MS, &armed);
    if (rc != TR_OK || !armed) {
        (void)tr_bus_unsubscribe(f->ctx->store, f->sub);
        return rc != TR_OK ? rc : TR_ENOMEM;
    }
    tr_log(TR_LOG_INFO, "social", "%s: the fan-out replayed from event %llu", f->sub,
           (unsigned long long)a->from);
    return TR_OK;
}

static void fo_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)reason;
    fo_st *f = state;
    for (size_t i = 0; i < f->n; i++) {
        fo_job *j = job_at(f, i);
        if (j->active && j->p != NULL)
            soc_post_unref(f->ctx, j->p);
    }
    (void)tr_bus_unsubscribe(f->ctx->store, f->sub);
    if (!f->rewind && f->ctx->node != NULL)
        (void)tr_node_monitor(f->ctx->node, tr_self(ctx), false);
}

const tr_behaviour social_fanout_behaviour = {
    .name = "social-fanout",
    .state_size = sizeof(fo_st),
    .init = fo_init,
    .receive = fo_receive,
    .turn_end = fo_turn_end,
    .terminate = fo_terminate,
};

static const tr_behaviour social_rewind_behaviour = {
    .name = "social-rewind",
    .state_size = sizeof(fo_st),
    .init = rw_init,
    .receive = fo_receive,
    .turn_end = fo_turn_end,
    .terminate = fo_terminate,
};
