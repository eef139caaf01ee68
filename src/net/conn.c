/* conn.c — the per-connection pump: socket reads go through the PROXY
 * header reader and TLS when the listener asks for them, then the HTTP
 * reader or the WebSocket decoder; replies and frames go out through two
 * queues (control frames first, never inside a data frame), encrypted on
 * their way to the socket for TLS; one wheel entry carries whichever
 * deadline is nearest. State changes happen only in set_state. It never
 * interprets requests or messages: the hooks do. */
#include "net/conn.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/proxyproto.h"
#include "net/shard.h"
#include "base/tcpinfo.h"
#include "tls/tls.h"

#define WRITE_BATCH 16

struct write_batch {
    uv_write_t req;
    struct conn *c;
    uint8_t *owned;       /* TLS: the ciphertext being written (freed when done) */
    uint32_t tls_counted; /* TLS: counted frames whose remainder is in owned */
    uv_buf_t bufs[WRITE_BATCH];
};

static void ws_input(struct conn *c, uint8_t *buf, size_t len);
static void kick_writer(struct conn *c);
static void tls_send_now(struct conn *c, const uv_buf_t *iov, unsigned n, bool counted);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- request readers ---------------------------------------------------- */

/* A request reader lives only until the upgrade (or the connection's end),
 * so readers are recycled through a small per-shard pool: freeing them
 * between the long-lived connection structs would leave holes that idle
 * connections pay for. */
static struct http_req *req_get(struct shard *s)
{
    if (s->nreq_pool)
        return s->req_pool[--s->nreq_pool];
    struct http_req *r = xmalloc(sizeof *r);
    http_req_init(r, (size_t)s->cfg->max_header_bytes);
    return r;
}

static void req_put(struct shard *s, struct http_req *r)
{
    if (s->nreq_pool < SHARD_REQ_POOL) {
        http_req_reset(r); /* keeps a small head buffer for the next one */
        s->req_pool[s->nreq_pool++] = r;
        return;
    }
    http_req_free(r);
    free(r);
}

/* Bytes an unfinished request head of c holds (spec of the budget:
 * docs/features/websocket.md, "Limits"). */
static size_t head_charge(const struct conn *c)
{
    return c->req && !c->req->head_done ? c->req->buf_cap : 0;
}

/* Brings the process-wide head total up to date after c's charge was before. */
static void head_settle(const struct conn *c, size_t before)
{
    size_t now = head_charge(c);
    _Atomic size_t *total = c->shard->head_bytes;
    if (!total || now == before)
        return;
    if (now > before)
        atomic_fetch_add(total, now - before);
    else
        atomic_fetch_sub(total, before - now);
}

/* Gives c's request reader back (its head, finished or not, no longer counts). */
static void req_release(struct conn *c)
{
    size_t before = head_charge(c);
    struct http_req *r = c->req;
    if (!r)
        return;
    c->req = NULL;
    head_settle(c, before);
    req_put(c->shard, r);
}

/* ---- deadlines --------------------------------------------------------- */

static uint64_t now_ms(const struct conn *c)
{
    return shard_now(c->shard);
}

/* When a connection paused for its frame rate has a frame to spend again. */
static uint64_t rate_resume_at(const struct conn *c)
{
    uint64_t now = now_ms(c), rate = (uint64_t)c->shard->cfg->max_frames_per_second;
    uint64_t stamp = now - (uint32_t)((uint32_t)now - c->rate_stamp);
    int64_t deficit = 1 - (int64_t)c->rate_tokens;
    if (deficit <= 0 || !rate)
        return now;
    return stamp + ((uint64_t)deficit * 1000 + rate - 1) / rate;
}

static void rearm(struct conn *c)
{
    uint64_t dls[] = {c->dl_state,
                      c->dl_ping,
                      c->dl_pong,
                      c->dl_request,
                      c->dl_write,
                      c->dl_message,
                      c->paused & CONN_PAUSE_RATE ? rate_resume_at(c) : 0};
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

static uint64_t after(const struct conn *c, uint64_t ms)
{
    return now_ms(c) + ms;
}

/* The pauses that are the relay's doing, not the peer's. */
#define CONN_PAUSE_RELAY (CONN_PAUSE_HOOK | CONN_PAUSE_THROTTLE)

/* Sets or clears pause bits; reading stops while any bit is set. Time the
 * hooks keep a connection paused is the relay's, not the peer's, so the
 * message deadline stands still meanwhile (it resumes with what was left). */
static void set_paused(struct conn *c, uint8_t bits, bool on)
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
        c->dl_message = after(c, c->msg_left);
        c->msg_left = 0;
    }
    if (!was && c->paused)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else if (was && !c->paused)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->paused != was)
        rearm(c);
}

/* The only place the state changes; each state gets its own deadline. */
static void set_state(struct conn *c, enum conn_state st)
{
    struct shard *s = c->shard;
    c->state = st;
    switch (st) {
    case CONN_PROXY_HEADER:
        c->dl_state = after(c, s->proxy_ms);
        break;
    case CONN_TLS_HANDSHAKE:
        c->dl_state = after(c, s->tls_ms);
        break;
    case CONN_HTTP_HEAD:
        c->dl_state = after(c, s->header_ms);
        c->dl_request = after(c, s->request_ms);
        break;
    case CONN_HTTP_BODY:
        c->dl_state = 0;
        break;
    case CONN_HTTP_IDLE:
        c->dl_state = after(c, s->idle_ms);
        c->dl_request = 0;
        break;
    case CONN_HTTP_CLOSING:
        c->dl_state = after(c, s->write_ms);
        c->dl_request = 0;
        break;
    case CONN_WS_OPEN:
        c->dl_state = c->dl_request = 0;
        c->dl_ping = c->heartbeat_on ? after(c, s->heartbeat_ms) : 0;
        break;
    case CONN_WS_CLOSING:
    case CONN_WS_DONE:
    case CONN_LINGER:
        c->dl_state = after(c, s->close_ms);
        c->dl_ping = c->dl_pong = c->dl_message = 0;
        c->msg_left = 0;
        set_paused(c, 0xff, false); /* the peer's close or FIN must be seen */
        break;
    case CONN_CLOSED:
        c->dl_state = c->dl_request = c->dl_message = 0;
        c->dl_ping = c->dl_pong = c->dl_write = 0;
        break;
    }
    rearm(c);
}

