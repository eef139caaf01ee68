/* wake.h — a binary's push_wake requests: admitted or refused by the one
 * FCM waker, which lives on shard 0's loop so its in-flight cap and access
 * token are relay-wide. Binaries on other shards post their wakes there.
 * wake_post runs on the binary's shard thread; the rest on shard 0's. */
#ifndef RELAY_WAKE_H
#define RELAY_WAKE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/peer.h"

/* Prepares sh's wake queue on loop (shard 0's). */
void wake_init(struct relay_shared *sh, uv_loop_t *loop);

/* Binary b's push_wake (raw JSON value): handed to the waker, here or via
 * shard 0; a refusal is logged as binary_forwarder_push_wake_dropped
 * (collapsed per text). */
void wake_post(struct peer *b, const uint8_t *raw, size_t len);

/* The loop is about to stop: wakes already posted meet the waker, then
 * push sends in flight are cancelled. */
void wake_shutdown(struct relay_shared *sh);

/* Frees wakes still queued and the waker (after the loops are gone). */
void wake_close(struct relay_shared *sh);

#endif
