/* test_envelope.c — the envelope cases of spec §15 (envelope_test.go) with
 * Go encoding/json field rules, plus the two frames the relay builds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "envelope.h"

static char scratch[4096];

static enum envelope_kind parse(const char *s, struct envelope *env)
{
    char detail[160];
    return envelope_parse((const uint8_t *)s, strlen(s), env, scratch, sizeof scratch, detail,
                          sizeof detail);
}

static void expect_span(const uint8_t *p, size_t n, const char *want)
{
    assert_non_null(p);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

static void test_route_bytewise_opacity(void **state)
{
    struct envelope e;
    (void)state;
    const char *frames[] = {"{ \"a\" : [1, 2,\n 3] }",
                            "\"str with } and \\\" and {\"",
                            "42",
                            "[{\"x\":{\"y\":[]}}]",
                            "true",
                            "\"\\u00e9\""};
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        char doc[256];
        snprintf(doc, sizeof doc, "{\"conn_id\":\"client-s-00\",\"frame\": %s }", frames[i]);
        assert_int_equal(parse(doc, &e), ENVELOPE_ROUTE);
        expect_span(e.frame, e.frame_len, frames[i]);
        assert_int_equal(e.conn_id_len, 11);
        assert_memory_equal(e.conn_id, "client-s-00", 11);
        assert_int_equal(e.close_code, 0);
    }
}

static void test_rejections(void **state)
{
    struct envelope e;
    static const struct {
        const char *doc;
        enum envelope_kind kind;
    } rows[] = {
        {"not json", ENVELOPE_MALFORMED},
        {"[1,2]", ENVELOPE_MALFORMED},
        {"\"x\"", ENVELOPE_MALFORMED},
        {"{\"conn_id\":5,\"frame\":1}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1} x", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1", ENVELOPE_MALFORMED},
        {"null", ENVELOPE_MISSING_CONN_ID},
        {"{}", ENVELOPE_MISSING_CONN_ID},
        {"{\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id\":\"\",\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id\":null,\"frame\":1}", ENVELOPE_MISSING_CONN_ID},
        {"{\"conn_id\":\"c\"}", ENVELOPE_MISSING_FRAME},
        {"{\"conn_id\":\"c\",\"frame\":null}", ENVELOPE_MISSING_FRAME},
        {"{\"conn_id\":\"c\",\"frame\":1,\"frame\":null}", ENVELOPE_MISSING_FRAME},
        {"{\"conn_id\":\"c\",\"frame\":1,\"close_code\":\"1000\"}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1,\"close_code\":-1}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1,\"close_code\":65536}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1,\"close_code\":1000.0}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1,\"close_code\":1e3}", ENVELOPE_MALFORMED},
        {"{\"conn_id\":\"c\",\"frame\":1,\"close_code\":true}", ENVELOPE_MALFORMED},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(parse(rows[i].doc, &e), rows[i].kind);
    assert_string_equal(envelope_error(ENVELOPE_MALFORMED), "relay: malformed routing envelope");
    assert_string_equal(envelope_error(ENVELOPE_MISSING_CONN_ID),
                        "relay: routing envelope missing conn_id");
    assert_string_equal(envelope_error(ENVELOPE_MISSING_FRAME),
                        "relay: routing envelope missing frame");
    assert_null(envelope_error(ENVELOPE_ROUTE));
}

static void test_malformed_detail(void **state)
{
    struct envelope e;
    char detail[160];
    (void)state;
    envelope_parse((const uint8_t *)"[1]", 3, &e, scratch, sizeof scratch, detail, sizeof detail);
    assert_string_equal(detail,
                        "json: cannot unmarshal array into Go value of type relay.Envelope");
}

static void test_close_directive(void **state)
{
    struct envelope e;
    (void)state;
    assert_int_equal(parse("{\"conn_id\":\"c\",\"close_code\":4401}", &e), ENVELOPE_ROUTE);
    assert_int_equal(e.close_code, 4401);
    assert_null(e.frame);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":null,\"close_code\":65535}", &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(e.close_code, 65535);
    assert_null(e.frame);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":{\"bye\":1},\"close_code\":4403}", &e),
                     ENVELOPE_ROUTE);
    expect_span(e.frame, e.frame_len, "{\"bye\":1}");
    assert_int_equal(parse("{\"close_code\":4401}", &e), ENVELOPE_MISSING_CONN_ID);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1,\"close_code\":0}", &e), ENVELOPE_ROUTE);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"close_code\":0}", &e), ENVELOPE_MISSING_FRAME);
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1,\"close_code\":null}", &e),
                     ENVELOPE_ROUTE);
}

static void test_wake(void **state)
{
    struct envelope e;
    (void)state;
    assert_int_equal(parse("{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"t\"}}", &e),
                     ENVELOPE_WAKE);
    expect_span(e.push_wake, e.push_wake_len, "{\"platform\":\"fcm\",\"token\":\"t\"}");
    assert_int_equal(parse("{\"push_wake\":\"garbage\",\"frame\":1}", &e), ENVELOPE_WAKE);
    assert_int_equal(parse("{\"push_wake\":null}", &e), ENVELOPE_MISSING_CONN_ID);
    /* with a conn_id the envelope routes and push_wake is ignored */
    assert_int_equal(parse("{\"conn_id\":\"c\",\"frame\":1,\"push_wake\":[1]}", &e),
                     ENVELOPE_ROUTE);
}

