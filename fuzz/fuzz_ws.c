/* fuzz_ws.c — drives the frame decoder with arbitrary bytes. The first
 * input byte picks a chunk size and a message cap; the rest is decoded
 * whole and in chunks, and both runs must report the same messages,
 * control frames and error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

struct sink {
    uint8_t msgs[1 << 16]; /* completed messages and control frames, tagged */
    size_t len;
    uint8_t cur[1 << 16]; /* the message in progress: slices differ by split */
    size_t cur_len;
    uint16_t err;
};

static void add(struct sink *s, const void *p, size_t n)
{
    if (s->len + n > sizeof s->msgs)
        n = sizeof s->msgs - s->len;
    memcpy(s->msgs + s->len, p, n);
    s->len += n;
}

static void run(const uint8_t *data, size_t size, size_t step, uint64_t cap, struct sink *s)
{
    struct ws_decoder d;
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    ws_decoder_init(&d, cap, true);
    memset(s, 0, sizeof *s);
    for (size_t off = 0; off < size && !s->err;) {
        size_t chunk = size - off < step ? size - off : step;
        uint8_t *p = copy + off;
        size_t left = chunk;
        for (;;) {
            struct ws_event ev;
            size_t used = ws_decoder_feed(&d, p, left, &ev);
            if (used > left)
                abort();
            p += used;
            left -= used;
            if (ev.type == WS_EV_NONE) {
                if (left != 0)
                    abort(); /* NONE means everything was taken */
                break;
            }
            if (ev.type == WS_EV_ERROR) {
                s->err = ev.close_code;
                break;
            }
            if (ev.type == WS_EV_CONTROL) {
                uint8_t tag[2] = {0xC0, ev.opcode};
                add(s, tag, 2);
                add(s, ev.data, ev.len);
                continue;
            }
            if (ev.data < copy || ev.data + ev.len > copy + size)
                abort(); /* slices must lie inside the fed buffer */
            if (ev.first)
                s->cur_len = 0;
            size_t n = ev.len < sizeof s->cur - s->cur_len ? ev.len : sizeof s->cur - s->cur_len;
            memcpy(s->cur + s->cur_len, ev.data, n);
            s->cur_len += n;
            if (ev.last) {
                uint8_t tag[2] = {0xD0, ev.opcode};
                add(s, s->cur, s->cur_len);
                add(s, tag, 2);
            }
        }
        off += chunk;
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sink whole, split;
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 0x1F) + 1;
    uint64_t cap = (data[0] & 0x20) ? 300 : 0;
    run(data + 1, size - 1, size, cap, &whole);
    run(data + 1, size - 1, step, cap, &split);
    if (whole.err != split.err || whole.len != split.len ||
        memcmp(whole.msgs, split.msgs, whole.len) != 0)
        abort();
    return 0;
}
