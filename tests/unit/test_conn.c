/* test_conn.c — one connection driven through its pump on a real loop:
 * upgraded through the handoff path (the request head is already parsed),
 * then WebSocket frames written by the test on the other end of a
 * socketpair. Covers the echo path, a control frame that must wait for a
 * frame the kernel took in part, pausing and resuming reads from the hooks,
 * the close handshake ending in linger and EOF, and a stalled peer's write
 * timeout reported to the hooks once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/util.h"
#include "codec/ws.h"
#include "net/conn.h"
#include "net/conn_internal.h" /* struct handoff: the test builds its own */
#include "net/shard.h"

#define BIG (1024 * 1024)

static struct config cfg;
static const char resp101[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

/* What the hooks saw. */
static struct conn *the_conn;
static int messages, ws_ends, write_failures, frees;
static size_t last_len;
static bool echo, pause_after_first, send_big;
static uint16_t end_sent, end_rcvd;

static void on_request(struct conn *c, const struct http_req *r)
{
    (void)r;
    the_conn = c;
    conn_ws_accept(c, resp101, sizeof resp101 - 1);
}

static void on_message(struct conn *c, uint8_t *data, size_t len)
{
    messages++;
    last_len = len;
    if (echo) {
        uv_buf_t part = uv_buf_init((char *)data, (unsigned)len);
        conn_ws_send(c, &part, 1, false);
    }
    if (send_big) {
        static uint8_t big[BIG];
        memset(big, 'b', sizeof big);
        uv_buf_t part = uv_buf_init((char *)big, sizeof big);
        conn_ws_send(c, &part, 1, false);
    }
    if (pause_after_first && messages == 1)
        conn_pause_reading(c, true);
}

static void on_ws_end(struct conn *c)
{
    ws_ends++;
    end_sent = conn_close_sent(c);
    end_rcvd = conn_close_rcvd(c);
}

static void on_write_failed(struct conn *c, const char *err)
{
    (void)c;
    (void)err;
    write_failures++;
}

static void on_free(struct conn *c)
{
    (void)c;
    frees++;
    the_conn = NULL;
}

static const struct conn_hooks hooks = {.on_request = on_request,
                                        .on_message = on_message,
                                        .on_ws_end = on_ws_end,
                                        .on_write_failed = on_write_failed,
                                        .on_free = on_free};
static const struct conn_opts opts = {.hooks = &hooks};

struct rig {
    uv_loop_t loop;
    struct shard s;
    _Atomic size_t live;
    int peer; /* the test's end */
};

static void rig_open(struct rig *r)
{
    int pair[2];
    static const char head[] = "GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n";
    the_conn = NULL;
    messages = ws_ends = write_failures = frees = 0;
    echo = pause_after_first = send_big = false;
    uv_loop_init(&r->loop);
    shard_init(&r->s, &r->loop, &cfg, &conn_shard_ops, &hooks, NULL);
    atomic_init(&r->live, 1);
    r->s.live = &r->live;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    r->peer = pair[1];
    struct handoff *h = xcalloc(1, sizeof *h);
    h->fd = pair[0];
    h->opts = &opts;
    h->req = xmalloc(sizeof *h->req);
    http_req_init(h->req, 4096);
    assert_int_equal(http_req_feed(h->req, head, sizeof head - 1), (ssize_t)(sizeof head - 1));
    h->peer.sa.sa_family = AF_UNSPEC;
    conn_shard_ops.adopt(&r->s, &h->node);
    assert_non_null(the_conn);
    assert_true(conn_is_open(the_conn));
}

static void rig_close(struct rig *r)
{
    if (the_conn)
        conn_abort(the_conn);
    for (int i = 0; i < 100 && atomic_load(&r->live) > 0; i++)
        uv_run(&r->loop, UV_RUN_NOWAIT);
    assert_int_equal(atomic_load(&r->live), 0);
    close(r->peer);
    shard_close(&r->s);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r->loop), 0);
}

static void spin(struct rig *r, int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&r->loop, UV_RUN_NOWAIT);
}

