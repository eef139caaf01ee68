/* http.h — HTTP/1.1 request reading on top of libhttp-parser, plus the
 * responses the relay writes (plain replies and the WebSocket handshake).
 * Pure: no sockets. The request head is copied into a buffer the request
 * owns (bounded by max_head); bodies are skipped, never stored.
 * Pure: any thread; a struct http_req belongs to one thread at a time (it
 * travels with a handed-off connection). */
#ifndef RELAY_HTTP_H
#define RELAY_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Headers the relay looks at. Everything else is parsed and ignored. */
enum http_hdr {
    HDR_HOST,
    HDR_CONNECTION,
    HDR_UPGRADE,
    HDR_SEC_WS_KEY,
    HDR_SEC_WS_VERSION,
    HDR_USER_AGENT,
    HDR_X_SERVER,      /* X-Pyrycode-Server */
    HDR_X_VERSION,     /* X-Pyrycode-Version */
    HDR_X_TOKEN,       /* X-Pyrycode-Token (presence only; never logged) */
    HDR_X_DEVICE_NAME, /* X-Pyrycode-Device-Name */
    HDR_X_FORWARDED_FOR,
    HDR__COUNT
};

#define HTTP_E_BAD       (-400) /* malformed request: answer 400 and close */
#define HTTP_E_TOO_LARGE (-431) /* head over max_head: answer 431 and close */

struct http_span {
    uint32_t off; /* offset into http_req.buf */
    uint32_t len;
};

struct http_req {
    http_parser parser;
    http_parser_settings settings;
    char *buf;      /* the head bytes; owned; NULL until the first byte */
    size_t buf_len; /* head bytes stored */
    size_t buf_cap;
    size_t max_head;
    /* results, valid once head_done */
    bool head_done;  /* request line and headers complete */
    bool msg_done;   /* the whole request (head and body) has been read */
    bool upgrade;    /* parser saw an upgrade request (bytes after the head are not HTTP) */
    bool keep_alive; /* the connection may carry another request */
    unsigned method; /* enum http_method */
    unsigned short http_major, http_minor;
    struct http_span path;            /* URL path without query, e.g. "/v1/server" */
    struct http_span hdr[HDR__COUNT]; /* first occurrence, OWS trimmed; len 0 if absent or empty */
    bool hdr_present[HDR__COUNT];     /* header appeared at all (even empty) */
    bool conn_has_upgrade;            /* some Connection value lists the token "upgrade" */
    bool upgrade_has_websocket;       /* some Upgrade value lists the token "websocket" */
    /* private parse state */
    bool in_field; /* a header name is being read */
    bool in_value; /* its value is being read */
    struct http_span cur_field, cur_value;
    size_t head_end; /* offset in buf just past the head, once head_done */
};

/* Prepares r for a new connection; max_head caps the request head in bytes.
 * Also sets libhttp-parser's process-wide header limit when max_head
 * changes: every caller in a process must pass the same max_head. */
void http_req_init(struct http_req *r, size_t max_head);

/* Forgets the current request so the next request on a keep-alive
 * connection can be read. A small head buffer is kept for reuse; a large one
 * is freed, so idle connections hold little memory. */
void http_req_reset(struct http_req *r);

/* Releases the head buffer. r may be reused only after http_req_init. */
void http_req_free(struct http_req *r);

/* Parses data[0..len). Returns how many bytes of data belong to the current
 * request (>= 0), or HTTP_E_BAD / HTTP_E_TOO_LARGE. Parsing stops right after
 * the head of an upgrade request (the rest is WebSocket data) and right after
 * the end of any other request (the rest is the next pipelined request), so a
 * return below len means "the remainder is not ours". Check head_done and
 * msg_done after each call. */
ssize_t http_req_feed(struct http_req *r, const char *data, size_t len);

/* Pointer to header h's value (not NUL-terminated) and its length in *len;
 * NULL with *len = 0 when absent or empty. */
const char *http_req_header(const struct http_req *r, enum http_hdr h, size_t *len);

/* Pointer to the request path and its length. */
const char *http_req_path(const struct http_req *r, size_t *len);

/* Writes a complete response with a text body into out. status is the code,
 * content_type may be NULL (no Content-Type), extra_headers is either NULL
 * or "Name: value\r\n" lines. keep_alive false adds "Connection: close".
 * Returns the length written, or -1 if cap is too small. */
ssize_t http_response(char *out, size_t cap, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t body_len,
                      bool keep_alive);

/* Shorthand for the relay's error replies (Go's http.Error with an empty
 * message: text/plain, nosniff, body "\n"). */
ssize_t http_error_response(char *out, size_t cap, int status, bool keep_alive);

/* The standard reason phrase for status ("Not Found", ...). */
const char *http_status_text(int status);

/* Runs the RFC 6455 server handshake checks (docs/features/websocket.md) in order on a
 * complete head: HTTP/1.1+ (426), Connection: upgrade (426), Upgrade:
 * websocket (426), GET (405), Sec-WebSocket-Version: 13 (400), key of 16
 * base64 bytes (400). On success writes the 101 response (no extensions, no
 * subprotocol) to out and returns 101; otherwise writes the error response
 * and returns its status. *out_len receives the response length. */
int http_ws_handshake(const struct http_req *r, char *out, size_t cap, size_t *out_len);

#endif
