/* forward.h — the two forwarders: a phone's message to its binary wrapped
 * in the routing envelope, a binary's envelope to the addressed phone (or a
 * close directive, or a push wake), the close notice a binary gets when a
 * phone leaves, back-pressure from a slow binary to its phones, and the
 * per-server-id bandwidth limit. All on the peers' shard thread. */
#ifndef RELAY_FORWARD_H
#define RELAY_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "relay/peer.h"

/* A data message from a phone / from a binary (payload valid only during
 * the call). */
void forward_from_phone(struct peer *p, uint8_t *data, size_t len);
void forward_from_binary(struct peer *b, uint8_t *data, size_t len);

/* The binary's outbox drained below the low-water mark: its phones are
 * read again. */
void forward_binary_drained(struct peer *b);

/* The binary's WebSocket ended; its phones are no longer throttled for it
 * and its bandwidth bucket goes. */
void forward_binary_gone(struct peer *b);

/* Phone p joined binary b's server-id (b may be NULL): paused or throttled
 * if b's phones are. */
void forward_phone_joined(struct peer *p, struct peer *b);

/* A phone's WebSocket ended; sends its binary the close notice if due. */
void forward_phone_ended(struct peer *p);

/* Sets up the bandwidth timer of relay r (relay_init, on r's loop). */
void forward_bw_init(struct relay *r);

/* A validated phone message for its binary on this shard: p is a local
 * phone or a stub (cluster: the phone is on another node). */
void forward_phone_frame(struct peer *p, uint8_t *data, size_t len);

/* A frame (NULL: none) and/or close directive (code 0: none) for phone p,
 * written here under its outbox budget; b (NULL: on another node) gets the
 * byte count. */
void forward_deliver(struct peer *b, struct peer *p, const uint8_t *frame, size_t frame_len,
                     uint16_t code);

/* Phone p left with notice code `code`: its binary gets the close notice
 * unless the binary closed it, the id changed hands or the relay stops. */
void forward_phone_gone(struct peer *p, uint16_t code);

/* The code a phone's close notice carries: the relay's close code, else
 * the phone's own, else 1001. */
uint16_t forward_notice_code(const struct conn *c);

#endif
