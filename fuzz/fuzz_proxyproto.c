/* fuzz_proxyproto.c — drives the PROXY v2 reader with arbitrary bytes. The
 * first input byte picks a chunk size; the rest is read whole, in those
 * chunks and one byte at a time, and every run must agree on the outcome,
 * the header length and the source address. A completed header is also
 * checked against the length field it carries. It does not test sockets or
 * timeouts (conn.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/proxyproto.h"

struct outcome {
    ssize_t result; /* < 0 error, 0 incomplete, 1 done */
    size_t used;
    int family;
    uint8_t src[16];
    uint16_t port;
};

static void check(int ok)
{
    if (!ok)
        abort();
}

static void run(const uint8_t *data, size_t len, size_t step, struct outcome *o)
{
    struct proxyproto p;
    size_t off = 0;
    proxyproto_init(&p);
    memset(o, 0, sizeof *o);
    while (off < len) {
        size_t n = step && step < len - off ? step : len - off;
        ssize_t r = proxyproto_feed(&p, data + off, n);
        check(r <= (ssize_t)n);
        if (r < 0) {
            o->result = r;
            return;
        }
        if (r > 0) {
            o->result = 1;
            o->used = off + (size_t)r;
            o->family = p.family;
            memcpy(o->src, p.src, sizeof o->src);
            o->port = p.src_port;
            return;
        }
        off += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = data[0] % 64 + 1;
    data++;
    size--;
    struct outcome whole, chunked, bytes;
    run(data, size, 0, &whole);
    run(data, size, step, &chunked);
    run(data, size, 1, &bytes);
    check(memcmp(&whole, &chunked, sizeof whole) == 0);
    check(memcmp(&whole, &bytes, sizeof whole) == 0);
    if (whole.result == 1) {
        size_t declared = (size_t)data[14] << 8 | data[15];
        check(whole.used == 16 + declared);
        check(data[12] == 0x21 && (data[13] == 0x11 || data[13] == 0x21));
    }
    return 0;
}
