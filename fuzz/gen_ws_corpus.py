#!/usr/bin/env python3
"""Writes the seed corpus for fuzz/fuzz_ws.c into fuzz/corpus/fuzz_ws/.
Run from the repository root; the files it writes are committed.

Each seed is one control byte and then client frames. The control byte is
read by the target as: low 5 bits = chunk size - 1, top 3 bits = index into
its cap table {0, 300, 1, 2, 125, 126, 4096, 65536} (0 = no cap).
The first twenty seeds keep the bytes gen_corpus.py gave them."""
import os
import struct

MASK = b"\x01\x02\x03\x04"
CAP_NONE, CAP_300, CAP_1, CAP_2, CAP_125, CAP_126, CAP_4096, CAP_65536 = range(8)


def frame(op, payload=b"", fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def control(cap, step):
    return bytes([(cap << 5) | (step - 1)])


# (name, frames); control byte i * 7 % 64 as before.
legacy = [
    ("text", frame(1, b'{"a":1}')),
    ("binary", frame(2, b"\x00\xff")),
    ("empty", frame(1, b"")),
    ("fragmented", frame(1, b"ab", fin=False) + frame(9, b"p") + frame(0, b"\xc3", fin=False)
     + frame(0, b"\xa9", fin=True)),
    ("ping_pong", frame(9, b"hello") + frame(10, b"")),
    ("close_code", frame(8, b"\x03\xe8bye")),
    ("close_empty", frame(8)),
    ("close_bad_code", frame(8, b"\x03\xed")),
    ("close_one_byte", frame(8, b"\x03")),
    ("rsv", frame(1, b"x", rsv=4)),
    ("unmasked", frame(1, b"x", mask=False)),
    ("bad_opcode", frame(3, b"")),
    ("long_ping", frame(9, b"x" * 126)),
    ("len16", frame(2, b"y" * 300)),
    ("len64", frame(2, b"z" * 70000)),
    ("bad_utf8", frame(1, b"\xff")),
    ("trunc_utf8", frame(1, b"\xe2\x82")),
    ("cont_without_start", frame(0, b"x")),
    ("nested_message", frame(1, b"a", fin=False) + frame(1, b"b")),
    ("top_bit_len", b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01" + MASK),
]

seeds = {name: bytes([i * 7 % 64]) + data for i, (name, data) in enumerate(legacy)}

seeds.update({
    "close_bad_reason": control(CAP_NONE, 2) + frame(8, b"\x03\xe8\xff"),
    "close_reason_utf8": control(CAP_NONE, 3) + frame(8, b"\x0f\xa0bye \xc3\xa9"),
    "cap_exact": control(CAP_300, 7) + frame(1, b"a" * 150, fin=False) + frame(9, b"p")
    + frame(0, b"a" * 150),
    "cap_over": control(CAP_300, 9) + frame(1, b"a" * 150, fin=False) + frame(0, b"a" * 151),
    "cap_header_64": control(CAP_65536, 16) + frame(2, b"q" * 65537)[:20],
    "cap1_small": control(CAP_1, 1) + frame(1, b"") + frame(2, b"a") + frame(1, b"ab"),
    "utf8_split_fragments": control(CAP_4096, 4) + frame(1, b"\xf0", fin=False)
    + frame(0, b"\x9f", fin=False) + frame(10, b"") + frame(0, b"\x98", fin=False)
    + frame(0, b"\x80"),
    "empty_cont_fin": control(CAP_2, 5) + frame(2, b"", fin=False) + frame(0, b"x", fin=False)
    + frame(0, b""),
    "binary_in_text": control(CAP_NONE, 6) + frame(1, b"a", fin=False) + frame(2, b"b"),
    "ping_125": control(CAP_125, 11) + frame(9, b"x" * 125) + frame(1, b"y" * 125),
    "ping_len16": control(CAP_126, 4) + b"\x89\xfe\x00\x05" + MASK + b"abcde",
    "fragmented_close": control(CAP_NONE, 1) + frame(8, b"", fin=False),
    "utf8_bad_mid_fragment": control(CAP_NONE, 2) + frame(1, b"ok\xc0", fin=False)
    + frame(0, b"x"),
    "multi": control(CAP_4096, 13) + frame(1, b"hi") + frame(2, b"\x00" * 200) + frame(9, b"")
    + frame(1, b"\xe2\x82\xac") + frame(8, b"\x0b\xb8app"),
})

d = os.path.join("fuzz", "corpus", "fuzz_ws")
os.makedirs(d, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
