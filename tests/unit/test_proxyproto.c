/* test_proxyproto.c — the PROXY v2 reader: TCP4 and TCP6 accepted (with and
 * without TLVs, with trailing bytes that belong to TLS), every other
 * version, command and family rejected, early rejection of foreign bytes,
 * and identical results whole, split at every offset and byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "codec/proxyproto.h"

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a header: ver_cmd, fam, then the address block (src, dst, ports)
 * for the family and tlv_len TLV bytes. Returns its length. */
static size_t build(uint8_t *out, uint8_t ver_cmd, uint8_t fam, size_t tlv_len)
{
    size_t alen = (fam & 0xF0) == 0x20 ? 36 : 12, len = alen + tlv_len, n = 0;
    memcpy(out, SIG, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    n = 16;
    if (alen == 12) {
        inet_pton(AF_INET, "203.0.113.7", out + n);
        inet_pton(AF_INET, "10.0.0.1", out + n + 4);
        out[n + 8] = 0x9C, out[n + 9] = 0x40; /* 40000 */
        out[n + 10] = 0x01, out[n + 11] = 0xBB;
    } else {
        inet_pton(AF_INET6, "2001:db8::1", out + n);
        inet_pton(AF_INET6, "2001:db8::2", out + n + 16);
        out[n + 32] = 0x00, out[n + 33] = 0x50; /* 80 */
        out[n + 34] = 0x01, out[n + 35] = 0xBB;
    }
    n += alen;
    for (size_t i = 0; i < tlv_len; i++)
        out[n++] = (uint8_t)(i * 7 + 1);
    return n;
}

/* Feeds buf in chunks of step (0: whole). Returns the final result and the
 * total bytes the header used in *used. */
static ssize_t feed_split(struct proxyproto *p, const uint8_t *buf, size_t len, size_t first,
                          size_t step, size_t *used)
{
    size_t off = 0;
    *used = 0;
    proxyproto_init(p);
    while (off < len) {
        size_t n = off == 0 && first ? first : step ? step : len - off;
        if (n > len - off)
            n = len - off;
        ssize_t r = proxyproto_feed(p, buf + off, n);
        if (r < 0)
            return r;
        if (r > 0) {
            *used = off + (size_t)r;
            return r;
        }
        off += n;
    }
    return 0;
}

static void check_all_splits(const uint8_t *buf, size_t len, ssize_t want, size_t want_used)
{
    struct proxyproto p;
    size_t used;
    ssize_t r = feed_split(&p, buf, len, 0, 0, &used);
    assert_true((r > 0) == (want > 0));
    if (want < 0)
        assert_int_equal(r, want);
    if (want > 0)
        assert_int_equal(used, want_used);
    for (size_t cut = 1; cut < len; cut++) {
        r = feed_split(&p, buf, len, cut, len, &used);
        assert_true((r > 0) == (want > 0));
        if (want < 0)
            assert_int_equal(r, want);
        if (want > 0)
            assert_int_equal(used, want_used);
    }
    r = feed_split(&p, buf, len, 0, 1, &used);
    if (want < 0)
        assert_int_equal(r, want);
    if (want > 0)
        assert_int_equal(used, want_used);
}

static void test_tcp4(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = build(buf, 0x21, 0x11, 0);
    memcpy(buf + n, "\x16\x03\x01", 3); /* a ClientHello follows in the same read */
    struct proxyproto p;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, buf, n + 3), (ssize_t)n);
    assert_int_equal(p.family, AF_INET);
    char s[64];
    inet_ntop(AF_INET, p.src, s, sizeof s);
    assert_string_equal(s, "203.0.113.7");
    assert_int_equal(p.src_port, 40000);
    check_all_splits(buf, n + 3, 1, n);
}

static void test_tcp6_with_tlvs(void **state)
{
    (void)state;
    uint8_t buf[2048];
    size_t n = build(buf, 0x21, 0x21, 1000);
    struct proxyproto p;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, buf, n), (ssize_t)n);
    assert_int_equal(p.family, AF_INET6);
    char s[64];
    inet_ntop(AF_INET6, p.src, s, sizeof s);
    assert_string_equal(s, "2001:db8::1");
    assert_int_equal(p.src_port, 80);
    check_all_splits(buf, n, 1, n);
}

