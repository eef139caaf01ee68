/* conn_internal.h — struct conn and what the files of the connection module
 * share: conn.c (lifecycle, pump, deadlines, sending), conn_http.c (request
 * heads and replies), conn_ws.c (the WebSocket input side) and
 * conn_handoff.c (moving a connection between shards). Private to those
 * files; everything here runs on the owning shard's thread. */
#ifndef RELAY_CONN_INTERNAL_H
#define RELAY_CONN_INTERNAL_H

#include "net/conn.h"
#include "net/outbox.h"
#include "net/shard.h"
#include "net/transport.h"

/* Why reading is stopped (struct conn.paused). */
enum {
    CONN_PAUSE_HOOK = 1,     /* the hooks asked (back-pressure, liveness probe) */
    CONN_PAUSE_RATE = 2,     /* the peer used up its frame budget (--max-frames-per-second) */
    CONN_PAUSE_THROTTLE = 4, /* its server-id used up its byte budget (relay's decision) */
    CONN_PAUSE_BUS = 8,      /* cluster: the shard's bus send buffer is full (relay's) */
};

/* The pauses that are the relay's doing, not the peer's. */
#define CONN_PAUSE_RELAY (CONN_PAUSE_HOOK | CONN_PAUSE_THROTTLE | CONN_PAUSE_BUS)

struct conn {
    struct transport t; /* first: holds the TCP handle */
    struct shard *shard;
    const struct conn_opts *opts; /* the listener's: hooks, context, transport */
    union {
        struct proxyproto *pp;    /* PROXY header reader, only in CONN_PROXY_HEADER */
        struct shard *handoff_to; /* set in on_request: move to this shard after the hook */
    };
    struct list link; /* shard->conns */
    struct wheel_entry timer;
    /* deadlines in loop ms; 0 = not armed */
    uint64_t dl_state;    /* the state's own deadline (head, request, idle, close, linger) */
    uint64_t dl_request;  /* whole request must be read by then */
    uint64_t dl_message;  /* started WebSocket message must complete */
    uint64_t dl_ping;     /* next heartbeat ping */
    uint64_t dl_pong;     /* heartbeat pong expected by then */
    uint64_t dl_write;    /* write progress expected by then */
    struct http_req *req; /* only while speaking HTTP */
    struct ws_decoder ws;
    uint8_t *msg;              /* assembly buffer for a message split over reads */
    uint32_t msg_len, msg_cap; /* messages are capped well below 4 GiB */
    struct outbox out;
    uint64_t write_mark; /* write progress at the last check; 0: not sampled (conn.c) */
    uint64_t ping_seq;   /* payload of the outstanding heartbeat ping */
    void *owner;         /* the hooks' per-connection object */
    union {              /* the TCP peer (or the PROXY header's source); sockaddr_storage would cost
                          * 100 more bytes per connection */
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } peer;
    enum conn_state state;
    uint32_t msg_left;   /* ms of the message deadline left while the relay pauses reading */
    int32_t rate_tokens; /* frames the peer may still send now (may go negative) */
    uint32_t rate_stamp; /* loop ms (low 32 bits) the tokens were last refilled */
    uint16_t close_sent; /* code of the close frame we sent first (0 none) */
    uint16_t close_rcvd; /* code the peer sent (WS_CLOSE_NO_STATUS/ABNORMAL if none) */
    uint8_t paused;      /* CONN_PAUSE_* bits: reading stops while any is set */
    bool reading;        /* uv_read_start is in effect */
    bool pumping;        /* inside conn_pump: a nested call leaves the work to it */
    bool shut;           /* the transport's end and our FIN are on their way */
    bool write_sampled;  /* write_mark holds a sample for the write in flight */
    bool head_handled;
    bool reply_keep_alive;
    bool upgraded;
    bool heartbeat_on;
    bool ws_end_reported;
};

/* A connection in transit between shards: its socket, its parsed request
 * head and the bytes read after it (design.md §2). */
struct handoff {
    struct mpsc_node node; /* in the target shard's inbox */
    uv_os_sock_t fd;
    const struct conn_opts *opts; /* the accepting listener's */
    struct tls_conn *tls;         /* the TLS session travels too (no loop pointers) */
    struct http_req *req;         /* head complete, not yet answered */
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } peer;
    size_t extra_len;
    uint8_t extra[]; /* bytes that followed the head in the same read */
};

