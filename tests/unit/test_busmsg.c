/* test_busmsg.c — the cluster bus header: the byte layout against a
 * hand-written header, round trips of every type with every field at its
 * extremes, every decode error and the order the checks run in, a header
 * cut at every length, the HB payload, EVICT closes and type names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "cluster/busmsg.h"

#define MAX_PAYLOAD 1024

static const uint8_t HASH[BUSMSG_HASH] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
};

/* A header every check accepts for type, with the given payload length. */
static struct busmsg_hdr valid_hdr(uint8_t type)
{
    struct busmsg_hdr h = {.type = type, .src_shard = 3, .src_node_epoch = 7, .link_seq = 9};
    if (type == BUSMSG_EVICT) {
        h.reason = BUSMSG_EVICT_RECLAIMED;
        h.close_code = 4404;
    } else if (type == BUSMSG_HANDOVER) {
        h.reason = BUSMSG_HANDOVER_RECLAIM;
    }
    return h;
}

/* A payload every check accepts for type; returns its length. */
static size_t valid_payload(uint8_t type, uint8_t *out)
{
    switch (type) {
    case BUSMSG_P2B:
    case BUSMSG_B2P:
        memcpy(out, "{\"a\":1}", 7);
        return 7;
    case BUSMSG_XOFF:
    case BUSMSG_XON:
    case BUSMSG_ATTACH:
    case BUSMSG_CLAIM:
    case BUSMSG_EVICT:
        memcpy(out, HASH, sizeof HASH);
        return sizeof HASH;
    case BUSMSG_HB:
        return busmsg_hb_payload(out, 4, "relay-1-0a1b2c3d", 16);
    default:
        return 0;
    }
}

/* Encodes h + payload into buf; returns the message length. */
static size_t build(uint8_t *buf, const struct busmsg_hdr *h, const uint8_t *p, size_t n)
{
    busmsg_encode(buf, h);
    if (n)
        memcpy(buf + BUSMSG_HEADER, p, n);
    return BUSMSG_HEADER + n;
}

static int decode(const uint8_t *buf, size_t len, struct busmsg_hdr *h)
{
    const uint8_t *p;
    size_t n;
    return busmsg_decode(buf, len, MAX_PAYLOAD, h, &p, &n);
}

static void assert_hdr_equal(const struct busmsg_hdr *a, const struct busmsg_hdr *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->close_code, b->close_code);
    assert_int_equal(a->src_shard, b->src_shard);
    assert_int_equal(a->reason, b->reason);
    assert_true(a->src_node_epoch == b->src_node_epoch);
    assert_true(a->link_seq == b->link_seq);
    assert_true(a->epoch == b->epoch);
    assert_true(a->key == b->key);
}

static void test_layout(void **state)
{
    (void)state;
    static const uint8_t want[BUSMSG_HEADER] = {
        0x01, 0x02, 0x34, 0x12, 0xab, 0x00, 0x78, 0x56, /* ver..reason */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* node epoch */
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* link_seq */
        0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, /* epoch */
        0xf8, 0xf7, 0xf6, 0xf5, 0xf4, 0xf3, 0xf2, 0xf1, /* key */
    };
    struct busmsg_hdr h = {.type = BUSMSG_B2P,
                           .close_code = 0x1234,
                           .src_shard = 0xab,
                           .reason = 0x5678,
                           .src_node_epoch = 0x0102030405060708u,
                           .link_seq = 0x1112131415161718u,
                           .epoch = 0x2122232425262728u,
                           .key = 0xf1f2f3f4f5f6f7f8u};
    uint8_t out[BUSMSG_HEADER + 1];
    out[BUSMSG_HEADER] = 0xee;
    busmsg_encode(out, &h);
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(out[BUSMSG_HEADER], 0xee); /* nothing written past 40 bytes */

    struct busmsg_hdr got;
    const uint8_t *p = want;
    size_t n = 99;
    assert_int_equal(busmsg_decode(want, sizeof want, 0, &got, &p, &n), 0);
    assert_hdr_equal(&got, &h);
    assert_null(p);
    assert_int_equal(n, 0);
}

