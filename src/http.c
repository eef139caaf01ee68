/* http.c — request heads on libhttp-parser. The head is copied into the
 * request's own buffer (header spans are offsets into it, so growing it is
 * safe); body bytes are parsed straight from the caller's data and dropped.
 * Parsing pauses at the end of each request, so pipelined requests and the
 * bytes after an upgrade head are left to the caller. Also builds the few
 * responses the relay sends, including the RFC 6455 handshake. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"
#include "ws.h"

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

/* Extends span s to cover [at, at+n) of r->buf. */
static void span_extend(struct http_req *r, struct http_span *s, const char *at, size_t n)
{
    uint32_t off = (uint32_t)(at - r->buf);
    if (s->len == 0)
        s->off = off;
    s->len = off + (uint32_t)n - s->off;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* True when a comma-separated list contains token (case-insensitive). */
static bool has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token), i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t a = start, b = i;
        while (a < b && is_ows(v[a]))
            a++;
        while (b > a && is_ows(v[b - 1]))
            b--;
        if (str_ieq(v + a, b - a, token, tlen))
            return true;
        i++;
    }
    return false;
}

static void finish_header(struct http_req *r)
{
    struct http_span f = r->cur_field, v = r->cur_value;
    r->cur_field = r->cur_value = (struct http_span){0, 0};
    r->in_value = false;
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
    span_extend(r, &r->path, at, n); /* the whole target; trimmed to the path later */
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);
    if (r->in_value)
        finish_header(r);
    span_extend(r, &r->cur_field, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = req_of(p);
    r->in_value = true;
    if (r->cur_value.len == 0)
        r->cur_value.off = (uint32_t)(at - r->buf);
    r->cur_value.len = (uint32_t)(at - r->buf) + (uint32_t)n - r->cur_value.off;
    return 0;
}

/* Reduces the request target to its path ("/x" of "/x?y", or of
 * "http://host/x" in absolute form). */
static void trim_target(struct http_req *r)
{
    const char *t = r->buf + r->path.off;
    size_t n = r->path.len, start = 0, end;
    if (n && t[0] != '/') {
        const char *scheme = memchr(t, ':', n);
        if (scheme && (size_t)(scheme - t) + 3 <= n && scheme[1] == '/' && scheme[2] == '/') {
            const char *slash = memchr(scheme + 3, '/', n - (size_t)(scheme + 3 - t));
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
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_req *r = req_of(p);
    r->msg_done = true;
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
    static uint32_t configured;
    memset(r, 0, sizeof *r);
    r->max_head = max_head;
    r->settings.on_url = on_url;
    r->settings.on_header_field = on_header_field;
    r->settings.on_header_value = on_header_value;
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_message_complete = on_message_complete;
    if (configured != max_head) { /* process-wide in libhttp-parser; one value per process */
        http_parser_set_max_header_size((uint32_t)max_head);
        configured = (uint32_t)max_head;
    }
    r->cur_hdr = -1;
    parser_start(r);
}

void http_req_reset(struct http_req *r)
{
    char *buf = r->buf;
    size_t cap = r->buf_cap, max_head = r->max_head;
    http_parser_settings settings = r->settings;
    if (cap > 4096) { /* keep small buffers for keep-alive, give big ones back */
        free(buf);
        buf = NULL;
        cap = 0;
    }
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->buf_cap = cap;
    r->max_head = max_head;
    r->settings = settings;
    r->cur_hdr = -1;
    parser_start(r);
}

void http_req_free(struct http_req *r)
{
    free(r->buf);
    r->buf = NULL;
    r->buf_cap = r->buf_len = 0;
}

static ssize_t parse_status(struct http_req *r)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_OK || e == HPE_PAUSED)
        return 0;
    return e == HPE_HEADER_OVERFLOW ? HTTP_E_TOO_LARGE : HTTP_E_BAD;
}

static size_t execute(struct http_req *r, const char *data, size_t len)
{
    if (HTTP_PARSER_ERRNO(&r->parser) == HPE_PAUSED)
        http_parser_pause(&r->parser, 0);
    return http_parser_execute(&r->parser, &r->settings, data, len);
}

ssize_t http_req_feed(struct http_req *r, const char *data, size_t len)
{
    size_t used = 0;
    if (r->msg_done || len == 0)
        return 0;
    if (!r->head_done) {
        if (r->buf_len >= r->max_head)
            return HTTP_E_TOO_LARGE;
        size_t take = len < r->max_head - r->buf_len ? len : r->max_head - r->buf_len;
        if (r->buf_len + take > r->buf_cap) {
            size_t cap = r->buf_cap ? r->buf_cap : 1024;
            while (cap < r->buf_len + take)
                cap *= 2;
            r->buf = xrealloc(r->buf, cap);
            r->buf_cap = cap;
        }
        memcpy(r->buf + r->buf_len, data, take);
        size_t n = execute(r, r->buf + r->buf_len, take);
        ssize_t err = parse_status(r);
        if (err)
            return err;
        r->buf_len += n; /* bytes after what the parser took are not ours */
        used = n;
        if (!r->head_done) {
            if (r->buf_len >= r->max_head)
                return HTTP_E_TOO_LARGE;
            return (ssize_t)used;
        }
        r->head_end = r->buf_len;
        if (r->parser.upgrade) {
            r->upgrade = true;
            r->msg_done = true;
            return (ssize_t)used;
        }
        if (r->msg_done || used < take || used == len)
            return (ssize_t)used; /* never execute() zero bytes: that means EOF */
    }
    /* Body bytes: parsed from the caller's buffer, never stored. */
    size_t n = execute(r, data + used, len - used);
    ssize_t err = parse_status(r);
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
    return r->buf ? r->buf + r->path.off : "";
}

const char *http_status_text(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
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
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

ssize_t http_response(char *out, size_t cap, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t body_len, bool keep_alive)
{
    char ct[160] = "";
    if (content_type)
        snprintf(ct, sizeof ct, "Content-Type: %s\r\n", content_type);
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\n%s%s\r\n", status,
                     http_status_text(status), ct, body_len,
                     keep_alive ? "" : "Connection: close\r\n", extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n + body_len > cap)
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
