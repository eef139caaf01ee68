/* fuzz_ws.c — drives the frame decoder with arbitrary bytes. The first
 * input byte picks a chunk size and a message cap; the rest is decoded
 * whole, in fixed chunks, one byte at a time and in pseudo-random chunks,
 * and every run must report the same messages, control frames and error.
 * Each event is also checked against the header's contract, and completed
 * messages are re-encoded and decoded again. It does not test the handshake
 * helpers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/utf8.h"
#include "codec/ws.h"

#define BIG (1 << 17)

struct sink {
    uint8_t log[BIG]; /* completed messages and control frames, tagged */
    size_t len;
    uint8_t cur[BIG]; /* the message in progress: slices differ by split */
    size_t cur_len;
    bool cur_truncated;
    bool in_msg;
    uint8_t msg_op;
    uint16_t err;
};

static const uint64_t caps[8] = {0, 300, 1, 2, 125, 126, 4096, 65536};

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void add(struct sink *s, const void *p, size_t n)
{
    if (n > sizeof s->log - s->len)
        n = sizeof s->log - s->len;
    if (n)
        memcpy(s->log + s->len, p, n);
    s->len += n;
}

/* Encodes one masked frame carrying p[0..n) and decodes it again whole. */
static void round_trip(uint8_t op, const uint8_t *p, size_t n)
{
    static uint8_t frame[WS_MAX_HEADER + BIG];
    const uint8_t mask[4] = {(uint8_t)n, 0xA5, (uint8_t)(n >> 8), 0x3C};
    size_t h = ws_frame_header(frame, true, op, n, mask);
    memcpy(frame + h, p, n);
    ws_mask(frame + h, n, mask, 0);
    struct ws_decoder d = {0};
    struct ws_event ev;
    ws_decoder_init(&d, n, true);
    size_t used = 0, got = 0;
    do {
        used += ws_decoder_feed(&d, frame + used, h + n - used, &ev);
        check(ev.type == WS_EV_DATA && ev.opcode == op);
        check(got + ev.len <= n && memcmp(ev.data, p + got, ev.len) == 0);
        got += ev.len;
    } while (!ev.last);
    check(used == h + n && got == n);
    ws_decoder_free(&d);
}

static void on_control(struct sink *s, const struct ws_event *ev)
{
    check(ev->opcode == WS_OP_CLOSE || ev->opcode == WS_OP_PING || ev->opcode == WS_OP_PONG);
    check(ev->len <= WS_MAX_CONTROL);
    if (ev->opcode == WS_OP_CLOSE && ev->len == 0)
        check(ev->close_code == WS_CLOSE_NO_STATUS && ev->reason_len == 0);
    if (ev->opcode == WS_OP_CLOSE && ev->len > 0) {
        check(ws_close_code_valid(ev->close_code));
        check(ev->reason == ev->data + 2 && ev->reason_len == ev->len - 2);
        check(utf8_valid(ev->reason, ev->reason_len));
    }
    uint8_t tag[2] = {0xC0, ev->opcode};
    add(s, tag, 2);
    add(s, ev->data, ev->len);
}

