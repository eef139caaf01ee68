/* claim.h — the cross-node claim of a server-id (docs/features/cluster-ownership.md,
 * "The claim"): a pure state machine, one per claim. It
 * performs nothing itself: claim_start and claim_feed return the next
 * operation (a KV Create, a leader read, a CAS, a CLAIM forwarded to the
 * owner, a sleep) and the caller reports how it ended, until a terminal
 * action (ACCEPT with the ownership epoch, REJECT_4409, FAIL, GIVE_UP,
 * ABORTED). Finding a local slot first, and installing the slot and
 * broadcasting EVICT after ACCEPT, are the caller's. Also the parser and
 * formatter of sids/<h> record values.
 *
 * The single-writer rule (nats-server 2.9.10 can commit two CASes
 * with the same expected revision): the machine hands out CLAIM_DO_CAS only
 * (a) while it holds the claims/<h> lock, which it took with a Create, and
 * no later than CLAIM_LOCK_WINDOW_MS after sending that Create (the lock
 * lives 10 s), or (b) to release a record that names this very node and
 * epoch (this node is that record's writer). Every CAS goes through one
 * check of this; a violation ends the claim in CLAIM_FAIL instead.
 *
 * Threads: pure, any thread; one struct claim per claim, used by one
 * thread at a time (the thread that performs its operations). */
#ifndef RELAY_CLUSTER_CLAIM_H
#define RELAY_CLUSTER_CLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLAIM_NODE_ID_MAX    64   /* node id: 1..64 of [A-Za-z0-9_-] */
#define CLAIM_RECORD_MAX     96   /* "1 <node> <epoch> <shard>" + NUL, at most */
#define CLAIM_RETRY_SLEEP_MS 200  /* before a restart at step 2 */
#define CLAIM_MAX_RESTARTS   5    /* restarts before 4409 (or FAIL) */
#define CLAIM_LOCK_WINDOW_MS 5000 /* half the lock's 10 s life */
#define CLAIM_POLL_MS        1000 /* owner lease poll period (step 5) */
#define CLAIM_POLL_EXTRA_MS  2000 /* polls last up to L + this */

/* A sids/<h> value: "0" (free) or "1 <node-id> <node-epoch> <shard>". */
struct claim_record {
    bool owned;                       /* false: free ("0") */
    char node[CLAIM_NODE_ID_MAX + 1]; /* NUL-terminated node id when owned */
    uint64_t epoch;                   /* node epoch, > 0, when owned */
    uint16_t shard;                   /* owner's shard when owned */
};

/* Parses buf[0..len) (not NUL-terminated, no trailing newline). Accepts
 * exactly "0" or "1 <node-id> <epoch> <shard>" with single spaces, decimal
 * numbers without leading zeros, epoch in 1..UINT64_MAX, shard in
 * 0..65535. Returns 0 with r filled, or -EINVAL (r undefined). */
int claim_record_parse(struct claim_record *r, const char *buf, size_t len);

/* Writes r's canonical form and a NUL into buf. Returns its length, or 0
 * when r is not valid (bad node id, epoch 0) or cap is too small. The
 * output parses back to r. */
size_t claim_record_format(const struct claim_record *r, char *buf, size_t cap);

/* True when s[0..len) is a valid node id. */
bool claim_node_id_valid(const char *s, size_t len);

struct claim_params {
    struct claim_record me;      /* owned: this node's id, epoch and shard k */
    uint64_t lease_ms;           /* L (--cluster-lease) */
    uint64_t forward_timeout_ms; /* CLAIM reply wait: probe timeout + 2 s */
};

