/* conn.c — a connection's life: accept, state and deadlines, the pump that
 * every callback ends in, sending, teardown. Bytes come in through the
 * transport (plaintext or TLS, never asked which) and go up to conn_http.c
 * or conn_ws.c; bytes go out straight to the transport when nothing waits
 * (no copy), otherwise through the outbox. Whether to keep reading, pause,
 * linger or close is decided in conn_pump and nowhere else. It never
 * interprets requests or messages: the hooks do. */
#include "net/conn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/tcpinfo.h"

#define WRITE_BATCH     16
#define WRITE_TIMED_OUT "relay: write timed out"

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- deadlines --------------------------------------------------------- */

static uint64_t now_ms(const struct conn *c)
{
    return shard_now(c->shard);
}

uint64_t conn_after(const struct conn *c, uint64_t ms)
{
    return now_ms(c) + ms;
}

void conn_rearm(struct conn *c)
{
    uint64_t dls[] = {c->dl_state,
                      c->dl_ping,
                      c->dl_pong,
                      c->dl_request,
                      c->dl_write,
                      c->dl_message,
                      c->paused & CONN_PAUSE_RATE ? conn_rate_resume_at(c) : 0};
    uint64_t min = 0;
    for (size_t i = 0; i < ARRAY_LEN(dls); i++)
        if (dls[i] && (!min || dls[i] < min))
            min = dls[i];
    if (!min) {
        shard_cancel(c->shard, &c->timer);
        return;
    }
    /* A later deadline is left to the early wake-up, which re-arms; only an
     * earlier one needs the wheel touched. */
    if (!wheel_pending(&c->timer) || min < c->timer.expire)
        shard_schedule(c->shard, &c->timer, min);
}

/* Time the relay keeps a connection paused is the relay's, not the
 * peer's, so the message deadline stands still meanwhile (it resumes with
 * what was left). Reading itself starts or stops in the pump. */
void conn_set_paused(struct conn *c, uint8_t bits, bool on)
{
    uint8_t was = c->paused;
    if (c->state == CONN_CLOSED)
        return;
    c->paused = on ? (uint8_t)(was | bits) : (uint8_t)(was & ~bits);
    bool relay_was = was & CONN_PAUSE_RELAY, relay_now = c->paused & CONN_PAUSE_RELAY;
    if (relay_now && !relay_was && c->dl_message) {
        uint64_t now = now_ms(c);
        uint64_t left = c->dl_message > now ? c->dl_message - now : 1;
        c->msg_left = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
        c->dl_message = 0;
    } else if (!relay_now && relay_was && c->msg_left) {
        c->dl_message = conn_after(c, c->msg_left);
        c->msg_left = 0;
    }
}

void conn_set_state(struct conn *c, enum conn_state st)
{
    struct shard *s = c->shard;
    c->state = st;
    switch (st) {
    case CONN_PROXY_HEADER:
        c->dl_state = conn_after(c, s->proxy_ms);
        break;
    case CONN_TLS_HANDSHAKE:
        c->dl_state = conn_after(c, s->tls_ms);
        break;
    case CONN_HTTP_HEAD:
        c->dl_state = conn_after(c, s->header_ms);
        c->dl_request = conn_after(c, s->request_ms);
        break;
    case CONN_HTTP_BODY:
        c->dl_state = 0;
        break;
    case CONN_HTTP_IDLE:
        c->dl_state = conn_after(c, s->idle_ms);
        c->dl_request = 0;
        break;
    case CONN_HTTP_CLOSING:
        c->dl_state = conn_after(c, s->write_ms);
        c->dl_request = 0;
        break;
    case CONN_WS_OPEN:
        c->dl_state = c->dl_request = 0;
        c->dl_ping = c->heartbeat_on ? conn_after(c, s->heartbeat_ms) : 0;
        break;
    case CONN_WS_CLOSING:
    case CONN_WS_DONE:
    case CONN_LINGER:
        c->dl_state = conn_after(c, s->close_ms);
        c->dl_ping = c->dl_pong = c->dl_message = 0;
        c->msg_left = 0;
        conn_set_paused(c, 0xff, false); /* the peer's close or FIN must be seen */
        break;
    case CONN_CLOSED:
        c->dl_state = c->dl_request = c->dl_message = 0;
        c->dl_ping = c->dl_pong = c->dl_write = 0;
        break;
    }
    conn_rearm(c);
}

