/*
 * test_json.c — strict JSON of the web unit (troupe/json.h): what must parse, and each thing that
 * must be refused with a message naming it (invalid UTF-8, trailing data, duplicate keys, NUL in
 * a string, deep nesting, a truncated body); strings escaped on the way out.
 */
#include "test_util.h"
#include "troupe/json.h"

#include <stdlib.h>
#include <string.h>

static void refused(const char *body, const char *why)
{
    char err[128];
    cJSON *v = tr_json_parse(body, strlen(body), err, sizeof err);
    if (v != NULL || strstr(err, why) == NULL)
        print_message("body %s: got \"%s\", wanted \"%s\"\n", body, err, why);
    assert_null(v);
    assert_non_null(strstr(err, why));
}

static void test_parse_strict(void **state)
{
    (void)state;
    char err[128];
    const char *ok = " {\"user\":\"ü\xe2\x82\xac\",\"sku\":\"s1\",\"qty\":1,\"n\":[1,{\"a\":null}]}\r\n";
    cJSON *v = tr_json_parse(ok, strlen(ok), err, sizeof err);
    assert_non_null(v);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "user")->valuestring, "ü€");
    cJSON_Delete(v);
    /* the same key in different objects is fine; "\\u0000" is a backslash and text, not NUL */
    const char *ok2 = "{\"a\":{\"a\":1},\"b\":\"x\\\\u0000\"}";
    v = tr_json_parse(ok2, strlen(ok2), err, sizeof err);
    assert_non_null(v);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "b")->valuestring, "x\\u0000");
    cJSON_Delete(v);

    refused("{\"user\":\"a\",\"user\":\"b\"}", "duplicate key \"user\"");
    refused("{\"o\":{\"k\":1,\"k\":2}}", "duplicate key \"k\"");
    refused("[{\"k\":1,\"k\":2}]", "duplicate key");
    refused("{\"user\":\"a\"} junk", "unexpected data after the JSON value at byte 13");
    refused("{\"user\":\"a\"}{}", "unexpected data");
    refused("{\"user\":\"a\\u0000b\"}", "\\u0000 in a string");
    refused("{\"user\":\"\xc3\x28\"}", "invalid UTF-8 at byte 9");   /* bad continuation */
    refused("{\"user\":\"\xc0\xaf\"}", "invalid UTF-8");             /* overlong '/' */
    refused("{\"user\":\"\xed\xa0\x80\"}", "invalid UTF-8");         /* a surrogate */
    refused("{\"user\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8");     /* above U+10FFFF */
    refused("{\"user\":\"a\xff\"}", "invalid UTF-8");
    refused("{\"user\":", "malformed JSON");
    refused("", "malformed JSON");
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    refused(deep, "nested deeper than 64");
    char nul[] = "{\"a\":\"b\"}";
    nul[6] = '\0'; /* a raw NUL inside the body */
    v = tr_json_parse(nul, sizeof nul - 1, err, sizeof err);
    assert_null(v);
    assert_non_null(strstr(err, "NUL byte at 6"));
    assert_null(tr_json_parse(NULL, 0, err, sizeof err));
}

static void test_escape(void **state)
{
    (void)state;
    char out[64];
    const char s[] = "a\"b\\c\n\x01\x7f€";
    assert_int_equal(tr_json_escape(out, sizeof out, s, sizeof s - 1), 26);
    assert_string_equal(out, "\"a\\\"b\\\\c\\n\\u0001\\u007f€\"");
    assert_int_equal(tr_json_escape(out, 4, "abcdef", 6), 0); /* does not fit */
    assert_string_equal(out, "");
    assert_int_equal(tr_json_error(out, sizeof out, "bad \"qty\""), 23);
    assert_string_equal(out, "{\"error\":\"bad \\\"qty\\\"\"}");
    /* what we write parses back */
    char err[64];
    cJSON *v = tr_json_parse(out, strlen(out), err, sizeof err);
    assert_non_null(v);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "error")->valuestring, "bad \"qty\"");
    cJSON_Delete(v);
}

/* Every byte value at every position of strings of 1..24 bytes (the escape looks at eight bytes at
 * a time): the output decodes, through cJSON, back to the input. */
static void test_escape_every_byte(void **state)
{
    (void)state;
    char s[25], out[256], err[64];
    for (size_t len = 1; len <= 24; len++)
        for (size_t pos = 0; pos < len; pos++)
            for (int c = 1; c < 256; c++) {
                memset(s, 'a', len);
                s[pos] = (char)c;
                if (c >= 0x80) /* keep the UTF-8 valid: a two-byte sequence where there is room */
                    s[pos] = pos + 1 < len ? (char)0xc3 : 'b';
                if (c >= 0x80 && pos + 1 < len)
                    s[pos + 1] = (char)(0x80 | (c & 0x3f));
                size_t k = tr_json_escape(out, sizeof out, s, len);
                assert_true(k > len);
                cJSON *v = tr_json_parse(out, k, err, sizeof err);
                assert_non_null(v);
                assert_true(cJSON_IsString(v));
                assert_int_equal(strlen(v->valuestring), len);
                assert_memory_equal(v->valuestring, s, len);
                cJSON_Delete(v);
            }
}

/* tr_jbuf: grows past any size, escapes strings, hands its bytes over. */
static void test_jbuf(void **state)
{
    (void)state;
    tr_jbuf b = {0};
    tr_jbuf_lit(&b, "{\"a\":");
    tr_jbuf_str(&b, "q\"\\\n\x01", 5);
    tr_jbuf_lit(&b, ",\"n\":");
    tr_jbuf_u64(&b, 18446744073709551615ull);
    tr_jbuf_lit(&b, "}");
    assert_false(tr_jbuf_failed(&b));
    size_t len;
    char *p = tr_jbuf_take(&b, &len);
    assert_non_null(p);
    assert_string_equal(p, "{\"a\":\"q\\\"\\\\\\n\\u0001\",\"n\":18446744073709551615}");
    assert_int_equal(len, strlen(p));
    free(p);
    assert_null(b.p); /* empty again */
    for (int i = 0; i < 100000; i++) /* far past the first allocation */
        tr_jbuf_raw(&b, "0123456789", 10);
    p = tr_jbuf_take(&b, &len);
    assert_int_equal(len, 1000000);
    assert_int_equal(p[999999], '9');
    free(p);
    p = tr_jbuf_take(&b, &len); /* nothing written: "" */
    assert_non_null(p);
    assert_int_equal(len, 0);
    assert_string_equal(p, "");
    free(p);
    tr_jbuf_lit(&b, "x");
    tr_jbuf_free(&b);
    assert_null(b.p);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_strict),
    cmocka_unit_test(test_escape),
    cmocka_unit_test(test_escape_every_byte),
    cmocka_unit_test(test_jbuf),
};

TT_MAIN_PLAIN(tests)
