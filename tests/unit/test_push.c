/* test_push.c — the push waker end to end against a scripted local HTTP
 * server with injected clocks (docs/features/push.md; the reference's push_test /
 * metrics_push_test): request shapes (token grant with a verifiable assertion, FCM send with bearer
 * and exact body), one token fetch shared by concurrent sends and reused until shortly before
 * expiry, every outcome and its line, the admission order and errors, the per-server-id bucket, the
 * in-flight cap, per-call timeouts, the 4 KiB reply cap, no redirects, cancellation at shutdown,
 * and that no secret reaches a log line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fcm_testkit.h"
#include "http_stub.h"
#include "base/log.h"
#include "push/push.h"

#define ACCESS    "ya29.SECRET-ACCESS-TOKEN"
#define SEND_PATH "/v1/projects/p/messages:send"

enum token_mode { TOK_OK, TOK_401, TOK_GARBAGE, TOK_HANG, TOK_SHORT };

struct fx {
    uv_loop_t loop;
    struct stub st;
    struct push_waker *w;
    EVP_PKEY *key;
    uint64_t now_ms;
    int64_t wall;
    enum token_mode token_mode;
    int jwt_bad;
    int log_fd;
    char token_uri[64];
};

static EVP_PKEY *g_key;

static uint64_t mono(void *ctx)
{
    return ((struct fx *)ctx)->now_ms;
}

static int64_t wall(void *ctx)
{
    return ((struct fx *)ctx)->wall;
}

static void check_token_request(struct fx *f, const struct stub_req *req)
{
    char ct[128], *header = NULL, *claims = NULL;
    const char *prefix =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    bool ok = strcmp(req->method, "POST") == 0 && stub_header(req, "Content-Type", ct, sizeof ct) &&
              strcmp(ct, "application/x-www-form-urlencoded") == 0 &&
              strncmp(req->body, prefix, strlen(prefix)) == 0 &&
              tk_jwt_verify(req->body + strlen(prefix), f->key, &header, &claims);
    char want[512];
    snprintf(want, sizeof want,
             "{\"iss\":\"relay@p.iam\",\"scope\":\"https://www.googleapis.com/auth/"
             "firebase.messaging\",\"aud\":\"%s\",\"exp\":%lld,\"iat\":%lld}",
             f->token_uri, (long long)(f->wall - 10 + 3600), (long long)(f->wall - 10));
    if (!ok || strcmp(claims, want) != 0)
        f->jwt_bad++;
    free(header);
    free(claims);
}

/* The send's device token picks the scripted reply. */
static void on_send(struct fx *f, struct stub_conn *c, const struct stub_req *req)
{
    char auth[128], ct[64];
    json_t *doc = json_loads(req->body, 0, NULL);
    const char *tok = json_string_value(json_object_get(json_object_get(doc, "message"), "token"));
    (void)f;
    if (!stub_header(req, "Authorization", auth, sizeof auth) ||
        strcmp(auth, "Bearer " ACCESS) != 0 || !stub_header(req, "Content-Type", ct, sizeof ct) ||
        strcmp(ct, "application/json") != 0 || strcmp(req->method, "POST") != 0)
        tok = "bad-request-shape";
    char body[256];
    snprintf(body, sizeof body,
             "{\"message\":{\"token\":\"%s\",\"android\":{\"priority\":\"HIGH\"}}}",
             tok ? tok : "");
    if (!tok || strcmp(body, req->body) != 0)
        stub_reply(c, 418, "{}");
    else if (strcmp(tok, "ok-id") == 0)
        stub_reply(c, 200, "{\"name\":\"projects/p/messages/0:123%abc\"}");
    else if (strcmp(tok, "ok-noid") == 0)
        stub_reply(c, 200, "{\"name\":\"not a valid id\"}");
    else if (strcmp(tok, "unreg") == 0)
        stub_reply(c, 404,
                   "{\"error\":{\"code\":404,\"message\":\"gone\",\"status\":\"NOT_FOUND\","
                   "\"details\":[{\"@type\":\"type.googleapis.com/"
                   "google.firebase.fcm.v1.FcmError\",\"errorCode\":\"UNREGISTERED\"}]}}");
    else if (strcmp(tok, "e500") == 0)
        stub_reply(c, 500, "{\"error\":{\"message\":\"internal SECRET-BODY-TEXT\"}}");
    else if (strcmp(tok, "unauth") == 0)
        stub_reply(c, 401, "{\"error\":{\"status\":\"UNAUTHENTICATED\"}}");
    else if (strcmp(tok, "redir") == 0)
        stub_reply_ex(c, 307, "Location: /elsewhere\r\n", "", 0);
    else if (strcmp(tok, "big-ok") == 0 || strcmp(tok, "big-404") == 0) {
        char big[10000];
        int n = snprintf(big, sizeof big,
                         "{\"name\":\"x\",\"error\":{\"status\":\"NOT_FOUND\","
                         "\"pad\":\"");
        memset(big + n, 'p', sizeof big - (size_t)n - 3);
        memcpy(big + sizeof big - 3, "\"}}", 3);
        stub_reply_ex(c, tok[4] == 'o' ? 200 : 404, NULL, big, sizeof big);
    } else if (strcmp(tok, "hang") != 0)
        stub_reply(c, 400, "{\"error\":{\"status\":\"INVALID_ARGUMENT\"}}");
    json_decref(doc);
}

