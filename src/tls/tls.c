/* tls.c — OpenSSL 3 behind a memory-only interface. A custom BIO reads
 * ciphertext from a slice the caller lends (the shard's read buffer: no
 * copy, no per-connection input buffer) and appends what OpenSSL writes to
 * the caller's scratch buffer, spilling into a heap buffer only when the
 * bytes cannot go out at once. Certificates are swapped by building a new
 * SSL_CTX and replacing the pointer: sessions already made keep a
 * reference to the old one. It does not read sockets or arm timers
 * (conn.c) and knows nothing of ACME (acme.c installs what it obtains). */
#include "tls/tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "base/util.h"

/* TLS 1.2: forward secrecy and AEAD only. TLS 1.3 keeps OpenSSL's suites. */
#define CIPHERS_TLS12                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define MAX_PEM_FILE (1024 * 1024)
#define SNIFF_LEN    5

struct tls_server {
    SSL_CTX *ctx;
    bool has_cert;
};

struct tls_conn {
    SSL *ssl;
    /* input lent by the caller */
    const uint8_t *in;
    size_t in_len;
    /* the first bytes, held back until they are known not to be HTTP */
    uint8_t sniff[SNIFF_LEN];
    uint8_t sniff_len, sniff_pos;
    bool sniffed;
    bool failed;      /* fatal error: no close_notify */
    bool shut;        /* close_notify queued */
    uint8_t *scratch; /* caller's, between out_begin and out_end */
    size_t scratch_len, scratch_cap;
    uint8_t *heap; /* ours: output that could not go out at once */
    size_t heap_len, heap_cap;
};

/* ---- the memory BIO ---------------------------------------------------- */

static BIO_METHOD *bio_method;
static CRYPTO_ONCE bio_once = CRYPTO_ONCE_STATIC_INIT;

static void heap_append(struct tls_conn *t, const uint8_t *p, size_t n)
{
    if (t->heap_len + n > t->heap_cap) {
        size_t cap = t->heap_cap ? t->heap_cap : 4096;
        while (cap < t->heap_len + n)
            cap *= 2;
        t->heap = xrealloc(t->heap, cap);
        t->heap_cap = cap;
    }
    memcpy(t->heap + t->heap_len, p, n);
    t->heap_len += n;
}

/* Output keeps its order: the scratch buffer is used only while nothing
 * older waits on the heap, and spills there whole when it is too small. */
static void sink(struct tls_conn *t, const uint8_t *p, size_t n)
{
    if (t->scratch && !t->heap_len && t->scratch_len + n <= t->scratch_cap) {
        memcpy(t->scratch + t->scratch_len, p, n);
        t->scratch_len += n;
        return;
    }
    if (t->scratch_len) {
        heap_append(t, t->scratch, t->scratch_len);
        t->scratch_len = 0;
    }
    heap_append(t, p, n);
}

static int bio_write(BIO *b, const char *in, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    sink(t, (const uint8_t *)in, (size_t)len);
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    size_t n = 0, want = len > 0 ? (size_t)len : 0;
    BIO_clear_retry_flags(b);
    while (n < want && t->sniff_pos < t->sniff_len)
        out[n++] = (char)t->sniff[t->sniff_pos++];
    size_t take = want - n < t->in_len ? want - n : t->in_len;
    if (take) {
        memcpy(out + n, t->in, take);
        t->in += take;
        t->in_len -= take;
        n += take;
    }
    if (!n) {
        BIO_set_retry_read(b); /* not EOF: more may come with the next socket read */
        return -1;
    }
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* output is never buffered here */
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "relay memory");
    if (!m)
        return;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    bio_method = m;
}

/* ---- server context ---------------------------------------------------- */

static void openssl_reason(char *out, size_t cap, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(out, cap, "%s%s%s", what, r ? ": " : "", r ? r : "");
    ERR_clear_error();
}

