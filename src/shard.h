/* shard.h — one event loop and everything it owns: the connections, the
 * timing wheel that drives their deadlines, the shared read buffer. Today
 * the relay runs one shard; the multi-shard handoff (design.md §2) adds
 * more without changing what a shard is. */
#ifndef RELAY_SHARD_H
#define RELAY_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "util.h"
#include "wheel.h"

struct conn_hooks;

#define SHARD_READ_BUF (64 * 1024)
#define SHARD_TLS_OUT  (64 * 1024)

struct shard {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct conn_hooks *hooks;
    void *owner; /* the relay */
    struct wheel wheel;
    uv_timer_t wheel_timer;
    bool wheel_running;
    uint8_t *rbuf; /* every read lands here; connections keep only leftovers */
    bool rbuf_busy;
    /* TLS: decrypted input and encrypted output land here first (allocated
     * with the first TLS connection); only leftovers are copied out */
    uint8_t *tls_plain; /* SHARD_READ_BUF bytes */
    uint8_t *tls_out;   /* SHARD_TLS_OUT bytes */
    struct list conns;
    size_t nconns;
    /* cfg durations in ms, resolved once */
    uint64_t header_ms, request_ms, idle_ms, close_ms, write_ms, message_ms;
    uint64_t heartbeat_ms, pong_ms;
    uint64_t proxy_ms, tls_ms; /* PROXY header and TLS handshake deadlines */
    bool draining;
    void (*on_conn_freed)(struct shard *s); /* drain bookkeeping */
};

/* Prepares s on loop with the config and hooks. */
void shard_init(struct shard *s, uv_loop_t *loop, const struct config *cfg,
                const struct conn_hooks *hooks, void *owner);

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
