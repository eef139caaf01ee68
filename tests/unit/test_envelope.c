/* test_envelope.c — the reference's envelope_test.go cases and the Go
 * encoding/json field rules it inherits (docs/features/envelope.md):
 * case folding, duplicates, null, escaped conn_ids, uint16 close codes,
 * unknown keys, whitespace; plus the two frames the relay builds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "codec/envelope.h"

static char scratch[4096];
static char detail[160];

static enum envelope_kind parse_n(const char *s, size_t n, struct envelope *env)
{
    return envelope_parse((const uint8_t *)s, n, env, scratch, sizeof scratch, detail,
                          sizeof detail);
}

static enum envelope_kind parse(const char *s, struct envelope *env)
{
    return parse_n(s, strlen(s), env);
}

static void expect_span(const void *p, size_t n, const char *want)
{
    assert_non_null(p);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

struct kind_row {
    const char *doc;
    enum envelope_kind kind;
};

static void check_kinds(const struct kind_row *rows, size_t n)
{
    struct envelope e;
    for (size_t i = 0; i < n; i++)
        if (parse(rows[i].doc, &e) != rows[i].kind)
            fail_msg("%s: want kind %d", rows[i].doc, rows[i].kind);
}

#define CHECK_KINDS(rows) check_kinds(rows, sizeof rows / sizeof rows[0])

/* Marshal then Unmarshal: the inner frame comes back byte for byte. */
static void test_round_trip_bytewise_opacity(void **state)
{
    static const char *const frames[] = {
        "{ \"a\" : [1, 2,\n 3] }",
        "\"str with } and ] and \\\" and { and \\\\\"",
        "\"\\\\\"",
        "42",
        "-1.5e+300",
        "[{\"x\":{\"y\":[]}}]",
        "true",
        "\"\\u00e9 caf\xc3\xa9 \\ud83d\\ude00 <&>\"",
        "{\"conn_id\":\"inner\",\"frame\":{\"close_code\":1}}",
        "[\r\n\t1\r\n\t]",
    };
    static const char id[] = "client-s1-0123456789abcdef";
    (void)state;
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        char doc[512];
        struct envelope e;
        size_t n = envelope_wrap_prefix(doc, sizeof doc, id, strlen(id));
        size_t f = strlen(frames[i]);
        memcpy(doc + n, frames[i], f);
        doc[n + f] = '}';
        assert_int_equal(parse_n(doc, n + f + 1, &e), ENVELOPE_ROUTE);
        expect_span(e.frame, e.frame_len, frames[i]);
        assert_ptr_equal(e.frame, doc + n); /* a span of the input, not a copy */
        expect_span(e.conn_id, e.conn_id_len, id);
        assert_int_equal(e.close_code, 0);
        assert_null(e.push_wake);
    }
}

