/*
 * json.c — strict JSON on cJSON (see troupe/json.h): what cJSON lets through (invalid UTF-8,
 * trailing bytes, duplicate keys, NUL inside strings, very deep nesting) is refused here, by one
 * scan of the raw body before cJSON parses it and one walk of the tree after.
 */
#include "troupe/json.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The length of the valid UTF-8 sequence at p (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* One pass over the raw text: UTF-8, no escaped NUL inside strings, nesting depth. */
static bool scan(const char *s, size_t n, char *err, size_t errlen)
{
    bool in_str = false;
    unsigned depth = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = utf8_len((const unsigned char *)s + i, n - i);
        if (l == 0) {
            snprintf(err, errlen, "invalid UTF-8 at byte %zu", i);
            return false;
        }
        if (c == '\0') {
            snprintf(err, errlen, "NUL byte at %zu", i);
            return false;
        }
        if (in_str) {
            if (c == '\\') {
                if (n - i >= 6 && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0) {
                    snprintf(err, errlen, "\\u0000 in a string at byte %zu", i);
                    return false;
                }
                i += i + 1 < n ? 2 : 1; /* the escaped character (cJSON checks the rest) */
                continue;
            }
            if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > TR_JSON_DEPTH_MAX) {
                snprintf(err, errlen, "nested deeper than %d at byte %zu", TR_JSON_DEPTH_MAX, i);
                return false;
            }
        } else if (c == '}' || c == ']') {
            if (depth > 0)
                depth--;
        }
        i += l;
    }
    return true;
}

/* No object in the tree has a key twice. */
static bool unique_keys(const cJSON *v, char *err, size_t errlen)
{
    for (const cJSON *c = v != NULL ? v->child : NULL; c != NULL; c = c->next) {
        if (cJSON_IsObject(v))
            for (const cJSON *d = c->next; d != NULL; d = d->next)
                if (c->string != NULL && d->string != NULL && strcmp(c->string, d->string) == 0) {
                    char key[64];
                    size_t kl = tr_json_escape(key, sizeof key, c->string, strlen(c->string));
                    snprintf(err, errlen, "duplicate key %s", kl > 0 ? key : "(long)");
                    return false;
                }
        if (!unique_keys(c, err, errlen))
            return false;
    }
    return true;
}

cJSON *tr_json_parse(const char *body, size_t len, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (body == NULL) {
        snprintf(err, errlen, "no body");
        return NULL;
    }
    if (!scan(body, len, err, errlen))
        return NULL;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (v == NULL) {
        const char *at = cJSON_GetErrorPtr();
        if (at != NULL && at >= body && at <= body + len)
            snprintf(err, errlen, "malformed JSON at byte %zu", (size_t)(at - body));
        else
            snprintf(err, errlen, "malformed JSON");
        return NULL;
    }
    size_t off = end != NULL && end >= body && end <= body + len ? (size_t)(end - body) : len;
    while (off < len && (body[off] == ' ' || body[off] == '\t' || body[off] == '\r' ||
                         body[off] == '\n'))
        off++;
    if (off < len) {
        snprintf(err, errlen, "unexpected data after the JSON value at byte %zu", off);
        cJSON_Delete(v);
        return NULL;
    }
    if (!unique_keys(v, err, errlen)) {
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

/* Whether any of the 8 bytes of w needs an escape: below 0x20, '"', '\\' or 0x7f (a SWAR test:
 * the page of a social timeline escapes ~1 KB of ids and URLs, and the byte-at-a-time scan was
 * 5% of the node's CPU). */
static bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
#define HAS_ZERO(v) (((v) - ones) & ~(v) & high)
    uint64_t below = (w - ones * 0x20) & ~w & high; /* a byte < 0x20 (bytes >= 0x80 never) */
    return (below | HAS_ZERO(w ^ (ones * '"')) | HAS_ZERO(w ^ (ones * '\\')) |
            HAS_ZERO(w ^ (ones * 0x7f))) != 0;
#undef HAS_ZERO
}

size_t tr_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    if (out == NULL || cap == 0)
        return 0;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (k + 1 >= cap)                                                                          \
            goto full;                                                                             \
        out[k++] = (ch);                                                                           \
    } while (0)
    PUT('"');
    for (size_t i = 0; i < n; i++) {
        /* a run of bytes that need no escape goes in one copy (ids, URLs: all of them) */
        size_t j = i;
        for (uint64_t w; j + 8 <= n; j += 8) { /* eight at a time while none needs it */
            memcpy(&w, s + j, 8);
            if (word_needs_escape(w))
                break;
        }
        while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' &&
               s[j] != 0x7f)
            j++;
        if (j > i) {
            if (j - i >= cap - k)
                goto full;
            memcpy(out + k, s + i, j - i);
            k += j - i;
            i = j;
            if (i == n)
                break;
        }
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c == '\n') {
            PUT('\\');
            PUT('n');
        } else if (c == '\r') {
            PUT('\\');
            PUT('r');
        } else if (c == '\t') {
            PUT('\\');
            PUT('t');
        } else if (c < 0x20 || c == 0x7f) {
            PUT('\\');
            PUT('u');
            PUT('0');
            PUT('0');
            PUT(hex[c >> 4]);
            PUT(hex[c & 15]);
        } else {
            PUT((char)c);
        }
    }
    PUT('"');
