/* relay.h — the relay's endpoints: /healthz, and the /v1/server and
 * /v1/client WebSocket upgrades with their header gate (spec §2). It
 * implements the connection hooks; conn.c does the I/O. */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "server.h"

struct relay {
    struct server *srv;
    uint64_t boot_ms;   /* loop time when the relay was created (uptime) */
    size_t binaries;    /* held server-ids outside their grace window */
    size_t phones;      /* registered phones */
};

/* The hooks every connection of the relay runs with. */
extern const struct conn_hooks relay_hooks;

/* Prepares the relay for srv (whose shard must use relay_hooks with owner r). */
void relay_init(struct relay *r, struct server *srv);

/* Writes the /healthz body into out; returns its length. */
size_t relay_healthz_body(const struct relay *r, char *out, size_t cap);

#endif