/* A masked client frame written to the peer end. */
static void peer_frame(struct rig *r, uint8_t op, const void *payload, size_t len)
{
    static const uint8_t mask[4] = {1, 2, 3, 4};
    uint8_t *buf = xmalloc(WS_MAX_HEADER + len);
    size_t hl = ws_frame_header(buf, true, op, len, mask);
    memcpy(buf + hl, payload, len);
    ws_mask(buf + hl, len, mask, 0);
    assert_int_equal(write(r->peer, buf, hl + len), (ssize_t)(hl + len));
    free(buf);
}

/* Reads from the peer end until want bytes arrived (the loop keeps running
 * so the connection can write), bounded. */
static size_t peer_read(struct rig *r, uint8_t *out, size_t want)
{
    size_t got = 0;
    fcntl(r->peer, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 20000 && got < want; i++) {
        ssize_t n = read(r->peer, out + got, want - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0)
            break;
        uv_run(&r->loop, UV_RUN_NOWAIT);
    }
    return got;
}

/* Parses one unmasked server frame at p: opcode, payload offset, length. */
static size_t frame_at(const uint8_t *p, uint8_t *op, size_t *len)
{
    *op = p[0] & 0x0f;
    size_t l = p[1] & 0x7f, hl = 2;
    if (l == 126) {
        l = (size_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (l == 127) {
        l = 0;
        for (int i = 0; i < 8; i++)
            l = l << 8 | p[2 + i];
        hl = 10;
    }
    *len = l;
    return hl;
}

static void test_echo_through_the_pump(void **state)
{
    struct rig r;
    (void)state;
    rig_open(&r);
    echo = true;
    uint8_t buf[256];
    assert_int_equal(peer_read(&r, buf, sizeof resp101 - 1), sizeof resp101 - 1);
    assert_memory_equal(buf, resp101, sizeof resp101 - 1);
    peer_frame(&r, WS_OP_TEXT, "{\"a\":1}", 7);
    assert_int_equal(peer_read(&r, buf, 2 + 7), 9);
    uint8_t op;
    size_t len, hl = frame_at(buf, &op, &len);
    assert_int_equal(op, WS_OP_TEXT);
    assert_int_equal(len, 7);
    assert_memory_equal(buf + hl, "{\"a\":1}", 7);
    assert_int_equal(messages, 1);
    rig_close(&r);
}

/* The kernel takes only part of a 1 MiB frame; a ping arriving meanwhile
 * is answered after that frame, never inside it. */
static void test_pong_waits_for_a_started_frame(void **state)
{
    struct rig r;
    (void)state;
    rig_open(&r);
    uint8_t *buf = xmalloc(2 * BIG);
    assert_int_equal(peer_read(&r, buf, sizeof resp101 - 1), sizeof resp101 - 1);
    send_big = true;
    peer_frame(&r, WS_OP_TEXT, "{}", 2);
    spin(&r, 50); /* the big frame is sent; the socket takes part of it */
    assert_true(conn_queued_bytes(the_conn) > 0);
    send_big = false;
    peer_frame(&r, WS_OP_PING, "pp", 2);
    spin(&r, 50);
    size_t want = 10 + BIG + 2 + 2;
    assert_int_equal(peer_read(&r, buf, want), want);
    uint8_t op;
    size_t len, hl = frame_at(buf, &op, &len);
    assert_int_equal(op, WS_OP_TEXT);
    assert_int_equal(len, BIG);
    for (size_t i = 0; i < BIG; i++)
        if (buf[hl + i] != 'b')
            fail_msg("byte %zu of the big frame is %#x", i, buf[hl + i]);
    hl += frame_at(buf + hl + BIG, &op, &len) + BIG;
    assert_int_equal(op, WS_OP_PONG);
    assert_int_equal(len, 2);
    assert_memory_equal(buf + hl, "pp", 2);
    assert_int_equal(conn_queued_bytes(the_conn), 0);
    free(buf);
    rig_close(&r);
}

static void test_pause_and_resume_from_the_hooks(void **state)
{
    struct rig r;
    (void)state;
    rig_open(&r);
    pause_after_first = true;
    uint8_t buf[64];
    peer_read(&r, buf, sizeof resp101 - 1);
    peer_frame(&r, WS_OP_TEXT, "1", 1);
    spin(&r, 20);
    assert_int_equal(messages, 1);
    peer_frame(&r, WS_OP_TEXT, "22", 2);
    spin(&r, 20);
    assert_int_equal(messages, 1); /* paused: not read */
    conn_pause_reading(the_conn, false);
    spin(&r, 20);
    assert_int_equal(messages, 2);
    assert_int_equal(last_len, 2);
    rig_close(&r);
}

/* Our close, the peer's answer, then linger: the peer sees our close
 * frame, then EOF; the hooks hear the end once, with both codes. */
static void test_close_handshake_then_linger(void **state)
{
    struct rig r;
    (void)state;
    rig_open(&r);
    uint8_t buf[64];
    peer_read(&r, buf, sizeof resp101 - 1);
    conn_ws_close(the_conn, WS_CLOSE_NORMAL, "bye", false);
    assert_int_equal(ws_ends, 1);
    assert_int_equal(peer_read(&r, buf, 2 + 2 + 3), 7);
    uint8_t op;
    size_t len, hl = frame_at(buf, &op, &len);
    assert_int_equal(op, WS_OP_CLOSE);
    assert_int_equal(len, 5);
    assert_int_equal(buf[hl] << 8 | buf[hl + 1], WS_CLOSE_NORMAL);
    assert_memory_equal(buf + hl + 2, "bye", 3);
    uint8_t code[2] = {WS_CLOSE_NORMAL >> 8, WS_CLOSE_NORMAL & 0xff};
    peer_frame(&r, WS_OP_CLOSE, code, 2);
    spin(&r, 20);
    assert_int_equal(conn_state(the_conn), CONN_LINGER);
    assert_int_equal(peer_read(&r, buf, 1), 0); /* our FIN */
    shutdown(r.peer, SHUT_WR);                  /* theirs: the connection goes */
    for (int i = 0; i < 100 && frees == 0; i++)
        uv_run(&r.loop, UV_RUN_NOWAIT);
    assert_int_equal(frees, 1);
    assert_int_equal(ws_ends, 1);
    assert_int_equal(end_sent, WS_CLOSE_NORMAL);
    rig_close(&r);
}

/* The peer stops reading for good while a frame waits: no progress within
 * --write-timeout (200 ms here) fails the write, the hooks hear it once,
 * and the connection goes. */
static void test_stalled_peer_write_timeout(void **state)
{
    struct rig r;
    (void)state;
    int64_t saved = cfg.write_timeout_ns;
    cfg.write_timeout_ns = 200 * NS_PER_MS;
    rig_open(&r);
    uint8_t buf[64];
    peer_read(&r, buf, sizeof resp101 - 1);
    send_big = true;
    peer_frame(&r, WS_OP_TEXT, "{}", 2);
    spin(&r, 20);
    assert_true(conn_queued_bytes(the_conn) > 0);
    uint64_t start = uv_hrtime();
    for (int i = 0; i < 1000 && frees == 0 && uv_hrtime() - start < 3000 * NS_PER_MS; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    assert_int_equal(write_failures, 1);
    assert_int_equal(ws_ends, 1);
    assert_int_equal(frees, 1);
    assert_int_equal(end_sent, WS_CLOSE_INTERNAL); /* counted as closed 1011 */
    assert_true(uv_hrtime() - start >= 150 * NS_PER_MS);
    rig_close(&r);
    cfg.write_timeout_ns = saved;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    config_defaults(&cfg, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_through_the_pump),
        cmocka_unit_test(test_pong_waits_for_a_started_frame),
        cmocka_unit_test(test_pause_and_resume_from_the_hooks),
        cmocka_unit_test(test_close_handshake_then_linger),
        cmocka_unit_test(test_stalled_peer_write_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
