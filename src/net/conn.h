/* conn.h — one client connection from accept to close: optionally reads a
 * PROXY v2 header and runs TLS, then reads HTTP request heads, answers or
 * upgrades them, then speaks RFC 6455 (ping/pong, close handshake,
 * heartbeat, deadlines) and hands complete data messages up. What a request
 * or a message means is decided by the hooks (relay.c); this layer knows
 * sockets, bytes and timers, never routing. struct conn is opaque.
 *
 * Threads: a connection belongs to one shard and every function here is
 * called on that shard's loop thread only (hooks run there too). A
 * connection changes shard only through conn_handoff, after which the old
 * pointer is dead. */
#ifndef RELAY_CONN_H
#define RELAY_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include "base/util.h"
#include "base/wheel.h"
#include "codec/http.h"
#include "codec/ws.h"

struct shard;
struct conn;
struct tls_server;

/* Every state has a deadline (see conn.c: conn_set_state). */
enum conn_state {
    CONN_PROXY_HEADER,  /* reading the PROXY v2 header (proxy header timeout) */
    CONN_TLS_HANDSHAKE, /* TLS handshake (handshake timeout) */
    CONN_HTTP_HEAD,     /* reading a request head (header + request timeouts) */
    CONN_HTTP_BODY,     /* head answered, skipping the body (request timeout) */
    CONN_HTTP_IDLE,     /* keep-alive: waiting for the next request (idle timeout) */
    CONN_HTTP_CLOSING,  /* last response queued; close once it is written (write timeout) */
    CONN_WS_OPEN,       /* upgraded (heartbeat, message and write deadlines) */
    CONN_WS_CLOSING,    /* our close frame is queued/sent; awaiting the peer's (close timeout) */
    CONN_WS_DONE,       /* close handshake over; flushing then closing TCP (close timeout) */
    CONN_LINGER,        /* write side shut down; draining input until EOF (close timeout) */
    CONN_CLOSED,        /* uv_close issued; freed in its callback */
};

/* What the owner of connections (relay.c) is told. Called on the loop. */
struct conn_hooks {
    /* A request head is complete. Must answer with conn_http_reply,
     * conn_ws_accept or conn_abort before returning. */
    void (*on_request)(struct conn *c, const struct http_req *r);
    /* A complete data message; payload unmasked, valid only during the call. */
    void (*on_message)(struct conn *c, uint8_t *data, size_t len);
    /* A pong arrived (payload valid only during the call). */
    void (*on_pong)(struct conn *c, const uint8_t *data, size_t len);
    /* The WebSocket left the open state (any cause). Called exactly once per
     * upgraded connection; sends are refused from here on. */
    void (*on_ws_end)(struct conn *c);
    /* A write failed (socket error, or no progress within --write-timeout,
     * or the close timeout passed with frames still unsent) on an upgraded
     * connection that is about to be dropped. err says why. The hook may
     * set close_sent (the code the connection counts as closed with)
     * before on_ws_end sees it. */
    void (*on_write_failed)(struct conn *c, const char *err);
    /* Queued data fell to or below the mark set with conn_notify_below. */
    void (*on_drained)(struct conn *c);
    /* The connection is about to be freed. */
    void (*on_free)(struct conn *c);
};

/* How a listener's connections are served. Must outlive the listener and
 * every connection accepted on it. */
struct conn_opts {
    const struct conn_hooks *hooks;
    struct tls_server *tls; /* NULL: plaintext; else TLS with its current certificate */
    bool proxy_protocol;    /* a PROXY v2 header comes first (docs/features/proxy-protocol.md) */
    const char *domain;     /* non-NULL: another Host gets 421 (docs/features/tls.md) */
    void *ctx;              /* the hooks' context for this listener (conn_ctx) */
};

/* Accepts a pending connection from server and starts reading it as the
 * listener's opts say: a PROXY v2 header first (closed with nothing
 * written if it is missing, malformed or late), TLS, the Host check, and
 * opts->hooks deciding what its requests mean. opts must outlive the
 * connection. Returns the connection, or NULL if accept failed (nothing
 * leaks). */
struct conn *conn_accept_opts(struct shard *s, uv_stream_t *server, const struct conn_opts *opts);

/* From on_request only: asks for the connection to be moved to shard
 * target once the hook returns; target's loop then calls on_request again
 * with the same request. Nothing may be sent on c before that. */
void conn_handoff(struct conn *c, struct shard *target);

/* Answers the current request with a complete response (copied). keep_alive
 * is a wish: it is honoured only if the request allows it. */
void conn_http_reply(struct conn *c, const char *resp, size_t len, bool keep_alive);

/* Builds and sends a complete response (status line, Content-Type when
 * type is not NULL, extra header lines, body); keep_alive as above. */
