/* acme.c — the ACME client's life on the loop: boot-time checks and the
 * cached certificate, the issue/renew schedule with its back-off, the
 * HTTP-01 token table, and handing each finished attempt's certificate to
 * the owner. One attempt at a time runs on the thread pool (acme_job.c
 * speaks the protocol); this file never blocks and never touches curl
 * handles. It does not serve port 80 (acme_http.c) nor TLS. */
#include "acme/acme.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acme/acme_internal.h"
#include "tls/certdir.h"
#include "base/log.h"
#include "tls/pki.h"
#include "base/util.h"

#define MAX_BACKOFF_MS (3600LL * 1000)      /* retries double up to 1h */
#define MAX_TIMER_MS   (24LL * 3600 * 1000) /* re-check at least daily */
#define MAX_FILE       (1024 * 1024)

static void on_timer(uv_timer_t *t);

static void wipe_free(char *p, size_t len)
{
    if (p) {
        OPENSSL_cleanse(p, len);
        free(p);
    }
}

/* Plain lower-case DNS name: it names the ACME identifier and the cache
 * files, so nothing that could escape the directory or confuse a CA. */
static int domain_normalize(const char *in, char *out, size_t cap, char *err, size_t err_cap)
{
    size_t n = strlen(in);
    bool ok = n > 0 && n <= 253 && n < cap && in[0] != '.' && in[0] != '-' && in[n - 1] != '.';
    for (size_t i = 0; ok && i < n; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
             (c == '.' && in[i + 1] != '.');
        out[i] = c;
    }
    if (!ok) {
        char q[600];
        log_go_quote(q, sizeof q, in, n);
        snprintf(err, err_cap, "relay: --domain %s is not a DNS name", q);
        return -1;
    }
    out[n] = '\0';
    return 0;
}

/* Loads acme_account.key, or creates it on first use. */
static int account_key(struct acme *a, char *err, size_t err_cap)
{
    size_t len = 0;
    char etext[128], werr[512];
    char *pem = certdir_read(a->cache_dir, ACME_ACCOUNT_KEY, MAX_FILE, &len);
    if (pem) {
        a->account_key = pki_key_from_pem(pem, len);
        wipe_free(pem, len);
        if (!a->account_key) {
            snprintf(err, err_cap,
                     "relay: ACME account key %s/%s is not a PEM ECDSA P-256 private key",
                     a->cache_dir, ACME_ACCOUNT_KEY);
            return -1;
        }
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(err, err_cap, "relay: reading ACME account key %s/%s: %s", a->cache_dir,
                 ACME_ACCOUNT_KEY, certdir_errno_text(errno, etext, sizeof etext));
        return -1;
    }
    a->account_key = pki_key_generate();
    pem = a->account_key ? pki_key_to_pem(a->account_key, &len) : NULL;
    if (!pem) {
        snprintf(err, err_cap, "relay: generating the ACME account key failed");
        return -1;
    }
    int rc = certdir_write(a->cache_dir, ACME_ACCOUNT_KEY, pem, len, werr, sizeof werr);
    wipe_free(pem, len);
    if (rc != 0) {
        snprintf(err, err_cap, "relay: %s", werr);
        return -1;
    }
    return 0;
}

/* A cached certificate that still works is served at once. */
static void load_cached(struct acme *a)
{
    size_t clen = 0, klen = 0;
    char err[256], when[32];
    char *chain = certdir_read(a->cache_dir, a->crt_name, MAX_FILE, &clen);
    char *key = certdir_read(a->cache_dir, a->key_name, MAX_FILE, &klen);
    if (chain && key) {
        int64_t not_after = 0;
        if (pki_cert_check(chain, clen, key, klen, a->domain, time(NULL), &not_after, err,
                           sizeof err) == 0) {
            a->not_after = not_after;
            pki_time_format(when, sizeof when, not_after);
            LOGF(LOG_INFO, "acme certificate loaded from cache", LOG_STR("domain", a->domain),
                 LOG_STR("not_after", when));
            if (a->on_cert)
                a->on_cert(a->ud, chain, clen, key, klen);
        } else {
            LOGF(LOG_WARN, "acme cached certificate unusable", LOG_STR("domain", a->domain),
                 LOG_STR("err", err));
        }
    }
    free(chain);
    wipe_free(key, klen);
}

