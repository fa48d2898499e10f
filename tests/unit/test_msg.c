/*
 * test_msg.c — messages and their msgpack payloads: packing and reading back, payload growth,
 * tr_msg_from_bytes / tr_msg_append, malformed and random payloads fed to the reader (codes,
 * never a crash), and tr_strerror.
 */
#include "test_util.h"

#include <malloc.h>
#include <pthread.h>

static void test_new_defaults(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new(7, 0);
    assert_non_null(m);
    assert_int_equal(tr_msg_type(m), 7);
    assert_int_equal(tr_msg_sender(m), TR_PID_NONE);
    assert_int_equal(tr_msg_corr(m), 0);
    assert_false(tr_msg_is_reply(m));
    assert_int_equal(tr_msg_size(m), 0);
    assert_non_null(tr_msg_data(m));
    tr_reader r;
    tr_reader_init(&r, m);
    assert_true(tr_reader_at_end(&r));
    const msgpack_object *o;
    assert_int_equal(tr_read_object(&r, &o), TR_EBADMSG); /* nothing to read */
    tr_reader_done(&r);
    tr_msg_free(m);
    tr_msg_free(NULL); /* ignored */

    m = tr_msg_new(1, 1000); /* a size hint above the inline buffer */
    assert_non_null(m);
    assert_int_equal(tr_msg_size(m), 0);
    tr_msg_free(m);
    assert_null(tr_msg_new(1, (size_t)1 << 31)); /* above the 1 GiB payload limit */
}

static void test_pack_read_roundtrip(void **state)
{
    (void)state;
    static const int64_t ints[] = {0, 1, -1, 127, 128, -32, -33, -128, -129, 32767, -32768,
                                   INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
    static const uint64_t uints[] = {0, 1, 255, 256, 65535, 65536, UINT32_MAX,
                                     (uint64_t)INT64_MAX + 1, UINT64_MAX};
    static const char bin[] = {0, 1, 2, '\0', (char)0xff, 'x'};
    tr_msg *m = tr_msg_new(3, 0);
    assert_non_null(m);
    msgpack_packer *pk = tr_msg_packer(m);
    assert_ptr_equal(pk, tr_msg_packer(m)); /* the same packer every time */
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        assert_int_equal(msgpack_pack_int64(pk, ints[i]), 0);
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++)
        assert_int_equal(msgpack_pack_uint64(pk, uints[i]), 0);
    assert_int_equal(msgpack_pack_str_with_body(pk, "hello", 5), 0);
    assert_int_equal(msgpack_pack_str_with_body(pk, "", 0), 0);
    assert_int_equal(msgpack_pack_bin_with_body(pk, bin, sizeof bin), 0);
    assert_int_equal(msgpack_pack_str_with_body(pk, "as-bin", 6), 0);

    tr_reader r;
    tr_reader_init(&r, m);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v = 12345;
        assert_int_equal(tr_read_i64(&r, &v), TR_OK);
        assert_int_equal(v, ints[i]);
    }
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        uint64_t v = 12345;
        assert_int_equal(tr_read_u64(&r, &v), TR_OK);
        assert_int_equal(v, uints[i]);
    }
    const char *s;
    size_t len;
    assert_int_equal(tr_read_str(&r, &s, &len), TR_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "hello", 5);
    /* strings point into the message */
    assert_true(s >= (const char *)tr_msg_data(m) &&
                s + len <= (const char *)tr_msg_data(m) + tr_msg_size(m));
    assert_int_equal(tr_read_str(&r, &s, &len), TR_OK);
    assert_int_equal(len, 0);
    const void *p;
    assert_int_equal(tr_read_bin(&r, &p, &len), TR_OK);
    assert_int_equal(len, sizeof bin);
    assert_memory_equal(p, bin, sizeof bin);
    assert_int_equal(tr_read_bin(&r, &p, &len), TR_OK); /* a str read as bin */
    assert_int_equal(len, 6);
    assert_memory_equal(p, "as-bin", 6);
    assert_true(tr_reader_at_end(&r));
    tr_reader_done(&r);
    tr_msg_free(m);
}

