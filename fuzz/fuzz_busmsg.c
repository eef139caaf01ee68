/* fuzz_busmsg.c — drives the cluster bus header decoder with arbitrary
 * bytes. The first input byte picks the caller's payload bound; the rest is
 * one message. A decoded message must re-encode to exactly its first 40
 * bytes, its payload must be exactly the rest of the input, and what the
 * decoder accepted must obey the per-type rules of busmsg.h (an HB payload
 * rebuilt from its parts is byte-identical). A rejection must be the one
 * the first broken rule calls for, and every header shorter than 40 bytes
 * is too short. It does not test the link tracker. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/busmsg.h"

static const size_t bounds[8] = {0, 1, 31, 32, 33, 1024, 65536, SIZE_MAX};

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_hb(const uint8_t *p, size_t n)
{
    uint16_t shards;
    const char *id;
    size_t id_len;
    uint8_t again[2 + BUSMSG_NODE_ID_MAX];
    check(busmsg_hb_parse(p, n, &shards, &id, &id_len) == 0);
    check(id == (const char *)p + 2 && id_len == n - 2);
    check(busmsg_hb_payload(again, shards, id, id_len) == n);
    check(memcmp(again, p, n) == 0);
}

/* What was accepted obeys the type's rules. */
static void check_accepted(const struct busmsg_hdr *h, const uint8_t *p, size_t n, size_t bound)
{
    struct busmsg_close c;
    check(h->type >= 1 && h->type <= BUSMSG_TYPE_MAX);
    check(strcmp(busmsg_type_name(h->type), "?") != 0);
    check(h->src_shard < BUSMSG_MAX_SHARDS);
    switch (h->type) {
    case BUSMSG_P2B:
    case BUSMSG_B2P:
        check(n <= bound);
        break;
    case BUSMSG_XOFF:
    case BUSMSG_XON:
    case BUSMSG_ATTACH:
    case BUSMSG_CLAIM:
        check(n == BUSMSG_HASH);
        break;
    case BUSMSG_EVICT:
        check(n == 0 || n == BUSMSG_HASH);
        check(busmsg_evict_close(h->reason, &c) == 0 && c.code == h->close_code);
        break;
    case BUSMSG_HB:
        check_hb(p, n);
        break;
    case BUSMSG_ATTACH_OK:
        check(n == 0 && (h->reason & ~BUSMSG_ATTACH_PAUSED) == 0);
        break;
    case BUSMSG_HANDOVER:
        check(n == 0);
        check(h->reason == BUSMSG_HANDOVER_RECLAIM || h->reason == BUSMSG_HANDOVER_TAKEOVER);
        break;
    default:
        check(n == 0);
        break;
    }
}

/* A rejection is the one the first broken header rule calls for. */
static void check_rejected(const uint8_t *in, size_t len, int err)
{
    check(err >= BUSMSG_E_FIELD && err <= BUSMSG_E_SHORT);
    check(strcmp(busmsg_strerror(err), "unknown error") != 0);
    if (len < BUSMSG_HEADER) {
        check(err == BUSMSG_E_SHORT);
        return;
    }
    check(err != BUSMSG_E_SHORT);
    if (in[0] != BUSMSG_VERSION) {
        check(err == BUSMSG_E_VERSION);
        return;
    }
    if (in[1] == 0 || in[1] > BUSMSG_TYPE_MAX) {
        check(err == BUSMSG_E_TYPE);
        return;
    }
    if ((in[4] | in[5] << 8) >= BUSMSG_MAX_SHARDS)
        check(err == BUSMSG_E_FIELD);
    if (err == BUSMSG_E_TOO_BIG)
        check(in[1] == BUSMSG_P2B || in[1] == BUSMSG_B2P);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t bound = bounds[data[0] & 7];
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    struct busmsg_hdr h;
    const uint8_t *p = NULL;
    size_t n = 0;
    int err = busmsg_decode(in, len, bound, &h, &p, &n);
    if (err) {
        check_rejected(in, len, err);
    } else {
        uint8_t again[BUSMSG_HEADER];
        check(len >= BUSMSG_HEADER && n == len - BUSMSG_HEADER);
        check(n ? p == in + BUSMSG_HEADER : p == NULL);
        busmsg_encode(again, &h);
        check(memcmp(again, in, BUSMSG_HEADER) == 0);
        check_accepted(&h, p, n, bound);
    }
    /* Every cut of the header is too short. */
    size_t cut = len < BUSMSG_HEADER ? len : (size_t)data[0] % BUSMSG_HEADER;
    check(busmsg_decode(in, cut, bound, &h, &p, &n) == BUSMSG_E_SHORT);
    return 0;
}
