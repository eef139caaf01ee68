/* pki.h — the cryptography the ACME client needs, on OpenSSL 3: base64url,
 * ECDSA P-256 keys (generate, PEM in and out), the JWK and its RFC 7638
 * thumbprint, ES256 JWS in the flattened JSON serialization (RFC 7515,
 * RFC 8555 §6.2), the certificate signing request, and the checks a
 * downloaded or cached certificate must pass. Pure: no files, no network.
 * Private keys never leave this module except as PEM for the cache.
 * Pure: any thread (the ACME job calls it on libuv's thread pool). */
#ifndef RELAY_PKI_H
#define RELAY_PKI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct evp_pkey_st EVP_PKEY;

/* Writes data as unpadded base64url plus a NUL into out. Returns the text
 * length, or -1 when cap is too small. */
long pki_b64url(char *out, size_t cap, const void *data, size_t len);

/* Decodes unpadded base64url into out. Returns the byte count, or -1 on a
 * character outside the alphabet, bad length or too small a buffer. */
long pki_b64url_decode(void *out, size_t cap, const char *s, size_t len);

/* A new ECDSA P-256 key, or NULL. Free with pki_key_free. */
EVP_PKEY *pki_key_generate(void);

/* Parses a PEM private key; only P-256 EC keys are accepted. Returns the
 * key or NULL. */
EVP_PKEY *pki_key_from_pem(const char *pem, size_t len);

/* The key as PKCS#8 PEM in a malloc'd buffer (*len bytes, NUL-terminated),
 * or NULL. The caller frees it (and should wipe it: OPENSSL_cleanse). */
char *pki_key_to_pem(EVP_PKEY *key, size_t *len);

void pki_key_free(EVP_PKEY *key);

/* The public JWK in RFC 7638 member order:
 * {"crv":"P-256","kty":"EC","x":"…","y":"…"}. Returns its length or -1. */
long pki_jwk(EVP_PKEY *key, char *out, size_t cap);

/* base64url(SHA-256(JWK)) — the account thumbprint of RFC 8555 §8.1.
 * Returns its length (43) or -1. */
long pki_jwk_thumbprint(EVP_PKEY *key, char *out, size_t cap);

/* The JWS for an ACME POST: protected header {"alg":"ES256", "jwk" (when
 * kid is NULL) or "kid", "nonce", "url"}, payload as given (empty for a
 * POST-as-GET), ES256 signature as 64 raw bytes r||s. Returns a malloc'd
 * NUL-terminated JSON object, or NULL. */
char *pki_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
              const char *payload, size_t payload_len);

/* A DER certificate request for domain (subject CN and one DNS SAN),
 * signed with key (SHA-256), returned base64url-encoded (malloc'd), or
 * NULL. */
char *pki_csr_b64url(EVP_PKEY *key, const char *domain);

/* Checks a PEM chain and key for domain: at least one certificate, the
 * first (leaf) names domain (X509_check_host), matches the key, and has
 * not expired at now (unix seconds). Returns 0 and the leaf's notAfter in
 * *not_after, or -1 with a reason in err. */
int pki_cert_check(const char *chain, size_t chain_len, const char *key_pem, size_t key_len,
                   const char *domain, int64_t now, int64_t *not_after, char *err, size_t err_cap);

/* Formats unix seconds as RFC 3339 UTC ("2026-05-24T10:00:00Z"). */
void pki_time_format(char *out, size_t cap, int64_t t);

#endif
