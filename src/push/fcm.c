/* fcm.c — everything about FCM push that is a pure function of its inputs:
 * the service-account key (jansson + OpenSSL's DER decoders, never a
 * password prompt), the RS256 assertion, the token reply, the wake object
 * (a small walker over already-valid JSON with Go's decoding rules), the
 * send body and the reading of FCM error replies. JSON object keys are
 * matched as Go's encoding/json does (case-insensitively, last one wins).
 * Nothing here logs, and no error carries input bytes. */
#include "push/fcm.h"

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "base/util.h"

#define FCM_ERROR_TYPE "type.googleapis.com/google.firebase.fcm.v1.FcmError"

/* ---- JSON helpers ------------------------------------------------------- */

/* Go's key match: simple case folding of the decoded key against a lowercase
 * ASCII field name; the Kelvin sign folds to k and the long s to s. */
static bool key_matches(const char *key, size_t klen, const char *name)
{
    size_t i = 0;
    for (; *name; name++) {
        if (i >= klen)
            return false;
        unsigned char c = (unsigned char)key[i];
        if (c < 0x80) {
            if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)*name)
                return false;
            i++;
        } else if (*name == 'k' && klen - i >= 3 && memcmp(key + i, "\xe2\x84\xaa", 3) == 0) {
            i += 3;
        } else if (*name == 's' && klen - i >= 2 && memcmp(key + i, "\xc5\xbf", 2) == 0) {
            i += 2;
        } else {
            return false;
        }
    }
    return i == klen;
}

/* The member of obj matching name (lowercase ASCII), the last one in
 * document order. */
static json_t *member(json_t *obj, const char *name)
{
    const char *key;
    json_t *found = NULL;
    void *iter;
    for (iter = json_object_iter(obj); iter; iter = json_object_iter_next(obj, iter)) {
        key = json_object_iter_key(iter);
        if (key_matches(key, strlen(key), name))
            found = json_object_iter_value(iter);
    }
    return found;
}

/* A string member: 1 with *out set, 0 when absent or null, -1 when of
 * another type (Go would fail the whole Unmarshal). */
static int string_member(json_t *obj, const char *name, json_t **out)
{
    json_t *v = member(obj, name);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = v;
    return 1;
}

static void puts_(struct dbuf *b, const char *s)
{
    dbuf_put(b, s, strlen(s));
}

/* Appends s as a JSON string body, escaped as Go does. */
static void put_escaped(struct dbuf *b, const char *s, size_t n)
{
    size_t need = json_escape(NULL, 0, (const uint8_t *)s, n);
    if (b->len + need + 1 > b->cap) {
        b->cap = (b->len + need + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    json_escape(b->p + b->len, need + 1, (const uint8_t *)s, n);
    b->len += need;
    b->p[b->len] = '\0';
}

/* ---- credentials --------------------------------------------------------- */

/* Go's order: PEM block if there is one (any label), else the raw bytes;
 * then PKCS#8, then PKCS#1. Only an RSA key whose parts agree is usable. */
static EVP_PKEY *parse_rsa(const char *text, size_t len)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long dlen = 0;
    const unsigned char *der = (const unsigned char *)text, *p;
    size_t der_len = len;
    EVP_PKEY *key = NULL;
    if (bio && PEM_read_bio(bio, &name, &header, &data, &dlen) == 1 && dlen > 0) {
        der = data;
        der_len = (size_t)dlen;
    }
    p = der;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)der_len);
    if (p8) {
        if (p == der + der_len)
            key = EVP_PKCS82PKEY(p8);
        PKCS8_PRIV_KEY_INFO_free(p8);
    } else {
        p = der;
        key = d2i_PrivateKey(EVP_PKEY_RSA, NULL, &p, (long)der_len);
        if (key && p != der + der_len) {
            EVP_PKEY_free(key);
            key = NULL;
        }
    }
    if (key && EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        bool ok = ctx && EVP_PKEY_pairwise_check(ctx) == 1;
        EVP_PKEY_CTX_free(ctx);
        if (!ok) {
            EVP_PKEY_free(key);
            key = NULL;
        }
    } else if (key) {
        EVP_PKEY_free(key); /* EC, Ed25519, RSA-PSS…: not usable for RS256 */
        key = NULL;
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(bio);
    ERR_clear_error(); /* decoder noise must not leak into later TLS errors */
    return key;
}

