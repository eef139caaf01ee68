/* node.h — this relay as a node of the cluster (docs/features/cluster.md,
 * "The node"; design: cluster.md §3.2, §7, §8 step 12b): the ctl thread
 * that owns the ctl connection to the bus and the KV streams, registers the
 * node lease, renews it, decides readiness and, when the lease is lost,
 * has every shard fence (close every WebSocket) before it registers again
 * under a new node id.
 *
 * The shards never wait on the bus: they read the lease deadline with one
 * relaxed atomic load (node_serving) on every forwarded message, claim and
 * upgrade and on a timer, and stop serving by themselves the moment it has
 * passed, even if the ctl thread is late (a SIGSTOPped process resumes with
 * every clock past the deadline).
 *
 * Threads: node_start, node_run and node_stop on the main thread (node_start blocks
 * on the bus for up to the connect timeout: boot only); node_serving,
 * node_ready, node_fenced, node_identity, node_stats and node_submit from
 * any thread;
 * the hooks are called on the ctl thread. */
#ifndef RELAY_CLUSTER_NODE_H
#define RELAY_CLUSTER_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "cluster/kv.h"
#include "cluster/lease.h"

#define NODE_NAME_MAX    55 /* node id = <name>-<8 hex>, at most KV_NODE_KEY_MAX */
#define NODE_TICK_MS     250
#define NODE_FENCE_WAIT  5000 /* ms the ctl thread waits for every shard to fence */
#define NODE_FLUSH_MS    2000 /* ms node_stop lets queued jobs still run */
#define NODE_URLS_LOGMAX 512

/* The strings other than name must outlive the node (argv, environ). */
struct node_params {
    const char *urls;              /* --cluster-nats, comma-separated */
    const char *creds_file;        /* PYRYCODE_RELAY_NATS_CREDS or NULL */
    const struct natsopt_tls *tls; /* --cluster-nats-ca/-cert/-key, NULL: none */
    const char *cluster;           /* --cluster-name */
    const char *name;              /* --cluster-node-name, already valid (node_name_from); copied */
    uint64_t lease_ms;             /* --cluster-lease, >= LEASE_MIN_MS */
    int replicas;                  /* --cluster-replicas, 1..5 */
    uint64_t connect_ms;           /* --cluster-connect-timeout: boot's bounded retry */
    int64_t min_payload;           /* refuse a bus whose max_payload is below this */
    unsigned shards;               /* the node value's <shards> */
    unsigned ctl_threads;          /* --cluster-ctl-threads: threads that run jobs (0: 1) */
};

/* Called on the ctl thread. on_fence asks every shard to fence (close every
 * WebSocket with 1001 "shutting down", drop every slot) and to report with
 * node_fenced(n, shard, gen) once done; the ctl thread registers again only
 * after every shard has, or after NODE_FENCE_WAIT. */
struct node_hooks {
    void (*on_fence)(void *ud, uint64_t gen);
    void (*on_registered)(void *ud); /* registered again (a new node id), NULL: none */
    void *ud;
};

/* Counters and gauges for /metrics (any thread; a consistent-enough copy). */
struct node_stats {
    bool ready;
    uint64_t lease_remaining_ms;
    uint64_t renewals[LEASE_OUTCOMES];  /* by lease_outcome (not_found in conflict) */
    uint64_t kv_ops[3][KV_TIMEOUT + 1]; /* [kv_op][kv_outcome] */
    uint64_t kv_latency_us_sum[3], kv_count[3];
    uint64_t registrations, fences, disconnects;
    uint64_t jobs_waiting; /* submitted, not yet started by a ctl thread */
};

struct node;

/* One KV operation a shard hands to the ctl thread (node_submit). The
 * submitter fills the request part and keeps the job (and key) alive until
 * done or discard is called; exactly one of them is, once. */
