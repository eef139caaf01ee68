/* test_acme.c — the ACME client's pure parts: base64url, P-256 keys and
 * their PEM round trip, the JWK and its RFC 7638 thumbprint (fixed
 * vector), ES256 JWS (verified with OpenSSL after converting r||s back to
 * DER), the CSR, certificate checks, the server-reply readers, and the
 * port-80 routing and host policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acme/acme_http.h"
#include "codec/acme_msg.h"
#include "tls/pki.h"

/* A fixed P-256 key; its JWK and thumbprint below were computed
 * independently (openssl ec -text and Python hashlib). */
static const char fixed_key[] = "-----BEGIN PRIVATE KEY-----\n"
                                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5EUwEwUIULa5V8Tp\n"
                                "xXLN+Rgi7fESm9ptcW5JYOpNA46hRANCAATicdTcIyQ/cdnaLawOyVx5rXfMY2Qb\n"
                                "nV0sKbr4hC9vHKR/BGPOAxAgU8x9rFJqI9Ytnv+QmYBcsQ8PdV5+40cu\n"
                                "-----END PRIVATE KEY-----\n";
static const char fixed_jwk[] = "{\"crv\":\"P-256\",\"kty\":\"EC\","
                                "\"x\":\"4nHU3CMkP3HZ2i2sDslcea13zGNkG51dLCm6-IQvbxw\","
                                "\"y\":\"pH8EY84DECBTzH2sUmoj1i2e_5CZgFyxDw91Xn7jRy4\"}";
static const char fixed_thumbprint[] = "-o34mYbVyJVIwjvmZE6vZunHY8rDmQAi6Hi-IxOVTLM";

static EVP_PKEY *load_fixed(void)
{
    EVP_PKEY *k = pki_key_from_pem(fixed_key, strlen(fixed_key));
    assert_non_null(k);
    return k;
}

static void test_b64url_vectors(void **state)
{
    static const struct {
        const char *in, *out;
    } rows[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}};
    char out[64];
    unsigned char back[64];
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t n = strlen(rows[i].in);
        assert_int_equal(pki_b64url(out, sizeof out, rows[i].in, n), (long)strlen(rows[i].out));
        assert_string_equal(out, rows[i].out);
        assert_int_equal(pki_b64url_decode(back, sizeof back, out, strlen(out)), (long)n);
        assert_memory_equal(back, rows[i].in, n);
    }
    assert_int_equal(pki_b64url(out, 4, "foo", 3), -1); /* no room for the NUL */
    assert_int_equal(pki_b64url_decode(back, sizeof back, "Zm9v=", 5), -1);
    assert_int_equal(pki_b64url_decode(back, sizeof back, "Z", 1), -1);
    assert_int_equal(pki_b64url_decode(back, sizeof back, "Zh", 2), -1); /* stray bits */
    assert_int_equal(pki_b64url_decode(back, sizeof back, "Zm+v", 4), -1);
    assert_int_equal(pki_b64url_decode(back, 2, "Zm9v", 4), -1);
}

static void test_key_pem_round_trip_and_refusals(void **state)
{
    (void)state;
    EVP_PKEY *k = pki_key_generate();
    assert_non_null(k);
    size_t len = 0;
    char *pem = pki_key_to_pem(k, &len);
    assert_non_null(pem);
    assert_int_equal(len, strlen(pem));
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    EVP_PKEY *k2 = pki_key_from_pem(pem, len);
    assert_non_null(k2);
    assert_int_equal(EVP_PKEY_eq(k, k2), 1);
    free(pem);
    pki_key_free(k2);
    pki_key_free(k);
    assert_null(pki_key_from_pem("not a key", 9));
    /* an RSA key is refused: only P-256 */
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, rsa, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    assert_null(pki_key_from_pem(data, (size_t)n));
    BIO_free(b);
    EVP_PKEY_free(rsa);
}

