/**
 * @file
 * troupe/json.h — strict JSON for the web unit (troupe::web), on Debian's cJSON.
 *
 * Why cJSON with checks of our own rather than a stricter library: parsing and reading an order
 * body ({"user","sku","qty"}) took ~0.4 µs with cJSON and ~1.2 µs with jansson (2.14, which is
 * strict by itself) on this machine — 8% of the flash sale's whole CPU per order — while the checks
 * below cost a scan of the body (docs/performance.md, "JSON").
 *
 * tr_json_parse accepts exactly one JSON value and refuses, with a message saying what and where:
 * invalid UTF-8 (overlong forms, surrogates, code points above U+10FFFF), anything but whitespace
 * after the value, an object with the same key twice, a string holding NUL (`\u0000`: C strings
 * would silently cut it), and nesting deeper than TR_JSON_DEPTH_MAX. Writing: tr_json_escape and
 * tr_json_error escape every string (quotes, backslashes, control characters).
 */
#ifndef TROUPE_JSON_H
#define TROUPE_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

#define TR_JSON_DEPTH_MAX 64 /**< arrays and objects nested deeper are refused */

/** Parses body[0..len) strictly (above). The value, to free with cJSON_Delete; or NULL and a
 * message in err (errlen bytes) such as "duplicate key \"qty\"" or "invalid UTF-8 at byte 12". */
cJSON *tr_json_parse(const char *body, size_t len, char *err, size_t errlen);
/** Writes s[0..n) as a JSON string, quotes included, into out (cap bytes, NUL added). Returns the
 * length written, or 0 when it does not fit (out is then ""). */
size_t tr_json_escape(char *out, size_t cap, const char *s, size_t n);
/** Writes {"error":"MSG"} (msg escaped) into out; its length (0 if it does not fit). */
size_t tr_json_error(char *out, size_t cap, const char *msg);

/** A growable buffer to write JSON into (answers of any size: tr_web_answer_take takes its bytes).
 * Writes after an allocation failure are dropped and remembered: check tr_jbuf_failed once at
 * the end. Zero-initialised is empty. */
typedef struct tr_jbuf {
    char *p;                    /**< the bytes written (not NUL-terminated) */
    size_t len;                 /**< how many */
    size_t cap;                 /**< room allocated */
    int failed;                 /**< an allocation failed: writes were dropped */
} tr_jbuf;
/** Appends s[0..n) as is. */
void tr_jbuf_raw(tr_jbuf *b, const char *s, size_t n);
/** Appends a string literal or C string as is. */
void tr_jbuf_lit(tr_jbuf *b, const char *s);
/** Appends s[0..n) as a JSON string (quoted and escaped). */
void tr_jbuf_str(tr_jbuf *b, const char *s, size_t n);
/** Appends v in decimal. */
void tr_jbuf_u64(tr_jbuf *b, unsigned long long v);
/** Whether a write failed (out of memory). */
int tr_jbuf_failed(const tr_jbuf *b);
/** The bytes (NUL-terminated; the caller frees them) and their length; the buffer is empty
 * again. NULL if a write failed (then nothing is to be freed). */
char *tr_jbuf_take(tr_jbuf *b, size_t *len);
/** Frees the bytes. */
void tr_jbuf_free(tr_jbuf *b);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