struct node_job {
    struct mpsc_node link; /* the node's queue */
    /* request */
    enum kv_op op;
    enum kv_bucket bucket;
    const void *key; /* KV_NODES: a node id; KV_SIDS/KV_CLAIMS: raw server-id bytes */
    size_t keylen;
    char val[96]; /* Create/CAS value */
    size_t len;
    uint64_t last; /* CAS: expected last revision */
    /* result */
    enum kv_outcome outcome;
    uint64_t rev;
    char got[96]; /* Get: the value (got_len bytes, NUL-terminated) */
    size_t got_len;
    /* a job thread: the result is in (the callee posts it to its shard) */
    void (*done)(struct node_job *j);
    /* node_stop: the job will never run (loops are gone): free it */
    void (*discard)(struct node_job *j);
};

/* The node name from a --cluster-node-name value or, when it is empty, from
 * the host name: every byte outside [A-Za-z0-9_-] becomes '-', cut to
 * NODE_NAME_MAX. Returns 0, or -1 (explicit value invalid: err says why). */
int node_name_from(const char *flag, const char *hostname, char out[NODE_NAME_MAX + 1], char *err,
                   size_t errcap);

/* True when s is a valid --cluster-name (1..32 of [A-Za-z0-9_-]). */
bool node_cluster_name_valid(const char *s);

/* The URL list with any user:password@ removed, for logs. */
void node_urls_for_log(const char *urls, char *out, size_t cap);

/* Boot step 12b: connects the ctl connection (retrying for p->connect_ms),
 * checks max_payload, creates and binds the streams and registers the node
 * lease. Returns 0 with *out set, or -1 with a sentence in err (the caller
 * exits 1). Logs cluster_bus_connected and cluster_node_registered. */
int node_start(struct node **out, const struct node_params *p, char *err, size_t errcap);

/* Starts the ctl thread, which keeps the lease from now on and reaches the
 * shards through h. Call once, after node_start, when the shards exist. */
void node_run(struct node *n, struct node_hooks h);

/* Stops the ctl thread (queued jobs still run for NODE_FLUSH_MS, the rest
 * are discarded), releases the node lease (its value becomes "0", so
 * other nodes need not wait for it to expire) and closes the connection.
 * NULL is fine. */
void node_stop(struct node *n);

/* True while the lease deadline is in the future at now_ms (uv_hrtime ms):
 * this node may forward, claim and accept. */
bool node_serving(const struct node *n, uint64_t now_ms);

/* Readiness (/healthz): serving, the last renewal younger than L/2, the ctl
 * connection up (a reconnect under 2 s is tolerated) and no fence pending. */
bool node_ready(const struct node *n, uint64_t now_ms);

/* Shard `shard` has fenced for generation gen (after on_fence). */
void node_fenced(struct node *n, unsigned shard, uint64_t gen);

/* A node epoch: the registration's wall-clock millisecond in the high
 * bits and the low 16 bits of its lease Create's revision. The nodes bucket
 * is memory-backed; when quorum is lost its revisions start again at 1, and
 * a bare revision would hand a new incarnation an epoch other nodes still
 * remember for an old one (their links and heartbeat tables are keyed by
 * it). Later registrations still get larger epochs. */
#define NODE_EPOCH_REV_BITS 16
uint64_t node_epoch_of(uint64_t unix_ms, uint64_t revision);

/* The current node id and node epoch (copied under a lock: they change
 * when the node registers again). */
void node_identity(const struct node *n, char id[KV_NODE_KEY_MAX + 1], uint64_t *epoch);

void node_stats(const struct node *n, struct node_stats *s);

/* Queues j for the ctl thread (any thread). Jobs start in submission
 * order: with one ctl thread one at a time, interleaved with the lease's
 * renewals; with p.ctl_threads > 1 the workers run them too, so several
 * may be in flight at once (each shard's claim has one job at a time; the
 * KV's CAS revisions order writes to one key). A node that is not serving
 * (fenced, or registering again) writes nothing: its jobs end with
 * KV_ERROR at once. */
void node_submit(struct node *n, struct node_job *j);

#endif
