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

#include "codec/ws.h"

static const uint8_t MASK[4] = {0x12, 0x34, 0x56, 0x78};

/* Appends a masked client frame to buf. */
static size_t put_frame(uint8_t *buf, bool fin, uint8_t op, const void *payload, size_t len)
{
    size_t h = ws_frame_header(buf, fin, op, len, MASK);
    memcpy(buf + h, payload, len);
    ws_mask(buf + h, len, MASK, 0);
    return h + len;
}

/* Feeds one chunk, rendering what came out as text into out: complete
 * messages, control frames, the error. Returns false after an error. */
static bool feed_chunk(struct ws_decoder *d, uint8_t *p, size_t left, char *msg, size_t *mlen,
                       char *out, size_t outcap, size_t *olen)
{
    for (;;) {
        struct ws_event ev;
        uint8_t *start = p;
        size_t used = ws_decoder_feed(d, p, left, &ev);
        assert_true(used <= left);
        p += used;
        left -= used;
        if (ev.type == WS_EV_NONE) {
            assert_int_equal(left, 0); /* NONE means everything was taken */
            return true;
        }
        if (ev.type == WS_EV_ERROR) {
            *olen += (size_t)snprintf(out + *olen, outcap - *olen, "E%u;", ev.close_code);
            return false;
        }
        if (ev.type == WS_EV_CONTROL) {
            *olen += (size_t)snprintf(out + *olen, outcap - *olen, "C%u:%u:%.*s;", ev.opcode,
                                      ev.close_code, (int)ev.len, (const char *)ev.data);
            continue;
        }
        /* A DATA slice is exactly the payload bytes this call consumed last. */
        assert_true(ev.data >= start && ev.data + ev.len == p);
        if (ev.first)
            *mlen = 0;
        memcpy(msg + *mlen, ev.data, ev.len);
        *mlen += ev.len;
        if (ev.last)
            *olen += (size_t)snprintf(out + *olen, outcap - *olen, "M%u:%.*s;", ev.opcode,
                                      (int)*mlen, msg);
    }
}

/* Decodes in[0..n) cut at cuts[0..ncuts) (ascending) and renders the result. */
static void trace_cuts(const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts, uint64_t cap,
                       char *out, size_t outcap)
{
    static char msg[70000];
    struct ws_decoder d = {0};
    uint8_t *copy = malloc(n ? n : 1);
    size_t mlen = 0, olen = 0, off = 0;
    memcpy(copy, in, n);
    ws_decoder_init(&d, cap, true);
    out[0] = '\0';
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        if (!feed_chunk(&d, copy + off, end - off, msg, &mlen, out, outcap, &olen))
            break;
        off = end;
    }
    free(copy);
    ws_decoder_free(&d);
}

/* Decodes in[0..n) fed in chunks of `step` (0 = whole). */
static void trace(const uint8_t *in, size_t n, size_t step, uint64_t cap, char *out, size_t outcap)
{
    size_t ncuts = 0;
    size_t *cuts = calloc((step && n ? n / step : 0) + 1, sizeof *cuts);
    for (size_t off = step; step && off < n; off += step)
        cuts[ncuts++] = off;
    trace_cuts(in, n, cuts, ncuts, cap, out, outcap);
    free(cuts);
}

/* Asserts the same trace for whole input, a cut at every offset, chunks of
 * every size, and byte-by-byte. */
static void check_all_splits(const uint8_t *in, size_t n, uint64_t cap, const char *want)
{
    static char got[1 << 17];
    trace(in, n, 0, cap, got, sizeof got);
    assert_string_equal(got, want);
    for (size_t cut = 0; cut <= n; cut++) {
        trace_cuts(in, n, &cut, 1, cap, got, sizeof got);
        assert_string_equal(got, want);
    }
    for (size_t step = 1; step < n; step++) {
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
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    ws_decoder_init(&d, 0, true);
    ws_decoder_feed(&d, buf, sizeof buf, &ev);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ws_decoder_feed(&d, buf, sizeof buf, &ev), 0);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, 1002);
    ws_decoder_free(&d);
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
    struct ws_decoder d = {0};
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
    ws_decoder_free(&d);
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

/* Feeds buf[0..n) in one call sequence and returns the next event. */
static size_t next(struct ws_decoder *d, uint8_t *buf, size_t n, struct ws_event *ev)
{
    return ws_decoder_feed(d, buf, n, ev);
}

