/* acme_job.c — one ACME issuance (RFC 8555 §7) on a thread-pool thread,
 * with libcurl's blocking easy interface: directory, nonce, account
 * (terms accepted, no contact), order for the one domain, HTTP-01 for each
 * pending authorization, finalize with a fresh P-256 key's CSR, download
 * the chain, check it and write the cache. Every transfer has a 30 s
 * limit and aborts within about a second of acme_stop; waits between
 * polls check the stop flag every 100 ms. It never logs: the outcome goes
 * back to the loop in struct acme_job. Payloads and keys are never put in
 * error texts. */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "acme/acme_internal.h"
#include "codec/acme_msg.h"
#include "tls/certdir.h"
#include "tls/pki.h"
#include "base/util.h"
#include "base/version.h"

#define CALL_TIMEOUT_MS    30000L
#define CONNECT_TIMEOUT_MS 10000L
#define MAX_BODY           (1024 * 1024)
#define MAX_POLLS          120 /* per stage, about one a second */
#define BAD_NONCE_RETRIES  3

struct res {
    long status;
    char *body;
    size_t len;
    bool too_big;
    char nonce[256];
    char location[2048];
    long retry_after; /* seconds, 0 if absent */
};

struct ctx {
    struct acme_job *j;
    struct acme *a;
    CURL *curl;
    char curl_err[CURL_ERROR_SIZE];
    struct acme_dir dir;
    char nonce[256];
    char *kid; /* account URL */
};

static void fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    if (c->j->err[0])
        return; /* keep the first reason */
    va_start(ap, fmt);
    vsnprintf(c->j->err, sizeof c->j->err, fmt, ap);
    va_end(ap);
}

static bool stopping(const struct ctx *c)
{
    return atomic_load(&c->a->stop);
}

static void res_free(struct res *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct res *r = ud;
    size_t len = size * n;
    if (r->len + len > MAX_BODY) {
        r->too_big = true;
        return 0;
    }
    r->body = xrealloc(r->body, r->len + len + 1);
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

/* Copies the value of header line p (if it is name) into out, trimmed. */
static void header_value(const char *p, size_t len, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    if (len <= nlen || strncasecmp(p, name, nlen) != 0 || p[nlen] != ':')
        return;
    p += nlen + 1;
    len -= nlen + 1;
    while (len && (*p == ' ' || *p == '\t'))
        p++, len--;
    while (len && (p[len - 1] == '\r' || p[len - 1] == '\n' || p[len - 1] == ' '))
        len--;
    if (len < cap) {
        memcpy(out, p, len);
        out[len] = '\0';
    }
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct res *r = ud;
    size_t len = size * n;
    char ra[32] = "";
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response head */
        r->nonce[0] = r->location[0] = '\0';
        r->retry_after = 0;
    }
    header_value(p, len, "Replay-Nonce", r->nonce, sizeof r->nonce);
    header_value(p, len, "Location", r->location, sizeof r->location);
    header_value(p, len, "Retry-After", ra, sizeof ra);
    if (ra[0])
        r->retry_after = strtol(ra, NULL, 10);
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return stopping(ud) ? 1 : 0; /* non-zero aborts the transfer */
}

/* One HTTPS exchange. body NULL = GET (or HEAD when head); else a JWS
 * POST. Returns 0 when an HTTP status arrived (any), -1 on transport
 * failure (reason recorded, prefixed by what). */
static int exchange(struct ctx *c, const char *what, const char *url, bool head, const char *body,
                    const char *accept, struct res *r)
{
    CURL *h = c->curl;
    struct curl_slist *hdrs = NULL;
    char acc[128];
    memset(r, 0, sizeof *r);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, CALL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_USERAGENT, (const char *)relay_user_agent);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    if (c->a->ca_bundle[0])
        curl_easy_setopt(h, CURLOPT_CAINFO, c->a->ca_bundle);
    if (head)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/jose+json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    snprintf(acc, sizeof acc, "Accept: %s", accept ? accept : "application/json");
    hdrs = curl_slist_append(hdrs, acc);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    c->curl_err[0] = '\0';
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        if (stopping(c))
            fail(c, "%s: stopped by shutdown", what);
        else if (r->too_big)
            fail(c, "%s: reply larger than %d bytes", what, MAX_BODY);
        else
            fail(c, "%s: %s", what, c->curl_err[0] ? c->curl_err : curl_easy_strerror(rc));
        res_free(r);
        return -1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    return 0;
}