/* Every type, with every unchecked field at 0 and at its largest value. */
static void test_round_trip_every_type(void **state)
{
    (void)state;
    static uint8_t buf[BUSMSG_HEADER + MAX_PAYLOAD];
    uint8_t payload[BUSMSG_HASH + BUSMSG_NODE_ID_MAX + 2];
    for (uint8_t type = 1; type <= BUSMSG_TYPE_MAX; type++) {
        for (int extreme = 0; extreme < 2; extreme++) {
            struct busmsg_hdr h = valid_hdr(type);
            uint64_t big = extreme ? UINT64_MAX : 0;
            h.src_shard = extreme ? BUSMSG_MAX_SHARDS - 1 : 0;
            h.src_node_epoch = h.link_seq = h.epoch = h.key = big;
            if (type != BUSMSG_EVICT && type != BUSMSG_ATTACH_OK && type != BUSMSG_HANDOVER)
                h.reason = extreme ? UINT16_MAX : 0;
            if (type != BUSMSG_EVICT)
                h.close_code = extreme ? UINT16_MAX : 0;
            size_t n = valid_payload(type, payload);
            size_t len = build(buf, &h, payload, n);
            struct busmsg_hdr got;
            const uint8_t *p;
            size_t pn;
            assert_int_equal(busmsg_decode(buf, len, MAX_PAYLOAD, &got, &p, &pn), 0);
            assert_hdr_equal(&got, &h);
            assert_int_equal(pn, n);
            if (n) {
                assert_ptr_equal(p, buf + BUSMSG_HEADER);
                assert_memory_equal(p, payload, n);
            } else {
                assert_null(p);
            }
            uint8_t again[BUSMSG_HEADER];
            busmsg_encode(again, &got);
            assert_memory_equal(again, buf, BUSMSG_HEADER);
        }
    }
}

/* Each field alone at its extreme, the others zero: no field bleeds into
 * its neighbour. */
static void test_fields_independent(void **state)
{
    (void)state;
    uint8_t buf[BUSMSG_HEADER];
    struct busmsg_hdr h, got;
    for (int field = 0; field < 7; field++) {
        memset(&h, 0, sizeof h);
        h.type = BUSMSG_DETACH;
        switch (field) {
        case 0:
            h.close_code = UINT16_MAX;
            break;
        case 1:
            h.src_shard = BUSMSG_MAX_SHARDS - 1;
            break;
        case 2:
            h.reason = UINT16_MAX;
            break;
        case 3:
            h.src_node_epoch = UINT64_MAX;
            break;
        case 4:
            h.link_seq = UINT64_MAX;
            break;
        case 5:
            h.epoch = UINT64_MAX;
            break;
        default:
            h.key = UINT64_MAX;
            break;
        }
        busmsg_encode(buf, &h);
        assert_int_equal(decode(buf, sizeof buf, &got), 0);
        assert_hdr_equal(&got, &h);
    }
}

static void test_short(void **state)
{
    (void)state;
    uint8_t full[BUSMSG_HEADER];
    struct busmsg_hdr h = valid_hdr(BUSMSG_SYNC), got;
    busmsg_encode(full, &h);
    for (size_t len = 0; len < BUSMSG_HEADER; len++) {
        /* A private copy of exactly len bytes, so ASan sees any over-read. */
        uint8_t *cut = test_malloc(len ? len : 1);
        memcpy(cut, full, len);
        assert_int_equal(decode(cut, len, &got), BUSMSG_E_SHORT);
        test_free(cut);
    }
    assert_int_equal(decode(full, BUSMSG_HEADER, &got), 0);
    assert_int_equal(decode(NULL, 0, &got), BUSMSG_E_SHORT);
}

static void test_version_and_type(void **state)
{
    (void)state;
    uint8_t buf[BUSMSG_HEADER];
    struct busmsg_hdr h = valid_hdr(BUSMSG_NOTICE), got;
    static const uint8_t bad_versions[] = {0, 2, 0x81, 0xff};
    for (size_t i = 0; i < sizeof bad_versions; i++) {
        busmsg_encode(buf, &h);
        buf[0] = bad_versions[i];
        assert_int_equal(decode(buf, sizeof buf, &got), BUSMSG_E_VERSION);
    }
    static const uint8_t bad_types[] = {0, BUSMSG_TYPE_MAX + 1, 0x80, 0xff};
    for (size_t i = 0; i < sizeof bad_types; i++) {
        h.type = bad_types[i];
        busmsg_encode(buf, &h);
        assert_int_equal(decode(buf, sizeof buf, &got), BUSMSG_E_TYPE);
        buf[0] = 9; /* the version is checked first */
        assert_int_equal(decode(buf, sizeof buf, &got), BUSMSG_E_VERSION);
    }
}

