/* fuzz_http.c — feeds arbitrary bytes to the request reader whole and in
 * chunks (size from the first byte): both must agree on the result, the
 * spans must lie inside the stored head, and the handshake must run on any
 * complete head without crashing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static ssize_t feed(struct http_req *r, const uint8_t *data, size_t n, size_t step)
{
    size_t off = 0;
    while (off < n) {
        size_t chunk = n - off < step ? n - off : step;
        ssize_t used = http_req_feed(r, (const char *)data + off, chunk);
        if (used < 0)
            return used;
        if ((size_t)used > chunk)
            abort();
        off += (size_t)used;
        if ((size_t)used < chunk)
            break;
    }
    return (ssize_t)off;
}

static void check(const struct http_req *r)
{
    if (!r->head_done)
        return;
    for (int h = 0; h < HDR__COUNT; h++)
        if (r->hdr[h].off + r->hdr[h].len > r->buf_len)
            abort();
    if (r->path.off + r->path.len > r->buf_len)
        abort();
    char out[1024];
    size_t len;
    int status = http_ws_handshake(r, out, sizeof out, &len);
    if (status != 101 && status != 400 && status != 405 && status != 426)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    struct http_req a, b;
    http_req_init(&a, 4096);
    http_req_init(&b, 4096);
    ssize_t ra = feed(&a, data + 1, size - 1, size);
    ssize_t rb = feed(&b, data + 1, size - 1, step);
    if (ra != rb || a.head_done != b.head_done || a.msg_done != b.msg_done)
        abort();
    check(&a);
    check(&b);
    http_req_free(&a);
    http_req_free(&b);
    return 0;
}