int acme_check_config(const struct config *cfg, char *err, size_t err_cap)
{
    char domain[256];
    if (certdir_prepare(cfg->domain, cfg->cert_cache, err, err_cap) != 0 ||
        domain_normalize(cfg->domain, domain, sizeof domain, err, err_cap) != 0)
        return -1;
    return 0;
}

int acme_check_config_dry(const struct config *cfg, char *err, size_t err_cap)
{
    char domain[256];
    if (certdir_check(cfg->domain, cfg->cert_cache, err, err_cap) != 0 ||
        domain_normalize(cfg->domain, domain, sizeof domain, err, err_cap) != 0)
        return -1;
    return 0;
}

struct acme *acme_new(uv_loop_t *loop, const struct config *cfg, acme_on_cert_fn on_cert, void *ud,
                      char *err, size_t err_cap)
{
    char domain[256];
    if (acme_check_config(cfg, err, err_cap) != 0)
        return NULL;
    domain_normalize(cfg->domain, domain, sizeof domain, err, err_cap);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, err_cap, "relay: libcurl initialisation failed");
        return NULL;
    }
    struct acme *a = xcalloc(1, sizeof *a);
    a->loop = loop;
    a->domain = xstrndup(domain, strlen(domain));
    a->cache_dir = xstrndup(cfg->cert_cache, strlen(cfg->cert_cache));
    a->directory = xstrndup(cfg->acme_directory, strlen(cfg->acme_directory));
    a->ca_bundle = xstrndup(cfg->acme_ca_bundle, strlen(cfg->acme_ca_bundle));
    a->renew_before_s = cfg->acme_renew_before_ns / NS_PER_S;
    a->retry_ms = (uint64_t)(cfg->acme_retry_interval_ns / NS_PER_MS);
    if (a->retry_ms == 0)
        a->retry_ms = 1;
    a->backoff_ms = a->retry_ms;
    a->on_cert = on_cert;
    a->ud = ud;
    snprintf(a->crt_name, sizeof a->crt_name, "%s.crt", domain);
    snprintf(a->key_name, sizeof a->key_name, "%s.key", domain);
    uv_mutex_init(&a->lock);
    atomic_init(&a->stop, false);
    if (account_key(a, err, err_cap) != 0) {
        acme_free(a);
        return NULL;
    }
    if (pki_jwk_thumbprint(a->account_key, a->thumbprint, sizeof a->thumbprint) != 43) {
        snprintf(err, err_cap, "relay: computing the ACME account key thumbprint failed");
        acme_free(a);
        return NULL;
    }
    load_cached(a);
    return a;
}

const char *acme_domain(const struct acme *a)
{
    return a->domain;
}

/* ---- HTTP-01 token table (loop reads, job writes) ---------------------- */

void acme_tokens_publish(struct acme *a, const char *token)
{
    uv_mutex_lock(&a->lock);
    for (size_t i = 0; i < ARRAY_LEN(a->tokens); i++) {
        if (a->tokens[i].token[0] == '\0') {
            snprintf(a->tokens[i].token, sizeof a->tokens[i].token, "%s", token);
            snprintf(a->tokens[i].keyauth, sizeof a->tokens[i].keyauth, "%s.%s", token,
                     a->thumbprint);
            break;
        }
    }
    uv_mutex_unlock(&a->lock);
}

void acme_tokens_withdraw(struct acme *a, const char *token)
{
    uv_mutex_lock(&a->lock);
    for (size_t i = 0; i < ARRAY_LEN(a->tokens); i++)
        if (strcmp(a->tokens[i].token, token) == 0)
            memset(&a->tokens[i], 0, sizeof a->tokens[i]);
    uv_mutex_unlock(&a->lock);
}

bool acme_http01_lookup(struct acme *a, const char *token, size_t token_len, char *out,
                        size_t out_cap)
{
    bool found = false;
    if (token_len == 0)
        return false;
    uv_mutex_lock(&a->lock);
    for (size_t i = 0; i < ARRAY_LEN(a->tokens) && !found; i++) {
        if (str_eq(token, token_len, a->tokens[i].token)) {
            found = (size_t)snprintf(out, out_cap, "%s", a->tokens[i].keyauth) < out_cap;
        }
    }
    uv_mutex_unlock(&a->lock);
    return found;
}

/* ---- schedule ---------------------------------------------------------- */