static void test_read_generic_object(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new(1, 0);
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 1);
    msgpack_pack_true(pk);
    msgpack_pack_nil(pk);
    msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "k", 1);
    msgpack_pack_double(pk, 2.5);
    tr_reader r;
    tr_reader_init(&r, m);
    const msgpack_object *o;
    assert_int_equal(tr_read_object(&r, &o), TR_OK);
    assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o->via.array.size, 3);
    assert_int_equal(o->via.array.ptr[1].type, MSGPACK_OBJECT_BOOLEAN);
    assert_false(tr_reader_at_end(&r));
    assert_int_equal(tr_read_object(&r, &o), TR_OK);
    assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o->via.map.size, 1);
    assert_true(o->via.map.ptr[0].val.via.f64 == 2.5);
    assert_true(tr_reader_at_end(&r));
    assert_int_equal(tr_read_object(&r, &o), TR_EBADMSG);
    tr_reader_done(&r);
    tr_msg_free(m);
}

/* Each reader refuses objects of another kind (whether the cursor then stays or moves on is not
 * specified, so each case uses a fresh reader) and leaves its outputs alone. */
static void test_wrong_type_and_past_end(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new(1, 0);
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_uint64(pk, (uint64_t)INT64_MAX + 1); /* 0: does not fit an i64 */
    msgpack_pack_int64(pk, -5);                       /* 1: not a u64 */
    msgpack_pack_int64(pk, 9);                        /* 2: not a str */
    msgpack_pack_str_with_body(pk, "x", 1);          /* 3: not an integer */
    msgpack_pack_nil(pk);                             /* 4: not a bin, str or integer */
    msgpack_pack_bin_with_body(pk, "b", 1);          /* 5: a bin is not a str */
    msgpack_pack_double(pk, 1.0);                     /* 6: a float is not an integer */

    for (int which = 0; which <= 6; which++) {
        int64_t i = 77;
        uint64_t u = 77;
        const char *s = NULL;
        const void *p = NULL;
        size_t len = 77;
        tr_reader r;
        tr_reader_init(&r, m);
        for (int skip = 0; skip < which; skip++) {
            const msgpack_object *o;
            assert_int_equal(tr_read_object(&r, &o), TR_OK);
        }
        switch (which) {
        case 0:
            assert_int_equal(tr_read_i64(&r, &i), TR_EBADMSG);
            break;
        case 1:
            assert_int_equal(tr_read_u64(&r, &u), TR_EBADMSG);
            break;
        case 2:
            assert_int_equal(tr_read_str(&r, &s, &len), TR_EBADMSG);
            assert_int_equal(tr_read_bin(&r, &p, &len), TR_EBADMSG);
            break;
        case 3:
            assert_int_equal(tr_read_i64(&r, &i), TR_EBADMSG);
            assert_int_equal(tr_read_u64(&r, &u), TR_EBADMSG);
            break;
        case 4:
            assert_int_equal(tr_read_bin(&r, &p, &len), TR_EBADMSG);
            assert_int_equal(tr_read_str(&r, &s, &len), TR_EBADMSG);
            assert_int_equal(tr_read_i64(&r, &i), TR_EBADMSG);
            break;
        case 5:
            assert_int_equal(tr_read_str(&r, &s, &len), TR_EBADMSG);
            break;
        default:
            assert_int_equal(tr_read_i64(&r, &i), TR_EBADMSG);
            assert_int_equal(tr_read_u64(&r, &u), TR_EBADMSG);
            break;
        }
        assert_int_equal(i, 77); /* outputs untouched on failure */
        assert_int_equal(u, 77);
        assert_null(s);
        assert_null(p);
        assert_int_equal(len, 77);
        tr_reader_done(&r);
    }

    /* past the end: every reader says EBADMSG, again and again */
    tr_reader r;
    tr_reader_init(&r, m);
    const msgpack_object *o;
    for (int k = 0; k < 7; k++)
        assert_int_equal(tr_read_object(&r, &o), TR_OK);
    assert_true(tr_reader_at_end(&r));
    for (int k = 0; k < 3; k++) {
        int64_t i;
        uint64_t u;
        const char *s;
        const void *p;
        size_t len;
        assert_int_equal(tr_read_i64(&r, &i), TR_EBADMSG);
        assert_int_equal(tr_read_u64(&r, &u), TR_EBADMSG);
        assert_int_equal(tr_read_str(&r, &s, &len), TR_EBADMSG);
        assert_int_equal(tr_read_bin(&r, &p, &len), TR_EBADMSG);
        assert_int_equal(tr_read_object(&r, &o), TR_EBADMSG);
        assert_true(tr_reader_at_end(&r));
    }
    tr_reader_done(&r);
    tr_msg_free(m);
}

