/* busmsg.c — encoder and checking decoder of the cluster bus header
 * (cluster.md §4.1): fixed little-endian offsets read and written byte by
 * byte, so the host's byte order and alignment never matter, and one table
 * of what payload each message type may carry. It does not route, sequence
 * (cluster/link.c) or look inside P2B/B2P payloads: those are forwarded
 * verbatim. */
#include "cluster/busmsg.h"

#include <string.h>

#define OFF_VER    0
#define OFF_TYPE   1
#define OFF_CODE   2
#define OFF_SHARD  4
#define OFF_REASON 6
#define OFF_NODE   8
#define OFF_SEQ    16
#define OFF_EPOCH  24
#define OFF_KEY    32

/* What a type's payload may be. */
enum shape { NONE, DATA, HASH, EVICT_SHAPE, HB_SHAPE };

static const struct {
    const char *name;
    enum shape shape;
} types[BUSMSG_TYPE_MAX + 1] = {
    [BUSMSG_P2B] = {"P2B", DATA},
    [BUSMSG_B2P] = {"B2P", DATA},
    [BUSMSG_NOTICE] = {"NOTICE", NONE},
    [BUSMSG_DETACH] = {"DETACH", NONE},
    [BUSMSG_EVICT] = {"EVICT", EVICT_SHAPE},
    [BUSMSG_XOFF] = {"XOFF", HASH},
    [BUSMSG_XON] = {"XON", HASH},
    [BUSMSG_ATTACH] = {"ATTACH", HASH},
    [BUSMSG_ATTACH_OK] = {"ATTACH_OK", NONE},
    [BUSMSG_NO_SERVER] = {"NO_SERVER", NONE},
    [BUSMSG_AT_CAP] = {"AT_CAP", NONE},
    [BUSMSG_NOT_OWNER] = {"NOT_OWNER", NONE},
    [BUSMSG_CLAIM] = {"CLAIM", HASH},
    [BUSMSG_CONFLICT] = {"CONFLICT", NONE},
    [BUSMSG_HANDOVER] = {"HANDOVER", NONE},
    [BUSMSG_SYNC] = {"SYNC", NONE},
    [BUSMSG_LINK_RESET] = {"LINK_RESET", NONE},
    [BUSMSG_HB] = {"HB", HB_SHAPE},
    [BUSMSG_CLAIM_ACK] = {"CLAIM_ACK", NONE},
};

static const struct busmsg_close evict_closes[BUSMSG_EVICT_MAX + 1] = {
    [BUSMSG_EVICT_RECLAIMED] = {4404, "binary reclaimed server-id"},
    [BUSMSG_EVICT_GRACE_EXPIRED] = {1000, ""},
    [BUSMSG_EVICT_BINARY_GONE] = {1000, ""},
    [BUSMSG_EVICT_NO_BINARY] = {1000, ""},
    [BUSMSG_EVICT_SHUTDOWN] = {1001, "shutting down"},
    [BUSMSG_EVICT_LINK_LOST] = {1011, "cluster link lost"},
};

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void busmsg_encode(uint8_t out[BUSMSG_HEADER], const struct busmsg_hdr *h)
{
    out[OFF_VER] = BUSMSG_VERSION;
    out[OFF_TYPE] = h->type;
    put16(out + OFF_CODE, h->close_code);
    put16(out + OFF_SHARD, h->src_shard);
    put16(out + OFF_REASON, h->reason);
    put64(out + OFF_NODE, h->src_node_epoch);
    put64(out + OFF_SEQ, h->link_seq);
    put64(out + OFF_EPOCH, h->epoch);
    put64(out + OFF_KEY, h->key);
}

static void read_fields(const uint8_t *buf, struct busmsg_hdr *h)
{
    h->type = buf[OFF_TYPE];
    h->close_code = get16(buf + OFF_CODE);
    h->src_shard = get16(buf + OFF_SHARD);
    h->reason = get16(buf + OFF_REASON);
    h->src_node_epoch = get64(buf + OFF_NODE);
    h->link_seq = get64(buf + OFF_SEQ);
    h->epoch = get64(buf + OFF_EPOCH);
    h->key = get64(buf + OFF_KEY);
}