static void test_src_shard(void **state)
{
    (void)state;
    uint8_t buf[BUSMSG_HEADER];
    struct busmsg_hdr h = valid_hdr(BUSMSG_DETACH), got;
    h.src_shard = BUSMSG_MAX_SHARDS;
    busmsg_encode(buf, &h);
    assert_int_equal(decode(buf, sizeof buf, &got), BUSMSG_E_FIELD);
    h.src_shard = UINT16_MAX;
    busmsg_encode(buf, &h);
    assert_int_equal(decode(buf, sizeof buf, &got), BUSMSG_E_FIELD);
}

/* Expected decode result of type carrying n payload bytes (the payload's
 * content valid for the type when its size is). */
static int expect_for_size(uint8_t type, size_t n)
{
    switch (type) {
    case BUSMSG_P2B:
    case BUSMSG_B2P:
        return n <= MAX_PAYLOAD ? 0 : BUSMSG_E_TOO_BIG;
    case BUSMSG_XOFF:
    case BUSMSG_XON:
    case BUSMSG_ATTACH:
    case BUSMSG_CLAIM:
        return n == BUSMSG_HASH ? 0 : BUSMSG_E_PAYLOAD;
    case BUSMSG_EVICT:
        return n == 0 || n == BUSMSG_HASH ? 0 : BUSMSG_E_PAYLOAD;
    case BUSMSG_HB:
        return n >= BUSMSG_HB_MIN && n <= 2 + BUSMSG_NODE_ID_MAX ? 0 : BUSMSG_E_PAYLOAD;
    default:
        return n == 0 ? 0 : BUSMSG_E_PAYLOAD;
    }
}

static void test_payload_sizes(void **state)
{
    (void)state;
    static uint8_t buf[BUSMSG_HEADER + MAX_PAYLOAD + 2];
    static const size_t sizes[] = {0,
                                   1,
                                   2,
                                   3,
                                   31,
                                   32,
                                   33,
                                   64,
                                   97,
                                   98,
                                   99,
                                   MAX_PAYLOAD - 1,
                                   MAX_PAYLOAD,
                                   MAX_PAYLOAD + 1,
                                   MAX_PAYLOAD + 2};
    for (uint8_t type = 1; type <= BUSMSG_TYPE_MAX; type++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            struct busmsg_hdr h = valid_hdr(type), got;
            size_t n = sizes[i];
            busmsg_encode(buf, &h);
            memset(buf + BUSMSG_HEADER, 'a', n);
            if (type == BUSMSG_HB && n >= 2) {
                buf[BUSMSG_HEADER] = 1; /* shard count 1, node id "aa..." */
                buf[BUSMSG_HEADER + 1] = 0;
            }
            int want = expect_for_size(type, n);
            assert_int_equal(decode(buf, BUSMSG_HEADER + n, &got), want);
        }
    }
}

static void test_too_big_bound(void **state)
{
    (void)state;
    uint8_t buf[BUSMSG_HEADER + 8] = {0};
    struct busmsg_hdr h = valid_hdr(BUSMSG_P2B), got;
    const uint8_t *p;
    size_t n;
    busmsg_encode(buf, &h);
    assert_int_equal(busmsg_decode(buf, BUSMSG_HEADER, 0, &got, &p, &n), 0);
    assert_int_equal(busmsg_decode(buf, BUSMSG_HEADER + 1, 0, &got, &p, &n), BUSMSG_E_TOO_BIG);
    assert_int_equal(busmsg_decode(buf, BUSMSG_HEADER + 8, 8, &got, &p, &n), 0);
    assert_int_equal(n, 8);
    assert_int_equal(busmsg_decode(buf, BUSMSG_HEADER + 8, 7, &got, &p, &n), BUSMSG_E_TOO_BIG);
    /* The bound applies to data only: a hash message is fine with bound 0. */
    h.type = BUSMSG_CLAIM;
    uint8_t claim[BUSMSG_HEADER + BUSMSG_HASH];
    build(claim, &h, HASH, sizeof HASH);
    assert_int_equal(busmsg_decode(claim, sizeof claim, 0, &got, &p, &n), 0);
}