static void test_growth_beyond_inline(void **state)
{
    (void)state;
    enum { BIG = 100 * 1024 };
    char *blob = malloc(BIG);
    assert_non_null(blob);
    for (size_t i = 0; i < BIG; i++)
        blob[i] = (char)(i * 131 + 7);

    /* packing: starts in the inline buffer, moves to the heap, keeps growing */
    tr_msg *m = tr_msg_new(2, 0);
    msgpack_packer *pk = tr_msg_packer(m);
    assert_int_equal(msgpack_pack_int64(pk, -42), 0);
    assert_int_equal(msgpack_pack_bin_with_body(pk, blob, BIG), 0);
    for (int k = 0; k < 1000; k++)
        assert_int_equal(msgpack_pack_uint64(pk, (uint64_t)k * 1000003u), 0);
    assert_true(tr_msg_size(m) > BIG);

    tr_reader r;
    tr_reader_init(&r, m);
    int64_t i;
    assert_int_equal(tr_read_i64(&r, &i), TR_OK);
    assert_int_equal(i, -42);
    const void *p;
    size_t len;
    assert_int_equal(tr_read_bin(&r, &p, &len), TR_OK);
    assert_int_equal(len, BIG);
    assert_memory_equal(p, blob, BIG);
    for (int k = 0; k < 1000; k++) {
        uint64_t u;
        assert_int_equal(tr_read_u64(&r, &u), TR_OK);
        assert_int_equal(u, (uint64_t)k * 1000003u);
    }
    assert_true(tr_reader_at_end(&r));
    tr_reader_done(&r);
    tr_msg_free(m);

    /* raw appends, one byte at a time across the inline boundary, then a big one */
    m = tr_msg_new(2, 0);
    for (size_t k = 0; k < 200; k++)
        assert_int_equal(tr_msg_append(m, &blob[k], 1), TR_OK);
    assert_int_equal(tr_msg_size(m), 200);
    assert_memory_equal(tr_msg_data(m), blob, 200);
    assert_int_equal(tr_msg_append(m, blob + 200, BIG - 200), TR_OK);
    assert_int_equal(tr_msg_size(m), BIG);
    assert_memory_equal(tr_msg_data(m), blob, BIG);
    assert_int_equal(tr_msg_append(m, NULL, 0), TR_OK);
    assert_int_equal(tr_msg_append(m, NULL, 1), TR_EINVAL);
    assert_int_equal(tr_msg_append(NULL, blob, 1), TR_EINVAL);
    assert_int_equal(tr_msg_size(m), BIG);
    tr_msg_free(m);
    free(blob);
}

static void test_from_bytes(void **state)
{
    (void)state;
    char buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)i;
    /* small (inline) and large (heap) payloads are copies of the caller's bytes */
    tr_msg *a = tr_msg_from_bytes(11, buf, 10);
    tr_msg *b = tr_msg_from_bytes(12, buf, sizeof buf);
    assert_non_null(a);
    assert_non_null(b);
    memset(buf, 0, sizeof buf);
    assert_int_equal(tr_msg_type(a), 11);
    assert_int_equal(tr_msg_size(a), 10);
    assert_int_equal(tr_msg_type(b), 12);
    assert_int_equal(tr_msg_size(b), 300);
    for (size_t i = 0; i < 300; i++)
        assert_int_equal((unsigned char)((const char *)tr_msg_data(b))[i], (unsigned char)i);
    assert_int_equal(((const char *)tr_msg_data(a))[9], 9);
    /* appending to a from_bytes message */
    assert_int_equal(tr_msg_append(a, "xyz", 3), TR_OK);
    assert_int_equal(tr_msg_size(a), 13);
    tr_msg_free(a);
    tr_msg_free(b);

    tr_msg *e = tr_msg_from_bytes(1, NULL, 0);
    assert_non_null(e);
    assert_int_equal(tr_msg_size(e), 0);
    tr_msg_free(e);
    assert_null(tr_msg_from_bytes(1, NULL, 5));

    /* a msgpack payload built elsewhere reads back through tr_reader_init */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_int64(&pk, -7);
    msgpack_pack_str_with_body(&pk, "abc", 3);
    tr_msg *m = tr_msg_from_bytes(5, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    tr_reader r;
    tr_reader_init(&r, m);
    int64_t i;
    const char *s;
    size_t len;
    assert_int_equal(tr_read_i64(&r, &i), TR_OK);
    assert_int_equal(i, -7);
    assert_int_equal(tr_read_str(&r, &s, &len), TR_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "abc", 3);
    assert_true(tr_reader_at_end(&r));
    tr_reader_done(&r);
    tr_msg_free(m);
}

