/* busmsg.h — the 40-byte header every cluster bus message starts with
 * (cluster.md §4.1), the payload rule of each message type, and the EVICT
 * reasons with the close each one produces (§6). Pure: bytes in, a struct
 * out and back, no I/O, no allocation; any thread.
 *
 * Layout, little-endian, no padding:
 *
 *   off  size  field
 *    0    1    ver = 1
 *    1    1    type            (enum busmsg_type)
 *    2    2    close_code      a WebSocket close code, 0 = none
 *    4    2    src_shard       the sending shard (< BUSMSG_MAX_SHARDS)
 *    6    2    reason          per type: EVICT reason, ATTACH_OK flags, HANDOVER kind
 *    8    8    src_node_epoch  the sending node's epoch (revision of its lease Create)
 *   16    8    link_seq        per-link sequence (cluster/link.h); SYNC: last one sent
 *   24    8    epoch           ownership epoch (fencing token) of the server-id
 *   32    8    key             a phone's 64-bit key, or a request id (ATTACH, CLAIM)
 *   40         payload         verbatim; its length is the message's length - 40
 *
 * Fields a type does not use are written as 0 and not checked on decode,
 * except where the table in busmsg_decode says otherwise. */
#ifndef RELAY_BUSMSG_H
#define RELAY_BUSMSG_H

#include <stddef.h>
#include <stdint.h>

#define BUSMSG_VERSION     1
#define BUSMSG_HEADER      40
#define BUSMSG_HASH        32  /* SHA-256 of a server-id: the only form that crosses the bus */
#define BUSMSG_MAX_SHARDS  256 /* --workers' limit: src_shard and HB's shard count stay below */
#define BUSMSG_NODE_ID_MAX 96  /* node id `<name>-<8hex>` in an HB payload */
#define BUSMSG_HB_MIN      3   /* HB payload: u16 shard count, then 1.. node id bytes */

/* Message types: the wire values are fixed; add new ones at the end, never
 * renumber. 0 is not a type, so a zeroed buffer never decodes. */
enum busmsg_type {
    BUSMSG_P2B = 1,         /* phone → binary frame; payload: the phone's message */
    BUSMSG_B2P = 2,         /* binary → phone frame and/or directive (close_code) */
    BUSMSG_NOTICE = 3,      /* phone left on its node: close_code = notice code */
    BUSMSG_DETACH = 4,      /* phone closed by a directive: drop the stub, no notice */
    BUSMSG_EVICT = 5,       /* close phone(s): reason + close_code, optional hash */
    BUSMSG_XOFF = 6,        /* binary's outbox is full: pause the server-id's phones */
    BUSMSG_XON = 7,         /* ... drained: resume them */
    BUSMSG_ATTACH = 8,      /* register phone `key` with the owner of the hash */
    BUSMSG_ATTACH_OK = 9,   /* registered, bound to `epoch`; reason: BUSMSG_ATTACH_PAUSED */
    BUSMSG_NO_SERVER = 10,  /* ATTACH reply: no binary (4404) */
    BUSMSG_AT_CAP = 11,     /* ATTACH reply: cap reached (4429) */
    BUSMSG_NOT_OWNER = 12,  /* ATTACH/CLAIM reply: this node does not own the id */
    BUSMSG_CLAIM = 13,      /* a binary claims the hash on another node; key = request id */
    BUSMSG_CONFLICT = 14,   /* CLAIM reply: the incumbent answered its probe (4409) */
    BUSMSG_HANDOVER = 15,   /* CLAIM reply: record moved to the claimant, `epoch` is new */
    BUSMSG_SYNC = 16,       /* link_seq = the last sequence sent on this link */
    BUSMSG_LINK_RESET = 17, /* the sender dropped every association over this link */
    BUSMSG_HB = 18,         /* node heartbeat on pyry.<c>.all */
    BUSMSG_CLAIM_ACK = 19,  /* CLAIM received: the owner is alive and deciding */
};
#define BUSMSG_TYPE_MAX BUSMSG_CLAIM_ACK

/* EVICT reasons (cluster.md §6): wire values fixed, never renumbered. */
enum busmsg_evict {
    BUSMSG_EVICT_RECLAIMED = 1,     /* 4404 "binary reclaimed server-id" */
    BUSMSG_EVICT_GRACE_EXPIRED = 2, /* 1000 "" */
    BUSMSG_EVICT_BINARY_GONE = 3,   /* 1000 "" (phone_forwarder_send_failed) */
    BUSMSG_EVICT_NO_BINARY = 4,     /* 1000 "" (phone_forwarder_no_binary) */
    BUSMSG_EVICT_SHUTDOWN = 5,      /* 1001 "shutting down" */
    BUSMSG_EVICT_LINK_LOST = 6,     /* 1011 "cluster link lost": the owner had dropped it */
};
#define BUSMSG_EVICT_MAX BUSMSG_EVICT_LINK_LOST