#undef PUT
    out[k] = '\0';
    return k;
full:
    out[0] = '\0';
    return 0;
}

size_t tr_json_error(char *out, size_t cap, const char *msg)
{
    static const char head[] = "{\"error\":";
    if (out == NULL || cap < sizeof head + 3)
        return 0;
    memcpy(out, head, sizeof head - 1);
    size_t k = sizeof head - 1;
    size_t e = tr_json_escape(out + k, cap - k - 1, msg != NULL ? msg : "", msg ? strlen(msg) : 0);
    if (e == 0) {
        out[0] = '\0';
        return 0;
    }
    k += e;
    out[k++] = '}';
    out[k] = '\0';
    return k;
}

/* ---- tr_jbuf ------------------------------------------------------------------------------- */

/* Room for n more bytes and a NUL; false (and failed set) when out of memory. */
static int jbuf_room(tr_jbuf *b, size_t n)
{
    if (b->failed)
        return 0;
    if (n + 1 <= b->cap - b->len && b->p != NULL)
        return 1;
    size_t cap = b->cap ? b->cap : 2048; /* a page of posts in one allocation */
    while (n + 1 > cap - b->len) {
        if (cap > SIZE_MAX / 2) {
            b->failed = 1;
            return 0;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

void tr_jbuf_raw(tr_jbuf *b, const char *s, size_t n)
{
    if (!jbuf_room(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void tr_jbuf_lit(tr_jbuf *b, const char *s)
{
    tr_jbuf_raw(b, s, strlen(s));
}

void tr_jbuf_str(tr_jbuf *b, const char *s, size_t n)
{
    /* at most 6 bytes per byte (\u00XX) and the quotes */
    if (n > (SIZE_MAX - 3) / 6 || !jbuf_room(b, 6 * n + 2))
        return;
    b->len += tr_json_escape(b->p + b->len, b->cap - b->len, s, n);
}

void tr_jbuf_u64(tr_jbuf *b, unsigned long long v)
{
    char d[24];
    size_t n = sizeof d;
    do /* by hand: snprintf was 3% of a timeline page */
        d[--n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    tr_jbuf_raw(b, d + n, sizeof d - n);
}

int tr_jbuf_failed(const tr_jbuf *b)
{
    return b->failed;
}

char *tr_jbuf_take(tr_jbuf *b, size_t *len)
{
    if (b->failed || (b->p == NULL && !jbuf_room(b, 0))) {
        tr_jbuf_free(b);
        return NULL;
    }
    b->p[b->len] = '\0'; /* nothing written yet: "" */
    char *p = b->p;
    if (len != NULL)
        *len = b->len;
    *b = (tr_jbuf){0};
    return p;
}

void tr_jbuf_free(tr_jbuf *b)
{
    free(b->p);
    *b = (tr_jbuf){0};
}
