/* relay.h — the relay proper: endpoints (/healthz, /v1/server, /v1/client),
 * the binary claim with its liveness probe, phone registration, grace
 * expiry, and the forwarders in both directions (forward.c). It implements
 * the connection hooks; conn.c does the I/O, registry.c the bookkeeping. */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/conn.h"
#include "base/log.h"
#include "base/ratelimit.h"
#include "relay/registry.h"
#include "net/server.h"

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
struct relay_stats {
    _Atomic uint64_t upgrades[EP__COUNT][OUT__COUNT];
    _Atomic uint64_t failures[KIND__COUNT];
    _Atomic uint64_t frames[DIR__COUNT];
    _Atomic uint64_t grace_expiries;
    _Atomic uint64_t throttled_ms; /* server-id time spent over its bandwidth limit */
};

/* The sum over every shard (a scrape or /healthz). */
struct relay_totals {
    size_t binaries, phones;
    uint64_t upgrades[EP__COUNT][OUT__COUNT];
    uint64_t failures[KIND__COUNT];
    uint64_t frames[DIR__COUNT];
    uint64_t grace_expiries;
    uint64_t throttled_ms;
};

enum peer_state {
    PEER_PROBING,   /* binary waiting for the incumbent's liveness probe */
    PEER_ACTIVE,    /* binary holding its server-id, or registered phone */
    PEER_STILLBORN, /* rejected after the upgrade (4404, 4409, 4429): closing */
    PEER_ENDED,     /* WebSocket over; waiting for the connection to be freed */
};

struct probe;
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
            uint32_t wrap_len;
            bool binary_closed; /* the binary asked to close this phone (no notice) */
        };
    };
    char id_buf[]; /* conn_id, NUL-terminated */
};

/* What every shard's relay shares: the admission state of spec §9 (it runs
 * at upgrade rate, so a mutex is fine) and the shard choice. */
struct relay_shared {
    struct relay *relays; /* one per shard, indexed by shard id */
    unsigned n;
    uv_mutex_t rl_mu;
    struct ratelimit rl;       /* per-IP upgrade limiter (spec §9.2) */
    _Atomic size_t live_ws;    /* upgraded connections alive: the --max-connections cap */
    _Atomic int64_t max_conns; /* --max-connections, changed by a reload */
    uint8_t shard_key[16];     /* SipHash key: server-id -> owning shard */
    uint64_t boot_ns;          /* uv_hrtime at start, for uptime */
    /* FCM push wakes (spec §10): one waker on shard 0's loop, so the
     * in-flight cap and the access token are relay-wide. NULL = push off.
     * Other shards post their wakes to it through wake_async. */
    struct push_waker *push;
    struct warn_state posted_drops; /* refusals of wakes posted from other shards (shard 0) */
    uv_async_t wake_async;
    struct mpsc wakes; /* wakes posted by other shards */
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
};

/* Work another thread hands to a shard's loop (its registry is touched
 * only there). fn runs on the shard's thread and owns t from then on;
 * a task still queued when the loops are gone is passed to discard (NULL:
 * free). */
struct relay_task {
    struct mpsc_node node;
    void (*fn)(struct relay *r, struct relay_task *t);
    void (*discard)(struct relay_task *t);
};

/* Queues t for r's loop (any thread). */
void relay_post(struct relay *r, struct relay_task *t);

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

/* Sums every shard's gauges and counters. */
void relay_totals(const struct relay_shared *sh, struct relay_totals *t);

/* Writes the /healthz body into out; returns its length. */
size_t relay_healthz_body(const struct relay *r, char *out, size_t cap);

/* forward.c: a data message from a phone / from a binary. */
void forward_from_phone(struct peer *p, uint8_t *data, size_t len);
void forward_from_binary(struct peer *b, uint8_t *data, size_t len);

/* A binary's push_wake (raw JSON value): admitted or refused on shard 0,
 * where the waker lives; a refusal is logged as
 * binary_forwarder_push_wake_dropped. */
void relay_push_wake(struct peer *b, const uint8_t *raw, size_t len);

/* forward.c: the binary's outbox drained below the low-water mark. */
void forward_binary_drained(struct peer *b);

/* forward.c: the binary's WebSocket ended; its phones are no longer
 * throttled for it and its bandwidth bucket goes. */
void forward_binary_gone(struct peer *b);

/* forward.c: phone p joined binary b's server-id (b may be NULL): paused or
 * throttled if b's phones are. */
void forward_phone_joined(struct peer *p, struct peer *b);

/* forward.c: the bandwidth timer of relay r (set up by relay_init). */
void forward_bw_init(struct relay *r);
/* relay_ctl.c: whether warning kind w of binary b may be logged now;
 * *suppressed gets how many were dropped before it (log_limit). On b's
 * loop only. */
bool relay_warn_allowed(struct peer *b, enum peer_warn w, uint64_t *suppressed);

/* relay_ctl.c: the limiter for one push_wake refusal text in ws. */
struct log_limit *relay_push_limit(struct warn_state *ws, const char *err);

/* relay_ctl.c: logs the counts of b's collapsed warnings not yet reported
 * (the binary is leaving). */
void relay_flush_warns(struct peer *b);

/* relay_ctl.c: r's task queue, set up on r's loop / emptied at the end. */
void relay_ctl_init(struct relay *r);
void relay_ctl_close(struct relay *r);

/* forward.c: a phone's WebSocket ended; sends the close notice if due. */
void forward_phone_ended(struct peer *p);

/* The peer of the binary currently holding p's server-id, or NULL. */
struct peer *relay_binary_of(const struct peer *p);

/* Writes the peer's remote address host into out. */
void relay_remote(const struct peer *p, char *out, size_t cap);

#endif