/* Records "what: HTTP n type: detail" for a non-2xx reply. */
static void fail_status(struct ctx *c, const char *what, const struct res *r)
{
    char type[128] = "", detail[256] = "";
    if (r->body && acme_msg_problem(r->body, r->len, type, sizeof type, detail, sizeof detail) == 0)
        fail(c, "%s: HTTP %ld %s: %s", what, r->status, type, detail);
    else
        fail(c, "%s: HTTP %ld", what, r->status);
}

static int new_nonce(struct ctx *c)
{
    struct res r;
    if (exchange(c, "fetching a nonce", c->dir.new_nonce, true, NULL, NULL, &r) != 0)
        return -1;
    int rc = r.nonce[0] ? 0 : -1;
    if (rc == 0)
        snprintf(c->nonce, sizeof c->nonce, "%s", r.nonce);
    else
        fail(c, "fetching a nonce: HTTP %ld without Replay-Nonce", r.status);
    res_free(&r);
    return rc;
}

static bool is_bad_nonce(const struct res *r)
{
    char type[128], detail[8];
    return r->status == 400 && r->body &&
           acme_msg_problem(r->body, r->len, type, sizeof type, detail, sizeof detail) == 0 &&
           strcmp(type, "urn:ietf:params:acme:error:badNonce") == 0;
}

/* A signed POST (payload NULL = POST-as-GET), retried with a fresh nonce
 * on badNonce. Returns 0 with a 2xx reply in *r (free it), else -1. */
static int post(struct ctx *c, const char *what, const char *url, const char *payload,
                const char *accept, struct res *r)
{
    for (int attempt = 0;; attempt++) {
        if (!c->nonce[0] && new_nonce(c) != 0)
            return -1;
        const char *p = payload ? payload : "";
        char *jws = pki_jws(c->a->account_key, c->kid, c->nonce, url, p, strlen(p));
        c->nonce[0] = '\0'; /* each nonce is good for one request */
        if (!jws) {
            fail(c, "%s: signing the request failed", what);
            return -1;
        }
        int rc = exchange(c, what, url, false, jws, accept, r);
        free(jws);
        if (rc != 0)
            return -1;
        if (r->nonce[0])
            snprintf(c->nonce, sizeof c->nonce, "%s", r->nonce);
        if (r->status >= 200 && r->status < 300)
            return 0;
        if (!is_bad_nonce(r) || attempt >= BAD_NONCE_RETRIES) {
            fail_status(c, what, r);
            res_free(r);
            return -1;
        }
        res_free(r);
    }
}

/* Sleeps for the reply's Retry-After (1–10 s, default 1 s) in 100 ms steps;
 * returns -1 when stopping. */
