/* push.c — the push waker. Admission is synchronous and cheap (the read
 * pump of the binary never waits); an admitted wake becomes a push_send
 * that waits for the shared access token (at most one token fetch runs;
 * every send that needs a token queues behind it), then POSTs to FCM
 * through curluv. Replies are read up to 4 KiB, redirects are not
 * followed, every call has --push-timeout. Device tokens, the access token
 * and the assertion live only in memory (wiped when freed); log lines carry
 * the token's fingerprint and fixed or curl-generated error texts only. */
#include "push/push.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/config.h"
#include "net/curluv.h"
#include "base/log.h"
#include "base/ratelimit.h"
#include "base/util.h"
#include "base/version.h"

#define ERR_OFF       "relay: push is off"
#define ERR_RATE      "relay: push_wake rate-limited for server-id"
#define ERR_CAP       "relay: push_wake in-flight cap reached"
#define ERR_FETCH     "relay: fcm access-token fetch failed"
#define ERR_CANCELLED "context canceled"
#define USER_AGENT    ((const char *)relay_user_agent)

struct reply {
    char buf[FCM_REPLY_MAX];
    size_t len;
    bool cut; /* more than FCM_REPLY_MAX bytes came: we stopped reading */
    char errbuf[CURL_ERROR_SIZE];
};

struct push_send {
    struct list link; /* on w->waiting (for the token) or w->sending */
    struct push_waker *w;
    char *server_id;
    size_t server_id_len;
    char *token;
    size_t token_len;
    char fp[9];
    uint64_t start_ns;
    CURL *easy;
    struct curl_slist *headers; /* carries the access token */
    char *body;
    size_t body_len;
    struct reply rep;
};

struct push_waker {
    uv_loop_t *loop;
    struct fcm_creds creds;
    char *send_url;
    char *ca_bundle; /* NULL = system store */
    uint64_t timeout_ms;
    uint64_t (*mono_ms)(void *ctx);
    int64_t (*wall_s)(void *ctx);
    void *clock_ctx;
    struct curluv *cu;
    struct ratelimit rl;
    uv_timer_t sweep;
    struct list waiting, sending;
    size_t in_flight;
    bool shut;
    /* the shared access token */
    char *access_token;
    uint64_t token_expiry_ms;
    CURL *fetch; /* the token request in progress, or NULL */
    char *fetch_form;
    struct reply fetch_rep;
    uint64_t outcomes[PUSH__COUNT];
};

static const char *const outcome_names[PUSH__COUNT] = {
    [PUSH_SENT] = "sent",
    [PUSH_UNREGISTERED] = "unregistered",
    [PUSH_SEND_FAILED] = "send_failed",
    [PUSH_TOKEN_FETCH_FAILED] = "token_fetch_failed",
    [PUSH_DROPPED] = "dropped",
};

const char *push_outcome_name(enum push_outcome o)
{
    return o < PUSH__COUNT ? outcome_names[o] : "";
}

uint64_t push_outcome_count(const struct push_waker *w, enum push_outcome o)
{
    return o < PUSH__COUNT ? w->outcomes[o] : 0;
}

size_t push_in_flight(const struct push_waker *w)
{
    return w->in_flight;
}

static uint64_t now_ms(const struct push_waker *w)
{
    return w->mono_ms ? w->mono_ms(w->clock_ctx) : uv_now(w->loop);
}

static int64_t wall_s(const struct push_waker *w)
{
    return w->wall_s ? w->wall_s(w->clock_ctx) : (int64_t)time(NULL);
}

/* Frees a string that held a secret, wiping it first. */
static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void free_headers(struct curl_slist *h)
{
    for (struct curl_slist *it = h; it; it = it->next)
        OPENSSL_cleanse(it->data, strlen(it->data));
    curl_slist_free_all(h);
}

static void on_sweep(uv_timer_t *t)
{
    struct push_waker *w = t->data;
    ratelimit_sweep(&w->rl, now_ms(w));
}

