/* transport_internal.h — what the two transports share: one asynchronous
 * write request. Private to src/net/transport*.c; the owning shard's
 * thread only, as transport.h. */
#ifndef RELAY_TRANSPORT_INTERNAL_H
#define RELAY_TRANSPORT_INTERNAL_H

#include "net/transport.h"

struct transport_write {
    uv_write_t req;
    struct transport *t;
    transport_write_cb cb;
    size_t plain;   /* caller's bytes this write carries */
    uint8_t *owned; /* freed when the write ends (TLS ciphertext) */
};

/* Starts uv_write of bufs; owned (may be NULL) is freed when it ends, or
 * at once if it cannot start. Returns 0 or a libuv error. */
int transport_write_start(struct transport *t, const uv_buf_t *bufs, unsigned n, size_t plain,
                          uint8_t *owned, transport_write_cb cb);

/* Sum of the buffers' lengths. */
size_t transport_iov_total(const uv_buf_t *iov, unsigned n);

#endif