bool conn_is_ws(const struct conn *c)
{
    return c->state == CONN_WS_OPEN || c->state == CONN_WS_CLOSING || c->state == CONN_WS_DONE;
}

/* ---- teardown ---------------------------------------------------------- */

static void report_ws_end(struct conn *c)
{
    if (!c->upgraded || c->ws_end_reported)
        return;
    c->ws_end_reported = true;
    if (!c->close_rcvd && !c->close_sent)
        c->close_rcvd = WS_CLOSE_ABNORMAL;
    if (c->hooks->on_ws_end)
        c->hooks->on_ws_end(c);
}

static void wq_free(struct wq *q)
{
    struct wq_item *it = q->head;
    while (it) {
        struct wq_item *next = it->next;
        free(it);
        it = next;
    }
    q->head = q->tail = NULL;
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = CONTAINER_OF(h, struct conn, tcp);
    struct shard *s = c->shard;
    if (s->hooks->on_free)
        s->hooks->on_free(c);
    wq_free(&c->ctl);
    wq_free(&c->data);
    ws_decoder_free(&c->ws);
    free(c->msg);
    tls_conn_free(c->tls);
    free(c->pp);
    req_release(c);
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
    report_ws_end(c);
    set_state(c, CONN_CLOSED);
    shard_cancel(c->shard, &c->timer);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

#define WRITE_TIMED_OUT "relay: write timed out"

/* Drops c because its output cannot be delivered; an upgraded connection's
 * hooks hear why first (spec §5.3: a phone whose write fails). */
static void write_failed(struct conn *c, const char *err)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->upgraded && (c->state == CONN_WS_OPEN || c->state == CONN_WS_CLOSING) &&
        c->hooks->on_write_failed)
        c->hooks->on_write_failed(c, err);
    conn_abort(c);
}

/* The same for a libuv write error. */
static void write_error(struct conn *c, int status)
{
    char err[96];
    snprintf(err, sizeof err, "write: %s", uv_strerror(status));
    write_failed(c, err);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    free(req);
    if (status < 0)
        conn_abort(c); /* no-op if the connection is already closing */
}

static bool tls_emit(struct conn *c);

static void tls_out_begin(struct conn *c)
{
    tls_conn_out_begin(c->tls, c->shard->tls_out, SHARD_TLS_OUT);
}

/* Everything is written: (for TLS, queue close_notify,) half-close and
 * wait briefly for the peer's FIN so the kernel does not reset a reply the
 * peer has not read yet. uv_shutdown waits for writes still in flight. */
static void start_linger(struct conn *c)
{
    if (c->tls) {
        tls_out_begin(c);
        tls_conn_shutdown(c->tls);
        tls_emit(c);
        if (c->state == CONN_CLOSED)
            return;
    }
    uv_shutdown_t *req = xmalloc(sizeof *req);
    req->data = c;
    set_state(c, CONN_LINGER);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_abort(c);
    }
}

static void on_flushed(struct conn *c)
{
    c->dl_write = 0;
    rearm(c);
    if (c->state == CONN_HTTP_CLOSING || c->state == CONN_WS_DONE)
        start_linger(c);
}

/* ---- writing ----------------------------------------------------------- */