static void test_rejections(void **state)
{
    static const struct kind_row rows[] = {
        /* malformed: not JSON, truncated, not an object, trailing garbage */
        {"", ENVELOPE_MALFORMED},
        {"   ", ENVELOPE_MALFORMED},
        {"not json", ENVELOPE_MALFORMED},
        {"{", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1} x", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1}{}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1}}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":\"\xff\"}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":[1,]}", ENVELOPE_MALFORMED},
        {"[1,2]", ENVELOPE_MALFORMED},
        {"[]", ENVELOPE_MALFORMED},
        {"[{\"conn_id\":\"c\",\"frame\":1}]", ENVELOPE_MALFORMED},
        {"\"x\"", ENVELOPE_MALFORMED},
        {"5", ENVELOPE_MALFORMED},
        {"true", ENVELOPE_MALFORMED},
        /* conn_id of the wrong type */
        {"{\"conn_id\":5,\"frame\":1}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":true,\"frame\":1}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":{},\"frame\":1}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":[\"c\"],\"frame\":1}", ENVELOPE_MALFORMED},
        /* missing, empty or null conn_id */
        {"null", ENVELOPE_MISSING_CONN_ID}, /* Go: an empty envelope */
        {" \n null \t", ENVELOPE_MISSING_CONN_ID},
        {"{}", ENVELOPE_MISSING_CONN_ID},
        {"{\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id\":\"\",\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id\":null,\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id\":\"c\",\"conn_id\":\"\",\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        /* missing or null frame */
        {"{\"conn_id\":\"c\"}", ENVELOPE_MISSING_FRAME},
        {"{\"conn_id\":\"c\",\"frame\":null}", ENVELOPE_MISSING_FRAME},
        {"{\"conn_id\":\"c\",\"frame\":1,\"frame\":null}", ENVELOPE_MISSING_FRAME},
    };
    (void)state;
    CHECK_KINDS(rows);
    assert_string_equal(envelope_error(ENVELOPE_MALFORMED), "relay: malformed routing envelope");
    assert_string_equal(envelope_error(ENVELOPE_MISSING_CONN_ID),
                        "relay: routing envelope missing conn_id");
    assert_string_equal(envelope_error(ENVELOPE_MISSING_FRAME),
                        "relay: routing envelope missing frame");
    assert_null(envelope_error(ENVELOPE_ROUTE));
    assert_null(envelope_error(ENVELOPE_WAKE));
}

static void test_malformed_detail(void **state)
{
    static const struct {
        const char *doc;
        const char *detail;
    } rows[] = {
        {"[1]", "json: cannot unmarshal array into Go value of type relay.Envelope"},
        {"\"s\"", "json: cannot unmarshal string into Go value of type relay.Envelope"},
        {"{\"conn_id\":5}",
         "json: cannot unmarshal number into Go struct field Envelope.conn_id of type string"},
        {"{\"conn_id\":{}}",
         "json: cannot unmarshal object into Go struct field Envelope.conn_id of type string"},
        {"{\"conn_id\":\"c\",\"close_code\":65536}",
         "json: cannot unmarshal number 65536 into Go struct field Envelope.close_code of type "
         "uint16"},
        {"{\"conn_id\":\"c\",\"close_code\":\"1000\"}",
         "json: cannot unmarshal string into Go struct field Envelope.close_code of type uint16"},
        {"{\"conn_id\":\"c\",\"close_code\":false}",
         "json: cannot unmarshal bool into Go struct field Envelope.close_code of type uint16"},
        {"{\"conn_id\":", "unexpected end of JSON input"},
        {"", "unexpected end of JSON input"},
        {"{\"conn_id\" x", "invalid character 'x' at offset 11"},
        {"{\"a\":\"\x01\"}", "invalid byte 0x01 at offset 6"},
    };
    struct envelope e;
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(parse(rows[i].doc, &e), ENVELOPE_MALFORMED);
        assert_string_equal(detail, rows[i].detail);
    }
    /* the error offset is found past the scanner's 4 KiB re-feed blocks */
    char big[6000];
    memset(big, ' ', sizeof big);
    big[0] = '[';
    big[5000] = '}';
    assert_int_equal(parse_n(big, sizeof big, &e), ENVELOPE_MALFORMED);
    assert_string_equal(detail, "invalid character '}' at offset 5000");
    /* a malformed envelope hands back nothing half-parsed */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1,\"close_code\":-1}", &e),
                     ENVELOPE_MALFORMED);
    assert_null(e.frame);
    assert_int_equal(e.conn_id_len, 0);
    /* a NULL detail buffer is allowed */
    assert_int_equal(envelope_parse((const uint8_t *)"[", 1, &e, scratch, sizeof scratch, NULL, 0),
                     ENVELOPE_MALFORMED);
}

static void test_close_directive(void **state)
{
    struct envelope e;
    (void)state;
    /* absent or null frame is fine with a close code */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"close_code\":4401}", &e), ENVELOPE_ROUTE);
    assert_int_equal(e.close_code, 4401);
    assert_null(e.frame);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":null,\"close_code\":4001}", &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(e.close_code, 4001);
    assert_null(e.frame);
    /* a final frame is kept */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":{\"bye\":1},\"close_code\":4403}", &e),
                     ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "{\"bye\":1}");
    assert_int_equal(e.close_code, 4403);
    /* conn_id is still required */
    assert_int_equal(parse("{\"close_code\":4401}", &e), ENVELOPE_MISSING_CONN_ID);
    assert_int_equal(parse("{\"conn_id\":\"\",\"frame\":1,\"close_code\":4401}", &e),
                     ENVELOPE_MISSING_CONN_ID);
    assert_int_equal(parse("{\"conn_id\":null,\"close_code\":4401}", &e), ENVELOPE_MISSING_CONN_ID);
}

