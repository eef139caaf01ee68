/* admin.h — operator endpoints served on the loopback metrics listener
 * only (docs/features/admin.md):
 *   GET  /debug/server-ids[?limit=N&after=ID]  held server-ids, sorted, paged
 *   GET  /debug/connections                     connection counts by state
 *   POST /debug/server-ids/<id>/close           close a server-id's binary and
 *                                               phones with 1001 "shutting down"
 * Answers are JSON; nothing secret (tokens, headers, frames) is ever shown.
 * admin_handle runs on shard 0's thread (the metrics listener's) and reaches
 * other shards only through their task queues; the helpers are pure, any
 * thread. */
#ifndef RELAY_ADMIN_H
#define RELAY_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "net/conn.h"
#include "codec/http.h"

struct relay_shared;

/* Answers r when its path is an admin endpoint (on shard 0's thread; it may
 * wait up to 2 s for the other shards) and returns true; returns false,
 * having sent nothing, for any other path. */
bool admin_handle(struct conn *c, const struct http_req *r, struct relay_shared *sh);

/* Exposed for tests. Percent-decodes s[0..n) ('+' is a space when form
 * is set) into a malloc'd NUL-terminated buffer; NULL on a bad escape. */
char *admin_pct_decode(const char *s, size_t n, bool form, size_t *out_len);

/* Exposed for tests. The decoded value of name in query q[0..qlen)
 * (malloc'd), NULL when absent or (with *bad set) badly encoded. */
char *admin_query_param(const char *q, size_t qlen, const char *name, size_t *vlen, bool *bad);

/* Exposed for tests. s[0..n) as a JSON string literal into out (cut to
 * cap); invalid UTF-8 bytes become \u00XX. Returns the full length. */
size_t admin_json_string(char *out, size_t cap, const char *s, size_t n);

#endif