int fcm_creds_parse(const char *text, size_t len, struct fcm_creds *out)
{
    json_error_t jerr;
    json_t *type, *email, *key, *kid, *uri;
    memset(out, 0, sizeof *out);
    json_t *doc = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(doc))
        goto fail;
    if (string_member(doc, "type", &type) != 1 ||
        strcmp(json_string_value(type), "service_account"))
        goto fail;
    if (string_member(doc, "client_email", &email) != 1 || json_string_length(email) == 0)
        goto fail;
    if (string_member(doc, "private_key", &key) != 1 || json_string_length(key) == 0)
        goto fail;
    if (string_member(doc, "private_key_id", &kid) < 0 || string_member(doc, "token_uri", &uri) < 0)
        goto fail;
    out->key = parse_rsa(json_string_value(key), json_string_length(key));
    if (!out->key)
        goto fail;
    out->client_email = xstrndup(json_string_value(email), json_string_length(email));
    if (kid && json_string_length(kid))
        out->key_id = xstrndup(json_string_value(kid), json_string_length(kid));
    const char *u = uri && json_string_length(uri) ? json_string_value(uri) : FCM_DEFAULT_TOKEN_URI;
    out->token_uri = xstrndup(u, strlen(u));
    json_decref(doc);
    return 0;
fail:
    json_decref(doc);
    fcm_creds_free(out);
    return -1;
}

void fcm_creds_free(struct fcm_creds *c)
{
    free(c->client_email);
    free(c->key_id);
    free(c->token_uri);
    EVP_PKEY_free(c->key);
    memset(c, 0, sizeof *c);
}

/* ---- OAuth2 JWT bearer grant -------------------------------------------- */

static void put_b64url(struct dbuf *b, const unsigned char *in, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char q[4];
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        q[0] = tab[v >> 18];
        q[1] = tab[(v >> 12) & 63];
        q[2] = tab[(v >> 6) & 63];
        q[3] = tab[v & 63];
        dbuf_put(b, q, 4);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        q[0] = tab[v >> 18];
        q[1] = tab[(v >> 12) & 63];
        dbuf_put(b, q, 2);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        q[0] = tab[v >> 18];
        q[1] = tab[(v >> 12) & 63];
        q[2] = tab[(v >> 6) & 63];
        dbuf_put(b, q, 3);
    }
}

char *fcm_jwt(const struct fcm_creds *c, int64_t now_s)
{
    struct dbuf hdr = {0}, claims = {0}, out = {0};
    char num[64];
    int64_t iat = now_s - 10; /* golang.org/x/oauth2/jws: clock skew allowance */
    puts_(&hdr, "{\"alg\":\"RS256\",\"typ\":\"JWT\"");
    if (c->key_id) {
        puts_(&hdr, ",\"kid\":\"");
        put_escaped(&hdr, c->key_id, strlen(c->key_id));
        puts_(&hdr, "\"");
    }
    puts_(&hdr, "}");
    puts_(&claims, "{\"iss\":\"");
    put_escaped(&claims, c->client_email, strlen(c->client_email));
    puts_(&claims, "\",\"scope\":\"" FCM_SCOPE "\",\"aud\":\"");
    put_escaped(&claims, c->token_uri, strlen(c->token_uri));
    snprintf(num, sizeof num, "\",\"exp\":%lld,\"iat\":%lld}", (long long)(iat + 3600),
             (long long)iat);
    puts_(&claims, num);
    put_b64url(&out, (const unsigned char *)hdr.p, hdr.len);
    puts_(&out, ".");
    put_b64url(&out, (const unsigned char *)claims.p, claims.len);
    free(hdr.p);
    free(claims.p);

    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    bool ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, c->key) == 1 &&
              EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)out.p, out.len) == 1;
    if (ok) {
        sig = xmalloc(sig_len);
        ok = EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)out.p, out.len) == 1;
    }
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    if (!ok) {
        free(sig);
        free(out.p);
        return NULL;
    }
    puts_(&out, ".");
    put_b64url(&out, sig, sig_len);
    free(sig);
    return out.p;
}

