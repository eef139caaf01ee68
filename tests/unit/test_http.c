/* test_http.c — request heads on libhttp-parser: whole, split at every
 * offset and byte by byte; header trimming and first-wins; token lists;
 * upgrade leftovers; pipelining; bodies; 431; the handshake in order; exact
 * response bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static const char UPGRADE_REQ[] = "GET /v1/server?x=1 HTTP/1.1\r\n"
                                  "Host: relay.example\r\n"
                                  "Connection: keep-alive, Upgrade\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "x-pyrycode-server:   s1 \t\r\n"
                                  "X-Pyrycode-Server: second\r\n"
                                  "X-Pyrycode-Version: 0.1\r\n"
                                  "User-Agent: pyry\r\n"
                                  "\r\n";

/* Feeds the whole request in chunks of `step` (0 = one go); returns the
 * total consumed; the parsed request stays in r. */
static ssize_t feed_chunks(struct http_req *r, const char *data, size_t n, size_t step)
{
    size_t off = 0;
    while (off < n) {
        size_t chunk = step ? (n - off < step ? n - off : step) : n - off;
        ssize_t used = http_req_feed(r, data + off, chunk);
        if (used < 0)
            return used;
        off += (size_t)used;
        if ((size_t)used < chunk)
            break;
    }
    return (ssize_t)off;
}

static void expect_header(const struct http_req *r, enum http_hdr h, const char *want)
{
    size_t len;
    const char *v = http_req_header(r, h, &len);
    if (!want) {
        assert_null(v);
        return;
    }
    assert_non_null(v);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
}

static void check_upgrade_request(const struct http_req *r)
{
    size_t plen;
    const char *path = http_req_path(r, &plen);
    assert_true(r->head_done);
    assert_true(r->upgrade);
    assert_int_equal(r->method, HTTP_GET);
    assert_int_equal(r->http_major, 1);
    assert_int_equal(r->http_minor, 1);
    assert_int_equal(plen, 10);
    assert_memory_equal(path, "/v1/server", 10);
    expect_header(r, HDR_X_SERVER, "s1"); /* trimmed, first wins, any case */
    expect_header(r, HDR_X_VERSION, "0.1");
    expect_header(r, HDR_USER_AGENT, "pyry");
    expect_header(r, HDR_X_TOKEN, NULL);
    assert_true(r->conn_has_upgrade);
    assert_true(r->upgrade_has_websocket);
}

static void test_upgrade_whole_split_bytewise(void **state)
{
    size_t n = strlen(UPGRADE_REQ);
    (void)state;
    for (size_t step = 0; step <= n; step++) {
        struct http_req r;
        http_req_init(&r, 65536);
        assert_int_equal(feed_chunks(&r, UPGRADE_REQ, n, step), (ssize_t)n);
        check_upgrade_request(&r);
        http_req_free(&r);
    }
}

static void test_upgrade_leftover_is_not_consumed(void **state)
{
    char buf[1024];
    struct http_req r;
    size_t n = strlen(UPGRADE_REQ);
    (void)state;
    memcpy(buf, UPGRADE_REQ, n);
    memcpy(buf + n, "\x81\x85WSDATA", 9);
    http_req_init(&r, 65536);
    assert_int_equal(http_req_feed(&r, buf, n + 9), (ssize_t)n);
    check_upgrade_request(&r);
    assert_int_equal(http_req_feed(&r, buf + n, 9), 0); /* done: nothing more is ours */
    http_req_free(&r);
}

static void test_pipelined_keep_alive(void **state)
{
    static const char two[] =
        "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        "GET /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    struct http_req r;
    size_t len, off = 0, n = strlen(two);
    (void)state;
    http_req_init(&r, 65536);
    const char *paths[] = {"/healthz", "/x", "/y"};
    for (int i = 0; i < 3; i++) {
        ssize_t used = http_req_feed(&r, two + off, n - off);
        assert_true(used > 0);
        assert_true(r.msg_done);
        assert_true(r.keep_alive);
        assert_false(r.upgrade);
        const char *p = http_req_path(&r, &len);
        assert_int_equal(len, strlen(paths[i]));
        assert_memory_equal(p, paths[i], len);
        off += (size_t)used;
        http_req_reset(&r);
    }
    assert_int_equal(off, n);
    http_req_free(&r);
}

static void test_body_split_bytewise(void **state)
{
    static const char req[] = "POST /healthz HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
    (void)state;
    for (size_t step = 1; step < sizeof req; step++) {
        struct http_req r;
        http_req_init(&r, 4096);
        assert_int_equal(feed_chunks(&r, req, sizeof req - 1, step), (ssize_t)(sizeof req - 1));
        assert_true(r.msg_done);
        http_req_free(&r);
    }
}

