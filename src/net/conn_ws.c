/* conn_ws.c — the WebSocket side of a connection (RFC 6455): text, ping
 * and close frames out; frames decoded by the codec, messages assembled
 * across reads (whole messages in one read are handed up without a copy),
 * pings answered, the close handshake, the per-connection frame budget and
 * the message deadline. What a message means is the hooks' business. */
#include "net/conn_internal.h"

#include <stdlib.h>
#include <string.h>

void conn_ws_accept(struct conn *c, const char *resp, size_t len)
{
    uv_buf_t iov = uv_buf_init((char *)resp, (unsigned)len);
    conn_send(c, OUTBOX_DATA, &iov, 1, false);
    if (c->state == CONN_CLOSED)
        return;
    ws_decoder_init(&c->ws, (uint64_t)c->shard->cfg->max_message_bytes, true);
    c->rate_tokens = (int32_t)c->shard->cfg->max_frames_per_second;
    c->rate_stamp = (uint32_t)shard_now(c->shard);
    c->upgraded = true;
    c->heartbeat_on = true;
    conn_set_state(c, CONN_WS_OPEN);
}

/* ---- sending ------------------------------------------------------------ */

int conn_ws_send(struct conn *c, const uv_buf_t *parts, unsigned nparts, bool counted)
{
    if (c->state != CONN_WS_OPEN)
        return -1;
    conn_send_frame(c, OUTBOX_DATA, WS_OP_TEXT, parts, nparts, counted);
    return c->state == CONN_CLOSED ? -1 : 0;
}

int conn_ws_ping(struct conn *c, const uint8_t *payload, size_t len)
{
    if (c->state != CONN_WS_OPEN || len > WS_MAX_CONTROL)
        return -1;
    uv_buf_t part = uv_buf_init((char *)payload, (unsigned)len);
    conn_send_frame(c, OUTBOX_CTL, WS_OP_PING, &part, 1, false);
    return c->state == CONN_CLOSED ? -1 : 0;
}

void conn_queue_close(struct conn *c, uint16_t code, const char *reason, bool after_data)
{
    uint8_t payload[WS_MAX_CONTROL];
    size_t n = ws_close_payload(payload, code, reason);
    uv_buf_t part = uv_buf_init((char *)payload, (unsigned)n);
    if (!after_data)
        outbox_drop_unsent_data(&c->out);
    conn_send_frame(c, after_data ? OUTBOX_DATA : OUTBOX_CTL, WS_OP_CLOSE, &part, 1, false);
    conn_pump(c); /* written already? then linger now */
}

void conn_ws_close(struct conn *c, uint16_t code, const char *reason, bool after_data)
{
    if (c->state != CONN_WS_OPEN)
        return;
    c->close_sent = code;
    conn_set_state(c, CONN_WS_CLOSING);
    conn_report_ws_end(c);
    conn_queue_close(c, code, reason, after_data);
}

/* ---- frame budget (--max-frames-per-second, burst of one second) -------- */

void conn_rate_refill(struct conn *c)
{
    uint64_t rate = (uint64_t)c->shard->cfg->max_frames_per_second;
    uint32_t now = (uint32_t)shard_now(c->shard);
    uint64_t add = (uint64_t)(uint32_t)(now - c->rate_stamp) * rate / 1000;
    if (!rate || !add)
        return;
    int64_t tokens = (int64_t)c->rate_tokens + (int64_t)add;
    if (tokens >= (int64_t)rate) {
        c->rate_tokens = (int32_t)rate;
        c->rate_stamp = now;
    } else {
        c->rate_tokens = (int32_t)tokens; /* a remainder below one frame carries */
        c->rate_stamp += (uint32_t)(add * 1000 / rate);
    }
}

uint64_t conn_rate_resume_at(const struct conn *c)
{
    uint64_t now = shard_now(c->shard), rate = (uint64_t)c->shard->cfg->max_frames_per_second;
    uint64_t stamp = now - (uint32_t)((uint32_t)now - c->rate_stamp);
    int64_t deficit = 1 - (int64_t)c->rate_tokens;
    if (deficit <= 0 || !rate)
        return now;
    return stamp + ((uint64_t)deficit * 1000 + rate - 1) / rate;
}

/* ---- messages ----------------------------------------------------------- */

static void deliver(struct conn *c, uint8_t *data, size_t len)
{
    if (c->opts->hooks->on_message)
        c->opts->hooks->on_message(c, data, len);
}

static void on_data(struct conn *c, const struct ws_event *ev)
{
    if (c->state != CONN_WS_OPEN)
        return; /* closing: the peer's data no longer matters */
    if (ev->first && ev->last) {
        deliver(c, ev->data, ev->len); /* whole message in this read: no copy */
        return;
    }
    /* The decoder stops a message at --max-message-bytes (at most 1 GiB),
     * so the 32-bit length and capacity cannot overflow. */
    if (c->msg_len + ev->len > c->msg_cap) {
        size_t cap = c->msg_cap ? c->msg_cap : 4096;
        while (cap < c->msg_len + ev->len)
            cap *= 2;
        c->msg = xrealloc(c->msg, cap);
        c->msg_cap = (uint32_t)cap;
    }
    if (ev->len)
        memcpy(c->msg + c->msg_len, ev->data, ev->len);
    c->msg_len += (uint32_t)ev->len;
    if (ev->last) {
        deliver(c, c->msg, c->msg_len);
        free(c->msg); /* idle connections keep no buffer */
        c->msg = NULL;
        c->msg_len = c->msg_cap = 0;
    }
}

