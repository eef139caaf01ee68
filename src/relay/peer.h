/* peer.h — what the relay's modules share: a shard's relay (struct relay),
 * the state all shards share (struct relay_shared), the relay's view of one
 * upgraded connection (struct peer) and their counters. A struct relay and
 * its peers belong to the owning shard's thread; relay_shared's fields say
 * who may touch them; relay_stats are written by the owning shard and read
 * by any thread (atomics). */
#ifndef RELAY_PEER_H
#define RELAY_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/log.h"
#include "base/ratelimit.h"
#include "base/util.h"
#include "relay/registry.h"

struct conn;
struct node;
struct server;
struct shard;

enum relay_endpoint { EP_SERVER, EP_CLIENT, EP__COUNT };

/* Label values of pyrycode_relay_ws_upgrade_attempts_total{outcome}. */
enum relay_outcome {
    OUT_ACCEPT,
    OUT_REJECT_HEADERS,
    OUT_REJECT_409,
    OUT_REJECT_404,
    OUT_REJECT_429,
    OUT_REJECT_RATE_LIMIT,
    OUT__COUNT
};

/* Label values of pyrycode_relay_register_failures_total{kind}. */
enum relay_kind {
    KIND_NO_SERVER,
    KIND_SERVER_IN_USE,
    KIND_PHONES_AT_CAP,
    KIND_RATELIMIT,
    KIND__COUNT
};

enum relay_direction { DIR_PHONE_TO_BINARY, DIR_BINARY_TO_PHONE, DIR__COUNT };

/* Counters of one shard, written only by its thread; metrics sums them. */
/* Label values of pyrycode_relay_cluster_claims_total{path}. */
enum claim_path {
    CP_CREATE,
    CP_HANDOVER,
    CP_TAKEOVER_DEAD,
    CP_CONFLICT,
    CP_ABORTED,
    CLAIMS__COUNT
};

/* Label values of pyrycode_relay_cluster_link_resets_total{reason}. */
enum link_reset_reason { LR_GAP, LR_PEER_DOWN, LR_SLOW_CONSUMER, LR_BUFFER, LR__COUNT };

/* Label values of pyrycode_relay_cluster_attaches_total{outcome}. */
enum attach_outcome { AO_OK, AO_NO_SERVER, AO_AT_CAP, AO_NOT_OWNER, AO_TIMEOUT, ATTACH__COUNT };

struct relay_stats {
    _Atomic uint64_t upgrades[EP__COUNT][OUT__COUNT];
    _Atomic uint64_t failures[KIND__COUNT];
    _Atomic uint64_t frames[DIR__COUNT];
    _Atomic uint64_t grace_expiries;
    _Atomic uint64_t throttled_ms; /* server-id time spent over its bandwidth limit */
    /* cluster mode (docs/features/cluster.md, "Metrics") */
    _Atomic uint64_t claims[CLAIMS__COUNT];     /* how cluster claims ended */
    _Atomic uint64_t attaches[ATTACH__COUNT];   /* how remote attaches ended */
    _Atomic uint64_t bus_msgs[2], bus_bytes[2]; /* [0] in, [1] out */
    _Atomic uint64_t bus_buffered, bus_disconnects;
    _Atomic uint64_t stale_dropped;              /* bus messages of an older epoch */
    _Atomic uint64_t link_resets[LR__COUNT];     /* links reset, by reason */
    _Atomic int64_t remote_phones, stubs, peers; /* gauges (peers: shard 0's view) */
};

enum peer_state {
    PEER_PROBING,   /* binary waiting for the incumbent's liveness probe */
    PEER_ACTIVE,    /* binary holding its server-id, or registered phone */
    PEER_STILLBORN, /* rejected after the upgrade (4404, 4409, 4429): closing */
    PEER_ENDED,     /* WebSocket over; waiting for the connection to be freed */
};

