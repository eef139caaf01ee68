/* proxyproto.c — PROXY protocol v2 header reader (docs/features/proxy-protocol.md). It copies at
 * most the fixed part and the address block (52 bytes) and counts the TLV
 * bytes that follow without keeping them, so any split of the input gives
 * the same result. It knows nothing of sockets or timeouts (conn.c). */
#include "codec/proxyproto.h"

#include <string.h>
#include <sys/socket.h>

static const uint8_t sig[PROXYPROTO_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define CMD_PROXY 0x1
#define FAM_TCP4  0x11
#define FAM_TCP6  0x21

void proxyproto_init(struct proxyproto *p)
{
    memset(p, 0, sizeof *p);
}

/* Address-block bytes the family needs (called once byte 13 is in). */
static uint32_t addr_len(const struct proxyproto *p)
{
    return p->head[13] == FAM_TCP4 ? 12 : 36;
}

/* Checks byte i of the fixed part as soon as it arrives. */
static int check_fixed(struct proxyproto *p, uint32_t i)
{
    uint8_t b = p->head[i];
    if (i < PROXYPROTO_SIG_LEN)
        return b == sig[i] ? 0 : PP_E_SIGNATURE;
    if (i == 12) {
        if (b >> 4 != 2)
            return PP_E_VERSION;
        return (b & 0x0F) == CMD_PROXY ? 0 : PP_E_COMMAND;
    }
    if (i == 13)
        return b == FAM_TCP4 || b == FAM_TCP6 ? 0 : PP_E_FAMILY;
    if (i == 15) {
        uint32_t len = (uint32_t)p->head[14] << 8 | p->head[15];
        if (len < addr_len(p))
            return PP_E_LENGTH;
        p->total = PROXYPROTO_FIXED_LEN + len;
    }
    return 0;
}

static void fill_result(struct proxyproto *p)
{
    const uint8_t *a = p->head + PROXYPROTO_FIXED_LEN;
    if (p->head[13] == FAM_TCP4) {
        p->family = AF_INET;
        memcpy(p->src, a, 4);
        p->src_port = (uint16_t)(a[8] << 8 | a[9]);
    } else {
        p->family = AF_INET6;
        memcpy(p->src, a, 16);
        p->src_port = (uint16_t)(a[32] << 8 | a[33]);
    }
}

ssize_t proxyproto_feed(struct proxyproto *p, const uint8_t *buf, size_t len)
{
    size_t used = 0;
    /* The fixed part and the address block are copied byte by byte: at most
     * 52 bytes per connection, and every check sees whole fields. */
    while (used < len && (!p->total || p->have < PROXYPROTO_FIXED_LEN + addr_len(p))) {
        uint32_t i = p->have++;
        p->head[i] = buf[used++];
        if (i < PROXYPROTO_FIXED_LEN) {
            int err = check_fixed(p, i);
            if (err)
                return err;
        }
    }
    if (!p->total || p->have < PROXYPROTO_FIXED_LEN + addr_len(p))
        return 0;
    /* TLVs: counted, never stored. */
    size_t skip = p->total - p->have;
    if (skip > len - used)
        skip = len - used;
    p->have += (uint32_t)skip;
    used += skip;
    if (p->have < p->total)
        return 0;
    fill_result(p);
    return (ssize_t)used;
}

const char *proxyproto_strerror(int err)
{
    switch (err) {
    case PP_E_SIGNATURE:
        return "not a PROXY protocol v2 signature";
    case PP_E_VERSION:
        return "unsupported PROXY protocol version";
    case PP_E_COMMAND:
        return "PROXY protocol command is not PROXY";
    case PP_E_FAMILY:
        return "PROXY protocol family is not TCP over IPv4 or IPv6";
    case PP_E_LENGTH:
        return "PROXY protocol address block too short";
    default:
        return "ok";
    }
}
