/* test_http.c — request heads on libhttp-parser: whole, split at every
 * offset and byte by byte with identical results; header trimming,
 * first-wins and case; token lists; upgrade leftovers; pipelining; bodies
 * and trailers; 431 at the cap; malformed input; the handshake checks in
 * order; exact response bytes. It does not test routing or the relay's own
 * header gate (relay.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"

#define CAP 65536

static const char UPGRADE_REQ[] = "GET /v1/server?x=1 HTTP/1.1\r\n"
                                  "Host: relay.example\r\n"
                                  "Connection: keep-alive, Upgrade\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                                  "Sec-WebSocket-Protocol: chat\r\n"
                                  "x-pyrycode-server:   s1 \t\r\n"
                                  "X-Pyrycode-Server: second\r\n"
                                  "X-PYRYCODE-VERSION: 0.1\r\n"
                                  "X-Pyrycode-Device-Name: \t \r\n"
                                  "User-Agent: pyry\r\n"
                                  "\r\n";

static const char ACCEPT_101[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                 "Upgrade: websocket\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                 "\r\n";

/* ---- helpers ------------------------------------------------------------ */

/* Feeds data in chunks of `step` bytes (0 = one go) until the request stops
 * taking bytes; returns the total consumed or the first error. */
static ssize_t feed_chunks(struct http_req *r, const char *data, size_t n, size_t step)
{
    size_t off = 0;
    while (off < n) {
        size_t chunk = step ? (n - off < step ? n - off : step) : n - off;
        ssize_t used = http_req_feed(r, data + off, chunk);
        if (used < 0)
            return used;
        assert_true((size_t)used <= chunk);
        off += (size_t)used;
        if ((size_t)used < chunk)
            break;
    }
    return (ssize_t)off;
}

/* Feeds data[0..split) then data[split..n): returns the total consumed. */
static ssize_t feed_split(struct http_req *r, const char *data, size_t n, size_t split)
{
    ssize_t a = http_req_feed(r, data, split);
    if (a < 0 || (size_t)a < split)
        return a;
    ssize_t b = http_req_feed(r, data + split, n - split);
    return b < 0 ? b : a + b;
}

/* Everything a caller can observe of a parsed request, flattened. */
struct seen {
    ssize_t used;
    bool head_done, msg_done, upgrade, keep_alive, conn_up, up_ws;
    unsigned method, major, minor;
    size_t buf_len;
    char path[64];
    char hdr[HDR__COUNT][64];
    bool present[HDR__COUNT];
};

static void copy_out(char *dst, const char *src, size_t len)
{
    assert_true(len < 64);
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

static struct seen observe(const struct http_req *r, ssize_t used)
{
    struct seen s;
    size_t len;
    memset(&s, 0, sizeof s);
    s.used = used;
    s.head_done = r->head_done;
    s.msg_done = r->msg_done;
    if (!r->head_done)
        return s;
    s.upgrade = r->upgrade;
    s.keep_alive = r->keep_alive;
    s.conn_up = r->conn_has_upgrade;
    s.up_ws = r->upgrade_has_websocket;
    s.method = r->method;
    s.major = r->http_major;
    s.minor = r->http_minor;
    s.buf_len = r->buf_len;
    const char *p = http_req_path(r, &len);
    copy_out(s.path, p, len);
    for (int h = 0; h < HDR__COUNT; h++) {
        const char *v = http_req_header(r, (enum http_hdr)h, &len);
        copy_out(s.hdr[h], v ? v : "", len);
        s.present[h] = r->hdr_present[h];
    }
    return s;
}

static void assert_same(const struct seen *a, const struct seen *b)
{
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->head_done, b->head_done);
    assert_int_equal(a->msg_done, b->msg_done);
    assert_int_equal(a->upgrade, b->upgrade);
    assert_int_equal(a->keep_alive, b->keep_alive);
    assert_int_equal(a->conn_up, b->conn_up);
    assert_int_equal(a->up_ws, b->up_ws);
    assert_int_equal(a->method, b->method);
    assert_int_equal(a->major, b->major);
    assert_int_equal(a->minor, b->minor);
    assert_int_equal(a->buf_len, b->buf_len);
    assert_string_equal(a->path, b->path);
    for (int h = 0; h < HDR__COUNT; h++) {
        assert_string_equal(a->hdr[h], b->hdr[h]);
        assert_int_equal(a->present[h], b->present[h]);
    }
}

/* Parses data whole, split in two at every offset and in every chunk size
 * down to byte by byte; all must agree. Returns the whole-feed result. */
