/* xclaim.h — cluster mode's claim of a server-id this shard holds no slot
 * for (docs/features/cluster-ownership.md, "The claim path"; cluster.md
 * §3.3). It drives the pure claim machine (cluster/claim.h): KV operations
 * run on the ctl thread (node_submit) and come back as relay tasks, a
 * CLAIM for a live owner goes out on the bus, sleeps are timers on this
 * loop. On ACCEPT it installs the slot with its ownership epoch and hands
 * the binary back to the relay. While a claim for a server-id runs, other
 * binaries claiming it on this shard wait and start over when it ends.
 * It also frees a record (CAS to "0") when a slot holding one stops being
 * held. Threads: the shard's own loop. */
#ifndef RELAY_XCLAIM_H
#define RELAY_XCLAIM_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/claim.h"
#include "relay/peer.h"

/* What the relay does with the binary once the claim has ended. */
struct xclaim_ops {
    void (*accept)(struct peer *b, bool takeover); /* the slot is installed */
    void (*conflict)(struct peer *b);              /* a live owner keeps it: 4409 */
    void (*fail)(struct peer *b, const char *why); /* the bus kept failing (CLAIM_WHY_*) */
    void (*again)(struct peer *b);                 /* a claim it waited for ended: start over */
};

/* Sets up r's claim list and the registry's release hook (cluster mode). */
void xclaim_init(struct relay *r);

/* True when b's claim must go through the cluster: a node exists and this
 * shard holds no slot for b's server-id (or is claiming it already). */
bool xclaim_needed(const struct relay *r, const struct peer *b);

/* True while a claim of sid runs on r's shard. */
bool xclaim_pending(const struct relay *r, const char *sid, size_t len);

/* Starts (or queues behind a running one) the claim of b's server-id; b is
 * not read meanwhile. Exactly one ops callback ends it, unless b's
 * WebSocket ends first (xclaim_abort). */
void xclaim_start(struct peer *b, const struct xclaim_ops *ops);

/* b's WebSocket ended while it claimed or waited. */
void xclaim_abort(struct peer *b);

/* How long a forwarded CLAIM waits for the owner's CLAIM_ACK: a node that
 * does not acknowledge at once is crashed or frozen (then its lease is
 * polled, cluster.md §3.3 step 5). */
#define XCLAIM_ACK_MS 1000

/* The owner acknowledged the CLAIM with request id req: its verdict may
 * take the probe timeout + 2 s. */
void xclaim_acked(struct relay *r, uint64_t req);

/* A reply to the CLAIM with request id req arrived on the bus: o is one of
 * CLAIM_R_REPLY_CONFLICT, CLAIM_R_HANDOVER (epoch, takeover) or
 * CLAIM_R_NOT_OWNER. Unknown ids are ignored (a timed-out request). */
void xclaim_reply(struct relay *r, uint64_t req, enum claim_outcome o, uint64_t epoch,
                  bool takeover);

#endif
