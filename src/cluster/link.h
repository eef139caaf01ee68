/* link.h — per-link sequence numbers and peer liveness for the cluster bus
 * (cluster.md §4.4). Core NATS is at-most-once; this module turns every
 * loss into a verdict the caller acts on (reset the link: close the phones,
 * drop the stubs, send LINK_RESET). It holds numbers only, never
 * associations, performs no I/O and runs no timer: the caller passes
 * now_ms (uv_now) where time matters.
 *
 * A link is one direction pair between this shard and one shard of one peer
 * incarnation, named (node epoch, shard). Every message published on a
 * (node, shard) subject takes the sender's next sequence for that link,
 * starting at 1; SYNC takes none and carries the last one taken; messages on
 * pyry.<c>.all carry 0 and are not tracked. Sequences never restart while
 * both incarnations live: a reset drops associations, not numbers, so
 * messages still in flight when one side resets are judged by the same
 * count and resets cannot bounce back and forth. A node that re-registers
 * has a new epoch, hence new links.
 *
 * Receiving, per (src epoch, src shard) the last sequence seen:
 *   last + 1 → LINK_OK;  > last + 1 → LINK_GAP;  <= last → LINK_BACKWARDS.
 * Either disagreement adopts the sequence seen as the new last, so one loss
 * costs one reset. SYNC{n}: n == last → LINK_OK; n > last (the tail was
 * lost) → LINK_GAP; n < last → LINK_BACKWARDS; last becomes n.
 *
 * Peers: a heartbeat names (node, epoch). `node` is the caller's 64-bit
 * identity of a node across restarts (e.g. a SipHash of its name); a newer
 * epoch for the same node supersedes the older one, whose links are dropped
 * for good (its messages are LINK_STALE from then on). A peer silent for
 * silence_ms (5 s in production) is reported down once; a down peer comes
 * back up with its next heartbeat (same epoch: it was only frozen, its
 * sequences continue). Down and superseded peers are forgotten after
 * forget_ms.
 *
 * Threads: one tracker per shard, used only on that shard's loop thread
 * (every shard subscribes to its own subject and to pyry.<c>.all, so each
 * sees every heartbeat itself). A fenced node frees its trackers; its new
 * epoch starts with new ones. */
#ifndef RELAY_LINK_H
#define RELAY_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/busmsg.h"

#define LINK_MAX_SHARDS BUSMSG_MAX_SHARDS

enum link_verdict {
    LINK_OK = 0,        /* in order: handle the message */
    LINK_GAP = 1,       /* messages were lost: reset the link, then handle this one (for a
                           SYNC: just reset). It starts the count that follows */
    LINK_BACKWARDS = 2, /* at or below the last sequence: reset the link, drop the message */
    LINK_STALE = 3,     /* from a superseded incarnation: drop it, no reset */
    LINK_INVALID = 4,   /* epoch 0, sequence 0 (not a link message), or a shard the peer
                           cannot have: drop it, no reset */
};

enum link_hb {
    LINK_HB_NEW = 0,     /* first heartbeat of this incarnation: peer up */
    LINK_HB_ALIVE = 1,   /* a live peer's heartbeat */
    LINK_HB_UP = 2,      /* a peer reported down is heard again: peer up */
    LINK_HB_STALE = 3,   /* an older incarnation than the node's newest: ignored */
    LINK_HB_INVALID = 4, /* node 0, epoch 0, shards out of range, or an epoch already
                            heard under another node: ignored */
};

enum link_peer_state {
    LINK_PEER_UNKNOWN = 0,    /* no message, heartbeat or send seen (or forgotten) */
    LINK_PEER_LIVE = 1,       /* heard from, or just created by traffic */
    LINK_PEER_DOWN = 2,       /* silent for silence_ms, not yet heard again */
    LINK_PEER_SUPERSEDED = 3, /* its node registered again with a newer epoch */
};

