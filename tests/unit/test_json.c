/* test_json.c — the strict scanner against a table of documents, each
 * checked whole, split at every offset and fed one byte at a time; the
 * eight-byte string fast path with a stop byte in every lane; nesting at
 * the limit; Go-compatible string escaping, including truncation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

/* len 0 means strlen(doc); set it for documents holding a NUL byte. */
struct row {
    const char *doc;
    bool ok;
    size_t len;
};

static const struct row rows[] = {
    /* top-level scalars and containers */
    {"0", true, 0},
    {"-0", true, 0},
    {"7", true, 0},
    {"true", true, 0},
    {"false", true, 0},
    {"null", true, 0},
    {"\"\"", true, 0},
    {"{}", true, 0},
    {"[]", true, 0},
    {" \t\r\n1 \t\r\n", true, 0},
    {" \t\r\n{ \"a\" : [1, -2.5e+3, 0, -0, 1E9, true, false, null, \"x\"] } \n", true, 0},
    {"[1,[2,{}],{\"a\":{\"b\":[]}}]", true, 0},
    {"{\"a\":1,\"a\":2}", true, 0},
    {"{\"\":0}", true, 0},
    /* numbers */
    {"-0.0e-0", true, 0},
    {"0.5", true, 0},
    {"1E+2", true, 0},
    {"1e-2", true, 0},
    {"-1.5e-10", true, 0},
    {"123456789012345678901234567890", true, 0},
    {"1e999999999999999999", true, 0},
    {"1.7976931348623157e309", true, 0},
    {"[0,1,-1,0.0,10]", true, 0},
    {"-", false, 0},
    {"--1", false, 0},
    {"-a", false, 0},
    {"01", false, 0},
    {"00", false, 0},
    {"-01", false, 0},
    {"1.", false, 0},
    {"1.e1", false, 0},
    {".5", false, 0},
    {"-.5", false, 0},
    {"1e", false, 0},
    {"1e+", false, 0},
    {"1e-", false, 0},
    {"1ee2", false, 0},
    {"1e2.5", false, 0},
    {"1.5.5", false, 0},
    {"+1", false, 0},
    {"0x10", false, 0},
    {"1_000", false, 0},
    {"Infinity", false, 0},
    {"NaN", false, 0},
    {"[01]", false, 0},
    {"[1.]", false, 0},
    {"{\"a\":-}", false, 0},
    /* literals */
    {"tru", false, 0},
    {"truE", false, 0},
    {"True", false, 0},
    {"nul", false, 0},
    {"nulll", false, 0},
    {"fals", false, 0},
    {"f", false, 0},
    {"[true1]", false, 0},
    /* strings */
    {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"", true, 0},
    {"\"\\uAbCd\\uabcd\\uABCD\"", true, 0},
    {"\"\\ud800\"", true, 0}, /* lone surrogate escapes: Go accepts them */
    {"\"\\udc00\\ud800\"", true, 0},
    {"\"\\u0000\"", true, 0},
    {"\"\x7f\"", true, 0}, /* DEL is not a control character in JSON */
    {"\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", true, 0},
    {"\"abcdefghijklmnopqrstuvwxyz\\n0123456789\xc3\xa9"
     "ABCDEFGHIJKLMNOP\\u20ACqrstuvwx\"",
     true, 0},
    {"\"abc", false, 0},
    {"\"", false, 0},
    {"\"a\nb\"", false, 0},
    {"\"a\tb\"", false, 0},
    {"\"\x1f\"", false, 0},
    {"\"\0\"", false, 3},
    {"\"\\x\"", false, 0},
    {"\"\\'\"", false, 0},
    {"\"\\U0041\"", false, 0},
    {"\"\\\"", false, 0},
    {"\"\\u12\"", false, 0},
    {"\"\\u12", false, 0},
    {"\"\\u12g4\"", false, 0},
    {"\"\\uGGGG\"", false, 0},
    {"'a'", false, 0},
    /* UTF-8 inside strings: boundaries accepted... */
    {"\"\xc2\x80\xdf\xbf\"", true, 0},                 /* U+0080, U+07FF */
    {"\"\xe0\xa0\x80\xed\x9f\xbf\"", true, 0},         /* U+0800, U+D7FF */
    {"\"\xee\x80\x80\xef\xbf\xbf\"", true, 0},         /* U+E000, U+FFFF */
    {"\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"", true, 0}, /* U+10000, U+10FFFF */
    /* ...and everything RFC 3629 forbids refused */
    {"\"\x80\"", false, 0},             /* lone continuation */
    {"\"\xc0\x80\"", false, 0},         /* overlong NUL */
    {"\"\xc1\xbf\"", false, 0},         /* overlong */
    {"\"\xe0\x80\x80\"", false, 0},     /* overlong */
    {"\"\xe0\x9f\xbf\"", false, 0},     /* overlong */
    {"\"\xed\xa0\x80\"", false, 0},     /* UTF-8-encoded surrogate */
    {"\"\xed\xbf\xbf\"", false, 0},     /* UTF-8-encoded surrogate */
    {"\"\xf0\x80\x80\x80\"", false, 0}, /* overlong */
    {"\"\xf0\x8f\xbf\xbf\"", false, 0}, /* overlong */
    {"\"\xf4\x90\x80\x80\"", false, 0}, /* past U+10FFFF */
    {"\"\xf5\x80\x80\x80\"", false, 0},
    {"\"\xfe\"", false, 0},
    {"\"\xff\"", false, 0},
    {"\"\xc3\"", false, 0},         /* truncated by the quote */
    {"\"\xe2\x82\"", false, 0},     /* truncated by the quote */
    {"\"\xc3x\"", false, 0},        /* continuation replaced by ASCII */
    {"\"\xe2\x82\\n\"", false, 0},  /* truncated by an escape */
    {"\"\xf0\x9f\x98\"", false, 0}, /* truncated 4-byte sequence */
    {"\xc3\xa9", false, 0},         /* UTF-8 outside a string */
    {"\xef\xbb\xbf"
     "1",
     false, 0}, /* a byte-order mark is not whitespace */
    /* structure and whitespace */
    {"", false, 0},
    {"   ", false, 0},
    {"\v1", false, 0},
    {"\f1", false, 0},
    {"1\v", false, 0},
    {"1 2", false, 0},
    {"1\0", false, 2},
    {"{} {}", false, 0},
    {"[] []", false, 0},
    {"[1]x", false, 0},
    {"{}}", false, 0},
    {"[]]", false, 0},
    {"[}", false, 0},
    {"{]", false, 0},
    {"[", false, 0},
    {"{", false, 0},
    {"{\"a\"", false, 0},
    {"{\"a\":", false, 0},
    {"{\"a\"}", false, 0},
    {"{\"a\":}", false, 0},
    {"{\"a\" 1}", false, 0},
    {"{\"a\"::1}", false, 0},
    {"{\"a\":1 \"b\":2}", false, 0},
    {"{\"a\":1,}", false, 0},
    {"{,}", false, 0},
    {"{1:2}", false, 0},
    {"{a:1}", false, 0},
    {"{\"a\":1]", false, 0},
    {"[1,]", false, 0},
    {"[,1]", false, 0},
    {"[1,,2]", false, 0},
    {"[1 2]", false, 0},
    {"[\"a\":1]", false, 0},
    {",", false, 0},
    {":", false, 0},
    {"]", false, 0},
};

static size_t row_len(const struct row *r)
{
    return r->len ? r->len : strlen(r->doc);
}

static bool split_valid(const uint8_t *doc, size_t n, size_t cut)
{
    struct json_scanner s;
    json_scanner_init(&s);
    bool ok = json_scanner_feed(&s, doc, cut);
    ok = json_scanner_feed(&s, doc + cut, n - cut) && ok;
    return json_scanner_finish(&s) && ok;
}

static bool bytewise_valid(const uint8_t *doc, size_t n)
{
    struct json_scanner s;
    bool ok = true;
    json_scanner_init(&s);
    for (size_t k = 0; k < n; k++)
        ok = json_scanner_feed(&s, doc + k, 1) && ok;
    return json_scanner_finish(&s) && ok;
}

/* Every way of feeding doc must agree with want. */
static void check_doc(const uint8_t *doc, size_t n, bool want)
{
    if (json_valid(doc, n) != want)
        fail_msg("json_valid(\"%.*s\") != %d", (int)n, (const char *)doc, want);
    for (size_t cut = 0; cut <= n; cut++)
        if (split_valid(doc, n, cut) != want)
            fail_msg("split at %zu of \"%.*s\" != %d", cut, (int)n, (const char *)doc, want);
    if (bytewise_valid(doc, n) != want)
        fail_msg("bytewise \"%.*s\" != %d", (int)n, (const char *)doc, want);
}

static void test_table_every_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        check_doc((const uint8_t *)rows[i].doc, row_len(&rows[i]), rows[i].ok);
}