static void count_frame(struct conn *c, bool counted)
{
    /* Only this shard's thread writes the counter; others read it. */
    if (counted && c->frames_counter)
        atomic_store_explicit(c->frames_counter,
                              atomic_load_explicit(c->frames_counter, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

static void wq_push(struct wq *q, struct wq_item *it)
{
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
}

static struct wq_item *wq_pop(struct wq *q)
{
    struct wq_item *it = q->head;
    if (it) {
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
    }
    return it;
}

static size_t iov_total(const uv_buf_t *iov, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    return total;
}

/* Copies iov, skipping the first skip bytes, into one queue item. */
static struct wq_item *item_from(const uv_buf_t *iov, unsigned n, size_t skip)
{
    size_t len = iov_total(iov, n) - skip;
    struct wq_item *it = xmalloc(sizeof *it + len);
    uint8_t *p = it->data;
    for (unsigned i = 0; i < n; i++) {
        size_t l = iov[i].len;
        const char *b = iov[i].base;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(p, b + skip, l - skip);
        p += l - skip;
        skip = 0;
    }
    it->len = (uint32_t)len;
    it->cost = (uint32_t)len;
    it->pong = false;
    return it;
}

/* Writes at once when nothing is queued (the common case: no copy), else
 * queues a copy behind what is already waiting. */
static void enqueue(struct conn *c, struct wq *q, const uv_buf_t *iov, unsigned n, bool counted)
{
    size_t skip = 0;
    if (c->state == CONN_CLOSED)
        return;
    if (c->tls) {
        if (!c->writing && !c->ctl.head && !c->data.head) {
            tls_send_now(c, iov, n, counted);
            return;
        }
    } else if (!c->writing && !c->ctl.head && !c->data.head) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
        if (r >= 0 && (size_t)r == iov_total(iov, n)) {
            count_frame(c, counted);
            return;
        }
        if (r < 0 && r != UV_EAGAIN) {
            write_error(c, r);
            return;
        }
        skip = r > 0 ? (size_t)r : 0;
        /* A partly written frame must finish before anything else, even a
         * control frame: it goes to the front queue. */
        if (skip > 0)
            q = &c->ctl;
    }
    struct wq_item *it = item_from(iov, n, skip);
    it->counted = counted;
    wq_push(q, it);
    if (q == &c->data) {
        c->data_bytes += it->cost;
        c->data_items++;
    }
    kick_writer(c);
}

/* TLS fast path, nothing queued: encrypt and hand the ciphertext to the
 * kernel at once; only what it does not take is kept. The plaintext is
 * gathered into records of up to 16 KiB so a frame header and its payload
 * share a record. */
static void tls_send_now(struct conn *c, const uv_buf_t *iov, unsigned n, bool counted)
{
    uint8_t chunk[16384];
    size_t fill = 0;
    int rc = 0;
    tls_out_begin(c);
    for (unsigned i = 0; i < n && rc == 0; i++) {
        const uint8_t *p = (const uint8_t *)iov[i].base;
        size_t left = iov[i].len;
        while (left > 0 && rc == 0) {
            size_t k = sizeof chunk - fill < left ? sizeof chunk - fill : left;
            memcpy(chunk + fill, p, k);
            fill += k;
            p += k;
            left -= k;
            if (fill == sizeof chunk) {
                rc = tls_conn_write(c->tls, chunk, fill);
                fill = 0;
            }
        }
    }
    if (rc == 0 && fill)
        rc = tls_conn_write(c->tls, chunk, fill);
    if (rc != 0) {
        tls_conn_out_end(c->tls, 0);
        conn_abort(c);
        return;
    }
    if (tls_emit(c))
        count_frame(c, counted);
    else if (counted)
        c->pend_counted++;
}

static void drop_unsent_data(struct conn *c)
{
    struct wq_item *it = c->data.head, *keep = NULL;
    for (int i = 0; i < c->inflight_data && it; i++) {
        keep = it;
        it = it->next;
    }
    while (it) {
        struct wq_item *next = it->next;
        c->data_bytes -= it->cost;
        c->data_items--;
        free(it);
        it = next;
    }
    if (keep) {
        keep->next = NULL;
        c->data.tail = keep;
    } else {
        c->data.head = c->data.tail = NULL;
    }
}

static void on_write_done(uv_write_t *req, int status)
{
    struct write_batch *b = CONTAINER_OF(req, struct write_batch, req);
    struct conn *c = b->c;
    if (status == 0 && c->frames_counter)
        *c->frames_counter += b->tls_counted;
    free(b->owned);
    free(b);
    c->writing = false;
    for (; c->inflight_ctl > 0; c->inflight_ctl--) {
        struct wq_item *it = wq_pop(&c->ctl);
        count_frame(c, it->counted && status == 0);
        free(it);
    }
    for (; c->inflight_data > 0; c->inflight_data--) {
        struct wq_item *it = wq_pop(&c->data);
        count_frame(c, it->counted && status == 0);
        c->data_bytes -= it->cost;
        c->data_items--;
        free(it);
    }
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        write_error(c, status);
        return;
    }
    c->dl_write = 0;
    if (c->data_bytes <= c->notify_below) {
        c->notify_below = SIZE_MAX;
        if (c->hooks->on_drained)
            c->hooks->on_drained(c);
        if (c->state == CONN_CLOSED)
            return;
    }
    kick_writer(c);
}

/* How far our writes have got: the bytes the peer has acknowledged (it
 * reads), or where the kernel does not say, how little libuv still holds.
 * Grows with progress. */
static uint64_t write_mark(const struct conn *c)
{
    uv_os_fd_t fd;
    uint64_t acked;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 && tcp_bytes_acked(fd, &acked) == 0)
        return acked;
    return UINT64_MAX - uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/* Hands batch b (n buffers) to libuv and arms the write-progress deadline;
 * a write that cannot start drops the connection. */
static void start_write(struct conn *c, struct write_batch *b, unsigned n)
{
    int r = uv_write(&b->req, (uv_stream_t *)&c->tcp, b->bufs, n, on_write_done);
    if (r != 0) {
        c->inflight_ctl = c->inflight_data = 0;
        free(b->owned);
        free(b);
        write_error(c, r);
        return;
    }
    c->writing = true;
    if (!c->dl_write) {
        c->dl_write = after(c, c->shard->write_ms);
        c->write_mark = write_mark(c);
        rearm(c);
    }
}

/* TLS: ciphertext waiting from earlier calls goes first, then the queued
 * items (control first) are encrypted behind it, all in one write. */
static void kick_writer_tls(struct conn *c)
{
    struct wq *qs[2] = {&c->ctl, &c->data};
    int *counts[2] = {&c->inflight_ctl, &c->inflight_data};
    unsigned n = 0;
    for (int q = 0; q < 2; q++) {
        for (struct wq_item *it = qs[q]->head; it && n < WRITE_BATCH; it = it->next, n++) {
            (*counts[q])++;
            if (tls_conn_write(c->tls, it->data, it->len) != 0) {
                c->inflight_ctl = c->inflight_data = 0;
                conn_abort(c);
                return;
            }
        }
    }
    size_t len;
    uint8_t *out = tls_conn_out_take(c->tls, &len);
    if (!out) {
        on_flushed(c);
        return;
    }
    struct write_batch *b = xmalloc(sizeof *b);
    b->c = c;
    b->owned = out;
    b->tls_counted = c->pend_counted;
    c->pend_counted = 0;
    b->bufs[0] = uv_buf_init((char *)out, (unsigned)len);
    start_write(c, b, 1);
}

/* Sends the ciphertext the last TLS call produced (see tls_out_begin):
 * straight to the kernel when no write is in flight, else it waits behind
 * that write. Returns true when all of it went out at once. */
static bool tls_emit(struct conn *c)
{
    size_t len;
    const uint8_t *out = tls_conn_out(c->tls, &len);
    if (!len || c->writing || c->state == CONN_CLOSED) {
        tls_conn_out_end(c->tls, 0);
        return len == 0;
    }
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r < 0 && r != UV_EAGAIN) {
        tls_conn_out_end(c->tls, 0);
        write_error(c, r);
        return false;
    }
    size_t sent = r > 0 ? (size_t)r : 0;
    tls_conn_out_end(c->tls, sent);
    if (sent == len)
        return true;
    kick_writer(c);
    return false;
}

