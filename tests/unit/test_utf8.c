/* test_utf8.c — UTF-8 validation: the RFC 3629 table (overlongs,
 * surrogates, range), and the same verdict for every split of the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "codec/utf8.h"

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
    {"\xc2\x80", 2, true},         /* smallest 2-byte */
    {"\xe0\xa0\x80", 3, true},     /* smallest 3-byte */
    {"\xf0\x90\x80\x80", 4, true}, /* smallest 4-byte */
    {"\xef\xbf\xbf", 3, true},     /* U+FFFF */
    {"\xe0\x80\x80", 3, false},    /* overlong U+0000 */
    {"\xf4\x8f\xbf\xc0", 4, false},
    {"\xf8\x88\x80\x80\x80", 5, false},
    {"\xc3\xa9\xa9", 3, false}, /* continuation after a complete character */
    {"0123456\x80", 8, false},  /* stray byte at the end of an 8-byte word */
    {"01234567\xc3", 9, false}, /* truncated after the fast path */
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

/* An independent, obvious validator: decode each code point, then apply the
 * RFC 3629 rules to the value. */
static bool slow_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i++];
        size_t more;
        uint32_t cp, min;
        if (b < 0x80)
            continue;
        if ((b & 0xE0) == 0xC0)
            more = 1, cp = b & 0x1F, min = 0x80;
        else if ((b & 0xF0) == 0xE0)
            more = 2, cp = b & 0x0F, min = 0x800;
        else if ((b & 0xF8) == 0xF0)
            more = 3, cp = b & 0x07, min = 0x10000;
        else
            return false;
        for (; more > 0; more--) {
            if (i == n || (p[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i++] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
    }
    return true;
}

/* Every sequence of up to three bytes, and every four-byte one whose tail
 * bytes come from the interesting edges, agrees with slow_valid. */
static void test_exhaustive_against_reference(void **state)
{
    static const uint8_t edge[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    uint8_t b[4];
    (void)state;
    for (uint32_t v = 0; v < (1u << 24); v++) {
        b[0] = (uint8_t)(v >> 16), b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)v;
        size_t n = b[0] < 0x80 ? 1 + (v & 1) : 3; /* ASCII leads: sample shorter lengths */
        if (utf8_valid(b, n) != slow_valid(b, n))
            fail_msg("%02x %02x %02x (n=%zu)", b[0], b[1], b[2], n);
        if (b[0] >= 0xC0 && utf8_valid(b, 2) != slow_valid(b, 2))
            fail_msg("%02x %02x", b[0], b[1]);
    }
    for (uint32_t lead = 0xE0; lead <= 0xFF; lead++)
        for (uint32_t c = 0; c < 256 * 256; c++)
            for (size_t k = 0; k < sizeof edge; k++) {
                b[0] = (uint8_t)lead, b[1] = (uint8_t)(c >> 8), b[2] = (uint8_t)c, b[3] = edge[k];
                if (utf8_valid(b, 4) != slow_valid(b, 4))
                    fail_msg("%02x %02x %02x %02x", b[0], b[1], b[2], b[3]);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_every_split_agrees),
        cmocka_unit_test(test_reject_is_sticky),
        cmocka_unit_test(test_exhaustive_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
