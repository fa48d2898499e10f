/*
 * test_wire.c — the node-to-node frame codec: round trips, and refusal of every truncated,
 * corrupted or oversized frame without handing out anything (white-box: runtime/src/dist/wire.h).
 */
#include "test_util.h"
#include "dist/wire.h"

#include <stdlib.h>
#include <string.h>

typedef struct got {
    size_t n;
    tr_pid to[16];
    tr_msg *m[16];
} got;

static void collect(void *arg, tr_pid to, tr_msg *m)
{
    got *g = arg;
    if (g->n < 16) {
        g->to[g->n] = to;
        g->m[g->n++] = m;
    } else {
        tr_msg_free(m);
    }
}

static void got_free(got *g)
{
    for (size_t i = 0; i < g->n; i++)
        tr_msg_free(g->m[i]);
    g->n = 0;
}

static void make_hello(tr_wire_hello *h)
{
    memset(h, 0, sizeof *h);
    strcpy(h->name, "node-a");
    h->node_id = 4242;
    h->incarnation = 0x1122334455667788ULL;
    for (unsigned i = 0; i < TR_WIRE_NONCE; i++)
        h->nonce[i] = (uint8_t)(i * 7 + 1);
    strcpy(h->addr, "tcp://127.0.0.1:7101");
}

static void test_hello_and_auth_round_trip(void **state)
{
    (void)state;
    tr_wire_buf b;
    tr__wire_buf_init(&b);
    tr_wire_hello h, back;
    make_hello(&h);
    tr__wire_begin(&b, TR_WIRE_HELLO);
    tr__wire_put_hello(&b, &h);
    assert_int_equal(tr__wire_status(&b), TR_OK);
    unsigned kind;
    assert_int_equal(tr__wire_kind(b.data, b.len, &kind), TR_OK);
    assert_int_equal(kind, TR_WIRE_HELLO);
    assert_int_equal(tr__wire_get_hello(b.data, b.len, &back), TR_OK);
    assert_string_equal(back.name, "node-a");
    assert_int_equal(back.node_id, 4242);
    assert_true(back.incarnation == h.incarnation);
    assert_memory_equal(back.nonce, h.nonce, TR_WIRE_NONCE);
    assert_string_equal(back.addr, "tcp://127.0.0.1:7101");
    /* a HELLO is not an AUTH nor DATA */
    uint8_t mac[TR_WIRE_MAC];
    assert_int_equal(tr__wire_get_auth(b.data, b.len, mac), TR_EBADMSG);

    uint8_t m1[TR_WIRE_MAC], m2[TR_WIRE_MAC];
    for (unsigned i = 0; i < TR_WIRE_MAC; i++)
        m1[i] = (uint8_t)(255 - i);
    tr__wire_begin(&b, TR_WIRE_AUTH);
    tr__wire_put_auth(&b, m1);
    assert_int_equal(tr__wire_get_auth(b.data, b.len, m2), TR_OK);
    assert_memory_equal(m1, m2, TR_WIRE_MAC);
    tr__wire_buf_free(&b);
}

typedef struct members {
    int n;
    char names[4][TR_WIRE_NAME_MAX + 1];
    char addrs[4][TR_WIRE_ADDR_MAX + 1];
} members;

static void collect_member(void *arg, const char *name, const char *addr)
{
    members *g = arg;
    if (g->n < 4) {
        strcpy(g->names[g->n], name);
        strcpy(g->addrs[g->n], addr);
    }
    g->n++;
}