static bool conn_is_ws(const struct conn *c)
{
    return c->state == CONN_WS_OPEN || c->state == CONN_WS_CLOSING || c->state == CONN_WS_DONE;
}

/* ---- teardown ---------------------------------------------------------- */

void conn_report_ws_end(struct conn *c)
{
    if (!c->upgraded || c->ws_end_reported)
        return;
    c->ws_end_reported = true;
    if (!c->close_rcvd && !c->close_sent)
        c->close_rcvd = WS_CLOSE_ABNORMAL;
    if (c->opts->hooks->on_ws_end)
        c->opts->hooks->on_ws_end(c);
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = CONTAINER_OF(h, struct conn, t.tcp);
    struct shard *s = c->shard;
    if (c->opts->hooks->on_free)
        c->opts->hooks->on_free(c);
    outbox_free(&c->out);
    ws_decoder_free(&c->ws);
    free(c->msg);
    c->t.ops->release(&c->t);
    free(c->pp);
    conn_req_release(c);
    list_remove(&c->link);
    s->nconns--;
    free(c);
    if (s->live)
        atomic_fetch_sub(s->live, 1);
    if (s->on_conn_freed)
        s->on_conn_freed(s);
}

void conn_abort(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    conn_report_ws_end(c);
    conn_set_state(c, CONN_CLOSED);
    shard_cancel(c->shard, &c->timer);
    uv_close((uv_handle_t *)&c->t.tcp, on_closed);
}

/* Drops c because its output cannot be delivered; an upgraded connection's
 * hooks hear why first (a phone whose write fails: docs/features/forwarding.md). */
static void write_failed(struct conn *c, const char *err)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->upgraded && (c->state == CONN_WS_OPEN || c->state == CONN_WS_CLOSING) &&
        c->opts->hooks->on_write_failed)
        c->opts->hooks->on_write_failed(c, err);
    conn_abort(c);
}

static void write_error(struct conn *c, int status)
{
    char err[96];
    snprintf(err, sizeof err, "write: %s", uv_strerror(status));
    write_failed(c, err);
}

/* ---- the pump ---------------------------------------------------------- */

/* How far our writes have got: the bytes the peer has acknowledged (it
 * reads), or where the kernel does not say, how little libuv still holds.
 * Grows with progress. */
static uint64_t write_mark(const struct conn *c)
{
    uv_os_fd_t fd;
    uint64_t acked;
    if (uv_fileno((const uv_handle_t *)&c->t.tcp, &fd) == 0 && tcp_bytes_acked(fd, &acked) == 0)
        return acked;
    return UINT64_MAX - uv_stream_get_write_queue_size((const uv_stream_t *)&c->t.tcp);
}

/* Progress is measured only for a write the kernel did not take at once
 * (libuv still holds bytes of it): the common write completes on the next
 * loop turn and costs no getsockopt. */
static void arm_write_deadline(struct conn *c)
{
    if (c->dl_write)
        return;
    c->dl_write = conn_after(c, c->shard->write_ms);
    c->write_sampled = uv_stream_get_write_queue_size((const uv_stream_t *)&c->t.tcp) > 0;
    if (c->write_sampled)
        c->write_mark = write_mark(c);
    conn_rearm(c);
}

