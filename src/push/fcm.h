/* fcm.h — the pure half of FCM push (docs/features/push.md): service-account credential
 * parsing, the RS256 JWT of the OAuth2 bearer grant, the token reply, the
 * wake object, the FCM send body and the reading of FCM's replies. Bytes in,
 * results out: no I/O, no clock (callers pass the time), no logging. No
 * error text produced here ever contains any part of a secret input.
 * Pure: any thread. */
#ifndef RELAY_FCM_H
#define RELAY_FCM_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FCM_ERR_CREDENTIALS   "relay: fcm credentials are not a service-account JSON key"
#define FCM_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define FCM_SCOPE             "https://www.googleapis.com/auth/firebase.messaging"
#define FCM_GRANT_TYPE        "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define FCM_REPLY_MAX         4096 /* reply bytes read, token and send alike */
#define FCM_MESSAGE_ID_MAX    256
#define FCM_REASON_MAX        64
#define FCM_ERR_MAX           256

/* A parsed service-account key. Every string is NUL-terminated and owned. */
struct fcm_creds {
    char *client_email;
    char *key_id;    /* private_key_id, or NULL when absent (no JWT kid) */
    char *token_uri; /* token_uri, or FCM_DEFAULT_TOKEN_URI */
    EVP_PKEY *key;   /* RSA private key */
};

/* Parses a whole service-account JSON key (docs/features/push.md): a JSON object with
 * type "service_account", a non-empty client_email and an RSA private_key
 * (PEM wrapper optional, then PKCS#8, then PKCS#1; EC and anything else
 * refused). Returns 0 and fills out (free with fcm_creds_free), or -1 with
 * out zeroed; the only error text is FCM_ERR_CREDENTIALS. */
int fcm_creds_parse(const char *json, size_t len, struct fcm_creds *out);

/* Frees what fcm_creds_parse allocated; c is zeroed. Safe on a zeroed c. */
void fcm_creds_free(struct fcm_creds *c);

/* Builds the signed RS256 JWT assertion for the token request at wall time
 * now_s (Unix seconds): header {"alg":"RS256","typ":"JWT"[,"kid":…]},
 * claims iss, scope, aud = token_uri, exp = iat + 3600, iat = now_s - 10.
 * Returns a malloc'd NUL-terminated string, or NULL if signing failed. */
char *fcm_jwt(const struct fcm_creds *c, int64_t now_s);

/* The form body of the token request:
 * grant_type=<FCM_GRANT_TYPE, form-encoded>&assertion=<jwt>. malloc'd. */
char *fcm_token_form(const char *jwt);

/* Reads a token endpoint's 2xx reply. Returns 0 with *access_token
 * (malloc'd) and *expires_in (seconds; 0 when absent), or -1 when the body
 * is not a JSON object with a usable access_token (non-empty, printable
 * ASCII, so it can go in a header). */
int fcm_token_reply(const char *body, size_t len, char **access_token, int64_t *expires_in);

enum fcm_wake {
    FCM_WAKE_OK,
    FCM_WAKE_MALFORMED,   /* not {platform:string, token:string} */
    FCM_WAKE_PLATFORM,    /* platform is not exactly "fcm" */
    FCM_WAKE_EMPTY_TOKEN, /* token is "" */
};

/* Decodes a push_wake value (raw JSON bytes) with Go encoding/json rules for
 * a {platform, token} struct: keys matched case-insensitively, last
 * duplicate wins, unknown keys ignored, null leaves a field empty. On
 * FCM_WAKE_OK *token (malloc'd, may contain NUL bytes) and *token_len are
 * set; otherwise *token is NULL. */
enum fcm_wake fcm_wake_parse(const uint8_t *raw, size_t len, char **token, size_t *token_len);

/* The admission error (docs/features/push.md) for a failed parse ("relay: malformed push_wake",
 * "relay: push_wake platform not supported", "relay: push_wake token is
 * empty"); NULL for FCM_WAKE_OK. */
const char *fcm_wake_error(enum fcm_wake w);

/* The FCM v1 send body, exactly
 * {"message":{"token":"<token>","android":{"priority":"HIGH"}}} with the
 * token JSON-escaped. malloc'd; *out_len receives its length. */
char *fcm_send_body(const char *token, size_t token_len, size_t *out_len);

/* True when s[0..n) is a message id worth logging: 1–256 chars of
 * [A-Za-z0-9/:%_-]. */
bool fcm_message_id_valid(const char *s, size_t n);

enum fcm_outcome { FCM_SENT, FCM_UNREGISTERED, FCM_FAILED };

struct fcm_reply {
    enum fcm_outcome outcome;
    char message_id[FCM_MESSAGE_ID_MAX + 1]; /* "" when none or not valid */
    char err[FCM_ERR_MAX];                   /* "" on FCM_SENT */
};

/* Classifies an FCM send reply: status is the HTTP status, body the first
 * (at most FCM_REPLY_MAX) bytes of the reply. 2xx → FCM_SENT with the
 * valid `name` as message id; otherwise "relay: fcm send failed: status N"
 * plus " (REASONS)" when error.status and/or the FcmError errorCode are
 * present and well-formed; errorCode UNREGISTERED → FCM_UNREGISTERED. */
void fcm_send_reply(long status, const char *body, size_t len, struct fcm_reply *out);

/* token_fp: the first 8 lowercase hex chars of SHA-256(token), in out[9]. */
void fcm_token_fp(const char *token, size_t len, char out[9]);

#endif