/* Every strict prefix of a valid payload is malformed for the object it cuts. */
static void test_truncated(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, "0123456789abcdef0123456789abcdef0123", 36);
    size_t one = sb.size;
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_pack_bin_with_body(&pk, "zz", 2);
    for (size_t cut = 0; cut < sb.size; cut++) {
        tr_reader r;
        tr_reader_init_bytes(&r, sb.data, cut);
        const char *s;
        size_t len;
        int rc = tr_read_str(&r, &s, &len);
        if (cut < one) {
            assert_int_equal(rc, TR_EBADMSG);
        } else {
            assert_int_equal(rc, TR_OK);
            const msgpack_object *o;
            int rc2 = TR_OK;
            int objs = 0;
            while (rc2 == TR_OK && objs < 10) {
                rc2 = tr_read_object(&r, &o);
                objs++;
            }
            assert_int_equal(rc2, TR_EBADMSG); /* the cut object is never returned */
        }
        tr_reader_done(&r);
    }
    /* the typed readers on every prefix: complete objects read, the cut one is refused */
    msgpack_sbuffer tb;
    msgpack_sbuffer_init(&tb);
    msgpack_packer tpk;
    msgpack_packer_init(&tpk, &tb, msgpack_sbuffer_write);
    size_t ends[6];
    msgpack_pack_uint64(&tpk, UINT64_MAX);        /* cf + 8 */
    ends[0] = tb.size;
    msgpack_pack_int64(&tpk, INT64_MIN);          /* d3 + 8 */
    ends[1] = tb.size;
    msgpack_pack_uint64(&tpk, 300);               /* cd + 2 */
    ends[2] = tb.size;
    msgpack_pack_int64(&tpk, -200);               /* d1 + 2 */
    ends[3] = tb.size;
    msgpack_pack_str_with_body(&tpk, "0123456789012345678901234567890123456789", 40); /* d9 28 */
    ends[4] = tb.size;
    msgpack_pack_bin_with_body(&tpk, "abcdef", 6); /* c4 06 */
    ends[5] = tb.size;
    for (size_t cut = 0; cut <= tb.size; cut++) {
        tr_reader r;
        tr_reader_init_bytes(&r, tb.data, cut);
        uint64_t u;
        int64_t i;
        const char *s;
        const void *p;
        size_t len;
        int rcs[6];
        rcs[0] = tr_read_u64(&r, &u);
        rcs[1] = rcs[0] == TR_OK ? tr_read_i64(&r, &i) : TR_EBADMSG;
        rcs[2] = rcs[1] == TR_OK ? tr_read_u64(&r, &u) : TR_EBADMSG;
        rcs[3] = rcs[2] == TR_OK ? tr_read_i64(&r, &i) : TR_EBADMSG;
        rcs[4] = rcs[3] == TR_OK ? tr_read_str(&r, &s, &len) : TR_EBADMSG;
        rcs[5] = rcs[4] == TR_OK ? tr_read_bin(&r, &p, &len) : TR_EBADMSG;
        for (int k = 0; k < 6; k++)
            assert_int_equal(rcs[k], cut >= ends[k] ? TR_OK : TR_EBADMSG);
        assert_true(r.off <= cut);
        tr_reader_done(&r);
    }
    msgpack_sbuffer_destroy(&tb);

    /* reserved byte 0xc1 and a NULL buffer */
    tr_reader r;
    const msgpack_object *o;
    tr_reader_init_bytes(&r, "\xc1", 1);
    assert_int_equal(tr_read_object(&r, &o), TR_EBADMSG);
    tr_reader_done(&r);
    tr_reader_init_bytes(&r, NULL, 100);
    assert_true(tr_reader_at_end(&r));
    assert_int_equal(tr_read_object(&r, &o), TR_EBADMSG);
    tr_reader_done(&r);
    msgpack_sbuffer_destroy(&sb);
}

/* Reads everything it can from a buffer with every reader; checks codes and that strings and
 * bins point inside the buffer. Returns the number of objects read. */