static void test_jwk_and_thumbprint_fixed_vector(void **state)
{
    char out[256];
    (void)state;
    EVP_PKEY *k = load_fixed();
    assert_int_equal(pki_jwk(k, out, sizeof out), (long)strlen(fixed_jwk));
    assert_string_equal(out, fixed_jwk);
    assert_int_equal(pki_jwk_thumbprint(k, out, sizeof out), 43);
    assert_string_equal(out, fixed_thumbprint);
    assert_int_equal(pki_jwk(k, out, 10), -1);
    pki_key_free(k);
}

/* Decodes one base64url member of the flattened JWS. */
static size_t member(json_t *jws, const char *name, unsigned char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(jws, name));
    assert_non_null(s);
    long n = pki_b64url_decode(out, cap, s, strlen(s));
    assert_true(n >= 0);
    return (size_t)n;
}

static void verify_es256(EVP_PKEY *k, json_t *jws)
{
    unsigned char sig[128];
    assert_int_equal(member(jws, "signature", sig, sizeof sig), 64);
    const char *prot = json_string_value(json_object_get(jws, "protected"));
    const char *payload = json_string_value(json_object_get(jws, "payload"));
    size_t n = strlen(prot) + strlen(payload) + 2;
    char *input = malloc(n);
    snprintf(input, n, "%s.%s", prot, payload);
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    unsigned char *der = NULL;
    int derlen = i2d_ECDSA_SIG(es, &der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_equal(EVP_DigestVerify(ctx, der, (size_t)derlen, (unsigned char *)input, n - 1), 1);
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    free(input);
}

static void test_jws_with_jwk_then_kid(void **state)
{
    unsigned char buf[1024];
    json_error_t je;
    (void)state;
    EVP_PKEY *k = load_fixed();
    char *text = pki_jws(k, NULL, "n0nce", "https://ca.test/new-acct", "{\"a\":1}", 7);
    assert_non_null(text);
    json_t *jws = json_loads(text, 0, &je);
    assert_non_null(jws);
    assert_int_equal(json_object_size(jws), 3);
    size_t n = member(jws, "protected", buf, sizeof buf);
    json_t *hdr = json_loadb((char *)buf, n, 0, &je);
    assert_non_null(hdr);
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(hdr, "nonce")), "n0nce");
    assert_string_equal(json_string_value(json_object_get(hdr, "url")), "https://ca.test/new-acct");
    assert_null(json_object_get(hdr, "kid"));
    char *jwk = json_dumps(json_object_get(hdr, "jwk"), JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(jwk, fixed_jwk);
    free(jwk);
    json_decref(hdr);
    n = member(jws, "payload", buf, sizeof buf);
    assert_int_equal(n, 7);
    assert_memory_equal(buf, "{\"a\":1}", 7);
    verify_es256(k, jws);
    json_decref(jws);
    free(text);

    /* kid form, POST-as-GET (empty payload) */
    text = pki_jws(k, "https://ca.test/acct/1", "n2", "https://ca.test/order/1", "", 0);
    jws = json_loads(text, 0, &je);
    n = member(jws, "protected", buf, sizeof buf);
    hdr = json_loadb((char *)buf, n, 0, &je);
    assert_string_equal(json_string_value(json_object_get(hdr, "kid")), "https://ca.test/acct/1");
    assert_null(json_object_get(hdr, "jwk"));
    assert_string_equal(json_string_value(json_object_get(jws, "payload")), "");
    verify_es256(k, jws);
    json_decref(hdr);
    json_decref(jws);
    free(text);
    /* a nonce that is not UTF-8 cannot be signed */
    assert_null(pki_jws(k, NULL, "\xff", "https://ca.test/", "", 0));
    pki_key_free(k);
}

static void test_csr_names_domain(void **state)
{
    unsigned char der[2048];
    (void)state;
    EVP_PKEY *k = pki_key_generate();
    char *csr = pki_csr_b64url(k, "relay.example.com");
    assert_non_null(csr);
    long n = pki_b64url_decode(der, sizeof der, csr, strlen(csr));
    assert_true(n > 0);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, n);
    assert_non_null(req);
    assert_int_equal(X509_REQ_verify(req, k), 1);
    char cn[256];
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "relay.example.com");
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *names = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    assert_non_null(names);
    assert_int_equal(sk_GENERAL_NAME_num(names), 1);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(names, 0);
    assert_int_equal(g->type, GEN_DNS);
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.dNSName), "relay.example.com");
    GENERAL_NAMES_free(names);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(csr);
    pki_key_free(k);
}

