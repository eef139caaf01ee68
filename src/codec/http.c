/* http.c — request heads on libhttp-parser. The head, and only the head, is
 * copied into the request's own buffer (header spans are offsets into it, so
 * growing it is safe); body bytes are parsed straight from the caller's data
 * and dropped. Parsing pauses at the end of the head and of each request, so
 * pipelined requests and the bytes after an upgrade head are left to the
 * caller. Obsolete line folding and header names with spaces are refused, not
 * repaired. Also builds the few responses the relay sends, including the
 * RFC 6455 handshake; routing and the relay's own header rules live elsewhere. */
#include "codec/http.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "codec/ws.h"

/* Idle keep-alive connections give back buffers bigger than this. */
#define KEEP_BUF_MAX 4096
#define FIRST_BUF    1024

static const char *const tracked[HDR__COUNT] = {
    [HDR_HOST] = "host",
    [HDR_CONNECTION] = "connection",
    [HDR_UPGRADE] = "upgrade",
    [HDR_SEC_WS_KEY] = "sec-websocket-key",
    [HDR_SEC_WS_VERSION] = "sec-websocket-version",
    [HDR_USER_AGENT] = "user-agent",
    [HDR_X_SERVER] = "x-pyrycode-server",
    [HDR_X_VERSION] = "x-pyrycode-version",
    [HDR_X_TOKEN] = "x-pyrycode-token",
    [HDR_X_DEVICE_NAME] = "x-pyrycode-device-name",
    [HDR_X_FORWARDED_FOR] = "x-forwarded-for",
};

static struct http_req *req_of(http_parser *p)
{
    return p->data;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Appends [at, at+n) of r->buf to span s. Pieces of one field, value or URL
 * arrive in order and touch each other, because every byte of the head is
 * parsed from r->buf; a gap means the parser skipped bytes inside the item
 * (an obs-fold continuation line), which we refuse. Returns false on a gap. */
static bool span_append(struct http_req *r, struct http_span *s, bool started, const char *at,
                        size_t n)
{
    uint32_t off = (uint32_t)(at - r->buf);
    if (!started) {
        s->off = off;
        s->len = (uint32_t)n;
        return true;
    }
    if (off != s->off + s->len)
        return false;
    s->len += (uint32_t)n;
    return true;
}

/* True when the comma-separated list v contains token (case-insensitive,
 * OWS around each element ignored). */
static bool has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token), i = 0;
    while (i < len) {
        size_t a = i;
        while (i < len && v[i] != ',')
            i++;
        size_t b = i;
        while (a < b && is_ows(v[a]))
            a++;
        while (b > a && is_ows(v[b - 1]))
            b--;
        if (str_ieq(v + a, b - a, token, tlen))
            return true;
        i++; /* past the comma */
    }
    return false;
}

/* Files the header whose field and value have just been read. */
static void finish_header(struct http_req *r)
{
    struct http_span f = r->cur_field, v = r->cur_value;
    r->cur_field = r->cur_value = (struct http_span){0, 0};
    r->in_field = r->in_value = false;
    if (f.len == 0)
        return;
    while (v.len && is_ows(r->buf[v.off])) {
        v.off++;
        v.len--;
    }
    while (v.len && is_ows(r->buf[v.off + v.len - 1]))
        v.len--;
    for (int h = 0; h < HDR__COUNT; h++) {
        if (!str_ieq(r->buf + f.off, f.len, tracked[h], strlen(tracked[h])))
            continue;
        const char *val = r->buf + v.off;
        if (h == HDR_CONNECTION && has_token(val, v.len, "upgrade"))
            r->conn_has_upgrade = true;
        if (h == HDR_UPGRADE && has_token(val, v.len, "websocket"))
            r->upgrade_has_websocket = true;
        if (!r->hdr_present[h]) {
            r->hdr_present[h] = true;
            r->hdr[h] = v;
        }
        return;
    }
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);
    /* The whole target for now; trimmed to the path at the end of the head. */
    return span_append(r, &r->path, r->path.len > 0, at, n) ? 0 : 1;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);
    if (r->head_done)
        return 0; /* a chunked trailer, parsed from the caller's data: ignored */
    if (r->in_value)
        finish_header(r);
    /* libhttp-parser lets spaces into names ("Content-Length : 1"); Go does not. */
    if (memchr(at, ' ', n))
        return 1;
    bool started = r->in_field;
    r->in_field = true;
    return span_append(r, &r->cur_field, started, at, n) ? 0 : 1;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);
    if (r->head_done)
        return 0;
    bool started = r->in_value;
    r->in_value = true;
    return span_append(r, &r->cur_value, started, at, n) ? 0 : 1;
}

/* Reduces the request target to its path ("/x" of "/x?y", or of
 * "http://host/x" in absolute form; "" for "http://host"). */