/* uint16 as Go decodes it: an integer literal 0..65535, nothing else. */
static void test_close_code_values(void **state)
{
    static const struct {
        const char *code;
        enum envelope_kind kind;
        uint16_t value;
    } rows[] = {
        {"0", ENVELOPE_ROUTE, 0},
        {"1", ENVELOPE_ROUTE, 1},
        {"1000", ENVELOPE_ROUTE, 1000},
        {"65535", ENVELOPE_ROUTE, 65535},
        {"null", ENVELOPE_ROUTE, 0},
        {"65536", ENVELOPE_MALFORMED, 0},
        {"99999999999999999999999", ENVELOPE_MALFORMED, 0},
        {"-1", ENVELOPE_MALFORMED, 0},
        {"-0", ENVELOPE_MALFORMED, 0},
        {"1.0", ENVELOPE_MALFORMED, 0},
        {"1000.5", ENVELOPE_MALFORMED, 0},
        {"1e3", ENVELOPE_MALFORMED, 0},
        {"0e0", ENVELOPE_MALFORMED, 0},
        {"\"1000\"", ENVELOPE_MALFORMED, 0},
        {"true", ENVELOPE_MALFORMED, 0},
        {"[1000]", ENVELOPE_MALFORMED, 0},
        {"{}", ENVELOPE_MALFORMED, 0},
    };
    struct envelope e;
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char doc[128];
        snprintf(doc, sizeof doc, "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":%s}",
                 rows[i].code);
        assert_int_equal(parse(doc, &e), rows[i].kind);
        assert_int_equal(e.close_code, rows[i].value);
    }
    /* 0 is "no close code": the frame is required again */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"close_code\":0}", &e), ENVELOPE_MISSING_FRAME);
    /* null leaves an earlier value; a later duplicate replaces it */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"close_code\":4000,\"close_code\":null}", &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(e.close_code, 4000);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"close_code\":4000,\"close_code\":0}", &e),
                     ENVELOPE_MISSING_FRAME);
}

static void test_wake(void **state)
{
    struct envelope e;
    (void)state;
    assert_int_equal(parse("{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"t\"}}", &e),
                     ENVELOPE_WAKE);
    expect_span(e.push_wake, e.push_wake_len, "{\"platform\":\"fcm\",\"token\":\"t\"}");
    assert_int_equal(e.conn_id_len, 0);
    assert_null(e.frame);
    /* with a frame, with an empty or null conn_id: still a wake */
    assert_int_equal(parse("{\"push_wake\":{\"token\":\"t\"},\"frame\":[1]}", &e), ENVELOPE_WAKE);
    expect_span(e.frame, e.frame_len, "[1]");
    assert_int_equal(parse("{\"conn_id\":\"\",\"push_wake\":{}}", &e), ENVELOPE_WAKE);
    assert_int_equal(parse("{\"conn_id\":null,\"push_wake\":{}}", &e), ENVELOPE_WAKE);
    /* any non-null value is "present"; validating it is the waker's job */
    assert_int_equal(parse("{\"push_wake\":\"garbage\"}", &e), ENVELOPE_WAKE);
    assert_int_equal(parse("{\"push_wake\":0}", &e), ENVELOPE_WAKE);
    assert_int_equal(parse("{\"push_wake\":null}", &e), ENVELOPE_MISSING_CONN_ID);
    assert_int_equal(parse("{\"push_wake\":{},\"push_wake\":null}", &e), ENVELOPE_MISSING_CONN_ID);
    /* with a conn_id the envelope routes; push_wake is ignored, even malformed */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1,\"push_wake\":[1]}", &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1,\"push_wake\":\"x\"}", &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"push_wake\":{}}", &e), ENVELOPE_MISSING_FRAME);
}

