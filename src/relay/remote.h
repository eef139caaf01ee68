/* remote.h — phones whose binary lives on another node (docs/features/cluster.md,
 * "Phones across nodes"; cluster.md §4.2, §5, §6). Two sides of one phone:
 * - on the phone's node N, the phone's peer is *remote-bound*: it attaches
 *   to the owner (a record read, then ATTACH over the bus), its messages go
 *   out as P2B (JSON validated here, once), frames for it arrive as B2P and
 *   are written here under its own outbox budget, and it leaves with a
 *   NOTICE (or after a close directive, a DETACH);
 * - on the owner B, a *stub* stands for it in the registry: a struct peer
 *   without a connection, counted in the cap like a local phone, through
 *   which the binary's frames go out as B2P and its messages come in as P2B,
 *   and which is evicted with an EVICT (reason → the single-node close).
 * Node heartbeats on pyry.<c>.all tell each side when the other node went
 * silent (5 s): remote-bound phones then close 1011 "cluster link lost",
 * stubs are dropped with a 1011 close notice to their binary.
 * Threads: everything on the shard's own loop; remote_start on the main
 * thread before the loops run. */
#ifndef RELAY_REMOTE_H
#define RELAY_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/busmsg.h"
#include "relay/peer.h"

#define REMOTE_ATTACH_MS  2000 /* ATTACH reply wait, then 4404 */
#define REMOTE_SILENCE_MS 5000 /* a node not heard for this long is gone */
#define REMOTE_HB_MS      1000 /* heartbeat period (shard 0 of every node) */
#define REMOTE_SUBJECT    160
#define REMOTE_BUF_HIGH   (16u << 20) /* bus send buffer: stop reading the feeders */
#define REMOTE_BUF_LOW    (4u << 20)  /* ... read them again */
#define REMOTE_BUF_RESET  (64u << 20) /* ... reset every association */

/* What the relay does with a remote-bound phone once the owner answered. */
struct remote_ops {
    void (*registered)(struct peer *p, const char *dev, size_t dev_len);
    void (*no_server)(struct peer *p); /* 4404 "no server with that id" */
    void (*at_cap)(struct peer *p);    /* 4429 */
    /* the claim of its server-id on this shard it waited for is over:
     * start the phone again (it may now register here) */
    void (*again)(struct peer *p, const char *dev, size_t dev_len);
};

/* How a shard publishes: to subject, header h and payload (NULL, 0: none),
 * with reply subject `reply` (NULL: none). 0 or -1. Set by xnode. */
typedef int (*remote_send_fn)(struct relay *r, const char *subject, const char *reply,
                              struct busmsg_hdr *h, const void *payload, size_t len);

/* Cluster mode: per-shard state for every relay of sh, and the heartbeat
 * timers (main thread, before the loops run). */
void remote_start(struct relay_shared *sh, remote_send_fn send);

/* The shard's own subject for replies and this node's identity changed
 * (bus (re)opened): base is pyry.<c>.s.<node>.<k>, prefix pyry.<c>.s. */
void remote_set_identity(struct relay *r, const char *prefix, const char *base, const char *node,
                         uint64_t epoch);

/* True when p's server-id has no slot on this shard and a node exists. */
bool remote_needed(const struct relay *r, const struct peer *p);

/* Attaches phone p to the owner of its server-id; p is not read until
 * one of ops ends it (or its WebSocket ends first). */
void remote_attach(struct peer *p, const char *dev, size_t dev_len, const struct remote_ops *ops);

/* The phone's node: a validated message of remote-bound phone p. */
void remote_phone_message(struct peer *p, const uint8_t *data, size_t len);

/* The phone's node: remote-bound phone p's WebSocket ended with notice
 * code `code` (0: the binary closed it, no notice). Frees its state. */
void remote_phone_ended(struct peer *p, uint16_t code);

/* The owner: the binary's frame and/or close directive for stub p. */
void remote_stub_route(struct peer *stub, const uint8_t *frame, size_t len, uint16_t code);

/* The owner: stub p is dropped: tell its node to close the phone (EVICT
 * reason, an enum busmsg_evict), unregister and free it. */
void remote_stub_evict(struct peer *stub, int reason);

/* The owner: stub's binary is over (pause) / back under (resume) its
 * outbox marks: its node pauses / resumes the phone (XOFF / XON). */
void remote_stub_pause(struct peer *stub, bool pause);

/* The owner: every stub of this shard is evicted with reason (drain: SHUTDOWN). */
void remote_evict_all(struct relay *r, enum busmsg_evict reason);

/* A message for this shard (xnode's dispatch): ATTACH, ATTACH_OK,
 * NO_SERVER, AT_CAP, NOT_OWNER (to an ATTACH), P2B, B2P, NOTICE, DETACH,
 * EVICT, HB. */
void remote_on_msg(struct relay *r, const struct busmsg_hdr *h, const uint8_t *payload, size_t len,
                   const char *reply);

/* The phone's peer goes away (on_free): forget its remote state. */
void remote_phone_free(struct peer *p);

/* r's bus connection is back: SYNC every link at once (cluster.md §4.4). */
void remote_bus_reconnected(struct relay *r);

/* After the loops: frees r's state (stubs were evicted by the drain). */
void remote_close(struct relay *r);

#endif
