/* relay.h — the relay proper: endpoints (/healthz, /v1/server, /v1/client),
 * the binary claim with its liveness probe, phone registration and grace
 * expiry. It implements the connection hooks and wires the lower modules:
 * forward (both directions of traffic), wake (push wakes), relay_ctl
 * (tasks, limits), registry (bookkeeping); conn.c does the I/O. Hooks run
 * on the connection's shard thread; relay_init/relay_close on the main
 * thread; relay_totals on any thread (atomics). */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"
#include "relay/peer.h"
#include "relay/relay_ctl.h"

/* The sum over every shard (a scrape or /healthz). */
struct relay_totals {
    size_t binaries, phones;
    uint64_t upgrades[EP__COUNT][OUT__COUNT];
    uint64_t failures[KIND__COUNT];
    uint64_t frames[DIR__COUNT];
    uint64_t grace_expiries;
    uint64_t throttled_ms;
};

/* The hooks every connection of the relay runs with. */
extern const struct conn_hooks relay_hooks;

/* The --health-listen listener's: GET /healthz, everything else 404. */
extern const struct conn_hooks relay_health_hooks;

/* Prepares one relay per shard of srv (relays has srv->nshards entries)
 * and makes each the owner of its shard. */
void relay_init(struct relay *relays, struct relay_shared *sh, struct server *srv);

/* Releases the registries, the push waker and shared state (after every
 * loop has drained). */
void relay_close(struct relay_shared *sh);

/* Cluster mode: the liveness probe of docs/features/registry.md for a
 * claimant on another node. Pings inc (a binary holding its slot) and calls
 * done(arg, 1) on its pong, done(arg, 0) on silence or when it cannot be
 * pinged, done(arg, -1) when the probe is dropped (drain); exactly once. */
void relay_probe_remote(struct peer *inc, void (*done)(void *arg, int verdict), void *arg);

/* Sums every shard's gauges and counters. */
void relay_totals(const struct relay_shared *sh, struct relay_totals *t);

#endif
