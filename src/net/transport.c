/* transport.c — plaintext TCP behind the transport table, and the write
 * request both transports share. Plaintext reading is the identity: the
 * socket's bytes are handed back once. Writing tries the kernel first and
 * leaves the rest to libuv's queue; nothing is copied here. */
#include "net/transport.h"

#include <stdlib.h>

#include "base/util.h"
#include "net/transport_internal.h"

static void on_write(uv_write_t *req, int status)
{
    struct transport_write *w = CONTAINER_OF(req, struct transport_write, req);
    struct transport *t = w->t;
    transport_write_cb cb = w->cb;
    size_t plain = w->plain;
    free(w->owned);
    free(w);
    t->writing = false;
    cb(t, status, status == 0 ? plain : 0);
}

int transport_write_start(struct transport *t, const uv_buf_t *bufs, unsigned n, size_t plain,
                          uint8_t *owned, transport_write_cb cb)
{
    struct transport_write *w = xmalloc(sizeof *w);
    w->t = t;
    w->cb = cb;
    w->plain = plain;
    w->owned = owned;
    int r = uv_write(&w->req, (uv_stream_t *)&t->tcp, bufs, n, on_write);
    if (r != 0) {
        free(owned);
        free(w);
        return r;
    }
    t->writing = true;
    return 0;
}

size_t transport_iov_total(const uv_buf_t *iov, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    return total;
}

static ssize_t tcp_read(struct transport *t, const uint8_t *in, size_t len, uint8_t **out)
{
    (void)t;
    if (!in)
        return 0; /* everything was handed back with the input */
    *out = (uint8_t *)in;
    return (ssize_t)len;
}

static bool tcp_ready(const struct transport *t)
{
    (void)t;
    return true;
}

static ssize_t tcp_try_writev(struct transport *t, const uv_buf_t *iov, unsigned n)
{
    int r = uv_try_write((uv_stream_t *)&t->tcp, iov, n);
    return r == UV_EAGAIN ? 0 : r;
}

static int tcp_writev(struct transport *t, const uv_buf_t *iov, unsigned n, transport_write_cb cb)
{
    if (n == 0)
        return UV_EINVAL; /* nothing to write: the caller asked for nothing */
    return transport_write_start(t, iov, n, transport_iov_total(iov, n), NULL, cb);
}

static void tcp_shutdown(struct transport *t)
{
    (void)t; /* the FIN is the caller's uv_shutdown */
}

static bool tcp_want_write(const struct transport *t)
{
    (void)t;
    return false;
}

static void tcp_release(struct transport *t)
{
    (void)t;
}

const struct transport_ops transport_tcp = {
    .name = "tcp",
    .read = tcp_read,
    .ready = tcp_ready,
    .try_writev = tcp_try_writev,
    .writev = tcp_writev,
    .shutdown = tcp_shutdown,
    .want_write = tcp_want_write,
    .release = tcp_release,
};

void transport_use_tcp(struct transport *t)
{
    t->ops = &transport_tcp;
    t->tls = NULL;
}