static void arm(struct acme *a, uint64_t ms)
{
    if (!a->stopped)
        uv_timer_start(&a->timer, on_timer, ms > (uint64_t)MAX_TIMER_MS ? MAX_TIMER_MS : ms, 0);
}

/* Milliseconds until the current certificate enters its renewal window
 * (0 when there is none or it already has). */
static uint64_t until_renewal_ms(const struct acme *a)
{
    if (a->not_after == 0)
        return 0;
    int64_t left = a->not_after - a->renew_before_s - (int64_t)time(NULL);
    return left > 0 ? (uint64_t)left * 1000 : 0;
}

static void free_job(struct acme_job *j)
{
    free(j->chain);
    wipe_free(j->key, j->key_len);
    free(j);
}

static void on_success(struct acme *a, struct acme_job *j)
{
    char when[32];
    a->not_after = j->not_after;
    a->backoff_ms = a->retry_ms;
    pki_time_format(when, sizeof when, j->not_after);
    LOGF(LOG_INFO, "acme certificate obtained", LOG_STR("domain", a->domain),
         LOG_STR("not_after", when));
    if (a->on_cert)
        a->on_cert(a->ud, j->chain, j->chain_len, j->key, j->key_len);
    uint64_t next = until_renewal_ms(a);
    if (next < a->retry_ms) {
        /* The CA's lifetime is shorter than --acme-renew-before: renewing
         * at once would loop, so wait one retry interval. */
        char in[32];
        duration_format(in, sizeof in, (int64_t)a->retry_ms * NS_PER_MS);
        LOGF(LOG_WARN, "acme certificate already due for renewal", LOG_STR("domain", a->domain),
             LOG_STR("not_after", when), LOG_STR("retry_in", in));
        next = a->retry_ms;
    }
    arm(a, next);
}

static void on_failure(struct acme *a, struct acme_job *j)
{
    char in[32];
    uint64_t delay = a->backoff_ms;
    duration_format(in, sizeof in, (int64_t)delay * NS_PER_MS);
    LOGF(LOG_ERROR, "acme issuance failed", LOG_STR("domain", a->domain), LOG_STR("err", j->err),
         LOG_STR("retry_in", in));
    uint64_t cap = a->retry_ms > (uint64_t)MAX_BACKOFF_MS ? a->retry_ms : (uint64_t)MAX_BACKOFF_MS;
    a->backoff_ms = a->backoff_ms * 2 > cap ? cap : a->backoff_ms * 2;
    arm(a, delay);
}

static void job_done(uv_work_t *w, int status)
{
    struct acme_job *j = CONTAINER_OF(w, struct acme_job, work);
    struct acme *a = j->a;
    a->job = NULL;
    if (status == 0 && !a->stopped && !atomic_load(&a->stop)) {
        if (j->rc == 0)
            on_success(a, j);
        else
            on_failure(a, j);
    }
    free_job(j);
}

static void on_timer(uv_timer_t *t)
{
    struct acme *a = t->data;
    if (a->stopped || a->job)
        return;
    uint64_t wait = until_renewal_ms(a);
    if (wait > 0) {
        arm(a, wait); /* a daily re-check before the window opens */
        return;
    }
    struct acme_job *j = xcalloc(1, sizeof *j);
    j->a = a;
    a->job = j;
    uv_queue_work(a->loop, &j->work, acme_job_run, job_done);
}

void acme_start(struct acme *a)
{
    uv_timer_init(a->loop, &a->timer);
    a->timer.data = a;
    a->timer_live = true;
    arm(a, 0);
}

void acme_stop(struct acme *a)
{
    if (a->stopped)
        return;
    a->stopped = true;
    atomic_store(&a->stop, true);
    if (a->timer_live && !uv_is_closing((uv_handle_t *)&a->timer))
        uv_close((uv_handle_t *)&a->timer, NULL);
    if (a->job)
        uv_cancel((uv_req_t *)&a->job->work); /* fails harmlessly once running */
}

void acme_free(struct acme *a)
{
    if (!a)
        return;
    pki_key_free(a->account_key);
    OPENSSL_cleanse(a->tokens, sizeof a->tokens);
    uv_mutex_destroy(&a->lock);
    free(a->domain);
    free(a->cache_dir);
    free(a->directory);
    free(a->ca_bundle);
    free(a);
    curl_global_cleanup();
}
