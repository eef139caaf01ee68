/* lease.h — the node lease of cluster mode (docs/features/cluster-ownership.md,
 * "The node lease"): when to renew, when the node is ready, when it
 * must fence. A pure state machine on a millisecond clock the caller passes
 * in (uv_hrtime based, monotonic): it sends nothing and reads no KV. The ctl
 * thread performs the operation each lease_check answer names and reports
 * the outcome with lease_done; the shards only read lease_valid_until
 * (published by the caller as an atomic).
 *
 * Timing, from L = --cluster-lease (at least 6 s): renew every R = L/10
 * after the last successful send, every 500 ms while failing (with one last
 * attempt exactly at the deadline, so L - M - R of write outage is ridden
 * out when failures are reported promptly: 13 s at L = 20 s); margin
 * M = L/4; valid until t_send(last success) + L - M; ready while the last
 * success was sent less than L/2 ago (10 s at the default 20 s: a minority
 * node is not ready at 10 s and fences at 15 s). A renewal is a CAS on
 * nodes/<node-id> with last = the lease's revision (this node is the key's
 * single writer), so a lease that expired cannot come back.
 *
 * Threads: pure, any thread; one struct lease per node, used by one thread
 * (the ctl thread). */
#ifndef RELAY_CLUSTER_LEASE_H
#define RELAY_CLUSTER_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#define LEASE_MIN_MS      6000  /* smallest accepted --cluster-lease */
#define LEASE_DEFAULT_MS  20000 /* --cluster-lease default */
#define LEASE_RETRY_MS    500   /* renewal period while renewals fail */
#define LEASE_PARAM_ERROR (-22) /* -EINVAL: lease below LEASE_MIN_MS */

struct lease_params {
    uint64_t lease_ms;  /* L: MaxAge of the nodes bucket */
    uint64_t renew_ms;  /* R = L/10 */
    uint64_t retry_ms;  /* LEASE_RETRY_MS */
    uint64_t margin_ms; /* M = L/4 */
    uint64_t ready_ms;  /* L/2: readiness needs a successful send younger than this */
};

enum lease_state {
    LEASE_UNREGISTERED, /* no lease: the next check asks for a Create */
    LEASE_HELD,         /* registered, valid until valid_until */
    LEASE_FENCED,       /* lost: the caller fences, then calls lease_fence_done */
};

/* What the caller must do now (returned by lease_check). */
enum lease_action {
    LEASE_IDLE,     /* nothing; call lease_check again at lease_next_due */
    LEASE_REGISTER, /* Create nodes/<id> under a node id never used before */
    LEASE_RENEW,    /* CAS nodes/<id> with last = lease.rev */
    LEASE_READ,     /* leader Get of nodes/<id>: a failed renewal may have landed */
    LEASE_FENCE,    /* close every WebSocket, drop every slot, write no KV */
};

/* How the operation lease_check asked for ended (lease_done). */
enum lease_outcome {
    LEASE_OK,        /* acknowledged; rev is the key's revision */
    LEASE_CONFLICT,  /* Create: key exists; CAS: wrong last sequence (10071) */
    LEASE_NOT_FOUND, /* READ: the key is absent */
    LEASE_TIMEOUT,   /* no answer in time: the write may or may not have landed */
    LEASE_ERROR,     /* any other failure (no responders, no quorum, ...) */
};

enum { LEASE_OUTCOMES = LEASE_ERROR + 1 };

struct lease {
    struct lease_params p;
    enum lease_state state;
    uint64_t epoch;        /* node epoch: revision of the Create (HELD) */
    uint64_t rev;          /* the key's last known revision: the next CAS's last */
    uint64_t last_ok_send; /* t_send of the last successful Create or renewal */
    uint64_t valid_until;  /* last_ok_send + L - M; 0 unless HELD */
    uint64_t next_due;     /* when the next renewal (or retry) is due */
    bool in_flight;        /* an operation was handed out and has not ended */
    enum lease_action op;  /* the operation in flight */
    uint64_t op_sent;      /* when it was handed out (its t_send) */
    bool uncertain;        /* a renewal timed out or failed: rev may be stale */
    bool read_next;        /* a CONFLICT while uncertain: READ before renewing */
    /* counters for /metrics (lease_renewals_total{outcome}) and logs */
    uint64_t renewals[LEASE_OUTCOMES]; /* by outcome of RENEW (not_found counts as conflict) */
    uint64_t registrations;            /* successful Creates */
    uint64_t fences;                   /* transitions to FENCED */
};

/* Fills p for a lease of lease_ms. Returns 0, or LEASE_PARAM_ERROR when
 * lease_ms < LEASE_MIN_MS (p untouched). */
int lease_params_init(struct lease_params *p, uint64_t lease_ms);

/* Prepares l, UNREGISTERED, with nothing in flight. */
void lease_init(struct lease *l, const struct lease_params *p);

/* The decision at time now: the caller performs the returned operation at
 * once (its t_send is now; sending later only makes the deadline computed
 * from it more conservative); REGISTER, RENEW and READ are marked in flight
 * and no other operation is handed out until lease_done. FENCE is returned
 * when now > valid_until (also with an operation in flight: its result no
 * longer matters) and again on every call until lease_fence_done: fencing
 * is idempotent. Never returns RENEW after the deadline. */
enum lease_action lease_check(struct lease *l, uint64_t now);

/* Reports how the operation in flight ended at time now; rev is the key's
 * revision for LEASE_OK (the node epoch for a REGISTER). Ignored when
 * nothing is in flight or the lease is FENCED. A result arriving after the
 * deadline fences: the shards have already stopped trusting the lease.
 * A renewal's CONFLICT fences unless an earlier renewal's fate is unknown,
 * in which case the lease asks to READ its key first; READ finding the key
 * absent (or at an older revision: the stream was recreated) fences. */
void lease_done(struct lease *l, enum lease_outcome o, uint64_t rev, uint64_t now);

/* The caller has fenced (every WebSocket closed, every slot dropped): the
 * lease becomes UNREGISTERED and the next check asks for a new Create. */
void lease_fence_done(struct lease *l);

/* When lease_check should next be called: the renewal or retry time, or
 * just past valid_until if that is sooner (to fence on time); 0 means now;
 * UINT64_MAX while a REGISTER is in flight (wait for lease_done). */
uint64_t lease_next_due(const struct lease *l);

/* The deadline the shards check: t_send(last success) + L - M while HELD,
 * 0 otherwise (every clock reading is past it). */
uint64_t lease_valid_until(const struct lease *l);

/* True while HELD, not past the deadline, and the last successful send is
 * younger than ready_ms. Readiness (/healthz) also needs the connections
 * and streams; that is the caller's part. */
bool lease_ready(const struct lease *l, uint64_t now);

/* True when the node may not serve at now: not HELD or past valid_until. */
bool lease_must_fence(const struct lease *l, uint64_t now);

/* Milliseconds left before valid_until (0 when past it or not HELD): the
 * lease_remaining_seconds gauge. */
uint64_t lease_remaining_ms(const struct lease *l, uint64_t now);

/* "ok", "conflict", "not_found", "timeout", "error": the metric label. */
const char *lease_outcome_name(enum lease_outcome o);

#endif
