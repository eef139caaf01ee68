/* pki.c — ES256 JWS, JWK thumbprints, P-256 keys, CSRs and certificate
 * checks for the ACME client, on OpenSSL 3's EVP interface. Signatures
 * come out of OpenSSL as DER and are converted to the fixed 64-byte r||s
 * form JWS requires. It holds no state and does no I/O. */
#include "tls/pki.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/util.h"

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

long pki_b64url(char *out, size_t cap, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    if (cap < need + 1)
        return -1;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return (long)o;
}

/* pki_b64url into a malloc'd string (caller frees). */
static char *b64url_alloc(const void *data, size_t len)
{
    size_t cap = len / 3 * 4 + 5;
    char *out = xmalloc(cap);
    pki_b64url(out, cap, data, len);
    return out;
}

long pki_b64url_decode(void *out, size_t cap, const char *s, size_t len)
{
    unsigned char *o = out;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_digit(s[i], true);
        if (v < 0)
            return -1;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return -1;
            o[n++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1; /* non-canonical trailing bits */
    return (long)n;
}

EVP_PKEY *pki_key_generate(void)
{
    return EVP_EC_gen("P-256");
}

static bool is_p256(EVP_PKEY *key)
{
    char group[64];
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
        return false;
    if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL))
        return false;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* Never prompt for a passphrase: an encrypted key is simply refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

EVP_PKEY *pki_key_from_pem(const char *pem, size_t len)
{
    if (len > INT32_MAX)
        return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (key && !is_p256(key)) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

char *pki_key_to_pem(EVP_PKEY *key, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL, *data;
    if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        long n = BIO_get_mem_data(bio, &data);
        out = xmalloc((size_t)n + 1);
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        *len = (size_t)n;
    }
    BIO_free(bio); /* BIO_s_mem frees (but does not wipe) its buffer */
    return out;
}

void pki_key_free(EVP_PKEY *key)
{
    EVP_PKEY_free(key);
}

/* The public point's coordinates, base64url of 32 bytes each. */
static int jwk_coords(EVP_PKEY *key, char x[64], char y[64])
{
    BIGNUM *bx = NULL, *by = NULL;
    unsigned char bin[32];
    int rc = -1;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &bx) &&
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &by) &&
        BN_bn2binpad(bx, bin, 32) == 32 && pki_b64url(x, 64, bin, 32) == 43 &&
        BN_bn2binpad(by, bin, 32) == 32 && pki_b64url(y, 64, bin, 32) == 43)
        rc = 0;
    BN_free(bx);
    BN_free(by);
    return rc;
}