static void test_event_contract(void **state)
{
    uint8_t buf[64];
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    size_t h1 = ws_frame_header(buf, false, WS_OP_TEXT, 3, MASK);
    size_t n = put_frame(buf, false, WS_OP_TEXT, "abc", 3);
    n += put_frame(buf + n, true, WS_OP_CONT, "", 0);
    ws_decoder_init(&d, 0, true);
    /* The header alone: consumed, no empty DATA yet, but the message began. */
    assert_int_equal(next(&d, buf, h1, &ev), h1);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_true(ws_decoder_in_message(&d));
    /* Two payload bytes: a first, non-last slice unmasked in place. */
    assert_int_equal(next(&d, buf + h1, 2, &ev), 2);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_true(ev.first && !ev.last);
    assert_ptr_equal(ev.data, buf + h1);
    assert_memory_equal(ev.data, "ab", 2);
    assert_int_equal(next(&d, buf + h1 + 2, 0, &ev), 0);
    assert_int_equal(ev.type, WS_EV_NONE);
    /* The rest: the last byte of the first frame, then the empty final one. */
    size_t used = next(&d, buf + h1 + 2, n - h1 - 2, &ev);
    assert_int_equal(used, 1);
    assert_true(ev.type == WS_EV_DATA && !ev.first && !ev.last && ev.len == 1);
    assert_int_equal(ev.data[0], 'c');
    used += next(&d, buf + h1 + 2 + used, n - h1 - 2 - used, &ev);
    assert_int_equal(used, n - h1 - 2);
    assert_true(ev.type == WS_EV_DATA && !ev.first && ev.last && ev.len == 0);
    assert_int_equal(ev.opcode, WS_OP_TEXT);
    assert_false(ws_decoder_in_message(&d));
    assert_false(ws_decoder_busy(&d));
    assert_int_equal(next(&d, NULL, 0, &ev), 0);
    assert_int_equal(ev.type, WS_EV_NONE);
    ws_decoder_free(&d);
}

static void test_empty_frames_mark_boundaries(void **state)
{
    uint8_t buf[64];
    size_t n = 0;
    (void)state;
    n += put_frame(buf + n, false, WS_OP_BINARY, "", 0);
    n += put_frame(buf + n, false, WS_OP_CONT, "x", 1);
    n += put_frame(buf + n, true, WS_OP_CONT, "", 0);
    n += put_frame(buf + n, true, WS_OP_PING, "", 0);
    n += put_frame(buf + n, true, WS_OP_TEXT, "", 0);
    check_all_splits(buf, n, 0, "M2:x;C9:0:;M1:;");
}

/* Each script decoded every way: several frames, controls between fragments. */
static void test_multi_frame_scripts(void **state)
{
    uint8_t buf[512];
    size_t n = 0;
    (void)state;
    n += put_frame(buf + n, true, WS_OP_PING, "1", 1);
    n += put_frame(buf + n, false, WS_OP_BINARY, "\x05\x01", 2);
    n += put_frame(buf + n, true, WS_OP_PONG, "22", 2);
    n += put_frame(buf + n, true, WS_OP_PING, "333", 3);
    n += put_frame(buf + n, true, WS_OP_CONT, "\x02", 1);
    n += put_frame(buf + n, true, WS_OP_TEXT, "\xe2\x82\xac euro", 8);
    n += put_frame(buf + n, true, WS_OP_CLOSE,
                   "\x0b\xb8"
                   "app",
                   5);
    check_all_splits(
        buf, n, 0,
        "C9:0:1;C10:0:22;C9:0:333;M2:\x05\x01\x02;M1:\xe2\x82\xac euro;C8:3000:\x0b\xb8"
        "app;");
    /* a 4-byte character split one byte per fragment, with a ping inside */
    n = put_frame(buf, false, WS_OP_TEXT, "\xf0", 1);
    n += put_frame(buf + n, false, WS_OP_CONT, "\x9f", 1);
    n += put_frame(buf + n, true, WS_OP_PING, "", 0);
    n += put_frame(buf + n, false, WS_OP_CONT, "\x98", 1);
    n += put_frame(buf + n, true, WS_OP_CONT, "\x80", 1);
    check_all_splits(buf, n, 0, "C9:0:;M1:\xf0\x9f\x98\x80;");
    /* a 16-bit length control-free message after a message */
    static char y[300];
    memset(y, 'y', sizeof y);
    n = put_frame(buf, true, WS_OP_TEXT, "hi", 2);
    n += put_frame(buf + n, true, WS_OP_BINARY, y, 200);
    char want[512];
    snprintf(want, sizeof want, "M1:hi;M2:%.200s;", y);
    check_all_splits(buf, n, 0, want);
}

