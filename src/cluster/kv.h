/* kv.h — the JetStream KV layer of cluster mode (docs/features/cluster-ownership.md,
 * "The KV layer"; design: cluster.md §3.1): the three KV-shaped streams
 * pyry_<c>_nodes, pyry_<c>_sids and pyry_<c>_claims, and the three
 * operations the lease and claim machines name: Create (write only if the
 * key has no value), CAS (write only if the key's last revision is `last`)
 * and a Get that always goes through the stream leader.
 *
 * BLOCKING: every call waits on the bus (up to the 2 s JetStream wait, and
 * kv_connect up to its timeout). Call them on the ctl thread only, never on
 * a shard loop: a shard loop is what reads its own connection's replies, so
 * a blocking call there waits on itself until it times out.
 *
 * The streams are created by us, not with js_CreateKeyValue, because cnats
 * 3.4.1 forces AllowDirect=true there and a direct get on nats-server
 * 2.9.10 can serve a stale value after a restart (#4162). Ours have
 * AllowDirect=false, memory storage, MaxMsgsPerSubject 1, AllowRollup,
 * DenyDelete and Discard new. Reads use js_GetLastMsg (the leader's answer).
 *
 * Keys: nodes keys are node ids, used verbatim (1..64 of [A-Za-z0-9_-]);
 * sids and claims keys are raw server-id bytes, which the layer replaces by
 * the 64 hex chars of their SHA-256 (kv_key_of): the raw id never crosses
 * the bus. Error texts name the bucket and the cause, never a value, a key's
 * raw bytes or credentials.
 *
 * Threads: one struct kv per thread (it is not locked); cnats is opened by
 * the caller (nats_Open) or implicitly by kv_connect. */
#ifndef RELAY_CLUSTER_KV_H
#define RELAY_CLUSTER_KV_H

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "cluster/natsopt.h"

#define KV_CLUSTER_NAME_MAX  32                 /* <c>: 1..32 of [A-Za-z0-9_-] */
#define KV_NODE_KEY_MAX      64                 /* nodes key: 1..64 of [A-Za-z0-9_-] */
#define KV_WAIT_MS           2000               /* JetStream API and publish wait */
#define KV_SIDS_MAX_AGE_MS   (24 * 3600 * 1000) /* sids records: orphans reaped after 24 h */
#define KV_CLAIMS_MAX_AGE_MS 10000              /* claim locks live 10 s */
#define KV_ERR_MAX           256                /* a comfortable err buffer */

enum kv_bucket {
    KV_NODES,  /* pyry_<c>_nodes: node leases, MaxAge = L */
    KV_SIDS,   /* pyry_<c>_sids: who owns a server-id, MaxAge 24 h */
    KV_CLAIMS, /* pyry_<c>_claims: claim locks, MaxAge 10 s */
    KV_BUCKETS
};

/* How an operation ended; 1:1 with kv_ops_total{outcome} (cluster.md §9),
 * plus timeout (counted as error there, distinguished for the machines:
 * a timed-out write may have landed). */
enum kv_outcome {
    KV_OK,        /* write acknowledged (rev = new revision) / key found */
    KV_CONFLICT,  /* Create: the key has a value; CAS: wrong last revision (10071) */
    KV_NOT_FOUND, /* Get: the key has no value (NATS_NOT_FOUND or 10037) */
    KV_ERROR,     /* any other failure: no responders, no quorum, bad argument, ... */
    KV_TIMEOUT,   /* cnats said NATS_TIMEOUT: no answer within the wait */
};

enum kv_op { KV_OP_CREATE, KV_OP_CAS, KV_OP_GET };

struct kv_params {
    const char *cluster;     /* <c>, 1..32 of [A-Za-z0-9_-] */
    int replicas;            /* stream replicas, 1..5 (--cluster-replicas) */
    uint64_t lease_ms;       /* L: MaxAge of nodes, > 0 */
    uint64_t sids_max_age;   /* ms; 0: KV_SIDS_MAX_AGE_MS */
    uint64_t claims_max_age; /* ms; 0: KV_CLAIMS_MAX_AGE_MS */
    int64_t min_payload;     /* refuse a server max_payload below this (0: no check) */
};

