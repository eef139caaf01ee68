/* test_tls.c — the TLS module without sockets: a real OpenSSL client on
 * memory BIOs talks to tls_conn. Covers the empty context (handshakes fail
 * with an alert), certificate install and swap (old sessions keep working,
 * new ones get the new certificate, a bad swap changes nothing), the
 * TLS 1.2 floor, ALPN, the plain-HTTP sniff, close_notify both ways, the
 * scratch/heap output contract, file loading errors, and the Host check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/tls.h"
#include "tls_testkit.h"

static struct ident A, B;

static int setup(void **state)
{
    (void)state;
    ident_make(&A, 1);
    ident_make(&B, 2);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ident_free(&A);
    ident_free(&B);
    return 0;
}

static struct tls_server *server_with(const struct ident *id)
{
    char err[256];
    struct tls_server *ts = tls_server_new(err, sizeof err);
    assert_non_null(ts);
    if (id)
        assert_int_equal(tls_server_set_cert_pem(ts, id->cert_pem, id->cert_len, id->key_pem,
                                                 id->key_len, err, sizeof err),
                         0);
    return ts;
}

/* ---- a client on memory BIOs talking to a tls_conn --------------------- */

struct pair {
    SSL_CTX *cctx;
    SSL *cli;
    BIO *to_cli, *from_cli;
    struct tls_conn *srv;
    int srv_hs;       /* last tls_conn_handshake result */
    ssize_t srv_last; /* last tls_conn_read result */
    uint8_t srv_plain[4096];
    size_t srv_plain_len;
    bool http_seen;
};

