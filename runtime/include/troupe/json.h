/*
 * troupe/json.h — strict JSON for the web unit (troupe::web), on Debian's cJSON.
 *
 * Why cJSON with checks of our own rather than a stricter library: parsing and reading an order
 * body ({"user","sku","qty"}) took ~0.4 µs with cJSON and ~1.2 µs with jansson (2.14, which is
 * strict by itself) on this machine — 8% of the flash sale's whole CPU per order — while the checks
 * below cost a scan of the body (docs/performance.md, "JSON").
 *
 * tr_json_parse accepts exactly one JSON value and refuses, with a message saying what and where:
 * invalid UTF-8 (overlong forms, surrogates, code points above U+10FFFF), anything but whitespace
 * after the value, an object with the same key twice, a string holding NUL (\u0000: C strings
 * would silently cut it), and nesting deeper than TR_JSON_DEPTH_MAX. Writing: tr_json_escape and
 * tr_json_error escape every string (quotes, backslashes, control characters).
 */
#ifndef TROUPE_JSON_H
#define TROUPE_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

#define TR_JSON_DEPTH_MAX 64

/* Parses body[0..len) strictly (above). The value, to free with cJSON_Delete; or NULL and a
 * message in err (errlen bytes) such as "duplicate key \"qty\"" or "invalid UTF-8 at byte 12". */
cJSON *tr_json_parse(const char *body, size_t len, char *err, size_t errlen);
/* Writes s[0..n) as a JSON string, quotes included, into out (cap bytes, NUL added). Returns the
 * length written, or 0 when it does not fit (out is then ""). */
size_t tr_json_escape(char *out, size_t cap, const char *s, size_t n);
/* Writes {"error":"MSG"} (msg escaped) into out; its length (0 if it does not fit). */
size_t tr_json_error(char *out, size_t cap, const char *msg);

#endif