static void test_http10_not_keep_alive(void **state)
{
    struct http_req r;
    (void)state;
    http_req_init(&r, 4096);
    assert_true(http_req_feed(&r, "GET / HTTP/1.0\r\n\r\n", 18) == 18);
    assert_false(r.keep_alive);
    http_req_reset(&r);
    assert_true(http_req_feed(&r, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 37) == 37);
    assert_false(r.keep_alive);
    http_req_free(&r);
}

static void test_head_cap_431(void **state)
{
    char req[600];
    struct http_req r;
    (void)state;
    /* exactly at the cap is fine */
    int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n", 100 - 27, 0);
    assert_int_equal(n, 100);
    http_req_init(&r, 100);
    assert_int_equal(http_req_feed(&r, req, (size_t)n), n);
    assert_true(r.head_done);
    http_req_free(&r);
    /* one byte over fails, whole or byte by byte */
    n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n", 101 - 27, 0);
    http_req_init(&r, 100);
    assert_int_equal(http_req_feed(&r, req, (size_t)n), HTTP_E_TOO_LARGE);
    http_req_free(&r);
    http_req_init(&r, 100);
    assert_int_equal(feed_chunks(&r, req, (size_t)n, 1), HTTP_E_TOO_LARGE);
    http_req_free(&r);
}

static void test_malformed(void **state)
{
    static const char *bad[] = {
        "BLAH\r\n\r\n", "GET / HTTP/9.9x\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"};
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct http_req r;
        http_req_init(&r, 4096);
        assert_int_equal(http_req_feed(&r, bad[i], strlen(bad[i])), HTTP_E_BAD);
        http_req_free(&r);
    }
}

static void test_absolute_form_path(void **state)
{
    static const char req[] = "GET http://host:8080/v1/client?q#f HTTP/1.1\r\n\r\n";
    struct http_req r;
    size_t len;
    (void)state;
    http_req_init(&r, 4096);
    http_req_feed(&r, req, sizeof req - 1);
    const char *p = http_req_path(&r, &len);
    assert_int_equal(len, 10);
    assert_memory_equal(p, "/v1/client", 10);
    http_req_free(&r);
}

static int handshake(const char *req, char *out, size_t cap, size_t *len)
{
    struct http_req r;
    http_req_init(&r, 65536);
    http_req_feed(&r, req, strlen(req));
    int status = http_ws_handshake(&r, out, cap, len);
    http_req_free(&r);
    return status;
}

static void test_handshake_order(void **state)
{
    char out[1024];
    size_t len;
    (void)state;
    assert_int_equal(handshake(UPGRADE_REQ, out, sizeof out, &len), 101);
    assert_int_equal(len, strlen(out));
    assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                             "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
    static const struct {
        const char *req;
        int status;
    } rows[] = {
        {"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 426},
        {"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 426},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", 426},
        {"POST / HTTP/1.1\r\n\r\n", 426},
        {"POST / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 405},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 8\r\n\r\n",
         400},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n",
         400},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n",
         400},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(handshake(rows[i].req, out, sizeof out, &len), rows[i].status);
        assert_non_null(strstr(out, "Connection: close\r\n"));
    }
    handshake(rows[5].req, out, sizeof out, &len);
    assert_non_null(strstr(out, "Sec-WebSocket-Version: 13\r\n"));
    handshake(rows[1].req, out, sizeof out, &len);
    assert_non_null(strstr(out, "Upgrade: websocket\r\n"));
}

static void test_responses_exact(void **state)
{
    char out[512];
    (void)state;
    ssize_t n = http_error_response(out, sizeof out, 429, true);
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 429 Too Many Requests\r\n"
                             "Content-Type: text/plain; charset=utf-8\r\n"
                             "Content-Length: 1\r\n"
                             "X-Content-Type-Options: nosniff\r\n\r\n\n");
    n = http_response(out, sizeof out, 200, "application/json; charset=utf-8",
                      "Cache-Control: no-store\r\n", "{}", 2, false);
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                             "Content-Length: 2\r\nConnection: close\r\n"
                             "Cache-Control: no-store\r\n\r\n{}");
    assert_int_equal(http_response(out, 10, 200, NULL, NULL, "x", 1, true), -1);
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_text(421), "Misdirected Request");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upgrade_whole_split_bytewise),
        cmocka_unit_test(test_upgrade_leftover_is_not_consumed),
        cmocka_unit_test(test_pipelined_keep_alive),
        cmocka_unit_test(test_body_split_bytewise),
        cmocka_unit_test(test_http10_not_keep_alive),
        cmocka_unit_test(test_head_cap_431),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_absolute_form_path),
        cmocka_unit_test(test_handshake_order),
        cmocka_unit_test(test_responses_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
