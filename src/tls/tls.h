/* tls.h — TLS for the HTTPS listener on OpenSSL 3 (docs/features/tls.md): the server
 * context that holds the certificate (swappable at run time for new
 * handshakes), one TLS session per connection driven entirely from memory
 * (the caller owns the socket), and the small pure helpers the HTTPS
 * listener needs: the Host check and the plain-HTTP sniff.
 * Nothing here touches a socket, a loop or a timer, so a connection's TLS
 * state can move between event loops with it.
 * Threads: a tls_server (and its certificate swap) on shard 0's loop, where
 * every connection is accepted and handshakes; a tls_conn on its connection's
 * shard thread, moving with it; the pure helpers on any thread. */
#ifndef RELAY_TLS_H
#define RELAY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct tls_server;
struct tls_conn;

/* Results of the per-connection calls below. */
#define TLS_DONE     1    /* tls_conn_handshake: the handshake is complete */
#define TLS_AGAIN    0    /* more input needed */
#define TLS_E_FAILED (-1) /* fatal protocol error (an alert may be waiting in the output) */
#define TLS_E_CLOSED (-2) /* the peer sent close_notify */
#define TLS_E_HTTP   (-3) /* the first bytes are a plain HTTP request, not TLS */

/* ---- server context ---------------------------------------------------- */

/* Creates a context: TLS 1.2 minimum, ECDHE with AEAD ciphers for TLS 1.2
 * and OpenSSL's defaults for 1.3, ALPN http/1.1 (acme-tls/1 also accepted),
 * stateless session tickets, no renegotiation, SSL_MODE_RELEASE_BUFFERS.
 * It starts without a certificate: handshakes fail with an alert until one
 * is set. Returns NULL with a reason in err on failure. */
struct tls_server *tls_server_new(char *err, size_t err_cap);

/* Frees ts. Connections still holding sessions keep their own reference to
 * the underlying OpenSSL context and stay valid. */
void tls_server_free(struct tls_server *ts);

/* Installs a certificate chain (PEM: leaf first, then intermediates) and
 * its private key (PEM) for every handshake that starts after the call;
 * established connections keep the certificate they were made with. All
 * or nothing: on any error (unparsable PEM, no certificate, key not
 * matching the leaf) the previous certificate stays in use. The buffers
 * are only read; the caller still owns them (and should wipe the key).
 * Returns 0, or -1 with a sentence in err that never contains key bytes. */
int tls_server_set_cert_pem(struct tls_server *ts, const char *chain_pem, size_t chain_len,
                            const char *key_pem, size_t key_len, char *err, size_t err_cap);

/* Reads cert_path and key_path and installs them as tls_server_set_cert_pem
 * does. Returns 0, or -1 with err naming the file at fault (e.g.
 * "--tls-key /etc/k.pem: no such file or directory"; the flag names are
 * the only ones that ever set these paths). */
int tls_server_load_files(struct tls_server *ts, const char *cert_path, const char *key_path,
                          char *err, size_t err_cap);

/* What an operator wants to know about the certificate in use. */
struct tls_cert_info {
    char subject[256];  /* RFC 2253, e.g. "CN=relay.example.com" */
    char not_after[32]; /* "2026-03-01T12:00:00Z" */
    uint8_t sha256[32]; /* leaf fingerprint: tells a changed file from a re-read one */
};

/* Describes the leaf certificate new handshakes get. Returns 0, or -1 when
 * there is none yet. */
int tls_server_cert_info(const struct tls_server *ts, struct tls_cert_info *info);

/* True once a certificate has been installed. */
bool tls_server_has_cert(const struct tls_server *ts);

/* The minimum protocol version the context accepts (TLS1_2_VERSION). */
int tls_server_min_version(const struct tls_server *ts);

/* ---- one connection ---------------------------------------------------- */

/* Starts a server-side session on ts's current certificate. Idle, it holds
 * only the OpenSSL session (record buffers are released between records).
 * Returns NULL only if OpenSSL fails to allocate. */
struct tls_conn *tls_conn_new(struct tls_server *ts);

/* Frees t and any ciphertext it still holds. NULL is ignored. */
void tls_conn_free(struct tls_conn *t);

/* Hands t ciphertext received from the peer. The bytes are read in place
 * by the next tls_conn_handshake/tls_conn_read calls, which consume all of
 * it or keep what they need; call tls_conn_input(t, NULL, 0) before buf is
 * reused. */
void tls_conn_input(struct tls_conn *t, const uint8_t *buf, size_t len);

/* Advances the handshake on the input. Returns TLS_DONE, TLS_AGAIN,
 * TLS_E_FAILED, or TLS_E_HTTP when the connection opened with a plain HTTP
 * request (Go's "GET /", "HEAD ", "POST ", "PUT /", "OPTIO" test on the
 * first five bytes; nothing was handed to OpenSSL then). */
int tls_conn_handshake(struct tls_conn *t);

/* Decrypts application data into out[0..cap). Returns the byte count
 * (> 0), TLS_AGAIN when the input is used up, TLS_E_CLOSED after the
 * peer's close_notify, or TLS_E_FAILED. */
ssize_t tls_conn_read(struct tls_conn *t, uint8_t *out, size_t cap);

/* Encrypts buf[0..len) into the output. Returns 0 or TLS_E_FAILED. */
int tls_conn_write(struct tls_conn *t, const void *buf, size_t len);

/* Queues close_notify in the output (once; no-op after a fatal error). */
void tls_conn_shutdown(struct tls_conn *t);

/* True when ALPN selected proto (e.g. "acme-tls/1"). */
bool tls_conn_alpn_is(const struct tls_conn *t, const char *proto);

/* Ciphertext output. Everything the calls above produce is appended, in
 * order, to the output. Between tls_conn_out_begin and tls_conn_out_end it
 * goes into the caller's scratch buffer while that is enough and t holds
 * nothing older; otherwise into a buffer t allocates (and frees once it is
 * empty or taken). */
void tls_conn_out_begin(struct tls_conn *t, uint8_t *scratch, size_t cap);

/* The output not yet sent; *len is 0 when there is none. */
const uint8_t *tls_conn_out(const struct tls_conn *t, size_t *len);

/* The first sent bytes of tls_conn_out have been sent; t keeps (copies)
 * the rest and forgets the scratch buffer. */
void tls_conn_out_end(struct tls_conn *t, size_t sent);

/* Takes the output buffer t allocated (the caller frees it with free());
 * NULL with *len = 0 when t holds no output. Not while a scratch buffer is
 * in use. */
uint8_t *tls_conn_out_take(struct tls_conn *t, size_t *len);

/* ---- pure helpers ------------------------------------------------------ */

/* The Host check (docs/features/tls.md): host (a Host header value, len bytes) with any ":port"
 * stripped the way Go's net.SplitHostPort does, compared ASCII
 * case-insensitively with domain. Empty host never matches. */
bool tls_host_matches(const char *host, size_t len, const char *domain);

/* The plain-HTTP sniff (docs/features/tls.md): true when the first five bytes of a connection are
 * the start of an HTTP request rather than a TLS record (needs len >= 5). */
bool tls_looks_like_http(const uint8_t *p, size_t len);

#endif