static void test_go_decoder_quirks(void **state)
{
    struct envelope e;
    (void)state;
    /* case-insensitive keys, escaped keys, last duplicate wins */
    assert_int_equal(parse("{\"CONN_ID\":\"a\",\"Frame\":1}", &e), ENVELOPE_ROUTE);
    assert_int_equal(parse("{\"conn\\u005fid\":\"a\",\"frame\":1}", &e), ENVELOPE_ROUTE);
    assert_int_equal(parse("{\"conn_id\":\"a\",\"conn_id\":\"bb\",\"frame\":1,\"frame\":[2]}", &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(e.conn_id_len, 2);
    expect_span(e.frame, e.frame_len, "[2]");
    /* null leaves a string unchanged */
    assert_int_equal(parse("{\"conn_id\":\"a\",\"conn_id\":null,\"frame\":1}", &e), ENVELOPE_ROUTE);
    assert_int_equal(e.conn_id_len, 1);
    /* unknown keys with nested values are skipped */
    assert_int_equal(
        parse("{\"x\":{\"conn_id\":\"no\"},\"y\":[\"}\"],\"conn_id\":\"c\",\"frame\":0}", &e),
        ENVELOPE_ROUTE);
    assert_memory_equal(e.conn_id, "c", 1);
}

static void test_escaped_conn_id(void **state)
{
    struct envelope e;
    (void)state;
    assert_int_equal(parse("{\"conn_id\":\"client-\\u0073\\\"1-\\ud83d\\ude00\\ud800\","
                           "\"frame\":1}",
                           &e),
                     ENVELOPE_ROUTE);
    assert_int_equal(e.conn_id_len, 18);
    assert_memory_equal(e.conn_id, "client-s\"1-\xf0\x9f\x98\x80\xef\xbf\xbd", 18);
}

static void test_builders(void **state)
{
    char out[256];
    (void)state;
    size_t n = envelope_wrap_prefix(out, sizeof out, "client-s1-0123", 14);
    assert_int_equal(n, strlen("{\"conn_id\":\"client-s1-0123\",\"frame\":"));
    assert_memory_equal(out, "{\"conn_id\":\"client-s1-0123\",\"frame\":", n);
    n = envelope_close_notice(out, sizeof out, "client-s1-0123", 14, 1001);
    out[n] = '\0';
    assert_string_equal(out, "{\"conn_id\":\"client-s1-0123\",\"close_code\":1001}");
    n = envelope_close_notice(out, sizeof out, "client-<\"x>-1", 13, 65535);
    out[n] = '\0';
    assert_string_equal(out, "{\"conn_id\":\"client-\\u003c\\\"x\\u003e-1\",\"close_code\":65535}");
    assert_int_equal(envelope_wrap_prefix(out, 10, "client-s1-0123", 14), 0);
    assert_int_equal(envelope_close_notice(out, 20, "client-s1-0123", 14, 1000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_bytewise_opacity),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_malformed_detail),
        cmocka_unit_test(test_close_directive),
        cmocka_unit_test(test_wake),
        cmocka_unit_test(test_go_decoder_quirks),
        cmocka_unit_test(test_escaped_conn_id),
        cmocka_unit_test(test_builders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