void conn_http_respond(struct conn *c, int status, const char *type, const char *extra,
                       const char *body, size_t body_len, bool keep_alive);

/* Sends Go's http.Error reply for status (text/plain, nosniff, body "\n"). */
void conn_http_error(struct conn *c, int status, bool keep_alive);

/* Sends Go's http.NotFound reply ("404 page not found\n"). */
void conn_http_not_found(struct conn *c);

/* Sends the 101 response resp and switches to WebSocket: heartbeat armed,
 * bytes already read after the head are decoded at once. */
void conn_ws_accept(struct conn *c, const char *resp, size_t len);

/* Sends one text frame made of the concatenation of parts (copied only if the
 * kernel does not take it at once). A counted frame bumps *frames_counter
 * once fully written. Returns 0, or -1 when the connection is not open. */
int conn_ws_send(struct conn *c, const uv_buf_t *parts, unsigned nparts, bool counted);

/* Turns the heartbeat on or off (conn_ws_accept turns it on). */
void conn_heartbeat(struct conn *c, bool on);

/* Asks for one on_drained call once queued data is at most mark bytes. */
void conn_notify_below(struct conn *c, size_t mark);

/* Queued data items (frames not yet fully handed to the kernel). */
size_t conn_queued_items(const struct conn *c);

/* Sends a ping with payload (<= 125 bytes) ahead of queued data. Returns 0 or -1. */
int conn_ws_ping(struct conn *c, const uint8_t *payload, size_t len);

/* Starts the close handshake with code and reason (idempotent: the first
 * close wins). after_data keeps queued data frames ahead of the close;
 * otherwise unsent data is dropped. */
void conn_ws_close(struct conn *c, uint16_t code, const char *reason, bool after_data);

/* Drops the connection now (no close frame). Safe to call from any
 * callback; the memory is released later. */
void conn_abort(struct conn *c);

/* Stops/restarts reading from the socket (back-pressure). While the hooks
 * keep a connection paused, its message deadline stands still. */
void conn_pause_reading(struct conn *c, bool pause);

/* Stops/restarts reading for the server-id's bandwidth limit; independent
 * of conn_pause_reading, and likewise not held against the message deadline. */
void conn_throttle(struct conn *c, bool on);

/* Cluster mode: stops (on) or resumes reading because the shard's bus send
 * buffer is full; independent of the other pauses, and, like them, not held
 * against the message deadline. */
void conn_bus_hold(struct conn *c, bool on);

/* Bytes queued for this connection and not yet handed to the kernel. */
size_t conn_queued_bytes(const struct conn *c);

/* Writes the host part of the peer address ("203.0.113.7", "::1") into out;
 * behind a PROXY header, the header's source address. */
void conn_remote(const struct conn *c, char *out, size_t cap);

/* What a shard calls back for: deadlines, handoffs arriving, handoffs
 * discarded. Pass it to shard_init. */
extern const struct shard_ops conn_shard_ops;

/* ---- accessors (the owning shard's thread only) ------------------------- */

/* The listener's hook context (struct conn_opts.ctx; NULL if none). */
void *conn_ctx(const struct conn *c);

/* The hooks the connection runs (its listener's). */
const struct conn_hooks *conn_hooks_of(const struct conn *c);

/* The hooks' per-connection object (NULL until set). */
void *conn_owner(const struct conn *c);
void conn_set_owner(struct conn *c, void *owner);

/* The shard the connection lives on now (it changes with a handoff). */
struct shard *conn_shard(const struct conn *c);

/* The connection's state (conn_is_open: CONN_WS_OPEN, sends accepted). */
enum conn_state conn_state(const struct conn *c);
bool conn_is_open(const struct conn *c);

/* Counter bumped (by this shard's thread only) per counted frame fully
 * written; NULL stops counting. */
void conn_count_frames(struct conn *c, _Atomic uint64_t *counter);

/* Close codes: the one we sent first (0: none) and the one the peer sent
 * (WS_CLOSE_NO_STATUS / WS_CLOSE_ABNORMAL when it sent none / vanished).
 * conn_set_close_sent is for on_write_failed (the code the connection is
 * counted as closed with). */
uint16_t conn_close_sent(const struct conn *c);
uint16_t conn_close_rcvd(const struct conn *c);
void conn_set_close_sent(struct conn *c, uint16_t code);

/* The drain (docs/operations.md): an open WebSocket gets 1001 "shutting
 * down"; a connection that is idle or has not sent a byte of a request is
 * dropped; a request in progress finishes under its own deadlines. */
void conn_drain(struct conn *c);

/* Calls fn for every connection of shard s (fn may close c, not others). */
void conn_each(struct shard *s, void (*fn)(struct conn *c, void *arg), void *arg);

#endif
