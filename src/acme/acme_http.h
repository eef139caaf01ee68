/* acme_http.h — the port-80 listener of autocert mode (docs/features/acme.md):
 * GET /.well-known/acme-challenge/<token> answers the key authorization of
 * a challenge in flight for --domain; every other request is 404, never a
 * redirect. No rate limiter, no connection cap, no 421 here.
 * Threads: acme_http_listen on the main thread before the loops run; requests
 * are served on shard 0's loop (where every side listener accepts). */
#ifndef RELAY_ACME_HTTP_H
#define RELAY_ACME_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "net/conn.h"

struct acme;
struct server;

#define ACME_HTTP_PREFIX "/.well-known/acme-challenge/"

struct acme_http {
    uv_tcp_t *listener; /* a server listener (server.c owns it) */
    struct server *srv;
    struct acme *acme;
    struct conn_opts opts; /* the listener's (ctx: this struct) */
};

/* Binds the listener on addr; its connections run on the server's shard
 * and it closes when the drain starts. Returns 0, or -1 with err set. */
int acme_http_listen(struct acme_http *h, struct server *srv, struct acme *acme, const char *addr,
                     char *err, size_t err_cap);

enum acme_http_route {
    ACME_ROUTE_NOT_FOUND, /* not a challenge path: 404 */
    ACME_ROUTE_FORBIDDEN, /* challenge path for another host: 403 */
    ACME_ROUTE_TOKEN,     /* look the token up: 200 or 404 */
};

/* Decides what a request gets from its path and Host header (pure). For
 * ACME_ROUTE_TOKEN, *token and *token_len point into path. */
enum acme_http_route acme_http_route(const char *path, size_t path_len, const char *host,
                                     size_t host_len, const char *domain, const char **token,
                                     size_t *token_len);

/* True when the Host header value names domain: ASCII case-insensitive,
 * with an optional :port (or [v6]:port) removed. */
bool acme_http_host_matches(const char *host, size_t len, const char *domain);

#endif