enum claim_op {
    CLAIM_DO_CREATE_RECORD, /* Create sids/<h> = our record (claim_value) */
    CLAIM_DO_READ,          /* leader Get of sids/<h>: value and revision */
    CLAIM_DO_READ_LEASE,    /* leader Get of nodes/<node>: present? (steps 2 and 5) */
    CLAIM_DO_CREATE_LOCK,   /* Create claims/<h> = our node id */
    CLAIM_DO_CAS,           /* Update sids/<h> = claim_value with last = rev */
    CLAIM_DO_FORWARD,       /* publish CLAIM{h} to (node, shard), wait ms for the reply */
    CLAIM_SLEEP,            /* wait ms, then feed CLAIM_R_WOKE */
    /* terminal: claim_feed returns the same action from now on */
    CLAIM_ACCEPT,      /* ours with ownership epoch `epoch`, obtained `how` (step 6) */
    CLAIM_REJECT_4409, /* a live owner keeps it, or the claim kept losing races */
    CLAIM_FAIL,        /* the bus kept failing (5 restarts), or an internal refusal */
    CLAIM_GIVE_UP,     /* our CAS under the lock was not acknowledged in time */
    CLAIM_ABORTED,     /* the newcomer went away (claim_abort) */
};

enum claim_how {
    CLAIM_HOW_CREATED,           /* step 2's Create won: server_claimed */
    CLAIM_HOW_FREE,              /* lock + CAS of a "0" record: server_claimed */
    CLAIM_HOW_TAKEOVER_DEAD,     /* lock + CAS over a dead owner: server_id_takeover */
    CLAIM_HOW_HANDOVER_RECLAIM,  /* owner handed over from grace: server_claimed */
    CLAIM_HOW_HANDOVER_TAKEOVER, /* owner's binary was silent: server_id_takeover */
};

/* Why a CAS keeps the single-writer rule. */
enum claim_writer {
    CLAIM_WRITER_LOCK,  /* this claim holds claims/<h> inside its window */
    CLAIM_WRITER_OWNER, /* the record names this node and epoch: release to "0" */
};

struct claim_action {
    enum claim_op op;
    uint64_t rev;                     /* DO_CAS: expected last revision */
    bool release;                     /* DO_CAS: write "0" rather than our record */
    enum claim_writer writer;         /* DO_CAS */
    char node[CLAIM_NODE_ID_MAX + 1]; /* DO_FORWARD, DO_READ_LEASE: the owner's node id */
    uint16_t shard;                   /* DO_FORWARD */
    uint64_t ms;                      /* SLEEP: duration; DO_FORWARD: reply timeout */
    uint64_t epoch;                   /* ACCEPT: ownership epoch (the record's revision) */
    enum claim_how how;               /* ACCEPT */
    const char *why;                  /* FAIL, GIVE_UP: a fixed word for the log (CLAIM_WHY_*) */
};

/* Why a claim ended in FAIL or GIVE_UP (the `reason` of cluster_claim_failed):
 * the bus kept failing (5 restarts); the lock window passed or the record
 * moved before our write; no valid node id / epoch to claim with; our CAS
 * under the lock not confirmed in time; the caller fed a result the claim
 * never asked for. */
#define CLAIM_WHY_BUS         "bus_errors"
#define CLAIM_WHY_NOT_WRITER  "not_writer"
#define CLAIM_WHY_NOT_SERVING "not_serving"
#define CLAIM_WHY_UNACKED     "write_unacknowledged"
#define CLAIM_WHY_INTERNAL    "internal"

enum claim_outcome {
    CLAIM_R_OK,             /* write acknowledged / read found the key */
    CLAIM_R_CONFLICT,       /* Create: exists; CAS: wrong last sequence (10071) */
    CLAIM_R_NOT_FOUND,      /* read: key absent (10037) */
    CLAIM_R_TIMEOUT,        /* no answer in time (a write may have landed) */
    CLAIM_R_ERROR,          /* any other bus failure */
    CLAIM_R_NO_RESPONDERS,  /* DO_FORWARD: nobody listens on the owner's subject */
    CLAIM_R_REPLY_CONFLICT, /* DO_FORWARD: CONFLICT, the owner's binary answered */
    CLAIM_R_HANDOVER,       /* DO_FORWARD: HANDOVER{epoch}: the owner CASed it to us */
    CLAIM_R_NOT_OWNER,      /* DO_FORWARD: the owner no longer owns it */
    CLAIM_R_WOKE,           /* SLEEP is over */
};