struct probe;
struct remote;
struct remote_shard;
struct xclaim;
struct xnode;
struct bw_bucket;
struct push_waker;
struct wake_req;

/* The WARN lines a binary can cause once per frame: collapsed per binary
 * and kind (log_limit) so a runaway binary cannot flood the log. Each
 * unmarshal error text is a kind of its own. */
enum peer_warn {
    WARN_UNKNOWN_CONN_ID,
    WARN_MALFORMED,
    WARN_MISSING_CONN_ID,
    WARN_MISSING_FRAME,
    WARN__COUNT
};

/* Collapsed warnings of one source; push_wake refusals by their err text. */
#define PUSH_WARN_SLOTS 8
struct warn_state {
    struct log_limit kinds[WARN__COUNT];
    struct {
        const char *err; /* a constant refusal text (NULL: free slot) */
        struct log_limit lim;
    } push[PUSH_WARN_SLOTS];
};

/* What only an operator asks about a binary (/debug/server-ids), and its
 * collapsed warnings: kept out of struct peer so phones do not pay. */
struct binary_ext {
    uint64_t since_ms;        /* loop ms when it was accepted (0: still probing) */
    uint64_t bytes_to_binary; /* payload bytes forwarded from its phones */
    uint64_t bytes_to_phones; /* frame bytes it queued for its phones */
    struct warn_state warns;
    struct xclaim *xclaim;    /* cluster mode: the cross-node claim it waits on (xclaim.c) */
    struct peer *xclaim_peer; /* the peer this ext belongs to, while it waits */
    struct list xwait;        /* on a running claim's waiters */
};

/* The relay's view of one upgraded connection (conn_owner). */
struct peer {
    struct relay *relay;
    struct conn *conn;
    enum relay_endpoint role;
    enum peer_state state;
    uint64_t key;          /* random 64 bits of the conn id */
    const char *server_id; /* not NUL-terminated: a slice of conn_id */
    size_t server_id_len;
    char *conn_id; /* "server-<sid>-<16hex>" / "client-<sid>-<16hex>" (in id_buf) */
    size_t conn_id_len;
    char *version; /* binary: X-Pyrycode-Version until server_claimed is logged */
    union {        /* what only one role needs (a phone never probes, a binary has no wrap) */
        struct {   /* binary */
            struct reg_binary rb;
            struct list probes;     /* probes aimed at this binary as incumbent */
            struct probe *probe;    /* the probe this binary waits on */
            bool phones_paused;     /* back-pressure: its phones are not being read */
            struct binary_ext *ext; /* allocated with the peer (binaries are few) */
            struct bw_bucket *bw;   /* --max-bytes-per-second-per-server (NULL: unused) */
        };
        struct { /* phone */
            struct reg_phone rp;
            uint64_t bound_binary; /* key of the binary holding the id at registration */
            char *wrap;            /* the envelope prefix {"conn_id":"…","frame": */
            struct remote *rm;     /* cluster: its far side (remote.c), NULL: local */
            uint32_t wrap_len;
            bool binary_closed; /* the binary asked to close this phone (no notice) */
            bool stub;          /* cluster: stands for a phone on another node (no conn) */
        };
    };
    char id_buf[]; /* conn_id, NUL-terminated */
};

/* What every shard's relay shares: the admission state of docs/operations.md
 * (Admission control; it runs at upgrade rate, so a mutex is fine) and the
 * shard choice. */