static void test_longer_address_block_is_tlvs(void **state)
{
    (void)state;
    /* A TCP4 header whose length covers more than 12 bytes: the rest is
     * TLV space and is skipped. */
    uint8_t buf[64];
    size_t n = build(buf, 0x21, 0x11, 5);
    check_all_splits(buf, n, 1, n);
}

static void test_rejections(void **state)
{
    (void)state;
    uint8_t buf[128];
    static const struct {
        uint8_t ver_cmd, fam;
        ssize_t want;
    } rows[] = {
        {0x20, 0x11, PP_E_COMMAND}, /* LOCAL */
        {0x22, 0x11, PP_E_COMMAND}, /* unknown command */
        {0x11, 0x11, PP_E_VERSION}, /* version 1 in binary form */
        {0x31, 0x11, PP_E_VERSION}, /* version 3 */
        {0x21, 0x00, PP_E_FAMILY},  /* UNSPEC */
        {0x21, 0x12, PP_E_FAMILY},  /* UDP over IPv4 */
        {0x21, 0x22, PP_E_FAMILY},  /* UDP over IPv6 */
        {0x21, 0x31, PP_E_FAMILY},  /* UNIX stream */
        {0x21, 0x32, PP_E_FAMILY},  /* UNIX datagram */
        {0x21, 0x10, PP_E_FAMILY},  /* IPv4, UNSPEC transport */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t n = build(buf, rows[i].ver_cmd, rows[i].fam, 0);
        check_all_splits(buf, n, rows[i].want, 0);
    }
}

static void test_short_address_block(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = build(buf, 0x21, 0x11, 0);
    buf[15] = 11; /* TCP4 needs 12 */
    check_all_splits(buf, n, PP_E_LENGTH, 0);
    n = build(buf, 0x21, 0x21, 0);
    buf[15] = 35; /* TCP6 needs 36 */
    check_all_splits(buf, n, PP_E_LENGTH, 0);
}

static void test_foreign_bytes_rejected_at_once(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        "PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\n", /* v1 text */
        "GET / HTTP/1.1\r\n\r\n", "\x16\x03\x01\x00\x10",
        "\r\n\r\n\r\n", /* right start, wrong fifth byte */
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct proxyproto p;
        proxyproto_init(&p);
        assert_int_equal(proxyproto_feed(&p, (const uint8_t *)inputs[i], strlen(inputs[i])),
                         PP_E_SIGNATURE);
    }
    /* one byte is enough to tell */
    struct proxyproto p;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, (const uint8_t *)"P", 1), PP_E_SIGNATURE);
}

static void test_need_more(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = build(buf, 0x21, 0x11, 0);
    struct proxyproto p;
    proxyproto_init(&p);
    assert_int_equal(proxyproto_feed(&p, buf, 0), 0);
    for (size_t i = 0; i + 1 < n; i++)
        assert_int_equal(proxyproto_feed(&p, buf + i, 1), 0);
    assert_int_equal(proxyproto_feed(&p, buf + n - 1, 1), 1);
}

static void test_largest_header(void **state)
{
    (void)state;
    static uint8_t buf[16 + 65535 + 4];
    size_t n = build(buf, 0x21, 0x21, 65535 - 36);
    assert_int_equal(n, 16 + 65535);
    check_all_splits(buf, n, 1, n);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_non_null(strstr(proxyproto_strerror(PP_E_COMMAND), "PROXY"));
    assert_string_equal(proxyproto_strerror(0), "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp4),
        cmocka_unit_test(test_tcp6_with_tlvs),
        cmocka_unit_test(test_longer_address_block_is_tlvs),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_short_address_block),
        cmocka_unit_test(test_foreign_bytes_rejected_at_once),
        cmocka_unit_test(test_need_more),
        cmocka_unit_test(test_largest_header),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