static void pair_open(struct pair *p, struct tls_server *ts, const char *alpn, size_t alpn_len,
                      int max_version)
{
    memset(p, 0, sizeof *p);
    p->cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(p->cctx, SSL_VERIFY_NONE, NULL);
    if (max_version) {
        SSL_CTX_set_min_proto_version(p->cctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(p->cctx, max_version);
        SSL_CTX_set_cipher_list(p->cctx, "DEFAULT:@SECLEVEL=0");
    }
    if (alpn)
        SSL_CTX_set_alpn_protos(p->cctx, (const unsigned char *)alpn, (unsigned)alpn_len);
    p->cli = SSL_new(p->cctx);
    p->to_cli = BIO_new(BIO_s_mem());
    p->from_cli = BIO_new(BIO_s_mem());
    SSL_set_bio(p->cli, p->to_cli, p->from_cli);
    SSL_set_connect_state(p->cli);
    SSL_set_tlsext_host_name(p->cli, "relay.test");
    p->srv = tls_conn_new(ts);
    assert_non_null(p->srv);
    p->srv_hs = TLS_AGAIN;
}

static void pair_close(struct pair *p)
{
    SSL_free(p->cli);
    SSL_CTX_free(p->cctx);
    tls_conn_free(p->srv);
    ERR_clear_error();
}

/* Moves bytes both ways until neither side makes progress. */
static void shuttle(struct pair *p)
{
    for (int round = 0; round < 64; round++) {
        bool moved = false;
        if (!SSL_is_init_finished(p->cli))
            SSL_do_handshake(p->cli);
        uint8_t buf[65536];
        int n = BIO_read(p->from_cli, buf, sizeof buf);
        if (n > 0 && p->srv_hs >= 0) {
            moved = true;
            tls_conn_input(p->srv, buf, (size_t)n);
            if (p->srv_hs == TLS_AGAIN) {
                p->srv_hs = tls_conn_handshake(p->srv);
                if (p->srv_hs == TLS_E_HTTP)
                    p->http_seen = true;
            }
            while (p->srv_hs == TLS_DONE) {
                p->srv_last = tls_conn_read(p->srv, p->srv_plain + p->srv_plain_len,
                                            sizeof p->srv_plain - p->srv_plain_len);
                if (p->srv_last <= 0)
                    break;
                p->srv_plain_len += (size_t)p->srv_last;
            }
            tls_conn_input(p->srv, NULL, 0);
        }
        size_t len;
        uint8_t *out = tls_conn_out_take(p->srv, &len);
        if (out) {
            moved = true;
            BIO_write(p->to_cli, out, (int)len);
            free(out);
        }
        if (!moved)
            break;
    }
}

static void handshake_ok(struct pair *p)
{
    shuttle(p);
    assert_int_equal(p->srv_hs, TLS_DONE);
    assert_true(SSL_is_init_finished(p->cli));
}

/* Client → server application data. */
static void client_says(struct pair *p, const char *text)
{
    p->srv_plain_len = 0;
    assert_int_equal(SSL_write(p->cli, text, (int)strlen(text)), (int)strlen(text));
    shuttle(p);
    assert_int_equal(p->srv_plain_len, strlen(text));
    assert_memory_equal(p->srv_plain, text, strlen(text));
}

/* Server → client application data. */
static void server_says(struct pair *p, const char *text)
{
    char got[4096];
    assert_int_equal(tls_conn_write(p->srv, text, strlen(text)), 0);
    shuttle(p);
    int n = SSL_read(p->cli, got, sizeof got);
    assert_int_equal(n, (int)strlen(text));
    assert_memory_equal(got, text, strlen(text));
}

static bool peer_is(struct pair *p, const struct ident *id)
{
    X509 *peer = SSL_get1_peer_certificate(p->cli);
    bool same = peer && X509_cmp(peer, id->cert) == 0;
    X509_free(peer);
    return same;
}

/* ---- tests ------------------------------------------------------------- */

static void test_new_context(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(NULL);
    assert_false(tls_server_has_cert(ts));
    assert_int_equal(tls_server_min_version(ts), TLS1_2_VERSION);
    tls_server_free(ts);
    tls_server_free(NULL);
    tls_conn_free(NULL);
}

static void test_no_certificate_fails_with_alert(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(NULL);
    struct pair p;
    pair_open(&p, ts, NULL, 0, 0);
    SSL_do_handshake(p.cli);
    uint8_t buf[4096];
    int n = BIO_read(p.from_cli, buf, sizeof buf);
    assert_true(n > 0);
    tls_conn_input(p.srv, buf, (size_t)n);
    assert_int_equal(tls_conn_handshake(p.srv), TLS_E_FAILED);
    size_t len;
    const uint8_t *out = tls_conn_out(p.srv, &len);
    assert_non_null(out);
    assert_true(len >= 7);
    assert_int_equal(out[0], 0x15); /* an alert record */
    tls_conn_shutdown(p.srv);       /* no close_notify after a fatal error */
    tls_conn_out_end(p.srv, 0);
    pair_close(&p);
    tls_server_free(ts);
}

static void test_handshake_data_and_close_notify(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(&A);
    assert_true(tls_server_has_cert(ts));
    struct pair p;
    pair_open(&p, ts, "\x08http/1.1", 9, 0);
    handshake_ok(&p);
    assert_true(tls_conn_alpn_is(p.srv, "http/1.1"));
    assert_false(tls_conn_alpn_is(p.srv, "acme-tls/1"));
    assert_true(peer_is(&p, &A));
    assert_int_equal(SSL_version(p.cli), TLS1_3_VERSION);
    client_says(&p, "GET / HTTP/1.1\r\n\r\n");
    server_says(&p, "HTTP/1.1 200 OK\r\n\r\n");
    /* our close_notify reaches the client as a clean end */
    tls_conn_shutdown(p.srv);
    tls_conn_shutdown(p.srv); /* once */
    shuttle(&p);
    char c;
    assert_int_equal(SSL_read(p.cli, &c, 1), 0);
    assert_int_equal(SSL_get_error(p.cli, 0), SSL_ERROR_ZERO_RETURN);
    /* theirs reads as TLS_E_CLOSED */
    SSL_shutdown(p.cli);
    shuttle(&p);
    assert_int_equal(p.srv_last, TLS_E_CLOSED);
    pair_close(&p);
    tls_server_free(ts);
}

static void test_tls12_session(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(&A);
    struct pair p;
    pair_open(&p, ts, NULL, 0, TLS1_2_VERSION);
    handshake_ok(&p);
    assert_int_equal(SSL_version(p.cli), TLS1_2_VERSION);
    const char *cipher = SSL_get_cipher_name(p.cli);
    assert_non_null(strstr(cipher, "ECDHE"));
    assert_true(strstr(cipher, "GCM") || strstr(cipher, "CHACHA20"));
    client_says(&p, "ping");
    server_says(&p, "pong");
    pair_close(&p);
    tls_server_free(ts);
}

static void test_old_versions_refused(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(&A);
    static const int versions[] = {TLS1_VERSION, TLS1_1_VERSION};
    for (size_t i = 0; i < 2; i++) {
        struct pair p;
        pair_open(&p, ts, NULL, 0, versions[i]);
        shuttle(&p);
        assert_int_equal(p.srv_hs, TLS_E_FAILED);
        assert_false(SSL_is_init_finished(p.cli));
        pair_close(&p);
    }
    tls_server_free(ts);
}

static void test_alpn(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(&A);
    struct pair p;
    pair_open(&p, ts, "\x02h2\x08http/1.1", 12, 0);
    handshake_ok(&p);
    assert_true(tls_conn_alpn_is(p.srv, "http/1.1"));
    pair_close(&p);

    pair_open(&p, ts,
              "\x0a"
              "acme-tls/1",
              11, 0);
    handshake_ok(&p);
    assert_true(tls_conn_alpn_is(p.srv, "acme-tls/1"));
    pair_close(&p);

    pair_open(&p, ts, NULL, 0, 0); /* no ALPN at all is fine */
    handshake_ok(&p);
    assert_false(tls_conn_alpn_is(p.srv, "http/1.1"));
    pair_close(&p);

    pair_open(&p, ts, "\x02h2", 3, 0); /* only protocols we do not speak */
    shuttle(&p);
    assert_int_equal(p.srv_hs, TLS_E_FAILED);
    pair_close(&p);
    tls_server_free(ts);
}

static void test_swap_certificate(void **state)
{
    (void)state;
    char err[256];
    struct tls_server *ts = server_with(&A);
    struct pair old;
    pair_open(&old, ts, NULL, 0, 0);
    handshake_ok(&old);
    assert_true(peer_is(&old, &A));
    assert_int_equal(
        tls_server_set_cert_pem(ts, B.cert_pem, B.cert_len, B.key_pem, B.key_len, err, sizeof err),
        0);
    /* the session made before the swap keeps working */
    client_says(&old, "still here");
    server_says(&old, "me too");
    struct pair fresh;
    pair_open(&fresh, ts, NULL, 0, 0);
    handshake_ok(&fresh);
    assert_true(peer_is(&fresh, &B));
    pair_close(&fresh);
    /* even after the context is gone */
    tls_server_free(ts);
    client_says(&old, "after free");
    pair_close(&old);
}

static void test_bad_swap_keeps_old(void **state)
{
    (void)state;
    char err[256];
    struct tls_server *ts = server_with(&A);
    /* B's certificate with A's key */
    assert_int_equal(
        tls_server_set_cert_pem(ts, B.cert_pem, B.cert_len, A.key_pem, A.key_len, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "does not match"));
    assert_null(strstr(err, "BEGIN"));
    assert_int_equal(
        tls_server_set_cert_pem(ts, "garbage", 7, B.key_pem, B.key_len, err, sizeof err), -1);
    assert_non_null(strstr(err, "certificate"));
    assert_int_equal(
        tls_server_set_cert_pem(ts, B.cert_pem, B.cert_len, "garbage", 7, err, sizeof err), -1);
    assert_non_null(strstr(err, "private key"));
    assert_int_equal(tls_server_set_cert_pem(ts, "", 0, "", 0, err, sizeof err), -1);
    /* a key where the certificate should be */
    assert_int_equal(
        tls_server_set_cert_pem(ts, B.key_pem, B.key_len, B.key_pem, B.key_len, err, sizeof err),
        -1);
    assert_true(tls_server_has_cert(ts));
    struct pair p;
    pair_open(&p, ts, NULL, 0, 0);
    handshake_ok(&p);
    assert_true(peer_is(&p, &A));
    pair_close(&p);
    tls_server_free(ts);

    /* a failed first install leaves the context empty */
    ts = server_with(NULL);
    assert_int_equal(
        tls_server_set_cert_pem(ts, B.cert_pem, B.cert_len, A.key_pem, A.key_len, err, sizeof err),
        -1);
    assert_false(tls_server_has_cert(ts));
    tls_server_free(ts);
}

static void test_chain_with_intermediate(void **state)
{
    (void)state;
    char err[256];
    /* leaf A followed by B as if it were an intermediate: both are sent */
    size_t len = A.cert_len + B.cert_len;
    char *chain = malloc(len);
    memcpy(chain, A.cert_pem, A.cert_len);
    memcpy(chain + A.cert_len, B.cert_pem, B.cert_len);
    struct tls_server *ts = server_with(NULL);
    assert_int_equal(tls_server_set_cert_pem(ts, chain, len, A.key_pem, A.key_len, err, sizeof err),
                     0);
    struct pair p;
    pair_open(&p, ts, NULL, 0, 0);
    handshake_ok(&p);
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(p.cli);
    assert_int_equal(sk_X509_num(sent), 2);
    pair_close(&p);
    tls_server_free(ts);
    free(chain);
}

static void test_sniff_plain_http(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(&A);
    struct tls_conn *t = tls_conn_new(ts);
    tls_conn_input(t, (const uint8_t *)"GE", 2);
    assert_int_equal(tls_conn_handshake(t), TLS_AGAIN);
    tls_conn_input(t, (const uint8_t *)"T / HTTP/1.1\r\n", 15);
    assert_int_equal(tls_conn_handshake(t), TLS_E_HTTP);
    size_t len;
    tls_conn_out(t, &len);
    assert_int_equal(len, 0); /* nothing was said */
    tls_conn_free(t);

    static const char *const methods[] = {"HEAD / HTTP/1.0", "POST /x", "PUT /y", "OPTIONS *"};
    for (size_t i = 0; i < 4; i++) {
        t = tls_conn_new(ts);
        tls_conn_input(t, (const uint8_t *)methods[i], strlen(methods[i]));
        assert_int_equal(tls_conn_handshake(t), TLS_E_HTTP);
        tls_conn_free(t);
    }
    /* neither TLS nor HTTP: OpenSSL sees it and fails */
    t = tls_conn_new(ts);
    tls_conn_input(t, (const uint8_t *)"XXXXXXXXXXXX", 12);
    assert_int_equal(tls_conn_handshake(t), TLS_E_FAILED);
    tls_conn_free(t);
    /* a TLS record start is not held back */
    t = tls_conn_new(ts);
    tls_conn_input(t, (const uint8_t *)"\x16\x03\x01", 3);
    assert_int_equal(tls_conn_handshake(t), TLS_AGAIN);
    tls_conn_free(t);
    tls_server_free(ts);
}

/* The output contract: scratch while it fits, heap when not, and the
 * unsent remainder kept in order. */
static void test_output_scratch_and_spill(void **state)
{
    (void)state;
    struct tls_server *ts = server_with(&A);
    static const size_t caps[] = {65536, 10};
    for (size_t i = 0; i < 2; i++) {
        struct pair p;
        pair_open(&p, ts, NULL, 0, 0);
        handshake_ok(&p);
        uint8_t scratch[65536];
        char msg[100];
        memset(msg, 'm', sizeof msg);
        tls_conn_out_begin(p.srv, scratch, caps[i]);
        assert_int_equal(tls_conn_write(p.srv, msg, sizeof msg), 0);
        size_t len;
        const uint8_t *out = tls_conn_out(p.srv, &len);
        assert_true(len > sizeof msg);
        if (caps[i] == 65536)
            assert_ptr_equal(out, scratch);
        else
            assert_ptr_not_equal(out, scratch);
        BIO_write(p.to_cli, out, 7); /* the kernel took 7 bytes */
        tls_conn_out_end(p.srv, 7);
        uint8_t *rest = tls_conn_out_take(p.srv, &len);
        assert_non_null(rest);
        BIO_write(p.to_cli, rest, (int)len);
        free(rest);
        char got[200];
        assert_int_equal(SSL_read(p.cli, got, sizeof got), (int)sizeof msg);
        assert_memory_equal(got, msg, sizeof msg);
        /* everything sent at once leaves nothing behind */
        tls_conn_out_begin(p.srv, scratch, sizeof scratch);
        assert_int_equal(tls_conn_write(p.srv, msg, sizeof msg), 0);
        out = tls_conn_out(p.srv, &len);
        BIO_write(p.to_cli, out, (int)len);
        tls_conn_out_end(p.srv, len);
        assert_null(tls_conn_out_take(p.srv, &len));
        assert_int_equal(len, 0);
        assert_int_equal(SSL_read(p.cli, got, sizeof got), (int)sizeof msg);
        pair_close(&p);
    }
    tls_server_free(ts);
}

static char *write_temp(const char *text, size_t len)
{
    char *path = strdup("/tmp/test_tls_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_load_files(void **state)
{
    (void)state;
    char err[512];
    char *cert = write_temp(A.cert_pem, A.cert_len);
    char *key = write_temp(A.key_pem, A.key_len);
    char *junk = write_temp("junk\n", 5);
    struct tls_server *ts = server_with(NULL);
    assert_int_equal(tls_server_load_files(ts, cert, key, err, sizeof err), 0);
    assert_true(tls_server_has_cert(ts));
    assert_int_equal(tls_server_load_files(ts, "/nonexistent/c.pem", key, err, sizeof err), -1);
    assert_non_null(strstr(err, "certificate file /nonexistent/c.pem"));
    assert_non_null(strstr(err, "No such file or directory"));
    assert_int_equal(tls_server_load_files(ts, cert, "/nonexistent/k.pem", err, sizeof err), -1);
    assert_non_null(strstr(err, "key file /nonexistent/k.pem"));
    assert_int_equal(tls_server_load_files(ts, junk, key, err, sizeof err), -1);
    assert_non_null(strstr(err, "certificate file"));
    assert_non_null(strstr(err, junk));
    assert_int_equal(tls_server_load_files(ts, cert, junk, err, sizeof err), -1);
    assert_non_null(strstr(err, "key file"));
    assert_non_null(strstr(err, junk));
    struct pair p;
    pair_open(&p, ts, NULL, 0, 0);
    handshake_ok(&p);
    assert_true(peer_is(&p, &A));
    pair_close(&p);
    tls_server_free(ts);
    unlink(cert);
    unlink(key);
    unlink(junk);
    free(cert);
    free(key);
    free(junk);
}

static void test_host_matrix(void **state)
{
    (void)state;
    static const struct {
        const char *host;
        bool ok;
    } rows[] = {
        {"relay.example.com", true},
        {"relay.example.com:443", true},
        {"relay.example.com:8443", true},
        {"RELAY.EXAMPLE.COM", true},
        {"Relay.Example.Com:1", true},
        {"relay.example.com:", true}, /* Go: empty port is still a port */
        {"", false},
        {":443", false},
        {"other.example.com", false},
        {"relay.example.com.evil.com", false},
        {"evilrelay.example.com", false},
        {"relay.example.co", false},
        {"relay.example.com.", false},
        {"[::1]", false},
        {"[::1]:443", false},
        {"::1", false},
        {"relay.example.com:443:1", false}, /* too many colons: kept whole */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        bool got = tls_host_matches(rows[i].host, strlen(rows[i].host), "relay.example.com");
        if (got != rows[i].ok)
            fail_msg("host %s: got %d", rows[i].host, got);
    }
    assert_true(tls_host_matches("[::1]:443", 9, "::1"));
    assert_false(tls_host_matches("[::1]", 5, "::1"));
    assert_true(tls_host_matches("[::1]", 5, "[::1]"));
}

static void test_looks_like_http(void **state)
{
    (void)state;
    static const char *const yes[] = {"GET /", "HEAD ", "POST ", "PUT /", "OPTIO"};
    static const char *const no[] = {"get /", "GET ", "PATCH", "\x16\x03\x01\x00\x10", "CONNE"};
    for (size_t i = 0; i < 5; i++) {
        assert_true(tls_looks_like_http((const uint8_t *)yes[i], 5));
        assert_false(tls_looks_like_http((const uint8_t *)no[i], strlen(no[i])));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_context),
        cmocka_unit_test(test_no_certificate_fails_with_alert),
        cmocka_unit_test(test_handshake_data_and_close_notify),
        cmocka_unit_test(test_tls12_session),
        cmocka_unit_test(test_old_versions_refused),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_swap_certificate),
        cmocka_unit_test(test_bad_swap_keeps_old),
        cmocka_unit_test(test_chain_with_intermediate),
        cmocka_unit_test(test_sniff_plain_http),
        cmocka_unit_test(test_output_scratch_and_spill),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_host_matrix),
        cmocka_unit_test(test_looks_like_http),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