static struct seen parse_all_ways(const char *data, size_t n, size_t max_head)
{
    struct http_req r;
    http_req_init(&r, max_head);
    struct seen whole = observe(&r, http_req_feed(&r, data, n));
    http_req_free(&r);
    for (size_t k = 0; k <= n; k++) {
        http_req_init(&r, max_head);
        struct seen s = observe(&r, feed_split(&r, data, n, k));
        assert_same(&whole, &s);
        http_req_free(&r);
        if (k == 0)
            continue;
        http_req_init(&r, max_head);
        s = observe(&r, feed_chunks(&r, data, n, k));
        assert_same(&whole, &s);
        http_req_free(&r);
    }
    return whole;
}

static void expect_header(const struct http_req *r, enum http_hdr h, const char *want)
{
    size_t len;
    const char *v = http_req_header(r, h, &len);
    if (!want) {
        assert_null(v);
        assert_int_equal(len, 0);
        return;
    }
    assert_non_null(v);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
}

static void parse_one(struct http_req *r, const char *req)
{
    http_req_init(r, CAP);
    assert_int_equal(http_req_feed(r, req, strlen(req)), (ssize_t)strlen(req));
    assert_true(r->head_done);
}

/* ---- request reading ---------------------------------------------------- */

static void test_upgrade_whole_split_bytewise(void **state)
{
    size_t n = strlen(UPGRADE_REQ);
    (void)state;
    struct seen s = parse_all_ways(UPGRADE_REQ, n, CAP);
    assert_int_equal(s.used, (ssize_t)n);
    assert_true(s.head_done);
    assert_true(s.msg_done);
    assert_true(s.upgrade);
    assert_int_equal(s.method, HTTP_GET);
    assert_int_equal(s.major, 1);
    assert_int_equal(s.minor, 1);
    assert_int_equal(s.buf_len, n);
    assert_string_equal(s.path, "/v1/server");
    assert_string_equal(s.hdr[HDR_HOST], "relay.example");
    assert_string_equal(s.hdr[HDR_X_SERVER], "s1"); /* trimmed, first wins, any case */
    assert_string_equal(s.hdr[HDR_X_VERSION], "0.1");
    assert_string_equal(s.hdr[HDR_USER_AGENT], "pyry");
    assert_string_equal(s.hdr[HDR_SEC_WS_KEY], "dGhlIHNhbXBsZSBub25jZQ==");
    assert_string_equal(s.hdr[HDR_X_DEVICE_NAME], ""); /* whitespace only: present, empty */
    assert_true(s.present[HDR_X_DEVICE_NAME]);
    assert_false(s.present[HDR_X_TOKEN]);
    assert_true(s.conn_up);
    assert_true(s.up_ws);
}

static void test_header_values(void **state)
{
    static const char req[] = "GET / HTTP/1.1\r\n"
                              "user-agent:\tUA one\t \r\n"
                              "USER-AGENT: UA two\r\n"
                              "X-Pyrycode-Token:\r\n"
                              "X-Pyrycode-Tokens: nope\r\n"
                              "X-Forwarded-For: 1.2.3.4, 5.6.7.8 \r\n"
                              "Sec-WebSocket-Version:13\r\n"
                              "\r\n";
    struct http_req r;
    (void)state;
    parse_all_ways(req, strlen(req), CAP);
    parse_one(&r, req);
    expect_header(&r, HDR_USER_AGENT, "UA one"); /* inner spaces kept */
    expect_header(&r, HDR_X_TOKEN, NULL);        /* empty reads as absent... */
    assert_true(r.hdr_present[HDR_X_TOKEN]);     /* ...but was there */
    expect_header(&r, HDR_X_FORWARDED_FOR, "1.2.3.4, 5.6.7.8");
    expect_header(&r, HDR_SEC_WS_VERSION, "13");
    expect_header(&r, HDR_HOST, NULL);
    assert_false(r.hdr_present[HDR_HOST]);
    assert_false(r.conn_has_upgrade);
    assert_false(r.upgrade);
    assert_true(r.msg_done);
    http_req_free(&r);
}