/* One stop byte placed in every lane of the eight-byte fast path. */
static void test_string_fast_path_lanes(void **state)
{
    static const struct {
        uint8_t byte;
        bool ok;
    } stops[] = {{0x1f, false}, {0x00, false}, {0x80, false}, {0xff, false},
                 {0x7f, true},  {' ', true},   {'!', true},   {'[', true}};
    (void)state;
    for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++) {
        for (size_t pos = 1; pos <= 24; pos++) {
            uint8_t doc[27];
            memset(doc, 'a', sizeof doc);
            doc[0] = '"';
            doc[26] = '"';
            doc[pos] = stops[k].byte;
            check_doc(doc, sizeof doc, stops[k].ok);
        }
    }
    /* a quote or backslash in any lane changes the document's meaning */
    for (size_t pos = 1; pos <= 24; pos++) {
        uint8_t doc[27];
        memset(doc, 'a', sizeof doc);
        doc[0] = doc[26] = '"';
        doc[pos] = '"';
        check_doc(doc, sizeof doc, false); /* "aa"aa" */
        doc[pos] = '\\';
        check_doc(doc, sizeof doc, false); /* \a is no escape */
        doc[pos + 1] = 'n';
        check_doc(doc, sizeof doc, pos + 1 < 26);
    }
}