static void trim_target(struct http_req *r)
{
    const char *t = r->buf + r->path.off;
    size_t n = r->path.len, start = 0, end;
    if (n && t[0] != '/') {
        const char *colon = memchr(t, ':', n);
        size_t c = colon ? (size_t)(colon - t) : n;
        if (c + 3 <= n && t[c + 1] == '/' && t[c + 2] == '/') {
            const char *slash = memchr(t + c + 3, '/', n - (c + 3));
            start = slash ? (size_t)(slash - t) : n;
        }
    }
    for (end = start; end < n && t[end] != '?' && t[end] != '#'; end++)
        ;
    r->path.off += (uint32_t)start;
    r->path.len = (uint32_t)(end - start);
}

static int on_headers_complete(http_parser *p)
{
    struct http_req *r = req_of(p);
    finish_header(r);
    trim_target(r);
    r->head_done = true;
    r->method = p->method;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p);
    /* Whatever the parser thinks of a body, a request asking to switch
     * protocols ends at its head: what follows is the new protocol's. */
    r->upgrade = p->upgrade || (r->conn_has_upgrade && r->hdr_present[HDR_UPGRADE]);
    /* Stop just before the head's final LF so the caller can tell where the
     * head ends; http_req_feed resumes at once. */
    http_parser_pause(p, 1);
    return r->upgrade ? 1 : 0; /* 1: no body */
}

static int on_message_complete(http_parser *p)
{
    struct http_req *r = req_of(p);
    r->msg_done = true;
    if (!r->upgrade)
        r->keep_alive = r->keep_alive && http_should_keep_alive(p);
    http_parser_pause(p, 1); /* the next request is the caller's business */
    return 0;
}

static void parser_start(struct http_req *r)
{
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
}

void http_req_init(struct http_req *r, size_t max_head)
{
    static _Atomic size_t configured; /* shard threads all pass the same max_head */
    memset(r, 0, sizeof *r);
    r->max_head = max_head;
    r->settings.on_url = on_url;
    r->settings.on_header_field = on_header_field;
    r->settings.on_header_value = on_header_value;
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_message_complete = on_message_complete;
    /* The parser's own limit is process-wide and also bounds chunked
     * trailers, which are never stored; the head itself is capped in
     * feed_head. +1: resuming after the pause on the head's final LF makes
     * the parser count that byte twice. */
    if (atomic_load(&configured) != max_head && atomic_exchange(&configured, max_head) != max_head)
        http_parser_set_max_header_size(max_head >= UINT32_MAX ? UINT32_MAX
                                                               : (uint32_t)max_head + 1);
    parser_start(r);
}

void http_req_reset(struct http_req *r)
{
    char *buf = r->buf;
    size_t cap = r->buf_cap, max_head = r->max_head;
    http_parser_settings settings = r->settings;
    if (cap > KEEP_BUF_MAX) {
        free(buf);
        buf = NULL;
        cap = 0;
    }
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->buf_cap = cap;
    r->max_head = max_head;
    r->settings = settings;
    parser_start(r);
}

void http_req_free(struct http_req *r)
{
    free(r->buf);
    r->buf = NULL;
    r->buf_cap = r->buf_len = 0;
}

static ssize_t parse_status(const struct http_req *r)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_OK || e == HPE_PAUSED)
        return 0;
    return e == HPE_HEADER_OVERFLOW ? HTTP_E_TOO_LARGE : HTTP_E_BAD;
}

/* Runs the parser on len > 0 bytes (zero bytes would mean EOF to it). */
static size_t execute(struct http_req *r, const char *data, size_t len)
{
    if (HTTP_PARSER_ERRNO(&r->parser) == HPE_PAUSED)
        http_parser_pause(&r->parser, 0);
    return http_parser_execute(&r->parser, &r->settings, data, len);
}

/* Makes room for need bytes: doubling, but never past max_head. */
static void reserve(struct http_req *r, size_t need)
{
    if (need <= r->buf_cap)
        return;
    size_t cap = r->buf_cap ? r->buf_cap : FIRST_BUF;
    while (cap < need)
        cap *= 2;
    if (cap > r->max_head)
        cap = r->max_head;
    r->buf = xrealloc(r->buf, cap);
    r->buf_cap = cap;
}

/* Copies what may still belong to the head into buf and parses it there.
 * Returns the bytes of data that were head (>= 0) or an error. */