/* A self-signed certificate for name, valid from now-60 for secs. */
static char *make_cert(EVP_PKEY *k, const char *name, long secs)
{
    X509 *x = X509_new();
    char san[300];
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), secs);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    snprintf(san, sizeof san, "DNS:%s", name);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_set_pubkey(x, k);
    X509_sign(x, k, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(b);
    X509_free(x);
    return out;
}

static void test_cert_check(void **state)
{
    char err[256];
    int64_t not_after = 0;
    size_t klen, k2len;
    (void)state;
    EVP_PKEY *k = pki_key_generate(), *k2 = pki_key_generate();
    char *kpem = pki_key_to_pem(k, &klen), *k2pem = pki_key_to_pem(k2, &k2len);
    char *good = make_cert(k, "relay.test", 3600);
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(pki_cert_check(good, strlen(good), kpem, klen, "relay.test", now, &not_after,
                                    err, sizeof err),
                     0);
    assert_true(not_after >= now + 3590 && not_after <= now + 3610);
    /* other domain, suffix trick, wrong key, expired, garbage */
    assert_int_equal(pki_cert_check(good, strlen(good), kpem, klen, "other.test", now, &not_after,
                                    err, sizeof err),
                     -1);
    assert_string_equal(err, "the certificate is not valid for other.test");
    assert_int_equal(pki_cert_check(good, strlen(good), k2pem, k2len, "relay.test", now, &not_after,
                                    err, sizeof err),
                     -1);
    assert_string_equal(err, "the certificate does not match the private key");
    assert_int_equal(pki_cert_check(good, strlen(good), kpem, klen, "relay.test", now + 7200,
                                    &not_after, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "the certificate expired at "));
    assert_int_equal(
        pki_cert_check("junk", 4, kpem, klen, "relay.test", now, &not_after, err, sizeof err), -1);
    assert_string_equal(err, "no PEM certificate in the chain");
    assert_int_equal(pki_cert_check(good, strlen(good), "junk", 4, "relay.test", now, &not_after,
                                    err, sizeof err),
                     -1);
    char *evil = make_cert(k, "relay.test.evil.test", 3600);
    assert_int_equal(pki_cert_check(evil, strlen(evil), kpem, klen, "relay.test", now, &not_after,
                                    err, sizeof err),
                     -1);
    free(evil);
    free(good);
    free(kpem);
    free(k2pem);
    pki_key_free(k);
    pki_key_free(k2);
}

static void test_time_format(void **state)
{
    char out[32];
    (void)state;
    pki_time_format(out, sizeof out, 1779616800);
    assert_string_equal(out, "2026-05-24T10:00:00Z");
}

/* ---- server replies ----------------------------------------------------- */