/* ATTACH_OK's reason: bit flags. */
#define BUSMSG_ATTACH_PAUSED 0x1 /* the server-id is under XOFF: start the phone paused */

/* HANDOVER's reason: how the owner let the claim win (the claimant logs
 * server_claimed for a reclaim, server_id_takeover for a takeover). */
enum busmsg_handover {
    BUSMSG_HANDOVER_RECLAIM = 1,  /* the slot was in grace */
    BUSMSG_HANDOVER_TAKEOVER = 2, /* the incumbent binary missed its probe */
};

enum busmsg_err {
    BUSMSG_E_SHORT = -1,   /* fewer than BUSMSG_HEADER bytes */
    BUSMSG_E_VERSION = -2, /* ver is not BUSMSG_VERSION */
    BUSMSG_E_TYPE = -3,    /* type is not a known enum busmsg_type */
    BUSMSG_E_PAYLOAD = -4, /* the payload's size is not one the type allows */
    BUSMSG_E_TOO_BIG = -5, /* P2B/B2P payload above the caller's bound */
    BUSMSG_E_FIELD = -6,   /* a header field holds a value its type forbids */
};

struct busmsg_hdr {
    uint8_t type; /* enum busmsg_type */
    uint16_t close_code;
    uint16_t src_shard;
    uint16_t reason;
    uint64_t src_node_epoch;
    uint64_t link_seq;
    uint64_t epoch;
    uint64_t key;
};

/* The close an EVICT reason produces on the phone's node. */
struct busmsg_close {
    uint16_t code;
    const char *reason; /* the exact literal, "" for none; static */
};

/* Writes h as the 40-byte header (version BUSMSG_VERSION). Fields are
 * written as given, without checks: the sender appends the payload the
 * type needs. */
void busmsg_encode(uint8_t out[BUSMSG_HEADER], const struct busmsg_hdr *h);

/* Decodes one whole message buf[0..len) (the header and everything after it
 * is the payload). On success returns 0, fills *h, and points *payload at
 * buf + 40 with *payload_len = len - 40 (*payload is NULL when that is 0);
 * the payload stays the caller's. On failure returns an enum busmsg_err and
 * leaves *h, *payload, *payload_len unspecified. Rules, in this order:
 *   len < 40 → E_SHORT; ver != 1 → E_VERSION; type unknown → E_TYPE;
 *   src_shard >= BUSMSG_MAX_SHARDS → E_FIELD; then per type:
 *   P2B, B2P                payload 0..max_payload, else E_TOO_BIG
 *   XOFF, XON, ATTACH, CLAIM payload exactly BUSMSG_HASH
 *   EVICT                   payload none (key names one phone) or BUSMSG_HASH
 *                           (every phone of that server-id bound to an epoch
 *                           older than `epoch`); reason a known enum
 *                           busmsg_evict and close_code its code, else E_FIELD
 *   ATTACH_OK               no payload; reason only BUSMSG_ATTACH_PAUSED bits
 *   HANDOVER                no payload; reason an enum busmsg_handover
 *   HB                      see busmsg_hb_parse (its failure is E_PAYLOAD)
 *   all others              no payload
 * A wrong payload size is E_PAYLOAD, a forbidden field value E_FIELD. */
int busmsg_decode(const uint8_t *buf, size_t len, size_t max_payload, struct busmsg_hdr *h,
                  const uint8_t **payload, size_t *payload_len);

/* Writes an HB payload: shards (1..BUSMSG_MAX_SHARDS) as u16 LE, then the
 * node id (1..BUSMSG_NODE_ID_MAX bytes of [A-Za-z0-9_-]). Returns its length,
 * or 0 (nothing written) when an argument is out of range. out needs
 * 2 + BUSMSG_NODE_ID_MAX bytes. */
size_t busmsg_hb_payload(uint8_t *out, uint16_t shards, const char *node_id, size_t node_len);

/* Reads an HB payload. Returns 0 with *shards and the node id (a slice of
 * p) filled in, or BUSMSG_E_PAYLOAD when the payload breaks the rules of
 * busmsg_hb_payload. */
int busmsg_hb_parse(const uint8_t *p, size_t len, uint16_t *shards, const char **node_id,
                    size_t *node_len);

/* "P2B", "B2P", ... for logs; "?" for a value that is not a type. Static. */
const char *busmsg_type_name(unsigned type);

/* The close an EVICT reason stands for. Returns 0 and fills *out, or
 * BUSMSG_E_FIELD for a value that is not an enum busmsg_evict. */
int busmsg_evict_close(unsigned reason, struct busmsg_close *out);

/* Short text for an enum busmsg_err (tests and debugging, not logs). */
const char *busmsg_strerror(int err);

#endif