char *fcm_token_form(const char *jwt)
{
    struct dbuf b = {0};
    /* The grant type form-encoded; a JWT is base64url and dots only. */
    puts_(&b, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=");
    puts_(&b, jwt);
    return b.p;
}

int fcm_token_reply(const char *body, size_t len, char **access_token, int64_t *expires_in)
{
    json_error_t jerr;
    json_t *tok, *exp;
    int rc = -1;
    *access_token = NULL;
    *expires_in = 0;
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(doc) || string_member(doc, "access_token", &tok) != 1)
        goto out;
    const char *t = json_string_value(tok);
    size_t n = json_string_length(tok);
    if (n == 0 || n > 8192)
        goto out;
    for (size_t i = 0; i < n; i++)
        if (t[i] < 0x21 || t[i] > 0x7e)
            goto out; /* must be safe inside an Authorization header */
    exp = member(doc, "expires_in");
    if (json_is_integer(exp)) {
        *expires_in = (int64_t)json_integer_value(exp);
    } else if (json_is_string(exp)) {
        char *end;
        long long v = strtoll(json_string_value(exp), &end, 10);
        *expires_in = *end == '\0' ? (int64_t)v : 0;
    } else if (json_is_real(exp)) {
        *expires_in = (int64_t)json_real_value(exp);
    } else if (exp && !json_is_null(exp)) {
        goto out;
    }
    if (*expires_in < 0)
        *expires_in = 0;
    *access_token = xstrndup(t, n);
    rc = 0;
out:
    json_decref(doc);
    return rc;
}

/* ---- the wake object ------------------------------------------------------ */

/* The walker below runs on input json_valid() accepted, so it never has to
 * report syntax errors, only types. */
static const uint8_t *ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const uint8_t *skip_string(const uint8_t *p, const uint8_t *end)
{
    for (p++; p < end && *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p + 1;
}

static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end)
{
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return p;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p;
}

static void put_utf8(struct dbuf *b, uint32_t cp)
{
    char u[4];
    dbuf_put(b, u, json_put_utf8(u, cp));
}

/* Decodes the string at p (a '"') into b; lone surrogates become U+FFFD as
 * in Go. Returns the byte after the closing quote. */
static const uint8_t *decode_string(const uint8_t *p, const uint8_t *end, struct dbuf *b)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    b->len = 0;
    dbuf_put(b, "", 0);
    for (p++; p < end && *p != '"';) {
        if (*p != '\\') {
            const uint8_t *run = p;
            while (p < end && *p != '"' && *p != '\\')
                p++;
            dbuf_put(b, run, (size_t)(p - run));
            continue;
        }
        if (p[1] != 'u') {
            dbuf_put(b, &to[strchr(from, p[1]) - from], 1);
            p += 2;
            continue;
        }
        uint32_t cp = json_hex4(p + 2);
        p += 6;
        if (cp >= 0xd800 && cp < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
            uint32_t lo = json_hex4(p + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
        }
        if (cp >= 0xd800 && cp < 0xe000)
            cp = 0xfffd;
        put_utf8(b, cp);
    }
    return p + 1;
}

enum fcm_wake fcm_wake_parse(const uint8_t *raw, size_t len, char **token, size_t *token_len)
{
    const uint8_t *p = raw, *end = raw + len;
    struct dbuf key = {0}, platform = {0}, tok = {0}, *dst;
    bool type_error = false;
    enum fcm_wake rc;
    *token = NULL;
    *token_len = 0;
    if (!json_valid(raw, len))
        return FCM_WAKE_MALFORMED;
    p = ws(p, end);
    if (*p == 'n')
        return FCM_WAKE_PLATFORM; /* null decodes to the zero struct */
    if (*p != '{')
        return FCM_WAKE_MALFORMED;
    dbuf_put(&platform, "", 0);
    dbuf_put(&tok, "", 0);
    p = ws(p + 1, end);
    while (*p == '"') {
        p = ws(decode_string(p, end, &key), end) + 1; /* the ':' */
        p = ws(p, end);
        dst = key_matches(key.p, key.len, "platform") ? &platform
              : key_matches(key.p, key.len, "token")  ? &tok
                                                      : NULL;
        if (dst && *p == '"')
            p = decode_string(p, end, dst);
        else {
            if (dst && *p != 'n')
                type_error = true; /* Go reports it after decoding the rest */
            p = skip_value(p, end);
        }
        p = ws(p, end);
        if (*p == ',')
            p = ws(p + 1, end);
    }
    if (type_error)
        rc = FCM_WAKE_MALFORMED;
    else if (platform.len != 3 || memcmp(platform.p, "fcm", 3) != 0)
        rc = FCM_WAKE_PLATFORM;
    else if (tok.len == 0)
        rc = FCM_WAKE_EMPTY_TOKEN;
    else
        rc = FCM_WAKE_OK;
    free(key.p);
    free(platform.p);
    if (rc == FCM_WAKE_OK) {
        *token = tok.p;
        *token_len = tok.len;
    } else {
        free(tok.p);
    }
    return rc;
}