/* The header fields a type gives a meaning to beyond "any value". */
static int check_reason(const struct busmsg_hdr *h)
{
    struct busmsg_close c;
    switch (h->type) {
    case BUSMSG_EVICT:
        if (busmsg_evict_close(h->reason, &c) != 0 || c.code != h->close_code)
            return BUSMSG_E_FIELD;
        return 0;
    case BUSMSG_ATTACH_OK:
        return h->reason & ~BUSMSG_ATTACH_PAUSED ? BUSMSG_E_FIELD : 0;
    case BUSMSG_HANDOVER:
        return h->reason == BUSMSG_HANDOVER_RECLAIM || h->reason == BUSMSG_HANDOVER_TAKEOVER
                   ? 0
                   : BUSMSG_E_FIELD;
    default:
        return 0;
    }
}

static int check_payload(enum shape shape, const uint8_t *p, size_t n, size_t max_payload)
{
    uint16_t shards;
    const char *id;
    size_t id_len;
    switch (shape) {
    case NONE:
        return n == 0 ? 0 : BUSMSG_E_PAYLOAD;
    case DATA:
        return n <= max_payload ? 0 : BUSMSG_E_TOO_BIG;
    case HASH:
        return n == BUSMSG_HASH ? 0 : BUSMSG_E_PAYLOAD;
    case EVICT_SHAPE:
        return n == 0 || n == BUSMSG_HASH ? 0 : BUSMSG_E_PAYLOAD;
    case HB_SHAPE:
        return busmsg_hb_parse(p, n, &shards, &id, &id_len);
    }
    return BUSMSG_E_PAYLOAD;
}

int busmsg_decode(const uint8_t *buf, size_t len, size_t max_payload, struct busmsg_hdr *h,
                  const uint8_t **payload, size_t *payload_len)
{
    if (len < BUSMSG_HEADER)
        return BUSMSG_E_SHORT;
    if (buf[OFF_VER] != BUSMSG_VERSION)
        return BUSMSG_E_VERSION;
    uint8_t type = buf[OFF_TYPE];
    if (type == 0 || type > BUSMSG_TYPE_MAX)
        return BUSMSG_E_TYPE;
    read_fields(buf, h);
    if (h->src_shard >= BUSMSG_MAX_SHARDS)
        return BUSMSG_E_FIELD;
    const uint8_t *p = len > BUSMSG_HEADER ? buf + BUSMSG_HEADER : NULL;
    size_t n = len - BUSMSG_HEADER;
    int err = check_payload(types[type].shape, p, n, max_payload);
    if (err == 0)
        err = check_reason(h);
    if (err)
        return err;
    *payload = p;
    *payload_len = n;
    return 0;
}

static int node_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int node_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > BUSMSG_NODE_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!node_char(id[i]))
            return 0;
    return 1;
}

size_t busmsg_hb_payload(uint8_t *out, uint16_t shards, const char *node_id, size_t node_len)
{
    if (shards == 0 || shards > BUSMSG_MAX_SHARDS || !node_id_valid(node_id, node_len))
        return 0;
    put16(out, shards);
    memcpy(out + 2, node_id, node_len);
    return 2 + node_len;
}

int busmsg_hb_parse(const uint8_t *p, size_t len, uint16_t *shards, const char **node_id,
                    size_t *node_len)
{
    if (len < BUSMSG_HB_MIN)
        return BUSMSG_E_PAYLOAD;
    uint16_t s = get16(p);
    const char *id = (const char *)p + 2;
    if (s == 0 || s > BUSMSG_MAX_SHARDS || !node_id_valid(id, len - 2))
        return BUSMSG_E_PAYLOAD;
    *shards = s;
    *node_id = id;
    *node_len = len - 2;
    return 0;
}

const char *busmsg_type_name(unsigned type)
{
    return type >= 1 && type <= BUSMSG_TYPE_MAX ? types[type].name : "?";
}

int busmsg_evict_close(unsigned reason, struct busmsg_close *out)
{
    if (reason < 1 || reason > BUSMSG_EVICT_MAX)
        return BUSMSG_E_FIELD;
    *out = evict_closes[reason];
    return 0;
}

const char *busmsg_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case BUSMSG_E_SHORT:
        return "shorter than the 40-byte header";
    case BUSMSG_E_VERSION:
        return "unknown header version";
    case BUSMSG_E_TYPE:
        return "unknown message type";
    case BUSMSG_E_PAYLOAD:
        return "payload size not allowed for the type";
    case BUSMSG_E_TOO_BIG:
        return "payload above the bound";
    case BUSMSG_E_FIELD:
        return "header field value not allowed for the type";
    default:
        return "unknown error";
    }
}
