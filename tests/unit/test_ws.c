/* test_ws.c — the frame codec: every protocol rule, each script decoded
 * whole, split at every offset and one byte at a time with identical
 * results, the size cap boundary, and the encoder round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

static const uint8_t MASK[4] = {0x12, 0x34, 0x56, 0x78};

/* Appends a masked client frame to buf. */
static size_t put_frame(uint8_t *buf, bool fin, uint8_t op, const void *payload, size_t len)
{
    size_t h = ws_frame_header(buf, fin, op, len, MASK);
    memcpy(buf + h, payload, len);
    ws_mask(buf + h, len, MASK, 0);
    return h + len;
}

/* Decodes in[0..n) fed in chunks of `step` (0 = whole) and renders what
 * came out as text: complete messages, control frames, the error. */
static void trace(const uint8_t *in, size_t n, size_t step, uint64_t cap, char *out, size_t outcap)
{
    struct ws_decoder d;
    uint8_t *copy = malloc(n ? n : 1);
    char msg[70000];
    size_t mlen = 0, olen = 0;
    memcpy(copy, in, n);
    ws_decoder_init(&d, cap, true);
    out[0] = '\0';
    for (size_t off = 0; off < n || n == 0;) {
        size_t chunk = step ? (n - off < step ? n - off : step) : n - off;
        uint8_t *p = copy + off;
        size_t left = chunk;
        for (;;) {
            struct ws_event ev;
            size_t used = ws_decoder_feed(&d, p, left, &ev);
            p += used;
            left -= used;
            if (ev.type == WS_EV_NONE)
                break;
            if (ev.type == WS_EV_ERROR) {
                olen += (size_t)snprintf(out + olen, outcap - olen, "E%u;", ev.close_code);
                free(copy);
                return;
            }
            if (ev.type == WS_EV_CONTROL) {
                olen += (size_t)snprintf(out + olen, outcap - olen, "C%u:%u:%.*s;", ev.opcode,
                                         ev.close_code, (int)ev.len, (const char *)ev.data);
                continue;
            }
            if (ev.first)
                mlen = 0;
            memcpy(msg + mlen, ev.data, ev.len);
            mlen += ev.len;
            if (ev.last)
                olen += (size_t)snprintf(out + olen, outcap - olen, "M%u:%.*s;", ev.opcode,
                                         (int)mlen, msg);
        }
        off += chunk;
        if (n == 0)
            break;
    }
    free(copy);
}

/* Asserts the same trace for whole input, every split and byte-by-byte. */
static void check_all_splits(const uint8_t *in, size_t n, uint64_t cap, const char *want)
{
    char got[1 << 17];
    trace(in, n, 0, cap, got, sizeof got);
    assert_string_equal(got, want);
    trace(in, n, 1, cap, got, sizeof got);
    assert_string_equal(got, want);
    for (size_t step = 2; step < n; step++) { /* chunks of every size */
        trace(in, n, step, cap, got, sizeof got);
        assert_string_equal(got, want);
    }
}

static void test_simple_text_and_binary(void **state)
{
    uint8_t buf[256];
    size_t n = 0;
    (void)state;
    n += put_frame(buf + n, true, WS_OP_TEXT, "{\"a\":1}", 7);
    n += put_frame(buf + n, true, WS_OP_BINARY, "\xff\x00", 2);
    n += put_frame(buf + n, true, WS_OP_TEXT, "", 0);
    check_all_splits(buf, n, 0, "M1:{\"a\":1};M2:\xff;M1:;");
}

static void test_fragmented_with_interleaved_ping(void **state)
{
    uint8_t buf[256];
    size_t n = 0;
    (void)state;
    n += put_frame(buf + n, false, WS_OP_TEXT, "he", 2);
    n += put_frame(buf + n, true, WS_OP_PING, "p1", 2);
    n += put_frame(buf + n, false, WS_OP_CONT, "\xc3", 1); /* é split across fragments */
    n += put_frame(buf + n, false, WS_OP_CONT, "", 0);
    n += put_frame(buf + n, true, WS_OP_CONT, "\xa9!", 2);
    n += put_frame(buf + n, true, WS_OP_PONG, "", 0);
    check_all_splits(buf, n, 0, "C9:0:p1;M1:he\xc3\xa9!;C10:0:;");
}