long pki_jwk(EVP_PKEY *key, char *out, size_t cap)
{
    char x[64], y[64];
    if (jwk_coords(key, x, y) != 0)
        return -1;
    int n =
        snprintf(out, cap, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

long pki_jwk_thumbprint(EVP_PKEY *key, char *out, size_t cap)
{
    char jwk[256];
    unsigned char md[32];
    unsigned int mdlen = 0;
    long n = pki_jwk(key, jwk, sizeof jwk);
    if (n < 0 || !EVP_Digest(jwk, (size_t)n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -1;
    return pki_b64url(out, cap, md, 32);
}

/* ES256 over data: OpenSSL's DER ECDSA-Sig-Value converted to r||s. */
static int es256_sign(EVP_PKEY *key, const char *data, size_t len, unsigned char out[64])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char der[128];
    size_t derlen = sizeof der;
    int rc = -1;
    if (ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(ctx, der, &derlen, (const unsigned char *)data, len) == 1) {
        const unsigned char *p = der;
        ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
        const BIGNUM *r, *s;
        if (sig) {
            ECDSA_SIG_get0(sig, &r, &s);
            if (BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32)
                rc = 0;
            ECDSA_SIG_free(sig);
        }
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}

char *pki_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
              const char *payload, size_t payload_len)
{
    char x[64], y[64];
    json_t *hdr = json_object();
    json_object_set_new(hdr, "alg", json_string("ES256"));
    if (kid) {
        json_object_set_new(hdr, "kid", json_string(kid));
    } else {
        if (jwk_coords(key, x, y) != 0) {
            json_decref(hdr);
            return NULL;
        }
        json_object_set_new(
            hdr, "jwk",
            json_pack("{s:s,s:s,s:s,s:s}", "crv", "P-256", "kty", "EC", "x", x, "y", y));
    }
    /* json_string refuses text that is not UTF-8; such a header is not signed */
    json_t *jn = json_string(nonce), *ju = json_string(url);
    bool ok = jn && ju && (!kid || json_object_get(hdr, "kid"));
    json_object_set_new(hdr, "nonce", jn);
    json_object_set_new(hdr, "url", ju);
    char *hdr_text = ok ? json_dumps(hdr, JSON_COMPACT) : NULL;
    json_decref(hdr);
    if (!hdr_text)
        return NULL;
    char *prot = b64url_alloc(hdr_text, strlen(hdr_text));
    free(hdr_text);
    char *body = b64url_alloc(payload, payload_len);
    size_t plen = strlen(prot), blen = strlen(body);
    char *signing = xmalloc(plen + blen + 2);
    memcpy(signing, prot, plen);
    signing[plen] = '.';
    memcpy(signing + plen + 1, body, blen + 1);
    unsigned char sig[64];
    char sig64[96];
    char *out = NULL;
    if (es256_sign(key, signing, plen + 1 + blen, sig) == 0) {
        pki_b64url(sig64, sizeof sig64, sig, sizeof sig);
        size_t cap = plen + blen + strlen(sig64) + 64;
        out = xmalloc(cap);
        snprintf(out, cap, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", prot,
                 body, sig64);
    }
    free(signing);
    free(prot);
    free(body);
    return out;
}

char *pki_csr_b64url(EVP_PKEY *key, const char *domain)
{
    char san[300];
    char *out = NULL;
    unsigned char *der = NULL;
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *ext = NULL;
    if ((size_t)snprintf(san, sizeof san, "DNS:%s", domain) >= sizeof san)
        goto done;
    if (!req || !exts || !X509_REQ_set_version(req, 0) ||
        !X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_ASC,
                                    (const unsigned char *)domain, -1, -1, 0))
        goto done;
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (!ext || !sk_X509_EXTENSION_push(exts, ext))
        goto done;
    ext = NULL; /* owned by exts */
    if (!X509_REQ_add_extensions(req, exts) || !X509_REQ_set_pubkey(req, key) ||
        X509_REQ_sign(req, key, EVP_sha256()) <= 0)
        goto done;
    int n = i2d_X509_REQ(req, &der);
    if (n > 0)
        out = b64url_alloc(der, (size_t)n);
done:
    OPENSSL_free(der);
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    ERR_clear_error();
    return out;
}

void pki_time_format(char *out, size_t cap, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int pki_cert_check(const char *chain, size_t chain_len, const char *key_pem, size_t key_len,
                   const char *domain, int64_t now, int64_t *not_after, char *err, size_t err_cap)
{
    int rc = -1;
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;
    struct tm tm;
    if (chain_len > INT32_MAX || !(bio = BIO_new_mem_buf(chain, (int)chain_len)) ||
        !(leaf = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL))) {
        snprintf(err, err_cap, "no PEM certificate in the chain");
        goto done;
    }
    if (!(key = pki_key_from_pem(key_pem, key_len))) {
        snprintf(err, err_cap, "the private key is not a PEM ECDSA P-256 key");
        goto done;
    }
    if (X509_check_host(leaf, domain, strlen(domain), X509_CHECK_FLAG_NO_WILDCARDS, NULL) != 1) {
        snprintf(err, err_cap, "the certificate is not valid for %s", domain);
        goto done;
    }
    if (X509_check_private_key(leaf, key) != 1) {
        snprintf(err, err_cap, "the certificate does not match the private key");
        goto done;
    }
    if (!ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm)) {
        snprintf(err, err_cap, "the certificate has an unreadable notAfter");
        goto done;
    }
    *not_after = (int64_t)timegm(&tm);
    if (*not_after <= now) {
        char when[32];
        pki_time_format(when, sizeof when, *not_after);
        snprintf(err, err_cap, "the certificate expired at %s", when);
        goto done;
    }
    rc = 0;
done:
    X509_free(leaf);
    EVP_PKEY_free(key);
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}
