/* fuzz_fcm.c — everything fcm.c reads from the network or a binary, on
 * arbitrary bytes: FCM send replies (2xx and error statuses), token
 * replies and push_wake objects. Invariants: a message id, when given, is
 * one the filter accepts; an error is "relay: fcm send failed: status N"
 * with at most a parenthesised list of [A-Z0-9_] reasons (no other input
 * byte ever reaches a log line); UNREGISTERED only when the errorCode is
 * exactly that word (check_unregistered); an access token is printable; a
 * decoded wake token round-trips through the send body and jansson to the
 * same bytes; every answer is deterministic. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/fcm.h"
#include "codec/json.h"

/* fcm.c lists the reply's status, then its FcmError errorCode, each only
 * when it is a valid reason (so neither contains ", "), and answers
 * UNREGISTERED exactly when the errorCode is the whole word UNREGISTERED.
 * Seen from the message: UNREGISTERED only when the list's last reason is
 * exactly "UNREGISTERED" (not "2UNREGISTERED"), and always when that reason
 * is the second of two (so it is the errorCode). A lone "(UNREGISTERED)"
 * may be either the status or the errorCode, so either outcome is fine. */
static void check_unregistered(const struct fcm_reply *r, const char *rest)
{
    static const char word[] = "UNREGISTERED)";
    size_t len = strlen(rest), wl = sizeof word - 1;
    bool last = false, second = false;
    if (len >= wl + 2 && strcmp(rest + len - wl, word) == 0) {
        const char *before = rest + len - wl;
        second = strncmp(before - 2, ", ", 2) == 0;
        last = second || before - rest == 2; /* right after " (" */
    }
    if (r->outcome == FCM_UNREGISTERED && !last)
        abort();
    if (second && r->outcome != FCM_UNREGISTERED)
        abort();
}

static void check_reply(long status, const uint8_t *data, size_t size)
{
    struct fcm_reply r, again;
    fcm_send_reply(status, (const char *)data, size, &r);
    fcm_send_reply(status, (const char *)data, size, &again);
    if (memcmp(&r, &again, sizeof r) != 0)
        abort();
    if (r.message_id[0] && !fcm_message_id_valid(r.message_id, strlen(r.message_id)))
        abort();
    if (status >= 200 && status <= 299) {
        if (r.outcome != FCM_SENT || r.err[0])
            abort();
        return;
    }
    char head[64];
    int n = snprintf(head, sizeof head, "relay: fcm send failed: status %ld", status);
    if (r.outcome == FCM_SENT || r.message_id[0] || strncmp(r.err, head, (size_t)n) != 0)
        abort();
    const char *rest = r.err + n;
    if (*rest) {
        size_t len = strlen(rest);
        if (len < 4 || strncmp(rest, " (", 2) != 0 || rest[len - 1] != ')')
            abort();
        for (size_t i = 2; i + 1 < len; i++) {
            char c = rest[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ',' ||
                  c == ' '))
                abort();
        }
    }
    check_unregistered(&r, rest);
}

static void check_token_reply(const uint8_t *data, size_t size)
{
    char *tok;
    int64_t exp;
    if (fcm_token_reply((const char *)data, size, &tok, &exp) != 0)
        return;
    if (!tok[0] || exp < 0)
        abort();
    for (const char *p = tok; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            abort();
    free(tok);
}

static void check_wake(const uint8_t *data, size_t size)
{
    char *tok;
    size_t n, body_len;
    enum fcm_wake w = fcm_wake_parse(data, size, &tok, &n);
    if (w != FCM_WAKE_OK) {
        if (tok || !fcm_wake_error(w))
            abort();
        if (w != FCM_WAKE_MALFORMED && !json_valid(data, size))
            abort();
        return;
    }
    if (!json_valid(data, size) || n == 0)
        abort();
    char *body = fcm_send_body(tok, n, &body_len);
    json_error_t err;
    json_t *doc = json_loadb(body, body_len, JSON_ALLOW_NUL, &err);
    json_t *t = json_object_get(json_object_get(doc, "message"), "token");
    if (!json_is_string(t) || json_string_length(t) != n || memcmp(json_string_value(t), tok, n))
        abort();
    json_decref(doc);
    free(body);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The reply reader only ever sees the first FCM_REPLY_MAX bytes. */
    size_t cut = size > FCM_REPLY_MAX ? FCM_REPLY_MAX : size;
    static const long statuses[] = {200, 204, 307, 400, 401, 403, 404, 500, 503};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        check_reply(statuses[i], data, cut);
    check_token_reply(data, cut);
    check_wake(data, size);
    return 0;
}