struct push_waker *push_new(uv_loop_t *loop, const struct push_config *cfg, struct fcm_creds *creds)
{
    struct push_waker *w = xcalloc(1, sizeof *w);
    uint8_t seed[16] = {0};
    w->loop = loop;
    w->creds = *creds;
    memset(creds, 0, sizeof *creds);
    const char *base = cfg->fcm_base_url;
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    size_t cap = blen + strlen(cfg->fcm_project) + 40;
    w->send_url = xmalloc(cap);
    snprintf(w->send_url, cap, "%.*s/v1/projects/%s/messages:send", (int)blen, base,
             cfg->fcm_project);
    if (cfg->ca_bundle && cfg->ca_bundle[0])
        w->ca_bundle = xstrndup(cfg->ca_bundle, strlen(cfg->ca_bundle));
    w->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
    w->mono_ms = cfg->mono_ms;
    w->wall_s = cfg->wall_s;
    w->clock_ctx = cfg->clock_ctx;
    w->cu = curluv_new(loop);
    /* Server-ids are chosen by binaries: a keyed hash keeps the table fair. */
    uv_random(NULL, NULL, seed, sizeof seed, 0, NULL);
    ratelimit_init(&w->rl, PUSH_BURST, PUSH_REFILL_MS, seed);
    uv_timer_init(loop, &w->sweep);
    w->sweep.data = w;
    uv_timer_start(&w->sweep, on_sweep, PUSH_SWEEP_MS, PUSH_SWEEP_MS);
    list_init(&w->waiting);
    list_init(&w->sending);
    return w;
}

/* ---- outcomes ------------------------------------------------------------ */

/* The one outcome line and count of an admitted wake; frees s. */
static void finish_send(struct push_send *s, enum push_outcome o, const char *err,
                        const char *message_id)
{
    struct push_waker *w = s->w;
    char dur[64];
    duration_format(dur, sizeof dur, (int64_t)(uv_hrtime() - s->start_ns));
    if (o == PUSH_SENT && message_id && message_id[0])
        LOGF(LOG_INFO, "push_wake_sent", LOG_STRN("server_id", s->server_id, s->server_id_len),
             LOG_STR("token_fp", s->fp), LOG_STR("duration", dur),
             LOG_STR("fcm_message_id", message_id));
    else if (o == PUSH_SENT)
        LOGF(LOG_INFO, "push_wake_sent", LOG_STRN("server_id", s->server_id, s->server_id_len),
             LOG_STR("token_fp", s->fp), LOG_STR("duration", dur));
    else
        LOGF(LOG_WARN, "push_wake_send_failed",
             LOG_STRN("server_id", s->server_id, s->server_id_len), LOG_STR("token_fp", s->fp),
             LOG_STR("duration", dur), LOG_STR("err", err));
    w->outcomes[o]++;
    w->in_flight--;
    list_remove(&s->link);
    if (s->easy)
        curl_easy_cleanup(s->easy);
    free_headers(s->headers);
    if (s->token)
        OPENSSL_cleanse(s->token, s->token_len);
    free(s->token);
    if (s->body)
        OPENSSL_cleanse(s->body, s->body_len);
    free(s->body);
    free(s->server_id);
    free(s);
}

/* A transport failure of the send, in Go's url.Error shape:
 * `relay: fcm send failed: Post "<url>": <reason>`. */
static void fail_transport(struct push_send *s, const char *reason)
{
    char err[FCM_ERR_MAX + CURL_ERROR_SIZE];
    snprintf(err, sizeof err, "relay: fcm send failed: Post \"%s\": %s", s->w->send_url, reason);
    finish_send(s, PUSH_SEND_FAILED, err, NULL);
}

/* Fails every send waiting for the token. */
static void fail_waiting(struct push_waker *w, enum push_outcome o, const char *err)
{
    while (!list_empty(&w->waiting)) {
        struct push_send *s = CONTAINER_OF(w->waiting.next, struct push_send, link);
        if (o == PUSH_SEND_FAILED)
            fail_transport(s, err);
        else
            finish_send(s, o, err, NULL);
    }
}

/* ---- HTTP plumbing ------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n, room = sizeof r->buf - r->len;
    if (len > room) {
        memcpy(r->buf + r->len, data, room);
        r->len += room;
        r->cut = true;
        return 0; /* stop reading: curl ends the transfer with a write error */
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    return len;
}