static void test_more_protocol_errors(void **state)
{
    uint8_t buf[512];
    size_t n;
    (void)state;
    /* a binary frame, or a text frame, inside a fragmented message */
    n = put_frame(buf, false, WS_OP_TEXT, "a", 1);
    n += put_frame(buf + n, true, WS_OP_BINARY, "b", 1);
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, false, WS_OP_BINARY, "a", 1);
    n += put_frame(buf + n, true, WS_OP_PING, "", 0);
    n += put_frame(buf + n, false, WS_OP_TEXT, "b", 1);
    check_all_splits(buf, n, 0, "C9:0:;E1002;");
    /* continuation after a message completed */
    n = put_frame(buf, true, WS_OP_TEXT, "a", 1);
    n += put_frame(buf + n, true, WS_OP_CONT, "b", 1);
    check_all_splits(buf, n, 0, "M1:a;E1002;");
    /* fragmented close and pong; a 125-byte ping is fine, 126 in 16 bits is not */
    n = put_frame(buf, false, WS_OP_CLOSE, "", 0);
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, false, WS_OP_PONG, "", 0);
    check_all_splits(buf, n, 0, "E1002;");
    uint8_t p125[125];
    memset(p125, 'p', sizeof p125);
    n = put_frame(buf, true, WS_OP_PING, p125, 125);
    char want[160];
    snprintf(want, sizeof want, "C9:0:%.125s;", (const char *)p125);
    check_all_splits(buf, n, 0, want);
    uint8_t ping16[] = {0x89, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'};
    check_all_splits(ping16, sizeof ping16, 0, "E1002;");
    /* unmasked frame after a good one */
    n = put_frame(buf, true, WS_OP_TEXT, "ok", 2);
    buf[n] = 0x82, buf[n + 1] = 0x00;
    check_all_splits(buf, n + 2, 0, "M1:ok;E1002;");
}

/* Errors decided by the first two header bytes do not wait for the rest. */
static void test_errors_before_full_header(void **state)
{
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    uint8_t unmasked64[2] = {0x82, 0x7F};
    ws_decoder_init(&d, 0, true);
    assert_int_equal(next(&d, unmasked64, 2, &ev), 2);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_PROTOCOL);
    uint8_t rsv[1] = {0xC1};
    ws_decoder_free(&d);
    ws_decoder_init(&d, 0, true);
    assert_int_equal(next(&d, rsv, 1, &ev), 1);
    assert_int_equal(ev.type, WS_EV_NONE);
    uint8_t b1[1] = {0xFF};
    next(&d, b1, 1, &ev);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_PROTOCOL);
    ws_decoder_free(&d);
}

static void test_close_reason_fields(void **state)
{
    uint8_t buf[64];
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    size_t n = put_frame(buf, true, WS_OP_CLOSE, "\x0f\xa0gone \xc3\xa9", 9);
    ws_decoder_init(&d, 0, true);
    assert_int_equal(next(&d, buf, n, &ev), n);
    assert_int_equal(ev.type, WS_EV_CONTROL);
    assert_int_equal(ev.opcode, WS_OP_CLOSE);
    assert_int_equal(ev.close_code, 4000);
    assert_int_equal(ev.reason_len, 7);
    assert_memory_equal(ev.reason, "gone \xc3\xa9", 7);
    assert_int_equal(ev.len, 9);
    /* a close reason cut inside a character, and a code below 1000 */
    n = put_frame(buf, true, WS_OP_CLOSE, "\x03\xe8\xc3", 3);
    check_all_splits(buf, n, 0, "E1007;");
    n = put_frame(buf, true, WS_OP_CLOSE, "\x00\x00", 2);
    check_all_splits(buf, n, 0, "E1002;");
    n = put_frame(buf, true, WS_OP_CLOSE, "\x13\x88", 2); /* 5000 */
    check_all_splits(buf, n, 0, "E1002;");
    ws_decoder_free(&d);
}