struct relay_shared {
    struct relay *relays; /* one per shard, indexed by shard id */
    unsigned n;
    uv_mutex_t rl_mu;
    struct ratelimit rl;       /* per-IP upgrade limiter (--rate-limit-burst) */
    _Atomic size_t live_ws;    /* upgraded connections alive: the --max-connections cap */
    _Atomic int64_t max_conns; /* --max-connections, changed by a reload */
    uint8_t shard_key[16];     /* SipHash key: server-id -> owning shard */
    uint64_t boot_ns;          /* uv_hrtime at start, for uptime */
    /* FCM push wakes (docs/features/push.md): one waker on shard 0's loop, so the
     * in-flight cap and the access token are relay-wide. NULL = push off.
     * Other shards post their wakes to it through wake_async. */
    struct push_waker *push;
    struct warn_state posted_drops; /* refusals of wakes posted from other shards (shard 0) */
    uv_async_t wake_async;
    struct mpsc wakes; /* wakes posted by other shards */
    /* cluster mode (docs/features/cluster.md): this node; NULL = single instance */
    struct node *node;
    /* sends a CLAIM for sid to (node, shard) with request id req, replies
     * coming back through xclaim_reply; 0 or -1. NULL: no bus, nobody
     * answers (the claimant waits for the owner's lease) */
    int (*send_claim)(struct relay *r, const char *node, uint16_t shard, const char *sid,
                      size_t len, uint64_t req);
    /* phones across nodes (remote.c), for forward.c: a remote-bound
     * phone's validated message, the binary's frame or directive for a stub,
     * a stub's eviction (enum busmsg_evict); NULL without a bus */
    void (*remote_p2b)(struct peer *p, const uint8_t *data, size_t len);
    void (*stub_route)(struct peer *stub, const uint8_t *frame, size_t len, uint16_t code);
    void (*stub_evict)(struct peer *stub, int reason);
    void (*stub_pause)(struct peer *stub, bool pause); /* XOFF / XON to its node */
    void (*bus_sample)(struct relay *r); /* copies the shard's bus counters to its stats */
    /* the shard's loop is to end: closes what must close first, then calls
     * cont (true) or returns false; NULL without a bus */
    bool (*shard_stop)(struct relay *r, void (*cont)(struct shard *s));
};

/* One shard's relay: the server-ids that hash to the shard, their
 * binaries and phones, and the timers that serve them. */
struct relay {
    struct server *srv;
    struct shard *shard;
    struct relay_shared *sh;
    struct registry *reg;
    uv_timer_t grace_timer;
    uint64_t grace_armed; /* deadline the timer is set for, 0 = idle */
    struct relay_stats stats;
    size_t high_water, low_water; /* binary outbox marks for pausing phones */
    uint8_t *scratch;             /* envelope conn_id unescaping, max-message sized */
    uv_timer_t rl_sweep;          /* shard 0 only */
    struct list throttled;        /* binaries over their bandwidth limit (forward.c) */
    uv_timer_t bw_timer;          /* refills them */
    uv_async_t task_async;        /* runs tasks other threads post (relay_post) */
    struct mpsc tasks;
    uv_mutex_t task_mu; /* a post's wake-up against relay_ctl_seal */
    bool task_sealed;   /* the loop is stopping: posts queue without a wake-up */
    /* cluster mode (fence.c, xclaim.c) */
    uv_timer_t fence_timer;  /* checks the lease deadline every 250 ms */
    bool fenced;             /* closed everything for a lost lease: no grace, no notices */
    struct list xclaims;     /* cross-node claims in progress on this shard */
    struct xnode *xnode;     /* this shard on the cluster bus (xnode.c) */
    struct remote_shard *rs; /* phones across nodes (remote.c) */
    _Atomic bool bus_up;     /* its bus connection is up (readiness) */
};

/* A new peer of r without a connection: conn id "server-" or "client-",
 * sid, "-" and key as 16 hex digits, kept after the struct (server_id is
 * its middle); a binary gets its probe list and ext, a phone its registry
 * fields. Never NULL (allocation aborts). */
struct peer *peer_alloc(struct relay *r, enum relay_endpoint ep, const char *sid, size_t sid_len,
                        uint64_t key);

/* The peer of the binary currently holding p's server-id (in its grace
 * window or not) while its connection exists, or NULL. */
struct peer *peer_binary_of(const struct peer *p);

/* Writes the host of p's remote address into out (conn_remote). */
void peer_remote(const struct peer *p, char *out, size_t cap);

#endif