/* ALPN: http/1.1 first, acme-tls/1 accepted; like Go, a client offering
 * only protocols we do not speak is refused (no_application_protocol). */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                   const unsigned char *in, unsigned int in_len, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1\x0a"
                                        "acme-tls/1";
    unsigned char *sel = NULL;
    (void)ssl, (void)arg;
    if (SSL_select_next_proto(&sel, out_len, ours, sizeof ours - 1, in, in_len) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(err, cap, "creating the TLS context");
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) != 1) {
        openssl_reason(err, cap, "configuring the TLS context");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET); /* stateless tickets: no server cache */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle sessions hold no record buffers */
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    return ctx;
}

struct tls_server *tls_server_new(char *err, size_t err_cap)
{
    CRYPTO_THREAD_run_once(&bio_once, make_method);
    if (!bio_method) {
        snprintf(err, err_cap, "creating the TLS memory BIO failed");
        return NULL;
    }
    SSL_CTX *ctx = make_ctx(err, err_cap);
    if (!ctx)
        return NULL;
    struct tls_server *ts = xcalloc(1, sizeof *ts);
    ts->ctx = ctx;
    return ts;
}

void tls_server_free(struct tls_server *ts)
{
    if (!ts)
        return;
    SSL_CTX_free(ts->ctx);
    free(ts);
}

bool tls_server_has_cert(const struct tls_server *ts)
{
    return ts->has_cert;
}

int tls_server_min_version(const struct tls_server *ts)
{
    return (int)SSL_CTX_get_min_proto_version(ts->ctx);
}

/* Never prompt for a passphrase: an encrypted key is simply unreadable. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

enum bad_part { BAD_NONE, BAD_CERT, BAD_KEY, BAD_PAIR };

static int use_chain(SSL_CTX *ctx, const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, len > INT_MAX ? INT_MAX : (int)len);
    X509 *leaf = b ? PEM_read_bio_X509(b, NULL, no_passphrase, NULL) : NULL;
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    while (ok) {
        X509 *x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
        if (!x)
            break;
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            ok = 0;
        }
    }
    if (ok) {
        unsigned long e = ERR_peek_last_error();
        /* the end of the chain reads as "no start line"; anything else is damage */
        if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
            ok = 0;
        else
            ERR_clear_error();
    }
    BIO_free(b);
    return ok ? 0 : -1;
}

static int use_key(SSL_CTX *ctx, const char *pem, size_t len, enum bad_part *bad)
{
    BIO *b = BIO_new_mem_buf(pem, len > INT_MAX ? INT_MAX : (int)len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!k) {
        *bad = BAD_KEY;
        return -1;
    }
    int ok = SSL_CTX_use_PrivateKey(ctx, k) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(k);
    if (!ok)
        *bad = BAD_PAIR;
    return ok ? 0 : -1;
}

/* Resumption should survive a certificate swap: the new context takes the
 * old one's ticket keys. */
static void keep_ticket_keys(SSL_CTX *to, SSL_CTX *from)
{
    unsigned char keys[80];
    if (SSL_CTX_get_tlsext_ticket_keys(from, keys, sizeof keys) == 1)
        SSL_CTX_set_tlsext_ticket_keys(to, keys, sizeof keys);
    OPENSSL_cleanse(keys, sizeof keys);
}

static int install(struct tls_server *ts, const char *chain, size_t chain_len, const char *key,
                   size_t key_len, enum bad_part *bad, char *err, size_t cap)
{
    *bad = BAD_NONE;
    ERR_clear_error();
    SSL_CTX *ctx = make_ctx(err, cap);
    if (!ctx)
        return -1;
    if (use_chain(ctx, chain, chain_len) != 0) {
        *bad = BAD_CERT;
        openssl_reason(err, cap, "no usable PEM certificate");
    } else if (use_key(ctx, key, key_len, bad) != 0) {
        openssl_reason(err, cap,
                       *bad == BAD_KEY ? "no usable PEM private key"
                                       : "private key does not match the certificate");
    }
    if (*bad != BAD_NONE) {
        SSL_CTX_free(ctx);
        return -1;
    }
    keep_ticket_keys(ctx, ts->ctx);
    SSL_CTX_free(ts->ctx); /* live sessions hold their own reference */
    ts->ctx = ctx;
    ts->has_cert = true;
    return 0;
}