static void test_evict_fields(void **state)
{
    (void)state;
    uint8_t buf[BUSMSG_HEADER + BUSMSG_HASH];
    struct busmsg_hdr h = valid_hdr(BUSMSG_EVICT), got;
    for (unsigned r = 0; r <= BUSMSG_EVICT_MAX + 1; r++) {
        struct busmsg_close c = {0};
        int known = busmsg_evict_close(r, &c) == 0;
        h.reason = (uint16_t)r;
        h.close_code = known ? c.code : 1000;
        build(buf, &h, HASH, sizeof HASH);
        assert_int_equal(decode(buf, sizeof buf, &got), known ? 0 : BUSMSG_E_FIELD);
        assert_int_equal(decode(buf, BUSMSG_HEADER, &got), known ? 0 : BUSMSG_E_FIELD);
        if (!known)
            continue;
        h.close_code = (uint16_t)(c.code + 1); /* the code must agree with the reason */
        build(buf, &h, HASH, sizeof HASH);
        assert_int_equal(decode(buf, sizeof buf, &got), BUSMSG_E_FIELD);
    }
    /* A wrong size is reported before the reason. */
    h.reason = 0;
    busmsg_encode(buf, &h);
    assert_int_equal(decode(buf, BUSMSG_HEADER + 1, &got), BUSMSG_E_PAYLOAD);
}

static void test_attach_ok_and_handover_reason(void **state)
{
    (void)state;
    uint8_t buf[BUSMSG_HEADER];
    struct busmsg_hdr h = valid_hdr(BUSMSG_ATTACH_OK), got;
    static const uint16_t attach_ok[][2] = {{0, 0}, {1, 0}, {2, 1}, {3, 1}, {0x8000, 1}};
    for (size_t i = 0; i < 5; i++) {
        h.reason = attach_ok[i][0];
        busmsg_encode(buf, &h);
        assert_int_equal(decode(buf, sizeof buf, &got), attach_ok[i][1] ? BUSMSG_E_FIELD : 0);
    }
    h.type = BUSMSG_HANDOVER;
    static const uint16_t handover[][2] = {{0, 1}, {1, 0}, {2, 0}, {3, 1}, {0xffff, 1}};
    for (size_t i = 0; i < 5; i++) {
        h.reason = handover[i][0];
        busmsg_encode(buf, &h);
        assert_int_equal(decode(buf, sizeof buf, &got), handover[i][1] ? BUSMSG_E_FIELD : 0);
    }
}

static void test_hb_payload(void **state)
{
    (void)state;
    uint8_t out[2 + BUSMSG_NODE_ID_MAX + 1];
    char id[BUSMSG_NODE_ID_MAX + 2];
    memset(id, 'x', sizeof id);
    uint16_t shards;
    const char *node;
    size_t node_len;

    size_t n = busmsg_hb_payload(out, 2, "web-01_a-0a1b2c3d", 17);
    assert_int_equal(n, 19);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 0);
    assert_int_equal(busmsg_hb_parse(out, n, &shards, &node, &node_len), 0);
    assert_int_equal(shards, 2);
    assert_int_equal(node_len, 17);
    assert_memory_equal(node, "web-01_a-0a1b2c3d", 17);
    assert_ptr_equal(node, (const char *)out + 2);

    n = busmsg_hb_payload(out, BUSMSG_MAX_SHARDS, id, BUSMSG_NODE_ID_MAX);
    assert_int_equal(n, 2 + BUSMSG_NODE_ID_MAX);
    assert_int_equal(busmsg_hb_parse(out, n, &shards, &node, &node_len), 0);
    assert_int_equal(shards, BUSMSG_MAX_SHARDS);

    assert_int_equal(busmsg_hb_payload(out, 0, "a", 1), 0);
    assert_int_equal(busmsg_hb_payload(out, BUSMSG_MAX_SHARDS + 1, "a", 1), 0);
    assert_int_equal(busmsg_hb_payload(out, 1, "a", 0), 0);
    assert_int_equal(busmsg_hb_payload(out, 1, id, BUSMSG_NODE_ID_MAX + 1), 0);
    static const char bad[] = {'.', '*', '>', ' ', '/', '\0', '\x80'};
    for (size_t i = 0; i < sizeof bad; i++) {
        char b[3] = {'a', bad[i], 'b'};
        assert_int_equal(busmsg_hb_payload(out, 1, b, 3), 0);
        uint8_t raw[5] = {1, 0, 'a', (uint8_t)bad[i], 'b'};
        assert_int_equal(busmsg_hb_parse(raw, 5, &shards, &node, &node_len), BUSMSG_E_PAYLOAD);
    }
    static const uint8_t zero_shards[] = {0, 0, 'a'}, many[] = {0x01, 0x01, 'a'};
    assert_int_equal(busmsg_hb_parse(zero_shards, 3, &shards, &node, &node_len), BUSMSG_E_PAYLOAD);
    assert_int_equal(busmsg_hb_parse(many, 3, &shards, &node, &node_len), BUSMSG_E_PAYLOAD);
    assert_int_equal(busmsg_hb_parse(many, 2, &shards, &node, &node_len), BUSMSG_E_PAYLOAD);
}