static void handler(struct stub *st, struct stub_conn *c, const struct stub_req *req)
{
    struct fx *f = st->ctx;
    if (strcmp(req->path, "/token") == 0) {
        check_token_request(f, req);
        switch (f->token_mode) {
        case TOK_OK:
            stub_reply(c, 200,
                       "{\"access_token\":\"" ACCESS "\",\"token_type\":\"Bearer\","
                       "\"expires_in\":3599}");
            break;
        case TOK_SHORT:
            stub_reply(c, 200, "{\"access_token\":\"" ACCESS "\",\"expires_in\":100}");
            break;
        case TOK_401:
            stub_reply(c, 401, "{\"error\":\"invalid_grant SECRET-BODY-TEXT\"}");
            break;
        case TOK_GARBAGE:
            stub_reply(c, 200, "<html>SECRET-BODY-TEXT</html>");
            break;
        case TOK_HANG:
            break;
        }
    } else if (strcmp(req->path, SEND_PATH) == 0) {
        on_send(f, c, req);
    } else {
        stub_reply(c, 404, "{}");
    }
}

static void start_waker(struct fx *f, const char *base_url, uint64_t timeout_ms)
{
    struct fcm_creds creds;
    char *pem = tk_key_pem(f->key, "pkcs8");
    char *json = tk_creds_json("service_account", "relay@p.iam", pem, "kid-1", f->token_uri);
    assert_int_equal(fcm_creds_parse(json, strlen(json), &creds), 0);
    free(json);
    free(pem);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", f->st.port);
    struct push_config cfg = {.fcm_base_url = base_url ? base_url : url,
                              .fcm_project = "p",
                              .timeout_ms = timeout_ms,
                              .mono_ms = mono,
                              .wall_s = wall,
                              .clock_ctx = f};
    f->w = push_new(&f->loop, &cfg, &creds);
    assert_null(creds.key); /* taken over */
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->key = g_key;
    f->now_ms = 1000;
    f->wall = 1700000000;
    uv_loop_init(&f->loop);
    stub_start(&f->st, &f->loop, handler, f);
    snprintf(f->token_uri, sizeof f->token_uri, "http://127.0.0.1:%d/token", f->st.port);
    f->log_fd = memfd_create("log", 0);
    log_setup(LOG_FORMAT_TEXT, LOG_INFO, f->log_fd);
    start_waker(f, NULL, 5000);
    *state = f;
    return 0;
}