static int read_all(const char *buf, size_t len, uint64_t pick)
{
    tr_reader r;
    tr_reader_init_bytes(&r, buf, len);
    int n = 0;
    for (int k = 0; k < 64 && !tr_reader_at_end(&r); k++) {
        int rc;
        const char *s;
        const void *p;
        size_t l;
        int64_t i;
        uint64_t u;
        const msgpack_object *o;
        switch ((pick >> (2 * (k % 32))) & 3) {
        case 0:
            rc = tr_read_object(&r, &o);
            break;
        case 1:
            rc = tr_read_i64(&r, &i);
            if (rc == TR_EBADMSG)
                rc = tr_read_u64(&r, &u);
            break;
        case 2:
            rc = tr_read_str(&r, &s, &l);
            if (rc == TR_OK)
                assert_true(s >= buf && s + l <= buf + len);
            break;
        default:
            rc = tr_read_bin(&r, &p, &l);
            if (rc == TR_OK)
                assert_true((const char *)p >= buf && (const char *)p + l <= buf + len);
            break;
        }
        /* malformed input gives a code, never a crash (nor a huge allocation) */
        assert_true(rc == TR_OK || rc == TR_EBADMSG);
        if (rc == TR_OK)
            n++;
        else if (tr_reader_at_end(&r) || rc != TR_EBADMSG || k > 8)
            break;
    }
    assert_true(r.off <= r.len);
    tr_reader_done(&r);
    return n;
}

static void test_random_garbage(void **state)
{
    (void)state;
    uint64_t seed = 0xC0FFEE1234567ull;
    char buf[96];
    const unsigned rounds = tt_scale(5000, 2000);
    long objects = 0;
    for (unsigned round = 0; round < rounds; round++) {
        size_t len = (size_t)(tt_xs64(&seed) % sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)(tt_xs64(&seed) >> 24);
        /* a copy on the heap of exactly len bytes, so ASan sees any read past the end */
        char *heap = malloc(len ? len : 1);
        assert_non_null(heap);
        memcpy(heap, buf, len);
        objects += read_all(heap, len, tt_xs64(&seed));
        free(heap);
    }
    assert_true(objects > 0);
}

static void test_strerror(void **state)
{
    (void)state;
    static const int codes[] = {TR_OK,       TR_ENOMEM,  TR_EINVAL,  TR_ENOPROC,
                                TR_ETIMEDOUT, TR_ESTOPPED, TR_EBADMSG, TR_ESTATE,
                                TR_ETOOBIG,  TR_EFULL};
    enum { N = sizeof codes / sizeof codes[0] };
    const char *s[N];
    for (size_t i = 0; i < N; i++) {
        s[i] = tr_strerror(codes[i]);
        assert_non_null(s[i]);
        assert_true(strlen(s[i]) > 0);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s[i], s[j]);
    }
    const char *unknown = tr_strerror(-1000);
    assert_non_null(unknown);
    assert_non_null(tr_strerror(12345));
    assert_non_null(tr_strerror(INT32_MIN));
    for (size_t i = 0; i < N; i++)
        assert_string_not_equal(s[i], unknown);
}

/* ---- regressions --------------------------------------------------------------------------- */

/* REGRESSION (found by this suite, fixed in 28777b5): the reader hands untrusted bytes straight to
 * msgpack_unpack_next, which allocates room for a container's declared element count before
 * checking that the bytes are there. The 5-byte payload "dd ff ff ff ff" (array32 claiming
 * 2^32-1 elements) makes it malloc ~96 GiB: a normal build gets TR_ENOMEM (or, with memory
 * overcommit, a huge mapping), an ASan build aborts ("allocator is out of memory"). Any actor
 * reading a payload from an untrusted peer could be made to do this. Expected: TR_EBADMSG (the
 * payload is truncated) without any large allocation. */
static void test_reader_bounds_container_lengths(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        "\xdd\xff\xff\xff\xff",     /* array32, 4294967295 elements, 0 present */
        "\xdf\xff\xff\xff\xff",     /* map32, 4294967295 pairs */
        "\x91\xdd\x7f\xff\xff\xff", /* the same, nested */
    };
    static const size_t lens[] = {5, 5, 6};
    for (size_t i = 0; i < 3; i++) {
        tr_reader r;
        const msgpack_object *o;
        tr_reader_init_bytes(&r, payloads[i], lens[i]);
        int rc = tr_read_object(&r, &o);
        tr_reader_done(&r);
        print_message("payload %zu: tr_read_object -> %d (%s)\n", i, rc, tr_strerror(rc));
        assert_int_equal(rc, TR_EBADMSG);
    }
}