static void kick_writer(struct conn *c)
{
    if (c->writing || c->state == CONN_CLOSED)
        return;
    if (c->tls) {
        kick_writer_tls(c);
        return;
    }
    struct write_batch *b = NULL;
    unsigned n = 0;
    struct wq *qs[2] = {&c->ctl, &c->data};
    int *counts[2] = {&c->inflight_ctl, &c->inflight_data};
    for (int q = 0; q < 2; q++) {
        for (struct wq_item *it = qs[q]->head; it && n < WRITE_BATCH; it = it->next) {
            if (!b)
                b = xmalloc(sizeof *b);
            b->bufs[n++] = uv_buf_init((char *)it->data, it->len);
            (*counts[q])++;
        }
    }
    if (!n) {
        on_flushed(c);
        return;
    }
    b->c = c;
    b->owned = NULL;
    b->tls_counted = 0;
    start_write(c, b, n);
}

/* Bytes in the control queue: a handful of frames at most (our ping, one
 * pong, a close, the rest of a frame the kernel took in part). */
static size_t ctl_bytes(const struct conn *c)
{
    size_t n = 0;
    for (const struct wq_item *it = c->ctl.head; it; it = it->next)
        n += it->len;
    return n;
}

size_t conn_queued_bytes(const struct conn *c)
{
    return c->data_bytes + ctl_bytes(c); /* control frames count against the budget too */
}

size_t conn_queued_items(const struct conn *c)
{
    return c->data_items;
}

void conn_notify_below(struct conn *c, size_t mark)
{
    c->notify_below = mark;
}

void conn_heartbeat(struct conn *c, bool on)
{
    c->heartbeat_on = on;
    c->dl_ping = on && c->state == CONN_WS_OPEN ? after(c, c->shard->heartbeat_ms) : 0;
    if (!on)
        c->dl_pong = 0;
    rearm(c);
}

static void send_frame(struct conn *c, struct wq *q, uint8_t op, const uv_buf_t *parts,
                       unsigned nparts, bool counted)
{
    uint8_t hdr[WS_MAX_HEADER];
    uv_buf_t iov[8];
    size_t total = iov_total(parts, nparts);
    size_t hl = ws_frame_header(hdr, true, op, total, NULL);
    iov[0] = uv_buf_init((char *)hdr, (unsigned)hl);
    for (unsigned i = 0; i < nparts && i < ARRAY_LEN(iov) - 1; i++)
        iov[i + 1] = parts[i];
    enqueue(c, q, iov, nparts + 1, counted);
}

/* ---- public sends ------------------------------------------------------ */

void conn_http_reply(struct conn *c, const char *resp, size_t len, bool keep_alive)
{
    uv_buf_t iov = uv_buf_init((char *)resp, (unsigned)len);
    c->reply_keep_alive =
        keep_alive && c->req && c->req->keep_alive && !c->req->upgrade && !c->shard->draining;
    enqueue(c, &c->data, &iov, 1, false);
    if (c->state != CONN_CLOSED && !c->reply_keep_alive) {
        set_state(c, CONN_HTTP_CLOSING);
        if (!c->writing)
            on_flushed(c);
    }
}

void conn_ws_accept(struct conn *c, const char *resp, size_t len)
{
    uv_buf_t iov = uv_buf_init((char *)resp, (unsigned)len);
    enqueue(c, &c->data, &iov, 1, false);
    if (c->state == CONN_CLOSED)
        return;
    ws_decoder_init(&c->ws, (uint64_t)c->shard->cfg->max_message_bytes, true);
    c->rate_tokens = (int32_t)c->shard->cfg->max_frames_per_second;
    c->rate_stamp = (uint32_t)now_ms(c);
    c->upgraded = true;
    c->heartbeat_on = true;
    set_state(c, CONN_WS_OPEN);
}

int conn_ws_send(struct conn *c, const uv_buf_t *parts, unsigned nparts, bool counted)
{
    if (c->state != CONN_WS_OPEN)
        return -1;
    send_frame(c, &c->data, WS_OP_TEXT, parts, nparts, counted);
    return c->state == CONN_CLOSED ? -1 : 0;
}

int conn_ws_ping(struct conn *c, const uint8_t *payload, size_t len)
{
    if (c->state != CONN_WS_OPEN || len > WS_MAX_CONTROL)
        return -1;
    uv_buf_t part = uv_buf_init((char *)payload, (unsigned)len);
    send_frame(c, &c->ctl, WS_OP_PING, &part, 1, false);
    return c->state == CONN_CLOSED ? -1 : 0;
}

static void queue_close(struct conn *c, uint16_t code, const char *reason, bool after_data)
{
    uint8_t payload[WS_MAX_CONTROL];
    size_t n = ws_close_payload(payload, code, reason);
    uv_buf_t part = uv_buf_init((char *)payload, (unsigned)n);
    if (!after_data)
        drop_unsent_data(c);
    send_frame(c, after_data ? &c->data : &c->ctl, WS_OP_CLOSE, &part, 1, false);
}

void conn_ws_close(struct conn *c, uint16_t code, const char *reason, bool after_data)
{
    if (c->state != CONN_WS_OPEN)
        return;
    c->close_sent = code;
    set_state(c, CONN_WS_CLOSING);
    report_ws_end(c);
    queue_close(c, code, reason, after_data);
}

void conn_pause_reading(struct conn *c, bool pause)
{
    set_paused(c, CONN_PAUSE_HOOK, pause);
}

void conn_throttle(struct conn *c, bool on)
{
    if (conn_is_ws(c))
        set_paused(c, CONN_PAUSE_THROTTLE, on);
}

/* ---- WebSocket input --------------------------------------------------- */

