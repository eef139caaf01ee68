/* transport_tls.c — TLS behind the transport table. Every call into the
 * session is bracketed the same way: ciphertext is produced into the
 * shard's scratch buffer, offered to the kernel at once, and only what the
 * kernel refuses is kept by the session (copied once) until the next
 * asynchronous write takes it. Nothing is written while a write is in
 * flight, so bytes never overtake each other. The handshake runs inside
 * read; the connection only asks ready(). */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "net/transport_internal.h"
#include "tls/tls.h"

/* Offers the ciphertext the last call produced to the kernel; the session
 * keeps the rest. Returns 0 or a libuv error (kept in err as well). */
static int emit(struct transport *t)
{
    size_t len;
    const uint8_t *out = tls_conn_out(t->tls, &len);
    if (!len || t->writing || t->err) {
        tls_conn_out_end(t->tls, 0);
        return t->err;
    }
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&t->tcp, &b, 1);
    if (r < 0 && r != UV_EAGAIN) {
        tls_conn_out_end(t->tls, 0);
        t->err = r;
        return r;
    }
    tls_conn_out_end(t->tls, r > 0 ? (size_t)r : 0);
    return 0;
}

static void begin(struct transport *t)
{
    tls_conn_out_begin(t->tls, t->scratch_out, TRANSPORT_SCRATCH);
}

/* The handshake step: TRANSPORT_* on failure, 0 for "more input", 1 done. */
static int handshake(struct transport *t)
{
    begin(t);
    int r = tls_conn_handshake(t->tls);
    emit(t); /* our flight, or the alert that ends a failed handshake */
    if (r == TLS_E_HTTP)
        return TRANSPORT_HTTP;
    if (r < 0)
        return TRANSPORT_ERROR;
    if (r == TLS_AGAIN)
        return 0;
    t->established = true;
    return tls_conn_alpn_is(t->tls, "acme-tls/1") ? TRANSPORT_ALPN : 1;
}

static ssize_t tls_read(struct transport *t, const uint8_t *in, size_t len, uint8_t **out)
{
    if (in)
        tls_conn_input(t->tls, in, len);
    ssize_t r = 1;
    if (!t->established)
        r = handshake(t);
    if (r <= 0) {
        tls_conn_input(t->tls, NULL, 0); /* the input buffer is the caller's */
        return r;
    }
    size_t got = 0;
    begin(t);
    while (got < TRANSPORT_SCRATCH) {
        r = tls_conn_read(t->tls, t->scratch_in + got, TRANSPORT_SCRATCH - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    emit(t); /* session tickets, key updates, alerts */
    if (got) {
        *out = t->scratch_in;
        return (ssize_t)got;
    }
    tls_conn_input(t->tls, NULL, 0);
    if (r == TLS_AGAIN)
        return 0;
    return r == TLS_E_CLOSED ? TRANSPORT_EOF : TRANSPORT_ERROR;
}

static bool tls_ready(const struct transport *t)
{
    return t->established;
}

/* Encrypts iov into the session's output, gathered into records of up to
 * 16 KiB so a frame header and its payload share a record. */
static int encrypt(struct transport *t, const uv_buf_t *iov, unsigned n)
{
    uint8_t chunk[16384];
    size_t fill = 0;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)iov[i].base;
        size_t left = iov[i].len;
        while (left > 0) {
            size_t k = sizeof chunk - fill < left ? sizeof chunk - fill : left;
            memcpy(chunk + fill, p, k);
            fill += k;
            p += k;
            left -= k;
            if (fill == sizeof chunk) {
                if (tls_conn_write(t->tls, chunk, fill) != 0)
                    return UV_EPROTO;
                fill = 0;
            }
        }
    }
    if (fill && tls_conn_write(t->tls, chunk, fill) != 0)
        return UV_EPROTO;
    return 0;
}

static bool tls_want_write(const struct transport *t)
{
    size_t len;
    tls_conn_out(t->tls, &len);
    return len > 0 || t->err;
}

static ssize_t tls_try_writev(struct transport *t, const uv_buf_t *iov, unsigned n)
{
    if (t->err)
        return t->err;
    if (tls_want_write(t))
        return 0;
    begin(t);
    int r = encrypt(t, iov, n);
    if (r != 0) {
        tls_conn_out_end(t->tls, 0);
        return r;
    }
    r = emit(t);
    return r < 0 ? r : (ssize_t)transport_iov_total(iov, n);
}

static int tls_writev(struct transport *t, const uv_buf_t *iov, unsigned n, transport_write_cb cb)
{
    if (t->err)
        return t->err;
    if (encrypt(t, iov, n) != 0) /* outside a bracket: behind what the session holds */
        return UV_EPROTO;
    size_t len;
    uint8_t *out = tls_conn_out_take(t->tls, &len);
    if (!out)
        return UV_EINVAL; /* nothing to write: the caller asked for nothing */
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    return transport_write_start(t, &b, 1, transport_iov_total(iov, n), out, cb);
}

static void tls_shutdown(struct transport *t)
{
    begin(t);
    tls_conn_shutdown(t->tls);
    emit(t);
}

static void tls_release(struct transport *t)
{
    tls_conn_free(t->tls);
    t->tls = NULL;
}

const struct transport_ops transport_tls = {
    .name = "tls",
    .read = tls_read,
    .ready = tls_ready,
    .try_writev = tls_try_writev,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .want_write = tls_want_write,
    .release = tls_release,
};

void transport_adopt_tls(struct transport *t, struct tls_conn *tls, uint8_t *scratch_in,
                         uint8_t *scratch_out)
{
    t->ops = &transport_tls;
    t->tls = tls;
    t->scratch_in = scratch_in;
    t->scratch_out = scratch_out;
    t->established = true; /* sessions travel only after their handshake */
}

int transport_use_tls(struct transport *t, struct tls_server *ts, uint8_t *scratch_in,
                      uint8_t *scratch_out)
{
    struct tls_conn *tls = tls_conn_new(ts);
    if (!tls) {
        transport_use_tcp(t);
        return -1;
    }
    transport_adopt_tls(t, tls, scratch_in, scratch_out);
    t->established = false;
    return 0;
}

struct tls_conn *transport_take_tls(struct transport *t)
{
    struct tls_conn *tls = t->tls;
    transport_use_tcp(t);
    return tls;
}
