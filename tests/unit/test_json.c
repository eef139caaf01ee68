/* test_json.c — the strict scanner against a table of documents, each
 * checked whole, split at every offset and one byte at a time; nesting at
 * the limit; Go-compatible string escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "json.h"

static const struct {
    const char *doc;
    bool ok;
} rows[] = {
    {"{}", true},
    {"[]", true},
    {" \t\r\n{ \"a\" : [1, -2.5e+3, 0, -0, 1E9, true, false, null, \"x\"] } \n", true},
    {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"", true},
    {"\"\\ud800\"", true}, /* lone surrogate escape: Go accepts it */
    {"\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", true},
    {"0", true},
    {"-0.0e-0", true},
    {"123456789012345678901234567890", true},
    {"{\"a\":{\"b\":{\"c\":[[[]]]}}}", true},
    {"", false},
    {"   ", false},
    {"-", false},
    {"01", false},
    {"1.", false},
    {".5", false},
    {"1e", false},
    {"1e+", false},
    {"+1", false},
    {"0x10", false},
    {"tru", false},
    {"nul", false},
    {"True", false},
    {"1 2", false},
    {"{} {}", false},
    {"{\"a\"}", false},
    {"{\"a\":}", false},
    {"{\"a\":1,}", false},
    {"[1,]", false},
    {"[1 2]", false},
    {"{a:1}", false},
    {"{\"a\":1]", false},
    {"[", false},
    {"\"abc", false},
    {"\"a\nb\"", false},  /* raw control character */
    {"\"\\x\"", false},   /* bad escape */
    {"\"\\u12\"", false}, /* short \u */
    {"\"\\u12g4\"", false},
    {"\"\xff\"", false},         /* invalid UTF-8 */
    {"\"\xc3\"", false},         /* truncated sequence */
    {"\"\xed\xa0\x80\"", false}, /* UTF-8-encoded surrogate */
    {"'a'", false},
    {"[1]x", false},
};

static bool split_valid(const char *doc, size_t n, size_t cut)
{
    struct json_scanner s;
    json_scanner_init(&s);
    bool ok = json_scanner_feed(&s, (const uint8_t *)doc, cut);
    ok = json_scanner_feed(&s, (const uint8_t *)doc + cut, n - cut) && ok;
    return json_scanner_finish(&s) && ok;
}

static void test_table_every_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *d = rows[i].doc;
        size_t n = strlen(d);
        assert_int_equal(json_valid((const uint8_t *)d, n), rows[i].ok);
        for (size_t cut = 0; cut <= n; cut++)
            assert_int_equal(split_valid(d, n, cut), rows[i].ok);
        struct json_scanner s;
        json_scanner_init(&s);
        bool ok = true;
        for (size_t k = 0; k < n; k++)
            ok = json_scanner_feed(&s, (const uint8_t *)d + k, 1) && ok;
        assert_int_equal(json_scanner_finish(&s) && ok, rows[i].ok);
    }
}

static void test_depth_limit(void **state)
{
    size_t n = 2 * (JSON_MAX_DEPTH + 1);
    char *doc = malloc(n + 1);
    (void)state;
    memset(doc, '[', JSON_MAX_DEPTH);
    memset(doc + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    assert_true(json_valid((const uint8_t *)doc, 2 * JSON_MAX_DEPTH));
    memset(doc, '[', JSON_MAX_DEPTH + 1);
    memset(doc + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    assert_false(json_valid((const uint8_t *)doc, n));
    free(doc);
}

static void test_top_level_number_needs_finish(void **state)
{
    struct json_scanner s;
    (void)state;
    json_scanner_init(&s);
    assert_true(json_scanner_feed(&s, (const uint8_t *)"12", 2));
    assert_true(json_scanner_feed(&s, (const uint8_t *)"34", 2));
    assert_true(json_scanner_finish(&s));
}

static void test_escape(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } esc[] = {
        {"plain", 5, "plain"},
        {"a\"b\\c", 5, "a\\\"b\\\\c"},
        {"\n\r\t\x01\x1f", 5, "\\n\\r\\t\\u0001\\u001f"},
        {"<a&b>", 5, "\\u003ca\\u0026b\\u003e"},
        {"\xe2\x80\xa8\xe2\x80\xa9", 6, "\\u2028\\u2029"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"\xff"
         "x\xc3",
         3, "\\ufffdx\\ufffd"},
    };
    char out[128];
    (void)state;
    for (size_t i = 0; i < sizeof esc / sizeof esc[0]; i++) {
        size_t need = json_escape(out, sizeof out, (const uint8_t *)esc[i].in, esc[i].n);
        assert_int_equal(need, strlen(esc[i].out));
        assert_memory_equal(out, esc[i].out, need);
    }
    /* a short buffer is never overrun and the full length is still reported */
    memset(out, '#', sizeof out);
    assert_int_equal(json_escape(out, 3, (const uint8_t *)"<<", 2), 12);
    assert_int_equal(out[3], '#');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_every_split),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_top_level_number_needs_finish),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
