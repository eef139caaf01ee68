"""Frame-level rules driven with hand-built frames: ping/pong, fragmentation,
size cap, masking, RSV bits, UTF-8, message deadline, close handshake."""
import json
import time

import pytest

from conftest import Raw, client_headers, close_payload, server_headers

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def pair(relay, sid="s1"):
    b = Raw(relay.port, "/v1/server", server_headers(sid))
    assert b.status == 101
    relay.wait_log("msg=server_claimed")
    p = Raw(relay.port, "/v1/client", client_headers(sid))
    assert p.status == 101
    relay.wait_log("msg=phone_registered")
    return b, p


def test_ping_answered_with_same_payload(relay):
    b = Raw(relay.port)
    b.send_frame(OP_PING, b"hello-123")
    assert b.recv_frame() == (True, OP_PONG, b"hello-123")
    b.send_frame(OP_PING, b"")
    assert b.recv_frame() == (True, OP_PONG, b"")


def test_fragmented_message_with_interleaved_ping_is_forwarded(relay):
    b, p = pair(relay)
    p.send_frame(OP_TEXT, b'{"a":', fin=False)
    p.send_frame(OP_PING, b"mid")
    assert p.recv_frame() == (True, OP_PONG, b"mid")
    p.send_frame(OP_CONT, b'"\xc3', fin=False)   # UTF-8 sequence split across fragments
    p.send_frame(OP_CONT, b'\xa9"}', fin=True)
    fin, op, payload = b.recv_frame()
    assert op == OP_TEXT and fin
    env = json.loads(payload)
    assert env["frame"] == {"a": "\u00e9"}


def test_binary_opcode_from_phone_forwarded_as_text(relay):
    b, p = pair(relay)
    p.send_frame(OP_BIN, b'[1,2]')
    fin, op, payload = b.recv_frame()
    assert op == OP_TEXT and json.loads(payload)["frame"] == [1, 2]


def test_size_cap_boundary(relay_factory):
    relay = relay_factory("--max-message-bytes", "1000")
    b, p = pair(relay)
    body = b'"' + b"x" * 998 + b'"'          # exactly the cap
    p.send_frame(OP_TEXT, body)
    fin, op, payload = b.recv_frame()
    assert json.loads(payload)["frame"] == "x" * 998
    p.send_frame(OP_TEXT, b'"' + b"x" * 999 + b'"')   # cap + 1
    assert p.recv_close() == (1009, "")


def test_size_cap_across_fragments(relay_factory):
    relay = relay_factory("--max-message-bytes", "100")
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b"x" * 60, fin=False)
    b.send_frame(OP_CONT, b"x" * 41, fin=True)
    assert b.recv_close() == (1009, "")


def test_unmasked_frame_1002(relay):
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b"{}", mask=False)
    assert b.recv_close() == (1002, "")
    b.send_frame(OP_CLOSE, close_payload(1002))  # complete the handshake
    assert b.eof(timeout=2)


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_rsv_bits_1002(relay, rsv):
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b"{}", rsv=rsv)
    assert b.recv_close() == (1002, "")


def test_unknown_opcode_and_bad_control_frames_1002(relay):
    for data in ([(3, b"", True)], [(OP_PING, b"x" * 126, True)], [(OP_PING, b"", False)],
                 [(OP_CONT, b"x", True)]):
        b = Raw(relay.port)
        for op, payload, fin in data:
            b.send_frame(op, payload, fin=fin)
        assert b.recv_close() == (1002, ""), data
        b.close()


def test_invalid_utf8_1007(relay):
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b'"\xff"')
    assert b.recv_close() == (1007, "")


def test_truncated_utf8_at_message_end_1007(relay):
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b'"\xe2\x82', fin=False)
    b.send_frame(OP_CONT, b"", fin=True)
    assert b.recv_close() == (1007, "")


def test_message_deadline_1008(relay_factory):
    relay = relay_factory("--message-deadline", "400ms")
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b'{"a":', fin=False)
    start = time.time()
    assert b.recv_close() == (1008, "message deadline exceeded")
    assert 0.3 <= time.time() - start < 2.0


