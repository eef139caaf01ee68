#!/usr/bin/env python3
"""Writes the seed corpus for fuzz/fuzz_busmsg.c into fuzz/corpus/fuzz_busmsg/.
Run from the repository root; the files it writes are committed.

Each seed is one control byte and then one bus message. The target reads the
control byte's low 3 bits as an index into its payload bounds
{0, 1, 31, 32, 33, 1024, 65536, SIZE_MAX}. The header layout is the one of
src/cluster/busmsg.h: <BBHHHQQQQ, little-endian, 40 bytes."""
import hashlib
import os
import struct

(P2B, B2P, NOTICE, DETACH, EVICT, XOFF, XON, ATTACH, ATTACH_OK, NO_SERVER, AT_CAP,
 NOT_OWNER, CLAIM, CONFLICT, HANDOVER, SYNC, LINK_RESET, HB) = range(1, 19)
RECLAIMED, GRACE_EXPIRED, BINARY_GONE, NO_BINARY, SHUTDOWN = range(1, 6)
EVICT_CODE = {RECLAIMED: 4404, GRACE_EXPIRED: 1000, BINARY_GONE: 1000, NO_BINARY: 1000,
              SHUTDOWN: 1001}
BOUND_1024 = 5
H = hashlib.sha256(b"server-id-1").digest()


def hdr(typ, code=0, shard=0, reason=0, node=7, seq=1, epoch=42, key=0x1122334455667788, ver=1):
    return struct.pack("<BBHHHQQQQ", ver, typ, code, shard, reason, node, seq, epoch, key)


def hb(shards, node_id):
    return struct.pack("<H", shards) + node_id


def write(name, msg, bound=BOUND_1024):
    d = os.path.join("fuzz", "corpus", "fuzz_busmsg")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([bound]) + msg)


seeds = [
    ("p2b", hdr(P2B, shard=1, seq=5) + b'{"type":"hello"}'),
    ("p2b_empty", hdr(P2B)),
    ("b2p_frame", hdr(B2P, seq=2) + b'{"x":[1,2,3]}'),
    ("b2p_directive", hdr(B2P, code=4000, seq=3)),
    ("b2p_directive_frame", hdr(B2P, code=1011, seq=4) + b'"bye"'),
    ("notice", hdr(NOTICE, code=1001)),
    ("detach", hdr(DETACH)),
    ("evict_key", hdr(EVICT, code=1000, reason=BINARY_GONE)),
    ("evict_hash", hdr(EVICT, code=4404, reason=RECLAIMED, seq=0) + H),
    ("evict_shutdown", hdr(EVICT, code=1001, reason=SHUTDOWN)),
    ("evict_grace", hdr(EVICT, code=1000, reason=GRACE_EXPIRED) + H),
    ("evict_no_binary", hdr(EVICT, code=1000, reason=NO_BINARY)),
    ("xoff", hdr(XOFF) + H),
    ("xon", hdr(XON) + H),
    ("attach", hdr(ATTACH, epoch=0) + H),
    ("attach_ok", hdr(ATTACH_OK)),
    ("attach_ok_paused", hdr(ATTACH_OK, reason=1)),
    ("no_server", hdr(NO_SERVER)),
    ("at_cap", hdr(AT_CAP)),
    ("not_owner", hdr(NOT_OWNER)),
    ("claim", hdr(CLAIM, key=77) + H),
    ("conflict", hdr(CONFLICT, key=77)),
    ("handover_reclaim", hdr(HANDOVER, reason=1, epoch=43)),
    ("handover_takeover", hdr(HANDOVER, reason=2, epoch=44)),
    ("sync", hdr(SYNC, seq=1000)),
    ("link_reset", hdr(LINK_RESET, shard=3)),
    ("hb", hdr(HB, seq=0) + hb(2, b"relay-1-0a1b2c3d")),
    ("hb_max", hdr(HB, seq=0, shard=255) + hb(256, b"n" * 96)),
    ("extremes", hdr(P2B, code=0xFFFF, shard=255, reason=0xFFFF, node=2**64 - 1,
                     seq=2**64 - 1, epoch=2**64 - 1, key=2**64 - 1)),
    # Rejections, one per rule.
    ("bad_version", hdr(P2B, ver=2)),
    ("bad_type", hdr(19)),
    ("bad_shard", hdr(DETACH, shard=256)),
    ("notice_payload", hdr(NOTICE, code=1000) + b"x"),
    ("claim_short_hash", hdr(CLAIM) + H[:31]),
    ("evict_wrong_code", hdr(EVICT, code=1000, reason=RECLAIMED)),
    ("hb_bad_node", hdr(HB) + hb(1, b"a.b")),
    ("short", hdr(SYNC)[:39]),
]

for name, msg in seeds:
    write(name, msg)
write("p2b_too_big", hdr(P2B) + b"x" * 40, bound=2)
