/*
 * search.c — the search actor (actors/social.h): one per node, the owner of that node's search
 * read model (actors/search_index.h), kept from the bus's user.created, user.updated and
 * post.created events. The model lives in memory: at start the actor subscribes from the
 * beginning of the log and replays it (subscription "social.search.NODE"), so a node that
 * restarts rebuilds its read model from the events, and every node answers any query from its own
 * replica. Queries are answered in the actor's turn; the read model is never shared.
 */
#include "actors/search_index.h"
#include "social_impl.h"

#include <stdio.h>
#include <string.h>

typedef struct search_st {
    social_ctx *ctx;
    search_index *ix;
    char sub[96];
    uint64_t max_seen, to_ack, acked;
    uint64_t started_us;
    search_hit *hits;
} search_st;

/* Copies s[0..n) into out (cap bytes): false when it does not fit. */
static bool strz(char *out, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

static void apply(search_st *s, const tr_bus_event *ev)
{
    tr_reader r;
    tr_reader_init_bytes(&r, ev->data, ev->len);
    const char *a, *b, *c;
    size_t al, bl, cl;
    uint64_t ts;
    char id[SEARCH_ID_MAX + 1], x[SEARCH_URL_MAX + 1], y[SEARCH_URL_MAX + 1];
    if (ev->topic_len == 12 && memcmp(ev->topic, "post.created", 12) == 0) {
        if (tr_read_str(&r, &a, &al) == TR_OK && tr_read_str(&r, &b, &bl) == TR_OK &&
            tr_read_str(&r, &c, &cl) == TR_OK && tr_read_u64(&r, &ts) == TR_OK &&
            strz(x, sizeof x, a, al) && strz(id, sizeof id, b, bl) && strz(y, sizeof y, c, cl))
            (void)search_index_add_image(s->ix, id, x, y, ts);
    } else if (tr_read_str(&r, &a, &al) == TR_OK && tr_read_str(&r, &b, &bl) == TR_OK &&
               tr_read_str(&r, &c, &cl) == TR_OK && strz(id, sizeof id, a, al) &&
               strz(x, sizeof x, b, bl) && strz(y, sizeof y, c, cl)) {
        (void)search_index_put_user(s->ix, id, x, y); /* user.created / user.updated */
    }
    tr_reader_done(&r);
    atomic_fetch_add_explicit(&s->ctx->stats.search_events, 1, memory_order_relaxed);
    if (ev->ts_us >= s->started_us) { /* not the replay of what was there before */
        uint64_t now = social_now_us();
        social_lag_add(&s->ctx->stats.search_lag, now > ev->ts_us ? now - ev->ts_us : 0);
    }
}

static void query(tr_ctx *ctx, search_st *s, const tr_msg *m)
{
    tr_reader r;
    const char *q;
    size_t ql;
    uint64_t limit = 10, images = 20;
    tr_reader_init(&r, m);
    int rc = tr_read_str(&r, &q, &ql);
    if (rc == TR_OK && (tr_read_u64(&r, &limit) != TR_OK || tr_read_u64(&r, &images) != TR_OK))
        rc = TR_EBADMSG;
    if (limit == 0 || limit > 50)
        limit = 50;
    if (images > 200)
        images = 200;
    size_t n = 0;
    if (rc == TR_OK &&
        search_index_query(s->ix, q, ql, (unsigned)limit, (unsigned)images, s->hits, &n) != 0)
        rc = TR_EINVAL;
    tr_reader_done(&r);
    tr_msg *reply;
    if (rc != TR_OK) {
        reply = soc_reply(SOC_S_QUERY, SOC_INVALID);
    } else {
        size_t bytes = 64;
        for (size_t i = 0; i < n; i++) {
            bytes += 128 + strlen(s->hits[i].name);
            for (size_t k = 0; k < s->hits[i].nimages; k++)
                bytes += 96 + strlen(s->hits[i].images[k].url);
        }
        reply = tr_msg_new(SOC_S_QUERY, bytes);
        if (reply != NULL) {
            tr_msg_put_u64(reply, SOC_OK);
            tr_msg_put_u64(reply, n);
            for (size_t i = 0; i < n; i++) {
                const search_hit *h = &s->hits[i];
                soc_put_strz(reply, h->id);
                soc_put_strz(reply, h->username);
                soc_put_strz(reply, h->name);
                tr_msg_put_u64(reply, h->nimages);
                for (size_t k = 0; k < h->nimages; k++) {
                    soc_put_strz(reply, h->images[k].id);
                    soc_put_strz(reply, h->images[k].url);
                    tr_msg_put_u64(reply, h->images[k].ts);
                }
            }
        }
    }
    if (reply != NULL)
        (void)tr_reply(ctx, m, reply);
}

static int search_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    search_st *s = state;
    uint32_t t = tr_msg_type(m);
    if (t == TR_MSG_BUS_EVENT) {
        tr_bus_event ev;
        if (tr_bus_read(m, &ev) == TR_OK && ev.id > s->max_seen) {
            s->max_seen = ev.id;
            apply(s, &ev);
            s->to_ack = ev.id;
        }
    } else if (t == SOC_S_QUERY) {
        query(ctx, s, m);
    }
    return 0;
}

static void search_turn_end(tr_ctx *ctx, void *state)
{
    (void)ctx;
    search_st *s = state;
    if (s->to_ack > s->acked && tr_bus_ack(s->ctx->store, s->sub, s->to_ack) == TR_OK)
        s->acked = s->to_ack;
}

static int search_init(tr_ctx *ctx, void *state, const void *arg)
{
    search_st *s = state;
    s->ctx = (social_ctx *)arg;
    s->started_us = social_now_us();
    s->ix = search_index_new(s->ctx->search_images);
    s->hits = calloc(50, sizeof *s->hits);
    if (s->ix == NULL || s->hits == NULL) {
        search_index_free(s->ix);
        free(s->hits);
        return TR_ENOMEM;
    }
    snprintf(s->sub, sizeof s->sub, "social.search.%s",
             s->ctx->node_name != NULL ? s->ctx->node_name : "local");
    static const char *const topics[] = {"user.created", "user.updated", "post.created"};
    tr_bus_sub_opts so = {.name = s->sub, .topics = topics, .ntopics = 3,
                          .consumer = tr_self(ctx), .from = 0, .window = 1024};
    int rc = tr_bus_subscribe(s->ctx->store, &so);
    if (rc != TR_OK) {
        search_index_free(s->ix);
        free(s->hits);
    }
    return rc;
}

static void search_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    (void)reason;
    search_st *s = state;
    (void)tr_bus_unsubscribe(s->ctx->store, s->sub);
    search_index_free(s->ix);
    free(s->hits);
}

const tr_behaviour social_search_behaviour = {
    .name = "social-search",
    .state_size = sizeof(search_st),
    .init = search_init,
    .receive = search_receive,
    .turn_end = search_turn_end,
    .terminate = search_terminate,
};