static void test_connection_tokens(void **state)
{
    static const struct {
        const char *headers;
        bool conn_up, up_ws;
    } rows[] = {
        {"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n", true, true},
        {"Connection: keep-alive\r\nConnection: UPGRADE\r\nUpgrade: WebSocket\r\n", true, true},
        {"Connection: Upgrade\r\nConnection: close\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n", true,
         true},
        {"Connection: ,\t upgrade\t,\r\nUpgrade: h2c, websocket\r\n", true, true},
        {"Connection: upgrades\r\nUpgrade: websocket2\r\n", false, false},
        {"Connection: keep-alive upgrade\r\nUpgrade: web socket\r\n", false, false},
        {"Connection: \r\nUpgrade: \r\n", false, false},
        {"Upgrade: websocket\r\n", false, true},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char req[512];
        int n = snprintf(req, sizeof req, "GET /v1/client HTTP/1.1\r\n%s\r\n", rows[i].headers);
        struct seen s = parse_all_ways(req, (size_t)n, CAP);
        assert_int_equal(s.used, n);
        assert_int_equal(s.conn_up, rows[i].conn_up);
        assert_int_equal(s.up_ws, rows[i].up_ws);
    }
}

static void test_upgrade_leftover_is_not_consumed(void **state)
{
    char buf[1024];
    size_t n = strlen(UPGRADE_REQ);
    (void)state;
    memcpy(buf, UPGRADE_REQ, n);
    memcpy(buf + n, "\x81\x85WSDATA", 9);
    struct seen s = parse_all_ways(buf, n + 9, CAP);
    assert_int_equal(s.used, (ssize_t)n);
    assert_true(s.upgrade);
    assert_true(s.msg_done);
    assert_int_equal(s.buf_len, n); /* WebSocket bytes are not kept as head */

    struct http_req r;
    http_req_init(&r, CAP);
    assert_int_equal(http_req_feed(&r, buf, n + 9), (ssize_t)n);
    assert_int_equal(http_req_feed(&r, buf + n, 9), 0); /* done: nothing more is ours */
    assert_int_equal(http_req_feed(&r, "GET", 3), 0);
    http_req_free(&r);
}

/* A body announced on an upgrade request is not HTTP's: parsing stops at
 * the head however the bytes arrive. */
static void test_upgrade_with_body_stops_at_head(void **state)
{
    static const char *bodies[] = {"Content-Length: 3\r\n", "Transfer-Encoding: chunked\r\n"};
    (void)state;
    for (size_t i = 0; i < 2; i++) {
        char req[512];
        int head = snprintf(req, sizeof req,
                            "GET /v1/server HTTP/1.1\r\nConnection: upgrade\r\n"
                            "Upgrade: websocket\r\n%s\r\n",
                            bodies[i]);
        memcpy(req + head, "0\r\n\r\nxyz", 8);
        struct seen s = parse_all_ways(req, (size_t)head + 8, CAP);
        assert_int_equal(s.used, head);
        assert_true(s.upgrade);
        assert_true(s.msg_done);
    }
}

/* Like conn.c: feed, and after each complete message reset and go on. */
static void test_pipelined_keep_alive(void **state)
{
    static const char three[] =
        "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST /x?q=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        "GET /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    static const char *paths[] = {"/healthz", "/x", "/y"};
    size_t n = strlen(three);
    (void)state;
    for (size_t step = 1; step <= n; step++) {
        struct http_req r;
        size_t off = 0, plen;
        int done = 0;
        http_req_init(&r, CAP);
        while (off < n) {
            size_t chunk = n - off < step ? n - off : step;
            size_t coff = 0;
            while (coff < chunk) {
                ssize_t used = http_req_feed(&r, three + off + coff, chunk - coff);
                assert_true(used >= 0);
                coff += (size_t)used;
                if (!r.msg_done) {
                    assert_int_equal(coff, chunk);
                    break;
                }
                assert_true(r.keep_alive);
                assert_false(r.upgrade);
                const char *p = http_req_path(&r, &plen);
                assert_int_equal(plen, strlen(paths[done]));
                assert_memory_equal(p, paths[done], plen);
                done++;
                http_req_reset(&r);
            }
            off += chunk;
        }
        assert_int_equal(done, 3);
        http_req_free(&r);
    }
}

static void test_bodies_skipped(void **state)
{
    static const char *reqs[] = {
        "POST /healthz HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
        "POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "4;ext=1\r\nabcd\r\nA\r\n0123456789\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1\r\nz\r\n0\r\nUser-Agent: trailer\r\nX-Pyrycode-Server: t\r\nHost: t\r\n\r\n",
        "PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    };
    (void)state;
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        char buf[512];
        size_t n = strlen(reqs[i]);
        memcpy(buf, reqs[i], n);
        memcpy(buf + n, "GET", 3); /* the next request is not ours */
        struct seen s = parse_all_ways(buf, n + 3, CAP);
        assert_int_equal(s.used, (ssize_t)n);
        assert_true(s.msg_done);
        assert_true(s.keep_alive);
        assert_true(s.buf_len < n || i == 3);    /* the body is not stored */
        assert_false(s.present[HDR_USER_AGENT]); /* trailers are ignored */
        assert_false(s.present[HDR_HOST]);
    }
}