static void deliver(struct conn *c, uint8_t *data, size_t len)
{
    if (c->hooks->on_message)
        c->hooks->on_message(c, data, len);
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

static void on_peer_close(struct conn *c, const struct ws_event *ev)
{
    c->close_rcvd = ev->close_code;
    if (c->state == CONN_WS_OPEN) {
        /* Echo the peer's code; whatever data was not yet sent is dropped
         * because nothing may follow a close frame. */
        uint16_t code = ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code;
        set_state(c, CONN_WS_DONE);
        report_ws_end(c);
        queue_close(c, code, "", false);
        kick_writer(c); /* written already? then linger now */
        return;
    }
    if (c->state == CONN_WS_CLOSING) {
        set_state(c, CONN_WS_DONE);
        kick_writer(c); /* flushes, then lingers */
    }
}

/* The queued pong no write has taken yet, if any. */
static struct wq_item *pending_pong(struct conn *c)
{
    struct wq_item *it = c->ctl.head;
    for (int i = 0; i < c->inflight_ctl && it; i++)
        it = it->next;
    for (; it; it = it->next)
        if (it->pong)
            return it;
    return NULL;
}

/* Writes a pong frame with payload into it (room for any control payload). */
static void pong_fill(struct wq_item *it, const uint8_t *payload, size_t len)
{
    size_t hl = ws_frame_header(it->data, true, WS_OP_PONG, len, NULL);
    if (len)
        memcpy(it->data + hl, payload, len);
    it->len = it->cost = (uint32_t)(hl + len);
}

/* RFC 6455 §5.5.3 lets an endpoint answer only the most recent ping: a pong
 * still waiting for the socket takes the newer payload, so at most one
 * pong waits per connection however fast the peer pings. Queued control
 * bytes count against the connection's outbox budget (--phone-backlog-bytes);
 * a peer whose control traffic alone passes it is closed 1008. */
static void send_pong(struct conn *c, const uint8_t *payload, size_t len)
{
    struct wq_item *it = pending_pong(c);
    if (it) {
        pong_fill(it, payload, len);
    } else if (c->writing || c->ctl.head || c->data.head) {
        it = xmalloc(sizeof *it + 2 + WS_MAX_CONTROL);
        pong_fill(it, payload, len);
        it->counted = false;
        it->pong = true;
        wq_push(&c->ctl, it);
        kick_writer(c);
    } else {
        uv_buf_t part = uv_buf_init((char *)payload, (unsigned)len);
        send_frame(c, &c->ctl, WS_OP_PONG, &part, 1, false); /* straight to the kernel */
    }
    if (c->state == CONN_WS_OPEN && ctl_bytes(c) > (size_t)c->shard->cfg->phone_backlog_bytes)
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
        if (c->hooks->on_pong)
            c->hooks->on_pong(c, ev->data, ev->len);
        break;
    case WS_OP_CLOSE:
        on_peer_close(c, ev);
        break;
    }
}

/* Refills the frame budget (--max-frames-per-second, burst of one second)
 * for the time since the last refill; a remainder below one frame carries. */
static void rate_refill(struct conn *c)
{
    uint64_t rate = (uint64_t)c->shard->cfg->max_frames_per_second;
    uint32_t now = (uint32_t)now_ms(c);
    uint64_t add = (uint64_t)(uint32_t)(now - c->rate_stamp) * rate / 1000;
    if (!rate || !add)
        return;
    int64_t tokens = (int64_t)c->rate_tokens + (int64_t)add;
    if (tokens >= (int64_t)rate) {
        c->rate_tokens = (int32_t)rate;
        c->rate_stamp = now;
    } else {
        c->rate_tokens = (int32_t)tokens;
        c->rate_stamp += (uint32_t)(add * 1000 / rate);
    }
}

/* The peer sent frames past its budget in this read: it is not read again
 * until the budget has a frame again (the timer wakes it), so a flood of
 * tiny frames slows only its sender. */
static void rate_check(struct conn *c)
{
    if (c->rate_tokens < 0 && c->state == CONN_WS_OPEN)
        set_paused(c, CONN_PAUSE_RATE, true);
}

/* A decoding error. On an open connection the close frame goes out and the
 * peer gets --close-timeout to answer, as after any close of ours. Input
 * that arrives after that cannot be decoded any more (there is no close
 * frame to find in it): the peer is still talking, so flush our close,
 * half-close and drain it until its FIN. Never a reset, which could
 * destroy the close frame in flight. */
static void ws_fail(struct conn *c, uint16_t code)
{
    if (c->state == CONN_WS_OPEN) {
        conn_ws_close(c, code, "", false);
        return;
    }
    if (c->state != CONN_WS_CLOSING)
        return;
    set_state(c, CONN_WS_DONE);
    kick_writer(c);
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
            c->dl_message = after(c, ms);
        }
    }
    rearm(c);
}

static void ws_input(struct conn *c, uint8_t *buf, size_t len)
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
    rate_check(c);
    message_deadline(c, began);
}

/* ---- HTTP input -------------------------------------------------------- */

void conn_http_respond(struct conn *c, int status, const char *type, const char *extra,
                       const char *body, size_t body_len, bool keep_alive)
{
    char small[1024];
    size_t cap = body_len + 512;
    char *buf = cap <= sizeof small ? small : xmalloc(cap);
    ssize_t n = http_response(buf, cap <= sizeof small ? sizeof small : cap, status, type, extra,
                              body, body_len, keep_alive);
    if (n < 0)
        conn_abort(c);
    else
        conn_http_reply(c, buf, (size_t)n, keep_alive);
    if (buf != small)
        free(buf);
}

void conn_http_error(struct conn *c, int status, bool keep_alive)
{
    conn_http_respond(c, status, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n",
                      "\n", 1, keep_alive);
}

void conn_http_not_found(struct conn *c)
{
    static const char body[] = "404 page not found\n";
    conn_http_respond(c, 404, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n",
                      body, sizeof body - 1, true);
}

static void handoff_finish(struct conn *c, const uint8_t *buf, size_t len);

/* Spec §7.3: on a listener bound to a domain, a request for another host
 * is answered 421 before routing, rate limiting or anything else. */
static bool host_refused(const struct conn *c)
{
    size_t len;
    if (!c->opts || !c->opts->domain)
        return false;
    const char *h = http_req_header(c->req, HDR_HOST, &len);
    return !tls_host_matches(h ? h : "", len, c->opts->domain);
}

/* Over --max-header-bytes-total: the connections on this shard holding the
 * largest unfinished heads get 431 (as a single head over
 * --max-header-bytes does) and give their buffers back, until the total is
 * within the budget again. Request heads are read on the accepting shard,
 * so that is where they are. Returns true if any connection was refused. */
