/* metrics.h — the loopback /metrics listener (docs/features/operator-contract.md): Prometheus
 * text format 0.0.4, every series and label combination present from
 * boot, plus the standard process_* series. Counters live in the relay
 * (relay_stats); this module only renders them at scrape time.
 * metrics_listen on the main thread at boot; scrapes are served on shard 0's
 * loop and read other shards' counters through atomics. */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/conn.h"

struct relay;
struct server;

struct metrics {
    uv_tcp_t *listener; /* a server listener (server.c owns it) */
    struct server *srv;
    struct relay *relay;
    double start_time;     /* process start, seconds since the epoch */
    uint64_t requests[3];  /* promhttp_metric_handler_requests_total{code="200","500","503"} */
    struct conn_opts opts; /* the listener's (ctx: this struct) */
};

/* Binds the metrics listener on addr (already validated as loopback). Its
 * connections run metrics hooks on the relay's shard. Returns 0, or -1
 * with err set. */
int metrics_listen(struct metrics *m, struct server *srv, struct relay *relay, const char *addr,
                   char *err, size_t cap);

#endif