static void test_body_pending_then_done(void **state)
{
    static const char head[] = "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
    struct http_req r;
    (void)state;
    http_req_init(&r, CAP);
    assert_int_equal(http_req_feed(&r, head, sizeof head - 1), (ssize_t)(sizeof head - 1));
    assert_true(r.head_done);
    assert_false(r.msg_done);
    assert_int_equal(http_req_feed(&r, "ab", 2), 2);
    assert_false(r.msg_done);
    assert_int_equal(http_req_feed(&r, "cdGET", 5), 2);
    assert_true(r.msg_done);
    assert_int_equal(http_req_feed(&r, "GET", 3), 0);
    http_req_free(&r);
}

static void test_http10_keep_alive(void **state)
{
    static const struct {
        const char *req;
        bool keep_alive;
        unsigned minor;
    } rows[] = {
        {"GET / HTTP/1.0\r\n\r\n", false, 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, 0},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false, 1},
        {"GET / HTTP/1.1\r\n\r\n", true, 1},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct seen s = parse_all_ways(rows[i].req, strlen(rows[i].req), CAP);
        assert_true(s.msg_done);
        assert_int_equal(s.keep_alive, rows[i].keep_alive);
        assert_int_equal(s.minor, rows[i].minor);
    }
}

static void test_paths(void **state)
{
    static const struct {
        const char *target, *path;
    } rows[] = {
        {"/v1/server", "/v1/server"},
        {"/v1/client?server=x#frag", "/v1/client"},
        {"http://host:8080/v1/client?q#f", "/v1/client"},
        {"https://host", ""},
        {"/?only=query", "/"},
        {"*", "*"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char req[256];
        int n = snprintf(req, sizeof req, "OPTIONS %s HTTP/1.1\r\n\r\n", rows[i].target);
        struct seen s = parse_all_ways(req, (size_t)n, CAP);
        assert_int_equal(s.used, n);
        assert_string_equal(s.path, rows[i].path);
    }
}

static void test_head_cap_431(void **state)
{
    char req[600];
    struct http_req r;
    (void)state;
    /* exactly at the cap is fine, however it arrives */
    int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n", 100 - 27, 0);
    assert_int_equal(n, 100);
    struct seen s = parse_all_ways(req, (size_t)n, 100);
    assert_int_equal(s.used, 100);
    assert_true(s.msg_done);
    /* one byte over fails, whole or in any pieces */
    n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n", 101 - 27, 0);
    s = parse_all_ways(req, (size_t)n, 100);
    assert_int_equal(s.used, HTTP_E_TOO_LARGE);
    /* the buffer never outgrows the cap, and a fed-up request stays failed */
    http_req_init(&r, 1500);
    memset(req, 'a', sizeof req);
    memcpy(req, "GET / HTTP/1.1\r\nX-Pad: ", 23);
    assert_int_equal(http_req_feed(&r, req, sizeof req), (ssize_t)sizeof req);
    assert_int_equal(http_req_feed(&r, req + 23, sizeof req - 23), (ssize_t)(sizeof req - 23));
    assert_int_equal(http_req_feed(&r, req + 23, sizeof req - 23), HTTP_E_TOO_LARGE);
    assert_true(r.buf_cap <= 1500);
    assert_int_equal(http_req_feed(&r, "\r\n\r\n", 4), HTTP_E_TOO_LARGE);
    http_req_free(&r);
}

/* Chunked trailers are body, not head: libhttp-parser counts them against
 * the header limit, but running over it or sending a bad byte there is a
 * 400 however the bytes were split (found by fuzz_http). */
static void test_trailers_are_body(void **state)
{
    char req[700];
    (void)state;
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "1\r\nz\r\n0\r\nT: %0*d\r\n\r\n",
                     300, 0);
    struct seen s = parse_all_ways(req, (size_t)n, 100);
    assert_int_equal(s.used, HTTP_E_BAD);
    n = snprintf(req, sizeof req,
                 "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "1\r\nz\r\n0\r\nt:ab%0*d\xff\xff\r\n\r\n",
                 60, 0);
    s = parse_all_ways(req, (size_t)n, 100);
    assert_true(s.used == HTTP_E_BAD || s.msg_done);
}