static bool stub_closed(void *arg)
{
    return ((struct stub *)arg)->open_handles == 0;
}

static char *logs(struct fx *f)
{
    off_t n = lseek(f->log_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(f->log_fd, buf, (size_t)n, 0), n);
    return buf;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    push_shutdown(f->w);
    stub_stop(&f->st);
    stub_run_until(&f->loop, stub_closed, &f->st, 2000);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    push_free(f->w);
    /* nothing secret in any line, whatever the test did */
    char *text = logs(f);
    assert_null(strstr(text, ACCESS));
    assert_null(strstr(text, "SECRET"));
    assert_null(strstr(text, "BEGIN"));
    assert_null(strstr(text, "assertion"));
    free(text);
    close(f->log_fd);
    log_setup(LOG_FORMAT_TEXT, LOG_INFO, 2);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static const char *wake(struct fx *f, const char *sid, const char *token)
{
    char raw[256];
    snprintf(raw, sizeof raw, "{\"platform\":\"fcm\",\"token\":\"%s\"}", token);
    return push_wake(f->w, sid, strlen(sid), (const uint8_t *)raw, strlen(raw));
}

static bool settled(void *arg)
{
    struct fx *f = arg;
    return push_in_flight(f->w) == 0;
}

static void run(struct fx *f)
{
    assert_true(stub_run_until(&f->loop, settled, f, 8000));
}

static uint64_t count(struct fx *f, enum push_outcome o)
{
    return push_outcome_count(f->w, o);
}

static void test_nil_is_push_off(void **state)
{
    (void)state;
    const uint8_t raw[] = "{\"platform\":\"fcm\",\"token\":\"t\"}";
    assert_string_equal(push_wake(NULL, "s", 1, raw, sizeof raw - 1), "relay: push is off");
    /* push off wins over validation (docs/features/push.md) */
    assert_string_equal(push_wake(NULL, "s", 1, (const uint8_t *)"[]", 2), "relay: push is off");
    assert_string_equal(push_outcome_name(PUSH_SENT), "sent");
    assert_string_equal(push_outcome_name(PUSH_UNREGISTERED), "unregistered");
    assert_string_equal(push_outcome_name(PUSH_SEND_FAILED), "send_failed");
    assert_string_equal(push_outcome_name(PUSH_TOKEN_FETCH_FAILED), "token_fetch_failed");
    assert_string_equal(push_outcome_name(PUSH_DROPPED), "dropped");
}

/* SendsOnceToToken, ReusesAccessToken, SendRequestShape, SuccessReplyMessageID. */
static void test_sends_and_reuses_token(void **state)
{
    struct fx *f = *state;
    assert_null(wake(f, "s1", "ok-id"));
    assert_null(wake(f, "s2", "ok-noid"));
    assert_null(wake(f, "s3", "ok-id"));
    assert_int_equal(push_in_flight(f->w), 3);
    run(f);
    assert_int_equal(stub_count(&f->st, "/token"), 1); /* one fetch for all three */
    assert_int_equal(stub_count(&f->st, SEND_PATH), 3);
    assert_int_equal(f->jwt_bad, 0);
    assert_int_equal(count(f, PUSH_SENT), 3);
    /* later sends reuse the cached token */
    f->now_ms += 3000 * 1000;
    assert_null(wake(f, "s1", "ok-id"));
    run(f);
    assert_int_equal(stub_count(&f->st, "/token"), 1);
    assert_int_equal(count(f, PUSH_SENT), 4);
    char *text = logs(f);
    char fp[9], line[256];
    fcm_token_fp("ok-id", 5, fp);
    snprintf(line, sizeof line,
             "level=INFO msg=push_wake_sent server_id=s1 token_fp=%s duration=", fp);
    assert_non_null(strstr(text, line));
    assert_non_null(strstr(text, "fcm_message_id=projects/p/messages/0:123%abc\n"));
    fcm_token_fp("ok-noid", 7, fp);
    snprintf(line, sizeof line, "server_id=s2 token_fp=%s duration=", fp);
    char *l = strstr(text, line);
    assert_non_null(l);
    assert_null(memmem(l, (size_t)(strchr(l, '\n') - l), "fcm_message_id", 14));
    assert_null(strstr(text, "ok-id"));
    assert_null(strstr(text, "ok-noid"));
    free(text);
}

static void test_token_refreshed_before_expiry(void **state)
{
    struct fx *f = *state;
    f->token_mode = TOK_SHORT; /* expires_in 100 s */
    assert_null(wake(f, "s", "ok-id"));
    run(f);
    f->now_ms += 89 * 1000; /* 11 s left: still good */
    assert_null(wake(f, "s", "ok-id"));
    run(f);
    assert_int_equal(stub_count(&f->st, "/token"), 1);
    f->now_ms += 2 * 1000; /* 9 s left: inside the 10 s slack */
    f->wall += 91;
    assert_null(wake(f, "s", "ok-id"));
    run(f);
    assert_int_equal(stub_count(&f->st, "/token"), 2);
    assert_int_equal(f->jwt_bad, 0);
    assert_int_equal(count(f, PUSH_SENT), 3);
}

/* FCMOutcomes + NonSuccessReplyNamesOnlyStatus + no redirect follow. */
static void test_outcomes(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *token;
        enum push_outcome o;
        const char *err;
    } rows[] = {
        {"unreg", PUSH_UNREGISTERED,
         "err=\"relay: fcm send failed: status 404 (NOT_FOUND, UNREGISTERED)\""},
        {"bad", PUSH_SEND_FAILED, "err=\"relay: fcm send failed: status 400 (INVALID_ARGUMENT)\""},
        {"e500", PUSH_SEND_FAILED, "err=\"relay: fcm send failed: status 500\"\n"},
        {"redir", PUSH_SEND_FAILED, "err=\"relay: fcm send failed: status 307\"\n"},
        {"big-404", PUSH_SEND_FAILED, "err=\"relay: fcm send failed: status 404\"\n"},
        {"big-ok", PUSH_SENT, NULL},
    };
    uint64_t want[PUSH__COUNT] = {0};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char sid[8];
        snprintf(sid, sizeof sid, "s%zu", i);
        assert_null(wake(f, sid, rows[i].token));
        want[rows[i].o]++;
    }
    run(f);
    for (int o = 0; o < PUSH__COUNT; o++)
        assert_int_equal(count(f, (enum push_outcome)o), want[o]);
    assert_int_equal(stub_count(&f->st, "/elsewhere"), 0);
    char *text = logs(f);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char fp[9], line[160];
        fcm_token_fp(rows[i].token, strlen(rows[i].token), fp);
        snprintf(line, sizeof line, "msg=%s server_id=s%zu token_fp=%s duration=",
                 rows[i].err ? "push_wake_send_failed" : "push_wake_sent", i, fp);
        char *l = strstr(text, line);
        if (!l)
            fail_msg("no line for %s:\n%s", rows[i].token, text);
        if (rows[i].err) {
            assert_true(strncmp(l - 11, "level=WARN ", 11) == 0);
            assert_non_null(strstr(l, rows[i].err));
        } else {
            assert_null(strstr(l, "fcm_message_id=x")); /* the id was past the 4 KiB cut */
        }
    }
    free(text);
}