static void test_utf8_error_reported_early(void **state)
{
    uint8_t buf[64];
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    size_t n = put_frame(buf, false, WS_OP_TEXT, "ok\xc0", 3);
    ws_decoder_init(&d, 0, true);
    size_t used = next(&d, buf, n, &ev);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_INVALID_DATA);
    assert_true(used < n); /* the bad slice is not consumed */
    assert_int_equal(next(&d, buf + used, n - used, &ev), 0);
    assert_int_equal(ev.close_code, WS_CLOSE_INVALID_DATA);
    /* a fragment ending mid-sequence is fine until the message ends */
    n = put_frame(buf, false, WS_OP_TEXT, "\xe2\x82", 2);
    n += put_frame(buf + n, true, WS_OP_CONT, "", 0);
    check_all_splits(buf, n, 0, "E1007;");
    n = put_frame(buf, false, WS_OP_TEXT, "\xe2\x82", 2);
    n += put_frame(buf + n, true, WS_OP_CONT, "\x41", 1);
    check_all_splits(buf, n, 0, "E1007;");
    /* only text is checked: a binary message after a text one */
    n = put_frame(buf, true, WS_OP_TEXT, "t", 1);
    n += put_frame(buf + n, false, WS_OP_BINARY, "\xc0", 1);
    n += put_frame(buf + n, true, WS_OP_CONT, "\xff", 1);
    check_all_splits(buf, n, 0, "M1:t;M2:\xc0\xff;");
    ws_decoder_free(&d);
}

static void test_cap_boundaries(void **state)
{
    static uint8_t buf[1024];
    static char a[400];
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    memset(a, 'a', sizeof a);
    char want[512];
    snprintf(want, sizeof want, "M1:%.100s;", a);
    /* exactly the cap across three fragments is fine, one more is not */
    size_t n = put_frame(buf, false, WS_OP_TEXT, a, 40);
    n += put_frame(buf + n, true, WS_OP_PING, "", 0);
    n += put_frame(buf + n, false, WS_OP_CONT, a, 0);
    n += put_frame(buf + n, true, WS_OP_CONT, a, 60);
    snprintf(want, sizeof want, "C9:0:;M1:%.100s;", a);
    check_all_splits(buf, n, 100, want);
    n = put_frame(buf, false, WS_OP_TEXT, a, 40);
    n += put_frame(buf + n, true, WS_OP_PING, "", 0);
    n += put_frame(buf + n, true, WS_OP_CONT, a, 61);
    check_all_splits(buf, n, 100, "C9:0:;E1009;");
    /* control frames do not count towards the cap */
    n = put_frame(buf, true, WS_OP_PING, a, 100);
    n += put_frame(buf + n, true, WS_OP_TEXT, "x", 1);
    snprintf(want, sizeof want, "C9:0:%.100s;M1:x;", a);
    check_all_splits(buf, n, 1, want);
    /* 1009 is reported at the header, before any payload is taken */
    n = put_frame(buf, true, WS_OP_BINARY, a, 300);
    ws_decoder_init(&d, 299, true);
    assert_int_equal(next(&d, buf, n, &ev), 8);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_TOO_BIG);
    /* a declared 2^63-1 length trips the cap without overflow */
    uint8_t huge[] = {0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4};
    check_all_splits(huge, sizeof huge, 262144, "E1009;");
    ws_decoder_free(&d);
}

static void test_client_side_accepts_unmasked(void **state)
{
    uint8_t buf[] = {0x81, 0x02, 'h', 'i', 0x89, 0x00};
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    ws_decoder_init(&d, 0, false);
    size_t used = next(&d, buf, sizeof buf, &ev);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_true(ev.first && ev.last);
    assert_memory_equal(ev.data, "hi", 2);
    used += next(&d, buf + used, sizeof buf - used, &ev);
    assert_int_equal(ev.type, WS_EV_CONTROL);
    assert_int_equal(used, sizeof buf);
    ws_decoder_free(&d);
}

/* A control payload that arrives whole is reported in place (no buffer);
 * one split across feeds is assembled in a buffer the decoder frees on the
 * next feed, so an idle connection holds none. */
static void test_control_payload_storage(void **state)
{
    uint8_t buf[64];
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    size_t n = put_frame(buf, true, WS_OP_PING, (const uint8_t *)"abcdef", 6);
    ws_decoder_init(&d, 0, true);
    assert_int_equal(next(&d, buf, n, &ev), n);
    assert_int_equal(ev.type, WS_EV_CONTROL);
    assert_true(ev.data >= buf && ev.data + ev.len <= buf + n);
    assert_memory_equal(ev.data, "abcdef", 6);
    assert_null(d.ctl);
    n = put_frame(buf, true, WS_OP_PONG, (const uint8_t *)"abcdef", 6);
    assert_int_equal(next(&d, buf, n - 2, &ev), n - 2);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_non_null(d.ctl);
    assert_int_equal(next(&d, buf + n - 2, 2, &ev), 2);
    assert_int_equal(ev.type, WS_EV_CONTROL);
    assert_ptr_equal(ev.data, d.ctl);
    assert_memory_equal(ev.data, "abcdef", 6);
    assert_int_equal(next(&d, buf, 0, &ev), 0);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_null(d.ctl); /* released once the event was handled */
    n = put_frame(buf, true, WS_OP_CLOSE,
                  (const uint8_t *)"\x03\xe8"
                                   "bye",
                  5);
    next(&d, buf, n - 2, &ev);
    assert_non_null(d.ctl);
    ws_decoder_free(&d); /* mid-frame teardown frees it too */
    assert_null(d.ctl);
    ws_decoder_free(&d);
}

