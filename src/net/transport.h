/* transport.h — the byte stream under a connection: plaintext TCP or TLS
 * over TCP behind one table of operations, so the connection above never
 * asks which one it has. A transport owns the TCP handle and, for TLS, the
 * session and the ciphertext the session produced but the kernel did not
 * take yet (OpenSSL's output is bracketed inside transport_tls.c only).
 * Reading sockets is the caller's: it hands the bytes it read to
 * ops->read and gets plaintext back. A transport is used only on the
 * thread of the shard that owns its connection; its state (not its
 * handle) may travel to another shard between two calls (conn handoff). */
#ifndef RELAY_TRANSPORT_H
#define RELAY_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct tls_conn;
struct tls_server;
struct transport;
struct transport_tls;
struct transport_tls;

/* Negative results of ops->read besides libuv errors. */
#define TRANSPORT_EOF   (-4001) /* the peer ended the session (TLS close_notify) */
#define TRANSPORT_ERROR (-4002) /* fatal protocol error (an alert may be waiting) */
#define TRANSPORT_HTTP  (-4003) /* TLS expected, the peer sent a plain HTTP request */
#define TRANSPORT_ALPN  (-4004) /* TLS: a protocol this build does not serve (acme-tls/1) */

/* An asynchronous write ended: status 0 or a libuv error; plain is how
 * many bytes of the caller's buffers it carried (all of them on success). */
typedef void (*transport_write_cb)(struct transport *t, int status, size_t plain);

struct transport_ops {
    const char *name; /* "tcp", "tls" */
    /* Hands in bytes read from the socket (in, len), or continues with
     * what the transport still holds (NULL, 0). Returns > 0 plaintext
     * bytes at *out (valid until the next call), 0 when more input is
     * needed, or TRANSPORT_EOF / TRANSPORT_ERROR / TRANSPORT_HTTP /
     * TRANSPORT_ALPN. Call until it returns <= 0; output it produced
     * (handshake, alerts) is written or held (want_write). */
    ssize_t (*read)(struct transport *t, const uint8_t *in, size_t len, uint8_t **out);
    /* True once application data can flow (TLS: handshake complete). */
    bool (*ready)(const struct transport *t);
    /* Writes what the kernel takes now, without blocking. Returns the
     * plaintext bytes taken: for TCP what the kernel took (no copy); for
     * TLS all of them, encrypted, with the ciphertext the kernel did not
     * take held (want_write), or 0 while it already holds some. Or a
     * negative libuv error. Not while a write is in flight. */
    ssize_t (*try_writev)(struct transport *t, const uv_buf_t *iov, unsigned n);
    /* Starts one asynchronous write of what the transport holds followed
     * by iov[0..n) (n may be 0); the buffers must stay valid until cb.
     * Returns 0 (cb will be called) or a negative libuv error (not):
     * UV_EINVAL when there is nothing at all to write. */
    int (*writev)(struct transport *t, const uv_buf_t *iov, unsigned n, transport_write_cb cb);
    /* Queues the end of the session (TLS close_notify) ahead of nothing
     * else; the bytes go out with the next write. */
    void (*shutdown)(struct transport *t);
    /* True when the transport holds bytes of its own to write. */
    bool (*want_write)(const struct transport *t);
    /* Frees the per-connection state (not the handle). */
    void (*release)(struct transport *t);
};

/* Kept small: every idle connection embeds one. */
struct transport {
    uv_tcp_t tcp; /* first: a handle pointer is a transport pointer */
    const struct transport_ops *ops;
    struct transport_tls *tls; /* TLS state (transport_tls.c); NULL for plaintext */
    bool writing;              /* an asynchronous write is in flight */
};

extern const struct transport_ops transport_tcp;
extern const struct transport_ops transport_tls;

/* Makes t plaintext over its (already initialised) TCP handle. */
void transport_use_tcp(struct transport *t);

/* Makes t TLS with a new server session on ts, using the shard's scratch
 * buffers (TRANSPORT_SCRATCH bytes each, owned by the shard). Returns 0,
 * or -1 if OpenSSL could not allocate (t is then plaintext). */
int transport_use_tls(struct transport *t, struct tls_server *ts, uint8_t *scratch_in,
                      uint8_t *scratch_out);

/* Makes t TLS with an existing session (a connection handed over from
 * another shard), on this shard's scratch buffers. */
void transport_adopt_tls(struct transport *t, struct tls_conn *tls, uint8_t *scratch_in,
                         uint8_t *scratch_out);

/* Takes the TLS session out of t (for a handoff; NULL for plaintext);
 * t is plaintext afterwards. */
struct tls_conn *transport_take_tls(struct transport *t);

/* Size of each shard scratch buffer a TLS transport uses. */
#define TRANSPORT_SCRATCH (64 * 1024)

#endif
