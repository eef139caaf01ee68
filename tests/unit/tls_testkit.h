/* tls_testkit.h — shared by test_tls.c and test_transport.c: a
 * self-signed P-256 identity for "relay.test" made with OpenSSL at test
 * time (nothing secret is committed), as objects and as PEM text. Include
 * after <cmocka.h>. */
#ifndef TLS_TESTKIT_H
#define TLS_TESTKIT_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

struct ident {
    EVP_PKEY *key;
    X509 *cert;
    char *cert_pem, *key_pem;
    size_t cert_len, key_len;
};

__attribute__((unused)) static char *to_pem(BIO *b, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

__attribute__((unused)) static void ident_make(struct ident *id, long serial)
{
    id->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(id->key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, id->key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"relay.test", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, id->key, EVP_sha256()) > 0);
    id->cert = x;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    id->cert_pem = to_pem(b, &id->cert_len);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, id->key, NULL, NULL, 0, NULL, NULL);
    id->key_pem = to_pem(b, &id->key_len);
}

__attribute__((unused)) static void ident_free(struct ident *id)
{
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
    free(id->cert_pem);
    free(id->key_pem);
}

#endif