/* tr_msg_put_* / tr_msg_new_u64 / tr_msg_get_u64 write and read what msgpack_pack_* and the
 * readers do. */
static void test_scalar_helpers(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new_u64(7, UINT64_MAX);
    assert_non_null(m);
    assert_int_equal(tr_msg_type(m), 7);
    uint64_t v = 1;
    assert_int_equal(tr_msg_get_u64(m, &v), TR_OK);
    assert_true(v == UINT64_MAX);
    assert_int_equal(tr_msg_put_i64(m, -5), TR_OK);
    assert_int_equal(tr_msg_put_str(m, "a\0b", 3), TR_OK);
    assert_int_equal(tr_msg_put_u64(m, 42), TR_OK);
    tr_reader r;
    tr_reader_init(&r, m);
    int64_t i = 0;
    const char *s;
    size_t len;
    assert_int_equal(tr_read_u64(&r, &v), TR_OK);
    assert_int_equal(tr_read_i64(&r, &i), TR_OK);
    assert_int_equal(i, -5);
    assert_int_equal(tr_read_str(&r, &s, &len), TR_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 3);
    assert_int_equal(tr_read_u64(&r, &v), TR_OK);
    assert_int_equal(v, 42);
    assert_true(tr_reader_at_end(&r));
    tr_reader_done(&r);
    tr_msg_free(m);
    /* nothing, or not an unsigned integer first: TR_EBADMSG and 0 */
    m = tr_msg_new(1, 0);
    v = 9;
    assert_int_equal(tr_msg_get_u64(m, &v), TR_EBADMSG);
    assert_int_equal(v, 0);
    assert_int_equal(tr_msg_put_i64(m, -1), TR_OK);
    v = 9;
    assert_int_equal(tr_msg_get_u64(m, &v), TR_EBADMSG);
    assert_int_equal(v, 0);
    tr_msg_free(m);
}

/* tr_log goes to the hook installed, with control characters escaped; NULL restores stderr. */
typedef struct log_seen {
    int n;
    tr_log_level level;
    char component[32], line[256];
} log_seen;

static void log_hook(void *user, tr_log_level level, const char *component, const char *line)
{
    log_seen *seen = user;
    seen->n++;
    seen->level = level;
    snprintf(seen->component, sizeof seen->component, "%s", component);
    snprintf(seen->line, sizeof seen->line, "%s", line);
}

static void test_log_hook(void **state)
{
    (void)state;
    log_seen seen = {0};
    tr_log_set(log_hook, &seen, TR_LOG_INFO);
    tr_log(TR_LOG_WARN, "node", "peer %s is down", "evil\ntroupe node a: forged");
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.level, TR_LOG_WARN);
    assert_string_equal(seen.component, "node");
    assert_string_equal(seen.line, "peer evil\\x0atroupe node a: forged is down");
    tr_log(TR_LOG_INFO, NULL, "%d", 7);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.component, "runtime");
    assert_string_equal(seen.line, "7");
    tr_log_set(NULL, NULL, TR_LOG_INFO);
    tr_log(TR_LOG_INFO, "test", "this line goes to stderr");
    assert_int_equal(seen.n, 2);
}

/* Levels: lines above the one kept are dropped (before formatting); names parse. */
static void test_log_levels(void **state)
{
    (void)state;
    log_seen seen = {0};
    tr_log_level l = TR_LOG_ERROR;
    assert_int_equal(tr_log_level_parse("debug", &l), TR_OK);
    assert_int_equal(l, TR_LOG_DEBUG);
    assert_int_equal(tr_log_level_parse("WARN", &l), TR_OK);
    assert_int_equal(l, TR_LOG_WARN);
    assert_int_equal(tr_log_level_parse("verbose", &l), TR_EINVAL);
    assert_int_equal(tr_log_level_parse(NULL, &l), TR_EINVAL);
    assert_int_equal(l, TR_LOG_WARN);
    tr_log_set(log_hook, &seen, TR_LOG_WARN);
    assert_int_equal(tr_log_level_get(), TR_LOG_WARN);
    tr_log(TR_LOG_INFO, "test", "dropped");
    tr_log(TR_LOG_DEBUG, "test", "dropped");
    assert_int_equal(seen.n, 0);
    tr_log(TR_LOG_ERROR, "test", "kept");
    tr_log(TR_LOG_WARN, "test", "kept too");
    assert_int_equal(seen.n, 2);
    tr_log_set(log_hook, &seen, TR_LOG_DEBUG);
    tr_log(TR_LOG_DEBUG, "test", "now kept");
    assert_int_equal(seen.n, 3);
    assert_string_equal(seen.line, "now kept");
    tr_log_set(NULL, NULL, TR_LOG_INFO);
}

