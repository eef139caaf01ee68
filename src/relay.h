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

#include "conn.h"
#include "ratelimit.h"
#include "registry.h"
#include "server.h"

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

struct relay_stats {
    uint64_t upgrades[EP__COUNT][OUT__COUNT];
    uint64_t failures[KIND__COUNT];
    uint64_t frames[DIR__COUNT];
    uint64_t grace_expiries;
};

enum peer_state {
    PEER_PROBING,   /* binary waiting for the incumbent's liveness probe */
    PEER_ACTIVE,    /* binary holding its server-id, or registered phone */
    PEER_STILLBORN, /* rejected after the upgrade (4404, 4409, 4429): closing */
    PEER_ENDED,     /* WebSocket over; waiting for the connection to be freed */
};

struct probe;
struct push_waker;

/* The relay's view of one upgraded connection (conn->owner). */
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
    char *wrap;    /* phone: the envelope prefix {"conn_id":"…","frame": */
    size_t wrap_len;
    /* binary */
    struct reg_binary rb;
    struct list probes;  /* probes aimed at this binary as incumbent */
    struct probe *probe; /* the probe this binary waits on */
    bool phones_paused;  /* back-pressure: its phones are not being read */
    /* phone */
    struct reg_phone rp;
    uint64_t bound_binary; /* key of the binary holding the id at registration */
    bool binary_closed;    /* the binary asked to close this phone (no notice) */
    char id_buf[];         /* conn_id, NUL-terminated */
};

struct relay {
    struct server *srv;
    struct registry reg;
    uv_timer_t grace_timer;
    uint64_t grace_armed; /* deadline the timer is set for, 0 = idle */
    uint64_t boot_ms;
    struct relay_stats stats;
    size_t high_water, low_water; /* binary outbox marks for pausing phones */
    uint8_t *scratch;             /* envelope conn_id unescaping, max-message sized */
    struct ratelimit rl;          /* per-IP upgrade limiter (spec §9.2) */
    uv_timer_t rl_sweep;
    size_t live_ws;          /* upgraded connections alive: the --max-connections cap */
    struct push_waker *push; /* FCM push wakes (spec §10); NULL = push off */
};

/* The hooks every connection of the relay runs with. */
extern const struct conn_hooks relay_hooks;

/* Prepares the relay for srv (whose shard must use relay_hooks with owner r). */
void relay_init(struct relay *r, struct server *srv);

/* Releases the registry, timers and the push waker (after the loop has
 * drained). */
void relay_close(struct relay *r);

/* Writes the /healthz body into out; returns its length. */
size_t relay_healthz_body(const struct relay *r, char *out, size_t cap);

/* forward.c: a data message from a phone / from a binary. */
void forward_from_phone(struct peer *p, uint8_t *data, size_t len);
void forward_from_binary(struct peer *b, uint8_t *data, size_t len);

/* forward.c: the binary's outbox drained below the low-water mark. */
void forward_binary_drained(struct peer *b);

/* forward.c: a phone's WebSocket ended; sends the close notice if due. */
void forward_phone_ended(struct peer *p);

/* The peer of the binary currently holding p's server-id, or NULL. */
struct peer *relay_binary_of(const struct peer *p);

/* Writes the peer's remote address host into out. */
void relay_remote(const struct peer *p, char *out, size_t cap);

#endif