static uint8_t *nest(size_t depth, bool objects, size_t *len)
{
    size_t open = objects ? 5 : 1; /* {"a": or [ */
    uint8_t *doc = malloc(depth * (open + 1) + 1);
    size_t n = 0;
    for (size_t i = 0; i < depth; i++) {
        memcpy(doc + n, objects ? "{\"a\":" : "[", open);
        n += open;
    }
    doc[n++] = '1';
    for (size_t i = 0; i < depth; i++)
        doc[n++] = objects ? '}' : ']';
    *len = n;
    return doc;
}

static void test_depth_limit(void **state)
{
    (void)state;
    for (int objects = 0; objects <= 1; objects++) {
        size_t n;
        uint8_t *doc = nest(JSON_MAX_DEPTH, objects, &n);
        assert_true(json_valid(doc, n));
        assert_true(bytewise_valid(doc, n));
        assert_true(split_valid(doc, n, n / 2));
        free(doc);
        doc = nest(JSON_MAX_DEPTH + 1, objects, &n);
        assert_false(json_valid(doc, n));
        assert_false(bytewise_valid(doc, n));
        assert_false(split_valid(doc, n, n / 3));
        free(doc);
    }
}

static void test_feed_contract(void **state)
{
    struct json_scanner s;
    (void)state;
    /* a top-level number only ends with the input */
    json_scanner_init(&s);
    assert_true(json_scanner_feed(&s, (const uint8_t *)"12", 2));
    assert_true(json_scanner_feed(&s, (const uint8_t *)"34", 2));
    assert_true(json_scanner_finish(&s));
    /* refusal is reported as soon as the prefix is impossible, and sticks */
    json_scanner_init(&s);
    assert_false(json_scanner_feed(&s, (const uint8_t *)"[1,]", 4));
    assert_false(json_scanner_feed(&s, (const uint8_t *)"", 0));
    assert_false(json_scanner_finish(&s));
    /* an incomplete document is no error until finish */
    json_scanner_init(&s);
    assert_true(json_scanner_feed(&s, (const uint8_t *)"{\"a\":[tr", 8));
    assert_false(json_scanner_finish(&s));
    /* init makes a used scanner new again; empty feeds are harmless */
    json_scanner_init(&s);
    assert_true(json_scanner_feed(&s, NULL, 0));
    assert_true(json_scanner_feed(&s, (const uint8_t *)"[]", 2));
    assert_true(json_scanner_finish(&s));
    assert_false(json_valid(NULL, 0));
}

