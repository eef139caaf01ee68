/* shard.h — one event loop and everything it owns: the connections, the
 * timing wheel that drives their deadlines, the shared read buffer, and an
 * inbox other threads post to (connections handed over once their
 * server-id is known, and control bits such as "drain"). Shard 0 runs on
 * the main thread; the others each run their own loop on their own thread
 * (design.md §2).
 *
 * Threads: shard_post_handoff and shard_post_control may be called from
 * any thread; every other function, and every field, belongs to the
 * shard's own loop thread (the process-wide counters behind `live` and
 * `head_bytes` are atomics shared by all shards). */
#ifndef RELAY_SHARD_H
#define RELAY_SHARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/config.h"
#include "base/util.h"
#include "base/wheel.h"

struct conn_hooks;
struct shard;

/* What the shard calls back into the connection layer for, so that it
 * never depends on it (the connection layer passes conn_shard_ops). All
 * are called on the shard's own loop. */
struct shard_ops {
    /* An entry of the shard's wheel is due (arg: the shard). */
    void (*on_timer)(struct wheel_entry *e, void *arg);
    /* A node posted with shard_post_handoff arrived. */
    void (*adopt)(struct shard *s, struct mpsc_node *n);
    /* A node that will never be adopted (the loop is gone): free it. */
    void (*discard)(struct mpsc_node *n);
};

/* Control bits posted to a shard (shard_post_control). */
enum {
    SHARD_CTL_DRAIN = 1, /* start the graceful drain of this shard's connections */
    SHARD_CTL_ABORT = 2, /* drain deadline passed: drop every connection now */
    SHARD_CTL_STOP = 4,  /* close every handle so the loop returns */
    SHARD_CTL_CHECK = 8, /* (shard 0) a count reached zero: re-check the drain */
};

#define SHARD_READ_BUF (64 * 1024)
#define SHARD_REQ_POOL 256 /* request readers kept for reuse (see conn.c) */

struct http_req;

struct shard {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct shard_ops *ops;
    const struct conn_hooks *hooks;
    void *owner; /* the relay */
    struct wheel wheel;
    uv_timer_t wheel_timer;
    bool wheel_running;
    uint8_t *rbuf; /* every read lands here; connections keep only leftovers */
    bool rbuf_busy;
    /* TLS: decrypted input and encrypted output land here first (allocated
     * with the first TLS connection); only leftovers are copied out */
    uint8_t *tls_plain; /* TRANSPORT_SCRATCH bytes */
    uint8_t *tls_out;   /* TRANSPORT_SCRATCH bytes */
    struct list conns;
    size_t nconns;
    /* cfg durations in ms, resolved once */
    uint64_t header_ms, request_ms, idle_ms, close_ms, write_ms, message_ms;
    uint64_t heartbeat_ms, pong_ms;
    uint64_t proxy_ms, tls_ms; /* PROXY header and TLS handshake deadlines */
    bool draining;
    void (*on_conn_freed)(struct shard *s); /* drain bookkeeping */
    /* multi-shard plumbing */
    unsigned id;       /* 0 .. nshards-1 */
    uv_async_t async;  /* wakes the loop for the inbox and control bits */
    bool async_on;     /* async initialised (and not yet closed) */
    struct mpsc inbox; /* connections posted by other shards */
    atomic_uint ctl;   /* SHARD_CTL_* bits not yet handled */
    void (*on_control)(struct shard *s, unsigned bits);
    _Atomic size_t *live;       /* process-wide count of connections (incl. in transit) */
    _Atomic size_t *head_bytes; /* process-wide bytes held by unfinished request heads */
    void *server;               /* the struct server this shard belongs to */
    struct http_req *req_pool[SHARD_REQ_POOL]; /* idle request readers for reuse */
    unsigned nreq_pool;
};

/* Prepares s on loop with the config, the connection layer's callbacks and
 * the default hooks of its connections. */
void shard_init(struct shard *s, uv_loop_t *loop, const struct config *cfg,
                const struct shard_ops *ops, const struct conn_hooks *hooks, void *owner);

/* Starts the shard's inbox (call on the shard's own loop before use). */
void shard_start_inbox(struct shard *s);

/* Posts a node (a connection in transit) to s's inbox (any thread); s's
 * loop hands it to ops->adopt. */
void shard_post_handoff(struct shard *s, struct mpsc_node *n);

/* Sets control bits on s and wakes it (any thread). */
void shard_post_control(struct shard *s, unsigned bits);

/* Frees handoffs still queued once s's loop is gone (closes their sockets). */
void shard_discard_inbox(struct shard *s);

/* Releases the shard's own resources (after every connection is gone and
 * the loop has stopped running handles). */
void shard_close(struct shard *s);

/* Loop time in ms. */
uint64_t shard_now(const struct shard *s);

/* (Re)arms entry e of the shard's wheel for time at (ms); starts the
 * driving uv timer if needed. */
void shard_schedule(struct shard *s, struct wheel_entry *e, uint64_t at);

/* Unschedules e. */
void shard_cancel(struct shard *s, struct wheel_entry *e);

#endif