static void on_data(struct sink *s, const struct ws_event *ev, uint64_t cap, bool verify)
{
    check(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
    check(ev->first == !s->in_msg);
    if (ev->first) {
        s->cur_len = 0;
        s->cur_truncated = false;
        s->msg_op = ev->opcode;
    }
    check(ev->opcode == s->msg_op);
    size_t n = ev->len;
    if (n > sizeof s->cur - s->cur_len) {
        n = sizeof s->cur - s->cur_len;
        s->cur_truncated = true;
    }
    if (n)
        memcpy(s->cur + s->cur_len, ev->data, n);
    s->cur_len += n;
    s->in_msg = !ev->last;
    if (!ev->last)
        return;
    check(cap == 0 || s->cur_len <= cap);
    if (!s->cur_truncated && ev->opcode == WS_OP_TEXT)
        check(utf8_valid(s->cur, s->cur_len));
    if (verify && !s->cur_truncated)
        round_trip(s->msg_op, s->cur, s->cur_len);
    uint8_t tag[2] = {0xD0, ev->opcode};
    add(s, s->cur, s->cur_len);
    add(s, tag, 2);
}

/* Feeds one chunk until the decoder wants more. Returns false after an error. */
static bool feed_chunk(struct ws_decoder *d, uint8_t *p, size_t left, uint64_t cap, bool verify,
                       struct sink *s)
{
    for (;;) {
        struct ws_event ev;
        size_t used = ws_decoder_feed(d, p, left, &ev);
        check(used <= left);
        p += used;
        left -= used;
        switch (ev.type) {
        case WS_EV_NONE:
            check(left == 0); /* NONE means everything was taken */
            return true;
        case WS_EV_ERROR:
            check(ev.close_code == WS_CLOSE_PROTOCOL || ev.close_code == WS_CLOSE_INVALID_DATA ||
                  ev.close_code == WS_CLOSE_TOO_BIG);
            s->err = ev.close_code;
            check(ws_decoder_feed(d, p, left, &ev) == 0); /* sticky */
            check(ev.type == WS_EV_ERROR && ev.close_code == s->err);
            return false;
        case WS_EV_CONTROL:
            check(used > 0); /* an event always completes something fed now */
            on_control(s, &ev);
            break;
        case WS_EV_DATA:
            /* The slice is exactly the payload bytes this call took last. */
            check(used > 0 && ev.data + ev.len == p && ev.len <= used);
            on_data(s, &ev, cap, verify);
            check(ws_decoder_in_message(d) == s->in_msg);
            break;
        }
        check(!ws_decoder_in_message(d) || ws_decoder_busy(d));
        check(!s->in_msg || ws_decoder_in_message(d));
    }
}

/* Next chunk length: fixed `step`, or pseudo-random when step is 0. */
static size_t chunk_len(size_t step, uint32_t *rng)
{
    if (step)
        return step;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 17;
    *rng ^= *rng << 5;
    return (*rng % 4 == 0) ? 0 : 1 + *rng % 23; /* empty feeds too */
}

static void run(const uint8_t *data, size_t size, size_t step, uint64_t cap, struct sink *s)
{
    struct ws_decoder d = {0};
    uint8_t *copy = malloc(size ? size : 1);
    uint32_t rng = 0x9E3779B9u ^ (uint32_t)size;
    if (size)
        memcpy(copy, data, size);
    ws_decoder_init(&d, cap, true);
    s->len = s->cur_len = 0; /* the buffers are large: reset only the counts */
    s->cur_truncated = s->in_msg = false;
    s->err = 0;
    for (size_t off = 0; off < size;) {
        size_t chunk = chunk_len(step, &rng);
        if (chunk > size - off)
            chunk = size - off;
        if (!feed_chunk(&d, copy + off, chunk, cap, step == size, s))
            break;
        off += chunk;
    }
    free(copy);
    ws_decoder_free(&d);
}

static void same(const struct sink *a, const struct sink *b)
{
    check(a->err == b->err && a->len == b->len && memcmp(a->log, b->log, a->len) == 0);
    /* Without an error every payload byte was delivered, however it was cut. */
    if (!a->err)
        check(a->in_msg == b->in_msg && a->cur_len == b->cur_len &&
              (!a->in_msg || memcmp(a->cur, b->cur, a->cur_len) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sink whole, split;
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 0x1F) + 1;
    uint64_t cap = caps[data[0] >> 5];
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    run(in, n, n, cap, &whole);
    run(in, n, step, cap, &split);
    same(&whole, &split);
    run(in, n, 1, cap, &split);
    same(&whole, &split);
    run(in, n, 0, cap, &split);
    same(&whole, &split);
    return 0;
}