const char *fcm_wake_error(enum fcm_wake w)
{
    switch (w) {
    case FCM_WAKE_MALFORMED:
        return "relay: malformed push_wake";
    case FCM_WAKE_PLATFORM:
        return "relay: push_wake platform not supported";
    case FCM_WAKE_EMPTY_TOKEN:
        return "relay: push_wake token is empty";
    case FCM_WAKE_OK:
        break;
    }
    return NULL;
}

/* ---- the send and its reply ---------------------------------------------- */

char *fcm_send_body(const char *token, size_t token_len, size_t *out_len)
{
    struct dbuf b = {0};
    puts_(&b, "{\"message\":{\"token\":\"");
    put_escaped(&b, token, token_len);
    puts_(&b, "\",\"android\":{\"priority\":\"HIGH\"}}}");
    *out_len = b.len;
    return b.p;
}

bool fcm_message_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > FCM_MESSAGE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '/' || c == ':' || c == '%' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static bool reason_valid(const char *s, size_t n)
{
    if (n == 0 || n > FCM_REASON_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

/* The FcmError errorCode of details[] (first FcmError entry wins). Returns
 * -1 when the array does not decode as Go's []struct{@type, errorCode}. */
static int fcm_error_code(json_t *details, json_t **code)
{
    size_t i;
    json_t *d, *type, *ec;
    *code = NULL;
    json_array_foreach(details, i, d)
    {
        if (json_is_null(d))
            continue;
        if (!json_is_object(d) || string_member(d, "@type", &type) < 0 ||
            string_member(d, "errorcode", &ec) < 0)
            return -1;
        if (!*code && type && strcmp(json_string_value(type), FCM_ERROR_TYPE) == 0 && ec)
            *code = ec;
    }
    return 0;
}

/* The reasons part alone: writes "NOT_FOUND, UNREGISTERED"-style text (or
 * "") into out and sets *unregistered. Returns its length. */
static size_t reasons_of(const char *body, size_t len, char *out, size_t cap, bool *unregistered)
{
    json_error_t jerr;
    json_t *err, *status = NULL, *details, *code = NULL;
    size_t n = 0;
    *unregistered = false;
    if (cap)
        out[0] = '\0';
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(doc))
        goto out;
    err = member(doc, "error");
    if (err && !json_is_null(err)) {
        if (!json_is_object(err) || string_member(err, "status", &status) < 0)
            goto out;
        details = member(err, "details");
        if (details && !json_is_null(details) &&
            (!json_is_array(details) || fcm_error_code(details, &code) < 0))
            goto out;
    }
    json_t *parts[2] = {status, code};
    for (int i = 0; i < 2; i++) {
        const char *s = parts[i] ? json_string_value(parts[i]) : NULL;
        size_t sl = parts[i] ? json_string_length(parts[i]) : 0;
        if (!s || !reason_valid(s, sl))
            continue;
        if (n && n + 2 < cap) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        if (n + sl < cap) {
            memcpy(out + n, s, sl);
            n += sl;
            out[n] = '\0';
        }
        if (i == 1 && strcmp(s, "UNREGISTERED") == 0)
            *unregistered = true;
    }
out:
    json_decref(doc);
    return n;
}

void fcm_send_reply(long status, const char *body, size_t len, struct fcm_reply *out)
{
    memset(out, 0, sizeof *out);
    if (status >= 200 && status <= 299) {
        json_error_t jerr;
        json_t *doc = json_loadb(body, len, 0, &jerr), *name;
        out->outcome = FCM_SENT;
        if (json_is_object(doc) && string_member(doc, "name", &name) == 1 &&
            fcm_message_id_valid(json_string_value(name), json_string_length(name)))
            memcpy(out->message_id, json_string_value(name), json_string_length(name));
        json_decref(doc);
        return;
    }
    char reasons[2 * FCM_REASON_MAX + 8];
    bool unregistered;
    out->outcome = FCM_FAILED;
    if (reasons_of(body, len, reasons, sizeof reasons, &unregistered)) {
        snprintf(out->err, sizeof out->err, "relay: fcm send failed: status %ld (%s)", status,
                 reasons);
        if (unregistered)
            out->outcome = FCM_UNREGISTERED;
    } else {
        snprintf(out->err, sizeof out->err, "relay: fcm send failed: status %ld", status);
    }
}

void fcm_token_fp(const char *token, size_t len, char out[9])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(token, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 4; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[8] = '\0';
}
