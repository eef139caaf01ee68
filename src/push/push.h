/* push.h — the push waker (docs/features/push.md): admits a binary's wake
 * request (validation, a token bucket per server-id, a relay-wide cap on
 * sends in flight), then sends it to FCM asynchronously on the loop through
 * curluv: one shared OAuth2 access token, fetched once and reused until
 * shortly before it expires, then POST messages:send. Each admitted wake
 * ends in exactly one outcome line and one outcome count. A send outlives
 * the binary that asked for it; only shutdown cancels it.
 * Shard 0's loop only (other shards post their wakes there, see
 * relay/wake.h). */
#ifndef RELAY_PUSH_H
#define RELAY_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "push/fcm.h"

#define PUSH_BURST           6               /* wakes a server-id may send at once */
#define PUSH_REFILL_MS       (10 * 1000)     /* one more every 10 s */
#define PUSH_SWEEP_MS        (5 * 60 * 1000) /* idle buckets are dropped this often */
#define PUSH_MAX_INFLIGHT    32              /* sends in flight, relay-wide */
#define PUSH_TOKEN_SLACK_MS  (10 * 1000)     /* refresh this long before expiry */
#define PUSH_TOKEN_DEFAULT_S 3600            /* lifetime when the reply gives none */

/* Label values of pyrycode_relay_push_wakes_total{outcome}. */
enum push_outcome {
    PUSH_SENT,
    PUSH_UNREGISTERED,
    PUSH_SEND_FAILED,
    PUSH_TOKEN_FETCH_FAILED,
    PUSH_DROPPED,
    PUSH__COUNT
};

struct push_config {
    const char *fcm_base_url; /* "https://fcm.googleapis.com" */
    const char *fcm_project;  /* "pyrycode-mobile" */
    const char *ca_bundle;    /* PEM file trusted for outbound TLS; NULL or "" = system */
    uint64_t timeout_ms;      /* per HTTP call (token fetch, send) */
    /* Clocks, injectable for tests. NULL: the loop's time (ms) and time(2). */
    uint64_t (*mono_ms)(void *ctx);
    int64_t (*wall_s)(void *ctx);
    void *clock_ctx;
};

struct push_waker;

/* Creates the waker on loop. It takes over creds (the struct is zeroed);
 * cfg's strings are copied. Never fails (out of memory aborts). */
struct push_waker *push_new(uv_loop_t *loop, const struct push_config *cfg,
                            struct fcm_creds *creds);

/* Admits the wake object raw[0..len) from the binary holding server_id,
 * checking in the reference's order (docs/features/push.md): push off (w
 * NULL), validation, shut down, the server-id's bucket, the in-flight cap.
 * Returns NULL when admitted (the send runs on; server_id and the token
 * are copied), else the refusal error for binary_forwarder_push_wake_dropped.
 * Rate-limit and cap refusals count as `dropped`; the others count nothing. */
const char *push_wake(struct push_waker *w, const char *server_id, size_t server_id_len,
                      const uint8_t *raw, size_t len);

/* Process shutdown: every send in flight is cancelled (logged and counted
 * send_failed), later wakes are refused as push off, the uv handles are
 * closed. The loop must then run once more before push_free. NULL-safe and
 * idempotent. */
void push_shutdown(struct push_waker *w);

/* Frees w (after push_shutdown and the loop's close callbacks). NULL-safe. */
void push_free(struct push_waker *w);

/* The outcome counter o. */
uint64_t push_outcome_count(const struct push_waker *w, enum push_outcome o);

/* The metric label of o ("sent", "unregistered", "send_failed",
 * "token_fetch_failed", "dropped"). */
const char *push_outcome_name(enum push_outcome o);

/* Admitted sends whose outcome is not known yet. */
size_t push_in_flight(const struct push_waker *w);

#endif