static void test_close_frames(void **state)
{
    uint8_t buf[256];
    size_t n;
    (void)state;
    n = put_frame(buf, true, WS_OP_CLOSE,
                  "\x03\xe8"
                  "bye",
                  5);
    check_all_splits(buf, n, 0,
                     "C8:1000:\x03\xe8"
                     "bye;");
    n = put_frame(buf, true, WS_OP_CLOSE, "", 0);
    check_all_splits(buf, n, 0, "C8:1005:;");
    n = put_frame(buf, true, WS_OP_CLOSE, "\x03", 1);
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, true, WS_OP_CLOSE, "\x03\xed", 2); /* 1005 may not be sent */
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, true, WS_OP_CLOSE, "\x0f\xa0\xff", 3); /* 4000, reason not UTF-8 */
    check_all_splits(buf, n, 0, "E1007;");
}

static void test_protocol_errors(void **state)
{
    uint8_t buf[512];
    size_t n;
    (void)state;
    /* unmasked */
    buf[0] = 0x81, buf[1] = 0x01, buf[2] = 'x';
    check_all_splits(buf, 3, 0, "E1002;");
    /* RSV1, RSV2, RSV3 */
    for (int rsv = 0x10; rsv <= 0x40; rsv <<= 1) {
        n = put_frame(buf, true, WS_OP_TEXT, "x", 1);
        buf[0] |= (uint8_t)rsv;
        check_all_splits(buf, n, 0, "E1002;");
    }
    /* reserved opcodes */
    for (uint8_t op = 3; op <= 0xF; op++) {
        if (op >= 8 && op <= 0xA)
            continue;
        n = put_frame(buf, true, op, "", 0);
        check_all_splits(buf, n, 0, "E1002;");
    }
    /* control frame too long, and fragmented control frame */
    uint8_t big[126] = {0};
    n = put_frame(buf, true, WS_OP_PING, big, 126);
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, false, WS_OP_PING, "", 0);
    check_all_splits(buf, n, 0, "E1002;");
    /* continuation without a message, and a new message inside one */
    n = put_frame(buf, true, WS_OP_CONT, "x", 1);
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, false, WS_OP_TEXT, "a", 1);
    n += put_frame(buf + n, true, WS_OP_TEXT, "b", 1);
    check_all_splits(buf, n, 0, "E1002;");
    /* 64-bit length with the top bit set */
    uint8_t huge[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    check_all_splits(huge, sizeof huge, 0, "E1002;");
}

static void test_error_is_sticky_and_consumes_nothing(void **state)
{
    uint8_t buf[8] = {0x81, 0x01, 'x', 0x81, 0x81, 0, 0, 0};
    struct ws_decoder d;
    struct ws_event ev;
    (void)state;
    ws_decoder_init(&d, 0, true);
    ws_decoder_feed(&d, buf, sizeof buf, &ev);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ws_decoder_feed(&d, buf, sizeof buf, &ev), 0);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, 1002);
}

static void test_utf8_rules(void **state)
{
    uint8_t buf[64];
    size_t n;
    (void)state;
    n = put_frame(buf, true, WS_OP_TEXT, "\xff", 1);
    check_all_splits(buf, n, 0, "E1007;");
    n = put_frame(buf, true, WS_OP_TEXT, "\xe2\x82", 2); /* truncated at message end */
    check_all_splits(buf, n, 0, "E1007;");
    n = put_frame(buf, true, WS_OP_TEXT, "\xed\xa0\x80", 3); /* surrogate */
    check_all_splits(buf, n, 0, "E1007;");
    n = put_frame(buf, true, WS_OP_BINARY, "\xff", 1); /* binary is not checked */
    check_all_splits(buf, n, 0, "M2:\xff;");
    n = put_frame(buf, true, WS_OP_TEXT, "\xf0\x9f\x98\x80", 4);
    check_all_splits(buf, n, 0, "M1:\xf0\x9f\x98\x80;");
}

static void test_size_cap(void **state)
{
    static uint8_t buf[70000];
    static char payload[66000];
    size_t n;
    (void)state;
    memset(payload, 'a', sizeof payload);
    n = put_frame(buf, true, WS_OP_TEXT, payload, 100);
    check_all_splits(buf, n, 100,
                     "M1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;");
    n = put_frame(buf, true, WS_OP_TEXT, payload, 101);
    check_all_splits(buf, n, 100, "E1009;");
    /* across fragments */
    n = put_frame(buf, false, WS_OP_TEXT, payload, 60);
    n += put_frame(buf + n, true, WS_OP_CONT, payload, 41);
    char got[512];
    trace(buf, n, 0, 100, got, sizeof got);
    assert_string_equal(got, "E1009;");
    /* 16- and 64-bit lengths decode */
    n = put_frame(buf, true, WS_OP_BINARY, payload, 300);
    trace(buf, n, 7, 0, got, sizeof got);
    assert_int_equal(strlen(got), 3 + 300 + 1);
    n = put_frame(buf, true, WS_OP_BINARY, payload, 65536);
    assert_int_equal(buf[1] & 0x7F, 127);
    static char big[70000];
    trace(buf, n, 4096, 0, big, sizeof big);
    assert_int_equal(strlen(big), 3 + 65536 + 1);
}

