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

/* What only a TLS connection pays for. */
struct transport_tls {
    struct tls_conn *session;
    uint8_t *in;      /* shard buffer decrypted input lands in */
    uint8_t *out;     /* shard buffer ciphertext is produced into */
    int err;          /* a write error met while emitting (reported by the next write) */
    bool established; /* handshake complete */
};

/* Offers the ciphertext the last call produced to the kernel; the session
 * keeps the rest. Returns 0 or a libuv error (kept in err as well). */
static int emit(struct transport *t)
{
    size_t len;
    const uint8_t *out = tls_conn_out(t->tls->session, &len);
    if (!len || t->writing || t->tls->err) {
        tls_conn_out_end(t->tls->session, 0);
        return t->tls->err;
    }
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&t->tcp, &b, 1);
    if (r < 0 && r != UV_EAGAIN) {
        tls_conn_out_end(t->tls->session, 0);
        t->tls->err = r;
        return r;
    }
    tls_conn_out_end(t->tls->session, r > 0 ? (size_t)r : 0);
    return 0;
}

static void begin(struct transport *t)
{
    tls_conn_out_begin(t->tls->session, t->tls->out, TRANSPORT_SCRATCH);
}

/* The handshake step: TRANSPORT_* on failure, 0 for "more input", 1 done. */
static int handshake(struct transport *t)
{
    begin(t);
    int r = tls_conn_handshake(t->tls->session);
    emit(t); /* our flight, or the alert that ends a failed handshake */
    if (r == TLS_E_HTTP)
        return TRANSPORT_HTTP;
    if (r < 0)
        return TRANSPORT_ERROR;
    if (r == TLS_AGAIN)
        return 0;
    t->tls->established = true;
    return tls_conn_alpn_is(t->tls->session, "acme-tls/1") ? TRANSPORT_ALPN : 1;
}

static ssize_t tls_read(struct transport *t, const uint8_t *in, size_t len, uint8_t **out)
{
    if (in)
        tls_conn_input(t->tls->session, in, len);
    ssize_t r = 1;
    if (!t->tls->established)
        r = handshake(t);
    if (r <= 0) {
        tls_conn_input(t->tls->session, NULL, 0); /* the input buffer is the caller's */
        return r;
    }
    size_t got = 0;
    begin(t);
    while (got < TRANSPORT_SCRATCH) {
        r = tls_conn_read(t->tls->session, t->tls->in + got, TRANSPORT_SCRATCH - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    emit(t); /* session tickets, key updates, alerts */
    if (got) {
        *out = t->tls->in;
        return (ssize_t)got;
    }
    tls_conn_input(t->tls->session, NULL, 0);
    if (r == TLS_AGAIN)
        return 0;
    return r == TLS_E_CLOSED ? TRANSPORT_EOF : TRANSPORT_ERROR;
}

static bool tls_ready(const struct transport *t)
{
    return t->tls->established;
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
                if (tls_conn_write(t->tls->session, chunk, fill) != 0)
                    return UV_EPROTO;
                fill = 0;
            }
        }
    }
    if (fill && tls_conn_write(t->tls->session, chunk, fill) != 0)
        return UV_EPROTO;
    return 0;
}

static bool tls_want_write(const struct transport *t)
{
    size_t len;
    tls_conn_out(t->tls->session, &len);
    return len > 0 || t->tls->err;
}

static ssize_t tls_try_writev(struct transport *t, const uv_buf_t *iov, unsigned n)
{
    if (t->tls->err)
        return t->tls->err;
    if (tls_want_write(t))
        return 0;
    begin(t);
    int r = encrypt(t, iov, n);
    if (r != 0) {
        tls_conn_out_end(t->tls->session, 0);
        return r;
    }
    r = emit(t);
    return r < 0 ? r : (ssize_t)transport_iov_total(iov, n);
}

static int tls_writev(struct transport *t, const uv_buf_t *iov, unsigned n, transport_write_cb cb)
{
    if (t->tls->err)
        return t->tls->err;
    if (encrypt(t, iov, n) != 0) /* outside a bracket: behind what the session holds */
        return UV_EPROTO;
    size_t len;
    uint8_t *out = tls_conn_out_take(t->tls->session, &len);
    if (!out)
        return UV_EINVAL; /* nothing to write: the caller asked for nothing */
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    return transport_write_start(t, &b, 1, transport_iov_total(iov, n), out, cb);
}

static void tls_shutdown(struct transport *t)
{
    begin(t);
    tls_conn_shutdown(t->tls->session);
    emit(t);
}

static void tls_release(struct transport *t)
{
    tls_conn_free(t->tls->session);
    free(t->tls);
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
    struct transport_tls *x = xmalloc(sizeof *x);
    x->session = tls;
    x->in = scratch_in;
    x->out = scratch_out;
    x->err = 0;
    x->established = true; /* sessions travel only after their handshake */
    t->ops = &transport_tls;
    t->tls = x;
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
    t->tls->established = false;
    return 0;
}

struct tls_conn *transport_take_tls(struct transport *t)
{
    struct tls_conn *tls = t->tls ? t->tls->session : NULL;
    free(t->tls);
    transport_use_tcp(t);
    return tls;
}