/* ---- regressions (run with --regressions) ---------------------------------------------------- */

/* A thread that allocates and frees 320 messages (it feeds the pool's depot). */
static void *alloc_and_free(void *arg)
{
    (void)arg;
    tr_msg *ms[320];
    for (int i = 0; i < 320; i++)
        ms[i] = tr_msg_new(1, 0);
    for (int i = 0; i < 320; i++)
        tr_msg_free(ms[i]);
    return NULL;
}

/* A producer: allocates one message, hands it to the main thread, never frees one itself. */
static void *alloc_one_and_exit(void *arg)
{
    *(tr_msg **)arg = tr_msg_new(1, 0);
    return NULL;
}

static void *volatile probe_sink;

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void run_thread(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fn, arg), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
}

/* REGRESSION (runtime/src/core/msg.c, pool_get / pool_put; fixed in 3e4106e): a thread's message
 * cache is handed back to the depot at thread exit by a pthread key destructor, but the destructor
 * was registered only in pool_put (the first tr_msg_free on that thread). pool_get, on an empty cache, takes a whole
 * batch (POOL_BATCH = 64) from the depot: a thread that allocates messages but never frees one --
 * any producer thread calling tr_system_send / tr_system_call-less sends, e.g. the sender threads of
 * test_sched -- exits with up to 63 pooled messages in its TLS cache and they are lost.
 * LeakSanitizer reports them in `make asan` (test_sched: "Direct leak ... pool_get msg.c:107 ...
 * thread_sender_main"). Here: 500 short-lived producers each take a batch and exit, between
 * threads that refill the depot; with the bug each producer strands ~63 messages and the heap
 * grows by several MB; fixed, the heap stays flat.
 * Fixed: pool_get registers the destructor too (cache_register) when it takes a batch. */
static void bug_message_cache_leaks_at_thread_exit(void **state)
{
    (void)state;
    /* sanitizer allocators do not report through mallinfo2: then the churn still runs, and
     * LeakSanitizer (ASan builds) reports the stranded messages at exit */
    size_t probe_before = heap_in_use();
    probe_sink = malloc(1 << 20); /* through a volatile: the compiler may not elide it */
    bool measurable = heap_in_use() >= probe_before + (1 << 20);
    free(probe_sink);
    run_thread(alloc_and_free, NULL);
    size_t before = heap_in_use();
    const int rounds = 500;
    for (int i = 0; i < rounds; i++) {
        run_thread(alloc_and_free, NULL);
        tr_msg *m = NULL;
        run_thread(alloc_one_and_exit, &m);
        assert_non_null(m);
        tr_msg_free(m);
    }
    size_t after = heap_in_use();
    long growth = (long)after - (long)before;
    if (!measurable) {
        print_message("mallinfo2 does not see this allocator: growth not measured\n");
        return;
    }
    print_message("heap in use grew by %ld bytes over %d producer threads\n", growth, rounds);
    assert_true(growth < 1024 * 1024);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_new_defaults),
    cmocka_unit_test(test_pack_read_roundtrip),
    cmocka_unit_test(test_read_generic_object),
    cmocka_unit_test(test_wrong_type_and_past_end),
    cmocka_unit_test(test_growth_beyond_inline),
    cmocka_unit_test(test_from_bytes),
    cmocka_unit_test(test_truncated),
    cmocka_unit_test(test_strerror),
    cmocka_unit_test(test_scalar_helpers),
    cmocka_unit_test(test_log_hook),
    cmocka_unit_test(test_log_levels),
    cmocka_unit_test(test_reader_bounds_container_lengths),
    cmocka_unit_test(test_random_garbage),
};

static const struct CMUnitTest regressions[] = {
    cmocka_unit_test(bug_message_cache_leaks_at_thread_exit),
};

TT_MAIN(tests, regressions)