static bool head_budget_enforce(struct shard *s)
{
    size_t budget = (size_t)s->cfg->max_header_bytes_total;
    bool refused = false;
    while (s->head_bytes && atomic_load(s->head_bytes) > budget) {
        struct conn *victim = NULL;
        size_t most = 0;
        for (struct list *it = s->conns.next; it != &s->conns; it = it->next) {
            struct conn *x = CONTAINER_OF(it, struct conn, link);
            if (x->state == CONN_HTTP_HEAD && head_charge(x) > most) {
                most = head_charge(x);
                victim = x;
            }
        }
        if (!victim)
            break;
        conn_http_error(victim, 431, false);
        req_release(victim);
        refused = true;
    }
    return refused;
}

static void http_input(struct conn *c, uint8_t *buf, size_t len)
{
    for (;;) {
        if (c->req->head_done && !c->head_handled) {
            c->head_handled = true;
            if (host_refused(c))
                conn_http_respond(c, 421, NULL, NULL, "", 0, true);
            else
                c->hooks->on_request(c, c->req);
            if (c->handoff_to) {
                handoff_finish(c, buf, len);
                return;
            }
            if (c->state == CONN_WS_OPEN) {
                req_release(c);
                ws_input(c, buf, len);
                return;
            }
            if (c->state != CONN_HTTP_HEAD)
                return;
            set_state(c, CONN_HTTP_BODY);
        }
        if (c->req->msg_done) {
            size_t before = head_charge(c);
            http_req_reset(c->req);
            head_settle(c, before);
            c->head_handled = false;
            set_state(c, CONN_HTTP_IDLE);
        }
        if (len == 0)
            return;
        if (c->state == CONN_HTTP_IDLE)
            set_state(c, CONN_HTTP_HEAD);
        if (c->state != CONN_HTTP_HEAD && c->state != CONN_HTTP_BODY)
            return;
        size_t before = head_charge(c);
        ssize_t n = http_req_feed(c->req, (const char *)buf, len);
        head_settle(c, before);
        if (n < 0) {
            conn_http_error(c, n == HTTP_E_TOO_LARGE ? 431 : 400, false);
            req_release(c); /* the refused head is not kept while the reply drains */
            return;
        }
        if (head_charge(c) > before && head_budget_enforce(c->shard) && c->state != CONN_HTTP_HEAD)
            return; /* c held the largest head and was refused */
        buf += n;
        len -= (size_t)n;
        if (n == 0 && !(c->req->head_done && !c->head_handled) && !c->req->msg_done)
            return; /* the parser wants nothing more from this read */
    }
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = CONTAINER_OF(h, struct conn, tcp);
    (void)suggested;
    /* One buffer per shard: reads are processed before the next one starts. */
    *buf = uv_buf_init((char *)c->shard->rbuf, SHARD_READ_BUF);
}

/* Plaintext (from the socket or from TLS) for the HTTP or WebSocket layer. */
static void plain_input(struct conn *c, uint8_t *p, size_t n)
{
    switch (c->state) {
    case CONN_HTTP_HEAD:
    case CONN_HTTP_BODY:
    case CONN_HTTP_IDLE:
        http_input(c, p, n);
        break;
    case CONN_WS_OPEN:
    case CONN_WS_CLOSING:
        ws_input(c, p, n);
        break;
    default:
        break; /* closing: input is drained and dropped */
    }
}

/* The shard's decrypt and encrypt buffers, made on its first TLS connection. */
static void shard_tls_buffers(struct shard *s)
{
    if (!s->tls_plain) {
        s->tls_plain = xmalloc(SHARD_READ_BUF);
        s->tls_out = xmalloc(SHARD_TLS_OUT);
    }
}

/* After accept, or after the PROXY header: TLS handshake or plain HTTP. */
static void start_transport(struct conn *c)
{
    struct shard *s = c->shard;
    if (!c->opts || !c->opts->tls) {
        set_state(c, CONN_HTTP_HEAD);
        return;
    }
    c->tls = tls_conn_new(c->opts->tls);
    if (!c->tls) {
        conn_abort(c);
        return;
    }
    shard_tls_buffers(s);
    set_state(c, CONN_TLS_HANDSHAKE);
}

/* Spec §9.4: feeds the PROXY header reader. Returns how many bytes of buf
 * the header used (all of them while it is incomplete), or -1 when the
 * connection was dropped: nothing is ever written to such a peer. */
static ssize_t proxy_input(struct conn *c, const uint8_t *buf, size_t len)
{
    ssize_t r = proxyproto_feed(c->pp, buf, len);
    if (r == 0)
        return (ssize_t)len;
    if (r < 0) {
        conn_abort(c);
        return -1;
    }
    /* The header's source is the peer from now on (rate limit, logs). */
    memset(&c->peer, 0, sizeof c->peer);
    if (c->pp->family == AF_INET) {
        c->peer.v4.sin_family = AF_INET;
        memcpy(&c->peer.v4.sin_addr, c->pp->src, 4);
        c->peer.v4.sin_port = htons(c->pp->src_port);
    } else {
        c->peer.v6.sin6_family = AF_INET6;
        memcpy(&c->peer.v6.sin6_addr, c->pp->src, 16);
        c->peer.v6.sin6_port = htons(c->pp->src_port);
    }
    free(c->pp);
    c->pp = NULL;
    start_transport(c);
    return r;
}

/* Spec §7.4: Go's answer to plain HTTP on the TLS port, in the clear. */
static void http_on_tls_port(struct conn *c)
{
    static const char resp[] = "HTTP/1.0 400 Bad Request\r\n\r\n"
                               "Client sent an HTTP request to an HTTPS server.\n";
    tls_conn_free(c->tls);
    c->tls = NULL;
    set_state(c, CONN_HTTP_HEAD);
    conn_http_reply(c, resp, sizeof resp - 1, false);
}

static bool tls_reading(const struct conn *c)
{
    switch (c->state) {
    case CONN_TLS_HANDSHAKE:
    case CONN_HTTP_HEAD:
    case CONN_HTTP_BODY:
    case CONN_HTTP_IDLE:
    case CONN_WS_OPEN:
    case CONN_WS_CLOSING:
        return true;
    default:
        return false;
    }
}