static void test_evict_close(void **state)
{
    (void)state;
    static const struct {
        unsigned reason;
        uint16_t code;
        const char *literal;
    } want[] = {
        {BUSMSG_EVICT_RECLAIMED, 4404, "binary reclaimed server-id"},
        {BUSMSG_EVICT_GRACE_EXPIRED, 1000, ""},
        {BUSMSG_EVICT_BINARY_GONE, 1000, ""},
        {BUSMSG_EVICT_NO_BINARY, 1000, ""},
        {BUSMSG_EVICT_SHUTDOWN, 1001, "shutting down"},
        {BUSMSG_EVICT_LINK_LOST, 1011, "cluster link lost"},
    };
    struct busmsg_close c;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(busmsg_evict_close(want[i].reason, &c), 0);
        assert_int_equal(c.code, want[i].code);
        assert_string_equal(c.reason, want[i].literal);
    }
    assert_int_equal(busmsg_evict_close(0, &c), BUSMSG_E_FIELD);
    assert_int_equal(busmsg_evict_close(BUSMSG_EVICT_MAX + 1, &c), BUSMSG_E_FIELD);
    assert_int_equal(busmsg_evict_close(UINT16_MAX, &c), BUSMSG_E_FIELD);
}

static void test_names_and_values(void **state)
{
    (void)state;
    static const char *names[] = {"?",         "P2B",    "B2P",        "NOTICE", "DETACH",
                                  "EVICT",     "XOFF",   "XON",        "ATTACH", "ATTACH_OK",
                                  "NO_SERVER", "AT_CAP", "NOT_OWNER",  "CLAIM",  "CONFLICT",
                                  "HANDOVER",  "SYNC",   "LINK_RESET", "HB",     "CLAIM_ACK"};
    for (unsigned t = 0; t <= BUSMSG_TYPE_MAX; t++)
        assert_string_equal(busmsg_type_name(t), names[t]);
    assert_string_equal(busmsg_type_name(BUSMSG_TYPE_MAX + 1), "?");
    assert_string_equal(busmsg_type_name(0xffffffffu), "?");
    /* Wire values are a contract: a renumbering fails here. */
    assert_int_equal(BUSMSG_P2B, 1);
    assert_int_equal(BUSMSG_EVICT, 5);
    assert_int_equal(BUSMSG_ATTACH, 8);
    assert_int_equal(BUSMSG_CLAIM, 13);
    assert_int_equal(BUSMSG_HB, 18);
    assert_int_equal(BUSMSG_CLAIM_ACK, 19);
    assert_int_equal(BUSMSG_EVICT_RECLAIMED, 1);
    assert_int_equal(BUSMSG_EVICT_SHUTDOWN, 5);
    assert_int_equal(BUSMSG_EVICT_LINK_LOST, 6);
    assert_int_equal(BUSMSG_HEADER, 1 + 1 + 2 + 2 + 2 + 8 + 8 + 8 + 8);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(busmsg_strerror(0), "ok");
    for (int e = BUSMSG_E_FIELD; e <= BUSMSG_E_SHORT; e++)
        assert_string_not_equal(busmsg_strerror(e), "unknown error");
    assert_string_equal(busmsg_strerror(-100), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_fields_independent),
        cmocka_unit_test(test_short),
        cmocka_unit_test(test_version_and_type),
        cmocka_unit_test(test_src_shard),
        cmocka_unit_test(test_payload_sizes),
        cmocka_unit_test(test_too_big_bound),
        cmocka_unit_test(test_evict_fields),
        cmocka_unit_test(test_attach_ok_and_handover_reason),
        cmocka_unit_test(test_hb_payload),
        cmocka_unit_test(test_evict_close),
        cmocka_unit_test(test_names_and_values),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