/* FCM answering 401 drops the cached token: the next wake fetches anew. */
static void test_unauthorized_send_refetches(void **state)
{
    struct fx *f = *state;
    assert_null(wake(f, "s", "unauth"));
    run(f);
    assert_int_equal(count(f, PUSH_SEND_FAILED), 1);
    assert_null(wake(f, "s", "ok-id"));
    run(f);
    assert_int_equal(stub_count(&f->st, "/token"), 2);
    assert_int_equal(count(f, PUSH_SENT), 1);
}

/* TokenFetchFailureCarriesNoBody; no FCM request after a token failure; one
 * failing fetch fails every send queued behind it. */
static void test_token_fetch_failures(void **state)
{
    struct fx *f = *state;
    f->token_mode = TOK_401;
    assert_null(wake(f, "a", "ok-id"));
    assert_null(wake(f, "b", "ok-id"));
    assert_null(wake(f, "c", "ok-id"));
    run(f);
    assert_int_equal(stub_count(&f->st, "/token"), 1);
    assert_int_equal(stub_count(&f->st, SEND_PATH), 0);
    assert_int_equal(count(f, PUSH_TOKEN_FETCH_FAILED), 3);
    f->token_mode = TOK_GARBAGE;
    assert_null(wake(f, "d", "ok-id"));
    run(f);
    assert_int_equal(count(f, PUSH_TOKEN_FETCH_FAILED), 4);
    char *text = logs(f);
    assert_non_null(strstr(text, "msg=push_wake_send_failed server_id=a token_fp="));
    assert_non_null(strstr(text, "err=\"relay: fcm access-token fetch failed: status 401\"\n"));
    assert_non_null(strstr(text, "server_id=d "));
    assert_non_null(strstr(text, "err=\"relay: fcm access-token fetch failed\"\n"));
    free(text);
    /* the endpoint recovers: the next wake fetches and sends */
    f->token_mode = TOK_OK;
    assert_null(wake(f, "e", "ok-id"));
    run(f);
    assert_int_equal(count(f, PUSH_SENT), 1);
}

