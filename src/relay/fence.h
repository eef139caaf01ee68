/* fence.h — a shard's part in cluster mode's self-fencing (docs/features/cluster.md,
 * "Fencing"): when this node's lease deadline passes (cluster/node.h), every WebSocket
 * of the shard is closed with 1001 "shutting down" and every slot is dropped, with
 * no grace window and no close notices, before anything else is forwarded. The
 * deadline is checked on every message, on every upgrade and every 250 ms;
 * the ctl thread also asks for a fence (fence_request) and waits for each
 * shard's answer before it registers again.
 * Threads: fence_hooks and fence_start on the main thread before the loops
 * run; fence_request on the ctl thread; the rest on the shard's own thread. */
#ifndef RELAY_FENCE_H
#define RELAY_FENCE_H

#include <stdbool.h>

#include "cluster/node.h"
#include "relay/peer.h"

/* The node hooks that reach every shard of sh. */
struct node_hooks fence_hooks(struct relay_shared *sh);

/* Starts r's 250 ms deadline check (sh->node set). */
void fence_start(struct relay *r);

/* True when r may serve now (single instance: always). Past the deadline it
 * fences r first (once) and returns false. */
bool fence_serving(struct relay *r);

/* True when new upgrades are welcome: single instance, or the node is
 * ready (/healthz 200). Clears r->fenced once the node is back. */
bool fence_ready(struct relay *r);

/* Closes every WebSocket of r with 1001 and drops every slot. */
void fence_shard(struct relay *r);

#endif