/* ---- control frames ----------------------------------------------------- */

static void on_peer_close(struct conn *c, const struct ws_event *ev)
{
    c->close_rcvd = ev->close_code;
    if (c->state == CONN_WS_OPEN) {
        /* Echo the peer's code; whatever data was not yet sent is dropped
         * because nothing may follow a close frame. */
        uint16_t code = ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code;
        conn_set_state(c, CONN_WS_DONE);
        conn_report_ws_end(c);
        conn_queue_close(c, code, "", false);
    } else if (c->state == CONN_WS_CLOSING) {
        conn_set_state(c, CONN_WS_DONE); /* the pump flushes, then lingers */
    }
}

/* RFC 6455 §5.5.3 lets an endpoint answer only the most recent ping: a pong
 * still waiting for the socket takes the newer payload, so at most one
 * pong waits per connection however fast the peer pings. Queued control
 * bytes count against the connection's outbox budget (--phone-backlog-bytes);
 * a peer whose control traffic alone passes it is closed 1008. */
static void send_pong(struct conn *c, const uint8_t *payload, size_t len)
{
    uint8_t frame[OUTBOX_PONG_CAP];
    size_t n = ws_frame_header(frame, true, WS_OP_PONG, len, NULL);
    if (len)
        memcpy(frame + n, payload, len);
    n += len;
    if (!conn_output_idle(c)) {
        outbox_put_pong(&c->out, frame, n);
    } else {
        uv_buf_t iov = uv_buf_init((char *)frame, (unsigned)n);
        conn_send(c, OUTBOX_CTL, &iov, 1, false); /* straight to the kernel */
    }
    if (c->state == CONN_WS_OPEN && c->out.ctl_bytes > (size_t)c->shard->cfg->phone_backlog_bytes)
        conn_ws_close(c, WS_CLOSE_POLICY, "control backlog full", false);
}

static void on_control(struct conn *c, const struct ws_event *ev)
{
    switch (ev->opcode) {
    case WS_OP_PING:
        if (c->state == CONN_WS_OPEN)
            send_pong(c, ev->data, ev->len);
        break;
    case WS_OP_PONG:
        if (c->dl_pong && ev->len == sizeof c->ping_seq &&
            memcmp(ev->data, &c->ping_seq, sizeof c->ping_seq) == 0)
            c->dl_pong = 0;
        if (c->opts->hooks->on_pong)
            c->opts->hooks->on_pong(c, ev->data, ev->len);
        break;
    case WS_OP_CLOSE:
        on_peer_close(c, ev);
        break;
    }
}

/* ---- input -------------------------------------------------------------- */

/* A decoding error. On an open connection the close frame goes out and the
 * peer gets --close-timeout to answer, as after any close of ours. Input
 * that arrives after that cannot be decoded any more (there is no close
 * frame to find in it): the peer is still talking, so flush our close,
 * half-close and drain it until its FIN. Never a reset, which could
 * destroy the close frame in flight. */
static void ws_fail(struct conn *c, uint16_t code)
{
    if (c->state == CONN_WS_OPEN)
        conn_ws_close(c, code, "", false);
    else if (c->state == CONN_WS_CLOSING)
        conn_set_state(c, CONN_WS_DONE);
}

/* A started frame or message must complete within the deadline; idle time
 * between messages is the heartbeat's business. began: the message in
 * progress (if any) started in this read. */
static void message_deadline(struct conn *c, bool began)
{
    uint64_t ms = c->shard->message_ms;
    if (!ws_decoder_busy(&c->ws)) {
        c->dl_message = 0;
        c->msg_left = 0;
    } else if (began || (!c->dl_message && !c->msg_left)) {
        if (c->paused & CONN_PAUSE_RELAY) {
            c->msg_left = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
            c->dl_message = 0;
        } else {
            c->dl_message = conn_after(c, ms);
        }
    }
}

void conn_ws_input(struct conn *c, uint8_t *buf, size_t len)
{
    bool began = false, limited = c->shard->cfg->max_frames_per_second > 0;
    while (len > 0 && (c->state == CONN_WS_OPEN || c->state == CONN_WS_CLOSING)) {
        struct ws_event ev;
        if (!ws_decoder_busy(&c->ws))
            began = true; /* whatever is in progress at the end started in this read */
        size_t used = ws_decoder_feed(&c->ws, buf, len, &ev);
        buf += used;
        len -= used;
        if (limited && (ev.type == WS_EV_DATA || ev.type == WS_EV_CONTROL) &&
            c->rate_tokens > INT32_MIN / 2)
            c->rate_tokens--;
        if (ev.type == WS_EV_DATA)
            on_data(c, &ev);
        else if (ev.type == WS_EV_CONTROL)
            on_control(c, &ev);
        else if (ev.type == WS_EV_ERROR) {
            ws_fail(c, ev.close_code);
            return;
        }
    }
    if (c->state != CONN_WS_OPEN)
        return;
    /* Frames past the budget in this read: not read again until the budget
     * has a frame again (the timer wakes it), so a flood of tiny frames
     * slows only its sender. */
    if (c->rate_tokens < 0)
        conn_set_paused(c, CONN_PAUSE_RATE, true);
    message_deadline(c, began);
}