def test_dribbled_frame_hits_deadline(relay_factory):
    relay = relay_factory("--message-deadline", "400ms")
    b = Raw(relay.port)
    b.send_raw(b"\x81\x85")  # header of a 5-byte masked frame, then nothing
    assert b.recv_close() == (1008, "message deadline exceeded")


def test_idle_between_messages_is_fine(relay_factory):
    relay = relay_factory("--message-deadline", "300ms")
    b, p = pair(relay)
    time.sleep(0.6)
    p.send_frame(OP_TEXT, b"1")
    assert json.loads(b.recv_frame()[2])["frame"] == 1


def test_client_close_is_echoed_then_tcp_closed(relay):
    b = Raw(relay.port)
    b.send_frame(OP_CLOSE, close_payload(4000, b"bye"))
    assert b.recv_close() == (4000, "")
    assert b.eof(timeout=2)


def test_close_without_status_echoed_empty(relay):
    b = Raw(relay.port)
    b.send_frame(OP_CLOSE, b"")
    assert b.recv_close() == (None, "")


def test_close_with_invalid_code_1002(relay):
    b = Raw(relay.port)
    b.send_frame(OP_CLOSE, close_payload(1005))
    assert b.recv_close() == (1002, "")


def test_relay_close_waits_for_reply_then_drops(relay_factory):
    relay = relay_factory("--close-timeout", "500ms")
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b"x", mask=False)      # provoke a 1002 close from the relay
    assert b.recv_close() == (1002, "")
    start = time.time()
    assert b.eof(timeout=3)                      # we never answer: TCP dropped after ~0.5 s
    assert 0.3 <= time.time() - start < 2.0


def test_largest_control_payload_echoed(relay):
    b = Raw(relay.port)
    payload = bytes(range(125))
    b.send_frame(OP_PING, payload)
    assert b.recv_frame() == (True, OP_PONG, payload)


def test_fragmented_message_accepted_connection_stays_usable(relay):
    """Routing-independent: a fragmented message with pings between the
    fragments is taken without a close, and the connection still answers."""
    b = Raw(relay.port)
    b.send_frame(OP_BIN, b"\x00\x01", fin=False)
    b.send_frame(OP_PING, b"p1")
    assert b.recv_frame() == (True, OP_PONG, b"p1")
    b.send_frame(OP_CONT, b"\x02" * 300, fin=False)    # 16-bit length form
    b.send_frame(OP_CONT, b"", fin=False)              # empty fragment
    b.send_frame(OP_CONT, b"\x03", fin=True)
    b.send_frame(OP_TEXT, "caf\u00e9".encode(), fin=False)
    b.send_frame(OP_CONT, "\u20ac".encode(), fin=True)
    b.send_frame(OP_PING, b"after")
    assert b.recv_frame() == (True, OP_PONG, b"after")


def test_default_cap_boundary_262144(relay):
    b = Raw(relay.port)
    b.send_frame(OP_BIN, b"x" * 262144)                # exactly the default cap
    b.send_frame(OP_PING, b"ok")
    assert b.recv_frame() == (True, OP_PONG, b"ok")
    b.send_frame(OP_BIN, b"x" * 262145)                # cap + 1
    assert b.recv_close() == (1009, "")


def test_new_data_frame_inside_fragmented_message_1002(relay):
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b"a", fin=False)
    b.send_frame(OP_TEXT, b"b", fin=True)
    assert b.recv_close() == (1002, "")


@pytest.mark.parametrize("code,reason", [(1000, b""), (1000, b"done"), (4000, b"bye")])
def test_client_close_code_echoed(relay, code, reason):
    b = Raw(relay.port, "/v1/server")
    b.send_frame(OP_CLOSE, close_payload(code, reason))
    got_code, _ = b.recv_close()
    assert got_code == code
    assert b.eof(timeout=2)


def test_relay_close_answered_drops_tcp_promptly(relay_factory):
    relay = relay_factory("--close-timeout", "5s")
    b = Raw(relay.port)
    b.send_frame(OP_TEXT, b"x", mask=False)
    assert b.recv_close() == (1002, "")
    start = time.time()
    b.send_frame(OP_CLOSE, close_payload(1002))
    assert b.eof(timeout=3)
    assert time.time() - start < 1.0      # not the 5 s close timeout
