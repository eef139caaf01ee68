/* xnode.h — a shard's end of the cluster bus (docs/features/cluster.md,
 * "The shards on the bus"; cluster.md §2, §3.3 step 4): its data
 * connection (cluster/bus) subscribed to pyry.<c>.s.<node-id>.<k> and
 * pyry.<c>.all, the CLAIMs it sends for xclaim.c and their replies, and
 * the owner's side of a CLAIM: a reclaim of a slot in grace, or the
 * liveness probe of its binary and a takeover, each handed over with a
 * CAS of the record to the claimant before the reply. Threads: xnode_start
 * and xnode_reopen_all from any thread (they post to the shards); the rest
 * on the shard's own loop. */
#ifndef RELAY_XNODE_H
#define RELAY_XNODE_H

#include <stdbool.h>

#include "relay/peer.h"

struct shard;
struct natsopt_tls; /* cluster/natsopt.h */

/* Cluster mode: gives every shard of sh its bus connection (opened on the
 * shard's own loop as soon as it runs, with creds_file and tls, either
 * NULL; *tls is copied, its strings must outlive the shards) and routes
 * CLAIMs through it. */
void xnode_start(struct relay_shared *sh, const char *creds_file, const struct natsopt_tls *tls);

/* The node registered again under a new id: every shard reopens its bus
 * under the new subject (the old one dies with the old epoch). */
void xnode_reopen_all(struct relay_shared *sh);

/* The node fenced: every shard closes its bus, so CLAIMs for the old
 * node id go unanswered (claimants then wait for its lease to lapse). */
void xnode_close_all(struct relay_shared *sh);

/* r's shard is stopping (relay_shared.shard_stop): closes the bus, then
 * calls cont; false when there is no bus to close. */
bool xnode_stop(struct relay *r, void (*cont)(struct shard *s));

#endif