/* Frames on a stream: length prefixes, several frames in one buffer, MEMBERS and PING. */
static void test_stream_frames_and_members(void **state)
{
    (void)state;
    tr_wire_buf b;
    tr__wire_buf_init(&b);
    size_t f1 = tr__wire_frame_begin(&b, TR_WIRE_MEMBERS);
    tr__wire_put_members(&b, 2);
    tr__wire_put_member(&b, "n1", "tcp://127.0.0.1:7101");
    tr__wire_put_member(&b, "node-two", "");
    tr__wire_frame_end(&b, f1);
    size_t f2 = tr__wire_frame_begin(&b, TR_WIRE_PING);
    tr__wire_frame_end(&b, f2);
    assert_int_equal(tr__wire_status(&b), TR_OK);
    assert_int_equal(f1, 0);
    uint32_t l1 = tr__wire_prefix(b.data);
    assert_int_equal(f2, TR_WIRE_PREFIX + l1);
    assert_int_equal(tr__wire_prefix(b.data + f2), TR_WIRE_HEADER);
    assert_int_equal(b.len, f2 + TR_WIRE_PREFIX + TR_WIRE_HEADER);
    members g = {0};
    const char *fr = b.data + TR_WIRE_PREFIX;
    assert_int_equal(tr__wire_get_members(fr, l1, collect_member, &g), TR_OK);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.names[0], "n1");
    assert_string_equal(g.addrs[0], "tcp://127.0.0.1:7101");
    assert_string_equal(g.names[1], "node-two");
    assert_string_equal(g.addrs[1], "");
    unsigned kind;
    assert_int_equal(tr__wire_kind(b.data + f2 + TR_WIRE_PREFIX, TR_WIRE_HEADER, &kind), TR_OK);
    assert_int_equal(kind, TR_WIRE_PING);
    /* every strict prefix of the MEMBERS frame is refused, without a callback */
    for (uint32_t cut = 0; cut < l1; cut++) {
        g.n = 0;
        assert_int_equal(tr__wire_get_members(fr, cut, collect_member, &g), TR_EBADMSG);
        assert_int_equal(g.n, 0);
    }
    /* a count above the limit is refused */
    tr__wire_begin(&b, TR_WIRE_MEMBERS);
    tr__wire_put_members(&b, TR_WIRE_MEMBERS_MAX + 1);
    g.n = 0;
    assert_int_equal(tr__wire_get_members(b.data, b.len, collect_member, &g), TR_EBADMSG);
    assert_int_equal(g.n, 0);
    tr__wire_buf_free(&b);
}

static void test_data_round_trip(void **state)
{
    (void)state;
    tr_wire_buf b;
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_DATA);
    for (int i = 0; i < 5; i++) {
        tr_msg *m = tt_msg_u64((uint32_t)(100 + i), (uint64_t)i * 1000);
        m->sender = 0x0002000001000003ULL + (uint64_t)i;
        m->flags = i == 3 ? TR_MF_REQUEST : 0;
        m->corr = i == 3 ? 77 : 0;
        tr__wire_put_envelope(&b, 0x0005000001000010ULL + (uint64_t)i, m);
        tr_msg_free(m);
    }
    tr_msg *empty = tr_msg_new(9, 0);
    tr__wire_put_envelope(&b, 0x0005000001000099ULL, empty);
    tr_msg_free(empty);
    assert_int_equal(tr__wire_status(&b), TR_OK);
    got g = {0};
    assert_int_equal(tr__wire_get_data(b.data, b.len, 1024, collect, &g), TR_OK);
    assert_int_equal(g.n, 6);
    for (int i = 0; i < 5; i++) {
        assert_true(g.to[i] == 0x0005000001000010ULL + (uint64_t)i);
        assert_int_equal(tr_msg_type(g.m[i]), 100 + i);
        assert_true(tr_msg_sender(g.m[i]) == 0x0002000001000003ULL + (uint64_t)i);
        assert_int_equal(tt_read_u64(g.m[i]), (uint64_t)i * 1000);
    }
    assert_int_equal(tr_msg_corr(g.m[3]), 77);
    assert_int_equal(tr_msg_size(g.m[5]), 0);
    got_free(&g);
    /* a payload above the limit refuses the whole frame */
    assert_int_equal(tr__wire_get_data(b.data, b.len, 2, collect, &g), TR_EBADMSG);
    assert_int_equal(g.n, 0);
    tr__wire_buf_free(&b);
}

/* Every strict prefix of a valid frame is refused, and nothing is handed out. */
static void test_truncated_frames_refused(void **state)
{
    (void)state;
    tr_wire_buf b;
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_DATA);
    for (int i = 0; i < 3; i++) {
        tr_msg *m = tt_msg_u64(1, UINT64_MAX - (uint64_t)i);
        tr__wire_put_envelope(&b, 0x0001000001000001ULL, m);
        tr_msg_free(m);
    }
    got g = {0};
    /* prefixes that end between envelopes are valid frames with fewer envelopes: count them */
    size_t ok = 0;
    for (size_t n = 0; n < b.len; n++) {
        int rc = tr__wire_get_data(b.data, n, 1024, collect, &g);
        if (rc == TR_OK) {
            ok++;
            assert_true(g.n >= 1 && g.n < 3);
        } else {
            assert_int_equal(rc, TR_EBADMSG);
            assert_int_equal(g.n, 0);
        }
        got_free(&g);
    }
    assert_int_equal(ok, 2);
    tr_wire_hello h, back;
    make_hello(&h);
    tr__wire_begin(&b, TR_WIRE_HELLO);
    tr__wire_put_hello(&b, &h);
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(tr__wire_get_hello(b.data, n, &back), TR_EBADMSG);
    tr__wire_buf_free(&b);
}