struct esc_row {
    const char *in;
    size_t n;
    const char *out;
};

static const struct esc_row esc_rows[] = {
    {"", 0, ""},
    {"plain", 5, "plain"},
    {"a\"b\\c/", 6, "a\\\"b\\\\c/"},
    {"\b\f\n\r\t", 5, "\\b\\f\\n\\r\\t"},
    {"\x00\x01\x1f\x7f", 4, "\\u0000\\u0001\\u001f\x7f"},
    {"<a&b>", 5, "\\u003ca\\u0026b\\u003e"},
    {"\xe2\x80\xa8\xe2\x80\xa9\xe2\x80\xa7", 9, "\\u2028\\u2029\xe2\x80\xa7"},
    {"caf\xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbd", 14, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbd"},
    {"\xff"
     "x\xc3",
     3, "\\ufffdx\\ufffd"},
    {"\x80", 1, "\\ufffd"},
    {"\xe2\x82", 2, "\\ufffd\\ufffd"},            /* truncated: one per byte */
    {"\xc0\x80", 2, "\\ufffd\\ufffd"},            /* overlong */
    {"\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd"}, /* encoded surrogate */
    {"\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd"},
    {"\xe2\x28\xa1", 3, "\\ufffd(\\ufffd"},
    {"client-s1-0123456789abcdef", 26, "client-s1-0123456789abcdef"},
};

static void test_escape_table(void **state)
{
    char out[128];
    (void)state;
    for (size_t i = 0; i < sizeof esc_rows / sizeof esc_rows[0]; i++) {
        const struct esc_row *r = &esc_rows[i];
        size_t need = json_escape(out, sizeof out, (const uint8_t *)r->in, r->n);
        assert_int_equal(need, strlen(r->out));
        assert_memory_equal(out, r->out, need);
        assert_int_equal(json_escape(NULL, 0, (const uint8_t *)r->in, r->n), need);
    }
}

/* Every cap from 0 to the full length: the prefix that fits is written,
 * nothing past cap, and the full length is still reported. */
static void test_escape_truncation(void **state)
{
    static const char in[] = "a<\"\xe2\x80\xa8\xff\xc3\xa9\n";
    const size_t n = sizeof in - 1;
    char full[64], out[64];
    (void)state;
    size_t need = json_escape(full, sizeof full, (const uint8_t *)in, n);
    for (size_t cap = 0; cap <= need; cap++) {
        memset(out, '#', sizeof out);
        assert_int_equal(json_escape(out, cap, (const uint8_t *)in, n), need);
        assert_memory_equal(out, full, cap);
        for (size_t k = cap; k < sizeof out; k++)
            assert_int_equal(out[k], '#');
    }
}

/* The small decoding helpers the envelope and FCM readers share. */
static void test_hex4_and_put_utf8(void **state)
{
    char out[4];
    (void)state;
    assert_int_equal(json_hex4((const uint8_t *)"00e9"), 0xe9);
    assert_int_equal(json_hex4((const uint8_t *)"D83D"), 0xd83d);
    assert_int_equal(json_hex4((const uint8_t *)"ffFF"), 0xffff);
    static const struct {
        uint32_t cp;
        const char *utf8;
    } cases[] = {{0x24, "$"},
                 {0x7f, "\x7f"},
                 {0x80, "\xc2\x80"},
                 {0x7ff, "\xdf\xbf"},
                 {0x800, "\xe0\xa0\x80"},
                 {0xfffd, "\xef\xbf\xbd"},
                 {0x10000, "\xf0\x90\x80\x80"},
                 {0x10ffff, "\xf4\x8f\xbf\xbf"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = json_put_utf8(out, cases[i].cp);
        assert_int_equal(n, strlen(cases[i].utf8));
        assert_memory_equal(out, cases[i].utf8, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_every_split), cmocka_unit_test(test_string_fast_path_lanes),
        cmocka_unit_test(test_depth_limit),       cmocka_unit_test(test_feed_contract),
        cmocka_unit_test(test_escape_table),      cmocka_unit_test(test_escape_truncation),
        cmocka_unit_test(test_hex4_and_put_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