static void test_reset_buffer_policy(void **state)
{
    char req[8192];
    struct http_req r;
    (void)state;
    http_req_init(&r, CAP);
    assert_null(r.buf);
    parse_one(&r, "GET / HTTP/1.1\r\n\r\n");
    http_req_free(&r);

    http_req_init(&r, CAP);
    assert_int_equal(http_req_feed(&r, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    char *small = r.buf;
    http_req_reset(&r);
    assert_ptr_equal(r.buf, small); /* small buffers are reused */
    assert_false(r.head_done);
    assert_int_equal(r.buf_len, 0);
    int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Pad: %06000d\r\n\r\n", 0);
    assert_int_equal(http_req_feed(&r, req, (size_t)n), n);
    assert_true(r.buf_cap > 4096);
    http_req_reset(&r);
    assert_null(r.buf); /* big ones go back */
    assert_int_equal(r.buf_cap, 0);
    assert_int_equal(http_req_feed(&r, "GET /a HTTP/1.1\r\n\r\n", 19), 19);
    expect_header(&r, HDR_HOST, NULL);
    http_req_free(&r);
}

static void test_malformed(void **state)
{
    static const char *bad[] = {
        "BLAH\r\n\r\n",
        "GET / HTTP/9.9x\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",        /* space before the colon */
        "GET / HTTP/1.1\r\nUser-Agent: a\r\n  folded\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nUser-Agent: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nUser-Agent: a\x01\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    };
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct seen s = parse_all_ways(bad[i], strlen(bad[i]), CAP);
        assert_int_equal(s.used, HTTP_E_BAD);
    }
}

/* ---- handshake ---------------------------------------------------------- */

static int handshake(const char *req, char *out, size_t cap, size_t *len)
{
    struct http_req r;
    parse_one(&r, req);
    memset(out, 0, cap);
    int status = http_ws_handshake(&r, out, cap, len);
    http_req_free(&r);
    return status;
}

static void test_handshake_accept(void **state)
{
    char out[1024];
    size_t len;
    (void)state;
    /* Offered extension and subprotocol are not echoed. */
    assert_int_equal(handshake(UPGRADE_REQ, out, sizeof out, &len), 101);
    assert_int_equal(len, strlen(ACCEPT_101));
    assert_memory_equal(out, ACCEPT_101, len);
    assert_int_equal(handshake(UPGRADE_REQ, out, 10, &len), 101);
    assert_int_equal(len, 0); /* no room: nothing usable written */
}

#define UPG  "Connection: upgrade\r\nUpgrade: websocket\r\n"
#define V13  "Sec-WebSocket-Version: 13\r\n"
#define KEY  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define HINT "Connection: Upgrade\r\nUpgrade: websocket\r\n"

static void test_handshake_order(void **state)
{
    static const struct {
        const char *req;
        int status;
        const char *extra; /* headers between Connection: close and the body */
        const char *body;
    } rows[] = {
        {"GET / HTTP/1.0\r\n" UPG V13 KEY "\r\n", 426, "",
         "WebSocket protocol violation: handshake request must be at least HTTP/1.1\n"},
        {"GET / HTTP/1.1\r\nUpgrade: websocket\r\n" V13 KEY "\r\n", 426, HINT,
         "WebSocket protocol violation: Connection header does not contain Upgrade\n"},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n" V13 KEY "\r\n", 426, HINT,
         "WebSocket protocol violation: Upgrade header does not contain websocket\n"},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\n" V13 KEY "\r\n", 426, HINT,
         "WebSocket protocol violation: Upgrade header does not contain websocket\n"},
        {"POST / HTTP/1.1\r\n\r\n", 426, HINT,
         "WebSocket protocol violation: Connection header does not contain Upgrade\n"},
        {"POST / HTTP/1.1\r\n" UPG V13 KEY "\r\n", 405, "",
         "WebSocket protocol violation: handshake request method is not GET\n"},
        {"GET / HTTP/1.1\r\n" UPG KEY "Sec-WebSocket-Version: 8\r\n\r\n", 400,
         "Sec-WebSocket-Version: 13\r\n",
         "unsupported WebSocket protocol version (only 13 is supported)\n"},
        {"GET / HTTP/1.1\r\n" UPG KEY "\r\n", 400, "Sec-WebSocket-Version: 13\r\n",
         "unsupported WebSocket protocol version (only 13 is supported)\n"},
        {"GET / HTTP/1.1\r\n" UPG V13 "\r\n", 400, "",
         "WebSocket protocol violation: invalid Sec-WebSocket-Key\n"},
        {"GET / HTTP/1.1\r\n" UPG V13 "Sec-WebSocket-Key: c2hvcnQ=\r\n\r\n", 400, "",
         "WebSocket protocol violation: invalid Sec-WebSocket-Key\n"},
        {"GET / HTTP/1.1\r\n" UPG V13 "Sec-WebSocket-Key:\r\n\r\n", 400, "",
         "WebSocket protocol violation: invalid Sec-WebSocket-Key\n"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[1024], want[1024];
        size_t len;
        assert_int_equal(handshake(rows[i].req, out, sizeof out, &len), rows[i].status);
        int n = snprintf(want, sizeof want,
                         "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s",
                         rows[i].status, http_status_text(rows[i].status), strlen(rows[i].body),
                         rows[i].extra, rows[i].body);
        assert_int_equal(len, (size_t)n);
        assert_memory_equal(out, want, len);
    }
}

/* ---- responses ---------------------------------------------------------- */

static void test_responses_exact(void **state)
{
    char out[512];
    (void)state;
    static const char e429[] = "HTTP/1.1 429 Too Many Requests\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 1\r\n"
                               "X-Content-Type-Options: nosniff\r\n\r\n\n";
    assert_int_equal(http_error_response(out, sizeof out, 429, true), (ssize_t)sizeof e429 - 1);
    assert_memory_equal(out, e429, sizeof e429 - 1);

    static const char e400[] = "HTTP/1.1 400 Bad Request\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 1\r\n"
                               "Connection: close\r\n"
                               "X-Content-Type-Options: nosniff\r\n\r\n\n";
    assert_int_equal(http_error_response(out, sizeof out, 400, false), (ssize_t)sizeof e400 - 1);
    assert_memory_equal(out, e400, sizeof e400 - 1);

    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                             "Content-Length: 2\r\nConnection: close\r\n"
                             "Cache-Control: no-store\r\n\r\n{}";
    assert_int_equal(http_response(out, sizeof out, 200, "application/json; charset=utf-8",
                                   "Cache-Control: no-store\r\n", "{}", 2, false),
                     (ssize_t)sizeof ok - 1);
    assert_memory_equal(out, ok, sizeof ok - 1);

    static const char bare[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(http_response(out, sizeof out, 404, NULL, NULL, NULL, 0, true),
                     (ssize_t)sizeof bare - 1);
    assert_memory_equal(out, bare, sizeof bare - 1);

    /* Exactly enough room works; one byte less does not. */
    assert_int_equal(http_response(out, sizeof ok - 1, 200, "application/json; charset=utf-8",
                                   "Cache-Control: no-store\r\n", "{}", 2, false),
                     (ssize_t)sizeof ok - 1);
    assert_int_equal(http_response(out, sizeof ok - 2, 200, "application/json; charset=utf-8",
                                   "Cache-Control: no-store\r\n", "{}", 2, false),
                     -1);
    assert_int_equal(http_response(out, 10, 200, NULL, NULL, "x", 1, true), -1);
    assert_int_equal(http_error_response(out, 0, 500, true), -1);
}

static void test_status_text(void **state)
{
    static const struct {
        int status;
        const char *text;
    } rows[] = {
        {101, "Switching Protocols"},
        {200, "OK"},
        {400, "Bad Request"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {421, "Misdirected Request"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_string_equal(http_status_text(rows[i].status), rows[i].text);
    assert_non_null(http_status_text(999));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upgrade_whole_split_bytewise),
        cmocka_unit_test(test_header_values),
        cmocka_unit_test(test_connection_tokens),
        cmocka_unit_test(test_upgrade_leftover_is_not_consumed),
        cmocka_unit_test(test_upgrade_with_body_stops_at_head),
        cmocka_unit_test(test_pipelined_keep_alive),
        cmocka_unit_test(test_bodies_skipped),
        cmocka_unit_test(test_body_pending_then_done),
        cmocka_unit_test(test_http10_keep_alive),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_head_cap_431),
        cmocka_unit_test(test_trailers_are_body),
        cmocka_unit_test(test_reset_buffer_policy),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_handshake_accept),
        cmocka_unit_test(test_handshake_order),
        cmocka_unit_test(test_responses_exact),
        cmocka_unit_test(test_status_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