static CURL *new_request(struct push_waker *w, const char *url, const char *body, size_t len,
                         struct reply *rep)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    memset(rep, 0, sizeof *rep);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* a 3xx is a failure */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)w->timeout_ms);
    curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, rep);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, rep->errbuf);
    if (w->ca_bundle) {
        curl_easy_setopt(e, CURLOPT_CAINFO, w->ca_bundle);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL); /* the bundle alone is trusted */
    }
    return e;
}

/* The HTTP status of a finished transfer, or 0 when no reply was read (a
 * transport error). Stopping at FCM_REPLY_MAX is not an error. */
static long reply_status(CURL *e, int result, const struct reply *rep)
{
    long status = 0;
    if (result != CURLE_OK && !(result == CURLE_WRITE_ERROR && rep->cut))
        return 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

/* A printable reason for a transport error: curl's detailed message unless
 * it could contain a secret of ours (it never should), else its fixed text. */
static const char *transport_reason(const struct reply *rep, int result, const char *secret1,
                                    size_t len1, const char *secret2)
{
    const char *msg = rep->errbuf[0] ? rep->errbuf : curl_easy_strerror((CURLcode)result);
    if ((secret1 && len1 >= 8 && memmem(msg, strlen(msg), secret1, len1)) ||
        (secret2 && strlen(secret2) >= 8 && strstr(msg, secret2)))
        msg = curl_easy_strerror((CURLcode)result);
    return msg;
}

/* ---- the send ------------------------------------------------------------ */

static void on_send_done(void *arg, CURL *easy, int result)
{
    struct push_send *s = arg;
    struct push_waker *w = s->w;
    (void)easy;
    if (result == CURLUV_CANCELLED) {
        fail_transport(s, ERR_CANCELLED);
        return;
    }
    long status = reply_status(s->easy, result, &s->rep);
    if (!status) {
        fail_transport(s,
                       transport_reason(&s->rep, result, s->token, s->token_len, w->access_token));
        return;
    }
    struct fcm_reply r;
    fcm_send_reply(status, s->rep.buf, s->rep.len, &r);
    if (status == 401 && w->access_token && s->headers &&
        strcmp(s->headers->data + strlen("Authorization: Bearer "), w->access_token) == 0) {
        /* FCM no longer accepts the cached token (revoked, rotated key):
         * the next wake fetches a fresh one. */
        free_secret(w->access_token);
        w->access_token = NULL;
    }
    finish_send(s,
                r.outcome == FCM_SENT           ? PUSH_SENT
                : r.outcome == FCM_UNREGISTERED ? PUSH_UNREGISTERED
                                                : PUSH_SEND_FAILED,
                r.err, r.message_id);
}

static void start_send(struct push_send *s)
{
    struct push_waker *w = s->w;
    size_t cap = strlen(w->access_token) + 32;
    char *auth = xmalloc(cap);
    list_remove(&s->link);
    list_push_back(&w->sending, &s->link);
    s->body = fcm_send_body(s->token, s->token_len, &s->body_len);
    snprintf(auth, cap, "Authorization: Bearer %s", w->access_token);
    s->headers = curl_slist_append(NULL, auth);
    free_secret(auth);
    s->headers = curl_slist_append(s->headers, "Content-Type: application/json");
    s->headers = curl_slist_append(s->headers, "Expect:");
    s->easy = new_request(w, w->send_url, s->body, s->body_len, &s->rep);
    if (s->easy)
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    if (!s->headers || !s->easy || curluv_add(w->cu, s->easy, on_send_done, s) != 0)
        fail_transport(s, "cannot start the request");
}

/* ---- the access token ------------------------------------------------------ */

static bool token_valid(const struct push_waker *w)
{
    return w->access_token && now_ms(w) + PUSH_TOKEN_SLACK_MS < w->token_expiry_ms;
}

static void end_fetch(struct push_waker *w)
{
    if (w->fetch)
        curl_easy_cleanup(w->fetch);
    w->fetch = NULL;
    free_secret(w->fetch_form);
    w->fetch_form = NULL;
}

static void on_fetch_done(void *arg, CURL *easy, int result)
{
    struct push_waker *w = arg;
    char err[96];
    char *tok = NULL;
    int64_t expires_in = 0;
    (void)easy;
    if (result == CURLUV_CANCELLED) {
        end_fetch(w);
        fail_waiting(w, PUSH_SEND_FAILED, ERR_CANCELLED);
        return;
    }
    long status = reply_status(w->fetch, result, &w->fetch_rep);
    if (status >= 200 && status <= 299 &&
        fcm_token_reply(w->fetch_rep.buf, w->fetch_rep.len, &tok, &expires_in) == 0) {
        free_secret(w->access_token);
        w->access_token = tok;
        w->token_expiry_ms =
            now_ms(w) + (uint64_t)(expires_in ? expires_in : PUSH_TOKEN_DEFAULT_S) * 1000;
        end_fetch(w);
        /* Sends admitted now start at once; the queued ones go in order. */
        while (!list_empty(&w->waiting))
            start_send(CONTAINER_OF(w->waiting.next, struct push_send, link));
        return;
    }
    if (status && (status < 200 || status > 299))
        snprintf(err, sizeof err, ERR_FETCH ": status %ld", status);
    else
        snprintf(err, sizeof err, ERR_FETCH); /* transport or decode: no detail */
    OPENSSL_cleanse(w->fetch_rep.buf, sizeof w->fetch_rep.buf);
    end_fetch(w);
    fail_waiting(w, PUSH_TOKEN_FETCH_FAILED, err);
}

static void start_fetch(struct push_waker *w)
{
    char *jwt = fcm_jwt(&w->creds, wall_s(w));
    if (!jwt) {
        fail_waiting(w, PUSH_TOKEN_FETCH_FAILED, ERR_FETCH);
        return;
    }
    w->fetch_form = fcm_token_form(jwt);
    free_secret(jwt);
    w->fetch =
        new_request(w, w->creds.token_uri, w->fetch_form, strlen(w->fetch_form), &w->fetch_rep);
    if (!w->fetch || curluv_add(w->cu, w->fetch, on_fetch_done, w) != 0) {
        end_fetch(w);
        fail_waiting(w, PUSH_TOKEN_FETCH_FAILED, ERR_FETCH);
    }
}

/* ---- admission --------------------------------------------------------- */

const char *push_wake(struct push_waker *w, const char *server_id, size_t server_id_len,
                      const uint8_t *raw, size_t len)
{
    char *token;
    size_t token_len;
    if (!w)
        return ERR_OFF;
    enum fcm_wake v = fcm_wake_parse(raw, len, &token, &token_len);
    if (v != FCM_WAKE_OK)
        return fcm_wake_error(v);
    const char *refusal = NULL;
    if (w->shut)
        refusal = ERR_OFF;
    else if (!ratelimit_allow(&w->rl, server_id, server_id_len, now_ms(w)))
        refusal = ERR_RATE;
    else if (w->in_flight >= PUSH_MAX_INFLIGHT)
        refusal = ERR_CAP;
    if (refusal) {
        if (!w->shut)
            w->outcomes[PUSH_DROPPED]++;
        OPENSSL_cleanse(token, token_len);
        free(token);
        return refusal;
    }
    struct push_send *s = xcalloc(1, sizeof *s);
    s->w = w;
    s->server_id = xstrndup(server_id, server_id_len);
    s->server_id_len = server_id_len;
    s->token = token;
    s->token_len = token_len;
    fcm_token_fp(token, token_len, s->fp);
    s->start_ns = uv_hrtime();
    w->in_flight++;
    list_push_back(&w->waiting, &s->link);
    if (token_valid(w))
        start_send(s);
    else if (!w->fetch)
        start_fetch(w);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------ */

void push_shutdown(struct push_waker *w)
{
    if (!w || w->shut)
        return;
    w->shut = true;
    /* curluv reports every running transfer as cancelled: the token fetch
     * fails the sends queued behind it, each send fails itself. */
    curluv_close(w->cu);
    w->cu = NULL;
    fail_waiting(w, PUSH_SEND_FAILED, ERR_CANCELLED);
    uv_timer_stop(&w->sweep);
    uv_close((uv_handle_t *)&w->sweep, NULL);
}

void push_free(struct push_waker *w)
{
    if (!w)
        return;
    free_secret(w->access_token);
    end_fetch(w);
    ratelimit_free(&w->rl);
    fcm_creds_free(&w->creds);
    free(w->send_url);
    free(w->ca_bundle);
    free(w);
}