static void test_case_insensitive_keys(void **state)
{
    static const struct kind_row rows[] = {
        {"{\"CONN_ID\":\"a\",\"FRAME\":1}", ENVELOPE_ROUTE},
        {"{\"Conn_Id\":\"a\",\"fRaMe\":1}", ENVELOPE_ROUTE},
        {"{\"conn_id\":\"a\",\"CLOSE_CODE\":4000}", ENVELOPE_ROUTE},
        {"{\"PUSH_WAKE\":{}}", ENVELOPE_WAKE},
        {"{\"conn\\u005fid\":\"a\",\"\\u0046rame\":1}", ENVELOPE_ROUTE},
        {"{\"\\u0063\\u006f\\u006e\\u006e\\u005f\\u0069\\u0064\":\"a\",\"frame\":1}",
         ENVELOPE_ROUTE},
        /* Go folds each rune to its case orbit: KELVIN SIGN ~ k, LONG S ~ s */
        {"{\"push_wa\xe2\x84\xaa"
         "e\":{}}",
         ENVELOPE_WAKE},
        {"{\"push_wa\\u212Ae\":{}}", ENVELOPE_WAKE},
        {"{\"conn_id\":\"a\",\"clo\xc5\xbf"
         "e_code\":4000}",
         ENVELOPE_ROUTE},
        /* near misses are unknown keys */
        {"{\"conn-id\":\"a\",\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"connid\":\"a\",\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id \":\"a\",\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_\xc4\xb0"
         "d\":\"a\",\"frame\":1}",
         ENVELOPE_MISSING_CONN_ID}, /* U+0130 has no simple fold to i */
        {"{\"conn_id\":\"a\",\"frames\":1}", ENVELOPE_MISSING_FRAME},
        {"{\"conn_id\":\"a\",\"fram\":1}", ENVELOPE_MISSING_FRAME},
    };
    (void)state;
    CHECK_KINDS(rows);
}

static void test_duplicate_keys_and_null(void **state)
{
    struct envelope e;
    (void)state;
    assert_int_equal(parse("{\"conn_id\":\"a\",\"CONN_ID\":\"bb\",\"frame\":1,\"frame\":[2]}", &e),
                     ENVELOPE_ROUTE);
    expect_span(e.conn_id, e.conn_id_len, "bb");
    expect_span(e.frame, e.frame_len, "[2]");
    assert_int_equal(parse("{\"conn_id\":\"a\",\"frame\":null,\"frame\":{\"x\":1}}", &e),
                     ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "{\"x\":1}");
    /* null leaves a string as it was, but clears a raw field */
    assert_int_equal(parse("{\"conn_id\":\"a\",\"conn_id\":null,\"frame\":1}", &e), ENVELOPE_ROUTE);
    expect_span(e.conn_id, e.conn_id_len, "a");
    /* a later escaped duplicate replaces an earlier one */
    assert_int_equal(parse("{\"conn_id\":\"\\u0041\",\"conn_id\":\"\\u0042\",\"frame\":1}", &e),
                     ENVELOPE_ROUTE);
    expect_span(e.conn_id, e.conn_id_len, "B");
}

static void test_unknown_keys(void **state)
{
    struct envelope e;
    (void)state;
    assert_int_equal(
        parse("{\"x\":{\"conn_id\":\"no\",\"frame\":[{}]},\"y\":[\"}\",\"]\",\"\\\"\"],"
              "\"z\":\"\\\\\",\"conn_id\":\"c\",\"w\":null,\"frame\":0,\"v\":-1e5}",
              &e),
        ENVELOPE_ROUTE);
    expect_span(e.conn_id, e.conn_id_len, "c");
    expect_span(e.frame, e.frame_len, "0");
    /* unknown values are still validated */
    assert_int_equal(parse("{\"x\":[1,],\"conn_id\":\"c\",\"frame\":0}", &e), ENVELOPE_MALFORMED);
    assert_int_equal(parse("{\"x\":\"\xc3\",\"conn_id\":\"c\",\"frame\":0}", &e),
                     ENVELOPE_MALFORMED);
}

