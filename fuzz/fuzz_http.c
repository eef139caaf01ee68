/* fuzz_http.c — feeds arbitrary bytes to the request reader as a keep-alive
 * connection would (reset after each complete request, up to a few), once in
 * one piece and once in chunks whose size comes from the first byte. Both
 * must agree on every result; the stored head must be exactly the input's
 * head bytes, every span must lie inside it, an upgrade must end at its head,
 * and the handshake must give a well-formed reply on any complete head. It
 * does not check libhttp-parser's own verdicts on what is valid HTTP. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"

#define MAX_REQS 4

struct outcome {
    ssize_t used; /* bytes of this request, or an error */
    bool head_done, msg_done, upgrade, keep_alive, conn_up, up_ws;
    unsigned method, major, minor;
    size_t buf_len;
    struct http_span path, hdr[HDR__COUNT];
    bool present[HDR__COUNT];
    int status; /* handshake result, 0 if no head */
    size_t reply_len;
};

static void require(bool ok)
{
    if (!ok)
        abort();
}

static bool span_ok(struct http_span s, size_t len)
{
    return s.off <= len && s.len <= len - s.off;
}

/* Checks r after a request's bytes data[0..used) and records what it saw. */
static struct outcome inspect(struct http_req *r, const uint8_t *data, ssize_t used)
{
    struct outcome o;
    memset(&o, 0, sizeof o);
    o.used = used;
    if (used < 0) {
        require(used == HTTP_E_BAD || used == HTTP_E_TOO_LARGE);
        return o;
    }
    o.head_done = r->head_done;
    o.msg_done = r->msg_done;
    require(!o.msg_done || o.head_done);
    require(r->buf_len <= r->max_head && r->buf_cap <= r->max_head);
    if (!r->head_done) {
        require((size_t)used == r->buf_len); /* everything so far is head */
        return o;
    }
    /* The stored head is exactly the request's first bytes. */
    require(r->buf_len == r->head_end && r->buf_len <= (size_t)used);
    require(memcmp(r->buf, data, r->buf_len) == 0);
    require(!r->upgrade || (r->msg_done && (size_t)used == r->buf_len));
    require(span_ok(r->path, r->buf_len));
    for (int h = 0; h < HDR__COUNT; h++) {
        require(span_ok(r->hdr[h], r->buf_len));
        require(r->hdr_present[h] || r->hdr[h].len == 0);
        o.hdr[h] = r->hdr[h];
        o.present[h] = r->hdr_present[h];
        size_t len;
        const char *v = http_req_header(r, (enum http_hdr)h, &len);
        require((v == NULL) == (len == 0));
        if (len) /* trimmed */
            require(v[0] != ' ' && v[0] != '\t' && v[len - 1] != ' ' && v[len - 1] != '\t');
    }
    o.upgrade = r->upgrade;
    o.keep_alive = r->keep_alive;
    o.conn_up = r->conn_has_upgrade;
    o.up_ws = r->upgrade_has_websocket;
    o.method = r->method;
    o.major = r->http_major;
    o.minor = r->http_minor;
    o.buf_len = r->buf_len;
    o.path = r->path;

    char out[1024], prefix[32];
    o.status = http_ws_handshake(r, out, sizeof out, &o.reply_len);
    require(o.status == 101 || o.status == 400 || o.status == 405 || o.status == 426);
    require(o.status != 101 || r->upgrade); /* a WebSocket never follows a body */
    require(o.reply_len > 0 && o.reply_len < sizeof out);
    int n = snprintf(prefix, sizeof prefix, "HTTP/1.1 %d ", o.status);
    require(memcmp(out, prefix, (size_t)n) == 0);
    require(memcmp(out + o.reply_len - (o.status == 101 ? 4 : 1),
                   o.status == 101 ? "\r\n\r\n" : "\n", o.status == 101 ? 4 : 1) == 0);
    return o;
}

/* Feeds data in chunks of step (0 = one piece) until the request stops
 * taking bytes. */
static ssize_t feed(struct http_req *r, const uint8_t *data, size_t n, size_t step)
{
    size_t off = 0;
    while (off < n) {
        size_t chunk = step == 0 || n - off < step ? n - off : step;
        ssize_t used = http_req_feed(r, (const char *)data + off, chunk);
        if (used < 0)
            return used;
        require((size_t)used <= chunk);
        off += (size_t)used;
        if ((size_t)used < chunk)
            break;
    }
    return (ssize_t)off;
}

/* Reads up to MAX_REQS requests from data like a keep-alive connection;
 * returns how many outcomes were recorded. */
static int run(const uint8_t *data, size_t n, size_t step, size_t max_head,
               struct outcome out[MAX_REQS])
{
    struct http_req r;
    size_t off = 0;
    int i = 0;
    http_req_init(&r, max_head);
    while (i < MAX_REQS) {
        ssize_t used = feed(&r, data + off, n - off, step);
        out[i] = inspect(&r, data + off, used);
        i++;
        if (used < 0 || !r.msg_done)
            break;
        require(http_req_feed(&r, (const char *)data, n) == 0); /* done means done */
        off += (size_t)used;
        if (r.upgrade || off == n)
            break;
        http_req_reset(&r);
    }
    http_req_free(&r);
    return i;
}

static bool same_span(struct http_span x, struct http_span y)
{
    return x.off == y.off && x.len == y.len;
}

/* Field by field: padding bytes are not part of the result. */
static bool same(const struct outcome *x, const struct outcome *y)
{
    if (x->used != y->used || x->head_done != y->head_done || x->msg_done != y->msg_done ||
        x->upgrade != y->upgrade || x->keep_alive != y->keep_alive || x->conn_up != y->conn_up ||
        x->up_ws != y->up_ws || x->method != y->method || x->major != y->major ||
        x->minor != y->minor || x->buf_len != y->buf_len || !same_span(x->path, y->path) ||
        x->status != y->status || x->reply_len != y->reply_len)
        return false;
    for (int h = 0; h < HDR__COUNT; h++)
        if (!same_span(x->hdr[h], y->hdr[h]) || x->present[h] != y->present[h])
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 0x3f) % 17 + 1;
    size_t max_head = data[0] & 0x80 ? 256 : 4096;
    struct outcome a[MAX_REQS], b[MAX_REQS];
    int na = run(data + 1, size - 1, 0, max_head, a);
    int nb = run(data + 1, size - 1, step, max_head, b);
    require(na == nb);
    for (int i = 0; i < na; i++)
        require(same(&a[i], &b[i]));
    return 0;
}