/* ---- conn.c ---- */

/* The only place the state changes; each state gets its own deadline. */
void conn_set_state(struct conn *c, enum conn_state st);

/* Re-arms the wheel entry for the nearest deadline. */
void conn_rearm(struct conn *c);

/* Loop time plus ms. */
uint64_t conn_after(const struct conn *c, uint64_t ms);

/* Sets or clears CONN_PAUSE_* bits (the message deadline stands still
 * while the relay pauses); the pump starts or stops reading. */
void conn_set_paused(struct conn *c, uint8_t bits, bool on);

/* Sends iov (a whole frame or reply): straight to the transport when
 * nothing is queued (no copy), else queued as kind. */
void conn_send(struct conn *c, enum outbox_kind kind, const uv_buf_t *iov, unsigned n,
               bool counted);

/* True when nothing waits to be written: no write in flight, an empty
 * outbox, no bytes held by the transport. Only then may bytes go straight
 * to the transport. */
bool conn_output_idle(const struct conn *c);

/* Builds a frame (header + parts) and sends it as conn_send does. */
void conn_send_frame(struct conn *c, enum outbox_kind kind, uint8_t op, const uv_buf_t *parts,
                     unsigned nparts, bool counted);

/* Queues our close frame (after queued data, or instead of it). */
void conn_queue_close(struct conn *c, uint16_t code, const char *reason, bool after_data);

/* Every callback ends here: writes what is queued, then decides in one
 * place whether to keep reading, pause, linger or close. A nested call
 * (from inside the input phase or the pump) leaves the work to the outer
 * one. */
void conn_pump(struct conn *c);

/* Reports the end of an upgraded connection to the hooks (once). */
void conn_report_ws_end(struct conn *c);

/* A new connection on shard s (not yet reading); the caller sets its
 * state and starts it with conn_start. */
struct conn *conn_new(struct shard *s, const struct conn_opts *opts);

/* Registers c with its shard and starts reading; drops c if it cannot. */
void conn_start(struct conn *c);

/* Frees a connection conn_new made that never started. */
void conn_discard_new(struct conn *c);

/* After accept or the PROXY header: TLS handshake or plain HTTP. */
void conn_start_transport(struct conn *c);

/* Takes over a TLS session that travelled with a handoff. */
void conn_adopt_tls(struct conn *c, struct tls_conn *tls);

/* ---- conn_accept.c (conn_new, conn_start, conn_discard_new,
 * conn_start_transport, conn_adopt_tls above) ---- */

/* Feeds the PROXY v2 header reader. Returns how many bytes of buf it used
 * (all of them while the header is incomplete), or -1 when the connection
 * was dropped: nothing is ever written to such a peer. */
ssize_t conn_proxy_input(struct conn *c, const uint8_t *buf, size_t len);

/* ---- conn_http.c ---- */

/* Plaintext of an HTTP state. */
void conn_http_input(struct conn *c, uint8_t *buf, size_t len);

/* Request readers: from the shard's pool, and back. */
struct http_req *conn_req_get(struct shard *s);
void conn_req_put(struct shard *s, struct http_req *r);

/* Gives c's request reader back (its head no longer counts). */
void conn_req_release(struct conn *c);

/* Counts the head c holds in the process-wide budget (after a new reader). */
void conn_head_charge(struct conn *c);

/* ---- conn_ws.c ---- */

/* Plaintext of an upgraded connection. */
void conn_ws_input(struct conn *c, uint8_t *buf, size_t len);

/* Refills the frame budget for the time since the last refill. */
void conn_rate_refill(struct conn *c);

/* When a connection paused for its frame rate has a frame to spend again. */
uint64_t conn_rate_resume_at(const struct conn *c);

/* ---- conn_info.c ---- */

/* At debug level, why the connection layer refused a peer: one line msg
 * with status (0: none, the connection is just dropped), reason and
 * remote. Never a header value. */
void conn_log_refusal(const struct conn *c, const char *msg, int status, const char *reason);

/* ---- conn_handoff.c ---- */

/* Moves c to c->handoff_to with the unread rest of the input. */
void conn_handoff_finish(struct conn *c, const uint8_t *buf, size_t len);

/* conn_shard_ops: a handoff arrived / will never be adopted. */
void conn_adopt_node(struct shard *s, struct mpsc_node *n);
void conn_discard_node(struct mpsc_node *n);

#endif