static void test_directory(void **state)
{
    struct acme_dir d;
    char err[128];
    (void)state;
    const char *ok = "{\"newNonce\":\"https://ca/n\",\"newAccount\":\"https://ca/a\","
                     "\"newOrder\":\"https://ca/o\",\"meta\":{\"termsOfService\":\"x\"}}";
    assert_int_equal(acme_msg_directory(ok, strlen(ok), &d, err, sizeof err), 0);
    assert_string_equal(d.new_nonce, "https://ca/n");
    assert_string_equal(d.new_account, "https://ca/a");
    assert_string_equal(d.new_order, "https://ca/o");
    acme_dir_free(&d);
    static const char *const bad[] = {"",
                                      "[]",
                                      "{",
                                      "{\"newNonce\":1}",
                                      "{\"newNonce\":\"a\",\"newAccount\":\"b\"}",
                                      "{\"newNonce\":\"a\",\"newAccount\":\"b\",\"newOrder\":\"\"}",
                                      "{\"newNonce\":\"a\",\"newNonce\":\"a\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(acme_msg_directory(bad[i], strlen(bad[i]), &d, err, sizeof err), -1);
}

static void test_order(void **state)
{
    struct acme_order o;
    char err[128];
    (void)state;
    const char *ok = "{\"status\":\"valid\",\"finalize\":\"https://ca/f\",\"certificate\":"
                     "\"https://ca/c\",\"authorizations\":[\"https://ca/z1\",\"https://ca/z2\"],"
                     "\"identifiers\":[{\"type\":\"dns\",\"value\":\"relay.test\"}]}";
    assert_int_equal(acme_msg_order(ok, strlen(ok), &o, err, sizeof err), 0);
    assert_string_equal(o.status, "valid");
    assert_string_equal(o.finalize, "https://ca/f");
    assert_string_equal(o.certificate, "https://ca/c");
    assert_int_equal(o.nauthz, 2);
    assert_string_equal(o.authz[1], "https://ca/z2");
    assert_null(o.error);
    acme_order_free(&o);
    const char *invalid = "{\"status\":\"invalid\",\"finalize\":\"f\",\"authorizations\":[],"
                          "\"error\":{\"type\":\"urn:x\",\"detail\":\"no\"}}";
    assert_int_equal(acme_msg_order(invalid, strlen(invalid), &o, err, sizeof err), 0);
    assert_string_equal(o.error, "urn:x: no");
    assert_null(o.certificate);
    acme_order_free(&o);
    static const char *const bad[] = {
        "{\"status\":\"pending\",\"finalize\":\"f\"}",
        "{\"status\":\"pending\",\"finalize\":\"f\",\"authorizations\":[1]}",
        ("{\"status\":\"pending\",\"finalize\":\"f\",\"authorizations\":"
         "[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}"),
        "{\"finalize\":\"f\",\"authorizations\":[]}", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(acme_msg_order(bad[i], strlen(bad[i]), &o, err, sizeof err), -1);
}

static void test_authz(void **state)
{
    struct acme_authz a;
    char err[128];
    (void)state;
    const char *ok = "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":"
                     "\"relay.test\"},\"challenges\":[{\"type\":\"tls-alpn-01\",\"url\":\"u1\","
                     "\"token\":\"t1\",\"status\":\"pending\"},{\"type\":\"http-01\",\"url\":"
                     "\"https://ca/ch\",\"token\":\"Tok_en-1\",\"status\":\"pending\"}]}";
    assert_int_equal(acme_msg_authz(ok, strlen(ok), &a, err, sizeof err), 0);
    assert_string_equal(a.status, "pending");
    assert_string_equal(a.identifier, "relay.test");
    assert_string_equal(a.chall_url, "https://ca/ch");
    assert_string_equal(a.chall_token, "Tok_en-1");
    assert_string_equal(a.chall_status, "pending");
    acme_authz_free(&a);
    const char *no_http = "{\"status\":\"valid\",\"identifier\":{\"type\":\"dns\",\"value\":"
                          "\"relay.test\"},\"challenges\":[]}";
    assert_int_equal(acme_msg_authz(no_http, strlen(no_http), &a, err, sizeof err), 0);
    assert_null(a.chall_url);
    acme_authz_free(&a);
    const char *failed = "{\"status\":\"invalid\",\"identifier\":{\"type\":\"dns\",\"value\":"
                         "\"relay.test\"},\"challenges\":[{\"type\":\"http-01\",\"url\":\"u\","
                         "\"token\":\"t\",\"status\":\"invalid\",\"error\":{\"type\":"
                         "\"urn:ietf:params:acme:error:connection\",\"detail\":\"refused\"}}]}";
    assert_int_equal(acme_msg_authz(failed, strlen(failed), &a, err, sizeof err), 0);
    assert_string_equal(a.error, "urn:ietf:params:acme:error:connection: refused");
    acme_authz_free(&a);
    static const char *const bad[] = {
        /* token with a path separator, ip identifier, missing pieces */
        "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"r\"},"
        "\"challenges\":[{\"type\":\"http-01\",\"url\":\"u\",\"token\":\"../"
        "x\",\"status\":\"p\"}]}",
        "{\"status\":\"pending\",\"identifier\":{\"type\":\"ip\",\"value\":\"1.2.3.4\"},"
        "\"challenges\":[]}",
        "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"r\"}}",
        "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"r\"},"
        "\"challenges\":[{\"type\":\"http-01\",\"token\":\"t\",\"status\":\"p\"}]}",
        "{\"identifier\":{\"type\":\"dns\",\"value\":\"r\"},\"challenges\":[]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(acme_msg_authz(bad[i], strlen(bad[i]), &a, err, sizeof err), -1);
}

static void test_problem_and_token(void **state)
{
    char type[64], detail[64];
    (void)state;
    const char *p = "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"stale\"}";
    assert_int_equal(acme_msg_problem(p, strlen(p), type, sizeof type, detail, sizeof detail), 0);
    assert_string_equal(type, "urn:ietf:params:acme:error:badNonce");
    assert_string_equal(detail, "stale");
    assert_int_equal(acme_msg_problem("{}", 2, type, sizeof type, detail, sizeof detail), -1);
    assert_int_equal(acme_msg_problem("<html>", 6, type, sizeof type, detail, sizeof detail), -1);
    assert_true(acme_msg_token_ok("abc-_XYZ019", 11));
    assert_false(acme_msg_token_ok("", 0));
    assert_false(acme_msg_token_ok("a/b", 3));
    assert_false(acme_msg_token_ok("a.b", 3));
    assert_false(acme_msg_token_ok("a%2f", 4));
}

/* ---- port 80 ------------------------------------------------------------ */

static void test_host_policy(void **state)
{
    (void)state;
    static const struct {
        const char *host;
        bool ok;
    } rows[] = {{"relay.test", true},      {"RELAY.Test", true},  {"relay.test:80", true},
                {"relay.test:8080", true}, {"other.test", false}, {"relay.test.evil.test", false},
                {"evilrelay.test", false}, {"", false},           {"relay.test:80:80", false},
                {"[relay.test]:80", true}, {"relay.tes", false},  {"relay.test.", false}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(acme_http_host_matches(rows[i].host, strlen(rows[i].host), "relay.test"),
                         rows[i].ok);
}

static void test_route(void **state)
{
    const char *tok = NULL;
    size_t tlen = 0;
    (void)state;
#define ROUTE(p, h) acme_http_route(p, strlen(p), h, strlen(h), "relay.test", &tok, &tlen)
    assert_int_equal(ROUTE("/.well-known/acme-challenge/abc", "relay.test"), ACME_ROUTE_TOKEN);
    assert_int_equal(tlen, 3);
    assert_memory_equal(tok, "abc", 3);
    assert_int_equal(ROUTE("/.well-known/acme-challenge/", "relay.test"), ACME_ROUTE_TOKEN);
    assert_int_equal(tlen, 0);
    assert_int_equal(ROUTE("/.well-known/acme-challenge/abc", "other.test"), ACME_ROUTE_FORBIDDEN);
    assert_int_equal(
        acme_http_route("/.well-known/acme-challenge/abc", 31, NULL, 0, "relay.test", &tok, &tlen),
        ACME_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("/.well-known/acme-challenge", "relay.test"), ACME_ROUTE_NOT_FOUND);
    assert_int_equal(ROUTE("/", "other.test"), ACME_ROUTE_NOT_FOUND);
    assert_int_equal(ROUTE("/healthz", "relay.test"), ACME_ROUTE_NOT_FOUND);
    assert_int_equal(ROUTE("/.WELL-KNOWN/acme-challenge/abc", "relay.test"), ACME_ROUTE_NOT_FOUND);
#undef ROUTE
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_vectors),
        cmocka_unit_test(test_key_pem_round_trip_and_refusals),
        cmocka_unit_test(test_jwk_and_thumbprint_fixed_vector),
        cmocka_unit_test(test_jws_with_jwk_then_kid),
        cmocka_unit_test(test_csr_names_domain),
        cmocka_unit_test(test_cert_check),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_authz),
        cmocka_unit_test(test_problem_and_token),
        cmocka_unit_test(test_host_policy),
        cmocka_unit_test(test_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