static void test_rejects_invalid_wake(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *raw, *err;
    } rows[] = {
        {"\"x\"", "relay: malformed push_wake"},
        {"{\"platform\":\"fcm\",\"token\":1}", "relay: malformed push_wake"},
        {"{\"platform\":\"apns\",\"token\":\"t\"}", "relay: push_wake platform not supported"},
        {"{\"token\":\"t\"}", "relay: push_wake platform not supported"},
        {"{\"platform\":\"fcm\",\"token\":\"\"}", "relay: push_wake token is empty"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        for (int k = 0; k < 10; k++) /* never rate-limited: refused before the bucket */
            assert_string_equal(
                push_wake(f->w, "s", 1, (const uint8_t *)rows[i].raw, strlen(rows[i].raw)),
                rows[i].err);
    for (int o = 0; o < PUSH__COUNT; o++)
        assert_int_equal(count(f, (enum push_outcome)o), 0); /* counts nothing */
    assert_null(wake(f, "s", "ok-id"));
    run(f);
}

/* RateLimitedPerServerID: burst 6, one more per 10 s, per server-id. */
static void test_rate_limited_per_server_id(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 6; i++)
        assert_null(wake(f, "s1", "ok-id"));
    assert_string_equal(wake(f, "s1", "ok-id"), "relay: push_wake rate-limited for server-id");
    assert_null(wake(f, "s2", "ok-id"));
    assert_int_equal(count(f, PUSH_DROPPED), 1);
    f->now_ms += 9999;
    assert_non_null(wake(f, "s1", "ok-id"));
    f->now_ms += 1;
    assert_null(wake(f, "s1", "ok-id"));
    assert_non_null(wake(f, "s1", "ok-id"));
    assert_int_equal(count(f, PUSH_DROPPED), 3);
    run(f);
    assert_int_equal(count(f, PUSH_SENT), 8);
}

