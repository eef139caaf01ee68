/* fence.h — a shard's part in cluster mode's self-fencing (docs/features/cluster.md,
 * "Fencing"): when this node's lease deadline passes (cluster/node.h), every WebSocket
 * of the shard is closed with 1001 "shutting down" and every slot is dropped, with
 * no grace window and no close notices, before anything else is forwarded. The
 * deadline is checked on every message, on every upgrade and every 250 ms;
 * the ctl thread also asks for a fence (fence_request) and waits for each
 * shard's answer before it registers again.
 * Threads: fence_start on the main thread before the loops run;
 * fence_request on the ctl thread; fence_cluster_ready on any; the rest on
 * the shard's own thread. */
#ifndef RELAY_FENCE_H
#define RELAY_FENCE_H

#include <stdbool.h>

#include "cluster/node.h"
#include "relay/peer.h"

/* The ctl thread's on_fence: every shard of sh fences and reports to the
 * node (node_fenced) for generation gen. */
void fence_request(struct relay_shared *sh, uint64_t gen);

/* Starts r's 250 ms deadline check (sh->node set). */
void fence_start(struct relay *r);

/* True when r may serve now (single instance: always). Past the deadline it
 * fences r first (once) and returns false. */
bool fence_serving(struct relay *r);

/* Readiness (/healthz): single instance, or the node is ready and every
 * shard's bus connection is up. Any thread. */
bool fence_cluster_ready(const struct relay_shared *sh);

/* True when new upgrades are welcome (fence_cluster_ready). Clears
 * r->fenced once the node is back. */
bool fence_ready(struct relay *r);

/* Closes every WebSocket of r with 1001 and drops every slot. */
void fence_shard(struct relay *r);

#endif
