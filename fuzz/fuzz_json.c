/* fuzz_json.c — differential check of json_valid against jansson, split-feed
 * consistency (two and three chunks give the one-shot answer), and
 * json_escape (its output is always a valid string body, its reported
 * length is exact, and a short buffer gets a prefix). It aborts only when
 * the two parsers disagree outside these documented, deliberate differences:
 *  - lone surrogate escapes (\ud800, \udc00, \ud800\u0041): Go's json.Valid
 *    and this scanner accept them, jansson refuses them;
 *  - nesting: jansson stops at JSON_PARSER_MAX_DEPTH (2048), we at
 *    JSON_MAX_DEPTH (10000, as Go): inputs nested past 2048 are not compared;
 *  - numbers jansson cannot store: integers overflowing json_int_t ("too big
 *    integer") and reals overflowing a double ("real number overflow");
 *    RFC 8259 and Go have no such limit;
 *  - raw NUL bytes: never valid JSON for us, but jansson ends the input at a
 *    NUL after a top-level number ("1\0" loads);
 *  - \u0000 inside an object key: jansson refuses it even with
 *    JSON_ALLOW_NUL ("NUL byte in object key not supported"). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

/* Deepest nesting outside strings; a rough walk that is exact for valid
 * input and only used to decide what to compare. */
static size_t max_depth(const uint8_t *d, size_t n)
{
    size_t depth = 0, max = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        if (in_string) {
            if (d[i] == '\\')
                i++;
            else if (d[i] == '"')
                in_string = false;
        } else if (d[i] == '"') {
            in_string = true;
        } else if (d[i] == '[' || d[i] == '{') {
            max = ++depth > max ? depth : max;
        } else if ((d[i] == ']' || d[i] == '}') && depth) {
            depth--;
        }
    }
    return max;
}

static uint32_t hex4(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 4 | (uint32_t)(p[i] <= '9' ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
    return v;
}

/* True when a valid document holds a \u escape of a surrogate that is not
 * half of a high-low pair. */
static bool has_lone_surrogate(const uint8_t *d, size_t n)
{
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        if (!in_string) {
            in_string = d[i] == '"';
            continue;
        }
        if (d[i] == '"') {
            in_string = false;
        } else if (d[i] == '\\' && d[i + 1] != 'u') {
            i++;
        } else if (d[i] == '\\') {
            uint32_t cp = hex4(d + i + 2);
            i += 5;
            if (cp >= 0xDC00 && cp < 0xE000)
                return true;
            if (cp < 0xD800 || cp >= 0xDC00)
                continue;
            if (i + 6 >= n || d[i + 1] != '\\' || d[i + 2] != 'u')
                return true;
            uint32_t lo = hex4(d + i + 3);
            if (lo < 0xDC00 || lo >= 0xE000)
                return true;
            i += 6;
        }
    }
    return false;
}

static bool chunks_valid(const uint8_t *d, size_t n, size_t a, size_t b)
{
    struct json_scanner s;
    bool ok;
    json_scanner_init(&s);
    ok = json_scanner_feed(&s, d, a);
    ok = json_scanner_feed(&s, d + a, b - a) && ok;
    ok = json_scanner_feed(&s, d + b, n - b) && ok;
    return json_scanner_finish(&s) && ok;
}

static void check_splits(const uint8_t *d, size_t n, bool want)
{
    size_t seed = n ? d[0] * 131u + d[n - 1] : 0;
    size_t cuts[][2] = {{n / 2, n / 2}, {n / 3, 2 * n / 3}, {0, n}, {1, 1}};
    cuts[3][0] = cuts[3][1] = n ? seed % (n + 1) : 0;
    cuts[3][1] += n ? (seed / 7) % (n + 1 - cuts[3][0]) : 0;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        if (cuts[i][1] > n)
            continue;
        if (chunks_valid(d, n, cuts[i][0], cuts[i][1]) != want)
            abort();
    }
}

static bool jansson_skip(bool ours, const uint8_t *d, size_t n, const json_error_t *err)
{
    if (!ours && memchr(d, 0, n))
        return true;
    if (ours && has_lone_surrogate(d, n))
        return true;
    return ours && (strstr(err->text, "too big") || strstr(err->text, "overflow") ||
                    strstr(err->text, "NUL byte in object key"));
}

static void check_jansson(const uint8_t *d, size_t n, bool ours)
{
    json_error_t err;
    if (max_depth(d, n) > JSON_PARSER_MAX_DEPTH)
        return;
    json_t *doc = json_loadb((const char *)d, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    bool theirs = doc != NULL;
    json_decref(doc);
    if (ours != theirs && !jansson_skip(ours, d, n, &err))
        abort();
}

static void check_escape(const uint8_t *d, size_t n)
{
    size_t need = json_escape(NULL, 0, d, n);
    char *out = malloc(need + 2);
    if (json_escape(out + 1, need, d, n) != need)
        abort();
    out[0] = out[need + 1] = '"';
    if (!json_valid((const uint8_t *)out, need + 2))
        abort();
    size_t cap = need / 2;
    char *part = malloc(cap + 1);
    part[cap] = '#';
    if (json_escape(part, cap, d, n) != need || memcmp(part, out + 1, cap) != 0 || part[cap] != '#')
        abort();
    free(part);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool ours = json_valid(data, size);
    check_splits(data, size, ours);
    check_jansson(data, size, ours);
    check_escape(data, size);
    return 0;
}
