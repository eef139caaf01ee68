/* relay_ctl.h — the relay's control side, apart from its data path: a
 * per-shard task queue other threads post to, the reloadable admission
 * limits, and the collapsing of a binary's repeated warnings. relay_post
 * and relay_set_limits may be called from any thread / the main thread as
 * noted; everything else runs on the owning shard's thread. */
#ifndef RELAY_RELAY_CTL_H
#define RELAY_RELAY_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/log.h"
#include "base/util.h"
#include "relay/peer.h"

/* Work another thread hands to a shard's loop (its registry is touched
 * only there). fn runs on the shard's thread and owns t from then on;
 * a task still queued when the loops are gone is passed to discard (NULL:
 * free). */
struct relay_task {
    struct mpsc_node node;
    void (*fn)(struct relay *r, struct relay_task *t);
    void (*discard)(struct relay_task *t);
};

/* Queues t for r's loop (any thread). Once r is sealed, t only waits in
 * the queue for relay_ctl_close's discard. */
void relay_post(struct relay *r, struct relay_task *t);

/* r's loop is about to close its handles (on its thread): from now on
 * relay_post never wakes it, so another thread (the cluster's ctl thread,
 * a KV job) may post until it is joined without touching a closed loop. */
void relay_ctl_seal(struct relay *r);

/* The reloadable admission limits (a SIGHUP with --config-file). */
struct relay_limits {
    int64_t max_connections;       /* > 0 */
    int64_t max_phones_per_server; /* <= 0: no cap */
    int64_t rate_limit_burst;      /* 0: limiter off */
    int64_t rate_limit_refill_ns;  /* > 0 */
};

/* Applies new limits: the connection cap and the rate limiter at once,
 * each shard's phone cap on its own loop. Established connections are
 * never closed by a lower limit. Call on the main thread. */
void relay_set_limits(struct relay_shared *sh, const struct relay_limits *l);

/* Whether warning kind w of binary b may be logged now; *suppressed gets
 * how many were dropped before it (log_limit). */
bool relay_warn_allowed(struct peer *b, enum peer_warn w, uint64_t *suppressed);

/* The limiter for one push_wake refusal text in ws. */
struct log_limit *relay_push_limit(struct warn_state *ws, const char *err);

/* Logs the counts of b's collapsed warnings not yet reported (the binary
 * is leaving). */
void relay_flush_warns(struct peer *b);

/* r's task queue, set up on r's loop / emptied once the loops are gone. */
void relay_ctl_init(struct relay *r);
void relay_ctl_close(struct relay *r);

#endif