static ssize_t feed_head(struct http_req *r, const char *data, size_t len)
{
    if (r->buf_len >= r->max_head)
        return HTTP_E_TOO_LARGE;
    size_t take = len < r->max_head - r->buf_len ? len : r->max_head - r->buf_len;
    reserve(r, r->buf_len + take);
    char *at = r->buf + r->buf_len;
    memcpy(at, data, take);
    size_t n = execute(r, at, take);
    ssize_t err = parse_status(r);
    if (err)
        return err;
    if (!r->head_done) {
        r->buf_len += n; /* n == take: the parser only stops early at the head's end */
        return r->buf_len >= r->max_head ? HTTP_E_TOO_LARGE : (ssize_t)n;
    }
    /* Paused on the head's final LF: it is head, anything after it is not
     * (and stays in buf only until overwritten; buf_len excludes it). */
    r->buf_len += n + 1;
    r->head_end = r->buf_len;
    size_t lf = execute(r, at + n, 1);
    err = parse_status(r);
    if (err)
        return err;
    return lf == 1 ? (ssize_t)(n + 1) : HTTP_E_BAD;
}

ssize_t http_req_feed(struct http_req *r, const char *data, size_t len)
{
    size_t used = 0;
    if (r->msg_done || len == 0)
        return 0;
    if (!r->head_done) {
        ssize_t n = feed_head(r, data, len);
        if (n < 0 || !r->head_done || r->msg_done || (size_t)n == len)
            return n;
        used = (size_t)n;
    }
    /* Body bytes: parsed from the caller's buffer, never stored. */
    size_t n = execute(r, data + used, len - used);
    ssize_t err = parse_status(r);
    /* libhttp-parser counts chunked trailers against the header limit, and
     * whether that or a bad byte is seen first depends on how the bytes
     * were split. A body is never "header fields too large": 400 either way. */
    if (err == HTTP_E_TOO_LARGE)
        err = HTTP_E_BAD;
    if (err)
        return err;
    return (ssize_t)(used + n);
}

const char *http_req_header(const struct http_req *r, enum http_hdr h, size_t *len)
{
    *len = r->hdr[h].len;
    return *len ? r->buf + r->hdr[h].off : NULL;
}

const char *http_req_path(const struct http_req *r, size_t *len)
{
    *len = r->path.len;
    return r->buf && r->path.len ? r->buf + r->path.off : "";
}

const char *http_status_text(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Request Entity Too Large";
    case 421:
        return "Misdirected Request";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

ssize_t http_response(char *out, size_t cap, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t body_len, bool keep_alive)
{
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\n%s%s\r\n", status,
                     http_status_text(status), content_type ? "Content-Type: " : "",
                     content_type ? content_type : "", content_type ? "\r\n" : "", body_len,
                     keep_alive ? "" : "Connection: close\r\n", extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= cap || body_len > cap - (size_t)n)
        return -1;
    if (body_len)
        memcpy(out + n, body, body_len);
    return (ssize_t)((size_t)n + body_len);
}

ssize_t http_error_response(char *out, size_t cap, int status, bool keep_alive)
{
    return http_response(out, cap, status, "text/plain; charset=utf-8",
                         "X-Content-Type-Options: nosniff\r\n", "\n", 1, keep_alive);
}

static int handshake_error(char *out, size_t cap, size_t *out_len, int status, const char *extra,
                           const char *msg)
{
    ssize_t n = http_response(out, cap, status, "text/plain; charset=utf-8", extra, msg,
                              strlen(msg), false);
    *out_len = n < 0 ? 0 : (size_t)n;
    return status;
}

int http_ws_handshake(const struct http_req *r, char *out, size_t cap, size_t *out_len)
{
    static const char upgrade_hdrs[] = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    size_t klen, vlen;
    if (r->http_major < 1 || (r->http_major == 1 && r->http_minor < 1))
        return handshake_error(out, cap, out_len, 426, NULL,
                               "WebSocket protocol violation: handshake request must be at least "
                               "HTTP/1.1\n");
    if (!r->conn_has_upgrade)
        return handshake_error(out, cap, out_len, 426, upgrade_hdrs,
                               "WebSocket protocol violation: Connection header does not contain "
                               "Upgrade\n");
    if (!r->upgrade_has_websocket)
        return handshake_error(out, cap, out_len, 426, upgrade_hdrs,
                               "WebSocket protocol violation: Upgrade header does not contain "
                               "websocket\n");
    if (r->method != HTTP_GET)
        return handshake_error(out, cap, out_len, 405, NULL,
                               "WebSocket protocol violation: handshake request method is not "
                               "GET\n");
    const char *v = http_req_header(r, HDR_SEC_WS_VERSION, &vlen);
    if (!v || !str_eq(v, vlen, "13"))
        return handshake_error(out, cap, out_len, 400, "Sec-WebSocket-Version: 13\r\n",
                               "unsupported WebSocket protocol version (only 13 is supported)\n");
    const char *key = http_req_header(r, HDR_SEC_WS_KEY, &klen);
    if (!key || !ws_key_valid(key, klen))
        return handshake_error(out, cap, out_len, 400, NULL,
                               "WebSocket protocol violation: invalid Sec-WebSocket-Key\n");
    char accept[WS_ACCEPT_LEN + 1];
    ws_accept_key(key, klen, accept);
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    *out_len = n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
    return 101;
}