/* LEAVE: a header and nothing else; a body, another kind or a short header is refused. */
static void test_leave(void **state)
{
    (void)state;
    tr_wire_buf b;
    tr__wire_buf_init(&b);
    size_t f = tr__wire_frame_begin(&b, TR_WIRE_LEAVE);
    tr__wire_frame_end(&b, f);
    assert_int_equal(tr__wire_status(&b), TR_OK);
    assert_int_equal(b.len, TR_WIRE_PREFIX + TR_WIRE_HEADER);
    assert_int_equal(tr__wire_prefix(b.data), TR_WIRE_HEADER);
    unsigned kind;
    const char *fr = b.data + TR_WIRE_PREFIX;
    assert_int_equal(tr__wire_kind(fr, TR_WIRE_HEADER, &kind), TR_OK);
    assert_int_equal(kind, TR_WIRE_LEAVE);
    assert_int_equal(tr__wire_get_leave(fr, TR_WIRE_HEADER), TR_OK);
    assert_int_equal(tr__wire_get_leave(fr, TR_WIRE_HEADER - 1), TR_EBADMSG);
    assert_int_equal(tr__wire_get_leave("TRP\x02\x06\x00", 6), TR_EBADMSG); /* a body */
    assert_int_equal(tr__wire_get_leave("TRP\x02\x04", 5), TR_EBADMSG);     /* a PING */
    assert_int_equal(tr__wire_kind("TRP\x02\x07", 5, &kind), TR_OK);        /* GOSSIP */
    assert_int_equal(kind, TR_WIRE_GOSSIP);
    assert_int_equal(tr__wire_kind("TRP\x02\x08", 5, &kind), TR_EBADMSG);   /* past GOSSIP */
    tr__wire_buf_free(&b);
}

static void test_bad_headers_and_fields(void **state)
{
    (void)state;
    unsigned kind;
    assert_int_equal(tr__wire_kind("TRP\x09\x03", 5, &kind), TR_EBADMSG); /* version */
    assert_int_equal(tr__wire_kind("TRX\x01\x03", 5, &kind), TR_EBADMSG); /* magic */
    assert_int_equal(tr__wire_kind("TRP\x02\x09", 5, &kind), TR_EBADMSG); /* kind */
    assert_int_equal(tr__wire_kind("TRP\x02", 4, &kind), TR_EBADMSG);
    assert_int_equal(tr__wire_kind(NULL, 0, &kind), TR_EBADMSG);
    tr_wire_hello h;
    /* node id 0, a name with a NUL, an empty name, a nonce of the wrong size, trailing bytes */
    static const unsigned char id0[] = "TRP\x02\x01\xa1x\x00\x01\xc4\x10"
                                       "0123456789abcdef";
    assert_int_equal(tr__wire_get_hello(id0, sizeof id0 - 1, &h), TR_EBADMSG);
    static const unsigned char nul[] = "TRP\x02\x01\xa2x\x00\x05\x01\xc4\x10"
                                       "0123456789abcdef";
    assert_int_equal(tr__wire_get_hello(nul, sizeof nul - 1, &h), TR_EBADMSG);
    /* a name with a newline (it would forge a log line) or another control character */
    static const unsigned char nl[] = "TRP\x02\x01\xa3" "a\nb\x05\x01\xc4\x10"
                                      "0123456789abcdef\xa0";
    assert_int_equal(tr__wire_get_hello(nl, sizeof nl - 1, &h), TR_EBADMSG);
    static const unsigned char esc[] = "TRP\x02\x01\xa3" "a\x1b" "b\x05\x01\xc4\x10"
                                       "0123456789abcdef\xa0";
    assert_int_equal(tr__wire_get_hello(esc, sizeof esc - 1, &h), TR_EBADMSG);
    static const unsigned char ok3[] = "TRP\x02\x01\xa3" "a-b\x05\x01\xc4\x10"
                                       "0123456789abcdef\xa0";
    assert_int_equal(tr__wire_get_hello(ok3, sizeof ok3 - 1, &h), TR_OK);
    static const unsigned char empty[] = "TRP\x02\x01\xa0\x05\x01\xc4\x10"
                                         "0123456789abcdef";
    assert_int_equal(tr__wire_get_hello(empty, sizeof empty - 1, &h), TR_EBADMSG);
    static const unsigned char good[] = "TRP\x02\x01\xa1x\x05\x01\xc4\x10"
                                        "0123456789abcdef\xa0";
    assert_int_equal(tr__wire_get_hello(good, sizeof good - 1, &h), TR_OK);
    static const unsigned char shortnonce[] = "TRP\x02\x01\xa1x\x05\x01\xc4\x0f"
                                              "0123456789abcde";
    assert_int_equal(tr__wire_get_hello(shortnonce, sizeof shortnonce - 1, &h), TR_EBADMSG);
    static const unsigned char trailing[] = "TRP\x02\x01\xa1x\x05\x01\xc4\x10"
                                            "0123456789abcdef\xa0Z";
    assert_int_equal(tr__wire_get_hello(trailing, sizeof trailing - 1, &h), TR_EBADMSG);
    /* DATA: a length claiming more than the frame holds; a negative int where a uint goes;
     * an empty DATA frame; pid 0 */
    got g = {0};
    static const unsigned char huge[] = "TRP\x02\x03\x01\x02\x03\x00\x00\xc6\x7f\xff\xff\xff";
    assert_int_equal(tr__wire_get_data(huge, sizeof huge - 1, SIZE_MAX, collect, &g), TR_EBADMSG);
    static const unsigned char neg[] = "TRP\x02\x03\xff\x02\x03\x00\x00\xc4\x00";
    assert_int_equal(tr__wire_get_data(neg, sizeof neg - 1, 1024, collect, &g), TR_EBADMSG);
    assert_int_equal(tr__wire_get_data("TRP\x02\x03", 5, 1024, collect, &g), TR_EBADMSG);
    static const unsigned char pid0[] = "TRP\x02\x03\x00\x02\x03\x00\x00\xc4\x00";
    assert_int_equal(tr__wire_get_data(pid0, sizeof pid0 - 1, 1024, collect, &g), TR_EBADMSG);
    static const unsigned char one[] = "TRP\x02\x03\x01\x02\x03\x00\x00\xc4\x00";
    assert_int_equal(tr__wire_get_data(one, sizeof one - 1, 1024, collect, &g), TR_OK);
    assert_int_equal(g.n, 1);
    got_free(&g);
}

