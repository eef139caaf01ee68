/* fcm_testkit.h — shared by test_fcm.c and test_push.c: fresh keys made
 * with OpenSSL at test time (nothing secret is committed), service-account
 * JSON around them, and JWT checking (split, base64url, RS256 verify). */
#ifndef FCM_TESTKIT_H
#define FCM_TESTKIT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TK_UNUSED __attribute__((unused))

/* "pkcs8" / "pkcs1" RSA, "ec8" / "sec1" P-256: PEM text, malloc'd. */
TK_UNUSED static char *tk_key_pem(EVP_PKEY *key, const char *form)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (strcmp(form, "pkcs8") == 0 || strcmp(form, "ec8") == 0)
        PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
    else
        PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

/* A service-account JSON document; NULL members are left out. malloc'd. */
TK_UNUSED static char *tk_creds_json(const char *type, const char *email, const char *pem,
                                     const char *kid, const char *token_uri)
{
    json_t *o = json_object();
    if (type)
        json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "project_id", json_string("pyrycode-mobile"));
    if (kid)
        json_object_set_new(o, "private_key_id", json_string(kid));
    if (pem)
        json_object_set_new(o, "private_key", json_string(pem));
    if (email)
        json_object_set_new(o, "client_email", json_string(email));
    if (token_uri)
        json_object_set_new(o, "token_uri", json_string(token_uri));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

TK_UNUSED static size_t tk_b64url_decode(const char *in, size_t n, unsigned char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-'             ? 62
                : c == '_'             ? 63
                                       : -1;
        if (v < 0)
            return (size_t)-1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* Splits jwt, checks the RS256 signature with key and returns the decoded
 * header and claims (malloc'd, NUL-terminated) or false. */
TK_UNUSED static bool tk_jwt_verify(const char *jwt, EVP_PKEY *key, char **header, char **claims)
{
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2 || strchr(d2 + 1, '.') || strchr(jwt, '='))
        return false;
    size_t n = strlen(jwt);
    unsigned char *buf = malloc(n + 1);
    size_t hl = tk_b64url_decode(jwt, (size_t)(d1 - jwt), buf);
    *header = strndup((char *)buf, hl);
    size_t cl = tk_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf);
    *claims = strndup((char *)buf, cl);
    size_t sl = tk_b64url_decode(d2 + 1, strlen(d2 + 1), buf);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestVerify(md, buf, sl, (const unsigned char *)jwt, (size_t)(d2 - jwt)) == 1;
    EVP_MD_CTX_free(md);
    free(buf);
    return ok;
}

#endif
