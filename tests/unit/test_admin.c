/* test_admin.c — the pure parts of the admin endpoints: percent-decoding
 * of server-ids and query values, query lookup, and the JSON string form
 * of arbitrary server-id bytes. The endpoints themselves run against the
 * real binary in tests/e2e/test_admin.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ops/admin.h"

static void test_pct_decode(void **state)
{
    size_t n;
    (void)state;
    char *s = admin_pct_decode("a%20b%2Fc+d", 11, false, &n);
    assert_string_equal(s, "a b/c+d");
    assert_int_equal(n, 7);
    free(s);
    s = admin_pct_decode("a+b%2b", 6, true, &n);
    assert_string_equal(s, "a b+");
    free(s);
    s = admin_pct_decode("%00x", 4, false, &n);
    assert_int_equal(n, 2);
    assert_int_equal(s[0], '\0');
    free(s);
    static const char *const bad[] = {"%", "%2", "a%zz", "%g0", "x%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(admin_pct_decode(bad[i], strlen(bad[i]), false, &n));
}

static void test_query(void **state)
{
    const char *q = "limit=5&after=s%201&x=&afterx=no";
    size_t n;
    bool bad = false;
    (void)state;
    char *v = admin_query_param(q, strlen(q), "after", &n, &bad);
    assert_string_equal(v, "s 1");
    free(v);
    v = admin_query_param(q, strlen(q), "limit", &n, &bad);
    assert_string_equal(v, "5");
    free(v);
    v = admin_query_param(q, strlen(q), "x", &n, &bad); /* empty value: "" (from the start) */
    assert_string_equal(v, "");
    free(v);
    assert_null(admin_query_param(q, strlen(q), "missing", &n, &bad));
    assert_false(bad);
    assert_null(admin_query_param("after=%q", 8, "after", &n, &bad));
    assert_true(bad);
}

static void test_json_string(void **state)
{
    char out[64];
    (void)state;
    admin_json_string(out, sizeof out, "s\"1\\", 4);
    assert_string_equal(out, "\"s\\\"1\\\\\"");
    admin_json_string(out, sizeof out, "a\nb\x7f", 4);
    assert_string_equal(out, "\"a\\u000ab\\u007f\"");
    admin_json_string(out, sizeof out, "caf\xc3\xa9", 5); /* valid UTF-8 kept */
    assert_string_equal(out, "\"caf\xc3\xa9\"");
    admin_json_string(out, sizeof out, "x\xff", 2); /* invalid: byte escaped */
    assert_string_equal(out, "\"x\\u00ff\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_json_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