/* The encoder's output decodes back to what went in, at every length class. */
static void test_encoder_round_trip(void **state)
{
    static uint8_t frame[70000];
    static uint8_t payload[66000];
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536};
    (void)state;
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t n = put_frame(frame, true, WS_OP_BINARY, payload, lens[k]);
        struct ws_decoder d = {0};
        struct ws_event ev;
        ws_decoder_init(&d, 0, true);
        size_t used = 0, got = 0;
        for (;;) {
            size_t chunk = n - used < 1000 ? n - used : 1000;
            size_t u = next(&d, frame + used, chunk, &ev);
            used += u;
            if (ev.type == WS_EV_NONE)
                continue;
            assert_int_equal(ev.type, WS_EV_DATA);
            assert_memory_equal(ev.data, payload + got, ev.len);
            got += ev.len;
            if (ev.last)
                break;
        }
        assert_int_equal(used, n);
        assert_int_equal(got, lens[k]);
        ws_decoder_free(&d);
    }
}

static void test_feed_nothing(void **state)
{
    uint8_t buf[16];
    struct ws_decoder d = {0};
    struct ws_event ev;
    (void)state;
    size_t n = put_frame(buf, true, WS_OP_PING, "abc", 3);
    ws_decoder_init(&d, 0, true);
    assert_int_equal(next(&d, NULL, 0, &ev), 0);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_int_equal(next(&d, buf, n - 1, &ev), n - 1); /* inside the control payload */
    assert_true(ws_decoder_busy(&d));
    assert_false(ws_decoder_in_message(&d));
    assert_int_equal(next(&d, NULL, 0, &ev), 0);
    assert_int_equal(ev.type, WS_EV_NONE);
    assert_int_equal(next(&d, buf + n - 1, 1, &ev), 1);
    assert_int_equal(ev.type, WS_EV_CONTROL);
    assert_memory_equal(ev.data, "abc", 3);
    assert_false(ws_decoder_busy(&d));
    ws_decoder_free(&d);
}

static void test_key_lengths(void **state)
{
    (void)state;
    assert_true(ws_key_valid("+/+/+/+/+/+/+/+/+/+/+w==", 24));
    assert_true(ws_key_valid("zzzzzzzzzzzzzzzzzzzzzw==", 24));
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAA", 20));      /* 15 bytes */
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAAA=", 24));  /* 17 bytes */
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAAAA", 24));  /* 18 bytes */
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAAA==", 25)); /* 17 bytes, padded */
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAA===", 24));
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAA-_==", 24)); /* base64url is not base64 */
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAA AA==", 24));
    assert_false(ws_key_valid("AAAAAAAAAA\0AAAAAAAAAAA==", 24));
    assert_false(ws_key_valid("", 0));
    char acc[WS_ACCEPT_LEN + 1];
    ws_accept_key("AAAAAAAAAAAAAAAAAAAAAA==", 24, acc);
    assert_int_equal(strlen(acc), WS_ACCEPT_LEN);
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
        cmocka_unit_test(test_event_contract),
        cmocka_unit_test(test_empty_frames_mark_boundaries),
        cmocka_unit_test(test_multi_frame_scripts),
        cmocka_unit_test(test_more_protocol_errors),
        cmocka_unit_test(test_errors_before_full_header),
        cmocka_unit_test(test_close_reason_fields),
        cmocka_unit_test(test_utf8_error_reported_early),
        cmocka_unit_test(test_cap_boundaries),
        cmocka_unit_test(test_client_side_accepts_unmasked),
        cmocka_unit_test(test_encoder_round_trip),
        cmocka_unit_test(test_control_payload_storage),
        cmocka_unit_test(test_feed_nothing),
        cmocka_unit_test(test_key_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
