/* admin.h — operator endpoints served on the loopback metrics listener
 * only (docs/features/admin.md):
 *   GET  /debug/server-ids[?limit=N&after=ID]  held server-ids, sorted, paged
 *   GET  /debug/connections                     connection counts by state
 *   POST /debug/server-ids/<id>/close           close a server-id's binary and
 *                                               phones with 1001 "shutting down"
 * Answers are JSON; nothing secret (tokens, headers, frames) is ever shown. */
#ifndef RELAY_ADMIN_H
#define RELAY_ADMIN_H

#include <stdbool.h>

#include "conn.h"
#include "http.h"

struct relay_shared;

/* Answers r when its path is an admin endpoint (on shard 0's thread; it may
 * wait up to 2 s for the other shards) and returns true; returns false,
 * having sent nothing, for any other path. */
bool admin_handle(struct conn *c, const struct http_req *r, struct relay_shared *sh);

#endif
