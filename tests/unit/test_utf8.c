/* test_utf8.c — UTF-8 validation: the RFC 3629 table (overlongs,
 * surrogates, range), and the same verdict for every split of the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "utf8.h"

static const struct {
    const char *s;
    size_t n;
    bool ok;
} rows[] = {
    {"", 0, true},
    {"plain ascii, long enough to take the 8-byte path", 48, true},
    {"\xc3\xa9", 2, true},
    {"\xe2\x82\xac", 3, true},
    {"\xf0\x9f\x98\x80", 4, true},
    {"\xf4\x8f\xbf\xbf", 4, true}, /* U+10FFFF */
    {"\xed\x9f\xbf", 3, true},     /* U+D7FF */
    {"\xee\x80\x80", 3, true},     /* U+E000 */
    {"\xc0\xaf", 2, false},        /* overlong */
    {"\xc1\xbf", 2, false},
    {"\xe0\x9f\xbf", 3, false},     /* overlong 3-byte */
    {"\xf0\x8f\xbf\xbf", 4, false}, /* overlong 4-byte */
    {"\xed\xa0\x80", 3, false},     /* U+D800 */
    {"\xed\xbf\xbf", 3, false},     /* U+DFFF */
    {"\xf4\x90\x80\x80", 4, false}, /* > U+10FFFF */
    {"\xf5\x80\x80\x80", 4, false},
    {"\xff", 1, false},
    {"\x80", 1, false}, /* stray continuation */
    {"\xc3", 1, false}, /* truncated */
    {"\xe2\x82", 2, false},
    {"a\xc3(b", 4, false},
    {"abcdefgh\xc3\xa9ijklmnop\xe2\x82\xac", 21, true},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(utf8_valid((const uint8_t *)rows[i].s, rows[i].n), rows[i].ok);
}

static void test_every_split_agrees(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const uint8_t *p = (const uint8_t *)rows[i].s;
        size_t n = rows[i].n;
        for (size_t cut = 0; cut <= n; cut++) {
            uint32_t st = utf8_step(UTF8_ACCEPT, p, cut);
            st = utf8_step(st, p + cut, n - cut);
            assert_int_equal(st == UTF8_ACCEPT, rows[i].ok);
        }
        uint32_t st = UTF8_ACCEPT;
        for (size_t k = 0; k < n; k++)
            st = utf8_step(st, p + k, 1);
        assert_int_equal(st == UTF8_ACCEPT, rows[i].ok);
    }
}

static void test_reject_is_sticky(void **state)
{
    (void)state;
    uint32_t st = utf8_step(UTF8_ACCEPT, (const uint8_t *)"\xff", 1);
    assert_int_equal(st, UTF8_REJECT);
    assert_int_equal(utf8_step(st, (const uint8_t *)"abc", 3), UTF8_REJECT);
    st = utf8_step(UTF8_ACCEPT, (const uint8_t *)"\xe2", 1);
    assert_true(st != UTF8_ACCEPT && st != UTF8_REJECT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_every_split_agrees),
        cmocka_unit_test(test_reject_is_sticky),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