struct claim_result {
    enum claim_outcome outcome;
    uint64_t rev;         /* OK write: new revision; OK read: revision; HANDOVER: epoch */
    const char *value;    /* DO_READ OK: the value's bytes (read during claim_feed only) */
    size_t len;           /* ... and their length */
    uint64_t lease_epoch; /* DO_READ_LEASE OK: node epoch the lease proves, 0: not known */
    bool takeover;        /* HANDOVER: from a silent binary (else a reclaim from grace) */
};

enum claim_phase {
    CLAIM_P_CREATE,      /* step 2 Create in flight */
    CLAIM_P_READ,        /* step 2 read of the record */
    CLAIM_P_OWNER_LEASE, /* step 2 read of the owner's lease */
    CLAIM_P_RELEASE,     /* CAS of our own stray record to "0" */
    CLAIM_P_LOCK,        /* step 3 lock Create */
    CLAIM_P_REREAD,      /* step 3 re-read under the lock */
    CLAIM_P_CAS,         /* step 3 CAS under the lock */
    CLAIM_P_FORWARD,     /* step 4 */
    CLAIM_P_POLL,        /* step 5 lease read */
    CLAIM_P_POLL_SLEEP,  /* step 5 between polls */
    CLAIM_P_RETRY_SLEEP, /* 200 ms before a restart */
    CLAIM_P_DONE,        /* terminal: act holds the result */
};

struct claim {
    struct claim_params p;
    enum claim_phase phase;
    struct claim_action act;   /* the action handed out last */
    uint64_t act_at;           /* when it was handed out (its t_send; a later send is safe) */
    struct claim_record owner; /* the record as read at step 2 */
    uint64_t rec_rev;          /* its revision */
    bool stale;                /* owner dead: a CAS is a takeover */
    bool lock_held;            /* our Create of claims/<h> succeeded ... */
    uint64_t lock_sent;        /* ... sent at this time */
    uint64_t poll_until;       /* step 5 deadline: first poll + L + 2 s */
    unsigned restarts;         /* restarts at step 2 so far */
};

/* Starts a claim at time now with p (p->me must be owned and valid) and
 * returns the first action: CLAIM_DO_CREATE_RECORD, or CLAIM_FAIL for
 * invalid parameters. */
struct claim_action claim_start(struct claim *c, const struct claim_params *p, uint64_t now);

/* Reports how the last action ended, at time now, and returns the next
 * one. An outcome that does not fit the action counts as CLAIM_R_ERROR.
 * After a terminal action it returns that action again. */
struct claim_action claim_feed(struct claim *c, const struct claim_result *r, uint64_t now);

/* The newcomer disconnected: ends the claim in CLAIM_ABORTED (the result of
 * any operation in flight is to be ignored; a claim already terminal keeps
 * its action). Returns the terminal action. */
struct claim_action claim_abort(struct claim *c);

/* True once the claim has reached a terminal action. */
bool claim_done(const struct claim *c);

/* The bytes a/the claim's current action writes: our record for
 * DO_CREATE_RECORD and DO_CAS, "0" for a releasing DO_CAS, our node id for
 * DO_CREATE_LOCK. Returns the length (NUL written too), or 0 for actions
 * that write nothing or when cap is too small. */
size_t claim_value(const struct claim *c, const struct claim_action *a, char *buf, size_t cap);

/* claims_total's path label for an ACCEPT: "create", "handover" or
 * "takeover_dead". */
const char *claim_how_path(enum claim_how how);

/* True when the accept is logged server_id_takeover (else server_claimed). */
bool claim_how_takeover(enum claim_how how);

/* The op's name, for tests and debug output. */
const char *claim_op_name(enum claim_op op);

#endif