static void test_busy_and_in_message(void **state)
{
    uint8_t buf[64];
    struct ws_decoder d;
    struct ws_event ev;
    (void)state;
    ws_decoder_init(&d, 0, true);
    assert_false(ws_decoder_busy(&d));
    size_t n = put_frame(buf, false, WS_OP_TEXT, "ab", 2);
    ws_decoder_feed(&d, buf, 1, &ev); /* half a header */
    assert_true(ws_decoder_busy(&d));
    assert_false(ws_decoder_in_message(&d));
    size_t used = 1;
    while (used < n) {
        size_t u = ws_decoder_feed(&d, buf + used, n - used, &ev);
        used += u;
    }
    assert_true(ws_decoder_in_message(&d));
    n = put_frame(buf, true, WS_OP_CONT, "c", 1);
    used = 0;
    do {
        used += ws_decoder_feed(&d, buf + used, n - used, &ev);
    } while (ev.type != WS_EV_NONE);
    assert_false(ws_decoder_in_message(&d));
    assert_false(ws_decoder_busy(&d));
}

static void test_encoder(void **state)
{
    uint8_t h[WS_MAX_HEADER];
    (void)state;
    assert_int_equal(ws_frame_header(h, true, WS_OP_TEXT, 5, NULL), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 5);
    assert_int_equal(ws_frame_header(h, true, WS_OP_TEXT, 125, NULL), 2);
    assert_int_equal(ws_frame_header(h, true, WS_OP_TEXT, 126, NULL), 4);
    assert_int_equal(h[1], 126);
    assert_int_equal(ws_frame_header(h, false, WS_OP_BINARY, 65535, NULL), 4);
    assert_int_equal(h[0], 0x02);
    assert_int_equal(ws_frame_header(h, true, WS_OP_TEXT, 65536, NULL), 10);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[7], 1);
    assert_int_equal(ws_frame_header(h, true, WS_OP_PING, 1, MASK), 6);
    assert_int_equal(h[1], 0x81);
    assert_memory_equal(h + 2, MASK, 4);
    /* masking with offsets equals masking in one go */
    uint8_t a[37], b[37];
    for (int i = 0; i < 37; i++)
        a[i] = b[i] = (uint8_t)i;
    ws_mask(a, 37, MASK, 0);
    ws_mask(b, 5, MASK, 0);
    ws_mask(b + 5, 32, MASK, 5);
    assert_memory_equal(a, b, 37);
}

static void test_close_payload_and_codes(void **state)
{
    uint8_t out[WS_MAX_CONTROL];
    char reason[200];
    (void)state;
    assert_int_equal(ws_close_payload(out, 0, "x"), 0);
    assert_int_equal(ws_close_payload(out, 1011, "heartbeat timeout"), 19);
    assert_int_equal(out[0], 0x03);
    assert_int_equal(out[1], 0xF3);
    assert_memory_equal(out + 2, "heartbeat timeout", 17);
    memset(reason, 'r', sizeof reason);
    reason[199] = '\0';
    assert_int_equal(ws_close_payload(out, 1000, reason), 125);
    /* truncation never splits a UTF-8 sequence */
    memset(reason, 0, sizeof reason);
    for (int i = 0; i < 60; i++)
        memcpy(reason + 2 * i, "\xc3\xa9", 2);
    reason[120] = 'x';
    memcpy(reason + 121, "\xe2\x82\xac", 3);
    assert_int_equal(ws_close_payload(out, 1000, reason), 2 + 121);
    static const struct {
        uint16_t code;
        bool ok;
    } rows[] = {{999, false},  {1000, true}, {1003, true}, {1004, false}, {1005, false},
                {1006, false}, {1007, true}, {1011, true}, {1014, true},  {1015, false},
                {2999, false}, {3000, true}, {4999, true}, {5000, false}, {0, false}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(ws_close_code_valid(rows[i].code), rows[i].ok);
}

static void test_keys(void **state)
{
    char acc[WS_ACCEPT_LEN + 1];
    (void)state;
    assert_true(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_true(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAB==", 24)); /* stray low bits */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ", 22));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZSE=", 24)); /* 17 bytes */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub2!jZQ==", 24));
    assert_false(ws_key_valid("c2hvcnQ=", 8));
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_text_and_binary),
        cmocka_unit_test(test_fragmented_with_interleaved_ping),
        cmocka_unit_test(test_close_frames),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_error_is_sticky_and_consumes_nothing),
        cmocka_unit_test(test_utf8_rules),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_busy_and_in_message),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_close_payload_and_codes),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