/* Random bytes and random corruptions of valid frames: refused or decoded, never a crash, never
 * a leak (ASan), never an envelope out of a refused frame. */
static void test_garbage(void **state)
{
    (void)state;
    uint64_t seed = 0x2545F4914F6CDD1DULL;
    tr_wire_buf b;
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_DATA);
    for (int i = 0; i < 4; i++) {
        tr_msg *m = tt_msg_u64((uint32_t)i, tt_xs64(&seed));
        m->sender = tt_xs64(&seed);
        tr__wire_put_envelope(&b, tt_xs64(&seed) | 1, m);
        tr_msg_free(m);
    }
    unsigned char buf[512];
    const unsigned rounds = tt_scale(200000, 20000);
    size_t decoded = 0;
    for (unsigned i = 0; i < rounds; i++) {
        size_t n;
        if (i % 2 == 0) {
            n = tt_xs64(&seed) % sizeof buf;
            for (size_t k = 0; k < n; k++)
                buf[k] = (unsigned char)tt_xs64(&seed);
            if (n >= 5 && i % 4 == 0)
                memcpy(buf, "TRP\x02\x03", 5); /* get past the header more often */
        } else {
            n = b.len < sizeof buf ? b.len : sizeof buf;
            memcpy(buf, b.data, n);
            unsigned flips = 1 + (unsigned)(tt_xs64(&seed) % 4);
            for (unsigned f = 0; f < flips; f++)
                buf[5 + tt_xs64(&seed) % (n - 5)] ^= (unsigned char)(1u << (tt_xs64(&seed) % 8));
        }
        got g = {0};
        int rc = tr__wire_get_data(buf, n, 64, collect, &g);
        if (rc != TR_OK)
            assert_int_equal(g.n, 0);
        else
            decoded++;
        got_free(&g);
        tr_wire_hello h;
        uint8_t mac[TR_WIRE_MAC];
        (void)tr__wire_get_hello(buf, n, &h);
        (void)tr__wire_get_auth(buf, n, mac);
        members gm = {0};
        (void)tr__wire_get_members(buf, n, collect_member, &gm);
    }
    print_message("%zu of %u garbage frames decoded as valid DATA\n", decoded, rounds);
    tr__wire_buf_free(&b);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hello_and_auth_round_trip),
    cmocka_unit_test(test_data_round_trip),
    cmocka_unit_test(test_stream_frames_and_members),
    cmocka_unit_test(test_truncated_frames_refused),
    cmocka_unit_test(test_leave),
    cmocka_unit_test(test_bad_headers_and_fields),
    cmocka_unit_test(test_garbage),
};

TT_MAIN_PLAIN(tests)