struct kv;

/* What happened to a connection made by kv_connect (reported from cnats'
 * own threads). */
enum kv_conn_event { KV_CONN_DISCONNECTED, KV_CONN_RECONNECTED, KV_CONN_CLOSED };

/* The closure a kv_connect connection reports its events to; it must live
 * until KV_CONN_CLOSED has been reported (cnats delivers events on its own
 * thread, after natsConnection_Close returns: wait for it before freeing). */
struct kv_conn_events {
    void (*on_event)(void *ud, enum kv_conn_event ev);
    void *ud;
};

/* Connects to the comma-separated urls, retrying every 250 ms for up to
 * timeout_ms (boot waits for the bus), with creds_file (a NATS .creds file
 * path, or NULL), tls (NULL: none; see natsopt.h) and the connection name
 * `name` (or NULL). Once connected,
 * the connection reconnects forever by itself (250 ms wait, 1 s pings, 2
 * missed pings), reporting disconnects and reconnects to ev (NULL: none).
 * Returns 0 with *nc set (the caller destroys it with
 * natsConnection_Destroy), or -EIO with a sentence in err. */
int kv_connect(natsConnection **nc, const char *urls, const char *creds_file,
               const struct natsopt_tls *tls, const char *name, uint64_t timeout_ms,
               const struct kv_conn_events *ev, char *err, size_t errcap);

/* Binds to connected nc (borrowed: it must outlive the kv), gets a jsCtx
 * with Wait KV_WAIT_MS and creates the three streams of p idempotently.
 * A stream that exists with another configuration is an error naming the
 * stream and the first differing field; so is a server max_payload below
 * p->min_payload. Returns 0 with *kv set (free with kv_close), -EINVAL for
 * bad parameters, or -EIO for the bus; err (may be NULL) says why. */
int kv_open(struct kv **kv, natsConnection *nc, const struct kv_params *p, char *err,
            size_t errcap);

/* Frees kv (not the connection). NULL is fine. */
void kv_close(struct kv *kv);

/* The server's max_payload as seen at kv_open. */
int64_t kv_max_payload(const struct kv *kv);

/* The stream name of bucket b ("KV_pyry_<c>_<b>"), for logs and tests. */
const char *kv_stream_name(const struct kv *kv, enum kv_bucket b);

/* Writes val[0..len) under key only if the key has no value. KV_OK sets
 * *rev to the new revision (the stream sequence); KV_CONFLICT when it has
 * one; KV_TIMEOUT, KV_ERROR otherwise (err says why). */
enum kv_outcome kv_create(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen,
                          const void *val, size_t len, uint64_t *rev, char *err, size_t errcap);

/* Writes val[0..len) under key only if its last revision is last_rev
 * (> 0; 0 is refused with KV_ERROR: use kv_create). Outcomes as kv_create.
 * nats-server 2.9.10 does not serialise two concurrent CASes with the same
 * last_rev in a clustered stream: the caller must be the key's single
 * writer (cluster.md §3.1). */
enum kv_outcome kv_cas(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen,
                       const void *val, size_t len, uint64_t last_rev, uint64_t *rev, char *err,
                       size_t errcap);

/* Reads key's value through the stream leader. KV_OK copies it to
 * buf[0..cap) and sets *len and *rev; a value longer than cap is KV_ERROR
 * (*len still says its length). KV_NOT_FOUND when absent (or expired);
 * KV_TIMEOUT, KV_ERROR otherwise. */
enum kv_outcome kv_get(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen, void *buf,
                       size_t cap, size_t *len, uint64_t *rev, char *err, size_t errcap);

/* SHA-256(sid[0..len)): the `h` that names a server-id on the bus (any
 * thread). */
void kv_hash_of(const void *sid, size_t len, uint8_t out[32]);

/* The sids/claims key of a server-id: 64 lowercase hex chars of
 * SHA-256(sid[0..len)) and a NUL. */
void kv_key_of(const void *sid, size_t len, char out[65]);

/* "ok", "conflict", "not_found", "error", "timeout": the metric label. */
const char *kv_outcome_name(enum kv_outcome o);

/* "create", "cas", "get": the op label. */
const char *kv_op_name(enum kv_op op);

#endif