static void test_escaped_conn_id(void **state)
{
    static const struct {
        const char *raw;
        const char *decoded;
        size_t len;
    } rows[] = {
        {"client-\\u0073\\\"1-\\ud83d\\ude00\\ud800", "client-s\"1-\xf0\x9f\x98\x80\xef\xbf\xbd",
         18},
        {"\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t", 8},
        {"\\u00e9\\u20AC", "\xc3\xa9\xe2\x82\xac", 5},
        {"\\udc00x", "\xef\xbf\xbdx", 4}, /* lone low surrogate */
        {"\\ud800\\u0041",
         "\xef\xbf\xbd"
         "A",
         4},                                                          /* high, then no low */
        {"\\ud800\\ud800\\udc00", "\xef\xbf\xbd\xf0\x90\x80\x80", 7}, /* high, then a pair */
        {"a\\u0000b", "a\0b", 3},
    };
    struct envelope e;
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char doc[256];
        snprintf(doc, sizeof doc, "{\"conn_id\":\"%s\",\"frame\":1}", rows[i].raw);
        assert_int_equal(parse(doc, &e), ENVELOPE_ROUTE);
        assert_ptr_equal(e.conn_id, scratch);
        assert_int_equal(e.conn_id_len, rows[i].len);
        assert_memory_equal(e.conn_id, rows[i].decoded, rows[i].len);
    }
    /* without escapes conn_id points into the input */
    const char *doc = "{\"conn_id\":\"client-\xc3\xa9\",\"frame\":1}";
    assert_int_equal(parse(doc, &e), ENVELOPE_ROUTE);
    assert_ptr_equal(e.conn_id, doc + 12);
    assert_int_equal(e.conn_id_len, 9);
}

static void test_whitespace_everywhere(void **state)
{
    struct envelope e;
    (void)state;
    const char *doc =
        " \t\r\n{ \t\r\n\"conn_id\" \t\r\n: \t\r\n\"c\" \t\r\n, \t\r\n\"frame\" \t\r\n:"
        " \t\r\n[ 1 , { \"a\" : 2 } ] \t\r\n, \"close_code\" : 4000 \t\r\n} \t\r\n";
    assert_int_equal(parse(doc, &e), ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "[ 1 , { \"a\" : 2 } ]");
    assert_int_equal(e.close_code, 4000);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1 }", &e), ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "1");
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":true\n}", &e), ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "true");
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":-0.5e-3}", &e), ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "-0.5e-3");
}

static void test_builders(void **state)
{
    static const char prefix[] = "{\"conn_id\":\"client-s1-0123\",\"frame\":";
    static const char notice[] = "{\"conn_id\":\"client-s1-0123\",\"close_code\":1001}";
    char out[256];
    (void)state;
    size_t n = envelope_wrap_prefix(out, sizeof out, "client-s1-0123", 14);
    assert_int_equal(n, strlen(prefix));
    assert_memory_equal(out, prefix, n);
    n = envelope_close_notice(out, sizeof out, "client-s1-0123", 14, 1001);
    assert_int_equal(n, strlen(notice));
    assert_memory_equal(out, notice, n);
    /* the notice parses back as a close directive without a frame */
    struct envelope e;
    assert_int_equal(parse_n(out, n, &e), ENVELOPE_ROUTE);
    assert_int_equal(e.close_code, 1001);
    assert_null(e.frame);
    /* conn_id is JSON-escaped as Go would */
    n = envelope_close_notice(out, sizeof out, "client-<\"x>-1", 13, 65535);
    out[n] = '\0';
    assert_string_equal(out, "{\"conn_id\":\"client-\\u003c\\\"x\\u003e-1\",\"close_code\":65535}");
    n = envelope_close_notice(out, sizeof out, "c", 1, 0);
    out[n] = '\0';
    assert_string_equal(out, "{\"conn_id\":\"c\",\"close_code\":0}");
    /* an exact fit works, one byte less returns 0 */
    assert_int_equal(envelope_wrap_prefix(out, strlen(prefix), "client-s1-0123", 14),
                     strlen(prefix));
    assert_int_equal(envelope_wrap_prefix(out, strlen(prefix) - 1, "client-s1-0123", 14), 0);
    assert_int_equal(envelope_close_notice(out, strlen(notice), "client-s1-0123", 14, 1001),
                     strlen(notice));
    assert_int_equal(envelope_close_notice(out, strlen(notice) - 1, "client-s1-0123", 14, 1001), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_bytewise_opacity),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_malformed_detail),
        cmocka_unit_test(test_close_directive),
        cmocka_unit_test(test_close_code_values),
        cmocka_unit_test(test_wake),
        cmocka_unit_test(test_case_insensitive_keys),
        cmocka_unit_test(test_duplicate_keys_and_null),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_escaped_conn_id),
        cmocka_unit_test(test_whitespace_everywhere),
        cmocka_unit_test(test_builders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