static int pause_poll(struct ctx *c, long retry_after)
{
    long ms = retry_after > 0 ? (retry_after > 10 ? 10 : retry_after) * 1000 : 1000;
    for (long waited = 0; waited < ms; waited += 100) {
        if (stopping(c)) {
            fail(c, "stopped by shutdown");
            return -1;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int get_directory(struct ctx *c)
{
    struct res r;
    char err[128];
    if (exchange(c, "fetching the directory", c->a->directory, false, NULL, NULL, &r) != 0)
        return -1;
    int rc = -1;
    if (r.status != 200)
        fail_status(c, "fetching the directory", &r);
    else if (acme_msg_directory(r.body ? r.body : "", r.len, &c->dir, err, sizeof err) != 0)
        fail(c, "fetching the directory: %s", err);
    else
        rc = 0;
    res_free(&r);
    return rc;
}

static int new_account(struct ctx *c)
{
    struct res r;
    if (post(c, "creating the account", c->dir.new_account, "{\"termsOfServiceAgreed\":true}", NULL,
             &r) != 0)
        return -1;
    int rc = r.location[0] ? 0 : -1;
    if (rc == 0)
        c->kid = xstrndup(r.location, strlen(r.location));
    else
        fail(c, "creating the account: no account URL in the reply");
    res_free(&r);
    return rc;
}

/* POST-as-GET url and parse it as an order. */
static int fetch_order(struct ctx *c, const char *what, const char *url, const char *payload,
                       struct acme_order *o, struct res *r)
{
    char err[128];
    if (post(c, what, url, payload, NULL, r) != 0)
        return -1;
    if (acme_msg_order(r->body ? r->body : "", r->len, o, err, sizeof err) != 0) {
        fail(c, "%s: %s", what, err);
        res_free(r);
        return -1;
    }
    return 0;
}

/* Polls the authorization until it leaves "pending". */
static int await_authz(struct ctx *c, const char *url)
{
    for (int i = 0; i < MAX_POLLS; i++) {
        struct res r;
        struct acme_authz az;
        char err[128];
        if (post(c, "polling the authorization", url, NULL, NULL, &r) != 0)
            return -1;
        int rc = acme_msg_authz(r.body ? r.body : "", r.len, &az, err, sizeof err);
        long ra = r.retry_after;
        res_free(&r);
        if (rc != 0) {
            fail(c, "polling the authorization: %s", err);
            return -1;
        }
        bool valid = strcmp(az.status, "valid") == 0, pending = strcmp(az.status, "pending") == 0;
        if (!valid && !pending)
            fail(c, "authorization for %s is %s (%s)", c->a->domain, az.status,
                 az.error ? az.error : "no detail");
        acme_authz_free(&az);
        if (!pending)
            return valid ? 0 : -1;
        if (pause_poll(c, ra) != 0)
            return -1;
    }
    fail(c, "authorization for %s still pending after %d polls", c->a->domain, MAX_POLLS);
    return -1;
}

/* Answers one authorization with HTTP-01 (nothing to do when valid). */
static int authorize(struct ctx *c, const char *url)
{
    struct res r;
    struct acme_authz az;
    char err[128];
    if (post(c, "fetching the authorization", url, NULL, NULL, &r) != 0)
        return -1;
    int rc = acme_msg_authz(r.body ? r.body : "", r.len, &az, err, sizeof err);
    res_free(&r);
    if (rc != 0) {
        fail(c, "fetching the authorization: %s", err);
        return -1;
    }
    rc = -1;
    if (strcmp(az.identifier, c->a->domain) != 0)
        fail(c, "the CA asked to authorize a name other than %s", c->a->domain);
    else if (strcmp(az.status, "valid") == 0)
        rc = 0;
    else if (strcmp(az.status, "pending") != 0)
        fail(c, "authorization for %s is %s", c->a->domain, az.status);
    else if (!az.chall_url)
        fail(c, "the CA offers no http-01 challenge for %s", c->a->domain);
    else {
        acme_tokens_publish(c->a, az.chall_token);
        if (post(c, "answering the http-01 challenge", az.chall_url, "{}", NULL, &r) == 0) {
            res_free(&r);
            rc = await_authz(c, url);
        }
        acme_tokens_withdraw(c->a, az.chall_token);
    }
    acme_authz_free(&az);
    return rc;
}

/* Polls the order until its status is not one of the busy states. */
static int await_order(struct ctx *c, const char *url, const char *want, struct acme_order *o)
{
    for (int i = 0; i < MAX_POLLS; i++) {
        struct res r;
        if (fetch_order(c, "polling the order", url, NULL, o, &r) != 0)
            return -1;
        long ra = r.retry_after;
        res_free(&r);
        if (strcmp(o->status, want) == 0)
            return 0;
        if (strcmp(o->status, "pending") != 0 && strcmp(o->status, "processing") != 0 &&
            strcmp(o->status, "ready") != 0) {
            fail(c, "order for %s is %s (%s)", c->a->domain, o->status,
                 o->error ? o->error : "no detail");
            acme_order_free(o);
            return -1;
        }
        acme_order_free(o);
        if (pause_poll(c, ra) != 0)
            return -1;
    }
    fail(c, "order for %s not %s after %d polls", c->a->domain, want, MAX_POLLS);
    return -1;
}

/* Finalizes with a new key's CSR and downloads the chain into the job. */
static int finalize(struct ctx *c, const char *order_url, const struct acme_order *ready)
{
    struct res r;
    struct acme_order o;
    EVP_PKEY *key = pki_key_generate();
    char *csr = key ? pki_csr_b64url(key, c->a->domain) : NULL;
    int rc = -1;
    if (!csr) {
        fail(c, "building the certificate request failed");
        goto done;
    }
    size_t cap = strlen(csr) + 16;
    char *payload = xmalloc(cap);
    snprintf(payload, cap, "{\"csr\":\"%s\"}", csr);
    rc = fetch_order(c, "finalizing the order", ready->finalize, payload, &o, &r);
    free(payload);
    if (rc != 0)
        goto done;
    res_free(&r);
    if (strcmp(o.status, "valid") != 0) {
        acme_order_free(&o);
        if ((rc = await_order(c, order_url, "valid", &o)) != 0)
            goto done;
    }
    rc = -1;
    if (!o.certificate)
        fail(c, "the valid order has no certificate URL");
    else if (post(c, "downloading the certificate", o.certificate, NULL,
                  "application/pem-certificate-chain", &r) == 0) {
        c->j->chain = r.body ? r.body : xstrndup("", 0);
        c->j->chain_len = r.len;
        r.body = NULL;
        c->j->key = pki_key_to_pem(key, &c->j->key_len);
        rc = c->j->key ? 0 : -1;
    }
    acme_order_free(&o);
done:
    free(csr);
    pki_key_free(key);
    return rc;
}

static int issue(struct ctx *c)
{
    struct res r;
    struct acme_order o;
    char payload[400];
    snprintf(payload, sizeof payload, "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"%s\"}]}",
             c->a->domain); /* a plain DNS name: nothing to escape */
    if (get_directory(c) || new_account(c) ||
        fetch_order(c, "creating the order", c->dir.new_order, payload, &o, &r))
        return -1;
    char *order_url = r.location[0] ? xstrndup(r.location, strlen(r.location)) : NULL;
    res_free(&r);
    int rc = order_url ? 0 : -1;
    if (!order_url)
        fail(c, "creating the order: no order URL in the reply");
    for (size_t i = 0; rc == 0 && i < o.nauthz; i++)
        rc = authorize(c, o.authz[i]);
    if (rc == 0 && strcmp(o.status, "ready") != 0 && strcmp(o.status, "valid") != 0) {
        struct acme_order polled;
        rc = await_order(c, order_url, "ready", &polled);
        if (rc == 0) {
            acme_order_free(&o);
            o = polled;
        }
    }
    if (rc == 0)
        rc = finalize(c, order_url, &o);
    acme_order_free(&o);
    free(order_url);
    return rc;
}

/* Checks the new chain and writes key then chain (each atomically; a
 * crash in between leaves a pair that fails the check and is re-issued). */
static int store(struct ctx *c)
{
    struct acme_job *j = c->j;
    char err[512];
    if (pki_cert_check(j->chain, j->chain_len, j->key, j->key_len, c->a->domain, time(NULL),
                       &j->not_after, err, sizeof err) != 0) {
        fail(c, "the CA's certificate is unusable: %s", err);
        return -1;
    }
    if (certdir_write(c->a->cache_dir, c->a->key_name, j->key, j->key_len, err, sizeof err) ||
        certdir_write(c->a->cache_dir, c->a->crt_name, j->chain, j->chain_len, err, sizeof err)) {
        fail(c, "caching the certificate: %s", err);
        return -1;
    }
    return 0;
}

void acme_job_run(uv_work_t *w)
{
    struct acme_job *j = CONTAINER_OF(w, struct acme_job, work);
    struct ctx c = {.j = j, .a = j->a};
    c.curl = curl_easy_init();
    if (!c.curl)
        fail(&c, "libcurl could not create a handle");
    j->rc = c.curl && issue(&c) == 0 && store(&c) == 0 ? 0 : -1;
    if (j->rc != 0 && !j->err[0])
        fail(&c, "unknown failure");
    curl_easy_cleanup(c.curl);
    acme_dir_free(&c.dir);
    free(c.kid);
    OPENSSL_cleanse(c.nonce, sizeof c.nonce);
}