static void on_written(struct transport *t, int status, size_t plain)
{
    struct conn *c = CONTAINER_OF(t, struct conn, t);
    enum outbox_progress p = outbox_written(&c->out, plain, status);
    if (c->state == CONN_CLOSED)
        return;
    if (p == OUTBOX_FAILED) {
        write_error(c, status);
        return;
    }
    c->dl_write = 0;
    if (outbox_take_drained(&c->out) && c->opts->hooks->on_drained) {
        c->opts->hooks->on_drained(c);
        if (c->state == CONN_CLOSED)
            return;
    }
    conn_pump(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    free(req);
    if (status < 0)
        conn_abort(c); /* no-op if the connection is already closing */
}

/* Everything is written. A closing connection ends its transport (TLS
 * close_notify: one more write), then half-closes and waits briefly for
 * the peer's FIN so the kernel does not reset a reply the peer has not
 * read yet. Returns true when there is something new to write. */
static bool flushed(struct conn *c)
{
    c->dl_write = 0;
    if (c->state != CONN_HTTP_CLOSING && c->state != CONN_WS_DONE)
        return false;
    if (!c->shut) {
        c->shut = true;
        c->t.ops->shutdown(&c->t);
        if (c->t.ops->want_write(&c->t))
            return true;
    }
    uv_shutdown_t *req = xmalloc(sizeof *req);
    req->data = c;
    conn_set_state(c, CONN_LINGER);
    if (uv_shutdown(req, (uv_stream_t *)&c->t.tcp, on_shutdown) != 0) {
        free(req);
        conn_abort(c);
    }
    return false;
}

static void start_write(struct conn *c)
{
    uv_buf_t bufs[WRITE_BATCH];
    size_t bytes;
    unsigned n = outbox_gather(&c->out, bufs, WRITE_BATCH, &bytes);
    int r = c->t.ops->writev(&c->t, bufs, n, on_written);
    if (r != 0) {
        outbox_written(&c->out, 0, r);
        write_error(c, r);
        return;
    }
    arm_write_deadline(c);
}

/* Reading runs while the state wants input and nothing pauses it. */
static void decide_reading(struct conn *c)
{
    bool want = c->state != CONN_CLOSED && !c->paused;
    if (want == c->reading)
        return;
    c->reading = want;
    if (!want)
        uv_read_stop((uv_stream_t *)&c->t.tcp);
    else if (uv_read_start((uv_stream_t *)&c->t.tcp, on_alloc, on_read) != 0)
        conn_abort(c);
}

void conn_pump(struct conn *c)
{
    if (c->pumping || c->state == CONN_CLOSED)
        return;
    c->pumping = true;
    while (c->state != CONN_CLOSED && !c->t.writing) {
        if (outbox_empty(&c->out) && !c->t.ops->want_write(&c->t) && !flushed(c))
            break;
        if (c->state != CONN_CLOSED)
            start_write(c);
    }
    c->pumping = false;
    if (c->state == CONN_CLOSED)
        return;
    decide_reading(c);
    conn_rearm(c);
}

/* ---- sending ----------------------------------------------------------- */

bool conn_output_idle(const struct conn *c)
{
    return !c->t.writing && outbox_empty(&c->out) && !c->t.ops->want_write(&c->t);
}

void conn_send(struct conn *c, enum outbox_kind kind, const uv_buf_t *iov, unsigned n, bool counted)
{
    size_t skip = 0;
    if (c->state == CONN_CLOSED)
        return;
    if (conn_output_idle(c)) {
        ssize_t r = c->t.ops->try_writev(&c->t, iov, n);
        if (r < 0) {
            write_error(c, (int)r);
            return;
        }
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += iov[i].len;
        if ((size_t)r == total) {
            if (counted)
                outbox_count_frame(&c->out);
            if (c->t.ops->want_write(&c->t))
                conn_pump(c); /* TLS: ciphertext the kernel did not take */
            return;
        }
        skip = (size_t)r; /* a frame begun on the wire finishes before anything else */
    }
    outbox_push(&c->out, kind, iov, n, skip, counted);
    conn_pump(c);
}

void conn_send_frame(struct conn *c, enum outbox_kind kind, uint8_t op, const uv_buf_t *parts,
                     unsigned nparts, bool counted)
{
    uint8_t hdr[WS_MAX_HEADER];
    uv_buf_t iov[8];
    size_t total = 0;
    for (unsigned i = 0; i < nparts; i++)
        total += parts[i].len;
    size_t hl = ws_frame_header(hdr, true, op, total, NULL);
    iov[0] = uv_buf_init((char *)hdr, (unsigned)hl);
    for (unsigned i = 0; i < nparts && i < ARRAY_LEN(iov) - 1; i++)
        iov[i + 1] = parts[i];
    conn_send(c, kind, iov, nparts + 1, counted);
}

size_t conn_queued_bytes(const struct conn *c)
{
    return outbox_bytes(&c->out); /* control frames count against the budget too */
}

size_t conn_queued_items(const struct conn *c)
{
    return c->out.data_items;
}

void conn_notify_below(struct conn *c, size_t mark)
{
    outbox_notify_below(&c->out, mark);
}

void conn_heartbeat(struct conn *c, bool on)
{
    c->heartbeat_on = on;
    c->dl_ping = on && c->state == CONN_WS_OPEN ? conn_after(c, c->shard->heartbeat_ms) : 0;
    if (!on)
        c->dl_pong = 0;
    conn_rearm(c);
}

void conn_pause_reading(struct conn *c, bool pause)
{
    conn_set_paused(c, CONN_PAUSE_HOOK, pause);
    conn_pump(c);
}

void conn_bus_hold(struct conn *c, bool on)
{
    if (!conn_is_ws(c))
        return;
    conn_set_paused(c, CONN_PAUSE_BUS, on);
    conn_pump(c);
}

void conn_throttle(struct conn *c, bool on)
{
    if (!conn_is_ws(c))
        return;
    conn_set_paused(c, CONN_PAUSE_THROTTLE, on);
    conn_pump(c);
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = CONTAINER_OF(h, struct conn, t.tcp);
    (void)suggested;
    /* One buffer per shard: reads are processed before the next one starts. */
    *buf = uv_buf_init((char *)c->shard->rbuf, SHARD_READ_BUF);
}

/* Plaintext for the HTTP or WebSocket layer; closing states drop it. */
static void plain_input(struct conn *c, uint8_t *p, size_t n)
{
    switch (c->state) {
    case CONN_HTTP_HEAD:
    case CONN_HTTP_BODY:
    case CONN_HTTP_IDLE:
        conn_http_input(c, p, n);
        break;
    case CONN_WS_OPEN:
    case CONN_WS_CLOSING:
        conn_ws_input(c, p, n);
        break;
    default:
        break;
    }
}

/* The transport refused the stream. Plain HTTP on the TLS port gets Go's
 * answer in the clear (docs/features/tls.md); a TLS-ALPN-01 handshake
 * (no responder in this build) gets close_notify; anything else is
 * dropped. */
static void transport_refused(struct conn *c, ssize_t why)
{
    static const char resp[] = "HTTP/1.0 400 Bad Request\r\n\r\n"
                               "Client sent an HTTP request to an HTTPS server.\n";
    if (why == TRANSPORT_HTTP) {
        conn_log_refusal(c, "request_refused", 400, "plain HTTP on the TLS port");
        c->t.ops->release(&c->t);
        transport_use_tcp(&c->t);
        conn_set_state(c, CONN_HTTP_HEAD);
        conn_http_reply(c, resp, sizeof resp - 1, false);
    } else if (why == TRANSPORT_ALPN) {
        conn_log_refusal(c, "tls_refused", 0, "acme-tls/1 is not served by this build");
        conn_set_state(c, CONN_HTTP_CLOSING);
    } else {
        if (why == TRANSPORT_ERROR && c->state == CONN_TLS_HANDSHAKE)
            conn_log_refusal(c, "tls_refused", 0, "TLS handshake failed");
        conn_abort(c); /* EOF (close_notify), a reset, a protocol error */
    }
}

/* Bytes from the socket through the transport, up to HTTP or WebSocket. */
static void transport_input(struct conn *c, const uint8_t *in, size_t len)
{
    while (c->state != CONN_CLOSED) {
        uint8_t *plain;
        ssize_t r = c->t.ops->read(&c->t, in, len, &plain);
        in = NULL;
        len = 0;
        if (c->state == CONN_TLS_HANDSHAKE && c->t.ops->ready(&c->t) && r != TRANSPORT_ALPN)
            conn_set_state(c, CONN_HTTP_HEAD);
        if (r == 0)
            return;
        if (r < 0) {
            transport_refused(c, r);
            return;
        }
        plain_input(c, plain, (size_t)r);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = CONTAINER_OF(stream, struct conn, t.tcp);
    if (nread < 0) {
        conn_abort(c); /* EOF or error; an open WebSocket reports 1006 */
        return;
    }
    uint8_t *p = (uint8_t *)buf->base;
    size_t n = (size_t)nread;
    if (c->state == CONN_PROXY_HEADER && n) {
        ssize_t used = conn_proxy_input(c, p, n);
        if (used < 0 || c->state == CONN_PROXY_HEADER)
            n = 0;
        else {
            p += used;
            n -= (size_t)used;
        }
    }
    if (c->upgraded)
        conn_rate_refill(c);
    c->pumping = true; /* input first; then the pump writes and decides once */
    if (n)
        transport_input(c, p, n);
    c->pumping = false;
    conn_pump(c);
}

/* ---- timers ------------------------------------------------------------ */

static void heartbeat(struct conn *c, uint64_t now)
{
    struct shard *s = c->shard;
    c->dl_ping = now + s->heartbeat_ms;
    if (c->dl_pong)
        return; /* previous ping still unanswered: its deadline decides */
    c->ping_seq++;
    c->dl_pong = now + s->pong_ms;
    conn_ws_ping(c, (const uint8_t *)&c->ping_seq, sizeof c->ping_seq);
}

/* True while our writes still make progress: a slow but reading peer is
 * not a stalled one, even while the kernel waits for half its send buffer
 * to drain before it lets libuv write again. */
static bool write_progressing(struct conn *c, uint64_t now)
{
    uint64_t mark = write_mark(c);
    if (!c->write_sampled || mark > c->write_mark) {
        c->write_sampled = true;
        c->write_mark = mark;
        c->dl_write = now + c->shard->write_ms;
        return true;
    }
    return false;
}

static void conn_on_timer(struct wheel_entry *e, void *arg)
{
    struct conn *c = CONTAINER_OF(e, struct conn, timer);
    uint64_t now = shard_now(arg);
    if (c->state == CONN_CLOSED)
        return;
    if ((c->dl_state && now >= c->dl_state) || (c->dl_request && now >= c->dl_request)) {
        /* slow head, idle keep-alive, or close handshake overdue; frames
         * still unsent then (a close directive's frame) were never written */
        if (c->t.writing || !outbox_empty(&c->out))
            write_failed(c, WRITE_TIMED_OUT);
        conn_abort(c);
        return;
    }
    if (c->dl_write && now >= c->dl_write && !write_progressing(c, now)) {
        if (c->state == CONN_WS_OPEN)
            c->close_sent = WS_CLOSE_INTERNAL;
        write_failed(c, WRITE_TIMED_OUT);
        return;
    }
    if (c->dl_message && now >= c->dl_message)
        conn_ws_close(c, WS_CLOSE_POLICY, "message deadline exceeded", false);
    else if (c->dl_pong && now >= c->dl_pong)
        conn_ws_close(c, WS_CLOSE_INTERNAL, "heartbeat timeout", false);
    else if (c->dl_ping && now >= c->dl_ping)
        heartbeat(c, now);
    if ((c->paused & CONN_PAUSE_RATE) && now >= conn_rate_resume_at(c)) {
        conn_rate_refill(c);
        conn_set_paused(c, CONN_PAUSE_RATE, false);
    }
    conn_pump(c);
}

const struct shard_ops conn_shard_ops = {
    .on_timer = conn_on_timer,
    .adopt = conn_adopt_node,
    .discard = conn_discard_node,
};