/* Advances the handshake. Returns true once it is complete and application
 * data may follow in the same input. */
static bool tls_handshake_step(struct conn *c)
{
    tls_out_begin(c);
    int r = tls_conn_handshake(c->tls);
    tls_emit(c); /* our flight, or the alert that ends a failed handshake */
    if (c->state == CONN_CLOSED)
        return false;
    if (r == TLS_E_HTTP) {
        http_on_tls_port(c);
        return false;
    }
    if (r < 0) {
        conn_abort(c);
        return false;
    }
    if (r == TLS_AGAIN)
        return false;
    if (tls_conn_alpn_is(c->tls, "acme-tls/1")) {
        /* No TLS-ALPN-01 responder in this build: close_notify, then close. */
        set_state(c, CONN_HTTP_CLOSING);
        if (!c->writing)
            on_flushed(c);
        return false;
    }
    set_state(c, CONN_HTTP_HEAD);
    return true;
}

/* Decrypts everything the input holds, one shard buffer of plaintext at a
 * time; slices handed up live until the next buffer, as with plain reads. */
static void tls_pump(struct conn *c)
{
    uint8_t *plain = c->shard->tls_plain;
    for (;;) {
        size_t got = 0;
        ssize_t r = TLS_AGAIN;
        tls_out_begin(c);
        while (got < SHARD_READ_BUF) {
            r = tls_conn_read(c->tls, plain + got, SHARD_READ_BUF - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        tls_emit(c); /* session tickets, key updates, alerts */
        if (c->state == CONN_CLOSED)
            return;
        if (got)
            plain_input(c, plain, got);
        if (c->state == CONN_CLOSED || r == TLS_AGAIN || !tls_reading(c))
            return;
        if (r < 0) {
            conn_abort(c); /* close_notify reads like EOF; a fatal error like a reset */
            return;
        }
    }
}

static void tls_input(struct conn *c, const uint8_t *buf, size_t len)
{
    if (!tls_reading(c))
        return;
    tls_conn_input(c->tls, buf, len);
    if (c->state != CONN_TLS_HANDSHAKE || tls_handshake_step(c))
        tls_pump(c);
    if (c->tls)                          /* gone if the peer spoke plain HTTP */
        tls_conn_input(c->tls, NULL, 0); /* the read buffer is the shard's: forget it */
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = CONTAINER_OF(stream, struct conn, tcp);
    if (nread < 0) {
        conn_abort(c); /* EOF or error; an open WebSocket reports 1006 */
        return;
    }
    uint8_t *p = (uint8_t *)buf->base;
    size_t n = (size_t)nread;
    if (n == 0)
        return;
    if (c->state == CONN_PROXY_HEADER) {
        ssize_t used = proxy_input(c, p, n);
        if (used < 0 || c->state == CONN_PROXY_HEADER || c->state == CONN_CLOSED)
            return;
        p += used;
        n -= (size_t)used;
        if (!n)
            return;
    }
    if (c->upgraded)
        rate_refill(c);
    if (c->tls)
        tls_input(c, p, n);
    else
        plain_input(c, p, n);
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
    if (mark > c->write_mark) {
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
        if (c->writing || c->ctl.head || c->data.head)
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
    if (c->dl_message && now >= c->dl_message) {
        conn_ws_close(c, WS_CLOSE_POLICY, "message deadline exceeded", false);
        return;
    }
    if (c->dl_pong && now >= c->dl_pong) {
        conn_ws_close(c, WS_CLOSE_INTERNAL, "heartbeat timeout", false);
        return;
    }
    if (c->dl_ping && now >= c->dl_ping)
        heartbeat(c, now);
    if ((c->paused & CONN_PAUSE_RATE) && now >= rate_resume_at(c)) {
        rate_refill(c);
        set_paused(c, CONN_PAUSE_RATE, false);
    }
    rearm(c);
}

/* ---- accept ------------------------------------------------------------ */

static void on_reject_closed(uv_handle_t *h)
{
    free(CONTAINER_OF(h, struct conn, tcp));
}

static struct conn *accept_one(struct shard *s, uv_stream_t *server, const struct conn_hooks *hooks,
                               const struct conn_opts *opts)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->shard = s;
    c->hooks = hooks;
    c->opts = opts;
    uv_tcp_init(s->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_reject_closed);
        return NULL;
    }
    if (s->live)
        atomic_fetch_add(s->live, 1);
    uv_tcp_nodelay(&c->tcp, 1);
    int namelen = sizeof c->peer;
    if (uv_tcp_getpeername(&c->tcp, &c->peer.sa, &namelen) != 0)
        c->peer.sa.sa_family = AF_UNSPEC;
    c->req = req_get(s);
    head_settle(c, 0);
    c->notify_below = SIZE_MAX;
    list_init(&c->link);
    list_push_back(&s->conns, &c->link);
    s->nconns++;
    if (opts && opts->proxy_protocol) {
        /* read on the connection's own callbacks: a stalled sender blocks
         * nobody else (spec §9.4) */
        c->pp = xmalloc(sizeof *c->pp);
        proxyproto_init(c->pp);
        set_state(c, CONN_PROXY_HEADER);
    } else {
        start_transport(c);
    }
    if (c->state != CONN_CLOSED && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_abort(c);
    return c;
}

struct conn *conn_accept(struct shard *s, uv_stream_t *server, const struct conn_hooks *hooks)
{
    return accept_one(s, server, hooks, NULL);
}

struct conn *conn_accept_opts(struct shard *s, uv_stream_t *server, const struct conn_opts *opts)
{
    return accept_one(s, server, opts->hooks, opts);
}

/* ---- handoff between shards --------------------------------------------- */

void conn_handoff(struct conn *c, struct shard *target)
{
    c->handoff_to = target;
}

/* TLS: the rest of this read may still sit undecrypted in this shard's
 * buffer, which is about to be reused. Decrypt all of it now and append the
 * plaintext to *rest; a partial record stays inside the session, which
 * travels. Returns false if the session failed. */
static bool tls_drain_for_handoff(struct conn *c, uint8_t **rest, size_t *len, size_t *cap)
{
    for (;;) {
        if (*cap - *len < 16384) {
            *cap = *cap * 2 + 16384;
            *rest = xrealloc(*rest, *cap);
        }
        tls_out_begin(c);
        ssize_t r = tls_conn_read(c->tls, *rest + *len, *cap - *len);
        tls_emit(c); /* session tickets, key updates */
        if (c->state == CONN_CLOSED)
            return false;
        if (r == TLS_AGAIN)
            break;
        if (r <= 0)
            return false;
        *len += (size_t)r;
    }
    tls_conn_input(c->tls, NULL, 0); /* forget the shard's buffer */
    return true;
}

/* Runs after on_request asked for a handoff: the socket (duplicated, so
 * closing this handle leaves it open), the TLS session, the request and
 * the unread rest of the input travel to the target shard; this conn is
 * then closed quietly. Bytes already queued for writing cannot travel, so
 * such a connection (a pipelined upgrade behind an unflushed reply) is
 * dropped instead. */
static void handoff_finish(struct conn *c, const uint8_t *buf, size_t len)
{
    struct shard *target = c->handoff_to;
    size_t rest_cap = len + (c->tls ? 16384 : 0), rest_len = len;
    uint8_t *rest = xmalloc(rest_cap ? rest_cap : 1);
    c->handoff_to = NULL;
    if (len)
        memcpy(rest, buf, len);
    if (c->tls && !tls_drain_for_handoff(c, &rest, &rest_len, &rest_cap)) {
        free(rest);
        conn_abort(c);
        return;
    }
    uv_os_fd_t fd;
    int dup_fd = -1;
    if (!c->writing && !c->ctl.head && !c->data.head && c->state == CONN_HTTP_HEAD &&
        uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        dup_fd = dup(fd);
    if (dup_fd < 0) {
        free(rest);
        conn_abort(c);
        return;
    }
    struct handoff *h = xmalloc(sizeof *h + rest_len);
    h->fd = dup_fd;
    h->hooks = c->hooks;
    h->opts = c->opts;
    h->tls = c->tls;
    c->tls = NULL;
    h->req = c->req;
    c->req = NULL;
    memcpy(&h->peer, &c->peer, sizeof h->peer);
    h->extra_len = rest_len;
    if (rest_len)
        memcpy(h->extra, rest, rest_len);
    free(rest);
    if (c->shard->live)
        atomic_fetch_add(c->shard->live, 1); /* the handoff counts until adopted */
    conn_abort(c);
    shard_post_handoff(target, &h->node);
}

void conn_handoff_discard(struct handoff *h)
{
    close(h->fd);
    tls_conn_free(h->tls);
    http_req_free(h->req);
    free(h->req);
    free(h);
}

void conn_adopt(struct shard *s, struct handoff *h)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->shard = s;
    c->hooks = h->hooks;
    c->opts = h->opts;
    uv_tcp_init(s->loop, &c->tcp);
    if (uv_tcp_open(&c->tcp, h->fd) != 0) {
        close(h->fd);
        uv_close((uv_handle_t *)&c->tcp, on_reject_closed);
        tls_conn_free(h->tls);
        req_put(s, h->req);
        free(h);
        if (s->live)
            atomic_fetch_sub(s->live, 1);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    memcpy(&c->peer, &h->peer, sizeof c->peer);
    c->req = h->req; /* head done, not yet handled: http_input answers it */
    c->tls = h->tls;
    if (c->tls)
        shard_tls_buffers(s);
    c->notify_below = SIZE_MAX;
    list_init(&c->link);
    list_push_back(&s->conns, &c->link);
    s->nconns++;
    set_state(c, CONN_HTTP_HEAD);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_abort(c);
    if (c->state != CONN_CLOSED && c->tls)
        kick_writer(c); /* ciphertext the session still held for the peer */
    if (c->state != CONN_CLOSED)
        http_input(c, h->extra, h->extra_len);
    free(h);
}

void conn_remote(const struct conn *c, char *out, size_t cap)
{
    out[0] = '\0';
    if (c->peer.sa.sa_family == AF_INET)
        uv_ip4_name(&c->peer.v4, out, cap);
    else if (c->peer.sa.sa_family == AF_INET6)
        uv_ip6_name(&c->peer.v6, out, cap);
}

static void adopt_node(struct shard *s, struct mpsc_node *n)
{
    conn_adopt(s, CONTAINER_OF(n, struct handoff, node));
}

static void discard_node(struct mpsc_node *n)
{
    conn_handoff_discard(CONTAINER_OF(n, struct handoff, node));
}

const struct shard_ops conn_shard_ops = {
    .on_timer = conn_on_timer,
    .adopt = adopt_node,
    .discard = discard_node,
};

/* ---- accessors --------------------------------------------------------- */

void *conn_ctx(const struct conn *c)
{
    return c->opts ? c->opts->ctx : NULL;
}

const struct conn_hooks *conn_hooks_of(const struct conn *c)
{
    return c->hooks;
}

void *conn_owner(const struct conn *c)
{
    return c->owner;
}

void conn_set_owner(struct conn *c, void *owner)
{
    c->owner = owner;
}

struct shard *conn_shard(const struct conn *c)
{
    return c->shard;
}

enum conn_state conn_state(const struct conn *c)
{
    return c->state;
}

bool conn_is_open(const struct conn *c)
{
    return c->state == CONN_WS_OPEN;
}

void conn_count_frames(struct conn *c, _Atomic uint64_t *counter)
{
    c->frames_counter = counter;
}

uint16_t conn_close_sent(const struct conn *c)
{
    return c->close_sent;
}

uint16_t conn_close_rcvd(const struct conn *c)
{
    return c->close_rcvd;
}

void conn_set_close_sent(struct conn *c, uint16_t code)
{
    c->close_sent = code;
}

void conn_each(struct shard *s, void (*fn)(struct conn *c, void *arg), void *arg)
{
    for (struct list *it = s->conns.next, *next; it != &s->conns; it = next) {
        next = it->next;
        fn(CONTAINER_OF(it, struct conn, link), arg);
    }
}