/* InFlightCap + CloseCancelsBlockedSend + CancelledByCloseIsSendFailed. */
static void test_in_flight_cap_and_shutdown(void **state)
{
    struct fx *f = *state;
    char sid[16];
    for (int i = 0; i < 32; i++) {
        snprintf(sid, sizeof sid, "s%d", i);
        assert_null(wake(f, sid, "hang"));
    }
    assert_string_equal(wake(f, "other", "ok-id"), "relay: push_wake in-flight cap reached");
    assert_int_equal(count(f, PUSH_DROPPED), 1);
    struct stub *st = &f->st;
    while (stub_count(st, SEND_PATH) < 32)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(push_in_flight(f->w), 32);
    push_shutdown(f->w);
    assert_int_equal(push_in_flight(f->w), 0);
    assert_int_equal(count(f, PUSH_SEND_FAILED), 32);
    /* the waker is shut: valid wakes are push-off, malformed ones still
     * get their own error (validation comes first) */
    assert_string_equal(wake(f, "s", "ok-id"), "relay: push is off");
    assert_string_equal(push_wake(f->w, "s", 1, (const uint8_t *)"1", 1),
                        "relay: malformed push_wake");
    assert_int_equal(count(f, PUSH_DROPPED), 1);
    char *text = logs(f);
    char want[160];
    snprintf(want, sizeof want,
             "err=\"relay: fcm send failed: Post \\\"http://127.0.0.1:%d/v1/projects/p/"
             "messages:send\\\": context canceled\"\n",
             f->st.port);
    assert_non_null(strstr(text, want));
    free(text);
}

static void test_shutdown_while_fetching_token(void **state)
{
    struct fx *f = *state;
    f->token_mode = TOK_HANG;
    assert_null(wake(f, "a", "ok-id"));
    assert_null(wake(f, "b", "ok-id"));
    struct stub *st = &f->st;
    while (stub_count(st, "/token") < 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    push_shutdown(f->w);
    assert_int_equal(count(f, PUSH_SEND_FAILED), 2);
    assert_int_equal(count(f, PUSH_TOKEN_FETCH_FAILED), 0);
    push_shutdown(f->w); /* idempotent */
}

/* Per-call timeout, token fetch and send alike; the send's transport error
 * names the URL (which holds nothing secret). */
static void test_timeouts(void **state)
{
    struct fx *f = *state;
    push_shutdown(f->w);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    push_free(f->w);
    start_waker(f, NULL, 300);
    uint64_t t0 = uv_hrtime();
    assert_null(wake(f, "s", "hang"));
    run(f);
    assert_true(uv_hrtime() - t0 >= 290 * 1000000ULL);
    assert_int_equal(count(f, PUSH_SEND_FAILED), 1);
    f->token_mode = TOK_HANG;
    f->now_ms += 4000 * 1000; /* token expired */
    assert_null(wake(f, "s", "ok-id"));
    run(f);
    assert_int_equal(count(f, PUSH_TOKEN_FETCH_FAILED), 1);
    char *text = logs(f);
    char want[160];
    snprintf(want, sizeof want,
             "err=\"relay: fcm send failed: Post \\\"http://127.0.0.1:%d/v1/projects/p/"
             "messages:send\\\": Operation timed out after",
             f->st.port);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "err=\"relay: fcm access-token fetch failed\"\n"));
    free(text);
}

static void test_transport_error(void **state)
{
    struct fx *f = *state;
    push_shutdown(f->w);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    push_free(f->w);
    start_waker(f, "http://127.0.0.1:1", 2000);
    assert_null(wake(f, "s", "ok-id"));
    run(f);
    assert_int_equal(count(f, PUSH_SEND_FAILED), 1);
    char *text = logs(f);
    assert_non_null(strstr(text, "err=\"relay: fcm send failed: Post "
                                 "\\\"http://127.0.0.1:1/v1/projects/p/messages:send\\\": "));
    free(text);
}

int main(void)
{
    g_key = EVP_RSA_gen(2048);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nil_is_push_off),
        T(test_sends_and_reuses_token),
        T(test_token_refreshed_before_expiry),
        T(test_outcomes),
        T(test_unauthorized_send_refetches),
        T(test_token_fetch_failures),
        T(test_rejects_invalid_wake),
        T(test_rate_limited_per_server_id),
        T(test_in_flight_cap_and_shutdown),
        T(test_shutdown_while_fetching_token),
        T(test_timeouts),
        T(test_transport_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    EVP_PKEY_free(g_key);
    return rc;
}