int tls_server_set_cert_pem(struct tls_server *ts, const char *chain_pem, size_t chain_len,
                            const char *key_pem, size_t key_len, char *err, size_t err_cap)
{
    enum bad_part bad;
    return install(ts, chain_pem, chain_len, key_pem, key_len, &bad, err, err_cap);
}

/* Reads a whole (small) file into a malloc'd buffer. */
static char *read_file(const char *path, size_t *len, char *err, size_t cap, const char *what)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, cap, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(MAX_PEM_FILE + 1);
    size_t n = fread(buf, 1, MAX_PEM_FILE + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || n > MAX_PEM_FILE) {
        snprintf(err, cap, "%s %s: %s", what, path, failed ? "read error" : "larger than 1 MiB");
        OPENSSL_cleanse(buf, n);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int tls_server_load_files(struct tls_server *ts, const char *cert_path, const char *key_path,
                          char *err, size_t err_cap)
{
    size_t clen = 0, klen = 0;
    char inner[256];
    enum bad_part bad;
    char *cert = read_file(cert_path, &clen, err, err_cap, "certificate file");
    if (!cert)
        return -1;
    char *key = read_file(key_path, &klen, err, err_cap, "key file");
    if (!key) {
        free(cert);
        return -1;
    }
    int rc = install(ts, cert, clen, key, klen, &bad, inner, sizeof inner);
    if (rc != 0 && bad == BAD_CERT)
        snprintf(err, err_cap, "certificate file %s: %s", cert_path, inner);
    else if (rc != 0 && bad == BAD_KEY)
        snprintf(err, err_cap, "key file %s: %s", key_path, inner);
    else if (rc != 0)
        snprintf(err, err_cap, "key file %s, certificate file %s: %s", key_path, cert_path, inner);
    OPENSSL_cleanse(key, klen);
    free(key);
    free(cert);
    return rc;
}

/* ---- one connection ---------------------------------------------------- */

struct tls_conn *tls_conn_new(struct tls_server *ts)
{
    SSL *ssl = SSL_new(ts->ctx);
    BIO *b = ssl ? BIO_new(bio_method) : NULL;
    if (!b) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    struct tls_conn *t = xcalloc(1, sizeof *t);
    t->ssl = ssl;
    BIO_set_data(b, t);
    BIO_up_ref(b); /* one reference each for the read and the write side */
    SSL_set0_rbio(ssl, b);
    SSL_set0_wbio(ssl, b);
    SSL_set_accept_state(ssl);
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t->heap);
    free(t);
}

void tls_conn_input(struct tls_conn *t, const uint8_t *buf, size_t len)
{
    t->in = buf;
    t->in_len = buf ? len : 0;
}

/* Holds back the first bytes until they show whether this is TLS at all.
 * A TLS handshake record starts with 0x16, which no HTTP method does. */
static int sniff(struct tls_conn *t)
{
    while (!t->sniffed && t->sniff_len < SNIFF_LEN && t->in_len) {
        if (t->sniff_len == 0 && t->in[0] == 0x16) {
            t->sniffed = true;
            break;
        }
        t->sniff[t->sniff_len++] = *t->in++;
        t->in_len--;
    }
    if (t->sniffed)
        return TLS_DONE;
    if (t->sniff_len < SNIFF_LEN)
        return TLS_AGAIN;
    if (tls_looks_like_http(t->sniff, SNIFF_LEN))
        return TLS_E_HTTP;
    t->sniffed = true; /* not HTTP: OpenSSL gets the held bytes first */
    return TLS_DONE;
}

static int fail(struct tls_conn *t)
{
    t->failed = true;
    ERR_clear_error();
    return TLS_E_FAILED;
}

int tls_conn_handshake(struct tls_conn *t)
{
    int s = sniff(t);
    if (s != TLS_DONE)
        return s;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
        return TLS_DONE;
    if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ)
        return TLS_AGAIN;
    return fail(t);
}

ssize_t tls_conn_read(struct tls_conn *t, uint8_t *out, size_t cap)
{
    ERR_clear_error();
    int r = SSL_read(t->ssl, out, cap > INT_MAX ? INT_MAX : (int)cap);
    if (r > 0)
        return r;
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_E_CLOSED;
    default:
        return fail(t);
    }
}