/* Counters for metrics; monotonic over the tracker's life. */
struct link_stats {
    uint64_t gaps;       /* LINK_GAP from a message */
    uint64_t sync_lost;  /* LINK_GAP from a SYNC */
    uint64_t backwards;  /* LINK_BACKWARDS, messages and SYNCs */
    uint64_t stale;      /* LINK_STALE (stale_epoch_dropped_total) */
    uint64_t invalid;    /* LINK_INVALID */
    uint64_t peers_down; /* peers reported by link_check */
    uint64_t superseded; /* incarnations superseded by a newer epoch */
};

struct link_tracker;

/* A tracker for one shard. silence_ms: heartbeat silence after which a peer
 * is down (> 0); forget_ms: how long a down or superseded peer is remembered
 * before its state is freed (make it longer than the node lease). Never
 * returns NULL (allocation aborts). */
struct link_tracker *link_tracker_new(uint64_t silence_ms, uint64_t forget_ms);

/* Frees t and everything it holds (NULL is fine). */
void link_tracker_free(struct link_tracker *t);

/* Judges a received message's link_seq from (src_epoch, src_shard), per the
 * rules above, and records it. A peer not seen before is created. */
enum link_verdict link_rx(struct link_tracker *t, uint64_t src_epoch, uint16_t src_shard,
                          uint64_t seq);

/* Judges a received SYNC whose link_seq is the sender's last sequence on
 * this link (0: it sent nothing yet). Same verdicts; LINK_GAP means the
 * sender sent messages this side never got. */
enum link_verdict link_rx_sync(struct link_tracker *t, uint64_t src_epoch, uint16_t src_shard,
                               uint64_t last);

/* The link_seq for the next message to (dst_epoch, dst_shard), counted as
 * sent: 1, 2, 3, ... Returns 0 (send nothing) when dst_epoch is 0 or
 * superseded or dst_shard is out of range for the peer. */
uint64_t link_tx_next(struct link_tracker *t, uint64_t dst_epoch, uint16_t dst_shard);

/* Calls cb(ctx, epoch, shard, last) for every link whose sent count moved
 * since its last SYNC (all: every link that ever sent, as after a
 * reconnect), and marks each synced. Superseded peers are skipped. Returns
 * the number of calls. cb must not call back into t. */
size_t link_tx_sync(struct link_tracker *t, bool all,
                    void (*cb)(void *ctx, uint64_t epoch, uint16_t shard, uint64_t last),
                    void *ctx);

/* Records a heartbeat from incarnation epoch of node (shards: its shard
 * count, 1..LINK_MAX_SHARDS) at now_ms. When it supersedes an older
 * incarnation of the same node, *superseded is set to that epoch (reset
 * every link to it), else to 0. */
enum link_hb link_heartbeat(struct link_tracker *t, uint64_t node, uint64_t epoch, uint16_t shards,
                            uint64_t now_ms, uint64_t *superseded);

/* The periodic check (every 250 ms to 1 s). Calls on_down(ctx, epoch) once
 * for each live peer silent for silence_ms or more (reset every link to
 * it), marking it down, and frees peers down or superseded for forget_ms.
 * A peer created by traffic, never heard, is timed from the first check
 * that sees it. Returns the number of peers reported. on_down must not call
 * back into t. */
size_t link_check(struct link_tracker *t, uint64_t now_ms,
                  void (*on_down)(void *ctx, uint64_t epoch), void *ctx);

/* What t knows of epoch. */
enum link_peer_state link_peer_state(const struct link_tracker *t, uint64_t epoch);

/* epoch's shard count: its heartbeat's, else one more than the highest
 * shard traffic used; 0 when unknown. */
uint16_t link_peer_shards(const struct link_tracker *t, uint64_t epoch);

/* Number of peers held (live, down and superseded). */
size_t link_peer_count(const struct link_tracker *t);

/* t's counters; the pointer is valid until t is freed. */
const struct link_stats *link_stats(const struct link_tracker *t);

#endif