int tls_conn_write(struct tls_conn *t, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (t->failed)
        return TLS_E_FAILED;
    while (len > 0) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        ERR_clear_error();
        int r = SSL_write(t->ssl, p, n);
        if (r <= 0)
            return fail(t);
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

void tls_conn_shutdown(struct tls_conn *t)
{
    if (t->failed || t->shut || !SSL_is_init_finished(t->ssl))
        return;
    t->shut = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: our close_notify is out; the peer's is not awaited */
    ERR_clear_error();
}

bool tls_conn_alpn_is(const struct tls_conn *t, const char *proto)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return p && n == strlen(proto) && memcmp(p, proto, n) == 0;
}

void tls_conn_out_begin(struct tls_conn *t, uint8_t *scratch, size_t cap)
{
    t->scratch = scratch;
    t->scratch_len = 0;
    t->scratch_cap = cap;
}

const uint8_t *tls_conn_out(const struct tls_conn *t, size_t *len)
{
    if (t->heap_len) {
        *len = t->heap_len;
        return t->heap;
    }
    *len = t->scratch_len;
    return t->scratch;
}

void tls_conn_out_end(struct tls_conn *t, size_t sent)
{
    if (t->heap_len) {
        memmove(t->heap, t->heap + sent, t->heap_len - sent);
        t->heap_len -= sent;
        if (!t->heap_len) { /* idle sessions keep no output buffer */
            free(t->heap);
            t->heap = NULL;
            t->heap_cap = 0;
        }
    } else if (t->scratch_len > sent) {
        heap_append(t, t->scratch + sent, t->scratch_len - sent);
    }
    t->scratch = NULL;
    t->scratch_len = t->scratch_cap = 0;
}

uint8_t *tls_conn_out_take(struct tls_conn *t, size_t *len)
{
    uint8_t *p = t->heap_len ? t->heap : NULL;
    *len = t->heap_len;
    if (p) {
        t->heap = NULL;
        t->heap_len = t->heap_cap = 0;
    }
    return p;
}

/* ---- pure helpers ------------------------------------------------------ */

static char fold(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

bool tls_host_matches(const char *host, size_t len, const char *domain)
{
    const char *h = host;
    size_t n = len;
    if (n && h[0] == '[') {
        /* "[v6]:port" loses brackets and port; "[v6]" alone stays as is */
        const char *end = memchr(h, ']', n);
        if (end && (size_t)(end - h) + 1 < n && end[1] == ':') {
            h = host + 1;
            n = (size_t)(end - host) - 1;
        }
    } else {
        /* exactly one colon: "host:port"; more is an IPv6 literal, kept */
        const char *colon = memchr(h, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - h) - 1))
            n = (size_t)(colon - h);
    }
    size_t dl = strlen(domain);
    if (n == 0 || n != dl)
        return false;
    for (size_t i = 0; i < n; i++)
        if (fold(h[i]) != fold(domain[i]))
            return false;
    return true;
}

bool tls_looks_like_http(const uint8_t *p, size_t len)
{
    static const char *const starts[] = {"GET /", "HEAD ", "POST ", "PUT /", "OPTIO"};
    if (len < SNIFF_LEN)
        return false;
    for (size_t i = 0; i < ARRAY_LEN(starts); i++)
        if (memcmp(p, starts[i], SNIFF_LEN) == 0)
            return true;
    return false;
}

int tls_server_cert_info(const struct tls_server *ts, struct tls_cert_info *info)
{
    memset(info, 0, sizeof *info);
    X509 *leaf = ts->has_cert ? SSL_CTX_get0_certificate(ts->ctx) : NULL;
    if (!leaf)
        return -1;
    BIO *b = BIO_new(BIO_s_mem());
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, info->subject, (int)sizeof info->subject - 1);
        info->subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1)
        strftime(info->not_after, sizeof info->not_after, "%Y-%m-%dT%H:%M:%SZ", &tm);
    unsigned int len = 0;
    X509_digest(leaf, EVP_sha256(), info->sha256, &len);
    return 0;
}
